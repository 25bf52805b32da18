//! The node's metrics for outside tools: Prometheus scrapes them
//! ([`prometheus`], `fusi-node up --metrics-listen`), an OpenTelemetry
//! collector receives them ([`otlp`], `--otlp-endpoint`, and [`local`] for
//! `fusi-node run --otlp-endpoint` on this machine).
//!
//! Both render one [`Snapshot`], which the node's event loop takes when
//! asked ([`SnapshotSource`]): the node's health, and the live metrics of
//! the recent runs, merged from every shard the node holds (while a run
//! goes its shards go to its leader, which shows the whole run, and the
//! others their own share; after the end every node holds every shard and
//! shows the whole run).
//!
//! **Why from the merged shards.** The event loop keeps each run's shards
//! merged in memory already (for the live view and abort thresholds), so a
//! snapshot folds a few series of that merge per region, with no disk read
//! and no report built. A run's part is taken again only when a shard
//! arrived since the last snapshot; between scrapes of a quiet node a
//! snapshot costs a few counters.
//!
//! **Bounded.** A snapshot holds at most [`MAX_RUNS`] runs (the newest of
//! those running, or ended less than [`RECENT`] ago), at most
//! [`MAX_REGIONS`] regions per run (the rest summed under
//! [`OTHER_REGIONS`]), and [`DURATION_BOUNDS_S`] buckets per histogram; so a
//! scrape's series are bounded whatever the mesh does. No label carries a
//! URL, a node or a status.

pub mod families;
pub mod local;
pub mod otlp;
pub mod prometheus;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::sync::{mpsc, oneshot, watch};

use crate::core::metrics::{SeriesKey, Value, names};
use crate::core::report::{REGION_TAG, Report};

/// The most runs a snapshot shows.
pub const MAX_RUNS: usize = 10;

/// How long a run stays in snapshots after its last measurement, once it
/// ended.
pub const RECENT: Duration = Duration::from_secs(15 * 60);

/// The most regions of a run shown by name; the others are summed.
pub const MAX_REGIONS: usize = 16;

/// The region label of the regions beyond [`MAX_REGIONS`], summed: no real
/// region has an underscore.
pub const OTHER_REGIONS: &str = "_other";

/// The upper bounds of `http_req_duration`'s buckets, seconds (the last
/// bucket, `+Inf`, is implied): Prometheus's usual spread, stretched to a
/// minute.
pub const DURATION_BOUNDS_S: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// The run phases, in order; every snapshot counts runs in each.
pub const PHASES: [&str; 7] = [
    "proposed", "assigned", "armed", "running", "complete", "stopped", "failed",
];

/// What a node shows of itself and its recent runs at one instant.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// When it was taken, Unix ns.
    pub unix_ns: u64,
    /// The node.
    pub node: NodeHealth,
    /// The recent runs, newest first; at most [`MAX_RUNS`].
    pub runs: Vec<RunMetrics>,
}

/// A node's health.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeHealth {
    /// Peer id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Region.
    pub region: String,
    /// Software version.
    pub version: String,
    /// When the node started, Unix ns.
    pub start_unix_ns: u64,
    /// Members known, this node not included.
    pub members: u64,
    /// Members that missed their recent heartbeats.
    pub suspects: u64,
    /// Peers with an open connection.
    pub connected: u64,
    /// Bytes sent on mesh connections since the node started.
    pub mesh_bytes_sent: u64,
    /// Bytes received on mesh connections since the node started.
    pub mesh_bytes_received: u64,
    /// CPU use, in cores (1.0 = one core busy).
    pub cpu_cores: f64,
    /// Open sockets.
    pub sockets: u64,
    /// VUs of this node's shares of the runs now running.
    pub vus: u64,
    /// Runs this node knows, per phase of [`PHASES`], in that order.
    pub runs_by_phase: [u64; PHASES.len()],
}

/// A run's live metrics, merged from every node's shards.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunMetrics {
    /// The run id.
    pub id: String,
    /// Its phase (one of [`PHASES`]).
    pub phase: String,
    /// The executor.
    pub executor: String,
    /// Its start instant (T0), Unix ns: where its counters start.
    pub start_unix_ns: u64,
    /// The run ended and every shard announced is merged: its numbers are
    /// final.
    pub settled: bool,
    /// Per region, by name, [`OTHER_REGIONS`] last.
    pub regions: Vec<RegionMetrics>,
}

/// One region's part of a run, so far.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RegionMetrics {
    /// The region, or [`OTHER_REGIONS`].
    pub region: String,
    /// Requests made.
    pub requests: u64,
    /// Requests without an expected response.
    pub failed_requests: u64,
    /// Iterations that returned normally.
    pub iterations: u64,
    /// Iterations that failed.
    pub failed_iterations: u64,
    /// VUs active in the latest settled interval.
    pub vus: u64,
    /// `http_req_duration`.
    pub duration: DurationHistogram,
}

/// `http_req_duration` in the buckets of [`DURATION_BOUNDS_S`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DurationHistogram {
    /// Samples per bucket (not cumulative): one per bound, then the
    /// samples above the last bound.
    pub counts: [u64; DURATION_BOUNDS_S.len() + 1],
    /// The sum of the samples, seconds (each sample at the middle of its
    /// HdrHistogram bucket: within 0.1 % of the true sum).
    pub sum_s: f64,
}

impl DurationHistogram {
    /// The samples of a histogram of milliseconds in trend units (µs). A
    /// sample lands in the first bucket whose bound is at or above the
    /// lowest value HdrHistogram keeps for it (so within its 0.1 %).
    pub fn of(h: &Histogram<u64>) -> DurationHistogram {
        let mut out = DurationHistogram::default();
        for step in h.iter_recorded() {
            let us = h.lowest_equivalent(step.value_iterated_to());
            let seconds = us as f64 / 1e6;
            let bucket = DURATION_BOUNDS_S
                .iter()
                .position(|b| seconds <= *b)
                .unwrap_or(DURATION_BOUNDS_S.len());
            out.counts[bucket] += step.count_at_value();
        }
        out.sum_s = h.mean() * h.len() as f64 / 1e6;
        out
    }

    /// Samples in all.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Samples at or below each bound, then in all: Prometheus's `le`
    /// buckets.
    pub fn cumulative(&self) -> [u64; DURATION_BOUNDS_S.len() + 1] {
        let mut out = self.counts;
        for i in 1..out.len() {
            out[i] += out[i - 1];
        }
        out
    }
}

impl RunMetrics {
    /// The regions of a report's merged shards: the first [`MAX_REGIONS`]
    /// by name, and the rest summed under [`OTHER_REGIONS`].
    pub fn regions_of(report: &Report) -> Vec<RegionMetrics> {
        let regions = report.regions();
        let named: BTreeSet<&str> = regions.iter().copied().take(MAX_REGIONS).collect();
        let mut out: Vec<RegionMetrics> = named
            .iter()
            .map(|r| region_of(report, r, |k| k.tag(REGION_TAG) == Some(r)))
            .collect();
        if regions.len() > named.len() {
            out.push(region_of(report, OTHER_REGIONS, |k| {
                k.tag(REGION_TAG).is_none_or(|r| !named.contains(r))
            }));
        }
        out
    }
}

/// One region (or group of regions) of a report.
fn region_of(report: &Report, name: &str, in_scope: impl Fn(&SeriesKey) -> bool) -> RegionMetrics {
    let totals = report.totals();
    let count = |metric: &str| match totals.fold(metric, &in_scope) {
        Some(Value::Counter(c)) => c as u64,
        _ => 0,
    };
    let failed_requests = match totals.fold(names::HTTP_REQ_FAILED, &in_scope) {
        Some(Value::Rate { passes, .. }) => passes,
        _ => 0,
    };
    let duration = match totals.fold(names::HTTP_REQ_DURATION, &in_scope) {
        Some(Value::Trend(h)) => DurationHistogram::of(&h),
        _ => DurationHistogram::default(),
    };
    let vus = if name == OTHER_REGIONS {
        0
    } else {
        report.latest(Some(name)).map_or(0, |p| p.vus)
    };
    RegionMetrics {
        region: name.to_owned(),
        requests: count(names::HTTP_REQS),
        failed_requests,
        iterations: count(names::ITERATIONS),
        failed_iterations: count(names::ITERATIONS_FAILED),
        vus,
        duration,
    }
}

/// Where the exporters get snapshots: a node's event loop, asked each
/// time, or a local run, which publishes its latest.
#[derive(Debug, Clone)]
pub struct SnapshotSource(Source);

#[derive(Debug, Clone)]
enum Source {
    /// Asks the event loop, which answers with a fresh snapshot.
    Ask(mpsc::Sender<oneshot::Sender<Arc<Snapshot>>>),
    /// The latest snapshot a local run published.
    Latest(watch::Receiver<Arc<Snapshot>>),
}

/// What the event loop receives: one reply channel per snapshot asked for.
pub type SnapshotRequests = mpsc::Receiver<oneshot::Sender<Arc<Snapshot>>>;

impl SnapshotSource {
    /// A source, and the requests the event loop answers.
    pub fn new() -> (SnapshotSource, SnapshotRequests) {
        let (tx, rx) = mpsc::channel(16);
        (SnapshotSource(Source::Ask(tx)), rx)
    }

    /// A source that gives whatever was last published on `latest`.
    pub fn latest(latest: watch::Receiver<Arc<Snapshot>>) -> SnapshotSource {
        SnapshotSource(Source::Latest(latest))
    }

    /// A snapshot; `None` once the node stops.
    pub async fn get(&self) -> Option<Arc<Snapshot>> {
        match &self.0 {
            Source::Ask(ask) => {
                let (tx, rx) = oneshot::channel();
                ask.send(tx).await.ok()?;
                rx.await.ok()
            }
            Source::Latest(latest) => Some(latest.borrow().clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::metrics::new_histogram;

    #[test]
    fn durations_land_in_their_bucket_and_sum_up() {
        let mut h = new_histogram();
        // 0.5 ms, 1 ms (on a bound), 2.5 ms (on a bound), 7 ms, 2 min.
        for us in [500, 1000, 2500, 7000, 120_000_000] {
            h.record(us).unwrap_or_else(|e| panic!("{e}"));
        }
        let d = DurationHistogram::of(&h);
        assert_eq!(d.counts[0], 2, "0.5 ms and 1 ms are <= 1 ms");
        assert_eq!(d.counts[1], 1, "2.5 ms is <= 2.5 ms");
        assert_eq!(d.counts[3], 1, "7 ms is <= 10 ms");
        assert_eq!(d.counts[DURATION_BOUNDS_S.len()], 1, "2 min is over 60 s");
        assert_eq!(d.count(), 5);
        let sum = 0.0005 + 0.001 + 0.0025 + 0.007 + 120.0;
        assert!((d.sum_s - sum).abs() < sum * 1e-3, "{} vs {sum}", d.sum_s);
        let c = d.cumulative();
        assert_eq!(c[0], 2);
        assert_eq!(c[3], 4);
        assert_eq!(c[DURATION_BOUNDS_S.len()], 5);
        assert!(c.windows(2).all(|w| w[0] <= w[1]));
    }

    /// A shard of one node in `region`: `n` requests of 3 ms, one failed.
    fn shard(node: &str, region: &str, n: u32) -> crate::core::shard::Shard {
        let mut series = crate::core::metrics::SeriesSet::new();
        let key = |m: &str| SeriesKey::new(m, [("status".to_owned(), "200".to_owned())]);
        let mut duration = Value::Trend(new_histogram());
        for _ in 0..n {
            duration.add_sample(3.0);
        }
        for (metric, value) in [
            (names::HTTP_REQS, Value::Counter(f64::from(n))),
            (
                names::HTTP_REQ_FAILED,
                Value::Rate {
                    passes: 1,
                    fails: u64::from(n) - 1,
                },
            ),
            (names::ITERATIONS, Value::Counter(f64::from(n))),
            (names::HTTP_REQ_DURATION, duration),
        ] {
            let _ = series.merge(&key(metric), &value);
        }
        crate::core::shard::Shard {
            run_id: "r1".into(),
            node: node.into(),
            name: node.into(),
            region: region.into(),
            seq: 0,
            start_ms: 0,
            end_ms: 1000,
            last: true,
            series,
            notes: Vec::new(),
        }
    }

    #[test]
    fn a_run_shows_its_first_regions_by_name_and_sums_the_rest() {
        let regions: Vec<String> = (0..MAX_REGIONS + 3).map(|i| format!("r{i:02}")).collect();
        let shards = regions
            .iter()
            .enumerate()
            .map(|(i, r)| shard(&format!("n{i}"), r, 2))
            .collect();
        let report = Report::from_shards("r1", shards);
        let shown = RunMetrics::regions_of(&report);
        assert_eq!(shown.len(), MAX_REGIONS + 1);
        assert_eq!(shown[0].region, "r00");
        let other = &shown[MAX_REGIONS];
        assert_eq!(other.region, OTHER_REGIONS);
        assert_eq!(
            (other.requests, other.failed_requests, other.iterations),
            (6, 3, 6)
        );
        assert_eq!(other.duration.count(), 6);
        assert_eq!(shown[1].requests, 2);
        assert_eq!(shown[1].duration.counts[2], 2, "3 ms is <= 5 ms");
        let total: u64 = shown.iter().map(|r| r.requests).sum();
        assert_eq!(total, 2 * regions.len() as u64);
    }

    #[test]
    fn bounds_rise_and_are_few() {
        assert!(DURATION_BOUNDS_S.windows(2).all(|w| w[0] < w[1]));
        assert!(DURATION_BOUNDS_S.len() <= 20);
    }
}
