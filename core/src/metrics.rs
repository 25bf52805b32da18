//! Metric values and how they merge.
//!
//! Every measurement lands in a *series*: a metric name plus a sorted tag set.
//! A series holds one [`Value`] whose size does not grow with the number of
//! samples: a sum, a pass/fail count, a level, or an HdrHistogram. Values of
//! the same series merge exactly, in any order and any grouping, which is what
//! lets shards from many nodes and many intervals add up to one report.
//!
//! Trend samples are recorded in thousandths of their unit (microseconds for
//! the built-in durations, which are in milliseconds) with three significant
//! digits, in auto-resizing histograms.

use fusi_sdk::abi::MetricKind;
use hdrhistogram::Histogram;
use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

/// Built-in metric names, as k6 users know them.
pub mod names {
    /// Every built-in metric.
    pub const ALL: [&str; 29] = [
        HTTP_REQS,
        HTTP_REQ_DURATION,
        HTTP_REQ_BLOCKED,
        HTTP_REQ_CONNECTING,
        HTTP_REQ_TLS_HANDSHAKING,
        HTTP_REQ_SENDING,
        HTTP_REQ_WAITING,
        HTTP_REQ_RECEIVING,
        HTTP_REQ_FAILED,
        ERRORS,
        DATA_SENT,
        DATA_RECEIVED,
        ITERATIONS,
        ITERATION_DURATION,
        ITERATIONS_FAILED,
        DROPPED_ITERATIONS,
        CHECKS,
        GROUP_DURATION,
        VUS,
        VUS_MAX,
        NODE_CPU,
        DATA_ROWS_USED,
        DATA_EXHAUSTED,
        WS_CONNECTING,
        WS_SESSION_DURATION,
        WS_SESSIONS,
        WS_MSGS_SENT,
        WS_MSGS_RECEIVED,
        CONNECTIONS_PACED,
    ];
    /// Requests made (counter).
    pub const HTTP_REQS: &str = "http_reqs";
    /// Rows of test data drawn, tagged `data` with the set's name (counter).
    pub const DATA_ROWS_USED: &str = "data_rows_used";
    /// Draws that found a node's rows of a set gone, tagged `data`
    /// (counter).
    pub const DATA_EXHAUSTED: &str = "data_exhausted";
    /// Sending + waiting + receiving, ms (trend).
    pub const HTTP_REQ_DURATION: &str = "http_req_duration";
    /// DNS lookup time, ms (trend).
    pub const HTTP_REQ_BLOCKED: &str = "http_req_blocked";
    /// TCP connect time, ms (trend).
    pub const HTTP_REQ_CONNECTING: &str = "http_req_connecting";
    /// TLS handshake time, ms (trend).
    pub const HTTP_REQ_TLS_HANDSHAKING: &str = "http_req_tls_handshaking";
    /// Writing the request, ms (trend).
    pub const HTTP_REQ_SENDING: &str = "http_req_sending";
    /// Time to first byte, ms (trend).
    pub const HTTP_REQ_WAITING: &str = "http_req_waiting";
    /// Reading the body, ms (trend).
    pub const HTTP_REQ_RECEIVING: &str = "http_req_receiving";
    /// Requests without a 2xx/3xx answer (rate).
    pub const HTTP_REQ_FAILED: &str = "http_req_failed";
    /// Failed requests by `kind` (counter).
    pub const ERRORS: &str = "errors";
    /// Bytes written (counter).
    pub const DATA_SENT: &str = "data_sent";
    /// Bytes read (counter).
    pub const DATA_RECEIVED: &str = "data_received";
    /// Completed iterations (counter).
    pub const ITERATIONS: &str = "iterations";
    /// Iteration time from the scheduled start, ms (trend).
    pub const ITERATION_DURATION: &str = "iteration_duration";
    /// Iterations that trapped, panicked or timed out, by `reason` (counter).
    pub const ITERATIONS_FAILED: &str = "iterations_failed";
    /// Arrivals with no free VU (counter).
    pub const DROPPED_ITERATIONS: &str = "dropped_iterations";
    /// Check results, tagged `check` (rate).
    pub const CHECKS: &str = "checks";
    /// Time spent in a group, tagged `group`, ms (trend).
    pub const GROUP_DURATION: &str = "group_duration";
    /// VUs running (gauge).
    pub const VUS: &str = "vus";
    /// The most VUs initialized (gauge).
    pub const VUS_MAX: &str = "vus_max";
    /// A node's CPU use in an interval: its process's CPU time, every
    /// thread, over the time of the CPUs it may use, from 0 to 1 (gauge).
    /// Near 1, the node's own wait for its CPU is in what it measures.
    pub const NODE_CPU: &str = "node_cpu";
    /// Opening a WebSocket: connect, TLS and the upgrade, ms (trend).
    pub const WS_CONNECTING: &str = "ws_connecting";
    /// A WebSocket from the start of its connect to its close, ms (trend).
    pub const WS_SESSION_DURATION: &str = "ws_session_duration";
    /// WebSockets opened (counter).
    pub const WS_SESSIONS: &str = "ws_sessions";
    /// WebSocket messages sent (counter).
    pub const WS_MSGS_SENT: &str = "ws_msgs_sent";
    /// WebSocket messages received (counter).
    pub const WS_MSGS_RECEIVED: &str = "ws_msgs_received";
    /// New connections that waited for one of the node's opening slots
    /// (`--max-connecting`) before they connected (counter).
    pub const CONNECTIONS_PACED: &str = "connections_paced";
}

/// The identity of a series: a metric and its tags, sorted by key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesKey {
    /// The metric name.
    pub metric: String,
    /// Tags, sorted by key, each key once.
    pub tags: Vec<(String, String)>,
}

impl SeriesKey {
    /// A key from unsorted tags; a later value for a key wins.
    pub fn new(metric: &str, tags: impl IntoIterator<Item = (String, String)>) -> SeriesKey {
        let mut tags: Vec<(String, String)> = tags.into_iter().collect();
        tags.reverse();
        tags.sort_by(|a, b| a.0.cmp(&b.0));
        tags.dedup_by(|a, b| a.0 == b.0);
        SeriesKey {
            metric: metric.to_owned(),
            tags,
        }
    }

    /// The value of a tag, if present.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .binary_search_by(|(k, _)| k.as_str().cmp(key))
            .ok()
            .map(|i| self.tags[i].1.as_str())
    }
}

/// The accumulated value of one series.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A sum.
    Counter(f64),
    /// A distribution of samples in thousandths of their unit.
    Trend(Histogram<u64>),
    /// Non-zero and zero samples.
    Rate {
        /// Non-zero samples.
        passes: u64,
        /// Zero samples.
        fails: u64,
    },
    /// A level: the lowest, highest and last seen.
    Gauge {
        /// The lowest value.
        min: f64,
        /// The highest value.
        max: f64,
        /// The latest value.
        last: f64,
    },
}

/// Two values of one series that cannot merge (different kinds).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("cannot merge a {0:?} into a {1:?}")]
pub struct KindMismatch(pub MetricKind, pub MetricKind);

/// A histogram that grows to fit any sample, with three significant digits.
pub fn new_histogram() -> Histogram<u64> {
    // 3 significant digits is always a valid precision, so this cannot fail.
    Histogram::new(3).unwrap_or_else(|_| unreachable!("3 significant digits is valid"))
}

/// Whether a metric name is well formed: letters, digits, `_` and `.`, not
/// starting with a digit, at most 128 bytes (the rule for custom metrics).
pub fn valid_metric_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        && !name.starts_with(|c: char| c.is_ascii_digit())
}

/// Converts a trend sample (in its unit) to its histogram value.
pub fn trend_units(value: f64) -> u64 {
    if value.is_finite() && value > 0.0 {
        (value * 1000.0).round().min(u64::MAX as f64 / 4.0) as u64
    } else {
        0
    }
}

/// Converts a histogram value back to the trend's unit.
pub fn from_trend_units(units: u64) -> f64 {
    units as f64 / 1000.0
}

impl Value {
    /// An empty value of a kind.
    pub fn empty(kind: MetricKind) -> Value {
        match kind {
            MetricKind::Counter => Value::Counter(0.0),
            MetricKind::Trend => Value::Trend(new_histogram()),
            MetricKind::Rate => Value::Rate {
                passes: 0,
                fails: 0,
            },
            MetricKind::Gauge => Value::Gauge {
                min: f64::INFINITY,
                max: f64::NEG_INFINITY,
                last: 0.0,
            },
        }
    }

    /// This value's kind.
    pub fn kind(&self) -> MetricKind {
        match self {
            Value::Counter(_) => MetricKind::Counter,
            Value::Trend(_) => MetricKind::Trend,
            Value::Rate { .. } => MetricKind::Rate,
            Value::Gauge { .. } => MetricKind::Gauge,
        }
    }

    /// Adds one sample.
    pub fn add_sample(&mut self, sample: f64) {
        match self {
            Value::Counter(sum) => *sum += sample,
            Value::Trend(h) => {
                let v = trend_units(sample);
                // Auto-resizing histograms grow to fit; clamp only if that fails.
                if h.record(v).is_err() {
                    h.saturating_record(v);
                }
            }
            Value::Rate { passes, fails } => {
                if sample != 0.0 {
                    *passes += 1
                } else {
                    *fails += 1
                }
            }
            Value::Gauge { min, max, last } => {
                *min = min.min(sample);
                *max = max.max(sample);
                *last = sample;
            }
        }
    }

    /// Merges another value of the same series into this one. Counters, rates
    /// and trends merge exactly; for gauges `last` is the other's `last`.
    pub fn merge(&mut self, other: &Value) -> Result<(), KindMismatch> {
        match (self, other) {
            (Value::Counter(a), Value::Counter(b)) => *a += b,
            (Value::Trend(a), Value::Trend(b)) => {
                // Both histograms auto-resize, so adding cannot go out of range.
                let _ = a.add(b);
            }
            (
                Value::Rate { passes, fails },
                Value::Rate {
                    passes: p,
                    fails: f,
                },
            ) => {
                *passes += p;
                *fails += f;
            }
            (
                Value::Gauge { min, max, last },
                Value::Gauge {
                    min: n,
                    max: x,
                    last: l,
                },
            ) => {
                *min = min.min(*n);
                *max = max.max(*x);
                *last = *l;
            }
            (me, other) => return Err(KindMismatch(other.kind(), me.kind())),
        }
        Ok(())
    }
}

/// Series accumulated over one interval (or a whole run).
///
/// Kept in key order, so that walking a set, and so every fold and merge
/// across its series, goes the same way on every node and every build:
/// merged reports are equal to the last bit (a hash map's order depends on
/// the machine and the build). The set is bounded: the recorder caps series
/// per interval, shards cap series too. The recorder's per-request hot path
/// keeps its own hash maps.
#[derive(Debug, Clone, Default)]
pub struct SeriesSet {
    series: BTreeMap<SeriesKey, Value>,
}

impl SeriesSet {
    /// An empty set.
    pub fn new() -> SeriesSet {
        SeriesSet::default()
    }

    /// Adds one sample to a series, creating it with `kind` if needed.
    /// A sample of another kind than the series has is ignored and reported.
    pub fn add(
        &mut self,
        key: &SeriesKey,
        kind: MetricKind,
        sample: f64,
    ) -> Result<(), KindMismatch> {
        let value = match self.series.get_mut(key) {
            Some(v) => v,
            None => self
                .series
                .entry(key.clone())
                .or_insert_with(|| Value::empty(kind)),
        };
        if value.kind() != kind {
            return Err(KindMismatch(kind, value.kind()));
        }
        value.add_sample(sample);
        Ok(())
    }

    /// Merges a whole value into a series.
    pub fn merge(&mut self, key: &SeriesKey, value: &Value) -> Result<(), KindMismatch> {
        match self.series.get_mut(key) {
            Some(v) => v.merge(value),
            None => {
                self.series.insert(key.clone(), value.clone());
                Ok(())
            }
        }
    }

    /// Merges a whole value into a series, taking it: a new series keeps
    /// the value instead of a copy.
    pub fn merge_owned(&mut self, key: SeriesKey, value: Value) -> Result<(), KindMismatch> {
        match self.series.entry(key) {
            Entry::Occupied(mut e) => e.get_mut().merge(&value),
            Entry::Vacant(e) => {
                e.insert(value);
                Ok(())
            }
        }
    }

    /// Merges every series of another set. A series whose kind does not
    /// match is skipped (the first such mismatch is returned); the others
    /// are still merged.
    pub fn merge_all(&mut self, other: &SeriesSet) -> Result<(), KindMismatch> {
        let mut first = Ok(());
        for (k, v) in &other.series {
            if let Err(e) = self.merge(k, v) {
                first = first.and(Err(e));
            }
        }
        first
    }

    /// Number of series.
    pub fn len(&self) -> usize {
        self.series.len()
    }

    /// Whether there are no series.
    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// The series, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&SeriesKey, &Value)> {
        self.series.iter()
    }

    /// The value of a series, to change in place.
    pub fn get_mut(&mut self, key: &SeriesKey) -> Option<&mut Value> {
        self.series.get_mut(key)
    }

    /// Sets a series' value, replacing any it had.
    pub fn insert(&mut self, key: SeriesKey, value: Value) {
        self.series.insert(key, value);
    }

    /// The value of a series.
    pub fn get(&self, key: &SeriesKey) -> Option<&Value> {
        self.series.get(key)
    }

    /// Merges every series of `metric` whose tags satisfy `filter`, across
    /// tag sets. `None` if there is none.
    pub fn fold(&self, metric: &str, filter: impl Fn(&SeriesKey) -> bool) -> Option<Value> {
        let mut out: Option<Value> = None;
        for (k, v) in &self.series {
            if k.metric != metric || !filter(k) {
                continue;
            }
            match &mut out {
                Some(acc) => {
                    let _ = acc.merge(v);
                }
                None => out = Some(v.clone()),
            }
        }
        out
    }

    /// Takes every series out, leaving the set empty.
    pub fn take(&mut self) -> SeriesSet {
        std::mem::take(self)
    }
}

impl FromIterator<(SeriesKey, Value)> for SeriesSet {
    fn from_iter<I: IntoIterator<Item = (SeriesKey, Value)>>(iter: I) -> Self {
        let mut set = SeriesSet::new();
        for (k, v) in iter {
            let _ = set.merge(&k, &v);
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(metric: &str, tags: &[(&str, &str)]) -> SeriesKey {
        SeriesKey::new(
            metric,
            tags.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn keys_sort_and_dedup_tags() {
        let k = key("m", &[("b", "1"), ("a", "2"), ("b", "3")]);
        assert_eq!(
            k.tags,
            vec![("a".into(), "2".into()), ("b".into(), "3".into())]
        );
        assert_eq!(k.tag("b"), Some("3"));
        assert_eq!(k.tag("c"), None);
    }

    #[test]
    fn merge_is_order_independent_and_exact() {
        let k = key("lat", &[]);
        let mut parts = Vec::new();
        for p in 0..4u64 {
            let mut s = SeriesSet::new();
            for i in 0..1000u64 {
                let _ = s.add(&k, MetricKind::Trend, ((i * 7 + p * 13) % 997) as f64);
            }
            let _ = s.add(&key("n", &[]), MetricKind::Counter, 1.0);
            let _ = s.add(&key("r", &[]), MetricKind::Rate, (p % 2) as f64);
            parts.push(s);
        }
        let mut forward = SeriesSet::new();
        for s in &parts {
            let _ = forward.merge_all(s);
        }
        let mut backward = SeriesSet::new();
        for s in parts.iter().rev() {
            let _ = backward.merge_all(s);
        }
        assert_eq!(forward.get(&k), backward.get(&k));
        let Some(Value::Trend(h)) = forward.get(&k) else {
            panic!("trend expected")
        };
        assert_eq!(h.len(), 4000);
        assert_eq!(forward.get(&key("n", &[])), Some(&Value::Counter(4.0)));
        assert_eq!(
            forward.get(&key("r", &[])),
            Some(&Value::Rate {
                passes: 2,
                fails: 2
            })
        );
    }

    #[test]
    fn kind_mismatch_is_reported_not_merged() {
        let mut s = SeriesSet::new();
        let k = key("x", &[]);
        assert!(s.add(&k, MetricKind::Counter, 1.0).is_ok());
        assert!(s.add(&k, MetricKind::Trend, 1.0).is_err());
        assert_eq!(s.get(&k), Some(&Value::Counter(1.0)));
    }

    #[test]
    fn fold_merges_across_tags() {
        let mut s = SeriesSet::new();
        let _ = s.add(&key("d", &[("status", "200")]), MetricKind::Trend, 10.0);
        let _ = s.add(&key("d", &[("status", "500")]), MetricKind::Trend, 20.0);
        let _ = s.add(&key("other", &[]), MetricKind::Trend, 30.0);
        let Some(Value::Trend(h)) = s.fold("d", |_| true) else {
            panic!("trend expected")
        };
        assert_eq!(h.len(), 2);
        assert!(
            h.equivalent(h.max(), trend_units(20.0)),
            "max within histogram precision"
        );
        assert!(s.fold("d", |k| k.tag("status") == Some("404")).is_none());
    }

    #[test]
    fn trend_units_clamp_garbage() {
        assert_eq!(trend_units(-5.0), 0);
        assert_eq!(trend_units(f64::NAN), 0);
        assert_eq!(trend_units(1.5), 1500);
        assert_eq!(from_trend_units(1500), 1.5);
    }
}
