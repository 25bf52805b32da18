//! The simulator on meshes small enough for a unit test.

use super::*;

fn small(nodes: usize, seed: u64) -> SimConfig {
    SimConfig {
        nodes,
        seed,
        regions: 3,
        intervals: 3,
        drop: 0.02,
        ..SimConfig::default()
    }
}

#[test]
fn forty_nodes_converge_agree_and_hold_every_shard() {
    let report = simulate(&small(40, 7)).unwrap_or_else(|e| panic!("{e}"));
    assert!(report.membership.seconds.is_some(), "{report:#?}");
    assert!(report.leader.seconds.is_some(), "{report:#?}");
    assert!(report.shards.seconds.is_some(), "{report:#?}");
}
