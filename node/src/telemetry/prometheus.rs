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

use super::{DURATION_BOUNDS_S, PHASES, Snapshot, SnapshotSource};

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
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
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

    /// A metric with one sample and no labels.
    fn single(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }
}

/// A snapshot in the text format.
pub fn render(s: &Snapshot) -> String {
    let mut w = Writer { out: String::new() };
    let n = &s.node;
    w.family(
        "fusi_node_info",
        "gauge",
        "This node: its peer id, name, region and version (always 1).",
    );
    w.sample(
        "fusi_node_info",
        &[
            ("id", &n.id),
            ("name", &n.name),
            ("region", &n.region),
            ("version", &n.version),
        ],
        1.0,
    );
    w.single(
        "fusi_node_start_time_seconds",
        "gauge",
        "When this node started, Unix seconds.",
        n.start_unix_ns as f64 / 1e9,
    );
    w.single(
        "fusi_node_members",
        "gauge",
        "Members of the mesh this node knows, itself not included.",
        n.members as f64,
    );
    w.single(
        "fusi_node_suspect_members",
        "gauge",
        "Members that missed their recent heartbeats.",
        n.suspects as f64,
    );
    w.single(
        "fusi_node_connected_peers",
        "gauge",
        "Peers with an open connection to this node.",
        n.connected as f64,
    );
    w.single(
        "fusi_node_mesh_sent_bytes_total",
        "counter",
        "Bytes sent on mesh connections since the node started.",
        n.mesh_bytes_sent as f64,
    );
    w.single(
        "fusi_node_mesh_received_bytes_total",
        "counter",
        "Bytes received on mesh connections since the node started.",
        n.mesh_bytes_received as f64,
    );
    w.single(
        "fusi_node_cpu_used_cores",
        "gauge",
        "CPU use of this host over the last second, in cores (1 = one core busy).",
        n.cpu_cores,
    );
    w.single(
        "fusi_node_open_sockets",
        "gauge",
        "Open sockets of this node.",
        n.sockets as f64,
    );
    w.single(
        "fusi_node_vus",
        "gauge",
        "VUs of this node's shares of the runs now running.",
        n.vus as f64,
    );
    w.family("fusi_node_runs", "gauge", "Runs this node knows, by phase.");
    for (phase, count) in PHASES.iter().zip(n.runs_by_phase) {
        w.sample("fusi_node_runs", &[("phase", phase)], count as f64);
    }
    render_runs(&mut w, s);
    w.out
}

/// One count of a region's part of a run.
type Count = fn(&super::RegionMetrics) -> u64;

fn render_runs(w: &mut Writer, s: &Snapshot) {
    w.family(
        "fusi_run_info",
        "gauge",
        "A recent run, with its phase and executor (always 1).",
    );
    for run in &s.runs {
        w.sample(
            "fusi_run_info",
            &[
                ("run", &run.id),
                ("phase", &run.phase),
                ("executor", &run.executor),
            ],
            1.0,
        );
    }
    w.family(
        "fusi_run_settled",
        "gauge",
        "1 once the run ended and every shard announced is merged here: its counts are final.",
    );
    for run in &s.runs {
        let settled = if run.settled { 1.0 } else { 0.0 };
        w.sample("fusi_run_settled", &[("run", &run.id)], settled);
    }
    let counters: [(&str, &str, Count); 4] = [
        (
            "fusi_run_http_reqs_total",
            "HTTP requests made by the run's nodes in the region.",
            |r| r.requests,
        ),
        (
            "fusi_run_http_req_failed_total",
            "HTTP requests without an expected response.",
            |r| r.failed_requests,
        ),
        (
            "fusi_run_iterations_total",
            "Iterations that returned normally.",
            |r| r.iterations,
        ),
        (
            "fusi_run_iterations_failed_total",
            "Iterations that failed (trap, timeout, ...).",
            |r| r.failed_iterations,
        ),
    ];
    for (name, help, value) in counters {
        w.family(name, "counter", help);
        for run in &s.runs {
            for r in &run.regions {
                w.sample(
                    name,
                    &[("run", &run.id), ("region", &r.region)],
                    value(r) as f64,
                );
            }
        }
    }
    w.family(
        "fusi_run_vus",
        "gauge",
        "VUs active in the region's latest settled interval of the run.",
    );
    for run in &s.runs {
        for r in &run.regions {
            w.sample(
                "fusi_run_vus",
                &[("run", &run.id), ("region", &r.region)],
                r.vus as f64,
            );
        }
    }
    let name = "fusi_run_http_req_duration_seconds";
    w.family(
        name,
        "histogram",
        "http_req_duration: from sending a request to the last byte of its response.",
    );
    let bucket = format!("{name}_bucket");
    let bounds: Vec<String> = DURATION_BOUNDS_S
        .iter()
        .map(|b| number(*b))
        .chain(["+Inf".to_owned()])
        .collect();
    for run in &s.runs {
        for r in &run.regions {
            let labels = [("run", run.id.as_str()), ("region", r.region.as_str())];
            for (le, count) in bounds.iter().zip(r.duration.cumulative()) {
                w.sample(&bucket, &[labels[0], labels[1], ("le", le)], count as f64);
            }
            w.sample(&format!("{name}_sum"), &labels, r.duration.sum_s);
            w.sample(&format!("{name}_count"), &labels, r.duration.count() as f64);
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
