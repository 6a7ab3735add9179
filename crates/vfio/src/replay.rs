//! Runs statements against the kernel (inside the guest): one [`Record`] per statement.

use std::collections::BTreeMap;

use crate::container::{locked_pages, BitmapArg, VfioContainer};
use crate::record::Record;
use crate::stmt::{Backing, Stmt, StmtKind, Vaddr};
use crate::sys::{self, MmapKind};

/// Container settings from the `container` statement, used when the domain is attached.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Settings {
    v2: bool,
    dma_entry_limit: Option<u32>,
    memlock: Option<Option<u64>>,
    cap_ipc_lock: bool,
}

/// Called at each `check`, after the guest printed `@@CHECKPOINT line=N`: it returns when the
/// host has read the IOMMU tables (the guest program waits for a line on stdin).
pub trait Checkpoint {
    fn pause(&mut self, line: usize);
}

/// A checkpoint that does not wait (runs outside a guest, tests).
pub struct NoPause;

impl Checkpoint for NoPause {
    fn pause(&mut self, _line: usize) {}
}

/// Prints the marker on stdout and waits for one line on stdin.
pub struct StdioPause;

impl Checkpoint for StdioPause {
    fn pause(&mut self, line: usize) {
        use std::io::{BufRead, Write};
        println!("@@CHECKPOINT line={line}");
        let _ = std::io::stdout().flush();
        let mut s = String::new();
        let _ = std::io::stdin().lock().read_line(&mut s);
    }
}

/// Bytes of a bitmap buffer for `size` bytes in pages of `pgsize` (whole u64 words, at least
/// one), as the engine's runner sizes it.
pub fn bitmap_bytes(size: u64, pgsize: u64) -> u64 {
    let pages = if pgsize == 0 {
        0
    } else {
        size.div_ceil(pgsize)
    };
    (pages.div_ceil(64) * 8).max(8)
}

/// The replay state: the container (once a domain is attached) and the named regions.
pub struct Replayer {
    group: u32,
    settings: Option<Settings>,
    container: Option<VfioContainer>,
    domain: Option<String>,
    regions: BTreeMap<String, (u64, u64)>,
}

impl Replayer {
    /// `group`: the IOMMU group number of the guest's device (/dev/vfio/N).
    pub fn new(group: u32) -> Self {
        Replayer {
            group,
            settings: None,
            container: None,
            domain: None,
            regions: BTreeMap::new(),
        }
    }

    fn resolve(&self, v: &Vaddr) -> Result<u64, String> {
        match v {
            Vaddr::Abs(a) => Ok(*a),
            Vaddr::Named { name, offset } => self
                .regions
                .get(name)
                .map(|&(base, _)| base.wrapping_add(*offset as u64))
                .ok_or_else(|| format!("no mmap named {name:?}")),
        }
    }

    /// Runs one statement.
    pub fn step(&mut self, st: &Stmt, cp: &mut dyn Checkpoint) -> Record {
        let op = match &st.kind {
            StmtKind::Unsupported { name } => name.as_str(),
            k => k.verb(),
        };
        let mut r = Record::new(st.line, op);
        self.exec(st, &mut r, cp);
        if !st.ignored.is_empty() && !r.cannot {
            let note = format!(
                "not reproducible in the kernel, ignored: {}",
                st.ignored.join(", ")
            );
            r.message = Some(match r.message.take() {
                Some(m) => format!("{m}; {note}"),
                None => note,
            });
        }
        r.locked = locked_pages();
        r.avail = match &self.container {
            Some(c) => c.avail().map(u64::from),
            None => None,
        };
        r
    }

    fn container(&self, r: &mut Record) -> Option<&VfioContainer> {
        if self.container.is_none() {
            r.cannot("no container yet: the kernel needs a group (a `domain` statement) before it takes requests");
        }
        self.container.as_ref()
    }

    fn exec(&mut self, st: &Stmt, r: &mut Record, cp: &mut dyn Checkpoint) {
        match &st.kind {
            StmtKind::Container {
                v2,
                dma_entry_limit,
                memlock,
                cap_ipc_lock,
            } => {
                self.settings = Some(Settings {
                    v2: *v2,
                    dma_entry_limit: *dma_entry_limit,
                    memlock: Some(memlock.unwrap_or(None)),
                    cap_ipc_lock: *cap_ipc_lock,
                });
            }
            StmtKind::Domain { name } => {
                if self.container.is_some() {
                    r.cannot("cannot: one device in the guest, so one group and one domain");
                    return;
                }
                let s = self.settings.clone().unwrap_or(Settings {
                    v2: true,
                    dma_entry_limit: None,
                    memlock: Some(None),
                    cap_ipc_lock: false,
                });
                match VfioContainer::open(
                    self.group,
                    s.v2,
                    s.dma_entry_limit,
                    s.memlock,
                    s.cap_ipc_lock,
                ) {
                    Ok(c) => {
                        self.container = Some(c);
                        self.domain = Some(name.clone());
                    }
                    Err(e) => r.cannot(format!("setting up the container: {e}")),
                }
            }
            StmtKind::Detach { .. } => {
                r.cannot("cannot: detaching the only group would close the container");
            }
            StmtKind::Mmap {
                name,
                size,
                backing,
                writable,
                at,
            } => {
                let kind = match backing {
                    Backing::Page4k => MmapKind::Page4k,
                    Backing::Thp => MmapKind::Thp,
                    Backing::Hugetlb2m => MmapKind::Hugetlb2m,
                    Backing::Hugetlb1g => MmapKind::Hugetlb1g,
                    Backing::Pfnmap => {
                        r.cannot("cannot: a pfnmap needs a device BAR mapped through the device fd (not done)");
                        return;
                    }
                };
                match sys::mmap_anon(*size, *writable, kind, *at) {
                    Ok(a) => {
                        self.regions.insert(name.clone(), (a, *size));
                    }
                    Err(e) => r.cannot(format!("cannot: mmap of {size:#x} bytes failed: {e}")),
                }
            }
            StmtKind::Munmap { name, range } => {
                let Some(&(base, len)) = self.regions.get(name) else {
                    r.cannot(format!("no mmap named {name:?}"));
                    return;
                };
                let (off, sz) = range.unwrap_or((0, len));
                if let Err(e) = sys::munmap(base + off, sz) {
                    r.cannot(format!("munmap failed: {e}"));
                }
            }
            StmtKind::Map {
                vaddr,
                iova,
                size,
                flags,
                argsz,
            } => {
                let v = match self.resolve(vaddr) {
                    Ok(v) => v,
                    Err(e) => {
                        r.cannot(e);
                        return;
                    }
                };
                let Some(c) = self.container(r) else { return };
                if let Err(e) = c.map_dma(argsz.unwrap_or(32), *flags, v, *iova, *size) {
                    r.fail(e.code());
                }
            }
            StmtKind::Unmap {
                iova,
                size,
                flags,
                argsz,
            } => {
                let Some(c) = self.container(r) else { return };
                let dirty = flags & 1 != 0;
                let bitmap = dirty.then(|| {
                    let pgsize = c
                        .get_info(4096)
                        .map(|i| 1u64 << i.iova_pgsizes.trailing_zeros().min(63))
                        .unwrap_or(4096);
                    BitmapArg {
                        pgsize,
                        size: bitmap_bytes(*size, pgsize),
                    }
                });
                let argsz = argsz.unwrap_or(if dirty { 48 } else { 24 });
                let out = c.unmap_dma(argsz, *flags, *iova, *size, bitmap);
                r.out_size = Some(out.out_size);
                match out.result {
                    Ok(s) => {
                        r.size = Some(s);
                        r.bitmap = out.bitmap;
                    }
                    Err(e) => r.fail(e.code()),
                }
            }
            StmtKind::Info { argsz } => {
                let Some(c) = self.container(r) else { return };
                match c.get_info(argsz.unwrap_or(4096)) {
                    Ok(i) => r.info = Some(i),
                    Err(e) => r.fail(e.code()),
                }
            }
            StmtKind::DirtyStart | StmtKind::DirtyStop => {
                let Some(c) = self.container(r) else { return };
                let flag = if st.kind == StmtKind::DirtyStart {
                    1
                } else {
                    2
                };
                if let Err(e) = c.dirty(8, flag) {
                    r.fail(e.code());
                }
            }
            StmtKind::DirtyGet { iova, size, pgsize } => {
                let Some(c) = self.container(r) else { return };
                let arg = BitmapArg {
                    pgsize: *pgsize,
                    size: bitmap_bytes(*size, *pgsize),
                };
                match c.dirty_get(*iova, *size, arg) {
                    Ok(b) => r.bitmap = Some(b),
                    Err(e) => r.fail(e.code()),
                }
            }
            StmtKind::Unsupported { name } => {
                r.cannot(format!(
                    "cannot: `{name}` is not supported by the kernel replay"
                ));
            }
            StmtKind::Check => {
                cp.pause(st.line);
                // The host fills in the leaves it read at the checkpoint.
                r.domains = self
                    .domain
                    .as_ref()
                    .map(|d| BTreeMap::from([(d.clone(), BTreeMap::new())]));
            }
        }
    }
}

/// Runs every statement; `emit` gets each record as it is made.
pub fn replay(
    stmts: &[Stmt],
    group: u32,
    cp: &mut dyn Checkpoint,
    emit: &mut dyn FnMut(&Record),
) -> Vec<Record> {
    let mut rp = Replayer::new(group);
    let mut out = Vec::with_capacity(stmts.len());
    for st in stmts {
        let r = rp.step(st, cp);
        emit(&r);
        out.push(r);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(line: usize, kind: StmtKind) -> Stmt {
        Stmt {
            line,
            kind,
            ignored: vec![],
        }
    }

    /// Without /dev/vfio the statements that need the kernel say so; memory statements run.
    #[test]
    fn runs_memory_statements_and_refuses_requests_without_a_container() {
        let stmts = vec![
            st(
                1,
                StmtKind::Mmap {
                    name: "a".into(),
                    size: 2 << 20,
                    backing: Backing::Thp,
                    writable: true,
                    at: None,
                },
            ),
            st(
                2,
                StmtKind::Munmap {
                    name: "a".into(),
                    range: Some((4096, 4096)),
                },
            ),
            st(
                3,
                StmtKind::Map {
                    vaddr: Vaddr::Named {
                        name: "a".into(),
                        offset: 0,
                    },
                    iova: 0,
                    size: 4096,
                    flags: 3,
                    argsz: None,
                },
            ),
            st(
                4,
                StmtKind::Mmap {
                    name: "p".into(),
                    size: 4096,
                    backing: Backing::Pfnmap,
                    writable: true,
                    at: None,
                },
            ),
        ];
        let recs = replay(&stmts, 1, &mut NoPause, &mut |_| {});
        assert!(recs[0].ok && recs[1].ok, "{recs:?}");
        assert!(recs[2].cannot && recs[3].cannot);
        assert_eq!(recs[2].op, "map");
        assert!(recs[0].locked.is_some());
    }

    #[test]
    fn bitmap_sizes() {
        assert_eq!(bitmap_bytes(4096, 4096), 8);
        assert_eq!(bitmap_bytes(65 * 4096, 4096), 16);
        assert_eq!(bitmap_bytes(0, 4096), 8);
    }
}
