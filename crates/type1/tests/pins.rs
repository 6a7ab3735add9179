//! External pins as modern type1 serves them (drivers/vfio/vfio_iommu_type1.c:
//! `vfio_iommu_type1_pin_pages`, `vfio_iommu_type1_unpin_pages`, `vfio_iommu_type1_dma_rw`, the
//! unmap notification of `vfio_dma_do_unmap`, `vfio_dma_populate_bitmap`; drivers/vfio/
//! vfio_main.c and container.c for the checks before them). Invariants after every step.

mod common;

use common::*;
use type1::mm::{Backing, MmapSpec, PageSource};
use type1::uapi::{
    DIRTY_FLAG_GET_BITMAP, DIRTY_FLAG_START, MAP_FLAG_READ, UNMAP_FLAG_GET_DIRTY_BITMAP,
    UNMAP_FLAG_VADDR,
};
use type1::{BitmapArg, Config, Errno, MapDma, UnmapDma};

fn pin(c: &mut C, iova: u64, npage: u64) -> Result<u64, Errno> {
    let r = c.pin_pages("d0", iova, npage).map_err(|e| e.errno());
    invariants(c);
    r
}

fn unpin(c: &mut C, iova: u64, npage: u64) -> u64 {
    let r = c.unpin_pages(iova, npage).unwrap();
    invariants(c);
    r
}

fn rw(c: &mut C, iova: u64, size: u64, write: bool) -> Result<(), Errno> {
    let r = c.dma_rw(iova, size, write).map_err(|e| e.errno());
    invariants(c);
    r
}

/// 16 pages of 4K memory mapped read-write at `A`.
fn setup() -> C {
    let mut c = default_harness();
    map_new(&mut c, 16 * K4, Backing::Page4k);
    c
}

fn dirty_get(c: &mut C, iova: u64, size: u64) -> Vec<u64> {
    let arg = BitmapArg {
        pgsize: K4,
        size: 8,
    };
    c.dirty_pages(48, DIRTY_FLAG_GET_BITMAP, Some((iova, size, arg)))
        .unwrap()
        .unwrap()
}

/// `vfio_device_container_pin_pages` (E2BIG), `vfio_pin_pages` (EINVAL for npage 0),
/// `vfio_iommu_type1_pin_pages` (EACCES on type1, EINVAL with no mapping, EPERM without
/// read and write, EBUSY while a vaddr is invalid); each refusal changes nothing.
#[test]
fn pin_checks_and_errnos() {
    let mut c = setup();
    let before = c.snapshot();
    assert_eq!(pin(&mut c, A, 0), Err(Errno::EINVAL));
    assert_eq!(pin(&mut c, A, 513), Err(Errno::E2BIG));
    assert_eq!(pin(&mut c, A + 16 * K4, 1), Err(Errno::EINVAL));
    // The last page is past the mapping: the 15 before it are unwound.
    assert_eq!(pin(&mut c, A + K4, 16), Err(Errno::EINVAL));
    assert_eq!(c.snapshot(), before);
    assert_eq!(c.external_pins().iter().count(), 0);
    assert_eq!(
        c.pin_pages("nope", A, 1).unwrap_err().errno(),
        Errno::EINVAL
    );
    // A read-only mapping: EPERM.
    let v = mmap(&mut c, "ro", K4, Backing::Page4k);
    let r = c.map_dma(&MapDma {
        argsz: 32,
        flags: MAP_FLAG_READ,
        vaddr: v,
        iova: 2 * A,
        size: K4,
    });
    assert!(r.is_ok());
    assert_eq!(pin(&mut c, 2 * A, 1), Err(Errno::EPERM));
    // A vaddr invalidated: EBUSY.
    let mut inval = UnmapDma::range(2 * A, K4);
    inval.flags = UNMAP_FLAG_VADDR;
    c.unmap_dma(&inval).unwrap();
    assert_eq!(pin(&mut c, A, 1), Err(Errno::EBUSY));
    // type1 (v1): EACCES.
    let mut v1 = harness(Config {
        v2: false,
        ..Config::default()
    });
    map_new(&mut v1, 4 * K4, Backing::Page4k);
    assert_eq!(v1.pin_pages("d0", A, 1).unwrap_err().errno(), Errno::EACCES);
}

/// `vfio_pin_page_external` with a domain present: no accounting (the mapping charged the
/// pages), one more pin of the page; `vfio_iova_get_vfio_pfn` counts a repeat pin; the last
/// `vfio_unpin_page_external` drops the pin.
#[test]
fn pins_are_counted_per_iova_and_never_charged_with_a_domain() {
    let mut c = setup();
    assert_eq!((c.mm().pinned_pages(), c.locked_pages()), (16, 16));
    assert_eq!(pin(&mut c, A + 2 * K4, 4), Ok(4));
    assert_eq!((c.mm().pinned_pages(), c.locked_pages()), (20, 16));
    assert_eq!(pin(&mut c, A + 2 * K4, 1), Ok(1));
    let p: Vec<_> = c
        .external_pins()
        .iter()
        .map(|p| (p.iova, p.ref_count))
        .collect();
    assert_eq!(
        p,
        vec![
            (A + 2 * K4, 2),
            (A + 3 * K4, 1),
            (A + 4 * K4, 1),
            (A + 5 * K4, 1)
        ]
    );
    assert_eq!(c.mm().pinned_pages(), 20);
    assert_eq!(unpin(&mut c, A + 2 * K4, 4), 4);
    assert_eq!(c.mm().pinned_pages(), 17);
    assert_eq!(unpin(&mut c, A + 2 * K4, 1), 1);
    assert_eq!(c.mm().pinned_pages(), 16);
    // Unpinning what is not pinned: WARN_ON_ONCE(!vpfn), nothing changes.
    c.take_warnings();
    assert_eq!(unpin(&mut c, A, 1), 0);
    assert!(c.take_warnings()[0].starts_with("WARN_ON_ONCE(!vpfn)"));
    assert_eq!(unpin(&mut c, A, 600), 0);
    finish(&mut c);
}

/// `vfio_dma_do_unmap`: a mapping with a non-empty `pfn_list` is not removed until the
/// registered devices were told (`vfio_notify_dma_unmap`) and unpinned.
#[test]
fn an_unmap_over_pinned_pages_notifies_the_device() {
    let mut c = setup();
    pin(&mut c, A + K4, 3).unwrap();
    pin(&mut c, A + K4, 1).unwrap();
    assert!(c.take_unmap_notices().is_empty());
    assert_eq!(unmap(&mut c, A, 16 * K4), Ok(16 * K4));
    let n = c.take_unmap_notices();
    assert_eq!(n.len(), 1);
    assert_eq!((n[0].iova, n[0].size, n[0].unpinned), (A, 16 * K4, 4));
    assert_eq!(n[0].devices, vec!["d0".to_string()]);
    assert_eq!((c.mm().pinned_pages(), c.locked_pages()), (0, 0));
    assert_eq!(c.external_pins().iter().count(), 0);
}

/// `vfio_iommu_type1_dma_rw_chunk`: EINVAL with no mapping at an IOVA, EPERM without the
/// permission, EFAULT when the copy faults; a range over two adjacent mappings is copied
/// chunk by chunk.
#[test]
fn dma_rw_checks_and_errnos() {
    let mut c = setup();
    assert_eq!(rw(&mut c, A, 0, false), Err(Errno::EINVAL));
    assert_eq!(rw(&mut c, A + K4 + 12, 100, true), Ok(()));
    assert_eq!(rw(&mut c, A + 15 * K4, 2 * K4, false), Err(Errno::EINVAL));
    let v = mmap(&mut c, "n", 4 * K4, Backing::Page4k);
    map(&mut c, v, A + 16 * K4, 4 * K4).unwrap();
    assert_eq!(rw(&mut c, A + 15 * K4, 2 * K4, true), Ok(()));
    let ro = mmap(&mut c, "ro", K4, Backing::Page4k);
    c.map_dma(&MapDma {
        argsz: 32,
        flags: MAP_FLAG_READ,
        vaddr: ro,
        iova: 2 * A,
        size: K4,
    })
    .unwrap();
    assert_eq!(rw(&mut c, 2 * A, 8, false), Ok(()));
    assert_eq!(rw(&mut c, 2 * A, 8, true), Err(Errno::EPERM));
    // The memory behind a mapping is unmapped from the process: the copy faults.
    let b = mmap(&mut c, "gone", 2 * K4, Backing::Page4k);
    map(&mut c, b, 3 * A, 2 * K4).unwrap();
    c.mm_mut().munmap("gone", None).unwrap();
    assert_eq!(rw(&mut c, 3 * A, 8, false), Err(Errno::EFAULT));
}

/// `vfio_iova_dirty_bitmap` / `update_user_bitmap`: while a group is not pin-scoped every
/// mapped page is dirty; once its device pinned (`pinned_page_dirty_scope`), only the pages
/// pinned or written through `dma_rw` are, and after a report the bitmap is re-populated
/// with the pinned pages only (`vfio_dma_populate_bitmap`).
#[test]
fn dirty_reports_become_pin_scoped_once_the_device_pins() {
    let mut c = setup();
    c.dirty_pages(8, DIRTY_FLAG_START, None).unwrap();
    assert_eq!(dirty_get(&mut c, A, 16 * K4), vec![0xffff]);
    pin(&mut c, A + 3 * K4, 1).unwrap();
    rw(&mut c, A + 5 * K4, K4 + 1, true).unwrap();
    rw(&mut c, A + 9 * K4, 8, false).unwrap();
    assert_eq!(
        dirty_get(&mut c, A, 16 * K4),
        vec![(1 << 3) | (1 << 5) | (1 << 6)]
    );
    assert_eq!(dirty_get(&mut c, A, 16 * K4), vec![1 << 3]);
    unpin(&mut c, A + 3 * K4, 1);
    assert_eq!(dirty_get(&mut c, A, 16 * K4), vec![1 << 3]);
    assert_eq!(dirty_get(&mut c, A, 16 * K4), vec![0]);
    // Unmap with GET_DIRTY_BITMAP reports the same way.
    rw(&mut c, A + 15 * K4, 8, true).unwrap();
    let r = c
        .unmap_dma(&UnmapDma {
            argsz: 48,
            flags: UNMAP_FLAG_GET_DIRTY_BITMAP,
            iova: A,
            size: 16 * K4,
            bitmap: Some(BitmapArg {
                pgsize: K4,
                size: 8,
            }),
        })
        .unwrap();
    assert_eq!(r.bitmap, Some(vec![1 << 15]));
    invariants(&c);
}

/// Pins taken before tracking starts are in the first report (`vfio_dma_bitmap_alloc_all`
/// populates each bitmap with the pinned pages); stopping frees the bitmaps.
#[test]
fn pins_before_tracking_are_reported() {
    let mut c = setup();
    pin(&mut c, A + 7 * K4, 2).unwrap();
    c.dirty_pages(8, DIRTY_FLAG_START, None).unwrap();
    assert_eq!(dirty_get(&mut c, A, 16 * K4), vec![0b11 << 7]);
    assert_eq!(dirty_get(&mut c, A, 16 * K4), vec![0b11 << 7]);
    c.dirty_pages(8, type1::uapi::DIRTY_FLAG_STOP, None)
        .unwrap();
    rw(&mut c, A, 8, true).unwrap();
    c.dirty_pages(8, DIRTY_FLAG_START, None).unwrap();
    assert_eq!(dirty_get(&mut c, A, 16 * K4), vec![0b11 << 7]);
    finish(&mut c);
}

/// A second group that never pinned keeps every page dirty (`num_non_pinned_groups > 0`).
#[test]
fn a_group_that_never_pinned_keeps_reports_whole() {
    let mut c = setup();
    c.attach("d1", mock_domain(K4 | M2 | G1), vec![]).unwrap();
    c.dirty_pages(8, DIRTY_FLAG_START, None).unwrap();
    pin(&mut c, A, 1).unwrap();
    assert_eq!(dirty_get(&mut c, A, 16 * K4), vec![0xffff]);
    c.pin_pages("d1", A + K4, 1).unwrap();
    assert_eq!(dirty_get(&mut c, A, 16 * K4), vec![0b11]);
    // The mapping leaves with the last group: its external pins go with it.
    c.detach("d1").unwrap();
    c.detach("d0").unwrap();
    assert_eq!((c.mm().pinned_pages(), c.locked_pages()), (0, 0));
    invariants(&c);
}

/// A pin over a pfnmap (device BAR) mapping takes the reserved pfn and never pins it.
#[test]
fn a_pin_of_device_memory_holds_no_page() {
    let mut c = default_harness();
    let v = mmap_spec(&mut c, MmapSpec::new("bar", 4 * K4, Backing::Pfnmap));
    map(&mut c, v, A, 4 * K4).unwrap();
    assert_eq!(pin(&mut c, A, 2), Ok(2));
    assert_eq!(c.mm().pinned_pages(), 0);
    assert!(c.external_pins().iter().all(|p| p.reserved));
    finish(&mut c);
}
