//! The first hour of a new user: each mistake a k6 user is likely to make,
//! and the line fusi answers it with (the error text, the hint, the count
//! of what was not shown, the exit status). docs/guide.md's
//! troubleshooting section shows the same lines.

use std::process::Command;

use super::*;

fn run_of(args: &[&str]) -> Run {
    let mut all = vec!["run"];
    all.extend_from_slice(args);
    fusi(&all)
}

/// How many lines of `text` contain `needle`.
fn lines_with(text: &str, needle: &str) -> usize {
    text.lines().filter(|l| l.contains(needle)).count()
}

#[test]
fn a_dead_target_names_the_address_and_the_error_and_the_summary_says_the_run_still_passed() {
    let _g = serial();
    let hello = scenario("hello");
    let run = run_of(&[
        hello.to_str().unwrap_or_default(),
        "--vus",
        "2",
        "--duration",
        "1s",
        "--env",
        "TARGET=http://127.0.0.1:1",
    ]);
    let err = run.stderr();
    // Exit status as k6: no threshold failed.
    assert_eq!(run.output.status.code(), Some(0), "{err}");
    let said = "request failed (refused): GET http://127.0.0.1:1/hello: cannot connect to \
                127.0.0.1:1: Connection refused";
    assert_eq!(
        lines_with(&err, said),
        3,
        "the first 3, with their text:\n{err}"
    );
    let refused = num(run.summary(), &["errors", "refused"]);
    assert!(refused > 3.0);
    let rest = format!(
        "{} more requests failed (refused) after the first 3 above",
        refused - 3.0
    );
    assert_eq!(lines_with(&err, &rest), 1, "{err}");
    assert!(err.lines().count() <= 6, "bounded:\n{err}");
    let out = run.stdout();
    // The summary says it too, under the count.
    assert!(
        out.contains(&format!(
            "errors .........................: refused={refused}\n      refused: GET \
             http://127.0.0.1:1/hello: cannot connect to 127.0.0.1:1: Connection refused"
        )),
        "{out}"
    );
    assert!(
        out.contains("warning: 100.0 % of requests failed")
            && out.contains("add --threshold 'http_req_failed: rate<0.01' to fail it"),
        "{out}"
    );

    let no_scheme = run_of(&[
        hello.to_str().unwrap_or_default(),
        "--iterations",
        "2",
        "--env",
        "TARGET=127.0.0.1:1",
    ]);
    let err = no_scheme.stderr();
    assert_eq!(
        lines_with(
            &err,
            "invalid URL \"127.0.0.1:1/hello\": it has no scheme; write http://127.0.0.1:1/hello"
        ),
        2,
        "{err}"
    );
}

#[test]
fn a_panicking_scenario_says_its_panic_message_a_few_times_not_once_per_iteration() {
    let _g = serial();
    let misbehave = scenario("misbehave");
    let run = run_of(&[
        misbehave.to_str().unwrap_or_default(),
        "--vus",
        "2",
        "--duration",
        "1s",
        "--env",
        "MODE=panic",
    ]);
    let err = run.stderr();
    assert_eq!(run.output.status.code(), Some(0), "{err}");
    let failed = num(run.summary(), &["iterations", "failed", "panic"]);
    assert!(failed > 10.0, "{}", run.summary()["iterations"]);
    let said = "the scenario panicked at misbehave/src/lib.rs";
    assert_eq!(lines_with(&err, said), 3, "{err}");
    assert_eq!(
        lines_with(&err, "this scenario panics on purpose"),
        3,
        "{err}"
    );
    let rest = format!(
        "{} more iterations failed (panic) after the first 3 above",
        failed - 3.0
    );
    assert_eq!(lines_with(&err, &rest), 1, "{err}");
    // Neither the guest's own panic output nor wasmtime's backtrace.
    assert!(!err.contains("[vu ") && !err.contains("<unknown>"), "{err}");
    assert!(
        run.stdout().contains(&format!(
            "iterations_failed ..............: panic={failed}\n      panic: {said}"
        )),
        "{}",
        run.stdout()
    );
    assert!(
        run.stdout()
            .contains("add --threshold 'iterations_failed: count<1' to fail it"),
        "{}",
        run.stdout()
    );

    let setup = run_of(&[
        misbehave.to_str().unwrap_or_default(),
        "--env",
        "MODE=setup-panic",
    ]);
    let err = setup.stderr();
    assert_eq!(setup.output.status.code(), Some(1), "{err}");
    assert!(
        err.contains(
            "error: the scenario's `setup` failed: the scenario panicked at \
             misbehave/src/lib.rs:"
        ) && err.contains("setup panics on purpose"),
        "{err}"
    );
    assert!(
        !err.contains("<unknown>") && err.lines().count() <= 2,
        "{err}"
    );
}

#[test]
fn mistakes_are_caught_before_the_run_with_the_fix() {
    let _g = serial();
    let hello = scenario("hello");
    let hello = hello.to_str().unwrap_or_default();
    // A typo in a built-in metric: refused before anything runs.
    fails_with(
        &["run", hello, "--threshold", "http_req_duraton: p(95)<200ms"],
        2,
        "there is no built-in metric `http_req_duraton`: did you mean `http_req_duration`?",
    );
    // --stages with --max-vus: the executor that takes both.
    fails_with(
        &["run", hello, "--stages", "2s:10", "--max-vus", "5"],
        1,
        "add --executor ramping-arrival-rate",
    );
    fails_with(
        &["run", hello, "--expected-statuses", "2xx"],
        2,
        "`2xx` is not a status; write statuses and ranges from 100 to 599, for example \
         200-399,404",
    );
}

#[test]
fn a_custom_metric_threshold_with_a_typo_names_the_metric_meant() {
    let _g = serial();
    let t = target(TargetConfig::default());
    let target_env = format!("TARGET={}", t.url());
    // api_flow declares its metrics (fusi_sdk::metrics!): checked before
    // the run, name and kind.
    let api_flow = scenario("api_flow");
    let api_flow = api_flow.to_str().unwrap_or_default();
    fails_with(
        &[
            "run",
            api_flow,
            "--env",
            &target_env,
            "--threshold",
            "items_creatd: count<1",
        ],
        1,
        "`items_creatd: count<1`: the scenario declares no metric `items_creatd` (did you mean \
         `items_created`?)",
    );
    fails_with(
        &[
            "run",
            api_flow,
            "--env",
            &target_env,
            "--threshold",
            "items_created: p(95)<1",
        ],
        1,
        "`items_created` is a counter metric of the scenario, which has no `p(95)`",
    );
    // arrival makes its metric with Rate::new, undeclared: the typo is
    // named at the end of the run.
    let run = run_of(&[
        scenario("arrival").to_str().unwrap_or_default(),
        "--rate",
        "20/s",
        "--duration",
        "1s",
        "--vus",
        "2",
        "--env",
        &target_env,
        "--threshold",
        "slow_respnses: count<1",
        "--threshold",
        "slow_respnses: rate<0.5",
        "--threshold",
        "http_req_failed: rate<0.5",
    ]);
    let out = run.stdout();
    assert_eq!(run.output.status.code(), Some(99), "{}", run.stderr());
    assert!(
        out.contains(
            "✗ slow_respnses: rate<0.5  (the scenario never recorded a metric `slow_respnses`: \
             did you mean `slow_responses`?)"
        ),
        "{out}"
    );
    assert!(
        out.contains(
            "warning: a threshold names `slow_respnses`, a metric the scenario never recorded: \
             did you mean `slow_responses`?"
        ),
        "{out}"
    );
    // Observed values carry their unit.
    assert!(
        out.contains("✓ http_req_failed: rate<0.5  (observed 0.00%)"),
        "{out}"
    );
}

#[test]
fn expected_statuses_decide_what_fails_from_the_flag_or_the_scenario() {
    let _g = serial();
    let t = target(TargetConfig::default());
    let misbehave = scenario("misbehave");
    let target_env = format!("TARGET={}", t.url());
    let failed_of = |extra: &[&str]| {
        let mut args = vec![
            misbehave.to_str().unwrap_or_default(),
            "--iterations",
            "4",
            "--env",
            &target_env,
            "--env",
            "URL_PATH=/status/404",
        ];
        args.extend_from_slice(extra);
        let run = run_of(&args);
        assert!(run.output.status.success(), "{}", run.stderr());
        let s = run.summary();
        assert_eq!(num(s, &["http", "requests"]), 4.0);
        (num(s, &["http", "failed"]), s["errors"].clone())
    };
    let (failed, errors) = failed_of(&[]);
    assert_eq!(failed, 4.0, "404 is not expected by default");
    assert_eq!(errors["status_4xx"].as_f64(), Some(4.0));
    let (failed, errors) = failed_of(&["--expected-statuses", "200-299,404"]);
    assert_eq!(failed, 0.0);
    assert!(errors.get("status_4xx").is_none(), "{errors}");
    let (failed, _) = failed_of(&["--env", "EXPECT=404"]);
    assert_eq!(failed, 0.0, "the scenario's own expected statuses");
    let (failed, _) = failed_of(&["--expected-statuses", "404", "--env", "EXPECT=200"]);
    assert_eq!(failed, 4.0, "the scenario's win over the run's");
}

#[test]
fn run_builds_a_scenario_crate_given_its_directory() {
    let _g = serial();
    // The scenarios are built already (by `scenario`), so this is quick.
    let _ = scenario("hello");
    let t = target(TargetConfig::default());
    let dir = repo().join("scenarios/hello");
    let run = run_of(&[
        dir.to_str().unwrap_or_default(),
        "--iterations",
        "3",
        "--env",
        &format!("TARGET={}", t.url()),
    ]);
    assert!(run.output.status.success(), "{}", run.stderr());
    assert!(run.stderr().contains("hello.wasm"), "{}", run.stderr());
    assert_eq!(run.report()["scenario"].as_str(), Some("hello.wasm"));
    assert_eq!(num(run.summary(), &["http", "requests"]), 3.0);
}

#[test]
fn a_scenario_built_for_the_host_fails_with_how_to_build_it() {
    let _g = serial();
    let dir = tempfile_path("native-scenario");
    let src = dir.join("src");
    std::fs::create_dir_all(&src).unwrap_or_else(|e| panic!("{e}"));
    let sdk = repo().join("scenario-sdk");
    let manifest = format!(
        "[package]\nname = \"native-scenario\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n\
         [lib]\ncrate-type = [\"cdylib\"]\n\n[dependencies]\nfusi-sdk = {{ path = {:?} }}\n\n\
         [workspace]\n",
        sdk.display().to_string()
    );
    std::fs::write(dir.join("Cargo.toml"), manifest).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        src.join("lib.rs"),
        "use fusi_sdk::prelude::*;\n\nfn iteration() {\n    \
         check(\"ok\", http::get(\"http://127.0.0.1:1/\").status() == 200);\n}\n\n\
         fusi_sdk::scenario!(iteration = iteration);\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    without_clippy(&mut cmd);
    // Kept between test runs, so that only the first compiles serde.
    cmd.env(
        "CARGO_TARGET_DIR",
        repo().join("target/e2e-native-scenario"),
    )
    .args(["check", "--offline", "--quiet", "--manifest-path"])
    .arg(dir.join("Cargo.toml"));
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run cargo: {e}"));
    let _ = std::fs::remove_dir_all(&dir);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(
            "error: fusi scenarios build for WebAssembly: run `fusi-node build .` in the \
             scenario crate, or `cargo build --release --target wasm32-wasip1`"
        ),
        "{err}"
    );
    assert!(!err.contains("could not find `prelude`"), "{err}");
}

#[test]
fn a_new_scenario_builds_and_runs_with_one_command_and_is_never_written_over() {
    let _g = serial();
    // The example scenarios are built first: the new crate borrows their
    // lock file and target directory, so its dependencies are built once.
    let examples = scenario("hello");
    let examples_target = examples
        .ancestors()
        .nth(3)
        .unwrap_or_else(|| panic!("no target dir above {}", examples.display()))
        .to_owned();
    let dir = tempfile_path("new");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let dir_arg = dir.to_str().unwrap_or_default();
    let made = fusi(&["new", "first-load", "--dir", dir_arg]);
    assert!(made.output.status.success(), "{}", made.stderr());
    assert!(
        made.stderr().contains("fusi-node run . --vus 10"),
        "{}",
        made.stderr()
    );
    let again = fusi(&["new", "first-load", "--dir", dir_arg]);
    assert_eq!(again.output.status.code(), Some(1));
    assert!(
        again.stderr().contains("never overwrites"),
        "{}",
        again.stderr()
    );
    let bad = fusi(&["new", "First Load"]);
    assert_eq!(bad.output.status.code(), Some(2));
    assert!(bad.stderr().contains("checkout-flow"), "{}", bad.stderr());

    let root = dir.join("first-load");
    std::fs::copy(repo().join("scenarios/Cargo.lock"), root.join("Cargo.lock"))
        .unwrap_or_else(|e| panic!("{e}"));
    let t = target(TargetConfig::default());
    let out = dir.join("summary.json");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fusi-node"));
    without_clippy(&mut cmd);
    let run = cmd
        .current_dir(&root)
        .env("CARGO_TARGET_DIR", &examples_target)
        .env("XDG_DATA_HOME", test_data_home())
        .args(["run", ".", "--vus", "2", "--duration", "1s", "--local"])
        .args(["--env", &format!("TARGET={}", t.url())])
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap_or_else(|e| panic!("cannot start fusi-node: {e}"));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    let report: serde_json::Value = std::fs::read(&out)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| panic!("no report: {stderr}"));
    let summary = &report["summary"];
    let requests = num(summary, &["http", "requests"]);
    assert!(requests >= 2.0, "{summary}");
    assert_eq!(requests, t.stats().requests as f64);
    assert_eq!(summary["checks"][0]["name"], "status is 200", "{summary}");
    assert_eq!(num(&summary["checks"][0], &["fails"]), 0.0, "{summary}");
    assert_eq!(
        num(summary, &["custom", "page_bytes", "count"]),
        requests,
        "{summary}"
    );
    // Its two declared thresholds were judged, and passed.
    let judged: Vec<&str> = report["thresholds"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["pass"] == true)
        .filter_map(|t| t["threshold"].as_str())
        .collect();
    assert_eq!(
        judged,
        [
            "http_req_failed: rate<0.01",
            "http_req_duration: p(95)<500ms"
        ],
        "{}",
        report["thresholds"]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Whether npm runs here; without it the AssemblyScript test skips loudly,
/// unless `FUSI_REQUIRE_NPM=1` (as scripts/test sets once it installed
/// Debian's npm).
fn npm_available(test: &str) -> bool {
    let found = Command::new("npm")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("FUSI_REQUIRE_NPM").is_none(),
            "FUSI_REQUIRE_NPM=1 but no npm: install Debian's nodejs and npm packages"
        );
        eprintln!("\n*** SKIPPED {test}: no npm (install Debian's nodejs and npm packages) ***\n");
    }
    found
}

/// `fusi-node run DIR --local ... --out` for a scenario project, whose
/// build the run starts; the report and stderr come back.
fn run_project(dir: &Path, args: &[&str]) -> (Option<Value>, String) {
    let out = tempfile_path("project.json");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fusi-node"));
    without_clippy(&mut cmd);
    let run = cmd
        .env("XDG_DATA_HOME", test_data_home())
        .arg("run")
        .arg(dir)
        .args(["--local"])
        .args(args)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap_or_else(|e| panic!("cannot start fusi-node: {e}"));
    let report = std::fs::read(&out)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let _ = std::fs::remove_file(&out);
    (report, String::from_utf8_lossy(&run.stderr).into_owned())
}

#[test]
fn an_assemblyscript_scenario_is_made_built_and_run_like_a_rust_one() {
    let test = "an_assemblyscript_scenario_is_made_built_and_run_like_a_rust_one";
    if !npm_available(test) {
        return;
    }
    let _g = serial();
    let t = target(TargetConfig::default());
    let env = format!("TARGET={}", t.url());

    // The example, built with npm and the AssemblyScript compiler by
    // `fusi-node run DIR`.
    let (report, stderr) = run_project(
        &repo().join("scenarios/as-hello"),
        &["--vus", "2", "--iterations", "20", "--env", &env],
    );
    let report = report.unwrap_or_else(|| panic!("no report: {stderr}"));
    let summary = &report["summary"];
    assert_eq!(num(summary, &["http", "requests"]), 20.0, "{stderr}");
    assert_eq!(t.stats().requests, 20);
    for check in summary["checks"].as_array().into_iter().flatten() {
        assert_eq!(num(check, &["fails"]), 0.0, "{check}");
        assert_eq!(num(check, &["passes"]), 20.0, "{check}");
    }
    assert_eq!(
        num(summary, &["custom", "hello_bytes", "total"]),
        20.0 * "hello\n".len() as f64,
        "{summary}"
    );

    // A new project, in one command, and run as it is.
    let dir = tempfile_path("new-as");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let made = fusi(&[
        "new",
        "first-ts",
        "--lang",
        "assemblyscript",
        "--dir",
        dir.to_str().unwrap_or_default(),
    ]);
    assert!(made.output.status.success(), "{}", made.stderr());
    let project = dir.join("first-ts");
    let (report, stderr) =
        run_project(&project, &["--vus", "2", "--duration", "1s", "--env", &env]);
    let report = report.unwrap_or_else(|| panic!("no report: {stderr}"));
    let summary = &report["summary"];
    let requests = num(summary, &["http", "requests"]);
    assert!(requests >= 2.0, "{summary}");
    assert_eq!(summary["checks"][0]["name"], "status is 200", "{summary}");
    assert_eq!(num(&summary["checks"][0], &["fails"]), 0.0, "{summary}");
    assert_eq!(
        num(summary, &["custom", "page_bytes", "count"]),
        requests,
        "{summary}"
    );

    // A session, as the Rust SDK has it (ABI 3): a form login that answers
    // 303 and sets a cookie, followed to a page that wants the cookie.
    let source = project.join("assembly/index.ts");
    let text = std::fs::read_to_string(&source).unwrap_or_else(|e| panic!("{e}"));
    let session = text.replace(
        "  const res = http.get(base + \"/\");",
        "  const res = new Request(\"POST\", base + \"/login\").form([[\"user\", \"ts-1\"]]).send();\n  \
         check(\"landed on the account\", res.status == 200 && res.url == base + \"/account\" && res.text().includes(\"ts-1\"));\n  \
         const kept = http.cookie(base + \"/\", \"session\");\n  \
         check(\"the jar keeps the session\", kept !== null && kept == \"user-ts-1\");",
    ).replace("import { http, check,", "import { http, Request, check,");
    assert_ne!(session, text);
    std::fs::write(&source, &session).unwrap_or_else(|e| panic!("{e}"));
    let before = t.stats().requests;
    let (report, stderr) = run_project(
        &project,
        &["--vus", "1", "--iterations", "2", "--env", &env],
    );
    let report = report.unwrap_or_else(|| panic!("no report: {stderr}"));
    let summary = &report["summary"];
    for check in summary["checks"].as_array().into_iter().flatten() {
        assert_eq!(num(check, &["fails"]), 0.0, "{check}: {stderr}");
    }
    assert_eq!(
        summary["checks"].as_array().map(Vec::len),
        Some(3),
        "{summary}"
    );
    // Each hop is a request of its own: the login's 303, then the page.
    assert_eq!(num(summary, &["http", "requests"]), 4.0, "{summary}");
    assert_eq!(t.stats().requests - before, 4);

    // Test data and setup data, as the Rust SDK has them (ABI 4): five
    // users drawn in `unique` mode log in once each, and what `setup`
    // handed on reaches every iteration.
    let with_data = [
        "import { http, Request, check, env, data, setSetupData, setupData, ABI_VERSION } from \"fusi-sdk/assembly/index\";",
        "export function fusi_abi_version(): i32 { return ABI_VERSION; }",
        "let base = \"\";",
        "export function setup(): void { setSetupData(\"{\\\"token\\\":\\\"t-1\\\"}\"); }",
        "export function init(): void { base = env(\"TARGET\"); }",
        "export function iteration(): void {",
        "  const handed = setupData();",
        "  check(\"setup data reached the VU\", handed !== null && handed == \"{\\\"token\\\":\\\"t-1\\\"}\");",
        "  const row = data.next(\"users\");",
        "  if (row === null) return;",
        "  const user = data.field(row, \"user\");",
        "  if (user === null) return;",
        "  const res = new Request(\"POST\", base + \"/login\").form([[\"user\", user]]).send();",
        "  check(\"logged in as a user of the file\", res.status == 200 && res.text().includes(user));",
        "  http.clearCookies();",
        "}",
    ]
    .join("\n");
    std::fs::write(&source, with_data).unwrap_or_else(|e| panic!("{e}"));
    let users = project.join("users.csv");
    std::fs::write(
        &users,
        "user,password\nts-a,x\nts-b,x\nts-c,x\nts-d,x\nts-e,x\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let before = t.stats().logins.len();
    let (report, stderr) = run_project(
        &project,
        &[
            "--vus",
            "2",
            "--iterations",
            "5",
            "--data",
            &format!("users={}", users.display()),
            "--data-mode",
            "unique",
            "--env",
            &env,
        ],
    );
    let report = report.unwrap_or_else(|| panic!("no report: {stderr}"));
    let summary = &report["summary"];
    for check in summary["checks"].as_array().into_iter().flatten() {
        assert_eq!(num(check, &["fails"]), 0.0, "{check}: {stderr}");
        assert_eq!(num(check, &["passes"]), 5.0, "{check}: {stderr}");
    }
    assert_eq!(report["data"][0]["used"], 5, "{}", report["data"]);
    let logins = t.stats().logins;
    assert_eq!(logins.len() - before, 5, "{logins:?}");
    assert!(
        ["ts-a", "ts-b", "ts-c", "ts-d", "ts-e"]
            .iter()
            .all(|u| logins.get(*u) == Some(&1)),
        "{logins:?}"
    );
    // A WebSocket, as the Rust SDK has it (ABI 4): the target's echo.
    let with_ws = [
        "import { check, env, ws, ABI_VERSION } from \"fusi-sdk/assembly/index\";",
        "export function fusi_abi_version(): i32 { return ABI_VERSION; }",
        "export function iteration(): void {",
        "  const socket = ws.connect(env(\"TARGET\").replace(\"http://\", \"ws://\") + \"/ws/echo\");",
        "  check(\"connected\", socket !== null);",
        "  if (socket === null) return;",
        "  check(\"sent\", socket.sendText(\"hi from ts\"));",
        "  const got = socket.recv(5.0);",
        "  check(\"echoed\", got !== null && got.text() == \"hi from ts\");",
        "  socket.close();",
        "}",
    ]
    .join("\n");
    std::fs::write(&source, with_ws).unwrap_or_else(|e| panic!("{e}"));
    let sessions = t.stats().ws_sessions;
    let (report, stderr) = run_project(
        &project,
        &["--vus", "1", "--iterations", "3", "--env", &env],
    );
    let report = report.unwrap_or_else(|| panic!("no report: {stderr}"));
    let summary = &report["summary"];
    for check in summary["checks"].as_array().into_iter().flatten() {
        assert_eq!(num(check, &["fails"]), 0.0, "{check}: {stderr}");
        assert_eq!(num(check, &["passes"]), 3.0, "{check}: {stderr}");
    }
    assert_eq!(num(summary, &["ws", "sessions"]), 3.0, "{summary}");
    assert_eq!(num(summary, &["ws", "msgs_sent"]), 3.0, "{summary}");
    assert_eq!(num(summary, &["ws", "msgs_received"]), 3.0, "{summary}");
    assert_eq!(t.stats().ws_sessions - sessions, 3);
    std::fs::write(&source, &text).unwrap_or_else(|e| panic!("{e}"));

    // An AssemblyScript abort (a failed assertion) fails the iteration as a
    // panic, with its message, as a Rust panic does.
    let broken = text.replace(
        "  sleep(0.5);",
        "  assert(res.status == 418, \"the teapot is missing\");",
    );
    assert_ne!(broken, text);
    std::fs::write(&source, broken).unwrap_or_else(|e| panic!("{e}"));
    let (report, stderr) = run_project(
        &project,
        &["--vus", "1", "--iterations", "3", "--env", &env],
    );
    let report = report.unwrap_or_else(|| panic!("no report: {stderr}"));
    let failed = num(&report["summary"], &["iterations", "failed", "panic"]);
    assert_eq!(failed, 3.0, "{stderr}");
    assert!(
        stderr
            .contains("iteration failed (panic, VU 1): the scenario aborted at assembly/index.ts:")
            && stderr.contains("the teapot is missing"),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
