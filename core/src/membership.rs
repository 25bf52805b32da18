//! Who is in the mesh, as a pure state machine.
//!
//! A node does not hear every other node every second: that costs each
//! node traffic in proportion to the mesh, and the mesh in its square. It
//! *watches* a few members (which ones is the mesh core's choice, see
//! [`crate::mesh`]): it asks each of them every second, and judges them by
//! their silence. Every other member it takes as alive until a watcher
//! says otherwise. [`Membership`] takes what it hears and the passing of
//! (virtual) time, and says who joined, who went quiet, who came back and
//! who left:
//!
//! - a watched member is **suspected** after
//!   [`MembershipConfig::suspect_after`] without an answer (3 missed
//!   beats by default), once the caller got no second opinion that it is
//!   alive within [`MembershipConfig::second_opinion_for`]
//!   ([`Membership::take_doubts`], [`Membership::heard_of`]), and
//!   **removed** after
//!   [`MembershipConfig::remove_after`] (9 s of silence);
//! - a member that another node's watch suspects ([`Membership::on_suspicion`])
//!   is suspected here too, and removed
//!   [`MembershipConfig::confirm_after`] later (5.5 s: the same 9 s after
//!   its last beat) unless it answers the suspicion with a newer heartbeat
//!   first: a live node that hears it is suspected refutes it;
//! - a heartbeat from a removed member makes it **join** again.
//!
//! Heartbeats may arrive late, twice or out of order, so each carries
//! `(boot, seq)`: the sender's start time and a counter that grows whenever
//! what it says changes (and when it refutes a suspicion). An older pair than
//! the newest seen is ignored; a newer `boot` is a restart of the same node.
//! A heartbeat of a protocol version newer than this node's is refused (and
//! the caller logs it once), so old nodes do not act on fields they do not
//! understand.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The membership protocol version this node speaks: 2 since heartbeats go
/// to watchers rather than to everyone.
pub const PROTOCOL: u32 = 2;

/// A node's announcement of itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Protocol version of the sender.
    pub protocol: u32,
    /// The sender's peer id.
    pub id: String,
    /// Its human name.
    pub name: String,
    /// Its region, for load shares and latency emulation.
    pub region: String,
    /// When the sender started (its wall clock, ns): a restart increases it.
    pub boot: u64,
    /// Counts up, within one boot, whenever the heartbeat changes or the
    /// sender refutes a suspicion of itself.
    pub seq: u64,
    /// CPU cores.
    pub cores: u32,
    /// The most VUs it will run.
    pub vu_limit: u32,
    /// Its software version.
    pub version: String,
    /// CPU use, 0..=1 per core summed.
    pub cpu: f32,
    /// Open sockets.
    pub sockets: u32,
    /// Addresses it listens on (multiaddrs).
    pub listen: Vec<String>,
    /// The sender is shutting down: drop it now rather than after the
    /// silence of [`MembershipConfig::remove_after`]. Absent (false) in
    /// heartbeats of nodes that predate it.
    #[serde(default)]
    pub leaving: bool,
    /// Counts the steps of the sender's wall clock since it started: a
    /// member that sees it change drops its clock samples of the sender
    /// (taken against the old clock) and samples it again at once.
    #[serde(default)]
    pub clock_epoch: u32,
    /// The sender runs a share: it beats faster
    /// ([`crate::mesh::MeshConfig::busy_heartbeat_every`]), and is
    /// suspected sooner ([`MembershipConfig::busy_suspect_after`]), so a
    /// run hands a frozen node's share on within about a second.
    #[serde(default)]
    pub busy: bool,
}

/// A watched member's answer, beside the clock answer: that it is there,
/// its load, and its heartbeat when the asker's is not the latest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pulse {
    /// When the member started (its wall clock, ns).
    pub boot: u64,
    /// Its heartbeat's `seq`.
    pub seq: u64,
    /// CPU use, 0..=1 per core summed.
    pub cpu: f32,
    /// Open sockets.
    pub sockets: u32,
    /// Its heartbeat, when the asker holds another `(boot, seq)`; absent
    /// otherwise (most answers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat: Option<Heartbeat>,
}

/// A member as this node sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    /// Its latest heartbeat.
    pub heartbeat: Heartbeat,
    /// When it was last heard from (monotonic).
    pub last_seen: Duration,
    /// Whether it has gone quiet (here, or by another node's watch).
    pub suspect: bool,
    /// Whether this node watches it, and so judges it by its silence.
    pub watched: bool,
    /// When it was suspected.
    pub suspected_at: Option<Duration>,
}

/// A change in membership, to log and act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A new member (or a removed one, back).
    Joined(String),
    /// A member restarted (a newer boot).
    Restarted(String),
    /// A member missed its heartbeats.
    Suspected(String),
    /// A suspected member was heard from again.
    Recovered(String),
    /// A member was silent too long and is gone.
    Left(String),
    /// A member said it is shutting down, and is gone.
    Stopped(String),
}

/// Timing of failure detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MembershipConfig {
    /// Silence before a member is suspected.
    pub suspect_after: Duration,
    /// Silence before a member whose last heartbeat said it runs a share
    /// is suspected.
    pub busy_suspect_after: Duration,
    /// Silence before a watched member is removed.
    pub remove_after: Duration,
    /// How long a member another node suspects stays suspected before it
    /// is removed, if it does not refute the suspicion.
    pub confirm_after: Duration,
    /// How long a watched member silent past its `suspect_after` waits
    /// for a second opinion (the caller asks others that watch it) before
    /// it is suspected.
    pub second_opinion_for: Duration,
}

impl Default for MembershipConfig {
    fn default() -> Self {
        MembershipConfig {
            suspect_after: Duration::from_millis(3_500),
            busy_suspect_after: Duration::from_millis(1_200),
            remove_after: Duration::from_secs(9),
            confirm_after: Duration::from_millis(5_500),
            second_opinion_for: Duration::from_millis(500),
        }
    }
}

/// Why a heartbeat was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// A protocol this node does not speak.
    #[error("heartbeat of protocol version {0} from {1}; this node speaks {PROTOCOL}: upgrade it")]
    FutureProtocol(u32, String),
    /// An empty or oversized id.
    #[error("heartbeat with an invalid peer id")]
    BadId,
    /// Already [`MAX_MEMBERS`] members.
    #[error("heartbeat of a new member {0}, but this node already keeps {MAX_MEMBERS} members")]
    Full(String),
}

/// The most members a node keeps: a peer with the mesh key could otherwise
/// announce identities without end. Heartbeats of new ids beyond it are
/// refused. It is also the most nodes a run may take
/// ([`crate::wire::MAX_CANDIDATES`]) and an ask for shards may list
/// ([`crate::sync::MAX_HAVE_NODES`]): a mesh of 10,000 nodes fits. A member
/// costs a node about 1.6 KB in all, a run's share of it included (the
/// simulator holds 2,000 nodes in 6.5 GB), and its heartbeat at most
/// 16 KiB more.
pub const MAX_MEMBERS: usize = 10_240;

/// How long a member that said it stops is remembered, so that its older
/// heartbeats, still travelling through gossip, do not bring it back.
const STOPPED_MEMORY: Duration = Duration::from_secs(60);

/// The members one node knows, itself excluded.
#[derive(Debug, Clone)]
pub struct Membership {
    me: String,
    config: MembershipConfig,
    members: BTreeMap<String, Member>,
    /// Members that said they stop: their last `(boot, seq)`, and when.
    stopped: BTreeMap<String, ((u64, u64), Duration)>,
    /// Members removed by the last [`Membership::tick`].
    removed: Vec<Member>,
    /// Nodes another member says it knows, not yet heard from themselves:
    /// their heartbeat as passed on, and when it came.
    leads: BTreeMap<String, (Heartbeat, Duration)>,
    /// Counts the joins and departures, so a caller can tell that the
    /// members changed.
    changes: u64,
    /// Watched members silent past their `suspect_after`, and since when
    /// this node waits for a second opinion on them.
    doubts: BTreeMap<String, Duration>,
    /// Doubts raised by ticks, for the caller to ask about.
    new_doubts: Vec<String>,
    /// The members a tick judges: those watched or suspected (a superset:
    /// one refuted since stays until the next tick). A tick looks up only
    /// these, so it costs the same whatever the size of the mesh.
    judged: BTreeSet<String>,
}

impl Membership {
    /// Membership as seen by node `me`.
    pub fn new(me: &str, config: MembershipConfig) -> Membership {
        Membership {
            me: me.to_owned(),
            config,
            members: BTreeMap::new(),
            stopped: BTreeMap::new(),
            removed: Vec::new(),
            leads: BTreeMap::new(),
            changes: 0,
            doubts: BTreeMap::new(),
            new_doubts: Vec::new(),
            judged: BTreeSet::new(),
        }
    }

    /// Takes a heartbeat heard at `now`.
    pub fn on_heartbeat(&mut self, hb: Heartbeat, now: Duration) -> Result<Option<Event>, Refused> {
        if hb.protocol > PROTOCOL {
            return Err(Refused::FutureProtocol(hb.protocol, hb.id));
        }
        if hb.id.is_empty() || hb.id.len() > 128 {
            return Err(Refused::BadId);
        }
        if hb.id == self.me {
            return Ok(None);
        }
        let id = hb.id.clone();
        if let Some((last, _)) = self.stopped.get(&id) {
            if (hb.boot, hb.seq) <= *last {
                return Ok(None);
            }
            self.stopped.remove(&id);
        }
        self.leads.remove(&id);
        if hb.leaving {
            // Only members are remembered as stopped: strangers' goodbyes
            // would otherwise fill the memory.
            return Ok(self.members.remove(&id).map(|_| {
                self.changes += 1;
                self.stopped.insert(id.clone(), ((hb.boot, hb.seq), now));
                Event::Stopped(id)
            }));
        }
        if !self.members.contains_key(&id) && self.members.len() >= MAX_MEMBERS {
            return Err(Refused::Full(id));
        }
        match self.members.get_mut(&id) {
            None => {
                self.members.insert(
                    id.clone(),
                    Member {
                        heartbeat: hb,
                        last_seen: now,
                        suspect: false,
                        watched: false,
                        suspected_at: None,
                    },
                );
                self.changes += 1;
                Ok(Some(Event::Joined(id)))
            }
            Some(m) => {
                let old = (m.heartbeat.boot, m.heartbeat.seq);
                if (hb.boot, hb.seq) <= old {
                    return Ok(None);
                }
                let restarted = hb.boot > old.0;
                let was_suspect = m.suspect;
                m.heartbeat = hb;
                m.last_seen = now;
                m.suspect = false;
                m.suspected_at = None;
                if restarted {
                    self.changes += 1;
                }
                Ok(if restarted {
                    Some(Event::Restarted(id))
                } else if was_suspect {
                    Some(Event::Recovered(id))
                } else {
                    None
                })
            }
        }
    }

    /// Advances time: suspects and removes silent watched members, and
    /// removes members suspected for [`MembershipConfig::confirm_after`].
    /// The suspicions it raises are this node's own (its watch found the
    /// member silent), for the caller to tell the mesh.
    pub fn tick(&mut self, now: Duration) -> Vec<Event> {
        let mut events = Vec::new();
        let config = self.config;
        self.stopped
            .retain(|_, (_, at)| now.saturating_sub(*at) < STOPPED_MEMORY);
        self.leads
            .retain(|_, (_, at)| now.saturating_sub(*at) < config.remove_after);
        let mut removed = Vec::new();
        let members = &mut self.members;
        let (doubts, new_doubts) = (&mut self.doubts, &mut self.new_doubts);
        self.judged.retain(|id| {
            let Some(m) = members.get_mut(id) else {
                return false;
            };
            let silent = now.saturating_sub(m.last_seen);
            let confirmed = m
                .suspected_at
                .is_some_and(|at| now.saturating_sub(at) > config.confirm_after);
            if (m.watched && silent > config.remove_after) || (!m.watched && confirmed) {
                events.push(Event::Left(id.clone()));
                removed.extend(members.remove(id));
                return false;
            }
            let suspect_after = if m.heartbeat.busy {
                config.busy_suspect_after
            } else {
                config.suspect_after
            };
            if m.watched && silent > suspect_after && !m.suspect {
                // First a second opinion: this node's link to the member
                // may be what is silent.
                let since = *doubts.entry(id.clone()).or_insert_with(|| {
                    new_doubts.push(id.clone());
                    now
                });
                if now.saturating_sub(since) >= config.second_opinion_for {
                    doubts.remove(id);
                    m.suspect = true;
                    m.suspected_at = Some(now);
                    events.push(Event::Suspected(id.clone()));
                }
            } else {
                doubts.remove(id);
            }
            m.watched || m.suspect
        });
        self.doubts.retain(|id, _| self.judged.contains(id));
        self.changes += removed.len() as u64;
        self.removed = removed;
        events
    }

    /// The watched members that went silent past their `suspect_after`
    /// since the last call: the caller asks others that watch them whether
    /// they hear them ([`Membership::heard_of`]), and says so where there
    /// is no one to ask ([`Membership::no_second_opinion`]).
    pub fn take_doubts(&mut self) -> Vec<String> {
        std::mem::take(&mut self.new_doubts)
    }

    /// Whether this node waits for a second opinion on `id`.
    pub fn doubts(&self, id: &str) -> bool {
        self.doubts.contains_key(id)
    }

    /// Others that watch `id` heard it at `heard_at`: it is alive, and only
    /// this node's link to it is silent. Its silence counts from then.
    pub fn heard_of(&mut self, id: &str, heard_at: Duration) {
        if self.doubts.remove(id).is_some()
            && let Some(m) = self.members.get_mut(id)
        {
            m.last_seen = m.last_seen.max(heard_at);
        }
    }

    /// No second opinion on `id` will come (no one else to ask, or most of
    /// those asked have not heard it either): the next tick suspects it.
    pub fn no_second_opinion(&mut self, id: &str) {
        if let Some(since) = self.doubts.get_mut(id) {
            *since = Duration::ZERO;
        }
    }

    /// Which members this node watches: those in `watched` are judged by
    /// their silence from now on, counted from `now` at the earliest (a
    /// member it has not asked before is not silent yet).
    pub fn set_watched(&mut self, watched: &BTreeSet<String>, now: Duration) {
        for (id, m) in &mut self.members {
            let watch = watched.contains(id);
            if watch && !m.watched {
                m.last_seen = m.last_seen.max(now);
            }
            m.watched = watch;
            if watch || m.suspect {
                self.judged.insert(id.clone());
            }
        }
    }

    /// This node itself stood still for `gap` (frozen, or its event loop
    /// starved) until `now`: the watched members' silence in that time is
    /// not theirs, and is not held against them.
    pub fn forgive(&mut self, gap: Duration, now: Duration) {
        for m in self.members.values_mut().filter(|m| m.watched) {
            m.last_seen = (m.last_seen + gap).min(now);
        }
    }

    /// Another member's watch found `id` silent when it knew it at
    /// `(boot, seq)`: it is suspected here too, unless this node has heard
    /// a newer heartbeat of it since.
    pub fn on_suspicion(&mut self, id: &str, boot: u64, seq: u64, now: Duration) -> Option<Event> {
        let m = self.members.get_mut(id)?;
        if m.suspect || (boot, seq) < (m.heartbeat.boot, m.heartbeat.seq) {
            return None;
        }
        m.suspect = true;
        m.suspected_at = Some(now);
        self.judged.insert(id.to_owned());
        Some(Event::Suspected(id.to_owned()))
    }

    /// `id` answered directly with the `(boot, seq)` this node holds: it
    /// is heard from now, with its load as it says. Returns `false` when
    /// the pair is not the one held (the caller needs its heartbeat).
    pub fn on_pulse(&mut self, id: &str, pulse: &Pulse, now: Duration) -> bool {
        let Some(m) = self.members.get_mut(id) else {
            return false;
        };
        if (m.heartbeat.boot, m.heartbeat.seq) != (pulse.boot, pulse.seq) {
            return false;
        }
        m.last_seen = now;
        m.heartbeat.cpu = pulse.cpu;
        m.heartbeat.sockets = pulse.sockets;
        true
    }

    /// Takes the heartbeat of a node that another member passed on: a
    /// lead, kept until that node is heard from itself (then it joins) or
    /// for [`MembershipConfig::remove_after`]. What a member passes on for
    /// another is not that node's word, so it changes no member.
    pub fn on_lead(&mut self, hb: Heartbeat, now: Duration) {
        if hb.protocol > PROTOCOL
            || hb.id.is_empty()
            || hb.id.len() > 128
            || hb.id == self.me
            || hb.leaving
            || self.members.contains_key(&hb.id)
            || self.stopped.contains_key(&hb.id)
            || (!self.leads.contains_key(&hb.id) && self.leads.len() >= MAX_MEMBERS)
        {
            return;
        }
        self.leads.insert(hb.id.clone(), (hb, now));
    }

    /// Whether `id` is a lead.
    pub fn is_lead(&self, id: &str) -> bool {
        self.leads.contains_key(id)
    }

    /// The leads: nodes heard of but not yet from.
    pub fn leads(&self) -> impl Iterator<Item = &Heartbeat> {
        self.leads.values().map(|(hb, _)| hb)
    }

    /// Counts joins and departures: when it has not moved, the members
    /// are the same ones.
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// Suspects `id` at once (its connection closed and its address
    /// refused the redial: its process is gone). Its next heartbeat, should
    /// it come back, clears it as any suspicion.
    pub fn suspect_now(&mut self, id: &str, now: Duration) -> Option<Event> {
        let m = self.members.get_mut(id)?;
        if m.suspect {
            return None;
        }
        m.suspect = true;
        m.suspected_at = Some(now);
        self.judged.insert(id.to_owned());
        Some(Event::Suspected(id.to_owned()))
    }

    /// The members the last [`tick`](Self::tick) removed, with their last
    /// heartbeats.
    pub fn take_removed(&mut self) -> Vec<Member> {
        std::mem::take(&mut self.removed)
    }

    /// The members, by id.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    /// The members whose ids sort after `after` (all, without it), in the
    /// order of their ids.
    pub fn members_after(&self, after: Option<&str>) -> impl Iterator<Item = &Member> {
        use std::ops::Bound::{Excluded, Unbounded};
        let from = after.map_or(Unbounded, Excluded);
        self.members
            .range::<str, _>((from, Unbounded))
            .map(|(_, m)| m)
    }

    /// One member.
    pub fn get(&self, id: &str) -> Option<&Member> {
        self.members.get(id)
    }

    /// How many members (not suspected ones included).
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether no other node is known.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn hb(id: usize, boot: u64, seq: u64) -> Heartbeat {
        Heartbeat {
            protocol: PROTOCOL,
            id: format!("node-{id}"),
            name: format!("n{id}"),
            region: if id.is_multiple_of(2) { "fra" } else { "nrt" }.into(),
            boot,
            seq,
            cores: 2,
            vu_limit: 1000,
            version: "test".into(),
            cpu: 0.0,
            sockets: 0,
            listen: vec![],
            leaving: false,
            clock_epoch: 0,
            busy: false,
        }
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    fn ids(ids: &[&str]) -> std::collections::BTreeSet<String> {
        ids.iter().map(|id| (*id).to_owned()).collect()
    }

    /// Suspects as soon as the silence runs out, without waiting for a
    /// second opinion.
    fn without_opinions() -> MembershipConfig {
        MembershipConfig {
            second_opinion_for: Duration::ZERO,
            ..MembershipConfig::default()
        }
    }

    #[test]
    fn a_silent_member_is_doubted_first_and_suspected_without_a_second_opinion() {
        let mut m = Membership::new("node-0", MembershipConfig::default());
        for i in 1..=3 {
            let _ = m.on_heartbeat(hb(i, 1, 1), secs(0.0));
        }
        m.set_watched(&ids(&["node-1", "node-2", "node-3"]), secs(0.0));
        assert!(m.tick(secs(3.4)).is_empty());
        // Silent past 3.5 s: doubted, told once, not yet suspected.
        assert!(m.tick(secs(3.6)).is_empty());
        assert_eq!(m.take_doubts().len(), 3);
        assert!(m.take_doubts().is_empty(), "told once");
        assert!((1..=3).all(|i| m.doubts(&format!("node-{i}"))));
        // Others heard node-1 at 3.0 s: its silence counts from then.
        m.heard_of("node-1", secs(3.0));
        // Those asked have not heard node-2: suspected at the next tick.
        m.no_second_opinion("node-2");
        assert_eq!(m.tick(secs(3.7)), vec![Event::Suspected("node-2".into())]);
        // No opinion on node-3 in half a second: suspected.
        assert!(m.tick(secs(4.0)).is_empty());
        assert_eq!(m.tick(secs(4.1)), vec![Event::Suspected("node-3".into())]);
        // node-1, silent 3.5 s from 3.0 s, is doubted again.
        assert!(m.tick(secs(6.4)).is_empty() && m.take_doubts().is_empty());
        assert!(m.tick(secs(6.6)).is_empty());
        assert_eq!(m.take_doubts(), vec!["node-1".to_owned()]);
        // An answer of its own ends the doubt.
        assert_eq!(m.on_heartbeat(hb(1, 1, 2), secs(6.7)), Ok(None));
        assert!(m.tick(secs(6.8)).is_empty());
        assert!(!m.doubts("node-1"));
        assert!(m.tick(secs(7.5)).is_empty(), "not suspected");
    }

    #[test]
    fn join_suspect_recover_leave_restart() {
        let mut m = Membership::new("node-0", without_opinions());
        assert_eq!(
            m.on_heartbeat(hb(1, 1, 0), secs(0.0)),
            Ok(Some(Event::Joined("node-1".into())))
        );
        m.set_watched(&ids(&["node-1"]), secs(0.0));
        assert_eq!(
            m.on_heartbeat(hb(0, 1, 0), secs(0.0)),
            Ok(None),
            "itself is not a member"
        );
        assert_eq!(m.on_heartbeat(hb(1, 1, 1), secs(1.0)), Ok(None));
        assert!(
            m.tick(secs(4.0)).is_empty(),
            "3 s of silence is not yet 3 missed heartbeats"
        );
        assert_eq!(m.tick(secs(4.6)), vec![Event::Suspected("node-1".into())]);
        assert!(m.tick(secs(5.0)).is_empty(), "suspected once");
        assert_eq!(
            m.on_heartbeat(hb(1, 1, 0), secs(5.0)),
            Ok(None),
            "a stale heartbeat changes nothing"
        );
        assert!(m.get("node-1").is_some_and(|x| x.suspect));
        assert_eq!(
            m.on_heartbeat(hb(1, 1, 5), secs(5.0)),
            Ok(Some(Event::Recovered("node-1".into())))
        );
        assert_eq!(
            m.tick(secs(13.9)),
            vec![Event::Suspected("node-1".into())],
            "8.9 s of silence: suspected, not yet removed"
        );
        assert_eq!(
            m.tick(secs(14.1)),
            vec![Event::Left("node-1".into())],
            "9 s of silence"
        );
        assert!(m.is_empty());
        assert_eq!(
            m.on_heartbeat(hb(1, 1, 9), secs(16.0)),
            Ok(Some(Event::Joined("node-1".into())))
        );
        assert_eq!(
            m.on_heartbeat(hb(1, 2, 0), secs(17.0)),
            Ok(Some(Event::Restarted("node-1".into())))
        );
    }

    #[test]
    fn a_member_that_says_it_stops_is_gone_at_once_and_stays_gone() {
        let mut m = Membership::new("node-0", MembershipConfig::default());
        assert_eq!(
            m.on_heartbeat(hb(1, 1, 5), secs(0.0)),
            Ok(Some(Event::Joined("node-1".into())))
        );
        let mut bye = hb(1, 1, 6);
        bye.leaving = true;
        assert_eq!(
            m.on_heartbeat(bye.clone(), secs(1.0)),
            Ok(Some(Event::Stopped("node-1".into())))
        );
        assert!(m.is_empty());
        assert_eq!(m.on_heartbeat(bye, secs(1.1)), Ok(None), "said once");
        assert_eq!(
            m.on_heartbeat(hb(1, 1, 5), secs(1.2)),
            Ok(None),
            "an older heartbeat still in flight does not bring it back"
        );
        assert!(m.tick(secs(30.0)).is_empty());
        assert_eq!(
            m.on_heartbeat(hb(1, 2, 0), secs(31.0)),
            Ok(Some(Event::Joined("node-1".into()))),
            "a restart joins again"
        );
    }

    #[test]
    fn future_protocols_and_bad_ids_are_refused() {
        let mut m = Membership::new("me", MembershipConfig::default());
        let mut future = hb(1, 1, 1);
        future.protocol = PROTOCOL + 1;
        assert!(matches!(
            m.on_heartbeat(future, secs(0.0)),
            Err(Refused::FutureProtocol(p, _)) if p == PROTOCOL + 1
        ));
        let mut bad = hb(1, 1, 1);
        bad.id = String::new();
        assert_eq!(m.on_heartbeat(bad, secs(0.0)), Err(Refused::BadId));
        assert!(m.is_empty());
    }

    #[test]
    fn an_unwatched_member_goes_on_a_suspicion_unless_it_refutes_it() {
        let mut m = Membership::new("node-0", without_opinions());
        for i in 1..=3 {
            m.on_heartbeat(hb(i, 1, 4), secs(0.0)).unwrap();
        }
        m.set_watched(&ids(&["node-1"]), secs(0.0));
        // An unwatched member is never suspected for its silence here.
        assert_eq!(m.tick(secs(30.0)), vec![Event::Left("node-1".into())]);
        assert_eq!(m.len(), 2);
        // A watcher's suspicion of an older heartbeat than the one held
        // changes nothing; one of the latest suspects it.
        assert_eq!(m.on_suspicion("node-2", 1, 3, secs(30.0)), None);
        assert_eq!(
            m.on_suspicion("node-2", 1, 4, secs(30.0)),
            Some(Event::Suspected("node-2".into()))
        );
        assert_eq!(m.on_suspicion("node-2", 1, 4, secs(31.0)), None, "once");
        assert_eq!(
            m.on_suspicion("node-3", 1, 4, secs(30.0)),
            Some(Event::Suspected("node-3".into()))
        );
        // node-3 refutes it with a newer heartbeat; node-2 does not, and
        // goes 5.5 s after the suspicion.
        assert_eq!(
            m.on_heartbeat(hb(3, 1, 5), secs(32.0)),
            Ok(Some(Event::Recovered("node-3".into())))
        );
        assert!(m.tick(secs(35.4)).is_empty());
        assert_eq!(m.tick(secs(35.6)), vec![Event::Left("node-2".into())]);
        assert!(m.tick(secs(60.0)).is_empty(), "node-3 stays, unwatched");
        // A pulse of the held heartbeat is a sign of life; of another, not.
        m.set_watched(&ids(&["node-3"]), secs(60.0));
        let pulse = |seq| Pulse {
            boot: 1,
            seq,
            cpu: 0.5,
            sockets: 7,
            heartbeat: None,
        };
        assert!(m.on_pulse("node-3", &pulse(5), secs(63.0)));
        assert!(!m.on_pulse("node-3", &pulse(6), secs(66.0)));
        assert!(m.tick(secs(66.4)).is_empty(), "3.4 s since the pulse");
        assert_eq!(m.tick(secs(66.6)), vec![Event::Suspected("node-3".into())]);
        assert_eq!(m.get("node-3").map(|x| x.heartbeat.sockets), Some(7));
    }

    #[test]
    fn leads_wait_for_their_own_word_and_expire() {
        let mut m = Membership::new("node-0", MembershipConfig::default());
        m.on_heartbeat(hb(1, 1, 1), secs(0.0)).unwrap();
        m.on_lead(hb(1, 1, 9), secs(0.0));
        m.on_lead(hb(0, 1, 9), secs(0.0));
        m.on_lead(hb(2, 1, 1), secs(0.0));
        let mut gone = hb(3, 1, 1);
        gone.leaving = true;
        m.on_lead(gone, secs(0.0));
        let leads: Vec<&str> = m.leads().map(|l| l.id.as_str()).collect();
        assert_eq!(leads, ["node-2"], "not a member, not itself, not a leaver");
        assert_eq!(
            m.get("node-1").map(|x| x.heartbeat.seq),
            Some(1),
            "a lead changes no member"
        );
        assert_eq!(m.len(), 1);
        assert_eq!(
            m.on_heartbeat(hb(2, 1, 1), secs(1.0)),
            Ok(Some(Event::Joined("node-2".into())))
        );
        assert_eq!(m.leads().count(), 0);
        m.on_lead(hb(4, 1, 1), secs(1.0));
        let _ = m.tick(secs(9.9));
        assert_eq!(m.leads().count(), 1);
        let _ = m.tick(secs(10.1));
        assert_eq!(
            m.leads().count(),
            0,
            "a lead that never answers is forgotten"
        );
    }

    /// Hundreds of nodes gossiping under virtual time, with message loss and
    /// a partition that heals.
    #[test]
    fn hundreds_of_members_with_loss_and_a_partition() {
        const N: usize = 300;
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let mut views: Vec<Membership> = (0..N)
            .map(|i| Membership::new(&format!("node-{i}"), MembershipConfig::default()))
            .collect();
        let mut left = vec![0usize; N];
        // Heartbeats every second, 20 % lost; nodes start staggered within 1 s.
        let mut seq = 0u64;
        let side = |i: usize| i < N / 2;
        let mut t = 0.0;
        while t < 60.0 {
            let partitioned = (20.0..40.0).contains(&t);
            for from in 0..N {
                let beat = hb(from, 1, seq);
                for (to, view) in views.iter_mut().enumerate() {
                    if to == from || rng.chance(0.2) || (partitioned && side(from) != side(to)) {
                        continue;
                    }
                    let at = secs(t + (from as f64 / N as f64));
                    let _ = view.on_heartbeat(beat.clone(), at);
                }
            }
            seq += 1;
            t += 1.0;
            let everyone: std::collections::BTreeSet<String> =
                (0..N).map(|i| format!("node-{i}")).collect();
            for (i, view) in views.iter_mut().enumerate() {
                // Everyone watches everyone here (the old full mesh).
                view.set_watched(&everyone, secs(t));
                left[i] += view
                    .tick(secs(t))
                    .iter()
                    .filter(|e| matches!(e, Event::Left(_)))
                    .count();
            }
            if (t - 10.0).abs() < 1e-9 {
                assert!(
                    views.iter().all(|v| v.len() == N - 1),
                    "everyone knows everyone after 10 s, even with direct gossip only"
                );
                assert_eq!(left.iter().sum::<usize>(), 0, "20 % loss removes nobody");
            }
            if (t - 35.0).abs() < 1e-9 {
                for (i, v) in views.iter().enumerate() {
                    let same_side = if side(i) { N / 2 } else { N - N / 2 };
                    assert_eq!(
                        v.len(),
                        same_side - 1,
                        "node {i} sees only its side of the partition"
                    );
                }
            }
        }
        assert!(
            views.iter().all(|v| v.len() == N - 1),
            "the healed mesh knows everyone again"
        );
        assert!(
            left.iter().all(|l| *l >= N / 2 - 1),
            "each node saw the other side leave"
        );
    }
}
