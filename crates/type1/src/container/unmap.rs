//! UNMAP_DMA (spec §4): `vfio_dma_do_unmap`, `vfio_unmap_unpin`, `vfio_sync_unpin`,
//! `vfio_remove_dma`.
//!
//! Invariants owned here: pfns are read back from the first domain only; a pfn is unpinned only
//! after the IOTLB sync that covers it; v2 refuses to bisect, v1 removes whole entries from the
//! first at or after `iova`; the reported size is the sum of what was removed.

use iommu::{Gather, IovaRange};

use super::tree::point;

use super::{
    check_header, set_bits, verify_bitmap_size, Container, Dma, UnmapDma, UnmapReply, TLB_SYNC_MAX,
    UNMAP_FLAG_ALL, UNMAP_FLAG_GET_DIRTY_BITMAP, UNMAP_FLAG_VADDR,
};
use crate::error::Error;
use crate::mm::PageSource;
use crate::profile::Strategy;
use crate::{PAGE_SHIFT, PAGE_SIZE};

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
    fn remove_dma(&mut self, key: u64) {
        let Some(mut dma) = self.dmas.unlink_dma(key) else {
            return;
        };
        self.unmap_unpin(&mut dma, true);
        if dma.vaddr_invalid {
            self.vaddr_invalid_count -= 1;
        }
    }

    /// Remove every mapping (container release, last domain detached).
    pub fn unmap_unpin_all(&mut self) {
        for k in self.dmas.iovas() {
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
            if let Some(d) = self.dmas.find_dma(point(iova)) {
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
                if let Some(d) = self.dmas.find_dma(point(last)) {
                    if d.last() != last {
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
        for key in self
            .dmas
            .overlapping(IovaRange::new(iova, last).expect("iova <= last"))
        {
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
}
