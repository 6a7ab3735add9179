//! One function per verb: the [`Verbs`] a backend implements, and [`dispatch`], the one match
//! over [`StmtKind`]. Both backends (the engine's runner, the kernel's replayer) implement the
//! trait, so a verb added to the language is a compile error until both handle it.

use type1::mm::MmapSpec;

use crate::ast::{Memlock, StmtKind, VaddrRef};
use crate::defaults;

/// What a backend does for each verb; `Out` is what one statement gives it back.
pub trait Verbs {
    /// The result of one statement.
    type Out;
    /// `container`: the container's settings (`kernel`: the profile to model).
    fn new_container(
        &mut self,
        v2: bool,
        dma_entry_limit: Option<u32>,
        memlock: Option<Memlock>,
        cap_ipc_lock: bool,
        kernel: Option<&str>,
    ) -> Self::Out;
    /// `domain`: a new IOMMU domain attached to the container.
    fn domain(
        &mut self,
        name: &str,
        format: Option<&str>,
        pgsizes: Option<&[u64]>,
        aperture: Option<(u64, u64)>,
        reserved: Option<&[(u64, u64)]>,
    ) -> Self::Out;
    /// `detach`: an attached domain leaves the container.
    fn detach(&mut self, name: &str) -> Self::Out;
    /// `mmap`: a new region of process memory.
    fn mmap(&mut self, spec: MmapSpec) -> Self::Out;
    /// `munmap`: a region, or `(offset, size)` of it, leaves the process.
    fn munmap(&mut self, name: &str, range: Option<(u64, u64)>) -> Self::Out;
    /// `map`: VFIO_IOMMU_MAP_DMA.
    fn map(
        &mut self,
        vaddr: &VaddrRef,
        iova: u64,
        size: u64,
        flags: u32,
        argsz: Option<u32>,
    ) -> Self::Out;
    /// `unmap`: VFIO_IOMMU_UNMAP_DMA.
    fn unmap(&mut self, iova: u64, size: u64, flags: u32, argsz: Option<u32>) -> Self::Out;
    /// `info`: VFIO_IOMMU_GET_INFO.
    fn info(&mut self, argsz: Option<u32>) -> Self::Out;
    /// `dirty start` / `dirty stop`: VFIO_IOMMU_DIRTY_PAGES with this flag.
    fn dirty(&mut self, flag: u32) -> Self::Out;
    /// `dirty get`: VFIO_IOMMU_DIRTY_PAGES with GET_BITMAP.
    fn dirty_get(&mut self, iova: u64, size: u64, pgsize: u64) -> Self::Out;
    /// `check`: the whole state.
    fn check(&mut self) -> Self::Out;
}

/// Runs one statement on a backend: the verb's function with the statement's arguments.
pub fn dispatch<V: Verbs + ?Sized>(v: &mut V, kind: &StmtKind) -> V::Out {
    match kind {
        StmtKind::Container {
            v2,
            dma_entry_limit,
            memlock,
            cap_ipc_lock,
            kernel,
        } => v.new_container(
            *v2,
            *dma_entry_limit,
            *memlock,
            *cap_ipc_lock,
            kernel.as_deref(),
        ),
        StmtKind::Domain {
            name,
            format,
            pgsizes,
            aperture,
            reserved,
        } => v.domain(
            name,
            format.as_deref(),
            pgsizes.as_deref(),
            *aperture,
            reserved.as_deref(),
        ),
        StmtKind::Detach { name } => v.detach(name),
        StmtKind::Mmap { .. } => v.mmap(kind.mmap_spec().expect("an mmap statement")),
        StmtKind::Munmap { name, range } => v.munmap(name, *range),
        StmtKind::Map {
            vaddr,
            iova,
            size,
            flags,
            argsz,
        } => v.map(vaddr, *iova, *size, *flags, *argsz),
        StmtKind::Unmap {
            iova,
            size,
            flags,
            argsz,
        } => v.unmap(*iova, *size, *flags, *argsz),
        StmtKind::Info { argsz } => v.info(*argsz),
        StmtKind::DirtyStart => v.dirty(defaults::DIRTY_START),
        StmtKind::DirtyStop => v.dirty(defaults::DIRTY_STOP),
        StmtKind::DirtyGet { iova, size, pgsize } => v.dirty_get(*iova, *size, *pgsize),
        StmtKind::Check => v.check(),
    }
}
