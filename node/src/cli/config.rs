//! `fusi-node run --config run.toml`: a run file whose keys are the run's
//! flags.
//!
//! A run that is checked in beside its scenario (a CI job, a team's
//! standard test) reads better as a file than as a long command line. The
//! file's keys are the long flags of `fusi-node run`, without the dashes
//! (`iteration_timeout` or `iteration-timeout`), so every flag has its key
//! and the two can never drift apart: the file is turned into flags, put
//! before the command line's own, and parsed by the same parser. Flags
//! given on the command line override the file's; list flags (`env`,
//! `threshold`, `data`, `out`, `target`) add to its lists.
//!
//! ```toml
//! scenario = "target/wasm32-wasip1/release/shop.wasm"
//! rate = "200/s"
//! duration = "1m"
//! threshold = ["http_req_duration: p(95)<200ms", "checks: rate>0.99"]
//! env = { TARGET = "http://127.0.0.1:8080" }
//! data = { users = "users.csv" }
//! data_mode = "unique"
//! ```
//!
//! Several scenarios side by side, as k6's `options.scenarios`, are
//! `[scenarios.NAME]` tables: each holds an executor's flags (`executor`,
//! `vus`, `duration`, `iterations`, `rate`, `stages`, `start`, `max_vus`, `time_unit`)
//! and the scenario's own `exec` (the exported function its VUs run),
//! `start_time`, `env` and `tags`. A table becomes a hidden
//! `--scenario-table NAME=JSON` flag, parsed by the same executor flags.
//!
//! ```toml
//! [scenarios.api]
//! executor = "ramping-arrival-rate"
//! stages = "10s:50,20s:50"
//! vus = 20
//! exec = "api"
//!
//! [scenarios.chat]
//! vus = 10
//! duration = "30s"
//! exec = "chat"
//! start_time = "5s"
//! ```
//!
//! Paths in the file (`scenario`, `out`, `data`, `data_dir`) are relative
//! to the file's directory. A `.json` file holds the same keys as an
//! object; anything else is read as TOML.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use serde_json::Value;

/// The largest run file read.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// Keys whose values are paths, relative to the run file.
const PATH_KEYS: [&str; 4] = ["scenario", "out", "data", "data-dir"];

/// `args` (a whole command line) with the flags of the run file that
/// `fusi-node run --config FILE` names put before the command line's own;
/// any other command line as it is. The error names the file and the key.
pub(super) fn expand(args: Vec<OsString>) -> Result<Vec<OsString>, String> {
    if args.get(1).is_none_or(|a| a != "run") {
        return Ok(args);
    }
    let Some(file) = config_file(&args[2..]) else {
        return Ok(args);
    };
    let from_file = flags_of(&file)?;
    // The file's own flags must parse alone, so that a bad value is said
    // with the file's name rather than as if it were typed.
    let mut alone: Vec<OsString> = vec!["fusi-node".into(), "run".into()];
    alone.extend(from_file.flags.iter().cloned());
    alone.push(
        from_file
            .scenario
            .clone()
            .unwrap_or_else(|| "scenario.wasm".into()),
    );
    if let Err(e) = super::Cli::command().try_get_matches_from(&alone) {
        return Err(format!(
            "in {}: {}",
            file.display(),
            e.render()
                .to_string()
                .trim_start_matches("error: ")
                .trim_end()
        ));
    }
    let given = &args[2..];
    let mut out: Vec<OsString> = args[..2].to_vec();
    out.extend(from_file.flags);
    out.extend(given.iter().cloned());
    if let Some(scenario) = from_file.scenario
        && !has_positional(given)
    {
        out.push(scenario);
    }
    Ok(out)
}

/// The file `--config FILE` or `--config=FILE` names.
fn config_file(args: &[OsString]) -> Option<PathBuf> {
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let text = arg.to_string_lossy();
        if text == "--" {
            return None;
        }
        if text == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(path) = text.strip_prefix("--config=") {
            return Some(PathBuf::from(path));
        }
    }
    None
}

/// Whether the command line names the scenario itself: a word that is no
/// flag and no flag's value.
fn has_positional(args: &[OsString]) -> bool {
    let command = super::Cli::command();
    let Some(run) = command.find_subcommand("run") else {
        return false;
    };
    let takes_value = |arg: &clap::Arg| {
        matches!(
            arg.get_action(),
            clap::ArgAction::Set | clap::ArgAction::Append
        )
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let text = arg.to_string_lossy();
        if text == "--" {
            return it.next().is_some();
        }
        if let Some(long) = text.strip_prefix("--") {
            if long.contains('=') {
                continue;
            }
            if run
                .get_arguments()
                .any(|a| a.get_long() == Some(long) && takes_value(a))
            {
                it.next();
            }
        } else if let Some(short) = text.strip_prefix('-').filter(|s| !s.is_empty()) {
            let first = short.chars().next();
            if short.chars().count() == 1
                && run
                    .get_arguments()
                    .any(|a| a.get_short() == first && takes_value(a))
            {
                it.next();
            }
        } else {
            return true;
        }
    }
    false
}

/// A value that stands for one argument: a string or a number. The error
/// names `key`.
fn scalar(key: &str, v: &Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        _ => Err(format!("`{key}` holds {v}: give a string or a number")),
    }
}

/// The flags of one key of a run file or of a `[scenarios.NAME]` table:
/// `--KEY VALUE`, `--KEY ITEM` for each item of a list, `--KEY K=V` for
/// each entry of a table, a bare `--KEY` for `true` and nothing for
/// `false`. `arg` turns a value into its argument (a path relative to the
/// file, for the keys that name files). The error names the key.
pub(super) fn key_flags(
    key: &str,
    value: &Value,
    arg: &dyn Fn(&str) -> OsString,
) -> Result<Vec<OsString>, String> {
    let dashed: OsString = format!("--{}", key.replace('_', "-")).into();
    let mut flags = Vec::new();
    match value {
        Value::Bool(true) => flags.push(dashed),
        Value::Bool(false) => {}
        Value::Array(items) => {
            for item in items {
                flags.push(dashed.clone());
                flags.push(arg(&scalar(key, item)?));
            }
        }
        Value::Object(pairs) => {
            for (k, v) in pairs {
                let mut pair = OsString::from(format!("{k}="));
                pair.push(arg(&scalar(key, v)?));
                flags.push(dashed.clone());
                flags.push(pair);
            }
        }
        Value::Null => return Err(format!("`{key}` has no value")),
        v => {
            flags.push(dashed);
            flags.push(arg(&scalar(key, v)?));
        }
    }
    Ok(flags)
}

/// A run file as flags, and the scenario it names.
struct FileFlags {
    flags: Vec<OsString>,
    scenario: Option<OsString>,
}

fn flags_of(file: &Path) -> Result<FileFlags, String> {
    let fail = |what: String| format!("the run file {}: {what}", file.display());
    let len = std::fs::metadata(file)
        .map_err(|e| fail(format!("cannot be read ({e})")))?
        .len();
    if len > MAX_FILE_BYTES {
        return Err(fail(format!(
            "is {len} bytes, more than the {} KiB a run file may have",
            MAX_FILE_BYTES >> 10
        )));
    }
    let text = std::fs::read_to_string(file).map_err(|e| fail(format!("cannot be read ({e})")))?;
    let json = file
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    let value: Value = if json {
        serde_json::from_str(&text).map_err(|e| fail(format!("is not JSON ({e})")))?
    } else {
        toml::from_str(&text).map_err(|e| fail(format!("is not TOML ({e})")))?
    };
    let Value::Object(keys) = value else {
        return Err(fail(
            "holds no keys: write KEY = VALUE lines (TOML) or an object (JSON)".into(),
        ));
    };
    let base = file.parent().unwrap_or(Path::new(""));
    let mut flags = Vec::new();
    let mut scenario = None;
    for (key, value) in keys {
        let flag = key.replace('_', "-");
        if flag == "config" {
            return Err(fail(
                "names another run file (`config`): one file per run".into(),
            ));
        }
        if flag == "scenarios" {
            let Value::Object(tables) = &value else {
                return Err(fail(
                    "`scenarios` holds no tables: write one [scenarios.NAME] table per scenario"
                        .into(),
                ));
            };
            for (name, table) in tables {
                flags.push("--scenario-table".into());
                flags.push(format!("{name}={table}").into());
            }
            continue;
        }
        let flag_known = super::Cli::command()
            .find_subcommand("run")
            .is_some_and(|run| {
                run.get_arguments()
                    .any(|a| a.get_long() == Some(flag.as_str()))
            });
        if flag != "scenario" && !flag_known {
            return Err(fail(format!(
                "`{key}` is not a flag of `fusi-node run`: its keys are the run's long flags \
                 without the dashes (see `fusi-node run --help`)"
            )));
        }
        let path = |s: &str| -> OsString {
            if PATH_KEYS.contains(&flag.as_str()) {
                base.join(s).into_os_string()
            } else {
                s.into()
            }
        };
        if flag == "scenario" {
            let name = scalar(&key, &value).map_err(fail)?;
            scenario = Some(path(&name));
            continue;
        }
        flags.extend(key_flags(&key, &value, &path).map_err(fail)?);
    }
    Ok(FileFlags { flags, scenario })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<OsString> {
        words.iter().map(OsString::from).collect()
    }

    fn strings(args: &[OsString]) -> Vec<String> {
        args.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn a_run_file_becomes_flags_before_the_command_lines_own() {
        let dir = std::env::temp_dir().join(format!("fusi-run-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let toml = dir.join("run.toml");
        std::fs::write(
            &toml,
            r#"
scenario = "shop.wasm"
rate = "200/s"
duration = "1m"
quiet = true
local = false
threshold = ["checks: rate>0.99"]
env = { TARGET = "http://127.0.0.1:8080" }
data = { users = "users.csv" }
iteration_timeout = "5s"
"#,
        )
        .unwrap();
        let config = toml.to_string_lossy().into_owned();
        let out = strings(
            &expand(args(&[
                "fusi-node",
                "run",
                "--config",
                &config,
                "--rate",
                "50/s",
            ]))
            .unwrap(),
        );
        let d = dir.to_string_lossy();
        let at = |flag: &str| out.iter().position(|a| a == flag);
        assert!(
            at("--rate") < out.iter().rposition(|a| a == "--rate"),
            "{out:?}"
        );
        assert_eq!(
            out.last().map(String::as_str),
            Some(&*format!("{d}/shop.wasm"))
        );
        assert!(out.contains(&format!("users={d}/users.csv")), "{out:?}");
        assert!(out.contains(&"TARGET=http://127.0.0.1:8080".to_owned()));
        assert!(out.contains(&"--quiet".to_owned()) && !out.contains(&"--local".to_owned()));
        assert!(out.contains(&"--iteration-timeout".to_owned()));
        // The file's flags and the command line's parse as one, later wins.
        let parsed = <crate::cli::Cli as clap::Parser>::try_parse_from(&out).unwrap();
        let crate::cli::Cmd::Run(run) = parsed.command else {
            panic!("not run");
        };
        assert_eq!(run.load.rate.map(|r| r.per_second()), Some(50.0));
        assert_eq!(run.iteration_timeout, std::time::Duration::from_secs(5));
        // A scenario on the command line wins over the file's.
        let own = strings(
            &expand(args(&[
                "fusi-node",
                "run",
                "other.wasm",
                "-e",
                "A=1",
                "--config",
                &config,
            ]))
            .unwrap(),
        );
        assert!(!own.iter().any(|a| a.ends_with("shop.wasm")), "{own:?}");
        let json = dir.join("run.json");
        std::fs::write(
            &json,
            r#"{"scenario": "a.wasm", "vus": 3, "duration": "2s"}"#,
        )
        .unwrap();
        let out = strings(
            &expand(args(&[
                "fusi-node",
                "run",
                &format!("--config={}", json.display()),
            ]))
            .unwrap(),
        );
        assert!(
            out.windows(2).any(|w| w[0] == "--vus" && w[1] == "3"),
            "{out:?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The spec of `fusi-node run --config FILE` plus `more` flags.
    fn spec_of(file: &Path, more: &[&str]) -> Result<crate::core::spec::RunSpec, String> {
        let mut words = vec!["fusi-node", "run", "--config"];
        let file = file.to_string_lossy().into_owned();
        words.push(&file);
        words.extend_from_slice(more);
        let out = expand(args(&words))?;
        let parsed =
            <crate::cli::Cli as clap::Parser>::try_parse_from(&out).map_err(|e| e.to_string())?;
        let crate::cli::Cmd::Run(run) = parsed.command else {
            return Err("not run".into());
        };
        run.spec().map_err(|e| e.to_string())
    }

    #[test]
    fn scenario_tables_become_the_runs_scenarios() {
        use crate::core::spec::Executor;
        let dir = std::env::temp_dir().join(format!("fusi-scenarios-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("mixed.toml");
        std::fs::write(
            &file,
            r#"
scenario = "shop.wasm"
env = { TARGET = "http://127.0.0.1:9" }

[scenarios.api]
executor = "ramping-arrival-rate"
stages = "2s:20,2s:20"
vus = 4
max_vus = 8
exec = "api"
tags = { team = "checkout" }

[scenarios.chat]
vus = 3
duration = "3s"
exec = "chat"
start_time = "1s"
env = { ROOM = "lobby" }
"#,
        )
        .unwrap();
        let spec = spec_of(&file, &[]).unwrap();
        assert!(spec.has_named_scenarios());
        let names: Vec<&str> = spec.scenarios.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["api", "chat"]);
        let api = &spec.scenarios[0];
        assert!(matches!(
            api.executor,
            Executor::RampingArrivalRate {
                pre_allocated_vus: 4,
                max_vus: 8,
                ..
            }
        ));
        assert_eq!(api.exec_name(), "api");
        assert_eq!(api.tags.get("team").map(String::as_str), Some("checkout"));
        let chat = &spec.scenarios[1];
        assert_eq!(chat.executor.name(), "constant-vus");
        assert_eq!(chat.start_time, std::time::Duration::from_secs(1));
        assert_eq!(chat.env.get("ROOM").map(String::as_str), Some("lobby"));
        assert_eq!(spec.duration(), std::time::Duration::from_secs(4));
        assert_eq!(spec.max_vus(), 11);
        assert_eq!(spec.targets, ["127.0.0.1:9"]);
        // The executor flags are a scenario's: on the command line beside
        // tables they are refused, not silently merged.
        let e = spec_of(&file, &["--vus", "5"]).unwrap_err();
        assert!(e.contains("[scenarios.NAME]") && e.contains("--vus"), "{e}");
        // Bad tables are named by file and scenario.
        for (name, text, says) in [
            (
                "s1.toml",
                "[scenarios.api]\nrate = \"fast\"",
                "scenario \"api\"",
            ),
            (
                "s2.toml",
                "[scenarios.api]\nvuss = 3\nduration = \"1s\"",
                "--vuss",
            ),
            (
                "s3.toml",
                "[scenarios.\"a b\"]\nvus = 1\nduration = \"1s\"",
                "not a scenario name",
            ),
            (
                "s4.toml",
                "[scenarios.api]\nvus = 1\nduration = \"1s\"\nexec = \"setup\"",
                "entry point",
            ),
            ("s5.toml", "scenarios = 3", "holds no tables"),
            (
                "s6.toml",
                "[scenarios.api]\nexecutor = \"constant-vus\"\nvus = 1",
                "constant-vus needs --duration",
            ),
        ] {
            let file = dir.join(name);
            std::fs::write(&file, format!("scenario = \"x.wasm\"\n{text}")).unwrap();
            let e = spec_of(&file, &[]).unwrap_err();
            assert!(e.contains(says), "{name}: {e}");
            if name != "s6.toml" {
                assert!(e.contains(name), "{name} names the file: {e}");
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_bad_run_file_is_refused_naming_the_file_and_the_key() {
        let dir = std::env::temp_dir().join(format!("fusi-bad-run-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, text, says) in [
            ("a.toml", "rate = \"fast\"", "--rate"),
            ("b.toml", "ratee = \"5/s\"", "`ratee` is not a flag"),
            ("c.toml", "rate = [", "is not TOML"),
            ("d.json", "[1]", "holds no keys"),
            ("e.toml", "config = \"x.toml\"", "one file per run"),
            ("f.toml", "env = { A = [1] }", "`env` holds"),
        ] {
            let file = dir.join(name);
            std::fs::write(&file, text).unwrap();
            let e = expand(args(&[
                "fusi-node",
                "run",
                "--config",
                &file.to_string_lossy(),
            ]))
            .err()
            .unwrap_or_default();
            assert!(e.contains(name) && e.contains(says), "{name}: {e}");
        }
        let missing = expand(args(&[
            "fusi-node",
            "run",
            "--config",
            "/nonexistent/run.toml",
        ]));
        assert!(missing.is_err_and(|e| e.contains("cannot be read")));
        let other = args(&["fusi-node", "up", "--config", "x"]);
        assert_eq!(
            expand(other.clone()),
            Ok(other),
            "only `run` reads a run file"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
