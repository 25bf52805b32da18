//! The mesh commands: `up`, `keygen`, `peers`, `status`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use tokio_util::sync::CancellationToken;

use crate::api::client::{ApiClient, TokenSource};
use crate::api::token::TOKEN_ENV;
use crate::api::{DEFAULT_API, PeersView, StatusView};
use crate::core::latency::LatencyMap;
use crate::core::mesh::bootstrap::{Family, Seed, SeedName, is_host_name};
use crate::core::wire::{MAX_NAME_LEN, validate_region};
use crate::net::{self, NodeConfig, meshkey};
use crate::telemetry::otlp::{Endpoint, OtlpConfig};

/// The long help of `fusi-node up`: how a mesh starts.
pub const UP_EXAMPLES: &str = "\
A node runs until Ctrl-C or SIGTERM. Start one on each host with the same mesh
key; every node but the first names any one node already up with --bootstrap,
and learns the rest from it.

  fusi-node keygen mesh.key          # once; copy the file to every host
  fusi-node up --mesh-key mesh.key --region fra
  fusi-node up --mesh-key mesh.key --region nrt \\
      --bootstrap /ip4/10.0.0.5/tcp/7400/p2p/12D3KooW...

--bootstrap also takes a host name, as NAME:PORT or /dns/NAME/tcp/PORT
(/dns4, /dns6 for one family): the node resolves it to every address it
has, dials each, and resolves it again every 30 s at most, so a DNS round
robin or a Kubernetes headless service (`--bootstrap
fusi.fusi.svc.cluster.local:7400`) bootstraps every node alike.

The first node prints its address (`p2p listening on ...`), and `fusi-node
status` shows it later. On a LAN, --mdns finds nodes without --bootstrap.

The node keeps its identity in --data-dir, so its peer id survives restarts.
The local API (for `fusi-node peers`, `status`, `run`...) listens on --api,
loopback only, and answers only requests with the node's API token: the node
makes it at first start in --data-dir/api.token (mode 0600), where the CLI on
this host reads it; a CLI elsewhere (through ssh -L) takes it from
FUSI_API_TOKEN. Requests from web pages (with an Origin header) are refused.

Testing flags: --emulate-latency delays every message from a node of another
region, in user space (for rehearsing geography on one machine; the testnet
sets it): `fra-nrt=120ms` both ways, `fra>nrt=70ms` one way.";

/// `fusi-node up`.
#[derive(Args, Debug)]
pub struct UpArgs {
    /// Where to listen for other nodes (a multiaddr); repeatable.
    #[arg(long, value_parser = listen_arg, default_value = "/ip4/0.0.0.0/tcp/7400")]
    listen: Vec<Multiaddr>,
    /// A node already in the mesh: an address (/ip4/10.0.0.5/tcp/7400[/p2p/12D3KooW...]
    /// or 10.0.0.5:7400) or a host name whose every address is dialed
    /// (fusi.example.com:7400, /dns/fusi.example.com/tcp/7400, /dns4, /dns6);
    /// repeatable. Retried with backoff until one answers; names are
    /// resolved again every 30 s at most.
    #[arg(long, value_name = "ADDR_OR_NAME", value_parser = dial_arg)]
    bootstrap: Vec<Seed>,
    /// Find nodes on the local network by multicast DNS.
    #[arg(long)]
    mdns: bool,
    /// This node's region (a-z, 0-9, '-'); runs split load by region.
    #[arg(long, default_value = "local", value_parser = region_arg)]
    region: String,
    /// This node's name [default: the host name].
    #[arg(long, value_parser = name_arg)]
    name: Option<String>,
    /// Where the node keeps its identity and data [default: $XDG_DATA_HOME/fusi-node,
    /// or ~/.local/share/fusi-node].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The local API address (loopback only; port 0 picks one).
    #[arg(long, env = "FUSI_API", value_parser = api_arg, default_value = DEFAULT_API)]
    api: SocketAddr,
    /// The mesh key file (from `fusi-node keygen`): only nodes with the same key connect.
    #[arg(long)]
    mesh_key: Option<PathBuf>,
    /// Run without a mesh key: any host that reaches --listen may join. Not for real use.
    #[arg(long, conflicts_with = "mesh_key")]
    insecure_open: bool,
    /// Emulated one-way latency between regions (testing): fra-nrt=120ms,fra>nrt=70ms.
    #[arg(long, value_parser = latency_arg)]
    emulate_latency: Option<Latency>,
    /// Emulated partition (testing): while FILE exists, the regions it names
    /// are cut off from the others; this node drops every message that
    /// crosses that line. Give every node of a testnet the same FILE.
    #[arg(long, value_name = "FILE")]
    emulate_partition_file: Option<PathBuf>,
    /// The local address this node's load traffic leaves from (for example 127.0.2.1 on a
    /// testnet); shown by `status`.
    #[arg(long)]
    source_ip: Option<IpAddr>,
    /// The most VUs this node will run; within a region, shares follow it.
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    max_vus: u32,
    /// Take part only in runs whose targets are all in this list, and refuse
    /// connections elsewhere: host names, IP addresses or CIDRs
    /// (`--allow-target 10.0.0.0/8 --allow-target api.example.com`). Without
    /// it, runs from the mesh may target any host.
    #[arg(long = "allow-target", value_name = "HOST_OR_CIDR", num_args = 1..)]
    allow_target: Vec<String>,
    /// Serve Prometheus metrics at http://ADDR/metrics (read-only, no token;
    /// docs/observability.md). The one listener that may bind a non-loopback
    /// address, for a Prometheus server on another host: whoever reaches it
    /// reads run ids, regions and counts (the node warns in its log).
    #[arg(long, value_name = "ADDR", value_parser = metrics_arg)]
    metrics_listen: Option<SocketAddr>,
    /// Push the same metrics to an OpenTelemetry collector over OTLP/HTTP
    /// (protobuf): its base URL, for example http://127.0.0.1:4318
    /// (`/v1/metrics` is added).
    #[arg(long, value_name = "URL", value_parser = otlp_endpoint_arg)]
    otlp_endpoint: Option<Endpoint>,
    /// How often to push to --otlp-endpoint (1s to 1h); a run's final
    /// numbers are pushed as soon as they are known, too.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = otlp_interval_arg,
          requires = "otlp_endpoint")]
    otlp_interval: std::time::Duration,
}

/// `fusi-node keygen`.
#[derive(Args, Debug)]
pub struct KeygenArgs {
    /// Where to write the new mesh key (never overwritten).
    file: PathBuf,
}

/// `fusi-node peers` and `fusi-node status`, and the node to ask of the
/// run commands.
#[derive(Args, Debug)]
pub struct ApiArgs {
    /// The node to ask: its API address.
    #[arg(long, env = "FUSI_API", value_parser = api_arg, default_value = DEFAULT_API)]
    pub(super) api: SocketAddr,
    /// The data directory of the node at --api, whose api.token the CLI
    /// sends once the node proved it knows it [default: the node's default,
    /// $XDG_DATA_HOME/fusi-node or ~/.local/share/fusi-node]. FUSI_API_TOKEN,
    /// when set, is the token instead (for a node on another host).
    #[arg(long)]
    pub(super) data_dir: Option<PathBuf>,
    /// Print the JSON the node sent.
    #[arg(long)]
    pub(super) json: bool,
}

impl ApiArgs {
    /// A client of the node at `--api`.
    pub(super) fn client(&self) -> ApiClient {
        ApiClient::new(self.api, token_source(self.data_dir.clone()))
    }
}

/// Where the CLI finds a node's token: [`TOKEN_ENV`] when set, else
/// `api.token` in `data_dir` or, without one, the default data directory.
pub(super) fn token_source(data_dir: Option<PathBuf>) -> TokenSource {
    TokenSource {
        env: std::env::var(TOKEN_ENV)
            .ok()
            .filter(|t| !t.trim().is_empty()),
        data_dir: data_dir.or_else(|| default_data_dir().ok()),
    }
}

/// `--emulate-latency`: its text (shown by `status`) and the parsed map.
#[derive(Debug, Clone)]
pub struct Latency(String, LatencyMap);

fn latency_arg(s: &str) -> Result<Latency, String> {
    LatencyMap::parse(s).map(|map| Latency(s.to_owned(), map))
}

fn region_arg(s: &str) -> Result<String, String> {
    validate_region(s).map(|()| s.to_owned())
}

fn name_arg(s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > MAX_NAME_LEN || s.chars().any(char::is_control) {
        return Err(format!(
            "a name is 1 to {MAX_NAME_LEN} bytes of printable text"
        ));
    }
    Ok(s.to_owned())
}

pub(super) fn api_arg(s: &str) -> Result<SocketAddr, String> {
    let trimmed = s.trim_start_matches("http://").trim_end_matches('/');
    trimmed.parse().map_err(|_| {
        format!("{s:?} is not an API address; write IP:PORT, for example {DEFAULT_API}")
    })
}

fn metrics_arg(s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|_| {
        format!(
            "{s:?} is not an address to serve metrics on; write IP:PORT, for example \
             127.0.0.1:9464 (or 0.0.0.0:9464 for a Prometheus server on another host)"
        )
    })
}

pub(super) fn otlp_endpoint_arg(s: &str) -> Result<Endpoint, String> {
    Endpoint::parse(s)
}

pub(super) fn otlp_interval_arg(s: &str) -> Result<std::time::Duration, String> {
    let every = super::duration_arg(s)?;
    if !(1..=3600).contains(&every.as_secs()) {
        return Err(format!("--otlp-interval {s}: push every 1s to 1h"));
    }
    Ok(every)
}

fn multiaddr(s: &str) -> Result<Multiaddr, String> {
    s.parse::<Multiaddr>().map_err(|e| {
        format!("{s:?} is not a multiaddr ({e}); write for example /ip4/10.0.0.5/tcp/7400")
    })
}

fn listen_arg(s: &str) -> Result<Multiaddr, String> {
    let addr = multiaddr(s)?;
    let mut parts = addr.iter();
    match (parts.next(), parts.next(), parts.next()) {
        (Some(Protocol::Ip4(_) | Protocol::Ip6(_)), Some(Protocol::Tcp(_)), None) => Ok(addr),
        _ => Err(format!(
            "{s:?}: a node listens on TCP at an IP address, for example /ip4/0.0.0.0/tcp/7400"
        )),
    }
}

const DIAL_FORMS: &str = "/ip4/10.0.0.5/tcp/7400[/p2p/12D3KooW...], 10.0.0.5:7400, \
     fusi.example.com:7400 or /dns/fusi.example.com/tcp/7400";

/// `--bootstrap`: a multiaddr (an IP or a name, TCP, optionally a peer
/// id), or `HOST:PORT` with a host name, an IPv4 address or `[IPv6]`.
fn dial_arg(s: &str) -> Result<Seed, String> {
    if !s.starts_with('/') {
        return host_port(s);
    }
    let addr = multiaddr(s)?;
    let mut parts = addr.iter();
    let (first, tcp, peer, rest) = (parts.next(), parts.next(), parts.next(), parts.next());
    let port = match tcp {
        Some(Protocol::Tcp(port)) if port != 0 => port,
        _ => return Err(format!("{s:?}: write a TCP port, as in {DIAL_FORMS}")),
    };
    let peer = match (peer, rest) {
        (None, None) => None,
        (Some(Protocol::P2p(id)), None) => Some(id.to_string()),
        _ => {
            return Err(format!(
                "{s:?}: after the TCP port only /p2p/PEER_ID may follow, as in {DIAL_FORMS}"
            ));
        }
    };
    let (host, family) = match first {
        Some(Protocol::Ip4(_) | Protocol::Ip6(_)) => return Ok(Seed::Address(addr.to_string())),
        Some(Protocol::Dns(host)) => (host, Family::Any),
        Some(Protocol::Dns4(host)) => (host, Family::V4),
        Some(Protocol::Dns6(host)) => (host, Family::V6),
        _ => {
            return Err(format!(
                "{s:?}: write an address or a host name, as in {DIAL_FORMS}"
            ));
        }
    };
    name_seed(s, &host, port, family, peer)
}

fn name_seed(
    s: &str,
    host: &str,
    port: u16,
    family: Family,
    peer: Option<String>,
) -> Result<Seed, String> {
    if !is_host_name(host) {
        return Err(format!(
            "{s:?}: {host:?} is not a host name (letters, digits, '-' and dots, at most 253 \
             bytes); write for example {DIAL_FORMS}"
        ));
    }
    Ok(Seed::Name(SeedName {
        host: host.to_ascii_lowercase(),
        port,
        family,
        peer,
    }))
}

/// `HOST:PORT`: an IP address becomes the multiaddr it names, a host name a
/// name to resolve.
fn host_port(s: &str) -> Result<Seed, String> {
    let usage =
        || format!("{s:?} is not an address or a host name with a port; write {DIAL_FORMS}");
    let (host, port) = s.rsplit_once(':').ok_or_else(usage)?;
    let port: u16 = port.parse().ok().filter(|p| *p != 0).ok_or_else(usage)?;
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        let ip: std::net::Ipv6Addr = v6.parse().map_err(|_| usage())?;
        return Ok(Seed::Address(format!("/ip6/{ip}/tcp/{port}")));
    }
    if let Ok(ip) = host.parse::<std::net::Ipv4Addr>() {
        return Ok(Seed::Address(format!("/ip4/{ip}/tcp/{port}")));
    }
    name_seed(s, host, port, Family::Any, None)
}

/// The data directory a node uses without --data-dir.
pub(super) fn default_data_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("fusi-node"));
    }
    if let Some(home) = std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(home).join(".local/share/fusi-node"));
    }
    anyhow::bail!("no home directory to keep the node's data in; pass --data-dir DIR")
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| {
            // At most MAX_NAME_LEN bytes, cut on a character boundary, or
            // peers would refuse this node's heartbeats.
            let mut name = String::new();
            for c in h.trim().chars().filter(|c| !c.is_control()) {
                if name.len() + c.len_utf8() > MAX_NAME_LEN {
                    break;
                }
                name.push(c);
            }
            name
        })
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "fusi-node".to_owned())
}

/// Resolves when SIGINT or SIGTERM arrives.
async fn signalled() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// `fusi-node up`: runs a node until a signal.
pub async fn up(args: UpArgs) -> anyhow::Result<ExitCode> {
    let mesh_key = match &args.mesh_key {
        Some(path) => Some(meshkey::read(path)?),
        None if !args.insecure_open => anyhow::bail!(
            "a node needs --mesh-key FILE: make a key once with `fusi-node keygen mesh.key`, copy the \
             file to every host, and start each node with --mesh-key mesh.key (or pass \
             --insecure-open for an open mesh, which any host that reaches it may join)"
        ),
        None => {
            eprintln!(
                "warning: --insecure-open: this mesh has no key. Any host that reaches this node's --listen \
                 address can join it and, once runs exist, make it send traffic. Use --mesh-key FILE \
                 (make one with `fusi-node keygen FILE`)."
            );
            None
        }
    };
    let allow_target = if args.allow_target.is_empty() {
        None
    } else {
        Some(crate::core::allow::AllowList::parse(&args.allow_target).map_err(anyhow::Error::msg)?)
    };
    let config = NodeConfig {
        allow_target,
        listen: args.listen,
        bootstrap: args.bootstrap,
        mdns: args.mdns,
        name: args.name.unwrap_or_else(host_name),
        region: args.region,
        data_dir: match args.data_dir {
            Some(dir) => dir,
            None => default_data_dir()?,
        },
        api: args.api,
        mesh_key,
        emulate_latency: args.emulate_latency.map(|Latency(text, map)| (text, map)),
        emulate_partition_file: args.emulate_partition_file,
        source_ip: args.source_ip,
        vu_limit: args.max_vus,
        metrics_listen: args.metrics_listen,
        otlp: args.otlp_endpoint.map(|endpoint| OtlpConfig {
            endpoint,
            interval: args.otlp_interval,
        }),
    };
    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        signalled().await;
        on_signal.cancel();
    });
    net::run(config, shutdown).await?;
    Ok(ExitCode::SUCCESS)
}

/// `fusi-node keygen`.
pub fn keygen(args: &KeygenArgs) -> anyhow::Result<ExitCode> {
    let key = meshkey::generate(&args.file)?;
    println!(
        "wrote a new mesh key to {} (fingerprint {}); copy it to every node and start each with --mesh-key {}",
        args.file.display(),
        key.fingerprint(),
        args.file.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// A peer id short enough for a table column.
pub(super) fn short_id(id: &str) -> String {
    if id.len() <= 16 {
        return id.to_owned();
    }
    format!("{}…{}", &id[..8], &id[id.len() - 6..])
}

fn ms(value: Option<f64>) -> String {
    value
        .map(|v| format!("{v:.2} ms"))
        .unwrap_or_else(|| "-".into())
}

/// Renders `fusi-node peers` as a table.
pub fn render_peers(view: &PeersView) -> String {
    if view.peers.is_empty() {
        return "no other members yet\n".to_owned();
    }
    let mut rows = vec![[
        "NAME".to_owned(),
        "REGION".to_owned(),
        "ADDRESS".to_owned(),
        "RTT".to_owned(),
        "CLOCK OFFSET".to_owned(),
        "LAST SEEN".to_owned(),
        "ID".to_owned(),
    ]];
    for p in &view.peers {
        let offset = match (p.offset_ms, p.bound_ms) {
            (Some(o), Some(b)) => format!("{o:+.3} ± {b:.3} ms"),
            _ => "-".into(),
        };
        let mut seen = format!("{:.1} s ago", p.last_seen_ms as f64 / 1000.0);
        if p.suspect {
            seen.push_str(" (suspect)");
        }
        rows.push([
            p.name.clone(),
            p.region.clone(),
            p.addresses.first().cloned().unwrap_or_else(|| "-".into()),
            ms(p.rtt_ms),
            offset,
            seen,
            short_id(&p.id),
        ]);
    }
    table(&rows)
}

/// Lays out rows (the first is the header) in columns two spaces apart.
pub(super) fn table<R: AsRef<[String]>>(rows: &[R]) -> String {
    let mut widths: Vec<usize> = Vec::new();
    for row in rows {
        for (i, cell) in row.as_ref().iter().enumerate() {
            let width = cell.chars().count();
            match widths.get_mut(i) {
                Some(w) => *w = (*w).max(width),
                None => widths.push(width),
            }
        }
    }
    let mut out = String::new();
    for row in rows {
        let line: Vec<String> = row
            .as_ref()
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// Renders `fusi-node status`.
pub fn render_status(s: &StatusView) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<12} {v}\n"));
    line("name", s.name.clone());
    line("id", s.id.clone());
    line("region", s.region.clone());
    line("version", s.version.clone());
    line("uptime", format!("{:.0} s", s.uptime_s));
    line(
        "mesh",
        match &s.key_fingerprint {
            Some(f) => format!("{} (key fingerprint {f})", s.mesh),
            None => format!("{} (no mesh key: anyone who reaches it may join)", s.mesh),
        },
    );
    line(
        "members",
        format!("{} ({} connected)", s.members, s.connected),
    );
    line(
        "capacity",
        format!("{} cores, up to {} VUs", s.cores, s.vu_limit),
    );
    line(
        "health",
        format!("cpu {:.0} %, {} sockets", s.cpu * 100.0, s.sockets),
    );
    line(
        "mesh traffic",
        format!(
            "{} sent, {} received since start",
            crate::summary::fmt_bytes(s.mesh_bytes_sent),
            crate::summary::fmt_bytes(s.mesh_bytes_received)
        ),
    );
    for addr in &s.listen {
        line("listening", format!("{addr}/p2p/{}", s.id));
    }
    if let Some(l) = &s.emulated_latency {
        line("emulating", format!("latency {l}"));
    }
    if let Some(ip) = &s.source_ip {
        line("load from", ip.clone());
    }
    line("data dir", s.data_dir.clone());
    out
}

/// Asks the node at `--api` for `path` and prints the view, rendered or as JSON.
pub(super) async fn show<T: serde::Serialize + serde::de::DeserializeOwned>(
    args: ApiArgs,
    path: &str,
    render: fn(&T) -> String,
) -> anyhow::Result<ExitCode> {
    let view: T = args.client().get(path).await?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&view).context("encoding")?
        );
    } else {
        print!("{}", render(&view));
    }
    Ok(ExitCode::SUCCESS)
}

/// `fusi-node peers`.
pub async fn peers(args: ApiArgs) -> anyhow::Result<ExitCode> {
    show::<PeersView>(args, "/v1/peers", render_peers).await
}

/// `fusi-node status`.
pub async fn status(args: ApiArgs) -> anyhow::Result<ExitCode> {
    show::<StatusView>(args, "/v1/status", render_status).await
}

pub(super) const DASHBOARD_HELP: &str = "\
Every node serves a live dashboard on its API address: the mesh (members,
regions, clock offsets and their bounds, health), the runs, and for a run
under way the merged view of every node, per region and per node, updated
every second; a finished run shows its report. Any node shows any run,
whichever node it was submitted to.

The address printed carries the node's API token after #token= (a part of
the address the browser keeps to itself): whoever has it can use the node's
API, so share it as you would the token. The API, and so the dashboard,
listens on loopback only; for a node on another host, forward its port:
  ssh -L 7401:127.0.0.1:7401 HOST      # then open the address printed there

Examples:
  fusi-node dashboard                   # prints http://127.0.0.1:7401/#token=...
  fusi-node dashboard --open            # and opens it in the desktop's browser
  fusi-node dashboard --api 127.0.0.1:7402 --data-dir /var/lib/fusi-node";

/// `fusi-node dashboard`.
#[derive(Args, Debug)]
pub struct DashboardArgs {
    /// The node whose dashboard to show: its API address.
    #[arg(long, env = "FUSI_API", value_parser = api_arg, default_value = DEFAULT_API)]
    api: SocketAddr,
    /// The data directory of the node at --api, whose api.token goes into
    /// the address [default: the node's default]. FUSI_API_TOKEN, when set,
    /// is the token instead.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Open the address in the desktop's browser (xdg-open; open on macOS).
    #[arg(long)]
    open: bool,
}

/// `fusi-node dashboard`: the dashboard's address, with the token, once
/// the node at `--api` proved it is the node whose token this is.
pub async fn dashboard(args: DashboardArgs) -> anyhow::Result<ExitCode> {
    let client = ApiClient::new(args.api, token_source(args.data_dir));
    let status: StatusView = client.get("/v1/status").await?;
    let token = client.token().await?;
    let url = format!("http://{}/#token={}", args.api, token.to_hex());
    eprintln!(
        "the dashboard of {} (region {}); the address carries the node's API token, share it as \
         you would the token",
        status.name, status.region
    );
    println!("{url}");
    if args.open {
        let opener = if cfg!(target_os = "macos") {
            "open"
        } else {
            "xdg-open"
        };
        if let Err(e) = std::process::Command::new(opener)
            .arg(&url)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
        {
            eprintln!("cannot open a browser with {opener} ({e}); open the address above yourself");
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_checked_with_a_fix_in_the_message() {
        assert!(listen_arg("/ip4/127.0.0.1/tcp/0").is_ok());
        assert!(listen_arg("/ip4/127.0.0.1/udp/1/quic-v1").is_err());
        assert!(
            dial_arg("/ip4/10.0.0.5/tcp/7400/udp/1")
                .unwrap_err()
                .contains("fusi.example.com:7400")
        );
        assert!(dial_arg("fusi.example.com").is_err());
        assert!(dial_arg("fusi.example.com:0").is_err());
        assert!(dial_arg("under_score.example:7400").is_err());
        assert!(dial_arg("[10.0.0.5]:7400").is_err());
        assert_eq!(
            api_arg("http://127.0.0.1:7401/"),
            Ok("127.0.0.1:7401".parse().unwrap())
        );
        assert!(api_arg("localhost").is_err());
        assert!(region_arg("Frankfurt").is_err());
        assert!(name_arg(&"x".repeat(65)).is_err());
    }

    #[test]
    fn bootstrap_takes_addresses_and_host_names() {
        let id = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN";
        let address = |a: &str| Ok(Seed::Address(a.to_owned()));
        let name = |host: &str, port, family, peer: Option<&str>| {
            Ok(Seed::Name(SeedName {
                host: host.to_owned(),
                port,
                family,
                peer: peer.map(str::to_owned),
            }))
        };
        let cases = [
            ("/ip4/10.0.0.5/tcp/7400", address("/ip4/10.0.0.5/tcp/7400")),
            (
                &format!("/ip6/::1/tcp/7400/p2p/{id}"),
                address(&format!("/ip6/::1/tcp/7400/p2p/{id}")),
            ),
            ("10.0.0.5:7400", address("/ip4/10.0.0.5/tcp/7400")),
            ("[fd00::5]:7400", address("/ip6/fd00::5/tcp/7400")),
            (
                "fusi.fusi.svc.cluster.local:7400",
                name("fusi.fusi.svc.cluster.local", 7400, Family::Any, None),
            ),
            ("localhost:9", name("localhost", 9, Family::Any, None)),
            (
                "Fusi-0.Example:1",
                name("fusi-0.example", 1, Family::Any, None),
            ),
            ("/dns/fusi/tcp/7400", name("fusi", 7400, Family::Any, None)),
            ("/dns4/fusi/tcp/7400", name("fusi", 7400, Family::V4, None)),
            (
                &format!("/dns6/fusi/tcp/7400/p2p/{id}"),
                name("fusi", 7400, Family::V6, Some(id)),
            ),
        ];
        for (arg, want) in cases {
            assert_eq!(dial_arg(arg), want, "{arg}");
        }
        for (bad, says) in [
            ("10.0.0.5", "not an address or a host name with a port"),
            ("fusi:http", "not an address or a host name with a port"),
            ("/dns/fusi/udp/7400", "write a TCP port"),
            ("/dns/fusi/tcp/0", "write a TCP port"),
            ("/dns/-x/tcp/7400", "is not a host name"),
            ("/ip4/10.0.0.5/tcp/7400/ws", "only /p2p/PEER_ID may follow"),
            ("/ip4/10.0.0/tcp/1", "not a multiaddr"),
        ] {
            let error = dial_arg(bad).unwrap_err();
            assert!(error.contains(says), "{bad}: {error}");
        }
    }

    #[test]
    fn the_peers_table_lines_up() {
        let peer = crate::api::PeerView {
            id: "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN".into(),
            name: "fra-2".into(),
            region: "fra".into(),
            version: "0.1.0".into(),
            addresses: vec!["/ip4/127.0.1.2/tcp/4000".into()],
            connected: true,
            suspect: false,
            last_seen_ms: 400,
            rtt_ms: Some(0.31),
            offset_ms: Some(0.012),
            bound_ms: Some(0.15),
            clock_samples: 8,
            cores: 2,
            vu_limit: 100,
            cpu: 0.1,
            sockets: 3,
        };
        let table = render_peers(&PeersView { peers: vec![peer] });
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[1].contains("+0.012 ± 0.150 ms"), "{table}");
        assert_eq!(lines[0].find("REGION"), lines[1].find("fra "));
        assert!(render_peers(&PeersView { peers: vec![] }).contains("no other members"));
    }
}
