//! Records the commit fusi-node is built from, for `fusi-node --version`
//! (`unknown` outside a git checkout, as in a source tarball).

use std::path::Path;
use std::process::Command;

fn main() {
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=FUSI_COMMIT={commit}");
    // Built again when HEAD moves: a new commit, a checkout.
    let git = Path::new("../.git");
    if git.is_dir() {
        for watched in ["HEAD", "refs/heads", "packed-refs"] {
            if git.join(watched).exists() {
                println!("cargo:rerun-if-changed=../.git/{watched}");
            }
        }
    } else {
        println!("cargo:rerun-if-changed=build.rs");
    }
}
