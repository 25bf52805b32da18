//! The node core: one sans-IO machine for what a node decides.
//!
//! [`NodeCore`] holds a node's [`MeshCore`] (membership, clocks, dials) and
//! its [`RunsCore`] (proposals, plans, arming, starts, handoffs), gives the
//! runs the one [`View`] of the mesh they decide on, and keeps the schedule
//! of anti-entropy: when to ask which peer for the shards of ended runs this
//! node lacks, when to ask for the ended runs it does not know at all, and
//! how many such asks it answers at once.
//!
//! It is driven in the manner of quinn-proto's `Connection`:
//!
//! - what happened comes in with the time: [`NodeCore::handle_timeout`],
//!   [`NodeCore::submit`], [`NodeCore::prepared`], an answer to an ask, ...;
//! - what to send or do is queued, and the driver takes it with
//!   [`NodeCore::poll_output`];
//! - [`NodeCore::poll_timeout`] says when it next needs the time.
//!
//! Two drivers use it. The node's event loop (`fusi_node::net::runtime`)
//! translates between libp2p and these calls and carries the outputs out
//! (gossip, requests, workers, the data dir). The simulator
//! (`fusi_node::sim`) models links, gossip and the engine around the very
//! same calls, so what it measures at 1,000 nodes is the code that ships:
//! neither driver holds a copy of a decision made here.
//!
//! Inputs that only inform the mesh and hand back what they decide (a
//! heartbeat, a clock answer, a connection) go straight to
//! [`NodeCore::mesh_mut`].

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use crate::assign::Candidate;
use crate::mesh::{Action, Health, LocalNode, MeshConfig, MeshCore, Seed};
use crate::runs::{At, MeshView, Run, RunAction, RunRefused, RunsConfig, RunsCore};
use crate::spec::RunSpec;
use crate::sync::{SYNC_FOR, SyncState};
use crate::wire::{Proposal, RunEnvelope, RunMessage, validate_run_id};

/// The most VUs a candidate is credited with, whatever its heartbeat says.
pub const MAX_CAPACITY: u32 = 1_000_000;
/// How often the ended runs are scanned for missing shards.
pub const SCAN_EVERY: Duration = Duration::from_millis(500);
/// The most answers to asks for shards prepared at once; more asks are
/// refused as busy (preparing one reads up to 8 MiB from the data dir).
pub const MAX_ANSWERING: usize = 4;
/// How often a node asks a member (in turn) for the ended runs it does not
/// know: what lets a node that joined after a run report on it.
pub const RUNS_ASK_EVERY: Duration = Duration::from_secs(15);
/// The most ended runs one answer carries.
pub const MAX_RUNS_ANSWER: usize = 4;
/// The most run ids an ask for ended runs may list (a node keeps 200).
pub const MAX_KNOWN: usize = 1024;

/// How often the driver's time reaches each part of the core.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// The mesh's timers.
    pub mesh: MeshConfig,
    /// The runs' timers.
    pub runs: RunsConfig,
    /// How often the mesh core is ticked (heartbeats, suspicion, clock
    /// exchanges and dials fall due at this grain).
    pub mesh_every: Duration,
    /// How often the runs are ticked.
    pub runs_every: Duration,
}

impl Default for CoreConfig {
    fn default() -> Self {
        CoreConfig {
            mesh: MeshConfig::default(),
            runs: RunsConfig::default(),
            mesh_every: Duration::from_millis(50),
            runs_every: Duration::from_millis(50),
        }
    }
}

/// Something the driver is to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// A mesh action: a heartbeat to publish, a clock question, a dial, a
    /// name to resolve, a membership change to log.
    Mesh(Action),
    /// A run action: a message to publish, a share to prepare, start, stop
    /// or extend.
    Run(RunAction),
    /// Ask `peer` for the shards of the ended `run` that this node lacks
    /// (the driver says what it holds: it keeps the shards). Answer with
    /// [`NodeCore::shards_answered`] or [`NodeCore::shards_ask_failed`].
    AskShards {
        /// The run.
        run: String,
        /// Whom to ask.
        peer: String,
    },
    /// Ask `peer` for the ended runs this node does not know, telling it
    /// the ones it does. Answer with [`NodeCore::runs_answered`] or
    /// [`NodeCore::runs_ask_failed`].
    AskRuns {
        /// Whom to ask.
        peer: String,
        /// The runs this node knows, at most [`MAX_KNOWN`].
        known: Vec<String>,
    },
}

/// What a node holds of a run's shards: the driver keeps them (the event
/// loop in its reports and data dir, the simulator as bits).
pub trait Holdings {
    /// Whether this node holds every shard each node of `run`'s plan
    /// announced.
    fn holds_all(&self, run: &Run) -> bool;
}

/// The mesh as the runs see it, from a node's [`MeshCore`] at `now`.
pub struct View<'a> {
    mesh: &'a MeshCore,
    now: Duration,
}

impl<'a> View<'a> {
    /// The view of `mesh` at `now`.
    pub fn new(mesh: &'a MeshCore, now: Duration) -> View<'a> {
        View { mesh, now }
    }
}

impl MeshView for View<'_> {
    fn alive(&self, peer: &str) -> bool {
        peer == self.mesh.me().id || self.mesh.member(peer).is_some_and(|m| !m.suspect)
    }

    fn holds_my_clock(&self, peer: &str) -> bool {
        peer == self.mesh.me().id || self.mesh.holds_my_clock(peer)
    }

    fn offset(&self, peer: &str) -> Option<(i64, i64)> {
        if peer == self.mesh.me().id {
            return Some((0, 0));
        }
        self.mesh
            .clock(peer, self.now)
            .map(|e| (e.offset_ns, e.bound_ns))
    }

    fn clock_settling(&self) -> bool {
        self.mesh.clock_settling(self.now)
    }

    fn dead(&self, peer: &str) -> bool {
        self.mesh.is_dead(peer)
    }

    /// Judged on a watched member that is asked fast (its heartbeat says
    /// it runs a share); one asked once a second is judged by the usual
    /// suspicion only, or every node would look silent at a run's start,
    /// and one this node does not watch by its watchers' suspicion.
    fn heard_within(&self, peer: &str, within: Duration) -> bool {
        peer == self.mesh.me().id
            || self.mesh.member(peer).is_some_and(|m| {
                !m.suspect
                    && (!m.watched
                        || !m.heartbeat.busy
                        || self.now.saturating_sub(m.last_seen) <= within)
            })
    }

    fn capacity(&self, peer: &str) -> Option<u32> {
        if peer == self.mesh.me().id {
            return Some(self.mesh.me().vu_limit);
        }
        self.mesh.member(peer).map(|m| m.heartbeat.vu_limit)
    }
}

/// When to ask whom, for the shards and runs this node lacks.
#[derive(Debug, Default)]
struct AntiEntropy {
    /// Per ended run that lacks shards: when to ask whom, and since when.
    states: BTreeMap<String, (SyncState, Duration)>,
    next_scan: Duration,
    /// Answers to asks for shards being prepared.
    answering: usize,
    /// When the ask for ended runs in flight was made.
    runs_asked_at: Option<Duration>,
    next_runs_ask: Option<Duration>,
    runs_turn: usize,
}

/// A node's decisions, with no I/O (see the module docs).
pub struct NodeCore {
    mesh: MeshCore,
    runs: RunsCore,
    sync: AntiEntropy,
    mesh_every: Duration,
    runs_every: Duration,
    next_mesh: Duration,
    next_runs: Duration,
    out: VecDeque<Output>,
}

impl NodeCore {
    /// A node that starts at `now`, dialing `seeds` until one answers.
    pub fn new(me: LocalNode, config: CoreConfig, seeds: Vec<Seed>, now: Duration) -> NodeCore {
        let id = me.id.clone();
        NodeCore {
            mesh: MeshCore::new(me, config.mesh, seeds, now),
            runs: RunsCore::new(id, config.runs),
            sync: AntiEntropy::default(),
            mesh_every: config.mesh_every,
            runs_every: config.runs_every,
            next_mesh: now,
            next_runs: now,
            out: VecDeque::new(),
        }
    }

    /// The mesh core: membership, clocks, dials.
    pub fn mesh(&self) -> &MeshCore {
        &self.mesh
    }

    /// The mesh core, for inputs that hand back what they decide.
    pub fn mesh_mut(&mut self) -> &mut MeshCore {
        &mut self.mesh
    }

    /// The runs.
    pub fn runs(&self) -> &RunsCore {
        &self.runs
    }

    /// The runs, for inputs that hand back what they decide (a message, a
    /// run restored or adopted) and for what the driver takes from them
    /// (runs to store, runs evicted).
    pub fn runs_mut(&mut self) -> &mut RunsCore {
        &mut self.runs
    }

    /// The mesh as the runs see it at `now`.
    pub fn view(&self, now: Duration) -> View<'_> {
        View::new(&self.mesh, now)
    }

    /// The next thing to do, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    /// When [`NodeCore::handle_timeout`] is next due.
    pub fn poll_timeout(&self) -> Duration {
        let mut at = self.next_mesh.min(self.next_runs).min(self.sync.next_scan);
        if let Some(ask) = self.sync.next_runs_ask {
            at = at.min(ask);
        }
        at
    }

    /// Advances time to `at`: the mesh's and the runs' timers, and the
    /// anti-entropy asks that are due. `health` is this node's load, for
    /// its heartbeat; `holdings` what it holds of each run's shards.
    pub fn handle_timeout(&mut self, at: At, health: Health, holdings: &dyn Holdings) {
        let now = at.now;
        if due(&mut self.next_mesh, self.mesh_every, now) {
            let peers = self.runs.clock_peers(&View::new(&self.mesh, now));
            self.mesh.set_clock_peers(peers);
            let actions = self.mesh.tick(now, health);
            self.out.extend(actions.into_iter().map(Output::Mesh));
        }
        if due(&mut self.next_runs, self.runs_every, now) {
            let view = View::new(&self.mesh, now);
            let actions = self.runs.tick(at, &view);
            self.queue(actions);
            let refusals = self.runs.take_refusals();
            self.queue(refusals);
        }
        if now >= self.sync.next_scan {
            self.sync.next_scan = now + SCAN_EVERY;
            self.scan_for_missing(now, holdings);
        }
        self.ask_for_runs(now);
    }

    fn queue(&mut self, actions: Vec<RunAction>) {
        self.out.extend(actions.into_iter().map(Output::Run));
    }

    /// The candidates of a run submitted here now: this node and every
    /// member it holds alive, each credited with the VUs its heartbeat says
    /// (at most [`MAX_CAPACITY`]), ascending by id. A node that holds the
    /// same members alike lists the same, which is how it resolves a
    /// proposal that names its candidates by digest.
    fn candidates(&self) -> Vec<Candidate> {
        let me = self.mesh.me();
        let mut candidates = vec![Candidate {
            id: me.id.clone(),
            region: me.region.clone(),
            capacity: me.vu_limit.min(MAX_CAPACITY),
        }];
        for member in self.mesh.members() {
            if member.suspect {
                continue;
            }
            let hb = &member.heartbeat;
            candidates.push(Candidate {
                id: hb.id.clone(),
                region: hb.region.clone(),
                capacity: hb.vu_limit.min(MAX_CAPACITY),
            });
        }
        candidates.sort_by(|a, b| a.id.cmp(&b.id));
        candidates
    }

    /// Submits a run of `spec` here, as `id`, with [`Self::candidates`].
    pub fn submit(
        &mut self,
        id: String,
        spec: RunSpec,
        weights: Option<Vec<crate::assign::RegionWeight>>,
        nodes: Option<u32>,
        at: At,
    ) -> Result<(), String> {
        let proposal = Proposal {
            proposer: self.mesh.me().id.clone(),
            spec,
            weights,
            nodes,
            candidates: self.candidates(),
            members: None,
        };
        let view = View::new(&self.mesh, at.now);
        let actions = self.runs.submit(id, proposal, at, &view)?;
        self.queue(actions);
        Ok(())
    }

    /// A run message `from` its author, passed on by `via`, as
    /// [`RunsCore::on_gossip`] takes it; but a proposal that names its
    /// candidates by digest is first resolved against this node's members.
    /// Where they differ, or the run is known already, it is not taken:
    /// this node asks `via`, then `from`, for the proposal, whose answer
    /// lists them.
    pub fn on_run_gossip(
        &mut self,
        from: &str,
        via: &str,
        mut env: RunEnvelope,
        at: At,
    ) -> Result<bool, RunRefused> {
        if let RunMessage::Propose(proposal) = &mut env.body
            && proposal.members.is_some()
        {
            if self.runs.get(&env.run).is_some() {
                return Ok(false);
            }
            // The count first: a proposal of another size is not listed.
            let alive = 1 + self.mesh.members().filter(|m| !m.suspect).count();
            let named = proposal.members.as_ref().map(|m| m.count as usize);
            if named != Some(alive) || !proposal.resolve(self.candidates()) {
                self.runs.lacks_proposal(from, via, &env.run, at);
                return Err(RunRefused::OtherMembers);
            }
        }
        self.runs.on_gossip(from, via, env, at)
    }

    /// Stops a run, as asked here.
    pub fn stop(&mut self, id: &str, reason: Option<String>, at: At) -> Result<(), String> {
        let view = View::new(&self.mesh, at.now);
        let actions = self.runs.stop(id, reason, at, &view)?;
        self.queue(actions);
        Ok(())
    }

    /// This node's share of `id` under `plan` is ready to start.
    pub fn prepared(&mut self, id: &str, plan: crate::wire::PlanId, at: At) {
        let view = View::new(&self.mesh, at.now);
        let actions = self.runs.prepared(id, plan, at, &view);
        self.queue(actions);
    }

    /// This node cannot run its share of `id`, for `reason`.
    pub fn refused(&mut self, id: &str, reason: String, at: At) {
        let view = View::new(&self.mesh, at.now);
        let actions = self.runs.refused(id, reason, at, &view);
        self.queue(actions);
    }

    /// This node's share of `id` started, at `wall_ns` on its wall clock.
    pub fn started(&mut self, id: &str, wall_ns: i64, now: Duration) {
        let view = View::new(&self.mesh, now);
        let actions = self.runs.started(id, wall_ns, now, &view);
        self.queue(actions);
    }

    /// This node's share of `id` ended with `shards` shards sealed.
    pub fn finished(&mut self, id: &str, shards: u64, interrupted: bool, now: Duration) {
        let view = View::new(&self.mesh, now);
        let actions = self.runs.finished(id, shards, interrupted, &view);
        self.queue(actions);
    }

    /// The leader of `id` as this node sees it at `now`.
    pub fn leader(&self, id: &str, now: Duration) -> Option<String> {
        self.runs.get(id)?.leader(&self.view(now))
    }

    /// Asks a peer for missing shards, for each ended run that lacks some:
    /// in turn among the run's candidates that are members in good
    /// standing, one ask in flight per run, for at most [`SYNC_FOR`].
    fn scan_for_missing(&mut self, now: Duration, holdings: &dyn Holdings) {
        let me = self.mesh.me().id.as_str();
        let ended: Vec<&Run> = self
            .runs
            .all()
            .into_iter()
            .filter(|r| r.is_finished())
            .collect();
        self.sync
            .states
            .retain(|id, _| ended.iter().any(|r| r.id == *id));
        for run in ended {
            if holdings.holds_all(run) {
                self.sync.states.remove(&run.id);
                continue;
            }
            let mut peers: Vec<String> = run
                .proposal
                .candidates
                .iter()
                .map(|c| &c.id)
                .filter(|c| *c != me && self.mesh.member(c).is_some_and(|m| !m.suspect))
                .cloned()
                .collect();
            peers.sort();
            let (state, since) = self
                .sync
                .states
                .entry(run.id.clone())
                .or_insert_with(|| (SyncState::after(me, &peers), now));
            if now.saturating_sub(*since) > SYNC_FOR || !state.due(now) {
                continue;
            }
            if let Some(peer) = state.pick(&peers, now) {
                self.out.push_back(Output::AskShards {
                    run: run.id.clone(),
                    peer: peer.clone(),
                });
            }
        }
    }

    /// An ask for `run`'s shards was answered at `now` with `new` shards
    /// this node lacked; the peer holds `more`.
    /// One that brought shards is followed by the next ask at once, not
    /// at the next scan: at 1,000 simulated nodes a node needs some 40
    /// answers of at most [`crate::sync::MAX_ANSWER_SHARDS`], and asking
    /// at the scans' pace alone took 27.7 s to fill every node.
    pub fn shards_answered(&mut self, run: &str, new: usize, more: bool, now: Duration) {
        if let Some((state, _)) = self.sync.states.get_mut(run) {
            state.answered(new, more, now);
            if new > 0 {
                self.sync.next_scan = now;
            }
        }
    }

    /// An ask for `run`'s shards failed or was refused at `now`.
    pub fn shards_ask_failed(&mut self, run: &str, now: Duration) {
        if let Some((state, _)) = self.sync.states.get_mut(run) {
            state.failed(now);
        }
    }

    /// Whether to answer `peer`'s ask for shards of `run`: only a member's,
    /// for a run id, and at most [`MAX_ANSWERING`] at once. When it says
    /// yes, the answer counts as being prepared until
    /// [`NodeCore::shards_answer_sent`].
    pub fn begin_shards_answer(&mut self, peer: &str, run: &str) -> Result<(), &'static str> {
        if !self.mesh.may_answer_clock(peer) {
            Err("not a member yet")
        } else if validate_run_id(run).is_err() {
            Err("not a run id")
        } else if self.sync.answering >= MAX_ANSWERING {
            Err("busy answering other asks; ask again later")
        } else {
            self.sync.answering += 1;
            Ok(())
        }
    }

    /// An answer [`NodeCore::begin_shards_answer`] allowed has gone out.
    pub fn shards_answer_sent(&mut self) {
        self.sync.answering = self.sync.answering.saturating_sub(1);
    }

    /// Asks one connected member, in turn, for the ended runs this node
    /// does not know: as soon as it has one, then every [`RUNS_ASK_EVERY`],
    /// one ask in flight.
    fn ask_for_runs(&mut self, now: Duration) {
        let free = self
            .sync
            .runs_asked_at
            .is_none_or(|at| now.saturating_sub(at) >= crate::sync::ASK_TIMEOUT);
        if !free || self.sync.next_runs_ask.is_some_and(|at| now < at) {
            return;
        }
        let mut members: Vec<&String> = self
            .mesh
            .peers(now)
            .into_iter()
            .filter(|p| !p.member.suspect && p.connected)
            .map(|p| &p.member.heartbeat.id)
            .collect();
        if members.is_empty() {
            return;
        }
        members.sort();
        let peer = members[self.sync.runs_turn % members.len()].clone();
        self.sync.runs_turn = self.sync.runs_turn.wrapping_add(1);
        self.sync.next_runs_ask = Some(now + RUNS_ASK_EVERY);
        self.sync.runs_asked_at = Some(now);
        let known: Vec<String> = self
            .runs
            .all()
            .into_iter()
            .map(|r| &r.id)
            .chain(self.runs.declined())
            .take(MAX_KNOWN)
            .cloned()
            .collect();
        self.out.push_back(Output::AskRuns { peer, known });
    }

    /// An ask for ended runs was answered at `now`, and `taken` of them
    /// were new here: when the answer was full, there may be more, so the
    /// next ask is due at once.
    pub fn runs_answered(&mut self, taken: usize, now: Duration) {
        self.sync.runs_asked_at = None;
        if taken >= MAX_RUNS_ANSWER {
            self.sync.next_runs_ask = Some(now);
        }
    }

    /// An ask for ended runs failed.
    pub fn runs_ask_failed(&mut self) {
        self.sync.runs_asked_at = None;
    }

    /// The ended runs to tell `peer`, which knows `known`: the newest
    /// [`MAX_RUNS_ANSWER`] that have a plan, newest first; refused to a
    /// node that is not a member, or for a list over [`MAX_KNOWN`].
    pub fn runs_unknown_to(&self, peer: &str, known: &[String]) -> Result<Vec<&Run>, String> {
        if !self.mesh.may_answer_clock(peer) {
            return Err("not a member yet".into());
        }
        if known.len() > MAX_KNOWN {
            return Err(format!("more than {MAX_KNOWN} run ids"));
        }
        let known: std::collections::HashSet<&str> = known.iter().map(String::as_str).collect();
        let mut unknown: Vec<&Run> = self
            .runs
            .all()
            .into_iter()
            .filter(|r| r.is_finished() && r.plan.is_some())
            .filter(|r| !known.contains(r.id.as_str()))
            .collect();
        unknown.sort_by_key(|r| std::cmp::Reverse(r.seen_wall_ns));
        unknown.truncate(MAX_RUNS_ANSWER);
        Ok(unknown)
    }
}

/// Whether a timer at `next` that recurs `every` is due at `now`; if so it
/// is moved on: by `every` from when it was due, so a driver that calls
/// late does not drift, or from `now` when it fell a whole period behind.
fn due(next: &mut Duration, every: Duration, now: Duration) -> bool {
    if now < *next {
        return false;
    }
    *next += every;
    if *next <= now {
        *next = now + every;
    }
    true
}

#[cfg(test)]
mod tests;
