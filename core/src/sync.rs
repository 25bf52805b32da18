//! Anti-entropy for shards: how nodes that missed shards get them.
//!
//! Shards travel by gossip, which is fast but gives no guarantee: a node that
//! was cut off, restarted, or simply lost a message never hears those shards
//! again from gossip. So once a run has ended, a node whose shards are not
//! all there asks one peer at a time: "here is what I hold (as ranges of
//! sequence numbers per node); send what I lack". The peer answers with up
//! to [`MAX_ANSWER_SHARDS`] of the shards it holds that the asker does not,
//! and says whether it holds more. Every node asks in turn, so every node
//! converges to the union of what the nodes hold, which is every shard that
//! any node still has.
//!
//! This module is the sans-IO part: what a node holds ([`have_of`]), what to
//! send ([`missing`]), and when to ask whom ([`SyncState`]). The event loop
//! (net/runtime/sync.rs) does the I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How often a node that lacks shards asks a peer.
pub const SYNC_EVERY: Duration = Duration::from_secs(2);
/// After this many answers in a row that brought nothing, a node asks less
/// often: the shards it lacks may be lost with their node.
pub const IDLE_ROUNDS: u32 = 10;
/// How often a node asks once it is idle.
pub const IDLE_EVERY: Duration = Duration::from_secs(30);
/// How long after a run's end a node keeps asking.
pub const SYNC_FOR: Duration = Duration::from_secs(3600);
/// The most shards one answer carries. Every node but the leader lacks
/// nearly every shard when a run ends: at 256 an answer, 300 simulated
/// nodes held every shard 8.3-10.5 s after the last was sealed, at 1024
/// 5.5 s.
pub const MAX_ANSWER_SHARDS: usize = 1024;
/// The most shard bytes one answer carries.
pub const MAX_ANSWER_BYTES: usize = 8 << 20;
/// The most ranges a request may carry, over all nodes.
pub const MAX_HAVE_RANGES: usize = 100_000;
/// The most nodes a request may list (a plan's most shares).
pub const MAX_HAVE_NODES: usize = crate::wire::MAX_CANDIDATES;
/// An ask not answered within this long is given up, whatever happened to
/// it, so one lost answer never stops a node from asking again.
pub const ASK_TIMEOUT: Duration = Duration::from_secs(60);

/// The shards a node holds of one other node: inclusive ranges of sequence
/// numbers, ascending and disjoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Have {
    /// The node that measured them.
    pub node: String,
    /// `(first, last)`, inclusive.
    pub ranges: Vec<(u64, u64)>,
}

/// What a node holds, from its set of shard keys `(node, seq)`.
pub fn have_of(held: &BTreeSet<(String, u64)>) -> Vec<Have> {
    let mut out: Vec<Have> = Vec::new();
    for (node, seq) in held {
        match out.last_mut() {
            Some(have) if have.node == *node => match have.ranges.last_mut() {
                Some(last) if last.1.checked_add(1) == Some(*seq) => last.1 = *seq,
                _ => have.ranges.push((*seq, *seq)),
            },
            _ => out.push(Have {
                node: node.clone(),
                ranges: vec![(*seq, *seq)],
            }),
        }
    }
    out
}

/// The shards `held` here that a peer's `have` lacks, at most `limit`.
/// A request with more than [`MAX_HAVE_RANGES`] ranges, or entries for more
/// than [`MAX_HAVE_NODES`] nodes, gets nothing. The work is
/// O((held + ranges) log ranges), whatever the peer sent.
pub fn missing(held: &BTreeSet<(String, u64)>, have: &[Have], limit: usize) -> Vec<(String, u64)> {
    let ranges: usize = have.iter().map(|h| h.ranges.len()).sum();
    if ranges > MAX_HAVE_RANGES || have.len() > MAX_HAVE_NODES {
        return Vec::new();
    }
    // Per node, the ranges sorted by start and merged where they overlap,
    // so that one binary search answers "is seq in there".
    let mut index: BTreeMap<&str, Vec<(u64, u64)>> = BTreeMap::new();
    for h in have {
        index
            .entry(h.node.as_str())
            .or_default()
            .extend(h.ranges.iter().filter(|(a, b)| a <= b));
    }
    for ranges in index.values_mut() {
        ranges.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
        for &(a, b) in ranges.iter() {
            match merged.last_mut() {
                Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        *ranges = merged;
    }
    let covered = |node: &str, seq: u64| {
        index.get(node).is_some_and(|ranges| {
            let i = ranges.partition_point(|(a, _)| *a <= seq);
            i > 0 && ranges[i - 1].1 >= seq
        })
    };
    held.iter()
        .filter(|(node, seq)| !covered(node, *seq))
        .take(limit)
        .cloned()
        .collect()
}

/// When a node asks whom, for one run.
#[derive(Debug, Clone, Default)]
pub struct SyncState {
    next_at: Duration,
    idle: u32,
    /// Where this node's order of peers starts.
    start: usize,
    /// Asks made, but for repeats of the same peer.
    turn: usize,
    /// How far apart in `peers` two asks in a row are (0 as 1).
    stride: usize,
    /// When the ask in flight was made.
    asked_at: Option<Duration>,
}

impl SyncState {
    /// Whether a request is due at `now`: none is in flight (or the one in
    /// flight is older than [`ASK_TIMEOUT`]) and the pause is over.
    pub fn due(&self, now: Duration) -> bool {
        let free = self
            .asked_at
            .is_none_or(|at| now.saturating_sub(at) >= ASK_TIMEOUT);
        free && now >= self.next_at
    }

    /// A state whose first ask goes to the first of `peers` (sorted) after
    /// `me`, wrapping around, and whose next asks stride over `peers` by a
    /// step drawn from `me`'s name. Each node starts at its own place: all
    /// starting at the first, a thousand nodes that learn at one instant
    /// that a run ended would all ask the same peer, which answers 4 at a
    /// time and refuses the rest, and then all the next one. And each
    /// strides its own way: walking the ring one by one, the peer a node
    /// asks at its `r`th ask has pulled only from the `r` peers after it,
    /// so what a node holds grows by a few peers per ask (100 simulated
    /// nodes, each holding only its own shards when a run ended, took
    /// 16.1 s to hold all), where peers that pulled from elsewhere
    /// double it.
    pub fn after(me: &str, peers: &[String]) -> SyncState {
        // FNV-1a: the same on every platform and build.
        let hash = me.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        SyncState {
            start: peers.partition_point(|p| p.as_str() < me),
            stride: usize::try_from(hash % (1 << 20)).unwrap_or(1),
            ..SyncState::default()
        }
    }

    /// The peer to ask next among `peers` (sorted, without this node): a
    /// step of the stride from the last, which is made prime to their
    /// count, so every peer is asked within `peers.len()` asks. Marks a
    /// request in flight since `now`.
    pub fn pick<'a>(&mut self, peers: &'a [String], now: Duration) -> Option<&'a String> {
        let n = peers.len();
        if n == 0 {
            return None;
        }
        let mut stride = self.stride % n;
        while gcd(stride, n) != 1 {
            stride = (stride + 1) % n;
        }
        let i = (self.start % n + (self.turn % n) * stride) % n;
        self.turn = self.turn.wrapping_add(1);
        self.asked_at = Some(now);
        Some(&peers[i])
    }

    /// An answer arrived at `now` with `new` shards this node lacked, and
    /// the peer holds `more`. An answer that brought shards is followed at
    /// once by the next ask: the same peer again while it holds more, else
    /// the next one. Shards spread like an epidemic, each node passing on
    /// what it pulled, so a pause after every answer would set the pace
    /// (with a pause of 2 s, 100 simulated nodes took 28.8 s to hold every
    /// shard once the run ended).
    pub fn answered(&mut self, new: usize, more: bool, now: Duration) {
        self.asked_at = None;
        if new > 0 {
            self.idle = 0;
            if more {
                self.turn = self.turn.wrapping_sub(1);
            }
            self.next_at = now;
            return;
        } else {
            self.idle = self.idle.saturating_add(1);
        }
        self.next_at = now + self.pause();
    }

    /// The request failed or was refused at `now`.
    pub fn failed(&mut self, now: Duration) {
        self.answered(0, false, now);
    }

    fn pause(&self) -> Duration {
        if self.idle >= IDLE_ROUNDS {
            IDLE_EVERY
        } else {
            SYNC_EVERY
        }
    }
}

/// The greatest common divisor (`gcd(0, n)` is `n`).
fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[cfg(test)]
mod tests;
