//! Hostile and extreme inputs to the engine and its simulated memory: placement near the top of
//! the 64-bit space, `phys=` aliasing another region's frames, the allocators skipping placed
//! regions, the largest region, the smallest mock page, and checks whose cost must not grow
//! with leaves × BARs or reserved regions × anything. Each test asserts the answer (errors
//! with their text, page counts, leaves); the times are measured in the change notes, not here.

mod common;

use common::*;
use iommu::{Domain, DomainConfig, Format, MOCK_MIN_PGSIZE};
use type1::mm::sim::SimMm;
use type1::mm::{Backing, MemError, MmapSpec, PageSource};
use type1::{Config, Container, Errno};

fn spec(name: &str, size: u64, backing: Backing) -> MmapSpec {
    MmapSpec::new(name, size, backing)
}

fn at(name: &str, size: u64, backing: Backing, vaddr: u64) -> MmapSpec {
    let mut s = spec(name, size, backing);
    s.at = Some(vaddr);
    s
}

fn phys(name: &str, size: u64, backing: Backing, paddr: u64) -> MmapSpec {
    let mut s = spec(name, size, backing);
    s.phys = Some(paddr);
    s
}

// ---------------------------------------------------------------------------------------------
// mm::sim placement

#[test]
fn regions_near_the_top_of_the_64_bit_space_are_refused_not_wrapped() {
    let mut mm = SimMm::new();
    // Virtual: 2M ending 2M below 2^64, one overlapping it, and ones that would reach or pass
    // 2^64 (an end of exactly 2^64 is not representable: refused too).
    let top = 0u64.wrapping_sub(2 * M2);
    assert_eq!(
        mm.mmap(&at("last", M2, Backing::Hugetlb2m, top)).ok(),
        Some(top)
    );
    assert!(matches!(
        mm.mmap(&at("past", 2 * M2, Backing::Hugetlb2m, top - M2)),
        Err(MemError::Overlap { .. })
    ));
    for (name, size) in [("ends", 2 * M2), ("wraps", 4 * M2)] {
        assert!(matches!(
            mm.mmap(&at(name, size, Backing::Hugetlb2m, top)),
            Err(MemError::NoSpace { .. })
        ));
    }
    // Physical: a region ending exactly at 2^64 or past it does not fit.
    let e = mm
        .mmap(&phys(
            "p",
            4 * K4,
            Backing::Page4k,
            0u64.wrapping_sub(2 * K4),
        ))
        .unwrap_err();
    assert!(matches!(e, MemError::NoSpace { .. }), "{e}");
    let e = mm
        .mmap(&phys("q", G1, Backing::Hugetlb1g, 0xffff_ffff_c000_0000))
        .unwrap_err();
    assert!(matches!(e, MemError::NoSpace { .. }), "{e}");
    // Nothing was added by the refused calls: the names are free.
    assert_eq!(mm.region("p"), None);
    assert_eq!(mm.region("q"), None);
}

#[test]
fn a_region_above_128_tib_is_a_documented_limit() {
    let mut mm = SimMm::new();
    let e = mm
        .mmap(&spec("huge", SimMm::MAX_REGION + G1, Backing::Hugetlb1g))
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "size 0x800040000000 of \"huge\" is above 0x800000000000 (128 TiB), the largest region \
         the simulated memory holds"
    );
    // A scattered placement spans twice the size: at 2^63 that passed 2^64 and wrapped.
    let mut s = spec("wrap", 1 << 63, Backing::Hugetlb1g);
    s.layout = type1::mm::Layout::Scattered;
    assert!(matches!(mm.mmap(&s), Err(MemError::TooLarge { .. })));
    // The limit itself is fine, even 4K-backed and scattered (nothing is stored per page).
    let mut s = spec("max", SimMm::MAX_REGION, Backing::Page4k);
    s.layout = type1::mm::Layout::Scattered;
    assert!(mm.mmap(&s).is_ok());
    assert!(mm
        .vaddr_to_phys(mm.region_vaddr("max").unwrap() + SimMm::MAX_REGION - K4)
        .is_some());
}

#[test]
fn phys_refuses_frames_another_region_holds() {
    let mut mm = SimMm::new();
    let v = mm.mmap(&spec("ram", 4 * M2, Backing::Hugetlb2m)).unwrap();
    let p = mm.vaddr_to_phys(v).unwrap();
    // The same frames, and frames overlapping the end.
    let e = mm
        .mmap(&phys("alias", M2, Backing::Hugetlb2m, p + M2))
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "phys={:#x} of \"alias\": the physical range [{:#x}, {:#x}) overlaps region \"ram\" at \
             [{p:#x}, {:#x}); choose another phys= or leave it out",
            p + M2,
            p + M2,
            p + 2 * M2,
            p + 4 * M2
        )
    );
    // A BAR's frames too, from either side.
    let bv = mm.mmap(&spec("bar", 64 * K4, Backing::Pfnmap)).unwrap();
    let bp = mm.vaddr_to_phys(bv).unwrap();
    let e = mm
        .mmap(&phys("onbar", 4 * K4, Backing::Page4k, bp + 8 * K4))
        .unwrap_err();
    assert!(
        matches!(&e, MemError::PhysOverlap { other, .. } if other == "bar"),
        "{e}"
    );
    let e = mm
        .mmap(&phys("bar2", 4 * K4, Backing::Pfnmap, p))
        .unwrap_err();
    assert!(
        matches!(&e, MemError::PhysOverlap { other, .. } if other == "ram"),
        "{e}"
    );
    // Right after the region is free.
    assert!(mm
        .mmap(&phys("next", M2, Backing::Hugetlb2m, p + 4 * M2))
        .is_ok());
}

#[test]
fn the_allocators_skip_regions_placed_with_at_and_phys() {
    let mut mm = SimMm::new();
    // Where the first automatic regions would go.
    let vbase = SimMm::VADDR_BASE;
    let pbase = SimMm::RAM_BASE;
    let mut pinned = phys("pinned", 8 * M2, Backing::Page4k, pbase);
    pinned.at = Some(vbase + G1);
    mm.mmap(&pinned).unwrap();
    mm.mmap(&at("fixed", 8 * M2, Backing::Page4k, vbase))
        .unwrap();
    let v = mm.mmap(&spec("auto", 4 * M2, Backing::Page4k)).unwrap();
    assert!(v >= vbase + 8 * M2, "auto vaddr {v:#x} inside `fixed`");
    let p = mm.vaddr_to_phys(v).unwrap();
    assert!(p >= pbase + 8 * M2, "auto paddr {p:#x} inside `pinned`");
    // The auto region is still placed as its backing says (≡ 4K mod 2M).
    assert_eq!(p % M2, K4);
    // And BARs skip a BAR placed with phys= where the MMIO allocator starts.
    mm.mmap(&phys("bar0", M2, Backing::Pfnmap, SimMm::MMIO_BASE))
        .unwrap();
    let b = mm.mmap(&spec("bar1", M2, Backing::Pfnmap)).unwrap();
    assert!(mm.vaddr_to_phys(b).unwrap() >= SimMm::MMIO_BASE + M2);
}

#[test]
fn a_trace_of_placed_regions_keeps_every_invariant() {
    // Placed and automatic regions side by side, each mapped: no frame is pinned for two
    // regions, so the invariant checker agrees with the pins.
    let mut c = default_harness();
    let p = c
        .mm_mut()
        .mmap(&phys("a", 4 * M2, Backing::Hugetlb2m, SimMm::RAM_BASE + G1))
        .unwrap();
    let b = mmap(&mut c, "b", 4 * M2, Backing::Hugetlb2m);
    let bar = mmap(&mut c, "bar", M2, Backing::Pfnmap);
    map(&mut c, p, A, 4 * M2).unwrap();
    map(&mut c, b, 2 * A, 4 * M2).unwrap();
    map(&mut c, bar, 3 * A, M2).unwrap();
    assert_eq!(c.locked_pages(), 2 * 4 * M2 / K4);
    assert_eq!(c.mm().pinned_pages(), 2 * 4 * M2 / K4);
    finish(&mut c);
}

// ---------------------------------------------------------------------------------------------
// The smallest mock page

#[test]
fn mock_pages_below_2k_are_refused() {
    for pgsizes in [1u64, 2, 1024, 1024 | 4096] {
        let e = Domain::new(DomainConfig {
            format: Format::Mock,
            pgsize_bitmap: Some(pgsizes),
            aperture: None,
        })
        .err()
        .unwrap();
        assert_eq!(e.errno(), Errno::EINVAL);
        let smallest = 1u64 << pgsizes.trailing_zeros();
        assert_eq!(
            e.to_string(),
            format!(
                "page size {smallest:#x} is below 0x800 (2 KiB), the smallest page format mock \
                 models: the smallest IOMMU page Linux has is the iommufd selftest mock's \
                 (PAGE_SIZE/2); use pgsizes= of 2K or more"
            )
        );
    }
    assert!(Domain::new(DomainConfig {
        format: Format::Mock,
        pgsize_bitmap: Some(MOCK_MIN_PGSIZE),
        aperture: None,
    })
    .is_ok());
}

// ---------------------------------------------------------------------------------------------
// Checks that must not cost leaves × BARs, nor collect leaves

#[test]
fn a_check_with_many_bars_and_many_leaves_counts_every_pin() {
    // 500 one-page BARs mapped, and 64 MiB of 4K pages (16,384 leaves) mapped: the checker
    // finds every BAR page unpinned and every RAM page pinned once.
    let mut c = default_harness();
    for i in 0..500u64 {
        let v = mmap(&mut c, &format!("bar{i}"), K4, Backing::Pfnmap);
        c.map_dma(&type1::MapDma::rw(v, A + i * K4, K4)).unwrap();
    }
    let v = mmap(&mut c, "ram", 64 << 20, Backing::Page4k);
    c.map_dma(&type1::MapDma::rw(v, 2 * A, 64 << 20)).unwrap();
    invariants(&c);
    assert_eq!(leaves(&c, "d0", K4), 500 + (64 << 20) / K4);
    assert_eq!(c.mm().pinned_pages(), (64 << 20) / K4);
    assert_eq!(c.locked_pages(), (64 << 20) / K4);
    finish(&mut c);
}

#[test]
fn a_large_4k_mapping_checks_without_collecting_its_leaves() {
    // 4 GiB of contiguous 4K pages: one map call, 1,048,576 4K leaves (the 4K backing keeps the
    // region off 2M alignment), walked by the checker one at a time.
    let cfg = Config::default();
    let mut c = Container::new(cfg, SimMm::new());
    c.attach("d0", mock_domain(K4 | M2 | G1), vec![]).unwrap();
    let v = mmap(&mut c, "ram", 4 * G1, Backing::Page4k);
    c.map_dma(&type1::MapDma::rw(v, A, 4 * G1)).unwrap();
    assert_eq!(leaves(&c, "d0", K4), 4 * G1 / K4);
    invariants(&c);
    assert_eq!(c.mm().pinned_pages(), 4 * G1 / K4);
    finish(&mut c);
}

#[test]
fn many_reserved_regions_attach_in_one_sweep() {
    // 160,000 one-page reserved regions, every other page, given in reverse order: the valid
    // list is the 160,001 pages between and around them.
    let mut c = Container::new(Config::default(), SimMm::new());
    let n = 160_000u64;
    let reserved: Vec<(u64, u64)> = (0..n)
        .rev()
        .map(|i| {
            let s = A + (2 * i + 1) * K4;
            (s, s + K4 - 1)
        })
        .collect();
    c.attach("d0", mock_domain(K4 | M2 | G1), reserved).unwrap();
    let info = c.get_info(1 << 24).unwrap();
    assert_eq!(info.iova_ranges.len() as u64, n + 1);
    assert_eq!(info.iova_ranges[0], (0, A + K4 - 1));
    assert_eq!(info.iova_ranges[1], (A + 2 * K4, A + 3 * K4 - 1));
    assert_eq!(
        *info.iova_ranges.last().unwrap(),
        (A + 2 * n * K4, (1 << 48) - 1)
    );
    // A map inside a hole is accepted, one across a reserved page refused.
    let v = mmap(&mut c, "ram", 2 * K4, Backing::Page4k);
    assert_eq!(map(&mut c, v, A + 2 * K4, K4), Ok(()));
    assert_eq!(map(&mut c, v + K4, A + 4 * K4, 2 * K4), Err(Errno::EINVAL));
    finish(&mut c);
}

#[test]
fn fifty_thousand_regions_munmap_one_search_each() {
    // Each munmap looks only at the vmas inside its region: 50,000 regions mapped, each cut in
    // two and then removed, leave nothing behind and every name free again.
    let mut mm = SimMm::new();
    let n = 50_000;
    for i in 0..n {
        mm.mmap(&spec(&format!("r{i}"), 2 * K4, Backing::Page4k))
            .unwrap();
    }
    for i in 0..n {
        let name = format!("r{i}");
        mm.munmap(&name, Some((0, K4))).unwrap();
        assert!(mm.region(&name).is_some(), "half of {name} is left");
        mm.munmap(&name, Some((K4, K4))).unwrap();
        assert_eq!(mm.region(&name), None);
    }
    assert!(mm.mmap(&spec("r0", K4, Backing::Page4k)).is_ok());
}
