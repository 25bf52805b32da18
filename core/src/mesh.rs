//! One node's view of the mesh, as a state machine with no I/O.
//!
//! [`MeshCore`] ties together what a running node does every moment it is up:
//!
//! - it announces its [`Heartbeat`] to the whole mesh when it starts and
//!   whenever what it says changes (and refutes a suspicion of itself the
//!   same way), never on a timer: the members topic carries changes only;
//! - it **watches** [`MeshConfig::watch`] members: the ones just before it
//!   on a ring of every member ordered by a hash of its id, so every node
//!   is watched by about as many others, whatever the mesh's size. It asks
//!   each of them every second (every 250 ms one that runs a share). The
//!   question is a clock exchange, and the answer carries a [`Pulse`]: the
//!   member is there, and here is its heartbeat if the asker's is old. A
//!   watched member silent too long is suspected, and the suspicion goes to
//!   the whole mesh ([`Action::Suspect`]); the suspect refutes it if it
//!   can, and every node removes it otherwise. So each node's control
//!   traffic stays flat as the mesh grows, where a heartbeat from every
//!   node every second made it grow with the mesh;
//! - it keeps [`Membership`] from the heartbeats, pulses and suspicions it
//!   hears, and learns the members a newcomer cannot have heard announce
//!   from a member's list ([`Action::AskMembers`]): those are leads, which
//!   join once they answer themselves;
//! - it keeps a [`ClockFilter`] per member it watches or runs with
//!   ([`MeshCore::set_clock_peers`]), fed by NTP-style exchanges that it
//!   schedules: a quick burst at first, then a steady pace, so the estimate
//!   is ready soon and follows drift later;
//! - it dials the bootstrap addresses until one answers (with backoff),
//!   resolves the bootstrap names and dials their addresses ([`bootstrap`]),
//!   and dials every member it learns of but is not connected to.
//!
//! The network layer (`fusi_node::net`) feeds it what happened (a heartbeat, a
//! clock answer, a connection) with the current monotonic time, calls
//! [`MeshCore::tick`] often, and carries out the [`Action`]s it returns. Time
//! is a `Duration` since the node started; no clock is read here, so the same
//! code runs under the simulator with hundreds of nodes.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::clock::{ClockFilter, Estimate, Exchange};
use crate::membership::{Event, Heartbeat, Member, Membership, MembershipConfig, PROTOCOL, Pulse};
use crate::wire::{MAX_ADDR_LEN, MAX_LISTEN_ADDRS};

pub mod bootstrap;

use bootstrap::Bootstraps;
pub use bootstrap::{Family, Seed, SeedName};

/// The most members that left a node keeps dialing.
const MAX_DEPARTED: usize = 1024;

/// After a heartbeat changes, it is announced again this long after the
/// first time, and again after the second: an announcement made before the
/// gossip mesh formed reaches no one.
const ANNOUNCE_AGAIN: [Duration; 2] = [Duration::from_secs(1), Duration::from_secs(3)];

/// A suspicion this node's own watch raised is told the mesh again this
/// long after the first time, every second, while the member stays
/// suspected (it did not refute it) and is not yet removed (9 s after its
/// last answer, 5.5 s after the suspicion): gossip is told once, and a node
/// that lost or dropped every copy of the one telling held a frozen member
/// as live until the lists were compared, 30 s on (1,000 simulated nodes,
/// seed 1: 31.1 s for every node to hold it lost). Told again after 1 and
/// 3 s only, one node of 1,000 that drops 1 % of what it sees missed both
/// of the first two tellings about once in ten freezes, and held the member
/// live until 5.9 s; where nodes drop 10 %, one node of 100 missed all
/// three in one freeze of ten, and held it live for 39.6 s.
const SUSPECT_AGAIN: [Duration; 5] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(3),
    Duration::from_secs(4),
    Duration::from_secs(5),
];

/// The most suspicions waiting to be told again; past it, the oldest go.
const MAX_SUSPECT_AGAIN: usize = 64;

/// The least time between two refutations of suspicions of this node.
const REFUTE_EVERY: Duration = Duration::from_secs(1);

/// How often a node looks for members it lost its connection to (each is
/// then dialed at its own backoff, [`MeshConfig::redial_min`] at the least).
const REDIAL_SCAN_EVERY: Duration = Duration::from_secs(1);

/// Between two asks for a member's list, to find the members whose
/// announcements this node missed.
const MEMBERS_SYNC_EVERY: Duration = Duration::from_secs(30);

/// The least time between two asks for a member's list that a new
/// connection prompts.
const MEMBERS_SYNC_MIN: Duration = Duration::from_secs(5);

/// How long after its start a node compares lists every
/// [`MEMBERS_SYNC_MIN`] until one agrees with its own.
const MEMBERS_JOINING: Duration = Duration::from_secs(30);

/// Ticks this far apart mean the node stood still in between.
const STALL: Duration = Duration::from_millis(500);

/// The most heartbeats in one answer to a members ask.
pub const MAX_MEMBERS_ANSWER: usize = 2048;

/// About the most bytes of heartbeats in one answer to a members ask, well
/// within the answer's bound ([`crate::wire::MAX_SHARDS_RESPONSE_BYTES`]).
const MEMBERS_ANSWER_BYTES: usize = 768 << 10;

/// How long after a step of its own clock a node waits before it trusts
/// clock estimates again: a heartbeat (every second) tells the members,
/// which then sample it every 200 ms.
const CLOCK_SETTLE: Duration = Duration::from_secs(2);

/// What this node says about itself in every heartbeat.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalNode {
    /// Its peer id.
    pub id: String,
    /// Its human name.
    pub name: String,
    /// Its region.
    pub region: String,
    /// When it started (wall clock, ns since the Unix epoch).
    pub boot: u64,
    /// CPU cores.
    pub cores: u32,
    /// The most VUs it will run.
    pub vu_limit: u32,
    /// Software version.
    pub version: String,
}

/// This node's current load, measured by the caller.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Health {
    /// CPU use, summed over cores (1.0 = one core busy).
    pub cpu: f32,
    /// Open sockets.
    pub sockets: u32,
}

/// Timings of the mesh core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MeshConfig {
    /// Between two asks of a watched member.
    pub heartbeat_every: Duration,
    /// Between two asks of a watched member that runs a share.
    pub busy_heartbeat_every: Duration,
    /// How many members each node watches.
    pub watch: usize,
    /// Failure detection.
    pub membership: MembershipConfig,
    /// Between clock exchanges with a member while its first samples come in.
    pub clock_fast: Duration,
    /// How many samples are gathered at the fast pace.
    pub clock_fast_samples: u32,
    /// Between clock exchanges with a run's leader or worker while its
    /// first samples come in (the network layer must tick at least this
    /// often).
    pub run_clock_fast: Duration,
    /// How many samples of a run's leader or worker are gathered at that
    /// pace.
    pub run_clock_fast_samples: u32,
    /// Between clock exchanges with a member after that.
    pub clock_every: Duration,
    /// Samples kept per member.
    pub clock_window: usize,
    /// Samples older than this are forgotten, so estimates follow drift.
    pub clock_max_age: Duration,
    /// First wait before dialing an address again.
    pub redial_min: Duration,
    /// Longest wait before dialing an address again.
    pub redial_max: Duration,
    /// How long a member that left is still dialed now and then, so that
    /// the two sides of a healed partition find each other again.
    pub forget_after: Duration,
}

impl Default for MeshConfig {
    fn default() -> Self {
        MeshConfig {
            heartbeat_every: Duration::from_secs(1),
            busy_heartbeat_every: Duration::from_millis(250),
            watch: 4,
            membership: MembershipConfig::default(),
            clock_fast: Duration::from_millis(200),
            clock_fast_samples: 8,
            run_clock_fast: Duration::from_millis(100),
            run_clock_fast_samples: 16,
            clock_every: Duration::from_secs(2),
            clock_window: 32,
            clock_max_age: Duration::from_secs(60),
            redial_min: Duration::from_secs(1),
            redial_max: Duration::from_secs(30),
            forget_after: Duration::from_secs(600),
        }
    }
}

/// Something for the network layer to do (or to log).
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Gossip this heartbeat on the members topic.
    Publish(Heartbeat),
    /// Gossip on the members topic that this node's watch found a member
    /// silent.
    Suspect {
        /// The member.
        id: String,
        /// Its boot, as last heard.
        boot: u64,
        /// Its seq, as last heard.
        seq: u64,
    },
    /// Start a clock exchange with this member (or lead), and ask for its
    /// [`Pulse`].
    AskClock {
        /// The member's peer id.
        peer: String,
        /// The `(boot, seq)` of its heartbeat this node holds: the answer
        /// carries the heartbeat when it is not the latest.
        known: Option<(u64, u64)>,
        /// This node suspects it: it should refute that.
        suspect: bool,
        /// This node's heartbeat, for a lead: it may not know this node.
        introduce: Option<Box<Heartbeat>>,
    },
    /// Ask a member that watches `member` too whether it hears it
    /// ([`MeshCore::answer_heard`]); hand the answer to
    /// [`MeshCore::on_heard`].
    AskHeard {
        /// The member asked.
        peer: String,
        /// The member asked about.
        member: String,
    },
    /// Ask a member for the members it knows, unless its list has this
    /// digest ([`MeshCore::members_digest`]), telling it this node's
    /// heartbeat (it may not know this node yet).
    AskMembers {
        /// The member's peer id.
        peer: String,
        /// This node's digest.
        digest: u64,
        /// This node's heartbeat.
        heartbeat: Heartbeat,
        /// List the members after this id: the member's last list was cut
        /// there.
        after: Option<String>,
    },
    /// Dial a member that this node is not connected to.
    DialPeer {
        /// Its peer id.
        peer: String,
        /// Where it listens.
        addrs: Vec<String>,
    },
    /// Dial a bootstrap address (again), or an address of a bootstrap name;
    /// report a connection with [`MeshCore::on_bootstrap_connected`].
    DialBootstrap {
        /// Which bootstrap seed, by its position in the list.
        index: usize,
        /// The address.
        addr: String,
    },
    /// Resolve a bootstrap name to its addresses, off the event loop, and
    /// hand the answer to [`MeshCore::on_resolved`].
    Resolve {
        /// Which bootstrap seed, by its position in the list.
        index: usize,
        /// The name.
        name: SeedName,
    },
    /// Membership changed: log it.
    Membership(Event),
}

/// Why a heartbeat was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeartbeatRefused {
    /// Signed by one peer, claiming to be another.
    #[error("heartbeat signed by {source_id} claims to come from {claimed}")]
    Forged {
        /// The peer that signed it.
        source_id: String,
        /// The id it claims.
        claimed: String,
    },
    /// Refused by membership (a future protocol, a bad id, too many members).
    #[error(transparent)]
    Membership(#[from] crate::membership::Refused),
}

impl HeartbeatRefused {
    /// The kind of refusal, without details: a key for logging each kind
    /// once per peer.
    pub fn kind(&self) -> &'static str {
        use crate::membership::Refused;
        match self {
            HeartbeatRefused::Forged { .. } => "forged",
            HeartbeatRefused::Membership(Refused::FutureProtocol(..)) => "future protocol",
            HeartbeatRefused::Membership(Refused::BadId) => "bad id",
            HeartbeatRefused::Membership(Refused::Full(_)) => "full",
        }
    }
}

/// A member with what this node measured about it.
#[derive(Debug, Clone)]
pub struct PeerSnapshot<'a> {
    /// The member and its latest heartbeat.
    pub member: &'a Member,
    /// The clock estimate, once there is a sample.
    pub clock: Option<Estimate>,
    /// The round trip of the latest clock exchange, ns.
    pub last_rtt_ns: Option<i64>,
    /// Whether a connection to it is open.
    pub connected: bool,
}

#[derive(Debug, Clone)]
struct Redial {
    next_at: Duration,
    backoff: Duration,
}

impl Redial {
    fn new(now: Duration, min: Duration) -> Redial {
        Redial {
            next_at: now,
            backoff: min,
        }
    }

    /// Whether a dial is due; if so, schedules the next one further out.
    fn due(&mut self, now: Duration, max: Duration) -> bool {
        if now < self.next_at {
            return false;
        }
        self.next_at = now + self.backoff;
        self.backoff = (self.backoff * 2).min(max);
        true
    }
}

#[derive(Debug, Clone)]
struct PeerClock {
    filter: ClockFilter,
    /// When it was last asked; `None`: ask at once.
    asked_at: Option<Duration>,
    last_rtt_ns: Option<i64>,
    /// It told an estimate of this node's clock.
    holds_mine: bool,
    /// Fast asks sent, with its first samples in, while it had not told
    /// ([`MAX_UNTOLD_FAST_ASKS`]); counted again when it joins the clock
    /// peers anew.
    untold_asks: u32,
}

/// How many fast asks a run's leader or worker gets, once its first samples
/// are in, while it has not told its estimate of this node's clock: 2 s at
/// 100 ms. A worker that follows an arm by a node that no longer leads the
/// run is never sampled by that node, so never told, and asked it ten times
/// a second for as long as the run lasted (1.2 kB/s to one peer).
const MAX_UNTOLD_FAST_ASKS: u32 = 20;

#[derive(Debug, Clone)]
struct Departed {
    addrs: Vec<String>,
    redial: Redial,
    until: Duration,
}

/// One node's mesh state: membership, clocks, dialing.
#[derive(Debug)]
pub struct MeshCore {
    me: LocalNode,
    config: MeshConfig,
    membership: Membership,
    seq: u64,
    listen: Vec<String>,
    clocks: BTreeMap<String, PeerClock>,
    redials: BTreeMap<String, Redial>,
    departed: BTreeMap<String, Departed>,
    connected: BTreeSet<String>,
    /// Members this node has had a connection to.
    were_connected: BTreeSet<String>,
    bootstraps: Bootstraps,
    /// Steps of this node's own wall clock, announced in heartbeats.
    clock_epoch: u32,
    /// When this node's own wall clock last stepped (monotonic).
    stepped_at: Option<Duration>,
    /// Whether this node runs a share (it beats faster).
    busy: bool,
    /// Members whose connection closed and whose redial was refused since
    /// their last heartbeat: their process is gone, not only silent.
    dead: BTreeSet<String>,
    /// Membership events raised outside a tick, for the next one to hand out.
    pending: Vec<Event>,
    /// Actions decided outside a tick, for the next one to hand out.
    pending_actions: Vec<Action>,
    /// When this node's heartbeat is to be announced (again).
    announce_at: Vec<Duration>,
    /// Suspicions of this node's own watch to tell again: when, the
    /// member, and its `(boot, seq)` as suspected.
    suspect_again: Vec<(Duration, String, (u64, u64))>,
    /// The members this node watches, and the membership changes they were
    /// chosen at.
    watched: BTreeSet<String>,
    watched_at: Option<(u64, u64)>,
    /// The members of this node's view (see [`MeshCore::keeps`]).
    view: BTreeSet<String>,
    /// The [`MeshConfig::watch`] members just before this node on the
    /// ring and just after it, nearest first: whom to ask for a second
    /// opinion on a watched member.
    ring_near: (Vec<String>, Vec<String>),
    /// Second opinions asked for, by the member asked about: how many
    /// were asked, how many heard it (and the latest they did), how many
    /// did not.
    opinions: BTreeMap<String, Opinions>,
    /// Members whose clocks the runs need, besides the watched ones.
    clock_peers: BTreeSet<String>,
    /// When each lead is asked next.
    lead_asks: BTreeMap<String, Duration>,
    /// Members a peer's full list lacked, watched until then: one that
    /// answers stays (and is no longer doubted), one that does not is
    /// suspected (this node may have
    /// missed the suspicion that removed it everywhere else).
    doubted: BTreeMap<String, Duration>,
    /// Counts changes of `doubted`.
    doubts: u64,
    /// Members that refused this node's last clock question (they hold no
    /// heartbeat of it yet): the next question introduces this node.
    unknown_to: BTreeSet<String>,
    /// Asks for a member's list.
    sync: MembersSync,
    /// This node's load, as of the last tick.
    health: Health,
    /// When the last tick was.
    ticked_at: Option<Duration>,
    /// When the members this node is not connected to are next looked for.
    redial_scan_at: Option<Duration>,
    /// When this node last refuted a suspicion, and whether another is
    /// due once [`REFUTE_EVERY`] has passed.
    refuted_at: Option<Duration>,
    refute_due: bool,
}

/// The second opinions on one watched member gone silent here.
#[derive(Debug, Clone, Default)]
struct Opinions {
    asked: BTreeSet<String>,
    heard: usize,
    heard_at: Duration,
    not_heard: usize,
}

#[derive(Debug, Default)]
struct MembersSync {
    next_at: Duration,
    last_ask: Option<Duration>,
    /// A peer to ask soon (a first connection, or one from a stranger).
    wanted: Option<String>,
    turn: usize,
    /// Until when this node, joining, compares lists every
    /// [`MEMBERS_SYNC_MIN`] while they differ.
    joining_until: Duration,
    /// Whether the last list asked for was the same as this node's.
    agreed: bool,
    /// The last ask: whom, and after which id.
    asked: Option<(String, Option<String>)>,
    /// A member whose list was cut at [`MAX_MEMBERS_ANSWER`], and the id
    /// to ask it to go on after, at the next tick.
    next_page: Option<(String, String)>,
}

impl MeshCore {
    /// A node that starts at `now`, dialing `bootstraps` until one answers.
    pub fn new(me: LocalNode, config: MeshConfig, bootstraps: Vec<Seed>, now: Duration) -> Self {
        MeshCore {
            membership: Membership::new(&me.id, config.membership),
            me,
            config,
            seq: 1,
            listen: Vec::new(),
            clocks: BTreeMap::new(),
            redials: BTreeMap::new(),
            departed: BTreeMap::new(),
            connected: BTreeSet::new(),
            were_connected: BTreeSet::new(),
            clock_epoch: 0,
            stepped_at: None,
            busy: false,
            dead: BTreeSet::new(),
            pending: Vec::new(),
            pending_actions: Vec::new(),
            announce_at: vec![now],
            suspect_again: Vec::new(),
            watched: BTreeSet::new(),
            watched_at: None,
            view: BTreeSet::new(),
            clock_peers: BTreeSet::new(),
            lead_asks: BTreeMap::new(),
            doubted: BTreeMap::new(),
            ring_near: (Vec::new(), Vec::new()),
            opinions: BTreeMap::new(),
            doubts: 0,
            unknown_to: BTreeSet::new(),
            sync: MembersSync {
                next_at: now + MEMBERS_SYNC_EVERY,
                joining_until: now + MEMBERS_JOINING,
                ..MembersSync::default()
            },
            health: Health::default(),
            ticked_at: None,
            redial_scan_at: None,
            refuted_at: None,
            refute_due: false,
            bootstraps: Bootstraps::new(bootstraps, now, config.redial_min, config.redial_max),
        }
    }

    /// This node.
    pub fn me(&self) -> &LocalNode {
        &self.me
    }

    /// Sets the addresses this node listens on, for its heartbeats: a
    /// change is announced.
    pub fn set_listen(&mut self, addrs: Vec<String>, now: Duration) {
        if addrs != self.listen {
            self.listen = addrs;
            self.changed(now, true);
        }
    }

    /// The addresses in this node's heartbeats.
    pub fn listen(&self) -> &[String] {
        &self.listen
    }

    /// This node's heartbeat changed at `now`: a new `seq`, and, when
    /// `announce`, an announcement to the whole mesh now and again later.
    fn changed(&mut self, now: Duration, announce: bool) {
        self.seq += 1;
        if announce {
            self.announce_at = std::iter::once(now)
                .chain(ANNOUNCE_AGAIN.iter().map(|d| now + *d))
                .collect();
        }
    }

    /// The members whose clocks the runs need besides the watched ones (a
    /// leader's workers, a worker's leader): they are asked at the clock's
    /// pace while they stay in the set, and kept connected.
    pub fn set_clock_peers(&mut self, peers: BTreeSet<String>) {
        // A run's leader and its workers are dialed at the next tick, not
        // the next paced scan: their samples decide the start.
        if !peers.is_subset(&self.clock_peers) {
            self.redial_scan_at = None;
        }
        for id in peers.difference(&self.clock_peers) {
            if let Some(clock) = self.clocks.get_mut(id) {
                clock.untold_asks = 0;
            }
        }
        self.clock_peers = peers;
    }

    /// Whether this node keeps a connection to `id` open, and dials it when
    /// there is none, whatever the mesh's size: a member of its view (the
    /// [`MeshConfig::watch`] members either side of it on the ring, and
    /// chords across it, see [`view_offsets`]), one it watches, or one whose
    /// clock its runs need. Any other connection (a request to a run's
    /// leader, a stranger's dial) it closes once idle ([`Self::closes`]).
    pub fn keeps(&self, id: &str) -> bool {
        self.view.contains(id) || self.watched.contains(id) || self.clock_peers.contains(id)
    }

    /// The members this node [keeps](Self::keeps), for the tests.
    #[cfg(test)]
    pub fn kept(&self) -> impl Iterator<Item = &String> {
        let watched = self.watched.iter().filter(|id| !self.view.contains(*id));
        let runs = self
            .clock_peers
            .iter()
            .filter(|id| !self.view.contains(*id) && !self.watched.contains(*id));
        self.view.iter().chain(watched).chain(runs)
    }

    /// Whether the connection to `peer`, unused for `idle`, is to be
    /// closed: one this node does not keep, not in gossipsub's mesh (which
    /// holds at most 12 peers a topic and re-grafts from the view), idle for
    /// [`IDLE_CLOSE`]. A request opens such a connection (shards to a run's
    /// leader, a module from a parent); a newcomer's dial does too.
    /// gossipsub's streams keep every connection open whatever libp2p's own
    /// idle timeout, so the network layer closes them on this word.
    pub fn closes(&self, peer: &str, idle: Duration, in_gossip_mesh: bool) -> bool {
        idle >= IDLE_CLOSE && !in_gossip_mesh && !self.keeps(peer)
    }

    /// The members this node watches.
    pub fn watched(&self) -> &BTreeSet<String> {
        &self.watched
    }

    /// Chooses the watched members again when the members changed: the
    /// [`MeshConfig::watch`] members just before this node on the ring of
    /// every member and this node, ordered by [`ring_position`].
    fn choose_watched(&mut self, now: Duration) {
        let before = self.doubted.len();
        self.doubted.retain(|_, until| now < *until);
        if self.doubted.len() != before {
            self.doubts += 1;
        }
        let changes = (self.membership.changes(), self.doubts);
        if self.watched_at == Some(changes) {
            return;
        }
        self.watched_at = Some(changes);
        let mine = ring_position(&self.me.id);
        let mut before: Vec<(u64, &str)> = self
            .membership
            .members()
            .map(|m| {
                let id = m.heartbeat.id.as_str();
                (mine.wrapping_sub(ring_position(id)), id)
            })
            .collect();
        before.sort_unstable();
        // `before[k - 1]` is the k-th member before this node on the ring,
        // `before[n - k]` the k-th after it.
        let n = before.len();
        self.view = view_offsets(n, self.config.watch)
            .into_iter()
            .flat_map(|k| [before[k - 1].1, before[n - k].1])
            .map(str::to_owned)
            .collect();
        let near = self.config.watch.min(n);
        self.ring_near = (
            before[..near]
                .iter()
                .map(|(_, id)| (*id).to_owned())
                .collect(),
            (1..=near).map(|k| before[n - k].1.to_owned()).collect(),
        );
        self.watched = before
            .into_iter()
            .take(self.config.watch)
            .map(|(_, id)| id.to_owned())
            .chain(self.doubted.keys().cloned())
            .collect();
        self.membership.set_watched(&self.watched, now);
    }

    /// Advances time to `now`: announcements, failure detection, the asks
    /// of watched members, clock exchanges and dials that are due.
    pub fn tick(&mut self, now: Duration, health: Health) -> Vec<Action> {
        self.health = health;
        // A node that stood still (frozen, starved) heard nothing meanwhile:
        // that is not the members' silence, and woken, it must not suspect
        // them all (a suspicion goes to the whole mesh).
        if let Some(last) = self.ticked_at.replace(now) {
            let gap = now.saturating_sub(last);
            if gap > STALL {
                self.membership.forgive(gap, now);
            }
        }
        if self.refute_due {
            self.refute(now);
        }
        let mut actions = std::mem::take(&mut self.pending_actions);
        if self.announce_at.first().is_some_and(|at| now >= *at) {
            self.announce_at.retain(|at| now < *at);
            actions.push(Action::Publish(self.heartbeat(health)));
        }
        let mut events = std::mem::take(&mut self.pending);
        for event in self.membership.tick(now) {
            // A suspicion raised by this tick is this node's own watch:
            // the mesh hears of it.
            if let Event::Suspected(id) = &event {
                self.tell_suspicion(id, now, &mut actions);
            }
            events.push(event);
        }
        self.ask_second_opinions(&mut actions);
        self.suspect_again_due(now, &mut actions);
        for member in self.membership.take_removed() {
            let id = &member.heartbeat.id;
            // Only members this node was connected to are dialed again: an
            // identity heard of only through gossip chooses the addresses it
            // announces, and must not make the mesh dial them for minutes.
            let was_connected = self.were_connected.remove(id);
            if was_connected && !member.heartbeat.listen.is_empty() {
                if self.departed.len() >= MAX_DEPARTED
                    && let Some(oldest) = self
                        .departed
                        .iter()
                        .min_by_key(|(_, d)| d.until)
                        .map(|(k, _)| k.clone())
                {
                    self.departed.remove(&oldest);
                }
                self.departed.insert(
                    id.clone(),
                    Departed {
                        addrs: member.heartbeat.listen.clone(),
                        redial: Redial::new(now, self.config.redial_min),
                        until: now + self.config.forget_after,
                    },
                );
            }
        }
        for event in events {
            if let Event::Left(id) = &event {
                self.clocks.remove(id);
                self.redials.remove(id);
                self.dead.remove(id);
                self.unknown_to.remove(id);
            }
            actions.push(Action::Membership(event));
        }
        self.choose_watched(now);
        self.departed.retain(|_, d| now < d.until);
        for (id, d) in &mut self.departed {
            if !self.connected.contains(id) && d.redial.due(now, self.config.redial_max) {
                actions.push(Action::DialPeer {
                    peer: id.clone(),
                    addrs: d.addrs.clone(),
                });
            }
        }
        // Cut off from everyone: the bootstrap seeds start over.
        let isolated = self.connected.is_empty();
        self.bootstraps.tick(now, isolated, &mut actions);
        self.ask_members(now, &mut actions);
        self.ask_leads(now, &mut actions);
        self.ask_clocks(now, &mut actions);
        // Members the connection to which was lost are dialed again; the
        // walk over every member is paced, not done on every tick (with a
        // thousand members, ticks come often enough for it to show).
        if self.redial_scan_at.is_none_or(|at| now >= at) {
            self.redial_scan_at = Some(now + REDIAL_SCAN_EVERY);
            self.redial_members(now, &mut actions);
        }
        actions
    }

    /// Asks the time of each watched member and clock peer that is due,
    /// at the pace its state calls for now: only those, found by id, so a
    /// tick costs the same whatever the size of the mesh.
    fn ask_clocks(&mut self, now: Duration, actions: &mut Vec<Action>) {
        let me = (!self.unknown_to.is_empty()).then(|| Box::new(self.heartbeat(self.health)));
        let config = &self.config;
        let extra = self.clock_peers.difference(&self.watched);
        for id in self.watched.iter().chain(extra) {
            let watched = self.watched.contains(id);
            let Some(member) = self.membership.get(id) else {
                continue;
            };
            if !self.connected.contains(id) {
                continue;
            }
            let clock = self.clocks.entry(id.clone()).or_insert_with(|| PeerClock {
                filter: ClockFilter::new(config.clock_window, config.clock_max_age),
                asked_at: None,
                last_rtt_ns: None,
                holds_mine: false,
                untold_asks: 0,
            });
            // The pace follows what is known now, not when the last ask
            // left: a member that turned busy since is asked 250 ms after
            // the last ask, not a second.
            let missed = now.saturating_sub(member.last_seen)
                > config.heartbeat_every + config.heartbeat_every / 2;
            // A doubted member is asked only whether it lives: its clock
            // is not needed, and a list that lacked a dozen members would
            // have them asked five times a second for 9 s.
            let estimate = !self.doubted.contains_key(id) || self.clock_peers.contains(id);
            // A run's leader and workers sample each other twice as fast,
            // and twice as many times, before the start: the start instant
            // is only as good as the workers' estimates of the leader's
            // clock (at 1,000 simulated nodes, starts spread over 5.5 ms
            // with 8 samples at 200 ms, and 1.6 ms with 16 at 100 ms).
            // Fast too until the peer has told this node its estimate of
            // this node's clock: a run's leader arms only once every worker
            // has, and a leader that held enough samples of a worker from
            // before the run would otherwise ask it only every 2 s.
            let sampled = clock.filter.len() >= config.run_clock_fast_samples as usize;
            let untold = sampled && !clock.holds_mine;
            let pace = if self.clock_peers.contains(id)
                && (!sampled || (untold && clock.untold_asks < MAX_UNTOLD_FAST_ASKS))
            {
                config.run_clock_fast
            } else if (estimate && clock.filter.len() < config.clock_fast_samples as usize)
                || (watched && missed)
            {
                // Fast until enough answers came back (questions may be
                // lost, or refused while the peer has not heard of us), and
                // once a watched member missed a beat: the questions or
                // answers may be lost, and the member should not be
                // suspected for that.
                config.clock_fast
            } else if watched && member.heartbeat.busy {
                config.busy_heartbeat_every
            } else if watched {
                config.heartbeat_every
            } else {
                config.clock_every
            };
            if clock.asked_at.is_none_or(|at| now >= at + pace) {
                clock.asked_at = Some(now);
                if untold && pace == config.run_clock_fast {
                    clock.untold_asks += 1;
                }
                actions.push(Action::AskClock {
                    peer: id.clone(),
                    known: Some((member.heartbeat.boot, member.heartbeat.seq)),
                    suspect: member.suspect,
                    introduce: if self.unknown_to.remove(id) {
                        me.clone()
                    } else {
                        None
                    },
                });
            }
        }
    }

    /// Asks, of each watched member gone silent here, the other members
    /// that watch it whether they hear it: a member that only this node's
    /// link cannot reach (an asymmetric cut, a lossy route) is not
    /// suspected by the whole mesh on one watcher's word, and a frozen one
    /// is suspected one round trip later than it was. Those asked are the
    /// members between it and this node on the ring and just after this
    /// node: with this node, the [`MeshConfig::watch`] members after it,
    /// which watch it.
    fn ask_second_opinions(&mut self, actions: &mut Vec<Action>) {
        let membership = &self.membership;
        self.opinions.retain(|id, _| membership.doubts(id));
        for id in self.membership.take_doubts() {
            let (before, after) = &self.ring_near;
            let asked: BTreeSet<String> = match before.iter().position(|b| *b == id) {
                Some(k) => before[..k]
                    .iter()
                    .chain(after.iter().take(self.config.watch.saturating_sub(k + 1)))
                    .filter(|p| self.connected.contains(*p) && **p != id)
                    .cloned()
                    .collect(),
                None => BTreeSet::new(),
            };

            if asked.is_empty() {
                self.membership.no_second_opinion(&id);
                continue;
            }
            for peer in &asked {
                actions.push(Action::AskHeard {
                    peer: peer.clone(),
                    member: id.clone(),
                });
            }
            self.opinions.insert(
                id,
                Opinions {
                    asked,
                    ..Opinions::default()
                },
            );
        }
    }

    /// How long ago this node last heard `member`, for a watcher of it
    /// that went without (`None`: not a member here).
    pub fn answer_heard(&self, member: &str, now: Duration) -> Option<Duration> {
        self.membership
            .get(member)
            .map(|m| now.saturating_sub(m.last_seen))
    }

    /// `peer`, asked for a second opinion on `member`, last heard it `ago`
    /// (`None`: it does not know it). Most of those asked having heard it
    /// within half its `suspect_after`, the member is alive and only this
    /// node's link to it is silent; most of them not, it is suspected at
    /// once. A peer not asked, or asked and answered, changes nothing.
    pub fn on_heard(&mut self, peer: &str, member: &str, ago: Option<Duration>, now: Duration) {
        let Some(opinions) = self.opinions.get_mut(member) else {
            return;
        };
        if !opinions.asked.remove(peer) {
            return;
        }
        let config = &self.config.membership;
        let recent = match self.membership.get(member) {
            Some(m) if m.heartbeat.busy => config.busy_suspect_after / 2,
            _ => config.suspect_after / 2,
        };

        match ago {
            Some(ago) if ago <= recent => {
                opinions.heard += 1;
                opinions.heard_at = opinions.heard_at.max(now.saturating_sub(ago));
            }
            _ => opinions.not_heard += 1,
        }
        let all = opinions.heard + opinions.not_heard + opinions.asked.len();
        if opinions.heard * 2 > all {
            let heard_at = opinions.heard_at;

            self.opinions.remove(member);
            self.membership.heard_of(member, heard_at);
        } else if opinions.not_heard * 2 >= all {
            self.opinions.remove(member);
            self.membership.no_second_opinion(member);
        }
    }

    /// Tells the mesh again the suspicions of this node's own watch that
    /// are due, of members still suspected at the same heartbeat.
    fn suspect_again_due(&mut self, now: Duration, actions: &mut Vec<Action>) {
        let membership = &self.membership;
        self.suspect_again.retain(|(at, id, (boot, seq))| {
            if now < *at {
                return true;
            }
            if membership
                .get(id)
                .is_some_and(|m| m.suspect && (m.heartbeat.boot, m.heartbeat.seq) == (*boot, *seq))
            {
                actions.push(Action::Suspect {
                    id: id.clone(),
                    boot: *boot,
                    seq: *seq,
                });
            }
            false
        });
    }

    /// Dials the members this node [keeps](Self::keeps) and is not
    /// connected to, each at its redial pace, in the order of their ids.
    /// Only those are walked, not every member: a tick costs the same
    /// whatever the size of the mesh.
    fn redial_members(&mut self, now: Duration, actions: &mut Vec<Action>) {
        let kept: BTreeSet<&String> = self
            .view
            .iter()
            .chain(&self.watched)
            .chain(&self.clock_peers)
            .filter(|id| !self.connected.contains(*id))
            .collect();
        for id in kept {
            if let Some(member) = self.membership.get(id) {
                redial(
                    &mut self.redials,
                    &self.config,
                    id,
                    &member.heartbeat.listen,
                    now,
                    actions,
                );
            }
        }
    }

    /// Leads (nodes a member's list named, not heard from themselves): dial
    /// them, and ask them once connected, until they answer and join.
    fn ask_leads(&mut self, now: Duration, actions: &mut Vec<Action>) {
        if self.membership.leads().next().is_none() {
            self.lead_asks.clear();
            return;
        }
        let leads: BTreeSet<&str> = self.membership.leads().map(|hb| hb.id.as_str()).collect();
        self.lead_asks.retain(|id, _| leads.contains(id.as_str()));
        let me = self.heartbeat(self.health);
        for hb in self.membership.leads() {
            let id = &hb.id;
            if self.connected.contains(id) {
                let next = self.lead_asks.entry(id.clone()).or_insert(now);
                if now >= *next {
                    *next = now + self.config.heartbeat_every;
                    actions.push(Action::AskClock {
                        peer: id.clone(),
                        known: None,
                        suspect: false,
                        introduce: Some(Box::new(me.clone())),
                    });
                }
            } else {
                redial(
                    &mut self.redials,
                    &self.config,
                    id,
                    &hb.listen,
                    now,
                    actions,
                );
            }
        }
    }

    /// Asks for a member's list: of a peer a new connection named (at
    /// most every [`MEMBERS_SYNC_MIN`]), and of a connected member in turn
    /// every [`MEMBERS_SYNC_EVERY`].
    fn ask_members(&mut self, now: Duration, actions: &mut Vec<Action>) {
        // While a node joins, its lists are compared every 5 s until one
        // is the same as its own: a node that dropped every copy of a
        // newcomer's announcements lacks it until then (100 simulated
        // nodes, seed 2: one node lacked another for 30 s). Lists that
        // agree cost a few bytes.
        if now < self.sync.joining_until
            && !self.sync.agreed
            && let Some(last) = self.sync.last_ask
        {
            self.sync.next_at = self.sync.next_at.min(last + MEMBERS_SYNC_MIN);
        }
        // The rest of a list that was cut: a mesh of more than
        // MAX_MEMBERS_ANSWER nodes lists its members in pages. Without them,
        // a node that missed the announcements of a member whose id sorted
        // past the cut never heard of it (3,000 simulated nodes never
        // converged).
        if let Some((peer, after)) = self.sync.next_page.take()
            && self.connected.contains(&peer)
        {
            self.sync.last_ask = Some(now);
            self.sync.agreed = false;
            self.sync.asked = Some((peer.clone(), Some(after.clone())));
            actions.push(Action::AskMembers {
                peer,
                digest: self.members_digest(),
                heartbeat: self.heartbeat(self.health),
                after: Some(after),
            });
            return;
        }
        let recent = self
            .sync
            .last_ask
            .is_some_and(|at| now.saturating_sub(at) < MEMBERS_SYNC_MIN);
        let peer = match self.sync.wanted.take() {
            Some(peer) if !recent && self.connected.contains(&peer) => Some(peer),
            Some(peer) if self.connected.contains(&peer) => {
                self.sync.wanted = Some(peer);
                None
            }
            _ if now >= self.sync.next_at => {
                self.sync.next_at = now + MEMBERS_SYNC_EVERY;
                let members: Vec<&String> = self
                    .membership
                    .members()
                    .map(|m| &m.heartbeat.id)
                    .filter(|id| self.connected.contains(*id))
                    .collect();
                if members.is_empty() {
                    None
                } else {
                    self.sync.turn = self.sync.turn.wrapping_add(1);
                    Some(members[self.sync.turn % members.len()].clone())
                }
            }
            _ => None,
        };
        if let Some(peer) = peer {
            self.sync.last_ask = Some(now);
            self.sync.agreed = false;
            self.sync.asked = Some((peer.clone(), None));
            actions.push(Action::AskMembers {
                peer,
                digest: self.members_digest(),
                heartbeat: self.heartbeat(self.health),
                after: None,
            });
        }
    }

    /// A digest of the nodes this node knows (its members and itself, by id
    /// and boot): two nodes with the same digest know the same nodes.
    pub fn members_digest(&self) -> u64 {
        let mut ids: Vec<(&str, u64)> = self
            .membership
            .members()
            .map(|m| (m.heartbeat.id.as_str(), m.heartbeat.boot))
            .chain(std::iter::once((self.me.id.as_str(), self.me.boot)))
            .collect();
        ids.sort_unstable();
        let mut hash = Fnv::default();
        for (id, boot) in ids {
            hash.write(id.as_bytes());
            hash.write(&[0]);
            hash.write(&boot.to_le_bytes());
        }
        hash.0
    }

    /// The answer to a members ask from `asker` whose digest is `digest`:
    /// `None` when this node knows the same nodes, else this node's
    /// heartbeat and its members' but suspected ones whose ids sort after
    /// `after` (all, without it), in the order of their ids (at most
    /// [`MAX_MEMBERS_ANSWER`] and about 768 KiB), and whether that is all
    /// of them. Only members and connected peers are answered. Call
    /// [`MeshCore::on_heartbeat`] with the asker's heartbeat first: an ask
    /// is how a node that this one missed makes itself known.
    pub fn answer_members(
        &self,
        asker: &str,
        digest: u64,
        after: Option<&str>,
    ) -> Result<Option<(Vec<Heartbeat>, bool)>, &'static str> {
        if self.membership.get(asker).is_none() && !self.connected.contains(asker) {
            return Err("not a member yet: no heartbeat of yours has arrived");
        }
        if digest == self.members_digest() {
            return Ok(None);
        }
        // Within the answer's bound: a heartbeat's encoding is about the
        // length of its strings and 64 bytes more.
        let mut budget = MEMBERS_ANSWER_BYTES;
        let mut complete = true;
        let mut members = Vec::new();
        let all = std::iter::once(self.heartbeat(self.health)).chain(
            self.membership
                .members_after(after)
                .filter(|m| !m.suspect && m.heartbeat.id != asker)
                .map(|m| m.heartbeat.clone()),
        );
        for hb in all {
            let len = 64
                + hb.id.len()
                + hb.name.len()
                + hb.region.len()
                + hb.version.len()
                + hb.listen.iter().map(|a| a.len() + 2).sum::<usize>();
            match budget.checked_sub(len) {
                Some(left) if members.len() < MAX_MEMBERS_ANSWER => {
                    budget = left;
                    members.push(hb);
                }
                _ => {
                    complete = false;
                    break;
                }
            }
        }
        Ok(Some((members, complete)))
    }

    /// A member answered an ask for its list: it knows the same nodes as
    /// this one.
    pub fn on_members_same(&mut self) {
        self.sync.agreed = true;
    }

    /// A member's list, from `from`: its own heartbeat is its word; the
    /// others are leads until they answer themselves. When the list is
    /// `complete`, the members it lacks that this node does not watch are
    /// doubted (those after the ask's `after`, for the rest of a list):
    /// watched for [`MembershipConfig::remove_after`], so that one whose
    /// suspicion this node missed goes; one that answers is no longer
    /// doubted. A list that was cut is asked for again from where it was
    /// cut, at the next tick.
    pub fn on_members(
        &mut self,
        from: &str,
        members: Vec<Heartbeat>,
        complete: bool,
        now: Duration,
    ) -> Vec<Result<Option<Event>, HeartbeatRefused>> {
        let after = match self.sync.asked.take() {
            Some((peer, after)) if peer == from => after,
            other => {
                self.sync.asked = other;
                None
            }
        };
        let mut out = Vec::new();
        let mut listed = BTreeSet::new();
        let mut new = false;
        let last = members
            .iter()
            .take(MAX_MEMBERS_ANSWER)
            .filter(|hb| hb.id != from)
            .map(|hb| hb.id.clone())
            .max();
        if !complete
            && let Some(last) = last
            && after.as_ref().is_none_or(|a| last > *a)
        {
            self.sync.next_page = Some((from.to_owned(), last));
        }
        for hb in members.into_iter().take(MAX_MEMBERS_ANSWER) {
            listed.insert(hb.id.clone());
            if hb.id == from {
                out.push(self.on_heartbeat(from, hb, now));
            } else {
                new |= self.membership.get(&hb.id).is_none();
                self.membership.on_lead(hb, now);
            }
        }
        // The lists differed by nodes this one did not know: the mesh is
        // forming or healing, and the next list is asked for sooner.
        if new {
            self.sync.next_at = self.sync.next_at.min(now + MEMBERS_SYNC_MIN);
        }
        if complete {
            let until = now + self.config.membership.remove_after;
            let lacked: Vec<String> = self
                .membership
                .members()
                .map(|m| &m.heartbeat.id)
                .filter(|id| {
                    !listed.contains(*id)
                        && after.as_ref().is_none_or(|a| *id > a)
                        && *id != from
                        && !self.watched.contains(*id)
                        && self.doubted.len() < self.config.watch * 4
                })
                .cloned()
                .collect();
            for id in lacked.into_iter().take(self.config.watch * 4) {
                self.doubted.insert(id, until);
                self.doubts += 1;
            }
        }
        out
    }

    /// Refutes a suspicion of this node's latest heartbeat: a newer one,
    /// announced. At most once every [`REFUTE_EVERY`]: a member that
    /// publishes suspicions of this node as fast as it likes gets one
    /// announcement a second, not one each (a suspicion takes 5.5 s to
    /// confirm, so a refutation a second late still wins).
    fn refute(&mut self, now: Duration) {
        if self
            .refuted_at
            .is_some_and(|at| now.saturating_sub(at) < REFUTE_EVERY)
        {
            self.refute_due = true;
            return;
        }
        self.refuted_at = Some(now);
        self.refute_due = false;
        self.changed(now, true);
    }

    /// The [`Pulse`] that answers a clock question from `asker`, which holds
    /// this node's heartbeat at `known` and may suspect this node. A
    /// suspicion of this node's latest heartbeat is refuted: a newer one,
    /// announced to the whole mesh.
    pub fn answer_clock(
        &mut self,
        known: Option<(u64, u64)>,
        suspect: bool,
        now: Duration,
    ) -> Pulse {
        if suspect && known.is_some_and(|k| k >= (self.me.boot, self.seq)) {
            self.refute(now);
        }
        let current = (self.me.boot, self.seq);
        Pulse {
            boot: self.me.boot,
            seq: self.seq,
            cpu: self.health.cpu,
            sockets: self.health.sockets,
            heartbeat: (known != Some(current)).then(|| self.heartbeat(self.health)),
        }
    }

    /// The [`Pulse`] `peer` answered a clock question with: it is heard
    /// from, directly.
    pub fn on_pulse(
        &mut self,
        peer: &str,
        pulse: Pulse,
        now: Duration,
    ) -> Result<Option<Event>, HeartbeatRefused> {
        let result = if self.membership.on_pulse(peer, &pulse, now) {
            Ok(None)
        } else {
            match pulse.heartbeat {
                Some(hb) => self.on_heartbeat(peer, hb, now),
                None => Ok(None),
            }
        };
        // A doubted member that answers itself is there: the doubt is
        // settled, and it is watched by its ring's watchers alone again
        // (else every node that compared lists while it was suspected asks
        // it every second for 9 s).
        if self
            .membership
            .get(peer)
            .is_some_and(|m| m.last_seen == now && !m.suspect)
            && self.doubted.remove(peer).is_some()
        {
            self.doubts += 1;
        }
        result
    }

    /// A member's watch found `id` silent at `(boot, seq)`, says `source`:
    /// suspected here too. A suspicion of this node's latest heartbeat is
    /// refuted. Gossip from a node that is not a member, or that this node
    /// suspects, is not taken.
    pub fn on_suspicion(
        &mut self,
        source: &str,
        id: &str,
        boot: u64,
        seq: u64,
        now: Duration,
    ) -> Option<Event> {
        // A member this node suspects is likely the one cut off, and finds
        // everyone silent: its word does not count (its suspicions may also
        // arrive late, held in a connection while its link was down).
        if source == id || self.membership.get(source).is_none_or(|m| m.suspect) {
            return None;
        }
        if id == self.me.id {
            if (boot, seq) >= (self.me.boot, self.seq) {
                self.refute(now);
            }
            return None;
        }
        // This node watches it and heard it lately: its own word wins over
        // another watcher's, which may be the slow one.
        if let Some(m) = self.membership.get(id)
            && m.watched
            && now.saturating_sub(m.last_seen) < self.config.membership.busy_suspect_after
        {
            return None;
        }
        // This node watches it and has not heard it for half its silence
        // either: it agrees, and tells the mesh as its own watch would
        // (which would have suspected it within a second or two). Each
        // watcher's word reaches the nodes that lost another's (1,000
        // simulated nodes: with the one watcher's word, told again every
        // second, a node lost it twice and held a frozen member live 2 s
        // longer than the rest).
        let agrees = self.membership.get(id).is_some_and(|m| {
            let config = &self.config.membership;
            let silence = if m.heartbeat.busy {
                config.busy_suspect_after
            } else {
                config.suspect_after
            };
            m.watched && now.saturating_sub(m.last_seen) > silence / 2
        });
        let event = self.membership.on_suspicion(id, boot, seq, now);
        if agrees && event.is_some() {
            let mut actions = std::mem::take(&mut self.pending_actions);
            self.tell_suspicion(id, now, &mut actions);
            self.pending_actions = actions;
        }
        event
    }

    /// Tells the mesh this node's watch suspects `id`, now and again
    /// after each of [`SUSPECT_AGAIN`] while it stays suspected.
    fn tell_suspicion(&mut self, id: &str, now: Duration, actions: &mut Vec<Action>) {
        let Some(m) = self.membership.get(id) else {
            return;
        };
        let (boot, seq) = (m.heartbeat.boot, m.heartbeat.seq);
        actions.push(Action::Suspect {
            id: id.to_owned(),
            boot,
            seq,
        });
        for after in SUSPECT_AGAIN {
            if self.suspect_again.len() >= MAX_SUSPECT_AGAIN {
                self.suspect_again.remove(0);
            }
            self.suspect_again
                .push((now + after, id.to_owned(), (boot, seq)));
        }
    }

    fn heartbeat(&self, health: Health) -> Heartbeat {
        Heartbeat {
            protocol: PROTOCOL,
            id: self.me.id.clone(),
            name: self.me.name.clone(),
            region: self.me.region.clone(),
            boot: self.me.boot,
            seq: self.seq,
            cores: self.me.cores,
            vu_limit: self.me.vu_limit,
            version: self.me.version.clone(),
            cpu: health.cpu,
            sockets: health.sockets,
            listen: self.advertised(),
            leaving: false,
            clock_epoch: self.clock_epoch,
            busy: self.busy,
        }
    }

    /// Whether this node runs a share: while it does, its heartbeat says
    /// so, and its watchers ask it every
    /// [`MeshConfig::busy_heartbeat_every`] and suspect it sooner. The
    /// watchers learn it from their next ask; it is not announced.
    pub fn set_busy(&mut self, busy: bool, now: Duration) {
        if busy != self.busy {
            self.busy = busy;
            self.changed(now, false);
        }
    }

    /// A dial of `peer` failed because its address refused the connection:
    /// a member whose connection closed and whose address now refuses is a
    /// process that is gone, suspected at once (not after its silence).
    pub fn on_dial_refused(&mut self, peer: &str, now: Duration) {
        if self.connected.contains(peer) {
            return;
        }
        let Some(m) = self.membership.get(peer) else {
            return;
        };
        let (boot, seq) = (m.heartbeat.boot, m.heartbeat.seq);
        self.dead.insert(peer.to_owned());
        if let Some(event) = self.membership.suspect_now(peer, now) {
            self.pending.push(event);
            self.pending_actions.push(Action::Suspect {
                id: peer.to_owned(),
                boot,
                seq,
            });
        }
    }

    /// Whether `peer` is known gone: its redial was refused since its last
    /// heartbeat.
    pub fn is_dead(&self, peer: &str) -> bool {
        self.dead.contains(peer)
    }

    /// This node's own wall clock stepped (the runtime saw wall time and
    /// monotonic time part by more than a step's margin): every clock
    /// sample it holds was taken against the old clock, so all go and each
    /// member is asked again at once; the next heartbeat tells the members
    /// to do the same with theirs of this node.
    pub fn on_own_clock_step(&mut self, now: Duration) {
        for clock in self.clocks.values_mut() {
            clock.filter.clear();
            clock.asked_at = None;
        }
        self.clock_epoch = self.clock_epoch.wrapping_add(1);
        self.stepped_at = Some(now);
        // Tell the members now rather than at their next ask.
        self.changed(now, true);
    }

    /// Whether clock estimates may still be settling after a step of this
    /// node's own clock, at `now`: members hear of it with the next
    /// heartbeat and sample this node again within a second or two. A
    /// leader does not pick a start instant meanwhile.
    pub fn clock_settling(&self, now: Duration) -> bool {
        self.stepped_at
            .is_some_and(|at| now.saturating_sub(at) < CLOCK_SETTLE)
    }

    /// The listen addresses to announce: at most [`MAX_LISTEN_ADDRS`], and
    /// no loopback ones unless there is nothing else (a testnet), since a
    /// peer on another host that dials them reaches itself.
    fn advertised(&self) -> Vec<String> {
        let loopback = |a: &&String| a.starts_with("/ip4/127.") || a.starts_with("/ip6/::1/");
        let outside: Vec<&String> = self.listen.iter().filter(|a| !loopback(a)).collect();
        let chosen = if outside.is_empty() {
            self.listen.iter().collect()
        } else {
            outside
        };
        chosen
            .into_iter()
            .filter(|a| a.len() <= MAX_ADDR_LEN)
            .take(MAX_LISTEN_ADDRS)
            .cloned()
            .collect()
    }

    /// The last heartbeat of a node that is shutting down: members drop it
    /// at once instead of after its silence.
    pub fn leave(&mut self, health: Health) -> Action {
        self.seq += 1;
        self.announce_at.clear();
        let mut hb = self.heartbeat(health);
        hb.leaving = true;
        Action::Publish(hb)
    }

    /// Takes a heartbeat that gossip delivered, signed by `source`.
    pub fn on_heartbeat(
        &mut self,
        source: &str,
        hb: Heartbeat,
        now: Duration,
    ) -> Result<Option<Event>, HeartbeatRefused> {
        if hb.id != source {
            return Err(HeartbeatRefused::Forged {
                source_id: source.to_owned(),
                claimed: hb.id,
            });
        }
        let epoch = hb.clock_epoch;
        let known_epoch = self
            .membership
            .get(&hb.id)
            .map(|m| (m.heartbeat.boot, m.heartbeat.clock_epoch));
        let boot = hb.boot;
        let event = self.membership.on_heartbeat(hb, now)?;
        if event.is_some() {
            // Heard again (back, restarted, new): not dead.
            self.dead.remove(source);
        }
        // The sender's clock stepped: the samples taken against its old
        // clock go, and it is asked again at once.
        if let Some((known_boot, known)) = known_epoch
            && known_boot == boot
            && known != epoch
            && let Some(clock) = self.clocks.get_mut(source)
        {
            clock.filter.clear();
            clock.asked_at = None;
        }
        match &event {
            Some(Event::Joined(id)) => {
                self.departed.remove(id);
            }
            // A new process: its old samples and dial backoff no longer apply.
            // A stopped one is not dialed again: it will dial when it returns.
            Some(Event::Restarted(id) | Event::Stopped(id)) => {
                self.clocks.remove(id);
                self.redials.remove(id);
            }
            _ => {}
        }
        Ok(event)
    }

    /// Whether to answer a clock question from `peer`: only members are
    /// answered, so that every answer is timed with the asker's region known
    /// (which latency emulation needs) and strangers learn nothing.
    pub fn may_answer_clock(&self, peer: &str) -> bool {
        self.membership.get(peer).is_some()
    }

    /// `peer` refused this node's clock question: it holds no heartbeat of
    /// this node (it missed the announcement, and its next ask for a list
    /// may be seconds away). The next question to it carries this node's
    /// heartbeat, so it answers the one after; otherwise a watcher that a
    /// member does not know yet finds it silent and suspects it, and the
    /// refutation goes to the whole mesh (1,000 simulated nodes, seed 1:
    /// eight members suspected so while the mesh formed, refuted and
    /// announced again into the idle mesh).
    pub fn on_clock_refused(&mut self, peer: &str) {
        if self.membership.get(peer).is_some() {
            self.unknown_to.insert(peer.to_owned());
        }
    }

    /// A connected peer that is not a member asked something (it knows
    /// this node, this node missed it): its list is asked for soon, which
    /// tells this node its heartbeat.
    pub fn on_stranger(&mut self, peer: &str) {
        if self.connected.contains(peer) && self.membership.get(peer).is_none() {
            self.sync.wanted = Some(peer.to_owned());
        }
    }

    /// Takes a completed clock exchange with `peer`, and what the peer told
    /// of its own estimate of this node's clock (`(offset_ns, bound_ns)`,
    /// this node's clock minus the peer's). Returns `false` if its
    /// timestamps are impossible (and so it was dropped, with what it told).
    pub fn on_clock_answer(
        &mut self,
        peer: &str,
        exchange: Exchange,
        told: Option<(i64, i64)>,
        now: Duration,
    ) -> bool {
        let Some(clock) = self.clocks.get_mut(peer) else {
            return true;
        };
        match exchange.sample(now) {
            Some(sample) => {
                clock.last_rtt_ns = Some(sample.delay_ns);
                clock.filter.add(sample);
                if let Some((offset_ns, bound_ns)) = told {
                    clock.filter.told(offset_ns, bound_ns, now);
                    clock.holds_mine = true;
                }
                true
            }
            None => false,
        }
    }

    /// Whether `peer` told, in a clock answer, an estimate of this node's
    /// clock: it samples this node for a run, and has a sample.
    pub fn holds_my_clock(&self, peer: &str) -> bool {
        self.clocks.get(peer).is_some_and(|c| c.holds_mine)
    }

    /// What this node tells `asker` of its estimate of the asker's clock in
    /// a clock answer: only to a peer whose clock it samples for a run
    /// (its leader, or as the leader its workers), where the two sides'
    /// samples together narrow a start's error; an idle watch's answers
    /// stay as small as they were.
    pub fn clock_to_tell(&self, asker: &str, now: Duration) -> Option<(i64, i64)> {
        if !self.clock_peers.contains(asker) {
            return None;
        }
        self.clock(asker, now).map(|e| (e.offset_ns, e.bound_ns))
    }

    /// A first connection to `peer` opened. The first connection of a node
    /// cut off from everyone, or one with a node that is not a member (a
    /// newcomer, the other side of a healed partition), prompts an ask for
    /// its list of members, and an announcement of this node.
    pub fn on_connected(&mut self, peer: &str, now: Duration) {
        let first = self.connected.is_empty();
        let stranger =
            self.membership.get(peer).is_none() && !self.membership.leads().any(|hb| hb.id == peer);
        if first || stranger {
            self.sync.wanted = Some(peer.to_owned());
        }
        if first {
            self.announce_at = ANNOUNCE_AGAIN.iter().map(|d| now + *d).collect();
        }
        self.connected.insert(peer.to_owned());
        self.were_connected.insert(peer.to_owned());
        self.redials.remove(peer);
        self.dead.remove(peer);
    }

    /// The last connection to `peer` closed.
    pub fn on_disconnected(&mut self, peer: &str) {
        self.connected.remove(peer);
    }

    /// A [`Action::DialBootstrap`] of `addr` for the seed at `index`
    /// connected.
    pub fn on_bootstrap_connected(&mut self, index: usize, addr: &str) {
        self.bootstraps.on_connected(index, addr);
    }

    /// The answer to a [`Action::Resolve`] for the seed at `index`: the
    /// name's addresses, or `None` when resolving failed. Returns the dials
    /// to make: every address of the name but this node's own and those a
    /// member announces (see [`bootstrap`]).
    pub fn on_resolved(
        &mut self,
        index: usize,
        answer: Option<&[std::net::IpAddr]>,
    ) -> Vec<Action> {
        let announced: BTreeSet<&str> = self
            .membership
            .members()
            .flat_map(|m| m.heartbeat.listen.iter().map(String::as_str))
            .chain(self.listen.iter().map(String::as_str))
            .collect();
        // An address with a peer id matches the same address announced
        // without it.
        let skip = |addr: &str| {
            let bare = addr.split_once("/p2p/").map_or(addr, |(bare, _)| bare);
            announced.contains(bare)
        };
        self.bootstraps.on_resolved(index, answer, skip)
    }

    /// When the bootstrap seed at `index` will be dialed or resolved next,
    /// if it still is (for the log line of a failure).
    pub fn bootstrap_retry_at(&self, index: usize) -> Option<Duration> {
        self.bootstraps.retry_at(index)
    }

    /// A member, if known.
    pub fn member(&self, peer: &str) -> Option<&crate::membership::Member> {
        self.membership.get(peer)
    }

    /// Every member, without the clock estimates [`Self::peers`] works out.
    pub fn members(&self) -> impl Iterator<Item = &crate::membership::Member> {
        self.membership.members()
    }

    /// The region of a member, if known.
    pub fn region_of(&self, peer: &str) -> Option<&str> {
        self.membership
            .get(peer)
            .map(|m| m.heartbeat.region.as_str())
    }

    /// The addresses a member announces.
    pub fn addresses_of(&self, peer: &str) -> Option<&[String]> {
        self.membership
            .get(peer)
            .map(|m| m.heartbeat.listen.as_slice())
    }

    /// Whether a connection to `peer` is open.
    pub fn is_connected(&self, peer: &str) -> bool {
        self.connected.contains(peer)
    }

    /// How many peers this node has a connection to.
    pub fn connected_count(&self) -> usize {
        self.connected.len()
    }

    /// The clock estimate of a member at `now`.
    pub fn clock(&self, peer: &str, now: Duration) -> Option<Estimate> {
        self.clocks.get(peer)?.filter.estimate(now)
    }

    /// Every member with what this node measured of it, by peer id.
    pub fn peers(&self, now: Duration) -> Vec<PeerSnapshot<'_>> {
        self.membership
            .members()
            .map(|member| {
                let id = &member.heartbeat.id;
                let clock = self.clocks.get(id);
                PeerSnapshot {
                    member,
                    clock: clock.and_then(|c| c.filter.estimate(now)),
                    last_rtt_ns: clock.and_then(|c| c.last_rtt_ns),
                    connected: self.connected.contains(id),
                }
            })
            .collect()
    }
}

/// Dials a node this node is not connected to, on its redial backoff in
/// `redials`.
fn redial(
    redials: &mut BTreeMap<String, Redial>,
    config: &MeshConfig,
    id: &str,
    addrs: &[String],
    now: Duration,
    actions: &mut Vec<Action>,
) {
    if addrs.is_empty() {
        return;
    }
    let redial = redials
        .entry(id.to_owned())
        .or_insert_with(|| Redial::new(now, config.redial_min));
    if redial.due(now, config.redial_max) {
        actions.push(Action::DialPeer {
            peer: id.to_owned(),
            addrs: addrs.to_vec(),
        });
    }
}

/// How long a connection outside a node's view stays open unused (see
/// [`MeshCore::closes`]): as long as a request may wait for its answer.
pub const IDLE_CLOSE: Duration = Duration::from_secs(10);

/// Chords of the view beside the ring's neighbours: the members
/// `n / 2`, `n / 4`, ... `n / 2^VIEW_CHORDS` places away either side.
pub const VIEW_CHORDS: u32 = 4;

/// The places away on the ring, either side, of the members a node of a
/// mesh of `n` other members keeps in its view: `1..=watch`, and the
/// chords `n / 2`, `n / 4`, `n / 8`, `n / 16` ([`VIEW_CHORDS`]).
///
/// The same offsets both ways make the view symmetric where two nodes know
/// the same members: `b` is `k` places before `a` exactly when `a` is `k`
/// places after `b`, so each keeps the connection the other keeps. The
/// ring's neighbours join every node to the next; the chords halve the way
/// across, so gossip crosses a mesh of 1,000 in a few hops over at most 16
/// connections a node (2 × (4 + 4)).
pub fn view_offsets(n: usize, watch: usize) -> BTreeSet<usize> {
    (1..=watch.min(n))
        .chain((1..=VIEW_CHORDS).map(|j| n >> j))
        .filter(|k| (1..=n).contains(k))
        .collect()
}

/// Where a node sits on the ring of watches: a hash of its id, the same
/// on every node.
pub fn ring_position(id: &str) -> u64 {
    let mut hash = Fnv::default();
    hash.write(id.as_bytes());
    hash.0
}

/// 64-bit FNV-1a: stable across nodes, versions and platforms, as the ring
/// and the members digest need (std's hasher promises none of that).
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

#[cfg(test)]
mod tests;
