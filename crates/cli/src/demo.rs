//! `type1 demo`: a built-in trace of a realistic VM, replayed with the 2013 design
//! (`contiguous`) and with the per-page engine it replaced, side by side.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{json, Value};
use type1::Strategy;

use crate::report::table;
use crate::runner::{replay, Detail, Options, Replay, State};
use crate::trace::{parse, Trace};
use crate::units;

/// The built-in trace. `type1 demo --print` shows it; its expectations hold for every strategy.
pub const DEMO_TRACE: &str = "\
# A 16 GiB VM with two assigned devices, mapped through VFIO type1 as QEMU maps it.
# Copy it (`type1 demo --print > vm.trace`), change it, then `type1 replay vm.trace`.

# type1v2, 65535 DMA entries, memlock unlimited (QEMU raises RLIMIT_MEMLOCK for the guest).
container type1v2

# Two groups behind two IOMMUs; the second IOMMU has no 1G superpages. Both reserve the
# x86 MSI window 0xfee00000-0xfeefffff.
domain d0 format=x86_64
domain d1 format=x86_64 pgsizes=4K,2M

# Guest RAM: one 16 GiB block of transparent huge pages, as QEMU allocates it.
mmap ram size=16G backing=thp
# A 256 MiB shared-memory region in ordinary 4K pages, physically fragmented.
mmap shm size=256M layout=scattered seed=7
# A GPU's 256 MiB BAR and a 16 KiB register BAR (device MMIO: mapped, never pinned).
mmap gpu_bar size=256M backing=pfnmap
mmap regs size=16K backing=pfnmap

# RAM below the 32-bit PCI hole: 3 GiB at IOVA 0.
map vaddr=ram iova=0 size=3G                        => ok locked=+786432 avail=65534
# RAM above 4 GiB: the other 13 GiB.
map vaddr=ram+3G iova=4G size=13G                   => ok locked=+3407872 avail=65533
# The shared-memory region in the 64-bit PCI hole.
map vaddr=shm iova=32G size=256M                    => ok locked=+65536 avail=65532
# Peer-to-peer: the BARs in the 32-bit PCI hole, below the MSI window.
map vaddr=gpu_bar iova=0xe0000000 size=256M         => ok locked=+0 avail=65531
map vaddr=regs iova=0xfebf0000 size=16K             => ok locked=+0 avail=65530

check                                               => dmas=5 pinned=4259840 locked=4259840

# The VM shuts down.
unmap all                                           => ok size=16G+512M+16K locked=0 avail=65535
check                                               => dmas=0 pinned=0 locked=0
";

/// The parsed built-in trace.
pub fn trace() -> Trace {
    parse(DEMO_TRACE).expect("the built-in demo trace parses")
}

/// What one strategy's run measured.
#[derive(Clone, Debug)]
pub struct Measure {
    /// The strategy replayed.
    pub strategy: Strategy,
    /// The state at the `check` after the maps.
    pub mapped: State,
    /// Entries in use at that `check`.
    pub entries: u64,
    /// Time spent in the `map` statements.
    pub map_time: Duration,
    /// Time spent in the `unmap` statements.
    pub unmap_time: Duration,
    /// Domain counters at the end (map and unmap calls, IOTLB flushes).
    pub end: State,
    /// What `type1 replay` would exit with.
    pub exit_code: i32,
    /// Failed expectations and the error that stopped the run, if any, one line each.
    pub failures: Vec<String>,
}

/// The state of a run that never reached a `check` or its end.
fn empty_state() -> State {
    State {
        dmas: vec![],
        domains: vec![],
        pinned: 0,
        locked: 0,
    }
}

impl Measure {
    fn of(strategy: Strategy, r: &Replay) -> Measure {
        let check = r.records.iter().find_map(|rec| match &rec.detail {
            Detail::Check(s) => Some((s.clone(), rec.avail)),
            _ => None,
        });
        let limit = r
            .container
            .as_ref()
            .map_or(0, |c| u64::from(c.config().dma_entry_limit));
        let (mapped, avail) = check.unwrap_or((empty_state(), 0));
        let mut failures: Vec<String> = r
            .failures()
            .into_iter()
            .map(|(l, t, m)| format!("line {l}: {m}  [{t}]"))
            .collect();
        if let Some(e) = &r.error {
            failures.push(format!("line {}: {}", e.line, e.message));
        }
        Measure {
            strategy,
            entries: limit.saturating_sub(u64::from(avail)),
            mapped,
            map_time: r.time_of("map"),
            unmap_time: r.time_of("unmap"),
            end: r
                .summary
                .as_ref()
                .map_or_else(empty_state, |s| s.state.clone()),
            exit_code: r.exit_code(),
            failures,
        }
    }

    fn total_leaves(&self) -> u64 {
        self.mapped.domains.iter().map(|d| d.total_leaves()).sum()
    }
    fn map_calls(&self) -> u64 {
        self.end.domains.iter().map(|d| d.stats.map_calls).sum()
    }
    fn unmap_calls(&self) -> u64 {
        self.end.domains.iter().map(|d| d.stats.unmap_calls).sum()
    }
    fn flushes(&self) -> u64 {
        self.end.domains.iter().map(|d| d.stats.iotlb_flushes).sum()
    }
    fn table_pages(&self) -> u64 {
        self.mapped.domains.iter().map(|d| d.table_pages).sum()
    }
}

/// Replays the demo with `strategy`, printing progress to `progress`.
pub fn run(strategy: Strategy, progress: &mut dyn FnMut(String)) -> Measure {
    let t = trace();
    let opts = Options {
        strategy,
        ..Options::default()
    };
    let name = strategy.name();
    let r = replay(&t, &opts, &mut |s| {
        if matches!(s.kind.verb(), "map" | "unmap" | "check") {
            progress(format!(
                "[{name}] line {}: {}",
                s.line,
                crate::report::short_statement(&s.text, 60)
            ));
        }
    });
    Measure::of(strategy, &r)
}

fn ratio(before: f64, after: f64) -> String {
    if after <= 0.0 {
        return "-".into();
    }
    let r = before / after;
    if r >= 10.0 {
        format!("{r:.0}x")
    } else {
        format!("{r:.1}x")
    }
}

/// The side-by-side comparison for people; `new` is the 2013 design, `old` the per-page engine.
pub fn human(new: &Measure, old: &Measure) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "A 16 GiB VM (THP RAM, 256 MiB of fragmented 4K memory, two BARs) in two domains:\n"
    );
    let mut rows: Vec<Vec<String>> = Vec::new();
    for d in &new.mapped.domains {
        for &(size, n) in &d.leaves {
            let o = old
                .mapped
                .domain(&d.name)
                .map_or(0, |od| od.leaves_of(size));
            rows.push(vec![
                format!("leaves {} {}", d.name, units::bytes(size)),
                o.to_string(),
                n.to_string(),
                String::new(),
            ]);
        }
    }
    // (label, before, after, whether the ratio is shown): the counts, then the times.
    let counts = [
        (
            "leaves, all domains",
            Measure::total_leaves as fn(&Measure) -> u64,
            true,
        ),
        ("page-table pages", Measure::table_pages, true),
        ("IOMMU map calls", Measure::map_calls, true),
        ("IOMMU unmap calls", Measure::unmap_calls, true),
        ("IOTLB flushes", Measure::flushes, false),
    ];
    for (label, count, saved) in counts {
        let (o, n) = (count(old), count(new));
        let ratio = if saved {
            ratio(o as f64, n as f64)
        } else {
            String::new()
        };
        rows.push(vec![label.into(), o.to_string(), n.to_string(), ratio]);
    }
    let times = [
        ("map time", old.map_time, new.map_time),
        ("unmap time", old.unmap_time, new.unmap_time),
    ];
    for (label, o, n) in times {
        let saved = ratio(o.as_secs_f64(), n.as_secs_f64());
        rows.push(vec![
            label.into(),
            units::duration(o),
            units::duration(n),
            saved,
        ]);
    }
    let locked = (
        units::pages(old.mapped.locked),
        units::pages(new.mapped.locked),
    );
    let entries = (old.entries.to_string(), new.entries.to_string());
    for (label, (o, n)) in [("locked memory", locked), ("DMA entries used", entries)] {
        rows.push(vec![label.into(), o, n, String::new()]);
    }
    out.push_str(&table(
        &["", "per-page (before 2013)", "contiguous (2013)", "saved"],
        &rows,
        &[false, true, true, true],
    ));
    let _ = writeln!(
        out,
        "\nThe 2013 design pins in page steps but hands each physically contiguous run to the \
         IOMMU in one call,\nso THP memory gets 2M leaves; locked memory and DMA entries are \
         the same either way. Only the\nfragmented 4K region and the 16K BAR stay in 4K leaves."
    );
    for m in [old, new] {
        if !m.failures.is_empty() {
            let _ = writeln!(
                out,
                "\n{} run: {} failure(s):",
                m.strategy.name(),
                m.failures.len()
            );
            for f in &m.failures {
                let _ = writeln!(out, "  {f}");
            }
        }
    }
    out
}

fn measure_json(m: &Measure) -> Value {
    let mut domains = serde_json::Map::new();
    for d in &m.mapped.domains {
        let leaves: serde_json::Map<String, Value> = d
            .leaves
            .iter()
            .map(|&(s, n)| (s.to_string(), json!(n)))
            .collect();
        let end = m.end.domain(&d.name);
        domains.insert(
            d.name.clone(),
            json!({
                "leaves": leaves,
                "table_pages": d.table_pages,
                "map_calls": end.map(|e| e.stats.map_calls),
                "unmap_calls": end.map(|e| e.stats.unmap_calls),
                "iotlb_flushes": end.map(|e| e.stats.iotlb_flushes),
            }),
        );
    }
    json!({
        "strategy": m.strategy.name(),
        "domains": domains,
        "map_ns": m.map_time.as_nanos() as u64,
        "unmap_ns": m.unmap_time.as_nanos() as u64,
        "locked": m.mapped.locked,
        "entries": m.entries,
        "ok": m.failures.is_empty(),
        "failures": m.failures,
    })
}

/// The comparison for machines.
pub fn to_json(new: &Measure, old: &Measure) -> Value {
    let f = |a: f64, b: f64| if b > 0.0 { json!(a / b) } else { Value::Null };
    json!({
        "runs": [measure_json(old), measure_json(new)],
        "saved": {
            "leaves": f(old.total_leaves() as f64, new.total_leaves() as f64),
            "map_calls": f(old.map_calls() as f64, new.map_calls() as f64),
            "map_time": f(old.map_time.as_secs_f64(), new.map_time.as_secs_f64()),
            "unmap_time": f(old.unmap_time.as_secs_f64(), new.unmap_time.as_secs_f64()),
        }
    })
}
