//! `type1::inspect` against real processes, checked against pagemap and kpageflags read here
//! independently, and the acceptance lines of issue 12 for inspect: a partly touched THP region
//! reports the full charge, a `--gpa` layout changes the leaves as alignment predicts, filters
//! change the totals. Needs root with CAP_SYS_ADMIN (and 2M huge pages reserved for the layout
//! test).

mod support_host;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use support_host::{entry_pfn, in_ci, kpageflags, pagemap, serial, vmlck, G1, K4, M2, PGSIZES};
use support_host::{KPF_HUGE, KPF_RESERVED, KPF_THP, KPF_ZERO};
use type1::inspect::{self, Counts, Layout, Options, Report};
use type1::mm::host::HostMm;
use type1::sys::{self, Advice, HugeTlb, Mapping};

/// What the report should say about `[start, end)`, computed here from pagemap/kpageflags:
/// (resident, runs, thp pages, hugetlb pages, reserved pages).
fn expected(pid: u32, start: u64, end: u64) -> (u64, u64, u64, u64, u64) {
    let entries = pagemap(pid, start, (end - start) / K4);
    let (mut resident, mut runs, mut thp, mut huge, mut rsvd) = (0, 0, 0, 0, 0);
    let mut prev: Option<(u64, bool)> = None;
    for e in entries {
        let Some(pfn) = entry_pfn(e) else {
            prev = None;
            continue;
        };
        let f = kpageflags(pfn);
        let r = f & (KPF_ZERO | KPF_RESERVED) != 0;
        resident += 1;
        thp += u64::from(f & KPF_THP != 0);
        huge += u64::from(f & KPF_HUGE != 0);
        rsvd += u64::from(r);
        if prev != Some((pfn.wrapping_sub(1), r)) {
            runs += 1;
        }
        prev = Some((pfn, r));
    }
    (resident, runs, thp, huge, rsvd)
}

/// Internal consistency of one set of counts.
fn consistent(c: &Counts) {
    assert_eq!(c.resident_pages + c.hole_pages, c.pages);
    assert_eq!(c.locked_pages + c.reserved_pages, c.resident_pages);
    assert_eq!(c.locked_bytes, c.locked_pages * K4);
    assert_eq!(c.run_histogram.iter().map(|b| b.runs).sum::<u64>(), c.runs);
    assert_eq!(
        c.run_histogram.iter().map(|b| b.pages).sum::<u64>(),
        c.resident_pages
    );
    for leaves in [
        &c.leaves_iova_eq_vaddr,
        &c.leaves_layout,
        &c.leaves_each_run_aligned,
    ] {
        let bytes: u64 = leaves.iter().map(|l| l.pgsize * l.leaves).sum();
        assert_eq!(bytes, c.resident_pages * K4 - c.unmappable_pages * K4);
    }
    // Each run at its best IOVA never needs more leaves than any one placement.
    let n = |v: &[inspect::LeafCount]| v.iter().map(|l| l.leaves).sum::<u64>();
    assert!(n(&c.leaves_each_run_aligned) <= n(&c.leaves_iova_eq_vaddr));
    assert!(n(&c.leaves_each_run_aligned) <= n(&c.leaves_layout));
    assert!(c.map_charge_pages >= c.locked_pages);
    assert_eq!(c.map_charge_pages + c.reserved_pages, c.pages);
    assert_eq!(c.map_charge_bytes, c.map_charge_pages * K4);
}

fn check_report_against_pagemap(r: &Report) {
    consistent(&r.total);
    for v in &r.vmas {
        consistent(&v.counts);
        let (resident, runs, thp, huge, rsvd) = expected(r.pid, v.start, v.end);
        let c = &v.counts;
        let what = format!("vma [{:#x}, {:#x}) {} {}", v.start, v.end, v.perms, v.name);
        assert_eq!(c.resident_pages, resident, "{what}");
        assert_eq!(c.runs, runs, "{what}");
        assert_eq!(c.thp_pages, thp, "{what}");
        assert_eq!(c.hugetlb_pages, huge, "{what}");
        assert_eq!(c.reserved_pages, rsvd, "{what}");
    }
}

/// Not a test of its own: the child process of the tests below. TYPE1_INSPECT_CHILD says what
/// it maps: `4k` 4 MiB of 4K pages, all written; `thp-split` 16 MiB of THP, all written, one
/// 4K page of its second 2M block unmapped; `thp-zero` 8 MiB of THP only read (the huge zero
/// page); `thp-partial` 8 MiB 2M-aligned with
/// MADV_HUGEPAGE, only its first 2 MiB written; `hugetlb-2m` 4 MiB of 2M hugetlb pages, all
/// written. It prints the address and length and waits to be killed.
#[test]
fn child_helper_allocates_and_waits() {
    let Some(mode) = std::env::var_os("TYPE1_INSPECT_CHILD") else {
        return;
    };
    let m = match mode.to_str() {
        Some("thp-split") => {
            // 16 MiB of THP, all written; then one 4K page of the second 2M block unmapped,
            // which splits that block's PMD into PTEs (a PTE-mapped THP beside PMD-mapped ones).
            let mut m = Mapping::anon_aligned(16 << 20, true, M2).unwrap();
            sys::madvise(m.base(), m.len(), Advice::HugePage).unwrap();
            m.fill_first_bytes(m.base(), m.len(), 0x5a).unwrap();
            m.unmap(m.base() + M2 + K4, K4).unwrap();
            m
        }
        Some("thp-zero") => {
            // 8 MiB read-only with MADV_HUGEPAGE, every page read: the huge zero page.
            let m = Mapping::anon_aligned(8 << 20, false, M2).unwrap();
            sys::madvise(m.base(), m.len(), Advice::HugePage).unwrap();
            m.touch(m.base(), m.len()).unwrap();
            m
        }
        Some("thp-partial") => {
            let m = Mapping::anon_aligned(8 << 20, true, M2).unwrap();
            sys::madvise(m.base(), m.len(), Advice::HugePage).unwrap();
            m.fill_first_bytes(m.base(), M2, 0x5a).unwrap();
            m
        }
        Some("hugetlb-2m") => match Mapping::anon(4 << 20, true, None, Some(HugeTlb::Size2M)) {
            Ok(m) => {
                m.fill_first_bytes(m.base(), m.len(), 0x5a).unwrap();
                m
            }
            Err(e) => {
                println!("NOHUGE {e}");
                return;
            }
        },
        _ => {
            let m = Mapping::anon(4 << 20, true, None, None).unwrap();
            sys::madvise(m.base(), m.len(), Advice::NoHugePage).unwrap();
            m.fill_first_bytes(m.base(), m.len(), 0x5a).unwrap();
            m
        }
    };
    println!("READY {:x} {:x}", m.base(), m.len());
    std::thread::sleep(Duration::from_secs(60));
    drop(m);
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Start the child helper in `mode`; its pid and buffer, or None when it could not map it
/// (`NOHUGE`).
fn spawn_child(mode: &str) -> Option<(KillOnDrop, u32, u64, u64)> {
    let exe = std::env::current_exe().unwrap();
    let mut child = KillOnDrop(
        Command::new(exe)
            .args([
                "child_helper_allocates_and_waits",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("TYPE1_INSPECT_CHILD", mode)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pid = child.0.id();
    let mut line = String::new();
    let mut out = BufReader::new(child.0.stdout.take().unwrap());
    let (base, len) = loop {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "child exited");
        // The harness prints "test <name> ... " before the test's own output.
        if line.contains("NOHUGE ") {
            eprintln!("child: {line}");
            return None;
        }
        if let Some(i) = line.find("READY ") {
            let rest = line[i + 6..].trim();
            let (a, b) = rest.split_once(' ').unwrap();
            break (
                u64::from_str_radix(a, 16).unwrap(),
                u64::from_str_radix(b, 16).unwrap(),
            );
        }
    };
    Some((child, pid, base, len))
}

#[test]
fn inspect_of_a_child_process_matches_pagemap() {
    let _g = serial();
    let (child, pid, base, len) = spawn_child("4k").unwrap();
    // The child's buffer alone.
    let r = inspect::inspect_pid(pid, Some((base, base + len)), PGSIZES).unwrap();
    assert_eq!(r.vmas.len(), 1, "{:?}", r.vmas);
    let c = &r.vmas[0].counts;
    eprintln!(
        "child {pid} buffer: {} resident of {} pages, {} runs (longest {}), histogram {:?}, \
         leaves at vaddr {:?}, each run aligned {:?}, charge {} pages",
        c.resident_pages,
        c.pages,
        c.runs,
        c.longest_run_pages,
        c.run_histogram
            .iter()
            .map(|b| (b.min_pages, b.runs))
            .collect::<Vec<_>>(),
        c.leaves_iova_eq_vaddr,
        c.leaves_each_run_aligned,
        c.locked_pages
    );
    assert_eq!(c.resident_pages, len / K4);
    assert_eq!(c.locked_pages, len / K4);
    assert_eq!(c.thp_pages, 0, "MADV_NOHUGEPAGE");
    check_report_against_pagemap(&r);
    // The whole process.
    let all = inspect::inspect_pid(pid, None, PGSIZES).unwrap();
    eprintln!(
        "child {pid}: {} vmas, {} resident pages, {} holes, {} runs, charge {} pages",
        all.vmas.len(),
        all.total.resident_pages,
        all.total.hole_pages,
        all.total.runs,
        all.total.locked_pages
    );
    assert!(all.vmas.len() > 5);
    assert!(all
        .vmas
        .iter()
        .any(|v| v.name.ends_with("inspect") || v.name.contains("/deps/inspect-")));
    assert!(all.vmas.iter().any(|v| v.name == "[stack]"));
    check_report_against_pagemap(&all);
    assert!(!all.notes.is_empty(), "holes are explained");
    // Every page's kpageflags read instead: the same report of the whole process.
    let mut o = Options::new(PGSIZES);
    o.per_page_flags = true;
    let slow = inspect::inspect(pid, &o).unwrap();
    assert_eq!(slow.vmas, all.vmas);
    assert_eq!(slow.total, all.total);
    drop(child);
    assert!(matches!(
        inspect::inspect_pid(pid, None, PGSIZES),
        Err(inspect::Error::NoProcess { .. })
    ));
}

#[test]
fn demo_regions_match_pagemap() {
    let _g = serial();
    let before = vmlck();
    let mut mm = HostMm::new().unwrap();
    let d = inspect::demo_in(&mut mm, PGSIZES).unwrap();
    for n in &d.report.notes {
        eprintln!("demo note: {n}");
    }
    let has = |b: &str| d.regions.iter().any(|r| r.backing == b);
    assert!(has("4k") && has("thp"));
    if !has("hugetlb-2m") {
        assert!(!in_ci(), "CI=true and the demo got no 2M huge pages");
        eprintln!("SKIP (part): no 2M huge pages for the demo");
    }
    check_report_against_pagemap(&d.report);
    // The same regions with every page's kpageflags read: the same report.
    let mut o = Options::new(PGSIZES);
    o.ranges = d.report.ranges.clone();
    o.per_page_flags = true;
    let slow = inspect::inspect(std::process::id(), &o).unwrap();
    assert_eq!(slow.vmas, d.report.vmas);
    assert_eq!(slow.total, d.report.total);
    assert_eq!(slow.reads.huge_mapped_pages, 0);
    for reg in &d.regions {
        let vmas: Vec<_> = d
            .report
            .vmas
            .iter()
            .filter(|v| v.start >= reg.vaddr && v.end <= reg.vaddr + reg.size)
            .collect();
        let mut c = vmas[0].counts.clone();
        for v in &vmas[1..] {
            c.resident_pages += v.counts.resident_pages;
            c.hugetlb_pages += v.counts.hugetlb_pages;
            c.thp_pages += v.counts.thp_pages;
        }
        let leaves: Vec<(u64, u64)> = vmas
            .iter()
            .flat_map(|v| v.counts.leaves_iova_eq_vaddr.iter())
            .fold(vec![(K4, 0), (M2, 0), (G1, 0)], |mut acc, l| {
                acc.iter_mut().find(|a| a.0 == l.pgsize).unwrap().1 += l.leaves;
                acc
            });
        eprintln!(
            "demo {} ({} MiB): resident {} pages, thp {}, hugetlb {}, leaves at vaddr {:?}",
            reg.backing,
            reg.size >> 20,
            c.resident_pages,
            c.thp_pages,
            c.hugetlb_pages,
            leaves
        );
        assert_eq!(
            c.resident_pages,
            reg.size / K4,
            "{} is populated",
            reg.backing
        );
        match reg.backing.as_str() {
            "hugetlb-2m" => {
                assert_eq!(c.hugetlb_pages, reg.size / K4);
                assert_eq!(leaves, vec![(K4, 0), (M2, reg.size / M2), (G1, 0)]);
            }
            "hugetlb-1g" => {
                assert_eq!(c.hugetlb_pages, reg.size / K4);
                assert_eq!(leaves, vec![(K4, 0), (M2, 0), (G1, 1)]);
            }
            "thp" => {
                assert_eq!(c.hugetlb_pages, 0);
                // Every THP the kernel gave (counted independently) is one 2M leaf.
                assert!(leaves[1].1 * 512 >= c.thp_pages);
            }
            _ => {
                assert_eq!(c.thp_pages + c.hugetlb_pages, 0);
            }
        }
    }
    drop(mm);
    assert_eq!(vmlck(), before);
    // The serializable form the CLI prints.
    let _ = &d.report.total;
}

/// Acceptance: a partly touched THP region reports the full charge a map would make (it faults
/// the rest in), beside the smaller resident charge.
#[test]
fn partly_touched_thp_region_reports_the_full_charge() {
    let _g = serial();
    let (_child, pid, base, len) = spawn_child("thp-partial").unwrap();
    let r = inspect::inspect_pid(pid, Some((base, base + len)), PGSIZES).unwrap();
    check_report_against_pagemap(&r);
    let c = &r.total;
    eprintln!(
        "thp-partial: resident {} of {} pages, thp {}, locked now {}, map charge {}, verdict {:?}",
        c.resident_pages, c.pages, c.thp_pages, c.locked_pages, c.map_charge_pages, r.verdict
    );
    assert!(
        c.resident_pages >= 1 && c.resident_pages < len / K4,
        "partly touched"
    );
    assert_eq!(c.locked_pages, c.resident_pages);
    assert_eq!(
        c.map_charge_pages,
        len / K4,
        "a map charges the whole region"
    );
    assert_eq!(c.map_charge_bytes, len);
    assert_eq!(r.suggested_memlock_bytes, len);
    assert!(r.verdict.reason.contains("not resident"), "{:?}", r.verdict);
}

/// Acceptance: a `--gpa` layout changes the leaves as alignment predicts. 2M hugetlb pages at a
/// 2M-aligned guest physical start are 2M leaves; 4K off that alignment they are 4K leaves only.
#[test]
fn gpa_layout_changes_the_leaves_as_alignment_predicts() {
    let _g = serial();
    let Some((_child, pid, base, len)) = spawn_child("hugetlb-2m") else {
        assert!(!in_ci(), "CI=true and no 2M huge pages for the child");
        eprintln!("SKIP: no 2M huge pages");
        return;
    };
    let leaves = |layout: Layout| {
        let mut o = Options::new(PGSIZES);
        o.ranges = vec![(base, base + len)];
        o.layout = layout;
        let r = inspect::inspect(pid, &o).unwrap();
        check_report_against_pagemap(&r);
        assert_eq!(r.vmas.len(), 1);
        let l: Vec<(u64, u64)> = r
            .total
            .leaves_layout
            .iter()
            .map(|l| (l.pgsize, l.leaves))
            .collect();
        (l, r.vmas[0].iova, r.verdict.superpages)
    };
    let (aligned, iova, yes) = leaves(Layout::Gpa(vec![0x1_0000_0000]));
    assert_eq!(iova, 0x1_0000_0000);
    assert_eq!(aligned, vec![(K4, 0), (M2, len / M2), (G1, 0)]);
    assert_eq!(yes, "yes");
    let (off, _, no) = leaves(Layout::Gpa(vec![0x1_0000_1000]));
    assert_eq!(off, vec![(K4, len / K4), (M2, 0), (G1, 0)]);
    assert_eq!(no, "no");
    // An offset layout a multiple of 2M keeps the 2M leaves; IOVA = vaddr is the same as offset 0.
    assert_eq!(leaves(Layout::Offset(M2.wrapping_neg())).0, aligned);
    assert_eq!(leaves(Layout::Offset(0)).0, leaves(Layout::Vaddr).0);
    // One --gpa per selected mapping, or an error naming the counts.
    let mut o = Options::new(PGSIZES);
    o.layout = Layout::Gpa(vec![0]);
    assert!(matches!(
        inspect::inspect(pid, &o),
        Err(inspect::Error::GpaCount { given: 1, .. })
    ));
}

/// Acceptance: filters change the totals: `name` and `min_size` keep the child's buffer and drop
/// libraries, stack and heap from the totals, which are the sums of what is kept.
#[test]
fn filters_change_the_totals() {
    let _g = serial();
    let (_child, pid, base, len) = spawn_child("4k").unwrap();
    let all = inspect::inspect(pid, &Options::new(PGSIZES)).unwrap();
    let mut o = Options::new(PGSIZES);
    o.name = Some("[anon]".into());
    o.min_size = len;
    let some = inspect::inspect(pid, &o).unwrap();
    check_report_against_pagemap(&some);
    assert!(some
        .vmas
        .iter()
        .any(|v| v.start <= base && base + len <= v.end));
    assert!(some
        .vmas
        .iter()
        .all(|v| v.name.is_empty() && v.end - v.start >= len));
    assert_eq!(
        some.vmas.len() as u64 + some.filtered_out,
        all.vmas.len() as u64
    );
    assert!(some.filtered_out > 0);
    assert!(some.total.pages < all.total.pages);
    assert!(some.total.map_charge_pages < all.total.map_charge_pages);
    assert!(some.total.resident_pages >= len / K4);
    let sum = |r: &Report| r.vmas.iter().map(|v| v.counts.resident_pages).sum::<u64>();
    assert_eq!(some.total.resident_pages, sum(&some));
    assert_eq!(some.suggested_memlock_bytes, some.total.map_charge_bytes);
    // A name nothing has selects nothing.
    o.name = Some("no such mapping".into());
    let none = inspect::inspect(pid, &o).unwrap();
    assert!(none.vmas.is_empty());
    assert_eq!(none.total.pages, 0);
}

/// The kpageflags of pages mapped by huge entries are read once per 2 MiB (`PAGEMAP_SCAN`),
/// and the report is the one the per-page path gives: the same runs (consecutive pfns,
/// uniformly reserved, as `vfio_pin_pages_remote` batches them: spec 3.2), leaves (`iommu_pgsize`
/// split: spec 3.4) and counts, both checked against pagemap and kpageflags read here.
#[test]
fn huge_entries_read_flags_once_per_2m_and_report_as_per_page() {
    let _g = serial();
    let (_child, pid, base, len) = spawn_child("thp-split").unwrap();
    let report = |per_page: bool| {
        let mut o = Options::new(PGSIZES);
        o.ranges = vec![(base, base + len)];
        o.per_page_flags = per_page;
        let r = inspect::inspect(pid, &o).unwrap();
        check_report_against_pagemap(&r);
        r
    };
    let (fast, slow) = (report(false), report(true));
    assert_eq!(fast.vmas, slow.vmas);
    assert_eq!(fast.total, slow.total);
    assert_eq!(fast.verdict, slow.verdict);
    let c = &fast.total;
    eprintln!(
        "thp-split: resident {} of {} pages, thp {}, runs {}, leaves {:?}; reads fast {:?}, \
         per page {:?}",
        c.resident_pages,
        c.pages,
        c.thp_pages,
        c.runs,
        c.leaves_iova_eq_vaddr,
        fast.reads,
        slow.reads
    );
    // The two pieces around the unmapped page, every other page written.
    assert_eq!(fast.vmas.len(), 2);
    assert_eq!(c.pages, len / K4 - 1);
    assert_eq!(c.resident_pages, len / K4 - 1);
    assert_eq!(slow.reads.kpageflags_entries, c.resident_pages);
    assert_eq!(slow.reads.huge_mapped_pages, 0);
    assert_eq!(fast.reads.pagemap_entries, slow.reads.pagemap_entries);
    // Whatever the kernel mapped with huge entries was found in whole 2M blocks, and cost one
    // kpageflags entry per block; the rest one per page.
    let h = fast.reads.huge_mapped_pages;
    assert_eq!(h % 512, 0);
    assert_eq!(
        fast.reads.kpageflags_entries,
        c.resident_pages - h + h / 512
    );
    let scan = std::fs::File::open(format!("/proc/{pid}/pagemap"))
        .ok()
        .and_then(|f| sys::pagemap_scan(&f, base, base + len, sys::page_is::HUGE).ok());
    match scan {
        Some(regions) => {
            // PAGEMAP_SCAN (6.7+), read here: the pages it calls huge are those found.
            let huge: u64 = regions
                .iter()
                .filter(|r| r.categories & sys::page_is::HUGE != 0)
                .map(|r| (r.end - r.start) / K4)
                .sum();
            assert_eq!(h, huge);
            // Every mapping of the range holds THP: smaps is not needed, nor read.
            assert!(!fast.reads.smaps, "{:?}", fast.reads);
            assert!(slow.reads.smaps, "the per-page path asks smaps first");
            // The split block is mapped by PTEs; THP the kernel gave elsewhere is PMD-mapped.
            assert!(h <= len / K4 - 512);
            if c.thp_pages >= 4 * 512 {
                assert!(h > 0, "{c:?}");
            }
        }
        None => {
            eprintln!("no PAGEMAP_SCAN: every page's flags read");
            assert_eq!(h, 0);
        }
    }
}

/// A mapping whose huge entries all map the huge zero page is what smaps calls empty (no Rss):
/// finding huge entries does not spare the smaps check there, and the report is the per-page
/// path's (all holes, as before huge entries were looked for).
#[test]
fn huge_zero_page_mappings_are_still_judged_by_smaps() {
    let _g = serial();
    let (_child, pid, base, len) = spawn_child("thp-zero").unwrap();
    let report = |per_page: bool| {
        let mut o = Options::new(PGSIZES);
        o.ranges = vec![(base, base + len)];
        o.per_page_flags = per_page;
        inspect::inspect(pid, &o).unwrap()
    };
    let (fast, slow) = (report(false), report(true));
    eprintln!("thp-zero: {:?} / per page {:?}", fast.reads, slow.reads);
    assert_eq!(fast.vmas, slow.vmas);
    assert_eq!(fast.total, slow.total);
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    if type1::procfs::smaps_empty(&smaps).contains(&base) {
        // Present pages none of which smaps counts: smaps was asked.
        assert!(fast.reads.smaps, "{:?}", fast.reads);
        assert_eq!(fast.total.resident_pages, 0);
        assert_eq!(fast.total.hole_pages, len / K4);
    } else {
        // The kernel gave 4K zero pages or real pages: they are counted, and checked.
        check_report_against_pagemap(&fast);
    }
}
