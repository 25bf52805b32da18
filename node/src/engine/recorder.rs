//! The recorder: where VUs put their measurements, and where shards come from.
//!
//! VUs add samples to the series of the *current* interval. Every interval
//! (1 s by default) the runner seals the current series into a
//! [`Shard`](crate::core::shard::Shard) and starts a fresh set, so memory is
//! bounded by the series of one interval, never by the number of samples.
//!
//! One short mutex guards the current interval. It is held for a few hash
//! lookups per request; the lock is never held across an await.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fusi_sdk::abi::{HttpResponse, MetricKind};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::core::metrics::{SeriesKey, SeriesSet, names};
use crate::core::shard::Shard;
use crate::engine::executor::Progress;
use crate::engine::http::Exchange;

/// The most series one interval holds; past it, new tag sets are folded into
/// one `overflow` series per metric (and a warning is logged once).
pub const MAX_SERIES_PER_INTERVAL: usize = 10_000;

/// Collects samples for the current interval.
#[derive(Default)]
pub struct Recorder {
    current: Mutex<SeriesSet>,
    warned_overflow: AtomicBool,
}

impl Recorder {
    /// An empty recorder.
    pub fn new() -> Recorder {
        Recorder::default()
    }

    /// Adds one sample.
    pub fn add(&self, key: SeriesKey, kind: MetricKind, value: f64) {
        let mut set = self.lock();
        Self::add_locked(&mut set, &self.warned_overflow, key, kind, value);
    }

    fn add_locked(
        set: &mut SeriesSet,
        warned: &AtomicBool,
        key: SeriesKey,
        kind: MetricKind,
        value: f64,
    ) {
        let key = if set.len() >= MAX_SERIES_PER_INTERVAL && set.get(&key).is_none() {
            if !warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "more than {MAX_SERIES_PER_INTERVAL} metric series in one second; new tag sets are merged \
                     into an `overflow` series: give requests with ids in their URL a `name` tag"
                );
            }
            SeriesKey::new(&key.metric, [("overflow".to_owned(), "true".to_owned())])
        } else {
            key
        };
        if let Err(e) = set.add(&key, kind, value) {
            tracing::warn!(metric = %key.metric, "sample dropped: {e}");
        }
    }

    /// Records one HTTP request with all its metrics.
    pub fn http(
        &self,
        base_tags: &[(String, String)],
        req_tags: &[(String, String)],
        resp: &HttpResponse,
        ex: &Exchange,
    ) {
        let failed = !(200..400).contains(&resp.status);
        let mut tags: Vec<(String, String)> = base_tags.to_vec();
        tags.extend(req_tags.iter().filter(|(k, _)| k != "name").cloned());
        tags.push(("method".into(), ex.method.clone()));
        tags.push(("name".into(), ex.name.clone()));
        tags.push(("status".into(), resp.status.to_string()));
        let key = |metric: &str| SeriesKey::new(metric, tags.iter().cloned());
        let ms = |us: u64| us as f64 / 1000.0;
        let t = &resp.timings;
        let error_kind = match (&resp.error, resp.status) {
            (Some(e), _) => Some(e.kind.as_str()),
            (None, 400..=499) => Some("status_4xx"),
            (None, 500..=599) => Some("status_5xx"),
            _ => None,
        };
        let mut set = self.lock();
        let w = &self.warned_overflow;
        Self::add_locked(&mut set, w, key(names::HTTP_REQS), MetricKind::Counter, 1.0);
        Self::add_locked(
            &mut set,
            w,
            key(names::HTTP_REQ_FAILED),
            MetricKind::Rate,
            f64::from(u8::from(failed)),
        );
        if resp.error.is_none() {
            for (metric, us) in [
                (names::HTTP_REQ_DURATION, t.duration_us),
                (names::HTTP_REQ_BLOCKED, t.dns_us),
                (names::HTTP_REQ_CONNECTING, t.connect_us),
                (names::HTTP_REQ_TLS_HANDSHAKING, t.tls_us),
                (names::HTTP_REQ_SENDING, t.sending_us),
                (names::HTTP_REQ_WAITING, t.waiting_us),
                (names::HTTP_REQ_RECEIVING, t.receiving_us),
            ] {
                Self::add_locked(&mut set, w, key(metric), MetricKind::Trend, ms(us));
            }
        }
        if let Some(kind) = error_kind {
            let k = SeriesKey::new(
                names::ERRORS,
                [
                    ("kind".to_owned(), kind.to_owned()),
                    ("name".to_owned(), ex.name.clone()),
                ],
            );
            Self::add_locked(&mut set, w, k, MetricKind::Counter, 1.0);
        }
        Self::add_locked(
            &mut set,
            w,
            SeriesKey::new(names::DATA_SENT, []),
            MetricKind::Counter,
            ex.bytes_sent as f64,
        );
        Self::add_locked(
            &mut set,
            w,
            SeriesKey::new(names::DATA_RECEIVED, []),
            MetricKind::Counter,
            ex.bytes_received as f64,
        );
    }

    /// Takes the current interval's series, leaving a fresh set.
    pub fn seal(&self) -> SeriesSet {
        self.lock().take()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SeriesSet> {
        // A panic while holding the lock cannot leave a SeriesSet invalid, so
        // a poisoned lock is still usable.
        self.current.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Seals a shard every `interval` from `start` until `done` fires, then a
/// last one for the rest, with the VU gauges added to each.
pub async fn seal_every(
    recorder: Arc<Recorder>,
    progress: Arc<Progress>,
    (run_id, node): (String, String),
    start: Instant,
    interval: Duration,
    shards: mpsc::UnboundedSender<Shard>,
    mut done: oneshot::Receiver<()>,
) {
    let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let mut seq = 0u64;
    let mut from = Duration::ZERO;
    loop {
        let to = interval * u32::try_from(seq + 1).unwrap_or(u32::MAX);
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
            run_id: run_id.clone(),
            node: node.clone(),
            seq,
            start_ms: ms(from),
            end_ms: ms(to),
            last,
            series,
        };
        if shards.send(shard).is_err() || last {
            return;
        }
        seq += 1;
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
        r.http(&[], &[], &ok, &ex);
        r.http(&[], &[], &err, &ex);
        r.http(&[], &[], &five, &ex);
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
                SeriesKey::new("m", [("id".to_owned(), i.to_string())]),
                MetricKind::Counter,
                1.0,
            );
        }
        let set = r.seal();
        assert_eq!(set.len(), MAX_SERIES_PER_INTERVAL + 1);
        let overflow = SeriesKey::new("m", [("overflow".to_owned(), "true".to_owned())]);
        assert_eq!(set.get(&overflow), Some(&Value::Counter(50.0)));
    }
}
