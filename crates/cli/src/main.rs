//! `type1`: replay DMA-mapping traces against the VFIO type1 model, and the demo.
//!
//! Exit codes: 0 all good, 1 a failed expectation or a broken invariant, 2 a malformed trace,
//! a trace error (the trace asks for something the model cannot do) or a bad command line.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use type1::Strategy;
use type1_cli::runner::{replay, Options};
use type1_cli::{demo, json, report, trace};

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
    /// Replay trace files (trace-format.md) and report each statement's result.
    Replay {
        /// One JSON object per statement, then a summary object, per file.
        #[arg(long)]
        json: bool,
        /// How the engine pins and maps.
        #[arg(long, value_enum, default_value_t = StrategyArg::Contiguous)]
        strategy: StrategyArg,
        /// Trace files; each is replayed on its own. The exit code is the worst of them.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Map a 16 GiB VM with the 2013 design and with the per-page engine, and compare.
    Demo {
        /// Print the built-in trace instead of running it.
        #[arg(long)]
        print: bool,
        /// Print the comparison as JSON.
        #[arg(long)]
        json: bool,
    },
    // Room for: `inspect` (dump a domain's tables), `bench`, `kernel-check` (compare with the
    // kernel oracle). Not implemented yet.
}

#[derive(Clone, Copy, ValueEnum)]
enum StrategyArg {
    /// One page per pin and per IOMMU map call (before 2013).
    PerPage,
    /// Physically contiguous runs, one IOMMU map call per run (the 2013 design).
    Contiguous,
    /// As contiguous, with one lookup and one charge per huge folio.
    Folio,
}

impl From<StrategyArg> for Strategy {
    fn from(s: StrategyArg) -> Strategy {
        match s {
            StrategyArg::PerPage => Strategy::PerPage,
            StrategyArg::Contiguous => Strategy::Contiguous,
            StrategyArg::Folio => Strategy::Folio,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let code = match cli.cmd {
        Cmd::Replay {
            json,
            strategy,
            files,
        } => {
            let opts = Options {
                strategy: strategy.into(),
                ..Options::default()
            };
            files
                .iter()
                .map(|f| replay_file(f, json, &opts))
                .max()
                .unwrap_or(0)
        }
        Cmd::Demo { print, json } => run_demo(print, json),
    };
    ExitCode::from(code as u8)
}

/// Replays one file; prints its report to stdout and its problems to stderr.
fn replay_file(path: &PathBuf, as_json: bool, opts: &Options) -> i32 {
    let name = path.display().to_string();
    let src = match std::fs::read_to_string(path) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{name}: cannot read the trace: {e}");
            return 2;
        }
    };
    let t = match trace::parse(&src) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{name}:{}:{}: {}", e.line, e.col, e.msg);
            eprintln!("{}", e.snippet(&src));
            eprintln!("{name}: malformed trace: nothing was replayed");
            return 2;
        }
    };
    let r = replay(&t, opts, &mut |_| {});
    let mut out = std::io::stdout().lock();
    if as_json {
        for v in json::lines(&r) {
            let _ = writeln!(out, "{v}");
        }
    } else {
        let _ = write!(out, "{}", report::human(&name, &r));
    }
    drop(out);
    for (line, text, msg) in r.failures() {
        eprintln!("{name}:{line}: {msg}\n    {text}");
    }
    if let Some(e) = &r.error {
        eprintln!(
            "{name}:{}: error: {}\n    {}\n{name}: the replay stopped at line {}",
            e.line, e.message, e.text, e.line
        );
    }
    r.exit_code()
}

fn run_demo(print: bool, as_json: bool) -> i32 {
    if print {
        print!("{}", demo::DEMO_TRACE);
        return 0;
    }
    let started = std::time::Instant::now();
    let mut progress = |s: String| eprintln!("demo: {s}");
    eprintln!("demo: replaying the built-in trace with the 2013 design (contiguous)...");
    let new = demo::run(Strategy::Contiguous, &mut progress);
    eprintln!("demo: replaying it with the per-page engine (before 2013)...");
    let old = demo::run(Strategy::PerPage, &mut progress);
    eprintln!(
        "demo: done in {}",
        type1_cli::units::duration(started.elapsed())
    );
    if as_json {
        println!("{}", demo::to_json(&new, &old));
    } else {
        print!("{}", demo::human(&new, &old));
    }
    new.exit_code.max(old.exit_code)
}
