//! Vmas: the still-mapped pieces of a model's regions, keyed by start address. Shared by
//! `sim` and `host`, which differ in what backs a region, not in how munmap splits it.
//!
//! Invariant: vmas are pairwise disjoint; each range is `[start, end)` (`end` exclusive).

/// A mapping of a region's address range (a piece of it after a partial munmap), keyed by its
/// start in a `Vmas` map. Shared by the models.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Vma {
    pub end: u64,
    pub region: usize,
}

/// A process's vmas: start → vma, disjoint.
pub(crate) type Vmas = std::collections::BTreeMap<u64, Vma>;

/// The vma holding `vaddr`, with its start.
pub(crate) fn vma_at(vmas: &Vmas, vaddr: u64) -> Option<(u64, Vma)> {
    let (&s, &v) = vmas.range(..=vaddr).next_back()?;
    (vaddr < v.end).then_some((s, v))
}

/// Cut `[start, end)` out of region `region`'s vmas, keeping what lies on either side; returns
/// the pieces removed, as `[s, e)` ranges in address order.
pub(crate) fn cut_vmas(vmas: &mut Vmas, region: usize, start: u64, end: u64) -> Vec<(u64, u64)> {
    // Vmas are disjoint and sorted: walking down from `end`, the first one ending at or
    // before `start` ends the search (O(log n + hits), not a scan of every vma).
    let mut hit: Vec<(u64, Vma)> = vmas
        .range(..end)
        .rev()
        .take_while(|(_, v)| v.end > start)
        .filter(|(&s, v)| v.region == region && v.end > start && s < end)
        .map(|(&s, &v)| (s, v))
        .collect();
    hit.reverse();
    let mut gone = Vec::with_capacity(hit.len());
    for (s, v) in hit {
        vmas.remove(&s);
        if s < start {
            vmas.insert(s, Vma { end: start, region });
        }
        if v.end > end {
            vmas.insert(end, Vma { end: v.end, region });
        }
        gone.push((s.max(start), v.end.min(end)));
    }
    gone
}
