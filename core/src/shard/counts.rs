//! HdrHistogram V2 bytes read as their non-zero counts, without building
//! the histogram.
//!
//! A decoded histogram holds a counter for every bucket of its range (tens
//! of KiB), most of them zero; its V2 bytes skip the zeros. Merging a
//! shard's trends into a report needs only the non-zero counts, so the
//! report reads those straight from the bytes and adds them where they go.
//!
//! [`read`] accepts exactly the V2 bytes that hdrhistogram's `Deserializer`
//! accepts, and yields the counts the histogram it makes would hold (the
//! tests check both against it).

use hdrhistogram::Histogram;

/// HdrHistogram's V2 (uncompressed) cookie.
pub(super) const V2_COOKIE: u32 = 0x1c84_9313;
/// The bytes before the payload.
const HEADER: usize = 40;

/// The non-zero counts of a histogram: (the lowest value of a bucket, its
/// count), in bucket order.
pub type Counts = Vec<(u64, u64)>;

/// Appends the non-zero counts of V2 bytes to `out`. `None` where
/// hdrhistogram's `Deserializer` would fail on the bytes (`out` may then
/// hold some of them).
pub fn read(bytes: &[u8], out: &mut Counts) -> Option<()> {
    let header = bytes.get(..HEADER)?;
    let be32 = |at: usize| {
        u32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    let be64 = |at: usize| (u64::from(be32(at)) << 32) | u64::from(be32(at + 4));
    if be32(0) != V2_COOKIE || be32(8) != 0 || f64::from_bits(be64(32)) != 1.0 {
        return None;
    }
    let layout = Layout::new(be64(16), be64(24), u8::try_from(be32(12)).ok()?)?;
    let len = usize::try_from(be32(4)).ok()?;
    let payload = bytes.get(HEADER..HEADER.checked_add(len)?)?;
    let mut at = 0;
    let mut index = 0usize;
    // At most one count per byte.
    out.reserve(payload.len());
    while let Some(&first) = payload.get(at) {
        // Counts and runs of zeros mostly take one byte.
        let (encoded, used) = if first < 0x80 {
            (u64::from(first), 1)
        } else {
            varint(&payload[at..])?
        };
        at += used;
        let n = zig_zag(encoded);
        if n < 0 {
            index = index.checked_add(usize::try_from(n.checked_neg()?).ok()?)?;
        } else {
            if n > 0 {
                if index >= layout.len {
                    return None;
                }
                out.push((layout.value_for(index), n.unsigned_abs()));
            }
            index = index.checked_add(1)?;
        }
    }
    Some(())
}

/// Adds counts to a histogram.
pub fn add(h: &mut Histogram<u64>, counts: &[(u64, u64)]) {
    for &(value, count) in counts {
        // An auto-resizing histogram grows to fit; clamp only if that fails.
        if h.record_n(value, count).is_err() {
            h.saturating_record_n(value, count);
        }
    }
}

/// Where a histogram keeps its counts: what hdrhistogram derives from the
/// lowest and highest value and the significant digits.
struct Layout {
    unit_magnitude: u32,
    half_count_magnitude: u32,
    /// The number of counters.
    len: usize,
}

impl Layout {
    /// The layout `Histogram::new_with_bounds` makes, or `None` where it fails.
    fn new(low: u64, high: u64, digits: u8) -> Option<Layout> {
        if !(1..=u64::MAX / 2).contains(&low) || high < 2 * low || digits > 5 {
            return None;
        }
        let largest = 2 * 10u32.pow(u32::from(digits));
        // Through f64, as hdrhistogram does: it differs from `ilog2` above 2^53.
        let unit_magnitude = (low as f64).log2().floor() as u32;
        let count_magnitude = largest.next_power_of_two().ilog2();
        if unit_magnitude + count_magnitude > 63 {
            return None;
        }
        let half_count = 1u32 << (count_magnitude - 1);
        // The buckets that cover `high`, as `Histogram::resize` counts them.
        let mut untrackable = 1u64 << (count_magnitude + unit_magnitude);
        let mut buckets = 1u32;
        while untrackable <= high {
            if untrackable > u64::MAX / 2 {
                buckets += 1;
                break;
            }
            untrackable <<= 1;
            buckets += 1;
        }
        Some(Layout {
            unit_magnitude,
            half_count_magnitude: count_magnitude - 1,
            len: usize::try_from((buckets + 1) * half_count).ok()?,
        })
    }

    /// The lowest value counted at an index, as `Histogram::value_for`.
    fn value_for(&self, index: usize) -> u64 {
        let half_count = 1u64 << self.half_count_magnitude;
        let bucket = (index >> self.half_count_magnitude) as u64;
        let sub = (index as u64 & (half_count - 1)) + half_count;
        let (bucket, sub) = match bucket.checked_sub(1) {
            Some(b) => (b, sub),
            None => (0, sub - half_count),
        };
        sub << (bucket + u64::from(self.unit_magnitude))
    }
}

/// A LEB128 number of at most 9 bytes (the 9th with 8 bits), as
/// hdrhistogram writes them, and the bytes it took.
fn varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, b) in bytes.iter().take(9).enumerate() {
        if i == 8 {
            return Some((value | (u64::from(*b) << 56), 9));
        }
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

fn zig_zag(encoded: u64) -> i64 {
    ((encoded >> 1) as i64) ^ -((encoded & 1) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::new_histogram;
    use crate::rng::Rng;
    use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};

    fn counts_of(h: &Histogram<u64>) -> Counts {
        h.iter_recorded()
            .map(|v| {
                (
                    h.lowest_equivalent(v.value_iterated_to()),
                    v.count_at_value(),
                )
            })
            .collect()
    }

    fn v2(h: &Histogram<u64>) -> Vec<u8> {
        let mut bytes = Vec::new();
        V2Serializer::new()
            .serialize(h, &mut bytes)
            .expect("serializes");
        bytes
    }

    fn random_histogram(rng: &mut Rng) -> Histogram<u64> {
        let mut h = if rng.chance(0.5) {
            new_histogram()
        } else {
            let digits = rng.below(4) as u8;
            let low = 1 + rng.below(2000);
            Histogram::new_with_bounds(low, low * 2 + rng.below(1 << 40), digits)
                .expect("valid bounds")
        };
        h.auto(true);
        let scale = 1u64 << rng.below(40);
        for _ in 0..rng.below(3000) {
            let _ = h.record_n(rng.below(scale), 1 + rng.below(3));
        }
        h
    }

    #[test]
    fn counts_are_those_of_the_decoded_histogram() {
        let mut rng = Rng(0x00c0_ffee);
        for case in 0..300 {
            let h = random_histogram(&mut rng);
            let mut out = Counts::new();
            read(&v2(&h), &mut out).expect("reads");
            assert_eq!(out, counts_of(&h), "case {case}");
            let mut sum = new_histogram();
            add(&mut sum, &out);
            let mut direct = new_histogram();
            direct.add(&h).expect("adds");
            assert_eq!(sum, direct, "case {case}");
        }
    }

    #[test]
    fn damaged_bytes_are_refused_exactly_when_the_deserializer_refuses_them() {
        let mut rng = Rng(0x0bad_b10b);
        for case in 0..3000 {
            let mut bytes = v2(&random_histogram(&mut rng));
            match rng.below(4) {
                0 => bytes.truncate(rng.below(bytes.len() as u64 + 1) as usize),
                1 => {
                    for _ in 0..1 + rng.below(4) {
                        let at = rng.below(bytes.len() as u64) as usize;
                        bytes[at] = rng.next_u64() as u8;
                    }
                }
                2 => {
                    // The header's fields.
                    let at = 4 + rng.below(36) as usize;
                    bytes[at] = rng.next_u64() as u8;
                }
                _ => bytes.extend((0..rng.below(20)).map(|_| rng.next_u64() as u8)),
            }
            let mut out = Counts::new();
            let mine = read(&bytes, &mut out);
            let theirs: Result<Histogram<u64>, _> =
                Deserializer::new().deserialize(&mut &bytes[..]);
            match theirs {
                Ok(h) => {
                    assert!(mine.is_some(), "case {case}: refused what decodes");
                    assert_eq!(out, counts_of(&h), "case {case}");
                }
                Err(_) => assert!(mine.is_none(), "case {case}: read what does not decode"),
            }
        }
    }
}
