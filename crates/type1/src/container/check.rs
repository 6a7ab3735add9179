//! Checking: the observable state (`snapshot`) and the invariants of the crate doc, recomputed
//! from scratch (`check_invariants`).
//!
//! Owns no state: every check derives what must hold from the DMA tree, the domains' page
//! tables and the page source, and reports each difference as a sentence.

use iommu::{Domain, IovaRange, Leaf};

use super::{Container, Snapshot};
use crate::mm::pincount::PinCounts;
use crate::mm::PageSource;
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
            let reserved = self.mm.reserved_pfn_ranges();
            for d in self.dmas.iter() {
                if !d.iommu_mapped {
                    v.push(format!(
                        "mapping at {:#x} is not mapped into the IOMMU",
                        d.iova
                    ));
                }
                let mut covered = 0;
                let mut charge = 0;
                for leaf in leaves_in(&first.domain, d.iova, d.size) {
                    covered += leaf.size;
                    // Leaves below the page size (a 2K IOMMU page) share one pinned page: count
                    // it at the leaf that starts the page.
                    if leaf.size < PAGE_SIZE && leaf.iova % PAGE_SIZE != 0 {
                        continue;
                    }
                    let pfn = leaf.paddr >> PAGE_SHIFT;
                    let npages = (leaf.size >> PAGE_SHIFT).max(1);
                    for (s, n) in unreserved_pieces(pfn, npages, &reserved) {
                        expect_pins.add(s, n);
                        charge += n;
                    }
                }
                if covered != d.size {
                    v.push(format!(
                        "domain {} covers {covered:#x} of the mapping [{:#x}, +{:#x})",
                        first.name, d.iova, d.size
                    ));
                }
                if charge != d.locked_vm {
                    v.push(format!(
                        "mapping at {:#x} charged {} pages but pins {charge} non-reserved pages",
                        d.iova, d.locked_vm
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

/// The leaves of `domain` inside `[iova, +size)`.
fn leaves_in(domain: &Domain, iova: u64, size: u64) -> Vec<Leaf> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < size {
        match domain.translate(iova + pos) {
            Some(l) => {
                pos += l.size - (iova + pos - l.iova);
                out.push(l);
            }
            None => pos += PAGE_SIZE,
        }
    }
    out
}

/// `[pfn, +n)` minus the reserved pfn ranges (`(start, end)`, `end` exclusive), as
/// `(start, pages)` pieces, lowest first.
fn unreserved_pieces(pfn: u64, n: u64, reserved: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let end = pfn + n;
    let mut holes: Vec<(u64, u64)> = reserved
        .iter()
        .map(|&(s, e)| (s.max(pfn), e.min(end)))
        .filter(|&(s, e)| s < e)
        .collect();
    holes.sort_unstable();
    let mut pieces = Vec::new();
    let mut at = pfn;
    for (s, e) in holes {
        if s > at {
            pieces.push((at, s - at));
        }
        at = at.max(e);
    }
    if at < end {
        pieces.push((at, end - at));
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::unreserved_pieces;

    #[test]
    fn unreserved_pieces_skip_every_reserved_range() {
        assert_eq!(unreserved_pieces(0x100, 16, &[]), vec![(0x100, 16)]);
        assert_eq!(
            unreserved_pieces(0x100, 16, &[(0x108, 0x10a), (0x0, 0x102)]),
            vec![(0x102, 6), (0x10a, 6)]
        );
        assert_eq!(unreserved_pieces(0x100, 16, &[(0x0, 0x200)]), vec![]);
        assert_eq!(
            unreserved_pieces(0x100, 16, &[(0x104, 0x108), (0x106, 0x10c), (0x110, 0x120)]),
            vec![(0x100, 4), (0x10c, 4)]
        );
    }
}
