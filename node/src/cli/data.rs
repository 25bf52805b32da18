//! `--data NAME=FILE`: the test data a run ships with its module.
//!
//! Each file is read and parsed here, before any node is asked, so that a
//! malformed row is reported with its file and line at the command line;
//! every node parses the bytes again (they come from a peer) and checks
//! they hold the rows the spec says.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::ValueEnum;

use crate::core::data::{
    DataFormat, DataMode, DataSpec, Exhausted, MAX_DATA_BYTES, Rows, check_name,
};
use crate::core::module_name::sha256_hex;

/// `--data-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(super) enum DataModeArg {
    /// Every node walks every row, and starts over at the end.
    Shared,
    /// Each row goes to one draw in the whole mesh.
    Unique,
}

/// `--data-exhausted`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(super) enum ExhaustedArg {
    /// Draws fail and the node's share winds down.
    Stop,
    /// The node starts over at its first row.
    Wrap,
}

/// A `--data-mode` or `--data-exhausted` value: `VALUE` for every set, or
/// `NAME=VALUE` for the set `NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PerSet<T> {
    /// The set, or `None` for every set without its own.
    set: Option<String>,
    value: T,
}

/// Parses `VALUE` or `NAME=VALUE` for the flag `flag`.
fn per_set<T: ValueEnum>(s: &str, flag: &str) -> Result<PerSet<T>, String> {
    let (set, value) = match s.split_once('=') {
        Some((name, value)) => {
            check_name(name).map_err(|e| format!("invalid {flag} {s:?}: {e}"))?;
            (Some(name.to_owned()), value)
        }
        None => (None, s),
    };
    let value = T::from_str(value, false).map_err(|_| {
        let names: Vec<String> = T::value_variants()
            .iter()
            .filter_map(|v| v.to_possible_value().map(|p| p.get_name().to_owned()))
            .collect();
        format!(
            "invalid {flag} {s:?}: give {} for every set, or NAME={} for one",
            names.join(" or "),
            names.join("|")
        )
    })?;
    Ok(PerSet { set, value })
}

/// `--data-mode [NAME=]shared|unique`.
pub(super) fn mode_arg(s: &str) -> Result<PerSet<DataModeArg>, String> {
    per_set(s, "--data-mode")
}

/// `--data-exhausted [NAME=]stop|wrap`.
pub(super) fn exhausted_arg(s: &str) -> Result<PerSet<ExhaustedArg>, String> {
    per_set(s, "--data-exhausted")
}

/// The value `given` sets for `set`: the last one naming it, else the last
/// one for every set, else `default`.
fn value_for<T: Copy>(given: &[PerSet<T>], set: &str, default: T) -> T {
    given
        .iter()
        .rev()
        .find(|g| g.set.as_deref() == Some(set))
        .or_else(|| given.iter().rev().find(|g| g.set.is_none()))
        .map_or(default, |g| g.value)
}

/// Refuses a `NAME=VALUE` whose `NAME` is no `--data` set: a typo would
/// otherwise leave that set in the mode for every set, unnoticed.
fn check_sets<T>(
    given: &[PerSet<T>],
    files: &[(String, PathBuf)],
    flag: &str,
) -> anyhow::Result<()> {
    for name in given.iter().filter_map(|g| g.set.as_deref()) {
        if !files.iter().any(|(n, _)| n == name) {
            let sets: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
            bail!(
                "{flag} {name}=... names no --data set (the sets are: {}); give the name of a \
                 --data NAME=FILE",
                if sets.is_empty() {
                    "none".to_owned()
                } else {
                    sets.join(", ")
                }
            );
        }
    }
    Ok(())
}

/// `--data NAME=FILE`.
pub(super) fn data_arg(s: &str) -> Result<(String, PathBuf), String> {
    let Some((name, file)) = s.split_once('=') else {
        return Err(format!(
            "invalid --data {s:?}: write NAME=FILE, for example users=users.csv"
        ));
    };
    check_name(name).map_err(|e| e.to_string())?;
    if file.is_empty() {
        return Err(format!("invalid --data {s:?}: name a file after the '='"));
    }
    Ok((name.to_owned(), PathBuf::from(file)))
}

/// Reads and checks every `--data` file: the specs for the run, and the
/// files' bytes in the same order.
pub(super) fn load(
    files: &[(String, PathBuf)],
    modes: &[PerSet<DataModeArg>],
    exhausted: &[PerSet<ExhaustedArg>],
) -> anyhow::Result<(Vec<DataSpec>, Vec<Vec<u8>>)> {
    check_sets(modes, files, "--data-mode")?;
    check_sets(exhausted, files, "--data-exhausted")?;
    let mut specs = Vec::new();
    let mut bytes = Vec::new();
    let mut total = 0usize;
    for (name, path) in files {
        let format = format_of(path)?;
        let file = std::fs::read(path)
            .with_context(|| format!("cannot read the data file {}", path.display()))?;
        total = total.saturating_add(file.len());
        if total > MAX_DATA_BYTES {
            bail!(
                "the --data files hold more than {} MiB together, the most a run may ship: \
                 trim {} or split the test",
                MAX_DATA_BYTES >> 20,
                path.display()
            );
        }
        let rows = Rows::parse(format, &file)
            .with_context(|| format!("the data file {} ({format}) is unusable", path.display()))?;
        specs.push(DataSpec {
            name: name.clone(),
            sha256: sha256_hex(&file),
            format,
            rows: rows.len(),
            mode: match value_for(modes, name, DataModeArg::Shared) {
                DataModeArg::Shared => DataMode::Shared,
                DataModeArg::Unique => DataMode::Unique,
            },
            exhausted: match value_for(exhausted, name, ExhaustedArg::Stop) {
                ExhaustedArg::Stop => Exhausted::Stop,
                ExhaustedArg::Wrap => Exhausted::Wrap,
            },
        });
        bytes.push(file);
    }
    Ok((specs, bytes))
}

fn format_of(path: &Path) -> anyhow::Result<DataFormat> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    DataFormat::of_file_name(&name).with_context(|| {
        format!(
            "cannot tell how {} is written: name it .csv (with a header line), .json (an array) \
             or .ndjson",
            path.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_files_are_read_parsed_and_named_by_hash_and_bad_ones_say_why() {
        let dir = std::env::temp_dir().join(format!("fusi-cli-data-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let users = dir.join("users.csv");
        std::fs::write(&users, "user,pass\nann,a1\nbob,b2\n").unwrap();
        let all = |mode, exhausted| {
            (
                vec![PerSet {
                    set: None,
                    value: mode,
                }],
                vec![PerSet {
                    set: None,
                    value: exhausted,
                }],
            )
        };
        let (modes, ends) = all(DataModeArg::Unique, ExhaustedArg::Wrap);
        let (specs, bytes) = load(&[("users".into(), users.clone())], &modes, &ends).unwrap();
        assert_eq!(specs[0].rows, 2);
        assert_eq!(specs[0].mode, DataMode::Unique);
        assert_eq!(specs[0].exhausted, Exhausted::Wrap);
        assert_eq!(specs[0].sha256, sha256_hex(&bytes[0]));
        let bad = dir.join("bad.csv");
        std::fs::write(&bad, "a,b\n1,2\n3\n").unwrap();
        let e = format!("{:#}", load(&[("x".into(), bad)], &[], &[]).unwrap_err());
        assert!(e.contains("bad.csv") && e.contains("line 3"), "{e}");
        let txt = dir.join("users.txt");
        std::fs::write(&txt, "x").unwrap();
        let e = format!("{:#}", load(&[("x".into(), txt)], &[], &[]).unwrap_err());
        assert!(e.contains(".csv"), "{e}");
        assert!(data_arg("users").is_err());
        assert!(data_arg("a b=x.csv").is_err());
        assert_eq!(data_arg("u=x.csv").unwrap().0, "u");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_set_may_have_its_own_mode_and_a_typo_in_its_name_is_refused() {
        let dir = std::env::temp_dir().join(format!("fusi-cli-modes-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let users = dir.join("users.csv");
        std::fs::write(&users, "user\nann\nbob\n").unwrap();
        let items = dir.join("items.ndjson");
        std::fs::write(&items, "{\"id\":1}\n").unwrap();
        let files = [("users".to_owned(), users), ("items".to_owned(), items)];
        // Every set unique and wrapping but items, shared; the last word for
        // a set wins.
        let modes = [
            mode_arg("unique").unwrap(),
            mode_arg("items=unique").unwrap(),
            mode_arg("items=shared").unwrap(),
        ];
        let ends = [exhausted_arg("users=wrap").unwrap()];
        let (specs, _) = load(&files, &modes, &ends).unwrap();
        let got: Vec<(&str, DataMode, Exhausted)> = specs
            .iter()
            .map(|s| (s.name.as_str(), s.mode, s.exhausted))
            .collect();
        assert_eq!(
            got,
            [
                ("users", DataMode::Unique, Exhausted::Wrap),
                ("items", DataMode::Shared, Exhausted::Stop)
            ]
        );
        let typo = [mode_arg("user=unique").unwrap()];
        let e = format!("{:#}", load(&files, &typo, &[]).unwrap_err());
        assert!(e.contains("user=") && e.contains("users, items"), "{e}");
        for bad in ["uniq", "users=", "a b=unique", "=unique"] {
            assert!(mode_arg(bad).is_err(), "{bad}");
        }
        assert!(exhausted_arg("users=stop").is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
