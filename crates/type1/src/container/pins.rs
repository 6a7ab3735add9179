//! External pins: how modern type1 serves a device that pins guest pages itself (an mdev-style
//! vendor driver) through `vfio_pin_pages`, `vfio_unpin_pages` and `vfio_dma_rw`, i.e.
//! `vfio_iommu_type1_pin_pages`, `vfio_iommu_type1_unpin_pages` and `vfio_iommu_type1_dma_rw`.
//!
//! Data model: per mapping, `dma->pfn_list`: one `VfioPfn` per externally pinned IOVA with the
//! pfn it pinned and a reference count (a second pin of the same IOVA only counts). The pinning
//! device is the device of an attached group; every attached group's device is registered for
//! unmap notifications (`iommu->device_list`), so a domain is always present when a device pins
//! and external pins are never charged (`do_accounting = list_empty(&iommu->domain_list)`): the
//! mapping charged those pages already. A group whose device pinned once is pin-scoped
//! (`pinned_page_dirty_scope`); once every attached group is, dirty reports hold only the pages
//! pinned or written through `dma_rw` (`dma->bitmap`), not every mapped page.
//!
//! Invariants owned here: each `VfioPfn` lies inside its mapping and, while a domain translates
//! the mapping, its pfn is the one the IOMMU translates its IOVA to; the page source holds one pin
//! per non-reserved `VfioPfn` (whatever its reference count) on top of the mappings' pins; a
//! mapping with external pins is removed by UNMAP_DMA only after its devices were notified and
//! unpinned (`UnmapNotice`); a failed pin call leaves no pin of its own behind.

use std::collections::{BTreeMap, BTreeSet};

use iommu::{IovaRange, Prot};

use super::Container;
use crate::error::{Errno, Error};
use crate::mm::{Batch, MmError, PageSource, PinMode, Pinned};
use crate::{PAGE_SHIFT, PAGE_SIZE};

/// `VFIO_PIN_PAGES_MAX_ENTRIES`: the most pages one `vfio_pin_pages` call may pin.
pub const VFIO_PIN_PAGES_MAX_ENTRIES: u64 = PAGE_SIZE / 8;

/// One externally pinned page (`struct vfio_pfn`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VfioPfn {
    /// The IOVA pinned.
    pub iova: u64,
    /// The pfn behind it.
    pub pfn: u64,
    /// Pins of this IOVA not yet unpinned.
    pub ref_count: u32,
    /// A reserved pfn (device memory): never pinned in the page source.
    pub reserved: bool,
}

/// The notification UNMAP_DMA sent before removing a mapping with external pins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnmapNotice {
    /// The mapping's first IOVA (`nb_unmap.iova`).
    pub iova: u64,
    /// The mapping's size (`nb_unmap.size`).
    pub size: u64,
    /// The devices notified (the groups' names): every registered device.
    pub devices: Vec<String>,
    /// Pins the devices dropped in response (references, all of them).
    pub unpinned: u64,
}

/// The external pins of a container and what they change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExternalPins {
    /// By mapping (its IOVA), then by pinned IOVA.
    pfn_list: BTreeMap<u64, BTreeMap<u64, VfioPfn>>,
    /// Groups whose device has pinned (`pinned_page_dirty_scope`).
    scoped: BTreeSet<String>,
    /// Per mapping, the pages (in IOMMU pages from its IOVA) dirtied while tracking
    /// (`dma->bitmap`): pinned, or written through `dma_rw`.
    bitmap: BTreeMap<u64, BTreeSet<u64>>,
    /// Notifications not yet taken.
    notices: Vec<UnmapNotice>,
}

impl ExternalPins {
    /// Every pinned page, lowest IOVA first.
    pub fn iter(&self) -> impl Iterator<Item = &VfioPfn> {
        self.pfn_list.values().flat_map(|m| m.values())
    }
    /// The bits below `nbits` of the dirty bitmap of the mapping at `key` (its externally
    /// pinned pages and what `dma_rw` wrote while tracking), for `update_user_bitmap`.
    pub(super) fn dirty_bits(&self, key: u64) -> Option<&BTreeSet<u64>> {
        self.bitmap.get(&key)
    }
    /// Whether the group `name`'s device has pinned.
    pub fn is_scoped(&self, name: &str) -> bool {
        self.scoped.contains(name)
    }
}

fn refused(errno: Errno, why: String) -> Error {
    Error::Pin { errno, why }
}

impl<M: PageSource> Container<M> {
    /// The external pins.
    pub fn external_pins(&self) -> &ExternalPins {
        &self.ext
    }

    /// The unmap notifications sent since the last call.
    pub fn take_unmap_notices(&mut self) -> Vec<UnmapNotice> {
        std::mem::take(&mut self.ext.notices)
    }

    /// `vfio_pin_pages` of the device of group `group`: `vfio_device_container_pin_pages`, then
    /// `vfio_iommu_type1_pin_pages` for `npage` pages from `iova`, for device reads and writes.
    /// Returns the pages pinned (`npage`).
    pub fn pin_pages(&mut self, group: &str, iova: u64, npage: u64) -> Result<u64, Error> {
        if self.cfg.kernel.is_3_11() {
            return Err(no_external("vfio_pin_pages"));
        }
        if npage == 0 {
            return Err(refused(Errno::EINVAL, "vfio_pin_pages: npage is 0".into()));
        }
        if npage > VFIO_PIN_PAGES_MAX_ENTRIES {
            return Err(refused(
                Errno::E2BIG,
                format!(
                    "vfio_pin_pages: {npage} pages is more than VFIO_PIN_PAGES_MAX_ENTRIES \
                     ({VFIO_PIN_PAGES_MAX_ENTRIES}) in one call"
                ),
            ));
        }
        if !self.cfg.v2 {
            return Err(refused(
                Errno::EACCES,
                "vfio_iommu_type1_pin_pages: supported for type1v2 containers only".into(),
            ));
        }
        if self.vaddr_invalid_count > 0 {
            self.warnings
                .push("WARN_ONCE: vfio_pin_pages not allowed with VFIO_UPDATE_VADDR".into());
            return Err(refused(
                Errno::EBUSY,
                "vfio_iommu_type1_pin_pages: a mapping's vaddr is invalidated".into(),
            ));
        }
        if !self.domains.iter().any(|d| d.name == group) {
            return Err(refused(
                Errno::EINVAL,
                format!(
                    "vfio_iommu_type1_pin_pages: no device of group {group:?} is registered for \
                     unmap notifications (device_list)"
                ),
            ));
        }
        let prot = Prot::RW;
        let mut done = Vec::new();
        let mut res = Ok(());
        for i in 0..npage {
            let Some(at) = iova.checked_add(i << PAGE_SHIFT) else {
                res = Err(refused(
                    Errno::EINVAL,
                    format!("vfio_iommu_type1_pin_pages: page {i} from {iova:#x} passes 2^64"),
                ));
                break;
            };
            if let Err(e) = self.pin_one_external(at, prot) {
                res = Err(e);
                break;
            }
            done.push(at);
        }
        if let Err(e) = res {
            // pin_unwind.
            for at in done {
                self.vfio_unpin_page_external(at);
            }
            self.mm.flush();
            return Err(e);
        }
        self.ext.scoped.insert(group.to_string());
        self.mm.flush();
        Ok(npage)
    }

    /// One page of `vfio_iommu_type1_pin_pages`.
    fn pin_one_external(&mut self, iova: u64, prot: Prot) -> Result<(), Error> {
        let page = IovaRange::from_start_size(iova, PAGE_SIZE)
            .unwrap_or(IovaRange::new(iova, iova).expect("one byte"));
        let Some(dma) = self.dmas.find_dma(page).cloned() else {
            return Err(refused(
                Errno::EINVAL,
                format!("vfio_iommu_type1_pin_pages: no mapping holds iova {iova:#x}"),
            ));
        };
        if !dma.prot.contains(prot) {
            return Err(refused(
                Errno::EPERM,
                format!(
                    "vfio_iommu_type1_pin_pages: the mapping at {:#x} does not allow device reads \
                     and writes",
                    dma.iova
                ),
            ));
        }
        let list = self.ext.pfn_list.entry(dma.iova).or_default();
        if let Some(v) = list.get_mut(&iova) {
            // `vfio_iova_get_vfio_pfn`: a reference more.
            v.ref_count += 1;
            return Ok(());
        }
        let off = iova.wrapping_sub(dma.iova);
        let vaddr = dma.vaddr.wrapping_add(off) & !(PAGE_SIZE - 1);
        let (pfn, reserved) = self.vfio_pin_page_external(vaddr, dma.prot)?;
        self.ext.pfn_list.entry(dma.iova).or_default().insert(
            iova,
            VfioPfn {
                iova,
                pfn,
                ref_count: 1,
                reserved,
            },
        );
        if self.dirty_tracking {
            let shift = self.pgsize_bitmap.trailing_zeros();
            self.ext
                .bitmap
                .entry(dma.iova)
                .or_default()
                .insert(off >> shift);
        }
        Ok(())
    }

    /// `vfio_pin_page_external`: `vaddr_get_pfns` for one page (never charged here: a domain is
    /// always present, see the module doc).
    fn vfio_pin_page_external(&mut self, vaddr: u64, prot: Prot) -> Result<(u64, bool), Error> {
        let mut batch = Batch::new(PinMode::PerPage, 1);
        self.stats.pin_calls += 1;
        match self
            .mm
            .pin(vaddr, 1, prot.contains(Prot::WRITE), &mut batch)?
        {
            Pinned::Pfnmap { pfn, .. } => {
                if self.mm.is_reserved(pfn) {
                    Ok((pfn, true))
                } else {
                    Err(Error::Fault(MmError::NotMapped { vaddr }))
                }
            }
            Pinned::Pages => match batch.current() {
                Some((pfn, reserved)) => Ok((pfn, reserved)),
                None => Err(Error::Fault(MmError::NotMapped { vaddr })),
            },
        }
    }

    /// `vfio_unpin_page_external`: drop one reference of the pin at `iova`; the last one unpins.
    /// Returns whether a pin was found.
    fn vfio_unpin_page_external(&mut self, iova: u64) -> bool {
        let page = IovaRange::new(iova, iova).expect("one byte");
        let Some(key) = self.dmas.find_dma(page).map(|d| d.iova) else {
            return false;
        };
        let Some(list) = self.ext.pfn_list.get_mut(&key) else {
            return false;
        };
        let Some(v) = list.get_mut(&iova) else {
            return false;
        };
        v.ref_count -= 1;
        if v.ref_count == 0 {
            let v = list.remove(&iova).expect("found above");
            if list.is_empty() {
                self.ext.pfn_list.remove(&key);
            }
            if !v.reserved {
                let dirty = self
                    .dmas
                    .get(key)
                    .is_some_and(|d| d.prot.contains(Prot::WRITE));
                self.mm.unpin(v.pfn, 1, dirty, false);
            }
        }
        true
    }

    /// `vfio_unpin_pages` of a device: `npage` pages from `iova`. The kernel returns nothing; each
    /// `WARN_ON` it reaches (a count out of range, a page not pinned) is a named warning.
    /// Returns the references dropped.
    pub fn unpin_pages(&mut self, iova: u64, npage: u64) -> Result<u64, Error> {
        if self.cfg.kernel.is_3_11() {
            return Err(no_external("vfio_unpin_pages"));
        }
        if npage == 0 || npage > VFIO_PIN_PAGES_MAX_ENTRIES {
            self.warnings.push(format!(
                "WARN_ON(npage <= 0 || npage > VFIO_PIN_PAGES_MAX_ENTRIES) in \
                 vfio_device_container_unpin_pages: npage {npage}; nothing unpinned"
            ));
            return Ok(0);
        }
        if !self.cfg.v2 {
            self.warnings.push(
                "WARN_ON(!iommu->v2) in vfio_iommu_type1_unpin_pages: nothing unpinned".into(),
            );
            return Ok(0);
        }
        let mut dropped = 0;
        for i in 0..npage {
            let Some(at) = iova.checked_add(i << PAGE_SHIFT) else {
                break;
            };
            let page = IovaRange::new(at, at).expect("one byte");
            if self.dmas.find_dma(page).is_none() {
                break;
            }
            if self.vfio_unpin_page_external(at) {
                dropped += 1;
            } else {
                self.warnings.push(format!(
                    "WARN_ON_ONCE(!vpfn) in vfio_unpin_page_external: iova {at:#x} is not pinned"
                ));
            }
        }
        self.mm.flush();
        Ok(dropped)
    }

    /// `vfio_dma_rw` of a device: copy `size` bytes to (`write`) or from the process memory
    /// behind `[iova, +size)`, mapping by mapping (`vfio_iommu_type1_dma_rw_chunk`). Writes while
    /// dirty tracking mark the pages dirty.
    pub fn dma_rw(&mut self, iova: u64, size: u64, write: bool) -> Result<(), Error> {
        if self.cfg.kernel.is_3_11() {
            return Err(no_external("vfio_dma_rw"));
        }
        if size == 0 {
            return Err(refused(Errno::EINVAL, "vfio_dma_rw: len is 0".into()));
        }
        if self.vaddr_invalid_count > 0 {
            self.warnings
                .push("WARN_ONCE: vfio_dma_rw not allowed with VFIO_UPDATE_VADDR".into());
            return Err(refused(
                Errno::EBUSY,
                "vfio_iommu_type1_dma_rw: a mapping's vaddr is invalidated".into(),
            ));
        }
        let (mut at, mut count) = (iova, size);
        while count > 0 {
            let one = IovaRange::new(at, at).expect("one byte");
            let Some(dma) = self.dmas.find_dma(one).cloned() else {
                return Err(refused(
                    Errno::EINVAL,
                    format!("vfio_iommu_type1_dma_rw: no mapping holds iova {at:#x}"),
                ));
            };
            if (write && !dma.prot.contains(Prot::WRITE)) || !dma.prot.contains(Prot::READ) {
                return Err(refused(
                    Errno::EPERM,
                    format!(
                        "vfio_iommu_type1_dma_rw: the mapping at {:#x} does not allow device {}",
                        dma.iova,
                        if write { "writes" } else { "reads" }
                    ),
                ));
            }
            let offset = at - dma.iova;
            let n = count.min(dma.size - offset);
            let vaddr = dma.vaddr.wrapping_add(offset);
            if !self.user_copy_ok(vaddr, n, write) {
                return Err(refused(
                    Errno::EFAULT,
                    format!(
                        "vfio_iommu_type1_dma_rw: copy_{}_user at vaddr {vaddr:#x} faulted (the \
                         memory behind the mapping is gone)",
                        if write { "to" } else { "from" }
                    ),
                ));
            }
            if write && self.dirty_tracking {
                let shift = self.pgsize_bitmap.trailing_zeros();
                let bits = self.ext.bitmap.entry(dma.iova).or_default();
                bits.extend((offset >> shift)..=((offset + (n - 1)) >> shift));
            }
            count -= n;
            match at.checked_add(n) {
                Some(next) => at = next,
                None => break,
            }
        }
        Ok(())
    }

    /// Whether a user copy of `[vaddr, +len)` succeeds: every page can be faulted in (tried as
    /// GUP would, and released again).
    fn user_copy_ok(&mut self, vaddr: u64, len: u64, write: bool) -> bool {
        let first = vaddr & !(PAGE_SIZE - 1);
        let Some(last) = vaddr.checked_add(len - 1) else {
            return false;
        };
        let mut page = first;
        let mut batch = Batch::new(PinMode::PerPage, Batch::MAX_CAPACITY);
        let ok = loop {
            let left = ((last - page) >> PAGE_SHIFT) + 1;
            batch.clear();
            match self.mm.pin(page, left, write, &mut batch) {
                Err(_) => break false,
                Ok(Pinned::Pfnmap { .. }) => break false,
                Ok(Pinned::Pages) => {}
            }
            let mut got = 0;
            for r in batch.runs().to_vec() {
                if !r.reserved {
                    self.mm.unpin(r.pfn, r.npages, false, false);
                }
                got += r.npages;
            }
            if got == 0 {
                break false;
            }
            match page.checked_add(got << PAGE_SHIFT) {
                Some(p) if p <= last => page = p,
                _ => break true,
            }
        };
        self.mm.flush();
        ok
    }

    /// The unmap notification of `vfio_dma_do_unmap` for the mapping at `key` if it holds
    /// external pins: every registered device is told, and the devices unpin all they pinned in
    /// it (vendor drivers must).
    pub(super) fn vfio_notify_dma_unmap(&mut self, key: u64) {
        let Some(list) = self.ext.pfn_list.remove(&key) else {
            return;
        };
        let dma = &self.dmas[key];
        let (iova, size) = (dma.iova, dma.size);
        let dirty = dma.prot.contains(Prot::WRITE);
        let mut unpinned = 0u64;
        for v in list.values() {
            unpinned += u64::from(v.ref_count);
            if !v.reserved {
                self.mm.unpin(v.pfn, 1, dirty, false);
            }
        }
        let devices = self.domains.iter().rev().map(|d| d.name.clone()).collect();
        self.ext.notices.push(UnmapNotice {
            iova,
            size,
            devices,
            unpinned,
        });
    }

    /// A mapping leaves without an UNMAP_DMA (detach of the last group, container release): its
    /// external pins are dropped with it (the kernel warns and leaks them).
    pub(super) fn drop_external_pins(&mut self, key: u64) {
        self.ext.bitmap.remove(&key);
        let Some(list) = self.ext.pfn_list.remove(&key) else {
            return;
        };
        self.warnings.push(format!(
            "WARN_ON(!RB_EMPTY_ROOT(&dma->pfn_list)) in vfio_remove_dma: the mapping at {key:#x} \
             still had {} externally pinned page(s); dropped with it",
            list.len()
        ));
        for v in list.values() {
            if !v.reserved {
                self.mm.unpin(v.pfn, 1, false, false);
            }
        }
    }

    /// A group left: its device no longer pins, nor makes reports pin-scoped.
    pub(super) fn external_group_detached(&mut self, name: &str) {
        self.ext.scoped.remove(name);
    }

    /// Dirty tracking starts: each mapping's bitmap holds its pinned pages
    /// (`vfio_dma_bitmap_alloc_all`, `vfio_dma_populate_bitmap`).
    pub(super) fn external_dirty_start(&mut self) {
        if self.dirty_tracking {
            return;
        }
        self.ext.bitmap.clear();
        for key in self.ext.pfn_list.keys().copied().collect::<Vec<_>>() {
            self.populate_bitmap(key);
        }
    }

    /// Dirty tracking stops: the bitmaps are freed.
    pub(super) fn external_dirty_stop(&mut self) {
        self.ext.bitmap.clear();
    }

    fn populate_bitmap(&mut self, key: u64) {
        let shift = self.pgsize_bitmap.trailing_zeros();
        let bits: BTreeSet<u64> = self
            .ext
            .pfn_list
            .get(&key)
            .into_iter()
            .flat_map(|l| l.keys().map(move |&i| (i - key) >> shift))
            .collect();
        if bits.is_empty() {
            self.ext.bitmap.remove(&key);
        } else {
            self.ext.bitmap.insert(key, bits);
        }
    }

    /// Whether reports are pin-scoped: every attached group's device has pinned
    /// (`num_non_pinned_groups == 0`).
    pub(super) fn dirty_pin_scoped(&self) -> bool {
        !self.domains.is_empty() && self.domains.iter().all(|d| self.ext.is_scoped(&d.name))
    }

    /// After a report: the bitmap holds the pinned pages again (`bitmap_clear` +
    /// `vfio_dma_populate_bitmap`).
    pub(super) fn external_dirty_repopulate(&mut self, key: u64) {
        self.populate_bitmap(key);
    }

    /// After an unmap's report: the mapping and its bitmap are gone.
    pub(super) fn external_dirty_forget(&mut self, key: u64) {
        self.ext.bitmap.remove(&key);
    }

    /// Invariant checks of the external pins, each broken one as a sentence; and the pins they
    /// hold, as `(pfn, pages)`, for the pin-count check.
    pub(super) fn check_external(&self) -> (Vec<String>, Vec<(u64, u64)>) {
        let mut v = Vec::new();
        let mut pins = Vec::new();
        for (&key, list) in &self.ext.pfn_list {
            let Some(d) = self.dmas.get(key) else {
                v.push(format!(
                    "external pins recorded for a mapping at {key:#x} that is gone"
                ));
                continue;
            };
            for p in list.values() {
                if p.iova < d.iova || p.iova > d.last() {
                    v.push(format!(
                        "external pin at iova {:#x} lies outside its mapping [{:#x}, +{:#x})",
                        p.iova, d.iova, d.size
                    ));
                }
                if let Some(first) = self.domains.first() {
                    let want = first.domain.iova_to_phys(p.iova & !(PAGE_SIZE - 1));
                    if want.map(|pa| pa >> PAGE_SHIFT) != Some(p.pfn) {
                        v.push(format!(
                            "external pin at iova {:#x} holds pfn {:#x} but the IOMMU translates \
                             it to {want:?}",
                            p.iova, p.pfn
                        ));
                    }
                }
                if !p.reserved {
                    pins.push((p.pfn, 1));
                }
            }
        }
        (v, pins)
    }
}

/// A device pin interface the 3.11 driver did not have.
fn no_external(what: &str) -> Error {
    Error::V3_11 {
        errno: Errno::ENOTTY,
        why: format!(
            "{what}: 3.11 had no external pin interface (vfio_pin_pages came with mdev in 4.10)"
        ),
    }
}
