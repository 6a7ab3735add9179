//! The `kernel=3.11` profile: the driver of "vfio: hugepage support for vfio_iommu_type1" (2013,
//! Linux 3.10 and 3.11) as its source reads, the system this project started from.
//!
//! What differs from the modern paths (spec §3.7; `docs/kernel-3.11.md` has the table):
//! - one IOMMU domain per container, allocated at `VFIO_SET_IOMMU` (so a group is attached
//!   before any map); no IOVA ranges, no reserved regions, no entry limit, no unmap flags, no
//!   dirty tracking, no vaddr update; `type1v2` does not exist;
//! - `vfio_dma_do_map` checks alignment to the domain's smallest page, wrap (EINVAL) and overlap
//!   (EEXIST), then pins run by run with `vfio_pin_pages` (one page at a time, stopping at a
//!   discontiguous or reserved pfn or where the next page would pass RLIMIT_MEMLOCK, so the next
//!   run's first page fails with ENOMEM), refuses a run whose IOVA is already translated (EBUSY),
//!   maps it, and **merges** it with the entry below and above when the permissions are equal and
//!   the vaddrs contiguous; on error every entry overlapping the request is cut back with
//!   `vfio_remove_dma_overlap`;
//! - `vfio_dma_do_unmap` finds the entries overlapping the range and hands each to
//!   `vfio_remove_dma_overlap` (covered, low end, high end, or a **split** in the middle), whose
//!   `vfio_unmap_unpin` walks the IOMMU 4K at a time with `iova_to_phys`, advancing by what
//!   `iommu_unmap` removed: a large leaf goes whole, so the size reported (the sum) may be larger
//!   than asked.
//!
//! Invariants owned here: every call either succeeds or, after an error, leaves no part of the
//! request mapped, pinned or charged (the 2013 unwind); nothing panics on any input. What 3.11
//! itself breaks is reproduced, not hidden: an unmap that starts inside a large leaf removes the
//! whole leaf and unpins 512 pages counted from the mid-leaf pfn (pages before it stay pinned, and
//! pages past the leaf are released though another leaf or nothing pinned them). Each such case
//! is a named warning (`take_warnings`) and a violation naming the modern invariant it breaks
//! (`check_invariants`); each `WARN_ON` of the 2013 code a request reaches is a warning too.
//! Per-entry charges (`Dma::locked_vm`, which 3.11 did not have: it charged `current->mm`
//! only) are kept so the checker can compare them with the account: they move with merges and
//! splits, and a split recounts the lower part from its translations.

use iommu::{Prot, SZ_2M};

use super::{Container, Dma};
use crate::error::{Errno, Error};
use crate::mm::{Batch, MmError, PageSource, PinMode, Pinned};
use crate::profile::Strategy;
use crate::uapi::{
    InfoReply, MapDma, UnmapDma, DMA_MAP_MINSZ, DMA_UNMAP_MINSZ, INFO_MINSZ, MAP_FLAG_READ,
    MAP_FLAG_WRITE, VFIO_TYPE1_IOMMU,
};
use crate::{PAGE_SHIFT, PAGE_SIZE};

/// `VFIO_CHECK_EXTENSION` on 3.11: the type1 driver knew only `VFIO_TYPE1_IOMMU`.
pub(super) fn check_extension(ext: u32) -> u32 {
    u32::from(ext == VFIO_TYPE1_IOMMU)
}

/// One pinned run of `vfio_pin_pages`.
#[derive(Clone, Copy, Debug)]
struct Run {
    pfn: u64,
    npage: u64,
    /// Pages charged (0 for a reserved pfn).
    acct: u64,
    reserved: bool,
}

/// `VFIO_IOMMU_DIRTY_PAGES` on 3.11: an ioctl the driver did not know (it came in 5.8).
pub(super) fn no_dirty_pages() -> Error {
    Error::V3_11 {
        errno: Errno::ENOTTY,
        why: "VFIO_IOMMU_DIRTY_PAGES did not exist (dirty tracking came in 5.8): the type1 \
              driver answers an unknown ioctl with ENOTTY"
            .into(),
    }
}

fn no_driver(what: &str) -> Error {
    Error::V3_11 {
        errno: Errno::ENOTTY,
        why: format!(
            "{what} with no group attached: 3.11's VFIO_SET_IOMMU needs a group first, so the \
             container has no IOMMU driver and the ioctl answers ENOTTY; add a `domain` first"
        ),
    }
}

impl<M: PageSource> Container<M> {
    /// What 3.11 allows of an attach: every group joins the one domain allocated at
    /// `VFIO_SET_IOMMU`, which had the IOMMU's page sizes (4K at the smallest).
    pub(super) fn attach_3_11(&self, domain: &iommu::Domain) -> Result<(), Error> {
        if let Some(first) = self.domains.first() {
            return Err(Error::V3_11 {
                errno: Errno::EINVAL,
                why: format!(
                    "one IOMMU domain per container: every group joins the domain of {:?}; a \
                     second domain with its own page tables cannot be modelled",
                    first.name
                ),
            });
        }
        if domain.min_pgsize() < PAGE_SIZE {
            return Err(Error::V3_11 {
                errno: Errno::EINVAL,
                why: format!(
                    "an IOMMU page of {:#x} bytes: 3.11 maps whole CPU pages (its IOMMUs had 4K \
                     pages at the smallest)",
                    domain.min_pgsize()
                ),
            });
        }
        Ok(())
    }

    /// `VFIO_IOMMU_GET_INFO` on 3.11: flags 0 and the domain's page-size bitmap, nothing more.
    pub(super) fn get_info_3_11(&self, argsz: u32) -> Result<InfoReply, Error> {
        let Some(first) = self.domains.first() else {
            return Err(no_driver("VFIO_IOMMU_GET_INFO"));
        };
        if argsz < INFO_MINSZ {
            return Err(Error::Argsz {
                argsz,
                min: INFO_MINSZ,
            });
        }
        let pgsizes = first.domain.pgsize_bitmap();
        let mut bytes = Vec::with_capacity(INFO_MINSZ as usize);
        bytes.extend_from_slice(&argsz.to_le_bytes());
        bytes.extend_from_slice(&0u32.to_le_bytes());
        bytes.extend_from_slice(&pgsizes.to_le_bytes());
        Ok(InfoReply {
            argsz,
            flags: 0,
            iova_pgsizes: pgsizes,
            cap_offset: 0,
            bytes,
            argsz_needed: INFO_MINSZ,
            dma_avail: 0,
            iova_ranges: Vec::new(),
            migration_pgsize: 0,
        })
    }

    /// `vfio_iommu_type1_ioctl(VFIO_IOMMU_MAP_DMA)` and `vfio_dma_do_map` of 3.11.
    pub(super) fn map_dma_3_11(&mut self, req: &MapDma) -> Result<(), Error> {
        let allowed = MAP_FLAG_READ | MAP_FLAG_WRITE;
        if req.argsz < DMA_MAP_MINSZ {
            return Err(Error::Argsz {
                argsz: req.argsz,
                min: DMA_MAP_MINSZ,
            });
        }
        if req.flags & !allowed != 0 {
            return Err(Error::UnknownFlags {
                bits: req.flags & !allowed,
                allowed,
            });
        }
        Seed(self).vfio_dma_do_map(req)
    }

    /// `vfio_iommu_type1_ioctl(VFIO_IOMMU_UNMAP_DMA)` and `vfio_dma_do_unmap` of 3.11.
    pub(super) fn unmap_dma_3_11(&mut self, req: &UnmapDma) -> Result<u64, Error> {
        if req.argsz < DMA_UNMAP_MINSZ {
            return Err(Error::Argsz {
                argsz: req.argsz,
                min: DMA_UNMAP_MINSZ,
            });
        }
        if req.flags != 0 {
            return Err(Error::V3_11 {
                errno: Errno::EINVAL,
                why: format!(
                    "UNMAP_DMA flags {:#x}: 3.11 knew no unmap flag (no unmap-all, dirty bitmap or \
                     vaddr invalidation) and refuses any with EINVAL",
                    req.flags
                ),
            });
        }
        Seed(self).vfio_dma_do_unmap(req.iova, req.size)
    }

    /// 3.11's `vfio_iommu_type1_release` (the last group left, or the container closed):
    /// every entry is removed through `vfio_remove_dma_overlap`.
    pub(super) fn release_3_11(&mut self) {
        if self.domains.is_empty() {
            return;
        }
        loop {
            let Some((key, mut size)) = self.dmas.iter().next().map(|d| (d.iova, d.size)) else {
                break;
            };
            Seed(self).vfio_remove_dma_overlap(key, &mut size, key);
            if size == 0 {
                // `WARN_ON(!size)`: the model drops what the kernel would leak.
                self.warnings.push(format!(
                    "WARN_ON(!size) in vfio_iommu_type1_release: the entry at {key:#x} unmapped \
                     nothing"
                ));
                self.dmas.unlink_dma(key);
            }
        }
        self.mm.flush();
    }
}

/// The container seen through the 2013 driver's functions (their names are the kernel's, so
/// they live apart from the modern paths of the same names).
struct Seed<'a, M: PageSource>(&'a mut Container<M>);

impl<M: PageSource> Seed<'_, M> {
    /// 3.11's `vfio_pin_pages`: pin from `vaddr` the first page and every next page that is
    /// physically contiguous, not reserved, and within RLIMIT_MEMLOCK; charge them. A reserved
    /// first pfn is a run of one page, never charged.
    fn vfio_pin_pages(&mut self, vaddr: u64, npage: u64, prot: Prot) -> Result<Run, Error> {
        let write = prot.contains(Prot::WRITE);
        let lock_cap = self.0.cfg.cap_ipc_lock;
        let limit = self.0.account.limit();
        let per_page = self.0.cfg.strategy == Strategy::PerPage;
        let cap = if per_page { 1 } else { Batch::MAX_CAPACITY };
        let mut batch =
            Batch::with_buffer(PinMode::PerPage, cap, std::mem::take(&mut self.0.batch_buf));
        self.0.stats.pin_calls += 1;
        let first = self.0.mm.pin(vaddr, npage, write, &mut batch);
        let res = self.pin_run(
            first, vaddr, npage, write, lock_cap, limit, per_page, &mut batch,
        );
        for r in batch.leftovers().collect::<Vec<_>>() {
            if !r.reserved {
                self.0.mm.unpin(r.pfn, r.npages, false, false);
            }
        }
        batch.clear();
        self.0.batch_buf = batch.into_buffer();
        let run = res?;
        if run.acct > 0 {
            // `vfio_lock_acct(i)`: within the limit by construction (or CAP_IPC_LOCK).
            self.0.account.charge(true, run.acct)?;
            self.0.stats.charges += 1;
        }
        Ok(run)
    }

    /// 3.11's `vfio_unmap_unpin(iommu, dma, iova, *size)`: walk `[iova, +size)` a page at a time,
    /// `iommu_unmap` one page (a large leaf goes whole), unpin what it covered from the pfn at
    /// `iova`, advance by what was removed. Returns `(bytes walked, pages unpinned)`; the pages
    /// are uncharged from the account.
    fn vfio_unmap_unpin(&mut self, dma_iova: u64, prot: Prot, iova: u64, size: u64) -> (u64, u64) {
        let start = iova;
        let end = iova.saturating_add(size);
        let mut iova = iova;
        let mut unlocked = 0u64;
        while iova < end {
            let first = &self.0.domains[0].domain;
            let leaf = first.translate(iova);
            let Some(phys) = first.iova_to_phys(iova) else {
                self.0.warnings.push(format!(
                    "WARN_ON(!phys) in vfio_unmap_unpin: iova {iova:#x} of the entry at \
                     {dma_iova:#x} has no translation (an earlier unmap inside a large leaf \
                     removed it); skipped one page"
                ));
                iova = iova.saturating_add(PAGE_SIZE);
                continue;
            };
            let unmapped = self.0.domains[0].domain.unmap(iova, PAGE_SIZE);
            if unmapped == 0 {
                break;
            }
            let npage = unmapped >> PAGE_SHIFT;
            if let Some(l) = leaf.filter(|l| l.iova != iova) {
                self.warn_mid_leaf(iova, phys, l.iova, l.paddr, l.size, npage);
            }
            unlocked += self.vfio_unpin_pages(phys >> PAGE_SHIFT, npage, prot, false);
            iova = iova.saturating_add(unmapped);
        }
        self.0.account.uncharge(unlocked, &mut self.0.violations);
        (iova - start, unlocked)
    }

    /// The mask of the domain's smallest page (`__ffs(pgsize_bitmap)`), with the `WARN_ON(mask &
    /// PAGE_MASK)` of the 2013 code when that page is larger than PAGE_SIZE.
    fn mask_3_11(&mut self, what: &str) -> Result<u64, Error> {
        let Some(first) = self.0.domains.first() else {
            return Err(no_driver(what));
        };
        let min = first.domain.min_pgsize();
        if min > PAGE_SIZE {
            self.0.warnings.push(format!(
                "WARN_ON(mask & PAGE_MASK) in {}: the domain's smallest page is {min:#x}, larger \
                 than PAGE_SIZE (3.11 assumed 4K IOMMU pages)",
                if what.contains("UNMAP") {
                    "vfio_dma_do_unmap"
                } else {
                    "vfio_dma_do_map"
                }
            ));
        }
        Ok(min - 1)
    }

    /// 3.11's `vfio_dma_do_map`: validate, then pin, check, map and merge run by run.
    fn vfio_dma_do_map(&mut self, map: &MapDma) -> Result<(), Error> {
        let mask = self.mask_3_11("VFIO_IOMMU_MAP_DMA")?;
        let mut prot = Prot::NONE;
        if map.flags & MAP_FLAG_WRITE != 0 {
            prot = prot.union(Prot::WRITE);
        }
        if map.flags & MAP_FLAG_READ != 0 {
            prot = prot.union(Prot::READ);
        }
        if prot == Prot::NONE {
            return Err(Error::BadProt { flags: map.flags });
        }
        let pgsize = mask + 1;
        for (what, value) in [("vaddr", map.vaddr), ("iova", map.iova)] {
            if value & mask != 0 {
                return Err(Error::Unaligned {
                    what,
                    value,
                    pgsize,
                });
            }
        }
        if map.size == 0 {
            return Err(Error::ZeroSize);
        }
        if map.size & mask != 0 {
            return Err(Error::Unaligned {
                what: "size",
                value: map.size,
                pgsize,
            });
        }
        let end = map.iova.wrapping_add(map.size);
        for (what, start) in [("iova", map.iova), ("vaddr", map.vaddr)] {
            let e = start.wrapping_add(map.size);
            if e != 0 && e < start {
                return Err(Error::Wraps {
                    what,
                    start,
                    size: map.size,
                    errno: Errno::EINVAL,
                });
            }
        }
        if let Some(d) = self.vfio_find_dma(map.iova, map.size) {
            return Err(Error::Exists {
                iova: map.iova,
                size: map.size,
                dma_iova: d.iova,
                dma_size: d.size,
            });
        }
        if end == 0 {
            // `end = iova + size` is 0: the loop `iova < end` never runs.
            self.0.warnings.push(format!(
                "3.11 map ending at 2^64: vfio_dma_do_map computes end = iova + size = 0, so its \
                 loop `iova < end` never runs: [{:#x}, +{:#x}) is reported mapped and nothing \
                 is",
                map.iova, map.size
            ));
            return Ok(());
        }
        let (mut iova, mut vaddr) = (map.iova, map.vaddr);
        // The entry this request's pages went into (the C code's `dma`).
        let mut dma: Option<u64> = None;
        let res = loop {
            if iova >= end {
                break Ok(());
            }
            let npage = (end - iova) >> PAGE_SHIFT;
            let run = match self.vfio_pin_pages(vaddr, npage.max(1), prot) {
                Ok(run) => run,
                Err(e) => break Err(e),
            };
            let bytes = run.npage << PAGE_SHIFT;
            // Verify pages are not already mapped.
            let first = &self.0.domains[0].domain;
            let busy = (0..run.npage)
                .map(|i| iova.wrapping_add(i << PAGE_SHIFT))
                .find(|&a| first.iova_to_phys(a).is_some());
            if let Some(a) = busy {
                self.vfio_unpin_pages(run.pfn, run.npage, prot, true);
                break Err(Error::V3_11 {
                    errno: Errno::EBUSY,
                    why: format!(
                        "vfio_dma_do_map: iova {a:#x} is already mapped in the IOMMU though no \
                         entry holds it (left behind by an earlier unmap inside a large leaf)"
                    ),
                });
            }
            if let Err(e) = self.0.domains[0]
                .domain
                .map(iova, run.pfn << PAGE_SHIFT, bytes, prot)
            {
                self.vfio_unpin_pages(run.pfn, run.npage, prot, true);
                break Err(match e {
                    iommu::Error::OutOfAperture { .. } => Error::V3_11 {
                        errno: Errno::EFAULT,
                        why: format!(
                            "iommu_map: {e}; 3.11's intel_iommu_map answered EFAULT for an \
                             address beyond the domain's address width"
                        ),
                    },
                    e => e.into(),
                });
            }
            self.0.stats.pin_runs += 1;
            let (niova, nsize) = self.merge_run(&mut dma, iova, vaddr, bytes, prot, run);
            // The C loop's `iova += size, vaddr += size` after `iova`, `vaddr`, `size` became
            // the merged entry's.
            let next = niova.checked_add(nsize);
            vaddr = vaddr.wrapping_add(bytes);
            match next {
                Some(n) => iova = n,
                None => break Ok(()),
            }
        };
        self.0.mm.flush();
        if let Err(e) = res {
            // out: remove whatever of the request was mapped.
            let mut size = map.size;
            while let Some(d) = self.vfio_find_dma(map.iova, size) {
                let key = d.iova;
                self.vfio_remove_dma_overlap(map.iova, &mut size, key);
                if size == 0 {
                    self.0.warnings.push(format!(
                        "WARN_ON(r || !size) in vfio_dma_do_map's unwind: nothing removed at \
                         {key:#x}"
                    ));
                    break;
                }
            }
            self.0.mm.flush();
            return Err(e);
        }
        Ok(())
    }

    /// Record a mapped run: grow the entry below when it abuts with equal permissions and a
    /// contiguous vaddr, absorb the entry above likewise, else make a new entry. Returns the
    /// entry's `(iova, size)` after the merge.
    fn merge_run(
        &mut self,
        dma: &mut Option<u64>,
        iova: u64,
        vaddr: u64,
        size: u64,
        prot: Prot,
        run: Run,
    ) -> (u64, u64) {
        let (mut iova, mut vaddr, mut size) = (iova, vaddr, size);
        let mut charge = run.acct;
        let mut rsvd = run.reserved;
        // Below: nothing below 0.
        if iova != 0 {
            let below = self
                .vfio_find_dma(iova - 1, 1)
                .filter(|t| t.prot == prot && t.vaddr.wrapping_add(t.size) == vaddr)
                .map(|t| t.iova);
            if let Some(k) = below {
                let mut t = self.0.dmas.unlink_dma(k).expect("found above");
                t.size += size;
                t.locked_vm += charge;
                t.has_rsvd |= rsvd;
                charge = 0;
                rsvd = false;
                iova = t.iova;
                size = t.size;
                vaddr = t.vaddr;
                self.0.dmas.link_dma(t);
                *dma = Some(k);
            }
        }
        // Above: nothing above ~0 + 1.
        if let Some(above_at) = iova.checked_add(size) {
            let above = self
                .vfio_find_dma(above_at, 1)
                .filter(|t| t.prot == prot && t.vaddr == vaddr.wrapping_add(size))
                .map(|t| t.iova);
            if let Some(k) = above {
                let t = self.0.dmas.unlink_dma(k).expect("found above");
                if let Some(d) = *dma {
                    let mut d = self.0.dmas.unlink_dma(d).expect("the entry of this map");
                    d.size += t.size;
                    d.locked_vm += t.locked_vm;
                    d.has_rsvd |= t.has_rsvd;
                    size = d.size;
                    self.0.dmas.link_dma(d);
                } else {
                    size += t.size;
                    self.0.dmas.link_dma(Dma {
                        iova,
                        vaddr,
                        size,
                        locked_vm: t.locked_vm + charge,
                        has_rsvd: t.has_rsvd || rsvd,
                        ..t
                    });
                    charge = 0;
                    *dma = Some(iova);
                }
            }
        }
        if dma.is_none() {
            self.0.dmas.link_dma(Dma {
                iova,
                vaddr,
                size,
                prot,
                lock_cap: self.0.cfg.cap_ipc_lock,
                vaddr_invalid: false,
                has_rsvd: rsvd,
                iommu_mapped: true,
                locked_vm: charge,
            });
            *dma = Some(iova);
        }
        (iova, size)
    }

    /// 3.11's `vfio_find_dma(iommu, start, size)`: an entry with `start + size > dma->iova` and
    /// `start < dma->iova + dma->size`, the sum in 64 bits (so a range ending at 2^64 finds
    /// nothing). Of several, the lowest.
    fn vfio_find_dma(&self, start: u64, size: u64) -> Option<&Dma> {
        let end = start.wrapping_add(size);
        if end == 0 {
            return None;
        }
        if end > start {
            return self
                .0
                .dmas
                .overlapping(iommu::IovaRange::new(start, end - 1)?)
                .first()
                .map(|&k| &self.0.dmas[k]);
        }
        // A wrapped end below `start`: only an entry holding both `end - 1` and `start`.
        self.0
            .dmas
            .iter()
            .find(|d| d.iova < end && d.iova.checked_add(d.size).is_none_or(|e| e > start))
    }

    #[allow(clippy::too_many_arguments)]
    fn pin_run(
        &mut self,
        first: Result<Pinned, MmError>,
        vaddr: u64,
        npage: u64,
        write: bool,
        lock_cap: bool,
        limit: u64,
        per_page: bool,
        batch: &mut Batch,
    ) -> Result<Run, Error> {
        match first? {
            Pinned::Pfnmap { pfn, .. } => {
                // `vaddr_get_pfn`'s VM_PFNMAP fallback: only a reserved pfn is accepted.
                if !self.0.mm.is_reserved(pfn) {
                    return Err(Error::Fault(MmError::NotMapped { vaddr }));
                }
                return Ok(Run {
                    pfn,
                    npage: 1,
                    acct: 0,
                    reserved: true,
                });
            }
            Pinned::Pages => {}
        }
        let Some((base, rsvd)) = batch.current() else {
            return Err(Error::Fault(MmError::NotMapped { vaddr }));
        };
        if rsvd {
            batch.advance(1);
            return Ok(Run {
                pfn: base,
                npage: 1,
                acct: 0,
                reserved: true,
            });
        }
        let locked = self.0.account.locked();
        if !lock_cap && locked.saturating_add(1) > limit {
            self.0.warnings.push(format!(
                "vfio_pin_pages: RLIMIT_MEMLOCK ({} bytes) exceeded",
                limit.saturating_mul(PAGE_SIZE)
            ));
            return Err(Error::Memlock {
                limit,
                locked,
                more: 1,
            });
        }
        batch.advance(1);
        let mut i = 1u64;
        if per_page {
            // `disable_hugepages`.
            return Ok(Run {
                pfn: base,
                npage: 1,
                acct: 1,
                reserved: false,
            });
        }
        while i < npage {
            if batch.is_empty() {
                batch.clear();
                self.0.stats.pin_calls += 1;
                let at = vaddr.wrapping_add(i << PAGE_SHIFT);
                match self.0.mm.pin(at, npage - i, write, batch) {
                    Ok(Pinned::Pages) => {}
                    Ok(Pinned::Pfnmap { .. }) | Err(_) => break,
                }
            }
            let Some((pfn, r)) = batch.current() else {
                break;
            };
            if pfn != base + i || r {
                break;
            }
            let nr = batch.contiguous_pages(npage - i);
            let room = if lock_cap {
                nr
            } else {
                nr.min(limit.saturating_sub(locked).saturating_sub(i))
            };
            batch.advance(room);
            i += room;
            if room < nr {
                self.0.warnings.push(format!(
                    "vfio_pin_pages: RLIMIT_MEMLOCK ({} bytes) exceeded",
                    limit.saturating_mul(PAGE_SIZE)
                ));
                break;
            }
        }
        Ok(Run {
            pfn: base,
            npage: i,
            acct: i,
            reserved: false,
        })
    }

    /// 3.11's `vfio_unpin_pages`: drop a pin from each of `npage` pages from `pfn` (reserved
    /// pfns are skipped by `put_pfn`); uncharge them if `do_accounting`. Returns the pages
    /// unpinned.
    fn vfio_unpin_pages(&mut self, pfn: u64, npage: u64, prot: Prot, do_accounting: bool) -> u64 {
        let unlocked = self
            .0
            .mm
            .unpin(pfn, npage, prot.contains(Prot::WRITE), true);
        if do_accounting {
            self.0.account.uncharge(unlocked, &mut self.0.violations);
        }
        unlocked
    }

    /// The review's alignment question, answered: an `iommu_unmap` of one page inside a large
    /// leaf removed the whole leaf, and the unpin counted from the mid-leaf pfn.
    fn warn_mid_leaf(
        &mut self,
        iova: u64,
        phys: u64,
        leaf_iova: u64,
        leaf_pa: u64,
        leaf: u64,
        npage: u64,
    ) {
        let pfn = phys >> PAGE_SHIFT;
        let leaf_pfn = leaf_pa >> PAGE_SHIFT;
        let leaf_pages = leaf >> PAGE_SHIFT;
        let kept = pfn - leaf_pfn;
        let beyond = (pfn + npage).saturating_sub(leaf_pfn + leaf_pages);
        let size = if leaf >= SZ_2M && leaf.is_multiple_of(SZ_2M) {
            format!("{}M", leaf >> 20)
        } else {
            format!("{:#x}", leaf)
        };
        self.0.warnings.push(format!(
            "3.11 unmap inside a large leaf: vfio_unmap_unpin asked iommu_unmap for one page at \
             iova {iova:#x}, inside the {size} leaf [{leaf_iova:#x}, +{leaf:#x}); the IOMMU \
             removed the whole leaf and vfio_unpin_pages released {npage} pages counted from the \
             mid-leaf pfn {pfn:#x}: {kept} page(s) of the leaf stay pinned with no translation \
             and {beyond} page(s) past it are released though this leaf never pinned them. The \
             unmap IOVA is not aligned to the leaf size, and 3.11 assumed it would be"
        ));
        self.0.violations.push(format!(
            "kernel 3.11 broke invariant 5 (pin counts = translations) and invariant 3 (locked \
             pages): its unmap at iova {iova:#x} inside the {size} leaf at {leaf_iova:#x} left \
             pfns [{leaf_pfn:#x}, {pfn:#x}) pinned with no translation and unpinned \
             {beyond} page(s) from pfn {:#x} that the leaf did not hold; and invariant 4 \
             (translations = entries): the leaf's other IOVAs lost their translation while an \
             entry still holds them",
            leaf_pfn + leaf_pages
        ));
    }

    /// Pages of `[iova, +size)` that the first domain translates to non-reserved pfns: a split
    /// entry's charge.
    fn charged_pages(&self, iova: u64, size: u64) -> u64 {
        let first = &self.0.domains[0].domain;
        let mut pos = 0u64;
        let mut n = 0u64;
        while pos < size {
            let at = iova + pos;
            match first.translate(at) {
                Some(l) => {
                    let step = (l.size - (at - l.iova)).min(size - pos);
                    let pfn = (l.paddr + (at - l.iova)) >> PAGE_SHIFT;
                    let pages = step.div_ceil(PAGE_SIZE);
                    n += (0..pages)
                        .filter(|&k| !self.0.mm.is_reserved(pfn + k))
                        .count() as u64;
                    pos += step;
                }
                None => pos += PAGE_SIZE,
            }
        }
        n
    }

    /// 3.11's `vfio_remove_dma_overlap`: remove `[start, +*size)` from the entry at `key`, which
    /// it overlaps; `*size` becomes the bytes really removed.
    fn vfio_remove_dma_overlap(&mut self, start: u64, size: &mut u64, key: u64) {
        if *size == 0 {
            return;
        }
        let dma = self.0.dmas[key].clone();
        let dma_end = dma.iova + dma.size;
        let req_end = start.checked_add(*size);
        // Existing entry completely covered: unmap it all.
        if start <= dma.iova && req_end.is_none_or(|e| e >= dma_end) {
            let (removed, _) = self.vfio_unmap_unpin(dma.iova, dma.prot, dma.iova, dma.size);
            *size = removed;
            if removed != dma.size {
                self.0.warnings.push(format!(
                    "WARN_ON(*size != dma->size) in vfio_remove_dma_overlap: the entry \
                     [{:#x}, +{:#x}) unmapped {removed:#x} bytes",
                    dma.iova, dma.size
                ));
            }
            self.0.dmas.unlink_dma(key);
            return;
        }
        let req_end = req_end.expect("not covered, so the request ends inside the entry");
        // Overlap at the low end.
        if start <= dma.iova {
            let want = req_end - dma.iova;
            let (overlap, unlocked) = self.vfio_unmap_unpin(dma.iova, dma.prot, dma.iova, want);
            let mut d = self.0.dmas.unlink_dma(key).expect("in the tree");
            if overlap < d.size {
                d.iova += overlap;
                d.vaddr = d.vaddr.wrapping_add(overlap);
                d.size -= overlap;
                d.locked_vm = d.locked_vm.saturating_sub(unlocked);
                self.0.dmas.link_dma(d);
            }
            *size = overlap;
            return;
        }
        // Overlap at the high end.
        if req_end >= dma_end {
            let offset = start - dma.iova;
            let (overlap, unlocked) =
                self.vfio_unmap_unpin(dma.iova, dma.prot, start, dma.size - offset);
            let mut d = self.0.dmas.unlink_dma(key).expect("in the tree");
            match d.size.checked_sub(overlap).filter(|&s| s > 0) {
                Some(s) => {
                    d.size = s;
                    d.locked_vm = d.locked_vm.saturating_sub(unlocked);
                    self.0.dmas.link_dma(d);
                }
                None => self.0.warnings.push(format!(
                    "3.11 vfio_remove_dma_overlap: `dma->size -= overlap` takes the entry \
                     [{:#x}, +{:#x}) to {} (the unmap removed {overlap:#x} bytes from a large \
                     leaf); the kernel keeps an entry it can never find again, the model drops \
                     it",
                    d.iova,
                    d.size,
                    if overlap == d.size { "0" } else { "below 0" }
                )),
            }
            *size = overlap;
            return;
        }
        // Split the entry.
        let offset = start - dma.iova;
        let (removed, unlocked) = self.vfio_unmap_unpin(dma.iova, dma.prot, start, *size);
        *size = removed;
        if removed == 0 {
            return;
        }
        let mut lower = self.0.dmas.unlink_dma(key).expect("in the tree");
        let total = lower.locked_vm.saturating_sub(unlocked);
        lower.size = offset;
        lower.locked_vm = self.charged_pages(lower.iova, lower.size).min(total);
        let upper_locked = total - lower.locked_vm;
        let upper = (offset + removed < dma.size).then(|| Dma {
            iova: dma.iova + offset + removed,
            vaddr: dma.vaddr.wrapping_add(offset + removed),
            size: dma.size - offset - removed,
            locked_vm: upper_locked,
            ..lower.clone()
        });
        self.0.dmas.link_dma(lower);
        if let Some(u) = upper {
            self.0.dmas.link_dma(u);
        }
    }

    /// 3.11's `vfio_dma_do_unmap`: returns the bytes unmapped, possibly more than asked.
    fn vfio_dma_do_unmap(&mut self, iova: u64, size: u64) -> Result<u64, Error> {
        let mask = self.mask_3_11("VFIO_IOMMU_UNMAP_DMA")?;
        let pgsize = mask + 1;
        if iova & mask != 0 {
            return Err(Error::Unaligned {
                what: "iova",
                value: iova,
                pgsize,
            });
        }
        if size == 0 {
            return Err(Error::ZeroSize);
        }
        if size & mask != 0 {
            return Err(Error::Unaligned {
                what: "size",
                value: size,
                pgsize,
            });
        }
        if iova.wrapping_add(size) == 0 {
            self.0.warnings.push(format!(
                "3.11 unmap ending at 2^64: vfio_find_dma computes start + size = 0 for \
                 [{iova:#x}, +{size:#x}) and finds no entry, so nothing is unmapped"
            ));
        } else if iova.checked_add(size).is_none() {
            self.0.warnings.push(format!(
                "3.11 unmap past 2^64: no wrap check, so [{iova:#x}, +{size:#x}) is looked up \
                 with a wrapped end and finds only an entry holding both ends"
            ));
        }
        let mut unmapped = 0u64;
        while let Some(d) = self.vfio_find_dma(iova, size) {
            let key = d.iova;
            let mut removed = size;
            self.vfio_remove_dma_overlap(iova, &mut removed, key);
            if removed == 0 {
                break;
            }
            unmapped = unmapped.saturating_add(removed);
        }
        self.0.mm.flush();
        Ok(unmapped)
    }
}
