//! Process memory as the engine sees it: `PageSource` pins and unpins user pages and tells which
//! pfns are reserved (device MMIO). `sim` is a deterministic model of a process; a real-memory
//! source would implement the same trait.

pub mod host;
pub mod pincount;
pub mod sim;

use crate::PAGE_SIZE;

/// What backs a region.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum Backing {
    /// Ordinary 4 KiB pages (`4k`, the default).
    #[default]
    #[serde(rename = "4k")]
    Page4k,
    #[serde(rename = "thp")]
    /// Transparent huge pages: 2M folios wherever a 2M-aligned block lies wholly inside the region.
    Thp,
    /// hugetlbfs 2 MiB pages.
    #[serde(rename = "hugetlb-2m")]
    Hugetlb2m,
    /// hugetlbfs 1 GiB pages.
    #[serde(rename = "hugetlb-1g")]
    Hugetlb1g,
    /// A `VM_PFNMAP` mapping of device MMIO (a BAR): reserved pfns, never pinned or charged.
    #[serde(rename = "pfnmap")]
    Pfnmap,
}

impl Backing {
    /// The unit of physical placement (the huge page size; 4K otherwise).
    pub fn unit(self) -> u64 {
        match self {
            Backing::Page4k | Backing::Pfnmap => crate::PAGE_SIZE,
            Backing::Thp | Backing::Hugetlb2m => iommu::SZ_2M,
            Backing::Hugetlb1g => iommu::SZ_1G,
        }
    }

    /// The word that names this backing in traces and reports (`4k`, `thp`, `hugetlb-2m`, …).
    pub fn name(self) -> &'static str {
        match self {
            Backing::Page4k => "4k",
            Backing::Thp => "thp",
            Backing::Hugetlb2m => "hugetlb-2m",
            Backing::Hugetlb1g => "hugetlb-1g",
            Backing::Pfnmap => "pfnmap",
        }
    }
}

/// Physical placement of a region.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Layout {
    /// Physically contiguous, aligned to the backing's unit and no more (the default).
    #[default]
    Contiguous,
    /// Every page (or huge page) placed apart from its neighbours.
    Scattered,
}

/// A request to create memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MmapSpec {
    pub name: String,
    pub size: u64,
    pub backing: Backing,
    pub layout: Layout,
    pub seed: u64,
    pub writable: bool,
    pub at: Option<u64>,
    pub phys: Option<u64>,
}

impl MmapSpec {
    /// A contiguous, writable region with the allocator's placement.
    pub fn new(name: &str, size: u64, backing: Backing) -> Self {
        MmapSpec {
            name: name.to_string(),
            size,
            backing,
            layout: Layout::Contiguous,
            seed: 0,
            writable: true,
            at: None,
            phys: None,
        }
    }
}

/// How a page source reports what it pinned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PinMode {
    /// One batch entry per 4 KiB page, at most `capacity` pages: the kernel's `vfio_batch` of
    /// `struct page` pointers (GUP fills one slot per page).
    PerPage,
    /// One batch entry per piece of a folio (a whole 2M/1G huge page in one entry), at most
    /// `capacity` entries: the large-folio fast path.
    Folio,
}

/// A physically contiguous piece of pinned memory in a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PfnRun {
    pub pfn: u64,
    pub npages: u64,
    /// `is_invalid_reserved_pfn`: the page is not accounted and not unpinned.
    pub reserved: bool,
}

/// The pin batch (`struct vfio_batch`): what one call of the page source returned, and how much
/// of it the engine has consumed. Leftovers are carried into the next pin run (spec §3.2).
#[derive(Debug)]
pub struct Batch {
    pub runs: Vec<PfnRun>,
    /// Index of the current entry.
    pub idx: usize,
    /// Pages of `runs[idx]` already consumed.
    pub off: u64,
    /// Entries the source may return per call (pages in `PerPage` mode).
    pub capacity: usize,
    pub mode: PinMode,
}

impl Batch {
    /// The kernel's `VFIO_BATCH_MAX_CAPACITY` (one page of pointers).
    pub const MAX_CAPACITY: usize = 512;

    pub fn new(mode: PinMode, capacity: usize) -> Self {
        Batch {
            runs: Vec::with_capacity(capacity),
            idx: 0,
            off: 0,
            capacity,
            mode,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.idx >= self.runs.len()
    }

    pub fn clear(&mut self) {
        self.runs.clear();
        self.idx = 0;
        self.off = 0;
    }

    /// The current page: (pfn, reserved).
    pub fn current(&self) -> Option<(u64, bool)> {
        self.runs
            .get(self.idx)
            .map(|r| (r.pfn + self.off, r.reserved))
    }

    /// `num_pages_contiguous`: pages from the current one on that follow each other physically
    /// with the same reservedness, at most `max`.
    pub fn contiguous_pages(&self, max: u64) -> u64 {
        let Some(first) = self.runs.get(self.idx) else {
            return 0;
        };
        let mut n = (first.npages - self.off).min(max);
        let mut next = first.pfn + self.off + n;
        for r in &self.runs[self.idx + 1..] {
            if n >= max || r.pfn != next || r.reserved != first.reserved {
                break;
            }
            let take = r.npages.min(max - n);
            n += take;
            next += take;
        }
        n
    }

    /// Consume `n` pages.
    pub fn advance(&mut self, mut n: u64) {
        while n > 0 {
            let Some(r) = self.runs.get(self.idx) else {
                return;
            };
            let left = r.npages - self.off;
            if n < left {
                self.off += n;
                return;
            }
            n -= left;
            self.idx += 1;
            self.off = 0;
        }
        if self.is_empty() {
            self.clear();
        }
    }

    /// The unconsumed pages, as runs (for `vfio_batch_unpin`).
    pub fn leftovers(&self) -> impl Iterator<Item = PfnRun> + '_ {
        self.runs
            .iter()
            .enumerate()
            .skip(self.idx)
            .map(move |(i, r)| {
                let skip = if i == self.idx { self.off } else { 0 };
                PfnRun {
                    pfn: r.pfn + skip,
                    npages: r.npages - skip,
                    reserved: r.reserved,
                }
            })
    }
}

/// What one pin call produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pinned {
    /// Pages were pinned into the batch.
    Pages,
    /// A `VM_PFNMAP` range (device MMIO): `npages` physically contiguous reserved pfns from `pfn`
    /// up to the end of the user page-table leaf, not pinned; the batch stays empty.
    Pfnmap { pfn: u64, npages: u64 },
}

/// Why pinning failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MmError {
    #[error("nothing is mapped at vaddr {vaddr:#x}")]
    NotMapped { vaddr: u64 },
    #[error(
        "vaddr {vaddr:#x} is in a read-only mapping ({name}) and the map asks for device writes"
    )]
    ReadOnly { vaddr: u64, name: String },
    #[error("injected failure of the pin at vaddr {vaddr:#x}")]
    Injected { vaddr: u64 },
}

/// Pins user memory.
pub trait PageSource {
    /// `vaddr_get_pfns`: pin up to `npages` pages from `vaddr` (at most `batch.capacity` entries)
    /// into `batch` (which is empty), for device writes if `write`. Stops early at a page it cannot
    /// pin; fails only if it cannot pin the first one. A `VM_PFNMAP` mapping returns
    /// `Pinned::Pfnmap` instead.
    fn pin(
        &mut self,
        vaddr: u64,
        npages: u64,
        write: bool,
        batch: &mut Batch,
    ) -> Result<Pinned, MmError>;

    /// Drop one pin from each of `npages` pages from `pfn`; reserved pfns are skipped when
    /// `skip_reserved`. `dirty` marks the pages dirty (the device could write them). Returns the
    /// pages unpinned.
    fn unpin(&mut self, pfn: u64, npages: u64, dirty: bool, skip_reserved: bool) -> u64;

    /// Whether `pfn` is reserved (`is_invalid_reserved_pfn`).
    fn is_reserved(&self, pfn: u64) -> bool;

    /// Non-reserved pages among `npages` from `pfn`.
    fn unreserved_pages(&self, pfn: u64, npages: u64) -> u64;

    /// Pins held in total (the sum of every page's pin count).
    fn pinned_pages(&self) -> u64;

    /// Every pinned range as `(first pfn, pages, pin count)`, in pfn order, adjacent ranges of
    /// equal count merged.
    fn pin_ranges(&self) -> Vec<(u64, u64, u32)>;

    /// The kernel whose behaviour to reproduce where the memory side differs: on 6.1 a
    /// never-written read-only page (the shared zero page) is a reserved pfn, never charged.
    fn set_kernel_profile(&mut self, _profile: crate::KernelProfile) {}

    /// The engine finished a map or an unmap: work the source deferred (e.g. `munlock` of pages
    /// whose last pin dropped) may be done now, in bulk.
    fn flush(&mut self) {}

    /// Reserved pfn ranges `[start, end)` (device MMIO).
    fn reserved_pfn_ranges(&self) -> Vec<(u64, u64)> {
        Vec::new()
    }

    /// Problems the source noticed (an unpin of a page that was not pinned).
    fn violations(&self) -> Vec<String> {
        Vec::new()
    }
}

/// An error of a memory model's own operations (bad `mmap`/`munmap` input, an OS failure),
/// as a sentence for a person.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MemError(pub String);

/// A process's memory that traces can create and the engine can pin: `sim::SimMm` (a model)
/// or `host::HostMm` (the real process).
pub trait Memory: PageSource {
    /// Create a region; returns its vaddr. A model may ignore `layout`/`phys` (the kernel places
    /// real pages) and says so through `notes`.
    fn mmap(&mut self, spec: &MmapSpec) -> Result<u64, MemError>;
    /// Remove a region, or `size` bytes of it from `offset`. Existing pins stay valid.
    fn munmap(&mut self, name: &str, range: Option<(u64, u64)>) -> Result<(), MemError>;
    /// The start of a region by name.
    fn region_vaddr(&self, name: &str) -> Option<u64>;
    /// The physical address behind `vaddr`, if known.
    fn vaddr_to_phys(&self, vaddr: u64) -> Option<u64>;
    /// The size of the folio (huge page) holding `vaddr`: 4K, 2M or 1G.
    fn folio_size(&self, vaddr: u64) -> Option<u64>;
    /// Notes for the user about what the model did not honour (e.g. `phys=` on real memory).
    fn notes(&mut self) -> Vec<String> {
        Vec::new()
    }
}

/// A mapping of a region's address range (a piece of it after a partial munmap), keyed by its
/// start in a `Vmas` map. Shared by the models.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Vma {
    pub end: u64,
    pub region: usize,
}

/// A process's vmas: start → vma, disjoint.
pub(crate) type Vmas = std::collections::BTreeMap<u64, Vma>;

/// The vma holding `vaddr`, with its start.
pub(crate) fn vma_at(vmas: &Vmas, vaddr: u64) -> Option<(u64, Vma)> {
    let (&s, &v) = vmas.range(..=vaddr).next_back()?;
    (vaddr < v.end).then_some((s, v))
}

/// Cut `[start, end)` out of region `region`'s vmas, keeping what lies on either side; returns
/// the pieces removed, as `[s, e)` ranges in address order.
pub(crate) fn cut_vmas(vmas: &mut Vmas, region: usize, start: u64, end: u64) -> Vec<(u64, u64)> {
    let hit: Vec<(u64, Vma)> = vmas
        .range(..end)
        .filter(|(&s, v)| v.region == region && v.end > start && s < end)
        .map(|(&s, &v)| (s, v))
        .collect();
    let mut gone = Vec::with_capacity(hit.len());
    for (s, v) in hit {
        vmas.remove(&s);
        if s < start {
            vmas.insert(s, Vma { end: start, region });
        }
        if v.end > end {
            vmas.insert(end, Vma { end: v.end, region });
        }
        gone.push((s.max(start), v.end.min(end)));
    }
    gone
}

/// Bytes to pages.
pub fn pages(bytes: u64) -> u64 {
    bytes / PAGE_SIZE
}

/// The memory a trace runs on, chosen at run time: the model or the real process.
#[derive(Debug)]
pub enum AnyMemory {
    Sim(sim::SimMm),
    Host(host::HostMm),
}

macro_rules! delegate {
    ($self:ident, $m:ident => $e:expr) => {
        match $self {
            AnyMemory::Sim($m) => $e,
            AnyMemory::Host($m) => $e,
        }
    };
}

impl PageSource for AnyMemory {
    fn pin(
        &mut self,
        vaddr: u64,
        npages: u64,
        write: bool,
        batch: &mut Batch,
    ) -> Result<Pinned, MmError> {
        delegate!(self, m => m.pin(vaddr, npages, write, batch))
    }
    fn unpin(&mut self, pfn: u64, npages: u64, dirty: bool, skip_reserved: bool) -> u64 {
        delegate!(self, m => m.unpin(pfn, npages, dirty, skip_reserved))
    }
    fn is_reserved(&self, pfn: u64) -> bool {
        delegate!(self, m => m.is_reserved(pfn))
    }
    fn unreserved_pages(&self, pfn: u64, npages: u64) -> u64 {
        delegate!(self, m => m.unreserved_pages(pfn, npages))
    }
    fn reserved_pfn_ranges(&self) -> Vec<(u64, u64)> {
        delegate!(self, m => m.reserved_pfn_ranges())
    }
    fn pinned_pages(&self) -> u64 {
        delegate!(self, m => m.pinned_pages())
    }
    fn flush(&mut self) {
        delegate!(self, m => m.flush())
    }
    fn set_kernel_profile(&mut self, profile: crate::KernelProfile) {
        delegate!(self, m => m.set_kernel_profile(profile))
    }
    fn pin_ranges(&self) -> Vec<(u64, u64, u32)> {
        delegate!(self, m => m.pin_ranges())
    }
    fn violations(&self) -> Vec<String> {
        delegate!(self, m => m.violations())
    }
}

impl Memory for AnyMemory {
    fn mmap(&mut self, spec: &MmapSpec) -> Result<u64, MemError> {
        delegate!(self, m => Memory::mmap(m, spec))
    }
    fn munmap(&mut self, name: &str, range: Option<(u64, u64)>) -> Result<(), MemError> {
        delegate!(self, m => Memory::munmap(m, name, range))
    }
    fn region_vaddr(&self, name: &str) -> Option<u64> {
        delegate!(self, m => Memory::region_vaddr(m, name))
    }
    fn vaddr_to_phys(&self, vaddr: u64) -> Option<u64> {
        delegate!(self, m => Memory::vaddr_to_phys(m, vaddr))
    }
    fn folio_size(&self, vaddr: u64) -> Option<u64> {
        delegate!(self, m => Memory::folio_size(m, vaddr))
    }
    fn notes(&mut self) -> Vec<String> {
        delegate!(self, m => m.notes())
    }
}
