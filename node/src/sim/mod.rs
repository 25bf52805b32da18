//! A deterministic simulator of a whole mesh under virtual time: the answer
//! to "what happens with 1,000 nodes" on a machine that cannot start them.
//!
//! It drives every node's [`NodeCore`], the very core a node's event loop
//! drives: its mesh (announcements, watches, suspicions, members' lists,
//! clock exchanges, dialing), its
//! runs (the run, its leader, plan, arm, start and finish), the view of the
//! mesh the runs decide on, and the anti-entropy schedule (when to ask whom
//! for missing shards and for unknown runs, how many asks to answer at
//! once), with the real wire types. It replaces only what lies outside the
//! core: sockets, libp2p and the engine, and holds no copy of a decision
//! the core makes. One seed gives one run, event for event.
//!
//! It measures four phases, one after the other:
//!
//! 1. **membership**: every node starts within the first second, dialing one
//!    of three seed nodes; the phase ends when every node lists every other
//!    as a live member and holds a clock estimate of each it watches;
//! 2. **idle**: 10 s of the converged mesh with nothing to do, what it
//!    costs between runs;
//! 3. **leader**: a run is submitted to one node; the phase ends when every
//!    node names the same leader and holds the same armed plan;
//! 4. **shards**: every node runs its share for `intervals` seconds, sends
//!    a shard per interval and its last one to the run's leader (as its
//!    core says), then says it is done; the leader gossips the run's
//!    progress every second (with made-up figures of the real size); once
//!    the run is finished anti-entropy asks peers for what is missing. The
//!    phase ends when every node holds every shard.
//!
//! For each phase it counts every transmission per node, by kind, in
//! messages and bytes.
//!
//! # The model
//!
//! - **Time** is virtual, in microseconds. Each node's core is given the
//!   time when its [`NodeCore::poll_timeout`] asks, from a phase of its own
//!   so ticks do not all fall on one instant; its runs tick every
//!   [`SimConfig::tick`] (100 ms) and its mesh every [`SimConfig::mesh_tick`]
//!   (100 ms). The real event loop ticks both every 50 ms; the mesh core's
//!   fastest timer is 100 ms (the clock exchanges of a run's leader and
//!   workers before the start), so a slower tick changes little. A run's
//!   steps may wait up to a tick longer than on a real node.
//! - **Clocks**: each node's wall clock is off by up to ±50 ms, so clock
//!   exchanges and the start instant are tested against a real skew.
//! - **Latency**: regions get one-way delays of 20 to 150 ms between them
//!   (drawn from the seed, symmetric), 0.5 ms within one, plus up to 10 %
//!   jitter per message. Answers to requests (a module, what a node holds
//!   of a run, shards), the large transfers, leave a node one at a time at
//!   [`UPLINK_BYTES_PER_S`] (1 Gbit/s) before that delay; gossip and asks
//!   are not limited by bandwidth or queued.
//! - **Connections**: a dial takes two round trips (TCP, then the mesh key
//!   and Noise handshakes) and always succeeds once the other node is up.
//!   Connections are never lost.
//! - **Gossip** follows libp2p gossipsub with the settings of
//!   `net/behaviour.rs` (defaults but for a 500 ms heartbeat): each node
//!   keeps a random mesh of its connected peers, grafting up to D = 6 when
//!   it has fewer than 5 and pruning to 6 above 12 on every gossipsub
//!   heartbeat; it publishes its own messages to *every* connected peer
//!   (`flood_publish`, on by default), and forwards a message it sees for
//!   the first time to its mesh peers, but not to the peer it came from or
//!   its author; duplicates are dropped by message id. For messages over
//!   1,000 bytes it sends IDONTWANT to its mesh peers (gossipsub 1.2), and a
//!   peer skips a forward once that IDONTWANT has had time to arrive. One
//!   mesh serves the three topics (each topic has its own in gossipsub, with
//!   the same sizes). Each message is charged its encoded size plus
//!   [`GOSSIP_OVERHEAD`] bytes for gossipsub's framing and signature.
//! - **Loss**: each gossip transmission is lost with probability
//!   [`SimConfig::loss`]; since every message reaches a node along several
//!   paths, this alone rarely loses one. [`SimConfig::drop`] is the chance
//!   that a node discards a message it sees for the first time (what an
//!   overloaded node whose queues are full does): later copies are then
//!   duplicates, so the message is lost to that node for good, and only
//!   anti-entropy brings a shard back. Request-response (a shard sent to
//!   the leader among it) rides on TCP and is never lost.
//! - **Preparing a share** fetches the module from the sources the core
//!   names, in order and round after round, with the core's
//!   [`FileFetch`](crate::core::module_spread::FileFetch), as a node does
//!   (the node's parent in the plan's tree, then the proposer:
//!   [`crate::core::module_spread`]), as one answer of
//!   [`MODULE_BYTES`], then compiles it in 200 ms. A node asked for the
//!   module before it holds it keeps the ask with the core's
//!   [`ModuleAsks`](crate::core::module_spread::ModuleAsks), as a node
//!   does, and answers once its own fetch is done; one it refuses sends
//!   the asker to its next source.
//! - **Shards** are real [`Shard`]s encoded once per node to know their
//!   size; what a node holds is kept as a bit per (node, sequence number).
//!
//! # What is left out
//!
//! Lazy gossip (IHAVE/IWANT every gossipsub heartbeat, to max(6, 25 %) of
//! the non-mesh peers) is not simulated, nor counted: in a full connection
//! graph of N nodes it is another control flow that grows with N. Also left
//! out: peer scoring, prune backoff and peer exchange, bandwidth limits
//! but on answers, CPU limits beyond the core's own (it prepares 4 answers to shard asks at a
//! time, each taking 20 ms here, and refuses more as busy), identify and
//! ping, crashes and partitions (the core's tests cover those).

mod network;
mod queue;
mod world;

use std::time::Duration;

use serde::Serialize;

#[cfg(doc)]
use crate::core::{node::NodeCore, shard::Shard};

/// What one gossip message costs on top of its payload: gossipsub's
/// protobuf framing, topic, sequence number, author and signature.
pub const GOSSIP_OVERHEAD: usize = 140;
/// What one request or answer costs on top of its payload: a yamux stream
/// and the protocol negotiation.
pub const RPC_OVERHEAD: usize = 60;
/// The size of the scenario module every node fetches.
pub const MODULE_BYTES: usize = 512 << 10;
/// How fast a node sends answers: 1 Gbit/s, one answer at a time.
pub const UPLINK_BYTES_PER_S: u64 = 125_000_000;
/// The most nodes a simulation takes: the most a mesh holds, a node and
/// [`MAX_MEMBERS`](crate::core::membership::MAX_MEMBERS) members.
pub const MAX_NODES: usize = crate::core::membership::MAX_MEMBERS + 1;
/// The simulator's memory for each pair of nodes: every node holds its
/// view of every other (1.62-1.68 KB measured at 1,000 to 3,000 nodes,
/// docs/benchmarks.md).
pub const BYTES_PER_PAIR: u64 = 1_700;

/// About how much memory a simulation of `nodes` takes at its peak.
pub fn memory_needed(nodes: usize) -> u64 {
    let n = nodes as u64;
    n.saturating_mul(n.saturating_sub(1))
        .saturating_mul(BYTES_PER_PAIR)
}

/// The most regions a simulation takes.
pub const MAX_REGIONS: usize = 16;
/// The most intervals a share may run (a node's shards are kept as bits of
/// a 64-bit word, its last shard included).
pub const MAX_INTERVALS: u32 = 60;

/// What to simulate.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// How many nodes.
    pub nodes: usize,
    /// The seed of every random draw.
    pub seed: u64,
    /// The chance that one gossip transmission is lost.
    pub loss: f64,
    /// The chance that a node discards a message it sees for the first time.
    pub drop: f64,
    /// How many regions the nodes are spread over, in turn.
    pub regions: usize,
    /// How many one-second intervals each share runs (each gives a shard;
    /// then comes the last shard).
    pub intervals: u32,
    /// How often each node's runs are ticked (its scan for missing shards
    /// runs every 500 ms).
    pub tick: Duration,
    /// How often each node's mesh core is ticked.
    pub mesh_tick: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            nodes: 1000,
            seed: 1,
            loss: 0.01,
            drop: 0.01,
            regions: 4,
            intervals: 10,
            tick: Duration::from_millis(100),
            mesh_tick: Duration::from_millis(100),
        }
    }
}

/// Why a simulation cannot start.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SimError {
    /// Too few or too many nodes.
    #[error("--nodes {0}: give 2 to {MAX_NODES}")]
    Nodes(usize),
    /// Too few or too many regions.
    #[error("--regions {0}: give 1 to {MAX_REGIONS}, and no more than --nodes")]
    Regions(usize),
    /// A probability outside [0, 1).
    #[error("--{0} {1}: give a probability from 0 up to (not including) 1, e.g. 0.01")]
    Probability(&'static str, f64),
    /// Too few or too many intervals.
    #[error("--intervals {0}: give 1 to {MAX_INTERVALS}")]
    Intervals(u32),
    /// A tick of zero or of more than a second.
    #[error("tick of {0:?}: give 1 ms to 1 s")]
    Tick(Duration),
}

impl SimConfig {
    /// Checks that the simulation can run.
    pub fn validate(&self) -> Result<(), SimError> {
        if !(2..=MAX_NODES).contains(&self.nodes) {
            return Err(SimError::Nodes(self.nodes));
        }
        if !(1..=MAX_REGIONS).contains(&self.regions) || self.regions > self.nodes {
            return Err(SimError::Regions(self.regions));
        }
        for (name, p) in [("loss", self.loss), ("drop", self.drop)] {
            if !(0.0..1.0).contains(&p) {
                return Err(SimError::Probability(name, p));
            }
        }
        if !(1..=MAX_INTERVALS).contains(&self.intervals) {
            return Err(SimError::Intervals(self.intervals));
        }
        for tick in [self.tick, self.mesh_tick] {
            if tick < Duration::from_millis(1) || tick > Duration::from_secs(1) {
                return Err(SimError::Tick(tick));
            }
        }
        Ok(())
    }
}

/// A number over the nodes: its mean and its largest value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Spread {
    /// The mean over the nodes.
    pub mean: f64,
    /// The largest.
    pub max: u64,
}

impl Spread {
    pub(crate) fn of(values: impl Iterator<Item = u64>) -> Spread {
        let (mut sum, mut n, mut max) = (0u64, 0u64, 0u64);
        for v in values {
            sum += v;
            n += 1;
            max = max.max(v);
        }
        Spread {
            mean: if n == 0 { 0.0 } else { sum as f64 / n as f64 },
            max,
        }
    }
}

/// The traffic of one kind of message in one phase, per node.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KindTraffic {
    /// Which kind: `heartbeat`, `suspect`, `runs`, `shards` (gossip
    /// topics), `clock` (the watches' asks and clock exchanges), `members`
    /// (asks for a member's list), `module`, `sync` (requests and answers),
    /// `control` (GRAFT, PRUNE, IDONTWANT).
    pub kind: &'static str,
    /// Messages sent.
    pub sent: Spread,
    /// Messages received, duplicates included.
    pub received: Spread,
    /// Bytes sent.
    pub bytes_sent: Spread,
    /// Bytes received.
    pub bytes_received: Spread,
}

/// One phase: how long it took and what it cost.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PhaseReport {
    /// The phase's name.
    pub name: &'static str,
    /// Virtual seconds until it was done; `None` if it was not done within
    /// `limit_s`.
    pub seconds: Option<f64>,
    /// The most virtual seconds it was given.
    pub limit_s: f64,
    /// Virtual seconds the traffic below was counted over.
    pub counted_s: f64,
    /// Its traffic, all kinds together.
    pub total: KindTraffic,
    /// Its traffic by kind, kinds with none left out.
    pub by_kind: Vec<KindTraffic>,
}

/// The node frozen in the last phase.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FrozenNode {
    /// Its region.
    pub region: String,
    /// How many nodes watched it as it froze.
    pub watchers: usize,
}

/// What a simulation found.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimReport {
    /// Nodes simulated.
    pub nodes: usize,
    /// The seed.
    pub seed: u64,
    /// Loss per gossip transmission.
    pub loss: f64,
    /// Chance a node discards a message it sees first.
    pub drop: f64,
    /// Regions.
    pub regions: usize,
    /// Intervals per share.
    pub intervals: u32,
    /// Membership: from the start until every node lists every other and
    /// has a clock estimate of each.
    pub membership: PhaseReport,
    /// Within membership: virtual seconds until every node listed every
    /// other as live (clock estimates aside).
    pub members_listed_s: Option<f64>,
    /// Idle: 10 virtual seconds of the converged mesh before the run.
    pub idle: PhaseReport,
    /// Connections open per node at the end of the idle phase.
    pub idle_connections: Option<Spread>,
    /// Leader: from the submission until every node holds the same armed
    /// plan.
    pub leader: PhaseReport,
    /// Within leader: virtual seconds until every node named the same
    /// leader.
    pub leader_agreed_s: Option<f64>,
    /// Shards: from the arm until every node holds every shard.
    pub shards: PhaseReport,
    /// Shards in the run (nodes × (intervals + 1)).
    pub shards_total: u64,
    /// Virtual seconds from the last shard's publication to every shard
    /// everywhere.
    pub shards_after_last_s: Option<f64>,
    /// Shards nodes got from anti-entropy rather than gossip.
    pub shards_by_sync: u64,
    /// Largest gap between two nodes' real start instants, ms.
    pub start_spread_ms: Option<f64>,
    /// Frozen: from one node's freeze (SIGSTOP, after the run) until every
    /// other node holds it as suspected.
    pub frozen: PhaseReport,
    /// The node frozen.
    pub frozen_node: Option<FrozenNode>,
    /// Members suspected after membership converged (false suspicions:
    /// no node fails here).
    pub suspicions: u64,
    /// Events the simulator processed.
    pub events: u64,
    /// Virtual seconds simulated.
    pub virtual_s: f64,
    /// Real seconds the simulation took.
    pub wall_s: f64,
}

/// Runs a simulation.
pub fn simulate(config: &SimConfig) -> Result<SimReport, SimError> {
    config.validate()?;
    Ok(world::World::new(config).run(None))
}

/// Where a simulation under way stands.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// Real seconds since it started.
    pub wall_s: f64,
    /// Virtual seconds simulated.
    pub virtual_s: f64,
    /// The phase it is in.
    pub phase: &'static str,
    /// How many nodes.
    pub nodes: usize,
    /// The members a node lists, on average.
    pub members_mean: f64,
    /// Nodes that hold every shard (in the `shards` phase and after).
    pub complete: usize,
    /// Events processed.
    pub events: u64,
    /// The simulator's resident memory, where the system says it.
    pub resident_bytes: Option<u64>,
}

/// Runs a simulation as [`simulate`] does, and hands `show` where it stands
/// after every `every` of real time: a simulation of thousands of nodes
/// takes minutes.
pub fn simulate_showing(
    config: &SimConfig,
    every: Duration,
    show: &mut dyn FnMut(&Progress),
) -> Result<SimReport, SimError> {
    config.validate()?;
    Ok(world::World::new(config).run(Some((every, show))))
}

#[cfg(test)]
mod tests;
