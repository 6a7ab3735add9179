//! `type1 bench`: the kernel's workload shapes, timed on the engine. Each measurement maps and
//! unmaps with the real engine (`type1::Container`) over simulated or real memory; memory is
//! created and populated outside the timed part. On real memory each repetition also times the
//! machine's floor for the same backing and size outside the engine (reading the pagemap of the
//! range, 4096 entries per read, plus `mlock`; and `munlock`), reported beside the engine's cost
//! with the ratio. The `inspect` workload (real memory only) times `type1 inspect --pid` of a
//! populated THP region of this process against reading that region's pagemap alone.
//!
//! Invariants owned here:
//! - every figure is the median of repeated runs and carries its spread (min–max) and run count;
//!   figures are meant to be compared as ratios within one run;
//! - what cannot run is refused before anything is measured ([`check`]): unknown or
//!   memory-incompatible workloads, options no named workload uses, sizes that are zero, not
//!   page aligned, or beyond the IOVA window or this machine's memory (all with checked
//!   arithmetic); `main` also refuses a `--plot` name that is not `.svg` or cannot be written;
//! - only the named workloads run (none named = all), each size once per backing (a sweep
//!   rounded up to a backing's page size is deduplicated);
//! - progress is `[k/N]` over a plan made before the first measurement, with the time elapsed
//!   and an estimate of the time left;
//! - `--plot FILE.svg` writes `FILE.svg` and `FILE-per-page.svg` before the report is printed,
//!   so a report that cannot be written does not cost them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use iommu::{Domain, DomainConfig, Format, SZ_1G as G1, SZ_2M as M2, SZ_4K as K4};
use serde_json::{json, Value};
use type1::mm::sim::SimMm;
use type1::mm::{Backing, Layout, MmapSpec};
use type1::mm::{Memory, PageSource};
use type1::{Config, Container, MapDma, Strategy, UnmapDma};

use crate::svg::{self, Chart, Series, Style, Symbol};

/// Where benchmark mappings go in IOVA space (1 TiB: aligned for every page size).
const IOVA: u64 = 1 << 40;
/// The end of the x86_64 4-level domain's input address space (48 bits).
const IOVA_END: u64 = 1 << 48;
/// The largest region the bench maps: what fits between [`IOVA`] and the end of the domain's
/// address space after rounding up to 1 GiB (255 TiB).
pub const MAX_SIZE: u64 = IOVA_END - IOVA;

/// A figure over repeated runs: the median and the spread.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stat {
    /// The median of the runs (the mean of the middle two for an even count).
    pub median: f64,
    /// The smallest run.
    pub min: f64,
    /// The largest run.
    pub max: f64,
    /// How many runs.
    pub runs: usize,
}

impl Stat {
    /// The median and spread of `samples` (non-finite ones ignored); `None` when none is left.
    pub fn of(samples: &[f64]) -> Option<Stat> {
        let mut v: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Stat {
            median,
            min: v[0],
            max: v[n - 1],
            runs: n,
        })
    }

    /// One run of `x`.
    pub fn once(x: f64) -> Stat {
        Stat {
            median: x,
            min: x,
            max: x,
            runs: 1,
        }
    }

    /// `median (min–max)`, three significant digits each.
    pub fn cell(&self) -> String {
        if self.runs <= 1 || self.min == self.max {
            sig(self.median)
        } else {
            format!("{} ({}–{})", sig(self.median), sig(self.min), sig(self.max))
        }
    }
}

/// One measurement, as `--json` prints it.
#[derive(Clone, Debug)]
pub struct Measurement {
    /// The workload's name (one of `WORKLOADS`).
    pub workload: &'static str,
    /// The memory backing (`4k`, `thp`, `hugetlb-2m`, `hugetlb-1g`, or a mix).
    pub backing: String,
    /// `sim` (simulated memory) or `host` (this process's real memory).
    pub memory: &'static str,
    /// The engine's strategy name.
    pub strategy: String,
    /// Bytes mapped.
    pub size: u64,
    /// Map time per 4 KiB page, in ns; `None` where the workload does not map memory (the
    /// page-table micro-benchmark) or its map is meant to fail (the memlock unwind).
    pub map_ns_per_page: Option<Stat>,
    /// Unmap time per 4 KiB page, in ns; `None` where nothing is timed unmapping.
    pub unmap_ns_per_page: Option<Stat>,
    /// Leaves installed, by page size.
    pub leaves: BTreeMap<u64, u64>,
    /// Other timed figures with their spread (ns per call, ms in all, ...).
    pub stats: BTreeMap<&'static str, Stat>,
    /// Workload-specific figures without a spread (calls, bytes, ratios of medians, ...).
    pub extra: BTreeMap<&'static str, Value>,
}

impl Measurement {
    /// An empty measurement, figures to be filled in.
    pub fn new(
        workload: &'static str,
        backing: &str,
        memory: &'static str,
        strategy: &str,
        size: u64,
    ) -> Self {
        Measurement {
            workload,
            backing: backing.to_string(),
            memory,
            strategy: strategy.to_string(),
            size,
            map_ns_per_page: None,
            unmap_ns_per_page: None,
            leaves: BTreeMap::new(),
            stats: BTreeMap::new(),
            extra: BTreeMap::new(),
        }
    }

    /// GB/s for a time per 4 KiB page.
    pub fn gbps(ns_per_page: f64) -> Option<f64> {
        (ns_per_page > 0.0).then(|| K4 as f64 / ns_per_page)
    }

    /// The median map plus unmap time per 4 KiB page, where both were timed.
    pub fn total_ns_per_page(&self) -> Option<f64> {
        Some(self.map_ns_per_page?.median + self.unmap_ns_per_page?.median)
    }

    /// How many runs the figures are over (those of the map time, else of the first figure).
    pub fn runs(&self) -> Option<usize> {
        self.map_ns_per_page
            .or(self.unmap_ns_per_page)
            .or(self.stats.values().next().copied())
            .map(|s| s.runs)
    }

    /// The measurement as `--json` prints it: each figure with a spread as `KEY` (the median),
    /// `KEY_min` and `KEY_max`, and `runs`; figures that do not apply are left out.
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "workload": self.workload,
            "backing": self.backing,
            "memory": self.memory,
            "strategy": self.strategy,
            "size": self.size,
            "leaves": self.leaves.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        });
        let put = |v: &mut Value, key: &str, s: &Stat| {
            v[key] = json!(round(s.median));
            v[format!("{key}_min")] = json!(round(s.min));
            v[format!("{key}_max")] = json!(round(s.max));
        };
        for (key, s) in [
            ("map_ns_per_page", self.map_ns_per_page),
            ("unmap_ns_per_page", self.unmap_ns_per_page),
        ] {
            if let Some(s) = s {
                put(&mut v, key, &s);
            }
        }
        if let Some(g) = self.map_ns_per_page.and_then(|s| Self::gbps(s.median)) {
            v["map_gb_per_s"] = json!(round(g));
        }
        if let Some(g) = self.unmap_ns_per_page.and_then(|s| Self::gbps(s.median)) {
            v["unmap_gb_per_s"] = json!(round(g));
        }
        for (k, s) in &self.stats {
            put(&mut v, k, s);
        }
        if let Some(n) = self.runs() {
            v["runs"] = json!(n);
        }
        for (k, x) in &self.extra {
            v[*k] = x.clone();
        }
        v
    }
}

/// Three decimals, or six below 1 (a 1G folio costs thousandths of a ns per 4 KiB page).
fn round(x: f64) -> f64 {
    let scale = if x.abs() < 1.0 { 1e6 } else { 1e3 };
    (x * scale).round() / scale
}

/// Three significant digits, never in exponent form: 124, 6.80, 0.0220, 0.000770.
fn sig(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let digits = 2 - x.abs().log10().floor() as i32;
    if digits <= 0 {
        format!("{x:.0}")
    } else {
        format!("{x:.*}", digits as usize)
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Workloads by name; empty = all.
    pub workloads: Vec<String>,
    /// Region size for map-unmap, fragmented and threads (default 1 GiB on sim, 64 MiB on host).
    pub size: Option<u64>,
    /// Measure this process's real memory instead of simulated memory.
    pub host: bool,
    /// Sizes for the growth curve (`--plot` and the linearity check).
    pub sweep: Vec<u64>,
}

/// Every workload, in the order they run.
pub const WORKLOADS: &[&str] = &[
    "map-unmap",
    "fragmented",
    "huge-guest",
    "small-maps",
    "pagetable",
    "threads",
    "growth",
    "inspect",
];

/// The workloads that run on simulated memory only (their shapes need TiB or fault injection).
pub const SIM_ONLY: &[&str] = &["huge-guest", "small-maps", "pagetable", "threads"];

/// The workloads that run on real memory only (`--memory host`): they read `/proc`.
pub const HOST_ONLY: &[&str] = &["inspect"];

/// The workloads that take `--size`.
const SIZED: &[&str] = &["map-unmap", "fragmented", "threads", "inspect"];

/// The inspect workload's region size when `--size` is not given.
pub const INSPECT_DEFAULT_SIZE: u64 = G1;

impl Options {
    /// Whether `workload` runs with these options.
    pub fn runs(&self, workload: &str) -> bool {
        let named = self.workloads.is_empty() || self.workloads.iter().any(|w| w == workload);
        named
            && !(self.host && SIM_ONLY.contains(&workload))
            && (self.host || !HOST_ONLY.contains(&workload))
    }

    /// The region size of the sized workloads.
    pub fn region_size(&self) -> u64 {
        self.size.unwrap_or(if self.host { 64 << 20 } else { G1 })
    }

    /// The inspect workload's region: `--size` (default 1 GiB) rounded up to whole 2 MiB pages.
    pub fn inspect_size(&self) -> Result<u64, String> {
        rounded_for_thp(self.size.unwrap_or(INSPECT_DEFAULT_SIZE))
    }

    /// The growth sizes, in order, each once.
    pub fn sweep_sizes(&self) -> Vec<u64> {
        // Real memory is populated for every size: keep its sweep within what a machine holds.
        let mut s = match (self.sweep.is_empty(), self.host) {
            (false, _) => self.sweep.clone(),
            (true, false) => DEFAULT_SWEEP.to_vec(),
            (true, true) => DEFAULT_SWEEP[..3].to_vec(),
        };
        s.sort_unstable();
        s.dedup();
        s
    }
}

/// The default growth sweep: 64 MiB to 64 GiB.
pub const DEFAULT_SWEEP: [u64; 6] = [64 << 20, 256 << 20, 1 << 30, 4 << 30, 16 << 30, 64 << 30];

/// Refuses options that cannot run, before anything is measured: unknown workloads, a
/// simulated-memory-only workload named with `--memory host`, `--size` or `--sweep` that no
/// chosen workload uses, and sizes that are zero, not a multiple of 4K, beyond [`MAX_SIZE`] or
/// beyond this machine's available memory.
pub fn check(opts: &Options) -> Result<(), String> {
    if let Some(w) = opts
        .workloads
        .iter()
        .find(|w| !WORKLOADS.contains(&w.as_str()))
    {
        return Err(format!(
            "unknown workload {w:?}: choose from {}",
            WORKLOADS.join(", ")
        ));
    }
    if opts.host {
        if let Some(w) = opts
            .workloads
            .iter()
            .find(|w| SIM_ONLY.contains(&w.as_str()))
        {
            return Err(format!(
                "--workload {w} runs on simulated memory only; drop --memory host to run it"
            ));
        }
    } else if let Some(w) = opts
        .workloads
        .iter()
        .find(|w| HOST_ONLY.contains(&w.as_str()))
    {
        return Err(format!(
            "--workload {w} reads this process's real memory through /proc; add --memory host \
             (as root: pfns need CAP_SYS_ADMIN)"
        ));
    }
    if opts.size.is_some() && !SIZED.iter().any(|w| opts.runs(w)) {
        return Err(format!(
            "--size is the region size of {}; none of them is among the workloads named",
            SIZED.join(", ")
        ));
    }
    if !opts.sweep.is_empty() && !opts.runs("growth") {
        return Err(
            "--sweep sets the sizes of the growth workload, which is not among the workloads named"
                .into(),
        );
    }
    if let Some(s) = opts.size {
        let scattered = opts.runs("fragmented");
        check_size("--size", s, opts.host, scattered)?;
        if opts.runs("threads") && s < 2 * K4 {
            return Err(format!(
                "--size {}: the threads workload needs at least 8K (its memlock case maps half of the region)",
                show_size(s)
            ));
        }
    }
    for &s in &opts.sweep {
        check_size("--sweep", s, opts.host, false)?;
    }
    if opts.runs("inspect") {
        // The region is whole 2 MiB pages: the rounded size must fit too.
        let s = opts.inspect_size()?;
        check_size("--size", s, opts.host, false)
            .map_err(|e| format!("{e} (the inspect workload rounds it up to whole 2M pages)"))?;
    }
    Ok(())
}

/// `size` rounded up to whole 2 MiB pages (the inspect workload's THP region).
fn rounded_for_thp(size: u64) -> Result<u64, String> {
    size.checked_next_multiple_of(M2)
        .ok_or_else(|| format!("--size {}: rounded up to 2M it overflows", show_size(size)))
}

/// `4096 (4K)`, `5000`, `18446744073709551615 (2^64-1)`, `18446744073709547520 (about
/// 16.0E)`: what was typed, and its unit form.
fn show_size(s: u64) -> String {
    let h = human(s);
    if s == u64::MAX {
        format!("{s} (2^64-1)")
    } else if h == s.to_string() {
        h
    } else if h.len() > 6 {
        format!("{s} (about {})", human_approx(s))
    } else {
        format!("{s} ({h})")
    }
}

/// One region size: at least a page, page aligned, within the IOVA window when rounded up to
/// the largest backing's page (1 GiB), and within this machine's memory.
/// `scattered`: the region is also mapped in scattered placement (one pin record per page).
fn check_size(flag: &str, s: u64, host: bool, scattered: bool) -> Result<(), String> {
    if s == 0 {
        return Err(format!("{flag} 0: a region needs at least one 4K page"));
    }
    if !s.is_multiple_of(K4) {
        let hint = s
            .checked_next_multiple_of(K4)
            .map(|r| format!("; the next page-aligned size is {}", show_size(r)))
            .unwrap_or_default();
        return Err(format!(
            "{flag} {}: not a multiple of the 4K page size{hint}",
            show_size(s)
        ));
    }
    let rounded = s.checked_next_multiple_of(G1);
    if rounded.is_none_or(|r| r > MAX_SIZE) {
        return Err(format!(
            "{flag} {}: larger than the bench's IOVA window of {} (mappings start at 1T in a 48-bit x86_64 domain, and hugetlb-1g rounds up to 1G)",
            show_size(s),
            human(MAX_SIZE)
        ));
    }
    if let Some(avail) = mem_available() {
        let (need, what) = if host {
            (s, "--memory host populates the whole region")
        } else {
            (
                sim_footprint(s, scattered),
                "simulated memory keeps its page tables and pin records in this process",
            )
        };
        if need > avail {
            return Err(format!(
                "{flag} {}: needs about {} of memory ({what}); this machine has {} available",
                show_size(s),
                human_approx(need),
                human_approx(avail)
            ));
        }
    }
    Ok(())
}

/// What simulated memory of `size` bytes costs this process at most, with margin: the 4K
/// leaves' page tables (8 bytes per page; measured 13 MB for 4 GiB) or, in scattered placement,
/// one pin record per page (measured 74 MB for 4 GiB), plus 64 MiB for the rest.
fn sim_footprint(size: u64, scattered: bool) -> u64 {
    let per_byte = if scattered { 48 } else { 256 };
    (size / per_byte).saturating_add(64 << 20)
}

/// `MemAvailable` from `/proc/meminfo`, in bytes; `None` where it cannot be read.
fn mem_available() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = s
        .lines()
        .find(|l| l.starts_with("MemAvailable:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    kib.checked_mul(1024)
}

/// A size rounded for reading: `1.5G`, `510G`, `64M`.
fn human_approx(b: u64) -> String {
    for (s, u) in [
        (1u64 << 60, "E"),
        (1 << 50, "P"),
        (1 << 40, "T"),
        (1 << 30, "G"),
        (1 << 20, "M"),
        (1 << 10, "K"),
    ] {
        if b >= s {
            let x = b as f64 / s as f64;
            return if x >= 100.0 {
                format!("{x:.0}{u}")
            } else {
                format!("{x:.1}{u}")
            };
        }
    }
    format!("{b}")
}

fn x86() -> Domain {
    Domain::new(DomainConfig::new(Format::X86_64 { levels: 4 })).expect("x86_64 domain")
}

fn container<M: Memory>(mm: M, strategy: Strategy, memlock: Option<u64>) -> Container<M> {
    // The entry limit raised as a user of many small maps does (the module parameter).
    let cfg = Config {
        strategy,
        memlock,
        check_unpin_order: false,
        dma_entry_limit: u32::MAX,
        ..Config::default()
    };
    let mut c = Container::new(cfg, mm);
    c.attach("d0", x86(), vec![]).expect("attach");
    c
}

fn leaves_of<M: Memory>(c: &Container<M>) -> BTreeMap<u64, u64> {
    c.domain("d0")
        .map(|d| d.leaves_by_size().into_iter().collect())
        .unwrap_or_default()
}

/// Runs `f` `reps` times (at least once) and gathers each of its `N` figures over the runs.
fn repeat<const N: usize>(
    reps: usize,
    mut f: impl FnMut() -> Result<[f64; N], String>,
) -> Result<[Vec<f64>; N], String> {
    let mut all: [Vec<f64>; N] = std::array::from_fn(|_| Vec::new());
    for _ in 0..reps.max(1) {
        for (v, x) in all.iter_mut().zip(f()?) {
            v.push(x);
        }
    }
    Ok(all)
}

/// Runs of a map-unmap measurement: 5 up to 1 GiB, 3 above (a median needs three).
fn reps_for(size: u64) -> usize {
    if size <= G1 {
        5
    } else {
        3
    }
}

/// One repetition of a map-unmap measurement.
#[derive(Clone, Debug, Default)]
pub struct Timing {
    /// The engine's map time.
    pub map: Duration,
    /// The engine's unmap time.
    pub unmap: Duration,
    /// Leaves installed, by page size.
    pub leaves: BTreeMap<u64, u64>,
    /// The machine's floor for the same memory (real memory only): pagemap read plus `mlock`,
    /// and `munlock`.
    pub floor: Option<(Duration, Duration)>,
}

/// Map then unmap one region of `size` bytes; returns the timings and the leaves installed.
fn map_unmap_once<M: Memory>(
    mm: M,
    spec: &MmapSpec,
    strategy: Strategy,
) -> Result<(Duration, Duration, BTreeMap<u64, u64>), String> {
    let mut c = container(mm, strategy, None);
    let v = c.mm_mut().mmap(spec).map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    c.map_dma(&MapDma::rw(v, IOVA, spec.size))
        .map_err(|e| format!("map: {e}"))?;
    let t1 = Instant::now();
    let leaves = leaves_of(&c);
    let t2 = Instant::now();
    c.unmap_dma(&UnmapDma::range(IOVA, spec.size))
        .map_err(|e| format!("unmap: {e}"))?;
    let (m, u) = (t1 - t0, t2.elapsed());
    // A call of a few microseconds (a 1G folio) is timed as the mean of many warm repetitions,
    // so that the clock's own cost and a cold first call do not dominate it.
    if m + u < Duration::from_micros(100) {
        let reps = 1000u32;
        let (mut tm, mut tu) = (Duration::ZERO, Duration::ZERO);
        for _ in 0..reps {
            let t0 = Instant::now();
            c.map_dma(&MapDma::rw(v, IOVA, spec.size))
                .map_err(|e| format!("map: {e}"))?;
            let t1 = Instant::now();
            c.unmap_dma(&UnmapDma::range(IOVA, spec.size))
                .map_err(|e| format!("unmap: {e}"))?;
            tm += t1 - t0;
            tu += t1.elapsed();
        }
        return Ok((tm / reps, tu / reps, leaves));
    }
    Ok((m, u, leaves))
}

fn per_page(d: Duration, size: u64) -> f64 {
    d.as_nanos() as f64 / (size / K4).max(1) as f64
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A source of fresh memory for each repetition.
pub trait MemoryFactory {
    /// `sim` or `host`.
    fn name(&self) -> &'static str;
    /// Maps then unmaps one fresh region of `spec`: the engine's times, the leaves installed,
    /// and on real memory the floor.
    fn measure(&self, spec: &MmapSpec, strategy: Strategy) -> Result<Timing, String>;
}

/// Simulated memory (`type1::mm::sim`), fresh for each repetition.
pub struct Sim;

/// This process's real memory (`type1::mm::host`): each repetition maps and populates a fresh
/// region (outside the timed part) and releases it afterwards.
pub struct Host;

impl MemoryFactory for Host {
    fn name(&self) -> &'static str {
        "host"
    }
    fn measure(&self, spec: &MmapSpec, strategy: Strategy) -> Result<Timing, String> {
        let mm = type1::mm::host::HostMm::new().map_err(|e| e.to_string())?;
        let (map, unmap, leaves) = map_unmap_once(mm, spec, strategy)?;
        Ok(Timing {
            map,
            unmap,
            leaves,
            floor: Some(host_floor(spec)?),
        })
    }
}

/// Read the pagemap entries of `[vaddr, vaddr + size)` as the machine's floor does: 4096
/// entries per `pread` into `buf` (at least 4096 × 8 bytes), the figures themselves unused.
fn read_pagemap(
    pagemap: &std::fs::File,
    vaddr: u64,
    size: u64,
    buf: &mut [u8],
) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let (mut idx, end) = (vaddr / K4, (vaddr + size) / K4);
    while idx < end {
        let n = ((end - idx) as usize).min(4096) * 8;
        pagemap.read_exact_at(&mut buf[..n], idx * 8)?;
        idx += (n / 8) as u64;
    }
    std::hint::black_box(&buf);
    Ok(())
}

/// The machine's floor for pinning a fresh, populated region of `spec` (made by `HostMm`, as
/// the engine's): read its pagemap, 4096 entries per read, and `mlock` it; then `munlock` it.
fn host_floor(spec: &MmapSpec) -> Result<(Duration, Duration), String> {
    let mut mm = type1::mm::host::HostMm::new().map_err(|e| e.to_string())?;
    let v = mm.mmap(spec).map_err(|e| e.to_string())?;
    let pagemap = std::fs::File::open("/proc/self/pagemap").map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 4096 * 8];
    let t0 = Instant::now();
    read_pagemap(&pagemap, v, spec.size, &mut buf).map_err(|e| format!("floor: pagemap: {e}"))?;
    type1::sys::mlock(v, spec.size).map_err(|e| format!("floor: mlock: {e}"))?;
    let t1 = Instant::now();
    type1::sys::munlock(v, spec.size).map_err(|e| format!("floor: munlock: {e}"))?;
    Ok((t1 - t0, t1.elapsed()))
}

/// Real memory, after checking that this process can read pfns.
pub fn host_factory() -> Result<Box<dyn MemoryFactory>, String> {
    type1::mm::host::HostMm::new().map_err(|e| e.to_string())?;
    Ok(Box::new(Host))
}

impl MemoryFactory for Sim {
    fn name(&self) -> &'static str {
        "sim"
    }
    fn measure(&self, spec: &MmapSpec, strategy: Strategy) -> Result<Timing, String> {
        let (map, unmap, leaves) = map_unmap_once(SimMm::new(), spec, strategy)?;
        Ok(Timing {
            map,
            unmap,
            leaves,
            floor: None,
        })
    }
}

const BACKINGS: [Backing; 4] = [
    Backing::Page4k,
    Backing::Thp,
    Backing::Hugetlb2m,
    Backing::Hugetlb1g,
];
const STRATEGIES: [Strategy; 3] = [Strategy::PerPage, Strategy::Contiguous, Strategy::Folio];

/// `size` rounded up to a whole number of `backing`'s pages (hugetlb maps whole huge pages).
fn rounded_for(backing: Backing, size: u64) -> Result<u64, String> {
    size.checked_next_multiple_of(backing.granule())
        .ok_or_else(|| format!("{size:#x} rounded up to {} overflows", backing.name()))
}

/// The backing's name as the table shows it (`4k-scattered` for scattered placement).
fn backing_label(backing: Backing, layout: Layout) -> String {
    if layout == Layout::Scattered {
        format!("{}-scattered", backing.name())
    } else {
        backing.name().to_string()
    }
}

fn map_unmap_one(
    mem: &dyn MemoryFactory,
    workload: &'static str,
    backing: Backing,
    layout: Layout,
    strategy: Strategy,
    size: u64,
) -> Result<Measurement, String> {
    let mut spec = MmapSpec::new("bench", size, backing);
    spec.layout = layout;
    spec.seed = 1;
    let mut leaves = BTreeMap::new();
    let mut floored = false;
    let [m, u, fm, fu] = repeat(reps_for(size), || {
        let t = mem.measure(&spec, strategy)?;
        leaves = t.leaves;
        floored = t.floor.is_some();
        let (fm, fu) = t.floor.unwrap_or_default();
        Ok([t.map, t.unmap, fm, fu].map(|d| per_page(d, size)))
    })?;
    let mut r = Measurement::new(
        workload,
        &backing_label(backing, layout),
        mem.name(),
        strategy.name(),
        size,
    );
    r.map_ns_per_page = Stat::of(&m);
    r.unmap_ns_per_page = Stat::of(&u);
    r.leaves = leaves;
    if floored {
        if let (Some(fm), Some(fu), Some(m), Some(u)) = (
            Stat::of(&fm),
            Stat::of(&fu),
            r.map_ns_per_page,
            r.unmap_ns_per_page,
        ) {
            r.stats.insert("floor_map_ns_per_page", fm);
            r.stats.insert("floor_unmap_ns_per_page", fu);
            r.extra
                .insert("map_vs_floor", json!(round(m.median / fm.median)));
            r.extra
                .insert("unmap_vs_floor", json!(round(u.median / fu.median)));
        }
    }
    Ok(r)
}

/// A 1 TiB guest as QEMU maps one: guest RAM is one THP block mapped at IOVA = guest physical
/// address, 640K at 0 and then 1 MiB up to 3 GiB, and above the hole one 1 GiB buffer of 1G pages
/// mapped again and again from 4 GiB up to 1 TiB; then unmap-all. Run with `strategy`, three
/// times.
pub fn huge_guest(strategy: Strategy) -> Result<Measurement, String> {
    let mut leaves = BTreeMap::new();
    let (mut tables, mut engine, mut calls, mut size) = (0, 0, 0, 0);
    let [tm, tu] = repeat(3, || {
        let mut c = container(SimMm::new(), strategy, None);
        let ram = c
            .mm_mut()
            .mmap(&MmapSpec::new("ram", 3 * G1, Backing::Thp))
            .map_err(|e| e.to_string())?;
        let buf = c
            .mm_mut()
            .mmap(&MmapSpec::new("buf", G1, Backing::Hugetlb1g))
            .map_err(|e| e.to_string())?;
        let mut maps = vec![
            (ram, 0u64, 640u64 << 10),
            (ram + (1 << 20), 1 << 20, 3 * G1 - (1 << 20)),
        ];
        let mut iova = 4 * G1;
        while iova < (1 << 40) {
            maps.push((buf, iova, G1));
            iova += G1;
        }
        let t0 = Instant::now();
        for &(v, i, s) in &maps {
            c.map_dma(&MapDma::rw(v, i, s))
                .map_err(|e| format!("map at {i:#x}: {e}"))?;
        }
        let t1 = Instant::now();
        leaves = leaves_of(&c);
        tables = c.domain("d0").map_or(0, |d| d.table_pages());
        engine = c.footprint_estimate() + c.mm().footprint_estimate();
        let unmapped = c
            .unmap_dma(&UnmapDma::all())
            .map_err(|e| e.to_string())?
            .size;
        let t2 = Instant::now();
        size = maps.iter().map(|m| m.2).sum();
        calls = maps.len();
        if unmapped != size {
            return Err(format!(
                "unmap-all returned {unmapped:#x}, expected {size:#x}"
            ));
        }
        Ok([t1 - t0, t2 - t1].map(ms))
    })?;
    let mut r = Measurement::new("huge-guest", "thp+hugetlb-1g", "sim", strategy.name(), size);
    let pages = (size / K4) as f64;
    let per_page = |v: &[f64]| Stat::of(&v.iter().map(|t| t * 1e6 / pages).collect::<Vec<_>>());
    r.map_ns_per_page = per_page(&tm);
    r.unmap_ns_per_page = per_page(&tu);
    r.leaves = leaves;
    let total: Vec<f64> = tm.iter().zip(&tu).map(|(m, u)| m + u).collect();
    for (k, v) in [("map_ms", &tm), ("unmap_all_ms", &tu), ("total_ms", &total)] {
        if let Some(s) = Stat::of(v) {
            r.stats.insert(k, s);
        }
    }
    r.extra.insert("map_calls", json!(calls));
    r.extra.insert("table_pages", json!(tables));
    r.extra.insert("engine_bytes_estimate", json!(engine));
    Ok(r)
}

/// 262,144 maps of 4 KiB over 1 GiB, then one unmap of all of it; three times.
pub fn small_maps() -> Result<Measurement, String> {
    let size = G1;
    let n = size / K4;
    let mut leaves = BTreeMap::new();
    let [tm, tu, tu_ms] = repeat(3, || {
        let mut c = container(SimMm::new(), Strategy::Contiguous, None);
        let v = c
            .mm_mut()
            .mmap(&MmapSpec::new("m", size, Backing::Page4k))
            .map_err(|e| e.to_string())?;
        let t0 = Instant::now();
        for i in 0..n {
            c.map_dma(&MapDma::rw(v + i * K4, IOVA + i * K4, K4))
                .map_err(|e| e.to_string())?;
        }
        let t1 = Instant::now();
        leaves = leaves_of(&c);
        let got = c
            .unmap_dma(&UnmapDma::range(IOVA, size))
            .map_err(|e| e.to_string())?
            .size;
        let t2 = Instant::now();
        if got != size {
            return Err(format!("unmap returned {got:#x}, expected {size:#x}"));
        }
        Ok([
            per_page(t1 - t0, size),
            per_page(t2 - t1, size),
            ms(t2 - t1),
        ])
    })?;
    let mut r = Measurement::new("small-maps", "4k", "sim", "contiguous", size);
    r.map_ns_per_page = Stat::of(&tm);
    r.unmap_ns_per_page = Stat::of(&tu);
    r.leaves = leaves;
    r.extra.insert("map_calls", json!(n));
    if let Some(s) = Stat::of(&tu_ms) {
        r.stats.insert("unmap_ms", s);
    }
    Ok(r)
}

/// The page-table micro-benchmark cases: (name, iova, paddr, bytes per call). The 256 4K
/// leaves' iova and paddr are not co-aligned mod 2M, so they stay 4K.
const PAGETABLE_CASES: [(&str, u64, u64, u64); 4] = [
    ("4k", 0x1000, 0x1_0000_1000, K4),
    ("2m", M2, 1 << 33, M2),
    ("1g", G1, 1 << 34, G1),
    ("256x4k", 0x1000, 0x1_0000_2000, 256 * K4),
];

/// The iommu crate's page-table micro-benchmark, one case of [`PAGETABLE_CASES`]: 200 batches of
/// 1000 consecutive maps (sharing table pages, as a real run of maps does) and their unmaps,
/// each batch one run, after one uncounted batch that allocates the table pages. Figures are per call: a page table maps no memory, so there is no time
/// per page or GB/s.
pub fn pagetable(case: usize) -> Result<Measurement, String> {
    let (name, iova, paddr, size) = PAGETABLE_CASES[case % PAGETABLE_CASES.len()];
    let mut d = x86();
    let batch = 1000u64;
    // One batch first, not counted: it allocates the table pages the others reuse.
    let mut first = true;
    let [tm, tu] = repeat(201, || {
        let t0 = Instant::now();
        for k in 0..batch {
            d.map(iova + k * size, paddr + k * size, size, iommu::Prot::RW)
                .map_err(|e| format!("pagetable {name}: map: {e}"))?;
        }
        let t1 = Instant::now();
        for k in 0..batch {
            d.unmap(iova + k * size, size);
        }
        let t2 = Instant::now();
        if std::mem::take(&mut first) {
            return Ok([f64::NAN; 2]);
        }
        Ok([t1 - t0, t2 - t1].map(|t| t.as_nanos() as f64 / batch as f64))
    })?;
    let mut r = Measurement::new("pagetable", name, "sim", "-", size);
    for (k, v) in [("map_ns_per_call", &tm), ("unmap_ns_per_call", &tu)] {
        if let Some(s) = Stat::of(v) {
            r.stats.insert(k, s);
        }
    }
    Ok(r)
}

/// One run of `nthreads` threads mapping `size` bytes of THP into one container, in 2 MiB
/// calls (the last one shorter when `size` is not a multiple of 2 MiB), the calls split evenly
/// between the threads. Returns the time and the leaves installed.
fn threads_once(size: u64, nthreads: u64) -> Result<(Duration, BTreeMap<u64, u64>), String> {
    let mut c = container(SimMm::new(), Strategy::Contiguous, None);
    let v = c
        .mm_mut()
        .mmap(&MmapSpec::new("m", size, Backing::Thp))
        .map_err(|e| e.to_string())?;
    let c = Arc::new(Mutex::new(c));
    let chunks = size.div_ceil(M2);
    let t0 = Instant::now();
    let handles: Vec<_> = (0..nthreads)
        .map(|t| {
            let c = Arc::clone(&c);
            let (first, end) = (chunks * t / nthreads, chunks * (t + 1) / nthreads);
            std::thread::spawn(move || -> Result<(), String> {
                for k in first..end {
                    let off = k * M2;
                    let len = M2.min(size - off);
                    c.lock()
                        .map_err(|_| "the container lock was poisoned".to_string())?
                        .map_dma(&MapDma::rw(v + off, IOVA + off, len))
                        .map_err(|e| format!("map at +{off:#x}: {e}"))?;
                }
                Ok(())
            })
        })
        .collect();
    for h in handles {
        h.join()
            .map_err(|_| "a mapping thread panicked".to_string())??;
    }
    let t = t0.elapsed();
    let leaves = leaves_of(&*c.lock().map_err(|_| "the container lock was poisoned")?);
    Ok((t, leaves))
}

/// Two threads mapping disjoint halves of one region into one container (serialised by the
/// container lock, as the kernel's `iommu->lock`), against one thread; and a memlock overflow
/// halfway through a large map, timing the unwind against unmapping what was mapped. Any
/// page-aligned `size` of at least 8K.
pub fn threads(size: u64) -> Result<Vec<Measurement>, String> {
    if size < 2 * K4 || !size.is_multiple_of(K4) {
        return Err(format!(
            "threads: the region must be page aligned and at least 8K, not {}",
            show_size(size)
        ));
    }
    let mut leaves = BTreeMap::new();
    let [one, two] = repeat(3, || {
        let (one, _) = threads_once(size, 1)?;
        let (two, l) = threads_once(size, 2)?;
        leaves = l;
        Ok([one, two].map(|d| per_page(d, size)))
    })?;
    let mut r = Measurement::new("threads", "thp", "sim", "contiguous", size);
    r.map_ns_per_page = Stat::of(&two);
    r.leaves = leaves;
    r.extra.insert("threads", json!(2));
    if let (Some(o), Some(t)) = (Stat::of(&one), r.map_ns_per_page) {
        r.stats.insert("one_thread_map_ns_per_page", o);
        r.extra.insert("speedup", json!(round(o.median / t.median)));
    }

    // Memlock overflow halfway: a 4K-backed map of `size` with a limit of half of it.
    let half = (size / 2) / K4 * K4;
    let [unwind, unmap_half] = repeat(3, || {
        let mut c = container(SimMm::new(), Strategy::Contiguous, Some(half));
        let v = c
            .mm_mut()
            .mmap(&MmapSpec::new("m", size, Backing::Page4k))
            .map_err(|e| e.to_string())?;
        let t0 = Instant::now();
        let e = c.map_dma(&MapDma::rw(v, IOVA, size));
        let t = t0.elapsed();
        if e.is_ok() {
            return Err("the over-limit map succeeded".into());
        }
        // The same first half mapped on its own, then unmapped.
        c.map_dma(&MapDma::rw(v, IOVA, half))
            .map_err(|e| e.to_string())?;
        let t1 = Instant::now();
        c.unmap_dma(&UnmapDma::range(IOVA, half))
            .map_err(|e| e.to_string())?;
        let u = t1.elapsed();
        let left = c.mm().pinned_pages();
        if left != 0 {
            return Err(format!("{left} pins leaked after the unwind"));
        }
        Ok([ms(t), ms(u)])
    })?;
    let mut u = Measurement::new("threads", "4k", "sim", "contiguous", size);
    u.extra.insert("case", json!("memlock-overflow-unwind"));
    u.extra.insert("memlock_limit", json!(half));
    for (k, v) in [
        ("failed_map_with_unwind_ms", &unwind),
        ("unmap_of_the_mapped_half_ms", &unmap_half),
    ] {
        if let Some(s) = Stat::of(v) {
            u.stats.insert(k, s);
        }
    }
    Ok(vec![r, u])
}

/// The inspect workload: a populated THP region of `size` bytes (whole 2 MiB pages) in this
/// process, made outside the timed part; each run times (a) reading its pagemap alone, 4096
/// entries per read (as the floor of map-unmap), then (b) `type1::inspect::inspect` of this
/// process restricted to it with the command line's default options (what `type1 inspect --pid
/// PID --range START-END` runs). The region is released before the figures are put together.
pub fn inspect_thp(size: u64) -> Result<Measurement, String> {
    if size == 0 || !size.is_multiple_of(M2) {
        return Err(format!(
            "inspect: the region must be whole 2M pages, not {}",
            show_size(size)
        ));
    }
    // Made and populated (MADV_HUGEPAGE, MADV_POPULATE_WRITE) as the engine's THP regions are.
    let mut mm = type1::mm::host::HostMm::new().map_err(|e| format!("inspect: {e}"))?;
    let v = mm
        .mmap(&MmapSpec::new("inspect", size, Backing::Thp))
        .map_err(|e| format!("inspect: {e}"))?;
    let pagemap = std::fs::File::open("/proc/self/pagemap")
        .map_err(|e| format!("inspect: /proc/self/pagemap: {e}"))?;
    let mut o = type1::inspect::Options::new(K4 | M2 | G1);
    o.ranges = vec![(v, v + size)];
    let pid = std::process::id();
    let mut buf = vec![0u8; 4096 * 8];
    let mut report = None;
    let timed = repeat(reps_for(size), || {
        let t0 = Instant::now();
        read_pagemap(&pagemap, v, size, &mut buf).map_err(|e| format!("inspect: pagemap: {e}"))?;
        let t1 = Instant::now();
        let r = type1::inspect::inspect(pid, &o).map_err(|e| format!("inspect: {e}"))?;
        let t2 = Instant::now();
        report = Some(r);
        Ok([per_page(t1 - t0, size), per_page(t2 - t1, size)])
    });
    drop(mm);
    let [pm, ins] = timed?;
    let r = report.ok_or("inspect: no run")?;
    let t = &r.total;
    if t.resident_pages != size / K4 {
        return Err(format!(
            "inspect: {} of the region's {} pages resident after populating it",
            t.resident_pages,
            size / K4
        ));
    }
    let mut out = Measurement::new("inspect", "thp", "host", "-", size);
    out.leaves = t
        .leaves_iova_eq_vaddr
        .iter()
        .filter(|l| l.leaves > 0)
        .map(|l| (l.pgsize, l.leaves))
        .collect();
    if let (Some(p), Some(i)) = (Stat::of(&pm), Stat::of(&ins)) {
        out.stats.insert("pagemap_ns_per_page", p);
        out.stats.insert("inspect_ns_per_page", i);
        out.extra
            .insert("inspect_vs_pagemap", json!(round(i.median / p.median)));
    }
    out.extra.insert("thp_pages", json!(t.thp_pages));
    out.extra
        .insert("kpageflags_entries", json!(r.reads.kpageflags_entries));
    Ok(out)
}

/// One measurement of the plan, in the order they run.
#[derive(Clone, Debug)]
enum Step {
    MapUnmap {
        workload: &'static str,
        backing: Backing,
        layout: Layout,
        strategy: Strategy,
        size: u64,
    },
    HugeGuest(Strategy),
    SmallMaps,
    Pagetable(usize),
    Threads(u64),
    Inspect(u64),
}

impl Step {
    fn label(&self) -> String {
        match self {
            Step::MapUnmap {
                workload,
                backing,
                layout,
                strategy,
                size,
            } => format!(
                "{workload} {} {} {}",
                backing_label(*backing, *layout),
                strategy.name(),
                human(*size)
            ),
            Step::HugeGuest(s) => format!("huge-guest 1T of 1G pages and 3G of THP, {}", s.name()),
            Step::SmallMaps => "small-maps 262144 maps of 4K".into(),
            Step::Pagetable(i) => format!("pagetable {}", PAGETABLE_CASES[*i].0),
            Step::Threads(size) => {
                format!("threads {}: 1 and 2 threads, memlock unwind", human(*size))
            }
            Step::Inspect(size) => format!(
                "inspect thp {}: pagemap read and inspect of the range",
                human(*size)
            ),
        }
    }

    /// A rough cost in ns (map + unmap per 4 KiB page on simulated memory, as measured on a
    /// 2-core Xeon, times the runs), for the estimate of the time left. Only ratios matter:
    /// the estimate scales them by the time the finished steps really took.
    fn weight(&self, host: bool) -> f64 {
        let pages = |size: u64| (size / K4) as f64;
        match *self {
            Step::MapUnmap {
                backing,
                layout,
                strategy,
                size,
                ..
            } => {
                let ns = match (strategy, backing, layout) {
                    // 450 ns at 1G, up to 1000 ns at 64G.
                    (Strategy::PerPage, _, _) => 600.0,
                    (_, _, Layout::Scattered) => 1250.0,
                    (_, Backing::Page4k, _) => 25.0,
                    (Strategy::Contiguous, _, _) => 8.0,
                    _ => 0.1,
                };
                // Real memory is populated (written) and its floor measured in every run.
                let populate = if host { 400.0 } else { 0.0 };
                reps_for(size) as f64 * (pages(size) * (ns + populate) + 2e5)
            }
            Step::HugeGuest(Strategy::Contiguous) => 3.0 * 2.5e9,
            Step::HugeGuest(_) => 3.0 * 2e6,
            Step::SmallMaps => 3.0 * pages(G1) * 1650.0,
            Step::Pagetable(i) => 201.0 * 1000.0 * if i == 3 { 300.0 } else { 60.0 },
            Step::Threads(size) => 3.0 * pages(size) * (3.5 + 30.0 + 5.0) + 1e6,
            // Populated once (zeroing ~100 ns per 4K), then pagemap and inspect ~5-20 ns each.
            Step::Inspect(size) => pages(size) * (100.0 + reps_for(size) as f64 * 25.0) + 1e6,
        }
    }

    fn run(&self, mem: &dyn MemoryFactory) -> Result<Vec<Measurement>, String> {
        match *self {
            Step::MapUnmap {
                workload,
                backing,
                layout,
                strategy,
                size,
            } => map_unmap_one(mem, workload, backing, layout, strategy, size).map(|m| vec![m]),
            Step::HugeGuest(s) => huge_guest(s).map(|m| vec![m]),
            Step::SmallMaps => small_maps().map(|m| vec![m]),
            Step::Pagetable(i) => pagetable(i).map(|m| vec![m]),
            Step::Threads(size) => threads(size),
            Step::Inspect(size) => inspect_thp(size).map(|m| vec![m]),
        }
    }
}

/// The measurements `opts` asks for, in order, after [`check`].
fn plan(opts: &Options) -> Result<Vec<Step>, String> {
    check(opts)?;
    let size = opts.region_size();
    let mut steps = Vec::new();
    let map_unmap = |workload, backing, layout, strategy, size| Step::MapUnmap {
        workload,
        backing,
        layout,
        strategy,
        size,
    };
    if opts.runs("map-unmap") {
        for backing in BACKINGS {
            let size = rounded_for(backing, size)?;
            for strategy in STRATEGIES {
                steps.push(map_unmap(
                    "map-unmap",
                    backing,
                    Layout::Contiguous,
                    strategy,
                    size,
                ));
            }
        }
    }
    if opts.runs("fragmented") {
        for layout in [Layout::Scattered, Layout::Contiguous] {
            steps.push(map_unmap(
                "fragmented",
                Backing::Page4k,
                layout,
                Strategy::Contiguous,
                size,
            ));
        }
    }
    if opts.runs("huge-guest") {
        steps.push(Step::HugeGuest(Strategy::Contiguous));
        steps.push(Step::HugeGuest(Strategy::Folio));
    }
    if opts.runs("small-maps") {
        steps.push(Step::SmallMaps);
    }
    if opts.runs("pagetable") {
        steps.extend((0..PAGETABLE_CASES.len()).map(Step::Pagetable));
    }
    if opts.runs("threads") {
        steps.push(Step::Threads(size));
    }
    if opts.runs("inspect") {
        steps.push(Step::Inspect(opts.inspect_size()?));
    }
    if opts.runs("growth") {
        let sweep = opts.sweep_sizes();
        for backing in BACKINGS {
            // Each size once after rounding up to the backing's page (64M, 256M and 1G are
            // all 1G of 1G pages).
            let mut sizes = BTreeSet::new();
            for &s in &sweep {
                sizes.insert(rounded_for(backing, s)?);
            }
            for strategy in STRATEGIES {
                for &s in &sizes {
                    steps.push(map_unmap(
                        "growth",
                        backing,
                        Layout::Contiguous,
                        strategy,
                        s,
                    ));
                }
            }
        }
    }
    Ok(steps)
}

/// `12.3 s`, `2 min 05 s`.
fn secs(t: f64) -> String {
    if t < 60.0 {
        format!("{t:.1} s")
    } else {
        let t = t.round() as u64;
        format!("{} min {:02} s", t / 60, t % 60)
    }
}

/// Run the chosen workloads, calling `progress` with `[k/N] what (elapsed, time left)` before
/// each measurement. Failures of single measurements are reported as errors beside the rest;
/// options that [`check`] refuses give no measurement and that one error.
pub fn run(
    opts: &Options,
    mem: &dyn MemoryFactory,
    progress: &mut dyn FnMut(&str),
) -> (Vec<Measurement>, Vec<String>) {
    let steps = match plan(opts) {
        Ok(s) => s,
        Err(e) => return (Vec::new(), vec![e]),
    };
    let weights: Vec<f64> = steps.iter().map(|s| s.weight(opts.host)).collect();
    let total: f64 = weights.iter().sum();
    let started = Instant::now();
    let mut done = 0.0;
    let mut ms = Vec::new();
    let mut errs = Vec::new();
    for (k, (step, w)) in steps.iter().zip(&weights).enumerate() {
        let elapsed = started.elapsed().as_secs_f64();
        let left = if done > 0.0 {
            format!("about {} left", secs(elapsed / done * (total - done)))
        } else {
            "time left not known yet".into()
        };
        progress(&format!(
            "[{}/{}] {}  ({} elapsed, {left})",
            k + 1,
            steps.len(),
            step.label(),
            secs(elapsed)
        ));
        match step.run(mem) {
            Ok(v) => ms.extend(v),
            Err(e) => errs.push(format!("{}: {e}", step.label())),
        }
        done += w;
    }
    compare_fragmented(&mut ms);
    (ms, errs)
}

/// The scattered 4K row of `fragmented` gets its medians over the contiguous row's.
fn compare_fragmented(ms: &mut [Measurement]) {
    let find = |ms: &[Measurement], backing: &str| {
        ms.iter()
            .position(|m| m.workload == "fragmented" && m.backing == backing)
    };
    let (Some(f), Some(c)) = (find(ms, "4k-scattered"), find(ms, "4k")) else {
        return;
    };
    let ratio = |a: Option<Stat>, b: Option<Stat>| Some(round(a?.median / b?.median));
    let map = ratio(ms[f].map_ns_per_page, ms[c].map_ns_per_page);
    let unmap = ratio(ms[f].unmap_ns_per_page, ms[c].unmap_ns_per_page);
    if let (Some(m), Some(u)) = (map, unmap) {
        ms[f].extra.insert("map_vs_contiguous", json!(m));
        ms[f].extra.insert("unmap_vs_contiguous", json!(u));
    }
}

/// Human size: 4K, 2M, 1G, 1T.
pub fn human(b: u64) -> String {
    for (s, u) in [
        (1u64 << 40, "T"),
        (1 << 30, "G"),
        (1 << 20, "M"),
        (1 << 10, "K"),
    ] {
        if b >= s && b.is_multiple_of(s) {
            return format!("{}{u}", b / s);
        }
    }
    for (s, u) in [(1u64 << 40, "T"), (1 << 30, "G"), (1 << 20, "M")] {
        if b >= s {
            return format!("{:.2}{u}", b as f64 / s as f64);
        }
    }
    format!("{b}")
}

/// One growth line: its backing, its strategy, and (size, map + unmap ns per page) by size.
type GrowthSeries = (Backing, Strategy, Vec<(u64, f64)>);

/// The growth rows as one series per backing × strategy (in the order they run): the size and
/// the median map + unmap ns per 4 KiB page of each point, by size.
fn growth_series(ms: &[Measurement]) -> Vec<GrowthSeries> {
    let mut out = Vec::new();
    for backing in BACKINGS {
        for strategy in STRATEGIES {
            let mut pts: Vec<(u64, f64)> = ms
                .iter()
                .filter(|m| {
                    m.workload == "growth"
                        && m.backing == backing.name()
                        && m.strategy == strategy.name()
                })
                .filter_map(|m| Some((m.size, m.total_ns_per_page()?)))
                .filter(|p| p.1 > 0.0)
                .collect();
            pts.sort_by_key(|p| p.0);
            pts.dedup_by_key(|p| p.0);
            if !pts.is_empty() {
                out.push((backing, strategy, pts));
            }
        }
    }
    out
}

/// How a growth series is drawn: the colour tells the backing (Okabe–Ito), the dash and the
/// symbol tell the strategy, so that lines that coincide stay apart by their symbols.
fn growth_style(backing: Backing, strategy: Strategy) -> Style {
    let b = BACKINGS.iter().position(|&x| x == backing).unwrap_or(0);
    let (dash, symbol) = match strategy {
        Strategy::PerPage => (None, Symbol::Circle),
        Strategy::Contiguous => (Some("7,4"), Symbol::Square),
        Strategy::Folio => (Some("2,3"), Symbol::Triangle),
    };
    Style {
        colour: Some(svg::OKABE_ITO[b].to_string()),
        dash: dash.map(str::to_string),
        symbol: Some(symbol),
    }
}

/// A number for an axis label: `0.001`, `10`, `1000`.
fn axis_number(x: f64) -> String {
    if x >= 1.0 {
        format!("{x:.0}")
    } else {
        let digits = (-x.log10()).ceil().max(0.0) as usize;
        format!("{x:.digits$}")
    }
}

/// A log-log chart of the growth rows with `y(size, ns per page)` on the y axis.
fn growth_chart(
    ms: &[Measurement],
    title: &str,
    y_label: &str,
    y_unit: &str,
    y: impl Fn(u64, f64) -> f64,
) -> String {
    let series = growth_series(ms);
    let mut sizes: Vec<u64> = series
        .iter()
        .flat_map(|s| s.2.iter().map(|p| p.0))
        .collect();
    sizes.sort_unstable();
    sizes.dedup();
    let mut x_ticks: Vec<(f64, String)> = sizes
        .iter()
        .map(|&s| ((s as f64).log10(), human(s)))
        .collect();
    if let [(x, _)] = x_ticks[..] {
        // One size: half a decade either side, so that the point sits in the middle.
        x_ticks.extend([(x - 0.5, String::new()), (x + 0.5, String::new())]);
    }
    let ys: Vec<f64> = series
        .iter()
        .flat_map(|s| s.2.iter().map(|&(size, ns)| y(size, ns).log10()))
        .collect();
    let lo = ys.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = ys.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let chart = Chart {
        title: title.into(),
        x_label: "region size (log scale)".into(),
        y_label: y_label.into(),
        x_ticks,
        y_ticks: svg::decade_ticks(lo, hi, |v| format!("{} {y_unit}", axis_number(v))),
        series: series
            .iter()
            .map(|(b, s, pts)| Series {
                label: format!("{} {}", b.name(), s.name()),
                points: pts
                    .iter()
                    .map(|&(size, ns)| ((size as f64).log10(), y(size, ns).log10()))
                    .collect(),
            })
            .collect(),
        markers: vec![],
    };
    let styles: Vec<Style> = series
        .iter()
        .map(|(b, s, _)| growth_style(*b, *s))
        .collect();
    svg::line_chart_styled(&chart, &styles)
}

/// An SVG of total map + unmap time against size, log-log, one line per backing × strategy:
/// linear cost is a straight line of slope 1.
pub fn plot(ms: &[Measurement]) -> String {
    growth_chart(
        ms,
        "type1 bench: map + unmap time against region size (log-log)",
        "map + unmap time (log scale)",
        "ms",
        |size, ns| ns * (size / K4) as f64 / 1e6,
    )
}

/// An SVG of map + unmap time per 4 KiB page against size, log-log, one line per backing ×
/// strategy: linear cost is a flat line, and a rise is a cost that grows faster than the size.
pub fn plot_per_page(ms: &[Measurement]) -> String {
    growth_chart(
        ms,
        "type1 bench: map + unmap time per 4 KiB page against region size (flat = linear)",
        "map + unmap time per 4 KiB page (log scale)",
        "ns",
        |_, ns| ns,
    )
}

/// Where `--plot FILE.svg` writes its second plot: `FILE-per-page.svg` beside it.
pub fn per_page_path(plot: &Path) -> PathBuf {
    let stem = plot
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    plot.with_file_name(format!("{stem}-per-page.svg"))
}

/// Per backing and strategy: the cost of the largest growth size over the cost at 1 GiB (or the
/// smallest), against the size ratio, that is, ns per page at the largest size over ns per page
/// at the base. Linear growth gives 1.0. Rows: (backing, strategy, base size, largest size,
/// map ratio, unmap ratio).
pub fn linearity(ms: &[Measurement]) -> Vec<(String, String, u64, u64, f64, f64)> {
    let mut by: BTreeMap<(String, String), Vec<&Measurement>> = BTreeMap::new();
    for m in ms.iter().filter(|m| m.workload == "growth") {
        by.entry((m.backing.clone(), m.strategy.clone()))
            .or_default()
            .push(m);
    }
    let mut out = Vec::new();
    for ((b, s), mut v) in by {
        v.sort_by_key(|m| m.size);
        let base = v.iter().find(|m| m.size == G1).or(v.first()).copied();
        let (Some(base), Some(top)) = (base, v.last().copied()) else {
            continue;
        };
        if top.size == base.size {
            continue;
        }
        let ratio = |t: Option<Stat>, b: Option<Stat>| Some(t?.median / b?.median);
        if let (Some(map), Some(unmap)) = (
            ratio(top.map_ns_per_page, base.map_ns_per_page),
            ratio(top.unmap_ns_per_page, base.unmap_ns_per_page),
        ) {
            out.push((b, s, base.size, top.size, map, unmap));
        }
    }
    out
}

/// A size for the table: exact where short (`64M`, `5M`, `640K`), else rounded (`~1023G`).
fn size_cell(b: u64) -> String {
    let h = human(b);
    if h.len() <= 6 {
        h
    } else {
        format!("~{}", human_approx(b))
    }
}

/// What each ratio among the notes divides.
const RATIOS: [(&str, &str); 6] = [
    (
        "map_vs_floor",
        "engine map time / the machine's floor for the same range (pagemap read + mlock)",
    ),
    (
        "unmap_vs_floor",
        "engine unmap time / the machine's floor (munlock)",
    ),
    (
        "map_vs_contiguous",
        "scattered 4K map time / contiguous 4K map time, same size",
    ),
    (
        "unmap_vs_contiguous",
        "scattered 4K unmap time / contiguous 4K unmap time, same size",
    ),
    ("speedup", "one thread's map time / two threads' map time"),
    (
        "inspect_vs_pagemap",
        "inspect of a THP range / reading that range's pagemap alone (4096 entries per read)",
    ),
];

/// A table for people: medians with their spread, `-` where a figure does not apply, then what
/// each ratio divides and the growth check.
pub fn table(ms: &[Measurement]) -> String {
    let header = [
        "workload",
        "backing",
        "memory",
        "strategy",
        "size",
        "runs",
        "map ns/page",
        "unmap ns/page",
        "map GB/s",
        "leaves",
        "notes",
    ];
    let cell = |s: Option<Stat>| s.map_or_else(|| "-".to_string(), |s| s.cell());
    let rows: Vec<Vec<String>> = ms
        .iter()
        .map(|m| {
            let leaves: Vec<String> = m
                .leaves
                .iter()
                .filter(|(_, &n)| n > 0)
                .map(|(s, n)| format!("{}×{n}", human(*s)))
                .collect();
            let mut notes: Vec<String> = m
                .stats
                .iter()
                .map(|(k, s)| format!("{k}={}", s.cell()))
                .collect();
            notes.extend(m.extra.iter().map(|(k, v)| format!("{k}={v}")));
            vec![
                m.workload.to_string(),
                m.backing.clone(),
                m.memory.to_string(),
                m.strategy.clone(),
                size_cell(m.size),
                m.runs().map_or_else(|| "-".to_string(), |n| n.to_string()),
                cell(m.map_ns_per_page),
                cell(m.unmap_ns_per_page),
                m.map_ns_per_page
                    .and_then(|s| Measurement::gbps(s.median))
                    .map_or_else(|| "-".to_string(), sig),
                leaves.join(" "),
                notes.join(" "),
            ]
        })
        .collect();
    // The run count and the three figures are right-aligned; a rule as wide as the padded columns and their
    // two-space gaps follows the header.
    let right: Vec<bool> = (0..header.len()).map(|i| (5..9).contains(&i)).collect();
    let widths = (0..header.len()).map(|i| {
        let cells = rows.iter().map(|r| r[i].chars().count());
        cells.chain([header[i].chars().count()]).max().unwrap_or(0)
    });
    let rule = "-".repeat(widths.sum::<usize>() + 2 * (header.len() - 1));
    let t = crate::report::table(&header, &rows, &right);
    let (head, body) = t.split_once('\n').unwrap_or((&t, ""));
    let mut s = format!(
        "Figures: the median of the runs (min–max), in ns per 4 KiB page; map GB/s from the median; - where a figure does not apply.\n{head}\n{rule}\n{body}"
    );
    let used: Vec<&(&str, &str)> = RATIOS
        .iter()
        .filter(|(k, _)| ms.iter().any(|m| m.extra.contains_key(k)))
        .collect();
    if !used.is_empty() {
        s += "\nRatios among the notes (of medians):\n";
        for (k, what) in used {
            s += &format!("  {k:<20} {what}\n");
        }
    }
    let lin = linearity(ms);
    if !lin.is_empty() {
        s += "\nGrowth: ns per page at the largest size / ns per page at the base size (1G if swept, else the smallest); 1.00 = linear, 2.00 = each page costs twice as much:\n";
        for (b, st, lo, hi, m, u) in lin {
            s += &format!(
                "  {b:<12} {st:<11} {} → {}: map {m:.2}  unmap {u:.2}\n",
                human(lo),
                human(hi)
            );
        }
    }
    s
}

/// `type1 bench`'s command line.
#[derive(clap::Args, Clone, Debug)]
#[command(after_help = "\
Examples:
  type1 bench                                   all workloads on simulated memory
  type1 bench --workload pagetable              the page-table micro-benchmark only (seconds)
  type1 bench --workload growth --plot g.svg    the growth sweep; writes g.svg and g-per-page.svg
  type1 bench --memory host --workload map-unmap --size 64M
  type1 bench --memory host --workload inspect --size 16G

Every figure is the median of repeated runs with its spread (min-max). Progress goes to stderr
as [k/N] with the time elapsed and an estimate of the time left.

Exit codes: 0 done; 1 a measurement failed (the others are reported); 2 refused before
measuring (unknown workload, bad size, a --plot name or path that cannot be written);
3 the report or a plot could not be written.")]
pub struct Args {
    /// Run only these workloads (repeatable; none named = all): map-unmap, fragmented,
    /// huge-guest, small-maps, pagetable, threads, growth; with --memory host, inspect (type1
    /// inspect of a THP region of this process against reading its pagemap alone).
    #[arg(long = "workload")]
    pub workloads: Vec<String>,
    /// Region size of map-unmap, fragmented, threads and inspect: a multiple of 4K [default: 1G
    /// on sim, 64M on host; inspect 1G, rounded up to whole 2M pages].
    #[arg(long, value_parser = crate::args::parse_size)]
    pub size: Option<u64>,
    /// Sizes of the growth workload, comma-separated, each a multiple of 4K [default:
    /// 64M,256M,1G,4G,16G,64G on sim, up to 1G on host].
    #[arg(long, value_parser = crate::args::parse_size, value_delimiter = ',')]
    pub sweep: Vec<u64>,
    /// Memory to pin: the deterministic model, or this process's real memory.
    #[arg(long, value_enum, default_value_t = crate::args::MemoryArg::Sim)]
    pub memory: crate::args::MemoryArg,
    /// One JSON object per measurement.
    #[arg(long)]
    pub json: bool,
    /// Draw the growth workload into FILE.svg (time against size) and FILE-per-page.svg (time
    /// per page against size: linear cost is a flat line). Needs the growth workload.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
}

/// A plot file opened for writing before anything is measured.
struct PlotFile {
    path: PathBuf,
    file: std::fs::File,
    /// Whether the bench created it (and removes it if it has nothing to draw).
    created: bool,
}

impl PlotFile {
    /// Opens (creating if needed, without truncating yet) `path` for writing.
    fn open(path: &Path) -> Result<PlotFile, String> {
        let created = !path.exists();
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| format!("--plot: cannot write {}: {e}", path.display()))?;
        Ok(PlotFile {
            path: path.to_path_buf(),
            file,
            created,
        })
    }

    fn write(mut self, svg: &str) -> Result<(), String> {
        use std::io::Write;
        self.file
            .set_len(0)
            .and_then(|()| self.file.write_all(svg.as_bytes()))
            .and_then(|()| self.file.flush())
            .map_err(|e| format!("cannot write {}: {e}", self.path.display()))
    }

    fn discard(self) {
        if self.created {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The two plot files of `--plot FILE.svg`, refused when the name is not `.svg`, the growth
/// workload does not run, or a file cannot be opened for writing.
fn open_plots(path: &Path, opts: &Options) -> Result<[PlotFile; 2], String> {
    let svg = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("svg"));
    if !svg {
        return Err(format!(
            "--plot {}: the plots are SVG; give a name ending in .svg (FILE.svg also writes FILE-per-page.svg)",
            path.display()
        ));
    }
    if !opts.runs("growth") {
        return Err(
            "--plot draws the growth workload, which is not among the workloads named; add --workload growth"
                .into(),
        );
    }
    let first = PlotFile::open(path)?;
    match PlotFile::open(&per_page_path(path)) {
        Ok(second) => Ok([first, second]),
        Err(e) => {
            first.discard();
            Err(e)
        }
    }
}

/// Runs `type1 bench`: progress on stderr, the table (or JSON) on stdout, the plot files.
/// Returns the exit code: 0; 1 when a measurement failed; 2 for options refused before
/// measuring; 3 when a plot could not be written.
pub fn main(args: Args) -> crate::output::Result<i32> {
    use crate::{errln, out, outln};
    let Args {
        workloads,
        size,
        sweep,
        memory,
        json: as_json,
        plot,
    } = args;
    let host = memory == crate::args::MemoryArg::Host;
    let opts = Options {
        workloads,
        size,
        host,
        sweep,
    };
    if let Err(e) = check(&opts) {
        errln!("bench: {e}")?;
        return Ok(2);
    }
    let factory: Box<dyn MemoryFactory> = if host {
        match host_factory() {
            Ok(f) => f,
            Err(e) => {
                errln!("bench --memory host: {e}")?;
                return Ok(2);
            }
        }
    } else {
        Box::new(Sim)
    };
    let plots = match plot.as_deref().map(|p| open_plots(p, &opts)).transpose() {
        Ok(p) => p,
        Err(e) => {
            errln!("bench: {e}")?;
            return Ok(2);
        }
    };
    if host && opts.workloads.is_empty() {
        errln!(
            "bench: --memory host skips {} (simulated memory only)",
            SIM_ONLY.join(", ")
        )?;
    }
    let started = Instant::now();
    // Progress is best effort: a closed stderr must not stop the measurements.
    let (ms, errs) = run(&opts, factory.as_ref(), &mut |p| {
        let _ = errln!("bench {p}");
    });
    // The plots first, so that a report nobody reads (a closed pipe, a full disk) does not
    // cost them; what became of them is told after the report.
    let mut code = if errs.is_empty() { 0 } else { 1 };
    let mut told = Vec::new();
    if let Some([total, per_page]) = plots {
        if growth_series(&ms).is_empty() {
            told.push("bench: no growth measurement succeeded: no plot written".to_string());
            total.discard();
            per_page.discard();
        } else {
            for (file, svg) in [(total, self::plot(&ms)), (per_page, plot_per_page(&ms))] {
                let path = file.path.clone();
                match file.write(&svg) {
                    Ok(()) => told.push(format!("bench: wrote {}", path.display())),
                    Err(e) => {
                        told.push(format!("bench: {e}"));
                        code = i32::from(crate::output::WRITE_FAILED);
                    }
                }
            }
        }
    }
    if as_json {
        for m in &ms {
            outln!("{}", m.to_json())?;
        }
    } else {
        outln!("{}", machine_line())?;
        out!("{}", table(&ms))?;
    }
    for e in &errs {
        errln!("bench: a measurement failed: {e}")?;
    }
    for t in &told {
        errln!("{t}")?;
    }
    errln!("bench: done in {}", secs(started.elapsed().as_secs_f64()))?;
    Ok(code)
}

/// The machine the figures come from.
pub fn machine_line() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    format!("machine: {cpu}, {cores} cores")
}
