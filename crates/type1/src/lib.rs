//! The VFIO type1 IOMMU backend's DMA-mapping engine, in userspace.
//!
//! `Container` implements MAP_DMA, UNMAP_DMA, GET_INFO and DIRTY_PAGES as the kernel's
//! `vfio_iommu_type1` does (shared/spec/type1-semantics.md), with the 2013 hugepage design: pin in
//! page steps but batch physically contiguous runs and give each run to the IOMMU in one call;
//! charge locked memory per run with a clean unwind; recover pfns from the IOMMU on unmap and
//! unpin only after the IOTLB flush. It talks to memory only through `mm::PageSource` and to
//! hardware only through `iommu::Domain`.
//!
//! # Data model
//! - A container holds a DMA tree (`container::DmaTree`): one `Dma` per successful MAP_DMA, keyed
//!   by IOVA, pairwise disjoint, never merged and never split, within `dma_entry_limit` entries.
//! - The pfns of a mapping are not stored: the first domain's page table is the record, read back
//!   on unmap. Every other domain translates the same IOVAs to the same pfns.
//! - Pins are taken once per mapping page, whatever the number of domains; locked memory
//!   (`container::LockedAccount`) is the sum of the mappings' charges, reserved pfns excluded.
//! - Requests arrive as the kernel's structures (`uapi::MapDma`, `uapi::UnmapDma`, ...), are
//!   decoded into typed requests (`uapi::MapRequest`, ...) in the kernel's check order, and only
//!   typed requests reach the engine (`container::*`). `profile::KernelProfile` is the one place
//!   where kernel versions differ.
//!
//! # Range conventions
//! A range is `[start, last]` with `last` **inclusive** (`iommu::IovaRange`), so the top page of
//! the 64-bit space is a range like any other; where an exclusive end is meant, the name says
//! `end`. The engine keeps IOVA ranges (the IOVA list, reserved regions, lookups) as `IovaRange`;
//! `(start, last)` pairs remain only at the public boundary where callers still pass them
//! (`Container::attach`'s reserved regions, `InfoReply::iova_ranges`). Sizes are bytes; page
//! counts say "pages".
//!
//! # Locking
//! Every operation takes `&mut self` (queries `&self`): the borrow plays the kernel's
//! `iommu->lock`, so one call runs at a time and sees a consistent tree, account and domain list.

#![warn(missing_docs)]

pub mod container;
pub mod error;
pub mod inspect;
pub mod mm;
#[cfg(target_os = "linux")]
pub mod procfs;
pub mod profile;
pub mod sys;
pub mod uapi;

pub use container::{
    AttachedDomain, Container, Dma, DmaTree, EngineStats, LockedAccount, Snapshot,
};
pub use error::{Errno, Error};
pub use iommu::{PAGE_SHIFT, PAGE_SIZE};
pub use profile::{Config, KernelProfile, Strategy};
pub use uapi::{
    BitmapArg, DirtyRequest, InfoReply, MapDma, MapRequest, UnmapDma, UnmapReply, UnmapRequest,
};
