//! The runs side of a node's event loop: it drives the core's runs and carries
//! out what it asks (gossip, module fetches, workers), keeps the shards of
//! every run in the data dir and merged in memory, and answers the API's
//! questions about runs.
//!
//! The runs a node finds in its data dir at start are not read: it knows
//! which shards it holds by their names ([`StoredShards`]), and reads a
//! run's shards when a new one comes (or its progress is asked for). A
//! shard or record the data dir cannot take (a full disk) is named in the
//! log and in the run's status (`storage_error`); the shard waits in
//! memory, counts in the node's report, and is stored again every
//! [`STORE_RETRY`] until there is room.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use libp2p::request_response::{OutboundRequestId, ResponseChannel};
use libp2p::{PeerId, gossipsub};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::Node;
use super::decoded::DecodedShards;
use crate::api::{
    LiveView, ReportSource, RunNodeView, RunView, RunsView, SubmitRequest, SubmitView,
};
use crate::core::allow::AllowList;
use crate::core::module_name::{MAX_MODULE_BYTES, sha256_hex};
use crate::core::module_spread::{FetchStep, FileFetch, ModuleAsks, ROUND_EVERY};
use crate::core::node::Holdings;
use crate::core::report::Report;
use crate::core::run_report::abort_verdict;
use crate::core::runs::{At, EndedRun, Run, RunAction, RunRefused};
use crate::core::shard::{Shard, SparseShard};
use crate::core::spec::{OnLoss, RunSpec, Share};
use crate::core::threshold::parse_all;
use crate::core::wire::{
    self, MAX_SENT_SHARD_BYTES, Outcome, PlanId, RUNS_TOPIC, Request, Response, RunEnvelope,
    RunMessage,
};
use crate::engine::http::ClientSettings;
use crate::local::new_run_id;
use crate::store::StoreError;
use crate::store::modules::ModuleStore;
use crate::store::runs::{RunStore, StoredShards};
use crate::worker::{self, ShareJob, WorkerEvent, WorkerHandle, wall_ns};

/// What a share needs from its peers (the module, the data files) being
/// fetched, one file at a time.
struct Fetch {
    run: String,
    plan: PlanId,
    spec: Box<RunSpec>,
    share: Share,
    /// Which files, from whom, which round: the core's decisions.
    files: FileFetch,
}

impl Fetch {
    /// What the file asked for now is, for messages.
    fn what(&self) -> String {
        let sha = self.files.asked().unwrap_or("");
        match self.spec.data.iter().find(|d| d.sha256 == sha) {
            Some(set) if sha != self.spec.module_sha256 => format!("the data file of {}", set.name),
            _ => "the scenario module".to_owned(),
        }
    }
}

/// The longest a run's `setup` may take where the run is submitted (the
/// command that submitted it waits for the answer).
const SETUP_LIMIT: Duration = Duration::from_secs(100);

/// How often a node tries again to store what its data dir could not take.
const STORE_RETRY: Duration = Duration::from_secs(2);

/// The most bytes of shards kept in memory for want of room in the data
/// dir; beyond it, shards are not kept (and the run's status says so).
const MAX_UNSAVED_BYTES: usize = 64 << 20;

/// A shard the data dir could not take, waiting in memory.
struct Unsaved {
    node: String,
    seq: u64,
    bytes: Vec<u8>,
}

/// Why a run's data is not all in the data dir.
#[derive(Default)]
struct StorageProblem {
    /// The last error, while something waits to be stored.
    error: Option<String>,
    /// Shards not kept at all (over [`MAX_UNSAVED_BYTES`]).
    lost: u64,
}

/// What the event loop keeps for runs.
pub(super) struct Runs {
    store: RunStore,
    modules: ModuleStore,
    workers: HashMap<String, (PlanId, WorkerHandle)>,
    /// Verified modules and data files kept in memory, newest last: peers
    /// ask for them.
    module_cache: Vec<(String, Arc<Vec<u8>>)>,
    started: std::collections::HashSet<String>,
    /// The shards merged, by run, for runs whose shards were read.
    reports: HashMap<String, Report>,
    /// Runs restored from the data dir whose shards are not read yet.
    stored: HashMap<String, StoredShards>,
    /// The shards of the runs in `reports`, decoded, for their full report.
    decoded: DecodedShards,
    /// Shards waiting for room in the data dir, by run.
    unsaved: HashMap<String, Vec<Unsaved>>,
    unsaved_bytes: usize,
    /// Runs whose record waits for room in the data dir.
    unsaved_records: BTreeSet<String>,
    /// Why a run's data is not all in the data dir, by run: the status says.
    storage: HashMap<String, StorageProblem>,
    /// When what waits is next tried again.
    store_retry_at: Duration,
    /// When each run's abortOnFail thresholds were last judged.
    abort_checked: HashMap<String, Duration>,
    fetches: HashMap<OutboundRequestId, Fetch>,
    /// Fetches waiting for their next round.
    retries: Vec<(Duration, Fetch)>,
    /// Asks for a module or data file this node does not hold yet, answered
    /// when it arrives ([`crate::core::module_spread`]).
    module_asks: ModuleAsks<ResponseChannel<Response>>,
    events: mpsc::UnboundedSender<WorkerEvent>,
    allow: Option<Arc<AllowList>>,
    source_ip: Option<std::net::IpAddr>,
    pub(super) runs_topic: gossipsub::IdentTopic,
}

/// What this node holds of a run's shards, from its reports (or the names
/// of the files of a run not read yet).
impl Holdings for Runs {
    fn holds_all(&self, run: &Run) -> bool {
        let shards_of = |node: &str| match self.reports.get(&run.id) {
            Some(report) => Some(report.shards_of(node)),
            None => self.stored.get(&run.id).map(|s| s.shards_of(node)),
        };
        if !self.reports.contains_key(&run.id) && !self.stored.contains_key(&run.id) {
            return run.plan.is_none();
        }
        run.plan.iter().flat_map(|p| &p.shares).all(|share| {
            let (received, announced) = shards_of(&share.node).unwrap_or((0, None));
            announced == Some(received)
        })
    }
}

impl Runs {
    /// The runs of node `me`, with what its data dir holds.
    pub(super) fn open(
        data_dir: &std::path::Path,
        allow: Option<AllowList>,
        source_ip: Option<std::net::IpAddr>,
        events: mpsc::UnboundedSender<WorkerEvent>,
    ) -> anyhow::Result<Runs> {
        Ok(Runs {
            store: RunStore::open(data_dir)?,
            modules: ModuleStore::open(data_dir)?,
            workers: HashMap::new(),
            module_cache: Vec::new(),
            started: std::collections::HashSet::new(),
            reports: HashMap::new(),
            stored: HashMap::new(),
            decoded: DecodedShards::default(),
            unsaved: HashMap::new(),
            unsaved_bytes: 0,
            unsaved_records: BTreeSet::new(),
            storage: HashMap::new(),
            store_retry_at: Duration::ZERO,
            abort_checked: HashMap::new(),
            fetches: HashMap::new(),
            retries: Vec::new(),
            module_asks: ModuleAsks::default(),
            events,
            allow: allow.map(Arc::new),
            source_ip,
            runs_topic: gossipsub::IdentTopic::new(RUNS_TOPIC),
        })
    }
}

impl Node {
    /// Whether a share runs here (started, not yet done).
    pub(super) fn runs_a_share(&self) -> bool {
        !self.runs.started.is_empty()
    }

    pub(super) fn at(&self) -> At {
        At {
            now: self.now(),
            wall_ns: wall_ns(),
        }
    }

    /// Takes back the runs of the data dir (their shards are read when
    /// needed); a share that was running when the node went down is
    /// reported interrupted.
    pub(super) fn restore_runs(&mut self) {
        let me = self.core.mesh().me().id.clone();
        let (stored, problems) = self.runs.store.load();
        for p in problems {
            warn!("a file in the data dir was skipped: {p}");
        }
        let mut interrupted = Vec::new();
        for (run, shards) in stored {
            let id = run.id.clone();
            let (mine, _) = shards.shards_of(&me);
            self.runs.stored.insert(id.clone(), shards);
            let at = self.at();
            if let Some(id) = self.core.runs_mut().restore(run, at) {
                interrupted.push((id, mine));
            }
        }
        for (id, shards) in interrupted {
            info!(run = %id, "this node's share of run {id} was interrupted by a restart");
            let now = self.at().now;
            self.core.finished(&id, shards, true, now);
            self.flush_core();
        }
        if !self.core.runs().all().is_empty() {
            info!(
                "{} runs restored from the data dir",
                self.core.runs().all().len()
            );
        }
    }

    /// Refuses the asks for a module kept past their grace, for a module
    /// this node is not fetching.
    pub(super) fn refuse_kept_asks(&mut self, at: At) {
        if self.runs.module_asks.is_empty() {
            return;
        }
        let fetching: BTreeSet<String> = self
            .runs
            .fetches
            .values()
            .chain(self.runs.retries.iter().map(|(_, f)| f))
            .flat_map(|f| f.files.wanted().iter().cloned())
            .collect();
        for channel in self
            .runs
            .module_asks
            .expired(at.now, |sha| fetching.contains(sha))
        {
            let response = Response::Refused {
                reason: "this node does not hold that module, and is not fetching it".into(),
            };
            let _ = self
                .swarm
                .behaviour_mut()
                .rpc
                .send_response(channel, response);
        }
    }

    /// Fetches due for another round ask the proposer and every node that
    /// is ready by now.
    pub(super) fn retry_fetches(&mut self, at: At) {
        // Fetches due for another round ask the proposer and every node
        // that is ready by now.
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.runs.retries)
            .into_iter()
            .partition(|(t, _)| *t <= at.now);
        self.runs.retries = later;
        for (_, mut fetch) in due {
            if !self.core.runs().wants(&fetch.run, fetch.plan) {
                continue;
            }
            let step = fetch
                .files
                .again(self.core.runs().module_sources(&fetch.run));
            self.fetch_step(fetch, step);
        }
    }

    /// After the core's tick: the data of runs it evicted goes, the records
    /// of runs that changed are stored, and what waits for room in the data
    /// dir is tried again when due.
    pub(super) fn after_runs_tick(&mut self, at: At) {
        for id in self.core.runs_mut().take_evicted() {
            self.runs.reports.remove(&id);
            self.runs.stored.remove(&id);
            self.runs.decoded.forget(&id);
            self.runs.abort_checked.remove(&id);
            if let Some(waiting) = self.runs.unsaved.remove(&id) {
                self.runs.unsaved_bytes -= waiting.iter().map(|u| u.bytes.len()).sum::<usize>();
            }
            self.runs.unsaved_records.remove(&id);
            self.runs.storage.remove(&id);
            self.runs.store.remove_run(&id);
        }
        for id in self.core.runs_mut().take_dirty() {
            let saved = match self.core.runs().get(&id) {
                Some(run) => self.runs.store.save_run(run),
                None => Ok(()),
            };
            if let Err(e) = saved {
                self.warn_once(format!("save-run:{id}"), || {
                    format!(
                        "cannot store run {id}: {e}; it is written again once the data dir has room"
                    )
                });
                self.runs.unsaved_records.insert(id.clone());
                self.runs.storage.entry(id).or_default().error = Some(e.to_string());
            }
        }
        if at.now >= self.runs.store_retry_at {
            self.runs.store_retry_at = at.now + STORE_RETRY;
            self.store_again();
        }
    }

    /// Tries again to store the records and shards the data dir could not
    /// take; a run whose data is all stored now leaves the status.
    fn store_again(&mut self) {
        let waiting: Vec<String> = self
            .runs
            .storage
            .iter()
            .filter(|(_, p)| p.error.is_some())
            .map(|(id, _)| id.clone())
            .collect();
        for id in waiting {
            match self.store_run_again(&id) {
                Err(e) => {
                    if let Some(p) = self.runs.storage.get_mut(&id) {
                        p.error = Some(e.to_string());
                    }
                }
                Ok(stored) => {
                    let lost = self.runs.storage.get(&id).map_or(0, |p| p.lost);
                    if lost == 0 {
                        self.runs.storage.remove(&id);
                    } else if let Some(p) = self.runs.storage.get_mut(&id) {
                        p.error = None;
                    }
                    info!(
                        run = %id,
                        "the data dir has room again: run {id} is stored ({stored} shards that waited in memory)"
                    );
                }
            }
        }
    }

    /// Stores a run's record and shards that wait; returns how many shards.
    fn store_run_again(&mut self, id: &str) -> Result<usize, StoreError> {
        if self.runs.unsaved_records.contains(id) {
            if let Some(run) = self.core.runs().get(id) {
                self.runs.store.save_run(run)?;
            }
            self.runs.unsaved_records.remove(id);
        }
        let Some(mut waiting) = self.runs.unsaved.remove(id) else {
            return Ok(0);
        };
        let mut stored = 0;
        while let Some(shard) = waiting.last() {
            if let Err(e) = self
                .runs
                .store
                .save_shard_at(id, &shard.node, shard.seq, &shard.bytes)
            {
                self.runs.unsaved.insert(id.to_owned(), waiting);
                return Err(e);
            }
            self.runs.unsaved_bytes -= shard.bytes.len();
            waiting.pop();
            stored += 1;
        }
        Ok(stored)
    }

    fn publish(&mut self, topic: gossipsub::IdentTopic, bytes: Vec<u8>, what: &str) {
        match self.swarm.behaviour_mut().gossipsub.publish(topic, bytes) {
            Ok(_)
            | Err(gossipsub::PublishError::NoPeersSubscribedToTopic)
            | Err(gossipsub::PublishError::Duplicate) => {}
            Err(e) => self.warn_once(format!("publish-{what}:{e}"), || {
                format!("cannot publish a {what}: {e}")
            }),
        }
    }

    pub(super) fn run_action(&mut self, action: RunAction) {
        match action {
            RunAction::Publish(mut env) => {
                // A leader's message goes out signed, so that whoever
                // passes it on cannot change it (a relayed one keeps
                // its leader's signature).
                if env.is_leaders()
                    && let Err(e) = self.signer.sign_run(&mut env)
                {
                    self.warn_once("sign-run".into(), || {
                        format!("cannot sign a run message: {e}")
                    });
                    return;
                }
                let topic = self.runs.runs_topic.clone();
                self.publish(topic, wire::encode(&env), "run message");
            }
            RunAction::Pull { run, from, known } => {
                if let Ok(peer) = from.parse::<PeerId>() {
                    self.ask(peer, Request::Run { run, known });
                }
            }
            RunAction::Tell { to, mut env } => {
                // A finish's words go to the nodes that waited for them
                // with the leader's signature (this node's own, if it led).
                if env.is_leaders()
                    && let Err(e) = self.signer.sign_run(&mut env)
                {
                    self.warn_once("sign-run".into(), || {
                        format!("cannot sign a run message: {e}")
                    });
                    return;
                }
                let message = serde_bytes::ByteBuf::from(wire::encode(&env));
                for to in to {
                    let Ok(peer) = to.parse::<PeerId>() else {
                        continue;
                    };
                    self.ask(
                        peer,
                        Request::Word {
                            message: message.clone(),
                        },
                    );
                }
            }
            RunAction::Prepare {
                run,
                plan,
                spec,
                share,
                sources,
            } => self.prepare(run, plan, spec, share, sources),
            RunAction::Start { run, at_wall_ns } => {
                let wait = at_wall_ns.saturating_sub(wall_ns()).max(0);
                let at = tokio::time::Instant::now()
                    + Duration::from_nanos(u64::try_from(wait).unwrap_or(0));
                let started = self
                    .runs
                    .workers
                    .get_mut(&run)
                    .is_some_and(|(_, handle)| handle.start(at));
                if started {
                    self.runs.started.insert(run.clone());
                    info!(run = %run, "share starts in {:.1} ms", wait as f64 / 1e6);
                } else {
                    warn!(run = %run, "told to start a share that is not prepared");
                }
            }
            RunAction::TakeOver { run, share, since } => {
                let taken = self.runs.workers.get(&run).is_some_and(|(_, handle)| {
                    handle.take_over(crate::engine::executor::TakeOver {
                        share: share.clone(),
                        since,
                    })
                });
                if taken {
                    info!(run = %run, segment = %share.segment, since_ms = since.as_millis() as u64,
                        "taking over part of a lost node's share");
                } else {
                    warn!(run = %run, "told to take over part of a share, but this node's share has ended");
                }
            }
            RunAction::Live { run, mut live } => {
                live.scopes = self
                    .runs
                    .reports
                    .get(&run)
                    .map(Report::live)
                    .unwrap_or_else(|| Report::new(&run).live());
                let env = RunEnvelope {
                    protocol: wire::RUN_PROTOCOL,
                    run,
                    body: RunMessage::Live(live),
                    sig: None,
                };
                let topic = self.runs.runs_topic.clone();
                self.publish(topic, wire::encode(&env), "run message");
            }
            RunAction::Stop { run } => {
                // A share due to start but not yet handed its start (the
                // core hands it over shortly before T0) ends as a started
                // one: its `Finished` says it is done.
                let due = self.core.runs().get(&run).is_some_and(|r| r.runs_here());
                if self.runs.started.contains(&run) || due {
                    if let Some((_, handle)) = self.runs.workers.get(&run) {
                        handle.stop();
                    }
                } else {
                    self.runs.workers.remove(&run);
                }
            }
        }
    }

    /// Gets the module (cached, or from a peer), then hands the share to a worker.
    fn prepare(
        &mut self,
        run: String,
        plan: PlanId,
        spec: Box<RunSpec>,
        share: Share,
        sources: Vec<String>,
    ) {
        self.runs.workers.remove(&run);
        if let Some(allow) = &self.runs.allow
            && let Err(reason) = allow.check_targets(&spec.targets)
        {
            warn!(run = %run, "refusing run {run}: {reason}");
            self.refuse(&run, reason);
            return;
        }
        if let Err(e) = spec.check_node_limit(&share.segment, self.core.mesh().me().vu_limit) {
            warn!(run = %run, "refusing run {run}: {e}");
            self.refuse(&run, e.to_string());
            return;
        }
        match self.missing(&spec) {
            Ok(wanted) if wanted.is_empty() => self.spawn_ready(run, plan, *spec, share),
            Ok(wanted) => {
                let fetch = Fetch {
                    run,
                    plan,
                    spec,
                    share,
                    files: FileFetch::new(wanted, sources),
                };
                self.fetch_next(fetch, None);
            }
            Err(e) => self.refuse(&run, format!("cannot read the module cache: {e}")),
        }
    }

    /// The files of `spec` (its module, then its data files) not here yet.
    fn missing(&mut self, spec: &RunSpec) -> Result<Vec<String>, crate::store::StoreError> {
        let mut wanted = Vec::new();
        if self.module(&spec.module_sha256)?.is_none() {
            wanted.push(spec.module_sha256.clone());
        }
        for set in &spec.data {
            if self.data_file(&set.sha256)?.is_none() && !wanted.contains(&set.sha256) {
                wanted.push(set.sha256.clone());
            }
        }
        Ok(wanted)
    }

    /// Hands a share whose files are all here to a worker.
    fn spawn_ready(&mut self, run: String, plan: PlanId, spec: RunSpec, share: Share) {
        let wasm = match self.module(&spec.module_sha256) {
            Ok(Some(wasm)) => wasm,
            Ok(None) => {
                return self.refuse(&run, "the scenario module is gone from the cache".into());
            }
            Err(e) => return self.refuse(&run, format!("cannot read the module cache: {e}")),
        };
        let mut data = Vec::new();
        for set in &spec.data {
            match self.data_file(&set.sha256) {
                Ok(Some(bytes)) => data.push(bytes),
                Ok(None) => {
                    return self.refuse(&run, format!("the data file of {} is gone", set.name));
                }
                Err(e) => {
                    return self.refuse(&run, format!("cannot read the data file cache: {e}"));
                }
            }
        }
        self.spawn_worker(run, plan, spec, share, wasm.to_vec(), data);
    }

    /// A module by name: from memory, else from the data dir (read and
    /// checked once, then kept in memory: peers ask for it while a run
    /// starts, and the event loop must not read 64 MiB each time).
    fn module(&mut self, sha256: &str) -> Result<Option<Arc<Vec<u8>>>, crate::store::StoreError> {
        self.cached(sha256, ModuleStore::get)
    }

    /// A data file by name, as [`Self::module`] reads a module.
    fn data_file(
        &mut self,
        sha256: &str,
    ) -> Result<Option<Arc<Vec<u8>>>, crate::store::StoreError> {
        self.cached(sha256, ModuleStore::get_data)
    }

    fn cached(
        &mut self,
        sha256: &str,
        read: impl FnOnce(&ModuleStore, &str) -> Result<Option<Vec<u8>>, crate::store::StoreError>,
    ) -> Result<Option<Arc<Vec<u8>>>, crate::store::StoreError> {
        if let Some((_, bytes)) = self.runs.module_cache.iter().find(|(s, _)| s == sha256) {
            return Ok(Some(bytes.clone()));
        }
        let Some(bytes) = read(&self.runs.modules, sha256)? else {
            return Ok(None);
        };
        let bytes = Arc::new(bytes);
        self.cache_module(sha256, bytes.clone());
        Ok(Some(bytes))
    }

    /// Keeps `bytes` in memory, newest last: room for two runs' module
    /// and data files, by count and by size, so that serving a run's files
    /// to its peers does not read them from disk again and again.
    fn cache_module(&mut self, sha256: &str, bytes: Arc<Vec<u8>>) {
        const KEEP: usize = 2 * (1 + crate::core::data::MAX_DATA_SETS);
        const KEEP_BYTES: usize = 2 * (MAX_MODULE_BYTES + crate::core::data::MAX_DATA_BYTES);
        for channel in self.runs.module_asks.arrived(sha256) {
            let response = Response::Module {
                bytes: bytes.to_vec(),
            };
            let _ = self
                .swarm
                .behaviour_mut()
                .rpc
                .send_response(channel, response);
        }
        let cache = &mut self.runs.module_cache;
        cache.retain(|(s, _)| s != sha256);
        cache.push((sha256.to_owned(), bytes));
        while cache.len() > KEEP
            || (cache.len() > 1 && cache.iter().map(|(_, b)| b.len()).sum::<usize>() > KEEP_BYTES)
        {
            cache.remove(0);
        }
    }

    fn refuse(&mut self, run: &str, reason: String) {
        let at = self.at();
        self.core.refused(run, reason, at);
        self.flush_core();
    }

    /// After an ask that brought no file (or to begin): what the fetch
    /// does next.
    fn fetch_next(&mut self, mut fetch: Fetch, problem: Option<String>) {
        let step = fetch.files.next(problem);
        self.fetch_step(fetch, step);
    }

    /// Carries out a fetch's step: asks a peer, waits for the next round,
    /// hands the share to a worker, or refuses the run.
    fn fetch_step(&mut self, mut fetch: Fetch, mut step: FetchStep) {
        loop {
            match step {
                FetchStep::Ask(peer) => {
                    let Ok(peer_id) = peer.parse::<PeerId>() else {
                        step = fetch.files.next(Some(format!("{peer} is not a peer id")));
                        continue;
                    };
                    let sha256 = fetch.files.asked().unwrap_or_default().to_owned();
                    let id = self.ask(peer_id, Request::Module { sha256 });
                    debug!(run = %fetch.run, %peer, "fetching {}", fetch.what());
                    self.runs.fetches.insert(id, fetch);
                }
                FetchStep::Wait => {
                    let due = self.now() + ROUND_EVERY;
                    self.runs.retries.push((due, fetch));
                }
                FetchStep::Done => {
                    let Fetch {
                        run,
                        plan,
                        spec,
                        share,
                        ..
                    } = fetch;
                    self.spawn_ready(run, plan, *spec, share);
                }
                FetchStep::GiveUp { tried, problem } => {
                    let reason = format!(
                        "cannot fetch {} {} from {}{}",
                        fetch.what(),
                        fetch.files.asked().unwrap_or(""),
                        if tried.is_empty() {
                            "any node (none has it)".to_owned()
                        } else {
                            tried.join(", ")
                        },
                        problem.map(|p| format!(": {p}")).unwrap_or_default()
                    );
                    let run = fetch.run.clone();
                    self.refuse(&run, reason);
                }
            }
            return;
        }
    }

    fn spawn_worker(
        &mut self,
        run: String,
        plan: PlanId,
        spec: RunSpec,
        share: Share,
        wasm: Vec<u8>,
        data: Vec<Arc<Vec<u8>>>,
    ) {
        let settings = match self.client_settings(&spec) {
            Ok(s) => s,
            Err(e) => {
                self.refuse(&run, e);
                return;
            }
        };
        // Others can take the share over only in a run of two nodes or
        // more that redistributes: then a freeze fences it.
        let fence = spec.on_loss == OnLoss::Redistribute
            && self
                .core
                .runs()
                .get(&run)
                .and_then(|r| r.plan.as_ref())
                .is_some_and(|p| p.shares.len() > 1);
        let handle = worker::spawn(
            ShareJob {
                plan,
                spec,
                share,
                name: self.config.name.clone(),
                region: self.config.region.clone(),
                wasm,
                data,
                settings,
                fence,
            },
            self.runs.events.clone(),
        );
        self.runs.started.remove(&run);
        self.runs.workers.insert(run, (plan, handle));
    }

    /// The HTTP client settings of this node's VUs for `spec`.
    fn client_settings(&self, spec: &RunSpec) -> Result<ClientSettings, String> {
        ClientSettings::new(spec.insecure_skip_tls_verify)
            .map(|s| {
                s.with_source_ip(self.runs.source_ip)
                    .with_allow(self.runs.allow.clone())
            })
            .map_err(|e| format!("TLS setup failed: {e}"))
    }

    /// Runs the `setup` of a run submitted here, once, off the event loop
    /// ([`worker::run_setup`]); the submission goes on when it is done
    /// ([`WorkerEvent::SetupRan`]), with what it returned in the spec.
    fn setup_then_submit(
        &mut self,
        req: Box<SubmitRequest>,
        reply: tokio::sync::oneshot::Sender<Result<SubmitView, String>>,
    ) {
        let settings = match self.client_settings(&req.spec) {
            Ok(s) => s,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        let events = self.runs.events.clone();
        tokio::spawn(async move {
            let files = req.data.iter().map(|b| Arc::new(b.to_vec())).collect();
            let limit = req.spec.iteration_timeout.min(SETUP_LIMIT);
            let outcome = tokio::time::timeout(
                limit,
                worker::run_setup(req.module.clone(), &req.spec, files, settings),
            )
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "the scenario's `setup` did not finish within {} s",
                    limit.as_secs()
                ))
            });
            let _ = events.send(WorkerEvent::SetupRan {
                request: req,
                outcome,
                reply,
            });
        });
    }

    /// Whether a response belongs to a module fetch; if so, it is handled.
    pub(super) fn on_module_response(
        &mut self,
        request_id: OutboundRequestId,
        peer: PeerId,
        response: Response,
    ) -> Option<Response> {
        let Some(fetch) = self.runs.fetches.remove(&request_id) else {
            return Some(response);
        };
        let asked = fetch.files.asked().unwrap_or_default().to_owned();
        match response {
            Response::Module { bytes } if sha256_hex(&bytes) == asked => {
                let what = fetch.what();
                let kept = if asked == fetch.spec.module_sha256 {
                    self.runs.modules.put(&bytes)
                } else {
                    self.runs.modules.put_data(&bytes)
                };
                if let Err(e) = kept {
                    warn!("cannot cache {what} {asked}: {e}");
                }
                info!(run = %fetch.run, %peer, "{what} fetched ({} bytes)", bytes.len());
                self.cache_module(&asked, Arc::new(bytes));
                let mut fetch = fetch;
                // Still wanted? A stop or a new plan may have come meanwhile.
                if self.core.runs().wants(&fetch.run, fetch.plan) {
                    let step = fetch
                        .files
                        .arrived(self.core.runs().module_sources(&fetch.run));
                    self.fetch_step(fetch, step);
                }
            }
            Response::Module { .. } if !self.core.runs().wants(&fetch.run, fetch.plan) => {}
            Response::Module { .. } => {
                self.warn_once(format!("module-hash:{peer}"), || {
                    format!("{peer} sent a module whose sha256 is not the one asked for; trying another node")
                });
                self.fetch_next(fetch, Some(format!("{peer} sent other bytes")));
            }
            Response::Refused { reason } if self.core.runs().wants(&fetch.run, fetch.plan) => {
                self.fetch_next(fetch, Some(reason))
            }
            Response::Clock { .. }
            | Response::Kept
            | Response::Heard { .. }
            | Response::Shards { .. }
            | Response::Runs { .. }
            | Response::Run { .. }
            | Response::Members { .. }
                if self.core.runs().wants(&fetch.run, fetch.plan) =>
            {
                self.fetch_next(fetch, Some("another answer than a module".into()))
            }
            Response::Refused { .. }
            | Response::Clock { .. }
            | Response::Kept
            | Response::Heard { .. }
            | Response::Shards { .. }
            | Response::Runs { .. }
            | Response::Run { .. }
            | Response::Members { .. } => {}
        }
        None
    }

    /// A module fetch failed on the way.
    pub(super) fn on_fetch_failure(
        &mut self,
        request_id: OutboundRequestId,
        error: String,
    ) -> bool {
        match self.runs.fetches.remove(&request_id) {
            Some(fetch) => {
                self.fetch_next(fetch, Some(error));
                true
            }
            None => false,
        }
    }

    /// Answers a module request from a member.
    pub(super) fn answer_module(
        &mut self,
        peer: PeerId,
        sha256: &str,
        channel: ResponseChannel<Response>,
    ) {
        let response = if !self.core.mesh().may_answer_clock(&peer.to_string()) {
            Response::Refused {
                reason: "not a member yet".into(),
            }
        } else {
            match self.module(sha256).and_then(|m| match m {
                Some(m) => Ok(Some(m)),
                None => self.data_file(sha256),
            }) {
                Ok(Some(bytes)) => Response::Module {
                    bytes: bytes.to_vec(),
                },
                Ok(None) => {
                    // Its fetch, or the plan that starts it, may be on the
                    // way: answer when the module is here.
                    let now = self.now();
                    match self.runs.module_asks.keep(sha256, channel, now) {
                        Ok(()) => return,
                        Err(channel) => {
                            let response = Response::Refused {
                                reason: format!("no module {sha256} here, and too many asks wait"),
                            };
                            let _ = self
                                .swarm
                                .behaviour_mut()
                                .rpc
                                .send_response(channel, response);
                            return;
                        }
                    }
                }
                Err(e) => Response::Refused {
                    reason: e.to_string(),
                },
            }
        };
        let _ = self
            .swarm
            .behaviour_mut()
            .rpc
            .send_response(channel, response);
    }

    /// Whether a worker's word is about the share this node runs now (a
    /// worker of an older plan may still be winding down).
    fn current(&self, run: &str, plan: PlanId) -> bool {
        self.runs.workers.get(run).is_some_and(|(p, _)| *p == plan)
    }

    pub(super) fn on_worker(&mut self, event: WorkerEvent) {
        let at = self.at();
        match event {
            WorkerEvent::Prepared { run, plan } => {
                self.core.prepared(&run, plan, at);
                self.flush_core();
            }
            WorkerEvent::Failed { run, plan, reason } => {
                if !self.current(&run, plan) {
                    return;
                }
                warn!(run = %run, "this node cannot run its share: {reason}");
                self.runs.workers.remove(&run);
                self.refuse(&run, reason);
            }
            WorkerEvent::Started {
                run,
                plan,
                wall_ns,
                at: started_at,
            } => {
                if !self.current(&run, plan) {
                    return;
                }
                let mono = self.monotonic(started_at);
                self.core.started(&run, wall_ns, mono);
                self.flush_core();
            }
            WorkerEvent::Shard(shard) => {
                let bytes = match self.signer.sign_shard(&shard.encode()) {
                    Ok(bytes) => bytes,
                    Err(e) => {
                        self.warn_once(format!("sign-shard:{}", shard.run_id), || {
                            format!("cannot sign a shard of run {}: {e}", shard.run_id)
                        });
                        return;
                    }
                };
                if bytes.len() > MAX_SENT_SHARD_BYTES {
                    self.warn_once(format!("shard-size:{}", shard.run_id), || {
                        format!(
                            "a shard of run {} is {} bytes, over the {MAX_SENT_SHARD_BYTES}-byte limit; \
                             it is kept here but not sent (too many tagged series)",
                            shard.run_id,
                            bytes.len()
                        )
                    });
                } else {
                    self.send_shard(&shard.run_id, &bytes);
                }
                match SparseShard::decode(&bytes) {
                    Ok(decoded) => {
                        self.keep_shard(decoded, &bytes);
                    }
                    Err(e) => self.warn_once(format!("own-shard:{}", shard.run_id), || {
                        format!("a shard of run {} does not decode: {e}", shard.run_id)
                    }),
                }
            }
            WorkerEvent::SetupRan {
                mut request,
                outcome,
                reply,
            } => {
                let answer = outcome.and_then(|data| {
                    request.spec.setup_ran = true;
                    request.spec.setup_data = data.map(serde_bytes::ByteBuf::from);
                    request.spec.validate().map_err(|e| e.to_string())?;
                    self.submit(*request)
                });
                let _ = reply.send(answer);
            }
            WorkerEvent::Finished {
                run,
                plan,
                shards,
                fenced,
            } => {
                if !self.current(&run, plan) {
                    return;
                }
                info!(run = %run, fenced, "share done ({shards} shards)");
                self.runs.workers.remove(&run);
                self.runs.started.remove(&run);
                let now = self.at().now;
                self.core.finished(&run, shards, fenced, now);
                self.flush_core();
            }
        }
    }

    /// Sends a shard of this node's to the run's leader and the node next
    /// in line, as the core says (none once the run ended: anti-entropy
    /// spreads every shard then). Not retried: a shard the leader missed
    /// reaches it with the rest.
    fn send_shard(&mut self, run: &str, bytes: &[u8]) {
        let at = self.at();
        for to in self.core.runs().shard_to(run, &self.core.view(at.now)) {
            let Ok(peer) = to.parse::<PeerId>() else {
                continue;
            };
            self.ask(
                peer,
                Request::Shard {
                    shard: serde_bytes::ByteBuf::from(bytes.to_vec()),
                },
            );
        }
    }

    /// A shard a worker sent this node, its run's leader or the node next
    /// in line: kept if it is that node's own, signed by it, of a run it
    /// takes part in.
    pub(super) fn take_sent_shard(
        &mut self,
        peer: PeerId,
        bytes: &[u8],
        channel: ResponseChannel<Response>,
    ) {
        let from = peer.to_string();
        let problem = match SparseShard::decode(bytes) {
            Err(e) => Err(e.to_string()),
            Ok(shard) if shard.head.node != from => {
                Err(format!("it claims to be from {}", shard.head.node))
            }
            Ok(shard) => crate::net::sign::verify_shard(bytes, &shard.head.node)
                .map_err(|e| e.to_string())
                .and_then(|()| self.shard_problem(&shard.head))
                .map(|()| shard),
        };
        let response = match problem {
            Ok(shard) => {
                self.keep_shard(shard, bytes);
                Response::Kept
            }
            Err(reason) => {
                self.warn_once(format!("sent-shard:{from}"), || {
                    format!("refused a shard {from} sent: {reason}")
                });
                Response::Refused { reason }
            }
        };
        let _ = self
            .swarm
            .behaviour_mut()
            .rpc
            .send_response(channel, response);
    }

    /// Answers a member's ask about a run its `held` named: what this node
    /// holds of it, its own leader's messages signed as a publish is.
    pub(super) fn answer_run(
        &mut self,
        peer: PeerId,
        run: &str,
        known: bool,
        channel: ResponseChannel<Response>,
    ) {
        let at = self.at();
        let asker = peer.to_string();
        let response = if self.core.mesh().region_of(&asker).is_none() {
            Response::Refused {
                reason: "not a member here yet".into(),
            }
        } else if let Err(reason) = self.core.runs_mut().may_answer_run(&asker, run, at.now) {
            Response::Refused { reason }
        } else {
            let mut messages = Vec::new();
            for mut env in self.core.runs_mut().answer_run(&asker, run, known, at) {
                if env.is_leaders()
                    && env.sig.is_none()
                    && let Err(e) = self.signer.sign_run(&mut env)
                {
                    self.warn_once("sign-run".into(), || {
                        format!("cannot sign a run message: {e}")
                    });
                    continue;
                }
                messages.push(serde_bytes::ByteBuf::from(wire::encode(&env)));
            }
            Response::Run { messages }
        };
        let _ = self
            .swarm
            .behaviour_mut()
            .rpc
            .send_response(channel, response);
    }

    /// The answer to an ask about a run: each message is taken as if `peer`
    /// had gossiped it (decoded, its signature checked).
    pub(super) fn take_run_answer(&mut self, peer: PeerId, messages: &[serde_bytes::ByteBuf]) {
        for bytes in messages {
            let env = wire::decode_run(bytes)
                .map_err(|e| e.to_string())
                .and_then(|env| {
                    crate::net::sign::verify_run(&env)
                        .map(|()| env)
                        .map_err(|e| e.to_string())
                });
            match env {
                Ok(env) => self.on_run_message(peer, peer, env),
                Err(e) => self.warn_once(format!("run-answer:{peer}"), || {
                    format!("refused a run message {peer} answered with: {e}")
                }),
            }
        }
    }

    /// A word a node of a run told this node, as its leader or the node
    /// next in line: a `ready`, a `started` or a `done`, from the sender
    /// itself (the connection's peer); or a proposal this node asked the
    /// sender about before the sender had it (`RunsCore::answer_run`),
    /// taken as from an answer. Anything else goes by gossip and is
    /// refused.
    pub(super) fn take_word(
        &mut self,
        peer: PeerId,
        bytes: &[u8],
        channel: ResponseChannel<Response>,
    ) {
        let from = peer.to_string();
        let problem = match wire::decode_run(bytes) {
            Err(e) => Some(e.to_string()),
            Ok(env)
                if !env.is_word()
                    && !matches!(
                        env.body,
                        wire::RunMessage::Propose(_) | wire::RunMessage::Finish(_)
                    ) =>
            {
                Some(
                    "only a ready, a started, a done, a proposal or a finish is told directly; \
                     the rest goes by gossip"
                        .into(),
                )
            }
            Ok(env) if let Err(e) = crate::net::sign::verify_run(&env) => Some(e.to_string()),
            Ok(env) => {
                let at = self.at();
                let problem = match self.core.runs_mut().on_message(&from, env, at) {
                    Ok(_) => None,
                    Err(e) => Some(e.to_string()),
                };
                // A proposal this node kept asks for goes on to them.
                for action in self.core.runs_mut().take_refusals() {
                    self.run_action(action);
                }
                problem
            }
        };
        let response = match problem {
            None => Response::Kept,
            Some(reason) => {
                debug!(%peer, "refused a word: {reason}");
                Response::Refused { reason }
            }
        };
        let _ = self
            .swarm
            .behaviour_mut()
            .rpc
            .send_response(channel, response);
    }

    /// Stores and merges a shard; returns whether it was new here.
    pub(super) fn keep_shard(&mut self, shard: SparseShard, bytes: &[u8]) -> bool {
        let id = shard.head.run_id.clone();
        if self.runs.stored.get(&id).is_some_and(|s| {
            s.held()
                .contains(&(shard.head.node.clone(), shard.head.seq))
        }) {
            return false;
        }
        if !self.report_mut(&id).add_sparse(&shard) {
            return false;
        }
        if let Err(e) = self.runs.store.save_shard(&shard.head, bytes) {
            self.unsaved_shard(&shard.head, bytes, e);
        }
        self.runs.decoded.keep(shard);
        self.judge_aborts(&id);
        true
    }

    /// A shard the data dir could not take: named in the log (once per
    /// run) and the run's status, and kept in memory to store again.
    fn unsaved_shard(&mut self, shard: &Shard, bytes: &[u8], e: StoreError) {
        let id = &shard.run_id;
        self.warn_once(format!("save-shard:{id}"), || {
            format!(
                "cannot store a shard of run {id}: {e}; it waits in memory and is stored \
                 once the data dir has room"
            )
        });
        let keep = self.runs.unsaved_bytes + bytes.len() <= MAX_UNSAVED_BYTES;
        if !keep {
            self.warn_once(format!("unsaved-full:{id}"), || {
                format!(
                    "over {} MiB of shards wait for room in the data dir: shards of run {id} \
                     are no longer kept, and this node's report of it will miss them",
                    MAX_UNSAVED_BYTES >> 20
                )
            });
        }
        let problem = self.runs.storage.entry(id.clone()).or_default();
        problem.error = Some(e.to_string());
        if keep {
            self.runs.unsaved_bytes += bytes.len();
            self.runs
                .unsaved
                .entry(id.clone())
                .or_default()
                .push(Unsaved {
                    node: shard.node.clone(),
                    seq: shard.seq,
                    bytes: bytes.to_vec(),
                });
        } else {
            problem.lost += 1;
        }
    }

    /// A run's merged shards, to add to: a run restored from the data dir
    /// has its stored shards read first.
    fn report_mut(&mut self, id: &str) -> &mut Report {
        if self.runs.stored.remove(id).is_some() {
            let report = self.read_report(id);
            debug!(run = %id, "read the stored shards of run {id}");
            self.runs.reports.insert(id.to_owned(), report);
        } else if !self.runs.reports.contains_key(id) {
            self.runs.decoded.begin(id);
        }
        self.runs
            .reports
            .entry(id.to_owned())
            .or_insert_with(|| Report::new(id))
    }

    /// A run's shards, as stored, merged, and kept decoded (on the event
    /// loop: a run is read once, when it is first needed after a restart).
    fn read_report(&mut self, id: &str) -> Report {
        let mut report = Report::new(id);
        let decoded = &mut self.runs.decoded;
        decoded.begin(id);
        let problems = self.runs.store.each_sparse_shard(id, |s| {
            report.add_sparse(&s);
            decoded.keep(s);
        });
        for problem in problems {
            warn!(run = %id, "a stored shard was skipped: {problem}");
        }
        report
    }

    /// Stops a run on every node once one of its `abortOnFail` thresholds
    /// fails on the measurements merged here. The run's leader judges (the
    /// shards come to it while the run goes), at most once a second; a
    /// stop heard twice changes nothing.
    fn judge_aborts(&mut self, id: &str) {
        let now = self.at().now;
        if !self.core.runs().judges_aborts(id, &self.core.view(now)) {
            return;
        }
        let Some(run) = self.core.runs().get(id) else {
            return;
        };
        if self
            .runs
            .abort_checked
            .get(id)
            .is_some_and(|last| now.saturating_sub(*last) < Duration::from_secs(1))
        {
            return;
        }
        self.runs.abort_checked.insert(id.to_owned(), now);
        let thresholds: Vec<_> = parse_all(&run.proposal.spec.thresholds)
            .unwrap_or_default()
            .into_iter()
            .filter(|t| t.abort_on_fail)
            .collect();
        let Some(report) = self.runs.reports.get(id) else {
            return;
        };
        if let Some(failed) = abort_verdict(&thresholds, report) {
            warn!(
                run = %id,
                "threshold `{}` failed (observed {:?}, abortOnFail): stopping the run on every node",
                failed.threshold,
                failed.observed
            );
            if let Err(e) = self.stop_run(id, Some(failed.threshold)) {
                debug!(run = %id, "abort: {e}");
            }
        }
    }

    /// A run message from `source` (gossip's signed author).
    pub(super) fn on_run_message(&mut self, source: PeerId, via: PeerId, env: RunEnvelope) {
        let at = self.at();
        let from = source.to_string();
        let via = via.to_string();
        let kind = match &env.body {
            wire::RunMessage::Propose(_) => "propose",
            _ => "other",
        };
        match self.core.on_run_gossip(&from, &via, env, at) {
            Ok(_) | Err(RunRefused::UnknownRun) => {}
            Err(e @ (RunRefused::NotLeader(_) | RunRefused::OtherMembers)) => {
                debug!("run message from {from} not obeyed: {e}")
            }
            Err(e) => self.warn_once(format!("run:{from}:{kind}"), || {
                format!("refused a run message from {from}: {e}")
            }),
        }
        // An ask after a `held` goes out at once, not at the next tick.
        for action in self.core.runs_mut().take_refusals() {
            self.run_action(action);
        }
    }

    /// Why a shard, sent by a worker or in a peer's answer, cannot be kept.
    pub(super) fn shard_problem(&self, shard: &Shard) -> Result<(), String> {
        match self.core.runs().get(&shard.run_id) {
            None => Err(format!("run {} is unknown here", shard.run_id)),
            Some(run) => run.check_shard(shard),
        }
    }

    /// Submits a run from the API.
    pub(super) fn submit(&mut self, req: SubmitRequest) -> Result<SubmitView, String> {
        let sha = self
            .runs
            .modules
            .put(&req.module)
            .map_err(|e| format!("cannot keep the module: {e}"))?;
        if sha != req.spec.module_sha256 {
            return Err("the module's sha256 does not match the spec".into());
        }
        self.cache_module(&sha, Arc::new(req.module));
        for (set, bytes) in req.spec.data.iter().zip(req.data) {
            self.runs
                .modules
                .put_data(&bytes)
                .map_err(|e| format!("cannot keep the data file of {}: {e}", set.name))?;
            self.cache_module(&set.sha256, Arc::new(bytes.into_vec()));
        }
        let at = self.at();
        let id = new_run_id();
        self.core
            .submit(id.clone(), req.spec, req.weights, req.nodes, at)?;
        info!(run = %id, "run {id} submitted here");
        self.flush_core();
        Ok(SubmitView { run_id: id })
    }

    pub(super) fn stop_run(&mut self, id: &str, reason: Option<String>) -> Result<RunView, String> {
        let at = self.at();
        self.core.stop(id, reason, at)?;
        info!(run = %id, "stop asked here");
        self.flush_core();
        self.run_view(id).ok_or_else(|| format!("no run {id}"))
    }

    pub(super) fn runs_view(&self) -> RunsView {
        RunsView {
            runs: self
                .core
                .runs()
                .all()
                .into_iter()
                .filter_map(|r| self.run_view(&r.id))
                .collect(),
        }
    }

    /// Takes an ended run a member told of; it is stored like any other.
    pub(super) fn adopt_run(&mut self, ended: EndedRun, at: At) -> Result<bool, String> {
        let env = RunEnvelope {
            protocol: wire::RUN_PROTOCOL,
            run: ended.id.clone(),
            body: wire::RunMessage::Finish(ended.finish.clone()),
            sig: ended.finish_sig.clone(),
        };
        crate::net::sign::verify_run(&env).map_err(|e| format!("its finish: {e}"))?;
        self.core.runs_mut().adopt(ended, at)
    }

    /// The shards this node holds of a run: `(node, seq)`.
    pub(super) fn runs_held(&self, id: &str) -> Option<&BTreeSet<(String, u64)>> {
        match self.runs.reports.get(id) {
            Some(report) => Some(report.held()),
            None => self.runs.stored.get(id).map(StoredShards::held),
        }
    }

    /// Where runs and shards are stored.
    pub(super) fn runs_store(&self) -> RunStore {
        self.runs.store.clone()
    }

    /// What the API server builds a run's report from.
    pub(super) fn report_source(&self, id: &str) -> Option<ReportSource> {
        let run = self.core.runs().get(id)?;
        Some(ReportSource {
            store: self.runs.store.clone(),
            run_id: id.to_owned(),
            meta: run.report_meta(),
            decoded: self.runs.decoded.all_of(id),
            unsaved: self
                .runs
                .unsaved
                .get(id)
                .map(|w| w.iter().map(|u| u.bytes.clone()).collect())
                .unwrap_or_default(),
        })
    }

    /// A run's shards merged so far; a run restored from the data dir is
    /// read once, and kept. `None` before its first shard.
    pub(super) fn merged(&mut self, id: &str) -> Option<&Report> {
        if self.runs.stored.contains_key(id) {
            self.report_mut(id);
        }
        self.runs.reports.get(id)
    }

    /// A run's progress. While the run goes, its shards go to its leader:
    /// the leader shows what it merged, another node what the leader last
    /// sent (or, before that, its own shards). Once the run ended, every
    /// node shows what it merged.
    pub(super) fn live_view(&self, id: &str) -> Option<LiveView> {
        let run = self.run_view(id)?;
        let core_run = self.core.runs().get(id)?;
        let leads = run.leader.as_deref() == Some(self.peer_id.to_string().as_str());
        let mut scopes = match &core_run.live {
            Some(live) if !leads && !core_run.is_finished() => live.scopes.clone(),
            _ => self.runs.reports.get(id).unwrap_or(&Report::new(id)).live(),
        };
        let regions = scopes.split_off(1.min(scopes.len()));
        let total = scopes
            .pop()
            .unwrap_or_else(|| Report::new(id).live().remove(0));
        Some(LiveView {
            total,
            regions,
            run,
        })
    }

    fn name_of(&self, id: &str) -> String {
        if id == self.core.mesh().me().id {
            return self.core.mesh().me().name.clone();
        }
        match self.core.mesh().member(id) {
            Some(m) => m.heartbeat.name.clone(),
            None => id
                .chars()
                .rev()
                .take(8)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect(),
        }
    }

    pub(super) fn run_view(&self, id: &str) -> Option<RunView> {
        let run = self.core.runs().get(id)?;
        let at = self.at();
        let phase = run.phase(at, &self.core.view(at.now));
        let reason = run.finish.as_ref().and_then(|f| match &f.outcome {
            Outcome::Complete => None,
            Outcome::Stopped { reason: None, .. }
                if !f.lost.is_empty() && run.proposal.spec.on_loss == OnLoss::Abort =>
            {
                let lost: Vec<String> = f.lost.iter().map(|n| self.name_of(n)).collect();
                Some(format!(
                    "{} lost while the run ran (--on-loss abort)",
                    lost.join(", ")
                ))
            }
            Outcome::Stopped { by, reason: None } => {
                Some(format!("stopped through {}", self.name_of(by)))
            }
            Outcome::Stopped {
                by,
                reason: Some(threshold),
            } => Some(format!(
                "stopped through {}: threshold `{threshold}` failed (abortOnFail)",
                self.name_of(by)
            )),
            Outcome::Failed { reason } => Some(reason.clone()),
        });
        let max_vus = u64::from(run.proposal.spec.max_vus());
        let lost = run.lost(&self.core.view(at.now));
        let t0 = run.armed.as_ref().map(|a| a.t0_ns);
        let node_view = |id: &str, segment: Option<crate::core::segment::ExecutionSegment>| {
            let region = run
                .proposal
                .candidates
                .iter()
                .find(|c| c.id == id)
                .map(|c| c.region.clone())
                .unwrap_or_default();
            let started = run.started.get(id);
            let done = run.done.get(id);
            // While the run goes, a node other than the leader holds its
            // own words only, and the others' as the leader's `live` says.
            let (heard_started, heard_done) = run.heard_of(id);
            let state = if lost.iter().any(|l| l == id) {
                "lost"
            } else if let Some((_, true)) = done {
                "interrupted"
            } else if heard_done {
                "done"
            } else if heard_started {
                "started"
            } else if run.refused.contains_key(id) {
                "refused"
            } else if segment.is_some() && run.ready.contains_key(id) {
                "ready"
            } else if segment.is_some() {
                "assigned"
            } else {
                "candidate"
            };
            RunNodeView {
                id: id.to_owned(),
                name: self.name_of(id),
                region,
                segment: segment.map(|s| s.bounds()),
                vus: segment.map(|s| s.scale(max_vus)).unwrap_or(0),
                state: state.to_owned(),
                refused: run.refused.get(id).cloned(),
                start_offset_ms: started
                    .zip(t0)
                    .map(|((at, _), t0)| at.saturating_sub(t0) as f64 / 1e6),
                bound_ms: started.map(|(_, b)| *b as f64 / 1e6),
                shards: done.map(|(s, _)| *s),
            }
        };
        let mut nodes: Vec<RunNodeView> = match &run.plan {
            Some(plan) => plan
                .shares
                .iter()
                .map(|s| node_view(&s.node, Some(s.segment)))
                .collect(),
            None => run
                .proposal
                .candidates
                .iter()
                .map(|c| node_view(&c.id, None))
                .collect(),
        };
        if run.plan.is_some() {
            for refused in run.refused.keys() {
                if !nodes.iter().any(|n| n.id == *refused) {
                    nodes.push(node_view(refused, None));
                }
            }
        }
        let storage_error = self.runs.storage.get(id).map(|p| {
            let me = &self.core.mesh().me().name;
            let waiting = self.runs.unsaved.get(id).map_or(0, Vec::len);
            let mut text = match &p.error {
                Some(e) => format!(
                    "{me} cannot store this run in its data dir: {e}; {waiting} shards wait in \
                     memory and are stored once there is room"
                ),
                None => format!("{me} ran out of room in its data dir"),
            };
            if p.lost > 0 {
                text.push_str(&format!(
                    "; {} shards were not kept and are missing from {me}'s report",
                    p.lost
                ));
            }
            text
        });
        let (skew, bound) = run
            .start_skew()
            .map(|(s, b)| (Some(s as f64 / 1e6), Some(b as f64 / 1e6)))
            .unwrap_or((None, None));
        Some(RunView {
            id: run.id.clone(),
            phase: phase.name().to_owned(),
            reason,
            executor: run.proposal.spec.executor_name(),
            module_sha256: run.proposal.spec.module_sha256.clone(),
            scenario: run.proposal.spec.scenario.clone(),
            proposer: run.proposer.clone(),
            leader: run.leader(&self.core.view(at.now)),
            term: run.term,
            weights: run.proposal.weights.as_ref().map(|ws| {
                ws.iter()
                    .map(|w| format!("{}={}", w.region, w.weight))
                    .collect::<Vec<_>>()
                    .join(",")
            }),
            t0_unix_ms: t0.map(|t| t as f64 / 1e6),
            elapsed_s: run.since_t0(at, &self.core.view(at.now)),
            duration_s: run.proposal.spec.duration().as_secs_f64(),
            start_skew_ms: skew,
            clock_bound_ms: bound,
            storage_error,
            nodes,
        })
    }

    /// Answers the API's run queries.
    pub(super) fn answer_runs(&mut self, query: crate::api::Query) {
        use crate::api::Query;
        match query {
            Query::Submit(req, has_setup, reply) => {
                if has_setup && !req.spec.setup_ran {
                    self.setup_then_submit(req, reply);
                } else {
                    let _ = reply.send(self.submit(*req));
                }
            }
            Query::Runs(reply) => {
                let _ = reply.send(self.runs_view());
            }
            Query::Run(id, reply) => {
                let _ = reply.send(self.run_view(&id));
            }
            Query::Stop(id, reply) => {
                let _ = reply.send(self.stop_run(&id, None));
            }
            Query::Report(id, reply) => {
                let _ = reply.send(self.report_source(&id));
            }
            Query::Live(id, reply) => {
                // A run restored from the data dir is read once, and kept.
                if self.runs.stored.contains_key(&id) {
                    self.report_mut(&id);
                }
                let _ = reply.send(self.live_view(&id));
            }
            Query::Status(_) | Query::Peers(_) => {}
        }
    }
}
