//! `uapi::dispatch`: the container ioctls on bytes. Given a request number and the address of
//! its argument in user memory, answer as the kernel's `vfio_fops_unl_ioctl` (vfio core:
//! GET_API_VERSION, CHECK_EXTENSION, SET_IOMMU) and `vfio_iommu_type1_ioctl` (GET_INFO,
//! MAP_DMA, UNMAP_DMA, DIRTY_PAGES) do.
//!
//! Invariants owned here:
//! - User memory is reached only through `UserMem`: a structure is read with the kernel's
//!   minimum size (never more), and a pointer inside one (the dirty bitmap's `data`) is checked
//!   with `access_ok` (EINVAL) and read or written through `UserMem` (EFAULT), never dereferenced.
//! - Only what the kernel writes back is written: GET_INFO's `min(argsz, 24)` header bytes and,
//!   when they fit, the capability chain at offset 24 (never past argsz); UNMAP_DMA's 24 bytes
//!   only on success; a dirty bitmap only on success. MAP_DMA and DIRTY_PAGES START/STOP write
//!   nothing.
//! - The checks run in the kernel's order (spec §1.3–§1.6): the first failing check names the
//!   errno. The engine's decoders (`MapRequest::decode`, ...) make the checks that need no user
//!   memory; this module adds the copies and `access_ok` where the kernel makes them.

use iommu::Errno;

use super::{
    BitmapArg, MapDma, UnmapDma, DIRTY_BITMAP_GET_SIZE, DIRTY_BITMAP_MINSZ, DIRTY_FLAGS_MASK,
    DIRTY_FLAG_GET_BITMAP, DMA_MAP_MINSZ, DMA_UNMAP_MINSZ, INFO_MINSZ, INFO_SIZE, UNMAP_FLAGS_MASK,
    UNMAP_FLAG_ALL, UNMAP_FLAG_GET_DIRTY_BITMAP, UNMAP_FLAG_VADDR, VFIO_BITMAP_SIZE,
    VFIO_DMA_CC_IOMMU, VFIO_TYPE1V2_IOMMU, VFIO_TYPE1_IOMMU, VFIO_UNMAP_ALL, VFIO_UPDATE_VADDR,
};
use crate::container::Container;
use crate::mm::PageSource;

/// `_IO(VFIO_TYPE, VFIO_BASE + n)`: every VFIO ioctl number (no size or direction bits).
pub const fn vfio_io(n: u32) -> u32 {
    ((b';' as u32) << 8) | (100 + n)
}

/// `VFIO_GET_API_VERSION`.
pub const VFIO_GET_API_VERSION: u32 = vfio_io(0);
/// `VFIO_CHECK_EXTENSION`.
pub const VFIO_CHECK_EXTENSION: u32 = vfio_io(1);
/// `VFIO_SET_IOMMU`.
pub const VFIO_SET_IOMMU: u32 = vfio_io(2);
/// `VFIO_GROUP_GET_STATUS`.
pub const VFIO_GROUP_GET_STATUS: u32 = vfio_io(3);
/// `VFIO_GROUP_SET_CONTAINER`.
pub const VFIO_GROUP_SET_CONTAINER: u32 = vfio_io(4);
/// `VFIO_GROUP_UNSET_CONTAINER`.
pub const VFIO_GROUP_UNSET_CONTAINER: u32 = vfio_io(5);
/// `VFIO_IOMMU_GET_INFO`.
pub const VFIO_IOMMU_GET_INFO: u32 = vfio_io(12);
/// `VFIO_IOMMU_MAP_DMA`.
pub const VFIO_IOMMU_MAP_DMA: u32 = vfio_io(13);
/// `VFIO_IOMMU_UNMAP_DMA`.
pub const VFIO_IOMMU_UNMAP_DMA: u32 = vfio_io(14);
/// `VFIO_IOMMU_DIRTY_PAGES`.
pub const VFIO_IOMMU_DIRTY_PAGES: u32 = vfio_io(17);
/// `VFIO_API_VERSION`.
pub const VFIO_API_VERSION: i64 = 0;
/// `VFIO_GROUP_FLAGS_VIABLE`.
pub const VFIO_GROUP_FLAGS_VIABLE: u32 = 1 << 0;
/// `VFIO_GROUP_FLAGS_CONTAINER_SET`.
pub const VFIO_GROUP_FLAGS_CONTAINER_SET: u32 = 1 << 1;
/// `__VFIO_RESERVED_TYPE1_NESTING_IOMMU`: opens a type1v2 backend.
pub const VFIO_RESERVED_TYPE1_NESTING_IOMMU: u64 = 6;
/// x86_64's `TASK_SIZE_MAX` with 4-level paging: the end of user addresses (`access_ok`).
pub const TASK_SIZE_MAX: u64 = (1 << 47) - 4096;

/// A user address that cannot be read or written (the kernel's failed `copy_*_user`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BadAddress;

/// The calling process's memory, as the kernel's `copy_from_user`/`copy_to_user` see it.
pub trait UserMem {
    /// Copy `buf.len()` bytes from `addr`; fails (EFAULT) if any byte is not readable.
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), BadAddress>;
    /// Copy `data` to `addr`; fails (EFAULT) if any byte is not writable (a prefix may have
    /// been written, as with `copy_to_user`).
    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), BadAddress>;
    /// `access_ok(addr, size)`: the range lies below the end of user addresses.
    fn access_ok(&self, addr: u64, size: u64) -> bool {
        size <= TASK_SIZE_MAX && addr <= TASK_SIZE_MAX - size
    }
    /// Whether `len` bytes from `addr` can be written, without changing them (read, then
    /// written back unchanged).
    fn writable(&mut self, addr: u64, len: u64) -> bool {
        let Ok(len) = usize::try_from(len) else {
            return false;
        };
        let mut tmp = vec![0u8; len];
        self.read(addr, &mut tmp).is_ok() && self.write(addr, &tmp).is_ok()
    }
}

/// A flat buffer of user memory at `base` (tests and fuzzing): every other address faults.
/// Records the highest address written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Buffer {
    /// The address of `bytes[0]`.
    pub base: u64,
    /// The memory.
    pub bytes: Vec<u8>,
    /// One past the highest byte written (`None`: nothing written).
    pub written_end: Option<u64>,
}

impl Buffer {
    /// `len` zero bytes at `base`.
    pub fn new(base: u64, len: usize) -> Self {
        Buffer {
            base,
            bytes: vec![0; len],
            written_end: None,
        }
    }

    fn span(&self, addr: u64, len: usize) -> Option<std::ops::Range<usize>> {
        let off = usize::try_from(addr.checked_sub(self.base)?).ok()?;
        let end = off.checked_add(len)?;
        (end <= self.bytes.len()).then_some(off..end)
    }
}

impl UserMem for Buffer {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), BadAddress> {
        let r = self.span(addr, buf.len()).ok_or(BadAddress)?;
        buf.copy_from_slice(&self.bytes[r]);
        Ok(())
    }
    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), BadAddress> {
        let r = self.span(addr, data.len()).ok_or(BadAddress)?;
        self.bytes[r].copy_from_slice(data);
        let end = addr + data.len() as u64;
        self.written_end = Some(self.written_end.map_or(end, |e| e.max(end)));
        Ok(())
    }
}

/// What an ioctl returns: the non-negative value, or the errno.
pub type IoctlResult = Result<i64, Errno>;

fn read_bytes<const N: usize>(mem: &mut dyn UserMem, addr: u64) -> Result<[u8; N], Errno> {
    let mut b = [0u8; N];
    mem.read(addr, &mut b).map_err(|_| Errno::EFAULT)?;
    Ok(b)
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"))
}

/// `arg + off` as the kernel computes a user pointer (wrapping; a wrapped address faults).
fn at(arg: u64, off: u32) -> u64 {
    arg.wrapping_add(u64::from(off))
}

/// The little-endian bytes of bitmap words, `len` of them.
fn bitmap_bytes(words: &[u64], len: u64) -> Vec<u8> {
    let mut v: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    v.resize(len as usize, 0);
    v
}

/// `vfio_iommu_type1_check_extension` (`iommu` absent: asked before SET_IOMMU).
pub fn type1_check_extension<M: PageSource>(iommu: Option<&Container<M>>, ext: u64) -> i64 {
    match (ext, iommu) {
        (e, Some(c)) if e <= u64::from(u32::MAX) => i64::from(c.check_extension(e as u32)),
        (e, None) if e == u64::from(VFIO_TYPE1_IOMMU) || e == u64::from(VFIO_TYPE1V2_IOMMU) => 1,
        (e, None) if e == u64::from(VFIO_UNMAP_ALL) => 1,
        // UPDATE_VADDR needs an iommu; DMA_CC_IOMMU is 0 without one.
        (e, None) if e == u64::from(VFIO_UPDATE_VADDR) || e == u64::from(VFIO_DMA_CC_IOMMU) => 0,
        _ => 0,
    }
}

/// `vfio_iommu_type1_ioctl`: the backend's ioctls on an open container. `cmd` is truncated to
/// 32 bits as the syscall does.
pub fn vfio_iommu_type1_ioctl<M: PageSource>(
    c: &mut Container<M>,
    cmd: u64,
    arg: u64,
    mem: &mut dyn UserMem,
) -> IoctlResult {
    match cmd as u32 {
        VFIO_CHECK_EXTENSION => Ok(type1_check_extension(Some(&*c), arg)),
        VFIO_IOMMU_GET_INFO => get_info(c, arg, mem),
        VFIO_IOMMU_MAP_DMA => map_dma(c, arg, mem),
        VFIO_IOMMU_UNMAP_DMA => unmap_dma(c, arg, mem),
        VFIO_IOMMU_DIRTY_PAGES => dirty_pages(c, arg, mem),
        _ => Err(Errno::ENOTTY),
    }
}

/// `vfio_iommu_type1_get_info`.
fn get_info<M: PageSource>(c: &Container<M>, arg: u64, mem: &mut dyn UserMem) -> IoctlResult {
    let head: [u8; INFO_MINSZ as usize] = read_bytes(mem, arg)?;
    let argsz = u32_at(&head, 0);
    let reply = c.get_info(argsz).map_err(|e| e.errno())?;
    let hdr = (argsz.min(INFO_SIZE)) as usize;
    if reply.cap_offset != 0 {
        mem.write(at(arg, INFO_SIZE), &reply.bytes[INFO_SIZE as usize..])
            .map_err(|_| Errno::EFAULT)?;
    }
    mem.write(arg, &reply.bytes[..hdr])
        .map_err(|_| Errno::EFAULT)?;
    Ok(0)
}

/// `vfio_iommu_type1_map_dma`.
fn map_dma<M: PageSource>(c: &mut Container<M>, arg: u64, mem: &mut dyn UserMem) -> IoctlResult {
    let b: [u8; DMA_MAP_MINSZ as usize] = read_bytes(mem, arg)?;
    let req = MapDma {
        argsz: u32_at(&b, 0),
        flags: u32_at(&b, 4),
        vaddr: u64_at(&b, 8),
        iova: u64_at(&b, 16),
        size: u64_at(&b, 24),
    };
    c.map_dma(&req).map_err(|e| e.errno())?;
    Ok(0)
}

/// `vfio_iommu_type1_unmap_dma`.
fn unmap_dma<M: PageSource>(c: &mut Container<M>, arg: u64, mem: &mut dyn UserMem) -> IoctlResult {
    let b: [u8; DMA_UNMAP_MINSZ as usize] = read_bytes(mem, arg)?;
    let (argsz, flags) = (u32_at(&b, 0), u32_at(&b, 4));
    let mut req = UnmapDma {
        argsz,
        flags,
        iova: u64_at(&b, 8),
        size: u64_at(&b, 16),
        bitmap: None,
    };
    let mut data = None;
    let dirty = flags & UNMAP_FLAG_GET_DIRTY_BITMAP != 0;
    let combo = flags & (UNMAP_FLAG_ALL | UNMAP_FLAG_VADDR) != 0;
    if argsz >= DMA_UNMAP_MINSZ
        && flags & !UNMAP_FLAGS_MASK == 0
        && dirty
        && !combo
        && argsz >= DMA_UNMAP_MINSZ + VFIO_BITMAP_SIZE
    {
        // The bitmap header is copied, and its pointer checked, before anything else of it.
        let bm: [u8; VFIO_BITMAP_SIZE as usize] = read_bytes(mem, at(arg, DMA_UNMAP_MINSZ))?;
        let (pgsize, size, ptr) = (u64_at(&bm, 0), u64_at(&bm, 8), u64_at(&bm, 16));
        if !mem.access_ok(ptr, size) {
            return Err(Errno::EINVAL);
        }
        req.bitmap = Some(BitmapArg { pgsize, size });
        data = Some((ptr, size));
    }
    // `update_user_bitmap` fails before the first mapping it would report is removed: a
    // bitmap that cannot be written fails the call before anything changes, when the range
    // holds a mapping (with none, the kernel writes nothing and succeeds).
    if let Some((ptr, size)) = data {
        let holds = c.dmas().any(|d| {
            let last = req.iova.saturating_add(req.size.saturating_sub(1));
            d.iova <= last && d.last() >= req.iova
        });
        if holds && c.dirty_tracking() && !mem.writable(ptr, size) {
            // Only once the engine would accept the request: its errors come first.
            let probe = crate::uapi::UnmapRequest::decode(
                &req,
                1 << c.pgsize_bitmap().trailing_zeros(),
                c.config().kernel,
            );
            if probe.is_ok() {
                return Err(Errno::EFAULT);
            }
        }
    }
    let reply = c.unmap_dma(&req).map_err(|e| e.errno())?;
    if let (Some((ptr, size)), Some(words)) = (data, reply.bitmap.as_ref()) {
        mem.write(ptr, &bitmap_bytes(words, size))
            .map_err(|_| Errno::EFAULT)?;
    }
    let mut out = b;
    out[16..24].copy_from_slice(&reply.size.to_le_bytes());
    mem.write(arg, &out).map_err(|_| Errno::EFAULT)?;
    Ok(0)
}

/// `vfio_iommu_type1_dirty_pages`.
fn dirty_pages<M: PageSource>(
    c: &mut Container<M>,
    arg: u64,
    mem: &mut dyn UserMem,
) -> IoctlResult {
    if !c.config().v2 {
        return Err(Errno::EACCES);
    }
    let b: [u8; DIRTY_BITMAP_MINSZ as usize] = read_bytes(mem, arg)?;
    let (argsz, flags) = (u32_at(&b, 0), u32_at(&b, 4));
    let mut get = None;
    let mut data = None;
    if argsz >= DIRTY_BITMAP_MINSZ
        && flags & !DIRTY_FLAGS_MASK == 0
        && flags == DIRTY_FLAG_GET_BITMAP
        && argsz - DIRTY_BITMAP_MINSZ >= DIRTY_BITMAP_GET_SIZE
    {
        let r: [u8; DIRTY_BITMAP_GET_SIZE as usize] = read_bytes(mem, at(arg, DIRTY_BITMAP_MINSZ))?;
        let (iova, size) = (u64_at(&r, 0), u64_at(&r, 8));
        let (pgsize, bsize, ptr) = (u64_at(&r, 16), u64_at(&r, 24), u64_at(&r, 32));
        // Wrap and size 0 are the engine's (their errno depends on the kernel); access_ok
        // comes after them.
        if size != 0 && iova.checked_add(size - 1).is_some() && !mem.access_ok(ptr, bsize) {
            return Err(Errno::EINVAL);
        }
        get = Some((
            iova,
            size,
            BitmapArg {
                pgsize,
                size: bsize,
            },
        ));
        data = Some((ptr, bsize));
    }
    let words = c.dirty_pages(argsz, flags, get).map_err(|e| e.errno())?;
    if let (Some((ptr, size)), Some(words)) = (data, words) {
        mem.write(ptr, &bitmap_bytes(&words, size))
            .map_err(|_| Errno::EFAULT)?;
    }
    Ok(0)
}

/// The vfio core's side of a container: its groups and its backend.
pub trait ContainerCore {
    /// The page source of the backend.
    type Mem: PageSource;
    /// Whether a group is set on the container (`group_list` not empty).
    fn has_groups(&self) -> bool;
    /// The backend, once SET_IOMMU succeeded.
    fn iommu(&mut self) -> Option<&mut Container<Self::Mem>>;
    /// `driver->ops->open` and `__vfio_container_attach_groups`: open a type1 (`v2` false) or
    /// type1v2 backend and attach every group; on failure nothing is left open.
    fn open_iommu(&mut self, v2: bool) -> Result<(), Errno>;
}

/// `vfio_fops_unl_ioctl`: an ioctl on a container file.
pub fn vfio_fops_unl_ioctl<C: ContainerCore>(
    core: &mut C,
    cmd: u64,
    arg: u64,
    mem: &mut dyn UserMem,
) -> IoctlResult {
    match cmd as u32 {
        VFIO_GET_API_VERSION => Ok(VFIO_API_VERSION),
        VFIO_CHECK_EXTENSION => Ok(match core.iommu() {
            Some(c) => type1_check_extension(Some(&*c), arg),
            None => type1_check_extension::<C::Mem>(None, arg),
        }),
        VFIO_SET_IOMMU => {
            if !core.has_groups() || core.iommu().is_some() {
                return Err(Errno::EINVAL);
            }
            if type1_check_extension::<C::Mem>(None, arg) <= 0 {
                return Err(Errno::ENODEV);
            }
            let v2 = match arg {
                a if a == u64::from(VFIO_TYPE1_IOMMU) => false,
                a if a == u64::from(VFIO_TYPE1V2_IOMMU)
                    || a == VFIO_RESERVED_TYPE1_NESTING_IOMMU =>
                {
                    true
                }
                _ => return Err(Errno::EINVAL),
            };
            core.open_iommu(v2)?;
            Ok(0)
        }
        _ => match core.iommu() {
            Some(c) => vfio_iommu_type1_ioctl(c, cmd, arg, mem),
            None => Err(Errno::EINVAL),
        },
    }
}

/// One fuzz case: `data` drives a sequence of ioctls on a fresh container (type1 or type1v2,
/// with or without the x86 MSI window reserved, an 8 MiB simulated region at a known vaddr)
/// through a 4 KiB user buffer; after every call the invariants are checked. Panics on a
/// violation: a failed call that changed the container or wrote user memory (other than the
/// EFAULT of a write that faulted midway), a write past GET_INFO's argsz or outside the
/// buffer, an engine invariant (`check_invariants`), or a pin left after unmap-all.
/// The fuzz target `uapi_dispatch` and the stable smoke test both run it.
pub fn exercise(data: &[u8]) {
    use crate::mm::sim::SimMm;
    use crate::mm::{Backing, MmapSpec};
    use crate::profile::{Config, KernelProfile};
    use iommu::{Domain, DomainConfig, Format};

    const BUF: u64 = 0x6000_0000_0000;
    const BUF_LEN: usize = 4096;
    let mut it = data.iter().copied();
    let mut next = move |n: usize| -> Vec<u8> { (0..n).map(|_| it.next().unwrap_or(0)).collect() };
    let setup = next(1)[0];
    let kernel = [
        KernelProfile::V7_2,
        KernelProfile::V6_12,
        KernelProfile::V6_1,
    ][usize::from(setup >> 2) % 3];
    let cfg = Config {
        v2: setup & 1 == 0,
        dma_entry_limit: u32::from(setup >> 4) + 1,
        memlock: (setup & 0x80 != 0).then_some(1 << 20),
        kernel,
        ..Config::default()
    };
    let mut c = Container::new(cfg, SimMm::new());
    let region = c
        .mm_mut()
        .mmap(&MmapSpec::new("ram", 8 << 20, Backing::Thp))
        .expect("an 8M region maps");
    let domain = Domain::new(DomainConfig::new(Format::X86_64 { levels: 4 })).expect("x86_64");
    let reserved = if setup & 2 != 0 {
        domain.reserved_regions()
    } else {
        Vec::new()
    };
    c.attach("d0", domain, reserved)
        .expect("the first domain attaches");
    const CMDS: [u32; 8] = [
        VFIO_CHECK_EXTENSION,
        VFIO_IOMMU_GET_INFO,
        VFIO_IOMMU_MAP_DMA,
        VFIO_IOMMU_UNMAP_DMA,
        VFIO_IOMMU_DIRTY_PAGES,
        VFIO_GET_API_VERSION,
        VFIO_SET_IOMMU,
        VFIO_GROUP_GET_STATUS,
    ];
    for _ in 0..24 {
        let head = next(4);
        if head.iter().all(|&b| b == 0) && data.len() < 4 {
            break;
        }
        let cmd = if head[0] & 0x80 != 0 {
            u32::from_le_bytes(next(4).try_into().expect("4 bytes"))
        } else {
            CMDS[usize::from(head[0]) % CMDS.len()]
        };
        // The argument: mostly at the buffer's start; sometimes near its end or outside.
        let arg = match head[1] & 3 {
            0 | 1 => BUF,
            2 => BUF + (BUF_LEN as u64 - u64::from(head[1] >> 2)),
            _ => u64::from_le_bytes(next(8).try_into().expect("8 bytes")),
        };
        let len = usize::from(head[2]) % 96;
        let mut bytes = next(len);
        // Point vaddrs and bitmaps somewhere useful when asked to.
        if head[3] & 1 != 0 && bytes.len() >= 16 {
            let v = region + (u64::from(head[3] >> 1) << 12);
            bytes[8..16].copy_from_slice(&v.to_le_bytes());
        }
        if head[3] & 2 != 0 && bytes.len() >= 48 {
            bytes[40..48].copy_from_slice(&(BUF + 2048).to_le_bytes());
        }
        let mut mem = Buffer::new(BUF, BUF_LEN);
        mem.bytes[..bytes.len()].copy_from_slice(&bytes);
        let argsz = u32::from_le_bytes(mem.bytes[..4].try_into().expect("4 bytes"));
        let before = c.snapshot();
        let r = vfio_iommu_type1_ioctl(&mut c, u64::from(cmd), arg, &mut mem);
        match r {
            Ok(v) => assert!(v >= 0, "{cmd:#x} returned {v}"),
            Err(e) => {
                assert_eq!(
                    c.snapshot(),
                    before,
                    "{cmd:#x} failed with {e} and changed the container"
                );
                if e != Errno::EFAULT {
                    assert_eq!(mem.written_end, None, "{cmd:#x} failed with {e} and wrote");
                }
            }
        }
        if cmd == VFIO_IOMMU_GET_INFO && arg == BUF {
            if let Some(end) = mem.written_end {
                assert!(
                    end <= BUF + u64::from(argsz),
                    "GET_INFO wrote past argsz {argsz}"
                );
            }
        }
        if cmd == VFIO_IOMMU_MAP_DMA || (cmd == VFIO_IOMMU_DIRTY_PAGES && arg != BUF) {
            assert!(
                !matches!(mem.written_end, Some(e) if e <= BUF + 2048),
                "{cmd:#x} wrote its argument"
            );
        }
        if let Err(v) = c.check_invariants() {
            panic!("after {cmd:#x} -> {r:?}: {v:?}");
        }
    }
    c.unmap_unpin_all();
    assert_eq!(
        (c.mm().pinned_pages(), c.locked_pages()),
        (0, 0),
        "unmap-all left pins"
    );
}

#[cfg(test)]
mod tests;
