//! MAP_DMA (spec §1.3, §3): `vfio_dma_do_map`, `vfio_pin_map_dma`, `vfio_pin_pages_remote`.
//!
//! Invariants owned here: each step takes one physically contiguous, uniformly reserved run;
//! pages are charged before any domain maps them; `dma.size` is always the prefix mapped in every
//! domain; on error the prefix goes through the unmap path, so a failed call changes nothing.

use iommu::Prot;

use super::{Container, Dma};
use crate::error::Error;
use crate::mm::{Batch, MmError, PageSource, PinMode, Pinned};
use crate::profile::Strategy;
use crate::uapi::{MapDma, MapOp, MapRequest};
use crate::PAGE_SHIFT;

/// One pin run: physically contiguous, uniformly reserved.
#[derive(Clone, Copy, Debug)]
struct Run {
    pfn: u64,
    npages: u64,
}

impl<M: PageSource> Container<M> {
    /// `VFIO_IOMMU_MAP_DMA`: decode the request, then `vfio_dma_do_map`.
    pub fn map_dma(&mut self, req: &MapDma) -> Result<(), Error> {
        if self.cfg.kernel.is_3_11() {
            return self.map_dma_3_11(req);
        }
        let req = MapRequest::decode(req, self.min_pgsize(), self.cfg.kernel)?;
        self.vfio_dma_do_map(&req)
    }

    /// `vfio_dma_do_map`: update an invalidated vaddr, or record a new mapping and pin and map
    /// it into every domain.
    pub(crate) fn vfio_dma_do_map(&mut self, req: &MapRequest) -> Result<(), Error> {
        let prot = match req.op {
            MapOp::UpdateVaddr => return self.update_vaddr(req),
            MapOp::Map(prot) => prot,
        };
        let (iova, vaddr, size) = (req.iova.start(), req.vaddr, req.size());
        if let Some(d) = self.dmas.find_dma(req.iova) {
            return Err(Error::Exists {
                iova,
                size,
                dma_iova: d.iova,
                dma_size: d.size,
            });
        }
        if self.dmas.avail() == 0 {
            return Err(Error::NoEntries {
                limit: self.dmas.limit(),
            });
        }
        if !self.iova_valid(req.iova) {
            return Err(Error::OutsideIovaRanges {
                iova,
                last: req.iova.last(),
            });
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
        self.dmas.link_dma(dma);
        if self.dirty_tracking {
            // After pinning and mapping, as the kernel: a refused bitmap unmaps it again.
            if let Err(e) = self.vfio_dma_bitmap_alloc(iova, size) {
                self.remove_dma(iova);
                return Err(e);
            }
        }
        Ok(())
    }

    /// The `VFIO_DMA_MAP_FLAG_VADDR` branch of `vfio_dma_do_map`: the mapping with exactly this
    /// range, its vaddr invalidated, takes the new vaddr.
    fn update_vaddr(&mut self, req: &MapRequest) -> Result<(), Error> {
        let (iova, size) = (req.iova.start(), req.size());
        let Some(d) = self.dmas.find_dma(req.iova) else {
            return Err(Error::VaddrNoDma { iova, size });
        };
        if !d.vaddr_invalid || d.iova != iova || d.size != size {
            return Err(Error::VaddrMismatch);
        }
        let d = self.dmas.get_mut(iova).expect("found above");
        d.vaddr = req.vaddr;
        d.vaddr_invalid = false;
        self.vaddr_invalid_count -= 1;
        Ok(())
    }

    fn new_batch(&mut self) -> Batch {
        let (mode, capacity) = match self.cfg.strategy {
            // `disable_hugepages`: a batch of one page.
            Strategy::PerPage => (PinMode::PerPage, 1),
            Strategy::Contiguous => (PinMode::PerPage, Batch::MAX_CAPACITY),
            Strategy::Folio => (PinMode::Folio, Batch::MAX_CAPACITY),
        };
        Batch::with_buffer(mode, capacity, std::mem::take(&mut self.batch_buf))
    }

    /// `vfio_pin_map_dma`: pin run by run and map each run into every domain; `dma.size` is the
    /// mapped prefix. On error the prefix is unmapped, unpinned and uncharged.
    pub(super) fn pin_map_dma(&mut self, dma: &mut Dma, size: u64) -> Result<(), Error> {
        let mut batch = self.new_batch();
        let mut left = size;
        let mut res = Ok(());
        while left > 0 {
            let vaddr = dma.vaddr + dma.size;
            match self.pin_pages_remote(dma, vaddr, left >> PAGE_SHIFT, &mut batch) {
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
        self.batch_buf = batch.into_buffer();
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
                if let Err(e) = self.account.check_limit(dma.lock_cap, lock_acct + acct) {
                    break Err(e);
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
    pub(super) fn unpin_pages_remote(
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
}
