//! `type1::inspect` against real processes, checked against pagemap and kpageflags read here
//! independently. Needs root with CAP_SYS_ADMIN.

mod support_host;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use support_host::{entry_pfn, in_ci, kpageflags, pagemap, serial, vmlck, G1, K4, M2, PGSIZES};
use support_host::{KPF_HUGE, KPF_RESERVED, KPF_THP, KPF_ZERO};
use type1::inspect::{self, Counts, Report};
use type1::mm::host::HostMm;
use type1::sys::{self, Advice, Mapping};

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
    for leaves in [&c.leaves_iova_eq_vaddr, &c.leaves_best_iova] {
        let bytes: u64 = leaves.iter().map(|l| l.pgsize * l.leaves).sum();
        assert_eq!(bytes, c.resident_pages * K4 - c.unmappable_pages * K4);
    }
    // The best IOVA never needs more leaves than IOVA = vaddr.
    let n = |v: &[inspect::LeafCount]| v.iter().map(|l| l.leaves).sum::<u64>();
    assert!(n(&c.leaves_best_iova) <= n(&c.leaves_iova_eq_vaddr));
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

/// Not a test of its own: the child process of `inspect_of_a_child_process_matches_pagemap`.
/// With TYPE1_INSPECT_CHILD set it maps 4 MiB of 4K pages, writes them, prints their address
/// and waits to be killed.
#[test]
fn child_helper_allocates_and_waits() {
    if std::env::var_os("TYPE1_INSPECT_CHILD").is_none() {
        return;
    }
    let m = Mapping::anon(4 << 20, true, None, None).unwrap();
    sys::madvise(m.base(), m.len(), Advice::NoHugePage).unwrap();
    m.fill_first_bytes(m.base(), m.len(), 0x5a).unwrap();
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

#[test]
fn inspect_of_a_child_process_matches_pagemap() {
    let _g = serial();
    let exe = std::env::current_exe().unwrap();
    let mut child = KillOnDrop(
        Command::new(exe)
            .args([
                "child_helper_allocates_and_waits",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("TYPE1_INSPECT_CHILD", "1")
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
        if let Some(i) = line.find("READY ") {
            let rest = line[i + 6..].trim();
            let (a, b) = rest.split_once(' ').unwrap();
            break (
                u64::from_str_radix(a, 16).unwrap(),
                u64::from_str_radix(b, 16).unwrap(),
            );
        }
    };
    // The child's buffer alone.
    let r = inspect::inspect_pid(pid, Some((base, base + len)), PGSIZES).unwrap();
    assert_eq!(r.vmas.len(), 1, "{:?}", r.vmas);
    let c = &r.vmas[0].counts;
    eprintln!(
        "child {pid} buffer: {} resident of {} pages, {} runs (longest {}), histogram {:?}, \
         leaves at vaddr {:?}, best {:?}, charge {} pages",
        c.resident_pages,
        c.pages,
        c.runs,
        c.longest_run_pages,
        c.run_histogram
            .iter()
            .map(|b| (b.min_pages, b.runs))
            .collect::<Vec<_>>(),
        c.leaves_iova_eq_vaddr,
        c.leaves_best_iova,
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
