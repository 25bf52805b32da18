//! Reports and thresholds across a mesh, end to end: every node prints the
//! same report, thresholds decide the exit status, abortOnFail stops a run
//! everywhere, and a node cut off by a partition catches up once it heals.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use fusi_testnet::{Mesh, MeshConfig, TargetConfig};
use serde_json::Value;

use super::runs::{hello, node_bin, phase, run_id_of, submit, wait_child, wait_for};
use super::{fusi_to, serial, target};

/// `fusi-node report RUN --format json` on the node at `api`: its bytes.
fn report_json(api: SocketAddr, token: &str, id: &str) -> String {
    fusi_to(
        token,
        &["report", id, "--format", "json", "--api", &api.to_string()],
    )
    .stdout()
}

fn complete(json: &str) -> bool {
    serde_json::from_str::<Value>(json).is_ok_and(|r| r["completeness"]["complete"] == true)
}

#[test]
fn every_node_prints_the_same_report_and_thresholds_decide_the_exit() {
    let _serial = serial();
    let t = target(TargetConfig::default());
    let env = format!("TARGET={}", t.url());
    let config = MeshConfig::new(node_bin(), &[("fra", 2), ("nrt", 1)]);
    let mut mesh = Mesh::start(config).expect("the testnet starts");
    let token = mesh.api_token().to_owned();
    mesh.wait_converged(Duration::from_secs(10))
        .expect("the mesh converges");
    let apis: Vec<SocketAddr> = mesh.nodes().iter().map(|n| n.api).collect();
    let api0 = apis[0].to_string();

    // Passing thresholds, one of them per region: exit 0.
    let run = fusi_to(
        &token,
        &[
            "run",
            &hello(),
            "--vus",
            "6",
            "--duration",
            "3s",
            "--env",
            &env,
            "--api",
            &api0,
            "--threshold",
            "http_req_duration: p(95)<10s",
            "--threshold",
            "http_req_duration{region:nrt}: p(99)<10s",
            "--threshold",
            "http_req_failed: rate<0.01",
        ],
    );
    assert_eq!(run.output.status.code(), Some(0), "{}", run.stderr());
    assert!(
        run.stdout().contains("thresholds: 3 of 3 passed"),
        "{}",
        run.stdout()
    );
    let id = run_id_of(&run.stderr());
    // Every node converges to the same shards, and then prints the same bytes.
    let mut reports = Vec::new();
    for api in &apis {
        let mut json = String::new();
        assert!(
            wait_for(Duration::from_secs(20), || {
                json = report_json(*api, &token, &id);
                complete(&json)
            }),
            "the report on {api} is not complete: {json}"
        );
        reports.push(json);
    }
    assert_eq!(reports[0], reports[1], "nodes 1 and 2 differ");
    assert_eq!(reports[0], reports[2], "nodes 1 and 3 differ");
    let report: Value = serde_json::from_str(&reports[0]).unwrap_or(Value::Null);
    assert_eq!(
        report["summary"]["http"]["requests"].as_u64(),
        Some(t.stats().requests),
        "the merged report counts what the target served"
    );
    let fra = report["regions"]["fra"]["http"]["requests"]
        .as_u64()
        .unwrap_or(0);
    let nrt = report["regions"]["nrt"]["http"]["requests"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        fra > 0 && nrt > 0,
        "per-region requests: fra {fra}, nrt {nrt}"
    );
    assert_eq!(fra + nrt, t.stats().requests);
    assert_eq!(report["nodes"].as_array().map(Vec::len), Some(3));
    // Every node's shards said how busy its CPUs were, and every node
    // merged the others' into the same report.
    for node in report["nodes"].as_array().into_iter().flatten() {
        let cpu = &node["cpu"];
        assert!(
            cpu["intervals"].as_u64().is_some_and(|n| n >= 1)
                && cpu["max"]
                    .as_f64()
                    .is_some_and(|m| (0.0..=1.0).contains(&m)),
            "{node}"
        );
    }
    assert!(
        report["thresholds"]
            .as_array()
            .is_some_and(|ts| ts.len() == 3 && ts.iter().all(|t| t["pass"] == true)),
        "{}",
        report["thresholds"]
    );
    let csv = fusi_to(
        &token,
        &[
            "report",
            &id,
            "--format",
            "csv",
            "--api",
            &apis[2].to_string(),
        ],
    )
    .stdout();
    assert!(csv.lines().any(|l| l.starts_with("region:nrt,")), "{csv}");
    let text = fusi_to(&token, &["report", &id, "--api", &apis[1].to_string()]).stdout();
    assert!(text.contains("(complete)"), "{text}");

    // A failing threshold: exit 99, as k6.
    let run = fusi_to(
        &token,
        &[
            "run",
            &hello(),
            "--vus",
            "2",
            "--duration",
            "1s",
            "--env",
            &env,
            "--api",
            &api0,
            "--threshold",
            "http_req_duration: p(95)<0.001ms",
        ],
    );
    assert_eq!(run.output.status.code(), Some(99), "{}", run.stderr());
    assert!(
        run.stderr().contains("thresholds failed"),
        "{}",
        run.stderr()
    );

    // abortOnFail: a 60 s run whose threshold fails at once stops everywhere
    // within seconds, and exits 99.
    let started = Instant::now();
    let (mut child, id) = submit(
        apis[1],
        &token,
        &[
            &hello(),
            "--vus",
            "3",
            "--duration",
            "60s",
            "--env",
            &env,
            "--threshold",
            "http_reqs: count<10 abortOnFail",
        ],
    );
    assert_eq!(wait_child(&mut child, Duration::from_secs(40)), Some(99));
    let took = started.elapsed();
    assert!(took < Duration::from_secs(30), "the abort took {took:?}");
    for api in &apis {
        assert!(
            wait_for(Duration::from_secs(10), || phase(*api, &token, &id)
                == "stopped"),
            "run {id} is {} on {api}",
            phase(*api, &token, &id)
        );
    }
    // Every node's report, and the run's status, say which threshold did it.
    for api in &apis {
        let report: Value =
            serde_json::from_str(&report_json(*api, &token, &id)).unwrap_or(Value::Null);
        assert_eq!(
            report["aborted_by"], "http_reqs: count<10 abortOnFail",
            "on {api}"
        );
    }
    let reason = super::runs::run_view(apis[2], &token, &id)["reason"].to_string();
    assert!(reason.contains("abortOnFail"), "{reason}");
    eprintln!("abortOnFail stopped a 60 s run on 3 nodes in {took:?}");
}

#[test]
fn a_node_cut_off_by_a_partition_catches_up_once_it_heals() {
    let _serial = serial();
    let t = target(TargetConfig::default());
    let env = format!("TARGET={}", t.url());
    let dir = std::env::temp_dir().join(format!("fusi-e2e-partition-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let cut = dir.join("cut");
    let _ = std::fs::remove_file(&cut);
    let mut config = MeshConfig::new(node_bin(), &[("fra", 2), ("ewr", 1)]);
    config.extra_args = vec![
        "--emulate-partition-file".into(),
        cut.to_string_lossy().into_owned(),
    ];
    let mut mesh = Mesh::start(config).expect("the testnet starts");
    let token = mesh.api_token().to_owned();
    mesh.wait_converged(Duration::from_secs(10))
        .expect("the mesh converges");
    let apis: Vec<SocketAddr> = mesh.nodes().iter().map(|n| n.api).collect();
    let (mut child, id) = submit(
        apis[0],
        &token,
        &[
            &hello(),
            "--vus",
            "6",
            "--duration",
            "10s",
            // The cut-off node keeps its share (with the default,
            // `redistribute`, it fences itself and the others take it:
            // tests/e2e/faults.rs).
            "--on-loss",
            "continue",
            "--env",
            &env,
        ],
    );
    assert!(
        wait_for(Duration::from_secs(15), || phase(apis[2], &token, &id)
            == "running"),
        "the run does not start on ewr-1"
    );
    // Cut ewr off for 5 s in the middle of the run, then heal.
    std::thread::sleep(Duration::from_secs(2));
    std::fs::write(&cut, "ewr").unwrap_or_else(|e| panic!("{e}"));
    std::thread::sleep(Duration::from_secs(5));
    let during = report_json(apis[2], &token, &id);
    std::fs::remove_file(&cut).unwrap_or_else(|e| panic!("{e}"));
    // Cut off from the mesh, not from the target: ewr-1 kept sending its
    // load, so the run delivered it all.
    assert_eq!(wait_child(&mut child, Duration::from_secs(60)), Some(0));
    let held = |json: &str| -> u64 {
        serde_json::from_str::<Value>(json)
            .map(|r| r["completeness"]["shards_received"].as_u64().unwrap_or(0))
            .unwrap_or(0)
    };
    // Gossip never repeats what ewr-1 missed: only asking its peers fills it.
    let mut reports = vec![String::new(); 3];
    let converged = wait_for(Duration::from_secs(60), || {
        for (i, api) in apis.iter().enumerate() {
            reports[i] = report_json(*api, &token, &id);
        }
        complete(&reports[2]) && reports[0] == reports[2] && reports[1] == reports[2]
    });
    assert!(
        converged,
        "ewr-1 did not converge: it holds {} shards, fra-1 {}, fra-2 {}\n{}",
        held(&reports[2]),
        held(&reports[0]),
        held(&reports[1]),
        reports[2]
    );
    let report: Value = serde_json::from_str(&reports[2]).unwrap_or(Value::Null);
    assert_eq!(
        report["summary"]["http"]["requests"].as_u64(),
        Some(t.stats().requests),
        "after healing, ewr-1's report counts every request the target served"
    );
    eprintln!(
        "partition: ewr-1 held {} shards while cut off, {} after healing",
        held(&during),
        held(&reports[2])
    );
    let _ = std::fs::remove_dir_all(&dir);
}
