//! The run state machine under virtual time: nodes exchange run messages
//! through a simulated gossip with loss and partitions, workers take time to
//! prepare and run, and nodes crash.

use super::*;
use crate::assign::RegionWeight;
use crate::leader::ranking;
use crate::rng::Rng;
use crate::spec::{Executor, RunSpec, ScenarioSpec};
use crate::wire;

const TICK: Duration = Duration::from_millis(10);
const SUSPECT_AFTER: Duration = Duration::from_millis(3500);
const PREPARE_TAKES: Duration = Duration::from_millis(150);

#[derive(Default, Clone)]
struct Worker {
    prepared_at: Option<(Duration, PlanId)>,
    /// Whom its latest `Prepare` said to ask for the module, in order.
    sources: Vec<String>,
    start_at: Option<Duration>,
    started: Option<Duration>,
    finished: bool,
    stop_seen_at: Option<Duration>,
    /// Parts of lost nodes' shares taken over: (segment, since).
    taken: Vec<(crate::segment::ExecutionSegment, Duration)>,
}

struct SimNode {
    id: String,
    region: String,
    core: RunsCore,
    skew_ns: i64,
    crashed_at: Option<Duration>,
    workers: BTreeMap<String, Worker>,
    refuse: Option<String>,
}

/// What a node sees of the others.
struct View<'a> {
    me: usize,
    sim: &'a Sim,
}

impl MeshView for View<'_> {
    fn alive(&self, peer: &str) -> bool {
        let Some(j) = self.sim.index(peer) else {
            return false;
        };
        if j == self.me {
            return true;
        }
        if self.sim.suspects.contains(&(self.me, j)) {
            return false;
        }
        let silent_since = match (self.sim.nodes[j].crashed_at, self.sim.cut_since(self.me, j)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        silent_since.is_none_or(|t| self.sim.now.saturating_sub(t) < SUSPECT_AFTER)
    }

    fn offset(&self, peer: &str) -> Option<(i64, i64)> {
        let j = self.sim.index(peer)?;
        if j == self.me {
            return Some((0, 0));
        }
        let off = self.sim.misjudged.get(&self.me).copied().unwrap_or(0);
        let step = self.sim.stepped.get(&self.me).copied().unwrap_or(0);
        Some((
            self.sim.nodes[j].skew_ns - self.sim.nodes[self.me].skew_ns + off + step,
            1_000_000 + off.abs(),
        ))
    }

    fn capacity(&self, peer: &str) -> Option<u32> {
        self.sim
            .index(peer)
            .and_then(|j| self.sim.announced.get(&j).copied())
    }

    fn dead(&self, peer: &str) -> bool {
        self.sim
            .index(peer)
            .is_some_and(|j| self.sim.nodes[j].crashed_at.is_some() && self.sim.dead_known)
    }
}

struct Sim {
    nodes: Vec<SimNode>,
    now: Duration,
    rng: Rng,
    loss: u64,
    /// Node index → side, while a partition lasts, and since when.
    partition: Option<(Vec<u8>, Duration)>,
    in_flight: Vec<(Duration, usize, String, RunEnvelope)>,
    /// Asks after a `held`: when they arrive, who asked, whom, which run.
    asks: Vec<(Duration, usize, usize, String, bool)>,
    sent: u64,
    /// Every publish: when, by whom, and the message's kind.
    published: Vec<(Duration, usize, &'static str)>,
    /// Words told directly (not in `published`): when, by whom, to whom,
    /// which.
    told: Vec<(Duration, usize, Vec<usize>, &'static str)>,
    by_id: std::collections::HashMap<String, usize>,
    /// Arms and plans from the first to the second node are lost.
    blocked: BTreeSet<(usize, usize)>,
    /// The next finish of the run from the first node to the second is
    /// lost.
    lose_finish: BTreeSet<(String, usize, usize)>,
    /// The first node believes the second dead.
    suspects: BTreeSet<(usize, usize)>,
    /// Nodes alive but silent on the runs topic (broken or hostile).
    muted: BTreeSet<usize>,
    /// Whether a crashed node is known dead (its redial refused) once
    /// suspected.
    dead_known: bool,
    /// VUs nodes announce in their own heartbeats, where they differ from
    /// what proposals claim.
    announced: BTreeMap<usize, u32>,
    /// How far off a node's estimates of the others' clocks are, ns, with
    /// bounds that hold it.
    misjudged: BTreeMap<usize, i64>,
    /// How far off they are with the usual bound (the others' clocks
    /// stepped since they said an instant), ns.
    stepped: BTreeMap<usize, i64>,
}

impl Sim {
    fn new(regions: &[(&str, usize)], loss_percent: u64, seed: u64) -> Sim {
        let mut rng = Rng(seed);
        let mut nodes = Vec::new();
        for (region, count) in regions {
            for i in 0..*count {
                let id = format!("{region}-{i:03}-{:x}", rng.next_u64() % 0xffff);
                nodes.push(SimNode {
                    core: RunsCore::new(id.clone(), RunsConfig::default()),
                    id,
                    region: (*region).to_owned(),
                    skew_ns: (rng.next_u64() % 100_000_000) as i64 - 50_000_000,
                    crashed_at: None,
                    workers: BTreeMap::new(),
                    refuse: None,
                });
            }
        }
        Sim {
            by_id: nodes
                .iter()
                .enumerate()
                .map(|(i, n)| (n.id.clone(), i))
                .collect(),
            nodes,
            blocked: BTreeSet::new(),
            lose_finish: BTreeSet::new(),
            muted: BTreeSet::new(),
            dead_known: false,
            announced: BTreeMap::new(),
            misjudged: BTreeMap::new(),
            stepped: BTreeMap::new(),
            suspects: BTreeSet::new(),
            now: Duration::from_secs(100),
            rng,
            loss: loss_percent,
            partition: None,
            in_flight: Vec::new(),
            asks: Vec::new(),
            sent: 0,
            published: Vec::new(),
            told: Vec::new(),
        }
    }

    /// Calls `f` with node `i`'s core and its view of the others.
    fn with_core<T>(&mut self, i: usize, f: impl FnOnce(&mut RunsCore, At, &View) -> T) -> T {
        let placeholder = RunsCore::new(String::new(), RunsConfig::default());
        let mut core = std::mem::replace(&mut self.nodes[i].core, placeholder);
        let at = self.at(i);
        let out = f(&mut core, at, &View { me: i, sim: self });
        self.nodes[i].core = core;
        out
    }

    fn with_config(mut self, config: RunsConfig) -> Sim {
        for n in &mut self.nodes {
            n.core = RunsCore::new(n.id.clone(), config.clone());
        }
        self
    }

    /// The candidate of rank `r` in a run's leader order.
    fn rank(&self, run: &str, r: usize) -> usize {
        let ids: Vec<String> = self.nodes.iter().map(|n| n.id.clone()).collect();
        let ranked = ranking(run, &ids);
        self.index(&ranked[r]).unwrap_or(0)
    }

    fn index(&self, id: &str) -> Option<usize> {
        self.by_id.get(id).copied()
    }

    fn cut_since(&self, a: usize, b: usize) -> Option<Duration> {
        let (sides, since) = self.partition.as_ref()?;
        (sides[a] != sides[b]).then_some(*since)
    }

    fn at(&self, i: usize) -> At {
        let true_ns = i64::try_from(self.now.as_nanos()).unwrap_or(i64::MAX);
        At {
            now: self.now,
            wall_ns: 1_700_000_000_000_000_000 + true_ns + self.nodes[i].skew_ns,
        }
    }

    fn true_of_wall(&self, i: usize, wall_ns: i64) -> Duration {
        let ns = wall_ns - 1_700_000_000_000_000_000 - self.nodes[i].skew_ns;
        Duration::from_nanos(u64::try_from(ns.max(0)).unwrap_or(0))
    }

    fn submit(&mut self, i: usize, spec: RunSpec, weights: Option<Vec<RegionWeight>>) -> String {
        let candidates = self
            .nodes
            .iter()
            .filter(|n| n.crashed_at.is_none())
            .map(|n| Candidate {
                id: n.id.clone(),
                region: n.region.clone(),
                capacity: 100,
            })
            .collect();
        let proposal = Proposal {
            proposer: self.nodes[i].id.clone(),
            spec,
            weights,
            nodes: None,
            candidates,
            members: None,
        };
        let id = format!("r{}", self.rng.next_u64() % 1_000_000);
        let actions = self.with_core(i, |core, at, view| {
            core.submit(id.clone(), proposal, at, view)
        });
        let actions = actions.unwrap_or_else(|e| panic!("submit: {e}"));
        self.carry_out(i, actions);
        id
    }

    fn carry_out(&mut self, i: usize, actions: Vec<RunAction>) {
        for action in actions {
            match action {
                RunAction::Publish(_) | RunAction::Tell { .. } if self.muted.contains(&i) => {}
                RunAction::Pull { run, from, known } => {
                    if let Some(j) = self.index(&from)
                        && self.cut_since(i, j).is_none()
                    {
                        let delay = Duration::from_millis(1 + self.rng.next_u64() % 20);
                        self.asks.push((self.now + delay, i, j, run, known));
                    }
                }
                RunAction::Tell { to, mut env } => {
                    // A word goes to the nodes named, as a request does;
                    // so do a proposal and a finish's words to the nodes
                    // that waited for them, signed as a publish is.
                    if env.sig.is_none() && env.is_leaders() {
                        env.sig = Some(wire::RunSignature {
                            signer: self.nodes[i].id.clone(),
                            bytes: Vec::new(),
                        });
                    }
                    let bytes = wire::encode(&env);
                    let env = wire::decode_run(&bytes).unwrap_or_else(|e| panic!("{e}: {env:?}"));
                    assert!(
                        env.is_word()
                            || matches!(env.body, RunMessage::Propose(_) | RunMessage::Finish(_)),
                        "{env:?}"
                    );
                    self.sent += 1;
                    let to: Vec<usize> = to.iter().filter_map(|t| self.index(t)).collect();
                    self.told
                        .push((self.now, i, to.clone(), kind_of(&env.body)));
                    for j in to {
                        if j != i && self.cut_since(i, j).is_none() {
                            self.send(i, j, &env);
                        }
                    }
                }
                RunAction::Publish(mut env) => {
                    // The runtime signs a leader's message it sends as
                    // itself (a relay carries the leader's signature).
                    if env.sig.is_none() && env.is_leaders() {
                        env.sig = Some(wire::RunSignature {
                            signer: self.nodes[i].id.clone(),
                            bytes: Vec::new(),
                        });
                    }
                    // Messages survive their encoding, as on the wire.
                    let bytes = wire::encode(&env);
                    let env = wire::decode_run(&bytes).unwrap_or_else(|e| panic!("{e}: {env:?}"));
                    self.sent += 1;
                    self.published.push((self.now, i, kind_of(&env.body)));
                    for j in 0..self.nodes.len() {
                        let arm =
                            matches!(env.body, RunMessage::Arm { .. } | RunMessage::Assign(_));
                        let finish = matches!(env.body, RunMessage::Finish(_));
                        if j == i
                            || self.cut_since(i, j).is_some()
                            || (arm && self.blocked.contains(&(i, j)))
                            || (finish && self.lose_finish.remove(&(env.run.clone(), i, j)))
                        {
                            continue;
                        }
                        self.send(i, j, &env);
                    }
                }
                RunAction::Prepare {
                    run, plan, sources, ..
                } => {
                    let w = self.nodes[i].workers.entry(run).or_default();
                    w.prepared_at = Some((self.now + PREPARE_TAKES, plan));
                    w.sources = sources;
                }
                RunAction::Start { run, at_wall_ns } => {
                    let start = self.true_of_wall(i, at_wall_ns);
                    let w = self.nodes[i].workers.entry(run).or_default();
                    w.start_at = Some(start);
                }
                RunAction::Stop { run } => {
                    let w = self.nodes[i].workers.entry(run).or_default();
                    w.stop_seen_at.get_or_insert(self.now);
                    w.prepared_at = None;
                }
                RunAction::TakeOver { run, share, since } => {
                    let w = self.nodes[i].workers.entry(run).or_default();
                    w.taken.push((share.segment, since));
                }
                RunAction::Live { run, live } => {
                    let env = RunEnvelope {
                        protocol: wire::RUN_PROTOCOL,
                        run,
                        body: RunMessage::Live(live),
                        sig: None,
                    };
                    self.carry_out(i, vec![RunAction::Publish(env)]);
                }
            }
        }
    }

    /// `env` from node `i` to node `j`: lost at the sim's loss rate, else
    /// there in 1 to 20 ms.
    fn send(&mut self, i: usize, j: usize, env: &RunEnvelope) {
        if self.rng.next_u64() % 100 < self.loss {
            return;
        }
        let delay = Duration::from_millis(1 + self.rng.next_u64() % 20);
        self.in_flight
            .push((self.now + delay, j, self.nodes[i].id.clone(), env.clone()));
    }

    fn step(&mut self) {
        self.now += TICK;
        let due: Vec<_> = {
            let now = self.now;
            let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.in_flight)
                .into_iter()
                .partition(|m| m.0 <= now);
            self.in_flight = later;
            due
        };
        for (_, j, from, mut env) in due {
            if self.nodes[j].crashed_at.is_some() {
                continue;
            }
            // Every node here holds the same members, so each lists the
            // candidates of a flooded proposal as its proposer did
            // (`NodeCore::on_run_gossip`).
            if let RunMessage::Propose(p) = &mut env.body
                && p.members.is_some()
            {
                if self.nodes[j].core.get(&env.run).is_some() {
                    continue;
                }
                let listed = self
                    .nodes
                    .iter()
                    .find(|n| n.id == p.proposer)
                    .and_then(|n| n.core.get(&env.run))
                    .map(|r| r.proposal.candidates.clone());
                if let Some(listed) = listed {
                    assert!(p.resolve(listed), "a proposal that names other candidates");
                }
            }
            let at = self.at(j);
            let _ = self.nodes[j].core.on_message(&from, env, at);
        }
        let now = self.now;
        let (asks, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.asks)
            .into_iter()
            .partition(|a| a.0 <= now);
        self.asks = later;
        for (_, asker, asked, run, known) in asks {
            if self.nodes[asked].crashed_at.is_some() || self.muted.contains(&asked) {
                continue;
            }
            let at = self.at(asked);
            let asker_id = self.nodes[asker].id.clone();
            let answer = self.nodes[asked]
                .core
                .answer_run(&asker_id, &run, known, at);
            for mut env in answer {
                // Signed by the driver as a publish is.
                if env.sig.is_none() && env.is_leaders() {
                    env.sig = Some(wire::RunSignature {
                        signer: self.nodes[asked].id.clone(),
                        bytes: Vec::new(),
                    });
                }
                let bytes = wire::encode(&env);
                let env = wire::decode_run(&bytes).unwrap_or_else(|e| panic!("{e}: {env:?}"));
                self.published.push((self.now, asked, "answer"));
                let delay = Duration::from_millis(1 + self.rng.next_u64() % 20);
                self.in_flight
                    .push((self.now + delay, asker, self.nodes[asked].id.clone(), env));
            }
        }
        for i in 0..self.nodes.len() {
            if self.nodes[i].crashed_at.is_some() {
                continue;
            }
            self.run_workers(i);
            let actions = self.with_core(i, |core, at, view| {
                let mut actions = core.tick(at, view);
                actions.extend(core.take_refusals());
                actions
            });
            self.carry_out(i, actions);
        }
    }

    /// The simulated engine: prepare takes a while, a share runs for the
    /// executor's duration from its start, a stop ends it.
    fn run_workers(&mut self, i: usize) {
        let runs: Vec<String> = self.nodes[i].workers.keys().cloned().collect();
        for run in runs {
            let w = self.nodes[i].workers[&run].clone();
            if let Some((when, plan)) = w.prepared_at
                && when <= self.now
            {
                if let Some(w) = self.nodes[i].workers.get_mut(&run) {
                    w.prepared_at = None;
                }
                let actions = match self.nodes[i].refuse.clone() {
                    Some(reason) => {
                        self.with_core(i, |core, at, view| core.refused(&run, reason, at, view))
                    }
                    None => self.with_core(i, |core, at, view| core.prepared(&run, plan, at, view)),
                };
                self.carry_out(i, actions);
            }
            if let Some(start) = w.start_at
                && w.started.is_none()
                && start <= self.now
            {
                if let Some(w) = self.nodes[i].workers.get_mut(&run) {
                    w.started = Some(self.now);
                }
                let actions = self.with_core(i, |core, at, view| {
                    core.started(&run, at.wall_ns, at.now, view)
                });
                self.carry_out(i, actions);
            }
            let duration = self.nodes[i]
                .core
                .get(&run)
                .map(|r| r.proposal.spec.duration())
                .unwrap_or_default();
            // Stopped before its start, a worker ends with no shards, as the
            // runtime's does (the core takes it only from a share that was
            // due to start).
            let ended =
                w.started.is_some_and(|s| self.now >= s + duration) || w.stop_seen_at.is_some();
            if ended && !w.finished {
                if let Some(w) = self.nodes[i].workers.get_mut(&run) {
                    w.finished = true;
                }
                let actions =
                    self.with_core(i, |core, _, view| core.finished(&run, 3, false, view));
                self.carry_out(i, actions);
            }
        }
    }

    /// Runs until every live node sees the run in `phase`.
    fn reach(&mut self, run: &str, phase: Phase, limit: Duration) -> bool {
        self.run_until(limit, |s| {
            s.phase_everywhere(run).iter().all(|p| *p == phase)
        })
    }

    fn run_until(&mut self, limit: Duration, mut done: impl FnMut(&Sim) -> bool) -> bool {
        let end = self.now + limit;
        while self.now < end {
            self.step();
            if done(self) {
                return true;
            }
        }
        false
    }

    fn live(&self) -> impl Iterator<Item = (usize, &SimNode)> {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.crashed_at.is_none())
    }

    fn all_finished(&self, run: &str) -> bool {
        self.live()
            .all(|(_, n)| n.core.get(run).is_some_and(|r| r.finish.is_some()))
    }

    fn phase_everywhere(&self, run: &str) -> Vec<Phase> {
        self.live()
            .map(|(i, n)| {
                let view = View { me: i, sim: self };
                n.core
                    .get(run)
                    .map(|r| r.phase(self.at(i), &view))
                    .unwrap_or(Phase::Proposed)
            })
            .collect()
    }

    fn leader_everywhere(&self, run: &str) -> BTreeSet<Option<String>> {
        self.live()
            .map(|(i, n)| {
                let view = View { me: i, sim: self };
                n.core.get(run).and_then(|r| r.leader(&view))
            })
            .collect()
    }

    /// T0 of `run`'s arm as node `i` holds it, in the arming leader's clock.
    fn armed_t0_ns(&self, run: &str, i: usize) -> i64 {
        self.nodes[i]
            .core
            .get(run)
            .and_then(|r| r.armed.as_ref().map(|a| a.t0_ns))
            .unwrap_or_else(|| panic!("not armed"))
    }

    fn leader_index(&self, run: &str) -> usize {
        let leaders = self.leader_everywhere(run);
        let leader = leaders.iter().next().cloned().flatten().unwrap_or_default();
        self.index(&leader).unwrap_or(0)
    }

    fn plans(&self, run: &str) -> BTreeSet<String> {
        self.live()
            .map(|(_, n)| {
                format!(
                    "{:?}",
                    n.core
                        .get(run)
                        .and_then(|r| r.plan.as_ref().map(|p| (&p.id, &p.shares)))
                )
            })
            .collect()
    }

    fn finish_of(&self, run: &str) -> Finish {
        self.live()
            .find_map(|(_, n)| n.core.get(run).and_then(|r| r.finish.clone()))
            .unwrap_or_else(|| panic!("run {run} has no finish"))
    }
}

/// A run message's kind, for counting.
fn kind_of(body: &RunMessage) -> &'static str {
    match body {
        RunMessage::Propose(_) => "propose",
        RunMessage::Assign(_) => "assign",
        RunMessage::Ready { .. } => "ready",
        RunMessage::Refuse { .. } => "refuse",
        RunMessage::Arm { .. } => "arm",
        RunMessage::Started { .. } => "started",
        RunMessage::Done { .. } => "done",
        RunMessage::Stop { .. } => "stop",
        RunMessage::Handoff(_) => "handoff",
        RunMessage::Finish(f) if f.words.is_empty() => "finish",
        RunMessage::Finish(_) => "finish with words",
        RunMessage::Live(_) => "live",
        RunMessage::Held(_) => "held",
    }
}

fn spec(vus: u32, secs: u64) -> RunSpec {
    let mut spec = RunSpec::new(
        "ab".repeat(32),
        Executor::ConstantVus {
            vus,
            duration: Duration::from_secs(secs),
        },
    );
    spec.graceful_stop = Duration::from_secs(1);
    spec
}

fn vus_of(sim: &Sim, run: &str, vus: u64) -> Vec<u64> {
    let r = sim.nodes[0]
        .core
        .get(run)
        .unwrap_or_else(|| panic!("no run"));
    r.plan
        .as_ref()
        .map(|p| p.shares.iter().map(|s| s.segment.scale(vus)).collect())
        .unwrap_or_default()
}

#[test]
fn three_nodes_run_with_one_leader_one_plan_and_one_start() {
    let mut sim = Sim::new(&[("fra", 2), ("nrt", 1)], 0, 7);
    let run = sim.submit(0, spec(7, 5), None);
    assert!(sim.reach(&run, Phase::Running, Duration::from_secs(3)));
    assert_eq!(sim.leader_everywhere(&run).len(), 1);
    assert_eq!(sim.plans(&run).len(), 1);
    let mut counts = vus_of(&sim, &run, 7);
    counts.sort();
    assert_eq!(counts, vec![2, 2, 3]);
    // Every node started at the same true instant (the virtual clocks are
    // skewed by up to ±50 ms, and the offsets are known exactly here).
    let starts: BTreeSet<Option<Duration>> = sim
        .nodes
        .iter()
        .map(|n| n.workers.get(&run).and_then(|w| w.started))
        .collect();
    assert_eq!(starts.len(), 1, "{starts:?}");
    let r = sim.nodes[1]
        .core
        .get(&run)
        .unwrap_or_else(|| panic!("no run"));
    let (skew, _) = r.start_skew().unwrap_or((i64::MAX, 0));
    assert!(skew <= TICK.as_nanos() as i64, "skew {skew} ns");
    assert!(sim.run_until(Duration::from_secs(10), |s| s.all_finished(&run)));
    assert_eq!(sim.finish_of(&run).outcome, Outcome::Complete);
    assert!(sim.finish_of(&run).lost.is_empty());
}

#[test]
fn the_module_spreads_down_a_tree_per_region_with_the_proposer_asked_next() {
    let mut sim = Sim::new(&[("fra", 30), ("nrt", 12), ("ewr", 1)], 0, 5);
    let proposer = sim.nodes[3].id.clone();
    let run = sim.submit(3, spec(430, 2), None);
    assert!(sim.reach(&run, Phase::Running, Duration::from_secs(5)));
    let region_of = |id: &str| sim.nodes[sim.index(id).unwrap_or(0)].region.clone();
    let mut asked_first: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for node in &sim.nodes {
        let sources = &node.workers[&run].sources;
        if node.id == proposer {
            assert!(
                sources.is_empty(),
                "the proposer fetches nothing: {sources:?}"
            );
            continue;
        }
        let first = sources
            .first()
            .unwrap_or_else(|| panic!("{} has no source", node.id));
        asked_first
            .entry(first.clone())
            .or_default()
            .push(node.id.clone());
        if *first != proposer {
            assert_eq!(
                region_of(first),
                node.region,
                "{} asks out of its region",
                node.id
            );
            assert_eq!(sources.get(1), Some(&proposer), "the proposer comes next");
        }
        assert!(!sources.contains(&node.id));
    }
    // The proposer feeds one node per region; every other sender at most
    // FANOUT, all of its own region.
    let fed: Vec<String> = asked_first[&proposer]
        .iter()
        .map(|n| region_of(n))
        .collect();
    assert_eq!(fed.len(), 3, "{fed:?}");
    assert_eq!(fed.iter().collect::<BTreeSet<_>>().len(), 3);
    assert!(
        asked_first
            .values()
            .all(|c| c.len() <= module_spread::FANOUT)
    );
    assert!(asked_first.len() > 3, "a tree, not a star: {asked_first:?}");
}

#[test]
fn region_weights_split_exactly_and_a_region_without_nodes_fails_clearly() {
    let mut sim = Sim::new(&[("fra", 1), ("nrt", 1), ("ewr", 1)], 0, 11);
    let weights = assign::parse_region_weights("fra=33,nrt=33,ewr=34").ok();
    let run = sim.submit(2, spec(100, 2), weights);
    assert!(sim.run_until(Duration::from_secs(10), |s| s.all_finished(&run)));
    let r = sim.nodes[0]
        .core
        .get(&run)
        .unwrap_or_else(|| panic!("no run"));
    let by_region: BTreeMap<String, u64> = r
        .plan
        .iter()
        .flat_map(|p| &p.shares)
        .map(|s| {
            let region = sim.nodes[sim.index(&s.node).unwrap_or(0)].region.clone();
            (region, s.segment.scale(100))
        })
        .collect();
    assert_eq!(by_region.get("fra"), Some(&33));
    assert_eq!(by_region.get("nrt"), Some(&33));
    assert_eq!(by_region.get("ewr"), Some(&34));

    let weights = assign::parse_region_weights("fra=50,sin=50").ok();
    let run = sim.submit(0, spec(10, 2), weights);
    assert!(sim.run_until(Duration::from_secs(3), |s| s.all_finished(&run)));
    match sim.finish_of(&run).outcome {
        Outcome::Failed { reason } => {
            assert!(reason.contains("region sin"), "{reason}");
            assert!(reason.contains("drop sin from --region"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn two_hundred_nodes_with_loss_and_a_healed_partition_agree_and_complete() {
    let mut sim = Sim::new(&[("fra", 80), ("nrt", 70), ("ewr", 50)], 10, 0xfeed);
    let run = sim.submit(17, spec(10_000, 20), None);
    // Loss delays some: each message is re-sent every second.
    assert!(
        sim.reach(&run, Phase::Running, Duration::from_secs(10)),
        "{:?}",
        sim.phase_everywhere(&run)
    );
    let before = sim.sent;
    // Cut a third of the mesh off (the leader on the big side) for 6 s
    // during the run, then heal.
    let leader = sim.leader_index(&run);
    let sides: Vec<u8> = (0..sim.nodes.len())
        .map(|i| u8::from(i % 3 == 0 && i != leader))
        .collect();
    sim.partition = Some((sides, sim.now));
    sim.run_until(Duration::from_secs(6), |_| false);
    sim.partition = None;
    assert!(
        sim.run_until(Duration::from_secs(40), |s| s.all_finished(&run)),
        "{:?}",
        sim.phase_everywhere(&run)
    );
    let leaders = sim.leader_everywhere(&run);
    assert_eq!(leaders.len(), 1, "{leaders:?}");
    assert_eq!(sim.plans(&run).len(), 1);
    let finish = sim.finish_of(&run);
    assert_eq!(finish.outcome, Outcome::Complete);
    assert!(finish.lost.is_empty(), "{:?}", finish.lost);
    let vus: u64 = vus_of(&sim, &run, 10_000).iter().sum();
    assert_eq!(vus, 10_000);
    // Every node's share ran once, and they started together.
    for (_, n) in sim.live() {
        let w = n
            .workers
            .get(&run)
            .unwrap_or_else(|| panic!("{} did not run", n.id));
        assert!(w.finished && w.started.is_some(), "{}", n.id);
    }
    let per_node_per_s = (sim.sent - before) as f64 / 200.0 / 46.0;
    assert!(
        per_node_per_s < 10.0,
        "{per_node_per_s} messages per node per second"
    );
}

#[test]
fn a_leader_lost_before_the_start_is_replaced_and_the_run_completes_without_it() {
    let mut sim = Sim::new(&[("fra", 3), ("nrt", 2)], 0, 3);
    let run = sim.submit(0, spec(50, 3), None);
    assert!(sim.reach(&run, Phase::Assigned, Duration::from_millis(100)));
    let old = sim.leader_index(&run);
    let old_id = sim.nodes[old].id.clone();
    sim.nodes[old].crashed_at = Some(sim.now);
    assert!(sim.run_until(Duration::from_secs(15), |s| s.all_finished(&run)));
    let leaders = sim.leader_everywhere(&run);
    assert_eq!(leaders.len(), 1);
    assert_ne!(
        leaders.iter().next().cloned().flatten(),
        Some(old_id.clone())
    );
    assert_eq!(sim.finish_of(&run).outcome, Outcome::Complete);
    let plan_nodes: Vec<String> = sim.nodes[(old + 1) % 5]
        .core
        .get(&run)
        .and_then(|r| r.plan.clone())
        .map(|p| p.shares.into_iter().map(|s| s.node).collect())
        .unwrap_or_default();
    assert_eq!(plan_nodes.len(), 4);
    assert!(!plan_nodes.contains(&old_id));
    assert_eq!(vus_of(&sim, &run, 50).iter().sum::<u64>(), 50);
}

#[test]
fn a_leader_or_worker_lost_mid_run_is_marked_lost_and_the_run_completes() {
    for kill_leader in [true, false] {
        let mut sim = Sim::new(&[("fra", 2), ("nrt", 2)], 0, 5);
        let run = sim.submit(1, spec(40, 6), None);
        assert!(sim.reach(&run, Phase::Running, Duration::from_secs(3)));
        sim.run_until(Duration::from_secs(1), |_| false);
        let leader = sim.leader_index(&run);
        let victim = if kill_leader {
            leader
        } else {
            (leader + 1) % 4
        };
        let victim_id = sim.nodes[victim].id.clone();
        sim.nodes[victim].crashed_at = Some(sim.now);
        assert!(sim.run_until(Duration::from_secs(20), |s| s.all_finished(&run)));
        let finish = sim.finish_of(&run);
        assert_eq!(finish.outcome, Outcome::Complete);
        assert_eq!(finish.lost, vec![victim_id.clone()]);
        if kill_leader {
            assert!(finish.term > 0, "a new leader finished the run");
        }
        assert_eq!(sim.leader_everywhere(&run).len(), 1);
    }
}

#[test]
fn a_wall_clock_step_of_the_leader_or_a_worker_neither_ends_nor_holds_a_run() {
    for (step_s, on_leader) in [
        (90i64, true),
        (-90, true),
        (3600, true),
        (-3600, true),
        (1, true),
        (3600, false),
        (-3600, false),
    ] {
        let mut sim = Sim::new(&[("fra", 2), ("nrt", 1)], 0, 11);
        let run = sim.submit(0, spec(30, 10), None);
        assert!(sim.reach(&run, Phase::Running, Duration::from_secs(3)));
        sim.run_until(Duration::from_secs(3), |_| false);
        let leader = sim.leader_index(&run);
        let who = if on_leader { leader } else { (leader + 1) % 3 };
        sim.nodes[who].skew_ns += step_s * 1_000_000_000;
        let stepped_at = sim.now;
        assert!(
            sim.run_until(Duration::from_secs(30), |s| s.all_finished(&run)),
            "step {step_s} s (leader: {on_leader}): the run never finished"
        );
        let finish = sim.finish_of(&run);
        assert_eq!(finish.outcome, Outcome::Complete, "step {step_s} s");
        assert!(
            finish.lost.is_empty(),
            "step {step_s} s: lost {:?}",
            finish.lost
        );
        for n in &sim.nodes {
            let w = &n.workers[&run];
            assert!(
                w.finished && w.stop_seen_at.is_none(),
                "step {step_s} s: {} was stopped before its share ended",
                n.id
            );
        }
        assert!(
            sim.now >= stepped_at + Duration::from_secs(6),
            "step {step_s} s: finished {:?} after the step, before the shares could end",
            sim.now - stepped_at
        );
        assert!(
            sim.now <= stepped_at + Duration::from_secs(10),
            "step {step_s} s: finished {:?} after the step",
            sim.now - stepped_at
        );
        let phases = sim.phase_everywhere(&run);
        assert!(phases.iter().all(|p| *p == Phase::Complete), "{phases:?}");
    }
}

#[test]
fn a_first_ranked_candidate_that_never_acts_is_passed_over_and_the_run_completes() {
    let mut sim = Sim::new(&[("fra", 3), ("nrt", 1)], 0, 21);
    // Mute whichever node ranks first for the next run id: submit once to
    // learn the id's ranking, then mute its first and submit the same way.
    let probe = sim.submit(1, spec(8, 2), None);
    let first = sim.rank(&probe, 0);
    assert!(sim.run_until(Duration::from_secs(30), |s| s.all_finished(&probe)));
    let mut sim = Sim::new(&[("fra", 3), ("nrt", 1)], 0, 21);
    sim.muted.insert(first);
    let submitter = if first == 1 { 2 } else { 1 };
    let run = sim.submit(submitter, spec(8, 2), None);
    assert_eq!(
        sim.rank(&run, 0),
        first,
        "the same id ranks the same node first"
    );
    // 10 s without a plan, then the next candidate leads; the muted node
    // gets a share it never prepares, so the plan waits out its ready
    // timeout (60 s) and is made again without it.
    assert!(
        sim.run_until(Duration::from_secs(120), |s| s
            .live()
            .filter(|(i, _)| !s.muted.contains(i))
            .all(|(_, n)| n.core.get(&run).is_some_and(|r| r.finish.is_some()))),
        "the run never finished: {:?}",
        sim.phase_everywhere(&run)
    );
    let finish = sim
        .live()
        .filter(|(i, _)| *i != first)
        .find_map(|(_, n)| n.core.get(&run).and_then(|r| r.finish.clone()))
        .unwrap_or_else(|| panic!("no finish"));
    assert_eq!(finish.outcome, Outcome::Complete);
    assert!(finish.term > 0, "a later candidate led");
}

#[test]
fn with_on_loss_abort_a_lost_worker_stops_the_run_at_once_naming_it() {
    let mut sim = Sim::new(&[("fra", 2), ("nrt", 2)], 0, 5);
    let mut s = spec(40, 30);
    s.on_loss = crate::spec::OnLoss::Abort;
    let run = sim.submit(1, s, None);
    assert!(sim.reach(&run, Phase::Running, Duration::from_secs(3)));
    sim.run_until(Duration::from_secs(2), |_| false);
    let leader = sim.leader_index(&run);
    let victim = (leader + 1) % 4;
    let victim_id = sim.nodes[victim].id.clone();
    // A suspicion shorter than the grace does not end the run.
    sim.suspects.insert((leader, victim));
    sim.run_until(Duration::from_millis(1500), |_| false);
    sim.suspects.remove(&(leader, victim));
    sim.run_until(Duration::from_secs(1), |_| false);
    assert!(!sim.all_finished(&run), "a 1.5 s suspicion aborted the run");
    sim.nodes[victim].crashed_at = Some(sim.now);
    let killed = sim.now;
    assert!(sim.run_until(Duration::from_secs(10), |s| s.all_finished(&run)));
    let took = sim.now - killed;
    // Suspected after 3.5 s of silence, gone 2 s more, then the stop
    // reaches everyone.
    assert!(
        took >= Duration::from_millis(5500) && took < Duration::from_secs(7),
        "the abort took {took:?}"
    );
    let finish = sim.finish_of(&run);
    assert!(
        matches!(finish.outcome, Outcome::Stopped { reason: None, .. }),
        "{finish:?}"
    );
    assert_eq!(finish.lost, vec![victim_id]);
    sim.run_until(Duration::from_secs(1), |_| false);
    for (i, n) in sim.live() {
        let w = &n.workers[&run];
        assert!(w.stop_seen_at.is_some(), "node {i} was never told to stop");
    }
}

#[test]
fn a_stop_from_any_node_reaches_every_worker_within_a_second() {
    let mut sim = Sim::new(&[("fra", 3), ("nrt", 2)], 0, 9);
    let run = sim.submit(0, spec(50, 60), None);
    assert!(sim.reach(&run, Phase::Running, Duration::from_secs(3)));
    let asked = sim.now;
    let actions = sim
        .with_core(3, |core, at, view| {
            core.stop(
                &run,
                Some("http_req_failed: rate<0.01 abortOnFail".into()),
                at,
                view,
            )
        })
        .unwrap_or_else(|e| panic!("{e}"));
    sim.carry_out(3, actions);
    assert!(
        sim.run_until(Duration::from_secs(1), |s| s.nodes.iter().all(|n| n
            .workers
            .get(&run)
            .is_some_and(|w| w.stop_seen_at.is_some())))
    );
    assert!(sim.now - asked < Duration::from_secs(1));
    assert!(sim.run_until(Duration::from_secs(3), |s| s.all_finished(&run)));
    assert_eq!(
        sim.finish_of(&run).outcome,
        Outcome::Stopped {
            by: sim.nodes[3].id.clone(),
            reason: Some("http_req_failed: rate<0.01 abortOnFail".into()),
        },
        "every node's finish says which threshold stopped the run"
    );
}

#[test]
fn refusing_nodes_get_no_share_and_if_all_refuse_the_run_fails_naming_them() {
    let mut sim = Sim::new(&[("fra", 3)], 0, 13);
    sim.nodes[1].refuse = Some("target 10.0.0.1:80 is not in --allow-target".into());
    let run = sim.submit(0, spec(9, 2), None);
    assert!(sim.run_until(Duration::from_secs(10), |s| s.all_finished(&run)));
    assert_eq!(sim.finish_of(&run).outcome, Outcome::Complete);
    let r = sim.nodes[2]
        .core
        .get(&run)
        .unwrap_or_else(|| panic!("no run"));
    assert!(r.refused.contains_key(&sim.nodes[1].id));
    assert!(r.share_of(&sim.nodes[1].id).is_none());
    assert_eq!(vus_of(&sim, &run, 9).iter().sum::<u64>(), 9);

    for n in &mut sim.nodes {
        n.refuse = Some("not allowed".into());
    }
    let run = sim.submit(0, spec(9, 2), None);
    assert!(sim.run_until(Duration::from_secs(10), |s| s.all_finished(&run)));
    match sim.finish_of(&run).outcome {
        Outcome::Failed { reason } => assert!(reason.contains("not allowed"), "{reason}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn orders_from_a_node_that_does_not_lead_are_refused() {
    let mut sim = Sim::new(&[("fra", 3)], 0, 17);
    let run = sim.submit(0, spec(3, 60), None);
    assert!(sim.reach(&run, Phase::Running, Duration::from_secs(3)));
    let leader = sim.leader_index(&run);
    let rogue = (leader + 1) % 3;
    let rogue_id = sim.nodes[rogue].id.clone();
    let target = (leader + 2) % 3;
    let at = sim.at(target);
    let plan = sim.nodes[target]
        .core
        .get(&run)
        .and_then(|r| r.plan.clone())
        .unwrap_or_else(|| panic!("no plan"));
    let candidates = sim.nodes[target]
        .core
        .get(&run)
        .map(|r| r.proposal.candidates.clone())
        .unwrap_or_default();
    let assign = RunEnvelope {
        protocol: RUN_PROTOCOL,
        run: run.clone(),
        body: RunMessage::Assign(
            Plan { term: 0, ..plan }
                .to_wire(&candidates)
                .unwrap_or_else(|| panic!("a plan of candidates")),
        ),
        sig: None,
    };
    let refused = sim.nodes[target].core.on_message(&rogue_id, assign, at);
    assert!(
        matches!(refused, Err(RunRefused::NotLeader(_))),
        "{refused:?}"
    );
    let unknown = RunEnvelope {
        protocol: RUN_PROTOCOL,
        run: "nope".into(),
        body: RunMessage::Stop { reason: None },
        sig: None,
    };
    assert_eq!(
        sim.nodes[target].core.on_message(&rogue_id, unknown, at),
        Err(RunRefused::UnknownRun)
    );
}

#[test]
fn a_run_survives_its_encoding_and_a_restart_hears_the_share_interrupted() {
    let mut sim = Sim::new(&[("fra", 2)], 0, 19);
    let run = sim.submit(0, spec(2, 60), None);
    assert!(sim.run_until(Duration::from_secs(3), |s| {
        s.nodes
            .iter()
            .all(|n| n.workers.get(&run).is_some_and(|w| w.started.is_some()))
    }));
    let stored = sim.nodes[1]
        .core
        .get(&run)
        .cloned()
        .unwrap_or_else(|| panic!("no run"));
    let bytes = wire::encode(&stored);
    let back: Run = ciborium::from_reader(bytes.as_slice()).unwrap_or_else(|e| panic!("{e}"));
    let mut fresh = RunsCore::new(sim.nodes[1].id.clone(), RunsConfig::default());
    let at = sim.at(1);
    assert_eq!(fresh.restore(back, at), Some(run.clone()));
    let view = View { me: 1, sim: &sim };
    let actions = fresh.finished(&run, 4, true, &view);
    // The word goes to the leader and the next in line, not to every node.
    assert!(matches!(
        &actions[..],
        [RunAction::Tell {
            to,
            env: RunEnvelope {
                body: RunMessage::Done {
                    shards: 4,
                    interrupted: true
                },
                ..
            }
        }] if to.len() == 1 && *to != [sim.nodes[1].id.clone()]
    ));
}

/// What a node that has just restarted sees: itself, and the others only
/// once it has heard them (`others`).
struct JustRestarted {
    me: String,
    others: bool,
}

impl MeshView for JustRestarted {
    fn alive(&self, peer: &str) -> bool {
        peer == self.me || self.others
    }

    fn offset(&self, _peer: &str) -> Option<(i64, i64)> {
        Some((0, 1_000_000))
    }
}

/// A worker restarted 3 s into a run takes the run back as a new process:
/// its monotonic clock starts at [`MONOTONIC_ORIGIN`], so T0 (before the
/// process started) is anchored where it was, not clamped to the start;
/// and alone for a moment (it has heard no one yet), it takes over nothing:
/// no arm under a higher term of its own, no handoff counted from its own
/// start. The leader still alive leads on once it hears the others.
#[test]
fn a_restarted_worker_anchors_t0_before_its_start_and_takes_over_nothing() {
    let mut sim = Sim::new(&[("fra", 3)], 0, 37);
    let run = sim.submit(0, spec(30, 20), None);
    assert!(sim.reach(&run, Phase::Running, Duration::from_secs(3)));
    sim.run_until(Duration::from_secs(3), |_| false);
    let leader = sim.leader_index(&run);
    let victim = (leader + 1) % 3;
    let stored = sim.nodes[victim]
        .core
        .get(&run)
        .cloned()
        .unwrap_or_else(|| panic!("no run"));
    let leader_since = sim.nodes[leader]
        .core
        .get(&run)
        .and_then(|r| {
            r.since_t0(
                sim.at(leader),
                &View {
                    me: leader,
                    sim: &sim,
                },
            )
        })
        .unwrap_or_else(|| panic!("the leader has no T0"));
    assert!(leader_since > 2.5, "T0 was {leader_since} s ago");
    let me = sim.nodes[victim].id.clone();
    let mut fresh = RunsCore::new(me.clone(), RunsConfig::default());
    let wall_ns = sim.at(victim).wall_ns;
    let at = |ms: u64| At {
        now: MONOTONIC_ORIGIN + Duration::from_millis(ms),
        wall_ns: wall_ns + i64::try_from(ms).unwrap_or(0) * 1_000_000,
    };
    assert_eq!(fresh.restore(stored, at(0)), Some(run.clone()));
    let mut published = fresh.finished(
        &run,
        4,
        true,
        &JustRestarted {
            me: me.clone(),
            others: false,
        },
    );
    for ms in (10..=3000).step_by(10) {
        let view = JustRestarted {
            me: me.clone(),
            others: ms >= 300,
        };
        published.extend(fresh.tick(at(ms), &view));
    }
    let taken_over: Vec<&RunAction> = published
        .iter()
        .filter(|a| {
            matches!(
                a,
                RunAction::Publish(RunEnvelope {
                    body: RunMessage::Arm { .. } | RunMessage::Handoff(_) | RunMessage::Assign(_),
                    ..
                })
            )
        })
        .collect();
    assert!(taken_over.is_empty(), "{taken_over:?}");
    let view = JustRestarted { me, others: true };
    let since = fresh
        .get(&run)
        .and_then(|r| r.since_t0(at(3000), &view))
        .unwrap_or_else(|| panic!("no T0 after the restart"));
    assert!(
        (since - (leader_since + 3.0)).abs() < 0.1,
        "T0 was {since} s ago by the restarted node, {leader_since} + 3 s by the leader"
    );
}

/// The leader's wall clock steps +90 s right after it armed, before its
/// next tick: T0 stays where it was armed (on the monotonic clock), so the
/// run goes on and ends complete, with no node lost. (Anchored at the next
/// tick, T0 moved 90 s into the past and every node was declared lost.)
#[test]
fn a_wall_clock_step_of_the_leader_just_after_it_armed_moves_no_t0() {
    let mut sim = Sim::new(&[("fra", 2), ("nrt", 1)], 0, 41);
    let run = sim.submit(0, spec(30, 5), None);
    let armed_by = |s: &Sim| {
        s.nodes.iter().position(|n| {
            n.core
                .get(&run)
                .and_then(|r| r.armed.as_ref())
                .is_some_and(|a| a.by == n.id)
        })
    };
    assert!(sim.run_until(Duration::from_secs(5), |s| armed_by(s).is_some()));
    let leader = armed_by(&sim).unwrap_or_else(|| panic!("no arm"));
    sim.nodes[leader].skew_ns += 90_000_000_000;
    assert!(sim.run_until(Duration::from_secs(20), |s| {
        s.nodes
            .iter()
            .all(|n| n.core.get(&run).is_some_and(|r| r.is_finished()))
    }));
    let finish = sim.nodes[leader]
        .core
        .get(&run)
        .and_then(|r| r.finish.clone())
        .unwrap_or_else(|| panic!("no finish"));
    assert_eq!(finish.outcome, Outcome::Complete, "{finish:?}");
    assert!(finish.lost.is_empty(), "{finish:?}");
}

#[test]
fn nodes_n_keeps_n_candidates_one_per_weighted_region_first() {
    let sim = Sim::new(&[("fra", 4), ("nrt", 2)], 0, 23);
    let candidates: Vec<Candidate> = sim
        .nodes
        .iter()
        .map(|n| Candidate {
            id: n.id.clone(),
            region: n.region.clone(),
            capacity: 100,
        })
        .collect();
    let proposal = Proposal {
        proposer: candidates[0].id.clone(),
        spec: spec(10, 1),
        weights: assign::parse_region_weights("fra=80,nrt=20").ok(),
        nodes: Some(2),
        candidates: candidates.clone(),
        members: None,
    };
    let chosen = select("r1", candidates.clone(), &proposal);
    let regions: BTreeSet<&str> = chosen.iter().map(|c| c.region.as_str()).collect();
    assert_eq!(chosen.len(), 2);
    assert_eq!(regions, BTreeSet::from(["fra", "nrt"]));
    // Every node picks the same ones, and the whole run goes to them.
    assert_eq!(
        select("r1", candidates.iter().rev().cloned().collect(), &proposal).len(),
        2
    );
    let proposal = Proposal {
        nodes: Some(3),
        weights: None,
        ..proposal
    };
    assert_eq!(select("r2", candidates, &proposal).len(), 3);
}

#[test]
fn a_node_that_missed_the_arm_and_takes_over_follows_the_arm_instead_of_replanning() {
    let mut sim = Sim::new(&[("fra", 3)], 0, 29);
    let run = sim.submit(0, spec(30, 8), None);
    let leader = sim.rank(&run, 0);
    let next = sim.rank(&run, 1);
    // The next in line misses the leader's arm, then believes it dead.
    sim.blocked.insert((leader, next));
    assert!(sim.run_until(Duration::from_secs(3), |s| {
        s.nodes[leader]
            .core
            .get(&run)
            .is_some_and(|r| r.armed.is_some())
    }));
    sim.run_until(Duration::from_millis(100), |_| false);
    assert!(
        sim.nodes[next]
            .core
            .get(&run)
            .is_some_and(|r| r.armed.is_none())
    );
    sim.suspects.insert((next, leader));
    assert!(sim.run_until(Duration::from_secs(6), |s| {
        s.nodes[next]
            .core
            .get(&run)
            .is_some_and(|r| r.armed.is_some())
    }));
    sim.blocked.clear();
    sim.suspects.clear();
    assert!(sim.run_until(Duration::from_secs(30), |s| s.all_finished(&run)));
    // One plan was armed, and it is everyone's.
    let armed: BTreeSet<String> = sim
        .nodes
        .iter()
        .map(|n| {
            format!(
                "{:?}",
                n.core
                    .get(&run)
                    .and_then(|r| r.armed.as_ref().map(|a| a.plan))
            )
        })
        .collect();
    assert_eq!(armed.len(), 1, "{armed:?}");
    assert_eq!(sim.plans(&run).len(), 1);
    assert_eq!(sim.finish_of(&run).outcome, Outcome::Complete);
    assert!(sim.finish_of(&run).lost.is_empty());
    // Every node ran its share once.
    for n in &sim.nodes {
        let w = n
            .workers
            .get(&run)
            .unwrap_or_else(|| panic!("{} did not run", n.id));
        assert!(w.finished, "{}", n.id);
    }
}

/// Three nodes armed 2 s ahead, `misjudge` making a worker's estimates
/// of the others' clocks that far off (with bounds that hold it) from
/// before the arm: the sim, the run, the worker, and T0 in true time.
fn armed_with_a_worker(misjudge: i64) -> (Sim, String, usize, Duration) {
    let config = RunsConfig {
        arm_lead: Duration::from_secs(2),
        ..RunsConfig::default()
    };
    let mut sim = Sim::new(&[("fra", 2), ("nrt", 1)], 0, 43).with_config(config);
    let run = sim.submit(0, spec(30, 5), None);
    let leader = sim.rank(&run, 0);
    let worker = (leader + 1) % 3;
    sim.misjudged.insert(worker, misjudge);
    assert!(sim.reach(&run, Phase::Armed, Duration::from_secs(5)));
    let true_t0 = sim.true_of_wall(leader, sim.armed_t0_ns(&run, worker));
    (sim, run, worker, true_t0)
}

/// Runs until every node was handed its start, and checks that `worker`'s
/// is within 1 ms of `true_t0`.
fn starts_on_time(sim: &mut Sim, run: &str, worker: usize, true_t0: Duration) {
    let start_at = |s: &Sim, i: usize| s.nodes[i].workers.get(run).and_then(|w| w.start_at);
    assert!(sim.run_until(Duration::from_secs(3), |s| {
        (0..3).all(|i| start_at(s, i).is_some())
    }));
    let handed = start_at(sim, worker).unwrap_or_else(|| panic!("no start"));
    let off = handed.abs_diff(true_t0);
    assert!(off < Duration::from_millis(1), "started {off:?} off T0");
}

/// A worker's estimate of the leader's clock narrows with each sample; it
/// translates T0 again until [`START_AHEAD`] before it, so the samples that
/// come after the arm count (the far workers hold few when it comes).
#[test]
fn a_worker_translates_t0_again_until_shortly_before_it() {
    // Its estimate is 20 ms off when the arm comes.
    let (mut sim, run, worker, true_t0) = armed_with_a_worker(20_000_000);
    sim.run_until(Duration::from_millis(500), |_| false);
    // Not handed its start yet, T0 being over a second away.
    assert_eq!(
        sim.nodes[worker].workers.get(&run).and_then(|w| w.start_at),
        None
    );
    // Its estimate is right well before T0, and it starts on time.
    sim.misjudged.remove(&worker);
    starts_on_time(&mut sim, &run, worker, true_t0);
}

/// A translation that cannot hold beside the first (further apart than
/// both bounds) is the leader's clock stepped since it said T0: the worker
/// keeps the instant it anchored.
#[test]
fn a_worker_keeps_its_t0_when_the_leaders_clock_steps_before_it() {
    let (mut sim, run, worker, true_t0) = armed_with_a_worker(0);
    sim.run_until(Duration::from_millis(300), |_| false);
    // The worker's samples now say the leader's clock is 5 s ahead.
    sim.stepped.insert(worker, 5_000_000_000);
    starts_on_time(&mut sim, &run, worker, true_t0);
}

/// The start's quiet ([`START_QUIET`]): the arming leader's `held`s stop
/// before it, and its progress starts after it, so nothing of the run
/// floods the mesh around T0. The arm's lead (300 ms) is three `held`
/// paces, so the third went out just before T0.
#[test]
fn nothing_of_the_run_floods_the_mesh_in_the_starts_quiet() {
    for seed in [47, 53, 59] {
        let mut sim = Sim::new(&[("fra", 3), ("nrt", 2)], 0, seed);
        let run = sim.submit(0, spec(10, 3), None);
        assert!(sim.reach(&run, Phase::Armed, Duration::from_secs(5)));
        let leader = sim.leader_index(&run);
        let t0 = sim.true_of_wall(leader, sim.armed_t0_ns(&run, leader));
        sim.run_until(Duration::from_secs(2), |_| false);
        let sent = |kind: &str| -> Vec<Duration> {
            sim.published
                .iter()
                .filter(|(_, _, k)| *k == kind)
                .map(|(t, _, _)| *t)
                .collect()
        };
        let (held, live) = (sent("held"), sent("live"));
        // Both went out, the `held`s before T0 and the progress after it.
        assert!(held.iter().any(|t| *t < t0), "seed {seed}: {held:?}");
        assert!(live.iter().any(|t| *t > t0), "seed {seed}: {live:?}");
        let quiet = t0.saturating_sub(START_QUIET)..t0 + START_QUIET;
        for t in held.iter().chain(&live) {
            assert!(
                !quiet.contains(t),
                "seed {seed}: sent at {t:?}, T0 at {t0:?}: held {held:?}, live {live:?}"
            );
        }
    }
}

#[test]
fn a_stop_between_the_arm_and_t0_ends_the_run_at_once() {
    let config = RunsConfig {
        arm_lead: Duration::from_secs(3),
        ..RunsConfig::default()
    };
    let mut sim = Sim::new(&[("fra", 3)], 0, 31).with_config(config);
    let run = sim.submit(0, spec(30, 30), None);
    assert!(sim.reach(&run, Phase::Armed, Duration::from_secs(2)));
    let asked = sim.now;
    let actions = sim
        .with_core(1, |core, at, view| core.stop(&run, None, at, view))
        .unwrap_or_else(|e| panic!("{e}"));
    sim.carry_out(1, actions);
    assert!(sim.run_until(Duration::from_secs(3), |s| s.all_finished(&run)));
    assert!(sim.now - asked < Duration::from_secs(2));
    let finish = sim.finish_of(&run);
    assert!(
        matches!(finish.outcome, Outcome::Stopped { .. }),
        "{finish:?}"
    );
    assert!(finish.lost.is_empty(), "{finish:?}");
    assert!(
        sim.nodes
            .iter()
            .all(|n| n.workers.get(&run).is_none_or(|w| w.started.is_none()))
    );
}

#[test]
fn a_node_that_missed_the_finish_hears_it_when_it_speaks_and_a_restart_after_done_runs_nothing() {
    let mut sim = Sim::new(&[("fra", 3)], 0, 37);
    let run = sim.submit(0, spec(6, 2), None);
    assert!(sim.reach(&run, Phase::Running, Duration::from_secs(3)));
    // Cut one node off past the finish and the leader's re-sends of it.
    let leader = sim.leader_index(&run);
    let cut = (leader + 1) % 3;
    let sides: Vec<u8> = (0..3).map(|i| u8::from(i == cut)).collect();
    sim.partition = Some((sides, sim.now + Duration::from_secs(60)));
    sim.run_until(Duration::from_secs(25), |_| false);
    assert!(
        sim.nodes[cut]
            .core
            .get(&run)
            .is_some_and(|r| r.finish.is_none())
    );
    sim.partition = None;
    assert!(sim.run_until(Duration::from_secs(3), |s| s.all_finished(&run)));

    // A node whose share is done restarts: it prepares nothing again.
    let stored = sim.nodes[cut]
        .core
        .get(&run)
        .cloned()
        .unwrap_or_else(|| panic!("no run"));
    let mut fresh = RunsCore::new(sim.nodes[cut].id.clone(), RunsConfig::default());
    let at = sim.at(cut);
    assert_eq!(fresh.restore(stored, at), None);
    let view = View { me: cut, sim: &sim };
    let actions = fresh.tick(at, &view);
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, RunAction::Prepare { .. } | RunAction::Start { .. })),
        "{actions:?}"
    );
}

/// A word told after the finish (a node's re-send that crossed it) is
/// answered by the finish's holder alone while it is alive: the node next
/// in line, told the same word, used to pass the leader's finish on with
/// its words (19 KB at 1,000 nodes) to the whole mesh. Once the holder is
/// gone, the next answers in its place, with the leader's signature and,
/// as every copy goes, without the words.
#[test]
fn a_word_after_the_finish_is_answered_by_the_leader_alone_and_by_the_next_once_it_is_gone() {
    let mut sim = Sim::new(&[("fra", 5)], 0, 41);
    let run = sim.submit(0, spec(5, 2), None);
    assert!(sim.run_until(Duration::from_secs(20), |s| s.all_finished(&run)));
    // Past the leader's re-sends of its finish.
    sim.run_until(Duration::from_secs(8), |_| false);
    let leader = sim.leader_index(&run);
    assert_eq!(leader, sim.rank(&run, 0), "no takeover in this run");
    let next = sim.rank(&run, 1);
    let teller = sim.rank(&run, 2);
    let late = || RunEnvelope {
        protocol: wire::RUN_PROTOCOL,
        run: run.clone(),
        body: RunMessage::Done {
            shards: 2,
            interrupted: false,
        },
        sig: None,
    };
    let finishes_since = |sim: &Sim, since: Duration| -> Vec<(usize, &'static str)> {
        sim.published
            .iter()
            .filter(|(t, _, kind)| *t >= since && kind.starts_with("finish"))
            .map(|(_, i, kind)| (*i, *kind))
            .collect()
    };
    let since = sim.now;
    let env = late();
    sim.send(teller, leader, &env);
    sim.send(teller, next, &env);
    sim.run_until(Duration::from_secs(3), |_| false);
    assert_eq!(finishes_since(&sim, since), vec![(leader, "finish")]);

    // The leader gone, the next passes its finish on.
    sim.nodes[leader].crashed_at = Some(sim.now);
    sim.run_until(SUSPECT_AFTER + Duration::from_secs(1), |_| false);
    let since = sim.now;
    let env = late();
    sim.send(teller, next, &env);
    sim.run_until(Duration::from_secs(3), |_| false);
    assert_eq!(finishes_since(&sim, since), vec![(next, "finish")]);
}

#[test]
fn multi_line_refusals_reach_the_leader_and_terms_wrap_around_the_ranking() {
    let mut sim = Sim::new(&[("fra", 2)], 0, 41);
    sim.nodes[1].refuse = Some(format!("line one\nline two {}", "x".repeat(3000)));
    let run = sim.submit(0, spec(4, 1), None);
    assert!(sim.run_until(Duration::from_secs(10), |s| s.all_finished(&run)));
    let r = sim.nodes[0]
        .core
        .get(&run)
        .unwrap_or_else(|| panic!("no run"));
    let reason = r.refused.get(&sim.nodes[1].id).cloned().unwrap_or_default();
    assert!(
        reason.starts_with("line one line two") && reason.len() <= 1004,
        "{reason}"
    );
    assert_eq!(sim.finish_of(&run).outcome, Outcome::Complete);

    // Rank 0 looks dead for a while, rank 1 takes over and dies: rank 0
    // leads again, at term 2.
    let mut sim = Sim::new(&[("fra", 3)], 0, 43);
    let run = sim.submit(0, spec(3, 60), None);
    let first = sim.rank(&run, 0);
    let second = sim.rank(&run, 1);
    for i in 0..3 {
        if i != first {
            sim.suspects.insert((i, first));
        }
    }
    assert!(sim.run_until(Duration::from_secs(10), |s| {
        s.nodes[first].core.get(&run).is_some_and(|r| r.term == 1)
    }));
    sim.suspects.clear();
    let third = sim.rank(&run, 2);
    sim.nodes[second].crashed_at = Some(sim.now);
    sim.nodes[third].crashed_at = Some(sim.now);
    assert!(sim.run_until(Duration::from_secs(10), |s| {
        s.nodes[first].core.get(&run).is_some_and(|r| r.term == 3)
    }));
    assert_eq!(sim.leader_index(&run), first);
}

#[test]
fn shards_are_kept_only_from_a_node_with_a_share_in_its_region_within_the_run() {
    use crate::metrics::SeriesSet;
    use crate::shard::Shard;
    let mut sim = Sim::new(&[("fra", 2), ("nrt", 1)], 0, 11);
    let run = sim.submit(0, spec(3, 5), None);
    assert!(sim.reach(&run, Phase::Running, Duration::from_secs(3)));
    let r = sim.nodes[0]
        .core
        .get(&run)
        .unwrap_or_else(|| panic!("no run"));
    let node = &sim.nodes[2];
    let good = Shard {
        notes: Vec::new(),
        run_id: run.clone(),
        node: node.id.clone(),
        name: "nrt-1".into(),
        region: node.region.clone(),
        seq: 3,
        start_ms: 3000,
        end_ms: 4000,
        last: false,
        series: SeriesSet::new(),
    };
    assert_eq!(r.check_shard(&good), Ok(()));
    let refused = |change: &dyn Fn(&mut Shard), why: &str| {
        let mut s = good.clone();
        change(&mut s);
        let err = r.check_shard(&s).expect_err(why);
        assert!(err.contains(why), "{err}");
    };
    refused(&|s| s.run_id = "other".into(), "of run other");
    refused(&|s| s.node = "12D3KooWnobody".into(), "has no share");
    refused(&|s| s.region = "fra".into(), "says region");
    refused(&|s| s.end_ms = 2000, "ends before it starts");
    // 5 s of load, 1 s of graceful stop, 300 s of slack.
    refused(&|s| s.end_ms = 307_000, "longest possible end");
    refused(&|s| s.seq = u64::MAX, "impossible");
}

#[test]
fn a_node_that_joins_later_adopts_an_ended_run_and_takes_no_part_in_it() {
    let mut sim = Sim::new(&[("fra", 2), ("nrt", 1)], 0, 13);
    let run = sim.submit(0, spec(3, 2), None);
    assert!(sim.run_until(Duration::from_secs(10), |s| s.all_finished(&run)));
    // From a node that heard the finish (so it holds the leader's
    // signature of it).
    let teller = (sim.leader_index(&run) + 1) % 3;
    let ended = sim.nodes[teller]
        .core
        .get(&run)
        .and_then(Run::ended)
        .unwrap_or_else(|| panic!("an ended run"));
    let mut late = RunsCore::new("late-node".into(), RunsConfig::default());
    let at = At {
        now: Duration::from_secs(500),
        wall_ns: 1_000_000_000_000,
    };
    assert_eq!(late.adopt(ended.clone(), at), Ok(true));
    assert_eq!(late.adopt(ended.clone(), at), Ok(false), "once is enough");
    let adopted = late.get(&run).unwrap_or_else(|| panic!("adopted"));
    assert!(adopted.is_finished());
    assert_eq!(adopted.report_meta().expected.len(), 3);
    struct Nobody;
    impl MeshView for Nobody {
        fn alive(&self, _: &str) -> bool {
            true
        }
        fn offset(&self, _: &str) -> Option<(i64, i64)> {
            Some((0, 0))
        }
    }
    let actions = late.tick(at, &Nobody);
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, RunAction::Prepare { .. } | RunAction::Start { .. })),
        "{actions:?}"
    );
    // Forged parts are refused.
    let fresh = || RunsCore::new("late-node".into(), RunsConfig::default());
    let mut unsigned = ended.clone();
    unsigned.finish_sig = None;
    assert!(fresh().adopt(unsigned, at).is_err());
    let mut forged = ended.clone();
    if let Some(sig) = forged.finish_sig.as_mut() {
        sig.signer = sim.nodes[teller].id.clone();
    }
    assert!(
        fresh().adopt(forged, at).is_err(),
        "a finish signed by another node than its leader"
    );
    let mut bad = ended.clone();
    bad.plan.shares[0].node = "stranger".into();
    assert!(fresh().adopt(bad, at).is_err());
    let mut odd = ended.clone();
    odd.started.insert("stranger".into(), (0, 0));
    let mut core = fresh();
    assert_eq!(
        core.adopt(odd, at),
        Ok(true),
        "starts outside the plan are dropped"
    );
    assert!(
        core.get(&run)
            .is_some_and(|r| !r.started.contains_key("stranger"))
    );
    let mut future = ended.clone();
    if let Some(a) = future.armed.as_mut() {
        a.t0_ns = i64::MAX;
    }
    let mut core = fresh();
    assert_eq!(core.adopt(future, at), Ok(true));
    assert!(
        core.get(&run).is_some_and(|r| r.seen_wall_ns <= at.wall_ns),
        "a run from the future is not newer than now"
    );
    let mut bad = ended;
    bad.finish.lost = vec!["x".into(); wire::MAX_CANDIDATES + 1];
    assert!(fresh().adopt(bad, at).is_err());
}

/// A plan of over 64 shares that comes before its proposal is kept, and
/// taken once the proposal comes: a node far from the proposer asks it for
/// the proposal while the leader, nearer, has sent its plan to every node.
/// Dropped, it cost a second ask, of the leader (a quarter of 1,000
/// simulated nodes, seed 2, were ready 0.9 s after the rest). Few are kept:
/// one from a node, four in all.
#[test]
fn a_large_plan_before_its_proposal_is_kept_and_few_are() {
    let at = At {
        now: Duration::from_secs(1),
        wall_ns: T,
    };
    let ids: Vec<String> = std::iter::once("me".to_owned())
        .chain((0..99).map(|i| format!("n{i:02}")))
        .collect();
    let proposal = |id: &str| RunEnvelope {
        protocol: RUN_PROTOCOL,
        run: id.to_owned(),
        body: RunMessage::Propose(proposed_by_n00(&ids, 100)),
        sig: None,
    };
    let plan = |id: &str| {
        let segments = ExecutionSegment::split(&vec![1; ids.len()]);
        let leader = ranking(id, &ids)[0].clone();
        let env = RunEnvelope {
            protocol: RUN_PROTOCOL,
            run: id.to_owned(),
            body: RunMessage::Assign(
                Plan {
                    term: 0,
                    id: (0, 1),
                    shares: ids
                        .iter()
                        .zip(segments)
                        .enumerate()
                        .map(|(i, (node, segment))| Assigned {
                            node: node.clone(),
                            segment,
                            first_vu_id: i as u64,
                        })
                        .collect(),
                }
                .to_wire(&proposed_by_n00(&ids, 100).candidates)
                .unwrap_or_else(|| panic!("a plan of candidates")),
            ),
            sig: None,
        };
        (leader, env)
    };
    let mut core = RunsCore::new("me".into(), RunsConfig::default());
    let runs: Vec<String> = (0..7).map(|i| format!("run-{i}")).collect();
    // Six plans, of six runs, before their proposals; the first two from
    // one node, as if it led both.
    let first = plan(&runs[0]);
    for run in &runs[..6] {
        let (leader, env) = plan(run);
        let from = if run == &runs[1] { &first.0 } else { &leader };
        assert_eq!(core.on_message(from, env, at), Err(RunRefused::UnknownRun));
    }
    let kept = |core: &mut RunsCore, run: &str| {
        core.on_message("n00", proposal(run), at)
            .unwrap_or_else(|e| panic!("{e}"));
        core.get(run).is_some_and(|r| r.plan.is_some())
    };
    let held: Vec<bool> = runs[..6].iter().map(|r| kept(&mut core, r)).collect();
    // The second came from the node that had a plan kept already; the
    // sixth found four kept.
    assert_eq!(held, [true, false, true, true, true, false]);
    // Taken, they leave room: the next is kept again.
    let (leader, env) = plan(&runs[6]);
    assert_eq!(
        core.on_message(&leader, env, at),
        Err(RunRefused::UnknownRun)
    );
    assert!(kept(&mut core, &runs[6]));
}

#[test]
fn an_arm_names_its_plan_by_digest_and_a_node_without_it_asks_and_takes_it_from_any_holder() {
    let at = At {
        now: Duration::from_secs(1),
        wall_ns: T,
    };
    let ids: Vec<String> = ["me", "n00", "n01", "n02"].map(str::to_owned).to_vec();
    let run = "run-digest";
    let leader = ranking(run, &ids)[0].clone();
    let holder = ids
        .iter()
        .find(|id| **id != leader && *id != "me")
        .cloned()
        .unwrap_or_default();
    let env = |body| RunEnvelope {
        protocol: RUN_PROTOCOL,
        run: run.to_owned(),
        body,
        sig: None,
    };
    let plan = |first_vu_id: u64| Plan {
        term: 0,
        id: (0, 1),
        shares: ids
            .iter()
            .zip(ExecutionSegment::split(&vec![1; ids.len()]))
            .enumerate()
            .map(|(i, (node, segment))| Assigned {
                node: node.clone(),
                segment,
                first_vu_id: first_vu_id + i as u64,
            })
            .collect(),
    };
    let on_wire = |plan: &Plan| {
        plan.to_wire(&proposed_by_n00(&ids, 4).candidates)
            .unwrap_or_else(|| panic!("a plan of candidates"))
    };
    let armed = plan(0);
    let arm = env(RunMessage::Arm {
        term: 0,
        plan: armed.id,
        digest: armed.digest(),
        t0_ns: T + 2_000_000_000,
    });
    let wire = wire::encode(&arm);
    assert!(
        wire.len() < 200,
        "an arm of {} bytes: it carries the plan",
        wire.len()
    );
    let mut core = RunsCore::new("me".into(), RunsConfig::default());
    core.on_message(
        "n00",
        env(RunMessage::Propose(proposed_by_n00(&ids, 4))),
        at,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let _ = core.take_refusals();
    // Without the plan, the arm is kept, not followed, and the leader is asked.
    assert_eq!(core.on_message(&leader, arm.clone(), at), Ok(false));
    assert!(core.get(run).is_some_and(|r| r.armed.is_none()));
    let asks: Vec<String> = core
        .take_refusals()
        .into_iter()
        .filter_map(|a| match a {
            RunAction::Pull { run: r, from, .. } if r == run => Some(from),
            _ => None,
        })
        .collect();
    assert_eq!(asks, std::slice::from_ref(&leader));
    // Another plan under the same id, from a node that does not lead, is
    // neither taken nor armed.
    assert!(
        core.on_message(&holder, env(RunMessage::Assign(on_wire(&plan(7)))), at)
            .is_err()
    );
    assert!(
        core.get(run)
            .is_some_and(|r| r.armed.is_none() && r.plan.is_none())
    );
    // The armed plan, from the same node: its digest matches, so it is
    // taken and the kept arm followed.
    assert_eq!(
        core.on_message(&holder, env(RunMessage::Assign(on_wire(&armed))), at),
        Ok(true)
    );
    let state = core.get(run).map(|r| (r.plan.clone(), r.armed.clone()));
    let Some((Some(held), Some(a))) = state else {
        panic!("not armed: {state:?}");
    };
    assert_eq!(held, armed);
    assert_eq!(
        (a.plan, a.t0_ns, a.by.as_str()),
        (armed.id, T + 2_000_000_000, leader.as_str())
    );
    // Asked now, this node answers with the armed plan besides the arm;
    // with the proposal only where the asker says it lacks it.
    let mut answer = |known: bool| -> Vec<&'static str> {
        core.answer_run("n01", run, known, at)
            .iter()
            .map(|e| kind_of(&e.body))
            .collect()
    };
    let lacking = answer(false);
    assert!(lacking.contains(&"assign"), "{lacking:?}");
    assert!(lacking.contains(&"propose"), "{lacking:?}");
    let knowing = answer(true);
    assert!(knowing.contains(&"assign"), "{knowing:?}");
    assert!(!knowing.contains(&"propose"), "{knowing:?}");
}

#[test]
fn a_node_without_the_proposal_asks_the_relay_of_the_held_first_which_tells_it_once_it_knows() {
    let at = |ms: u64| At {
        now: Duration::from_millis(1000 + ms),
        wall_ns: T + ms as i64 * 1_000_000,
    };
    let ids: Vec<String> = ["me", "relay", "n00", "n01"].map(str::to_owned).to_vec();
    let run = "run-relayed";
    let env = |body| RunEnvelope {
        protocol: RUN_PROTOCOL,
        run: run.to_owned(),
        body,
        sig: None,
    };
    let held = env(RunMessage::Held(Held {
        term: 0,
        plan: None,
        armed: None,
        t0_ns: None,
    }));
    let pulls = |core: &mut RunsCore| -> Vec<(String, String)> {
        core.take_refusals()
            .into_iter()
            .filter_map(|a| match a {
                RunAction::Pull { run, from, .. } => Some((run, from)),
                _ => None,
            })
            .collect()
    };
    let asked = |from: &str| vec![(run.to_owned(), from.to_owned())];
    let mut relay = RunsCore::new("relay".into(), RunsConfig::default());
    let mut me = RunsCore::new("me".into(), RunsConfig::default());
    // The relay heard the proposer's `held` first hand, and asks it.
    assert_eq!(relay.on_message("n00", held.clone(), at(0)), Ok(false));
    assert_eq!(pulls(&mut relay), asked("n00"));
    // This node heard it from the relay, and asks the relay.
    assert_eq!(me.on_gossip("n00", "relay", held.clone(), at(5)), Ok(false));
    assert_eq!(pulls(&mut me), asked("relay"));
    // The relay does not know the run yet: it keeps the ask. It keeps no
    // ask about a run it is not asking about itself.
    assert!(relay.answer_run("me", run, false, at(10)).is_empty());
    assert!(
        relay
            .answer_run("n01", "run-unheard-of", false, at(10))
            .is_empty()
    );
    // Once it has the proposal, it tells this node, and no one else.
    let proposal = env(RunMessage::Propose(proposed_by_n00(&ids, 4)));
    assert_eq!(relay.on_message("n00", proposal, at(40)), Ok(true));
    let tells: Vec<(Vec<String>, &str)> = relay
        .take_refusals()
        .into_iter()
        .filter_map(|a| match a {
            RunAction::Tell { to, env } => Some((to, kind_of(&env.body))),
            _ => None,
        })
        .collect();
    assert_eq!(tells, vec![(vec!["me".to_owned()], "propose")]);
    // Had that tell been lost, this node's next ask goes to the proposer.
    assert_eq!(
        me.on_gossip("n00", "relay", held.clone(), at(300)),
        Ok(false)
    );
    assert!(
        pulls(&mut me).is_empty(),
        "asked again within {PULL_EVERY:?}"
    );
    assert_eq!(me.on_gossip("n00", "relay", held, at(600)), Ok(false));
    assert_eq!(pulls(&mut me), asked("n00"));
}

#[test]
fn a_plan_floods_as_what_sets_it_apart_from_the_proposal_and_every_node_works_it_out() {
    let at = At {
        now: Duration::from_secs(1),
        wall_ns: T,
    };
    let ids: Vec<String> = std::iter::once("me".to_owned())
        .chain((0..999).map(|i| format!("n{i:02}")))
        .collect();
    let run = "run-derived";
    let leader = ranking(run, &ids)[0].clone();
    let proposal = proposed_by_n00(&ids, 5000);
    // The leader left out three candidates (one of them this node's
    // neighbour in the list) and took two capacities from announcements.
    let mut eligible: Vec<Candidate> = proposal.candidates.clone();
    eligible.retain(|c| !["n05", "n500", "n998"].contains(&c.id.as_str()));
    eligible[1].capacity = 40;
    eligible[700].capacity = 0;
    let derivation = Derivation::of(&proposal.candidates, &eligible);
    assert_eq!(derivation.out, vec![6, 501, 999]);
    assert_eq!(derivation.capacities, vec![(1, 40), (702, 0)]);
    let shares = shares_for(run, &proposal, eligible).unwrap_or_else(|e| panic!("{e}"));
    let plan = Plan {
        term: 0,
        id: (0, 1),
        shares,
    };
    assert!(
        !plan
            .shares
            .iter()
            .any(|s| s.node == "n05" || s.node == "n701")
    );
    let env = |body| RunEnvelope {
        protocol: RUN_PROTOCOL,
        run: run.to_owned(),
        body,
        sig: None,
    };
    let derived = |digest: Vec<u8>, out: Vec<u32>| {
        env(RunMessage::Assign(PlanOnWire {
            term: 0,
            id: (0, 1),
            shares: Vec::new(),
            derivation: Some(Derivation {
                out,
                capacities: derivation.capacities.clone(),
                digest,
            }),
        }))
    };
    let flooded = derived(plan.digest(), derivation.out.clone());
    let bytes = wire::encode(&flooded).len();
    let listed = wire::encode(&env(RunMessage::Assign(
        plan.to_wire(&proposal.candidates)
            .unwrap_or_else(|| panic!("a plan of candidates")),
    )))
    .len();
    assert!(bytes < 200, "{bytes} bytes against {listed} listed");
    assert!(wire::decode_run(&wire::encode(&flooded)).is_ok());
    let with_proposal = || {
        let mut core = RunsCore::new("me".into(), RunsConfig::default());
        core.on_message("n00", env(RunMessage::Propose(proposal.clone())), at)
            .unwrap_or_else(|e| panic!("{e}"));
        let _ = core.take_refusals();
        core
    };
    // From a node that does not lead, it is not worked out, and no one is
    // asked for it.
    let mut core = with_proposal();
    let other_node = ids.iter().find(|n| **n != leader && *n != "me").cloned();
    let other_node = other_node.unwrap_or_default();
    assert_eq!(
        core.on_message(&other_node, flooded.clone(), at),
        Err(RunRefused::NotLeader(other_node.clone()))
    );
    assert!(core.take_refusals().is_empty());
    // Worked out here, it is the leader's plan to the share.
    assert_eq!(core.on_message(&leader, flooded, at), Ok(true));
    assert_eq!(
        core.get(run).and_then(|r| r.plan.clone()),
        Some(plan.clone())
    );
    // One that gives another plan here (a node left out that the leader
    // kept) is refused, and the sender is asked for the shares themselves.
    let mut core = with_proposal();
    let other = derived(plan.digest(), vec![6, 501]);
    assert!(
        core.on_message(&leader, other, at)
            .is_err_and(|e| e.to_string().contains("not the leader's"))
    );
    assert!(core.get(run).is_some_and(|r| r.plan.is_none()));
    let asked: Vec<String> = core
        .take_refusals()
        .into_iter()
        .filter_map(|a| match a {
            RunAction::Pull { from, .. } => Some(from),
            _ => None,
        })
        .collect();
    assert_eq!(asked, vec![leader.clone()]);
    // A candidate past the proposal's is named, not looked up.
    let mut core = with_proposal();
    assert!(
        core.on_message(&leader, derived(plan.digest(), vec![1000]), at)
            .is_err_and(|e| e.to_string().contains("candidate 1000, of 1000"))
    );
    // On the wire: shares beside a derivation, places out of order, or a
    // digest of another length do not decode.
    let mut both = PlanOnWire {
        term: 0,
        id: (0, 1),
        shares: plan
            .to_wire(&proposal.candidates)
            .map(|p| p.shares)
            .unwrap_or_default(),
        derivation: Some(derivation.clone().with_digest(plan.digest())),
    };
    assert!(wire::decode_run(&wire::encode(&env(RunMessage::Assign(both.clone())))).is_err());
    both.shares.clear();
    both.derivation = Some(Derivation {
        out: vec![9, 3],
        ..derivation.clone().with_digest(plan.digest())
    });
    assert!(wire::decode_run(&wire::encode(&env(RunMessage::Assign(both.clone())))).is_err());
    both.derivation = Some(derivation.clone().with_digest(vec![1; 31]));
    assert!(wire::decode_run(&wire::encode(&env(RunMessage::Assign(both)))).is_err());
}

/// A run of `vus` VUs for 10 s that "n00" proposes to `ids`, all in fra.
fn proposed_by_n00(ids: &[String], vus: u32) -> Box<Proposal> {
    Box::new(Proposal {
        proposer: "n00".into(),
        spec: spec(vus, 10),
        weights: None,
        nodes: None,
        candidates: ids
            .iter()
            .map(|id| Candidate {
                id: id.clone(),
                region: "fra".into(),
                capacity: 100,
            })
            .collect(),
        members: None,
    })
}

/// A run `id` proposed to node "me" by `from`, naming `proposer` (one of
/// the candidates, with `from` and "me").
fn propose_to(
    core: &mut RunsCore,
    from: &str,
    proposer: &str,
    id: &str,
    wall_ns: i64,
) -> Result<bool, RunRefused> {
    let candidates = [from, proposer, "me"]
        .iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .map(|id| Candidate {
            id: (*id).to_owned(),
            region: "fra".into(),
            capacity: 100,
        })
        .collect();
    let env = RunEnvelope {
        protocol: RUN_PROTOCOL,
        run: id.to_owned(),
        body: RunMessage::Propose(Box::new(Proposal {
            proposer: proposer.to_owned(),
            spec: spec(1, 10),
            weights: None,
            nodes: None,
            candidates,
            members: None,
        })),
        sig: None,
    };
    let at = At {
        now: Duration::from_nanos(u64::try_from(wall_ns).unwrap_or(0)),
        wall_ns,
    };
    core.on_message(from, env, at)
}

fn finish(core: &mut RunsCore, id: &str) {
    if let Some(run) = core.runs.get_mut(id) {
        run.finish = Some(Finish {
            term: 0,
            outcome: Outcome::Complete,
            lost: Vec::new(),
            handoffs: Vec::new(),
            words: Vec::new(),
            words_digest: None,
        });
    }
}

const T: i64 = 1_700_000_000_000_000_000;

#[test]
fn a_full_node_refuses_a_new_run_rather_than_evict_one_under_way() {
    let config = RunsConfig {
        keep_runs: 3,
        ..RunsConfig::default()
    };
    let mut core = RunsCore::new("me".into(), config);
    for (i, from) in ["a", "b", "c"].iter().enumerate() {
        let id = format!("r{i}");
        assert_eq!(
            propose_to(&mut core, from, from, &id, T + i as i64),
            Ok(true)
        );
    }
    // Nothing has finished: the new run is refused, nothing is let go of.
    let refused = propose_to(&mut core, "d", "d", "r3", T + 10);
    let Err(RunRefused::Full(reason)) = refused else {
        panic!("not refused: {refused:?}");
    };
    assert!(reason.contains("none of them has finished"), "{reason}");
    assert_eq!(core.all().len(), 3);
    assert!(core.take_evicted().is_empty());
    assert!(core.get("r3").is_none());
    // Its leader hears the refusal, so it plans without this node.
    let refusals = core.take_refusals();
    assert!(
        matches!(
            refusals.as_slice(),
            [RunAction::Publish(RunEnvelope { run, body: RunMessage::Refuse { reason: r }, .. })]
                if run == "r3" && *r == reason
        ),
        "{refusals:?}"
    );
    // A finished run whose share still runs here stays too.
    finish(&mut core, "r0");
    if let Some(r0) = core.runs.get_mut("r0") {
        r0.local = Local::Started;
    }
    assert!(matches!(
        propose_to(&mut core, "d", "d", "r3", T + 11),
        Err(RunRefused::Full(_))
    ));
    // Once a run has finished (and runs nothing here), it makes room.
    finish(&mut core, "r2");
    assert_eq!(propose_to(&mut core, "d", "d", "r3", T + 12), Ok(true));
    assert_eq!(core.take_evicted(), vec!["r2".to_owned()]);
    assert!(core.get("r0").is_some() && core.get("r1").is_some());
}

#[test]
fn a_submission_to_a_full_node_is_refused_with_the_reason() {
    let config = RunsConfig {
        keep_runs: 1,
        ..RunsConfig::default()
    };
    let mut core = RunsCore::new("me".into(), config);
    assert_eq!(propose_to(&mut core, "a", "a", "r0", T), Ok(true));
    let proposal = Proposal {
        proposer: "me".into(),
        spec: spec(1, 10),
        weights: None,
        nodes: None,
        candidates: vec![Candidate {
            id: "me".into(),
            region: "fra".into(),
            capacity: 100,
        }],
        members: None,
    };
    struct Alone;
    impl MeshView for Alone {
        fn alive(&self, peer: &str) -> bool {
            peer == "me"
        }
        fn offset(&self, _: &str) -> Option<(i64, i64)> {
            Some((0, 0))
        }
    }
    let at = At {
        now: Duration::from_secs(1),
        wall_ns: T + 1,
    };
    let e = core
        .submit("r1".into(), proposal, at, &Alone)
        .expect_err("no room");
    assert!(
        e.contains("keeps 1 runs and none of them has finished"),
        "{e}"
    );
    assert!(
        core.take_refusals().is_empty(),
        "its own submission is answered, not gossiped"
    );
}

#[test]
fn one_member_proposing_without_end_takes_at_most_its_share_of_places() {
    let mut core = RunsCore::new("me".into(), RunsConfig::default());
    // Each forged run names another proposer; the signed sender counts.
    for i in 0..MAX_OPEN_FROM_ONE {
        let id = format!("h{i}");
        assert_eq!(
            propose_to(&mut core, "hostile", &format!("fake-{i}"), &id, T),
            Ok(true)
        );
    }
    let refused = propose_to(&mut core, "hostile", "fake-x", "hx", T);
    let Err(RunRefused::Full(reason)) = refused else {
        panic!("not refused: {refused:?}");
    };
    assert!(
        reason.contains(&format!("hostile has {MAX_OPEN_FROM_ONE} runs under way")),
        "{reason}"
    );
    assert_eq!(propose_to(&mut core, "honest", "honest", "ok", T), Ok(true));
    // A run of its that finishes frees a place.
    finish(&mut core, "h0");
    assert_eq!(
        propose_to(&mut core, "hostile", "fake-x", "hx", T),
        Ok(true)
    );
}

#[test]
fn a_run_abandoned_long_past_its_end_may_go_but_not_one_that_might_still_run() {
    let config = RunsConfig {
        keep_runs: 2,
        ..RunsConfig::default()
    };
    let mut core = RunsCore::new("me".into(), config);
    assert_eq!(propose_to(&mut core, "a", "a", "r0", T), Ok(true));
    assert_eq!(propose_to(&mut core, "b", "b", "r1", T + 1), Ok(true));
    // 10 s of executor, 1 s graceful stop, the shard slack, an hour more.
    let longest = duration_ns(Duration::from_secs(11) + SHARD_SLACK + ABANDONED_AFTER);
    assert!(matches!(
        propose_to(&mut core, "c", "c", "r2", T + longest),
        Err(RunRefused::Full(_))
    ));
    assert_eq!(
        propose_to(&mut core, "c", "c", "r2", T + longest + 1),
        Ok(true)
    );
    assert_eq!(core.take_evicted(), vec!["r0".to_owned()]);
    // Abandoned runs count against no member either.
    let mut core = RunsCore::new("me".into(), RunsConfig::default());
    for i in 0..MAX_OPEN_FROM_ONE {
        assert_eq!(
            propose_to(&mut core, "a", "a", &format!("a{i}"), T),
            Ok(true)
        );
    }
    assert_eq!(
        propose_to(&mut core, "a", "a", "later", T + longest + 1),
        Ok(true)
    );
}

/// The handoffs every live node holds for `run` once it is over: the same
/// on all of them.
fn agreed_handoffs(sim: &Sim, run: &str) -> Vec<Handoff> {
    let all: BTreeSet<String> = sim
        .live()
        .map(|(_, n)| {
            let r = n.core.get(run).unwrap_or_else(|| panic!("no run"));
            format!("{:?}", r.handoffs)
        })
        .collect();
    assert_eq!(all.len(), 1, "nodes disagree on the handoffs: {all:?}");
    let finish = sim.finish_of(run);
    let (_, n) = sim.live().next().unwrap_or_else(|| panic!("no live node"));
    let held: Vec<Handoff> = n
        .core
        .get(run)
        .map_or_else(Vec::new, |r| r.handoffs.values().cloned().collect());
    assert_eq!(
        finish.handoffs, held,
        "the finish lists what every node holds"
    );
    held
}

/// Checks that `h` moves `victim`'s whole segment to nodes of the plan,
/// each of which (still alive) was told to take its part over from
/// `since_ms`.
fn check_moved(sim: &Sim, run: &str, h: &Handoff, victim: usize) {
    let r = sim.nodes[sim.leader_index(run)]
        .core
        .get(run)
        .unwrap_or_else(|| panic!("no run"));
    assert_eq!(h.from, sim.nodes[victim].id);
    let segment = r
        .share_of(&h.from)
        .map(|s| s.segment)
        .unwrap_or_else(|| panic!("no share"));
    let parts: Vec<_> = h.to.iter().map(|a| a.segment).collect();
    assert!(segment.is_tiled_by(&parts), "{h:?}");
    for a in &h.to {
        let j = sim.index(&a.node).unwrap_or_else(|| panic!("unknown node"));
        if sim.nodes[j].crashed_at.is_some() {
            // Lost after it took the part: the part is lost with it.
            continue;
        }
        let w = &sim.nodes[j].workers[run];
        assert!(
            w.taken
                .contains(&(a.segment, Duration::from_millis(h.since_ms))),
            "{} was never told to take its part over: {:?}",
            a.node,
            w.taken
        );
    }
}

#[test]
fn with_on_loss_redistribute_a_lost_node_share_moves_to_the_survivors_from_its_loss() {
    for kill_leader in [false, true] {
        let mut sim = Sim::new(&[("fra", 3), ("nrt", 2)], 0, 31);
        let run = sim.submit(1, spec(40, 20), None);
        assert!(sim.reach(&run, Phase::Running, Duration::from_secs(3)));
        sim.run_until(Duration::from_secs(3), |_| false);
        let leader = sim.leader_index(&run);
        let victim = if kill_leader {
            leader
        } else {
            (leader + 2) % 5
        };
        let victim_id = sim.nodes[victim].id.clone();
        let t0 = sim.nodes[0].workers[&run]
            .started
            .unwrap_or_else(|| panic!("node 0 never started"));
        sim.nodes[victim].crashed_at = Some(sim.now);
        let killed_ms = (sim.now - t0).as_millis() as u64;
        assert!(sim.run_until(Duration::from_secs(40), |s| s.all_finished(&run)));
        let finish = sim.finish_of(&run);
        assert_eq!(finish.outcome, Outcome::Complete);
        assert_eq!(finish.lost, vec![victim_id.clone()]);
        let handoffs = agreed_handoffs(&sim, &run);
        assert_eq!(handoffs.len(), 1, "{handoffs:?}");
        let h = &handoffs[0];
        check_moved(&sim, &run, h, victim);
        // Handed on once suspected (3.5 s of silence here), within a
        // second more when the leader itself had to be replaced first.
        let after = h.since_ms.saturating_sub(killed_ms);
        assert!(
            (3400..=5000).contains(&after),
            "handed on {after} ms after the loss (leader killed: {kill_leader})"
        );
        if kill_leader {
            assert!(h.term > 0, "the new leader handed it on");
        }
        // Survivors ran their parts to the executor's end: none was stopped.
        for (i, n) in sim.live() {
            assert!(
                n.workers[&run].stop_seen_at.is_none(),
                "node {i} was stopped"
            );
        }
    }
}

#[test]
fn a_frozen_node_that_wakes_after_its_share_moved_is_stopped_and_takes_nothing() {
    let mut sim = Sim::new(&[("fra", 2), ("nrt", 2)], 0, 41);
    let run = sim.submit(0, spec(40, 20), None);
    assert!(sim.reach(&run, Phase::Running, Duration::from_secs(3)));
    sim.run_until(Duration::from_secs(2), |_| false);
    let leader = sim.leader_index(&run);
    let frozen = (leader + 1) % 4;
    sim.nodes[frozen].crashed_at = Some(sim.now);
    assert!(
        sim.run_until(Duration::from_secs(8), |s| {
            s.nodes[leader]
                .core
                .get(&run)
                .is_some_and(|r| !r.handoffs.is_empty())
        }),
        "the frozen node's share was never handed on"
    );
    // It wakes (SIGCONT): it hears the handoff and stops its share.
    sim.nodes[frozen].crashed_at = None;
    let woke = sim.now;
    assert!(sim.run_until(Duration::from_secs(3), |s| {
        s.nodes[frozen].workers[&run].stop_seen_at.is_some()
    }));
    assert!(
        sim.now - woke <= Duration::from_millis(1500),
        "stopped {:?} after waking",
        sim.now - woke
    );
    assert!(sim.run_until(Duration::from_secs(40), |s| s.all_finished(&run)));
    let w = &sim.nodes[frozen].workers[&run];
    assert!(
        w.taken.is_empty(),
        "the woken node took over a part: {:?}",
        w.taken
    );
    let r = sim.nodes[leader]
        .core
        .get(&run)
        .unwrap_or_else(|| panic!("no run"));
    assert_eq!(
        r.done.get(&sim.nodes[frozen].id).map(|d| d.1),
        Some(true),
        "the woken node's share counts as interrupted"
    );
    let handoffs = agreed_handoffs(&sim, &run);
    assert_eq!(handoffs.len(), 1);
    // It said Done before the end: not lost, its share moved.
    assert!(sim.finish_of(&run).lost.is_empty());
}

#[test]
fn in_a_run_of_two_a_silent_peer_keeps_its_share_and_a_dead_one_hands_it_on() {
    for dead in [false, true] {
        let mut sim = Sim::new(&[("fra", 1), ("nrt", 1)], 0, 51);
        sim.dead_known = dead;
        let run = sim.submit(0, spec(20, 12), None);
        assert!(sim.reach(&run, Phase::Running, Duration::from_secs(3)));
        sim.run_until(Duration::from_secs(2), |_| false);
        let leader = sim.leader_index(&run);
        let other = 1 - leader;
        if dead {
            sim.nodes[other].crashed_at = Some(sim.now);
        } else {
            sim.partition = Some((vec![0, 1], sim.now));
        }
        sim.run_until(Duration::from_secs(6), |_| false);
        let moved = sim.nodes[leader]
            .core
            .get(&run)
            .is_some_and(|r| r.handoffs.contains_key(&sim.nodes[other].id));
        assert_eq!(moved, dead, "dead: {dead}");
        let cut_off_side_moved = sim.nodes[other]
            .core
            .get(&run)
            .is_some_and(|r| r.handoffs.contains_key(&sim.nodes[leader].id));
        assert!(
            !cut_off_side_moved,
            "the other side of a partition took the leader's share"
        );
    }
}

#[test]
fn many_nodes_with_loss_hand_on_every_lost_share_once_and_agree() {
    let mut sim = Sim::new(&[("fra", 8), ("nrt", 6), ("ewr", 6)], 2, 61);
    let run = sim.submit(3, spec(400, 30), None);
    assert!(sim.reach(&run, Phase::Running, Duration::from_secs(5)));
    sim.run_until(Duration::from_secs(3), |_| false);
    let leader = sim.leader_index(&run);
    let victims = [(leader + 3) % 20, (leader + 11) % 20];
    sim.nodes[victims[0]].crashed_at = Some(sim.now);
    sim.run_until(Duration::from_secs(6), |_| false);
    sim.nodes[victims[1]].crashed_at = Some(sim.now);
    assert!(sim.run_until(Duration::from_secs(60), |s| s.all_finished(&run)));
    let finish = sim.finish_of(&run);
    assert_eq!(finish.outcome, Outcome::Complete);
    let handoffs = agreed_handoffs(&sim, &run);
    let mut from: Vec<String> = handoffs.iter().map(|h| h.from.clone()).collect();
    from.sort();
    let mut expected: Vec<String> = victims.iter().map(|&v| sim.nodes[v].id.clone()).collect();
    expected.sort();
    assert_eq!(from, expected);
    let first = &sim.nodes[victims[0]].id;
    for h in &handoffs {
        let victim = sim.index(&h.from).unwrap_or_else(|| panic!("unknown"));
        check_moved(&sim, &run, h, victim);
        assert!(
            !h.to.iter().any(|a| a.node == *first || a.node == h.from),
            "a part went to a node already lost"
        );
    }
}

#[test]
fn a_partition_mid_run_moves_the_minority_shares_and_fences_the_minority() {
    let mut sim = Sim::new(&[("fra", 3), ("nrt", 2)], 0, 71);
    let run = sim.submit(0, spec(50, 30), None);
    assert!(sim.reach(&run, Phase::Running, Duration::from_secs(3)));
    sim.run_until(Duration::from_secs(3), |_| false);
    let leader = sim.leader_index(&run);
    // The leader and one other on the small side.
    let small = [leader, (leader + 1) % 5];
    let sides: Vec<u8> = (0..5).map(|i| u8::from(small.contains(&i))).collect();
    sim.partition = Some((sides, sim.now));
    sim.run_until(Duration::from_secs(8), |_| false);
    let big: Vec<usize> = (0..5).filter(|i| !small.contains(i)).collect();
    let small_ids: BTreeSet<String> = small.iter().map(|&i| sim.nodes[i].id.clone()).collect();
    for &i in &small {
        let w = &sim.nodes[i].workers[&run];
        assert!(
            w.stop_seen_at.is_some(),
            "node {i} on the small side still runs"
        );
        assert!(
            w.taken.is_empty(),
            "node {i} on the small side took a part over"
        );
        let r = sim.nodes[i]
            .core
            .get(&run)
            .unwrap_or_else(|| panic!("no run"));
        assert!(
            r.handoffs.is_empty(),
            "the small side handed on {:?}",
            r.handoffs.keys()
        );
    }
    for &i in &big {
        let r = sim.nodes[i]
            .core
            .get(&run)
            .unwrap_or_else(|| panic!("no run"));
        let moved: BTreeSet<String> = r.handoffs.keys().cloned().collect();
        assert_eq!(moved, small_ids, "node {i}");
        let w = &sim.nodes[i].workers[&run];
        assert!(
            w.stop_seen_at.is_none(),
            "node {i} on the big side was stopped"
        );
        assert_eq!(
            w.taken.len(),
            2,
            "node {i} took a part of each: {:?}",
            w.taken
        );
    }
    // Healed: the run ends, every node agrees on what moved.
    sim.partition = None;
    assert!(sim.run_until(Duration::from_secs(60), |s| s.all_finished(&run)));
    let handoffs = agreed_handoffs(&sim, &run);
    assert_eq!(handoffs.len(), 2);
}

#[test]
fn a_member_cannot_forge_a_leaders_arm_handoff_or_finish_by_passing_it_on() {
    let mut sim = Sim::new(&[("fra", 2), ("nrt", 2)], 0, 81);
    let run = sim.submit(0, spec(20, 20), None);
    assert!(sim.reach(&run, Phase::Running, Duration::from_secs(3)));
    let leader = sim.leader_index(&run);
    let forger = (leader + 1) % 4;
    let victim = (leader + 2) % 4;
    let leader_id = sim.nodes[leader].id.clone();
    let forger_id = sim.nodes[forger].id.clone();
    let r = sim.nodes[victim]
        .core
        .get(&run)
        .cloned()
        .unwrap_or_else(|| panic!("no run"));
    let term = r.term;
    let finish = Finish {
        term,
        outcome: Outcome::Failed {
            reason: "forged".into(),
        },
        lost: Vec::new(),
        handoffs: Vec::new(),
        words: Vec::new(),
        words_digest: None,
    };
    let plan = r.plan.clone().unwrap_or_else(|| panic!("no plan"));
    let theirs = plan
        .shares
        .iter()
        .find(|s| s.node == sim.nodes[victim].id)
        .unwrap_or_else(|| panic!("no share"));
    let handoff = Handoff {
        term,
        plan: plan.id,
        from: theirs.node.clone(),
        since_ms: 1000,
        to: vec![Assigned {
            node: forger_id.clone(),
            segment: theirs.segment,
            first_vu_id: theirs.first_vu_id,
        }],
    };
    let sig = |signer: &str| {
        Some(wire::RunSignature {
            signer: signer.to_owned(),
            bytes: Vec::new(),
        })
    };
    for body in [
        RunMessage::Finish(finish.clone()),
        RunMessage::Handoff(handoff.clone()),
    ] {
        // Unsigned, or signed by the forger itself, it is refused.
        for signed in [None, sig(&forger_id)] {
            let env = RunEnvelope {
                protocol: RUN_PROTOCOL,
                run: run.clone(),
                body: body.clone(),
                sig: signed,
            };
            let at = sim.at(victim);
            let taken = sim.nodes[victim].core.on_message(&forger_id, env, at);
            assert!(matches!(taken, Err(RunRefused::NotLeader(_))), "{taken:?}");
        }
    }
    let r = sim.nodes[victim]
        .core
        .get(&run)
        .unwrap_or_else(|| panic!("no run"));
    assert!(r.finish.is_none() && r.handoffs.is_empty());
    // Passed on with the leader's signature (checked by the runtime before
    // the state machine sees it), a relay is taken.
    let env = RunEnvelope {
        protocol: RUN_PROTOCOL,
        run: run.clone(),
        body: RunMessage::Handoff(handoff),
        sig: sig(&leader_id),
    };
    let at = sim.at(victim);
    assert_eq!(
        sim.nodes[victim].core.on_message(&forger_id, env, at),
        Ok(true)
    );
}

#[test]
fn a_leader_gives_no_node_more_than_its_own_heartbeat_announces() {
    let mut sim = Sim::new(&[("fra", 2)], 0, 91);
    // Proposals claim 100 VUs for each; node 1's heartbeat says 5.
    sim.announced.insert(1, 5);
    let run = sim.submit(0, spec(100, 5), None);
    assert!(sim.reach(&run, Phase::Running, Duration::from_secs(3)));
    let vus = vus_of(&sim, &run, 100);
    let r = sim.nodes[0]
        .core
        .get(&run)
        .unwrap_or_else(|| panic!("no run"));
    let plan = r.plan.as_ref().unwrap_or_else(|| panic!("no plan"));
    let of = |i: usize| {
        plan.shares
            .iter()
            .position(|s| s.node == sim.nodes[i].id)
            .map(|k| vus[k])
            .unwrap_or(0)
    };
    assert!(of(1) <= 5, "node 1 got {} VUs", of(1));
    assert_eq!(of(0) + of(1), 100);
}

#[test]
fn with_fewer_vus_than_nodes_a_node_without_a_vu_gets_no_share() {
    let mut sim = Sim::new(&[("fra", 4)], 0, 97);
    let mut s = spec(2, 5);
    s.scenarios[0].executor = Executor::SharedIterations {
        vus: 2,
        iterations: 100,
        max_duration: Duration::from_secs(5),
    };
    let run = sim.submit(0, s, None);
    assert!(sim.reach(&run, Phase::Running, Duration::from_secs(3)));
    let r = sim.nodes[0]
        .core
        .get(&run)
        .unwrap_or_else(|| panic!("no run"));
    let plan = r.plan.as_ref().unwrap_or_else(|| panic!("no plan"));
    assert_eq!(plan.shares.len(), 2, "{:?}", plan.shares);
    let vus: Vec<u64> = plan.shares.iter().map(|a| a.segment.scale(2)).collect();
    let iterations: u64 = plan.shares.iter().map(|a| a.segment.scale(100)).sum();
    assert_eq!(vus, vec![1, 1]);
    assert_eq!(iterations, 100, "every iteration has a node with a VU");
}

#[test]
fn a_node_without_a_vu_for_a_scenarios_shared_work_gets_no_share() {
    // api: 40 looping VUs; cron: 2 VUs sharing 100 iterations. Over four
    // nodes, two would own cron iterations and no cron VU to run them.
    let mut sim = Sim::new(&[("fra", 4)], 0, 97);
    let mut s = spec(40, 5);
    s.scenarios[0].name = "api".into();
    s.scenarios.push(ScenarioSpec {
        name: "cron".into(),
        ..ScenarioSpec::default_with(Executor::SharedIterations {
            vus: 2,
            iterations: 100,
            max_duration: Duration::from_secs(5),
        })
    });
    let run = sim.submit(0, s, None);
    assert!(sim.reach(&run, Phase::Running, Duration::from_secs(3)));
    let r = sim.nodes[0]
        .core
        .get(&run)
        .unwrap_or_else(|| panic!("no run"));
    let plan = r.plan.as_ref().unwrap_or_else(|| panic!("no plan"));
    assert_eq!(plan.shares.len(), 2, "{:?}", plan.shares);
    let cron_vus: Vec<u64> = plan.shares.iter().map(|a| a.segment.scale(2)).collect();
    assert_eq!(cron_vus, vec![1, 1]);
    let api_vus: u64 = plan.shares.iter().map(|a| a.segment.scale(40)).sum();
    assert_eq!(api_vus, 40);
}

#[test]
fn a_leader_samples_every_candidates_clock_a_worker_only_its_leaders() {
    let mut sim = Sim::new(&[("fra", 3), ("nrt", 2)], 0, 23);
    let run = sim.submit(0, spec(10, 5), None);
    assert!(sim.run_until(Duration::from_secs(1), |s| {
        s.nodes.iter().all(|n| n.core.get(&run).is_some())
    }));
    let clock_peers = |sim: &Sim, i: usize| sim.nodes[i].core.clock_peers(&View { me: i, sim });
    let ids: Vec<String> = sim.nodes.iter().map(|n| n.id.clone()).collect();
    let leader = sim.leader_index(&run);
    let others: BTreeSet<String> = (0..5)
        .filter(|i| *i != leader)
        .map(|i| ids[i].clone())
        .collect();
    assert_eq!(clock_peers(&sim, leader), others);
    let worker = (0..5).find(|i| *i != leader).unwrap_or_default();
    assert_eq!(
        clock_peers(&sim, worker),
        BTreeSet::from([ids[leader].clone()])
    );
    assert!(sim.reach(&run, Phase::Running, Duration::from_secs(3)));
    // A worker that believes the leader gone samples the next one, and
    // still the one that armed (T0 is in its clock).
    sim.suspects.insert((worker, leader));
    let next = {
        let view = View {
            me: worker,
            sim: &sim,
        };
        let r = sim.nodes[worker].core.get(&run);
        r.and_then(|r| r.leader(&view)).unwrap_or_default()
    };
    assert_ne!(next, ids[leader]);
    let mut expected = BTreeSet::from([ids[leader].clone(), next.clone()]);
    expected.remove(&ids[worker]);
    if next == ids[worker] {
        // It leads now: every other candidate.
        expected = others.clone();
        expected.remove(&ids[worker]);
        expected.insert(ids[leader].clone());
    }
    assert_eq!(clock_peers(&sim, worker), expected);
    sim.suspects.clear();
    assert!(sim.run_until(Duration::from_secs(10), |s| s.all_finished(&run)));
    for i in 0..5 {
        assert!(clock_peers(&sim, i).is_empty(), "node {i}");
    }
}

/// A run of three at `seed`: `victim` (picked from the leader) cut off for
/// 4 s, `during` checked then, and the cut healed but for `last` (picked
/// from the leader and the victim), which the victim goes on believing
/// gone for 3 s. Only the victim's share may move, and the two others run
/// to the end.
fn cut_off_and_healed_one_link_late(
    seed: u64,
    case: &str,
    victim_of: impl Fn(usize) -> usize,
    last_of: impl Fn(usize, usize) -> usize,
    during: impl Fn(&Sim, &str, usize),
) {
    let mut sim = Sim::new(&[("fra", 1), ("nrt", 1), ("ewr", 1)], 0, seed);
    let run = sim.submit(0, spec(30, 30), None);
    assert!(sim.reach(&run, Phase::Running, Duration::from_secs(3)));
    sim.run_until(Duration::from_secs(3), |_| false);
    let leader = sim.leader_index(&run);
    let victim = victim_of(leader);
    let sides: Vec<u8> = (0..3).map(|i| u8::from(i == victim)).collect();
    sim.partition = Some((sides, sim.now));
    sim.run_until(Duration::from_secs(4), |_| false);
    during(&sim, &run, leader);
    sim.partition = None;
    sim.suspects.insert((victim, last_of(leader, victim)));
    sim.run_until(Duration::from_secs(3), |_| false);
    sim.suspects.clear();
    assert!(
        sim.run_until(Duration::from_secs(60), |s| s.all_finished(&run)),
        "{case}"
    );
    let moved: Vec<String> = agreed_handoffs(&sim, &run)
        .into_iter()
        .map(|h| h.from)
        .collect();
    assert_eq!(moved, vec![sim.nodes[victim].id.clone()], "{case}");
    for live in (0..3).filter(|&i| i != victim) {
        let w = &sim.nodes[live].workers[&run];
        assert!(
            w.stop_seen_at.is_none(),
            "{case}: node {live}, live, was stopped"
        );
    }
}

/// The e2e cut-off test's failures, in the state machine: a worker of three
/// cut off for 4 s finds both others silent and fences its share. Its link
/// comes back to one of the others first and to the last one 3 s later.
/// It must not have taken the run over while cut off (leading from that
/// higher term once it heard the leader again, it handed on the share of
/// the other worker, live all along, which it had not heard yet). Nor,
/// once it hears only the other worker again, may it take over from the
/// leader it has not heard yet and hand the leader's share on: the e2e
/// test caught that too, the leader's share moved 60 ms after the heal
/// while the leader ran on.
#[test]
fn a_worker_cut_off_takes_nothing_over_and_after_a_partial_heal_hands_nothing_on() {
    for seed in [29, 30, 31, 32, 33, 34] {
        for leader_heard_last in [false, true] {
            let case = format!("seed {seed}, the leader heard last: {leader_heard_last}");
            cut_off_and_healed_one_link_late(
                seed,
                &case,
                |leader| (leader + 1) % 3,
                |leader, _| {
                    if leader_heard_last {
                        leader
                    } else {
                        (leader + 2) % 3
                    }
                },
                |sim, run, leader| {
                    let term = |i: usize| sim.nodes[i].core.get(run).map(|r| r.term);
                    assert_eq!(
                        term((leader + 1) % 3),
                        term(leader),
                        "{case}: the cut-off node took the run over"
                    );
                },
            );
        }
    }
}

/// The same cut, of the leader: the other two pass it over, the next
/// leader hands its share on, and it fences that share. Back, it hears one
/// worker 3 s before the other. Until it hears the higher term, it still
/// leads in its own view, and one of two looks gone: it must hand nothing
/// on. Before it waited to hear both again, it handed on the share of the
/// live worker it had not heard yet (seed 29), which then went out twice.
#[test]
fn a_leader_cut_off_fences_its_share_and_after_a_partial_heal_hands_nothing_on() {
    for seed in [29, 30, 31, 32, 33, 34] {
        for first in [1, 2] {
            let case = format!("seed {seed}, heard first: the leader's +{first}");
            cut_off_and_healed_one_link_late(
                seed,
                &case,
                |leader| leader,
                |_, victim| (victim + 3 - first) % 3,
                |sim, run, leader| {
                    assert!(
                        sim.nodes[leader].workers[run].stop_seen_at.is_some(),
                        "{case}: the cut-off leader did not fence its share"
                    );
                },
            );
        }
    }
}

/// While the leader waits for readiness, and until T0 once it armed, it
/// says what it holds, and sends the plan and the arm themselves once:
/// while nodes get ready, it re-sends the plan's derivation, which stands
/// for its `held`, twice a second; once armed, its `held`. A node
/// whose gossip never brings them asks for the plan after a `held`,
/// follows the `held`'s T0 as it would the arm, and starts with the others.
/// The hurry stops 2 s after the plan.
#[test]
fn the_leader_says_what_it_holds_until_t0_and_a_node_that_missed_the_plan_asks() {
    let mut sim = Sim::new(&[("fra", 2), ("nrt", 1)], 0, 37);
    let run = sim.submit(0, spec(6, 20), None);
    let leader = sim.rank(&run, 0);
    // A worker whose words are lost: the leader waits for its readiness.
    let silent = (leader + 1) % 3;
    // And one that never hears the plan or the arm by gossip, and lost the
    // flooded proposal (with it, it works the plan out itself).
    let deaf = (leader + 2) % 3;
    sim.muted.insert(silent);
    sim.blocked.insert((leader, deaf));
    sim.in_flight
        .retain(|m| m.1 != deaf || !matches!(m.3.body, RunMessage::Propose(_)));
    sim.run_until(Duration::from_secs(4), |_| false);
    let by_leader = |sim: &Sim, kind: &str, from: Duration, to: Duration| {
        sim.published
            .iter()
            .filter(|(t, i, k)| *i == leader && *k == kind && *t >= from && *t < to)
            .count()
    };
    let plan_at = sim
        .published
        .iter()
        .find(|(_, i, k)| *i == leader && *k == "assign")
        .map(|(t, _, _)| *t)
        .unwrap_or_else(|| panic!("no plan"));
    let first = plan_at + HURRY_PLAN_FOR;
    // The plan goes again as its derivation twice a second, in place of a
    // hurried `held` (the one-second re-sends still say `held`), and not
    // after.
    let assigns = by_leader(&sim, "assign", plan_at, first);
    assert!(
        (3..=5).contains(&assigns),
        "{assigns} plans in {HURRY_PLAN_FOR:?}"
    );
    let helds = by_leader(&sim, "held", plan_at, first);
    assert!(helds <= 2, "{:?}", sim.published);
    assert_eq!(
        by_leader(&sim, "assign", first + TICK, first + Duration::from_secs(2)),
        0
    );
    // The proposal went out once, flooded at submission, and not again.
    let proposals = sim
        .published
        .iter()
        .filter(|(_, _, k)| *k == "propose")
        .count();
    assert_eq!(proposals, 1, "{:?}", sim.published);
    // The deaf node asked for the plan, and is ready for it.
    assert!(by_leader(&sim, "answer", plan_at, first) >= 1);
    let plan_id = sim.nodes[leader]
        .core
        .get(&run)
        .and_then(|r| r.plan.as_ref().map(|p| p.id));
    assert_eq!(
        sim.nodes[deaf]
            .core
            .get(&run)
            .and_then(|r| r.plan.as_ref().map(|p| p.id)),
        plan_id
    );
    // Its own readiness keeps the one-second pace, told to the next in line.
    let told_ready = sim
        .told
        .iter()
        .filter(|(t, i, _, k)| *i == leader && *k == "ready" && *t >= plan_at && *t < first)
        .count();
    assert!(told_ready <= 3, "{told_ready}");
    let after = by_leader(&sim, "held", first + TICK, first + Duration::from_secs(2));
    assert!((1..=3).contains(&after), "{after} helds in the 2 s after");
    // Heard again, the worker is ready, the leader arms once, and says so
    // until T0.
    sim.muted.clear();
    assert!(sim.reach(&run, Phase::Running, Duration::from_secs(3)));
    let arm_at = sim
        .published
        .iter()
        .find(|(_, i, k)| *i == leader && *k == "arm")
        .map(|(t, _, _)| *t)
        .unwrap_or_else(|| panic!("no arm"));
    // Every 100 ms from the arm until T0: a node that lost the arm and one
    // `held` still hears another before T0.
    let helds = by_leader(&sim, "held", arm_at, arm_at + Duration::from_millis(300));
    assert!(helds >= 2, "{helds} helds in the 300 ms after the arm");
    assert_eq!(
        by_leader(&sim, "arm", arm_at, arm_at + Duration::from_secs(1)),
        1
    );
    // The deaf node armed from a `held`, without asking, and started with
    // the others.
    assert_eq!(
        by_leader(&sim, "answer", arm_at, arm_at + Duration::from_secs(1)),
        0
    );
    assert!(sim.run_until(Duration::from_secs(2), |s| {
        s.nodes
            .iter()
            .all(|n| n.workers.get(&run).is_some_and(|w| w.started.is_some()))
    }));
    let starts: Vec<Duration> = sim
        .nodes
        .iter()
        .filter_map(|n| n.workers.get(&run).and_then(|w| w.started))
        .collect();
    let spread = starts.iter().max().copied().unwrap_or_default()
        - starts.iter().min().copied().unwrap_or_default();
    assert!(spread <= Duration::from_millis(100), "starts {starts:?}");
}

/// While a run goes, a node sends its shards to the leader and the next in
/// line, the leader alone judges `abortOnFail` and sends the run's progress
/// about once a second, and every node holds the leader's progress; a
/// progress from another node is refused. Once the run ended, shards go nowhere (they
/// spread by anti-entropy) and no progress is sent.
#[test]
fn shards_go_to_the_leader_which_alone_sends_the_progress_while_the_run_goes() {
    let mut sim = Sim::new(&[("fra", 2), ("nrt", 2)], 0, 41);
    let run = sim.submit(0, spec(8, 6), None);
    assert!(sim.reach(&run, Phase::Running, Duration::from_secs(3)));
    let leader = sim.leader_index(&run);
    assert_eq!(leader, sim.rank(&run, 0));
    let leader_id = sim.nodes[leader].id.clone();
    let next = sim.rank(&run, 1);
    let next_id = sim.nodes[next].id.clone();
    for i in 0..4 {
        let (to, judges) = sim.with_core(i, |core, _, view| {
            (core.shard_to(&run, view), core.judges_aborts(&run, view))
        });
        let expected = if i == leader {
            vec![next_id.clone()]
        } else if i == next {
            vec![leader_id.clone()]
        } else {
            vec![leader_id.clone(), next_id.clone()]
        };
        assert_eq!(to, expected, "node {i}: to the leader and the next in line");
        assert_eq!(judges, i == leader, "node {i}: only the leader judges");
    }
    let since = sim.now;
    let _ = sim.run_until(Duration::from_secs(3), |_| false);
    let lives: Vec<usize> = sim
        .published
        .iter()
        .filter(|(t, _, kind)| *t >= since && *kind == "live")
        .map(|(_, by, _)| *by)
        .collect();
    assert!(
        (2..=4).contains(&lives.len()) && lives.iter().all(|by| *by == leader),
        "3 s of the run: {lives:?} (leader {leader})"
    );
    for (i, n) in sim.nodes.iter().enumerate() {
        let held = n.core.get(&run).and_then(|r| r.live.clone());
        if i != leader {
            assert!(held.is_some(), "node {i} holds the leader's progress");
        }
    }
    // A progress from a worker is not taken.
    let worker = (leader + 1) % 4;
    let other = (leader + 2) % 4;
    let at = sim.at(other);
    let term = sim.nodes[other].core.get(&run).map_or(0, |r| r.term);
    let forged = RunEnvelope {
        protocol: RUN_PROTOCOL,
        run: run.clone(),
        body: RunMessage::Live(wire::Live::heard(term, 0, |_| false, |_| false)),
        sig: None,
    };
    let from = sim.nodes[worker].id.clone();
    assert!(matches!(
        sim.nodes[other].core.on_message(&from, forged, at),
        Err(RunRefused::NotLeader(_))
    ));
    assert!(sim.run_until(Duration::from_secs(15), |s| s.all_finished(&run)));
    let ended = sim.now;
    for i in 0..4 {
        let (to, judges) = sim.with_core(i, |core, _, view| {
            (core.shard_to(&run, view), core.judges_aborts(&run, view))
        });
        assert_eq!((to, judges), (Vec::new(), false), "node {i}, after the end");
    }
    let _ = sim.run_until(Duration::from_secs(3), |_| false);
    assert!(
        !sim.published
            .iter()
            .any(|(t, _, kind)| *t > ended && *kind == "live"),
        "no progress once the run ended"
    );
}

/// A node tells its `ready`, `started` and `done` to the run's leader and
/// the node next in line alone; the others see them in the leader's `live` while the
/// run goes, and every node holds every node's words from the finish, so
/// that every node says the same start skew and states afterwards. The
/// finish goes out without the words, which each node asks the node that
/// passed it the finish for.
#[test]
fn words_go_to_the_leader_and_the_next_and_every_node_learns_them_from_the_finish() {
    let mut sim = Sim::new(&[("fra", 3), ("nrt", 2)], 0, 47);
    // As in a mesh large enough that the words do not go in the flood.
    for node in &mut sim.nodes {
        let config = RunsConfig {
            words_inline_bytes: 0,
            ..RunsConfig::default()
        };
        node.core = RunsCore::new(node.id.clone(), config);
    }
    let run = sim.submit(0, spec(10, 4), None);
    assert!(sim.reach(&run, Phase::Running, Duration::from_secs(3)));
    let _ = sim.run_until(Duration::from_secs(2), |_| false);
    let leader = sim.leader_index(&run);
    let next = sim.rank(&run, 1);
    let words: Vec<&(Duration, usize, Vec<usize>, &str)> = sim
        .told
        .iter()
        .filter(|(_, _, _, kind)| *kind == "started")
        .collect();
    assert!(words.len() >= 5, "{words:?}");
    for (_, by, to, _) in &words {
        let mut expected: Vec<usize> = [leader, next].into_iter().filter(|n| n != by).collect();
        expected.sort_unstable();
        let mut to = to.clone();
        to.sort_unstable();
        assert_eq!(to, expected, "node {by}'s started");
    }
    let ids: Vec<String> = sim.nodes.iter().map(|n| n.id.clone()).collect();
    for (i, n) in sim.nodes.iter().enumerate() {
        let r = n
            .core
            .get(&run)
            .unwrap_or_else(|| panic!("node {i} has no run"));
        if i == leader || i == next {
            assert_eq!(r.started.len(), 5, "node {i} holds every start");
        } else {
            assert_eq!(
                r.started.keys().collect::<Vec<_>>(),
                vec![&ids[i]],
                "node {i} holds its own start alone"
            );
            // What it shows of the others, from the leader's `live`.
            for id in &ids {
                assert_eq!(r.heard_of(id), (true, false), "node {i} on {id}");
            }
        }
    }
    // A node that holds the finish without the words still shows the run
    // going: its report would lack them.
    let mut lacking = 0;
    assert!(sim.run_until(Duration::from_secs(15), |s| {
        let phases = s.phase_everywhere(&run);
        for ((i, n), phase) in s.live().zip(phases) {
            if n.core
                .get(&run)
                .and_then(|r| r.finish.as_ref())
                .is_some_and(Finish::lacks_words)
            {
                lacking += 1;
                assert_eq!(phase, Phase::Running, "node {i}");
            }
        }
        s.all_finished(&run)
    }));
    assert!(lacking > 0, "no node held the finish without its words");
    let finished_at = sim.now;
    assert!(sim.reach(&run, Phase::Complete, Duration::from_secs(5)));
    assert!(sim.run_until(Duration::from_secs(5), |s| {
        s.nodes.iter().all(|n| {
            n.core
                .get(&run)
                .is_some_and(|r| r.finish.as_ref().is_some_and(|f| !f.words.is_empty()))
        })
    }));
    let holds = |n: &SimNode| {
        let r = n.core.get(&run).unwrap_or_else(|| panic!("no run"));
        (r.started.clone(), r.done.clone(), r.start_skew())
    };
    // Published without the words, every copy; each node asked the
    // leader, which passed each the finish, and was answered once.
    assert!(
        !sim.published
            .iter()
            .any(|(_, _, k)| *k == "finish with words"),
        "a finish flooded with its words"
    );
    let answers = sim
        .published
        .iter()
        .filter(|(t, i, k)| *i == leader && *k == "answer" && *t >= finished_at)
        .count();
    assert_eq!(answers, 4, "the leader answered each other node once");
    let leaders = holds(&sim.nodes[leader]);
    assert_eq!((leaders.0.len(), leaders.1.len()), (5, 5));
    assert!(leaders.2.is_some());
    for (i, n) in sim.nodes.iter().enumerate() {
        assert_eq!(holds(n), leaders, "node {i} holds the leader's words");
    }
    // A node that missed the finish's first copy asks for the words when
    // a later one comes.
    let run = sim.submit(0, spec(10, 2), None);
    assert!(sim.reach(&run, Phase::Running, Duration::from_secs(3)));
    let leader = sim.leader_index(&run);
    let next = sim.rank(&run, 1);
    let missed = (0..5).find(|i| *i != leader && *i != next).unwrap_or(0);
    sim.lose_finish.insert((run.clone(), leader, missed));
    assert!(sim.run_until(Duration::from_secs(15), |s| s.all_finished(&run)));
    let finished_at = sim.now;
    assert!(sim.run_until(Duration::from_secs(5), |s| {
        s.nodes[missed]
            .core
            .get(&run)
            .is_some_and(|r| r.done.len() == 5)
    }));
    let holds = |n: &SimNode| {
        let r = n.core.get(&run).unwrap_or_else(|| panic!("no run"));
        (r.started.clone(), r.done.clone())
    };
    assert_eq!(holds(&sim.nodes[missed]), holds(&sim.nodes[leader]));
    assert!(sim.lose_finish.is_empty(), "the first copy was lost");
    assert!(
        sim.published
            .iter()
            .any(|(t, i, k)| *i == leader && *k == "answer" && *t >= finished_at),
        "{missed} asked the leader"
    );
    // A word is told, never gossiped; and only a word is told.
    let words = ["ready", "started", "done"];
    assert!(sim.told.iter().all(|(_, _, _, kind)| words.contains(kind)));
    assert!(
        !sim.published
            .iter()
            .any(|(_, _, kind)| words.contains(kind))
    );
}

/// Once every node of the armed plan has started and the leader's `live`
/// says it holds their `started`, nobody re-sends it, and the leader sends
/// neither the proposal nor the arm again: what goes on while the run goes
/// is the leader's progress, once a second.
#[test]
fn a_run_under_way_re_sends_nothing_the_leader_holds() {
    let mut sim = Sim::new(&[("fra", 3), ("nrt", 2)], 0, 43);
    let run = sim.submit(0, spec(10, 12), None);
    assert!(sim.reach(&run, Phase::Running, Duration::from_secs(3)));
    let leader = sim.leader_index(&run);
    let _ = sim.run_until(Duration::from_secs(3), |_| false);
    let since = sim.now;
    let _ = sim.run_until(Duration::from_secs(5), |_| false);
    let kinds: Vec<(usize, &str)> = sim
        .published
        .iter()
        .filter(|(t, _, _)| *t >= since)
        .map(|(_, by, kind)| (*by, *kind))
        .collect();
    let count = |kind: &str| kinds.iter().filter(|(_, k)| *k == kind).count();
    let told: Vec<_> = sim.told.iter().filter(|(t, ..)| *t >= since).collect();
    assert_eq!(told, Vec::<&(Duration, usize, Vec<usize>, &str)>::new());
    assert_eq!(count("propose") + count("arm"), 0, "{kinds:?}");
    assert!(
        (4..=6).contains(&count("live")) && kinds.iter().all(|(by, _)| *by == leader),
        "5 s under way: {kinds:?} (leader {leader})"
    );
    assert!(sim.run_until(Duration::from_secs(15), |s| s.all_finished(&run)));
    assert_eq!(sim.finish_of(&run).outcome, Outcome::Complete);
}

/// An ask about a run of a few bytes is answered with up to a few hundred
/// KB, so a member is answered about one run at most every 250 ms, and a
/// node remembers at most 4,096 answers: past that, asks are refused until
/// the older ones are 250 ms old. The runtime and the simulator both ask
/// the core.
#[test]
fn a_member_is_answered_about_one_run_at_most_every_quarter_second() {
    let mut core = RunsCore::new("me".into(), RunsConfig::default());
    let ms = Duration::from_millis;
    assert_eq!(core.may_answer_run("a", "r1", ms(1_000)), Ok(()));
    let again = core.may_answer_run("a", "r1", ms(1_100));
    assert!(
        again
            .as_ref()
            .is_err_and(|e| e.contains("r1") && e.contains("250 ms")),
        "{again:?}"
    );
    // Another run, another member: their own pace.
    assert_eq!(core.may_answer_run("a", "r2", ms(1_100)), Ok(()));
    assert_eq!(core.may_answer_run("b", "r1", ms(1_100)), Ok(()));
    // 250 ms after the answer, not after the refused ask.
    assert_eq!(core.may_answer_run("a", "r1", ms(1_250)), Ok(()));
    // A flood of (member, run) pairs fills the memory: then every ask is
    // refused, however new, until the older answers are 250 ms old.
    for i in 0..MAX_RUN_ANSWERS {
        let _ = core.may_answer_run(&format!("m{i}"), "r", ms(2_000));
    }
    assert!(core.may_answer_run("new", "r", ms(2_100)).is_err());
    assert_eq!(core.may_answer_run("new", "r", ms(2_250)), Ok(()));
}

#[test]
fn a_proposal_that_no_node_would_accept_is_refused_at_submission_saying_what_to_change() {
    let mut sim = Sim::new(&[("fra", 3)], 0, 17);
    let me = sim.nodes[0].id.clone();
    let many = |n: usize, region: &str| -> Proposal {
        let mut candidates: Vec<Candidate> = (1..n)
            .map(|i| Candidate {
                id: format!("12D3KooW{i:044}"),
                region: region.into(),
                capacity: 100,
            })
            .collect();
        candidates.push(Candidate {
            id: me.clone(),
            region: region.into(),
            capacity: 100,
        });
        candidates.sort_by(|a, b| a.id.cmp(&b.id));
        Proposal {
            proposer: me.clone(),
            spec: spec(10_000, 2),
            weights: None,
            nodes: None,
            candidates,
            members: None,
        }
    };
    let mut submit = |id: &str, proposal: Proposal| {
        sim.with_core(0, |core, at, view| {
            core.submit(id.into(), proposal, at, view).map(|_| ())
        })
    };
    // 10,000 nodes with the longest region names: the listed proposal,
    // which every node that asks gets, is over a run message's bound.
    let long = submit("r-long", many(10_000, &"r".repeat(wire::MAX_REGION_LEN)));
    let Err(e) = long else {
        panic!("a proposal over the bound was submitted");
    };
    assert!(
        e.contains("10000 candidates") && e.contains("--nodes") && e.contains("shorter region"),
        "{e}"
    );
    // More candidates than a node keeps members.
    let Err(e) = submit("r-over", many(wire::MAX_CANDIDATES + 1, "fra")) else {
        panic!("a proposal of too many candidates was submitted");
    };
    assert!(e.contains("refused by every node"), "{e}");
    // 10,000 nodes with short region names go.
    assert_eq!(submit("r-fits", many(10_000, "fra")), Ok(()));
}
