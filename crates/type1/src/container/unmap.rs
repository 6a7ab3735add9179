//! UNMAP_DMA (spec §4): `vfio_dma_do_unmap`, `vfio_unmap_unpin`, `vfio_sync_unpin`,
//! `vfio_remove_dma`.
//!
//! Invariants owned here: pfns are read back from the first domain only; a pfn is unpinned only
//! after the IOTLB sync that covers it; v2 refuses to bisect, v1 removes whole entries from the
//! first at or after `iova`; the reported size is the sum of what was removed.

use iommu::{Gather, IovaRange};

use super::{Container, Dma};
use crate::error::Error;
use crate::mm::PageSource;
use crate::profile::Strategy;
use crate::uapi::{BitmapArg, UnmapDma, UnmapReply, UnmapRequest};
use crate::{PAGE_SHIFT, PAGE_SIZE};

/// `VFIO_IOMMU_TLB_SYNC_MAX`: unmapped regions gathered before a forced IOTLB sync.
pub const TLB_SYNC_MAX: usize = 512;

impl<M: PageSource> Container<M> {
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
    pub(super) fn unmap_unpin(&mut self, dma: &mut Dma, do_accounting: bool) -> u64 {
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
    pub(super) fn remove_dma(&mut self, key: u64) {
        self.drop_external_pins(key);
        let Some(mut dma) = self.dmas.unlink_dma(key) else {
            return;
        };
        self.dma_bitmaps.remove(&key);
        self.unmap_unpin(&mut dma, true);
        if dma.vaddr_invalid {
            self.vaddr_invalid_count -= 1;
        }
    }

    /// Remove every mapping (container release, last domain detached).
    pub fn unmap_unpin_all(&mut self) {
        if self.cfg.kernel.is_3_11() {
            return self.release_3_11();
        }
        for k in self.dmas.iovas() {
            self.remove_dma(k);
        }
    }

    /// `VFIO_IOMMU_UNMAP_DMA`: decode the request, then `vfio_dma_do_unmap`.
    pub fn unmap_dma(&mut self, req: &UnmapDma) -> Result<UnmapReply, Error> {
        if self.cfg.kernel.is_3_11() {
            let size = self.unmap_dma_3_11(req)?;
            return Ok(UnmapReply { size, bitmap: None });
        }
        let req = UnmapRequest::decode(req, self.min_pgsize(), self.cfg.kernel)?;
        self.vfio_dma_do_unmap(&req)
    }

    /// `vfio_dma_do_unmap`: remove (or, for `Vaddr`, invalidate) the mappings in the range.
    pub(crate) fn vfio_dma_do_unmap(&mut self, req: &UnmapRequest) -> Result<UnmapReply, Error> {
        let (range, all, set_vaddr, bitmap_arg) = match *req {
            UnmapRequest::Range(r) => (r, false, false, None),
            UnmapRequest::All => (IovaRange::FULL, true, false, None),
            UnmapRequest::Vaddr(r) => (r.unwrap_or(IovaRange::FULL), r.is_none(), true, None),
            UnmapRequest::DirtyBitmap { range, bitmap } => (range, false, false, Some(bitmap)),
        };
        let (iova, last) = range.pair();
        let pgsize = self.min_pgsize();
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
            if let Some(d) = self.dmas.bisected(range, !end_is_empty) {
                return Err(Error::Bisect {
                    iova,
                    last,
                    dma_iova: d.iova,
                    dma_size: d.size,
                });
            }
        }
        let mut bitmap = bitmap_arg.map(BitmapArg::words);
        if end_is_empty {
            return Ok(UnmapReply { size: 0, bitmap });
        }
        let mut unmapped = 0u64;
        let mut invalidated: Vec<u64> = Vec::new();
        for key in self.dmas.overlapping(range) {
            let d = &self.dmas[key];
            if !self.cfg.v2 && iova > d.iova {
                break;
            }
            if set_vaddr {
                if d.vaddr_invalid {
                    for k in invalidated {
                        self.dmas
                            .get_mut(k)
                            .expect("invalidated above")
                            .vaddr_invalid = false;
                        self.vaddr_invalid_count -= 1;
                    }
                    return Err(Error::VaddrAlreadyInvalid { iova: key });
                }
                unmapped += d.size;
                self.dmas.get_mut(key).expect("in tree").vaddr_invalid = true;
                self.vaddr_invalid_count += 1;
                invalidated.push(key);
                continue;
            }
            // The pinning devices are told first (they unpin), then the bitmap is reported.
            self.vfio_notify_dma_unmap(key);
            let d = self.dmas[key].clone();
            if let Some(mut words) = bitmap.take() {
                self.update_user_bitmap(&mut words, &d, iova, false);
                bitmap = Some(words);
            }
            unmapped += d.size;
            self.remove_dma(key);
        }
        Ok(UnmapReply {
            size: unmapped,
            bitmap,
        })
    }
}
