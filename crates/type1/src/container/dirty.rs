//! DIRTY_PAGES (spec §6): start, stop, the dirty bitmap of a range, and each mapping's own
//! bitmap (`vfio_dma.bitmap`) that the kernel keeps between reports.
//!
//! Invariants owned here: tracking is for type1v2 only; while tracking, every mapping has a
//! bitmap ([`DmaBitmap`]) and no mapping has more than [`DIRTY_BITMAP_PAGES_MAX`] pages at the
//! bitmap page size (`vfio_dma_bitmap_alloc`: START and MAP are EINVAL otherwise); a bitmap is
//! reported only while tracking and never bisects a mapping; every page of every IOMMU-mapped
//! mapping in the range is dirty (every group is IOMMU-backed and never pins pages itself).
//!
//! The report is `update_user_bitmap` bit for bit, including what looks like a kernel bug
//! (docs/kernel-check.md, "Dirty bitmaps"): a mapping whose first bit is not at a word boundary
//! of the caller's bitmap has its own bitmap shifted in place (`bitmap_shift_left` over
//! `nbits + shift` bits) and OR'ed with the caller's word, and afterwards only its first `nbits`
//! bits are cleared (`bitmap_clear(dma->bitmap, 0, dma->size >> pgshift)`). What was shifted
//! past `nbits` stays, and every later report of that mapping copies it out again, past the
//! mapping's last page (whole u64 words are copied: `DIRTY_BITMAP_BYTES`).

use std::collections::BTreeSet;

use iommu::IovaRange;

use super::{Container, Dma};
use crate::error::Error;
use crate::mm::PageSource;
use crate::uapi::{BitmapArg, DirtyRequest};

/// `DIRTY_BITMAP_PAGES_MAX`: `INT_MAX`, the most pages a mapping's dirty bitmap covers.
pub const DIRTY_BITMAP_PAGES_MAX: u64 = i32::MAX as u64;

/// What outlives a report of the kernel's per-mapping bitmap (`vfio_dma.bitmap`, allocated
/// `DIRTY_BITMAP_BYTES(npages) + sizeof(u64)` bytes, zeroed): its bits at and above `nbits`,
/// which sit in the words `nbits / 64` and, when `nbits` is not a multiple of 64, the one after
/// (the allocation's last word). Bits below `nbits` between reports are the externally pinned
/// pages (`vfio_dma_populate_bitmap`) and what `dma_rw` wrote; those live with the pins
/// (`container::pins`) and are passed in at each report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DmaBitmap {
    /// Words `nbits / 64` and `nbits / 64 + 1`, bits below `nbits` zero.
    tail: [u64; 2],
}

impl DmaBitmap {
    /// The words of the allocation for a mapping of `nbits` pages: `ceil(nbits / 64) + 1`.
    fn words(nbits: u64) -> u64 {
        nbits.div_ceil(64) + 1
    }

    /// Word `i` of the whole bitmap: the first `nbits` bits `ones` (set or clear) or'ed with
    /// the `pinned` bits (below `nbits`), then the tail.
    fn word(&self, i: u64, nbits: u64, ones: bool, pinned: &BTreeSet<u64>) -> u64 {
        let w0 = nbits / 64;
        let mut w = if i == w0 {
            self.tail[0]
        } else if i == w0 + 1 {
            self.tail[1]
        } else {
            0
        };
        if ones && i * 64 < nbits {
            let n = (nbits - i * 64).min(64);
            w |= low_bits(n);
        }
        let lo = i.saturating_mul(64);
        let hi = lo.saturating_add(64).min(nbits);
        if lo < hi {
            for b in pinned.range(lo..hi) {
                w |= 1 << (b % 64);
            }
        }
        w
    }

    /// `update_user_bitmap` of a mapping of `nbits` pages whose first page is bit `bit_offset` of
    /// `user` (the caller's bitmap, u64 words), then the caller's `bitmap_clear` of its first
    /// `nbits` bits. `dirty`: every page is dirty (`num_non_pinned_groups && iommu_mapped`);
    /// `pinned`: the bits below `nbits` the mapping's bitmap holds (externally pinned or
    /// written by `dma_rw` while tracking).
    fn report(
        &mut self,
        user: &mut [u64],
        nbits: u64,
        bit_offset: u64,
        dirty: bool,
        pinned: &BTreeSet<u64>,
    ) {
        let copy_offset = bit_offset / 64;
        let shift = bit_offset % 64;
        let cap = Self::words(nbits);
        let w0 = nbits / 64;
        // The bitmap after `bitmap_shift_left(.., shift, nbits + shift)` and the OR of the
        // caller's word: words below `lim` are shifted, the rest keep their bits.
        let lim = if shift == 0 {
            0
        } else {
            (nbits + shift).div_ceil(64)
        };
        let leftover = user.get(copy_offset as usize).copied().unwrap_or(0);
        let after = |i: u64| -> u64 {
            if i >= lim {
                return self.word(i, nbits, dirty, pinned);
            }
            let lower = if i > 0 {
                self.word(i - 1, nbits, dirty, pinned) >> (64 - shift)
            } else {
                0
            };
            let w = (self.word(i, nbits, dirty, pinned) << shift) | lower;
            if i == 0 {
                w | leftover
            } else {
                w
            }
        };
        // `copy_to_user` of DIRTY_BITMAP_BYTES(nbits + shift): whole words.
        let copied = (nbits + shift).div_ceil(64);
        for i in 0..copied {
            if let Some(u) = usize::try_from(copy_offset + i)
                .ok()
                .and_then(|at| user.get_mut(at))
            {
                *u = after(i);
            }
        }
        // `bitmap_clear(dma->bitmap, 0, nbits)`: the tail words keep their bits from nbits on.
        let keep_from = nbits - w0 * 64;
        let t0 = after(w0) & !low_bits(keep_from);
        let t1 = if w0 + 1 < cap { after(w0 + 1) } else { 0 };
        self.tail = [t0, t1];
    }
}

/// A word with its `n` (0..=64) lowest bits set.
fn low_bits(n: u64) -> u64 {
    if n >= 64 {
        u64::MAX
    } else {
        (1u64 << n) - 1
    }
}

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
                // START while tracking keeps the bitmaps as they are.
                if !self.dirty_tracking {
                    self.vfio_dma_bitmap_alloc_all()?;
                    // `vfio_dma_populate_bitmap`: the externally pinned pages start dirty.
                    self.external_dirty_start();
                    self.dirty_tracking = true;
                }
                Ok(None)
            }
            DirtyRequest::Stop => {
                // `vfio_dma_bitmap_free_all`.
                self.dma_bitmaps.clear();
                self.external_dirty_stop();
                self.dirty_tracking = false;
                Ok(None)
            }
            DirtyRequest::GetBitmap { range, bitmap } => {
                self.vfio_iova_dirty_bitmap(range, bitmap).map(Some)
            }
        }
    }

    /// `vfio_dma_bitmap_alloc` for a mapping of `size` bytes: EINVAL beyond
    /// [`DIRTY_BITMAP_PAGES_MAX`] pages of the smallest IOMMU page size.
    pub(super) fn vfio_dma_bitmap_alloc(&mut self, iova: u64, size: u64) -> Result<(), Error> {
        if size / self.min_pgsize() > DIRTY_BITMAP_PAGES_MAX {
            return Err(Error::Dirty(
                "a mapping of more than INT_MAX pages has no dirty bitmap",
            ));
        }
        self.dma_bitmaps.insert(iova, DmaBitmap::default());
        Ok(())
    }

    /// `vfio_dma_bitmap_alloc_all`: a fresh bitmap for every mapping, or none at all.
    fn vfio_dma_bitmap_alloc_all(&mut self) -> Result<(), Error> {
        for (iova, size) in self
            .dmas
            .iter()
            .map(|d| (d.iova, d.size))
            .collect::<Vec<_>>()
        {
            if let Err(e) = self.vfio_dma_bitmap_alloc(iova, size) {
                self.dma_bitmaps.clear();
                return Err(e);
            }
        }
        Ok(())
    }

    /// `update_user_bitmap` of `d` into `user`, whose bit 0 is the page at `base`, at the
    /// container's smallest page size; then the mapping's bitmap is cleared and, if
    /// `repopulate` (a GET_BITMAP report, not an unmap), refilled with its externally pinned
    /// pages (`vfio_dma_populate_bitmap`).
    pub(super) fn update_user_bitmap(
        &mut self,
        user: &mut [u64],
        d: &Dma,
        base: u64,
        repopulate: bool,
    ) {
        let pgshift = self.min_pgsize().trailing_zeros();
        let nbits = d.size >> pgshift;
        let bit_offset = (d.iova - base) >> pgshift;
        // `num_non_pinned_groups && iommu_mapped`: every page is dirty unless every group's
        // device pins what it touches.
        let dirty = d.iommu_mapped && !self.dirty_pin_scoped();
        let none = BTreeSet::new();
        let pinned = self.ext.dirty_bits(d.iova).unwrap_or(&none);
        let bm = self.dma_bitmaps.entry(d.iova).or_default();
        bm.report(user, nbits, bit_offset, dirty, pinned);
        if repopulate {
            self.external_dirty_repopulate(d.iova);
        } else {
            self.external_dirty_forget(d.iova);
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
        let mut words = bitmap.words();
        for key in self.dmas.overlapping(range) {
            let d = self.dmas[key].clone();
            // The kernel walks the mappings that start inside the range.
            if d.iova < range.start() {
                continue;
            }
            self.update_user_bitmap(&mut words, &d, range.start(), true);
        }
        Ok(words)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bits `[from, to)` of a bitmap of `words` words.
    fn bits(words: usize, ranges: &[(u64, u64)]) -> Vec<u64> {
        let mut v = vec![0u64; words];
        for &(from, to) in ranges {
            for b in from..to {
                v[(b / 64) as usize] |= 1 << (b % 64);
            }
        }
        v
    }

    /// What 7.2, 6.12 and 6.1 answer (tests/kernel/dirty-shift.trace): a 5-page mapping reported
    /// at bit 2 twice, then at bit 0.
    #[test]
    fn a_shifted_report_leaves_bits_past_the_mapping() {
        let mut bm = DmaBitmap::default();
        let mut u = vec![0u64; 1];
        bm.report(&mut u, 5, 2, true, &BTreeSet::new());
        assert_eq!(u, bits(1, &[(2, 7)]), "first report: the mapping's pages");
        let mut u = vec![0u64; 1];
        bm.report(&mut u, 5, 2, true, &BTreeSet::new());
        assert_eq!(u, bits(1, &[(2, 9)]), "bits 5..7 stayed and shift again");
        let mut u = vec![0u64; 1];
        bm.report(&mut u, 5, 0, true, &BTreeSet::new());
        assert_eq!(
            u,
            bits(1, &[(0, 9)]),
            "unshifted: the stale bits 5..9 follow"
        );
    }

    /// The caller's word is OR'ed in whole (`bitmap_or` over `shift` bits works on words), and
    /// what came from it below `nbits` is cleared, the rest stays in the mapping's bitmap.
    #[test]
    fn the_callers_word_is_ored_and_kept_past_nbits() {
        let mut bm = DmaBitmap::default();
        // a: 25 pages at bit 0 were reported before: the caller's word holds bits 0..25.
        let mut u = bits(1, &[(0, 25)]);
        bm.report(&mut u, 10, 32, true, &BTreeSet::new());
        assert_eq!(u, bits(1, &[(0, 25), (32, 42)]));
        // Bits 10..25 (from the caller's word) and 32..42 stay.
        let mut u = bits(1, &[(0, 25)]);
        bm.report(&mut u, 10, 32, true, &BTreeSet::new());
        assert_eq!(u, bits(1, &[(0, 25), (32, 57)]));
        let mut u = vec![0u64; 1];
        bm.report(&mut u, 10, 0, true, &BTreeSet::new());
        assert_eq!(u, bits(1, &[(0, 25), (32, 57)]));
    }

    /// A mapping crossing words: the shift carries bits into the next word, and the copy covers
    /// `ceil((nbits + shift) / 64)` words from the mapping's first word.
    #[test]
    fn shifts_carry_across_words() {
        let mut bm = DmaBitmap::default();
        let mut u = vec![0u64; 3];
        // 75 pages at bit 226: word 3 of the caller, shift 34.
        let mut big = vec![0u64; 6];
        bm.report(&mut big, 75, 226, true, &BTreeSet::new());
        assert_eq!(big, bits(6, &[(226, 301)]));
        bm.report(&mut u, 75, 0, true, &BTreeSet::new());
        // nbits 75: words 1 and 2 of the allocation hold bits 75..109 shifted out before.
        assert_eq!(u, bits(3, &[(0, 109)]));
        // A mapping never mapped into the IOMMU reports only what stayed.
        let mut z = vec![0u64; 3];
        bm.report(&mut z, 75, 0, false, &BTreeSet::new());
        assert_eq!(z, bits(3, &[(75, 109)]));
    }
}
