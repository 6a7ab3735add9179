//! Runs inside the guest: `vfio-replay GROUP STATEMENTS.jsonl` replays the trace statements
//! (the trace language's syntax tree as JSON lines, `type1_trace::to_json_lines`) against
//! /dev/vfio/GROUP and prints one `@@R {json}` line per statement, then `@@END`. At `check` it
//! prints `@@CHECKPOINT line=N` and waits for a line on stdin.
//!
//! A file of several traces (`vfio_backend::replay::join_traces`) runs each trace in a child
//! process of its own (this program on that trace alone): a fresh process, container and group
//! per trace, so no pin, lock count or mapping carries over to the next, and the module's
//! `dma_entry_limit` (global) is put back after each. Around each it prints
//! `@@TRACE I` and `@@DONE I STATUS`; `type1.first=K` on the kernel command line skips the
//! first K (the host boots again there after a trace hung or crashed the guest).

use std::io::Write;
use std::process::Command;

use vfio_backend::replay::{replay, split_traces, StdioPause};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: vfio-replay GROUP STATEMENTS.jsonl");
        std::process::exit(2);
    }
    let group: u32 = match args[1].parse() {
        Ok(g) => g,
        Err(_) => {
            eprintln!("vfio-replay: bad group number {:?}", args[1]);
            std::process::exit(2);
        }
    };
    let text = match std::fs::read_to_string(&args[2]) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("vfio-replay: {}: {e}", args[2]);
            std::process::exit(2);
        }
    };
    if let Some(traces) = split_traces(&text) {
        run_each(&args[1], &traces);
        return;
    }
    let stmts = match type1_trace::from_json_lines(&text) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("vfio-replay: {e}");
            std::process::exit(2);
        }
    };
    say(&format!("@@BEGIN statements={}", stmts.len()));
    replay(&stmts, group, &mut StdioPause, &mut |r| {
        say(&format!(
            "@@R {}",
            serde_json::to_string(r).expect("records serialise")
        ));
    });
    say("@@END");
}

/// One write per line, so console noise cannot split it.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(format!("{line}\n").as_bytes());
    let _ = out.flush();
}

/// The `type1.first=K` of the kernel command line (0 without it).
fn first_trace() -> usize {
    std::fs::read_to_string("/proc/cmdline")
        .unwrap_or_default()
        .split_whitespace()
        .find_map(|w| w.strip_prefix("type1.first=")?.parse().ok())
        .unwrap_or(0)
}

/// The module parameter a `container dma_entry_limit=` writes: global, so it is put back after
/// each trace.
const DMA_ENTRY_LIMIT: &str = "/sys/module/vfio_iommu_type1/parameters/dma_entry_limit";

/// Runs each trace (from `type1.first=`) in a child process of its own, and puts the module's
/// `dma_entry_limit` back as it was after each.
fn run_each(group: &str, traces: &[String]) {
    let exe = std::env::current_exe().unwrap_or_else(|_| "/vfio-replay".into());
    let limit = std::fs::read_to_string(DMA_ENTRY_LIMIT).ok();
    for (i, t) in traces.iter().enumerate().skip(first_trace()) {
        say(&format!("@@TRACE {i}"));
        let file = std::env::temp_dir().join(format!("trace-{i}.jsonl"));
        let status = match std::fs::write(&file, t) {
            Ok(()) => match Command::new(&exe).arg(group).arg(&file).status() {
                Ok(s) => s.to_string(),
                Err(e) => format!("cannot start: {e}"),
            },
            Err(e) => format!("cannot write {}: {e}", file.display()),
        };
        let _ = std::fs::remove_file(&file);
        if let Some(l) = &limit {
            if let Err(e) = std::fs::write(DMA_ENTRY_LIMIT, l.trim()) {
                say(&format!("@@ERROR restoring {DMA_ENTRY_LIMIT}: {e}"));
            }
        }
        say(&format!("@@DONE {i} {status}"));
    }
}
