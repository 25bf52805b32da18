//! Fixed rate: a constant arrival rate of 5,000 iterations/s (or `--rate`)
//! for 10 s (the arrival scenario, one request per iteration), against
//! `oha -q` at the same rate.
//!
//! What counts is whether the rate is kept: the iterations started, within
//! 0.5 % of rate × duration, none dropped, and the p99 of the requests no
//! worse than oha's at the same rate and the same most requests in flight:
//! fusi-node's VUs (`--vus`, pre-allocated and the most) and oha's
//! connections. The requests in flight set the tail on a loaded client: each
//! response waits for the client's core to read those before it. oha at
//! 70,000/s on one core had a p99 of 0.78 ms with 50 connections and 4.99
//! ms with 200 (docs/benchmarks.md, "the tail is the requests in flight"). The median and the p90 are shown
//! beside it: the p99 of a 10 s round moves with every stall of the
//! machine, the body of the distribution with what the client adds.

use std::time::Duration;

use super::proc::TargetProc;
use super::throughput::{Client, Figures, fusi_run, oha, rotation, secs};
use super::{Setup, Spread, num, spread_cell};

/// Iterations per second, unless `--rate` says.
const RATE: u32 = 5_000;

/// One round of fusi-node.
#[derive(Debug, Clone, Copy)]
struct FusiRate {
    achieved: f64,
    dropped: f64,
    figures: Figures,
}

/// "p50 / p90 / p99" of a round, in ms.
fn body(f: &Figures) -> String {
    format!(
        "{} / {} / {}",
        num(f.p50_ms, 3),
        num(f.p90_ms, 3),
        num(f.p99_ms, 3)
    )
}

/// The medians of the rounds' p50, p90 and p99, as [`body`] writes them.
fn median_body(rounds: &[Figures]) -> String {
    let of = |pick: fn(&Figures) -> f64| {
        Spread::of(&rounds.iter().map(pick).collect::<Vec<_>>()).map(|s| s.median)
    };
    match (of(|f| f.p50_ms), of(|f| f.p90_ms), of(|f| f.p99_ms)) {
        (Some(p50), Some(p90), Some(p99)) => body(&Figures {
            rps: 0.0,
            p50_ms: p50,
            p90_ms: p90,
            p99_ms: p99,
        }),
        _ => "–".to_owned(),
    }
}

/// Runs the benchmark.
pub fn run(setup: &Setup) -> anyhow::Result<()> {
    let duration = setup.duration.unwrap_or(Duration::from_secs(10));
    let vus = setup.vus.unwrap_or(50);
    let conns = setup.peer_connections.unwrap_or(vus);
    let rate = setup.rate.unwrap_or(RATE);
    let arrival = setup.scenario("arrival")?;
    let target = TargetProc::start(&setup.testnet_bin, &setup.pin, &[])?;
    let expected = f64::from(rate) * duration.as_secs_f64();
    println!(
        "rate: arrival.wasm at {rate}/s for {} ({vus} VUs, at most {vus} requests in flight), \
         oha -q {rate} with {conns} connections, target {}",
        secs(duration),
        target.url
    );
    let mut clients = vec![Client::Fusi];
    if setup.tools.oha.is_some() {
        clients.push(Client::Oha);
    }
    let tmp = std::env::temp_dir().join(format!("fusi-bench-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let mut rows: Vec<(Option<FusiRate>, Option<Figures>)> = Vec::new();
    for round in 0..setup.rounds as usize {
        let mut row = (None, None);
        for client in rotation(&clients, round) {
            match client {
                Client::Fusi => {
                    let args = vec![
                        "--rate".to_owned(),
                        format!("{rate}/s"),
                        "--duration".to_owned(),
                        secs(duration),
                        "--vus".to_owned(),
                        vus.to_string(),
                        "--max-vus".to_owned(),
                        vus.to_string(),
                        "--graceful-stop".to_owned(),
                        "5s".to_owned(),
                        "--env".to_owned(),
                        format!("TARGET={}", target.url),
                    ];
                    let run = fusi_run(setup, &arrival, &args, duration, &tmp.join("rate.json"))?;
                    let r = FusiRate {
                        achieved: run.iterations / duration.as_secs_f64(),
                        dropped: run.dropped,
                        figures: run.figures,
                    };
                    eprintln!(
                        "round {}: fusi-node {} iterations/s ({} of {} expected), {} dropped, \
                         p50 / p90 / p99 {} ms",
                        round + 1,
                        num(r.achieved, 1),
                        num(run.iterations, 0),
                        num(expected, 0),
                        num(r.dropped, 0),
                        body(&r.figures)
                    );
                    row.0 = Some(r);
                }
                Client::Oha => {
                    let f = oha(setup, &target.url, conns, duration, Some(rate))?;
                    eprintln!(
                        "round {}: oha       {} req/s, p50 / p90 / p99 {} ms",
                        round + 1,
                        num(f.rps, 1),
                        body(&f)
                    );
                    row.1 = Some(f);
                }
                Client::Wrk => {}
            }
        }
        rows.push(row);
    }
    let _ = std::fs::remove_dir_all(&tmp);
    println!();
    println!(
        "| round | fusi-node iterations/s | off target | dropped | fusi-node p50 / p90 / p99 ms | oha req/s | oha p50 / p90 / p99 ms | p99 fusi/oha |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let off = |r: FusiRate| (r.achieved / f64::from(rate) - 1.0) * 100.0;
    for (i, (f, o)) in rows.iter().enumerate() {
        let dash = || "–".to_owned();
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            i + 1,
            f.map_or_else(dash, |f| num(f.achieved, 1)),
            f.map_or_else(dash, |f| format!("{:+.3} %", off(f))),
            f.map_or_else(dash, |f| num(f.dropped, 0)),
            f.map_or_else(dash, |f| body(&f.figures)),
            o.map_or_else(dash, |o| num(o.rps, 1)),
            o.map_or_else(dash, |o| body(&o)),
            match (f, o) {
                (Some(f), Some(o)) => format!("{:.2}", f.figures.p99_ms / o.p99_ms),
                _ => dash(),
            }
        );
    }
    let fusi: Vec<FusiRate> = rows.iter().filter_map(|r| r.0).collect();
    let ohas: Vec<Figures> = rows.iter().filter_map(|r| r.1).collect();
    let p99_ratios: Vec<f64> = rows
        .iter()
        .filter_map(|(f, o)| Some(f.as_ref()?.figures.p99_ms / o.as_ref()?.p99_ms))
        .collect();
    println!(
        "| median (min–max) | {} | {} | {} | {} | {} | {} | {} |",
        spread_cell(&fusi.iter().map(|f| f.achieved).collect::<Vec<_>>(), 1),
        spread_cell(&fusi.iter().map(|f| off(*f)).collect::<Vec<_>>(), 3),
        spread_cell(&fusi.iter().map(|f| f.dropped).collect::<Vec<_>>(), 0),
        median_body(&fusi.iter().map(|f| f.figures).collect::<Vec<_>>()),
        spread_cell(&ohas.iter().map(|o| o.rps).collect::<Vec<_>>(), 1),
        median_body(&ohas),
        spread_cell(&p99_ratios, 2),
    );
    Ok(())
}
