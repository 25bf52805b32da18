//! One node's view of the mesh, as a state machine with no I/O.
//!
//! [`MeshCore`] ties together what a running node does every moment it is up:
//!
//! - it announces itself with a [`Heartbeat`] every second;
//! - it keeps [`Membership`] from the heartbeats it hears;
//! - it keeps a [`ClockFilter`] per member, fed by NTP-style exchanges that
//!   it schedules: a quick burst after a member joins, then a steady pace, so
//!   the estimate is ready soon and follows drift later;
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
use crate::membership::{Event, Heartbeat, Member, Membership, MembershipConfig, PROTOCOL};
use crate::wire::{MAX_ADDR_LEN, MAX_LISTEN_ADDRS};

pub mod bootstrap;

use bootstrap::Bootstraps;
pub use bootstrap::{Family, Seed, SeedName};

/// The most members that left a node keeps dialing.
const MAX_DEPARTED: usize = 1024;

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
    /// Between two heartbeats.
    pub heartbeat_every: Duration,
    /// Between two heartbeats while this node runs a share.
    pub busy_heartbeat_every: Duration,
    /// Failure detection.
    pub membership: MembershipConfig,
    /// Between clock exchanges with a member while its first samples come in.
    pub clock_fast: Duration,
    /// How many samples are gathered at the fast pace.
    pub clock_fast_samples: u32,
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
            membership: MembershipConfig::default(),
            clock_fast: Duration::from_millis(200),
            clock_fast_samples: 8,
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
    /// Start a clock exchange with this member.
    AskClock {
        /// The member's peer id.
        peer: String,
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
    next_at: Duration,
    last_rtt_ns: Option<i64>,
}

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
    next_heartbeat: Duration,
    listen: Vec<String>,
    clocks: BTreeMap<String, PeerClock>,
    redials: BTreeMap<String, Redial>,
    departed: BTreeMap<String, Departed>,
    connected: BTreeSet<String>,
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
}

impl MeshCore {
    /// A node that starts at `now`, dialing `bootstraps` until one answers.
    pub fn new(me: LocalNode, config: MeshConfig, bootstraps: Vec<Seed>, now: Duration) -> Self {
        MeshCore {
            membership: Membership::new(&me.id, config.membership),
            me,
            config,
            seq: 0,
            next_heartbeat: now,
            listen: Vec::new(),
            clocks: BTreeMap::new(),
            redials: BTreeMap::new(),
            departed: BTreeMap::new(),
            connected: BTreeSet::new(),
            clock_epoch: 0,
            stepped_at: None,
            busy: false,
            dead: BTreeSet::new(),
            pending: Vec::new(),
            bootstraps: Bootstraps::new(bootstraps, now, config.redial_min, config.redial_max),
        }
    }

    /// This node.
    pub fn me(&self) -> &LocalNode {
        &self.me
    }

    /// Sets the addresses this node listens on, for its heartbeats.
    pub fn set_listen(&mut self, addrs: Vec<String>) {
        self.listen = addrs;
    }

    /// The addresses in this node's heartbeats.
    pub fn listen(&self) -> &[String] {
        &self.listen
    }

    /// Advances time to `now`: heartbeats, failure detection, clock
    /// exchanges and dials that are due.
    pub fn tick(&mut self, now: Duration, health: Health) -> Vec<Action> {
        let mut actions = Vec::new();
        if now >= self.next_heartbeat {
            self.seq += 1;
            let every = if self.busy {
                self.config.busy_heartbeat_every
            } else {
                self.config.heartbeat_every
            };
            // Keep the pace without drifting, but never send a burst to catch up.
            self.next_heartbeat = (self.next_heartbeat + every).max(now + every / 2);
            actions.push(Action::Publish(self.heartbeat(health)));
        }
        let mut events = std::mem::take(&mut self.pending);
        events.extend(self.membership.tick(now));
        for member in self.membership.take_removed() {
            let id = &member.heartbeat.id;
            // Only members this node was connected to are dialed again: an
            // identity heard of only through gossip chooses the addresses it
            // announces, and must not make the mesh dial them for minutes.
            let was_connected = self.clocks.contains_key(id);
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
            }
            actions.push(Action::Membership(event));
        }
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
        // Members and connections are both sorted by id: walk them side by
        // side rather than search one for each of the other (with a
        // thousand members, ticks happen often enough for it to show).
        let mut connected = self.connected.iter().peekable();
        for member in self.membership.members() {
            let id = &member.heartbeat.id;
            while connected.next_if(|c| *c < id).is_some() {}
            if connected.peek() == Some(&id) {
                if !self.clocks.contains_key(id) {
                    self.clocks.insert(
                        id.clone(),
                        PeerClock {
                            filter: ClockFilter::new(
                                self.config.clock_window,
                                self.config.clock_max_age,
                            ),
                            next_at: now,
                            last_rtt_ns: None,
                        },
                    );
                }
                let Some(clock) = self.clocks.get_mut(id) else {
                    continue;
                };
                if now >= clock.next_at {
                    // Fast until enough answers came back (questions may be
                    // lost, or refused while the peer has not heard of us).
                    let pace = if clock.filter.len() < self.config.clock_fast_samples as usize {
                        self.config.clock_fast
                    } else {
                        self.config.clock_every
                    };
                    clock.next_at = now + pace;
                    actions.push(Action::AskClock { peer: id.clone() });
                }
            } else if !member.heartbeat.listen.is_empty() {
                if !self.redials.contains_key(id) {
                    self.redials
                        .insert(id.clone(), Redial::new(now, self.config.redial_min));
                }
                let due = self
                    .redials
                    .get_mut(id)
                    .is_some_and(|r| r.due(now, self.config.redial_max));
                if due {
                    actions.push(Action::DialPeer {
                        peer: id.clone(),
                        addrs: member.heartbeat.listen.clone(),
                    });
                }
            }
        }
        actions
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

    /// Whether this node runs a share: while it does, it beats every
    /// [`MeshConfig::busy_heartbeat_every`] (the change takes effect at
    /// once), and says so, so the others suspect it sooner.
    pub fn set_busy(&mut self, busy: bool, now: Duration) {
        if busy != self.busy {
            self.busy = busy;
            self.next_heartbeat = self.next_heartbeat.min(now);
        }
    }

    /// A dial of `peer` failed because its address refused the connection:
    /// a member whose connection closed and whose address now refuses is a
    /// process that is gone, suspected at once (not after its silence).
    pub fn on_dial_refused(&mut self, peer: &str) {
        if self.connected.contains(peer) || self.membership.get(peer).is_none() {
            return;
        }
        self.dead.insert(peer.to_owned());
        if let Some(event) = self.membership.suspect_now(peer) {
            self.pending.push(event);
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
            clock.next_at = now;
        }
        self.clock_epoch = self.clock_epoch.wrapping_add(1);
        self.stepped_at = Some(now);
        // Tell the members now rather than at the next beat.
        self.next_heartbeat = now;
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
            clock.next_at = now;
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

    /// Takes a completed clock exchange with `peer`. Returns `false` if its
    /// timestamps are impossible (and so it was dropped).
    pub fn on_clock_answer(&mut self, peer: &str, exchange: Exchange, now: Duration) -> bool {
        let Some(clock) = self.clocks.get_mut(peer) else {
            return true;
        };
        match exchange.sample(now) {
            Some(sample) => {
                clock.last_rtt_ns = Some(sample.delay_ns);
                clock.filter.add(sample);
                true
            }
            None => false,
        }
    }

    /// A first connection to `peer` opened.
    pub fn on_connected(&mut self, peer: &str) {
        self.connected.insert(peer.to_owned());
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

    /// The region of a member, if known.
    pub fn region_of(&self, peer: &str) -> Option<&str> {
        self.membership
            .get(peer)
            .map(|m| m.heartbeat.region.as_str())
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

#[cfg(test)]
mod tests;
