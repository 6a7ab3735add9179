//! Helpers shared by the engine's tests: the spec §8 default harness (one mock domain with
//! 4K|2M|1G over [0, 2^48-1], memlock unlimited, no CAP_IPC_LOCK).
#![allow(dead_code)]

use iommu::{Domain, DomainConfig, Format};
use type1::mm::sim::SimMm;
use type1::mm::PageSource;
use type1::mm::{Backing, Layout, MmapSpec};
use type1::{Config, Container, Errno, MapDma, UnmapDma};

pub const K4: u64 = 4 << 10;
pub const M2: u64 = 2 << 20;
pub const G1: u64 = 1 << 30;
/// A 1 GiB-aligned IOVA.
pub const A: u64 = 1 << 30;

pub type C = Container<SimMm>;

pub fn mock_domain(pgsizes: u64) -> Domain {
    Domain::new(DomainConfig {
        format: Format::Mock,
        pgsize_bitmap: Some(pgsizes),
        aperture: Some((0, (1 << 48) - 1)),
    })
    .unwrap()
}

/// The §8 harness: a container with one mock domain `d0`.
pub fn harness(cfg: Config) -> C {
    let mut c = Container::new(cfg, SimMm::new());
    c.attach("d0", mock_domain(K4 | M2 | G1), vec![]).unwrap();
    c
}

/// A container with one mock domain `d0` whose group reserves the x86 MSI window
/// `[0xfee0_0000, 0xfeef_ffff]`.
pub fn msi_harness(cfg: Config) -> C {
    let mut c = Container::new(cfg, SimMm::new());
    c.attach("d0", mock_domain(K4 | M2 | G1), vec![MSI])
        .unwrap();
    c
}

/// The x86 MSI window, inclusive.
pub const MSI: (u64, u64) = (0xfee0_0000, 0xfeef_ffff);

pub fn default_harness() -> C {
    harness(Config::default())
}

pub fn mmap(c: &mut C, name: &str, size: u64, backing: Backing) -> u64 {
    c.mm_mut()
        .mmap(&MmapSpec::new(name, size, backing))
        .unwrap()
}

pub fn mmap_spec(c: &mut C, spec: MmapSpec) -> u64 {
    c.mm_mut().mmap(&spec).unwrap()
}

pub fn scattered(name: &str, size: u64, backing: Backing, seed: u64) -> MmapSpec {
    let mut s = MmapSpec::new(name, size, backing);
    s.layout = Layout::Scattered;
    s.seed = seed;
    s
}

pub fn map(c: &mut C, vaddr: u64, iova: u64, size: u64) -> Result<(), Errno> {
    let r = c
        .map_dma(&MapDma::rw(vaddr, iova, size))
        .map_err(|e| e.errno());
    invariants(c);
    r
}

/// A fresh region "m" of `size` bytes, mapped read-write at `A`; returns its vaddr.
pub fn map_new(c: &mut C, size: u64, backing: Backing) -> u64 {
    let v = mmap(c, "m", size, backing);
    map(c, v, A, size).unwrap();
    v
}

pub fn map_flags(c: &mut C, vaddr: u64, iova: u64, size: u64, flags: u32) -> Result<(), Errno> {
    let r = c
        .map_dma(&MapDma {
            argsz: 32,
            flags,
            vaddr,
            iova,
            size,
        })
        .map_err(|e| e.errno());
    invariants(c);
    r
}

pub fn unmap(c: &mut C, iova: u64, size: u64) -> Result<u64, Errno> {
    let r = c
        .unmap_dma(&UnmapDma::range(iova, size))
        .map(|r| r.size)
        .map_err(|e| e.errno());
    invariants(c);
    r
}

pub fn unmap_all(c: &mut C) -> u64 {
    let r = c.unmap_dma(&UnmapDma::all()).unwrap().size;
    invariants(c);
    r
}

pub fn invariants(c: &C) {
    if let Err(v) = c.check_invariants() {
        panic!("invariants violated:\n{}", v.join("\n"));
    }
}

/// Leaves of `size` in domain `name`.
pub fn leaves(c: &C, name: &str, size: u64) -> u64 {
    c.domain(name).unwrap().leaves_of(size)
}

/// The end of every test: unmap all, and no pin or charge is left.
pub fn finish(c: &mut C) {
    unmap_all(c);
    assert_eq!(c.mm().pinned_pages(), 0, "leaked pins");
    assert_eq!(c.locked_pages(), 0, "leaked locked pages");
    assert_eq!(c.dma_avail(), c.config().dma_entry_limit);
}
