//! The `mock` format: leaves in a sorted map, any page-size bitmap. It has no table pages.

use std::collections::BTreeMap;

use crate::{Error, FaultInjector, IovaRange, Leaf, LeafRun, Mapped, PageTable, Prot, Pte};

#[derive(Debug)]
pub(crate) struct MockTable {
    /// iova → (paddr, size, prot)
    leaves: BTreeMap<u64, (u64, u64, Prot)>,
    counts: [u64; 64],
}

impl MockTable {
    pub(crate) fn new(_pgsize_bitmap: u64) -> Self {
        MockTable {
            leaves: BTreeMap::new(),
            counts: [0; 64],
        }
    }

    fn covering(&self, iova: u64) -> Option<(u64, (u64, u64, Prot))> {
        let (&start, &v) = self.leaves.range(..=iova).next_back()?;
        (iova - start < v.1).then_some((start, v))
    }
}

impl PageTable for MockTable {
    fn map_pages(&mut self, run: LeafRun, _faults: Option<&FaultInjector>) -> Mapped {
        let mut done = 0;
        for i in 0..run.count {
            let at = run.iova + i * run.pgsize;
            let last = at + (run.pgsize - 1);
            let clash =
                self.covering(at).is_some() || self.leaves.range(at..=last).next().is_some();
            if clash {
                return (done, Err(Error::Exists { iova: at }));
            }
            let paddr = run.paddr + i * run.pgsize;
            self.leaves
                .insert(at, (paddr, run.pgsize, run.prot.rw_bits()));
            self.counts[run.pgsize.trailing_zeros() as usize] += 1;
            done += run.pgsize;
        }
        (done, Ok(()))
    }

    fn unmap_range(&mut self, range: IovaRange) -> u64 {
        let mut starts: Vec<u64> = Vec::new();
        if let Some((s, _)) = self.covering(range.start()) {
            starts.push(s);
        }
        let inside = self.leaves.range(range.start()..=range.last());
        starts.extend(inside.map(|(&s, _)| s));
        starts.dedup();
        let mut removed = 0;
        for s in starts {
            if let Some((_, size, _)) = self.leaves.remove(&s) {
                self.counts[size.trailing_zeros() as usize] -= 1;
                removed += size;
            }
        }
        removed
    }

    fn translate(&self, iova: u64) -> Option<Leaf> {
        self.covering(iova).map(|(s, (paddr, size, prot))| Leaf {
            iova: s,
            paddr,
            size,
            prot,
        })
    }

    fn leaf_pte(&self, iova: u64) -> Option<Pte> {
        self.covering(iova).map(|(_, (paddr, _, prot))| Pte {
            level: 0,
            raw: paddr | prot.0 as u64,
        })
    }

    fn for_each_leaf(&self, f: &mut dyn FnMut(Leaf)) {
        for (&s, &(paddr, size, prot)) in &self.leaves {
            f(Leaf {
                iova: s,
                paddr,
                size,
                prot,
            });
        }
    }

    fn table_pages(&self) -> u64 {
        0
    }

    fn leaf_counts(&self) -> &[u64; 64] {
        &self.counts
    }
}
