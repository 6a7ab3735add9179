//! `type1`: replay DMA-mapping traces against the VFIO type1 model, and the demo.
//!
//! Exit codes: 0 all good, 1 a failed expectation or a broken invariant, 2 a malformed trace,
//! a trace error (the trace asks for something the model cannot do) or a bad command line,
//! 3 the output could not be written, 141 the output's reader went away. Each subcommand's
//! `--help` ends with its examples and exit codes (`help.rs`).

#![forbid(unsafe_code)]

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use type1::Strategy;
use type1_cli::args::{MemoryArg, StrategyArg};
use type1_cli::output::{self, exit_code};
use type1_cli::runner::{self, Options, Outcome, Step};
use type1_cli::{compare, demo, errln, help, out, outln, report, trace};

#[derive(Parser)]
#[command(
    name = "type1",
    version,
    about = "A userspace model of the Linux VFIO type1 IOMMU backend: replay DMA-mapping traces.",
    after_help = help::TOP
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Replay trace files and report each statement's result. The trace language and the
    /// JSON fields are described in crates/trace/README.md.
    #[command(after_help = help::REPLAY)]
    Replay {
        /// One JSON object per statement as it finishes, then a summary object, per file.
        #[arg(long)]
        json: bool,
        /// How the engine pins and maps.
        #[arg(long, value_enum, default_value_t = StrategyArg::Contiguous)]
        strategy: StrategyArg,
        /// Memory to run on: the deterministic model, or this process's real memory (Linux;
        /// `layout`/`phys` are then ignored and `pfnmap` is refused before anything runs).
        #[arg(long, value_enum, default_value_t = MemoryArg::Sim)]
        memory: MemoryArg,
        /// Who answers: the engine (the model), or this machine's kernel through /dev/vfio
        /// (needs a device bound to vfio-pci and `--group`).
        #[arg(long, value_enum, default_value_t = BackendArg::Engine)]
        backend: BackendArg,
        /// The VFIO group of `--backend vfio` (/dev/vfio/N).
        #[arg(long, required_if_eq("backend", "vfio"))]
        group: Option<u32>,
        /// The kernel profile to replay with, in place of every `container`'s `kernel=`
        /// (7.2, 6.12, 6.1, or a full Debian version such as 6.1.0-56-cloud-amd64).
        #[arg(long, value_name = "VERSION", conflicts_with = "backend")]
        kernel: Option<String>,
        /// Replay each file once per variant and print one table with a column per variant:
        /// strategy=per-page,contiguous,folio or kernel=6.1,7.2 (expectations not checked).
        #[arg(long, value_name = "AXIS=A,B,..", conflicts_with_all = ["backend", "kernel"])]
        compare: Option<String>,
        /// Run the statements without holding them to their `=> ...` expectations.
        #[arg(long)]
        no_expect: bool,
        /// Trace files (`-` reads standard input); each is replayed on its own. The exit code
        /// is the worst of them.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Replay traces against a real kernel in a QEMU guest (emulated VT-d, the `edu` device on
    /// vfio-pci) and against the engine with the same kernel profile, and compare them
    /// statement by statement.
    #[command(after_help = help::KERNEL_CHECK)]
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
    #[command(after_help = help::INSPECT)]
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
        /// IOMMU page sizes, comma-separated (the default is VT-d's).
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
    #[command(after_help = help::IOTLB)]
    Iotlb(type1_cli::iotlb::Args),
    /// A VM's DMA-mapping needs before launch: locked memory, DMA entries, leaves and address
    /// width, run on the engine, with advice.
    #[command(after_help = help::PLAN)]
    Plan(type1_cli::plan::Args),
    /// Map a 16 GiB VM with the 2013 design and with the per-page engine, and compare.
    #[command(after_help = help::DEMO)]
    Demo {
        /// Print the built-in trace instead of running it.
        #[arg(long)]
        print: bool,
        /// Print the comparison as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Time the engine on the kernel's workload shapes (map-unmap per backing and strategy,
    /// huge-guest, small-maps, fragmented, pagetable, threads, growth; on real memory, inspect).
    #[command(after_help = help::BENCH)]
    Bench(type1_cli::bench::Args),
    /// Print a completion script for a shell (bash, zsh, fish, elvish, powershell).
    #[command(after_help = help::COMPLETIONS)]
    Completions {
        /// The shell to complete in.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff), generated from this command line.
    #[command(after_help = help::MAN)]
    Man,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum BackendArg {
    /// The model.
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
            kernel,
            compare,
            no_expect,
            files,
            ..
        } => {
            let opts = Options {
                strategy: strategy.into(),
                host_memory: memory == MemoryArg::Host,
                no_expect,
                ..Options::default()
            };
            replay_files(&files, json, &opts, kernel.as_deref(), compare.as_deref())
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
        Cmd::Completions { shell } => completions(shell),
        Cmd::Man => man(),
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

/// `type1 replay` on the engine: each file in turn, then a closing line over several.
fn replay_files(
    files: &[PathBuf],
    as_json: bool,
    opts: &Options,
    kernel: Option<&str>,
    compare: Option<&str>,
) -> output::Result<i32> {
    let axis = match compare.map(compare::parse_axis).transpose() {
        Ok(a) => a,
        Err(e) => {
            errln!("replay: {e}")?;
            return Ok(2);
        }
    };
    let kernel = match kernel.map(runner::kernel_word) {
        Some(Err(e)) => {
            errln!("replay: {e}")?;
            return Ok(2);
        }
        Some(Ok(k)) => Some(k),
        None => None,
    };
    let ctx = FileRun {
        as_json,
        opts,
        kernel: kernel.as_deref(),
        axis: axis.as_ref(),
        several: files.len() > 1,
    };
    let mut results = Vec::new();
    let mut w = 0;
    for f in files {
        let name = display_name(f);
        let code = ctx.run(f, &name)?;
        w = w.max(code);
        results.push((name, code));
    }
    // A comparison checks no expectations: its tables say it all.
    if files.len() > 1 && ctx.axis.is_none() {
        let line = report::closing_line(&results);
        if as_json {
            errln!("{line}")?;
        } else {
            outln!("\n{line}")?;
        }
    }
    Ok(w)
}

/// How a trace is named in reports: its path, or `-` (standard input).
fn display_name(path: &Path) -> String {
    if path == Path::new("-") {
        "-".into()
    } else {
        path.display().to_string()
    }
}

/// A trace's text: the file, or standard input for `-`, line by line within the trace
/// language's size caps (binary input is refused at its first bad byte).
fn read_trace(path: &Path) -> Result<String, trace::ReadError> {
    trace::read_trace(path)
}

/// A read error without the path the caller already prints.
fn read_reason(e: &trace::ReadError) -> String {
    match e {
        trace::ReadError::Io { error, .. } => error.to_string(),
        e => e.to_string(),
    }
}

/// Why `--memory host` refuses a trace with a `pfnmap` region (before anything is allocated).
const HOST_PFNMAP: &str = "--memory host cannot run this trace: a pfnmap region is the MMIO \
    of a device, which this process's memory cannot provide; use --memory sim. Nothing was run.";

/// What every file of one `type1 replay` shares.
struct FileRun<'a> {
    as_json: bool,
    opts: &'a Options,
    kernel: Option<&'a str>,
    axis: Option<&'a compare::Axis>,
    several: bool,
}

impl FileRun<'_> {
    /// A JSON object of this file: with several files it carries `file`.
    fn emit(&self, name: &str, mut v: serde_json::Value) -> output::Result<()> {
        if self.several {
            v["file"] = serde_json::Value::from(name);
        }
        outln!("{v}")
    }

    /// A problem that stops the file before or during the run: text on stderr, and in
    /// `--json` mode an object on stdout too (`op` is `error`; `line` 0 when no line is to
    /// blame): `message` is the problem, `text` all that stderr gets (file, line, caret).
    fn fail(
        &self,
        name: &str,
        kind: &str,
        (line, col): (usize, Option<usize>),
        message: &str,
        text: String,
    ) -> output::Result<()> {
        errln!("{text}")?;
        if self.as_json {
            let mut v = serde_json::json!({
                "op": "error", "ok": false, "error": kind, "line": line, "message": message,
            });
            if let Some(c) = col {
                v["col"] = serde_json::Value::from(c);
            }
            v["file"] = serde_json::Value::from(name);
            outln!("{v}")?;
        }
        Ok(())
    }

    /// Replays one file; its report (or JSON) to stdout as each statement finishes, its
    /// problems to stderr.
    fn run(&self, path: &Path, name: &str) -> output::Result<i32> {
        let src = match read_trace(path) {
            Ok(s) => s,
            Err(e) => {
                self.fail(
                    name,
                    "unreadable",
                    (0, None),
                    &format!("cannot read the trace: {}", read_reason(&e)),
                    format!("{name}: cannot read the trace: {}", read_reason(&e)),
                )?;
                return Ok(2);
            }
        };
        let malformed = |e: &trace::ParseError| {
            self.fail(
                name,
                "malformed",
                (e.line, Some(e.col)),
                &e.msg,
                format!(
                    "{name}:{}:{}: {}\n{}\n{name}: malformed trace: nothing was replayed",
                    e.line,
                    e.col,
                    e.msg,
                    e.snippet(&src)
                ),
            )
        };
        // Two passes over the text: the whole trace must parse before anything runs (a
        // malformed trace replays nothing), then the statements are parsed again as they are
        // replayed. No statement is kept, so memory follows the engine's state, not the
        // trace's length (the text itself is capped by the reader). Only --compare, which
        // replays the same statements several times, keeps them.
        let mut pfnmap = None;
        for stmt in trace::statements(&src) {
            match stmt {
                Err(e) => {
                    malformed(&e)?;
                    return Ok(2);
                }
                Ok(mut stmt) => {
                    if let Some(k) = self.kernel {
                        if let Some(was) = type1_cli::kernel_check::set_kernel_stmt(&mut stmt, k) {
                            errln!(
                                "{name}:{}: note: kernel={was} replaced by --kernel {k}",
                                stmt.line
                            )?;
                        }
                    }
                    if pfnmap.is_none() && runner::is_pfnmap(&stmt) {
                        pfnmap = Some(stmt.line);
                    }
                }
            }
        }
        if self.opts.host_memory {
            if let Some(line) = pfnmap {
                self.fail(
                    name,
                    "refused",
                    (line, None),
                    HOST_PFNMAP,
                    format!("{name}:{line}: {HOST_PFNMAP}"),
                )?;
                return Ok(2);
            }
        }
        let kernel = self.kernel;
        let stmts = trace::statements(&src).map_while(Result::ok).map(|mut s| {
            if let Some(k) = kernel {
                type1_cli::kernel_check::set_kernel_stmt(&mut s, k);
            }
            s
        });
        if let Some(axis) = self.axis {
            let t = trace::Trace {
                stmts: stmts.collect(),
            };
            let vs = compare::run(&t, axis, self.opts);
            if self.as_json {
                self.emit(name, compare::to_json(name, &vs))?;
            } else {
                out!("{}", compare::human(name, &vs))?;
            }
            return Ok(compare::exit_code(&vs));
        }
        let mut human = report::Human::new();
        if !self.as_json {
            out!("{}", report::Human::header(name, self.opts.strategy))?;
        }
        let mut written: output::Result<()> = Ok(());
        let r = runner::replay_stream(stmts, self.opts, &mut |step| {
            written = self.step(name, step, &mut human);
            if written.is_ok() {
                ControlFlow::Continue(())
            } else {
                ControlFlow::Break(())
            }
        });
        written?;
        if self.as_json {
            if let Some(s) = &r.summary {
                self.emit(name, s.record().to_json())?;
            }
        } else {
            if r.tally.statements == 0 && r.error.is_none() {
                outln!("  (no statements: nothing to replay)")?;
            }
            out!("{}", human.finish(&r))?;
        }
        if let Some(s) = &r.summary {
            for m in &s.violations {
                errln!(
                    "{name}:{}: invariant violated at the end of the trace: {m}",
                    s.line
                )?;
            }
        }
        if let Some(e) = &r.error {
            self.fail(
                name,
                "trace",
                (e.line, None),
                &e.message,
                format!(
                    "{name}:{}: error: {}\n    {}\n{name}: the replay stopped at line {}",
                    e.line,
                    e.message,
                    report::wrap(&e.text, 200).join("\n    "),
                    e.line
                ),
            )?;
        }
        Ok(r.exit_code())
    }

    /// One statement finished: its JSON object or its report rows on stdout; a failed
    /// expectation also on stderr, each item on a line and the statement once.
    fn step(&self, name: &str, step: &Step, human: &mut report::Human) -> output::Result<()> {
        if self.as_json {
            let mut v = step.record().to_json();
            if !step.mismatches.is_empty() {
                v["expectations_failed"] = serde_json::Value::from(step.mismatches.clone());
            }
            self.emit(name, v)?;
        } else {
            out!("{}", human.step(step))?;
        }
        let mut failed = false;
        for m in &step.mismatches {
            errln!("{name}:{}: {m}", step.line)?;
            failed = true;
        }
        if let (Outcome::Invariants(v), true) = (&step.outcome, step.mismatches.is_empty()) {
            for m in v {
                errln!("{name}:{}: invariant violated: {m}", step.line)?;
                failed = true;
            }
        }
        if failed {
            errln!("    {}", report::wrap(&step.text, 200).join("\n    "))?;
        }
        Ok(())
    }
}

/// `replay --backend vfio`: the statements against this machine's kernel through
/// /dev/vfio/GROUP; the same JSON objects as the engine's (`check` leaves are unknown: the
/// IOMMU's tables cannot be read from user space).
fn replay_vfio(path: &Path, as_json: bool, group: u32) -> output::Result<i32> {
    let name = display_name(path);
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
    let t = match read_trace(path)
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

/// `type1 completions SHELL`: the script on stdout.
fn completions(shell: clap_complete::Shell) -> output::Result<i32> {
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "type1", &mut buf);
    out!("{}", String::from_utf8_lossy(&buf))?;
    Ok(0)
}

/// `type1 man`: the manual page, with a section per subcommand.
fn man() -> output::Result<i32> {
    let cmd = Cli::command();
    let mut buf = Vec::new();
    // Writing to a Vec cannot fail.
    let _ = clap_mangen::Man::new(cmd.clone()).render(&mut buf);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = format!("type1-{}", sub.get_name());
        let sub = sub
            .clone()
            .bin_name(format!("type1 {}", sub.get_name()))
            .display_name(name);
        let _ = clap_mangen::Man::new(sub).render(&mut buf);
    }
    out!("{}", String::from_utf8_lossy(&buf))?;
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
