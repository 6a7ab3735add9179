//! Record mode against a fake kernel: `tests/c/record_me.c` runs with
//! `LD_PRELOAD="libtype1_preload.so fake_kernel.so"` and `TYPE1_RECORD=FILE`, so the shim passes
//! every /dev/vfio request through (dlsym RTLD_NEXT) to the fake (`tests/c/fake_kernel.c`: the
//! engine through libtype1.so, with the charge shown in VmLck) and writes the trace. The trace
//! must parse and replay on the engine with every expectation met.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn cc(args: &[String]) {
    let o = Command::new("cc")
        .args(args)
        .output()
        .expect("`cc` must be on PATH to build the C tests");
    assert!(
        o.status.success(),
        "cc {args:?}:\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn a_recorded_stream_replays_on_the_engine_with_every_expectation_met() {
    let libs = common::build(&["type1-preload", "type1-capi"]);
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c");
    let tmp = std::env::temp_dir().join(format!("type1-record-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let fake = tmp.join("fake_kernel.so");
    let prog = tmp.join("record_me");
    let trace: PathBuf = tmp.join("recorded.trace");
    let s = |p: &Path| p.display().to_string();
    cc(&[
        "-shared".into(),
        "-fPIC".into(),
        "-o".into(),
        s(&fake),
        s(&here.join("fake_kernel.c")),
        format!("-I{}", s(&libs.join("include"))),
        format!("-L{}", s(&libs)),
        format!("-Wl,-rpath,{}", s(&libs)),
        "-ltype1".into(),
        "-ldl".into(),
    ]);
    cc(&["-o".into(), s(&prog), s(&here.join("record_me.c"))]);
    let preload = format!("{} {}", s(&libs.join("libtype1_preload.so")), s(&fake));
    let o = Command::new(&prog)
        .env("LD_PRELOAD", preload)
        .env("TYPE1_RECORD", &trace)
        .env_remove("TYPE1_GROUPS")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let text = std::fs::read_to_string(&trace).expect("the trace was written");
    let _ = std::fs::remove_dir_all(&tmp);
    // What was recorded: the container, the group, a region from /proc/self/maps, every map
    // and unmap with the kernel's answer, and the request the language has no verb for.
    for want in [
        "container type1v2",
        "domain g7",
        "map vaddr=r0 iova=0x40000000 size=0x200000",
        "=> ok locked=+512",
        "=> EEXIST locked=+0",
        "map vaddr=r0+0x1 iova=0x80000000 size=0x1000",
        "map vaddr=0x1000 iova=0x80000000 size=0x1000",
        "=> EFAULT",
        "=> EOVERFLOW",
        "unmap iova=0x40000000 size=0x200000",
        "=> ok size=0x200000 locked=-512",
        "unmap all",
        "=> ok size=0x10000 locked=-16",
        "# ioctl 0x3bc7 on the container -> Err(25)",
        "info argsz=24",
    ] {
        assert!(text.contains(want), "no {want:?} in:\n{text}");
    }
    let t = type1_trace::parse(&text).unwrap_or_else(|e| panic!("{e:?}:\n{text}"));
    let r = type1_cli::runner::replay(&t, &type1_cli::runner::Options::default(), &mut |_| {});
    assert_eq!(r.failures(), Vec::new(), "{text}");
    assert_eq!(r.exit_code(), 0);
    let expectations = text
        .lines()
        .filter(|l| l.contains("=>") && !l.starts_with('#'))
        .count();
    assert!(expectations >= 10, "{expectations} expectations:\n{text}");
}
