//! Several scenarios in one run (issue 17, item 3, and its "done when"):
//! a run file with two `[scenarios.NAME]` tables, a ramping-arrival-rate
//! API flow that logs in as users of a CSV file in `unique` mode (a form
//! login through a 303, its session cookie checked on the next request)
//! and a constant-vus WebSocket chat that starts a second later, with
//! setup data for both, across a 3-node testnet.

use std::net::SocketAddr;
use std::time::Duration;

use fusi_testnet::{Mesh, MeshConfig, TargetConfig};
use serde_json::Value;

use super::runs::{node_bin, run_id_of, wait_for};
use super::{check, fusi_to, num, repo, scenario, serial, target};

fn report_text(api: SocketAddr, token: &str, id: &str) -> String {
    fusi_to(
        token,
        &["report", id, "--format", "json", "--api", &api.to_string()],
    )
    .stdout()
}

/// `scenarios/shop-mix/run.toml` over fra, nrt and ewr: no user row is
/// used twice across the nodes (the target counts each login), each
/// scenario's samples are its own (thresholds select them by the
/// `scenario` tag, and the report breaks down by scenario, its counts
/// equal to the target's), every node ran both scenarios, and every node
/// prints the byte-identical JSON report.
#[test]
fn two_scenarios_run_side_by_side_across_three_nodes_with_unique_users_and_one_report() {
    let _g = serial();
    // The run file names the module where the example scenarios build.
    let _ = scenario("shop_mix");
    let t = target(TargetConfig::default());
    let config = MeshConfig::new(node_bin(), &[("fra", 1), ("nrt", 1), ("ewr", 1)]);
    let mut mesh = Mesh::start(config).expect("the testnet starts");
    let token = mesh.api_token().to_owned();
    mesh.wait_converged(Duration::from_secs(20))
        .expect("the testnet converges");
    let apis: Vec<SocketAddr> = mesh.nodes().iter().map(|n| n.api).collect();
    let run_file = repo().join("scenarios/shop-mix/run.toml");
    let run = fusi_to(
        &token,
        &[
            "run",
            "--config",
            run_file.to_str().unwrap_or_default(),
            "--env",
            &format!("TARGET={}", t.url()),
            "--api",
            &apis[0].to_string(),
        ],
    );
    let id = run_id_of(&run.stderr());
    assert_eq!(
        run.output.status.code(),
        Some(0),
        "{}\n{}",
        run.stdout(),
        run.stderr()
    );
    let report = run.report();
    let stats = t.stats();

    // The API flow: each iteration one user of the CSV, and no user twice.
    let api = &report["scenarios"]["api"];
    assert_eq!(api["executor"], "ramping-arrival-rate", "{api}");
    assert_eq!(api["exec"], "api");
    let planned = num(api, &["load", "planned"]);
    assert_eq!(
        planned, 210.0,
        "10/s ramped to 40/s over 2 s, then 4 s at 40/s"
    );
    let api_iterations = num(api, &["summary", "iterations", "completed"]);
    assert!(
        api_iterations >= 0.99 * planned && api_iterations <= planned,
        "api ran {api_iterations} of {planned}"
    );
    let mut logins = stats.logins.clone();
    assert_eq!(
        logins.remove("setup-admin"),
        Some(1),
        "setup ran once for the whole run"
    );
    let twice: Vec<_> = logins.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        twice.is_empty(),
        "users logged in more than once: {twice:?}"
    );
    assert_eq!(
        logins.len() as f64,
        api_iterations,
        "one user per iteration"
    );
    assert_eq!(
        num(&report["data"][0], &["used"]),
        api_iterations,
        "{}",
        report["data"]
    );
    for name in [
        "api: setup data reached the VU",
        "api: the login redirects to the account page",
        "api: the session cookie names the user",
    ] {
        let c = check(&api["summary"], name);
        assert_eq!(
            (c["passes"].as_f64(), c["fails"].as_u64()),
            (Some(api_iterations), Some(0)),
            "{name}"
        );
    }
    // Each login is a 303 to the account page, then the page, then the
    // page again with the cookie: the redirect's hops are requests of
    // their own.
    assert_eq!(
        stats.by_status.get(&303).copied(),
        Some(api_iterations as u64 + 1),
        "{:?}",
        stats.by_status
    );
    assert_eq!(
        num(api, &["summary", "http", "requests"]),
        3.0 * api_iterations
    );
    assert!(api["summary"]["ws"].is_null(), "no socket in api: {api}");

    // The chat: its sessions and messages are the target's, and its
    // samples are apart from the API flow's.
    let chat = &report["scenarios"]["chat"];
    assert_eq!(chat["executor"], "constant-vus", "{chat}");
    assert_eq!(num(chat, &["start_s"]), 1.0);
    let sessions = num(chat, &["summary", "ws", "sessions"]);
    assert!(sessions > 0.0, "{chat}");
    assert_eq!(sessions, stats.ws_sessions as f64);
    assert_eq!(
        num(chat, &["summary", "ws", "msgs_sent"]),
        stats.ws_msgs_received as f64
    );
    assert_eq!(num(chat, &["summary", "http", "requests"]), 0.0);
    let lines = check(&chat["summary"], "chat: both lines came back");
    assert_eq!(lines["fails"].as_u64(), Some(0), "{lines}");
    assert!(
        num(chat, &["load", "ratio"]) >= 0.99,
        "the chat's VU-seconds: {}",
        chat["load"]
    );
    // Thresholds select a scenario by its tag.
    let thresholds = report["thresholds"].as_array().cloned().unwrap_or_default();
    assert_eq!(thresholds.len(), 3, "{thresholds:?}");
    assert!(
        thresholds.iter().all(|t| t["pass"] == true),
        "{thresholds:?}"
    );
    // Every node ran both scenarios on its segment.
    let nodes = report["nodes"].as_array().cloned().unwrap_or_default();
    assert_eq!(nodes.len(), 3);
    for n in &nodes {
        assert!(
            num(n, &["summary", "data", "users", "used"]) > 0.0
                && num(n, &["summary", "ws", "sessions"]) > 0.0,
            "{} ran both scenarios: {}",
            n["name"],
            n["summary"]
        );
    }
    let text = run.stdout();
    assert!(
        text.contains("scenarios:") && text.contains("api: ramping-arrival-rate"),
        "{text}"
    );

    eprintln!(
        "two scenarios over 3 nodes: api {api_iterations} of {planned} iterations, {} different users \
         each once; chat {sessions} sessions, {} messages sent, {}; nodes {:?}",
        logins.len(),
        num(chat, &["summary", "ws", "msgs_sent"]),
        chat["load"],
        nodes
            .iter()
            .map(|n| (
                n["name"].as_str().unwrap_or_default().to_owned(),
                num(n, &["summary", "data", "users", "used"]),
                num(n, &["summary", "ws", "sessions"])
            ))
            .collect::<Vec<_>>()
    );
    // One report, byte for byte, on every node.
    let mut reports = vec![String::new(); apis.len()];
    let same = wait_for(Duration::from_secs(30), || {
        for (r, api) in reports.iter_mut().zip(&apis) {
            *r = report_text(*api, &token, &id);
        }
        !reports[0].is_empty() && reports.iter().all(|r| *r == reports[0])
    });
    assert!(same, "the nodes' reports differ");
    let first: Value = serde_json::from_str(&reports[0]).unwrap_or(Value::Null);
    assert_eq!(first["scenarios"], report["scenarios"]);
    assert_eq!(first["completeness"]["complete"], true);
}

/// `--exec` picks the function of a run of one scenario; a function the
/// module does not export is refused before any VU starts, naming the
/// ones it does export, and so is a scenario table's.
#[test]
fn exec_runs_the_function_named_and_a_missing_one_is_named_before_the_run() {
    let _g = serial();
    let t = target(TargetConfig::default());
    let module = scenario("shop_mix");
    let module = module.to_str().unwrap_or_default();
    let env = format!("TARGET={}", t.url());
    let run = super::fusi(&[
        "run",
        module,
        "--exec",
        "chat",
        "--vus",
        "2",
        "--duration",
        "1s",
        "--env",
        &env,
    ]);
    assert_eq!(run.output.status.code(), Some(0), "{}", run.stderr());
    let report = run.report();
    let sessions = num(&report["summary"], &["ws", "sessions"]);
    assert!(sessions > 0.0, "{}", report["summary"]);
    assert_eq!(sessions, t.stats().ws_sessions as f64);
    assert_eq!(
        num(&report["summary"], &["http", "requests"]),
        2.0,
        "chat sends no HTTP request: only setup's login (a 303 and the account page), which counts on one machine"
    );
    assert!(
        report.get("scenarios").is_none(),
        "one unnamed scenario has no breakdown"
    );
    super::fails_with(
        &[
            "run",
            module,
            "--exec",
            "browse",
            "--vus",
            "1",
            "--duration",
            "1s",
            "--env",
            &env,
        ],
        1,
        "runs `browse`, which the module does not export (it exports: api, chat)",
    );
    let file = super::write_temp(
        "no-exec.toml",
        format!("scenario = {module:?}\n[scenarios.web]\nvus = 1\nduration = \"1s\"\n").as_bytes(),
    );
    super::fails_with(
        &[
            "run",
            "--config",
            file.to_str().unwrap_or_default(),
            "--env",
            &env,
        ],
        1,
        "scenario \"web\" runs `iteration`, which the module does not export",
    );
}
