//! Sessions (issue 17, item 4): the session scenario logs in with a form
//! whose answer sets a cookie and redirects, reads a page that needs the
//! cookie, follows redirects, and sends credentials and a multipart body,
//! against the real target; a redirect to a host outside a node's
//! `--allow-target` fails that request and names the hop.

use std::time::Duration;

use fusi_testnet::{Mesh, MeshConfig, TargetConfig};

use super::runs::{node_bin, run_id_of};
use super::{check, fusi, fusi_to, num, scenario, serial, target};

/// The checks of every iteration, and those of every iteration but a VU's
/// first (the jar it kept from the one before).
const EVERY_ITERATION: [&str; 10] = [
    "login: lands on the account page",
    "login: the account page knows the user",
    "login: the jar holds the session cookie",
    "the cookie goes with later requests",
    "redirects: a chain of three is followed",
    "redirects: a discarded body is empty",
    "redirects: max_redirects(0) returns the redirect",
    "redirects: past the limit the last redirect comes with too_many_redirects",
    "auth: basic credentials are encoded",
    "multipart: sent with its boundary and a bearer token",
];
const LATER_ITERATIONS: [&str; 2] = [
    "the jar keeps the session across iterations",
    "clear_cookies empties the jar",
];

fn passes(summary: &serde_json::Value, name: &str) -> (Option<u64>, Option<u64>) {
    let c = check(summary, name);
    (c["passes"].as_u64(), c["fails"].as_u64())
}

#[test]
fn a_session_logs_in_with_a_form_keeps_its_cookie_and_counts_every_redirect_hop() {
    let _g = serial();
    let t = target(TargetConfig::default());
    let run = fusi(&[
        "run",
        scenario("session").to_str().unwrap_or_default(),
        "--executor",
        "per-vu-iterations",
        "--vus",
        "2",
        "--iterations",
        "3",
        "--env",
        &format!("TARGET={}", t.url()),
    ]);
    let s = run.summary();
    assert_eq!(num(s, &["iterations", "completed"]), 6.0, "{s}");
    for name in EVERY_ITERATION {
        assert_eq!(passes(s, name), (Some(6), Some(0)), "check {name}");
    }
    for name in LATER_ITERATIONS {
        assert_eq!(passes(s, name), (Some(4), Some(0)), "check {name}");
    }
    // 13 requests an iteration, each redirect hop one of them: the login
    // (303) and its account page, /cookies, three 302s and the end of the
    // chain, the redirect not followed, a chain cut at its limit of two
    // (three 302s, the last failed), and two echoes.
    let stats = t.stats();
    assert_eq!(stats.requests, 78, "the target saw every hop");
    assert_eq!(num(s, &["http", "requests"]), 78.0);
    assert_eq!(num(s, &["http", "by_status", "303"]), 6.0);
    assert_eq!(num(s, &["http", "by_status", "302"]), 42.0);
    assert_eq!(num(s, &["http", "by_status", "200"]), 30.0);
    assert_eq!(stats.by_status.get(&303), Some(&6));
    assert_eq!(stats.by_status.get(&302), Some(&42));
    assert_eq!(
        stats.by_status.get(&401),
        None,
        "the account page always got the session cookie"
    );
    assert_eq!(num(s, &["http", "failed"]), 6.0, "only the cut chains");
    assert_eq!(num(s, &["errors", "too_many_redirects"]), 6.0);
    let said = s["first_failures"]["http:too_many_redirects"].to_string();
    assert!(
        said.contains("stopped after 2 redirects") && said.contains("/redirect/3"),
        "{said}"
    );
}

#[test]
fn a_redirect_to_a_host_outside_allow_target_fails_that_request_and_names_the_hop() {
    let _g = serial();
    let t = target(TargetConfig::default());
    let mut config = MeshConfig::new(node_bin(), &[("fra", 1)]);
    config.extra_args = vec!["--allow-target".into(), "127.0.0.1".into()];
    let mut mesh = Mesh::start(config).expect("the testnet starts");
    let token = mesh.api_token().to_owned();
    mesh.wait_converged(Duration::from_secs(10))
        .expect("the node is up");
    let api = mesh.nodes()[0].api.to_string();
    // OFF_LIST is no URL, so the run declares only the target, which the
    // node allows; the target then redirects off the list.
    let run = fusi_to(
        &token,
        &[
            "run",
            scenario("session").to_str().unwrap_or_default(),
            "--executor",
            "per-vu-iterations",
            "--vus",
            "1",
            "--iterations",
            "2",
            "--env",
            &format!("TARGET={}", t.url()),
            "--env",
            "OFF_LIST=127.0.0.9:9",
            "--api",
            &api,
        ],
    );
    let s = run.summary();
    let _ = run_id_of(&run.stderr());
    assert_eq!(
        passes(s, "a redirect off the allow list fails and names the hop"),
        (Some(2), Some(0)),
        "{s}"
    );
    assert_eq!(num(s, &["errors", "connect"]), 2.0, "{s}");
    // The redirect was answered and counted; its hop never left the node.
    assert_eq!(t.stats().requests, 2 * 14);
    assert_eq!(num(s, &["http", "requests"]), 2.0 * 15.0);
    assert_eq!(num(s, &["http", "by_status", "0"]), 2.0);
    let said = s["first_failures"]["http:connect"].to_string();
    assert!(
        said.contains("redirect 1 from")
            && said.contains("127.0.0.9:9")
            && said.contains("--allow-target"),
        "{said}"
    );
}
