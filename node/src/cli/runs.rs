//! The run commands that go through a node: `run` on a mesh, `runs`,
//! `stop` and `report`; `runs` and `report` also read the runs kept on
//! this machine ([`crate::local`]).

use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use serde::de::DeserializeOwned;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::mesh::{self, ApiArgs, short_id, table};
use super::{ReportFormat, RunArgs, cancel_on_ctrl_c, exit_for_verdict, write_outs};
use crate::api::client::ApiClient;
use crate::api::server::valid_run_id;
use crate::api::{LiveView, RunNodeView, RunView, RunsView, SubmitRequest, SubmitView};
use crate::core::run_report::RunReport;
use crate::core::spec::RunSpec;
use crate::local::{self, LOCAL_NODE, LocalRun};
use crate::summary;

/// The long help of `fusi-node runs`.
pub const RUNS_EXAMPLES: &str = "\
Without RUN, lists the runs the node knows, newest first: their phase,
executor, nodes, leader and age. With RUN, shows that run: each node's state,
share of the load, VUs, when it really started (relative to the planned start,
with the clock error bound) and, for a node that refused, why.

Runs on this machine (`fusi-node run --local`, or without a node) are kept in
the data directory (--data-dir; the newest 50). Without RUN, the list comes
from them when no node answers at --api, or with --local; RUN is looked up
there first.

Examples:
  fusi-node runs
  fusi-node runs r18c2f0a9b3d4e5f6
  fusi-node runs --local
  fusi-node runs --json --api 127.0.0.1:7402

Exit status: 0 when the list or the run was shown; 1 when RUN is not kept
here and no node answers at --api, or it does not know RUN.";

/// The long help of `fusi-node stop`.
pub const STOP_EXAMPLES: &str = "\
Asks the node to stop the run on every node taking part. Each one ends its
iterations, sends what it measured, and the run ends in phase `stopped`;
`fusi-node report RUN` then shows what was measured.

Examples:
  fusi-node stop r18c2f0a9b3d4e5f6
  fusi-node stop r18c2f0a9b3d4e5f6 --api 127.0.0.1:7402

Exit status: 0 when the stop was sent; 1 when no node answers at --api, it
does not know RUN, or the run has already ended.";

/// The long help of `fusi-node report`.
pub const REPORT_EXAMPLES: &str = "\
Prints the run's report, merged from the measurements (shards) the node holds:
first how complete it is (shards held of shards announced, nodes lost), then
the whole run, each region and each node. Nodes fill each other's gaps, so
every node of the mesh converges to the same shards, and two nodes holding the
same shards print byte-identical JSON.

Formats: text (the end-of-test summary), json (everything, with a timeline
per region), html (one self-contained page with charts), csv (the timeline:
one row per interval, for the run and each region). Without --format, the
extension of --out picks it, else text. --out may be given more than once,
one file each: --out report.json --out report.html.

A run on this machine (`fusi-node run --local`, or without a node) is kept in
the data directory (--data-dir; the newest 50), and its report is printed
from there, with no node running: the same bytes as the run's own --out.

Examples:
  fusi-node report r18c2f0a9b3d4e5f6
  fusi-node report r18c2f0a9b3d4e5f6 --out report.html --out report.json
  fusi-node report r18c2f0a9b3d4e5f6 --format json | jq .regions.fra.http
  fusi-node report r18c2f0a9b3d4e5f6 --format csv --out timeline.csv

Exit status: 0 when the report was printed, whatever the run's outcome; 1 when
RUN is not kept here and no node answers at --api, or it does not know RUN.";

/// The long help of `fusi-node watch`.
pub const COMPARE_EXAMPLES: &str = "\
Compares run B against run A, for the whole run and each region both have:
requests, requests/s, failed requests, the percentiles of http_req_duration
and iteration_duration, with the change from A to B; and a one-sided
Kolmogorov-Smirnov test on http_req_duration's whole distributions (from
the reports' duration_buckets) that says whether B is slower (or faster)
than A beyond noise, at alpha 0.01. On many requests the test finds even a
small shift; --fail-if-slower gates on size as well.

A and B are run ids (a run kept on this machine, or on the node at --api) or
report JSON files written by `--out x.json` or `fusi-node report --format json`.

Examples:
  fusi-node compare r18c2f0a9b3d4e5f6 r18c2f1b7e0a1c2d3
  fusi-node compare baseline.json candidate.json --fail-if-slower 5%
  fusi-node compare baseline.json r18c2f1b7e0a1c2d3 --out compare.html

Exit status: 0; 99 with --fail-if-slower when B is slower than A beyond
noise and B's p95 is more than the limit above A's; 1 when a run cannot be
read.";

pub const WATCH_EXAMPLES: &str = "\
Follows a run from any node: elapsed time, VUs, requests/s, p95 and failed
requests, for the run and each region, refreshed every second from the
shards as they arrive. When the run ends it prints the report. Ctrl-C stops
watching, not the run (`fusi-node stop RUN` does that).

Examples:
  fusi-node watch r18c2f0a9b3d4e5f6
  fusi-node watch r18c2f0a9b3d4e5f6 --api 127.0.0.1:7402

Exit status: 0 when the run ended complete; 97 when it fell short of its
planned load or lost a node (see `fusi-node run --help`); 99 when a threshold
failed; 1 when it was stopped or failed, no node answers at --api, or it does
not know RUN.";

/// `fusi-node runs`.
#[derive(Args, Debug)]
pub struct RunsArgs {
    /// A run id: show this run and its nodes.
    #[arg(value_parser = run_id_arg)]
    run: Option<String>,
    #[command(flatten)]
    api: ApiArgs,
    /// Only the runs kept on this machine, whether a node answers or not.
    #[arg(long)]
    local: bool,
}

/// `fusi-node stop`.
#[derive(Args, Debug)]
pub struct StopArgs {
    /// The run to stop.
    #[arg(value_parser = run_id_arg)]
    run: String,
    #[command(flatten)]
    api: ApiArgs,
}

/// `fusi-node report`.
#[derive(Args, Debug)]
pub struct ReportArgs {
    /// The run.
    #[arg(value_parser = run_id_arg)]
    run: String,
    #[command(flatten)]
    api: ApiArgs,
    /// The format [default: from the extension of --out, else text].
    #[arg(long, value_enum)]
    format: Option<ReportFormat>,
    /// Write the report to this file instead of the terminal; repeatable,
    /// one file each.
    #[arg(long)]
    out: Vec<PathBuf>,
    /// Only a run kept on this machine: ask no node.
    #[arg(long)]
    local: bool,
}

/// `fusi-node compare`.
#[derive(Args, Debug)]
pub struct CompareArgs {
    /// Run A, the baseline: a run id (kept on this machine, or on the node
    /// at --api) or a report JSON file (`--out x.json`).
    a: String,
    /// Run B, judged against A, the same way.
    b: String,
    #[command(flatten)]
    api: ApiArgs,
    /// Fail (exit 99) when B is slower than A beyond noise and its
    /// http_req_duration p95 is more than this much above A's: a
    /// percentage (5%) or a fraction (0.05).
    #[arg(long, value_parser = fail_if_slower_arg)]
    fail_if_slower: Option<f64>,
    /// The format [default: from the extension of --out, else text].
    #[arg(long, value_enum)]
    format: Option<CompareFormat>,
    /// Write the comparison to this file instead of the terminal (.html,
    /// .json, else text); repeatable, one file each.
    #[arg(long)]
    out: Vec<PathBuf>,
}

/// A comparison's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CompareFormat {
    /// Tables for a terminal.
    Text,
    /// Everything, for machines.
    Json,
    /// A page with both distributions overlaid.
    Html,
}

fn fail_if_slower_arg(s: &str) -> Result<f64, String> {
    let text = s.trim();
    let value = match text.strip_suffix('%') {
        Some(percent) => percent.trim().parse::<f64>().map(|p| p / 100.0),
        None => text.parse::<f64>(),
    };
    match value {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!(
            "invalid --fail-if-slower {s:?}: write a percentage (5%) or a fraction (0.05), 0 or more"
        )),
    }
}

/// `fusi-node watch`.
#[derive(Args, Debug)]
pub struct WatchArgs {
    /// The run to follow.
    #[arg(value_parser = run_id_arg)]
    run: String,
    #[command(flatten)]
    api: ApiArgs,
}

fn run_id_arg(s: &str) -> Result<String, String> {
    if valid_run_id(s) {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "{s:?} is not a run id: ids are letters, digits, '-' and '_', as `fusi-node runs` lists them"
        ))
    }
}

/// How often a mesh run is polled.
const POLL_EVERY: Duration = Duration::from_millis(200);
/// How often the live progress line is refreshed.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// How long the node may fail to answer before the CLI gives up.
const POLL_GRACE: Duration = Duration::from_secs(10);

/// Whether a phase is one a run ends in.
fn ended(phase: &str) -> bool {
    matches!(phase, "complete" | "stopped" | "failed")
}

/// A node's name for a table, or its short id when it has none.
fn label(node: &RunNodeView) -> String {
    if node.name.is_empty() {
        short_id(&node.id)
    } else {
        node.name.clone()
    }
}

fn share(node: &RunNodeView) -> String {
    node.segment
        .map(|(start, end)| format!("{:.1}%", (end - start) * 100.0))
        .unwrap_or_else(|| "-".into())
}

/// Seconds as `12.3s`, `5m07s` or `2h05m`.
fn fmt_secs(s: f64) -> String {
    let s = s.max(0.0);
    if s < 60.0 {
        return format!("{s:.1}s");
    }
    let whole = s as u64;
    if whole < 3600 {
        format!("{}m{:02}s", whole / 60, whole % 60)
    } else {
        format!("{}h{:02}m", whole / 3600, whole % 3600 / 60)
    }
}

/// How far along a run is: `starts in 2.0s`, `12.3s of 1m00s`, `5m07s ago`.
fn age(run: &RunView) -> String {
    match run.elapsed_s {
        None => "-".into(),
        Some(e) if e < 0.0 => format!("starts in {}", fmt_secs(-e)),
        Some(e) if ended(&run.phase) => format!("{} ago", fmt_secs(e)),
        Some(e) => format!("{} of {}", fmt_secs(e), fmt_secs(run.duration_s)),
    }
}

/// The leader's name when it is one of the run's nodes, else its short id.
fn leader(run: &RunView) -> String {
    match &run.leader {
        None => "-".into(),
        Some(id) => node_name(run, id),
    }
}

/// A node of the run by name when the run lists it, else by short id.
fn node_name(run: &RunView, id: &str) -> String {
    run.nodes
        .iter()
        .find(|n| n.id == id)
        .map(label)
        .unwrap_or_else(|| short_id(id))
}

fn strings<const N: usize>(cells: [&str; N]) -> Vec<String> {
    cells.iter().map(|c| (*c).to_owned()).collect()
}

/// Renders `fusi-node runs`.
pub fn render_runs(view: &RunsView) -> String {
    if view.runs.is_empty() {
        return "no runs yet; start one with `fusi-node run SCENARIO.wasm`\n".to_owned();
    }
    let mut rows = vec![strings([
        "RUN", "PHASE", "EXECUTOR", "NODES", "LEADER", "AGE",
    ])];
    for run in &view.runs {
        rows.push(vec![
            run.id.clone(),
            run.phase.clone(),
            run.executor.clone(),
            run.nodes.len().to_string(),
            leader(run),
            age(run),
        ]);
    }
    table(&rows)
}

/// Renders `fusi-node runs RUN`: the run, then its nodes.
pub fn render_run(run: &RunView) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: String| {
        let _ = writeln!(out, "{k:<12} {v}");
    };
    line("run", run.id.clone());
    line(
        "phase",
        match &run.reason {
            Some(reason) => format!("{} ({reason})", run.phase),
            None => run.phase.clone(),
        },
    );
    line("executor", run.executor.clone());
    line("module", run.module_sha256.clone());
    line("submitted", format!("to {}", node_name(run, &run.proposer)));
    line("leader", format!("{} (term {})", leader(run), run.term));
    if let Some(weights) = &run.weights {
        line("regions", weights.clone());
    }
    line("age", age(run));
    if let Some(skew) = start_line(run) {
        line("start", skew);
    }
    if let Some(problem) = &run.storage_error {
        line("storage", problem.clone());
    }
    out.push('\n');
    out.push_str(&render_nodes(run));
    out
}

/// The nodes of a run, with their state, share, VUs and start.
fn render_nodes(run: &RunView) -> String {
    if run.nodes.is_empty() {
        return "no nodes yet\n".to_owned();
    }
    let mut rows = vec![strings([
        "NODE", "REGION", "STATE", "SHARE", "VUS", "START", "NOTE",
    ])];
    for node in &run.nodes {
        let start = match (node.start_offset_ms, node.bound_ms) {
            (Some(offset), Some(bound)) => format!("{offset:+.2} ± {bound:.2} ms"),
            (Some(offset), None) => format!("{offset:+.2} ms"),
            _ => "-".into(),
        };
        rows.push(vec![
            label(node),
            node.region.clone(),
            node.state.clone(),
            share(node),
            node.vus.to_string(),
            start,
            node.refused.clone().unwrap_or_default(),
        ]);
    }
    table(&rows)
}

/// The assignment, printed once a mesh run has one.
fn render_assignment(run: &RunView) -> String {
    let mut rows = vec![strings(["NODE", "REGION", "SHARE", "VUS"])];
    for node in run.nodes.iter().filter(|n| n.segment.is_some()) {
        rows.push(vec![
            label(node),
            node.region.clone(),
            share(node),
            node.vus.to_string(),
        ]);
    }
    table(&rows)
}

/// `skew X ms (clock bound ±Y ms)`, once the run started.
fn start_line(run: &RunView) -> Option<String> {
    let skew = run.start_skew_ms?;
    Some(match run.clock_bound_ms {
        Some(bound) => format!("skew {skew:.2} ms (clock bound ±{bound:.2} ms)"),
        None => format!("skew {skew:.2} ms"),
    })
}

/// The lines above a mesh run's summary: who took part, who did not and
/// why, and how close together the nodes started.
pub fn render_header(run: &RunView) -> String {
    let mut out = String::new();
    let in_state = |states: &[&str]| -> Vec<&RunNodeView> {
        run.nodes
            .iter()
            .filter(|n| states.contains(&n.state.as_str()))
            .collect()
    };
    let names = |nodes: &[&RunNodeView]| -> String {
        nodes
            .iter()
            .map(|n| format!("{} ({})", label(n), n.region))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(out);
    let _ = write!(out, "  run {}: {}", run.id, run.phase);
    if let Some(reason) = &run.reason {
        let _ = write!(out, " ({reason})");
    }
    let _ = writeln!(out);
    let took_part = in_state(&[
        "assigned",
        "ready",
        "started",
        "done",
        "interrupted",
        "lost",
    ]);
    let _ = writeln!(
        out,
        "  nodes: {} took part: {}",
        took_part.len(),
        names(&took_part)
    );
    for (state, what) in [
        ("lost", "lost (stopped answering)"),
        ("interrupted", "interrupted"),
    ] {
        let nodes = in_state(&[state]);
        if !nodes.is_empty() {
            let _ = writeln!(out, "  {what}: {}", names(&nodes));
        }
    }
    for node in in_state(&["refused"]) {
        let _ = writeln!(
            out,
            "  refused: {} ({}): {}",
            label(node),
            node.region,
            node.refused.as_deref().unwrap_or("no reason given")
        );
    }
    if let Some(start) = start_line(run) {
        let _ = writeln!(out, "  start: {start}");
    }
    if let Some(problem) = &run.storage_error {
        let _ = writeln!(out, "  storage: {problem}");
    }
    out
}

/// Polls one node for one run, and gives up once it has failed to answer
/// for [`POLL_GRACE`].
struct Poller {
    client: ApiClient,
    id: String,
    failing_since: Option<Instant>,
}

impl Poller {
    /// `path` from the node; `None` after an error that is still within the grace.
    async fn get<T: DeserializeOwned>(&mut self, path: &str) -> anyhow::Result<Option<T>> {
        match self.client.get(path).await {
            Ok(view) => {
                self.failing_since = None;
                Ok(Some(view))
            }
            Err(e) => {
                let since = *self.failing_since.get_or_insert_with(Instant::now);
                if since.elapsed() < POLL_GRACE {
                    return Ok(None);
                }
                Err(e.context(format!(
                    "the node at {} stopped answering about run {} for {} s (did it die?); the run \
                     goes on in the mesh: `fusi-node report {}` on another node shows it",
                    self.client.api(),
                    self.id,
                    POLL_GRACE.as_secs(),
                    self.id
                )))
            }
        }
    }

    /// Like [`Poller::get`], but waits and retries until an answer or the end of the grace.
    async fn get_until<T: DeserializeOwned>(&mut self, path: &str) -> anyhow::Result<T> {
        loop {
            if let Some(view) = self.get(path).await? {
                return Ok(view);
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }
}

/// The live progress of a mesh run: a line for the run and one per region,
/// from the latest interval the node merged. On a terminal the lines are
/// redrawn in place; elsewhere (a CI log) they are appended.
#[derive(Default)]
struct LiveProgress {
    /// Lines drawn in place, to redraw over.
    drawn: usize,
    terminal: bool,
}

impl LiveProgress {
    fn show(&mut self, live: &LiveView) {
        let elapsed = live.run.elapsed_s.unwrap_or(0.0).max(0.0);
        let mut lines = vec![format!(
            "{}  total {}  failed {}",
            summary::progress_line(
                elapsed,
                live.total.vus,
                live.total.rps,
                live.total.p95_ms,
                0,
                0
            )
            .split("  errors")
            .next()
            .unwrap_or_default(),
            live.total.requests,
            live.total.failed
        )];
        if live.regions.len() > 1 {
            for r in &live.regions {
                lines.push(format!(
                    "  {:<10} vus {:>5}  reqs/s {:>9.1}  p95 {:>9}  total {}  failed {}",
                    r.scope,
                    r.vus,
                    r.rps,
                    summary::fmt_ms(r.p95_ms),
                    r.requests,
                    r.failed
                ));
            }
        }
        let mut err = std::io::stderr().lock();
        if self.terminal {
            if self.drawn > 1 {
                let _ = write!(err, "\x1b[{}A", self.drawn - 1);
            }
            let _ = write!(err, "\r");
            for (i, line) in lines.iter().enumerate() {
                let _ = write!(err, "\x1b[2K{line}");
                if i + 1 < lines.len() {
                    let _ = writeln!(err);
                }
            }
            self.drawn = lines.len();
        } else {
            for line in &lines {
                let _ = writeln!(err, "{line}");
            }
        }
        let _ = err.flush();
    }

    /// Ends the lines, so that what follows starts on its own.
    fn finish(&mut self) {
        if std::mem::take(&mut self.drawn) > 0 {
            eprintln!();
        }
    }
}

/// Follows a submitted run until it ends: prints its assignment and start
/// to stderr, the live progress line when `live`, and stops it on every
/// node when `interrupt` is cancelled.
async fn follow(
    poller: &mut Poller,
    live: bool,
    interrupt: &CancellationToken,
) -> anyhow::Result<()> {
    let run_path = format!("/v1/runs/{}", poller.id);
    let live_path = format!("{run_path}/live");
    let mut stop_sent = false;
    let mut shown_assignment = false;
    let mut shown_start = false;
    let mut progress = LiveProgress {
        drawn: 0,
        terminal: std::io::stderr().is_terminal(),
    };
    let mut next_progress = Instant::now();
    loop {
        tokio::select! {
            () = interrupt.cancelled(), if !stop_sent => {
                stop_sent = true;
                if let Err(e) = poller.client.post::<RunView>(&format!("{run_path}/stop")).await {
                    eprintln!("warning: could not stop run {}: {e:#}", poller.id);
                }
                continue;
            }
            () = tokio::time::sleep(POLL_EVERY) => {}
        }
        let Some(run) = poller.get::<RunView>(&run_path).await? else {
            continue;
        };
        if !shown_assignment && run.nodes.iter().any(|n| n.segment.is_some()) {
            shown_assignment = true;
            progress.finish();
            eprint!("{}", render_assignment(&run));
        }
        if !shown_start && let Some(start) = start_line(&run) {
            shown_start = true;
            progress.finish();
            eprintln!("started: {start}");
        }
        if ended(&run.phase) {
            progress.finish();
            return Ok(());
        }
        if live && run.phase == "running" && Instant::now() >= next_progress {
            next_progress = Instant::now() + PROGRESS_EVERY;
            if let Some(view) = poller.get::<LiveView>(&live_path).await? {
                progress.show(&view);
            }
        }
    }
}

/// `fusi-node run` on a mesh: submits the run to the node of `client`,
/// follows it, and prints its merged summary.
pub(super) async fn run_on(
    client: ApiClient,
    args: &RunArgs,
    spec: RunSpec,
    module: Vec<u8>,
    data: Vec<Vec<u8>>,
) -> anyhow::Result<ExitCode> {
    let request = SubmitRequest {
        spec,
        module,
        data: data.into_iter().map(serde_bytes::ByteBuf::from).collect(),
        weights: args.region.clone().map(|w| w.0),
        nodes: args.nodes,
    };
    let submitted: SubmitView = client.post_cbor("/v1/runs", &request).await?;
    let id = submitted.run_id;
    eprintln!("run {id} submitted to {}", client.api());
    let interrupt = cancel_on_ctrl_c(format!(
        "interrupted: stopping run {id} on every node and printing what was measured \
         (Ctrl-C again quits at once)"
    ));
    let mut poller = Poller {
        client: client.clone(),
        id: id.clone(),
        failing_since: None,
    };
    let live = !args.quiet && std::io::stderr().is_terminal();
    follow(&mut poller, live, &interrupt).await?;
    let run: RunView = poller.get_until(&format!("/v1/runs/{id}")).await?;
    let report = final_report(&client, &id).await?;
    print!("{}", render_header(&run));
    print!("{}", summary::render_report(&report));
    write_outs(&args.out, &report)?;
    let reason = run.reason.as_deref().unwrap_or("no reason given");
    if interrupt.is_cancelled() {
        return Ok(ExitCode::from(130));
    }
    if let Some(code) = exit_for_verdict(&report) {
        return Ok(code);
    }
    Ok(match run.phase.as_str() {
        "complete" => ExitCode::SUCCESS,
        "stopped" => {
            eprintln!("error: run {id} was stopped before it completed: {reason}");
            ExitCode::FAILURE
        }
        _ => {
            eprintln!("error: run {id} failed: {reason}");
            ExitCode::FAILURE
        }
    })
}

/// The data directory whose kept local runs `runs` and `report` read.
fn local_dir(api: &ApiArgs) -> anyhow::Result<PathBuf> {
    match &api.data_dir {
        Some(dir) => Ok(dir.clone()),
        None => mesh::default_data_dir(),
    }
}

/// The local run `id` kept in the data dir of `api`, if there is one
/// (and a data dir at all).
fn kept_run(api: &ApiArgs, id: &str) -> anyhow::Result<Option<LocalRun>> {
    let Ok(dir) = local_dir(api) else {
        return Ok(None);
    };
    Ok(crate::store::runs::RunStore::local(&dir).read_record::<LocalRun>(id)?)
}

/// A kept local run as `fusi-node runs` shows a run: a mesh of one, whose
/// only node, `local`, led it and ran the whole load.
fn local_view(run: &LocalRun, now_unix_ms: u64) -> RunView {
    let reason = match (run.outcome.as_str(), &run.aborted_by) {
        (_, Some(threshold)) => Some(format!("threshold `{threshold}` failed (abortOnFail)")),
        ("stopped", None) => Some("interrupted (Ctrl-C)".to_owned()),
        _ => None,
    };
    let state = match run.outcome.as_str() {
        "running" => "started",
        "stopped" => "interrupted",
        _ => "done",
    };
    let spec = &run.spec;
    RunView {
        id: run.id.clone(),
        phase: run.outcome.clone(),
        reason,
        executor: spec.executor_name(),
        module_sha256: spec.module_sha256.clone(),
        scenario: spec.scenario.clone(),
        proposer: LOCAL_NODE.to_owned(),
        leader: Some(LOCAL_NODE.to_owned()),
        term: 0,
        weights: None,
        t0_unix_ms: Some(run.started_unix_ms as f64),
        elapsed_s: Some(now_unix_ms.saturating_sub(run.started_unix_ms) as f64 / 1000.0),
        duration_s: spec.duration().as_secs_f64(),
        start_skew_ms: None,
        clock_bound_ms: None,
        storage_error: None,
        nodes: vec![RunNodeView {
            id: LOCAL_NODE.to_owned(),
            name: LOCAL_NODE.to_owned(),
            region: LOCAL_NODE.to_owned(),
            segment: Some((0.0, 1.0)),
            vus: u64::from(spec.max_vus()),
            state: state.to_owned(),
            refused: None,
            start_offset_ms: None,
            bound_ms: None,
            shards: None,
        }],
    }
}

/// Prints `view` as JSON or rendered.
fn show_view<T: serde::Serialize>(
    json: bool,
    view: &T,
    render: fn(&T) -> String,
) -> anyhow::Result<ExitCode> {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(view).context("encoding")?
        );
    } else {
        print!("{}", render(view));
    }
    Ok(ExitCode::SUCCESS)
}

/// `fusi-node runs [RUN]`.
pub async fn runs(args: RunsArgs) -> anyhow::Result<ExitCode> {
    if let Some(id) = &args.run {
        if let Some(run) = kept_run(&args.api, id)? {
            return show_view(
                args.api.json,
                &local_view(&run, local::unix_ms()),
                render_run,
            );
        }
        if args.local {
            bail!(
                "no run {id} is kept on this machine, in {}: `fusi-node runs --local` lists the runs \
                 that are",
                crate::store::runs::RunStore::local(&local_dir(&args.api)?)
                    .dir()
                    .display()
            );
        }
        return mesh::show::<RunView>(args.api, &format!("/v1/runs/{id}"), render_run).await;
    }
    if !args.local && crate::api::client::probe(args.api.api).await {
        return mesh::show::<RunsView>(args.api, "/v1/runs", render_runs).await;
    }
    let dir = local_dir(&args.api)?;
    if !args.local {
        eprintln!(
            "no fusi-node answers at {}: the runs kept on this machine, in {}",
            args.api.api,
            crate::store::runs::RunStore::local(&dir).dir().display()
        );
    }
    let now = local::unix_ms();
    let view = RunsView {
        runs: local::kept_runs(&dir)
            .iter()
            .map(|run| local_view(run, now))
            .collect(),
    };
    show_view(args.api.json, &view, render_runs)
}

/// `fusi-node stop RUN`.
pub async fn stop(args: StopArgs) -> anyhow::Result<ExitCode> {
    let run: RunView = args
        .api
        .client()
        .post(&format!("/v1/runs/{}/stop", args.run))
        .await?;
    if args.api.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&run).context("encoding")?
        );
    } else {
        println!("stopping {} on every node", run.id);
    }
    Ok(ExitCode::SUCCESS)
}

/// How long a finished run's report may wait for shards still on their way
/// before a delivered-load verdict is taken on it.
const SHARDS_SETTLE: Duration = Duration::from_secs(15);

/// The report of a run that has ended, once the node holds the shards of
/// every node not lost (or after [`SHARDS_SETTLE`]): a shard still in
/// flight must not make a whole run look short.
async fn final_report(client: &ApiClient, id: &str) -> anyhow::Result<RunReport> {
    let give_up = Instant::now() + SHARDS_SETTLE;
    loop {
        let report = fetch_report(client, id).await?;
        if report.completeness.nodes_incomplete.is_empty() || Instant::now() >= give_up {
            return Ok(report);
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// A run's report from the node of `client`.
async fn fetch_report(client: &ApiClient, id: &str) -> anyhow::Result<RunReport> {
    let bytes = client.get_raw(&format!("/v1/runs/{id}/report")).await?;
    serde_json::from_slice(&bytes).with_context(|| {
        format!(
            "the node at {} sent a report this CLI does not understand; is it the same version?",
            client.api()
        )
    })
}

/// Where `fusi-node report` reads a run.
enum ReportSource {
    /// A run kept on this machine, its report built again.
    Kept(Box<RunReport>),
    /// A node that knows the run.
    Node(ApiClient),
}

impl ReportSource {
    /// The kept run `id` if there is one, else the node at `--api`;
    /// `local` asks no node.
    async fn find(api: &ApiArgs, id: &str, local: bool) -> anyhow::Result<ReportSource> {
        let dir = local_dir(api);
        if let Ok(dir) = &dir
            && let Some(report) = local::report_again(dir, id)?
        {
            return Ok(ReportSource::Kept(Box::new(report)));
        }
        let kept_in = match &dir {
            Ok(dir) => crate::store::runs::RunStore::local(dir)
                .dir()
                .display()
                .to_string(),
            Err(e) => format!("no data directory: {e:#}"),
        };
        if local {
            bail!(
                "no run {id} is kept on this machine ({kept_in}): `fusi-node runs --local` lists \
                 the runs that are"
            );
        }
        if !crate::api::client::probe(api.api).await {
            bail!(
                "no fusi-node answers at {}, and no run {id} is kept on this machine ({kept_in}): \
                 start the node that ran it (`fusi-node up`), point --api at one, or list the runs \
                 kept here with `fusi-node runs --local`",
                api.api
            );
        }
        Ok(ReportSource::Node(api.client()))
    }

    /// The report of run `id` in `format`. A node's JSON is its bytes as
    /// they are (the same on every node holding the same shards); a kept
    /// run's is the bytes its run wrote.
    async fn render(&self, id: &str, format: ReportFormat) -> anyhow::Result<Vec<u8>> {
        let client = match self {
            ReportSource::Kept(report) => return Ok(format.render(report)),
            ReportSource::Node(client) => client,
        };
        Ok(match format {
            ReportFormat::Json => client
                .get_raw(&format!("/v1/runs/{id}/report"))
                .await?
                .to_vec(),
            ReportFormat::Text => {
                let run: RunView = client.get(&format!("/v1/runs/{id}")).await?;
                let report = fetch_report(client, id).await?;
                let mut text = render_header(&run);
                text.push_str(&summary::render_report(&report));
                text.into_bytes()
            }
            ReportFormat::Html | ReportFormat::Csv | ReportFormat::Junit => {
                format.render(&fetch_report(client, id).await?)
            }
        })
    }
}

/// `fusi-node report RUN`.
pub async fn report(args: ReportArgs) -> anyhow::Result<ExitCode> {
    super::check_outs(&args.out)?;
    let format = |out: Option<&Path>| {
        args.format
            .or(args.api.json.then_some(ReportFormat::Json))
            .or(out.and_then(ReportFormat::of_path))
            .unwrap_or(ReportFormat::Text)
    };
    let source = ReportSource::find(&args.api, &args.run, args.local).await?;
    if let ReportSource::Node(client) = &source {
        // A node gets the others' shards of a run once it has ended (they
        // go to the run's leader while it runs): a report of a finished
        // run waits until the node holds them, as `run` does.
        let path = format!("/v1/runs/{}", args.run);
        let mut run: RunView = client.get(&path).await?;
        // A node may hear that a run past its end is over a little after
        // the node it was submitted to (the finish comes from the leader,
        // perhaps a region away): wait for it, as for the shards.
        let give_up = Instant::now() + SHARDS_SETTLE;
        while run.phase == "running"
            && run.elapsed_s.is_some_and(|e| e >= run.duration_s)
            && Instant::now() < give_up
        {
            tokio::time::sleep(POLL_EVERY).await;
            run = client.get(&path).await?;
        }
        if matches!(run.phase.as_str(), "complete" | "stopped" | "failed") {
            final_report(client, &args.run).await?;
        }
    }
    if args.out.is_empty() {
        let bytes = source.render(&args.run, format(None)).await?;
        std::io::stdout()
            .write_all(&bytes)
            .context("cannot write the report to stdout")?;
    }
    for out in &args.out {
        let bytes = source.render(&args.run, format(Some(out))).await?;
        std::fs::write(out, &bytes).with_context(|| {
            format!(
                "cannot write the report to {}: check that its directory exists and is writable",
                out.display()
            )
        })?;
    }
    Ok(ExitCode::SUCCESS)
}

/// A run's report for `compare`: a report JSON file when `which` names
/// one, else the run of that id, kept here or on the node at `--api`.
async fn report_of(api: &ApiArgs, which: &str) -> anyhow::Result<RunReport> {
    let path = Path::new(which);
    if path.is_file() {
        let bytes = std::fs::read(path)
            .with_context(|| format!("cannot read the report {}", path.display()))?;
        return serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "{} is not a fusi report: give a file that `--out x.json` or `fusi-node report RUN --format json` wrote, or a run id",
                path.display()
            )
        });
    }
    if !valid_run_id(which) {
        bail!(
            "{which:?} is neither a report file nor a run id: give a report JSON file, or a run id as `fusi-node runs` lists them"
        );
    }
    match ReportSource::find(api, which, false).await? {
        ReportSource::Kept(report) => Ok(*report),
        ReportSource::Node(client) => final_report(&client, which).await,
    }
}

/// `fusi-node compare A B`.
pub async fn compare(args: CompareArgs) -> anyhow::Result<ExitCode> {
    super::check_outs(&args.out)?;
    let a = report_of(&args.api, &args.a).await.context("run A")?;
    let b = report_of(&args.api, &args.b).await.context("run B")?;
    let comparison = crate::compare::compare(&a, &b, args.fail_if_slower);
    let render = |format: CompareFormat| match format {
        CompareFormat::Text => crate::compare::render_text(&comparison).into_bytes(),
        CompareFormat::Json => crate::compare::render_json(&comparison),
        CompareFormat::Html => crate::compare::render_html(&comparison, &a, &b).into_bytes(),
    };
    let format_of = |out: Option<&Path>| {
        args.format
            .or(args.api.json.then_some(CompareFormat::Json))
            .or(out.and_then(|p| match ReportFormat::of_path(p) {
                Some(ReportFormat::Html) => Some(CompareFormat::Html),
                Some(ReportFormat::Json) => Some(CompareFormat::Json),
                _ => None,
            }))
            .unwrap_or(CompareFormat::Text)
    };
    if args.out.is_empty() {
        let _ = std::io::stdout().write_all(&render(format_of(None)));
    }
    for out in &args.out {
        std::fs::write(out, render(format_of(Some(out)))).with_context(|| {
            format!(
                "cannot write the comparison to {}: check that its directory exists and is writable",
                out.display()
            )
        })?;
    }
    if comparison.failed {
        eprintln!("error: {}", comparison.verdict);
        return Ok(ExitCode::from(super::THRESHOLDS_FAILED));
    }
    Ok(ExitCode::SUCCESS)
}

/// `fusi-node watch RUN`.
pub async fn watch(args: WatchArgs) -> anyhow::Result<ExitCode> {
    let client = args.api.client();
    let mut poller = Poller {
        client: client.clone(),
        id: args.run.clone(),
        failing_since: None,
    };
    let _: RunView = client.get(&format!("/v1/runs/{}", args.run)).await?;
    // Ctrl-C ends the watch (the default signal action), not the run.
    let never = CancellationToken::new();
    follow(&mut poller, true, &never).await?;
    let run: RunView = poller.get_until(&format!("/v1/runs/{}", args.run)).await?;
    let report = final_report(&client, &args.run).await?;
    print!("{}", render_header(&run));
    print!("{}", summary::render_report(&report));
    if let Some(code) = exit_for_verdict(&report) {
        return Ok(code);
    }
    Ok(if run.phase == "complete" {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, region: &str, state: &str, segment: Option<(f64, f64)>) -> RunNodeView {
        RunNodeView {
            id: format!("12D3KooW{name}xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"),
            name: name.into(),
            region: region.into(),
            segment,
            vus: segment
                .map(|(a, b)| ((b - a) * 100.0).round() as u64)
                .unwrap_or(0),
            state: state.into(),
            refused: None,
            start_offset_ms: None,
            bound_ms: None,
            shards: None,
        }
    }

    fn run() -> RunView {
        let mut fra = node("fra-1", "fra", "done", Some((0.0, 0.6)));
        fra.start_offset_ms = Some(0.4);
        fra.bound_ms = Some(0.15);
        let mut nrt = node("nrt-1", "nrt", "lost", Some((0.6, 1.0)));
        nrt.start_offset_ms = Some(-1.25);
        let mut ewr = node("", "ewr", "refused", None);
        ewr.refused = Some("its --allow-target list does not name 10.0.0.7:80".into());
        RunView {
            id: "r18c2f0a9".into(),
            phase: "complete".into(),
            reason: None,
            executor: "constant-vus".into(),
            module_sha256: "ab".repeat(32),
            scenario: "hello.wasm".into(),
            proposer: fra.id.clone(),
            leader: Some(fra.id.clone()),
            term: 0,
            weights: Some("fra=60,nrt=40".into()),
            t0_unix_ms: Some(1.7e12),
            elapsed_s: Some(95.0),
            duration_s: 60.0,
            start_skew_ms: Some(1.65),
            clock_bound_ms: Some(0.15),
            storage_error: None,
            nodes: vec![fra, nrt, ewr],
        }
    }

    /// Where `text` starts in `line`, in characters (ids hold a '…').
    fn column(line: &str, text: &str) -> Option<usize> {
        line.find(text).map(|at| line[..at].chars().count())
    }

    #[test]
    fn the_runs_table_lines_up() {
        let mut running = run();
        running.id = "r2".into();
        running.phase = "running".into();
        running.elapsed_s = Some(12.34);
        running.leader = Some("12D3KooWsomeoneelsewhoisnotinthisrun".into());
        let mut armed = run();
        armed.id = "r3".into();
        armed.phase = "armed".into();
        armed.elapsed_s = Some(-2.0);
        let table = render_runs(&RunsView {
            runs: vec![armed, running, run()],
        });
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(lines[0].starts_with("RUN"), "{table}");
        assert!(lines[1].ends_with("starts in 2.0s"), "{table}");
        assert!(lines[2].contains("12D3KooW…hisrun"), "{table}");
        assert!(lines[2].ends_with("12.3s of 1m00s"), "{table}");
        assert!(
            lines[3].contains("fra-1") && lines[3].ends_with("1m35s ago"),
            "{table}"
        );
        assert_eq!(column(lines[0], "PHASE"), column(lines[3], "complete"));
        assert_eq!(column(lines[0], "AGE"), column(lines[2], "12.3s"));
        assert!(render_runs(&RunsView { runs: vec![] }).contains("no runs yet"));
    }

    #[test]
    fn one_run_shows_its_nodes() {
        let text = render_run(&run());
        assert!(text.contains("leader       fra-1 (term 0)"), "{text}");
        assert!(
            text.contains("skew 1.65 ms (clock bound ±0.15 ms)"),
            "{text}"
        );
        let nodes: Vec<&str> = text
            .lines()
            .skip_while(|l| !l.starts_with("NODE"))
            .collect();
        assert_eq!(nodes.len(), 4, "{text}");
        assert!(
            nodes[1].contains("60.0%") && nodes[1].contains("+0.40 ± 0.15 ms"),
            "{text}"
        );
        assert!(nodes[2].contains("-1.25 ms"), "{text}");
        assert!(nodes[3].starts_with("12D3KooW…xxxxxx"), "{text}");
        assert!(nodes[3].ends_with("does not name 10.0.0.7:80"), "{text}");
        assert_eq!(column(nodes[0], "STATE"), column(nodes[3], "refused"));
    }

    #[test]
    fn the_assignment_and_the_header_name_every_node() {
        let assignment = render_assignment(&run());
        assert_eq!(assignment.lines().count(), 3, "{assignment}");
        assert!(
            assignment.contains("nrt-1  nrt     40.0%  40"),
            "{assignment}"
        );
        let mut failed = run();
        failed.phase = "failed".into();
        failed.reason = Some("every node refused".into());
        let header = render_header(&failed);
        assert!(
            header.contains("run r18c2f0a9: failed (every node refused)"),
            "{header}"
        );
        assert!(
            header.contains("nodes: 2 took part: fra-1 (fra), nrt-1 (nrt)"),
            "{header}"
        );
        assert!(
            header.contains("lost (stopped answering): nrt-1 (nrt)"),
            "{header}"
        );
        assert!(
            header.contains("refused: 12D3KooW…xxxxxx (ewr): its --allow-target"),
            "{header}"
        );
        assert!(
            header.contains("start: skew 1.65 ms (clock bound ±0.15 ms)"),
            "{header}"
        );
    }

    #[test]
    fn a_node_that_cannot_store_the_run_says_so_in_its_status() {
        let mut full = run();
        assert!(!render_run(&full).contains("storage"));
        full.storage_error = Some(
            "fra-1 cannot store this run in its data dir: cannot write the shard \
             /data/runs/r1/shards/n.0.cbor: No space left on device (os error 28)"
                .into(),
        );
        let text = render_run(&full);
        assert!(
            text.lines()
                .any(|l| l.starts_with("storage") && l.contains("No space left on device")),
            "{text}"
        );
        let header = render_header(&full);
        assert!(
            header.contains("  storage: fra-1 cannot store this run"),
            "{header}"
        );
    }

    #[test]
    fn a_kept_local_run_is_listed_as_a_mesh_of_one() {
        use crate::core::spec::Executor;
        let mut kept = LocalRun {
            id: "r18f0".into(),
            spec: RunSpec::new(
                "ab".repeat(32),
                Executor::ConstantVus {
                    vus: 7,
                    duration: Duration::from_secs(30),
                },
            ),
            outcome: "complete".into(),
            aborted_by: None,
            started_unix_ms: 1_000_000,
            ended_unix_ms: Some(1_030_000),
        };
        let view = local_view(&kept, 1_095_000);
        let table = render_runs(&RunsView {
            runs: vec![view.clone()],
        });
        let row = table.lines().nth(1).unwrap_or_default();
        for cell in ["r18f0", "complete", "constant-vus", "local", "1m35s ago"] {
            assert!(row.contains(cell), "{cell}: {table}");
        }
        let text = render_run(&view);
        assert!(text.contains("leader       local (term 0)"), "{text}");
        assert!(
            text.lines()
                .any(|l| l.starts_with("local") && l.contains("done") && l.contains("100.0%  7")),
            "{text}"
        );
        kept.outcome = "stopped".into();
        kept.aborted_by = Some("checks: rate>0.99".into());
        let text = render_run(&local_view(&kept, 1_095_000));
        assert!(
            text.contains("stopped (threshold `checks: rate>0.99` failed (abortOnFail))"),
            "{text}"
        );
        assert!(text.contains("interrupted"), "{text}");
    }

    #[test]
    fn run_ids_are_checked_before_a_node_is_asked() {
        assert!(run_id_arg("r18c2f0a9").is_ok());
        assert!(run_id_arg("../status").is_err());
        assert!(run_id_arg("").is_err());
    }

    /// Serves the API on a free loopback port for an event loop that has
    /// one run, `running` until it is stopped; the receiver hears of the stop.
    async fn node_with_a_running_run() -> (ApiClient, tokio::sync::oneshot::Receiver<()>) {
        use crate::api::client::TokenSource;
        use crate::api::token::ApiToken;
        use crate::api::{Query, server};
        let listener = server::bind(([127, 0, 0, 1], 0).into())
            .await
            .expect("a loopback port");
        let addr = listener.local_addr().expect("its address");
        let (queries, mut rx) = tokio::sync::mpsc::channel(8);
        let token = ApiToken::generate();
        let client = ApiClient::new(
            addr,
            TokenSource {
                env: Some(token.to_hex()),
                data_dir: None,
            },
        );
        tokio::spawn(server::serve(
            listener,
            queries,
            token,
            CancellationToken::new(),
        ));
        let (stopped, heard) = tokio::sync::oneshot::channel();
        let mut stopped = Some(stopped);
        tokio::spawn(async move {
            let mut view = run();
            view.phase = "running".into();
            view.start_skew_ms = None;
            while let Some(query) = rx.recv().await {
                match query {
                    Query::Run(_, reply) => drop(reply.send(Some(view.clone()))),
                    Query::Stop(_, reply) => {
                        if let Some(stopped) = stopped.take() {
                            let _ = stopped.send(());
                        }
                        view.phase = "stopped".into();
                        view.reason = Some("stopped by the CLI".into());
                        drop(reply.send(Ok(view.clone())));
                    }
                    _ => {}
                }
            }
        });
        (client, heard)
    }

    #[tokio::test]
    async fn an_interrupted_run_is_stopped_on_the_node_and_followed_to_its_end() {
        let (client, stopped) = node_with_a_running_run().await;
        let mut poller = Poller {
            client,
            id: "r18c2f0a9".into(),
            failing_since: None,
        };
        let interrupt = CancellationToken::new();
        interrupt.cancel();
        tokio::time::timeout(
            Duration::from_secs(10),
            follow(&mut poller, true, &interrupt),
        )
        .await
        .expect("the run ends")
        .unwrap_or_else(|e| panic!("{e:#}"));
        let run: RunView = poller
            .get_until("/v1/runs/r18c2f0a9")
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(run.phase, "stopped");
        assert!(stopped.await.is_ok(), "the node was asked to stop the run");
    }
}
