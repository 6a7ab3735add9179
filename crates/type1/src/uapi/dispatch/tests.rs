//! Byte-level tests of the dispatcher (spec §1.3–§1.6): what is read, what is written back,
//! the errno of each check in the kernel's order.

use iommu::{Errno, SZ_2M, SZ_4K};

use super::*;
use crate::mm::sim::SimMm;
use crate::mm::{Backing, MmapSpec};
use crate::profile::Config;
use crate::uapi::{DIRTY_FLAG_START, MAP_FLAG_READ, MAP_FLAG_WRITE};

/// Where the argument buffers live (far from the simulated regions).
const ARG: u64 = 0x5000_0000_0000;
const FILL: u8 = 0xa5;

/// A type1v2 container with one x86_64 domain and an 8M region; the region's vaddr.
fn setup() -> (Container<SimMm>, u64) {
    let mut c = Container::sim_x86(Config::default());
    let v = c
        .mm_mut()
        .mmap(&MmapSpec::new("ram", 8 << 20, Backing::Page4k))
        .unwrap();
    (c, v)
}

/// A buffer of `len` bytes at ARG filled with FILL, `head` copied at its start.
fn buf(head: &[u8], len: usize) -> Buffer {
    let mut b = Buffer::new(ARG, len);
    b.bytes.fill(FILL);
    b.bytes[..head.len()].copy_from_slice(head);
    b
}

fn map_bytes(argsz: u32, flags: u32, vaddr: u64, iova: u64, size: u64) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&argsz.to_le_bytes());
    v.extend_from_slice(&flags.to_le_bytes());
    for x in [vaddr, iova, size] {
        v.extend_from_slice(&x.to_le_bytes());
    }
    v
}

fn unmap_bytes(argsz: u32, flags: u32, iova: u64, size: u64, bitmap: Option<[u64; 3]>) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&argsz.to_le_bytes());
    v.extend_from_slice(&flags.to_le_bytes());
    v.extend_from_slice(&iova.to_le_bytes());
    v.extend_from_slice(&size.to_le_bytes());
    for x in bitmap.into_iter().flatten() {
        v.extend_from_slice(&x.to_le_bytes());
    }
    v
}

const RW: u32 = MAP_FLAG_READ | MAP_FLAG_WRITE;

fn ioctl(c: &mut Container<SimMm>, cmd: u32, b: &mut Buffer) -> IoctlResult {
    vfio_iommu_type1_ioctl(c, u64::from(cmd), ARG, b)
}

fn map(c: &mut Container<SimMm>, vaddr: u64, iova: u64, size: u64) {
    let mut b = buf(&map_bytes(32, RW, vaddr, iova, size), 32);
    assert_eq!(ioctl(c, VFIO_IOMMU_MAP_DMA, &mut b), Ok(0));
}

#[test]
fn argsz_below_the_minimum_is_einval_and_writes_nothing() {
    let (mut c, v) = setup();
    let before = c.snapshot();
    for (cmd, bytes) in [
        (VFIO_IOMMU_MAP_DMA, map_bytes(31, RW, v, 0, SZ_4K)),
        (VFIO_IOMMU_UNMAP_DMA, unmap_bytes(23, 0, 0, SZ_4K, None)),
        (VFIO_IOMMU_GET_INFO, 15u32.to_le_bytes().repeat(4)),
        (
            VFIO_IOMMU_DIRTY_PAGES,
            [7u32, DIRTY_FLAG_START].map(u32::to_le_bytes).concat(),
        ),
    ] {
        let mut b = buf(&bytes, 64);
        assert_eq!(ioctl(&mut c, cmd, &mut b), Err(Errno::EINVAL), "{cmd:#x}");
        assert_eq!(b.written_end, None, "{cmd:#x} wrote back");
    }
    // GET_BITMAP with argsz 8 + 39 (one byte short of the range structure).
    let mut d = [47u32, DIRTY_FLAG_GET_BITMAP]
        .map(u32::to_le_bytes)
        .concat();
    d.resize(48, 0);
    assert_eq!(
        ioctl(&mut c, VFIO_IOMMU_DIRTY_PAGES, &mut buf(&d, 48)),
        Err(Errno::EINVAL)
    );
    // UNMAP with GET_DIRTY_BITMAP and argsz 24 + 23.
    let u = unmap_bytes(
        47,
        UNMAP_FLAG_GET_DIRTY_BITMAP,
        0,
        SZ_4K,
        Some([SZ_4K, 8, ARG]),
    );
    assert_eq!(
        ioctl(&mut c, VFIO_IOMMU_UNMAP_DMA, &mut buf(&u, 48)),
        Err(Errno::EINVAL)
    );
    assert_eq!(c.snapshot(), before);
}

#[test]
fn only_the_minimum_size_is_read() {
    let (mut c, v) = setup();
    // A MAP_DMA structure in the last 32 bytes of the buffer: nothing after it is read.
    let mut b = buf(&[], 64);
    b.bytes[32..].copy_from_slice(&map_bytes(32, RW, v, 0, SZ_4K));
    assert_eq!(
        vfio_iommu_type1_ioctl(&mut c, VFIO_IOMMU_MAP_DMA.into(), ARG + 32, &mut b),
        Ok(0)
    );
    // 31 bytes before the end: the copy faults.
    assert_eq!(
        vfio_iommu_type1_ioctl(&mut c, VFIO_IOMMU_MAP_DMA.into(), ARG + 33, &mut b),
        Err(Errno::EFAULT)
    );
    // GET_INFO with argsz 16 in a 16-byte buffer: reads 16, writes 16.
    let mut b = buf(&16u32.to_le_bytes(), 16);
    assert_eq!(ioctl(&mut c, VFIO_IOMMU_GET_INFO, &mut b), Ok(0));
    assert_eq!(b.written_end, Some(ARG + 16));
    // A bad argument pointer.
    assert_eq!(
        vfio_iommu_type1_ioctl(&mut c, VFIO_IOMMU_UNMAP_DMA.into(), 8, &mut b),
        Err(Errno::EFAULT)
    );
    assert_eq!(c.dmas().count(), 1);
}

#[test]
fn unknown_flags_are_einval() {
    let (mut c, v) = setup();
    let before = c.snapshot();
    for (cmd, bytes) in [
        (VFIO_IOMMU_MAP_DMA, map_bytes(32, RW | 1 << 3, v, 0, SZ_4K)),
        (
            VFIO_IOMMU_UNMAP_DMA,
            unmap_bytes(24, 1 << 3, 0, SZ_4K, None),
        ),
        (
            VFIO_IOMMU_DIRTY_PAGES,
            [8u32, 1 << 3].map(u32::to_le_bytes).concat(),
        ),
        // Two known flags at once.
        (
            VFIO_IOMMU_DIRTY_PAGES,
            [8u32, 3].map(u32::to_le_bytes).concat(),
        ),
        (
            VFIO_IOMMU_DIRTY_PAGES,
            [8u32, 0].map(u32::to_le_bytes).concat(),
        ),
    ] {
        let mut b = buf(&bytes, 64);
        assert_eq!(ioctl(&mut c, cmd, &mut b), Err(Errno::EINVAL), "{cmd:#x}");
        assert_eq!(b.written_end, None);
    }
    assert_eq!(c.snapshot(), before);
    assert_eq!(
        ioctl(&mut c, vfio_io(99), &mut buf(&[], 8)),
        Err(Errno::ENOTTY)
    );
}

#[test]
fn get_info_with_a_short_buffer_asks_for_the_size_and_writes_no_capability() {
    let (mut c, _) = setup();
    // One IOVA range (no reserved region): 24 + 32 + 16 + 32.
    let needed = 104u32;
    for argsz in [16u32, 20, 24, needed - 1] {
        let mut b = buf(&argsz.to_le_bytes(), 256);
        assert_eq!(ioctl(&mut c, VFIO_IOMMU_GET_INFO, &mut b), Ok(0));
        let hdr = argsz.min(24) as usize;
        assert_eq!(b.written_end, Some(ARG + hdr as u64), "argsz {argsz}");
        assert_eq!(u32_at(&b.bytes, 0), needed, "argsz written back");
        assert_eq!(u32_at(&b.bytes, 4), 3, "PGSIZES | CAPS");
        assert_eq!(u64_at(&b.bytes, 8), c.pgsize_bitmap());
        if argsz >= 24 {
            assert_eq!(
                u32_at(&b.bytes, 16),
                0,
                "cap_offset 0: the chain did not fit"
            );
        }
        assert!(
            b.bytes[hdr..].iter().all(|&x| x == FILL),
            "nothing past the header"
        );
    }
    // The second call, with the size asked for: the chain MIGRATION -> DMA_AVAIL -> IOVA_RANGE.
    let mut b = buf(&needed.to_le_bytes(), 256);
    assert_eq!(ioctl(&mut c, VFIO_IOMMU_GET_INFO, &mut b), Ok(0));
    assert_eq!(b.written_end, Some(ARG + u64::from(needed)));
    assert_eq!((u32_at(&b.bytes, 0), u32_at(&b.bytes, 16)), (needed, 24));
    let chain: Vec<(u16, u32)> = [24usize, 56, 72]
        .iter()
        .map(|&o| {
            (
                u16::from_le_bytes([b.bytes[o], b.bytes[o + 1]]),
                u32_at(&b.bytes, o + 4),
            )
        })
        .collect();
    assert_eq!(chain, vec![(2, 56), (3, 72), (1, 0)]);
    assert_eq!(u32_at(&b.bytes, 64), 65535, "DMA_AVAIL");
    assert_eq!(u32_at(&b.bytes, 80), 1, "one IOVA range");
    assert!(b.bytes[needed as usize..].iter().all(|&x| x == FILL));
}

#[test]
fn unmap_writes_the_size_back_only_on_success() {
    let (mut c, v) = setup();
    map(&mut c, v, SZ_2M, SZ_2M);
    // v2 refuses to bisect: EINVAL, the size field keeps the caller's value.
    let mut b = buf(&unmap_bytes(24, 0, SZ_2M, SZ_4K, None), 32);
    assert_eq!(
        ioctl(&mut c, VFIO_IOMMU_UNMAP_DMA, &mut b),
        Err(Errno::EINVAL)
    );
    assert_eq!((b.written_end, u64_at(&b.bytes, 16)), (None, SZ_4K));
    // An empty range succeeds with size 0.
    let mut b = buf(&unmap_bytes(32, 0, 0, SZ_4K, None), 32);
    assert_eq!(ioctl(&mut c, VFIO_IOMMU_UNMAP_DMA, &mut b), Ok(0));
    assert_eq!((b.written_end, u64_at(&b.bytes, 16)), (Some(ARG + 24), 0));
    assert_eq!(u32_at(&b.bytes, 0), 32, "argsz stays the caller's");
    // The whole mapping: its size.
    let mut b = buf(&unmap_bytes(24, UNMAP_FLAG_ALL, 0, 0, None), 32);
    assert_eq!(ioctl(&mut c, VFIO_IOMMU_UNMAP_DMA, &mut b), Ok(0));
    assert_eq!(u64_at(&b.bytes, 16), SZ_2M);
    assert_eq!((c.dmas().count(), c.locked_pages()), (0, 0));
}

#[test]
fn a_bitmap_pointer_outside_the_process_is_einval_or_efault() {
    let (mut c, v) = setup();
    map(&mut c, v, 0, SZ_2M);
    let start = [8u32, DIRTY_FLAG_START].map(u32::to_le_bytes).concat();
    assert_eq!(
        ioctl(&mut c, VFIO_IOMMU_DIRTY_PAGES, &mut buf(&start, 8)),
        Ok(0)
    );
    let pages = SZ_2M / SZ_4K;
    let get = |ptr: u64| {
        let mut d = [48u32, DIRTY_FLAG_GET_BITMAP]
            .map(u32::to_le_bytes)
            .concat();
        for x in [0, SZ_2M, SZ_4K, pages / 8, ptr] {
            d.extend_from_slice(&x.to_le_bytes());
        }
        d
    };
    let before = c.snapshot();
    // Above the end of user addresses: access_ok fails, EINVAL.
    let mut b = buf(&get(1 << 60), 256);
    assert_eq!(
        ioctl(&mut c, VFIO_IOMMU_DIRTY_PAGES, &mut b),
        Err(Errno::EINVAL)
    );
    // A user address with nothing mapped: the copy faults, EFAULT.
    let mut b = buf(&get(0x1000), 256);
    assert_eq!(
        ioctl(&mut c, VFIO_IOMMU_DIRTY_PAGES, &mut b),
        Err(Errno::EFAULT)
    );
    assert_eq!(b.written_end, None);
    // Inside the buffer: every page of the mapping is dirty.
    let mut b = buf(&get(ARG + 64), 256);
    assert_eq!(ioctl(&mut c, VFIO_IOMMU_DIRTY_PAGES, &mut b), Ok(0));
    assert_eq!(b.written_end, Some(ARG + 64 + pages / 8));
    assert!(b.bytes[64..64 + (pages / 8) as usize]
        .iter()
        .all(|&x| x == 0xff));
    // UNMAP with GET_DIRTY_BITMAP to a pointer outside: EINVAL / EFAULT, the mapping stays.
    for (ptr, errno) in [(1u64 << 60, Errno::EINVAL), (0x1000, Errno::EFAULT)] {
        let u = unmap_bytes(
            48,
            UNMAP_FLAG_GET_DIRTY_BITMAP,
            0,
            SZ_2M,
            Some([SZ_4K, pages / 8, ptr]),
        );
        let mut b = buf(&u, 48);
        assert_eq!(ioctl(&mut c, VFIO_IOMMU_UNMAP_DMA, &mut b), Err(errno));
        assert_eq!(b.written_end, None);
    }
    assert_eq!(c.snapshot(), before);
    let u = unmap_bytes(
        48,
        UNMAP_FLAG_GET_DIRTY_BITMAP,
        0,
        SZ_2M,
        Some([SZ_4K, pages / 8, ARG + 64]),
    );
    let mut b = buf(&u, 256);
    assert_eq!(ioctl(&mut c, VFIO_IOMMU_UNMAP_DMA, &mut b), Ok(0));
    assert_eq!(u64_at(&b.bytes, 16), SZ_2M);
    assert_eq!(c.dmas().count(), 0);
}

/// A container core for the vfio-core tests: one group, a sim backend.
struct Core {
    groups: bool,
    c: Option<Container<SimMm>>,
}

impl ContainerCore for Core {
    type Mem = SimMm;
    fn has_groups(&self) -> bool {
        self.groups
    }
    fn iommu(&mut self) -> Option<&mut Container<SimMm>> {
        self.c.as_mut()
    }
    fn open_iommu(&mut self, v2: bool) -> Result<(), Errno> {
        self.c = Some(Container::sim_x86(Config {
            v2,
            ..Config::default()
        }));
        Ok(())
    }
}

#[test]
fn the_core_ioctls_answer_as_vfio_fops_unl_ioctl() {
    let mut core = Core {
        groups: false,
        c: None,
    };
    let mut b = buf(&[], 64);
    let mut call =
        |core: &mut Core, cmd: u32, arg: u64| vfio_fops_unl_ioctl(core, cmd.into(), arg, &mut b);
    assert_eq!(call(&mut core, VFIO_GET_API_VERSION, 0), Ok(0));
    assert_eq!(call(&mut core, VFIO_CHECK_EXTENSION, 3), Ok(1));
    assert_eq!(
        call(&mut core, VFIO_CHECK_EXTENSION, 10),
        Ok(0),
        "UPDATE_VADDR needs an iommu"
    );
    assert_eq!(call(&mut core, VFIO_CHECK_EXTENSION, (1 << 32) | 3), Ok(0));
    assert_eq!(
        call(&mut core, VFIO_SET_IOMMU, 3),
        Err(Errno::EINVAL),
        "no group"
    );
    assert_eq!(
        call(&mut core, VFIO_IOMMU_GET_INFO, ARG),
        Err(Errno::EINVAL),
        "no backend"
    );
    core.groups = true;
    assert_eq!(call(&mut core, VFIO_SET_IOMMU, 2), Err(Errno::ENODEV));
    assert_eq!(
        call(&mut core, VFIO_SET_IOMMU, 9),
        Err(Errno::EINVAL),
        "UNMAP_ALL is no type"
    );
    assert_eq!(call(&mut core, VFIO_SET_IOMMU, 1), Ok(0));
    assert_eq!(
        call(&mut core, VFIO_SET_IOMMU, 3),
        Err(Errno::EINVAL),
        "already set"
    );
    assert_eq!(call(&mut core, VFIO_CHECK_EXTENSION, 10), Ok(1));
    assert_eq!(
        call(&mut core, VFIO_IOMMU_DIRTY_PAGES, 1),
        Err(Errno::EACCES),
        "type1 (v1)"
    );
    assert_eq!(call(&mut core, vfio_io(50), ARG), Err(Errno::ENOTTY));
}

/// The fuzz target's harness on a fixed pseudo-random corpus: the stable smoke run.
#[test]
fn the_fuzz_harness_holds_on_a_fixed_corpus() {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..400 {
        let len = (rnd() % 600) as usize;
        let mut data: Vec<u8> = (0..len).map(|_| rnd() as u8).collect();
        // Bias towards small argsz values and known flags, as a fuzzer finds them.
        for (i, b) in data.iter_mut().enumerate() {
            if i % 7 == 3 {
                *b &= 0x3f;
            }
        }
        exercise(&data);
    }
}
