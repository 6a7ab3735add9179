//! `type1 bench`: the kernel's workload shapes, timed on the engine. Each measurement maps and
//! unmaps with the real engine (`type1::Container`) over simulated or real memory; memory is
//! created and populated outside the timed part. Figures are the best of a few repetitions, and
//! meant to be compared as ratios within one run. On real memory each repetition also times the
//! machine's floor for the same backing and size outside the engine (reading the pagemap of the
//! range, 4096 entries per read, plus `mlock`; and `munlock`), reported beside the engine's cost
//! with the ratio.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use iommu::{Domain, DomainConfig, Format, SZ_1G as G1, SZ_4K as K4};
use serde_json::{json, Value};
use type1::mm::sim::SimMm;
use type1::mm::{Backing, Layout, MmapSpec};
use type1::mm::{Memory, PageSource};
use type1::{Config, Container, MapDma, Strategy, UnmapDma};

/// Where benchmark mappings go in IOVA space (1 TiB: aligned for every page size).
const IOVA: u64 = 1 << 40;

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
    /// Map time per 4 KiB page, in ns.
    pub map_ns_per_page: f64,
    /// Unmap time per 4 KiB page, in ns.
    pub unmap_ns_per_page: f64,
    /// Leaves installed, by page size.
    pub leaves: BTreeMap<u64, u64>,
    /// Workload-specific figures (calls, ns per call, bytes, speed-ups, ...).
    pub extra: BTreeMap<&'static str, Value>,
}

impl Measurement {
    fn new(
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
            map_ns_per_page: 0.0,
            unmap_ns_per_page: 0.0,
            leaves: BTreeMap::new(),
            extra: BTreeMap::new(),
        }
    }

    /// GB/s for a time per 4 KiB page.
    fn gbps(ns_per_page: f64) -> f64 {
        if ns_per_page <= 0.0 {
            0.0
        } else {
            K4 as f64 / ns_per_page
        }
    }

    /// The measurement as `--json` prints it.
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "workload": self.workload,
            "backing": self.backing,
            "memory": self.memory,
            "strategy": self.strategy,
            "size": self.size,
            "map_ns_per_page": round(self.map_ns_per_page),
            "unmap_ns_per_page": round(self.unmap_ns_per_page),
            "map_gb_per_s": round(Self::gbps(self.map_ns_per_page)),
            "unmap_gb_per_s": round(Self::gbps(self.unmap_ns_per_page)),
            "leaves": self.leaves.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
        });
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

/// A figure for the table: enough digits to compare small ones.
fn fig(x: f64) -> String {
    if x.abs() < 1.0 {
        format!("{x:.6}")
    } else {
        format!("{x:.3}")
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// Workloads by name; empty = all.
    pub workloads: Vec<String>,
    /// Region size for map-unmap and fragmented (default 1 GiB on sim, 64 MiB on host).
    pub size: Option<u64>,
    /// Measure this process's real memory instead of simulated memory.
    pub host: bool,
    /// Sizes for the growth curve (`--plot` and the linearity check).
    pub sweep: Vec<u64>,
}

/// Every workload, in the order they run.
pub const WORKLOADS: &[&str] = &[
    "map-unmap",
    "huge-guest",
    "small-maps",
    "fragmented",
    "pagetable",
    "threads",
    "growth",
];

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

/// Best of `reps` timings of `f`, which returns (map time, unmap time), each figure on its own.
fn best<const N: usize>(reps: usize, mut f: impl FnMut() -> [Duration; N]) -> [Duration; N] {
    let mut b = [Duration::MAX; N];
    for _ in 0..reps.max(1) {
        for (b, t) in b.iter_mut().zip(f()) {
            *b = (*b).min(t);
        }
    }
    b
}

fn reps_for(size: u64) -> usize {
    if size <= G1 {
        5
    } else {
        2
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
    d.as_nanos() as f64 / (size / K4) as f64
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

/// The machine's floor for pinning a fresh, populated region of `spec` (made by `HostMm`, as
/// the engine's): read its pagemap, 4096 entries per read, and `mlock` it; then `munlock` it.
fn host_floor(spec: &MmapSpec) -> Result<(Duration, Duration), String> {
    use std::os::unix::fs::FileExt;
    let mut mm = type1::mm::host::HostMm::new().map_err(|e| e.to_string())?;
    let v = mm.mmap(spec).map_err(|e| e.to_string())?;
    let pagemap = std::fs::File::open("/proc/self/pagemap").map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 4096 * 8];
    let (first, end) = (v / K4, (v + spec.size) / K4);
    let t0 = Instant::now();
    let mut idx = first;
    while idx < end {
        let n = ((end - idx) as usize).min(4096) * 8;
        pagemap
            .read_exact_at(&mut buf[..n], idx * 8)
            .map_err(|e| format!("floor: pagemap: {e}"))?;
        idx += (n / 8) as u64;
    }
    std::hint::black_box(&buf);
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
    let mut err = None;
    let mut floored = false;
    let [m, u, fm, fu] = best(reps_for(size), || match mem.measure(&spec, strategy) {
        Ok(t) => {
            leaves = t.leaves;
            floored = t.floor.is_some();
            let (fm, fu) = t.floor.unwrap_or_default();
            [t.map, t.unmap, fm, fu]
        }
        Err(e) => {
            err = Some(e);
            [Duration::ZERO; 4]
        }
    });
    if let Some(e) = err {
        return Err(e);
    }
    let name = if layout == Layout::Scattered {
        format!("{}-scattered", backing.name())
    } else {
        backing.name().to_string()
    };
    let mut r = Measurement::new(workload, &name, mem.name(), strategy.name(), size);
    r.map_ns_per_page = per_page(m, size);
    r.unmap_ns_per_page = per_page(u, size);
    r.leaves = leaves;
    if floored {
        let (fm, fu) = (per_page(fm, size), per_page(fu, size));
        r.extra.insert("floor_map_ns_per_page", json!(round(fm)));
        r.extra.insert("floor_unmap_ns_per_page", json!(round(fu)));
        r.extra
            .insert("map_vs_floor", json!(round(r.map_ns_per_page / fm)));
        r.extra
            .insert("unmap_vs_floor", json!(round(r.unmap_ns_per_page / fu)));
    }
    Ok(r)
}

/// Every (backing, strategy) pair at one size.
pub fn map_unmap(
    mem: &dyn MemoryFactory,
    size: u64,
    progress: &mut dyn FnMut(&str),
) -> Vec<Result<Measurement, String>> {
    let mut out = Vec::new();
    for backing in BACKINGS {
        let size = size.next_multiple_of(backing.unit());
        for strategy in STRATEGIES {
            progress(&format!(
                "map-unmap {} {} {}",
                backing.name(),
                strategy.name(),
                human(size)
            ));
            out.push(map_unmap_one(
                mem,
                "map-unmap",
                backing,
                Layout::Contiguous,
                strategy,
                size,
            ));
        }
    }
    out
}

/// 4K memory in scattered placement: every pin run is one page.
pub fn fragmented(
    mem: &dyn MemoryFactory,
    size: u64,
    progress: &mut dyn FnMut(&str),
) -> Vec<Result<Measurement, String>> {
    progress(&format!("fragmented {}", human(size)));
    let frag = map_unmap_one(
        mem,
        "fragmented",
        Backing::Page4k,
        Layout::Scattered,
        Strategy::Contiguous,
        size,
    );
    let cont = map_unmap_one(
        mem,
        "fragmented",
        Backing::Page4k,
        Layout::Contiguous,
        Strategy::Contiguous,
        size,
    );
    if let (Ok(f), Ok(c)) = (&frag, &cont) {
        let mut f = f.clone();
        f.extra.insert(
            "map_vs_contiguous",
            json!(round(f.map_ns_per_page / c.map_ns_per_page)),
        );
        f.extra.insert(
            "unmap_vs_contiguous",
            json!(round(f.unmap_ns_per_page / c.unmap_ns_per_page)),
        );
        return vec![Ok(f), cont];
    }
    vec![frag, cont]
}

#[allow(dead_code)]
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// A 1 TiB guest as QEMU maps one: guest RAM is one THP block mapped at IOVA = guest physical
/// address, 640K at 0 and then 1 MiB up to 3 GiB, and above the hole one 1 GiB buffer of 1G pages
/// mapped again and again from 4 GiB up to 1 TiB; then unmap-all. Run with `strategy`.
pub fn huge_guest(
    strategy: Strategy,
    progress: &mut dyn FnMut(&str),
) -> Result<Measurement, String> {
    progress(&format!(
        "huge-guest 1 TiB of 1G pages, {}",
        strategy.name()
    ));
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
    let leaves = leaves_of(&c);
    let tables = c.domain("d0").map_or(0, |d| d.table_pages());
    let engine = c.footprint_estimate() + c.mm().footprint_estimate();
    let unmapped = c
        .unmap_dma(&UnmapDma::all())
        .map_err(|e| e.to_string())?
        .size;
    let t2 = Instant::now();
    let size: u64 = maps.iter().map(|m| m.2).sum();
    if unmapped != size {
        return Err(format!(
            "unmap-all returned {unmapped:#x}, expected {size:#x}"
        ));
    }
    let mut r = Measurement::new("huge-guest", "thp+hugetlb-1g", "sim", strategy.name(), size);
    r.map_ns_per_page = per_page(t1 - t0, size);
    r.unmap_ns_per_page = per_page(t2 - t1, size);
    r.leaves = leaves;
    r.extra.insert("map_calls", json!(maps.len()));
    r.extra
        .insert("map_ms", json!(round((t1 - t0).as_secs_f64() * 1e3)));
    r.extra
        .insert("unmap_all_ms", json!(round((t2 - t1).as_secs_f64() * 1e3)));
    r.extra
        .insert("total_ms", json!(round((t2 - t0).as_secs_f64() * 1e3)));
    r.extra.insert("table_pages", json!(tables));
    r.extra.insert("engine_bytes_estimate", json!(engine));
    Ok(r)
}

/// 262,144 maps of 4 KiB over 1 GiB, then one unmap of all of it.
pub fn small_maps(progress: &mut dyn FnMut(&str)) -> Result<Measurement, String> {
    progress("small-maps 262144 x 4K");
    let size = G1;
    let n = size / K4;
    let (mut tm, mut tu) = (Duration::MAX, Duration::MAX);
    let mut leaves = BTreeMap::new();
    for _ in 0..3 {
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
        tm = tm.min(t1 - t0);
        tu = tu.min(t2 - t1);
    }
    let mut r = Measurement::new("small-maps", "4k", "sim", "contiguous", size);
    r.map_ns_per_page = per_page(tm, size);
    r.unmap_ns_per_page = per_page(tu, size);
    r.leaves = leaves;
    r.extra.insert("map_calls", json!(n));
    r.extra.insert(
        "ns_per_map_call",
        json!(round(tm.as_nanos() as f64 / n as f64)),
    );
    r.extra
        .insert("unmap_ms", json!(round(tu.as_secs_f64() * 1e3)));
    Ok(r)
}

/// The iommu crate's page-table micro-benchmark: one leaf of each size, and 256 4K leaves in
/// one call (iova and paddr not co-aligned mod 2M, so they stay 4K).
pub fn pagetable(progress: &mut dyn FnMut(&str)) -> Vec<Measurement> {
    progress("pagetable");
    let mut out = Vec::new();
    let cases: [(&str, u64, u64, u64); 4] = [
        ("4k", 0x1000, 0x1_0000_1000, K4),
        ("2m", 1 << 21, 1 << 33, 1 << 21),
        ("1g", G1, 1 << 34, G1),
        ("256x4k", 0x1000, 0x1_0000_2000, 256 * K4),
    ];
    for (name, iova, paddr, size) in cases {
        let mut d = x86();
        let iters = 200_000u32;
        let mut tm = Duration::ZERO;
        let mut tu = Duration::ZERO;
        for _ in 0..iters / 1000 {
            // 1000 consecutive ranges (sharing table pages, as a real run of maps does).
            let t0 = Instant::now();
            for k in 0..1000u64 {
                d.map(iova + k * size, paddr + k * size, size, iommu::Prot::RW)
                    .expect("map");
            }
            let t1 = Instant::now();
            for k in 0..1000u64 {
                d.unmap(iova + k * size, size);
            }
            tm += t1 - t0;
            tu += t1.elapsed();
        }
        let _ = &mut d;
        let mut r = Measurement::new("pagetable", name, "sim", "-", size);
        r.map_ns_per_page = tm.as_nanos() as f64 / iters as f64 / (size / K4) as f64;
        r.unmap_ns_per_page = tu.as_nanos() as f64 / iters as f64 / (size / K4) as f64;
        r.extra.insert(
            "map_ns_per_call",
            json!(round(tm.as_nanos() as f64 / iters as f64)),
        );
        r.extra.insert(
            "unmap_ns_per_call",
            json!(round(tu.as_nanos() as f64 / iters as f64)),
        );
        out.push(r);
    }
    out
}

/// Two threads mapping disjoint halves of one region into one container (serialised by the
/// container lock, as the kernel's `iommu->lock`), against one thread; and a memlock overflow
/// halfway through a large map, timing the unwind against unmapping what was mapped.
pub fn threads(size: u64, progress: &mut dyn FnMut(&str)) -> Result<Vec<Measurement>, String> {
    progress(&format!("threads {}", human(size)));
    let chunk = 2u64 << 20;
    let run = |nthreads: u64| -> Result<Duration, String> {
        let mut c = container(SimMm::new(), Strategy::Contiguous, None);
        let v = c
            .mm_mut()
            .mmap(&MmapSpec::new("m", size, Backing::Thp))
            .map_err(|e| e.to_string())?;
        let c = Arc::new(Mutex::new(c));
        let t0 = Instant::now();
        let per = size / nthreads;
        let handles: Vec<_> = (0..nthreads)
            .map(|t| {
                let c = Arc::clone(&c);
                std::thread::spawn(move || {
                    let mut off = t * per;
                    while off < (t + 1) * per {
                        c.lock()
                            .expect("container lock")
                            .map_dma(&MapDma::rw(v + off, IOVA + off, chunk))
                            .expect("map");
                        off += chunk;
                    }
                })
            })
            .collect();
        for h in handles {
            h.join()
                .map_err(|_| "a mapping thread panicked".to_string())?;
        }
        Ok(t0.elapsed())
    };
    // The best of three runs with `nthreads` threads.
    let fastest = |nthreads: u64| -> Result<Duration, String> {
        (0..3).try_fold(Duration::MAX, |best, _| Ok(best.min(run(nthreads)?)))
    };
    let (one, two) = (fastest(1)?, fastest(2)?);
    let mut r = Measurement::new("threads", "thp", "sim", "contiguous", size);
    r.map_ns_per_page = per_page(two, size);
    r.extra.insert("threads", json!(2));
    r.extra
        .insert("one_thread_ns_per_page", json!(round(per_page(one, size))));
    r.extra.insert(
        "speedup",
        json!(round(one.as_secs_f64() / two.as_secs_f64())),
    );

    // Memlock overflow halfway: a 4K-backed map of `size` with a limit of half of it.
    let half = size / 2;
    let mut unwind = Duration::MAX;
    let mut unmap_half = Duration::MAX;
    for _ in 0..3 {
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
        unmap_half = unmap_half.min(t1.elapsed());
        unwind = unwind.min(t);
        if c.mm().pinned_pages() != 0 {
            return Err("pins leaked after the unwind".into());
        }
    }
    let mut u = Measurement::new("threads", "4k", "sim", "contiguous", size);
    u.extra.insert("case", json!("memlock-overflow-unwind"));
    u.extra.insert(
        "failed_map_with_unwind_ms",
        json!(round(unwind.as_secs_f64() * 1e3)),
    );
    u.extra.insert(
        "unmap_of_the_mapped_half_ms",
        json!(round(unmap_half.as_secs_f64() * 1e3)),
    );
    u.map_ns_per_page = per_page(unwind, half);
    u.unmap_ns_per_page = per_page(unmap_half, half);
    Ok(vec![r, u])
}

/// Map-unmap at every size of `sizes`, per backing, contiguous and folio strategies: the growth
/// curve for `--plot` and the linearity check (each size's cost / the smallest's, against the
/// size ratio).
pub fn growth(
    mem: &dyn MemoryFactory,
    sizes: &[u64],
    progress: &mut dyn FnMut(&str),
) -> Vec<Result<Measurement, String>> {
    let mut out = Vec::new();
    for backing in BACKINGS {
        for strategy in STRATEGIES {
            for &size in sizes {
                let size = size.next_multiple_of(backing.unit());
                progress(&format!(
                    "growth {} {} {}",
                    backing.name(),
                    strategy.name(),
                    human(size)
                ));
                out.push(map_unmap_one(
                    mem,
                    "growth",
                    backing,
                    Layout::Contiguous,
                    strategy,
                    size,
                ));
            }
        }
    }
    out
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

/// An SVG of total map+unmap time against size, log-log, one line per backing × strategy.
pub fn plot(ms: &[Measurement]) -> String {
    let pts: Vec<&Measurement> = ms.iter().filter(|m| m.workload == "growth").collect();
    let (w, h, l, b) = (900.0, 560.0, 80.0, 60.0);
    let t =
        |m: &Measurement| (m.map_ns_per_page + m.unmap_ns_per_page) * (m.size / K4) as f64 / 1e6; // ms
    let xs: Vec<f64> = pts.iter().map(|m| (m.size as f64).log10()).collect();
    let ys: Vec<f64> = pts.iter().map(|m| t(m).max(1e-4).log10()).collect();
    let (x0, x1) = (
        xs.iter().cloned().fold(f64::MAX, f64::min),
        xs.iter().cloned().fold(f64::MIN, f64::max),
    );
    let (y0, y1) = (
        ys.iter().cloned().fold(f64::MAX, f64::min).floor(),
        ys.iter().cloned().fold(f64::MIN, f64::max).ceil(),
    );
    let sx = |x: f64| l + (x - x0) / (x1 - x0).max(1e-9) * (w - l - 220.0);
    let sy = |y: f64| h - b - (y - y0) / (y1 - y0).max(1e-9) * (h - b - 40.0);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{}\" y=\"22\" font-size=\"15\">type1 bench: map + unmap time against region size (log-log)</text>\n",
        l
    );
    svg += &format!(
        "<line x1=\"{l}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n",
        h - b,
        w - 220.0,
        h - b
    );
    svg += &format!(
        "<line x1=\"{l}\" y1=\"40\" x2=\"{l}\" y2=\"{}\" stroke=\"black\"/>\n",
        h - b
    );
    let mut sizes: Vec<u64> = pts.iter().map(|m| m.size).collect();
    sizes.sort();
    sizes.dedup();
    for s in &sizes {
        let x = sx((*s as f64).log10());
        svg += &format!(
            "<text x=\"{x}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n",
            h - b + 18.0,
            human(*s)
        );
    }
    let mut y = y0;
    while y <= y1 {
        let py = sy(y);
        svg += &format!(
            "<line x1=\"{l}\" y1=\"{py}\" x2=\"{}\" y2=\"{py}\" stroke=\"#ddd\"/>\n",
            w - 220.0
        );
        svg += &format!(
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{} ms</text>\n",
            l - 6.0,
            py + 4.0,
            fmt_ms(10f64.powf(y))
        );
        y += 1.0;
    }
    svg += &format!(
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">region size</text>\n",
        (l + w - 220.0) / 2.0,
        h - 18.0
    );
    let colours = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"];
    let dashes = ["", "6,3", "2,3"];
    let mut series: BTreeMap<(String, String), Vec<(f64, f64)>> = BTreeMap::new();
    for (m, (&x, &y)) in pts.iter().zip(xs.iter().zip(ys.iter())) {
        series
            .entry((m.backing.clone(), m.strategy.clone()))
            .or_default()
            .push((x, y));
    }
    for (i, ((backing, strategy), mut p)) in series.into_iter().enumerate() {
        p.sort_by(|a, b| a.0.total_cmp(&b.0));
        let bi = BACKINGS
            .iter()
            .position(|bk| bk.name() == backing)
            .unwrap_or(0);
        let si = STRATEGIES
            .iter()
            .position(|s| s.name() == strategy)
            .unwrap_or(0);
        let path: Vec<String> = p
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
            .collect();
        svg += &format!(
            "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"2\" stroke-dasharray=\"{}\" points=\"{}\"/>\n",
            colours[bi % 4],
            dashes[si % 3],
            path.join(" ")
        );
        let ly = 50.0 + i as f64 * 18.0;
        svg += &format!(
            "<line x1=\"{}\" y1=\"{ly}\" x2=\"{}\" y2=\"{ly}\" stroke=\"{}\" stroke-width=\"2\" stroke-dasharray=\"{}\"/><text x=\"{}\" y=\"{}\">{backing} {strategy}</text>\n",
            w - 205.0,
            w - 175.0,
            colours[bi % 4],
            dashes[si % 3],
            w - 168.0,
            ly + 4.0
        );
    }
    svg += "</svg>\n";
    svg
}

fn fmt_ms(x: f64) -> String {
    if x >= 1.0 {
        format!("{x:.0}")
    } else {
        format!("{x}")
    }
}

/// The default growth sweep: 64 MiB to 64 GiB.
pub const DEFAULT_SWEEP: [u64; 6] = [64 << 20, 256 << 20, 1 << 30, 4 << 30, 16 << 30, 64 << 30];

/// Run the chosen workloads. Failures of single measurements are reported as errors beside the
/// rest.
pub fn run(
    opts: &Options,
    mem: &dyn MemoryFactory,
    progress: &mut dyn FnMut(&str),
) -> (Vec<Measurement>, Vec<String>) {
    let want = |w: &str| opts.workloads.is_empty() || opts.workloads.iter().any(|x| x == w);
    let size = opts.size.unwrap_or(if opts.host { 64 << 20 } else { G1 });
    let mut ms = Vec::new();
    let mut errs = Vec::new();
    let take = |r: Result<Measurement, String>,
                ms: &mut Vec<Measurement>,
                errs: &mut Vec<String>| match r {
        Ok(m) => ms.push(m),
        Err(e) => errs.push(e),
    };
    if want("map-unmap") {
        for r in map_unmap(mem, size, progress) {
            take(r, &mut ms, &mut errs);
        }
    }
    if want("fragmented") {
        for r in fragmented(mem, size, progress) {
            take(r, &mut ms, &mut errs);
        }
    }
    if !opts.host {
        if want("huge-guest") {
            for strategy in [Strategy::Contiguous, Strategy::Folio] {
                take(huge_guest(strategy, progress), &mut ms, &mut errs);
            }
        }
        if want("small-maps") {
            take(small_maps(progress), &mut ms, &mut errs);
        }
        if want("pagetable") {
            ms.extend(pagetable(progress));
        }
        if want("threads") {
            match threads(size, progress) {
                Ok(v) => ms.extend(v),
                Err(e) => errs.push(e),
            }
        }
    }
    if want("growth") {
        // Real memory is populated for every size: keep its sweep within what a machine holds.
        let sweep = match (opts.sweep.is_empty(), opts.host) {
            (false, _) => opts.sweep.clone(),
            (true, false) => DEFAULT_SWEEP.to_vec(),
            (true, true) => DEFAULT_SWEEP[..3].to_vec(),
        };
        for r in growth(mem, &sweep, progress) {
            take(r, &mut ms, &mut errs);
        }
    }
    (ms, errs)
}

/// Per backing and strategy: the cost of the largest growth size over the cost at 1 GiB (or the
/// smallest), against the size ratio. Linear growth gives 1.0.
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
        let cost = |m: &Measurement, ns: f64| ns * (m.size / K4) as f64;
        let ratio = top.size as f64 / base.size as f64;
        let map = cost(top, top.map_ns_per_page) / cost(base, base.map_ns_per_page) / ratio;
        let unmap = cost(top, top.unmap_ns_per_page) / cost(base, base.unmap_ns_per_page) / ratio;
        out.push((b, s, base.size, top.size, map, unmap));
    }
    out
}

/// A table for people.
pub fn table(ms: &[Measurement]) -> String {
    let header = [
        "workload",
        "backing",
        "memory",
        "strategy",
        "size",
        "map ns/page",
        "unmap ns/page",
        "map GB/s",
        "leaves",
        "notes",
    ];
    let rows: Vec<Vec<String>> = ms
        .iter()
        .map(|m| {
            let leaves: Vec<String> = m
                .leaves
                .iter()
                .filter(|(_, &n)| n > 0)
                .map(|(s, n)| format!("{}×{n}", human(*s)))
                .collect();
            let notes: Vec<String> = m.extra.iter().map(|(k, v)| format!("{k}={v}")).collect();
            vec![
                m.workload.to_string(),
                m.backing.clone(),
                m.memory.to_string(),
                m.strategy.clone(),
                human(m.size),
                fig(m.map_ns_per_page),
                fig(m.unmap_ns_per_page),
                format!("{:.1}", Measurement::gbps(m.map_ns_per_page)),
                leaves.join(" "),
                notes.join(" "),
            ]
        })
        .collect();
    // The three figures are right-aligned; a rule as wide as the padded columns and their
    // two-space gaps follows the header.
    let right: Vec<bool> = (0..header.len()).map(|i| (5..8).contains(&i)).collect();
    let widths = (0..header.len()).map(|i| {
        let cells = rows.iter().map(|r| r[i].chars().count());
        cells.chain([header[i].chars().count()]).max().unwrap_or(0)
    });
    let rule = "-".repeat(widths.sum::<usize>() + 2 * (header.len() - 1));
    let t = crate::report::table(&header, &rows, &right);
    let (head, body) = t.split_once('\n').unwrap_or((&t, ""));
    let mut s = format!("{head}\n{rule}\n{body}");
    let lin = linearity(ms);
    if !lin.is_empty() {
        s += "\nGrowth (cost at the largest size / cost at 1G, divided by the size ratio; 1.00 = linear):\n";
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
pub struct Args {
    /// Run only these workloads (repeatable): map-unmap, huge-guest, small-maps, fragmented,
    /// pagetable, threads, growth.
    #[arg(long = "workload")]
    pub workloads: Vec<String>,
    /// Region size for map-unmap, fragmented and threads (e.g. 1G; default 1G on sim).
    #[arg(long, value_parser = crate::args::parse_size)]
    pub size: Option<u64>,
    /// Sizes for the growth curve, comma-separated (default 64M,256M,1G,4G,16G,64G).
    #[arg(long, value_parser = crate::args::parse_size, value_delimiter = ',')]
    pub sweep: Vec<u64>,
    /// Memory to pin: the deterministic model, or this process's real memory.
    #[arg(long, value_enum, default_value_t = crate::args::MemoryArg::Sim)]
    pub memory: crate::args::MemoryArg,
    /// One JSON object per measurement.
    #[arg(long)]
    pub json: bool,
    /// Draw time against size per backing and strategy into an SVG file.
    #[arg(long)]
    pub plot: Option<std::path::PathBuf>,
}

/// Runs `type1 bench`: progress on stderr, the table (or JSON) on stdout, the plot file.
/// Returns the exit code: 0, 1 when a measurement failed, 2 for bad arguments.
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
    if let Some(w) = workloads.iter().find(|w| !WORKLOADS.contains(&w.as_str())) {
        errln!(
            "unknown workload {w:?}: choose from {}",
            WORKLOADS.join(", ")
        )?;
        return Ok(2);
    }
    let mut workloads = workloads;
    if plot.is_some() && !workloads.is_empty() && !workloads.iter().any(|w| w == "growth") {
        workloads.push("growth".into());
    }
    let host = memory == crate::args::MemoryArg::Host;
    let opts = Options {
        workloads,
        size,
        host,
        sweep,
    };
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
    let started = std::time::Instant::now();
    let mut n = 0;
    // Progress is best effort: a closed stderr must not stop the measurements.
    let (ms, errs) = run(&opts, factory.as_ref(), &mut |p| {
        n += 1;
        let _ = errln!(
            "bench [{n}] {p}  ({:.1} s)",
            started.elapsed().as_secs_f64()
        );
    });
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
    if let Some(path) = plot {
        if !ms.iter().any(|m| m.workload == "growth") {
            errln!(
                "bench: --plot needs the growth workload (it runs unless --workload excludes it)"
            )?;
            return Ok(2);
        }
        if let Err(e) = std::fs::write(&path, self::plot(&ms)) {
            errln!("bench: cannot write {}: {e}", path.display())?;
            return Ok(2);
        }
        errln!("bench: wrote {}", path.display())?;
    }
    errln!("bench: done in {:.1} s", started.elapsed().as_secs_f64())?;
    Ok(if errs.is_empty() { 0 } else { 1 })
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
