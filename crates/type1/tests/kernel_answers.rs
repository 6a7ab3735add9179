//! Answers the kernel defines where the model once had its own (issue 14, "Wrong answers the
//! kernel defines"; spec §6 dirty tracking, §1.3 and §2 the IOVA list), each test citing the
//! code path of drivers/vfio/vfio_iommu_type1.c it follows, and the dirty bitmap of a mapping
//! reported again and again, as the real kernels answered (tests/kernel/dirty.trace).

mod common;

use common::*;
use iommu::{Domain, DomainConfig, Format};
use type1::mm::sim::SimMm;
use type1::mm::Backing;
use type1::{BitmapArg, Config, Container, Errno, Strategy, UnmapDma};

/// `VFIO_IOMMU_DIRTY_PAGES_FLAG_START` / `_STOP` / `_GET_BITMAP`.
const START: u32 = 1;
const STOP: u32 = 2;
const GET: u32 = 4;
/// `DIRTY_BITMAP_PAGES_MAX` (INT_MAX) pages of 4 KiB.
const INT_MAX_PAGES: u64 = i32::MAX as u64;
const TIB8: u64 = 8 << 40;

fn dirty(c: &mut C, flags: u32) -> Result<(), Errno> {
    c.dirty_pages(8, flags, None)
        .map(|_| ())
        .map_err(|e| e.errno())
}

/// GET_BITMAP of `[iova, +size)` at 4K per bit, the bitmap as small as allowed.
fn get(c: &mut C, iova: u64, size: u64) -> Result<Vec<u64>, Errno> {
    let bm = BitmapArg {
        pgsize: K4,
        size: (size / K4).div_ceil(64) * 8,
    };
    c.dirty_pages(48, GET, Some((iova, size, bm)))
        .map(|b| b.expect("GET_BITMAP returns a bitmap"))
        .map_err(|e| e.errno())
}

/// A container with one mock domain (4K|2M|1G over 48 bits) and `TIB8` bytes of 1G hugetlb
/// memory at the returned vaddr; the folio strategy pins a 1G folio in one step (the others walk
/// 2^31 pages, as the kernel does, which takes a minute here).
fn big() -> (C, u64) {
    let mut c = harness(Config {
        strategy: Strategy::Folio,
        ..Config::default()
    });
    let v = mmap(&mut c, "ram", TIB8, Backing::Hugetlb1g);
    (c, v)
}

/// `vfio_iommu_type1_dirty_pages` START → `vfio_dma_bitmap_alloc_all` → `vfio_dma_bitmap_alloc`:
/// `if (npages > DIRTY_BITMAP_PAGES_MAX) return -EINVAL;` — and on failure every bitmap is freed
/// and `dirty_page_tracking` stays false.
#[test]
fn dirty_start_refuses_a_mapping_of_more_than_int_max_pages() {
    let (mut c, v) = big();
    // 2^31 pages of 4 KiB: one more than INT_MAX.
    map(&mut c, v, TIB8, TIB8).unwrap();
    assert_eq!(TIB8 / K4, INT_MAX_PAGES + 1);
    let before = c.snapshot();
    assert_eq!(dirty(&mut c, START), Err(Errno::EINVAL));
    assert!(!c.dirty_tracking());
    assert_eq!(c.snapshot(), before, "a refused START changes nothing");
    assert_eq!(get(&mut c, TIB8, TIB8), Err(Errno::EINVAL), "not tracking");
    // INT_MAX pages exactly is allowed.
    assert_eq!(unmap(&mut c, TIB8, TIB8), Ok(TIB8));
    map(&mut c, v, TIB8, TIB8 - K4).unwrap();
    assert_eq!(dirty(&mut c, START), Ok(()));
    assert!(c.dirty_tracking());
    invariants(&c);
}

/// `vfio_dma_do_map`: after `vfio_pin_map_dma` succeeded,
/// `if (!ret && iommu->dirty_page_tracking) { ret = vfio_dma_bitmap_alloc(dma, pgsize);
/// if (ret) vfio_remove_dma(iommu, dma); }` — pinned, mapped, then unmapped and unpinned again.
#[test]
fn map_while_tracking_refuses_more_than_int_max_pages_and_unwinds() {
    let (mut c, v) = big();
    map(&mut c, v, G1, G1).unwrap();
    assert_eq!(dirty(&mut c, START), Ok(()));
    let before = c.snapshot();
    assert_eq!(map(&mut c, v, TIB8, TIB8), Err(Errno::EINVAL));
    assert_eq!(
        c.snapshot(),
        before,
        "pins, locked memory and leaves are back"
    );
    assert_eq!(c.locked_pages(), G1 / K4);
    assert_eq!(c.dmas().count(), 1);
    // INT_MAX pages while tracking: mapped, and reported.
    map(&mut c, v, TIB8, TIB8 - K4).unwrap();
    assert_eq!(c.dmas().count(), 2);
    assert_eq!(c.locked_pages(), (G1 + TIB8 - K4) / K4);
    let words = get(&mut c, G1, G1).unwrap();
    assert!(
        words.iter().all(|&w| w == u64::MAX),
        "every page of a mapped dma is dirty"
    );
    // Stopped, the same map is fine.
    assert_eq!(dirty(&mut c, STOP), Ok(()));
    assert_eq!(unmap(&mut c, TIB8, TIB8 - K4), Ok(TIB8 - K4));
    map(&mut c, v, TIB8, TIB8).unwrap();
    invariants(&c);
}

/// A mock domain over `[start, end]`.
fn domain(start: u64, end: u64) -> Domain {
    Domain::new(DomainConfig {
        format: Format::Mock,
        pgsize_bitmap: Some(K4 | M2 | G1),
        aperture: Some((start, end)),
    })
    .unwrap()
}

/// `vfio_iommu_type1_detach_group` of the last domain: `vfio_iommu_aper_expand` widens the
/// first and last ranges to `[0, ~0]` (no domain narrows them) and `vfio_iommu_resv_refresh`
/// rebuilds the list as that one range (no reserved region left): GET_INFO reports
/// `[0, 2^64-1]`, not an empty list. A later attach meets `vfio_iommu_aper_conflict`: a mapping
/// outside the new aperture is EINVAL, and the attach changes nothing.
#[test]
fn after_the_last_detach_the_iova_list_is_everything_and_a_conflicting_attach_is_einval() {
    let mut c: C = Container::new(Config::default(), SimMm::new());
    c.attach("d0", domain(0, (1 << 39) - 1), vec![MSI]).unwrap();
    c.detach("d0").unwrap();
    let info = c.get_info(4096).unwrap();
    assert_eq!(info.iova_ranges, vec![(0, u64::MAX)]);
    // No domain: the mapping is recorded (not pinned), anywhere in the list.
    let v = mmap(&mut c, "m", M2, Backing::Page4k);
    let high = 1u64 << 40;
    map(&mut c, v, high, M2).unwrap();
    assert_eq!(c.locked_pages(), 0);
    let before = c.snapshot();
    let r = c.attach("d1", domain(0, (1 << 39) - 1), vec![]);
    assert_eq!(r.unwrap_err().errno(), Errno::EINVAL);
    assert_eq!(c.snapshot(), before, "the refused attach changes nothing");
    assert_eq!(c.get_info(4096).unwrap().iova_ranges, vec![(0, u64::MAX)]);
    // An aperture that holds it: the attach pins and maps it.
    c.attach("d2", domain(0, (1 << 48) - 1), vec![]).unwrap();
    assert_eq!(c.locked_pages(), M2 / K4);
    assert_eq!(
        c.get_info(4096).unwrap().iova_ranges,
        vec![(0, (1 << 48) - 1)]
    );
    invariants(&c);
}

/// Detaching one of two domains keeps the other's aperture and reserved regions.
#[test]
fn detaching_one_of_two_domains_keeps_the_others_limits() {
    let mut c: C = Container::new(Config::default(), SimMm::new());
    c.attach("d0", domain(0, (1 << 39) - 1), vec![MSI]).unwrap();
    c.attach("d1", domain(0, (1 << 48) - 1), vec![]).unwrap();
    c.detach("d1").unwrap();
    assert_eq!(
        c.get_info(4096).unwrap().iova_ranges,
        vec![(0, MSI.0 - 1), (MSI.1 + 1, (1 << 39) - 1)]
    );
}

/// `update_user_bitmap` + `bitmap_clear(dma->bitmap, 0, nbits)`: what the kernels answered in
/// tests/kernel/dirty.trace, lines 42-48. Mapping a (25 pages at bit 0) and b (10 pages at bit
/// 32): the first report is exact; b's own bitmap keeps what the shift moved past its 10 bits
/// (and the caller's word OR'ed into it), so the next reports show 25 pages at bit 32.
#[test]
fn a_mapping_reported_again_shows_the_bits_its_shift_left_behind() {
    let mut c = default_harness();
    let v = mmap(&mut c, "m", M2, Backing::Page4k);
    map(&mut c, v, A, 100 << 10).unwrap();
    map(&mut c, v + (1 << 20), A + (128 << 10), 40 << 10).unwrap();
    assert_eq!(dirty(&mut c, START), Ok(()));
    assert_eq!(get(&mut c, A, 168 << 10), Ok(vec![0x3ff_01ff_ffff]));
    assert_eq!(get(&mut c, A, 168 << 10), Ok(vec![0x01ff_ffff_01ff_ffff]));
    assert_eq!(
        get(&mut c, A + (128 << 10), 40 << 10),
        Ok(vec![0x01ff_ffff_01ff_ffff])
    );
    // An unmap with GET_DIRTY_BITMAP reports the same way, from its own start (b at bit 2).
    let r = c
        .unmap_dma(&UnmapDma {
            argsz: 48,
            flags: 1,
            iova: A + (120 << 10),
            size: 48 << 10,
            bitmap: Some(BitmapArg {
                pgsize: K4,
                size: 8,
            }),
        })
        .unwrap();
    assert_eq!(r.size, 40 << 10);
    // b's bitmap [0,25) ∪ [32,57), shifted by 2: [2,27) ∪ [34,59).
    assert_eq!(r.bitmap, Some(vec![0x07ff_fffc_07ff_fffc]));
    // STOP frees the bitmaps; START gives fresh ones.
    assert_eq!(dirty(&mut c, STOP), Ok(()));
    assert_eq!(dirty(&mut c, START), Ok(()));
    assert_eq!(get(&mut c, A, 100 << 10), Ok(vec![0x1ff_ffff]));
    invariants(&c);
}
