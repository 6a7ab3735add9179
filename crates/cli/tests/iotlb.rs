//! `type1 iotlb` as a library: on examples/vm-boot.trace the per-page layout (4K leaves only)
//! misses where the contiguous layout (2M leaves) hits, as the reach predicts.

use std::path::PathBuf;

use iommu::dma_pattern::Pattern;
use type1::Strategy;
use type1_cli::iotlb::{self, Settings};
use type1_cli::trace::{self, Trace};

const FILE: &str = "examples/vm-boot.trace";

fn vm_boot() -> Trace {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(FILE);
    trace::parse(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn settings(pattern: Pattern, window: u64) -> Settings {
    let mut s = Settings::new(pattern, window);
    s.warmup = 5_000;
    s.accesses = 20_000;
    s
}

#[test]
fn per_page_misses_where_contiguous_hits() {
    let t = vm_boot();
    let s = settings(Pattern::Random, 64 << 20);
    let ms = iotlb::study(FILE, &t, &[Strategy::PerPage, Strategy::Contiguous], &s).unwrap();
    let [per_page, contiguous] = &ms[..] else {
        panic!("one domain per strategy: {ms:?}")
    };
    assert_eq!(
        (per_page.domain.as_str(), contiguous.domain.as_str()),
        ("vtd", "vtd")
    );
    // The layout after the last map (the second boot): 4K leaves only, or 416 4K + 2047 2M.
    assert_eq!(
        per_page.leaves,
        [(4 << 10, 1_048_480), (2 << 20, 0), (1 << 30, 0)]
    );
    assert_eq!(
        contiguous.leaves,
        [(4 << 10, 416), (2 << 20, 2047), (1 << 30, 0)]
    );
    // Reach: 64 × 4K, and 64 × 4K + 64 × 2M.
    assert_eq!(per_page.reach_bytes, 256 << 10);
    assert_eq!(contiguous.reach_bytes, (256 << 10) + (128 << 20));
    // 64 MiB of random reads: 16384 4K pages for 64 entries, or 32 2M leaves (and the first
    // 1.6 MiB in 4K leaves) that fit.
    let (pp, c) = (per_page.stats.miss_rate(), contiguous.stats.miss_rate());
    assert!(pp > 0.99, "per-page {pp}");
    assert!(c < 0.05, "contiguous {c}");
    assert!(per_page.misses_per_mib() > 20.0 * contiguous.misses_per_mib());
    for m in &ms {
        assert_eq!(m.stats.accesses, 20_000);
        assert_eq!(m.stats.faults, 0);
        let j = m.json(FILE);
        for k in ["domain", "reach_bytes", "accesses", "misses", "miss_rate"] {
            assert!(j.get(k).is_some(), "{k} in {j}");
        }
    }
    println!("{}", iotlb::human(FILE, &s, &ms));
}

#[test]
fn past_the_4k_edge_a_window_within_the_2m_reach_never_misses() {
    let t = vm_boot();
    let mut s = settings(Pattern::Random, 64 << 20);
    // [0, 640K) and [1M, 2M) are 4K leaves: 1664K of mapped IOVA before the first 2M leaf.
    s.offset = 1664 << 10;
    let ms = iotlb::study(FILE, &t, &[Strategy::PerPage, Strategy::Contiguous], &s).unwrap();
    assert_eq!(ms[1].stats.miss_rate(), 0.0);
    assert!(ms[0].stats.miss_rate() > 0.99);
    assert_eq!(ms[1].json(FILE)["offset"], 1664 << 10);
}

#[test]
fn every_pattern_runs_and_is_deterministic() {
    let t = vm_boot();
    for p in Pattern::ALL {
        let s = settings(p, 16 << 20);
        let a = iotlb::study(FILE, &t, &[Strategy::Contiguous], &s).unwrap();
        let b = iotlb::study(FILE, &t, &[Strategy::Contiguous], &s).unwrap();
        assert_eq!(a, b, "{p:?}");
        assert_eq!(a[0].stats.hits + a[0].stats.misses, 20_000, "{p:?}");
    }
}

#[test]
fn the_plot_marks_each_layouts_reach() {
    let t = vm_boot();
    let s = settings(Pattern::Random, 64 << 20);
    let mut laid = iotlb::lay_out(FILE, &t, Strategy::PerPage, &s).unwrap();
    laid.extend(iotlb::lay_out(FILE, &t, Strategy::Contiguous, &s).unwrap());
    let svg = iotlb::plot(&mut laid, &s).unwrap();
    assert!(svg.contains("reach per-page vtd: 256K"), "{svg}");
    assert!(svg.contains("reach contiguous vtd: 128.25M"));
    assert_eq!(svg.matches("<polyline").count(), 2);
}

#[derive(clap::Parser)]
struct Cli {
    #[command(flatten)]
    args: iotlb::Args,
}

fn args(extra: &[&str]) -> iotlb::Args {
    use clap::Parser as _;
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(FILE);
    let mut argv = vec!["iotlb".to_string(), path.display().to_string()];
    argv.extend(extra.iter().map(|s| s.to_string()));
    Cli::try_parse_from(argv).unwrap().args
}

#[test]
fn the_command_compares_strategies_and_writes_the_plot() {
    let svg = std::env::temp_dir().join(format!("type1-iotlb-{}.svg", std::process::id()));
    let a = args(&[
        "--compare-strategies",
        "--json",
        "--accesses",
        "2000",
        "--warmup",
        "1000",
        "--entries",
        "32",
        "--ways",
        "4",
        "--plot",
        svg.to_str().unwrap(),
    ]);
    assert!(iotlb::execute(a).unwrap().is_ok());
    let drawn = std::fs::read_to_string(&svg).unwrap();
    let _ = std::fs::remove_file(&svg);
    // per-page, contiguous and folio: three lines, three knees (32 × 4K, 32 × 4K + 32 × 2M).
    assert_eq!(drawn.matches("<polyline").count(), 3);
    assert!(drawn.contains("reach per-page vtd: 128K"));
    assert!(drawn.contains("reach folio vtd: 64.12M"));
}

#[test]
fn the_command_refuses_what_it_cannot_model() {
    let err = iotlb::execute(args(&["--preset", "nonesuch"])).unwrap_err();
    assert!(err.to_string().contains("unknown IOTLB preset"), "{err}");
    let err = iotlb::execute(args(&["--entries", "6", "--ways", "4"])).unwrap_err();
    assert!(err.to_string().contains("6 entries"), "{err}");
    let err = iotlb::execute(args(&["--access", "3"])).unwrap_err();
    assert!(err.to_string().contains("--access"), "{err}");
}
