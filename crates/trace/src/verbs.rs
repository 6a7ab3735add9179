//! One function per verb: the [`Verbs`] a backend implements, and [`dispatch`], the one match
//! over [`StmtKind`]. Both backends (the engine's runner, the kernel's replayer) implement the
//! trait, so a verb added to the language is a compile error until both handle it.

use type1::mm::MmapSpec;

use crate::ast::{Memlock, StmtKind, VaddrRef};
use crate::defaults;

/// `container`'s arguments.
#[derive(Clone, Copy, Debug)]
pub struct ContainerArgs<'a> {
    /// `type1v2` (else `type1`).
    pub v2: bool,
    /// `dma_entry_limit=`.
    pub dma_entry_limit: Option<u32>,
    /// `memlock=`.
    pub memlock: Option<Memlock>,
    /// `cap_ipc_lock=yes`.
    pub cap_ipc_lock: bool,
    /// `kernel=`: the profile to model.
    pub kernel: Option<&'a str>,
}

/// `domain`'s arguments.
#[derive(Clone, Copy, Debug)]
pub struct DomainArgs<'a> {
    /// The domain's name.
    pub name: &'a str,
    /// `format=`.
    pub format: Option<&'a str>,
    /// `pgsizes=`.
    pub pgsizes: Option<&'a [u64]>,
    /// `aperture=` (`last` inclusive).
    pub aperture: Option<(u64, u64)>,
    /// `reserved=` (`last` inclusive).
    pub reserved: Option<&'a [(u64, u64)]>,
}

/// `map`'s arguments.
#[derive(Clone, Copy, Debug)]
pub struct MapArgs<'a> {
    /// `vaddr=`.
    pub vaddr: &'a VaddrRef,
    /// `iova=`.
    pub iova: u64,
    /// `size=`.
    pub size: u64,
    /// `flags=`.
    pub flags: u32,
    /// `argsz=`.
    pub argsz: Option<u32>,
}

/// What a backend does for each verb; `Out` is what one statement gives it back.
pub trait Verbs {
    /// The result of one statement.
    type Out;
    /// `container`: the container's settings (`kernel`: the profile to model).
    fn new_container(&mut self, a: ContainerArgs<'_>) -> Self::Out;
    /// `domain`: a new IOMMU domain attached to the container.
    fn domain(&mut self, a: DomainArgs<'_>) -> Self::Out;
    /// `detach`: an attached domain leaves the container.
    fn detach(&mut self, name: &str) -> Self::Out;
    /// `mmap`: a new region of process memory.
    fn mmap(&mut self, spec: MmapSpec) -> Self::Out;
    /// `munmap`: a region, or `(offset, size)` of it, leaves the process.
    fn munmap(&mut self, name: &str, range: Option<(u64, u64)>) -> Self::Out;
    /// `map`: VFIO_IOMMU_MAP_DMA.
    fn map(&mut self, a: MapArgs<'_>) -> Self::Out;
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
    /// `pin`: a device pins pages (`vfio_pin_pages`); `group`: whose device.
    fn pin(&mut self, iova: u64, npage: u64, group: Option<&str>) -> Self::Out;
    /// `unpin`: a device unpins pages (`vfio_unpin_pages`).
    fn unpin(&mut self, iova: u64, npage: u64) -> Self::Out;
    /// `dma_rw`: a device reads or writes through the container (`vfio_dma_rw`).
    fn dma_rw(&mut self, iova: u64, size: u64, write: bool) -> Self::Out;
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
        } => v.new_container(ContainerArgs {
            v2: *v2,
            dma_entry_limit: *dma_entry_limit,
            memlock: *memlock,
            cap_ipc_lock: *cap_ipc_lock,
            kernel: kernel.as_deref(),
        }),
        StmtKind::Domain {
            name,
            format,
            pgsizes,
            aperture,
            reserved,
        } => v.domain(DomainArgs {
            name,
            format: format.as_deref(),
            pgsizes: pgsizes.as_deref(),
            aperture: *aperture,
            reserved: reserved.as_deref(),
        }),
        StmtKind::Detach { name } => v.detach(name),
        StmtKind::Mmap { .. } => v.mmap(kind.mmap_spec().expect("an mmap statement")),
        StmtKind::Munmap { name, range } => v.munmap(name, *range),
        StmtKind::Map {
            vaddr,
            iova,
            size,
            flags,
            argsz,
        } => v.map(MapArgs {
            vaddr,
            iova: *iova,
            size: *size,
            flags: *flags,
            argsz: *argsz,
        }),
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
        StmtKind::Pin { iova, npage, group } => v.pin(*iova, *npage, group.as_deref()),
        StmtKind::Unpin { iova, npage } => v.unpin(*iova, *npage),
        StmtKind::DmaRw { iova, size, write } => v.dma_rw(*iova, *size, *write),
    }
}
