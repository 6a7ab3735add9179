//! An IOMMU, as the VFIO type1 engine sees one: a translation table with a page-size bitmap and an
//! aperture, `map` (all or nothing, split into the largest page sizes that alignment allows, as the
//! kernel's `iommu_map` does), `unmap` (a large leaf unmaps whole, so it may remove more than asked),
//! `iova_to_phys`, and an IOTLB modelled by a gather and `iotlb_sync` (stale ranges), with an
//! optional cache model (`iotlb`) that a device's accesses (`Domain::access`) go through.
//!
//! It knows nothing of VFIO, processes or pinning. The page-size split (`pgsize::iommu_pgsize`) is
//! written once, here, for every format; the formats (`format`) only store leaves, in their real
//! hardware encodings (Intel VT-d second-level tables, ARM VMSAv8-64 stage-1 tables) or, for
//! `mock`, in a sorted map that accepts any page-size bitmap.
//!
//! The IOTLB model costs the map/unmap path nothing while it is off: `map` never looks at it,
//! and a synchronous `unmap` leaves its common path (no stale range, no model: the flush has
//! nothing to forget, so no span is computed) only for an out-of-line one that does the work.
//!
//! Ranges follow `addr`'s convention: `last` is inclusive, `end` exclusive. The domain's
//! aperture, the stale (unflushed) IOTLB ranges and the gather are `IovaRange`s inside; the
//! public accessors keep `(start, last)` pairs.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod addr;
pub mod dma_pattern;
pub mod errno;
pub mod fault;
pub mod format;
pub mod iotlb;
pub mod pgsize;

use std::sync::Arc;

pub use addr::{IovaRange, Pages, Pfn, SZ_16K, SZ_1G, SZ_2M, SZ_32M, SZ_4K, SZ_512M, SZ_64K};
pub use errno::Errno;
pub use fault::{FaultInjector, FaultPoint};
pub use format::{Format, Granule};
pub use iotlb::{Access, Iotlb, IotlbConfig, IotlbStats};

/// The CPU page size the engine pins in.
pub const PAGE_SHIFT: u32 = 12;
/// 4 KiB.
pub const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;

/// Access permissions of a mapping, as the kernel's `IOMMU_READ`/`IOMMU_WRITE`/`IOMMU_CACHE`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Prot(pub u8);

impl Prot {
    /// No access (not encodable on x86_64).
    pub const NONE: Prot = Prot(0);
    /// The device may read.
    pub const READ: Prot = Prot(1);
    /// The device may write.
    pub const WRITE: Prot = Prot(2);
    /// Cache-coherent (snooped) access; type1 adds it to every map.
    pub const CACHE: Prot = Prot(4);
    /// READ and WRITE.
    pub const RW: Prot = Prot(3);

    /// Whether every bit of `other` is set.
    pub fn contains(self, other: Prot) -> bool {
        self.0 & other.0 == other.0
    }
    /// The bits of both.
    pub fn union(self, other: Prot) -> Prot {
        Prot(self.0 | other.0)
    }
    /// READ and WRITE only.
    pub fn rw_bits(self) -> Prot {
        Prot(self.0 & 3)
    }
}

/// One leaf of a page table: a naturally aligned block of `size` bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leaf {
    /// The first IOVA the leaf translates (aligned to `size`).
    pub iova: u64,
    /// The physical address `iova` translates to (aligned to `size`).
    pub paddr: u64,
    /// The leaf's page size in bytes.
    pub size: u64,
    /// The permissions decoded from the entry (READ/WRITE only).
    pub prot: Prot,
}

/// A raw page-table entry as the hardware would read it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pte {
    /// Level in the format's own numbering: x86_64 1 = 4K leaf … 4 = PML4 (5 = PML5);
    /// ARM 3 = page … 0 = top. `mock` reports 0.
    pub level: u32,
    /// The 64-bit descriptor.
    pub raw: u64,
}

/// Errors of the IOMMU layer. Each maps to the errno the kernel's IOMMU core or driver returns.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[allow(missing_docs)] // the fields are named after what the messages print
pub enum Error {
    /// A map whose IOVA, physical address or size is not a multiple of the smallest page size.
    #[error("iova {iova:#x}, paddr {paddr:#x} and size {size:#x} must all be aligned to the domain's minimum page size {min:#x}")]
    Unaligned {
        iova: u64,
        paddr: u64,
        size: u64,
        min: u64,
    },
    /// A map outside the aperture `[start, end]` (`end` inclusive, as the kernel's geometry).
    #[error(
        "iova range [{iova:#x}, +{size:#x}) leaves the domain's aperture [{start:#x}, {end:#x}]"
    )]
    OutOfAperture {
        iova: u64,
        size: u64,
        start: u64,
        end: u64,
    },
    /// A map onto a leaf that is already there.
    #[error("iova {iova:#x} is already mapped (unmap it first)")]
    Exists { iova: u64 },
    /// A physical address the format's descriptors cannot hold.
    #[error("physical range [{paddr:#x}, +{size:#x}) is beyond what the format can address (up to {max:#x})")]
    PaddrOutOfRange { paddr: u64, size: u64, max: u64 },
    /// Permissions the format cannot encode.
    #[error(
        "the format cannot encode a mapping with permissions {prot:?} (neither READ nor WRITE)"
    )]
    BadProt { prot: Prot },
    /// A page-table page could not be allocated (fault injection).
    #[error("no memory for a page-table page")]
    NoMemory,
    /// An injected failure of a `map_pages` call.
    #[error("injected failure of map_pages at iova {iova:#x}")]
    Injected { iova: u64 },
    /// A page-size bitmap the format does not support.
    #[error("page sizes {requested:#x} are not a non-empty subset of what format {format} supports ({supported:#x})")]
    BadPgsizes {
        format: String,
        requested: u64,
        supported: u64,
    },
    /// A `mock` page size below [`MOCK_MIN_PGSIZE`].
    #[error("page size {pgsize:#x} is below {min:#x} (2 KiB), the smallest page format {format} models: the smallest IOMMU page Linux has is the iommufd selftest mock's (PAGE_SIZE/2); use pgsizes= of 2K or more")]
    PgsizeBelowMin {
        format: String,
        pgsize: u64,
        min: u64,
    },
    /// An empty aperture, or one beyond the format's input-address range.
    #[error("aperture [{start:#x}, {end:#x}] is empty or beyond what format {format} can translate (up to {max:#x})")]
    BadAperture {
        format: String,
        start: u64,
        end: u64,
        max: u64,
    },
    /// A format name `Format::parse` does not know.
    #[error("unknown IOMMU format {0:?} (x86_64, arm64-4k, arm64-16k, arm64-64k, mock)")]
    UnknownFormat(String),
}

impl Error {
    /// The errno the kernel would return for this error.
    pub fn errno(&self) -> Errno {
        match self {
            // BadProt as intel-iommu's __domain_mapping for a mapping without R and W.
            Error::Unaligned { .. }
            | Error::BadPgsizes { .. }
            | Error::PgsizeBelowMin { .. }
            | Error::BadAperture { .. }
            | Error::UnknownFormat(_)
            | Error::BadProt { .. } => Errno::EINVAL,
            // As io-pgtable-arm (`iova >> ias`, `paddr >> oas`).
            Error::OutOfAperture { .. } | Error::PaddrOutOfRange { .. } => Errno::ERANGE,
            Error::Exists { .. } => Errno::EEXIST,
            Error::NoMemory | Error::Injected { .. } => Errno::ENOMEM,
        }
    }
}

/// The smallest page size a `mock` domain accepts: 2 KiB, the iommufd selftest mock's
/// `MOCK_IO_PAGE_SIZE` (PAGE_SIZE/2), the smallest IOMMU page in Linux (hardware drivers start
/// at 4K). The model keeps one entry per mock leaf, so a smaller page would cost memory by the
/// byte mapped (1-byte pages: 16 Mi entries for 16 MiB).
pub const MOCK_MIN_PGSIZE: u64 = 2048;

/// What a domain is built from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainConfig {
    /// The page-table format.
    pub format: Format,
    /// A subset of the format's page sizes (any bitmap for `mock`); `None` = all the format has
    /// (`mock`: 4K|2M|1G).
    pub pgsize_bitmap: Option<u64>,
    /// Inclusive `[start, end]`; `None` = the format's default.
    pub aperture: Option<(u64, u64)>,
}

impl DomainConfig {
    /// A domain of `format` with the format's default page sizes and aperture.
    pub fn new(format: Format) -> Self {
        DomainConfig {
            format,
            pgsize_bitmap: None,
            aperture: None,
        }
    }
}

/// Operation counters of a domain.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// `iommu_map` calls (one per physically contiguous run).
    pub map_calls: u64,
    /// `map_pages` calls (one per run of equal-size leaves).
    pub map_pages_calls: u64,
    /// `iommu_unmap`/`iommu_unmap_fast` calls.
    pub unmap_calls: u64,
    /// IOTLB flushes (`iotlb_sync`, and the flush inside a synchronous `unmap`).
    pub iotlb_flushes: u64,
}

/// The IOTLB gather of the kernel (`struct iommu_iotlb_gather`): the span of IOVA unmapped
/// without a flush, to be flushed by one `iotlb_sync`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Gather {
    /// The smallest range covering every range added since the last sync.
    span: Option<IovaRange>,
}

impl Gather {
    /// An empty gather.
    pub fn new() -> Self {
        Self::default()
    }
    fn add(&mut self, r: IovaRange) {
        self.span = Some(match self.span {
            Some(s) => IovaRange::new(s.start().min(r.start()), s.last().max(r.last()))
                .expect("the hull of two ranges is a range"),
            None => r,
        });
    }
    /// Whether anything waits for a flush.
    pub fn is_pending(&self) -> bool {
        self.span.is_some()
    }
}

/// One `map_pages` request: `count` leaves of `pgsize` bytes from `iova` → `paddr` (both aligned
/// to `pgsize`, `pgsize` one of the table's leaf sizes), all with `prot`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LeafRun {
    pub iova: u64,
    pub paddr: u64,
    pub pgsize: u64,
    pub count: u64,
    pub prot: Prot,
}

/// What a `map_pages` call did: the bytes it installed, and the error that stopped it, if any.
pub(crate) type Mapped = (u64, Result<(), Error>);

/// A page-table implementation of one format. It only stores and removes leaves; the split into
/// page sizes, alignment and aperture checks, counters and the IOTLB are the `Domain`'s.
pub(crate) trait PageTable: Send + std::fmt::Debug {
    /// Install the leaves of `run`. Returns the bytes installed; on error the leaves
    /// installed by this call stay (the caller removes them), as the kernel's `map_pages`.
    /// `faults` is consulted once per table page allocated (`FaultPoint::TableAlloc`).
    fn map_pages(&mut self, run: LeafRun, faults: Option<&FaultInjector>) -> Mapped;
    /// Remove every leaf that intersects `range`, whole; table pages that become empty are
    /// freed. Returns the bytes removed (0 where nothing is mapped).
    fn unmap_range(&mut self, range: IovaRange) -> u64;
    /// As `unmap_range`, also returning the span the removal covers ([`leaf_hull`]: `range`
    /// widened to the leaves holding its ends), which the IOTLB must forget. A table may know
    /// it without the two extra walks the default makes.
    fn unmap_range_span(&mut self, range: IovaRange) -> (u64, IovaRange) {
        let span = leaf_hull(self, range);
        (self.unmap_range(range), span)
    }
    /// The leaf containing `iova`.
    fn translate(&self, iova: u64) -> Option<Leaf>;
    /// The raw leaf entry containing `iova` and its level.
    fn leaf_pte(&self, iova: u64) -> Option<Pte>;
    /// The entries a hardware walk for `iova` reads, root first, down to the leaf or the first
    /// empty entry (which is included, as raw 0). `mock` has no tables: just its leaf, if any.
    fn walk(&self, iova: u64) -> Vec<Pte> {
        self.leaf_pte(iova).into_iter().collect()
    }
    /// The physically contiguous run from `iova`: its physical address and length, at most
    /// `max` bytes, across as many leaves as follow each other physically. `None` when `iova` is
    /// not mapped. (The engine's unmap look-ahead; a table may answer it without re-walking.)
    fn phys_run(&self, iova: u64, max: u64) -> Option<(u64, u64)> {
        let leaf = self.translate(iova)?;
        let phys = leaf.paddr + (iova - leaf.iova);
        let mut len = (leaf.size - (iova - leaf.iova)).min(max);
        while len < max {
            // At the top of the address space (the mock's aperture ends at u64::MAX) there is no
            // next leaf.
            let Some(at) = iova.checked_add(len) else {
                break;
            };
            match self.translate(at) {
                Some(n) if n.paddr + (at - n.iova) == phys + len => {
                    len += (n.size - (at - n.iova)).min(max - len);
                }
                _ => break,
            }
        }
        Some((phys, len))
    }
    /// Every leaf, in IOVA order.
    fn for_each_leaf(&self, f: &mut dyn FnMut(Leaf));
    /// Table pages in use (the root included; 0 for `mock`).
    fn table_pages(&self) -> u64;
    /// Leaves installed, indexed by log2 of the page size.
    fn leaf_counts(&self) -> &[u64; 64];
}

/// `range` widened to whole leaves: from the start of the leaf holding its first byte to the
/// last byte of the leaf holding its last (an end in a hole stays where it is). Leaves are
/// removed whole, so this is what an unmap of `range` removes from the IOTLB's view.
pub(crate) fn leaf_hull<T: PageTable + ?Sized>(table: &T, range: IovaRange) -> IovaRange {
    let start = table
        .translate(range.start())
        .map_or(range.start(), |l| l.iova);
    let last = table
        .translate(range.last())
        .map_or(range.last(), |l| l.iova + (l.size - 1));
    IovaRange::new(start, last).expect("leaf starts are at or before the range's start")
}

/// An IOMMU domain: one translation table with its page sizes, aperture, counters and IOTLB.
#[derive(Debug)]
pub struct Domain {
    format: Format,
    pgsize_bitmap: u64,
    aperture: IovaRange,
    table: Box<dyn PageTable>,
    stats: Stats,
    /// Unmapped IOVA ranges whose IOTLB entries were not flushed yet.
    stale: Vec<IovaRange>,
    faults: Option<Arc<FaultInjector>>,
    /// The IOTLB model, when enabled (`set_iotlb`); `None` keeps it out of map and unmap.
    iotlb: Option<Box<Iotlb>>,
    /// `!stale.is_empty() || iotlb.is_some()`, kept up to date wherever either changes: whether
    /// a synchronous unmap's flush has work, read with one test on its common path.
    flush_work: bool,
}

impl Domain {
    /// A domain of `cfg.format`, checking the page sizes and aperture against the format.
    pub fn new(cfg: DomainConfig) -> Result<Domain, Error> {
        let format = cfg.format;
        if !format.is_valid() {
            return Err(Error::UnknownFormat(format.name()));
        }
        let supported = format.supported_pgsizes();
        let pgsize_bitmap = match cfg.pgsize_bitmap {
            None => format.default_pgsizes(),
            Some(b) => {
                if b == 0 || (format != Format::Mock && b & !supported != 0) {
                    return Err(Error::BadPgsizes {
                        format: format.name(),
                        requested: b,
                        supported,
                    });
                }
                if format == Format::Mock && b & (MOCK_MIN_PGSIZE - 1) != 0 {
                    return Err(Error::PgsizeBelowMin {
                        format: format.name(),
                        pgsize: 1 << b.trailing_zeros(),
                        min: MOCK_MIN_PGSIZE,
                    });
                }
                b
            }
        };
        let max = format.max_iova();
        let (start, last) = cfg.aperture.unwrap_or((0, max));
        let Some(aperture) = IovaRange::new(start, last).filter(|_| last <= max) else {
            return Err(Error::BadAperture {
                format: format.name(),
                start,
                end: last,
                max,
            });
        };
        let table = format::new_table(format, pgsize_bitmap);
        Ok(Domain {
            format,
            pgsize_bitmap,
            aperture,
            table,
            stats: Stats::default(),
            stale: Vec::new(),
            faults: None,
            iotlb: None,
            flush_work: false,
        })
    }

    /// Share a fault injector: `map_pages` calls and table allocations become injectable.
    pub fn set_faults(&mut self, faults: Option<Arc<FaultInjector>>) {
        self.faults = faults;
    }

    /// Enables the IOTLB model with `cfg` (empty: it starts cold), or disables it with `None`.
    /// While enabled, every flush (`unmap`, `iotlb_sync`) drops the entries its range covers.
    pub fn set_iotlb(&mut self, cfg: Option<&IotlbConfig>) -> Result<(), iotlb::ConfigError> {
        self.iotlb = cfg.map(Iotlb::new).transpose()?.map(Box::new);
        self.update_flush_work();
        Ok(())
    }

    /// The IOTLB model, when enabled.
    pub fn iotlb(&self) -> Option<&Iotlb> {
        self.iotlb.as_deref()
    }

    /// Zeroes the IOTLB's counters, keeping its entries (after a warm-up).
    pub fn reset_iotlb_stats(&mut self) {
        if let Some(t) = self.iotlb.as_deref_mut() {
            t.reset_stats();
        }
    }

    /// A device's access to `iova`: through the IOTLB when enabled (walking the table on a
    /// miss), else a walk every time (reported as a miss). A stale entry (unmapped, not yet
    /// synced) still hits, as on hardware.
    pub fn access(&mut self, iova: u64) -> Access {
        let table = &self.table;
        match self.iotlb.as_deref_mut() {
            Some(t) => t.access(iova, |i| table.translate(i)),
            None => match table.translate(iova) {
                Some(l) => Access::Miss(l.paddr + (iova - l.iova)),
                None => Access::Fault,
            },
        }
    }

    /// The page-table format.
    pub fn format(&self) -> Format {
        self.format
    }
    /// The page sizes leaves may have.
    pub fn pgsize_bitmap(&self) -> u64 {
        self.pgsize_bitmap
    }
    /// The smallest page size.
    pub fn min_pgsize(&self) -> u64 {
        1 << self.pgsize_bitmap.trailing_zeros()
    }
    /// Inclusive `[start, last]` of translatable IOVA.
    pub fn aperture(&self) -> (u64, u64) {
        self.aperture.pair()
    }
    /// The reserved regions the IOMMU driver reports for a device in this domain (the MSI window).
    pub fn reserved_regions(&self) -> Vec<(u64, u64)> {
        self.format.default_reserved()
    }
    /// The operation counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }
    /// Table pages in use, the root included (0 for `mock`).
    pub fn table_pages(&self) -> u64 {
        self.table.table_pages()
    }
    /// `(page size, leaves)` for every page size of the bitmap, smallest first (zeros included).
    pub fn leaves_by_size(&self) -> Vec<(u64, u64)> {
        let counts = self.table.leaf_counts();
        (0..64)
            .filter(|&s| self.pgsize_bitmap & (1 << s) != 0)
            .map(|s| (1u64 << s, counts[s as usize]))
            .collect()
    }
    /// Leaves of exactly `size` bytes.
    pub fn leaves_of(&self, size: u64) -> u64 {
        if size.is_power_of_two() {
            self.table.leaf_counts()[size.trailing_zeros() as usize]
        } else {
            0
        }
    }
    /// All leaves.
    pub fn total_leaves(&self) -> u64 {
        self.table.leaf_counts().iter().sum()
    }

    /// `iommu_map`: map the physically contiguous run `[iova, iova+size)` → `paddr`, split into
    /// page sizes by `iommu_pgsize`, one `map_pages` call per run of equal-size leaves. All or
    /// nothing: on any error what this call installed is removed again.
    pub fn map(&mut self, iova: u64, paddr: u64, size: u64, prot: Prot) -> Result<(), Error> {
        self.stats.map_calls += 1;
        let min = self.min_pgsize();
        if (iova | paddr | size) & (min - 1) != 0 || size == 0 {
            return Err(Error::Unaligned {
                iova,
                paddr,
                size,
                min,
            });
        }
        match IovaRange::from_start_size(iova, size) {
            Some(r) if self.aperture.covers(r) => {}
            _ => {
                return Err(Error::OutOfAperture {
                    iova,
                    size,
                    start: self.aperture.start(),
                    end: self.aperture.last(),
                });
            }
        }
        let max_pa = self.format.max_paddr();
        if paddr.checked_add(size - 1).is_none_or(|e| e > max_pa) {
            return Err(Error::PaddrOutOfRange {
                paddr,
                size,
                max: max_pa,
            });
        }
        // Borrowed, not cloned: an `Arc` clone per call is two atomic operations per map.
        let faults = self.faults.as_deref();
        let (mut cur, mut pa, mut left) = (iova, paddr, size);
        while left != 0 {
            let Some((pgsize, count)) = pgsize::iommu_pgsize(self.pgsize_bitmap, cur, pa, left)
            else {
                // Unreachable after the alignment check above; treated as the kernel's EINVAL.
                self.rollback(iova, size - left);
                return Err(Error::Unaligned {
                    iova,
                    paddr,
                    size,
                    min,
                });
            };
            self.stats.map_pages_calls += 1;
            if faults.is_some_and(|f| f.hit(FaultPoint::IommuMap)) {
                self.rollback(iova, size - left);
                return Err(Error::Injected { iova: cur });
            }
            let run = LeafRun {
                iova: cur,
                paddr: pa,
                pgsize,
                count,
                prot,
            };
            let (mapped, res) = self.table.map_pages(run, faults);
            left -= mapped;
            if let Err(e) = res {
                self.rollback(iova, size - left);
                return Err(e);
            }
            cur = cur.wrapping_add(mapped);
            pa = pa.wrapping_add(mapped);
        }
        Ok(())
    }

    /// Remove the `done` bytes a failed map installed from `iova`.
    fn rollback(&mut self, iova: u64, done: u64) {
        if let Some(installed) = IovaRange::from_start_size(iova, done) {
            self.table.unmap_range(installed);
        }
    }

    /// Unmap without flushing: `(span, removed)` where `span` covers the removed leaves when
    /// `want_span` (up to two walks, unless the table knows it), else is just
    /// `[iova, iova + size - 1]`.
    fn unmap_nosync(&mut self, iova: u64, size: u64, want_span: bool) -> Option<(IovaRange, u64)> {
        self.stats.unmap_calls += 1;
        let min = self.min_pgsize();
        if size == 0 || (iova | size) & (min - 1) != 0 {
            return None;
        }
        let asked = IovaRange::from_start_size(iova, size)?;
        // Leaves are removed whole: the span the IOTLB must forget runs from the start of the
        // leaf holding `iova` to the last byte of the leaf holding `last` (`leaf_hull`).
        let (removed, span) = if want_span {
            self.table.unmap_range_span(asked)
        } else {
            (self.table.unmap_range(asked), asked)
        };
        if removed == 0 {
            return None;
        }
        Some((span, removed))
    }

    /// `iommu_unmap`: remove every leaf intersecting `[iova, iova+size)`, whole, then flush the
    /// IOTLB. Returns the bytes removed, which exceed `size` when a larger leaf is cut into;
    /// 0 where nothing is mapped or the range is not aligned to the minimum page size.
    pub fn unmap(&mut self, iova: u64, size: u64) -> u64 {
        // The span only matters to forget stale ranges and cached translations: with neither
        // (no deferred flush pending, the IOTLB model off) the flush has nothing to do.
        debug_assert_eq!(
            self.flush_work,
            !self.stale.is_empty() || self.iotlb.is_some()
        );
        if self.flush_work {
            return self.unmap_flush_span(iova, size);
        }
        match self.unmap_nosync(iova, size, false) {
            None => 0,
            Some((_, removed)) => {
                self.stats.iotlb_flushes += 1;
                removed
            }
        }
    }

    /// `unmap` where the flush has work: stale ranges to forget or the IOTLB model to
    /// invalidate. Out of line, so that neither weighs on the common synchronous unmap.
    #[cold]
    #[inline(never)]
    fn unmap_flush_span(&mut self, iova: u64, size: u64) -> u64 {
        match self.unmap_nosync(iova, size, true) {
            None => 0,
            Some((span, removed)) => {
                self.stats.iotlb_flushes += 1;
                self.stale.retain(|s| !s.overlaps(span));
                self.update_flush_work();
                self.iotlb_invalidate(span);
                removed
            }
        }
    }

    /// Recompute `flush_work` after `stale` or `iotlb` changed.
    fn update_flush_work(&mut self) {
        self.flush_work = !self.stale.is_empty() || self.iotlb.is_some();
    }

    /// Drop the IOTLB model's entries inside `span` (nothing when the model is off).
    #[cold]
    #[inline(never)]
    fn iotlb_invalidate(&mut self, span: IovaRange) {
        if let Some(t) = self.iotlb.as_deref_mut() {
            t.invalidate(span);
        }
    }

    /// `iommu_unmap_fast`: as `unmap`, but the IOTLB flush is deferred into `gather`; until
    /// `iotlb_sync` the range stays stale (a device could still translate through it).
    pub fn unmap_fast(&mut self, iova: u64, size: u64, gather: &mut Gather) -> u64 {
        match self.unmap_nosync(iova, size, true) {
            None => 0,
            Some((span, removed)) => {
                gather.add(span);
                self.stale.push(span);
                self.flush_work = true;
                removed
            }
        }
    }

    /// `iommu_iotlb_sync`: flush what `gather` collected.
    pub fn iotlb_sync(&mut self, gather: &mut Gather) {
        let Some(flushed) = gather.span.take() else {
            return;
        };
        self.stats.iotlb_flushes += 1;
        self.stale.retain(|s| !flushed.covers(*s));
        self.update_flush_work();
        if self.iotlb.is_some() {
            self.iotlb_invalidate(flushed);
        }
    }

    /// Whether any of `[iova, iova+size)` was unmapped and not yet flushed from the IOTLB.
    pub fn iotlb_stale(&self, iova: u64, size: u64) -> bool {
        let last = iova.saturating_add(size.saturating_sub(1));
        let Some(asked) = IovaRange::new(iova, last) else {
            return false;
        };
        self.stale.iter().any(|s| s.overlaps(asked))
    }

    /// `iommu_iova_to_phys`: the physical address of any byte inside a leaf.
    pub fn iova_to_phys(&self, iova: u64) -> Option<u64> {
        self.table
            .translate(iova)
            .map(|l| l.paddr + (iova - l.iova))
    }

    /// The leaf containing `iova`.
    pub fn translate(&self, iova: u64) -> Option<Leaf> {
        self.table.translate(iova)
    }

    /// The raw descriptor of the leaf containing `iova`.
    pub fn leaf_pte(&self, iova: u64) -> Option<Pte> {
        self.table.leaf_pte(iova)
    }

    /// The raw entries a hardware walk for `iova` reads, root first: table descriptors, then the
    /// leaf or the empty entry where the walk stops. An IOVA beyond the format's input-address
    /// range reads nothing. For `mock`, just the leaf.
    pub fn walk(&self, iova: u64) -> Vec<Pte> {
        self.table.walk(iova)
    }

    /// The physically contiguous run starting at `iova`, at most `max` bytes: `(phys, len)`.
    /// Inside a leaf physical addresses are contiguous, so this equals the kernel's page-by-page
    /// `iova_to_phys` look-ahead in `vfio_unmap_unpin`.
    pub fn phys_run(&self, iova: u64, max: u64) -> Option<(u64, u64)> {
        if max == 0 {
            return None;
        }
        self.table.phys_run(iova, max)
    }

    /// Every leaf in IOVA order.
    pub fn for_each_leaf(&self, f: &mut dyn FnMut(Leaf)) {
        self.table.for_each_leaf(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `flush_work` follows the stale ranges and the IOTLB model through every change, and a
    /// synchronous unmap still forgets stale ranges and cached entries when it has work.
    #[test]
    fn flush_work_tracks_stale_ranges_and_the_iotlb_model() {
        let mut d = Domain::new(DomainConfig::new(Format::X86_64 { levels: 4 })).unwrap();
        d.map(0, 1 << 32, 4 * SZ_4K, Prot::RW).unwrap();
        assert!(!d.flush_work);
        let mut g = Gather::new();
        assert_eq!(d.unmap_fast(0, SZ_4K, &mut g), SZ_4K);
        assert!(d.flush_work && d.iotlb_stale(0, SZ_4K));
        // A synchronous unmap over the stale page flushes it: nothing stale is left.
        assert_eq!(d.unmap(0, 2 * SZ_4K), SZ_4K);
        assert!(!d.iotlb_stale(0, SZ_4K));
        assert!(!d.flush_work);
        assert_eq!(d.unmap_fast(2 * SZ_4K, SZ_4K, &mut g), SZ_4K);
        assert!(d.flush_work);
        d.iotlb_sync(&mut g);
        assert!(!d.flush_work && !d.iotlb_stale(2 * SZ_4K, SZ_4K));
        // The model on: every unmap has work, and drops the cached translation.
        d.set_iotlb(Some(&IotlbConfig::split(SZ_4K, 4, 4))).unwrap();
        assert!(d.flush_work);
        assert_eq!(d.access(3 * SZ_4K), Access::Miss((1 << 32) + 3 * SZ_4K));
        assert!(d.iotlb().unwrap().holds(3 * SZ_4K));
        assert_eq!(d.unmap(3 * SZ_4K, SZ_4K), SZ_4K);
        assert!(!d.iotlb().unwrap().holds(3 * SZ_4K));
        d.set_iotlb(None).unwrap();
        assert!(!d.flush_work);
        assert_eq!(d.stats().iotlb_flushes, 3);
    }
}
