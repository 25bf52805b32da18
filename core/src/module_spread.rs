//! How a run's module (and its data files) spreads to the nodes of a plan:
//! along a tree, not from the proposer alone.
//!
//! The node a run was submitted to, its proposer, holds the module. Had
//! every node of the plan fetched it there, the proposer would send it once
//! per node: at 1,000 nodes and a module of 512 KB, 512 MB, four seconds of
//! a 1 Gbit/s link before the last node could even compile it, and a data
//! file of 50 MB would take minutes. So the plan's nodes form a tree per
//! region, which every node computes alike from what it holds (the plan and
//! the proposal's candidates), with no message:
//!
//! - the nodes of a region, the proposer left out, are taken in the plan's
//!   order; the first asks the proposer, and each other asks the node
//!   [`FANOUT`] places up the region's heap (node `p` asks node
//!   `(p − 1) / FANOUT`);
//! - so the proposer sends the module once per region, across regions, and
//!   every other node sends it to at most [`FANOUT`] nodes of its own
//!   region: 1,000 nodes in 4 regions are 4 levels deep;
//! - the proposer is every node's next source after its parent
//!   ([`crate::runs::RunsCore::module_sources`]).
//!
//! A node's parent gets the plan at about the time the node does, and may be
//! asked before it holds the module, or before it has even heard the plan.
//! Refusing would send its children to the proposer, the very load the tree
//! spares it. So a node keeps an ask for a module it does not hold
//! ([`ModuleAsks`]), and answers it when its own fetch brings the module;
//! it refuses the ask only once [`ASK_GRACE`] has passed with no fetch of
//! that module under way, or at once when it keeps [`MAX_KEPT_ASKS`]
//! already. An ask it never answers ends at the asker's request timeout,
//! and the asker tries its next source.

use std::collections::HashMap;
use std::time::Duration;

use crate::assign::Candidate;
use crate::wire::Plan;

/// How many nodes of its region a node sends the module to, at most.
pub const FANOUT: usize = 8;

/// How long a node keeps an ask for a module it neither holds nor fetches:
/// time for the plan, which would have it fetch the module, to arrive.
pub const ASK_GRACE: Duration = Duration::from_secs(2);

/// The most asks a node keeps at once (its children are [`FANOUT`]).
pub const MAX_KEPT_ASKS: usize = 64;

/// How many rounds a node asks around for a share's files, a round
/// [`ROUND_EVERY`] after the last, before it refuses the run: a node that
/// relayed the proposal may not have fetched the module itself yet.
pub const FETCH_ROUNDS: u32 = 15;

/// The wait between two rounds of a [`FileFetch`].
pub const ROUND_EVERY: Duration = Duration::from_secs(1);

/// A share's files (its module, then its data files) being fetched, one at
/// a time: each from the sources the runs core names, in order
/// ([`crate::runs::RunsCore::module_sources`]), and round after round while
/// none gave it. A node's runtime and the simulator both drive it, and
/// carry out its [`FetchStep`]s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileFetch {
    wanted: Vec<String>,
    left: Vec<String>,
    tried: Vec<String>,
    rounds: u32,
}

/// What a [`FileFetch`] does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchStep {
    /// Ask this peer for the file [`FileFetch::asked`].
    Ask(String),
    /// Ask around again in [`ROUND_EVERY`]: then call [`FileFetch::again`].
    Wait,
    /// Every file is here.
    Done,
    /// No node gave the file after [`FETCH_ROUNDS`] rounds: refuse the run.
    GiveUp {
        /// The nodes asked in the last round.
        tried: Vec<String>,
        /// What the last of them answered.
        problem: Option<String>,
    },
}

impl FileFetch {
    /// A fetch of the files `wanted` (by sha256), from `sources`; then call
    /// [`FileFetch::next`] for its first step.
    pub fn new(wanted: Vec<String>, sources: Vec<String>) -> FileFetch {
        FileFetch {
            wanted,
            left: sources,
            tried: Vec::new(),
            rounds: 1,
        }
    }

    /// The sha256 of the file asked for now.
    pub fn asked(&self) -> Option<&str> {
        self.wanted.first().map(String::as_str)
    }

    /// The files still missing, the one asked for first.
    pub fn wanted(&self) -> &[String] {
        &self.wanted
    }

    /// The first step, or the next after an ask that brought no file
    /// (`problem` says why): the next source, a wait for the next round,
    /// or, past the last round, giving up.
    pub fn next(&mut self, problem: Option<String>) -> FetchStep {
        if self.wanted.is_empty() {
            return FetchStep::Done;
        }
        if !self.left.is_empty() {
            let peer = self.left.remove(0);
            self.tried.push(peer.clone());
            return FetchStep::Ask(peer);
        }
        if self.rounds < FETCH_ROUNDS {
            self.rounds += 1;
            return FetchStep::Wait;
        }
        FetchStep::GiveUp {
            tried: self.tried.clone(),
            problem,
        }
    }

    /// The next round, after a [`FetchStep::Wait`]: from `sources`, as the
    /// runs core names them now.
    pub fn again(&mut self, sources: Vec<String>) -> FetchStep {
        self.left = sources;
        self.tried.clear();
        self.next(None)
    }

    /// The file asked for arrived: the next file, from `sources`, or done.
    pub fn arrived(&mut self, sources: Vec<String>) -> FetchStep {
        if !self.wanted.is_empty() {
            self.wanted.remove(0);
        }
        self.again(sources)
    }
}

/// The node that `me` asks first for the module of a run planned as `plan`
/// and proposed by `proposer` with `candidates`: its parent in the tree of
/// its region (see the module docs). `None` for the proposer itself, and
/// for a node that is not in the plan.
pub fn parent<'a>(
    plan: &'a Plan,
    candidates: &[Candidate],
    proposer: &'a str,
    me: &str,
) -> Option<&'a str> {
    if me == proposer {
        return None;
    }
    let regions: HashMap<&str, &str> = candidates
        .iter()
        .map(|c| (c.id.as_str(), c.region.as_str()))
        .collect();
    let mine = *regions.get(me)?;
    let region: Vec<&str> = plan
        .shares
        .iter()
        .map(|s| s.node.as_str())
        .filter(|n| *n != proposer && regions.get(n) == Some(&mine))
        .collect();
    let place = region.iter().position(|n| *n == me)?;
    match place {
        0 => Some(proposer),
        p => region.get((p - 1) / FANOUT).copied(),
    }
}

/// The asks a node keeps for modules it does not hold yet, each with what
/// answers it (a response channel in a node, an index in the simulator).
#[derive(Debug)]
pub struct ModuleAsks<T> {
    kept: Vec<Kept<T>>,
}

#[derive(Debug)]
struct Kept<T> {
    sha256: String,
    since: Duration,
    ask: T,
}

impl<T> Default for ModuleAsks<T> {
    fn default() -> Self {
        ModuleAsks { kept: Vec::new() }
    }
}

impl<T> ModuleAsks<T> {
    /// Keeps an ask for module `sha256`, which this node does not hold;
    /// gives the ask back, to be refused now, when [`MAX_KEPT_ASKS`] are
    /// kept already.
    pub fn keep(&mut self, sha256: &str, ask: T, now: Duration) -> Result<(), T> {
        if self.kept.len() >= MAX_KEPT_ASKS {
            return Err(ask);
        }
        self.kept.push(Kept {
            sha256: sha256.to_owned(),
            since: now,
            ask,
        });
        Ok(())
    }

    /// Module `sha256` is here: the asks to answer with it.
    pub fn arrived(&mut self, sha256: &str) -> Vec<T> {
        self.take(|k| k.sha256 == sha256)
    }

    /// The asks to refuse now: kept for [`ASK_GRACE`] or longer, for a
    /// module that this node is not fetching (`fetching` says which are).
    pub fn expired(&mut self, now: Duration, fetching: impl Fn(&str) -> bool) -> Vec<T> {
        self.take(|k| now.saturating_sub(k.since) >= ASK_GRACE && !fetching(&k.sha256))
    }

    /// How many asks are kept.
    pub fn len(&self) -> usize {
        self.kept.len()
    }

    /// Whether none is kept.
    pub fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }

    fn take(&mut self, which: impl Fn(&Kept<T>) -> bool) -> Vec<T> {
        let (taken, kept) = std::mem::take(&mut self.kept).into_iter().partition(which);
        self.kept = kept;
        taken.into_iter().map(|k| k.ask).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::ExecutionSegment;
    use crate::wire::Assigned;

    fn plan_of(nodes: &[(&str, &str)]) -> (Plan, Vec<Candidate>) {
        let candidates: Vec<Candidate> = nodes
            .iter()
            .map(|(id, region)| Candidate {
                id: (*id).to_owned(),
                region: (*region).to_owned(),
                capacity: 100,
            })
            .collect();
        let plan = Plan {
            term: 0,
            id: (0, 1),
            shares: nodes
                .iter()
                .map(|(id, _)| Assigned {
                    node: (*id).to_owned(),
                    segment: ExecutionSegment::new(0, 1, 1).expect("a segment"),
                    first_vu_id: 0,
                })
                .collect(),
        };
        (plan, candidates)
    }

    #[test]
    fn each_region_is_a_tree_under_the_proposer_with_at_most_fanout_children() {
        // 3 regions, 400 nodes each, in turn; the proposer is one of them.
        let names: Vec<(String, &str)> = (0..1200)
            .map(|i| (format!("n{i:04}"), ["fra", "nrt", "ewr"][i % 3]))
            .collect();
        let nodes: Vec<(&str, &str)> = names.iter().map(|(n, r)| (n.as_str(), *r)).collect();
        let (plan, candidates) = plan_of(&nodes);
        let proposer = "n0007";
        let mut children: HashMap<&str, usize> = HashMap::new();
        let mut depth_max = 0;
        for (me, region) in &nodes {
            let got = parent(&plan, &candidates, proposer, me);
            if *me == proposer {
                assert_eq!(got, None);
                continue;
            }
            let up = got.expect("every node of the plan has a parent");
            assert_ne!(up, *me);
            *children.entry(up).or_default() += 1;
            // Up the tree, within the region, to the proposer.
            let (mut at, mut depth) = (up, 1);
            while at != proposer {
                let region_of = nodes.iter().find(|(n, _)| *n == at).map(|(_, r)| *r);
                assert_eq!(region_of, Some(*region), "{me} climbs out of its region");
                at = parent(&plan, &candidates, proposer, at).expect("a parent");
                depth += 1;
                assert!(depth < 10, "{me} climbs a cycle");
            }
            depth_max = depth_max.max(depth);
        }
        assert_eq!(children.get(proposer), Some(&3), "one root per region");
        assert!(children.values().all(|c| *c <= FANOUT));
        // 399 or 400 nodes a region: a root, then 8, 64 and the rest.
        assert_eq!(depth_max, 4);
    }

    #[test]
    fn a_node_outside_the_plan_or_the_candidates_has_no_parent() {
        let (mut plan, candidates) = plan_of(&[("a", "fra"), ("b", "fra"), ("c", "fra")]);
        assert_eq!(parent(&plan, &candidates, "a", "b"), Some("a"));
        assert_eq!(parent(&plan, &candidates, "a", "c"), Some("b"));
        assert_eq!(parent(&plan, &candidates, "a", "z"), None);
        plan.shares.retain(|s| s.node != "c");
        assert_eq!(parent(&plan, &candidates, "a", "c"), None);
    }

    #[test]
    fn a_fetch_asks_each_source_then_waits_a_round_and_gives_up_after_the_last() {
        let names = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let mut fetch = FileFetch::new(names(&["module", "data"]), names(&["parent", "proposer"]));
        assert_eq!(fetch.asked(), Some("module"));
        assert_eq!(fetch.next(None), FetchStep::Ask("parent".into()));
        assert_eq!(
            fetch.next(Some("no".into())),
            FetchStep::Ask("proposer".into())
        );
        // The module came: the data file, from the sources named now.
        assert_eq!(
            fetch.arrived(names(&["proposer"])),
            FetchStep::Ask("proposer".into())
        );
        assert_eq!(fetch.asked(), Some("data"));
        // No source left: a round later, again; and so for every round.
        for _ in 1..FETCH_ROUNDS {
            assert_eq!(fetch.next(Some("busy".into())), FetchStep::Wait);
            assert_eq!(
                fetch.again(names(&["proposer"])),
                FetchStep::Ask("proposer".into())
            );
        }
        assert_eq!(
            fetch.next(Some("busy".into())),
            FetchStep::GiveUp {
                tried: names(&["proposer"]),
                problem: Some("busy".into())
            }
        );
        let mut fetch = FileFetch::new(names(&["module"]), Vec::new());
        assert_eq!(fetch.next(None), FetchStep::Wait);
        assert_eq!(fetch.again(names(&["a"])), FetchStep::Ask("a".into()));
        assert_eq!(fetch.arrived(names(&["a"])), FetchStep::Done);
        assert_eq!(fetch.wanted(), &[] as &[String]);
    }

    #[test]
    fn an_ask_is_kept_until_the_module_arrives_or_its_grace_passes_unfetched() {
        let mut asks = ModuleAsks::default();
        let s = Duration::from_secs;
        asks.keep("m1", 1, s(10)).expect("room");
        asks.keep("m2", 2, s(10)).expect("room");
        asks.keep("m1", 3, s(11)).expect("room");
        // Within the grace, nothing expires, fetched or not.
        assert!(asks.expired(s(11), |_| false).is_empty());
        // Past it, an ask for a module being fetched stays.
        assert!(asks.expired(s(12), |_| true).is_empty());
        assert_eq!(asks.expired(s(12), |sha| sha == "m1"), vec![2]);
        assert_eq!(asks.len(), 2);
        assert_eq!(asks.arrived("m1"), vec![1, 3]);
        assert!(asks.is_empty());
        for i in 0..MAX_KEPT_ASKS {
            asks.keep("m", i, s(20)).expect("room");
        }
        assert_eq!(asks.keep("m", 99, s(20)), Err(99));
    }
}
