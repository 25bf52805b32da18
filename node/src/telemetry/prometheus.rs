//! `/metrics` in the Prometheus text exposition format (version 0.0.4),
//! and the small server behind `fusi-node up --metrics-listen`.
//!
//! The server is read-only and asks no token: it shows counts and health,
//! never a scenario, a URL or a token, and it does nothing but render a
//! [`Snapshot`]. So it is the one listener of a node that may bind a
//! non-loopback address (a Prometheus server on another host scrapes it);
//! the node says so in its log when it does. Like the API, it serves at
//! most [`MAX_CONNECTIONS`] connections at once, each with
//! [`HEADER_TIMEOUT`] to send its headers.
//!
//! Names follow Prometheus's conventions: a `fusi_` prefix, `_total` on
//! counters, base units in the name (`_seconds`, `_bytes`), a `HELP` and a
//! `TYPE` line per metric. Label values that come from users or peers (run
//! ids, regions, names) are escaped and cut to [`MAX_LABEL_BYTES`].

use std::convert::Infallible;
use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::families::{self, Family};
use super::{DURATION_BOUNDS_S, PHASES, RegionMetrics, Snapshot, SnapshotSource};

/// The most `/metrics` connections served at once.
pub const MAX_CONNECTIONS: usize = 16;

/// How long a client may take to send a request's headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest label value written; longer ones are cut (on a character
/// boundary).
pub const MAX_LABEL_BYTES: usize = 128;

/// The media type of the text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Binds `--metrics-listen`, warning in the log when the address is
/// reachable from other hosts.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!(
            "cannot listen for metrics on {addr}: {e}; pick another address with --metrics-listen \
             (port 0 picks a free one)"
        )
    })?;
    if !addr.ip().is_loopback() {
        tracing::warn!(
            "--metrics-listen {addr} is not a loopback address: any host that reaches it can read \
             this node's metrics (run ids, regions, counts; no token, no scenario); restrict it \
             with a firewall, or listen on 127.0.0.1"
        );
    }
    Ok(listener)
}

/// Serves `GET /metrics` from `source` until `shutdown`.
pub async fn serve(listener: TcpListener, source: SnapshotSource, shutdown: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _)) = accepted else {
            continue;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let source = source.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(req, source.clone()));
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            drop(slot);
        });
    }
}

async fn handle<B>(
    req: Request<B>,
    source: SnapshotSource,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let text = |status: StatusCode, content_type: &'static str, body: String| {
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static(content_type),
        );
        response
    };
    let plain = "text/plain; charset=utf-8";
    if req.uri().path() != "/metrics" {
        return Ok(text(
            StatusCode::NOT_FOUND,
            plain,
            "fusi-node serves its metrics at /metrics\n".into(),
        ));
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(text(
            StatusCode::METHOD_NOT_ALLOWED,
            plain,
            "/metrics is read with GET\n".into(),
        ));
    }
    Ok(match source.get().await {
        Some(snapshot) => text(StatusCode::OK, CONTENT_TYPE, render(&snapshot)),
        None => text(
            StatusCode::SERVICE_UNAVAILABLE,
            plain,
            "the node is shutting down\n".into(),
        ),
    })
}

/// A label value as the text format writes it: `\`, `"` and line feeds
/// escaped, cut to [`MAX_LABEL_BYTES`].
pub fn escape_label(value: &str) -> String {
    let mut end = value.len().min(MAX_LABEL_BYTES);
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = String::with_capacity(end + 2);
    for c in value[..end].chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A sample value: Prometheus reads Rust's shortest round-trip form;
/// anything not finite is written as 0 (no metric here is ever one).
fn number(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else {
        "0".into()
    }
}

/// Writes the exposition text.
struct Writer {
    out: String,
}

impl Writer {
    /// A family's `HELP` and `TYPE` lines; its Prometheus name.
    fn family(&mut self, f: &Family) -> String {
        let name = f.prometheus_name();
        let _ = writeln!(self.out, "# HELP {name} {}", f.help);
        let _ = writeln!(self.out, "# TYPE {name} {}", f.prometheus_type());
        name
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape_label(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", number(value));
    }

    /// A family with one sample and no labels.
    fn single(&mut self, f: &Family, value: f64) {
        let name = self.family(f);
        self.sample(&name, &[], value);
    }

    /// A family with one sample per run and region.
    fn per_region(&mut self, f: &Family, s: &Snapshot, value: Count) {
        let name = self.family(f);
        for run in &s.runs {
            for r in &run.regions {
                let labels = [("run", run.id.as_str()), ("region", r.region.as_str())];
                self.sample(&name, &labels, value(r) as f64);
            }
        }
    }
}

/// One count of a region's part of a run.
type Count = fn(&RegionMetrics) -> u64;

/// A snapshot in the text format.
pub fn render(s: &Snapshot) -> String {
    let mut w = Writer { out: String::new() };
    let n = &s.node;
    let name = w.family(&families::NODE_INFO);
    let labels = [
        ("id", n.id.as_str()),
        ("name", n.name.as_str()),
        ("region", n.region.as_str()),
        ("version", n.version.as_str()),
    ];
    w.sample(&name, &labels, 1.0);
    w.single(&families::NODE_START_TIME, n.start_unix_ns as f64 / 1e9);
    w.single(&families::NODE_MEMBERS, n.members as f64);
    w.single(&families::NODE_SUSPECTS, n.suspects as f64);
    w.single(&families::NODE_CONNECTED, n.connected as f64);
    w.single(&families::NODE_MESH_SENT, n.mesh_bytes_sent as f64);
    w.single(&families::NODE_MESH_RECEIVED, n.mesh_bytes_received as f64);
    w.single(&families::NODE_CPU, n.cpu_cores);
    w.single(&families::NODE_SOCKETS, n.sockets as f64);
    w.single(&families::NODE_VUS, n.vus as f64);
    let name = w.family(&families::NODE_RUNS);
    for (phase, count) in PHASES.iter().zip(n.runs_by_phase) {
        w.sample(&name, &[("phase", phase)], count as f64);
    }
    let name = w.family(&families::RUN_INFO);
    for run in &s.runs {
        let labels = [
            ("run", run.id.as_str()),
            ("phase", run.phase.as_str()),
            ("executor", run.executor.as_str()),
        ];
        w.sample(&name, &labels, 1.0);
    }
    let name = w.family(&families::RUN_SETTLED);
    for run in &s.runs {
        let settled = if run.settled { 1.0 } else { 0.0 };
        w.sample(&name, &[("run", &run.id)], settled);
    }
    w.per_region(&families::RUN_REQUESTS, s, |r| r.requests);
    w.per_region(&families::RUN_FAILED_REQUESTS, s, |r| r.failed_requests);
    w.per_region(&families::RUN_ITERATIONS, s, |r| r.iterations);
    w.per_region(&families::RUN_FAILED_ITERATIONS, s, |r| r.failed_iterations);
    w.per_region(&families::RUN_VUS, s, |r| r.vus);
    render_durations(&mut w, s);
    w.out
}

/// `http_req_duration` as a histogram: cumulative `_bucket`s, `_sum`,
/// `_count`.
fn render_durations(w: &mut Writer, s: &Snapshot) {
    let name = w.family(&families::RUN_DURATION);
    let (bucket, sum, count) = (
        format!("{name}_bucket"),
        format!("{name}_sum"),
        format!("{name}_count"),
    );
    let bounds: Vec<String> = DURATION_BOUNDS_S
        .iter()
        .map(|b| number(*b))
        .chain(["+Inf".to_owned()])
        .collect();
    for run in &s.runs {
        for r in &run.regions {
            let labels = [("run", run.id.as_str()), ("region", r.region.as_str())];
            for (le, n) in bounds.iter().zip(r.duration.cumulative()) {
                w.sample(&bucket, &[labels[0], labels[1], ("le", le)], n as f64);
            }
            w.sample(&sum, &labels, r.duration.sum_s);
            w.sample(&count, &labels, r.duration.count() as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::{DurationHistogram, NodeHealth, RegionMetrics, RunMetrics};

    fn snapshot(run: &str, region: &str) -> Snapshot {
        let mut duration = DurationHistogram::default();
        duration.counts[0] = 3;
        duration.counts[4] = 2;
        duration.counts[DURATION_BOUNDS_S.len()] = 1;
        duration.sum_s = 61.25;
        Snapshot {
            unix_ns: 1,
            node: NodeHealth {
                id: "12D3KooW".into(),
                name: "fra-1".into(),
                region: "fra".into(),
                version: "0.1.0".into(),
                members: 2,
                runs_by_phase: [0, 0, 0, 1, 2, 0, 0],
                ..NodeHealth::default()
            },
            runs: vec![RunMetrics {
                id: run.into(),
                phase: "running".into(),
                executor: "constant-vus".into(),
                settled: false,
                start_unix_ns: 0,
                regions: vec![RegionMetrics {
                    region: region.into(),
                    requests: 6,
                    failed_requests: 1,
                    iterations: 6,
                    failed_iterations: 0,
                    vus: 4,
                    duration,
                }],
            }],
        }
    }

    /// The sample lines of a metric family, without the comments.
    fn samples<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
        text.lines().filter(|l| l.starts_with(prefix)).collect()
    }

    #[test]
    fn label_values_are_escaped_and_cut() {
        assert_eq!(escape_label("fra"), "fra");
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        let long = "é".repeat(100);
        let cut = escape_label(&long);
        assert!(cut.len() <= MAX_LABEL_BYTES && cut.chars().all(|c| c == 'é'));
    }

    #[test]
    fn a_hostile_run_id_and_region_stay_inside_their_quotes() {
        let text = render(&snapshot(
            "r1\"} 999\nfusi_evil 1 #\\",
            "x\",le=\"0.001\"}\n",
        ));
        assert!(!text.lines().any(|l| l.starts_with("fusi_evil")), "{text}");
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            // Every sample line is NAME{...} VALUE, with a number at the end.
            let value = line.rsplit(' ').next().unwrap_or("");
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
        assert!(
            text.contains(r#"run="r1\"} 999\nfusi_evil 1 #\\""#),
            "{text}"
        );
    }

    #[test]
    fn every_family_has_help_and_type_and_counters_end_in_total() {
        let text = render(&snapshot("r1", "fra"));
        let types: Vec<(&str, &str)> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_once(' '))
            .collect();
        assert!(types.len() >= 15, "{text}");
        for (name, kind) in &types {
            assert!(name.starts_with("fusi_"), "{name}");
            assert!(text.contains(&format!("# HELP {name} ")), "{name}");
            assert_eq!(name.ends_with("_total"), *kind == "counter", "{name}");
        }
        assert!(
            text.contains("fusi_run_http_reqs_total{run=\"r1\",region=\"fra\"} 6\n"),
            "{text}"
        );
        assert!(text.contains("fusi_node_runs{phase=\"complete\"} 2\n"));
    }

    #[test]
    fn histogram_buckets_are_cumulative_and_end_in_inf_and_count() {
        let text = render(&snapshot("r1", "fra"));
        let buckets = samples(&text, "fusi_run_http_req_duration_seconds_bucket");
        assert_eq!(buckets.len(), DURATION_BOUNDS_S.len() + 1);
        let values: Vec<u64> = buckets
            .iter()
            .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
            .collect();
        assert_eq!(values.len(), buckets.len());
        assert!(values.windows(2).all(|w| w[0] <= w[1]), "{values:?}");
        assert_eq!(values[0], 3);
        assert_eq!(values[4], 5);
        assert!(buckets[0].contains("le=\"0.001\""), "{}", buckets[0]);
        assert!(buckets[9].contains("le=\"1\""), "{}", buckets[9]);
        assert!(buckets[15].contains("le=\"+Inf\"} 6"), "{}", buckets[15]);
        assert!(
            text.contains(
                "fusi_run_http_req_duration_seconds_count{run=\"r1\",region=\"fra\"} 6\n"
            )
        );
        assert!(
            text.contains(
                "fusi_run_http_req_duration_seconds_sum{run=\"r1\",region=\"fra\"} 61.25\n"
            )
        );
    }

    #[test]
    fn numbers_are_plain_and_finite() {
        assert_eq!(number(1.0), "1");
        assert_eq!(number(0.0025), "0.0025");
        assert_eq!(number(f64::NAN), "0");
        assert_eq!(number(f64::INFINITY), "0");
    }
}
