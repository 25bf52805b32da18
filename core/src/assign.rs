//! Who runs how much of a run: shares split by region weight, then by
//! capacity within a region.
//!
//! A run asks for the whole load (all VUs, the whole rate, every iteration).
//! [`assign`] cuts `[0, 1)` into one [`ExecutionSegment`] per taking-part
//! node: first into one slice per region, in proportion to the region
//! weights (`--region fra=60,nrt=30,ewr=10`), then each region's slice into
//! one segment per node of that region, in proportion to the nodes'
//! capacities. The segments tile `[0, 1)` with exact rational ends, so for
//! any count `n` (VUs, an arrival rate's iterations, shared iterations) the
//! nodes' shares `floor(n·end) − floor(n·start)` sum to exactly `n`, and
//! global VU ids and iteration numbers belong to exactly one node.
//!
//! Every node computes the same assignment from the same inputs: candidates
//! are ordered by region (as the weights list them) and then by peer id.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::segment::ExecutionSegment;
use crate::spec::Share;
use crate::wire::validate_region;

/// A node that may take part in a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidate {
    /// Its peer id.
    pub id: String,
    /// Its region.
    pub region: String,
    /// Its capacity (the VUs it will run); zero takes no part.
    pub capacity: u32,
}

/// A region's weight in `--region`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionWeight {
    /// The region.
    pub region: String,
    /// Its weight, relative to the others.
    pub weight: u64,
}

/// The most a region weight may be.
pub const MAX_WEIGHT: u64 = 1_000_000;

/// Why a run cannot be assigned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssignError {
    /// No node can take part.
    #[error("no node can take part in the run (no member has capacity)")]
    NoNodes,
    /// A weighted region has no node.
    #[error(
        "region {region} has weight {weight} but no node with capacity is in it; nodes are in {present}: \
         drop {region} from --region or start a node there"
    )]
    EmptyRegion {
        /// The region.
        region: String,
        /// Its weight.
        weight: u64,
        /// The regions that have nodes.
        present: String,
    },
    /// The numbers do not fit the arithmetic.
    #[error("the weights and capacities are too large to split exactly")]
    TooLarge,
}

/// Parses `--region fra=60,nrt=30,ewr=10`.
pub fn parse_region_weights(text: &str) -> Result<Vec<RegionWeight>, String> {
    let mut weights: Vec<RegionWeight> = Vec::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let fix = "write REGION=WEIGHT entries, for example fra=60,nrt=30,ewr=10";
        let (region, weight) = entry
            .split_once('=')
            .ok_or_else(|| format!("--region entry {entry:?} has no '='; {fix}"))?;
        let region = region.trim();
        validate_region(region).map_err(|e| format!("--region entry {entry:?}: {e}"))?;
        let weight: u64 = weight.trim().parse().map_err(|_| {
            format!("--region entry {entry:?}: the weight is not a whole number; {fix}")
        })?;
        if weight == 0 || weight > MAX_WEIGHT {
            return Err(format!(
                "--region entry {entry:?}: a weight is 1 to {MAX_WEIGHT} (leave a region out to give it nothing)"
            ));
        }
        if weights.iter().any(|w| w.region == region) {
            return Err(format!("--region names {region} twice"));
        }
        weights.push(RegionWeight {
            region: region.to_owned(),
            weight,
        });
    }
    if weights.is_empty() {
        return Err("--region is empty; write for example fra=60,nrt=30,ewr=10".to_owned());
    }
    Ok(weights)
}

/// Splits a run over `candidates`. Without `weights`, every candidate is in
/// one group and the load follows capacity alone. `max_vus` is the most VUs
/// the run uses at once, for numbering them (ids start at 1).
pub fn assign(
    run_id: &str,
    candidates: &[Candidate],
    weights: Option<&[RegionWeight]>,
    max_vus: u64,
) -> Result<Vec<Share>, AssignError> {
    let mut by_region: BTreeMap<&str, Vec<&Candidate>> = BTreeMap::new();
    for c in candidates.iter().filter(|c| c.capacity > 0) {
        by_region.entry(c.region.as_str()).or_default().push(c);
    }
    if by_region.is_empty() {
        return Err(AssignError::NoNodes);
    }
    // Groups in a fixed order, each with its weight and its nodes by id.
    let groups: Vec<(u64, Vec<&Candidate>)> = match weights {
        None => {
            let mut all: Vec<&Candidate> = by_region.values().flatten().copied().collect();
            all.sort_by(|a, b| a.id.cmp(&b.id));
            vec![(1, all)]
        }
        Some(weights) => {
            let present = by_region.keys().copied().collect::<Vec<_>>().join(", ");
            let mut groups = Vec::new();
            for w in weights {
                let Some(nodes) = by_region.get(w.region.as_str()) else {
                    return Err(AssignError::EmptyRegion {
                        region: w.region.clone(),
                        weight: w.weight,
                        present,
                    });
                };
                let mut nodes = nodes.clone();
                nodes.sort_by(|a, b| a.id.cmp(&b.id));
                groups.push((w.weight, nodes));
            }
            groups
        }
    };
    let region_segments =
        ExecutionSegment::split(&groups.iter().map(|(w, _)| *w).collect::<Vec<_>>());
    let mut shares = Vec::new();
    for ((_, nodes), region) in groups.iter().zip(region_segments) {
        let capacities: Vec<u64> = nodes.iter().map(|n| u64::from(n.capacity)).collect();
        for (node, segment) in nodes
            .iter()
            .zip(region.subdivide(&capacities).ok_or(AssignError::TooLarge)?)
        {
            shares.push(Share {
                run_id: run_id.to_owned(),
                node: node.id.clone(),
                segment,
                first_vu_id: segment.offset(max_vus) + 1,
            });
        }
    }
    Ok(shares)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;

    fn node(id: &str, region: &str, capacity: u32) -> Candidate {
        Candidate {
            id: id.into(),
            region: region.into(),
            capacity,
        }
    }

    fn counts(shares: &[Share], n: u64) -> Vec<u64> {
        shares.iter().map(|s| s.segment.scale(n)).collect()
    }

    #[test]
    fn seven_vus_over_three_equal_nodes() {
        let nodes = [
            node("a", "fra", 10),
            node("b", "fra", 10),
            node("c", "fra", 10),
        ];
        let shares = assign("r", &nodes, None, 7).unwrap();
        assert_eq!(counts(&shares, 7), vec![2, 2, 3]);
        let ids: Vec<u64> = shares.iter().map(|s| s.first_vu_id).collect();
        assert_eq!(ids, vec![1, 3, 5]);
    }

    #[test]
    fn weights_33_33_34_sum_exactly_for_every_count() {
        let nodes = [
            node("a", "fra", 5),
            node("b", "nrt", 7),
            node("c", "ewr", 1),
        ];
        let weights = parse_region_weights("fra=33,nrt=33,ewr=34").unwrap();
        let shares = assign("r", &nodes, Some(&weights), 100).unwrap();
        for n in 0..2_000 {
            assert_eq!(counts(&shares, n).iter().sum::<u64>(), n);
        }
        assert_eq!(counts(&shares, 100), vec![33, 33, 34]);
    }

    #[test]
    fn a_region_without_nodes_is_a_clear_error() {
        let nodes = [node("a", "fra", 5), node("b", "nrt", 0)];
        let weights = parse_region_weights("fra=50,nrt=50").unwrap();
        let err = assign("r", &nodes, Some(&weights), 10).unwrap_err();
        assert!(matches!(err, AssignError::EmptyRegion { ref region, .. } if region == "nrt"));
        assert!(err.to_string().contains("nodes are in fra"), "{err}");
        assert_eq!(assign("r", &[], None, 1), Err(AssignError::NoNodes));
    }

    #[test]
    fn random_splits_are_exact_and_vu_ids_unique() {
        let mut rng = Rng(0x1234_5678_9abc_def1);
        let regions = ["fra", "nrt", "ewr", "sin"];
        for _ in 0..300 {
            let count = 1 + rng.next_u64() % 12;
            let nodes: Vec<Candidate> = (0..count)
                .map(|i| {
                    node(
                        &format!("n{:02}", rng.next_u64() % 100 + i * 100),
                        regions[(rng.next_u64() % 4) as usize],
                        (1 + rng.next_u64() % 20_000) as u32,
                    )
                })
                .collect();
            let mut present: Vec<&str> = nodes.iter().map(|n| n.region.as_str()).collect();
            present.sort();
            present.dedup();
            let weights: Vec<RegionWeight> = present
                .iter()
                .map(|r| RegionWeight {
                    region: (*r).to_owned(),
                    weight: 1 + rng.next_u64() % 100,
                })
                .collect();
            let n = rng.next_u64() % 50_000;
            for w in [None, Some(weights.as_slice())] {
                let shares = assign("r", &nodes, w, n).unwrap();
                assert_eq!(shares.len(), nodes.len());
                assert_eq!(counts(&shares, n).iter().sum::<u64>(), n);
                // VU ids: consecutive, disjoint ranges covering 1..=n.
                let mut next = 1;
                for s in &shares {
                    assert_eq!(s.first_vu_id, next);
                    next += s.segment.scale(n);
                }
                assert_eq!(next, n + 1);
            }
        }
    }

    #[test]
    fn region_weights_parse_with_errors_that_name_the_entry() {
        let w = parse_region_weights("fra=60, nrt=30,ewr=10").unwrap();
        assert_eq!(w.len(), 3);
        assert_eq!(w[2].weight, 10);
        for (bad, needle) in [
            ("", "empty"),
            ("fra", "no '='"),
            ("fra=0", "1 to"),
            ("fra=x", "whole number"),
            ("fra=1,fra=2", "twice"),
            ("Fra=1", "a-z"),
        ] {
            let err = parse_region_weights(bad).unwrap_err();
            assert!(err.contains(needle), "{bad}: {err}");
        }
    }
}
