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
        assert!(m.map_ns_per_page > 0.0 && m.unmap_ns_per_page > 0.0, "{j}");
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
