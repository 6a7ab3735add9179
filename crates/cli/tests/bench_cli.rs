//! `type1 bench` as a user meets it: what it refuses before measuring (exit 2, a message that
//! names the problem, nothing measured), the sizes it accepts, progress, medians with their
//! spread, deduplicated sweeps, and the two plots.

use std::path::PathBuf;
use std::process::{Command, Output};

use type1_cli::bench::{self, Measurement, Options, Stat};

fn type1(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_type1"))
        .args(args)
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A fresh directory for one test's files.
fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("type1-bench-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `type1 bench ARGS` refused: exit 2, `want` on stderr, nothing on stdout and no progress
/// (no measurement started).
fn refused(args: &[&str], want: &str) {
    let mut all = vec!["bench"];
    all.extend_from_slice(args);
    let o = type1(&all);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
    assert!(err.contains(want), "{args:?}: want {want:?} in {err:?}");
    assert!(
        !err.contains("bench [1/"),
        "{args:?} started measuring: {err}"
    );
    assert!(o.stdout.is_empty(), "{args:?}: {}", stdout(&o));
}

#[test]
fn an_unwritable_plot_is_refused_before_any_measurement() {
    let d = scratch("unwritable");
    let missing = d.join("no-such-dir").join("g.svg");
    refused(
        &["--plot", missing.to_str().unwrap()],
        &format!("--plot: cannot write {}: ", missing.display()),
    );
    // The second file cannot be written: the first one, created for the check, is removed.
    std::fs::create_dir(d.join("g-per-page.svg")).unwrap();
    let g = d.join("g.svg");
    refused(
        &["--plot", g.to_str().unwrap()],
        &format!("cannot write {}", d.join("g-per-page.svg").display()),
    );
    assert!(!g.exists(), "{} left behind", g.display());
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_plot_must_be_svg_and_needs_the_growth_workload() {
    let d = scratch("names");
    let png = d.join("g.png");
    refused(
        &["--plot", png.to_str().unwrap()],
        "the plots are SVG; give a name ending in .svg",
    );
    let g = d.join("g.svg");
    refused(
        &["--workload", "pagetable", "--plot", g.to_str().unwrap()],
        "--plot draws the growth workload, which is not among the workloads named; add --workload growth",
    );
    assert!(!png.exists() && !g.exists());
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn sizes_are_checked_before_anything_runs() {
    refused(
        &["--size", "0"],
        "--size 0: a region needs at least one 4K page",
    );
    refused(
        &["--size", "1"],
        "--size 1: not a multiple of the 4K page size; the next page-aligned size is 4096 (4K)",
    );
    refused(
        &["--size", "5000"],
        "--size 5000: not a multiple of the 4K page size; the next page-aligned size is 8192 (8K)",
    );
    // 2^64-1 has no page-aligned size above it: no suggestion that would wrap.
    let o = type1(&["bench", "--size", "0xffffffffffffffff"]);
    assert_eq!(o.status.code(), Some(2));
    assert_eq!(
        stderr(&o),
        "bench: --size 18446744073709551615 (2^64-1): not a multiple of the 4K page size\n"
    );
    // Page aligned, but rounding up to 1G for hugetlb-1g would wrap; and past the window.
    for s in ["0xfffffffffffff000", "256T"] {
        refused(
            &["--size", s],
            "larger than the bench's IOVA window of 255T",
        );
    }
    // Within the window, but not within any machine's memory.
    refused(
        &["--workload", "map-unmap", "--size", "250T"],
        "--size 274877906944000 (250T): needs about 1000G of memory",
    );
    refused(
        &["--workload", "growth", "--sweep", "64M,5000"],
        "--sweep 5000: not a multiple of the 4K page size",
    );
    refused(
        &["--sweep", "64M,0"],
        "--sweep 0: a region needs at least one 4K page",
    );
    refused(
        &["--workload", "threads", "--size", "4K"],
        "--size 4096 (4K): the threads workload needs at least 8K",
    );
}

#[test]
fn options_no_named_workload_uses_are_refused() {
    refused(
        &["--workload", "pagetable", "--size", "1G"],
        "--size is the region size of map-unmap, fragmented, threads, inspect; none of them is among the workloads named",
    );
    refused(
        &["--workload", "map-unmap", "--sweep", "1G"],
        "--sweep sets the sizes of the growth workload, which is not among the workloads named",
    );
    refused(
        &["--memory", "host", "--workload", "small-maps"],
        "--workload small-maps runs on simulated memory only",
    );
    refused(
        &["--workload", "nope"],
        "unknown workload \"nope\": choose from map-unmap",
    );
}

#[test]
fn the_pagetable_workload_runs_alone_with_progress_and_per_call_figures() {
    let o = type1(&["bench", "--workload", "pagetable", "--json"]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    // [k/N] over the four cases, the first without an estimate, the others with one.
    assert!(
        err.contains("bench [1/4] pagetable 4k  (0.0 s elapsed, time left not known yet)"),
        "{err}"
    );
    for (k, case) in [(2, "2m"), (3, "1g"), (4, "256x4k")] {
        let line = err
            .lines()
            .find(|l| l.starts_with(&format!("bench [{k}/4] pagetable {case}  (")))
            .unwrap_or_else(|| panic!("no progress line {k}: {err}"));
        assert!(
            line.contains(" elapsed, about ") && line.ends_with(" left)"),
            "{line}"
        );
    }
    assert!(!err.contains("[5/"), "{err}");
    let rows: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 4, "only what was named: {rows:?}");
    for r in &rows {
        assert_eq!(r["workload"], "pagetable", "{r}");
        // No memory is mapped: no time per page and no GB/s, but the time per call with its
        // spread over 200 batches.
        for k in ["map_ns_per_page", "unmap_ns_per_page", "map_gb_per_s"] {
            assert!(r.get(k).is_none(), "{k} in {r}");
        }
        assert_eq!(r["runs"], 200, "{r}");
        let f = |k: &str| {
            r[k].as_f64()
                .unwrap_or_else(|| panic!("{k} missing in {r}"))
        };
        assert!(f("map_ns_per_call_min") <= f("map_ns_per_call"), "{r}");
        assert!(f("map_ns_per_call") <= f("map_ns_per_call_max"), "{r}");
        assert!(f("map_ns_per_call_min") > 0.0, "{r}");
    }
    let sizes: Vec<u64> = rows.iter().map(|r| r["size"].as_u64().unwrap()).collect();
    assert_eq!(sizes, [4096, 2 << 20, 1 << 30, 256 * 4096]);
}

#[test]
fn threads_take_a_size_that_is_not_a_multiple_of_4m() {
    // 5M: two threads split three 2M calls, the last one 1M; THP of 5M is two 2M pages and
    // a 4K tail.
    let ms = bench::threads(5 << 20).unwrap();
    assert_eq!(ms.len(), 2);
    let (two, unwind) = (&ms[0], &ms[1]);
    assert_eq!(two.size, 5 << 20);
    assert_eq!(
        two.leaves.iter().filter(|l| *l.1 > 0).collect::<Vec<_>>(),
        [(&4096, &256), (&(2 << 20), &2)]
    );
    assert_eq!(two.map_ns_per_page.unwrap().runs, 3);
    assert!(
        two.unmap_ns_per_page.is_none(),
        "nothing is unmapped in the timed part"
    );
    // The memlock case: a limit of half the region, rounded down to a page.
    assert_eq!(unwind.extra["memlock_limit"], 5 << 19);
    assert!(unwind.map_ns_per_page.is_none() && unwind.unmap_ns_per_page.is_none());
    assert_eq!(unwind.stats["failed_map_with_unwind_ms"].runs, 3);
    // 12K: half is 6K, so the limit is one page.
    let ms = bench::threads(12 << 10).unwrap();
    assert_eq!(ms[1].extra["memlock_limit"], 4096);
    assert_eq!(
        ms[0].leaves.iter().filter(|l| *l.1 > 0).collect::<Vec<_>>(),
        [(&4096, &3)]
    );
    assert_eq!(
        bench::threads(4096).unwrap_err(),
        "threads: the region must be page aligned and at least 8K, not 4096 (4K)"
    );
    assert!(bench::threads(6000).is_err());
}

#[test]
fn threads_on_the_command_line_with_6m() {
    let o = type1(&["bench", "--workload", "threads", "--size", "6M", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let rows: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["size"], 6 << 20);
    assert_eq!(rows[0]["leaves"]["2097152"], 3);
    assert_eq!(rows[1]["case"], "memlock-overflow-unwind");
}

#[test]
fn a_stat_is_the_median_with_its_spread() {
    let s = Stat::of(&[3.0, 1.0, 2.0]).unwrap();
    assert_eq!((s.median, s.min, s.max, s.runs), (2.0, 1.0, 3.0, 3));
    let s = Stat::of(&[4.0, 1.0, 3.0, 2.0]).unwrap();
    assert_eq!((s.median, s.min, s.max), (2.5, 1.0, 4.0));
    // A run that could not be timed does not count.
    let s = Stat::of(&[f64::NAN, 5.0]).unwrap();
    assert_eq!((s.median, s.runs), (5.0, 1));
    assert_eq!(Stat::of(&[]), None);
    assert_eq!(
        Stat::of(&[1.0, 1.5, 123.456]).unwrap().cell(),
        "1.50 (1.00–123)"
    );
    assert_eq!(Stat::once(0.000_77).cell(), "0.000770");
}

#[test]
fn map_unmap_figures_are_medians_of_five_runs_within_their_spread() {
    let opts = Options {
        workloads: vec!["map-unmap".into()],
        size: Some(8 << 20),
        host: false,
        sweep: vec![],
    };
    let mut progress = Vec::new();
    let (ms, errs) = bench::run(&opts, &bench::Sim, &mut |p| progress.push(p.to_string()));
    assert!(errs.is_empty(), "{errs:?}");
    assert_eq!(ms.len(), 12);
    assert_eq!(progress.len(), 12);
    assert!(
        progress[0].starts_with("[1/12] map-unmap 4k per-page 8M  ("),
        "{progress:?}"
    );
    assert!(progress[11].starts_with("[12/12] map-unmap hugetlb-1g folio 1G  ("));
    for m in &ms {
        for s in [m.map_ns_per_page.unwrap(), m.unmap_ns_per_page.unwrap()] {
            assert_eq!(s.runs, 5, "{m:?}");
            assert!(
                s.min <= s.median && s.median <= s.max && s.min > 0.0,
                "{m:?}"
            );
        }
        let j = m.to_json();
        assert_eq!(j["runs"], 5);
        assert!(j["map_ns_per_page_min"].as_f64() <= j["map_ns_per_page"].as_f64());
        assert!(j["map_ns_per_page"].as_f64() <= j["map_ns_per_page_max"].as_f64());
    }
    // Options `check` refuses give one error and no measurement.
    let bad = Options {
        size: Some(5000),
        ..opts
    };
    let (ms, errs) = bench::run(&bad, &bench::Sim, &mut |_| panic!("nothing may run"));
    assert!(ms.is_empty());
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0].starts_with("--size 5000: not a multiple"),
        "{errs:?}"
    );
}

#[test]
fn a_sweep_measures_each_size_once_per_backing_after_rounding() {
    let opts = Options {
        workloads: vec!["growth".into()],
        size: None,
        host: false,
        // Unordered, with a duplicate; 3M rounds up to 4M for hugetlb-2m, and every size to
        // 1G for hugetlb-1g.
        sweep: vec![8 << 20, 4 << 20, 3 << 20, 4 << 20],
    };
    let (ms, errs) = bench::run(&opts, &bench::Sim, &mut |_| {});
    assert!(errs.is_empty(), "{errs:?}");
    let sizes = |backing: &str| {
        let mut v: Vec<u64> = ms
            .iter()
            .filter(|m| m.backing == backing && m.strategy == "folio")
            .map(|m| m.size)
            .collect();
        v.sort_unstable();
        v
    };
    assert_eq!(sizes("4k"), [3 << 20, 4 << 20, 8 << 20]);
    assert_eq!(sizes("thp"), [3 << 20, 4 << 20, 8 << 20]);
    assert_eq!(sizes("hugetlb-2m"), [4 << 20, 8 << 20]);
    assert_eq!(sizes("hugetlb-1g"), [1 << 30]);
    // 3 strategies × (3 + 3 + 2 + 1) sizes.
    assert_eq!(ms.len(), 27);
    assert!(ms.iter().all(|m| m.workload == "growth"));
}

/// A growth row with the given ns per page for map and for unmap.
fn growth_row(backing: &str, strategy: &str, size: u64, ns: f64) -> Measurement {
    let mut m = Measurement::new("growth", backing, "sim", strategy, size);
    m.map_ns_per_page = Some(Stat::once(ns));
    m.unmap_ns_per_page = Some(Stat::once(ns));
    m
}

/// The y coordinates of the polyline drawn in `colour` with `dash` (as the plot writes them).
fn ys(svg: &str, colour: &str, dash: &str) -> Vec<String> {
    let head =
        format!("<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\"{dash} points=\"");
    let line = svg
        .lines()
        .find(|l| l.starts_with(&head))
        .unwrap_or_else(|| panic!("no {head} in {svg}"));
    let pts = &line[head.len()..line.rfind('"').unwrap()];
    pts.split(' ')
        .map(|p| p.split(',').nth(1).unwrap().to_string())
        .collect()
}

#[test]
fn the_per_page_plot_draws_linear_cost_flat_and_the_time_plot_rising() {
    let sizes = [64u64 << 20, 256 << 20, 1 << 30];
    let mut ms = Vec::new();
    for &s in &sizes {
        // 4K contiguous: linear (the same cost per page at every size); THP folio: the cost
        // per page doubles with each size.
        ms.push(growth_row("4k", "contiguous", s, 10.0));
        ms.push(growth_row(
            "thp",
            "folio",
            s,
            0.01 * (s / (64 << 20)) as f64,
        ));
    }
    let per_page = bench::plot_per_page(&ms);
    let total = bench::plot(&ms);
    let blue = ys(&per_page, "#0072B2", " stroke-dasharray=\"7,4\"");
    assert_eq!(blue.len(), 3);
    assert!(
        blue.iter().all(|y| *y == blue[0]),
        "linear is flat: {blue:?}"
    );
    let orange = ys(&per_page, "#E69F00", " stroke-dasharray=\"2,3\"");
    assert!(
        orange[0] != orange[1] && orange[1] != orange[2],
        "{orange:?}"
    );
    let rising = ys(&total, "#0072B2", " stroke-dasharray=\"7,4\"");
    let y: Vec<f64> = rising.iter().map(|y| y.parse().unwrap()).collect();
    assert!(
        y[0] > y[1] && y[1] > y[2],
        "total time rises (up is smaller y): {y:?}"
    );
    // Axis titles, legend entries, and a symbol (square, triangle) at every point.
    for svg in [&per_page, &total] {
        assert!(svg.contains(">region size (log scale)</text>"));
        assert!(svg.contains(">4k contiguous</text>") && svg.contains(">thp folio</text>"));
        assert_eq!(svg.matches("<polygon ").count(), 2 * (3 + 1), "{svg}");
    }
    assert!(per_page.contains(">map + unmap time per 4 KiB page (log scale)</text>"));
    assert!(per_page.contains(">10 ns</text>") && per_page.contains(">0.01 ns</text>"));
    assert!(total.contains(">map + unmap time (log scale)</text>"));
    assert!(total.contains(" ms</text>"));
}

#[test]
fn plot_writes_the_time_plot_and_the_per_page_plot() {
    let d = scratch("plots");
    let g = d.join("g.svg");
    let o = type1(&[
        "bench",
        "--workload",
        "growth",
        "--sweep",
        "4M,8M",
        "--plot",
        g.to_str().unwrap(),
    ]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    let pp = bench::per_page_path(&g);
    assert_eq!(pp, d.join("g-per-page.svg"));
    for p in [&g, &pp] {
        let svg = std::fs::read_to_string(p).unwrap();
        assert!(
            err.contains(&format!("bench: wrote {}", p.display())),
            "{err}"
        );
        // 4 backings × 3 strategies, each visible.
        assert_eq!(svg.matches("<polyline").count(), 12, "{}", p.display());
        assert!(svg.ends_with("</svg>\n"));
    }
    // The table names its ratio.
    let out = stdout(&o);
    assert!(
        out.contains("Growth: ns per page at the largest size / ns per page at the base size (1G if swept, else the smallest)"),
        "{out}"
    );
    assert!(
        out.contains("  4k           per-page    4M → 8M: map "),
        "{out}"
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn the_plots_are_written_even_when_the_report_cannot_be() {
    let d = scratch("full");
    let g = d.join("g.svg");
    let o = Command::new(env!("CARGO_BIN_EXE_type1"))
        .args(["bench", "--workload", "growth", "--sweep", "4M"])
        .arg("--plot")
        .arg(&g)
        .stdout(std::fs::File::create("/dev/full").unwrap())
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("type1: cannot write to stdout: "), "{err}");
    for p in [&g, &bench::per_page_path(&g)] {
        let svg = std::fs::read_to_string(p).unwrap();
        assert_eq!(svg.matches("<polyline").count(), 12, "{}", p.display());
    }
    let _ = std::fs::remove_dir_all(&d);
}

/// The inspect workload reads real memory: refused on the model, and its size checked like the
/// others', rounded up to whole 2M pages, before anything runs.
#[test]
fn the_inspect_workload_is_refused_before_anything_runs() {
    refused(
        &["--workload", "inspect"],
        "--workload inspect reads this process's real memory through /proc; add --memory host",
    );
    refused(
        &["--workload", "inspect", "--size", "16G"],
        "--workload inspect reads this process's real memory",
    );
    for (size, says) in [
        ("0", "--size 0: a region needs at least one 4K page"),
        ("6000", "--size 6000: not a multiple of the 4K page size"),
        ("256T", "larger than the bench's IOVA window of 255T"),
        (
            "0xfffffffffffff000",
            "larger than the bench's IOVA window of 255T",
        ),
        (
            "250T",
            "--size 274877906944000 (250T): needs about 250T of memory (--memory host populates",
        ),
    ] {
        refused(
            &["--memory", "host", "--workload", "inspect", "--size", size],
            says,
        );
    }
    // The model runs everything else when nothing is named; inspect is not among them.
    let opts = Options {
        workloads: vec![],
        size: None,
        host: false,
        sweep: vec![],
    };
    assert!(!opts.runs("inspect"));
    assert!(Options {
        host: true,
        ..opts.clone()
    }
    .runs("inspect"));
    // 1G by default, whole 2M pages otherwise; a size that rounds past 2^64 is refused.
    assert_eq!(opts.inspect_size(), Ok(1 << 30));
    let sized = |s: u64| Options {
        size: Some(s),
        ..opts.clone()
    };
    assert_eq!(sized(4 << 10).inspect_size(), Ok(2 << 20));
    assert_eq!(sized(6 << 20).inspect_size(), Ok(6 << 20));
    assert!(sized(u64::MAX - 4095).inspect_size().is_err());
    assert!(bench::inspect_thp(3 << 20).is_err(), "not whole 2M pages");
}

/// The inspect workload on real memory: both times with their spread, the ratio of their
/// medians, and the report's own view of the region (every page resident, leaves covering it).
#[test]
fn the_inspect_workload_reports_inspect_beside_the_pagemap_read() {
    if bench::host_factory().is_err() {
        return eprintln!("SKIP: no real memory with pfns here");
    }
    let size = 8u64 << 20;
    let m = bench::inspect_thp(size).unwrap();
    let j = m.to_json();
    eprintln!("{j}");
    assert_eq!(j["workload"], "inspect");
    assert_eq!(j["memory"], "host");
    assert_eq!(j["size"], size);
    assert_eq!(j["runs"], 5);
    let f = |k: &str| {
        j[k].as_f64()
            .unwrap_or_else(|| panic!("{k} missing in {j}"))
    };
    for k in ["pagemap_ns_per_page", "inspect_ns_per_page"] {
        assert!(
            f(&format!("{k}_min")) <= f(k) && f(k) <= f(&format!("{k}_max")),
            "{j}"
        );
        assert!(f(k) > 0.0);
    }
    let ratio = f("inspect_ns_per_page") / f("pagemap_ns_per_page");
    assert!(
        (f("inspect_vs_pagemap") - ratio).abs() <= 0.01 * ratio + 1e-3,
        "{j}"
    );
    // Every 4K page of the region is in exactly one leaf.
    let covered: u64 = m.leaves.iter().map(|(s, n)| s * n).sum();
    assert_eq!(covered, size);
    let thp = j["thp_pages"].as_u64().unwrap();
    assert!(thp <= size / 4096);
    // One kpageflags entry per 2M block mapped huge, one per page elsewhere.
    let k = j["kpageflags_entries"].as_u64().unwrap();
    assert!(k >= size / (2 << 20) && k <= size / 4096, "{j}");
    assert!(bench::table(&[m]).contains("inspect_vs_pagemap   inspect of a THP range"));
}
