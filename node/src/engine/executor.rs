//! Executors: how a node's share of a run turns into iterations over time.
//!
//! [`ShareRunner::prepare`] initializes the share's VUs before the start
//! instant (so instantiation and `init` never eat into the measured time);
//! [`Prepared::run`] waits for the start instant and drives them as the spec's
//! executor says. The numbers always come from the share's
//! [`ExecutionSegment`](crate::core::segment::ExecutionSegment) and the
//! schedules in [`core::schedule`](crate::core::schedule), so the same code
//! runs the whole load on one machine or a slice of it on each node of a mesh.
//!
//! A share may grow while it runs: when another node of the run is lost,
//! the leader hands parts of its share on ([`TakeOver`]), and the running
//! share adds them from the instant they are due, in the same shards: more
//! VUs for a closed model, another dispatcher over the part for an arrival
//! rate (its arrivals due before the handoff are not this node's).
//!
//! Every task asks the share's [`Gate`](super::gate::Gate) before it
//! sends: a node that was frozen long enough to be handed on sends nothing
//! more.
//!
//! Closed executors run one task per VU that loops. Arrival-rate executors
//! run one dispatcher that starts each owned iteration at its due time on an
//! idle VU, or on the next VU to finish within [`VU_WAIT`], or counts it as
//! dropped (and initializes one more VU in the background, one at a time,
//! up to the share of `max_vus`). An iteration whose due time passed more
//! than [`MAX_LATE`] ago (the node was frozen, or starved of CPU) is
//! dropped too, not started late: a node that wakes up never sends the
//! load it missed in one burst.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use fusi_sdk::abi::MetricKind;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::module::ScenarioModule;
use super::timer::{FineTimer, GRAIN};
use super::vu::{RunContext, ScenarioContext, Vu, VuError};
use crate::core::metrics::{SeriesKey, names};
use crate::core::schedule::{ArrivalSchedule, ramp_value};
use crate::core::segment::ExecutionSegment;
use crate::core::spec::{Executor, RunSpec, Share};

/// Part of a lost node's share, to run besides this node's own.
#[derive(Debug, Clone)]
pub struct TakeOver {
    /// The part (its VUs' ids follow from its segment, scenario by
    /// scenario: see [`RunSpec::first_vu_id`]).
    pub share: Share,
    /// From when, after the start: arrivals due before are not this
    /// node's; VUs start at once.
    pub since: Duration,
}

/// Live numbers of a running share, for progress display and gauges.
#[derive(Debug, Default)]
pub struct Progress {
    /// VUs busy with an iteration (or looping, for closed executors).
    pub active_vus: AtomicU64,
    /// VUs initialized.
    pub initialized_vus: AtomicU64,
}

/// Runs one share of a run: the share of each of its scenarios.
pub struct ShareRunner {
    scenarios: Vec<ScenarioRunner>,
    run: Arc<RunContext>,
    graceful_stop: Duration,
    /// When the last scenario ends, after the start.
    duration: Duration,
}

/// Runs the share of one scenario.
struct ScenarioRunner {
    module: Arc<ScenarioModule>,
    run: Arc<RunContext>,
    scenario: Arc<ScenarioContext>,
    executor: Executor,
    /// When it starts, after the run's start.
    start_time: Duration,
    /// The run, for its VU ids.
    spec: Arc<RunSpec>,
    /// Its place among the run's scenarios.
    index: usize,
    share: Share,
    progress: Arc<Progress>,
}

/// A share whose VUs are initialized and waiting for the start instant.
pub struct Prepared {
    runner: ShareRunner,
    vus: Vec<Vec<Vu>>,
}

impl ShareRunner {
    /// A runner for `share` of `spec`.
    pub fn new(
        module: Arc<ScenarioModule>,
        run: Arc<RunContext>,
        spec: &RunSpec,
        share: Share,
        progress: Arc<Progress>,
    ) -> Self {
        let shared = Arc::new(spec.clone());
        let scenarios = spec
            .scenarios
            .iter()
            .enumerate()
            .map(|(index, scenario)| ScenarioRunner {
                module: module.clone(),
                run: run.clone(),
                scenario: Arc::new(ScenarioContext::of(spec, scenario)),
                executor: scenario.executor.clone(),
                start_time: scenario.start_time,
                spec: shared.clone(),
                index,
                share: share.clone(),
                progress: progress.clone(),
            })
            .collect();
        ShareRunner {
            scenarios,
            run,
            graceful_stop: spec.graceful_stop,
            duration: spec.duration(),
        }
    }

    /// Initializes the VUs each scenario needs before the start.
    pub async fn prepare(self) -> Result<Prepared, VuError> {
        let mut vus = Vec::with_capacity(self.scenarios.len());
        for scenario in &self.scenarios {
            let n = scenario
                .share
                .segment
                .scale(u64::from(scenario.executor.initial_vus()));
            let mut mine = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
            for i in 0..n {
                mine.push(scenario.new_vu(&scenario.share.segment, i).await?);
            }
            vus.push(mine);
        }
        Ok(Prepared { runner: self, vus })
    }
}

impl ScenarioRunner {
    /// VU `index` of the part `segment` of this scenario: ids follow the
    /// scenarios before it, then the segments' offsets, so no two VUs of a
    /// run share one.
    async fn new_vu(&self, segment: &ExecutionSegment, index: u64) -> Result<Vu, VuError> {
        let first = self.spec.first_vu_id(self.index, segment);
        let vu = Vu::new(
            self.module.clone(),
            self.run.clone(),
            self.scenario.clone(),
            first + index,
        )
        .await?;
        self.progress
            .initialized_vus
            .fetch_add(1, Ordering::Relaxed);
        Ok(vu)
    }

    /// Waits for the scenario's start, then drives its VUs as its
    /// executor says until its end.
    async fn drive(self: Arc<Self>, vus: Vec<Vu>, run_start: Instant) {
        let start = run_start + self.start_time;
        tokio::select! {
            () = tokio::time::sleep_until(start) => {}
            () = self.run.stop.cancelled() => return,
        }
        let end = start + self.executor.duration();
        let mut tasks = JoinSet::new();
        match self.executor.clone() {
            Executor::ConstantVus { .. } => {
                for vu in vus {
                    tasks.spawn(looping(self.clone(), vu, end, Budget::Unlimited));
                }
            }
            Executor::PerVuIterations { iterations, .. } => {
                for vu in vus {
                    tasks.spawn(looping(self.clone(), vu, end, Budget::PerVu(iterations)));
                }
            }
            Executor::SharedIterations { iterations, .. } => {
                let left = Arc::new(AtomicU64::new(self.share.segment.scale(iterations)));
                for vu in vus {
                    tasks.spawn(looping(self.clone(), vu, end, Budget::Shared(left.clone())));
                }
            }
            Executor::RampingVus { .. } => {
                tasks.spawn(ramp(self.clone(), self.share.segment, vus, start, end));
            }
            Executor::ConstantArrivalRate { .. } | Executor::RampingArrivalRate { .. } => {
                let share = self.share.clone();
                tasks.spawn(dispatch(self.clone(), share, vus, start, Duration::ZERO));
            }
        }
        while tasks.join_next().await.is_some() {}
    }
}

impl Prepared {
    /// VUs ready.
    pub fn vus(&self) -> usize {
        self.vus.iter().map(Vec::len).sum()
    }

    /// Waits for `start`, runs each scenario from its start time to its
    /// end (adding the parts of other nodes' shares that come on
    /// `takeovers` meanwhile), lets in-flight iterations finish within the
    /// graceful stop past the last scenario's end, then interrupts the rest.
    pub async fn run(self, start: Instant, mut takeovers: mpsc::UnboundedReceiver<TakeOver>) {
        let Prepared { runner, vus } = self;
        let ShareRunner {
            scenarios,
            run,
            graceful_stop,
            duration,
        } = runner;
        let scenarios: Vec<Arc<ScenarioRunner>> = scenarios.into_iter().map(Arc::new).collect();
        tokio::time::sleep_until(start).await;
        let end = start + duration;
        let mut tasks = JoinSet::new();
        // The gate's ticker runs beside the share, not among its tasks:
        // the share ends when its iterations do.
        let gate = run.gate.clone();
        gate.arm();
        let watcher = tokio::spawn(async move { gate.watch().await });
        for (scenario, vus) in scenarios.iter().zip(vus) {
            tasks.spawn(scenario.clone().drive(vus, start));
        }
        // Parts handed on, until the last scenario's end (or until every
        // task is done, as an iteration executor's may be early).
        let mut listening = true;
        while listening {
            tokio::select! {
                part = takeovers.recv() => match part {
                    Some(part) => {
                        for scenario in &scenarios {
                            scenario.clone().take_over(part.clone(), start, &mut tasks);
                        }
                    }
                    None => listening = false,
                },
                done = tasks.join_next() => if done.is_none() { listening = false },
                () = tokio::time::sleep_until(end) => listening = false,
                () = run.stop.cancelled() => listening = false,
            }
        }
        let hard_stop = end + graceful_stop;
        let drained = tokio::time::timeout_at(hard_stop, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            run.stop.cancel();
            while tasks.join_next().await.is_some() {}
        }
        run.stop.cancel();
        watcher.abort();
    }
}

impl ScenarioRunner {
    /// Adds a part of another node's share of this scenario to this
    /// running share, from the part's instant or the scenario's start,
    /// whichever is later.
    fn take_over(self: Arc<Self>, part: TakeOver, run_start: Instant, tasks: &mut JoinSet<()>) {
        let start = run_start + self.start_time;
        let end = start + self.executor.duration();
        if Instant::now() >= end {
            // This scenario is over: nothing of it to take.
            return;
        }
        // The handoff is timed from the run's start, the scenario from its own.
        let since = part.since.saturating_sub(self.start_time);
        match self.executor.clone() {
            Executor::ConstantArrivalRate { .. } | Executor::RampingArrivalRate { .. } => {
                tasks.spawn(dispatch(self, part.share, Vec::new(), start, since));
            }
            Executor::ConstantVus { vus, .. } => {
                let n = part.share.segment.scale(u64::from(vus));
                tasks.spawn(async move {
                    if !self.wait_for(start).await {
                        return;
                    }
                    let mut loops = JoinSet::new();
                    for i in 0..n {
                        match self.new_vu(&part.share.segment, i).await {
                            Ok(vu) => {
                                loops.spawn(looping(self.clone(), vu, end, Budget::Unlimited));
                            }
                            Err(e) => {
                                tracing::error!("cannot add a VU for a part taken over: {e}");
                                break;
                            }
                        }
                    }
                    while loops.join_next().await.is_some() {}
                });
            }
            Executor::RampingVus { .. } => {
                let n = part.share.segment.scale(u64::from(self.executor.max_vus()));
                tasks.spawn(async move {
                    if !self.wait_for(start).await {
                        return;
                    }
                    let mut vus = Vec::new();
                    for i in 0..n {
                        match self.new_vu(&part.share.segment, i).await {
                            Ok(vu) => vus.push(vu),
                            Err(e) => {
                                tracing::error!("cannot add a VU for a part taken over: {e}");
                                break;
                            }
                        }
                    }
                    ramp(self, part.share.segment, vus, start, end).await;
                });
            }
            Executor::PerVuIterations { .. } | Executor::SharedIterations { .. } => {
                tracing::warn!(
                    "a part of an iteration executor's share cannot be taken over; ignored"
                );
            }
        }
    }

    /// Whether more iterations may start: the run is not stopped, the
    /// share's gate is open, and its data has not run out.
    fn may_go_on(&self) -> bool {
        !self.run.stop.is_cancelled() && self.run.gate.open() && !self.run.data.ran_out()
    }

    /// Waits until `at`; false when the run stopped first.
    async fn wait_for(&self, at: Instant) -> bool {
        tokio::select! {
            () = tokio::time::sleep_until(at) => true,
            () = self.run.stop.cancelled() => false,
        }
    }
}

/// `ramping-vus` over `segment`: its VUs follow the ramp, as the
/// segment's part of the global target, until `end`.
async fn ramp(
    runner: Arc<ScenarioRunner>,
    segment: ExecutionSegment,
    vus: Vec<Vu>,
    start: Instant,
    end: Instant,
) {
    let Executor::RampingVus { start_vus, stages } = runner.executor.clone() else {
        return;
    };
    let (tx, rx) = watch::channel(0u64);
    let mut tasks = JoinSet::new();
    for (index, vu) in vus.into_iter().enumerate() {
        let rx = rx.clone();
        tasks.spawn(ramped(runner.clone(), vu, index as u64, rx, end));
    }
    let stop = runner.run.stop.clone();
    loop {
        let now = Instant::now();
        let global = ramp_value(
            f64::from(start_vus),
            &stages,
            now.saturating_duration_since(start),
        );
        tx.send_replace(segment.scale(global.floor().max(0.0) as u64));
        if now >= end || stop.is_cancelled() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    while tasks.join_next().await.is_some() {}
}

/// How many iterations a looping VU may run.
enum Budget {
    Unlimited,
    PerVu(u64),
    Shared(Arc<AtomicU64>),
}

impl Budget {
    fn take(&mut self) -> bool {
        match self {
            Budget::Unlimited => true,
            Budget::PerVu(n) => {
                let ok = *n > 0;
                *n = n.saturating_sub(1);
                ok
            }
            Budget::Shared(left) => left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok(),
        }
    }
}

async fn looping(runner: Arc<ScenarioRunner>, vu: Vu, end: Instant, mut budget: Budget) {
    let mut vu = Some(vu);
    runner.progress.active_vus.fetch_add(1, Ordering::Relaxed);
    while let Some(v) = vu.take() {
        let now = Instant::now();
        if now >= end
            || runner.run.stop.is_cancelled()
            || !runner.run.gate.open()
            || runner.run.data.ran_out()
            || !budget.take()
        {
            break;
        }
        vu = v.iterate(now, now).await.0;
    }
    runner.progress.active_vus.fetch_sub(1, Ordering::Relaxed);
}

async fn ramped(
    runner: Arc<ScenarioRunner>,
    vu: Vu,
    index: u64,
    mut target: watch::Receiver<u64>,
    end: Instant,
) {
    let mut vu = Some(vu);
    while let Some(v) = vu.take() {
        if Instant::now() >= end || runner.run.stop.is_cancelled() {
            break;
        }
        if index >= *target.borrow_and_update() {
            vu = Some(v);
            // Wait for the ramp to reach this VU; the controller updates every 50 ms.
            tokio::select! {
                r = target.changed() => if r.is_err() { break },
                () = tokio::time::sleep_until(end) => break,
                () = runner.run.stop.cancelled() => break,
            }
            continue;
        }
        if !runner.run.gate.open() || runner.run.data.ran_out() {
            break;
        }
        runner.progress.active_vus.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        vu = v.iterate(now, now).await.0;
        runner.progress.active_vus.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How late an arrival may start: past this, it is dropped.
pub const MAX_LATE: Duration = Duration::from_secs(1);

/// How long an arrival that finds every VU busy may wait for one to
/// finish ([`Pool`]); past this, it is dropped.
pub const VU_WAIT: Duration = Duration::from_millis(1);

/// How much of the schedule a dispatcher that fell behind sends at once
/// before it waits a [`GRAIN`] ([`CatchUp`]).
const CATCH_UP: Duration = Duration::from_millis(1);

/// How a dispatcher sends the arrivals whose instants passed while it
/// could not run (the node was busy, or the machine did not schedule it):
/// a [`CATCH_UP`]'s worth of the schedule, then a [`GRAIN`]'s wait, so it
/// catches up at about twice the rate.
///
/// Sent all at once, a few milliseconds' backlog took every idle VU, and
/// their requests, out together, waited for each other at the target and
/// on the node's core: the node measured its own queueing as the target's
/// latency (a p99 three times oha's at 50,000/s on 2 cores), and dropped
/// iterations for want of VUs. Arrivals sent late still count from their
/// instants in `iteration_duration`, so the lateness stays in the report.
#[derive(Debug, Default)]
struct CatchUp {
    /// When the first arrival sent late since the last wait was due.
    from: Option<Duration>,
}

impl CatchUp {
    /// An arrival goes out at its instant: nothing is behind.
    fn on_time(&mut self) {
        self.from = None;
    }

    /// Whether to wait a grain before the arrival due at `due`, whose
    /// instant passed `late` ago. One more than [`MAX_LATE`] late is
    /// dropped, not sent, so it never waits: a node that was frozen for
    /// seconds walks past that part of its backlog at once.
    fn waits(&mut self, due: Duration, late: Duration) -> bool {
        if late > MAX_LATE {
            return false;
        }
        match self.from {
            Some(from) if due.saturating_sub(from) < CATCH_UP => false,
            Some(_) => {
                self.from = Some(due);
                true
            }
            None => {
                self.from = Some(due);
                false
            }
        }
    }
}

/// A dispatcher's idle VUs, and the arrivals that found none, under one
/// lock: a VU that finishes either takes a waiting arrival or goes idle,
/// and an arrival either takes an idle VU or waits, so neither misses the
/// other on a runtime with several threads.
///
/// An arrival waits at most [`VU_WAIT`] from when it began to, and the
/// next VU to finish takes the oldest one still within its wait, itself,
/// with no round trip through the dispatcher. Dropped at once, a moment's
/// shortage (a burst of responses, the node's core taken for a
/// millisecond) dropped arrivals a VU was about to be free for, and each
/// drop asked for one more VU: more requests in flight at the next burst,
/// each waiting longer for the node's core to read its response.
#[derive(Debug, Default)]
struct Pool {
    inner: Mutex<PoolInner>,
    /// Arrivals that waited past [`VU_WAIT`], not yet counted as dropped.
    expired: AtomicU64,
}

#[derive(Debug, Default)]
struct PoolInner {
    /// Places of idle VUs in the dispatcher's `starts`; the last one to
    /// go idle is the next one used. Never non-empty while `waiting` is.
    idle: Vec<usize>,
    /// Each waiting arrival's instant, and until when it may wait.
    waiting: VecDeque<(Instant, Instant)>,
}

impl Pool {
    /// A pool whose VUs at `places` are idle, the last one first.
    fn with_idle(places: impl DoubleEndedIterator<Item = usize>) -> Pool {
        Pool {
            inner: Mutex::new(PoolInner {
                idle: places.rev().collect(),
                waiting: VecDeque::new(),
            }),
            expired: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, PoolInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An arrival due at `scheduled`, come at `now`: the idle VU to start
    /// it on, or none, and it waits.
    fn arrive(&self, scheduled: Instant, now: Instant) -> Option<usize> {
        let mut inner = self.lock();
        let place = inner.idle.pop();
        if place.is_none() {
            inner.waiting.push_back((scheduled, now + VU_WAIT));
        }
        place
    }

    /// The VU at `place` is free (it finished an iteration, or was just
    /// made): the arrival it takes, the oldest still within its wait, or
    /// none, and it is idle. The clock is read only when one waits.
    fn free(&self, place: usize, now: impl FnOnce() -> Instant) -> Option<Instant> {
        let mut inner = self.lock();
        if !inner.waiting.is_empty() {
            let now = now();
            while let Some((scheduled, until)) = inner.waiting.pop_front() {
                if now < until {
                    return Some(scheduled);
                }
                self.expired.fetch_add(1, Ordering::Relaxed);
            }
        }
        inner.idle.push(place);
        None
    }

    /// Until when the oldest waiting arrival may wait.
    fn first_deadline(&self) -> Option<Instant> {
        self.lock().waiting.front().map(|&(_, until)| until)
    }

    /// Takes out the arrivals whose wait is over at `now`, and returns how
    /// many expired since the last call.
    fn expire(&self, now: Instant) -> u64 {
        let mut inner = self.lock();
        while inner
            .waiting
            .front()
            .is_some_and(|&(_, until)| now >= until)
        {
            inner.waiting.pop_front();
            self.expired.fetch_add(1, Ordering::Relaxed);
        }
        drop(inner);
        self.expired.swap(0, Ordering::Relaxed)
    }

    /// Takes out every waiting arrival, and returns how many never started
    /// since the last [`Pool::expire`].
    fn drain(&self) -> u64 {
        let left = std::mem::take(&mut self.lock().waiting).len() as u64;
        left + self.expired.swap(0, Ordering::Relaxed)
    }

    /// Forgets the waiting arrivals: the run stopped.
    fn clear(&self) {
        self.lock().waiting.clear();
    }
}

/// What a dispatcher keeps between arrivals.
struct Dispatcher {
    runner: Arc<ScenarioRunner>,
    pool: Arc<Pool>,
    /// Where to send each VU its starts, by its place.
    starts: Vec<mpsc::Sender<Instant>>,
    tasks: JoinSet<()>,
    /// VUs made by [`grow`].
    made: mpsc::UnboundedReceiver<Vu>,
    /// Asks [`grow`] for one more VU.
    want: mpsc::Sender<()>,
    dropped_key: SeriesKey,
    /// The most VUs this share may run: its part of `max_vus`.
    max_vus: u64,
    /// Whether the log said that every VU it may run was busy.
    said_full: bool,
}

impl Dispatcher {
    fn dropped(&self, n: u64) {
        if n > 0 {
            self.runner
                .run
                .recorder
                .add(self.dropped_key.clone(), MetricKind::Counter, n as f64);
        }
    }

    /// Starts an arrival due at `scheduled` on the VU at `place`. A VU
    /// whose task ended (it could not go on) is never free again; should
    /// one be sent a start, the arrival is lost.
    fn start_on(&self, place: usize, scheduled: Instant) {
        if self.starts[place].try_send(scheduled).is_err() {
            self.dropped(1);
        }
    }

    /// Gives each VU made since a task, and an arrival if one waits; counts
    /// the arrivals whose wait is over at `now` as dropped, and then asks
    /// for one more VU.
    fn tend(&mut self, now: Instant) {
        while let Ok(vu) = self.made.try_recv() {
            let place = self.starts.len();
            let (tx, rx) = mpsc::channel(1);
            self.tasks.spawn(parked(
                self.runner.clone(),
                vu,
                rx,
                place,
                self.pool.clone(),
            ));
            self.starts.push(tx);
            if let Some(scheduled) = self.pool.free(place, || now) {
                self.start_on(place, scheduled);
            }
        }
        let expired = self.pool.expire(now);
        if expired > 0 {
            self.dropped(expired);
            // Short of VUs for longer than a wait: one more is asked for.
            let _ = self.want.try_send(());
            // As k6 says it: once, while the run goes on.
            if !self.said_full && self.starts.len() as u64 >= self.max_vus {
                self.said_full = true;
                tracing::warn!(
                    "arrivals are being dropped: all {} VUs this node may run (its share of \
                     --max-vus) are busy; raise --max-vus, or spread the rate over more nodes \
                     if this node's CPU is busy",
                    self.max_vus
                );
            }
        }
    }
}

/// Starts each arrival of `share`'s segment due from `since` on at its due
/// time, on an idle VU (adding VUs up to the segment's part of `max_vus`),
/// then waits for the iterations it started.
///
/// Each VU waits in a task of its own ([`parked`]) for the starts the
/// dispatcher hands it, so an arrival spawns no task and moves no VU: it
/// sends an instant. The VU that finished last is the next one used, so
/// a rate that needs few VUs keeps using the same few, whose memory and
/// connections are warm.
///
/// An arrival that finds no idle VU waits for the next to finish
/// ([`Pool`]); one whose wait of [`VU_WAIT`] is over is dropped, and asks
/// for one more VU, at once: the dispatcher wakes for it if no arrival is
/// due first. One [`grow`] task makes the VUs, one at a time: making a VU
/// takes CPU from the iterations in flight, so a start that ran short for
/// a moment (new connections, a stall) used to set off hundreds of VUs
/// made at once, which slowed every iteration and dropped more, until
/// `max_vus`.
async fn dispatch(
    runner: Arc<ScenarioRunner>,
    share: Share,
    vus: Vec<Vu>,
    start: Instant,
    since: Duration,
) {
    let Some(mut schedule) = ArrivalSchedule::for_executor(&runner.executor) else {
        return;
    };
    let max_vus = share.segment.scale(u64::from(runner.executor.max_vus()));
    let (made_tx, made_rx) = mpsc::unbounded_channel::<Vu>();
    let (want_tx, want_rx) = mpsc::channel::<()>(1);
    let mut d = Dispatcher {
        pool: Arc::new(Pool::with_idle(0..vus.len())),
        starts: Vec::with_capacity(vus.len()),
        tasks: JoinSet::new(),
        made: made_rx,
        want: want_tx,
        dropped_key: runner.scenario.key(names::DROPPED_ITERATIONS, []),
        runner,
        max_vus,
        said_full: false,
    };
    d.tasks.spawn(grow(
        d.runner.clone(),
        share.segment,
        vus.len() as u64..max_vus,
        want_rx,
        made_tx,
    ));
    for (place, vu) in vus.into_iter().enumerate() {
        let (tx, rx) = mpsc::channel(1);
        d.tasks
            .spawn(parked(d.runner.clone(), vu, rx, place, d.pool.clone()));
        d.starts.push(tx);
    }
    // Arrivals go out at their instants, not in tokio's 1 ms bursts.
    let mut timer = FineTimer::new();
    let mut catch_up = CatchUp::default();
    while let Some((index, due)) = schedule.next_due() {
        if due < since || !share.segment.owns(index) {
            continue;
        }
        let scheduled = start + due;
        // A wait that is over before this arrival is due is ended then.
        while let Some(deadline) = d.pool.first_deadline().filter(|&at| at < scheduled) {
            if deadline > Instant::now() {
                tokio::time::sleep_until(deadline).await;
            }
            d.tend(Instant::now().max(deadline));
        }
        let now = Instant::now();
        if scheduled > now {
            catch_up.on_time();
            timer.sleep_until(scheduled).await;
        } else if catch_up.waits(due, now.saturating_duration_since(scheduled)) {
            // The VUs answer what went out before more does.
            timer.sleep_until(now + GRAIN).await;
        } else {
            // Behind: no timer, but the VUs get their turn.
            tokio::task::consume_budget().await;
        }
        if !d.runner.may_go_on() {
            d.pool.clear();
            break;
        }
        let now = Instant::now();
        d.tend(now);
        if now.saturating_duration_since(scheduled) > MAX_LATE {
            d.dropped(1);
            continue;
        }
        if let Some(place) = d.pool.arrive(scheduled, now) {
            d.start_on(place, scheduled);
        }
    }
    // No more starts: each VU's task ends once its iteration has, and
    // what still waits once every VU's has was never started.
    let Dispatcher {
        runner,
        pool,
        starts,
        mut tasks,
        made,
        want,
        dropped_key,
        ..
    } = d;
    drop((starts, made, want, timer));
    while tasks.join_next().await.is_some() {}
    let left = pool.drain();
    if left > 0 {
        runner
            .run
            .recorder
            .add(dropped_key, MetricKind::Counter, left as f64);
    }
}

/// A VU of an arrival-rate executor: one iteration per start received,
/// and after each the oldest arrival waiting in the [`Pool`], until the
/// dispatcher sends no more or the VU cannot go on.
async fn parked(
    runner: Arc<ScenarioRunner>,
    vu: Vu,
    mut starts: mpsc::Receiver<Instant>,
    place: usize,
    pool: Arc<Pool>,
) {
    let progress = &runner.progress;
    let mut vu = vu;
    while let Some(mut scheduled) = starts.recv().await {
        loop {
            progress.active_vus.fetch_add(1, Ordering::Relaxed);
            let (next, _) = vu.iterate(scheduled, Instant::now()).await;
            progress.active_vus.fetch_sub(1, Ordering::Relaxed);
            match next {
                Some(next) => vu = next,
                None => return,
            }
            if !runner.may_go_on() {
                pool.clear();
                break;
            }
            match pool.free(place, Instant::now) {
                Some(next) => scheduled = next,
                None => break,
            }
        }
    }
}

/// Makes the VUs `indices` of `segment`, one each time one is wanted,
/// and hands each to the dispatcher through `back`.
async fn grow(
    runner: Arc<ScenarioRunner>,
    segment: ExecutionSegment,
    indices: std::ops::Range<u64>,
    mut wants: mpsc::Receiver<()>,
    back: mpsc::UnboundedSender<Vu>,
) {
    for index in indices {
        if wants.recv().await.is_none() {
            return;
        }
        match runner.new_vu(&segment, index).await {
            Ok(vu) => {
                if back.send(vu).is_err() {
                    return;
                }
            }
            Err(e) => tracing::error!("cannot add a VU: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lateness well within [`MAX_LATE`].
    const LATE: Duration = Duration::from_millis(5);

    /// The waits before each of `dues`, all [`LATE`].
    fn waits(catch_up: &mut CatchUp, dues: impl Iterator<Item = Duration>) -> Vec<Duration> {
        dues.filter(|&due| catch_up.waits(due, LATE)).collect()
    }

    #[test]
    fn a_backlog_goes_out_a_catch_up_at_a_time() {
        let mut catch_up = CatchUp::default();
        // 10 ms behind at 50,000 a second: an arrival every 20 µs.
        let dues = (0..500u64).map(|i| Duration::from_micros(20 * i));
        let waited = waits(&mut catch_up, dues);
        // One wait a millisecond of the schedule, the first after the
        // first millisecond's arrivals went out together.
        assert_eq!(waited.len(), 9, "{waited:?}");
        assert_eq!(waited[0], CATCH_UP);
        for pair in waited.windows(2) {
            assert_eq!(pair[1] - pair[0], CATCH_UP, "{waited:?}");
        }
    }

    #[test]
    fn an_arrival_on_time_ends_the_catch_up() {
        let mut catch_up = CatchUp::default();
        let ms = Duration::from_millis;
        assert!(!catch_up.waits(ms(0), LATE));
        catch_up.on_time();
        // A new backlog starts its own count: no wait for its first.
        assert!(!catch_up.waits(ms(5), LATE));
        assert!(!catch_up.waits(ms(5) + Duration::from_micros(999), LATE));
        assert!(catch_up.waits(ms(6), LATE));
    }

    #[test]
    fn arrivals_past_max_late_are_walked_past_without_a_wait() {
        let mut catch_up = CatchUp::default();
        // A node frozen for 3 s at 50,000 a second: the first 2 s of its
        // backlog are past saving.
        let past = MAX_LATE + Duration::from_millis(1);
        let dues = (0..100_000u64).map(|i| Duration::from_micros(20 * i));
        assert_eq!(dues.filter(|&due| catch_up.waits(due, past)).count(), 0);
        // The rest goes out a catch-up at a time, from its first.
        let rest = (100_000..150_000u64).map(|i| Duration::from_micros(20 * i));
        let waited = waits(&mut catch_up, rest);
        assert_eq!(waited.len(), 999, "{:?}", waited.first());
        assert_eq!(waited[0], Duration::from_secs(2) + CATCH_UP);
    }

    #[test]
    fn a_free_vu_takes_the_oldest_arrival_still_within_its_wait() {
        let pool = Pool::with_idle(0..0);
        let t0 = Instant::now();
        let us = Duration::from_micros;
        // The first came 2.5 ms late (the dispatcher was catching up): its
        // wait counts from then.
        assert_eq!(pool.arrive(t0, t0 + us(2_500)), None);
        assert_eq!(pool.arrive(t0 + us(100), t0 + us(100)), None);
        assert_eq!(pool.arrive(t0 + us(2_500), t0 + us(2_500)), None);
        assert_eq!(pool.first_deadline(), Some(t0 + us(2_500) + VU_WAIT));
        // At 3.2 ms the second waited past VU_WAIT: dropped, not started.
        let now = || t0 + us(3_200);
        assert_eq!(pool.free(7, now), Some(t0));
        assert_eq!(pool.free(7, now), Some(t0 + us(2_500)));
        assert_eq!(pool.free(7, now), None, "nothing waits: VU 7 is idle");
        assert_eq!(pool.expire(now()), 1, "the one that waited too long");
        assert_eq!(pool.expire(now()), 0, "counted once");
        // The next arrival takes the idle VU, and a VU free with nothing
        // waiting does not read the clock.
        assert_eq!(pool.arrive(t0 + us(4_000), t0 + us(4_000)), Some(7));
        assert_eq!(pool.free(7, || unreachable!("the clock read")), None);
        assert_eq!(pool.first_deadline(), None);
    }

    #[test]
    fn an_arrival_takes_the_vu_that_went_idle_last() {
        let pool = Pool::with_idle(0..3);
        let t0 = Instant::now();
        assert_eq!(pool.arrive(t0, t0), Some(0));
        assert_eq!(pool.arrive(t0, t0), Some(1));
        assert_eq!(pool.free(0, || t0), None);
        assert_eq!(pool.arrive(t0, t0), Some(0), "the warm one");
        assert_eq!(pool.arrive(t0, t0), Some(2));
        assert_eq!(pool.arrive(t0, t0), None, "all three busy: it waits");
        assert_eq!(pool.free(1, || t0), Some(t0), "and the next free takes it");
    }

    #[test]
    fn waiting_arrivals_are_counted_once_as_expired_or_left() {
        let pool = Pool::with_idle(0..0);
        let t0 = Instant::now();
        for i in 0..10u32 {
            let at = t0 + i * Duration::from_micros(250);
            assert_eq!(pool.arrive(at, at), None);
        }
        // At 2 ms the waits of the first five (to 1 ms) are over.
        let now = t0 + 2 * VU_WAIT;
        assert_eq!(pool.expire(now), 5);
        let sixth = t0 + 5 * Duration::from_micros(250);
        assert_eq!(pool.first_deadline(), Some(sixth + VU_WAIT));
        assert_eq!(pool.free(0, || now), Some(sixth));
        // Four never started: the dispatcher counts them dropped at the end.
        assert_eq!(pool.drain(), 4);
        assert_eq!(pool.drain(), 0);
        assert_eq!(pool.arrive(t0, t0), None);
        pool.clear();
        assert_eq!(pool.drain(), 0, "a stopped run's waits are forgotten");
    }
}
