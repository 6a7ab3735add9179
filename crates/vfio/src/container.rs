//! `VfioContainer`: a real VFIO container with the type1 backend, driven through /dev/vfio.
//! Its methods mirror the engine's (`type1::Container`): same arguments, errors as the kernel's
//! errno values.

use std::fs::{File, OpenOptions};

use crate::record::InfoFields;
use crate::sys::{self, ArgBuf};

pub use type1::Errno;

/// Why a container could not be set up.
#[derive(Debug)]
pub enum Error {
    /// A file could not be opened, read or written.
    Io {
        what: String,
        source: std::io::Error,
    },
    /// A setup ioctl failed.
    Ioctl { what: &'static str, errno: Errno },
    /// Something answered other than expected.
    Unexpected(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Io { what, source } => write!(f, "{what}: {source}"),
            Error::Ioctl { what, errno } => write!(f, "{what} failed: {errno} ({})", errno.code()),
            Error::Unexpected(s) => f.write_str(s),
        }
    }
}

impl std::error::Error for Error {}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// The `vfio_bitmap` of an unmap with GET_DIRTY_BITMAP or of a dirty query.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BitmapArg {
    pub pgsize: u64,
    /// Bytes of the user's bitmap buffer.
    pub size: u64,
}

/// What UNMAP_DMA answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnmapOutcome {
    /// The size the kernel wrote back, or the errno.
    pub result: Result<u64, Errno>,
    /// The structure's size field after the call, whatever the result (a failed call leaves
    /// the caller's value).
    pub out_size: u64,
    /// The dirty bitmap, when one was passed and the call succeeded.
    pub bitmap: Option<Vec<u64>>,
}

/// One open container with one group set and the type1 backend chosen.
pub struct VfioContainer {
    container: File,
    /// Kept open: closing the group detaches it from the container.
    _group: File,
    pub group: u32,
    pub v2: bool,
}

const MAP_SZ: usize = 32;
const UNMAP_SZ: usize = 24;
const INFO_SZ: usize = 24;
const BITMAP_SZ: usize = 24;

impl VfioContainer {
    /// Opens /dev/vfio/vfio and /dev/vfio/`group`, sets the group on the container and the
    /// type1 (`v2 = false`) or type1v2 backend. `dma_entry_limit` is written to the module
    /// parameter first; `memlock`: `None` leaves RLIMIT_MEMLOCK alone, `Some(None)` makes it
    /// unlimited, `Some(Some(bytes))` sets it; `cap_ipc_lock = false` drops CAP_IPC_LOCK from
    /// the effective set (it is not taken back).
    pub fn open(
        group: u32,
        v2: bool,
        dma_entry_limit: Option<u32>,
        memlock: Option<Option<u64>>,
        cap_ipc_lock: bool,
    ) -> Result<Self, Error> {
        if let Some(limit) = dma_entry_limit {
            sys::set_dma_entry_limit(limit).map_err(io_err("writing dma_entry_limit"))?;
        }
        let rw = |p: &str| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(p)
                .map_err(io_err(format!("opening {p}")))
        };
        let container = rw("/dev/vfio/vfio")?;
        let api =
            sys::ioctl_val(&container, sys::VFIO_GET_API_VERSION, 0).map_err(|e| Error::Ioctl {
                what: "VFIO_GET_API_VERSION",
                errno: Errno::from_raw(e),
            })?;
        if api != 0 {
            return Err(Error::Unexpected(format!("VFIO API version {api}, not 0")));
        }
        let ty = if v2 {
            sys::VFIO_TYPE1v2_IOMMU
        } else {
            sys::VFIO_TYPE1_IOMMU
        };
        let has = sys::ioctl_val(&container, sys::VFIO_CHECK_EXTENSION, ty as libc::c_ulong)
            .map_err(|e| Error::Ioctl {
                what: "VFIO_CHECK_EXTENSION",
                errno: Errno::from_raw(e),
            })?;
        if has != 1 {
            return Err(Error::Unexpected(format!(
                "the kernel does not offer IOMMU type {ty}"
            )));
        }
        let grp = rw(&format!("/dev/vfio/{group}"))?;
        let flags = sys::group_status(&grp).map_err(|e| Error::Ioctl {
            what: "VFIO_GROUP_GET_STATUS",
            errno: Errno::from_raw(e),
        })?;
        if flags & sys::VFIO_GROUP_FLAGS_VIABLE == 0 {
            return Err(Error::Unexpected(format!(
                "group {group} is not viable (flags {flags:#x}): bind all its devices to vfio-pci"
            )));
        }
        sys::group_set_container(&grp, &container).map_err(|e| Error::Ioctl {
            what: "VFIO_GROUP_SET_CONTAINER",
            errno: Errno::from_raw(e),
        })?;
        sys::ioctl_val(&container, sys::VFIO_SET_IOMMU, ty as libc::c_ulong).map_err(|e| {
            Error::Ioctl {
                what: "VFIO_SET_IOMMU",
                errno: Errno::from_raw(e),
            }
        })?;
        if let Some(m) = memlock {
            sys::set_memlock(m).map_err(io_err("setrlimit(RLIMIT_MEMLOCK)"))?;
        }
        if !cap_ipc_lock {
            sys::drop_cap_ipc_lock().map_err(io_err("capset (dropping CAP_IPC_LOCK)"))?;
        }
        Ok(VfioContainer {
            container,
            _group: grp,
            group,
            v2,
        })
    }

    /// VFIO_CHECK_EXTENSION on the container.
    pub fn check_extension(&self, ext: u32) -> Result<i32, Errno> {
        sys::ioctl_val(
            &self.container,
            sys::VFIO_CHECK_EXTENSION,
            ext as libc::c_ulong,
        )
        .map_err(Errno::from_raw)
    }

    /// VFIO_IOMMU_MAP_DMA.
    pub fn map_dma(
        &self,
        argsz: u32,
        flags: u32,
        vaddr: u64,
        iova: u64,
        size: u64,
    ) -> Result<(), Errno> {
        let mut b = ArgBuf::new(MAP_SZ.max(argsz as usize));
        b.put_u32(0, argsz);
        b.put_u32(4, flags);
        b.put_u64(8, vaddr);
        b.put_u64(16, iova);
        b.put_u64(24, size);
        sys::ioctl_buf(&self.container, sys::VFIO_IOMMU_MAP_DMA, &mut b)
            .map(|_| ())
            .map_err(Errno::from_raw)
    }

    /// VFIO_IOMMU_UNMAP_DMA; with `bitmap`, a `vfio_bitmap` follows the structure and a
    /// buffer of `bitmap.size` bytes receives the dirty bits.
    pub fn unmap_dma(
        &self,
        argsz: u32,
        flags: u32,
        iova: u64,
        size: u64,
        bitmap: Option<BitmapArg>,
    ) -> UnmapOutcome {
        let need = UNMAP_SZ + if bitmap.is_some() { BITMAP_SZ } else { 0 };
        let mut b = ArgBuf::new(need.max(argsz as usize));
        b.put_u32(0, argsz);
        b.put_u32(4, flags);
        b.put_u64(8, iova);
        b.put_u64(16, size);
        let r = match bitmap {
            None => sys::ioctl_buf(&self.container, sys::VFIO_IOMMU_UNMAP_DMA, &mut b),
            Some(bm) => {
                b.put_u64(UNMAP_SZ, bm.pgsize);
                b.put_u64(UNMAP_SZ + 8, bm.size);
                let mut out = vec![0u64; (bm.size as usize).div_ceil(8)];
                let r = sys::ioctl_with_bitmap(
                    &self.container,
                    sys::VFIO_IOMMU_UNMAP_DMA,
                    &mut b,
                    UNMAP_SZ,
                    &mut out,
                );
                if r.is_ok() {
                    return UnmapOutcome {
                        result: Ok(b.u64_at(16)),
                        out_size: b.u64_at(16),
                        bitmap: Some(out),
                    };
                }
                r
            }
        };
        let out_size = b.u64_at(16);
        UnmapOutcome {
            result: r.map(|_| out_size).map_err(Errno::from_raw),
            out_size,
            bitmap: None,
        }
    }

    /// VFIO_IOMMU_GET_INFO with a buffer of `argsz` bytes (at least the structure), plus one
    /// call with the bare structure to learn the argsz every capability needs.
    pub fn get_info(&self, argsz: u32) -> Result<InfoFields, Errno> {
        let mut probe = ArgBuf::new(INFO_SZ);
        probe.put_u32(0, INFO_SZ as u32);
        let argsz_needed =
            match sys::ioctl_buf(&self.container, sys::VFIO_IOMMU_GET_INFO, &mut probe) {
                Ok(_) => probe.u32_at(0),
                Err(_) => 0,
            };
        let mut b = ArgBuf::new(INFO_SZ.max(argsz as usize));
        b.put_u32(0, argsz);
        sys::ioctl_buf(&self.container, sys::VFIO_IOMMU_GET_INFO, &mut b)
            .map_err(Errno::from_raw)?;
        let mut info = InfoFields {
            argsz: b.u32_at(0),
            flags: b.u32_at(4),
            iova_pgsizes: b.u64_at(8),
            cap_offset: b.u32_at(16),
            argsz_needed,
            ..InfoFields::default()
        };
        if info.flags & sys::VFIO_IOMMU_INFO_CAPS != 0 && info.cap_offset != 0 {
            parse_caps(&b.bytes()[..b.len()], info.cap_offset as usize, &mut info);
        }
        Ok(info)
    }

    /// The process's locked pages (`VmLck` / 4), as the kernel's `locked_vm`.
    pub fn locked_pages(&self) -> Option<u64> {
        locked_pages()
    }

    /// DMA entries left (GET_INFO's DMA_AVAIL capability).
    pub fn avail(&self) -> Option<u32> {
        self.get_info(4096).ok().and_then(|i| i.dma_avail)
    }

    /// VFIO_IOMMU_DIRTY_PAGES with START (`flags` 1) or STOP (2) and `argsz`.
    pub fn dirty(&self, argsz: u32, flags: u32) -> Result<(), Errno> {
        let mut b = ArgBuf::new(8usize.max(argsz as usize));
        b.put_u32(0, argsz);
        b.put_u32(4, flags);
        sys::ioctl_buf(&self.container, sys::VFIO_IOMMU_DIRTY_PAGES, &mut b)
            .map(|_| ())
            .map_err(Errno::from_raw)
    }

    /// VFIO_IOMMU_DIRTY_PAGES with GET_BITMAP (argsz 48): the bitmap words.
    pub fn dirty_get(&self, iova: u64, size: u64, bitmap: BitmapArg) -> Result<Vec<u64>, Errno> {
        let mut b = ArgBuf::new(48);
        b.put_u32(0, 48);
        b.put_u32(4, 4);
        b.put_u64(8, iova);
        b.put_u64(16, size);
        b.put_u64(24, bitmap.pgsize);
        b.put_u64(32, bitmap.size);
        let mut out = vec![0u64; (bitmap.size as usize).div_ceil(8)];
        sys::ioctl_with_bitmap(
            &self.container,
            sys::VFIO_IOMMU_DIRTY_PAGES,
            &mut b,
            24,
            &mut out,
        )
        .map_err(Errno::from_raw)?;
        Ok(out)
    }
}

/// The process's locked pages: `VmLck` (kB) / 4.
pub fn locked_pages() -> Option<u64> {
    sys::vmlck_kb().ok().map(|kb| kb / 4)
}

/// Walks the capability chain of a GET_INFO reply.
pub fn parse_caps(buf: &[u8], first: usize, info: &mut InfoFields) {
    let u16_at = |o: usize| buf.get(o..o + 2).map(|s| u16::from_le_bytes([s[0], s[1]]));
    let u32_at = |o: usize| {
        buf.get(o..o + 4)
            .map(|s| u32::from_le_bytes(s.try_into().unwrap()))
    };
    let u64_at = |o: usize| {
        buf.get(o..o + 8)
            .map(|s| u64::from_le_bytes(s.try_into().unwrap()))
    };
    let mut off = first;
    let mut seen = 0;
    while off != 0 && off + 8 <= buf.len() && seen < 16 {
        seen += 1;
        let (Some(id), Some(next)) = (u16_at(off), u32_at(off + 4)) else {
            break;
        };
        match id as u32 {
            sys::VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE => {
                let n = u32_at(off + 8).unwrap_or(0) as usize;
                let ranges = (0..n)
                    .map_while(|i| {
                        let o = off + 16 + i * 16;
                        Some((u64_at(o)?, u64_at(o + 8)?))
                    })
                    .collect();
                info.iova_ranges = Some(ranges);
            }
            sys::VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION => {
                info.migration_pgsize = u64_at(off + 16);
            }
            sys::VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL => {
                info.dma_avail = u32_at(off + 8);
            }
            _ => {}
        }
        off = next as usize;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The capability chain 7.2 writes (cap_offset 24: migration, dma_avail, iova_range).
    #[test]
    fn caps_chain() {
        let mut b = vec![0u8; 120];
        let put = |b: &mut Vec<u8>, o: usize, v: &[u8]| b[o..o + v.len()].copy_from_slice(v);
        // migration at 24 -> next 56
        put(&mut b, 24, &2u16.to_le_bytes());
        put(&mut b, 26, &1u16.to_le_bytes());
        put(&mut b, 28, &56u32.to_le_bytes());
        put(&mut b, 40, &0x1000u64.to_le_bytes());
        // dma_avail at 56 -> next 72
        put(&mut b, 56, &3u16.to_le_bytes());
        put(&mut b, 60, &72u32.to_le_bytes());
        put(&mut b, 64, &65535u32.to_le_bytes());
        // iova range at 72 -> end
        put(&mut b, 72, &1u16.to_le_bytes());
        put(&mut b, 80, &2u32.to_le_bytes());
        put(&mut b, 88, &0u64.to_le_bytes());
        put(&mut b, 96, &0xfedf_ffffu64.to_le_bytes());
        put(&mut b, 104, &0xfef0_0000u64.to_le_bytes());
        put(&mut b, 112, &0x7f_ffff_ffffu64.to_le_bytes());
        let mut i = InfoFields::default();
        parse_caps(&b, 24, &mut i);
        assert_eq!(i.migration_pgsize, Some(0x1000));
        assert_eq!(i.dma_avail, Some(65535));
        assert_eq!(
            i.iova_ranges,
            Some(vec![(0, 0xfedf_ffff), (0xfef0_0000, 0x7f_ffff_ffff)])
        );
    }
}
