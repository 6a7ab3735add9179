//! C programs against the built libraries: `tests/c/setup_like_qemu.c` and
//! `examples/c/vfio_setup.c` under the LD_PRELOAD shim (`libtype1_preload.so`), and
//! `examples/c/library.c` linked with `libtype1.so`. Each is compiled with `cc` from PATH and
//! must exit 0; the C code asserts the kernel's errno values itself (spec §1.3–§1.5, §5).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

/// The built libraries' directory (built freshly).
fn libs() -> PathBuf {
    common::build(&["type1-preload", "type1-capi"])
}

/// Compiles `src` with `cc` (extra arguments after the source) into a temporary binary.
fn compile(src: &Path, name: &str, extra: &[String]) -> PathBuf {
    let out = std::env::temp_dir().join(format!("type1-c-{name}-{}", std::process::id()));
    let o = Command::new("cc")
        .args(["-std=gnu11", "-O1", "-Wall", "-Werror", "-o"])
        .arg(&out)
        .arg(src)
        .args(extra)
        .output()
        .expect("`cc` must be on PATH to build the C tests");
    assert!(
        o.status.success(),
        "cc {}:\n{}",
        src.display(),
        String::from_utf8_lossy(&o.stderr)
    );
    out
}

/// Runs `bin` with `env`, asserting exit 0; returns its stdout.
fn run(bin: &Path, args: &[&str], env: &[(&str, String)]) -> String {
    let mut cmd = Command::new(bin);
    cmd.args(args).env_remove("TYPE1_OPTIONS");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let o = cmd.output().expect("running the C program");
    let _ = std::fs::remove_file(bin);
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    );
    assert!(
        o.status.success(),
        "{} failed ({:?}):\n{out}\n{err}",
        bin.display(),
        o.status
    );
    out
}

fn shim_env(libs: &Path) -> Vec<(&'static str, String)> {
    vec![
        (
            "LD_PRELOAD",
            libs.join("libtype1_preload.so").display().to_string(),
        ),
        ("TYPE1_GROUPS", "42".to_string()),
    ]
}

#[test]
fn a_qemu_style_setup_gets_the_kernels_answers_under_the_shim() {
    let libs = libs();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/setup_like_qemu.c");
    let bin = compile(&src, "setup", &[]);
    let out = run(&bin, &[], &shim_env(&libs));
    assert!(out.contains("all checks passed"), "{out}");
}

#[test]
fn the_shim_example_maps_and_unmaps() {
    let libs = libs();
    let bin = compile(
        &common::workspace().join("examples/c/vfio_setup.c"),
        "example",
        &[],
    );
    let out = run(&bin, &["42"], &shim_env(&libs));
    assert!(out.contains("valid IOVA range 0-0xfedfffff"), "{out}");
    assert!(out.contains("mapped and unmapped 2097152 bytes"), "{out}");
}

#[test]
fn without_the_group_listed_the_program_sees_the_real_system() {
    let libs = libs();
    let bin = compile(
        &common::workspace().join("examples/c/vfio_setup.c"),
        "unlisted",
        &[],
    );
    let mut env = shim_env(&libs);
    env[1].1 = "7".to_string();
    let o = Command::new(&bin)
        .arg("42")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&bin);
    // The container is served, group 42 is not: its open goes to the real /dev/vfio/42.
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("/dev/vfio/42"), "{err}");
}

#[test]
fn the_library_example_runs_against_libtype1() {
    let libs = libs();
    let extra = [
        format!("-I{}", libs.join("include").display()),
        format!("-L{}", libs.display()),
        format!("-Wl,-rpath,{}", libs.display()),
        "-ltype1".to_string(),
    ];
    let bin = compile(
        &common::workspace().join("examples/c/library.c"),
        "library",
        &extra,
    );
    let out = run(&bin, &[], &[]);
    assert!(out.contains("locked pages after two maps: 512"), "{out}");
    assert!(out.contains("unmap-all unmapped 2097152 bytes"), "{out}");
}
