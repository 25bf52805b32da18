//! Network namespaces for a [`Mesh`](crate::Mesh): one per node, all
//! plugged into a bridge in a hub namespace; see
//! [`MeshConfig::netns`](crate::MeshConfig::netns).
//!
//! # Layout
//!
//! ```text
//!  root namespace (the test)            hub namespace fusit-PID-N-hub
//!  127.0.0.1:P1 ── API proxy ─┐         br0 10.200.0.1/16 (the target)
//!  127.0.0.1:P2 ── API proxy ─┼─┐        │ vR-I (one port per node)
//!                             │ │   ┌────┴────────────┐
//!                             ▼ ▼   ▼                 ▼
//!  node namespace fusit-PID-N-R-I: eth0 10.200.R.I/16, lo (the API on 127.0.0.1)
//! ```
//!
//! Every address is inside a namespace made here, so nothing in the root
//! namespace changes: no interface, address or route is added there. The
//! nodes reach each other and the target over the bridge. Each node's
//! local API binds loopback *inside its namespace* (the node refuses any
//! other address); the test reaches it through a proxy: a listener on
//! `127.0.0.1` of the root namespace whose thread has entered the node's
//! namespace (`setns`), so that every connection it makes lands on the
//! node's own loopback. [`MeshNode::api`](crate::MeshNode::api) is the
//! proxy's address, which stays the same across restarts of the node.
//!
//! A target for the nodes ([`Mesh::spawn_target`](crate::Mesh::spawn_target))
//! runs in this process on a thread that entered the hub namespace, bound
//! to [`HUB_IP`]; its counters are read in memory as usual.
//!
//! Cutting a node off ([`Mesh::cut_off`](crate::Mesh::cut_off)) takes its
//! `eth0` down, which parts it from the other nodes and from the target
//! alike; [`Mesh::reconnect`](crate::Mesh::reconnect) brings it up again.
//!
//! Namespaces are made with `ip netns add` (iproute2), which needs root
//! (`CAP_SYS_ADMIN`); [`netns_available`] says whether it works here. Each
//! is named `fusit-<pid>-<n>-...` and deleted when its owner is dropped
//! (on a panic too, as the stack unwinds): a node's with its slot, the hub
//! with the mesh. Deleting a namespace deletes its veth ends and bridge.
//! Namespaces left behind by a process that was killed are deleted by the
//! next mesh that makes namespaces.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::thread;
use std::time::Duration;

use anyhow::{Context as _, anyhow, ensure};

use crate::Cidr;

/// The start of the name of every namespace the testnet makes:
/// `fusit-<pid>-<n>-hub`, `fusit-<pid>-<n>-<R>-<i>`.
pub const NETNS_PREFIX: &str = "fusit-";
/// The hub's address on its bridge, where a target for the nodes listens.
pub const HUB_IP: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
/// The prefix length of the bridge's network, `10.200.0.0/16`.
const BRIDGE_PREFIX: u8 = 16;
/// Where `ip netns` keeps a namespace's handle.
const NETNS_RUN_DIR: &str = "/run/netns";
/// How long the API proxy waits to connect to a node's API.
const PROXY_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The address of node `node` of region `region` (both 1-based) in a mesh
/// of namespaces: `10.200.R.i`.
pub fn netns_ip(region: u8, node: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 200, region, node)
}

/// The range of region `region` (1-based) in a mesh of namespaces:
/// `10.200.R.0/24`.
pub fn netns_region_range(region: u8) -> Cidr {
    Cidr::masked(netns_ip(region, 0).into(), 24)
}

/// Checks that this process can make network namespaces: it runs as root,
/// and `ip netns add` and `ip netns del` of a probe namespace work.
///
/// # Errors
///
/// Not root, no `ip` command, or `ip` failed; the message says which.
pub fn netns_available() -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    ensure!(
        euid == 0,
        "not root (effective uid {euid}): `ip netns add` needs CAP_SYS_ADMIN"
    );
    let probe = Netns::create(format!("{}-probe", unique_id()))?;
    probe.file()?;
    Ok(())
}

/// A fresh `fusit-<pid>-<n>`, unique among this process's namespaces.
fn unique_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!(
        "{NETNS_PREFIX}{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs `ip ARGS`.
fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running `ip` (from iproute2; install the `iproute2` package)")?;
    ensure!(
        out.status.success(),
        "`ip {}` failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// Moves the calling thread into the network namespace `file` refers to;
/// sockets it creates from then on belong to that namespace. A process
/// started from it (or from `pre_exec`) starts there too.
///
/// # Errors
///
/// `setns` failed (not root, or not a namespace).
pub(crate) fn enter(file: &File) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd as _;
        // SAFETY: setns takes a file descriptor that `file` keeps open, and
        // changes nothing but this thread's network namespace.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = file;
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "network namespaces are Linux only",
        ))
    }
}

/// Deletes the namespaces named `fusit-<pid>-...` of processes that no
/// longer run (a test killed before it could clean up). Best effort.
fn sweep_leftovers() {
    let Ok(entries) = std::fs::read_dir(NETNS_RUN_DIR) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(NETNS_PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new("/proc").join(pid.to_string()).exists() {
            match ip(&["netns", "del", &name]) {
                Ok(()) => tracing::info!("deleted the leftover network namespace {name}"),
                Err(e) => tracing::warn!("{e:#}"),
            }
        }
    }
}

/// A network namespace made here, with its loopback up; deleted on drop.
#[derive(Debug)]
struct Netns {
    name: String,
}

impl Netns {
    fn create(name: String) -> anyhow::Result<Netns> {
        ip(&["netns", "add", &name])?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Runs `ip -n NAME ARGS`.
    fn ip(&self, args: &[&str]) -> anyhow::Result<()> {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// A handle on the namespace, for [`enter`].
    fn file(&self) -> anyhow::Result<File> {
        let path = std::path::Path::new(NETNS_RUN_DIR).join(&self.name);
        File::open(&path).with_context(|| format!("opening {}", path.display()))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            tracing::warn!("deleting a network namespace: {e:#}");
        }
    }
}

/// The hub of a mesh's namespaces: a namespace holding the bridge `br0`
/// (`10.200.0.1/16`) that every node's namespace is plugged into.
#[derive(Debug)]
pub(crate) struct Network {
    id: String,
    hub: Netns,
}

impl Network {
    /// Makes the hub (after deleting what dead processes left behind).
    pub(crate) fn create() -> anyhow::Result<Network> {
        sweep_leftovers();
        let id = unique_id();
        let hub = Netns::create(format!("{id}-hub"))?;
        let bridge_ip = format!("{HUB_IP}/{BRIDGE_PREFIX}");
        hub.ip(&["link", "add", "br0", "type", "bridge"])?;
        hub.ip(&["addr", "add", &bridge_ip, "dev", "br0"])?;
        hub.ip(&["link", "set", "br0", "up"])?;
        Ok(Network { id, hub })
    }

    /// Makes node `node` of region `region`'s namespace, with `eth0` at
    /// [`netns_ip`] plugged into the bridge, and its API proxy.
    pub(crate) fn plug(&self, region: u8, node: u8) -> anyhow::Result<NodeNet> {
        let ns = Netns::create(format!("{}-{region}-{node}", self.id))?;
        let port = format!("v{region}-{node}");
        let addr = format!("{}/{BRIDGE_PREFIX}", netns_ip(region, node));
        ns.ip(&[
            "link",
            "add",
            "eth0",
            "type",
            "veth",
            "peer",
            "name",
            &port,
            "netns",
            &self.hub.name,
        ])?;
        self.hub
            .ip(&["link", "set", &port, "master", "br0", "up"])?;
        ns.ip(&["addr", "add", &addr, "dev", "eth0"])?;
        ns.ip(&["link", "set", "eth0", "up"])?;
        let proxy = ApiProxy::start(ns.file()?, &ns.name)?;
        Ok(NodeNet { proxy, ns })
    }

    /// A handle on the hub namespace, for a thread to [`enter`].
    pub(crate) fn hub_file(&self) -> anyhow::Result<File> {
        self.hub.file()
    }
}

/// A node's namespace and the proxy to its API. The proxy stops, then the
/// namespace is deleted, when this is dropped.
#[derive(Debug)]
pub(crate) struct NodeNet {
    proxy: ApiProxy,
    ns: Netns,
}

impl NodeNet {
    /// The namespace's name, for `ip netns exec NAME ...`.
    pub(crate) fn name(&self) -> &str {
        &self.ns.name
    }

    /// A handle on the namespace, for a process to [`enter`] before exec.
    pub(crate) fn file(&self) -> anyhow::Result<File> {
        self.ns.file()
    }

    /// Where the test reaches the node's API: the proxy's address.
    pub(crate) fn api(&self) -> SocketAddr {
        self.proxy.addr
    }

    /// Points the proxy at the API the node printed (inside its namespace).
    pub(crate) fn set_api(&self, inner: SocketAddr) {
        *self
            .proxy
            .inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(inner);
    }

    /// Takes the node's `eth0` down (`false`) or up (`true`).
    pub(crate) fn set_link(&self, up: bool) -> anyhow::Result<()> {
        self.ns
            .ip(&["link", "set", "eth0", if up { "up" } else { "down" }])
    }
}

/// A TCP proxy from `127.0.0.1` of the root namespace to a node's API on
/// `127.0.0.1` of its own namespace.
#[derive(Debug)]
struct ApiProxy {
    addr: SocketAddr,
    /// The node's API in its namespace; `None` before it first started
    /// (connections are then closed at once).
    inner: Arc<Mutex<Option<SocketAddr>>>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl ApiProxy {
    /// Listens here and starts the thread that enters `ns` and forwards.
    fn start(ns: File, name: &str) -> anyhow::Result<ApiProxy> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .context("binding the API proxy on 127.0.0.1")?;
        let addr = listener
            .local_addr()
            .context("reading the API proxy's address")?;
        let inner: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread = {
            let (inner, stop) = (Arc::clone(&inner), Arc::clone(&stop));
            thread::Builder::new()
                .name(format!("{name}-api-proxy"))
                .spawn(move || {
                    // The listener was made before: it stays in the root
                    // namespace, and so do the connections it accepts.
                    let entered = enter(&ns);
                    let ok = entered.is_ok();
                    let _ = ready_tx.send(entered);
                    if ok {
                        forward(&listener, &inner, &stop);
                    }
                })
                .context("spawning the API proxy's thread")?
        };
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(ApiProxy {
                addr,
                inner,
                stop,
                thread: Some(thread),
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(anyhow!(e).context(format!("entering the network namespace {name}")))
            }
            Err(_) => {
                let _ = thread.join();
                Err(anyhow!("the API proxy of {name} ended before it started"))
            }
        }
    }
}

impl Drop for ApiProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept; the thread then sees `stop`.
        let _ = TcpStream::connect_timeout(&self.addr, PROXY_CONNECT_TIMEOUT);
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::warn!("an API proxy thread panicked");
        }
    }
}

/// Accepts connections until `stop`, and pipes each to `inner`.
fn forward(listener: &TcpListener, inner: &Mutex<Option<SocketAddr>>, stop: &AtomicBool) {
    for client in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else {
            continue;
        };
        let target = *inner.lock().unwrap_or_else(PoisonError::into_inner);
        // No node yet, or it does not answer: the client sees the
        // connection close, as it would see it refused.
        let Some(target) = target else {
            continue;
        };
        if let Ok(server) = TcpStream::connect_timeout(&target, PROXY_CONNECT_TIMEOUT) {
            pipe(client, server);
        }
    }
}

/// Copies both ways between two connections, each way on its own thread,
/// passing on each half-close.
fn pipe(client: TcpStream, server: TcpStream) {
    let pairs = client
        .try_clone()
        .and_then(|c| server.try_clone().map(|s| (c, s)));
    let Ok((client2, server2)) = pairs else {
        return;
    };
    for (from, to) in [(client, server), (server2, client2)] {
        let _ = thread::Builder::new()
            .name("api-proxy-pipe".to_owned())
            .spawn(move || copy_then_close(from, to));
    }
}

fn copy_then_close(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}
