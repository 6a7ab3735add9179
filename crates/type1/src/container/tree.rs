//! The DMA tree: every mapping of the container (`struct vfio_dma` in `iommu->dma_list`), keyed by
//! IOVA, with the entry budget (`iommu->dma_avail`).
//!
//! Invariants owned here: entries are pairwise disjoint and never empty; `avail + len ==
//! dma_entry_limit`; lookups take an inclusive `last` (a range is `[start, last]`, so the top page
//! of the 64-bit space is a range like any other).

use std::collections::BTreeMap;
use std::ops::Index;

use iommu::IovaRange;

use super::Dma;

/// The mappings of a container, keyed by IOVA, and how many more it may hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DmaTree {
    map: BTreeMap<u64, Dma>,
    /// Entries left (`dma_avail`).
    avail: u32,
    /// `dma_entry_limit`.
    limit: u32,
}

impl DmaTree {
    /// An empty tree that may hold `limit` mappings.
    pub fn new(limit: u32) -> Self {
        DmaTree {
            map: BTreeMap::new(),
            avail: limit,
            limit,
        }
    }

    /// The number of mappings.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the tree holds no mapping.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Entries left (`dma_avail`).
    pub fn avail(&self) -> u32 {
        self.avail
    }

    /// The most mappings the tree holds (`dma_entry_limit`).
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// The mappings, lowest IOVA first.
    pub fn iter(&self) -> impl Iterator<Item = &Dma> {
        self.map.values()
    }

    /// The IOVAs of every mapping, lowest first (a copy, for walks that remove entries).
    pub fn iovas(&self) -> Vec<u64> {
        self.map.keys().copied().collect()
    }

    /// The mapping that starts at `iova`.
    pub fn get(&self, iova: u64) -> Option<&Dma> {
        self.map.get(&iova)
    }

    /// `vfio_find_dma`: a mapping overlapping `range` (the one with the highest IOVA), if any.
    pub fn find_dma(&self, range: IovaRange) -> Option<&Dma> {
        self.map
            .range(..=range.last())
            .next_back()
            .map(|(_, d)| d)
            .filter(|d| d.last() >= range.start())
    }

    /// The lowest mapping overlapping `range`, if any (two lookups, however many overlap).
    pub fn first_overlapping(&self, range: IovaRange) -> Option<&Dma> {
        let below = self
            .map
            .range(..range.start())
            .next_back()
            .map(|(_, d)| d)
            .filter(|d| d.last() >= range.start());
        below.or_else(|| {
            self.map
                .range(range.start()..=range.last())
                .next()
                .map(|(_, d)| d)
        })
    }

    /// The IOVAs of the mappings overlapping `range`, lowest first.
    pub fn overlapping(&self, range: IovaRange) -> Vec<u64> {
        let mut keys = Vec::new();
        if let Some((&k, d)) = self.map.range(..range.start()).next_back() {
            if d.last() >= range.start() {
                keys.push(k);
            }
        }
        keys.extend(
            self.map
                .range(range.start()..=range.last())
                .map(|(&k, _)| k),
        );
        keys
    }

    /// The mapping that `range` would split: one holding `range.start()` without starting there,
    /// or (if `check_end`) one holding `range.last()` without ending there. v2 unmaps and dirty
    /// queries refuse to bisect a mapping.
    pub fn bisected(&self, range: IovaRange, check_end: bool) -> Option<&Dma> {
        let at = |iova| self.find_dma(IovaRange::new(iova, iova).expect("start == last"));
        at(range.start())
            .filter(|d| d.iova != range.start())
            .or_else(|| {
                check_end
                    .then(|| at(range.last()))
                    .flatten()
                    .filter(|d| d.last() != range.last())
            })
    }

    /// The mapping that starts at `iova`, to change anything but its IOVA range.
    pub(crate) fn get_mut(&mut self, iova: u64) -> Option<&mut Dma> {
        self.map.get_mut(&iova)
    }

    /// Put back the entry of a mapping with the same IOVA and size, changed otherwise.
    pub(crate) fn replace(&mut self, dma: Dma) {
        let old = self.map.get_mut(&dma.iova).expect("a mapping in the tree");
        debug_assert_eq!(old.size, dma.size, "a mapping is never resized");
        *old = dma;
    }

    /// `vfio_link_dma`: insert a mapping, taking one entry. The caller has checked that an entry
    /// is left and that nothing overlaps.
    pub(crate) fn link_dma(&mut self, dma: Dma) {
        debug_assert!(dma.size > 0, "an empty mapping");
        debug_assert!(self.find_dma(dma.range()).is_none(), "overlapping mappings");
        self.avail = self.avail.checked_sub(1).expect("no DMA entry left");
        self.map.insert(dma.iova, dma);
    }

    /// `vfio_unlink_dma`: remove the mapping that starts at `iova`, giving its entry back.
    pub(crate) fn unlink_dma(&mut self, iova: u64) -> Option<Dma> {
        let dma = self.map.remove(&iova)?;
        self.avail += 1;
        Some(dma)
    }

    /// The tree's invariants, each broken one as a sentence.
    pub fn check(&self) -> Vec<String> {
        let mut v = Vec::new();
        let entries = self.map.len() as u64 + self.avail as u64;
        if entries != self.limit as u64 {
            v.push(format!(
                "{} mappings + {} entries left != limit {}",
                self.map.len(),
                self.avail,
                self.limit
            ));
        }
        let mut prev: Option<&Dma> = None;
        for d in self.map.values() {
            if d.size == 0 {
                v.push(format!("mapping at {:#x} is empty", d.iova));
            } else if let Some(p) = prev.filter(|p| p.last() >= d.iova) {
                v.push(format!(
                    "mappings at {:#x} and {:#x} overlap",
                    p.iova, d.iova
                ));
            }
            prev = Some(d);
        }
        v
    }
}

impl Index<u64> for DmaTree {
    type Output = Dma;

    /// The mapping that starts at `iova`; panics if there is none.
    fn index(&self, iova: u64) -> &Dma {
        &self.map[&iova]
    }
}

#[cfg(test)]
mod tests {
    use iommu::{Prot, SZ_2M, SZ_4K};

    use super::*;

    fn dma(iova: u64, size: u64) -> Dma {
        Dma {
            iova,
            vaddr: 0x7000_0000,
            size,
            prot: Prot::READ.union(Prot::WRITE),
            lock_cap: false,
            vaddr_invalid: false,
            has_rsvd: false,
            iommu_mapped: true,
            locked_vm: 0,
        }
    }

    fn r(start: u64, last: u64) -> IovaRange {
        IovaRange::new(start, last).unwrap()
    }

    #[test]
    fn link_and_unlink_keep_the_entry_budget() {
        let mut t = DmaTree::new(3);
        assert_eq!((t.len(), t.avail(), t.limit()), (0, 3, 3));
        t.link_dma(dma(SZ_2M, SZ_4K));
        t.link_dma(dma(0, SZ_4K));
        assert_eq!((t.len(), t.avail()), (2, 1));
        assert_eq!(t.iovas(), vec![0, SZ_2M]);
        assert_eq!(t.check(), Vec::<String>::new());
        assert_eq!(t.unlink_dma(SZ_2M).map(|d| d.size), Some(SZ_4K));
        assert_eq!(t.unlink_dma(SZ_2M), None);
        assert_eq!((t.len(), t.avail()), (1, 2));
        assert_eq!(t.check(), Vec::<String>::new());
    }

    #[test]
    #[should_panic(expected = "no DMA entry left")]
    fn link_without_an_entry_left_panics() {
        let mut t = DmaTree::new(0);
        t.link_dma(dma(0, SZ_4K));
    }

    #[test]
    fn find_dma_takes_an_inclusive_last() {
        let mut t = DmaTree::new(8);
        t.link_dma(dma(0x1000, 0x2000)); // [0x1000, 0x2fff]
        t.link_dma(dma(0x5000, 0x1000)); // [0x5000, 0x5fff]
        assert_eq!(t.find_dma(r(0, 0xfff)), None);
        assert_eq!(t.find_dma(r(0, 0x1000)).map(|d| d.iova), Some(0x1000));
        assert_eq!(t.find_dma(r(0x2fff, 0x2fff)).map(|d| d.iova), Some(0x1000));
        assert_eq!(t.find_dma(r(0x3000, 0x4fff)), None);
        // Two overlap: the one with the highest IOVA.
        assert_eq!(t.find_dma(r(0x2000, 0x5000)).map(|d| d.iova), Some(0x5000));
        assert_eq!(t.find_dma(IovaRange::FULL).map(|d| d.iova), Some(0x5000));
    }

    #[test]
    fn the_top_page_of_the_space_is_an_ordinary_entry() {
        let mut t = DmaTree::new(2);
        let top = u64::MAX - (SZ_4K - 1);
        t.link_dma(dma(top, SZ_4K));
        assert_eq!(t[top].last(), u64::MAX);
        assert_eq!(t.find_dma(r(u64::MAX, u64::MAX)).map(|d| d.iova), Some(top));
        assert_eq!(t.overlapping(IovaRange::FULL), vec![top]);
    }

    #[test]
    fn overlapping_lists_every_mapping_touched_lowest_first() {
        let mut t = DmaTree::new(8);
        for iova in [0x1000, 0x3000, 0x5000] {
            t.link_dma(dma(iova, 0x2000));
        }
        assert_eq!(t.overlapping(r(0x2fff, 0x3000)), vec![0x1000, 0x3000]);
        assert_eq!(
            t.overlapping(r(0x2000, 0x6fff)),
            vec![0x1000, 0x3000, 0x5000]
        );
        assert_eq!(t.overlapping(r(0x7000, 0x8000)), Vec::<u64>::new());
        assert_eq!(t.overlapping(r(0, 0xfff)), Vec::<u64>::new());
    }

    #[test]
    fn check_reports_a_broken_budget_and_overlaps() {
        let mut t = DmaTree::new(4);
        t.link_dma(dma(0x1000, 0x2000));
        t.map.insert(0x2000, dma(0x2000, 0x1000));
        t.avail = 1;
        assert_eq!(
            t.check(),
            vec![
                "2 mappings + 1 entries left != limit 4".to_string(),
                "mappings at 0x1000 and 0x2000 overlap".to_string(),
            ]
        );
    }
}
