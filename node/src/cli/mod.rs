//! The `fusi-node` command line: parse, turn flags into a [`RunSpec`], call
//! the library, print. `main.rs` only calls [`main`].

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;

use crate::api::{self, DEFAULT_API};
use crate::core::assign::{RegionWeight, parse_region_weights};
use crate::core::metrics::{Value, names};
use crate::core::report::{Report, percentiles};
use crate::core::run_report::{LoadUnit, RunReport};
use crate::core::shard::Shard;
use crate::core::spec::{
    Executor, OnLoss, Rate, RunSpec, ScenarioSpec, Stage, VU_MEMORY_MIB, parse_duration,
    parse_rate, parse_stages,
};
use crate::core::statuses::ExpectedStatuses;
use crate::core::threshold::{Threshold, builtin_kind, closest, parse_all};
use crate::engine::executor::Progress;
use crate::engine::module::{DeclaredThresholdsError, declared_metrics, declared_thresholds};
use crate::local::{self, Observer};
use crate::{html, junit, summary};
use fusi_sdk::abi::MetricKind;

mod build;
mod config;
mod data;
mod mesh;
mod new;
mod runs;
mod simulate;

const ABOUT: &str = "fusi: a distributed load generator with no central server.

Runs WebAssembly scenarios (written with the fusi Rust SDK, built for
wasm32-wasip1) against HTTP targets and reports exact latency percentiles.";

#[derive(Parser, Debug)]
#[command(name = "fusi-node", version, long_version = long_version(), about = ABOUT, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run a scenario, across the mesh of a running node or on this machine, and
    /// print the end-of-test summary.
    #[command(after_long_help = RUN_EXAMPLES, args_override_self = true)]
    Run(Box<RunArgs>),
    /// List the runs a node knows, or show one run and its nodes.
    #[command(after_long_help = runs::RUNS_EXAMPLES)]
    Runs(runs::RunsArgs),
    /// Stop a run on every node.
    #[command(after_long_help = runs::STOP_EXAMPLES)]
    Stop(runs::StopArgs),
    /// Print a run's merged report; any node of the mesh can. A node gets
    /// the others' shards once the run has ended, so the report of a
    /// finished run waits (up to 15 s) until the node holds them all, and
    /// the report of a run past its end waits (as long) for the node to
    /// hear that it ended.
    #[command(after_long_help = runs::REPORT_EXAMPLES)]
    Report(runs::ReportArgs),
    /// Compare two runs: the deltas, and whether B is slower than A beyond noise.
    #[command(after_long_help = runs::COMPARE_EXAMPLES)]
    Compare(runs::CompareArgs),
    /// Follow a run's progress live, from any node, then print its report.
    #[command(after_long_help = runs::WATCH_EXAMPLES)]
    Watch(runs::WatchArgs),
    /// Build a scenario crate (or a workspace of them) into .wasm modules.
    #[command(after_long_help = BUILD_EXAMPLES)]
    Build(BuildArgs),
    /// Make a new scenario crate that builds with one command.
    #[command(after_long_help = new::NEW_HELP)]
    New(new::NewArgs),
    /// Start a long-running node that joins (or starts) a mesh.
    #[command(after_long_help = mesh::UP_EXAMPLES)]
    Up(Box<mesh::UpArgs>),
    /// Write a new mesh key: nodes talk only to nodes with the same key.
    Keygen(mesh::KeygenArgs),
    /// List the members of the mesh, as a running node sees them.
    Peers(mesh::ApiArgs),
    /// Describe a running node.
    Status(mesh::ApiArgs),
    /// Print the address of a node's live dashboard (with its token), or open it.
    #[command(after_long_help = mesh::DASHBOARD_HELP)]
    Dashboard(mesh::DashboardArgs),
    /// Simulate a mesh of many nodes under virtual time (the real cores, a
    /// modelled network): how long membership, leader agreement and shard
    /// spread take, and how many messages each node sends.
    #[command(after_long_help = simulate::SIMULATE_HELP)]
    Simulate(simulate::SimulateArgs),
    /// Print shell completions for fusi-node.
    #[command(after_long_help = COMPLETIONS_HELP)]
    Completions(CompletionsArgs),
    /// Print the man page of fusi-node, or write one page per command.
    #[command(after_long_help = MAN_HELP)]
    Man(ManArgs),
}

const COMPLETIONS_HELP: &str = "\
Examples:
  fusi-node completions bash > ~/.local/share/bash-completion/completions/fusi-node
  fusi-node completions zsh > ~/.zfunc/_fusi-node     # with fpath+=(~/.zfunc)
  fusi-node completions fish > ~/.config/fish/completions/fusi-node.fish";

const MAN_HELP: &str = "\
Examples:
  fusi-node man | man -l -
  fusi-node man --dir /usr/local/share/man/man1      # fusi-node.1, fusi-node-run.1, ...";

/// `fusi-node completions`.
#[derive(Args, Debug)]
struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

/// `fusi-node man`.
#[derive(Args, Debug)]
struct ManArgs {
    /// Write one page per command (fusi-node.1, fusi-node-run.1, ...) into
    /// this directory instead of printing the main page.
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// What `--version` says: the version, the commit it was built from, and
/// the versions of what it speaks with scenarios and with other nodes
/// (a node refuses a peer or a module with other ones).
fn long_version() -> &'static str {
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TEXT.get_or_init(|| {
        format!(
            "{} (commit {})\nscenario ABI {}\nrun protocol {}, heartbeat protocol {}, shard format {}",
            env!("CARGO_PKG_VERSION"),
            env!("FUSI_COMMIT"),
            fusi_sdk::abi::ABI_VERSION,
            crate::core::wire::RUN_PROTOCOL,
            crate::core::membership::PROTOCOL,
            crate::core::shard::SHARD_FORMAT,
        )
    })
}

/// `fusi-node completions SHELL`.
fn completions(args: &CompletionsArgs) -> anyhow::Result<ExitCode> {
    let mut cmd = <Cli as clap::CommandFactory>::command();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "fusi-node", &mut script);
    print_all(&script, "the completions")
}

/// Writes `bytes` to stdout; a reader that closed the pipe early (`| head`)
/// is no error.
fn print_all(bytes: &[u8], what: &str) -> anyhow::Result<ExitCode> {
    match std::io::stdout().lock().write_all(bytes) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::Error::new(e).context(format!("cannot write {what} to stdout")))
        }
        _ => Ok(ExitCode::SUCCESS),
    }
}

/// `fusi-node man [--dir DIR]`.
fn man(args: &ManArgs) -> anyhow::Result<ExitCode> {
    let cmd = <Cli as clap::CommandFactory>::command();
    match &args.dir {
        Some(dir) => clap_mangen::generate_to(cmd, dir).with_context(|| {
            format!(
                "cannot write the man pages to {}: check that it exists and is writable",
                dir.display()
            )
        })?,
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(cmd)
                .render(&mut page)
                .context("cannot render the man page")?;
            return print_all(&page, "the man page");
        }
    }
    Ok(ExitCode::SUCCESS)
}

const RUN_EXAMPLES: &str = "\
Where the run goes:
  --local              on this machine (a mesh of one), even when a node is up;
                       --api and FUSI_API are then ignored
  --api ADDR           to the node whose API is at ADDR (or FUSI_API), which
                       splits it across its mesh; an error if none answers there
  (neither)            to the node at 127.0.0.1:7401 if one answers, otherwise on
                       this machine (saying so on stderr)
Before it sends the module or --env values to a node, the CLI checks that it
is the node whose API token it holds (a challenge the token answers): the
token is FUSI_API_TOKEN when set, else api.token in the node's data directory
(--data-dir, by default the one `fusi-node up` uses on this host).
--region and --nodes need a mesh. --source-ip applies to runs on this machine;
a mesh run leaves from each node's own address (`fusi-node up --source-ip`).

Targets: a run names the hosts it sends to, so that every node can check them
before it sends traffic. --target names them (a URL, or HOST[:PORT]); without
--target, every --env value that is an http:// or https:// URL names one:
--env TARGET=http://127.0.0.1:8080 targets 127.0.0.1:8080.

A mesh run prints its id, the share of each node and the spread of their
starts to stderr, then the summary merged from every node's measurements.

Executors (k6 names). Without --executor, fusi picks one from the flags:
  --stages              ramping-vus            the number of looping VUs follows the stages
  --rate                constant-arrival-rate  starts RATE iterations whatever the target does
  --iterations          shared-iterations      --vus VUs (default 1) share N iterations
  --duration            constant-vus           --vus VUs (default 1) loop for the duration
  --vus alone           shared-iterations      each VU runs one iteration
  (nothing)             shared-iterations      1 VU, 1 iteration: a smoke test
  per-vu-iterations and ramping-arrival-rate need --executor.

Arrival-rate executors measure every iteration from the instant it was
scheduled, so a slow target shows up as latency instead of hiding as a lower
request rate; an iteration that finds no VU free within 1 ms is counted in
dropped_iterations.

Durations: 500ms, 30s, 5m, 1h, 1m30s. Rates: 500/s, 30/m, 10/100ms.

Thresholds (k6 syntax), judged on the merged measurements of every node, per
region with a region tag; a failed one makes the run exit 99:
  --threshold 'http_req_duration: p(95)<200ms'
  --threshold 'http_req_duration{region:fra}: p(99)<500ms'
  --threshold 'http_req_failed: rate<0.01 abortOnFail'       stop the run at once
  --threshold 'checks: rate>0.99 abortOnFail delayAbortEval=30s'
  --threshold 'http_reqs: count>1000'    (or rate>100 for per second)
Aggregations: avg min max med p(N) on trends; rate on rates; count and rate on
counters; value on gauges. A scenario declares its own with
fusi_sdk::thresholds!(...); both sets apply.

Examples:
  fusi-node run hello.wasm --vus 50 --duration 30s --env TARGET=http://127.0.0.1:8080
  fusi-node run hello.wasm --stages 10s:100,30s:100,10s:0
  fusi-node run arrival.wasm --rate 500/s --duration 1m --vus 50 --max-vus 500
  fusi-node run arrival.wasm --executor ramping-arrival-rate --stages 30s:1000,1m:1000 --max-vus 500
  fusi-node run api_flow.wasm --iterations 1000 --vus 20 --out summary.json --out report.html
  fusi-node run hello.wasm --vus 3000 --duration 5m --region fra=60,nrt=30,ewr=10 \\
      --target https://shop.example.com
  fusi-node run hello.wasm --vus 100 --duration 1m --nodes 4 --api 127.0.0.1:7402
  fusi-node run hello.wasm --vus 5 --duration 10s --local

Reports: each --out writes the report in the format its extension names
(.json, .html, .csv, .txt, and .xml for JUnit; JSON otherwise). A run on this machine is kept in
the data directory (local-runs/, the newest 50), so its report can be printed
again, in any format, with no node running:
  fusi-node report RUN_ID --out report.html
  fusi-node runs               (lists them when no node answers, or with --local)
If the data directory cannot be written, the run says so and goes on.

Delivered load: the report weighs the load delivered against the plan
(iterations for arrival-rate and iteration executors, VU-seconds for
constant-vus and ramping-vus). A run that delivered less than
--min-delivered (99%) of it, or lost a node before its share was done, is
`short`, whatever its thresholds say.

Exit status: 0 when the run completed and its thresholds passed; 97 when it
fell short of its planned load or lost a node; 99 when a threshold failed
(as k6); 1 when it could not run (an unusable module, flags that do not fit
together, no node where --api points), or when a mesh run failed or someone
else stopped it; 2 when a flag's value does not parse.
As in k6, failed requests and iterations alone do not change the exit status:
a run whose every request failed exits 0 (its summary ends with a warning that
says so) unless a threshold gates on it, such as
--threshold 'http_req_failed: rate<0.01' or 'iterations_failed: count<1'.
A request fails when no response came or its status is not one of
--expected-statuses (default 200-399).

Failures: the first 3 of each kind (a request's error, an iteration's failure
with the scenario's panic message) are printed on stderr with their text,
then one line says how many more there were.
Ctrl-C stops the run early (on every node of a mesh run), prints the summary of
what was measured and exits 130; a second Ctrl-C quits at once.";

const BUILD_EXAMPLES: &str = "\
Runs `cargo build --release --target wasm32-wasip1` in DIR and prints the path
of each .wasm module it produced. The target must be installed once:
  rustup target add wasm32-wasip1

Examples:
  fusi-node build scenarios/hello
  fusi-node build scenarios            # every example scenario";

#[derive(Args, Debug)]
struct RunArgs {
    /// The scenario: a module (.wasm), or the directory of a scenario crate,
    /// which is built first (as `fusi-node build DIR` does).
    scenario: PathBuf,
    /// A run file (TOML, or JSON for .json) whose keys are these long
    /// flags without the dashes, and `scenario`: `rate = "200/s"`, `env = {
    /// TARGET = "..." }`, `threshold = ["..."]`. Flags given here override
    /// the file's; list flags add to its lists. Paths in it are relative to
    /// it. Several scenarios side by side are `[scenarios.NAME]` tables of
    /// executor flags plus `exec`, `start_time`, `env` and `tags`.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    load: LoadArgs,
    /// The function the VUs run: one the scenario exports (k6's `--exec`)
    /// [default: iteration].
    #[arg(long, value_name = "FUNCTION", value_parser = exec_arg)]
    exec: Option<String>,
    /// A scenario of a run file's `[scenarios.NAME]` tables, as NAME=JSON
    /// (written by --config).
    #[arg(long = "scenario-table", hide = true, value_parser = scenario_table_arg)]
    scenario_tables: Vec<ScenarioSpec>,
    /// A run parameter for the scenario, KEY=VALUE; repeatable.
    #[arg(long = "env", short = 'e', value_parser = env_arg)]
    env: Vec<(String, String)>,
    /// Test data for the scenario, NAME=FILE: CSV with a header line, a
    /// JSON array or NDJSON, by the file's extension; repeatable. It goes
    /// with the module to every node, which keeps one copy for all its VUs;
    /// the scenario reads rows with `data::row` and draws them with
    /// `data::next`.
    #[arg(long = "data", value_parser = data::data_arg)]
    data: Vec<(String, PathBuf)>,
    /// How `data::next` draws rows: `shared` (every node walks every row,
    /// starting over at the end) or `unique` (each row goes to one draw in
    /// the whole mesh: the rows are split among the nodes as the load is);
    /// `NAME=MODE` for one set; repeatable, the last word for a set wins
    /// [default: shared].
    #[arg(long, value_name = "[NAME=]MODE", value_parser = data::mode_arg)]
    data_mode: Vec<data::PerSet<data::DataModeArg>>,
    /// When a node's rows of a `unique` set run out: `stop` (its draws fail
    /// and its share winds down; the report says the data ran out) or
    /// `wrap` (it starts over at its first row); `NAME=WHAT` for one set;
    /// repeatable [default: stop].
    #[arg(long, value_name = "[NAME=]WHAT", value_parser = data::exhausted_arg)]
    data_exhausted: Vec<data::PerSet<data::ExhaustedArg>>,
    /// Write the report to this file: HTML for .html, CSV (the timeline)
    /// for .csv, text for .txt, JUnit XML for .xml, else JSON; repeatable, one file each. Each
    /// is checked before the run starts: its directory must exist and be
    /// writable.
    #[arg(long)]
    out: Vec<PathBuf>,
    /// A pass/fail criterion in k6 syntax, judged on the measurements of
    /// every node: METRIC[{TAG:VALUE,...}]: AGG OP LIMIT [abortOnFail]
    /// [delayAbortEval=DURATION]; repeatable. See below.
    #[arg(long = "threshold", value_parser = threshold_arg)]
    thresholds: Vec<String>,
    /// The least part of the planned load the run must deliver, as a
    /// percentage (99%) or a fraction (0.99); below it, or when a node is
    /// lost before its share is done, the run is `short` and exits 97.
    /// 0 turns the check off.
    #[arg(long, value_parser = min_delivered_arg, default_value = "99%")]
    min_delivered: f64,
    /// When a node of a mesh run is lost while it runs: `redistribute`
    /// (the leader hands its remaining share to the nodes still running,
    /// within their --max-vus; the run is short only if what was delivered
    /// falls below --min-delivered), `continue` (the others go on, the run
    /// ends short, exit 97) or `abort` (the run stops on every node once
    /// the node has looked gone for 2 s, exit 97). A node is judged lost
    /// within about 1.5 s of going silent, at once when its process is gone.
    #[arg(long, value_enum, default_value = "redistribute")]
    on_loss: OnLossArg,
    /// The most new connections each node opens at once, each holding its
    /// slot until its first response: thousands of VUs starting together
    /// would overflow the target's accept queue (its dropped SYNs are
    /// retried only after 1 s, then 3 s). A connection that waited counts
    /// in `connections_paced`, and its wait in `http_req_blocked`. 0 opens
    /// them all at once, as k6 does.
    #[arg(long, value_name = "N", default_value_t = crate::core::spec::DEFAULT_MAX_CONNECTING)]
    max_connecting: u32,
    /// An iteration that runs longer fails with reason `timeout` (1ms to 24h).
    #[arg(long, value_parser = duration_arg, default_value = "60s")]
    iteration_timeout: Duration,
    /// After the executor ends, in-flight iterations may finish for this long (0s to 1h).
    #[arg(long, value_parser = duration_arg, default_value = "30s")]
    graceful_stop: Duration,
    /// The most memory one VU's scenario instance may use, in MiB.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(VU_MEMORY_MIB))]
    vu_memory_mib: u64,
    /// Accept any TLS certificate (for self-signed test targets).
    #[arg(long)]
    insecure_skip_tls_verify: bool,
    /// No live progress line, even on a terminal.
    #[arg(long, short)]
    quiet: bool,
    /// The local address connections leave from (for example 127.0.2.1, to
    /// play a region of a testnet whose target delays by source range); runs
    /// on this machine only.
    #[arg(long)]
    source_ip: Option<std::net::IpAddr>,
    /// Push the run's metrics to an OpenTelemetry collector over OTLP/HTTP
    /// (protobuf) while it runs and at its end: the collector's base URL, for
    /// example http://127.0.0.1:4318. Runs on this machine only; a node pushes
    /// with `fusi-node up --otlp-endpoint`.
    #[arg(long, value_name = "URL", value_parser = mesh::otlp_endpoint_arg)]
    otlp_endpoint: Option<crate::telemetry::otlp::Endpoint>,
    /// How often to push to --otlp-endpoint (1s to 1h).
    #[arg(long, value_name = "DURATION", default_value = "5s",
          value_parser = mesh::otlp_interval_arg, requires = "otlp_endpoint")]
    otlp_interval: Duration,
    /// The API of the node to run on, across its mesh [default: 127.0.0.1:7401
    /// when a node answers there, else this machine].
    #[arg(long, env = "FUSI_API", value_parser = mesh::api_arg)]
    api: Option<SocketAddr>,
    /// The data directory: of the node at --api, whose api.token the CLI
    /// sends once the node proved it knows it (FUSI_API_TOKEN, when set, is
    /// the token instead); for a run on this machine, where the run is kept
    /// for `fusi-node report` [default: the node's default,
    /// $XDG_DATA_HOME/fusi-node or ~/.local/share/fusi-node].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Run on this machine, even when a node is up.
    #[arg(long, conflicts_with_all = ["region", "nodes"])]
    local: bool,
    /// Split the load by region, REGION=WEIGHT,..., for example
    /// fra=60,nrt=30,ewr=10 (needs a mesh) [default: by each node's capacity].
    #[arg(long, value_parser = region_arg)]
    region: Option<Weights>,
    /// At most this many nodes take part (needs a mesh).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=4096))]
    nodes: Option<u32>,
    /// A host the run sends to: a URL or HOST[:PORT]; repeatable [default: the
    /// host of every --env value that is an http(s) URL].
    #[arg(long = "target", value_parser = target_arg)]
    targets: Vec<String>,
    /// The HTTP statuses that count as success, as statuses and inclusive
    /// ranges, for example 200-299,404; any other status counts in
    /// http_req_failed (as k6's expectedStatuses). A scenario may set its
    /// own with http::set_expected_statuses.
    #[arg(long, default_value = "200-399", value_parser = statuses_arg)]
    expected_statuses: ExpectedStatuses,
}

/// How a scenario's load is generated: the executor and its numbers, as
/// flags of `run` and as keys of a run file's `[scenarios.NAME]` tables.
#[derive(Args, Debug, Default)]
struct LoadArgs {
    /// Executor; see below for the one picked when this is left out.
    #[arg(long, value_enum)]
    executor: Option<ExecutorName>,
    /// VUs (closed executors), or pre-allocated VUs (arrival-rate executors).
    #[arg(long)]
    vus: Option<u32>,
    /// How long the run lasts (or, with --iterations, at most lasts).
    #[arg(long, value_parser = duration_arg)]
    duration: Option<Duration>,
    /// Iterations: shared by all VUs, or per VU with --executor per-vu-iterations.
    #[arg(long)]
    iterations: Option<u64>,
    /// Arrival rate, for example 500/s; implies constant-arrival-rate.
    #[arg(long, value_parser = rate_arg)]
    rate: Option<Rate>,
    /// Ramp stages DURATION:TARGET,..., for example 10s:100,30s:100,10s:0.
    /// Targets are VUs (ramping-vus) or iterations per --time-unit, a second
    /// by default (ramping-arrival-rate).
    #[arg(long, value_parser = stages_arg)]
    stages: Option<Stages>,
    /// The unit of ramping-arrival-rate's --start and stage targets, for
    /// example 1m for iterations per minute (k6's timeUnit) [default: 1s].
    #[arg(long, value_parser = duration_arg)]
    time_unit: Option<Duration>,
    /// Starting VUs (ramping-vus) or iterations per --time-unit (ramping-arrival-rate).
    #[arg(long, default_value_t = 0.0)]
    start: f64,
    /// The most VUs an arrival-rate executor may use [default: the larger of --vus and 100].
    ///
    /// An arrival that finds every VU busy for 1 ms is dropped
    /// (dropped_iterations). The summary says why: every VU busy (raise
    /// --max-vus for a slow target), or a node's CPUs busy (node_cpu: more
    /// VUs would only wait longer; spread the rate over more nodes).
    #[arg(long)]
    max_vus: Option<u32>,
}

/// One `[scenarios.NAME]` table of a run file: an executor's flags, and
/// the scenario's own keys.
#[derive(Parser, Debug)]
#[command(no_binary_name = true, disable_help_flag = true)]
struct ScenarioTable {
    #[command(flatten)]
    load: LoadArgs,
    /// The function its VUs run [default: iteration].
    #[arg(long, value_parser = exec_arg)]
    exec: Option<String>,
    /// When it starts, after the run's start (k6's startTime).
    #[arg(long, value_parser = duration_arg)]
    start_time: Option<Duration>,
    /// Its own parameters, over the run's.
    #[arg(long = "env", value_parser = env_arg)]
    env: Vec<(String, String)>,
    /// Tags of every sample of its VUs.
    #[arg(long = "tags", value_parser = env_arg)]
    tags: Vec<(String, String)>,
}

fn exec_arg(s: &str) -> Result<String, String> {
    crate::core::spec::check_exec_name(s).map(|()| s.to_owned())
}

/// `--scenario-table NAME=JSON`: a run file's scenario, its keys turned
/// into the flags of [`ScenarioTable`] and parsed by clap, so its keys are
/// the run's executor flags.
fn scenario_table_arg(s: &str) -> Result<ScenarioSpec, String> {
    let (name, json) = s
        .split_once('=')
        .ok_or_else(|| format!("invalid scenario {s:?}: write NAME=JSON"))?;
    crate::core::spec::check_scenario_name(name)?;
    let fail = |what: String| format!("scenario {name:?}: {what}");
    let table: serde_json::Value =
        serde_json::from_str(json).map_err(|e| fail(format!("is not a table ({e})")))?;
    let serde_json::Value::Object(keys) = table else {
        return Err(fail(
            "is not a table: write [scenarios.NAME] with KEY = VALUE lines".into(),
        ));
    };
    let mut flags: Vec<std::ffi::OsString> = Vec::new();
    for (key, value) in &keys {
        flags.extend(config::key_flags(key, value, &|s| s.into()).map_err(fail)?);
    }
    let table = ScenarioTable::try_parse_from(&flags).map_err(|e| {
        let text = e.render().to_string();
        let text = text.trim_start_matches("error: ").trim_end();
        let first = text.lines().next().unwrap_or(text);
        if e.kind() == clap::error::ErrorKind::UnknownArgument {
            fail(format!(
                "{first}; its keys are an executor's flags of `fusi-node run` (executor, vus, \
                 duration, iterations, rate, stages, start, max_vus, time_unit) and exec, start_time, env and tags"
            ))
        } else {
            fail(first.to_owned())
        }
    })?;
    let executor = table.load.executor().map_err(|e| fail(e.to_string()))?;
    let scenario = ScenarioSpec {
        name: name.to_owned(),
        executor,
        exec: table.exec,
        start_time: table.start_time.unwrap_or(Duration::ZERO),
        env: table.env.into_iter().collect(),
        tags: table.tags.into_iter().collect(),
    };
    Ok(scenario)
}

fn statuses_arg(s: &str) -> Result<ExpectedStatuses, String> {
    s.parse()
        .map_err(|e: crate::core::statuses::StatusesError| e.to_string())
}

#[derive(Args, Debug)]
struct BuildArgs {
    /// A scenario crate, or a workspace of them.
    dir: PathBuf,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum ExecutorName {
    ConstantVus,
    RampingVus,
    PerVuIterations,
    SharedIterations,
    ConstantArrivalRate,
    RampingArrivalRate,
}

fn duration_arg(s: &str) -> Result<Duration, String> {
    parse_duration(s).map_err(|e| e.0)
}

fn rate_arg(s: &str) -> Result<Rate, String> {
    parse_rate(s).map_err(|e| e.0)
}

/// Stages as one flag value (clap would read `Vec<Stage>` as repeated values).
#[derive(Debug, Clone)]
struct Stages(Vec<Stage>);

fn stages_arg(s: &str) -> Result<Stages, String> {
    parse_stages(s).map(Stages).map_err(|e| e.0)
}

/// `--region` weights as one flag value.
#[derive(Debug, Clone)]
struct Weights(Vec<RegionWeight>);

fn region_arg(s: &str) -> Result<Weights, String> {
    parse_region_weights(s).map(Weights)
}

/// `host` or `host:port` of an http(s) URL (the port when it is not the
/// scheme's default: `http://h:80` is `h`).
fn url_host(url: &url::Url) -> Option<String> {
    if !matches!(url.scheme(), "http" | "https") {
        return None;
    }
    let host = url.host_str().filter(|h| !h.is_empty())?;
    Some(match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    })
}

fn target_arg(s: &str) -> Result<String, String> {
    let fix = "write a URL or HOST[:PORT], for example https://shop.example.com or 10.0.0.7:8080";
    let bare = !s.contains("://");
    let url = url::Url::parse(&if bare {
        format!("http://{s}")
    } else {
        s.to_owned()
    })
    .map_err(|e| format!("invalid --target {s:?} ({e}); {fix}"))?;
    if bare && (url.path() != "/" || url.query().is_some() || s.contains('@')) {
        return Err(format!("invalid --target {s:?}; {fix}"));
    }
    url_host(&url).ok_or_else(|| format!("--target {s:?} is not an http(s) host; {fix}"))
}

/// The hosts of the `--env` values that are http(s) URLs, each once.
fn targets_from_env(env: &[(String, String)]) -> Vec<String> {
    let mut targets: Vec<String> = Vec::new();
    for (_, value) in env {
        if let Some(host) = url::Url::parse(value).ok().as_ref().and_then(url_host)
            && !targets.contains(&host)
        {
            targets.push(host);
        }
    }
    targets
}

fn threshold_arg(s: &str) -> Result<String, String> {
    Threshold::parse(s)
        .map(|_| s.trim().to_owned())
        .map_err(|e| e.to_string())
}

/// `--on-loss`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OnLossArg {
    /// The survivors take the lost node's remaining share.
    Redistribute,
    /// The others go on; the run ends short.
    Continue,
    /// The run stops on every node as soon as a node is lost.
    Abort,
}

/// `--min-delivered`: `99%`, `99.5%` or `0.99`, within 0 to 100 %.
fn min_delivered_arg(s: &str) -> Result<f64, String> {
    let text = s.trim();
    let value = match text.strip_suffix('%') {
        Some(percent) => percent.trim().parse::<f64>().map(|p| p / 100.0),
        None => text.parse::<f64>(),
    };
    match value {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!(
            "invalid --min-delivered {s:?}: write a percentage from 0% to 100% (99%) \
             or a fraction from 0 to 1 (0.99)"
        )),
    }
}

fn env_arg(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!(
            "invalid --env {s:?}: write KEY=VALUE, for example TARGET=http://127.0.0.1:8080"
        )),
    }
}

impl LoadArgs {
    /// Whether any executor flag was given.
    fn any(&self) -> bool {
        self.executor.is_some()
            || self.vus.is_some()
            || self.duration.is_some()
            || self.iterations.is_some()
            || self.rate.is_some()
            || self.stages.is_some()
            || self.start != 0.0
            || self.max_vus.is_some()
            || self.time_unit.is_some()
    }

    /// The executor the flags describe; the error names the flag to fix.
    fn executor(&self) -> anyhow::Result<Executor> {
        use ExecutorName::*;
        let name = self.executor.unwrap_or(if self.stages.is_some() {
            RampingVus
        } else if self.rate.is_some() {
            ConstantArrivalRate
        } else if self.duration.is_some() && self.iterations.is_none() {
            ConstantVus
        } else {
            SharedIterations
        });
        let open = matches!(name, ConstantArrivalRate | RampingArrivalRate);
        if self.rate.is_some() && name != ConstantArrivalRate {
            bail!(
                "--rate applies to constant-arrival-rate only; for {name:?} drop it (ramping-arrival-rate takes --stages)"
            );
        }
        if self.stages.is_some() && !matches!(name, RampingVus | RampingArrivalRate) {
            bail!("--stages applies to ramping-vus and ramping-arrival-rate only");
        }
        if self.max_vus.is_some() && !open {
            if name == RampingVus && self.executor.is_none() {
                bail!(
                    "--max-vus applies to arrival-rate executors only: with --stages, fusi picked \
                     ramping-vus, whose stage targets are VUs; for stage targets in iterations per \
                     second, add --executor ramping-arrival-rate (and --vus for the VUs to \
                     pre-allocate); for VUs, drop --max-vus"
                );
            }
            bail!(
                "--max-vus applies to arrival-rate executors only; for {} set the VUs with --vus",
                kebab(name)
            );
        }
        if self.iterations.is_some() && !matches!(name, SharedIterations | PerVuIterations) {
            bail!("--iterations applies to shared-iterations and per-vu-iterations only");
        }
        if self.duration.is_some() && matches!(name, RampingVus | RampingArrivalRate) {
            bail!(
                "{} takes its length from --stages; drop --duration",
                kebab(name)
            );
        }
        if self.vus.is_some() && name == RampingVus {
            bail!("ramping-vus starts from --start VUs and follows --stages; drop --vus");
        }
        if self.time_unit.is_some_and(|u| u.is_zero()) {
            bail!("--time-unit must be more than 0: give for example 1s or 1m");
        }
        if self.time_unit.is_some() && name != RampingArrivalRate {
            bail!(
                "--time-unit applies to ramping-arrival-rate only; constant-arrival-rate takes its \
                 unit in --rate (for example 30/1m)"
            );
        }
        if self.start != 0.0 && !matches!(name, RampingVus | RampingArrivalRate) {
            bail!("--start applies to ramping-vus and ramping-arrival-rate only");
        }
        let need = |flag: &str| anyhow::anyhow!("{} needs {flag}", kebab(name));
        let vus = self.vus.unwrap_or(1);
        let max_duration = self.duration.unwrap_or(Duration::from_secs(600));
        let pre = self.vus.unwrap_or(10);
        let max_vus = self.max_vus.unwrap_or(pre.max(100)).max(pre);
        Ok(match name {
            ConstantVus => Executor::ConstantVus {
                vus,
                duration: self.duration.ok_or_else(|| need("--duration"))?,
            },
            RampingVus => Executor::RampingVus {
                start_vus: self.start.max(0.0) as u32,
                stages: self
                    .stages
                    .clone()
                    .map(|s| s.0)
                    .ok_or_else(|| need("--stages"))?,
            },
            PerVuIterations => Executor::PerVuIterations {
                vus,
                iterations: self.iterations.unwrap_or(1),
                max_duration,
            },
            SharedIterations => Executor::SharedIterations {
                vus,
                iterations: self.iterations.unwrap_or(u64::from(vus)),
                max_duration,
            },
            ConstantArrivalRate => Executor::ConstantArrivalRate {
                rate: self.rate.ok_or_else(|| need("--rate"))?,
                duration: self.duration.ok_or_else(|| need("--duration"))?,
                pre_allocated_vus: pre,
                max_vus,
            },
            RampingArrivalRate => Executor::RampingArrivalRate {
                start_rate: self.start,
                time_unit: self.time_unit.unwrap_or(Duration::from_secs(1)),
                stages: self
                    .stages
                    .clone()
                    .map(|s| s.0)
                    .ok_or_else(|| need("--stages"))?,
                pre_allocated_vus: pre,
                max_vus,
            },
        })
    }
}

impl RunArgs {
    fn spec(&self) -> anyhow::Result<RunSpec> {
        let mut spec = if self.scenario_tables.is_empty() {
            let mut spec = RunSpec::new(String::new(), self.load.executor()?);
            spec.scenarios[0].exec.clone_from(&self.exec);
            spec
        } else {
            if self.load.any() || self.exec.is_some() {
                bail!(
                    "the run file names scenarios ([scenarios.NAME]), each with its executor: the \
                     executor flags (--executor, --vus, --duration, --iterations, --rate, --stages, \
                     --start, --max-vus, --time-unit, --exec) apply to a run of one scenario; set them in a \
                     scenario's table instead"
                );
            }
            let mut spec = RunSpec::new(
                String::new(),
                Executor::SharedIterations {
                    vus: 1,
                    iterations: 1,
                    max_duration: Duration::from_secs(1),
                },
            );
            spec.scenarios.clone_from(&self.scenario_tables);
            spec
        };
        spec.env = local::env_map(&self.env);
        spec.iteration_timeout = self.iteration_timeout;
        spec.graceful_stop = self.graceful_stop;
        spec.vu_memory_limit = self.vu_memory_mib << 20;
        spec.insecure_skip_tls_verify = self.insecure_skip_tls_verify;
        spec.scenario = scenario_name(&self.scenario);
        spec.thresholds = self.thresholds.clone();
        spec.min_delivered = self.min_delivered;
        spec.on_loss = match self.on_loss {
            OnLossArg::Redistribute => OnLoss::Redistribute,
            OnLossArg::Continue => OnLoss::Continue,
            OnLossArg::Abort => OnLoss::Abort,
        };
        spec.expected_statuses = self.expected_statuses.clone();
        spec.max_connecting = self.max_connecting;
        spec.targets = if self.targets.is_empty() {
            // The scenarios' own parameters name targets too.
            let mut env = self.env.clone();
            for scenario in &spec.scenarios {
                env.extend(scenario.env.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            targets_from_env(&env)
        } else {
            self.targets.clone()
        };
        spec.validate()?;
        Ok(spec)
    }

    /// Where the run goes, given whether a node answers at `--api` (or the
    /// default address); the error says which flag to change.
    fn place(&self, node_answers: bool) -> anyhow::Result<Place> {
        if self.local {
            return Ok(Place::Here);
        }
        let place = match self.api {
            Some(api) if node_answers => Place::Node(api),
            Some(api) => bail!(
                "no fusi-node answers at {api} (from --api or FUSI_API): start one there with \
                 `fusi-node up`, or run on this machine with --local"
            ),
            None if node_answers => Place::Node(default_api()?),
            None => {
                let flags: Vec<&str> = [
                    ("--region", self.region.is_some()),
                    ("--nodes", self.nodes.is_some()),
                ]
                .into_iter()
                .filter_map(|(flag, given)| given.then_some(flag))
                .collect();
                if !flags.is_empty() {
                    let flags = flags.join(" and ");
                    bail!(
                        "splitting a run with {flags} needs a mesh, and no fusi-node answers at {DEFAULT_API}: \
                         start one with `fusi-node up`, point --api at one, or drop {flags}"
                    );
                }
                Place::Fallback
            }
        };
        if let (Place::Node(api), Some(ip)) = (&place, self.source_ip) {
            bail!(
                "--source-ip {ip} applies to runs on this machine, and this run goes to the node at \
                 {api}: a node's --source-ip applies to mesh runs (`fusi-node up --source-ip`); \
                 drop --source-ip, or add --local"
            );
        }
        if let (Place::Node(api), Some(otlp)) = (&place, &self.otlp_endpoint) {
            bail!(
                "--otlp-endpoint {} applies to runs on this machine, and this run goes to the node \
                 at {api}: start the node with `fusi-node up --otlp-endpoint URL`, which pushes \
                 every run's metrics; drop --otlp-endpoint, or add --local",
                otlp.url()
            );
        }
        Ok(place)
    }
}

/// Where a run goes.
#[derive(Debug, PartialEq, Eq)]
enum Place {
    /// This machine, as asked (`--local`).
    Here,
    /// This machine, because no node answers at the default address.
    Fallback,
    /// The node with this API address, and its mesh.
    Node(SocketAddr),
}

fn default_api() -> anyhow::Result<SocketAddr> {
    DEFAULT_API
        .parse()
        .with_context(|| format!("the default API address {DEFAULT_API} does not parse"))
}

fn kebab(name: ExecutorName) -> String {
    name.to_possible_value()
        .map(|v| v.get_name().to_owned())
        .unwrap_or_default()
}

/// Prints a progress line per shard on a terminal, and hands the shards to
/// `--otlp-endpoint`'s export.
struct LiveProgress {
    enabled: bool,
    errors: u64,
    dropped: u64,
    export: Option<crate::telemetry::local::LocalExport>,
}

impl Observer for LiveProgress {
    fn on_shard(&mut self, shard: &Shard, report: &Report, progress: &Progress) {
        if let Some(export) = &mut self.export {
            export.on_shard(shard, report);
        }
        // The last shard covers only the tail of a second: its rate would mislead.
        if !self.enabled || shard.last {
            return;
        }
        // Only this shard is read: the line costs the same in hour ten as in
        // second one.
        let count = |metric: &str| match shard.series.fold(metric, |_| true) {
            Some(Value::Counter(c)) => c as u64,
            _ => 0,
        };
        self.errors += count(names::ERRORS);
        self.dropped += count(names::DROPPED_ITERATIONS);
        let secs = (shard.end_ms.saturating_sub(shard.start_ms) as f64 / 1000.0).max(1e-3);
        let p95 = percentiles(
            shard
                .series
                .fold(names::HTTP_REQ_DURATION, |_| true)
                .as_ref(),
        )
        .p95;
        let vus = progress
            .active_vus
            .load(std::sync::atomic::Ordering::Relaxed);
        let line = summary::progress_line(
            shard.end_ms as f64 / 1000.0,
            vus,
            count(names::HTTP_REQS) as f64 / secs,
            p95,
            self.errors,
            self.dropped,
        );
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K{line}");
        let _ = err.flush();
    }
}

async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    // Flags that do not fit together fail before any node is asked, and
    // so does a report that could not be written at the end.
    let mut spec = args.spec()?;
    check_outs(&args.out)?;
    let (data_specs, data) = data::load(&args.data, &args.data_mode, &args.data_exhausted)?;
    spec.data = data_specs;
    // A directory is a scenario crate: build it, then run what it built.
    let scenario = if args.scenario.is_dir() {
        let module = match build::build_modules(&args.scenario)?.as_slice() {
            [one] => one.clone(),
            many => bail!(
                "{} built {} modules ({}): give the one to run",
                args.scenario.display(),
                many.len(),
                many.iter()
                    .map(|m| m.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        eprintln!("built {}", module.display());
        spec.scenario = scenario_name(&module);
        module
    } else {
        args.scenario.clone()
    };
    let wasm = std::fs::read(&scenario)
        .with_context(|| format!("cannot read the scenario {}", scenario.display()))?;
    // Bytes that are no module at all are left to the module loader, whose
    // error says what a scenario must be.
    let declared = match declared_thresholds(&wasm) {
        Ok(declared) => declared,
        Err(DeclaredThresholdsError::NotWasm | DeclaredThresholdsError::Malformed { .. }) => {
            Vec::new()
        }
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!(
                "cannot read the thresholds {} declares",
                args.scenario.display()
            )));
        }
    };
    spec.thresholds.extend(declared);
    let thresholds = parse_all(&spec.thresholds).with_context(|| {
        format!(
            "a threshold of {} (given with --threshold or declared by the scenario) is unusable",
            args.scenario.display()
        )
    })?;
    let metrics = match declared_metrics(&wasm) {
        Ok(metrics) => metrics,
        Err(DeclaredThresholdsError::NotWasm | DeclaredThresholdsError::Malformed { .. }) => {
            Vec::new()
        }
        Err(e) => {
            return Err(anyhow::Error::new(e).context(format!(
                "cannot read the metrics {} declares",
                args.scenario.display()
            )));
        }
    };
    check_declared_metrics(&thresholds, &metrics)
        .with_context(|| format!("a threshold does not fit {}", args.scenario.display()))?;
    let node_answers = !args.local && api::client::probe(args.api.unwrap_or(default_api()?)).await;
    match args.place(node_answers)? {
        Place::Node(api) => {
            let client =
                api::client::ApiClient::new(api, mesh::token_source(args.data_dir.clone()));
            runs::run_on(client, &args, spec, wasm, data).await
        }
        Place::Fallback => {
            eprintln!("no fusi-node at {DEFAULT_API}: running on this machine (a mesh of one)");
            run_here(&args, spec, wasm, data).await
        }
        Place::Here => run_here(&args, spec, wasm, data).await,
    }
}

/// Checks, when the scenario declares its custom metrics
/// (`fusi_sdk::metrics!`), that every threshold on a custom metric names a
/// declared one, with an aggregation its kind has.
fn check_declared_metrics(
    thresholds: &[Threshold],
    declared: &[(MetricKind, String)],
) -> anyhow::Result<()> {
    if declared.is_empty() {
        return Ok(());
    }
    for t in thresholds
        .iter()
        .filter(|t| builtin_kind(&t.metric).is_none())
    {
        match declared.iter().find(|(_, name)| *name == t.metric) {
            Some((kind, _)) if !t.agg.fits(*kind) => bail!(
                "`{}`: `{}` is a {} metric of the scenario, which has no `{}`",
                t.source,
                t.metric,
                format!("{kind:?}").to_lowercase(),
                t.agg
            ),
            Some(_) => {}
            None => {
                let names = declared.iter().map(|(_, n)| n.as_str());
                let hint = match closest(&t.metric, names.clone()) {
                    Some(near) => format!("did you mean `{near}`?"),
                    None => format!(
                        "it declares {}",
                        names
                            .map(|n| format!("`{n}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                };
                bail!(
                    "`{}`: the scenario declares no metric `{}` ({hint})",
                    t.source,
                    t.metric
                );
            }
        }
    }
    Ok(())
}

/// A token cancelled by the first Ctrl-C, after `message` is printed; a
/// second Ctrl-C ends the process with status 130.
fn cancel_on_ctrl_c(message: String) -> CancellationToken {
    let interrupt = CancellationToken::new();
    let on_signal = interrupt.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("\n{message}");
            on_signal.cancel();
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        }
    });
    interrupt
}

/// The scenario's file name, for the summary's header.
fn scenario_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A report's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    /// The end-of-test summary, as a terminal shows it.
    Text,
    /// Everything, for machines: byte-identical on every node holding the
    /// same measurements.
    Json,
    /// One self-contained page with charts.
    Html,
    /// The timeline: one row per interval, for the run and each region.
    Csv,
    /// JUnit XML: a test case per threshold, per check and for the load,
    /// for CI systems.
    Junit,
}

impl ReportFormat {
    /// The format a file name asks for by its extension, if any.
    pub fn of_path(path: &Path) -> Option<ReportFormat> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "json" => Some(ReportFormat::Json),
            "html" | "htm" => Some(ReportFormat::Html),
            "csv" => Some(ReportFormat::Csv),
            "txt" => Some(ReportFormat::Text),
            "xml" => Some(ReportFormat::Junit),
            _ => None,
        }
    }

    /// The report in this format.
    pub fn render(self, report: &RunReport) -> Vec<u8> {
        match self {
            ReportFormat::Text => summary::render_report(report).into_bytes(),
            ReportFormat::Json => report.to_json(),
            ReportFormat::Html => html::render(report).into_bytes(),
            ReportFormat::Csv => report.to_csv().into_bytes(),
            ReportFormat::Junit => junit::render(report).into_bytes(),
        }
    }
}

/// Checks, before a run, that every `--out` can be written: each names a
/// file (not a directory) in a directory that exists and takes a new file,
/// and no two name the same file. The error names the path and the fix.
fn check_outs(outs: &[PathBuf]) -> anyhow::Result<()> {
    let mut seen: Vec<PathBuf> = Vec::new();
    for out in outs {
        let parent = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let Some(name) = out.file_name() else {
            bail!(
                "--out {} names no file: give a file name, for example --out report.json",
                out.display()
            );
        };
        if !parent.is_dir() {
            bail!(
                "cannot write the report to {}: the directory {} does not exist; create it \
                 (mkdir -p {}) or give --out a path in an existing directory",
                out.display(),
                parent.display(),
                parent.display()
            );
        }
        if out.is_dir() {
            bail!(
                "cannot write the report to {}: it is a directory; give a file name, for \
                 example --out {}",
                out.display(),
                out.join("report.json").display()
            );
        }
        writable(parent, out).with_context(|| {
            format!(
                "cannot write the report to {}: check that {} is writable",
                out.display(),
                if out.exists() {
                    out.display()
                } else {
                    parent.display()
                }
            )
        })?;
        let file = parent
            .canonicalize()
            .map(|dir| dir.join(name))
            .unwrap_or_else(|_| out.clone());
        if seen.contains(&file) {
            bail!(
                "--out {} is given twice: give each report its own file",
                out.display()
            );
        }
        seen.push(file);
    }
    Ok(())
}

/// Whether `out` could be written, leaving nothing behind: an existing
/// file is opened for writing (not truncated); otherwise a probe file is
/// made in `dir` and removed.
fn writable(dir: &Path, out: &Path) -> std::io::Result<()> {
    if out.exists() {
        return std::fs::OpenOptions::new().write(true).open(out).map(drop);
    }
    let probe = dir.join(format!(".fusi-out-check.{}.tmp", std::process::id()));
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)?;
    std::fs::remove_file(&probe)
}

/// Writes each `--out`: the report in the format its extension names
/// (`.html`, `.csv`, `.txt`), else JSON.
fn write_outs(paths: &[PathBuf], report: &RunReport) -> anyhow::Result<()> {
    for path in paths {
        let format = ReportFormat::of_path(path).unwrap_or(ReportFormat::Json);
        std::fs::write(path, format.render(report)).with_context(|| {
            format!(
                "cannot write the report to {}: check that its directory exists and is writable",
                path.display()
            )
        })?;
    }
    Ok(())
}

/// A run on this machine: a mesh of one.
async fn run_here(
    args: &RunArgs,
    spec: RunSpec,
    wasm: Vec<u8>,
    data: Vec<Vec<u8>>,
) -> anyhow::Result<ExitCode> {
    let export = args.otlp_endpoint.clone().map(|endpoint| {
        let config = crate::telemetry::otlp::OtlpConfig {
            endpoint,
            interval: args.otlp_interval,
        };
        crate::telemetry::local::LocalExport::start(config, &spec.executor_name())
    });
    let mut observer = LiveProgress {
        enabled: !args.quiet && std::io::stderr().is_terminal(),
        errors: 0,
        dropped: 0,
        export,
    };
    let interrupt = cancel_on_ctrl_c(
        "interrupted: stopping the run and printing what was measured (Ctrl-C again quits at once)"
            .to_owned(),
    );
    let data_dir = match &args.data_dir {
        Some(dir) => Some(dir.clone()),
        None => match mesh::default_data_dir() {
            Ok(dir) => Some(dir),
            Err(e) => {
                eprintln!("warning: this run is not kept for `fusi-node report`: {e:#}");
                None
            }
        },
    };
    let keeper = data_dir.as_deref().map(local::Keeper::new);
    let finished = local::run(
        wasm,
        data,
        spec,
        &mut observer,
        interrupt.clone(),
        args.source_ip,
        keeper,
    )
    .await?;
    if observer.enabled {
        eprintln!();
    }
    let report = finished.report;
    if let Some(export) = observer.export.take() {
        export.finish(&report.outcome).await;
    }
    print!("{}", summary::render_report(&report));
    match finished.kept {
        Some(Ok(())) => eprintln!(
            "report again: fusi-node report {}{} --out report.html",
            report.run_id,
            match &args.data_dir {
                Some(dir) => format!(" --data-dir {}", dir.display()),
                None => String::new(),
            }
        ),
        Some(Err(e)) => {
            eprintln!("warning: this run could not be kept for `fusi-node report`: {e}")
        }
        None => {}
    }
    write_outs(&args.out, &report)?;
    if interrupt.is_cancelled() {
        return Ok(ExitCode::from(130));
    }
    Ok(exit_for_verdict(&report).unwrap_or(ExitCode::SUCCESS))
}

/// The exit status k6 gives a run whose thresholds failed.
pub const THRESHOLDS_FAILED: u8 = 99;

/// The exit status of a run that fell short of its planned load, or lost a
/// node with its share: its measurements are not those of the run asked
/// for, so it comes before the thresholds judged on them.
pub const LOAD_SHORT: u8 = 97;

/// The exit status a finished run's report calls for, after saying why on
/// stderr: [`LOAD_SHORT`], else [`THRESHOLDS_FAILED`]; `None` when it
/// passed.
fn exit_for_verdict(report: &RunReport) -> Option<ExitCode> {
    if report.load_short() {
        let load = &report.load;
        let unit = match load.unit {
            LoadUnit::Iterations => "iterations",
            LoadUnit::VuSeconds => "VU-seconds",
        };
        let lost = &report.completeness.nodes_lost;
        let lost = if lost.is_empty() {
            String::new()
        } else {
            format!("; lost with their share: {}", lost.join(", "))
        };
        let why = crate::summary::dropped_why(report)
            .map(|why| format!("; {why}"))
            .unwrap_or_default();
        eprintln!(
            "error: the run fell short of its planned load: delivered {:.0} of {:.0} {unit} \
             ({:.1} %, --min-delivered {:.1} %){lost}{why}",
            load.delivered,
            load.planned,
            load.ratio * 100.0,
            load.min_ratio * 100.0
        );
        // Thresholds that failed are still worth a line.
        let _ = exit_for_thresholds(report);
        return Some(ExitCode::from(LOAD_SHORT));
    }
    exit_for_thresholds(report)
}

/// [`THRESHOLDS_FAILED`] when a threshold failed, after saying which on stderr.
fn exit_for_thresholds(report: &RunReport) -> Option<ExitCode> {
    if let Some(threshold) = &report.aborted_by {
        eprintln!(
            "error: threshold `{threshold}` failed during the run and stopped it (abortOnFail)"
        );
        return Some(ExitCode::from(THRESHOLDS_FAILED));
    }
    let failed: Vec<&str> = report
        .thresholds
        .iter()
        .filter(|t| !t.pass)
        .map(|t| t.threshold.as_str())
        .collect();
    if failed.is_empty() {
        return None;
    }
    eprintln!(
        "error: {} of {} thresholds failed: {}",
        failed.len(),
        report.thresholds.len(),
        failed.join("; ")
    );
    Some(ExitCode::from(THRESHOLDS_FAILED))
}

fn build(args: &BuildArgs) -> anyhow::Result<ExitCode> {
    for module in build::build_modules(&args.dir)? {
        println!("{}", module.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs the command line; the process exit code comes back.
pub fn main() -> ExitCode {
    let args = match config::expand(std::env::args_os().collect()) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let cli = Cli::parse_from(args);
    // A node logs who joins and leaves; a run logs only what its scenario says.
    let node = matches!(cli.command, Cmd::Up(_));
    let default_filter = if node {
        "warn,fusi_node=info"
    } else {
        "warn,scenario=info"
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    // A node's log is read later and beside other logs: times and sources.
    // A command's warnings are read as it runs: the level and the text.
    if node {
        logs.init();
    } else {
        logs.without_time().with_target(false).init();
    }
    // Every VU holds a connection: lift the open-file limit before any run.
    match crate::limits::raise_open_files() {
        Ok(files) => tracing::debug!(
            before = files.before,
            soft = files.soft,
            hard = files.hard,
            "open-file limit"
        ),
        Err(e) => tracing::debug!("cannot read the open-file limit: {e}"),
    }
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")
    };
    let result = match cli.command {
        Cmd::Build(args) => build(&args),
        Cmd::Keygen(args) => mesh::keygen(&args),
        Cmd::Simulate(args) => simulate::run(&args),
        Cmd::Completions(args) => completions(&args),
        Cmd::Man(args) => man(&args),
        Cmd::Run(args) => runtime().and_then(|rt| rt.block_on(run(*args))),
        Cmd::Up(args) => runtime().and_then(|rt| rt.block_on(mesh::up(*args))),
        Cmd::Peers(args) => runtime().and_then(|rt| rt.block_on(mesh::peers(args))),
        Cmd::Status(args) => runtime().and_then(|rt| rt.block_on(mesh::status(args))),
        Cmd::New(args) => new::new(&args),
        Cmd::Dashboard(args) => runtime().and_then(|rt| rt.block_on(mesh::dashboard(args))),
        Cmd::Runs(args) => runtime().and_then(|rt| rt.block_on(runs::runs(args))),
        Cmd::Stop(args) => runtime().and_then(|rt| rt.block_on(runs::stop(args))),
        Cmd::Report(args) => runtime().and_then(|rt| rt.block_on(runs::report(args))),
        Cmd::Watch(args) => runtime().and_then(|rt| rt.block_on(runs::watch(args))),
        Cmd::Compare(args) => runtime().and_then(|rt| rt.block_on(runs::compare(args))),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_long_version_names_the_commit_and_what_it_speaks() {
        let text = Cli::command().render_long_version();
        assert!(
            text.starts_with(&format!("fusi-node {} (commit ", env!("CARGO_PKG_VERSION"))),
            "{text}"
        );
        assert!(
            text.contains(&format!("scenario ABI {}", fusi_sdk::abi::ABI_VERSION)),
            "{text}"
        );
        assert!(
            text.contains("run protocol ") && text.contains("shard format "),
            "{text}"
        );
    }

    #[test]
    fn completions_and_man_pages_cover_every_command() {
        let mut script = Vec::new();
        clap_complete::generate(
            clap_complete::Shell::Bash,
            &mut Cli::command(),
            "fusi-node",
            &mut script,
        );
        let script = String::from_utf8_lossy(&script);
        let mut page = Vec::new();
        assert!(
            clap_mangen::Man::new(Cli::command())
                .render(&mut page)
                .is_ok()
        );
        let page = String::from_utf8_lossy(&page);
        for sub in Cli::command().get_subcommands() {
            let name = sub.get_name();
            assert!(script.contains(name), "completions lack {name}");
            assert!(
                page.contains(&name.replace('-', "\\-")),
                "the man page lacks {name}"
            );
        }
        assert!(
            script.contains("--expected-statuses"),
            "options complete too"
        );
    }

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    fn spec(args: &[&str]) -> anyhow::Result<RunSpec> {
        let mut all = vec!["fusi-node", "run", "x.wasm"];
        all.extend_from_slice(args);
        match Cli::try_parse_from(all)?.command {
            Cmd::Run(run) => run.spec(),
            _ => bail!("not a run"),
        }
    }

    #[test]
    fn a_ramping_arrival_rate_takes_its_time_unit() {
        let s = spec(&[
            "--executor",
            "ramping-arrival-rate",
            "--stages",
            "1m:120",
            "--time-unit",
            "1m",
            "--vus",
            "2",
        ])
        .unwrap();
        assert_eq!(s.scenarios[0].executor.peak_rate_per_second(), Some(2.0));
        let e = spec(&["--rate", "5/s", "--duration", "1s", "--time-unit", "1m"]).unwrap_err();
        assert!(
            e.to_string()
                .contains("--time-unit applies to ramping-arrival-rate"),
            "{e}"
        );
        let e = spec(&[
            "--executor",
            "ramping-arrival-rate",
            "--stages",
            "1s:1",
            "--time-unit",
            "0s",
        ])
        .unwrap_err();
        assert!(
            e.to_string().contains("--time-unit must be more than 0"),
            "{e}"
        );
    }

    #[test]
    fn executors_are_picked_from_the_flags() {
        let name = |args: &[&str]| {
            spec(args)
                .map(|s| s.scenarios[0].executor.name())
                .unwrap_or("error")
        };
        assert_eq!(name(&[]), "shared-iterations");
        assert_eq!(name(&["--vus", "5", "--duration", "1s"]), "constant-vus");
        assert_eq!(name(&["--stages", "1s:5,1s:0"]), "ramping-vus");
        assert_eq!(
            name(&["--rate", "10/s", "--duration", "1s"]),
            "constant-arrival-rate"
        );
        assert_eq!(
            name(&["--iterations", "10", "--vus", "2"]),
            "shared-iterations"
        );
        assert_eq!(
            name(&[
                "--executor",
                "per-vu-iterations",
                "--iterations",
                "3",
                "--vus",
                "2"
            ]),
            "per-vu-iterations"
        );
        assert_eq!(
            name(&["--executor", "ramping-arrival-rate", "--stages", "1s:10"]),
            "ramping-arrival-rate"
        );
        assert_eq!(
            name(&["--executor", "constant-vus", "--rate", "1/s"]),
            "error"
        );
        assert_eq!(name(&["--executor", "constant-vus"]), "error");
        assert_eq!(name(&["--vus", "4"]), "shared-iterations");
        assert_eq!(spec(&["--vus", "4"]).map(|s| s.max_vus()).unwrap_or(0), 4);
        assert_eq!(name(&["--stages", "1s:5", "--duration", "3s"]), "error");
        assert_eq!(name(&["--stages", "1s:5", "--vus", "3"]), "error");
        assert_eq!(name(&["--duration", "1s", "--start", "3"]), "error");
    }

    #[test]
    fn flags_reach_the_spec() {
        let s = spec(&[
            "--vus",
            "3",
            "--duration",
            "2s",
            "-e",
            "A=1",
            "--env",
            "B=x=y",
            "--iteration-timeout",
            "500ms",
            "--vu-memory-mib",
            "8",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.env.get("B").map(String::as_str), Some("x=y"));
        assert_eq!(s.iteration_timeout, Duration::from_millis(500));
        assert_eq!(s.vu_memory_limit, 8 << 20);
        assert_eq!(s.max_vus(), 3);
    }

    #[test]
    fn limit_flags_are_checked_by_the_spec_check_peers_use() {
        let err = |args: &[&str]| {
            spec(args)
                .map(|_| String::new())
                .unwrap_or_else(|e| e.to_string())
        };
        assert!(err(&["--graceful-stop", "2h"]).contains("give 0s to 1h"));
        assert!(err(&["--iteration-timeout", "0s"]).contains("give 1ms to 24h"));
        assert!(err(&["--vu-memory-mib", "4097"]).contains("1..=4096"));
        assert_eq!(
            err(&["--graceful-stop", "1h", "--iteration-timeout", "24h"]),
            ""
        );
    }

    /// `fusi-node run x.wasm ARGS`, with no --api unless ARGS name one (so
    /// that a FUSI_API in the test's environment does not count).
    fn run_args(args: &[&str]) -> anyhow::Result<RunArgs> {
        let mut all = vec!["fusi-node", "run", "x.wasm"];
        all.extend_from_slice(args);
        match Cli::try_parse_from(all)?.command {
            Cmd::Run(mut run) => {
                if !args.contains(&"--api") {
                    run.api = None;
                }
                Ok(*run)
            }
            _ => bail!("not a run"),
        }
    }

    fn refusal(args: &[&str]) -> String {
        match run_args(args) {
            Ok(run) => panic!("{args:?} parsed: {run:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn mesh_flags_are_refused_with_local_and_checked() {
        let e = refusal(&["--local", "--region", "fra=1"]);
        assert!(e.contains("--local") && e.contains("--region"), "{e}");
        let e = refusal(&["--nodes", "2", "--local"]);
        assert!(e.contains("--local") && e.contains("--nodes"), "{e}");
        refusal(&["--nodes", "0"]);
        refusal(&["--nodes", "4097"]);
        assert!(run_args(&["--nodes", "4096"]).is_ok());
        assert!(refusal(&["--region", "fra"]).contains("REGION=WEIGHT"));
        let run = run_args(&["--region", "fra=60,nrt=40"]).unwrap_or_else(|e| panic!("{e}"));
        let weights: Vec<(String, u64)> = run
            .region
            .map(|w| w.0.into_iter().map(|w| (w.region, w.weight)).collect())
            .unwrap_or_default();
        assert_eq!(weights, [("fra".to_owned(), 60), ("nrt".to_owned(), 40)]);
    }

    #[test]
    fn targets_come_from_the_flag_or_from_env_urls() {
        let s = spec(&[
            "-e",
            "TARGET=http://127.0.0.1:8080",
            "-e",
            "SHOP=https://Shop.Example.com/cart?x=1",
            "-e",
            "AGAIN=http://127.0.0.1:8080/other",
            "-e",
            "NAME=not a url",
            "-e",
            "MAIL=mailto:a@example.com",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.targets, ["127.0.0.1:8080", "shop.example.com"]);
        let s = spec(&[
            "-e",
            "TARGET=http://127.0.0.1:8080",
            "--target",
            "10.0.0.7:81",
            "--target",
            "https://a.example:8443/p",
            "--target",
            "[::1]:9000",
            "--target",
            "b.example",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            s.targets,
            ["10.0.0.7:81", "a.example:8443", "[::1]:9000", "b.example"]
        );
        for bad in [
            "ftp://x.example",
            "x.example/path",
            "",
            "u@x.example",
            "x:port",
        ] {
            assert!(target_arg(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_run_goes_to_a_node_or_here_by_the_rules() {
        let place = |args: &[&str], answers: bool| -> Result<Place, String> {
            run_args(args)
                .and_then(|run| run.place(answers))
                .map_err(|e| e.to_string())
        };
        let default = default_api().unwrap_or_else(|e| panic!("{e}"));
        let other: SocketAddr = ([127, 0, 0, 1], 7402).into();
        assert_eq!(place(&[], true), Ok(Place::Node(default)));
        assert_eq!(place(&[], false), Ok(Place::Fallback));
        assert_eq!(place(&["--local"], true), Ok(Place::Here));
        assert_eq!(
            place(&["--local", "--api", "127.0.0.1:7402"], true),
            Ok(Place::Here)
        );
        assert_eq!(
            place(&["--api", "127.0.0.1:7402"], true),
            Ok(Place::Node(other))
        );
        let e = place(&["--api", "127.0.0.1:7402"], false).expect_err("no node");
        assert!(
            e.contains("127.0.0.1:7402") && e.contains("fusi-node up") && e.contains("--local"),
            "{e}"
        );
        let e = place(&["--region", "fra=1", "--nodes", "3"], false).expect_err("no mesh");
        assert!(
            e.contains("--region and --nodes") && e.contains("fusi-node up"),
            "{e}"
        );
        assert!(place(&["--nodes", "3"], true).is_ok());
        let e = place(&["--source-ip", "127.0.2.1"], true).expect_err("a node");
        assert!(
            e.contains("a node's --source-ip applies to mesh runs"),
            "{e}"
        );
        assert_eq!(
            place(&["--source-ip", "127.0.2.1"], false),
            Ok(Place::Fallback)
        );
        assert_eq!(
            place(&["--source-ip", "127.0.2.1", "--local"], true),
            Ok(Place::Here)
        );
    }

    /// A fresh empty directory for a test.
    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("fusi-cli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        dir
    }

    #[test]
    fn out_is_repeatable_and_each_path_is_checked_before_the_run() {
        let run =
            run_args(&["--out", "a.json", "--out", "b.html"]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(run.out, [PathBuf::from("a.json"), PathBuf::from("b.html")]);
        let dir = temp_dir("outs");
        let err = |outs: &[PathBuf]| {
            check_outs(outs)
                .map(|()| String::new())
                .unwrap_or_else(|e| format!("{e:#}"))
        };
        let (json, html) = (dir.join("r.json"), dir.join("r.html"));
        assert_eq!(err(&[json.clone(), html.clone()]), "");
        assert!(
            !json.exists() && !html.exists(),
            "the check writes no report"
        );
        assert_eq!(
            std::fs::read_dir(&dir).map(|d| d.count()).ok(),
            Some(0),
            "and leaves no probe file"
        );
        let missing = dir.join("nodir").join("x.json");
        let e = err(&[json.clone(), missing.clone()]);
        assert!(
            e.contains(&missing.display().to_string())
                && e.contains("does not exist")
                && e.contains("mkdir -p"),
            "{e}"
        );
        let again = dir.join(".").join("r.json");
        let e = err(&[json.clone(), html, again]);
        assert!(e.contains("given twice"), "{e}");
        let e = err(std::slice::from_ref(&dir));
        assert!(e.contains("is a directory"), "{e}");
        std::fs::write(&json, b"old").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(err(std::slice::from_ref(&json)), "");
        assert_eq!(
            std::fs::read(&json).ok(),
            Some(b"old".to_vec()),
            "an existing file is left as it was"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_run_commands_parse() {
        let parse = |args: &[&str]| {
            let mut all = vec!["fusi-node"];
            all.extend_from_slice(args);
            Cli::try_parse_from(all).map(|cli| cli.command)
        };
        assert!(matches!(parse(&["runs"]), Ok(Cmd::Runs(_))));
        assert!(matches!(parse(&["runs", "r1a-2_b"]), Ok(Cmd::Runs(_))));
        assert!(parse(&["runs", "r1/../x"]).is_err());
        assert!(matches!(parse(&["stop", "r1"]), Ok(Cmd::Stop(_))));
        assert!(parse(&["stop"]).is_err());
        assert!(matches!(
            parse(&["report", "r1", "--json", "--out", "s.json"]),
            Ok(Cmd::Report(_))
        ));
        assert!(matches!(
            parse(&[
                "report", "r1", "--local", "--out", "a.json", "--out", "a.html"
            ]),
            Ok(Cmd::Report(_))
        ));
        assert!(matches!(parse(&["runs", "--local"]), Ok(Cmd::Runs(_))));
    }
}
