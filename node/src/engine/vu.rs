//! A virtual user: one wasmtime Store and instance of the scenario, its own
//! HTTP connections, tags and iteration counter.
//!
//! A VU runs one iteration at a time. Whatever the scenario does wrong in an
//! iteration (a trap, a panic, an endless loop, memory without bound), that
//! iteration fails with a reason and the VU goes on with a fresh instance of
//! the module, because a trapped instance may hold broken state. Its HTTP
//! connections survive the swap.
//!
//! Endless loops are cut by epoch interruption: every [`EPOCH_TICK`] the
//! running guest either yields to tokio (so other VUs keep running on the
//! same thread) or, past its iteration deadline, traps.
//!
//! [`EPOCH_TICK`]: super::module::EPOCH_TICK

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use fusi_sdk::abi::{MetricKind, exports};
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use wasmtime::{Instance, Memory, ResourceLimiter, Store, TypedFunc, UpdateDeadline};
use wasmtime_wasi::WasiCtxBuilder;
use wasmtime_wasi::p1::WasiP1Ctx;

use super::backstop::Backstop;
use super::courier::{Courier, drive};
use super::first_errors::FirstErrors;
use super::http::{ClientSettings, HttpClient};
use super::module::ScenarioModule;
use super::output::{Fd, VuOutput};
use super::recorder::Recorder;
use super::woken::Woken;
use super::ws::WsClient;
use crate::core::metrics::{SeriesKey, names};
use crate::core::printable::escape_controls;
use crate::core::spec::{RunSpec, SCENARIO_TAG, ScenarioSpec};
use crate::core::statuses::ExpectedStatuses;

/// How long after its deadline (or the hard stop) an iteration stuck in a
/// host call that ignores them is cut.
const BACKSTOP: Duration = Duration::from_secs(1);

/// What every VU of a run shares.
pub struct RunContext {
    /// Where measurements go.
    pub recorder: Arc<Recorder>,
    /// Cancelled at the hard stop: in-flight iterations are interrupted.
    pub stop: CancellationToken,
    /// TLS settings for every VU's client.
    pub tls: ClientSettings,
    /// How long one iteration may take.
    pub iteration_timeout: Duration,
    /// The most linear memory one instance may have, in bytes.
    pub memory_limit: u64,
    /// Requests that failed, by error kind, to say only the first few.
    pub request_errors: FirstErrors,
    /// Iterations that failed, by reason, to say only the first few.
    pub iteration_failures: FirstErrors,
    /// WebSockets that failed, by error kind, to say only the first few.
    pub socket_errors: FirstErrors,
    /// Whether the share may still send (see [`super::gate`]).
    pub gate: Arc<super::gate::Gate>,
    /// The statuses that count as success, unless a VU sets its own.
    pub expected_statuses: ExpectedStatuses,
    /// The run's test data (`--data`), shared by every VU of the node.
    pub data: Arc<super::data::DataSets>,
    /// What the run's `setup` returned, for every VU.
    pub setup_data: Option<Arc<Vec<u8>>>,
}

/// What the VUs of one scenario share: the function they run, their
/// parameters and their tags.
#[derive(Debug, Clone, Default)]
pub struct ScenarioContext {
    /// The exported function an iteration calls; `None` for the instance
    /// that runs `setup` and `teardown`, which runs no iteration.
    pub exec: Option<String>,
    /// Run parameters: the run's, with the scenario's own over them.
    pub env: BTreeMap<String, String>,
    /// The tags every sample of its VUs starts with: `scenario` and the
    /// scenario's own, in a run with named scenarios; none otherwise.
    pub tags: BTreeMap<String, String>,
    /// The `scenario` tag alone (or nothing), for the samples that carry no
    /// VU tags: failed and dropped iterations.
    pub scenario_tag: Vec<(String, String)>,
}

impl ScenarioContext {
    /// The context of `scenario`, one of `spec`'s.
    pub fn of(spec: &RunSpec, scenario: &ScenarioSpec) -> ScenarioContext {
        let mut env = spec.env.clone();
        env.extend(scenario.env.clone());
        let (tags, scenario_tag) = if spec.has_named_scenarios() {
            let tag = (SCENARIO_TAG.to_owned(), scenario.name.clone());
            let mut tags = scenario.tags.clone();
            tags.insert(tag.0.clone(), tag.1.clone());
            (tags, vec![tag])
        } else {
            (scenario.tags.clone(), Vec::new())
        };
        ScenarioContext {
            exec: Some(scenario.exec_name().to_owned()),
            env,
            tags,
            scenario_tag,
        }
    }

    /// The context of the instance that runs `setup` and `teardown`: the
    /// run's parameters, no tags.
    pub fn lifecycle(spec: &RunSpec) -> ScenarioContext {
        ScenarioContext {
            exec: None,
            env: spec.env.clone(),
            tags: BTreeMap::new(),
            scenario_tag: Vec::new(),
        }
    }

    /// `key` with the `scenario` tag, for a sample that carries no VU tags.
    pub fn key(&self, metric: &str, tags: impl IntoIterator<Item = (String, String)>) -> SeriesKey {
        SeriesKey::new(
            metric,
            tags.into_iter().chain(self.scenario_tag.iter().cloned()),
        )
    }
}

/// Why a host function stopped the guest.
#[derive(Debug, thiserror::Error)]
pub enum HostTrap {
    /// The iteration ran past its timeout.
    #[error("the iteration ran past its timeout")]
    Timeout,
    /// The run stopped.
    #[error("the run stopped")]
    Stopped,
    /// The guest broke the ABI.
    #[error("scenario ABI violation: {0}")]
    Abi(String),
}

/// Per-instance memory cap that remembers whether it was hit.
struct Limits {
    max_memory: usize,
    hit: bool,
}

impl ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let ok = desired <= self.max_memory;
        self.hit |= !ok;
        Ok(ok)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// The host-side state of one VU, inside its Store.
pub struct VuState {
    pub(super) wasi: WasiP1Ctx,
    limits: Limits,
    pub(super) vu_id: u64,
    pub(super) iteration: u64,
    /// What the last host call left for `result_read`.
    pub(super) result: Vec<u8>,
    /// Open groups: full path and start.
    groups: Vec<(String, Instant)>,
    tags: BTreeMap<String, String>,
    /// `tags` plus the current group, sorted: kept up to date, because every
    /// sample the VU records carries them.
    base: Vec<(String, String)>,
    pub(super) http: HttpClient,
    /// Where its HTTP host calls hand their requests while an iteration
    /// runs ([`super::courier`]).
    pub(super) courier: Arc<Courier>,
    /// Whether the current call into the guest is driven with the courier.
    pub(super) driven: bool,
    /// Its WebSockets, all closed at the end of each call into the guest.
    pub(super) ws: WsClient,
    /// Where its stdout and stderr go, escaped and rate-limited.
    output: Arc<VuOutput>,
    /// The instance's exported memory, once it is instantiated.
    pub(super) memory: Option<Memory>,
    pub(super) run: Arc<RunContext>,
    /// The scenario this VU belongs to.
    pub(super) scenario: Arc<ScenarioContext>,
    /// The current call must finish by then.
    pub(super) deadline: Instant,
    /// What the scenario said as it panicked in the current call (see
    /// [`super::host`]'s `log`, level [`fusi_sdk::abi::PANIC_LEVEL`]).
    pub(super) panic: Option<String>,
    /// What this VU's `setup` returned (the lifecycle instance only).
    pub(super) setup_out: Option<Vec<u8>>,
    /// The statuses this VU expects, when its scenario set them; else the
    /// run's.
    pub(super) expected_statuses: Option<ExpectedStatuses>,
}

impl VuState {
    /// `::outer::inner`, or empty outside any group.
    pub(super) fn group_path(&self) -> &str {
        self.groups.last().map(|(p, _)| p.as_str()).unwrap_or("")
    }

    /// The VU's tags plus its group: the tags of every sample it records.
    pub(super) fn base_tags(&self) -> &[(String, String)] {
        &self.base
    }

    /// The VU's tags with `group` set to `path`.
    pub(super) fn tags_with_group(&self, path: &str) -> Vec<(String, String)> {
        let mut tags: Vec<(String, String)> = self
            .tags
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !path.is_empty() {
            tags.push(("group".into(), path.to_owned()));
        }
        tags.sort();
        tags
    }

    fn refresh_base(&mut self) {
        self.base = self.tags_with_group(self.group_path());
    }

    /// Closes the sockets a call into the guest left open (dropping them
    /// when the run stops), recording their sessions' ends.
    async fn close_sockets(&mut self) {
        if self.ws.open_count() == 0 {
            return;
        }
        let stopping = self.run.stop.is_cancelled();
        self.ws.close_all(stopping, &self.run.recorder).await;
    }

    /// Open groups.
    pub(super) fn group_depth(&self) -> usize {
        self.groups.len()
    }

    /// Enters a group whose full path is `path`.
    pub(super) fn enter_group(&mut self, path: String) {
        self.groups.push((path, Instant::now()));
        self.refresh_base();
    }

    /// Leaves the innermost group: its path and when it was entered.
    pub(super) fn exit_group(&mut self) -> Option<(String, Instant)> {
        let g = self.groups.pop();
        self.refresh_base();
        g
    }

    /// The VU's own tags.
    pub(super) fn tags(&self) -> &BTreeMap<String, String> {
        &self.tags
    }

    /// Sets a VU tag.
    pub(super) fn set_tag(&mut self, key: String, value: String) {
        self.tags.insert(key, value);
        self.refresh_base();
    }

    /// Removes a VU tag.
    pub(super) fn remove_tag(&mut self, key: &str) {
        self.tags.remove(key);
        self.refresh_base();
    }
}

/// How an iteration ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It returned.
    Completed,
    /// It failed; the reason is the `reason` tag of `iterations_failed`.
    Failed(&'static str),
    /// The run stopped while it was running.
    Interrupted,
}

/// A VU that could not be created.
#[derive(Debug, thiserror::Error)]
#[error("VU {vu}: {message}")]
pub struct VuError {
    /// Which VU.
    pub vu: u64,
    /// What went wrong.
    pub message: String,
}

/// One virtual user.
pub struct Vu {
    id: u64,
    module: Arc<ScenarioModule>,
    store: Store<VuState>,
    instance: Instance,
    /// The scenario's `exec` function; `None` in the lifecycle instance.
    iteration_fn: Option<TypedFunc<(), ()>>,
    /// The timer behind every iteration's deadline.
    backstop: Backstop,
    /// The run's stop, waited for across iterations: made once, not each
    /// iteration, and polled only once it woke. Boxed: a VU is moved at
    /// each iteration, and a larger one is moved by `memcpy`.
    stopped: Box<Woken<Pin<Box<WaitForCancellationFutureOwned>>>>,
    /// The store's courier, held here too: an iteration drives it while
    /// the store is lent to the guest's call.
    courier: Arc<Courier>,
}

impl Vu {
    /// Instantiates the module for VU `id` of `scenario` and runs its `init`.
    pub async fn new(
        module: Arc<ScenarioModule>,
        run: Arc<RunContext>,
        scenario: Arc<ScenarioContext>,
        id: u64,
    ) -> Result<Vu, VuError> {
        let http = HttpClient::new(run.tls.clone());
        Vu::instantiate(module, run, scenario, id, 0, http, VuOutput::new(id), true).await
    }

    /// An instance for the once-per-run entry points (`setup`, `teardown`)
    /// and the ABI check: VU id 0, and no `init`.
    pub async fn for_lifecycle(
        module: Arc<ScenarioModule>,
        run: Arc<RunContext>,
        scenario: Arc<ScenarioContext>,
    ) -> Result<Vu, VuError> {
        let http = HttpClient::new(run.tls.clone());
        Vu::instantiate(module, run, scenario, 0, 0, http, VuOutput::new(0), false).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn instantiate(
        module: Arc<ScenarioModule>,
        run: Arc<RunContext>,
        scenario: Arc<ScenarioContext>,
        id: u64,
        iteration: u64,
        http: HttpClient,
        output: Arc<VuOutput>,
        run_init: bool,
    ) -> Result<Vu, VuError> {
        let err = |message: String| VuError { vu: id, message };
        let env: Vec<(&String, &String)> = scenario.env.iter().collect();
        let wasi = WasiCtxBuilder::new()
            .stdout(output.stream(Fd::Stdout))
            .stderr(output.stream(Fd::Stderr))
            .envs(&env)
            .args(&["scenario"])
            .build_p1();
        let state = VuState {
            wasi,
            limits: Limits {
                max_memory: usize::try_from(run.memory_limit).unwrap_or(usize::MAX),
                hit: false,
            },
            vu_id: id,
            iteration,
            result: Vec::new(),
            groups: Vec::new(),
            tags: scenario.tags.clone(),
            base: scenario.tags.clone().into_iter().collect(),
            http,
            courier: Arc::default(),
            driven: false,
            ws: WsClient::new(run.tls.clone()),
            output,
            memory: None,
            deadline: Instant::now() + run.iteration_timeout,
            panic: None,
            setup_out: None,
            expected_statuses: None,
            run,
            scenario: scenario.clone(),
        };
        let mut store = Store::new(module.engine(), state);
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|ctx| {
            let state = ctx.data();
            if state.run.stop.is_cancelled() {
                Err(wasmtime::Error::new(HostTrap::Stopped))
            } else if Instant::now() >= state.deadline {
                Err(wasmtime::Error::new(HostTrap::Timeout))
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        let instance = module
            .pre()
            .instantiate_async(&mut store)
            .await
            .map_err(|e| err(format!("cannot instantiate the scenario: {e:#}")))?;
        store.data_mut().memory = instance.get_memory(&mut store, exports::MEMORY);
        let iteration_fn = match &scenario.exec {
            Some(exec) => Some(
                instance
                    .get_typed_func::<(), ()>(&mut store, exec)
                    .map_err(|e| err(format!("the scenario's function `{exec}`: {e:#}")))?,
            ),
            None => None,
        };
        let stopped = Box::new(Woken::new(Box::pin(
            store.data().run.stop.clone().cancelled_owned(),
        )));
        let courier = store.data().courier.clone();
        let mut vu = Vu {
            id,
            module: module.clone(),
            store,
            instance,
            iteration_fn,
            backstop: Backstop::default(),
            stopped,
            courier,
        };
        if run_init && module.has_init() {
            let init = instance
                .get_typed_func::<(), ()>(&mut vu.store, exports::INIT)
                .map_err(|e| err(format!("{e:#}")))?;
            vu.arm();
            let result = init.call_async(&mut vu.store, ()).await;
            vu.close_left_open().await;
            if let Err(e) = result {
                return Err(err(format!("`init` failed: {}", vu.failure_text(&e))));
            }
        }
        Ok(vu)
    }

    /// The module's ABI version, from its `fusi_abi_version` export.
    pub async fn abi_version(&mut self) -> Result<i64, String> {
        let f = self
            .instance
            .get_typed_func::<(), i32>(&mut self.store, exports::ABI_VERSION)
            .map_err(|e| format!("{e:#}"))?;
        self.arm();
        f.call_async(&mut self.store, ())
            .await
            .map(i64::from)
            .map_err(|e| format!("`{}` failed: {e:#}", exports::ABI_VERSION))
    }

    /// This VU's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    fn arm(&mut self) {
        self.arm_at(Instant::now());
    }

    /// Arms the deadline of a call that starts at `now`.
    fn arm_at(&mut self, now: Instant) {
        let timeout = self.store.data().run.iteration_timeout;
        let state = self.store.data_mut();
        state.deadline = now + timeout;
        state.panic = None;
    }

    /// Why a call into the guest failed, as a user reads it: the
    /// scenario's panic message when it panicked, else the error's chain,
    /// without wasmtime's backtrace of functions that have no names.
    fn failure_text(&self, e: &wasmtime::Error) -> String {
        match &self.store.data().panic {
            // The scenario's own words, which reach terminals and reports.
            Some(message) => format!("the scenario {}", escape_controls(message.chars())),
            None => describe(e),
        }
    }

    /// Runs a once-per-run entry point (`setup` or `teardown`) in this VU.
    /// What `setup` returned in this instance, if it returned anything;
    /// the instance keeps it for its `teardown`.
    pub fn setup_data(&self) -> Option<Vec<u8>> {
        self.store.data().setup_out.clone()
    }

    pub async fn call_entry(&mut self, name: &str) -> Result<(), String> {
        let f = self
            .instance
            .get_typed_func::<(), ()>(&mut self.store, name)
            .map_err(|e| format!("{e:#}"))?;
        self.arm();
        let result = f.call_async(&mut self.store, ()).await;
        self.store.data_mut().close_sockets().await;
        match result {
            Ok(()) => Ok(()),
            Err(e) => Err(format!("`{name}` failed: {}", self.failure_text(&e))),
        }
    }

    /// Runs one iteration and records it. `scheduled` is when it was meant
    /// to start: iteration_duration counts from there, so waiting for a free
    /// VU is not hidden. `now` is the clock as the caller read it just
    /// before (the executors read it anyway): the iteration's deadline
    /// counts from there.
    pub async fn iterate(self, scheduled: Instant, now: Instant) -> (Option<Vu>, Outcome) {
        let mut vu = self;
        vu.arm_at(now);
        let deadline = vu.store.data().deadline;
        // Borrowed, field by field: an `Arc` cloned each iteration is two
        // atomic operations, and the function's type about eight.
        let Vu {
            store,
            iteration_fn,
            backstop,
            stopped,
            courier,
            ..
        } = &mut vu;
        let Some(iteration_fn) = iteration_fn.as_ref() else {
            // Only the lifecycle instance has none, and it runs no iteration.
            return (Some(vu), Outcome::Failed("abi"));
        };
        // The epoch callback and fusi's own host calls honour the deadline
        // and the stop; a host call that does not (a WASI sleep) is cut here,
        // a moment later, by dropping the call, which wasmtime unwinds.
        store.data_mut().driven = true;
        let result = tokio::select! {
            biased;
            r = drive(courier, iteration_fn.call_async(&mut *store, ())) => Some(r),
            () = std::future::poll_fn(|cx| backstop.poll_passed(deadline + BACKSTOP, cx)) => None,
            // Outside tokio's budget: a request in flight on this task may
            // have spent it ([`super::backstop`]).
            () = tokio::task::unconstrained(async {
                stopped.await;
                tokio::time::sleep(BACKSTOP).await;
            }) => None,
        };
        vu.store.data_mut().driven = false;
        let outcome = match &result {
            Some(Ok(())) => Outcome::Completed,
            Some(Err(e)) => vu.classify(e),
            None if vu.store.data().run.stop.is_cancelled() => Outcome::Interrupted,
            None => Outcome::Failed("timeout"),
        };
        // After the iteration's time is taken: closing what it left open
        // is the host's work, not the scenario's.
        vu.close_left_open().await;
        let state = vu.store.data();
        let (run, scenario) = (&state.run, &state.scenario);
        match outcome {
            Outcome::Completed => {
                let ms = scheduled.elapsed().as_secs_f64() * 1000.0;
                // Base tags are sorted and unique already.
                run.recorder.iteration(state.base_tags(), ms);
            }
            Outcome::Failed(_) | Outcome::Interrupted => {
                let reason = match outcome {
                    Outcome::Failed(r) => r,
                    _ => "interrupted",
                };
                run.recorder.add(
                    scenario.key(
                        names::ITERATIONS_FAILED,
                        [("reason".to_owned(), reason.to_owned())],
                    ),
                    MetricKind::Counter,
                    1.0,
                );
                if outcome != Outcome::Interrupted && run.iteration_failures.note(reason) {
                    let text = match &result {
                        Some(Err(e)) => vu.failure_text(e),
                        _ => "it ran past its deadline in a host call, and was cut".to_owned(),
                    };
                    // The text is the scenario's: no control character of
                    // it reaches the terminal.
                    tracing::warn!(
                        "iteration failed ({reason}, VU {}): {}",
                        vu.id,
                        escape_controls(text.chars())
                    );
                    run.recorder.note(format!("iteration:{reason}"), text);
                }
            }
        }
        vu.store.data_mut().iteration += 1;
        if outcome == Outcome::Completed {
            return (Some(vu), outcome);
        }
        if vu.store.data().run.stop.is_cancelled() {
            return (None, outcome);
        }
        // The instance may be broken: start the VU afresh, keeping its connections.
        let Vu {
            id, module, store, ..
        } = vu;
        let state = store.into_data();
        // Boxed: instantiating is a large future, and a rare one.
        match Box::pin(Vu::instantiate(
            module,
            state.run.clone(),
            state.scenario.clone(),
            id,
            state.iteration,
            state.http,
            state.output,
            true,
        ))
        .await
        {
            Ok(vu) => (Some(vu), outcome),
            Err(e) => {
                tracing::error!("{e}; the VU stops");
                (None, outcome)
            }
        }
    }

    /// Closes the sockets an iteration (or `init`) left open. Boxed, and
    /// only with sockets open: closing is a large future (a WebSocket's
    /// closing handshake), and the futures that await it would be as
    /// large, an iteration's among them, which every VU holds as long as
    /// it runs (a VU's task was 3.6 KiB with the close inline, and is 1.6).
    async fn close_left_open(&mut self) {
        if self.store.data().ws.open_count() > 0 {
            Box::pin(self.store.data_mut().close_sockets()).await;
        }
    }

    fn classify(&self, e: &wasmtime::Error) -> Outcome {
        if self.store.data().panic.is_some() {
            return Outcome::Failed("panic");
        }
        if let Some(trap) = e.downcast_ref::<HostTrap>() {
            return match trap {
                HostTrap::Timeout => Outcome::Failed("timeout"),
                HostTrap::Stopped => Outcome::Interrupted,
                HostTrap::Abi(_) => Outcome::Failed("abi"),
            };
        }
        if e.downcast_ref::<wasmtime_wasi::I32Exit>().is_some() {
            return Outcome::Failed("exit");
        }
        if self.store.data().limits.hit {
            return Outcome::Failed("memory");
        }
        Outcome::Failed("trap")
    }
}

/// An error from a call into the guest, as one line: each cause in turn,
/// without wasmtime's "error while executing at wasm backtrace" part, whose
/// frames are `<unknown>` in a module built without symbols (the example
/// scenarios strip theirs) and say nothing a user can act on.
pub fn describe(e: &wasmtime::Error) -> String {
    let parts: Vec<String> = e
        .chain()
        .map(|cause| cause.to_string())
        .filter(|text| !text.starts_with("error while executing at wasm backtrace"))
        .collect();
    if parts.is_empty() {
        e.root_cause().to_string()
    } else {
        parts.join(": ")
    }
}
