//! The end-of-test summary and the live progress line, as text.
//!
//! The layout follows k6's end-of-test summary, because that is what users
//! read fluently: one metric per line, dotted leaders, percentiles inline.

use std::fmt::Write as _;

use std::collections::BTreeMap;

use fusi_sdk::abi::MetricKind;

use crate::core::metrics::names;
use crate::core::printable::escape_controls;
use crate::core::report::{CPU_BUSY, MetricSummary, NodeCpu, Percentiles, Summary};
use crate::core::run_report::{LoadUnit, RunReport};
use crate::core::threshold::{
    Aggregation, LimitUnit, Threshold, ThresholdResult, builtin_kind, closest,
};

/// A duration in milliseconds, with a unit that keeps 3-4 digits.
pub fn fmt_ms(ms: f64) -> String {
    if ms < 1.0 {
        format!("{:.0}µs", ms * 1000.0)
    } else if ms < 1000.0 {
        format!("{ms:.2}ms")
    } else {
        format!("{:.2}s", ms / 1000.0)
    }
}

/// A byte count with a binary unit.
pub fn fmt_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

fn latency(p: &Percentiles) -> String {
    if p.count == 0 {
        return "no samples".into();
    }
    format!(
        "min={} p50={} p90={} p95={} p99={} p99.9={} max={}",
        fmt_ms(p.min),
        fmt_ms(p.p50),
        fmt_ms(p.p90),
        fmt_ms(p.p95),
        fmt_ms(p.p99),
        fmt_ms(p.p999),
        fmt_ms(p.max)
    )
}

fn line(out: &mut String, indent: usize, label: &str, value: &str) {
    let width = 34usize.saturating_sub(indent);
    let dots = width.saturating_sub(label.chars().count() + 1);
    let _ = writeln!(out, "{:indent$}{label} {}: {value}", "", ".".repeat(dots));
}

fn counts(map: &std::collections::BTreeMap<String, u64>) -> String {
    map.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Renders a run's report: how complete it is, then the summary of the
/// whole run, then a line per region and per node when there are several.
pub fn render_report(r: &RunReport) -> String {
    let mut out = String::new();
    let c = &r.completeness;
    let _ = writeln!(out);
    let _ = write!(
        out,
        "  report: {} of {} shards from {} of {} nodes",
        c.shards_received, c.shards_announced, c.nodes_reporting, c.nodes_expected
    );
    if c.complete {
        let _ = writeln!(out, " (complete)");
    } else {
        let _ = writeln!(out, " (INCOMPLETE)");
    }
    if !c.nodes_lost.is_empty() {
        let _ = writeln!(out, "  lost: {}", c.nodes_lost.join(", "));
    }
    if !c.nodes_incomplete.is_empty() {
        let _ = writeln!(
            out,
            "  measurements still missing from: {}",
            c.nodes_incomplete.join(", ")
        );
    }
    render_load(&mut out, r);
    render_scenarios(&mut out, r);
    render_data(&mut out, r);
    out.push_str(&render(&r.summary, &r.scenario));
    if !r.thresholds.is_empty() {
        out.push_str(&render_thresholds(&r.thresholds, &r.summary.custom));
    }
    if r.regions.len() > 1 || r.nodes.len() > 1 {
        out.push_str(&render_parts(r));
    }
    out.push_str(&render_warnings(r));
    out
}

/// In a run with named scenarios, one line per scenario: its executor,
/// start and function, its load planned against delivered, and what its VUs
/// measured.
fn render_scenarios(out: &mut String, r: &RunReport) {
    if r.scenarios.is_empty() {
        return;
    }
    let _ = writeln!(out, "  scenarios:");
    for (name, sc) in &r.scenarios {
        let load = &sc.load;
        let start = if sc.start_s > 0.0 {
            format!(" from {:.1}s", sc.start_s)
        } else {
            String::new()
        };
        let short = if load.short { ": SHORT" } else { "" };
        let _ = writeln!(
            out,
            "    {name}: {}{start}, exec {}: {:.0} of {:.0} {} delivered ({:.1} %){short}",
            sc.executor,
            sc.exec,
            load.delivered,
            load.planned,
            unit_name(load.unit),
            load.ratio * 100.0
        );
        let s = &sc.summary;
        let mut parts = vec![format!(
            "{} iterations ({} failed, {} dropped)",
            s.iterations.completed,
            s.iterations.failed.values().sum::<u64>(),
            s.iterations.dropped
        )];
        if s.http.requests > 0 {
            parts.push(format!(
                "{} requests, {:.2}% failed, p95 {}",
                s.http.requests,
                s.http.failed_rate * 100.0,
                fmt_ms(s.http.duration.p95)
            ));
        }
        if let Some(ws) = &s.ws {
            parts.push(format!(
                "{} WebSocket sessions, {} messages sent, {} received",
                ws.sessions, ws.msgs_sent, ws.msgs_received
            ));
        }
        let (passed, failed) = s
            .checks
            .iter()
            .fold((0, 0), |(p, f), c| (p + c.passes, f + c.fails));
        if passed + failed > 0 {
            parts.push(format!("checks {passed} ✓ {failed} ✗"));
        }
        let _ = writeln!(out, "      {}", parts.join("; "));
    }
}

fn unit_name(unit: LoadUnit) -> &'static str {
    match unit {
        LoadUnit::Iterations => "iterations",
        LoadUnit::VuSeconds => "VU-seconds",
    }
}

/// One line per data set: how many rows the draws used, and whether they
/// ran out.
fn render_data(out: &mut String, r: &RunReport) {
    for d in &r.data {
        let _ = write!(
            out,
            "  test data: {} ({}, {}, {} rows): {} drawn",
            d.name,
            d.format,
            match d.mode {
                crate::core::data::DataMode::Shared => "shared",
                crate::core::data::DataMode::Unique => "unique",
            },
            d.rows,
            d.used
        );
        if d.ran_out > 0 {
            let _ = write!(
                out,
                "; RAN OUT ({} {} no row left: those nodes started no more iterations)",
                d.ran_out,
                if d.ran_out == 1 {
                    "draw found"
                } else {
                    "draws found"
                }
            );
        }
        let _ = writeln!(out);
    }
}

/// Under a count of failures, what the first ones said, one line each:
/// `refused: GET http://...: cannot connect to ...`. The texts come from
/// every node, so control characters are written out, never sent to the
/// terminal.
fn render_first_failures(out: &mut String, s: &Summary, prefix: &str) {
    for (kind, texts) in &s.first_failures {
        let Some(kind) = kind.strip_prefix(prefix) else {
            continue;
        };
        for text in texts {
            let _ = writeln!(
                out,
                "      {}: {}",
                escape_controls(kind.chars()),
                escape_controls(text.chars())
            );
        }
    }
}

/// Plain warnings at the end of the summary, for what a run exiting 0 may
/// hide: most requests or iterations failed and no threshold gates on it
/// (the exit status stays k6's: 0 unless a threshold failed), or a
/// threshold counts a custom metric the scenario never recorded.
fn render_warnings(r: &RunReport) -> String {
    let mut out = String::new();
    let s = &r.summary;
    let gated = |metric: &str| r.thresholds.iter().any(|t| t.metric == metric);
    let h = &s.http;
    if h.requests > 0 && h.failed * 2 > h.requests && !gated(names::HTTP_REQ_FAILED) {
        let _ = writeln!(
            out,
            "\n  warning: {:.1} % of requests failed ({} of {}; errors: {}), and no threshold \
             gates on it, so the run still passes: add --threshold 'http_req_failed: rate<0.01' \
             to fail it",
            h.failed_rate * 100.0,
            h.failed,
            h.requests,
            counts(&s.errors)
        );
    }
    let failed: u64 = s.iterations.failed.values().sum();
    if failed > s.iterations.completed && !gated(names::ITERATIONS_FAILED) {
        let _ = writeln!(
            out,
            "\n  warning: {failed} of {} iterations failed ({}), and no threshold gates on it, so \
             the run still passes: add --threshold 'iterations_failed: count<1' to fail it",
            failed + s.iterations.completed,
            counts(&s.iterations.failed)
        );
    }
    for (name, cpu) in busy_nodes(r) {
        let _ = writeln!(
            out,
            "\n  warning: {name}'s CPUs were busy, {:.0} % or more of them in {} of {} \
             intervals ({:.0} % at most): what it measured then includes its own wait to read \
             the responses; spread the load over more nodes (or fewer VUs a node) for the \
             target's own latency",
            CPU_BUSY * 100.0,
            cpu.busy,
            cpu.intervals,
            cpu.max * 100.0
        );
    }
    let mut unrecorded: Vec<&str> = r
        .thresholds
        .iter()
        .map(|t| t.metric.as_str())
        .filter(|m| builtin_kind(m).is_none() && !s.custom.contains_key(*m))
        .collect();
    unrecorded.sort_unstable();
    unrecorded.dedup();
    for metric in unrecorded {
        let near = closest(metric, s.custom.keys().map(String::as_str))
            .map(|n| format!(": did you mean `{n}`?"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "\n  warning: a threshold names `{metric}`, a metric the scenario never recorded{near}"
        );
    }
    out
}

/// A threshold's observed value, in the unit of its metric: a duration
/// for the built-in time trends (or a limit written as one), a percentage
/// for a rate, per second for a counter's rate.
pub fn observed_text(
    t: &ThresholdResult,
    v: f64,
    custom: &BTreeMap<String, MetricSummary>,
) -> String {
    let Ok(parsed) = Threshold::parse(&t.threshold) else {
        return format!("{v}");
    };
    if t.metric == names::NODE_CPU {
        return format!("{:.1}%", v * 100.0);
    }
    let kind = builtin_kind(&t.metric).or_else(|| {
        custom.get(&t.metric).map(|m| match m {
            MetricSummary::Counter { .. } => MetricKind::Counter,
            MetricSummary::Trend(_) => MetricKind::Trend,
            MetricSummary::Rate { .. } => MetricKind::Rate,
            MetricSummary::Gauge { .. } => MetricKind::Gauge,
        })
    });
    let builtin = builtin_kind(&t.metric).is_some();
    match (parsed.agg, kind) {
        (Aggregation::Rate, Some(MetricKind::Rate)) => format!("{:.2}%", v * 100.0),
        (Aggregation::Rate, Some(MetricKind::Counter)) => format!("{v:.2}/s"),
        (Aggregation::Count, _) => format!("{v}"),
        (agg, Some(MetricKind::Trend))
            if agg.fits(MetricKind::Trend) && (builtin || parsed.unit == LimitUnit::Millis) =>
        {
            fmt_ms(v)
        }
        _ => format!("{v}"),
    }
}

/// Why a run of one arrival-rate scenario dropped arrivals, when it
/// dropped any: every VU it may run was busy, with a node's CPUs busy too
/// (more nodes); or without (a slow target wants more `--max-vus`, a node
/// busy in bursts shorter than an interval more nodes: a node at 60,000
/// arrivals a second on one core dropped 3 % of them with its CPU at 81 %
/// a second, and as many with five times the VUs, so both are named); or
/// fewer were in use, and the nodes did not start more VUs or the
/// iterations in time (an arrival waits up to 1 ms for a VU), which is
/// their CPU at its limit. `None` for a closed model and for a run of
/// several scenarios, whose summaries do not count VUs apart.
pub fn dropped_why(r: &RunReport) -> Option<String> {
    let max = r.load.max_vus?;
    if r.load.scenario.is_some() || r.summary.iterations.dropped == 0 {
        return None;
    }
    let (dropped, used) = (r.summary.iterations.dropped, r.summary.vus_max);
    let busy: Vec<String> = busy_nodes(r).map(|(name, _)| name).collect();
    Some(if used >= max && !busy.is_empty() {
        format!(
            "{dropped} arrivals dropped: every VU was busy ({used} in use, --max-vus {max}), \
             and so were the CPUs of {}: more VUs would only wait longer for them; spread the \
             rate over more nodes",
            busy.join(", ")
        )
    } else if used >= max {
        format!(
            "{dropped} arrivals dropped: every VU was busy ({used} in use, --max-vus {max}); \
             raise --max-vus if the target was slow (a VU has one iteration at a time: the \
             rate times an iteration's duration is the VUs it needs), or spread the rate over \
             more nodes if their CPU was busy (more VUs then only wait longer)"
        )
    } else {
        format!(
            "{dropped} arrivals dropped with at most {used} of --max-vus {max} VUs in use: \
             the nodes did not start VUs or iterations in time, so their CPU is the likely \
             limit; lower the rate a node (more nodes), or start more VUs with --vus"
        )
    })
}

/// The nodes whose CPUs were busy in some interval ([`CPU_BUSY`] or more
/// of what they may use), by name, with how busy.
fn busy_nodes(r: &RunReport) -> impl Iterator<Item = (String, NodeCpu)> + '_ {
    r.nodes.iter().filter_map(|n| {
        let cpu = n.cpu.filter(|c| c.busy > 0)?;
        let name = if n.name.is_empty() { &n.id } else { &n.name };
        Some((name.clone(), cpu))
    })
}

/// Planned against delivered load, when the report knows the plan; when
/// the run fell short, one line per node that delivered less than its share.
fn render_load(out: &mut String, r: &RunReport) {
    let load = &r.load;
    if load.planned <= 0.0 && load.delivered <= 0.0 {
        return;
    }
    let unit = unit_name(load.unit);
    let verdict = if load.short {
        format!(": SHORT (--min-delivered {:.1} %)", load.min_ratio * 100.0)
    } else {
        String::new()
    };
    match &load.scenario {
        Some(name) => {
            let _ = writeln!(
                out,
                "  load: {:.1} % delivered by the scenario with the least of {}: {name}, {:.0} of {:.0} {unit}{verdict}",
                load.ratio * 100.0,
                r.scenarios.len(),
                load.delivered,
                load.planned,
            );
        }
        None => {
            let _ = writeln!(
                out,
                "  load: {:.0} of {:.0} {unit} delivered ({:.1} %){verdict}",
                load.delivered,
                load.planned,
                load.ratio * 100.0
            );
        }
    }
    if let Some(why) = dropped_why(r) {
        let _ = writeln!(out, "    {why}");
    }
    let name_of = |id: &str| {
        r.nodes
            .iter()
            .find(|n| n.id == id && !n.name.is_empty())
            .map_or_else(|| id.to_owned(), |n| n.name.clone())
    };
    let mut froms: Vec<&str> = r.moves.iter().map(|m| m.from.as_str()).collect();
    froms.dedup();
    for from in froms {
        let parts: Vec<&crate::core::run_report::Move> =
            r.moves.iter().filter(|m| m.from == from).collect();
        let total: f64 = parts.iter().map(|m| m.segment.fraction()).sum();
        let to: Vec<String> = parts
            .iter()
            .map(|m| {
                format!(
                    "{} ({:.0} %)",
                    name_of(&m.to),
                    100.0 * m.segment.fraction() / total.max(f64::MIN_POSITIVE)
                )
            })
            .collect();
        let since = parts.first().map_or(0, |m| m.since_ms);
        let _ = writeln!(
            out,
            "    {}'s share moved at {:.1} s to {}",
            name_of(from),
            since as f64 / 1000.0,
            to.join(", ")
        );
    }
    if load.short {
        for n in r
            .nodes
            .iter()
            .filter(|n| n.delivered < n.planned * load.min_ratio)
        {
            let name = if n.name.is_empty() { &n.id } else { &n.name };
            let _ = writeln!(
                out,
                "    {name}: {:.0} of {:.0} ({})",
                n.delivered, n.planned, n.state
            );
        }
    }
}

/// One line per threshold, k6 style: a mark, the threshold, what was seen.
fn render_thresholds(
    thresholds: &[ThresholdResult],
    custom: &BTreeMap<String, MetricSummary>,
) -> String {
    let mut out = String::new();
    let passed = thresholds.iter().filter(|t| t.pass).count();
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "  thresholds: {passed} of {} passed{}",
        thresholds.len(),
        if passed == thresholds.len() {
            ""
        } else {
            " (FAILED)"
        }
    );
    for t in thresholds {
        let mark = if t.pass { "✓" } else { "✗" };
        let seen = match (&t.problem, t.observed) {
            (Some(problem), _) => problem.clone(),
            (None, Some(v)) => format!("observed {}", observed_text(t, v, custom)),
            (None, None) => "no value".to_owned(),
        };
        let _ = writeln!(out, "    {mark} {}  ({seen})", t.threshold);
    }
    out
}

/// The per-region and per-node table.
fn render_parts(r: &RunReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "  {:<24} {:>10} {:>10} {:>9} {:>9} {:>9} {:>8} {:>5} {:>5}",
        "REGION / NODE", "REQS", "RPS", "P50", "P95", "P99", "FAILED", "VUS", "CPU"
    );
    // CPU: the most of the CPUs a node may use it used in one interval
    // (`node_cpu`), `!` where it was busy in some.
    let row = |out: &mut String, label: &str, s: &Summary, cpu: Option<NodeCpu>| {
        let h = &s.http;
        let cpu = cpu.map_or_else(String::new, |c| {
            let mark = if c.busy > 0 { "!" } else { "" };
            format!("{:.0}%{mark}", c.max * 100.0)
        });
        let _ = writeln!(
            out,
            "  {:<24} {:>10} {:>10.1} {:>9} {:>9} {:>9} {:>7.2}% {:>5} {:>5}",
            label,
            h.requests,
            h.rps,
            fmt_ms(h.duration.p50),
            fmt_ms(h.duration.p95),
            fmt_ms(h.duration.p99),
            h.failed_rate * 100.0,
            s.vus_max,
            cpu
        );
    };
    for (region, s) in &r.regions {
        row(&mut out, region, s, None);
        for n in r.nodes.iter().filter(|n| &n.region == region) {
            let name = if n.name.is_empty() { &n.id } else { &n.name };
            let label = if n.state == "complete" {
                format!("  {name}")
            } else {
                format!("  {name} ({})", n.state)
            };
            row(&mut out, &label, &n.summary, n.cpu);
        }
    }
    out
}

/// Renders the end-of-test summary.
pub fn render(s: &Summary, scenario: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "  scenario: {scenario}   executor: {}   run: {}   duration: {:.1}s",
        s.executor, s.run_id, s.duration_s
    );
    let _ = writeln!(out);
    let h = &s.http;
    line(
        &mut out,
        2,
        "http_reqs",
        &format!("{}  {:.1}/s", h.requests, h.rps),
    );
    line(
        &mut out,
        2,
        "http_req_failed",
        &format!(
            "{:.2}%  {} of {}",
            h.failed_rate * 100.0,
            h.failed,
            h.requests
        ),
    );
    line(&mut out, 2, "http_req_duration", &latency(&h.duration));
    if h.connections_paced > 0 {
        line(
            &mut out,
            2,
            "connections_paced",
            &format!(
                "{}  new connections waited for an opening slot (--max-connecting; the wait is in blocked)",
                h.connections_paced
            ),
        );
    }
    for (phase, p) in &h.phases {
        if p.count > 0 && p.max > 0.0 {
            line(&mut out, 4, phase, &latency(p));
        }
    }
    if !h.by_status.is_empty() {
        line(&mut out, 2, "status", &counts(&h.by_status));
    }
    line(
        &mut out,
        2,
        "errors",
        &if s.errors.is_empty() {
            "none".to_owned()
        } else {
            counts(&s.errors)
        },
    );
    render_first_failures(&mut out, s, "http:");
    line(
        &mut out,
        2,
        "data",
        &format!(
            "sent {}  received {}",
            fmt_bytes(h.data_sent),
            fmt_bytes(h.data_received)
        ),
    );
    if let Some(ws) = &s.ws {
        let secs = s.duration_s.max(1e-3);
        line(
            &mut out,
            2,
            "ws_sessions",
            &format!("{}  {:.1}/s", ws.sessions, ws.sessions as f64 / secs),
        );
        line(&mut out, 4, "ws_connecting", &latency(&ws.connecting));
        line(
            &mut out,
            4,
            "ws_session_duration",
            &latency(&ws.session_duration),
        );
        line(&mut out, 4, "ws_msgs_sent", &ws.msgs_sent.to_string());
        line(
            &mut out,
            4,
            "ws_msgs_received",
            &ws.msgs_received.to_string(),
        );
    }
    render_first_failures(&mut out, s, "ws:");
    let i = &s.iterations;
    line(
        &mut out,
        2,
        "iterations",
        &format!("{}  {:.1}/s", i.completed, i.rate),
    );
    line(&mut out, 2, "iteration_duration", &latency(&i.duration));
    if !i.failed.is_empty() {
        line(&mut out, 2, "iterations_failed", &counts(&i.failed));
    }
    render_first_failures(&mut out, s, "iteration:");
    line(&mut out, 2, "dropped_iterations", &i.dropped.to_string());
    line(&mut out, 2, "vus_max", &s.vus_max.to_string());
    if !s.checks.is_empty() {
        let passes: u64 = s.checks.iter().map(|c| c.passes).sum();
        let fails: u64 = s.checks.iter().map(|c| c.fails).sum();
        let pct = if passes + fails == 0 {
            0.0
        } else {
            passes as f64 * 100.0 / (passes + fails) as f64
        };
        line(
            &mut out,
            2,
            "checks",
            &format!("{pct:.2}%  ✓ {passes}  ✗ {fails}"),
        );
        for c in &s.checks {
            let mark = if c.fails == 0 { "✓" } else { "✗" };
            let _ = writeln!(
                out,
                "      {mark} {}  ({} passed, {} failed)",
                c.name, c.passes, c.fails
            );
        }
    }
    for g in &s.groups {
        line(
            &mut out,
            2,
            &format!("group {}", g.name),
            &latency(&g.duration),
        );
    }
    for (name, m) in &s.custom {
        let value = match m {
            crate::core::report::MetricSummary::Counter { total } => format!("{total}"),
            crate::core::report::MetricSummary::Trend(p) => format!(
                "min={:.3} p50={:.3} p95={:.3} p99={:.3} max={:.3} (n={})",
                p.min, p.p50, p.p95, p.p99, p.max, p.count
            ),
            crate::core::report::MetricSummary::Rate { passes, fails } => {
                let total = passes + fails;
                let pct = if total == 0 {
                    0.0
                } else {
                    *passes as f64 * 100.0 / total as f64
                };
                format!("{pct:.2}%  {passes} of {total}")
            }
            crate::core::report::MetricSummary::Gauge { min, max, last } => {
                format!("last={last} min={min} max={max}")
            }
        };
        line(&mut out, 2, name, &value);
    }
    out
}

/// One progress line: elapsed, VUs, requests/s and p95 of the last interval,
/// errors so far.
pub fn progress_line(
    elapsed_s: f64,
    vus: u64,
    rps: f64,
    p95_ms: f64,
    errors: u64,
    dropped: u64,
) -> String {
    let mut s = format!(
        "[{elapsed_s:>7.1}s] vus {vus:>5}  reqs/s {rps:>9.1}  p95 {:>9}  errors {errors}",
        fmt_ms(p95_ms)
    );
    if dropped > 0 {
        let _ = write!(s, "  dropped {dropped}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::run_report::RunMeta;

    /// A finished local run of `executor` with nothing else to it: each
    /// test sets what it is about.
    fn meta(executor: &str) -> RunMeta {
        RunMeta {
            data: Vec::new(),
            scenario: "x.wasm".into(),
            executor: executor.into(),
            outcome: "complete".into(),
            expected: Vec::new(),
            lost: Vec::new(),
            thresholds: Vec::new(),
            aborted_by: None,
            load: None,
            moves: Vec::new(),
        }
    }

    #[test]
    fn units_read_well() {
        assert_eq!(fmt_ms(0.25), "250µs");
        assert_eq!(fmt_ms(50.0), "50.00ms");
        assert_eq!(fmt_ms(1500.0), "1.50s");
        assert_eq!(fmt_bytes(10), "10 B");
        assert_eq!(fmt_bytes(2048), "2.0 KiB");
    }

    #[test]
    fn a_moved_share_is_said_with_where_each_part_went() {
        use crate::core::run_report::{LoadPlan, Move, RunReport};
        use crate::core::segment::ExecutionSegment;
        use crate::core::spec::{Executor, Rate, RunSpec};
        let half =
            |start| ExecutionSegment::new(start, start + 1, 6).unwrap_or_else(|e| panic!("{e}"));
        let moved = |to: &str, start| Move {
            from: "c".into(),
            to: to.into(),
            since_ms: 3500,
            segment: half(start),
            planned: 0.0,
        };
        let meta = RunMeta {
            lost: vec!["c".into()],
            load: Some(LoadPlan::of(&RunSpec::new(
                String::new(),
                Executor::ConstantArrivalRate {
                    rate: Rate {
                        iterations: 300.0,
                        per: std::time::Duration::from_secs(1),
                    },
                    duration: std::time::Duration::from_secs(10),
                    pre_allocated_vus: 10,
                    max_vus: 10,
                },
            ))),
            moves: vec![moved("a", 4), moved("b", 5)],
            ..meta("constant-arrival-rate")
        };
        let report = RunReport::build(&crate::core::report::Report::new("r"), &meta);
        let text = render_report(&report);
        assert!(
            text.contains("c's share moved at 3.5 s to a (50 %), b (50 %)"),
            "{text}"
        );
    }

    #[test]
    fn dropped_arrivals_say_whether_the_vus_or_the_nodes_were_the_limit() {
        use crate::core::run_report::{LoadPlan, RunReport};
        use crate::core::spec::{Executor, Rate, RunSpec};
        let arrivals = Executor::ConstantArrivalRate {
            rate: Rate {
                iterations: 300.0,
                per: std::time::Duration::from_secs(1),
            },
            duration: std::time::Duration::from_secs(10),
            pre_allocated_vus: 4,
            max_vus: 10,
        };
        let build = |executor: Executor| {
            let meta = RunMeta {
                load: Some(LoadPlan::of(&RunSpec::new(String::new(), executor))),
                ..meta("constant-arrival-rate")
            };
            RunReport::build(&crate::core::report::Report::new("r"), &meta)
        };
        let mut r = build(arrivals.clone());
        assert_eq!(r.load.max_vus, Some(10));
        assert_eq!(dropped_why(&r), None, "nothing dropped");
        r.summary.iterations.dropped = 120;
        r.summary.vus_max = 10;
        let text = render_report(&r);
        assert!(
            text.contains(
                "120 arrivals dropped: every VU was busy (10 in use, --max-vus 10); raise --max-vus"
            ),
            "{text}"
        );
        assert!(
            text.contains("or spread the rate over more nodes"),
            "{text}"
        );
        r.summary.vus_max = 4;
        let text = render_report(&r);
        assert!(
            text.contains("120 arrivals dropped with at most 4 of --max-vus 10 VUs in use"),
            "{text}"
        );
        assert!(text.contains("CPU is the likely limit"), "{text}");
        // A node whose CPUs were busy is named, in the why and a warning.
        r.summary.vus_max = 10;
        r.nodes.push(crate::core::run_report::NodeReport {
            id: "12D3KooWa".into(),
            name: "fra-1".into(),
            region: "fra".into(),
            state: "complete".into(),
            shards_received: 10,
            shards_announced: Some(10),
            planned: 0.0,
            delivered: 0.0,
            summary: r.summary.clone(),
            cpu: Some(NodeCpu {
                intervals: 10,
                busy: 7,
                max: 0.99,
            }),
        });
        let text = render_report(&r);
        assert!(
            text.contains("120 arrivals dropped: every VU was busy (10 in use, --max-vus 10), and so were the CPUs of fra-1: more VUs would only wait longer"),
            "{text}"
        );
        assert!(
            text.contains("warning: fra-1's CPUs were busy, 90 % or more of them in 7 of 10 intervals (99 % at most)"),
            "{text}"
        );
        // With two nodes, the table says how busy each one was at most.
        let mut calm = r.nodes[0].clone();
        calm.name = "fra-2".into();
        calm.cpu = Some(NodeCpu {
            intervals: 10,
            busy: 0,
            max: 0.42,
        });
        r.nodes.push(calm);
        r.regions.insert("fra".into(), r.summary.clone());
        let text = render_report(&r);
        let row = |name: &str| {
            text.lines()
                .find(|l| l.trim_start().starts_with(name))
                .unwrap_or_default()
                .to_owned()
        };
        assert!(row("REGION / NODE").ends_with("VUS   CPU"), "{text}");
        assert!(row("fra-1").ends_with(" 99%!"), "{text}");
        assert!(row("fra-2").ends_with("   42%"), "{text}");
        assert!(!text.contains("fra-2's CPUs"), "{text}");
        // A closed model drops nothing, and says nothing of it.
        let mut closed = build(Executor::ConstantVus {
            vus: 10,
            duration: std::time::Duration::from_secs(10),
        });
        closed.summary.iterations.dropped = 120;
        assert_eq!(closed.load.max_vus, None);
        assert_eq!(dropped_why(&closed), None);
    }

    #[test]
    fn an_empty_report_renders_and_says_it_is_incomplete_first() {
        use crate::core::run_report::RunReport;
        let meta = RunMeta {
            outcome: "running".into(),
            thresholds: vec!["http_reqs: count>0".into()],
            ..meta("constant-vus")
        };
        let report = RunReport::build(&crate::core::report::Report::new("r"), &meta);
        let text = render_report(&report);
        assert!(text.contains("http_reqs"));
        let incomplete = text.find("INCOMPLETE").unwrap_or(usize::MAX);
        assert!(incomplete < text.find("http_reqs").unwrap_or(0), "{text}");
        assert!(
            text.contains("thresholds: 0 of 1 passed (FAILED)"),
            "{text}"
        );
        assert!(text.contains("✗ http_reqs: count>0"), "{text}");
    }

    fn report_with(thresholds: &[&str]) -> RunReport {
        let meta = RunMeta {
            thresholds: thresholds.iter().map(|t| t.to_string()).collect(),
            ..meta("constant-vus")
        };
        RunReport::build(&crate::core::report::Report::new("r"), &meta)
    }

    fn result(threshold: &str, observed: f64) -> ThresholdResult {
        let parsed = Threshold::parse(threshold).expect("valid");
        ThresholdResult {
            threshold: threshold.into(),
            metric: parsed.metric,
            observed: Some(observed),
            pass: true,
            problem: None,
            abort_on_fail: false,
        }
    }

    #[test]
    fn observed_values_carry_their_unit() {
        let mut r = report_with(&[]);
        r.summary.custom.insert(
            "slow".into(),
            MetricSummary::Rate {
                passes: 1,
                fails: 1,
            },
        );
        r.thresholds = vec![
            result("http_req_duration: p(95)<200ms", 12.5),
            result("http_req_failed: rate<0.01", 0.05),
            result("http_reqs: rate>10", 123.456),
            result("http_reqs: count>10", 1234.0),
            result("slow: rate<0.1", 0.5),
            result("my_trend: avg<3", 2.5),
            result("node_cpu: max<0.9", 0.976),
        ];
        let text = render_report(&r);
        for line in [
            "http_req_duration: p(95)<200ms  (observed 12.50ms)",
            "http_req_failed: rate<0.01  (observed 5.00%)",
            "http_reqs: rate>10  (observed 123.46/s)",
            "http_reqs: count>10  (observed 1234)",
            "slow: rate<0.1  (observed 50.00%)",
            "my_trend: avg<3  (observed 2.5)",
            "node_cpu: max<0.9  (observed 97.6%)",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }

    #[test]
    fn most_requests_failing_ends_the_summary_with_a_warning_unless_a_threshold_gates_it() {
        let mut r = report_with(&[]);
        r.summary.http.requests = 10;
        r.summary.http.failed = 9;
        r.summary.http.failed_rate = 0.9;
        r.summary.errors.insert("refused".into(), 9);
        r.summary.iterations.completed = 1;
        r.summary.iterations.failed.insert("panic".into(), 2);
        let text = render_report(&r);
        let tail = text
            .trim_end()
            .lines()
            .rev()
            .take(3)
            .collect::<Vec<_>>()
            .join("\n");
        assert!(
            text.contains(
                "warning: 90.0 % of requests failed (9 of 10; errors: refused=9), and no threshold \
                 gates on it, so the run still passes: add --threshold 'http_req_failed: rate<0.01' \
                 to fail it"
            ),
            "{text}"
        );
        assert!(
            tail.contains("warning: 2 of 3 iterations failed (panic=2)"),
            "{tail}"
        );
        // A threshold on it gates already: no warning.
        r.thresholds = vec![result("http_req_failed: rate<0.5", 0.9)];
        r.summary.iterations.failed.clear();
        assert!(!render_report(&r).contains("warning"));
        // Half or fewer failing is no "most".
        r.thresholds.clear();
        r.summary.http.failed = 5;
        assert!(!render_report(&r).contains("warning"));
    }

    #[test]
    fn a_counted_custom_metric_never_recorded_is_named() {
        let mut r = report_with(&[]);
        r.summary.custom.insert(
            "items_created".into(),
            MetricSummary::Counter { total: 3.0 },
        );
        r.thresholds = vec![result("items_creatd: count<1", 0.0)];
        let text = render_report(&r);
        assert!(
            text.contains(
                "warning: a threshold names `items_creatd`, a metric the scenario never \
                 recorded: did you mean `items_created`?"
            ),
            "{text}"
        );
    }
}
