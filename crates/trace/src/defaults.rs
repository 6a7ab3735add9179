//! What the trace language leaves to runners, in one place: both backends use it, or
//! kernel-check would compare different requests.
//!
//! * `argsz` per verb when the statement gives none: the size of the uAPI structure
//!   (`map` 32, `unmap` 24 or 48 with `flags=dirty`, `dirty` 8, or 48 for `get`), and a 4 KiB
//!   buffer for `info` (room for every capability);
//! * dirty bitmaps: whole u64 words, at least one, covering `size / pgsize` pages; `unmap
//!   flags=dirty` asks in the container's smallest page size;
//! * `vaddr=NAME±OFFSET`: the region's start plus the signed offset, which must land inside the
//!   64-bit space;
//! * `container`: the kernel profile `7.2` and 65535 DMA entries (the module's default).

use crate::ast::VaddrRef;

/// `argsz` of `map` (`struct vfio_iommu_type1_dma_map`).
pub const MAP_ARGSZ: u32 = 32;
/// `argsz` of `unmap` (`struct vfio_iommu_type1_dma_unmap`).
pub const UNMAP_ARGSZ: u32 = 24;
/// `argsz` of `unmap flags=dirty` (the unmap structure and a `struct vfio_bitmap`).
pub const UNMAP_DIRTY_ARGSZ: u32 = 48;
/// `argsz` of `info`: a buffer with room for every capability.
pub const INFO_ARGSZ: u32 = 4096;
/// `argsz` of `dirty start|stop` (`struct vfio_iommu_type1_dirty_bitmap`).
pub const DIRTY_ARGSZ: u32 = 8;
/// `argsz` of `dirty get` (the dirty structure, its `get` range and a `struct vfio_bitmap`).
pub const DIRTY_GET_ARGSZ: u32 = 48;
/// `VFIO_IOMMU_DIRTY_PAGES_FLAG_START`.
pub const DIRTY_START: u32 = 1;
/// `VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP`.
pub const DIRTY_STOP: u32 = 2;
/// `VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP`.
pub const DIRTY_GET_BITMAP: u32 = 4;
/// The kernel profile when `container` names none.
pub const KERNEL: &str = "7.2";
/// `dma_entry_limit` when `container` gives none (the module parameter's default).
pub const DMA_ENTRY_LIMIT: u32 = 65535;

/// The `argsz` of a `map`.
pub fn map_argsz(given: Option<u32>) -> u32 {
    given.unwrap_or(MAP_ARGSZ)
}

/// The `argsz` of an `unmap` with these flags.
pub fn unmap_argsz(given: Option<u32>, flags: u32) -> u32 {
    given.unwrap_or(if flags & crate::UNMAP_DIRTY != 0 {
        UNMAP_DIRTY_ARGSZ
    } else {
        UNMAP_ARGSZ
    })
}

/// The `argsz` (buffer size) of an `info`.
pub fn info_argsz(given: Option<u32>) -> u32 {
    given.unwrap_or(INFO_ARGSZ)
}

/// Bytes of a bitmap buffer covering `size` bytes in pages of `pgsize`: whole u64 words, at
/// least one.
pub fn bitmap_bytes(size: u64, pgsize: u64) -> u64 {
    let pages = if pgsize == 0 {
        0
    } else {
        size.div_ceil(pgsize)
    };
    (pages.div_ceil(64) * 8).max(8)
}

/// The page size of `unmap flags=dirty`'s bitmap: the smallest of the container's page sizes.
pub fn unmap_bitmap_pgsize(pgsize_bitmap: u64) -> u64 {
    1u64 << pgsize_bitmap.trailing_zeros().min(63)
}

/// `vaddr=`: an absolute address, or a named region's start (`region(name)`) plus the offset.
/// The error says what to change.
pub fn resolve_vaddr(v: &VaddrRef, region: impl Fn(&str) -> Option<u64>) -> Result<u64, String> {
    match v {
        VaddrRef::Abs(a) => Ok(*a),
        VaddrRef::Named { name, offset } => {
            let base = region(name).ok_or_else(|| {
                format!("vaddr={name}: no region named {name:?} (create it with `mmap {name} size=...` first)")
            })?;
            let v = i128::from(base) + offset;
            u64::try_from(v).map_err(|_| {
                let (off, addr) = (signed_hex(*offset), signed_hex(v));
                let sign = if *offset < 0 { "" } else { "+" };
                let why = if v < 0 { "below 0" } else { "above 2^64-1" };
                format!(
                    "vaddr={name}{sign}{off}: the region starts at {base:#x}, so the address \
                     {addr} is {why}, outside the 64-bit space"
                )
            })
        }
    }
}

/// `v` in hex with its sign: `-0x1000`, not the two's complement of a 128-bit number.
pub fn signed_hex(v: i128) -> String {
    if v < 0 {
        format!("-{:#x}", v.unsigned_abs())
    } else {
        format!("{v:#x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitmap_bytes_rounds_up_to_whole_words() {
        assert_eq!(bitmap_bytes(4096, 4096), 8);
        assert_eq!(bitmap_bytes(64 * 4096, 4096), 8);
        assert_eq!(bitmap_bytes(65 * 4096, 4096), 16);
        assert_eq!(bitmap_bytes(0, 4096), 8);
        assert_eq!(bitmap_bytes(4096, 0), 8);
    }

    #[test]
    fn argsz_per_verb() {
        assert_eq!(map_argsz(None), 32);
        assert_eq!(map_argsz(Some(16)), 16);
        assert_eq!(unmap_argsz(None, 0), 24);
        assert_eq!(unmap_argsz(None, crate::UNMAP_DIRTY), 48);
        assert_eq!(info_argsz(None), 4096);
        assert_eq!(unmap_bitmap_pgsize(0x4020_1000), 4096);
        assert_eq!(unmap_bitmap_pgsize(0), 1 << 63);
    }

    #[test]
    fn vaddrs_resolve_inside_the_64_bit_space() {
        let regions = |n: &str| (n == "ram").then_some(0x10_0000u64);
        let named = |offset| VaddrRef::Named {
            name: "ram".into(),
            offset,
        };
        assert_eq!(resolve_vaddr(&VaddrRef::Abs(7), regions), Ok(7));
        assert_eq!(resolve_vaddr(&named(-4096), regions), Ok(0xf_f000));
        // A negative offset and address are printed as negative numbers.
        assert_eq!(
            resolve_vaddr(&named(-(1 << 21)), regions).unwrap_err(),
            "vaddr=ram-0x200000: the region starts at 0x100000, so the address -0x100000 \
             is below 0, outside the 64-bit space"
        );
        assert_eq!(
            resolve_vaddr(&named(i128::from(u64::MAX)), regions).unwrap_err(),
            "vaddr=ram+0xffffffffffffffff: the region starts at 0x100000, so the address \
             0x100000000000fffff is above 2^64-1, outside the 64-bit space"
        );
        let e = resolve_vaddr(
            &VaddrRef::Named {
                name: "nope".into(),
                offset: 0,
            },
            regions,
        )
        .unwrap_err();
        assert!(e.contains("no region named \"nope\""), "{e}");
    }
}
