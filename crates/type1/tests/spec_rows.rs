//! The conformance catalogue of spec §8 (shared/spec/type1-semantics.md) as engine tests, one
//! test per row, named after it. Rows that the trace language expresses are also run as traces
//! (tests/traces/); the rows here include those a trace cannot express (argsz, call counts,
//! IOTLB syncs, capability bytes).

mod common;

use common::*;
use iommu::{Domain, DomainConfig, Format};
use type1::mm::sim::SimMm;
use type1::mm::PageSource;
use type1::mm::{Backing, MmapSpec};
use type1::uapi::{
    MAP_FLAG_READ, MAP_FLAG_VADDR, MAP_FLAG_WRITE, UNMAP_FLAG_ALL, UNMAP_FLAG_GET_DIRTY_BITMAP,
    UNMAP_FLAG_VADDR,
};
use type1::{BitmapArg, Config, Container, Errno, MapDma, UnmapDma};

const RW: u32 = MAP_FLAG_READ | MAP_FLAG_WRITE;
/// The last page of the 64-bit IOVA space.
const LAST_PAGE: u64 = !0xfff;

// ---- §8.1 MAP validation ----

#[test]
fn row_01_map_argsz_1_is_einval() {
    let mut c = default_harness();
    let v = mmap(&mut c, "m", K4, Backing::Page4k);
    let r = c.map_dma(&MapDma {
        argsz: 1,
        flags: RW,
        vaddr: v,
        iova: A,
        size: K4,
    });
    assert_eq!(r.unwrap_err().errno(), Errno::EINVAL);
    assert_eq!(c.dmas().count(), 0);
    invariants(&c);
}

#[test]
fn row_02_map_unknown_flag_is_einval() {
    let mut c = default_harness();
    let v = mmap(&mut c, "m", K4, Backing::Page4k);
    assert_eq!(map_flags(&mut c, v, A, K4, 1 << 31), Err(Errno::EINVAL));
}

#[test]
fn row_03_map_flags_0_is_einval() {
    let mut c = default_harness();
    let v = mmap(&mut c, "m", K4, Backing::Page4k);
    assert_eq!(map_flags(&mut c, v, A, K4, 0), Err(Errno::EINVAL));
}

#[test]
fn row_04_map_read_and_vaddr_is_einval() {
    let mut c = default_harness();
    let v = mmap(&mut c, "m", K4, Backing::Page4k);
    assert_eq!(
        map_flags(&mut c, v, A, K4, MAP_FLAG_READ | MAP_FLAG_VADDR),
        Err(Errno::EINVAL)
    );
}

#[test]
fn row_05_map_size_0_is_einval() {
    let mut c = default_harness();
    let v = mmap(&mut c, "m", K4, Backing::Page4k);
    assert_eq!(map(&mut c, v, A, 0), Err(Errno::EINVAL));
}

#[test]
fn row_06_map_unaligned_size_iova_vaddr_is_einval() {
    let mut c = default_harness();
    let v = mmap(&mut c, "m", 4 * K4, Backing::Page4k);
    assert_eq!(map(&mut c, v, A, 6 << 10), Err(Errno::EINVAL));
    assert_eq!(map(&mut c, v, A + 2048, K4), Err(Errno::EINVAL));
    assert_eq!(map(&mut c, v + 2048, A, K4), Err(Errno::EINVAL));
    assert_eq!(c.locked_pages(), 0);
}

#[test]
fn row_07_iova_wrap_is_eoverflow_for_map_and_unmap() {
    let mut c = harness(Config::default());
    let v = mmap(&mut c, "m", 2 * K4, Backing::Page4k);
    let last_page = LAST_PAGE;
    assert_eq!(map(&mut c, v, last_page, 2 * K4), Err(Errno::EOVERFLOW));
    assert_eq!(unmap(&mut c, last_page, 2 * K4), Err(Errno::EOVERFLOW));
}

#[test]
fn row_07_iova_wrap_is_einval_on_6_12() {
    let cfg = Config {
        kernel: type1::KernelProfile::V6_12,
        ..Config::default()
    };
    let mut c = harness(cfg);
    let v = mmap(&mut c, "m", 2 * K4, Backing::Page4k);
    assert_eq!(map(&mut c, v, LAST_PAGE, 2 * K4), Err(Errno::EINVAL));
}

#[test]
fn row_08_vaddr_wrap_is_eoverflow() {
    let mut c = default_harness();
    assert_eq!(map(&mut c, LAST_PAGE, A, 2 * K4), Err(Errno::EOVERFLOW));
}

fn full_space_domain() -> Domain {
    Domain::new(DomainConfig {
        format: Format::Mock,
        pgsize_bitmap: Some(K4 | M2 | G1),
        aperture: Some((0, u64::MAX)),
    })
    .unwrap()
}

#[test]
fn row_09_map_and_unmap_the_last_page_of_the_iova_space() {
    let mut c = Container::new(Config::default(), SimMm::new());
    c.attach("d0", full_space_domain(), vec![]).unwrap();
    let v = mmap(&mut c, "m", K4, Backing::Page4k);
    let last = LAST_PAGE;
    assert_eq!(map(&mut c, v, last, K4), Ok(()));
    assert_eq!(unmap(&mut c, last, K4), Ok(K4));
    assert_eq!(c.locked_pages(), 0);
}

#[test]
fn row_10_unmap_all_removes_the_last_page_mapping() {
    let mut c = Container::new(Config::default(), SimMm::new());
    c.attach("d0", full_space_domain(), vec![]).unwrap();
    let v = mmap(&mut c, "m", K4, Backing::Page4k);
    map(&mut c, v, LAST_PAGE, K4).unwrap();
    assert_eq!(unmap_all(&mut c), K4);
}

#[test]
fn row_11_any_overlap_is_eexist() {
    let mut c = default_harness();
    let v = mmap(&mut c, "m", 16 * K4, Backing::Page4k);
    map(&mut c, v, A, 2 * K4).unwrap();
    let before = c.snapshot();
    assert_eq!(map(&mut c, v, A + K4, 2 * K4), Err(Errno::EEXIST));
    assert_eq!(map(&mut c, v, A, 2 * K4), Err(Errno::EEXIST));
    assert_eq!(map(&mut c, v, A - K4, 3 * K4), Err(Errno::EEXIST));
    assert_eq!(c.snapshot(), before);
    finish(&mut c);
}

#[test]
fn row_12_adjacent_maps_are_independent() {
    let mut c = default_harness();
    let v = mmap(&mut c, "m", 2 * K4, Backing::Page4k);
    map(&mut c, v, A, K4).unwrap();
    map(&mut c, v + K4, A + K4, K4).unwrap();
    assert_eq!(c.dmas().count(), 2);
    assert_eq!(unmap(&mut c, A, K4), Ok(K4));
    assert_eq!(c.dmas().count(), 1);
    assert_eq!(c.locked_pages(), 1);
    finish(&mut c);
}

#[test]
fn row_13_entry_limit_gives_enospc_and_dma_avail_counts() {
    let mut c = harness(Config {
        dma_entry_limit: 4,
        ..Config::default()
    });
    let v = mmap(&mut c, "m", 8 * K4, Backing::Page4k);
    assert_eq!(c.get_info(1024).unwrap().dma_avail, 4);
    for i in 0..4 {
        map(&mut c, v + i * K4, A + i * K4, K4).unwrap();
    }
    assert_eq!(map(&mut c, v + 4 * K4, A + 4 * K4, K4), Err(Errno::ENOSPC));
    assert_eq!(c.get_info(1024).unwrap().dma_avail, 0);
    unmap(&mut c, A, K4).unwrap();
    assert_eq!(c.get_info(1024).unwrap().dma_avail, 1);
    finish(&mut c);
}

#[test]
fn row_14_msi_window_is_carved_out() {
    let mut c = msi_harness(Config::default());
    let pairs: Vec<(u64, u64)> = c.iova_ranges().iter().map(|r| r.pair()).collect();
    assert_eq!(pairs, [(0, 0xfedf_ffff), (0xfef0_0000, (1 << 48) - 1)]);
    let v = mmap(&mut c, "m", 2 * K4, Backing::Page4k);
    assert_eq!(map(&mut c, v, 0xfee0_0000, K4), Err(Errno::EINVAL));
    assert_eq!(map(&mut c, v, 0xfedf_f000, 2 * K4), Err(Errno::EINVAL));
    assert_eq!(map(&mut c, v, 0xfedf_f000, K4), Ok(()));
    finish(&mut c);
}

#[test]
fn row_15_map_without_iommu_domain_pins_nothing() {
    let mut c = Container::new(Config::default(), SimMm::new());
    let v = mmap(&mut c, "m", M2, Backing::Hugetlb2m);
    assert_eq!(map(&mut c, v, A, M2), Ok(()));
    assert_eq!(c.locked_pages(), 0);
    assert_eq!(c.mm().pinned_pages(), 0);
    finish(&mut c);
}

// ---- §8.2 pinning, contiguity and page sizes ----

/// Rows 16–18: a region of `size` maps as one leaf of `size`, charging `locked` pages.
fn map_as_one_leaf(size: u64, backing: Backing, locked: u64) -> C {
    let mut c = default_harness();
    map_new(&mut c, size, backing);
    assert_eq!(leaves(&c, "d0", size), 1);
    assert_eq!(c.locked_pages(), locked);
    c
}

#[test]
fn row_16_anonymous_4k_page() {
    let mut c = map_as_one_leaf(K4, Backing::Page4k, 1);
    assert_eq!(unmap(&mut c, A, K4), Ok(K4));
    assert_eq!(leaves(&c, "d0", K4), 0);
    assert_eq!(c.locked_pages(), 0);
}

#[test]
fn row_17_hugetlb_2m_gets_one_2m_leaf() {
    let mut c = map_as_one_leaf(M2, Backing::Hugetlb2m, 512);
    assert_eq!(leaves(&c, "d0", K4), 0);
    assert_eq!(unmap(&mut c, A, M2), Ok(M2));
    assert_eq!(c.locked_pages(), 0);
}

#[test]
fn row_18_hugetlb_1g_gets_one_1g_leaf() {
    let mut c = map_as_one_leaf(G1, Backing::Hugetlb1g, 262_144);
    finish(&mut c);
}

#[test]
fn row_19_hugetlb_2m_at_4k_offset_iova_gets_512_4k_leaves_in_one_map_call() {
    let mut c = default_harness();
    let v = mmap(&mut c, "m", M2, Backing::Hugetlb2m);
    let calls = c.domain("d0").unwrap().stats().map_calls;
    map(&mut c, v, A + K4, M2).unwrap();
    assert_eq!(c.stats().pin_runs, 1);
    assert_eq!(c.domain("d0").unwrap().stats().map_calls - calls, 1);
    assert_eq!((leaves(&c, "d0", K4), leaves(&c, "d0", M2)), (512, 0));
    finish(&mut c);
}

#[test]
fn row_20_phys_0x201000_iova_0x1000_splits_511_1_1() {
    let mut c = default_harness();
    let mut s = MmapSpec::new("m", 4 << 20, Backing::Page4k);
    s.phys = Some(0x20_1000);
    let v = mmap_spec(&mut c, s);
    map(&mut c, v, 0x1000, 4 << 20).unwrap();
    assert_eq!((leaves(&c, "d0", K4), leaves(&c, "d0", M2)), (512, 1));
    finish(&mut c);
}

#[test]
fn row_21_three_runs_three_map_calls_one_gup_call() {
    // pfns p,p+1,p+2,q,r,r+1,r+2,r+3: three adjacent vmas with chosen physical bases.
    let mut c = default_harness();
    let base = 0x10_0000_0000u64;
    for (i, (name, pages, phys)) in [
        ("p", 3u64, 0x2_0000_1000u64),
        ("q", 1, 0x3_0000_1000),
        ("r", 4, 0x4_0000_1000),
    ]
    .iter()
    .enumerate()
    {
        let mut s = MmapSpec::new(name, pages * K4, Backing::Page4k);
        s.at = Some(base + [0, 3, 4][i] * K4);
        s.phys = Some(*phys);
        mmap_spec(&mut c, s);
    }
    let calls = c.domain("d0").unwrap().stats().map_calls;
    map(&mut c, base, A, 8 * K4).unwrap();
    assert_eq!(c.stats().pin_runs, 3);
    assert_eq!(
        c.stats().pin_calls,
        1,
        "leftovers of the one batch feed the next runs"
    );
    assert_eq!(c.domain("d0").unwrap().stats().map_calls - calls, 3);
    assert_eq!(c.locked_pages(), 8);
    finish(&mut c);
}

#[test]
fn row_22_per_page_strategy_maps_hugetlb_as_512_4k_leaves() {
    let mut c = harness(Config {
        strategy: type1::Strategy::PerPage,
        ..Config::default()
    });
    map_new(&mut c, M2, Backing::Hugetlb2m);
    assert_eq!(c.stats().pin_runs, 512);
    assert_eq!((leaves(&c, "d0", K4), leaves(&c, "d0", M2)), (512, 0));
    finish(&mut c);
}

#[test]
fn row_23_exactly_one_pin_per_page_across_batch_boundaries() {
    let mut c = default_harness();
    let v = mmap(&mut c, "m", 1 << 20, Backing::Page4k);
    let s = scattered("s", 1 << 20, Backing::Page4k, 3);
    let w = mmap_spec(&mut c, s);
    map(&mut c, v, A, 1 << 20).unwrap();
    map(&mut c, w, 2 * A, 1 << 20).unwrap();
    for i in 0..256 {
        for base in [v, w] {
            let pfn = c.mm().vaddr_to_phys(base + i * K4).unwrap() >> 12;
            assert_eq!(c.mm().pin_count(pfn), 1, "page {i}");
        }
    }
    assert_eq!(c.mm().pinned_pages(), 512);
    finish(&mut c);
    assert_eq!(c.mm().pin_count(c.mm().vaddr_to_phys(v).unwrap() >> 12), 0);
}

#[test]
fn row_24_two_domains_share_pins_and_leaves() {
    let mut c = default_harness();
    c.attach("d1", mock_domain(K4 | M2 | G1), vec![]).unwrap();
    map_new(&mut c, M2, Backing::Hugetlb2m);
    assert_eq!((leaves(&c, "d0", M2), leaves(&c, "d1", M2)), (1, 1));
    assert_eq!(c.mm().pinned_pages(), 512);
    assert_eq!(c.locked_pages(), 512);
    finish(&mut c);
}

#[test]
fn row_25_attach_replays_without_new_pins() {
    let mut c = default_harness();
    map_new(&mut c, 4 << 20, Backing::Hugetlb2m);
    let (pins, locked) = (c.mm().pinned_pages(), c.locked_pages());
    let d1 = Domain::new(DomainConfig::new(Format::Mock)).unwrap();
    c.attach("d1", d1, vec![]).unwrap();
    invariants(&c);
    assert_eq!(leaves(&c, "d1", M2), 2);
    assert_eq!((c.mm().pinned_pages(), c.locked_pages()), (pins, locked));
    finish(&mut c);
}

#[test]
fn row_26_attach_with_reserved_region_over_a_mapping_is_einval() {
    let mut c = default_harness();
    let v = mmap(&mut c, "m", K4, Backing::Page4k);
    map(&mut c, v, 0xfee0_0000, K4).unwrap();
    let before = c.snapshot();
    let r = c.attach(
        "d1",
        mock_domain(K4 | M2 | G1),
        vec![(0xfee0_0000, 0xfeef_ffff)],
    );
    assert_eq!(r.unwrap_err().errno(), Errno::EINVAL);
    assert_eq!(c.snapshot(), before);
    finish(&mut c);
}

// ---- §8.3 MMIO, reserved and failure unwinding ----

#[test]
fn row_27_full_bar_is_mapped_not_charged() {
    let mut c = default_harness();
    let v = mmap(&mut c, "bar", 16 << 20, Backing::Pfnmap);
    map(&mut c, v, A, 16 << 20).unwrap();
    assert_eq!(c.locked_pages(), 0);
    assert_eq!(c.mm().pinned_pages(), 0);
    assert_eq!(
        leaves(&c, "d0", M2),
        8,
        "a size-aligned BAR at an aligned iova gets 2M leaves"
    );
    assert_eq!(unmap(&mut c, A, 16 << 20), Ok(16 << 20));
}

#[test]
fn row_28_partial_bar() {
    let mut c = default_harness();
    let v = mmap(&mut c, "bar", 2 * K4, Backing::Pfnmap);
    map(&mut c, v, A, K4).unwrap();
    assert_eq!(c.locked_pages(), 0);
    assert_eq!(unmap(&mut c, A, K4), Ok(K4));
}

#[test]
fn row_29_misaligned_bar_gets_large_leaves_only_where_coaligned() {
    let mut c = default_harness();
    let mut s = MmapSpec::new("bar", G1, Backing::Pfnmap);
    s.at = Some(0x40_0000_0000 + K4);
    s.phys = Some(0xe000_0000_0000);
    let v = mmap_spec(&mut c, s);
    // The vaddr is one page off the pfn's alignment, so the user page table has 4K leaves only;
    // the pin run still continues across them while the pfns stay contiguous.
    map(&mut c, v, A, G1).unwrap();
    assert_eq!(leaves(&c, "d0", G1), 1, "iova and pa co-aligned to 1G");
    assert_eq!(c.locked_pages(), 0);
    assert_eq!(unmap(&mut c, A, G1), Ok(G1));
    map(&mut c, v, A + K4, G1).unwrap();
    assert_eq!(
        leaves(&c, "d0", M2) + leaves(&c, "d0", G1),
        0,
        "iova not co-aligned with pa"
    );
    assert_eq!(leaves(&c, "d0", K4), 262_144);
    assert_eq!(unmap(&mut c, A + K4, G1), Ok(G1));
}

#[test]
fn row_30_ram_then_bar_runs_never_mix_reserved() {
    let mut c = default_harness();
    let base = 0x20_0000_0000u64;
    let mut ram = MmapSpec::new("ram", 2 * K4, Backing::Page4k);
    ram.at = Some(base);
    mmap_spec(&mut c, ram);
    let mut bar = MmapSpec::new("bar", 2 * K4, Backing::Pfnmap);
    bar.at = Some(base + 2 * K4);
    mmap_spec(&mut c, bar);
    map(&mut c, base, A, 4 * K4).unwrap();
    assert!(c.stats().pin_runs >= 2);
    assert_eq!(c.locked_pages(), 2);
    assert!(c.dmas().next().unwrap().has_rsvd);
    assert_eq!(unmap(&mut c, A, 4 * K4), Ok(4 * K4));
    assert_eq!(c.locked_pages(), 0);
    assert_eq!(c.mm().pinned_pages(), 0);
}

#[test]
fn row_31_read_only_pfnmap_with_write_is_efault() {
    let mut c = default_harness();
    let mut s = MmapSpec::new("bar", K4, Backing::Pfnmap);
    s.writable = false;
    let v = mmap_spec(&mut c, s);
    assert_eq!(map(&mut c, v, A, K4), Err(Errno::EFAULT));
    assert_eq!(map_flags(&mut c, v, A, K4, MAP_FLAG_READ), Ok(()));
    finish(&mut c);
}

#[test]
fn row_32_unmapped_vaddr_is_efault() {
    let mut c = default_harness();
    assert_eq!(map(&mut c, 0x5000_0000_0000, A, K4), Err(Errno::EFAULT));
}

#[test]
fn row_33_hole_midway_unwinds_everything() {
    let mut c = default_harness();
    let v = mmap(&mut c, "m", M2, Backing::Page4k);
    c.mm_mut().munmap("m", Some((1 << 20, 1 << 20))).unwrap();
    let before = c.snapshot();
    assert_eq!(map(&mut c, v, A, M2), Err(Errno::EFAULT));
    assert_eq!(c.snapshot(), before);
    assert_eq!(c.mm().pinned_pages(), 0);
    assert_eq!(c.dma_avail(), 65535);
}

#[test]
fn row_34_failure_in_second_domain_unwinds_both() {
    let mut c = default_harness();
    c.attach("d1", mock_domain(K4 | M2 | G1), vec![]).unwrap();
    let v = mmap(&mut c, "m", 256 << 10, Backing::Page4k);
    let s = scattered("s", 256 << 10, Backing::Page4k, 1);
    let w = mmap_spec(&mut c, s);
    for (base, k) in [(v, 1u64), (w, 1), (w, 7), (w, 64)] {
        let before = c.snapshot();
        // Fail the k-th map_pages call overall (domains alternate: d1 is the head).
        c.faults().arm(k, &[iommu::FaultPoint::IommuMap]);
        let r = map(&mut c, base, A, 256 << 10);
        let fired = c.faults().fired();
        c.faults().disarm();
        if fired {
            assert_eq!(r, Err(Errno::ENOMEM));
            assert_eq!(c.snapshot(), before);
        } else {
            r.unwrap();
            unmap(&mut c, A, 256 << 10).unwrap();
        }
    }
    assert_eq!(c.mm().pinned_pages(), 0);
}

// Row 35 (fail-nth over map, unmap, attach, release) is tests/fault_injection.rs.

// ---- §8.4 RLIMIT_MEMLOCK ----

fn memlock(pages: u64, cap: bool) -> C {
    harness(Config {
        memlock: Some(pages * K4),
        cap_ipc_lock: cap,
        ..Config::default()
    })
}

/// Under a limit of `limit` pages, map the first `pages` of a 32-page region "m" at `A`.
fn memlock_map(limit: u64, cap: bool, pages: u64) -> (C, u64, Result<(), Errno>) {
    let mut c = memlock(limit, cap);
    let v = mmap(&mut c, "m", 32 * K4, Backing::Page4k);
    let r = map(&mut c, v, A, pages * K4);
    (c, v, r)
}

#[test]
fn row_36_map_up_to_the_limit() {
    let (c, _, r) = memlock_map(16, false, 16);
    assert_eq!(r, Ok(()));
    assert_eq!(c.locked_pages(), 16);
}

#[test]
fn row_37_one_page_over_the_limit_is_enomem() {
    let (mut c, v, r) = memlock_map(16, false, 16);
    r.unwrap();
    assert_eq!(map(&mut c, v + 16 * K4, A + G1, K4), Err(Errno::ENOMEM));
    assert_eq!(c.locked_pages(), 16);
}

#[test]
fn row_38_scattered_over_limit_unwinds() {
    let mut c = memlock(16, false);
    let s = scattered("s", 32 * K4, Backing::Page4k, 9);
    let v = mmap_spec(&mut c, s);
    assert_eq!(map(&mut c, v, A, 32 * K4), Err(Errno::ENOMEM));
    assert_eq!(
        (
            c.locked_pages(),
            c.mm().pinned_pages(),
            c.domain("d0").unwrap().total_leaves()
        ),
        (0, 0, 0)
    );
}

#[test]
fn row_39_hugetlb_2m_over_limit_fails_on_the_precheck() {
    let mut c = memlock(16, false);
    let v = mmap(&mut c, "m", M2, Backing::Hugetlb2m);
    assert_eq!(map(&mut c, v, A, M2), Err(Errno::ENOMEM));
    assert_eq!(c.stats().charges, 0, "refused before any charge");
    assert_eq!(c.locked_pages(), 0);
}

#[test]
fn row_40_cap_ipc_lock_skips_the_check_but_counts() {
    let (mut c, _, r) = memlock_map(0, true, 32);
    assert_eq!(r, Ok(()));
    assert_eq!(c.locked_pages(), 32);
    finish(&mut c);
}

#[test]
fn row_41_bar_with_zero_limit() {
    let mut c = memlock(0, false);
    let v = mmap(&mut c, "bar", K4, Backing::Pfnmap);
    assert_eq!(map(&mut c, v, A, K4), Ok(()));
    assert_eq!(c.locked_pages(), 0);
}

#[test]
fn row_42_same_pages_at_two_iovas_count_twice() {
    let mut c = default_harness();
    let v = map_new(&mut c, 16 * K4, Backing::Page4k);
    map(&mut c, v, A + G1, 16 * K4).unwrap();
    assert_eq!(c.locked_pages(), 32);
    assert_eq!(c.mm().pin_count(c.mm().vaddr_to_phys(v).unwrap() >> 12), 2);
    finish(&mut c);
}

#[test]
fn row_43_unmap_after_the_owner_exited_skips_the_uncharge() {
    let mut c = default_harness();
    map_new(&mut c, 16 * K4, Backing::Page4k);
    c.owner_exited();
    let r = c
        .unmap_dma(&UnmapDma::range(A, 16 * K4))
        .map(|r| r.size)
        .map_err(|e| e.errno());
    assert_eq!(r, Ok(16 * K4), "0 and the size returned");
    assert_eq!(c.mm().pinned_pages(), 0, "the pages are unpinned");
    assert_eq!(
        c.locked_pages(),
        16,
        "the dead mm's count is not touched (-ESRCH ignored)"
    );
    assert_eq!(c.dmas().count(), 0);
    invariants(&c);
}

// ---- §8.5 UNMAP (v2) ----

#[test]
fn row_44_unmap_whole_buffer() {
    let mut c = default_harness();
    map_new(&mut c, 256 << 10, Backing::Page4k);
    assert_eq!(unmap(&mut c, A, 256 << 10), Ok(256 << 10));
    assert_eq!(c.locked_pages(), 0);
}

#[test]
fn row_45_46_v2_refuses_to_bisect_and_changes_nothing() {
    let mut c = default_harness();
    map_new(&mut c, M2, Backing::Hugetlb2m);
    let before = c.snapshot();
    assert_eq!(unmap(&mut c, A + K4, K4), Err(Errno::EINVAL));
    assert_eq!(unmap(&mut c, A, K4), Err(Errno::EINVAL));
    assert_eq!(c.snapshot(), before);
    finish(&mut c);
}

#[test]
fn row_47_range_with_hole_removes_both() {
    let mut c = default_harness();
    map_two_with_a_hole(&mut c, 16 * K4);
    assert_eq!(unmap(&mut c, A - K4, 10 * K4), Ok(4 * K4));
    assert_eq!(c.dmas().count(), 0);
}

#[test]
fn row_48_range_ending_inside_a_mapping_is_einval() {
    let mut c = default_harness();
    let v = mmap(&mut c, "m", 32 << 10, Backing::Page4k);
    for i in 0..4 {
        map(&mut c, v, A + i * (64 << 10), 32 << 10).unwrap();
    }
    assert_eq!(unmap(&mut c, A - (16 << 10), 32 << 10), Err(Errno::EINVAL));
    assert_eq!(c.dmas().count(), 4);
    finish(&mut c);
}

#[test]
fn row_49_unmap_of_nothing_is_success_with_size_0() {
    let mut c = default_harness();
    assert_eq!(unmap(&mut c, A, K4), Ok(0));
}

#[test]
fn row_50_random_256k_pieces_of_a_huge_map_are_einval() {
    let mut c = default_harness();
    map_new(&mut c, 4 << 20, Backing::Hugetlb2m);
    let before = c.snapshot();
    let mut x = 12345u64;
    for _ in 0..16 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let piece = (x >> 33) % 16;
        if piece == 0 {
            continue; // the first piece starts the mapping but ends inside it: still EINVAL below
        }
        assert_eq!(
            unmap(&mut c, A + piece * (256 << 10), 256 << 10),
            Err(Errno::EINVAL)
        );
    }
    assert_eq!(unmap(&mut c, A, 256 << 10), Err(Errno::EINVAL));
    assert_eq!(c.snapshot(), before);
    finish(&mut c);
}

#[test]
fn row_51_unaligned_or_empty_unmaps_are_einval() {
    let mut c = default_harness();
    assert_eq!(unmap(&mut c, A + 2048, K4), Err(Errno::EINVAL));
    assert_eq!(unmap(&mut c, A, 0), Err(Errno::EINVAL));
    assert_eq!(unmap(&mut c, A, 6 << 10), Err(Errno::EINVAL));
}

#[test]
fn row_52_unmap_argsz_1_and_unknown_flag_are_einval() {
    let mut c = default_harness();
    let r = c.unmap_dma(&UnmapDma {
        argsz: 1,
        ..UnmapDma::range(A, K4)
    });
    assert_eq!(r.unwrap_err().errno(), Errno::EINVAL);
    let r = c.unmap_dma(&UnmapDma {
        flags: 1 << 31,
        ..UnmapDma::range(A, K4)
    });
    assert_eq!(r.unwrap_err().errno(), Errno::EINVAL);
}

#[test]
fn row_53_unmap_all_with_a_range_is_einval_then_all_works() {
    let mut c = default_harness();
    map_new(&mut c, 64 << 10, Backing::Page4k);
    let r = c.unmap_dma(&UnmapDma {
        flags: UNMAP_FLAG_ALL,
        ..UnmapDma::range(A, 64 << 10)
    });
    assert_eq!(r.unwrap_err().errno(), Errno::EINVAL);
    assert_eq!(unmap_all(&mut c), 64 << 10);
}

#[test]
fn row_54_unmap_all_of_nothing() {
    let mut c = default_harness();
    assert_eq!(unmap_all(&mut c), 0);
}

#[test]
fn row_55_dirty_bitmap_with_all_or_vaddr_is_einval() {
    let mut c = default_harness();
    for flags in [
        UNMAP_FLAG_ALL | UNMAP_FLAG_GET_DIRTY_BITMAP,
        UNMAP_FLAG_VADDR | UNMAP_FLAG_GET_DIRTY_BITMAP,
    ] {
        let r = c.unmap_dma(&UnmapDma {
            argsz: 48,
            flags,
            iova: 0,
            size: 0,
            bitmap: Some(BitmapArg {
                pgsize: K4,
                size: 8,
            }),
        });
        assert_eq!(r.unwrap_err().errno(), Errno::EINVAL);
    }
}

#[test]
fn row_56_page_by_page_maps_unmapped_in_shuffled_order() {
    let mut c = default_harness();
    let v = mmap(&mut c, "m", 64 * K4, Backing::Page4k);
    for i in 0..64 {
        map(&mut c, v + i * K4, A + i * K4, K4).unwrap();
    }
    assert_eq!(c.locked_pages(), 64);
    let mut order: Vec<u64> = (0..64).collect();
    let mut x = 7u64;
    for i in (1..order.len()).rev() {
        x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        order.swap(i, (x >> 33) as usize % (i + 1));
    }
    for i in order {
        assert_eq!(unmap(&mut c, A + i * K4, K4), Ok(K4));
    }
    assert_eq!(c.locked_pages(), 0);
}

#[test]
fn row_57_2m_leaf_unmaps_in_one_call_with_sync_before_unpin() {
    let mut c = default_harness();
    map_new(&mut c, M2, Backing::Hugetlb2m);
    let s0 = c.domain("d0").unwrap().stats().clone();
    assert_eq!(unmap(&mut c, A, M2), Ok(M2));
    let s1 = c.domain("d0").unwrap().stats().clone();
    assert_eq!(s1.unmap_calls - s0.unmap_calls, 1);
    assert_eq!(s1.iotlb_flushes - s0.iotlb_flushes, 1);
    assert_eq!(c.mm().pinned_pages(), 0);
}

#[test]
fn row_58_600_scattered_runs_two_syncs_every_unpin_after_its_sync() {
    let mut c = default_harness();
    let s = scattered("s", 600 * K4, Backing::Page4k, 11);
    let v = mmap_spec(&mut c, s);
    map(&mut c, v, A, 600 * K4).unwrap();
    let s0 = c.domain("d0").unwrap().stats().clone();
    assert_eq!(unmap(&mut c, A, 600 * K4), Ok(600 * K4));
    let s1 = c.domain("d0").unwrap().stats().clone();
    assert_eq!(s1.unmap_calls - s0.unmap_calls, 600);
    assert_eq!(
        s1.iotlb_flushes - s0.iotlb_flushes,
        2,
        "one at 512 pending regions, one at the end"
    );
    // `unmap` checked the invariants, including "no unpin before its flush".
    assert_eq!(c.mm().pinned_pages(), 0);
    assert_eq!(c.locked_pages(), 0);
}

/// Two 8 KiB mappings, `[A, +8K)` and `[A + 16K, +8K)`, from one region of `region` bytes.
fn map_two_with_a_hole(c: &mut C, region: u64) {
    let v = mmap(c, "m", region, Backing::Page4k);
    map(c, v, A, 2 * K4).unwrap();
    map(c, v + 4 * K4, A + 4 * K4, 2 * K4).unwrap();
}

// ---- §8.6 UNMAP (v1) ----

fn v1() -> C {
    harness(Config {
        v2: false,
        ..Config::default()
    })
}

#[test]
fn row_59_v1_unmap_of_first_page_removes_whole_mapping() {
    let mut c = v1();
    map_new(&mut c, M2, Backing::Hugetlb2m);
    assert_eq!(unmap(&mut c, A, K4), Ok(M2));
    assert_eq!(c.locked_pages(), 0);
    assert_eq!(c.dmas().count(), 0);
}

#[test]
fn row_60_v1_unmap_inside_a_mapping_is_size_0() {
    let mut c = v1();
    map_new(&mut c, M2, Backing::Hugetlb2m);
    assert_eq!(unmap(&mut c, A + K4, K4), Ok(0));
    assert_eq!(c.dmas().count(), 1);
    finish(&mut c);
}

#[test]
fn row_61_v1_walk_breaks_at_the_first_mapping() {
    let mut c = v1();
    map_two_with_a_hole(&mut c, 8 * K4);
    assert_eq!(unmap(&mut c, A + K4, 8 * K4), Ok(0));
    assert_eq!(c.dmas().count(), 2);
    finish(&mut c);
}

// Row 62 is iommufd's vfio-compat divergence, not type1 behaviour.

// ---- §8.7 GET_INFO and extensions (rows 63–66) ----

#[test]
fn row_63_get_info_argsz_1_is_einval() {
    let c = default_harness();
    assert_eq!(c.get_info(1).unwrap_err().errno(), Errno::EINVAL);
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

#[test]
fn row_64_get_info_capability_chain_bytes() {
    let c = default_harness();
    let r16 = c.get_info(16).unwrap();
    assert_eq!(r16.flags, 3);
    assert_eq!(r16.bytes.len(), 16, "never writes past argsz");
    let r24 = c.get_info(24).unwrap();
    assert_eq!((r24.argsz, r24.cap_offset), (104, 0));
    let r = c.get_info(104).unwrap();
    assert_eq!(r.cap_offset, 24);
    let b = &r.bytes;
    assert_eq!(b.len(), 104);
    assert_eq!(le64(b, 8), 0x4020_1000);
    // MIGRATION @24 → DMA_AVAIL @56 → IOVA_RANGE @72.
    assert_eq!((u16::from_le_bytes([b[24], b[25]]), le32(b, 28)), (2, 56));
    assert_eq!(le64(b, 24 + 16), K4);
    assert_eq!(le64(b, 24 + 24), 1 << 28);
    assert_eq!(
        (u16::from_le_bytes([b[56], b[57]]), le32(b, 60), le32(b, 64)),
        (3, 72, 65535)
    );
    assert_eq!(
        (
            u16::from_le_bytes([b[72], b[73]]),
            u16::from_le_bytes([b[74], b[75]]),
            le32(b, 76)
        ),
        (1, 1, 0)
    );
    assert_eq!(
        (le32(b, 80), le64(b, 88), le64(b, 96)),
        (1, 0, (1 << 48) - 1)
    );
    for argsz in 24..104 {
        let r = c.get_info(argsz).unwrap();
        assert_eq!((r.argsz, r.cap_offset), (104, 0), "argsz {argsz}");
        assert!(r.bytes.len() <= argsz as usize);
    }
}

#[test]
fn get_info_6_1_does_not_pad_dma_avail() {
    let c = msi_harness(Config {
        kernel: type1::KernelProfile::V6_1,
        ..Config::default()
    });
    assert_eq!(
        c.get_info(24).unwrap().argsz,
        116,
        "the oracle's 6.1 answer"
    );
    let c = msi_harness(Config::default());
    assert_eq!(
        c.get_info(24).unwrap().argsz,
        120,
        "the oracle's 6.12/7.2 answer"
    );
}

#[test]
fn row_65_iova_pgsizes_intersect_and_clamp() {
    let c = Container::new(Config::default(), SimMm::new());
    assert_eq!(
        c.get_info(24).unwrap().iova_pgsizes,
        !0xfffu64,
        "(a) no domain: PAGE_MASK"
    );
    let mut c = default_harness();
    assert_eq!(c.pgsize_bitmap(), 0x4020_1000, "(b)");
    c.attach("d1", mock_domain(K4 | M2), vec![]).unwrap();
    assert_eq!(c.pgsize_bitmap(), 0x20_1000, "(c)");
    let mut c = Container::new(Config::default(), SimMm::new());
    c.attach("d0", mock_domain(2048), vec![]).unwrap();
    assert_eq!(c.pgsize_bitmap(), 0x1000, "(d)");
    let mut c = Container::new(Config::default(), SimMm::new());
    c.attach("d0", mock_domain(2048 | K4 | M2), vec![]).unwrap();
    assert_eq!(c.pgsize_bitmap(), 0x20_1000, "(e)");
}

#[test]
fn row_66_check_extension() {
    let c = default_harness();
    assert_eq!(c.check_extension(type1::uapi::VFIO_TYPE1V2_IOMMU), 1);
    assert_eq!(c.check_extension(type1::uapi::VFIO_UNMAP_ALL), 1);
    assert_eq!(c.check_extension(type1::uapi::VFIO_UPDATE_VADDR), 1);
    assert_eq!(c.check_extension(99), 0);
}

// ---- §8.7 rows 67–71 (dirty and vaddr) ----

#[test]
fn row_67_dirty_on_v1_is_eacces() {
    let mut c = v1();
    assert_eq!(
        c.dirty_pages(8, 1, None).unwrap_err().errno(),
        Errno::EACCES
    );
}

#[test]
fn row_68_69_dirty_bitmap() {
    let mut c = default_harness();
    map_new(&mut c, 64 << 10, Backing::Page4k);
    let bm = BitmapArg {
        pgsize: K4,
        size: 8,
    };
    assert_eq!(
        c.dirty_pages(48, 4, Some((A, 64 << 10, bm)))
            .unwrap_err()
            .errno(),
        Errno::EINVAL,
        "without START"
    );
    c.dirty_pages(8, 1, None).unwrap();
    assert_eq!(
        c.dirty_pages(48, 4, Some((A, 64 << 10, bm))).unwrap(),
        Some(vec![0xffff])
    );
    assert_eq!(
        c.dirty_pages(48, 4, Some((A + K4, 60 << 10, bm)))
            .unwrap_err()
            .errno(),
        Errno::EINVAL
    );
    let bm8k = BitmapArg {
        pgsize: 8 << 10,
        size: 8,
    };
    assert_eq!(
        c.dirty_pages(48, 4, Some((A, 64 << 10, bm8k)))
            .unwrap_err()
            .errno(),
        Errno::EINVAL
    );
    c.dirty_pages(8, 2, None).unwrap();
    finish(&mut c);
}

#[test]
fn row_70_71_vaddr_invalidate_and_update() {
    let mut c = default_harness();
    let v = mmap(&mut c, "m", 8 * K4, Backing::Page4k);
    let w = mmap(&mut c, "n", 8 * K4, Backing::Page4k);
    map(&mut c, v, A, 8 * K4).unwrap();
    let inv = UnmapDma {
        flags: UNMAP_FLAG_VADDR,
        ..UnmapDma::range(A, 8 * K4)
    };
    assert_eq!(c.unmap_dma(&inv).unwrap().size, 8 * K4);
    assert_eq!(c.unmap_dma(&inv).unwrap_err().errno(), Errno::EINVAL);
    // Row 71: attach while a vaddr is invalid.
    assert_eq!(
        c.attach("d1", mock_domain(K4), vec![]).unwrap_err().errno(),
        Errno::EBUSY
    );
    assert_eq!(
        map_flags(&mut c, w, A, K4, MAP_FLAG_VADDR),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        map_flags(&mut c, w, A + G1, 8 * K4, MAP_FLAG_VADDR),
        Err(Errno::ENOENT)
    );
    assert_eq!(map_flags(&mut c, w, A, 8 * K4, MAP_FLAG_VADDR), Ok(()));
    assert_eq!(c.dmas().next().unwrap().vaddr, w);
    assert_eq!(c.locked_pages(), 8, "DMA kept its pages throughout");
    finish(&mut c);
}
