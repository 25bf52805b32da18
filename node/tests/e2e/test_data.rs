//! Test data and setup data (issue 17, items 1 and 2): `--data
//! users=users.csv` ships a CSV file with the module; with `--data-mode
//! unique` every user logs in exactly once across a 3-node testnet, as the
//! real target counts it, and `setup` runs once for the whole run with what
//! it returned reaching every iteration on every node; on one machine, a set
//! that runs out stops the share and the run says so.

use std::time::Duration;

use fusi_testnet::{Mesh, MeshConfig, TargetConfig, get_json};
use serde_json::Value;

use super::runs::{node_bin, run_id_of, wait_for};
use super::{
    check, fails_with, fusi, fusi_to, num, repo, scenario, serial, target, tempfile_path,
    write_temp,
};

fn users_csv() -> String {
    repo()
        .join("scenarios/login-data/users.csv")
        .to_string_lossy()
        .into_owned()
}

/// 150 logins a second for 4 s over three nodes (fra, nrt, ewr), each
/// drawing users from the same 1,000-row CSV in `unique` mode: the target
/// saw 600 logins of 600 different users, the report says 600 rows were
/// drawn and none ran out, and every node's report is the same.
#[test]
fn unique_test_data_logs_in_each_user_once_across_three_nodes() {
    let _g = serial();
    let t = target(TargetConfig::default());
    let config = MeshConfig::new(node_bin(), &[("fra", 1), ("nrt", 1), ("ewr", 1)]);
    let mut mesh = Mesh::start(config).expect("the testnet starts");
    let token = mesh.api_token().to_owned();
    mesh.wait_converged(Duration::from_secs(20))
        .expect("the testnet converges");
    let apis: Vec<_> = mesh.nodes().iter().map(|n| n.api).collect();
    let run = fusi_to(
        &token,
        &[
            "run",
            scenario("login_data").to_str().unwrap_or_default(),
            "--data",
            &format!("users={}", users_csv()),
            "--data-mode",
            "unique",
            "--rate",
            "150/s",
            "--duration",
            "4s",
            "--vus",
            "5",
            "--env",
            &format!("TARGET={}", t.url()),
            "--api",
            &apis[0].to_string(),
        ],
    );
    let id = run_id_of(&run.stderr());
    assert_eq!(run.output.status.code(), Some(0), "{}", run.stderr());
    let report = run.report();
    // 150/s for 4 s is 600 iterations. On a loaded 2-core machine one may
    // find no free VU and be dropped, as k6 would count it; every one that
    // ran must have logged in its own user.
    let completed = num(report, &["summary", "iterations", "completed"]);
    let dropped = num(report, &["summary", "iterations", "dropped"]);
    assert_eq!(completed + dropped, 600.0, "{}", report["load"]);
    assert!(completed >= 594.0, "{}", report["load"]);
    let completed = completed as u64;
    let mut logins = t.stats().logins;
    assert_eq!(
        logins.remove("setup-admin"),
        Some(1),
        "setup ran once for the whole run"
    );
    let reached = check(&report["summary"], "setup data reached the VU");
    assert_eq!(
        (reached["passes"].as_u64(), reached["fails"].as_u64()),
        (Some(completed), Some(0)),
        "what setup returned reached every iteration on every node"
    );
    assert_eq!(
        logins.len() as u64,
        completed,
        "each iteration logged in a user of its own"
    );
    let twice: Vec<_> = logins.iter().filter(|(_, n)| **n != 1).collect();
    assert!(
        twice.is_empty(),
        "users logged in more than once: {twice:?}"
    );
    assert_eq!(
        report["data"],
        serde_json::json!([{
            "name": "users", "format": "csv", "mode": "unique", "exhausted": "stop",
            "rows": 1000, "used": completed, "ran_out": 0
        }])
    );
    let drew: Vec<f64> = report["nodes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| num(n, &["summary", "data", "users", "used"]))
        .collect();
    assert_eq!(drew.len(), 3, "{}", report["nodes"]);
    assert!(
        drew.iter().all(|&d| d > 100.0),
        "every node drew its part: {drew:?}"
    );
    let path = format!("/v1/runs/{id}/report");
    for api in &apis {
        assert!(
            wait_for(Duration::from_secs(20), || get_json(*api, &token, &path)
                .is_ok_and(
                    |r: Value| r["data"] == report["data"] && r["completeness"]["complete"] == true
                )),
            "node {api} reports other data use"
        );
    }
}

/// On one machine, 20 users in `unique` mode at 50 logins a second for
/// 2 s: the 20 users log in once each, then the share winds down; the run
/// is short (exit 97) and its report and summary say the data ran out. A
/// malformed file is refused before the run, naming its line.
#[test]
fn test_data_that_runs_out_stops_the_share_and_a_bad_file_names_its_line() {
    let _g = serial();
    let t = target(TargetConfig::default());
    let mut csv = String::from("user,password\n");
    for i in 0..20 {
        csv.push_str(&format!("few{i},pw\n"));
    }
    let few = write_temp("few-users.csv", csv.as_bytes());
    let run = fusi(&[
        "run",
        scenario("login_data").to_str().unwrap_or_default(),
        "--data",
        &format!("users={}", few.display()),
        "--data-mode",
        "unique",
        "--rate",
        "50/s",
        "--duration",
        "2s",
        "--env",
        &format!("TARGET={}", t.url()),
    ]);
    assert_eq!(run.output.status.code(), Some(97), "{}", run.stderr());
    let report = run.report();
    assert_eq!(report["outcome"], "short");
    assert_eq!(report["data"][0]["used"], 20);
    assert!(
        report["data"][0]["ran_out"]
            .as_u64()
            .is_some_and(|n| n >= 1),
        "{}",
        report["data"]
    );
    let mut logins = t.stats().logins;
    assert_eq!(logins.remove("setup-admin"), Some(1), "setup ran once");
    assert_eq!(logins.len(), 20);
    assert!(logins.values().all(|&n| n == 1), "{logins:?}");
    assert!(
        num(report, &["summary", "iterations", "completed"]) < 30.0,
        "no iteration started after the draw that ran out: {}",
        report["load"]
    );
    assert!(
        run.stdout().contains("RAN OUT") || run.stderr().contains("RAN OUT"),
        "the summary says the data ran out"
    );
    let bad = write_temp("bad-users.csv", b"user,password\nann,a\nbob\n");
    fails_with(
        &[
            "run",
            scenario("login_data").to_str().unwrap_or_default(),
            "--data",
            &format!("users={}", bad.display()),
            "--duration",
            "1s",
        ],
        1,
        "line 3 has 1 field, and the header 2",
    );
}

/// `--config run.toml` gives the run's flags from a file, its paths
/// relative to the file; a flag on the command line overrides the file's.
#[test]
fn a_run_file_gives_the_flags_and_the_command_line_overrides_them() {
    let _g = serial();
    let t = target(TargetConfig::default());
    let dir = tempfile_path("run-file");
    std::fs::create_dir_all(&dir).expect("make the run file's directory");
    std::fs::copy(users_csv(), dir.join("users.csv")).expect("copy the users");
    let file = dir.join("run.toml");
    let toml = format!(
        "scenario = {scenario:?}\nrate = \"40/s\"\nduration = \"30s\"\ndata = {{ users = \"users.csv\" }}\n\
         data_mode = \"unique\"\nthreshold = [\"checks: rate>0.99\"]\nenv = {{ TARGET = {url:?} }}\n",
        scenario = scenario("login_data").to_string_lossy(),
        url = t.url(),
    );
    std::fs::write(&file, toml).expect("write the run file");
    let run = fusi(&[
        "run",
        "--config",
        file.to_str().unwrap_or_default(),
        "--duration",
        "1s",
    ]);
    assert_eq!(run.output.status.code(), Some(0), "{}", run.stderr());
    let report = run.report();
    assert_eq!(
        num(report, &["summary", "iterations", "completed"]),
        40.0,
        "40/s for the command line's 1 s, not the file's 30 s"
    );
    assert_eq!(report["data"][0]["used"], 40);
    assert_eq!(
        report["thresholds"][0]["pass"], true,
        "{}",
        report["thresholds"]
    );
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "ratee = \"5/s\"\n").expect("write the bad file");
    fails_with(
        &["run", "--config", bad.to_str().unwrap_or_default()],
        2,
        "`ratee` is not a flag",
    );
}
