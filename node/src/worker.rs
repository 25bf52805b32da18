//! One node's share of a run, from the module's bytes to its last shard.
//!
//! The same worker runs a share on a node of a mesh and the whole load of
//! a local run (a mesh of one): it compiles the module, checks its ABI, runs
//! `setup`, initializes the share's VUs, then waits. When told the start
//! instant it runs the executor from that instant, seals a shard every
//! interval, runs `teardown`, and says how many shards it sent. Everything
//! it has to say goes out as [`WorkerEvent`]s on one channel, so the node's
//! event loop stays the only owner of the node's state.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fusi_sdk::abi;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::core::runs::START_QUIET;
use crate::core::segment::ExecutionSegment;
use crate::core::shard::Shard;
use crate::core::spec::{RunSpec, Share};
use crate::core::wire::PlanId;
use crate::engine::data::DataSets;
use crate::engine::executor::{Progress, ShareRunner, TakeOver};
use crate::engine::first_errors::{FirstErrors, SHOWN};
use crate::engine::gate::Gate;
use crate::engine::http::ClientSettings;
use crate::engine::module::{LoadError, MemoryLayout, ScenarioModule};
use crate::engine::recorder::{Recorder, ShardOrigin, seal_every};
use crate::engine::vu::{RunContext, ScenarioContext, Vu};

/// A share that starts this long past its start instant says so, and why:
/// the skew goal on one machine is 1 ms.
const LATE_START: Duration = Duration::from_millis(1);

/// How often measurements are sealed into a shard.
pub const SHARD_INTERVAL: Duration = Duration::from_secs(1);

/// What a worker reports.
#[derive(Debug)]
pub enum WorkerEvent {
    /// The `setup` of a run submitted here ran ([`run_setup`]): the
    /// submission goes on with what it returned, or fails with its error.
    SetupRan {
        /// The submission.
        request: Box<crate::api::SubmitRequest>,
        /// What `setup` returned, or why it failed.
        outcome: Result<Option<Vec<u8>>, String>,
        /// Where the submission's answer goes.
        reply: oneshot::Sender<Result<crate::api::SubmitView, String>>,
    },
    /// VUs initialized; waiting for the start.
    Prepared {
        /// The run.
        run: String,
        /// The plan prepared for.
        plan: PlanId,
    },
    /// The share cannot run.
    Failed {
        /// The run.
        run: String,
        /// The plan.
        plan: PlanId,
        /// Why, naming the problem.
        reason: String,
    },
    /// The executor started, at this wall-clock instant (ns since the Unix epoch).
    Started {
        /// The run.
        run: String,
        /// The plan.
        plan: PlanId,
        /// When, in this node's wall clock.
        wall_ns: i64,
        /// When, on the monotonic clock.
        at: std::time::Instant,
    },
    /// One interval's measurements.
    Shard(Box<Shard>),
    /// The share ended after sending this many shards.
    Finished {
        /// The run.
        run: String,
        /// The plan.
        plan: PlanId,
        /// Shards sent.
        shards: u64,
        /// It stopped before its end because this node was frozen (see
        /// [`crate::engine::gate`]).
        fenced: bool,
    },
}

/// What a worker runs.
pub struct ShareJob {
    /// The plan the share belongs to.
    pub plan: PlanId,
    /// The run.
    pub spec: RunSpec,
    /// This node's share.
    pub share: Share,
    /// This node's name, for its shards.
    pub name: String,
    /// This node's region, for its shards.
    pub region: String,
    /// The module's bytes (compiled by the worker, off the event loop).
    pub wasm: Vec<u8>,
    /// The bytes of the spec's data files, in its order (parsed by the
    /// worker, off the event loop).
    pub data: Vec<Arc<Vec<u8>>>,
    /// HTTP client settings (source address, allow list, TLS).
    pub settings: ClientSettings,
    /// Whether other nodes could take the share over: then a freeze fences
    /// it ([`crate::engine::gate`]).
    pub fence: bool,
}

/// The event loop's handle on a worker.
pub struct WorkerHandle {
    cancel: CancellationToken,
    start: Option<oneshot::Sender<Instant>>,
    takeovers: mpsc::UnboundedSender<TakeOver>,
    /// Live numbers of the share.
    pub progress: Arc<Progress>,
}

impl WorkerHandle {
    /// Starts the prepared share at `at`; false if it was started before.
    pub fn start(&mut self, at: Instant) -> bool {
        match self.start.take() {
            Some(tx) => tx.send(at).is_ok(),
            None => false,
        }
    }

    /// Adds part of a lost node's share to the running share; false if
    /// the share has ended.
    pub fn take_over(&self, part: TakeOver) -> bool {
        self.takeovers.send(part).is_ok()
    }

    /// Drops a prepared share, or ends a running one (in-flight iterations
    /// are interrupted; the last shard and `Finished` follow).
    pub fn stop(&self) {
        self.cancel.cancel();
    }
}

impl Drop for WorkerHandle {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Wall-clock nanoseconds since the Unix epoch.
pub fn wall_ns() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_nanos()).unwrap_or(i64::MAX),
    }
}

/// Compiles a module off the async threads, for VUs laid out as `layout`.
pub async fn compile(
    wasm: Vec<u8>,
    layout: MemoryLayout,
) -> Result<Arc<ScenarioModule>, LoadError> {
    tokio::task::spawn_blocking(move || ScenarioModule::compile(&wasm, layout))
        .await
        .map_err(|e| LoadError::Start(format!("compiling the module panicked: {e}")))?
        .map(Arc::new)
}

/// Spawns a worker for `job`; its events go to `events`.
pub fn spawn(job: ShareJob, events: mpsc::UnboundedSender<WorkerEvent>) -> WorkerHandle {
    let cancel = CancellationToken::new();
    let (start_tx, start_rx) = oneshot::channel();
    let (takeovers, takeovers_rx) = mpsc::unbounded_channel();
    let progress = Arc::new(Progress::default());
    tokio::spawn(work(
        job,
        events,
        cancel.clone(),
        (start_rx, takeovers_rx),
        progress.clone(),
    ));
    WorkerHandle {
        cancel,
        start: Some(start_tx),
        takeovers,
        progress,
    }
}

async fn work(
    job: ShareJob,
    events: mpsc::UnboundedSender<WorkerEvent>,
    cancel: CancellationToken,
    (start_rx, takeovers): (
        oneshot::Receiver<Instant>,
        mpsc::UnboundedReceiver<TakeOver>,
    ),
    progress: Arc<Progress>,
) {
    let run_id = job.share.run_id.clone();
    let began = Instant::now();
    let fail = |reason: String| WorkerEvent::Failed {
        run: run_id.clone(),
        plan: job.plan,
        reason,
    };
    let vus = job.spec.share_vus(&job.share.segment);
    let layout = MemoryLayout::for_share(
        vus,
        job.spec.vu_memory_limit,
        crate::limits::address_space().0,
    );
    let module = match compile(job.wasm, layout).await {
        Ok(m) => m,
        Err(e) => {
            let _ = events.send(fail(e.to_string()));
            return;
        }
    };
    let compiled = began.elapsed();
    if let Err(e) = module.check_exec(&job.spec) {
        let _ = events.send(fail(e.to_string()));
        return;
    }
    let data = match load_data(&job.spec, job.data, job.share.segment).await {
        Ok(data) => data,
        Err(e) => {
            let _ = events.send(fail(e));
            return;
        }
    };
    let recorder = Arc::new(Recorder::new());
    let spec = &job.spec;
    // One set of opening slots for every VU of the share.
    let settings = job
        .settings
        .clone()
        .with_max_connecting(spec.max_connecting);
    let context = |stop: CancellationToken, fence: bool, setup_data: Option<Arc<Vec<u8>>>| {
        run_context(spec, &recorder, &settings, &data, stop, fence, setup_data)
    };
    // On a mesh, `setup` ran once where the run was submitted, and what it
    // returned came with the spec; on one machine it runs here.
    let given = spec.setup_data.clone().map(|d| Arc::new(d.into_vec()));
    // setup, teardown and the ABI check run in their own instance, with
    // their own stop token: the run's is cancelled when its share ends.
    let lifecycle_ctx = context(CancellationToken::new(), false, given.clone());
    let mut lifecycle = match lifecycle(module.clone(), lifecycle_ctx, spec).await {
        Ok(vu) => vu,
        Err(e) => {
            let _ = events.send(fail(e));
            return;
        }
    };
    let setup_data = if module.has_setup() && !spec.setup_ran {
        match lifecycle.call_entry(abi::exports::SETUP).await {
            Ok(()) => lifecycle.setup_data().map(Arc::new),
            Err(e) => {
                let _ = events.send(fail(format!("the scenario's {e}")));
                return;
            }
        }
    } else {
        given
    };
    let run_ctx = context(CancellationToken::new(), job.fence, setup_data);
    let said = run_ctx.clone();
    let stop = run_ctx.stop.clone();
    let gate = run_ctx.gate.clone();
    let runner = ShareRunner::new(
        module.clone(),
        run_ctx,
        spec,
        job.share.clone(),
        progress.clone(),
    );
    // Limits of the host that this share's VUs would exceed, said before
    // the VUs start, and again with the error should they fail for it.
    let limits = crate::limits::check_vus(vus, layout);
    for warning in &limits {
        tracing::warn!(run = %run_id, "{warning}");
    }
    let prepared = tokio::select! {
        () = cancel.cancelled() => return,
        p = runner.prepare() => match p {
            Ok(p) => p,
            Err(e) if limits.is_empty() || !crate::limits::may_be_a_limit(&e.to_string()) => {
                let _ = events.send(fail(e.to_string()));
                return;
            }
            Err(e) => {
                let _ = events.send(fail(format!("{e} ({})", limits.join("; "))));
                return;
            }
        },
    };
    tracing::info!(
        run = %run_id,
        vus = prepared.vus(),
        compile_ms = compiled.as_millis() as u64,
        memory = ?layout,
        "share prepared in {} ms",
        began.elapsed().as_millis()
    );
    let _ = events.send(WorkerEvent::Prepared {
        run: run_id.clone(),
        plan: job.plan,
    });
    // Stopped before its start, a share still says it ended (with nothing
    // sent), so the run does not wait for it.
    let ended_early = || WorkerEvent::Finished {
        run: run_id.clone(),
        plan: job.plan,
        shards: 0,
        fenced: false,
    };
    let start = tokio::select! {
        () = cancel.cancelled() => {
            let _ = events.send(ended_early());
            return;
        }
        at = start_rx => match at {
            Ok(at) => at,
            Err(_) => return,
        },
    };
    let given = Instant::now();
    // tokio's timer has a 1 ms grain: sleep with it until just before the
    // start, then sleep out the rest on this thread (the OS timer is finer,
    // and a sleeping thread leaves the cores to the other nodes).
    let early = Duration::from_millis(2);
    tokio::select! {
        () = cancel.cancelled() => {
            let _ = events.send(ended_early());
            return;
        }
        () = tokio::time::sleep_until(start.checked_sub(early).unwrap_or(start)) => {}
    }
    let rest = start.saturating_duration_since(Instant::now());
    let threads = tokio::runtime::Handle::current().runtime_flavor()
        == tokio::runtime::RuntimeFlavor::MultiThread;
    if !rest.is_zero() {
        if threads {
            // At most 2 ms; the runtime's other thread takes over meanwhile.
            std::thread::sleep(rest);
        } else {
            tokio::time::sleep_until(start).await;
        }
    }
    let woke = Instant::now();
    // Told once the start's quiet is over, or before anything else this
    // share says, whichever comes first (`START_QUIET`): telling it goes to
    // the leader and into the run's record on disk, work that at T0 would
    // take a core from the nodes of this machine still waking for it.
    let mut started = Some(WorkerEvent::Started {
        run: run_id.clone(),
        plan: job.plan,
        wall_ns: wall_ns(),
        at: woke.into_std(),
    });
    let quiet = tokio::time::sleep_until(woke + START_QUIET);
    tokio::pin!(quiet);
    let late = woke.saturating_duration_since(start);
    tracing::info!(
        run = %run_id,
        executor = spec.executor_name(),
        vus = prepared.vus(),
        late_us = late.as_micros() as u64,
        "share starting"
    );
    if late > LATE_START {
        let why = if given > start {
            "the start instant had passed when this node was told it (the arm came late)"
        } else {
            "this process was not scheduled in time (a busy machine: other processes, or \
             more nodes than cores)"
        };
        tracing::warn!(
            run = %run_id,
            "this node started its share {:.1} ms past the start instant: {why}; the run's \
             start skew counts it",
            late.as_secs_f64() * 1e3
        );
    }
    let on_cancel = cancel.clone();
    let stop_run = stop.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = on_cancel.cancelled() => stop_run.cancel(),
            () = stop_run.cancelled() => {}
        }
    });
    let (shard_tx, mut shard_rx) = mpsc::unbounded_channel();
    let (done_tx, done_rx) = oneshot::channel();
    let sealer = tokio::spawn(seal_every(
        recorder.clone(),
        progress.clone(),
        ShardOrigin {
            run_id: run_id.clone(),
            node: job.share.node.clone(),
            name: job.name.clone(),
            region: job.region.clone(),
        },
        start,
        SHARD_INTERVAL,
        shard_tx,
        done_rx,
    ));
    let mut running = tokio::spawn(prepared.run(start, takeovers));
    let mut finished = false;
    let mut done_tx = Some(done_tx);
    let mut sent = 0u64;
    loop {
        tokio::select! {
            () = &mut quiet, if started.is_some() => tell_started(&events, &mut started),
            shard = shard_rx.recv() => match shard {
                Some(shard) => {
                    tell_started(&events, &mut started);
                    sent += 1;
                    let _ = events.send(WorkerEvent::Shard(Box::new(shard)));
                }
                None => break,
            },
            r = &mut running, if !finished => {
                finished = true;
                if let Err(e) = r {
                    tracing::error!("the executor failed: {e}");
                }
                say_suppressed(&said);
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
    stop.cancel();
    tell_started(&events, &mut started);
    let _ = events.send(WorkerEvent::Finished {
        run: run_id,
        plan: job.plan,
        shards: sent,
        fenced: gate.fenced(),
    });
}

/// Sends the share's `Started` if it is still held back.
fn tell_started(events: &mpsc::UnboundedSender<WorkerEvent>, started: &mut Option<WorkerEvent>) {
    if let Some(event) = started.take() {
        let _ = events.send(event);
    }
}

/// Parses the data files of `spec` for a share of `segment`, off the
/// event loop.
async fn load_data(
    spec: &RunSpec,
    files: Vec<Arc<Vec<u8>>>,
    segment: ExecutionSegment,
) -> Result<Arc<DataSets>, String> {
    let specs = spec.data.clone();
    tokio::task::spawn_blocking(move || DataSets::load(&specs, &files, segment))
        .await
        .unwrap_or_else(|e| Err(format!("parsing the data files failed: {e}")))
        .map(Arc::new)
}

/// What every VU of a share (or its lifecycle instance) shares.
fn run_context(
    spec: &RunSpec,
    recorder: &Arc<Recorder>,
    settings: &ClientSettings,
    data: &Arc<DataSets>,
    stop: CancellationToken,
    fence: bool,
    setup_data: Option<Arc<Vec<u8>>>,
) -> Arc<RunContext> {
    Arc::new(RunContext {
        recorder: recorder.clone(),
        gate: Arc::new(Gate::new(stop.clone(), fence)),
        stop,
        tls: settings.clone(),
        iteration_timeout: spec.iteration_timeout,
        memory_limit: spec.vu_memory_limit,
        request_errors: FirstErrors::default(),
        iteration_failures: FirstErrors::default(),
        socket_errors: FirstErrors::default(),
        expected_statuses: spec.expected_statuses.clone(),
        data: data.clone(),
        setup_data,
    })
}

/// The instance that runs `setup` and `teardown`, its ABI version checked.
async fn lifecycle(
    module: Arc<ScenarioModule>,
    ctx: Arc<RunContext>,
    spec: &RunSpec,
) -> Result<Vu, String> {
    let scenario = Arc::new(ScenarioContext::lifecycle(spec));
    let mut vu = Vu::for_lifecycle(module, ctx, scenario)
        .await
        .map_err(|e| e.to_string())?;
    match vu.abi_version().await {
        Ok(v)
            if (i64::from(abi::OLDEST_ABI_VERSION)..=i64::from(abi::ABI_VERSION)).contains(&v) =>
        {
            Ok(vu)
        }
        Ok(v) => Err(LoadError::AbiMismatch(v).to_string()),
        Err(e) => Err(LoadError::Start(e).to_string()),
    }
}

/// Runs the module's `setup` once for a run about to be proposed to a mesh,
/// on the node it was submitted to: what it returns travels with the run
/// ([`RunSpec::setup_data`]), and no node runs `setup` again. Its requests
/// obey `settings` (this node's `--allow-target`); what it measures is not
/// part of the run's report. `Ok(None)`: no `setup`, or it returned nothing.
pub async fn run_setup(
    wasm: Vec<u8>,
    spec: &RunSpec,
    files: Vec<Arc<Vec<u8>>>,
    settings: ClientSettings,
) -> Result<Option<Vec<u8>>, String> {
    // No VUs: setup's instance alone.
    let space = crate::limits::address_space().0;
    let layout = MemoryLayout::for_share(0, spec.vu_memory_limit, space);
    let module = compile(wasm, layout).await.map_err(|e| e.to_string())?;
    module.check_exec(spec).map_err(|e| e.to_string())?;
    if !module.has_setup() {
        return Ok(None);
    }
    let data = load_data(spec, files, ExecutionSegment::WHOLE).await?;
    let recorder = Arc::new(Recorder::new());
    let ctx = run_context(
        spec,
        &recorder,
        &settings,
        &data,
        CancellationToken::new(),
        false,
        None,
    );
    let mut vu = lifecycle(module, ctx, spec).await?;
    vu.call_entry(abi::exports::SETUP)
        .await
        .map_err(|e| format!("the scenario's {e}"))?;
    Ok(vu.setup_data())
}

/// One line for each kind of failure of the share that was not said with
/// its text (only the first [`SHOWN`] of a kind are).
fn say_suppressed(run: &RunContext) {
    for (kind, more) in run.request_errors.suppressed() {
        tracing::warn!("{more} more requests failed ({kind}) after the first {SHOWN} above");
    }
    for (kind, more) in run.socket_errors.suppressed() {
        tracing::warn!("{more} more WebSockets failed ({kind}) after the first {SHOWN} above");
    }
    for (reason, more) in run.iteration_failures.suppressed() {
        tracing::warn!("{more} more iterations failed ({reason}) after the first {SHOWN} above");
    }
}
