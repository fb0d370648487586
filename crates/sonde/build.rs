//! Names the build in `sonde --version`: the git commit HEAD named when it was built and the cargo
//! profile (`debug`, `release`, `profiling`), so a bug report or a benchmark says which binary
//! produced it. (Uncommitted edits are not flagged: that would mean re-running this script, and
//! relinking the binary, on every `git add`.)

use std::path::Path;
use std::process::Command;

fn main() {
    let commit = git(&["rev-parse", "--short=10", "HEAD"]).unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=SONDE_GIT_COMMIT={commit}");
    let profile = profile();
    println!("cargo:rustc-env=SONDE_BUILD_PROFILE={profile}");
    if profile != "debug" && linker_is_lld() {
        // Size (README "Two commands"): fold functions whose machine code is identical (generic
        // code instantiated for types of the same layout is common in arrow and DataFusion), and
        // store the ~300k relative relocations of a position-independent binary as a bitmap
        // instead of 24 bytes each (needs glibc 2.36+ at run time).
        println!("cargo:rustc-link-arg-bins=-Wl,--icf=all");
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
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

/// Whether the link will use LLD, which is what `--icf` needs: Rust 1.90+ links x86_64 Linux
/// binaries with its own `rust-lld` unless told otherwise.
fn linker_is_lld() -> bool {
    std::env::var("TARGET").is_ok_and(|t| t == "x86_64-unknown-linux-gnu")
        && std::env::var_os("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER").is_none()
        && !std::env::var("CARGO_ENCODED_RUSTFLAGS").is_ok_and(|f| f.contains("linker"))
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
