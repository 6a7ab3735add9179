//! One boot for several traces, without QEMU: a stand-in `qemu` script speaks the guest's
//! protocol (`@@TRACE I` … `@@DONE I`), hangs on one trace and dies on another. Each trace gets
//! its own answer, the hung and the crashed one their harness errors, and the guest boots again
//! (`type1.first=`) at the trace after each, so the last one still runs.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use vfio_backend::qemu::{is_static_elf, run_traces_in_guest, GuestOptions, BUSYBOX_PATHS};

/// Trace 1 hangs, trace 2 stops the "guest" mid-way; 0 and 3 answer.
const FAKE_QEMU: &str = r#"#!/bin/sh
first=0
for a in "$@"; do
    case "$a" in *type1.first=*) first=${a##*type1.first=} ;; esac
done
echo "$first" >> "$0.boots"
echo "@@INFO kernel=fake"
i=$first
while [ "$i" -lt 4 ]; do
    echo "@@TRACE $i"
    echo "@@BEGIN statements=0"
    [ "$i" -eq 1 ] && exec sleep 60
    [ "$i" -eq 2 ] && exit 0
    echo "@@END"
    echo "@@DONE $i exit status: 0"
    i=$((i + 1))
done
echo "@@EXIT 0"
"#;

fn scratch() -> PathBuf {
    let d = std::env::temp_dir().join(format!("type1-one-boot-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn executable(p: &Path, text: &str) {
    std::fs::write(p, text).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn a_hung_and_a_crashed_trace_are_their_own_errors_and_the_rest_still_run() {
    let cpio = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .any(|d| d.join("cpio").exists());
    if !cpio || !BUSYBOX_PATHS.iter().any(|b| is_static_elf(Path::new(b))) {
        eprintln!("skipped: needs cpio and busybox-static to build the initramfs");
        return;
    }
    let dir = scratch();
    // A cached "kernel" (nothing boots it) and a stand-in guest program.
    let cache = dir.join("cache");
    let kdir = cache.join("fake-kernel");
    std::fs::create_dir_all(&kdir).unwrap();
    std::fs::write(kdir.join("vmlinuz"), "").unwrap();
    let ready = serde_json::json!({"vmlinuz": kdir.join("vmlinuz"), "modules": []});
    std::fs::write(kdir.join("ready.json"), ready.to_string()).unwrap();
    let replay = dir.join("vfio-replay");
    executable(&replay, "#!/bin/sh\n");
    let qemu = dir.join("qemu");
    executable(&qemu, FAKE_QEMU);

    let opts = GuestOptions {
        kernel: "fake-kernel".into(),
        cache_dir: Some(cache),
        replay_bin: Some(replay),
        timeout: Duration::from_secs(3),
        qemu: qemu.clone(),
        ..GuestOptions::default()
    };
    let stmts = type1_trace::parse("container\n").unwrap().stmts;
    let traces = [&stmts[..], &stmts[..], &stmts[..], &stmts[..]];
    let mut answers = Vec::new();
    run_traces_in_guest(&traces, &opts, &mut |_| {}, &mut |i, r| {
        answers.push((i, r.map(|run| run.kernel).map_err(|e| e.to_string())))
    })
    .unwrap();
    let boots = std::fs::read_to_string(dir.join("qemu.boots")).unwrap();
    let _ = std::fs::remove_dir_all(&dir);

    assert_eq!(
        boots, "0\n2\n3\n",
        "booted again after the hung and the crashed trace"
    );
    let indexes: Vec<usize> = answers.iter().map(|(i, _)| *i).collect();
    assert_eq!(indexes, [0, 1, 2, 3]);
    assert_eq!(answers[0].1, Ok("fake".to_string()));
    let hung = answers[1].1.as_ref().unwrap_err();
    assert!(hung.contains("no answer after 3 s"), "{hung}");
    let crashed = answers[2].1.as_ref().unwrap_err();
    assert!(crashed.contains("the guest stopped"), "{crashed}");
    assert_eq!(answers[3].1, Ok("fake".to_string()));
}
