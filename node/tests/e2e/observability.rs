//! The node's metrics, read by the real tools: Debian's `prometheus`
//! scrapes a node's `--metrics-listen` during a run, and a collector in
//! this test receives the OTLP pushes of a node and of a local run; all
//! are checked against the run's report and the target's count.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fusi_testnet::{ExtraNode, Mesh, MeshConfig, TargetConfig};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{metric, number_data_point};
use prost::Message;
use serde_json::Value;

use super::runs::{hello, node_bin, run_id_of, wait_for};
use super::{fusi_to, serial, target, tempfile_path};

/// A loopback port free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port: {e}"))
}

/// Debian's `prometheus`, or `None` (and a loud note) where it is missing
/// and not required.
fn prometheus_binary() -> Option<PathBuf> {
    let found = ["/usr/bin/prometheus", "/usr/local/bin/prometheus"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var("FUSI_REQUIRE_PROMETHEUS").as_deref() != Ok("1"),
            "FUSI_REQUIRE_PROMETHEUS=1 but there is no prometheus binary: apt-get install prometheus"
        );
        eprintln!(
            "\n*** SKIPPED: no prometheus binary (apt-get install prometheus); the Prometheus \
             scrape test did not run ***\n"
        );
    }
    found
}

/// A Prometheus server in its own process group, killed with its group
/// when dropped, even when the test fails.
struct Prometheus {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Prometheus {
    /// Starts `bin` scraping `target` every second; it listens on loopback
    /// and talks to nothing else.
    fn start(bin: &Path, target: SocketAddr) -> Prometheus {
        use std::os::unix::process::CommandExt;
        let dir = tempfile_path("prometheus");
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\n\
                 scrape_configs:\n  - job_name: fusi\n    static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let port = free_port();
        let log =
            std::fs::File::create(dir.join("prometheus.log")).unwrap_or_else(|e| panic!("{e}"));
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let prometheus = Prometheus { child, port, dir };
        assert!(
            wait_for(Duration::from_secs(30), || {
                http_get(prometheus.port, "/-/ready").is_some_and(|(status, _)| status == 200)
            }),
            "prometheus is not ready after 30 s: {}",
            prometheus.log()
        );
        prometheus
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// The samples of an instant query: labels and value.
    fn query(&self, promql: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        let path = format!("/api/v1/query?query={}", percent_encode(promql));
        let Some((200, body)) = http_get(self.port, &path) else {
            return Vec::new();
        };
        let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        json["data"]["result"]
            .as_array()
            .map(|rows| {
                rows.iter()
                    .filter_map(|row| {
                        let labels = row["metric"]
                            .as_object()?
                            .iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned()))
                            .collect();
                        let value = row["value"][1].as_str()?.parse().ok()?;
                        Some((labels, value))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The value of a query that gives one sample.
    fn one(&self, promql: &str) -> Option<f64> {
        match self.query(promql).as_slice() {
            [(_, v)] => Some(*v),
            _ => None,
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            // Its own process group: the server and anything it started.
            // SAFETY: kill(2) with a negative pid signals that group only.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// `GET path` on a loopback port: the status and the body.
fn http_get(port: u16, path: &str) -> Option<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).ok()?;
    let end = bytes.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&bytes[..end]);
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, bytes[end + 4..].to_vec()))
}

/// A run's requests per region, from its report.
fn requests_by_region(report: &Value) -> BTreeMap<String, f64> {
    report["regions"]
        .as_object()
        .map(|regions| {
            regions
                .iter()
                .map(|(r, s)| (r.clone(), s["http"]["requests"].as_f64().unwrap_or(-1.0)))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_real_prometheus_scrapes_a_node_during_a_run_and_reads_back_what_the_report_says() {
    let Some(bin) = prometheus_binary() else {
        return;
    };
    let _serial = serial();
    // 30 ms added to every request: no request can be faster.
    let t = target(TargetConfig {
        latency: fusi_testnet::Latency::Fixed(Duration::from_millis(30)),
        ..TargetConfig::default()
    });
    let mut mesh =
        Mesh::start(MeshConfig::new(node_bin(), &[("fra", 1)])).expect("the testnet starts");
    let token = mesh.api_token().to_owned();
    // The node scraped is not the one the run is submitted to; it also
    // pushes to a collector that takes connections and never answers,
    // which must not matter.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let silent_port = silent.local_addr().map(|a| a.port()).unwrap_or(0);
    let metrics: SocketAddr = format!("127.0.0.1:{}", free_port())
        .parse()
        .unwrap_or_else(|e| panic!("{e}"));
    let mut scraped = ExtraNode::new("nrt");
    scraped.extra_args = vec![
        "--metrics-listen".into(),
        metrics.to_string(),
        "--otlp-endpoint".into(),
        format!("http://127.0.0.1:{silent_port}"),
        "--otlp-interval".into(),
        "1s".into(),
    ];
    let scraped = mesh.start_node(scraped).expect("the scraped node starts");
    mesh.wait_converged(Duration::from_secs(10))
        .expect("the mesh converges");
    let prometheus = Prometheus::start(&bin, metrics);
    assert!(
        wait_for(Duration::from_secs(20), || {
            prometheus.one("up{job=\"fusi\"}") == Some(1.0)
                && prometheus.one("fusi_node_members") == Some(1.0)
        }),
        "prometheus does not scrape the node: {}",
        prometheus.log()
    );

    let api = mesh.nodes()[0].api.to_string();
    let run = fusi_to(
        &token,
        &[
            "run",
            &hello(),
            "--vus",
            "4",
            "--duration",
            "5s",
            "--env",
            &format!("TARGET={}", t.url()),
            "--api",
            &api,
        ],
    );
    assert!(run.output.status.success(), "{}", run.stderr());
    let id = run_id_of(&run.stderr());
    let requests = run.summary()["http"]["requests"].as_f64().unwrap_or(-1.0);
    let iterations = run.summary()["iterations"]["completed"]
        .as_f64()
        .unwrap_or(-1.0);
    assert_eq!(t.stats().requests as f64, requests, "the target's count");
    let by_region = requests_by_region(run.report());
    assert_eq!(by_region.len(), 2, "{by_region:?}");

    let run_sel = format!("run=\"{id}\"");
    assert!(
        wait_for(Duration::from_secs(20), || {
            prometheus.one(&format!("fusi_run_settled{{{run_sel}}}")) == Some(1.0)
                && prometheus.one(&format!("sum(fusi_run_http_reqs_total{{{run_sel}}})"))
                    == Some(requests)
        }),
        "prometheus never read {requests} requests of run {id} from the node: {:?}\n{}",
        prometheus.query(&format!("fusi_run_http_reqs_total{{{run_sel}}}")),
        prometheus.log()
    );
    for (region, want) in &by_region {
        let sel = format!("{run_sel},region=\"{region}\"");
        assert_eq!(
            prometheus.one(&format!("fusi_run_http_reqs_total{{{sel}}}")),
            Some(*want),
            "{region}"
        );
        assert_eq!(
            prometheus.one(&format!(
                "fusi_run_http_req_duration_seconds_count{{{sel}}}"
            )),
            Some(*want),
            "{region}: one duration per request"
        );
        let buckets = prometheus.query(&format!(
            "fusi_run_http_req_duration_seconds_bucket{{{sel}}}"
        ));
        assert_eq!(buckets.len(), 16, "{region}: {buckets:?}");
        let bucket = |le: &str| {
            buckets
                .iter()
                .find(|(l, _)| l.get("le").map(String::as_str) == Some(le))
                .map(|(_, v)| *v)
        };
        assert_eq!(
            bucket("0.025"),
            Some(0.0),
            "{region}: faster than the target's 30 ms"
        );
        assert_eq!(bucket("+Inf"), Some(*want), "{region}");
    }
    assert_eq!(
        prometheus.one(&format!("sum(fusi_run_iterations_total{{{run_sel}}})")),
        Some(iterations)
    );
    assert_eq!(
        prometheus.one(&format!("sum(fusi_run_http_req_failed_total{{{run_sel}}})")),
        Some(0.0)
    );
    // Scraped while the run went: an earlier sample was below the end.
    let sel = format!("fusi_run_http_reqs_total{{{run_sel},region=\"nrt\"}}[2m]");
    let low = prometheus.one(&format!("min_over_time({sel})"));
    let samples = prometheus
        .one(&format!("count_over_time({sel})"))
        .unwrap_or(0.0);
    assert!(
        low.is_some_and(|low| low < by_region["nrt"]),
        "no scrape saw the run under way: min {low:?}, samples {samples}"
    );
    let started = Instant::now();
    let text = http_get(metrics.port(), "/metrics").map(|(_, body)| body.len());
    eprintln!(
        "prometheus read {requests} requests ({by_region:?}); nrt's counter in {samples} \
         samples, the lowest {low:?}; /metrics: {text:?} bytes in {:?}",
        started.elapsed()
    );
    assert_eq!(
        prometheus.one("fusi_node_runs{phase=\"complete\"}"),
        Some(1.0)
    );
    let stderr = mesh.stderr_tail(scraped).join("\n");
    assert!(
        stderr.contains("cannot push metrics"),
        "the silent collector is named in the log: {stderr}"
    );
    drop(prometheus);
    drop(silent);
}

/// What the in-test collector received.
#[derive(Default)]
struct Received {
    requests: Vec<ExportMetricsServiceRequest>,
    /// Request lines and content types that were not OTLP as expected.
    wrong: Vec<String>,
}

/// An OTLP/HTTP collector on loopback: takes `POST /v1/metrics`, decodes
/// it, answers 200, until `stop`.
fn collector(stop: Arc<AtomicBool>) -> (u16, Arc<Mutex<Received>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    listener
        .set_nonblocking(true)
        .unwrap_or_else(|e| panic!("{e}"));
    let received = Arc::new(Mutex::new(Received::default()));
    let out = received.clone();
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            let Ok((mut stream, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            };
            let _ = stream.set_nonblocking(false);
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let Some((head, body)) = read_request(&mut stream) else {
                continue;
            };
            let lower = head.to_ascii_lowercase();
            let mut got = out.lock().unwrap_or_else(|p| p.into_inner());
            if !head.starts_with("POST /v1/metrics HTTP/1.1\r\n")
                || !lower.contains("\r\ncontent-type: application/x-protobuf\r\n")
            {
                got.wrong.push(head.clone());
            }
            match ExportMetricsServiceRequest::decode(body.as_slice()) {
                Ok(request) => got.requests.push(request),
                Err(e) => got.wrong.push(format!("undecodable: {e}")),
            }
            drop(got);
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\n\
                  content-length: 0\r\nconnection: close\r\n\r\n",
            );
        }
    });
    (port, received)
}

/// One HTTP/1.1 request with a Content-Length body (at most 16 MiB).
fn read_request(stream: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 16 << 10];
    let end = loop {
        if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        let n = stream.read(&mut chunk).ok().filter(|n| *n > 0)?;
        bytes.extend_from_slice(&chunk[..n]);
        if bytes.len() > 64 << 10 {
            return None;
        }
    };
    let head = String::from_utf8_lossy(&bytes[..end + 4]).into_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .filter(|n| *n <= 16 << 20)?;
    let mut body = bytes[end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).ok().filter(|n| *n > 0)?;
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(length);
    Some((head, body))
}

/// A data point's attribute.
fn attr(attributes: &[KeyValue], key: &str) -> String {
    attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

/// From one request: the run's requests per region (a cumulative sum),
/// whether it is settled, and its duration histograms per region (count,
/// bucket counts, bounds).
type RunSeen = (
    BTreeMap<String, f64>,
    bool,
    BTreeMap<String, (u64, Vec<u64>, Vec<f64>)>,
);

fn run_in(request: &ExportMetricsServiceRequest, id: &str) -> RunSeen {
    let mut reqs = BTreeMap::new();
    let mut settled = false;
    let mut durations = BTreeMap::new();
    for m in request
        .resource_metrics
        .iter()
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
    {
        match (m.name.as_str(), &m.data) {
            ("fusi_run_http_reqs", Some(metric::Data::Sum(sum))) => {
                for p in sum
                    .data_points
                    .iter()
                    .filter(|p| attr(&p.attributes, "run") == id)
                {
                    if let Some(number_data_point::Value::AsDouble(v)) = p.value {
                        reqs.insert(attr(&p.attributes, "region"), v);
                    }
                }
            }
            ("fusi_run_settled", Some(metric::Data::Gauge(g))) => {
                settled = g.data_points.iter().any(|p| {
                    attr(&p.attributes, "run") == id
                        && p.value == Some(number_data_point::Value::AsDouble(1.0))
                });
            }
            ("fusi_run_http_req_duration", Some(metric::Data::Histogram(h))) => {
                for p in h
                    .data_points
                    .iter()
                    .filter(|p| attr(&p.attributes, "run") == id)
                {
                    durations.insert(
                        attr(&p.attributes, "region"),
                        (p.count, p.bucket_counts.clone(), p.explicit_bounds.clone()),
                    );
                }
            }
            _ => {}
        }
    }
    (reqs, settled, durations)
}

#[test]
fn a_node_pushes_its_runs_metrics_over_otlp_to_a_collector() {
    let _serial = serial();
    let t = target(TargetConfig::default());
    let stop = Arc::new(AtomicBool::new(false));
    let (port, received) = collector(stop.clone());
    let mut config = MeshConfig::new(node_bin(), &[("fra", 1)]);
    config.extra_args = vec![
        "--otlp-endpoint".into(),
        format!("http://127.0.0.1:{port}"),
        "--otlp-interval".into(),
        "1s".into(),
    ];
    let mesh = Mesh::start(config).expect("the testnet starts");
    let token = mesh.api_token().to_owned();
    let api = mesh.nodes()[0].api.to_string();
    // The node pushes; a run sent to it is told so rather than pushing twice.
    let refused = fusi_to(
        &token,
        &[
            "run",
            &hello(),
            "--otlp-endpoint",
            &format!("http://127.0.0.1:{port}"),
            "--api",
            &api,
        ],
    );
    assert!(!refused.output.status.success());
    assert!(
        refused.stderr().contains("fusi-node up --otlp-endpoint"),
        "{}",
        refused.stderr()
    );
    let run = fusi_to(
        &token,
        &[
            "run",
            &hello(),
            "--vus",
            "3",
            "--duration",
            "3s",
            "--env",
            &format!("TARGET={}", t.url()),
            "--api",
            &api,
        ],
    );
    assert!(run.output.status.success(), "{}", run.stderr());
    let id = run_id_of(&run.stderr());
    let requests = run.summary()["http"]["requests"].as_f64().unwrap_or(-1.0);
    assert_eq!(t.stats().requests as f64, requests, "the target's count");
    let settled = || {
        let got = received.lock().unwrap_or_else(|p| p.into_inner());
        got.requests
            .iter()
            .map(|r| run_in(r, &id))
            .find(|(_, settled, _)| *settled)
    };
    assert!(
        wait_for(Duration::from_secs(20), || settled().is_some()),
        "no push with run {id} settled"
    );
    stop.store(true, Ordering::Relaxed);
    let (reqs, _, durations) = settled().unwrap_or_else(|| panic!("settled"));
    assert_eq!(reqs.values().sum::<f64>(), requests, "{reqs:?}");
    let (count, buckets, bounds) = durations
        .get("fra")
        .cloned()
        .unwrap_or_else(|| panic!("no histogram for fra: {durations:?}"));
    assert_eq!(count as f64, requests, "one duration per request");
    assert_eq!(buckets.len(), bounds.len() + 1);
    assert_eq!(buckets.iter().sum::<u64>(), count);
    assert!(bounds.windows(2).all(|w| w[0] < w[1]), "{bounds:?}");
    let got = received.lock().unwrap_or_else(|p| p.into_inner());
    assert!(got.wrong.is_empty(), "{:?}", got.wrong);
    assert!(
        got.requests.len() >= 2,
        "pushed every second and at the end: {} pushes",
        got.requests.len()
    );
}

#[test]
fn a_local_run_pushes_its_final_numbers_over_otlp_before_the_command_exits() {
    let _serial = serial();
    let t = target(TargetConfig::default());
    let stop = Arc::new(AtomicBool::new(false));
    let (port, received) = collector(stop.clone());
    let run = super::fusi(&[
        "run",
        &hello(),
        "--vus",
        "2",
        "--duration",
        "2s",
        "--env",
        &format!("TARGET={}", t.url()),
        "--otlp-endpoint",
        &format!("http://127.0.0.1:{port}"),
        "--otlp-interval",
        "1s",
    ]);
    assert!(run.output.status.success(), "{}", run.stderr());
    let id = run.report()["run_id"].as_str().unwrap_or("").to_owned();
    let requests = run.summary()["http"]["requests"].as_f64().unwrap_or(-1.0);
    assert_eq!(t.stats().requests as f64, requests, "the target's count");
    // The command waited for its last push: it is here already (give the
    // collector's thread a moment to file it).
    let settled = || {
        let got = received.lock().unwrap_or_else(|p| p.into_inner());
        got.requests
            .iter()
            .map(|r| run_in(r, &id))
            .find(|(_, settled, _)| *settled)
    };
    assert!(
        wait_for(Duration::from_secs(2), || settled().is_some()),
        "no push of run {id} settled"
    );
    stop.store(true, Ordering::Relaxed);
    let (reqs, _, durations) = settled().unwrap_or_else(|| panic!("settled"));
    assert_eq!(reqs.get("local"), Some(&requests), "{reqs:?}");
    let count = durations.get("local").map(|d| d.0);
    assert_eq!(count, Some(requests as u64), "one duration per request");
    let got = received.lock().unwrap_or_else(|p| p.into_inner());
    assert!(got.wrong.is_empty(), "{:?}", got.wrong);
}
