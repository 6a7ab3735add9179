//! The `kernel=3.11` profile against the 2013 driver (drivers/vfio/vfio_iommu_type1.c as of
//! Linux 3.11, the version whose `vfio_remove_dma_overlap` takes `size_t *size`; spec §3.7).
//! Each test names the 2013 code path it follows.

mod common;

use common::*;
use iommu::{Domain, DomainConfig, Format};
use type1::mm::sim::SimMm;
use type1::mm::{Backing, PageSource};
use type1::uapi::{MAP_FLAG_READ, UNMAP_FLAG_ALL};
use type1::{Config, Container, Errno, KernelProfile, MapDma, UnmapDma};

fn cfg(kernel: KernelProfile, v2: bool) -> Config {
    Config {
        v2,
        kernel,
        ..Config::default()
    }
}

/// A 3.11 container (type1: 3.11 had no type1v2) with one x86_64 domain whose group reports the
/// MSI window as reserved (which 3.11 never looked at).
fn seed() -> C {
    x86(cfg(KernelProfile::V3_11, false))
}

fn x86(cfg: Config) -> C {
    let mut c = Container::new(cfg, SimMm::new());
    let d = Domain::new(DomainConfig::new(Format::X86_64 { levels: 4 })).unwrap();
    c.attach("d0", d, vec![MSI]).unwrap();
    c
}

fn dmas(c: &C) -> Vec<(u64, u64)> {
    c.dmas().map(|d| (d.iova, d.size)).collect()
}

fn clean(c: &C) {
    assert_eq!(c.check_invariants(), Ok(()));
}

/// `vfio_remove_dma_overlap`, low-end case: `vfio_unmap_unpin` asks `iommu_unmap` for one page at
/// the entry's start, the 2M leaf goes whole and `*size` becomes 2M; the entry is re-inserted
/// from iova + 2M.
#[test]
fn a_4k_unmap_at_the_start_of_a_hugetlb_mapping_removes_a_whole_2m_leaf() {
    let mut c = seed();
    let v = mmap(&mut c, "h", 4 << 20, Backing::Hugetlb2m);
    map(&mut c, v, A, 4 << 20).unwrap();
    assert_eq!((leaves(&c, "d0", M2), c.locked_pages()), (2, 1024));
    assert_eq!(unmap(&mut c, A, K4), Ok(M2));
    assert_eq!(leaves(&c, "d0", M2), 1);
    assert_eq!(leaves(&c, "d0", K4), 0);
    assert_eq!(c.mm().pinned_pages(), 512);
    assert_eq!(c.locked_pages(), 512);
    assert_eq!(dmas(&c), vec![(A + M2, M2)]);
    clean(&c);
}

/// `vfio_remove_dma_overlap`, split case: the lower entry is resized in place to `offset`, a new
/// one holds the rest; `vfio_unmap_unpin` walks the 4 pages one `iommu_unmap` at a time.
#[test]
fn unmapping_the_middle_of_a_4k_mapping_splits_it_in_two() {
    let mut c = seed();
    let v = mmap(&mut c, "m", 64 << 10, Backing::Page4k);
    map(&mut c, v, A, 64 << 10).unwrap();
    let calls = c.domain("d0").unwrap().stats().unmap_calls;
    assert_eq!(unmap(&mut c, A + (24 << 10), 16 << 10), Ok(16 << 10));
    assert_eq!(c.domain("d0").unwrap().stats().unmap_calls - calls, 4);
    assert_eq!(dmas(&c), vec![(A, 24 << 10), (A + (40 << 10), 24 << 10)]);
    let upper = c.dmas().nth(1).unwrap();
    assert_eq!(upper.vaddr, v + (40 << 10));
    assert_eq!(c.mm().pinned_pages(), 12);
    assert_eq!(c.locked_pages(), 12);
    assert_eq!(c.dmas().map(|d| d.locked_vm).collect::<Vec<_>>(), [6, 6]);
    clean(&c);
    // The two halves unmap like any entry; nothing stays pinned or charged.
    assert_eq!(unmap(&mut c, A, 64 << 10), Ok(48 << 10));
    assert_eq!((c.mm().pinned_pages(), c.locked_pages()), (0, 0));
    assert_eq!(c.dmas().count(), 0);
}

/// `vfio_dma_do_map`: "Check if we abut a region below" (`tmp->prot == prot && tmp->vaddr +
/// tmp->size == vaddr`) grows the entry below in place; "abut a region above" absorbs it.
#[test]
fn adjacent_maps_with_equal_permissions_and_contiguous_vaddrs_merge() {
    let mut c = seed();
    let v = mmap(&mut c, "m", 12 << 12, Backing::Page4k);
    map(&mut c, v, A, K4).unwrap();
    map(&mut c, v + K4, A + K4, K4).unwrap();
    assert_eq!(dmas(&c), vec![(A, 2 * K4)]);
    // Above and below at once: the middle page joins both neighbours into one entry.
    map(&mut c, v + 3 * K4, A + 3 * K4, K4).unwrap();
    assert_eq!(dmas(&c), vec![(A, 2 * K4), (A + 3 * K4, K4)]);
    map(&mut c, v + 2 * K4, A + 2 * K4, K4).unwrap();
    assert_eq!(dmas(&c), vec![(A, 4 * K4)]);
    assert_eq!(c.dmas().next().unwrap().locked_vm, 4);
    assert_eq!(c.locked_pages(), 4);
    clean(&c);
    // Under 7.2 the same maps are four entries.
    let mut m = x86(cfg(KernelProfile::V7_2, true));
    let v = mmap(&mut m, "m", 4 << 12, Backing::Page4k);
    for i in [0, 1, 3, 2] {
        map(&mut m, v + i * K4, A + i * K4, K4).unwrap();
    }
    assert_eq!(m.dmas().count(), 4);
}

/// The same merge checks refuse a neighbour whose vaddr is not contiguous or whose `prot`
/// differs.
#[test]
fn adjacent_maps_do_not_merge_when_vaddrs_are_apart_or_permissions_differ() {
    let mut c = seed();
    let v = mmap(&mut c, "m", 16 << 12, Backing::Page4k);
    map(&mut c, v, A, K4).unwrap();
    map(&mut c, v + 2 * K4, A + K4, K4).unwrap();
    assert_eq!(dmas(&c), vec![(A, K4), (A + K4, K4)]);
    map(&mut c, v + 3 * K4, A + 2 * K4, K4).unwrap();
    assert_eq!(dmas(&c), vec![(A, K4), (A + K4, 2 * K4)]);
    let r = c.map_dma(&MapDma {
        argsz: 32,
        flags: MAP_FLAG_READ,
        vaddr: v + 4 * K4,
        iova: A + 3 * K4,
        size: K4,
    });
    assert!(r.is_ok());
    assert_eq!(dmas(&c), vec![(A, K4), (A + K4, 2 * K4), (A + 3 * K4, K4)]);
    clean(&c);
}

/// 3.11's `vfio_dma_do_map` has no IOVA-range check (no `vfio_iommu_iova_dma_valid`): the MSI
/// window maps; 7.2 refuses it with EINVAL.
#[test]
fn the_msi_window_maps_under_3_11_and_is_einval_under_7_2() {
    let mut c = seed();
    let v = mmap(&mut c, "m", 1 << 20, Backing::Page4k);
    assert_eq!(map(&mut c, v, MSI.0, 1 << 20), Ok(()));
    assert_eq!(c.locked_pages(), 256);
    let mut m = x86(cfg(KernelProfile::V7_2, true));
    let v = mmap(&mut m, "m", 1 << 20, Backing::Page4k);
    assert_eq!(map(&mut m, v, MSI.0, 1 << 20), Err(Errno::EINVAL));
    assert_eq!(m.locked_pages(), 0);
}

/// `vfio_iommu_type1_ioctl(VFIO_IOMMU_UNMAP_DMA)`: `if (unmap.argsz < minsz || unmap.flags)
/// return -EINVAL;`.
#[test]
fn unmap_all_is_einval_under_3_11() {
    let mut c = seed();
    let v = mmap(&mut c, "m", 8 << 12, Backing::Page4k);
    map(&mut c, v, A, 8 << 12).unwrap();
    let r = c.unmap_dma(&UnmapDma::all());
    assert_eq!(r.unwrap_err().errno(), Errno::EINVAL);
    let mut flagged = UnmapDma::range(A, 8 << 12);
    flagged.flags = UNMAP_FLAG_ALL;
    assert_eq!(c.unmap_dma(&flagged).unwrap_err().errno(), Errno::EINVAL);
    assert_eq!((c.dmas().count(), c.locked_pages()), (1, 8));
    // Size 0 is EINVAL too (`!unmap->size`).
    assert_eq!(unmap(&mut c, A, 0), Err(Errno::EINVAL));
}

/// `vfio_unmap_unpin`: `iommu_unmap(domain, iova, PAGE_SIZE)` inside a 2M leaf removes the whole
/// leaf and `vfio_unpin_pages(phys >> PAGE_SHIFT, unmapped >> PAGE_SHIFT)` counts 512 pages from
/// the mid-leaf pfn. The reported size is 2M, a named warning says why, and the invariant checker
/// names what broke.
#[test]
fn a_4k_unmap_in_the_middle_of_a_2m_leaf_reports_2m_and_the_warning() {
    let mut c = seed();
    let v = mmap(&mut c, "h", 4 << 20, Backing::Hugetlb2m);
    map(&mut c, v, A, 4 << 20).unwrap();
    c.take_warnings();
    assert_eq!(
        c.unmap_dma(&UnmapDma::range(A + K4, K4)).map(|r| r.size),
        Ok(M2)
    );
    let w = c.take_warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].starts_with("3.11 unmap inside a large leaf"),
        "{}",
        w[0]
    );
    assert!(
        w[0].contains("1 page(s) of the leaf stay pinned"),
        "{}",
        w[0]
    );
    assert!(w[0].contains("1 page(s) past it are released"), "{}", w[0]);
    // The split: [A, 4K) and [A + 4K + 2M, 2M - 4K); the IOMMU has only the second 2M leaf.
    assert_eq!(dmas(&c), vec![(A, K4), (A + M2 + K4, M2 - K4)]);
    assert_eq!(leaves(&c, "d0", M2), 1);
    assert_eq!(c.locked_pages(), 512);
    // pfn 0 of the first leaf keeps its pin, pfn 0 of the second lost its one.
    assert_eq!(c.mm().pinned_pages(), 512);
    let v = c.check_invariants().unwrap_err();
    assert!(
        v.iter()
            .any(|m| m.starts_with("kernel 3.11 broke invariant 5")),
        "{v:?}"
    );
    // Unmapping the rest walks over the hole with WARN_ON(!phys) and does not panic.
    let r = c.unmap_dma(&UnmapDma::range(A, 4 << 20)).unwrap();
    assert!(r.size >= M2, "{}", r.size);
    assert!(c
        .take_warnings()
        .iter()
        .any(|m| m.starts_with("WARN_ON(!phys) in vfio_unmap_unpin")));
    assert_eq!(c.dmas().count(), 0);
}

/// `vfio_pin_pages` stops a run before the page that would pass RLIMIT_MEMLOCK (`locked_vm + i +
/// 1 > limit`); the next run's first page fails with ENOMEM, and the `out:` unwind removes what
/// the request mapped.
#[test]
fn memlock_cuts_the_run_and_the_next_run_unwinds_the_map() {
    let mut c = x86(Config {
        memlock: Some(6 << 12),
        ..cfg(KernelProfile::V3_11, false)
    });
    let v = mmap(&mut c, "m", 16 << 12, Backing::Page4k);
    map(&mut c, v, A, 4 << 12).unwrap();
    assert_eq!(
        map(&mut c, v + (4 << 12), A + (4 << 12), 4 << 12),
        Err(Errno::ENOMEM)
    );
    // The first request's entry is intact; the second left nothing (it would have merged).
    assert_eq!(dmas(&c), vec![(A, 4 << 12)]);
    assert_eq!((c.locked_pages(), c.mm().pinned_pages()), (4, 4));
    assert!(c
        .take_warnings()
        .iter()
        .any(|w| w.contains("RLIMIT_MEMLOCK")));
    clean(&c);
}

/// `vfio_dma_do_map`'s "Verify pages are not already mapped": an orphan leaf left by an unmap
/// inside a large leaf makes a later map of that IOVA EBUSY (no entry overlaps, so not EEXIST).
#[test]
fn a_leaf_left_behind_makes_a_later_map_ebusy() {
    let mut c = seed();
    let v = mmap(&mut c, "h", 4 << 20, Backing::Hugetlb2m);
    map(&mut c, v, A, 4 << 20).unwrap();
    // The high-end case from mid-leaf: the entry shrinks to [A, 4K) ... then the walk removed
    // the leaf at A + 2M too; here remove a middle piece so a leaf stays without an entry.
    c.unmap_dma(&UnmapDma::range(A + K4, K4)).unwrap();
    // [A + 2M, A + 2M + 4K) is translated by the remaining leaf but held by no entry.
    let w = mmap(&mut c, "m", K4, Backing::Page4k);
    let r = c.map_dma(&MapDma::rw(w, A + M2, K4));
    assert_eq!(r.unwrap_err().errno(), Errno::EBUSY);
}

/// 3.11's VFIO core had no driver for `VFIO_TYPE1v2_IOMMU`: `VFIO_SET_IOMMU` answers ENODEV;
/// `VFIO_CHECK_EXTENSION` knows TYPE1 only; GET_INFO has flags 0 and the domain's bitmap; there
/// is no DIRTY_PAGES ioctl (ENOTTY).
#[test]
fn what_3_11_did_not_have() {
    let e = KernelProfile::V3_11.set_iommu(true).unwrap_err();
    assert_eq!(e.errno(), Errno::ENODEV);
    assert!(e.to_string().contains("kernel=3.11"), "{e}");
    assert!(KernelProfile::V3_11.set_iommu(false).is_ok());
    assert!(KernelProfile::V7_2.set_iommu(true).is_ok());
    let mut c = seed();
    assert_eq!(c.check_extension(1), 1);
    for ext in [3, 9, 10] {
        assert_eq!(c.check_extension(ext), 0, "extension {ext}");
    }
    let info = c.get_info(4096).unwrap();
    assert_eq!((info.flags, info.cap_offset), (0, 0));
    assert_eq!(info.iova_pgsizes, K4 | M2 | G1);
    assert_eq!(c.get_info(15).unwrap_err().errno(), Errno::EINVAL);
    let e = c.dirty_pages(8, 1, None).unwrap_err();
    assert_eq!(e.errno(), Errno::ENOTTY);
    // One domain per container.
    let d = Domain::new(DomainConfig::new(Format::X86_64 { levels: 4 })).unwrap();
    assert_eq!(
        c.attach("d1", d, vec![]).unwrap_err().errno(),
        Errno::EINVAL
    );
    assert_eq!(c.domains().len(), 1);
}

/// `vfio_dma_do_map` validates in its own order: wrap is EINVAL (not 7.2's EOVERFLOW), and a map
/// ending exactly at 2^64 computes `end = 0`, so its loop never runs: success, nothing mapped.
#[test]
fn wrap_is_einval_and_a_map_ending_at_2_to_the_64_maps_nothing() {
    let mut c = seed();
    let v = mmap(&mut c, "m", 8 << 12, Backing::Page4k);
    assert_eq!(
        map(&mut c, v, u64::MAX - K4 + 1, 2 * K4),
        Err(Errno::EINVAL)
    );
    let top = u64::MAX - K4 + 1;
    assert_eq!(
        c.map_dma(&MapDma::rw(v, top, K4)).map_err(|e| e.errno()),
        Ok(())
    );
    assert_eq!(c.dmas().count(), 0);
    assert!(c.take_warnings()[0].contains("loop `iova < end` never runs"));
    let mut m = x86(cfg(KernelProfile::V7_2, true));
    let v = mmap(&mut m, "m", 8 << 12, Backing::Page4k);
    assert_eq!(
        map(&mut m, v, u64::MAX - K4 + 1, 2 * K4),
        Err(Errno::EOVERFLOW)
    );
}

/// `vfio_dma_do_unmap` sums what each `vfio_remove_dma_overlap` removed, across entries: an unmap
/// over two entries and a gap reports their bytes, and releasing the container
/// (`vfio_iommu_type1_release`) leaves nothing pinned.
#[test]
fn unmap_over_several_entries_and_release_leave_nothing() {
    let mut c = seed();
    let v = mmap(&mut c, "m", 64 << 12, Backing::Page4k);
    map(&mut c, v, A, 4 << 12).unwrap();
    map(&mut c, v + (10 << 12), A + (8 << 12), 4 << 12).unwrap();
    assert_eq!(unmap(&mut c, A + (2 << 12), 8 << 12), Ok(4 << 12));
    assert_eq!(dmas(&c), vec![(A, 2 << 12), (A + (10 << 12), 2 << 12)]);
    clean(&c);
    c.detach("d0").unwrap();
    assert_eq!((c.mm().pinned_pages(), c.locked_pages()), (0, 0));
    assert_eq!(c.dmas().count(), 0);
}

mod merge_split_model {
    //! `vfio_dma_do_map`'s merges and `vfio_remove_dma_overlap`'s splits against a per-page
    //! reference: on 4K leaves, 3.11's entries are always the maximal runs of pages contiguous
    //! in IOVA and vaddr with equal permissions; a map overlapping any mapped page is EEXIST;
    //! an unmap reports the mapped bytes of its range.

    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    #[derive(Clone, Debug)]
    enum Op {
        Map {
            iova: u64,
            vaddr: u64,
            n: u64,
            ro: bool,
        },
        Unmap {
            iova: u64,
            n: u64,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u64..32, 0u64..40, 1u64..8, prop::bool::weighted(0.2))
                .prop_map(|(iova, vaddr, n, ro)| Op::Map { iova, vaddr, n, ro }),
            (0u64..40, 1u64..12).prop_map(|(iova, n)| Op::Unmap { iova, n }),
        ]
    }

    /// The maximal runs of `pages` (iova page → (vaddr page, read-only)) as `(iova, size)`.
    fn runs(pages: &BTreeMap<u64, (u64, bool)>) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64, u64, bool)> = Vec::new();
        for (&i, &(v, ro)) in pages {
            match out.last_mut() {
                Some((s, n, sv, sro)) if *s + *n == i && *sv + *n == v && *sro == ro => *n += 1,
                _ => out.push((i, 1, v, ro)),
            }
        }
        out.into_iter()
            .map(|(s, n, _, _)| (A + s * K4, n * K4))
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]
        #[test]
        fn entries_are_the_maximal_runs(ops in prop::collection::vec(op(), 1..40)) {
            let mut c = Container::new(cfg(KernelProfile::V3_11, false), SimMm::new());
            c.attach("d0", mock_domain(K4), vec![]).unwrap();
            let base = mmap(&mut c, "m", 48 * K4, Backing::Page4k);
            let mut pages: BTreeMap<u64, (u64, bool)> = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Map { iova, vaddr, n, ro } => {
                        let busy = (iova..iova + n).any(|p| pages.contains_key(&p));
                        let r = c.map_dma(&MapDma {
                            argsz: 32,
                            flags: if ro { MAP_FLAG_READ } else { 3 },
                            vaddr: base + vaddr * K4,
                            iova: A + iova * K4,
                            size: n * K4,
                        });
                        if busy {
                            prop_assert_eq!(r.map_err(|e| e.errno()), Err(Errno::EEXIST));
                        } else {
                            prop_assert!(r.is_ok(), "{:?}", r);
                            for k in 0..n {
                                pages.insert(iova + k, (vaddr + k, ro));
                            }
                        }
                    }
                    Op::Unmap { iova, n } => {
                        let gone: Vec<u64> = pages.range(iova..iova + n).map(|(&p, _)| p).collect();
                        let r = c.unmap_dma(&UnmapDma::range(A + iova * K4, n * K4)).unwrap();
                        prop_assert_eq!(r.size, gone.len() as u64 * K4);
                        for p in gone {
                            pages.remove(&p);
                        }
                    }
                }
                prop_assert_eq!(dmas(&c), runs(&pages));
                prop_assert_eq!(c.mm().pinned_pages(), pages.len() as u64);
                prop_assert_eq!(c.locked_pages(), pages.len() as u64);
                prop_assert_eq!(c.check_invariants(), Ok(()));
                prop_assert!(c.take_warnings().iter().all(|w| !w.starts_with("WARN")));
            }
        }
    }
}

mod unwind {
    //! `vfio_dma_do_map`'s `out_unpin:` / `out:` unwind under fault injection: fail the Nth pin
    //! or IOMMU `map_pages` for N = 1, 2, … until none fires; after every failed map the
    //! state equals the state before (an entry the map had merged into is cut back to its
    //! old size), no pin leaks and the invariants hold.

    use iommu::FaultPoint;

    use super::*;

    /// THP 4M, scattered 4K ×64, a 64K BAR, hugetlb 4M; two entries in place.
    fn scenario() -> (C, [u64; 4]) {
        let mut c = Container::new(cfg(KernelProfile::V3_11, false), SimMm::new());
        let f = c.faults();
        c.mm_mut().set_faults(Some(f));
        let thp = mmap(&mut c, "thp", 4 << 20, Backing::Thp);
        let sc = mmap_spec(&mut c, scattered("sc", 64 * K4, Backing::Page4k, 5));
        let bar = mmap(&mut c, "bar", 64 << 10, Backing::Pfnmap);
        let htlb = mmap(&mut c, "htlb", 4 << 20, Backing::Hugetlb2m);
        let d = Domain::new(DomainConfig::new(Format::X86_64 { levels: 4 })).unwrap();
        c.attach("d0", d, vec![]).unwrap();
        c.map_dma(&MapDma::rw(htlb, 0x8000_0000, 4 << 20)).unwrap();
        c.map_dma(&MapDma::rw(sc, 0x9000_0000, 16 * K4)).unwrap();
        (c, [thp, sc, bar, htlb])
    }

    fn release(c: &mut C) {
        c.detach("d0").unwrap();
        assert_eq!((c.mm().pinned_pages(), c.locked_pages()), (0, 0));
    }

    fn fail_nth(name: &str, op: impl Fn(&mut C, [u64; 4]) -> Result<(), type1::Error>) -> u64 {
        for n in 1..10_000 {
            let (mut c, v) = scenario();
            let before = c.snapshot();
            let pins = c.mm().pinned_pages();
            c.faults().arm(n, &[FaultPoint::Pin, FaultPoint::IommuMap]);
            let r = op(&mut c, v);
            let fired = c.faults().fired();
            c.faults().disarm();
            if !fired {
                assert!(r.is_ok(), "{name}: failed without an injected fault: {r:?}");
                clean(&c);
                release(&mut c);
                return n - 1;
            }
            if r.is_ok() {
                // A pin failing after a run's first page only ends the run (`vfio_pin_pages`:
                // `if (ret) break;`); the next run pins it again.
                clean(&c);
                release(&mut c);
                continue;
            }
            assert_eq!(
                c.snapshot(),
                before,
                "{name}: N={n} changed the state ({r:?})"
            );
            assert_eq!(c.mm().pinned_pages(), pins, "{name}: N={n} leaked pins");
            clean(&c);
            release(&mut c);
        }
        panic!("{name}: still failing after 10000 points");
    }

    #[test]
    fn every_failed_map_changes_nothing() {
        let thp = fail_nth("thp", |c, v| {
            c.map_dma(&MapDma::rw(v[0], 0x4000_0000, 4 << 20))
        });
        // Scattered pages: one run per page; the map merges into the entry below first.
        let merged = fail_nth("merge below", |c, v| {
            c.map_dma(&MapDma::rw(v[1] + 16 * K4, 0x9000_0000 + 16 * K4, 32 * K4))
        });
        let bar = fail_nth("bar", |c, v| {
            c.map_dma(&MapDma::rw(v[2], 0xa000_0000, 64 << 10))
        });
        assert!(thp >= 2, "{thp}");
        assert!(merged >= 32, "{merged}");
        assert!(bar >= 16, "{bar}");
    }
}
