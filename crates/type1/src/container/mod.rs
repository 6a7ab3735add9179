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

use iommu::{Domain, FaultInjector, IovaRange, Leaf, Prot};

use crate::error::Error;
use crate::mm::PageSource;
use crate::profile::{Config, Strategy};
use crate::PAGE_SIZE;

mod account;
pub use account::LockedAccount;
pub use tree::DmaTree;
mod check;
mod dirty;
mod domains;
mod map;
mod tree;
mod unmap;

/// MAP_DMA flags.
pub const MAP_FLAG_READ: u32 = 1 << 0;
pub const MAP_FLAG_WRITE: u32 = 1 << 1;
pub const MAP_FLAG_VADDR: u32 = 1 << 2;
/// UNMAP_DMA flags.
pub const UNMAP_FLAG_GET_DIRTY_BITMAP: u32 = 1 << 0;
pub const UNMAP_FLAG_ALL: u32 = 1 << 1;
pub const UNMAP_FLAG_VADDR: u32 = 1 << 2;
/// DIRTY_PAGES flags.
pub const DIRTY_FLAG_START: u32 = 1 << 0;
pub const DIRTY_FLAG_STOP: u32 = 1 << 1;
pub const DIRTY_FLAG_GET_BITMAP: u32 = 1 << 2;
/// CHECK_EXTENSION arguments.
pub const VFIO_TYPE1_IOMMU: u32 = 1;
pub const VFIO_TYPE1V2_IOMMU: u32 = 3;
pub const VFIO_DMA_CC_IOMMU: u32 = 4;
pub const VFIO_UNMAP_ALL: u32 = 9;
pub const VFIO_UPDATE_VADDR: u32 = 10;

/// `DIRTY_BITMAP_SIZE_MAX`: `ALIGN(INT_MAX, 64) / 8` bytes.
pub const DIRTY_BITMAP_SIZE_MAX: u64 = 1 << 28;
/// `VFIO_IOMMU_TLB_SYNC_MAX`: unmapped regions gathered before a forced IOTLB sync.
pub const TLB_SYNC_MAX: usize = 512;

/// `struct vfio_iommu_type1_dma_map`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapDma {
    pub argsz: u32,
    pub flags: u32,
    pub vaddr: u64,
    pub iova: u64,
    pub size: u64,
}

impl MapDma {
    /// A read-write map with the structure's size as argsz.
    pub fn rw(vaddr: u64, iova: u64, size: u64) -> Self {
        MapDma {
            argsz: 32,
            flags: MAP_FLAG_READ | MAP_FLAG_WRITE,
            vaddr,
            iova,
            size,
        }
    }
}

/// The `struct vfio_bitmap` of an unmap or a dirty query: page size and buffer size in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BitmapArg {
    pub pgsize: u64,
    pub size: u64,
}

/// `struct vfio_iommu_type1_dma_unmap`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnmapDma {
    pub argsz: u32,
    pub flags: u32,
    pub iova: u64,
    pub size: u64,
    pub bitmap: Option<BitmapArg>,
}

impl UnmapDma {
    pub fn range(iova: u64, size: u64) -> Self {
        UnmapDma {
            argsz: 24,
            flags: 0,
            iova,
            size,
            bitmap: None,
        }
    }
    pub fn all() -> Self {
        UnmapDma {
            argsz: 24,
            flags: UNMAP_FLAG_ALL,
            iova: 0,
            size: 0,
            bitmap: None,
        }
    }
}

/// What UNMAP_DMA writes back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnmapReply {
    /// Bytes really unmapped (`unmap.size`).
    pub size: u64,
    /// The dirty bitmap, little-endian u64 words, when asked for.
    pub bitmap: Option<Vec<u64>>,
}

/// What GET_INFO writes back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InfoReply {
    pub argsz: u32,
    pub flags: u32,
    pub iova_pgsizes: u64,
    pub cap_offset: u32,
    /// The bytes the kernel writes into the user's buffer (at most argsz).
    pub bytes: Vec<u8>,
    /// The argsz that holds every capability.
    pub argsz_needed: u32,
    pub dma_avail: u32,
    pub iova_ranges: Vec<(u64, u64)>,
    pub migration_pgsize: u64,
}

/// One mapping (`struct vfio_dma`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dma {
    pub iova: u64,
    pub vaddr: u64,
    pub size: u64,
    pub prot: Prot,
    pub lock_cap: bool,
    pub vaddr_invalid: bool,
    pub has_rsvd: bool,
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
    pub name: String,
    pub domain: Domain,
    /// The group's reserved IOVA regions (inclusive).
    pub reserved: Vec<(u64, u64)>,
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
    pub dmas: Vec<Dma>,
    pub domains: Vec<(String, Vec<Leaf>, u64)>,
    pub pins: Vec<(u64, u64, u32)>,
    pub locked: u64,
    pub dma_avail: u32,
    pub iova_list: Vec<(u64, u64)>,
    pub pgsize_bitmap: u64,
    pub vaddr_invalid_count: u32,
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
    iova_list: Vec<(u64, u64)>,
    pgsize_bitmap: u64,
    /// The owner's locked memory and its limit.
    account: LockedAccount,
    mm: M,
    faults: Arc<FaultInjector>,
    dirty_tracking: bool,
    vaddr_invalid_count: u32,
    violations: Vec<String>,
    stats: EngineStats,
    /// The pin batch's buffer, kept between calls (the kernel keeps a page for it).
    batch_buf: Vec<crate::mm::PfnRun>,
}

const PAGE_MASK: u64 = !(PAGE_SIZE - 1);

impl<M: PageSource> Container<M> {
    /// `VFIO_SET_IOMMU`: a new container over the memory `mm`.
    pub fn new(cfg: Config, mut mm: M) -> Self {
        mm.set_kernel_profile(cfg.kernel);
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
            vaddr_invalid_count: 0,
            violations: Vec::new(),
            stats: EngineStats::default(),
            batch_buf: Vec::new(),
        }
    }

    /// The process that made the mappings exits while another holds the container (§8.4 row
    /// 43): unmaps still unmap and unpin, but their uncharges are skipped, as the kernel's
    /// asynchronous accounting finds no mm.
    pub fn owner_exited(&mut self) {
        self.account.owner_exited();
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }
    /// Change the pinning strategy (affects later maps only).
    pub fn set_strategy(&mut self, s: Strategy) {
        self.cfg.strategy = s;
    }
    pub fn mm(&self) -> &M {
        &self.mm
    }
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
    pub fn dmas(&self) -> impl Iterator<Item = &Dma> {
        self.dmas.iter()
    }
    pub fn domains(&self) -> &[AttachedDomain] {
        &self.domains
    }
    pub fn domain(&self, name: &str) -> Option<&Domain> {
        self.domains
            .iter()
            .find(|d| d.name == name)
            .map(|d| &d.domain)
    }
    /// The valid IOVA ranges (inclusive); empty = no constraint (no domain).
    pub fn iova_ranges(&self) -> &[(u64, u64)] {
        &self.iova_list
    }
    pub fn pgsize_bitmap(&self) -> u64 {
        self.pgsize_bitmap
    }
    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }
    pub fn dirty_tracking(&self) -> bool {
        self.dirty_tracking
    }

    fn min_pgsize(&self) -> u64 {
        1 << self.pgsize_bitmap.trailing_zeros()
    }

    /// `VFIO_CHECK_EXTENSION` on the container.
    pub fn check_extension(&self, ext: u32) -> u32 {
        match ext {
            VFIO_TYPE1_IOMMU | VFIO_TYPE1V2_IOMMU | VFIO_UNMAP_ALL | VFIO_UPDATE_VADDR => 1,
            // No modelled domain enforces cache coherency (as QEMU's VT-d): 1 only vacuously.
            VFIO_DMA_CC_IOMMU => self.domains.is_empty() as u32,
            _ => 0,
        }
    }

    /// `VFIO_IOMMU_GET_INFO` with a user buffer of `argsz` bytes.
    pub fn get_info(&self, argsz: u32) -> Result<InfoReply, Error> {
        if argsz < 16 {
            return Err(Error::Argsz { argsz, min: 16 });
        }
        let pad = |n: usize| {
            if self.cfg.kernel.pads_caps() {
                n.next_multiple_of(8)
            } else {
                n
            }
        };
        // The capability chain, offsets relative to the start of the info buffer (24).
        let mut caps: Vec<u8> = Vec::new();
        let mut headers: Vec<usize> = Vec::new();
        let mut add = |caps: &mut Vec<u8>, id: u16, body: &[u8]| {
            let at = caps.len();
            headers.push(at);
            caps.extend_from_slice(&id.to_le_bytes());
            caps.extend_from_slice(&1u16.to_le_bytes());
            caps.extend_from_slice(&0u32.to_le_bytes());
            caps.extend_from_slice(body);
            caps.resize(at + pad(8 + body.len()), 0);
        };
        let mut mig = Vec::new();
        mig.extend_from_slice(&0u32.to_le_bytes());
        mig.extend_from_slice(&0u32.to_le_bytes()); // alignment of the u64 that follows
        mig.extend_from_slice(&self.min_pgsize().to_le_bytes());
        mig.extend_from_slice(&DIRTY_BITMAP_SIZE_MAX.to_le_bytes());
        add(&mut caps, 2, &mig);
        add(&mut caps, 3, &self.dmas.avail().to_le_bytes());
        if !self.iova_list.is_empty() {
            let mut body = Vec::new();
            body.extend_from_slice(&(self.iova_list.len() as u32).to_le_bytes());
            body.extend_from_slice(&0u32.to_le_bytes());
            for &(s, e) in &self.iova_list {
                body.extend_from_slice(&s.to_le_bytes());
                body.extend_from_slice(&e.to_le_bytes());
            }
            add(&mut caps, 1, &body);
        }
        // Chain the `next` fields (buffer-relative).
        for w in 0..headers.len() {
            let next = headers.get(w + 1).map_or(0, |&n| (24 + n) as u32);
            caps[headers[w] + 4..headers[w] + 8].copy_from_slice(&next.to_le_bytes());
        }
        let needed = (24 + caps.len()) as u32;
        let flags: u32 = 1 | 2; // PGSIZES | CAPS
        let (out_argsz, cap_offset): (u32, u32) = if argsz < needed {
            (needed, 0)
        } else {
            (argsz, 24)
        };
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&out_argsz.to_le_bytes());
        bytes.extend_from_slice(&flags.to_le_bytes());
        bytes.extend_from_slice(&self.pgsize_bitmap.to_le_bytes());
        bytes.extend_from_slice(&cap_offset.to_le_bytes());
        bytes.extend_from_slice(&0u32.to_le_bytes());
        bytes.truncate((argsz as usize).min(24));
        if cap_offset != 0 {
            bytes.extend_from_slice(&caps);
        }
        Ok(InfoReply {
            argsz: out_argsz,
            flags,
            iova_pgsizes: self.pgsize_bitmap,
            cap_offset,
            bytes,
            argsz_needed: needed,
            dma_avail: self.dmas.avail(),
            iova_ranges: self.iova_list.clone(),
            migration_pgsize: self.min_pgsize(),
        })
    }

    /// The engine's own heap, estimated from its entry counts (the DMA tree, the IOVA list, the
    /// domain records; page tables excluded): B-tree entries cost about 1.5× their size.
    pub fn footprint_estimate(&self) -> u64 {
        let dma = (std::mem::size_of::<u64>() + std::mem::size_of::<Dma>()) as u64 * 3 / 2;
        let ranges = self.iova_list.len() as u64 * 16;
        let domains = self.domains.len() as u64 * std::mem::size_of::<AttachedDomain>() as u64;
        let batch =
            self.batch_buf.capacity() as u64 * std::mem::size_of::<crate::mm::PfnRun>() as u64;
        self.dmas.len() as u64 * dma + ranges + domains + batch + std::mem::size_of::<Self>() as u64
    }
}

impl<M: PageSource> Drop for Container<M> {
    /// Container release: every mapping is removed, so every pin is dropped.
    fn drop(&mut self) {
        self.unmap_unpin_all();
    }
}

/// The first check of every ioctl: the structure fits in `argsz`, and no unknown flag is set.
fn check_header(argsz: u32, min: u32, flags: u32, allowed: u32) -> Result<(), Error> {
    if argsz < min {
        return Err(Error::Argsz { argsz, min });
    }
    if flags & !allowed != 0 {
        return Err(Error::UnknownFlags {
            bits: flags & !allowed,
            allowed,
        });
    }
    Ok(())
}

/// `verify_bitmap_size`.
fn verify_bitmap_size(npages: u64, bitmap_size: u64) -> bool {
    if npages == 0 || bitmap_size == 0 || bitmap_size > DIRTY_BITMAP_SIZE_MAX {
        return false;
    }
    bitmap_size >= npages.div_ceil(64) * 8
}

fn set_bits(words: &mut [u64], first: u64, n: u64) {
    for bit in first..first + n {
        if let Some(w) = words.get_mut((bit / 64) as usize) {
            *w |= 1 << (bit % 64);
        }
    }
}
