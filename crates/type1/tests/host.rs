//! The engine over real memory (`mm::host::HostMm`): real pfns from pagemap, real huge pages,
//! real `mlock`. Needs root with CAP_SYS_ADMIN. Tests that need huge pages skip (with a reason)
//! when the machine has none reserved, except under CI=true, where they fail.
//!
//! Every test holds `support_host::serial()` (they all watch `VmLck` of this process and share
//! the huge-page pool); the engine tests run in `with_host`, which checks that `VmLck` is back
//! where it started once everything is unmapped.

mod support_host;

use iommu::{Domain, DomainConfig, Format};
use support_host::{kpageflags, pagemap_pfns, serial, skip, vmlck, G1, K4, KPF_HEAD, KPF_HUGE};
use support_host::{KPF_THP, M2};
use type1::container::{MAP_FLAG_READ, MAP_FLAG_WRITE};
use type1::mm::host::HostMm;
use type1::mm::{Backing, MemError, Memory, MmapSpec, PageAudit, PageSource};
use type1::sys;
use type1::{Config, Container, Errno, MapDma, Strategy, UnmapDma};

/// Run `test` on a fresh container over real memory (a domain `d0` attached), holding
/// `serial()`; `test` gets `VmLck` as it was before. Once the container is dropped, `VmLck` must
/// be back there.
fn with_host(test: impl FnOnce(&mut Container<HostMm>, u64)) {
    let _g = serial();
    let before = vmlck();
    let mut c = host_container();
    test(&mut c, before);
    drop(c);
    assert_eq!(vmlck(), before, "VmLck after the container is dropped");
}

/// A region of real memory, faulted in.
fn mmap(c: &mut Container<HostMm>, name: &str, size: u64, backing: Backing) -> u64 {
    c.mm_mut()
        .mmap(&MmapSpec::new(name, size, backing))
        .unwrap()
}

fn host_container() -> Container<HostMm> {
    let mm = HostMm::new().expect("HostMm::new (run as root with CAP_SYS_ADMIN)");
    let mut c = Container::new(Config::default(), mm);
    let d = Domain::new(DomainConfig::new(Format::X86_64 { levels: 4 })).unwrap();
    let resv = d.reserved_regions();
    c.attach("d0", d, resv).unwrap();
    c
}

/// Leaves of each size the domain holds in `[iova, iova + size)`.
fn leaves_in(c: &Container<HostMm>, iova: u64, size: u64) -> (u64, u64, u64) {
    let (mut k4, mut m2, mut g1) = (0, 0, 0);
    c.domain("d0").unwrap().for_each_leaf(&mut |l| {
        if l.iova >= iova && l.iova < iova + size {
            match l.size {
                K4 => k4 += 1,
                M2 => m2 += 1,
                G1 => g1 += 1,
                s => panic!("leaf of size {s:#x}"),
            }
        }
    });
    (k4, m2, g1)
}

/// The engine's translation of every page equals the pfn pagemap reports for its vaddr.
fn assert_pfns_match(c: &Container<HostMm>, vaddr: u64, iova: u64, size: u64) {
    let pfns = pagemap_pfns(vaddr, size / K4);
    let d = c.domain("d0").unwrap();
    for (i, pfn) in pfns.iter().enumerate() {
        let pfn = pfn.expect("pinned page not present");
        assert_ne!(pfn, 0);
        let off = i as u64 * K4;
        assert_eq!(
            d.iova_to_phys(iova + off),
            Some(pfn * K4),
            "page {i} (vaddr {:#x})",
            vaddr + off
        );
    }
}

fn unmap_all_and_check(c: &mut Container<HostMm>) {
    c.unmap_dma(&UnmapDma::all()).unwrap();
    assert_eq!(c.mm().pinned_pages(), 0);
    assert_eq!(c.mm().locked_pages(), 0);
    assert_eq!(c.locked_pages(), 0);
    assert!(c.mm().violations().is_empty(), "{:?}", c.mm().violations());
}

#[test]
fn hugetlb_2m_region_maps_with_2m_leaves_at_pagemap_pfns() {
    with_host(|c, before| {
        let size = 16 * M2;
        let vaddr = match c
            .mm_mut()
            .mmap(&MmapSpec::new("h", size, Backing::Hugetlb2m))
        {
            Ok(v) => v,
            Err(e) => return skip(&format!("no 2M huge pages: {e}")),
        };
        assert_eq!(vaddr % M2, 0);
        let pfns = pagemap_pfns(vaddr, size / K4);
        for b in 0..size / M2 {
            let pfn = pfns[(b * 512) as usize].unwrap();
            assert_eq!(pfn % 512, 0, "hugetlb page {b} not 2M-aligned physically");
            let f = kpageflags(pfn);
            assert!(f & KPF_HUGE != 0 && f & KPF_HEAD != 0, "kpageflags {f:#x}");
        }
        let iova = 1 << 32;
        for (strategy, want) in [
            (Strategy::Contiguous, (0, 16, 0)),
            (Strategy::Folio, (0, 16, 0)),
            (Strategy::PerPage, (8192, 0, 0)),
        ] {
            c.set_strategy(strategy);
            c.map_dma(&MapDma::rw(vaddr, iova, size)).unwrap();
            let during = vmlck();
            let leaves = leaves_in(c, iova, size);
            eprintln!(
                "hugetlb-2m {:?}: leaves (4K, 2M, 1G) = {leaves:?}; VmLck before {before} kB, \
                 mapped {during} kB; pagemap reads {}",
                strategy,
                c.mm().pagemap_reads()
            );
            assert_eq!(leaves, want, "{strategy:?}");
            // mlock does not set VM_LOCKED on hugetlb vmas (mlock_fixup: hugetlb pages are never
            // swapped), so VmLck does not move; HostMm still holds its lock records.
            assert_eq!(
                during, before,
                "the kernel does not count hugetlb pages in VmLck"
            );
            assert_eq!(c.mm().locked_pages(), size / K4);
            assert_eq!(c.locked_pages(), size / K4);
            assert_eq!(c.mm().pinned_pages(), size / K4);
            assert_pfns_match(c, vaddr, iova, size);
            unmap_all_and_check(c);
            assert_eq!(vmlck(), before, "VmLck after unmap-all ({strategy:?})");
        }
    });
}

#[test]
fn hugetlb_1g_page_maps_with_one_1g_leaf() {
    with_host(|c, before| {
        let vaddr = match c.mm_mut().mmap(&MmapSpec::new("g", G1, Backing::Hugetlb1g)) {
            Ok(v) => v,
            Err(e) => return skip(&format!("no 1G huge page: {e}")),
        };
        let iova = 1 << 34;
        for strategy in [Strategy::Contiguous, Strategy::Folio] {
            c.set_strategy(strategy);
            c.map_dma(&MapDma::rw(vaddr, iova, G1)).unwrap();
            let leaves = leaves_in(c, iova, G1);
            eprintln!(
                "hugetlb-1g {strategy:?}: leaves (4K, 2M, 1G) = {leaves:?}, pin calls so far {}",
                c.stats().pin_calls
            );
            assert_eq!(leaves, (0, 0, 1));
            assert_eq!(vmlck(), before, "hugetlb is not counted in VmLck");
            assert_eq!(c.mm().locked_pages(), G1 / K4);
            assert_eq!(
                c.domain("d0").unwrap().iova_to_phys(iova + 12345 * K4),
                c.mm().vaddr_to_phys(vaddr + 12345 * K4)
            );
            assert_eq!(c.mm().folio_size(vaddr + 5 * M2), Some(G1));
            unmap_all_and_check(c);
            assert_eq!(vmlck(), before);
        }
    });
}

#[test]
fn thp_region_gets_2m_leaves_where_the_kernel_gave_huge_pages() {
    with_host(|c, before| {
        let size = 32 * M2;
        let vaddr = mmap(c, "t", size, Backing::Thp);
        assert_eq!(vaddr % M2, 0, "THP regions are 2M-aligned");
        let iova = 1 << 33;
        for strategy in [Strategy::Contiguous, Strategy::Folio] {
            c.set_strategy(strategy);
            c.map_dma(&MapDma::rw(vaddr, iova, size)).unwrap();
            let pfns: Vec<u64> = pagemap_pfns(vaddr, size / K4)
                .into_iter()
                .map(Option::unwrap)
                .collect();
            let mut huge_blocks = 0;
            let d = c.domain("d0").unwrap();
            for b in 0..(size / M2) as usize {
                let blk = &pfns[b * 512..(b + 1) * 512];
                let f = kpageflags(blk[0]);
                let thp = f & KPF_THP != 0 && f & KPF_HEAD != 0;
                // 512 consecutive, 2M-aligned pfns: what the kernel's split can map with one
                // leaf (true of every THP, and rarely of 4K pages by chance).
                let one_block =
                    blk[0].is_multiple_of(512) && blk.windows(2).all(|w| w[1] == w[0] + 1);
                let biova = iova + b as u64 * M2;
                let leaf = d.translate(biova).unwrap();
                if thp {
                    huge_blocks += 1;
                    assert!(
                        one_block,
                        "block {b}: a THP whose pfns are not one 2M block"
                    );
                    assert_eq!(leaf.size, M2, "block {b} is a THP: want one 2M leaf");
                } else if !one_block {
                    for i in 0..512 {
                        assert_eq!(d.translate(biova + i * K4).unwrap().size, K4, "block {b}");
                    }
                }
                assert_eq!(
                    c.mm().folio_size(vaddr + b as u64 * M2),
                    Some(if thp { M2 } else { K4 })
                );
            }
            let leaves = leaves_in(c, iova, size);
            eprintln!(
                "thp {strategy:?}: {huge_blocks} of {} blocks are THPs (kpageflags); leaves \
                 (4K, 2M, 1G) = {leaves:?}; VmLck mapped {} kB",
                size / M2,
                vmlck()
            );
            assert_eq!(leaves.1 * M2 + leaves.0 * K4, size);
            assert!(leaves.1 >= huge_blocks);
            assert_pfns_match(c, vaddr, iova, size);
            unmap_all_and_check(c);
            assert_eq!(vmlck(), before);
            if huge_blocks == 0 {
                skip(
                    "the kernel gave no transparent huge page (THP disabled or memory fragmented)",
                );
            }
        }
    });
}

#[test]
fn page4k_region_has_no_thp_and_pins_per_page() {
    with_host(|c, before| {
        let size = 4 * M2;
        let vaddr = mmap(c, "a", size, Backing::Page4k);
        for (i, p) in pagemap_pfns(vaddr, size / K4).into_iter().enumerate() {
            let f = kpageflags(p.unwrap());
            assert_eq!(f & KPF_THP, 0, "page {i} of a 4k region is in a THP");
        }
        let iova = 1 << 35;
        c.map_dma(&MapDma::rw(vaddr, iova, size)).unwrap();
        assert_eq!(vmlck() - before, size >> 10);
        assert_pfns_match(c, vaddr, iova, size);
        let leaves = leaves_in(c, iova, size);
        eprintln!("4k: leaves (4K, 2M, 1G) = {leaves:?}");
        assert_eq!(leaves.0 * K4 + leaves.1 * M2, size);
        unmap_all_and_check(c);
    });
}

#[test]
fn page_mapped_at_two_iovas_is_pinned_twice_and_unlocked_after_the_last_unmap() {
    with_host(|c, before| {
        let size = 64 * K4;
        let vaddr = mmap(c, "a", size, Backing::Page4k);
        let (i1, i2) = (1u64 << 36, (1u64 << 36) + M2);
        c.map_dma(&MapDma::rw(vaddr, i1, size)).unwrap();
        c.map_dma(&MapDma::rw(vaddr, i2, size)).unwrap();
        assert_eq!(c.mm().pinned_pages(), 128, "two pins per page");
        assert_eq!(
            c.locked_pages(),
            128,
            "the account counts both (as the kernel)"
        );
        assert_eq!(vmlck() - before, size >> 10, "but the page is locked once");
        assert!(c.mm().pin_ranges().iter().all(|&(_, _, n)| n == 2));
        c.unmap_dma(&UnmapDma::range(i1, size)).unwrap();
        assert_eq!(c.mm().pinned_pages(), 64);
        assert_eq!(vmlck() - before, size >> 10, "still pinned through i2");
        c.unmap_dma(&UnmapDma::range(i2, size)).unwrap();
        assert_eq!(vmlck(), before);
        assert!(c.mm().violations().is_empty());
    });
}

#[test]
fn read_only_region_refuses_a_write_pin_like_gup() {
    with_host(|c, _| {
        let mut spec = MmapSpec::new("ro", 16 * K4, Backing::Page4k);
        spec.writable = false;
        let vaddr = c.mm_mut().mmap(&spec).unwrap();
        let iova = 1 << 37;
        let e = c.map_dma(&MapDma::rw(vaddr, iova, 16 * K4)).unwrap_err();
        assert_eq!(e.errno(), Errno::EFAULT);
        assert!(e.to_string().contains("read-only"), "{e}");
        // A device-read-only map pins the pages the read fault gave: the shared zero page,
        // which is reserved (mapped, never charged, never unpinned), as in the kernel.
        let ro = MapDma {
            argsz: 32,
            flags: MAP_FLAG_READ,
            vaddr,
            iova,
            size: 16 * K4,
        };
        c.map_dma(&ro).unwrap();
        let zero = pagemap_pfns(vaddr, 1)[0].unwrap();
        eprintln!(
            "read-only: zero page pfn {zero:#x}, kpageflags {:#x}; charged {} pages",
            kpageflags(zero),
            c.locked_pages()
        );
        assert_pfns_match(c, vaddr, iova, 16 * K4);
        assert_eq!(c.locked_pages(), 0);
        assert!(c.mm().is_reserved(zero));
        unmap_all_and_check(c);
        let _ = MAP_FLAG_WRITE;
    });
}

#[test]
fn munmap_of_pinned_memory_waits_for_the_unpin() {
    with_host(|c, _| {
        let size = 32 * K4;
        let vaddr = mmap(c, "a", size, Backing::Page4k);
        let iova = 1 << 38;
        // Pin the first half only.
        c.map_dma(&MapDma::rw(vaddr, iova, size / 2)).unwrap();
        let pfns = pagemap_pfns(vaddr, size / K4);
        c.mm_mut().munmap("a", None).unwrap();
        assert_eq!(c.mm().region_vaddr("a"), None);
        assert_eq!(c.mm().deferred_unmaps(), 16, "the pinned half stays mapped");
        assert_eq!(pagemap_pfns(vaddr, 16), pfns[..16].to_vec(), "same pages");
        assert!(pagemap_pfns(vaddr + size / 2, 16)
            .iter()
            .all(Option::is_none));
        // Pinning unmapped memory fails as GUP does.
        let e = c
            .map_dma(&MapDma::rw(vaddr + size / 2, iova + M2, K4))
            .unwrap_err();
        assert_eq!(e.errno(), Errno::EFAULT);
        unmap_all_and_check(c);
        assert_eq!(c.mm().deferred_unmaps(), 0);
        assert!(
            pagemap_pfns(vaddr, 16).iter().all(Option::is_none),
            "gone now"
        );
    });
}

#[test]
fn mmap_refuses_pfnmap_and_notes_what_it_ignores() {
    let _g = serial();
    let mut mm = HostMm::new().unwrap();
    let e = mm
        .mmap(&MmapSpec::new("bar", M2, Backing::Pfnmap))
        .unwrap_err();
    assert!(matches!(e, MemError::PfnmapNeedsDevice(_)), "{e}");
    assert!(e
        .to_string()
        .contains("device MMIO needs a real device BAR: use --memory sim"));
    let mut s = MmapSpec::new("x", 4 * K4, Backing::Page4k);
    s.phys = Some(1 << 32);
    s.seed = 3;
    let v = mm.mmap(&s).unwrap();
    let notes = mm.notes();
    assert_eq!(notes.len(), 2, "{notes:?}");
    // at= is honoured, and refuses to clobber.
    mm.munmap("x", Some((2 * K4, 2 * K4))).unwrap();
    let mut at = MmapSpec::new("y", 2 * K4, Backing::Page4k);
    at.at = Some(v + 2 * K4);
    assert_eq!(mm.mmap(&at).unwrap(), v + 2 * K4);
    let mut clash = MmapSpec::new("z", K4, Backing::Page4k);
    clash.at = Some(v);
    let e = mm.mmap(&clash).unwrap_err();
    assert!(matches!(e, MemError::Overlap { .. }), "{e}");
    assert!(e.to_string().contains("overlaps"));
}

#[test]
fn without_cap_sys_admin_the_error_names_it() {
    let _g = serial();
    // capset is per thread, and pagemap decides at open() from the opener's credentials: a
    // thread without CAP_SYS_ADMIN in its effective set sees pfn 0.
    let (mm_err, inspect_err) = std::thread::spawn(|| {
        sys::drop_effective_cap(sys::CAP_SYS_ADMIN).unwrap();
        let caps = sys::effective_caps().unwrap();
        assert_eq!(caps & (1 << sys::CAP_SYS_ADMIN), 0);
        let mm_err = HostMm::new().err().map(|e| {
            assert!(e.needs_cap_sys_admin(), "{e}");
            e.to_string()
        });
        let inspect_err = type1::inspect::inspect_pid(std::process::id(), None, K4 | M2 | G1)
            .err()
            .map(|e| e.to_string());
        (mm_err, inspect_err)
    })
    .join()
    .unwrap();
    eprintln!("without CAP_SYS_ADMIN: HostMm::new: {mm_err:?}; inspect: {inspect_err:?}");
    assert!(mm_err.unwrap().contains("CAP_SYS_ADMIN"));
    assert!(inspect_err.unwrap().contains("CAP_SYS_ADMIN"));
    // This thread still has it.
    assert!(HostMm::new().is_ok());
}

/// Pfn runs of `[vaddr, vaddr + size)` as pagemap shows them (a run: consecutive vaddrs at
/// consecutive pfns).
fn pfn_runs(vaddr: u64, size: u64) -> u64 {
    let pfns: Vec<u64> = pagemap_pfns(vaddr, size / K4)
        .into_iter()
        .map(Option::unwrap)
        .collect();
    1 + pfns.windows(2).filter(|w| w[1] != w[0] + 1).count() as u64
}

#[test]
fn both_page_classifiers_pin_every_backing_with_bookkeeping_per_run() {
    // PAGEMAP_SCAN (6.7+) where the kernel has it, and the kpageflags fallback, forced.
    for forced in [false, true] {
        with_host(|c, before| {
            if forced {
                c.mm_mut().force_kpageflags();
            } else if !c.mm().uses_pagemap_scan() {
                return skip("this kernel has no PAGEMAP_SCAN (before 6.7)");
            }
            for (name, backing, size) in [
                ("a", Backing::Page4k, 2 * M2),
                ("t", Backing::Thp, 8 * M2),
                ("h", Backing::Hugetlb2m, 4 * M2),
            ] {
                let vaddr = match c.mm_mut().mmap(&MmapSpec::new(name, size, backing)) {
                    Ok(v) => v,
                    Err(e) => {
                        skip(&format!("{backing:?}: {e}"));
                        continue;
                    }
                };
                let iova = 1 << 39;
                let runs = pfn_runs(vaddr, size);
                let mut leaves = Vec::new();
                for strategy in [Strategy::Folio, Strategy::Contiguous, Strategy::PerPage] {
                    c.set_strategy(strategy);
                    c.map_dma(&MapDma::rw(vaddr, iova, size)).unwrap();
                    assert_pfns_match(c, vaddr, iova, size);
                    assert_eq!(c.mm().locked_pages(), size / K4);
                    // One lock run for the region, one reverse-map run per pfn run at most.
                    let entries = c.mm().bookkeeping_entries() as u64;
                    assert!(
                        entries <= 1 + runs,
                        "{backing:?} {strategy:?} (kpageflags forced: {forced}): {entries} \
                         bookkeeping entries for {runs} pfn runs"
                    );
                    leaves.push(leaves_in(c, iova, size));
                    unmap_all_and_check(c);
                    assert_eq!(c.mm().bookkeeping_entries(), 0);
                }
                if backing == Backing::Hugetlb2m {
                    assert_eq!(leaves[0], (0, size / M2, 0), "folio: 2M leaves");
                }
                assert_eq!(
                    leaves[0], leaves[1],
                    "{backing:?}: folio and contiguous agree"
                );
                c.mm_mut().munmap(name, None).unwrap();
            }
            let _ = before;
        });
    }
}

/// Pin counts by pfn as pagemap shows them for `[vaddr, vaddr + size)` pinned `times` times:
/// `(first pfn, pages, count)` ranges, sorted, adjacent ones of equal count merged.
fn pagemap_pin_ranges(vaddr: u64, size: u64, times: &dyn Fn(u64) -> u32) -> Vec<(u64, u64, u32)> {
    let mut pfns: Vec<(u64, u32)> = pagemap_pfns(vaddr, size / K4)
        .into_iter()
        .enumerate()
        .map(|(i, p)| (p.unwrap(), times(i as u64)))
        .collect();
    pfns.sort_unstable();
    let mut out: Vec<(u64, u64, u32)> = Vec::new();
    for (p, c) in pfns {
        match out.last_mut() {
            Some((s, n, lc)) if *s + *n == p && *lc == c => *n += 1,
            _ => out.push((p, 1, c)),
        }
    }
    out
}

#[test]
fn scattered_4k_pins_count_every_pagemap_pfn_whatever_table_holds_it() {
    // The kernel hands out 4K pages physically scattered: most are pinned alone (the reverse
    // map's lone table), physically adjacent ones as runs. A second mapping of part of the
    // region with one-page batches pins the same pfns again, alone: counted in both tables.
    with_host(|c, before| {
        let size = 4 * M2;
        let pages = size / K4;
        let vaddr = mmap(c, "a", size, Backing::Page4k);
        let runs = pfn_runs(vaddr, size);
        for strategy in [Strategy::Contiguous, Strategy::Folio] {
            c.set_strategy(strategy);
            let (i1, i2) = (1u64 << 38, (1u64 << 38) + 2 * size);
            let reads = c.mm().pagemap_reads();
            c.map_dma(&MapDma::rw(vaddr, i1, size)).unwrap();
            // Each pin call takes what the last one read ahead: the range is read once.
            assert_eq!(c.mm().pagemap_reads() - reads, 1, "{strategy:?}");
            assert_eq!(c.mm().pinned_pages(), pages);
            assert_eq!(c.mm().pin_ranges(), pagemap_pin_ranges(vaddr, size, &|_| 1));
            let entries = c.mm().bookkeeping_entries() as u64;
            assert!(
                entries <= 1 + runs,
                "{strategy:?}: {entries} entries for {runs} pfn runs"
            );
            // Pages 100..300 again, one page per pin.
            c.set_strategy(Strategy::PerPage);
            let (off, len) = (100 * K4, 200 * K4);
            c.map_dma(&MapDma::rw(vaddr + off, i2, len)).unwrap();
            let twice = |i: u64| if (100..300).contains(&i) { 2 } else { 1 };
            assert_eq!(c.mm().pinned_pages(), pages + 200);
            assert_eq!(c.mm().pin_ranges(), pagemap_pin_ranges(vaddr, size, &twice));
            assert_eq!(vmlck() - before, size >> 10, "each page locked once");
            c.unmap_dma(&UnmapDma::range(i1, size)).unwrap();
            assert_eq!(c.mm().pinned_pages(), 200);
            assert_eq!(
                c.mm().pin_ranges(),
                pagemap_pin_ranges(vaddr + off, len, &|_| 1)
            );
            assert_eq!(vmlck() - before, len >> 10, "what the second mapping pins");
            c.set_strategy(strategy);
            unmap_all_and_check(c);
            assert_eq!(c.mm().bookkeeping_entries(), 0);
            assert_eq!(vmlck(), before);
        }
    });
}
