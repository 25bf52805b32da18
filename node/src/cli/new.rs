//! `fusi-node new NAME`: a scenario crate that builds with one command.
//!
//! The crate carries its own copy of fusi-sdk (`fusi-sdk/`, the very
//! sources this binary was built with, embedded in it), so it builds on a
//! machine with no checkout of fusi and with no SDK published anywhere: only
//! cargo, the wasm32-wasip1 target and the crate registry for serde. The
//! SDK speaks the scenario ABI of the node that wrote it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, ValueEnum};

pub(super) const NEW_HELP: &str = "\
Writes DIR/NAME/ (DIR is the current directory by default): Cargo.toml,
src/lib.rs (a scenario that GETs $TARGET/, checks the status, records a
custom metric and declares two thresholds), fusi-sdk/ (the SDK this
fusi-node was built with), README.md and .gitignore. It never overwrites:
an existing NAME is an error.

Examples:
  fusi-node new checkout
  cd checkout && fusi-node run . --vus 10 --duration 30s --env TARGET=http://127.0.0.1:8080
  fusi-node new smoke --dir tests/load";

/// `fusi-node new`.
#[derive(Args, Debug)]
pub struct NewArgs {
    /// The scenario's name: the crate's and the directory's (a-z, 0-9, '-'
    /// and '_', starting with a letter, at most 64).
    #[arg(value_parser = name_arg)]
    name: String,
    /// Where to make the NAME directory.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// The language of the scenario.
    #[arg(long, value_enum, default_value_t = Lang::Rust)]
    lang: Lang,
}

/// The languages `new` writes scenarios in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Lang {
    /// Rust, with fusi-sdk.
    Rust,
}

/// The longest scenario name.
const MAX_NAME: usize = 64;

fn name_arg(name: &str) -> Result<String, String> {
    let fine = name.len() <= MAX_NAME
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if fine {
        Ok(name.to_owned())
    } else {
        Err(format!(
            "{name:?} cannot name a scenario crate: use a-z, 0-9, '-' and '_', starting with a \
             letter, at most {MAX_NAME} characters (for example `checkout-flow`)"
        ))
    }
}

/// The SDK's sources, as this binary was built with them.
const SDK_FILES: &[(&str, &str)] = &[
    (
        "src/lib.rs",
        include_str!("../../../scenario-sdk/src/lib.rs"),
    ),
    (
        "src/abi.rs",
        include_str!("../../../scenario-sdk/src/abi.rs"),
    ),
    (
        "src/abi/wire.rs",
        include_str!("../../../scenario-sdk/src/abi/wire.rs"),
    ),
    (
        "src/body.rs",
        include_str!("../../../scenario-sdk/src/body.rs"),
    ),
    (
        "src/guest.rs",
        include_str!("../../../scenario-sdk/src/guest.rs"),
    ),
    (
        "src/guest/http.rs",
        include_str!("../../../scenario-sdk/src/guest/http.rs"),
    ),
    (
        "src/guest/sys.rs",
        include_str!("../../../scenario-sdk/src/guest/sys.rs"),
    ),
];

/// Every file of a new Rust scenario named `name`: its path in the
/// scenario's directory, and its text.
fn rust_files(name: &str) -> Vec<(String, String)> {
    let fill = |template: &str| {
        template
            .replace("@NAME@", name)
            .replace("@VERSION@", env!("CARGO_PKG_VERSION"))
            .replace("@ABI@", &fusi_sdk::abi::ABI_VERSION.to_string())
    };
    let mut files = vec![
        (
            "Cargo.toml".to_owned(),
            fill(include_str!("new/Cargo.toml.txt")),
        ),
        (
            "src/lib.rs".to_owned(),
            fill(include_str!("new/lib.rs.txt")),
        ),
        (
            "README.md".to_owned(),
            fill(include_str!("new/README.md.txt")),
        ),
        (
            ".gitignore".to_owned(),
            include_str!("new/gitignore.txt").to_owned(),
        ),
        (
            "fusi-sdk/Cargo.toml".to_owned(),
            fill(include_str!("new/sdk-Cargo.toml.txt")),
        ),
    ];
    files.extend(
        SDK_FILES
            .iter()
            .map(|(path, text)| (format!("fusi-sdk/{path}"), (*text).to_owned())),
    );
    files
}

/// Writes `files` under `root`, which must not exist yet; on an error, what
/// was written is taken back.
fn write_all(root: &Path, files: &[(String, String)]) -> anyhow::Result<()> {
    std::fs::create_dir(root).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => anyhow::anyhow!(
            "{} exists already; `fusi-node new` never overwrites: pick another name, or remove it",
            root.display()
        ),
        std::io::ErrorKind::NotFound => anyhow::anyhow!(
            "cannot make {}: its parent directory does not exist (mkdir -p it, or pass another --dir)",
            root.display()
        ),
        _ => anyhow::anyhow!("cannot make {}: {e}", root.display()),
    })?;
    let written = files.iter().try_for_each(|(path, text)| {
        let file = root.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot make {}", parent.display()))?;
        }
        std::fs::write(&file, text).with_context(|| format!("cannot write {}", file.display()))
    });
    if written.is_err() {
        let _ = std::fs::remove_dir_all(root);
    }
    written
}

/// `fusi-node new NAME [--dir DIR]`.
pub fn new(args: &NewArgs) -> anyhow::Result<ExitCode> {
    let root = args.dir.join(&args.name);
    let files = match args.lang {
        Lang::Rust => rust_files(&args.name),
    };
    write_all(&root, &files)?;
    eprintln!(
        "made the scenario {name} in {dir}; once per machine: rustup target add wasm32-wasip1; then:\n  \
         cd {dir}\n  \
         fusi-node run . --vus 10 --duration 30s --env TARGET=http://127.0.0.1:8080",
        name = args.name,
        dir = root.display()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_crate_names_that_need_no_quoting() {
        for good in ["checkout", "checkout-flow", "a1_b2", &"a".repeat(MAX_NAME)] {
            assert_eq!(name_arg(good).as_deref(), Ok(good));
        }
        for bad in [
            "",
            "1st",
            "-x",
            "Checkout",
            "a b",
            "a/b",
            "..",
            "é",
            &"a".repeat(MAX_NAME + 1),
        ] {
            let e = name_arg(bad).unwrap_err();
            assert!(e.contains("checkout-flow"), "{e}");
        }
    }

    #[test]
    fn every_source_file_of_the_sdk_is_carried() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenario-sdk/src");
        let mut found = Vec::new();
        let mut dirs = vec![src.clone()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{e}")) {
                let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
                if path.is_dir() {
                    dirs.push(path);
                } else if let Ok(rel) = path.strip_prefix(&src) {
                    found.push(format!("src/{}", rel.display()));
                }
            }
        }
        found.sort();
        let mut carried: Vec<String> = SDK_FILES.iter().map(|(p, _)| (*p).to_owned()).collect();
        carried.sort();
        assert_eq!(found, carried);
    }

    #[test]
    fn a_new_scenario_is_written_once_and_never_over_anything() {
        let dir = std::env::temp_dir().join(format!("fusi-new-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let files = rust_files("shop");
        let root = dir.join("shop");
        write_all(&root, &files).unwrap_or_else(|e| panic!("{e}"));
        let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap_or_default();
        assert!(manifest.contains("name = \"shop\""), "{manifest}");
        assert!(!files.iter().any(|(_, text)| text.contains("@NAME@")));
        let sdk = std::fs::read_to_string(root.join("fusi-sdk/Cargo.toml")).unwrap_or_default();
        assert!(
            sdk.contains(&format!("version = \"{}\"", env!("CARGO_PKG_VERSION"))),
            "{sdk}"
        );
        std::fs::write(root.join("src/lib.rs"), "mine").unwrap_or_else(|e| panic!("{e}"));
        let again = write_all(&root, &files).unwrap_err().to_string();
        assert!(again.contains("never overwrites"), "{again}");
        assert_eq!(
            std::fs::read_to_string(root.join("src/lib.rs")).unwrap_or_default(),
            "mine"
        );
        let nowhere = write_all(&dir.join("no/such/shop"), &files)
            .unwrap_err()
            .to_string();
        assert!(nowhere.contains("mkdir -p"), "{nowhere}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
