//! Checking: the observable state (`snapshot`) and the invariants of the crate doc, recomputed
//! from scratch (`check_invariants`).
//!
//! Owns no state: every check derives what must hold from the DMA tree, the domains' page
//! tables and the page source, and reports each difference as a sentence.

use iommu::IovaRange;

use super::{Container, Dma, Snapshot};
use crate::mm::pincount::PinCounts;
use crate::mm::{for_each_unreserved, normalize_ranges, PageSource};
use crate::{PAGE_SHIFT, PAGE_SIZE};

impl<M: PageSource> Container<M> {
    /// The whole observable state.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            dmas: self.dmas.iter().cloned().collect(),
            domains: self
                .domains
                .iter()
                .map(|d| {
                    let mut leaves = Vec::new();
                    d.domain.for_each_leaf(&mut |l| leaves.push(l));
                    (d.name.clone(), leaves, d.domain.table_pages())
                })
                .collect(),
            pins: self.mm.pin_ranges(),
            locked: self.account.locked(),
            dma_avail: self.dmas.avail(),
            iova_list: self.iova_list.clone(),
            pgsize_bitmap: self.pgsize_bitmap,
            vaddr_invalid_count: self.vaddr_invalid_count,
            dirty_tracking: self.dirty_tracking,
        }
    }

    /// Check invariants 2–5 (and the bookkeeping behind them). Returns every violation found.
    pub fn check_invariants(&self) -> Result<(), Vec<String>> {
        let mut v: Vec<String> = self.violations.clone();
        v.extend(self.mm.violations());
        v.extend(
            self.account
                .check(self.dmas.iter().map(|d| d.locked_vm).sum()),
        );
        v.extend(self.dmas.check());
        let invalid = self.dmas.iter().filter(|d| d.vaddr_invalid).count() as u32;
        if invalid != self.vaddr_invalid_count {
            v.push(format!(
                "vaddr_invalid_count {} != {invalid} invalid mappings",
                self.vaddr_invalid_count
            ));
        }
        let mut expect_pins = PinCounts::new();
        if let Some(first) = self.domains.first() {
            let reserved = normalize_ranges(self.mm.reserved_pfn_ranges());
            // One walk over the first domain's leaves, in IOVA order, beside the mappings in
            // IOVA order: linear in leaves + mappings, and no leaf is kept.
            let dmas: Vec<&Dma> = self.dmas.iter().collect();
            let mut covered = vec![0u64; dmas.len()];
            let mut charge = vec![0u64; dmas.len()];
            let mut at = 0;
            first.domain.for_each_leaf(&mut |leaf| {
                while dmas.get(at).is_some_and(|d| d.last() < leaf.iova) {
                    at += 1;
                }
                // A leaf outside every mapping is reported by the per-domain walk below.
                match dmas.get(at) {
                    Some(d) if d.iova <= leaf.iova => {}
                    _ => return,
                }
                covered[at] = covered[at].saturating_add(leaf.size);
                // Leaves below the page size (a 2K IOMMU page) share one pinned page: count it
                // at the leaf that starts the page.
                if leaf.size < PAGE_SIZE && leaf.iova % PAGE_SIZE != 0 {
                    return;
                }
                let pfn = leaf.paddr >> PAGE_SHIFT;
                let npages = (leaf.size >> PAGE_SHIFT).max(1);
                for_each_unreserved(pfn, npages, &reserved, |s, n| {
                    expect_pins.add(s, n);
                    charge[at] += n;
                });
            });
            for (i, d) in dmas.iter().enumerate() {
                if !d.iommu_mapped {
                    v.push(format!(
                        "mapping at {:#x} is not mapped into the IOMMU",
                        d.iova
                    ));
                }
                if covered[i] != d.size {
                    v.push(format!(
                        "domain {} covers {:#x} of the mapping [{:#x}, +{:#x})",
                        first.name, covered[i], d.iova, d.size
                    ));
                }
                if charge[i] != d.locked_vm {
                    v.push(format!(
                        "mapping at {:#x} charged {} pages but pins {} non-reserved pages",
                        d.iova, d.locked_vm, charge[i]
                    ));
                }
            }
            for ad in &self.domains {
                let fmt = ad.domain.format();
                let mut total = 0;
                let mut bad = None;
                ad.domain.for_each_leaf(&mut |l| {
                    total += l.size;
                    let owner = self.dmas.find_dma(
                        IovaRange::from_start_size(l.iova, l.size).expect("a leaf is not empty"),
                    );
                    let ok = owner.is_some_and(|d| {
                        l.iova >= d.iova
                            && l.iova + (l.size - 1) <= d.last()
                            && l.prot == fmt.effective_prot(d.prot)
                            && first.domain.iova_to_phys(l.iova) == Some(l.paddr)
                    });
                    if !ok && bad.is_none() {
                        bad = Some(l);
                    }
                });
                if let Some(l) = bad {
                    v.push(format!(
                        "domain {}: leaf {l:?} does not match a mapping or the first domain",
                        ad.name
                    ));
                }
                let want: u64 = self.dmas.iter().map(|d| d.size).sum();
                if total != want {
                    v.push(format!(
                        "domain {} translates {total:#x} bytes, the mappings hold {want:#x}",
                        ad.name
                    ));
                }
            }
        } else {
            for d in self.dmas.iter() {
                if d.iommu_mapped || d.locked_vm != 0 {
                    v.push(format!(
                        "mapping at {:#x} is marked mapped or charged with no domain",
                        d.iova
                    ));
                }
            }
        }
        let (ext_v, ext_pins) = self.check_external();
        v.extend(ext_v);
        for (pfn, n) in ext_pins {
            expect_pins.add(pfn, n);
        }
        if expect_pins.ranges() != self.mm.pin_ranges() {
            v.push(format!(
                "pin counts differ from the translations: {} pages pinned, {} expected",
                self.mm.pinned_pages(),
                expect_pins.total()
            ));
        }
        if v.is_empty() {
            Ok(())
        } else {
            Err(v)
        }
    }
}
