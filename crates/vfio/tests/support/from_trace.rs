//! Trace → statements, and trace expectations checked against the kernel's records.
//!
//! Shared by the tests and the `kernel_check` example through `#[path]`, together with the
//! trace parser of crates/cli (also included by path, so this crate does not depend on the
//! CLI). The CLI does the same conversion from its own AST.

use std::collections::BTreeMap;

use super::trace::{
    self, Backing as TB, ExpItem, ExpResult, Layout, LockedExp, Memlock, StmtKind as T, VaddrRef,
};
use vfio_backend::record::Record;
use vfio_backend::stmt::{Backing, Stmt, StmtKind, Vaddr};

/// The statements of a parsed trace, and the kernel it asks for (`container kernel=`).
pub fn convert(t: &trace::Trace) -> (Vec<Stmt>, Option<String>) {
    let mut kernel = None;
    let stmts = t
        .stmts
        .iter()
        .map(|s| {
            let mut ignored = Vec::new();
            let kind = match &s.kind {
                T::Container {
                    v2,
                    dma_entry_limit,
                    memlock,
                    cap_ipc_lock,
                    kernel: k,
                    ..
                } => {
                    kernel = k.clone();
                    StmtKind::Container {
                        v2: *v2,
                        dma_entry_limit: *dma_entry_limit,
                        memlock: memlock.map(|m| match m {
                            Memlock::Bytes(b) => Some(b),
                            Memlock::Unlimited => None,
                        }),
                        cap_ipc_lock: *cap_ipc_lock,
                    }
                }
                T::Domain {
                    name,
                    format,
                    pgsizes,
                    ..
                } => {
                    if let Some(f) = format.as_deref().filter(|f| !f.starts_with("x86_64")) {
                        ignored.push(format!("format={f} (the guest's IOMMU is VT-d)"));
                    }
                    if pgsizes.is_some() {
                        ignored.push("pgsizes=".into());
                    }
                    StmtKind::Domain { name: name.clone() }
                }
                T::Detach { name } => StmtKind::Detach { name: name.clone() },
                T::Mmap {
                    name,
                    size,
                    backing,
                    layout,
                    prot_write,
                    at,
                    phys,
                    ..
                } => {
                    if *layout == Layout::Scattered {
                        ignored.push("layout=scattered".into());
                    }
                    if let Some(p) = phys {
                        ignored.push(format!("phys={p:#x}"));
                    }
                    StmtKind::Mmap {
                        name: name.clone(),
                        size: *size,
                        backing: match backing {
                            TB::Page4k => Backing::Page4k,
                            TB::Thp => Backing::Thp,
                            TB::Hugetlb2m => Backing::Hugetlb2m,
                            TB::Hugetlb1g => Backing::Hugetlb1g,
                            TB::Pfnmap => Backing::Pfnmap,
                        },
                        writable: *prot_write,
                        at: *at,
                    }
                }
                T::Munmap { name, range, .. } => StmtKind::Munmap {
                    name: name.clone(),
                    range: *range,
                },
                T::Map {
                    vaddr,
                    iova,
                    size,
                    flags,
                    argsz,
                    ..
                } => StmtKind::Map {
                    vaddr: match vaddr {
                        VaddrRef::Abs(a) => Vaddr::Abs(*a),
                        VaddrRef::Named { name, offset } => Vaddr::Named {
                            name: name.clone(),
                            offset: (*offset).clamp(i64::MIN as i128, i64::MAX as i128) as i64,
                        },
                    },
                    iova: *iova,
                    size: *size,
                    flags: *flags,
                    argsz: *argsz,
                },
                T::Unmap {
                    iova,
                    size,
                    flags,
                    argsz,
                    ..
                } => StmtKind::Unmap {
                    iova: *iova,
                    size: *size,
                    flags: *flags,
                    argsz: *argsz,
                },
                T::Info { argsz, .. } => StmtKind::Info { argsz: *argsz },
                T::DirtyStart => StmtKind::DirtyStart,
                T::DirtyStop => StmtKind::DirtyStop,
                T::DirtyGet {
                    iova, size, pgsize, ..
                } => StmtKind::DirtyGet {
                    iova: *iova,
                    size: *size,
                    pgsize: *pgsize,
                },
                T::Check => StmtKind::Check,
                // A verb added to the trace language later: reported, not run.
                #[allow(unreachable_patterns)]
                other => StmtKind::Unsupported {
                    name: other.verb().to_string(),
                },
            };
            Stmt {
                line: s.line,
                kind,
                ignored,
            }
        })
        .collect();
    (stmts, kernel)
}

/// Checks each statement's `=> ...` against the kernel's record for the same line. Returns
/// (expectations checked, disagreements as `line N: ...`). `dmas=` and `pinned=` are not
/// observable in the kernel and are skipped.
pub fn check_expectations(t: &trace::Trace, records: &[Record]) -> (usize, Vec<String>) {
    let by_line: BTreeMap<usize, &Record> = records.iter().map(|r| (r.line, r)).collect();
    let mut checked = 0;
    let mut bad = Vec::new();
    let mut prev_locked = 0u64;
    for s in &t.stmts {
        let Some(r) = by_line.get(&s.line) else {
            bad.push(format!("line {}: no record", s.line));
            continue;
        };
        let locked = r.locked.unwrap_or(0);
        if let Some(e) = &s.expect {
            let mut fail = |what: String| bad.push(format!("line {}: {}: {what}", s.line, s.text));
            match &e.result {
                Some(ExpResult::Ok) => {
                    checked += 1;
                    if !r.ok {
                        fail(format!(
                            "expected ok, kernel: {}",
                            r.errno.clone().or(r.message.clone()).unwrap_or_default()
                        ));
                    }
                }
                Some(ExpResult::Errno(n)) => {
                    checked += 1;
                    if r.errno.as_deref() != Some(n.name().as_str()) {
                        fail(format!(
                            "expected {n}, kernel: {}",
                            if r.ok {
                                "ok".to_string()
                            } else {
                                r.errno.clone().or(r.message.clone()).unwrap_or_default()
                            }
                        ));
                    }
                }
                None => {}
            }
            for item in &e.items {
                match item {
                    ExpItem::Size(n) => {
                        checked += 1;
                        if r.size != Some(*n) {
                            fail(format!("expected size={n:#x}, kernel: {:?}", r.size));
                        }
                    }
                    ExpItem::Locked(LockedExp::Abs(n)) => {
                        checked += 1;
                        if r.locked != Some(*n) {
                            fail(format!("expected locked={n}, kernel: {:?}", r.locked));
                        }
                    }
                    ExpItem::Locked(LockedExp::Delta(d)) => {
                        checked += 1;
                        let got = locked as i64 - prev_locked as i64;
                        if got != *d {
                            fail(format!("expected locked={d:+}, kernel: {got:+}"));
                        }
                    }
                    ExpItem::Avail(n) => {
                        checked += 1;
                        if r.avail != Some(*n) {
                            fail(format!("expected avail={n}, kernel: {:?}", r.avail));
                        }
                    }
                    ExpItem::Leaves {
                        domain,
                        pgsize,
                        count,
                    } => {
                        checked += 1;
                        let got = r
                            .domains
                            .as_ref()
                            .and_then(|d| d.get(domain))
                            .map(|l| l.get(pgsize).copied().unwrap_or(0));
                        if got != Some(*count) {
                            fail(format!(
                                "expected leaves.{domain}.{pgsize:#x}={count}, kernel: {got:?}"
                            ));
                        }
                    }
                    ExpItem::Dmas(_) | ExpItem::Pinned(_) => {}
                }
            }
        }
        prev_locked = locked;
    }
    (checked, bad)
}
