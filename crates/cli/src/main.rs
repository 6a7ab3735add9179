//! `type1`: replay DMA-mapping traces against the VFIO type1 model, and the demo.
//!
//! Exit codes: 0 all good, 1 a failed expectation or a broken invariant, 2 a malformed trace,
//! a trace error (the trace asks for something the model cannot do) or a bad command line.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use type1::Strategy;
use type1_cli::args::{MemoryArg, StrategyArg};
use type1_cli::output::{self, exit_code};
use type1_cli::runner::{replay, Options};
use type1_cli::{demo, errln, out, outln, report, trace};

#[derive(Parser)]
#[command(
    name = "type1",
    version,
    about = "A userspace model of the Linux VFIO type1 IOMMU backend: replay DMA-mapping traces."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Replay trace files and report each statement's result. The trace language and the
    /// JSON fields are described in crates/trace/README.md.
    Replay {
        /// One JSON object per statement, then a summary object, per file.
        #[arg(long)]
        json: bool,
        /// How the engine pins and maps.
        #[arg(long, value_enum, default_value_t = StrategyArg::Contiguous)]
        strategy: StrategyArg,
        /// Memory to run on: the deterministic model, or this process's real memory (Linux;
        /// `layout`/`phys` are then ignored and `pfnmap` is refused).
        #[arg(long, value_enum, default_value_t = MemoryArg::Sim)]
        memory: MemoryArg,
        /// Who answers: the engine (the model), or this machine's kernel through /dev/vfio
        /// (needs a device bound to vfio-pci and `--group`).
        #[arg(long, value_enum, default_value_t = BackendArg::Engine)]
        backend: BackendArg,
        /// The VFIO group of `--backend vfio` (/dev/vfio/N).
        #[arg(long, required_if_eq("backend", "vfio"))]
        group: Option<u32>,
        /// Trace files; each is replayed on its own. The exit code is the worst of them.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Replay traces against a real kernel in a QEMU guest (emulated VT-d, the `edu` device on
    /// vfio-pci) and against the engine with the same kernel profile, and compare them
    /// statement by statement. Exit 0: they agree; 1: they differ; 2: harness error.
    KernelCheck {
        /// The kernels to boot, each with its engine profile: 7.2, 6.12, 6.1 or a full Debian
        /// version (7.2.12+deb13-cloud-amd64); a comma-separated list and/or repeated, one boot
        /// per kernel for all the traces. Overrides the traces' `kernel=` on both sides; without
        /// it each trace's `kernel=` is used, else 7.2.
        #[arg(long, value_delimiter = ',')]
        kernel: Vec<String>,
        /// One JSON object per trace and kernel on stdout.
        #[arg(long)]
        json: bool,
        /// Trace files; all run in one guest boot per kernel, each in a fresh container.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// What a type1 map of a process's memory would give the IOMMU and cost: per mapping,
    /// resident pages, physically contiguous runs, leaves by page size, locked memory, a verdict.
    /// Give --pid PID (a running process) or --demo.
    Inspect {
        /// The process to read (needs CAP_SYS_ADMIN for pfns).
        #[arg(long, conflicts_with = "demo")]
        pid: Option<u32>,
        /// Only this address range: START-END (END exclusive; hex, 0x optional, as
        /// /proc/PID/maps and this report print them) or START+SIZE (SIZE as 1G, 0x40000000).
        #[arg(long)]
        range: Option<String>,
        /// Place the mappings at IOVA = vaddr + OFFSET (a leading '-' subtracts).
        #[arg(long, allow_hyphen_values = true, conflicts_with = "gpa")]
        iova: Option<String>,
        /// Place the i-th selected mapping at guest physical (IOVA) START; once per mapping.
        #[arg(long)]
        gpa: Vec<String>,
        /// Keep only mappings whose name contains PATTERN ([anon] for anonymous memory).
        #[arg(long)]
        name: Option<String>,
        /// Keep only mappings of at least SIZE bytes (e.g. 64M).
        #[arg(long)]
        min_size: Option<String>,
        /// IOMMU page sizes, comma-separated (default 4K,2M,1G as VT-d).
        #[arg(long, default_value = "4K,2M,1G")]
        pgsizes: String,
        /// Allocate 4K, THP and hugetlb regions in this process and inspect them.
        #[arg(long)]
        demo: bool,
        /// Show mappings with no resident pages too.
        #[arg(long)]
        all: bool,
        /// The report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// What a trace's layout buys a device's IOTLB: reach, misses and miss rate per domain for
    /// a DMA pattern, per strategy; --plot draws miss rate against window size.
    Iotlb(type1_cli::iotlb::Args),
    /// A VM's DMA-mapping needs before launch: locked memory, DMA entries, leaves and address
    /// width, run on the engine, with advice. Exit 0: it fits; 1: it does not; 2: bad input.
    Plan(type1_cli::plan::Args),
    /// Map a 16 GiB VM with the 2013 design and with the per-page engine, and compare.
    Demo {
        /// Print the built-in trace instead of running it.
        #[arg(long)]
        print: bool,
        /// Print the comparison as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Time the engine on the kernel's workload shapes (map-unmap per backing and strategy,
    /// huge-guest, small-maps, fragmented, pagetable, threads, growth).
    Bench(type1_cli::bench::Args),
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BackendArg {
    /// The model (the default).
    Engine,
    /// The kernel's vfio_iommu_type1 through /dev/vfio/GROUP.
    Vfio,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code: output::Result<i32> = match cli.cmd {
        Cmd::Replay {
            json,
            backend: BackendArg::Vfio,
            group,
            files,
            ..
        } => worst(
            files
                .iter()
                .map(|f| replay_vfio(f, json, group.unwrap_or(0))),
        ),
        Cmd::Replay {
            json,
            strategy,
            memory,
            files,
            ..
        } => {
            let opts = Options {
                strategy: strategy.into(),
                host_memory: memory == MemoryArg::Host,
                ..Options::default()
            };
            worst(files.iter().map(|f| replay_file(f, json, &opts)))
        }
        Cmd::KernelCheck {
            kernel,
            json,
            files,
        } => type1_cli::kernel_check::run_files(&files, &kernel, json),
        Cmd::Demo { print, json } => run_demo(print, json),
        Cmd::Iotlb(args) => type1_cli::iotlb::run(args),
        Cmd::Plan(args) => type1_cli::plan::run(args),
        Cmd::Inspect {
            pid,
            range,
            iova,
            gpa,
            name,
            min_size,
            pgsizes,
            demo,
            all,
            json,
        } => {
            let sel = type1_cli::inspect::Selection {
                range,
                iova,
                gpa,
                name,
                min_size,
            };
            run_inspect(pid, &sel, &pgsizes, demo, all, json)
        }
        Cmd::Bench(args) => type1_cli::bench::main(args),
    };
    exit_code(code)
}

/// The worst exit code over several files; a write error ends at once.
fn worst(codes: impl Iterator<Item = output::Result<i32>>) -> output::Result<i32> {
    let mut w = 0;
    for c in codes {
        w = w.max(c?);
    }
    Ok(w)
}

/// Replays one file; prints its report to stdout and its problems to stderr.
fn replay_file(path: &PathBuf, as_json: bool, opts: &Options) -> output::Result<i32> {
    let name = path.display().to_string();
    let src = match std::fs::read_to_string(path) {
        Ok(s) => s,
        Err(e) => {
            errln!("{name}: cannot read the trace: {e}")?;
            return Ok(2);
        }
    };
    let t = match trace::parse(&src) {
        Ok(t) => t,
        Err(e) => {
            errln!("{name}:{}:{}: {}", e.line, e.col, e.msg)?;
            errln!("{}", e.snippet(&src))?;
            errln!("{name}: malformed trace: nothing was replayed")?;
            return Ok(2);
        }
    };
    let r = replay(&t, opts, &mut |_| {});
    if as_json {
        for v in r.json_lines() {
            outln!("{v}")?;
        }
    } else {
        out!("{}", report::human(&name, &r))?;
    }
    for (line, text, msg) in r.failures() {
        errln!("{name}:{line}: {msg}\n    {text}")?;
    }
    if let Some(e) = &r.error {
        errln!(
            "{name}:{}: error: {}\n    {}\n{name}: the replay stopped at line {}",
            e.line,
            e.message,
            e.text,
            e.line
        )?;
    }
    Ok(r.exit_code())
}

/// `replay --backend vfio`: the statements against this machine's kernel through
/// /dev/vfio/GROUP; the same JSON objects as the engine's (`check` leaves are unknown: the
/// IOMMU's tables cannot be read from user space).
fn replay_vfio(path: &PathBuf, as_json: bool, group: u32) -> output::Result<i32> {
    let name = path.display().to_string();
    let dev = std::path::Path::new("/dev/vfio").join(group.to_string());
    if !dev.exists() {
        errln!(
            "{name}: {} does not exist: no VFIO group {group} on this machine (bind a device \
             to vfio-pci and use its IOMMU group number).\n\
             To run the trace against a real kernel without VFIO hardware, use \
             `type1 kernel-check {name}` (boots a QEMU guest with an emulated IOMMU).",
            dev.display()
        )?;
        return Ok(2);
    }
    let t = match std::fs::read_to_string(path)
        .map_err(|e| e.to_string())
        .and_then(|s| trace::parse(&s).map_err(|e| format!("{}:{}: {}", e.line, e.col, e.msg)))
    {
        Ok(t) => t,
        Err(e) => {
            errln!("{name}: {e}")?;
            return Ok(2);
        }
    };
    let texts: std::collections::BTreeMap<usize, &str> =
        t.stmts.iter().map(|s| (s.line, s.text.as_str())).collect();
    let mut written: output::Result<()> = Ok(());
    let recs = vfio_backend::replay::replay(
        &t.stmts,
        group,
        &mut vfio_backend::replay::NoPause,
        &mut |r| {
            if written.is_err() {
                return;
            }
            written = if as_json {
                outln!("{}", r.to_json())
            } else {
                let text = texts.get(&r.line).copied().unwrap_or("");
                outln!("{}", vfio_backend::replay::describe(r, text))
            };
        },
    );
    written?;
    let cannot = recs.iter().filter(|r| r.cannot).count();
    errln!(
        "{name}: {} statements against /dev/vfio/{group}, {cannot} could not be run",
        recs.len()
    )?;
    Ok(0)
}

fn run_demo(print: bool, as_json: bool) -> output::Result<i32> {
    if print {
        out!("{}", demo::DEMO_TRACE)?;
        return Ok(0);
    }
    let started = std::time::Instant::now();
    // Progress lines are best effort: a closed stderr must not stop the report on stdout.
    let mut progress = |s: String| {
        let _ = errln!("demo: {s}");
    };
    errln!("demo: replaying the built-in trace with the 2013 design (contiguous)...")?;
    let new = demo::run(Strategy::Contiguous, &mut progress);
    errln!("demo: replaying it with the per-page engine (before 2013)...")?;
    let old = demo::run(Strategy::PerPage, &mut progress);
    errln!(
        "demo: done in {}",
        type1_cli::units::duration(started.elapsed())
    )?;
    if as_json {
        outln!("{}", demo::to_json(&new, &old))?;
    } else {
        out!("{}", demo::human(&new, &old))?;
    }
    Ok(new.exit_code.max(old.exit_code))
}

fn run_inspect(
    pid: Option<u32>,
    sel: &type1_cli::inspect::Selection,
    pgsizes: &str,
    demo: bool,
    all: bool,
    as_json: bool,
) -> output::Result<i32> {
    let mut bitmap = 0u64;
    for p in pgsizes.split(',') {
        match trace::parse_number(p.trim()) {
            Ok(v) if v.is_power_of_two() => bitmap |= v,
            _ => {
                errln!("inspect: page size {p:?} is not a power of two such as 4K, 2M or 1G")?;
                return Ok(2);
            }
        }
    }
    let Some(pid) = pid.or(if demo { Some(0) } else { None }) else {
        errln!(
            "inspect: give --pid PID (a running process; needs root for pfns) or --demo (4K, \
             THP and hugetlb regions made in this process)"
        )?;
        return Ok(2);
    };
    let picked = sel.range.is_some()
        || sel.iova.is_some()
        || !sel.gpa.is_empty()
        || sel.name.is_some()
        || sel.min_size.is_some();
    if demo && picked {
        errln!(
            "inspect: --demo inspects its own regions; --range, --iova, --gpa, --name and \
             --min-size apply to --pid PID"
        )?;
        return Ok(2);
    }
    let opts = match sel.options(bitmap) {
        Ok(o) => o,
        Err(e) => {
            errln!("inspect: {e}")?;
            return Ok(2);
        }
    };
    let (report, regions) = if demo {
        errln!("inspect: allocating 4K, THP and hugetlb regions in this process...")?;
        match type1::inspect::demo(bitmap) {
            Ok(d) => (d.report, Some(d.regions)),
            Err(e) => {
                errln!("inspect --demo: {e}")?;
                return Ok(2);
            }
        }
    } else {
        match type1::inspect::inspect(pid, &opts) {
            Ok(r) => (r, None),
            Err(e) => {
                errln!("inspect --pid {pid}: {e}")?;
                return Ok(2);
            }
        }
    };
    if as_json {
        let mut v = serde_json::to_value(&report).unwrap_or_default();
        if let Some(regions) = regions {
            v["demo_regions"] = serde_json::to_value(regions).unwrap_or_default();
        }
        outln!("{v}")?;
    } else {
        if let Some(regions) = &regions {
            for r in regions {
                outln!(
                    "demo region {:<12} {:>6} at {:#x}",
                    r.backing,
                    type1_cli::bench::human(r.size),
                    r.vaddr
                )?;
            }
            outln!()?;
        }
        out!("{}", type1_cli::inspect::human_report(&report, all))?;
    }
    Ok(0)
}
