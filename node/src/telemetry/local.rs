//! `fusi-node run --otlp-endpoint` on this machine: a local run has no
//! node and no event loop to ask, so it publishes its own snapshots, at
//! most once a second, from the shards it merges, and the pusher of
//! [`super::otlp`] takes the latest. At the run's end the final numbers
//! are pushed before the command exits (waiting at most
//! [`otlp::PUSH_TIMEOUT`] and a second).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::otlp::{self, OtlpConfig};
use super::{NodeHealth, PHASES, RunMetrics, Snapshot, SnapshotSource};
use crate::core::report::Report;
use crate::core::shard::Shard;
use crate::local::LOCAL_NODE;
use crate::worker::wall_ns;

/// The fewest seconds between two snapshots of a local run.
const PUBLISH_EVERY: Duration = Duration::from_secs(1);

/// A local run's metrics, pushed over OTLP.
pub struct LocalExport {
    latest: watch::Sender<Arc<Snapshot>>,
    run: RunMetrics,
    start_unix_ns: u64,
    published: Option<Instant>,
    stop: CancellationToken,
    pusher: JoinHandle<()>,
}

fn now_ns() -> u64 {
    u64::try_from(wall_ns()).unwrap_or(0)
}

impl LocalExport {
    /// Starts pushing to `config`'s collector, for a run of `executor`.
    pub fn start(config: OtlpConfig, executor: &str) -> LocalExport {
        let start_unix_ns = now_ns();
        let run = RunMetrics {
            phase: "running".into(),
            executor: executor.to_owned(),
            start_unix_ns,
            ..RunMetrics::default()
        };
        let (latest, rx) = watch::channel(Arc::new(Snapshot::default()));
        let stop = CancellationToken::new();
        let pusher = tokio::spawn(otlp::push(config, SnapshotSource::latest(rx), stop.clone()));
        let mut export = LocalExport {
            latest,
            run,
            start_unix_ns,
            published: None,
            stop,
            pusher,
        };
        export.publish();
        export
    }

    /// A shard was merged into `report`: publishes a snapshot if the last
    /// is a second old.
    pub fn on_shard(&mut self, shard: &Shard, report: &Report) {
        if self.run.id.is_empty() {
            self.run.id = shard.run_id.clone();
            self.run.start_unix_ns = now_ns().saturating_sub(shard.end_ms * 1_000_000);
        }
        if self
            .published
            .is_some_and(|at| at.elapsed() < PUBLISH_EVERY && !shard.last)
        {
            return;
        }
        self.run.regions = RunMetrics::regions_of(report);
        self.publish();
    }

    fn publish(&mut self) {
        let mut runs_by_phase = [0; PHASES.len()];
        if let Some(i) = PHASES.iter().position(|p| *p == self.run.phase) {
            runs_by_phase[i] = 1;
        }
        let snapshot = Snapshot {
            unix_ns: now_ns(),
            node: NodeHealth {
                id: LOCAL_NODE.into(),
                name: LOCAL_NODE.into(),
                region: LOCAL_NODE.into(),
                version: env!("CARGO_PKG_VERSION").into(),
                start_unix_ns: self.start_unix_ns,
                runs_by_phase,
                ..NodeHealth::default()
            },
            runs: if self.run.id.is_empty() {
                Vec::new()
            } else {
                vec![self.run.clone()]
            },
        };
        self.latest.send_replace(Arc::new(snapshot));
        self.published = Some(Instant::now());
    }

    /// The run ended with `outcome` (its report's): pushes its final
    /// numbers, and stops.
    pub async fn finish(mut self, outcome: &str) {
        self.run.phase = if outcome == "stopped" {
            "stopped"
        } else {
            "complete"
        }
        .into();
        self.run.settled = true;
        self.publish();
        self.stop.cancel();
        let wait = otlp::PUSH_TIMEOUT + Duration::from_secs(2);
        if tokio::time::timeout(wait, &mut self.pusher).await.is_err() {
            self.pusher.abort();
        }
    }
}
