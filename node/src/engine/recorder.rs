//! The recorder: where VUs put their measurements, and where shards come from.
//!
//! VUs add samples to the series of the *current* interval. Every interval
//! (1 s by default) the runner seals the current series into a
//! [`Shard`](crate::core::shard::Shard) and starts a fresh set, so memory is
//! bounded by the series of one interval, never by the number of samples.
//!
//! Samples go to one of 16 lanes (by VU id), each behind its own short mutex,
//! so VUs on different threads rarely wait for each other; a lock is never
//! held across an await. The HTTP metrics of a request (count, failure,
//! seven timings) live together under its tag set: one lookup per request.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fusi_sdk::abi::{HttpResponse, MetricKind};
use hdrhistogram::Histogram;
use rustc_hash::FxHashMap;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::core::metrics::{SeriesKey, SeriesSet, Value, names, new_histogram};
use crate::core::shard::Shard;
use crate::core::wire::MAX_GOSSIP_BYTES;
use crate::engine::executor::Progress;
use crate::engine::http::Exchange;

/// The most series one interval holds; past it, new tag sets are folded into
/// one `overflow` series per metric (and a warning is logged once).
pub const MAX_SERIES_PER_INTERVAL: usize = 10_000;

/// Independent lanes, so VUs on different threads rarely share a lock.
const LANES: usize = 16;

/// The HTTP metrics of one tag set, kept together so a request costs one
/// lookup instead of one per metric.
#[derive(Default)]
struct HttpSeries {
    requests: u64,
    failed: u64,
    /// duration, blocked, connecting, tls, sending, waiting, receiving
    timings: Option<[Histogram<u64>; 7]>,
}

const TIMING_METRICS: [&str; 7] = [
    names::HTTP_REQ_DURATION,
    names::HTTP_REQ_BLOCKED,
    names::HTTP_REQ_CONNECTING,
    names::HTTP_REQ_TLS_HANDSHAKING,
    names::HTTP_REQ_SENDING,
    names::HTTP_REQ_WAITING,
    names::HTTP_REQ_RECEIVING,
];

/// Completed iterations of one tag set: how many, and their durations.
type IterationSeries = (u64, Histogram<u64>);

/// One lane's samples of the current interval.
#[derive(Default)]
struct Lane {
    series: SeriesSet,
    /// HTTP metrics by sorted tag set.
    http: FxHashMap<Vec<(String, String)>, HttpSeries>,
    /// Completed iterations and their durations, by the VU's tags.
    iterations: FxHashMap<Vec<(String, String)>, IterationSeries>,
    /// `errors` by (kind, name).
    errors: FxHashMap<(&'static str, String), u64>,
    sent: u64,
    received: u64,
}

impl Lane {
    fn series_count(&self) -> usize {
        self.series.len() + self.http.len() * 9 + self.iterations.len() * 2 + self.errors.len()
    }

    /// Moves everything into `out` as plain series.
    fn drain_into(&mut self, out: &mut SeriesSet) {
        let _ = out.merge_all(&self.series.take());
        for (tags, h) in self.http.drain() {
            let key = |metric: &str| SeriesKey {
                metric: metric.to_owned(),
                tags: tags.clone(),
            };
            let _ = out.merge(&key(names::HTTP_REQS), &Value::Counter(h.requests as f64));
            let _ = out.merge(
                &key(names::HTTP_REQ_FAILED),
                &Value::Rate {
                    passes: h.failed,
                    fails: h.requests - h.failed,
                },
            );
            if let Some(timings) = h.timings {
                for (metric, hist) in TIMING_METRICS.iter().zip(timings) {
                    let _ = out.merge(&key(metric), &Value::Trend(hist));
                }
            }
        }
        for (tags, (n, hist)) in self.iterations.drain() {
            let key = |metric: &str| SeriesKey {
                metric: metric.to_owned(),
                tags: tags.clone(),
            };
            let _ = out.merge(&key(names::ITERATIONS), &Value::Counter(n as f64));
            let _ = out.merge(&key(names::ITERATION_DURATION), &Value::Trend(hist));
        }
        for ((kind, name), n) in self.errors.drain() {
            let key = SeriesKey::new(
                names::ERRORS,
                [
                    ("kind".to_owned(), kind.to_owned()),
                    ("name".to_owned(), name),
                ],
            );
            let _ = out.merge(&key, &Value::Counter(n as f64));
        }
        for (metric, bytes) in [
            (names::DATA_SENT, &mut self.sent),
            (names::DATA_RECEIVED, &mut self.received),
        ] {
            if *bytes > 0 {
                let _ = out.merge(&SeriesKey::new(metric, []), &Value::Counter(*bytes as f64));
                *bytes = 0;
            }
        }
    }
}

/// Collects samples for the current interval.
pub struct Recorder {
    lanes: Vec<Mutex<Lane>>,
    warned_overflow: AtomicBool,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            lanes: (0..LANES).map(|_| Mutex::new(Lane::default())).collect(),
            warned_overflow: AtomicBool::new(false),
        }
    }
}

impl Recorder {
    /// An empty recorder.
    pub fn new() -> Recorder {
        Recorder::default()
    }

    fn lane(&self, lane: u64) -> std::sync::MutexGuard<'_, Lane> {
        let i = (lane % LANES as u64) as usize;
        // A panic while holding the lock cannot leave a Lane invalid, so a
        // poisoned lock is still usable.
        self.lanes[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    fn overflowing(&self, lane: &Lane) -> bool {
        if lane.series_count() < MAX_SERIES_PER_INTERVAL / LANES {
            return false;
        }
        if !self.warned_overflow.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "more than {MAX_SERIES_PER_INTERVAL} metric series in one second; new tag sets are merged \
                 into an `overflow` series: give requests with ids in their URL a `name` tag"
            );
        }
        true
    }

    /// Adds one sample; `lane` spreads VUs over locks (use the VU id).
    pub fn add(&self, lane: u64, key: SeriesKey, kind: MetricKind, value: f64) {
        let mut l = self.lane(lane);
        let key = if l.series.get(&key).is_none() && self.overflowing(&l) {
            SeriesKey::new(&key.metric, [("overflow".to_owned(), "true".to_owned())])
        } else {
            key
        };
        if let Err(e) = l.series.add(&key, kind, value) {
            tracing::warn!(metric = %key.metric, "sample dropped: {e}");
        }
    }

    /// Records a completed iteration that took `ms` from its scheduled
    /// start; `tags` must be sorted with unique keys (a VU's base tags are).
    pub fn iteration(&self, lane: u64, tags: &[(String, String)], ms: f64) {
        let mut l = self.lane(lane);
        let entry = match l.iterations.get_mut(tags) {
            Some(e) => e,
            None => {
                let tags = if self.overflowing(&l) {
                    vec![("overflow".to_owned(), "true".to_owned())]
                } else {
                    tags.to_vec()
                };
                l.iterations
                    .entry(tags)
                    .or_insert_with(|| (0, new_histogram()))
            }
        };
        entry.0 += 1;
        let v = crate::core::metrics::trend_units(ms);
        if entry.1.record(v).is_err() {
            entry.1.saturating_record(v);
        }
    }

    /// Records one HTTP request with all its metrics.
    pub fn http(
        &self,
        lane: u64,
        base_tags: &[(String, String)],
        req_tags: &[(String, String)],
        resp: &HttpResponse,
        ex: &Exchange,
    ) {
        let failed = !(200..400).contains(&resp.status);
        let mut tags: Vec<(String, String)> =
            Vec::with_capacity(base_tags.len() + req_tags.len() + 3);
        tags.extend_from_slice(base_tags);
        tags.extend(req_tags.iter().filter(|(k, _)| k != "name").cloned());
        tags.push(("method".into(), ex.method.clone()));
        tags.push(("name".into(), ex.name.clone()));
        tags.push(("status".into(), resp.status.to_string()));
        let tags = SeriesKey::new("", tags).tags;
        let error_kind = match (&resp.error, resp.status) {
            (Some(e), _) => Some(e.kind.as_str()),
            (None, 400..=499) => Some("status_4xx"),
            (None, 500..=599) => Some("status_5xx"),
            _ => None,
        };
        let mut l = self.lane(lane);
        let tags = if !l.http.contains_key(&tags) && self.overflowing(&l) {
            vec![("overflow".to_owned(), "true".to_owned())]
        } else {
            tags
        };
        let h = l.http.entry(tags).or_default();
        h.requests += 1;
        h.failed += u64::from(failed);
        if resp.error.is_none() {
            let t = &resp.timings;
            let hists = h
                .timings
                .get_or_insert_with(|| std::array::from_fn(|_| new_histogram()));
            for (hist, us) in hists.iter_mut().zip([
                t.duration_us,
                t.dns_us,
                t.connect_us,
                t.tls_us,
                t.sending_us,
                t.waiting_us,
                t.receiving_us,
            ]) {
                // Microseconds are the trend units of a millisecond metric.
                if hist.record(us).is_err() {
                    hist.saturating_record(us);
                }
            }
        }
        if let Some(kind) = error_kind {
            *l.errors.entry((kind, ex.name.clone())).or_insert(0) += 1;
        }
        l.sent += ex.bytes_sent;
        l.received += ex.bytes_received;
    }

    /// Takes the current interval's series, leaving a fresh set.
    pub fn seal(&self) -> SeriesSet {
        let mut out = SeriesSet::new();
        for lane in 0..LANES as u64 {
            self.lane(lane).drain_into(&mut out);
        }
        out
    }
}

/// Whose shards a sealer makes.
#[derive(Debug, Clone)]
pub struct ShardOrigin {
    /// The run.
    pub run_id: String,
    /// This node's id.
    pub node: String,
    /// This node's name.
    pub name: String,
    /// This node's region.
    pub region: String,
}

/// The largest encoded shard a sealer sends: under the gossip limit, with
/// room for gossipsub's own envelope.
pub const MAX_SHARD_PART_BYTES: usize = MAX_GOSSIP_BYTES - (16 << 10);

/// Seals a shard every `interval` from `start` until `done` fires, then a
/// last one for the rest, with the VU gauges added to each. A shard that
/// would encode to more than [`MAX_SHARD_PART_BYTES`] is sent as several,
/// numbered in turn.
pub async fn seal_every(
    recorder: Arc<Recorder>,
    progress: Arc<Progress>,
    origin: ShardOrigin,
    start: Instant,
    interval: Duration,
    shards: mpsc::UnboundedSender<Shard>,
    mut done: oneshot::Receiver<()>,
) {
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let mut seq = 0u64;
    let mut sealed = 0u32;
    let mut from = Duration::ZERO;
    loop {
        sealed = sealed.saturating_add(1);
        let to = interval * sealed;
        let last = tokio::select! {
            _ = &mut done => true,
            () = tokio::time::sleep_until(start + to) => false,
        };
        let to = if last {
            Instant::now().saturating_duration_since(start).max(from)
        } else {
            to
        };
        let mut series = recorder.seal();
        let active = progress.active_vus.load(Ordering::Relaxed) as f64;
        let initialized = progress.initialized_vus.load(Ordering::Relaxed) as f64;
        let _ = series.add(&SeriesKey::new(names::VUS, []), MetricKind::Gauge, active);
        let _ = series.add(
            &SeriesKey::new(names::VUS_MAX, []),
            MetricKind::Gauge,
            initialized,
        );
        let shard = Shard {
            run_id: origin.run_id.clone(),
            node: origin.node.clone(),
            name: origin.name.clone(),
            region: origin.region.clone(),
            seq,
            start_ms: ms(from),
            end_ms: ms(to),
            last,
            series,
        };
        for mut part in shard.split(MAX_SHARD_PART_BYTES) {
            part.seq = seq;
            seq += 1;
            if shards.send(part).is_err() {
                return;
            }
        }
        if last {
            return;
        }
        from = to;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::metrics::Value;
    use fusi_sdk::abi::{ErrorKind, HttpError, Timings};

    #[test]
    fn http_records_counts_latency_and_errors() {
        let r = Recorder::new();
        let ex = Exchange {
            bytes_sent: 100,
            bytes_received: 200,
            name: "http://h/x".into(),
            method: "GET".into(),
        };
        let ok = HttpResponse {
            status: 200,
            timings: Timings {
                duration_us: 50_000,
                ..Timings::default()
            },
            ..HttpResponse::default()
        };
        let err = HttpResponse {
            error: Some(HttpError {
                kind: ErrorKind::Refused,
                message: String::new(),
            }),
            ..HttpResponse::default()
        };
        let five = HttpResponse {
            status: 503,
            ..HttpResponse::default()
        };
        r.http(1, &[], &[], &ok, &ex);
        r.http(2, &[], &[], &err, &ex);
        r.http(3, &[], &[], &five, &ex);
        let set = r.seal();
        assert_eq!(
            set.fold(names::HTTP_REQS, |_| true),
            Some(Value::Counter(3.0))
        );
        assert_eq!(
            set.fold(names::HTTP_REQ_FAILED, |_| true),
            Some(Value::Rate {
                passes: 2,
                fails: 1
            })
        );
        let errors: Vec<_> = set
            .iter()
            .filter(|(k, _)| k.metric == names::ERRORS)
            .filter_map(|(k, _)| k.tag("kind").map(str::to_owned))
            .collect();
        assert_eq!(errors.len(), 2);
        assert!(
            errors.contains(&"refused".to_owned()) && errors.contains(&"status_5xx".to_owned())
        );
        let Some(Value::Trend(h)) = set.fold(names::HTTP_REQ_DURATION, |_| true) else {
            panic!("trend expected")
        };
        assert_eq!(h.len(), 2, "a request with no response has no duration");
        assert_eq!(
            set.fold(names::DATA_SENT, |_| true),
            Some(Value::Counter(300.0))
        );
        assert!(r.seal().is_empty(), "sealing starts a fresh interval");
    }

    #[test]
    fn series_overflow_is_folded() {
        let r = Recorder::new();
        for i in 0..MAX_SERIES_PER_INTERVAL + 50 {
            r.add(
                i as u64,
                SeriesKey::new("m", [("id".to_owned(), i.to_string())]),
                MetricKind::Counter,
                1.0,
            );
        }
        let set = r.seal();
        assert_eq!(
            set.len(),
            MAX_SERIES_PER_INTERVAL + 1,
            "the cap, plus one overflow series"
        );
        let overflow = SeriesKey::new("m", [("overflow".to_owned(), "true".to_owned())]);
        assert_eq!(set.get(&overflow), Some(&Value::Counter(50.0)));
    }
}
