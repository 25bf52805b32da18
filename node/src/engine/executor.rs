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
//! idle VU, or counts it as dropped when none is idle (and initializes one
//! more VU in the background, up to the share of `max_vus`). An iteration
//! whose due time passed more than [`MAX_LATE`] ago (the node was frozen,
//! or starved of CPU) is dropped too, not started late: a node that wakes
//! up never sends the load it missed in one burst.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use fusi_sdk::abi::MetricKind;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::module::ScenarioModule;
use super::vu::{RunContext, Vu, VuError};
use crate::core::metrics::{SeriesKey, names};
use crate::core::schedule::{ArrivalSchedule, ramp_value};
use crate::core::segment::ExecutionSegment;
use crate::core::spec::{Executor, RunSpec, Share};

/// Part of a lost node's share, to run besides this node's own.
#[derive(Debug, Clone)]
pub struct TakeOver {
    /// The part, and the first VU id of its VUs.
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

/// Runs one share of a run.
pub struct ShareRunner {
    module: Arc<ScenarioModule>,
    run: Arc<RunContext>,
    executor: Executor,
    graceful_stop: Duration,
    share: Share,
    progress: Arc<Progress>,
}

/// A share whose VUs are initialized and waiting for the start instant.
pub struct Prepared {
    runner: ShareRunner,
    vus: Vec<Vu>,
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
        ShareRunner {
            module,
            run,
            executor: spec.executor.clone(),
            graceful_stop: spec.graceful_stop,
            share,
            progress,
        }
    }

    async fn new_vu(&self, first_vu_id: u64, index: u64) -> Result<Vu, VuError> {
        let vu = Vu::new(self.module.clone(), self.run.clone(), first_vu_id + index).await?;
        self.progress
            .initialized_vus
            .fetch_add(1, Ordering::Relaxed);
        Ok(vu)
    }

    /// Initializes the VUs the executor needs before the start.
    pub async fn prepare(self) -> Result<Prepared, VuError> {
        let n = self
            .share
            .segment
            .scale(u64::from(self.executor.initial_vus()));
        let mut vus = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
        for i in 0..n {
            vus.push(self.new_vu(self.share.first_vu_id, i).await?);
        }
        Ok(Prepared { runner: self, vus })
    }
}

impl Prepared {
    /// VUs ready.
    pub fn vus(&self) -> usize {
        self.vus.len()
    }

    /// Waits for `start`, runs the executor to its end (adding the parts
    /// of other nodes' shares that come on `takeovers` meanwhile), lets
    /// in-flight iterations finish within the graceful stop, then
    /// interrupts the rest.
    pub async fn run(self, start: Instant, mut takeovers: mpsc::UnboundedReceiver<TakeOver>) {
        let Prepared { runner, vus } = self;
        let runner = Arc::new(runner);
        tokio::time::sleep_until(start).await;
        let end = start + runner.executor.duration();
        let mut tasks = JoinSet::new();
        // The gate's ticker runs beside the share, not among its tasks:
        // the share ends when its iterations do.
        let gate = runner.run.gate.clone();
        gate.arm();
        let watcher = tokio::spawn(async move { gate.watch().await });
        match runner.executor.clone() {
            Executor::ConstantVus { .. } => {
                for vu in vus {
                    tasks.spawn(looping(runner.clone(), vu, end, Budget::Unlimited));
                }
            }
            Executor::PerVuIterations { iterations, .. } => {
                for vu in vus {
                    tasks.spawn(looping(runner.clone(), vu, end, Budget::PerVu(iterations)));
                }
            }
            Executor::SharedIterations { iterations, .. } => {
                let left = Arc::new(AtomicU64::new(runner.share.segment.scale(iterations)));
                for vu in vus {
                    tasks.spawn(looping(
                        runner.clone(),
                        vu,
                        end,
                        Budget::Shared(left.clone()),
                    ));
                }
            }
            Executor::RampingVus { .. } => {
                tasks.spawn(ramp(runner.clone(), runner.share.segment, vus, start, end));
            }
            Executor::ConstantArrivalRate { .. } | Executor::RampingArrivalRate { .. } => {
                let share = runner.share.clone();
                tasks.spawn(dispatch(runner.clone(), share, vus, start, Duration::ZERO));
            }
        }
        // Parts handed on, until the executor's end (or until every task
        // is done, as an iteration executor's may be early).
        let mut listening = true;
        while listening {
            tokio::select! {
                part = takeovers.recv() => match part {
                    Some(part) => runner.clone().take_over(part, start, end, &mut tasks),
                    None => listening = false,
                },
                done = tasks.join_next() => if done.is_none() { listening = false },
                () = tokio::time::sleep_until(end) => listening = false,
                () = runner.run.stop.cancelled() => listening = false,
            }
        }
        let hard_stop = end + runner.graceful_stop;
        let drained = tokio::time::timeout_at(hard_stop, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            runner.run.stop.cancel();
            while tasks.join_next().await.is_some() {}
        }
        runner.run.stop.cancel();
        watcher.abort();
    }
}

impl ShareRunner {
    /// Adds a part of another node's share to this running share.
    fn take_over(
        self: Arc<Self>,
        part: TakeOver,
        start: Instant,
        end: Instant,
        tasks: &mut JoinSet<()>,
    ) {
        match self.executor.clone() {
            Executor::ConstantArrivalRate { .. } | Executor::RampingArrivalRate { .. } => {
                tasks.spawn(dispatch(self, part.share, Vec::new(), start, part.since));
            }
            Executor::ConstantVus { vus, .. } => {
                let n = part.share.segment.scale(u64::from(vus));
                tasks.spawn(async move {
                    let mut loops = JoinSet::new();
                    for i in 0..n {
                        match self.new_vu(part.share.first_vu_id, i).await {
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
                    let mut vus = Vec::new();
                    for i in 0..n {
                        match self.new_vu(part.share.first_vu_id, i).await {
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
}

/// `ramping-vus` over `segment`: its VUs follow the ramp, as the
/// segment's part of the global target, until `end`.
async fn ramp(
    runner: Arc<ShareRunner>,
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

async fn looping(runner: Arc<ShareRunner>, vu: Vu, end: Instant, mut budget: Budget) {
    let mut vu = Some(vu);
    runner.progress.active_vus.fetch_add(1, Ordering::Relaxed);
    while let Some(v) = vu.take() {
        if Instant::now() >= end
            || runner.run.stop.is_cancelled()
            || !runner.run.gate.open()
            || runner.run.data.ran_out()
            || !budget.take()
        {
            break;
        }
        vu = v.iterate(Instant::now()).await.0;
    }
    runner.progress.active_vus.fetch_sub(1, Ordering::Relaxed);
}

async fn ramped(
    runner: Arc<ShareRunner>,
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
        vu = v.iterate(Instant::now()).await.0;
        runner.progress.active_vus.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How late an arrival may start: past this, it is dropped.
pub const MAX_LATE: Duration = Duration::from_secs(1);

/// Starts each arrival of `share`'s segment due from `since` on at its due
/// time, on an idle VU (adding VUs up to the segment's part of `max_vus`),
/// then waits for the iterations it started.
async fn dispatch(
    runner: Arc<ShareRunner>,
    share: Share,
    vus: Vec<Vu>,
    start: Instant,
    since: Duration,
) {
    let Some(mut schedule) = ArrivalSchedule::for_executor(&runner.executor) else {
        return;
    };
    let mut tasks = JoinSet::new();
    let max_vus = share.segment.scale(u64::from(runner.executor.max_vus()));
    let mut total = vus.len() as u64;
    let mut idle = vus;
    let (back_tx, mut back_rx) = mpsc::unbounded_channel::<Vu>();
    let dropped_key = SeriesKey::new(names::DROPPED_ITERATIONS, []);
    while let Some((index, due)) = schedule.next_due() {
        if due < since || !share.segment.owns(index) {
            continue;
        }
        let scheduled = start + due;
        tokio::time::sleep_until(scheduled).await;
        // Reap finished iterations so the set stays as small as the VU count.
        while tasks.try_join_next().is_some() {}
        if runner.run.stop.is_cancelled() || !runner.run.gate.open() || runner.run.data.ran_out() {
            break;
        }
        while let Ok(vu) = back_rx.try_recv() {
            idle.push(vu);
        }
        if Instant::now().saturating_duration_since(scheduled) > MAX_LATE {
            runner
                .run
                .recorder
                .add(0, dropped_key.clone(), MetricKind::Counter, 1.0);
            continue;
        }
        match idle.pop() {
            Some(vu) => {
                let back = back_tx.clone();
                let progress = runner.progress.clone();
                progress.active_vus.fetch_add(1, Ordering::Relaxed);
                tasks.spawn(async move {
                    let (vu, _) = vu.iterate(scheduled).await;
                    progress.active_vus.fetch_sub(1, Ordering::Relaxed);
                    if let Some(vu) = vu {
                        let _ = back.send(vu);
                    }
                });
            }
            None => {
                runner
                    .run
                    .recorder
                    .add(0, dropped_key.clone(), MetricKind::Counter, 1.0);
                if total < max_vus {
                    let index = total;
                    total += 1;
                    let back = back_tx.clone();
                    let r = runner.clone();
                    let first = share.first_vu_id;
                    tasks.spawn(async move {
                        match r.new_vu(first, index).await {
                            Ok(vu) => {
                                let _ = back.send(vu);
                            }
                            Err(e) => tracing::error!("cannot add a VU: {e}"),
                        }
                    });
                }
            }
        }
    }
    while tasks.join_next().await.is_some() {}
}
