//! Table semantics of the radix formats (and the mock): whole-leaf unmap (spec §4.3), overlap,
//! table-page accounting, fault injection during table allocation, and the u64 edges.

use std::sync::Arc;

mod common;

use common::{domain, map_errno, x86, G1, K4, M2};
use iommu::{Domain, DomainConfig, FaultInjector, FaultPoint, Format, Gather, Granule, Leaf, Prot};

const K2: u64 = 1 << 11;
const T1: u64 = 1 << 40;

const RADIX: [Format; 6] = [
    Format::X86_64 { levels: 3 },
    Format::X86_64 { levels: 4 },
    Format::X86_64 { levels: 5 },
    Format::Arm64 {
        granule: Granule::K4,
    },
    Format::Arm64 {
        granule: Granule::K16,
    },
    Format::Arm64 {
        granule: Granule::K64,
    },
];

/// (page, block) = the two smallest leaf sizes of a format.
fn page_block(f: Format) -> (u64, u64) {
    let b = f.supported_pgsizes();
    let page = 1u64 << b.trailing_zeros();
    let block = 1u64 << (b & !page).trailing_zeros();
    (page, block)
}

fn leaves(d: &Domain) -> Vec<Leaf> {
    let mut v = Vec::new();
    d.for_each_leaf(&mut |l| v.push(l));
    v
}

/// Everything observable about a table: its leaves, table pages and leaf counts.
fn snapshot(d: &Domain) -> (Vec<Leaf>, u64, Vec<(u64, u64)>) {
    (leaves(d), d.table_pages(), d.leaves_by_size())
}

#[test]
fn unmapping_4k_at_the_start_of_a_block_removes_the_whole_block() {
    // spec §4.3: a request smaller than a leaf removes the leaf whole and returns its size
    // (intel_iommu_unmap "unmap more than the size argument").
    for f in RADIX {
        let (page, block) = page_block(f);
        let mut d = domain(f);
        d.map(4 * block, 2 * block, block, Prot::RW).unwrap();
        assert_eq!(d.leaves_of(block), 1, "{f:?}");
        assert_eq!(d.unmap(4 * block, page), block, "{f:?}");
        assert_eq!((d.total_leaves(), d.table_pages()), (0, 1), "{f:?}");
    }
}

#[test]
fn unmapping_inside_a_block_removes_it_and_the_iotlb_span_is_the_whole_block() {
    // spec §4.3 with iommu_unmap_fast: the whole removed leaf stays stale until iotlb_sync.
    let mut d = x86();
    d.map(M2, 0, M2, Prot::RW).unwrap();
    let mut g = Gather::new();
    assert_eq!(d.unmap_fast(M2 + 5 * K4, K4, &mut g), M2);
    assert!(
        d.iotlb_stale(M2, K4),
        "the start of the removed 2M leaf is stale"
    );
    assert!(d.iotlb_stale(2 * M2 - K4, K4));
    d.iotlb_sync(&mut g);
    assert!(!d.iotlb_stale(M2, M2));
}

#[test]
fn unmapping_where_nothing_is_mapped_returns_0() {
    // spec §4.3: unmap of nothing ⇒ 0 bytes.
    for f in RADIX {
        let mut d = domain(f);
        let (page, _) = page_block(f);
        assert_eq!(d.unmap(0, page), 0);
        d.map(16 * page, 0, page, Prot::RW).unwrap();
        assert_eq!(d.unmap(0, 16 * page), 0, "{f:?}: hole before the leaf");
        assert_eq!(d.unmap(17 * page, page), 0, "{f:?}: hole after the leaf");
        // Beyond the input-address range, up to the top of u64: nothing, no overflow.
        assert_eq!(d.unmap(u64::MAX - (page - 1), page), 0);
        assert_eq!(d.unmap(f.max_iova() + 1, page), 0);
        assert_eq!(d.total_leaves(), 1);
        assert_eq!(d.stats().iotlb_flushes, 0);
    }
}

#[test]
fn iova_to_phys_inside_a_1g_leaf_is_base_plus_offset() {
    // spec §4.3: iova_to_phys returns the phys for any byte inside a leaf.
    let mut d = x86();
    d.map(3 * G1, 7 * G1, G1, Prot::RW).unwrap();
    assert_eq!(
        d.iova_to_phys(3 * G1 + 0x1234_5678),
        Some(7 * G1 + 0x1234_5678)
    );
    assert_eq!(d.iova_to_phys(4 * G1 - 1), Some(8 * G1 - 1));
    assert_eq!(d.iova_to_phys(4 * G1), None);
    assert_eq!(d.iova_to_phys(u64::MAX), None);
    let l = d.translate(3 * G1 + 99).unwrap();
    assert_eq!(
        (l.iova, l.paddr, l.size, l.prot),
        (3 * G1, 7 * G1, G1, Prot::RW)
    );
}

#[test]
fn map_overlapping_an_existing_leaf_fails_and_leaves_the_table_unchanged() {
    // spec §1.3/§3.4: EEXIST; iommu_map is all or nothing.
    for f in RADIX {
        let (page, block) = page_block(f);
        let mut d = domain(f);
        d.map(2 * block, 0, block, Prot::RW).unwrap(); // a block leaf
        d.map(4 * block + page, page, page, Prot::READ).unwrap(); // a page in a table
        let before = snapshot(&d);
        // (iova, paddr, size, prot) of maps that must each fail with EEXIST, in this order.
        let clashes = [
            // A page inside the block.
            (2 * block + page, 0, page, Prot::RW),
            // A block where a table of pages is.
            (4 * block, 0, block, Prot::RW),
            // A run whose first block is free and whose second is taken: rolled back.
            (block, 5 * block, 2 * block, Prot::RW),
            // A run of pages that runs into the page: rolled back, new tables freed.
            (3 * block + block / 2, page, block / 2 + 2 * page, Prot::RW),
            // Exactly the same leaf again.
            (4 * block + page, page, page, Prot::READ),
        ];
        for (iova, paddr, size, prot) in clashes {
            let errno = map_errno(&mut d, iova, paddr, size, prot);
            assert_eq!(errno, 17, "{f:?}: map at {iova:#x}");
        }
        assert_eq!(snapshot(&d), before, "{f:?}");
    }
}

#[test]
fn for_each_leaf_is_in_iova_order_and_agrees_with_translate() {
    let mut d = x86();
    let maps = [(5 * G1, G1), (0x1000, K4), (T1, M2), (M2, M2), (0x3000, K4)];
    for &(iova, size) in &maps {
        d.map(iova, iova, size, Prot::RW).unwrap();
    }
    let got = leaves(&d);
    let mut want: Vec<u64> = maps.iter().map(|m| m.0).collect();
    want.sort();
    assert_eq!(got.iter().map(|l| l.iova).collect::<Vec<_>>(), want);
    for l in got {
        assert_eq!(d.translate(l.iova + l.size - 1), Some(l));
    }
}

#[test]
fn table_pages_x86_64_4level_1tib_of_1g_leaves_is_3() {
    // Root (PML4) + 2 PDPT pages (512 GiB each), the 1G leaves in the PDPTs.
    let mut d = x86();
    d.map(0, 0, T1, Prot::RW).unwrap();
    assert_eq!(d.leaves_of(G1), 1024);
    assert_eq!(d.table_pages(), 3);
    assert_eq!(d.unmap(0, T1), T1);
    assert_eq!(d.table_pages(), 1, "only the root is left");
}

#[test]
fn table_pages_x86_64_4level_1tib_of_2m_leaves_is_1027() {
    // 1 TiB of 2M leaves: root + 2 PDPTs + 1024 PDs (one per GiB) = 1027. paddr is 2M- but not
    // 1G-aligned relative to iova, so iommu_pgsize never picks 1G (spec §3.4).
    let mut d = x86();
    d.map(0, M2, T1, Prot::RW).unwrap();
    assert_eq!(d.leaves_of(M2), T1 / M2);
    assert_eq!(d.leaves_of(G1), 0);
    assert_eq!(d.table_pages(), 1 + 2 + 1024);
    assert_eq!(d.unmap(0, T1), T1);
    assert_eq!(d.table_pages(), 1);
    assert_eq!(d.total_leaves(), 0);
}

#[test]
fn table_pages_x86_64_4level_512g_of_1g_plus_512g_of_2m_is_515() {
    // The figure 515 = 1 + 2 + 512: the root, two PDPTs, and 512 PDs, i.e. 512 GiB of
    // 1G leaves (no PD needed) plus 512 GiB of 2M leaves (one PD per GiB). 1 TiB of 2M leaves
    // alone needs 1027 (test above).
    let mut d = x86();
    let half = T1 / 2;
    d.map(0, 0, half, Prot::RW).unwrap();
    d.map(half, half + M2, half, Prot::RW).unwrap();
    assert_eq!((d.leaves_of(G1), d.leaves_of(M2)), (512, half / M2));
    assert_eq!(d.table_pages(), 515);
    // Unmapping everything, sparse range far beyond what is mapped, frees all but the root.
    assert_eq!(d.unmap(0, 1 << 47), T1);
    assert_eq!(d.table_pages(), 1);
}

#[test]
fn table_pages_x86_64_5level_and_3level() {
    // 5 levels: 1 TiB of 1G leaves = root (PML5) + 1 PML4 + 2 PDPTs.
    let mut d5 = domain(Format::X86_64 { levels: 5 });
    d5.map(0, 0, T1, Prot::RW).unwrap();
    assert_eq!(d5.table_pages(), 4);
    // A 4K leaf at the top of the 57-bit space: PML4, PDPT, PD, PT under the root.
    d5.map((1 << 57) - K4, 0, K4, Prot::RW).unwrap();
    assert_eq!(d5.table_pages(), 8);
    assert_eq!(d5.unmap(0, 1 << 57), T1 + K4);
    assert_eq!(d5.table_pages(), 1);
    // 3 levels (39 bits): 1G leaves live in the root; a 4K leaf needs a PD and a PT.
    let mut d3 = domain(Format::X86_64 { levels: 3 });
    assert_eq!(map_errno(&mut d3, 0, 0, T1, Prot::RW), 34); // beyond 2^39
    d3.map(0, 0, T1 / 4, Prot::RW).unwrap();
    assert_eq!((d3.leaves_of(G1), d3.table_pages()), (256, 1));
    d3.map(T1 / 2 - K4, 0, K4, Prot::RW).unwrap();
    assert_eq!(d3.table_pages(), 3);
    d3.unmap(0, T1 / 2);
    assert_eq!(d3.table_pages(), 1);
}

#[test]
fn table_pages_arm64_granules() {
    // 4K granule, levels 0–3: a 1G block needs a level-1 table; a 4K page three tables.
    let mut d = domain(Format::Arm64 {
        granule: Granule::K4,
    });
    d.map(0, 0, G1, Prot::RW).unwrap();
    assert_eq!(d.table_pages(), 2);
    d.map(G1, 0x1000, K4, Prot::RW).unwrap();
    assert_eq!(d.table_pages(), 4);
    // 16K granule, levels 0–3 (2-entry level 0): 32M block needs L1 + L2; 64 GiB (one level-1
    // entry) of 32M blocks needs one L2 table; 128 GiB needs two.
    let mut d = domain(Format::Arm64 {
        granule: Granule::K16,
    });
    d.map(0, 0, 128 * G1, Prot::RW).unwrap();
    assert_eq!(d.leaves_of(1 << 25), (128 * G1) >> 25);
    assert_eq!(d.table_pages(), 1 + 1 + 2);
    // 64K granule, levels 1–3 (64-entry level 1): 4 TiB per level-1 entry, 512M per L2 entry.
    let mut d = domain(Format::Arm64 {
        granule: Granule::K64,
    });
    d.map(0, 0, 8 * T1, Prot::RW).unwrap();
    assert_eq!(d.leaves_of(1 << 29), (8 * T1) >> 29);
    assert_eq!(d.table_pages(), 1 + 2);
    d.map(8 * T1, 1 << 16, 1 << 16, Prot::RW).unwrap();
    assert_eq!(d.table_pages(), 1 + 2 + 2);
    assert_eq!(d.unmap(0, 1 << 48), 8 * T1 + (1 << 16));
    assert_eq!(d.table_pages(), 1);
}

#[test]
fn unmap_of_a_sparse_terabyte_range_is_fast_and_exact() {
    // A hole at level L skips to the next L boundary: 256 TiB of mostly holes.
    let mut d = x86();
    let spots = [0u64, 3 * T1 + 5 * G1, 100 * T1 + M2, 255 * T1 + 7 * K4];
    for &s in &spots {
        d.map(s, 0x10_0000, K4, Prot::RW).unwrap();
    }
    let t0 = std::time::Instant::now();
    for _ in 0..100 {
        assert_eq!(d.unmap(K4, 3 * T1), 0, "holes between the first two leaves");
        assert_eq!(d.unmap(4 * T1, 96 * T1), 0);
        assert_eq!(d.unmap(101 * T1, 154 * T1), 0);
        assert_eq!(d.unmap(256 * T1, (1 << 48) - 256 * T1), 0);
    }
    assert_eq!(d.unmap(0, 1 << 48), 4 * K4);
    assert!(t0.elapsed().as_secs() < 5);
    assert_eq!(d.table_pages(), 1);
}

#[test]
fn fault_injection_in_table_allocation_leaves_the_table_unchanged() {
    // Every table-page allocation is an injectable point (fail-nth); a failed map is a no-op
    // (DESIGN invariant 1).
    for f in RADIX {
        let (page, block) = page_block(f);
        let mut d = domain(f);
        d.map(0, 0, block, Prot::RW).unwrap(); // something already there
        let faults = FaultInjector::new();
        d.set_faults(Some(Arc::clone(&faults)));
        // Pages across a block boundary, then blocks across a higher boundary: needs several
        // new tables, some after leaves were installed.
        let (iova, pa) = (7 * block - 2 * page, 3 * page);
        let before = snapshot(&d);
        let mut n = 1;
        loop {
            faults.arm(n, &[FaultPoint::TableAlloc]);
            match d.map(iova, pa, 4 * page, Prot::RW) {
                Ok(()) => break,
                Err(e) => {
                    assert_eq!(e.errno().code(), 12, "{f:?} n={n}");
                    assert!(faults.fired());
                    assert_eq!(snapshot(&d), before, "{f:?} n={n}");
                }
            }
            n += 1;
        }
        assert!(
            n >= 3,
            "{f:?}: the map needed at least 2 table pages (n = {n})"
        );
        assert!(!faults.fired());
        faults.disarm();
        assert_eq!(d.leaves_of(page), 4);
        assert_eq!(d.unmap(iova, 4 * page), 4 * page);
        assert_eq!(snapshot(&d), before);
    }
}

#[test]
fn fault_injection_x86_64_map_of_one_4k_page_needs_3_tables() {
    let mut d = x86();
    let faults = FaultInjector::new();
    d.set_faults(Some(Arc::clone(&faults)));
    for n in 1..=3 {
        faults.arm(n, &[FaultPoint::TableAlloc]);
        assert_eq!(map_errno(&mut d, 0x1000, 0x1000, K4, Prot::RW), 12);
        assert_eq!((d.total_leaves(), d.table_pages()), (0, 1), "n={n}");
    }
    faults.arm(4, &[FaultPoint::TableAlloc]);
    d.map(0x1000, 0x1000, K4, Prot::RW).unwrap();
    assert_eq!((faults.seen(), d.table_pages()), (3, 4));
}

#[test]
fn mock_with_a_2k_page_size_maps_and_unmaps() {
    // The mock takes any bitmap, sub-4K included (the kernel's iommufd selftest mock uses 2K).
    let mut d = Domain::new(DomainConfig {
        format: Format::Mock,
        pgsize_bitmap: Some(K2 | K4 | M2),
        aperture: None,
    })
    .unwrap();
    assert_eq!(d.min_pgsize(), K2);
    // 0x800 → 0x1800 for 8K: 2K, then 4K×1 ... as iommu_pgsize splits it (spec §3.4).
    d.map(0x800, 0x1800, 0x2000, Prot::RW).unwrap();
    assert_eq!(d.leaves_by_size(), vec![(K2, 2), (K4, 1), (M2, 0)]);
    assert_eq!(d.iova_to_phys(0x1234), Some(0x2234));
    assert_eq!(d.unmap(0x800, K2), K2);
    assert_eq!(d.unmap(0x1000, K2), K4, "a 4K leaf unmaps whole");
    assert_eq!(d.unmap(0x2000, K2), K2);
    assert_eq!(d.total_leaves(), 0);
    assert_eq!(d.unmap(0x800, K2), 0);
    assert_eq!(d.table_pages(), 0);
}

/// A mock domain with one 2M leaf (→ paddr 2M) that ends at the top of u64, and its IOVA.
fn mock_with_a_2m_leaf_at_the_top() -> (Domain, u64) {
    let mut d = domain(Format::Mock);
    let top = u64::MAX - (M2 - 1);
    d.map(top, M2, M2, Prot::RW).unwrap();
    (d, top)
}

#[test]
fn mock_at_the_top_of_u64_unmaps_a_whole_2m_leaf_without_overflow() {
    let (mut d, top) = mock_with_a_2m_leaf_at_the_top();
    let mut g = Gather::new();
    assert_eq!(d.unmap_fast(u64::MAX - (K4 - 1), K4, &mut g), M2);
    assert!(d.iotlb_stale(top, K4));
    d.iotlb_sync(&mut g);
    assert!(!d.iotlb_stale(top, M2));
}

#[test]
fn domain_rejects_x86_64_level_counts_other_than_3_4_5() {
    for levels in [0u8, 2, 6, 7, 255] {
        let e = Domain::new(DomainConfig::new(Format::X86_64 { levels })).unwrap_err();
        assert_eq!(e.errno().code(), 22);
    }
}

#[test]
fn bench_shape_256_pages_stay_4k_in_one_map_pages_call() {
    // The benchmark's 256-leaf map: iova 0x1000, paddr 0x2000 are not congruent mod 2M, so
    // iommu_pgsize keeps 4K for the whole run (spec §3.4), in one map_pages call.
    let mut d = x86();
    d.map(0x1000, 0x2000, 256 * K4, Prot::RW).unwrap();
    assert_eq!(d.leaves_of(K4), 256);
    assert_eq!(d.total_leaves(), 256);
    assert_eq!(d.stats().map_pages_calls, 1);
    assert_eq!(d.table_pages(), 4);
    assert_eq!(d.unmap(0x1000, 256 * K4), 256 * K4);
    assert_eq!(d.table_pages(), 1);
}

#[test]
fn phys_run_stops_at_the_top_of_u64_and_at_physical_gaps() {
    let (d, top) = mock_with_a_2m_leaf_at_the_top();
    assert_eq!(d.phys_run(top + K4, u64::MAX), Some((M2 + K4, M2 - K4)));
    let mut d = x86();
    d.map(0, 0x10_0000, 2 * K4, Prot::RW).unwrap();
    d.map(2 * K4, 0x50_0000, K4, Prot::RW).unwrap();
    assert_eq!(d.phys_run(0, 16 * K4), Some((0x10_0000, 2 * K4)));
    assert_eq!(d.phys_run(3 * K4, K4), None);
}
