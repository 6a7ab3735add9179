//! `type1 bench`: the measurements carry the fields the issue names, and the leaves each
//! backing and strategy really got.

use type1_cli::bench::{self, Options};

#[test]
fn map_unmap_measures_every_backing_and_strategy_with_the_right_leaves() {
    let opts = Options {
        workloads: vec!["map-unmap".into()],
        size: Some(16 << 20),
        host: false,
        sweep: vec![],
    };
    let (ms, errs) = bench::run(&opts, &bench::Sim, &mut |_| {});
    assert!(errs.is_empty(), "{errs:?}");
    // 3 backings of 16 MiB and one of 1 GiB (hugetlb-1g rounds up), each with 3 strategies.
    assert_eq!(ms.len(), 12);
    let get = |b: &str, s: &str| {
        ms.iter()
            .find(|m| m.backing == b && m.strategy == s)
            .unwrap()
    };
    assert_eq!(get("4k", "contiguous").leaves.get(&4096), Some(&4096));
    assert_eq!(get("thp", "contiguous").leaves.get(&(2 << 20)), Some(&8));
    assert_eq!(get("thp", "per-page").leaves.get(&4096), Some(&4096));
    assert_eq!(get("hugetlb-1g", "folio").leaves.get(&(1 << 30)), Some(&1));
    assert_eq!(get("hugetlb-1g", "folio").size, 1 << 30);
    for m in &ms {
        let j = m.to_json();
        for k in [
            "workload",
            "backing",
            "memory",
            "strategy",
            "size",
            "map_ns_per_page",
            "unmap_ns_per_page",
            "leaves",
        ] {
            assert!(j.get(k).is_some(), "{k} missing in {j}");
        }
        let (map, unmap) = (m.map_ns_per_page.unwrap(), m.unmap_ns_per_page.unwrap());
        assert!(map.median > 0.0 && unmap.median > 0.0, "{j}");
        assert!(
            j.get("floor_map_ns_per_page").is_none(),
            "sim has no floor: {j}"
        );
    }
}

#[test]
fn host_measurements_carry_the_floor_and_the_ratio() {
    let host = match bench::host_factory() {
        Ok(h) => h,
        Err(e) => return eprintln!("SKIP: no real memory with pfns here: {e}"),
    };
    let opts = Options {
        workloads: vec!["map-unmap".into()],
        size: Some(4 << 20),
        host: true,
        sweep: vec![],
    };
    let (ms, errs) = bench::run(&opts, host.as_ref(), &mut |_| {});
    for e in &errs {
        eprintln!("SKIP (a backing this machine lacks): {e}");
    }
    assert!(ms.iter().any(|m| m.backing == "4k"), "{errs:?}");
    for m in &ms {
        let j = m.to_json();
        assert_eq!(j["memory"], "host");
        let f = |k: &str| {
            j[k].as_f64()
                .unwrap_or_else(|| panic!("{k} missing in {j}"))
        };
        assert!(f("floor_map_ns_per_page") > 0.0 && f("floor_unmap_ns_per_page") > 0.0);
        let ratio = f("map_ns_per_page") / f("floor_map_ns_per_page");
        assert!(
            (f("map_vs_floor") - ratio).abs() <= 0.01 * ratio + 1e-3,
            "{j}"
        );
        assert!(f("unmap_vs_floor") > 0.0, "{j}");
    }
}

#[test]
fn growth_and_plot() {
    let opts = Options {
        workloads: vec!["growth".into()],
        size: None,
        host: false,
        sweep: vec![4 << 20, 16 << 20],
    };
    let (ms, errs) = bench::run(&opts, &bench::Sim, &mut |_| {});
    assert!(errs.is_empty(), "{errs:?}");
    let lin = bench::linearity(&ms);
    assert_eq!(
        lin.len(),
        9,
        "3 backings × 3 strategies with two distinct sizes (1G pages have one)"
    );
    let svg = bench::plot(&ms);
    assert!(svg.starts_with("<svg") && svg.contains("polyline"));
}

#[test]
fn table_aligns_figures_right_under_a_rule() {
    let m =
        |workload, backing: &str, size: u64, map: f64, leaves: &[(u64, u64)]| bench::Measurement {
            workload,
            backing: backing.into(),
            memory: "sim",
            strategy: "contiguous".into(),
            size,
            map_ns_per_page: Some(bench::Stat {
                median: map,
                min: map * 0.9,
                max: map * 1.2,
                runs: 5,
            }),
            unmap_ns_per_page: Some(bench::Stat::once(map / 2.0)),
            leaves: leaves.iter().copied().collect(),
            stats: Default::default(),
            extra: Default::default(),
        };
    let mut small = m("small-maps", "4k", 1 << 30, 123.456, &[(4096, 262144)]);
    small.extra.insert("map_calls", serde_json::json!(262144));
    let ms = [
        m(
            "map-unmap",
            "thp",
            16 << 20,
            1.5,
            &[(2 << 20, 8), (4096, 0)],
        ),
        small,
    ];
    let want = "\
Figures: the median of the runs (min–max), in ns per 4 KiB page; map GB/s from the median; - where a figure does not apply.
workload    backing  memory  strategy    size  runs       map ns/page  unmap ns/page  map GB/s  leaves     notes
---------------------------------------------------------------------------------------------------------------------------
map-unmap   thp      sim     contiguous  16M      5  1.50 (1.35–1.80)          0.750      2731  2M×8
small-maps  4k       sim     contiguous  1G       5     123 (111–148)           61.7      33.2  4K×262144  map_calls=262144
";
    assert_eq!(bench::table(&ms), want);
}
