//! Record mode against the real kernel (issue 15): with `TYPE1_KERNEL_CHECK=1`, a dynamically
//! linked C program (`crates/preload/tests/c/record_guest.c`) runs in the kernel-check guest
//! (7.2) under `libtype1_preload.so` with `TYPE1_RECORD`, against the real group of the `edu`
//! device; the trace the shim wrote there — the kernel's answers as expectations — must replay
//! on the engine with every expectation met. Without the variable the test says it skipped.
//! A module of `tests/kernel_check.rs`, so `TYPE1_KERNEL_CHECK=1 cargo test -p type1-cli --test
//! kernel_check` (what `.ci/run` runs) includes it.

use std::process::Command;

// Finding the workspace and building the shim in this test's profile, as the shim's own tests do.
#[path = "../../../preload/tests/common/mod.rs"]
mod common;
use common::workspace as repo;

#[test]
fn a_stream_recorded_against_the_real_kernel_replays_with_every_expectation_met() {
    if std::env::var_os("TYPE1_KERNEL_CHECK").is_none_or(|v| v != "1") {
        eprintln!(
            "skipped: set TYPE1_KERNEL_CHECK=1 to boot the QEMU guest (needs qemu-system-x86, \
             cpio, kmod, busybox-static, cc and the kernel cache or network access)"
        );
        return;
    }
    let shim = common::build(&["type1-preload"]).join("libtype1_preload.so");
    let tmp = std::env::temp_dir().join(format!("type1-record-real-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let prog = tmp.join("record_guest");
    let o = Command::new("cc")
        .arg("-o")
        .arg(&prog)
        .arg(repo().join("crates/preload/tests/c/record_guest.c"))
        .output()
        .expect("`cc` must be on PATH");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        !vfio_backend::qemu::is_static_elf(&prog),
        "the program must be dynamically linked for LD_PRELOAD"
    );

    let run = vfio_backend::qemu::record_in_guest(
        &prog,
        &shim,
        &vfio_backend::qemu::GuestOptions::default(),
        &mut vfio_backend::qemu::stderr_progress,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let text = run.trace;
    eprintln!("recorded on {}:\n{text}", run.kernel);
    // The program checked each answer of the real kernel itself (EEXIST, EINVAL, sizes).
    assert_eq!(run.status, 0, "the program in the guest:\n{}", run.console);
    assert!(run.kernel.starts_with("7.2"), "{}", run.kernel);

    // What the shim saw: the container and the real group, both GET_INFO calls (the second with
    // the argsz the first asked for), the maps with the kernel's charges, the overlap, the
    // bisecting unmap, an unmap and unmap-all with the sizes the kernel wrote back.
    for want in [
        "container type1v2",
        "info argsz=24 ",
        " iova=0x40000000 size=0x200000 ",
        "=> ok locked=+512",
        " iova=0x40100000 size=0x100000 ",
        "=> EEXIST locked=+0",
        "unmap iova=0x40001000 size=0x1000",
        "=> EINVAL locked=+0",
        "unmap iova=0x40000000 size=0x200000",
        "=> ok size=0x200000 locked=-512",
        "unmap all",
        "=> ok size=0x11000 locked=-17",
    ] {
        assert!(text.contains(want), "no {want:?} in:\n{text}");
    }
    assert!(
        text.lines().any(|l| l.starts_with("domain g")),
        "no domain for the real group in:\n{text}"
    );
    let infos = text
        .lines()
        .filter(|l| l.starts_with("info argsz="))
        .count();
    assert_eq!(infos, 2, "{text}");
    let expectations = text
        .lines()
        .filter(|l| l.contains("=>") && !l.starts_with('#'))
        .count();
    assert_eq!(expectations, 9, "{text}");

    // On the engine, in-process and through the binary: every expectation met.
    let t = type1_cli::trace::parse(&text).unwrap_or_else(|e| panic!("{e:?}:\n{text}"));
    let r = type1_cli::runner::replay(&t, &type1_cli::runner::Options::default(), &mut |_| {});
    assert_eq!(r.failures(), Vec::new(), "{text}");
    assert_eq!(r.exit_code(), 0);
    let file = tmp.join("recorded.trace");
    std::fs::write(&file, &text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_type1"))
        .arg("replay")
        .arg(&file)
        .output()
        .unwrap();
    eprintln!(
        "type1 replay recorded.trace (exit {:?}):\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout)
    );
    let _ = std::fs::remove_dir_all(&tmp);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
