//! The kernel traces (tests/kernel/*.trace) as statements for the guest, the expectation
//! checker, and — with `TYPE1_KERNEL_CHECK=1` — phase A replayed against the real 7.2 kernel in
//! a QEMU guest (downloads the kernel once into the cache; about 40 s the first time).

use type1_trace as trace;

#[path = "support/from_trace.rs"]
mod from_trace;

use std::path::PathBuf;

use vfio_backend::record::Record;
use vfio_backend::stmt::{self, Backing, StmtKind, Vaddr};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn load(rel: &str) -> trace::Trace {
    let text = std::fs::read_to_string(repo().join(rel)).unwrap();
    trace::parse(&text).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[test]
fn kernel_traces_convert_and_round_trip() {
    let mut n = 0;
    for e in std::fs::read_dir(repo().join("tests/kernel")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_none_or(|x| x != "trace") {
            continue;
        }
        let t = trace::parse(&std::fs::read_to_string(&p).unwrap()).unwrap();
        let (stmts, _) = from_trace::convert(&t);
        assert_eq!(stmts.len(), t.stmts.len());
        let text = stmt::to_json_lines(&stmts);
        assert_eq!(
            stmt::from_json_lines(&text).unwrap(),
            stmts,
            "{}",
            p.display()
        );
        n += 1;
    }
    assert!(n >= 4, "expected the kernel traces, found {n}");
}

#[test]
fn phase_a_statements() {
    let (stmts, kernel) = from_trace::convert(&load("tests/kernel/phase-A.trace"));
    assert_eq!(kernel.as_deref(), Some("7.2"));
    assert!(matches!(
        stmts[0].kind,
        StmtKind::Container {
            v2: true,
            dma_entry_limit: None,
            memlock: None,
            cap_ipc_lock: false
        }
    ));
    assert!(matches!(&stmts[1].kind, StmtKind::Domain { name } if name == "d0"));
    let thp = stmts
        .iter()
        .find(|s| matches!(&s.kind, StmtKind::Mmap { name, .. } if name == "bufthp"))
        .unwrap();
    assert!(matches!(
        thp.kind,
        StmtKind::Mmap {
            backing: Backing::Thp,
            size: 0x80_0000,
            writable: true,
            at: None,
            ..
        }
    ));
    assert_eq!(thp.ignored, vec!["layout=scattered".to_string()]);
    let ro = stmts
        .iter()
        .find(|s| matches!(&s.kind, StmtKind::Mmap { name, .. } if name == "bufro"))
        .unwrap();
    assert!(matches!(
        ro.kind,
        StmtKind::Mmap {
            writable: false,
            ..
        }
    ));
    // A.13: an unknown flag bit goes through as is; A.30: a short argsz.
    assert!(stmts.iter().any(|s| matches!(
        &s.kind,
        StmtKind::Map {
            flags: 0x103,
            iova: 0x187000,
            ..
        }
    )));
    assert!(stmts.iter().any(|s| matches!(
        &s.kind,
        StmtKind::Map {
            argsz: Some(16),
            vaddr: Vaddr::Named {
                offset: 0x11000,
                ..
            },
            ..
        }
    )));
    assert!(matches!(stmts.last().unwrap().kind, StmtKind::Check));
}

/// Records that say exactly what a trace expects, built from its expectations.
fn records_as_expected(t: &trace::Trace) -> Vec<Record> {
    let mut locked = 0u64;
    t.stmts
        .iter()
        .map(|s| {
            let mut r = Record::new(s.line, s.kind.verb());
            if let Some(e) = &s.expect {
                if let Some(trace::ExpResult::Errno(n)) = &e.result {
                    r.ok = false;
                    r.errno = Some(n.name());
                }
                for i in &e.items {
                    match i {
                        trace::ExpItem::Size(n) => r.size = Some(*n),
                        trace::ExpItem::Locked(trace::LockedExp::Abs(n)) => locked = *n,
                        trace::ExpItem::Locked(trace::LockedExp::Delta(d)) => {
                            locked = (locked as i64 + d) as u64
                        }
                        trace::ExpItem::Avail(n) => r.avail = Some(*n),
                        _ => {}
                    }
                }
            }
            r.locked = Some(locked);
            r
        })
        .collect()
}

#[test]
fn expectation_checker_agrees_and_disagrees() {
    let t = load("tests/kernel/phase-A.trace");
    let mut recs = records_as_expected(&t);
    let (checked, bad) = from_trace::check_expectations(&t, &recs);
    assert!(checked > 150, "{checked}");
    assert!(bad.is_empty(), "{bad:?}");
    // The 7.2 kernel's EOVERFLOW for a wrapping IOVA, turned into 6.12's EINVAL.
    let i = recs
        .iter()
        .position(|r| r.errno.as_deref() == Some("EOVERFLOW"))
        .unwrap();
    recs[i].errno = Some("EINVAL".into());
    let (_, bad) = from_trace::check_expectations(&t, &recs);
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert!(
        bad[0].contains("expected EOVERFLOW, kernel: EINVAL"),
        "{}",
        bad[0]
    );
}

fn kernel_check_enabled() -> bool {
    std::env::var("TYPE1_KERNEL_CHECK").is_ok_and(|v| v == "1")
}

fn run_trace(rel: &str, kernel: &str) {
    use vfio_backend::qemu::{run_in_guest, stderr_progress, GuestOptions};
    let t = load(rel);
    let (stmts, _) = from_trace::convert(&t);
    let opts = GuestOptions {
        kernel: kernel.into(),
        ..GuestOptions::default()
    };
    let run = run_in_guest(&stmts, &opts, &mut stderr_progress).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(run.records.len(), stmts.len());
    let (checked, bad) = from_trace::check_expectations(&t, &run.records);
    eprintln!(
        "{rel} on {}: {checked} expectations, {} disagree; total {:.1} s",
        run.kernel,
        bad.len(),
        run.timings.total
    );
    assert!(bad.is_empty(), "the kernel disagrees:\n{}", bad.join("\n"));
}

/// Boots the 7.2 kernel and replays phase A: every recorded answer must come back.
/// Runs only with `TYPE1_KERNEL_CHECK=1` (needs root, qemu-system-x86, cpio, kmod,
/// busybox-static and Debian's package archive).
#[test]
fn phase_a_against_the_kernel() {
    if !kernel_check_enabled() {
        eprintln!("skipped: set TYPE1_KERNEL_CHECK=1 to boot the 7.2 kernel in QEMU");
        return;
    }
    run_trace("tests/kernel/phase-A.trace", "7.2");
}

/// The page sizes the kernel gives THP, hugetlb 2M/1G and 4K memory at aligned and 4K-offset
/// IOVAs, read back from the emulated VT-d tables (kernel/pagesizes.trace).
#[test]
#[ignore = "boots QEMU: TYPE1_KERNEL_CHECK=1 cargo test -p vfio-backend -- --ignored"]
fn pagesizes_against_the_kernel() {
    run_trace("kernel/pagesizes.trace", "7.2");
}
