//! Shards: one node's measurements for one interval of one run, and their
//! wire format.
//!
//! A node seals a shard every interval (1 s by default) and a last one when
//! its share ends; the last shard says how many the node sent, so a report
//! can say how complete it is. A shard is keyed by `(run, node, seq)` and its
//! content never changes, so receiving one twice is harmless.
//!
//! This module is the one definition of the shard encoding (CBOR, histograms
//! as HdrHistogram V2 bytes, the whole DEFLATE-compressed behind one marker
//! byte); docs/wire-protocol.md describes it. Every node gossips a shard a
//! second to every other, so its size is most of what a run costs the mesh:
//! compression makes it about a third. Decoding is bounded: a shard from a
//! peer cannot make this node allocate much more than [`MAX_SHARD_BYTES`].

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::io::Write as _;

use flate2::write::DeflateEncoder;
use flate2::{Compression, Decompress, FlushDecompress, Status};
use fusi_sdk::abi::MetricKind;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use serde::{Deserialize, Serialize};

use super::metrics::{KindMismatch, SeriesKey, SeriesSet, Value};

pub mod counts;

use counts::{Counts, V2_COOKIE};

/// The shard format this node writes and reads.
pub const SHARD_FORMAT: u32 = 3;
/// The first byte of an encoded shard: the rest is raw DEFLATE of the CBOR
/// envelope. (A CBOR map, as format 2 shards were, starts with 0xa0-0xbf.)
pub const SHARD_MARKER: u8 = b'F';
/// The first byte of a signed shard: then one byte, the signature's length
/// (at most [`MAX_SIGNATURE`]), the signature by the shard's node over the
/// rest, and the shard's own bytes ([`signed`]).
pub const SIGNED_MARKER: u8 = b'S';
/// The longest signature a signed shard may carry (an ed25519 one is 64).
pub const MAX_SIGNATURE: usize = 128;
/// The longest node name, region or run id a shard may carry.
pub const MAX_SHARD_NAME: usize = 256;
/// The largest shard accepted, compressed or not.
pub const MAX_SHARD_BYTES: usize = 8 << 20;
/// The most series one shard may carry.
pub const MAX_SERIES_PER_SHARD: usize = 20_000;
/// The most histogram memory one decoded shard may claim.
const MAX_HISTOGRAM_BYTES: u64 = 256 << 20;
/// The most samples one trend of a shard may count (2^40, a million
/// seconds of a million samples a second). hdrhistogram sums counts
/// unchecked when it computes a percentile: a report would need 2^24
/// shards at this bound to overflow, where one forged trend of huge counts
/// did it.
pub const MAX_TREND_SAMPLES: u64 = 1 << 40;

/// One node's measurements for one interval.
#[derive(Debug, Clone)]
pub struct Shard {
    /// The run.
    pub run_id: String,
    /// The node that measured (its peer id; `local` on one machine).
    pub node: String,
    /// That node's name (`--name`), for reports.
    pub name: String,
    /// That node's region.
    pub region: String,
    /// 0, 1, 2, ... per node and run.
    pub seq: u64,
    /// Interval start, milliseconds since the run's start instant (T0, an
    /// instant of the leader's clock).
    pub start_ms: u64,
    /// Interval end, milliseconds since the run's start instant.
    pub end_ms: u64,
    /// Set on the node's last shard of the run: it sent `seq + 1` shards.
    pub last: bool,
    /// The measurements.
    pub series: SeriesSet,
    /// The text of failures among the first few of their kind on the node,
    /// seen in this interval, so that a report from any node can say what
    /// failed and not only how often.
    pub notes: Vec<Note>,
}

/// The most notes one shard may carry.
pub const MAX_NOTES: usize = 32;
/// The longest kind of a note, in bytes.
pub const MAX_NOTE_KIND: usize = 64;
/// The longest text of a note, in bytes.
pub const MAX_NOTE_TEXT: usize = 1024;

/// What one failure said: its kind, `http:refused` for a request's error
/// (the `errors` kind) or `iteration:panic` for an iteration's failure
/// reason, and its text (the URL and the OS error, the panic message).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Note {
    /// `http:KIND` or `iteration:REASON`.
    pub kind: String,
    /// What the failure said.
    pub text: String,
}

/// Why bytes are not a shard.
#[derive(Debug, thiserror::Error)]
pub enum ShardError {
    /// Too many bytes.
    #[error("shard of {0} bytes is over the {MAX_SHARD_BYTES}-byte limit")]
    TooLarge(usize),
    /// Not CBOR of the expected shape.
    #[error("shard is not valid CBOR: {0}")]
    Cbor(String),
    /// A format this node does not read.
    #[error(
        "shard format {0} is not supported (this node reads format {SHARD_FORMAT}); upgrade the node"
    )]
    Format(u32),
    /// Inconsistent content.
    #[error("shard is invalid: {0}")]
    Invalid(String),
}

/// A shard's bytes (`shard`, as [`Shard::encode`] makes them) signed with
/// `signature`: [`SIGNED_MARKER`], the signature's length, the signature,
/// the shard. Every decoder reads it as the shard it wraps; who signed is
/// checked where the node's key is known (`net::sign`).
pub fn signed(signature: &[u8], shard: &[u8]) -> Vec<u8> {
    let len = signature.len().min(MAX_SIGNATURE);
    let mut out = Vec::with_capacity(2 + len + shard.len());
    out.push(SIGNED_MARKER);
    out.push(len as u8);
    out.extend_from_slice(&signature[..len]);
    out.extend_from_slice(shard);
    out
}

/// The signature of signed shard bytes, and the shard's own bytes; `None`
/// and the bytes as they are when they are not signed (or the signature's
/// length runs past their end).
pub fn split_signed(bytes: &[u8]) -> (Option<&[u8]>, &[u8]) {
    match bytes {
        [SIGNED_MARKER, len, rest @ ..]
            if usize::from(*len) <= MAX_SIGNATURE && rest.len() >= usize::from(*len) =>
        {
            let (signature, shard) = rest.split_at(usize::from(*len));
            (Some(signature), shard)
        }
        _ => (None, bytes),
    }
}

/// [`SHARD_MARKER`], then `cbor` DEFLATE-compressed (public for the
/// fuzzer, which feeds both forms to the decoder).
pub fn compress(cbor: &[u8]) -> Vec<u8> {
    let mut out = DeflateEncoder::new(vec![SHARD_MARKER], Compression::default());
    // Writing into a Vec cannot fail.
    let _ = out.write_all(cbor);
    out.finish().unwrap_or_default()
}

#[derive(Serialize, Deserialize)]
struct WireShard {
    format: u32,
    run_id: String,
    node: String,
    name: String,
    region: String,
    seq: u64,
    start_ms: u64,
    end_ms: u64,
    last: bool,
    series: Vec<WireSeries>,
    /// Absent when empty, so a shard without notes encodes as before.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    notes: Vec<Note>,
}

#[derive(Serialize, Deserialize)]
struct WireSeries {
    metric: String,
    tags: Vec<(String, String)>,
    value: WireValue,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum WireValue {
    Counter(f64),
    Trend(#[serde(with = "serde_bytes")] Vec<u8>),
    Rate { passes: u64, fails: u64 },
    Gauge { min: f64, max: f64, last: f64 },
}

impl Shard {
    /// Encodes the shard: [`SHARD_MARKER`], then its CBOR envelope
    /// DEFLATE-compressed.
    pub fn encode(&self) -> Vec<u8> {
        compress(&self.encode_cbor())
    }

    /// The CBOR envelope, uncompressed (public for the fuzzer).
    pub fn encode_cbor(&self) -> Vec<u8> {
        let mut ser = V2Serializer::new();
        let mut series: Vec<WireSeries> = self
            .series
            .iter()
            .map(|(k, v)| WireSeries {
                metric: k.metric.clone(),
                tags: k.tags.clone(),
                value: match v {
                    Value::Counter(c) => WireValue::Counter(*c),
                    Value::Trend(h) => {
                        let mut bytes = Vec::new();
                        // Serializing into a Vec only fails for histograms
                        // too large to exist; an empty trend is the fallback.
                        let _ = ser.serialize(h, &mut bytes);
                        WireValue::Trend(bytes)
                    }
                    Value::Rate { passes, fails } => WireValue::Rate {
                        passes: *passes,
                        fails: *fails,
                    },
                    Value::Gauge { min, max, last } => WireValue::Gauge {
                        min: *min,
                        max: *max,
                        last: *last,
                    },
                },
            })
            .collect();
        // A stable order, so equal shards encode to equal bytes.
        series.sort_by(|a, b| (&a.metric, &a.tags).cmp(&(&b.metric, &b.tags)));
        let wire = WireShard {
            format: SHARD_FORMAT,
            run_id: self.run_id.clone(),
            node: self.node.clone(),
            name: self.name.clone(),
            region: self.region.clone(),
            seq: self.seq,
            start_ms: self.start_ms,
            end_ms: self.end_ms,
            last: self.last,
            series,
            notes: self.notes.clone(),
        };
        let mut out = Vec::new();
        // Writing CBOR into a Vec cannot fail for these plain types.
        let _ = ciborium::into_writer(&wire, &mut out);
        out
    }

    /// Splits the shard into parts that each encode to at most `max_bytes`,
    /// by dividing its series between them. Every part keeps the interval;
    /// only the final part keeps `last`. Parts come back with this shard's
    /// `seq`: the sealer numbers them, so a split shard is simply several
    /// shards of one interval, and the count a last shard announces includes
    /// every part. A single series larger than `max_bytes` (none that fusi
    /// records comes near) gets a part of its own.
    pub fn split(self, max_bytes: usize) -> Vec<Shard> {
        // Both limits: the reader's (inflated) and the wire's (compressed),
        // from one encoding.
        let fits = || {
            let cbor = self.encode_cbor();
            cbor.len() <= MAX_SHARD_BYTES / 2 && compress(&cbor).len() <= max_bytes
        };
        if self.series.len() <= 1 || fits() {
            return vec![self];
        }
        let mut entries: Vec<(SeriesKey, Value)> = self
            .series
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let upper = entries.split_off(entries.len() / 2);
        let half = |entries: Vec<(SeriesKey, Value)>, last: bool, notes: Vec<Note>| {
            let mut series = SeriesSet::new();
            for (k, v) in entries {
                // Distinct keys of one set: merging into an empty set cannot
                // meet a kind mismatch.
                let _ = series.merge(&k, &v);
            }
            Shard {
                notes,
                series,
                last,
                run_id: self.run_id.clone(),
                node: self.node.clone(),
                name: self.name.clone(),
                region: self.region.clone(),
                seq: self.seq,
                start_ms: self.start_ms,
                end_ms: self.end_ms,
            }
        };
        let mut parts = half(entries, false, self.notes.clone()).split(max_bytes);
        parts.extend(half(upper, self.last, Vec::new()).split(max_bytes));
        parts
    }

    /// Decodes and validates a shard.
    pub fn decode(bytes: &[u8]) -> Result<Shard, ShardError> {
        let (mut shard, wire) = read(bytes)?;
        let mut de = Deserializer::new();
        let mut budget = MAX_HISTOGRAM_BYTES;
        let mut checked = Counts::new();
        for s in wire {
            let (key, value) = read_series(s, &mut budget, |metric, bytes| {
                // hdrhistogram's deserializer reserves the payload length a
                // header claims before it reads a byte (a 100-byte shard
                // could claim 4 GiB), and negates a zero run of i64::MIN
                // unchecked (a panic where overflow is checked). The counts
                // reader refuses both and accepts what it otherwise accepts
                // (counts.rs tests both ways), so it goes first.
                checked.clear();
                read_counts(metric, bytes, &mut checked)?;
                let mut h: hdrhistogram::Histogram<u64> = de
                    .deserialize(&mut &bytes[..])
                    .map_err(|e| ShardError::Invalid(format!("{metric}: {e:?}")))?;
                h.auto(true);
                Ok(h)
            })?;
            let value = match value {
                Read::Value(v) => v,
                Read::Trend(h) => Value::Trend(h),
            };
            let metric = key.metric.clone();
            shard
                .series
                .merge_owned(key, value)
                .map_err(|e| ShardError::Invalid(format!("{metric}: {e}")))?;
        }
        Ok(shard)
    }
}

/// A shard as a report reads it: like [`Shard`], but each trend kept as
/// the non-zero counts of its V2 bytes, which is all a merge needs, instead
/// of a histogram of tens of KiB.
#[derive(Debug, Clone)]
pub struct SparseShard {
    /// The shard, without its series.
    pub head: Shard,
    /// Its series, in key order.
    pub series: BTreeMap<SeriesKey, SparseValue>,
}

/// A series of a [`SparseShard`].
#[derive(Debug, Clone, PartialEq)]
pub enum SparseValue {
    /// A counter, rate or gauge.
    Value(Value),
    /// A trend's non-zero counts.
    Trend(Counts),
}

impl SparseShard {
    /// Decodes and validates a shard: exactly the bytes [`Shard::decode`]
    /// refuses are refused.
    pub fn decode(bytes: &[u8]) -> Result<SparseShard, ShardError> {
        let (head, wire) = read(bytes)?;
        let mut budget = MAX_HISTOGRAM_BYTES;
        let mut series = BTreeMap::new();
        for s in wire {
            let (key, value) = read_series(s, &mut budget, |metric, bytes| {
                let mut c = Counts::new();
                read_counts(metric, bytes, &mut c)?;
                Ok(c)
            })?;
            let metric = key.metric.clone();
            let value = match value {
                Read::Value(v) => SparseValue::Value(v),
                Read::Trend(c) => SparseValue::Trend(c),
            };
            match series.entry(key) {
                Entry::Vacant(e) => {
                    e.insert(value);
                }
                Entry::Occupied(mut e) => {
                    let mismatch = match (e.get_mut(), value) {
                        (SparseValue::Trend(a), SparseValue::Trend(b)) => {
                            a.extend(b);
                            None
                        }
                        (SparseValue::Value(a), SparseValue::Value(b)) => a.merge(&b).err(),
                        (SparseValue::Trend(_), SparseValue::Value(b)) => {
                            Some(KindMismatch(b.kind(), MetricKind::Trend))
                        }
                        (SparseValue::Value(a), SparseValue::Trend(_)) => {
                            Some(KindMismatch(MetricKind::Trend, a.kind()))
                        }
                    };
                    if let Some(e) = mismatch {
                        return Err(ShardError::Invalid(format!("{metric}: {e}")));
                    }
                }
            }
        }
        Ok(SparseShard { head, series })
    }
}

/// Reads a trend's V2 bytes as counts into `out` and checks their total.
fn read_counts(metric: &str, bytes: &[u8], out: &mut Counts) -> Result<(), ShardError> {
    counts::read(bytes, out)
        .ok_or_else(|| ShardError::Invalid(format!("{metric}: not a V2 histogram")))?;
    let total = out
        .iter()
        .try_fold(0u64, |sum, &(_, n)| sum.checked_add(n))
        .filter(|&total| total <= MAX_TREND_SAMPLES);
    if total.is_none() {
        return Err(ShardError::Invalid(format!(
            "{metric}: more than {MAX_TREND_SAMPLES} samples"
        )));
    }
    Ok(())
}

/// A series value as read: a trend as the caller decodes it.
enum Read<T> {
    Value(Value),
    Trend(T),
}

thread_local! {
    /// A decompressor kept for the next shard: making one zeroes and copies
    /// about 40 KiB of state, more than inflating a small shard costs.
    static INFLATE: RefCell<Decompress> = RefCell::new(Decompress::new(false));
}

/// Inflates a shard's DEFLATE bytes, refusing what inflates past
/// [`MAX_SHARD_BYTES`] (a bomb) and a stream that is cut short or broken.
fn inflate(compressed: &[u8]) -> Result<Vec<u8>, ShardError> {
    let broken = |why: String| ShardError::Cbor(format!("its compression is broken: {why}"));
    INFLATE.with_borrow_mut(|d| {
        d.reset(false);
        // About what a shard inflates to, never more than one byte past
        // the limit: that byte tells a bomb from a shard at it.
        let limit = MAX_SHARD_BYTES + 1;
        let mut out = Vec::with_capacity(compressed.len().saturating_mul(4).min(limit));
        loop {
            let consumed = usize::try_from(d.total_in()).unwrap_or(usize::MAX);
            let rest = compressed.get(consumed..).unwrap_or_default();
            let before = (consumed, out.len());
            let status = d
                .decompress_vec(rest, &mut out, FlushDecompress::None)
                .map_err(|e| broken(e.to_string()))?;
            if status == Status::StreamEnd {
                // `reserve_exact` may give more room than asked: the limit
                // is checked here, not left to the room.
                if out.len() > MAX_SHARD_BYTES {
                    return Err(ShardError::TooLarge(out.len()));
                }
                return Ok(out);
            }
            if out.len() == out.capacity() {
                if out.len() >= limit {
                    return Err(ShardError::TooLarge(out.len()));
                }
                out.reserve_exact(out.capacity().max(4096).min(limit - out.len()));
            } else if before
                == (
                    usize::try_from(d.total_in()).unwrap_or(usize::MAX),
                    out.len(),
                )
            {
                return Err(broken("the stream ends early".into()));
            }
        }
    })
}

/// Reads and checks a shard, all but its series, which come back as sent.
fn read(bytes: &[u8]) -> Result<(Shard, Vec<WireSeries>), ShardError> {
    if bytes.len() > MAX_SHARD_BYTES {
        return Err(ShardError::TooLarge(bytes.len()));
    }
    if bytes.first() == Some(&SIGNED_MARKER) {
        return match split_signed(bytes) {
            (Some(_), shard) if shard.first() != Some(&SIGNED_MARKER) => read(shard),
            _ => Err(ShardError::Invalid(
                "a signed shard without a shard inside".into(),
            )),
        };
    }
    let inflated;
    let compressed = bytes.first() == Some(&SHARD_MARKER);
    let cbor = match bytes.split_first() {
        Some((&SHARD_MARKER, compressed)) => {
            inflated = inflate(compressed)?;
            &inflated[..]
        }
        // Not compressed: an older format, refused below with its number.
        _ => bytes,
    };
    let wire: WireShard =
        ciborium::from_reader(cbor).map_err(|e| ShardError::Cbor(e.to_string()))?;
    if wire.format == SHARD_FORMAT && !compressed {
        return Err(ShardError::Invalid(format!(
            "a format {SHARD_FORMAT} shard must be compressed"
        )));
    }
    if wire.format != SHARD_FORMAT {
        return Err(ShardError::Format(wire.format));
    }
    for (what, text) in [
        ("run id", &wire.run_id),
        ("node", &wire.node),
        ("name", &wire.name),
        ("region", &wire.region),
    ] {
        if text.len() > MAX_SHARD_NAME {
            return Err(ShardError::Invalid(format!(
                "its {what} is {} bytes long, over {MAX_SHARD_NAME}",
                text.len()
            )));
        }
    }
    if wire.end_ms < wire.start_ms {
        return Err(ShardError::Invalid(format!(
            "interval ends ({} ms) before it starts ({} ms)",
            wire.end_ms, wire.start_ms
        )));
    }
    if wire.series.len() > MAX_SERIES_PER_SHARD {
        return Err(ShardError::Invalid(format!(
            "{} series, more than {MAX_SERIES_PER_SHARD}",
            wire.series.len()
        )));
    }
    if wire.notes.len() > MAX_NOTES {
        return Err(ShardError::Invalid(format!(
            "{} notes, more than {MAX_NOTES}",
            wire.notes.len()
        )));
    }
    if let Some(note) = wire
        .notes
        .iter()
        .find(|n| n.kind.len() > MAX_NOTE_KIND || n.text.len() > MAX_NOTE_TEXT)
    {
        return Err(ShardError::Invalid(format!(
            "a note of {} + {} bytes, over {MAX_NOTE_KIND} + {MAX_NOTE_TEXT}",
            note.kind.len(),
            note.text.len()
        )));
    }
    let shard = Shard {
        notes: wire.notes,
        run_id: wire.run_id,
        node: wire.node,
        name: wire.name,
        region: wire.region,
        seq: wire.seq,
        start_ms: wire.start_ms,
        end_ms: wire.end_ms,
        last: wire.last,
        series: SeriesSet::new(),
    };
    Ok((shard, wire.series))
}

/// Reads and checks one series. A trend's header is checked against what
/// the shard's histograms may claim in all (`budget`), then its bytes go to
/// `trend`, with the metric's name.
fn read_series<T>(
    s: WireSeries,
    budget: &mut u64,
    trend: impl FnOnce(&str, &[u8]) -> Result<T, ShardError>,
) -> Result<(SeriesKey, Read<T>), ShardError> {
    let key = SeriesKey {
        tags: SeriesKey::new("", s.tags).tags,
        metric: s.metric,
    };
    let finite = |values: &[f64]| {
        if values.iter().all(|v| v.is_finite()) {
            Ok(())
        } else {
            Err(ShardError::Invalid(format!(
                "{}: a value that is not a finite number",
                key.metric
            )))
        }
    };
    let value = match s.value {
        WireValue::Counter(c) => {
            finite(&[c])?;
            Read::Value(Value::Counter(c))
        }
        WireValue::Rate { passes, fails } => Read::Value(Value::Rate { passes, fails }),
        WireValue::Gauge { min, max, last } => {
            finite(&[min, max, last])?;
            Read::Value(Value::Gauge { min, max, last })
        }
        WireValue::Trend(bytes) => {
            let claim = histogram_claim(&bytes).ok_or_else(|| {
                ShardError::Invalid(format!("{}: bad histogram header", key.metric))
            })?;
            *budget = budget
                .checked_sub(claim)
                .ok_or_else(|| ShardError::Invalid("histograms claim too much memory".into()))?;
            Read::Trend(trend(&key.metric, &bytes)?)
        }
    };
    Ok((key, value))
}

/// Roughly how many bytes a V2 histogram will allocate when decoded, from its
/// header, or `None` if the header is not one fusi writes (at most 3
/// significant digits). This bounds what a hostile peer can make us allocate.
fn histogram_claim(bytes: &[u8]) -> Option<u64> {
    let header = bytes.get(..40)?;
    let be32 = |at: usize| {
        u32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    // Plain V2 only: a compressed one could inflate to anything.
    if be32(0) != V2_COOKIE {
        return None;
    }
    let sigfig = be32(12);
    if sigfig > 3 {
        return None;
    }
    let mut highest = [0u8; 8];
    highest.copy_from_slice(&header[24..32]);
    let highest = u64::from_be_bytes(highest).max(2);
    // Each power of two above the sub-bucket range adds 1024 counters of 8 bytes.
    let buckets = u64::from(64 - highest.leading_zeros()).saturating_sub(10) + 2;
    Some(buckets * 1024 * 8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fusi_sdk::abi::MetricKind;

    fn sample_shard() -> Shard {
        let mut series = SeriesSet::new();
        let lat = SeriesKey::new(
            "http_req_duration",
            [("status".to_string(), "200".to_string())],
        );
        for i in 0..5000 {
            let _ = series.add(&lat, MetricKind::Trend, f64::from(i % 400) * 0.37);
        }
        let _ = series.add(
            &SeriesKey::new("http_reqs", []),
            MetricKind::Counter,
            5000.0,
        );
        let _ = series.add(&SeriesKey::new("checks", []), MetricKind::Rate, 1.0);
        let _ = series.add(&SeriesKey::new("vus", []), MetricKind::Gauge, 7.0);
        Shard {
            notes: Vec::new(),
            run_id: "r1".into(),
            node: "n1".into(),
            name: "fra-1".into(),
            region: "fra".into(),
            seq: 3,
            start_ms: 3000,
            end_ms: 4000,
            last: false,
            series,
        }
    }

    #[test]
    fn round_trip_is_exact_and_stable() {
        let shard = sample_shard();
        let bytes = shard.encode();
        let back = Shard::decode(&bytes).expect("decodes");
        assert_eq!(back.seq, 3);
        assert_eq!(back.series.len(), shard.series.len());
        for (k, v) in shard.series.iter() {
            assert_eq!(back.series.get(k), Some(v), "{k:?}");
        }
        assert_eq!(back.encode(), bytes, "re-encoding gives the same bytes");
    }

    fn note(kind: &str, text: &str) -> Note {
        Note {
            kind: kind.into(),
            text: text.into(),
        }
    }

    #[test]
    fn notes_travel_with_the_shard_and_are_bounded() {
        let mut shard = sample_shard();
        let plain = shard.encode_cbor();
        shard.notes = vec![note("http:refused", "GET http://127.0.0.1:1/: refused")];
        let back = Shard::decode(&shard.encode()).expect("decodes");
        assert_eq!(back.notes, shard.notes);
        // A shard without notes encodes as before notes existed.
        shard.notes.clear();
        assert_eq!(shard.encode_cbor(), plain);
        // A peer's shard may not carry more, or longer, notes.
        shard.notes = vec![note("http:refused", "x"); MAX_NOTES + 1];
        let e = Shard::decode(&shard.encode()).expect_err("too many");
        assert!(e.to_string().contains("notes, more than"), "{e}");
        shard.notes = vec![note("http:refused", &"x".repeat(MAX_NOTE_TEXT + 1))];
        let e = SparseShard::decode(&shard.encode()).expect_err("too long");
        assert!(e.to_string().contains("a note of"), "{e}");
        // A split keeps the notes once, in its first part.
        let mut big = sample_shard();
        big.notes = vec![note("iteration:panic", "the scenario panicked")];
        for i in 0..300 {
            let _ = big.series.add(
                &SeriesKey::new("custom", [("i".to_string(), i.to_string())]),
                MetricKind::Counter,
                1.0,
            );
        }
        let parts = big.split(256);
        assert!(parts.len() > 1);
        let noted: usize = parts.iter().map(|p| p.notes.len()).sum();
        assert_eq!(noted, 1);
        assert_eq!(parts[0].notes.len(), 1);
    }

    #[test]
    fn garbage_and_truncation_are_errors() {
        let bytes = sample_shard().encode();
        for cut in [0, 1, 10, bytes.len() / 2, bytes.len() - 1] {
            assert!(Shard::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for len in 0..300 {
            let junk: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            assert_eq!(
                Shard::decode(&junk).is_ok(),
                SparseShard::decode(&junk).is_ok()
            );
        }
        assert!(matches!(
            Shard::decode(&vec![0u8; MAX_SHARD_BYTES + 1]),
            Err(ShardError::TooLarge(_))
        ));
    }

    #[test]
    fn sparse_decoding_refuses_and_keeps_what_decoding_does() {
        let bytes = sample_shard().encode();
        let sparse = SparseShard::decode(&bytes).expect("decodes");
        let dense = Shard::decode(&bytes).expect("decodes");
        assert_eq!(sparse.series.len(), dense.series.len());
        for ((k, v), (dk, dv)) in sparse.series.iter().zip(dense.series.iter()) {
            assert_eq!(k, dk);
            match (v, dv) {
                (SparseValue::Trend(c), Value::Trend(h)) => {
                    let mut back = crate::metrics::new_histogram();
                    counts::add(&mut back, c);
                    assert_eq!(&back, h, "{k:?}");
                }
                (SparseValue::Value(v), dv) => assert_eq!(v, dv, "{k:?}"),
                _ => panic!("{k:?}: kinds differ"),
            }
        }
        // Damaged copies: both readers refuse the same ones.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for case in 0..2000 {
            let mut damaged = bytes.clone();
            for _ in 0..1 + next() % 3 {
                let at = (next() % damaged.len() as u64) as usize;
                damaged[at] = next() as u8;
            }
            if case % 4 == 0 {
                damaged.truncate((next() % damaged.len() as u64) as usize);
            }
            assert_eq!(
                Shard::decode(&damaged).is_ok(),
                SparseShard::decode(&damaged).is_ok(),
                "case {case}"
            );
        }
    }

    #[test]
    fn a_large_shard_splits_into_parts_under_the_limit() {
        let mut shard = sample_shard();
        shard.last = true;
        for i in 0..400 {
            let key = SeriesKey::new("t", [("url".to_string(), format!("/path/{i}"))]);
            for v in 0..50 {
                let _ = shard.series.add(&key, MetricKind::Trend, f64::from(v * i));
            }
        }
        let whole = shard.encode().len();
        let limit = whole / 5;
        let total = shard.series.len();
        let parts = shard.clone().split(limit);
        assert!(parts.len() >= 5, "{} parts", parts.len());
        let mut merged = SeriesSet::new();
        for (i, part) in parts.iter().enumerate() {
            assert!(part.encode().len() <= limit, "part {i} over the limit");
            assert_eq!(
                part.last,
                i == parts.len() - 1,
                "only the final part is last"
            );
            assert_eq!((part.start_ms, part.end_ms), (3000, 4000));
            merged.merge_all(&part.series).expect("same kinds");
        }
        assert_eq!(merged.len(), total, "every series is in exactly one part");
        for (k, v) in shard.series.iter() {
            assert_eq!(merged.get(k), Some(v));
        }
        assert_eq!(
            shard.clone().split(whole).len(),
            1,
            "a shard under the limit stays whole"
        );
    }

    #[test]
    fn values_that_are_not_finite_numbers_are_refused() {
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
            let mut series = SeriesSet::new();
            let _ = series.add(&SeriesKey::new("c", []), MetricKind::Counter, bad);
            let shard = Shard {
                notes: Vec::new(),
                series,
                ..sample_shard()
            };
            assert!(
                matches!(Shard::decode(&shard.encode()), Err(ShardError::Invalid(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn hostile_histogram_headers_are_refused() {
        let mut series = SeriesSet::new();
        let _ = series.add(&SeriesKey::new("t", []), MetricKind::Trend, 1.0);
        let shard = Shard {
            notes: Vec::new(),
            series,
            ..sample_shard()
        };
        let mut cbor = shard.encode_cbor();
        // Find the V2 cookie and raise the significant digits to 5.
        let at = cbor
            .windows(4)
            .position(|w| w == V2_COOKIE.to_be_bytes())
            .expect("V2 cookie present");
        cbor[at + 15] = 5;
        assert!(matches!(
            Shard::decode(&compress(&cbor)),
            Err(ShardError::Invalid(_))
        ));
    }

    #[test]
    fn shards_are_compressed_and_only_compressed_shards_are_read() {
        let shard = sample_shard();
        let (packed, cbor) = (shard.encode(), shard.encode_cbor());
        assert_eq!(packed[0], SHARD_MARKER);
        assert!(
            packed.len() < cbor.len(),
            "{} < {}",
            packed.len(),
            cbor.len()
        );
        assert!(matches!(Shard::decode(&cbor), Err(ShardError::Invalid(_))));
        // A shard of the previous format (plain CBOR) names its format.
        let mut old = cbor.clone();
        let at = old
            .windows(7)
            .position(|w| w == b"format\x03")
            .expect("format field");
        old[at + 6] = 2;
        assert!(matches!(Shard::decode(&old), Err(ShardError::Format(2))));
        // A small input that inflates past the limit is refused, not held.
        let bomb = compress(&vec![0u8; MAX_SHARD_BYTES + 10]);
        assert!(bomb.len() < 64 << 10);
        assert!(matches!(Shard::decode(&bomb), Err(ShardError::TooLarge(_))));
        // Broken compression is an error, not a panic.
        let mut broken = packed.clone();
        broken.truncate(packed.len() / 2);
        assert!(Shard::decode(&broken).is_err());
    }
}
