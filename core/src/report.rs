//! The report: every shard of a run merged into one exact summary, for the
//! whole run, each region, each node and each interval.
//!
//! [`Report`] takes shards in any order, any number of times, from any number
//! of nodes, and holds the merge of the distinct ones (a shard is identified
//! by node and sequence number). Percentiles come from merged HdrHistograms,
//! never from averaged percentiles. Memory grows with the number of series,
//! nodes and intervals, not of samples: totals per series (tagged with the
//! region that measured them) and per node, and per interval and region a
//! handful of counters and one latency histogram.
//!
//! Merging is exact for histograms, rates and whole-number counters in any
//! order. A final report is built by [`Report::from_shards`] in one canonical
//! order, so that it is a function of the set of shards alone: two nodes that
//! hold the same shards print byte-identical JSON, even for fractional
//! counters and gauges, whose sums and `last` depend on order.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use serde::{Deserialize, Serialize};

use fusi_sdk::abi::MetricKind;

use super::metrics::{
    KindMismatch, SeriesKey, SeriesSet, Value, from_trend_units, names, new_histogram,
};
use super::shard::counts;
use super::shard::{Shard, SparseShard, SparseValue};

/// The tag every merged series carries: the region of the node that measured it.
pub const REGION_TAG: &str = "region";

use super::spec::SCENARIO_TAG;

/// Merged shards of one run.
#[derive(Debug, Clone)]
pub struct Report {
    run_id: String,
    /// Every series, tagged with [`REGION_TAG`].
    totals: SeriesSet,
    /// Per node, by id.
    nodes: BTreeMap<String, NodeTotals>,
    /// Per interval, by start (ms since T0).
    timeline: BTreeMap<u64, Interval>,
    seen: BTreeSet<(String, u64)>,
    end_ms: u64,
    /// The region intervals whose latency is live, by (start, region): at
    /// most [`OPEN_LATENCIES`], the newest.
    open: BTreeSet<(u64, String)>,
    /// A key reused to tag series with their region without allocating.
    tagged: SeriesKey,
    /// What failures said, from the shards' notes: by kind, the
    /// [`NOTES_PER_KIND`] smallest texts in byte order, of the
    /// [`NOTE_KINDS`] smallest kinds, so that the same shards keep the same
    /// texts in any order and a peer's flood of notes costs little.
    notes: BTreeMap<String, BTreeSet<String>>,
}

/// The texts a report keeps of one kind of failure.
pub const NOTES_PER_KIND: usize = 3;
/// The kinds of failure a report keeps texts of.
pub const NOTE_KINDS: usize = 32;

/// What one node measured.
#[derive(Debug, Clone, Default)]
struct NodeTotals {
    name: String,
    region: String,
    series: SeriesSet,
    received: u64,
    /// The shard count announced by its last shard.
    announced: Option<u64>,
    /// The latest end of its intervals held, ms since its start.
    end_ms: u64,
    /// How busy its CPUs were, from its shards' `node_cpu`.
    cpu: Option<NodeCpu>,
}

/// The share of its CPUs at or above which a node counts as busy in an
/// interval: near it, what the node measures includes its own wait to run.
pub const CPU_BUSY: f64 = 0.9;

/// How busy a node's CPUs were over the intervals its shards held here
/// (`node_cpu`).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct NodeCpu {
    /// Intervals with a measure.
    pub intervals: u64,
    /// Of them, those where it used [`CPU_BUSY`] of its CPUs or more.
    pub busy: u64,
    /// The most it used in one interval, from 0 to 1.
    pub max: f64,
}

impl NodeCpu {
    fn add(&mut self, used: f64) {
        self.intervals += 1;
        self.busy += u64::from(used >= CPU_BUSY);
        self.max = self.max.max(used);
    }
}

/// One interval of the timeline, per region.
#[derive(Debug, Clone, Default)]
struct Interval {
    end_ms: u64,
    regions: BTreeMap<String, RegionInterval>,
}

/// One region's interval: a few counters, and the merged request latency.
#[derive(Debug, Clone, Default)]
struct RegionInterval {
    series: SeriesSet,
    latency: Latency,
    /// Per node: its VUs (active, initialized) in this interval. Gauges of
    /// different nodes add up; one node's are its own.
    vus: BTreeMap<String, (f64, f64)>,
}

/// The most region intervals whose latency stays a live histogram (tens of
/// KiB each); older ones are packed.
const OPEN_LATENCIES: usize = 256;

/// A region interval's merged request latency. The newest ones are live
/// histograms, so merging a shard into them is one addition; older ones
/// are kept as HdrHistogram V2 bytes (a few KiB, where the live histogram
/// takes tens), so an hour-long run stays small.
#[derive(Debug, Clone)]
enum Latency {
    /// A live histogram.
    Open(Histogram<u64>),
    /// V2 bytes; empty for no samples.
    Packed(Vec<u8>),
}

impl Default for Latency {
    fn default() -> Latency {
        Latency::Packed(Vec::new())
    }
}

impl Latency {
    /// The histogram, decoded if packed.
    fn histogram(&self) -> Cow<'_, Histogram<u64>> {
        match self {
            Latency::Open(h) => Cow::Borrowed(h),
            Latency::Packed(bytes) => Cow::Owned(unpack(bytes)),
        }
    }

    /// Makes the histogram live.
    fn open(&mut self) {
        if let Latency::Packed(bytes) = self {
            *self = Latency::Open(unpack(bytes));
        }
    }

    /// Packs a live histogram into V2 bytes.
    fn pack(&mut self) {
        if let Latency::Open(h) = self {
            let mut bytes = Vec::new();
            // Serializing into a Vec cannot fail for a histogram that exists.
            let _ = V2Serializer::new().serialize(h, &mut bytes);
            *self = Latency::Packed(bytes);
        }
    }

    /// Adds a trend's samples (anything else is ignored), keeping the
    /// histogram as it is, live or packed.
    fn add(&mut self, part: Part<'_>) {
        let packed = matches!(self, Latency::Packed(_));
        self.open();
        if let Latency::Open(mine) = self {
            part.add_to(mine);
        }
        if packed {
            self.pack();
        }
    }
}

/// One series of a shard, as a report merges it.
#[derive(Debug, Clone, Copy)]
enum Part<'a> {
    /// A value, as [`Shard::decode`] makes it.
    Value(&'a Value),
    /// A trend's non-zero counts, as [`SparseShard::decode`] keeps them.
    Counts(&'a [(u64, u64)]),
}

impl Part<'_> {
    fn kind(self) -> MetricKind {
        match self {
            Part::Value(v) => v.kind(),
            Part::Counts(_) => MetricKind::Trend,
        }
    }

    fn to_value(self) -> Value {
        match self {
            // Into a histogram of the usual layout, as the counts go: a
            // peer's trend may have another (a coarser lowest value), which
            // would change every percentile merged into it.
            Part::Value(Value::Trend(h)) => {
                let mut out = new_histogram();
                // Auto-resizing histograms grow to fit: adding cannot fail.
                let _ = out.add(h);
                Value::Trend(out)
            }
            Part::Value(v) => v.clone(),
            Part::Counts(c) => {
                let mut h = new_histogram();
                counts::add(&mut h, c);
                Value::Trend(h)
            }
        }
    }

    /// Merges into a value of the same series, as [`Value::merge`].
    fn merge_into(self, acc: &mut Value) -> Result<(), KindMismatch> {
        match (self, acc) {
            (Part::Value(v), acc) => acc.merge(v),
            (Part::Counts(c), Value::Trend(h)) => {
                counts::add(h, c);
                Ok(())
            }
            (Part::Counts(_), acc) => Err(KindMismatch(MetricKind::Trend, acc.kind())),
        }
    }

    /// Adds a trend's samples to a histogram; anything else is ignored.
    fn add_to(self, h: &mut Histogram<u64>) {
        match self {
            Part::Value(Value::Trend(other)) => {
                // Auto-resizing histograms grow to fit: adding cannot fail.
                let _ = h.add(other);
            }
            Part::Counts(c) => counts::add(h, c),
            Part::Value(_) => {}
        }
    }
}

/// Merges a part into a series of a set, as [`SeriesSet::merge`].
fn merge_part(set: &mut SeriesSet, key: &SeriesKey, part: Part<'_>) -> Result<(), KindMismatch> {
    match set.get_mut(key) {
        Some(v) => part.merge_into(v),
        None => {
            set.insert(key.clone(), part.to_value());
            Ok(())
        }
    }
}

/// Every part of `metric` merged, in key order, as [`SeriesSet::fold`].
fn fold(parts: &[(&SeriesKey, Part<'_>)], metric: &str) -> Option<Value> {
    let mut out: Option<Value> = None;
    for (_, part) in parts.iter().filter(|(k, _)| k.metric == metric) {
        match &mut out {
            Some(acc) => {
                let _ = part.merge_into(acc);
            }
            None => out = Some(part.to_value()),
        }
    }
    out
}

fn unpack(bytes: &[u8]) -> Histogram<u64> {
    let mut h = Deserializer::new()
        .deserialize(&mut &bytes[..])
        .unwrap_or_else(|_| new_histogram());
    h.auto(true);
    h
}

/// Counters kept per interval for the timeline (besides latency).
const TIMELINE_METRICS: [&str; 4] = [
    names::HTTP_REQS,
    names::HTTP_REQ_FAILED,
    names::ITERATIONS,
    names::DROPPED_ITERATIONS,
];

/// A part of the run to summarize.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// Every node.
    All,
    /// The nodes of one region.
    Region(&'a str),
    /// One node, by id.
    Node(&'a str),
    /// One scenario of a run with named scenarios: the samples tagged
    /// with its name, over every node. No timeline and no VU counts (the
    /// intervals are the run's).
    Scenario(&'a str),
}

impl Report {
    /// An empty report for a run.
    pub fn new(run_id: &str) -> Report {
        Report {
            run_id: run_id.to_owned(),
            totals: SeriesSet::new(),
            nodes: BTreeMap::new(),
            timeline: BTreeMap::new(),
            seen: BTreeSet::new(),
            end_ms: 0,
            open: BTreeSet::new(),
            tagged: SeriesKey::new("", []),
            notes: BTreeMap::new(),
        }
    }

    /// A report of `shards`, merged in one canonical order (node, then
    /// sequence number) whatever order they come in: equal sets of shards
    /// give equal reports, to the last bit. The store hands shards out in
    /// the same order, one at a time (`RunStore::each_shard`).
    pub fn from_shards(run_id: &str, mut shards: Vec<Shard>) -> Report {
        shards.sort_by(|a, b| (&a.node, a.seq).cmp(&(&b.node, b.seq)));
        let mut report = Report::new(run_id);
        for shard in &shards {
            report.add(shard);
        }
        report
    }

    /// Merges a shard. Returns false, and changes nothing, if the shard is of
    /// another run or was merged before.
    pub fn add(&mut self, shard: &Shard) -> bool {
        let parts: Vec<(&SeriesKey, Part<'_>)> = shard
            .series
            .iter()
            .map(|(k, v)| (k, Part::Value(v)))
            .collect();
        self.add_parts(shard, &parts)
    }

    /// Merges a shard read by [`SparseShard::decode`], exactly as [`add`]
    /// merges the same shard read by `Shard::decode`, without building a
    /// histogram per trend.
    ///
    /// [`add`]: Report::add
    pub fn add_sparse(&mut self, shard: &SparseShard) -> bool {
        let parts: Vec<(&SeriesKey, Part<'_>)> = shard
            .series
            .iter()
            .map(|(k, v)| {
                let part = match v {
                    SparseValue::Value(v) => Part::Value(v),
                    SparseValue::Trend(counts) => Part::Counts(counts),
                };
                (k, part)
            })
            .collect();
        self.add_parts(&shard.head, &parts)
    }

    /// Merges the series `parts`, in key order, of the shard `head`.
    fn add_parts(&mut self, head: &Shard, parts: &[(&SeriesKey, Part<'_>)]) -> bool {
        if head.run_id != self.run_id || !self.seen.insert((head.node.clone(), head.seq)) {
            return false;
        }
        for note in &head.notes {
            let texts = self.notes.entry(note.kind.clone()).or_default();
            texts.insert(note.text.clone());
            if texts.len() > NOTES_PER_KIND {
                texts.pop_last();
            }
            if self.notes.len() > NOTE_KINDS {
                self.notes.pop_last();
            }
        }
        let node = self.nodes.entry(head.node.clone()).or_default();
        node.name.clone_from(&head.name);
        node.region.clone_from(&head.region);
        node.received += 1;
        node.end_ms = node.end_ms.max(head.end_ms);
        if let Some(Value::Gauge { max, .. }) = fold(parts, names::NODE_CPU)
            && (0.0..=1.0).contains(&max)
        {
            node.cpu.get_or_insert_default().add(max);
        }
        if head.last {
            node.announced = Some(head.seq.saturating_add(1));
        }
        self.end_ms = self.end_ms.max(head.end_ms);
        let interval = self.timeline.entry(head.start_ms).or_default();
        interval.end_ms = interval.end_ms.max(head.end_ms);
        let region = interval.regions.entry(head.region.clone()).or_default();
        let gauge = |metric: &str| match fold(parts, metric) {
            Some(Value::Gauge { max, .. }) if max.is_finite() => Some(max),
            _ => None,
        };
        // A shard split in parts carries the gauges in one of them.
        if let (Some(active), Some(initialized)) = (gauge(names::VUS), gauge(names::VUS_MAX)) {
            region.vus.insert(head.node.clone(), (active, initialized));
        }
        for metric in TIMELINE_METRICS {
            // Per interval, tags are folded away: one value per metric.
            if let Some(v) = fold(parts, metric) {
                let _ = region.series.merge(&SeriesKey::new(metric, []), &v);
            }
        }
        // The request latency over every tag set, as `fold` would merge it
        // (the first series decides the kind), added one by one: adding
        // histograms is exact in any grouping.
        let mut durations = parts
            .iter()
            .filter(|(k, _)| k.metric == names::HTTP_REQ_DURATION)
            .map(|(_, p)| *p);
        if let Some(first) = durations.next().filter(|p| p.kind() == MetricKind::Trend)
            && let Some(latency) = self.latency(head.start_ms, &head.region)
        {
            latency.add(first);
            for part in durations {
                latency.add(part);
            }
        }
        for (key, part) in parts {
            let _ = if retag(&mut self.tagged, key, REGION_TAG, &head.region) {
                merge_part(&mut self.totals, &self.tagged, *part)
            } else {
                let tags = key
                    .tags
                    .iter()
                    .cloned()
                    .chain([(REGION_TAG.to_owned(), head.region.clone())]);
                merge_part(&mut self.totals, &SeriesKey::new(&key.metric, tags), *part)
            };
        }
        if let Some(node) = self.nodes.get_mut(&head.node) {
            for (key, part) in parts {
                let _ = merge_part(&mut node.series, key, *part);
            }
        }
        true
    }

    /// The latency of a region's interval, to add to: live if it is among
    /// the newest [`OPEN_LATENCIES`], packed otherwise (older ones are
    /// packed to make room).
    fn latency(&mut self, start: u64, region: &str) -> Option<&mut Latency> {
        let key = (start, region.to_owned());
        if !self.open.contains(&key)
            && (self.open.len() < OPEN_LATENCIES
                || self.open.first().is_some_and(|oldest| *oldest < key))
        {
            if self.open.len() >= OPEN_LATENCIES
                && let Some((start, region)) = self.open.pop_first()
                && let Some(old) = self
                    .timeline
                    .get_mut(&start)
                    .and_then(|i| i.regions.get_mut(&region))
            {
                old.latency.pack();
            }
            self.open.insert(key.clone());
        }
        let open = self.open.contains(&key);
        let latency = &mut self
            .timeline
            .get_mut(&start)?
            .regions
            .get_mut(region)?
            .latency;
        if open {
            latency.open();
        }
        Some(latency)
    }

    /// The shards merged: `(node, seq)`.
    pub fn held(&self) -> &BTreeSet<(String, u64)> {
        &self.seen
    }

    /// The merged totals, per series, each tagged with [`REGION_TAG`].
    pub fn totals(&self) -> &SeriesSet {
        &self.totals
    }

    /// From the start instant to the end of the latest interval, ms.
    pub fn end_ms(&self) -> u64 {
        self.end_ms
    }

    /// How complete the report is, over every node heard from.
    pub fn completeness(&self) -> Completeness {
        self.completeness_of(|_, _| true)
    }

    fn completeness_of(&self, keep: impl Fn(&str, &NodeTotals) -> bool) -> Completeness {
        let nodes: Vec<&NodeTotals> = self
            .nodes
            .iter()
            .filter(|(id, n)| keep(id, n))
            .map(|(_, n)| n)
            .collect();
        let announced: Option<Vec<u64>> = nodes.iter().map(|n| n.announced).collect();
        Completeness {
            nodes: nodes.len(),
            shards_received: nodes.iter().map(|n| n.received).sum(),
            shards_announced: announced.map(|a| a.iter().sum()),
        }
    }

    /// Nodes heard from: id, name, region.
    pub fn nodes(&self) -> impl Iterator<Item = (&str, &str, &str)> {
        self.nodes
            .iter()
            .map(|(id, n)| (id.as_str(), n.name.as_str(), n.region.as_str()))
    }

    /// Shards received from a node and the count it announced, if any.
    pub fn shards_of(&self, node: &str) -> (u64, Option<u64>) {
        self.nodes
            .get(node)
            .map(|n| (n.received, n.announced))
            .unwrap_or((0, None))
    }

    /// How busy a node's CPUs were, where its shards say.
    pub fn cpu_of(&self, node: &str) -> Option<NodeCpu> {
        self.nodes.get(node).and_then(|n| n.cpu)
    }

    /// How much of the run a node's shards held here cover: the latest end
    /// of their intervals, ms since its start (0 without any).
    pub fn active_ms_of(&self, node: &str) -> u64 {
        self.nodes.get(node).map_or(0, |n| n.end_ms)
    }

    /// Iterations a node ran, completed or failed, as its shards held
    /// here show: of every scenario, or of the one named (by its tag).
    pub fn iterations_of(&self, node: &str, scenario: Option<&str>) -> u64 {
        let Some(n) = self.nodes.get(node) else {
            return 0;
        };
        let in_scope = |k: &SeriesKey| scenario.is_none_or(|s| k.tag(SCENARIO_TAG) == Some(s));
        let mut ran = 0.0;
        for (k, v) in n.series.iter() {
            if let (names::ITERATIONS | names::ITERATIONS_FAILED, Value::Counter(c)) =
                (k.metric.as_str(), v)
                && in_scope(k)
            {
                ran += *c;
            }
        }
        ran as u64
    }

    /// Regions heard from.
    pub fn regions(&self) -> BTreeSet<&str> {
        self.nodes.values().map(|n| n.region.as_str()).collect()
    }

    /// The summary of everything merged so far.
    pub fn summary(&self, executor: &str) -> Summary {
        self.summary_of(executor, Scope::All)
    }

    /// The summary of one part of the run. A node's has no timeline.
    pub fn summary_of(&self, executor: &str, scope: Scope<'_>) -> Summary {
        let empty = SeriesSet::new();
        let (t, completeness) = match scope {
            Scope::All | Scope::Scenario(_) => (&self.totals, self.completeness()),
            Scope::Region(r) => (&self.totals, self.completeness_of(|_, n| n.region == r)),
            Scope::Node(id) => (
                self.nodes.get(id).map(|n| &n.series).unwrap_or(&empty),
                self.completeness_of(|n, _| n == id),
            ),
        };
        let in_scope = |k: &SeriesKey| match scope {
            Scope::Region(r) => k.tag(REGION_TAG) == Some(r),
            Scope::Scenario(name) => k.tag(SCENARIO_TAG) == Some(name),
            Scope::All | Scope::Node(_) => true,
        };
        let secs = (self.end_ms as f64 / 1000.0).max(1e-3);
        let counter = |metric: &str| match t.fold(metric, in_scope) {
            Some(Value::Counter(c)) => c,
            _ => 0.0,
        };
        let requests = counter(names::HTTP_REQS) as u64;
        let (failed, _) = rate(t.fold(names::HTTP_REQ_FAILED, in_scope));
        let mut by_status = BTreeMap::new();
        let mut errors = BTreeMap::new();
        let mut iterations_failed = BTreeMap::new();
        let mut checks: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        let mut groups: BTreeMap<String, Value> = BTreeMap::new();
        // Checks made inside a group, by group and check.
        let mut group_checks: BTreeMap<String, BTreeMap<String, (u64, u64)>> = BTreeMap::new();
        let mut custom: BTreeMap<String, Value> = BTreeMap::new();
        let mut data: BTreeMap<String, DataUse> = BTreeMap::new();
        for (k, v) in t.iter().filter(|(k, _)| in_scope(k)) {
            match (k.metric.as_str(), v) {
                (names::DATA_ROWS_USED, Value::Counter(c)) => {
                    let set = k.tag("data").unwrap_or("").to_owned();
                    data.entry(set).or_default().used += *c as u64;
                }
                (names::DATA_EXHAUSTED, Value::Counter(c)) => {
                    let set = k.tag("data").unwrap_or("").to_owned();
                    data.entry(set).or_default().ran_out += *c as u64;
                }
                (names::HTTP_REQS, Value::Counter(c)) => {
                    let status = k.tag("status").unwrap_or("0").to_owned();
                    *by_status.entry(status).or_insert(0) += *c as u64;
                }
                (names::ERRORS, Value::Counter(c)) => {
                    let kind = k.tag("kind").unwrap_or("other").to_owned();
                    *errors.entry(kind).or_insert(0) += *c as u64;
                }
                (names::ITERATIONS_FAILED, Value::Counter(c)) => {
                    let reason = k.tag("reason").unwrap_or("other").to_owned();
                    *iterations_failed.entry(reason).or_insert(0) += *c as u64;
                }
                (names::CHECKS, Value::Rate { passes, fails }) => {
                    let name = k.tag("check").unwrap_or("");
                    let e = checks.entry(name.to_owned()).or_insert((0, 0));
                    e.0 += passes;
                    e.1 += fails;
                    if let Some(group) = k.tag("group").filter(|g| !g.is_empty()) {
                        let e = group_checks
                            .entry(group.to_owned())
                            .or_default()
                            .entry(name.to_owned())
                            .or_insert((0, 0));
                        e.0 += passes;
                        e.1 += fails;
                    }
                }
                (names::GROUP_DURATION, _) => {
                    let name = k.tag("group").unwrap_or("").to_owned();
                    merge_into(&mut groups, name, v);
                }
                (m, _) if !is_builtin(m) => merge_into(&mut custom, m.to_owned(), v),
                _ => {}
            }
        }
        let phases = [
            ("blocked", names::HTTP_REQ_BLOCKED),
            ("connecting", names::HTTP_REQ_CONNECTING),
            ("tls_handshaking", names::HTTP_REQ_TLS_HANDSHAKING),
            ("sending", names::HTTP_REQ_SENDING),
            ("waiting", names::HTTP_REQ_WAITING),
            ("receiving", names::HTTP_REQ_RECEIVING),
        ]
        .into_iter()
        .map(|(label, m)| (label.to_owned(), percentiles(t.fold(m, in_scope).as_ref())))
        .collect();
        let iterations = counter(names::ITERATIONS) as u64;
        let timeline = match scope {
            Scope::All => self.timeline(|_| true),
            Scope::Region(r) => self.timeline(|region| region == r),
            Scope::Node(_) | Scope::Scenario(_) => Vec::new(),
        };
        let vus_max = self
            .timeline
            .values()
            .map(|i| {
                i.regions
                    .iter()
                    .flat_map(|(region, ri)| ri.vus.iter().map(move |(node, v)| (region, node, v)))
                    .filter(|(region, node, _)| match scope {
                        Scope::All => true,
                        Scope::Region(r) => region.as_str() == r,
                        Scope::Node(id) => node.as_str() == id,
                        Scope::Scenario(_) => false,
                    })
                    .map(|(_, _, v)| v.1)
                    .sum::<f64>()
            })
            .fold(0.0, f64::max) as u64;
        let duration = t.fold(names::HTTP_REQ_DURATION, in_scope);
        let connecting = t.fold(names::WS_CONNECTING, in_scope);
        let session_duration = t.fold(names::WS_SESSION_DURATION, in_scope);
        let ws = (connecting.is_some() || session_duration.is_some()).then(|| WsSummary {
            sessions: counter(names::WS_SESSIONS) as u64,
            msgs_sent: counter(names::WS_MSGS_SENT) as u64,
            msgs_received: counter(names::WS_MSGS_RECEIVED) as u64,
            connecting: percentiles(connecting.as_ref()),
            session_duration: percentiles(session_duration.as_ref()),
        });
        Summary {
            ws,
            first_failures: match scope {
                Scope::All => self
                    .notes
                    .iter()
                    .map(|(kind, texts)| (kind.clone(), texts.iter().cloned().collect()))
                    .collect(),
                Scope::Region(_) | Scope::Node(_) | Scope::Scenario(_) => BTreeMap::new(),
            },
            run_id: self.run_id.clone(),
            executor: executor.to_owned(),
            duration_s: self.end_ms as f64 / 1000.0,
            completeness,
            http: HttpSummary {
                requests,
                rps: requests as f64 / secs,
                failed,
                failed_rate: if requests == 0 {
                    0.0
                } else {
                    failed as f64 / requests as f64
                },
                data_sent: counter(names::DATA_SENT) as u64,
                data_received: counter(names::DATA_RECEIVED) as u64,
                duration: percentiles(duration.as_ref()),
                duration_buckets: buckets(duration.as_ref()),
                phases,
                by_status,
                connections_paced: counter(names::CONNECTIONS_PACED) as u64,
            },
            errors,
            iterations: IterationSummary {
                completed: iterations,
                rate: iterations as f64 / secs,
                failed: iterations_failed,
                dropped: counter(names::DROPPED_ITERATIONS) as u64,
                duration: percentiles(t.fold(names::ITERATION_DURATION, in_scope).as_ref()),
            },
            checks: check_list(checks),
            // A group whose every iteration was cut short inside it has
            // checks but no duration.
            groups: groups
                .keys()
                .chain(group_checks.keys())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .map(|name| GroupSummary {
                    name: name.clone(),
                    duration: percentiles(groups.get(name)),
                    checks: check_list(group_checks.get(name).cloned().unwrap_or_default()),
                })
                .collect(),
            custom: custom
                .into_iter()
                .map(|(name, v)| (name, MetricSummary::of(&v)))
                .collect(),
            vus_max,
            timeline,
            data,
        }
    }

    /// The timeline over the regions `keep` selects.
    fn timeline(&self, keep: impl Fn(&str) -> bool) -> Vec<TimelinePoint> {
        self.timeline
            .iter()
            .filter_map(|(start, iv)| point(*start, iv, &keep))
            .collect()
    }

    /// Requests and failed requests so far, in the run or one region.
    pub fn requests(&self, region: Option<&str>) -> (u64, u64) {
        let in_scope = |k: &SeriesKey| region.is_none_or(|r| k.tag(REGION_TAG) == Some(r));
        let requests = match self.totals.fold(names::HTTP_REQS, in_scope) {
            Some(Value::Counter(c)) => c as u64,
            _ => 0,
        };
        (
            requests,
            rate(self.totals.fold(names::HTTP_REQ_FAILED, in_scope)).0,
        )
    }

    /// The latest settled interval of the run (`None`) or of one region:
    /// the one before the newest, whose shards may still be on their way.
    pub fn latest(&self, region: Option<&str>) -> Option<TimelinePoint> {
        let keep = |r: &str| region.is_none_or(|want| want == r);
        let mut recent = self
            .timeline
            .iter()
            .rev()
            .filter_map(|(start, iv)| point(*start, iv, &keep));
        let newest = recent.next();
        recent.next().or(newest)
    }
}

impl Report {
    /// The run's progress as merged here: the whole run first (scope
    /// `all`), then each region, each with its latest settled interval
    /// and its counts so far.
    pub fn live(&self) -> Vec<crate::wire::LiveScope> {
        let scope = |name: &str, region: Option<&str>| {
            let latest = self.latest(region);
            let (requests, failed) = self.requests(region);
            crate::wire::LiveScope {
                scope: name.to_owned(),
                t_s: latest.as_ref().map_or(0.0, |p| p.t_s),
                vus: latest.as_ref().map_or(0, |p| p.vus),
                rps: latest.as_ref().map_or(0.0, |p| p.rps),
                p95_ms: latest.as_ref().map_or(0.0, |p| p.p95_ms),
                requests,
                failed,
            }
        };
        std::iter::once(scope("all", None))
            .chain(self.regions().into_iter().map(|r| scope(r, Some(r))))
            .collect()
    }
}

/// One interval over the regions `keep` selects; `None` if it has none.
fn point(start: u64, iv: &Interval, keep: &impl Fn(&str) -> bool) -> Option<TimelinePoint> {
    let mut series = SeriesSet::new();
    let mut latency = new_histogram();
    let mut vus = 0.0;
    let mut any = false;
    for (_, ri) in iv.regions.iter().filter(|(r, _)| keep(r)) {
        any = true;
        let _ = series.merge_all(&ri.series);
        let _ = latency.add(ri.latency.histogram().as_ref());
        vus += ri.vus.values().map(|v| v.0).sum::<f64>();
    }
    if !any {
        return None;
    }
    let get = |m: &str| series.get(&SeriesKey::new(m, []));
    let count = |m: &str| match get(m) {
        Some(Value::Counter(c)) => *c as u64,
        _ => 0,
    };
    let secs = (iv.end_ms.saturating_sub(start) as f64 / 1000.0).max(1e-3);
    let requests = count(names::HTTP_REQS);
    // One pass for the three; each is what `value_at_quantile` gives (0 when empty).
    let mut q = latency
        .value_at_quantiles([0.50, 0.95, 0.99])
        .map(from_trend_units);
    let mut next = || q.next().unwrap_or_default();
    let (p50_ms, p95_ms, p99_ms) = (next(), next(), next());
    Some(TimelinePoint {
        t_s: start as f64 / 1000.0,
        requests,
        rps: requests as f64 / secs,
        failed: rate(get(names::HTTP_REQ_FAILED).cloned()).0,
        p50_ms,
        p95_ms,
        p99_ms,
        iterations: count(names::ITERATIONS),
        dropped: count(names::DROPPED_ITERATIONS),
        vus: vus as u64,
    })
}

/// Writes `key` with `tag` set to `value` into `out`, as [`SeriesKey::new`]
/// would make it, reusing `out`'s buffers. Returns false, and leaves `out`
/// unusable, if the tags of `key` are not sorted with each key once (as
/// `SeriesKey::new` makes them, but a key built by hand may not be).
fn retag(out: &mut SeriesKey, key: &SeriesKey, tag: &str, value: &str) -> bool {
    if !key.tags.windows(2).all(|w| w[0].0 < w[1].0) {
        return false;
    }
    let at = key.tags.partition_point(|(k, _)| k.as_str() < tag);
    let replaced = usize::from(key.tags.get(at).is_some_and(|(k, _)| k == tag));
    let tags = key.tags[..at]
        .iter()
        .map(pair)
        .chain([(tag, value)])
        .chain(key.tags[at + replaced..].iter().map(pair));
    out.metric.clone_from(&key.metric);
    out.tags
        .resize_with(key.tags.len() + 1 - replaced, Default::default);
    for ((k, v), (tag, value)) in out.tags.iter_mut().zip(tags) {
        k.clear();
        k.push_str(tag);
        v.clear();
        v.push_str(value);
    }
    true
}

fn pair((k, v): &(String, String)) -> (&str, &str) {
    (k, v)
}

fn merge_into(map: &mut BTreeMap<String, Value>, name: String, v: &Value) {
    match map.get_mut(&name) {
        Some(acc) => {
            let _ = acc.merge(v);
        }
        None => {
            map.insert(name, v.clone());
        }
    }
}

/// Whether a metric name is one of the built-in metrics.
pub fn is_builtin(metric: &str) -> bool {
    names::ALL.contains(&metric)
}

fn rate(v: Option<Value>) -> (u64, u64) {
    match v {
        Some(Value::Rate { passes, fails }) => (passes, fails),
        _ => (0, 0),
    }
}

/// How much of the run a report holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Completeness {
    /// Nodes heard from.
    pub nodes: usize,
    /// Distinct shards merged.
    pub shards_received: u64,
    /// Shards the nodes said they sent, once every node has sent its last one.
    pub shards_announced: Option<u64>,
}

impl Completeness {
    /// Whether every announced shard is here.
    pub fn is_complete(&self) -> bool {
        self.shards_announced == Some(self.shards_received)
    }
}

/// The end-of-test summary, as printed and as written by `--out`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    /// The run.
    pub run_id: String,
    /// The executor's k6 name.
    pub executor: String,
    /// From the start instant to the last measurement, seconds.
    pub duration_s: f64,
    /// How much of the run this summary holds.
    pub completeness: Completeness,
    /// HTTP requests.
    pub http: HttpSummary,
    /// Failed requests by kind: transport errors and `status_4xx`/`status_5xx`.
    pub errors: BTreeMap<String, u64>,
    /// Iterations.
    pub iterations: IterationSummary,
    /// Checks, by name.
    pub checks: Vec<CheckSummary>,
    /// Groups, by path.
    pub groups: Vec<GroupSummary>,
    /// Custom metrics, by name.
    pub custom: BTreeMap<String, MetricSummary>,
    /// The most VUs initialized at once.
    pub vus_max: u64,
    /// Per interval.
    pub timeline: Vec<TimelinePoint>,
    /// What failures said, by kind (`http:refused`, `iteration:panic`):
    /// up to [`NOTES_PER_KIND`] texts each, the smallest in byte order of
    /// those the nodes sent (each node sends its first 3 of a kind). Only
    /// the whole run's summary has them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub first_failures: BTreeMap<String, Vec<String>>,
    /// Test data drawn (`--data`), by set.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, DataUse>,
    /// WebSockets, when the run opened any (a connect that failed is only
    /// in `errors`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ws: Option<WsSummary>,
}

/// How much of a data set the draws used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataUse {
    /// Rows drawn (`data_rows_used`).
    pub used: u64,
    /// Draws that found a node's rows gone (`data_exhausted`): the data
    /// ran out there.
    pub ran_out: u64,
}

/// WebSocket totals: k6's `ws_*` metrics. Failed connects are in
/// [`Summary::errors`], by kind.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WsSummary {
    /// Sockets opened (`ws_sessions`).
    pub sessions: u64,
    /// Messages sent (`ws_msgs_sent`).
    pub msgs_sent: u64,
    /// Messages received (`ws_msgs_received`).
    pub msgs_received: u64,
    /// `ws_connecting`: the connect, TLS and upgrade of each socket.
    pub connecting: Percentiles,
    /// `ws_session_duration`: from each connect's start to its close.
    pub session_duration: Percentiles,
}

/// HTTP totals.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HttpSummary {
    /// Requests made.
    pub requests: u64,
    /// Requests per second over the run.
    pub rps: f64,
    /// Requests without a 2xx/3xx response.
    pub failed: u64,
    /// `failed / requests`.
    pub failed_rate: f64,
    /// Bytes sent.
    pub data_sent: u64,
    /// Bytes received.
    pub data_received: u64,
    /// `http_req_duration`.
    pub duration: Percentiles,
    /// `http_req_duration`'s whole distribution, coarsened to two
    /// significant digits: `[upper bound in ms, requests]` per bucket, in
    /// order, for comparing runs (`fusi-node compare`) on more than a few
    /// percentiles. Absent with no request answered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub duration_buckets: Vec<(f64, u64)>,
    /// The phases of a request.
    pub phases: BTreeMap<String, Percentiles>,
    /// Requests by status code (`0`: no response).
    pub by_status: BTreeMap<String, u64>,
    /// New connections that waited for one of a node's opening slots
    /// (`--max-connecting`); how long is in the `blocked` phase.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub connections_paced: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Iteration totals.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IterationSummary {
    /// Iterations that returned normally.
    pub completed: u64,
    /// Completed iterations per second.
    pub rate: f64,
    /// Iterations that failed, by reason (`trap`, `timeout`, ...).
    pub failed: BTreeMap<String, u64>,
    /// Arrivals with no free VU.
    pub dropped: u64,
    /// `iteration_duration` of completed iterations.
    pub duration: Percentiles,
}

/// One check's results.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckSummary {
    /// The check's name.
    pub name: String,
    /// Times it held.
    pub passes: u64,
    /// Times it failed.
    pub fails: u64,
}

/// One group's timing and checks.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupSummary {
    /// `::outer::inner`.
    pub name: String,
    /// Time spent in it.
    pub duration: Percentiles,
    /// The checks made directly in it (not in a group inside it), by name;
    /// each also counts in the summary's `checks`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckSummary>,
}

/// Checks by name, as a summary lists them.
fn check_list(checks: BTreeMap<String, (u64, u64)>) -> Vec<CheckSummary> {
    checks
        .into_iter()
        .map(|(name, (passes, fails))| CheckSummary {
            name,
            passes,
            fails,
        })
        .collect()
}

/// A custom metric.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MetricSummary {
    /// A sum.
    Counter {
        /// The sum.
        total: f64,
    },
    /// A distribution.
    Trend(Percentiles),
    /// A fraction.
    Rate {
        /// Non-zero samples.
        passes: u64,
        /// Zero samples.
        fails: u64,
    },
    /// A level.
    Gauge {
        /// The lowest value.
        min: f64,
        /// The highest value.
        max: f64,
        /// The last value.
        last: f64,
    },
}

impl MetricSummary {
    fn of(v: &Value) -> MetricSummary {
        match v {
            Value::Counter(total) => MetricSummary::Counter { total: *total },
            Value::Trend(_) => MetricSummary::Trend(percentiles(Some(v))),
            Value::Rate { passes, fails } => MetricSummary::Rate {
                passes: *passes,
                fails: *fails,
            },
            Value::Gauge { min, max, last } => MetricSummary::Gauge {
                min: *min,
                max: *max,
                last: *last,
            },
        }
    }
}

/// A distribution's key points, in the metric's unit (ms for durations).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// The smallest.
    pub min: f64,
    /// The mean.
    pub mean: f64,
    /// The median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// The largest.
    pub max: f64,
}

/// Percentiles of a trend value; zeros for anything else.
pub fn percentiles(v: Option<&Value>) -> Percentiles {
    match v {
        Some(Value::Trend(h)) if !h.is_empty() => of_histogram(h),
        _ => Percentiles::default(),
    }
}

/// A trend's distribution in buckets of two significant digits: each
/// recorded value is counted under the smallest two-digit number of trend
/// units (µs) at or above it, so a bucket's bound is at most 10 % above the
/// values in it, and a distribution over seconds holds a few hundred
/// buckets at most. Empty for anything but a trend with samples.
pub fn buckets(v: Option<&Value>) -> Vec<(f64, u64)> {
    let Some(Value::Trend(h)) = v else {
        return Vec::new();
    };
    let mut out: Vec<(u64, u64)> = Vec::new();
    for step in h.iter_recorded() {
        let value = step.value_iterated_to();
        let mut scale = 1u64;
        while value / scale >= 100 {
            scale *= 10;
        }
        let bound = value.div_ceil(scale) * scale;
        let count = step.count_at_value();
        match out.last_mut() {
            Some((last, n)) if *last == bound => *n += count,
            _ => out.push((bound, count)),
        }
    }
    out.into_iter()
        .map(|(bound, n)| (from_trend_units(bound), n))
        .collect()
}

fn of_histogram(h: &Histogram<u64>) -> Percentiles {
    // One pass for the five; each is what `value_at_quantile` gives.
    let mut q = h
        .value_at_quantiles([0.50, 0.90, 0.95, 0.99, 0.999])
        .map(from_trend_units);
    let mut next = || q.next().unwrap_or_default();
    Percentiles {
        count: h.len(),
        min: from_trend_units(h.min()),
        mean: h.mean() / 1000.0,
        p50: next(),
        p90: next(),
        p95: next(),
        p99: next(),
        p999: next(),
        max: from_trend_units(h.max()),
    }
}

/// One interval of the timeline.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TimelinePoint {
    /// Interval start, seconds since the start instant.
    pub t_s: f64,
    /// Requests made.
    pub requests: u64,
    /// Requests per second.
    pub rps: f64,
    /// Failed requests.
    pub failed: u64,
    /// Median `http_req_duration`, ms.
    pub p50_ms: f64,
    /// 95th percentile, ms.
    pub p95_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// Iterations completed.
    pub iterations: u64,
    /// Iterations dropped.
    pub dropped: u64,
    /// VUs running (the most seen).
    pub vus: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::trend_units;
    use crate::rng::Rng;
    use fusi_sdk::abi::MetricKind;

    fn shard(node: &str, seq: u64, last: bool, latencies: &[f64]) -> Shard {
        let mut series = SeriesSet::new();
        let ok = SeriesKey::new(names::HTTP_REQS, [("status".into(), "200".into())]);
        let dur = SeriesKey::new(names::HTTP_REQ_DURATION, [("status".into(), "200".into())]);
        let failed = SeriesKey::new(names::HTTP_REQ_FAILED, []);
        for l in latencies {
            let _ = series.add(&ok, MetricKind::Counter, 1.0);
            let _ = series.add(&dur, MetricKind::Trend, *l);
            let _ = series.add(&failed, MetricKind::Rate, 0.0);
        }
        let check = SeriesKey::new(names::CHECKS, [("check".into(), "ok".into())]);
        let _ = series.add(&check, MetricKind::Rate, 1.0);
        Shard {
            notes: Vec::new(),
            run_id: "r".into(),
            node: node.into(),
            name: format!("{node}-name"),
            region: "fra".into(),
            seq,
            start_ms: seq * 1000,
            end_ms: (seq + 1) * 1000,
            last,
            series,
        }
    }

    #[test]
    fn failure_texts_are_kept_bounded_and_in_the_same_order_whatever_the_shards_order() {
        use crate::shard::Note;
        let noted = |node: &str, seq: u64, texts: &[(&str, &str)]| {
            let mut s = shard(node, seq, false, &[1.0]);
            s.notes = texts
                .iter()
                .map(|(kind, text)| Note {
                    kind: (*kind).into(),
                    text: (*text).into(),
                })
                .collect();
            s
        };
        let shards = [
            noted("a", 0, &[("http:refused", "d"), ("http:refused", "b")]),
            noted("b", 0, &[("http:refused", "c"), ("iteration:panic", "p")]),
            noted("a", 1, &[("http:refused", "a"), ("http:refused", "b")]),
        ];
        let mut forward = Report::new("r");
        let mut backward = Report::new("r");
        for s in &shards {
            forward.add(s);
        }
        for s in shards.iter().rev() {
            backward.add(s);
        }
        let f = forward.summary("constant-vus").first_failures;
        assert_eq!(f, backward.summary("constant-vus").first_failures);
        assert_eq!(
            f["http:refused"],
            ["a", "b", "c"],
            "the 3 smallest, once each"
        );
        assert_eq!(f["iteration:panic"], ["p"]);
        // Only the whole run's summary has them.
        assert!(
            forward
                .summary_of("constant-vus", Scope::Node("a"))
                .first_failures
                .is_empty()
        );
        // A flood of kinds is cut to the smallest NOTE_KINDS.
        let mut flood = Report::new("r");
        let kinds: Vec<String> = (0..NOTE_KINDS + 5)
            .map(|i| format!("http:k{i:03}"))
            .collect();
        let texts: Vec<(&str, &str)> = kinds.iter().map(|k| (k.as_str(), "t")).collect();
        flood.add(&noted("a", 0, &texts));
        let kept = flood.summary("constant-vus").first_failures;
        assert_eq!(kept.len(), NOTE_KINDS);
        assert!(kept.contains_key("http:k000") && !kept.contains_key(&kinds[NOTE_KINDS]));
    }

    #[test]
    fn each_group_lists_its_own_checks_and_every_check_counts_in_the_whole() {
        let mut series = SeriesSet::new();
        let tags = |group: &str, check: &str| {
            let mut tags = vec![("check".to_owned(), check.to_owned())];
            if !group.is_empty() {
                tags.push(("group".to_owned(), group.to_owned()));
            }
            SeriesKey::new(names::CHECKS, tags)
        };
        let outer = SeriesKey::new(names::GROUP_DURATION, [("group".into(), "::outer".into())]);
        let _ = series.add(&outer, MetricKind::Trend, 12.0);
        let quiet = SeriesKey::new(names::GROUP_DURATION, [("group".into(), "::quiet".into())]);
        let _ = series.add(&quiet, MetricKind::Trend, 3.0);
        for (group, check, value) in [
            ("::outer", "status 200", 1.0),
            ("::outer", "status 200", 0.0),
            ("::outer::inner", "status 200", 1.0),
            ("::cut", "body", 1.0),
            ("", "status 200", 1.0),
        ] {
            let _ = series.add(&tags(group, check), MetricKind::Rate, value);
        }
        let report = Report::from_shards(
            "r",
            vec![Shard {
                notes: Vec::new(),
                run_id: "r".into(),
                node: "n".into(),
                name: String::new(),
                region: "fra".into(),
                seq: 0,
                start_ms: 0,
                end_ms: 1000,
                last: true,
                series,
            }],
        );
        let s = report.summary("x");
        let counts = |checks: &[CheckSummary]| -> Vec<(String, u64, u64)> {
            checks
                .iter()
                .map(|c| (c.name.clone(), c.passes, c.fails))
                .collect()
        };
        let owned = |list: &[(&str, u64, u64)]| -> Vec<(String, u64, u64)> {
            list.iter()
                .map(|(n, p, f)| ((*n).to_owned(), *p, *f))
                .collect()
        };
        let whole = counts(&s.checks);
        assert_eq!(whole, owned(&[("body", 1, 0), ("status 200", 3, 1)]));
        let names: Vec<(&str, u64)> = s
            .groups
            .iter()
            .map(|g| (g.name.as_str(), g.duration.count))
            .collect();
        assert_eq!(
            names,
            [
                ("::cut", 0),
                ("::outer", 1),
                ("::outer::inner", 0),
                ("::quiet", 1)
            ]
        );
        let checks: Vec<Vec<(String, u64, u64)>> =
            s.groups.iter().map(|g| counts(&g.checks)).collect();
        assert_eq!(
            checks,
            [
                owned(&[("body", 1, 0)]),
                owned(&[("status 200", 1, 1)]),
                owned(&[("status 200", 1, 0)]),
                Vec::new(),
            ]
        );
        // A group without checks says nothing of them in the JSON.
        let json = serde_json::to_value(&s.groups).unwrap_or_default();
        assert!(json[1].get("checks").is_some(), "{json}");
        assert!(json[3].get("checks").is_none(), "{json}");
    }

    #[test]
    fn merged_percentiles_equal_those_of_one_histogram_over_random_splits() {
        for case in 0..40u64 {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (case + 1));
            let samples: Vec<f64> = (0..(200 + rng.below(3000)))
                .map(|_| {
                    // From 1 µs to about 30 s, spread over the decades.
                    let decade = rng.below(8) as i32 - 3;
                    (1 + rng.below(999)) as f64 * 10f64.powi(decade)
                })
                .collect();
            let key = SeriesKey::new(names::HTTP_REQ_DURATION, []);
            let mut whole = SeriesSet::new();
            for v in &samples {
                let _ = whole.add(&key, MetricKind::Trend, *v);
            }
            // Scatter the samples over random nodes, regions and intervals.
            let nodes = 1 + rng.below(6);
            let intervals = 1 + rng.below(5);
            let mut parts: BTreeMap<(u64, u64), SeriesSet> = BTreeMap::new();
            for v in &samples {
                let at = (rng.below(nodes), rng.below(intervals));
                let _ = parts
                    .entry(at)
                    .or_default()
                    .add(&key, MetricKind::Trend, *v);
            }
            let mut shards: Vec<Shard> = parts
                .into_iter()
                .map(|((node, interval), series)| Shard {
                    notes: Vec::new(),
                    run_id: "r".into(),
                    node: format!("n{node}"),
                    name: String::new(),
                    region: ["fra", "nrt", "ewr"][(node % 3) as usize].into(),
                    seq: interval,
                    start_ms: interval * 1000,
                    end_ms: (interval + 1) * 1000,
                    last: false,
                    series,
                })
                .collect();
            // Merge in a random order, through the wire encoding.
            for i in (1..shards.len()).rev() {
                shards.swap(i, rng.below(i as u64 + 1) as usize);
            }
            let mut report = Report::new("r");
            for s in &shards {
                let decoded = Shard::decode(&s.encode()).expect("decodes");
                assert!(report.add(&decoded));
            }
            let Some(Value::Trend(one)) = whole.fold(names::HTTP_REQ_DURATION, |_| true) else {
                panic!("no trend");
            };
            let Some(Value::Trend(merged)) =
                report.totals().fold(names::HTTP_REQ_DURATION, |_| true)
            else {
                panic!("no merged trend");
            };
            assert_eq!(merged.len(), one.len(), "case {case}");
            assert_eq!((merged.min(), merged.max()), (one.min(), one.max()));
            let recorded = |h: &Histogram<u64>| -> Vec<(u64, u64)> {
                h.iter_recorded()
                    .map(|v| (v.value_iterated_to(), v.count_at_value()))
                    .collect()
            };
            assert_eq!(
                recorded(&merged),
                recorded(&one),
                "case {case}: distributions"
            );
            for q in 0..=1000 {
                let q = f64::from(q) / 1000.0;
                assert_eq!(
                    merged.value_at_quantile(q),
                    one.value_at_quantile(q),
                    "case {case}, quantile {q}"
                );
            }
            assert_eq!(
                report.summary("x").http.duration,
                percentiles(Some(&Value::Trend(one))),
                "case {case}: the summary's percentiles"
            );
        }
    }

    #[test]
    fn regions_and_nodes_are_summarized_apart() {
        let mut r = Report::new("r");
        for (node, region, seq, lat) in [
            ("a", "fra", 0, 2.0),
            ("a", "fra", 1, 2.0),
            ("b", "nrt", 0, 60.0),
            ("c", "nrt", 0, 70.0),
        ] {
            let mut s = shard(node, seq, seq == 1 || node != "a", &[lat; 4]);
            s.region = region.into();
            r.add(&s);
        }
        let fra = r.summary_of("x", Scope::Region("fra"));
        let nrt = r.summary_of("x", Scope::Region("nrt"));
        let b = r.summary_of("x", Scope::Node("b"));
        assert_eq!(
            (fra.http.requests, nrt.http.requests, b.http.requests),
            (8, 8, 4)
        );
        assert!((fra.http.duration.max - 2.0).abs() < 0.01);
        assert!((nrt.http.duration.min - 60.0).abs() < 0.1);
        assert_eq!(r.summary("x").http.requests, 16);
        assert_eq!(fra.timeline.len(), 2);
        assert_eq!(nrt.timeline.len(), 1);
        assert_eq!(nrt.timeline[0].requests, 8);
        assert!(b.timeline.is_empty(), "a node's summary has no timeline");
        assert_eq!(nrt.completeness.nodes, 2);
        assert_eq!(
            r.totals()
                .fold(names::HTTP_REQS, |k| k.tag(REGION_TAG) == Some("nrt")),
            Some(Value::Counter(8.0)),
            "totals carry the region tag"
        );
    }

    #[test]
    fn canonical_merges_are_identical_whatever_the_order() {
        let mut shards = Vec::new();
        for (i, node) in ["a", "b", "c"].iter().enumerate() {
            for seq in 0..4u64 {
                let mut s = shard(node, seq, seq == 3, &[1.5, 2.5]);
                let key = SeriesKey::new("custom", []);
                let _ = s.series.add(
                    &key,
                    MetricKind::Counter,
                    0.1 * (seq + 1) as f64 + i as f64 / 3.0,
                );
                let _ = s.series.add(
                    &SeriesKey::new("level", []),
                    MetricKind::Gauge,
                    (seq * 10 + i as u64) as f64,
                );
                shards.push(s);
            }
        }
        let json = |r: &Report| serde_json::to_string(&r.summary("x")).unwrap_or_default();
        let forward = json(&Report::from_shards("r", shards.clone()));
        let mut rng = Rng(7);
        for _ in 0..20 {
            for i in (1..shards.len()).rev() {
                shards.swap(i, rng.below(i as u64 + 1) as usize);
            }
            assert_eq!(json(&Report::from_shards("r", shards.clone())), forward);
        }
    }

    #[test]
    fn a_split_shard_keeps_its_nodes_vus() {
        let mut r = Report::new("r");
        let mut with_gauges = shard("a", 0, false, &[1.0]);
        let _ = with_gauges
            .series
            .add(&SeriesKey::new(names::VUS, []), MetricKind::Gauge, 5.0);
        let _ = with_gauges
            .series
            .add(&SeriesKey::new(names::VUS_MAX, []), MetricKind::Gauge, 5.0);
        let mut other_part = shard("a", 1, false, &[1.0]);
        other_part.start_ms = 0;
        other_part.end_ms = 1000;
        r.add(&with_gauges);
        r.add(&other_part);
        let s = r.summary("x");
        assert_eq!(s.timeline.len(), 1);
        assert_eq!(
            s.timeline[0].vus, 5,
            "the part without gauges does not zero them"
        );
        assert_eq!(s.timeline[0].requests, 2);
    }

    #[test]
    fn a_trend_of_another_layout_merges_the_same_read_either_way() {
        // Found by fuzzing: a peer's trend whose lowest value is 2^25 kept
        // its coarse buckets in the report when read whole, but not when
        // read as counts, so the two reports' percentiles differed.
        let mut coarse =
            Histogram::<u64>::new_with_bounds(1 << 25, 1 << 31, 3).expect("valid bounds");
        for v in [40_000_000u64, 1_811_939_328, 1_845_000_000] {
            let _ = coarse.record_n(v, 7);
        }
        let mut s = shard("a", 0, true, &[3.0]);
        let _ = s.series.merge(
            &SeriesKey::new(names::ITERATION_DURATION, []),
            &Value::Trend(coarse),
        );
        let bytes = s.encode();
        let (mut dense, mut sparse) = (Report::new("r"), Report::new("r"));
        assert!(dense.add(&Shard::decode(&bytes).expect("decodes")));
        assert!(sparse.add_sparse(&SparseShard::decode(&bytes).expect("decodes")));
        let json = |r: &Report| serde_json::to_string(&r.summary("x")).unwrap_or_default();
        assert_eq!(json(&dense), json(&sparse));
    }

    #[test]
    fn sparse_shards_merge_exactly_as_decoded_ones() {
        let mut rng = Rng(0x5eed);
        let mut dense = Report::new("r");
        let mut sparse = Report::new("r");
        for seq in 0..6u64 {
            for (n, node) in ["a", "b", "c", "d"].iter().enumerate() {
                let latencies: Vec<f64> = (0..rng.below(400))
                    .map(|_| (1 + rng.below(5000)) as f64 / 7.0)
                    .collect();
                let mut s = shard(node, seq, seq == 5, &latencies);
                s.region = ["fra", "nrt"][n % 2].into();
                let slow =
                    SeriesKey::new(names::HTTP_REQ_DURATION, [("status".into(), "503".into())]);
                for _ in 0..rng.below(20) {
                    let _ = s
                        .series
                        .add(&slow, MetricKind::Trend, rng.below(90_000) as f64);
                }
                let _ = s.series.add(
                    &SeriesKey::new("custom", []),
                    MetricKind::Counter,
                    rng.below(1000) as f64 / 3.0,
                );
                for metric in [names::VUS, names::VUS_MAX] {
                    let _ = s.series.add(
                        &SeriesKey::new(metric, []),
                        MetricKind::Gauge,
                        rng.below(50) as f64,
                    );
                }
                let bytes = s.encode();
                assert!(dense.add(&Shard::decode(&bytes).expect("decodes")));
                assert!(sparse.add_sparse(&SparseShard::decode(&bytes).expect("decodes")));
            }
        }
        let json = |r: &Report, scope| {
            serde_json::to_string(&r.summary_of("x", scope)).unwrap_or_default()
        };
        for scope in [
            Scope::All,
            Scope::Region("fra"),
            Scope::Region("nrt"),
            Scope::Node("c"),
        ] {
            assert_eq!(json(&dense, scope), json(&sparse, scope), "{scope:?}");
        }
        assert_eq!(
            dense.summary("x").http.requests,
            sparse.summary("x").http.requests
        );
    }

    #[test]
    fn latencies_past_the_open_ones_are_packed_and_still_exact() {
        let mut r = Report::new("r");
        let mut one = new_histogram();
        let intervals = OPEN_LATENCIES as u64 + 40;
        // Two nodes, in the store's order: each goes over every interval.
        for node in ["a", "b"] {
            for seq in 0..intervals {
                let l = 1.0 + (seq % 17) as f64;
                r.add(&shard(node, seq, seq + 1 == intervals, &[l, l * 3.0]));
            }
        }
        for seq in 0..intervals {
            let l = 1.0 + (seq % 17) as f64;
            for v in [l, l * 3.0, l, l * 3.0] {
                let _ = one.record(trend_units(v));
            }
        }
        assert!(r.open.len() <= OPEN_LATENCIES);
        let s = r.summary("x");
        assert_eq!(s.timeline.len() as u64, intervals);
        for (seq, p) in s.timeline.iter().enumerate() {
            let l = 1.0 + (seq % 17) as f64;
            let mut h = new_histogram();
            for v in [l, l * 3.0, l, l * 3.0] {
                let _ = h.record(trend_units(v));
            }
            assert_eq!(
                p.p99_ms,
                from_trend_units(h.value_at_quantile(0.99)),
                "interval {seq}"
            );
            assert_eq!(
                p.p50_ms,
                from_trend_units(h.value_at_quantile(0.5)),
                "interval {seq}"
            );
        }
        assert_eq!(s.http.duration.count, one.len());
    }

    #[test]
    fn any_order_and_duplicates_give_the_same_summary() {
        let shards = vec![
            shard("a", 0, false, &[1.0, 2.0, 3.0]),
            shard("a", 1, true, &[50.0]),
            shard("b", 0, false, &[4.0; 10]),
            shard("b", 1, true, &[]),
        ];
        let mut forward = Report::new("r");
        for s in &shards {
            assert!(forward.add(s));
        }
        let mut backward = Report::new("r");
        for s in shards.iter().rev().chain(shards.iter()) {
            backward.add(s);
        }
        let f = serde_json::to_string(&forward.summary("x")).unwrap_or_default();
        let b = serde_json::to_string(&backward.summary("x")).unwrap_or_default();
        assert_eq!(f, b);
        let s = forward.summary("x");
        assert_eq!(s.http.requests, 14);
        assert_eq!(s.http.duration.count, 14);
        // Three significant digits: within 0.1 %.
        assert!(
            (s.http.duration.max - 50.0).abs() <= 0.05,
            "{}",
            s.http.duration.max
        );
        assert!(
            (s.http.duration.p50 - 4.0).abs() <= 0.004,
            "{}",
            s.http.duration.p50
        );
        assert_eq!(s.checks[0].passes, 4);
        assert_eq!(s.timeline.len(), 2);
        assert_eq!(s.timeline[0].requests, 13);
        assert!(s.completeness.is_complete());
    }

    #[test]
    fn completeness_waits_for_every_last_shard() {
        let mut r = Report::new("r");
        r.add(&shard("a", 0, false, &[1.0]));
        r.add(&shard("b", 1, true, &[1.0]));
        let c = r.completeness();
        assert_eq!(c.nodes, 2);
        assert_eq!(c.shards_announced, None);
        r.add(&shard("a", 1, true, &[1.0]));
        let c = r.completeness();
        assert_eq!((c.shards_received, c.shards_announced), (3, Some(4)));
        assert!(!c.is_complete());
    }

    #[test]
    fn vus_of_nodes_add_up_in_an_interval() {
        let mut r = Report::new("r");
        for (node, seq, vus) in [("a", 0, 3.0), ("b", 0, 4.0), ("a", 1, 3.0), ("b", 1, 1.0)] {
            let mut s = shard(node, seq, false, &[1.0]);
            let _ = s
                .series
                .add(&SeriesKey::new(names::VUS, []), MetricKind::Gauge, vus);
            let _ = s
                .series
                .add(&SeriesKey::new(names::VUS_MAX, []), MetricKind::Gauge, vus);
            r.add(&s);
        }
        let summary = r.summary("x");
        assert_eq!(summary.vus_max, 7);
        let vus: Vec<u64> = summary.timeline.iter().map(|p| p.vus).collect();
        assert_eq!(vus, vec![7, 4]);
    }

    #[test]
    fn a_nodes_busy_intervals_are_counted_and_values_out_of_range_ignored() {
        let mut r = Report::new("r");
        let cpus = [
            ("a", 0, 0.95),
            ("a", 1, 0.5),
            ("a", 2, 0.9),
            // From a peer: nothing outside 0 to 1 counts.
            ("a", 3, 1.5),
            ("a", 4, f64::NAN),
            ("b", 0, 0.2),
        ];
        for (node, seq, cpu) in cpus {
            let mut s = shard(node, seq, false, &[1.0]);
            let _ = s
                .series
                .add(&SeriesKey::new(names::NODE_CPU, []), MetricKind::Gauge, cpu);
            r.add(&s);
        }
        r.add(&shard("c", 0, false, &[1.0]));
        let a = r.cpu_of("a");
        assert_eq!(a.map(|c| (c.intervals, c.busy)), Some((3, 2)));
        assert!(a.is_some_and(|c| (c.max - 0.95).abs() < 1e-9), "{a:?}");
        assert_eq!(r.cpu_of("b").map(|c| c.busy), Some(0));
        assert_eq!(r.cpu_of("c"), None, "no measure, no claim");
    }

    #[test]
    fn shards_of_other_runs_are_ignored() {
        let mut r = Report::new("other");
        assert!(!r.add(&shard("a", 0, true, &[1.0])));
        assert_eq!(r.summary("x").http.requests, 0);
    }
}
