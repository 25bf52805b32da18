//! A node's event loop.
//!
//! One task owns the swarm and the [`MeshCore`]. It waits for whichever comes
//! first: a swarm event, a tick (every 50 ms), an API query, a delayed inbound
//! message, or shutdown. So the core is only ever touched from one place, and
//! needs no locks.
//!
//! **Latency emulation.** With a [`LatencyMap`] (the testnet's
//! `--emulate-latency`), every message received from a node of another region
//! (a heartbeat, a clock question, a clock answer) is held for the one-way
//! delay of that pair of regions before the node looks at it, and its receive
//! timestamp is taken after the wait. So a clock exchange between `fra` and
//! `nrt` sees `fra>nrt` on the way out and `nrt>fra` on the way back, as it
//! would between real hosts. Clock questions are answered for members only,
//! so the asker's region is always known when a question is timed.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::multiaddr::Protocol;
use libp2p::pnet::PreSharedKey;
use libp2p::request_response::{self, InboundFailure, OutboundRequestId, ResponseChannel};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, gossipsub, mdns};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::api::{self, PeerView, PeersView, Query, StatusView};
use crate::core::clock::{Exchange, STEP_MARGIN_NS};
use crate::core::latency::LatencyMap;
use crate::core::membership::{Event, Heartbeat};
use crate::core::mesh::bootstrap::MAX_RESOLVED;
use crate::core::mesh::{Action, Health, HeartbeatRefused, LocalNode, Seed, SeedName};
use crate::core::node::{CoreConfig, NodeCore, Output};
use crate::core::runs::MONOTONIC_ORIGIN;
use crate::core::wire::{self, MEMBERS_TOPIC, Request, Response};
use crate::net::behaviour::{Behaviour, BehaviourEvent, build_swarm};
use crate::net::health::HealthProbe;
use crate::net::sign::{self, Signer};
use crate::net::traffic::Traffic;
use crate::store::DataDir;

/// How a node is started (`fusi-node up`).
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// Addresses to listen on.
    pub listen: Vec<Multiaddr>,
    /// Nodes to join through: addresses, and host names to resolve.
    pub bootstrap: Vec<Seed>,
    /// Discover nodes on the LAN.
    pub mdns: bool,
    /// Name shown to others.
    pub name: String,
    /// Region.
    pub region: String,
    /// Where the node keeps its identity (and later, its runs).
    pub data_dir: PathBuf,
    /// Local API address (loopback).
    pub api: SocketAddr,
    /// The mesh key; `None` is an open mesh.
    pub mesh_key: Option<PreSharedKey>,
    /// Emulated latency between regions: its text, and the map.
    pub emulate_latency: Option<(String, LatencyMap)>,
    /// Emulated partition: while this file exists, the regions it lists
    /// are cut off from the others.
    pub emulate_partition_file: Option<std::path::PathBuf>,
    /// Source address of load traffic.
    pub source_ip: Option<IpAddr>,
    /// The most VUs this node will run.
    pub vu_limit: u32,
    /// `--allow-target`: the hosts runs may target; `None` allows any.
    pub allow_target: Option<crate::core::allow::AllowList>,
    /// `--metrics-listen`: where to serve `/metrics` for Prometheus.
    pub metrics_listen: Option<SocketAddr>,
    /// `--otlp-endpoint`: where to push metrics over OTLP, and how often.
    pub otlp: Option<crate::telemetry::otlp::OtlpConfig>,
}

/// A message from a peer, possibly held back by latency emulation.
enum Inbound {
    Heartbeat {
        source: PeerId,
        via: PeerId,
        hb: Heartbeat,
    },
    Suspicion {
        source: PeerId,
        suspicion: wire::Suspicion,
    },
    Request {
        peer: PeerId,
        request: Request,
        channel: ResponseChannel<Response>,
    },
    Response {
        peer: PeerId,
        request_id: OutboundRequestId,
        response: Response,
    },
    Run {
        source: PeerId,
        /// The peer that passed it on (gossip's propagation source).
        via: PeerId,
        env: wire::RunEnvelope,
    },
    /// An answer prepared off the event loop, to send.
    Answer {
        channel: ResponseChannel<Response>,
        response: Response,
    },
}

impl Inbound {
    /// The region a stranger's message says its sender is in: the heartbeat
    /// a clock question introduces it with, the one a clock answer or a
    /// members question carries, or its own among a members answer's.
    ///
    /// Latency emulation delays a message from a peer this node does not
    /// know yet by it, so the clock samples two nodes take while they join
    /// see the emulated latency too: undelayed, one such sample, kept for
    /// the filter's 60 s window, made a bound of 1.2 ms across 120 ms. It
    /// only ever sets a delay, so a false claim costs nothing but time.
    fn claimed_region(&self) -> Option<&str> {
        let hb = match self {
            Inbound::Request {
                request: Request::Clock { introduce, .. },
                ..
            } => introduce.as_deref(),
            Inbound::Request {
                request: Request::Members { heartbeat, .. },
                ..
            } => Some(heartbeat),
            Inbound::Response {
                response: Response::Clock { pulse, .. },
                ..
            } => pulse.as_ref().and_then(|p| p.heartbeat.as_ref()),
            Inbound::Response {
                peer,
                response: Response::Members { members, .. },
                ..
            } => {
                let peer = peer.to_string();
                members.iter().find(|hb| hb.id == peer)
            }
            _ => None,
        };
        hb.map(|hb| hb.region.as_str())
    }
}

/// `--emulate-partition-file`: the regions cut off from the rest, read from
/// the file a few times a second (a test creates and removes it).
struct EmulatedPartition {
    file: Option<std::path::PathBuf>,
    cut_off: Vec<String>,
    next_read: Duration,
}

impl EmulatedPartition {
    fn new(file: Option<std::path::PathBuf>) -> EmulatedPartition {
        EmulatedPartition {
            file,
            cut_off: Vec::new(),
            next_read: Duration::ZERO,
        }
    }

    fn refresh(&mut self, now: Duration) {
        let Some(file) = &self.file else {
            return;
        };
        if now < self.next_read {
            return;
        }
        self.next_read = now + Duration::from_millis(100);
        let cut_off: Vec<String> = std::fs::read(file)
            .map(|b| {
                String::from_utf8_lossy(&b[..b.len().min(4096)])
                    .split(|c: char| c == ',' || c.is_whitespace())
                    .filter(|r| !r.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        if cut_off != self.cut_off {
            if cut_off.is_empty() {
                info!("emulated partition healed");
            } else {
                info!("emulated partition: {} cut off", cut_off.join(", "));
            }
            self.cut_off = cut_off;
        }
    }

    /// Whether a message from `from` to `to` crosses the cut.
    fn cuts(&self, from: &str, to: &str) -> bool {
        !self.cut_off.is_empty()
            && self.cut_off.iter().any(|r| r == from) != self.cut_off.iter().any(|r| r == to)
    }
}

/// Remembers which problems were logged, so each is logged once.
struct LogOnce(HashSet<String>);

impl LogOnce {
    fn first(&mut self, key: String) -> bool {
        if self.0.len() > 10_000 {
            self.0.clear();
        }
        self.0.insert(key)
    }
}

use crate::worker::wall_ns;

mod decoded;
mod runs;
mod sync;
mod telemetry;

/// The most messages latency emulation holds at once.
const MAX_DELAYED: usize = 10_000;

/// How long a bootstrap name may take to resolve before the question counts
/// as failed (the system resolver's own timeouts are usually 5 s, tried
/// twice).
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(15);

/// The answer to a [`Action::Resolve`]: which seed, and its addresses or
/// why there are none.
struct Resolved {
    index: usize,
    name: SeedName,
    answer: Result<Vec<IpAddr>, String>,
}

const KEY_HINT: &str = "if that node runs, check that both use the same mesh key (compare the fingerprints in `fusi-node status`)";

struct Node {
    swarm: Swarm<Behaviour>,
    core: NodeCore,
    started: Instant,
    /// The wall clock minus the monotonic clock at the last tick, ns: when
    /// it moves by more than a step's margin, the wall clock stepped.
    wall_skew: Option<i64>,
    topic: gossipsub::IdentTopic,
    peer_id: PeerId,
    latency: Option<LatencyMap>,
    /// Clock questions in flight: the peer, `t1`, and when it was sent on
    /// the monotonic clock.
    pending: HashMap<OutboundRequestId, (PeerId, i64, Duration)>,
    /// Asks for a member's list in flight.
    members_asks: HashSet<OutboundRequestId>,
    /// Asks for a second opinion in flight: the member asked about.
    heard_asks: HashMap<OutboundRequestId, String>,
    /// The gossipsub topic of suspicions.
    suspects: gossipsub::IdentTopic,
    /// Bootstrap dials in flight: the seed's index and the address.
    bootstrap_dials: HashMap<ConnectionId, (usize, String)>,
    /// When each connected peer last sent or got a request, or connected.
    last_used: HashMap<PeerId, Duration>,
    /// When idle connections were last looked at.
    closed_idle_at: Option<Duration>,
    /// Where resolved bootstrap names come back to the event loop.
    resolved: mpsc::Sender<Resolved>,
    labels: HashMap<String, String>,
    once: LogOnce,
    delayed: mpsc::UnboundedSender<Inbound>,
    delayed_in_flight: Arc<AtomicUsize>,
    health: Health,
    traffic: Arc<Traffic>,
    config: NodeConfig,
    data_dir: String,
    runs: runs::Runs,
    sync: sync::Syncs,
    partition: EmulatedPartition,
    /// Signs this node's shards and the run messages it leads with.
    signer: Signer,
    /// What the last metrics snapshot folded of each run.
    folded: telemetry::Folded,
}

/// Runs a node until `shutdown` is cancelled.
pub async fn run(config: NodeConfig, shutdown: CancellationToken) -> anyhow::Result<()> {
    let store = DataDir::open(&config.data_dir)?;
    let key = store.identity()?;
    let api_token = store.api_token()?;
    let peer_id = key.public().to_peer_id();
    let traffic = Arc::new(Traffic::default());
    let signer = Signer::new(key.clone());
    let mut swarm = build_swarm(key, config.mesh_key, config.mdns, traffic.clone())?;
    let topic = gossipsub::IdentTopic::new(MEMBERS_TOPIC);
    for name in [MEMBERS_TOPIC, wire::SUSPECTS_TOPIC, wire::RUNS_TOPIC] {
        swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(&gossipsub::IdentTopic::new(name))
            .map_err(|e| anyhow::anyhow!("cannot subscribe to {name}: {e}"))?;
    }
    let (worker_tx, mut worker_rx) = mpsc::unbounded_channel();
    let runs = runs::Runs::open(
        store.path(),
        config.allow_target.clone(),
        config.source_ip,
        worker_tx,
    )?;
    for addr in &config.listen {
        swarm.listen_on(addr.clone()).map_err(|e| {
            anyhow::anyhow!("cannot listen on {addr}: {e}; pick another address with --listen")
        })?;
    }
    let listener = api::server::bind(config.api).await?;
    let api_addr = listener.local_addr()?;
    let (query_tx, mut query_rx) = mpsc::channel(64);
    tokio::spawn(api::server::serve(
        listener,
        query_tx,
        api_token,
        shutdown.clone(),
    ));

    let (snapshots, mut snapshot_rx) = crate::telemetry::SnapshotSource::new();
    if let Some(addr) = config.metrics_listen {
        let listener = crate::telemetry::prometheus::bind(addr).await?;
        let metrics_addr = listener.local_addr()?;
        tokio::spawn(crate::telemetry::prometheus::serve(
            listener,
            snapshots.clone(),
            shutdown.clone(),
        ));
        println!("metrics listening on http://{metrics_addr}/metrics");
    }
    if let Some(otlp) = config.otlp.clone() {
        println!(
            "pushing metrics to {} every {:?}",
            otlp.endpoint.url(),
            otlp.interval
        );
        tokio::spawn(crate::telemetry::otlp::push(
            otlp,
            snapshots.clone(),
            shutdown.clone(),
        ));
    }

    println!("peer id: {peer_id}");
    println!("api listening on http://{api_addr}");
    println!(
        "api token in {} (the CLI on this host reads it; elsewhere set FUSI_API_TOKEN)",
        store.path().join(api::token::TOKEN_FILE).display()
    );
    info!(%peer_id, name = %config.name, region = %config.region, "node started");

    let me = LocalNode {
        id: peer_id.to_string(),
        name: config.name.clone(),
        region: config.region.clone(),
        boot: store.next_boot(u64::try_from(wall_ns()).unwrap_or(0))?,
        cores: std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1),
        vu_limit: config.vu_limit,
        version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    let bootstrap = config.bootstrap.clone();
    let (delayed_tx, mut delayed_rx) = mpsc::unbounded_channel();
    // At most one question per name is out at a time.
    let (resolved_tx, mut resolved_rx) = mpsc::channel(config.bootstrap.len().max(1));
    let partition = EmulatedPartition::new(config.emulate_partition_file.clone());
    let mut node = Node {
        swarm,
        core: NodeCore::new(me, CoreConfig::default(), bootstrap, MONOTONIC_ORIGIN),
        started: Instant::now(),
        wall_skew: None,
        topic,
        peer_id,
        latency: config.emulate_latency.as_ref().map(|(_, map)| map.clone()),
        pending: HashMap::new(),
        members_asks: HashSet::new(),
        heard_asks: HashMap::new(),
        suspects: gossipsub::IdentTopic::new(wire::SUSPECTS_TOPIC),
        bootstrap_dials: HashMap::new(),
        last_used: HashMap::new(),
        closed_idle_at: None,
        resolved: resolved_tx,
        labels: HashMap::new(),
        once: LogOnce(HashSet::new()),
        delayed: delayed_tx,
        delayed_in_flight: Arc::new(AtomicUsize::new(0)),
        health: Health::default(),
        traffic,
        data_dir: store.path().display().to_string(),
        config,
        runs,
        sync: sync::Syncs::default(),
        partition,
        signer,
        folded: telemetry::Folded::default(),
    };
    node.restore_runs();
    let mut probe = HealthProbe::new();
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut health_every = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => node.tick(),
            _ = health_every.tick() => node.health = probe.sample(),
            Some(query) = query_rx.recv() => node.answer(query),
            Some(reply) = snapshot_rx.recv() => {
                let _ = reply.send(node.snapshot());
            }
            Some(inbound) = delayed_rx.recv() => node.handle(inbound),
            Some(resolved) = resolved_rx.recv() => node.on_resolved(resolved),
            Some(event) = worker_rx.recv() => node.on_worker(event),
            event = node.swarm.select_next_some() => node.on_swarm(event),
        }
    }
    drop(snapshots);
    info!("node stopping");
    node.say_goodbye().await;
    drop(store);
    Ok(())
}

impl Node {
    /// Publishes a last heartbeat that says this node stops, and keeps the
    /// swarm going briefly so that it leaves (best effort: gossip has no
    /// acknowledgements, and members that miss it drop this node after its
    /// silence anyway).
    async fn say_goodbye(&mut self) {
        if self.core.mesh().connected_count() == 0 {
            return;
        }
        let action = self.core.mesh_mut().leave(self.health);
        self.act(action);
        let _ = tokio::time::timeout(Duration::from_millis(300), async {
            loop {
                let _ = self.swarm.select_next_some().await;
            }
        })
        .await;
    }

    fn now(&self) -> Duration {
        self.monotonic(Instant::now())
    }

    /// `instant` on the clock of [`At::now`](crate::core::runs::At::now),
    /// which starts at [`MONOTONIC_ORIGIN`] when this node does.
    fn monotonic(&self, instant: Instant) -> Duration {
        MONOTONIC_ORIGIN + instant.saturating_duration_since(self.started)
    }

    fn warn_once(&mut self, key: String, message: impl FnOnce() -> String) {
        if self.once.first(key) {
            warn!("{}", message());
        }
    }

    fn label(&self, id: &str) -> String {
        self.labels
            .get(id)
            .cloned()
            .unwrap_or_else(|| id.to_owned())
    }

    fn tick(&mut self) {
        let at = self.at();
        self.watch_own_clock(at.now);
        self.partition.refresh(at.now);
        let busy = self.runs_a_share();
        self.core.mesh_mut().set_busy(busy, at.now);
        self.retry_fetches(at);
        self.refuse_kept_asks(at);
        self.core.handle_timeout(at, self.health, &self.runs);
        self.flush_core();
        self.after_runs_tick(at);
        self.close_idle(at.now);
    }

    /// Closes the connections the core no longer wants, once a second
    /// ([`MeshCore::closes`](crate::core::mesh::MeshCore::closes)).
    fn close_idle(&mut self, now: Duration) {
        if self
            .closed_idle_at
            .is_some_and(|at| now < at + Duration::from_secs(1))
        {
            return;
        }
        self.closed_idle_at = Some(now);
        let in_mesh: HashSet<PeerId> = self
            .swarm
            .behaviour()
            .gossipsub
            .all_mesh_peers()
            .copied()
            .collect();
        let idle: Vec<PeerId> = self
            .swarm
            .connected_peers()
            .filter(|peer| {
                let used = self.last_used.get(peer).copied().unwrap_or_default();
                self.core.mesh().closes(
                    &peer.to_string(),
                    now.saturating_sub(used),
                    in_mesh.contains(peer),
                )
            })
            .copied()
            .collect();
        for peer in idle {
            debug!(%peer, "closing an idle connection outside this node's view");
            let _ = self.swarm.disconnect_peer_id(peer);
        }
    }

    /// Carries out what the core decided.
    fn flush_core(&mut self) {
        while let Some(output) = self.core.poll_output() {
            match output {
                Output::Mesh(action) => self.act(action),
                Output::Run(action) => self.run_action(action),
                Output::AskShards { run, peer } => self.ask_shards(run, &peer),
                Output::AskRuns { peer, known } => self.ask_runs(&peer, known),
            }
        }
    }

    /// Tells the core when this node's wall clock stepped (NTP, a resumed
    /// VM, `date -s`): the wall clock moved against the monotonic one by
    /// more than [`STEP_MARGIN_NS`] since the last tick.
    fn watch_own_clock(&mut self, now: Duration) {
        let mono = i64::try_from(now.as_nanos()).unwrap_or(i64::MAX);
        let skew = wall_ns().saturating_sub(mono);
        if let Some(last) = self.wall_skew.replace(skew)
            && skew.saturating_sub(last).saturating_abs() > STEP_MARGIN_NS
        {
            warn!(
                "this node's wall clock stepped by {:+.3} s: its clock estimates start again",
                skew.saturating_sub(last) as f64 / 1e9
            );
            self.core.mesh_mut().on_own_clock_step(now);
        }
    }

    fn act(&mut self, action: Action) {
        match action {
            Action::Publish(hb) => {
                let bytes = wire::encode(&hb);
                match self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .publish(self.topic.clone(), bytes)
                {
                    Ok(_) | Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => {}
                    Err(e) => self.warn_once(format!("publish:{e}"), || {
                        format!("cannot publish a heartbeat: {e}")
                    }),
                }
            }
            Action::Suspect { id, boot, seq } => {
                let bytes = wire::encode(&wire::Suspicion { id, boot, seq });
                match self
                    .swarm
                    .behaviour_mut()
                    .gossipsub
                    .publish(self.suspects.clone(), bytes)
                {
                    Ok(_) | Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => {}
                    Err(e) => self.warn_once(format!("publish:{e}"), || {
                        format!("cannot publish a suspicion: {e}")
                    }),
                }
            }
            Action::AskClock {
                peer,
                known,
                suspect,
                introduce,
            } => {
                let Ok(peer_id) = peer.parse::<PeerId>() else {
                    return;
                };
                let t1 = wall_ns();
                let request = Request::Clock {
                    t1,
                    known,
                    suspect,
                    introduce,
                };
                let id = self.ask(peer_id, request);
                let sent_at = self.now();
                self.pending.insert(id, (peer_id, t1, sent_at));
            }
            Action::AskMembers {
                peer,
                digest,
                heartbeat,
                after,
            } => {
                let Ok(peer_id) = peer.parse::<PeerId>() else {
                    return;
                };
                let id = self.ask(
                    peer_id,
                    Request::Members {
                        digest,
                        heartbeat,
                        after,
                    },
                );
                self.members_asks.insert(id);
            }
            Action::AskHeard { peer, member } => {
                let Ok(peer_id) = peer.parse::<PeerId>() else {
                    return;
                };
                let id = self.ask(
                    peer_id,
                    Request::Heard {
                        member: member.clone(),
                    },
                );
                self.heard_asks.insert(id, member);
            }
            Action::DialPeer { peer, addrs } => {
                let Ok(peer_id) = peer.parse::<PeerId>() else {
                    return;
                };
                self.dial(peer_id, &addrs);
            }
            Action::DialBootstrap { index, addr } => {
                let Ok(ma) = addr.parse::<Multiaddr>() else {
                    return;
                };
                let opts = match ma.iter().last() {
                    Some(Protocol::P2p(id)) => DialOpts::peer_id(id)
                        .addresses(vec![ma])
                        .condition(PeerCondition::Always)
                        .allocate_new_port()
                        .build(),
                    _ => DialOpts::unknown_peer_id()
                        .address(ma)
                        .allocate_new_port()
                        .build(),
                };
                let cid = opts.connection_id();
                self.bootstrap_dials.insert(cid, (index, addr.clone()));
                if let Err(e) = self.swarm.dial(opts) {
                    self.bootstrap_dials.remove(&cid);
                    self.bootstrap_failed(index, &addr, &e.to_string());
                }
            }
            Action::Resolve { index, name } => self.resolve(index, name),
            Action::Membership(event) => self.log_membership(event),
        }
    }

    /// Seconds until the seed at `index` is dialed or resolved again.
    fn retry_in(&self, index: usize) -> f64 {
        self.core
            .mesh()
            .bootstrap_retry_at(index)
            .map(|at| at.saturating_sub(self.now()).as_secs_f64())
            .unwrap_or(0.0)
    }

    fn bootstrap_failed(&mut self, index: usize, addr: &str, error: &str) {
        let retry = self.retry_in(index);
        match self.config.bootstrap.get(index) {
            Some(Seed::Name(name)) => {
                // An address of a name: a record of a node not up yet, or
                // gone. Worth a warning only while this node is alone.
                let line = format!(
                    "cannot reach the bootstrap node {addr} (an address of {name}): {error}; \
                     resolving the name again in {retry:.0} s ({KEY_HINT})"
                );
                if self.core.mesh().connected_count() == 0 {
                    warn!("{line}");
                } else {
                    debug!("{line}");
                }
            }
            _ => warn!(
                "cannot reach the bootstrap node {addr}: {error}; retrying in {retry:.0} s ({KEY_HINT})"
            ),
        }
    }

    /// Resolves a bootstrap name with the system resolver on a task of its
    /// own (the lookup blocks a thread of tokio's blocking pool, never the
    /// event loop), and hands the answer back through `resolved`.
    fn resolve(&mut self, index: usize, name: SeedName) {
        let tx = self.resolved.clone();
        tokio::spawn(async move {
            let lookup = tokio::net::lookup_host((name.host.as_str(), name.port));
            let answer = match tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await {
                Ok(Ok(addrs)) => Ok(addrs.map(|a| a.ip()).take(4 * MAX_RESOLVED).collect()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no answer within {} s", RESOLVE_TIMEOUT.as_secs())),
            };
            let _ = tx
                .send(Resolved {
                    index,
                    name,
                    answer,
                })
                .await;
        });
    }

    /// A bootstrap name resolved (or not): logs it, and dials what the core
    /// says. Logged as a warning or at info while this node is alone, at
    /// debug once it has members (the name is asked again every 30 s).
    fn on_resolved(&mut self, resolved: Resolved) {
        let Resolved {
            index,
            name,
            answer,
        } = resolved;
        let alone = self.core.mesh().connected_count() == 0;
        let dials = self
            .core
            .mesh_mut()
            .on_resolved(index, answer.as_deref().ok());
        let retry = self.retry_in(index);
        match &answer {
            Err(e) => {
                let line = format!(
                    "cannot resolve the bootstrap name {name}: {e}; trying again in {retry:.0} s \
                     (check the name, and this host's resolver: /etc/resolv.conf, /etc/hosts)"
                );
                if alone {
                    warn!("{line}")
                } else {
                    debug!("{line}")
                }
            }
            Ok(ips) => {
                // A log line, not a listing: the first 16 addresses.
                let mut list: Vec<String> = ips.iter().take(16).map(IpAddr::to_string).collect();
                if ips.len() > 16 {
                    list.push(format!("and {} more", ips.len() - 16));
                }
                let list = list.join(", ");
                let dialing: Vec<&str> = dials
                    .iter()
                    .filter_map(|a| match a {
                        Action::DialBootstrap { addr, .. } => Some(addr.as_str()),
                        _ => None,
                    })
                    .collect();
                if dialing.is_empty() {
                    let line = format!(
                        "the bootstrap name {name} resolves to [{list}], none of them a node to \
                         dial (this node's own addresses, members', or of the other IP family); \
                         resolving it again in {retry:.0} s"
                    );
                    if alone {
                        warn!(
                            "{line} (a Kubernetes headless service lists a pod only once it is \
                             ready, unless it sets publishNotReadyAddresses)"
                        );
                    } else {
                        debug!("{line}");
                    }
                } else {
                    let line = format!(
                        "the bootstrap name {name} resolves to [{list}]: dialing {}; resolving \
                         it again in {retry:.0} s",
                        dialing.join(", ")
                    );
                    if alone {
                        info!("{line}");
                    } else {
                        debug!("{line}");
                    }
                }
            }
        }
        for action in dials {
            self.act(action);
        }
    }

    fn log_membership(&mut self, event: Event) {
        match event {
            Event::Joined(id) => info!("member joined: {}", self.label(&id)),
            Event::Restarted(id) => info!("member restarted: {}", self.label(&id)),
            Event::Suspected(id) => {
                info!("member suspected (missed heartbeats): {}", self.label(&id))
            }
            Event::Recovered(id) => info!("member heard from again: {}", self.label(&id)),
            Event::Left(id) => {
                info!("member left (silent for too long): {}", self.label(&id));
                self.labels.remove(&id);
            }
            Event::Stopped(id) => {
                info!("member left (shut down): {}", self.label(&id));
                self.labels.remove(&id);
            }
        }
    }

    /// Dials `peer` at `addrs` unless connected or dialing, from a new
    /// source port: reusing the listen port can meet the 4-tuple of a
    /// connection still in TIME_WAIT, and the dial fails with `Address
    /// already in use` each time for a minute (seen once: a node never
    /// joined). Connections to peers outside the view open and close as
    /// requests need them, so the same pair of ports comes back often.
    fn dial(&mut self, peer: PeerId, addrs: &[String]) {
        let addrs: Vec<Multiaddr> = addrs.iter().filter_map(|a| a.parse().ok()).collect();
        let opts = DialOpts::peer_id(peer)
            .addresses(addrs)
            .condition(PeerCondition::DisconnectedAndNotDialing)
            .allocate_new_port()
            .build();
        if let Err(e) = self.swarm.dial(opts) {
            debug!(%peer, "dial: {e}");
        }
    }

    /// Sends `request` to `peer`; with no connection open, dials the
    /// addresses it announces first (see [`Node::dial`]), and
    /// request-response sends it once connected.
    fn ask(&mut self, peer: PeerId, request: Request) -> OutboundRequestId {
        if !self.swarm.is_connected(&peer)
            && let Some(addrs) = self.core.mesh().addresses_of(&peer.to_string())
        {
            let addrs = addrs.to_vec();
            self.dial(peer, &addrs);
        }
        let now = self.now();
        self.last_used.insert(peer, now);
        self.swarm.behaviour_mut().rpc.send_request(&peer, request)
    }

    /// A message emulation dropped: an answer that will never come is a
    /// failed request, so whoever waits for it can ask again.
    fn dropped(&mut self, inbound: Inbound) {
        if let Inbound::Response { request_id, .. } = inbound
            && !self.on_sync_failure(request_id)
            && !self.on_runs_failure(request_id)
        {
            self.on_fetch_failure(request_id, "dropped by an emulated partition".into());
        }
    }

    /// Takes a message from `from_region`, now or after its emulated delay;
    /// drops it while an emulated partition separates the regions.
    fn receive(&mut self, from_region: Option<&str>, inbound: Inbound) {
        if let Some(from) = from_region
            && self.partition.cuts(from, &self.config.region)
        {
            self.dropped(inbound);
            return;
        }
        let delay = match (&self.latency, from_region) {
            (Some(map), Some(from)) => map.delay(from, &self.config.region),
            _ => Duration::ZERO,
        };
        if delay.is_zero() {
            self.handle(inbound);
        } else if self.delayed_in_flight.load(Ordering::Relaxed) >= MAX_DELAYED {
            self.warn_once("delayed-full".to_owned(), || {
                format!("latency emulation holds {MAX_DELAYED} messages; dropping more")
            });
            self.dropped(inbound);
        } else {
            let tx = self.delayed.clone();
            let in_flight = self.delayed_in_flight.clone();
            in_flight.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                in_flight.fetch_sub(1, Ordering::Relaxed);
                let _ = tx.send(inbound);
            });
        }
    }

    fn handle(&mut self, inbound: Inbound) {
        let now = self.now();
        match inbound {
            Inbound::Heartbeat { source, via, hb } => self.take_heartbeat(source, via, hb),
            Inbound::Suspicion { source, suspicion } => {
                let wire::Suspicion { id, boot, seq } = suspicion;
                if let Some(event) =
                    self.core
                        .mesh_mut()
                        .on_suspicion(&source.to_string(), &id, boot, seq, now)
                {
                    self.log_membership(event);
                }
            }
            Inbound::Request {
                peer,
                request:
                    Request::Clock {
                        t1,
                        known,
                        suspect,
                        introduce,
                    },
                channel,
            } => {
                let t2 = wall_ns();
                if let Some(hb) = introduce {
                    self.take_heartbeat(peer, peer, *hb);
                }
                let response = if self.core.mesh().may_answer_clock(&peer.to_string()) {
                    let pulse = self.core.mesh_mut().answer_clock(known, suspect, now);
                    Response::Clock {
                        t1,
                        t2,
                        t3: wall_ns(),
                        pulse: Some(Box::new(pulse)),
                        yours: self.core.mesh().clock_to_tell(&peer.to_string(), now),
                    }
                } else {
                    self.core.mesh_mut().on_stranger(&peer.to_string());
                    Response::Refused {
                        reason: "not a member yet: no heartbeat of yours has arrived".into(),
                    }
                };
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .rpc
                    .send_response(channel, response);
            }
            Inbound::Request {
                peer,
                request:
                    Request::Members {
                        digest,
                        heartbeat,
                        after,
                    },
                channel,
            } => {
                self.take_heartbeat(peer, peer, heartbeat);
                let response = match self.core.mesh().answer_members(
                    &peer.to_string(),
                    digest,
                    after.as_deref(),
                ) {
                    Ok(None) => Response::Members {
                        members: Vec::new(),
                        same: true,
                        complete: true,
                    },
                    Ok(Some((members, complete))) => Response::Members {
                        members,
                        same: false,
                        complete,
                    },
                    Err(reason) => Response::Refused {
                        reason: reason.into(),
                    },
                };
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .rpc
                    .send_response(channel, response);
            }
            Inbound::Request {
                request: Request::Heard { member },
                channel,
                ..
            } => {
                let ago = self.core.mesh().answer_heard(&member, now);
                let response = Response::Heard {
                    ago_ms: ago.map(|a| u64::try_from(a.as_millis()).unwrap_or(u64::MAX)),
                };
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .rpc
                    .send_response(channel, response);
            }
            Inbound::Request {
                peer,
                request: Request::Module { sha256 },
                channel,
            } => self.answer_module(peer, &sha256, channel),
            Inbound::Request {
                peer,
                request: Request::Shards { run, have },
                channel,
            } => self.answer_shards(peer, &run, have, channel),
            Inbound::Request {
                peer,
                request: Request::Runs { known },
                channel,
            } => self.answer_runs_known(peer, &known, channel),
            Inbound::Request {
                peer,
                request: Request::Shard { shard },
                channel,
            } => self.take_sent_shard(peer, &shard, channel),
            Inbound::Request {
                peer,
                request: Request::Word { message },
                channel,
            } => self.take_word(peer, &message, channel),
            Inbound::Request {
                peer,
                request: Request::Run { run, known },
                channel,
            } => self.answer_run(peer, &run, known, channel),
            Inbound::Answer { channel, response } => {
                self.core.shards_answer_sent();
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .rpc
                    .send_response(channel, response);
            }
            Inbound::Run { source, via, env } => self.on_run_message(source, via, env),
            Inbound::Response {
                peer,
                request_id,
                response,
            } => {
                let t4 = wall_ns();
                if let Some(member) = self.heard_asks.remove(&request_id) {
                    let ago = match response {
                        Response::Heard { ago_ms } => ago_ms.map(Duration::from_millis),
                        _ => None,
                    };
                    self.core
                        .mesh_mut()
                        .on_heard(&peer.to_string(), &member, ago, now);
                    return;
                }
                if self.members_asks.remove(&request_id) {
                    if let Response::Members { same: true, .. } = response {
                        self.core.mesh_mut().on_members_same();
                    } else if let Response::Members {
                        members,
                        same: false,
                        complete,
                    } = response
                    {
                        let results = self.core.mesh_mut().on_members(
                            &peer.to_string(),
                            members,
                            complete,
                            now,
                        );
                        for result in results {
                            self.after_heartbeat(&peer.to_string(), peer, None, result);
                        }
                    }
                    return;
                }
                if self.on_sync_response(request_id, peer, &response)
                    || self.on_runs_response(request_id, &response)
                {
                    return;
                }
                if let Response::Run { messages } = &response {
                    self.take_run_answer(peer, messages);
                    return;
                }
                let Some(response) = self.on_module_response(request_id, peer, response) else {
                    return;
                };
                let Some((_, sent_t1, sent_at)) = self.pending.remove(&request_id) else {
                    return;
                };
                match response {
                    // This node's clock stepped while the question was out:
                    // its round trip, in wall time, is not the real one.
                    Response::Clock { t1, .. }
                        if t1 == sent_t1
                            && t4
                                .saturating_sub(t1)
                                .saturating_sub(
                                    i64::try_from(now.saturating_sub(sent_at).as_nanos())
                                        .unwrap_or(i64::MAX),
                                )
                                .saturating_abs()
                                > STEP_MARGIN_NS =>
                    {
                        debug!(%peer, "dropped a clock answer: this node's clock stepped meanwhile");
                    }
                    Response::Clock {
                        t1,
                        t2,
                        t3,
                        pulse,
                        yours,
                    } if t1 == sent_t1 => {
                        if let Some(pulse) = pulse {
                            let label = pulse.heartbeat.as_ref().map(label_of);
                            let result = self.core.mesh_mut().on_pulse(&peer.to_string(), *pulse, now);
                            self.after_heartbeat(&peer.to_string(), peer, label, result);
                        }
                        let exchange = Exchange { t1, t2, t3, t4 };
                        if !self
                            .core
                            .mesh_mut()
                            .on_clock_answer(&peer.to_string(), exchange, yours, now)
                        {
                            self.warn_once(format!("clock:{peer}"), || {
                                format!("dropped a clock answer from {peer} with impossible timestamps")
                            });
                        }
                    }
                    Response::Clock { .. } => self.warn_once(format!("clock-echo:{peer}"), || {
                        format!("dropped a clock answer from {peer} that echoes a time this node did not send")
                    }),
                    Response::Refused { reason } => {
                        debug!(%peer, "clock question refused: {reason}");
                        self.core.mesh_mut().on_clock_refused(&peer.to_string());
                    }
                    Response::Module { .. }
                    | Response::Kept
                    | Response::Heard { .. }
                    | Response::Shards { .. }
                    | Response::Runs { .. }
                    | Response::Run { .. }
                    | Response::Members { .. } => {
                        debug!(%peer, "an answer nobody asked for")
                    }
                }
            }
        }
    }

    /// A heartbeat from `source` itself (by gossip, in an ask, in its own
    /// list), relayed by `via`.
    fn take_heartbeat(&mut self, source: PeerId, via: PeerId, hb: Heartbeat) {
        let label = label_of(&hb);
        let id = source.to_string();
        let now = self.now();
        let result = self.core.mesh_mut().on_heartbeat(&id, hb, now);
        self.after_heartbeat(&id, via, Some(label), result);
    }

    /// Logs what taking a heartbeat of `id` did.
    fn after_heartbeat(
        &mut self,
        id: &str,
        via: PeerId,
        label: Option<String>,
        result: Result<Option<Event>, HeartbeatRefused>,
    ) {
        match result {
            Ok(event) => {
                // Labels only for members: strangers must not grow it.
                if let Some(label) = label
                    && self.core.mesh().region_of(id).is_some()
                {
                    self.labels.insert(id.to_owned(), label);
                }
                if let Some(event) = event {
                    self.log_membership(event);
                }
            }
            // Keyed by the connected peer that relayed it, not by the
            // author, which a peer with the key can mint without end.
            Err(e) => self.warn_once(format!("heartbeat:{via}:{}", e.kind()), || {
                format!("refused a heartbeat from {id} (via {via}): {e}")
            }),
        }
    }

    fn on_swarm(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                println!("p2p listening on {address}/p2p/{}", self.peer_id);
                let mut listen = self.core.mesh().listen().to_vec();
                listen.push(address.to_string());
                let now = self.now();
                self.core.mesh_mut().set_listen(listen, now);
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                let gone = address.to_string();
                let listen = self
                    .core
                    .mesh()
                    .listen()
                    .iter()
                    .filter(|a| **a != gone)
                    .cloned()
                    .collect();
                let now = self.now();
                self.core.mesh_mut().set_listen(listen, now);
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                num_established,
                ..
            } => {
                if let Some((index, addr)) = self.bootstrap_dials.remove(&connection_id) {
                    info!(peer = %peer_id, "joined the mesh through the bootstrap node {addr}");
                    self.core.mesh_mut().on_bootstrap_connected(index, &addr);
                }
                if num_established.get() == 1 {
                    debug!(peer = %peer_id, "connected");
                    let now = self.now();
                    self.last_used.insert(peer_id, now);
                    self.core.mesh_mut().on_connected(&peer_id.to_string(), now);
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                ..
            } => {
                self.bootstrap_dials.remove(&connection_id);
                if num_established == 0 {
                    debug!(peer = %peer_id, "disconnected");
                    self.last_used.remove(&peer_id);
                    self.core.mesh_mut().on_disconnected(&peer_id.to_string());
                }
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id,
                error,
            } => {
                if let Some((index, addr)) = self.bootstrap_dials.remove(&connection_id) {
                    if let libp2p::swarm::DialError::LocalPeerId { .. } = error {
                        debug!("the bootstrap address {addr} is this node's own");
                    } else {
                        self.bootstrap_failed(index, &addr, &error.to_string());
                    }
                } else {
                    debug!(peer = ?peer_id, "dial failed: {error}");
                    // A member that refuses the redial after its connection
                    // closed is a process that is gone (killed, crashed):
                    // suspected now rather than after its silence, so a run
                    // hands its share on at once.
                    if let Some(peer) = peer_id
                        && error.to_string().contains("Connection refused")
                    {
                        let now = self.now();
                        self.core.mesh_mut().on_dial_refused(&peer.to_string(), now);
                    }
                }
            }
            SwarmEvent::IncomingConnectionError {
                send_back_addr,
                error,
                ..
            } => {
                let ip = send_back_addr
                    .iter()
                    .find_map(|p| match p {
                        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
                        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
                        _ => None,
                    })
                    .map(|ip| ip.to_string())
                    .unwrap_or_default();
                self.warn_once(format!("incoming:{ip}"), || {
                    format!(
                        "refused a connection from {send_back_addr}: {error}; a node with another mesh key \
                         (or none) fails like this, and so does anything that is not a fusi node ({KEY_HINT})"
                    )
                });
            }
            SwarmEvent::Behaviour(BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            })) => self.on_gossip(propagation_source, message_id, message),
            SwarmEvent::Behaviour(BehaviourEvent::Rpc(event)) => self.on_rpc(event),
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(found))) => {
                for (peer, addr) in found {
                    if peer == self.peer_id || self.core.mesh().is_connected(&peer.to_string()) {
                        continue;
                    }
                    debug!(%peer, %addr, "found by mDNS");
                    let opts = DialOpts::peer_id(peer)
                        .addresses(vec![addr])
                        .condition(PeerCondition::DisconnectedAndNotDialing)
                        .build();
                    let _ = self.swarm.dial(opts);
                }
            }
            _ => {}
        }
    }

    fn on_gossip(
        &mut self,
        propagation_source: PeerId,
        message_id: gossipsub::MessageId,
        message: gossipsub::Message,
    ) {
        let verdict = self.judge_gossip(propagation_source, message);
        self.swarm
            .behaviour_mut()
            .gossipsub
            .report_message_validation_result(&message_id, &propagation_source, verdict);
    }

    /// Decodes a gossip message, passes it on, and says whether gossipsub
    /// may forward it.
    fn judge_gossip(
        &mut self,
        propagation_source: PeerId,
        message: gossipsub::Message,
    ) -> gossipsub::MessageAcceptance {
        let Some(source) = message.source else {
            return gossipsub::MessageAcceptance::Reject;
        };
        if message.topic == self.runs.runs_topic.hash() {
            let decoded = wire::decode_run(&message.data)
                .map_err(|e| e.to_string())
                .and_then(|env| match sign::verify_run(&env) {
                    Ok(()) => Ok(Inbound::Run {
                        source,
                        via: propagation_source,
                        env,
                    }),
                    Err(e) => Err(e.to_string()),
                });
            return self.judge_member_gossip(propagation_source, source, "run message", decoded);
        }
        if message.topic == self.suspects.hash() {
            let decoded = wire::decode_suspicion(&message.data)
                .map(|suspicion| Inbound::Suspicion { source, suspicion })
                .map_err(|e| e.to_string());
            return self.judge_member_gossip(propagation_source, source, "suspicion", decoded);
        }
        if message.topic != self.topic.hash() {
            return gossipsub::MessageAcceptance::Ignore;
        }
        match wire::decode_heartbeat(&message.data) {
            Ok(hb) => {
                let verdict = if hb.id == source.to_string() {
                    gossipsub::MessageAcceptance::Accept
                } else {
                    gossipsub::MessageAcceptance::Reject
                };
                let via = propagation_source.to_string();
                let region = self
                    .core
                    .mesh()
                    .region_of(&via)
                    .map(str::to_owned)
                    .unwrap_or_else(|| hb.region.clone());
                self.receive(
                    Some(&region),
                    Inbound::Heartbeat {
                        source,
                        via: propagation_source,
                        hb,
                    },
                );
                verdict
            }
            Err(e) => {
                self.warn_once(format!("gossip:{propagation_source}:{}", e.kind()), || {
                    format!("dropped a heartbeat from {source} (via {propagation_source}): {e}")
                });
                gossipsub::MessageAcceptance::Reject
            }
        }
    }

    /// Run messages and shards are taken from members only: a run must
    /// come through the private mesh from a node that is part of it. A
    /// message that decodes goes on (through latency emulation, by the
    /// region of the peer that relayed it) and may be forwarded; one that
    /// does not is logged once per relaying peer and kind, and rejected.
    fn judge_member_gossip(
        &mut self,
        via: PeerId,
        source: PeerId,
        what: &str,
        decoded: Result<Inbound, String>,
    ) -> gossipsub::MessageAcceptance {
        let Some(region) = self
            .core
            .mesh()
            .region_of(&source.to_string())
            .map(str::to_owned)
        else {
            debug!(%source, "a {what} from a node that is not a member (yet)");
            return gossipsub::MessageAcceptance::Ignore;
        };
        match decoded {
            Ok(inbound) => {
                let region = self
                    .core
                    .mesh()
                    .region_of(&via.to_string())
                    .map(str::to_owned)
                    .unwrap_or(region);
                self.receive(Some(&region), inbound);
                gossipsub::MessageAcceptance::Accept
            }
            Err(e) => {
                self.warn_once(format!("{what}:{via}"), || {
                    format!("dropped a {what} from {source} (via {via}): {e}")
                });
                gossipsub::MessageAcceptance::Reject
            }
        }
    }

    fn on_rpc(&mut self, event: request_response::Event<Request, Response>) {
        match event {
            request_response::Event::Message { peer, message, .. } => {
                let now = self.now();
                self.last_used.insert(peer, now);
                let region = self
                    .core
                    .mesh()
                    .region_of(&peer.to_string())
                    .map(str::to_owned);
                let inbound = match message {
                    request_response::Message::Request {
                        request, channel, ..
                    } => Inbound::Request {
                        peer,
                        request,
                        channel,
                    },
                    request_response::Message::Response {
                        request_id,
                        response,
                    } => Inbound::Response {
                        peer,
                        request_id,
                        response,
                    },
                };
                let region = region.or_else(|| inbound.claimed_region().map(str::to_owned));
                self.receive(region.as_deref(), inbound);
            }
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                if let Some(member) = self.heard_asks.remove(&request_id) {
                    // No opinion is one that did not hear the member.
                    let now = self.now();
                    self.core
                        .mesh_mut()
                        .on_heard(&peer.to_string(), &member, None, now);
                } else if !self.members_asks.remove(&request_id)
                    && !self.on_sync_failure(request_id)
                    && !self.on_runs_failure(request_id)
                    && !self.on_fetch_failure(request_id, error.to_string())
                {
                    self.pending.remove(&request_id);
                    debug!(%peer, "clock question failed: {error}");
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                if let InboundFailure::Io(e) = &error {
                    let e = e.to_string();
                    self.warn_once(format!("rpc:{peer}"), || {
                        format!("dropped a malformed request from {peer}: {e}")
                    });
                } else {
                    debug!(%peer, "inbound request failed: {error}");
                }
            }
            request_response::Event::ResponseSent { .. } => {}
        }
    }

    fn answer(&mut self, query: Query) {
        let now = self.now();
        match query {
            Query::Status(reply) => {
                let me = self.core.mesh().me();
                let _ = reply.send(StatusView {
                    id: me.id.clone(),
                    name: me.name.clone(),
                    region: me.region.clone(),
                    version: me.version.clone(),
                    uptime_s: now.as_secs_f64(),
                    listen: self.core.mesh().listen().to_vec(),
                    mesh: if self.config.mesh_key.is_some() {
                        "private".into()
                    } else {
                        "open".into()
                    },
                    key_fingerprint: self.config.mesh_key.map(|k| k.fingerprint().to_string()),
                    members: self.core.mesh().peers(now).len(),
                    connected: self.core.mesh().connected_count(),
                    cores: me.cores,
                    vu_limit: me.vu_limit,
                    cpu: self.health.cpu,
                    sockets: self.health.sockets,
                    mesh_bytes_sent: self.traffic.sent(),
                    mesh_bytes_received: self.traffic.received(),
                    emulated_latency: self.config.emulate_latency.as_ref().map(|(t, _)| t.clone()),
                    source_ip: self.config.source_ip.map(|ip| ip.to_string()),
                    data_dir: self.data_dir.clone(),
                });
            }
            Query::Peers(reply) => {
                let ms = |ns: i64| ns as f64 / 1e6;
                let peers = self
                    .core
                    .mesh()
                    .peers(now)
                    .into_iter()
                    .map(|p| {
                        let hb = &p.member.heartbeat;
                        PeerView {
                            id: hb.id.clone(),
                            name: hb.name.clone(),
                            region: hb.region.clone(),
                            version: hb.version.clone(),
                            addresses: hb.listen.clone(),
                            connected: p.connected,
                            suspect: p.member.suspect,
                            last_seen_ms: now.saturating_sub(p.member.last_seen).as_millis() as u64,
                            rtt_ms: p.last_rtt_ns.map(ms),
                            offset_ms: p.clock.map(|c| ms(c.offset_ns)),
                            bound_ms: p.clock.map(|c| ms(c.bound_ns)),
                            clock_samples: p.clock.map(|c| c.samples).unwrap_or(0),
                            cores: hb.cores,
                            vu_limit: hb.vu_limit,
                            cpu: hb.cpu,
                            sockets: hb.sockets,
                        }
                    })
                    .collect();
                let _ = reply.send(PeersView { peers });
            }
            other => self.answer_runs(other),
        }
    }
}

/// How the log names a member: its name, region and id.
fn label_of(hb: &Heartbeat) -> String {
    format!("{} ({}) {}", hb.name, hb.region, hb.id)
}
