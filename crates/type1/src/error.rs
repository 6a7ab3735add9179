//! Errors of the engine. Each variant says what was wrong with the request in terms a person can
//! fix, and maps to the errno the kernel's type1 backend returns for it.

pub use iommu::Errno;

use crate::mm::MmError;

/// Why a call failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("argsz {argsz} is smaller than the structure ({min} bytes)")]
    /// The structure does not fit in `argsz`.
    Argsz {
        /// The caller's argsz.
        argsz: u32,
        /// The smallest argsz accepted.
        min: u32,
    },
    #[error("unknown flag bits {bits:#x} (allowed: {allowed:#x})")]
    /// A flag bit the ioctl does not know.
    UnknownFlags {
        /// The unknown bits.
        bits: u32,
        /// The bits the ioctl knows.
        allowed: u32,
    },
    #[error("size 0: nothing to map or unmap")]
    /// A zero size.
    ZeroSize,
    #[error("{what} {start:#x} + size {size:#x} wraps past the end of the 64-bit space")]
    /// A range that wraps past 2^64.
    Wraps {
        /// Which field.
        what: &'static str,
        /// The first address.
        start: u64,
        /// The size in bytes.
        size: u64,
        /// The errno, which depends on the kernel.
        errno: Errno,
    },
    #[error("MAP_DMA needs READ and/or WRITE, or VADDR alone (flags {flags:#x})")]
    /// MAP_DMA flags that are neither READ/WRITE nor VADDR alone.
    BadProt {
        /// The flags passed.
        flags: u32,
    },
    #[error("{what} {value:#x} is not a multiple of the IOMMU page size {pgsize:#x}")]
    /// A value not aligned to the IOMMU page size.
    Unaligned {
        /// Which field.
        what: &'static str,
        /// The value.
        value: u64,
        /// The IOMMU page size.
        pgsize: u64,
    },
    #[error("[{iova:#x}, +{size:#x}) overlaps the mapping [{dma_iova:#x}, +{dma_size:#x})")]
    /// A MAP_DMA overlapping a mapping.
    Exists {
        /// The first IOVA.
        iova: u64,
        /// The size in bytes.
        size: u64,
        /// The first IOVA of the mapping in the way.
        dma_iova: u64,
        /// The size of the mapping in the way.
        dma_size: u64,
    },
    #[error("no DMA entries left: the limit is {limit} mappings (dma_entry_limit)")]
    /// No DMA entry left (`dma_entry_limit`).
    NoEntries {
        /// The limit.
        limit: u32,
    },
    #[error("[{iova:#x}, {last:#x}] is not inside one valid IOVA range (see `info`: apertures minus reserved regions)")]
    /// A range outside the valid IOVA ranges.
    OutsideIovaRanges {
        /// The first IOVA.
        iova: u64,
        /// The last IOVA (inclusive).
        last: u64,
    },
    #[error("RLIMIT_MEMLOCK ({limit} pages) exceeded: {locked} locked, {more} more needed")]
    /// RLIMIT_MEMLOCK would be exceeded.
    Memlock {
        /// The limit.
        limit: u64,
        /// Pages locked already.
        locked: u64,
        /// Pages the call needed.
        more: u64,
    },
    #[error("cannot pin: {0}")]
    /// The memory could not be pinned.
    Fault(#[from] MmError),
    #[error("IOMMU: {0}")]
    /// The IOMMU refused a map.
    Iommu(#[from] iommu::Error),
    #[error("injected failure of a locked-memory charge")]
    /// An injected failure of a charge.
    InjectedCharge,
    #[error("[{iova:#x}, {last:#x}] would split the mapping [{dma_iova:#x}, +{dma_size:#x}); type1v2 unmaps whole mappings only")]
    /// A type1v2 unmap or dirty query that would split a mapping.
    Bisect {
        /// The first IOVA.
        iova: u64,
        /// The last IOVA (inclusive).
        last: u64,
        /// The first IOVA of the mapping in the way.
        dma_iova: u64,
        /// The size of the mapping in the way.
        dma_size: u64,
    },
    #[error("UNMAP with ALL needs iova=0 and size=0 (got iova {iova:#x}, size {size:#x})")]
    /// UNMAP with ALL and a range.
    AllWithRange {
        /// The first IOVA.
        iova: u64,
        /// The size in bytes.
        size: u64,
    },
    #[error("GET_DIRTY_BITMAP cannot be combined with ALL or VADDR")]
    /// GET_DIRTY_BITMAP with ALL or VADDR.
    DirtyCombo,
    #[error("no mapping at [{iova:#x}, +{size:#x}) to update the vaddr of")]
    /// A vaddr update with no mapping there.
    VaddrNoDma {
        /// The first IOVA.
        iova: u64,
        /// The size in bytes.
        size: u64,
    },
    #[error("a vaddr update needs an invalidated mapping with exactly this iova and size")]
    /// A vaddr update that does not match an invalidated mapping exactly.
    VaddrMismatch,
    #[error("mapping at {iova:#x} already has its vaddr invalidated")]
    /// A vaddr invalidation of a mapping already invalidated.
    VaddrAlreadyInvalid {
        /// The first IOVA.
        iova: u64,
    },
    #[error("vaddrs are invalidated: nothing may attach until they are updated")]
    /// An attach while vaddrs are invalidated.
    VaddrBusy,
    #[error("dirty tracking is only for type1v2 containers")]
    /// Dirty tracking on a type1 (v1) container.
    DirtyV1,
    #[error("dirty tracking: {0}")]
    /// A dirty-tracking request the state or the bitmap does not allow.
    Dirty(&'static str),
    #[error("cannot attach domain {name:?}: {why}")]
    /// An attach the domain or group does not allow.
    Attach {
        /// The group's name.
        name: String,
        /// What is wrong.
        why: String,
    },
    #[error("kernel=3.11: {why}")]
    /// What the 2013 driver (the `kernel=3.11` profile) refused, with the errno it gave.
    V3_11 {
        /// The errno 3.11 returned.
        errno: Errno,
        /// What 3.11 did not have or refused, and why.
        why: String,
    },
    #[error("{why}")]
    /// An external pin, unpin or dma_rw the driver refused (`vfio_iommu_type1_pin_pages`, ...).
    Pin {
        /// The errno the kernel returns.
        errno: Errno,
        /// Which check refused it.
        why: String,
    },
    #[error("no domain named {0:?} is attached")]
    /// A detach of a group that is not attached.
    NoSuchDomain(String),
}

impl Error {
    /// The errno the kernel returns.
    pub fn errno(&self) -> Errno {
        match self {
            Error::Wraps { errno, .. } => *errno,
            Error::V3_11 { errno, .. } | Error::Pin { errno, .. } => *errno,
            Error::Exists { .. } => Errno::EEXIST,
            Error::NoEntries { .. } => Errno::ENOSPC,
            Error::Memlock { .. } | Error::InjectedCharge => Errno::ENOMEM,
            Error::Fault(MmError::Injected { .. }) => Errno::ENOMEM,
            Error::Fault(_) => Errno::EFAULT,
            Error::Iommu(e) => e.errno(),
            Error::VaddrNoDma { .. } => Errno::ENOENT,
            Error::VaddrBusy => Errno::EBUSY,
            Error::DirtyV1 => Errno::EACCES,
            Error::NoSuchDomain(_) => Errno::ENODEV,
            _ => Errno::EINVAL,
        }
    }
}
