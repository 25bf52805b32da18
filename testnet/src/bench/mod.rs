//! `fusi-testnet bench`: every benchmark of docs/benchmarks.md behind one
//! command.
//!
//! A benchmark measures; it never passes or fails. Each one starts what it
//! needs (a target, a mesh, the peers wrk and oha), runs every client in
//! turn, `--rounds` times, rotating the order every round (A B C, B C A,
//! ...) because the machines we measure on are shared and noisy, and prints
//! each round and then the median and spread (min–max) as a Markdown table
//! ready for docs/benchmarks.md, headed by the machine and the date. Ratios
//! against a peer are taken within a round, never across rounds.
//!
//! Everything talks to 127.0.0.1 only, and every load is bounded in time.

mod cpu;
mod memory;
mod mesh;
mod proc;
mod rate;
mod sim;
mod throughput;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};

pub use proc::Tools;

/// Examples shown by `fusi-testnet bench --help`.
pub const EXAMPLES: &str = "\
Examples:
  scripts/bench throughput                    # builds, then runs the line below
  fusi-testnet bench throughput
  fusi-testnet bench rate --rounds 5
  fusi-testnet bench rate --rate 90000            # half of throughput's maximum
  fusi-testnet bench memory
  fusi-testnet bench mesh
  fusi-testnet bench sim
  fusi-testnet bench cpu
  fusi-testnet bench throughput --vus 20000 --peer-connections 200 \\
      --target-cores 0-5 --client-cores 6-15     # a 16-core machine";

/// The benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BenchName {
    /// The hello scenario at 50 VUs against the target, target pinned to one
    /// core and the client to another: requests/s and p99 of fusi-node, wrk
    /// and oha, and fusi-node's ratios to them.
    Throughput,
    /// A constant arrival rate of 5,000 iterations/s (or --rate) for 10 s: the achieved
    /// rate, dropped iterations, and p99 against `oha -q 5000`.
    Rate,
    /// Resident memory of fusi-node at 10, 1,000 and 20,000 VUs of the hello
    /// scenario sleeping 1 s per iteration, and the memory per VU.
    Memory,
    /// 10 nodes on this machine (or --nodes) run a 60 s test: mesh bytes/s
    /// and idle CPU per node, the time to build the full report, from `run`
    /// to the first request, and the start skew.
    Mesh,
    /// CPU time per request of fusi-node and oha (10,000 then 110,000
    /// requests; the difference over the extra 100,000), the figure that
    /// moves least on a shared machine.
    Cpu,
    /// The sans-IO core of 1,000 nodes under virtual time
    /// (`fusi-node simulate`): membership, leader agreement and shard
    /// spread, in virtual seconds and messages per node.
    Sim,
}

/// Flags of `fusi-testnet bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// The benchmark to run.
    #[arg(value_enum)]
    name: BenchName,

    /// How many rounds; every round runs each client once, in a rotated
    /// order. The tables give the median and the spread of the rounds.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=50))]
    rounds: u32,

    /// How long each client loads the target in a round (throughput: 10s,
    /// rate: 10s, memory: 12s per size, mesh: 60s).
    #[arg(long, value_name = "DURATION", value_parser = crate::parse_duration_arg)]
    duration: Option<Duration>,

    /// VUs of fusi-node (throughput: 50; memory: the largest size, 20000;
    /// mesh: 10 across the mesh; rate: 50, pre-allocated and the most).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    vus: Option<u32>,

    /// Connections of wrk and oha [default: as many as fusi-node's VUs].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    peer_connections: Option<u32>,

    /// CPUs the target runs on, as `taskset -c` takes them (`0`, `0-5`)
    /// [default: 0 on a machine with 2 or more cores, else not pinned].
    #[arg(long, value_name = "CPUS")]
    target_cores: Option<String>,

    /// CPUs the clients (fusi-node, wrk, oha) run on [default: every core
    /// but the target's].
    #[arg(long, value_name = "CPUS")]
    client_cores: Option<String>,

    /// The fusi-node binary [default: fusi-node next to this executable].
    #[arg(long, value_name = "PATH")]
    node_bin: Option<PathBuf>,

    /// Where the example scenarios' .wasm files are [default:
    /// scenarios/target/wasm32-wasip1/release, as `scripts/bench` builds them].
    #[arg(long, value_name = "DIR")]
    scenarios: Option<PathBuf>,

    /// Do not install a missing wrk (apt-get) or oha (cargo install); leave
    /// that peer out instead.
    #[arg(long)]
    no_install: bool,

    /// Nodes of the simulation (sim) [default: 1000] or of the local mesh
    /// (mesh) [default: 10].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(2..=100_000))]
    nodes: Option<u32>,

    /// Iterations per second of the rate bench, and oha's `-q` [default:
    /// 5000]. Half of what `bench throughput` reaches measures the p99 at
    /// half the machine's maximum.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    rate: Option<u32>,
}

/// What every benchmark gets: its flags, resolved.
#[derive(Debug)]
pub struct Setup {
    /// Rounds.
    pub rounds: u32,
    /// The flag, when given.
    pub duration: Option<Duration>,
    /// The flag, when given.
    pub vus: Option<u32>,
    /// The flag, when given.
    pub peer_connections: Option<u32>,
    /// fusi-node.
    pub node_bin: PathBuf,
    /// This executable, for the target.
    pub testnet_bin: PathBuf,
    /// The scenarios' directory.
    pub scenarios: PathBuf,
    /// Where the target and the clients run.
    pub pin: proc::Pinning,
    /// The peers found.
    pub tools: Tools,
    /// The flag, when given.
    pub nodes: Option<u32>,
    /// The flag, when given.
    pub rate: Option<u32>,
}

impl Setup {
    /// The path of an example scenario, checked to exist.
    pub fn scenario(&self, name: &str) -> anyhow::Result<PathBuf> {
        let path = self.scenarios.join(format!("{name}.wasm"));
        if !path.is_file() {
            bail!(
                "no scenario {}: build the examples first (`scripts/bench` does, or \
                 `fusi-node build scenarios`), or point --scenarios at their directory",
                path.display()
            );
        }
        Ok(path)
    }
}

/// Runs the benchmark named in `args`.
///
/// # Errors
///
/// A missing binary or scenario, a tool that cannot be installed, a client
/// that fails or overruns its time; each error says which and what to do.
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    fusi_testnet::raise_open_files();
    let exe = std::env::current_exe().context("cannot find this executable's path")?;
    let dir = exe.parent().unwrap_or(Path::new("."));
    let node_bin = args
        .node_bin
        .clone()
        .unwrap_or_else(|| dir.join("fusi-node"));
    if !node_bin.is_file() {
        bail!(
            "fusi-node not found at {}: build it (`cargo build --release -p fusi-node`, \
             or run `scripts/bench`, which builds everything) or pass --node-bin",
            node_bin.display()
        );
    }
    let pin = proc::Pinning::new(args.target_cores.clone(), args.client_cores.clone())?;
    let needs_peers = matches!(
        args.name,
        BenchName::Throughput | BenchName::Rate | BenchName::Cpu
    );
    let tools = if needs_peers {
        Tools::find(!args.no_install, args.name == BenchName::Throughput)
    } else {
        Tools::default()
    };
    let setup = Setup {
        rounds: args.rounds,
        duration: args.duration,
        vus: args.vus,
        peer_connections: args.peer_connections,
        node_bin,
        testnet_bin: exe.clone(),
        scenarios: args
            .scenarios
            .clone()
            .unwrap_or_else(|| PathBuf::from("scenarios/target/wasm32-wasip1/release")),
        pin,
        tools,
        nodes: args.nodes,
        rate: args.rate,
    };
    println!("{}", machine_line(&setup));
    match args.name {
        BenchName::Throughput => throughput::run(&setup),
        BenchName::Rate => rate::run(&setup),
        BenchName::Memory => memory::run(&setup),
        BenchName::Mesh => mesh::run(&setup),
        BenchName::Sim => sim::run(&setup),
        BenchName::Cpu => cpu::run(&setup),
    }
}

/// `machine: N cores, M GiB, CPU, date YYYY-MM-DD; target on CPUS, clients
/// on CPUS`. The CPU is named because the ratios move with it: the engine
/// of 5071dff made 0.84× and 0.87× wrk on the VM of 2026-12-07 and 0.92× on
/// an AMD EPYC VM the next day (docs/benchmarks.md).
fn machine_line(setup: &Setup) -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or_else(
            || "? GiB".to_owned(),
            |kib| format!("{:.0} GiB", kib / 1048576.0),
        );
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| cpu_model(&info))
        .unwrap_or_else(|| "CPU unknown".to_owned());
    format!(
        "machine: {cores} cores, {mem_gib}, {cpu}, {}; {}",
        today(),
        setup.pin.describe()
    )
}

/// The first processor's model in `/proc/cpuinfo`, with its family and
/// model numbers (a VM often shows only the brand, as `AMD EPYC`):
/// `AMD EPYC (family 25, model 17)`. `None` when it names no model.
fn cpu_model(cpuinfo: &str) -> Option<String> {
    let processor = cpuinfo.split("\n\n").next()?;
    let field = |name: &str| {
        processor.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            (key.trim() == name).then(|| value.trim().to_owned())
        })
    };
    let name = field("model name").filter(|n| !n.is_empty())?;
    Some(match (field("cpu family"), field("model")) {
        (Some(family), Some(model)) => format!("{name} (family {family}, model {model})"),
        _ => name,
    })
}

/// Today's UTC date, `YYYY-MM-DD`.
fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (y, m, d) = civil_from_days(i64::try_from(secs / 86_400).unwrap_or(0));
    format!("{y:04}-{m:02}-{d:02}")
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        u32::try_from(m).unwrap_or(1),
        u32::try_from(d).unwrap_or(1),
    )
}

/// The median and the spread of some measurements.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    /// The median (the mean of the middle two for an even count).
    pub median: f64,
    /// The smallest.
    pub min: f64,
    /// The largest.
    pub max: f64,
}

impl Spread {
    /// The spread of `values`, or `None` when there are none (NaNs are left
    /// out).
    pub fn of(values: &[f64]) -> Option<Spread> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Spread {
            median,
            min: v[0],
            max: v[n - 1],
        })
    }

    /// `median (min–max)`, each with `decimals` decimals.
    pub fn show(&self, decimals: usize) -> String {
        format!(
            "{} ({}–{})",
            num(self.median, decimals),
            num(self.min, decimals),
            num(self.max, decimals)
        )
    }
}

/// `x` with `decimals` decimals and thin-space-free thousands separators
/// (`134 021`), as docs/benchmarks.md writes numbers.
pub fn num(x: f64, decimals: usize) -> String {
    let text = format!("{x:.decimals$}");
    let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
    let (sign, digits) = int.strip_prefix('-').map_or(("", int), |d| ("-", d));
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(' ');
        }
        grouped.push(c);
    }
    if frac.is_empty() {
        format!("{sign}{grouped}")
    } else {
        format!("{sign}{grouped}.{frac}")
    }
}

/// The spread of a column, or `–` when it has no values.
pub fn spread_cell(values: &[f64], decimals: usize) -> String {
    Spread::of(values).map_or_else(|| "–".to_owned(), |s| s.show(decimals))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_and_spread_of_odd_and_even_counts() {
        let s = Spread::of(&[3.0, 1.0, 2.0]).expect("values");
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        let s = Spread::of(&[4.0, 1.0, 2.0, 3.0, f64::NAN]).expect("values");
        assert_eq!((s.median, s.min, s.max), (2.5, 1.0, 4.0));
        assert_eq!(Spread::of(&[f64::NAN]), None);
        assert_eq!(spread_cell(&[], 0), "–");
    }

    #[test]
    fn numbers_are_grouped_by_thousands() {
        assert_eq!(num(134021.4, 0), "134 021");
        assert_eq!(num(1234567.891, 2), "1 234 567.89");
        assert_eq!(num(-1000.0, 0), "-1 000");
        assert_eq!(num(0.5, 3), "0.500");
        assert_eq!(num(999.0, 0), "999");
    }

    #[test]
    fn the_cpu_is_named_by_its_first_processors_model() {
        let info = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\n\
                    model\t\t: 17\nmodel name\t: AMD EPYC\n\n\
                    processor\t: 1\nmodel name\t: Other\n";
        assert_eq!(
            cpu_model(info).as_deref(),
            Some("AMD EPYC (family 25, model 17)")
        );
        assert_eq!(
            cpu_model("model name\t: Some ARM core\n").as_deref(),
            Some("Some ARM core")
        );
        assert_eq!(cpu_model("processor\t: 0\nBogoMIPS\t: 50.00\n"), None);
        assert_eq!(cpu_model(""), None);
    }

    #[test]
    fn day_counts_become_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_419), (2025, 11, 27));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}
