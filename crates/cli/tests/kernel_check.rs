//! `type1 kernel-check`: the comparison (always), `replay --backend vfio` without /dev/vfio
//! (always), and — with `TYPE1_KERNEL_CHECK=1` — a trace run in the QEMU guest once, then held
//! to the engine's records as they are and with one errno planted.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use serde_json::{json, Value};
use type1_cli::kernel_check::{
    check_prepared, check_records, diff_line, leaf_comparable, model_only_markers, prepare,
    profile_of, trace_kernel,
};
use type1_cli::trace::record::{Record, State};
use type1_cli::trace::Errno;

#[path = "kernel_check/record.rs"]
mod record;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Changes the errno of the engine's object at `line` (the planted disagreement).
fn plant(engine: &mut [Value], line: usize, from: &str, to: &str) {
    let v = engine
        .iter_mut()
        .find(|v| v["line"] == line)
        .unwrap_or_else(|| panic!("no engine record at line {line}"));
    assert_eq!(v["errno"], from, "line {line}: {v}");
    v["errno"] = json!(to);
}

#[test]
fn a_planted_errno_is_named_with_its_line_and_both_values() {
    let engine = vec![
        json!({"line": 1, "op": "container", "ok": true, "errno": null, "locked": 0, "avail": null}),
        json!({"line": 2, "op": "domain", "ok": true, "errno": null, "locked": 0, "avail": 65535}),
        json!({"line": 4, "op": "map", "ok": true, "errno": null, "locked": 1, "avail": 65534}),
        json!({"line": 5, "op": "map", "ok": false, "errno": "EEXIST", "locked": 1, "avail": 65534}),
        json!({"line": 6, "op": "check", "ok": true, "errno": null, "locked": 1, "avail": 65534,
               "domains": {"d0": {"leaves": {"4096": 1}}}, "dmas": [], "pinned": 1}),
        json!({"line": 7, "op": "summary", "ok": true, "errno": null, "locked": 1, "avail": 65534}),
    ];
    let mut kernel = Vec::new();
    for (line, op) in [
        (1, "container"),
        (2, "domain"),
        (4, "map"),
        (5, "map"),
        (6, "check"),
    ] {
        let mut r = Record::kernel(line, op);
        r.locked = Some(if line >= 4 { 1 } else { 0 });
        r.avail = Some(if line >= 4 { 65534 } else { 65535 });
        kernel.push(r);
    }
    kernel[0].avail = None;
    kernel[3].fail(Errno::from_raw(17)); // EEXIST
    kernel[4].state = Some(State {
        domains: BTreeMap::from([("d0".to_string(), BTreeMap::from([(4096, 1)]))]),
        ..State::default()
    });
    let marks = BTreeMap::new();
    let vtd = BTreeMap::from([("d0".to_string(), Ok(()))]);

    let c = check_records(&engine, &kernel, &marks, &vtd);
    assert!(c.agrees(), "{c:?}");
    assert_eq!(c.cmp.compared, 5);

    let mut doctored = engine.clone();
    plant(&mut doctored, 5, "EEXIST", "EINVAL");
    let c = check_records(&doctored, &kernel, &marks, &vtd);
    assert!(!c.agrees());
    assert_eq!(c.cmp.diffs.len(), 1, "{:?}", c.cmp.diffs);
    let line = diff_line("t.trace", &c.cmp.diffs[0]);
    assert_eq!(
        line,
        r#"t.trace:5: errno: engine "EINVAL", kernel "EEXIST""#
    );

    // Marked model-only, the same line is listed, not counted.
    let marks = BTreeMap::from([(5, "test".to_string())]);
    let c = check_records(&doctored, &kernel, &marks, &vtd);
    assert!(c.agrees(), "{c:?}");
    assert_eq!(c.model_only, vec![(5, "test".to_string())]);

    // Leaves: compared on a VT-d-shaped domain, skipped and listed on a mock one.
    let mut other_leaves = engine.clone();
    other_leaves[4]["domains"]["d0"]["leaves"] = json!({"2097152": 1});
    let c = check_records(&other_leaves, &kernel, &BTreeMap::new(), &vtd);
    assert_eq!(c.cmp.diffs[0].field, "leaves.d0");
    let mock = BTreeMap::from([("d0".to_string(), Err("mock".to_string()))]);
    let c = check_records(&other_leaves, &kernel, &BTreeMap::new(), &mock);
    assert!(c.agrees(), "{c:?}");
    assert_eq!(c.leaves_skipped, vec![(6, "mock".to_string())]);
}

#[test]
fn markers_profiles_and_domain_shapes() {
    let src = "container type1v2\n\
               domain d0 format=mock aperture=0-0xffffffffffff # model-only: 48-bit mock\n\
               # a comment that mentions model-only: but is not on a statement\n\
               map vaddr=0x1000 iova=0 size=4K # note; model-only: pfnmap\n";
    let m = model_only_markers(src);
    assert_eq!(m.get(&2).map(String::as_str), Some("48-bit mock"));
    assert_eq!(m.get(&4).map(String::as_str), Some("pfnmap"));
    assert_eq!(profile_of("7.2.12+deb13-cloud-amd64"), Some("7.2"));
    assert_eq!(profile_of("6.12.117+deb13-cloud-amd64"), Some("6.12"));
    assert_eq!(profile_of("6.1.0-56-cloud-amd64"), Some("6.1"));
    assert_eq!(profile_of("6.1"), Some("6.1"));
    assert_eq!(profile_of("5.10"), None);

    let t = type1_cli::trace::parse(
        "container\n\
         domain a format=x86_64-3level\n\
         domain b format=x86_64 aperture=0-0x7fffffffff\n\
         domain c format=x86_64\n\
         domain d format=mock pgsizes=4K,2M,1G\n\
         domain e format=x86_64-3level pgsizes=4K,2M\n",
    )
    .unwrap();
    let l = leaf_comparable(&t);
    assert!(l["a"].is_ok() && l["b"].is_ok());
    assert!(
        l["c"].is_err() && l["d"].is_err() && l["e"].is_err(),
        "{l:?}"
    );
}

#[test]
fn kernel_override_applies_to_both_sides() {
    let p = prepare(&repo().join("tests/kernel/phase-B.trace"), Some("6.12")).unwrap();
    assert_eq!(p.profile, "6.12");
    assert_eq!(p.overridden.len(), 1);
    assert_eq!(trace_kernel(&p.trace).as_deref(), Some("6.12"));
    let p = prepare(&repo().join("tests/kernel/phase-B.trace"), None).unwrap();
    assert_eq!(p.profile, "7.2");
    assert!(p.overridden.is_empty());
    assert!(prepare(&repo().join("tests/kernel/phase-B.trace"), Some("5.4")).is_err());
}

#[test]
fn replay_on_the_vfio_backend_without_the_group_says_so_and_suggests_kernel_check() {
    let group = "4242";
    assert!(!std::path::Path::new("/dev/vfio").join(group).exists());
    let out = Command::new(env!("CARGO_BIN_EXE_type1"))
        .args(["replay", "--backend", "vfio", "--group", group, "--json"])
        .arg(repo().join("tests/kernel/phase-B.trace"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/dev/vfio/4242 does not exist"), "{err}");
    assert!(err.contains("type1 kernel-check"), "{err}");
    assert!(out.stdout.is_empty());
}

/// Runs phase B in the guest once (7.2), then compares the engine's records as they are and
/// with line 32's EEXIST planted as EINVAL.
#[test]
fn the_guest_agrees_with_the_engine_and_catches_a_planted_errno() {
    if std::env::var_os("TYPE1_KERNEL_CHECK").is_none_or(|v| v != "1") {
        eprintln!(
            "skipped: set TYPE1_KERNEL_CHECK=1 to boot the QEMU guest (needs qemu-system-x86, \
             cpio, kmod, busybox-static and the kernel cache or network access)"
        );
        return;
    }
    let p = prepare(&repo().join("tests/kernel/phase-B.trace"), None).unwrap();
    let run = vfio_backend::qemu::run_in_guest(
        &p.trace.stmts,
        &vfio_backend::qemu::GuestOptions::default(),
        &mut vfio_backend::qemu::stderr_progress,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let c = check_prepared(&p, &run.records);
    assert!(c.agrees(), "{c:?}");
    assert!(c.cmp.compared >= 15, "{c:?}");

    let mut engine = type1_cli::kernel_check::engine_json(&p.trace);
    plant(&mut engine, 32, "EEXIST", "EINVAL");
    let c = check_records(
        &engine,
        &run.records,
        &model_only_markers(&p.src),
        &leaf_comparable(&p.trace),
    );
    assert_eq!(c.cmp.diffs.len(), 1, "{:?}", c.cmp.diffs);
    assert_eq!(
        diff_line("tests/kernel/phase-B.trace", &c.cmp.diffs[0]),
        r#"tests/kernel/phase-B.trace:32: errno: engine "EINVAL", kernel "EEXIST""#
    );
}

/// Without QEMU on the PATH, `type1 kernel-check` says so in one line with the install command
/// and exits 2 at once, before fetching or booting anything (for every kernel of a list).
#[test]
fn a_missing_qemu_is_named_in_one_line_before_anything_starts() {
    let empty = std::env::temp_dir().join(format!("type1-empty-path-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let t0 = std::time::Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_type1"))
        .args(["kernel-check", "--kernel", "7.2,6.12", "--kernel", "6.1"])
        .arg(repo().join("tests/kernel/phase-B.trace"))
        .env("PATH", &empty)
        .output()
        .unwrap();
    let secs = t0.elapsed().as_secs_f64();
    let _ = std::fs::remove_dir_all(&empty);
    assert_eq!(out.status.code(), Some(2));
    assert!(secs < 1.0, "{secs} s");
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(
        lines[0].starts_with("kernel-check: missing qemu-system-x86_64, cpio"),
        "{err}"
    );
    assert!(
        lines[0].contains("; install with: apt-get install qemu-system-x86 cpio"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}
