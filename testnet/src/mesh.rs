//! A local multi-node testnet: `fusi-node up` processes on loopback, or
//! each in a network namespace of its own; see [`Mesh`].

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader, Read, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, anyhow, bail, ensure};

use crate::netns::{self, Network, NodeNet};
use crate::{Cidr, TargetConfig, TargetHandle};

/// How long [`Mesh::start`] and friends wait, by default, for a node to
/// print its listen addresses.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a node gets to exit after SIGTERM before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(3);
/// How many of its last stderr lines are kept per node.
pub const STDERR_TAIL_LINES: usize = 50;
/// Set to `1` to echo every node's output to stderr, prefixed with `[name]`.
pub const LOGS_ENV: &str = "FUSI_TESTNET_LOGS";
/// The longest region name; names are 1 to 32 of `a-z`, `0-9` and `-`.
pub use fusi_core::wire::MAX_REGION_LEN;
/// The most regions a mesh can have: one `127.0.R.0/24` range each.
pub const MAX_REGIONS: usize = 255;
/// The most nodes a region can have: `127.0.R.1` to `127.0.R.254`.
pub const MAX_NODES_PER_REGION: usize = 254;

/// The timeout of each [`get_json`] request, and of its connect.
const HTTP_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest response [`get_json`] reads.
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;
/// The API token's file in a node's data directory (and in the mesh
/// directory: the token the mesh gives every node).
pub const API_TOKEN_FILE: &str = "api.token";
/// The variable `fusi-node`'s CLI reads an API token from.
pub const API_TOKEN_ENV: &str = "FUSI_API_TOKEN";
/// How often waits poll a process or an API.
const POLL: Duration = Duration::from_millis(20);

/// What to start: the node binary and the regions with their node counts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeshConfig {
    /// The `fusi-node` binary. The node crate's tests pass
    /// `env!("CARGO_BIN_EXE_fusi-node")`.
    pub node_bin: PathBuf,
    /// Regions in order, with their node counts, e.g. `fra` with 2, `nrt`
    /// with 2, `ewr` with 1. Region `R` (its position plus one) gets the
    /// addresses `127.0.R.0/24`.
    pub regions: Vec<(String, usize)>,
    /// Passed verbatim as `--emulate-latency` to every node when set, e.g.
    /// `fra-nrt=120ms,fra>nrt=70ms`.
    pub latency: Option<String>,
    /// Base directory for the mesh key (`mesh.key`) and the nodes' data
    /// directories (`<name>/`); it is kept, and an existing `mesh.key` in it
    /// is reused. When `None`, a fresh directory under
    /// [`std::env::temp_dir`] is made, and removed when the mesh is dropped.
    pub dir: Option<PathBuf>,
    /// Extra arguments appended to every `fusi-node up`.
    pub extra_args: Vec<String>,
    /// Environment variables set for every node; `{data_dir}` in a value
    /// is replaced by the node's data directory (fault tests give each node
    /// its own libfaketime file this way).
    pub env: Vec<(String, String)>,
    /// How long to wait for each node to print its listen addresses.
    /// Default [`STARTUP_TIMEOUT`].
    pub startup_timeout: Duration,
    /// Start each node in a network namespace of its own, plugged into a
    /// bridge in a hub namespace, instead of on loopback: node `i` of
    /// region `R` gets `10.200.R.i`, a target started with
    /// [`Mesh::spawn_target`] listens on [`HUB_IP`](crate::HUB_IP), and
    /// [`Mesh::cut_off`] can take a node's link down. Needs root and `ip`
    /// (iproute2): check with [`netns_available`](crate::netns_available)
    /// first. See the `netns` module's layout in the crate docs. Default
    /// `false`.
    pub netns: bool,
}

impl MeshConfig {
    /// A configuration with the given binary and regions, and defaults for
    /// the rest: no emulated latency, a temporary directory, no extra
    /// arguments.
    pub fn new(node_bin: impl Into<PathBuf>, regions: &[(&str, usize)]) -> MeshConfig {
        MeshConfig {
            node_bin: node_bin.into(),
            regions: regions
                .iter()
                .map(|&(name, count)| (name.to_owned(), count))
                .collect(),
            latency: None,
            dir: None,
            extra_args: Vec::new(),
            env: Vec::new(),
            startup_timeout: STARTUP_TIMEOUT,
            netns: false,
        }
    }

    /// Checks the regions and the binary; [`Mesh::start`] calls this first.
    ///
    /// # Errors
    ///
    /// No regions, a bad or repeated region name, a region with no nodes or
    /// more than [`MAX_NODES_PER_REGION`], more than [`MAX_REGIONS`]
    /// regions, or a node binary that is not a file.
    pub fn validate(&self) -> anyhow::Result<()> {
        ensure!(
            !self.regions.is_empty(),
            "a mesh needs at least one region with at least one node"
        );
        ensure!(
            self.regions.len() <= MAX_REGIONS,
            "{} regions are too many: each gets a 127.0.R.0/24 range, R = 1 to {MAX_REGIONS}",
            self.regions.len()
        );
        for (i, (name, count)) in self.regions.iter().enumerate() {
            validate_region(name)?;
            ensure!(
                !self.regions[..i].iter().any(|(other, _)| other == name),
                "region `{name}` is listed twice; list each region once with its node count"
            );
            ensure!(
                (1..=MAX_NODES_PER_REGION).contains(count),
                "region `{name}` has {count} nodes: expected 1 to {MAX_NODES_PER_REGION} \
                 (node i gets the address 127.0.R.i)"
            );
        }
        ensure!(
            self.node_bin.is_file(),
            "the node binary {} does not exist: build it with `cargo build -p fusi-node`, \
             or give its path",
            self.node_bin.display()
        );
        Ok(())
    }
}

/// Checks a region name as a node does
/// ([`fusi_core::wire::validate_region`]): 1 to [`MAX_REGION_LEN`] of `a-z`,
/// `0-9` and `-`.
///
/// # Errors
///
/// Any other name, with the rule in the message.
pub fn validate_region(name: &str) -> anyhow::Result<()> {
    fusi_core::wire::validate_region(name).map_err(|e| anyhow::anyhow!("{e} (e.g. fra)"))
}

/// The loopback range of region `region_index` (1-based): `127.0.R.0/24`.
pub fn region_range(region_index: u8) -> Cidr {
    Cidr::masked(Ipv4Addr::new(127, 0, region_index, 0).into(), 24)
}

/// Which pre-shared key an extra node gets; see [`Mesh::start_node`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KeyChoice {
    /// The mesh's key: the node joins the mesh.
    #[default]
    Mesh,
    /// A key of its own, made with `fusi-node keygen`: the node cannot
    /// connect to the mesh.
    Fresh,
    /// No key (`--insecure-open`).
    Open,
}

/// One more node for [`Mesh::start_node`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtraNode {
    /// Its region: an existing one, or a new one, which gets the next
    /// `127.0.R.0/24` range.
    pub region: String,
    /// Its pre-shared key.
    pub key: KeyChoice,
    /// The node to bootstrap from, by index; `None` picks the first live
    /// node with the mesh's key (else the first live node).
    pub bootstrap: Option<usize>,
    /// Arguments appended to its `fusi-node up`, after the mesh's
    /// [`extra_args`](MeshConfig::extra_args).
    pub extra_args: Vec<String>,
}

impl ExtraNode {
    /// A node in `region` with the mesh's key, bootstrapping from the first
    /// live node.
    pub fn new(region: impl Into<String>) -> ExtraNode {
        ExtraNode {
            region: region.into(),
            key: KeyChoice::Mesh,
            bootstrap: None,
            extra_args: Vec::new(),
        }
    }
}

/// One node of a [`Mesh`], as last seen.
///
/// `alive` and the addresses are updated by the [`Mesh`] methods that
/// start, stop or look at processes ([`Mesh::poll_exits`] among them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MeshNode {
    /// Its position in [`Mesh::nodes`].
    pub index: usize,
    /// `<region>-<i>`, e.g. `fra-1`; also its `--name`.
    pub name: String,
    /// Its region, e.g. `fra`.
    pub region: String,
    /// `127.0.R.i` (`10.200.R.i` in a namespace): where it listens for
    /// peers and what it sends from.
    pub ip: Ipv4Addr,
    /// Its local API, e.g. `127.0.0.1:45677`: in a namespace, the address
    /// of the proxy to it (the same across restarts).
    pub api: SocketAddr,
    /// The name of its network namespace (for `ip netns exec NAME ...`),
    /// or `None` on loopback.
    pub netns: Option<String>,
    /// Its full peer address, e.g. `/ip4/127.0.1.1/tcp/40123/p2p/12D3KooW...`.
    pub p2p: String,
    /// Its peer id, the part of [`p2p`](Self::p2p) after `/p2p/`.
    pub peer_id: String,
    /// Its `--data-dir`, `<dir>/<name>/`.
    pub data_dir: PathBuf,
    /// Its local API's token, read from its data directory once it started
    /// (the mesh's token, unless the directory held another already).
    pub api_token: String,
    /// Its `--mesh-key`, or `None` for `--insecure-open`.
    pub key_file: Option<PathBuf>,
    /// Whether its process is running (as of the last look).
    pub alive: bool,
    /// The process id of its current (or last) process.
    pub pid: u32,
}

/// What the mesh keeps about a node besides [`MeshNode`].
#[derive(Debug)]
struct Slot {
    /// The running process; `None` once it has been waited for.
    child: Option<Child>,
    /// The last lines of its stderr.
    tail: Arc<Tail>,
    /// Arguments for it alone, appended to every `up`.
    extra_args: Vec<String>,
    /// Its network namespace and API proxy, in a mesh of namespaces.
    net: Option<NodeNet>,
}

/// A running local testnet of `fusi-node up` processes on loopback, or in
/// network namespaces.
///
/// Integration tests of the mesh, and `fusi-testnet up`, need several real
/// nodes on one machine, each in a simulated region. [`Mesh::start`] makes a
/// fresh pre-shared mesh key (`fusi-node keygen`), starts the first node,
/// then starts the others with `--bootstrap` set to the first node's
/// address, and returns once every node has printed its listen addresses.
/// Dropping the [`Mesh`] stops every node (SIGTERM, then SIGKILL after 3 s)
/// and removes the temporary directory it made.
///
/// # Addresses
///
/// Region `R` (1-based, in the order of [`MeshConfig::regions`]) owns the
/// loopback range `127.0.R.0/24` ([`region_range`]); its node `i` (1-based)
/// is named `<region>-<i>`, listens on `/ip4/127.0.R.i/tcp/0` and sends
/// from `127.0.R.i` (`--source-ip`), so that a target can tell the regions
/// apart by source address (see [`SourceLatency`](crate::SourceLatency)).
/// Every local API listens on `127.0.0.1` with an ephemeral port, and
/// answers requests with the mesh's API token ([`Mesh::api_token`]), which
/// the mesh writes into every node's data directory before it first starts
/// (so `FUSI_API_TOKEN=TOKEN fusi-node status --api ADDR` works for any of
/// them). All of
/// `127.0.0.0/8` is local on Linux; other systems may need the addresses
/// added to their loopback interface first.
///
/// # Network namespaces
///
/// With [`MeshConfig::netns`], each node runs in a network namespace of
/// its own (`fusit-<pid>-<n>-<R>-<i>`) whose `eth0` (`10.200.R.i/16`) is
/// plugged into a bridge (`10.200.0.1/16`) in a hub namespace; nothing is
/// added to the root namespace. The nodes reach each other over the
/// bridge, and a target from [`Mesh::spawn_target`] in the hub. Each node's
/// API binds loopback inside its namespace, and [`MeshNode::api`] is a
/// proxy to it on `127.0.0.1` of this process's namespace, so that
/// [`get_json`] and `fusi-node ... --api ADDR` work as on loopback. A real
/// link can then fail: [`Mesh::cut_off`] and [`Mesh::reconnect`]. Every
/// namespace is deleted when the mesh is dropped.
///
/// # Diagnostics
///
/// Each node's stdout is read until it has printed its startup lines, then
/// drained; the last [`STDERR_TAIL_LINES`] lines of its stderr are kept for
/// error messages ([`Mesh::stderr_tail`]). With `FUSI_TESTNET_LOGS=1` in the
/// environment ([`LOGS_ENV`]), every line a node prints is also echoed to
/// this process's stderr, prefixed with `[name]`. `RUST_LOG` and the rest of
/// the environment are inherited by the nodes.
///
/// # Example
///
/// ```no_run
/// # fn demo() -> anyhow::Result<()> {
/// use std::time::Duration;
/// use fusi_testnet::{Mesh, MeshConfig, get_json};
///
/// let mut config = MeshConfig::new("target/debug/fusi-node", &[("fra", 2), ("nrt", 1)]);
/// config.latency = Some("fra-nrt=120ms".into());
/// let mut mesh = Mesh::start(config)?;
/// mesh.wait_converged(Duration::from_secs(20))?;
/// let status = get_json(mesh.nodes()[0].api, mesh.api_token(), "/v1/status")?;
/// assert_eq!(status["name"], "fra-1");
/// mesh.kill(2)?;
/// mesh.restart(2)?;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Mesh {
    node_bin: PathBuf,
    latency: Option<String>,
    extra_args: Vec<String>,
    env: Vec<(String, String)>,
    startup_timeout: Duration,
    dir: PathBuf,
    remove_dir: bool,
    key_file: PathBuf,
    /// The token every node's API is given (64 hex digits).
    api_token: String,
    /// Region names in order (index + 1 = R), and how many nodes each has.
    regions: Vec<(String, usize)>,
    nodes: Vec<MeshNode>,
    /// Dropped before `network`: the nodes' namespaces go before the hub.
    slots: Vec<Slot>,
    network: Option<Network>,
}

impl Mesh {
    /// Makes the directory and the mesh key, starts the first node, then
    /// the others (bootstrapping from the first), and returns once each has
    /// printed its listen addresses.
    ///
    /// # Errors
    ///
    /// An invalid configuration, a failure to make the directory or the
    /// key, or a node that exits or stays silent for the startup timeout;
    /// the error then ends with the last lines of that node's stderr. Nodes
    /// already started are stopped again.
    pub fn start(config: MeshConfig) -> anyhow::Result<Mesh> {
        config.validate()?;
        let network = if config.netns {
            Some(Network::create().context("making the mesh's network namespaces")?)
        } else {
            None
        };
        let (dir, remove_dir) = match &config.dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating the mesh directory {}", dir.display()))?;
                (dir.clone(), false)
            }
            None => (make_temp_dir()?, true),
        };
        let key_file = dir.join("mesh.key");
        // From here on, dropping the mesh stops what was started and
        // removes a temporary directory.
        let mut mesh = Mesh {
            node_bin: config.node_bin,
            latency: config.latency,
            extra_args: config.extra_args,
            env: config.env,
            startup_timeout: config.startup_timeout,
            dir,
            remove_dir,
            key_file,
            api_token: String::new(),
            regions: Vec::new(),
            nodes: Vec::new(),
            slots: Vec::new(),
            network,
        };
        mesh.api_token = mesh_api_token(&mesh.dir)?;
        let reuse_key = !remove_dir && mesh.key_file.is_file();
        if !reuse_key {
            keygen(&mesh.node_bin, &mesh.key_file)?;
        }
        let key = Some(mesh.key_file.clone());
        for (region, count) in &config.regions {
            for _ in 0..*count {
                mesh.add_node(region, key.clone(), Vec::new())?;
            }
        }
        mesh.launch(&[0], None)?;
        let first = mesh.nodes[0].p2p.clone();
        let rest: Vec<usize> = (1..mesh.nodes.len()).collect();
        mesh.launch(&rest, Some(&first))?;
        Ok(mesh)
    }

    /// The API token the mesh gives every node: send it as
    /// `Authorization: Bearer TOKEN` ([`get_json`] does), or set it as
    /// [`API_TOKEN_ENV`] for the `fusi-node` CLI.
    pub fn api_token(&self) -> &str {
        &self.api_token
    }

    /// Every node ever started, in order: the configured ones region by
    /// region, then those from [`start_node`](Self::start_node).
    pub fn nodes(&self) -> &[MeshNode] {
        &self.nodes
    }

    /// The mesh's pre-shared key file.
    pub fn key_file(&self) -> &Path {
        &self.key_file
    }

    /// The base directory of the key and the data directories.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The address range of a region of this mesh, `127.0.R.0/24` (in
    /// network namespaces `10.200.R.0/24`).
    pub fn region_range(&self, region: &str) -> Option<Cidr> {
        let position = self.regions.iter().position(|(name, _)| name == region)?;
        let r = u8::try_from(position + 1).ok()?;
        Some(if self.network.is_some() {
            netns::netns_region_range(r)
        } else {
            region_range(r)
        })
    }

    /// Whether the nodes run in network namespaces ([`MeshConfig::netns`]).
    pub fn in_netns(&self) -> bool {
        self.network.is_some()
    }

    /// Starts a target the nodes can reach (see [`spawn_target`](crate::spawn_target)):
    /// on loopback as configured, or, in network namespaces, in the hub
    /// namespace on [`HUB_IP`](crate::HUB_IP) with the configured port
    /// (`allow_non_loopback` is then set). Its counters are read in this
    /// process as usual; a TLS target's certificate names loopback only.
    ///
    /// # Errors
    ///
    /// Those of [`spawn_target`](crate::spawn_target), or a failure to
    /// enter the hub namespace.
    pub fn spawn_target(&self, mut config: TargetConfig) -> anyhow::Result<TargetHandle> {
        let Some(network) = &self.network else {
            return crate::spawn_target(config);
        };
        config.listen = SocketAddr::from((netns::HUB_IP, config.listen.port()));
        config.allow_non_loopback = true;
        crate::blocking::spawn_target_in(config, Some(network.hub_file()?))
    }

    /// Cuts a node off the network: its namespace's link goes down, so it
    /// reaches neither the other nodes nor the target (packets are lost,
    /// not refused) until [`reconnect`](Self::reconnect). The process runs
    /// on.
    ///
    /// # Errors
    ///
    /// No such node, a mesh on loopback (there, `fusi-node up
    /// --emulate-partition-file` cuts regions apart), or `ip` failed.
    pub fn cut_off(&mut self, index: usize) -> anyhow::Result<()> {
        self.node_net(index)?.set_link(false)
    }

    /// Brings a node's link up again after [`cut_off`](Self::cut_off).
    ///
    /// # Errors
    ///
    /// As for [`cut_off`](Self::cut_off).
    pub fn reconnect(&mut self, index: usize) -> anyhow::Result<()> {
        self.node_net(index)?.set_link(true)
    }

    /// A node's namespace, or an error saying there is none.
    fn node_net(&self, index: usize) -> anyhow::Result<&NodeNet> {
        let name = &self.node(index)?.name;
        self.slots[index].net.as_ref().with_context(|| {
            format!(
                "node {name} runs on loopback, not in a network namespace of its own: \
                 start the mesh with MeshConfig::netns (as root) to cut its link"
            )
        })
    }

    /// Kills a node with SIGKILL (a crash, not a clean leave) and waits for
    /// it to die.
    ///
    /// # Errors
    ///
    /// No such node, or it is not running.
    pub fn kill(&mut self, index: usize) -> anyhow::Result<()> {
        let mut child = self.take_running(index)?;
        force_kill(&mut child);
        Ok(())
    }

    /// Stops a node cleanly: SIGTERM, then SIGKILL if it has not exited
    /// within [`STOP_GRACE`]. Returns how it exited (a clean stop is exit
    /// status 0).
    ///
    /// # Errors
    ///
    /// No such node, it is not running, or waiting for it failed.
    pub fn stop(&mut self, index: usize) -> anyhow::Result<ExitStatus> {
        let mut child = self.take_running(index)?;
        terminate(&mut child);
        match wait_until(&mut child, Instant::now() + STOP_GRACE) {
            Some(status) => Ok(status),
            None => {
                force_kill(&mut child);
                child
                    .wait()
                    .with_context(|| format!("waiting for node {}", self.nodes[index].name))
            }
        }
    }

    /// Starts a node that is not running again, with the same name, region,
    /// data directory and key, on new ports, bootstrapping from another
    /// live node (the first with the same key, else the first; from none if
    /// no other node is alive).
    ///
    /// # Errors
    ///
    /// No such node, it is still running ([`kill`](Self::kill) or
    /// [`stop`](Self::stop) it first), or it fails to start.
    pub fn restart(&mut self, index: usize) -> anyhow::Result<()> {
        self.refresh();
        let node = self.node(index)?;
        ensure!(
            !node.alive,
            "node {} is still running: kill or stop it before restarting it",
            node.name
        );
        let key = node.key_file.clone();
        let bootstrap = self.bootstrap_for(key.as_deref(), Some(index));
        self.launch(&[index], bootstrap.as_deref())
    }

    /// Starts one more node and returns its index.
    ///
    /// # Errors
    ///
    /// A bad region name, too many regions or nodes in the region, a
    /// bootstrap node that does not exist or is not running, a failure to
    /// make its key, or a failure to start; the node is then not added.
    pub fn start_node(&mut self, spec: ExtraNode) -> anyhow::Result<usize> {
        self.refresh();
        let bootstrap = match spec.bootstrap {
            Some(i) => {
                let node = self.node(i)?;
                ensure!(
                    node.alive,
                    "cannot bootstrap from node {}: it is not running",
                    node.name
                );
                Some(node.p2p.clone())
            }
            None => self.bootstrap_for(Some(&self.key_file), None),
        };
        validate_region(&spec.region)?;
        let index = self.nodes.len();
        let name = self.next_name(&spec.region);
        let key_file = match spec.key {
            KeyChoice::Mesh => Some(self.key_file.clone()),
            KeyChoice::Open => None,
            KeyChoice::Fresh => {
                let file = self.dir.join(format!("{name}.key"));
                match std::fs::remove_file(&file) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(anyhow!(e)
                            .context(format!("removing the old key file {}", file.display())));
                    }
                }
                keygen(&self.node_bin, &file)?;
                Some(file)
            }
        };
        self.add_node(&spec.region, key_file, spec.extra_args)?;
        if let Err(e) = self.launch(&[index], bootstrap.as_deref()) {
            self.remove_last_node();
            return Err(e);
        }
        Ok(index)
    }

    /// Looks at every running node and returns those that have exited
    /// since the last look, with how they exited; their
    /// [`alive`](MeshNode::alive) becomes `false`.
    pub fn poll_exits(&mut self) -> Vec<(usize, ExitStatus)> {
        let mut exited = Vec::new();
        for (index, slot) in self.slots.iter_mut().enumerate() {
            let Some(child) = slot.child.as_mut() else {
                continue;
            };
            match child.try_wait() {
                Ok(None) => {}
                Ok(Some(status)) => {
                    slot.child = None;
                    self.nodes[index].alive = false;
                    exited.push((index, status));
                }
                Err(e) => {
                    tracing::warn!(node = %self.nodes[index].name, "checking the process failed: {e}");
                }
            }
        }
        exited
    }

    /// The last lines (at most [`STDERR_TAIL_LINES`]) a node wrote to
    /// stderr, oldest first, without colour codes; empty for no such node.
    pub fn stderr_tail(&self, index: usize) -> Vec<String> {
        self.slots
            .get(index)
            .map(|slot| slot.tail.lines())
            .unwrap_or_default()
    }

    /// Waits until every live node with the mesh's key lists every other
    /// such node in `GET /v1/peers`, polling every 200 ms.
    ///
    /// # Errors
    ///
    /// Not converged within `timeout`: the error says which node is missing
    /// which peers, or the last API error.
    pub fn wait_converged(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            self.refresh();
            let members: Vec<&MeshNode> = self
                .nodes
                .iter()
                .filter(|node| node.alive && node.key_file.as_deref() == Some(&self.key_file))
                .collect();
            let mut problems = Vec::new();
            for node in &members {
                match get_json(node.api, &node.api_token, "/v1/peers")
                    .and_then(|peers| peer_ids(&peers))
                {
                    Ok(seen) => {
                        let missing: Vec<&str> = members
                            .iter()
                            .filter(|other| {
                                other.index != node.index && !seen.contains(&other.peer_id)
                            })
                            .map(|other| other.name.as_str())
                            .collect();
                        if !missing.is_empty() {
                            problems.push(format!(
                                "{} does not list {}",
                                node.name,
                                missing.join(", ")
                            ));
                        }
                    }
                    Err(e) => problems.push(format!("{}: {e:#}", node.name)),
                }
            }
            if problems.is_empty() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                // What each node said last, to tell why.
                let tails: Vec<String> = members
                    .iter()
                    .map(|node| {
                        format!(
                            "--- {} ---\n{}",
                            node.name,
                            self.stderr_tail(node.index).join("\n")
                        )
                    })
                    .collect();
                bail!(
                    "the mesh did not converge within {timeout:?}: {}\n{}",
                    problems.join("; "),
                    tails.join("\n")
                );
            }
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// The address of the first live node with key `key`, else of the first
    /// live node, leaving out node `except`.
    fn bootstrap_for(&self, key: Option<&Path>, except: Option<usize>) -> Option<String> {
        let live = || {
            self.nodes
                .iter()
                .filter(move |node| node.alive && Some(node.index) != except)
        };
        live()
            .find(|node| node.key_file.as_deref() == key)
            .or_else(|| live().next())
            .map(|node| node.p2p.clone())
    }

    /// The node at `index`, or an error naming the range.
    fn node(&self, index: usize) -> anyhow::Result<&MeshNode> {
        self.nodes.get(index).with_context(|| {
            format!(
                "no node {index}: the mesh has nodes 0 to {}",
                self.nodes.len().saturating_sub(1)
            )
        })
    }

    /// Marks nodes that have exited as not alive.
    fn refresh(&mut self) {
        self.poll_exits();
    }

    /// Takes a running node's process out of its slot.
    fn take_running(&mut self, index: usize) -> anyhow::Result<Child> {
        self.refresh();
        let name = self.node(index)?.name.clone();
        let child = self.slots[index]
            .child
            .take()
            .with_context(|| format!("node {name} is not running"))?;
        self.nodes[index].alive = false;
        Ok(child)
    }

    /// The name the next node of `region` gets, `<region>-<i>`.
    fn next_name(&self, region: &str) -> String {
        let count = self
            .regions
            .iter()
            .find(|(name, _)| name == region)
            .map_or(0, |(_, count)| *count);
        format!("{region}-{}", count + 1)
    }

    /// Adds a node to `region` (added if new) without starting it.
    fn add_node(
        &mut self,
        region: &str,
        key_file: Option<PathBuf>,
        extra_args: Vec<String>,
    ) -> anyhow::Result<()> {
        validate_region(region)?;
        let position = match self.regions.iter().position(|(name, _)| name == region) {
            Some(position) => position,
            None => {
                ensure!(
                    self.regions.len() < MAX_REGIONS,
                    "cannot add region `{region}`: a mesh has at most {MAX_REGIONS} regions"
                );
                self.regions.push((region.to_owned(), 0));
                self.regions.len() - 1
            }
        };
        let count = self.regions[position].1 + 1;
        ensure!(
            count <= MAX_NODES_PER_REGION,
            "cannot add a node to region `{region}`: it has {MAX_NODES_PER_REGION} already"
        );
        let r = u8::try_from(position + 1).context("region index out of range")?;
        let i = u8::try_from(count).context("node index out of range")?;
        let name = self.next_name(region);
        let (ip, net) = match &self.network {
            Some(network) => match network.plug(r, i) {
                Ok(net) => (netns::netns_ip(r, i), Some(net)),
                Err(e) => {
                    // A region added for this node goes with it.
                    if self.regions[position].1 == 0 {
                        self.regions.remove(position);
                    }
                    return Err(e.context(format!("making node {name}'s network namespace")));
                }
            },
            None => (Ipv4Addr::new(127, 0, r, i), None),
        };
        self.regions[position].1 = count;
        self.nodes.push(MeshNode {
            index: self.nodes.len(),
            data_dir: self.dir.join(&name),
            api_token: String::new(),
            name,
            region: region.to_owned(),
            ip,
            api: net
                .as_ref()
                .map_or(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), NodeNet::api),
            netns: net.as_ref().map(|net| net.name().to_owned()),
            p2p: String::new(),
            peer_id: String::new(),
            key_file,
            alive: false,
            pid: 0,
        });
        self.slots.push(Slot {
            child: None,
            tail: Arc::default(),
            extra_args,
            net,
        });
        Ok(())
    }

    /// Undoes [`add_node`](Self::add_node) for the last node, which is not
    /// running, and drops its region if that had no other node.
    fn remove_last_node(&mut self) {
        let Some(node) = self.nodes.pop() else {
            return;
        };
        self.slots.pop();
        if let Some(position) = self
            .regions
            .iter()
            .position(|(name, _)| *name == node.region)
        {
            self.regions[position].1 -= 1;
            // A region with no nodes left was added for this one: the last.
            if self.regions[position].1 == 0 {
                self.regions.remove(position);
            }
        }
    }

    /// Starts the given nodes at once and waits for each to print its
    /// listen addresses. On a failure, the nodes of this batch that were
    /// not yet waited for are killed.
    fn launch(&mut self, indices: &[usize], bootstrap: Option<&str>) -> anyhow::Result<()> {
        let mut starting = Vec::with_capacity(indices.len());
        for &index in indices {
            match self.spawn(index, bootstrap) {
                Ok(s) => starting.push((index, s)),
                Err(e) => {
                    for (_, mut s) in starting {
                        force_kill(&mut s.child);
                    }
                    return Err(e);
                }
            }
        }
        let mut starting = starting.into_iter();
        while let Some((index, s)) = starting.next() {
            let name = self.nodes[index].name.clone();
            let result = wait_started(s, &name, self.nodes[index].ip, self.startup_timeout);
            match result {
                Ok((child, startup)) => {
                    let node = &mut self.nodes[index];
                    node.api_token = match read_api_token(&node.data_dir) {
                        Ok(token) => token,
                        Err(e) => {
                            let mut child = child;
                            force_kill(&mut child);
                            for (_, mut s) in starting {
                                force_kill(&mut s.child);
                            }
                            return Err(e.context(format!("node {name} started")));
                        }
                    };
                    node.api = match &self.slots[index].net {
                        Some(net) => {
                            net.set_api(startup.api);
                            net.api()
                        }
                        None => startup.api,
                    };
                    node.peer_id = startup.peer_id;
                    node.p2p = startup.p2p;
                    node.pid = child.id();
                    node.alive = true;
                    self.slots[index].child = Some(child);
                }
                Err(e) => {
                    for (_, mut s) in starting {
                        force_kill(&mut s.child);
                    }
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Spawns `fusi-node up` for a node; returns before it has started.
    fn spawn(&mut self, index: usize, bootstrap: Option<&str>) -> anyhow::Result<Starting> {
        let node = &self.nodes[index];
        std::fs::create_dir_all(&node.data_dir)
            .with_context(|| format!("creating the data directory {}", node.data_dir.display()))?;
        let token_file = node.data_dir.join(API_TOKEN_FILE);
        if !token_file.exists() {
            write_private(&token_file, &self.api_token)?;
        }
        let mut cmd = Command::new(&self.node_bin);
        cmd.arg("up")
            .args(["--listen", &format!("/ip4/{}/tcp/0", node.ip)])
            .args(["--api", "127.0.0.1:0"])
            .args(["--region", &node.region])
            .args(["--name", &node.name])
            .arg("--data-dir")
            .arg(&node.data_dir);
        match &node.key_file {
            Some(key) => cmd.arg("--mesh-key").arg(key),
            None => cmd.arg("--insecure-open"),
        };
        if let Some(bootstrap) = bootstrap {
            cmd.args(["--bootstrap", bootstrap]);
        }
        if let Some(latency) = &self.latency {
            cmd.args(["--emulate-latency", latency]);
        }
        for (key, value) in &self.env {
            cmd.env(
                key,
                value.replace("{data_dir}", &node.data_dir.to_string_lossy()),
            );
        }
        cmd.args(["--source-ip", &node.ip.to_string()])
            .args(&self.extra_args)
            .args(&self.slots[index].extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(net) = &self.slots[index].net {
            enter_before_exec(&mut cmd, net.file()?);
        }
        let mut child = cmd.spawn().with_context(|| {
            format!(
                "starting node {} ({} up)",
                node.name,
                self.node_bin.display()
            )
        })?;
        let echo = logs_enabled().then(|| node.name.clone());
        let tail = Arc::new(Tail::default());
        self.slots[index].tail = Arc::clone(&tail);
        let lines = match (child.stdout.take(), child.stderr.take()) {
            (Some(stdout), Some(stderr)) => {
                let drained = spawn_drain(&node.name, stdout, stderr, echo, Arc::clone(&tail));
                match drained {
                    Ok(lines) => lines,
                    Err(e) => {
                        force_kill(&mut child);
                        return Err(e);
                    }
                }
            }
            _ => {
                force_kill(&mut child);
                bail!("node {}: its stdout or stderr was not captured", node.name);
            }
        };
        Ok(Starting {
            child,
            lines,
            tail,
            since: Instant::now(),
        })
    }
}

impl Drop for Mesh {
    /// Stops every running node (SIGTERM, SIGKILL after [`STOP_GRACE`]) and
    /// removes the directory if the mesh made it.
    fn drop(&mut self) {
        let mut running: Vec<Child> = self
            .slots
            .iter_mut()
            .filter_map(|slot| slot.child.take())
            .collect();
        for child in &mut running {
            terminate(child);
        }
        let deadline = Instant::now() + STOP_GRACE;
        for child in &mut running {
            if wait_until(child, deadline).is_none() {
                force_kill(child);
            }
        }
        if self.remove_dir
            && let Err(e) = std::fs::remove_dir_all(&self.dir)
        {
            tracing::warn!("removing {} failed: {e}", self.dir.display());
        }
    }
}

/// Makes `cmd`'s process enter the network namespace `netns` before it
/// runs the program.
#[cfg(unix)]
fn enter_before_exec(cmd: &mut Command, netns: std::fs::File) {
    use std::os::unix::process::CommandExt as _;
    // SAFETY: the closure runs in the forked child before exec and only
    // calls setns(2), which allocates nothing and takes no lock.
    unsafe {
        cmd.pre_exec(move || netns::enter(&netns));
    }
}

/// Network namespaces are Linux only: [`Network::create`] fails elsewhere,
/// so no node has one.
#[cfg(not(unix))]
fn enter_before_exec(_cmd: &mut Command, _netns: std::fs::File) {}

/// A node that was spawned and has not yet printed its listen addresses.
struct Starting {
    child: Child,
    /// Its stdout lines, until stdout closes.
    lines: Receiver<String>,
    tail: Arc<Tail>,
    since: Instant,
}

/// What a node prints once it is up.
#[derive(Debug, PartialEq, Eq)]
struct Startup {
    api: SocketAddr,
    p2p: String,
    peer_id: String,
}

/// Waits for a node's startup lines. On a failure the node is killed and
/// the error ends with the last lines of its stderr.
fn wait_started(
    mut s: Starting,
    name: &str,
    ip: Ipv4Addr,
    timeout: Duration,
) -> anyhow::Result<(Child, Startup)> {
    let deadline = s.since + timeout;
    let mut api = None;
    let mut p2p: Vec<String> = Vec::new();
    let failure = loop {
        if let (Some(api), Some(first)) = (api, p2p.first()) {
            // One line per listen address; prefer the one on the node's own IP.
            let own = format!("/ip4/{ip}/");
            let addr = p2p
                .iter()
                .find(|a| a.starts_with(&own))
                .unwrap_or(first)
                .clone();
            let peer_id = peer_id_of(&addr).unwrap_or_default().to_owned();
            return Ok((
                s.child,
                Startup {
                    api,
                    p2p: addr,
                    peer_id,
                },
            ));
        }
        match s
            .lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        {
            Ok(line) => match parse_startup_line(&line) {
                Ok(Some(StartupLine::P2p(addr))) => p2p.push(addr),
                Ok(Some(StartupLine::Api(addr))) => api = Some(addr),
                Ok(None) => {}
                Err(e) => break format!("{e:#}"),
            },
            Err(RecvTimeoutError::Timeout) => {
                break format!(
                    "it printed no {} line within {timeout:?}",
                    if api.is_none() {
                        "`api listening on`"
                    } else {
                        "`p2p listening on`"
                    }
                );
            }
            Err(RecvTimeoutError::Disconnected) => {
                break match wait_until(&mut s.child, Instant::now() + Duration::from_secs(1)) {
                    Some(status) => format!("it exited ({status})"),
                    None => "it closed its stdout".to_owned(),
                };
            }
        }
    };
    force_kill(&mut s.child);
    s.tail.wait_closed(Duration::from_secs(1));
    Err(anyhow!(
        "node {name} did not start: {failure}{}",
        format_tail(&s.tail.lines())
    ))
}

/// `; its stderr ended with:` and the lines, indented, or a note that it
/// wrote nothing.
fn format_tail(lines: &[String]) -> String {
    if lines.is_empty() {
        return " (it wrote nothing to stderr)".to_owned();
    }
    let mut out = String::from("; its stderr ended with:");
    for line in lines {
        let _ = write!(out, "\n    {line}");
    }
    out
}

/// A line of a node's stdout that [`Mesh`] looks for.
#[derive(Debug, PartialEq, Eq)]
enum StartupLine {
    /// `p2p listening on <multiaddr with /p2p/<peer id>>`.
    P2p(String),
    /// `api listening on http://<addr>`.
    Api(SocketAddr),
}

/// Recognises a startup line; other lines are `Ok(None)`.
///
/// # Errors
///
/// A recognised line whose address is malformed.
fn parse_startup_line(line: &str) -> anyhow::Result<Option<StartupLine>> {
    let line = line.trim();
    if let Some(addr) = line.strip_prefix("p2p listening on ") {
        let addr = addr.trim();
        ensure!(
            addr.starts_with('/') && peer_id_of(addr).is_some(),
            "malformed line `{line}`: expected a multiaddr ending in /p2p/<peer id>"
        );
        return Ok(Some(StartupLine::P2p(addr.to_owned())));
    }
    if let Some(url) = line.strip_prefix("api listening on ") {
        let url = url.trim();
        let addr = url
            .strip_prefix("http://")
            .map(|rest| rest.trim_end_matches('/'))
            .and_then(|rest| rest.parse::<SocketAddr>().ok())
            .with_context(|| {
                format!(
                    "malformed line `{line}`: expected http://IP:PORT, e.g. http://127.0.0.1:45677"
                )
            })?;
        return Ok(Some(StartupLine::Api(addr)));
    }
    Ok(None)
}

/// The peer id at the end of a multiaddr, after `/p2p/`.
fn peer_id_of(addr: &str) -> Option<&str> {
    let (_, id) = addr.rsplit_once("/p2p/")?;
    (!id.is_empty() && !id.contains('/')).then_some(id)
}

/// The `id`s in a `GET /v1/peers` answer.
fn peer_ids(peers: &serde_json::Value) -> anyhow::Result<Vec<String>> {
    let list = peers
        .get("peers")
        .and_then(serde_json::Value::as_array)
        .context("GET /v1/peers: expected an object with a `peers` array")?;
    list.iter()
        .map(|peer| {
            peer.get("id")
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
                .context("GET /v1/peers: a peer has no string `id`")
        })
        .collect()
}

/// The last lines of a node's stderr, and whether stderr has closed.
#[derive(Debug, Default)]
struct Tail {
    state: Mutex<TailState>,
    closed: Condvar,
}

#[derive(Debug, Default)]
struct TailState {
    lines: VecDeque<String>,
    closed: bool,
}

impl Tail {
    fn push(&self, line: String) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.lines.len() == STDERR_TAIL_LINES {
            state.lines.pop_front();
        }
        state.lines.push_back(line);
    }

    fn close(&self) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .closed = true;
        self.closed.notify_all();
    }

    fn lines(&self) -> Vec<String> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.lines.iter().cloned().collect()
    }

    /// Waits, at most `timeout`, for stderr to close, so that the last
    /// lines of a process that just died are in.
    fn wait_closed(&self, timeout: Duration) {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = self
            .closed
            .wait_timeout_while(state, timeout, |state| !state.closed);
    }
}

/// Whether [`LOGS_ENV`] asks for node output on stderr.
fn logs_enabled() -> bool {
    std::env::var(LOGS_ENV).is_ok_and(|v| v.trim() == "1")
}

/// Starts the threads that read a node's stdout (sending its lines, then
/// draining) and its stderr (into `tail`); both echo when `echo` is set.
fn spawn_drain(
    name: &str,
    stdout: impl Read + Send + 'static,
    stderr: impl Read + Send + 'static,
    echo: Option<String>,
    tail: Arc<Tail>,
) -> anyhow::Result<Receiver<String>> {
    let (tx, rx) = mpsc::channel();
    let out_echo = echo.clone();
    thread::Builder::new()
        .name(format!("{name}-stdout"))
        .spawn(move || {
            for_each_line(stdout, |line| {
                if let Some(name) = &out_echo {
                    eprintln!("[{name}] {line}");
                }
                // Nobody listens once the node has started: keep draining.
                let _ = tx.send(line);
            });
        })
        .context("spawning a thread to read a node's stdout")?;
    thread::Builder::new()
        .name(format!("{name}-stderr"))
        .spawn(move || {
            for_each_line(stderr, |line| {
                if let Some(name) = &echo {
                    eprintln!("[{name}] {line}");
                }
                tail.push(strip_ansi(&line));
            });
            tail.close();
        })
        .context("spawning a thread to read a node's stderr")?;
    Ok(rx)
}

/// Calls `f` with each line of `input` (lossily decoded, without its line
/// ending) until end of file or an error.
fn for_each_line(input: impl Read, mut f: impl FnMut(String)) {
    let mut reader = BufReader::new(input);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => f(String::from_utf8_lossy(&buf)
                .trim_end_matches(['\r', '\n'])
                .to_owned()),
        }
    }
}

/// `line` without ANSI escape sequences (colours), which a node may write
/// even to a pipe and which would garble error messages.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        if chars.next_if_eq(&'[').is_some() {
            // CSI: parameters and intermediates up to a final byte in @..=~.
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        } else {
            // A two-character escape.
            chars.next();
        }
    }
    out
}

/// The mesh's API token: kept in `dir/api.token`, made when absent.
fn mesh_api_token(dir: &Path) -> anyhow::Result<String> {
    let file = dir.join(API_TOKEN_FILE);
    if file.exists() {
        return read_api_token(dir);
    }
    let token: String = rand::random::<[u8; 32]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    write_private(&file, &token)?;
    Ok(token)
}

/// The token in `dir/api.token`: 64 hex digits.
fn read_api_token(dir: &Path) -> anyhow::Result<String> {
    let file = dir.join(API_TOKEN_FILE);
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("reading the API token {}", file.display()))?;
    let token = text.trim();
    ensure!(
        token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit()),
        "{} is not an API token (64 hex digits)",
        file.display()
    );
    Ok(token.to_owned())
}

/// Writes a new file only this user may read (mode 0600 on Unix), with a
/// newline after `text`.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
        .open(path)
        .and_then(|mut file| writeln!(file, "{text}"))
        .with_context(|| format!("writing {}", path.display()))
}

/// Runs `node_bin keygen file`.
fn keygen(node_bin: &Path, file: &Path) -> anyhow::Result<()> {
    let out = Command::new(node_bin)
        .arg("keygen")
        .arg(file)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {} keygen", node_bin.display()))?;
    ensure!(
        out.status.success(),
        "`{} keygen {}` failed ({}): {}",
        node_bin.display(),
        file.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    ensure!(
        file.is_file(),
        "`{} keygen {}` succeeded but wrote no file",
        node_bin.display(),
        file.display()
    );
    Ok(())
}

/// Makes a fresh, uniquely named directory under the system's temp dir.
fn make_temp_dir() -> anyhow::Result<PathBuf> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let base = std::env::temp_dir();
    let mut last_error = None;
    for _ in 0..100 {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = base.join(format!(
            "fusi-testnet-{}-{nanos:09}-{n}",
            std::process::id()
        ));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last_error = Some(e),
            Err(e) => {
                return Err(anyhow!(e).context(format!("creating {}", dir.display())));
            }
        }
    }
    Err(anyhow!(
        "could not make a fresh directory under {}: {last_error:?}",
        base.display()
    ))
}

/// Asks a process to stop: SIGTERM on Unix (with the `kill` command; this
/// crate does not link libc), a hard kill elsewhere.
fn terminate(child: &mut Child) {
    #[cfg(unix)]
    {
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if !sent {
            let _ = child.kill();
        }
    }
    #[cfg(not(unix))]
    {
        let _ = child.kill();
    }
}

/// Kills a process (SIGKILL on Unix) and waits for it.
fn force_kill(child: &mut Child) {
    // An error means it has already exited; wait reaps it either way.
    let _ = child.kill();
    let _ = child.wait();
}

/// Waits for a process to exit, until `deadline`; `None` if it has not.
fn wait_until(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => thread::sleep(POLL),
            Ok(None) | Err(_) => return None,
        }
    }
}

/// `GET path` from a local API over HTTP/1.1 with `Connection: close`,
/// sending `token` as `Authorization: Bearer TOKEN`, and the JSON body.
/// Connecting, and the whole exchange, time out after 5 s.
///
/// It skips the challenge the `fusi-node` CLI makes before it sends the
/// token: the address came from the node's own stdout.
///
/// # Errors
///
/// A path that is not `/...`, a token that is not hex, a failure to
/// connect or to exchange, a
/// status other than 2xx (the error shows the start of the body), a
/// response above 16 MiB, or a body that is not JSON. Every error names the
/// address, the path and, once known, the status.
pub fn get_json(api: SocketAddr, token: &str, path: &str) -> anyhow::Result<serde_json::Value> {
    ensure!(
        path.starts_with('/') && !path.bytes().any(|b| b.is_ascii_whitespace() || b < 0x20),
        "invalid API path {path:?}: expected an absolute path such as /v1/status"
    );
    ensure!(
        !token.is_empty() && token.bytes().all(|b| b.is_ascii_hexdigit()),
        "invalid API token: expected hex digits (the node's {API_TOKEN_FILE})"
    );
    let what = format!("GET http://{api}{path}");
    let deadline = Instant::now() + HTTP_TIMEOUT;
    let mut stream = TcpStream::connect_timeout(&api, HTTP_TIMEOUT)
        .with_context(|| format!("{what}: connecting"))?;
    stream
        .set_write_timeout(Some(HTTP_TIMEOUT))
        .and_then(|()| stream.set_read_timeout(Some(HTTP_TIMEOUT)))
        .with_context(|| format!("{what}: setting socket timeouts"))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {api}\r\nAccept: application/json\r\n\
         Authorization: Bearer {token}\r\nUser-Agent: fusi-testnet\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .with_context(|| format!("{what}: sending the request"))?;
    let mut raw = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        ensure!(
            !left.is_zero(),
            "{what}: no full answer within {HTTP_TIMEOUT:?}"
        );
        stream
            .set_read_timeout(Some(left))
            .with_context(|| format!("{what}: setting socket timeouts"))?;
        let n = match stream.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(anyhow!(e).context(format!("{what}: reading the response"))),
        };
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&chunk[..n]);
        ensure!(
            raw.len() <= MAX_RESPONSE_BYTES,
            "{what}: the response is larger than {MAX_RESPONSE_BYTES} bytes"
        );
    }
    let (status, body) = parse_response(&raw).with_context(|| format!("{what}: bad response"))?;
    if !(200..300).contains(&status) {
        let text = String::from_utf8_lossy(&body);
        let text: String = text.trim().chars().take(300).collect();
        bail!("{what}: status {status}: {text}");
    }
    serde_json::from_slice(&body)
        .with_context(|| format!("{what}: status {status}, but the body is not JSON"))
}

/// Splits an HTTP/1.1 response read to its end into its status and body
/// (de-chunked if need be).
fn parse_response(raw: &[u8]) -> anyhow::Result<(u16, Vec<u8>)> {
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("the connection closed before the end of the headers")?;
    let head = std::str::from_utf8(&raw[..head_end]).context("the headers are not UTF-8")?;
    let rest = &raw[head_end + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let (version, code) = (parts.next(), parts.next());
    ensure!(
        version.is_some_and(|v| v.starts_with("HTTP/1.")),
        "not an HTTP/1.x status line: `{status_line}`"
    );
    let status = code
        .and_then(|c| c.parse::<u16>().ok())
        .filter(|c| (100..=999).contains(c))
        .with_context(|| format!("no status code in `{status_line}`"))?;
    let mut content_length = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            content_length = Some(
                value
                    .parse::<usize>()
                    .with_context(|| format!("bad Content-Length `{value}`"))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value
                .rsplit(',')
                .next()
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        }
    }
    let body = if chunked {
        dechunk(rest)?
    } else if let Some(len) = content_length {
        ensure!(
            rest.len() >= len,
            "the body ended after {} of {len} bytes",
            rest.len()
        );
        rest[..len].to_vec()
    } else {
        rest.to_vec()
    };
    Ok((status, body))
}

/// Decodes a chunked body (trailers are ignored).
fn dechunk(mut data: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("a chunk size line is cut off")?;
        let line = std::str::from_utf8(&data[..line_end]).context("a chunk size is not text")?;
        let size = line.split(';').next().unwrap_or_default().trim();
        let size =
            usize::from_str_radix(size, 16).with_context(|| format!("bad chunk size `{size}`"))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        ensure!(
            data.len() >= size + 2 && &data[size..size + 2] == b"\r\n",
            "a chunk is cut off"
        );
        body.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

#[cfg(test)]
mod tests;
