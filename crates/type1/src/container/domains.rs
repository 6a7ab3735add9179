//! Attach and detach (spec §2, §3.6): the domain list, the valid IOVA ranges (apertures minus
//! reserved regions) and the common IOMMU page sizes.
//!
//! Invariants owned here: the IOVA list is the intersection of every aperture minus every group's
//! reserved regions, and every mapping lies inside it; the page-size bitmap is the intersection of
//! the domains' (clamped to PAGE_SIZE); an attach that fails changes nothing; a new domain
//! translates every existing mapping before it joins the list.

use iommu::{Domain, IovaRange, Prot};

use super::{AttachedDomain, Container, PAGE_MASK};
use crate::error::Error;
use crate::mm::PageSource;
use crate::PAGE_SIZE;

impl<M: PageSource> Container<M> {
    /// Whether `range` lies inside one valid IOVA range (any range, before the first domain).
    pub(super) fn iova_valid(&self, range: IovaRange) -> bool {
        // The list is sorted and disjoint: the one range that can cover `range` is the first
        // that ends at or after its start.
        let i = self.iova_list.partition_point(|r| r.last() < range.start());
        self.iova_list.is_empty() || self.iova_list.get(i).is_some_and(|r| r.covers(range))
    }

    /// The valid IOVA ranges of `domains` after a detach: every aperture, minus every reserved
    /// region. With no domain left it is the whole space, not an empty list: the kernel's
    /// `vfio_iommu_aper_expand` widens the list to `[0, ~0]` and `vfio_iommu_resv_refresh`
    /// rebuilds it as that one range (an empty list is only a container never attached).
    fn build_iova_list(domains: &[AttachedDomain]) -> Vec<IovaRange> {
        if domains.is_empty() {
            return vec![IovaRange::FULL];
        }
        domains.iter().fold(vec![IovaRange::FULL], |list, d| {
            clip_iova_list(&list, aperture(&d.domain), &d.reserved)
        })
    }

    fn update_pgsize_bitmap(&mut self) {
        let mut bitmap = if self.domains.is_empty() {
            PAGE_MASK
        } else {
            u64::MAX
        };
        for d in &self.domains {
            bitmap &= d.domain.pgsize_bitmap();
        }
        if bitmap & !PAGE_MASK != 0 {
            bitmap &= PAGE_MASK;
            bitmap |= PAGE_SIZE;
        }
        self.pgsize_bitmap = bitmap;
    }

    /// Attach a group with a new IOMMU domain named `name`; `reserved` are the group's reserved
    /// IOVA regions (inclusive). Existing mappings are replayed into it (§3.6).
    pub fn attach(
        &mut self,
        name: &str,
        mut domain: Domain,
        reserved: Vec<(u64, u64)>,
    ) -> Result<(), Error> {
        let fail = |why: String| Error::Attach {
            name: name.to_string(),
            why,
        };
        if self.domains.iter().any(|d| d.name == name) {
            return Err(fail("a group of that name is attached already".into()));
        }
        if self.vaddr_invalid_count > 0 {
            return Err(Error::VaddrBusy);
        }
        if self.cfg.kernel.is_3_11() {
            self.attach_3_11(&domain)?;
        }
        let ap = aperture(&domain);
        let (ap_s, ap_e) = ap.pair();
        if let (Some(first), Some(last)) = (self.iova_list.first(), self.iova_list.last()) {
            if ap_s > last.last() || ap_e < first.start() {
                return Err(fail(format!(
                    "aperture [{ap_s:#x}, {ap_e:#x}] is disjoint from the valid IOVA ranges"
                )));
            }
            if let Some(d) = self.dmas.iter().find(|d| !ap.covers(d.range())) {
                return Err(fail(format!(
                    "aperture [{ap_s:#x}, {ap_e:#x}] would exclude the mapping at {:#x}",
                    d.iova
                )));
            }
        }
        let mut ranges = Vec::with_capacity(reserved.len());
        for (rs, re) in reserved {
            let rsv = IovaRange::new(rs, re).ok_or_else(|| {
                fail(format!(
                    "reserved region [{rs:#x}, {re:#x}] ends before it starts"
                ))
            })?;
            if let Some(d) = self.dmas.first_overlapping(rsv) {
                return Err(fail(format!(
                    "reserved region [{rs:#x}, {re:#x}] overlaps the mapping at {:#x}",
                    d.iova
                )));
            }
            ranges.push(rsv);
        }
        let common = self
            .domains
            .iter()
            .fold(domain.pgsize_bitmap(), |b, d| b & d.domain.pgsize_bitmap());
        if common == 0 {
            return Err(fail(
                "no IOMMU page size in common with the attached domains".into(),
            ));
        }
        domain.set_faults(Some(self.faults.clone()));
        let new = AttachedDomain {
            name: name.to_string(),
            domain,
            reserved: ranges,
        };
        // The valid ranges: the current list (or, for the first domain, the whole space) clipped
        // to the new aperture, minus the new group's reserved regions.
        let list = if self.domains.is_empty() {
            clip_iova_list(&[IovaRange::FULL], ap, &new.reserved)
        } else {
            clip_iova_list(&self.iova_list, ap, &new.reserved)
        };
        if list.is_empty() {
            return Err(fail(
                "no IOVA range is left after the aperture and reserved regions".into(),
            ));
        }
        if self.domains.is_empty() {
            self.replay_first(new)?;
        } else {
            let new = self.replay_into(new)?;
            self.domains.insert(0, new);
        }
        self.iova_list = list;
        self.update_pgsize_bitmap();
        Ok(())
    }

    /// Replay into an additional domain: map what the first domain translates, run by run, with
    /// no new pins and no accounting.
    fn replay_into(&mut self, mut new: AttachedDomain) -> Result<AttachedDomain, Error> {
        let first = &self.domains[0].domain;
        for d in self.dmas.iter() {
            let mut pos = 0;
            while pos < d.size {
                let iova = d.iova + pos;
                let Some((phys, len)) = first.phys_run(iova, d.size - pos) else {
                    pos += PAGE_SIZE;
                    continue;
                };
                // On failure the new domain is dropped whole: nothing else was touched.
                new.domain.map(iova, phys, len, d.prot.union(Prot::CACHE))?;
                pos += len;
            }
        }
        Ok(new)
    }

    /// The first domain: pin and map every mapping recorded while there was none.
    fn replay_first(&mut self, new: AttachedDomain) -> Result<(), Error> {
        self.domains.insert(0, new);
        let keys = self.dmas.iovas();
        for (i, key) in keys.iter().enumerate() {
            let mut work = self.dmas[*key].clone();
            let full = work.size;
            work.size = 0;
            if let Err(e) = self.pin_map_dma(&mut work, full) {
                for k in &keys[..i] {
                    let mut d = self.dmas[*k].clone();
                    self.unmap_unpin(&mut d, true);
                    d.has_rsvd = false;
                    self.dmas.replace(d);
                }
                self.domains.remove(0);
                return Err(e);
            }
            self.dmas.replace(work);
        }
        Ok(())
    }

    /// Detach the group of domain `name`. Detaching the last domain removes every mapping.
    pub fn detach(&mut self, name: &str) -> Result<(), Error> {
        let idx = self
            .domains
            .iter()
            .position(|d| d.name == name)
            .ok_or_else(|| Error::NoSuchDomain(name.to_string()))?;
        if self.domains.len() == 1 {
            self.unmap_unpin_all();
        }
        self.external_group_detached(name);
        self.domains.remove(idx);
        self.iova_list = Self::build_iova_list(&self.domains);
        self.update_pgsize_bitmap();
        Ok(())
    }
}

/// A domain's aperture (`Domain::new` refuses an empty one).
fn aperture(domain: &Domain) -> IovaRange {
    let (start, last) = domain.aperture();
    IovaRange::new(start, last).expect("a domain's aperture is not empty")
}

/// The parts of `list` inside `aperture` and outside every `reserved` region.
fn clip_iova_list(
    list: &[IovaRange],
    aperture: IovaRange,
    reserved: &[IovaRange],
) -> Vec<IovaRange> {
    let out: Vec<IovaRange> = list.iter().filter_map(|r| r.intersect(aperture)).collect();
    subtract_all(&out, reserved)
}

/// Sorted, disjoint ranges minus `rsv`.
#[cfg(test)]
fn subtract(list: &[IovaRange], rsv: IovaRange) -> Vec<IovaRange> {
    subtract_all(list, &[rsv])
}

/// Sorted, disjoint ranges minus every range of `reserved` (any order, overlaps allowed), in
/// one sweep after sorting: O((list + reserved) log reserved), not a pass per reserved range.
fn subtract_all(list: &[IovaRange], reserved: &[IovaRange]) -> Vec<IovaRange> {
    let mut rsv: Vec<(u64, u64)> = reserved.iter().map(|r| r.pair()).collect();
    rsv.sort_unstable();
    // Merge overlapping and touching ranges: sorted by start is then sorted by end too.
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(rsv.len());
    for (s, e) in rsv {
        match merged.last_mut() {
            Some(last) if s <= last.1.saturating_add(1) => last.1 = last.1.max(e),
            _ => merged.push((s, e)),
        }
    }
    let mut out = Vec::with_capacity(list.len());
    let mut k = 0;
    for &r in list {
        let (mut start, last) = r.pair();
        while merged.get(k).is_some_and(|&(_, e)| e < start) {
            k += 1;
        }
        let mut open = true;
        for &(rs, re) in merged[k..].iter().take_while(|&&(rs, _)| rs <= last) {
            if rs > start {
                out.extend(IovaRange::new(start, rs - 1));
            }
            if re >= last {
                open = false;
                break;
            }
            start = start.max(re + 1);
        }
        if open {
            out.extend(IovaRange::new(start, last));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start: u64, last: u64) -> IovaRange {
        IovaRange::new(start, last).unwrap()
    }

    #[test]
    fn the_iova_list_is_the_aperture_minus_reserved_regions() {
        let msi = r(0xfee0_0000, 0xfeef_ffff);
        let ap = r(0, (1 << 39) - 1);
        assert_eq!(
            clip_iova_list(&[IovaRange::FULL], ap, &[msi]),
            vec![r(0, 0xfedf_ffff), r(0xfef0_0000, (1 << 39) - 1)]
        );
        // Reserved regions at either end and outside the aperture.
        assert_eq!(
            clip_iova_list(&[IovaRange::FULL], ap, &[r(0, 0xfff), r(1 << 40, 1 << 41)]),
            vec![r(0x1000, (1 << 39) - 1)]
        );
        assert_eq!(clip_iova_list(&[IovaRange::FULL], ap, &[ap]), vec![]);
        assert_eq!(subtract(&[IovaRange::FULL], IovaRange::FULL), vec![]);
        assert_eq!(
            subtract(&[IovaRange::FULL], r(u64::MAX, u64::MAX)),
            vec![r(0, u64::MAX - 1)]
        );
    }

    #[test]
    fn a_second_aperture_clips_the_list() {
        let list = [r(0, 0xfedf_ffff), r(0xfef0_0000, (1 << 48) - 1)];
        assert_eq!(
            clip_iova_list(&list, r(0xff00_0000, (1 << 39) - 1), &[]),
            vec![r(0xff00_0000, (1 << 39) - 1)]
        );
        assert_eq!(clip_iova_list(&list, r(1 << 50, 1 << 51), &[]), vec![]);
    }
}
