//! `fusi-node build DIR`, and `run DIR`: a scenario's sources into a
//! WebAssembly module, with the language's own tools (cargo for Rust, npm
//! and the AssemblyScript compiler for AssemblyScript).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

/// An AssemblyScript project's compiler configuration.
const ASCONFIG: &str = "asconfig.json";

/// Builds the scenario in `dir`, a Rust crate (or workspace of them) or an
/// AssemblyScript project, its tools' output on stderr; the modules it
/// built come back.
pub(super) fn build_modules(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let manifest = dir.join("Cargo.toml");
    if manifest.is_file() {
        return build_crate(dir, &manifest);
    }
    if dir.join(ASCONFIG).is_file() && dir.join("package.json").is_file() {
        return build_assemblyscript(dir).map(|module| vec![module]);
    }
    bail!(
        "{} holds no scenario: neither a Cargo.toml (a Rust scenario crate) nor an {ASCONFIG} and \
         a package.json (an AssemblyScript scenario); `fusi-node new NAME` makes one",
        dir.display()
    );
}

/// Builds a Rust scenario crate (or workspace) for wasm32-wasip1.
fn build_crate(dir: &Path, manifest: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip1",
            "--message-format=json-render-diagnostics",
        ])
        .arg("--manifest-path")
        .arg(manifest)
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run cargo: is it on PATH?")?;
    if !output.status.success() {
        bail!(
            "cargo build failed for {}; if it says the wasm32-wasip1 target is missing, run \
             `rustup target add wasm32-wasip1`",
            dir.display()
        );
    }
    let mut built = Vec::new();
    for line in output.stdout.split(|b| *b == b'\n') {
        let Ok(msg) = serde_json::from_slice::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        for file in msg["filenames"].as_array().into_iter().flatten() {
            if let Some(f) = file.as_str().filter(|f| f.ends_with(".wasm")) {
                built.push(PathBuf::from(f));
            }
        }
    }
    if built.is_empty() {
        bail!(
            "cargo built no .wasm module in {}: a scenario crate needs `crate-type = [\"cdylib\"]` under [lib]",
            dir.display()
        );
    }
    Ok(built)
}

/// Builds an AssemblyScript scenario: `npm install` when its dependencies
/// are not there yet, then `npm run build`; the module is the `outFile` of
/// the `release` target in asconfig.json.
fn build_assemblyscript(dir: &Path) -> anyhow::Result<PathBuf> {
    let config = dir.join(ASCONFIG);
    let text = std::fs::read_to_string(&config)
        .with_context(|| format!("cannot read {}", config.display()))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{} is not JSON", config.display()))?;
    let Some(out) = json["targets"]["release"]["outFile"].as_str() else {
        bail!(
            "{} names no targets.release.outFile: say where the module goes, for example \
             \"outFile\": \"build/scenario.wasm\"",
            config.display()
        );
    };
    let npm = |args: &[&str]| -> anyhow::Result<()> {
        let status = Command::new("npm")
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit())
            .status()
            .context(
                "cannot run npm: an AssemblyScript scenario builds with Node.js and npm \
                 (https://nodejs.org, or Debian's nodejs and npm packages)",
            )?;
        if !status.success() {
            bail!(
                "`npm {}` failed in {} ({status})",
                args.join(" "),
                dir.display()
            );
        }
        Ok(())
    };
    if !dir.join("node_modules").is_dir() {
        npm(&["install", "--no-audit", "--no-fund"])?;
    }
    npm(&["run", "build"])?;
    let module = dir.join(out);
    if !module.is_file() {
        bail!(
            "`npm run build` made no {}: check that its build script compiles with \
             `--target release` and that asconfig.json's outFile is that file",
            module.display()
        );
    }
    Ok(module)
}
