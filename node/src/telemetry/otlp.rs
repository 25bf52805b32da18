//! `fusi-node up --otlp-endpoint URL` (and `run --otlp-endpoint` on this
//! machine, [`super::local`]): the metrics pushed to an OpenTelemetry
//! collector over OTLP/HTTP with protobuf (`POST URL/v1/metrics`,
//! `Content-Type: application/x-protobuf`).
//!
//! The same [`Snapshot`] that Prometheus scrapes, as OTLP metrics: the
//! same names without Prometheus's `_total` and unit suffixes (a
//! collector's Prometheus exporter adds them back from the metric's kind
//! and unit), counters as cumulative monotonic sums, `http_req_duration`
//! as a cumulative histogram with [`DURATION_BOUNDS_S`]. A push goes every
//! `--otlp-interval`, and once more as soon as a run's numbers are final
//! ([`RunMetrics::settled`]).
//!
//! A push runs on its own task, never on the node's event loop or a
//! run's: a slow or failing collector costs at most [`PUSH_TIMEOUT`] of
//! that task, and a warning in the log at most once per
//! [`WARN_EVERY`].

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use prost::Message;
use tokio_util::sync::CancellationToken;

use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;

use super::families::{self, Family, Kind};
use super::{DURATION_BOUNDS_S, PHASES, RegionMetrics, RunMetrics, Snapshot, SnapshotSource};

/// `AGGREGATION_TEMPORALITY_CUMULATIVE`: every point counts from its
/// start time.
const CUMULATIVE: i32 = AggregationTemporality::Cumulative as i32;

/// The media type of an OTLP/HTTP protobuf request.
pub const CONTENT_TYPE: &str = "application/x-protobuf";

/// The longest a push may take, from connecting to the collector's answer.
pub const PUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// The fewest seconds between two warnings about failed pushes.
pub const WARN_EVERY: Duration = Duration::from_secs(60);

/// How often the pusher looks for a run whose numbers just became final.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// The most bytes of a collector's answer read.
const MAX_ANSWER_BYTES: usize = 64 << 10;

/// Where to push: `--otlp-endpoint`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `https`.
    pub https: bool,
    /// The collector's host name or address.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// The path to POST to, `/v1/metrics` after the URL's own.
    pub path: String,
}

impl Endpoint {
    /// Checks `--otlp-endpoint`: an `http` or `https` URL with a host and
    /// no query; `/v1/metrics` is added to its path unless it ends so.
    pub fn parse(text: &str) -> Result<Endpoint, String> {
        let example = "for example http://127.0.0.1:4318";
        let url = url::Url::parse(text)
            .map_err(|e| format!("--otlp-endpoint {text:?} is not a URL ({e}); write {example}"))?;
        let https = match url.scheme() {
            "http" => false,
            "https" => true,
            other => {
                return Err(format!(
                    "--otlp-endpoint {text:?}: OTLP/HTTP takes http or https, not {other}; write \
                     {example} (a collector's OTLP/HTTP port, usually 4318, not gRPC's 4317)"
                ));
            }
        };
        let host = match url.host() {
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            Some(host) => host.to_string(),
            None => {
                return Err(format!(
                    "--otlp-endpoint {text:?} names no host; write {example}"
                ));
            }
        };
        if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() {
            return Err(format!(
                "--otlp-endpoint {text:?}: give the collector's base URL without a query, a \
                 fragment or credentials; write {example}"
            ));
        }
        let base = url.path().trim_end_matches('/');
        let path = if base.ends_with("/v1/metrics") {
            base.to_owned()
        } else {
            format!("{base}/v1/metrics")
        };
        Ok(Endpoint {
            https,
            port: url
                .port_or_known_default()
                .unwrap_or(if https { 443 } else { 80 }),
            host,
            path,
        })
    }

    /// The URL pushed to, for messages.
    pub fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("{scheme}://{host}:{}{}", self.port, self.path)
    }
}

/// `--otlp-endpoint` and `--otlp-interval`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpConfig {
    /// Where to push.
    pub endpoint: Endpoint,
    /// How often.
    pub interval: Duration,
}

/// Pushes snapshots from `source` until `shutdown`, and then the final
/// numbers of a run that just ended, if they were not pushed yet.
pub async fn push(config: OtlpConfig, source: SnapshotSource, shutdown: CancellationToken) {
    let Ok(tls) = tls_config() else {
        tracing::warn!("cannot set up TLS for --otlp-endpoint; metrics are not pushed");
        return;
    };
    let mut pusher = Pusher {
        config,
        tls,
        final_sent: BTreeSet::new(),
        next_push: Instant::now(),
        failures: 0,
        warned_at: None,
    };
    let mut look = tokio::time::interval(LOOK_EVERY);
    look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = look.tick() => {}
        }
        let Some(snapshot) = source.get().await else {
            return;
        };
        pusher.look(&snapshot).await;
    }
    // A run that ended just now (a local run ends so) still has its final
    // numbers pushed.
    let last = async {
        if let Some(snapshot) = source.get().await
            && pusher.has_news(&snapshot)
        {
            pusher.send(&snapshot).await;
        }
    };
    let _ = tokio::time::timeout(PUSH_TIMEOUT + LOOK_EVERY, last).await;
}

/// The pusher's state between looks.
struct Pusher {
    config: OtlpConfig,
    tls: Arc<rustls::ClientConfig>,
    /// Runs whose final numbers were pushed, or tried (those of the last
    /// push).
    final_sent: BTreeSet<String>,
    next_push: Instant,
    /// Pushes failed since the last warning.
    failures: u64,
    warned_at: Option<Instant>,
}

impl Pusher {
    /// Pushes when the interval is up, or when a run's numbers just became
    /// final.
    async fn look(&mut self, snapshot: &Snapshot) {
        if Instant::now() < self.next_push && !self.has_news(snapshot) {
            return;
        }
        self.next_push = Instant::now() + self.config.interval;
        self.send(snapshot).await;
    }

    /// Whether a run's final numbers in `snapshot` were not pushed yet.
    fn has_news(&self, snapshot: &Snapshot) -> bool {
        snapshot
            .runs
            .iter()
            .any(|r| r.settled && !self.final_sent.contains(&r.id))
    }

    /// One push. A run's final numbers are tried once as soon as they are
    /// known; if the collector fails then, the pushes every interval carry
    /// them (counters are cumulative).
    async fn send(&mut self, snapshot: &Snapshot) {
        self.final_sent = snapshot
            .runs
            .iter()
            .filter(|r| r.settled)
            .map(|r| r.id.clone())
            .collect();
        let body = encode(snapshot).encode_to_vec();
        let result = tokio::time::timeout(
            PUSH_TIMEOUT,
            post(&self.config.endpoint, self.tls.clone(), body),
        )
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {} s", PUSH_TIMEOUT.as_secs())));
        match result {
            Ok(()) => {}
            Err(e) => {
                self.failures += 1;
                if self.warned_at.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
                    tracing::warn!(
                        "cannot push metrics to {} ({} failed since the last warning): {e}",
                        self.config.endpoint.url(),
                        self.failures
                    );
                    self.warned_at = Some(Instant::now());
                    self.failures = 0;
                }
            }
        }
    }
}

fn tls_config() -> Result<Arc<rustls::ClientConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// POSTs one request over a fresh HTTP/1.1 connection.
async fn post(
    endpoint: &Endpoint,
    tls: Arc<rustls::ClientConfig>,
    body: Vec<u8>,
) -> Result<(), String> {
    let tcp = tokio::net::TcpStream::connect((endpoint.host.as_str(), endpoint.port))
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let authority = match endpoint.port {
        80 | 443 => endpoint.host.clone(),
        port => format!("{}:{port}", endpoint.host),
    };
    let request = Request::post(endpoint.path.as_str())
        .header(header::HOST, authority)
        .header(header::CONTENT_TYPE, CONTENT_TYPE)
        .header(
            header::USER_AGENT,
            concat!("fusi-node/", env!("CARGO_PKG_VERSION")),
        )
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| format!("cannot make the request: {e}"))?;
    let response = if endpoint.https {
        let name = rustls::pki_types::ServerName::try_from(endpoint.host.clone())
            .map_err(|e| format!("{:?} is not a TLS server name: {e}", endpoint.host))?;
        let stream = tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake failed: {e}"))?;
        send(TokioIo::new(stream), request).await?
    } else {
        send(TokioIo::new(tcp), request).await?
    };
    let status = response.status();
    let answer = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    if !status.is_success() {
        let text = String::from_utf8_lossy(&answer[..answer.len().min(200)]).into_owned();
        return Err(format!("the collector answered {status}: {text}"));
    }
    if let Ok(reply) = ExportMetricsServiceResponse::decode(answer)
        && let Some(partial) = reply.partial_success
        && partial.rejected_data_points > 0
    {
        return Err(format!(
            "the collector rejected {} data points: {}",
            partial.rejected_data_points, partial.error_message
        ));
    }
    Ok(())
}

async fn send<T>(
    io: TokioIo<T>,
    request: Request<Full<Bytes>>,
) -> Result<http::Response<hyper::body::Incoming>, String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP handshake failed: {e}"))?;
    tokio::spawn(conn);
    sender
        .send_request(request)
        .await
        .map_err(|e| format!("the request failed: {e}"))
}

fn attribute(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
        ..KeyValue::default()
    }
}

/// A family's metric with its data.
fn metric(f: &Family, data: metric::Data) -> Metric {
    Metric {
        name: f.name.to_owned(),
        description: f.help.to_owned(),
        unit: f.unit.to_owned(),
        data: Some(data),
        ..Metric::default()
    }
}

/// A number at `time`, counted since `start` (0 for a gauge).
fn point(attributes: Vec<KeyValue>, start: u64, time: u64, value: f64) -> NumberDataPoint {
    NumberDataPoint {
        attributes,
        start_time_unix_nano: start,
        time_unix_nano: time,
        value: Some(number_data_point::Value::AsDouble(value)),
        ..NumberDataPoint::default()
    }
}

/// A gauge or a counter (a cumulative monotonic sum), as the family says.
fn numbers(f: &Family, data_points: Vec<NumberDataPoint>) -> Metric {
    let data = match f.kind {
        Kind::Counter => metric::Data::Sum(Sum {
            data_points,
            aggregation_temporality: CUMULATIVE,
            is_monotonic: true,
        }),
        Kind::Gauge | Kind::Histogram => metric::Data::Gauge(Gauge { data_points }),
    };
    metric(f, data)
}

/// A snapshot as one OTLP export request.
pub fn encode(s: &Snapshot) -> ExportMetricsServiceRequest {
    let n = &s.node;
    let t = s.unix_ns;
    let one = |f: &Family, value: f64| {
        let start = if f.kind == Kind::Counter {
            n.start_unix_ns
        } else {
            0
        };
        numbers(f, vec![point(Vec::new(), start, t, value)])
    };
    let mut metrics = vec![
        one(&families::NODE_MEMBERS, n.members as f64),
        one(&families::NODE_SUSPECTS, n.suspects as f64),
        one(&families::NODE_CONNECTED, n.connected as f64),
        one(&families::NODE_MESH_SENT, n.mesh_bytes_sent as f64),
        one(&families::NODE_MESH_RECEIVED, n.mesh_bytes_received as f64),
        one(&families::NODE_CPU, n.cpu_cores),
        one(&families::NODE_SOCKETS, n.sockets as f64),
        one(&families::NODE_VUS, n.vus as f64),
        numbers(
            &families::NODE_RUNS,
            PHASES
                .iter()
                .zip(n.runs_by_phase)
                .map(|(phase, count)| point(vec![attribute("phase", phase)], 0, t, count as f64))
                .collect(),
        ),
    ];
    metrics.extend(run_metrics(s));
    let resource = Resource {
        attributes: vec![
            attribute("service.name", "fusi-node"),
            attribute("service.version", &n.version),
            attribute("service.instance.id", &n.id),
            attribute("fusi.node.name", &n.name),
            attribute("fusi.region", &n.region),
        ],
        ..Resource::default()
    };
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(resource),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "fusi-node".into(),
                    version: n.version.clone(),
                    ..InstrumentationScope::default()
                }),
                metrics,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

fn run_metrics(s: &Snapshot) -> Vec<Metric> {
    let t = s.unix_ns;
    let labels = |run: &RunMetrics, r: &RegionMetrics| {
        vec![attribute("run", &run.id), attribute("region", &r.region)]
    };
    let per_region = |f: &Family, value: fn(&RegionMetrics) -> u64| {
        let points = s
            .runs
            .iter()
            .flat_map(|run| {
                let start = if f.kind == Kind::Counter {
                    run.start_unix_ns
                } else {
                    0
                };
                run.regions
                    .iter()
                    .map(move |r| point(labels(run, r), start, t, value(r) as f64))
            })
            .collect();
        numbers(f, points)
    };
    let info = s
        .runs
        .iter()
        .map(|run| {
            let attributes = vec![
                attribute("run", &run.id),
                attribute("phase", &run.phase),
                attribute("executor", &run.executor),
            ];
            point(attributes, 0, t, 1.0)
        })
        .collect();
    let settled = s
        .runs
        .iter()
        .map(|run| {
            let settled = if run.settled { 1.0 } else { 0.0 };
            point(vec![attribute("run", &run.id)], 0, t, settled)
        })
        .collect();
    let durations = s
        .runs
        .iter()
        .flat_map(|run| {
            run.regions.iter().map(move |r| HistogramDataPoint {
                attributes: labels(run, r),
                start_time_unix_nano: run.start_unix_ns,
                time_unix_nano: t,
                count: r.duration.count(),
                sum: Some(r.duration.sum_s),
                bucket_counts: r.duration.counts.to_vec(),
                explicit_bounds: DURATION_BOUNDS_S.to_vec(),
                ..HistogramDataPoint::default()
            })
        })
        .collect();
    vec![
        numbers(&families::RUN_INFO, info),
        numbers(&families::RUN_SETTLED, settled),
        per_region(&families::RUN_REQUESTS, |r| r.requests),
        per_region(&families::RUN_FAILED_REQUESTS, |r| r.failed_requests),
        per_region(&families::RUN_ITERATIONS, |r| r.iterations),
        per_region(&families::RUN_FAILED_ITERATIONS, |r| r.failed_iterations),
        per_region(&families::RUN_VUS, |r| r.vus),
        metric(
            &families::RUN_DURATION,
            metric::Data::Histogram(Histogram {
                data_points: durations,
                aggregation_temporality: CUMULATIVE,
            }),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::{DurationHistogram, NodeHealth};

    #[test]
    fn endpoints_are_checked_with_the_fix_in_the_message() {
        let e = Endpoint::parse("http://127.0.0.1:4318").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(e.path, "/v1/metrics");
        assert_eq!(e.url(), "http://127.0.0.1:4318/v1/metrics");
        let e = Endpoint::parse("https://otel.example.com/otlp/").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (e.https, e.port, e.path.as_str()),
            (true, 443, "/otlp/v1/metrics")
        );
        let e = Endpoint::parse("http://[::1]:4318/v1/metrics").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((e.host.as_str(), e.path.as_str()), ("::1", "/v1/metrics"));
        assert_eq!(e.url(), "http://[::1]:4318/v1/metrics");
        for (bad, says) in [
            ("grpc://127.0.0.1:4317", "http or https"),
            ("127.0.0.1:4318", "for example http://"),
            ("http://127.0.0.1:4318/?x=1", "without a query"),
            ("file:///tmp/x", "http or https"),
        ] {
            let e = Endpoint::parse(bad).err().unwrap_or_default();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn a_snapshot_round_trips_through_protobuf_with_its_histogram() {
        let mut duration = DurationHistogram::default();
        duration.counts[2] = 4;
        duration.counts[DURATION_BOUNDS_S.len()] = 1;
        duration.sum_s = 61.0;
        let snapshot = Snapshot {
            unix_ns: 2_000,
            node: NodeHealth {
                id: "12D3KooW".into(),
                version: "0.1.0".into(),
                start_unix_ns: 1_000,
                ..NodeHealth::default()
            },
            runs: vec![RunMetrics {
                id: "r1".into(),
                phase: "complete".into(),
                executor: "constant-vus".into(),
                settled: true,
                start_unix_ns: 1_500,
                regions: vec![RegionMetrics {
                    region: "fra".into(),
                    requests: 5,
                    duration,
                    ..RegionMetrics::default()
                }],
            }],
        };
        let bytes = encode(&snapshot).encode_to_vec();
        let back =
            ExportMetricsServiceRequest::decode(bytes.as_slice()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, encode(&snapshot));
        let metrics = &back.resource_metrics[0].scope_metrics[0].metrics;
        let find = |name: &str| {
            metrics
                .iter()
                .find(|m| m.name == name)
                .and_then(|m| m.data.clone())
                .unwrap_or_else(|| panic!("no {name}"))
        };
        let metric::Data::Sum(reqs) = find("fusi_run_http_reqs") else {
            panic!("fusi_run_http_reqs is not a sum");
        };
        assert!(reqs.is_monotonic);
        assert_eq!(reqs.aggregation_temporality, CUMULATIVE);
        assert_eq!(
            reqs.data_points[0].value,
            Some(number_data_point::Value::AsDouble(5.0))
        );
        assert_eq!(reqs.data_points[0].start_time_unix_nano, 1_500);
        let metric::Data::Histogram(h) = find("fusi_run_http_req_duration") else {
            panic!("not a histogram");
        };
        let p = &h.data_points[0];
        assert_eq!(p.count, 5);
        assert_eq!(p.bucket_counts.len(), p.explicit_bounds.len() + 1);
        assert_eq!(p.bucket_counts.iter().sum::<u64>(), p.count);
        assert_eq!(p.sum, Some(61.0));
    }
}
