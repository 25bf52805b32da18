//! Mesh overhead: what coordination costs, on 10 nodes of this machine
//! (`--nodes` for more, split 4:3:3 over three regions) running one 60 s
//! test of the hello scenario (10 VUs across the mesh, each pausing 100 ms
//! per iteration, so the load itself stays small).
//!
//! - Connections per node: `connected` of every node's `/v1/status` at the
//!   end of the idle seconds (a node keeps 16 at most, and gossipsub's mesh).
//! - Idle CPU per node: each node process's user and system time
//!   (`/proc/PID/stat`) over the 10 idle seconds before each run, as a
//!   share of one core.
//! - Mesh bytes/s per node: the difference of every node's
//!   `mesh_bytes_sent` and `mesh_bytes_received` (`/v1/status`, counted on
//!   its TCP connections: heartbeats, clock exchanges, run messages,
//!   shards, gossipsub's relaying and the anti-entropy answers) over the
//!   run, and over 10 idle seconds before it for comparison.
//! - The full report: `GET /v1/runs/{id}/report` on every node, timed end
//!   to end (read the stored shards, merge, encode, answer); the reports of
//!   all nodes must be equal.
//! - From `run` to the first request: from the instant the bench starts
//!   `fusi-node run --api` to the target's first request.
//! - The start skew: the spread of the nodes' real starts, in the leader's
//!   clock, as the run reports it.

use std::net::SocketAddr;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};

use super::proc::run_ok;
use super::throughput::{limit, secs};
use super::{Setup, num, spread_cell};
use fusi_testnet::{API_TOKEN_ENV, Mesh, MeshConfig, TargetConfig, get_json, spawn_target};

/// The regions of the mesh, with their share of the nodes in tenths.
const REGIONS: [(&str, usize); 3] = [("fra", 4), ("nrt", 3), ("ewr", 3)];

/// `nodes` split over [`REGIONS`] by their shares, the first taking what
/// rounding leaves.
fn regions(nodes: usize) -> Vec<(&'static str, usize)> {
    let tenths: usize = REGIONS.iter().map(|(_, n)| n).sum();
    let mut out: Vec<(&str, usize)> = REGIONS
        .iter()
        .map(|(r, n)| (*r, nodes * n / tenths))
        .collect();
    let given: usize = out.iter().map(|(_, n)| n).sum();
    out[0].1 += nodes - given;
    out.retain(|(_, n)| *n > 0);
    out
}

/// A process's user and system CPU time so far, in seconds (Linux), or
/// `None` where /proc does not say.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name, in parentheses, may hold spaces: count fields
    // after its closing parenthesis (utime and stime are fields 14, 15).
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf only reads a configuration value.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (per_second > 0).then(|| ticks / per_second as f64)
}

/// How long the mesh is watched idle before each run.
const IDLE: Duration = Duration::from_secs(10);

/// One round's figures.
#[derive(Debug, Clone)]
struct Round {
    /// Per node: bytes/s sent and received during the run.
    run_sent: Vec<f64>,
    run_received: Vec<f64>,
    /// Per node: bytes/s sent while idle.
    idle_sent: Vec<f64>,
    /// Per node: CPU while idle, as a share of one core.
    idle_cpu: Vec<f64>,
    /// Per node: connections open at the end of the idle seconds.
    connections: Vec<f64>,
    /// Per node: ms to get the full report.
    report_ms: Vec<f64>,
    /// Shards in the report.
    shards: f64,
    first_request_ms: f64,
    skew_ms: f64,
    clock_bound_ms: f64,
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NAN, f64::max)
}

fn unix_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// Every node's (sent, received) mesh bytes.
fn traffic(apis: &[SocketAddr], token: &str) -> anyhow::Result<Vec<(f64, f64)>> {
    apis.iter()
        .map(|api| {
            let status = get_json(*api, token, "/v1/status")?;
            let field = |name: &str| {
                status
                    .get(name)
                    .and_then(serde_json::Value::as_f64)
                    .with_context(|| {
                        format!("the node at {api} reports no {name}: is it an older fusi-node?")
                    })
            };
            Ok((field("mesh_bytes_sent")?, field("mesh_bytes_received")?))
        })
        .collect()
}

/// Every node's open connections.
fn connections(apis: &[SocketAddr], token: &str) -> anyhow::Result<Vec<f64>> {
    apis.iter()
        .map(|api| {
            get_json(*api, token, "/v1/status")?
                .get("connected")
                .and_then(serde_json::Value::as_f64)
                .with_context(|| format!("the node at {api} reports no connections"))
        })
        .collect()
}

/// How long after a run every node may take to hold every shard.
const SETTLE_WITHIN: Duration = Duration::from_secs(30);

/// Runs the benchmark.
pub fn run(setup: &Setup) -> anyhow::Result<()> {
    let duration = setup.duration.unwrap_or(Duration::from_secs(60));
    let vus = setup.vus.unwrap_or(10);
    let hello = setup.scenario("hello")?;
    let nodes = setup.nodes.unwrap_or(10) as usize;
    let regions = regions(nodes);
    println!(
        "mesh: {nodes} nodes ({}) on loopback, hello.wasm at {vus} VUs with SLEEP_MS=100 for {}",
        regions
            .iter()
            .map(|(r, n)| format!("{r}:{n}"))
            .collect::<Vec<_>>()
            .join(","),
        secs(duration)
    );
    let mut mesh = Mesh::start(MeshConfig::new(&setup.node_bin, &regions))?;
    mesh.wait_converged(Duration::from_secs((nodes as u64 * 3).max(60)))?;
    // Let the clock estimates settle before the first start is measured.
    thread::sleep(Duration::from_secs(5));
    let apis: Vec<SocketAddr> = mesh.nodes().iter().map(|n| n.api).collect();
    let pids: Vec<u32> = mesh.nodes().iter().map(|n| n.pid).collect();
    let cpu = || pids.iter().map(|p| cpu_seconds(*p)).collect::<Vec<_>>();
    let token = mesh.api_token().to_owned();
    let tmp = mesh.dir().join("bench");
    std::fs::create_dir_all(&tmp)?;
    let mut rounds = Vec::new();
    for round in 0..setup.rounds as usize {
        let target = spawn_target(TargetConfig::default())?;
        let before_idle = traffic(&apis, &token)?;
        let cpu_before = cpu();
        let idle_start = Instant::now();
        thread::sleep(IDLE);
        let before = traffic(&apis, &token)?;
        let cpu_after = cpu();
        let connections = connections(&apis, &token)?;
        let idle_secs = idle_start.elapsed().as_secs_f64();
        let idle_cpu = cpu_after
            .iter()
            .zip(&cpu_before)
            .filter_map(|(a, b)| Some((a.as_ref()? - b.as_ref()?) / idle_secs))
            .collect();
        let idle_sent = before
            .iter()
            .zip(&before_idle)
            .map(|(a, b)| (a.0 - b.0) / idle_secs)
            .collect();
        // Submit to a different node every round.
        let api = apis[round % apis.len()];
        let out = tmp.join(format!("round-{round}.json"));
        let mut cmd = std::process::Command::new(&setup.node_bin);
        cmd.env(API_TOKEN_ENV, &token)
            .arg("run")
            .arg(&hello)
            .arg("--api")
            .arg(api.to_string())
            .args(["--quiet", "--vus"])
            .arg(vus.to_string())
            .arg("--duration")
            .arg(secs(duration))
            .args(["--graceful-stop", "5s", "--env"])
            .arg(format!("TARGET={}", target.url()))
            .args(["--env", "SLEEP_MS=100", "--out"])
            .arg(&out);
        let submitted = unix_ms();
        let started = Instant::now();
        run_ok(cmd, limit(duration), "fusi-node run --api")?;
        let run_secs = started.elapsed().as_secs_f64();
        let after = traffic(&apis, &token)?;
        let stats = target.stats();
        target.shutdown();
        let first = stats
            .first_request_unix_ms
            .context("the target saw no request")? as f64;
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&out).context("no report written")?)
                .context("the report is not JSON")?;
        let id = report
            .get("run_id")
            .and_then(serde_json::Value::as_str)
            .context("the report has no run_id")?
            .to_owned();
        let view = get_json(api, &token, &format!("/v1/runs/{id}"))?;
        let f = |name: &str| view.get(name).and_then(serde_json::Value::as_f64);
        // Each node's start against T0, in the leader's clock, with its bound.
        let starts: Vec<String> = view["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| {
                Some(format!(
                    "{} {:+.3} (±{:.3})",
                    n["name"].as_str()?,
                    n["start_offset_ms"].as_f64()?,
                    n["bound_ms"].as_f64()?
                ))
            })
            .collect();
        eprintln!(
            "round {}: starts against T0, ms: {}",
            round + 1,
            starts.join(", ")
        );
        // Shards go to the run's leader while it runs and reach every
        // other node by anti-entropy once it has ended: wait until every
        // node holds every shard before comparing their reports.
        let settle = Instant::now();
        for node in &apis {
            loop {
                let r = get_json(*node, &token, &format!("/v1/runs/{id}/report"))?;
                let settled = r
                    .pointer("/completeness/nodes_incomplete")
                    .and_then(serde_json::Value::as_array)
                    .is_some_and(Vec::is_empty);
                if settled {
                    break;
                }
                if settle.elapsed() > SETTLE_WITHIN {
                    bail!(
                        "the node at {node} lacks shards {} s after the run: {}",
                        SETTLE_WITHIN.as_secs(),
                        r.get("completeness").cloned().unwrap_or_default()
                    );
                }
                thread::sleep(Duration::from_millis(100));
            }
        }
        println!(
            "round {}: every node held every shard {:.2} s after the run's CLI returned",
            round + 1,
            settle.elapsed().as_secs_f64()
        );
        let mut report_ms = Vec::new();
        let mut first_report: Option<serde_json::Value> = None;
        for node in &apis {
            let t = Instant::now();
            let r = get_json(*node, &token, &format!("/v1/runs/{id}/report"))?;
            report_ms.push(t.elapsed().as_secs_f64() * 1000.0);
            match &first_report {
                None => first_report = Some(r),
                Some(first) if *first != r => {
                    bail!("the node at {node} builds another report than {}", apis[0])
                }
                Some(_) => {}
            }
        }
        let shards = report
            .pointer("/completeness/shards_received")
            .and_then(serde_json::Value::as_f64)
            .unwrap_or(f64::NAN);
        let r = Round {
            run_sent: after
                .iter()
                .zip(&before)
                .map(|(a, b)| (a.0 - b.0) / run_secs)
                .collect(),
            run_received: after
                .iter()
                .zip(&before)
                .map(|(a, b)| (a.1 - b.1) / run_secs)
                .collect(),
            idle_sent,
            idle_cpu,
            connections,
            report_ms,
            shards,
            first_request_ms: first - submitted,
            skew_ms: f("start_skew_ms").unwrap_or(f64::NAN),
            clock_bound_ms: f("clock_bound_ms").unwrap_or(f64::NAN),
        };
        eprintln!(
            "round {}: mesh bytes/s per node sent {} (max {}), received {} (idle: sent {}); \
             report {} ms (median of {} nodes, {} shards); run→first request {} ms; \
             skew {} ms (bound ±{} ms); connections per node {} (max {})",
            round + 1,
            num(mean(&r.run_sent), 0),
            num(max(&r.run_sent), 0),
            num(mean(&r.run_received), 0),
            num(mean(&r.idle_sent), 0),
            num(
                super::Spread::of(&r.report_ms).map_or(f64::NAN, |s| s.median),
                1
            ),
            r.report_ms.len(),
            num(r.shards, 0),
            num(r.first_request_ms, 0),
            num(r.skew_ms, 3),
            num(r.clock_bound_ms, 3),
            num(mean(&r.connections), 1),
            num(max(&r.connections), 0),
        );
        rounds.push(r);
    }
    let col = |f: &dyn Fn(&Round) -> f64| rounds.iter().map(f).collect::<Vec<f64>>();
    println!();
    println!("| measure | median (min–max) of {} rounds |", rounds.len());
    println!("|---|---|");
    let rows: [(&str, Vec<f64>, usize); 14] = [
        (
            "mesh bytes/s sent per node, mean of nodes",
            col(&|r| mean(&r.run_sent)),
            0,
        ),
        (
            "mesh bytes/s sent, busiest node",
            col(&|r| max(&r.run_sent)),
            0,
        ),
        (
            "mesh bytes/s received per node, mean of nodes",
            col(&|r| mean(&r.run_received)),
            0,
        ),
        (
            "mesh bytes/s received, busiest node",
            col(&|r| max(&r.run_received)),
            0,
        ),
        (
            "mesh bytes/s sent per node while idle",
            col(&|r| mean(&r.idle_sent)),
            0,
        ),
        (
            "connections per node, mean of nodes",
            col(&|r| mean(&r.connections)),
            1,
        ),
        (
            "connections, most of a node",
            col(&|r| max(&r.connections)),
            0,
        ),
        (
            "CPU per node while idle, % of a core, mean of nodes",
            col(&|r| 100.0 * mean(&r.idle_cpu)),
            2,
        ),
        (
            "CPU while idle, % of a core, busiest node",
            col(&|r| 100.0 * max(&r.idle_cpu)),
            2,
        ),
        (
            "full report, ms (median of the nodes)",
            col(&|r| super::Spread::of(&r.report_ms).map_or(f64::NAN, |s| s.median)),
            1,
        ),
        (
            "full report, ms (slowest node)",
            col(&|r| max(&r.report_ms)),
            1,
        ),
        ("shards in the report", col(&|r| r.shards), 0),
        (
            "`run` to the first request, ms",
            col(&|r| r.first_request_ms),
            0,
        ),
        ("start skew, ms", col(&|r| r.skew_ms), 3),
    ];
    for (name, values, decimals) in rows {
        println!("| {name} | {} |", spread_cell(&values, decimals));
    }
    println!(
        "| clock error bound, ms | {} |",
        spread_cell(&col(&|r| r.clock_bound_ms), 3)
    );
    drop(mesh);
    Ok(())
}
