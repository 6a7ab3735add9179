//! The DMA tree: every mapping of the container (`struct vfio_dma`), keyed by IOVA.
//!
//! Invariants owned here: entries are pairwise disjoint; `avail + len == dma_entry_limit`;
//! lookups take an inclusive `last` (a range is `[start, last]`, so the top page of the 64-bit
//! space is a range like any other).

use super::{Container, Dma};
use crate::mm::PageSource;

impl<M: PageSource> Container<M> {
    /// `vfio_find_dma`: a mapping overlapping `[start, last]`.
    pub(super) fn find_dma(&self, start: u64, last: u64) -> Option<&Dma> {
        self.dmas
            .range(..=last)
            .next_back()
            .map(|(_, d)| d)
            .filter(|d| d.iova + (d.size - 1) >= start)
    }

    /// The IOVAs of the mappings overlapping `[start, last]`, lowest first.
    pub(super) fn dmas_in(&self, start: u64, last: u64) -> Vec<u64> {
        let mut keys = Vec::new();
        if let Some((&k, d)) = self.dmas.range(..start).next_back() {
            if d.iova + (d.size - 1) >= start {
                keys.push(k);
            }
        }
        keys.extend(self.dmas.range(start..=last).map(|(&k, _)| k));
        keys
    }
}
