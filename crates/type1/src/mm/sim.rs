//! `mm::sim`: a deterministic model of a process's memory for the engine to pin.
//!
//! Regions (`mmap`) have a backing (4K pages, THP, hugetlb 2M/1G, or `pfnmap` device MMIO) and a
//! physical layout. `Contiguous` places the region in one physically contiguous block aligned to
//! the backing page size *and no more* (a 4K region's base is ≡ 4K mod 2M, a 2M region's ≡ 2M
//! mod 1G), so superpages appear only where the backing makes them. `Scattered` places every
//! backing page at a pseudo-random, naturally aligned frame from a seeded permutation, with no
//! two pages of the region physically adjacent, so every pin run is exactly one backing page.
//! Nothing is stored per page: the physical address of any page is computed, and pin counts are
//! kept as ranges (`PinCounts`), so a TiB-sized address space costs what its pins cost.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use iommu::{FaultInjector, FaultPoint};

use super::pincount::PinCounts;
use super::{
    cut_vmas, for_each_unreserved, in_ranges, vma_at, Backing, Batch, Layout, MemError, Memory,
    MmError, MmapSpec, PageAudit, PageSource, PinMode, PinResult, Pinned, Vma, Vmas,
};
use crate::PAGE_SIZE;
use iommu::{SZ_1G, SZ_2M};

#[derive(Clone, Debug)]
struct Region {
    name: String,
    vaddr: u64,
    size: u64,
    backing: Backing,
    layout: Layout,
    pbase: u64,
    writable: bool,
    /// Placement units (huge pages) the region spans.
    nunits: u64,
    /// The scattered placement's permutation of units (`permute(·, nunits, seed)`), its round
    /// keys computed once.
    perm: Feistel,
    /// Its pages are the shared zero page and that is a reserved pfn (read-only, never written,
    /// kernel 6.1): mapped, never pinned or charged.
    zero_reserved: bool,
}

impl Region {
    /// Physical address of byte `off` of the region, and the pages from it to the end of its
    /// folio.
    fn locate(&self, off: u64) -> (u64, u64) {
        // Every unit and folio size is a power of two: shifts and masks, no divisions.
        let unit = self.backing.unit();
        let (u, within) = (off >> unit.trailing_zeros(), off & (unit - 1));
        let paddr = match self.layout {
            Layout::Contiguous => self.pbase + off,
            Layout::Scattered => self.pbase + 2 * self.perm.apply(u, self.nunits) * unit + within,
        };
        let folio = match self.backing {
            Backing::Page4k | Backing::Pfnmap => PAGE_SIZE,
            // A THP folio needs the whole 2M block inside the region; the tail gets 4K pages.
            Backing::Thp if (u + 1) * unit > self.size => PAGE_SIZE,
            _ => unit,
        };
        let folio_left = (folio - (off & (folio - 1))) / PAGE_SIZE;
        (paddr, folio_left)
    }

    /// Bytes from `off` to where the physical placement may jump (end of a scattered unit).
    fn contiguous_bytes(&self, off: u64) -> u64 {
        match self.layout {
            Layout::Contiguous => self.size - off,
            Layout::Scattered => {
                let unit = self.backing.unit();
                (unit - off % unit).min(self.size - off)
            }
        }
    }
}

/// The simulated process memory.
#[derive(Debug)]
pub struct SimMm {
    regions: Vec<Region>,
    names: HashMap<String, usize>,
    vmas: Vmas,
    pins: PinCounts,
    /// Reserved (MMIO) pfn ranges `[start, end)`, normalized (sorted, disjoint).
    mmio: Vec<(u64, u64)>,
    /// Every region's physical span, `start → (end exclusive, region)`: no two overlap, so no
    /// frame belongs to two regions (`phys=` is checked against it, the allocators skip it).
    phys: BTreeMap<u64, (u64, usize)>,
    next_vaddr: u64,
    next_ram: u64,
    next_mmio: u64,
    faults: Option<Arc<FaultInjector>>,
    violations: Vec<String>,
    /// Kernel 6.1: the zero page behind never-written read-only memory is reserved.
    zero_page_reserved: bool,
    /// Never-written read-only THP memory is pinned as separate 4K pages (6.12, 6.1).
    ro_thp_4k: bool,
}

impl Default for SimMm {
    fn default() -> Self {
        Self::new()
    }
}

/// `value` (`what`: `at` or `phys` of region `name`) if it is aligned to `align`.
fn aligned(name: &str, what: &'static str, value: u64, align: u64) -> Result<u64, MemError> {
    if value.is_multiple_of(align) {
        Ok(value)
    } else {
        Err(MemError::Unaligned {
            name: name.to_string(),
            what,
            value,
            align,
        })
    }
}

fn align_up(x: u64, a: u64) -> Option<u64> {
    x.checked_add(a - 1).map(|v| v & !(a - 1))
}

/// splitmix64's finalizer.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A seeded permutation of `[0, n)`: a 4-round balanced Feistel network over the smallest even
/// bit width that covers `n`, with cycle walking. No table, O(1) expected per call.
pub fn permute(i: u64, n: u64, seed: u64) -> u64 {
    Feistel::new(n, seed).apply(i, n)
}

/// The network of [`permute`] for one `(n, seed)`: the half width and the round keys
/// (`mix(seed + round)`), computed once instead of on every call.
#[derive(Clone, Copy, Debug)]
struct Feistel {
    half: u32,
    mask: u64,
    keys: [u64; 4],
}

impl Feistel {
    fn new(n: u64, seed: u64) -> Self {
        let bits = 64 - n.saturating_sub(1).leading_zeros();
        let half = bits.div_ceil(2);
        Feistel {
            half,
            mask: (1u64 << half) - 1,
            keys: std::array::from_fn(|round| mix(seed.wrapping_add(round as u64))),
        }
    }

    /// The image of `i` in `[0, n)` (`n` as given to `new`).
    #[inline]
    fn apply(&self, i: u64, n: u64) -> u64 {
        if n <= 1 {
            return 0;
        }
        let (half, mask) = (self.half, self.mask);
        let mut x = i;
        loop {
            let (mut l, mut r) = (x >> half, x & mask);
            for k in self.keys {
                let f = mix(r ^ k) & mask;
                let nl = r;
                r = l ^ f;
                l = nl;
            }
            x = (l << half) | r;
            if x < n {
                return x;
            }
        }
    }
}

impl SimMm {
    /// Where regions without `at=` start (user space, below 2^47).
    pub const VADDR_BASE: u64 = 0x7f00_0000_0000;
    /// Where RAM is placed (above the first 4 GiB, so no pfn is 0).
    pub const RAM_BASE: u64 = 0x1_0000_0000;
    /// Where device MMIO is placed (below 2^48, inside every format's output range).
    pub const MMIO_BASE: u64 = 0xe000_0000_0000;
    /// The largest region: 128 TiB (2^47), the user half of a 48-bit virtual address space,
    /// the most one process can map with four-level paging. Placement arithmetic stays far
    /// from 2^64 below it; `mmap` refuses a larger size with [`MemError::TooLarge`].
    pub const MAX_REGION: u64 = 1 << 47;

    /// An empty process.
    pub fn new() -> Self {
        SimMm {
            regions: Vec::new(),
            names: HashMap::new(),
            vmas: BTreeMap::new(),
            pins: PinCounts::new(),
            mmio: Vec::new(),
            phys: BTreeMap::new(),
            next_vaddr: Self::VADDR_BASE,
            next_ram: Self::RAM_BASE,
            next_mmio: Self::MMIO_BASE,
            faults: None,
            violations: Vec::new(),
            zero_page_reserved: false,
            ro_thp_4k: false,
        }
    }

    /// Share a fault injector: every pin becomes injectable.
    pub fn set_faults(&mut self, faults: Option<Arc<FaultInjector>>) {
        self.faults = faults;
    }

    /// The start vaddr of a region by name.
    pub fn region_vaddr(&self, name: &str) -> Option<u64> {
        self.names.get(name).map(|&i| self.regions[i].vaddr)
    }

    /// `(vaddr, size, backing)` of a region by name.
    pub fn region(&self, name: &str) -> Option<(u64, u64, Backing)> {
        self.names.get(name).map(|&i| {
            let r = &self.regions[i];
            (r.vaddr, r.size, r.backing)
        })
    }

    /// The physical address backing `vaddr`, if mapped.
    pub fn vaddr_to_phys(&self, vaddr: u64) -> Option<u64> {
        let (_, vma) = self.vma_at(vaddr)?;
        let r = &self.regions[vma.region];
        Some(r.locate(vaddr - r.vaddr).0)
    }

    /// The folio size (bytes) of the page at `vaddr`, if mapped: the hint a huge page gives.
    pub fn folio_size(&self, vaddr: u64) -> Option<u64> {
        let (_, vma) = self.vma_at(vaddr)?;
        let r = &self.regions[vma.region];
        let off = vaddr - r.vaddr;
        let (_, left) = r.locate(off);
        let unit = r.backing.unit();
        Some(if left * PAGE_SIZE + (off % unit) == unit {
            unit
        } else {
            PAGE_SIZE
        })
    }

    fn vma_at(&self, vaddr: u64) -> Option<(u64, Vma)> {
        vma_at(&self.vmas, vaddr)
    }

    /// The first `align`-aligned vaddr from `next` where `size` bytes meet no mapped memory
    /// (regions placed with `at=` included). Each step passes one vma, so a run of placements
    /// passes each vma at most once.
    fn free_vaddr(&self, mut next: u64, align: u64, size: u64) -> Option<u64> {
        loop {
            let v = align_up(next, align)?;
            let end = v.checked_add(size)?;
            match self.vmas.range(..end).next_back() {
                Some((_, vma)) if vma.end > v => next = vma.end,
                _ => return Some(v),
            }
        }
    }

    /// The region whose physical span meets `[start, end)`: `(its start, its end, index)`.
    fn phys_overlap(&self, start: u64, end: u64) -> Option<(u64, u64, usize)> {
        self.phys
            .range(..end)
            .next_back()
            .filter(|(_, &(e, _))| e > start)
            .map(|(&s, &(e, i))| (s, e, i))
    }

    /// The first physical base `b ≡ offset (mod align)`, `b ≥ next`, where `len` bytes meet no
    /// region's frames (regions placed with `phys=` included).
    fn free_phys(&self, mut next: u64, align: u64, offset: u64, len: u64) -> Option<u64> {
        loop {
            let b = align_up(next, align)?.checked_add(offset)?;
            let end = b.checked_add(len)?;
            match self.phys_overlap(b, end) {
                Some((_, e, _)) => next = e,
                None => return Some(b),
            }
        }
    }

    /// Adds the reserved pfn range `[start, end)`, keeping the list normalized.
    fn add_mmio(&mut self, start: u64, end: u64) {
        let i = self.mmio.partition_point(|&(s, _)| s < start);
        self.mmio.insert(i, (start, end));
        // Regions never share frames, so only touching neighbours merge.
        if i + 1 < self.mmio.len() && self.mmio[i + 1].0 <= self.mmio[i].1 {
            self.mmio[i].1 = self.mmio[i].1.max(self.mmio[i + 1].1);
            self.mmio.remove(i + 1);
        }
        if i > 0 && self.mmio[i].0 <= self.mmio[i - 1].1 {
            self.mmio[i - 1].1 = self.mmio[i - 1].1.max(self.mmio[i].1);
            self.mmio.remove(i);
        }
    }

    /// Create a region; returns its vaddr.
    pub fn mmap(&mut self, spec: &MmapSpec) -> Result<u64, MemError> {
        let name = spec.name.clone();
        if self.names.contains_key(&name) {
            return Err(MemError::Exists(name));
        }
        // Read-only THP never written: 6.12 and 6.1 pin 4K pages that are not physically
        // contiguous (tests/kernel/huge-readonly.trace), placed here as scattered 4K pages.
        let ro_thp_4k = self.ro_thp_4k && !spec.writable && spec.backing == Backing::Thp;
        let (backing, layout) = if ro_thp_4k {
            (Backing::Page4k, Layout::Scattered)
        } else {
            (spec.backing, spec.layout)
        };
        let unit = backing.unit();
        let size_unit = backing.granule();
        if spec.size == 0 || !spec.size.is_multiple_of(size_unit) {
            return Err(MemError::BadSize {
                name,
                size: spec.size,
                unit: size_unit,
                backing,
            });
        }
        if spec.size > Self::MAX_REGION {
            return Err(MemError::TooLarge {
                name,
                size: spec.size,
                max: Self::MAX_REGION,
            });
        }
        if backing == Backing::Pfnmap && layout == Layout::Scattered {
            return Err(MemError::ScatteredPfnmap(name));
        }
        let nunits = spec.size.div_ceil(unit);
        let no_space = || MemError::NoSpace {
            name: spec.name.clone(),
            size: spec.size,
        };
        // Virtual placement.
        let valign = match backing {
            Backing::Pfnmap => spec
                .size
                .checked_next_power_of_two()
                .unwrap_or(SZ_1G)
                .min(SZ_1G),
            _ => unit,
        };
        let vaddr = match spec.at {
            Some(at) => aligned(&name, "at", at, size_unit)?,
            None => self
                .free_vaddr(self.next_vaddr, valign, spec.size)
                .ok_or_else(no_space)?,
        };
        let vend = vaddr.checked_add(spec.size).ok_or_else(no_space)?;
        let overlap = self
            .vmas
            .range(..vend)
            .next_back()
            .is_some_and(|(_, v)| v.end > vaddr);
        if overlap {
            return Err(MemError::Overlap {
                name,
                start: vaddr,
                end: vend,
            });
        }
        // Physical placement.
        let pspan = match layout {
            Layout::Contiguous => nunits.checked_mul(unit),
            Layout::Scattered => nunits.checked_mul(2 * unit),
        }
        .ok_or_else(no_space)?;
        let pbase = match spec.phys {
            Some(p) => {
                let need = if backing == Backing::Pfnmap {
                    PAGE_SIZE
                } else {
                    unit
                };
                aligned(&name, "phys", p, need)?;
                let end = p.checked_add(pspan).ok_or_else(no_space)?;
                if let Some((os, oe, other)) = self.phys_overlap(p, end) {
                    return Err(MemError::PhysOverlap {
                        name,
                        start: p,
                        end,
                        other: self.regions[other].name.clone(),
                        other_start: os,
                        other_end: oe,
                    });
                }
                p
            }
            None if backing == Backing::Pfnmap => {
                let a = spec.size.checked_next_power_of_two().ok_or_else(no_space)?;
                let base = self
                    .free_phys(self.next_mmio, a, 0, pspan)
                    .ok_or_else(no_space)?;
                self.next_mmio = base.checked_add(pspan).ok_or_else(no_space)?;
                base
            }
            None => {
                // Aligned to the unit and no more, unless scattered (then the slots decide).
                let (align, offset) = match (layout, unit) {
                    (Layout::Scattered, u) => (u, 0),
                    (_, PAGE_SIZE) => (SZ_2M, PAGE_SIZE),
                    (_, SZ_2M) => (SZ_1G, SZ_2M),
                    (_, u) => (u, 0),
                };
                // One unit of gap after it so that regions never touch physically.
                let gap = pspan.checked_add(unit).ok_or_else(no_space)?;
                let base = self
                    .free_phys(self.next_ram, align, offset, gap)
                    .ok_or_else(no_space)?;
                self.next_ram = base.checked_add(gap).ok_or_else(no_space)?;
                base
            }
        };
        let pend = pbase.checked_add(pspan).ok_or_else(no_space)?;
        // A read-only region of 4K pages can never have been written: its pages are the zero
        // page, which 6.1 counts as reserved (`is_invalid_reserved_pfn`). Huge pages are not:
        // 6.1 charges read-only THP and hugetlb memory (tests/kernel/huge-readonly.trace).
        let zero_reserved =
            self.zero_page_reserved && !spec.writable && spec.backing == Backing::Page4k;
        let idx = self.regions.len();
        if backing == Backing::Pfnmap || zero_reserved {
            self.add_mmio(pbase / PAGE_SIZE, pend.div_ceil(PAGE_SIZE));
        }
        self.phys.insert(pbase, (pend, idx));
        self.regions.push(Region {
            name: name.clone(),
            vaddr,
            size: spec.size,
            backing,
            layout,
            pbase,
            writable: spec.writable,
            nunits,
            perm: Feistel::new(nunits, spec.seed),
            zero_reserved,
        });
        self.names.insert(name, idx);
        self.vmas.insert(
            vaddr,
            Vma {
                end: vend,
                region: idx,
            },
        );
        if spec.at.is_none() {
            // Leave an unmapped gap after every region.
            self.next_vaddr = vend.saturating_add(valign.max(PAGE_SIZE));
        }
        Ok(vaddr)
    }

    /// Remove a region, or `size` bytes of it from `offset`. Pins already taken stay valid.
    pub fn munmap(&mut self, name: &str, range: Option<(u64, u64)>) -> Result<(), MemError> {
        let &idx = self
            .names
            .get(name)
            .ok_or_else(|| MemError::NoSuchRegion(name.to_string()))?;
        let r = self.regions[idx].clone();
        let unit = r.backing.granule();
        let (off, size) = range.unwrap_or((0, r.size));
        let bad = || MemError::BadMunmap {
            name: name.to_string(),
            offset: off,
            size,
            region_size: r.size,
            unit,
        };
        let end_off = off.checked_add(size).ok_or_else(bad)?;
        if size == 0 || end_off > r.size || off % unit != 0 || size % unit != 0 {
            return Err(bad());
        }
        let (start, end) = (r.vaddr + off, r.vaddr + end_off);
        cut_vmas(&mut self.vmas, idx, start, end);
        // What is left of the region lies inside its original range: look only there.
        let (rs, re) = (r.vaddr, r.vaddr + r.size);
        if !self.vmas.range(rs..re).any(|(_, v)| v.region == idx) {
            self.names.remove(name);
        }
        Ok(())
    }

    /// This model's own heap, estimated from entry counts (regions, vmas, pinned ranges).
    pub fn footprint_estimate(&self) -> u64 {
        let region = std::mem::size_of::<Region>() as u64 + 32;
        let vma = (8 + std::mem::size_of::<Vma>()) as u64 * 3 / 2;
        let pins = 24 * 3 / 2;
        self.regions.len() as u64 * region
            + self.vmas.len() as u64 * vma
            + self.pins.ranges().len() as u64 * pins
    }

    /// The pin count of one pfn.
    pub fn pin_count(&self, pfn: u64) -> u32 {
        self.pins.get(pfn)
    }

    /// Every pinned range as `(first pfn, pages, pin count)` (`PageAudit::pin_ranges`, callable
    /// without naming the trait).
    pub fn pin_ranges(&self) -> Vec<(u64, u64, u32)> {
        self.pins.ranges()
    }

    fn pin_pfnmap(
        &self,
        vaddr: u64,
        npages: u64,
        write: bool,
        vstart: u64,
        vma: Vma,
    ) -> Result<Pinned, MmError> {
        let r = &self.regions[vma.region];
        if write && !r.writable {
            return Err(MmError::ReadOnly {
                vaddr,
                name: r.name.clone(),
            });
        }
        let paddr = r.pbase + (vaddr - r.vaddr);
        // The user page-table leaf (vfio-pci installs PUD/PMD leaves where vaddr and pfn are
        // co-aligned and the leaf lies inside the vma; `follow_pfnmap` reports its size).
        let mut leaf = PAGE_SIZE;
        for l in [SZ_1G, SZ_2M] {
            let ls = vaddr & !(l - 1);
            if ls >= vstart
                && ls.checked_add(l).is_some_and(|e| e <= vma.end)
                && (paddr - (vaddr - ls)).is_multiple_of(l)
            {
                leaf = l;
                break;
            }
        }
        let n = npages.min((leaf - vaddr % leaf) / PAGE_SIZE);
        Ok(Pinned::Pfnmap {
            pfn: paddr / PAGE_SIZE,
            npages: n,
        })
    }
}

impl PageSource for SimMm {
    fn set_kernel_profile(&mut self, profile: crate::KernelProfile) {
        self.zero_page_reserved = profile.zero_page_reserved();
        self.ro_thp_4k = profile.ro_thp_pins_4k_pages();
    }

    fn pin(&mut self, vaddr: u64, npages: u64, write: bool, batch: &mut Batch) -> PinResult {
        if self
            .faults
            .as_deref()
            .is_some_and(|f| f.hit(FaultPoint::Pin))
        {
            return Err(MmError::Injected { vaddr });
        }
        let Some((vstart, vma)) = self.vma_at(vaddr) else {
            return Err(MmError::NotMapped { vaddr });
        };
        if self.regions[vma.region].backing == Backing::Pfnmap {
            return self.pin_pfnmap(vaddr, npages, write, vstart, vma);
        }
        let max_pages = batch.page_limit(npages);
        let mut addr = vaddr;
        let mut got = 0u64;
        // Pin counts are updated once per physically contiguous stretch, not per entry.
        let mut pending: Option<(u64, u64)> = None;
        // Like GUP: walk on through adjacent vmas until something cannot be pinned.
        'vmas: while got < max_pages {
            let Some((_, vma)) = self.vma_at(addr) else {
                break;
            };
            let r = &self.regions[vma.region];
            if r.backing == Backing::Pfnmap || (write && !r.writable) {
                if got == 0 {
                    return Err(MmError::ReadOnly {
                        vaddr,
                        name: r.name.clone(),
                    });
                }
                break;
            }
            while got < max_pages && addr < vma.end {
                if batch.is_full() {
                    break 'vmas;
                }
                let off = addr - r.vaddr;
                let (paddr, folio_left) = r.locate(off);
                let span =
                    (r.contiguous_bytes(off).min(vma.end - addr) / PAGE_SIZE).min(max_pages - got);
                let pfn = paddr / PAGE_SIZE;
                let reserved = r.zero_reserved;
                // Base pages are folios of one page each: an entry per page, as per-page mode.
                let n = if batch.mode() == PinMode::PerPage || r.backing == Backing::Page4k {
                    let n = span.min(batch.entries_left());
                    batch.push_pages(pfn, n, reserved);
                    n
                } else {
                    let n = span.min(folio_left);
                    batch.push(pfn, n, reserved);
                    n
                };
                if reserved {
                    // Reserved pfns are not pinned (and never unpinned).
                    got += n;
                    addr += n * PAGE_SIZE;
                    continue;
                }
                pending = match pending {
                    Some((s, len)) if s + len == pfn => Some((s, len + n)),
                    Some((s, len)) => {
                        self.pins.add(s, len);
                        Some((pfn, n))
                    }
                    None => Some((pfn, n)),
                };
                got += n;
                addr += n * PAGE_SIZE;
            }
        }
        if let Some((s, len)) = pending {
            self.pins.add(s, len);
        }
        if got == 0 {
            return Err(MmError::NotMapped { vaddr });
        }
        Ok(Pinned::Pages)
    }

    fn unpin(&mut self, pfn: u64, npages: u64, _dirty: bool, skip_reserved: bool) -> u64 {
        let (pins, violations) = (&mut self.pins, &mut self.violations);
        if !skip_reserved {
            return unpin_counted(pins, violations, pfn, npages);
        }
        let mut done = 0;
        for_each_unreserved(pfn, npages, &self.mmio, |s, n| {
            done += unpin_counted(pins, violations, s, n);
        });
        done
    }

    fn is_reserved(&self, pfn: u64) -> bool {
        in_ranges(pfn, &self.mmio)
    }
}

/// Drop one pin of each of `n` pages from `s`; returns the pages that were pinned, and reports
/// the others (an unbalanced unpin) in `violations`.
fn unpin_counted(pins: &mut PinCounts, violations: &mut Vec<String>, s: u64, n: u64) -> u64 {
    let missing = pins.sub(s, n);
    if missing != 0 {
        let e = s + n;
        violations.push(format!(
            "unpin of {missing} page(s) in pfn range [{s:#x}, {e:#x}) that were not pinned"
        ));
    }
    n - missing
}

impl PageAudit for SimMm {
    fn pin_counts(&self) -> &PinCounts {
        &self.pins
    }

    fn reserved_pfn_ranges(&self) -> Vec<(u64, u64)> {
        self.mmio.clone()
    }

    fn violations(&self) -> Vec<String> {
        self.violations.clone()
    }
}

impl Memory for SimMm {
    fn mmap(&mut self, spec: &MmapSpec) -> Result<u64, MemError> {
        SimMm::mmap(self, spec)
    }
    fn munmap(&mut self, name: &str, range: Option<(u64, u64)>) -> Result<(), MemError> {
        SimMm::munmap(self, name, range)
    }
    fn region_vaddr(&self, name: &str) -> Option<u64> {
        SimMm::region_vaddr(self, name)
    }
    fn vaddr_to_phys(&self, vaddr: u64) -> Option<u64> {
        SimMm::vaddr_to_phys(self, vaddr)
    }
    fn folio_size(&self, vaddr: u64) -> Option<u64> {
        SimMm::folio_size(self, vaddr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model holding one region; returns it and the region's vaddr.
    fn with_region(name: &str, size: u64, backing: Backing) -> (SimMm, u64) {
        let mut mm = SimMm::new();
        let v = mm.mmap(&MmapSpec::new(name, size, backing)).unwrap();
        (mm, v)
    }

    #[test]
    fn permute_is_a_permutation() {
        for n in [1u64, 2, 3, 7, 64, 1000] {
            let mut seen: Vec<u64> = (0..n).map(|i| permute(i, n, 42)).collect();
            seen.sort();
            assert_eq!(seen, (0..n).collect::<Vec<_>>(), "n = {n}");
        }
    }

    #[test]
    fn contiguous_4k_is_not_2m_aligned_and_thp_is() {
        let (mut mm, v) = with_region("a", 4 << 20, Backing::Page4k);
        assert_eq!(mm.vaddr_to_phys(v).unwrap() % SZ_2M, PAGE_SIZE);
        let t = mm.mmap(&MmapSpec::new("t", 4 << 20, Backing::Thp)).unwrap();
        let p = mm.vaddr_to_phys(t).unwrap();
        assert_eq!(p % SZ_2M, 0);
        assert_ne!(p % SZ_1G, 0);
        assert_eq!(mm.folio_size(t + 4096), Some(SZ_2M));
    }

    #[test]
    fn scattered_pages_never_touch() {
        let mut mm = SimMm::new();
        let mut s = MmapSpec::new("s", 64 * PAGE_SIZE, Backing::Page4k);
        s.layout = Layout::Scattered;
        s.seed = 7;
        let v = mm.mmap(&s).unwrap();
        let mut pfns: Vec<u64> = (0..64)
            .map(|i| mm.vaddr_to_phys(v + i * PAGE_SIZE).unwrap() / PAGE_SIZE)
            .collect();
        pfns.sort();
        assert!(pfns.windows(2).all(|w| w[1] - w[0] >= 2));
    }

    #[test]
    fn pin_stops_at_hole_and_fails_on_it() {
        let (mut mm, v) = with_region("a", 8 * PAGE_SIZE, Backing::Page4k);
        mm.munmap("a", Some((4 * PAGE_SIZE, 4 * PAGE_SIZE)))
            .unwrap();
        let mut b = Batch::new(PinMode::PerPage, 512);
        assert_eq!(mm.pin(v, 8, true, &mut b), Ok(Pinned::Pages));
        assert_eq!(b.runs().len(), 4);
        assert_eq!(mm.pinned_pages(), 4);
        let mut b2 = Batch::new(PinMode::PerPage, 512);
        assert!(matches!(
            mm.pin(v + 4 * PAGE_SIZE, 4, true, &mut b2),
            Err(MmError::NotMapped { .. })
        ));
        assert_eq!(mm.unpin(b.runs()[0].pfn, 4, true, false), 4);
        assert_eq!(mm.pinned_pages(), 0);
    }

    #[test]
    fn folio_mode_pins_a_1g_page_in_one_entry() {
        let (mut mm, v) = with_region("g", 2 * SZ_1G, Backing::Hugetlb1g);
        let mut b = Batch::new(PinMode::Folio, 512);
        mm.pin(v, 2 * SZ_1G / PAGE_SIZE, true, &mut b).unwrap();
        assert_eq!(b.runs().len(), 2);
        assert_eq!(b.runs()[0].npages, SZ_1G / PAGE_SIZE);
        assert_eq!(
            b.contiguous_pages(u64::MAX),
            2 * SZ_1G / PAGE_SIZE,
            "contiguous layout: both folios adjacent"
        );
    }
}
