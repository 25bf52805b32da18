//! Throughput: as many requests/s as the client can make against one
//! target, fusi-node (the hello scenario, in wasm, one connection per VU)
//! beside wrk and oha with as many connections.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, bail};

use super::proc::{TargetProc, run_ok};
use super::{Setup, num, spread_cell};

/// One client's figures in one round.
#[derive(Debug, Clone, Copy)]
pub struct Figures {
    /// Requests per second.
    pub rps: f64,
    /// The median request duration, ms.
    pub p50_ms: f64,
    /// The 90th percentile of the request duration, ms.
    pub p90_ms: f64,
    /// The 99th percentile of the request duration, ms.
    pub p99_ms: f64,
}

/// The clients, in the order of the first round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    /// fusi-node.
    Fusi,
    /// wrk.
    Wrk,
    /// oha.
    Oha,
}

impl Client {
    /// Its name in tables.
    pub fn name(self) -> &'static str {
        match self {
            Client::Fusi => "fusi-node",
            Client::Wrk => "wrk",
            Client::Oha => "oha",
        }
    }
}

/// The clients of round `round` (0-based): the order rotates every round.
pub fn rotation(clients: &[Client], round: usize) -> Vec<Client> {
    let n = clients.len().max(1);
    (0..clients.len())
        .map(|i| clients[(i + round) % n])
        .collect()
}

/// Seconds as `wrk -d` and `oha -z` take them.
pub fn secs(d: Duration) -> String {
    format!("{}s", d.as_secs().max(1))
}

/// The time a client gets beyond its load duration before it is killed.
pub fn limit(d: Duration) -> Duration {
    d + Duration::from_secs(60)
}

/// Runs the benchmark.
pub fn run(setup: &Setup) -> anyhow::Result<()> {
    let duration = setup.duration.unwrap_or(Duration::from_secs(10));
    let vus = setup.vus.unwrap_or(50);
    let conns = setup.peer_connections.unwrap_or(vus);
    let hello = setup.scenario("hello")?;
    let target = TargetProc::start(&setup.testnet_bin, &setup.pin, &[])?;
    println!(
        "throughput: hello.wasm at {vus} VUs, wrk and oha at {conns} connections, {} each, \
         target {}",
        secs(duration),
        target.url
    );
    let mut clients = vec![Client::Fusi];
    if setup.tools.wrk.is_some() {
        clients.push(Client::Wrk);
    }
    if setup.tools.oha.is_some() {
        clients.push(Client::Oha);
    }
    let tmp = std::env::temp_dir().join(format!("fusi-bench-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).context("cannot create a temporary directory")?;
    let mut rows: Vec<[Option<Figures>; 3]> = Vec::new();
    for round in 0..setup.rounds as usize {
        let mut row = [None; 3];
        for client in rotation(&clients, round) {
            let figures = match client {
                Client::Fusi => fusi(
                    setup,
                    &hello,
                    &target.url,
                    vus,
                    duration,
                    &tmp.join("fusi.json"),
                )?,
                Client::Wrk => wrk(setup, &target.url, conns, duration)?,
                Client::Oha => oha(setup, &target.url, conns, duration, None)?,
            };
            eprintln!(
                "round {}: {:<9} {} req/s, p99 {} ms",
                round + 1,
                client.name(),
                num(figures.rps, 0),
                num(figures.p99_ms, 3)
            );
            row[client as usize] = Some(figures);
        }
        rows.push(row);
    }
    let _ = std::fs::remove_dir_all(&tmp);
    print_table(&rows);
    Ok(())
}

fn ratio(a: Option<Figures>, b: Option<Figures>) -> Option<f64> {
    Some(a?.rps / b?.rps)
}

fn print_table(rows: &[[Option<Figures>; 3]]) {
    let cell = |f: Option<Figures>| {
        f.map_or_else(
            || "–".to_owned(),
            |f| format!("{} (p99 {} ms)", num(f.rps, 0), num(f.p99_ms, 2)),
        )
    };
    let ratio_cell = |r: Option<f64>| r.map_or_else(|| "–".to_owned(), |r| format!("{r:.2}"));
    println!();
    println!("| round | fusi-node req/s | wrk req/s | oha req/s | fusi/wrk | fusi/oha |");
    println!("|---|---|---|---|---|---|");
    for (i, row) in rows.iter().enumerate() {
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            i + 1,
            cell(row[0]),
            cell(row[1]),
            cell(row[2]),
            ratio_cell(ratio(row[0], row[1])),
            ratio_cell(ratio(row[0], row[2])),
        );
    }
    let col = |c: usize, f: fn(Figures) -> f64| -> Vec<f64> {
        rows.iter().filter_map(|r| r[c].map(f)).collect()
    };
    let ratios = |c: usize| -> Vec<f64> { rows.iter().filter_map(|r| ratio(r[0], r[c])).collect() };
    println!(
        "| median (min–max) | {} | {} | {} | {} | {} |",
        spread_cell(&col(0, |f| f.rps), 0),
        spread_cell(&col(1, |f| f.rps), 0),
        spread_cell(&col(2, |f| f.rps), 0),
        spread_cell(&ratios(1), 2),
        spread_cell(&ratios(2), 2),
    );
    println!(
        "| p99 ms, median (min–max) | {} | {} | {} | | |",
        spread_cell(&col(0, |f| f.p99_ms), 2),
        spread_cell(&col(1, |f| f.p99_ms), 2),
        spread_cell(&col(2, |f| f.p99_ms), 2),
    );
}

/// What fusi-node's JSON report says of a run.
#[derive(Debug, Clone, Copy)]
pub struct FusiRun {
    /// Requests and their rate and p99.
    pub figures: Figures,
    /// HTTP requests.
    pub requests: f64,
    /// Iterations completed.
    pub iterations: f64,
    /// Iterations dropped (arrival-rate executors).
    pub dropped: f64,
    /// Check passes, summed over checks.
    pub check_passes: f64,
}

/// Reads the figures out of fusi-node's JSON report.
///
/// # Errors
///
/// The report misses a field.
pub fn read_report(report: &serde_json::Value) -> anyhow::Result<FusiRun> {
    let field = |path: &[&str]| -> anyhow::Result<f64> {
        let mut v = report;
        for key in path {
            v = v
                .get(*key)
                .with_context(|| format!("the report has no {}", path.join(".")))?;
        }
        v.as_f64()
            .with_context(|| format!("{} in the report is not a number", path.join(".")))
    };
    let check_passes = report
        .pointer("/summary/checks")
        .and_then(|c| c.as_array())
        .map_or(0.0, |checks| {
            checks
                .iter()
                .filter_map(|c| c.get("passes").and_then(serde_json::Value::as_f64))
                .sum()
        });
    Ok(FusiRun {
        figures: Figures {
            rps: field(&["summary", "http", "rps"])?,
            p50_ms: field(&["summary", "http", "duration", "p50"])?,
            p90_ms: field(&["summary", "http", "duration", "p90"])?,
            p99_ms: field(&["summary", "http", "duration", "p99"])?,
        },
        requests: field(&["summary", "http", "requests"])?,
        iterations: field(&["summary", "iterations", "completed"])?,
        dropped: field(&["summary", "iterations", "dropped"])?,
        check_passes,
    })
}

/// Runs fusi-node on this machine with `args` after the scenario, and reads
/// its JSON report.
///
/// # Errors
///
/// It failed, or its report is not what it should be.
pub fn fusi_run(
    setup: &Setup,
    scenario: &Path,
    args: &[String],
    duration: Duration,
    out: &Path,
) -> anyhow::Result<FusiRun> {
    let mut cmd = setup.pin.client_command(&setup.node_bin);
    cmd.arg("run")
        .arg(scenario)
        .args(["--local", "--quiet", "--out"])
        .arg(out)
        .args(args);
    run_ok(cmd, limit(duration), "fusi-node run")?;
    let text = std::fs::read_to_string(out)
        .with_context(|| format!("fusi-node wrote no report to {}", out.display()))?;
    let report: serde_json::Value =
        serde_json::from_str(&text).context("fusi-node's report is not JSON")?;
    let run = read_report(&report)?;
    if run.requests > 0.0 && run.check_passes < run.requests {
        bail!(
            "fusi-node's checks passed {} times for {} requests: the target answered \
             errors, so the figures would not compare",
            run.check_passes,
            run.requests
        );
    }
    Ok(run)
}

fn fusi(
    setup: &Setup,
    hello: &Path,
    url: &str,
    vus: u32,
    duration: Duration,
    out: &Path,
) -> anyhow::Result<Figures> {
    let args = vec![
        "--vus".to_owned(),
        vus.to_string(),
        "--duration".to_owned(),
        secs(duration),
        "--graceful-stop".to_owned(),
        "5s".to_owned(),
        "--env".to_owned(),
        format!("TARGET={url}"),
    ];
    Ok(fusi_run(setup, hello, &args, duration, out)?.figures)
}

fn wrk(setup: &Setup, url: &str, conns: u32, duration: Duration) -> anyhow::Result<Figures> {
    let Some(bin) = &setup.tools.wrk else {
        bail!("no wrk");
    };
    let threads = setup.pin.client_cpus().min(conns as usize).max(1);
    let mut cmd = setup.pin.client_command(bin);
    cmd.arg(format!("-t{threads}"))
        .arg(format!("-c{conns}"))
        .arg(format!("-d{}", secs(duration)))
        .arg("--latency")
        .arg(format!("{url}/hello"));
    let done = run_ok(cmd, limit(duration), "wrk")?;
    parse_wrk(&done.stdout)
}

/// Requests/s and percentiles from wrk's output (with `--latency`).
///
/// # Errors
///
/// Either is missing.
pub fn parse_wrk(out: &str) -> anyhow::Result<Figures> {
    let rps = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .context("wrk printed no Requests/sec")?;
    let percentile = |p: &str| {
        out.lines()
            .find_map(|l| l.trim().strip_prefix(p))
            .and_then(|v| wrk_ms(v.trim()))
            .with_context(|| format!("wrk printed no {p} latency"))
    };
    if out.contains("Non-2xx or 3xx responses") || out.contains("Socket errors") {
        eprintln!("note: wrk saw errors:\n{out}");
    }
    Ok(Figures {
        rps,
        p50_ms: percentile("50%")?,
        p90_ms: percentile("90%")?,
        p99_ms: percentile("99%")?,
    })
}

/// `1.23ms`, `850.00us`, `1.20s` in milliseconds.
fn wrk_ms(v: &str) -> Option<f64> {
    let (digits, scale) = if let Some(d) = v.strip_suffix("us") {
        (d, 0.001)
    } else if let Some(d) = v.strip_suffix("ms") {
        (d, 1.0)
    } else if let Some(d) = v.strip_suffix('s') {
        (d, 1000.0)
    } else if let Some(d) = v.strip_suffix('m') {
        (d, 60_000.0)
    } else {
        return None;
    };
    digits.parse::<f64>().ok().map(|x| x * scale)
}

/// Runs oha for `duration` with `conns` connections (at `rate` requests/s
/// when given) and reads its JSON summary.
///
/// # Errors
///
/// It failed or printed no figures.
pub fn oha(
    setup: &Setup,
    url: &str,
    conns: u32,
    duration: Duration,
    rate: Option<u32>,
) -> anyhow::Result<Figures> {
    let Some(bin) = &setup.tools.oha else {
        bail!("no oha");
    };
    let mut cmd = setup.pin.client_command(bin);
    cmd.arg("-c")
        .arg(conns.to_string())
        .arg("-z")
        .arg(secs(duration))
        .args(["--no-tui", "--output-format", "json"]);
    if let Some(rate) = rate {
        cmd.arg("-q").arg(rate.to_string());
    }
    cmd.arg(format!("{url}/hello"));
    let done = run_ok(cmd, limit(duration), "oha")?;
    parse_oha(&done.stdout)
}

/// Requests/s and percentiles from oha's JSON output.
///
/// # Errors
///
/// It is not JSON or lacks the figures.
pub fn parse_oha(out: &str) -> anyhow::Result<Figures> {
    let json: serde_json::Value = serde_json::from_str(out).context("oha printed no JSON")?;
    let rps = json
        .pointer("/summary/requestsPerSec")
        .and_then(serde_json::Value::as_f64)
        .context("oha's JSON has no summary.requestsPerSec")?;
    let ms = |p: &str| {
        json.pointer(&format!("/latencyPercentiles/{p}"))
            .and_then(serde_json::Value::as_f64)
            .map(|s| s * 1000.0)
            .with_context(|| format!("oha's JSON has no latencyPercentiles.{p}"))
    };
    // Requests cut off by the end of the run are no errors of the target.
    if let Some(errors) = json.get("errorDistribution").and_then(|e| e.as_object()) {
        let real: Vec<_> = errors
            .iter()
            .filter(|(kind, _)| !kind.contains("deadline"))
            .collect();
        if !real.is_empty() {
            eprintln!("note: oha saw errors: {real:?}");
        }
    }
    Ok(Figures {
        rps,
        p50_ms: ms("p50")?,
        p90_ms: ms("p90")?,
        p99_ms: ms("p99")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_order_rotates_every_round() {
        let all = [Client::Fusi, Client::Wrk, Client::Oha];
        assert_eq!(rotation(&all, 0), all);
        assert_eq!(rotation(&all, 1), [Client::Wrk, Client::Oha, Client::Fusi]);
        assert_eq!(rotation(&all, 3), all);
        assert_eq!(rotation(&[Client::Fusi], 5), [Client::Fusi]);
    }

    #[test]
    fn wrk_output_is_read() {
        let out = "Running 5s test @ http://127.0.0.1:1/hello
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   381.21us  100.00us   5.00ms   90.00%
  Latency Distribution
     50%  350.00us
     75%  400.00us
     90%  500.00us
     99%    1.20ms
  670000 requests in 5.00s, 70.00MB read
Requests/sec: 134021.55
Transfer/sec:     14.00MB
";
        let f = parse_wrk(out).expect("figures");
        assert!((f.rps - 134021.55).abs() < 1e-6);
        assert!((f.p50_ms - 0.35).abs() < 1e-9);
        assert!((f.p90_ms - 0.5).abs() < 1e-9);
        assert!((f.p99_ms - 1.2).abs() < 1e-9);
        assert_eq!(wrk_ms("850.00us"), Some(0.85));
        assert_eq!(wrk_ms("2.00s"), Some(2000.0));
        assert!(parse_wrk("nothing").is_err());
    }

    #[test]
    fn oha_json_is_read() {
        let out = r#"{"summary":{"successRate":1.0,"requestsPerSec":123000.5},
            "latencyPercentiles":{"p50":0.0003,"p90":0.0007,"p99":0.0012},"errorDistribution":{}}"#;
        let f = parse_oha(out).expect("figures");
        assert!((f.rps - 123000.5).abs() < 1e-9);
        assert!((f.p50_ms - 0.3).abs() < 1e-9);
        assert!((f.p90_ms - 0.7).abs() < 1e-9);
        assert!((f.p99_ms - 1.2).abs() < 1e-9);
        assert!(parse_oha("{}").is_err());
    }

    #[test]
    fn fusi_reports_are_read() {
        let report = serde_json::json!({"summary": {
            "http": {"requests": 100, "rps": 10.0,
                "duration": {"p50": 0.5, "p90": 0.9, "p99": 1.5}},
            "iterations": {"completed": 100, "dropped": 2},
            "checks": [{"name": "status is 200", "passes": 100, "fails": 0}]}});
        let run = read_report(&report).expect("figures");
        assert_eq!(
            (run.requests, run.dropped, run.check_passes),
            (100.0, 2.0, 100.0)
        );
        assert_eq!(
            (run.figures.p50_ms, run.figures.p90_ms, run.figures.p99_ms),
            (0.5, 0.9, 1.5)
        );
        assert!(read_report(&serde_json::json!({})).is_err());
    }
}
