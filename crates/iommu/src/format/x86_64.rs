//! Intel VT-d second-level (second-stage) paging entries, the tables intel-iommu builds for a
//! DMA-remapping domain (Intel Virtualization Technology for Directed I/O, Architecture
//! Specification, §9.8 "Second-Stage Paging Entries", Table 9-x "Format of Second-Stage Paging
//! Entries" in revisions 3.x/4.x; "Second-Level Paging Entries" in older revisions).
//!
//! 4 KiB table pages of 512 entries, 9 bits per level, 3, 4 or 5 levels (39, 48 or 57 bits of
//! IOVA). Leaves at level 1 (4 KiB PTE), level 2 (2 MiB, PS set) and level 3 (1 GiB, PS set).
//!
//! | bit(s) | meaning |
//! |---|---|
//! | 0 | R: read allowed |
//! | 1 | W: write allowed |
//! | 7 | PS: this level-2/3 entry maps a super page (absent on level-1 PTEs) |
//! | 51:12 | address: of the page / super page, or of the next table page |
//!
//! Non-leaf entries carry R|W as well, as Linux intel-iommu sets `DMA_PTE_READ | DMA_PTE_WRITE`
//! on directory entries (`pfn_to_dma_pte`). An entry with neither R nor W is not present, so a
//! mapping that grants no access cannot be encoded (intel-iommu's `__domain_mapping` returns
//! `-EINVAL`).

use super::radix::Desc;
use crate::Prot;

/// R: the device may read.
pub const PTE_READ: u64 = 1 << 0;
/// W: the device may write.
pub const PTE_WRITE: u64 = 1 << 1;
/// PS: super page (2 MiB at level 2, 1 GiB at level 3).
pub const PTE_PS: u64 = 1 << 7;
/// Address bits 51:12.
pub const PTE_ADDR: u64 = ((1u64 << 52) - 1) & !0xfff;

fn leaf_attrs(prot: Prot, page: bool) -> u64 {
    let mut a = 0;
    if prot.contains(Prot::READ) {
        a |= PTE_READ;
    }
    if prot.contains(Prot::WRITE) {
        a |= PTE_WRITE;
    }
    if !page {
        a |= PTE_PS;
    }
    a
}

fn leaf_prot(raw: u64) -> Prot {
    Prot((raw & (PTE_READ | PTE_WRITE)) as u8)
}

fn prot_ok(prot: Prot) -> bool {
    prot.rw_bits() != Prot::NONE
}

/// The description of a `levels`-level (3, 4 or 5) VT-d second-level table.
pub(crate) fn desc(levels: u32) -> Desc {
    // Leaves at levels 1, 2, 3 = depths levels-1, levels-2, levels-3.
    let leaf_depths = (0b111u32 << (levels - 3)) & ((1 << levels) - 1);
    Desc {
        granule_shift: 12,
        bits_per_level: 9,
        levels,
        ia_bits: 12 + 9 * levels,
        leaf_depths,
        root_level: levels,
        descending: true,
        oa_mask: PTE_ADDR,
        table_attrs: PTE_READ | PTE_WRITE,
        block_mask: PTE_PS,
        block_val: PTE_PS,
        leaf_attrs,
        leaf_prot,
        prot_ok,
    }
}
