//! `Container`: one VFIO container with the type1 backend set (spec §1–§6).
//!
//! Data model (DESIGN.md): the DMA tree holds one `Dma` per successful MAP_DMA, keyed by IOVA,
//! never merged and never split. The pfns of a mapping are not stored: the first domain's page
//! table is the record, read back with `translate` on unmap. Pins and locked memory are taken once
//! per mapping, whatever the number of domains.
//!
//! Invariants (checked by `check_invariants`, asserted by the tests after every operation):
//! 1. A failed call changes nothing (`snapshot` before == after).
//! 2. No pfn is unpinned while a domain still translates to it or before the IOTLB flush that
//!    covers its unmap (checked at every unpin, recorded as a violation).
//! 3. Locked pages = the non-reserved pages pinned per mapping (a page mapped twice counts twice).
//! 4. Every domain translates exactly the mappings' IOVA ranges, to the same pfns, with the
//!    mappings' permissions.
//! 5. Each pfn's pin count = the number of (mapping, page) pairs that map it.

use std::collections::BTreeMap;
use std::sync::Arc;

use iommu::{Domain, FaultInjector, FaultPoint, Gather, Leaf, Prot};

use crate::error::Error;
use crate::mm::pincount::PinCounts;
use crate::mm::{Batch, MmError, PageSource, PinMode, Pinned};
use crate::profile::{Config, Strategy};
use crate::{PAGE_SHIFT, PAGE_SIZE};

/// MAP_DMA flags.
pub const MAP_FLAG_READ: u32 = 1 << 0;
pub const MAP_FLAG_WRITE: u32 = 1 << 1;
pub const MAP_FLAG_VADDR: u32 = 1 << 2;
/// UNMAP_DMA flags.
pub const UNMAP_FLAG_GET_DIRTY_BITMAP: u32 = 1 << 0;
pub const UNMAP_FLAG_ALL: u32 = 1 << 1;
pub const UNMAP_FLAG_VADDR: u32 = 1 << 2;
/// DIRTY_PAGES flags.
pub const DIRTY_FLAG_START: u32 = 1 << 0;
pub const DIRTY_FLAG_STOP: u32 = 1 << 1;
pub const DIRTY_FLAG_GET_BITMAP: u32 = 1 << 2;
/// CHECK_EXTENSION arguments.
pub const VFIO_TYPE1_IOMMU: u32 = 1;
pub const VFIO_TYPE1V2_IOMMU: u32 = 3;
pub const VFIO_DMA_CC_IOMMU: u32 = 4;
pub const VFIO_UNMAP_ALL: u32 = 9;
pub const VFIO_UPDATE_VADDR: u32 = 10;

/// `DIRTY_BITMAP_SIZE_MAX`: `ALIGN(INT_MAX, 64) / 8` bytes.
pub const DIRTY_BITMAP_SIZE_MAX: u64 = 1 << 28;
/// `VFIO_IOMMU_TLB_SYNC_MAX`: unmapped regions gathered before a forced IOTLB sync.
pub const TLB_SYNC_MAX: usize = 512;

/// `struct vfio_iommu_type1_dma_map`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapDma {
    pub argsz: u32,
    pub flags: u32,
    pub vaddr: u64,
    pub iova: u64,
    pub size: u64,
}

impl MapDma {
    /// A read-write map with the structure's size as argsz.
    pub fn rw(vaddr: u64, iova: u64, size: u64) -> Self {
        MapDma {
            argsz: 32,
            flags: MAP_FLAG_READ | MAP_FLAG_WRITE,
            vaddr,
            iova,
            size,
        }
    }
}

/// The `struct vfio_bitmap` of an unmap or a dirty query: page size and buffer size in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BitmapArg {
    pub pgsize: u64,
    pub size: u64,
}

/// `struct vfio_iommu_type1_dma_unmap`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnmapDma {
    pub argsz: u32,
    pub flags: u32,
    pub iova: u64,
    pub size: u64,
    pub bitmap: Option<BitmapArg>,
}

impl UnmapDma {
    pub fn range(iova: u64, size: u64) -> Self {
        UnmapDma {
            argsz: 24,
            flags: 0,
            iova,
            size,
            bitmap: None,
        }
    }
    pub fn all() -> Self {
        UnmapDma {
            argsz: 24,
            flags: UNMAP_FLAG_ALL,
            iova: 0,
            size: 0,
            bitmap: None,
        }
    }
}

/// What UNMAP_DMA writes back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnmapReply {
    /// Bytes really unmapped (`unmap.size`).
    pub size: u64,
    /// The dirty bitmap, little-endian u64 words, when asked for.
    pub bitmap: Option<Vec<u64>>,
}

/// What GET_INFO writes back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InfoReply {
    pub argsz: u32,
    pub flags: u32,
    pub iova_pgsizes: u64,
    pub cap_offset: u32,
    /// The bytes the kernel writes into the user's buffer (at most argsz).
    pub bytes: Vec<u8>,
    /// The argsz that holds every capability.
    pub argsz_needed: u32,
    pub dma_avail: u32,
    pub iova_ranges: Vec<(u64, u64)>,
    pub migration_pgsize: u64,
}

/// One mapping (`struct vfio_dma`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dma {
    pub iova: u64,
    pub vaddr: u64,
    pub size: u64,
    pub prot: Prot,
    pub lock_cap: bool,
    pub vaddr_invalid: bool,
    pub has_rsvd: bool,
    pub iommu_mapped: bool,
    /// Pages this mapping charged to the locked-memory account.
    pub locked_vm: u64,
}

/// An attached group with its domain.
#[derive(Debug)]
pub struct AttachedDomain {
    pub name: String,
    pub domain: Domain,
    /// The group's reserved IOVA regions (inclusive).
    pub reserved: Vec<(u64, u64)>,
}

/// Counters of the engine itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Calls into the page source (`vaddr_get_pfns`).
    pub pin_calls: u64,
    /// Pin runs mapped (each one `iommu_map` per domain).
    pub pin_runs: u64,
    /// Locked-memory charges (`vfio_lock_acct` with a positive count).
    pub charges: u64,
}

/// The whole observable state, for "a failed call changes nothing".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub dmas: Vec<Dma>,
    pub domains: Vec<(String, Vec<Leaf>, u64)>,
    pub pins: Vec<(u64, u64, u32)>,
    pub locked: u64,
    pub dma_avail: u32,
    pub iova_list: Vec<(u64, u64)>,
    pub pgsize_bitmap: u64,
    pub vaddr_invalid_count: u32,
    pub dirty_tracking: bool,
}

/// One pin run: physically contiguous, uniformly reserved.
#[derive(Clone, Copy, Debug)]
struct Run {
    pfn: u64,
    npages: u64,
}

/// A VFIO container with the type1 IOMMU backend.
#[derive(Debug)]
pub struct Container<M: PageSource> {
    cfg: Config,
    dmas: BTreeMap<u64, Dma>,
    /// Head (newest) first, as the kernel's `list_add`.
    domains: Vec<AttachedDomain>,
    iova_list: Vec<(u64, u64)>,
    pgsize_bitmap: u64,
    dma_avail: u32,
    /// `mm->locked_vm` in pages.
    locked: u64,
    mm: M,
    faults: Arc<FaultInjector>,
    dirty_tracking: bool,
    vaddr_invalid_count: u32,
    violations: Vec<String>,
    stats: EngineStats,
    /// Whether the process that mapped (the accounting owner) is alive (§8.4 row 43).
    owner_alive: bool,
    /// The pin batch's buffer, kept between calls (the kernel keeps a page for it).
    batch_buf: Vec<crate::mm::PfnRun>,
}

const PAGE_MASK: u64 = !(PAGE_SIZE - 1);

impl<M: PageSource> Container<M> {
    /// `VFIO_SET_IOMMU`: a new container over the memory `mm`.
    pub fn new(cfg: Config, mut mm: M) -> Self {
        mm.set_kernel_profile(cfg.kernel);
        Container {
            dma_avail: cfg.dma_entry_limit,
            cfg,
            dmas: BTreeMap::new(),
            domains: Vec::new(),
            iova_list: Vec::new(),
            pgsize_bitmap: PAGE_MASK,
            locked: 0,
            mm,
            faults: FaultInjector::new(),
            dirty_tracking: false,
            vaddr_invalid_count: 0,
            violations: Vec::new(),
            stats: EngineStats::default(),
            batch_buf: Vec::new(),
            owner_alive: true,
        }
    }

    /// The process that made the mappings exits while another holds the container (§8.4 row
    /// 43): unmaps still unmap and unpin, but their uncharges are skipped, as the kernel's
    /// asynchronous accounting finds no mm.
    pub fn owner_exited(&mut self) {
        self.owner_alive = false;
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }
    /// Change the pinning strategy (affects later maps only).
    pub fn set_strategy(&mut self, s: Strategy) {
        self.cfg.strategy = s;
    }
    pub fn mm(&self) -> &M {
        &self.mm
    }
    pub fn mm_mut(&mut self) -> &mut M {
        &mut self.mm
    }
    /// The fault injector shared by the engine, its page source (if it takes one) and domains.
    pub fn faults(&self) -> Arc<FaultInjector> {
        self.faults.clone()
    }
    /// Locked pages (`mm->locked_vm`).
    pub fn locked_pages(&self) -> u64 {
        self.locked
    }
    /// DMA entries left.
    pub fn dma_avail(&self) -> u32 {
        self.dma_avail
    }
    pub fn dmas(&self) -> impl Iterator<Item = &Dma> {
        self.dmas.values()
    }
    pub fn domains(&self) -> &[AttachedDomain] {
        &self.domains
    }
    pub fn domain(&self, name: &str) -> Option<&Domain> {
        self.domains
            .iter()
            .find(|d| d.name == name)
            .map(|d| &d.domain)
    }
    /// The valid IOVA ranges (inclusive); empty = no constraint (no domain).
    pub fn iova_ranges(&self) -> &[(u64, u64)] {
        &self.iova_list
    }
    pub fn pgsize_bitmap(&self) -> u64 {
        self.pgsize_bitmap
    }
    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }
    pub fn dirty_tracking(&self) -> bool {
        self.dirty_tracking
    }

    fn min_pgsize(&self) -> u64 {
        1 << self.pgsize_bitmap.trailing_zeros()
    }

    fn limit_pages(&self) -> u64 {
        self.cfg.memlock.map_or(u64::MAX, |b| b >> PAGE_SHIFT)
    }

    /// `VFIO_CHECK_EXTENSION` on the container.
    pub fn check_extension(&self, ext: u32) -> u32 {
        match ext {
            VFIO_TYPE1_IOMMU | VFIO_TYPE1V2_IOMMU | VFIO_UNMAP_ALL | VFIO_UPDATE_VADDR => 1,
            // No modelled domain enforces cache coherency (as QEMU's VT-d): 1 only vacuously.
            VFIO_DMA_CC_IOMMU => self.domains.is_empty() as u32,
            _ => 0,
        }
    }

    // ---- the DMA tree ----

    /// `vfio_find_dma`: a mapping overlapping `[start, last]`.
    fn find_dma(&self, start: u64, last: u64) -> Option<&Dma> {
        self.dmas
            .range(..=last)
            .next_back()
            .map(|(_, d)| d)
            .filter(|d| d.iova + (d.size - 1) >= start)
    }

    /// The IOVAs of the mappings overlapping `[start, last]`, lowest first.
    fn dmas_in(&self, start: u64, last: u64) -> Vec<u64> {
        let mut keys = Vec::new();
        if let Some((&k, d)) = self.dmas.range(..start).next_back() {
            if d.iova + (d.size - 1) >= start {
                keys.push(k);
            }
        }
        keys.extend(self.dmas.range(start..=last).map(|(&k, _)| k));
        keys
    }

    fn iova_valid(&self, start: u64, last: u64) -> bool {
        self.iova_list.is_empty() || self.iova_list.iter().any(|&(s, e)| s <= start && last <= e)
    }

    // ---- MAP_DMA (spec §1.3, §3) ----

    /// `VFIO_IOMMU_MAP_DMA`.
    pub fn map_dma(&mut self, req: &MapDma) -> Result<(), Error> {
        check_header(
            req.argsz,
            32,
            req.flags,
            MAP_FLAG_READ | MAP_FLAG_WRITE | MAP_FLAG_VADDR,
        )?;
        let (iova, vaddr, size) = (req.iova, req.vaddr, req.size);
        if size == 0 {
            return Err(Error::ZeroSize);
        }
        let errno = self.cfg.kernel.wrap_errno();
        let last = iova.checked_add(size - 1).ok_or(Error::Wraps {
            what: "iova",
            start: iova,
            size,
            errno,
        })?;
        vaddr.checked_add(size - 1).ok_or(Error::Wraps {
            what: "vaddr",
            start: vaddr,
            size,
            errno,
        })?;
        let mut prot = Prot::NONE;
        if req.flags & MAP_FLAG_WRITE != 0 {
            prot = prot.union(Prot::WRITE);
        }
        if req.flags & MAP_FLAG_READ != 0 {
            prot = prot.union(Prot::READ);
        }
        let set_vaddr = req.flags & MAP_FLAG_VADDR != 0;
        if (prot != Prot::NONE) == set_vaddr {
            return Err(Error::BadProt { flags: req.flags });
        }
        let pgsize = self.min_pgsize();
        for (what, value) in [("size", size), ("iova", iova), ("vaddr", vaddr)] {
            if value & (pgsize - 1) != 0 {
                return Err(Error::Unaligned {
                    what,
                    value,
                    pgsize,
                });
            }
        }
        match self.find_dma(iova, last) {
            Some(d) if set_vaddr => {
                if !d.vaddr_invalid || d.iova != iova || d.size != size {
                    return Err(Error::VaddrMismatch);
                }
                let d = self.dmas.get_mut(&iova).expect("found above");
                d.vaddr = vaddr;
                d.vaddr_invalid = false;
                self.vaddr_invalid_count -= 1;
                return Ok(());
            }
            Some(d) => {
                return Err(Error::Exists {
                    iova,
                    size,
                    dma_iova: d.iova,
                    dma_size: d.size,
                });
            }
            None if set_vaddr => return Err(Error::VaddrNoDma { iova, size }),
            None => {}
        }
        if self.dma_avail == 0 {
            return Err(Error::NoEntries {
                limit: self.cfg.dma_entry_limit,
            });
        }
        if !self.iova_valid(iova, last) {
            return Err(Error::OutsideIovaRanges { iova, last });
        }
        let mut dma = Dma {
            iova,
            vaddr,
            size: 0,
            prot,
            lock_cap: self.cfg.cap_ipc_lock,
            vaddr_invalid: false,
            has_rsvd: false,
            iommu_mapped: false,
            locked_vm: 0,
        };
        if self.domains.is_empty() {
            // No IOMMU domain yet: recorded, pinned when the first domain attaches (§3.6).
            dma.size = size;
        } else {
            self.pin_map_dma(&mut dma, size)?;
        }
        self.dma_avail -= 1;
        self.dmas.insert(iova, dma);
        Ok(())
    }

    fn new_batch(&mut self) -> Batch {
        let (mode, capacity) = match self.cfg.strategy {
            // `disable_hugepages`: a batch of one page.
            Strategy::PerPage => (PinMode::PerPage, 1),
            Strategy::Contiguous => (PinMode::PerPage, Batch::MAX_CAPACITY),
            Strategy::Folio => (PinMode::Folio, Batch::MAX_CAPACITY),
        };
        let mut runs = std::mem::take(&mut self.batch_buf);
        runs.clear();
        Batch {
            runs,
            idx: 0,
            off: 0,
            capacity,
            mode,
        }
    }

    /// `vfio_pin_map_dma`: pin run by run and map each run into every domain; `dma.size` is the
    /// mapped prefix. On error the prefix is unmapped, unpinned and uncharged.
    fn pin_map_dma(&mut self, dma: &mut Dma, size: u64) -> Result<(), Error> {
        let limit = self.limit_pages();
        let mut batch = self.new_batch();
        let mut left = size;
        let mut res = Ok(());
        while left > 0 {
            let vaddr = dma.vaddr + dma.size;
            match self.pin_pages_remote(dma, vaddr, left >> PAGE_SHIFT, limit, &mut batch) {
                Err(e) => {
                    res = Err(e);
                    break;
                }
                Ok(run) => {
                    let iova = dma.iova + dma.size;
                    let bytes = run.npages << PAGE_SHIFT;
                    if let Err(e) = self.iommu_map(iova, run.pfn << PAGE_SHIFT, bytes, dma.prot) {
                        self.unpin_pages_remote(dma, run.pfn, run.npages, true);
                        self.batch_unpin(&mut batch);
                        res = Err(e);
                        break;
                    }
                    self.stats.pin_runs += 1;
                    left -= bytes;
                    dma.size += bytes;
                }
            }
        }
        self.batch_unpin(&mut batch);
        self.batch_buf = std::mem::take(&mut batch.runs);
        self.mm.flush();
        dma.iommu_mapped = true;
        if let Err(e) = res {
            self.unmap_unpin(dma, true);
            return Err(e);
        }
        Ok(())
    }

    /// `vfio_pin_pages_remote`: one physically contiguous, uniformly reserved run from `vaddr`,
    /// charged to the account. All or nothing.
    fn pin_pages_remote(
        &mut self,
        dma: &mut Dma,
        vaddr: u64,
        npage: u64,
        limit: u64,
        batch: &mut Batch,
    ) -> Result<Run, Error> {
        let write = dma.prot.contains(Prot::WRITE);
        let mut npage = if self.cfg.strategy == Strategy::PerPage {
            1
        } else {
            npage
        };
        let mut vaddr = vaddr;
        let (mut base, mut rsvd) = match batch.current() {
            Some((pfn, r)) => (Some(pfn), r),
            None => (None, false),
        };
        let mut pinned = 0u64;
        let mut lock_acct = 0u64;
        let res: Result<(), Error> = loop {
            if npage == 0 {
                break Ok(());
            }
            if batch.is_empty() {
                batch.clear();
                self.stats.pin_calls += 1;
                match self.mm.pin(vaddr, npage, write, batch) {
                    Err(e) => break Err(e.into()),
                    Ok(Pinned::Pfnmap { pfn, npages }) => {
                        if base.is_none() {
                            base = Some(pfn);
                            rsvd = self.mm.is_reserved(pfn);
                        }
                        if !self.mm.is_reserved(pfn) {
                            // A PFNMAP of ordinary RAM is refused (`follow_fault_pfn`).
                            break if pinned == 0 {
                                Err(Error::Fault(MmError::NotMapped { vaddr }))
                            } else {
                                Ok(())
                            };
                        }
                        if Some(pfn) != base.map(|b| b + pinned) || !rsvd {
                            break Ok(());
                        }
                        pinned += npages;
                        npage -= npages;
                        vaddr += npages << PAGE_SHIFT;
                        continue;
                    }
                    Ok(Pinned::Pages) => {}
                }
            }
            let Some((pfn, r)) = batch.current() else {
                break Ok(());
            };
            let b = *base.get_or_insert_with(|| {
                rsvd = r;
                pfn
            });
            if pfn != b + pinned || r != rsvd {
                break Ok(());
            }
            let nr = batch.contiguous_pages(npage);
            let mut acct = 0;
            if !rsvd {
                acct = nr;
                if !dma.lock_cap
                    && self.locked.saturating_add(lock_acct).saturating_add(acct) > limit
                {
                    break Err(Error::Memlock {
                        limit,
                        locked: self.locked,
                        more: lock_acct + acct,
                    });
                }
            }
            lock_acct += acct;
            pinned += nr;
            npage -= nr;
            vaddr += nr << PAGE_SHIFT;
            batch.advance(nr);
        };
        let res = res.and_then(|()| {
            if pinned == 0 {
                return Err(Error::Fault(MmError::NotMapped { vaddr }));
            }
            dma.has_rsvd |= rsvd;
            self.lock_acct(dma, lock_acct as i64)
        });
        if let Err(e) = res {
            if let (Some(b), false, true) = (base, rsvd, pinned > 0) {
                self.mm.unpin(b, pinned, false, false);
            }
            self.batch_unpin(batch);
            return Err(e);
        }
        Ok(Run {
            pfn: base.unwrap_or(0),
            npages: pinned,
        })
    }

    /// `vfio_batch_unpin`: drop the pins of the unconsumed pages of a batch.
    fn batch_unpin(&mut self, batch: &mut Batch) {
        let left: Vec<_> = batch.leftovers().collect();
        for r in left {
            if !r.reserved {
                self.mm.unpin(r.pfn, r.npages, false, false);
            }
        }
        batch.clear();
    }

    /// `vfio_lock_acct` + `__account_locked_vm`.
    fn lock_acct(&mut self, dma: &mut Dma, npage: i64) -> Result<(), Error> {
        if npage == 0 {
            return Ok(());
        }
        if npage < 0 && !self.owner_alive {
            // `vfio_lock_acct(…, async=true)`: `mmget_not_zero` fails, -ESRCH, and the caller
            // ignores it: the dead mm keeps its count, the unmap goes on.
            return Ok(());
        }
        if npage > 0 {
            let n = npage as u64;
            if self.faults.hit(FaultPoint::Charge) {
                return Err(Error::InjectedCharge);
            }
            let limit = self.limit_pages();
            if !dma.lock_cap && self.locked.saturating_add(n) > limit {
                return Err(Error::Memlock {
                    limit,
                    locked: self.locked,
                    more: n,
                });
            }
            self.stats.charges += 1;
            self.locked += n;
            dma.locked_vm += n;
        } else {
            let n = npage.unsigned_abs();
            if n > self.locked {
                self.violations.push(format!(
                    "uncharge of {n} pages with only {} locked",
                    self.locked
                ));
            }
            self.locked = self.locked.saturating_sub(n);
            dma.locked_vm = dma.locked_vm.saturating_sub(n);
        }
        Ok(())
    }

    /// `vfio_iommu_map`: one `iommu_map` per domain, head first; on failure the domains already
    /// done are unmapped again.
    fn iommu_map(&mut self, iova: u64, paddr: u64, len: u64, prot: Prot) -> Result<(), Error> {
        for k in 0..self.domains.len() {
            if let Err(e) = self.domains[k]
                .domain
                .map(iova, paddr, len, prot.union(Prot::CACHE))
            {
                for j in (0..k).rev() {
                    self.domains[j].domain.unmap(iova, len);
                }
                return Err(e.into());
            }
        }
        Ok(())
    }

    /// `vfio_unpin_pages_remote`: returns the pages unpinned (reserved ones are skipped).
    fn unpin_pages_remote(
        &mut self,
        dma: &mut Dma,
        pfn: u64,
        npage: u64,
        do_accounting: bool,
    ) -> u64 {
        let dirty = dma.prot.contains(Prot::WRITE);
        let unlocked = self.mm.unpin(pfn, npage, dirty, dma.has_rsvd);
        if do_accounting {
            // A decrement cannot fail.
            let _ = self.lock_acct(dma, -(unlocked as i64));
        }
        unlocked
    }

    // ---- UNMAP (spec §4) ----

    /// Invariant 2, at the moment `[iova, +len)` is about to be unpinned.
    fn check_unpin_order(&mut self, iova: u64, len: u64) {
        if !self.cfg.check_unpin_order {
            return;
        }
        for d in &self.domains {
            let last_page = iova + (len - PAGE_SIZE);
            if d.domain.iotlb_stale(iova, len) {
                self.violations.push(format!(
                    "unpin of iova {iova:#x} before the IOTLB flush of domain {}",
                    d.name
                ));
            }
            if d.domain.translate(iova).is_some() || d.domain.translate(last_page).is_some() {
                self.violations.push(format!(
                    "unpin of iova {iova:#x} while domain {} still translates it",
                    d.name
                ));
            }
        }
    }

    /// `vfio_sync_unpin`: flush the IOTLB, then unpin what the flush covered.
    fn sync_unpin(
        &mut self,
        dma: &mut Dma,
        list: &mut Vec<(u64, u64, u64)>,
        gather: &mut Gather,
    ) -> u64 {
        self.domains[0].domain.iotlb_sync(gather);
        let mut unlocked = 0;
        for (iova, phys, len) in list.drain(..) {
            self.check_unpin_order(iova, len);
            unlocked += self.unpin_pages_remote(dma, phys >> PAGE_SHIFT, len >> PAGE_SHIFT, false);
        }
        unlocked
    }

    /// `vfio_unmap_unpin`: unmap a mapping from every domain and unpin its pages, recovering the
    /// pfns from the first domain. Returns the pages unlocked when not accounting.
    fn unmap_unpin(&mut self, dma: &mut Dma, do_accounting: bool) -> u64 {
        if dma.size == 0 || self.domains.is_empty() {
            return 0;
        }
        for d in &mut self.domains[1..] {
            d.domain.unmap(dma.iova, dma.size);
        }
        let per_page = self.cfg.strategy == Strategy::PerPage;
        let mut gather = Gather::new();
        let mut list: Vec<(u64, u64, u64)> = Vec::new();
        let mut unlocked = 0u64;
        let mut pos = 0u64;
        while pos < dma.size {
            let iova = dma.iova + pos;
            let first = &self.domains[0].domain;
            // Look ahead for a physically contiguous run (per-page: one page, as before 2013).
            let max = if per_page { PAGE_SIZE } else { dma.size - pos };
            let Some((phys, len)) = first.phys_run(iova, max) else {
                self.violations.push(format!(
                    "WARN: iova {iova:#x} of a mapping has no translation"
                ));
                pos += PAGE_SIZE;
                continue;
            };
            let unmapped = self.domains[0].domain.unmap_fast(iova, len, &mut gather);
            if unmapped > 0 {
                list.push((iova, phys, unmapped));
                if list.len() >= TLB_SYNC_MAX {
                    unlocked += self.sync_unpin(dma, &mut list, &mut gather);
                }
                pos += unmapped;
                continue;
            }
            // `unmap_unpin_slow`.
            if !list.is_empty() {
                unlocked += self.sync_unpin(dma, &mut list, &mut gather);
            }
            let u = self.domains[0].domain.unmap(iova, len);
            if u == 0 {
                self.violations
                    .push(format!("WARN: nothing unmapped at iova {iova:#x}"));
                break;
            }
            self.check_unpin_order(iova, u);
            unlocked += self.unpin_pages_remote(dma, phys >> PAGE_SHIFT, u >> PAGE_SHIFT, false);
            pos += u;
        }
        dma.iommu_mapped = false;
        if !list.is_empty() {
            unlocked += self.sync_unpin(dma, &mut list, &mut gather);
        }
        self.mm.flush();
        if do_accounting {
            let _ = self.lock_acct(dma, -(unlocked as i64));
            return 0;
        }
        unlocked
    }

    /// `vfio_remove_dma`.
    fn remove_dma(&mut self, key: u64) {
        let Some(mut dma) = self.dmas.remove(&key) else {
            return;
        };
        self.unmap_unpin(&mut dma, true);
        if dma.vaddr_invalid {
            self.vaddr_invalid_count -= 1;
        }
        self.dma_avail += 1;
    }

    /// Remove every mapping (container release, last domain detached).
    pub fn unmap_unpin_all(&mut self) {
        let keys: Vec<u64> = self.dmas.keys().copied().collect();
        for k in keys {
            self.remove_dma(k);
        }
    }

    /// `VFIO_IOMMU_UNMAP_DMA`.
    pub fn unmap_dma(&mut self, req: &UnmapDma) -> Result<UnmapReply, Error> {
        let allowed = UNMAP_FLAG_GET_DIRTY_BITMAP | UNMAP_FLAG_ALL | UNMAP_FLAG_VADDR;
        check_header(req.argsz, 24, req.flags, allowed)?;
        let get_dirty = req.flags & UNMAP_FLAG_GET_DIRTY_BITMAP != 0;
        let all = req.flags & UNMAP_FLAG_ALL != 0;
        let set_vaddr = req.flags & UNMAP_FLAG_VADDR != 0;
        if get_dirty && (all || set_vaddr) {
            return Err(Error::DirtyCombo);
        }
        let (iova, size) = (req.iova, req.size);
        let mut bitmap_arg = None;
        if get_dirty {
            if req.argsz < 48 {
                return Err(Error::Argsz {
                    argsz: req.argsz,
                    min: 48,
                });
            }
            let b = req
                .bitmap
                .ok_or(Error::Dirty("GET_DIRTY_BITMAP needs a bitmap"))?;
            if b.pgsize == 0 || !verify_bitmap_size(size >> b.pgsize.trailing_zeros(), b.size) {
                return Err(Error::Dirty("bitmap size does not match the range"));
            }
            bitmap_arg = Some(b);
        }
        let pgsize = self.min_pgsize();
        if iova & (pgsize - 1) != 0 {
            return Err(Error::Unaligned {
                what: "iova",
                value: iova,
                pgsize,
            });
        }
        let last = if all {
            if iova != 0 || size != 0 {
                return Err(Error::AllWithRange { iova, size });
            }
            u64::MAX
        } else {
            if size == 0 {
                return Err(Error::ZeroSize);
            }
            if size & (pgsize - 1) != 0 {
                return Err(Error::Unaligned {
                    what: "size",
                    value: size,
                    pgsize,
                });
            }
            let errno = self.cfg.kernel.wrap_errno();
            iova.checked_add(size - 1).ok_or(Error::Wraps {
                what: "iova",
                start: iova,
                size,
                errno,
            })?
        };
        if let Some(b) = bitmap_arg {
            if !self.dirty_tracking {
                return Err(Error::Dirty("dirty tracking is not started"));
            }
            if b.pgsize != pgsize {
                return Err(Error::Dirty("bitmap page size must be the IOMMU page size"));
            }
        }
        let end_is_empty = !all && self.cfg.kernel.unmap_to_end_is_empty() && last == u64::MAX;
        if self.cfg.v2 && !all {
            if let Some(d) = self.find_dma(iova, iova) {
                if d.iova != iova {
                    return Err(Error::Bisect {
                        iova,
                        last,
                        dma_iova: d.iova,
                        dma_size: d.size,
                    });
                }
            }
            if !end_is_empty {
                if let Some(d) = self.find_dma(last, last) {
                    if d.iova + (d.size - 1) != last {
                        return Err(Error::Bisect {
                            iova,
                            last,
                            dma_iova: d.iova,
                            dma_size: d.size,
                        });
                    }
                }
            }
        }
        let mut bitmap = bitmap_arg.map(|b| vec![0u64; b.size.div_ceil(8) as usize]);
        if end_is_empty {
            return Ok(UnmapReply { size: 0, bitmap });
        }
        let mut unmapped = 0u64;
        let mut invalidated: Vec<u64> = Vec::new();
        for key in self.dmas_in(iova, last) {
            let d = &self.dmas[&key];
            if !self.cfg.v2 && iova > d.iova {
                break;
            }
            if set_vaddr {
                if d.vaddr_invalid {
                    for k in invalidated {
                        self.dmas
                            .get_mut(&k)
                            .expect("invalidated above")
                            .vaddr_invalid = false;
                        self.vaddr_invalid_count -= 1;
                    }
                    return Err(Error::VaddrAlreadyInvalid { iova: key });
                }
                unmapped += d.size;
                self.dmas.get_mut(&key).expect("in tree").vaddr_invalid = true;
                self.vaddr_invalid_count += 1;
                invalidated.push(key);
                continue;
            }
            if let Some(words) = bitmap.as_mut() {
                if d.iommu_mapped {
                    let first = (d.iova - iova) / pgsize;
                    set_bits(words, first, d.size / pgsize);
                }
            }
            unmapped += d.size;
            self.remove_dma(key);
        }
        Ok(UnmapReply {
            size: unmapped,
            bitmap,
        })
    }

    // ---- GET_INFO (spec §1.5) ----

    /// `VFIO_IOMMU_GET_INFO` with a user buffer of `argsz` bytes.
    pub fn get_info(&self, argsz: u32) -> Result<InfoReply, Error> {
        if argsz < 16 {
            return Err(Error::Argsz { argsz, min: 16 });
        }
        let pad = |n: usize| {
            if self.cfg.kernel.pads_caps() {
                n.next_multiple_of(8)
            } else {
                n
            }
        };
        // The capability chain, offsets relative to the start of the info buffer (24).
        let mut caps: Vec<u8> = Vec::new();
        let mut headers: Vec<usize> = Vec::new();
        let mut add = |caps: &mut Vec<u8>, id: u16, body: &[u8]| {
            let at = caps.len();
            headers.push(at);
            caps.extend_from_slice(&id.to_le_bytes());
            caps.extend_from_slice(&1u16.to_le_bytes());
            caps.extend_from_slice(&0u32.to_le_bytes());
            caps.extend_from_slice(body);
            caps.resize(at + pad(8 + body.len()), 0);
        };
        let mut mig = Vec::new();
        mig.extend_from_slice(&0u32.to_le_bytes());
        mig.extend_from_slice(&0u32.to_le_bytes()); // alignment of the u64 that follows
        mig.extend_from_slice(&self.min_pgsize().to_le_bytes());
        mig.extend_from_slice(&DIRTY_BITMAP_SIZE_MAX.to_le_bytes());
        add(&mut caps, 2, &mig);
        add(&mut caps, 3, &self.dma_avail.to_le_bytes());
        if !self.iova_list.is_empty() {
            let mut body = Vec::new();
            body.extend_from_slice(&(self.iova_list.len() as u32).to_le_bytes());
            body.extend_from_slice(&0u32.to_le_bytes());
            for &(s, e) in &self.iova_list {
                body.extend_from_slice(&s.to_le_bytes());
                body.extend_from_slice(&e.to_le_bytes());
            }
            add(&mut caps, 1, &body);
        }
        // Chain the `next` fields (buffer-relative).
        for w in 0..headers.len() {
            let next = headers.get(w + 1).map_or(0, |&n| (24 + n) as u32);
            caps[headers[w] + 4..headers[w] + 8].copy_from_slice(&next.to_le_bytes());
        }
        let needed = (24 + caps.len()) as u32;
        let flags: u32 = 1 | 2; // PGSIZES | CAPS
        let (out_argsz, cap_offset): (u32, u32) = if argsz < needed {
            (needed, 0)
        } else {
            (argsz, 24)
        };
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&out_argsz.to_le_bytes());
        bytes.extend_from_slice(&flags.to_le_bytes());
        bytes.extend_from_slice(&self.pgsize_bitmap.to_le_bytes());
        bytes.extend_from_slice(&cap_offset.to_le_bytes());
        bytes.extend_from_slice(&0u32.to_le_bytes());
        bytes.truncate((argsz as usize).min(24));
        if cap_offset != 0 {
            bytes.extend_from_slice(&caps);
        }
        Ok(InfoReply {
            argsz: out_argsz,
            flags,
            iova_pgsizes: self.pgsize_bitmap,
            cap_offset,
            bytes,
            argsz_needed: needed,
            dma_avail: self.dma_avail,
            iova_ranges: self.iova_list.clone(),
            migration_pgsize: self.min_pgsize(),
        })
    }

    // ---- DIRTY_PAGES (spec §6) ----

    /// `VFIO_IOMMU_DIRTY_PAGES`. `get` is `(iova, size, bitmap)` for GET_BITMAP.
    pub fn dirty_pages(
        &mut self,
        argsz: u32,
        flags: u32,
        get: Option<(u64, u64, BitmapArg)>,
    ) -> Result<Option<Vec<u64>>, Error> {
        if !self.cfg.v2 {
            return Err(Error::DirtyV1);
        }
        let allowed = DIRTY_FLAG_START | DIRTY_FLAG_STOP | DIRTY_FLAG_GET_BITMAP;
        if argsz < 8 {
            return Err(Error::Argsz { argsz, min: 8 });
        }
        if flags & !allowed != 0 {
            return Err(Error::UnknownFlags {
                bits: flags & !allowed,
                allowed,
            });
        }
        if flags.count_ones() != 1 {
            return Err(Error::Dirty("exactly one of START, STOP, GET_BITMAP"));
        }
        match flags {
            DIRTY_FLAG_START => {
                self.dirty_tracking = true;
                Ok(None)
            }
            DIRTY_FLAG_STOP => {
                self.dirty_tracking = false;
                Ok(None)
            }
            _ => {
                let (iova, size, b) =
                    get.ok_or(Error::Dirty("GET_BITMAP needs a range and a bitmap"))?;
                if argsz < 8 + 40 {
                    return Err(Error::Argsz { argsz, min: 48 });
                }
                if size == 0 {
                    return Err(Error::ZeroSize);
                }
                let errno = self.cfg.kernel.wrap_errno();
                let last = iova.checked_add(size - 1).ok_or(Error::Wraps {
                    what: "iova",
                    start: iova,
                    size,
                    errno,
                })?;
                if b.pgsize == 0 || !verify_bitmap_size(size >> b.pgsize.trailing_zeros(), b.size) {
                    return Err(Error::Dirty("bitmap size does not match the range"));
                }
                let pgsize = self.min_pgsize();
                if b.pgsize != pgsize {
                    return Err(Error::Dirty("bitmap page size must be the IOMMU page size"));
                }
                if iova & (pgsize - 1) != 0 || size & (pgsize - 1) != 0 {
                    return Err(Error::Unaligned {
                        what: "iova or size",
                        value: iova | size,
                        pgsize,
                    });
                }
                if !self.dirty_tracking {
                    return Err(Error::Dirty("dirty tracking is not started"));
                }
                for (at, is_start) in [(iova, true), (last, false)] {
                    if let Some(d) = self.find_dma(at, at) {
                        let ok = if is_start {
                            d.iova == iova
                        } else {
                            d.iova + (d.size - 1) == last
                        };
                        if !ok {
                            return Err(Error::Bisect {
                                iova,
                                last,
                                dma_iova: d.iova,
                                dma_size: d.size,
                            });
                        }
                    }
                }
                // Every group is IOMMU-backed and never used pin_pages, so every page of every
                // mapped dma is reported dirty (`num_non_pinned_groups > 0`).
                let mut words = vec![0u64; b.size.div_ceil(8) as usize];
                for key in self.dmas_in(iova, last) {
                    let d = &self.dmas[&key];
                    if d.iommu_mapped {
                        set_bits(&mut words, (d.iova - iova) / pgsize, d.size / pgsize);
                    }
                }
                Ok(Some(words))
            }
        }
    }

    // ---- attach / detach (spec §2, §3.6) ----

    fn build_iova_list(domains: &[AttachedDomain]) -> Vec<(u64, u64)> {
        let Some(first) = domains.first() else {
            return Vec::new();
        };
        let (mut s, mut e) = first.domain.aperture();
        for d in domains {
            let (ds, de) = d.domain.aperture();
            s = s.max(ds);
            e = e.min(de);
        }
        if s > e {
            return Vec::new();
        }
        let mut list = vec![(s, e)];
        for d in domains {
            for &(rs, re) in &d.reserved {
                list = subtract(&list, rs, re);
            }
        }
        list
    }

    fn update_pgsize_bitmap(&mut self) {
        let mut bitmap = if self.domains.is_empty() {
            PAGE_MASK
        } else {
            u64::MAX
        };
        for d in &self.domains {
            bitmap &= d.domain.pgsize_bitmap();
        }
        if bitmap & !PAGE_MASK != 0 {
            bitmap &= PAGE_MASK;
            bitmap |= PAGE_SIZE;
        }
        self.pgsize_bitmap = bitmap;
    }

    /// Attach a group with a new IOMMU domain named `name`; `reserved` are the group's reserved
    /// IOVA regions (inclusive). Existing mappings are replayed into it (§3.6).
    pub fn attach(
        &mut self,
        name: &str,
        mut domain: Domain,
        reserved: Vec<(u64, u64)>,
    ) -> Result<(), Error> {
        let fail = |why: String| Error::Attach {
            name: name.to_string(),
            why,
        };
        if self.domains.iter().any(|d| d.name == name) {
            return Err(fail("a group of that name is attached already".into()));
        }
        if self.vaddr_invalid_count > 0 {
            return Err(Error::VaddrBusy);
        }
        let (ap_s, ap_e) = domain.aperture();
        if !self.iova_list.is_empty() {
            let (ls, le) = (
                self.iova_list[0].0,
                self.iova_list[self.iova_list.len() - 1].1,
            );
            if ap_s > le || ap_e < ls {
                return Err(fail(format!(
                    "aperture [{ap_s:#x}, {ap_e:#x}] is disjoint from the valid IOVA ranges"
                )));
            }
            if let Some(d) = self
                .dmas
                .values()
                .find(|d| d.iova < ap_s || d.iova + (d.size - 1) > ap_e)
            {
                return Err(fail(format!(
                    "aperture [{ap_s:#x}, {ap_e:#x}] would exclude the mapping at {:#x}",
                    d.iova
                )));
            }
        }
        for &(rs, re) in &reserved {
            if let Some(d) = self
                .dmas
                .values()
                .find(|d| d.iova <= re && d.iova + (d.size - 1) >= rs)
            {
                return Err(fail(format!(
                    "reserved region [{rs:#x}, {re:#x}] overlaps the mapping at {:#x}",
                    d.iova
                )));
            }
        }
        let common = self
            .domains
            .iter()
            .fold(domain.pgsize_bitmap(), |b, d| b & d.domain.pgsize_bitmap());
        if common == 0 {
            return Err(fail(
                "no IOMMU page size in common with the attached domains".into(),
            ));
        }
        domain.set_faults(Some(self.faults.clone()));
        let new = AttachedDomain {
            name: name.to_string(),
            domain,
            reserved,
        };
        // The valid ranges: the current list (or, for the first domain, the aperture) clipped to
        // the new aperture, minus the new group's reserved regions.
        let mut list = if self.domains.is_empty() {
            vec![(ap_s, ap_e)]
        } else {
            self.iova_list
                .iter()
                .filter_map(|&(s, e)| {
                    (s.max(ap_s) <= e.min(ap_e)).then_some((s.max(ap_s), e.min(ap_e)))
                })
                .collect()
        };
        for &(rs, re) in &new.reserved {
            list = subtract(&list, rs, re);
        }
        if list.is_empty() {
            return Err(fail(
                "no IOVA range is left after the aperture and reserved regions".into(),
            ));
        }
        if self.domains.is_empty() {
            self.replay_first(new)?;
        } else {
            let new = self.replay_into(new)?;
            self.domains.insert(0, new);
        }
        self.iova_list = list;
        self.update_pgsize_bitmap();
        Ok(())
    }

    /// Replay into an additional domain: map what the first domain translates, run by run, with
    /// no new pins and no accounting.
    fn replay_into(&mut self, mut new: AttachedDomain) -> Result<AttachedDomain, Error> {
        let first = &self.domains[0].domain;
        for d in self.dmas.values() {
            let mut pos = 0;
            while pos < d.size {
                let iova = d.iova + pos;
                let Some((phys, len)) = first.phys_run(iova, d.size - pos) else {
                    pos += PAGE_SIZE;
                    continue;
                };
                // On failure the new domain is dropped whole: nothing else was touched.
                new.domain.map(iova, phys, len, d.prot.union(Prot::CACHE))?;
                pos += len;
            }
        }
        Ok(new)
    }

    /// The first domain: pin and map every mapping recorded while there was none.
    fn replay_first(&mut self, new: AttachedDomain) -> Result<(), Error> {
        self.domains.insert(0, new);
        let keys: Vec<u64> = self.dmas.keys().copied().collect();
        for (i, key) in keys.iter().enumerate() {
            let mut work = self.dmas[key].clone();
            let full = work.size;
            work.size = 0;
            if let Err(e) = self.pin_map_dma(&mut work, full) {
                for k in &keys[..i] {
                    let mut d = self.dmas[k].clone();
                    self.unmap_unpin(&mut d, true);
                    d.has_rsvd = false;
                    self.dmas.insert(*k, d);
                }
                self.domains.remove(0);
                return Err(e);
            }
            self.dmas.insert(*key, work);
        }
        Ok(())
    }

    /// Detach the group of domain `name`. Detaching the last domain removes every mapping.
    pub fn detach(&mut self, name: &str) -> Result<(), Error> {
        let idx = self
            .domains
            .iter()
            .position(|d| d.name == name)
            .ok_or_else(|| Error::NoSuchDomain(name.to_string()))?;
        if self.domains.len() == 1 {
            self.unmap_unpin_all();
        }
        self.domains.remove(idx);
        self.iova_list = Self::build_iova_list(&self.domains);
        self.update_pgsize_bitmap();
        Ok(())
    }

    /// The engine's own heap, estimated from its entry counts (the DMA tree, the IOVA list, the
    /// domain records; page tables excluded): B-tree entries cost about 1.5× their size.
    pub fn footprint_estimate(&self) -> u64 {
        let dma = (std::mem::size_of::<u64>() + std::mem::size_of::<Dma>()) as u64 * 3 / 2;
        let ranges = self.iova_list.len() as u64 * 16;
        let domains = self.domains.len() as u64 * std::mem::size_of::<AttachedDomain>() as u64;
        let batch =
            self.batch_buf.capacity() as u64 * std::mem::size_of::<crate::mm::PfnRun>() as u64;
        self.dmas.len() as u64 * dma + ranges + domains + batch + std::mem::size_of::<Self>() as u64
    }

    // ---- checking ----

    /// The whole observable state.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            dmas: self.dmas.values().cloned().collect(),
            domains: self
                .domains
                .iter()
                .map(|d| {
                    let mut leaves = Vec::new();
                    d.domain.for_each_leaf(&mut |l| leaves.push(l));
                    (d.name.clone(), leaves, d.domain.table_pages())
                })
                .collect(),
            pins: self.mm.pin_ranges(),
            locked: self.locked,
            dma_avail: self.dma_avail,
            iova_list: self.iova_list.clone(),
            pgsize_bitmap: self.pgsize_bitmap,
            vaddr_invalid_count: self.vaddr_invalid_count,
            dirty_tracking: self.dirty_tracking,
        }
    }

    /// Check invariants 2–5 (and the bookkeeping behind them). Returns every violation found.
    pub fn check_invariants(&self) -> Result<(), Vec<String>> {
        let mut v: Vec<String> = self.violations.clone();
        v.extend(self.mm.violations());
        let sum: u64 = self.dmas.values().map(|d| d.locked_vm).sum();
        // After the owner exited its count stays where it was (§8.4 row 43).
        if sum != self.locked && self.owner_alive {
            v.push(format!(
                "locked pages {} != sum of the mappings' charges {sum}",
                self.locked
            ));
        }
        let entries = self.dmas.len() as u64 + self.dma_avail as u64;
        if entries != self.cfg.dma_entry_limit as u64 {
            v.push(format!(
                "{} mappings + {} entries left != limit {}",
                self.dmas.len(),
                self.dma_avail,
                self.cfg.dma_entry_limit
            ));
        }
        let invalid = self.dmas.values().filter(|d| d.vaddr_invalid).count() as u32;
        if invalid != self.vaddr_invalid_count {
            v.push(format!(
                "vaddr_invalid_count {} != {invalid} invalid mappings",
                self.vaddr_invalid_count
            ));
        }
        let mut expect_pins = PinCounts::new();
        if let Some(first) = self.domains.first() {
            let reserved = self.mm.reserved_pfn_ranges();
            for d in self.dmas.values() {
                if !d.iommu_mapped {
                    v.push(format!(
                        "mapping at {:#x} is not mapped into the IOMMU",
                        d.iova
                    ));
                }
                let mut covered = 0;
                let mut charge = 0;
                for leaf in leaves_in(&first.domain, d.iova, d.size) {
                    covered += leaf.size;
                    // Leaves below the page size (a 2K IOMMU page) share one pinned page: count
                    // it at the leaf that starts the page.
                    if leaf.size < PAGE_SIZE && leaf.iova % PAGE_SIZE != 0 {
                        continue;
                    }
                    let pfn = leaf.paddr >> PAGE_SHIFT;
                    let npages = (leaf.size >> PAGE_SHIFT).max(1);
                    for (s, n) in unreserved_pieces(pfn, npages, &reserved) {
                        expect_pins.add(s, n);
                        charge += n;
                    }
                }
                if covered != d.size {
                    v.push(format!(
                        "domain {} covers {covered:#x} of the mapping [{:#x}, +{:#x})",
                        first.name, d.iova, d.size
                    ));
                }
                if charge != d.locked_vm {
                    v.push(format!(
                        "mapping at {:#x} charged {} pages but pins {charge} non-reserved pages",
                        d.iova, d.locked_vm
                    ));
                }
            }
            for ad in &self.domains {
                let fmt = ad.domain.format();
                let mut total = 0;
                let mut bad = None;
                ad.domain.for_each_leaf(&mut |l| {
                    total += l.size;
                    let owner = self.find_dma(l.iova, l.iova + (l.size - 1));
                    let ok = owner.is_some_and(|d| {
                        l.iova >= d.iova
                            && l.iova + (l.size - 1) <= d.iova + (d.size - 1)
                            && l.prot == fmt.effective_prot(d.prot)
                            && first.domain.iova_to_phys(l.iova) == Some(l.paddr)
                    });
                    if !ok && bad.is_none() {
                        bad = Some(l);
                    }
                });
                if let Some(l) = bad {
                    v.push(format!(
                        "domain {}: leaf {l:?} does not match a mapping or the first domain",
                        ad.name
                    ));
                }
                let want: u64 = self.dmas.values().map(|d| d.size).sum();
                if total != want {
                    v.push(format!(
                        "domain {} translates {total:#x} bytes, the mappings hold {want:#x}",
                        ad.name
                    ));
                }
            }
        } else {
            for d in self.dmas.values() {
                if d.iommu_mapped || d.locked_vm != 0 {
                    v.push(format!(
                        "mapping at {:#x} is marked mapped or charged with no domain",
                        d.iova
                    ));
                }
            }
        }
        if expect_pins.ranges() != self.mm.pin_ranges() {
            v.push(format!(
                "pin counts differ from the translations: {} pages pinned, {} expected",
                self.mm.pinned_pages(),
                expect_pins.total()
            ));
        }
        if v.is_empty() {
            Ok(())
        } else {
            Err(v)
        }
    }
}

impl<M: PageSource> Drop for Container<M> {
    /// Container release: every mapping is removed, so every pin is dropped.
    fn drop(&mut self) {
        self.unmap_unpin_all();
    }
}

/// The leaves of `domain` inside `[iova, +size)`.
fn leaves_in(domain: &Domain, iova: u64, size: u64) -> Vec<Leaf> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < size {
        match domain.translate(iova + pos) {
            Some(l) => {
                pos += l.size - (iova + pos - l.iova);
                out.push(l);
            }
            None => pos += PAGE_SIZE,
        }
    }
    out
}

/// `[pfn, +n)` minus the reserved ranges, as `(start, pages)` pieces.
fn unreserved_pieces(pfn: u64, n: u64, reserved: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut pieces = vec![(pfn, pfn + n)];
    for &(rs, re) in reserved {
        pieces = pieces
            .into_iter()
            .flat_map(|(s, e)| {
                if re <= s || rs >= e {
                    vec![(s, e)]
                } else {
                    let mut v = Vec::new();
                    if s < rs {
                        v.push((s, rs));
                    }
                    if re < e {
                        v.push((re, e));
                    }
                    v
                }
            })
            .collect();
    }
    pieces.into_iter().map(|(s, e)| (s, e - s)).collect()
}

/// Inclusive ranges minus `[rs, re]`.
fn subtract(list: &[(u64, u64)], rs: u64, re: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for &(s, e) in list {
        if re < s || rs > e {
            out.push((s, e));
            continue;
        }
        if s < rs {
            out.push((s, rs - 1));
        }
        if re < e {
            out.push((re + 1, e));
        }
    }
    out
}

/// The first check of every ioctl: the structure fits in `argsz`, and no unknown flag is set.
fn check_header(argsz: u32, min: u32, flags: u32, allowed: u32) -> Result<(), Error> {
    if argsz < min {
        return Err(Error::Argsz { argsz, min });
    }
    if flags & !allowed != 0 {
        return Err(Error::UnknownFlags {
            bits: flags & !allowed,
            allowed,
        });
    }
    Ok(())
}

/// `verify_bitmap_size`.
fn verify_bitmap_size(npages: u64, bitmap_size: u64) -> bool {
    if npages == 0 || bitmap_size == 0 || bitmap_size > DIRTY_BITMAP_SIZE_MAX {
        return false;
    }
    bitmap_size >= npages.div_ceil(64) * 8
}

fn set_bits(words: &mut [u64], first: u64, n: u64) {
    for bit in first..first + n {
        if let Some(w) = words.get_mut((bit / 64) as usize) {
            *w |= 1 << (bit % 64);
        }
    }
}
