//! The kernel's `iommu_pgsize` (drivers/iommu/iommu.c), exactly: given a physically contiguous run,
//! pick the largest page size that the size and the common alignment of IOVA and physical address
//! allow, and how many leaves of that size to map in one `map_pages` call before a larger size
//! becomes possible (spec §3.4). Written once here for every format.

/// `GENMASK(hi, 0)`: bits 0..=hi set.
fn genmask(hi: u32) -> u64 {
    if hi >= 63 {
        u64::MAX
    } else {
        (1u64 << (hi + 1)) - 1
    }
}

/// `__fls(x)`: index of the most significant set bit (`x != 0`).
fn fls(x: u64) -> u32 {
    63 - x.leading_zeros()
}

/// One step of the split: the page size to use at `iova`/`paddr` for a run of `size` bytes, and
/// the number of leaves of that size to map in one call (the kernel's `pgcount`).
///
/// Returns `None` where the kernel would `BUG_ON(!pgsizes)`: no allowed size is small enough or
/// aligned enough (the callers check alignment to the minimum page size first, so this is a bug
/// in the caller, never a user error).
pub fn iommu_pgsize(pgsize_bitmap: u64, iova: u64, paddr: u64, size: u64) -> Option<(u64, u64)> {
    if size == 0 {
        return None;
    }
    let addr_merge = paddr | iova;
    // Page sizes no larger than the size of the run.
    let mut pgsizes = pgsize_bitmap & genmask(fls(size));
    // Page sizes no larger than the common alignment of iova and paddr.
    if addr_merge != 0 {
        pgsizes &= genmask(addr_merge.trailing_zeros());
    }
    if pgsizes == 0 {
        return None;
    }
    let pgsize_idx = fls(pgsizes);
    let pgsize = 1u64 << pgsize_idx;
    let mut size = size;

    // Is there a bigger page size that a later part of the run could use?
    let bigger = pgsize_bitmap & !genmask(pgsize_idx);
    if bigger != 0 {
        let next = 1u64 << bigger.trailing_zeros();
        // Only if iova and paddr are congruent modulo that size can it ever be used.
        if (iova ^ paddr) & (next - 1) == 0 {
            // Distance to the next boundary of that size: stop the small pages there.
            let offset = next - (addr_merge & (next - 1));
            if let Some(end) = offset.checked_add(next) {
                if end <= size {
                    size = offset;
                }
            }
        }
    }
    Some((pgsize, size >> pgsize_idx))
}

/// The whole split of a run, as the kernel's `iommu_map_nosync` loop produces it: a list of
/// `(iova, paddr, pgsize, count)` calls. Used by tests and reports; `Domain::map` runs the same
/// loop without allocating.
pub fn split(
    pgsize_bitmap: u64,
    iova: u64,
    paddr: u64,
    size: u64,
) -> Option<Vec<(u64, u64, u64, u64)>> {
    let mut out = Vec::new();
    let (mut iova, mut paddr, mut size) = (iova, paddr, size);
    while size != 0 {
        let (pgsize, count) = iommu_pgsize(pgsize_bitmap, iova, paddr, size)?;
        out.push((iova, paddr, pgsize, count));
        let mapped = pgsize * count;
        size -= mapped;
        iova = iova.wrapping_add(mapped);
        paddr = paddr.wrapping_add(mapped);
    }
    Some(out)
}
