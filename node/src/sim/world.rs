//! The simulated nodes and the event loop that drives their real cores
//! through the three phases (see the parent module).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fusi_sdk::abi::MetricKind;
use rustc_hash::FxHashMap;

use super::network::{Counters, Delivery, Kind, Micros, Network, Payload};
use super::queue::Queue;
use super::{
    FrozenNode, GOSSIP_OVERHEAD, MODULE_BYTES, PhaseReport, Progress, RPC_OVERHEAD, SimConfig,
    SimReport, Spread, UPLINK_BYTES_PER_S,
};
use crate::core::clock::Exchange;
use crate::core::membership::{Event as MemberEvent, Heartbeat, Pulse};
use crate::core::mesh::{Action, Health, LocalNode, Seed};
use crate::core::metrics::{SeriesKey, SeriesSet};
use crate::core::module_spread::{FetchStep, FileFetch, ModuleAsks, ROUND_EVERY};
use crate::core::node::{CoreConfig, Holdings, NodeCore, Output};
use crate::core::rng::Rng;
use crate::core::runs::{At, EndedRun, Run, RunAction};
use crate::core::shard::Shard;
use crate::core::spec::{Executor, RunSpec};
use crate::core::sync::{Have, MAX_ANSWER_BYTES, MAX_ANSWER_SHARDS};
#[cfg(doc)]
use crate::core::sync::{have_of, missing};
use crate::core::wire::{self, PlanId, Request, Response, RunEnvelope};

/// The wall clock at virtual time zero, ns since the Unix epoch.
const EPOCH_NS: i64 = 1_800_000_000_000_000_000;
/// Nodes start within this long of each other.
const START_WITHIN: Micros = 1_000_000;
/// How many nodes the others bootstrap from.
const SEEDS: usize = 3;
/// gossipsub's heartbeat (`net/behaviour.rs`), and its first one.
const GOSSIP_HEARTBEAT: Micros = 500_000;

/// [`crate::core::mesh::IDLE_CLOSE`], in µs.
const IDLE_CLOSE: Micros = crate::core::mesh::IDLE_CLOSE.as_micros() as Micros;
const GOSSIP_FIRST: Micros = 100_000;
/// Compiling the module and initializing VUs.
const COMPILE: Micros = 200_000;
/// Between a share's end and its last shard.
const SEAL: Micros = 100_000;
/// How long preparing one answer takes (reading its shards from disk).
const ANSWER_TAKES: Micros = 20_000;
/// How often the phases' conditions are checked.
const CHECK_EVERY: Micros = 100_000;
/// The most virtual time each phase is given.
const MEMBERSHIP_LIMIT: Micros = 120_000_000;
const LEADER_LIMIT: Micros = 60_000_000;
/// How long the converged mesh idles before the run is submitted: its
/// traffic then is what a mesh costs between runs.
const IDLE: Micros = 10_000_000;
const SHARDS_LIMIT: Micros = 300_000_000;
/// The most virtual time the mesh is given to find a frozen node lost.
const FROZEN_LIMIT: Micros = 60_000_000;

fn micros(d: Duration) -> Micros {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn duration(t: Micros) -> Duration {
    Duration::from_micros(t)
}

fn seconds(t: Micros) -> f64 {
    t as f64 / 1e6
}

/// Something that happens at an instant.
#[derive(Debug)]
enum Event {
    /// A node starts.
    Boot(usize),
    /// A node's cores are ticked.
    Tick(usize),
    /// A node's gossipsub heartbeat.
    Gossipsub(usize),
    /// A copy of a gossip message arrives.
    Gossip(Delivery),
    /// A dial from `from` to `to` completes.
    Connect {
        from: usize,
        to: usize,
        bootstrap: Option<usize>,
    },
    /// A clock question arrives at `to`.
    ClockAsk {
        from: usize,
        to: usize,
        t1: i64,
        known: Option<(u64, u64)>,
        suspect: bool,
        introduce: Option<Box<Heartbeat>>,
    },
    /// A clock answer arrives back at `to`, from `from`.
    ClockAnswer {
        from: usize,
        to: usize,
        answer: Option<ClockReply>,
    },
    /// An ask for a member's list arrives at `to`.
    MembersAsk {
        from: usize,
        to: usize,
        digest: u64,
        heartbeat: Box<Heartbeat>,
        after: Option<String>,
    },
    /// The list arrives back at `to`, from `from`: the heartbeats and
    /// whether they are all; `None` when the lists were the same.
    MembersAnswer {
        from: usize,
        to: usize,
        answer: Option<(Vec<Heartbeat>, bool)>,
    },
    /// An ask for a second opinion on `member` arrives at `to`.
    HeardAsk {
        from: usize,
        to: usize,
        member: String,
    },
    /// The opinion arrives back at `to`, from `from`.
    HeardAnswer {
        from: usize,
        to: usize,
        member: String,
        ago: Option<Duration>,
    },
    /// An ask for the module arrives at `to`.
    ModuleAsk {
        from: usize,
        to: usize,
        plan: PlanId,
    },
    /// The module arrives at `to`, for its share of `plan`.
    ModuleAnswer { to: usize, plan: PlanId },
    /// The node `to` asked neither holds the module nor fetches it: `to`
    /// asks its next source.
    ModuleRefused { to: usize },
    /// A node's module fetch starts its next round.
    FetchAgain(usize),
    /// A node's share is prepared.
    Prepared { node: usize, plan: PlanId },
    /// A node's share starts.
    Start(usize),
    /// A node seals shard `seq` (the last when `seq` is the interval count).
    Seal { node: usize, seq: u32 },
    /// Shard `seq` of `from`, sent to its leader, arrives at `to`.
    ShardSent { from: usize, to: usize, seq: u32 },
    /// An ask about a run, after a `held` of `to`'s, arrives at `to`.
    RunAsk { from: usize, to: usize, known: bool },
    /// The answer arrives at `to`.
    RunAnswer {
        from: usize,
        to: usize,
        messages: Vec<Arc<RunEnvelope>>,
    },
    /// A word `from` told its run's leader (or the next in line) arrives
    /// at `to`.
    Word {
        from: usize,
        to: usize,
        env: Arc<RunEnvelope>,
    },
    /// An ask for missing shards arrives at `to`.
    SyncAsk {
        from: usize,
        to: usize,
        /// What the asker held when it asked, per origin (as the ask's
        /// `have` lists it).
        have: Vec<u64>,
    },
    /// An answer to that ask arrives back at `to`: the shards, by origin
    /// and sequence, and whether the peer holds more; `None` if refused.
    SyncAnswer {
        to: usize,
        answer: Option<(Vec<(usize, u32)>, bool)>,
    },
    /// A node has sent an answer it was preparing.
    Answered(usize),
    /// An ask for the ended runs it does not know arrives at `to`.
    RunsAsk {
        from: usize,
        to: usize,
        known: Vec<String>,
    },
    /// The answer to that ask arrives back at `to`: the runs, or `None` if
    /// refused.
    RunsAnswer {
        to: usize,
        runs: Option<Vec<EndedRun>>,
    },
    /// The phases' conditions are checked.
    Check,
}

/// The node an event happens at: where it arrives, or whose timer it is.
fn bound_for(event: &Event) -> Option<usize> {
    match event {
        Event::Boot(i)
        | Event::Tick(i)
        | Event::Gossipsub(i)
        | Event::Start(i)
        | Event::Answered(i)
        | Event::FetchAgain(i)
        | Event::Prepared { node: i, .. }
        | Event::Seal { node: i, .. } => Some(*i),
        Event::Gossip(d) => Some(d.to),
        Event::Connect { to, .. }
        | Event::ClockAsk { to, .. }
        | Event::ClockAnswer { to, .. }
        | Event::MembersAsk { to, .. }
        | Event::MembersAnswer { to, .. }
        | Event::HeardAsk { to, .. }
        | Event::HeardAnswer { to, .. }
        | Event::ModuleAsk { to, .. }
        | Event::ModuleAnswer { to, .. }
        | Event::ModuleRefused { to }
        | Event::ShardSent { to, .. }
        | Event::RunAsk { to, .. }
        | Event::RunAnswer { to, .. }
        | Event::Word { to, .. }
        | Event::SyncAsk { to, .. }
        | Event::SyncAnswer { to, .. }
        | Event::RunsAsk { to, .. }
        | Event::RunsAnswer { to, .. } => Some(*to),
        Event::Check => None,
    }
}

/// Whether a node holds every shard of the one run (the simulator's
/// [`Holdings`]).
struct Complete(bool);

impl Holdings for Complete {
    fn holds_all(&self, _run: &Run) -> bool {
        self.0
    }
}

/// One simulated node.
struct Node {
    id: String,
    skew_ns: i64,
    up: bool,
    core: NodeCore,
    /// Members it lists (joins less leaves), from its events.
    members: usize,
    /// Whether it listed every other node as live, and when.
    listed: bool,
    /// Members it has a clock sample of, as bits.
    /// Per origin node, the shards held, as bits of sequence numbers.
    held: Vec<u64>,
    /// Origins whose shards are all held.
    complete: usize,
    started: bool,
    /// The size of its shards on the wire.
    shard_bytes: usize,
    /// The scenario module, as its runtime fetches and serves it.
    module: ModuleFetch,
    /// When its uplink is free again: it sends answers (a module, a run,
    /// shards) one at a time, at [`UPLINK_BYTES_PER_S`].
    uplink_free: Micros,
}

/// The sha256 of the one module a simulation fetches.
const SIM_MODULE: &str = "sim-module";

/// A node's scenario module: whether it holds it; while it fetches it,
/// for which plan and from which sources not asked yet; and the asks it
/// keeps until it holds it, as the runtime does (who asked, for which plan).
#[derive(Debug, Default)]
struct ModuleFetch {
    held: bool,
    fetching: Option<(PlanId, FileFetch)>,
    asks: ModuleAsks<(usize, PlanId)>,
}

/// A clock answer on its way: the asker's `t1`, the answerer's receive and
/// send time (one instant in the model), its pulse, and what it tells of
/// the asker's clock.
#[derive(Debug)]
struct ClockReply {
    t1: i64,
    t2: i64,
    pulse: Pulse,
    yours: Option<(i64, i64)>,
}

/// Where the simulation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Membership,
    Idle,
    Leader,
    Shards,
    Frozen,
    Done,
}

/// How often to show where a simulation stands (real time), and to what.
pub type ShowProgress<'a> = (Duration, &'a mut dyn FnMut(&Progress));

/// The whole simulation.
pub struct World {
    config: SimConfig,
    nodes: Vec<Node>,
    by_id: FxHashMap<String, usize>,
    /// Node indices by id, as shard keys sort.
    id_order: Vec<usize>,
    by_addr: FxHashMap<String, usize>,
    net: Network,
    rng: Rng,
    queue: Queue<Event>,
    now: Micros,
    events: u64,
    stage: Stage,
    stage_start: Micros,
    stage_counters: Counters,
    run: Option<Arc<str>>,
    /// Everyone listed everyone, since the start.
    listed_at: Option<Micros>,
    leader_at: Option<Micros>,
    last_shard_at: Micros,
    /// From the last shard sealed to every shard everywhere.
    shards_settled: Option<Micros>,
    /// Connections per node at the end of the idle phase.
    idle_connections: Option<Spread>,
    /// The node frozen in the last phase: it does nothing, and what is
    /// sent to it is not taken.
    frozen: Option<usize>,
    /// Its region and watchers as it froze.
    frozen_node: Option<FrozenNode>,
    by_sync: u64,
    suspicions: u64,
    starts: Vec<i64>,
    phases: Vec<PhaseReport>,
}

impl World {
    /// The nodes of `config`, none started yet.
    pub fn new(config: &SimConfig) -> World {
        let mut rng = Rng::seeded(config.seed);
        let n = config.nodes;
        let region_names: Vec<String> = (0..config.regions).map(region_name).collect();
        let region: Vec<usize> = (0..n).map(|i| i % config.regions).collect();
        let net = Network::new(region.clone(), config.regions, config.loss, &mut rng);
        let ids: Vec<String> = (0..n).map(|_| peer_id(&mut rng)).collect();
        let addrs: Vec<String> = (0..n)
            .map(|i| {
                format!(
                    "/ip4/10.{}.{}.{}/tcp/7400",
                    i >> 16,
                    (i >> 8) & 255,
                    i & 255
                )
            })
            .collect();
        let mut nodes = Vec::with_capacity(n);
        for i in 0..n {
            let boot = if i < SEEDS {
                (0..i).map(|s| Seed::Address(addrs[s].clone())).collect()
            } else {
                vec![Seed::Address(
                    addrs[rng.below(SEEDS as u64) as usize].clone(),
                )]
            };
            let me = LocalNode {
                id: ids[i].clone(),
                name: format!("{}-{}", region_names[region[i]], i / config.regions),
                region: region_names[region[i]].clone(),
                boot: EPOCH_NS as u64,
                cores: 16,
                vu_limit: 20_000,
                version: env!("CARGO_PKG_VERSION").to_owned(),
            };
            let core_config = CoreConfig {
                mesh_every: config.mesh_tick,
                runs_every: config.tick,
                ..CoreConfig::default()
            };
            let mut core = NodeCore::new(me, core_config, boot, Duration::ZERO);
            core.mesh_mut()
                .set_listen(vec![addrs[i].clone()], Duration::ZERO);
            nodes.push(Node {
                id: ids[i].clone(),
                skew_ns: rng.below(100_000_000) as i64 - 50_000_000,
                up: false,
                core,
                members: 0,
                listed: false,
                held: vec![0; n],
                complete: 0,
                started: false,
                shard_bytes: 0,
                module: ModuleFetch::default(),
                uplink_free: 0,
            });
        }
        let mut id_order: Vec<usize> = (0..n).collect();
        id_order.sort_by(|a, b| ids[*a].cmp(&ids[*b]));
        let mut world = World {
            config: config.clone(),
            id_order,
            by_id: ids
                .iter()
                .enumerate()
                .map(|(i, id)| (id.clone(), i))
                .collect(),
            by_addr: addrs
                .iter()
                .enumerate()
                .map(|(i, a)| (a.clone(), i))
                .collect(),
            stage_counters: net.counters.clone(),
            nodes,
            net,
            rng,
            queue: Queue::new(),
            now: 0,
            events: 0,
            stage: Stage::Membership,
            stage_start: 0,
            run: None,
            listed_at: None,
            leader_at: None,
            last_shard_at: 0,
            shards_settled: None,
            idle_connections: None,
            frozen: None,
            frozen_node: None,
            by_sync: 0,
            suspicions: 0,
            starts: Vec::new(),
            phases: Vec::new(),
        };
        for i in 0..n {
            let at = if i == 0 {
                0
            } else {
                world.rng.below(START_WITHIN)
            };
            world.schedule(at, Event::Boot(i));
        }
        world.schedule(CHECK_EVERY, Event::Check);
        world
    }

    fn schedule(&mut self, at: Micros, event: Event) {
        self.queue.push(at, event);
    }

    fn deliver_all(&mut self, deliveries: Vec<Delivery>) {
        for d in deliveries {
            self.schedule(d.at, Event::Gossip(d));
        }
    }

    fn wall_ns(&self, i: usize) -> i64 {
        EPOCH_NS + (self.now as i64) * 1000 + self.nodes[i].skew_ns
    }

    fn at(&self, i: usize) -> At {
        At {
            now: duration(self.now),
            wall_ns: self.wall_ns(i),
        }
    }

    /// Runs every phase, and reports; hands `progress` where it stands
    /// after every period of real time it names.
    pub fn run(mut self, mut progress: Option<ShowProgress<'_>>) -> SimReport {
        let wall = Instant::now();
        let mut next_progress = progress.as_ref().map(|(every, _)| *every);
        while self.stage != Stage::Done {
            let Some((at, event)) = self.queue.pop() else {
                break;
            };
            self.now = at;
            self.events += 1;
            self.handle(event);
            if self.events.is_multiple_of(1024)
                && let (Some((every, show)), Some(next)) = (progress.as_mut(), next_progress)
                && wall.elapsed() >= next
            {
                show(&self.progress(wall));
                next_progress = Some(next + *every);
            }
        }
        let n = self.nodes.len();
        let shards_total = (n as u64) * u64::from(self.config.intervals + 1);
        let mut phases = std::mem::take(&mut self.phases).into_iter();
        let mut phase = |name| {
            phases.next().unwrap_or_else(|| PhaseReport {
                name,
                seconds: None,
                limit_s: 0.0,
                counted_s: 0.0,
                total: self.net.counters.since(&self.net.counters).0,
                by_kind: Vec::new(),
            })
        };
        let (membership, idle, leader, shards, frozen) = (
            phase("membership"),
            phase("idle"),
            phase("leader"),
            phase("shards"),
            phase("frozen"),
        );
        let spread = match (self.starts.iter().min(), self.starts.iter().max()) {
            (Some(a), Some(b)) if self.starts.len() == n => Some((b - a) as f64 / 1e6),
            _ => None,
        };
        SimReport {
            nodes: n,
            seed: self.config.seed,
            loss: self.config.loss,
            drop: self.config.drop,
            regions: self.config.regions,
            intervals: self.config.intervals,
            membership,
            members_listed_s: self.listed_at.map(seconds),
            idle,
            idle_connections: self.idle_connections.take(),
            leader,
            leader_agreed_s: self.leader_at.map(seconds),
            shards,
            shards_total,
            shards_after_last_s: self.shards_settled.map(seconds),
            shards_by_sync: self.by_sync,
            start_spread_ms: spread,
            frozen,
            frozen_node: self.frozen_node.take(),
            suspicions: self.suspicions,
            events: self.events,
            virtual_s: seconds(self.now),
            wall_s: wall.elapsed().as_secs_f64(),
        }
    }

    fn progress(&self, wall: Instant) -> Progress {
        let n = self.nodes.len();
        let members: usize = self.nodes.iter().map(|node| node.members).sum();
        Progress {
            wall_s: wall.elapsed().as_secs_f64(),
            virtual_s: seconds(self.now),
            phase: match self.stage {
                Stage::Membership => "membership",
                Stage::Idle => "idle",
                Stage::Leader => "leader",
                Stage::Shards => "shards",
                Stage::Frozen => "frozen",
                Stage::Done => "done",
            },
            nodes: n,
            members_mean: members as f64 / n as f64,
            complete: self.nodes.iter().filter(|node| node.complete == n).count(),
            events: self.events,
            resident_bytes: resident_bytes(),
        }
    }

    fn handle(&mut self, event: Event) {
        if self.frozen.is_some() && self.frozen == bound_for(&event) {
            // A frozen process: its timers do not fire, and what arrives
            // waits in its socket, unread. Gossip's bookkeeping goes on.
            if let Event::Gossip(d) = event
                && self.net.arrive(d).is_some()
            {
                self.net.forget_if_done(d.msg);
            }
            return;
        }
        match event {
            Event::Boot(i) => {
                self.nodes[i].up = true;
                let phase = self.rng.below(micros(self.config.tick));
                self.schedule(self.now + phase, Event::Tick(i));
                self.schedule(self.now + GOSSIP_FIRST, Event::Gossipsub(i));
            }
            Event::Tick(i) => {
                self.tick(i);
                let next = micros(self.nodes[i].core.poll_timeout()).max(self.now + 1);
                self.schedule(next, Event::Tick(i));
            }
            Event::Gossipsub(i) => {
                self.close_idle(i);
                self.net.maintain_mesh(i);
                self.schedule(self.now + GOSSIP_HEARTBEAT, Event::Gossipsub(i));
            }
            Event::Gossip(d) => self.on_gossip(d),
            Event::Connect {
                from,
                to,
                bootstrap,
            } => {
                if !self.nodes[to].up {
                    return;
                }
                if self.net.connect(from, to, self.now) {
                    let (a, b) = (self.nodes[from].id.clone(), self.nodes[to].id.clone());
                    let now = duration(self.now);
                    self.nodes[from].core.mesh_mut().on_connected(&b, now);
                    self.nodes[to].core.mesh_mut().on_connected(&a, now);
                }
                if let Some(index) = bootstrap {
                    let addr = self.nodes[to].core.mesh().listen().first().cloned();
                    self.nodes[from]
                        .core
                        .mesh_mut()
                        .on_bootstrap_connected(index, &addr.unwrap_or_default());
                }
            }
            Event::ClockAsk {
                from,
                to,
                t1,
                known,
                suspect,
                introduce,
            } => {
                let now = duration(self.now);
                let asker = self.nodes[from].id.clone();
                if let Some(hb) = introduce {
                    self.take_heartbeat(to, &asker, *hb);
                }
                let answer = if self.nodes[to].core.mesh().may_answer_clock(&asker) {
                    let t2 = self.wall_ns(to);
                    let pulse = self.nodes[to]
                        .core
                        .mesh_mut()
                        .answer_clock(known, suspect, now);
                    let yours = self.nodes[to].core.mesh().clock_to_tell(&asker, now);
                    Some(ClockReply {
                        t1,
                        t2,
                        pulse,
                        yours,
                    })
                } else {
                    self.nodes[to].core.mesh_mut().on_stranger(&asker);
                    None
                };
                // Answers carry what they would on the wire; the mesh
                // core's own actions (a refutation) go out at once.
                self.carry_out(to);
                let bytes = match &answer {
                    Some(reply) => {
                        wire::encode(&Response::Clock {
                            t1: reply.t1,
                            t2: reply.t2,
                            t3: reply.t2,
                            pulse: Some(Box::new(reply.pulse.clone())),
                            yours: reply.yours,
                        })
                        .len()
                            + RPC_OVERHEAD
                    }
                    None => refused_bytes(),
                };
                self.rpc(
                    Kind::Clock,
                    to,
                    from,
                    bytes,
                    Event::ClockAnswer {
                        from: to,
                        to: from,
                        answer,
                    },
                );
            }
            Event::ClockAnswer { from, to, answer } => {
                let Some(ClockReply {
                    t1,
                    t2,
                    pulse,
                    yours,
                }) = answer
                else {
                    let peer = self.nodes[from].id.clone();
                    self.nodes[to].core.mesh_mut().on_clock_refused(&peer);
                    return;
                };
                let t4 = self.wall_ns(to);
                let peer = self.nodes[from].id.clone();
                let now = duration(self.now);
                if let Ok(Some(event)) = self.nodes[to].core.mesh_mut().on_pulse(&peer, pulse, now)
                {
                    self.on_member_event(to, &event);
                }
                self.nodes[to].core.mesh_mut().on_clock_answer(
                    &peer,
                    Exchange { t1, t2, t3: t2, t4 },
                    yours,
                    now,
                );
            }
            Event::MembersAsk {
                from,
                to,
                digest,
                heartbeat,
                after,
            } => {
                let asker = self.nodes[from].id.clone();
                self.take_heartbeat(to, &asker, *heartbeat);
                let Ok(answer) =
                    self.nodes[to]
                        .core
                        .mesh()
                        .answer_members(&asker, digest, after.as_deref())
                else {
                    return;
                };
                let bytes = match &answer {
                    Some((members, complete)) => wire::encode(&Response::Members {
                        members: members.clone(),
                        same: false,
                        complete: *complete,
                    })
                    .len(),
                    None => 16,
                } + RPC_OVERHEAD;
                self.rpc(
                    Kind::Members,
                    to,
                    from,
                    bytes,
                    Event::MembersAnswer {
                        from: to,
                        to: from,
                        answer,
                    },
                );
            }
            Event::HeardAsk { from, to, member } => {
                let now = duration(self.now);
                let ago = self.nodes[to].core.mesh().answer_heard(&member, now);
                let bytes = wire::encode(&Response::Heard {
                    ago_ms: ago.map(|a| u64::try_from(a.as_millis()).unwrap_or(u64::MAX)),
                })
                .len()
                    + RPC_OVERHEAD;
                self.rpc(
                    Kind::Members,
                    to,
                    from,
                    bytes,
                    Event::HeardAnswer {
                        from: to,
                        to: from,
                        member,
                        ago,
                    },
                );
            }
            Event::HeardAnswer {
                from,
                to,
                member,
                ago,
            } => {
                let peer = self.nodes[from].id.clone();
                let now = duration(self.now);
                self.nodes[to]
                    .core
                    .mesh_mut()
                    .on_heard(&peer, &member, ago, now);
            }
            Event::MembersAnswer { from, to, answer } => {
                let Some((members, complete)) = answer else {
                    self.nodes[to].core.mesh_mut().on_members_same();
                    return;
                };
                let peer = self.nodes[from].id.clone();
                let now = duration(self.now);
                let results = self.nodes[to]
                    .core
                    .mesh_mut()
                    .on_members(&peer, members, complete, now);
                for event in results.into_iter().filter_map(|r| r.ok().flatten()) {
                    self.on_member_event(to, &event);
                }
            }
            Event::ModuleAsk { from, to, plan } => {
                let now = duration(self.now);
                let module = &mut self.nodes[to].module;
                if module.held {
                    self.send_module(to, from, plan);
                } else if module.asks.keep(SIM_MODULE, (from, plan), now).is_err() {
                    self.refuse_module(to, from);
                }
            }
            Event::ModuleRefused { to } => self.fetch_module(to, Some("refused".into()), None),
            Event::FetchAgain(i) => {
                let Some(run) = self.run.clone() else {
                    return;
                };
                let sources = self.nodes[i].core.runs().module_sources(&run);
                let step = match &mut self.nodes[i].module.fetching {
                    Some((_, fetch)) => fetch.again(sources),
                    None => return,
                };
                self.fetch_module(i, None, Some(step));
            }
            Event::ModuleAnswer { to, plan } => {
                let module = &mut self.nodes[to].module;
                module.held = true;
                module.fetching = None;
                for (asker, their_plan) in module.asks.arrived(SIM_MODULE) {
                    self.send_module(to, asker, their_plan);
                }
                self.schedule(self.now + COMPILE, Event::Prepared { node: to, plan });
            }
            Event::Prepared { node, plan } => {
                let Some(run) = self.run.clone() else {
                    return;
                };
                let at = self.at(node);
                self.nodes[node].core.prepared(&run, plan, at);
                self.carry_out(node);
            }
            Event::Start(i) => self.start(i),
            Event::Seal { node, seq } => self.seal(node, seq),
            Event::ShardSent { from, to, seq } => {
                if let Some(run) = &self.run
                    && self.nodes[to].core.runs().get(run).is_some()
                {
                    self.hold(to, from, seq);
                }
            }
            Event::RunAsk { from, to, known } => self.answer_run(from, to, known),
            Event::RunAnswer { from, to, messages } => {
                if self.nodes[to].up {
                    let at = self.at(to);
                    let from = self.nodes[from].id.clone();
                    for env in messages {
                        let _ =
                            self.nodes[to]
                                .core
                                .runs_mut()
                                .on_message(&from, (*env).clone(), at);
                    }
                    self.take_refusals(to);
                }
            }
            Event::Word { from, to, env } => {
                if self.nodes[to].up {
                    let at = self.at(to);
                    let from = self.nodes[from].id.clone();
                    let _ = self.nodes[to]
                        .core
                        .runs_mut()
                        .on_message(&from, (*env).clone(), at);
                    self.take_refusals(to);
                }
            }
            Event::SyncAsk { from, to, have } => self.answer_sync(from, to, &have),
            Event::SyncAnswer { to, answer } => self.on_sync_answer(to, answer),
            Event::Answered(i) => self.nodes[i].core.shards_answer_sent(),
            Event::RunsAsk { from, to, known } => self.answer_runs(from, to, &known),
            Event::RunsAnswer { to, runs } => self.on_runs_answer(to, runs),
            Event::Check => {
                self.check();
                if self.stage != Stage::Done {
                    self.schedule(self.now + CHECK_EVERY, Event::Check);
                }
            }
        }
    }

    /// Sends a request or answer of `bytes` from `from`; `then` happens at
    /// `to` when it arrives.
    fn rpc(&mut self, kind: Kind, from: usize, to: usize, bytes: usize, then: Event) {
        self.net.counters.count(kind, from, to, bytes, true);
        let at = self.now + self.net.latency(from, to);
        self.schedule(at, then);
    }

    /// Node `i` carries out its module fetch's next step, after an ask that
    /// brought nothing (`problem`), or `step` when given.
    fn fetch_module(&mut self, i: usize, problem: Option<String>, step: Option<FetchStep>) {
        let Some((plan, fetch)) = &mut self.nodes[i].module.fetching else {
            return;
        };
        let plan = *plan;
        match step.unwrap_or_else(|| fetch.next(problem)) {
            FetchStep::Ask(peer) => {
                let Some(&to) = self.by_id.get(&peer) else {
                    return self.fetch_module(i, Some("not a node".into()), None);
                };
                let bytes = wire::encode(&Request::Module {
                    sha256: "ab".repeat(32),
                })
                .len()
                    + RPC_OVERHEAD;
                self.rpc(
                    Kind::Module,
                    i,
                    to,
                    bytes,
                    Event::ModuleAsk { from: i, to, plan },
                );
            }
            FetchStep::Wait => {
                let at = self.now + micros(ROUND_EVERY);
                self.schedule(at, Event::FetchAgain(i));
            }
            // The simulator's fetch wants one file, which ends it; a node
            // that gives up is left unprepared (the proposer, always a
            // source, holds the module, so none does).
            FetchStep::Done | FetchStep::GiveUp { .. } => self.nodes[i].module.fetching = None,
        }
    }

    /// Node `from` refuses `to`'s ask for the module.
    fn refuse_module(&mut self, from: usize, to: usize) {
        let bytes = wire::encode(&Response::Refused {
            reason: "this node does not hold that module, and is not fetching it".into(),
        })
        .len()
            + RPC_OVERHEAD;
        self.rpc(Kind::Module, from, to, bytes, Event::ModuleRefused { to });
    }

    /// Node `from` sends the module to `to`, once its uplink is free.
    fn send_module(&mut self, from: usize, to: usize, plan: PlanId) {
        let bytes = MODULE_BYTES + RPC_OVERHEAD;
        self.answer(
            Kind::Module,
            from,
            to,
            bytes,
            0,
            Event::ModuleAnswer { to, plan },
        );
    }

    /// Node `from` answers `to` with `bytes`, ready `after` from now: the
    /// answer leaves once `from`'s uplink is free, at
    /// [`UPLINK_BYTES_PER_S`], then takes the latency.
    fn answer(
        &mut self,
        kind: Kind,
        from: usize,
        to: usize,
        bytes: usize,
        after: Micros,
        then: Event,
    ) {
        self.net.counters.count(kind, from, to, bytes, true);
        let begins = (self.now + after).max(self.nodes[from].uplink_free);
        let sent = begins + (bytes as u64 * 1_000_000).div_ceil(UPLINK_BYTES_PER_S);
        self.nodes[from].uplink_free = sent;
        let at = sent + self.net.latency(from, to);
        self.schedule(at, then);
    }

    fn tick(&mut self, i: usize) {
        let at = self.at(i);
        let module = &mut self.nodes[i].module;
        if !module.asks.is_empty() {
            let fetching = module.fetching.is_some();
            for (asker, _) in module.asks.expired(at.now, |_| fetching) {
                self.refuse_module(i, asker);
            }
        }
        let n = self.nodes.len();
        let node = &mut self.nodes[i];
        let complete = Complete(node.complete == n);
        node.core.handle_timeout(at, Health::default(), &complete);
        self.carry_out(i);
    }

    /// Carries out what node `i`'s core decided.
    fn carry_out(&mut self, i: usize) {
        while let Some(output) = self.nodes[i].core.poll_output() {
            match output {
                Output::Mesh(action) => self.mesh_action(i, action),
                Output::Run(action) => self.run_action(i, action),
                Output::AskShards { peer, .. } => self.ask_shards(i, &peer),
                Output::AskRuns { peer, known } => self.ask_runs(i, &peer, known),
            }
        }
    }

    fn mesh_action(&mut self, i: usize, action: Action) {
        match action {
            Action::Publish(hb) => {
                let bytes = wire::encode(&hb).len() + GOSSIP_OVERHEAD;
                let out = self.net.publish(
                    i,
                    Kind::Heartbeat,
                    Payload::Heartbeat(Arc::new(hb)),
                    bytes,
                    self.now,
                );
                self.deliver_all(out);
            }
            Action::Suspect { id, boot, seq } => {
                let suspicion = wire::Suspicion { id, boot, seq };
                let bytes = wire::encode(&suspicion).len() + GOSSIP_OVERHEAD;
                let out = self.net.publish(
                    i,
                    Kind::Suspect,
                    Payload::Suspect(Arc::new(suspicion)),
                    bytes,
                    self.now,
                );
                self.deliver_all(out);
            }
            Action::AskClock {
                peer,
                known,
                suspect,
                introduce,
            } => {
                let Some(&to) = self.by_id.get(&peer) else {
                    return;
                };
                let t1 = self.wall_ns(i);
                let request = Request::Clock {
                    t1,
                    known,
                    suspect,
                    introduce,
                };
                let bytes = wire::encode(&request).len() + RPC_OVERHEAD;
                let Request::Clock { introduce, .. } = request else {
                    return;
                };
                self.rpc(
                    Kind::Clock,
                    i,
                    to,
                    bytes,
                    Event::ClockAsk {
                        from: i,
                        to,
                        t1,
                        known,
                        suspect,
                        introduce,
                    },
                );
            }
            Action::AskMembers {
                peer,
                digest,
                heartbeat,
                after,
            } => {
                let Some(&to) = self.by_id.get(&peer) else {
                    return;
                };
                let request = Request::Members {
                    digest,
                    heartbeat,
                    after,
                };
                let bytes = wire::encode(&request).len() + RPC_OVERHEAD;
                let Request::Members {
                    heartbeat, after, ..
                } = request
                else {
                    return;
                };
                self.rpc(
                    Kind::Members,
                    i,
                    to,
                    bytes,
                    Event::MembersAsk {
                        from: i,
                        to,
                        digest,
                        heartbeat: Box::new(heartbeat),
                        after,
                    },
                );
            }
            Action::AskHeard { peer, member } => {
                let Some(&to) = self.by_id.get(&peer) else {
                    return;
                };
                let bytes = wire::encode(&Request::Heard {
                    member: member.clone(),
                })
                .len()
                    + RPC_OVERHEAD;
                self.rpc(
                    Kind::Members,
                    i,
                    to,
                    bytes,
                    Event::HeardAsk {
                        from: i,
                        to,
                        member,
                    },
                );
            }
            Action::DialPeer { peer, .. } => {
                if let Some(&to) = self.by_id.get(&peer) {
                    self.dial(i, to, None);
                }
            }
            Action::DialBootstrap { index, addr } => {
                if let Some(&to) = self.by_addr.get(&addr) {
                    self.dial(i, to, Some(index));
                }
            }
            // The simulated nodes bootstrap by address only.
            Action::Resolve { .. } => {}
            Action::Membership(event) => self.on_member_event(i, &event),
        }
    }

    /// The network layer's close of idle connections at node `i`
    /// ([`MeshCore::closes`](crate::core::mesh::MeshCore::closes)): one
    /// outside gossipsub's mesh, open [`IDLE_CLOSE`] (the simulator's
    /// requests need no connection, so none is used after it opens), that
    /// the node does not keep.
    fn close_idle(&mut self, i: usize) {
        for b in self.net.idle_peers(i, self.now, IDLE_CLOSE) {
            let b_id = self.nodes[b].id.clone();
            if !self.nodes[i]
                .core
                .mesh()
                .closes(&b_id, duration(IDLE_CLOSE), false)
            {
                continue;
            }
            let a_id = self.nodes[i].id.clone();
            self.net.disconnect(i, b);
            self.nodes[i].core.mesh_mut().on_disconnected(&b_id);
            self.nodes[b].core.mesh_mut().on_disconnected(&a_id);
        }
    }

    fn dial(&mut self, from: usize, to: usize, bootstrap: Option<usize>) {
        // TCP, then the mesh key and Noise: two round trips.
        let at = self.now + 4 * self.net.base_latency(from, to);
        self.schedule(
            at,
            Event::Connect {
                from,
                to,
                bootstrap,
            },
        );
    }

    fn on_member_event(&mut self, i: usize, event: &MemberEvent) {
        match event {
            MemberEvent::Joined(_) => self.nodes[i].members += 1,
            MemberEvent::Left(_) | MemberEvent::Stopped(_) => {
                self.nodes[i].members = self.nodes[i].members.saturating_sub(1);
            }
            MemberEvent::Suspected(id)
                if self.stage != Stage::Membership
                    && self.frozen.is_none_or(|f| self.nodes[f].id != *id) =>
            {
                self.suspicions += 1;
            }
            _ => {}
        }
    }

    fn on_gossip(&mut self, d: Delivery) {
        let Some((author, payload)) = self.net.arrive(d) else {
            return;
        };
        if self.rng.chance(self.config.drop) {
            self.net.forget_if_done(d.msg);
            return;
        }
        let to = d.to;
        let now = duration(self.now);
        match payload {
            Payload::Heartbeat(hb) => {
                let source = self.nodes[author].id.clone();
                self.take_heartbeat(to, &source, (*hb).clone());
            }
            Payload::Suspect(s) => {
                let source = self.nodes[author].id.clone();
                if let Some(event) = self.nodes[to]
                    .core
                    .mesh_mut()
                    .on_suspicion(&source, &s.id, s.boot, s.seq, now)
                {
                    self.on_member_event(to, &event);
                }
            }
            Payload::Run(env) => {
                let at = self.at(to);
                let from = self.nodes[author].id.clone();
                let via = self.nodes[d.from].id.clone();
                let _ = self.nodes[to]
                    .core
                    .on_run_gossip(&from, &via, (*env).clone(), at);
                // An ask after a `held` goes out at once, as the runtime
                // sends it.
                self.take_refusals(to);
            }
        }
        let out = self.net.forward(d);
        self.deliver_all(out);
    }

    /// What node `i`'s runs would send at once after a message: asks after
    /// `held`s, proposals for members that waited for them, refusals.
    fn take_refusals(&mut self, i: usize) {
        for action in self.nodes[i].core.runs_mut().take_refusals() {
            self.run_action(i, action);
        }
    }

    /// Node `to` takes a heartbeat from `source` itself.
    fn take_heartbeat(&mut self, to: usize, source: &str, hb: Heartbeat) {
        let now = duration(self.now);
        if let Ok(Some(event)) = self.nodes[to].core.mesh_mut().on_heartbeat(source, hb, now) {
            self.on_member_event(to, &event);
        }
    }

    /// Node `i` now holds shard `seq` of `origin`; whether it is new.
    fn hold(&mut self, i: usize, origin: usize, seq: u32) -> bool {
        let full = full_mask(self.config.intervals);
        let n = &mut self.nodes[i];
        let bit = 1u64 << seq;
        if n.held[origin] & bit != 0 {
            return false;
        }
        n.held[origin] |= bit;
        if n.held[origin] == full {
            n.complete += 1;
        }
        true
    }

    /// Node `i` publishes a run message on the runs topic.
    fn publish_run(&mut self, i: usize, mut env: RunEnvelope) {
        // As the runtime does: a leader's message this node sends as
        // itself is signed (the signature is not modelled, only who
        // signed).
        if env.sig.is_none() && env.is_leaders() {
            env.sig = Some(wire::RunSignature {
                signer: self.nodes[i].id.clone(),
                bytes: vec![0; 64],
            });
        }
        let bytes = wire::encode(&env);
        // As on the wire: what the others get is what decodes.
        let Ok(env) = wire::decode_run(&bytes) else {
            return;
        };
        let out = self.net.publish(
            i,
            Kind::Runs,
            Payload::Run(Arc::new(env)),
            bytes.len() + GOSSIP_OVERHEAD,
            self.now,
        );
        self.deliver_all(out);
    }

    fn run_action(&mut self, i: usize, action: RunAction) {
        match action {
            RunAction::Publish(env) => self.publish_run(i, env),
            RunAction::Pull { run, from, known } => {
                if let Some(to) = self.by_id.get(&from).copied() {
                    let bytes = wire::encode(&Request::Run { run, known }).len() + RPC_OVERHEAD;
                    let ask = Event::RunAsk { from: i, to, known };
                    self.rpc(Kind::Runs, i, to, bytes, ask);
                }
            }
            RunAction::Tell { to, env } => {
                let message = wire::encode(&env);
                let bytes = wire::encode(&Request::Word {
                    message: serde_bytes::ByteBuf::from(message),
                })
                .len()
                    + RPC_OVERHEAD;
                let env = Arc::new(env);
                let to: Vec<usize> = to
                    .iter()
                    .filter_map(|t| self.by_id.get(t).copied())
                    .collect();
                for to in to {
                    self.rpc(
                        Kind::Runs,
                        i,
                        to,
                        bytes,
                        Event::Word {
                            from: i,
                            to,
                            env: env.clone(),
                        },
                    );
                }
            }
            RunAction::Live { run, mut live } => {
                // The progress as a leader merges it: the run and each
                // region, with made-up figures of the real size.
                let scope = |name: &str| wire::LiveScope {
                    scope: name.to_owned(),
                    t_s: 12.0,
                    vus: 1250,
                    rps: 18_734.5,
                    p95_ms: 23.125,
                    requests: 224_814,
                    failed: 17,
                };
                live.scopes = std::iter::once(scope("all"))
                    .chain((0..self.config.regions).map(|r| scope(&region_name(r))))
                    .collect();
                let env = RunEnvelope {
                    protocol: wire::RUN_PROTOCOL,
                    run,
                    body: wire::RunMessage::Live(live),
                    sig: None,
                };
                self.publish_run(i, env);
            }
            RunAction::Prepare { plan, sources, .. } => {
                if self.nodes[i].module.held {
                    self.schedule(self.now + COMPILE, Event::Prepared { node: i, plan });
                } else {
                    let fetch = FileFetch::new(vec![SIM_MODULE.to_owned()], sources);
                    self.nodes[i].module.fetching = Some((plan, fetch));
                    self.fetch_module(i, None, None);
                }
            }
            RunAction::Start { at_wall_ns, .. } => {
                let true_ns = at_wall_ns - EPOCH_NS - self.nodes[i].skew_ns;
                let at = u64::try_from(true_ns / 1000).unwrap_or(0).max(self.now);
                self.schedule(at, Event::Start(i));
            }
            // The simulator models a share's shards, not its load: a
            // part taken over adds none.
            RunAction::Stop { .. } | RunAction::TakeOver { .. } => {}
        }
    }

    /// Node `to` answers `from`'s ask about the run, as the runtime does:
    /// its leader's messages signed (who signed, not the signature).
    fn answer_run(&mut self, from: usize, to: usize, known: bool) {
        let Some(run) = self.run.clone() else {
            return;
        };
        if !self.nodes[to].up {
            return;
        }
        let at = self.at(to);
        let asker = self.nodes[from].id.clone();
        if let Err(reason) = self.nodes[to]
            .core
            .runs_mut()
            .may_answer_run(&asker, &run, at.now)
        {
            let bytes = wire::encode(&Response::Refused { reason }).len() + RPC_OVERHEAD;
            let messages = Vec::new();
            let answer = Event::RunAnswer {
                from: to,
                to: from,
                messages,
            };
            self.rpc(Kind::Runs, to, from, bytes, answer);
            return;
        }
        let mut bytes = RPC_OVERHEAD;
        let mut messages = Vec::new();
        for mut env in self.nodes[to]
            .core
            .runs_mut()
            .answer_run(&asker, &run, known, at)
        {
            if env.sig.is_none() && env.is_leaders() {
                env.sig = Some(wire::RunSignature {
                    signer: self.nodes[to].id.clone(),
                    bytes: vec![0; 64],
                });
            }
            let encoded = wire::encode(&env);
            bytes += encoded.len() + 4;
            if let Ok(env) = wire::decode_run(&encoded) {
                messages.push(Arc::new(env));
            }
        }
        self.answer(
            Kind::Runs,
            to,
            from,
            bytes,
            0,
            Event::RunAnswer {
                from: to,
                to: from,
                messages,
            },
        );
    }

    fn start(&mut self, i: usize) {
        let Some(run) = self.run.clone() else {
            return;
        };
        if self.nodes[i].started {
            return;
        }
        self.nodes[i].started = true;
        self.starts.push(self.now as i64 * 1000);
        let at = self.at(i);
        self.nodes[i].core.started(&run, at.wall_ns, at.now);
        self.carry_out(i);
        self.nodes[i].shard_bytes = shard_size(&run, &self.nodes[i]) + GOSSIP_OVERHEAD;
        for seq in 0..self.config.intervals {
            let at = self.now + u64::from(seq + 1) * 1_000_000;
            self.schedule(at, Event::Seal { node: i, seq });
        }
        let end = self.now + u64::from(self.config.intervals) * 1_000_000 + SEAL;
        self.schedule(
            end,
            Event::Seal {
                node: i,
                seq: self.config.intervals,
            },
        );
    }

    fn seal(&mut self, i: usize, seq: u32) {
        let Some(run) = self.run.clone() else {
            return;
        };
        self.hold(i, i, seq);
        self.last_shard_at = self.last_shard_at.max(self.now);
        let at = self.at(i);
        let to = self.nodes[i]
            .core
            .runs()
            .shard_to(&run, &self.nodes[i].core.view(at.now));
        let to: Vec<usize> = to
            .iter()
            .filter_map(|t| self.by_id.get(t).copied())
            .collect();
        for to in to {
            let bytes = self.nodes[i].shard_bytes - GOSSIP_OVERHEAD + RPC_OVERHEAD;
            self.rpc(
                Kind::Shards,
                i,
                to,
                bytes,
                Event::ShardSent { from: i, to, seq },
            );
        }
        if seq == self.config.intervals {
            let now = self.at(i).now;
            self.nodes[i]
                .core
                .finished(&run, u64::from(seq) + 1, false, now);
            self.carry_out(i);
        }
    }

    /// The shard keys node `i` holds, as the runtime's report keeps them.
    /// What node `i` holds, as an ask for shards lists it ([`have_of`] of
    /// its shard keys), built from its bits.
    fn have_of(&self, i: usize) -> Vec<Have> {
        let held = &self.nodes[i].held;
        self.id_order
            .iter()
            .filter(|&&o| held[o] != 0)
            .map(|&o| {
                let mut ranges: Vec<(u64, u64)> = Vec::new();
                let mut bits = held[o];
                while bits != 0 {
                    let seq = u64::from(bits.trailing_zeros());
                    bits &= bits - 1;
                    match ranges.last_mut() {
                        Some(last) if last.1 + 1 == seq => last.1 = seq,
                        _ => ranges.push((seq, seq)),
                    }
                }
                Have {
                    node: self.nodes[o].id.clone(),
                    ranges,
                }
            })
            .collect()
    }

    /// The shards `to` holds that `have` lacks, at most `limit`, in the
    /// order [`missing`] gives them (by node id, then sequence number).
    fn missing_bits(&self, to: usize, have: &[u64], limit: usize) -> Vec<(usize, u32)> {
        let held = &self.nodes[to].held;
        let mut out = Vec::new();
        for &o in &self.id_order {
            let mut bits = held[o] & !have[o];
            while bits != 0 && out.len() < limit {
                out.push((o, bits.trailing_zeros()));
                bits &= bits - 1;
            }
            if out.len() >= limit {
                break;
            }
        }
        out
    }

    /// Node `i` asks `peer` for the shards it lacks, as its core decided.
    fn ask_shards(&mut self, i: usize, peer: &str) {
        let (Some(run), Some(&to)) = (self.run.clone(), self.by_id.get(peer)) else {
            return;
        };
        let request = Request::Shards {
            run: run.to_string(),
            have: self.have_of(i),
        };
        let bytes = wire::encode(&request).len() + RPC_OVERHEAD;
        let have = self.nodes[i].held.clone();
        self.rpc(
            Kind::Sync,
            i,
            to,
            bytes,
            Event::SyncAsk { from: i, to, have },
        );
    }

    /// Node `to` answers an ask for shards, if its core lets it: each
    /// answer takes [`ANSWER_TAKES`] to prepare (reading the shards from
    /// disk).
    fn answer_sync(&mut self, from: usize, to: usize, have: &[u64]) {
        let Some(run) = self.run.clone() else {
            return;
        };
        let from_id = self.nodes[from].id.clone();
        let allowed = self.nodes[to].core.begin_shards_answer(&from_id, &run);
        let answer = allowed.is_ok().then(|| {
            let mut keys = self.missing_bits(to, have, MAX_ANSWER_SHARDS + 1);
            let mut more = keys.len() > MAX_ANSWER_SHARDS;
            keys.truncate(MAX_ANSWER_SHARDS);
            let mut shards = Vec::new();
            let mut bytes = 0;
            for (origin, seq) in keys {
                let size = self.nodes[origin].shard_bytes - GOSSIP_OVERHEAD;
                if bytes + size > MAX_ANSWER_BYTES && !shards.is_empty() {
                    more = true;
                    break;
                }
                bytes += size;
                shards.push((origin, seq));
            }
            (shards, more, bytes)
        });
        let bytes = match &answer {
            Some((shards, _, bytes)) => bytes + 8 * shards.len() + RPC_OVERHEAD,
            None => refused_bytes(),
        };
        let answer = answer.map(|(shards, more, _)| (shards, more));
        let takes = if answer.is_some() {
            self.schedule(self.now + ANSWER_TAKES, Event::Answered(to));
            ANSWER_TAKES
        } else {
            0
        };
        self.answer(
            Kind::Sync,
            to,
            from,
            bytes,
            takes,
            Event::SyncAnswer { to: from, answer },
        );
    }

    fn on_sync_answer(&mut self, to: usize, answer: Option<(Vec<(usize, u32)>, bool)>) {
        let Some(run) = self.run.clone() else {
            return;
        };
        let now = duration(self.now);
        let Some((shards, more)) = answer else {
            self.nodes[to].core.shards_ask_failed(&run, now);
            return;
        };
        let mut new = 0;
        for (origin, seq) in shards {
            if self.hold(to, origin, seq) {
                new += 1;
            }
        }
        self.by_sync += new as u64;
        self.nodes[to].core.shards_answered(&run, new, more, now);
    }

    /// Node `i` asks `peer` for the ended runs it does not know.
    fn ask_runs(&mut self, i: usize, peer: &str, known: Vec<String>) {
        let Some(&to) = self.by_id.get(peer) else {
            self.nodes[i].core.runs_ask_failed();
            return;
        };
        let request = Request::Runs { known };
        let bytes = wire::encode(&request).len() + RPC_OVERHEAD;
        let Request::Runs { known } = request else {
            return;
        };
        self.rpc(
            Kind::Sync,
            i,
            to,
            bytes,
            Event::RunsAsk { from: i, to, known },
        );
    }

    /// Node `to` answers with the ended runs `from` does not know.
    fn answer_runs(&mut self, from: usize, to: usize, known: &[String]) {
        let from_id = self.nodes[from].id.clone();
        let runs = self.nodes[to]
            .core
            .runs_unknown_to(&from_id, known)
            .ok()
            .map(|runs| runs.into_iter().filter_map(Run::ended).collect::<Vec<_>>());
        let bytes = match &runs {
            Some(runs) => wire::encode(&Response::Runs { runs: runs.clone() }).len() + RPC_OVERHEAD,
            None => refused_bytes(),
        };
        self.rpc(
            Kind::Sync,
            to,
            from,
            bytes,
            Event::RunsAnswer { to: from, runs },
        );
    }

    fn on_runs_answer(&mut self, to: usize, runs: Option<Vec<EndedRun>>) {
        let Some(runs) = runs else {
            self.nodes[to].core.runs_ask_failed();
            return;
        };
        let at = self.at(to);
        let core = &mut self.nodes[to].core;
        let taken = runs
            .into_iter()
            .filter(|ended| core.runs_mut().adopt(ended.clone(), at) == Ok(true))
            .count();
        core.runs_answered(taken, at.now);
    }

    /// Checks whether the current phase is done, and moves on.
    fn check(&mut self) {
        let elapsed = self.now - self.stage_start;
        match self.stage {
            Stage::Membership => {
                let done = self.membership_done();
                if done || elapsed >= MEMBERSHIP_LIMIT {
                    self.end_phase("membership", done, MEMBERSHIP_LIMIT);
                }
            }
            Stage::Idle => {
                if elapsed >= IDLE {
                    self.end_phase("idle", true, IDLE);
                    self.submit();
                }
            }
            Stage::Leader => {
                let done = self.leader_done();
                if done || elapsed >= LEADER_LIMIT {
                    self.end_phase("leader", done, LEADER_LIMIT);
                }
            }
            Stage::Shards => {
                let n = self.nodes.len();
                let done = self.nodes.iter().all(|node| node.complete == n);
                if done {
                    self.shards_settled = Some(self.now - self.last_shard_at);
                }
                if done || elapsed >= SHARDS_LIMIT {
                    self.end_phase("shards", done, SHARDS_LIMIT);
                    if done {
                        self.freeze();
                    }
                }
            }
            Stage::Frozen => {
                let done = self.frozen_lost();
                if done || elapsed >= FROZEN_LIMIT {
                    self.end_phase("frozen", done, FROZEN_LIMIT);
                }
            }
            Stage::Done => {}
        }
    }

    fn end_phase(&mut self, name: &'static str, done: bool, limit: Micros) {
        let (total, by_kind) = self.net.counters.since(&self.stage_counters);
        let counted = self.now - self.stage_start;
        self.phases.push(PhaseReport {
            name,
            seconds: done.then(|| seconds(counted)),
            limit_s: seconds(limit),
            counted_s: seconds(counted),
            total,
            by_kind,
        });
        self.stage_counters = self.net.counters.clone();
        self.stage_start = self.now;
        if name == "idle" {
            let n = self.nodes.len();
            self.idle_connections =
                Some(Spread::of((0..n).map(|i| self.net.connections(i) as u64)));
        }
        self.stage = match (self.stage, done) {
            (_, false) => Stage::Done,
            (Stage::Membership, true) => Stage::Idle,
            (Stage::Idle, true) => Stage::Leader,
            (Stage::Leader, true) => Stage::Shards,
            (Stage::Shards, true) => Stage::Frozen,
            _ => Stage::Done,
        };
    }

    /// Every node lists every other as live, and has a clock estimate of
    /// each member it watches.
    fn membership_done(&mut self) -> bool {
        let n = self.nodes.len();
        for i in 0..n {
            if self.nodes[i].listed || self.nodes[i].members < n - 1 {
                continue;
            }
            let node = &self.nodes[i];
            let all = self.nodes.iter().enumerate().all(|(j, other)| {
                j == i
                    || node
                        .core
                        .mesh()
                        .member(&other.id)
                        .is_some_and(|m| !m.suspect)
            });
            self.nodes[i].listed = all;
        }
        let listed = self.nodes.iter().all(|node| node.listed);
        if listed && self.listed_at.is_none() {
            self.listed_at = Some(self.now);
        }
        let now = duration(self.now);
        listed
            && self.nodes.iter().all(|node| {
                let mesh = node.core.mesh();
                mesh.watched()
                    .iter()
                    .all(|id| mesh.clock(id, now).is_some())
            })
    }

    /// Freezes a node drawn at random, as SIGSTOP would: from now on it
    /// does nothing and reads nothing.
    fn freeze(&mut self) {
        let n = self.nodes.len();
        let f = self.rng.below(n as u64) as usize;
        self.frozen = Some(f);
        self.frozen_node = Some(FrozenNode {
            region: region_name(self.net.region(f)),
            watchers: self.watchers(f),
        });
    }

    /// Every other node holds the frozen one as suspected, or no longer as
    /// a member.
    fn frozen_lost(&self) -> bool {
        let Some(f) = self.frozen else {
            return false;
        };
        let id = &self.nodes[f].id;
        self.nodes
            .iter()
            .enumerate()
            .all(|(i, node)| i == f || node.core.mesh().member(id).is_none_or(|m| m.suspect))
    }

    /// How many nodes watch node `f`.
    fn watchers(&self, f: usize) -> usize {
        let id = &self.nodes[f].id;
        self.nodes
            .iter()
            .filter(|node| node.core.mesh().watched().contains(id))
            .count()
    }

    /// Submits the run to a node (its core picks the candidates).
    fn submit(&mut self) {
        let n = self.nodes.len();
        let i = self.rng.below(n as u64) as usize;
        let run = format!("sim-{:08x}", self.rng.next_u64() as u32);
        let mut spec = RunSpec::new(
            "ab".repeat(32),
            Executor::ConstantVus {
                vus: u32::try_from(n * 10).unwrap_or(u32::MAX),
                duration: Duration::from_secs(u64::from(self.config.intervals)),
            },
        );
        spec.graceful_stop = Duration::from_secs(1);
        self.run = Some(Arc::from(run.as_str()));
        let at = self.at(i);
        self.nodes[i].module.held = true;
        if self.nodes[i].core.submit(run, spec, None, None, at).is_ok() {
            self.carry_out(i);
        }
    }

    /// Every node names the same leader and holds the same armed plan.
    fn leader_done(&mut self) -> bool {
        let Some(run) = self.run.clone() else {
            return false;
        };
        let now = duration(self.now);
        let mut leaders = BTreeSet::new();
        let mut arms = BTreeSet::new();
        for node in &self.nodes {
            leaders.insert(node.core.leader(&run, now));
            let armed = node.core.runs().get(&run).and_then(|r| r.armed.as_ref());
            arms.insert(armed.map(|a| (a.plan, a.t0_ns)));
        }
        let agreed = leaders.len() == 1 && !leaders.contains(&None);
        if agreed && self.leader_at.is_none() {
            self.leader_at = Some(self.now - self.stage_start);
        }
        agreed && arms.len() == 1 && !arms.contains(&None)
    }
}

/// A region's name: real ones first.
fn region_name(i: usize) -> String {
    const NAMES: [&str; 8] = ["fra", "nrt", "ewr", "syd", "gru", "sin", "iad", "lhr"];
    NAMES
        .get(i)
        .map(|s| (*s).to_owned())
        .unwrap_or_else(|| format!("r{i}"))
}

/// A peer id of the real length (`12D3KooW` and 44 base58 characters).
fn peer_id(rng: &mut Rng) -> String {
    const B58: &[u8] = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
    let mut id = String::from("12D3KooW");
    for _ in 0..44 {
        id.push(B58[rng.below(B58.len() as u64) as usize] as char);
    }
    id
}

fn full_mask(intervals: u32) -> u64 {
    if intervals + 1 >= 64 {
        u64::MAX
    } else {
        (1u64 << (intervals + 1)) - 1
    }
}

fn refused_bytes() -> usize {
    wire::encode(&Response::Refused {
        reason: "not a member yet".into(),
    })
    .len()
        + RPC_OVERHEAD
}

/// The encoded size of one of `node`'s shards: a second of an HTTP run's
/// usual series.
fn shard_size(run: &str, node: &Node) -> usize {
    let mut series = SeriesSet::new();
    let mut rng = Rng::seeded(node.skew_ns as u64);
    let duration = SeriesKey::new(
        "http_req_duration",
        [
            ("method".to_owned(), "GET".to_owned()),
            ("status".to_owned(), "200".to_owned()),
        ],
    );
    for _ in 0..500 {
        let ms = 5.0 + rng.below(200_000) as f64 / 1000.0;
        let _ = series.add(&duration, MetricKind::Trend, ms);
    }
    for (name, kind) in [
        ("http_reqs", MetricKind::Counter),
        ("iterations", MetricKind::Counter),
        ("http_req_failed", MetricKind::Rate),
        ("vus", MetricKind::Gauge),
    ] {
        let _ = series.add(&SeriesKey::new(name, []), kind, 1.0);
    }
    Shard {
        notes: Vec::new(),
        run_id: run.to_owned(),
        node: node.id.clone(),
        name: node.core.mesh().me().name.clone(),
        region: node.core.mesh().me().region.clone(),
        seq: 0,
        start_ms: 0,
        end_ms: 1000,
        last: false,
        series,
    }
    .encode()
    .len()
}

/// This process's resident memory, from `/proc/self/status` (Linux).
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
