//! The mesh core under virtual time: many nodes, skewed clocks, asymmetric
//! paths, message loss, a partition that heals.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::*;
use crate::rng::Rng;

const EPOCH_NS: i64 = 1_800_000_000_000_000_000;
const MS: i64 = 1_000_000;

fn region(i: usize) -> String {
    format!("r{}", i % 3)
}

/// One-way base delay between regions: asymmetric between r0 and r1.
fn base_delay_ns(from: &str, to: &str) -> i64 {
    match (from, to) {
        _ if from == to => MS / 2,
        ("r0", "r1") => 30 * MS,
        ("r1", "r0") => 10 * MS,
        _ => 5 * MS,
    }
}

#[derive(Debug)]
enum Msg {
    Heartbeat(Heartbeat),
    Suspect {
        id: String,
        boot: u64,
        seq: u64,
    },
    ClockReq {
        t1: i64,
        known: Option<(u64, u64)>,
        suspect: bool,
        introduce: Option<Box<Heartbeat>>,
    },
    ClockResp {
        t1: i64,
        t2: i64,
        t3: i64,
        pulse: Pulse,
        yours: Option<(i64, i64)>,
    },
    MembersReq {
        digest: u64,
        heartbeat: Heartbeat,
        after: Option<String>,
    },
    MembersResp(Vec<Heartbeat>, bool),
    MembersSame,
    ClockRefused,
    Connect,
    HeardReq(String),
    HeardResp(String, Option<Duration>),
}

struct Sim {
    nodes: Vec<MeshCore>,
    offsets: Vec<i64>,
    side_b: Vec<bool>,
    partitioned: bool,
    loss: f64,
    /// Each message's delay is its regions' plus up to this much, ns.
    jitter: i64,
    /// `(asker, answerer, filter)`: the asker's exchanges with the
    /// answerer, also kept in a filter of their own, to tell what the
    /// asker's samples alone say.
    alone: Option<(usize, usize, ClockFilter)>,
    rng: Rng,
    queue: BinaryHeap<Reverse<(Duration, u64, usize, usize)>>,
    payloads: Vec<Option<Msg>>,
    seq: u64,
    sent: Vec<u64>,
    now: Duration,
    /// Open connections.
    links: Vec<Vec<bool>>,
    /// Connected component of each node: gossip reaches the nodes of the
    /// publisher's component, relayed over connections.
    component: Vec<usize>,
    /// Pairs of nodes whose messages to each other are all lost, though
    /// both stay connected to the rest (a broken route between two hosts).
    cut: BTreeSet<(usize, usize)>,
    /// Suspicions published: by whom, of whom, when.
    suspicions: Vec<(usize, String, Duration)>,
}

impl Sim {
    fn new(n: usize, loss: f64, seed: u64) -> Sim {
        let mut rng = Rng(seed);
        let offsets = (0..n)
            .map(|_| rng.below(100 * MS as u64) as i64 - 50 * MS)
            .collect::<Vec<_>>();
        let nodes = (0..n)
            .map(|i| {
                let me = LocalNode {
                    id: format!("n{i:04}"),
                    name: format!("node-{i}"),
                    region: region(i),
                    boot: 1,
                    cores: 2,
                    vu_limit: 1000,
                    version: "test".into(),
                };
                let boot = if i == 0 {
                    vec![]
                } else {
                    vec![Seed::Address("/sim/0".into())]
                };
                let config = MeshConfig {
                    redial_max: Duration::from_secs(8),
                    ..MeshConfig::default()
                };
                let mut core = MeshCore::new(me, config, boot, Duration::ZERO);
                core.set_listen(vec![format!("/sim/{i}")], Duration::ZERO);
                core
            })
            .collect();
        Sim {
            nodes,
            offsets,
            side_b: (0..n).map(|i| i % 2 == 1).collect(),
            partitioned: false,
            loss,
            jitter: MS,
            alone: None,
            rng,
            queue: BinaryHeap::new(),
            payloads: Vec::new(),
            seq: 0,
            sent: vec![0; n],
            now: Duration::ZERO,
            links: vec![vec![false; n]; n],
            component: (0..n).collect(),
            cut: BTreeSet::new(),
            suspicions: Vec::new(),
        }
    }

    fn wall(&self, node: usize, at: Duration) -> i64 {
        EPOCH_NS + at.as_nanos() as i64 + self.offsets[node]
    }

    fn reachable(&self, a: usize, b: usize) -> bool {
        !self.partitioned || self.side_b[a] == self.side_b[b]
    }

    fn send(&mut self, from: usize, to: usize, msg: Msg) {
        self.sent[from] += 1;
        // Gossip reaches a node over several paths (gossipsub's mesh has 6
        // and more): it is lost only when three copies are.
        let loss = match msg {
            Msg::Heartbeat(_) | Msg::Suspect { .. } => self.loss.powi(3),
            _ => self.loss,
        };
        if !self.reachable(from, to)
            || self.cut.contains(&(from.min(to), from.max(to)))
            || self.rng.chance(loss)
        {
            return;
        }
        let delay =
            base_delay_ns(&region(from), &region(to)) + self.rng.below(self.jitter as u64) as i64;
        let at = self.now + Duration::from_nanos(delay as u64);
        self.seq += 1;
        self.payloads.push(Some(msg));
        self.queue
            .push(Reverse((at, self.payloads.len() as u64 - 1, from, to)));
    }

    fn deliver(&mut self, from: usize, to: usize, msg: Msg) {
        let now = self.now;
        let from_id = format!("n{from:04}");
        match msg {
            Msg::Heartbeat(hb) => {
                self.nodes[to]
                    .on_heartbeat(&from_id, hb, now)
                    .expect("valid heartbeat");
            }
            Msg::Suspect { id, boot, seq } => {
                self.nodes[to].on_suspicion(&from_id, &id, boot, seq, now);
            }
            Msg::ClockReq {
                t1,
                known,
                suspect,
                introduce,
            } => {
                if let Some(hb) = introduce {
                    self.nodes[to]
                        .on_heartbeat(&from_id, *hb, now)
                        .expect("valid heartbeat");
                }
                if !self.nodes[to].may_answer_clock(&from_id) {
                    self.nodes[to].on_stranger(&from_id);
                    self.send(to, from, Msg::ClockRefused);
                } else {
                    let t2 = self.wall(to, now);
                    let t3 = t2 + 50_000;
                    let pulse = self.nodes[to].answer_clock(known, suspect, now);
                    let yours = self.nodes[to].clock_to_tell(&from_id, now);
                    let msg = Msg::ClockResp {
                        t1,
                        t2,
                        t3,
                        pulse,
                        yours,
                    };
                    self.send(to, from, msg);
                }
            }
            Msg::ClockResp {
                t1,
                t2,
                t3,
                pulse,
                yours,
            } => {
                let t4 = self.wall(to, now);
                self.nodes[to]
                    .on_pulse(&from_id, pulse, now)
                    .expect("valid pulse");
                let exchange = Exchange { t1, t2, t3, t4 };
                if let Some((_, _, filter)) =
                    self.alone.as_mut().filter(|a| (a.0, a.1) == (to, from))
                {
                    filter.add(exchange.sample(now).expect("valid"));
                }
                let ok = self.nodes[to].on_clock_answer(&from_id, exchange, yours, now);
                assert!(ok, "a consistent exchange is taken");
            }
            Msg::ClockRefused => self.nodes[to].on_clock_refused(&from_id),
            Msg::HeardReq(member) => {
                let ago = self.nodes[to].answer_heard(&member, now);
                self.send(to, from, Msg::HeardResp(member, ago));
            }
            Msg::HeardResp(member, ago) => self.nodes[to].on_heard(&from_id, &member, ago, now),
            Msg::MembersSame => self.nodes[to].on_members_same(),
            Msg::MembersReq {
                digest,
                heartbeat,
                after,
            } => {
                self.nodes[to]
                    .on_heartbeat(&from_id, heartbeat, now)
                    .expect("valid heartbeat");
                match self.nodes[to].answer_members(&from_id, digest, after.as_deref()) {
                    Ok(Some((members, complete))) => {
                        self.send(to, from, Msg::MembersResp(members, complete));
                    }
                    Ok(None) => self.send(to, from, Msg::MembersSame),
                    Err(_) => {}
                }
            }
            Msg::MembersResp(members, complete) => {
                for result in self.nodes[to].on_members(&from_id, members, complete, now) {
                    result.expect("valid members");
                }
            }
            Msg::Connect => {
                if self.reachable(from, to) {
                    let to_id = format!("n{to:04}");
                    self.nodes[from].on_connected(&to_id, now);
                    self.nodes[to].on_connected(&from_id, now);
                    self.links[from][to] = true;
                    self.links[to][from] = true;
                    if from != 0 && to == 0 {
                        self.nodes[from].on_bootstrap_connected(0, "/sim/0");
                    }
                }
            }
        }
    }

    fn act(&mut self, i: usize, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Publish(hb) => {
                    if self.nodes[i].connected_count() == 0 {
                        continue;
                    }
                    for j in 0..self.nodes.len() {
                        if j != i && self.component[j] == self.component[i] {
                            self.send(i, j, Msg::Heartbeat(hb.clone()));
                        }
                    }
                }
                Action::Suspect { id, boot, seq } => {
                    self.suspicions.push((i, id.clone(), self.now));
                    for j in 0..self.nodes.len() {
                        if j != i && self.component[j] == self.component[i] {
                            let id = id.clone();
                            self.send(i, j, Msg::Suspect { id, boot, seq });
                        }
                    }
                }
                Action::AskClock {
                    peer,
                    known,
                    suspect,
                    introduce,
                } => {
                    let j: usize = peer[1..].parse().expect("sim id");
                    let t1 = self.wall(i, self.now);
                    let msg = Msg::ClockReq {
                        t1,
                        known,
                        suspect,
                        introduce,
                    };
                    self.send(i, j, msg);
                }
                Action::AskMembers {
                    peer,
                    digest,
                    heartbeat,
                    after,
                } => {
                    let j: usize = peer[1..].parse().expect("sim id");
                    self.send(
                        i,
                        j,
                        Msg::MembersReq {
                            digest,
                            heartbeat,
                            after,
                        },
                    );
                }
                Action::DialPeer { peer, .. } => {
                    let j: usize = peer[1..].parse().expect("sim id");
                    self.send(i, j, Msg::Connect);
                }
                Action::AskHeard { peer, member } => {
                    let j: usize = peer[1..].parse().expect("sim id");
                    self.send(i, j, Msg::HeardReq(member));
                }
                Action::DialBootstrap { .. } => self.send(i, 0, Msg::Connect),
                Action::Resolve { .. } | Action::Membership(_) => {}
            }
        }
    }

    /// Runs until `until`, ticking every node every 100 ms.
    fn run_until(&mut self, until: Duration) {
        let step = Duration::from_millis(100);
        while self.now < until {
            let next_tick = self.now + step;
            while let Some(Reverse((at, idx, from, to))) = self.queue.peek().copied() {
                if at > next_tick {
                    break;
                }
                self.queue.pop();
                self.now = at.max(self.now);
                if let Some(msg) = self.payloads[idx as usize].take() {
                    self.deliver(from, to, msg);
                }
            }
            self.now = next_tick;
            self.components();
            for i in 0..self.nodes.len() {
                let actions = self.nodes[i].tick(self.now, Health::default());
                self.act(i, actions);
            }
        }
    }

    fn components(&mut self) {
        let n = self.nodes.len();
        let mut component = vec![usize::MAX; n];
        for start in 0..n {
            if component[start] != usize::MAX {
                continue;
            }
            let mut stack = vec![start];
            component[start] = start;
            while let Some(a) = stack.pop() {
                for (b, linked) in self.links[a].iter().enumerate() {
                    if *linked && component[b] == usize::MAX {
                        component[b] = start;
                        stack.push(b);
                    }
                }
            }
        }
        self.component = component;
    }

    fn partition(&mut self, on: bool) {
        self.partitioned = on;
        if on {
            let n = self.nodes.len();
            for a in 0..n {
                for b in 0..n {
                    if self.side_b[a] != self.side_b[b] {
                        let id = format!("n{b:04}");
                        self.nodes[a].on_disconnected(&id);
                        self.links[a][b] = false;
                    }
                }
            }
        }
    }

    fn knows(&self, a: usize, b: usize) -> bool {
        self.nodes[a].region_of(&format!("n{b:04}")).is_some()
    }
}

/// One node in `fra`, dialing `bootstraps`, at time zero.
fn lone(id: &str, bootstraps: Vec<Seed>) -> MeshCore {
    let me = LocalNode {
        id: id.into(),
        name: id.into(),
        region: "fra".into(),
        boot: 1,
        cores: 1,
        vu_limit: 1,
        version: "t".into(),
    };
    MeshCore::new(me, MeshConfig::default(), bootstraps, Duration::ZERO)
}

/// Makes `id` a member of `core`, heard and connected at `at`.
fn add_member(core: &mut MeshCore, id: &str, at: Duration) {
    let mut hb = core.heartbeat(Health::default());
    hb.id = id.into();
    core.on_heartbeat(id, hb, at).expect("a member");
    core.on_connected(id, at);
}

/// The pulse with which `id` answers `core`: the heartbeat it holds.
fn pulse_of(core: &MeshCore, id: &str) -> Pulse {
    let (boot, seq) = core
        .member(id)
        .map(|m| (m.heartbeat.boot, m.heartbeat.seq))
        .expect("a member");
    Pulse {
        boot,
        seq,
        cpu: 0.0,
        sockets: 0,
        heartbeat: None,
    }
}

#[test]
fn two_hundred_nodes_converge_estimate_clocks_and_survive_a_partition() {
    let n = 200;
    let mut sim = Sim::new(n, 0.1, 0x5eed_1234_abcd_ef01);

    // Everyone dials node 0 only, and learns the rest from its list and
    // the newcomers' announcements.
    let everyone_knows_everyone =
        |sim: &Sim| (0..n).all(|a| sim.nodes[a].peers(sim.now).len() == n - 1);
    while !everyone_knows_everyone(&sim) && sim.now < Duration::from_secs(10) {
        let next = sim.now + Duration::from_millis(100);
        sim.run_until(next);
    }
    let converged_at = sim.now;
    assert!(everyone_knows_everyone(&sim), "not converged in 10 s");
    let sent_to_converge = sim.sent.iter().sum::<u64>() as f64 / n as f64;
    // Clock estimates need a few exchanges more, and the members a list
    // lacked while the mesh formed are no longer doubted 9 s on.
    sim.run_until(converged_at + Duration::from_secs(10));

    // Every node watches 4 members, and is watched by some: the ring
    // leaves no one out.
    let mut watchers = vec![0; n];
    for a in 0..n {
        assert_eq!(sim.nodes[a].watched().len(), 4, "node {a}");
        for id in sim.nodes[a].watched() {
            watchers[id[1..].parse::<usize>().expect("sim id")] += 1;
        }
    }
    assert!(watchers.iter().all(|w| *w == 4), "{watchers:?}");

    // A node keeps connections to at most 16 members (4 either side on the
    // ring, and 4 chords each way), each of which keeps it in turn, and the
    // views join every node to every other.
    let index = |id: &String| id[1..].parse::<usize>().expect("sim id");
    let kept: Vec<BTreeSet<usize>> = (0..n)
        .map(|a| sim.nodes[a].kept().map(index).collect())
        .collect();
    for a in 0..n {
        assert!(
            (8..=16).contains(&kept[a].len()),
            "node {a} keeps {:?}",
            kept[a]
        );
        for b in &kept[a] {
            assert!(kept[*b].contains(&a), "{a} keeps {b}, not the other way");
        }
    }
    let mut reached = BTreeSet::from([0]);
    let mut stack = vec![0];
    while let Some(a) = stack.pop() {
        stack.extend(kept[a].iter().filter(|b| reached.insert(**b)));
    }
    assert_eq!(reached.len(), n, "the views do not join every node");

    // Every clock estimate of a watched member holds the true offset
    // within its bound, and the asymmetric pair is off by half the
    // asymmetry, as NTP predicts.
    let mut estimates = 0;
    for a in 0..n {
        for id in sim.nodes[a].watched().clone() {
            let b: usize = id[1..].parse().expect("sim id");
            let Some(est) = sim.nodes[a].clock(&id, sim.now) else {
                panic!("node {a} has no clock estimate of {b}");
            };
            estimates += 1;
            let truth = sim.offsets[b] - sim.offsets[a];
            let error = est.offset_ns - truth;
            assert!(
                error.abs() <= est.bound_ns,
                "{a}->{b}: error {error} ns outside ±{} ns",
                est.bound_ns
            );
            let (ra, rb) = (region(a), region(b));
            let asymmetry = base_delay_ns(&ra, &rb) - base_delay_ns(&rb, &ra);
            // θ − truth = (forth − back) / 2, with up to 1 ms of jitter each way.
            assert!(
                (error - asymmetry / 2).abs() <= MS,
                "{a}->{b}: error {error} ns, expected {} ns",
                asymmetry / 2
            );
        }
    }
    assert_eq!(estimates, n * 4);

    // Idle, a node's traffic does not depend on the mesh's size: it asks
    // the members it watches, and answers its watchers.
    let before: u64 = sim.sent.iter().sum();
    let idle_from = sim.now;
    sim.run_until(idle_from + Duration::from_secs(20));
    let idle = (sim.sent.iter().sum::<u64>() - before) as f64 / n as f64 / 20.0;
    assert!(idle < 10.0, "{idle} messages per node per second, idle");
    assert!(
        (0..n).all(|a| sim.nodes[a]
            .peers(sim.now)
            .iter()
            .all(|p| !p.member.suspect)),
        "10 % loss suspects no one"
    );

    // A partition into two halves: each side removes the other, and keeps
    // its own. A node's watchers may all be on the other side: it goes
    // once its side's ring, shorn of the others that went, puts it before
    // a watcher.
    sim.partition(true);
    let parted = sim.now;
    let mut parted_for = Duration::ZERO;
    let apart = |sim: &Sim| {
        (0..n)
            .all(|a| (0..n).all(|b| a == b || sim.knows(a, b) == (sim.side_b[a] == sim.side_b[b])))
    };
    while !apart(&sim) && parted_for < Duration::from_secs(150) {
        sim.run_until(sim.now + Duration::from_millis(500));
        parted_for = sim.now - parted;
    }
    assert!(apart(&sim), "the sides do not part in 150 s");

    // Heal: nodes keep dialing the members they lost (with backoff, here at
    // most every 8 s), reconnect, and learn the other side from its list.
    // Most pairs know each other again within 25 s; at 10 % loss a node
    // may miss every telling of one member, and learns it at its next
    // comparison of lists, 30 s on (on seeds 1-16, 2 took 44 s).
    sim.partition(false);
    let healed = sim.now;
    while !everyone_knows_everyone(&sim) && sim.now < healed + Duration::from_secs(60) {
        sim.run_until(sim.now + Duration::from_millis(500));
    }
    assert!(everyone_knows_everyone(&sim), "not healed in 60 s");
    eprintln!(
        "{n} nodes: membership converged at {converged_at:?} (virtual), {sent_to_converge:.0} messages \
         sent per node until then; {idle:.1} messages per node per second idle; the sides parted \
         in {parted_for:?} and knew each other again {:?} after the heal",
        sim.now - healed
    );
}

#[test]
fn forged_heartbeats_are_refused_and_strangers_get_no_clock() {
    let mut core = lone("a", vec![]);
    let mut hb = core.heartbeat(Health::default());
    hb.id = "b".into();
    assert!(matches!(
        core.on_heartbeat("c", hb.clone(), Duration::ZERO),
        Err(HeartbeatRefused::Forged { .. })
    ));
    assert!(!core.may_answer_clock("b"));
    assert_eq!(
        core.on_heartbeat("b", hb.clone(), Duration::ZERO),
        Ok(Some(Event::Joined("b".into())))
    );
    assert!(core.may_answer_clock("b"));
    hb.protocol = PROTOCOL + 1;
    hb.seq += 1;
    assert!(matches!(
        core.on_heartbeat("b", hb, Duration::ZERO),
        Err(HeartbeatRefused::Membership(_))
    ));
}

#[test]
fn bootstrap_dials_back_off_and_resume_when_isolated() {
    let mut core = lone("a", vec![Seed::Address("/x".into())]);
    let mut dials = Vec::new();
    for ms in (0..70_000).step_by(100) {
        let now = Duration::from_millis(ms);
        for a in core.tick(now, Health::default()) {
            if let Action::DialBootstrap { .. } = a {
                dials.push(ms);
            }
        }
    }
    // 0, 1, 3, 7, 15, 31 s, then every 30 s: 61 s.
    assert_eq!(dials, vec![0, 1_000, 3_000, 7_000, 15_000, 31_000, 61_000]);
    core.on_connected("b", Duration::from_secs(70));
    core.on_bootstrap_connected(0, "/x");
    let quiet = (700..800).any(|s| {
        core.tick(Duration::from_millis(s * 100), Health::default())
            .iter()
            .any(|a| matches!(a, Action::DialBootstrap { .. }))
    });
    assert!(!quiet, "no bootstrap dial while connected");
    core.on_disconnected("b");
    let again = core.tick(Duration::from_secs(81), Health::default());
    assert!(
        again
            .iter()
            .any(|a| matches!(a, Action::DialBootstrap { .. }))
    );
}

/// What a batch of actions dials as bootstrap, in order.
fn bootstrap_dials(actions: &[Action]) -> Vec<String> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::DialBootstrap { addr, .. } => Some(addr.clone()),
            _ => None,
        })
        .collect()
}

fn resolves(actions: &[Action]) -> bool {
    actions.iter().any(|a| matches!(a, Action::Resolve { .. }))
}

#[test]
fn a_bootstrap_name_dials_every_address_but_its_own_and_members_and_is_asked_again() {
    use std::net::IpAddr;
    let name = SeedName {
        host: "fusi.fusi.svc.cluster.local".into(),
        port: 7400,
        family: Family::Any,
        peer: None,
    };
    let mut core = lone("a", vec![Seed::Name(name.clone())]);
    core.set_listen(vec!["/ip4/10.0.0.1/tcp/7400".into()], Duration::ZERO);
    let at = Duration::from_secs;
    let first = core.tick(at(0), Health::default());
    assert!(first.contains(&Action::Resolve { index: 0, name }));
    assert!(
        !resolves(&core.tick(at(5), Health::default())),
        "no second question while one is out"
    );
    let ips: Vec<IpAddr> = ["10.0.0.1", "10.0.0.2", "10.0.0.2", "fd00::3", "10.0.0.4"]
        .iter()
        .map(|ip| ip.parse().unwrap())
        .collect();
    assert_eq!(
        bootstrap_dials(&core.on_resolved(0, Some(&ips))),
        [
            "/ip4/10.0.0.2/tcp/7400",
            "/ip6/fd00::3/tcp/7400",
            "/ip4/10.0.0.4/tcp/7400"
        ],
        "every address once, not this node's own"
    );
    // 10.0.0.2 lets it in; 10.0.0.4 turns out to be member c.
    core.on_connected("b", at(5));
    core.on_bootstrap_connected(0, "/ip4/10.0.0.2/tcp/7400");
    let mut c = core.heartbeat(Health::default());
    c.id = "c".into();
    c.listen = vec!["/ip4/10.0.0.4/tcp/7400".into()];
    core.on_heartbeat("c", c.clone(), at(5)).unwrap();
    // Asked again while it has members, on the backoff of a dial.
    let mut asked = Vec::new();
    for s in 5..40 {
        if resolves(&core.tick(at(s), Health::default())) {
            asked.push(s);
            assert!(core.on_resolved(0, None).is_empty());
        }
    }
    assert_eq!(asked, [5, 7, 11, 19, 35], "then after 2, 4, 8, 16 s");
    // A node that started later appears; the address that let this node
    // in, member c's and this node's own are not dialed; the one that
    // failed is dialed again.
    c.seq += 1;
    core.on_heartbeat("c", c, at(65)).unwrap();
    let mut later = ips.clone();
    later.push("10.0.0.5".parse().unwrap());
    assert!(resolves(&core.tick(at(65), Health::default())));
    assert_eq!(
        bootstrap_dials(&core.on_resolved(0, Some(&later))),
        ["/ip6/fd00::3/tcp/7400", "/ip4/10.0.0.5/tcp/7400"]
    );
    // Cut off: asked again at once, and every address but its own and the
    // member's dialed.
    core.on_disconnected("b");
    assert!(resolves(&core.tick(at(66), Health::default())));
    assert_eq!(bootstrap_dials(&core.on_resolved(0, Some(&later))).len(), 3);
    assert_eq!(core.bootstrap_retry_at(0), Some(at(67)));
}

#[test]
fn a_bootstrap_name_keeps_its_family_and_peer_id() {
    use std::net::IpAddr;
    let v6 = SeedName {
        host: "localhost".into(),
        port: 9,
        family: Family::V6,
        peer: Some("12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN".into()),
    };
    let mut core = lone("a", vec![Seed::Name(v6.clone())]);
    core.set_listen(vec!["/ip6/::1/tcp/9".into()], Duration::ZERO);
    let _ = core.tick(Duration::ZERO, Health::default());
    let ips: Vec<IpAddr> = vec!["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()];
    assert!(
        core.on_resolved(0, Some(&ips)).is_empty(),
        "no IPv4 address, and ::1 is this node's own (with or without the peer id)"
    );
    core.set_listen(vec![], Duration::from_secs(1));
    let _ = core.tick(Duration::from_secs(1), Health::default());
    assert_eq!(
        bootstrap_dials(&core.on_resolved(0, Some(&ips))),
        ["/ip6/::1/tcp/9/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"]
    );
    assert_eq!(
        Seed::Name(v6).to_string(),
        "/dns6/localhost/tcp/9/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"
    );
    assert!(bootstrap::is_host_name(
        "fusi-0.fusi.default.svc.cluster.local."
    ));
    let long = "x".repeat(64);
    for bad in ["", "10.0.0.5", "-x", "a..b", "a_b", long.as_str(), "x y"] {
        assert!(!bootstrap::is_host_name(bad), "{bad:?}");
    }
}

#[test]
fn heartbeats_announce_at_most_sixteen_addresses_and_no_loopback_beside_others() {
    let mut core = lone("a", vec![]);
    let mut addrs = vec!["/ip4/127.0.0.1/tcp/7400".to_owned()];
    addrs.extend((0..30).map(|i| format!("/ip4/10.0.0.{i}/tcp/7400")));
    core.set_listen(addrs, Duration::ZERO);
    let hb = core.heartbeat(Health::default());
    assert_eq!(hb.listen.len(), 16);
    assert!(hb.listen.iter().all(|a| !a.starts_with("/ip4/127.")));
    // The encoded heartbeat stays inside what peers accept.
    assert!(crate::wire::decode_heartbeat(&crate::wire::encode(&hb)).is_ok());
    core.set_listen(vec!["/ip4/127.0.2.1/tcp/1".into()], Duration::ZERO);
    assert_eq!(
        core.heartbeat(Health::default()).listen,
        vec!["/ip4/127.0.2.1/tcp/1".to_owned()],
        "a loopback-only testnet still announces its addresses"
    );
}

#[test]
fn a_flood_of_identities_is_bounded() {
    use crate::membership::MAX_MEMBERS;
    let mut core = lone("me", vec![]);
    let template = core.heartbeat(Health::default());
    let mut refused = 0;
    for i in 0..MAX_MEMBERS + 10 {
        let mut hb = template.clone();
        hb.id = format!("fake-{i}");
        hb.listen = vec!["/ip4/192.0.2.1/tcp/80".into()];
        if core
            .on_heartbeat(&hb.id.clone(), hb, Duration::ZERO)
            .is_err()
        {
            refused += 1;
        }
    }
    assert_eq!(refused, 10);
    assert_eq!(core.peers(Duration::ZERO).len(), MAX_MEMBERS);
    // The ones it watches never answer, and go; none was ever connected,
    // so none of them is dialed again. (The others stay until a watcher
    // of theirs suspects them: the whole mesh watches every member.)
    let _ = core.tick(Duration::ZERO, Health::default());
    let watched = core.watched().clone();
    assert_eq!(watched.len(), 4);
    for ms in (100..=10_000).step_by(100) {
        let _ = core.tick(Duration::from_millis(ms), Health::default());
    }
    assert_eq!(core.peers(Duration::from_secs(10)).len(), MAX_MEMBERS - 4);
    let later = core.tick(Duration::from_secs(20), Health::default());
    assert!(
        !later
            .iter()
            .any(|a| matches!(a, Action::DialPeer { peer, .. } if watched.contains(peer))),
        "identities heard only through gossip are not dialed after they leave"
    );
}

#[test]
fn a_stepped_clock_is_re_estimated_by_every_member_within_two_seconds() {
    let n = 8;
    for (step, told) in [
        (90_000 * MS, true),
        (-3_600_000 * MS, true),
        (90_000 * MS, false),
    ] {
        let mut sim = Sim::new(n, 0.0, 0xc10c);
        sim.run_until(Duration::from_secs(12));
        let estimate_of = |sim: &Sim, a: usize, b: usize| {
            sim.nodes[a]
                .clock(&format!("n{b:04}"), sim.now)
                .unwrap_or_else(|| panic!("{a} has no estimate of {b}"))
        };
        // The nodes that watch 3, and those 3 watches, hold estimates.
        let watchers: Vec<usize> = (0..n)
            .filter(|a| sim.nodes[*a].watched().contains("n0003"))
            .collect();
        let watched: Vec<usize> = sim.nodes[3]
            .watched()
            .iter()
            .map(|id| id[1..].parse().expect("sim id"))
            .collect();
        assert_eq!((watchers.len(), watched.len()), (4, 4));
        let before = estimate_of(&sim, watchers[0], 3);
        let truth = sim.offsets[3] - sim.offsets[watchers[0]];
        assert!((before.offset_ns - truth).abs() <= before.bound_ns);
        // Node 3's wall clock steps; its runtime notices (told) or not.
        sim.offsets[3] += step;
        if told {
            let now = sim.now;
            sim.nodes[3].on_own_clock_step(now);
            assert!(sim.nodes[3].clock_settling(now));
        }
        let stepped = sim.now;
        sim.run_until(stepped + Duration::from_secs(2));
        for &a in &watchers {
            let truth = sim.offsets[3] - sim.offsets[a];
            let est = estimate_of(&sim, a, 3);
            assert!(
                (est.offset_ns - truth).abs() <= est.bound_ns + MS,
                "step {step} (told: {told}): {a}'s estimate of 3 is {} off",
                est.offset_ns - truth
            );
        }
        for &a in &watched {
            let truth = sim.offsets[3] - sim.offsets[a];
            let back = estimate_of(&sim, 3, a);
            assert!(
                (back.offset_ns + truth).abs() <= back.bound_ns + MS,
                "step {step} (told: {told}): 3's estimate of {a} is {} off",
                back.offset_ns + truth
            );
        }
        assert!(!sim.nodes[3].clock_settling(sim.now));
    }
}

#[test]
fn two_nodes_that_sample_each_other_for_a_run_tell_each_other_and_narrow_their_estimates() {
    let mut sim = Sim::new(6, 0.0, 0x7e11);
    sim.jitter = 10 * MS;
    let config = MeshConfig::default();
    sim.alone = Some((
        1,
        0,
        ClockFilter::new(config.clock_window, config.clock_max_age),
    ));
    sim.run_until(Duration::from_secs(12));
    // Node 1 is not a clock peer of node 0 yet: nothing is told.
    let (n0, n1, n2) = ("n0000", "n0001", "n0002");
    assert_eq!(sim.nodes[0].clock_to_tell(n1, sim.now), None);
    // A run: node 0 leads it and samples node 1; node 1 samples node 0,
    // here at the pace of any member (8 samples at 200 ms, then one every
    // 2 s): with few samples each, what the other side's trips add shows.
    for node in &mut sim.nodes[..2] {
        node.config.run_clock_fast = config.clock_fast;
        node.config.run_clock_fast_samples = config.clock_fast_samples;
    }
    sim.nodes[0].set_clock_peers([n1.to_owned()].into());
    sim.nodes[1].set_clock_peers([n0.to_owned()].into());
    sim.run_until(Duration::from_secs(20));
    let now = sim.now;
    let told = sim.nodes[0].clock_to_tell(n1, now).expect("node 1 is told");
    assert_eq!(
        sim.nodes[0].clock_to_tell(n2, now),
        None,
        "not a clock peer"
    );
    let of_1 = sim.nodes[0].clock(n1, now).expect("node 0's estimate");
    assert_eq!(told, (of_1.offset_ns, of_1.bound_ns));
    let of_0 = sim.nodes[1].clock(n0, now).expect("node 1's estimate");
    let alone = sim
        .alone
        .as_ref()
        .expect("kept")
        .2
        .estimate(now)
        .expect("samples");
    let truth = sim.offsets[0] - sim.offsets[1];
    for (name, e) in [("told", of_0), ("alone", alone)] {
        let error = e.offset_ns - truth;
        assert!(error.abs() <= e.bound_ns, "{name}: {error} ns off, {e:?}");
    }
    assert_eq!(of_0.samples, alone.samples, "the same samples");
    // Node 0's exchanges timed trips node 1 never did: node 1's estimate
    // with what node 0 told is inside, and narrower than, its own alone.
    assert!(
        of_0.offset_ns - of_0.bound_ns >= alone.offset_ns - alone.bound_ns
            && of_0.offset_ns + of_0.bound_ns <= alone.offset_ns + alone.bound_ns,
        "{of_0:?} is not inside {alone:?}"
    );
    // The bound is 20 ms of asymmetric paths (30 ms out, 10 back), which
    // nothing can narrow, and what the jitter of the shortest trips adds.
    assert!(
        alone.bound_ns - of_0.bound_ns >= 50_000,
        "{of_0:?} is not narrower than {alone:?}"
    );
}

#[test]
fn a_node_that_stood_still_suspects_no_one_and_its_own_watch_outweighs_anothers() {
    let mut core = lone("a", vec![]);
    let at = Duration::from_millis;
    add_member(&mut core, "b", at(0));
    add_member(&mut core, "c", at(0));
    let suspects = |actions: &[Action]| {
        actions
            .iter()
            .filter(|a| matches!(a, Action::Suspect { .. }))
            .count()
    };
    assert_eq!(suspects(&core.tick(at(0), Health::default())), 0);
    assert!(core.watched().contains("b") && core.watched().contains("c"));
    // Frozen from 0.1 s to 5 s: b and c said nothing it could hear.
    let _ = core.tick(at(100), Health::default());
    assert_eq!(suspects(&core.tick(at(5_000), Health::default())), 0);
    assert_eq!(suspects(&core.tick(at(5_100), Health::default())), 0);
    // c answers; c says b is silent, but this node heard b 100 ms ago.
    let pulse = |core: &mut MeshCore, id: &str, t| {
        let pulse = pulse_of(core, id);
        core.on_pulse(id, pulse, t).expect("a pulse");
    };
    pulse(&mut core, "b", at(5_200));
    pulse(&mut core, "c", at(5_200));
    assert_eq!(core.on_suspicion("c", "b", 1, 9, at(5_300)), None);
    assert!(core.member("b").is_some_and(|m| !m.suspect));
    // Silent to this node too, for longer than 1.2 s: then c's word is
    // taken.
    pulse(&mut core, "c", at(8_000));
    assert!(core.on_suspicion("c", "b", 1, 9, at(8_800)).is_some());
    assert!(core.member("b").is_some_and(|m| m.suspect));
    // A suspect's own suspicions do not count: it is likely the one cut off.
    assert_eq!(core.on_suspicion("b", "c", 1, 9, at(8_900)), None);
    assert!(core.member("c").is_some_and(|m| !m.suspect));
}

#[test]
fn suspicions_of_this_node_are_refuted_at_most_once_a_second() {
    let mut core = lone("a", vec![]);
    let at = Duration::from_millis;
    add_member(&mut core, "b", at(0));
    let _ = core.tick(at(0), Health::default());
    let announced = |actions: &[Action]| {
        actions
            .iter()
            .filter(|a| matches!(a, Action::Publish(hb) if hb.id == "a"))
            .count()
    };
    let seq = |core: &MeshCore| core.heartbeat(Health::default()).seq;
    let first = seq(&core);
    // A member publishes a suspicion of this node's latest heartbeat
    // every 10 ms for 2 s, and asks the time claiming to suspect it.
    let mut announcements = 0;
    for t in (10..2_000).step_by(10) {
        let now = at(t);
        let current = seq(&core);
        assert_eq!(core.on_suspicion("b", "a", 1, current, now), None);
        let _ = core.answer_clock(Some((1, current)), true, now);
        announcements += announced(&core.tick(now, Health::default()));
    }
    // Refuted at once, then once a second: 2 new heartbeats, not 200.
    let refuted = seq(&core) - first;
    assert!((2..=3).contains(&refuted), "{refuted} refutations");
    assert!(announcements <= 4, "{announcements} announcements");
    // The last one, due when a second has passed, goes out then; after
    // that, a suspicion of an older heartbeat refutes nothing.
    let _ = core.tick(at(2_100), Health::default());
    let last = seq(&core);
    assert_eq!(last - first, 3);
    let _ = core.on_suspicion("b", "a", 1, first, at(3_000));
    let _ = core.tick(at(3_100), Health::default());
    assert_eq!(seq(&core), last);
}

/// A suspicion of this node's own watch goes to the mesh three times, at
/// 0, 1 and 3 s, while the member stays suspected: a node that lost the
/// one telling held a frozen member live until the lists were compared,
/// 30 s on. A member that refuted it in between is not told of again.
#[test]
fn a_suspicion_of_its_own_watch_is_told_again_every_second_until_removed_unless_refuted() {
    let mut core = lone("a", vec![]);
    let at = Duration::from_millis;
    for id in ["b", "c"] {
        add_member(&mut core, id, at(0));
    }
    let pulse = |core: &mut MeshCore, id: &str, t| {
        let pulse = pulse_of(core, id);
        core.on_pulse(id, pulse, t).expect("a pulse");
    };
    // b and c fall silent at 0; ticked every 100 ms, the node suspects
    // both (3.5 s of silence, and half a second for second opinions that
    // do not come: each is the other's other watcher), and tells each
    // suspicion again every second until it removes the member (9 s after
    // its last answer, 5 s after the suspicion, so the last of four
    // re-tellings 4 s after the first). c refutes it (a
    // newer heartbeat) half a second after it was suspected, and answers
    // from then on: it is not told of again.
    let mut told: Vec<(u64, String)> = Vec::new();
    let mut refuted = None;
    for t in (0..=12_000).step_by(100) {
        if let Some((first, _)) = told.first()
            && t == first + 500
        {
            let mut hb = core.member("c").expect("c").heartbeat.clone();
            hb.seq += 1;
            core.on_heartbeat("c", hb, at(t)).expect("c refutes");
            refuted = Some(t);
        }
        if refuted.is_some() {
            pulse(&mut core, "c", at(t));
        }
        for action in core.tick(at(t), Health::default()) {
            if let Action::Suspect { id, .. } = action {
                told.push((t, id));
            }
        }
    }
    assert!(core.member("c").is_some_and(|m| !m.suspect));
    let first = told.first().map_or(0, |(t, _)| *t);
    let of = |who: &str| -> Vec<u64> {
        told.iter()
            .filter(|(_, id)| id == who)
            .map(|(t, _)| t - first)
            .collect()
    };
    assert_eq!(of("b"), vec![0, 1_000, 2_000, 3_000, 4_000], "{told:?}");
    assert!(core.member("b").is_none(), "b is removed");
    assert_eq!(of("c"), vec![0], "{told:?}");
}

/// A watcher that a member does not know yet (it missed the watcher's
/// announcement, and its next ask for a list is seconds away) is refused
/// its clock questions: it introduces itself in the next one, and is
/// answered from then on. Were the refusal not heeded, the watcher would
/// find the member silent and suspect it after 3.5 s, and the refutation
/// would go to the whole mesh (eight such at 1,000 simulated nodes).
#[test]
fn a_watcher_a_member_does_not_know_introduces_itself_and_suspects_no_one() {
    for heeded in [true, false] {
        let mut a = lone("a", vec![]);
        let mut b = lone("b", vec![]);
        let at = Duration::from_millis;
        let hb = b.heartbeat(Health::default());
        a.on_heartbeat("b", hb, at(0)).expect("a member");
        a.on_connected("b", at(0));
        b.on_connected("a", at(0));
        let (mut introduced, mut suspected) = (0, false);
        for t in (0..8_000).step_by(50) {
            let now = at(t);
            // What b does of its own goes nowhere: only a's questions
            // reach it.
            let _ = b.tick(now, Health::default());
            for action in a.tick(now, Health::default()) {
                match action {
                    Action::AskClock {
                        peer,
                        known,
                        suspect,
                        introduce,
                    } if peer == "b" => {
                        if let Some(hb) = introduce {
                            introduced += 1;
                            b.on_heartbeat("a", *hb, now).expect("valid heartbeat");
                        }
                        if b.may_answer_clock("a") {
                            let pulse = b.answer_clock(known, suspect, now);
                            a.on_pulse("b", pulse, now).expect("a pulse");
                        } else {
                            b.on_stranger("a");
                            if heeded {
                                a.on_clock_refused("b");
                            }
                        }
                    }
                    Action::Suspect { id, .. } if id == "b" => suspected = true,
                    _ => {}
                }
            }
        }
        if heeded {
            assert_eq!(introduced, 1);
            assert!(!suspected);
            assert!(b.member("a").is_some());
        } else {
            assert_eq!(introduced, 0);
            assert!(suspected, "unheeded, the refusals end in a suspicion");
        }
    }
}

/// A member that a peer's full list lacked is doubted and asked whether it
/// lives; once it answers, it is doubted no more and asked no more (its
/// ring's watchers go on watching it). Held for 9 s, the doubts of a
/// member suspected while the mesh formed had every node that compared
/// lists meanwhile ask it every second.
#[test]
fn a_doubted_member_that_answers_is_asked_no_more() {
    let mut core = lone("a", vec![]);
    let at = Duration::from_millis;
    let ids: Vec<String> = (0..12).map(|i| format!("m{i:02}")).collect();
    for id in &ids {
        add_member(&mut core, id, at(0));
    }
    let _ = core.tick(at(0), Health::default());
    let x = ids
        .iter()
        .find(|id| !core.watched().contains(*id))
        .expect("a member this node does not watch")
        .clone();
    let from = ids.iter().find(|id| **id != x).expect("another").clone();
    let list: Vec<Heartbeat> = ids
        .iter()
        .filter(|id| **id != x)
        .filter_map(|id| core.member(id).map(|m| m.heartbeat.clone()))
        .collect();
    for result in core.on_members(&from, list, true, at(100)) {
        result.expect("valid members");
    }
    let asks = |actions: &[Action]| {
        actions
            .iter()
            .filter(|a| matches!(a, Action::AskClock { peer, .. } if *peer == x))
            .count()
    };
    assert_eq!(asks(&core.tick(at(100), Health::default())), 1);
    assert!(core.watched().contains(&x));
    let pulse = pulse_of(&core, &x);
    core.on_pulse(&x, pulse, at(150)).expect("a pulse");
    let mut later = 0;
    for t in (200..10_000).step_by(100) {
        later += asks(&core.tick(at(t), Health::default()));
    }
    assert_eq!(later, 0);
    assert!(!core.watched().contains(&x));
    assert!(core.member(&x).is_some_and(|m| !m.suspect));
}

/// A joining node compares lists every 5 s until one is the same as its
/// own, then every 30 s: one of 100 simulated nodes (seed 2) dropped every
/// announcement of another and lacked it for 30 s.
#[test]
fn a_joining_node_compares_lists_every_five_seconds_until_they_agree() {
    let mut core = lone("a", vec![]);
    let at = Duration::from_millis;
    add_member(&mut core, "b", at(0));
    let mut asks = Vec::new();
    let mut agreed = false;
    for t in (0..50_000).step_by(100) {
        // b answers every question: it stays a member.
        let pulse = pulse_of(&core, "b");
        core.on_pulse("b", pulse, at(t)).expect("a pulse");
        let n = core
            .tick(at(t), Health::default())
            .iter()
            .filter(|a| matches!(a, Action::AskMembers { .. }))
            .count();
        if n > 0 {
            asks.push(t);
        }
        // The third list agrees.
        if asks.len() == 3 && !agreed {
            core.on_members_same();
            agreed = true;
        }
    }
    assert_eq!(asks, [0, 5_000, 10_000, 40_000], "asks at {asks:?} ms");
}

/// A mesh of more than [`MAX_MEMBERS_ANSWER`] nodes lists its members in
/// pages: a list that was cut is asked for again from where it was cut, at
/// the next tick. Before, the members sorted past the cut were in no list,
/// and a node that missed their announcements never heard of them (3,000
/// simulated nodes never converged).
#[test]
fn a_list_longer_than_one_answer_comes_in_pages_until_every_member_is_named() {
    let at = Duration::from_millis;
    let mut big = lone("m", vec![]);
    let template = big.heartbeat(Health::default());
    let n = 2 * MAX_MEMBERS_ANSWER + 100;
    for i in 0..n {
        let mut hb = template.clone();
        hb.id = format!("n{i:05}");
        big.on_heartbeat(&hb.id.clone(), hb, at(0))
            .expect("a member");
    }
    let mut a = lone("a", vec![]);
    add_member(&mut a, "m", at(0));
    add_member(&mut big, "a", at(0));
    let mut pages = Vec::new();
    for t in (0..1_000).step_by(100) {
        for action in a.tick(at(t), Health::default()) {
            let Action::AskMembers {
                peer,
                digest,
                after,
                ..
            } = action
            else {
                continue;
            };
            assert_eq!(peer, "m");
            let (members, complete) = big
                .answer_members("a", digest, after.as_deref())
                .expect("an answer")
                .expect("lists that differ");
            assert!(members.len() <= MAX_MEMBERS_ANSWER);
            pages.push((t, after, members.len(), complete));
            for result in a.on_members("m", members, complete, at(t)) {
                result.expect("valid members");
            }
        }
    }
    let named: BTreeSet<String> = a.membership.leads().map(|hb| hb.id.clone()).collect();
    assert_eq!(named.len(), n, "{pages:?}");
    // Three pages, each from the last id of the one before, one tick apart.
    assert_eq!(pages.len(), 3, "{pages:?}");
    assert_eq!(pages[0].1, None);
    assert_eq!(pages[1].1.as_deref(), Some("n02046"));
    assert_eq!(pages[2].1.as_deref(), Some("n04093"));
    assert!(!pages[0].3 && !pages[1].3 && pages[2].3, "{pages:?}");
    assert_eq!(pages[1].0, pages[0].0 + 100);
    assert_eq!(pages[2].0, pages[1].0 + 100);
}

#[test]
fn the_view_is_the_ring_neighbours_and_chords_halving_the_way_across() {
    let set = |v: &[usize]| v.iter().copied().collect::<BTreeSet<usize>>();
    assert_eq!(view_offsets(0, 4), set(&[]));
    assert_eq!(view_offsets(3, 4), set(&[1, 2, 3]));
    assert_eq!(view_offsets(9, 4), set(&[1, 2, 3, 4]));
    assert_eq!(view_offsets(39, 4), set(&[1, 2, 3, 4, 9, 19]));
    assert_eq!(view_offsets(999, 4), set(&[1, 2, 3, 4, 62, 124, 249, 499]));
}

/// A run's leader or worker is asked the time ten times a second until it
/// has told its estimate of this node's clock, but for 2 s at most once its
/// first samples are in: a node that never samples this one (it armed a
/// run it no longer leads) is asked at the usual pace after that. Taken
/// into the clock peers anew, it is asked fast again.
#[test]
fn a_clock_peer_that_never_tells_is_asked_fast_for_two_seconds_then_at_the_usual_pace() {
    let mut sim = Sim::new(2, 0.0, 0x70_1d);
    sim.run_until(Duration::from_secs(12));
    let n0 = "n0000".to_owned();
    // Node 1 samples node 0 for a run; node 0 does not sample node 1, so
    // its answers never tell.
    sim.nodes[1].set_clock_peers([n0.clone()].into());
    let sent_in = |sim: &mut Sim, secs: u64| {
        let before = sim.sent[1];
        let until = sim.now + Duration::from_secs(secs);
        sim.run_until(until);
        sim.sent[1] - before
    };
    let fast = sent_in(&mut sim, 2);
    assert!(fast >= 15, "{fast} messages in the first 2 s");
    let _ = sent_in(&mut sim, 2);
    let after = sent_in(&mut sim, 4);
    assert!(after <= 12, "{after} messages in 4 s once it gave up");
    assert!(!sim.nodes[1].holds_my_clock(&n0));
    // A new run with the same peer: fast again.
    sim.nodes[1].set_clock_peers(Default::default());
    sim.nodes[1].set_clock_peers([n0].into());
    let again = sent_in(&mut sim, 1);
    assert!(
        again >= 8,
        "{again} messages in the first second of a new run"
    );
}

/// A watcher whose route to a member is broken (every message between the
/// two lost, both still connected to the rest) asks the member's other
/// watchers before it suspects it: they hear it, so no one suspects it,
/// where one watcher's word used to make the whole mesh suspect it until
/// it refuted. A member that is frozen is still suspected by its watchers,
/// about a round trip after its silence ran out, and each of them tells
/// the mesh.
#[test]
fn a_watcher_cut_from_a_member_asks_its_other_watchers_first_and_a_frozen_member_is_still_found() {
    let n = 24;
    let mut sim = Sim::new(n, 0.01, 0x0b5e_4fed);
    sim.run_until(Duration::from_secs(20));
    assert!(
        (0..n).all(|a| sim.nodes[a].peers(sim.now).len() == n - 1),
        "not converged"
    );
    let target = 5;
    let target_id = format!("n{target:04}");
    let watchers: Vec<usize> = (0..n)
        .filter(|&a| sim.nodes[a].watched().contains(&target_id))
        .collect();
    assert_eq!(watchers.len(), 4, "{watchers:?}");
    let cut_off = watchers[0];
    sim.suspicions.clear();
    sim.cut.insert((cut_off.min(target), cut_off.max(target)));
    let cut_at = sim.now;
    sim.run_until(cut_at + Duration::from_secs(15));
    let of_target: Vec<_> = sim
        .suspicions
        .iter()
        .filter(|(_, id, _)| *id == target_id)
        .collect();
    assert!(of_target.is_empty(), "{of_target:?}");
    assert!(
        (0..n).all(|a| a == target || sim.nodes[a].member(&target_id).is_some_and(|m| !m.suspect)),
        "someone holds the target suspected"
    );

    // Frozen: every message to or from it is lost. Its watchers suspect it
    // once 3.5 s of silence and a round of opinions have passed, and every
    // node holds it suspected within 5 s.
    sim.cut.clear();
    sim.run_until(sim.now + Duration::from_secs(5));
    for other in 0..n {
        if other != target {
            sim.cut.insert((other.min(target), other.max(target)));
        }
    }
    sim.suspicions.clear();
    let frozen_at = sim.now;
    let everyone = |sim: &Sim| {
        (0..n).all(|a| a == target || sim.nodes[a].member(&target_id).is_none_or(|m| m.suspect))
    };
    while !everyone(&sim) && sim.now < frozen_at + Duration::from_secs(10) {
        sim.run_until(sim.now + Duration::from_millis(100));
    }
    let found = sim.now - frozen_at;
    assert!(everyone(&sim), "not found in 10 s");
    assert!(found <= Duration::from_secs(5), "found after {found:?}");
    let first = sim
        .suspicions
        .iter()
        .find(|(_, id, _)| *id == target_id)
        .map(|(by, _, at)| (*by, *at - frozen_at));
    let (by, after) = first.expect("suspected");
    assert!(watchers.contains(&by), "suspected by {by}, not a watcher");
    // Its silence counts from its last answer, up to a second before.
    assert!(after >= Duration::from_millis(2_500), "{after:?}");
    // The other watchers, silent too, agree and tell the mesh themselves:
    // a node that lost one word hears another.
    let tellers: BTreeSet<usize> = sim
        .suspicions
        .iter()
        .filter(|(_, id, _)| *id == target_id)
        .map(|(by, _, _)| *by)
        .collect();
    assert!(
        tellers.len() >= 3 && tellers.iter().all(|t| watchers.contains(t)),
        "{tellers:?} of {watchers:?}"
    );
}
