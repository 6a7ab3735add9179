//! ARM VMSAv8-64 stage-1 translation tables with a 48-bit input address, as Linux
//! io-pgtable-arm (`ARM_64_LPAE_S1`) builds them for an SMMUv3 or SMMUv2 context (Arm
//! Architecture Reference Manual for A-profile, DDI 0487, §D8.3 "Translation table descriptor
//! formats"; §D5.3 in older issues).
//!
//! | granule | levels | root | leaves |
//! |---|---|---|---|
//! | 4K | 0–3 | 512 entries | 4K page (L3), 2M block (L2), 1G block (L1) |
//! | 16K | 0–3 | 2 entries | 16K page (L3), 32M block (L2) |
//! | 64K | 1–3 | 64 entries | 64K page (L3), 512M block (L2) |
//!
//! Descriptor bits, as `arm_lpae_prot_to_pte` and `__arm_lpae_init_pte` set them for stage 1:
//!
//! | bit(s) | meaning |
//! |---|---|
//! | 1:0 | 0b11 table (levels < 3) or page (level 3); 0b01 block |
//! | 4:2 | AttrIndx: 1 (`ARM_LPAE_MAIR_ATTR_IDX_CACHE`) with `IOMMU_CACHE`, else 0 (non-cacheable) |
//! | 6 | AP[1]: unprivileged access (every mapping that is not `IOMMU_PRIV`) |
//! | 7 | AP[2]: read-only (READ without WRITE) |
//! | 9:8 | SH: 0b11 inner shareable with `IOMMU_CACHE`, else 0b10 outer shareable |
//! | 10 | AF: access flag, always set |
//! | 11 | nG: not global, set on every stage-1 leaf by io-pgtable-arm |
//! | 47:granule | output address (of the page / block, or of the next table) |
//!
//! A leaf is always readable (AF set, AP[2] only removes write): WRITE alone reads back as
//! READ|WRITE and no access at all as READ (`Format::effective_prot`). Execute-never (bit 54) is
//! not modelled.

use super::radix::Desc;
use crate::{Granule, Prot};

/// Descriptor type bits[1:0].
pub const TYPE_MASK: u64 = 0b11;
/// Table descriptor (levels < 3) or page descriptor (level 3).
pub const TYPE_TABLE_OR_PAGE: u64 = 0b11;
/// Block descriptor.
pub const TYPE_BLOCK: u64 = 0b01;
/// AttrIndx[4:2] shift.
pub const ATTRINDX_SHIFT: u32 = 2;
/// MAIR index of normal write-back cacheable memory (`ARM_LPAE_MAIR_ATTR_IDX_CACHE`).
pub const ATTR_IDX_CACHE: u64 = 1;
/// AP[1]: EL0 (unprivileged) access.
pub const AP_UNPRIV: u64 = 1 << 6;
/// AP[2]: read-only.
pub const AP_RDONLY: u64 = 1 << 7;
/// SH[9:8] = 0b11, inner shareable.
pub const SH_IS: u64 = 0b11 << 8;
/// SH[9:8] = 0b10, outer shareable.
pub const SH_OS: u64 = 0b10 << 8;
/// Access flag.
pub const AF: u64 = 1 << 10;
/// Not global.
pub const NG: u64 = 1 << 11;

fn leaf_attrs(prot: Prot, page: bool) -> u64 {
    let mut a = if page { TYPE_TABLE_OR_PAGE } else { TYPE_BLOCK };
    a |= NG | AF | AP_UNPRIV;
    if !prot.contains(Prot::WRITE) {
        a |= AP_RDONLY;
    }
    if prot.contains(Prot::CACHE) {
        a |= (ATTR_IDX_CACHE << ATTRINDX_SHIFT) | SH_IS;
    } else {
        a |= SH_OS;
    }
    a
}

fn leaf_prot(raw: u64) -> Prot {
    if raw & AP_RDONLY != 0 {
        Prot::READ
    } else {
        Prot::RW
    }
}

fn prot_ok(_: Prot) -> bool {
    true
}

/// The description of a 48-bit stage-1 table with `granule`.
pub(crate) fn desc(granule: Granule) -> Desc {
    let (granule_shift, levels, leaf_depths) = match granule {
        // Depths 0..3 = levels 0..3; leaves at levels 1, 2, 3.
        Granule::K4 => (12, 4, 0b1110),
        // Depths 0..3 = levels 0..3; leaves at levels 2, 3.
        Granule::K16 => (14, 4, 0b1100),
        // Depths 0..2 = levels 1..3; leaves at levels 2, 3.
        Granule::K64 => (16, 3, 0b110),
    };
    Desc {
        granule_shift,
        bits_per_level: granule_shift - 3,
        levels,
        ia_bits: 48,
        leaf_depths,
        root_level: 4 - levels,
        descending: false,
        oa_mask: ((1u64 << 48) - 1) & !((1u64 << granule_shift) - 1),
        table_attrs: TYPE_TABLE_OR_PAGE,
        block_mask: TYPE_MASK,
        block_val: TYPE_BLOCK,
        leaf_attrs,
        leaf_prot,
        prot_ok,
    }
}
