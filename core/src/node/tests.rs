//! The node core's own decisions: its timers and the anti-entropy schedule.
//! Runs end to end under many nodes are the simulator's tests
//! (`fusi_node::sim`), which drive this core.

use super::*;

const EPOCH_NS: i64 = 1_800_000_000_000_000_000;

fn local(id: &str) -> LocalNode {
    LocalNode {
        id: id.to_owned(),
        name: id.to_owned(),
        region: "fra".to_owned(),
        boot: EPOCH_NS as u64,
        cores: 2,
        vu_limit: 5_000_000,
        version: "test".to_owned(),
    }
}

fn at(now: Duration) -> At {
    At {
        now,
        wall_ns: EPOCH_NS + i64::try_from(now.as_nanos()).unwrap_or(i64::MAX),
    }
}

/// Holds nothing.
struct Nothing;

impl Holdings for Nothing {
    fn holds_all(&self, _run: &Run) -> bool {
        false
    }
}

fn outputs(core: &mut NodeCore) -> Vec<Output> {
    std::iter::from_fn(|| core.poll_output()).collect()
}

/// Two cores, `b` knowing `a` as a connected member from `a`'s first
/// heartbeat.
fn pair() -> (NodeCore, NodeCore) {
    let mut a = NodeCore::new(
        local("a"),
        CoreConfig::default(),
        Vec::new(),
        Duration::ZERO,
    );
    let mut b = NodeCore::new(
        local("b"),
        CoreConfig::default(),
        Vec::new(),
        Duration::ZERO,
    );
    a.handle_timeout(at(Duration::ZERO), Health::default(), &Nothing);
    let heartbeat = outputs(&mut a)
        .into_iter()
        .find_map(|o| match o {
            Output::Mesh(Action::Publish(hb)) => Some(hb),
            _ => None,
        })
        .expect("a heartbeat on the first tick");
    b.mesh_mut()
        .on_heartbeat("a", heartbeat, Duration::ZERO)
        .expect("a's heartbeat taken");
    b.mesh_mut().on_connected("a", Duration::ZERO);
    (a, b)
}

#[test]
fn timers_keep_their_grain_when_called_late_and_catch_up_once_when_far_behind() {
    let every = Duration::from_millis(50);
    let mut next = Duration::from_millis(100);
    assert!(!due(&mut next, every, Duration::from_millis(99)));
    // Called 3 ms late: the next is 50 ms after when it was due, not after
    // the call, so a driver ticking every 50 ms never skips one.
    assert!(due(&mut next, every, Duration::from_millis(103)));
    assert_eq!(next, Duration::from_millis(150));
    assert!(due(&mut next, every, Duration::from_millis(151)));
    // A driver that slept a second fires once, then keeps its pace.
    assert!(due(&mut next, every, Duration::from_millis(1200)));
    assert_eq!(next, Duration::from_millis(1250));
    assert!(!due(&mut next, every, Duration::from_millis(1249)));
}

#[test]
fn the_mesh_and_the_runs_tick_at_their_own_grain_and_poll_timeout_says_when() {
    let config = CoreConfig {
        mesh_every: Duration::from_millis(200),
        runs_every: Duration::from_millis(100),
        ..CoreConfig::default()
    };
    let mut core = NodeCore::new(local("a"), config, Vec::new(), Duration::ZERO);
    let mut heartbeats = 0;
    let mut now = Duration::ZERO;
    while now <= Duration::from_secs(10) {
        if now >= core.poll_timeout() {
            core.handle_timeout(at(now), Health::default(), &Nothing);
        }
        heartbeats += outputs(&mut core)
            .iter()
            .filter(|o| matches!(o, Output::Mesh(Action::Publish(_))))
            .count();
        // Never later than the runs' grain.
        assert!(core.poll_timeout() <= now + Duration::from_millis(100));
        now += Duration::from_millis(10);
        if now == Duration::from_secs(5) {
            core.mesh_mut()
                .set_listen(vec!["/ip4/10.0.0.1/tcp/1".into()], now);
        }
    }
    // Announced at the start, and at a change (the listen address) and
    // twice after it; never on a timer.
    assert_eq!(heartbeats, 4);
}

#[test]
fn shard_asks_are_answered_for_members_only_and_at_most_four_at_once() {
    let (_a, mut b) = pair();
    assert_eq!(
        b.begin_shards_answer("stranger", "r1"),
        Err("not a member yet")
    );
    assert_eq!(b.begin_shards_answer("a", "../etc"), Err("not a run id"));
    for _ in 0..MAX_ANSWERING {
        assert_eq!(b.begin_shards_answer("a", "r1"), Ok(()));
    }
    assert_eq!(
        b.begin_shards_answer("a", "r1"),
        Err("busy answering other asks; ask again later")
    );
    b.shards_answer_sent();
    assert_eq!(b.begin_shards_answer("a", "r1"), Ok(()));
}

/// Advances `a` and `b` from `from` to `to` in steps of 100 ms, `a`'s
/// heartbeats and answers to `b`'s watch reaching `b`; `b`'s asks for
/// ended runs on the way.
fn advance(a: &mut NodeCore, b: &mut NodeCore, from: Duration, to: Duration) -> Vec<Output> {
    let mut asks = Vec::new();
    let mut now = from;
    while now <= to {
        a.handle_timeout(at(now), Health::default(), &Nothing);
        for output in outputs(a) {
            if let Output::Mesh(Action::Publish(hb)) = output {
                let _ = b.mesh_mut().on_heartbeat("a", hb, now);
            }
        }
        b.handle_timeout(at(now), Health::default(), &Nothing);
        for output in outputs(b) {
            match output {
                Output::Mesh(Action::AskClock { known, suspect, .. }) => {
                    let pulse = a.mesh_mut().answer_clock(known, suspect, now);
                    b.mesh_mut().on_pulse("a", pulse, now).expect("a pulse");
                }
                ask @ Output::AskRuns { .. } => asks.push(ask),
                _ => {}
            }
        }
        now += Duration::from_millis(100);
    }
    asks
}

#[test]
fn a_node_asks_a_connected_member_for_unknown_runs_once_in_flight_and_again_after_a_full_answer() {
    let (mut a, mut b) = pair();
    let s = Duration::from_secs;
    let first = advance(&mut a, &mut b, s(0), s(1));
    assert_eq!(
        first,
        vec![Output::AskRuns {
            peer: "a".to_owned(),
            known: Vec::new()
        }]
    );
    // In flight: none more, even past the pace.
    assert!(advance(&mut a, &mut b, s(1), s(20)).is_empty());
    b.runs_answered(1, s(20));
    assert_eq!(advance(&mut a, &mut b, s(20), s(21)).len(), 1);
    // A full answer: there may be more, ask again at once.
    b.runs_answered(MAX_RUNS_ANSWER, s(21));
    assert_eq!(advance(&mut a, &mut b, s(21), s(22)).len(), 1);
    // A failed ask frees the slot; the pace holds: the next 15 s later.
    b.runs_ask_failed();
    assert!(advance(&mut a, &mut b, s(22), Duration::from_millis(35_900)).is_empty());
    assert_eq!(advance(&mut a, &mut b, s(36), s(38)).len(), 1);
}

#[test]
fn ended_runs_are_told_to_members_only_and_a_long_known_list_is_refused() {
    let (_a, b) = pair();
    assert!(b.runs_unknown_to("stranger", &[]).is_err());
    assert_eq!(b.runs_unknown_to("a", &[]).map(|r| r.len()), Ok(0));
    let long = vec!["r1".to_owned(); MAX_KNOWN + 1];
    assert_eq!(
        b.runs_unknown_to("a", &long).map(|r| r.len()),
        Err(format!("more than {MAX_KNOWN} run ids"))
    );
}

#[test]
fn a_submitted_run_lists_this_node_and_its_live_members_with_capped_capacity() {
    let (_a, mut b) = pair();
    let spec = RunSpec::new(
        "ab".repeat(32),
        crate::spec::Executor::ConstantVus {
            vus: 10,
            duration: Duration::from_secs(5),
        },
    );
    let now = Duration::from_millis(100);
    b.submit("r1".to_owned(), spec, None, None, at(now))
        .expect("submitted");
    let run = b.runs().get("r1").expect("the run");
    let candidates: Vec<(&str, u32)> = run
        .proposal
        .candidates
        .iter()
        .map(|c| (c.id.as_str(), c.capacity))
        .collect();
    assert_eq!(candidates, vec![("a", MAX_CAPACITY), ("b", MAX_CAPACITY)]);
    assert!(
        outputs(&mut b)
            .iter()
            .any(|o| matches!(o, Output::Run(RunAction::Publish(_))))
    );
}

/// The heartbeat a new core announces on its first tick.
fn first_heartbeat(core: &mut NodeCore) -> crate::membership::Heartbeat {
    core.handle_timeout(at(Duration::ZERO), Health::default(), &Nothing);
    outputs(core)
        .into_iter()
        .find_map(|o| match o {
            Output::Mesh(Action::Publish(hb)) => Some(hb),
            _ => None,
        })
        .expect("a heartbeat on the first tick")
}

/// `core` holds the node of `heartbeat` as a connected member.
fn holds(core: &mut NodeCore, heartbeat: &crate::membership::Heartbeat) {
    core.mesh_mut()
        .on_heartbeat(&heartbeat.id, heartbeat.clone(), Duration::ZERO)
        .expect("the heartbeat taken");
    core.mesh_mut().on_connected(&heartbeat.id, Duration::ZERO);
}

#[test]
fn a_proposal_flooded_with_its_candidates_named_is_listed_where_members_agree_and_asked_for_where_not()
 {
    let node =
        |id: &str| NodeCore::new(local(id), CoreConfig::default(), Vec::new(), Duration::ZERO);
    let (mut a, mut b, mut c) = (node("a"), node("b"), node("c"));
    let (ha, hb) = (first_heartbeat(&mut a), first_heartbeat(&mut b));
    holds(&mut a, &hb);
    holds(&mut b, &ha);
    // c holds a, but not b.
    holds(&mut c, &ha);
    let spec = RunSpec::new(
        "ab".repeat(32),
        crate::spec::Executor::ConstantVus {
            vus: 10,
            duration: Duration::from_secs(5),
        },
    );
    let now = at(Duration::from_millis(100));
    b.submit("r1".to_owned(), spec, None, None, now)
        .expect("submitted");
    let listed = b.runs().get("r1").expect("the run").proposal.clone();
    let flooded: Vec<RunEnvelope> = outputs(&mut b)
        .into_iter()
        .filter_map(|o| match o {
            Output::Run(RunAction::Publish(env)) if matches!(env.body, RunMessage::Propose(_)) => {
                Some(env)
            }
            _ => None,
        })
        .collect();
    let [named] = flooded.as_slice() else {
        panic!("one proposal flooded: {flooded:?}");
    };
    let RunMessage::Propose(p) = &named.body else {
        unreachable!()
    };
    assert!(p.candidates.is_empty() && p.members.is_some(), "{p:?}");
    let bytes = crate::wire::encode(named).len();
    assert!(bytes < 600, "the flooded proposal is {bytes} bytes");

    // a holds b and itself, as b does: it lists the candidates itself.
    assert_eq!(a.on_run_gossip("b", "b", named.clone(), now), Ok(true));
    assert_eq!(a.runs().get("r1").map(|r| &r.proposal), Some(&listed));

    // c holds a and itself: not b's list. It asks the relay, a, whose
    // answer lists them, and takes that.
    assert_eq!(
        c.on_run_gossip("b", "a", named.clone(), now),
        Err(RunRefused::OtherMembers)
    );
    assert!(c.runs().get("r1").is_none());
    let pulls = c.runs_mut().take_refusals();
    assert_eq!(
        pulls,
        vec![RunAction::Pull {
            run: "r1".to_owned(),
            from: "a".to_owned(),
            known: false
        }]
    );
    let answer = a.runs_mut().answer_run("c", "r1", false, now);
    let proposal = answer
        .into_iter()
        .find(|e| matches!(e.body, RunMessage::Propose(_)))
        .expect("the answer holds the proposal");
    assert_eq!(c.on_run_gossip("a", "a", proposal, now), Ok(true));
    assert_eq!(c.runs().get("r1").map(|r| &r.proposal), Some(&listed));

    // A named copy of a run known already changes nothing.
    assert_eq!(c.on_run_gossip("b", "a", named.clone(), now), Ok(false));
}
