//! The local API of a running node: HTTP and JSON, for the CLI on the same
//! host (and, later, a dashboard).
//!
//! It binds loopback only and answers only requests whose `Host` is a
//! loopback address or `localhost`, so a web page in a browser on the same
//! host cannot reach it through DNS rebinding. Routes:
//!
//! - `GET /v1/status`: this node ([`StatusView`]);
//! - `GET /v1/peers`: the other members, as this node sees them
//!   ([`PeersView`]).
//!
//! The views are defined here once and used by both ends.

pub mod client;
pub mod server;

use serde::{Deserialize, Serialize};

/// The default API address.
pub const DEFAULT_API: &str = "127.0.0.1:7401";

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

/// What the API asks of the node's event loop.
#[derive(Debug)]
pub enum Query {
    /// `GET /v1/status`.
    Status(tokio::sync::oneshot::Sender<StatusView>),
    /// `GET /v1/peers`.
    Peers(tokio::sync::oneshot::Sender<PeersView>),
}
