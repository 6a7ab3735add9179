//! The VFIO type1 IOMMU backend's DMA-mapping engine, in userspace.
//!
//! `Container` implements MAP_DMA, UNMAP_DMA, GET_INFO and DIRTY_PAGES as the kernel's
//! `vfio_iommu_type1` does (shared/spec/type1-semantics.md), with the 2013 hugepage design: pin in
//! page steps but batch physically contiguous runs and give each run to the IOMMU in one call;
//! charge locked memory per run with a clean unwind; recover pfns from the IOMMU on unmap and
//! unpin only after the IOTLB flush. It talks to memory only through `mm::PageSource` and to
//! hardware only through `iommu::Domain`.

pub mod container;
pub mod error;
pub mod inspect;
pub mod mm;
pub mod profile;
pub mod sys;
pub mod uapi;

pub use container::{
    AttachedDomain, BitmapArg, Container, Dma, EngineStats, InfoReply, MapDma, Snapshot, UnmapDma,
    UnmapReply,
};
pub use error::{Errno, Error};
pub use iommu::{PAGE_SHIFT, PAGE_SIZE};
pub use profile::{Config, KernelProfile, Strategy};
