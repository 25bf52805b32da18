//! The simulator on meshes small enough for a unit test: the real cores
//! converge, agree and fill every gap, and a seed replays exactly.

use super::*;

fn small(nodes: usize, seed: u64) -> SimConfig {
    SimConfig {
        nodes,
        seed,
        regions: 3,
        intervals: 4,
        // Enough discarded messages that anti-entropy has gaps to fill.
        drop: 0.03,
        ..SimConfig::default()
    }
}

fn run(config: &SimConfig) -> SimReport {
    simulate(config).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn forty_nodes_converge_agree_on_one_leader_hold_every_shard_and_find_a_frozen_node() {
    let r = run(&small(40, 7));
    let all = |p: &PhaseReport| p.seconds.is_some();
    assert!(
        all(&r.membership) && all(&r.leader) && all(&r.shards),
        "{r:#?}"
    );
    let listed = r.members_listed_s.unwrap_or(f64::MAX);
    assert!(listed <= r.membership.seconds.unwrap_or(0.0), "{r:#?}");
    assert!(r.membership.seconds.unwrap_or(f64::MAX) < 15.0, "{r:#?}");
    assert!(r.leader_agreed_s.is_some(), "{r:#?}");
    assert!(r.leader.seconds.unwrap_or(f64::MAX) < 5.0, "{r:#?}");
    assert_eq!(r.shards_total, 40 * 5);
    assert!(
        r.shards_by_sync > 0,
        "no gap for anti-entropy to fill: {r:#?}"
    );
    assert_eq!(r.suspicions, 0, "{r:#?}");
    // A node frozen after the run is held as lost by every other node
    // within the 3.5 s of silence its watchers allow, the watch's pace
    // and the gossip of the suspicion; and no other node is suspected.
    let frozen = r.frozen_node.as_ref().unwrap_or_else(|| panic!("{r:#?}"));
    assert!(frozen.watchers >= 3, "{r:#?}");
    assert!(r.frozen.seconds.is_some_and(|s| s < 5.0), "{r:#?}");
    let kinds: Vec<&str> = r.shards.by_kind.iter().map(|k| k.kind).collect();
    for kind in ["clock", "runs", "shards", "sync"] {
        assert!(kinds.contains(&kind), "no {kind} traffic: {kinds:?}");
    }
    // Every node heard the others announce themselves while listing them.
    let heartbeats = &r.membership.by_kind[0];
    assert_eq!(heartbeats.kind, "heartbeat");
    assert!(heartbeats.received.mean >= 39.0, "{heartbeats:?}");
    // Idle, a node keeps the connections of its view (12 of the 39 others
    // here: 4 either side on the ring and chords 9 and 19 away), and of
    // gossipsub's mesh (at most 12), and no others: those of its joining
    // closed.
    let connections = r
        .idle_connections
        .as_ref()
        .unwrap_or_else(|| panic!("{r:#?}"));
    assert!(connections.max <= 24, "{connections:?}");
    assert!(connections.mean < 30.0, "{connections:?}");
    eprintln!("forty nodes, connections per node when idle: {connections:?}");
    // Idle, a node sends little: it asks the 4 members it watches and
    // answers its watchers, each about once a second.
    assert!(all(&r.idle), "{r:#?}");
    let idle_rate = r.idle.total.sent.mean / r.idle.counted_s;
    assert!(
        idle_rate < 15.0,
        "{idle_rate} messages per node per second idle"
    );
}

#[test]
fn a_seed_replays_exactly_and_another_differs() {
    let config = small(30, 11);
    let quiet = |mut r: SimReport| {
        r.wall_s = 0.0;
        r
    };
    let a = quiet(run(&config));
    let b = quiet(run(&config));
    assert_eq!(a, b);
    let c = quiet(run(&SimConfig { seed: 12, ..config }));
    assert_ne!(a.events, c.events);
}

#[test]
fn configurations_outside_the_bounds_are_refused_with_the_flag_named() {
    let bad = [
        SimConfig {
            nodes: 1,
            ..SimConfig::default()
        },
        SimConfig {
            nodes: MAX_NODES + 1,
            ..SimConfig::default()
        },
        SimConfig {
            regions: 0,
            ..SimConfig::default()
        },
        SimConfig {
            nodes: 3,
            regions: 4,
            ..SimConfig::default()
        },
        SimConfig {
            loss: 1.0,
            ..SimConfig::default()
        },
        SimConfig {
            drop: -0.1,
            ..SimConfig::default()
        },
        SimConfig {
            intervals: 0,
            ..SimConfig::default()
        },
        SimConfig {
            tick: Duration::ZERO,
            ..SimConfig::default()
        },
    ];
    for config in bad {
        let e = simulate(&config)
            .err()
            .unwrap_or_else(|| panic!("{config:?} ran"));
        assert!(e.to_string().contains("give"), "{e}");
    }
}

#[test]
fn a_simulation_under_way_says_where_it_stands_and_reports_the_same() {
    let config = small(40, 7);
    let mut seen: Vec<Progress> = Vec::new();
    let report = simulate_showing(&config, Duration::ZERO, &mut |p| seen.push(p.clone()))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(seen.len() >= 2, "{} progress reports", seen.len());
    assert!(
        seen.windows(2)
            .all(|w| w[0].events < w[1].events && w[0].virtual_s <= w[1].virtual_s)
    );
    let phases = ["membership", "idle", "leader", "shards", "frozen"];
    assert!(
        seen.iter()
            .all(|p| p.nodes == 40 && phases.contains(&p.phase))
    );
    assert!(seen.iter().all(|p| p.members_mean <= 39.0));
    let last = seen.last().map(|p| p.events).unwrap_or(0);
    assert!(last <= report.events);
    // Showing progress changes nothing of what is simulated.
    assert_eq!(
        SimReport {
            wall_s: 0.0,
            ..report
        },
        SimReport {
            wall_s: 0.0,
            ..run(&config)
        }
    );
}
