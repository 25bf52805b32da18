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
    mode: DataModeArg,
    exhausted: ExhaustedArg,
) -> anyhow::Result<(Vec<DataSpec>, Vec<Vec<u8>>)> {
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
            mode: match mode {
                DataModeArg::Shared => DataMode::Shared,
                DataModeArg::Unique => DataMode::Unique,
            },
            exhausted: match exhausted {
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
        let (specs, bytes) = load(
            &[("users".into(), users.clone())],
            DataModeArg::Unique,
            ExhaustedArg::Wrap,
        )
        .unwrap();
        assert_eq!(specs[0].rows, 2);
        assert_eq!(specs[0].mode, DataMode::Unique);
        assert_eq!(specs[0].exhausted, Exhausted::Wrap);
        assert_eq!(specs[0].sha256, sha256_hex(&bytes[0]));
        let bad = dir.join("bad.csv");
        std::fs::write(&bad, "a,b\n1,2\n3\n").unwrap();
        let e = format!(
            "{:#}",
            load(
                &[("x".into(), bad)],
                DataModeArg::Shared,
                ExhaustedArg::Stop
            )
            .unwrap_err()
        );
        assert!(e.contains("bad.csv") && e.contains("line 3"), "{e}");
        let txt = dir.join("users.txt");
        std::fs::write(&txt, "x").unwrap();
        let e = format!(
            "{:#}",
            load(
                &[("x".into(), txt)],
                DataModeArg::Shared,
                ExhaustedArg::Stop
            )
            .unwrap_err()
        );
        assert!(e.contains(".csv"), "{e}");
        assert!(data_arg("users").is_err());
        assert!(data_arg("a b=x.csv").is_err());
        assert_eq!(data_arg("u=x.csv").unwrap().0, "u");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
