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
