//! WebSocket (issue 17, item 5): the ws-chat scenario talks in a room of
//! the real target, whose counts of messages must match the report's; a
//! socket to a host outside a node's `--allow-target` is refused before
//! any traffic; a message over the 1 MiB limit fails its socket, not the
//! node.

use std::time::Duration;

use fusi_testnet::{Mesh, MeshConfig, TargetConfig};

use super::runs::{node_bin, run_id_of};
use super::{check, fusi, fusi_to, num, scenario, serial, target};

fn passes(summary: &serde_json::Value, name: &str) -> (Option<u64>, Option<u64>) {
    let c = check(summary, name);
    (c["passes"].as_u64(), c["fails"].as_u64())
}

#[test]
fn a_chat_room_delivers_every_line_and_the_target_counts_what_the_report_says() {
    let _g = serial();
    let t = target(TargetConfig::default());
    let run = fusi(&[
        "run",
        scenario("ws_chat").to_str().unwrap_or_default(),
        "--executor",
        "per-vu-iterations",
        "--vus",
        "3",
        "--iterations",
        "4",
        "--env",
        &format!("TARGET={}", t.url()),
    ]);
    let s = run.summary();
    assert_eq!(num(s, &["iterations", "completed"]), 12.0, "{s}");
    assert_eq!(passes(s, "joined the room"), (Some(12), Some(0)));
    assert_eq!(passes(s, "every line came back"), (Some(12), Some(0)));
    let stats = t.stats();
    let ws = &s["ws"];
    assert_eq!(num(ws, &["sessions"]), 12.0);
    assert_eq!(stats.ws_sessions, 12);
    // Three lines an iteration, each read by the target once.
    assert_eq!(num(ws, &["msgs_sent"]), 36.0);
    assert_eq!(stats.ws_msgs_received, 36);
    // The room sends each line to everyone in it at that moment: at least
    // its sender, so the VUs got at least their own 36; every message
    // the target wrote was read before its close frame.
    let received = num(ws, &["msgs_received"]);
    assert!(received >= 36.0, "{ws}");
    assert_eq!(
        received, stats.ws_msgs_sent as f64,
        "the report's ws_msgs_received is what the target sent"
    );
    for trend in ["connecting", "session_duration"] {
        assert_eq!(num(ws, &[trend, "count"]), 12.0, "{trend}: {ws}");
        assert!(num(ws, &[trend, "max"]) > 0.0, "{trend}: {ws}");
    }
    assert!(
        num(ws, &["session_duration", "p50"]) >= num(ws, &["connecting", "p50"]),
        "{ws}"
    );
    assert!(s["errors"].as_object().is_none_or(|e| e.is_empty()), "{s}");
    assert_eq!(stats.requests, 0, "no HTTP request, only upgrades");
    assert!(num(s, &["http", "data_sent"]) > 0.0 && num(s, &["http", "data_received"]) > 0.0);
    let text = run.stdout();
    assert!(
        text.contains("ws_sessions") && text.contains("ws_msgs_received"),
        "{text}"
    );

    // wss:// through the TLS target, on the run's TLS settings.
    let tls = target(TargetConfig {
        tls: true,
        ..TargetConfig::default()
    });
    let run = fusi(&[
        "run",
        scenario("ws_chat").to_str().unwrap_or_default(),
        "--iterations",
        "2",
        "--insecure-skip-tls-verify",
        "--env",
        &format!("TARGET={}", tls.url()),
    ]);
    let s = run.summary();
    assert_eq!(passes(s, "every line came back"), (Some(2), Some(0)), "{s}");
    assert_eq!(tls.stats().ws_msgs_received, 6);
}

#[test]
fn a_message_over_the_limit_fails_its_socket_and_one_within_it_arrives() {
    let _g = serial();
    let t = target(TargetConfig::default());
    let run = |bytes: &str| {
        fusi(&[
            "run",
            scenario("ws_chat").to_str().unwrap_or_default(),
            "--iterations",
            "2",
            "--env",
            &format!("TARGET={}", t.url()),
            "--env",
            &format!("BIG={bytes}"),
        ])
    };
    let within = run(&(1 << 20).to_string());
    let s = within.summary();
    assert_eq!(
        passes(s, "a message within the limit arrives whole"),
        (Some(2), Some(0)),
        "{s}"
    );
    let over = run(&((1 << 20) + 1).to_string());
    let s = over.summary();
    assert_eq!(
        passes(s, "a message over the limit fails the socket and says so"),
        (Some(2), Some(0)),
        "{s}"
    );
    assert_eq!(num(s, &["errors", "protocol"]), 2.0, "{s}");
    assert_eq!(num(s, &["iterations", "completed"]), 2.0);
    let said = s["first_failures"]["ws:protocol"].to_string();
    assert!(said.contains("1048576 allowed"), "{said}");
}

#[test]
fn a_websocket_outside_allow_target_is_refused_before_any_traffic() {
    let _g = serial();
    let t = target(TargetConfig::default());
    let mut config = MeshConfig::new(node_bin(), &[("fra", 1)]);
    config.extra_args = vec!["--allow-target".into(), "127.0.0.2".into()];
    let mut mesh = Mesh::start(config).expect("the testnet starts");
    let token = mesh.api_token().to_owned();
    mesh.wait_converged(Duration::from_secs(10))
        .expect("the node is up");
    let api = mesh.nodes()[0].api.to_string();
    // The run declares 127.0.0.2, which the node allows; the scenario
    // then opens its socket to the target on 127.0.0.1, which it does not.
    let run = fusi_to(
        &token,
        &[
            "run",
            scenario("ws_chat").to_str().unwrap_or_default(),
            "--executor",
            "per-vu-iterations",
            "--vus",
            "1",
            "--iterations",
            "2",
            "--target",
            "127.0.0.2",
            "--env",
            &format!("TARGET={}", t.url()),
            "--api",
            &api,
        ],
    );
    let s = run.summary();
    let _ = run_id_of(&run.stderr());
    assert_eq!(passes(s, "joined the room"), (Some(0), Some(2)), "{s}");
    assert_eq!(num(s, &["errors", "connect"]), 2.0, "{s}");
    assert_eq!(num(s, &["iterations", "completed"]), 2.0, "no trap: {s}");
    assert!(s["ws"].is_null(), "no socket opened: {s}");
    let said = s["first_failures"]["ws:connect"].to_string();
    assert!(
        said.contains("ws://127.0.0.1") && said.contains("--allow-target"),
        "{said}"
    );
    let stats = t.stats();
    assert_eq!(
        (stats.ws_sessions, stats.connections, stats.requests),
        (0, 0, 0),
        "the target saw nothing"
    );
}
