//! DIRTY_PAGES (spec §6): start, stop, and the dirty bitmap of a range.
//!
//! Invariants owned here: tracking is for type1v2 only; a bitmap is reported only while tracking
//! and never bisects a mapping; every page of every IOMMU-mapped mapping in the range is dirty
//! (every group is IOMMU-backed and never pins pages itself).

use iommu::IovaRange;

use super::{Container, Dma};
use crate::error::Error;
use crate::mm::PageSource;
use crate::uapi::{BitmapArg, DirtyRequest};

impl<M: PageSource> Container<M> {
    /// `VFIO_IOMMU_DIRTY_PAGES`: decode the request, then `vfio_dirty_pages`. `get` is
    /// `(iova, size, bitmap)` for GET_BITMAP.
    pub fn dirty_pages(
        &mut self,
        argsz: u32,
        flags: u32,
        get: Option<(u64, u64, BitmapArg)>,
    ) -> Result<Option<Vec<u64>>, Error> {
        if self.cfg.kernel.is_3_11() {
            return Err(crate::container::v3_11::no_dirty_pages());
        }
        if !self.cfg.v2 {
            return Err(Error::DirtyV1);
        }
        let req = DirtyRequest::decode(argsz, flags, get, self.min_pgsize(), self.cfg.kernel)?;
        self.vfio_dirty_pages(&req)
    }

    /// Start or stop tracking, or `vfio_iova_dirty_bitmap`.
    pub(crate) fn vfio_dirty_pages(
        &mut self,
        req: &DirtyRequest,
    ) -> Result<Option<Vec<u64>>, Error> {
        match *req {
            DirtyRequest::Start => {
                self.external_dirty_start();
                self.dirty_tracking = true;
                Ok(None)
            }
            DirtyRequest::Stop => {
                self.external_dirty_stop();
                self.dirty_tracking = false;
                Ok(None)
            }
            DirtyRequest::GetBitmap { range, bitmap } => {
                self.vfio_iova_dirty_bitmap(range, bitmap).map(Some)
            }
        }
    }

    /// `vfio_iova_dirty_bitmap`: the dirty pages of `range`, which must not bisect a mapping.
    fn vfio_iova_dirty_bitmap(
        &mut self,
        range: IovaRange,
        bitmap: BitmapArg,
    ) -> Result<Vec<u64>, Error> {
        if !self.dirty_tracking {
            return Err(Error::Dirty("dirty tracking is not started"));
        }
        if let Some(d) = self.dmas.bisected(range, true) {
            return Err(Error::Bisect {
                iova: range.start(),
                last: range.last(),
                dma_iova: d.iova,
                dma_size: d.size,
            });
        }
        // Every group is IOMMU-backed and never used pin_pages, so every page of every mapped
        // dma is reported dirty (`num_non_pinned_groups > 0`).
        let pgsize = self.min_pgsize();
        let mut words = bitmap.words();
        for key in self.dmas.overlapping(range) {
            self.report_dirty(&mut words, range.start(), key, pgsize, true);
        }
        Ok(words)
    }
}

/// Set the bits of the pages of `d` in a bitmap whose bit 0 is the page at `base`, if `d` is
/// mapped into the IOMMU.
pub(super) fn mark_dirty(words: &mut [u64], base: u64, d: &Dma, pgsize: u64) {
    if !d.iommu_mapped {
        return;
    }
    let first = (d.iova - base) / pgsize;
    for bit in first..first + d.size / pgsize {
        if let Some(w) = words.get_mut((bit / 64) as usize) {
            *w |= 1 << (bit % 64);
        }
    }
}
