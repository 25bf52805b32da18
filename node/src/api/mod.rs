//! The local API of a running node: HTTP and JSON, for the CLI on the same
//! host and for the node's live dashboard ([`dashboard`]).
//!
//! It binds loopback only. It refuses every request that carries an
//! `Origin` header (browsers add one to cross-origin requests) or whose
//! `Host` is not a loopback address or `localhost` (DNS rebinding), and
//! every request without the node's [`token::ApiToken`] as
//! `Authorization: Bearer HEX` but the challenge ([`server`] says how).
//! Routes:
//!
//! - `GET /v1/hello?nonce=HEX`: the challenge, the one route without a
//!   token: the node proves it knows the token ([`HelloView`]), before the
//!   client sends it;
//! - `GET /v1/status`: this node ([`StatusView`]);
//! - `GET /v1/peers`: the other members, as this node sees them
//!   ([`PeersView`]);
//! - `POST /v1/runs`: submit a run ([`SubmitRequest`], CBOR, because it
//!   carries the scenario module; `Content-Type: application/cbor`),
//!   answered with a [`SubmitView`];
//! - `GET /v1/runs`: the runs this node knows ([`RunsView`]);
//! - `GET /v1/runs/{id}`: one run, its nodes and their shares ([`RunView`]);
//! - `POST /v1/runs/{id}/stop`: stop a run on every node;
//! - `GET /v1/runs/{id}/report`: the run's full report ([`RunReport`], JSON),
//!   merged from the shards the node holds, byte-identical on every node
//!   holding the same shards;
//! - `GET /v1/runs/{id}/live`: the latest interval per region, for live
//!   progress ([`LiveView`]);
//! - `GET /v1/events[?run=ID]`: server-sent events for the dashboard
//!   ([`dashboard`]);
//! - `GET /` and `GET /ui/...`: the dashboard's page and scripts, embedded
//!   in the binary, the only routes besides the challenge without a token
//!   (they hold no data).
//!
//! The views are defined here once and used by both ends.

pub mod client;
pub mod dashboard;
pub mod server;
pub mod token;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::core::assign::RegionWeight;
use crate::core::report::Report;
use crate::core::run_report::{RunMeta, RunReport};
use crate::core::shard::SparseShard;
use crate::core::spec::RunSpec;
use crate::store::runs::RunStore;

/// The default API address.
pub const DEFAULT_API: &str = "127.0.0.1:7401";

/// The answer to the challenge `GET /v1/hello?nonce=HEX`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HelloView {
    /// [`token::ApiToken::proof`] of the nonce, in hex.
    pub proof: String,
}

/// This node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusView {
    /// Peer id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Region.
    pub region: String,
    /// Software version.
    pub version: String,
    /// Seconds since the node started.
    pub uptime_s: f64,
    /// Addresses it listens on.
    pub listen: Vec<String>,
    /// `private` (mesh key) or `open`.
    pub mesh: String,
    /// Fingerprint of the mesh key, to compare between hosts.
    pub key_fingerprint: Option<String>,
    /// Members known, this node not included.
    pub members: usize,
    /// Peers with an open connection.
    pub connected: usize,
    /// CPU cores.
    pub cores: u32,
    /// The most VUs it will run.
    pub vu_limit: u32,
    /// CPU use (1.0 = one core).
    pub cpu: f32,
    /// Open sockets.
    pub sockets: u32,
    /// Bytes sent on mesh connections since the node started (every
    /// protocol of the mesh, gossipsub's relaying included).
    #[serde(default)]
    pub mesh_bytes_sent: u64,
    /// Bytes received on mesh connections since the node started.
    #[serde(default)]
    pub mesh_bytes_received: u64,
    /// The latency emulation map, when the testnet turned it on.
    pub emulated_latency: Option<String>,
    /// The source address of load traffic, when set.
    pub source_ip: Option<String>,
    /// The data directory.
    pub data_dir: String,
}

/// One other member.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerView {
    /// Peer id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Region.
    pub region: String,
    /// Software version.
    pub version: String,
    /// Where it listens.
    pub addresses: Vec<String>,
    /// Whether a connection to it is open.
    pub connected: bool,
    /// Whether it missed its recent heartbeats.
    pub suspect: bool,
    /// Milliseconds since its last heartbeat.
    pub last_seen_ms: u64,
    /// Round trip of the latest clock exchange.
    pub rtt_ms: Option<f64>,
    /// Its clock minus ours (best recent sample).
    pub offset_ms: Option<f64>,
    /// The true offset lies within `offset_ms ± bound_ms`.
    pub bound_ms: Option<f64>,
    /// Clock samples behind the estimate.
    pub clock_samples: usize,
    /// CPU cores.
    pub cores: u32,
    /// The most VUs it will run.
    pub vu_limit: u32,
    /// CPU use (1.0 = one core).
    pub cpu: f32,
    /// Open sockets.
    pub sockets: u32,
}

/// The other members.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeersView {
    /// By peer id.
    pub peers: Vec<PeerView>,
}

/// A run submitted to a node (`POST /v1/runs`, CBOR).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubmitRequest {
    /// The run; its `module_sha256` may be empty (the node fills it in).
    pub spec: RunSpec,
    /// The scenario module.
    #[serde(with = "serde_bytes")]
    pub module: Vec<u8>,
    /// `--region` weights; `None` splits by capacity alone.
    pub weights: Option<Vec<RegionWeight>>,
    /// `--nodes`: at most this many nodes take part.
    pub nodes: Option<u32>,
    /// The bytes of the spec's data files (`--data`), in the spec's order.
    #[serde(default)]
    pub data: Vec<serde_bytes::ByteBuf>,
}

impl SubmitRequest {
    /// Decodes a `POST /v1/runs` body and checks its spec and thresholds:
    /// everything but the module, which the server compiles next. The error
    /// is the message of the 400 answer.
    pub fn decode(bytes: &[u8]) -> Result<SubmitRequest, String> {
        let request: SubmitRequest = ciborium::from_reader(bytes).map_err(|e| {
            format!(
                "the submission is not a CBOR SubmitRequest ({e}); submit with `fusi-node run` \
                 of the same version as the node"
            )
        })?;
        request.spec.validate().map_err(|e| e.to_string())?;
        crate::core::threshold::parse_all(&request.spec.thresholds).map_err(|e| e.to_string())?;
        if request.data.len() != request.spec.data.len() {
            return Err(format!(
                "the spec names {} data sets and the submission carries {} files",
                request.spec.data.len(),
                request.data.len()
            ));
        }
        for (set, bytes) in request.spec.data.iter().zip(&request.data) {
            if crate::core::module_name::sha256_hex(bytes) != set.sha256 {
                return Err(format!(
                    "the bytes of data set {} do not match its sha256",
                    set.name
                ));
            }
        }
        Ok(request)
    }
}

/// The answer to a submission.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubmitView {
    /// The new run's id.
    pub run_id: String,
}

/// One run, as this node knows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunView {
    /// The run id.
    pub id: String,
    /// `proposed`, `assigned`, `armed`, `running`, `complete`, `stopped` or `failed`.
    pub phase: String,
    /// Why it failed, or who stopped it.
    pub reason: Option<String>,
    /// The executor's name.
    pub executor: String,
    /// The scenario module's sha256.
    pub module_sha256: String,
    /// The scenario's file name, as submitted.
    #[serde(default)]
    pub scenario: String,
    /// The node the run was submitted to.
    pub proposer: String,
    /// The leader, as this node sees it, and its term.
    pub leader: Option<String>,
    /// The leader's term (its rank for this run).
    pub term: u32,
    /// `--region` weights, as given.
    pub weights: Option<String>,
    /// The start instant in the leader's clock, Unix milliseconds.
    pub t0_unix_ms: Option<f64>,
    /// Seconds since T0 (negative before it), in this node's clock.
    pub elapsed_s: Option<f64>,
    /// How long the executor runs (at most).
    pub duration_s: f64,
    /// The spread of the nodes' real starts, in the leader's clock.
    pub start_skew_ms: Option<f64>,
    /// The largest clock error bound among the nodes that started.
    pub clock_bound_ms: Option<f64>,
    /// Why the node answering cannot store the run in its data dir (a full
    /// disk, say), with the path and the OS error, and how many shards wait
    /// in memory; `None` while everything is stored.
    #[serde(default)]
    pub storage_error: Option<String>,
    /// The nodes taking part (after assignment), or the candidates (before).
    pub nodes: Vec<RunNodeView>,
}

/// One node of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunNodeView {
    /// Peer id.
    pub id: String,
    /// Name, when known.
    pub name: String,
    /// Region.
    pub region: String,
    /// Its fraction of the load, `[start, end)` of `[0, 1)`.
    pub segment: Option<(f64, f64)>,
    /// The VUs it runs at most.
    pub vus: u64,
    /// `candidate`, `assigned`, `ready`, `refused`, `started`, `done`, `interrupted` or `lost`.
    pub state: String,
    /// Why it refused.
    pub refused: Option<String>,
    /// When it really started, relative to T0, in the leader's clock.
    pub start_offset_ms: Option<f64>,
    /// The clock error bound of that start time.
    pub bound_ms: Option<f64>,
    /// Shards it said it sent (once done).
    pub shards: Option<u64>,
}

/// The runs a node knows, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunsView {
    /// The runs.
    pub runs: Vec<RunView>,
}

/// What a run's report is built from. The event loop hands it out; the
/// API server builds the report on a blocking thread, since it reads every
/// shard the node stored.
#[derive(Debug, Clone)]
pub struct ReportSource {
    /// Where the shards are.
    pub store: RunStore,
    /// The run.
    pub run_id: String,
    /// What the report needs besides the shards.
    pub meta: RunMeta,
    /// Every shard the node holds of the run, decoded, in the canonical
    /// order, when it kept them all (`net::runtime::decoded`): then the
    /// store and `unsaved` are not read.
    pub decoded: Option<Vec<Arc<SparseShard>>>,
    /// Shards the node holds in memory only, for want of room in its data
    /// dir.
    pub unsaved: Vec<Vec<u8>>,
}

impl ReportSource {
    /// Merges the run's shards: those kept decoded, or else those read
    /// from the store with those waiting in memory.
    pub fn build(self) -> RunReport {
        let mut report = Report::new(&self.run_id);
        if let Some(shards) = &self.decoded {
            for s in shards {
                report.add_sparse(s);
            }
            return RunReport::build(&report, &self.meta);
        }
        let key = |s: &SparseShard| (s.head.node.clone(), s.head.seq);
        // Newest last, so the first in order is popped first.
        let mut waiting: Vec<SparseShard> = self
            .unsaved
            .iter()
            .filter_map(|b| SparseShard::decode(b).ok())
            .collect();
        waiting.sort_by_key(|s| std::cmp::Reverse(key(s)));
        // Shards come in the canonical order of `Report::from_shards`, the
        // waiting ones among the stored.
        let problems = self.store.each_sparse_shard(&self.run_id, |s| {
            while let Some(w) = waiting.pop_if(|w| key(w) < key(&s)) {
                report.add_sparse(&w);
            }
            report.add_sparse(&s);
        });
        while let Some(w) = waiting.pop() {
            report.add_sparse(&w);
        }
        for problem in problems {
            tracing::warn!(run = %self.run_id, "a stored shard was skipped: {problem}");
        }
        RunReport::build(&report, &self.meta)
    }
}

/// A run's progress: its latest interval, for the run and per region.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveView {
    /// The run.
    pub run: RunView,
    /// Every region together.
    pub total: LivePart,
    /// Per region.
    pub regions: Vec<LivePart>,
}

/// One part of a run's progress: the wire's own, as the leader sends it.
pub use crate::core::wire::LiveScope as LivePart;

/// What the API asks of the node's event loop.
#[derive(Debug)]
pub enum Query {
    /// `GET /v1/status`.
    Status(oneshot::Sender<StatusView>),
    /// `GET /v1/peers`.
    Peers(oneshot::Sender<PeersView>),
    /// `POST /v1/runs`, after the module was checked to compile: its
    /// sha256 is in `spec.module_sha256`, and the flag says whether it has
    /// a `setup` (which the node runs before it proposes the run). An
    /// error names the problem.
    Submit(
        Box<SubmitRequest>,
        bool,
        oneshot::Sender<Result<SubmitView, String>>,
    ),
    /// `GET /v1/runs`.
    Runs(oneshot::Sender<RunsView>),
    /// `GET /v1/runs/{id}`; `None` for an unknown run.
    Run(String, oneshot::Sender<Option<RunView>>),
    /// `POST /v1/runs/{id}/stop`; an error names the problem.
    Stop(String, oneshot::Sender<Result<RunView, String>>),
    /// `GET /v1/runs/{id}/report`; `None` for an unknown run.
    Report(String, oneshot::Sender<Option<ReportSource>>),
    /// `GET /v1/runs/{id}/live`; `None` for an unknown run.
    Live(String, oneshot::Sender<Option<LiveView>>),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::metrics::{SeriesKey, SeriesSet, Value};
    use crate::core::shard::Shard;

    fn shard(node: &str, seq: u64) -> Shard {
        let mut series = SeriesSet::new();
        // A fractional counter: its sum depends on the order of merging.
        let _ = series.merge(
            &SeriesKey::new("fraction", []),
            &Value::Counter(0.1 * (seq + 1) as f64 + if node == "n1" { 0.7 } else { 0.3 }),
        );
        Shard {
            notes: Vec::new(),
            run_id: "r1".into(),
            node: node.into(),
            name: node.into(),
            region: "fra".into(),
            seq,
            start_ms: seq * 1000,
            end_ms: (seq + 1) * 1000,
            last: seq == 3,
            series,
        }
    }

    fn meta() -> RunMeta {
        RunMeta {
            data: Vec::new(),
            scenario: "hello.wasm".into(),
            executor: "constant-vus".into(),
            outcome: "complete".into(),
            expected: Vec::new(),
            lost: Vec::new(),
            thresholds: Vec::new(),
            aborted_by: None,
            load: None,
            moves: Vec::new(),
        }
    }

    #[test]
    fn a_report_merges_the_shards_waiting_in_memory_in_the_canonical_order() {
        let dir = std::env::temp_dir().join(format!("fusi-api-unsaved-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = RunStore::open(&dir).unwrap_or_else(|e| panic!("{e}"));
        let shards: Vec<Shard> = ["n1", "n2"]
            .into_iter()
            .flat_map(|n| (0..4).map(move |seq| shard(n, seq)))
            .collect();
        // Every other shard found no room in the data dir.
        let (stored, unsaved): (Vec<_>, Vec<_>) =
            shards.iter().enumerate().partition(|(i, _)| i % 2 == 0);
        for (_, s) in &stored {
            assert_eq!(store.save_shard(s, &s.encode()).ok(), Some(true));
        }
        let source = ReportSource {
            store: store.clone(),
            run_id: "r1".into(),
            meta: meta(),
            decoded: None,
            unsaved: unsaved.iter().rev().map(|(_, s)| s.encode()).collect(),
        };
        let all = Report::from_shards("r1", shards.clone());
        let expected = RunReport::build(&all, &meta()).to_json();
        assert_eq!(source.build().to_json(), expected);
        // The same shards kept decoded, in the canonical order, give the
        // same bytes, and the store is not read: it holds half of them.
        let decoded = shards
            .iter()
            .map(|s| SparseShard::decode(&s.encode()).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()
            .unwrap_or_else(|e| panic!("{e}"));
        let source = ReportSource {
            store,
            run_id: "r1".into(),
            meta: meta(),
            decoded: Some(decoded),
            unsaved: Vec::new(),
        };
        assert_eq!(source.build().to_json(), expected);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
