//! Process memory as the engine sees it, and the vocabulary shared by every memory model.
//!
//! - The consumer traits: `PageSource` (what the engine calls: pin, unpin, is-reserved),
//!   `PageAudit` (what the invariant checker and tests read) and `Memory` (what a trace creates:
//!   mmap, munmap, address lookups).
//! - The vocabulary: `Backing`, `Layout`, `MmapSpec`, `Pinned`, `MmError` (the engine's view of a
//!   failed pin) and `MemError` (a failed mmap/munmap, for a person).
//! - The models: `sim` (deterministic), `host` (this process's real memory, Linux), and
//!   `AnyMemory` to pick one at run time. `batch` is the pin batch both fill, `vma` the vma map
//!   both split, `pincount` the pin counts both keep.

mod any;
mod batch;
#[cfg(target_os = "linux")]
pub mod host;
pub mod pincount;
pub mod sim;
mod vma;

pub use any::AnyMemory;
pub use batch::{Batch, PfnRun, PinMode};
pub(crate) use vma::{cut_vmas, vma_at, Vma, Vmas};

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
