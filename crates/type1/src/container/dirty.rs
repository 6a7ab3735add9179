//! DIRTY_PAGES (spec §6): start, stop, and the dirty bitmap of a range.
//!
//! Invariants owned here: tracking is for type1v2 only; a bitmap is reported only while tracking
//! and never bisects a mapping; every page of every IOMMU-mapped mapping in the range is dirty
//! (every group is IOMMU-backed and never pins pages itself).

use iommu::IovaRange;

use super::tree::point;
use super::{
    set_bits, verify_bitmap_size, BitmapArg, Container, DIRTY_FLAG_GET_BITMAP, DIRTY_FLAG_START,
    DIRTY_FLAG_STOP,
};
use crate::error::Error;
use crate::mm::PageSource;

impl<M: PageSource> Container<M> {
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
                    if let Some(d) = self.dmas.find_dma(point(at)) {
                        let ok = if is_start {
                            d.iova == iova
                        } else {
                            d.last() == last
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
                for key in self
                    .dmas
                    .overlapping(IovaRange::new(iova, last).expect("iova <= last"))
                {
                    let d = &self.dmas[key];
                    if d.iommu_mapped {
                        set_bits(&mut words, (d.iova - iova) / pgsize, d.size / pgsize);
                    }
                }
                Ok(Some(words))
            }
        }
    }
}
