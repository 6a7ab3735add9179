//! `VfioContainer`: a real VFIO container with the type1 backend, driven through /dev/vfio.
//! Its methods mirror the engine's (`type1::Container`): same arguments, errors as the kernel's
//! errno values.
//!
//! It writes the requests (argsz, flags, the bitmap's declared size) and reads the replies (the
//! unmapped size written back, GET_INFO's capability chain); the OS is behind `sys::VfioSys`, so
//! everything here is unit-tested against `sys::fake::Fake`.

use std::fs::File;

use crate::sys::{
    self, vfio_group_status, vfio_iommu_type1_dirty_bitmap, vfio_iommu_type1_dma_map,
    vfio_iommu_type1_dma_unmap, DirtyBitmap, DirtyBitmapGet, DirtyPages, DmaUnmap, InfoBuf, Kernel,
    VfioSys, INFO_SZ,
};
use type1_trace::InfoFields;

pub use type1::Errno;

/// Why a container could not be set up.
#[derive(Debug)]
pub enum Error {
    /// A file could not be opened, read or written.
    Io {
        /// What was being done.
        what: String,
        /// The OS's error.
        source: std::io::Error,
    },
    /// A setup ioctl failed.
    Ioctl {
        /// The ioctl's name.
        what: &'static str,
        /// What the kernel answered.
        errno: Errno,
    },
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

/// The `vfio_bitmap` of an unmap with GET_DIRTY_BITMAP or of a dirty query (the engine's type).
pub use type1::BitmapArg;

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
    group_file: File,
    /// The OS (the kernel; a fake in unit tests).
    sys: Box<dyn VfioSys>,
    /// The group number (`/dev/vfio/GROUP`).
    pub group: u32,
    /// Whether the backend is type1v2 (else type1).
    pub v2: bool,
}

/// A setup ioctl's errno as an `Error`.
fn ioctl_err(what: &'static str) -> impl FnOnce(Errno) -> Error {
    move |errno| Error::Ioctl { what, errno }
}

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
        let settings = (dma_entry_limit, memlock, cap_ipc_lock);
        Self::open_with(Box::new(Kernel), group, v2, settings)
    }

    /// `open` through `sys`.
    fn open_with(
        sys: Box<dyn VfioSys>,
        group: u32,
        v2: bool,
        (dma_entry_limit, memlock, cap_ipc_lock): (Option<u32>, Option<Option<u64>>, bool),
    ) -> Result<Self, Error> {
        if let Some(limit) = dma_entry_limit {
            sys.set_dma_entry_limit(limit)
                .map_err(io_err("writing dma_entry_limit"))?;
        }
        let rw = |p: &str| sys.open_rw(p).map_err(io_err(format!("opening {p}")));
        let container = rw("/dev/vfio/vfio")?;
        let api = sys
            .get_api_version(&container)
            .map_err(ioctl_err("VFIO_GET_API_VERSION"))?;
        if api != 0 {
            return Err(Error::Unexpected(format!("VFIO API version {api}, not 0")));
        }
        let ty = if v2 {
            sys::VFIO_TYPE1v2_IOMMU
        } else {
            sys::VFIO_TYPE1_IOMMU
        };
        let has = sys
            .check_extension(&container, ty)
            .map_err(ioctl_err("VFIO_CHECK_EXTENSION"))?;
        if has != 1 {
            return Err(Error::Unexpected(format!(
                "the kernel does not offer IOMMU type {ty}"
            )));
        }
        let grp = rw(&format!("/dev/vfio/{group}"))?;
        let mut status = vfio_group_status {
            argsz: std::mem::size_of::<vfio_group_status>() as u32,
            flags: 0,
        };
        sys.group_get_status(&grp, &mut status)
            .map_err(ioctl_err("VFIO_GROUP_GET_STATUS"))?;
        let flags = status.flags;
        if flags & sys::VFIO_GROUP_FLAGS_VIABLE == 0 {
            return Err(Error::Unexpected(format!(
                "group {group} is not viable (flags {flags:#x}): bind all its devices to vfio-pci"
            )));
        }
        sys.group_set_container(&grp, &container)
            .map_err(ioctl_err("VFIO_GROUP_SET_CONTAINER"))?;
        sys.set_iommu(&container, ty)
            .map_err(ioctl_err("VFIO_SET_IOMMU"))?;
        if let Some(m) = memlock {
            sys.set_memlock(m)
                .map_err(io_err("setrlimit(RLIMIT_MEMLOCK)"))?;
        }
        if !cap_ipc_lock {
            sys.drop_cap_ipc_lock()
                .map_err(io_err("capset (dropping CAP_IPC_LOCK)"))?;
        }
        Ok(VfioContainer {
            container,
            group_file: grp,
            sys,
            group,
            v2,
        })
    }

    /// VFIO_GROUP_GET_DEVICE_FD: the group's device `name` (`DDDD:BB:DD.F`), opened (the group
    /// has its container and IOMMU set, as the kernel requires).
    pub fn open_device(&self, name: &str) -> Result<File, Errno> {
        sys::group_get_device_fd(&self.group_file, name)
    }

    /// VFIO_CHECK_EXTENSION on the container.
    pub fn check_extension(&self, ext: u32) -> Result<i32, Errno> {
        self.sys.check_extension(&self.container, ext)
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
        let map = vfio_iommu_type1_dma_map {
            argsz,
            flags,
            vaddr,
            iova,
            size,
        };
        self.sys.iommu_map_dma(&self.container, &map)
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
        let mut bits = bitmap.map(|bm| DirtyBitmap::new(bm.pgsize, bm.size));
        let mut arg = DmaUnmap {
            unmap: vfio_iommu_type1_dma_unmap {
                argsz,
                flags,
                iova,
                size,
                ..Default::default()
            },
            bitmap: bits.as_mut(),
        };
        let r = self.sys.iommu_unmap_dma(&self.container, &mut arg);
        // The size the kernel wrote back (a failed call leaves the caller's value).
        let out_size = arg.unmap.size;
        UnmapOutcome {
            result: r.map(|()| out_size),
            out_size,
            bitmap: bits.filter(|_| r.is_ok()).map(DirtyBitmap::into_words),
        }
    }

    /// VFIO_IOMMU_GET_INFO with a buffer of `argsz` bytes (at least the structure), plus one
    /// call with the bare structure to learn the argsz every capability needs.
    pub fn get_info(&self, argsz: u32) -> Result<InfoFields, Errno> {
        let mut probe = InfoBuf::new(INFO_SZ as u32);
        let argsz_needed = match self.sys.iommu_get_info(&self.container, &mut probe) {
            Ok(()) => probe.header().argsz,
            Err(_) => 0,
        };
        let mut b = InfoBuf::new(argsz);
        self.sys.iommu_get_info(&self.container, &mut b)?;
        let h = b.header();
        let mut info = InfoFields {
            argsz: h.argsz,
            flags: h.flags,
            iova_pgsizes: h.iova_pgsizes,
            cap_offset: h.cap_offset,
            argsz_needed,
            ..InfoFields::default()
        };
        if info.flags & sys::VFIO_IOMMU_INFO_CAPS != 0 && info.cap_offset != 0 {
            parse_caps(&b.bytes(), info.cap_offset as usize, &mut info);
        }
        Ok(info)
    }

    /// The process's locked pages (`VmLck` / 4), as the kernel's `locked_vm`.
    pub fn locked_pages(&self) -> Option<u64> {
        locked_pages_of(&*self.sys)
    }

    /// DMA entries left (GET_INFO's DMA_AVAIL capability).
    pub fn avail(&self) -> Option<u32> {
        self.get_info(4096).ok().and_then(|i| i.dma_avail)
    }

    /// VFIO_IOMMU_DIRTY_PAGES with START (`flags` 1) or STOP (2) and `argsz`.
    pub fn dirty(&self, argsz: u32, flags: u32) -> Result<(), Errno> {
        let arg = DirtyPages {
            dirty: vfio_iommu_type1_dirty_bitmap {
                argsz,
                flags,
                ..Default::default()
            },
            get: None,
        };
        self.sys.iommu_dirty_pages(&self.container, arg)
    }

    /// VFIO_IOMMU_DIRTY_PAGES with GET_BITMAP (argsz 48): the bitmap words.
    pub fn dirty_get(&self, iova: u64, size: u64, bitmap: BitmapArg) -> Result<Vec<u64>, Errno> {
        let mut bits = DirtyBitmap::new(bitmap.pgsize, bitmap.size);
        let arg = DirtyPages {
            dirty: vfio_iommu_type1_dirty_bitmap {
                argsz: 48,
                flags: sys::VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP,
                ..Default::default()
            },
            get: Some(DirtyBitmapGet {
                iova,
                size,
                bitmap: &mut bits,
            }),
        };
        self.sys.iommu_dirty_pages(&self.container, arg)?;
        Ok(bits.into_words())
    }
}

/// The process's locked pages: `VmLck` (kB) / 4.
pub fn locked_pages() -> Option<u64> {
    locked_pages_of(&Kernel)
}

fn locked_pages_of(sys: &dyn VfioSys) -> Option<u64> {
    sys.vmlck_kb().ok().map(|kb| kb / 4)
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
    use crate::sys::fake::{Answer, BitmapSeen, Call, Fake};

    /// The answers of a successful `open`: API version 0, the type offered, a viable group.
    fn setup_answers() -> Vec<Answer> {
        let viable = sys::VFIO_GROUP_FLAGS_VIABLE as i32;
        // open container, API version, CHECK_EXTENSION, open group, GET_STATUS.
        let ok = Answer::Ok(0);
        vec![
            ok.clone(),
            ok,
            Answer::Ok(1),
            Answer::Ok(0),
            Answer::Ok(viable),
        ]
    }

    /// A type1v2 container on group 7 over `fake` (which must answer `setup_answers` first).
    fn open(fake: &Fake) -> VfioContainer {
        let settings = (None, None, true);
        VfioContainer::open_with(Box::new(fake.clone()), 7, true, settings).unwrap()
    }

    /// A container whose setup is done, with `script` for what follows; and the fake.
    fn opened(script: Vec<Answer>) -> (VfioContainer, Fake) {
        let fake = Fake::new(setup_answers());
        let c = open(&fake);
        let setup_calls = fake.calls().len();
        fake.script(script);
        assert_eq!(setup_calls, 7);
        (c, fake)
    }

    /// The calls after the setup.
    fn calls_after_setup(fake: &Fake) -> Vec<Call> {
        fake.calls()[7..].to_vec()
    }

    #[test]
    fn open_issues_the_setup_calls_in_the_kernels_order() {
        for (v2, ty) in [(true, 3), (false, 1)] {
            // One more answer first: the write of dma_entry_limit.
            let fake = Fake::new([Answer::Ok(0)].into_iter().chain(setup_answers()));
            let settings = (Some(10), Some(Some(1 << 20)), false);
            let c = VfioContainer::open_with(Box::new(fake.clone()), 7, v2, settings).unwrap();
            assert_eq!((c.group, c.v2), (7, v2));
            assert_eq!(
                fake.calls(),
                vec![
                    Call::SetDmaEntryLimit(10),
                    Call::Open("/dev/vfio/vfio".into()),
                    Call::GetApiVersion,
                    Call::CheckExtension(ty),
                    Call::Open("/dev/vfio/7".into()),
                    Call::GroupGetStatus { argsz: 8 },
                    Call::GroupSetContainer,
                    Call::SetIommu(ty),
                    Call::SetMemlock(Some(1 << 20)),
                    Call::DropCapIpcLock,
                ]
            );
        }
    }

    #[test]
    fn open_reports_what_failed() {
        let err = |script: Vec<Answer>| {
            let fake = Fake::new(script);
            let e = VfioContainer::open_with(Box::new(fake), 7, true, (None, None, true));
            e.err().unwrap().to_string()
        };
        let mut set_iommu_busy = setup_answers();
        set_iommu_busy.extend([Answer::Ok(0), Answer::Err(Errno::EBUSY)]);
        assert_eq!(err(set_iommu_busy), "VFIO_SET_IOMMU failed: EBUSY (16)");
        let mut not_viable = setup_answers();
        not_viable[4] = Answer::Ok(0);
        assert_eq!(
            err(not_viable),
            "group 7 is not viable (flags 0x0): bind all its devices to vfio-pci"
        );
        let mut no_type = setup_answers();
        no_type[2] = Answer::Ok(0);
        assert_eq!(err(no_type), "the kernel does not offer IOMMU type 3");
        let api_1 = vec![Answer::Ok(0), Answer::Ok(1)];
        assert_eq!(err(api_1), "VFIO API version 1, not 0");
        let no_group = vec![
            Answer::Ok(0),
            Answer::Ok(0),
            Answer::Ok(1),
            Answer::Err(Errno::ENOENT),
        ];
        assert!(err(no_group).starts_with("opening /dev/vfio/7: "));
    }

    #[test]
    fn map_dma_passes_the_request_as_given_and_the_errno_back() {
        let (c, fake) = opened(vec![Answer::Ok(0), Answer::Err(Errno::EEXIST)]);
        c.map_dma(32, 3, 0x7f00_0000_0000, 0x10_0000, 0x20_0000)
            .unwrap();
        assert_eq!(c.map_dma(40, 1, 0x1000, 0, 0x1000), Err(Errno::EEXIST));
        let want = |argsz, flags, vaddr, iova, size| {
            Call::MapDma(vfio_iommu_type1_dma_map {
                argsz,
                flags,
                vaddr,
                iova,
                size,
            })
        };
        assert_eq!(
            calls_after_setup(&fake),
            vec![
                want(32, 3, 0x7f00_0000_0000, 0x10_0000, 0x20_0000),
                want(40, 1, 0x1000, 0, 0x1000)
            ]
        );
    }

    #[test]
    fn unmap_dma_reports_the_size_written_back_whatever_the_result() {
        let (c, fake) = opened(vec![
            Answer::Unmapped {
                size: 0x20_0000,
                result: Ok(()),
            },
            Answer::Unmapped {
                size: 0,
                result: Err(Errno::EINVAL),
            },
            Answer::Err(Errno::EPERM),
        ]);
        let ok = c.unmap_dma(24, 0, 0x10_0000, 0x1000, None);
        assert_eq!(
            ok,
            UnmapOutcome {
                result: Ok(0x20_0000),
                out_size: 0x20_0000,
                bitmap: None
            }
        );
        let failed = c.unmap_dma(16, 0, 0x10_0000, 0x1000, None);
        assert_eq!((failed.result, failed.out_size), (Err(Errno::EINVAL), 0));
        // Nothing written back: the caller's size.
        let untouched = c.unmap_dma(24, 2, 0, 0x5000, None);
        assert_eq!(
            (untouched.result, untouched.out_size),
            (Err(Errno::EPERM), 0x5000)
        );
        assert_eq!(
            calls_after_setup(&fake)[1],
            Call::UnmapDma {
                argsz: 16,
                flags: 0,
                iova: 0x10_0000,
                size: 0x1000,
                bitmap: None
            }
        );
    }

    #[test]
    fn unmap_dma_with_a_bitmap_sizes_it_and_returns_it_only_on_success() {
        let (c, fake) = opened(vec![
            Answer::Bitmap(vec![0b101, 7, 9]),
            Answer::Err(Errno::EINVAL),
        ]);
        let bm = BitmapArg {
            pgsize: 4096,
            size: 9,
        };
        let ok = c.unmap_dma(48, 1, 0, 65 * 4096, Some(bm));
        assert_eq!(ok.result, Ok(65 * 4096));
        assert_eq!(ok.bitmap, Some(vec![0b101, 7]), "9 bytes are 2 words");
        let failed = c.unmap_dma(48, 1, 0, 65 * 4096, Some(bm));
        assert_eq!((failed.result, failed.bitmap), (Err(Errno::EINVAL), None));
        let seen = BitmapSeen {
            pgsize: 4096,
            size: 9,
            words: 2,
        };
        assert_eq!(
            calls_after_setup(&fake)[0],
            Call::UnmapDma {
                argsz: 48,
                flags: 1,
                iova: 0,
                size: 65 * 4096,
                bitmap: Some(seen)
            }
        );
    }

    #[test]
    fn dirty_start_stop_and_get_bitmap() {
        let (c, fake) = opened(vec![
            Answer::Ok(0),
            Answer::Err(Errno::EINVAL),
            Answer::Bitmap(vec![u64::MAX]),
            Answer::Err(Errno::EINVAL),
        ]);
        c.dirty(8, 1).unwrap();
        assert_eq!(c.dirty(4, 2), Err(Errno::EINVAL));
        let bm = BitmapArg {
            pgsize: 4096,
            size: 8,
        };
        assert_eq!(c.dirty_get(0x20_0000, 0x4_0000, bm), Ok(vec![u64::MAX]));
        assert_eq!(c.dirty_get(0, 0x1000, bm), Err(Errno::EINVAL));
        let seen = BitmapSeen {
            pgsize: 4096,
            size: 8,
            words: 1,
        };
        let dirty = |argsz, flags, get| Call::DirtyPages { argsz, flags, get };
        assert_eq!(
            calls_after_setup(&fake),
            vec![
                dirty(8, 1, None),
                dirty(4, 2, None),
                dirty(48, 4, Some((0x20_0000, 0x4_0000, seen))),
                dirty(48, 4, Some((0, 0x1000, seen))),
            ]
        );
    }

    /// A capability of a GET_INFO reply.
    enum Cap {
        IovaRanges(Vec<(u64, u64)>),
        Migration { pgsize: u64 },
        DmaAvail(u32),
    }

    /// A GET_INFO reply as the kernel lays it out: the structure (`argsz`, flags, page sizes,
    /// cap_offset 24 when there are capabilities), then each capability (header: id, version 1,
    /// next) at an 8-byte aligned offset, chained in order, the last with next 0.
    fn info_reply(argsz: u32, flags: u32, iova_pgsizes: u64, caps: &[Cap]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend(argsz.to_le_bytes());
        b.extend(flags.to_le_bytes());
        b.extend(iova_pgsizes.to_le_bytes());
        let cap_offset: u32 = if caps.is_empty() { 0 } else { 24 };
        b.extend(cap_offset.to_le_bytes());
        b.extend(0u32.to_le_bytes());
        for (i, cap) in caps.iter().enumerate() {
            let (id, body): (u16, Vec<u8>) = match cap {
                Cap::IovaRanges(r) => {
                    let mut v = (r.len() as u64).to_le_bytes().to_vec();
                    for &(start, last) in r {
                        v.extend(start.to_le_bytes());
                        v.extend(last.to_le_bytes());
                    }
                    (1, v)
                }
                Cap::Migration { pgsize } => {
                    let mut v = 0u64.to_le_bytes().to_vec();
                    v.extend(pgsize.to_le_bytes());
                    v.extend(0u64.to_le_bytes());
                    (2, v)
                }
                Cap::DmaAvail(n) => (3, n.to_le_bytes().to_vec()),
            };
            let at = b.len();
            let next = (at + 8 + body.len()).next_multiple_of(8);
            let next = if i + 1 == caps.len() { 0 } else { next };
            b.extend(id.to_le_bytes());
            b.extend(1u16.to_le_bytes());
            b.extend((next as u32).to_le_bytes());
            b.extend(body);
            b.resize(b.len().next_multiple_of(8), 0);
        }
        b
    }

    /// The capability chain 7.2 writes (cap_offset 24: migration, dma_avail, iova_range).
    #[test]
    fn caps_chain() {
        let b = info_reply(
            120,
            3,
            0x4020_1000,
            &[
                Cap::Migration { pgsize: 0x1000 },
                Cap::DmaAvail(65535),
                Cap::IovaRanges(vec![(0, 0xfedf_ffff), (0xfef0_0000, 0x7f_ffff_ffff)]),
            ],
        );
        // The layout: migration at 24 -> 56, dma_avail at 56 -> 72, iova range at 72 -> end.
        assert_eq!(b.len(), 120);
        assert_eq!(
            (b[24], b[28], b[56], b[60], b[72], b[76]),
            (2, 56, 3, 72, 1, 0)
        );
        let mut i = InfoFields::default();
        parse_caps(&b, 24, &mut i);
        assert_eq!(i.migration_pgsize, Some(0x1000));
        assert_eq!(i.dma_avail, Some(65535));
        assert_eq!(
            i.iova_ranges,
            Some(vec![(0, 0xfedf_ffff), (0xfef0_0000, 0x7f_ffff_ffff)])
        );
    }

    #[test]
    fn get_info_probes_the_argsz_then_parses_the_reply() {
        let caps = [Cap::DmaAvail(9), Cap::Migration { pgsize: 0x1000 }];
        let full = info_reply(72, 3, 0x4020_1000, &caps);
        // The probe: the kernel says 72 bytes hold every capability, and copies none.
        let probe = info_reply(72, 3, 0x4020_1000, &[]);
        let (c, fake) = opened(vec![Answer::Info(probe), Answer::Info(full)]);
        let info = c.get_info(4096).unwrap();
        assert_eq!(
            info,
            InfoFields {
                argsz: 72,
                flags: 3,
                iova_pgsizes: 0x4020_1000,
                cap_offset: 24,
                argsz_needed: 72,
                dma_avail: Some(9),
                iova_ranges: None,
                migration_pgsize: Some(0x1000),
            }
        );
        assert_eq!(
            calls_after_setup(&fake),
            vec![
                Call::GetInfo { argsz: 24, len: 24 },
                Call::GetInfo {
                    argsz: 4096,
                    len: 4096
                }
            ]
        );
    }

    #[test]
    fn get_info_small_buffers_and_errors() {
        // A buffer smaller than the structure is still the structure; the caps are only read
        // with the CAPS flag; a failed probe leaves argsz_needed 0; the errno comes back.
        let no_caps_flag = info_reply(24, 1, 0x1000, &[Cap::DmaAvail(5)]);
        let (c, fake) = opened(vec![
            Answer::Err(Errno::EINVAL),
            Answer::Info(no_caps_flag),
            Answer::Ok(0),
            Answer::Err(Errno::EFAULT),
        ]);
        let info = c.get_info(16).unwrap();
        assert_eq!((info.argsz_needed, info.dma_avail), (0, None));
        assert_eq!((info.flags, info.cap_offset), (1, 24));
        assert_eq!(c.get_info(4096), Err(Errno::EFAULT));
        assert_eq!(
            calls_after_setup(&fake)[1],
            Call::GetInfo { argsz: 16, len: 24 }
        );
    }

    #[test]
    fn avail_and_locked_pages() {
        let full = info_reply(40, 3, 0x1000, &[Cap::DmaAvail(65534)]);
        let (c, fake) = opened(vec![
            Answer::Info(full.clone()),
            Answer::Info(full),
            Answer::Ok(2052),
        ]);
        assert_eq!(c.avail(), Some(65534));
        assert_eq!(c.locked_pages(), Some(513), "VmLck 2052 kB");
        assert_eq!(calls_after_setup(&fake)[2], Call::VmlckKb);
        assert_eq!(c.check_extension(1), Ok(0));
        assert_eq!(calls_after_setup(&fake)[3], Call::CheckExtension(1));
    }
}
