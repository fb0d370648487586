//! Names the build in `sonde --version`: the git commit HEAD named when it was built and the cargo
//! profile (`debug`, `release`, `profiling`), so a bug report or a benchmark says which binary
//! produced it. (Uncommitted edits are not flagged: that would mean re-running this script, and
//! relinking the binary, on every `git add`.)

use std::path::Path;
use std::process::Command;

fn main() {
    let commit = git(&["rev-parse", "--short=10", "HEAD"]).unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=SONDE_GIT_COMMIT={commit}");
    println!("cargo:rustc-env=SONDE_BUILD_PROFILE={}", profile());
    // Run again when HEAD moves (a commit, a checkout).
    let git_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.git");
    for p in ["HEAD", "refs/heads", "packed-refs"] {
        let path = git_dir.join(p);
        if path.exists() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}

/// A git command's trimmed output, if git and the repository are there.
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The profile's name: cargo gives build scripts only `debug`/`release` in `PROFILE`, but
/// `OUT_DIR` lies under `<target>/<profile dir>/build/`, and that directory is named after the
/// profile (`debug` for `dev`).
fn profile() -> String {
    let out_dir = std::env::var("OUT_DIR").unwrap_or_default();
    let parts: Vec<&str> = out_dir.split(std::path::MAIN_SEPARATOR).collect();
    parts
        .iter()
        .rposition(|p| *p == "build")
        .and_then(|i| i.checked_sub(1))
        .map(|i| parts[i].to_string())
        .unwrap_or_else(|| std::env::var("PROFILE").unwrap_or_else(|_| "unknown".to_string()))
}
