//! fusi in a CI job (docs/ci.md): one run writes JUnit, HTML and JSON, and
//! its exit status gates.

use super::*;

#[test]
fn a_run_writes_junit_beside_its_other_reports_and_gates_on_its_exit_status() {
    let _g = serial();
    let t = target(TargetConfig::default());
    let xml = tempfile_path("report.xml");
    let html = tempfile_path("report.html");
    let json = tempfile_path("report.json");
    let run = fusi(&[
        "run",
        scenario("api_flow").to_str().unwrap_or_default(),
        "--iterations",
        "10",
        "--vus",
        "2",
        "--env",
        &format!("TARGET={}", t.url()),
        "--threshold",
        "http_req_duration: p(95)<0.001ms",
        "--threshold",
        "http_req_failed: rate<0.01",
        "--out",
        xml.to_str().unwrap_or_default(),
        "--out",
        html.to_str().unwrap_or_default(),
        "--out",
        json.to_str().unwrap_or_default(),
    ]);
    assert_eq!(run.output.status.code(), Some(99), "{}", run.stderr());
    let read = |p: &Path| {
        let text = std::fs::read_to_string(p).unwrap_or_default();
        let _ = std::fs::remove_file(p);
        text
    };
    let junit = read(&xml);
    assert!(read(&html).starts_with("<!doctype html>"));
    assert!(read(&json).starts_with('{'));
    assert!(
        junit.starts_with(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"fusi api_flow.wasm "
        ),
        "{junit}"
    );
    // The threshold that failed is a failed test case with what was observed.
    let failed = junit
        .split("<testcase ")
        .find(|c| c.contains("name=\"http_req_duration: p(95)&lt;0.001ms\""))
        .unwrap_or_default();
    assert!(failed.contains("<failure message=\"observed "), "{junit}");
    assert!(
        failed.contains("µs\">") || failed.contains("ms\">"),
        "{failed}"
    );
    let passed = junit
        .split("<testcase ")
        .find(|c| c.contains("name=\"http_req_failed: rate&lt;0.01\""))
        .unwrap_or_default();
    assert!(
        passed.contains("<system-out>observed 0.00%</system-out>"),
        "{junit}"
    );
    // Each check, and the load, are test cases too: 3 thresholds (one
    // declared by the scenario), 4 checks, 1 load.
    assert!(junit.contains("tests=\"8\" failures=\"1\""), "{junit}");
    assert!(junit.contains("name=\"read: status is 200\""), "{junit}");
    assert!(junit.contains("name=\"planned load delivered\""), "{junit}");
}

#[test]
fn man_pages_are_written_per_command_and_version_says_what_it_speaks() {
    let dir = tempfile_path("man");
    let _ = std::fs::create_dir_all(&dir);
    let man = fusi(&["man", "--dir", dir.to_str().unwrap_or_default()]);
    assert!(man.output.status.success(), "{}", man.stderr());
    for page in [
        "fusi-node.1",
        "fusi-node-run.1",
        "fusi-node-up.1",
        "fusi-node-report.1",
    ] {
        let text = std::fs::read_to_string(dir.join(page)).unwrap_or_default();
        assert!(text.contains(".TH "), "{page}: {text}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    let fish = fusi(&["completions", "fish"]);
    assert!(
        fish.stdout().contains("complete -c fusi-node"),
        "{}",
        fish.stdout()
    );
    let version = fusi(&["--version"]);
    let text = version.stdout();
    assert!(
        text.starts_with("fusi-node ")
            && text.contains("(commit ")
            && text.contains("scenario ABI "),
        "{text}"
    );
}

/// The run id in a local run's `report again` line.
fn kept_id(run: &Run) -> String {
    run.stderr()
        .lines()
        .find_map(|l| l.strip_prefix("report again: fusi-node report "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no `report again` line in:\n{}", run.stderr()))
        .to_owned()
}

#[test]
fn compare_flags_a_run_whose_target_got_5_ms_slower() {
    let _g = serial();
    let hello = scenario("hello");
    let run_against = |t: &TargetHandle| {
        fusi(&[
            "run",
            hello.to_str().unwrap_or_default(),
            "--vus",
            "4",
            "--duration",
            "2s",
            "--env",
            &format!("TARGET={}", t.url()),
        ])
    };
    let fast = target(TargetConfig::default());
    let a = run_against(&fast);
    let slow = target(TargetConfig {
        latency: Latency::Fixed(Duration::from_millis(5)),
        ..TargetConfig::default()
    });
    let b = run_against(&slow);
    assert!(a.output.status.success() && b.output.status.success());
    let (a_id, b_id) = (kept_id(&a), kept_id(&b));
    // By run id (both kept on this machine), with a limit B exceeds.
    let html = tempfile_path("compare.html");
    let flagged = fusi(&[
        "compare",
        &a_id,
        &b_id,
        "--fail-if-slower",
        "5%",
        "--out",
        html.to_str().unwrap_or_default(),
    ]);
    assert_eq!(
        flagged.output.status.code(),
        Some(99),
        "{}",
        flagged.stderr()
    );
    assert!(
        flagged
            .stderr()
            .contains("error: B is slower than A beyond noise")
            && flagged.stderr().contains("--fail-if-slower 5.0 %: FAILED"),
        "{}",
        flagged.stderr()
    );
    let page = std::fs::read_to_string(&html).unwrap_or_default();
    let _ = std::fs::remove_file(&html);
    assert!(page.contains("<polyline class=\"run-B\""), "{page}");
    // By report file the other way round: B is faster, nothing fails.
    let a_json = tempfile_path("a.json");
    let b_json = tempfile_path("b.json");
    std::fs::write(&a_json, serde_json::to_vec(a.report()).unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(&b_json, serde_json::to_vec(b.report()).unwrap_or_default())
        .unwrap_or_else(|e| panic!("{e}"));
    let back = fusi(&[
        "compare",
        b_json.to_str().unwrap_or_default(),
        a_json.to_str().unwrap_or_default(),
        "--fail-if-slower",
        "5%",
    ]);
    let _ = std::fs::remove_file(&a_json);
    let _ = std::fs::remove_file(&b_json);
    assert!(back.output.status.success(), "{}", back.stderr());
    assert!(
        back.stdout().contains("B is faster than A beyond noise"),
        "{}",
        back.stdout()
    );
    assert!(
        back.stdout().contains("http_req_duration p95"),
        "{}",
        back.stdout()
    );
}
