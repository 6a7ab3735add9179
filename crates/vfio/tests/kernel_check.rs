//! The kernel traces (tests/kernel/*.trace) as the guest runs them, the expectation checker,
//! and — with `TYPE1_KERNEL_CHECK=1` — phase A replayed against the real 7.2 kernel in a QEMU
//! guest (downloads the kernel once into the cache; about 40 s the first time).

use std::path::PathBuf;

use type1_trace::{
    expect, Backing, ExpItem, ExpResult, LockedExp, Record, State, Stmt, StmtKind, Trace, VaddrRef,
};
use vfio_backend::replay::not_reproducible;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn load(rel: &str) -> Trace {
    let text = std::fs::read_to_string(repo().join(rel)).unwrap();
    type1_trace::parse(&text).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[test]
fn phase_a_statements() {
    let t = load("tests/kernel/phase-A.trace");
    let stmts = &t.stmts;
    assert!(matches!(
        &stmts[0].kind,
        StmtKind::Container {
            v2: true,
            dma_entry_limit: None,
            memlock: None,
            cap_ipc_lock: false,
            kernel: Some(k),
        } if k == "7.2"
    ));
    assert!(matches!(&stmts[1].kind, StmtKind::Domain { name, .. } if name == "d0"));
    let mmap = |want: &str| -> &Stmt {
        stmts
            .iter()
            .find(|s| matches!(&s.kind, StmtKind::Mmap { name, .. } if name == want))
            .unwrap_or_else(|| panic!("no mmap {want}"))
    };
    let thp = mmap("bufthp");
    assert!(matches!(
        thp.kind,
        StmtKind::Mmap {
            backing: Backing::Thp,
            size: 0x80_0000,
            prot_write: true,
            at: None,
            ..
        }
    ));
    assert_eq!(not_reproducible(&thp.kind), vec!["layout=scattered"]);
    assert!(matches!(
        mmap("bufro").kind,
        StmtKind::Mmap {
            prot_write: false,
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
            vaddr: VaddrRef::Named {
                offset: 0x11000,
                ..
            },
            ..
        }
    )));
    assert!(matches!(stmts.last().unwrap().kind, StmtKind::Check));
}

/// Records that say exactly what a trace expects, built from its expectations.
fn records_as_expected(t: &Trace) -> Vec<Record> {
    let mut locked = 0u64;
    t.stmts
        .iter()
        .map(|s| {
            let mut r = Record::new(s.line, s.kind.verb());
            if s.kind == StmtKind::Check {
                r.state = Some(State::default());
            }
            if let Some(e) = &s.expect {
                if let Some(ExpResult::Errno(n)) = e.result {
                    r.fail(n);
                }
                for i in &e.items {
                    match i {
                        ExpItem::Size(n) => r.size = Some(*n),
                        ExpItem::Locked(LockedExp::Abs(n)) => locked = *n,
                        ExpItem::Locked(LockedExp::Delta(d)) => locked = (locked as i64 + d) as u64,
                        ExpItem::Avail(n) => r.avail = Some(*n),
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
    let (checked, bad) = expect::check_trace(&t, &recs);
    assert!(checked > 150, "{checked}");
    assert!(bad.is_empty(), "{bad:?}");
    // The 7.2 kernel's EOVERFLOW for a wrapping IOVA, turned into 6.12's EINVAL.
    let i = recs
        .iter()
        .position(|r| r.errno == Some(type1::Errno::EOVERFLOW))
        .unwrap();
    recs[i].errno = Some(type1::Errno::EINVAL);
    let (_, bad) = expect::check_trace(&t, &recs);
    assert_eq!(bad.len(), 1, "{bad:?}");
    assert!(
        bad[0].contains("expected EOVERFLOW, got EINVAL"),
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
    let opts = GuestOptions {
        kernel: kernel.into(),
        ..GuestOptions::default()
    };
    let run = run_in_guest(&t.stmts, &opts, &mut stderr_progress).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(run.records.len(), t.stmts.len());
    let (checked, bad) = expect::check_trace(&t, &run.records);
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
