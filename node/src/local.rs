//! A run on this machine: a mesh of one.
//!
//! This is the path `fusi-node run` takes without a mesh, and it is the same
//! path a mesh run takes on each node: a [`RunSpec`], a [`Share`] of it (here
//! the whole load), VUs driven by the spec's executor, shards sealed every
//! interval, and a [`Report`] that merges them. Only where the share comes
//! from and where the shards go will differ in a mesh.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fusi_sdk::abi;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::core::report::{Report, Summary};
use crate::core::segment::ExecutionSegment;
use crate::core::shard::Shard;
use crate::core::spec::{RunSpec, Share, SpecError};
use crate::engine::executor::{Progress, ShareRunner};
use crate::engine::http::ClientSettings;
use crate::engine::module::{LoadError, ScenarioModule};
use crate::engine::recorder::{Recorder, seal_every};
use crate::engine::vu::{RunContext, Vu};

/// How often measurements are sealed into a shard.
pub const SHARD_INTERVAL: Duration = Duration::from_secs(1);
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

/// Runs `spec` with the module `wasm` on this machine and returns the summary.
/// Cancelling `interrupt` ends the run early (Ctrl-C): in-flight iterations
/// are interrupted, and the summary of what was measured comes back.
pub async fn run(
    wasm: Vec<u8>,
    mut spec: RunSpec,
    observer: &mut dyn Observer,
    interrupt: CancellationToken,
    source_ip: Option<std::net::IpAddr>,
) -> Result<Summary, RunError> {
    spec.executor.validate()?;
    let module = tokio::task::spawn_blocking(move || ScenarioModule::compile(&wasm))
        .await
        .map_err(|e| RunError::Start(format!("compiling the module panicked: {e}")))??;
    let module = Arc::new(module);
    spec.module_sha256 = module.sha256().to_owned();
    let run_id = new_run_id();

    let recorder = Arc::new(Recorder::new());
    let tls = ClientSettings::new(spec.insecure_skip_tls_verify)
        .map_err(|e| RunError::Start(format!("TLS setup failed: {e}")))?
        .with_source_ip(source_ip);
    let context = |stop: CancellationToken| {
        Arc::new(RunContext {
            recorder: recorder.clone(),
            env: spec.env.clone(),
            stop,
            tls: tls.clone(),
            iteration_timeout: spec.iteration_timeout,
            memory_limit: spec.vu_memory_limit,
            failures_logged: AtomicU64::new(0),
        })
    };

    // setup, teardown and the ABI check run in their own instance, with their
    // own stop token: the run's is cancelled when its share ends.
    let lifecycle_ctx = context(CancellationToken::new());
    let mut lifecycle = Vu::for_lifecycle(module.clone(), lifecycle_ctx.clone())
        .await
        .map_err(|e| RunError::Start(e.to_string()))?;
    let version = lifecycle
        .abi_version()
        .await
        .map_err(|e| RunError::Load(LoadError::Start(e)))?;
    if version != i64::from(abi::ABI_VERSION) {
        return Err(LoadError::AbiMismatch(version).into());
    }
    if module.has_setup() {
        lifecycle
            .call_entry(abi::exports::SETUP)
            .await
            .map_err(|e| RunError::Start(format!("the scenario's {e}")))?;
    }

    let share = Share {
        run_id: run_id.clone(),
        node: LOCAL_NODE.to_owned(),
        segment: ExecutionSegment::WHOLE,
        first_vu_id: 1,
    };
    let progress = Arc::new(Progress::default());
    let run_ctx = context(CancellationToken::new());
    let stop = run_ctx.stop.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = interrupt.cancelled() => stop.cancel(),
            () = stop.cancelled() => {}
        }
    });
    let prepared = ShareRunner::new(module.clone(), run_ctx, &spec, share, progress.clone())
        .prepare()
        .await
        .map_err(|e| RunError::Start(e.to_string()))?;
    tracing::info!(run = %run_id, executor = spec.executor.name(), vus = prepared.vus(), "run starting");

    // Anything recorded while preparing (requests in `init`) counts in the
    // first interval.
    let start = Instant::now() + Duration::from_millis(20);
    let (shard_tx, mut shard_rx) = mpsc::unbounded_channel();
    let (done_tx, done_rx) = oneshot::channel();
    let sealer = tokio::spawn(seal_every(
        recorder.clone(),
        progress.clone(),
        (run_id.clone(), LOCAL_NODE.to_owned()),
        start,
        SHARD_INTERVAL,
        shard_tx,
        done_rx,
    ));
    let mut running = tokio::spawn(prepared.run(start));

    let mut report = Report::new(&run_id);
    let mut finished = false;
    let mut done_tx = Some(done_tx);
    loop {
        tokio::select! {
            shard = shard_rx.recv() => match shard {
                Some(shard) => {
                    let bytes = shard.encode();
                    // Shards go through their wire encoding even on one
                    // machine, so a local run tests the format a mesh uses.
                    match Shard::decode(&bytes) {
                        Ok(decoded) => {
                            report.add(&decoded);
                            observer.on_shard(&decoded, &report, &progress);
                        }
                        Err(e) => tracing::error!("a shard did not survive its own encoding: {e}"),
                    }
                }
                None => break,
            },
            r = &mut running, if !finished => {
                finished = true;
                if let Err(e) = r {
                    tracing::error!("the executor failed: {e}");
                }
                // teardown runs before the last shard is sealed, so what it
                // measures is in the report.
                if module.has_teardown()
                    && let Err(e) = lifecycle.call_entry(abi::exports::TEARDOWN).await
                {
                    tracing::warn!("the scenario's {e}");
                }
                if let Some(tx) = done_tx.take() {
                    let _ = tx.send(());
                }
            }
        }
    }
    let _ = sealer.await;
    Ok(report.summary(spec.executor.name()))
}

/// `--env` pairs as a map; a later value for a key wins.
pub fn env_map(pairs: &[(String, String)]) -> BTreeMap<String, String> {
    pairs.iter().cloned().collect()
}
