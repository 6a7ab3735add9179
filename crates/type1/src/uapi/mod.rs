//! The kernel's request structures of the type1 ioctls (include/uapi/linux/vfio.h), their sizes and
//! flags as named constants, their decoding into typed requests, and the GET_INFO
//! capability-chain encoder.
//!
//! Invariants owned here: a typed request is only built by its `decode`, which makes the checks
//! the kernel makes before it walks the DMA tree, in the kernel's order (the first failing check
//! names the error); the ranges it holds are non-empty and do not wrap (`last` inclusive), and are
//! aligned to the IOMMU page size it was decoded with. Nothing here reads or changes a container.

pub mod dispatch;

use iommu::{IovaRange, Prot};

use crate::error::Error;
use crate::profile::KernelProfile;

/// `VFIO_DMA_MAP_FLAG_READ`: the device may read.
pub const MAP_FLAG_READ: u32 = 1 << 0;
/// `VFIO_DMA_MAP_FLAG_WRITE`: the device may write.
pub const MAP_FLAG_WRITE: u32 = 1 << 1;
/// `VFIO_DMA_MAP_FLAG_VADDR`: update the vaddr of an invalidated mapping.
pub const MAP_FLAG_VADDR: u32 = 1 << 2;
/// Every MAP_DMA flag.
pub const MAP_FLAGS_MASK: u32 = MAP_FLAG_READ | MAP_FLAG_WRITE | MAP_FLAG_VADDR;
/// `VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP`: report the range's dirty pages while unmapping.
pub const UNMAP_FLAG_GET_DIRTY_BITMAP: u32 = 1 << 0;
/// `VFIO_DMA_UNMAP_FLAG_ALL`: unmap every mapping (iova and size 0).
pub const UNMAP_FLAG_ALL: u32 = 1 << 1;
/// `VFIO_DMA_UNMAP_FLAG_VADDR`: invalidate the vaddrs instead of unmapping.
pub const UNMAP_FLAG_VADDR: u32 = 1 << 2;
/// Every UNMAP_DMA flag.
pub const UNMAP_FLAGS_MASK: u32 = UNMAP_FLAG_GET_DIRTY_BITMAP | UNMAP_FLAG_ALL | UNMAP_FLAG_VADDR;
/// `VFIO_IOMMU_DIRTY_PAGES_FLAG_START`.
pub const DIRTY_FLAG_START: u32 = 1 << 0;
/// `VFIO_IOMMU_DIRTY_PAGES_FLAG_STOP`.
pub const DIRTY_FLAG_STOP: u32 = 1 << 1;
/// `VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP`.
pub const DIRTY_FLAG_GET_BITMAP: u32 = 1 << 2;
/// Every DIRTY_PAGES flag.
pub const DIRTY_FLAGS_MASK: u32 = DIRTY_FLAG_START | DIRTY_FLAG_STOP | DIRTY_FLAG_GET_BITMAP;

/// CHECK_EXTENSION `VFIO_TYPE1_IOMMU`.
pub const VFIO_TYPE1_IOMMU: u32 = 1;
/// CHECK_EXTENSION `VFIO_TYPE1v2_IOMMU`.
pub const VFIO_TYPE1V2_IOMMU: u32 = 3;
/// CHECK_EXTENSION `VFIO_DMA_CC_IOMMU`: the IOMMU enforces cache coherency.
pub const VFIO_DMA_CC_IOMMU: u32 = 4;
/// CHECK_EXTENSION `VFIO_UNMAP_ALL`.
pub const VFIO_UNMAP_ALL: u32 = 9;
/// CHECK_EXTENSION `VFIO_UPDATE_VADDR`.
pub const VFIO_UPDATE_VADDR: u32 = 10;

/// `sizeof(struct vfio_iommu_type1_dma_map)`: argsz, flags, vaddr, iova, size.
pub const DMA_MAP_MINSZ: u32 = 32;
/// `offsetofend(struct vfio_iommu_type1_dma_unmap, size)`: argsz, flags, iova, size.
pub const DMA_UNMAP_MINSZ: u32 = 24;
/// `sizeof(struct vfio_bitmap)`: pgsize, size, data pointer.
pub const VFIO_BITMAP_SIZE: u32 = 24;
/// `offsetofend(struct vfio_iommu_type1_info, iova_pgsizes)`: argsz, flags, iova_pgsizes.
pub const INFO_MINSZ: u32 = 16;
/// `sizeof(struct vfio_iommu_type1_info)`, where the capability chain starts.
pub const INFO_SIZE: u32 = 24;
/// `offsetofend(struct vfio_iommu_type1_dirty_bitmap, flags)`: argsz, flags.
pub const DIRTY_BITMAP_MINSZ: u32 = 8;
/// `sizeof(struct vfio_iommu_type1_dirty_bitmap_get)`: iova, size, `struct vfio_bitmap`.
pub const DIRTY_BITMAP_GET_SIZE: u32 = 16 + VFIO_BITMAP_SIZE;
/// `VFIO_IOMMU_INFO_PGSIZES`: `iova_pgsizes` is valid.
pub const INFO_FLAG_PGSIZES: u32 = 1 << 0;
/// `VFIO_IOMMU_INFO_CAPS`: `cap_offset` is valid.
pub const INFO_FLAG_CAPS: u32 = 1 << 1;
/// `VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE`.
pub const CAP_IOVA_RANGE: u16 = 1;
/// `VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION`.
pub const CAP_MIGRATION: u16 = 2;
/// `VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL`.
pub const CAP_DMA_AVAIL: u16 = 3;
/// The version of every type1 capability.
pub const CAP_VERSION: u16 = 1;
/// `sizeof(struct vfio_info_cap_header)`: id, version, next.
pub const CAP_HEADER_SIZE: usize = 8;
/// `offsetof(struct vfio_info_cap_header, next)`.
pub const CAP_NEXT_OFFSET: usize = 4;
/// `DIRTY_BITMAP_SIZE_MAX`: `ALIGN(INT_MAX, 64) / 8` bytes.
pub const DIRTY_BITMAP_SIZE_MAX: u64 = 1 << 28;

/// `struct vfio_iommu_type1_dma_map`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapDma {
    /// The size of the structure the caller passes.
    pub argsz: u32,
    /// `MAP_FLAG_*`.
    pub flags: u32,
    /// The process address of the memory to map.
    pub vaddr: u64,
    /// The IOVA to map it at.
    pub iova: u64,
    /// Bytes.
    pub size: u64,
}

impl MapDma {
    /// A read-write map with the structure's size as argsz.
    pub fn rw(vaddr: u64, iova: u64, size: u64) -> Self {
        MapDma {
            argsz: DMA_MAP_MINSZ,
            flags: MAP_FLAG_READ | MAP_FLAG_WRITE,
            vaddr,
            iova,
            size,
        }
    }
}

/// The `struct vfio_bitmap` of an unmap or a dirty query: page size and buffer size in bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BitmapArg {
    /// The page size one bit stands for.
    pub pgsize: u64,
    /// The buffer's size in bytes.
    pub size: u64,
}

impl BitmapArg {
    /// `verify_bitmap_size` for a range of `size` bytes.
    fn verify(self, size: u64) -> Result<(), Error> {
        // Still EINVAL, as the kernel's pgsize check below would answer, but named for what
        // it is: no size could match a page size that is not a power of two.
        if self.pgsize != 0 && !self.pgsize.is_power_of_two() {
            return Err(Error::Dirty(
                "the bitmap's page size is not a power of two (it must be the IOMMU page size)",
            ));
        }
        if self.pgsize == 0 || !verify_bitmap_size(size >> self.pgsize.trailing_zeros(), self.size)
        {
            return Err(Error::Dirty("bitmap size does not match the range"));
        }
        Ok(())
    }

    /// A zeroed buffer of the bitmap's size, in little-endian u64 words.
    pub fn words(self) -> Vec<u64> {
        vec![0u64; self.size.div_ceil(8) as usize]
    }
}

/// `struct vfio_iommu_type1_dma_unmap` (with its `struct vfio_bitmap` for GET_DIRTY_BITMAP).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnmapDma {
    /// The size of the structure the caller passes.
    pub argsz: u32,
    /// `UNMAP_FLAG_*`.
    pub flags: u32,
    /// The first IOVA.
    pub iova: u64,
    /// Bytes.
    pub size: u64,
    /// The bitmap, for GET_DIRTY_BITMAP.
    pub bitmap: Option<BitmapArg>,
}

impl UnmapDma {
    /// Unmap `[iova, +size)`, with the structure's size as argsz.
    pub fn range(iova: u64, size: u64) -> Self {
        UnmapDma {
            argsz: DMA_UNMAP_MINSZ,
            flags: 0,
            iova,
            size,
            bitmap: None,
        }
    }
    /// Unmap everything (`UNMAP_FLAG_ALL`).
    pub fn all() -> Self {
        UnmapDma {
            argsz: DMA_UNMAP_MINSZ,
            flags: UNMAP_FLAG_ALL,
            iova: 0,
            size: 0,
            bitmap: None,
        }
    }
}

/// What UNMAP_DMA writes back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnmapReply {
    /// Bytes really unmapped (`unmap.size`).
    pub size: u64,
    /// The dirty bitmap, little-endian u64 words, when asked for.
    pub bitmap: Option<Vec<u64>>,
}

/// What GET_INFO writes back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InfoReply {
    /// `info.argsz`: the caller's, or the size needed when the capabilities do not fit.
    pub argsz: u32,
    /// `INFO_FLAG_*`.
    pub flags: u32,
    /// The IOMMU page sizes.
    pub iova_pgsizes: u64,
    /// Where the capability chain starts, 0 when it did not fit.
    pub cap_offset: u32,
    /// The bytes the kernel writes into the user's buffer (at most argsz).
    pub bytes: Vec<u8>,
    /// The argsz that holds every capability.
    pub argsz_needed: u32,
    /// The DMA_AVAIL capability: entries left.
    pub dma_avail: u32,
    /// The IOVA_RANGE capability: `(start, last)` pairs, `last` inclusive.
    pub iova_ranges: Vec<(u64, u64)>,
    /// The MIGRATION capability's page size.
    pub migration_pgsize: u64,
}

/// What a MAP_DMA does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapOp {
    /// Pin and map with these permissions (READ and/or WRITE).
    Map(Prot),
    /// `VADDR`: give an invalidated mapping its new vaddr.
    UpdateVaddr,
}

/// A decoded MAP_DMA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapRequest {
    /// The IOVAs to map.
    pub iova: IovaRange,
    /// The process address of the first byte (`vaddr + size` does not wrap either).
    pub vaddr: u64,
    /// Map, or update the vaddr.
    pub op: MapOp,
}

impl MapRequest {
    /// `vfio_iommu_type1_map_dma` and the argument checks of `vfio_dma_do_map`, for a container
    /// whose smallest IOMMU page is `pgsize`.
    pub fn decode(req: &MapDma, pgsize: u64, kernel: KernelProfile) -> Result<Self, Error> {
        check_header(req.argsz, DMA_MAP_MINSZ, req.flags, MAP_FLAGS_MASK)?;
        let (vaddr, size) = (req.vaddr, req.size);
        if size == 0 {
            return Err(Error::ZeroSize);
        }
        let iova = checked_range("iova", req.iova, size, kernel)?;
        checked_range("vaddr", vaddr, size, kernel)?;
        let mut prot = Prot::NONE;
        if req.flags & MAP_FLAG_WRITE != 0 {
            prot = prot.union(Prot::WRITE);
        }
        if req.flags & MAP_FLAG_READ != 0 {
            prot = prot.union(Prot::READ);
        }
        let set_vaddr = req.flags & MAP_FLAG_VADDR != 0;
        if (prot != Prot::NONE) == set_vaddr {
            return Err(Error::BadProt { flags: req.flags });
        }
        for (what, value) in [("size", size), ("iova", req.iova), ("vaddr", vaddr)] {
            if value & (pgsize - 1) != 0 {
                return Err(Error::Unaligned {
                    what,
                    value,
                    pgsize,
                });
            }
        }
        let op = if set_vaddr {
            MapOp::UpdateVaddr
        } else {
            MapOp::Map(prot)
        };
        Ok(MapRequest { iova, vaddr, op })
    }

    /// Bytes to map.
    pub fn size(&self) -> u64 {
        range_size(self.iova)
    }
}

/// A decoded UNMAP_DMA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnmapRequest {
    /// Unmap the mappings in the range.
    Range(IovaRange),
    /// `ALL`: unmap every mapping.
    All,
    /// `VADDR`: invalidate the vaddrs of the mappings in the range (`None`: with `ALL`, of all).
    Vaddr(Option<IovaRange>),
    /// `GET_DIRTY_BITMAP`: unmap the range and report its dirty pages.
    DirtyBitmap {
        /// The IOVAs to unmap.
        range: IovaRange,
        /// The caller's bitmap.
        bitmap: BitmapArg,
    },
}

impl UnmapRequest {
    /// `vfio_iommu_type1_unmap_dma` and the argument checks of `vfio_dma_do_unmap`, for a
    /// container whose smallest IOMMU page is `pgsize`.
    pub fn decode(req: &UnmapDma, pgsize: u64, kernel: KernelProfile) -> Result<Self, Error> {
        check_header(req.argsz, DMA_UNMAP_MINSZ, req.flags, UNMAP_FLAGS_MASK)?;
        let get_dirty = req.flags & UNMAP_FLAG_GET_DIRTY_BITMAP != 0;
        let all = req.flags & UNMAP_FLAG_ALL != 0;
        let set_vaddr = req.flags & UNMAP_FLAG_VADDR != 0;
        if get_dirty && (all || set_vaddr) {
            return Err(Error::DirtyCombo);
        }
        let (iova, size) = (req.iova, req.size);
        let mut bitmap = None;
        if get_dirty {
            let min = DMA_UNMAP_MINSZ + VFIO_BITMAP_SIZE;
            if req.argsz < min {
                return Err(Error::Argsz {
                    argsz: req.argsz,
                    min,
                });
            }
            let b = req
                .bitmap
                .ok_or(Error::Dirty("GET_DIRTY_BITMAP needs a bitmap"))?;
            b.verify(size)?;
            bitmap = Some(b);
        }
        if iova & (pgsize - 1) != 0 {
            return Err(Error::Unaligned {
                what: "iova",
                value: iova,
                pgsize,
            });
        }
        if all {
            if iova != 0 || size != 0 {
                return Err(Error::AllWithRange { iova, size });
            }
            return Ok(if set_vaddr {
                UnmapRequest::Vaddr(None)
            } else {
                UnmapRequest::All
            });
        }
        if size == 0 {
            return Err(Error::ZeroSize);
        }
        if size & (pgsize - 1) != 0 {
            return Err(Error::Unaligned {
                what: "size",
                value: size,
                pgsize,
            });
        }
        let range = checked_range("iova", iova, size, kernel)?;
        Ok(match bitmap {
            Some(bitmap) => UnmapRequest::DirtyBitmap { range, bitmap },
            None if set_vaddr => UnmapRequest::Vaddr(Some(range)),
            None => UnmapRequest::Range(range),
        })
    }
}

/// A decoded DIRTY_PAGES.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirtyRequest {
    /// `START`: begin tracking.
    Start,
    /// `STOP`: end tracking.
    Stop,
    /// `GET_BITMAP`: the dirty pages of a range.
    GetBitmap {
        /// The IOVAs to report.
        range: IovaRange,
        /// The caller's bitmap.
        bitmap: BitmapArg,
    },
}

impl DirtyRequest {
    /// `vfio_iommu_type1_dirty_pages` up to the walk, for a type1v2 container whose smallest
    /// IOMMU page is `pgsize`. `get` is `(iova, size, bitmap)` for GET_BITMAP.
    pub fn decode(
        argsz: u32,
        flags: u32,
        get: Option<(u64, u64, BitmapArg)>,
        pgsize: u64,
        kernel: KernelProfile,
    ) -> Result<Self, Error> {
        check_header(argsz, DIRTY_BITMAP_MINSZ, flags, DIRTY_FLAGS_MASK)?;
        if flags.count_ones() != 1 {
            return Err(Error::Dirty("exactly one of START, STOP, GET_BITMAP"));
        }
        match flags {
            DIRTY_FLAG_START => return Ok(DirtyRequest::Start),
            DIRTY_FLAG_STOP => return Ok(DirtyRequest::Stop),
            _ => {}
        }
        let (iova, size, bitmap) =
            get.ok_or(Error::Dirty("GET_BITMAP needs a range and a bitmap"))?;
        let min = DIRTY_BITMAP_MINSZ + DIRTY_BITMAP_GET_SIZE;
        if argsz < min {
            return Err(Error::Argsz { argsz, min });
        }
        if size == 0 {
            return Err(Error::ZeroSize);
        }
        let range = checked_range("iova", iova, size, kernel)?;
        if kernel.dirty_range_to_end_wraps() && range.last() == u64::MAX {
            return Err(Error::Wraps {
                what: "iova",
                start: iova,
                size,
                errno: kernel.wrap_errno(),
            });
        }
        bitmap.verify(size)?;
        if bitmap.pgsize != pgsize {
            return Err(Error::Dirty("bitmap page size must be the IOMMU page size"));
        }
        if iova & (pgsize - 1) != 0 || size & (pgsize - 1) != 0 {
            return Err(Error::Unaligned {
                what: "iova or size",
                value: iova | size,
                pgsize,
            });
        }
        Ok(DirtyRequest::GetBitmap { range, bitmap })
    }
}

/// A decoded GET_INFO: the size of the caller's buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InfoRequest {
    /// The caller's buffer size in bytes.
    pub argsz: u32,
}

impl InfoRequest {
    /// `vfio_iommu_type1_get_info`'s argsz check.
    pub fn decode(argsz: u32) -> Result<Self, Error> {
        if argsz < INFO_MINSZ {
            return Err(Error::Argsz {
                argsz,
                min: INFO_MINSZ,
            });
        }
        Ok(InfoRequest { argsz })
    }
}

/// What GET_INFO reports about a container.
#[derive(Clone, Copy, Debug)]
pub struct InfoState<'a> {
    /// The IOMMU page sizes.
    pub pgsize_bitmap: u64,
    /// DMA entries left.
    pub dma_avail: u32,
    /// The valid IOVA ranges (empty: no domain, no capability).
    pub iova_ranges: &'a [IovaRange],
    /// Whether capabilities are padded to 8 bytes (`KernelProfile`).
    pub pads_caps: bool,
}

/// `vfio_iommu_type1_get_info`'s reply: the info structure and, when it fits in the caller's
/// buffer, the capability chain MIGRATION → DMA_AVAIL → IOVA_RANGE.
pub fn encode_info(req: InfoRequest, s: &InfoState<'_>) -> InfoReply {
    let argsz = req.argsz;
    let pad = |n: usize| {
        if s.pads_caps {
            n.next_multiple_of(8)
        } else {
            n
        }
    };
    let min_pgsize = 1u64 << s.pgsize_bitmap.trailing_zeros();
    // The capability chain, offsets relative to the start of the info buffer.
    let mut caps: Vec<u8> = Vec::new();
    let mut headers: Vec<usize> = Vec::new();
    let mut add = |caps: &mut Vec<u8>, id: u16, body: &[u8]| {
        let at = caps.len();
        headers.push(at);
        caps.extend_from_slice(&id.to_le_bytes());
        caps.extend_from_slice(&CAP_VERSION.to_le_bytes());
        caps.extend_from_slice(&0u32.to_le_bytes()); // next, chained below
        caps.extend_from_slice(body);
        caps.resize(at + pad(CAP_HEADER_SIZE + body.len()), 0);
    };
    let mut mig = Vec::new();
    mig.extend_from_slice(&0u32.to_le_bytes()); // flags
    mig.extend_from_slice(&0u32.to_le_bytes()); // alignment of the u64 that follows
    mig.extend_from_slice(&min_pgsize.to_le_bytes());
    mig.extend_from_slice(&DIRTY_BITMAP_SIZE_MAX.to_le_bytes());
    add(&mut caps, CAP_MIGRATION, &mig);
    add(&mut caps, CAP_DMA_AVAIL, &s.dma_avail.to_le_bytes());
    if !s.iova_ranges.is_empty() {
        let mut body = Vec::new();
        body.extend_from_slice(&(s.iova_ranges.len() as u32).to_le_bytes());
        body.extend_from_slice(&0u32.to_le_bytes()); // reserved
        for r in s.iova_ranges {
            body.extend_from_slice(&r.start().to_le_bytes());
            body.extend_from_slice(&r.last().to_le_bytes());
        }
        add(&mut caps, CAP_IOVA_RANGE, &body);
    }
    // Chain the `next` fields (buffer-relative).
    let base = INFO_SIZE as usize;
    for w in 0..headers.len() {
        let next = headers.get(w + 1).map_or(0, |&n| (base + n) as u32);
        let at = headers[w] + CAP_NEXT_OFFSET;
        caps[at..at + 4].copy_from_slice(&next.to_le_bytes());
    }
    let needed = INFO_SIZE + caps.len() as u32;
    let flags = INFO_FLAG_PGSIZES | INFO_FLAG_CAPS;
    let (out_argsz, cap_offset) = if argsz < needed {
        (needed, 0)
    } else {
        (argsz, INFO_SIZE)
    };
    let mut bytes = Vec::new();
    bytes.extend_from_slice(&out_argsz.to_le_bytes());
    bytes.extend_from_slice(&flags.to_le_bytes());
    bytes.extend_from_slice(&s.pgsize_bitmap.to_le_bytes());
    bytes.extend_from_slice(&cap_offset.to_le_bytes());
    bytes.extend_from_slice(&0u32.to_le_bytes()); // pad
    bytes.truncate((argsz as usize).min(base));
    if cap_offset != 0 {
        bytes.extend_from_slice(&caps);
    }
    InfoReply {
        argsz: out_argsz,
        flags,
        iova_pgsizes: s.pgsize_bitmap,
        cap_offset,
        bytes,
        argsz_needed: needed,
        dma_avail: s.dma_avail,
        iova_ranges: s.iova_ranges.iter().map(|r| r.pair()).collect(),
        migration_pgsize: min_pgsize,
    }
}

/// The first check of every ioctl: the structure fits in `argsz`, and no unknown flag is set.
fn check_header(argsz: u32, min: u32, flags: u32, allowed: u32) -> Result<(), Error> {
    if argsz < min {
        return Err(Error::Argsz { argsz, min });
    }
    if flags & !allowed != 0 {
        return Err(Error::UnknownFlags {
            bits: flags & !allowed,
            allowed,
        });
    }
    Ok(())
}

/// `[start, start + size - 1]` for a non-zero `size`, or the error of a range that wraps past
/// 2^64 (its errno depends on the kernel). `what` names the field ("iova", "vaddr").
fn checked_range(
    what: &'static str,
    start: u64,
    size: u64,
    kernel: KernelProfile,
) -> Result<IovaRange, Error> {
    IovaRange::from_start_size(start, size).ok_or(Error::Wraps {
        what,
        start,
        size,
        errno: kernel.wrap_errno(),
    })
}

/// The bytes of a range decoded from a start and a u64 size (never the whole 2^64 space).
fn range_size(r: IovaRange) -> u64 {
    r.size().expect("a decoded range is at most 2^64 - 1 bytes")
}

/// `verify_bitmap_size`.
fn verify_bitmap_size(npages: u64, bitmap_size: u64) -> bool {
    if npages == 0 || bitmap_size == 0 || bitmap_size > DIRTY_BITMAP_SIZE_MAX {
        return false;
    }
    bitmap_size >= npages.div_ceil(64) * 8
}

#[cfg(test)]
mod tests {
    use iommu::{Errno, SZ_2M, SZ_4K};

    use super::*;

    const V7_2: KernelProfile = KernelProfile::V7_2;
    const RW: u32 = MAP_FLAG_READ | MAP_FLAG_WRITE;

    fn map(argsz: u32, flags: u32, vaddr: u64, iova: u64, size: u64) -> Result<MapRequest, Error> {
        let req = MapDma {
            argsz,
            flags,
            vaddr,
            iova,
            size,
        };
        MapRequest::decode(&req, SZ_4K, V7_2)
    }

    fn r(start: u64, last: u64) -> IovaRange {
        IovaRange::new(start, last).unwrap()
    }

    #[test]
    fn map_decodes_into_a_range_and_an_op() {
        let m = map(DMA_MAP_MINSZ, RW, 0x7000_0000, SZ_2M, SZ_2M).unwrap();
        assert_eq!(m.iova, r(SZ_2M, 2 * SZ_2M - 1));
        assert_eq!((m.vaddr, m.size()), (0x7000_0000, SZ_2M));
        assert_eq!(m.op, MapOp::Map(Prot::READ.union(Prot::WRITE)));
        let m = map(DMA_MAP_MINSZ, MAP_FLAG_VADDR, 0x1000, 0x2000, 0x1000).unwrap();
        assert_eq!(m.op, MapOp::UpdateVaddr);
        let top = map(DMA_MAP_MINSZ, RW, 0, u64::MAX - 0xfff, 0x1000).unwrap();
        assert_eq!(top.iova.last(), u64::MAX);
    }

    #[test]
    fn map_checks_in_the_kernels_order() {
        // argsz before flags before size before wrap before prot before alignment.
        assert_eq!(
            map(31, 1 << 31, 0, u64::MAX, 0),
            Err(Error::Argsz { argsz: 31, min: 32 })
        );
        assert_eq!(
            map(32, 1 << 31, 0, 0, 0),
            Err(Error::UnknownFlags {
                bits: 1 << 31,
                allowed: 7
            })
        );
        assert_eq!(map(32, 0, 0, 0x800, 0), Err(Error::ZeroSize));
        assert_eq!(
            map(32, 0, 0x800, u64::MAX, 0x800),
            Err(Error::Wraps {
                what: "iova",
                start: u64::MAX,
                size: 0x800,
                errno: Errno::EOVERFLOW
            })
        );
        let on_6_12 = MapRequest::decode(
            &MapDma::rw(0, u64::MAX, 0x1000),
            SZ_4K,
            KernelProfile::V6_12,
        );
        assert_eq!(on_6_12.unwrap_err().errno(), Errno::EINVAL);
        assert_eq!(
            map(32, RW, u64::MAX, 0, 0x1000).unwrap_err().to_string(),
            "vaddr 0xffffffffffffffff + size 0x1000 wraps past the end of the 64-bit space"
        );
        assert_eq!(
            map(32, MAP_FLAG_READ | MAP_FLAG_VADDR, 0x800, 0x800, 0x800),
            Err(Error::BadProt { flags: 5 })
        );
        assert_eq!(map(32, 0, 0, 0, 0x1000), Err(Error::BadProt { flags: 0 }));
        assert_eq!(
            map(32, RW, 0x800, 0x800, 0x800),
            Err(Error::Unaligned {
                what: "size",
                value: 0x800,
                pgsize: SZ_4K
            })
        );
        assert_eq!(
            map(32, RW, 0x800, 0x800, 0x1000),
            Err(Error::Unaligned {
                what: "iova",
                value: 0x800,
                pgsize: SZ_4K
            })
        );
    }

    fn unmap(
        flags: u32,
        iova: u64,
        size: u64,
        argsz: u32,
        bitmap: Option<BitmapArg>,
    ) -> Result<UnmapRequest, Error> {
        let req = UnmapDma {
            argsz,
            flags,
            iova,
            size,
            bitmap,
        };
        UnmapRequest::decode(&req, SZ_4K, V7_2)
    }

    #[test]
    fn unmap_decodes_each_variant() {
        let bm = BitmapArg {
            pgsize: SZ_4K,
            size: 8,
        };
        assert_eq!(
            UnmapRequest::decode(&UnmapDma::range(SZ_2M, SZ_2M), SZ_4K, V7_2),
            Ok(UnmapRequest::Range(r(SZ_2M, 2 * SZ_2M - 1)))
        );
        assert_eq!(
            UnmapRequest::decode(&UnmapDma::all(), SZ_4K, V7_2),
            Ok(UnmapRequest::All)
        );
        assert_eq!(
            unmap(UNMAP_FLAG_ALL | UNMAP_FLAG_VADDR, 0, 0, 24, None),
            Ok(UnmapRequest::Vaddr(None))
        );
        assert_eq!(
            unmap(UNMAP_FLAG_VADDR, 0x1000, 0x1000, 24, None),
            Ok(UnmapRequest::Vaddr(Some(r(0x1000, 0x1fff))))
        );
        assert_eq!(
            unmap(UNMAP_FLAG_GET_DIRTY_BITMAP, 0x1000, 0x1000, 48, Some(bm)),
            Ok(UnmapRequest::DirtyBitmap {
                range: r(0x1000, 0x1fff),
                bitmap: bm
            })
        );
    }

    #[test]
    fn unmap_checks_in_the_kernels_order() {
        let dirty = UNMAP_FLAG_GET_DIRTY_BITMAP;
        assert_eq!(
            unmap(dirty | UNMAP_FLAG_ALL, 0, 0, 48, None),
            Err(Error::DirtyCombo)
        );
        assert_eq!(
            unmap(dirty, 0x1000, 0x1000, 47, None),
            Err(Error::Argsz { argsz: 47, min: 48 })
        );
        assert_eq!(
            unmap(dirty, 0x1000, 0x1000, 48, None),
            Err(Error::Dirty("GET_DIRTY_BITMAP needs a bitmap"))
        );
        let small = BitmapArg {
            pgsize: SZ_4K,
            size: 8,
        };
        // 65 pages need two words.
        assert_eq!(
            unmap(dirty, 0, 65 * SZ_4K, 48, Some(small)),
            Err(Error::Dirty("bitmap size does not match the range"))
        );
        // The iova's alignment comes before ALL's and size's checks.
        assert_eq!(
            unmap(UNMAP_FLAG_ALL, 0x800, 0, 24, None),
            Err(Error::Unaligned {
                what: "iova",
                value: 0x800,
                pgsize: SZ_4K
            })
        );
        assert_eq!(
            unmap(UNMAP_FLAG_ALL, 0, 0x1000, 24, None),
            Err(Error::AllWithRange {
                iova: 0,
                size: 0x1000
            })
        );
        assert_eq!(unmap(0, 0x1000, 0, 24, None), Err(Error::ZeroSize));
        assert_eq!(
            unmap(0, u64::MAX - 0xfff, 0x2000, 24, None)
                .unwrap_err()
                .errno(),
            Errno::EOVERFLOW
        );
    }

    #[test]
    fn dirty_decodes_and_checks_in_order() {
        let bm = BitmapArg {
            pgsize: SZ_4K,
            size: 8,
        };
        let d = |argsz, flags, get| DirtyRequest::decode(argsz, flags, get, SZ_4K, V7_2);
        assert_eq!(
            d(7, DIRTY_FLAG_START, None),
            Err(Error::Argsz { argsz: 7, min: 8 })
        );
        assert_eq!(d(8, DIRTY_FLAG_START, None), Ok(DirtyRequest::Start));
        assert_eq!(d(8, DIRTY_FLAG_STOP, None), Ok(DirtyRequest::Stop));
        assert_eq!(
            d(8, DIRTY_FLAG_START | DIRTY_FLAG_STOP, None),
            Err(Error::Dirty("exactly one of START, STOP, GET_BITMAP"))
        );
        let get = Some((0x1000, 0x1000, bm));
        assert_eq!(
            d(47, DIRTY_FLAG_GET_BITMAP, get),
            Err(Error::Argsz { argsz: 47, min: 48 })
        );
        assert_eq!(
            d(48, DIRTY_FLAG_GET_BITMAP, get),
            Ok(DirtyRequest::GetBitmap {
                range: r(0x1000, 0x1fff),
                bitmap: bm
            })
        );
        let bm8k = BitmapArg {
            pgsize: 0x2000,
            size: 8,
        };
        assert_eq!(
            d(48, DIRTY_FLAG_GET_BITMAP, Some((0x2000, 0x2000, bm8k))),
            Err(Error::Dirty("bitmap page size must be the IOMMU page size"))
        );
    }

    #[test]
    fn info_chain_sizes_with_and_without_padding() {
        assert_eq!(
            InfoRequest::decode(15),
            Err(Error::Argsz { argsz: 15, min: 16 })
        );
        let two = [r(0, 0xfedf_ffff), r(0xfef0_0000, (1 << 48) - 1)];
        let state = |pads_caps| InfoState {
            pgsize_bitmap: 0x4020_1000,
            dma_avail: 65535,
            iova_ranges: &two,
            pads_caps,
        };
        let req = InfoRequest::decode(INFO_SIZE).unwrap();
        // MIGRATION 8+24, DMA_AVAIL 8+4 (padded to 16), IOVA_RANGE 8+8+2*16.
        assert_eq!(encode_info(req, &state(true)).argsz, 24 + 32 + 16 + 48);
        assert_eq!(encode_info(req, &state(false)).argsz, 24 + 32 + 12 + 48);
        let r = encode_info(req, &state(true));
        assert_eq!((r.cap_offset, r.bytes.len()), (0, 24));
        assert_eq!(
            r.iova_ranges,
            vec![(0, 0xfedf_ffff), (0xfef0_0000, (1 << 48) - 1)]
        );
        assert_eq!((r.migration_pgsize, r.flags), (SZ_4K, 3));
        let full = encode_info(InfoRequest::decode(120).unwrap(), &state(true));
        assert_eq!((full.cap_offset, full.bytes.len()), (24, 120));
    }
}
