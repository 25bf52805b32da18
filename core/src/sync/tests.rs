use super::*;
use crate::rng::Rng;

fn key(node: &str, seq: u64) -> (String, u64) {
    (node.to_owned(), seq)
}

#[test]
fn holdings_compress_to_ranges_and_back() {
    let held: BTreeSet<(String, u64)> = [0, 1, 2, 5, 6, 9]
        .iter()
        .map(|s| key("a", *s))
        .chain([key("b", 3)])
        .collect();
    let have = have_of(&held);
    assert_eq!(
        have,
        vec![
            Have {
                node: "a".into(),
                ranges: vec![(0, 2), (5, 6), (9, 9)]
            },
            Have {
                node: "b".into(),
                ranges: vec![(3, 3)]
            }
        ]
    );
    assert!(
        missing(&held, &have, 100).is_empty(),
        "it holds all it lists"
    );
    let more: BTreeSet<(String, u64)> = [key("a", 3), key("c", 0), key("a", 9)].into();
    assert_eq!(missing(&more, &have, 100), vec![key("a", 3), key("c", 0)]);
    assert!(have_of(&BTreeSet::new()).is_empty());
}

#[test]
fn a_peer_gets_what_it_lacks_within_the_limit() {
    let mine: BTreeSet<(String, u64)> = (0..10).map(|s| key("a", s)).collect();
    let theirs = vec![Have {
        node: "a".into(),
        // Unsorted and overlapping: a peer's ranges are not trusted.
        ranges: vec![(7, 9), (0, 3), (2, 4)],
    }];
    assert_eq!(missing(&mine, &theirs, 100), vec![key("a", 5), key("a", 6)]);
    assert_eq!(missing(&mine, &theirs, 1), vec![key("a", 5)]);
    assert_eq!(missing(&mine, &[], 3).len(), 3);
    let flood = vec![Have {
        node: "a".into(),
        ranges: vec![(100, 100); MAX_HAVE_RANGES + 1],
    }];
    assert!(
        missing(&mine, &flood, 100).is_empty(),
        "an oversized request gets nothing"
    );
}

#[test]
fn asking_rotates_over_peers_and_backs_off_when_idle() {
    let peers: Vec<String> = ["a", "b", "c"].iter().map(|s| (*s).to_owned()).collect();
    let mut s = SyncState::default();
    let mut now = Duration::ZERO;
    let mut asked = Vec::new();
    for _ in 0..3 {
        assert!(s.due(now));
        asked.push(s.pick(&peers, now).cloned().unwrap_or_default());
        assert!(!s.due(now), "one request at a time");
        s.answered(0, false, now);
        now += SYNC_EVERY;
    }
    assert_eq!(asked, vec!["a", "b", "c"]);
    // An answer with more: the same peer, at once.
    let first = s.pick(&peers, now).cloned();
    s.answered(5, true, now);
    assert!(s.due(now));
    assert_eq!(s.pick(&peers, now).cloned(), first);
    s.answered(0, false, now);
    for _ in 0..IDLE_ROUNDS {
        s.pick(&peers, now);
        s.failed(now);
    }
    assert!(!s.due(now + SYNC_EVERY), "idle: it waits longer");
    assert!(s.due(now + IDLE_EVERY));
    // An answer that never comes: asked again after the timeout.
    let later = now + IDLE_EVERY;
    s.pick(&peers, later);
    assert!(!s.due(later + IDLE_EVERY));
    assert!(s.due(later + ASK_TIMEOUT));
    assert!(SyncState::default().pick(&[], now).is_none());
}

/// 40 nodes, 8 of which measured 120 shards each. Gossip lost 30 % of the
/// shards on the way to each node; one producer was cut off for the last
/// 40 of its intervals (nobody else holds those), and two nodes restarted
/// with nothing. With 10 % of the requests or answers lost, every node
/// converges to the union, in virtual time, with few requests.
#[test]
fn every_node_converges_to_the_union_despite_losses() {
    const NODES: usize = 40;
    const PRODUCERS: usize = 8;
    const SHARDS: u64 = 120;
    let mut rng = Rng(0x5eed);
    let names: Vec<String> = (0..NODES).map(|i| format!("n{i:02}")).collect();
    let mut held: Vec<BTreeSet<(String, u64)>> = vec![BTreeSet::new(); NODES];
    let mut union = BTreeSet::new();
    for p in 0..PRODUCERS {
        for seq in 0..SHARDS {
            let k = (names[p].clone(), seq);
            union.insert(k.clone());
            held[p].insert(k.clone());
            let cut_off = p == 0 && seq >= SHARDS - 40;
            for (n, h) in held.iter_mut().enumerate() {
                if n != p && !cut_off && !rng.chance(0.3) {
                    h.insert(k.clone());
                }
            }
        }
    }
    held[NODES - 1].clear();
    held[NODES - 2].clear();
    let mut states = vec![SyncState::default(); NODES];
    let mut requests = [0u32; NODES];
    let step = Duration::from_millis(100);
    let mut now = Duration::ZERO;
    while held.iter().any(|h| *h != union) {
        assert!(
            now < Duration::from_secs(120),
            "not converged after 120 virtual seconds: {:?}",
            held.iter()
                .map(|h| union.len() - h.len())
                .collect::<Vec<_>>()
        );
        for n in 0..NODES {
            if held[n] == union || !states[n].due(now) {
                continue;
            }
            let peers: Vec<String> = names.iter().filter(|p| **p != names[n]).cloned().collect();
            let Some(peer) = states[n].pick(&peers, now).cloned() else {
                continue;
            };
            requests[n] += 1;
            let p = names.iter().position(|x| *x == peer).unwrap_or(0);
            if rng.chance(0.1) {
                states[n].failed(now);
                continue;
            }
            let want = missing(&held[p], &have_of(&held[n]), MAX_ANSWER_SHARDS + 1);
            let more = want.len() > MAX_ANSWER_SHARDS;
            let got: Vec<_> = want.into_iter().take(MAX_ANSWER_SHARDS).collect();
            let mut new = 0;
            for k in got {
                new += usize::from(held[n].insert(k));
            }
            states[n].answered(new, more, now);
        }
        now += step;
    }
    let most = requests.iter().max().copied().unwrap_or(0);
    let total: u32 = requests.iter().sum();
    assert!(
        most <= 40,
        "a node made {most} requests (total {total}) in {now:?}"
    );
    eprintln!(
        "converged in {:.1} virtual s; requests: {total} in all, at most {most} per node",
        now.as_secs_f64()
    );
}

#[test]
fn nodes_that_start_at_their_own_place_ask_different_peers_first() {
    let all: Vec<String> = (0..8).map(|i| format!("n{i}")).collect();
    let mut first = BTreeSet::new();
    for me in &all {
        let peers: Vec<String> = all.iter().filter(|p| *p != me).cloned().collect();
        let mut state = SyncState::after(me, &peers);
        let asked = state.pick(&peers, Duration::ZERO).cloned();
        // Its successor, wrapping around.
        let i = all.iter().position(|p| p == me).unwrap_or(0);
        assert_eq!(asked.as_ref(), Some(&all[(i + 1) % all.len()]));
        first.extend(asked);
    }
    assert_eq!(first.len(), all.len(), "every peer is asked once");
}

/// Each node strides over its peers its own way and asks every one within
/// as many asks as there are peers. When a run ends with each of 200
/// nodes holding only its own shards and the leader holding all, asks
/// answered at once spread everything in 12 rounds; walking the ring one
/// by one (every stride 1) takes 20.
#[test]
fn strides_reach_every_peer_and_spread_a_runs_shards_in_few_rounds() {
    let all: Vec<String> = (0..37).map(|i| format!("n{i:02}")).collect();
    let mut seconds = BTreeSet::new();
    for me in &all {
        let peers: Vec<String> = all.iter().filter(|p| *p != me).cloned().collect();
        let mut state = SyncState::after(me, &peers);
        let asked: BTreeSet<String> = (0..peers.len())
            .filter_map(|_| state.pick(&peers, Duration::ZERO).cloned())
            .collect();
        assert_eq!(asked.len(), peers.len(), "{me} asks every peer once");
        let mut again = SyncState::after(me, &peers);
        again.pick(&peers, Duration::ZERO);
        seconds.extend(again.pick(&peers, Duration::ZERO).cloned());
    }
    assert!(seconds.len() > 20, "second asks: {seconds:?}");

    let rounds = |strided: bool| {
        const NODES: usize = 200;
        let names: Vec<String> = (0..NODES).map(|i| format!("n{i:03}")).collect();
        let mut held: Vec<BTreeSet<(String, u64)>> = (0..NODES)
            .map(|n| (0..2).map(|seq| (names[n].clone(), seq)).collect())
            .collect();
        let union: BTreeSet<(String, u64)> = held.iter().flatten().cloned().collect();
        held[57] = union.clone();
        let peers: Vec<Vec<String>> = (0..NODES)
            .map(|n| names.iter().filter(|p| **p != names[n]).cloned().collect())
            .collect();
        let mut states: Vec<SyncState> = (0..NODES)
            .map(|n| {
                let mut s = SyncState::after(&names[n], &peers[n]);
                if !strided {
                    s.stride = 1;
                }
                s
            })
            .collect();
        let mut rounds = 0;
        while held.iter().any(|h| *h != union) && rounds < 400 {
            rounds += 1;
            let before = held.clone();
            for n in 0..NODES {
                if held[n] == union {
                    continue;
                }
                let Some(peer) = states[n].pick(&peers[n], Duration::ZERO).cloned() else {
                    continue;
                };
                let p = names.iter().position(|x| *x == peer).unwrap_or(0);
                let want = missing(&before[p], &have_of(&held[n]), MAX_ANSWER_SHARDS + 1);
                let more = want.len() > MAX_ANSWER_SHARDS;
                let mut new = 0;
                for k in want.into_iter().take(MAX_ANSWER_SHARDS) {
                    new += usize::from(held[n].insert(k));
                }
                states[n].answered(new, more, Duration::ZERO);
            }
        }
        rounds
    };
    let (strided, walked) = (rounds(true), rounds(false));
    eprintln!("every shard everywhere: {strided} rounds strided, {walked} walking the ring");
    assert!(
        strided * 3 < walked * 2,
        "{strided} rounds strided, {walked} walking"
    );
}
