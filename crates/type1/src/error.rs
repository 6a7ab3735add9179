//! Errors of the engine. Each variant says what was wrong with the request in terms a person can
//! fix, and maps to the errno the kernel's type1 backend returns for it.

pub use iommu::Errno;

use crate::mm::MmError;

/// Why a call failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("argsz {argsz} is smaller than the structure ({min} bytes)")]
    Argsz { argsz: u32, min: u32 },
    #[error("unknown flag bits {bits:#x} (allowed: {allowed:#x})")]
    UnknownFlags { bits: u32, allowed: u32 },
    #[error("size 0: nothing to map or unmap")]
    ZeroSize,
    #[error("{what} {start:#x} + size {size:#x} wraps past the end of the 64-bit space")]
    Wraps {
        what: &'static str,
        start: u64,
        size: u64,
        errno: Errno,
    },
    #[error("MAP_DMA needs READ and/or WRITE, or VADDR alone (flags {flags:#x})")]
    BadProt { flags: u32 },
    #[error("{what} {value:#x} is not a multiple of the IOMMU page size {pgsize:#x}")]
    Unaligned {
        what: &'static str,
        value: u64,
        pgsize: u64,
    },
    #[error("[{iova:#x}, +{size:#x}) overlaps the mapping [{dma_iova:#x}, +{dma_size:#x})")]
    Exists {
        iova: u64,
        size: u64,
        dma_iova: u64,
        dma_size: u64,
    },
    #[error("no DMA entries left: the limit is {limit} mappings (dma_entry_limit)")]
    NoEntries { limit: u32 },
    #[error("[{iova:#x}, {last:#x}] is not inside one valid IOVA range (see `info`: apertures minus reserved regions)")]
    OutsideIovaRanges { iova: u64, last: u64 },
    #[error("RLIMIT_MEMLOCK ({limit} pages) exceeded: {locked} locked, {more} more needed")]
    Memlock { limit: u64, locked: u64, more: u64 },
    #[error("cannot pin: {0}")]
    Fault(#[from] MmError),
    #[error("IOMMU: {0}")]
    Iommu(#[from] iommu::Error),
    #[error("injected failure of a locked-memory charge")]
    InjectedCharge,
    #[error("[{iova:#x}, {last:#x}] would split the mapping [{dma_iova:#x}, +{dma_size:#x}); type1v2 unmaps whole mappings only")]
    Bisect {
        iova: u64,
        last: u64,
        dma_iova: u64,
        dma_size: u64,
    },
    #[error("UNMAP with ALL needs iova=0 and size=0 (got iova {iova:#x}, size {size:#x})")]
    AllWithRange { iova: u64, size: u64 },
    #[error("GET_DIRTY_BITMAP cannot be combined with ALL or VADDR")]
    DirtyCombo,
    #[error("no mapping at [{iova:#x}, +{size:#x}) to update the vaddr of")]
    VaddrNoDma { iova: u64, size: u64 },
    #[error("a vaddr update needs an invalidated mapping with exactly this iova and size")]
    VaddrMismatch,
    #[error("mapping at {iova:#x} already has its vaddr invalidated")]
    VaddrAlreadyInvalid { iova: u64 },
    #[error("vaddrs are invalidated: nothing may attach until they are updated")]
    VaddrBusy,
    #[error("dirty tracking is only for type1v2 containers")]
    DirtyV1,
    #[error("dirty tracking: {0}")]
    Dirty(&'static str),
    #[error("cannot attach domain {name:?}: {why}")]
    Attach { name: String, why: String },
    #[error("no domain named {0:?} is attached")]
    NoSuchDomain(String),
}

impl Error {
    /// The errno the kernel returns.
    pub fn errno(&self) -> Errno {
        match self {
            Error::Wraps { errno, .. } => *errno,
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
