//! Memory per VU: the resident memory of `fusi-node run` at 10, 1,000 and
//! 20,000 VUs of the hello scenario, each VU sleeping 1 s per iteration
//! (`SLEEP_MS=1000`), as a k6 script with `sleep(1)` would.
//!
//! The figure per VU is the peak resident memory above the 10-VU run,
//! divided by the VUs added; the page tables (`VmPTE`, which `VmRSS` leaves
//! out) are counted the same way. Each VU holds its wasm instance, its
//! fiber stack, its tags and its keep-alive connection, so the runs also
//! show which operating-system limit bites first (open files, local
//! ports): the node's own warnings are passed on. A run of more VUs than
//! this process may open files (`--vus 100000` on a machine that allows
//! 20,000) points its VUs at a closed port instead: each connect is
//! refused, so no VU holds a connection, and the table says so; the most
//! VUs that can hold one (19,000 there) are measured too.

use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use super::proc::TargetProc;
use super::throughput::{limit, read_report, secs};
use super::{Setup, num, spread_cell};

/// The smallest run, the baseline.
const BASE_VUS: u32 = 10;

/// One run's measurements.
#[derive(Debug, Clone, Copy)]
struct Sample {
    peak_kib: f64,
    /// The peak of the page tables, in KiB.
    pte_kib: f64,
    requests: f64,
    failed: f64,
    /// The highest requests/s of the report's intervals that start in the
    /// first 5 s: how fast the VUs' first connections opened.
    early_rps: f64,
}

/// Runs the benchmark.
pub fn run(setup: &Setup) -> anyhow::Result<()> {
    let duration = setup.duration.unwrap_or(Duration::from_secs(12));
    let largest = setup.vus.unwrap_or(20_000).max(BASE_VUS + 1);
    let mut sizes = vec![BASE_VUS];
    if largest > 1_000 {
        sizes.push(1_000);
    }
    let connects = |vus: u32| open_files().is_none_or(|n| u64::from(vus) + 256 <= n);
    // Where the largest size cannot hold its connections here, the most
    // VUs (in thousands) that can are measured as well: a sleeping VU with
    // its connection, and the storm of their first connects, as near the
    // largest size as this machine's open-file limit allows.
    if let Some(files) = open_files()
        && !connects(largest)
    {
        let most = u32::try_from(files.saturating_sub(256) / 1_000 * 1_000).unwrap_or(u32::MAX);
        if most > 1_000 {
            sizes.push(most);
        }
    }
    sizes.push(largest);
    let hello = setup.scenario("hello")?;
    raise_map_count(largest);
    let target = TargetProc::start(&setup.testnet_bin, &setup.pin, &[])?;
    println!(
        "memory: hello.wasm with SLEEP_MS=1000 at {} VUs, {} each, target {}",
        sizes
            .iter()
            .map(|n| num(f64::from(*n), 0))
            .collect::<Vec<_>>()
            .join(", "),
        secs(duration),
        target.url
    );
    let closed = closed_url()?;
    for vus in sizes.iter().filter(|v| !connects(**v)) {
        println!(
            "note: {} VUs need more open files than this process may have ({}), so their \
             VUs connect to a closed port ({closed}) and hold no connection",
            num(f64::from(*vus), 0),
            open_files().map_or("?".to_owned(), |n| n.to_string())
        );
    }
    let tmp = std::env::temp_dir().join(format!("fusi-bench-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let mut rounds: Vec<Vec<Sample>> = Vec::new();
    for round in 0..setup.rounds as usize {
        let mut row = vec![None; sizes.len()];
        for k in 0..sizes.len() {
            let i = (k + round) % sizes.len();
            let vus = sizes[i];
            let url = if connects(vus) { &target.url } else { &closed };
            let s = measure(setup, &hello, url, vus, duration, &tmp)?;
            eprintln!(
                "round {}: {} VUs: peak RSS {} KiB, {} requests ({} failed), {} requests/s at best in the first 5 s",
                round + 1,
                num(f64::from(vus), 0),
                num(s.peak_kib, 0),
                num(s.requests, 0),
                num(s.failed, 0),
                num(s.early_rps, 0)
            );
            row[i] = Some(s);
        }
        rounds.push(row.into_iter().flatten().collect());
    }
    let _ = std::fs::remove_dir_all(&tmp);
    println!();
    println!(
        "| VUs | peak RSS KiB, median (min–max) | KiB per VU above {BASE_VUS} VUs | page tables, KiB per VU | connections | requests/s | best requests/s in the first 5 s | failed |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for (i, vus) in sizes.iter().enumerate() {
        let peaks: Vec<f64> = rounds.iter().map(|r| r[i].peak_kib).collect();
        let per_vu: Vec<f64> = rounds
            .iter()
            .map(|r| (r[i].peak_kib - r[0].peak_kib) / f64::from(vus - BASE_VUS))
            .collect();
        let pte_per_vu: Vec<f64> = rounds
            .iter()
            .map(|r| (r[i].pte_kib - r[0].pte_kib) / f64::from(vus - BASE_VUS))
            .collect();
        let rps: Vec<f64> = rounds
            .iter()
            .map(|r| r[i].requests / duration.as_secs_f64())
            .collect();
        let failed: Vec<f64> = rounds.iter().map(|r| r[i].failed).collect();
        let early: Vec<f64> = rounds.iter().map(|r| r[i].early_rps).collect();
        let above = |values: &[f64]| {
            if i == 0 {
                "–".to_owned()
            } else {
                spread_cell(values, 1)
            }
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            num(f64::from(*vus), 0),
            spread_cell(&peaks, 0),
            above(&per_vu),
            above(&pte_per_vu),
            if connects(*vus) {
                "one a VU"
            } else {
                "none (refused)"
            },
            spread_cell(&rps, 0),
            spread_cell(&early, 0),
            spread_cell(&failed, 0),
        );
    }
    Ok(())
}

/// The kernel's `vm.max_map_count`.
const MAX_MAP_COUNT: &str = "/proc/sys/vm/max_map_count";

/// Makes room for `vus` VUs' memory mappings (fusi-node counts 8 per VU,
/// see `node/src/limits.rs`): the default of 65,530 fills at about 9,300
/// VUs. As root the bench raises it, saying so; otherwise it says what to
/// run, and the node's own warning and error follow.
fn raise_map_count(vus: u32) {
    let needed = u64::from(vus) * 8 + 2_000;
    let Some(now) = std::fs::read_to_string(MAX_MAP_COUNT)
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
    else {
        return;
    };
    if now >= needed {
        return;
    }
    match std::fs::write(MAX_MAP_COUNT, needed.to_string()) {
        Ok(()) => println!(
            "note: raised vm.max_map_count from {now} to {needed} for {vus} VUs (8 mappings each)"
        ),
        Err(e) => println!(
            "note: vm.max_map_count is {now}, too low for {vus} VUs ({needed} needed) and cannot \
             be raised here ({e}); run `sysctl -w vm.max_map_count={needed}` as root"
        ),
    }
}

/// `VmRSS` and `VmPTE` of a process, in KiB.
fn rss_and_pte_kib(pid: u32) -> Option<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<f64> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    };
    Some((field("VmRSS:")?, field("VmPTE:").unwrap_or(0.0)))
}

/// This process's soft open-file limit (which the node inherits), if
/// there is one.
fn open_files() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit through a valid, exclusive pointer.
    let got = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    (got && limit.rlim_cur != libc::RLIM_INFINITY).then_some(limit.rlim_cur)
}

/// A URL on 127.0.0.1 where nothing listens: a port the kernel gave a
/// listener that is closed again.
fn closed_url() -> anyhow::Result<String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .context("cannot find a free port on 127.0.0.1")?;
    let port = listener.local_addr()?.port();
    drop(listener);
    Ok(format!("http://127.0.0.1:{port}"))
}

fn measure(
    setup: &Setup,
    hello: &std::path::Path,
    url: &str,
    vus: u32,
    duration: Duration,
    tmp: &std::path::Path,
) -> anyhow::Result<Sample> {
    let out = tmp.join(format!("memory-{vus}.json"));
    let mut cmd = setup.pin.client_command(&setup.node_bin);
    cmd.arg("run")
        .arg(hello)
        .args(["--local", "--quiet", "--vus"])
        .arg(vus.to_string())
        .arg("--duration")
        .arg(secs(duration))
        .args(["--graceful-stop", "3s", "--env"])
        .arg(format!("TARGET={url}"))
        .args(["--env", "SLEEP_MS=1000", "--out"])
        .arg(&out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = cmd.spawn().context("cannot start fusi-node run")?;
    let stderr = child.stderr.take();
    let errors = thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut pipe) = stderr {
            let _ = std::io::Read::read_to_string(&mut pipe, &mut text);
        }
        text
    });
    let pid = child.id();
    let (mut peak, mut pte) = (0.0f64, 0.0f64);
    let status = loop {
        if let Some((rss, tables)) = rss_and_pte_kib(pid) {
            peak = peak.max(rss);
            pte = pte.max(tables);
        }
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if started.elapsed() > limit(duration) {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "fusi-node run with {vus} VUs ran past {:?}",
                limit(duration)
            );
        }
        thread::sleep(Duration::from_millis(100));
    };
    let errors = errors.join().unwrap_or_default();
    for line in errors
        .lines()
        .filter(|l| l.contains("open files") || l.contains("local ports"))
    {
        println!("note at {vus} VUs: {line}");
    }
    if !status.success() {
        bail!("fusi-node run with {vus} VUs failed ({status}):\n{errors}");
    }
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).context("fusi-node wrote no report")?)
            .context("fusi-node's report is not JSON")?;
    let run = read_report(&report)?;
    let failed = report
        .pointer("/summary/http/failed")
        .and_then(serde_json::Value::as_f64)
        .unwrap_or(0.0);
    let early_rps = report
        .pointer("/summary/timeline")
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
        .filter(|p| p["t_s"].as_f64().is_some_and(|t| t < 5.0))
        .filter_map(|p| p["rps"].as_f64())
        .fold(0.0, f64::max);
    Ok(Sample {
        peak_kib: peak,
        pte_kib: pte,
        requests: run.requests,
        failed,
        early_rps,
    })
}
