//! `fusi-node new NAME`: a scenario project that builds with one command,
//! in Rust or in AssemblyScript.
//!
//! The project carries its own copy of fusi-sdk (`fusi-sdk/`, the very
//! sources this binary was built with, embedded in it), so it builds on a
//! machine with no checkout of fusi and with no SDK published anywhere: a
//! Rust one needs only cargo, the wasm32-wasip1 target and the crate
//! registry for serde; an AssemblyScript one, npm and the npm registry for
//! the compiler. The SDK speaks the scenario ABI of the node that wrote it.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, ValueEnum};

pub(super) const NEW_HELP: &str = "\
Writes DIR/NAME/ (DIR is the current directory by default): a scenario that
GETs $TARGET/, checks the status and records a custom metric, with fusi-sdk/
(the SDK this fusi-node was built with), a README.md and a .gitignore. In
Rust (the default): Cargo.toml and src/lib.rs, which also declares two
thresholds. In AssemblyScript (--lang assemblyscript): package.json,
asconfig.json and assembly/index.ts; it builds with Node.js and npm. It
never overwrites: an existing NAME is an error.

Examples:
  fusi-node new checkout
  cd checkout && fusi-node run . --vus 10 --duration 30s --env TARGET=http://127.0.0.1:8080
  fusi-node new checkout-ts --lang assemblyscript
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
    /// AssemblyScript (TypeScript-like), with fusi-sdk for AssemblyScript.
    Assemblyscript,
}

/// The AssemblyScript compiler a new project pins (as the example
/// scenarios/as-hello does).
const ASC_VERSION: &str = "0.28.20";

/// fusi-sdk for AssemblyScript, as this binary was built with it.
const AS_SDK_FILES: &[(&str, &str)] = &[
    (
        "package.json",
        include_str!("../../../scenario-sdk/assemblyscript/package.json"),
    ),
    (
        "assembly/index.ts",
        include_str!("../../../scenario-sdk/assemblyscript/assembly/index.ts"),
    ),
];

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
        "src/heap.rs",
        include_str!("../../../scenario-sdk/src/heap.rs"),
    ),
    (
        "src/guest.rs",
        include_str!("../../../scenario-sdk/src/guest.rs"),
    ),
    (
        "src/guest/alloc.rs",
        include_str!("../../../scenario-sdk/src/guest/alloc.rs"),
    ),
    (
        "src/guest/data.rs",
        include_str!("../../../scenario-sdk/src/guest/data.rs"),
    ),
    (
        "src/guest/http.rs",
        include_str!("../../../scenario-sdk/src/guest/http.rs"),
    ),
    (
        "src/guest/sys.rs",
        include_str!("../../../scenario-sdk/src/guest/sys.rs"),
    ),
    (
        "src/guest/ws.rs",
        include_str!("../../../scenario-sdk/src/guest/ws.rs"),
    ),
];

/// `template` with the scenario's name and the versions filled in.
fn fill(template: &str, name: &str) -> String {
    template
        .replace("@NAME@", name)
        .replace("@MODULE@", &name.replace('-', "_"))
        .replace("@VERSION@", env!("CARGO_PKG_VERSION"))
        .replace("@ABI@", &fusi_sdk::abi::ABI_VERSION.to_string())
        .replace("@ASC_VERSION@", ASC_VERSION)
}

/// The scenario ABI version the AssemblyScript SDK speaks, read from its
/// source: it may be older than the Rust SDK's (`?` if it is not found).
fn as_abi_version() -> &'static str {
    AS_SDK_FILES
        .iter()
        .find(|(path, _)| *path == "assembly/index.ts")
        .and_then(|(_, text)| {
            text.lines()
                .find_map(|line| line.strip_prefix("export const ABI_VERSION: i32 = "))
        })
        .map_or("?", |v| v.trim_end_matches(';'))
}

/// Every file of a new AssemblyScript scenario named `name`.
fn assemblyscript_files(name: &str) -> Vec<(String, String)> {
    let fill = |template: &str| fill(template, name).replace("@AS_ABI@", as_abi_version());
    let mut files = vec![
        (
            "package.json".to_owned(),
            fill(include_str!("new/as-package.json.txt")),
        ),
        (
            "asconfig.json".to_owned(),
            fill(include_str!("new/as-asconfig.json.txt")),
        ),
        (
            "assembly/index.ts".to_owned(),
            fill(include_str!("new/as-index.ts.txt")),
        ),
        (
            "README.md".to_owned(),
            fill(include_str!("new/as-README.md.txt")),
        ),
        (
            ".gitignore".to_owned(),
            include_str!("new/as-gitignore.txt").to_owned(),
        ),
    ];
    files.extend(
        AS_SDK_FILES
            .iter()
            .map(|(path, text)| (format!("fusi-sdk/{path}"), (*text).to_owned())),
    );
    files
}

/// Every file of a new Rust scenario named `name`: its path in the
/// scenario's directory, and its text.
fn rust_files(name: &str) -> Vec<(String, String)> {
    let fill = |template: &str| fill(template, name);
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
        Lang::Assemblyscript => assemblyscript_files(&args.name),
    };
    write_all(&root, &files)?;
    let once = match args.lang {
        Lang::Rust => "rustup target add wasm32-wasip1",
        Lang::Assemblyscript => "install Node.js with npm",
    };
    eprintln!(
        "made the scenario {name} in {dir}; once per machine: {once}; then:\n  \
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
    fn the_assemblyscript_readme_names_the_abi_its_sdk_speaks() {
        let version: u32 = as_abi_version()
            .parse()
            .unwrap_or_else(|e| panic!("{:?}: {e}", as_abi_version()));
        assert!(
            (fusi_sdk::abi::OLDEST_ABI_VERSION..=fusi_sdk::abi::ABI_VERSION).contains(&version),
            "{version}"
        );
        let readme = assemblyscript_files("x")
            .into_iter()
            .find(|(path, _)| path == "README.md")
            .map(|(_, text)| text)
            .unwrap_or_default();
        assert!(
            readme.contains(&format!("scenario ABI {version})")),
            "{readme}"
        );
    }

    #[test]
    fn the_assemblyscript_project_pins_the_compiler_of_the_example_and_carries_its_sdk() {
        let example =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/as-hello/package.json");
        let example = std::fs::read_to_string(&example).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            example.contains(&format!("\"assemblyscript\": \"{ASC_VERSION}\"")),
            "{example}"
        );
        let files = assemblyscript_files("shop-ts");
        let config = &files
            .iter()
            .find(|(p, _)| p == "asconfig.json")
            .unwrap_or_else(|| panic!("no asconfig"))
            .1;
        let config: serde_json::Value =
            serde_json::from_str(config).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            config["targets"]["release"]["outFile"],
            "build/shop_ts.wasm"
        );
        let package = &files
            .iter()
            .find(|(p, _)| p == "package.json")
            .unwrap_or_else(|| panic!("no package.json"))
            .1;
        let package: serde_json::Value =
            serde_json::from_str(package).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(package["devDependencies"]["assemblyscript"], ASC_VERSION);
        assert!(files.iter().any(|(p, _)| p == "fusi-sdk/assembly/index.ts"));
        assert!(
            !files
                .iter()
                .any(|(_, text)| text.contains('@') && text.contains("@NAME@"))
        );
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
