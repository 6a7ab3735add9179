//! `mm::host`: the engine's `PageSource` over the real memory of this process (Linux).
//!
//! Data model and invariants (check the code against these):
//!
//! - **Regions** are anonymous private mappings made by `Memory::mmap` (`sys::Mapping`): 4K pages
//!   (`MADV_NOHUGEPAGE`, so the kernel never hands out a THP by accident), THP (`MADV_HUGEPAGE`,
//!   2M-aligned), or hugetlb 2M/1G (`MAP_HUGETLB|MAP_HUGE_2MB/1GB`). Every region is faulted in
//!   at creation (`MADV_POPULATE_WRITE`, or `_READ` for `prot=r`; touching every page where the
//!   kernel lacks them). `vmas` maps each still-mapped piece of a region, like `mm::sim`.
//! - **Pfns** come from `/proc/self/pagemap` (bits 0–54 of a present entry; the readers are in
//!   `mm::procfs`, as are those of kpageflags below), read in large
//!   blocks: one read per pin call covers the whole batch (and reads ahead up to 4096 entries;
//!   the read-ahead is dropped at every mmap/munmap). Without CAP_SYS_ADMIN the kernel reports
//!   pfn 0 for present pages: `HostMm::new` detects that and refuses with an error naming
//!   CAP_SYS_ADMIN.
//! - **Folios** come from `/proc/kpageflags`: a page with COMPOUND_HEAD/TAIL belongs to a folio
//!   whose head is the nearest naturally aligned HEAD and whose size is where the TAILs stop;
//!   a folio whose head is not aligned to its size is treated as 4K pages.
//! - **Reserved** pfns (`is_invalid_reserved_pfn`) are the ones kpageflags marks RESERVED or
//!   ZERO_PAGE (a read-only region faulted in by reading maps the shared zero page). They are
//!   neither counted, locked nor unpinned, as in the kernel.
//! - **Pins**: a pin of the page at vaddr `v` with pfn `p` adds 1 to `locks[v]`, pushes `v` onto
//!   `rev[p]` and adds 1 to `pins[p]`. The page is `mlock`ed when `locks[v]` goes 0 → 1 and
//!   `munlock`ed when it goes back to 0. `unpin` receives pfns: it pops a vaddr from `rev[p]`.
//!   Hence Σ locks = Σ |rev[p]| = `pins.total()`, and a page mapped at two IOVAs is pinned
//!   (and counted) twice but locked once.
//! - **munmap** of pinned pages is deferred (the kernel keeps pinned pages alive after munmap;
//!   unmapping them here would free the pfns the IOMMU still points at): the pieces leave `vmas`
//!   at once, but a unit (4K page, or the whole huge page for hugetlb) with a pinned page stays
//!   mapped as a *zombie* until its last pin drops.
//! - **Drop** unlocks every locked page and unmaps every mapping, zombies included: nothing
//!   leaks a lock (`VmLck` in `/proc/self/status` returns to where it was).
//!
//! Limits of a userspace model: `mlock` keeps pages resident but does not stop the kernel from
//! migrating them (compaction, khugepaged), which a real GUP pin would; a pfn handed to the
//! engine stays the one recorded here, and `unpin` uses the record, so the bookkeeping stays
//! consistent even then.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io;

use iommu::{Pages, Pfn, SZ_2M};

use super::pincount::PinCounts;
use super::procfs::{self, folio_of, kpf, page_flags, pagemap, read_entries};
use super::{
    cut_vmas, vma_at, Batch, MemError, Memory, MmError, PageAudit, PageSource, PinMode, PinResult,
    Pinned, Vma, Vmas,
};
use super::{Backing, Layout, MmapSpec};
use crate::sys::{self, Advice, HugeTlb, Mapping};
use crate::PAGE_SIZE;

#[derive(Debug)]
struct Region {
    name: String,
    vaddr: u64,
    size: u64,
    backing: Backing,
    writable: bool,
    /// Index into `HostMm::mappings`.
    mapping: usize,
}

/// The vaddrs a pinned pfn was pinned at (one per pin).
#[derive(Debug)]
enum Rev {
    One(u64),
    Many(Vec<u64>),
}

/// Pagemap entries read ahead: `entries[i]` is the entry of `start + i * 4K`.
#[derive(Debug, Default)]
struct ReadAhead {
    start: u64,
    entries: Vec<u64>,
}

/// A hasher for page-aligned addresses and page numbers: one multiply, folded so that the low
/// bits (which the table indexes by) depend on every bit of the key. SipHash costs more than
/// the rest of a pin.
#[derive(Clone, Copy, Debug, Default)]
pub struct PageHasher(u64);

impl std::hash::Hasher for PageHasher {
    fn finish(&self) -> u64 {
        let h = self.0.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        h ^ (h >> 29)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | b as u64).rotate_left(5);
        }
    }
    fn write_u64(&mut self, x: u64) {
        self.0 = x ^ (x >> 12);
    }
}

type PageMap<V> = HashMap<u64, V, std::hash::BuildHasherDefault<PageHasher>>;

/// Real process memory as a `PageSource`.
#[derive(Debug)]
pub struct HostMm {
    regions: Vec<Region>,
    names: HashMap<String, usize>,
    vmas: Vmas,
    /// Every mapping ever made (regions index into it); an empty one costs nothing.
    mappings: Vec<Mapping>,
    pagemap: File,
    kpageflags: File,
    /// Pin counts by pfn (non-reserved pages only).
    pins: PinCounts,
    /// Pin counts by vaddr page; a page is mlocked while its count is non-zero.
    locks: PageMap<u32>,
    /// pfn → the vaddrs it was pinned at.
    rev: PageMap<Rev>,
    /// Vaddr stretches newly pinned by the current `pin` call, mlocked once at its end.
    to_lock: Vec<(u64, u64)>,
    /// Vaddr pages whose last pin dropped, munlocked at the next `flush`.
    to_release: Vec<u64>,
    /// Units munmapped while pinned: start → (unit size, mapping index).
    zombies: BTreeMap<u64, (u64, usize)>,
    readahead: ReadAhead,
    notes: Vec<String>,
    violations: Vec<String>,
    /// Pagemap reads done by pins (a statistic).
    pagemap_reads: u64,
}

impl HostMm {
    /// Entries read ahead from pagemap per pin call, at least.
    pub const READ_AHEAD: usize = 4096;
    /// Released pages kept for one bulk munlock at most.
    const RELEASE_BATCH: usize = 1 << 16;
    /// Entries per pagemap read at most (2 MiB of buffer, 1 GiB of address space).
    const MAX_READ: usize = 1 << 18;

    /// Open `/proc/self/pagemap` and `/proc/kpageflags` and check that pfns are visible.
    /// Fails, naming CAP_SYS_ADMIN, when they are not.
    pub fn new() -> Result<HostMm, MemError> {
        let pagemap = File::open("/proc/self/pagemap").map_err(MemError::OpenPagemap)?;
        let kpageflags = File::open("/proc/kpageflags").map_err(MemError::OpenKpageflags)?;
        // Probe: one page of our own, written, then its pagemap entry.
        let probe_err = |step| move |err| MemError::Probe { step, err };
        let probe = Mapping::anon(PAGE_SIZE, true, None, None)
            .map_err(probe_err("mmap of a probe page"))?;
        probe
            .touch(probe.base(), PAGE_SIZE)
            .map_err(probe_err("touching the probe page"))?;
        let e = read_entries(&pagemap, probe.base() / PAGE_SIZE, 1)
            .map_err(probe_err("reading /proc/self/pagemap"))?;
        match e.first().copied().and_then(pagemap::pfn) {
            Some(0) => return Err(MemError::NoCapSysAdmin),
            Some(_) => {}
            None => return Err(MemError::ProbeAbsent),
        }
        drop(probe);
        Ok(HostMm {
            regions: Vec::new(),
            names: HashMap::new(),
            vmas: BTreeMap::new(),
            mappings: Vec::new(),
            pagemap,
            kpageflags,
            pins: PinCounts::new(),
            locks: PageMap::default(),
            rev: PageMap::default(),
            to_lock: Vec::new(),
            to_release: Vec::new(),
            zombies: BTreeMap::new(),
            readahead: ReadAhead::default(),
            notes: Vec::new(),
            violations: Vec::new(),
            pagemap_reads: 0,
        })
    }

    /// `(vaddr, size, backing)` of a region by name.
    pub fn region(&self, name: &str) -> Option<(u64, u64, Backing)> {
        self.names.get(name).map(|&i| {
            let r = &self.regions[i];
            (r.vaddr, r.size, r.backing)
        })
    }

    /// Pages this source keeps locked (each once, however many pins it has).
    pub fn locked_pages(&self) -> u64 {
        self.locks.len() as u64
    }

    /// Units whose munmap waits for their pins to drop.
    pub fn deferred_unmaps(&self) -> usize {
        self.zombies.len()
    }

    /// Pagemap reads done by pin calls.
    pub fn pagemap_reads(&self) -> u64 {
        self.pagemap_reads
    }

    /// Raw pagemap entries of `npages` pages from `vaddr` (one read per 1 GiB).
    pub fn pagemap_entries(&self, vaddr: u64, npages: u64) -> io::Result<Vec<u64>> {
        let mut out = Vec::with_capacity(npages.min(Self::MAX_READ as u64) as usize);
        let mut idx = vaddr / PAGE_SIZE;
        let end = idx + npages;
        while idx < end {
            let n = ((end - idx) as usize).min(Self::MAX_READ);
            let v = read_entries(&self.pagemap, idx, n)?;
            if v.is_empty() {
                break;
            }
            idx += v.len() as u64;
            out.extend(v);
        }
        Ok(out)
    }

    /// `/proc/kpageflags` of a pfn.
    pub fn page_flags(&self, pfn: u64) -> u64 {
        page_flags(&self.kpageflags, pfn)
    }

    /// The folio of a pfn as `(head pfn, pages)`.
    pub fn folio_of(&self, pfn: Pfn) -> (Pfn, Pages) {
        folio_of(&self.kpageflags, pfn)
    }

    fn pfn_reserved(&self, pfn: u64) -> bool {
        kpf::reserved(self.page_flags(pfn))
    }

    fn vma_at(&self, vaddr: u64) -> Option<(u64, Vma)> {
        vma_at(&self.vmas, vaddr)
    }

    fn mmap_inner(&mut self, spec: &MmapSpec) -> Result<u64, MemError> {
        let name = spec.name.clone();
        if self.names.contains_key(&name) {
            return Err(MemError::Exists(name));
        }
        let backing = spec.backing;
        if backing == Backing::Pfnmap {
            return Err(MemError::PfnmapNeedsDevice(name));
        }
        let unit = backing.granule();
        if spec.size == 0 || !spec.size.is_multiple_of(unit) {
            return Err(MemError::BadSize {
                name,
                size: spec.size,
                unit,
                backing,
            });
        }
        if let Some(at) = spec.at {
            if !at.is_multiple_of(unit) {
                return Err(MemError::Unaligned {
                    name,
                    what: "at",
                    value: at,
                    align: unit,
                });
            }
        }
        if spec.layout != Layout::Contiguous {
            self.notes.push(format!(
                "{name}: layout=scattered ignored: the kernel places real pages"
            ));
        }
        if spec.seed != 0 {
            self.notes.push(format!(
                "{name}: seed ignored: the kernel places real pages"
            ));
        }
        if let Some(p) = spec.phys {
            self.notes.push(format!(
                "{name}: phys={p:#x} ignored: the kernel places real pages"
            ));
        }
        let huge = match backing {
            Backing::Hugetlb2m => Some(HugeTlb::Size2M),
            Backing::Hugetlb1g => Some(HugeTlb::Size1G),
            _ => None,
        };
        let made = match (backing, spec.at) {
            (Backing::Thp, None) => Mapping::anon_aligned(spec.size, spec.writable, SZ_2M),
            _ => Mapping::anon(spec.size, spec.writable, spec.at, huge),
        };
        let m = made.map_err(|err| match (err.raw_os_error(), huge) {
            (Some(libc::EEXIST), _) => MemError::Overlap {
                name: name.clone(),
                start: spec.at.unwrap_or(0),
                end: spec.at.unwrap_or(0) + spec.size,
            },
            (Some(libc::ENOMEM), Some(h)) => MemError::NoHugePages {
                name: name.clone(),
                size: spec.size,
                backing,
                free: procfs::free_huge_pages(h.size()),
            },
            _ => MemError::Mmap {
                name: name.clone(),
                size: spec.size,
                err,
            },
        })?;
        let (vaddr, size) = (m.base(), spec.size);
        let advice = match backing {
            Backing::Page4k => Some(Advice::NoHugePage),
            Backing::Thp => Some(Advice::HugePage),
            _ => None,
        };
        if let Some(a) = advice {
            sys::madvise(vaddr, size, a).map_err(|err| MemError::Madvise {
                name: name.clone(),
                advice: format!("{a:?}"),
                err,
            })?;
        }
        let populate = if spec.writable {
            Advice::PopulateWrite
        } else {
            Advice::PopulateRead
        };
        let populate_err = |err| MemError::Populate {
            name: name.clone(),
            err,
        };
        if let Err(e) = sys::madvise(vaddr, size, populate) {
            if e.raw_os_error() != Some(libc::EINVAL) {
                return Err(populate_err(e));
            }
            // A kernel without MADV_POPULATE_* (before 5.14): touch every page.
            m.touch(vaddr, size).map_err(populate_err)?;
        }
        self.mappings.push(m);
        let idx = self.regions.len();
        self.regions.push(Region {
            name: name.clone(),
            vaddr,
            size,
            backing,
            writable: spec.writable,
            mapping: self.mappings.len() - 1,
        });
        self.names.insert(name, idx);
        self.vmas.insert(
            vaddr,
            Vma {
                end: vaddr + size,
                region: idx,
            },
        );
        self.readahead = ReadAhead::default();
        Ok(vaddr)
    }

    fn munmap_inner(&mut self, name: &str, range: Option<(u64, u64)>) -> Result<(), MemError> {
        let &idx = self
            .names
            .get(name)
            .ok_or_else(|| MemError::NoSuchRegion(name.to_string()))?;
        let r = &self.regions[idx];
        let (unit, rvaddr, rsize, mi) = (r.backing.granule(), r.vaddr, r.size, r.mapping);
        let (off, size) = range.unwrap_or((0, rsize));
        let bad = || MemError::BadMunmap {
            name: name.to_string(),
            offset: off,
            size,
            region_size: rsize,
            unit,
        };
        let end_off = off.checked_add(size).ok_or_else(bad)?;
        if size == 0 || end_off > rsize || !off.is_multiple_of(unit) || !size.is_multiple_of(unit) {
            return Err(bad());
        }
        let (start, end) = (rvaddr + off, rvaddr + end_off);
        let gone = cut_vmas(&mut self.vmas, idx, start, end);
        // Unmap what nobody pinned; keep pinned units as zombies.
        let mut free: Vec<(u64, u64)> = Vec::new();
        for (s, e) in gone {
            let mut u = s;
            while u < e {
                let pinned =
                    (0..unit / PAGE_SIZE).any(|i| self.locks.contains_key(&(u + i * PAGE_SIZE)));
                if pinned {
                    self.zombies.insert(u, (unit, mi));
                } else {
                    match free.last_mut() {
                        Some((_, fe)) if *fe == u => *fe = u + unit,
                        _ => free.push((u, u + unit)),
                    }
                }
                u += unit;
            }
        }
        for (s, e) in free {
            self.mappings[mi]
                .unmap(s, e - s)
                .map_err(|err| MemError::Munmap {
                    name: name.to_string(),
                    start: s,
                    end: e,
                    err,
                })?;
        }
        if !self.vmas.values().any(|v| v.region == idx) {
            self.names.remove(name);
        }
        self.readahead = ReadAhead::default();
        Ok(())
    }

    /// Pagemap entries of `[vaddr, vaddr + need pages)`, from the read-ahead or one new read of
    /// at least `READ_AHEAD` entries (at most `avail`).
    fn entries(&mut self, vaddr: u64, need: u64, avail: u64) -> io::Result<&[u64]> {
        let ra = &self.readahead;
        let cached = vaddr >= ra.start
            && (vaddr - ra.start) / PAGE_SIZE + need <= ra.entries.len() as u64
            && !ra.entries.is_empty()
            && {
                // A page read ahead while absent may have been faulted in since: read again.
                let i = ((vaddr - ra.start) / PAGE_SIZE) as usize;
                ra.entries[i..i + need as usize]
                    .iter()
                    .all(|&e| e & pagemap::PRESENT != 0)
            };
        if !cached {
            let n = need.max(Self::READ_AHEAD as u64).min(avail) as usize;
            self.pagemap_reads += 1;
            let entries = read_entries(&self.pagemap, vaddr / PAGE_SIZE, n)?;
            self.readahead = ReadAhead {
                start: vaddr,
                entries,
            };
        }
        let i = ((vaddr - self.readahead.start) / PAGE_SIZE) as usize;
        let j = (i + need as usize).min(self.readahead.entries.len());
        Ok(&self.readahead.entries[i..j])
    }

    /// Record a pin of `npages` pages from `vaddr` at pfns from `pfn`; mlock what was unlocked.
    fn take_pins(&mut self, vaddr: u64, pfn: u64, npages: u64) -> io::Result<()> {
        let mut lock_from: Option<u64> = None;
        let mut to_lock: Vec<(u64, u64)> = Vec::new();
        for i in 0..npages {
            let v = vaddr + i * PAGE_SIZE;
            let c = self.locks.entry(v).or_insert(0);
            *c += 1;
            let newly = *c == 1;
            match (newly, lock_from) {
                (true, None) => lock_from = Some(v),
                (false, Some(s)) => {
                    to_lock.push((s, v));
                    lock_from = None;
                }
                _ => {}
            }
            match self.rev.get_mut(&(pfn + i)) {
                None => {
                    self.rev.insert(pfn + i, Rev::One(v));
                }
                Some(r) => {
                    let old = std::mem::replace(r, Rev::Many(Vec::new()));
                    *r = match old {
                        Rev::One(a) => Rev::Many(vec![a, v]),
                        Rev::Many(mut m) => {
                            m.push(v);
                            Rev::Many(m)
                        }
                    };
                }
            }
        }
        if let Some(s) = lock_from {
            to_lock.push((s, vaddr + npages * PAGE_SIZE));
        }
        self.pins.add(pfn, npages);
        // mlock once per pin call, over merged stretches (one syscall per page splits vmas and
        // costs microseconds).
        for (s, e) in to_lock {
            match self.to_lock.last_mut() {
                Some(last) if last.1 == s => last.1 = e,
                _ => self.to_lock.push((s, e)),
            }
        }
        Ok(())
    }

    /// mlock what the current pin call newly pinned.
    fn flush_locks(&mut self) {
        for (s, e) in std::mem::take(&mut self.to_lock) {
            if let Err(err) = sys::mlock(s, e - s) {
                self.violations
                    .push(format!("mlock of [{s:#x}, {e:#x}) failed: {err}"));
            }
        }
    }

    /// Pages of `vaddrs` (sorted, unique) whose last pin dropped: munlock them, and unmap the
    /// zombie units that no longer hold a pinned page.
    fn release(&mut self, vaddrs: &mut [u64]) {
        vaddrs.sort_unstable();
        let mut i = 0;
        while i < vaddrs.len() {
            let s = vaddrs[i];
            let mut e = s + PAGE_SIZE;
            i += 1;
            while i < vaddrs.len() && vaddrs[i] == e {
                e += PAGE_SIZE;
                i += 1;
            }
            if let Err(err) = sys::munlock(s, e - s) {
                self.violations
                    .push(format!("munlock of [{s:#x}, {e:#x}) failed: {err}"));
            }
        }
        if self.zombies.is_empty() {
            return;
        }
        let mut units: Vec<(u64, u64, usize)> = Vec::new();
        for &v in vaddrs.iter() {
            if let Some((&u, &(size, mi))) = self.zombies.range(..=v).next_back() {
                let seen = matches!(units.last(), Some(l) if l.0 == u);
                if v < u + size && !seen {
                    units.push((u, size, mi));
                }
            }
        }
        for (u, size, mi) in units {
            let still =
                (0..size / PAGE_SIZE).any(|k| self.locks.contains_key(&(u + k * PAGE_SIZE)));
            if !still {
                self.zombies.remove(&u);
                if let Err(err) = self.mappings[mi].unmap(u, size) {
                    self.violations.push(format!(
                        "deferred munmap of [{u:#x}, +{size:#x}) failed: {err}"
                    ));
                }
            }
        }
    }
}

impl PageSource for HostMm {
    fn pin(&mut self, vaddr: u64, npages: u64, write: bool, batch: &mut Batch) -> PinResult {
        let vaddr = vaddr & !(PAGE_SIZE - 1);
        let per_page = batch.mode() == PinMode::PerPage;
        let max_pages = batch.page_limit(npages);
        // The pinnable span: our vmas from vaddr on, as GUP walks on through adjacent vmas, up
        // to a read-only one for a write pin. `avail` = the span without the `npages` bound
        // (how far the read-ahead may go).
        let mut span = 0u64;
        let mut avail = 0u64;
        let mut addr = vaddr;
        let mut readonly_vmas = false;
        while avail < max_pages.max(Self::READ_AHEAD as u64) {
            let Some((_, vma)) = self.vma_at(addr) else {
                break;
            };
            let r = &self.regions[vma.region];
            if write && !r.writable {
                if span == 0 {
                    return Err(MmError::ReadOnly {
                        vaddr,
                        name: r.name.clone(),
                    });
                }
                break;
            }
            readonly_vmas |= !r.writable;
            let n = (vma.end - addr) / PAGE_SIZE;
            span += n.min(max_pages.saturating_sub(span));
            avail += n;
            addr = vma.end;
        }
        if span == 0 {
            return Err(MmError::NotMapped { vaddr });
        }
        // GUP faults pages in: populate each block before reading its pfns.
        let populate = if write {
            Advice::PopulateWrite
        } else {
            Advice::PopulateRead
        };
        let mut got = 0u64;
        let mut cap_problem = false;
        // The folio of the current batch entry (Folio mode): [head, end) in pfns.
        let mut folio: (u64, u64) = (0, 0);
        // Folio mode does not know how many pages `capacity` entries hold: read blocks that
        // grow from READ_AHEAD entries.
        let mut block = if per_page {
            span
        } else {
            Self::READ_AHEAD as u64
        };
        'read: while got < span {
            let want = (span - got).min(block).min(Self::MAX_READ as u64);
            block = block.saturating_mul(2);
            let base = vaddr + got * PAGE_SIZE;
            let _ = sys::madvise(base, want * PAGE_SIZE, populate);
            let entries = match self.entries(base, want, avail - got) {
                Ok(e) => e.to_vec(),
                Err(_) => break,
            };
            if entries.is_empty() {
                break;
            }
            let mut k = 0usize;
            while k < entries.len() {
                let Some(pfn) = pagemap::pfn(entries[k]) else {
                    break 'read;
                };
                if pfn == 0 {
                    cap_problem = true;
                    break 'read;
                }
                let reserved = readonly_vmas && self.pfn_reserved(pfn);
                // How many pages from here go into one entry: one (PerPage, reserved), or the
                // piece of the folio that is mapped contiguously from here.
                let mut n = 1u64;
                if !per_page && !reserved {
                    if !(folio.0..folio.1).contains(&pfn) {
                        let (head, n) = self.folio_of(Pfn(pfn));
                        folio = (head.0, head.0 + n.0);
                    }
                    while k + (n as usize) < entries.len()
                        && pfn + n < folio.1
                        && pagemap::pfn(entries[k + n as usize]) == Some(pfn + n)
                    {
                        n += 1;
                    }
                }
                // Folio mode: a folio cut by a block boundary continues in the same entry.
                let continues = !per_page
                    && !reserved
                    && k == 0
                    && batch.last().is_some_and(|last| {
                        !last.reserved
                            && last.pfn + last.npages == pfn
                            && (folio.0..folio.1).contains(&last.pfn)
                    });
                if !per_page && !continues && batch.is_full() {
                    break 'read;
                }
                let v = base + k as u64 * PAGE_SIZE;
                if !reserved {
                    if let Err(e) = self.take_pins(v, pfn, n) {
                        self.violations
                            .push(format!("mlock of [{v:#x}, +{n} pages) failed: {e}"));
                    }
                }
                if continues {
                    batch.extend_last(n);
                } else {
                    batch.push(pfn, n, reserved);
                }
                got += n;
                k += n as usize;
            }
        }
        self.flush_locks();
        if cap_problem {
            self.violations.push(super::NO_CAP_SYS_ADMIN.to_string());
        }
        if got == 0 {
            return Err(MmError::NotMapped { vaddr });
        }
        Ok(Pinned::Pages)
    }

    fn flush(&mut self) {
        let mut released = std::mem::take(&mut self.to_release);
        // A page pinned again since its release stays locked.
        released.retain(|v| !self.locks.contains_key(v));
        released.sort_unstable();
        released.dedup();
        self.release(&mut released);
    }

    fn unpin(&mut self, pfn: u64, npages: u64, _dirty: bool, _skip_reserved: bool) -> u64 {
        let mut done = 0u64;
        let mut released: Vec<u64> = Vec::new();
        let mut runs: Vec<(u64, u64)> = Vec::new();
        let mut missing: Vec<u64> = Vec::new();
        for p in pfn..pfn + npages {
            let v = match self.rev.get_mut(&p) {
                None => {
                    // Reserved pfns were never counted (`skip_reserved` or not).
                    if !self.pfn_reserved(p) {
                        missing.push(p);
                    }
                    continue;
                }
                Some(Rev::One(v)) => {
                    let v = *v;
                    self.rev.remove(&p);
                    v
                }
                Some(Rev::Many(m)) => {
                    let v = m.pop().expect("Many is never empty");
                    if m.len() == 1 {
                        let last = m[0];
                        self.rev.insert(p, Rev::One(last));
                    }
                    v
                }
            };
            if let Some(c) = self.locks.get_mut(&v) {
                *c -= 1;
                if *c == 0 {
                    self.locks.remove(&v);
                    released.push(v);
                }
            }
            match runs.last_mut() {
                Some((s, n)) if *s + *n == p => *n += 1,
                _ => runs.push((p, 1)),
            }
            done += 1;
        }
        for (s, n) in runs {
            self.pins.sub(s, n);
        }
        if !missing.is_empty() {
            self.violations.push(format!(
                "unpin of {} page(s) in pfn range [{pfn:#x}, {:#x}) that were not pinned",
                missing.len(),
                pfn + npages
            ));
        }
        // munlock (and deferred munmap) in bulk at the engine's flush, not once per run.
        self.to_release.extend(released);
        if self.to_release.len() >= Self::RELEASE_BATCH {
            self.flush();
        }
        done
    }

    fn is_reserved(&self, pfn: u64) -> bool {
        self.pfn_reserved(pfn)
    }
}

impl PageAudit for HostMm {
    fn pin_counts(&self) -> &PinCounts {
        &self.pins
    }

    fn violations(&self) -> Vec<String> {
        self.violations.clone()
    }
}

impl Memory for HostMm {
    fn mmap(&mut self, spec: &MmapSpec) -> Result<u64, MemError> {
        self.mmap_inner(spec)
    }

    fn munmap(&mut self, name: &str, range: Option<(u64, u64)>) -> Result<(), MemError> {
        self.munmap_inner(name, range)
    }

    fn region_vaddr(&self, name: &str) -> Option<u64> {
        self.names.get(name).map(|&i| self.regions[i].vaddr)
    }

    fn vaddr_to_phys(&self, vaddr: u64) -> Option<u64> {
        let e = read_entries(&self.pagemap, vaddr / PAGE_SIZE, 1).ok()?;
        let pfn = pagemap::pfn(*e.first()?)?;
        (pfn != 0).then_some(pfn * PAGE_SIZE + vaddr % PAGE_SIZE)
    }

    fn folio_size(&self, vaddr: u64) -> Option<u64> {
        let pfn = self.vaddr_to_phys(vaddr)? / PAGE_SIZE;
        let (_, n) = self.folio_of(Pfn(pfn));
        n.bytes()
    }

    fn notes(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notes)
    }
}

impl Drop for HostMm {
    fn drop(&mut self) {
        let mut all: Vec<u64> = self.locks.keys().copied().collect();
        self.locks.clear();
        self.rev.clear();
        self.release(&mut all);
        // Dropping the mappings unmaps everything, zombies included.
        self.zombies.clear();
        self.mappings.clear();
    }
}
