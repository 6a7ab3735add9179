//! What the C and replay tests share: finding (and freshly building) the libraries and
//! programs they run.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Builds `packages` in this test's profile and target directory (a cdylib is not rebuilt
/// for an integration test by itself) and returns that profile's output directory.
pub fn build(packages: &[&str]) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/PROFILE/deps/TEST
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/PROFILE/deps")
        .to_path_buf();
    let target = profile_dir.parent().expect("target/").to_path_buf();
    let mut cmd = Command::new(env!("CARGO"));
    cmd.arg("build").env("CARGO_TARGET_DIR", &target);
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    for p in packages {
        cmd.args(["-p", p]);
    }
    let status = cmd
        .current_dir(workspace())
        .status()
        .expect("running cargo build");
    assert!(status.success(), "cargo build {packages:?} failed");
    profile_dir
}
