//! Attach and detach (spec §2, §3.6): the domain list, the valid IOVA ranges (apertures minus
//! reserved regions) and the common IOMMU page sizes.
//!
//! Invariants owned here: the IOVA list is the intersection of every aperture minus every group's
//! reserved regions, and every mapping lies inside it; the page-size bitmap is the intersection of
//! the domains' (clamped to PAGE_SIZE); an attach that fails changes nothing; a new domain
//! translates every existing mapping before it joins the list.

use iommu::{Domain, Prot};

use super::{AttachedDomain, Container, PAGE_MASK};
use crate::error::Error;
use crate::mm::PageSource;
use crate::PAGE_SIZE;

impl<M: PageSource> Container<M> {
    pub(super) fn iova_valid(&self, start: u64, last: u64) -> bool {
        self.iova_list.is_empty() || self.iova_list.iter().any(|&(s, e)| s <= start && last <= e)
    }

    fn build_iova_list(domains: &[AttachedDomain]) -> Vec<(u64, u64)> {
        let Some(first) = domains.first() else {
            return Vec::new();
        };
        let (mut s, mut e) = first.domain.aperture();
        for d in domains {
            let (ds, de) = d.domain.aperture();
            s = s.max(ds);
            e = e.min(de);
        }
        if s > e {
            return Vec::new();
        }
        let mut list = vec![(s, e)];
        for d in domains {
            for &(rs, re) in &d.reserved {
                list = subtract(&list, rs, re);
            }
        }
        list
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
        let (ap_s, ap_e) = domain.aperture();
        if !self.iova_list.is_empty() {
            let (ls, le) = (
                self.iova_list[0].0,
                self.iova_list[self.iova_list.len() - 1].1,
            );
            if ap_s > le || ap_e < ls {
                return Err(fail(format!(
                    "aperture [{ap_s:#x}, {ap_e:#x}] is disjoint from the valid IOVA ranges"
                )));
            }
            if let Some(d) = self.dmas.iter().find(|d| d.iova < ap_s || d.last() > ap_e) {
                return Err(fail(format!(
                    "aperture [{ap_s:#x}, {ap_e:#x}] would exclude the mapping at {:#x}",
                    d.iova
                )));
            }
        }
        for &(rs, re) in &reserved {
            if let Some(d) = self.dmas.iter().find(|d| d.iova <= re && d.last() >= rs) {
                return Err(fail(format!(
                    "reserved region [{rs:#x}, {re:#x}] overlaps the mapping at {:#x}",
                    d.iova
                )));
            }
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
            reserved,
        };
        // The valid ranges: the current list (or, for the first domain, the aperture) clipped to
        // the new aperture, minus the new group's reserved regions.
        let mut list = if self.domains.is_empty() {
            vec![(ap_s, ap_e)]
        } else {
            self.iova_list
                .iter()
                .filter_map(|&(s, e)| {
                    (s.max(ap_s) <= e.min(ap_e)).then_some((s.max(ap_s), e.min(ap_e)))
                })
                .collect()
        };
        for &(rs, re) in &new.reserved {
            list = subtract(&list, rs, re);
        }
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
        self.domains.remove(idx);
        self.iova_list = Self::build_iova_list(&self.domains);
        self.update_pgsize_bitmap();
        Ok(())
    }
}

/// Inclusive ranges minus `[rs, re]`.
fn subtract(list: &[(u64, u64)], rs: u64, re: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for &(s, e) in list {
        if re < s || rs > e {
            out.push((s, e));
            continue;
        }
        if s < rs {
            out.push((s, rs - 1));
        }
        if re < e {
            out.push((re + 1, e));
        }
    }
    out
}
