//! The run state machine: what every node knows and does about each run.
//!
//! A run goes Proposed → Assigned → Armed → Running → Complete (or Stopped,
//! or Failed). Every node holds the same record of a run, built from the
//! [`RunMessage`]s on the runs topic, and plays up to three parts in it:
//!
//! - **the proposer**, the node a run was submitted to, fixes the
//!   candidates (the members it sees alive, so a node that joins later
//!   takes no part) and proposes the run;
//! - **the leader**, computed alike on every node ([`Leadership`]: the first
//!   candidate alive in a rendezvous ranking, its term = its rank), assigns
//!   shares ([`assign`]), waits until every node of the plan is ready, picks
//!   the start instant T0 in its own clock, and declares the run finished
//!   when every node is done or lost;
//! - **a worker**, each node of the plan, prepares its share (fetches and
//!   compiles the module, initializes VUs), starts at T0 translated through
//!   its clock offset to the leader, and says when it really started and
//!   when it is done.
//!
//! Gossip is best effort, so every node re-sends what it is responsible for
//! once a second until the run is finished, and every message is idempotent.
//! A node obeys a leader's message only if its term is the highest it has
//! seen for that run. A leader that takes over before T0 makes a new plan
//! when the old one names a node that is gone or refused; after T0 it never
//! changes the plan, it only waits for the nodes to finish or be lost.
//!
//! No I/O happens here: the runtime calls in with what happened and the
//! time, and carries out the [`RunAction`]s that come back.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::assign::{self, Candidate};
#[cfg(doc)]
use crate::leader::Leadership;
use crate::leader::ranking;
use crate::module_spread;
use crate::run_report::{ExpectedNode, LoadPlan, Move, RunMeta};
use crate::segment::ExecutionSegment;
use crate::shard::Shard;
use crate::spec::{OnLoss, Share};
use crate::wire::{
    self, Assigned, Derivation, Finish, Handoff, Held, Live, NodeWords, Outcome, Plan, PlanId,
    PlanOnWire, Proposal, RUN_PROTOCOL, RunEnvelope, RunMessage, RunSignature, decode_run,
};

/// Time a share may take past its executor and graceful stop: setup,
/// teardown and sealing the last shard.
const SHARD_SLACK: Duration = Duration::from_secs(300);

/// What the mesh tells the run state machine.
pub trait MeshView {
    /// Whether `peer` is a member in good standing (heard from recently).
    /// This node always is.
    fn alive(&self, peer: &str) -> bool;
    /// `peer`'s wall clock minus this node's, and the error bound, in ns;
    /// `(0, 0)` for this node.
    fn offset(&self, peer: &str) -> Option<(i64, i64)>;
    /// Whether this node's clock estimates may still be settling after a
    /// step of its own wall clock: a leader picks no start instant then,
    /// since its members have not sampled its new clock yet.
    fn clock_settling(&self) -> bool {
        false
    }
    /// Whether `peer` holds an estimate of this node's clock, as its clock
    /// answers tell: a worker without one cannot translate its leader's T0.
    /// By default, yes.
    fn holds_my_clock(&self, _peer: &str) -> bool {
        true
    }
    /// Whether `peer` is known to be gone for good, not only silent: its
    /// connection closed and the redial was refused (its process is gone).
    fn dead(&self, _peer: &str) -> bool {
        false
    }
    /// Whether this node heard from `peer` within `within`, judged only on
    /// a peer that beats fast (it runs a share); otherwise whether it is
    /// alive. By default, whether it is alive.
    fn heard_within(&self, peer: &str, _within: Duration) -> bool {
        self.alive(peer)
    }
    /// The most VUs `peer` says it runs, as its own (signed) heartbeat
    /// says: a proposal's candidates may claim more, and a leader gives no
    /// node more than this. `None` when not known.
    fn capacity(&self, _peer: &str) -> Option<u32> {
        None
    }
}

/// The current time, both ways: `now` (monotonic, for timers) and `wall_ns`
/// (this node's wall clock, for T0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct At {
    /// Monotonic time. A runtime starts it at [`MONOTONIC_ORIGIN`], not at
    /// zero, so that an instant before the process started (T0 of a run
    /// taken back after a restart) is still an instant of this clock.
    pub now: Duration,
    /// Wall clock, ns since the Unix epoch.
    pub wall_ns: i64,
}

/// Where a runtime's monotonic clock ([`At::now`]) starts: further back
/// than the longest run lasts, so T0 of any run a restarted node takes back
/// lies after it. Below it, [`monotonic_of`] would clamp such a T0 to the
/// process's start, and the node would count the run's time from there.
pub const MONOTONIC_ORIGIN: Duration = Duration::from_secs(30 * 24 * 3600);

/// Timers of the run state machine.
#[derive(Debug, Clone)]
pub struct RunsConfig {
    /// How often a node re-sends what it is responsible for.
    pub republish: Duration,
    /// The least time between arming and T0.
    pub arm_lead: Duration,
    /// How long a node of the plan may take to get ready.
    pub ready_timeout: Duration,
    /// How long after its expected end a node that says nothing is lost.
    pub done_grace: Duration,
    /// How long a leader re-sends the finish.
    pub finish_republish_for: Duration,
    /// The most runs kept; the oldest finished ones go first.
    pub keep_runs: usize,
    /// Words of at most this many bytes (as CBOR) go with the finish's
    /// first copy: the copies gossip hands each node cost less than the
    /// ask for them, and the round trip it adds before a node can report
    /// (10 nodes: about 250 bytes; 80 nodes: about 2 KB).
    pub words_inline_bytes: usize,
}

impl Default for RunsConfig {
    fn default() -> Self {
        RunsConfig {
            republish: Duration::from_secs(1),
            arm_lead: Duration::from_millis(300),
            ready_timeout: Duration::from_secs(60),
            done_grace: Duration::from_secs(15),
            finish_republish_for: Duration::from_secs(10),
            keep_runs: 200,
            words_inline_bytes: 2048,
        }
    }
}

/// What the runtime is to do.
#[derive(Debug, Clone, PartialEq)]
pub enum RunAction {
    /// Send a message on the runs topic.
    Publish(RunEnvelope),
    /// Send a word of this node's (a `ready`, a `started` or a `done`) to these
    /// nodes alone, the run's leader and the node next in line
    /// ([`crate::wire::Request::Word`]): every node passing on every
    /// other's words made a run's traffic grow with its nodes.
    Tell {
        /// Whom to tell.
        to: Vec<String>,
        /// The word.
        env: RunEnvelope,
    },
    /// Ask `from` for what it holds of `run` ([`crate::wire::Request::Run`]):
    /// its `held` named a proposal, plan or arm this node lacks. Take each
    /// message of the answer as if `from` had gossiped it.
    Pull {
        /// The run.
        run: String,
        /// Whom to ask.
        from: String,
        /// Whether this node holds the run's proposal (the answer leaves
        /// it out).
        known: bool,
    },
    /// Prepare this node's share: get the module (from these peers, in
    /// order, unless it is cached), compile it, check the targets, initialize
    /// the VUs; then call [`RunsCore::prepared`] or [`RunsCore::refused`].
    /// Replaces any share of that run prepared before.
    Prepare {
        /// The run.
        run: String,
        /// The plan the share belongs to.
        plan: PlanId,
        /// The spec.
        spec: Box<crate::spec::RunSpec>,
        /// The share.
        share: Share,
        /// Peers that have the module.
        sources: Vec<String>,
    },
    /// Start the prepared share at this instant of this node's wall clock,
    /// then call [`RunsCore::started`], and [`RunsCore::finished`] at its end.
    Start {
        /// The run.
        run: String,
        /// When, ns since the Unix epoch, this node's clock.
        at_wall_ns: i64,
    },
    /// Drop a prepared share, or stop a running one (it then reports
    /// [`RunsCore::finished`]).
    Stop {
        /// The run.
        run: String,
    },
    /// Run part of a lost node's share besides this node's own, from
    /// `since` after the share's start to the executor's end, in the same
    /// shards (a [`Handoff`] names this node).
    TakeOver {
        /// The run.
        run: String,
        /// The part: its segment and first VU id.
        share: Share,
        /// From when, after the start.
        since: Duration,
    },
    /// Send the run's progress as merged here ([`RunMessage::Live`]): this
    /// node leads it, and the run's shards come to it. The driver fills
    /// in the scopes; the term and the words heard are filled in.
    Live {
        /// The run.
        run: String,
        /// The message, without its scopes.
        live: Live,
    },
}

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Submitted, no plan yet.
    Proposed,
    /// A plan, nodes getting ready.
    Assigned,
    /// T0 is set and not yet reached.
    Armed,
    /// Past T0.
    Running,
    /// Every node is done or lost.
    Complete,
    /// Stopped on request.
    Stopped,
    /// Could not run.
    Failed,
}

impl Phase {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Proposed => "proposed",
            Phase::Assigned => "assigned",
            Phase::Armed => "armed",
            Phase::Running => "running",
            Phase::Complete => "complete",
            Phase::Stopped => "stopped",
            Phase::Failed => "failed",
        }
    }
}

/// This node's own part in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Local {
    #[default]
    Idle,
    Preparing(PlanId),
    Prepared(PlanId),
    Refused,
    Started,
    Stopping,
    Finished,
}

/// The arm of a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Armed {
    /// The arming leader's term.
    pub term: u32,
    /// The plan started.
    pub plan: PlanId,
    /// T0, ns since the Unix epoch, in the arming leader's clock.
    pub t0_ns: i64,
    /// The leader whose clock T0 is in.
    pub by: String,
    /// Its signature of the arm, to pass the arm on unchanged (none on the
    /// arming leader itself, which signs each re-send afresh).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sig: Option<RunSignature>,
}

/// What a node tells a node that never heard of a run, once the run has
/// ended: enough to list it, report on it and fetch its shards. A node that
/// joins the mesh after a run learns of it this way (see
/// [`crate::sync`]), and takes no part in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndedRun {
    /// The run id.
    pub id: String,
    /// The run as submitted.
    pub proposal: Proposal,
    /// The plan it ran.
    pub plan: Plan,
    /// The arm it started with.
    pub armed: Option<Armed>,
    /// Real starts, in the leader's clock: (at, bound), ns.
    pub started: BTreeMap<String, (i64, i64)>,
    /// Nodes done: (shards sent, interrupted).
    pub done: BTreeMap<String, (u64, bool)>,
    /// How it ended.
    pub finish: Finish,
    /// The signature of the leader that declared the finish (its run
    /// message's), so a node told of the run can check who ended it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_sig: Option<RunSignature>,
}

/// Everything a node knows about one run. Serializable, so it survives a
/// restart (the runtime stores it in the data dir).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    /// The run id.
    pub id: String,
    /// The node it was submitted to.
    pub proposer: String,
    /// The run as submitted.
    pub proposal: Proposal,
    /// The leader's term, as far as this node has seen.
    pub term: u32,
    /// The latest plan obeyed.
    pub plan: Option<Plan>,
    /// Nodes ready, and for which plan.
    pub ready: BTreeMap<String, PlanId>,
    /// Nodes that refused, and why.
    pub refused: BTreeMap<String, String>,
    /// The arm obeyed.
    pub armed: Option<Armed>,
    /// Real starts, in the leader's clock: (at, bound), ns.
    pub started: BTreeMap<String, (i64, i64)>,
    /// Nodes done: (shards sent, interrupted).
    pub done: BTreeMap<String, (u64, bool)>,
    /// The node a stop was asked of.
    pub stop_by: Option<String>,
    /// Why it was stopped, when a threshold stopped it.
    #[serde(default)]
    pub stop_reason: Option<String>,
    /// Shares handed on after T0, by the node they were taken from.
    #[serde(default)]
    pub handoffs: BTreeMap<String, Handoff>,
    /// The leaders' signatures of the handoffs, to pass them on.
    #[serde(default)]
    handoff_sigs: BTreeMap<String, RunSignature>,
    /// The leader's signature of the finish, to pass it on.
    #[serde(default)]
    finish_sig: Option<RunSignature>,
    /// How it ended.
    pub finish: Option<Finish>,
    /// When this node learned of the run (wall clock, ns).
    pub seen_wall_ns: i64,
    /// The member whose message brought the proposal here (the signed
    /// source, which a proposal cannot forge as it can its `proposer`): its
    /// runs under way count against [`MAX_OPEN_FROM_ONE`]. `None` in
    /// records stored before it was kept, and for adopted ended runs.
    #[serde(default)]
    owner: Option<String>,
    local: Local,
    /// The latest progress of the whole run its leader sent (not kept:
    /// once the run ends, every node merges every shard).
    #[serde(skip)]
    pub live: Option<Live>,
    #[serde(skip)]
    timers: Timers,
    #[serde(skip)]
    ranked: std::sync::OnceLock<Vec<String>>,
    #[serde(skip)]
    candidate_ids: std::sync::OnceLock<BTreeSet<String>>,
    /// The digest of `plan` ([`Plan::digest`]), kept by [`Run::set_plan`];
    /// computed when asked for a plan restored from the data dir.
    #[serde(skip)]
    plan_digest: Option<Vec<u8>>,
    /// The plan this node made, as its derivation went out: sent again
    /// while nodes get ready ([`Hurry::Plan`]). Dropped with the plan.
    #[serde(skip)]
    derived: Option<PlanOnWire>,
    /// An arm of a plan this node lacks, and who sent it: followed once a
    /// plan with its digest comes, from any node.
    #[serde(skip)]
    pending_arm: Option<(String, RunEnvelope)>,
}

#[derive(Debug, Clone, Default)]
struct Timers {
    /// A message about the finished run came in: answer with the finish.
    straggler: bool,
    /// Stragglers this node left to the finish's holder, since it last
    /// passed that finish on itself.
    left_to_holder: u32,
    /// A node talks of another plan than the one armed: pass the arm on.
    unaware: bool,
    plan_at: Duration,
    /// When this node first knew the run (monotonic).
    known_at: Duration,
    last_publish: Option<Duration>,
    /// The last hurried re-send (of the plan or the arm alone).
    last_hurried: Option<Duration>,
    /// Re-sends since the run last moved: each doubles the wait before the
    /// next, up to [`MAX_QUIET_DOUBLINGS`].
    quiet: u32,
    /// Where the run stood at the last re-send.
    progress: Option<Progress>,
    stop_at: Option<Duration>,
    finished_at: Option<Duration>,
    /// T0 on this node's monotonic clock, fixed when this node first knew
    /// the arm and an estimate of the arming leader's clock: every local
    /// deadline of the run (its expected end, when a node is lost) counts
    /// from it, so a wall-clock step after that moves none of them.
    t0_at: Option<Duration>,
    /// The error bound of the clock estimate `t0_at` was anchored with, ns.
    t0_bound: i64,
    /// When this node first knew the arm (monotonic).
    armed_seen_at: Option<Duration>,
    /// The term this node holds and the plan it has, and since when
    /// (monotonic): a leader that neither plans nor arms in time is passed
    /// over.
    term_since: Option<((u32, Option<PlanId>), Duration)>,
    /// Nodes of the armed plan this leader believes gone, and since when.
    gone_since: BTreeMap<String, Duration>,
    /// Nodes whose handed-on parts this node was told to run.
    taken: BTreeSet<String>,
    /// When this node, leading, last sent the run's progress.
    live_at: Option<Duration>,
    /// Whether this node found itself cut off at this tick
    /// ([`RunsCore::cut_off`]).
    cut_off: bool,
    /// The others this node found silent while it was cut off in this
    /// run, until it hears each again ([`RunsCore::mind_the_cut`]).
    unheard_since_cut: BTreeSet<String>,
}

/// How far a run has come, as re-sending sees it: any change (a plan, an
/// arm, a node ready, started or done, a stop, the finish) means peers may
/// be behind, so the re-sends speed up again.
type Progress = (
    u32,
    Option<PlanId>,
    Option<(u32, PlanId)>,
    [usize; 5],
    bool,
    bool,
);

/// What the leader re-sends at four times the usual pace, alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hurry {
    /// The proposal, by its proposer until a plan exists (the leader may
    /// be a node that dropped it).
    Proposal,
    /// The plan and the proposal, while nodes get ready.
    Plan,
    /// The arm, until T0.
    Arm,
}

/// Between two `held` of the arming leader from the arm until T0. The arm
/// goes out about half a second before T0 at 1,000 nodes (the lead and
/// twice the largest clock bound); at a quarter second, one `held` fitted
/// in, and a node that lost both it and the arm (2 % each in the
/// simulator) started 210 ms late (1,000 nodes, seed 3). Four or five fit
/// in now: a `held` is about a hundred bytes.
const ARM_HELD_EVERY: Duration = Duration::from_millis(100);

/// The start's quiet: in the last `START_QUIET` before T0 the arming
/// leader sends no `held`, and in the first after it the leader sends no
/// progress and a node tells no one it started, so that at T0 the nodes'
/// cores are left to the start itself. Measured on 10 nodes of one 2-core
/// machine (docs/benchmarks.md, mesh): the arm's lead is three
/// [`ARM_HELD_EVERY`], so its third `held` went out about a millisecond
/// before T0, and the first progress went out at T0; each flood of the
/// gossip mesh (every copy's signature checked) kept both cores busy for
/// 10-20 ms, and the nodes that woke for T0 behind it started late.
pub const START_QUIET: Duration = Duration::from_millis(50);

/// How long a node that holds a finish without its words shows the run as
/// still going, while it asks for them.
const WORDS_WAIT: Duration = Duration::from_secs(5);

/// How long after making a plan its leader re-sends it four times a
/// second (while not every node is ready): what a node takes to get
/// ready, fetching and compiling the module, is about a second.
const HURRY_PLAN_FOR: Duration = Duration::from_secs(2);

/// How often the leader sends a run's progress while it goes.
pub const LIVE_EVERY: Duration = Duration::from_secs(1);

/// A run under way (every node of its plan started) that does not move
/// re-sends after 1, 2, then every 4 `republish` intervals: enough for a
/// node that missed a message to hear it again within seconds, while a long
/// run costs the mesh a quarter of the messages (docs/benchmarks.md, mesh).
/// Before that, every second, so a node that missed the arm starts late by
/// at most about a second.
const MAX_QUIET_DOUBLINGS: u32 = 2;

/// How many times a node that holds another node's finish leaves a
/// straggler to that holder, while it is alive, before passing the finish
/// on itself (with its words, 20 KB at 1,000 nodes, to the whole mesh).
const STRAGGLERS_LEFT_TO_HOLDER: u32 = 2;

impl Run {
    /// What a report of this run needs besides its shards: facts every
    /// node agrees on once the run is over (the plan, the finish).
    pub fn report_meta(&self) -> RunMeta {
        let spec = &self.proposal.spec;
        let region = |id: &str| {
            self.proposal
                .candidates
                .iter()
                .find(|c| c.id == id)
                .map(|c| c.region.clone())
                .unwrap_or_default()
        };
        RunMeta {
            data: spec.data.clone(),
            scenario: spec.scenario.clone(),
            executor: spec.executor_name(),
            outcome: match self.finish.as_ref().map(|f| &f.outcome) {
                None => "running",
                Some(Outcome::Complete) => "complete",
                Some(Outcome::Stopped { .. }) => "stopped",
                Some(Outcome::Failed { .. }) => "failed",
            }
            .to_owned(),
            expected: self
                .plan
                .iter()
                .flat_map(|p| &p.shares)
                .map(|a| ExpectedNode {
                    id: a.node.clone(),
                    region: region(&a.node),
                    segment: Some(a.segment),
                })
                .collect(),
            lost: self
                .finish
                .as_ref()
                .map(|f| f.lost.clone())
                .unwrap_or_default(),
            thresholds: spec.thresholds.clone(),
            aborted_by: match self.finish.as_ref().map(|f| &f.outcome) {
                Some(Outcome::Stopped { reason, .. }) => reason.clone(),
                _ => None,
            },
            load: Some(LoadPlan::of(spec)),
            moves: {
                let plan = LoadPlan::of(spec);
                self.handoffs
                    .values()
                    .flat_map(|h| {
                        let plan = &plan;
                        h.to.iter().map(move |a| Move {
                            from: h.from.clone(),
                            to: a.node.clone(),
                            since_ms: h.since_ms,
                            segment: a.segment,
                            planned: plan.share_since(&a.segment, h.since_ms),
                        })
                    })
                    .collect()
            },
        }
    }

    /// Where the run is at `at`. Past T0 is judged on the monotonic clock
    /// once this node has anchored T0 there (the first tick after the arm),
    /// so a step of the wall clock does not move a run back to `armed`.
    ///
    /// A finish held without its words, which are on their way, still
    /// reads as the run going, for [`WORDS_WAIT`] at most: what the run
    /// says of each node's start and shards is not known here yet, and a
    /// report read now would differ from the other nodes'.
    pub fn phase(&self, at: At, view: &dyn MeshView) -> Phase {
        if let Some(f) = &self.finish
            && !(f.lacks_words()
                && self.armed.is_some()
                && self
                    .timers
                    .finished_at
                    .is_none_or(|t| at.now.saturating_sub(t) < WORDS_WAIT))
        {
            return match f.outcome {
                Outcome::Complete => Phase::Complete,
                Outcome::Stopped { .. } => Phase::Stopped,
                Outcome::Failed { .. } => Phase::Failed,
            };
        }
        match (&self.armed, &self.plan) {
            (Some(a), _) => {
                let past_t0 = match self.timers.t0_at {
                    Some(t0) => at.now >= t0,
                    None => at.wall_ns >= self.local_t0(a, view),
                };
                if past_t0 {
                    Phase::Running
                } else {
                    Phase::Armed
                }
            }
            (None, Some(_)) => Phase::Assigned,
            (None, None) => Phase::Proposed,
        }
    }

    /// Seconds since T0 at `at` (negative before it), on the monotonic
    /// clock once T0 is anchored there; `None` before the arm.
    pub fn since_t0(&self, at: At, view: &dyn MeshView) -> Option<f64> {
        let armed = self.armed.as_ref()?;
        Some(match self.timers.t0_at {
            Some(t0) if at.now >= t0 => at.now.saturating_sub(t0).as_secs_f64(),
            Some(t0) => -t0.saturating_sub(at.now).as_secs_f64(),
            None => at.wall_ns.saturating_sub(self.local_t0(armed, view)) as f64 / 1e9,
        })
    }

    /// T0 in this node's wall clock.
    pub fn local_t0(&self, armed: &Armed, view: &dyn MeshView) -> i64 {
        let (offset, _) = view.offset(&armed.by).unwrap_or((0, 0));
        armed.t0_ns.saturating_sub(offset)
    }

    /// The leader this node obeys, given who is alive.
    pub fn leader(&self, view: &dyn MeshView) -> Option<String> {
        self.leader_term(view).map(|(_, p)| p.to_owned())
    }

    /// The leader and its term: the first candidate alive in the ranking,
    /// at or after the highest term seen ([`Leadership`], without its
    /// copies: this runs on every tick).
    /// Terms go on past the end of the ranking, wrapping around it, so a
    /// run whose later leaders died returns to an earlier one that lives.
    fn leader_term(&self, view: &dyn MeshView) -> Option<(u32, &str)> {
        let ranked = self.ranked();
        let n = ranked.len();
        let from = self.term as usize;
        (from..from + n)
            .find(|&t| view.alive(&ranked[t % n]))
            .map(|t| (t as u32, ranked[t % n].as_str()))
    }

    /// The leader and the candidate that would take over from it: the
    /// first alive in the ranking after the leader's rank.
    fn leader_and_next(&self, view: &dyn MeshView) -> (Option<&str>, Option<&str>) {
        let ranked = self.ranked();
        let n = ranked.len();
        let mut alive = (self.term as usize..self.term as usize + n)
            .map(|t| ranked[t % n].as_str())
            .filter(|c| view.alive(c));
        (alive.next(), alive.next())
    }

    /// The candidate that leads at `term`.
    fn holder(&self, term: u32) -> Option<&str> {
        let ranked = self.ranked();
        (!ranked.is_empty()).then(|| ranked[term as usize % ranked.len()].as_str())
    }

    fn is_candidate(&self, peer: &str) -> bool {
        self.candidate_ids
            .get_or_init(|| {
                self.proposal
                    .candidates
                    .iter()
                    .map(|c| c.id.clone())
                    .collect()
            })
            .contains(peer)
    }

    fn ranked(&self) -> &[String] {
        self.ranked.get_or_init(|| {
            let ids: Vec<String> = self
                .proposal
                .candidates
                .iter()
                .map(|c| c.id.clone())
                .collect();
            ranking(&self.id, &ids)
        })
    }

    /// The start skew: the spread of the real starts, in the leader's
    /// clock, and the largest error bound among them (ns).
    pub fn start_skew(&self) -> Option<(i64, i64)> {
        let starts = self.started.values();
        let min = starts.clone().map(|s| s.0).min()?;
        let max = starts.clone().map(|s| s.0).max()?;
        let bound = starts.map(|s| s.1).max()?;
        Some((max.saturating_sub(min), bound))
    }

    /// The nodes of the armed plan (or the current one) that are lost: not
    /// done, and not alive, or named lost by the finish.
    pub fn lost(&self, view: &dyn MeshView) -> Vec<String> {
        if let Some(f) = &self.finish {
            return f.lost.clone();
        }
        let Some(plan) = &self.plan else {
            return Vec::new();
        };
        plan.shares
            .iter()
            .enumerate()
            .filter(|(i, s)| !self.heard(*i, &s.node).1 && !view.alive(&s.node))
            .map(|(_, s)| s.node.clone())
            .collect()
    }

    /// Whether this node knows that `node` of the plan has started, and
    /// that it is done: from its own word, which only the leader and the
    /// node next in line get while the run goes, or from the leader's
    /// latest `live`.
    pub fn heard_of(&self, node: &str) -> (bool, bool) {
        let i = self
            .plan
            .as_ref()
            .and_then(|p| p.shares.iter().position(|s| s.node == node));
        match i {
            Some(i) => self.heard(i, node),
            None => (
                self.started.contains_key(node),
                self.done.contains_key(node),
            ),
        }
    }

    /// [`Run::heard_of`] the `i`th node of the plan, `node`. The bits of a
    /// `live` are over the armed plan, and a run holds one only once armed
    /// (when its plan is the armed one, for good).
    fn heard(&self, i: usize, node: &str) -> (bool, bool) {
        let live = self.live.as_ref();
        (
            self.started.contains_key(node) || live.is_some_and(|l| l.has_started(i)),
            self.done.contains_key(node) || live.is_some_and(|l| l.has_done(i)),
        )
    }

    /// The `assign` of `plan`, its nodes named by their place among the
    /// proposal's candidates (`None` for a plan of others, which no plan
    /// made here is).
    fn assign(&self, plan: &Plan) -> Option<RunEnvelope> {
        let plan = plan.to_wire(&self.proposal.candidates)?;
        Some(self.envelope(RunMessage::Assign(plan)))
    }

    /// Sets the plan this node follows, with its digest.
    fn set_plan(&mut self, plan: Plan) {
        self.plan_digest = Some(plan.digest());
        self.derived = None;
        self.plan = Some(plan);
    }

    /// The plan this node holds, if it is the one `id` and `digest` name.
    fn plan_named(&self, id: PlanId, digest: &[u8]) -> Option<&Plan> {
        let plan = self.plan.as_ref().filter(|p| p.id == id)?;
        let same = match &self.plan_digest {
            Some(d) => d == digest,
            None => plan.digest() == digest,
        };
        same.then_some(plan)
    }

    /// The digest of the plan this node holds.
    fn digest(&self) -> Option<Vec<u8>> {
        self.plan_digest
            .clone()
            .or_else(|| self.plan.as_ref().map(Plan::digest))
    }

    /// Whether a `held` names what this node lacks: an arm, when it holds
    /// none (or the same plan armed at a lower term, by a leader that has
    /// since been replaced); a later plan, while nothing is armed.
    fn lacks(&self, held: &Held) -> bool {
        let arm = held.armed.is_some_and(|(term, plan)| {
            self.armed
                .as_ref()
                .is_none_or(|a| a.plan == plan && a.term < term)
        });
        let plan = self.armed.is_none()
            && held.plan.is_some_and(|(term, id)| {
                self.plan
                    .as_ref()
                    .is_none_or(|p| (term, id) > (p.term, p.id))
            });
        arm || plan
    }

    /// Takes the words a finish carries, of the nodes of the armed plan
    /// whose own words did not reach this node.
    fn take_words(&mut self, words: &[NodeWords]) {
        let Some(plan) = self
            .plan
            .as_ref()
            .filter(|p| self.armed.as_ref().is_some_and(|a| a.plan == p.id))
        else {
            return;
        };
        if words.len() != plan.shares.len() {
            return;
        }
        for (share, (started, done)) in plan.shares.iter().zip(words) {
            if let Some(s) = started {
                self.started.entry(share.node.clone()).or_insert(*s);
            }
            if let Some(d) = done {
                self.done.entry(share.node.clone()).or_insert(*d);
            }
        }
    }

    /// The words this node holds of each node of the armed plan, in its
    /// order, for a finish.
    fn words(&self) -> Vec<NodeWords> {
        let armed = self.armed.as_ref().map(|a| a.plan);
        self.plan
            .iter()
            .filter(|p| Some(p.id) == armed)
            .flat_map(|p| &p.shares)
            .map(|s| {
                (
                    self.started.get(&s.node).copied(),
                    self.done.get(&s.node).copied(),
                )
            })
            .collect()
    }

    /// The share of `node` in the current plan.
    pub fn share_of(&self, node: &str) -> Option<&Assigned> {
        self.plan.as_ref()?.shares.iter().find(|s| s.node == node)
    }

    fn envelope(&self, body: RunMessage) -> RunEnvelope {
        RunEnvelope {
            protocol: RUN_PROTOCOL,
            run: self.id.clone(),
            body,
            sig: None,
        }
    }

    /// The run as told to a node that never heard of it, once it has ended.
    pub fn ended(&self) -> Option<EndedRun> {
        Some(EndedRun {
            id: self.id.clone(),
            proposal: self.proposal.clone(),
            plan: self.plan.clone()?,
            armed: self.armed.clone(),
            started: self.started.clone(),
            done: self.done.clone(),
            finish: self.finish.clone()?,
            finish_sig: self.finish_sig.clone(),
        })
    }

    /// The candidate that leads the run at `term`.
    pub fn leader_at(&self, term: u32) -> Option<&str> {
        self.holder(term)
    }

    /// Why a shard cannot be one of this run's, if it cannot: another run,
    /// a node with no share, another region than the node's, or an
    /// interval the run cannot have (ending before it starts, or after the
    /// run's longest possible end). Whoever relayed it, a shard is kept only
    /// if it passes.
    pub fn check_shard(&self, shard: &Shard) -> Result<(), String> {
        if shard.run_id != self.id {
            return Err(format!("it is of run {}, not {}", shard.run_id, self.id));
        }
        if self.share_of(&shard.node).is_none() {
            return Err(format!("{} has no share in run {}", shard.node, self.id));
        }
        if let Some(c) = self.proposal.candidates.iter().find(|c| c.id == shard.node)
            && c.region != shard.region
        {
            return Err(format!(
                "it says region {:?}, but {} is in {:?}",
                shard.region, shard.node, c.region
            ));
        }
        if shard.end_ms < shard.start_ms {
            return Err("its interval ends before it starts".into());
        }
        let longest = self.proposal.spec.longest().saturating_add(SHARD_SLACK);
        let longest_ms = u64::try_from(longest.as_millis()).unwrap_or(u64::MAX);
        if shard.end_ms > longest_ms {
            return Err(format!(
                "its interval ends {} ms after the start, past the run's longest possible end ({longest_ms} ms)",
                shard.end_ms
            ));
        }
        if shard.seq > longest_ms {
            return Err(format!("sequence number {} is impossible", shard.seq));
        }
        Ok(())
    }

    /// Whether the run has ended (a finish was declared or heard).
    pub fn is_finished(&self) -> bool {
        self.finish.is_some()
    }

    /// Whether this node's share is running (started, or due to start and
    /// stopping, and not yet done).
    pub fn runs_here(&self) -> bool {
        matches!(self.local, Local::Started | Local::Stopping)
    }

    /// Whether the run never finished and is [`ABANDONED_AFTER`] past the
    /// longest it could have lasted since this node learned of it (every
    /// node that could lead it went away): nothing will finish it.
    fn is_abandoned(&self, wall_ns: i64) -> bool {
        let longest = self
            .proposal
            .spec
            .longest()
            .saturating_add(SHARD_SLACK)
            .saturating_add(ABANDONED_AFTER);
        !self.is_finished() && wall_ns > self.seen_wall_ns.saturating_add(duration_ns(longest))
    }

    /// Whether the run may be let go of: finished (or abandoned), and no
    /// share of it running here.
    fn is_evictable(&self, wall_ns: i64) -> bool {
        !self.runs_here() && (self.is_finished() || self.is_abandoned(wall_ns))
    }

    /// Whether the run is under way, as [`MAX_OPEN_FROM_ONE`] counts.
    fn is_open(&self, wall_ns: i64) -> bool {
        !self.is_finished() && !self.is_abandoned(wall_ns)
    }

    /// The member its runs under way are counted against.
    fn charged_to(&self) -> &str {
        self.owner.as_deref().unwrap_or(&self.proposer)
    }
}

/// Why a message about a run was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunRefused {
    /// A leader's message from a node that does not lead the run, or of a
    /// lower term than one already seen.
    #[error("{0} does not lead this run at that term (stale or forged)")]
    NotLeader(String),
    /// A message about a run this node does not know (yet).
    #[error("unknown run (its proposal has not arrived)")]
    UnknownRun,
    /// A proposal naming its candidates by a digest of members this node
    /// does not hold alike: it asks for the list.
    #[error("a proposal whose candidates are not the members held here (asked for their list)")]
    OtherMembers,
    /// A proposal whose author is not among its candidates, or that
    /// conflicts with one already known.
    #[error("{0}")]
    BadProposal(String),
    /// A plan that does not fit the proposal.
    #[error("{0}")]
    BadPlan(String),
    /// A new run this node has no room for: every run it keeps is under
    /// way, or the member that sent it has [`MAX_OPEN_FROM_ONE`] under way.
    #[error("{0}")]
    Full(String),
}

/// Every run this node knows.
#[derive(Debug)]
pub struct RunsCore {
    me: String,
    config: RunsConfig,
    runs: BTreeMap<String, Run>,
    dirty: BTreeSet<String>,
    /// Runs let go of (evicted or too old to keep), at most [`MAX_DECLINED`].
    declined: BTreeSet<String>,
    /// Messages about runs whose proposal has not arrived (gossip does not
    /// keep order): replayed when it does.
    early: Vec<(Duration, String, RunEnvelope)>,
    evicted: Vec<String>,
    /// Refusals of proposals this node had no room for, to be sent (at
    /// most [`MAX_PENDING_REFUSALS`]), so their leaders plan without it.
    refusals: Vec<RunEnvelope>,
    /// Asks to send for what a `held` named ([`RunAction::Pull`]), at most
    /// [`MAX_PENDING_PULLS`].
    pulls: Vec<(String, String)>,
    /// When this node last asked about each run: at most once every
    /// [`PULL_EVERY`] per run.
    pulled: BTreeMap<String, Duration>,
    /// The runs this node, lacking their proposal, asked a relay about
    /// (the peer that passed it a `held`), and when: its next ask goes to
    /// the `held`'s author.
    asked_relay: BTreeMap<String, Duration>,
    /// Members that asked about a run this node was asking about itself,
    /// and when: told the proposal once it comes ([`MAX_WAITING`] at most,
    /// each for [`WAIT_FOR`]).
    waiting: Vec<(Duration, String, String)>,
    /// Proposals to tell the members that waited for them.
    tells: Vec<RunAction>,
    /// When this node last answered each (member, run) ask, at most
    /// [`MAX_RUN_ANSWERS`] remembered.
    answered: BTreeMap<(String, String), Duration>,
    /// The last tick, and when a tick last came [`WAKE_GAP`] after the one
    /// before (this node was frozen or starved) or this process took back
    /// a run after a restart: until it has heard the others again, it
    /// judges no one lost and takes over no armed run ([`Self::judging`]).
    last_tick: Option<Duration>,
    woke_at: Option<Duration>,
}

/// The highest term obeyed (terms grow by at most the candidates per round
/// of the ranking; a peer cannot push them to overflow).
const MAX_TERM: u32 = u32::MAX / 2;

/// The most run ids a node remembers having let go of.
const MAX_DECLINED: usize = 800;

/// How long after a run's expected end (or a stop) a node that is gone is
/// declared lost.
const LOST_AFTER_END: Duration = Duration::from_secs(3);

/// The most runs under way that one member may have brought to a node: a
/// member that proposes runs without end takes at most this many of the
/// `keep_runs` places, and the others keep theirs.
pub const MAX_OPEN_FROM_ONE: usize = 32;

/// An unfinished run this long past the longest it could have lasted is
/// abandoned, and may be let go of.
const ABANDONED_AFTER: Duration = Duration::from_secs(3600);

/// A worker hands its share the start instant this long before it, and
/// until then translates T0 again with each tick: more than two ticks of
/// the event loop (50 ms) and the simulator (100 ms), so a late tick
/// still starts on time.
const START_AHEAD: Duration = Duration::from_millis(250);

/// A node asks about one run at most this often after `held`s: they come
/// four times a second or more while the leader hurries.
const PULL_EVERY: Duration = Duration::from_millis(500);

/// A member is answered about one run at most this often: an ask of a few
/// bytes is answered with the proposal, plan and arm, up to about 300 KB
/// at 1,000 nodes, and an asker keeps itself to one ask every
/// [`PULL_EVERY`].
pub const ASK_AGAIN_AFTER: Duration = Duration::from_millis(250);

/// The most (member, run) answers remembered; past it, asks are refused
/// until older ones are forgotten.
pub const MAX_RUN_ANSWERS: usize = 4096;

/// The most asks after `held`s waiting to go out.
const MAX_PENDING_PULLS: usize = 64;

/// The most asks about a run this node has not heard of yet that it keeps
/// to answer once it has (see [`RunsCore::answer_run`]), and for how long.
const MAX_WAITING: usize = 64;
const WAIT_FOR: Duration = Duration::from_secs(2);

/// The most refusals of runs without room waiting to be sent.
const MAX_PENDING_REFUSALS: usize = 64;

/// The most early messages kept (in all, and from one node), and for how long.
const MAX_EARLY: usize = 1024;
const MAX_EARLY_FROM_ONE: usize = 16;
/// The most plans of over 64 shares kept early (in all; one from a node).
const MAX_EARLY_LARGE: usize = 4;
const EARLY_FOR: Duration = Duration::from_secs(10);

impl RunsCore {
    /// The runs of node `me`.
    pub fn new(me: String, config: RunsConfig) -> RunsCore {
        RunsCore {
            me,
            config,
            runs: BTreeMap::new(),
            dirty: BTreeSet::new(),
            declined: BTreeSet::new(),
            early: Vec::new(),
            evicted: Vec::new(),
            refusals: Vec::new(),
            pulls: Vec::new(),
            pulled: BTreeMap::new(),
            asked_relay: BTreeMap::new(),
            waiting: Vec::new(),
            tells: Vec::new(),
            answered: BTreeMap::new(),
            last_tick: None,
            woke_at: None,
        }
    }

    /// This node's id.
    pub fn me(&self) -> &str {
        &self.me
    }

    /// A run.
    pub fn get(&self, id: &str) -> Option<&Run> {
        self.runs.get(id)
    }

    /// Every run, newest first.
    pub fn all(&self) -> Vec<&Run> {
        let mut runs: Vec<&Run> = self.runs.values().collect();
        runs.sort_by(|a, b| b.seen_wall_ns.cmp(&a.seen_wall_ns).then(a.id.cmp(&b.id)));
        runs
    }

    /// The runs changed since the last call, to be stored.
    pub fn take_dirty(&mut self) -> Vec<String> {
        std::mem::take(&mut self.dirty).into_iter().collect()
    }

    /// Submits a run to this node: it proposes it to the mesh.
    /// `candidates` are the members this node sees alive, itself included.
    pub fn submit(
        &mut self,
        id: String,
        proposal: Proposal,
        at: At,
        view: &dyn MeshView,
    ) -> Result<Vec<RunAction>, String> {
        if self.runs.contains_key(&id) {
            return Err(format!("a run {id} exists already"));
        }
        if !proposal.candidates.iter().any(|c| c.id == self.me) || proposal.proposer != self.me {
            return Err("this node must be the proposer, and among the candidates".into());
        }
        let candidates = proposal.candidates.len();
        let named = RunEnvelope {
            protocol: RUN_PROTOCOL,
            run: id.clone(),
            body: RunMessage::Propose(Box::new(proposal.named())),
            sig: None,
        };
        let env = RunEnvelope {
            protocol: RUN_PROTOCOL,
            run: id,
            body: RunMessage::Propose(Box::new(proposal)),
            sig: None,
        };
        // Every node that asks gets the proposal listed: it must be one
        // that every node accepts.
        decode_run(&wire::encode(&env)).map_err(|e| match e {
            wire::WireError::TooLarge { len, max, .. } => format!(
                "the run's proposal, with its {} candidates listed, is {len} bytes, over \
                 the {max}-byte limit of a run message: take fewer nodes (--nodes), or \
                 give the nodes shorter region names",
                candidates
            ),
            other => format!("the run's proposal would be refused by every node: {other}"),
        })?;
        let me = self.me.clone();
        let run_id = env.run.clone();
        self.on_message(&me, env, at).map_err(|e| e.to_string())?;
        // Flooded once, its candidates named: the nodes that hold the same
        // members take it without an ask; the others, and those that missed
        // it, ask after a `held`, and the answer lists them. So the first
        // `held` waits for the hurried pace: sent at once, it beat the
        // flood to many nodes, and each asked for the listed proposal
        // (283 of 1,000 simulated nodes, 82 KB each).
        if let Some(run) = self.runs.get_mut(&run_id) {
            run.timers.last_publish = Some(at.now);
            run.timers.last_hurried = Some(at.now);
        }
        let mut actions = vec![RunAction::Publish(named)];
        actions.extend(self.tick(at, view));
        Ok(actions)
    }

    /// Asks for a run to stop on every node; `reason` says why when it is
    /// not a person's stop (the `abortOnFail` threshold that failed).
    pub fn stop(
        &mut self,
        id: &str,
        reason: Option<String>,
        at: At,
        view: &dyn MeshView,
    ) -> Result<Vec<RunAction>, String> {
        let Some(run) = self.runs.get(id) else {
            return Err(format!("no run {id} on this node"));
        };
        if run.is_finished() {
            return Err(format!("run {id} is over already"));
        }
        let env = run.envelope(RunMessage::Stop {
            reason: reason.map(|r| clean_reason(&r)),
        });
        let me = self.me.clone();
        self.on_message(&me, env.clone(), at)
            .map_err(|e| e.to_string())?;
        let mut actions = vec![RunAction::Publish(env)];
        actions.extend(self.tick(at, view));
        Ok(actions)
    }

    /// Takes a message from `from` (the gossip message's signed source).
    /// Returns whether it changed anything; an error says why it was not
    /// taken (for the log).
    pub fn on_message(&mut self, from: &str, env: RunEnvelope, at: At) -> Result<bool, RunRefused> {
        self.on_gossip(from, from, env, at)
    }

    /// A message `from` its author, passed on to this node by `via` (a
    /// gossip relay, or the author itself): as [`Self::on_message`], but a
    /// node that lacks the proposal a `held` names asks `via` for it first.
    pub fn on_gossip(
        &mut self,
        from: &str,
        via: &str,
        env: RunEnvelope,
        at: At,
    ) -> Result<bool, RunRefused> {
        if let RunMessage::Propose(proposal) = env.body {
            let id = env.run;
            let new = self.on_proposal(from, id.clone(), *proposal, at)?;
            if new {
                self.tell_waiting(&id, at);
                let (now, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.early)
                    .into_iter()
                    .partition(|(_, _, e)| e.run == id);
                self.early = later;
                for (_, from, env) in now {
                    let _ = self.on_message(&from, env, at);
                }
            }
            return Ok(new);
        }
        let id = env.run.clone();
        if let RunMessage::Held(held) = env.body {
            self.on_held(from, via, &id, held, at);
            return Ok(false);
        }
        // A leader's derivation stands for its `held` too (the plan it
        // made, nothing armed), which it does not send beside it: a node
        // that lacks the proposal asks for it as the `held` would have it.
        let implied = match &env.body {
            RunMessage::Assign(p) if p.derivation.is_some() => Some(Held {
                term: p.term,
                plan: Some((p.term, p.id)),
                armed: None,
                t0_ns: None,
            }),
            _ => None,
        };
        let said = self.on_said(from, via, env, at);
        // Only the leader's, taken or of a run unknown here, stands for a
        // `held`: one refused asks no one.
        if let Some(held) = implied
            && matches!(said, Ok(_) | Err(RunRefused::UnknownRun))
        {
            self.on_held(from, via, &id, held, at);
        }
        said
    }

    /// A message other than a proposal or a `held`, as [`Self::on_gossip`]
    /// takes it.
    fn on_said(
        &mut self,
        from: &str,
        via: &str,
        env: RunEnvelope,
        at: At,
    ) -> Result<bool, RunRefused> {
        let id = env.run.clone();
        let Some(run) = self.runs.get_mut(&id) else {
            self.early
                .retain(|(t, _, _)| at.now.saturating_sub(*t) < EARLY_FOR);
            let from_one = self.early.iter().filter(|(_, f, _)| f == from).count();
            // Plans are the large ones (up to a few hundred KiB): keep few
            // of them, one from any one node, and few messages from any
            // one node. A plan often comes before its proposal to a node
            // far from the proposer (which it asks for the proposal, while
            // the leader near it sent the plan to every node): dropped, it
            // cost that node a second ask, of the leader, once it said it
            // held it (a quarter of 1,000 simulated nodes, seed 2, were
            // ready 0.9 s after the rest).
            let fits = !is_large(&env)
                || (self.early.iter().filter(|(_, _, e)| is_large(e)).count() < MAX_EARLY_LARGE
                    && !self.early.iter().any(|(_, f, e)| f == from && is_large(e)));
            if self.early.len() < MAX_EARLY && from_one < MAX_EARLY_FROM_ONE && fits {
                self.early.push((at.now, from.to_owned(), env));
            }
            return Err(RunRefused::UnknownRun);
        };
        if run.is_finished() && !matches!(env.body, RunMessage::Finish(_) | RunMessage::Live(_)) {
            run.timers.straggler = true;
        }
        let per_node = matches!(
            env.body,
            RunMessage::Ready { .. }
                | RunMessage::Refuse { .. }
                | RunMessage::Started { .. }
                | RunMessage::Done { .. }
        );
        if per_node && !run.is_candidate(from) {
            return Err(RunRefused::BadPlan(format!(
                "{from} is not a candidate of this run"
            )));
        }
        // Who said a leader's message: the node that signed it (the
        // runtime checked the signature), or the gossip's signed source.
        let sig = env.sig;
        let author = sig.as_ref().map_or(from, |s| s.signer.as_str()).to_owned();
        let (mut pull_words, mut pull_plan, mut arm_now) = (None, None, None);
        let mut words_told = false;
        let changed = match env.body {
            RunMessage::Propose(_) | RunMessage::Held(_) => false,
            RunMessage::Live(live) => {
                // Only first hand, from the leader of its term, while the
                // run goes; it changes nothing of the run's state.
                if live.term > MAX_TERM || run.holder(live.term) != Some(from) {
                    return Err(RunRefused::NotLeader(from.to_owned()));
                }
                if run.armed.is_some()
                    && !run.is_finished()
                    && run.live.as_ref().is_none_or(|l| l.term <= live.term)
                {
                    run.live = Some(live);
                }
                false
            }
            RunMessage::Assign(on_wire) => {
                // The plan of an arm this node keeps, from any node: its
                // digest says it is the plan the leader armed.
                let kept_digest = run
                    .pending_arm
                    .as_ref()
                    .and_then(|(_, arm)| match &arm.body {
                        RunMessage::Arm { plan, digest, .. } if *plan == on_wire.id => {
                            Some(digest.clone())
                        }
                        _ => None,
                    });
                if kept_digest.is_none() {
                    if run.armed.as_ref().is_some_and(|a| a.plan != on_wire.id) {
                        run.timers.unaware = true;
                    }
                    // Work out or look up only a plan this node would obey.
                    if run.holder(on_wire.term) != Some(from) {
                        return Err(RunRefused::NotLeader(from.to_owned()));
                    }
                }
                // The plan held already, sent again while nodes get ready:
                // no need to work it out once more.
                let held = on_wire.derivation.as_ref().is_some_and(|d| {
                    run.plan_named(on_wire.id, &d.digest)
                        .is_some_and(|p| p.term == on_wire.term)
                });
                if held {
                    return Ok(false);
                }
                let plan = match derive(&run.id, &run.proposal, &on_wire) {
                    Ok(plan) => plan,
                    // A derivation that does not give the leader's plan
                    // here: ask the sender for its shares.
                    Err(e) if on_wire.derivation.is_some() => {
                        self.pull(&id, from, at);
                        return Err(RunRefused::BadPlan(e));
                    }
                    Err(e) => return Err(RunRefused::BadPlan(e)),
                };
                if kept_digest.is_some_and(|d| d == plan.digest()) {
                    check_plan(run, &plan)?;
                    run.set_plan(plan);
                    run.timers.plan_at = at.now;
                    arm_now = run.pending_arm.take();
                    true
                } else {
                    obey(run, plan.term, from)?;
                    check_plan(run, &plan)?;
                    if run.armed.is_some() || run.plan.as_ref() == Some(&plan) {
                        false
                    } else {
                        let newer = run
                            .plan
                            .as_ref()
                            .is_none_or(|p| (plan.term, plan.id) > (p.term, p.id));
                        if newer {
                            run.set_plan(plan);
                            run.timers.plan_at = at.now;
                        }
                        newer
                    }
                }
            }
            RunMessage::Ready { plan } => {
                if run.armed.as_ref().is_some_and(|a| a.plan != plan) {
                    run.timers.unaware = true;
                }
                run.ready.insert(from.to_owned(), plan) != Some(plan)
            }
            RunMessage::Refuse { reason } => {
                run.refused.insert(from.to_owned(), reason.clone()) != Some(reason)
            }
            RunMessage::Arm {
                term,
                plan: plan_id,
                digest,
                t0_ns,
            } => {
                // An arm is final: obeyed from the node that holds its
                // rank, even of a lower term than one seen, as long as
                // nothing is armed here yet; and passed on by a candidate
                // that holds it to one that does not (T0 is in the clock
                // of the leader that armed).
                let Some(by) = run.holder(term).map(str::to_owned) else {
                    return Err(RunRefused::NotLeader(from.to_owned()));
                };
                let relayed = by != from;
                if term > MAX_TERM
                    || author != by
                    || (relayed && (run.armed.is_some() || !run.is_candidate(from)))
                {
                    return Err(RunRefused::NotLeader(author));
                }
                // The first arm, or a leader that took over re-arming the
                // same plan, with the same instant in its own clock.
                let follows = run
                    .armed
                    .as_ref()
                    .is_none_or(|a| a.plan == plan_id && term > a.term);
                if run.plan_named(plan_id, &digest).is_none() {
                    // This node lacks the plan, or holds another: it keeps
                    // the arm and asks the sender, which holds the plan.
                    if follows {
                        let arm = RunEnvelope {
                            protocol: RUN_PROTOCOL,
                            run: id.clone(),
                            body: RunMessage::Arm {
                                term,
                                plan: plan_id,
                                digest,
                                t0_ns,
                            },
                            sig,
                        };
                        run.pending_arm = Some((from.to_owned(), arm));
                        pull_plan = Some(from.to_owned());
                    }
                    false
                } else if follows {
                    run.term = run.term.max(term);
                    run.armed = Some(Armed {
                        term,
                        plan: plan_id,
                        t0_ns,
                        by,
                        sig,
                    });
                    run.pending_arm = None;
                    true
                } else {
                    false
                }
            }
            RunMessage::Started { at_ns, bound_ns } => {
                run.started.insert(from.to_owned(), (at_ns, bound_ns)) != Some((at_ns, bound_ns))
            }
            RunMessage::Done {
                shards,
                interrupted,
            } => {
                run.done.insert(from.to_owned(), (shards, interrupted))
                    != Some((shards, interrupted))
            }
            RunMessage::Stop { reason } => {
                if run.stop_by.is_some() || run.is_finished() {
                    false
                } else {
                    run.stop_by = Some(from.to_owned());
                    // Only a node of the run may say a threshold stopped it.
                    run.stop_reason = reason
                        .filter(|_| run.is_candidate(from))
                        .map(|r| clean_reason(&r));
                    run.timers.stop_at = Some(at.now);
                    true
                }
            }
            RunMessage::Handoff(handoff) => {
                // Final, like an arm: from the leader of its term, or
                // passed on by a candidate; the first one for a node is
                // kept. It must fit the armed plan.
                if handoff.term > MAX_TERM
                    || run.holder(handoff.term) != Some(author.as_str())
                    || !run.is_candidate(from)
                {
                    return Err(RunRefused::NotLeader(author));
                }
                if run.armed.as_ref().is_none_or(|a| a.plan != handoff.plan) {
                    return Err(RunRefused::BadPlan(format!(
                        "a handoff of {} for a plan that is not the armed one here",
                        handoff.from
                    )));
                }
                check_handoff(run, &handoff)?;
                if run.handoffs.contains_key(&handoff.from) || run.is_finished() {
                    false
                } else {
                    if let Some(sig) = sig {
                        run.handoff_sigs.insert(handoff.from.clone(), sig);
                    }
                    run.handoffs.insert(handoff.from.clone(), handoff);
                    true
                }
            }
            RunMessage::Finish(finish) => {
                // From the leader, or passed on by any candidate that has
                // it (to a node that missed it): the first one is kept.
                if run.holder(finish.term) != Some(author.as_str())
                    || (author != from && !run.is_candidate(from))
                {
                    return Err(RunRefused::NotLeader(author));
                }
                if !finish.words_match() {
                    return Err(RunRefused::BadPlan(
                        "a finish whose words are not the ones its digest names".into(),
                    ));
                }
                // The gossip floods a finish without its words; the words,
                // of the same finish (the digest the leader signed says
                // so), come from a node that holds them.
                let words_now = run.finish.as_ref().is_some_and(|f| {
                    f.words.is_empty()
                        && f.term == finish.term
                        && f.words_digest.is_some()
                        && f.words_digest == finish.words_digest
                        && !finish.words.is_empty()
                });
                if words_now {
                    run.take_words(&finish.words);
                    run.finish = Some(finish);
                    run.finish_sig = sig;
                    words_told = true;
                    true
                } else if run.finish.is_some() {
                    // Still without the words: ask the node that passed
                    // this copy on (one that asked in vain asks again).
                    if run.armed.is_some() && run.finish.as_ref().is_some_and(Finish::lacks_words) {
                        pull_words = Some(via.to_owned());
                    }
                    false
                } else {
                    // Kept without the words: ask the node that passed it
                    // on, which asked the node that passed it on, and so
                    // on up to the leader.
                    if finish.lacks_words() && run.armed.is_some() {
                        pull_words = Some(via.to_owned());
                    }
                    if finish.term <= MAX_TERM {
                        run.term = run.term.max(finish.term);
                    }
                    // The leader's list is the one every node reports (a
                    // handoff that does not fit the plan here is dropped).
                    run.handoffs = finish
                        .handoffs
                        .iter()
                        .filter(|h| check_handoff(run, h).is_ok())
                        .map(|h| (h.from.clone(), h.clone()))
                        .collect();
                    run.take_words(&finish.words);
                    run.finish = Some(finish);
                    run.finish_sig = sig;
                    true
                }
            }
        };
        if let Some(holder) = pull_words.or(pull_plan) {
            self.pull(&id, &holder, at);
        }
        if words_told {
            self.tell_waiting(&id, at);
        }
        if changed {
            self.dirty.insert(id.clone());
        }
        if let Some((from, arm)) = arm_now {
            return Ok(self.on_message(&from, arm, at)? || changed);
        }
        Ok(changed)
    }

    fn on_proposal(
        &mut self,
        from: &str,
        id: String,
        proposal: Proposal,
        at: At,
    ) -> Result<bool, RunRefused> {
        if proposal.members.is_some() {
            return Err(RunRefused::BadProposal(format!(
                "proposal for run {id} names its candidates by digest; list them"
            )));
        }
        if let Some(run) = self.runs.get(&id) {
            return if run.proposal == proposal {
                Ok(false)
            } else {
                Err(RunRefused::BadProposal(format!(
                    "a different proposal for run {id}, which is known already"
                )))
            };
        }
        // Relayed proposals are fine (a leader re-sends the proposal), from
        // a candidate; the proposer is named inside (it has the module).
        if !proposal.candidates.iter().any(|c| c.id == from)
            || !proposal
                .candidates
                .iter()
                .any(|c| c.id == proposal.proposer)
        {
            return Err(RunRefused::BadProposal(format!(
                "proposal for run {id} from {from}, which is not among its candidates"
            )));
        }
        if let Err(e) = self.admit(from, at.wall_ns) {
            if from != self.me
                && proposal.candidates.iter().any(|c| c.id == self.me)
                && self.refusals.len() < MAX_PENDING_REFUSALS
                && !self.refusals.iter().any(|r| r.run == id)
            {
                self.refusals.push(RunEnvelope {
                    protocol: RUN_PROTOCOL,
                    run: id,
                    body: RunMessage::Refuse {
                        reason: clean_reason(&e.to_string()),
                    },
                    sig: None,
                });
            }
            return Err(e);
        }
        self.runs.insert(
            id.clone(),
            Run {
                id: id.clone(),
                proposer: proposal.proposer.clone(),
                proposal,
                term: 0,
                plan: None,
                ready: BTreeMap::new(),
                refused: BTreeMap::new(),
                armed: None,
                started: BTreeMap::new(),
                done: BTreeMap::new(),
                stop_by: None,
                stop_reason: None,
                handoffs: BTreeMap::new(),
                handoff_sigs: BTreeMap::new(),
                finish_sig: None,
                finish: None,
                seen_wall_ns: at.wall_ns,
                owner: Some(from.to_owned()),
                local: Local::Idle,
                live: None,
                timers: Timers {
                    known_at: at.now,
                    ..Timers::default()
                },
                ranked: std::sync::OnceLock::new(),
                candidate_ids: std::sync::OnceLock::new(),
                plan_digest: None,
                derived: None,
                pending_arm: None,
            },
        );
        self.forget_old(at.wall_ns);
        self.dirty.insert(id);
        Ok(true)
    }

    /// Whether a new run from `from` has a place here: `from` has fewer
    /// than [`MAX_OPEN_FROM_ONE`] runs under way, and the node keeps fewer
    /// than `keep_runs` runs or one of them may go.
    fn admit(&self, from: &str, wall_ns: i64) -> Result<(), RunRefused> {
        let open = self
            .runs
            .values()
            .filter(|r| r.charged_to() == from && r.is_open(wall_ns))
            .count();
        if open >= MAX_OPEN_FROM_ONE {
            return Err(RunRefused::Full(format!(
                "{from} has {open} runs under way on this node, the most one member may have; \
                 wait for one to finish, or stop one (fusi-node stop RUN)"
            )));
        }
        if self.runs.len() >= self.config.keep_runs
            && !self.runs.values().any(|r| r.is_evictable(wall_ns))
        {
            return Err(RunRefused::Full(format!(
                "this node keeps {} runs and none of them has finished; wait for one to \
                 finish, or stop one (fusi-node stop RUN)",
                self.runs.len()
            )));
        }
        Ok(())
    }

    /// The refusals of runs this node had no room for, to send, and the
    /// asks after `held`s ([`RunAction::Pull`]): a driver takes them after
    /// each tick, and may after each message, so that an ask goes out at
    /// once.
    pub fn take_refusals(&mut self) -> Vec<RunAction> {
        std::mem::take(&mut self.refusals)
            .into_iter()
            .map(RunAction::Publish)
            .chain(std::mem::take(&mut self.tells))
            .chain(
                std::mem::take(&mut self.pulls)
                    .into_iter()
                    .map(|(run, from)| {
                        let known = self.runs.contains_key(&run);
                        RunAction::Pull { run, from, known }
                    }),
            )
            .collect()
    }

    /// A `held` from `from`, passed on by `via`: asks for what this node
    /// lacks, if anything (a run it does not know at all, a later plan, the
    /// arm), at most once every [`PULL_EVERY`] per run. The proposal of a
    /// run it does not know it asks of `via` first, then of `from`: asked
    /// of the proposer by every node, its answers queued on the proposer's
    /// link (82 MB at 1,000 simulated nodes, 0.66 s at 1 Gbit/s); asked of
    /// relays, they spread along the gossip's own paths, each relay
    /// answering the few it passed the `held` to once it holds it.
    fn on_held(&mut self, from: &str, via: &str, id: &str, held: Held, at: At) {
        // The arming leader's own `held` arms a node that holds the plan,
        // as the arm would (the author is the gossip's signed source).
        if let (Some((term, plan_id)), Some(t0_ns)) = (held.armed, held.t0_ns)
            && let Some(run) = self.runs.get(id)
            && !run.is_finished()
            && run.holder(term) == Some(from)
            && run
                .armed
                .as_ref()
                .is_none_or(|a| a.plan == plan_id && a.term < term)
            && run.plan.as_ref().is_some_and(|p| p.id == plan_id)
            && let Some(digest) = run.digest()
        {
            let arm = run.envelope(RunMessage::Arm {
                term,
                plan: plan_id,
                digest,
                t0_ns,
            });
            let _ = self.on_message(from, arm, at);
            return;
        }
        let lacks = match self.runs.get_mut(id) {
            None => {
                self.lacks_proposal(from, via, id, at);
                false
            }
            Some(run) if run.is_finished() => {
                // The sender is behind: answer with the finish.
                run.timers.straggler = true;
                false
            }
            Some(run) => run.lacks(&held),
        };
        if lacks {
            self.pull(id, from, at);
        }
    }

    /// This node lacks the proposal of run `id`, which `from` holds and
    /// `via` passed on word of: it asks `via` first (a gossip relay, which
    /// holds it or soon will), and `from` after [`PULL_EVERY`].
    pub fn lacks_proposal(&mut self, from: &str, via: &str, id: &str, at: At) {
        if self.runs.contains_key(id) {
            return;
        }
        let relay = via != from
            && via != self.me
            && !self.asked_relay.contains_key(id)
            && self.pull(id, via, at);
        if relay {
            if self.asked_relay.len() >= MAX_PENDING_PULLS * 4 {
                self.asked_relay
                    .retain(|_, t| at.now.saturating_sub(*t) < EARLY_FOR);
            }
            self.asked_relay.insert(id.to_owned(), at.now);
        } else {
            self.pull(id, from, at);
        }
    }

    /// Queues an ask of `from` about run `id`, unless this node asked about
    /// it less than [`PULL_EVERY`] ago; says whether it did.
    fn pull(&mut self, id: &str, from: &str, at: At) -> bool {
        if self.pulls.len() >= MAX_PENDING_PULLS
            || self
                .pulled
                .get(id)
                .is_some_and(|t| at.now.saturating_sub(*t) < PULL_EVERY)
        {
            return false;
        }
        if self.pulled.len() >= MAX_PENDING_PULLS * 4 {
            self.pulled
                .retain(|_, t| at.now.saturating_sub(*t) < PULL_EVERY);
        }
        self.pulled.insert(id.to_owned(), at.now);
        self.pulls.push((id.to_owned(), from.to_owned()));
        true
    }

    /// Tells the members that asked about run `id` before this node knew
    /// it its proposal, now that it does.
    fn tell_waiting(&mut self, id: &str, at: At) {
        let Some(run) = self.runs.get(id) else {
            return;
        };
        // Asks about a run this node did not know wait for its proposal;
        // asks about an ended run whose words it lacked, for the words.
        let env = match &run.finish {
            Some(f) if !f.words.is_empty() => {
                let mine = run.holder(f.term) == Some(self.me.as_str());
                let sig = if mine { None } else { run.finish_sig.clone() };
                if !mine && sig.is_none() {
                    return;
                }
                let mut env = run.envelope(RunMessage::Finish(f.clone()));
                env.sig = sig;
                env
            }
            _ => run.envelope(RunMessage::Propose(Box::new(run.proposal.clone()))),
        };
        let mut to = Vec::new();
        self.waiting.retain(|(t, asker, run_id)| {
            if run_id != id {
                return at.now.saturating_sub(*t) < WAIT_FOR;
            }
            if at.now.saturating_sub(*t) < WAIT_FOR {
                to.push(asker.clone());
            }
            false
        });
        if !to.is_empty() {
            self.tells.push(RunAction::Tell { to, env });
        }
    }

    /// Whether to answer `asker`'s ask about run `id` now: not if this node
    /// answered it about that run less than [`ASK_AGAIN_AFTER`] ago, nor
    /// while it remembers [`MAX_RUN_ANSWERS`] recent answers. A `true`
    /// counts as an answer. `Err` says why not, for the refusal.
    pub fn may_answer_run(&mut self, asker: &str, id: &str, now: Duration) -> Result<(), String> {
        if self.answered.len() >= MAX_RUN_ANSWERS {
            self.answered
                .retain(|_, t| now.saturating_sub(*t) < ASK_AGAIN_AFTER);
        }
        let key = (asker.to_owned(), id.to_owned());
        let too_soon = self
            .answered
            .get(&key)
            .is_some_and(|t| now.saturating_sub(*t) < ASK_AGAIN_AFTER);
        if too_soon || self.answered.len() >= MAX_RUN_ANSWERS {
            return Err(format!(
                "asked about run {id} again within {} ms",
                ASK_AGAIN_AFTER.as_millis()
            ));
        }
        self.answered.insert(key, now);
        Ok(())
    }

    /// Keeps `asker`'s ask about run `id` until what it asked for comes
    /// ([`Self::tell_waiting`]), if there is room.
    fn wait(&mut self, asker: &str, id: &str, at: At) {
        self.waiting
            .retain(|(t, _, _)| at.now.saturating_sub(*t) < WAIT_FOR);
        if self.waiting.len() < MAX_WAITING
            && !self.waiting.iter().any(|(_, a, r)| a == asker && r == id)
        {
            self.waiting.push((at.now, asker.to_owned(), id.to_owned()));
        }
    }

    /// What this node holds of run `id` that another asked for after a
    /// `held` of its own: the proposal, its candidates listed, unless the
    /// asker holds it (`known`); the plan, if this node made or
    /// adopted it and nothing is armed; the arm, if this node made it or
    /// holds its leader's signature; the finish, likewise. Of a run that
    /// was armed and has ended, the finish alone, with the words (the
    /// asker's lacked them). Its own arm and finish go out unsigned here,
    /// like a publish: the driver signs them.
    ///
    /// A node asked about a run it is asking about itself (it passed on the
    /// `held` of a run it does not know yet) keeps the ask, and tells the
    /// asker the proposal once it has it.
    pub fn answer_run(&mut self, asker: &str, id: &str, known: bool, at: At) -> Vec<RunEnvelope> {
        let Some(run) = self.runs.get(id) else {
            let asking = self
                .pulled
                .get(id)
                .is_some_and(|t| at.now.saturating_sub(*t) < WAIT_FOR);
            if asking {
                self.wait(asker, id, at);
            }
            return Vec::new();
        };
        // A node that asks about an ended run holds the rest: it asks for
        // the words its finish lacked. A node that lacks them too (it
        // asked the node that passed it the finish, in turn) tells them
        // once they come.
        if let Some(f) = &run.finish
            && run.armed.is_some()
        {
            let mine = run.holder(f.term) == Some(self.me.as_str());
            let sig = if mine { None } else { run.finish_sig.clone() };
            if !mine && sig.is_none() {
                return Vec::new();
            }
            let lacks = f.lacks_words();
            let mut env = run.envelope(RunMessage::Finish(f.clone()));
            env.sig = sig;
            if lacks {
                self.wait(asker, id, at);
            }
            return vec![env];
        }
        let mut out = Vec::new();
        if !known {
            out.push(run.envelope(RunMessage::Propose(Box::new(run.proposal.clone()))));
        }
        // The plan: this node's own, before the arm; the armed one, from
        // any node (the arm names it by its digest, which the asker checks).
        if let Some(plan) = &run.plan
            && match &run.armed {
                None => run.holder(plan.term) == Some(self.me.as_str()),
                Some(a) => a.plan == plan.id,
            }
        {
            out.extend(run.assign(plan));
        }
        out.extend(self.arm_envelope(run, at));
        if let Some(f) = &run.finish {
            let mine = run.holder(f.term) == Some(self.me.as_str());
            let sig = if mine { None } else { run.finish_sig.clone() };
            if mine || sig.is_some() {
                let mut env = run.envelope(RunMessage::Finish(f.clone()));
                env.sig = sig;
                out.push(env);
            }
        }
        out
    }

    /// What this node says it holds of `run`, in place of re-sending it;
    /// with T0 of its own arm, in its clock as it reads now.
    fn held(&self, run: &Run, at: At) -> RunEnvelope {
        let t0_ns = run
            .armed
            .as_ref()
            .filter(|a| a.by == self.me)
            .map(|a| run.timers.t0_at.map_or(a.t0_ns, |t0| wall_of(t0, at)));
        run.envelope(RunMessage::Held(Held {
            term: run.term,
            plan: run
                .plan
                .as_ref()
                .filter(|p| run.holder(p.term) == Some(self.me.as_str()))
                .map(|p| (p.term, p.id)),
            armed: run
                .armed
                .as_ref()
                .filter(|a| a.by == self.me || a.sig.is_some())
                .map(|a| (a.term, a.plan)),
            t0_ns,
        }))
    }

    /// Keeps at most `keep_runs` runs: the oldest that may go (finished,
    /// or abandoned, and not running a share here) go first. A run under
    /// way is never let go of, nor its data deleted: [`Self::admit`]
    /// refuses new runs instead, so the node may keep more than `keep_runs`
    /// only when it restores more from its data dir.
    fn forget_old(&mut self, wall_ns: i64) {
        while self.runs.len() > self.config.keep_runs {
            let oldest = self
                .runs
                .values()
                .filter(|r| r.is_evictable(wall_ns))
                .min_by_key(|r| r.seen_wall_ns)
                .map(|r| r.id.clone());
            match oldest {
                Some(id) => {
                    self.runs.remove(&id);
                    self.dirty.remove(&id);
                    self.decline(&id);
                    self.evicted.push(id);
                }
                None => break,
            }
        }
    }

    /// The runs forgotten since the last call (over `keep_runs`), for the
    /// runtime to drop their records and shards.
    pub fn take_evicted(&mut self) -> Vec<String> {
        std::mem::take(&mut self.evicted)
    }

    /// The nodes whose clocks this node needs, for each run it is a
    /// candidate of that has not finished: as the leader, every other
    /// candidate (T0 is set past the largest bound of its workers); as a
    /// worker, the leader and the node that armed the run (T0 is in the
    /// clock of the one that armed it). A worker does not sample the other
    /// workers: with a thousand candidates, that was a thousand clock asks
    /// every two seconds on every node.
    pub fn clock_peers(&self, view: &dyn MeshView) -> BTreeSet<String> {
        let mut peers = BTreeSet::new();
        for run in self.runs.values() {
            if run.is_finished() || !run.is_candidate(&self.me) {
                continue;
            }
            match run.leader_term(view) {
                Some((_, leader)) if leader == self.me => {
                    peers.extend(run.proposal.candidates.iter().map(|c| c.id.clone()));
                }
                Some((_, leader)) => {
                    peers.insert(leader.to_owned());
                }
                None => {}
            }
            if let Some(armed) = &run.armed {
                peers.insert(armed.by.clone());
            }
        }
        peers.remove(&self.me);
        peers
    }

    /// Where this node sends a shard of its own of run `id` as it seals
    /// it, while the run goes: to the run's leader, and to the candidate
    /// that would take over from it, so that a leader's death loses none
    /// of its own shards and its successor leads with every shard so far.
    /// Shards spread to every node only once the run ends (anti-entropy),
    /// so that a run's traffic does not grow with its nodes: each shard
    /// crosses the network twice while the run goes, where gossip had
    /// every node pass on every other's. Empty once the run ended.
    pub fn shard_to(&self, id: &str, view: &dyn MeshView) -> Vec<String> {
        let Some(run) = self.runs.get(id).filter(|r| !r.is_finished()) else {
            return Vec::new();
        };
        self.leader_bound(run, view)
    }

    /// The run's leader and the candidate next in line, but this node:
    /// where its shards and its words go while the run goes.
    fn leader_bound(&self, run: &Run, view: &dyn MeshView) -> Vec<String> {
        let (leader, next) = run.leader_and_next(view);
        [leader, next]
            .into_iter()
            .flatten()
            .filter(|n| *n != self.me)
            .map(str::to_owned)
            .collect()
    }

    /// A word of this node's about `run`, told to its leader and the node
    /// next in line (none while it sees neither).
    fn tell(&self, run: &Run, view: &dyn MeshView, body: RunMessage) -> Option<RunAction> {
        let to = self.leader_bound(run, view);
        (!to.is_empty()).then(|| RunAction::Tell {
            to,
            env: run.envelope(body),
        })
    }

    /// Whether this node judges run `id`'s `abortOnFail` thresholds now:
    /// it leads the run, which is armed and not stopped or finished. The
    /// leader is the node that holds every shard while the run goes; the
    /// others hold their own, and a threshold judged on one node's share
    /// (its p95, say) is not the run's.
    pub fn judges_aborts(&self, id: &str, view: &dyn MeshView) -> bool {
        self.runs.get(id).is_some_and(|run| {
            run.armed.is_some()
                && run.stop_by.is_none()
                && !run.is_finished()
                && run.leader(view).is_some_and(|l| l == self.me)
        })
    }

    /// Whether this node is preparing its share of `plan` (so a module
    /// that arrives, or a worker's word, still matters).
    pub fn wants(&self, id: &str, plan: PlanId) -> bool {
        self.runs
            .get(id)
            .is_some_and(|r| r.local == Local::Preparing(plan))
    }

    /// The nodes to ask for a run's module, in order: this node's parent in
    /// the plan's tree ([`crate::module_spread`]), the proposer, then every
    /// node ready for a plan (they fetched it; only a leader hears who is).
    pub fn module_sources(&self, id: &str) -> Vec<String> {
        self.runs
            .get(id)
            .map(|run| self.sources_of(run))
            .unwrap_or_default()
    }

    fn sources_of(&self, run: &Run) -> Vec<String> {
        let parent = run.plan.as_ref().and_then(|plan| {
            module_spread::parent(plan, &run.proposal.candidates, &run.proposer, &self.me)
        });
        let mut sources: Vec<String> = parent.into_iter().map(str::to_owned).collect();
        for node in std::iter::once(&run.proposer).chain(run.ready.keys()) {
            if !sources.contains(node) {
                sources.push(node.clone());
            }
        }
        sources.retain(|s| *s != self.me);
        sources
    }

    /// The share of this node's run was prepared for `plan`.
    pub fn prepared(
        &mut self,
        id: &str,
        plan: PlanId,
        at: At,
        view: &dyn MeshView,
    ) -> Vec<RunAction> {
        let me = self.me.clone();
        let Some(run) = self.runs.get_mut(id) else {
            return Vec::new();
        };
        if run.local != Local::Preparing(plan) {
            return Vec::new();
        }
        run.local = Local::Prepared(plan);
        run.ready.insert(me, plan);
        self.dirty.insert(id.to_owned());
        let Some(run) = self.runs.get(id) else {
            return Vec::new();
        };
        let mut actions: Vec<RunAction> = self
            .tell(run, view, RunMessage::Ready { plan })
            .into_iter()
            .collect();
        actions.extend(self.tick(at, view));
        actions
    }

    /// This node will not take part in a run, for `reason`.
    pub fn refused(
        &mut self,
        id: &str,
        reason: String,
        at: At,
        view: &dyn MeshView,
    ) -> Vec<RunAction> {
        let me = self.me.clone();
        let Some(run) = self.runs.get_mut(id) else {
            return Vec::new();
        };
        // Only a share not yet started can be refused.
        if !matches!(
            run.local,
            Local::Idle | Local::Preparing(_) | Local::Prepared(_)
        ) {
            return Vec::new();
        }
        let reason = clean_reason(&reason);
        run.local = Local::Refused;
        run.refused.insert(me, reason.clone());
        self.dirty.insert(id.to_owned());
        let mut actions = vec![RunAction::Publish(
            run.envelope(RunMessage::Refuse { reason }),
        )];
        actions.extend(self.tick(at, view));
        actions
    }

    /// This node's share really started at `wall_ns` (its own clock).
    ///
    /// The start is told in the arming leader's clock: T0 there plus how
    /// late this node really started after its anchored T0, on its
    /// monotonic clock (`now`, the start's instant), so a step of either
    /// wall clock around T0 does not move it; the bound is the one of the
    /// estimate T0 was translated with. Without an anchor, its wall clock
    /// at the start (`wall_ns`) translated through the current estimate.
    pub fn started(
        &mut self,
        id: &str,
        wall_ns: i64,
        now: Duration,
        view: &dyn MeshView,
    ) -> Vec<RunAction> {
        let me = self.me.clone();
        let Some(run) = self.runs.get_mut(id) else {
            return Vec::new();
        };
        let by = run.armed.as_ref().map(|a| a.by.clone()).unwrap_or_default();
        let entry = match (&run.armed, run.timers.t0_at) {
            (Some(armed), Some(t0_at)) => {
                let late = i64::try_from(now.saturating_sub(t0_at).as_nanos()).unwrap_or(i64::MAX);
                let early = i64::try_from(t0_at.saturating_sub(now).as_nanos()).unwrap_or(i64::MAX);
                (
                    armed.t0_ns.saturating_add(late).saturating_sub(early),
                    run.timers.t0_bound,
                )
            }
            _ => {
                let (offset, bound) = view.offset(&by).unwrap_or((0, i64::MAX / 4));
                (wall_ns.saturating_add(offset), bound)
            }
        };
        run.started.insert(me, entry);
        self.dirty.insert(id.to_owned());
        let Some(run) = self.runs.get(id) else {
            return Vec::new();
        };
        let word = RunMessage::Started {
            at_ns: entry.0,
            bound_ns: entry.1,
        };
        self.tell(run, view, word).into_iter().collect()
    }

    /// This node's share ended, after sending `shards` shards.
    pub fn finished(
        &mut self,
        id: &str,
        shards: u64,
        interrupted: bool,
        view: &dyn MeshView,
    ) -> Vec<RunAction> {
        let me = self.me.clone();
        let Some(run) = self.runs.get_mut(id) else {
            return Vec::new();
        };
        // Only a share that was started ends (a dropped one is no part of
        // the run).
        if !matches!(run.local, Local::Started | Local::Stopping) {
            return Vec::new();
        }
        run.local = Local::Finished;
        // A share handed on did not run to its end, whoever stopped it.
        let interrupted = interrupted || run.handoffs.contains_key(&me);
        run.done.insert(me, (shards, interrupted));
        self.dirty.insert(id.to_owned());
        let Some(run) = self.runs.get(id) else {
            return Vec::new();
        };
        let word = RunMessage::Done {
            shards,
            interrupted,
        };
        self.tell(run, view, word).into_iter().collect()
    }

    /// Takes back a run stored before a restart. A share this node was
    /// running is gone with the old process: the run hears it as
    /// interrupted. Returns the runs whose share was interrupted; the
    /// runtime reports them [`RunsCore::finished`] with the shards it holds.
    pub fn restore(&mut self, mut run: Run, at: At) -> Option<String> {
        run.timers = Timers {
            plan_at: at.now,
            ..Timers::default()
        };
        let mine = run
            .plan
            .as_ref()
            .is_some_and(|p| p.shares.iter().any(|s| s.node == self.me));
        let interrupted = !run.is_finished()
            && !run.done.contains_key(&self.me)
            && (matches!(run.local, Local::Started | Local::Stopping)
                || (run.armed.is_some()
                    && mine
                    && matches!(run.local, Local::Prepared(_) | Local::Preparing(_))));
        if interrupted {
            // `finished` follows, from the runtime, with the shards it holds.
            run.local = Local::Stopping;
        } else if !run.is_finished() && !matches!(run.local, Local::Finished | Local::Refused) {
            run.local = Local::Idle;
        }
        if !run.is_finished() {
            self.woke_at = Some(at.now);
        }
        let id = run.id.clone();
        self.runs.insert(id.clone(), run);
        self.forget_old(at.wall_ns);
        interrupted.then_some(id)
    }

    /// Takes an ended run this node never heard of, from a peer. Each part
    /// passes the checks its run message would (the proposal, the plan, the
    /// finish), starts and dones name nodes of the plan only, and the run
    /// is kept only if it is not older than every run kept when the node
    /// keeps as many as it may. Returns whether it was taken; this node has
    /// no share in it and prepares nothing.
    pub fn adopt(&mut self, ended: EndedRun, at: At) -> Result<bool, String> {
        if self.runs.contains_key(&ended.id) {
            return Ok(false);
        }
        let check = |body: RunMessage| {
            let env = RunEnvelope {
                protocol: RUN_PROTOCOL,
                run: ended.id.clone(),
                body,
                sig: None,
            };
            decode_run(&wire::encode(&env))
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        check(RunMessage::Propose(Box::new(ended.proposal.clone())))?;
        check(RunMessage::Assign(
            ended
                .plan
                .to_wire(&ended.proposal.candidates)
                .ok_or("its plan names a node that is not a candidate")?,
        ))?;
        check(RunMessage::Finish(ended.finish.clone()))?;
        if ended.finish.term > MAX_TERM {
            return Err(format!("its finish has term {}", ended.finish.term));
        }
        if ended
            .armed
            .as_ref()
            .is_some_and(|a| a.plan != ended.plan.id)
        {
            return Err("its arm is of another plan".into());
        }
        if self.declined.contains(&ended.id) {
            return Ok(false);
        }
        // The run's own time (never later than now: a peer's clock, or a
        // forged arm, must not make a run look newer than every run kept)
        // orders it among the kept runs, so a node that keeps as many as it
        // may does not take a run only to drop it.
        let seen = ended.armed.as_ref().map_or(0, |a| a.t0_ns).min(at.wall_ns);
        if self.runs.len() >= self.config.keep_runs
            && self
                .runs
                .values()
                .filter(|r| r.is_evictable(at.wall_ns))
                .all(|r| r.seen_wall_ns >= seen)
        {
            self.decline(&ended.id);
            return Ok(false);
        }
        let mut ended = ended;
        // Starts and dones of nodes outside the plan are dropped, not held
        // against the run: a candidate without a share may have sent them.
        let plan_nodes: BTreeSet<String> =
            ended.plan.shares.iter().map(|s| s.node.clone()).collect();
        ended.started.retain(|node, _| plan_nodes.contains(node));
        ended.done.retain(|node, _| plan_nodes.contains(node));
        let id = ended.id.clone();
        let run = Run {
            id: ended.id,
            proposer: ended.proposal.proposer.clone(),
            proposal: ended.proposal,
            term: ended.finish.term,
            plan: None,
            ready: BTreeMap::new(),
            refused: BTreeMap::new(),
            armed: ended.armed,
            started: ended.started,
            done: ended.done,
            stop_by: None,
            stop_reason: None,
            handoffs: ended
                .finish
                .handoffs
                .iter()
                .map(|h| (h.from.clone(), h.clone()))
                .collect(),
            handoff_sigs: BTreeMap::new(),
            finish_sig: None,
            finish: Some(ended.finish),
            seen_wall_ns: seen,
            owner: None,
            local: Local::Idle,
            live: None,
            timers: Timers {
                plan_at: at.now,
                // Long enough ago that it republishes no finish.
                finished_at: Some(at.now.saturating_sub(self.config.finish_republish_for)),
                ..Timers::default()
            },
            ranked: std::sync::OnceLock::new(),
            candidate_ids: std::sync::OnceLock::new(),
            plan_digest: None,
            derived: None,
            pending_arm: None,
        };
        check_plan(&run, &ended.plan).map_err(|e| e.to_string())?;
        // Ended by the leader of its term, as that leader's signature says
        // (the runtime checked the signature itself).
        let signer = ended.finish_sig.as_ref().map(|s| s.signer.as_str());
        if signer.is_none() || signer != run.holder(run.finish.as_ref().map_or(0, |f| f.term)) {
            return Err("its finish is not signed by the leader that declared it".into());
        }
        let mut run = run;
        run.finish_sig = ended.finish_sig;
        run.set_plan(ended.plan);
        if let Some(bad) = run
            .handoffs
            .values()
            .find_map(|h| check_handoff(&run, h).err())
        {
            return Err(bad.to_string());
        }
        self.runs.insert(id.clone(), run);
        self.dirty.insert(id.clone());
        self.forget_old(at.wall_ns);
        Ok(self.runs.contains_key(&id))
    }

    /// Remembers a run this node let go of (over `keep_runs`), so that
    /// peers telling of it again do not make it take and drop it again.
    fn decline(&mut self, id: &str) {
        if self.declined.len() >= MAX_DECLINED {
            self.declined.pop_first();
        }
        self.declined.insert(id.to_owned());
    }

    /// Runs this node knows of but does not keep: a node asking for the
    /// runs it lacks lists these too.
    pub fn declined(&self) -> impl Iterator<Item = &String> {
        self.declined.iter()
    }

    /// Drives every run: leads, works, re-sends. Call every few tens of ms.
    pub fn tick(&mut self, at: At, view: &dyn MeshView) -> Vec<RunAction> {
        let mut actions = Vec::new();
        if let Some(last) = self.last_tick.replace(at.now)
            && at.now.saturating_sub(last) > WAKE_GAP
        {
            self.woke_at = Some(at.now);
        }
        let ids: Vec<String> = self.runs.keys().cloned().collect();
        for id in ids {
            let Some(mut run) = self.runs.remove(&id) else {
                continue;
            };
            // A plan is known by its term and id: a tick makes a new one
            // or adopts one under its term, and a plan of a thousand shares
            // is not copied twice a tick to find that out.
            let before = (
                run.term,
                run.plan.as_ref().map(|p| (p.term, p.id)),
                run.armed.clone(),
                run.finish.clone(),
                run.local,
            );
            self.drive(&mut run, at, view, &mut actions);
            if before
                != (
                    run.term,
                    run.plan.as_ref().map(|p| (p.term, p.id)),
                    run.armed.clone(),
                    run.finish.clone(),
                    run.local,
                )
            {
                self.dirty.insert(id.clone());
            }
            self.runs.insert(id, run);
        }
        actions
    }

    fn drive(&self, run: &mut Run, at: At, view: &dyn MeshView, out: &mut Vec<RunAction>) {
        if run.timers.t0_at.is_none()
            && let Some(armed) = &run.armed
        {
            let seen = *run.timers.armed_seen_at.get_or_insert(at.now);
            if t0_known(armed, view, seen, at) {
                run.timers.t0_at = Some(monotonic_of(run.local_t0(armed, view), at));
                run.timers.t0_bound = view.offset(&armed.by).map_or(i64::MAX / 4, |o| o.1);
            }
        }
        self.mind_the_cut(run, view, at);
        let progress: Progress = (
            run.term,
            run.plan.as_ref().map(|p| p.id),
            run.armed.as_ref().map(|a| (a.term, a.plan)),
            [
                run.ready.len(),
                run.refused.len(),
                run.started.len(),
                run.done.len(),
                run.handoffs.len(),
            ],
            run.stop_by.is_some(),
            run.finish.is_some(),
        );
        // Until every node of the armed plan has started, a node that
        // missed a message must hear it again within a second: it starts
        // late otherwise. Only a run under way re-sends less often; a
        // finished run, a straggler's question or a node unaware of the arm
        // are answered at the one-second pace.
        let under_way = run.finish.is_none()
            && !run.timers.straggler
            && !run.timers.unaware
            && run.armed.as_ref().is_some_and(|a| {
                run.plan.as_ref().is_some_and(|p| {
                    p.id == a.plan
                        && p.shares.iter().enumerate().all(|(i, s)| {
                            let (started, done) = run.heard(i, &s.node);
                            started || done
                        })
                })
            });
        // The finish, which carries every node's words, slows down the
        // same way: its leader sends it again after 1, 2, then 4 s (a node
        // still talking of the run is answered at once).
        let quiets = under_way || (run.finish.is_some() && !run.timers.straggler);
        if run.timers.progress != Some(progress) || !quiets {
            run.timers.quiet = 0;
        }
        let wait = self.config.republish * (1 << run.timers.quiet);
        let resend = run
            .timers
            .last_publish
            .is_none_or(|t| at.now.saturating_sub(t) >= wait);
        if resend {
            run.timers.last_publish = Some(at.now);
            run.timers.last_hurried = Some(at.now);
            if run.timers.progress == Some(progress) {
                run.timers.quiet = (run.timers.quiet + 1).min(MAX_QUIET_DOUBLINGS);
            }
            run.timers.progress = Some(progress);
        }
        let hurry = self.hurry(run, at, view);
        if let Some(f) = run.finish.clone() {
            let done_at = *run.timers.finished_at.get_or_insert(at.now);
            // The leader re-sends the finish for a while; any node that
            // has it answers a node still talking about the run.
            let recent = at.now.saturating_sub(done_at) < self.config.finish_republish_for;
            if resend && ((recent && self.leads(run, view)) || run.timers.straggler) {
                let straggler = std::mem::take(&mut run.timers.straggler);
                // This node's own finish is signed as it goes out; another
                // leader's is passed on with that leader's signature. It
                // goes without the words (a word per node, 20 KB at 1,000
                // nodes): a node that lacks them asks for them.
                let mine = run.holder(f.term) == Some(self.me.as_str());
                let sig = if mine { None } else { run.finish_sig.clone() };
                // A straggler is the finish's holder's to answer while the
                // holder is alive (a late word told to the leader and the
                // next had both pass it on). Only a straggler that went on
                // talking past two of the holder's answers is answered
                // here too.
                let holders = !mine
                    && straggler
                    && run.holder(f.term).is_some_and(|h| view.alive(h))
                    && run.timers.left_to_holder < STRAGGLERS_LEFT_TO_HOLDER;
                if holders {
                    run.timers.left_to_holder += 1;
                } else if mine || sig.is_some() {
                    if !mine {
                        run.timers.left_to_holder = 0;
                    }
                    let mut env = run.envelope(RunMessage::Finish(f.without_words()));
                    env.sig = sig;
                    out.push(RunAction::Publish(env));
                }
            }
            self.work(run, view, at, out);
            return;
        }
        self.pass_over_a_silent_leader(run, at, view);
        let leader = run.leader_term(view).map(|(t, p)| (t, p.to_owned()));
        // Only the node taking over raises its term by itself; the others
        // raise theirs when they hear the new leader. A node that is not
        // judging takes over no armed run: alone for a moment after a
        // restart, it would raise the term past the leader still alive,
        // and lead from there. Nor does a node cut off from most of the
        // others: it finds the leader silent because it is the one cut
        // off, and once its link is back, with only some of the others
        // heard again, it would lead from its higher term and hand on the
        // share of a live node it has not heard yet (the e2e cut-off test
        // caught that: a link back 3 s before the other). Nor, once its
        // link is back, until it has heard again each node it found
        // silent while cut off ([`Self::judges`]).
        let taking_over = run.armed.as_ref().is_some_and(|a| a.by != self.me)
            && leader.as_ref().is_some_and(|(t, _)| *t > run.term);
        let leads = leader.as_ref().is_some_and(|(_, l)| *l == self.me)
            && (self.judges(run, at) || run.armed.as_ref().is_none_or(|a| a.by == self.me))
            && !(taking_over && run.timers.cut_off);
        if resend {
            self.resend(run, leads, under_way, at, view, out);
        } else if let Some(hurry) = hurry {
            // Not the proposal or the arm itself: a node that missed the
            // arm follows the `held`'s T0 if it holds the plan (asking
            // first started nodes up to 200 ms late: 100 simulated nodes,
            // seed 2), and a node that missed the rest asks for it. The
            // plan goes again as its derivation (a hundred bytes): a node
            // that missed it and asked after a `held` got it 0.55-0.7 s
            // later, which held the arm back (8 of 1,000 simulated nodes,
            // seed 1, never got the one flood of it).
            // The derivation stands for the `held` as well: one message
            // where two went (each of the seven copies a node passes on
            // costs gossipsub's framing and signature besides).
            let said = match (hurry, &run.derived) {
                (Hurry::Plan, Some(derived)) => run.envelope(RunMessage::Assign(derived.clone())),
                _ => self.held(run, at),
            };
            out.push(RunAction::Publish(said));
        }
        if let Some((term, _)) = leader
            && leads
        {
            run.term = run.term.max(term);
            if run.armed.is_some()
                && run
                    .timers
                    .t0_at
                    .is_some_and(|t0| at.now >= t0.saturating_add(START_QUIET))
                && run
                    .timers
                    .live_at
                    .is_none_or(|t| at.now.saturating_sub(t) >= LIVE_EVERY)
            {
                run.timers.live_at = Some(at.now);
                let shares = run
                    .armed
                    .as_ref()
                    .and_then(|a| run.plan.as_ref().filter(|p| p.id == a.plan))
                    .map_or(&[][..], |p| &p.shares[..]);
                out.push(RunAction::Live {
                    run: run.id.clone(),
                    live: Live::heard(
                        term,
                        shares.len(),
                        |i| run.started.contains_key(&shares[i].node),
                        |i| run.done.contains_key(&shares[i].node),
                    ),
                });
            }
            self.lead(run, term, at, view, out);
        }
        self.work(run, view, at, out);
    }

    /// What this node says in a `held` between its one-second re-sends, if
    /// anything: the arm it made, until [`START_QUIET`] before T0, every
    /// [`ARM_HELD_EVERY`] (a node that dropped the arm still hears it
    /// before T0, where the one-second pace would have it start late: 100
    /// simulated nodes with 1 % of first copies dropped started over up to
    /// 119 ms, against 4-6 ms with none dropped); four times a second, the
    /// proposal it made, until there is a plan (the leader itself may have
    /// dropped it); twice a second, the plan it made, as its derivation, for
    /// [`HURRY_PLAN_FOR`] or until it arms (at 300 simulated nodes the last
    /// node ready had dropped the plan and heard it a second later, so the
    /// arm waited for it; four times a second cost 3-4 kB more a node at
    /// 1,000 simulated nodes for the same arm). Only those go out, not the
    /// node's other words. Marks the re-send done.
    fn hurry(&self, run: &mut Run, at: At, view: &dyn MeshView) -> Option<Hurry> {
        let hurry = match &run.armed {
            Some(a)
                if a.by == self.me
                    && run
                        .timers
                        .t0_at
                        .is_some_and(|t0| at.now.saturating_add(START_QUIET) < t0) =>
            {
                Some(Hurry::Arm)
            }
            None if run.plan.is_some()
                && at.now.saturating_sub(run.timers.plan_at) < HURRY_PLAN_FOR
                && self.leads(run, view) =>
            {
                Some(Hurry::Plan)
            }
            None if run.plan.is_none()
                && run.proposer == self.me
                && at.now.saturating_sub(run.timers.known_at) < HURRY_PLAN_FOR =>
            {
                Some(Hurry::Proposal)
            }
            _ => None,
        };
        let pace = match hurry? {
            Hurry::Arm => ARM_HELD_EVERY,
            Hurry::Proposal => self.config.republish / 4,
            Hurry::Plan => self.config.republish / 2,
        };
        if run
            .timers
            .last_hurried
            .is_some_and(|t| at.now.saturating_sub(t) < pace)
        {
            return None;
        }
        run.timers.last_hurried = Some(at.now);
        hurry
    }

    /// A leader that is alive but does not act (it never plans, or never
    /// arms its plan: a broken or hostile member ranked first) would hold
    /// a run `proposed` forever, since leadership follows liveness. So a
    /// node that sees no plan [`PLAN_PATIENCE`] after the current term
    /// began, or no arm three ready timeouts after it, passes that leader over
    /// (its term moves past the leader's); the next candidate in the
    /// ranking then leads, and the others follow it by the usual rule (a
    /// higher term wins). Before T0 only: after the arm, the plan is fixed.
    fn pass_over_a_silent_leader(&self, run: &mut Run, at: At, view: &dyn MeshView) {
        if run.armed.is_some() || run.stop_by.is_some() {
            return;
        }
        let now_at = (run.term, run.plan.as_ref().map(|p| p.id));
        let (seen, since) = *run.timers.term_since.get_or_insert((now_at, at.now));
        if seen != now_at {
            run.timers.term_since = Some((now_at, at.now));
            return;
        }
        let patience = if run.plan.is_some() {
            self.config.ready_timeout * ARM_PATIENCE_READY_TIMEOUTS
        } else {
            PLAN_PATIENCE
        };
        if at.now.saturating_sub(since) <= patience {
            return;
        }
        if let Some((leading, leader)) = run.leader_term(view)
            && leader != self.me
            && leading < MAX_TERM
        {
            run.term = leading + 1;
            run.timers.term_since = Some(((run.term, run.plan.as_ref().map(|p| p.id)), at.now));
        }
    }

    /// Whether this node judges others now. One that was frozen (or
    /// starved), or has just restarted, judges nobody until it has heard
    /// the others again: on waking, everyone looks gone.
    fn judging(&self, at: At) -> bool {
        self.woke_at
            .is_none_or(|w| at.now.saturating_sub(w) > REJUDGE_AFTER)
    }

    /// Whether this node judges the others in `run` now: it is awake
    /// ([`Self::judging`]), and it has heard again every node it found
    /// silent while it was cut off in this run
    /// ([`Self::mind_the_cut`]), or the run is past its end (only the
    /// finish is left to judge then, and a node that died during the cut
    /// must not hold the run open).
    fn judges(&self, run: &Run, at: At) -> bool {
        self.judging(at)
            && (run.timers.unheard_since_cut.is_empty()
                || run
                    .timers
                    .t0_at
                    .is_some_and(|t0| at.now > t0.saturating_add(run.proposal.spec.longest())))
    }

    /// Keeps what this node knows of its own cut in `run`: whether it is
    /// cut off now ([`Self::cut_off`]), and which others it found silent
    /// while it was, until it hears each again. Links come back one peer
    /// at a time: after a cut of seconds, TCP retransmits on each
    /// connection after its own backoff, seconds apart. A node that judged
    /// the others by what it heard in between would take the ones not yet
    /// heard for lost, lead in their place and hand their shares on while
    /// they run (the e2e cut-off test caught it: the leader's share moved
    /// 60 ms after the heal, and the leader ran on). Their silence was the
    /// cut's, so until then this node judges no one lost ([`Self::judges`]).
    fn mind_the_cut(&self, run: &mut Run, view: &dyn MeshView, at: At) {
        run.timers.cut_off =
            run.armed.is_some() && !run.is_finished() && self.cut_off(run, view, at);
        if run.timers.cut_off {
            let Some(plan) = &run.plan else {
                return;
            };
            for s in &plan.shares {
                if s.node != self.me
                    && !view.heard_within(&s.node, CUT_OFF_AFTER)
                    && !view.dead(&s.node)
                    && !run.timers.unheard_since_cut.contains(&s.node)
                {
                    run.timers.unheard_since_cut.insert(s.node.clone());
                }
            }
        } else if !run.timers.unheard_since_cut.is_empty() {
            let done = &run.done;
            run.timers.unheard_since_cut.retain(|n| {
                !view.heard_within(n, CUT_OFF_AFTER) && !view.dead(n) && !done.contains_key(n)
            });
        }
    }

    fn leads(&self, run: &Run, view: &dyn MeshView) -> bool {
        run.leader(view).as_deref() == Some(self.me.as_str())
    }

    /// The leader's part.
    fn lead(
        &self,
        run: &mut Run,
        term: u32,
        at: At,
        view: &dyn MeshView,
        out: &mut Vec<RunAction>,
    ) {
        if let Some(by) = run.stop_by.clone()
            && run.armed.is_none()
        {
            let reason = run.stop_reason.clone();
            self.finish(
                run,
                term,
                Outcome::Stopped { by, reason },
                Vec::new(),
                at,
                out,
            );
            return;
        }
        let Some(armed) = run.armed.clone() else {
            self.plan_and_arm(run, term, at, view, out);
            return;
        };
        // After T0 the plan stays: wait until every node is done or lost.
        let Some(mut plan) = run.plan.clone().filter(|p| p.id == armed.plan) else {
            return;
        };
        // Every deadline below counts from T0 as anchored on the monotonic
        // clock (`drive`, once an estimate of the arming leader's clock is
        // at hand): until then, nothing is judged.
        let Some(t0_at) = run.timers.t0_at else {
            return;
        };
        if armed.term < term {
            // Took over after the arm: the same plan and instant, under
            // this node's term and in its clock as it reads now, so every
            // node hears who leads now.
            let t0_ns = wall_of(t0_at, at);
            plan.term = term;
            let id = plan.id;
            run.set_plan(plan.clone());
            run.armed = Some(Armed {
                term,
                plan: id,
                t0_ns,
                by: self.me.clone(),
                sig: None,
            });
            if let Some(digest) = run.digest() {
                out.push(RunAction::Publish(run.envelope(RunMessage::Arm {
                    term,
                    plan: id,
                    digest,
                    t0_ns,
                })));
            }
        }
        // A node that is gone is lost once the run should have ended (it
        // may only be cut off, and come back with its Done); one that is
        // there but silent, after a grace. Counted on the monotonic clock
        // from T0 as anchored when the arm was known: a step of this
        // node's wall clock, either way, neither ends the run early nor
        // holds it open.
        let end = t0_at.saturating_add(run.proposal.spec.longest());
        let stopped_for = run.timers.stop_at.map(|s| at.now.saturating_sub(s));
        let gone_is_lost = at.now > end.saturating_add(LOST_AFTER_END)
            || stopped_for.is_some_and(|d| d > LOST_AFTER_END);
        let silent_is_lost = at.now > end.saturating_add(self.config.done_grace)
            || stopped_for
                .is_some_and(|d| d > run.proposal.spec.graceful_stop + self.config.done_grace);
        // `--on-loss abort`: after T0, a node gone for [`ABORT_GRACE`]
        // before its share was done stops the run on every node at once,
        // naming the node lost. Not when most of the others look gone at
        // once: then this leader is the one cut off (or it was frozen and
        // has not heard their heartbeats yet).
        let gone: Vec<String> = plan
            .shares
            .iter()
            .filter(|s| !run.done.contains_key(&s.node) && !view.alive(&s.node))
            .map(|s| s.node.clone())
            .collect();
        run.timers.gone_since.retain(|node, _| gone.contains(node));
        for node in &gone {
            run.timers.gone_since.entry(node.clone()).or_insert(at.now);
        }
        let others = plan.shares.iter().filter(|s| s.node != self.me).count();
        let judging = self.judges(run, at);
        if run.proposal.spec.on_loss == OnLoss::Redistribute && judging {
            self.hand_on(run, &plan, term, t0_at, end, at, view, out);
        }
        if run.proposal.spec.on_loss == OnLoss::Abort
            && run.stop_by.is_none()
            && at.now >= t0_at
            && judging
        {
            let gone: Vec<String> = run
                .timers
                .gone_since
                .iter()
                .filter(|(_, since)| at.now.saturating_sub(**since) >= ABORT_GRACE)
                .map(|(node, _)| node.clone())
                .collect();
            if !gone.is_empty() && 2 * run.timers.gone_since.len() <= others {
                let outcome = Outcome::Stopped {
                    by: self.me.clone(),
                    reason: None,
                };
                self.finish(run, term, outcome, gone, at, out);
                return;
            }
        }
        let mut lost = Vec::new();
        for share in &plan.shares {
            if run.done.contains_key(&share.node) {
                continue;
            }
            // Its share moved on: the run waits for it no more.
            if run.handoffs.contains_key(&share.node) {
                lost.push(share.node.clone());
                continue;
            }
            let gone = !view.alive(&share.node);
            if (gone && gone_is_lost) || silent_is_lost {
                lost.push(share.node.clone());
            } else {
                return;
            }
        }
        let outcome = match run.stop_by.clone() {
            Some(by) => Outcome::Stopped {
                by,
                reason: run.stop_reason.clone(),
            },
            None => Outcome::Complete,
        };
        self.finish(run, term, outcome, lost, at, out);
    }

    /// `--on-loss redistribute`, the leader's part: after T0 and before the
    /// executor's end, the share of each node of the armed plan that is
    /// gone, or that said its share was interrupted, goes to the nodes
    /// still running, from now on ([`Handoff`]). Each survivor gets a part
    /// of the lost segment in proportion to the VUs it has left under its
    /// announced capacity; one with none left gets nothing, and a share no
    /// one has room for stays lost (the run is then short).
    ///
    /// Not when most of the others look gone at once (this leader is the
    /// one cut off: their side hands its share on instead), nor, in a run
    /// of two, for a peer only silent rather than known dead (its process
    /// refused the redial): two nodes that cannot hear each other would
    /// each take the other's share, and the target would get the load
    /// twice.
    #[allow(clippy::too_many_arguments)]
    fn hand_on(
        &self,
        run: &mut Run,
        plan: &Plan,
        term: u32,
        t0_at: Duration,
        end: Duration,
        at: At,
        view: &dyn MeshView,
        out: &mut Vec<RunAction>,
    ) {
        let executor_end = t0_at.saturating_add(run.proposal.spec.duration());
        if run.stop_by.is_some()
            || at.now < t0_at
            || at.now >= executor_end.min(end)
            || !run.proposal.spec.can_hand_on()
        {
            return;
        }
        let others = plan.shares.iter().filter(|s| s.node != self.me).count();
        // Gone but not known dead: cut off, perhaps from this node only.
        let silent = plan
            .shares
            .iter()
            .filter(|s| {
                !run.done.contains_key(&s.node) && !view.alive(&s.node) && !view.dead(&s.node)
            })
            .count();
        if 2 * silent > others.max(2) {
            return;
        }
        let lost: Vec<String> = plan
            .shares
            .iter()
            .filter(|s| !run.handoffs.contains_key(&s.node))
            .filter(|s| match run.done.get(&s.node) {
                Some((_, interrupted)) => *interrupted,
                None => !view.alive(&s.node) && (others > 1 || view.dead(&s.node)),
            })
            .map(|s| s.node.clone())
            .collect();
        let since_ms = u64::try_from(at.now.saturating_sub(t0_at).as_millis()).unwrap_or(u64::MAX);
        for node in lost {
            let Some(handoff) = handoff_of(run, plan, &node, term, since_ms, view) else {
                continue;
            };
            run.handoffs.insert(node, handoff.clone());
            out.push(RunAction::Publish(
                run.envelope(RunMessage::Handoff(handoff)),
            ));
        }
    }

    fn plan_and_arm(
        &self,
        run: &mut Run,
        term: u32,
        at: At,
        view: &dyn MeshView,
        out: &mut Vec<RunAction>,
    ) {
        // Nodes that did not get ready in time are treated as refusing.
        if let Some(plan) = &run.plan
            && at.now.saturating_sub(run.timers.plan_at) > self.config.ready_timeout
        {
            let slow: Vec<String> = plan
                .shares
                .iter()
                .filter(|s| run.ready.get(&s.node) != Some(&plan.id))
                .map(|s| s.node.clone())
                .collect();
            for node in slow {
                run.refused.entry(node).or_insert_with(|| {
                    format!("not ready within {} s", self.config.ready_timeout.as_secs())
                });
            }
        }
        let usable = |node: &str| view.alive(node) && !run.refused.contains_key(node);
        let plan_ok = run
            .plan
            .as_ref()
            .is_some_and(|p| p.shares.iter().all(|s| usable(&s.node)));
        if !plan_ok {
            // Capacities as the nodes' own heartbeats announce them, not as
            // the proposal claims.
            let eligible: Vec<Candidate> = run
                .proposal
                .candidates
                .iter()
                .filter(|c| usable(&c.id))
                .map(|c| Candidate {
                    capacity: view
                        .capacity(&c.id)
                        .map_or(c.capacity, |v| v.min(c.capacity)),
                    ..c.clone()
                })
                .collect();
            let derivation = Derivation::of(&run.proposal.candidates, &eligible);
            match shares_for(&run.id, &run.proposal, eligible) {
                Ok(shares) => {
                    let version = run
                        .plan
                        .as_ref()
                        .filter(|p| p.id.0 == term)
                        .map(|p| p.id.1 + 1)
                        .unwrap_or(1);
                    let plan = Plan {
                        term,
                        id: (term, version),
                        shares,
                    };
                    let plan = if plan.shares.is_empty() {
                        None
                    } else {
                        Some(plan)
                    };
                    match plan {
                        Some(plan) => {
                            run.timers.plan_at = at.now;
                            run.timers.last_hurried = Some(at.now);
                            let derived = PlanOnWire {
                                term: plan.term,
                                id: plan.id,
                                shares: Vec::new(),
                                derivation: Some(derivation.with_digest(plan.digest())),
                            };
                            out.push(RunAction::Publish(
                                run.envelope(RunMessage::Assign(derived.clone())),
                            ));
                            run.set_plan(plan);
                            run.derived = Some(derived);
                        }
                        None => self.fail(run, term, "no node can take a share".into(), at, out),
                    }
                }
                Err(e) => {
                    let mut reason = e.to_string();
                    if !run.refused.is_empty() {
                        let refusals: Vec<String> = run
                            .refused
                            .iter()
                            .map(|(n, r)| format!("{n}: {r}"))
                            .collect();
                        reason = format!("{reason}; refused by {}", refusals.join("; "));
                    }
                    self.fail(run, term, reason, at, out);
                }
            }
            return;
        }
        let Some(plan) = run.plan.clone() else {
            return;
        };
        if plan.term < term {
            // A new leader adopts the plan it found, under its own term.
            let adopted = Plan {
                term,
                ..plan.clone()
            };
            out.extend(run.assign(&adopted).map(RunAction::Publish));
            run.set_plan(adopted);
            return;
        }
        // Ready, and with a clock estimate each way to translate T0 (given
        // 10 s to arrive: without one a node starts at T0 of its own clock).
        // A worker that dialed this leader for the run may have sampled it
        // only once this leader sampled it: armed then, it waited for its
        // first sample, and started a few ms past T0 (40 real nodes).
        let estimates = at.now.saturating_sub(run.timers.plan_at) > Duration::from_secs(10)
            || plan
                .shares
                .iter()
                .all(|s| view.offset(&s.node).is_some() && view.holds_my_clock(&s.node));
        let all_ready = plan
            .shares
            .iter()
            .all(|s| run.ready.get(&s.node) == Some(&plan.id));
        if !all_ready || !estimates || view.clock_settling() {
            return;
        }
        // T0 far enough ahead for the arm to reach everyone: the lead, and
        // four times the largest clock bound (a bound is at least half the
        // round trip): two round trips to the farthest worker for the arm
        // to arrive, and two more of clock samples before it hands its
        // share the start (`START_AHEAD`). With two, a worker 300 ms away
        // held 4-5 samples of the leader and starts spread over 5.7 ms
        // (1,000 simulated nodes, seed 2); with four, over 2.7 ms. On one
        // site, where bounds are a millisecond, it adds a few ms.
        let slowest = plan
            .shares
            .iter()
            .filter_map(|s| view.offset(&s.node).map(|o| o.1))
            .max()
            .unwrap_or(0)
            .clamp(0, 2_000_000_000);
        let t0_ns = at
            .wall_ns
            .saturating_add(duration_ns(self.config.arm_lead))
            .saturating_add(4 * slowest);
        run.armed = Some(Armed {
            term,
            plan: plan.id,
            t0_ns,
            by: self.me.clone(),
            sig: None,
        });
        // T0 on the monotonic clock now, with the wall clock it was read
        // from: anchored at the next tick instead, a step of this node's
        // wall clock in between would move it (by +90 s: every node looked
        // silent past the run's end, and was declared lost).
        run.timers.t0_at = Some(monotonic_of(t0_ns, at));
        run.timers.t0_bound = 0;
        // The hurried re-sends count from this first copy.
        run.timers.last_hurried = Some(at.now);
        let digest = run.digest().unwrap_or_else(|| plan.digest());
        out.push(RunAction::Publish(run.envelope(RunMessage::Arm {
            term,
            plan: plan.id,
            digest,
            t0_ns,
        })));
    }

    fn fail(&self, run: &mut Run, term: u32, reason: String, at: At, out: &mut Vec<RunAction>) {
        let reason = clean_reason(&reason);
        self.finish(run, term, Outcome::Failed { reason }, Vec::new(), at, out);
    }

    fn finish(
        &self,
        run: &mut Run,
        term: u32,
        outcome: Outcome,
        lost: Vec<String>,
        at: At,
        out: &mut Vec<RunAction>,
    ) {
        let words = run.words();
        let finish = Finish {
            term,
            outcome,
            lost,
            handoffs: run.handoffs.values().cloned().collect(),
            words_digest: (!words.is_empty())
                .then(|| serde_bytes::ByteBuf::from(wire::words_digest(&words))),
            words,
        };
        run.finish = Some(finish.clone());
        run.timers.finished_at = Some(at.now);
        // The re-sends count from this first copy.
        run.timers.last_publish = Some(at.now);
        // Past a few nodes the gossip floods it without the words, which
        // its digest names: each node asks the node that passed it the
        // finish for them, and so receives them once (1,000 simulated
        // nodes, seed 1: 135 kB of a node's 228 kB of run messages after
        // the arm were the copies of the first finish, with the words).
        let flooded = if wire::encode(&finish.words).len() <= self.config.words_inline_bytes {
            finish
        } else {
            finish.without_words()
        };
        out.push(RunAction::Publish(
            run.envelope(RunMessage::Finish(flooded)),
        ));
    }

    /// The worker's part.
    fn work(&self, run: &mut Run, view: &dyn MeshView, at: At, out: &mut Vec<RunAction>) {
        let stop = RunAction::Stop {
            run: run.id.clone(),
        };
        // Armed, and prepared for the armed plan: its share is due, though
        // the start instant is handed to it only [`START_AHEAD`] before T0.
        // Stopped or fenced meanwhile, it ends as a started share would,
        // with a `done` of no shards (the runtime's share, stopped before
        // its start, says it finished), so the run does not wait for it.
        let due = matches!(run.local, Local::Prepared(p)
            if run.armed.as_ref().is_some_and(|a| a.plan == p));
        if run.is_finished() || run.stop_by.is_some() {
            match run.local {
                Local::Prepared(_) if due => {
                    run.local = Local::Stopping;
                    out.push(stop);
                }
                Local::Preparing(_) | Local::Prepared(_) => {
                    run.local = Local::Idle;
                    out.push(stop);
                }
                Local::Started => {
                    // `finished` follows.
                    run.local = Local::Stopping;
                    out.push(stop);
                }
                _ => {}
            }
            return;
        }
        if run.done.contains_key(&self.me)
            || matches!(
                run.local,
                Local::Finished | Local::Refused | Local::Stopping
            )
        {
            return;
        }
        if run.local == Local::Started || due {
            // Handed on, or cut off from every other node (whose side then
            // hands this share on): fenced, the share stops at once and
            // sends nothing more, so no load goes out twice.
            let redistributes = run.proposal.spec.on_loss == OnLoss::Redistribute;
            if run.handoffs.contains_key(&self.me) || (redistributes && run.timers.cut_off) {
                run.local = Local::Stopping;
                out.push(stop);
                return;
            }
        }
        if run.local == Local::Started {
            for h in run.handoffs.values() {
                if run.timers.taken.contains(&h.from) {
                    continue;
                }
                if let Some(part) = h.to.iter().find(|a| a.node == self.me) {
                    run.timers.taken.insert(h.from.clone());
                    out.push(RunAction::TakeOver {
                        run: run.id.clone(),
                        share: Share {
                            run_id: run.id.clone(),
                            node: self.me.clone(),
                            segment: part.segment,
                            first_vu_id: part.first_vu_id,
                        },
                        since: Duration::from_millis(h.since_ms),
                    });
                }
            }
        }
        let mine = run.share_of(&self.me).cloned();
        let plan_id = run.plan.as_ref().map(|p| p.id);
        match (&run.armed, mine, plan_id) {
            (Some(armed), Some(_), Some(id)) if armed.plan == id => match run.local {
                // Prepared for another plan (this node made one before it
                // heard the arm): prepare the armed one, and start late.
                Local::Preparing(p) | Local::Prepared(p) if p != id => self.prepare(run, id, out),
                // Without an estimate of the arming leader's clock (this
                // node's own clock just stepped and its samples went), T0
                // cannot be translated: wait for one, a few hundred ms.
                Local::Prepared(p)
                    if p == id
                        && !t0_known(
                            armed,
                            view,
                            *run.timers.armed_seen_at.get_or_insert(at.now),
                            at,
                        ) => {}
                Local::Prepared(p) if p == id => {
                    // A worker translates T0 again at each tick until
                    // [`START_AHEAD`] before it: each sample of the leader's
                    // clock narrows the estimate, and the far workers hold
                    // few when the arm comes (4-5 across a 300 ms round
                    // trip, against 12 near the leader: 1,000 simulated
                    // nodes, seed 2). Without an estimate (its own clock
                    // just stepped) it keeps the instant it anchored; and
                    // it keeps it when the two translations cannot both
                    // hold (they lie further apart than their bounds): the
                    // leader's clock stepped since it said T0, and T0 is
                    // in its clock from before.
                    if armed.by != self.me
                        && let Some(anchored) = run.timers.t0_at
                        && anchored.saturating_sub(at.now) > START_AHEAD
                        && let Some((_, bound)) = view.offset(&armed.by)
                    {
                        let t0 = monotonic_of(run.local_t0(armed, view), at);
                        let apart =
                            i64::try_from(t0.abs_diff(anchored).as_nanos()).unwrap_or(i64::MAX);
                        if apart <= run.timers.t0_bound.saturating_add(bound) {
                            run.timers.t0_at = Some(t0);
                            run.timers.t0_bound = bound;
                        }
                        if run
                            .timers
                            .t0_at
                            .is_some_and(|t0| t0.saturating_sub(at.now) > START_AHEAD)
                        {
                            return;
                        }
                    }
                    // T0 as anchored on the monotonic clock, read in this
                    // node's wall clock as it is now.
                    let at_wall_ns = match run.timers.t0_at {
                        Some(t0) => wall_of(t0, at),
                        None => run.local_t0(armed, view),
                    };
                    run.local = Local::Started;
                    out.push(RunAction::Start {
                        run: run.id.clone(),
                        at_wall_ns,
                    });
                }
                Local::Idle => self.prepare(run, id, out),
                _ => {}
            },
            (Some(_), _, _) => {
                // Armed without this node: drop anything prepared.
                if matches!(run.local, Local::Preparing(_) | Local::Prepared(_)) {
                    run.local = Local::Idle;
                    out.push(stop);
                }
            }
            (None, Some(_), Some(id)) => match run.local {
                Local::Idle => self.prepare(run, id, out),
                Local::Preparing(p) | Local::Prepared(p) if p != id => self.prepare(run, id, out),
                _ => {}
            },
            (None, None, _) => {
                if matches!(run.local, Local::Preparing(_) | Local::Prepared(_)) {
                    run.local = Local::Idle;
                    out.push(stop);
                }
            }
            (None, Some(_), None) => {}
        }
    }

    /// Whether this node, running its share of a run of three nodes or
    /// more, is cut off: it has heard none of more than half of the others
    /// still running for [`CUT_OFF_AFTER`], and they are not known dead
    /// (their processes did not refuse a redial).
    /// The leader on their side hands this share on (a leader that finds
    /// most of the others gone hands nothing on: the rule is the same on
    /// both sides). Not judged right after this node was frozen.
    fn cut_off(&self, run: &Run, view: &dyn MeshView, at: At) -> bool {
        let Some(plan) = &run.plan else {
            return false;
        };
        if plan.shares.len() < 3 || !self.judging(at) {
            return false;
        }
        let others = || {
            plan.shares.iter().enumerate().filter(|(i, s)| {
                s.node != self.me
                    && !run.heard(*i, &s.node).1
                    && !run.handoffs.contains_key(&s.node)
            })
        };
        let n = others().count();
        // Judged every tick with thousands of shares: the walk stops once
        // the answer is known, which is at about half of them most of the
        // time (all heard).
        let (mut silent, mut heard) = (0, 0);
        for (_, s) in others() {
            if !view.heard_within(&s.node, CUT_OFF_AFTER) && !view.dead(&s.node) {
                silent += 1;
            } else {
                heard += 1;
            }
            if 2 * silent > n || 2 * (n - heard) <= n {
                break;
            }
        }
        2 * silent > n
    }

    fn prepare(&self, run: &mut Run, plan: PlanId, out: &mut Vec<RunAction>) {
        let Some(mine) = run.share_of(&self.me).cloned() else {
            return;
        };
        run.local = Local::Preparing(plan);
        let sources = self.sources_of(run);
        out.push(RunAction::Prepare {
            run: run.id.clone(),
            plan,
            spec: Box::new(run.proposal.spec.clone()),
            share: Share {
                run_id: run.id.clone(),
                node: self.me.clone(),
                segment: mine.segment,
                first_vu_id: mine.first_vu_id,
            },
            sources,
        });
    }

    /// What this node re-sends once a second, until the run is finished.
    fn resend(
        &self,
        run: &mut Run,
        leads: bool,
        under_way: bool,
        at: At,
        view: &dyn MeshView,
        out: &mut Vec<RunAction>,
    ) {
        self.resend_all(run, leads, under_way, at, view, out);
        run.timers.unaware = false;
    }

    /// The arm, by the leader that made it, or passed on to a node that
    /// talks of another plan.
    fn publish_arm(&self, run: &Run, at: At, out: &mut Vec<RunAction>) {
        if run.armed.as_ref().is_some_and(|a| a.by == self.me) || run.timers.unaware {
            out.extend(self.arm_envelope(run, at).map(RunAction::Publish));
        }
    }

    /// The arm this node holds, as it would send it: its own, with T0 in
    /// its clock as it reads now (unsigned: the driver signs it), or
    /// another leader's with that leader's signature (none without one).
    fn arm_envelope(&self, run: &Run, at: At) -> Option<RunEnvelope> {
        if let Some(a) = &run.armed
            && run.plan.as_ref().is_some_and(|p| p.id == a.plan)
            && let Some(digest) = run.digest()
        {
            // The leader that armed says T0 in its clock as it reads now
            // (its clock may have stepped since; members sample it again
            // and would translate the old reading wrongly); a relay can
            // only pass the instant on as it was armed.
            let t0_ns = match run.timers.t0_at {
                Some(t0) if a.by == self.me => wall_of(t0, at),
                _ => a.t0_ns,
            };
            // A relay passes the arm on with the arming leader's signature
            // (none kept, nothing to pass on: it would be refused).
            let sig = if a.by == self.me { None } else { a.sig.clone() };
            if a.by == self.me || sig.is_some() {
                let mut env = run.envelope(RunMessage::Arm {
                    term: a.term,
                    plan: a.plan,
                    digest,
                    t0_ns,
                });
                env.sig = sig;
                return Some(env);
            }
        }
        None
    }

    /// What this node re-sends at the usual pace. Once every node of the
    /// armed plan has started (`under_way`), the leader re-sends neither the
    /// proposal nor the arm (every node of the plan holds them; one that
    /// talks of another plan is passed the arm), and a node whose `started`
    /// or `done` the leader's latest `live` says it holds does not re-send
    /// it (nor does the leader its own): at 1,000 simulated nodes those
    /// re-sends were most of a run's traffic, each node passing on every
    /// other's every few seconds. Those two words go to the leader and the
    /// node next in line alone; a new leader whose `live` lacks one hears it
    /// again.
    fn resend_all(
        &self,
        run: &Run,
        leads: bool,
        under_way: bool,
        at: At,
        view: &dyn MeshView,
        out: &mut Vec<RunAction>,
    ) {
        // What it holds (the proposal, its plan, its arm), until a plan
        // exists (the proposer) or the run is under way (its leader), so a
        // node that missed one asks for it and can still follow.
        if (leads && !under_way) || (run.proposer == self.me && run.plan.is_none()) {
            out.push(RunAction::Publish(self.held(run, at)));
        }
        if run.timers.unaware {
            self.publish_arm(run, at, out);
        }
        let acked = |has: fn(&Live, usize) -> bool| {
            let armed_plan = run.armed.as_ref().map(|a| a.plan);
            let index = run
                .plan
                .as_ref()
                .filter(|p| Some(p.id) == armed_plan)
                .and_then(|p| p.shares.iter().position(|s| s.node == self.me));
            // The leader holds its own words.
            leads
                || run
                    .live
                    .as_ref()
                    .zip(index)
                    .is_some_and(|(live, i)| has(live, i))
        };
        if let Some(plan) = run.ready.get(&self.me)
            && run.armed.is_none()
        {
            out.extend(self.tell(run, view, RunMessage::Ready { plan: *plan }));
        }
        if let Some(reason) = run.refused.get(&self.me)
            && run.armed.is_none()
        {
            out.push(RunAction::Publish(run.envelope(RunMessage::Refuse {
                reason: reason.clone(),
            })));
        }
        if let Some((at_ns, bound_ns)) = run.started.get(&self.me)
            && !acked(Live::has_started)
        {
            let word = RunMessage::Started {
                at_ns: *at_ns,
                bound_ns: *bound_ns,
            };
            out.extend(self.tell(run, view, word));
        }
        if let Some((shards, interrupted)) = run.done.get(&self.me)
            && !acked(Live::has_done)
        {
            let word = RunMessage::Done {
                shards: *shards,
                interrupted: *interrupted,
            };
            out.extend(self.tell(run, view, word));
        }
        if run.stop_by.as_deref() == Some(self.me.as_str()) {
            out.push(RunAction::Publish(run.envelope(RunMessage::Stop {
                reason: run.stop_reason.clone(),
            })));
        }
        if leads {
            // Its own handoffs signed as they go out, an earlier leader's
            // with that leader's signature.
            for (from, h) in &run.handoffs {
                let mine = run.holder(h.term) == Some(self.me.as_str());
                let sig = if mine {
                    None
                } else {
                    run.handoff_sigs.get(from).cloned()
                };
                if mine || sig.is_some() {
                    let mut env = run.envelope(RunMessage::Handoff(h.clone()));
                    env.sig = sig;
                    out.push(RunAction::Publish(env));
                }
            }
        }
    }
}

/// Obeys a leader's message of `term` from `from`, or says why not: as
/// [`Leadership::observe`], `from` must hold that rank, and no higher term
/// may have been seen.
fn obey(run: &mut Run, term: u32, from: &str) -> Result<(), RunRefused> {
    if run.holder(term) != Some(from) || term < run.term || term > MAX_TERM {
        return Err(RunRefused::NotLeader(from.to_owned()));
    }
    run.term = term;
    Ok(())
}

/// Checks that a plan only names candidates, each once.
fn check_plan(run: &Run, plan: &Plan) -> Result<(), RunRefused> {
    let mut seen = BTreeSet::new();
    for s in &plan.shares {
        if !run.is_candidate(&s.node) || !seen.insert(&s.node) {
            return Err(RunRefused::BadPlan(format!(
                "the plan names {} twice, or a node that is not a candidate",
                s.node
            )));
        }
    }
    Ok(())
}

/// The handoff of `lost`'s share, from `since_ms`: its segment cut among
/// the nodes of the plan still running (alive, not done, not handed on
/// themselves), each in proportion to the VUs it has left under its
/// capacity; `None` when no one has room.
fn handoff_of(
    run: &Run,
    plan: &Plan,
    lost: &str,
    term: u32,
    since_ms: u64,
    view: &dyn MeshView,
) -> Option<Handoff> {
    let spec = &run.proposal.spec;
    let segment = plan.shares.iter().find(|s| s.node == lost)?.segment;
    let mut room: Vec<(String, u64)> = Vec::new();
    for share in &plan.shares {
        let node = &share.node;
        if node == lost
            || !view.alive(node)
            || run.done.contains_key(node)
            || run.handoffs.contains_key(node)
        {
            continue;
        }
        let claimed = run
            .proposal
            .candidates
            .iter()
            .find(|c| c.id == *node)
            .map_or(0, |c| c.capacity);
        let capacity = u64::from(view.capacity(node).map_or(claimed, |v| v.min(claimed)));
        let taken: u64 = run
            .handoffs
            .values()
            .flat_map(|h| &h.to)
            .filter(|a| a.node == *node)
            .map(|a| spec.share_vus(&a.segment))
            .sum();
        let used = spec.share_vus(&share.segment).saturating_add(taken);
        let left = capacity.saturating_sub(used);
        if left > 0 {
            room.push((node.clone(), left));
        }
    }
    if room.is_empty() {
        return None;
    }
    let weights: Vec<u64> = room.iter().map(|(_, w)| *w).collect();
    let parts = segment.subdivide(&weights)?;
    let max_vus = u64::from(spec.max_vus());
    let to: Vec<Assigned> = room
        .into_iter()
        .zip(parts)
        .map(|((node, _), part)| Assigned {
            node,
            segment: part,
            first_vu_id: part.offset(max_vus) + 1,
        })
        .collect();
    Some(Handoff {
        term,
        plan: plan.id,
        from: lost.to_owned(),
        since_ms,
        to,
    })
}

/// Checks that a handoff fits the plan: it is of the plan held, the node
/// it moves has a share there, and its parts tile that share and go to
/// other nodes of the plan.
fn check_handoff(run: &Run, h: &Handoff) -> Result<(), RunRefused> {
    let bad = |why: &str| {
        Err(RunRefused::BadPlan(format!(
            "a handoff of {}: {why}",
            h.from
        )))
    };
    let Some(plan) = run.plan.as_ref().filter(|p| p.id == h.plan) else {
        return bad("of another plan than the one held here");
    };
    let Some(share) = plan.shares.iter().find(|s| s.node == h.from) else {
        return bad("the node has no share in the plan");
    };
    let parts: Vec<ExecutionSegment> = h.to.iter().map(|a| a.segment).collect();
    if !share.segment.is_tiled_by(&parts) {
        return bad("its parts do not tile the node's share");
    }
    if h.to
        .iter()
        .any(|a| a.node == h.from || !plan.shares.iter().any(|s| s.node == a.node))
    {
        return bad("a part goes back to the node, or to a node without a share");
    }
    Ok(())
}

/// The shares of a plan over `eligible` (the proposal's candidates a
/// leader found usable, in the proposal's order, with the capacities it
/// took): what a leader decides, and what every node works out again from
/// a [`Derivation`].
fn shares_for(
    run_id: &str,
    proposal: &Proposal,
    eligible: Vec<Candidate>,
) -> Result<Vec<Assigned>, assign::AssignError> {
    let mut eligible = select(run_id, eligible, proposal);
    let max_vus = u64::from(proposal.spec.max_vus());
    // With fewer VUs than nodes, a node whose share has no VU of a
    // scenario could run none of its iterations or arrivals: it takes no
    // part (not with region weights, where a region's only node must stay).
    if proposal.weights.is_none()
        && let Ok(shares) = assign::assign(run_id, &eligible, None, max_vus)
    {
        let spec = &proposal.spec;
        let idle: BTreeSet<String> = shares
            .iter()
            .filter(|s| {
                // No VU at all; or none for work split apart from the VUs
                // (shared iterations, arrivals), which would be left undone
                // (a closed model's VUs carry their own work).
                spec.share_vus(&s.segment) == 0
                    || spec.scenarios.iter().any(|sc| {
                        matches!(
                            sc.executor,
                            crate::spec::Executor::SharedIterations { .. }
                                | crate::spec::Executor::ConstantArrivalRate { .. }
                                | crate::spec::Executor::RampingArrivalRate { .. }
                        ) && sc.executor.share_vus(&s.segment) == 0
                    })
            })
            .map(|s| s.node.clone())
            .collect();
        if !idle.is_empty() && idle.len() < shares.len() {
            eligible.retain(|c| !idle.contains(&c.id));
        }
    }
    let shares = assign::assign(run_id, &eligible, proposal.weights.as_deref(), max_vus)?;
    Ok(shares
        .into_iter()
        .map(|s| Assigned {
            node: s.node,
            segment: s.segment,
            first_vu_id: s.first_vu_id,
        })
        .collect())
}

impl Derivation {
    /// What sets `eligible` apart from the proposal's `candidates`: those
    /// left out, and the capacities that differ (its digest still empty).
    fn of(candidates: &[Candidate], eligible: &[Candidate]) -> Derivation {
        let kept: BTreeMap<&str, u32> = eligible
            .iter()
            .map(|c| (c.id.as_str(), c.capacity))
            .collect();
        let mut derivation = Derivation {
            out: Vec::new(),
            capacities: Vec::new(),
            digest: Vec::new(),
        };
        for (c, i) in candidates.iter().zip(0u32..) {
            match kept.get(c.id.as_str()) {
                None => derivation.out.push(i),
                Some(capacity) if *capacity != c.capacity => {
                    derivation.capacities.push((i, *capacity));
                }
                Some(_) => {}
            }
        }
        derivation
    }

    fn with_digest(self, digest: Vec<u8>) -> Derivation {
        Derivation { digest, ..self }
    }
}

/// The plan a leader derived as `on_wire` says, worked out again from the
/// proposal; an error if the candidates it names are not the proposal's,
/// or the plan it gives is not the leader's (its digest differs).
fn derive(run_id: &str, proposal: &Proposal, on_wire: &PlanOnWire) -> Result<Plan, String> {
    let Some(d) = &on_wire.derivation else {
        return on_wire.resolve(&proposal.candidates);
    };
    let places = proposal.candidates.len();
    if let Some(far) = d
        .out
        .iter()
        .chain(d.capacities.iter().map(|c| &c.0))
        .find(|i| **i as usize >= places)
    {
        return Err(format!("candidate {far}, of {places} candidates"));
    }
    let capacities: BTreeMap<u32, u32> = d.capacities.iter().copied().collect();
    let eligible = proposal
        .candidates
        .iter()
        .zip(0u32..)
        .filter(|(_, i)| d.out.binary_search(i).is_err())
        .map(|(c, i)| Candidate {
            capacity: capacities.get(&i).copied().unwrap_or(c.capacity),
            ..c.clone()
        })
        .collect();
    let shares = shares_for(run_id, proposal, eligible).map_err(|e| e.to_string())?;
    let plan = Plan {
        term: on_wire.term,
        id: on_wire.id,
        shares,
    };
    if plan.digest() != d.digest {
        return Err("the plan worked out from the proposal is not the leader's".into());
    }
    Ok(plan)
}

/// With `--nodes N`, the N candidates that take part: one per weighted
/// region first, then by rank, so every node picks the same ones.
fn select(run_id: &str, eligible: Vec<Candidate>, proposal: &Proposal) -> Vec<Candidate> {
    let Some(n) = proposal.nodes.map(|n| n as usize) else {
        return eligible;
    };
    if eligible.len() <= n {
        return eligible;
    }
    let ids: Vec<String> = eligible.iter().map(|c| c.id.clone()).collect();
    let ranked = ranking(run_id, &ids);
    let by_id: BTreeMap<&str, &Candidate> = eligible.iter().map(|c| (c.id.as_str(), c)).collect();
    let mut chosen: Vec<String> = Vec::new();
    for w in proposal.weights.iter().flatten() {
        if chosen.len() >= n {
            break;
        }
        if let Some(id) = ranked
            .iter()
            .find(|id| by_id.get(id.as_str()).is_some_and(|c| c.region == w.region))
        {
            chosen.push(id.clone());
        }
    }
    let in_weighted = |c: &Candidate| {
        proposal
            .weights
            .as_ref()
            .is_none_or(|ws| ws.iter().any(|w| w.region == c.region))
    };
    for id in &ranked {
        if chosen.len() >= n {
            break;
        }
        if !chosen.contains(id) && by_id.get(id.as_str()).is_some_and(|c| in_weighted(c)) {
            chosen.push(id.clone());
        }
    }
    eligible
        .into_iter()
        .filter(|c| chosen.contains(&c.id))
        .collect()
}

/// Whether `env` is a plan or an arm of over 64 shares: one of the large
/// messages (about 120 KB at 1,000 nodes).
fn is_large(env: &RunEnvelope) -> bool {
    match &env.body {
        RunMessage::Assign(plan) => plan.shares.len() > 64,
        _ => false,
    }
}

/// A reason as the wire carries it: one line, at most 1000 bytes (errors
/// from the engine may span lines; refusals add up).
pub fn clean_reason(reason: &str) -> String {
    let mut out = String::new();
    for c in reason.chars() {
        if out.len() + c.len_utf8() > 1000 {
            out.push('…');
            break;
        }
        out.push(if c.is_control() { ' ' } else { c });
    }
    out
}

/// How long a node of the plan must have looked gone before `--on-loss
/// abort` stops the run: past the suspicion itself (3.5 s of silence), so a
/// hiccup does not end a run.
const ABORT_GRACE: Duration = Duration::from_secs(2);

/// How long a worker running a share may hear none of most of the others
/// before it fences its share: shorter than the silence after which their
/// leader hands it on (1.2 s after the last heartbeat, which left at most
/// 250 ms before the cut), so it always stops first.
const CUT_OFF_AFTER: Duration = Duration::from_millis(700);

/// A gap between two ticks this long means this node was frozen (SIGSTOP,
/// a paused VM) or starved of CPU: its view of who is alive is stale.
const WAKE_GAP: Duration = Duration::from_millis(500);

/// How long after waking a node judges no one lost: long enough for every
/// live member's heartbeat (every 250 ms from a node running a share) to
/// arrive and clear the suspicion the freeze raised.
const REJUDGE_AFTER: Duration = Duration::from_secs(2);

/// This node's wall clock, as it reads now, at the monotonic instant `mono`.
fn wall_of(mono: Duration, at: At) -> i64 {
    let ahead = i64::try_from(mono.as_nanos()).unwrap_or(i64::MAX);
    let now = i64::try_from(at.now.as_nanos()).unwrap_or(i64::MAX);
    at.wall_ns.saturating_add(ahead.saturating_sub(now))
}

/// How long a leader may take to plan a run, from the start of its term.
const PLAN_PATIENCE: Duration = Duration::from_secs(10);

/// How long a leader may take to arm a run, from the start of its term, in
/// [`RunsConfig::ready_timeout`]s: the time nodes have to get ready, a
/// replan without the slow ones and the time the others take, and some.
const ARM_PATIENCE_READY_TIMEOUTS: u32 = 3;

/// How long a node waits, after it first knew an arm, for an estimate of
/// the arming leader's clock before it translates T0 without one.
const OFFSET_WAIT: Duration = Duration::from_secs(2);

/// Whether T0 of `armed` can be translated into this node's clock: an
/// estimate of the arming leader's clock is at hand, or none came within
/// [`OFFSET_WAIT`] of `seen` (T0 is then taken as it is).
fn t0_known(armed: &Armed, view: &dyn MeshView, seen: Duration, at: At) -> bool {
    view.offset(&armed.by).is_some() || at.now.saturating_sub(seen) >= OFFSET_WAIT
}

/// The instant of this node's monotonic clock at which its wall clock reads
/// `wall_ns`, as the clocks stand at `at` (before the monotonic clock's
/// zero: zero).
fn monotonic_of(wall_ns: i64, at: At) -> Duration {
    let ahead = wall_ns.saturating_sub(at.wall_ns);
    let magnitude = Duration::from_nanos(ahead.unsigned_abs());
    if ahead >= 0 {
        at.now.saturating_add(magnitude)
    } else {
        at.now.saturating_sub(magnitude)
    }
}

fn duration_ns(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests;
