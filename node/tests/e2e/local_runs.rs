//! Reports you can get again: a run on this machine writes every `--out`
//! it is given, refuses one it could not write before it starts, and is kept
//! in the data directory, so that `fusi-node report` and `fusi-node runs`
//! show it later with no node running, the newest
//! [`KEEP_LOCAL_RUNS`](fusi_node::local::KEEP_LOCAL_RUNS) of them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use fusi_node::local::{KEEP_LOCAL_RUNS, LocalRun};
use fusi_node::store::runs::RunStore;
use fusi_testnet::TargetConfig;
use serde_json::Value;

use super::{scenario, serial, target, tempfile_path, without_clippy};

/// `fusi-node ARGS` with its data directory's default under `home` (so
/// that nothing lands in the user's), no API token, and nothing added.
fn fusi_in(home: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fusi-node"));
    cmd.args(args)
        .env("XDG_DATA_HOME", home)
        .env_remove("FUSI_API")
        .env_remove("FUSI_API_TOKEN");
    without_clippy(&mut cmd);
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot start fusi-node: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap_or_default()
}

/// A loopback address where nothing listens: no node answers there.
fn no_node() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap_or_else(|e| panic!("cannot bind a loopback port: {e}"));
    let addr = listener.local_addr().map(|a| a.to_string());
    drop(listener);
    addr.unwrap_or_else(|e| panic!("{e}"))
}

/// A fresh directory for one test.
fn fresh(name: &str) -> PathBuf {
    let dir = tempfile_path(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    dir
}

/// The run id the end of a local run names in its `report again` line.
fn report_again_id(stderr: &str) -> String {
    stderr
        .lines()
        .find_map(|l| l.strip_prefix("report again: fusi-node report "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no `report again` line in:\n{stderr}"))
        .to_owned()
}

#[test]
fn a_local_run_writes_every_out_and_is_reported_again_byte_for_byte_with_no_node() {
    let _g = serial();
    let t = target(TargetConfig::default());
    let dir = fresh("kept");
    let data = dir.join("data");
    let (json, html) = (dir.join("run.json"), dir.join("run.html"));
    let run = fusi_in(
        &dir.join("home"),
        &[
            "run",
            path(&scenario("hello")),
            "--local",
            "--vus",
            "2",
            "--duration",
            "2s",
            "--env",
            &format!("TARGET={}", t.url()),
            "--data-dir",
            path(&data),
            "--out",
            path(&json),
            "--out",
            path(&html),
        ],
    );
    let stderr = text(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    let json_bytes = std::fs::read(&json).unwrap_or_else(|e| panic!("{e}"));
    let report: Value = serde_json::from_slice(&json_bytes).unwrap_or_else(|e| panic!("{e}"));
    let id = report["run_id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(report_again_id(&stderr), id, "{stderr}");
    assert!(
        stderr.contains(&format!("--data-dir {}", data.display())),
        "the line names the data dir it was given: {stderr}"
    );
    assert_eq!(
        report["summary"]["http"]["requests"].as_u64(),
        Some(t.stats().requests)
    );
    let page = std::fs::read_to_string(&html).unwrap_or_else(|e| panic!("{e}"));
    assert!(page.starts_with("<!doctype html>"), "{page:.80}");
    assert!(page.contains(&format!("\"run_id\": \"{id}\"")));

    // With no node anywhere: the same JSON bytes, and the same page.
    let api = no_node();
    let (again_json, again_html) = (dir.join("again.json"), dir.join("again.html"));
    let again = fusi_in(
        &dir.join("home"),
        &[
            "report",
            &id,
            "--api",
            &api,
            "--data-dir",
            path(&data),
            "--out",
            path(&again_json),
            "--out",
            path(&again_html),
        ],
    );
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert!(
        std::fs::read(&again_json).ok() == Some(json_bytes),
        "the report again is not the run's own --out, byte for byte"
    );
    assert_eq!(std::fs::read_to_string(&again_html).ok(), Some(page));

    // The list comes from this machine when no node answers.
    let listed = fusi_in(
        &dir.join("home"),
        &["runs", "--api", &api, "--data-dir", path(&data)],
    );
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    let table = text(&listed.stdout);
    let row = table
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("{id} is not listed:\n{table}"));
    assert!(
        row.contains("complete") && row.contains("constant-vus"),
        "{row}"
    );
    assert!(
        text(&listed.stderr).contains("no fusi-node answers at"),
        "{}",
        text(&listed.stderr)
    );
    let one = fusi_in(
        &dir.join("home"),
        &["runs", &id, "--local", "--data-dir", path(&data)],
    );
    assert!(one.status.success(), "{}", text(&one.stderr));
    assert!(text(&one.stdout).contains("phase        complete"));

    // A run kept nowhere is an error that says where it looked.
    let missing = fusi_in(
        &dir.join("home"),
        &["report", "r0", "--api", &api, "--data-dir", path(&data)],
    );
    assert_eq!(missing.status.code(), Some(1));
    let e = text(&missing.stderr);
    assert!(
        e.contains("no run r0 is kept on this machine") && e.contains("local-runs"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_out_that_cannot_be_written_fails_before_the_run_starts() {
    let _g = serial();
    let t = target(TargetConfig::default());
    let dir = fresh("nodir");
    let home = dir.join("home");
    let bad = dir.join("nodir").join("x.json");
    let run = fusi_in(
        &home,
        &[
            "run",
            path(&scenario("hello")),
            "--local",
            "--vus",
            "1",
            "--duration",
            "5s",
            "--env",
            &format!("TARGET={}", t.url()),
            "--out",
            path(&dir.join("fine.json")),
            "--out",
            path(&bad),
        ],
    );
    assert_eq!(run.status.code(), Some(1));
    let e = text(&run.stderr);
    assert!(
        e.contains(&format!("cannot write the report to {}", bad.display()))
            && e.contains("does not exist")
            && e.contains("mkdir -p"),
        "{e}"
    );
    assert_eq!(t.stats().requests, 0, "no request was sent");
    assert!(!dir.join("fine.json").exists());
    assert!(
        !home.join("fusi-node/local-runs").exists(),
        "no run was started or kept"
    );
    let twice = fusi_in(
        &home,
        &[
            "run",
            path(&scenario("hello")),
            "--local",
            "--out",
            path(&dir.join("a.json")),
            "--out",
            path(&dir.join(".").join("a.json")),
        ],
    );
    assert_eq!(twice.status.code(), Some(1));
    assert!(
        text(&twice.stderr).contains("given twice"),
        "{}",
        text(&twice.stderr)
    );
    assert_eq!(t.stats().requests, 0);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_newest_local_runs_are_kept_and_the_oldest_go() {
    let _g = serial();
    let t = target(TargetConfig::default());
    let dir = fresh("bounded");
    let data = dir.join("data");
    // A full history, of runs older than the one to come.
    let store = RunStore::local(&data);
    for n in 0..KEEP_LOCAL_RUNS {
        let id = format!("rold{n:03}");
        let mut spec = fusi_node::core::spec::RunSpec::new(
            "ab".repeat(32),
            fusi_node::core::spec::Executor::SharedIterations {
                vus: 1,
                iterations: 1,
                max_duration: std::time::Duration::from_secs(1),
            },
        );
        spec.scenario = "old.wasm".into();
        let record = LocalRun {
            id: id.clone(),
            spec,
            outcome: "complete".into(),
            aborted_by: None,
            started_unix_ms: 1_000_000 + n as u64,
            ended_unix_ms: Some(1_001_000 + n as u64),
        };
        store
            .save_record(&id, &record)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let run = fusi_in(
        &dir.join("home"),
        &[
            "run",
            path(&scenario("hello")),
            "--local",
            "--env",
            &format!("TARGET={}", t.url()),
            "--data-dir",
            path(&data),
        ],
    );
    let stderr = text(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    let id = report_again_id(&stderr);
    let listed = fusi_in(
        &dir.join("home"),
        &["runs", "--local", "--json", "--data-dir", path(&data)],
    );
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    let view: Value = serde_json::from_slice(&listed.stdout).unwrap_or_else(|e| panic!("{e}"));
    let ids: Vec<&str> = view["runs"]
        .as_array()
        .map(|runs| runs.iter().filter_map(|r| r["id"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(ids.len(), KEEP_LOCAL_RUNS, "{ids:?}");
    assert_eq!(ids.first().copied(), Some(id.as_str()), "newest first");
    assert!(!ids.contains(&"rold000"), "the oldest went: {ids:?}");
    assert!(ids.contains(&"rold001"), "{ids:?}");
    assert!(!data.join("local-runs/rold000").exists());
    let _ = std::fs::remove_dir_all(&dir);
}
