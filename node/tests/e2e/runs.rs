//! Runs through the mesh, end to end: real `fusi-node up` processes on
//! loopback, a real target, runs submitted with the CLI to one node and
//! read back from others; leaders and workers killed mid-run.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fusi_testnet::{ExtraNode, Mesh, MeshConfig, TargetConfig, get_json};
use serde_json::Value;

use super::{fusi_to, scenario, serial, target, without_clippy};

pub(super) fn node_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_fusi-node"))
}

pub(super) fn wait_for(timeout: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    ok()
}

pub(super) fn run_view(api: SocketAddr, token: &str, id: &str) -> Value {
    get_json(api, token, &format!("/v1/runs/{id}")).unwrap_or(Value::Null)
}

/// A finished run's report from the node at `api`, once that node holds
/// the shards of every node of the plan not lost (or after 20 s): shards go
/// to the run's leader while it runs, and reach every other node by
/// anti-entropy once it has ended.
pub(super) fn settled_report(api: SocketAddr, token: &str, id: &str) -> Value {
    let get = || get_json(api, token, &format!("/v1/runs/{id}/report")).unwrap_or(Value::Null);
    let settled = |r: &Value| {
        r["completeness"]["nodes_incomplete"]
            .as_array()
            .is_some_and(Vec::is_empty)
    };
    wait_for(Duration::from_secs(20), || settled(&get()));
    get()
}

/// A run's view from the node at `api` once that node holds the run's
/// finish (or after 15 s): while a run goes, only its leader and the node
/// next in line hold every node's start, and the others learn them from
/// the finish.
pub(super) fn ended_view(api: SocketAddr, token: &str, id: &str) -> Value {
    let ended =
        |v: &Value| ["complete", "stopped", "failed"].contains(&v["phase"].as_str().unwrap_or(""));
    wait_for(Duration::from_secs(15), || ended(&run_view(api, token, id)));
    run_view(api, token, id)
}

pub(super) fn phase(api: SocketAddr, token: &str, id: &str) -> String {
    run_view(api, token, id)["phase"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

pub(super) fn hello() -> String {
    scenario("hello").to_string_lossy().into_owned()
}

/// Starts `fusi-node run ... --api API`, with `token` as FUSI_API_TOKEN,
/// in the background and returns it with the run id it printed.
pub(super) fn submit(api: SocketAddr, token: &str, args: &[&str]) -> (Child, String) {
    let mut cmd = Command::new(node_bin());
    without_clippy(&mut cmd);
    cmd.env("FUSI_API_TOKEN", token)
        .arg("run")
        .args(args)
        .args(["--api", &api.to_string(), "--quiet"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start fusi-node: {e}"));
    let stderr = child.stderr.take().unwrap_or_else(|| panic!("no stderr"));
    let mut lines = BufReader::new(stderr).lines();
    let id = loop {
        match lines.next() {
            Some(Ok(line)) => {
                if let Some(rest) = line.strip_prefix("run ")
                    && let Some((id, _)) = rest.split_once(" submitted")
                {
                    break id.to_owned();
                }
            }
            _ => panic!("fusi-node run printed no run id"),
        }
    };
    // Keep draining stderr so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, id)
}

pub(super) fn run_id_of(stderr: &str) -> String {
    stderr
        .lines()
        .find_map(|l| {
            l.strip_prefix("run ")?
                .split_once(" submitted")
                .map(|(id, _)| id.to_owned())
        })
        .unwrap_or_else(|| panic!("no run id in {stderr}"))
}

pub(super) fn wait_child(child: &mut Child, timeout: Duration) -> Option<i32> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if let Ok(Some(status)) = child.try_wait() {
            return status.code();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    None
}

fn node_of(mesh: &Mesh, id: &str) -> usize {
    mesh.nodes()
        .iter()
        .position(|n| n.peer_id == id)
        .unwrap_or_else(|| panic!("no node {id}"))
}

fn vus_by_region(view: &Value) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = view["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| {
            (
                n["region"].as_str().unwrap_or("").to_owned(),
                n["vus"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn runs_split_exactly_start_together_and_report_from_any_node() {
    let _serial = serial();
    let t = target(TargetConfig::default());
    let env = format!("TARGET={}", t.url());
    let config = MeshConfig::new(node_bin(), &[("fra", 1), ("nrt", 1), ("ewr", 1)]);
    let mut mesh = Mesh::start(config).expect("the testnet starts");
    let token = mesh.api_token().to_owned();
    mesh.wait_converged(Duration::from_secs(10))
        .expect("the mesh converges");
    let nodes = mesh.nodes().to_vec();
    let apis: Vec<String> = nodes.iter().map(|n| n.api.to_string()).collect();

    // 7 VUs over 3 nodes, submitted to the first, reported by the third.
    let run = fusi_to(
        &token,
        &[
            "run",
            &hello(),
            "--vus",
            "7",
            "--duration",
            "2s",
            "--env",
            &env,
            "--api",
            &apis[0],
        ],
    );
    assert!(run.output.status.success(), "{}", run.stderr());
    let id = run_id_of(&run.stderr());
    let view = ended_view(nodes[2].api, &token, &id);
    assert_eq!(view["phase"], "complete", "{view}");
    let mut vus: Vec<u64> = vus_by_region(&view).iter().map(|(_, v)| *v).collect();
    vus.sort();
    assert_eq!(vus, vec![2, 2, 3], "{view}");
    // Every node's `fusi-node report`, asked at once, matches the CLI's:
    // one of the three is neither the leader nor next in line, and gets
    // the others' shards only after the run, by anti-entropy; the report
    // of a finished run waits for them.
    let cli_reqs = run.summary()["http"]["requests"].as_f64().unwrap_or(-1.0);
    for api in &apis {
        let r = fusi_to(&token, &["report", &id, "--api", api, "--format", "json"]);
        assert!(r.output.status.success(), "{}", r.stderr());
        let report: Value = serde_json::from_str(&r.stdout()).unwrap_or(Value::Null);
        assert_eq!(
            report["summary"]["http"]["requests"].as_f64(),
            Some(cli_reqs),
            "the report of {api}: {}",
            report["completeness"]
        );
    }
    assert_eq!(t.stats().requests as f64, cli_reqs);
    // The start skew: the median of this run and four more, since a node
    // of three can be scheduled late on a loaded 2-core machine.
    let mut skews = vec![view["start_skew_ms"].as_f64().unwrap_or(f64::MAX)];
    for _ in 0..4 {
        let more = fusi_to(
            &token,
            &[
                "run",
                &hello(),
                "--vus",
                "3",
                "--duration",
                "1s",
                "--env",
                &env,
                "--api",
                &apis[1],
            ],
        );
        assert!(more.output.status.success(), "{}", more.stderr());
        let id = run_id_of(&more.stderr());
        let v = ended_view(nodes[0].api, &token, &id);
        skews.push(v["start_skew_ms"].as_f64().unwrap_or(f64::MAX));
    }
    eprintln!(
        "start skews on loopback: {skews:?} ms, clock bound {}",
        view["clock_bound_ms"]
    );
    skews.sort_by(f64::total_cmp);
    assert!(skews[2] < 5.0, "start skews {skews:?} ms");
    let report = fusi_to(&token, &["report", &id, "--api", &apis[1]]);
    assert!(
        report.stdout().contains("3 took part"),
        "{}",
        report.stdout()
    );
    let listed = fusi_to(&token, &["runs", "--api", &apis[2]]);
    assert!(listed.stdout().contains(&id), "{}", listed.stdout());
    // `watch` writes the report to stdout, and only the report: its
    // progress goes to stderr, so `watch ID > report.txt` keeps the report.
    let watched = fusi_to(&token, &["watch", &id, "--api", &apis[2]]);
    assert!(watched.output.status.success(), "{}", watched.stderr());
    assert!(
        watched
            .stdout()
            .starts_with(&format!("\n  run {id}: complete"))
            && watched.stdout().contains("http_reqs"),
        "{}",
        watched.stdout()
    );
    assert!(
        !watched.stderr().contains("http_reqs"),
        "{}",
        watched.stderr()
    );

    // What failed on the nodes is said in the CLI's summary and in every
    // node's report, not only in each node's log.
    let dead = fusi_to(
        &token,
        &[
            "run",
            &hello(),
            "--vus",
            "3",
            "--duration",
            "1s",
            "--env",
            "TARGET=http://127.0.0.1:1",
            "--api",
            &apis[0],
        ],
    );
    assert!(dead.output.status.success(), "{}", dead.stderr());
    let said = "refused: GET http://127.0.0.1:1/hello: cannot connect to 127.0.0.1:1";
    assert!(dead.stdout().contains(said), "{}", dead.stdout());
    let dead_id = run_id_of(&dead.stderr());
    let texts = get_json(nodes[1].api, &token, &format!("/v1/runs/{dead_id}/report"))
        .map(|r| r["summary"]["first_failures"]["http:refused"].clone())
        .unwrap_or(Value::Null);
    assert!(
        texts.as_array().is_some_and(|t| !t.is_empty()
            && t.iter()
                .all(|t| t.as_str().is_some_and(|t| t.contains("127.0.0.1:1")))),
        "{texts}"
    );

    // Weights 33/33/34 over three regions.
    let run = fusi_to(
        &token,
        &[
            "run",
            &hello(),
            "--vus",
            "100",
            "--duration",
            "1s",
            "--env",
            &env,
            "--api",
            &apis[1],
            "--region",
            "fra=33,nrt=33,ewr=34",
        ],
    );
    assert!(run.output.status.success(), "{}", run.stderr());
    let id = run_id_of(&run.stderr());
    assert_eq!(
        vus_by_region(&run_view(nodes[0].api, &token, &id)),
        vec![("ewr".into(), 34), ("fra".into(), 33), ("nrt".into(), 33)]
    );

    // A weighted region with no node: a clear error.
    let run = fusi_to(
        &token,
        &[
            "run",
            &hello(),
            "--vus",
            "10",
            "--duration",
            "1s",
            "--env",
            &env,
            "--api",
            &apis[2],
            "--region",
            "fra=50,sin=50",
        ],
    );
    assert_eq!(run.output.status.code(), Some(1), "{}", run.stderr());
    assert!(
        run.stderr().contains("region sin") && run.stderr().contains("drop sin from --region"),
        "{}",
        run.stderr()
    );

    // Stop from another node: every node stops within a second.
    let (mut child, id) = submit(
        nodes[0].api,
        &token,
        &[&hello(), "--vus", "3", "--duration", "60s", "--env", &env],
    );
    assert!(wait_for(Duration::from_secs(10), || phase(
        nodes[1].api,
        &token,
        &id
    ) == "running"));
    let asked = Instant::now();
    let stop = fusi_to(&token, &["stop", &id, "--api", &apis[2]]);
    assert!(stop.output.status.success(), "{}", stop.stderr());
    assert!(
        wait_for(Duration::from_secs(5), || nodes
            .iter()
            .all(|n| phase(n.api, &token, &id) == "stopped")),
        "{:?}",
        nodes
            .iter()
            .map(|n| phase(n.api, &token, &id))
            .collect::<Vec<_>>()
    );
    let view = run_view(nodes[0].api, &token, &id);
    let shards: Vec<u64> = view["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n["shards"].as_u64())
        .collect();
    eprintln!("stopped everywhere {:?} after the stop", asked.elapsed());
    assert_eq!(shards.len(), 3, "every node said it was done: {view}");
    // The stop came about 1-2 s into a 60 s run: each node's share ended
    // within a second of it (shards are sealed every second).
    assert!(shards.iter().all(|s| *s <= 6), "{view}");
    assert_eq!(wait_child(&mut child, Duration::from_secs(10)), Some(1));
}

/// A report asked of a node a region away from the run's leader, as soon
/// as the leader holds the run complete, is the whole run's: that node
/// (neither the leader nor next in line, so it gets the others' shards only
/// after the run) hears the finish 300 ms later (the emulated latency), and
/// `report` waits for it and for the shards instead of printing a running
/// run's part.
#[test]
fn a_report_asked_a_region_away_right_after_the_run_waits_for_its_end() {
    let _serial = serial();
    let t = target(TargetConfig::default());
    let env = format!("TARGET={}", t.url());
    let mut config = MeshConfig::new(node_bin(), &[("fra", 1), ("nrt", 1), ("ewr", 1)]);
    config.latency = Some("fra-nrt=300ms,fra-ewr=300ms,nrt-ewr=300ms".into());
    let mut mesh = Mesh::start(config).expect("the testnet starts");
    let token = mesh.api_token().to_owned();
    mesh.wait_converged(Duration::from_secs(30))
        .expect("the mesh converges");
    let nodes = mesh.nodes().to_vec();
    let (mut child, id) = submit(
        nodes[0].api,
        &token,
        &[&hello(), "--vus", "3", "--duration", "1s", "--env", &env],
    );
    let ids: Vec<String> = nodes.iter().map(|n| n.peer_id.clone()).collect();
    let ranked = fusi_node::core::leader::ranking(&id, &ids);
    let (leader, far) = (node_of(&mesh, &ranked[0]), node_of(&mesh, &ranked[2]));
    assert!(wait_for(Duration::from_secs(30), || phase(
        nodes[leader].api,
        &token,
        &id
    ) == "complete"));
    let r = fusi_to(
        &token,
        &[
            "report",
            &id,
            "--api",
            &nodes[far].api.to_string(),
            "--format",
            "json",
        ],
    );
    assert!(r.output.status.success(), "{}", r.stderr());
    let report: Value = serde_json::from_str(&r.stdout()).unwrap_or(Value::Null);
    assert_eq!(
        report["completeness"]["nodes_incomplete"]
            .as_array()
            .map(Vec::len),
        Some(0),
        "{}",
        report["completeness"]
    );
    assert_eq!(wait_child(&mut child, Duration::from_secs(30)), Some(0));
}

/// The module comes down a tree per region: of three nodes of `nrt`, with
/// the proposer in `fra`, the first in the plan's order (by id) fetches it
/// from the proposer, and the other two from that one, which answers them
/// once its own fetch is done (they ask at about the time it does).
#[test]
fn the_module_comes_down_a_tree_each_region_fetching_it_once_from_the_proposer() {
    let _serial = serial();
    let t = target(TargetConfig::default());
    let env = format!("TARGET={}", t.url());
    let config = MeshConfig::new(node_bin(), &[("fra", 1), ("nrt", 3)]);
    let mut mesh = Mesh::start(config).expect("the testnet starts");
    let token = mesh.api_token().to_owned();
    mesh.wait_converged(Duration::from_secs(10))
        .expect("the mesh converges");
    let nodes = mesh.nodes().to_vec();
    let run = fusi_to(
        &token,
        &[
            "run",
            &hello(),
            "--vus",
            "4",
            "--duration",
            "1s",
            "--env",
            &env,
            "--api",
            &nodes[0].api.to_string(),
        ],
    );
    assert!(run.output.status.success(), "{}", run.stderr());
    let id = run_id_of(&run.stderr());
    let view = ended_view(nodes[1].api, &token, &id);
    assert_eq!(view["phase"], "complete", "{view}");
    // Whom each nrt node fetched the module from, by its log.
    let fetched_from = |i: usize| -> String {
        let log = mesh.stderr_tail(i).join("\n");
        log.lines()
            .find(|l| l.contains("the scenario module fetched"))
            .and_then(|l| l.split_whitespace().find_map(|w| w.strip_prefix("peer=")))
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("node {i} logged no fetch:\n{log}"))
    };
    let mut nrt: Vec<&fusi_testnet::MeshNode> =
        nodes.iter().filter(|n| n.region == "nrt").collect();
    nrt.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
    assert_eq!(
        fetched_from(nrt[0].index),
        nodes[0].peer_id,
        "the root asks the proposer"
    );
    for child in &nrt[1..] {
        assert_eq!(
            fetched_from(child.index),
            nrt[0].peer_id,
            "{} fetched from the proposer, not from the first node of its region",
            child.name
        );
    }
}

#[test]
fn start_skew_across_120_ms_of_emulated_latency_stays_within_the_clock_bounds() {
    let _serial = serial();
    let t = target(TargetConfig::default());
    let env = format!("TARGET={}", t.url());
    let mut config = MeshConfig::new(node_bin(), &[("fra", 2), ("nrt", 1)]);
    config.latency = Some("fra-nrt=120ms".into());
    let mut mesh = Mesh::start(config).expect("the testnet starts");
    let token = mesh.api_token().to_owned();
    mesh.wait_converged(Duration::from_secs(30))
        .expect("the mesh converges");
    let nodes = mesh.nodes().to_vec();
    // Wait until every node's clock estimates rest on 8 samples.
    assert!(wait_for(Duration::from_secs(20), || nodes.iter().all(
        |n| {
            get_json(n.api, &token, "/v1/peers")
                .map(|v| {
                    v["peers"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .all(|p| p["clock_samples"].as_u64().unwrap_or(0) >= 8)
                })
                .unwrap_or(false)
        }
    )));
    // Every node's bound on a node of the other region reflects the 120 ms,
    // the samples it took while the two did not know each other yet too.
    for n in &nodes {
        let peers = get_json(n.api, &token, "/v1/peers").expect("the peers answer");
        for p in peers["peers"].as_array().into_iter().flatten() {
            if p["region"].as_str() != Some(n.region.as_str()) {
                let bound = p["bound_ms"].as_f64().unwrap_or(0.0);
                assert!(bound > 50.0, "{} holds {p}", n.name);
            }
        }
    }
    let run = fusi_to(
        &token,
        &[
            "run",
            &hello(),
            "--vus",
            "3",
            "--duration",
            "1s",
            "--env",
            &env,
            "--api",
            &nodes[2].api.to_string(),
        ],
    );
    assert!(run.output.status.success(), "{}", run.stderr());
    let id = run_id_of(&run.stderr());
    let view = ended_view(nodes[0].api, &token, &id);
    let skew = view["start_skew_ms"].as_f64().unwrap_or(f64::MAX);
    let bound = view["clock_bound_ms"].as_f64().unwrap_or(0.0);
    eprintln!("start skew with 120 ms between regions: {skew} ms, clock bound {bound} ms: {view}");
    assert!(bound > 50.0, "the bounds reflect the latency: {view}");
    // Each start, in the leader's clock, is off T0 by less than its bound
    // (and the scheduling slack of a loaded machine: 5 ms).
    for n in view["nodes"].as_array().into_iter().flatten() {
        let off = n["start_offset_ms"].as_f64().unwrap_or(f64::MAX).abs();
        let b = n["bound_ms"].as_f64().unwrap_or(0.0);
        assert!(off <= b + 5.0, "{n}");
    }
    assert!(skew <= bound + 5.0, "skew {skew} ms, bound {bound} ms");
}

#[test]
fn killing_the_leader_or_a_worker_mid_run_leaves_a_short_run_that_accounts_for_it() {
    let _serial = serial();
    let t = target(TargetConfig::default());
    let env = format!("TARGET={}", t.url());
    let config = MeshConfig::new(node_bin(), &[("fra", 2), ("nrt", 2)]);
    let mut mesh = Mesh::start(config).expect("the testnet starts");
    let token = mesh.api_token().to_owned();
    mesh.wait_converged(Duration::from_secs(10))
        .expect("the mesh converges");
    let nodes = mesh.nodes().to_vec();
    let args = [
        hello(),
        "--vus".into(),
        "8".into(),
        "--duration".into(),
        "6s".into(),
        "--graceful-stop".into(),
        "1s".into(),
        // Nothing takes the lost share over here (tests/e2e/faults.rs has
        // the default, `redistribute`).
        "--on-loss".into(),
        "continue".into(),
        "--env".into(),
        env.clone(),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();

    for kill_leader in [true, false] {
        let alive: Vec<usize> = mesh
            .nodes()
            .iter()
            .filter(|n| n.alive)
            .map(|n| n.index)
            .collect();
        let (mut child, id) = submit(nodes[alive[0]].api, &token, &args);
        let watcher = nodes[alive[1]].api;
        assert!(wait_for(Duration::from_secs(10), || phase(
            watcher, &token, &id
        ) == "running"));
        std::thread::sleep(Duration::from_secs(2));
        let view = run_view(watcher, &token, &id);
        let leader = view["leader"].as_str().unwrap_or("").to_owned();
        let victim = if kill_leader {
            node_of(&mesh, &leader)
        } else {
            // A worker that is neither the leader nor the node the CLI
            // talks to.
            *alive
                .iter()
                .find(|i| **i != alive[0] && nodes[**i].peer_id != leader)
                .unwrap_or_else(|| panic!("no worker to kill"))
        };
        let watcher = nodes[*alive
            .iter()
            .find(|i| **i != victim && **i != alive[0])
            .unwrap_or(&alive[1])]
        .api;
        mesh.kill(victim).expect("kill");
        eprintln!(
            "killed {} (leader: {kill_leader}) in run {id}",
            nodes[victim].name
        );
        assert!(
            wait_for(Duration::from_secs(30), || phase(watcher, &token, &id)
                == "complete"),
            "{}",
            run_view(watcher, &token, &id)
        );
        let view = run_view(watcher, &token, &id);
        let states: Vec<(String, String)> = view["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|n| {
                (
                    n["id"].as_str().unwrap_or("").to_owned(),
                    n["state"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect();
        for (node, state) in &states {
            let expected = if *node == nodes[victim].peer_id {
                "lost"
            } else {
                "done"
            };
            assert_eq!(state, expected, "{view}");
        }
        if kill_leader {
            assert_ne!(view["leader"].as_str(), Some(leader.as_str()), "{view}");
            assert!(view["term"].as_u64().unwrap_or(0) > 0, "{view}");
        }
        // The report holds what the lost node measured before it died.
        let report = settled_report(watcher, &token, &id);
        assert_eq!(
            report["summary"]["completeness"]["nodes"].as_u64(),
            Some(states.len() as u64),
            "{report}"
        );
        // A node lost with its share left the run short of its plan: the
        // report says so, and the CLI exits with the short-load code.
        assert_eq!(report["outcome"], "short", "{report}");
        assert_eq!(report["load"]["short"], true, "{report}");
        let ratio = report["load"]["ratio"].as_f64().unwrap_or(1.0);
        assert!(ratio < 0.99 && ratio > 0.3, "{report}");
        let out = fusi_to(&token, &["report", &id, "--api", &watcher.to_string()]);
        assert!(out.stdout().contains("lost"), "{}", out.stdout());
        assert!(out.stdout().contains("SHORT"), "{}", out.stdout());
        if alive[0] != victim {
            assert_eq!(wait_child(&mut child, Duration::from_secs(20)), Some(97));
        } else {
            let _ = child.kill();
        }
    }

    // A node restarted keeps its runs and their shards.
    let survivor = mesh
        .nodes()
        .iter()
        .find(|n| n.alive)
        .map(|n| n.index)
        .unwrap_or(0);
    let before = fusi_to(
        &token,
        &["runs", "--api", &nodes[survivor].api.to_string(), "--json"],
    );
    mesh.stop(survivor).expect("a clean stop");
    mesh.restart(survivor).expect("restart");
    let api = mesh.nodes()[survivor].api;
    let after = get_json(api, &token, "/v1/runs").unwrap_or(Value::Null);
    let ids = |v: &Value| -> Vec<String> {
        v["runs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["id"].as_str().map(str::to_owned))
            .collect()
    };
    let before: Value = serde_json::from_str(&before.stdout()).unwrap_or(Value::Null);
    assert_eq!(ids(&before).len(), 2);
    assert_eq!(ids(&before), ids(&after));
    for id in ids(&after) {
        let r = get_json(api, &token, &format!("/v1/runs/{id}/report")).unwrap_or(Value::Null);
        assert!(
            r["summary"]["http"]["requests"].as_f64().unwrap_or(0.0) > 0.0,
            "{r}"
        );
        assert_eq!(r["outcome"], "short", "{r}");
    }
}

#[test]
fn a_node_refuses_runs_outside_its_allow_list_and_a_late_joiner_takes_no_part() {
    let _serial = serial();
    let t = target(TargetConfig::default());
    let env = format!("TARGET={}", t.url());
    let config = MeshConfig::new(node_bin(), &[("fra", 2)]);
    let mut mesh = Mesh::start(config).expect("the testnet starts");
    let token = mesh.api_token().to_owned();
    let mut strict = ExtraNode::new("fra");
    strict.extra_args = vec!["--allow-target".into(), "10.9.9.9".into()];
    let strict = mesh.start_node(strict).expect("a strict node starts");
    mesh.wait_converged(Duration::from_secs(10))
        .expect("the mesh converges");
    let nodes = mesh.nodes().to_vec();
    let (mut child, id) = submit(
        nodes[0].api,
        &token,
        &[&hello(), "--vus", "4", "--duration", "4s", "--env", &env],
    );
    assert!(wait_for(Duration::from_secs(10), || phase(
        nodes[1].api,
        &token,
        &id
    ) == "running"));
    let late = mesh
        .start_node(ExtraNode::new("fra"))
        .expect("a late node starts");
    assert_eq!(wait_child(&mut child, Duration::from_secs(30)), Some(0));
    let view = run_view(nodes[1].api, &token, &id);
    let strict_view = view["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|n| n["id"] == nodes[strict].peer_id.as_str())
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(strict_view["state"], "refused", "{view}");
    let reason = strict_view["refused"].as_str().unwrap_or("");
    assert!(reason.contains("--allow-target"), "{reason}");
    assert!(reason.contains("127.0.0.1"), "{reason}");
    let vus: u64 = view["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| n["vus"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(vus, 4, "the others took the strict node's share: {view}");
    let late_id = mesh.nodes()[late].peer_id.clone();
    assert!(
        !view["nodes"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|n| n["id"] == late_id.as_str()),
        "{view}"
    );
    assert_eq!(
        t.stats().by_status.get(&200).copied().unwrap_or(0),
        t.stats().requests
    );
    // The late node took no part, but it learns of the ended run from a
    // member, fetches its shards, and reports it as the others do.
    let late_api = mesh.nodes()[late].api;
    let json = |api: SocketAddr| {
        fusi_to(
            &token,
            &["report", &id, "--format", "json", "--api", &api.to_string()],
        )
        .stdout()
    };
    let mut theirs = String::new();
    let mut mine = String::new();
    assert!(
        wait_for(Duration::from_secs(60), || {
            theirs = json(nodes[0].api);
            mine = json(late_api);
            !mine.is_empty() && mine == theirs
        }),
        "the late node's report differs:\n{mine}\nfrom:\n{theirs}"
    );
    let report: Value = serde_json::from_str(&mine).unwrap_or(Value::Null);
    assert_eq!(report["completeness"]["complete"], true, "{report}");
    assert_eq!(
        report["summary"]["http"]["requests"].as_u64(),
        Some(t.stats().requests)
    );
}

#[test]
fn a_node_refuses_a_share_above_its_max_vus_and_the_run_fails_naming_it() {
    let _serial = serial();
    let t = target(TargetConfig::default());
    let env = format!("TARGET={}", t.url());
    let config = MeshConfig::new(node_bin(), &[("fra", 1)]);
    let mut mesh = Mesh::start(config).expect("the testnet starts");
    let mut small = ExtraNode::new("nrt");
    small.extra_args = vec!["--max-vus".into(), "2".into()];
    let small = mesh.start_node(small).expect("a small node starts");
    mesh.wait_converged(Duration::from_secs(10))
        .expect("the mesh converges");
    let nodes = mesh.nodes().to_vec();
    let token = mesh.api_token().to_owned();
    // Half of 8 VUs go to nrt, whose only node runs at most 2.
    let api = nodes[0].api.to_string();
    let run = fusi_to(
        &token,
        &[
            "run",
            &hello(),
            "--vus",
            "8",
            "--duration",
            "2s",
            "--region",
            "fra=50,nrt=50",
            "--env",
            &env,
            "--api",
            &api,
        ],
    );
    assert!(!run.output.status.success(), "{}", run.stderr());
    assert!(run.stderr().contains("--max-vus 2"), "{}", run.stderr());
    let id = run_id_of(&run.stderr());
    let view = run_view(nodes[0].api, &token, &id);
    assert_eq!(view["phase"], "failed", "{view}");
    let small_view = view["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|n| n["id"] == nodes[small].peer_id.as_str())
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(small_view["state"], "refused", "{view}");
    let reason = small_view["refused"].as_str().unwrap_or("");
    assert!(reason.contains("4 VUs"), "{reason}");
    assert!(reason.contains("--max-vus 2"), "{reason}");
    assert!(
        view["reason"]
            .as_str()
            .unwrap_or("")
            .contains("--max-vus 2"),
        "{view}"
    );
    assert_eq!(t.stats().requests, 0, "a refused plan sends nothing");
}

/// A closed model hands a lost node's VUs on: three nodes run 6 VUs of
/// `constant-vus` for 8 s, a worker is killed at 2 s, and the two others
/// each start its VUs' part besides their own. The report says whose share
/// moved where, the others' planned VU-seconds include what they took, and
/// the run delivers about all its VU-seconds.
#[test]
fn a_killed_worker_of_a_closed_model_hands_its_vus_to_the_others() {
    let _serial = serial();
    let t = target(TargetConfig::default());
    let env = format!("TARGET={}", t.url());
    let config = MeshConfig::new(node_bin(), &[("fra", 2), ("nrt", 1)]);
    let mut mesh = Mesh::start(config).expect("the testnet starts");
    let token = mesh.api_token().to_owned();
    mesh.wait_converged(Duration::from_secs(10))
        .expect("the mesh converges");
    let nodes = mesh.nodes().to_vec();
    let (mut child, id) = submit(
        nodes[0].api,
        &token,
        &[
            &hello(),
            "--vus",
            "6",
            "--duration",
            "8s",
            "--graceful-stop",
            "1s",
            "--env",
            &env,
        ],
    );
    let watcher = nodes[0].api;
    assert!(wait_for(Duration::from_secs(15), || phase(
        watcher, &token, &id
    ) == "running"));
    std::thread::sleep(Duration::from_secs(2));
    let leader = run_view(watcher, &token, &id)["leader"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let victim = nodes
        .iter()
        .find(|n| n.peer_id != leader && n.api != watcher)
        .map(|n| n.index)
        .unwrap_or_else(|| panic!("no worker to kill"));
    mesh.kill(victim).expect("kill");
    let code = wait_child(&mut child, Duration::from_secs(60));
    let report = settled_report(watcher, &token, &id);
    let moves: Vec<&Value> = report["moves"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["from"] == nodes[victim].peer_id.as_str())
        .collect();
    let ratio = report["load"]["ratio"].as_f64().unwrap_or(0.0);
    eprintln!(
        "killed {}: exit {code:?}; {} of {} VU-seconds ({ratio}); moves {}",
        nodes[victim].name, report["load"]["delivered"], report["load"]["planned"], report["moves"]
    );
    assert_eq!(moves.len(), 2, "{}", report["moves"]);
    for n in report["nodes"].as_array().into_iter().flatten() {
        let planned = n["planned"].as_f64().unwrap_or(0.0);
        if n["id"] == nodes[victim].peer_id.as_str() {
            assert!(
                planned < 16.0,
                "the lost node's plan stops at the move: {n}"
            );
        } else {
            assert!(planned > 16.0, "a survivor's plan includes its part: {n}");
        }
    }
    assert!(ratio >= 0.9, "{}", report["load"]);
    let expected = if report["outcome"] == "short" { 97 } else { 0 };
    assert_eq!(code, Some(expected), "{}", report["load"]);
}
