//! Snapshots of the node for its metrics exporters
//! ([`crate::telemetry`]), taken on the event loop.
//!
//! A run's regions are folded from its merged shards again only when a
//! shard arrived since the last snapshot (the count of shards held is the
//! version); a snapshot of a quiet node costs a few counters and one view
//! of each run it knows.

use std::collections::HashMap;
use std::sync::Arc;

use super::Node;
use crate::telemetry::{MAX_RUNS, NodeHealth, PHASES, RECENT, RegionMetrics, RunMetrics, Snapshot};
use crate::worker::wall_ns;

/// What the last snapshot folded, by run: the shards held then, and the
/// regions. Holds the runs of the last snapshot only.
#[derive(Debug, Default)]
pub(super) struct Folded {
    runs: HashMap<String, (usize, Vec<RegionMetrics>)>,
    /// When the node started, Unix ns, as the first snapshot saw it: later
    /// ones show the same, whatever the wall clock does.
    start_unix_ns: Option<u64>,
}

/// Past an executor's longest duration, how long a run's measurements
/// may still end (a graceful stop, the last shards).
const SLACK: std::time::Duration = std::time::Duration::from_secs(300);

/// Phases after which a run's numbers stop changing.
const ENDED: [&str; 3] = ["complete", "stopped", "failed"];

impl Node {
    /// The node and its recent runs, now.
    pub(super) fn snapshot(&mut self) -> Arc<Snapshot> {
        let now = self.now();
        let unix_ns = u64::try_from(wall_ns()).unwrap_or(0);
        let me = self.core.mesh().me().clone();
        let peers = self.core.mesh().peers(now);
        let mut node = NodeHealth {
            id: me.id.clone(),
            name: me.name.clone(),
            region: me.region.clone(),
            version: me.version.clone(),
            start_unix_ns: *self
                .folded
                .start_unix_ns
                .get_or_insert(unix_ns.saturating_sub(now.as_nanos() as u64)),
            members: peers.len() as u64,
            suspects: peers.iter().filter(|p| p.member.suspect).count() as u64,
            connected: self.core.mesh().connected_count() as u64,
            mesh_bytes_sent: self.traffic.sent(),
            mesh_bytes_received: self.traffic.received(),
            cpu_cores: f64::from(self.health.cpu),
            sockets: u64::from(self.health.sockets),
            ..NodeHealth::default()
        };
        drop(peers);
        let now_ms = unix_ns as f64 / 1e6;
        let mut was = std::mem::take(&mut self.folded.runs);
        let mut runs = Vec::new();
        for view in self.runs_view().runs {
            if let Some(i) = PHASES.iter().position(|p| *p == view.phase) {
                node.runs_by_phase[i] += 1;
            }
            if view.phase == "running" {
                node.vus += view
                    .nodes
                    .iter()
                    .filter(|n| n.id == me.id && n.state == "started")
                    .map(|n| n.vus)
                    .sum::<u64>();
            }
            let Some(t0_ms) = view.t0_unix_ms else {
                continue;
            };
            if runs.len() == MAX_RUNS {
                continue;
            }
            let ended = ENDED.contains(&view.phase.as_str());
            // The executor's longest duration bounds its end: an old run
            // restored from the data dir is not read just to be skipped.
            let latest_end_ms = t0_ms + view.duration_s * 1000.0 + SLACK.as_millis() as f64;
            if ended && now_ms - latest_end_ms > RECENT.as_millis() as f64 {
                continue;
            }
            let (held, settled, regions) = match self.merged(&view.id) {
                Some(report) => {
                    let last_unix_ms = t0_ms + report.end_ms() as f64;
                    if ended && now_ms - last_unix_ms > RECENT.as_millis() as f64 {
                        continue;
                    }
                    let held = report.held().len();
                    let regions = match was.remove(&view.id) {
                        Some((then, regions)) if then == held => regions,
                        _ => RunMetrics::regions_of(report),
                    };
                    (held, ended && report.completeness().is_complete(), regions)
                }
                None if ended => continue,
                None => (0, false, Vec::new()),
            };
            self.folded
                .runs
                .insert(view.id.clone(), (held, regions.clone()));
            runs.push(RunMetrics {
                id: view.id,
                phase: view.phase,
                executor: view.executor,
                start_unix_ns: (t0_ms * 1e6) as u64,
                settled,
                regions,
            });
        }
        Arc::new(Snapshot {
            unix_ns,
            node,
            runs,
        })
    }
}
