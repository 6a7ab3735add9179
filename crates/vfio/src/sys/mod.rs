//! The only module with `unsafe`, private to the crate: one function per VFIO ioctl on the
//! container and group fds (typed arguments in, the kernel's errno out as `Errno`), anonymous and
//! hugetlb mmaps, RLIMIT_MEMLOCK and CAP_IPC_LOCK, reading `VmLck`.
//!
//! What `VfioContainer` needs from the OS is the trait [`VfioSys`]: [`Kernel`] does it for real,
//! `fake::Fake` records the calls and answers from a script, for unit tests of the container.
//!
//! Invariants this module owns: every ioctl argument lives in a buffer built here ([`ArgBuf`]),
//! sized to at least the larger of the structure and the `argsz` written in it, so whatever the
//! kernel reads or writes (it trusts `argsz` only up to the structure it knows, and GET_INFO
//! writes at most `argsz` bytes) stays inside our memory; a `vfio_bitmap`'s `data` points at a
//! [`DirtyBitmap`]'s words, which hold at least the `size` bytes it declares. The raw helpers
//! ([`ioctl_val`], [`ioctl_ptr`], [`ioctl_buf`]) are `unsafe fn`s; the per-ioctl methods of
//! [`Kernel`] uphold their contracts by construction, so they are safe.

#[cfg(test)]
pub(crate) mod fake;

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;

use type1::Errno;
use vfio_bindings::bindings::vfio as b;

pub(crate) use b::{
    vfio_group_status, vfio_iommu_type1_dirty_bitmap, vfio_iommu_type1_dma_map,
    vfio_iommu_type1_dma_unmap, vfio_iommu_type1_info, VFIO_TYPE1v2_IOMMU, VFIO_GROUP_FLAGS_VIABLE,
    VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP, VFIO_IOMMU_INFO_CAPS,
    VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE, VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION,
    VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL, VFIO_TYPE1_IOMMU,
};

/// `_IO(VFIO_TYPE, VFIO_BASE + nr)`: VFIO ioctls carry no size or direction bits.
const fn vfio_io(nr: u32) -> libc::c_ulong {
    (((b::VFIO_TYPE as u32) << 8) | (b::VFIO_BASE + nr)) as libc::c_ulong
}

const VFIO_GET_API_VERSION: libc::c_ulong = vfio_io(0);
const VFIO_CHECK_EXTENSION: libc::c_ulong = vfio_io(1);
const VFIO_SET_IOMMU: libc::c_ulong = vfio_io(2);
const VFIO_GROUP_GET_STATUS: libc::c_ulong = vfio_io(3);
const VFIO_GROUP_SET_CONTAINER: libc::c_ulong = vfio_io(4);
const VFIO_IOMMU_GET_INFO: libc::c_ulong = vfio_io(12);
const VFIO_IOMMU_MAP_DMA: libc::c_ulong = vfio_io(13);
const VFIO_IOMMU_UNMAP_DMA: libc::c_ulong = vfio_io(14);
const VFIO_IOMMU_DIRTY_PAGES: libc::c_ulong = vfio_io(17);
const VFIO_GROUP_GET_DEVICE_FD: libc::c_ulong = vfio_io(6);
const VFIO_DEVICE_GET_REGION_INFO: libc::c_ulong = vfio_io(8);
/// `sizeof(struct vfio_region_info)`: argsz, flags, index, cap_offset, size, offset.
const REGION_INFO_SZ: usize = 32;
/// `VFIO_REGION_INFO_FLAG_MMAP`: the region may be mmap'd from the device fd.
pub(crate) const REGION_INFO_FLAG_MMAP: u32 = 1 << 2;

/// `sizeof(struct vfio_iommu_type1_dma_map)`.
const MAP_SZ: usize = 32;
/// `sizeof(struct vfio_iommu_type1_dma_unmap)` (without the flexible `data`).
const UNMAP_SZ: usize = 24;
/// `sizeof(struct vfio_iommu_type1_info)`.
pub(crate) const INFO_SZ: usize = 24;
/// `sizeof(struct vfio_bitmap)`.
const BITMAP_SZ: usize = 24;
/// `sizeof(struct vfio_iommu_type1_dirty_bitmap)` (without the flexible `data`).
const DIRTY_SZ: usize = 8;
/// `sizeof(struct vfio_iommu_type1_dirty_bitmap_get)`.
const DIRTY_GET_SZ: usize = 16 + BITMAP_SZ;

/// The OS operations a `VfioContainer` makes: one method per VFIO ioctl (typed arguments, the
/// kernel's errno as `Errno`), plus the files and process settings around them.
pub(crate) trait VfioSys: Send + Sync {
    /// Opens a VFIO node (`/dev/vfio/vfio`, `/dev/vfio/GROUP`) read-write.
    fn open_rw(&self, path: &str) -> io::Result<File>;
    /// Writes vfio_iommu_type1's `dma_entry_limit` module parameter (read when a container's
    /// backend is set, so before SET_IOMMU).
    fn set_dma_entry_limit(&self, limit: u32) -> io::Result<()>;
    /// setrlimit(RLIMIT_MEMLOCK): `None` is unlimited.
    fn set_memlock(&self, bytes: Option<u64>) -> io::Result<()>;
    /// Removes CAP_IPC_LOCK from the effective set.
    fn drop_cap_ipc_lock(&self) -> io::Result<()>;
    /// `VmLck` of /proc/self/status in kB.
    fn vmlck_kb(&self) -> io::Result<u64>;

    /// VFIO_GET_API_VERSION.
    fn get_api_version(&self, container: &File) -> Result<i32, Errno>;
    /// VFIO_CHECK_EXTENSION: 1 if the container offers `ext` (an IOMMU type or extension).
    fn check_extension(&self, container: &File, ext: u32) -> Result<i32, Errno>;
    /// VFIO_SET_IOMMU with `iommu_type` (VFIO_TYPE1_IOMMU or VFIO_TYPE1v2_IOMMU).
    fn set_iommu(&self, container: &File, iommu_type: u32) -> Result<(), Errno>;
    /// VFIO_GROUP_GET_STATUS: the kernel fills `status.flags`.
    fn group_get_status(&self, group: &File, status: &mut vfio_group_status) -> Result<(), Errno>;
    /// VFIO_GROUP_SET_CONTAINER.
    fn group_set_container(&self, group: &File, container: &File) -> Result<(), Errno>;
    /// VFIO_IOMMU_GET_INFO into `info` (the kernel writes at most its `argsz` bytes).
    fn iommu_get_info(&self, container: &File, info: &mut InfoBuf) -> Result<(), Errno>;
    /// VFIO_IOMMU_MAP_DMA; `map.argsz` is passed as given (the buffer is padded to it).
    fn iommu_map_dma(&self, container: &File, map: &vfio_iommu_type1_dma_map) -> Result<(), Errno>;
    /// VFIO_IOMMU_UNMAP_DMA. The size the kernel writes back is copied into `arg.unmap.size`,
    /// whatever the result.
    fn iommu_unmap_dma(&self, container: &File, arg: &mut DmaUnmap<'_>) -> Result<(), Errno>;
    /// VFIO_IOMMU_DIRTY_PAGES: START, STOP or GET_BITMAP.
    fn iommu_dirty_pages(&self, container: &File, arg: DirtyPages<'_>) -> Result<(), Errno>;
}

/// The argument of VFIO_IOMMU_UNMAP_DMA: the structure and, in its flexible `data`, the
/// `vfio_bitmap` of GET_DIRTY_BITMAP if any.
#[derive(Debug)]
pub(crate) struct DmaUnmap<'a> {
    /// The structure, `argsz` as the caller claims it.
    pub unmap: vfio_iommu_type1_dma_unmap,
    /// The bitmap that follows it.
    pub bitmap: Option<&'a mut DirtyBitmap>,
}

/// The argument of VFIO_IOMMU_DIRTY_PAGES: the structure and, in its flexible `data`, the
/// `vfio_iommu_type1_dirty_bitmap_get` of GET_BITMAP if any.
#[derive(Debug)]
pub(crate) struct DirtyPages<'a> {
    /// The structure, `argsz` as the caller claims it.
    pub dirty: vfio_iommu_type1_dirty_bitmap,
    /// The range and bitmap that follow it.
    pub get: Option<DirtyBitmapGet<'a>>,
}

/// A dirty bitmap the kernel fills: `pgsize` per bit, `size` bytes declared, and words that hold
/// at least those bytes (the invariant that makes passing its pointer sound).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DirtyBitmap {
    pgsize: u64,
    size: u64,
    words: Vec<u64>,
}

impl DirtyBitmap {
    /// A zeroed bitmap of `size` bytes (rounded up to whole u64 words) at `pgsize` per bit.
    pub(crate) fn new(pgsize: u64, size: u64) -> Self {
        DirtyBitmap {
            pgsize,
            size,
            words: vec![0u64; (size as usize).div_ceil(8)],
        }
    }
    /// Bytes of memory each bit stands for.
    #[cfg(test)]
    pub(crate) fn pgsize(&self) -> u64 {
        self.pgsize
    }
    /// The bytes declared to the kernel.
    #[cfg(test)]
    pub(crate) fn size(&self) -> u64 {
        self.size
    }
    /// The words (what the kernel wrote).
    #[cfg(test)]
    pub(crate) fn words(&self) -> &[u64] {
        &self.words
    }
    /// The words, for a fake kernel to write into.
    #[cfg(test)]
    pub(crate) fn words_mut(&mut self) -> &mut [u64] {
        &mut self.words
    }
    /// The words, taken.
    pub(crate) fn into_words(self) -> Vec<u64> {
        self.words
    }
    /// The `vfio_bitmap` (pgsize, size, data) written at `off` of `buf`.
    fn put(&mut self, buf: &mut ArgBuf, off: usize) {
        buf.put_u64(off, self.pgsize);
        buf.put_u64(off + 8, self.size);
        buf.put_u64(off + 16, self.words.as_mut_ptr() as u64);
    }
}

/// `struct vfio_iommu_type1_dirty_bitmap_get`: the IOVA range to report and its bitmap.
#[derive(Debug)]
pub(crate) struct DirtyBitmapGet<'a> {
    /// First IOVA of the range.
    pub iova: u64,
    /// Bytes of the range.
    pub size: u64,
    /// Receives one bit per `bitmap.pgsize()` bytes.
    pub bitmap: &'a mut DirtyBitmap,
}

/// The buffer of a VFIO_IOMMU_GET_INFO: `struct vfio_iommu_type1_info` followed by room for the
/// capability chain, `max(INFO_SZ, argsz)` bytes in all, with `argsz` written in it.
#[derive(Debug)]
pub(crate) struct InfoBuf(ArgBuf);

impl InfoBuf {
    /// A zeroed buffer claiming `argsz` (it is at least the structure, whatever `argsz` says).
    pub(crate) fn new(argsz: u32) -> Self {
        let mut b = ArgBuf::new(INFO_SZ.max(argsz as usize));
        b.put_u32(0, argsz);
        InfoBuf(b)
    }
    /// The structure as the kernel left it.
    pub(crate) fn header(&self) -> vfio_iommu_type1_info {
        vfio_iommu_type1_info {
            argsz: self.0.u32_at(0),
            flags: self.0.u32_at(4),
            iova_pgsizes: self.0.u64_at(8),
            cap_offset: self.0.u32_at(16),
            pad: self.0.u32_at(20),
        }
    }
    /// The whole buffer (structure and capability chain).
    pub(crate) fn bytes(&self) -> Vec<u8> {
        self.0.bytes()
    }
    /// Writes `reply` at the start of the buffer, cut to its length, as a kernel would.
    #[cfg(test)]
    pub(crate) fn fill(&mut self, reply: &[u8]) {
        for (i, &byte) in reply.iter().take(self.0.len()).enumerate() {
            let w = &mut self.0.words[i / 8];
            let shift = (i % 8) * 8;
            *w = (*w & !(0xffu64 << shift)) | ((byte as u64) << shift);
        }
    }
}

/// An 8-byte aligned, zeroed byte buffer for ioctl arguments.
#[derive(Debug)]
struct ArgBuf {
    words: Vec<u64>,
    len: usize,
}

impl ArgBuf {
    /// At least `len` bytes (rounded up to whole u64 words, at least one).
    fn new(len: usize) -> Self {
        ArgBuf {
            words: vec![0; len.div_ceil(8).max(1)],
            len,
        }
    }
    /// The length asked for (the allocation may be up to 7 bytes longer).
    fn len(&self) -> usize {
        self.len
    }
    /// The first `len` bytes.
    fn bytes(&self) -> Vec<u8> {
        let mut v: Vec<u8> = self.words.iter().flat_map(|w| w.to_le_bytes()).collect();
        v.truncate(self.len);
        v
    }
    fn put_u32(&mut self, off: usize, v: u32) {
        let w = &mut self.words[off / 8];
        let shift = (off % 8) * 8;
        *w = (*w & !(0xffff_ffffu64 << shift)) | ((v as u64) << shift);
    }
    fn put_u64(&mut self, off: usize, v: u64) {
        assert!(off.is_multiple_of(8), "unaligned u64 at {off}");
        self.words[off / 8] = v;
    }
    fn u32_at(&self, off: usize) -> u32 {
        (self.words[off / 8] >> ((off % 8) * 8)) as u32
    }
    fn u64_at(&self, off: usize) -> u64 {
        assert!(off.is_multiple_of(8), "unaligned u64 at {off}");
        self.words[off / 8]
    }
    /// The bytes the kernel may access through the pointer: the whole allocation.
    fn capacity(&self) -> usize {
        self.words.len() * 8
    }
    fn ptr(&mut self) -> *mut libc::c_void {
        self.words.as_mut_ptr().cast()
    }
}

/// The argument of VFIO_IOMMU_MAP_DMA: the structure, padded to `argsz`.
fn map_dma_arg(map: &vfio_iommu_type1_dma_map) -> ArgBuf {
    let mut buf = ArgBuf::new(MAP_SZ.max(map.argsz as usize));
    buf.put_u32(0, map.argsz);
    buf.put_u32(4, map.flags);
    buf.put_u64(8, map.vaddr);
    buf.put_u64(16, map.iova);
    buf.put_u64(24, map.size);
    buf
}

/// The argument of VFIO_IOMMU_UNMAP_DMA: the structure, then the `vfio_bitmap` if any, padded
/// to `argsz`.
fn unmap_dma_arg(arg: &mut DmaUnmap) -> ArgBuf {
    let unmap = &arg.unmap;
    let need = UNMAP_SZ + if arg.bitmap.is_some() { BITMAP_SZ } else { 0 };
    let mut buf = ArgBuf::new(need.max(unmap.argsz as usize));
    buf.put_u32(0, unmap.argsz);
    buf.put_u32(4, unmap.flags);
    buf.put_u64(8, unmap.iova);
    buf.put_u64(16, unmap.size);
    if let Some(bm) = arg.bitmap.as_deref_mut() {
        bm.put(&mut buf, UNMAP_SZ);
    }
    buf
}

/// The argument of VFIO_IOMMU_DIRTY_PAGES: the structure, then the
/// `vfio_iommu_type1_dirty_bitmap_get` if any, padded to `argsz`.
fn dirty_pages_arg(arg: DirtyPages) -> ArgBuf {
    let DirtyPages { dirty, get } = arg;
    let need = DIRTY_SZ + if get.is_some() { DIRTY_GET_SZ } else { 0 };
    let mut buf = ArgBuf::new(need.max(dirty.argsz as usize));
    buf.put_u32(0, dirty.argsz);
    buf.put_u32(4, dirty.flags);
    if let Some(g) = get {
        buf.put_u64(DIRTY_SZ, g.iova);
        buf.put_u64(DIRTY_SZ + 8, g.size);
        g.bitmap.put(&mut buf, DIRTY_SZ + 16);
    }
    buf
}

fn last_errno() -> Errno {
    Errno::from_raw(
        io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO),
    )
}

/// `ioctl(fd, req, arg)` with an integer argument: the return value or the errno.
///
/// # Safety
/// `req` must take its argument by value and access no memory of this process (VFIO's
/// GET_API_VERSION, CHECK_EXTENSION and SET_IOMMU do).
unsafe fn ioctl_val(fd: &File, req: libc::c_ulong, arg: libc::c_ulong) -> Result<i32, Errno> {
    // SAFETY: the fd is open (borrowed from a live File); the caller guarantees `req` treats
    // `arg` as a plain value.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req, arg) };
    if r < 0 {
        Err(last_errno())
    } else {
        Ok(r)
    }
}

/// `ioctl(fd, req, arg)` with a pointer argument: the return value or the errno.
///
/// # Safety
/// `arg` must be valid for reads and writes of every byte `req` may access through it, and every
/// pointer embedded in that memory must be valid for what `req` accesses through it, for the
/// duration of the call. For VFIO requests: at least the larger of the structure's size and the
/// `argsz` written in it.
unsafe fn ioctl_ptr(fd: &File, req: libc::c_ulong, arg: *mut libc::c_void) -> Result<i32, Errno> {
    // SAFETY: the fd is open (borrowed from a live File); the caller guarantees `arg`.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req, arg) };
    if r < 0 {
        Err(last_errno())
    } else {
        Ok(r)
    }
}

/// The real OS.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Kernel;

/// A VFIO request whose argument is `buf`.
///
/// # Safety
/// `buf` must be what `req` expects: built by this module's `*_arg` function for `req` (or an
/// `InfoBuf` for GET_INFO), so that it is at least the structure and the `argsz` written in it,
/// and every bitmap pointer in it points at a `DirtyBitmap` that stays borrowed, unused, until the
/// call returns.
unsafe fn ioctl_buf(fd: &File, req: libc::c_ulong, buf: &mut ArgBuf) -> Result<(), Errno> {
    let argsz = buf.u32_at(0) as usize;
    let need = buf.len().max(argsz);
    assert!(buf.capacity() >= need, "argsz {argsz} beyond the buffer");
    // SAFETY: `buf` is a live, exclusively borrowed allocation of at least the structure's size
    // and of the argsz written in it (checked above, and the caller's contract); VFIO requests
    // read and write only within that, and through the bitmap pointers the caller vouches for.
    unsafe { ioctl_ptr(fd, req, buf.ptr()) }.map(|_| ())
}

impl VfioSys for Kernel {
    fn open_rw(&self, path: &str) -> io::Result<File> {
        OpenOptions::new().read(true).write(true).open(path)
    }

    fn set_dma_entry_limit(&self, limit: u32) -> io::Result<()> {
        std::fs::write(
            "/sys/module/vfio_iommu_type1/parameters/dma_entry_limit",
            format!("{limit}\n"),
        )
    }

    fn set_memlock(&self, bytes: Option<u64>) -> io::Result<()> {
        let v = bytes.unwrap_or(libc::RLIM_INFINITY);
        let lim = libc::rlimit {
            rlim_cur: v,
            rlim_max: v,
        };
        // SAFETY: setrlimit reads the structure, a live local.
        let r = unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) };
        if r != 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    fn drop_cap_ipc_lock(&self) -> io::Result<()> {
        // Through the engine's one capability wrapper.
        type1::sys::drop_effective_cap(CAP_IPC_LOCK)
    }

    fn vmlck_kb(&self) -> io::Result<u64> {
        type1::procfs::vm_locked_kib()
    }

    fn get_api_version(&self, container: &File) -> Result<i32, Errno> {
        // SAFETY: GET_API_VERSION takes no argument.
        unsafe { ioctl_val(container, VFIO_GET_API_VERSION, 0) }
    }

    fn check_extension(&self, container: &File, ext: u32) -> Result<i32, Errno> {
        // SAFETY: CHECK_EXTENSION takes the extension number by value.
        unsafe { ioctl_val(container, VFIO_CHECK_EXTENSION, ext as libc::c_ulong) }
    }

    fn set_iommu(&self, container: &File, iommu_type: u32) -> Result<(), Errno> {
        // SAFETY: SET_IOMMU takes the IOMMU type by value.
        unsafe { ioctl_val(container, VFIO_SET_IOMMU, iommu_type as libc::c_ulong) }.map(|_| ())
    }

    fn group_get_status(&self, group: &File, status: &mut vfio_group_status) -> Result<(), Errno> {
        let ptr: *mut vfio_group_status = status;
        // SAFETY: the kernel reads and writes the 8-byte structure, exclusively borrowed; it
        // reads argsz and writes at most the structure it knows.
        unsafe { ioctl_ptr(group, VFIO_GROUP_GET_STATUS, ptr.cast()) }.map(|_| ())
    }

    fn group_set_container(&self, group: &File, container: &File) -> Result<(), Errno> {
        let mut fd: libc::c_int = container.as_raw_fd();
        let ptr: *mut libc::c_int = &mut fd;
        // SAFETY: the kernel reads one int through the pointer, which points at a live local.
        unsafe { ioctl_ptr(group, VFIO_GROUP_SET_CONTAINER, ptr.cast()) }.map(|_| ())
    }

    fn iommu_get_info(&self, container: &File, info: &mut InfoBuf) -> Result<(), Errno> {
        // SAFETY: an InfoBuf holds the structure and the argsz it claims, and no pointer;
        // GET_INFO writes at most argsz bytes.
        unsafe { ioctl_buf(container, VFIO_IOMMU_GET_INFO, &mut info.0) }
    }

    fn iommu_map_dma(&self, container: &File, map: &vfio_iommu_type1_dma_map) -> Result<(), Errno> {
        // SAFETY: map_dma_arg's buffer holds the structure and argsz, and no pointer into this
        // process's Rust values (`vaddr` is pinned by the kernel, not written during the call).
        unsafe { ioctl_buf(container, VFIO_IOMMU_MAP_DMA, &mut map_dma_arg(map)) }
    }

    fn iommu_unmap_dma(&self, container: &File, arg: &mut DmaUnmap<'_>) -> Result<(), Errno> {
        let mut buf = unmap_dma_arg(arg);
        // SAFETY: unmap_dma_arg built `buf` for UNMAP_DMA; its bitmap pointer is `arg`'s
        // DirtyBitmap, borrowed through `arg` and not touched until the call returns.
        let r = unsafe { ioctl_buf(container, VFIO_IOMMU_UNMAP_DMA, &mut buf) };
        arg.unmap.size = buf.u64_at(16);
        r
    }

    fn iommu_dirty_pages(&self, container: &File, arg: DirtyPages<'_>) -> Result<(), Errno> {
        let mut buf = dirty_pages_arg(arg);
        // SAFETY: dirty_pages_arg built `buf` for DIRTY_PAGES; its bitmap pointer is the
        // DirtyBitmap that `arg` borrowed for `'_`, which outlives this call.
        unsafe { ioctl_buf(container, VFIO_IOMMU_DIRTY_PAGES, &mut buf) }
    }
}

/// Process memory backings the guest program can create.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MmapKind {
    /// 4K pages, `MADV_NOHUGEPAGE`.
    Page4k,
    /// Anonymous memory with `MADV_HUGEPAGE`, 2 MiB-aligned.
    Thp,
    /// `MAP_HUGETLB | MAP_HUGE_2MB`.
    Hugetlb2m,
    /// `MAP_HUGETLB | MAP_HUGE_1GB`.
    Hugetlb1g,
}

const MAP_HUGE_SHIFT: i32 = 26;

/// Maps `len` bytes of anonymous private memory of `kind`, at `at` (which must be free) or at
/// an address aligned to the backing's page size; writable memory is touched (one write per
/// 4 KiB page) so that every page exists, as the oracle's buffers did. Returns the address.
pub(crate) fn mmap_anon(
    len: u64,
    writable: bool,
    kind: MmapKind,
    at: Option<u64>,
) -> io::Result<u64> {
    let prot = libc::PROT_READ | if writable { libc::PROT_WRITE } else { 0 };
    let mut flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
    let align: u64 = match kind {
        MmapKind::Page4k => 4096,
        MmapKind::Thp => 2 << 20,
        MmapKind::Hugetlb2m => {
            flags |= libc::MAP_HUGETLB | (21 << MAP_HUGE_SHIFT);
            2 << 20
        }
        MmapKind::Hugetlb1g => {
            flags |= libc::MAP_HUGETLB | (30 << MAP_HUGE_SHIFT);
            1 << 30
        }
    };
    let len_us = usize::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::ENOMEM))?;
    let addr = if let Some(at) = at {
        // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping: it fails instead, so
        // no memory of this process changes under anyone's feet.
        let p = unsafe {
            libc::mmap(
                at as *mut libc::c_void,
                len_us,
                prot,
                flags | libc::MAP_FIXED_NOREPLACE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        p as u64
    } else if matches!(kind, MmapKind::Hugetlb2m | MmapKind::Hugetlb1g) {
        // SAFETY: a fresh mapping at an address the kernel chooses (hugetlb mappings are aligned
        // to their page size by the kernel); nothing existing is touched.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), len_us, prot, flags, -1, 0) };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        p as u64
    } else {
        // Over-allocate, then trim to an aligned window.
        let total = len_us + align as usize;
        // SAFETY: a fresh mapping at an address the kernel chooses.
        let p = unsafe { libc::mmap(std::ptr::null_mut(), total, prot, flags, -1, 0) };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let start = p as u64;
        let aligned = start.next_multiple_of(align);
        let head = (aligned - start) as usize;
        let tail = total - head - len_us;
        if head > 0 {
            // SAFETY: [start, aligned) is part of the mapping just created and not yet used.
            unsafe { libc::munmap(p, head) };
        }
        if tail > 0 {
            // SAFETY: the tail past the aligned window is part of the same fresh mapping.
            unsafe { libc::munmap((aligned + len) as *mut libc::c_void, tail) };
        }
        aligned
    };
    let advice = match kind {
        MmapKind::Page4k => Some(libc::MADV_NOHUGEPAGE),
        MmapKind::Thp => Some(libc::MADV_HUGEPAGE),
        _ => None,
    };
    if let Some(advice) = advice {
        // SAFETY: advice on a range this function just mapped; it changes no contents.
        let r = unsafe { libc::madvise(addr as *mut libc::c_void, len_us, advice) };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    if writable {
        let mut off = 0u64;
        while off < len {
            // SAFETY: [addr, addr+len) is a private writable mapping created above and owned by
            // this function's caller only through the returned address; writing one byte per
            // page makes the page present (nothing else reads these bytes).
            unsafe { std::ptr::write_volatile((addr + off) as *mut u8, (off >> 12) as u8 | 1) };
            off += 4096;
        }
    }
    Ok(addr)
}

/// Removes `[addr, addr+len)` from the address space. The caller guarantees no Rust reference
/// points into the range (the replay only hands these addresses to the kernel).
pub(crate) fn munmap(addr: u64, len: u64) -> io::Result<()> {
    // SAFETY: the range belongs to a mapping made by `mmap_anon`, never referenced by Rust
    // values; removing it only makes later kernel accesses fault, which is what is tested.
    let r = unsafe { libc::munmap(addr as *mut libc::c_void, len as usize) };
    if r != 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// VFIO_GROUP_GET_DEVICE_FD: the device `name` (`DDDD:BB:DD.F`) of `group`, opened.
pub(crate) fn group_get_device_fd(group: &File, name: &str) -> Result<File, Errno> {
    use std::os::fd::FromRawFd;
    let c = std::ffi::CString::new(name).map_err(|_| Errno::EINVAL)?;
    // SAFETY: the kernel reads a NUL-terminated string at the pointer, which `c` owns and
    // keeps alive until the call returns.
    let fd = unsafe { ioctl_ptr(group, VFIO_GROUP_GET_DEVICE_FD, c.as_ptr() as *mut _) }?;
    // SAFETY: a new fd the kernel just returned to us; nothing else owns it.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// A device region (`struct vfio_region_info`): size, offset in the device fd, flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct RegionInfo {
    /// Bytes.
    pub size: u64,
    /// Where it starts in the device fd (for mmap).
    pub offset: u64,
    /// `VFIO_REGION_INFO_FLAG_*`.
    pub flags: u32,
}

/// VFIO_DEVICE_GET_REGION_INFO of region `index` (0 = BAR0).
pub(crate) fn device_region_info(device: &File, index: u32) -> Result<RegionInfo, Errno> {
    let mut buf = [0u8; REGION_INFO_SZ];
    buf[0..4].copy_from_slice(&(REGION_INFO_SZ as u32).to_ne_bytes());
    buf[8..12].copy_from_slice(&index.to_ne_bytes());
    // SAFETY: the kernel writes at most argsz (REGION_INFO_SZ) bytes into `buf`, which is that
    // long and lives until the call returns.
    unsafe { ioctl_ptr(device, VFIO_DEVICE_GET_REGION_INFO, buf.as_mut_ptr().cast()) }?;
    let u64_at = |o: usize| u64::from_ne_bytes(buf[o..o + 8].try_into().expect("8 bytes"));
    Ok(RegionInfo {
        flags: u32::from_ne_bytes(buf[4..8].try_into().expect("4 bytes")),
        size: u64_at(16),
        offset: u64_at(24),
    })
}

/// Maps `len` bytes of a device region shared, from `offset` of the device fd (a `VM_PFNMAP`
/// vma, as VMMs map BARs). Returns the address.
pub(crate) fn mmap_device(device: &File, offset: u64, len: u64, writable: bool) -> io::Result<u64> {
    let prot = libc::PROT_READ | if writable { libc::PROT_WRITE } else { 0 };
    let len = usize::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::ENOMEM))?;
    let off =
        libc::off_t::try_from(offset).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: a fresh shared mapping at an address the kernel chooses; nothing existing is
    // touched and no Rust value refers to it.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            prot,
            libc::MAP_SHARED,
            device.as_raw_fd(),
            off,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(p as u64)
}

/// CAP_IPC_LOCK's number.
const CAP_IPC_LOCK: u32 = 14;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_are_the_kernels() {
        assert_eq!(VFIO_GET_API_VERSION, 0x3b64);
        assert_eq!(VFIO_GROUP_GET_DEVICE_FD, 0x3b6a);
        assert_eq!(VFIO_DEVICE_GET_REGION_INFO, 0x3b6c);
        assert_eq!(REGION_INFO_SZ, std::mem::size_of::<b::vfio_region_info>());
        assert_eq!(VFIO_CHECK_EXTENSION, 0x3b65);
        assert_eq!(VFIO_SET_IOMMU, 0x3b66);
        assert_eq!(VFIO_GROUP_GET_STATUS, 0x3b67);
        assert_eq!(VFIO_GROUP_SET_CONTAINER, 0x3b68);
        assert_eq!(VFIO_IOMMU_GET_INFO, 0x3b70);
        assert_eq!(VFIO_IOMMU_MAP_DMA, 0x3b71);
        assert_eq!(VFIO_IOMMU_UNMAP_DMA, 0x3b72);
        assert_eq!(VFIO_IOMMU_DIRTY_PAGES, 0x3b75);
    }

    #[test]
    fn structure_sizes_are_the_kernels() {
        use std::mem::size_of;
        assert_eq!(MAP_SZ, size_of::<vfio_iommu_type1_dma_map>());
        assert_eq!(UNMAP_SZ, size_of::<vfio_iommu_type1_dma_unmap>());
        assert_eq!(INFO_SZ, size_of::<vfio_iommu_type1_info>());
        assert_eq!(BITMAP_SZ, size_of::<b::vfio_bitmap>());
        assert_eq!(DIRTY_SZ, size_of::<vfio_iommu_type1_dirty_bitmap>());
        assert_eq!(
            DIRTY_GET_SZ,
            size_of::<b::vfio_iommu_type1_dirty_bitmap_get>()
        );
    }

    #[test]
    fn argbuf_fields() {
        let mut b = ArgBuf::new(20);
        b.put_u32(0, 0x18);
        b.put_u32(4, 3);
        b.put_u64(8, 0xdead_beef_0000);
        b.put_u32(16, 7);
        assert_eq!(b.u32_at(0), 0x18);
        assert_eq!(b.u32_at(4), 3);
        assert_eq!(b.u64_at(8), 0xdead_beef_0000);
        assert_eq!(b.u32_at(16), 7);
        assert_eq!((b.len(), b.capacity(), b.bytes().len()), (20, 24, 20));
    }

    /// The words of an argument buffer, for comparing whole requests.
    fn words(b: &ArgBuf) -> &[u64] {
        &b.words
    }

    #[test]
    fn map_dma_arg_is_the_structure_padded_to_argsz() {
        let mut map = vfio_iommu_type1_dma_map {
            argsz: 32,
            flags: 3,
            vaddr: 0x7f00_0000_0000,
            iova: 0x10_0000,
            size: 0x20_0000,
        };
        let want = [3 << 32 | 32, 0x7f00_0000_0000, 0x10_0000, 0x20_0000];
        assert_eq!(words(&map_dma_arg(&map)), want);
        // A larger argsz pads with zeros; a smaller one still gets the whole structure.
        map.argsz = 48;
        let b = map_dma_arg(&map);
        assert_eq!((b.len(), words(&b)[4..].to_vec()), (48, vec![0, 0]));
        map.argsz = 16;
        assert_eq!(map_dma_arg(&map).len(), 32);
    }

    /// An UNMAP_DMA argument of (argsz, flags, iova, size) and `bitmap`.
    fn unmap(fields: (u32, u32, u64, u64), bitmap: Option<&mut DirtyBitmap>) -> DmaUnmap<'_> {
        let (argsz, flags, iova, size) = fields;
        let unmap = vfio_iommu_type1_dma_unmap {
            argsz,
            flags,
            iova,
            size,
            ..Default::default()
        };
        DmaUnmap { unmap, bitmap }
    }

    #[test]
    fn unmap_dma_arg_carries_the_bitmap_after_the_structure() {
        let fields = (48, 1, 0x1000, 0x4_0000);
        let plain = unmap_dma_arg(&mut unmap(fields, None));
        assert_eq!(words(&plain)[..3], [1 << 32 | 48, 0x1000, 0x4_0000]);
        let mut bm = DirtyBitmap::new(4096, 9);
        assert_eq!(bm.words().len(), 2, "9 bytes round up to 2 words");
        let data = bm.words().as_ptr() as u64;
        let b = unmap_dma_arg(&mut unmap(fields, Some(&mut bm)));
        assert_eq!(b.len(), UNMAP_SZ + BITMAP_SZ);
        assert_eq!(words(&b)[3..], [4096, 9, data]);
        // The bitmap's room is there even where argsz does not claim it.
        let small = (24, 1, 0x1000, 0x4_0000);
        let b = unmap_dma_arg(&mut unmap(small, Some(&mut bm)));
        assert_eq!(b.len(), 48);
        assert_eq!(unmap_dma_arg(&mut unmap(small, None)).len(), 24);
    }

    #[test]
    fn dirty_pages_arg_start_stop_and_get_bitmap() {
        let start = DirtyPages {
            dirty: vfio_iommu_type1_dirty_bitmap {
                argsz: 8,
                flags: 1,
                ..Default::default()
            },
            get: None,
        };
        let b = dirty_pages_arg(start);
        assert_eq!((b.len(), words(&b)), (8, &[1 << 32 | 8][..]));
        let mut bm = DirtyBitmap::new(4096, 8);
        let data = bm.words().as_ptr() as u64;
        let get = DirtyPages {
            dirty: vfio_iommu_type1_dirty_bitmap {
                argsz: 48,
                flags: VFIO_IOMMU_DIRTY_PAGES_FLAG_GET_BITMAP,
                ..Default::default()
            },
            get: Some(DirtyBitmapGet {
                iova: 0x20_0000,
                size: 0x4_0000,
                bitmap: &mut bm,
            }),
        };
        let b = dirty_pages_arg(get);
        assert_eq!(b.len(), 48);
        assert_eq!(
            words(&b),
            [4 << 32 | 48, 0x20_0000, 0x4_0000, 4096, 8, data]
        );
    }

    #[test]
    fn info_buf_is_at_least_the_structure_and_claims_argsz() {
        let b = InfoBuf::new(16);
        assert_eq!((b.header().argsz, b.bytes().len()), (16, INFO_SZ));
        let mut b = InfoBuf::new(40);
        b.fill(&[0xff; 64]);
        assert_eq!(b.bytes(), vec![0xff; 40], "a reply is cut to the buffer");
        assert_eq!(b.header().iova_pgsizes, u64::MAX);
    }

    #[test]
    fn mmap_thp_is_aligned_and_munmap_works() {
        let a = mmap_anon(4 << 20, true, MmapKind::Thp, None).unwrap();
        assert_eq!(a % (2 << 20), 0);
        munmap(a, 4 << 20).unwrap();
        let r = mmap_anon(64 << 10, false, MmapKind::Page4k, None).unwrap();
        assert_eq!(r % 4096, 0);
        munmap(r, 64 << 10).unwrap();
    }
}
