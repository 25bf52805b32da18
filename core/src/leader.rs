//! The leader of a run: a rule every node computes alike, with terms that
//! fence off a leader that was replaced.
//!
//! When a run is proposed, its participants are fixed, and each is ranked by
//! rendezvous hashing: `sha256(run id, 0, peer id)`, highest first. The
//! leader is the first participant in that ranking that a node believes
//! alive. Every node with the same view of who is alive picks the same
//! leader, with no messages exchanged; when the leader dies, the next in the
//! ranking takes over, and only the runs that node led move.
//!
//! A leader's **term** is its rank. Messages a leader sends carry its term,
//! and a node obeys the highest term it has seen for a run and ignores lower
//! ones ([`Leadership::observe`]). So when a partition heals and two nodes
//! both believed they led, the one of lower term hears the other and steps
//! down, and no node acts on the stale one's orders after seeing the newer.
//! A node that takes over never moves back to a lower term, even if the
//! earlier leader returns: a run's leader only ever moves down the ranking.

use std::collections::BTreeSet;

use sha2::{Digest, Sha256};

/// The rendezvous score of a participant for a run.
fn score(run_id: &str, peer: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(run_id.as_bytes());
    h.update([0]);
    h.update(peer.as_bytes());
    h.finalize().into()
}

/// The participants of a run in leadership order.
pub fn ranking(run_id: &str, participants: &[String]) -> Vec<String> {
    let mut ranked: Vec<(String, [u8; 32])> = participants
        .iter()
        .map(|p| (p.clone(), score(run_id, p)))
        .collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    ranked.dedup_by(|a, b| a.0 == b.0);
    ranked.into_iter().map(|(p, _)| p).collect()
}

/// One node's view of who leads one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leadership {
    ranking: Vec<String>,
    term: usize,
}

impl Leadership {
    /// A run with these participants; term 0 until something is observed.
    pub fn new(run_id: &str, participants: &[String]) -> Leadership {
        Leadership {
            ranking: ranking(run_id, participants),
            term: 0,
        }
    }

    /// The leader and its term, given who this node believes alive: the
    /// first live participant at or after the current term. `None` when no
    /// participant is alive.
    pub fn leader(&mut self, alive: &BTreeSet<String>) -> Option<(usize, &str)> {
        let term = (self.term..self.ranking.len()).find(|&t| alive.contains(&self.ranking[t]))?;
        self.term = term;
        Some((term, self.ranking[term].as_str()))
    }

    /// Takes a message of `term` from the leader `from`: `true` if it is to
    /// be obeyed (`from` holds that rank, and no higher term was seen),
    /// `false` if it is stale or from a node that does not hold that term.
    pub fn observe(&mut self, term: usize, from: &str) -> bool {
        if self.ranking.get(term).map(String::as_str) != Some(from) || term < self.term {
            return false;
        }
        self.term = term;
        true
    }

    /// The highest term seen.
    pub fn term(&self) -> usize {
        self.term
    }

    /// The participants in leadership order.
    pub fn order(&self) -> &[String] {
        &self.ranking
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("12D3KooWnode{i:04}")).collect()
    }

    #[test]
    fn everyone_with_the_same_view_picks_the_same_leader_in_any_order() {
        let nodes = ids(50);
        let alive: BTreeSet<String> = nodes.iter().cloned().collect();
        let mut reversed = nodes.clone();
        reversed.reverse();
        let mut a = Leadership::new("run-1", &nodes);
        let mut b = Leadership::new("run-1", &reversed);
        assert_eq!(a.order(), b.order());
        assert_eq!(a.leader(&alive), b.leader(&alive));
        // Leaders spread over runs instead of piling on one node.
        let leaders: BTreeSet<String> = (0..200)
            .filter_map(|r| {
                let mut l = Leadership::new(&format!("run-{r}"), &nodes);
                l.leader(&alive).map(|(_, p)| p.to_owned())
            })
            .collect();
        assert!(leaders.len() > 25, "{} distinct leaders", leaders.len());
    }

    #[test]
    fn the_next_in_rank_takes_over_and_the_old_term_is_fenced() {
        let nodes = ids(5);
        let mut alive: BTreeSet<String> = nodes.iter().cloned().collect();
        let mut view = Leadership::new("run-7", &nodes);
        let (t0, first) = view.leader(&alive).map(|(t, p)| (t, p.to_owned())).unwrap();
        assert_eq!(t0, 0);
        alive.remove(&first);
        let (t1, second) = view.leader(&alive).map(|(t, p)| (t, p.to_owned())).unwrap();
        assert_eq!(t1, 1);
        assert_ne!(first, second);
        // The first comes back: leadership does not move back.
        alive.insert(first.clone());
        assert_eq!(view.leader(&alive).map(|(t, _)| t), Some(1));
        assert!(
            !view.observe(0, &first),
            "the replaced leader's orders are stale"
        );
        assert!(view.observe(1, &second));
        // A node that missed the change learns it from a term-1 message.
        let mut late = Leadership::new("run-7", &nodes);
        assert!(late.observe(0, &first));
        assert!(
            !late.observe(1, &first),
            "a term claimed by a node that does not hold it"
        );
        assert!(late.observe(1, &second));
        assert!(!late.observe(0, &first));
        assert!(
            !late.observe(99, &second),
            "a term past the ranking is refused"
        );
        // Nobody alive: no leader.
        assert_eq!(view.leader(&BTreeSet::new()), None);
    }
}
