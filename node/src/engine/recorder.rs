//! The recorder: where VUs put their measurements, and where shards come from.
//!
//! VUs add samples to the series of the *current* interval. Every interval
//! (1 s by default) the runner seals the current series into a
//! [`Shard`](crate::core::shard::Shard) and starts a fresh set, so memory is
//! bounded by the series of one interval, never by the number of samples.
//!
//! Samples go to one of a few lanes, each behind its own short mutex: twice
//! as many lanes as the node has cores, from 4 to 16, since each lane keeps
//! its own histograms for the interval (a histogram of nanoseconds that
//! reaches a second is about 170 KB). A thread records into the same lane
//! every time ([`thread_lane`]): the VUs of one thread then keep one
//! lane's histograms and series warm in their core's cache, where VUs
//! spread over the lanes by their ids found them cold (a thread of 50 VUs
//! went round four lanes), and threads that took consecutive numbers (a
//! runtime's workers, as they start) do not share one while there are as
//! many lanes as threads: neither its lock nor its lines go back and forth
//! between cores.
//! A lock is never held across an await. The HTTP metrics of a request (count, failure,
//! seven timings) live together under its tag set: one lookup per request.
//! Requests, checks and iterations are looked up by borrowed parts of their
//! tag sets, so a sample of a series seen before allocates nothing; the
//! sorted [`SeriesKey`]s are built once per series, when the lane is sealed.

use crate::core::statuses::ExpectedStatuses;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fusi_sdk::abi::MetricKind;
use hashbrown::HashTable;
use hdrhistogram::Histogram;
use rustc_hash::{FxBuildHasher, FxHashMap};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::core::metrics::{SeriesKey, SeriesSet, Value, names, new_histogram};
use crate::core::shard::{MAX_NOTE_KIND, MAX_NOTE_TEXT, MAX_NOTES, Note, Shard};
use crate::core::wire::MAX_GOSSIP_BYTES;
use crate::engine::executor::Progress;
use crate::engine::http::{Answer, Exchange};

/// The most series one interval holds; past it, new tag sets are folded into
/// one `overflow` series per metric (and a warning is logged once).
pub const MAX_SERIES_PER_INTERVAL: usize = 10_000;

/// The fewest and the most independent lanes, so VUs on different threads
/// rarely share a lock (see [`lanes`]).
const LANES: std::ops::RangeInclusive<usize> = 4..=16;

/// Lanes for a node of `cores` cores: twice as many, within [`LANES`].
fn lanes(cores: usize) -> usize {
    cores.saturating_mul(2).clamp(*LANES.start(), *LANES.end())
}

/// This thread's number among the threads that recorded anything: each
/// takes the next the first time it records, so a runtime's worker
/// threads, started together, take consecutive numbers, and a recorder of
/// at least as many lanes gives each a lane of its own.
fn thread_lane() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static MINE: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    MINE.with(|n| *n)
}

/// What tells the HTTP series of a lane apart: the parts its tag set is made
/// of, kept apart so a request can be looked up without building the set.
#[derive(PartialEq, Eq)]
struct HttpKey {
    /// The VU's tags and group, sorted.
    base: Vec<(String, String)>,
    /// The request's own tags but `name`, in the order given.
    extra: Vec<(String, String)>,
    method: String,
    name: String,
    status: u16,
}

/// An [`HttpKey`] made of borrowed parts: what a request is looked up by.
#[derive(Clone, Copy)]
struct HttpProbe<'a> {
    base: &'a [(String, String)],
    extra: &'a [(String, String)],
    method: &'a str,
    name: &'a str,
    status: u16,
}

impl HttpProbe<'_> {
    /// The request's tags but `name`, which the probe's `name` replaces.
    fn extra(&self) -> impl Iterator<Item = &(String, String)> {
        self.extra.iter().filter(|(k, _)| k != "name")
    }

    fn hash(&self) -> u64 {
        let mut h = FxBuildHasher.build_hasher();
        self.base.hash(&mut h);
        for tag in self.extra() {
            tag.hash(&mut h);
        }
        self.method.hash(&mut h);
        self.name.hash(&mut h);
        self.status.hash(&mut h);
        h.finish()
    }

    fn matches(&self, key: &HttpKey) -> bool {
        key.status == self.status
            && key.method == self.method
            && key.name == self.name
            && key.base == self.base
            && key.extra.iter().eq(self.extra())
    }

    fn to_key(self) -> HttpKey {
        HttpKey {
            base: self.base.to_vec(),
            extra: self.extra().cloned().collect(),
            method: self.method.to_owned(),
            name: self.name.to_owned(),
            status: self.status,
        }
    }
}

impl HttpKey {
    /// The series' tag set: base tags, request tags, then method, name and
    /// status, a later value for a key winning.
    fn tags(&self) -> Vec<(String, String)> {
        let tags = self.base.iter().chain(&self.extra).cloned().chain([
            ("method".to_owned(), self.method.clone()),
            ("name".to_owned(), self.name.clone()),
            ("status".to_owned(), self.status.to_string()),
        ]);
        SeriesKey::new("", tags).tags
    }
}

/// The HTTP metrics of one tag set, kept together so a request costs one
/// lookup instead of one per metric.
#[derive(Default)]
struct HttpSeries {
    requests: u64,
    failed: u64,
    /// duration, blocked, connecting, tls, sending, waiting, receiving
    timings: Option<[Histogram<u64>; 7]>,
    /// Samples of 0 µs of each timing not yet in its histogram: most
    /// requests on a kept connection wait for none, open none and shake
    /// no hands, and a count costs less than a histogram's record. They go
    /// in when the series is drained ([`HttpSeries::into_timings`]).
    zeros: [u64; 7],
}

impl HttpSeries {
    /// The timings' histograms, with every sample of 0 in them.
    fn into_timings(self) -> Option<[Histogram<u64>; 7]> {
        let mut timings = self.timings?;
        for (hist, zeros) in timings.iter_mut().zip(self.zeros) {
            if zeros > 0 {
                // 0 is within every histogram's range.
                let _ = hist.record_n(0, zeros);
            }
        }
        Some(timings)
    }
}

/// A series' first timings (see [`Recorder::new_http_series`]).
#[cold]
#[inline(never)]
fn new_timings(slot: &mut Option<[Histogram<u64>; 7]>) -> &mut [Histogram<u64>; 7] {
    slot.insert(std::array::from_fn(|_| new_histogram()))
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

/// Check results of one tag set: passes and failures.
type CheckSeries = (u64, u64);

/// Counts one check in its series: passed or failed.
fn count_check(series: &mut CheckSeries, passed: bool) {
    if passed {
        series.0 += 1;
    } else {
        series.1 += 1;
    }
}

/// One lane's samples of the current interval.
#[derive(Default)]
struct Lane {
    series: SeriesSet,
    /// HTTP metrics, with their keys, by the hash of the key's parts; an
    /// overflowing lane uses the key with no parts (see [`Lane::overflow`]).
    http: HashTable<(HttpKey, HttpSeries)>,
    /// HTTP series folded into one because the lane was full.
    http_overflow: Option<HttpSeries>,
    /// Completed iterations and their durations, by the VU's tags.
    iterations: FxHashMap<Vec<(String, String)>, IterationSeries>,
    /// Check results by the VU's tags, then by check name.
    checks: FxHashMap<Vec<(String, String)>, FxHashMap<String, CheckSeries>>,
    /// How many series `checks` holds.
    check_series: usize,
    /// `errors` by (kind, name).
    errors: FxHashMap<(&'static str, String), u64>,
    /// Whether this lane is counted in [`Recorder::used`] this interval.
    marked: bool,
    sent: u64,
    received: u64,
    /// New connections that waited for an opening slot.
    paced: u64,
}

impl Lane {
    fn series_count(&self) -> usize {
        self.series.len()
            + (self.http.len() + usize::from(self.http_overflow.is_some())) * 9
            + self.iterations.len() * 2
            + self.check_series
            + self.errors.len()
    }

    /// Moves everything into `out` as plain series.
    fn drain_into(&mut self, out: &mut SeriesSet) {
        let _ = out.merge_all(&self.series.take());
        let overflow = self
            .http_overflow
            .take()
            .map(|h| (vec![("overflow".to_owned(), "true".to_owned())], h));
        let http = self.http.drain().map(|(key, h)| (key.tags(), h));
        for (tags, h) in http.chain(overflow) {
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
            if let Some(timings) = h.into_timings() {
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
        for (tags, checks) in self.checks.drain() {
            for (name, (passes, fails)) in checks {
                let tags = tags.iter().cloned().chain([("check".to_owned(), name)]);
                let key = SeriesKey::new(names::CHECKS, tags);
                let _ = out.merge(&key, &Value::Rate { passes, fails });
            }
        }
        self.check_series = 0;
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
            (names::CONNECTIONS_PACED, &mut self.paced),
        ] {
            if *bytes > 0 {
                let _ = out.merge(&SeriesKey::new(metric, []), &Value::Counter(*bytes as f64));
                *bytes = 0;
            }
        }
    }
}

/// What a request contributes to its metric tags.
#[derive(Debug, Clone, Copy)]
pub struct RequestTags<'a> {
    /// The `method` tag: the method, upper case.
    pub method: &'a str,
    /// The `name` tag: the request's own, or its URL without the query.
    pub name: &'a str,
    /// The request's own tags (a `name` among them is left out).
    pub tags: &'a [(String, String)],
}

/// Collects samples for the current interval.
pub struct Recorder {
    lanes: Vec<Mutex<Lane>>,
    /// The lanes recorded into this interval, one bit each: the series cap
    /// is shared among them.
    used: AtomicU32,
    warned_overflow: AtomicBool,
    /// Failure texts for the next shard (see [`Recorder::note`]).
    notes: Mutex<Vec<Note>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            lanes: (0..lanes(std::thread::available_parallelism().map_or(1, |n| n.get())))
                .map(|_| Mutex::new(Lane::default()))
                .collect(),
            used: AtomicU32::new(0),
            warned_overflow: AtomicBool::new(false),
            notes: Mutex::new(Vec::new()),
        }
    }
}

impl Recorder {
    /// An empty recorder.
    pub fn new() -> Recorder {
        Recorder::default()
    }

    /// Keeps what a failure said for the next shard: `kind` is
    /// `http:KIND` or `iteration:REASON`. Only the first few failures of a
    /// kind are noted (`engine::first_errors`); past [`MAX_NOTES`] in one
    /// interval, the rest are dropped, and the text is cut to
    /// [`MAX_NOTE_TEXT`] bytes.
    pub fn note(&self, kind: String, mut text: String) {
        if text.len() > MAX_NOTE_TEXT {
            let mut end = MAX_NOTE_TEXT;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
        }
        let mut notes = self.notes.lock().unwrap_or_else(|p| p.into_inner());
        if notes.len() < MAX_NOTES && kind.len() <= MAX_NOTE_KIND {
            notes.push(Note { kind, text });
        }
    }

    /// The notes since the last call.
    fn take_notes(&self) -> Vec<Note> {
        std::mem::take(&mut *self.notes.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The calling thread's lane ([`thread_lane`]), locked.
    fn lane(&self) -> std::sync::MutexGuard<'_, Lane> {
        let i = thread_lane() % self.lanes.len();
        // A panic while holding the lock cannot leave a Lane invalid, so a
        // poisoned lock is still usable.
        let mut lane = self.lanes[i].lock().unwrap_or_else(|p| p.into_inner());
        if !lane.marked {
            lane.marked = true;
            self.used.fetch_or(1 << i, Ordering::Relaxed);
        }
        lane
    }

    /// Whether `lane` holds its part of [`MAX_SERIES_PER_INTERVAL`]: the
    /// cap shared among the lanes recorded into this interval, so that
    /// their series together stay within it (a node whose one thread
    /// records has the whole cap in one lane).
    fn overflowing(&self, lane: &Lane) -> bool {
        let used = self.used.load(Ordering::Relaxed).count_ones().max(1) as usize;
        if lane.series_count() < MAX_SERIES_PER_INTERVAL / used {
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

    /// Adds one sample.
    pub fn add(&self, key: SeriesKey, kind: MetricKind, value: f64) {
        let mut l = self.lane();
        self.add_to(&mut l, key, kind, value);
    }

    fn add_to(&self, l: &mut Lane, key: SeriesKey, kind: MetricKind, value: f64) {
        let key = if l.series.get(&key).is_none() && self.overflowing(l) {
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
    pub fn iteration(&self, tags: &[(String, String)], ms: f64) {
        let mut l = self.lane();
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

    /// Records one check result; `tags` are the VU's base tags (sorted, with
    /// unique keys), to which the host adds `check=<name>`.
    pub fn check(&self, tags: &[(String, String)], name: &str, passed: bool) {
        let mut l = self.lane();
        // A check this interval has seen: one lookup of each map.
        if let Some(entry) = l.checks.get_mut(tags).and_then(|c| c.get_mut(name)) {
            count_check(entry, passed);
            return;
        }
        if self.overflowing(&l) {
            let key = SeriesKey::new(names::CHECKS, [("overflow".to_owned(), "true".to_owned())]);
            let value = f64::from(u8::from(passed));
            self.add_to(&mut l, key, MetricKind::Rate, value);
            return;
        }
        l.check_series += 1;
        let checks = match l.checks.get_mut(tags) {
            Some(checks) => checks,
            None => l.checks.entry(tags.to_vec()).or_default(),
        };
        count_check(checks.entry(name.to_owned()).or_default(), passed);
    }

    /// Records one HTTP request with all its metrics: `base_tags` are the
    /// VU's (sorted, unique keys), `req_tags` the request's own, `method`
    /// and `name` its `method` and `name` tags; `expected` says which
    /// statuses count as success.
    pub fn http(
        &self,
        base_tags: &[(String, String)],
        req: RequestTags<'_>,
        resp: &Answer,
        ex: &Exchange,
        expected: &ExpectedStatuses,
    ) {
        let failed = resp.error.is_some() || !expected.contains(resp.status);
        let probe = HttpProbe {
            base: base_tags,
            extra: req.tags,
            method: req.method,
            name: req.name,
            status: resp.status,
        };
        let error_kind = match (&resp.error, resp.status) {
            (Some(e), _) => Some(e.kind.as_str()),
            (None, 400..=499) if failed => Some("status_4xx"),
            (None, 500..=599) if failed => Some("status_5xx"),
            _ => None,
        };
        let mut guard = self.lane();
        let l = &mut *guard;
        let hash = probe.hash();
        let h = match l.http.find_mut(hash, |(k, _)| probe.matches(k)) {
            Some((_, h)) => h,
            None => self.new_http_series(l, hash, &probe),
        };
        h.requests += 1;
        h.failed += u64::from(failed);
        if resp.error.is_none() {
            let t = &resp.timings;
            let hists = match &mut h.timings {
                Some(hists) => hists,
                None => new_timings(&mut h.timings),
            };
            for ((hist, zeros), us) in hists.iter_mut().zip(&mut h.zeros).zip([
                t.duration_us,
                t.dns_us,
                t.connect_us,
                t.tls_us,
                t.sending_us,
                t.waiting_us,
                t.receiving_us,
            ]) {
                if us == 0 {
                    *zeros += 1;
                // Microseconds are the trend units of a millisecond metric.
                } else if hist.record(us).is_err() {
                    hist.saturating_record(us);
                }
            }
        }
        if let Some(kind) = error_kind {
            *l.errors.entry((kind, req.name.to_owned())).or_insert(0) += 1;
        }
        l.sent += ex.bytes_sent;
        l.received += ex.bytes_received;
        l.paced += u64::from(ex.paced);
    }

    /// The series of a request whose tag set this interval has not seen
    /// yet (or the overflow series). Out of line, as is [`new_timings`]:
    /// `http` runs on the VU's fiber stack, and a stack keeps every page
    /// it touched, so the rare path's locals stay out of the common one's
    /// frame.
    #[cold]
    #[inline(never)]
    fn new_http_series<'l>(
        &self,
        l: &'l mut Lane,
        hash: u64,
        probe: &HttpProbe<'_>,
    ) -> &'l mut HttpSeries {
        if self.overflowing(l) {
            return l.http_overflow.get_or_insert_with(HttpSeries::default);
        }
        let hasher = |(k, _): &(HttpKey, HttpSeries)| {
            HttpProbe {
                base: &k.base,
                extra: &k.extra,
                method: &k.method,
                name: &k.name,
                status: k.status,
            }
            .hash()
        };
        let entry = l
            .http
            .insert_unique(hash, (probe.to_key(), HttpSeries::default()), hasher);
        &mut entry.into_mut().1
    }

    /// Adds one sample of a WebSocket trend (`ws_connecting`,
    /// `ws_session_duration`, in ms); `tags` are the socket's, sorted.
    pub fn ws_sample(&self, metric: &str, tags: &[(String, String)], ms: f64) {
        let key = SeriesKey {
            metric: metric.to_owned(),
            tags: tags.to_vec(),
        };
        self.add(key, MetricKind::Trend, ms);
    }

    /// Counts one of a WebSocket counter (`ws_sessions`, `ws_msgs_sent`,
    /// `ws_msgs_received`); `tags` are the socket's, sorted.
    pub fn ws_count(&self, metric: &str, tags: &[(String, String)]) {
        let key = SeriesKey {
            metric: metric.to_owned(),
            tags: tags.to_vec(),
        };
        self.add(key, MetricKind::Counter, 1.0);
    }

    /// Counts a failed WebSocket connect or socket in `errors`, by `kind`
    /// and the socket's `name`, as a failed request is.
    pub fn ws_error(&self, kind: &'static str, name: &str) {
        let mut l = self.lane();
        *l.errors.entry((kind, name.to_owned())).or_insert(0) += 1;
    }

    /// Adds bytes written and read to `data_sent` and `data_received`.
    pub fn bytes(&self, sent: u64, received: u64) {
        let mut l = self.lane();
        l.sent += sent;
        l.received += received;
    }

    /// Takes the current interval's series, leaving a fresh set.
    pub fn seal(&self) -> SeriesSet {
        self.take().into_series()
    }

    /// Ends the interval as [`Recorder::seal`] does, but leaves the
    /// merging to the caller: each lane is held only to swap its samples
    /// out, so the VUs that record meanwhile do not wait for a merge.
    pub fn take(&self) -> Taken {
        // Cleared first: a lane recorded into while the others are taken
        // stays counted (its next sample marks it again anyway).
        self.used.store(0, Ordering::Relaxed);
        Taken(
            self.lanes
                .iter()
                .map(|lane| std::mem::take(&mut *lane.lock().unwrap_or_else(|p| p.into_inner())))
                .collect(),
        )
    }
}

/// An interval's samples taken out of a [`Recorder`] and not yet merged
/// ([`Recorder::take`]).
pub struct Taken(Vec<Lane>);

impl Taken {
    /// The samples as plain series.
    pub fn into_series(self) -> SeriesSet {
        let mut out = SeriesSet::new();
        for mut lane in self.0 {
            lane.drain_into(&mut out);
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
///
/// Only the swap of the lanes' samples ([`Recorder::take`]) runs here, on
/// the runtime that runs the VUs. The merge of the lanes and the shard's
/// encoding run on a blocking thread: they take a millisecond or more each
/// interval, and on the VUs' thread they held back everything due
/// meanwhile, so an arrival-rate run's arrivals went out late and all
/// together, VUs ran short, and iterations were dropped every second.
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
    let mut cpu = crate::engine::cpu::CpuUse::new();
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
        let taken = recorder.take();
        let active = progress.active_vus.load(Ordering::Relaxed) as f64;
        let initialized = progress.initialized_vus.load(Ordering::Relaxed) as f64;
        // A last interval cut short holds the VUs' teardown more than
        // their load: too little time to say how busy the load kept the CPUs.
        let cpu_used = cpu
            .since_last()
            .filter(|_| to.saturating_sub(from) >= interval / 2);
        let notes = recorder.take_notes();
        let origin = origin.clone();
        let (start_ms, end_ms) = (ms(from), ms(to));
        let sealing = tokio::task::spawn_blocking(move || {
            let mut series = taken.into_series();
            let _ = series.add(&SeriesKey::new(names::VUS, []), MetricKind::Gauge, active);
            let _ = series.add(
                &SeriesKey::new(names::VUS_MAX, []),
                MetricKind::Gauge,
                initialized,
            );
            if let Some(used) = cpu_used {
                let _ = series.add(
                    &SeriesKey::new(names::NODE_CPU, []),
                    MetricKind::Gauge,
                    used,
                );
            }
            Shard {
                notes,
                run_id: origin.run_id,
                node: origin.node,
                name: origin.name,
                region: origin.region,
                seq: 0,
                start_ms,
                end_ms,
                last,
                series,
            }
            .split(MAX_SHARD_PART_BYTES)
        });
        let parts = match sealing.await {
            Ok(parts) => parts,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // The runtime is shutting down: no one is left to send to.
            Err(_) => return,
        };
        for mut part in parts {
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

    #[test]
    fn lanes_are_twice_the_cores_from_4_to_16() {
        let cases = [
            (0, 4),
            (1, 4),
            (2, 4),
            (3, 6),
            (4, 8),
            (8, 16),
            (16, 16),
            (128, 16),
        ];
        for (cores, want) in cases {
            assert_eq!(lanes(cores), want, "{cores} cores");
        }
        let recorder = Recorder::new();
        assert!(LANES.contains(&recorder.lanes.len()));
    }
    use crate::core::metrics::Value;
    use crate::engine::http::Answer;
    use fusi_sdk::abi::{ErrorKind, HttpError, Timings};

    #[test]
    fn http_records_counts_latency_and_errors() {
        let r = Recorder::new();
        let ex = Exchange {
            bytes_sent: 100,
            bytes_received: 200,
            paced: false,
        };
        let req = RequestTags {
            method: "GET",
            name: "http://h/x",
            tags: &[],
        };
        let ok = Answer {
            status: 200,
            timings: Timings {
                duration_us: 50_000,
                ..Timings::default()
            },
            ..Answer::default()
        };
        let err = Answer {
            error: Some(HttpError {
                kind: ErrorKind::Refused,
                message: String::new(),
            }),
            ..Answer::default()
        };
        let five = Answer {
            status: 503,
            ..Answer::default()
        };
        r.http(&[], req, &ok, &ex, &ExpectedStatuses::default());
        r.http(&[], req, &err, &ex, &ExpectedStatuses::default());
        r.http(&[], req, &five, &ex, &ExpectedStatuses::default());
        r.http(&[], req, &ok, &ex, &ExpectedStatuses::default());
        let set = r.seal();
        assert_eq!(
            set.fold(names::HTTP_REQS, |_| true),
            Some(Value::Counter(4.0))
        );
        let ok_key = SeriesKey::new(
            names::HTTP_REQS,
            [
                ("method".to_owned(), "GET".to_owned()),
                ("name".to_owned(), "http://h/x".to_owned()),
                ("status".to_owned(), "200".to_owned()),
            ],
        );
        assert_eq!(
            set.get(&ok_key),
            Some(&Value::Counter(2.0)),
            "two requests of one lane, one series"
        );
        assert_eq!(
            set.fold(names::HTTP_REQ_FAILED, |_| true),
            Some(Value::Rate {
                passes: 2,
                fails: 2
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
        assert_eq!(h.len(), 3, "a request with no response has no duration");
        assert_eq!(
            set.fold(names::DATA_SENT, |_| true),
            Some(Value::Counter(400.0))
        );
        assert!(r.seal().is_empty(), "sealing starts a fresh interval");
    }

    #[test]
    fn timings_of_zero_are_counted_in_their_trends_once_each() {
        let r = Recorder::new();
        let req = RequestTags {
            method: "GET",
            name: "http://h/x",
            tags: &[],
        };
        let answer = |connect_us| Answer {
            status: 200,
            timings: Timings {
                duration_us: 900,
                connect_us,
                ..Timings::default()
            },
            ..Answer::default()
        };
        let expected = ExpectedStatuses::default();
        for connect_us in [1_500, 0, 0] {
            r.http(
                &[],
                req,
                &answer(connect_us),
                &Exchange::default(),
                &expected,
            );
        }
        let set = r.seal();
        let trend = |metric| match set.fold(metric, |_| true) {
            Some(Value::Trend(h)) => h,
            other => panic!("{metric}: {other:?}"),
        };
        let connecting = trend(names::HTTP_REQ_CONNECTING);
        assert_eq!(connecting.len(), 3);
        assert_eq!(connecting.count_at(0), 2);
        assert!(connecting.equivalent(connecting.max(), 1_500));
        let blocked = trend(names::HTTP_REQ_BLOCKED);
        assert_eq!((blocked.len(), blocked.max()), (3, 0));
        assert_eq!(trend(names::HTTP_REQ_DURATION).count_at(0), 0);

        r.http(&[], req, &answer(700), &Exchange::default(), &expected);
        let Some(Value::Trend(next)) = r.seal().fold(names::HTTP_REQ_CONNECTING, |_| true) else {
            panic!("trend expected")
        };
        assert_eq!(
            (next.len(), next.count_at(0)),
            (1, 0),
            "the zeros went with the seal"
        );
    }

    #[test]
    fn request_tags_join_the_vu_tags_and_a_later_value_wins() {
        let r = Recorder::new();
        let ex = Exchange::default();
        let ok = Answer {
            status: 204,
            ..Answer::default()
        };
        let base = [
            ("group".to_owned(), "::g".to_owned()),
            ("zone".to_owned(), "a".to_owned()),
        ];
        let tags = [
            ("zone".to_owned(), "b".to_owned()),
            ("name".to_owned(), "ignored here".to_owned()),
        ];
        let req = RequestTags {
            method: "POST",
            name: "items",
            tags: &tags,
        };
        r.http(&base, req, &ok, &ex, &ExpectedStatuses::default());
        r.http(&base, req, &ok, &ex, &ExpectedStatuses::default());
        let set = r.seal();
        let key = SeriesKey::new(
            names::HTTP_REQS,
            [
                ("group".to_owned(), "::g".to_owned()),
                ("method".to_owned(), "POST".to_owned()),
                ("name".to_owned(), "items".to_owned()),
                ("status".to_owned(), "204".to_owned()),
                ("zone".to_owned(), "b".to_owned()),
            ],
        );
        assert_eq!(set.get(&key), Some(&Value::Counter(2.0)));
    }

    #[test]
    fn checks_count_passes_and_failures_per_name_and_tags() {
        let r = Recorder::new();
        let base = [("zone".to_owned(), "a".to_owned())];
        r.check(&base, "ok", true);
        r.check(&base, "ok", false);
        r.check(&base, "ok", true);
        r.check(&[], "ok", false);
        r.check(&base, "other", true);
        let set = r.seal();
        let key = |tags: &[(&str, &str)]| {
            SeriesKey::new(
                names::CHECKS,
                tags.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
            )
        };
        assert_eq!(
            set.get(&key(&[("zone", "a"), ("check", "ok")])),
            Some(&Value::Rate {
                passes: 2,
                fails: 1
            })
        );
        assert_eq!(
            set.get(&key(&[("check", "ok")])),
            Some(&Value::Rate {
                passes: 0,
                fails: 1
            })
        );
        assert_eq!(set.len(), 3);
    }

    /// A thread records into one lane, which then holds the whole series
    /// cap; with another lane in use, each holds half of it; a seal starts
    /// counting the lanes again.
    #[test]
    fn a_thread_records_into_one_lane_and_the_lanes_in_use_share_the_cap() {
        let r = Recorder::new();
        let key = |i: usize| SeriesKey::new("m", [("id".to_owned(), i.to_string())]);
        for i in 0..100 {
            r.add(key(i), MetricKind::Counter, 1.0);
        }
        let used = |r: &Recorder| r.used.load(Ordering::Relaxed);
        assert_eq!(used(&r).count_ones(), 1, "one thread, one lane");
        let lane = used(&r).trailing_zeros() as usize;
        let held = r.lanes[lane].lock().map_or(0, |l| l.series_count());
        assert_eq!(held, 100, "every series in the thread's lane");
        assert_eq!(r.seal().len(), 100);
        assert_eq!(used(&r), 0, "a seal starts counting again");

        r.used
            .store(1 << ((lane + 1) % r.lanes.len()), Ordering::Relaxed);
        for i in 0..MAX_SERIES_PER_INTERVAL {
            r.add(key(i), MetricKind::Counter, 1.0);
        }
        assert_eq!(used(&r).count_ones(), 2);
        assert_eq!(
            r.seal().len(),
            MAX_SERIES_PER_INTERVAL / 2 + 1,
            "half the cap, plus one overflow series"
        );
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
        assert_eq!(
            set.len(),
            MAX_SERIES_PER_INTERVAL + 1,
            "the cap, plus one overflow series"
        );
        let overflow = SeriesKey::new("m", [("overflow".to_owned(), "true".to_owned())]);
        assert_eq!(set.get(&overflow), Some(&Value::Counter(50.0)));
    }
}
