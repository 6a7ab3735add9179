//! Descriptor encodings, bit by bit.
//!
//! x86_64: Intel Virtualization Technology for Directed I/O Architecture Specification, §9.8
//! "Second-Stage Paging Entries" (Table 9-x "Format of Second-Stage Paging Entries"; rev 3.x/4.x).
//! ARM: Arm Architecture Reference Manual for A-profile (DDI 0487), §D8.3 "Translation table
//! descriptor formats" (§D5.3 in older issues), with the stage-1 attributes Linux io-pgtable-arm
//! sets (`arm_lpae_prot_to_pte`).

mod common;

use common::{domain, map_errno, x86, G1, K4, M2};
use iommu::format::{arm64, x86_64};
use iommu::{Format, Granule, Prot, Pte};

/// VT-d §9.8: address field bits 51:12.
fn vtd_addr(raw: u64) -> u64 {
    raw & (((1u64 << 52) - 1) & !0xfff)
}

#[test]
fn x86_64_read_only_4k_pte_has_r_not_w_not_ps() {
    // VT-d §9.8 (Second-Stage PTE): bit 0 R, bit 1 W, bit 7 PS (not on a 4K PTE), bits 51:12 address.
    let mut d = x86();
    d.map(0x7000, 0x1234_5000, K4, Prot::READ).unwrap();
    let pte = d.leaf_pte(0x7abc).unwrap();
    assert_eq!(pte.level, 1);
    assert_eq!(pte.raw & 1, 1, "R");
    assert_eq!(pte.raw & 2, 0, "W");
    assert_eq!(pte.raw & (1 << 7), 0, "PS");
    assert_eq!(vtd_addr(pte.raw), 0x1234_5000);
    assert_eq!(pte.raw, 0x1234_5000 | x86_64::PTE_READ);
    assert_eq!(d.translate(0x7000).unwrap().prot, Prot::READ);
}

#[test]
fn x86_64_read_write_2m_pde_has_r_w_ps() {
    // VT-d §9.8 (Second-Stage PDE mapping a 2-MByte page): R|W|PS, address bits 51:21.
    let mut d = x86();
    d.map(0x20_0000, 0x8_4020_0000, M2, Prot::RW.union(Prot::CACHE))
        .unwrap();
    let pte = d.leaf_pte(0x3f_ffff).unwrap();
    assert_eq!(
        pte,
        Pte {
            level: 2,
            raw: 0x8_4020_0000 | 0b11 | (1 << 7)
        }
    );
    assert_eq!(vtd_addr(pte.raw), 0x8_4020_0000);
}

#[test]
fn x86_64_1g_pdpe_has_ps_and_1g_address() {
    // VT-d §9.8 (Second-Stage PDPE mapping a 1-GByte page): PS set, address bits 51:30.
    let mut d = x86();
    d.map(0x40_0000_0000, 0xf_c000_0000, G1, Prot::WRITE)
        .unwrap();
    let pte = d.leaf_pte(0x40_0000_0000 + 12345).unwrap();
    assert_eq!(
        pte,
        Pte {
            level: 3,
            raw: 0xf_c000_0000 | x86_64::PTE_WRITE | x86_64::PTE_PS
        }
    );
    assert_eq!(d.translate(0x40_0000_0000).unwrap().prot, Prot::WRITE);
}

#[test]
fn x86_64_walk_reads_table_entries_with_r_w_and_a_table_address() {
    // VT-d §9.8: non-leaf (PML4E/PDPE/PDE) entries hold the next table's address in bits 51:12;
    // Linux intel-iommu sets R|W on them.
    let mut d = x86();
    d.map(0x1000, 0x5000, K4, Prot::READ).unwrap();
    let walk = d.walk(0x1000);
    assert_eq!(
        walk.iter().map(|p| p.level).collect::<Vec<_>>(),
        vec![4, 3, 2, 1]
    );
    for t in &walk[..3] {
        assert_eq!(
            t.raw & 0xfff,
            0b11,
            "table entry R|W and nothing else in the low bits"
        );
        assert_eq!(t.raw & (1 << 7), 0, "no PS on a table entry");
        let addr = vtd_addr(t.raw);
        assert!((1 << 40..1 << 48).contains(&addr));
    }
    assert_eq!(walk[3].raw, 0x5000 | 1);
    // Three distinct table pages below the root.
    let mut addrs: Vec<u64> = walk[..3].iter().map(|p| vtd_addr(p.raw)).collect();
    addrs.dedup();
    assert_eq!(addrs.len(), 3);
}

#[test]
fn x86_64_5level_and_3level_leaf_levels() {
    // VT-d §9.8: with 5-level tables the root is the PML5E level; leaves stay at levels 1–3.
    let mut d5 = domain(Format::X86_64 { levels: 5 });
    d5.map(0x100_0000_0000_0000, 0x4000_0000, G1, Prot::RW)
        .unwrap();
    let w = d5.walk(0x100_0000_0000_0000);
    assert_eq!(w.iter().map(|p| p.level).collect::<Vec<_>>(), vec![5, 4, 3]);
    assert_eq!(w[2].raw, 0x4000_0000 | 0b11 | (1 << 7));
    let mut d3 = domain(Format::X86_64 { levels: 3 });
    d3.map(0x40_0000_0000 - G1, 0, G1, Prot::RW).unwrap();
    assert_eq!(
        d3.walk(0x7f_c000_0000).len(),
        1,
        "a 1G leaf sits in the root of a 3-level table"
    );
}

#[test]
fn x86_64_refuses_a_mapping_without_read_or_write() {
    // VT-d §9.8: an entry with R = W = 0 is not present; intel-iommu returns -EINVAL.
    let mut d = x86();
    assert_eq!(map_errno(&mut d, 0x1000, 0x1000, K4, Prot::NONE), 22);
    assert_eq!((d.total_leaves(), d.table_pages()), (0, 1));
}

#[test]
fn x86_64_refuses_a_physical_address_beyond_bit_51() {
    // VT-d §9.8: the address field ends at bit 51 (HAW ≤ 52).
    let mut d = x86();
    assert_eq!(map_errno(&mut d, 0x1000, 1 << 52, K4, Prot::RW), 34);
    d.map(0x1000, (1 << 52) - K4, K4, Prot::RW).unwrap();
}

/// ARM stage-1 expected descriptor (DDI 0487 §D8.3), from its fields.
fn arm_desc(paddr: u64, page: bool, read_only: bool, cache: bool) -> u64 {
    let mut d = paddr | if page { 0b11 } else { 0b01 };
    d |= 1 << 10; // AF
    d |= 1 << 11; // nG (io-pgtable-arm sets it on every stage-1 leaf)
    d |= 1 << 6; // AP[1]: unprivileged access
    if read_only {
        d |= 1 << 7; // AP[2]: read-only
    }
    if cache {
        d |= 1 << 2; // AttrIndx = 1 (IDX_CACHE)
        d |= 0b11 << 8; // SH = inner shareable
    } else {
        d |= 0b10 << 8; // AttrIndx = 0 (non-cacheable), SH = outer shareable
    }
    d
}

/// Map a page and a block of `granule` read-only and read-write and check the descriptors.
fn check_arm(granule: Granule, page: u64, page_level: u32, block: u64, block_level: u32) {
    let mut d = domain(Format::Arm64 { granule });
    let ro_cache = Prot::READ.union(Prot::CACHE);
    let rw = Prot::RW;
    // Page, read-only, cacheable.
    let (pi, pp) = (3 * block + 5 * page, 0x12_0000_0000 + 7 * page);
    d.map(pi, pp, page, ro_cache).unwrap();
    assert_eq!(
        d.leaf_pte(pi),
        Some(Pte {
            level: page_level,
            raw: arm_desc(pp, true, true, true)
        })
    );
    // Page, read-write, non-cacheable.
    d.map(pi + page, pp + 9 * page, page, rw).unwrap();
    assert_eq!(
        d.leaf_pte(pi + page),
        Some(Pte {
            level: page_level,
            raw: arm_desc(pp + 9 * page, true, false, false)
        })
    );
    // Block, read-only and read-write.
    let (bi, bp) = (8 * block, 0x40_0000_0000 + 3 * block);
    d.map(bi, bp, block, ro_cache).unwrap();
    assert_eq!(
        d.leaf_pte(bi + block - 1),
        Some(Pte {
            level: block_level,
            raw: arm_desc(bp, false, true, true)
        })
    );
    d.map(bi + block, bp + block, block, Prot::RW.union(Prot::CACHE))
        .unwrap();
    assert_eq!(
        d.leaf_pte(bi + block),
        Some(Pte {
            level: block_level,
            raw: arm_desc(bp + block, false, false, true)
        })
    );
    assert_eq!(d.leaves_of(page), 2);
    assert_eq!(d.leaves_of(block), 2);
    assert_eq!(d.translate(pi).unwrap().prot, Prot::READ);
    assert_eq!(d.translate(bi + block).unwrap().prot, Prot::RW);
    // Table descriptors on the way: bits[1:0] = 0b11, next-level table address in bits 47:granule.
    let walk = d.walk(pi);
    for t in &walk[..walk.len() - 1] {
        assert_eq!(t.raw & 0b11, arm64::TYPE_TABLE_OR_PAGE);
        let addr = t.raw & ((1u64 << 48) - 1) & !(page - 1);
        assert!(addr >= 1 << 40, "table address {addr:#x}");
        assert_eq!(
            t.raw & (page - 1),
            0b11,
            "no attributes on a stage-1 table descriptor"
        );
    }
}

#[test]
fn arm64_4k_page_and_2m_block_descriptors_ro_and_rw() {
    // DDI 0487 §D8.3: 4KB granule, level-3 page descriptor (0b11) and level-2 block (0b01);
    // AP[2] (bit 7) read-only, AF (bit 10), AttrIndx[4:2], SH[9:8].
    check_arm(Granule::K4, K4, 3, M2, 2);
}

#[test]
fn arm64_4k_1g_block_is_a_level_1_descriptor() {
    // DDI 0487 §D8.3: 4KB granule, level-1 block descriptor maps 1GB, OA bits 47:30.
    let mut d = domain(Format::Arm64 {
        granule: Granule::K4,
    });
    d.map(G1, 5 * G1, G1, Prot::READ).unwrap();
    assert_eq!(
        d.leaf_pte(G1),
        Some(Pte {
            level: 1,
            raw: arm_desc(5 * G1, false, true, false)
        })
    );
    assert_eq!(
        d.walk(G1).iter().map(|p| p.level).collect::<Vec<_>>(),
        vec![0, 1]
    );
}

#[test]
fn arm64_16k_page_and_32m_block_descriptors_ro_and_rw() {
    // DDI 0487 §D8.3: 16KB granule, level-3 page (16KB, OA bits 47:14) and level-2 block (32MB).
    check_arm(Granule::K16, 1 << 14, 3, 1 << 25, 2);
}

#[test]
fn arm64_64k_page_and_512m_block_descriptors_ro_and_rw() {
    // DDI 0487 §D8.3: 64KB granule, level-3 page (64KB, OA bits 47:16) and level-2 block (512MB).
    check_arm(Granule::K64, 1 << 16, 3, 1 << 29, 2);
}

#[test]
fn arm64_write_only_reads_back_read_write_and_none_read_only() {
    // DDI 0487 §D8.3 (stage-1 AP[2:1]): a valid descriptor always permits reads, so WRITE alone
    // is encoded read-write (AP[2] clear), and no access as read-only; see Format::effective_prot.
    let f = Format::Arm64 {
        granule: Granule::K4,
    };
    let mut d = domain(f);
    d.map(0x1000, 0x1000, K4, Prot::WRITE).unwrap();
    d.map(0x2000, 0x2000, K4, Prot::NONE).unwrap();
    assert_eq!(d.leaf_pte(0x1000).unwrap().raw & (1 << 7), 0);
    assert_eq!(
        d.translate(0x1000).unwrap().prot,
        f.effective_prot(Prot::WRITE)
    );
    assert_eq!(
        d.translate(0x2000).unwrap().prot,
        f.effective_prot(Prot::NONE)
    );
}

#[test]
fn arm64_16k_uses_the_second_entry_of_its_two_entry_level_0_table() {
    // DDI 0487 §D8.3 with a 48-bit IA and 16KB granule: level 0 resolves IA bit 47 only.
    let mut d = domain(Format::Arm64 {
        granule: Granule::K16,
    });
    let top = 1u64 << 47;
    d.map(top, 0x10_0000, 1 << 14, Prot::RW).unwrap();
    d.map(0, 0x20_0000, 1 << 14, Prot::RW).unwrap();
    let (w_hi, w_lo) = (d.walk(top), d.walk(0));
    assert_eq!(w_hi[0].level, 0);
    assert_ne!(w_hi[0].raw, w_lo[0].raw, "two distinct level-0 entries");
    assert_eq!(d.iova_to_phys(top + 5), Some(0x10_0005));
    assert_eq!(d.aperture().1, (1 << 48) - 1);
}

#[test]
fn arm64_refuses_a_physical_address_beyond_48_bits() {
    // DDI 0487 §D8.3: a 48-bit output address; io-pgtable-arm returns -ERANGE (paddr >> oas).
    let mut d = domain(Format::Arm64 {
        granule: Granule::K64,
    });
    assert_eq!(map_errno(&mut d, 0, 1 << 48, 1 << 16, Prot::RW), 34);
    assert_eq!(d.total_leaves(), 0);
}
