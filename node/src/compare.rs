//! Two runs compared: did B get slower than A, beyond noise?
//!
//! A few percentiles side by side tell how much a run moved, not whether
//! the move is more than the spread two runs of the same service show
//! anyway. So besides the deltas (per part: the whole run and each region
//! both runs have), `http_req_duration`'s whole distributions are compared
//! with a one-sided two-sample Kolmogorov-Smirnov test: `d_slower` is the
//! largest amount by which A's cumulative distribution lies above B's (B's
//! requests took longer), and B is slower beyond noise when it exceeds the
//! test's critical value at α = 0.01, `sqrt(ln(1/α) / 2 · (n + m) / (n·m))`.
//! The distributions are the reports' `duration_buckets` (two significant
//! digits), the same coarsening on both sides.
//!
//! On tens of thousands of requests the test finds a shift of a few
//! percent significant, which is what it should do, but not always what
//! should fail a build: `--fail-if-slower 5%` fails only when B is slower
//! beyond noise *and* its p95 is more than 5 % above A's.

use std::fmt::Write as _;

use serde::Serialize;

use crate::core::report::{Percentiles, Summary};
use crate::core::run_report::RunReport;
use crate::summary::fmt_ms;

/// The significance level of the distribution test.
pub const ALPHA: f64 = 0.01;

/// A comparison of run B against run A.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// Run A: the baseline.
    pub a: RunRef,
    /// Run B: the one judged.
    pub b: RunRef,
    /// The whole run (`run`), then, when a run has several regions, each
    /// region both runs have.
    pub parts: Vec<Part>,
    /// The `--fail-if-slower` limit, as a fraction of A's p95, if given.
    pub fail_if_slower: Option<f64>,
    /// Whether B failed `--fail-if-slower`.
    pub failed: bool,
    /// The verdict in one sentence.
    pub verdict: String,
}

/// Which run.
#[derive(Debug, Clone, Serialize)]
pub struct RunRef {
    /// Its id.
    pub run_id: String,
    /// Its scenario.
    pub scenario: String,
}

/// One part of both runs compared.
#[derive(Debug, Clone, Serialize)]
pub struct Part {
    /// `run` or the region's name.
    pub name: String,
    /// Requests made.
    pub requests: Delta,
    /// Requests per second.
    pub rps: Delta,
    /// The share of failed requests.
    pub failed_rate: Delta,
    /// `http_req_duration` percentiles, ms: `p50`, `p90`, `p95`, `p99`,
    /// `p99.9`, `mean`.
    pub http_req_duration: Vec<(String, Delta)>,
    /// `iteration_duration` percentiles, ms.
    pub iteration_duration: Vec<(String, Delta)>,
    /// The distribution test on `http_req_duration`; absent when a run
    /// has no answered request there.
    pub distribution: Option<DistributionTest>,
}

/// A value in A and in B.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Delta {
    /// A's.
    pub a: f64,
    /// B's.
    pub b: f64,
    /// `(b - a) / a`; absent when A's is 0.
    pub change: Option<f64>,
}

impl Delta {
    fn new(a: f64, b: f64) -> Delta {
        Delta {
            a,
            b,
            change: (a != 0.0).then(|| (b - a) / a),
        }
    }
}

/// The one-sided two-sample Kolmogorov-Smirnov test of B against A.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct DistributionTest {
    /// Requests in A.
    pub n_a: u64,
    /// Requests in B.
    pub n_b: u64,
    /// The largest distance between the two cumulative distributions.
    pub d: f64,
    /// The largest amount by which A's lies above B's: B slower.
    pub d_slower: f64,
    /// The largest amount by which B's lies above A's: B faster.
    pub d_faster: f64,
    /// The critical value at [`ALPHA`].
    pub critical: f64,
    /// Whether B is slower beyond noise.
    pub slower: bool,
    /// Whether B is faster beyond noise.
    pub faster: bool,
}

/// Compares B against A; `fail_if_slower` is a fraction of A's p95.
pub fn compare(a: &RunReport, b: &RunReport, fail_if_slower: Option<f64>) -> Comparison {
    let mut parts = vec![part("run", &a.summary, &b.summary)];
    // A run of one region is that region: no second, equal part.
    if a.regions.len() > 1 || b.regions.len() > 1 {
        for (region, sa) in &a.regions {
            if let Some(sb) = b.regions.get(region) {
                parts.push(part(region, sa, sb));
            }
        }
    }
    let whole = &parts[0];
    let p95 = whole
        .http_req_duration
        .iter()
        .find(|(name, _)| name == "p95")
        .map(|(_, d)| *d);
    let slower = whole.distribution.is_some_and(|t| t.slower);
    let faster = whole.distribution.is_some_and(|t| t.faster);
    let p95_change = p95.and_then(|d| d.change);
    let failed = match (fail_if_slower, p95_change) {
        (Some(limit), Some(change)) => slower && change > limit,
        _ => false,
    };
    let moved = |d: Option<Delta>| match d {
        Some(Delta {
            a,
            b,
            change: Some(c),
        }) => format!("p95 {} → {} ({:+.1} %)", fmt_ms(a), fmt_ms(b), c * 100.0),
        _ => "p95 not comparable".to_owned(),
    };
    let mut verdict = match (&whole.distribution, slower, faster) {
        (None, _, _) => "no answered request in one of the runs: nothing to compare".to_owned(),
        (Some(t), true, _) => format!(
            "B is slower than A beyond noise (KS D+ {:.4} > {:.4}); {}",
            t.d_slower,
            t.critical,
            moved(p95)
        ),
        (Some(t), false, true) => format!(
            "B is faster than A beyond noise (KS D- {:.4} > {:.4}); {}",
            t.d_faster,
            t.critical,
            moved(p95)
        ),
        (Some(t), false, false) => format!(
            "no difference beyond noise (KS D {:.4}, critical {:.4}); {}",
            t.d,
            t.critical,
            moved(p95)
        ),
    };
    if let Some(limit) = fail_if_slower {
        let _ = write!(
            verdict,
            "; --fail-if-slower {:.1} %: {}",
            limit * 100.0,
            if failed { "FAILED" } else { "passed" }
        );
    }
    Comparison {
        a: RunRef {
            run_id: a.run_id.clone(),
            scenario: a.scenario.clone(),
        },
        b: RunRef {
            run_id: b.run_id.clone(),
            scenario: b.scenario.clone(),
        },
        parts,
        fail_if_slower,
        failed,
        verdict,
    }
}

fn percentile_deltas(a: &Percentiles, b: &Percentiles) -> Vec<(String, Delta)> {
    [
        ("p50", a.p50, b.p50),
        ("p90", a.p90, b.p90),
        ("p95", a.p95, b.p95),
        ("p99", a.p99, b.p99),
        ("p99.9", a.p999, b.p999),
        ("mean", a.mean, b.mean),
    ]
    .into_iter()
    .map(|(name, a, b)| (name.to_owned(), Delta::new(a, b)))
    .collect()
}

fn part(name: &str, a: &Summary, b: &Summary) -> Part {
    Part {
        name: name.to_owned(),
        requests: Delta::new(a.http.requests as f64, b.http.requests as f64),
        rps: Delta::new(a.http.rps, b.http.rps),
        failed_rate: Delta::new(a.http.failed_rate, b.http.failed_rate),
        http_req_duration: percentile_deltas(&a.http.duration, &b.http.duration),
        iteration_duration: percentile_deltas(&a.iterations.duration, &b.iterations.duration),
        distribution: ks(&a.http.duration_buckets, &b.http.duration_buckets),
    }
}

/// The test on two bucketed distributions (`[bound, count]`, in order).
fn ks(a: &[(f64, u64)], b: &[(f64, u64)]) -> Option<DistributionTest> {
    let n_a: u64 = a.iter().map(|(_, n)| n).sum();
    let n_b: u64 = b.iter().map(|(_, n)| n).sum();
    if n_a == 0 || n_b == 0 {
        return None;
    }
    let (mut i, mut j) = (0, 0);
    let (mut seen_a, mut seen_b) = (0u64, 0u64);
    let (mut d_slower, mut d_faster) = (0f64, 0f64);
    while i < a.len() || j < b.len() {
        // The next bound, and every bucket of either run up to it.
        let next = match (a.get(i), b.get(j)) {
            (Some((x, _)), Some((y, _))) => x.min(*y),
            (Some((x, _)), None) => *x,
            (None, Some((y, _))) => *y,
            (None, None) => break,
        };
        while let Some(&(_, n)) = a.get(i).filter(|(x, _)| *x <= next) {
            seen_a += n;
            i += 1;
        }
        while let Some(&(_, n)) = b.get(j).filter(|(y, _)| *y <= next) {
            seen_b += n;
            j += 1;
        }
        let fa = seen_a as f64 / n_a as f64;
        let fb = seen_b as f64 / n_b as f64;
        d_slower = d_slower.max(fa - fb);
        d_faster = d_faster.max(fb - fa);
    }
    let (n, m) = (n_a as f64, n_b as f64);
    let critical = ((1.0 / ALPHA).ln() / 2.0 * (n + m) / (n * m)).sqrt();
    Some(DistributionTest {
        n_a,
        n_b,
        d: d_slower.max(d_faster),
        d_slower,
        d_faster,
        critical,
        slower: d_slower > critical,
        faster: d_faster > critical,
    })
}

/// The comparison as text, for a terminal.
pub fn render_text(c: &Comparison) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n  A: {} ({})\n  B: {} ({})",
        c.a.run_id, c.a.scenario, c.b.run_id, c.b.scenario
    );
    for p in &c.parts {
        let _ = writeln!(
            out,
            "\n  {}",
            if p.name == "run" {
                "whole run".to_owned()
            } else {
                format!("region {}", p.name)
            }
        );
        let _ = writeln!(
            out,
            "    {:<22} {:>12} {:>12} {:>9}",
            "", "A", "B", "change"
        );
        let row = |out: &mut String, label: &str, d: &Delta, fmt: &dyn Fn(f64) -> String| {
            let change = d
                .change
                .map(|c| format!("{:+.1}%", c * 100.0))
                .unwrap_or_else(|| "–".to_owned());
            let _ = writeln!(
                out,
                "    {label:<22} {:>12} {:>12} {change:>9}",
                fmt(d.a),
                fmt(d.b)
            );
        };
        row(&mut out, "http_reqs", &p.requests, &|v| format!("{v:.0}"));
        row(&mut out, "http_reqs/s", &p.rps, &|v| format!("{v:.1}"));
        row(&mut out, "http_req_failed", &p.failed_rate, &|v| {
            format!("{:.2}%", v * 100.0)
        });
        for (name, d) in &p.http_req_duration {
            row(&mut out, &format!("http_req_duration {name}"), d, &fmt_ms);
        }
        for (name, d) in p
            .iteration_duration
            .iter()
            .filter(|(n, _)| n == "p50" || n == "p95" || n == "p99")
        {
            row(&mut out, &format!("iteration_duration {name}"), d, &fmt_ms);
        }
        if let Some(t) = &p.distribution {
            let said = if t.slower {
                "B slower beyond noise"
            } else if t.faster {
                "B faster beyond noise"
            } else {
                "no difference beyond noise"
            };
            let _ = writeln!(
                out,
                "    distribution (KS, α {ALPHA}): D+ {:.4}  D- {:.4}  critical {:.4}: {said}",
                t.d_slower, t.d_faster, t.critical
            );
        }
    }
    let _ = writeln!(out, "\n  {}", c.verdict);
    out
}

/// The comparison as JSON.
pub fn render_json(c: &Comparison) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(c).unwrap_or_default();
    out.push(b'\n');
    out
}

/// The comparison as one self-contained HTML page: the tables, and both
/// runs' cumulative distributions of `http_req_duration` overlaid, drawn
/// as SVG here (the page has no script). Every text from the reports is
/// escaped.
pub fn render_html(c: &Comparison, a: &RunReport, b: &RunReport) -> String {
    let mut out = String::from(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>fusi: compare</title>\n<style>\
         body{font:14px/1.45 system-ui,sans-serif;margin:24px;color:#1f2328}\
         table{border-collapse:collapse;margin:8px 0 20px}td,th{padding:3px 10px;border-bottom:1px solid #d0d7de;text-align:right}\
         td:first-child,th:first-child{text-align:left}.slower{color:#cf222e}.faster{color:#1a7f37}\
         </style>\n</head>\n<body>\n",
    );
    let _ = writeln!(out, "<h1>B against A</h1>");
    let _ = writeln!(
        out,
        "<p>A: {} ({})<br>B: {} ({})</p>",
        escape(&c.a.run_id),
        escape(&c.a.scenario),
        escape(&c.b.run_id),
        escape(&c.b.scenario)
    );
    let class = if c.failed || c.parts[0].distribution.is_some_and(|t| t.slower) {
        "slower"
    } else {
        "faster"
    };
    let _ = writeln!(
        out,
        "<p class=\"{class}\" id=\"verdict\">{}</p>",
        escape(&c.verdict)
    );
    let _ = writeln!(out, "<h2>http_req_duration, cumulative</h2>");
    out.push_str(&cdf_svg(
        &a.summary.http.duration_buckets,
        &b.summary.http.duration_buckets,
    ));
    for p in &c.parts {
        let _ = writeln!(
            out,
            "<h2>{}</h2>\n<table><tr><th></th><th>A</th><th>B</th><th>change</th></tr>",
            escape(&if p.name == "run" {
                "whole run".to_owned()
            } else {
                format!("region {}", p.name)
            })
        );
        let mut row = |label: &str, d: &Delta, fmt: &dyn Fn(f64) -> String| {
            let change = d
                .change
                .map(|c| format!("{:+.1} %", c * 100.0))
                .unwrap_or_else(|| "–".to_owned());
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(label),
                escape(&fmt(d.a)),
                escape(&fmt(d.b)),
                escape(&change)
            );
        };
        row("http_reqs", &p.requests, &|v| format!("{v:.0}"));
        row("http_reqs/s", &p.rps, &|v| format!("{v:.1}"));
        row("http_req_failed", &p.failed_rate, &|v| {
            format!("{:.2} %", v * 100.0)
        });
        for (name, d) in &p.http_req_duration {
            row(&format!("http_req_duration {name}"), d, &fmt_ms);
        }
        for (name, d) in &p.iteration_duration {
            row(&format!("iteration_duration {name}"), d, &fmt_ms);
        }
        out.push_str("</table>\n");
    }
    out.push_str("</body>\n</html>\n");
    out
}

/// Both cumulative distributions over a log time axis, A grey, B red.
fn cdf_svg(a: &[(f64, u64)], b: &[(f64, u64)]) -> String {
    const W: f64 = 720.0;
    const H: f64 = 280.0;
    const PAD: f64 = 40.0;
    let bounds = a.iter().chain(b).map(|(x, _)| *x).filter(|x| *x > 0.0);
    let lo = bounds.clone().fold(f64::INFINITY, f64::min);
    let hi = bounds.fold(0f64, f64::max);
    let mut out = format!(
        "<svg id=\"cdf\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\">\
         <rect x=\"{PAD}\" y=\"10\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#d0d7de\"/>",
        W - 2.0 * PAD,
        H - PAD - 10.0
    );
    if !(lo.is_finite() && hi > 0.0) {
        out.push_str("</svg>\n");
        return out;
    }
    let (llo, lhi) = (lo.ln(), hi.ln().max(lo.ln() + 1e-9));
    let x = |v: f64| PAD + (v.max(lo).ln() - llo) / (lhi - llo) * (W - 2.0 * PAD);
    let y = |f: f64| H - PAD - f * (H - PAD - 10.0);
    for (buckets, color, name) in [(a, "#6e7781", "A"), (b, "#cf222e", "B")] {
        let total: u64 = buckets.iter().map(|(_, n)| n).sum();
        if total == 0 {
            continue;
        }
        let mut seen = 0u64;
        let mut points = String::new();
        for (bound, n) in buckets {
            seen += n;
            let _ = write!(
                points,
                "{:.1},{:.1} ",
                x(*bound),
                y(seen as f64 / total as f64)
            );
        }
        let _ = write!(
            out,
            "<polyline class=\"run-{name}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\"/>",
            points.trim_end()
        );
    }
    let _ = writeln!(
        out,
        "<text x=\"{PAD}\" y=\"{}\" font-size=\"12\">{}</text>\
         <text x=\"{}\" y=\"{}\" font-size=\"12\" text-anchor=\"end\">{}</text>\
         <text x=\"{}\" y=\"24\" font-size=\"12\" fill=\"#6e7781\">A</text>\
         <text x=\"{}\" y=\"40\" font-size=\"12\" fill=\"#cf222e\">B</text></svg>",
        H - PAD + 16.0,
        escape(&fmt_ms(lo)),
        W - PAD,
        H - PAD + 16.0,
        escape(&fmt_ms(hi)),
        PAD + 8.0,
        PAD + 8.0
    );
    out
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::metrics::{SeriesKey, SeriesSet, names};
    use crate::core::report::Report;
    use crate::core::run_report::RunMeta;
    use crate::core::shard::Shard;
    use fusi_sdk::abi::MetricKind;

    /// A run of `latencies` (ms), one shard.
    fn run(id: &str, latencies: impl Iterator<Item = f64>) -> RunReport {
        let mut series = SeriesSet::new();
        let reqs = SeriesKey::new(names::HTTP_REQS, [("status".into(), "200".into())]);
        let dur = SeriesKey::new(names::HTTP_REQ_DURATION, [("status".into(), "200".into())]);
        for l in latencies {
            let _ = series.add(&reqs, MetricKind::Counter, 1.0);
            let _ = series.add(&dur, MetricKind::Trend, l);
        }
        let shard = Shard {
            notes: Vec::new(),
            run_id: id.into(),
            node: "n".into(),
            name: "n".into(),
            region: "fra".into(),
            seq: 0,
            start_ms: 0,
            end_ms: 10_000,
            last: true,
            series,
        };
        let meta = RunMeta {
            data: Vec::new(),
            scenario: "<b>x.wasm".into(),
            executor: "constant-vus".into(),
            outcome: "complete".into(),
            expected: Vec::new(),
            lost: Vec::new(),
            thresholds: Vec::new(),
            aborted_by: None,
            load: None,
            moves: Vec::new(),
        };
        RunReport::build(&Report::from_shards(id, vec![shard]), &meta)
    }

    /// 2,000 latencies around `base` ms, the same spread each time.
    fn around(base: f64) -> impl Iterator<Item = f64> {
        (0..2000).map(move |i| base + f64::from(i % 100) * 0.05)
    }

    #[test]
    fn a_run_5_ms_slower_is_slower_beyond_noise_and_fails_the_limit() {
        let a = run("ra", around(10.0));
        let b = run("rb", around(15.0));
        let c = compare(&a, &b, Some(0.05));
        let t = c.parts[0].distribution.expect("both have requests");
        assert!(t.slower && !t.faster, "{t:?}");
        assert!(t.d_slower > 0.99, "{t:?}");
        assert!(c.failed);
        assert!(
            c.verdict.starts_with("B is slower than A beyond noise"),
            "{}",
            c.verdict
        );
        assert!(
            c.verdict.ends_with("--fail-if-slower 5.0 %: FAILED"),
            "{}",
            c.verdict
        );
        // One region is the whole run: not compared twice.
        assert_eq!(c.parts.len(), 1);
        // The other way round, B is faster and nothing fails.
        let back = compare(&b, &a, Some(0.05));
        assert!(
            back.parts[0]
                .distribution
                .is_some_and(|t| t.faster && !t.slower)
        );
        assert!(!back.failed);
    }

    #[test]
    fn the_same_distribution_is_no_difference_and_a_small_shift_passes_a_large_limit() {
        let a = run("ra", around(10.0));
        let same = compare(&a, &run("rb", around(10.0)), Some(0.05));
        let t = same.parts[0].distribution.expect("requests");
        assert_eq!(t.d, 0.0);
        assert!(!t.slower && !same.failed);
        assert!(
            same.verdict.starts_with("no difference beyond noise"),
            "{}",
            same.verdict
        );
        // 0.5 ms on 10 ms is significant on 2,000 requests, but under 50 %.
        let shifted = compare(&a, &run("rb", around(10.5)), Some(0.5));
        assert!(shifted.parts[0].distribution.is_some_and(|t| t.slower));
        assert!(!shifted.failed, "{}", shifted.verdict);
        // Without a limit nothing fails, whatever the test says.
        assert!(!compare(&a, &run("rb", around(30.0)), None).failed);
    }

    #[test]
    fn a_run_without_answers_is_not_comparable() {
        let a = run("ra", around(10.0));
        let empty = run("rb", std::iter::empty());
        let c = compare(&a, &empty, Some(0.05));
        assert!(c.parts[0].distribution.is_none());
        assert!(!c.failed);
        assert!(
            c.verdict.starts_with("no answered request"),
            "{}",
            c.verdict
        );
    }

    #[test]
    fn text_json_and_html_say_the_same() {
        let a = run("ra", around(10.0));
        let b = run("rb", around(15.0));
        let c = compare(&a, &b, Some(0.05));
        let text = render_text(&c);
        assert!(text.contains("http_req_duration p95"), "{text}");
        assert!(text.contains("B slower beyond noise"), "{text}");
        let json: serde_json::Value = serde_json::from_slice(&render_json(&c)).expect("valid JSON");
        assert_eq!(json["failed"], true);
        assert_eq!(json["parts"][0]["distribution"]["slower"], true);
        let html = render_html(&c, &a, &b);
        assert!(
            html.contains("<polyline class=\"run-A\"")
                && html.contains("<polyline class=\"run-B\"")
        );
        // Names from the reports are escaped.
        assert!(
            html.contains("&lt;b&gt;x.wasm") && !html.contains("<b>x.wasm"),
            "{html}"
        );
    }
}
