//! Process memory as the engine sees it, and the vocabulary shared by every memory model.
//!
//! - The consumer traits: `PageSource` (what the engine calls: pin, unpin, is-reserved),
//!   `PageAudit` (what the invariant checker and tests read) and `Memory` (what a trace creates:
//!   mmap, munmap, address lookups).
//! - The vocabulary: `Backing`, `Layout`, `MmapSpec`, `Pinned`, `MmError` (the engine's view of
//!   a failed pin) and `MemError` (a failed mmap/munmap, for a person).
//! - The models: `sim` (deterministic) and `host` (this process's real memory, Linux), with
//!   `AnyMemory` to pick one at run time. `batch` is the pin batch both fill, `vma` the vma map
//!   both split, `pincount` the pin counts both keep; what Linux tells of memory is `crate::procfs`.
//!
//! What every `PageSource` keeps true: a pfn it calls reserved is never counted in
//! `pin_counts` (and never unpinned); `pinned_pages() == pin_counts().total()`; a pin call puts
//! at most `batch.page_limit` pages in the batch and no entry past `batch.is_full`; an unpin of
//! a page that was not pinned changes nothing and is recorded in `violations`.

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

use pincount::PinCounts;

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

    /// The granule of `mmap` sizes, `at=` and `munmap` offsets: the huge page size for hugetlb
    /// (the kernel maps and unmaps whole huge pages), 4K otherwise (a THP may be split).
    pub fn granule(self) -> u64 {
        match self {
            Backing::Hugetlb2m | Backing::Hugetlb1g => self.unit(),
            _ => crate::PAGE_SIZE,
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
    /// The region's name (what traces and `munmap` call it).
    pub name: String,
    /// Bytes; a multiple of `backing.granule()`.
    pub size: u64,
    /// What backs it.
    pub backing: Backing,
    /// Its physical placement (the model honours it; real memory is placed by the kernel).
    pub layout: Layout,
    /// The seed of a scattered layout's permutation.
    pub seed: u64,
    /// `PROT_WRITE`; a read-only region is never written, so it maps the zero page.
    pub writable: bool,
    /// A fixed vaddr (`MAP_FIXED_NOREPLACE`); `None` lets the allocator choose.
    pub at: Option<u64>,
    /// A fixed physical address (the model only).
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
    Pfnmap {
        /// The first pfn.
        pfn: u64,
        /// Pages from `pfn`.
        npages: u64,
    },
}

/// What `PageSource::pin` returns.
pub type PinResult = Result<Pinned, MmError>;

/// Why pinning failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MmError {
    /// No vma holds `vaddr` (GUP's -EFAULT).
    #[error("nothing is mapped at vaddr {vaddr:#x}")]
    NotMapped {
        /// The first page that could not be pinned.
        vaddr: u64,
    },
    /// A write pin of a read-only mapping.
    #[error(
        "vaddr {vaddr:#x} is in a read-only mapping ({name}) and the map asks for device writes"
    )]
    ReadOnly {
        /// The first page that could not be pinned.
        vaddr: u64,
        /// The region it belongs to.
        name: String,
    },
    /// A fault injector made the pin fail.
    #[error("injected failure of the pin at vaddr {vaddr:#x}")]
    Injected {
        /// The vaddr of the pin call.
        vaddr: u64,
    },
}

/// Pins user memory: what the engine's map and unmap paths call.
pub trait PageSource: PageAudit {
    /// `vaddr_get_pfns`: pin up to `npages` pages from `vaddr` (at most `batch.page_limit`, and
    /// no entry past `batch.is_full`) into `batch` (which is empty), for device writes if
    /// `write`. Stops early at a page it cannot pin; fails only if it cannot pin the first one.
    /// A `VM_PFNMAP` mapping returns `Pinned::Pfnmap` instead.
    fn pin(&mut self, vaddr: u64, npages: u64, write: bool, batch: &mut Batch) -> PinResult;

    /// Drop one pin from each of `npages` pages from `pfn`; reserved pfns are skipped when
    /// `skip_reserved`. `dirty` marks the pages dirty (the device could write them). Returns the
    /// pages unpinned.
    fn unpin(&mut self, pfn: u64, npages: u64, dirty: bool, skip_reserved: bool) -> u64;

    /// Whether `pfn` is reserved (`is_invalid_reserved_pfn`).
    fn is_reserved(&self, pfn: u64) -> bool;

    /// Pins held in total (the sum of every page's pin count): what a replay reports.
    fn pinned_pages(&self) -> u64 {
        self.pin_counts().total()
    }

    /// The kernel whose behaviour to reproduce where the memory side differs: on 6.1 a
    /// never-written read-only page (the shared zero page) is a reserved pfn, never charged.
    fn set_kernel_profile(&mut self, _profile: crate::KernelProfile) {}

    /// The engine finished a map or an unmap: work the source deferred (e.g. `munlock` of pages
    /// whose last pin dropped) may be done now, in bulk.
    fn flush(&mut self) {}
}

/// What the invariant checker and the tests read from a page source; the map and unmap paths
/// never call it. A supertrait of `PageSource`, so whatever the engine pins through it can audit.
pub trait PageAudit {
    /// The pin counts by pfn (non-reserved pages only).
    fn pin_counts(&self) -> &PinCounts;

    /// Every pinned range as `(first pfn, pages, pin count)`, in pfn order, adjacent ranges of
    /// equal count merged.
    fn pin_ranges(&self) -> Vec<(u64, u64, u32)> {
        self.pin_counts().ranges()
    }

    /// Reserved pfn ranges `[start, end)` (device MMIO), normalized: sorted, disjoint, not
    /// touching (see [`normalize_ranges`]).
    fn reserved_pfn_ranges(&self) -> Vec<(u64, u64)> {
        Vec::new()
    }

    /// Problems the source noticed (an unpin of a page that was not pinned).
    fn violations(&self) -> Vec<String> {
        Vec::new()
    }
}

/// `ranges` (`[start, end)` pfn ranges, any order, overlaps allowed) sorted by start with
/// overlapping and touching ranges merged and empty ones dropped: the form
/// [`unreserved_pieces`] and [`in_ranges`] search in O(log n).
pub fn normalize_ranges(mut ranges: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    ranges.retain(|&(s, e)| s < e);
    ranges.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (s, e) in ranges {
        match out.last_mut() {
            Some(last) if s <= last.1 => last.1 = last.1.max(e),
            _ => out.push((s, e)),
        }
    }
    out
}

/// Whether `pfn` lies in one of `ranges` (normalized, see [`normalize_ranges`]).
pub fn in_ranges(pfn: u64, ranges: &[(u64, u64)]) -> bool {
    let i = ranges.partition_point(|&(_, e)| e <= pfn);
    ranges.get(i).is_some_and(|&(s, _)| s <= pfn)
}

/// Calls `f(first pfn, pages)` for each piece of `[pfn, pfn + npages)` outside the `reserved`
/// ranges (normalized, see [`normalize_ranges`]), in pfn order: a binary search and then only
/// the ranges that meet the span, so a check of many leaves against many device BARs costs
/// O(log BARs) per leaf.
pub fn for_each_unreserved(
    pfn: u64,
    npages: u64,
    reserved: &[(u64, u64)],
    mut f: impl FnMut(u64, u64),
) {
    let end = pfn.saturating_add(npages);
    let mut at = pfn;
    let first = reserved.partition_point(|&(_, e)| e <= pfn);
    for &(rs, re) in &reserved[first..] {
        if rs >= end {
            break;
        }
        if rs > at {
            f(at, rs - at);
        }
        at = at.max(re);
        if at >= end {
            return;
        }
    }
    if at < end {
        f(at, end - at);
    }
}

/// `[pfn, pfn + npages)` minus the `reserved` pfn ranges (normalized, see
/// [`normalize_ranges`]), as `(first pfn, pages)` pieces in pfn order: what an unpin with
/// `skip_reserved` drops, and what the invariant checker expects pinned.
pub fn unreserved_pieces(pfn: u64, npages: u64, reserved: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut v = Vec::new();
    for_each_unreserved(pfn, npages, reserved, |s, n| v.push((s, n)));
    v
}

/// The error for a missing CAP_SYS_ADMIN (pfn 0 from pagemap).
pub const NO_CAP_SYS_ADMIN: &str = "reading physical page numbers from /proc/PID/pagemap needs \
     CAP_SYS_ADMIN: without it the kernel reports pfn 0 for every present page (run as root \
     with CAP_SYS_ADMIN, or use --memory sim)";

/// An error of a memory model's own operations: bad `mmap`/`munmap` input (both models), or an
/// OS failure (`host`). Each says what to change.
#[derive(Debug, thiserror::Error)]
pub enum MemError {
    /// The name is taken.
    #[error("a region named {0:?} exists already (munmap it first or choose another name)")]
    Exists(String),
    /// No region has this name (or it was munmapped).
    #[error("no region named {0:?}")]
    NoSuchRegion(String),
    /// The size is zero or not a multiple of the backing's unit.
    #[error(
        "size {size:#x} of {name:?} must be a non-zero multiple of {unit:#x} for backing {}",
        .backing.name()
    )]
    BadSize {
        /// The region.
        name: String,
        /// The size asked.
        size: u64,
        /// What it must be a multiple of.
        unit: u64,
        /// The backing asked.
        backing: Backing,
    },
    /// `at=` or `phys=` is not aligned as the backing needs.
    #[error("{what} {value:#x} of {name:?} must be aligned to {align:#x}")]
    Unaligned {
        /// The region.
        name: String,
        /// `at` or `phys`.
        what: &'static str,
        /// The address asked.
        value: u64,
        /// The alignment needed.
        align: u64,
    },
    /// `[start, end)` overlaps memory already mapped.
    #[error(
        "region {name:?} at [{start:#x}, {end:#x}) overlaps existing memory; choose another at="
    )]
    Overlap {
        /// The region.
        name: String,
        /// Its first address.
        start: u64,
        /// Its end (exclusive).
        end: u64,
    },
    /// `phys=` asks for frames another region already has (RAM or a BAR).
    #[error(
        "phys={start:#x} of {name:?}: the physical range [{start:#x}, {end:#x}) overlaps region \
         {other:?} at [{other_start:#x}, {other_end:#x}); choose another phys= or leave it out"
    )]
    PhysOverlap {
        /// The region.
        name: String,
        /// Its first physical address.
        start: u64,
        /// Its physical end (exclusive).
        end: u64,
        /// The region whose frames it would alias.
        other: String,
        /// That region's physical span, first byte.
        other_start: u64,
        /// That region's physical span, end (exclusive).
        other_end: u64,
    },
    /// Larger than the simulated memory supports.
    #[error(
        "size {size:#x} of {name:?} is above {max:#x} (128 TiB), the largest region the \
         simulated memory holds"
    )]
    TooLarge {
        /// The region.
        name: String,
        /// The size asked.
        size: u64,
        /// The largest size allowed.
        max: u64,
    },
    /// A BAR cannot be scattered.
    #[error("{0:?}: a pfnmap region is one contiguous BAR; layout=scattered is not possible")]
    ScatteredPfnmap(String),
    /// The munmap range is outside the region or not aligned to its unit.
    #[error("munmap of {name:?}: offset {offset:#x} + size {size:#x} is not inside the region ({region_size:#x} bytes) or not aligned to {unit:#x}")]
    BadMunmap {
        /// The region.
        name: String,
        /// Offset asked, from the region's start.
        offset: u64,
        /// Size asked.
        size: u64,
        /// The region's size.
        region_size: u64,
        /// What offset and size must be multiples of.
        unit: u64,
    },
    /// The region would pass the end of the address space.
    #[error("{name:?} does not fit in the address space (size {size:#x})")]
    NoSpace {
        /// The region.
        name: String,
        /// Its size.
        size: u64,
    },
    /// Real memory has no device BAR to map.
    #[error(
        "{0:?}: backing=pfnmap is device MMIO, and device MMIO needs a real device BAR: use \
         --memory sim"
    )]
    PfnmapNeedsDevice(String),
    /// The hugetlb pool has too few free pages.
    #[error(
        "mmap of {name:?} ({size} bytes of {} huge pages) failed: not enough free huge pages \
         ({} free); reserve them with `echo N > \
         /sys/kernel/mm/hugepages/hugepages-{}kB/nr_hugepages`",
        .backing.name(),
        .free.map_or_else(|| "?".to_string(), |n| n.to_string()),
        .backing.unit() >> 10
    )]
    NoHugePages {
        /// The region.
        name: String,
        /// Its size in bytes.
        size: u64,
        /// `hugetlb-2m` or `hugetlb-1g`.
        backing: Backing,
        /// Free pages of that size (`None`: unreadable).
        free: Option<u64>,
    },
    /// `mmap` failed otherwise.
    #[error("mmap of {name:?} ({size} bytes): {err}")]
    Mmap {
        /// The region.
        name: String,
        /// Its size in bytes.
        size: u64,
        /// What the kernel said.
        err: std::io::Error,
    },
    /// `madvise` (huge-page policy) failed.
    #[error("madvise({advice}) of {name:?}: {err}")]
    Madvise {
        /// The region.
        name: String,
        /// The advice, as `sys::Advice` names it.
        advice: String,
        /// What the kernel said.
        err: std::io::Error,
    },
    /// Faulting the region in failed.
    #[error("faulting in {name:?}: {err}")]
    Populate {
        /// The region.
        name: String,
        /// What the kernel said.
        err: std::io::Error,
    },
    /// `munmap` of `[start, end)` failed.
    #[error("munmap of [{start:#x}, {end:#x}) of {name:?}: {err}")]
    Munmap {
        /// The region.
        name: String,
        /// First address.
        start: u64,
        /// End (exclusive).
        end: u64,
        /// What the kernel said.
        err: std::io::Error,
    },
    /// `/proc/self/pagemap` cannot be opened.
    #[error("cannot open /proc/self/pagemap: {0}")]
    OpenPagemap(std::io::Error),
    /// `/proc/kpageflags` cannot be opened (it needs root).
    #[error(
        "cannot open /proc/kpageflags ({0}): it needs root with CAP_SYS_ADMIN (or use --memory \
         sim)"
    )]
    OpenKpageflags(std::io::Error),
    /// A step of the start-up probe (one page mapped, written, looked up) failed.
    #[error("{step}: {err}")]
    Probe {
        /// What was being done.
        step: &'static str,
        /// What the kernel said.
        err: std::io::Error,
    },
    /// The probe page was written but pagemap says it is not present.
    #[error("the probe page is not present in /proc/self/pagemap after writing it")]
    ProbeAbsent,
    /// Pagemap shows pfn 0: the process lacks CAP_SYS_ADMIN.
    #[error("{}", NO_CAP_SYS_ADMIN)]
    NoCapSysAdmin,
}

impl MemError {
    /// Whether the cure is root with CAP_SYS_ADMIN (pagemap shows no pfns, or kpageflags is
    /// closed).
    pub fn needs_cap_sys_admin(&self) -> bool {
        matches!(self, MemError::NoCapSysAdmin | MemError::OpenKpageflags(_))
    }
}

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

#[cfg(test)]
mod tests {
    use super::{in_ranges, normalize_ranges, unreserved_pieces};

    #[test]
    fn ranges_normalize_to_sorted_disjoint_ranges() {
        assert_eq!(
            normalize_ranges(vec![(0x108, 0x10a), (0x0, 0x102), (0x102, 0x104), (5, 5)]),
            vec![(0x0, 0x104), (0x108, 0x10a)]
        );
        let r = normalize_ranges(vec![(0x104, 0x108), (0x106, 0x10c), (0x110, 0x120)]);
        assert_eq!(r, vec![(0x104, 0x10c), (0x110, 0x120)]);
        assert!(!in_ranges(0x103, &r));
        assert!(in_ranges(0x104, &r));
        assert!(in_ranges(0x10b, &r));
        assert!(!in_ranges(0x10c, &r));
        assert!(in_ranges(0x11f, &r));
        assert!(!in_ranges(0x120, &r));
    }

    #[test]
    fn unreserved_pieces_skip_every_reserved_range() {
        assert_eq!(unreserved_pieces(0x100, 16, &[]), vec![(0x100, 16)]);
        let r = normalize_ranges(vec![(0x108, 0x10a), (0x0, 0x102)]);
        assert_eq!(
            unreserved_pieces(0x100, 16, &r),
            vec![(0x102, 6), (0x10a, 6)]
        );
        assert_eq!(unreserved_pieces(0x100, 16, &[(0x0, 0x200)]), vec![]);
        let r = normalize_ranges(vec![(0x104, 0x108), (0x106, 0x10c), (0x110, 0x120)]);
        assert_eq!(
            unreserved_pieces(0x100, 16, &r),
            vec![(0x100, 4), (0x10c, 4)]
        );
        // At the top of the pfn space.
        assert_eq!(
            unreserved_pieces(u64::MAX - 4, 4, &[(u64::MAX - 2, u64::MAX)]),
            vec![(u64::MAX - 4, 2)]
        );
    }

    #[test]
    fn a_leaf_among_many_bars_costs_a_search() {
        // 100,000 one-page BARs, every other pfn: a 16-page span meets 8 of them.
        let bars: Vec<(u64, u64)> = (0..100_000u64).map(|i| (2 * i + 1, 2 * i + 2)).collect();
        let r = normalize_ranges(bars);
        assert_eq!(r.len(), 100_000);
        let pieces = unreserved_pieces(1000, 16, &r);
        assert_eq!(pieces.len(), 8);
        assert!(pieces.iter().all(|&(s, n)| s % 2 == 0 && n == 1));
    }
}
