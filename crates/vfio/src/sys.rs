//! The only module with `unsafe`: VFIO ioctls on the container and group fds, anonymous and
//! hugetlb mmaps, RLIMIT_MEMLOCK and CAP_IPC_LOCK, reading `VmLck`.
//!
//! Every ioctl argument lives in a buffer this module owns, sized to at least the larger of the
//! structure and the `argsz` the caller asks for, so whatever the kernel reads or writes (it
//! trusts `argsz` only up to the structure it knows) stays inside our memory.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use vfio_bindings::bindings::vfio as b;

/// `_IO(VFIO_TYPE, VFIO_BASE + nr)`: VFIO ioctls carry no size or direction bits.
const fn vfio_io(nr: u32) -> libc::c_ulong {
    (((b::VFIO_TYPE as u32) << 8) | (b::VFIO_BASE + nr)) as libc::c_ulong
}

pub const VFIO_GET_API_VERSION: libc::c_ulong = vfio_io(0);
pub const VFIO_CHECK_EXTENSION: libc::c_ulong = vfio_io(1);
pub const VFIO_SET_IOMMU: libc::c_ulong = vfio_io(2);
pub const VFIO_GROUP_GET_STATUS: libc::c_ulong = vfio_io(3);
pub const VFIO_GROUP_SET_CONTAINER: libc::c_ulong = vfio_io(4);
pub const VFIO_IOMMU_GET_INFO: libc::c_ulong = vfio_io(12);
pub const VFIO_IOMMU_MAP_DMA: libc::c_ulong = vfio_io(13);
pub const VFIO_IOMMU_UNMAP_DMA: libc::c_ulong = vfio_io(14);
pub const VFIO_IOMMU_DIRTY_PAGES: libc::c_ulong = vfio_io(17);

pub use b::{
    VFIO_TYPE1v2_IOMMU, VFIO_GROUP_FLAGS_VIABLE, VFIO_IOMMU_INFO_CAPS,
    VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE, VFIO_IOMMU_TYPE1_INFO_CAP_MIGRATION,
    VFIO_IOMMU_TYPE1_INFO_DMA_AVAIL, VFIO_TYPE1_IOMMU,
};

fn errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// An ioctl whose argument is an integer (or nothing): the return value or the errno.
pub fn ioctl_val(fd: &File, req: libc::c_ulong, arg: libc::c_ulong) -> Result<i32, i32> {
    // SAFETY: the requests used with this function (GET_API_VERSION, CHECK_EXTENSION,
    // SET_IOMMU) take their argument by value and touch no user memory.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req, arg) };
    if r < 0 {
        Err(errno())
    } else {
        Ok(r)
    }
}

/// An 8-byte aligned, zeroed byte buffer for ioctl arguments.
pub struct ArgBuf {
    words: Vec<u64>,
    len: usize,
}

impl ArgBuf {
    /// At least `len` bytes (rounded up to whole u64 words, at least one).
    pub fn new(len: usize) -> Self {
        ArgBuf {
            words: vec![0; len.div_ceil(8).max(1)],
            len,
        }
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// The bytes (all of the allocation, which is at least `len`).
    pub fn bytes(&self) -> Vec<u8> {
        self.words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }
    pub fn put_u32(&mut self, off: usize, v: u32) {
        let w = &mut self.words[off / 8];
        let shift = (off % 8) * 8;
        *w = (*w & !(0xffff_ffffu64 << shift)) | ((v as u64) << shift);
    }
    pub fn put_u64(&mut self, off: usize, v: u64) {
        assert!(off.is_multiple_of(8), "unaligned u64 at {off}");
        self.words[off / 8] = v;
    }
    pub fn u32_at(&self, off: usize) -> u32 {
        (self.words[off / 8] >> ((off % 8) * 8)) as u32
    }
    pub fn u16_at(&self, off: usize) -> u16 {
        (self.words[off / 8] >> ((off % 8) * 8)) as u16
    }
    pub fn u64_at(&self, off: usize) -> u64 {
        assert!(off.is_multiple_of(8), "unaligned u64 at {off}");
        self.words[off / 8]
    }
    fn ptr(&mut self) -> *mut libc::c_void {
        self.words.as_mut_ptr().cast()
    }
}

/// An ioctl whose argument points at `buf`. The caller sizes `buf` to cover everything the
/// request may read or write (at least the structure, and at least the `argsz` written in it).
pub fn ioctl_buf(fd: &File, req: libc::c_ulong, buf: &mut ArgBuf) -> Result<i32, i32> {
    // SAFETY: `buf` is a live, exclusively borrowed allocation of at least the structure's size
    // and of the argsz it carries; the VFIO requests read and write only within that (GET_INFO
    // writes at most argsz bytes). Pointers embedded in the buffer (bitmaps) are set by
    // `unmap_dirty`/`dirty_get` below to live buffers of the size they declare.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req, buf.ptr()) };
    if r < 0 {
        Err(errno())
    } else {
        Ok(r)
    }
}

/// VFIO_GROUP_SET_CONTAINER: the argument points at the container's fd.
pub fn group_set_container(group: &File, container: &File) -> Result<(), i32> {
    let fd: libc::c_int = container.as_raw_fd();
    // SAFETY: the kernel reads one int through the pointer, which points at a live local.
    let r = unsafe {
        libc::ioctl(
            group.as_raw_fd(),
            VFIO_GROUP_SET_CONTAINER,
            &fd as *const libc::c_int,
        )
    };
    if r < 0 {
        Err(errno())
    } else {
        Ok(())
    }
}

/// VFIO_GROUP_GET_STATUS: the group's flags.
pub fn group_status(group: &File) -> Result<u32, i32> {
    let mut st = b::vfio_group_status {
        argsz: std::mem::size_of::<b::vfio_group_status>() as u32,
        flags: 0,
    };
    // SAFETY: the kernel reads and writes the 8-byte structure, which is a live local.
    let r = unsafe {
        libc::ioctl(
            group.as_raw_fd(),
            VFIO_GROUP_GET_STATUS,
            &mut st as *mut b::vfio_group_status,
        )
    };
    if r < 0 {
        Err(errno())
    } else {
        Ok(st.flags)
    }
}

/// UNMAP_DMA or DIRTY_PAGES(GET_BITMAP) with a bitmap: `buf` holds the request with the
/// `vfio_bitmap` at `bitmap_off` (pgsize, size, data); `data` is filled in here to point at
/// `out`, whose length in bytes must be the size written at `bitmap_off + 8`.
pub fn ioctl_with_bitmap(
    fd: &File,
    req: libc::c_ulong,
    buf: &mut ArgBuf,
    bitmap_off: usize,
    out: &mut [u64],
) -> Result<i32, i32> {
    let declared = buf.u64_at(bitmap_off + 8);
    assert!(
        declared <= (out.len() * 8) as u64,
        "bitmap buffer smaller than declared"
    );
    buf.put_u64(bitmap_off + 16, out.as_mut_ptr() as u64);
    // SAFETY: as `ioctl_buf`; in addition the kernel writes at most `declared` bytes through
    // the embedded pointer, which points at `out`, live and at least that long.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req, buf.ptr()) };
    buf.put_u64(bitmap_off + 16, 0);
    if r < 0 {
        Err(errno())
    } else {
        Ok(r)
    }
}

/// Process memory backings the guest program can create.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmapKind {
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
pub fn mmap_anon(len: u64, writable: bool, kind: MmapKind, at: Option<u64>) -> io::Result<u64> {
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
pub fn munmap(addr: u64, len: u64) -> io::Result<()> {
    // SAFETY: the range belongs to a mapping made by `mmap_anon`, never referenced by Rust
    // values; removing it only makes later kernel accesses fault, which is what is tested.
    let r = unsafe { libc::munmap(addr as *mut libc::c_void, len as usize) };
    if r != 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// setrlimit(RLIMIT_MEMLOCK): `None` is unlimited.
pub fn set_memlock(bytes: Option<u64>) -> io::Result<()> {
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

pub const CAP_IPC_LOCK: u32 = 14;

/// Removes CAP_IPC_LOCK from the effective set (as the oracle did), through the engine's one
/// capability wrapper (`type1::sys`).
pub fn drop_cap_ipc_lock() -> io::Result<()> {
    type1::sys::drop_effective_cap(CAP_IPC_LOCK)
}

/// `VmLck` of /proc/self/status in kB.
pub fn vmlck_kb() -> io::Result<u64> {
    let s = std::fs::read_to_string("/proc/self/status")?;
    parse_vmlck_kb(&s).ok_or_else(|| io::Error::other("no VmLck line in /proc/self/status"))
}

/// The `VmLck:  N kB` value of a /proc/PID/status text.
pub fn parse_vmlck_kb(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmLck:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// Writes vfio_iommu_type1's `dma_entry_limit` module parameter (read when a container's
/// backend is set, so before SET_IOMMU).
pub fn set_dma_entry_limit(limit: u32) -> io::Result<()> {
    std::fs::write(
        "/sys/module/vfio_iommu_type1/parameters/dma_entry_limit",
        format!("{limit}\n"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_are_the_kernels() {
        assert_eq!(VFIO_GET_API_VERSION, 0x3b64);
        assert_eq!(VFIO_SET_IOMMU, 0x3b66);
        assert_eq!(VFIO_GROUP_SET_CONTAINER, 0x3b68);
        assert_eq!(VFIO_IOMMU_GET_INFO, 0x3b70);
        assert_eq!(VFIO_IOMMU_MAP_DMA, 0x3b71);
        assert_eq!(VFIO_IOMMU_UNMAP_DMA, 0x3b72);
        assert_eq!(VFIO_IOMMU_DIRTY_PAGES, 0x3b75);
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
        assert_eq!(b.u16_at(16), 7);
        assert_eq!(b.bytes().len(), 24);
    }

    #[test]
    fn vmlck_parse() {
        let s = "Name:\tx\nVmPeak:\t  100 kB\nVmLck:\t    2052 kB\nVmPin:\t 0 kB\n";
        assert_eq!(parse_vmlck_kb(s), Some(2052));
        assert_eq!(parse_vmlck_kb("Name: x\n"), None);
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
