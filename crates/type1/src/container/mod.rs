//! `Container`: one VFIO container with the type1 backend set (spec §1–§6).
//!
//! Data model (DESIGN.md): the DMA tree holds one `Dma` per successful MAP_DMA, keyed by IOVA,
//! never merged and never split. The pfns of a mapping are not stored: the first domain's page
//! table is the record, read back with `translate` on unmap. Pins and locked memory are taken once
//! per mapping, whatever the number of domains.
//!
//! Invariants (checked by `check_invariants`, asserted by the tests after every operation):
//! 1. A failed call changes nothing (`snapshot` before == after).
//! 2. No pfn is unpinned while a domain still translates to it or before the IOTLB flush that
//!    covers its unmap (checked at every unpin, recorded as a violation).
//! 3. Locked pages = the non-reserved pages pinned per mapping (a page mapped twice counts twice).
//! 4. Every domain translates exactly the mappings' IOVA ranges, to the same pfns, with the
//!    mappings' permissions.
//! 5. Each pfn's pin count = the number of (mapping, page) pairs that map it.

use std::sync::Arc;

use iommu::{Domain, DomainConfig, FaultInjector, Format, IovaRange, Leaf, Prot};

use crate::error::Error;
use crate::mm::sim::SimMm;
use crate::mm::PageSource;
use crate::profile::{Config, Strategy};
use crate::PAGE_SIZE;

mod account;
mod check;
mod dirty;
mod domains;
mod map;
mod pins;
mod tree;
mod unmap;
mod v3_11;

pub use account::LockedAccount;
pub use pins::{ExternalPins, UnmapNotice, VfioPfn, VFIO_PIN_PAGES_MAX_ENTRIES};
pub use tree::DmaTree;
pub use unmap::TLB_SYNC_MAX;
// The request structures and constants, where callers found them before `uapi` existed.
use crate::uapi::{encode_info, InfoRequest, InfoState};
pub use crate::uapi::{
    BitmapArg, InfoReply, MapDma, UnmapDma, UnmapReply, DIRTY_BITMAP_SIZE_MAX,
    DIRTY_FLAG_GET_BITMAP, DIRTY_FLAG_START, DIRTY_FLAG_STOP, MAP_FLAG_READ, MAP_FLAG_VADDR,
    MAP_FLAG_WRITE, UNMAP_FLAG_ALL, UNMAP_FLAG_GET_DIRTY_BITMAP, UNMAP_FLAG_VADDR,
    VFIO_DMA_CC_IOMMU, VFIO_TYPE1V2_IOMMU, VFIO_TYPE1_IOMMU, VFIO_UNMAP_ALL, VFIO_UPDATE_VADDR,
};

/// One mapping (`struct vfio_dma`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dma {
    /// The first IOVA.
    pub iova: u64,
    /// The process address mapped at `iova`.
    pub vaddr: u64,
    /// Bytes; while pinning, the prefix mapped so far.
    pub size: u64,
    /// The device's permissions.
    pub prot: Prot,
    /// Whether the mapping process had CAP_IPC_LOCK (no RLIMIT_MEMLOCK check).
    pub lock_cap: bool,
    /// Whether UNMAP_DMA with VADDR invalidated the vaddr.
    pub vaddr_invalid: bool,
    /// Whether the mapping holds reserved pfns (never charged, never unpinned).
    pub has_rsvd: bool,
    /// Whether the pages are pinned and mapped (false until the first domain attaches).
    pub iommu_mapped: bool,
    /// Pages this mapping charged to the locked-memory account.
    pub locked_vm: u64,
}

impl Dma {
    /// The last IOVA (inclusive); the mapping is not empty.
    pub fn last(&self) -> u64 {
        self.iova + (self.size - 1)
    }

    /// `[iova, last]`; the mapping is not empty.
    pub fn range(&self) -> IovaRange {
        IovaRange::from_start_size(self.iova, self.size).expect("a mapping is not empty")
    }
}

/// An attached group with its domain.
#[derive(Debug)]
pub struct AttachedDomain {
    /// The group's name.
    pub name: String,
    /// The group's IOMMU domain.
    pub domain: Domain,
    /// The group's reserved IOVA regions.
    pub reserved: Vec<IovaRange>,
}

/// Counters of the engine itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Calls into the page source (`vaddr_get_pfns`).
    pub pin_calls: u64,
    /// Pin runs mapped (each one `iommu_map` per domain).
    pub pin_runs: u64,
    /// Locked-memory charges (`vfio_lock_acct` with a positive count).
    pub charges: u64,
}

/// The whole observable state, for "a failed call changes nothing".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// The mappings, lowest IOVA first.
    pub dmas: Vec<Dma>,
    /// Each domain: name, leaves, page-table pages.
    pub domains: Vec<(String, Vec<Leaf>, u64)>,
    /// The page source's pins: `(pfn, pages, count)`.
    pub pins: Vec<(u64, u64, u32)>,
    /// Locked pages.
    pub locked: u64,
    /// DMA entries left.
    pub dma_avail: u32,
    /// The valid IOVA ranges.
    pub iova_list: Vec<IovaRange>,
    /// The IOMMU page sizes.
    pub pgsize_bitmap: u64,
    /// Mappings whose vaddr is invalidated.
    pub vaddr_invalid_count: u32,
    /// Whether dirty tracking is on.
    pub dirty_tracking: bool,
}

/// A VFIO container with the type1 IOMMU backend.
#[derive(Debug)]
pub struct Container<M: PageSource> {
    cfg: Config,
    /// The mappings and the entry budget (`dma_list`, `dma_avail`).
    dmas: DmaTree,
    /// Head (newest) first, as the kernel's `list_add`.
    domains: Vec<AttachedDomain>,
    /// The valid IOVA ranges, sorted and disjoint (`iommu->iova_list`).
    iova_list: Vec<IovaRange>,
    pgsize_bitmap: u64,
    /// The owner's locked memory and its limit.
    account: LockedAccount,
    mm: M,
    faults: Arc<FaultInjector>,
    dirty_tracking: bool,
    /// While tracking: each mapping's dirty bitmap, by IOVA (`vfio_dma.bitmap`).
    dma_bitmaps: std::collections::BTreeMap<u64, dirty::DmaBitmap>,
    vaddr_invalid_count: u32,
    violations: Vec<String>,
    stats: EngineStats,
    /// The pin batch's buffer, kept between calls (the kernel keeps a page for it).
    batch_buf: Vec<crate::mm::PfnRun>,
    /// Named warnings of the last calls (a kernel `WARN_ON` reached, 3.11's unmap inside a large
    /// leaf), until `take_warnings`.
    warnings: Vec<String>,
    /// External pins (`vfio_iommu_type1_pin_pages`) and the unmap notifications they caused.
    ext: ExternalPins,
}

const PAGE_MASK: u64 = !(PAGE_SIZE - 1);

impl<M: PageSource> Container<M> {
    /// `VFIO_SET_IOMMU`: a new container over the memory `mm`.
    pub fn new(mut cfg: Config, mut mm: M) -> Self {
        mm.set_kernel_profile(cfg.kernel);
        if cfg.kernel.is_3_11() {
            // 3.11 had no entry limit.
            cfg.dma_entry_limit = u32::MAX;
        }
        Container {
            dmas: DmaTree::new(cfg.dma_entry_limit),
            account: LockedAccount::new(cfg.memlock),
            cfg,
            domains: Vec::new(),
            iova_list: Vec::new(),
            pgsize_bitmap: PAGE_MASK,
            mm,
            faults: FaultInjector::new(),
            dirty_tracking: false,
            dma_bitmaps: std::collections::BTreeMap::new(),
            vaddr_invalid_count: 0,
            violations: Vec::new(),
            stats: EngineStats::default(),
            batch_buf: Vec::new(),
            warnings: Vec::new(),
            ext: ExternalPins::default(),
        }
    }

    /// The named warnings of the calls since the last `take_warnings`: a kernel `WARN_ON` a
    /// request reached, or what the 3.11 profile did that breaks a modern invariant.
    pub fn take_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.warnings)
    }

    /// The process that made the mappings exits while another holds the container (§8.4 row
    /// 43): unmaps still unmap and unpin, but their uncharges are skipped, as the kernel's
    /// asynchronous accounting finds no mm.
    pub fn owner_exited(&mut self) {
        self.account.owner_exited();
    }

    /// The mapping process's RLIMIT_MEMLOCK (bytes, `None`: unlimited) and CAP_IPC_LOCK as of
    /// now: the kernel reads both at each MAP_DMA, so a caller serving real processes sets them
    /// before each.
    pub fn set_owner_limits(&mut self, memlock: Option<u64>, cap_ipc_lock: bool) {
        self.cfg.memlock = memlock;
        self.cfg.cap_ipc_lock = cap_ipc_lock;
        self.account.set_limit(memlock);
    }

    /// The container's settings.
    pub fn config(&self) -> &Config {
        &self.cfg
    }
    /// Change the pinning strategy (affects later maps only).
    pub fn set_strategy(&mut self, s: Strategy) {
        self.cfg.strategy = s;
    }
    /// The memory the container pins from.
    pub fn mm(&self) -> &M {
        &self.mm
    }
    /// The memory the container pins from, to mmap or munmap in it.
    pub fn mm_mut(&mut self) -> &mut M {
        &mut self.mm
    }
    /// The fault injector shared by the engine, its page source (if it takes one) and domains.
    pub fn faults(&self) -> Arc<FaultInjector> {
        self.faults.clone()
    }
    /// Locked pages (`mm->locked_vm`).
    pub fn locked_pages(&self) -> u64 {
        self.account.locked()
    }
    /// DMA entries left.
    pub fn dma_avail(&self) -> u32 {
        self.dmas.avail()
    }
    /// The mappings, lowest IOVA first.
    pub fn dmas(&self) -> impl Iterator<Item = &Dma> {
        self.dmas.iter()
    }
    /// The mapping that contains `iova`, if any (`vfio_find_dma` of one byte).
    pub fn dma_at(&self, iova: u64) -> Option<&Dma> {
        self.dmas.find_dma(IovaRange::new(iova, iova)?)
    }
    /// The attached groups, newest first.
    pub fn domains(&self) -> &[AttachedDomain] {
        &self.domains
    }
    /// The domain of the group `name`.
    pub fn domain(&self, name: &str) -> Option<&Domain> {
        self.domains
            .iter()
            .find(|d| d.name == name)
            .map(|d| &d.domain)
    }
    /// The valid IOVA ranges, sorted and disjoint; empty = no constraint (no domain).
    pub fn iova_ranges(&self) -> &[IovaRange] {
        &self.iova_list
    }
    /// The IOMMU page sizes every domain supports (`PAGE_MASK` with no domain).
    pub fn pgsize_bitmap(&self) -> u64 {
        self.pgsize_bitmap
    }
    /// The engine's counters.
    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }
    /// Whether dirty tracking is on.
    pub fn dirty_tracking(&self) -> bool {
        self.dirty_tracking
    }

    fn min_pgsize(&self) -> u64 {
        1 << self.pgsize_bitmap.trailing_zeros()
    }

    /// `VFIO_CHECK_EXTENSION` on the container.
    pub fn check_extension(&self, ext: u32) -> u32 {
        if self.cfg.kernel.is_3_11() {
            return v3_11::check_extension(ext);
        }
        match ext {
            VFIO_TYPE1_IOMMU | VFIO_TYPE1V2_IOMMU | VFIO_UNMAP_ALL | VFIO_UPDATE_VADDR => 1,
            // No modelled domain enforces cache coherency (as QEMU's VT-d): 1 only vacuously.
            VFIO_DMA_CC_IOMMU => self.domains.is_empty() as u32,
            _ => 0,
        }
    }

    /// `VFIO_IOMMU_GET_INFO` with a user buffer of `argsz` bytes.
    pub fn get_info(&self, argsz: u32) -> Result<InfoReply, Error> {
        if self.cfg.kernel.is_3_11() {
            return self.get_info_3_11(argsz);
        }
        let req = InfoRequest::decode(argsz)?;
        Ok(encode_info(
            req,
            &InfoState {
                pgsize_bitmap: self.pgsize_bitmap,
                dma_avail: self.dmas.avail(),
                iova_ranges: &self.iova_list,
                pads_caps: self.cfg.kernel.pads_caps(),
            },
        ))
    }

    /// The engine's own heap, estimated from its entry counts (the DMA tree, the IOVA list, the
    /// domain records; page tables excluded): B-tree entries cost about 1.5× their size.
    pub fn footprint_estimate(&self) -> u64 {
        let dma = (std::mem::size_of::<u64>() + std::mem::size_of::<Dma>()) as u64 * 3 / 2;
        let ranges = (self.iova_list.len() * std::mem::size_of::<IovaRange>()) as u64;
        let domains = self.domains.len() as u64 * std::mem::size_of::<AttachedDomain>() as u64;
        let batch =
            self.batch_buf.capacity() as u64 * std::mem::size_of::<crate::mm::PfnRun>() as u64;
        self.dmas.len() as u64 * dma + ranges + domains + batch + std::mem::size_of::<Self>() as u64
    }
}

impl Container<SimMm> {
    /// A container over fresh simulated memory with one 4-level x86_64 domain named "d0" and no
    /// reserved region: the setup of the examples and the scale tests.
    pub fn sim_x86(cfg: Config) -> Self {
        let mut c = Container::new(cfg, SimMm::new());
        let domain = Domain::new(DomainConfig::new(Format::X86_64 { levels: 4 }))
            .expect("the x86_64 format's defaults are valid");
        c.attach("d0", domain, Vec::new())
            .expect("a first domain with no reserved region attaches");
        c
    }
}

impl<M: PageSource> Drop for Container<M> {
    /// Container release: every mapping is removed, so every pin is dropped.
    fn drop(&mut self) {
        self.unmap_unpin_all();
    }
}
