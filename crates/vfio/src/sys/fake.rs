//! A fake of [`VfioSys`] for unit tests of `VfioContainer`: it records every call with the typed
//! arguments it was given (argsz, flags, bitmap sizes as the container wrote them) and answers
//! from a script, one [`Answer`] per call in order; with the script empty every call succeeds
//! and writes nothing back. Files it opens are /dev/null.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

use type1::Errno;

use super::{
    vfio_group_status, vfio_iommu_type1_dma_map, DirtyBitmap, DirtyPages, DmaUnmap, InfoBuf,
    VfioSys,
};

/// One call, with what the container passed.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Call {
    /// `open_rw(path)`.
    Open(String),
    /// `set_dma_entry_limit(limit)`.
    SetDmaEntryLimit(u32),
    /// `set_memlock(bytes)`.
    SetMemlock(Option<u64>),
    /// `drop_cap_ipc_lock()`.
    DropCapIpcLock,
    /// `vmlck_kb()`.
    VmlckKb,
    /// VFIO_GET_API_VERSION.
    GetApiVersion,
    /// VFIO_CHECK_EXTENSION(ext).
    CheckExtension(u32),
    /// VFIO_SET_IOMMU(type).
    SetIommu(u32),
    /// VFIO_GROUP_GET_STATUS with the structure's argsz.
    GroupGetStatus { argsz: u32 },
    /// VFIO_GROUP_SET_CONTAINER.
    GroupSetContainer,
    /// VFIO_IOMMU_GET_INFO: the argsz claimed and the buffer's length.
    GetInfo { argsz: u32, len: usize },
    /// VFIO_IOMMU_MAP_DMA.
    MapDma(vfio_iommu_type1_dma_map),
    /// VFIO_IOMMU_UNMAP_DMA: the structure's fields and the bitmap, if any.
    UnmapDma {
        argsz: u32,
        flags: u32,
        iova: u64,
        size: u64,
        bitmap: Option<BitmapSeen>,
    },
    /// VFIO_IOMMU_DIRTY_PAGES: argsz, flags, and for GET_BITMAP the range and bitmap.
    DirtyPages {
        argsz: u32,
        flags: u32,
        get: Option<(u64, u64, BitmapSeen)>,
    },
}

/// A bitmap as a call saw it: page size, declared bytes, and the words allocated for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BitmapSeen {
    pub pgsize: u64,
    pub size: u64,
    pub words: usize,
}

impl BitmapSeen {
    fn of(b: &DirtyBitmap) -> Self {
        BitmapSeen {
            pgsize: b.pgsize(),
            size: b.size(),
            words: b.words().len(),
        }
    }
}

/// The answer to one call.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Answer {
    /// Success with this value: the ioctl's return value, the flags GROUP_GET_STATUS writes, or
    /// the kB `vmlck_kb` reads.
    Ok(i32),
    /// Failure with this errno (as an `io::Error` for the file and process calls).
    Err(Errno),
    /// GET_INFO succeeds and writes these bytes at the start of the buffer (cut to its length).
    Info(Vec<u8>),
    /// UNMAP_DMA writes `size` back into the structure, then returns `result`.
    Unmapped {
        size: u64,
        result: Result<(), Errno>,
    },
    /// Success, with these words written into the call's bitmap (cut to its length).
    Bitmap(Vec<u64>),
}

#[derive(Debug, Default)]
struct State {
    calls: Vec<Call>,
    script: VecDeque<Answer>,
}

/// The fake. Clones share one record and one script: keep one, give one to the container.
#[derive(Clone, Debug, Default)]
pub(crate) struct Fake(Arc<Mutex<State>>);

impl Fake {
    /// A fake that answers `script`, in order.
    pub(crate) fn new(script: impl IntoIterator<Item = Answer>) -> Self {
        let f = Fake::default();
        f.state().script.extend(script);
        f
    }

    /// Every call so far.
    pub(crate) fn calls(&self) -> Vec<Call> {
        self.state().calls.clone()
    }

    /// Appends answers to the script.
    pub(crate) fn script(&self, answers: impl IntoIterator<Item = Answer>) {
        self.state().script.extend(answers);
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap()
    }

    /// Records `call` and takes its answer (`Ok(0)` when the script is empty).
    fn answer(&self, call: Call) -> Answer {
        let mut s = self.state();
        s.calls.push(call);
        s.script.pop_front().unwrap_or(Answer::Ok(0))
    }

    /// An answer as an ioctl result; success answers other than `Ok` count as 0.
    fn ioctl(&self, call: Call) -> Result<i32, Errno> {
        match self.answer(call) {
            Answer::Err(e) => Err(e),
            Answer::Ok(v) => Ok(v),
            _ => Ok(0),
        }
    }

    /// An answer as a file or process call's result.
    fn io(&self, call: Call) -> io::Result<i32> {
        self.ioctl(call)
            .map_err(|e| io::Error::from_raw_os_error(e.code()))
    }
}

/// Writes `words` into `bitmap`, cut to its length.
fn fill(bitmap: &mut DirtyBitmap, words: &[u64]) {
    for (w, v) in bitmap.words_mut().iter_mut().zip(words) {
        *w = *v;
    }
}

impl VfioSys for Fake {
    fn open_rw(&self, path: &str) -> io::Result<File> {
        self.io(Call::Open(path.to_string()))?;
        File::options().read(true).write(true).open("/dev/null")
    }

    fn set_dma_entry_limit(&self, limit: u32) -> io::Result<()> {
        self.io(Call::SetDmaEntryLimit(limit)).map(|_| ())
    }

    fn set_memlock(&self, bytes: Option<u64>) -> io::Result<()> {
        self.io(Call::SetMemlock(bytes)).map(|_| ())
    }

    fn drop_cap_ipc_lock(&self) -> io::Result<()> {
        self.io(Call::DropCapIpcLock).map(|_| ())
    }

    fn vmlck_kb(&self) -> io::Result<u64> {
        self.io(Call::VmlckKb).map(|kb| kb as u64)
    }

    fn get_api_version(&self, _: &File) -> Result<i32, Errno> {
        self.ioctl(Call::GetApiVersion)
    }

    fn check_extension(&self, _: &File, ext: u32) -> Result<i32, Errno> {
        self.ioctl(Call::CheckExtension(ext))
    }

    fn set_iommu(&self, _: &File, iommu_type: u32) -> Result<(), Errno> {
        self.ioctl(Call::SetIommu(iommu_type)).map(|_| ())
    }

    fn group_get_status(&self, _: &File, status: &mut vfio_group_status) -> Result<(), Errno> {
        let argsz = status.argsz;
        status.flags = self.ioctl(Call::GroupGetStatus { argsz })? as u32;
        Ok(())
    }

    fn group_set_container(&self, _: &File, _: &File) -> Result<(), Errno> {
        self.ioctl(Call::GroupSetContainer).map(|_| ())
    }

    fn iommu_get_info(&self, _: &File, info: &mut InfoBuf) -> Result<(), Errno> {
        let call = Call::GetInfo {
            argsz: info.header().argsz,
            len: info.bytes().len(),
        };
        match self.answer(call) {
            Answer::Err(e) => Err(e),
            Answer::Info(reply) => {
                info.fill(&reply);
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn iommu_map_dma(&self, _: &File, map: &vfio_iommu_type1_dma_map) -> Result<(), Errno> {
        self.ioctl(Call::MapDma(*map)).map(|_| ())
    }

    fn iommu_unmap_dma(&self, _: &File, arg: &mut DmaUnmap<'_>) -> Result<(), Errno> {
        let u = &arg.unmap;
        let call = Call::UnmapDma {
            argsz: u.argsz,
            flags: u.flags,
            iova: u.iova,
            size: u.size,
            bitmap: arg.bitmap.as_deref().map(BitmapSeen::of),
        };
        match self.answer(call) {
            Answer::Err(e) => Err(e),
            Answer::Unmapped { size, result } => {
                arg.unmap.size = size;
                result
            }
            Answer::Bitmap(words) => {
                if let Some(b) = arg.bitmap.as_deref_mut() {
                    fill(b, &words);
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn iommu_dirty_pages(&self, _: &File, arg: DirtyPages<'_>) -> Result<(), Errno> {
        let DirtyPages { dirty, get } = arg;
        let call = Call::DirtyPages {
            argsz: dirty.argsz,
            flags: dirty.flags,
            get: get
                .as_ref()
                .map(|g| (g.iova, g.size, BitmapSeen::of(g.bitmap))),
        };
        match self.answer(call) {
            Answer::Err(e) => Err(e),
            Answer::Bitmap(words) => {
                if let Some(g) = get {
                    fill(g.bitmap, &words);
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}
