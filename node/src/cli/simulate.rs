//! `fusi-node simulate`: the real cores of many nodes under virtual time
//! ([`crate::sim`]), and what it costs them.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use crate::sim::{
    BYTES_PER_PAIR, KindTraffic, MAX_INTERVALS, MAX_NODES, MAX_REGIONS, PhaseReport, Progress,
    SimConfig, SimReport, Spread, memory_needed, simulate_showing,
};

pub const SIMULATE_HELP: &str = "\
What it measures, in virtual seconds and in messages and bytes per node
(mean and most), by kind of message:
  membership  every node starts within 1 s, dialing one of 3 seed nodes; done
              when every node lists every other as live and has a clock
              estimate of each
  leader      a run is submitted to one node; done when every node names the
              same leader and holds the same armed plan
  shards      every node runs its share for --intervals seconds, sends a shard a
              second and its last one to the run's leader and the next in
              line; done when every node holds every shard (anti-entropy
              spreads them once the run ends)
  frozen      one node, drawn by the seed, freezes as SIGSTOP would: it does
              nothing and reads nothing; done when every other node holds it
              as suspected
and the real time the simulation took. Every 10 s of real time it says on
stderr where it stands (phase, virtual time, members listed, memory).

The model: the real MeshCore and RunsCore of each node, the real wire types
(sizes are their encodings), the real anti-entropy rules; gossip as gossipsub
with this node's settings (mesh of 6 among the connected peers, publish to
every connected peer, forward to the mesh, IDONTWANT over 1 KB); one-way delays
of 20-150 ms between regions, 0.5 ms within one; clocks off by up to 50 ms.
Not modelled: lazy gossip (IHAVE/IWANT), bandwidth and CPU limits, peer
scoring, crashes. docs/architecture.md describes the model and its limits.

Examples:
  fusi-node simulate --nodes 1000
  fusi-node simulate --nodes 100 --seed 7 --loss 0.05 --drop 0.02 --regions 3 --json";

/// `fusi-node simulate`.
#[derive(Args, Debug)]
pub struct SimulateArgs {
    /// How many nodes (2 to 10241, the most a mesh holds). The simulator
    /// holds every node's view of every other: about 1.6 KB of memory for
    /// each pair, 6.5 GB at 2,000 nodes. It warns at the start when the
    /// machine has less memory available than that.
    #[arg(long, default_value_t = 1000, value_parser = nodes_arg)]
    nodes: usize,
    /// The seed: one seed gives one run, event for event.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Chance that one gossip transmission is lost (0 to <1).
    #[arg(long, default_value_t = 0.01, value_parser = probability_arg)]
    loss: f64,
    /// Chance that a node discards a gossip message it sees first, as an
    /// overloaded node does; later copies are duplicates, so only
    /// anti-entropy brings a lost shard back (0 to <1).
    #[arg(long, default_value_t = 0.01, value_parser = probability_arg)]
    drop: f64,
    /// How many regions the nodes are spread over (1 to 16).
    #[arg(long, default_value_t = 4, value_parser = regions_arg)]
    regions: usize,
    /// How many one-second intervals each share runs (1 to 60).
    #[arg(long, default_value_t = 10, value_parser = intervals_arg)]
    intervals: u32,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

fn nodes_arg(s: &str) -> Result<usize, String> {
    let n: usize = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of nodes"))?;
    if !(2..=MAX_NODES).contains(&n) {
        return Err(format!("give 2 to {MAX_NODES} nodes"));
    }
    Ok(n)
}

fn regions_arg(s: &str) -> Result<usize, String> {
    let n: usize = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of regions"))?;
    if !(1..=MAX_REGIONS).contains(&n) {
        return Err(format!("give 1 to {MAX_REGIONS} regions"));
    }
    Ok(n)
}

fn intervals_arg(s: &str) -> Result<u32, String> {
    let n: u32 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a number of intervals"))?;
    if !(1..=MAX_INTERVALS).contains(&n) {
        return Err(format!("give 1 to {MAX_INTERVALS} intervals"));
    }
    Ok(n)
}

fn probability_arg(s: &str) -> Result<f64, String> {
    let p: f64 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a probability (e.g. 0.01)"))?;
    if !(0.0..1.0).contains(&p) {
        return Err("give a probability from 0 up to (not including) 1, e.g. 0.01".into());
    }
    Ok(p)
}

/// Runs the simulation and prints its report.
pub fn run(args: &SimulateArgs) -> anyhow::Result<ExitCode> {
    let config = SimConfig {
        nodes: args.nodes,
        seed: args.seed,
        loss: args.loss,
        drop: args.drop,
        regions: args.regions,
        intervals: args.intervals,
        ..SimConfig::default()
    };
    if let Some(warning) = memory_warning(args.nodes, available_memory()) {
        eprintln!("{warning}");
    }
    // Thousands of nodes take minutes: say where it stands on stderr.
    let report = simulate_showing(&config, Duration::from_secs(10), &mut |p| {
        eprintln!("{}", progress_line(p));
    })?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    let done = [
        &report.membership,
        &report.idle,
        &report.leader,
        &report.shards,
    ]
    .iter()
    .all(|p| p.seconds.is_some());
    Ok(if done {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// A warning when a simulation of `nodes` needs more memory than is
/// `available`: it would run for minutes and then fail to allocate.
fn memory_warning(nodes: usize, available: Option<u64>) -> Option<String> {
    let needed = memory_needed(nodes);
    let available = available?;
    (needed > available).then(|| {
        format!(
            "simulate: {nodes} nodes need about {} of memory ({:.1} KB for each pair of \
             nodes); this machine has {} available, so the simulation will likely stop \
             when it runs out: take fewer --nodes",
            bytes(needed as f64),
            BYTES_PER_PAIR as f64 / 1e3,
            bytes(available as f64)
        )
    })
}

/// The memory available to a new process, from `/proc/meminfo` (Linux).
fn available_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// One line of where a simulation under way stands.
fn progress_line(p: &Progress) -> String {
    let mut line = format!(
        "simulate: {:.0} s, {} phase at {:.1} virtual s, {:.0} of {} members listed a node on average",
        p.wall_s,
        p.phase,
        p.virtual_s,
        p.members_mean,
        p.nodes.saturating_sub(1),
    );
    if matches!(p.phase, "shards" | "frozen") {
        line.push_str(&format!(
            ", {} of {} nodes hold every shard",
            p.complete, p.nodes
        ));
    }
    line.push_str(&format!(", {:.1} M events", p.events as f64 / 1e6));
    if let Some(b) = p.resident_bytes {
        line.push_str(&format!(", {} resident", bytes(b as f64)));
    }
    line
}

fn secs(s: Option<f64>) -> String {
    s.map_or_else(|| "not reached".to_owned(), |s| format!("{s:.2} s"))
}

fn count(s: Spread) -> String {
    format!("{:.0} (max {})", s.mean, s.max)
}

fn bytes(b: f64) -> String {
    match b {
        b if b >= 1e9 => format!("{:.2} GB", b / 1e9),
        b if b >= 1e6 => format!("{:.2} MB", b / 1e6),
        b if b >= 1e3 => format!("{:.1} kB", b / 1e3),
        b => format!("{b:.0} B"),
    }
}

fn traffic_row(t: &KindTraffic, over_s: f64) -> Vec<String> {
    let per_s = |v: f64| {
        if over_s > 0.0 {
            format!("{:.0}", v / over_s)
        } else {
            "-".into()
        }
    };
    vec![
        format!("  {}", t.kind),
        count(t.sent),
        count(t.received),
        per_s(t.sent.mean),
        bytes(t.bytes_sent.mean),
        bytes(t.bytes_received.mean),
        format!("{}/s", bytes(t.bytes_sent.max as f64 / over_s.max(1e-9))),
    ]
}

fn render_phase(p: &PhaseReport, out: &mut String) {
    out.push_str(&format!(
        "{}: {}  (traffic over {:.2} s, per node)\n",
        p.name,
        secs(p.seconds),
        p.counted_s
    ));
    let mut rows = vec![vec![
        "  kind".to_owned(),
        "sent".into(),
        "received".into(),
        "sent/s".into(),
        "bytes out".into(),
        "bytes in".into(),
        "most out".into(),
    ]];
    for t in p.by_kind.iter().chain([&p.total]) {
        rows.push(traffic_row(t, p.counted_s));
    }
    out.push_str(&super::mesh::table(&rows));
}

/// The report as text.
pub fn render(r: &SimReport) -> String {
    let mut out = format!(
        "{} nodes in {} regions, seed {}, loss {}, drop {}, {} intervals per share\n\n",
        r.nodes, r.regions, r.seed, r.loss, r.drop, r.intervals
    );
    render_phase(&r.membership, &mut out);
    out.push_str(&format!(
        "  every node listed every other as live after {}; clock estimates of all took the rest\n\n",
        secs(r.members_listed_s)
    ));
    render_phase(&r.idle, &mut out);
    if let Some(c) = &r.idle_connections {
        out.push_str(&format!(
            "  connections open per node at its end: {:.1} on average, {} at most\n",
            c.mean, c.max
        ));
    }
    out.push('\n');
    render_phase(&r.leader, &mut out);
    out.push_str(&format!(
        "  every node named the same leader after {}\n\n",
        secs(r.leader_agreed_s)
    ));
    render_phase(&r.shards, &mut out);
    out.push_str(&format!(
        "  {} shards; {} filled by anti-entropy; every shard everywhere {} after the last was sealed\n",
        r.shards_total,
        r.shards_by_sync,
        secs(r.shards_after_last_s)
    ));
    if let Some(ms) = r.start_spread_ms {
        out.push_str(&format!(
            "  real start instants within {ms:.2} ms of each other\n"
        ));
    }
    if let Some(f) = &r.frozen_node {
        out.push('\n');
        render_phase(&r.frozen, &mut out);
        out.push_str(&format!(
            "  one node of {} (watched by {}) froze; every other node held it as lost after {}\n",
            f.region,
            f.watchers,
            secs(r.frozen.seconds)
        ));
    }
    out.push_str(&format!(
        "\nfalse suspicions after convergence: {}\n{} events, {:.1} virtual s in {:.1} s of real time\n",
        r.suspicions, r.events, r.virtual_s, r.wall_s
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_simulation_larger_than_the_memory_is_warned_of_with_what_it_needs() {
        let here = Some(24_000_000_000);
        let Some(warning) = memory_warning(10_000, here) else {
            panic!("no warning for 10,000 nodes in 24 GB");
        };
        assert!(
            warning.contains("10000 nodes need about 169.98 GB")
                && warning.contains("24.00 GB available")
                && warning.contains("fewer --nodes"),
            "{warning}"
        );
        assert_eq!(memory_warning(1_000, here), None);
        assert_eq!(memory_warning(10_000, None), None);
    }
}
