//! The simulated network: delays between regions, connections, the
//! gossipsub mesh over them, the messages in flight and what every node
//! sent and received. See the parent module for the model.

use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::{KindTraffic, Spread};
use crate::core::membership::Heartbeat;
use crate::core::rng::Rng;
use crate::core::wire::{RunEnvelope, Suspicion};

/// Virtual time, in microseconds.
pub type Micros = u64;

/// gossipsub's `mesh_n`: the mesh degree a node grafts up to.
const MESH_N: usize = 6;
/// gossipsub's `mesh_n_low`: below it, a node grafts.
const MESH_N_LOW: usize = 5;
/// gossipsub's `mesh_n_high`: above it, a node prunes down to [`MESH_N`].
const MESH_N_HIGH: usize = 12;
/// gossipsub's `idontwant_message_size_threshold`.
const IDONTWANT_OVER: usize = 1000;
/// Bytes of one GRAFT, PRUNE or IDONTWANT.
const CONTROL_BYTES: u64 = 64;
/// One-way delay within a region, µs.
const LOCAL_DELAY: Micros = 500;

/// What a transmission is, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Gossip on the members topic.
    Heartbeat,
    /// Gossip on the suspects topic.
    Suspect,
    /// Asks for a member's list, and the answers.
    Members,
    /// Gossip on the runs topic.
    Runs,
    /// Shards a worker sends its leader.
    Shards,
    /// Clock exchanges.
    Clock,
    /// Module fetches.
    Module,
    /// Anti-entropy asks and answers.
    Sync,
    /// gossipsub's GRAFT, PRUNE and IDONTWANT.
    Control,
}

const KINDS: [Kind; 9] = [
    Kind::Heartbeat,
    Kind::Suspect,
    Kind::Members,
    Kind::Runs,
    Kind::Shards,
    Kind::Clock,
    Kind::Module,
    Kind::Sync,
    Kind::Control,
];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Heartbeat => "heartbeat",
            Kind::Suspect => "suspect",
            Kind::Members => "members",
            Kind::Runs => "runs",
            Kind::Shards => "shards",
            Kind::Clock => "clock",
            Kind::Module => "module",
            Kind::Sync => "sync",
            Kind::Control => "control",
        }
    }
}

/// Sent and received, in messages and bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct Counter {
    sent: u64,
    received: u64,
    bytes_sent: u64,
    bytes_received: u64,
}

/// What every node sent and received, by kind.
#[derive(Debug, Clone)]
pub struct Counters(Vec<[Counter; KINDS.len()]>);

impl Counters {
    fn new(nodes: usize) -> Counters {
        Counters(vec![[Counter::default(); KINDS.len()]; nodes])
    }

    /// Counts one transmission of `bytes` from `from` to `to`; `arrived`
    /// is false when it was lost on the way.
    pub fn count(&mut self, kind: Kind, from: usize, to: usize, bytes: usize, arrived: bool) {
        let bytes = bytes as u64;
        let c = &mut self.0[from][kind as usize];
        c.sent += 1;
        c.bytes_sent += bytes;
        if arrived {
            let c = &mut self.0[to][kind as usize];
            c.received += 1;
            c.bytes_received += bytes;
        }
    }

    /// The traffic since `before`, per kind (kinds with none left out) and
    /// all together.
    pub fn since(&self, before: &Counters) -> (KindTraffic, Vec<KindTraffic>) {
        let delta = |node: usize, kind: usize| {
            let (a, b) = (self.0[node][kind], before.0[node][kind]);
            Counter {
                sent: a.sent - b.sent,
                received: a.received - b.received,
                bytes_sent: a.bytes_sent - b.bytes_sent,
                bytes_received: a.bytes_received - b.bytes_received,
            }
        };
        let nodes = self.0.len();
        let traffic = |name: &'static str, get: &dyn Fn(usize) -> Counter| {
            let all: Vec<Counter> = (0..nodes).map(get).collect();
            KindTraffic {
                kind: name,
                sent: Spread::of(all.iter().map(|c| c.sent)),
                received: Spread::of(all.iter().map(|c| c.received)),
                bytes_sent: Spread::of(all.iter().map(|c| c.bytes_sent)),
                bytes_received: Spread::of(all.iter().map(|c| c.bytes_received)),
            }
        };
        let by_kind = KINDS
            .iter()
            .map(|kind| traffic(kind.name(), &|n| delta(n, *kind as usize)))
            .filter(|t| t.sent.max > 0 || t.received.max > 0)
            .collect();
        let total = traffic("all", &|n| {
            (0..KINDS.len()).fold(Counter::default(), |acc, k| {
                let d = delta(n, k);
                Counter {
                    sent: acc.sent + d.sent,
                    received: acc.received + d.received,
                    bytes_sent: acc.bytes_sent + d.bytes_sent,
                    bytes_received: acc.bytes_received + d.bytes_received,
                }
            })
        });
        (total, by_kind)
    }
}

/// What a gossip message carries.
#[derive(Debug, Clone)]
pub enum Payload {
    /// A heartbeat.
    Heartbeat(Arc<Heartbeat>),
    /// A suspicion.
    Suspect(Arc<Suspicion>),
    /// A run message.
    Run(Arc<RunEnvelope>),
}

/// One gossip message while copies of it are in flight.
#[derive(Debug)]
pub struct Message {
    /// Its author.
    pub author: usize,
    /// What it is.
    pub kind: Kind,
    /// What it carries.
    pub payload: Payload,
    /// Its size on the wire.
    pub bytes: usize,
    /// Per node, when its first copy arrives (or arrived): later copies are
    /// duplicates. `Micros::MAX` while none is on its way.
    pub first: Vec<Micros>,
    /// Copies scheduled to arrive.
    pub pending: u32,
}

/// A transmission the network decided to deliver.
#[derive(Debug, Clone, Copy)]
pub struct Delivery {
    /// The message.
    pub msg: u64,
    /// Who sent this copy.
    pub from: usize,
    /// Who gets it.
    pub to: usize,
    /// When.
    pub at: Micros,
}

/// Delays, connections, the gossip mesh, messages in flight and counters.
pub struct Network {
    rng: Rng,
    loss: f64,
    region: Vec<usize>,
    /// One-way delay between regions, µs.
    delay: Vec<Vec<Micros>>,
    connected: Vec<Vec<usize>>,
    is_connected: Vec<Vec<u64>>,
    mesh: Vec<Vec<usize>>,
    /// When each open connection opened, by `(lower, higher)` index.
    opened: FxHashMap<(usize, usize), Micros>,
    messages: FxHashMap<u64, Message>,
    next_msg: u64,
    /// Every transmission, by node and kind.
    pub counters: Counters,
}

impl Network {
    /// A network of nodes in `region` (by index), with no connections.
    pub fn new(region: Vec<usize>, regions: usize, loss: f64, rng: &mut Rng) -> Network {
        let mut delay = vec![vec![LOCAL_DELAY; regions]; regions];
        for (a, b) in (0..regions).flat_map(|a| (a + 1..regions).map(move |b| (a, b))) {
            let d = (20 + rng.below(131)) * 1000;
            delay[a][b] = d;
            delay[b][a] = d;
        }
        let nodes = region.len();
        Network {
            rng: Rng::seeded(rng.next_u64()),
            loss,
            region,
            delay,
            connected: vec![Vec::new(); nodes],
            is_connected: vec![vec![0; nodes.div_ceil(64)]; nodes],
            mesh: vec![Vec::new(); nodes],
            opened: FxHashMap::default(),
            messages: FxHashMap::default(),
            next_msg: 0,
            counters: Counters::new(nodes),
        }
    }

    /// The one-way delay of one message from `a` to `b`, jitter included.
    pub fn latency(&mut self, a: usize, b: usize) -> Micros {
        let base = self.delay[self.region[a]][self.region[b]];
        base + self.rng.below(base / 10 + 1)
    }

    /// The region of node `a`, by index.
    pub fn region(&self, a: usize) -> usize {
        self.region[a]
    }

    /// The one-way delay from `a` to `b`, without jitter.
    pub fn base_latency(&self, a: usize, b: usize) -> Micros {
        self.delay[self.region[a]][self.region[b]]
    }

    /// Whether `a` and `b` are connected.
    pub fn connected(&self, a: usize, b: usize) -> bool {
        self.is_connected[a][b / 64] & (1 << (b % 64)) != 0
    }

    /// Opens a connection at `now`; `false` if there was one.
    pub fn connect(&mut self, a: usize, b: usize, now: Micros) -> bool {
        if a == b || self.connected(a, b) {
            return false;
        }
        for (x, y) in [(a, b), (b, a)] {
            self.is_connected[x][y / 64] |= 1 << (y % 64);
            self.connected[x].push(y);
        }
        self.opened.insert((a.min(b), a.max(b)), now);
        true
    }

    /// Closes the connection of `a` and `b`, and takes each out of the
    /// other's gossip mesh.
    pub fn disconnect(&mut self, a: usize, b: usize) {
        if !self.connected(a, b) {
            return;
        }
        for (x, y) in [(a, b), (b, a)] {
            self.is_connected[x][y / 64] &= !(1 << (y % 64));
            self.connected[x].retain(|p| *p != y);
            self.mesh[x].retain(|p| *p != y);
        }
        self.opened.remove(&(a.min(b), a.max(b)));
    }

    /// How many connections node `a` has open.
    pub fn connections(&self, a: usize) -> usize {
        self.connected[a].len()
    }

    /// The peers of `a` whose connection opened `idle` or longer before
    /// `now` and that are not in its gossip mesh: gossipsub keeps its mesh
    /// peers' connections alive, and the simulator's requests need no
    /// connection, so these are the connections libp2p's idle timeout
    /// closes unless a side keeps them.
    pub fn idle_peers(&self, a: usize, now: Micros, idle: Micros) -> Vec<usize> {
        self.connected[a]
            .iter()
            .copied()
            .filter(|b| {
                !self.mesh[a].contains(b)
                    && self
                        .opened
                        .get(&(a.min(*b), a.max(*b)))
                        .is_some_and(|at| at + idle <= now)
            })
            .collect()
    }

    /// gossipsub's heartbeat at node `a`: graft up to [`MESH_N`] below
    /// [`MESH_N_LOW`], prune to [`MESH_N`] above [`MESH_N_HIGH`]. The other
    /// side takes a GRAFT at once; it prunes on its own heartbeat.
    pub fn maintain_mesh(&mut self, a: usize) {
        if self.mesh[a].len() < MESH_N_LOW {
            let mut options: Vec<usize> = self.connected[a]
                .iter()
                .copied()
                .filter(|p| !self.mesh[a].contains(p))
                .collect();
            while self.mesh[a].len() < MESH_N && !options.is_empty() {
                let p = options.swap_remove(self.rng.below(options.len() as u64) as usize);
                self.mesh[a].push(p);
                self.mesh[p].push(a);
                self.counters
                    .count(Kind::Control, a, p, CONTROL_BYTES as usize, true);
            }
        } else if self.mesh[a].len() > MESH_N_HIGH {
            while self.mesh[a].len() > MESH_N {
                let i = self.rng.below(self.mesh[a].len() as u64) as usize;
                let p = self.mesh[a].swap_remove(i);
                self.mesh[p].retain(|x| *x != a);
                self.counters
                    .count(Kind::Control, a, p, CONTROL_BYTES as usize, true);
            }
        }
    }

    /// Publishes a message of `author` to every connected peer
    /// (`flood_publish`); returns the copies to schedule.
    pub fn publish(
        &mut self,
        author: usize,
        kind: Kind,
        payload: Payload,
        bytes: usize,
        now: Micros,
    ) -> Vec<Delivery> {
        let id = self.next_msg;
        self.next_msg += 1;
        let mut first = vec![Micros::MAX; self.region.len()];
        first[author] = now;
        self.messages.insert(
            id,
            Message {
                author,
                kind,
                payload,
                bytes,
                first,
                pending: 0,
            },
        );
        let mut out = Vec::new();
        for k in 0..self.connected[author].len() {
            let to = self.connected[author][k];
            self.transmit(id, author, to, now, &mut out);
        }
        self.forget_if_done(id);
        out
    }

    /// One copy of message `id` from `from` to `to`, sent at `now`.
    fn transmit(&mut self, id: u64, from: usize, to: usize, now: Micros, out: &mut Vec<Delivery>) {
        let lost = self.rng.chance(self.loss);
        let at = now + self.latency(from, to);
        let Some(m) = self.messages.get_mut(&id) else {
            return;
        };
        self.counters.count(m.kind, from, to, m.bytes, !lost);
        if !lost && at < m.first[to] {
            m.first[to] = at;
            m.pending += 1;
            out.push(Delivery {
                msg: id,
                from,
                to,
                at,
            });
        }
    }

    /// A copy arrives: `Some` with the message if it is the first copy at
    /// its node (then the caller hands it to the node, and calls
    /// [`Network::forward`] if the node keeps it).
    pub fn arrive(&mut self, d: Delivery) -> Option<(usize, Payload)> {
        let m = self.messages.get_mut(&d.msg)?;
        m.pending -= 1;
        let first = m.first[d.to] == d.at;
        let out = first.then(|| (m.author, m.payload.clone()));
        if !first {
            self.forget_if_done(d.msg);
        }
        out
    }

    /// Node `at_node`, which just got message `d` first and kept it,
    /// forwards it to its mesh peers; for a large message it first tells
    /// them it does not want it (IDONTWANT).
    pub fn forward(&mut self, d: Delivery) -> Vec<Delivery> {
        let mut out = Vec::new();
        let Some(m) = self.messages.get(&d.msg) else {
            return out;
        };
        let (author, large) = (m.author, m.bytes > IDONTWANT_OVER);
        let node = d.to;
        for k in 0..self.mesh[node].len() {
            let p = self.mesh[node][k];
            if p == d.from || p == author {
                continue;
            }
            if large {
                self.counters
                    .count(Kind::Control, node, p, CONTROL_BYTES as usize, true);
                // The peer's own IDONTWANT reached this node in time.
                let peer_first = self
                    .messages
                    .get(&d.msg)
                    .map_or(Micros::MAX, |m| m.first[p]);
                if peer_first
                    .checked_add(self.base_latency(p, node))
                    .is_some_and(|t| t <= d.at)
                {
                    continue;
                }
            }
            self.transmit(d.msg, node, p, d.at, &mut out);
        }
        self.forget_if_done(d.msg);
        out
    }

    /// Drops the message once no copy of it is on its way.
    pub fn forget_if_done(&mut self, id: u64) {
        if self.messages.get(&id).is_some_and(|m| m.pending == 0) {
            self.messages.remove(&id);
        }
    }
}
