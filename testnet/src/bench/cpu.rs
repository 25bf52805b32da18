//! CPU per request: what one request costs the client, fusi-node (the hello
//! scenario in wasm) beside oha, whatever else the machine is doing.
//!
//! Requests/s on a shared machine move with the neighbours; the CPU time a
//! client spends per request moves much less. Each client makes 10,000 and
//! then 110,000 requests with 50 connections, and the difference of the
//! two runs' CPU time (user and system, from `getrusage`) over the 100,000
//! extra requests is the cost of one request, start-up and compile cancelled
//! out.

use std::time::Duration;

use super::proc::{TargetProc, run_ok};
use super::throughput::{Client, rotation};
use super::{Setup, num, spread_cell};

/// Requests of the short and the long run.
const SHORT: u64 = 10_000;
const LONG: u64 = 110_000;

/// The longest a run may take.
const LIMIT: Duration = Duration::from_secs(600);

/// Runs the benchmark.
pub fn run(setup: &Setup) -> anyhow::Result<()> {
    let vus = setup.vus.unwrap_or(50);
    let hello = setup.scenario("hello")?;
    let target = TargetProc::start(&setup.testnet_bin, &setup.pin, &[])?;
    println!(
        "cpu: {SHORT} and {LONG} requests at {vus} VUs/connections, target {}",
        target.url
    );
    let mut clients = vec![Client::Fusi];
    if setup.tools.oha.is_some() {
        clients.push(Client::Oha);
    }
    // Per client: (user, system) µs per request, one entry per round.
    let mut rows: Vec<[Option<(f64, f64)>; 3]> = Vec::new();
    for round in 0..setup.rounds as usize {
        let mut row = [None; 3];
        for client in rotation(&clients, round) {
            let mut cpu = Vec::new();
            for n in [SHORT, LONG] {
                let cmd = match client {
                    Client::Fusi => {
                        let mut cmd = setup.pin.client_command(&setup.node_bin);
                        cmd.arg("run")
                            .arg(&hello)
                            .args(["--local", "--quiet", "--vus"])
                            .arg(vus.to_string())
                            .arg("--iterations")
                            .arg(n.to_string())
                            .args(["--duration", "10m", "--env"])
                            .arg(format!("TARGET={}", target.url));
                        cmd
                    }
                    Client::Oha | Client::Wrk => {
                        let Some(oha) = &setup.tools.oha else {
                            continue;
                        };
                        let mut cmd = setup.pin.client_command(oha);
                        cmd.arg("-c")
                            .arg(vus.to_string())
                            .arg("-n")
                            .arg(n.to_string())
                            .arg("--no-tui")
                            .arg(format!("{}/hello", target.url));
                        cmd
                    }
                };
                cpu.push(run_ok(cmd, LIMIT, client.name())?.cpu);
            }
            let [short, long] = cpu[..] else {
                continue;
            };
            let per = |a: Duration, b: Duration| {
                b.saturating_sub(a).as_secs_f64() * 1e6 / (LONG - SHORT) as f64
            };
            let (user, system) = (per(short.0, long.0), per(short.1, long.1));
            eprintln!(
                "round {}: {:<9} {} us CPU per request (user {}, system {})",
                round + 1,
                client.name(),
                num(user + system, 1),
                num(user, 1),
                num(system, 1)
            );
            row[client as usize] = Some((user, system));
        }
        rows.push(row);
    }
    println!();
    println!("| client | µs CPU per request | user | system |");
    println!("|---|---|---|---|");
    for client in clients {
        let of = |f: fn((f64, f64)) -> f64| -> Vec<f64> {
            rows.iter()
                .filter_map(|r| r[client as usize].map(f))
                .collect()
        };
        println!(
            "| {} | {} | {} | {} |",
            client.name(),
            spread_cell(&of(|(u, s)| u + s), 1),
            spread_cell(&of(|(u, _)| u), 1),
            spread_cell(&of(|(_, s)| s), 1),
        );
    }
    Ok(())
}
