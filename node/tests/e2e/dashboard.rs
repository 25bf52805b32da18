//! The live dashboard, in a real browser, on a real 3-node testnet: a run
//! submitted to the first node is watched from the third, whose address
//! `fusi-node dashboard` prints. Headless Chromium is driven over the
//! DevTools protocol on a pipe (`--remote-debugging-pipe`: fds 3 and 4, one
//! JSON message per NUL-terminated frame), so the test reads the page as it
//! changes and hears every console message and uncaught exception.
//!
//! Chromium is found as for the HTML report test; without it this test
//! skips loudly, unless `FUSI_REQUIRE_CHROMIUM=1`.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fusi_testnet::{Latency, Mesh, MeshConfig, TargetConfig};
use serde_json::{Value, json};

use super::html::{CHROMIUM_FLAGS, find_chromium};
use super::runs::{hello, node_bin, run_id_of, submit, wait_child};
use super::{fusi_to, kill_group, serial, target, without_clippy};

/// How long one DevTools call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A headless Chromium and the DevTools session of its one page.
struct Browser {
    child: Child,
    to: File,
    from: mpsc::Receiver<Value>,
    next: u64,
    session: String,
    /// Console errors, uncaught exceptions and failed loads, as text.
    errors: Vec<String>,
}

/// Two pipes: (our end, Chromium's end) for its fd 3 (it reads) and fd 4
/// (it writes).
fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe(2) writes.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: pipe2 succeeded, so both are open descriptors owned by no one else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

impl Browser {
    fn start(bin: &std::path::Path, dir: &std::path::Path) -> Browser {
        let (their_in, our_out) = pipe();
        let (our_in, their_out) = pipe();
        let (read_fd, write_fd) = (their_in.as_raw_fd(), their_out.as_raw_fd());
        let stderr = File::create(dir.join("chromium.stderr")).unwrap_or_else(|e| panic!("{e}"));
        let mut cmd = Command::new(bin);
        cmd.args(CHROMIUM_FLAGS)
            .args(["--remote-debugging-pipe", "--window-size=1200,1600"])
            .arg(format!("--user-data-dir={}", dir.join("profile").display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .process_group(0);
        // SAFETY: between fork and exec only dup2, which is async-signal-safe.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(read_fd, 3) < 0 || libc::dup2(write_fd, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        drop((their_in, their_out));
        let (tx, from) = mpsc::channel();
        let reader = BufReader::new(File::from(our_in));
        std::thread::spawn(move || {
            for frame in reader.split(0) {
                let Ok(frame) = frame else { return };
                if let Ok(value) = serde_json::from_slice::<Value>(&frame)
                    && tx.send(value).is_err()
                {
                    return;
                }
            }
        });
        let mut browser = Browser {
            child,
            to: File::from(our_out),
            from,
            next: 0,
            session: String::new(),
            errors: Vec::new(),
        };
        let target = browser.call(None, "Target.createTarget", json!({ "url": "about:blank" }));
        let target_id = target["targetId"].as_str().unwrap_or_default().to_owned();
        let attached = browser.call(
            None,
            "Target.attachToTarget",
            json!({ "targetId": target_id, "flatten": true }),
        );
        browser.session = attached["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {attached}"))
            .to_owned();
        for domain in ["Runtime.enable", "Log.enable", "Page.enable"] {
            browser.page(domain, json!({}));
        }
        browser
    }

    /// Sends one command and waits for its answer, keeping the errors the
    /// events on the way report.
    fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            message["sessionId"] = json!(s);
        }
        let mut bytes = serde_json::to_vec(&message).unwrap_or_default();
        bytes.push(0);
        self.to
            .write_all(&bytes)
            .unwrap_or_else(|e| panic!("cannot send {method} to chromium: {e}"));
        let deadline = Instant::now() + CALL_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let value = self
                .from
                .recv_timeout(left)
                .unwrap_or_else(|e| panic!("chromium did not answer {method}: {e}"));
            if value["id"].as_u64() == Some(id) {
                if let Some(error) = value.get("error") {
                    panic!("chromium refused {method}: {error}");
                }
                return value["result"].clone();
            }
            self.note(&value);
        }
    }

    fn page(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.call(Some(&session), method, params)
    }

    /// Keeps what an event says went wrong in the page.
    fn note(&mut self, event: &Value) {
        let params = &event["params"];
        match event["method"].as_str().unwrap_or_default() {
            "Runtime.exceptionThrown" => self
                .errors
                .push(format!("exception: {}", params["exceptionDetails"])),
            "Runtime.consoleAPICalled" if params["type"] == "error" => self
                .errors
                .push(format!("console.error: {}", params["args"])),
            "Log.entryAdded" if params["entry"]["level"] == "error" => {
                self.errors.push(format!("log: {}", params["entry"]))
            }
            _ => {}
        }
    }

    /// The value of a JavaScript expression in the page.
    fn eval(&mut self, expression: &str) -> Value {
        let result = self.page(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true }),
        );
        if let Some(e) = result.get("exceptionDetails") {
            panic!("{expression} threw: {e}");
        }
        result["result"]["value"].clone()
    }

    /// What the test reads off the page.
    fn probe(&mut self) -> Value {
        self.eval(PROBE)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        kill_group(self.child.id());
        let _ = self.child.wait();
    }
}

/// What the page shows, as one JSON value.
const PROBE: &str = r#"(function () {
  var q = function (s) { return document.querySelector(s); };
  if (!q('#dashboard') || !q('#conn')) return { state: 'not loaded yet', url: location.href };
  var v = function (id) { var e = document.getElementById(id); return e ? Number(e.getAttribute('data-value')) : null; };
  var paths = Array.prototype.map.call(document.querySelectorAll('svg.chart'), function (c) {
    return [c.getAttribute('data-chart'), Array.prototype.filter.call(c.querySelectorAll('path.series'), function (p) {
      return (p.getAttribute('d') || '').length > 0;
    }).length];
  });
  return {
    state: q('#dashboard').getAttribute('data-state'),
    updates: Number(q('#dashboard').getAttribute('data-updates') || 0),
    conn: q('#conn').textContent,
    members: v('mesh-members'),
    requests: v('live-requests'),
    run: q('#run-id').textContent,
    phase: q('#run-phase').textContent,
    report: q('#run-report').getAttribute('data-state'),
    completeness: (q('#completeness') || {}).className || '',
    member_rows: document.querySelectorAll('#members tbody tr').length,
    run_rows: document.querySelectorAll('#run-list tbody tr').length,
    errors: document.querySelectorAll('.fusi-error:not([hidden])').length,
    charts: paths,
    hash: location.hash
  };
})()"#;

#[test]
fn a_run_is_watched_live_from_another_node_written_as_junit_and_compared_with_a_slower_one() {
    let Some(bin) = find_chromium() else {
        assert!(
            std::env::var_os("FUSI_REQUIRE_CHROMIUM").is_none(),
            "FUSI_REQUIRE_CHROMIUM=1 but no chromium: install Debian's chromium package"
        );
        eprintln!(
            "\n*** SKIPPED a_run_is_watched_live_from_another_node_written_as_junit_and_compared_with_a_slower_one: \
             no chromium (install Debian's chromium package, or set FUSI_CHROMIUM) ***\n"
        );
        return;
    };
    let _serial = serial();
    let t = target(TargetConfig::default());
    let config = MeshConfig::new(node_bin(), &[("fra", 1), ("nrt", 1), ("ewr", 1)]);
    let mut mesh = Mesh::start(config).expect("the testnet starts");
    let token = mesh.api_token().to_owned();
    mesh.wait_converged(Duration::from_secs(10))
        .expect("the mesh converges");
    let nodes = mesh.nodes().to_vec();

    // The address, as a user gets it, from the third node.
    let mut cmd = Command::new(node_bin());
    without_clippy(&mut cmd);
    let printed = cmd
        .env("FUSI_API_TOKEN", &token)
        .args(["dashboard", "--api", &nodes[2].api.to_string()])
        .output()
        .unwrap_or_else(|e| panic!("cannot start fusi-node: {e}"));
    let stdout = String::from_utf8_lossy(&printed.stdout);
    assert!(
        printed.status.success(),
        "{}",
        String::from_utf8_lossy(&printed.stderr)
    );
    let url = stdout.trim();
    assert_eq!(
        url,
        format!("http://{}/#token={token}", nodes[2].api),
        "{stdout}"
    );

    let dir = std::env::temp_dir().join(format!("fusi-e2e-dashboard-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let mut browser = Browser::start(&bin, &dir);
    browser.page("Page.navigate", json!({ "url": url }));

    // The mesh shows before any run: three members, the two others listed.
    let started = Instant::now();
    let mut seen = browser.probe();
    while seen["members"] != 3 && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(250));
        seen = browser.probe();
    }
    assert_eq!(seen["members"], 3, "{seen}");
    assert_eq!(seen["member_rows"], 2, "{seen}");
    assert_eq!(seen["state"], "live", "{seen}");
    assert_eq!(seen["hash"], "", "the token left the address bar: {seen}");

    // A run submitted to the first node appears, and its requests grow
    // while it runs.
    let env = format!("TARGET={}", t.url());
    let hello = hello();
    let (mut child, id) = submit(
        nodes[0].api,
        &token,
        &[
            &hello,
            "--vus",
            "6",
            "--duration",
            "8s",
            "--env",
            &env,
            "--threshold",
            "http_req_duration: p(95)<1s",
        ],
    );
    let mut live = Vec::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(40) {
        seen = browser.probe();
        if seen["run"] == id.as_str() && seen["phase"] == "running" {
            let n = seen["requests"].as_f64().unwrap_or(0.0);
            if live.last() != Some(&n) {
                live.push(n);
            }
        }
        if live.len() >= 3 || seen["phase"] == "complete" {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(
        live.len() >= 2 && live.windows(2).all(|w| w[0] < w[1]),
        "the requests shown did not grow while the run went: {live:?}; last seen {seen}"
    );

    // Once it ends, the page shows the run's whole report, as the node
    // reports it.
    assert_eq!(wait_child(&mut child, Duration::from_secs(60)), Some(0));
    let report = super::runs::settled_report(nodes[2].api, &token, &id);
    let requests = report["summary"]["http"]["requests"].as_f64();
    assert_eq!(requests, Some(t.stats().requests as f64), "{report}");
    let started = Instant::now();
    loop {
        seen = browser.probe();
        let done = seen["phase"] == "complete"
            && seen["requests"].as_f64() == requests
            && seen["completeness"]
                .as_str()
                .is_some_and(|c| c.contains("complete") && !c.contains("partial"));
        if done || started.elapsed() > Duration::from_secs(20) {
            break;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(seen["phase"], "complete", "{seen}");
    assert_eq!(seen["requests"].as_f64(), requests, "{seen}");
    assert_eq!(seen["report"], "ok", "{seen}");
    assert_eq!(seen["errors"], 0, "{seen}");
    assert_eq!(seen["run_rows"], 1, "{seen}");
    let charts = seen["charts"].as_array().cloned().unwrap_or_default();
    for kind in ["node-rps", "vus", "failed", "rps", "latency", "region-p95"] {
        let drawn = charts
            .iter()
            .find(|c| c[0] == kind)
            .and_then(|c| c[1].as_u64())
            .unwrap_or(0);
        assert!(drawn > 0, "chart {kind} has no line: {seen}");
    }
    let node_lines = charts
        .iter()
        .find(|c| c[0] == "node-rps")
        .and_then(|c| c[1].as_u64());
    assert_eq!(node_lines, Some(3), "one line per node: {seen}");
    assert!(
        seen["updates"].as_u64().unwrap_or(0) >= 3,
        "the report came in fewer than 3 updates: {seen}"
    );
    eprintln!(
        "dashboard: requests seen growing {live:?}, {} report updates",
        seen["updates"]
    );
    // A last probe flushes the events still on the way.
    browser.probe();
    assert!(
        browser.errors.is_empty(),
        "the page logged errors: {:#?}",
        browser.errors
    );
    drop(browser);

    // The same run as JUnit, from the third node, and compared with a run
    // against a target 5 ms slower, which `compare` flags.
    let junit = dir.join("report.xml");
    let written = fusi_to(
        &token,
        &[
            "report",
            &id,
            "--api",
            &nodes[2].api.to_string(),
            "--out",
            junit.to_str().unwrap_or_default(),
        ],
    );
    assert!(written.output.status.success(), "{}", written.stderr());
    let xml = std::fs::read_to_string(&junit).unwrap_or_default();
    assert!(
        xml.starts_with("<?xml") && xml.contains("http_req_duration: p(95)&lt;1s"),
        "{xml}"
    );
    let slow = target(TargetConfig {
        latency: Latency::Fixed(Duration::from_millis(5)),
        ..TargetConfig::default()
    });
    let slower = fusi_to(
        &token,
        &[
            "run",
            &hello,
            "--vus",
            "6",
            "--duration",
            "3s",
            "--env",
            &format!("TARGET={}", slow.url()),
            "--api",
            &nodes[1].api.to_string(),
        ],
    );
    assert!(slower.output.status.success(), "{}", slower.stderr());
    let compared = fusi_to(
        &token,
        &[
            "compare",
            &id,
            &run_id_of(&slower.stderr()),
            "--fail-if-slower",
            "5%",
            "--api",
            &nodes[2].api.to_string(),
        ],
    );
    assert_eq!(
        compared.output.status.code(),
        Some(99),
        "{}",
        compared.stderr()
    );
    assert!(
        compared
            .stderr()
            .contains("error: B is slower than A beyond noise"),
        "{}",
        compared.stderr()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
