//! A run on this machine: a mesh of one.
//!
//! This is the path `fusi-node run` takes without a mesh, and it is the same
//! path a mesh run takes on each node: a [`RunSpec`], a share of it from
//! [`assign`] (here, one node takes the whole load), the same [`worker`]
//! that runs a share on a node of a mesh, shards sealed every interval and
//! carried through their wire encoding, and a [`Report`] that merges them.
//! Only where the share comes from and where the shards go differ in a mesh:
//! there the plan comes from the run's leader and the shards are gossiped.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::core::assign::{Candidate, assign};
use crate::core::report::Report;
use crate::core::run_report::{ExpectedNode, LoadPlan, RunMeta, RunReport, abort_verdict};
use crate::core::segment::ExecutionSegment;
use crate::core::shard::Shard;
use crate::core::spec::{RunSpec, SpecError};
use crate::core::threshold::parse_all;
use crate::engine::executor::Progress;
use crate::engine::http::ClientSettings;
use crate::engine::module::{LoadError, sha256_hex};
use crate::worker::{self, ShareJob, WorkerEvent};
/// The node name of a local run.
pub const LOCAL_NODE: &str = "local";

/// Why a run could not happen.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The module is unusable.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The spec is unusable.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// A VU could not start, or `setup` failed.
    #[error("{0}")]
    Start(String),
}

/// What a caller sees while a run goes on.
pub trait Observer: Send {
    /// Called with every shard, after it was merged into `report`.
    fn on_shard(&mut self, _shard: &Shard, _report: &Report, _progress: &Progress) {}
}

/// An observer that watches nothing.
pub struct Quiet;
impl Observer for Quiet {}

/// A fresh run id: time-ordered, unique enough for one machine and a mesh.
pub fn new_run_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mix = (nanos as u64) ^ (u64::from(std::process::id()) << 40);
    format!("r{:x}", mix)
}

/// Runs `spec` with the module `wasm` on this machine and returns its
/// report. Cancelling `interrupt` ends the run early (Ctrl-C): in-flight
/// iterations are interrupted, and the report of what was measured comes
/// back, with outcome `stopped`.
pub async fn run(
    wasm: Vec<u8>,
    mut spec: RunSpec,
    observer: &mut dyn Observer,
    interrupt: CancellationToken,
    source_ip: Option<std::net::IpAddr>,
) -> Result<RunReport, RunError> {
    spec.validate()?;
    spec.module_sha256 = sha256_hex(&wasm);
    let run_id = new_run_id();
    let settings = ClientSettings::new(spec.insecure_skip_tls_verify)
        .map_err(|e| RunError::Start(format!("TLS setup failed: {e}")))?
        .with_source_ip(source_ip);
    // The plan of a mesh of one: this node, the whole load.
    let me = Candidate {
        id: LOCAL_NODE.to_owned(),
        region: "local".to_owned(),
        capacity: 1,
    };
    let share = assign(&run_id, &[me], None, u64::from(spec.executor.max_vus()))
        .map_err(|e| RunError::Start(e.to_string()))?
        .into_iter()
        .next()
        .ok_or_else(|| RunError::Start("no share for this node".into()))?;
    let executor = spec.executor.name();
    let (events_tx, mut events) = mpsc::unbounded_channel();
    let mut handle = worker::spawn(
        ShareJob {
            plan: (0, 1),
            spec: spec.clone(),
            share,
            name: LOCAL_NODE.to_owned(),
            region: LOCAL_NODE.to_owned(),
            wasm,
            settings,
            fence: false,
        },
        events_tx,
    );
    let progress = handle.progress.clone();
    let mut report = Report::new(&run_id);
    let thresholds = parse_all(&spec.thresholds).map_err(|e| RunError::Start(e.to_string()))?;
    let mut aborted: Option<String> = None;
    loop {
        let event = tokio::select! {
            () = interrupt.cancelled(), if !interrupt.is_cancelled() => {
                handle.stop();
                continue;
            }
            event = events.recv() => event,
        };
        match event {
            Some(WorkerEvent::Prepared { .. }) => {
                tracing::info!(run = %run_id, executor, "run starting");
                handle.start(Instant::now() + Duration::from_millis(20));
            }
            Some(WorkerEvent::Failed { reason, .. }) => return Err(RunError::Start(reason)),
            Some(WorkerEvent::Started { .. }) => {}
            Some(WorkerEvent::Shard(shard)) => {
                // Shards go through their wire encoding even on one
                // machine, so a local run tests the format a mesh uses.
                match Shard::decode(&shard.encode()) {
                    Ok(decoded) => {
                        report.add(&decoded);
                        observer.on_shard(&decoded, &report, &progress);
                        if aborted.is_none()
                            && let Some(failed) = abort_verdict(&thresholds, &report)
                        {
                            aborted = Some(failed.threshold.clone());
                            tracing::warn!(
                                "threshold `{}` failed (abortOnFail): stopping the run",
                                failed.threshold
                            );
                            handle.stop();
                        }
                    }
                    Err(e) => tracing::error!("a shard did not survive its own encoding: {e}"),
                }
            }
            Some(WorkerEvent::Finished { .. }) | None => break,
        }
    }
    let meta = RunMeta {
        scenario: spec.scenario.clone(),
        executor: executor.to_owned(),
        outcome: if interrupt.is_cancelled() || aborted.is_some() {
            "stopped"
        } else {
            "complete"
        }
        .to_owned(),
        expected: vec![ExpectedNode {
            id: LOCAL_NODE.to_owned(),
            region: LOCAL_NODE.to_owned(),
            segment: Some(ExecutionSegment::WHOLE),
        }],
        lost: Vec::new(),
        thresholds: spec.thresholds.clone(),
        aborted_by: aborted,
        load: Some(LoadPlan::of(&spec)),
        moves: Vec::new(),
    };
    Ok(RunReport::build(&report, &meta))
}

/// `--env` pairs as a map; a later value for a key wins.
pub fn env_map(pairs: &[(String, String)]) -> BTreeMap<String, String> {
    pairs.iter().cloned().collect()
}
