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
    assert!(svg.contains("window size (preset plain)"));
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
    assert!(drawn.contains("window size (32 entries, 4-way)"));
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

// Presets (issue 17, Build: "presets for a few documented parts, each citing where its figures
// come from, and a plain configurable one").

use iommu::iotlb::PRESETS;

fn type1(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_type1"))
        .current_dir(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.."))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn an_unknown_preset_exits_2_naming_every_preset() {
    let out = type1(&["iotlb", FILE, "--preset", "mmu-9000"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("unknown IOTLB preset \"mmu-9000\""), "{err}");
    for p in PRESETS {
        assert!(err.contains(p.name), "{} in {err}", p.name);
    }
}

#[test]
fn list_presets_prints_each_geometry_and_source_without_a_trace() {
    let out = type1(&["iotlb", "--list-presets"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    for p in PRESETS {
        assert!(text.contains(&format!("{}\n  geometry:   {}", p.name, p.geometry())));
        assert!(text.contains(p.source));
    }
    assert!(text.contains(
        "32-entry fully associative micro TLB, then 512-entry fully associative TLB for all page sizes"
    ));
    assert!(text.contains("ID 683567"));
    // Without --list-presets the trace is required.
    assert_eq!(type1(&["iotlb"]).status.code(), Some(2));
}

#[test]
fn a_presets_reach_on_vm_boot_is_its_entries_times_the_leaf_size() {
    let t = vm_boot();
    let mut s = settings(Pattern::Random, 64 << 20);
    s.preset = "agilex7-tbu".into();
    let ms = iotlb::study(FILE, &t, &[Strategy::PerPage, Strategy::Contiguous], &s).unwrap();
    let [per_page, contiguous] = &ms[..] else {
        panic!("{ms:?}")
    };
    // 32-entry micro TLB, 512-entry macro TLB (Agilex 7 HPS TRM, 683567, 2.2.4), one array for
    // every size: × 4K for 4K leaves only, × 2M once 2M leaves are in the layout.
    assert_eq!(
        (per_page.micro_reach_bytes, per_page.reach_bytes),
        (32 << 12, 512 << 12)
    );
    assert_eq!(
        (contiguous.micro_reach_bytes, contiguous.reach_bytes),
        (32 << 21, 512 << 21)
    );
    // 64 MiB of random reads: 16384 4K pages for 512 entries walk on nearly every read; the 2M
    // layout's 32 leaves (and 416 4K leaves) fit in the macro TLB: only cold misses remain.
    assert!(
        per_page.stats.miss_rate() > 0.95,
        "{}",
        per_page.stats.miss_rate()
    );
    assert!(
        contiguous.stats.misses <= 416 + 32,
        "{}",
        contiguous.stats.misses
    );
    for m in &ms {
        assert_eq!(m.preset.as_deref(), Some("agilex7-tbu"));
        let j = m.json(FILE);
        assert_eq!(j["preset"], "agilex7-tbu");
        assert_eq!(j["reach_bytes"], m.reach_bytes);
        assert_eq!(j["micro_reach_bytes"], m.micro_reach_bytes);
        assert_eq!(j["main_hits"], m.stats.main_hits);
    }
    // A geometry from the command line is no preset.
    let a = args(&["--entries", "64", "--micro-entries", "8"]);
    assert!(a.micro_entries == Some(8) && a.entries == Some(64));
    let mut g = settings(Pattern::Random, 16 << 20);
    g.iotlb = Some(iotlb::Geometry {
        entries: 64,
        ways: 64,
        unified: true,
        micro: Some(8),
    });
    let ms = iotlb::study(FILE, &t, &[Strategy::Contiguous], &g).unwrap();
    assert_eq!(ms[0].json(FILE)["preset"], serde_json::Value::Null);
    assert_eq!(ms[0].micro_reach_bytes, 8 << 21);
}

#[test]
fn the_json_of_the_command_names_its_preset() {
    let out = type1(&[
        "iotlb",
        FILE,
        "--preset",
        "agilex7-fpga-tbu",
        "--json",
        "--accesses",
        "1000",
        "--warmup",
        "100",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    let j: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(j["preset"], "agilex7-fpga-tbu");
    // 128-entry micro TLB × 2M, 512-entry macro TLB × 2M for the contiguous layout.
    assert_eq!(j["micro_reach_bytes"], 128u64 << 21);
    assert_eq!(j["reach_bytes"], 512u64 << 21);
}
