//! Every trace of the project (`tests/traces`, `tests/kernel`, `kernel`, `examples`) replays with all its
//! expectations met.
//!
//! * With the default strategy (`contiguous`) and with `folio` (which must give the same
//!   results, leaves included): exit 0.
//! * With `per-page`: the same results except leaf sizes (the engine before 2013 maps 4K leaves
//!   only), so every failed expectation must be a `leaves.` one, and no invariant may break.

use std::path::{Path, PathBuf};

use type1::Strategy;
use type1_cli::runner::{replay, Options, Replay};
use type1_cli::trace::parse;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn trace_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in ["tests/traces", "tests/kernel", "kernel", "examples"] {
        let Ok(rd) = std::fs::read_dir(workspace().join(dir)) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "trace") {
                files.push(p);
            }
        }
    }
    files.sort();
    files
}

fn name(p: &Path) -> String {
    p.strip_prefix(workspace())
        .unwrap_or(p)
        .display()
        .to_string()
}

/// Replays every trace with `strategy`; returns the problems, one line each. `keep` gets the
/// failure and whether the trace models kernel 3.11.
fn problems(strategy: Strategy, keep: impl Fn(&str, bool) -> bool) -> (usize, Vec<String>) {
    let files = trace_files();
    let mut out = Vec::new();
    for f in &files {
        let n = name(f);
        let src = std::fs::read_to_string(f).unwrap();
        let t = match parse(&src) {
            Ok(t) => t,
            Err(e) => {
                out.push(format!("{n}:{}:{}: {}", e.line, e.col, e.msg));
                continue;
            }
        };
        let opts = Options {
            strategy,
            ..Options::default()
        };
        let r: Replay = replay(&t, &opts, &mut |_| {});
        if let Some(e) = &r.error {
            out.push(format!(
                "{n}:{}: trace error: {}  [{}]",
                e.line, e.message, e.text
            ));
        }
        let seed = r
            .container
            .as_ref()
            .is_some_and(|c| c.config().kernel.is_3_11());
        for (line, text, msg) in r.failures() {
            if keep(&msg, seed) {
                out.push(format!("{n}:{line}: {msg}  [{text}]"));
            }
        }
    }
    (files.len(), out)
}

fn assert_clean(strategy: Strategy, keep: impl Fn(&str, bool) -> bool) {
    let (n, p) = problems(strategy, keep);
    assert!(
        n > 0,
        "no trace files found under {}",
        workspace().display()
    );
    assert!(
        p.is_empty(),
        "{} problem(s) in {n} traces with strategy {}:\n{}",
        p.len(),
        strategy.name(),
        p.join("\n")
    );
}

#[test]
fn every_trace_replays_clean_with_the_default_strategy() {
    assert_clean(Strategy::Contiguous, |_, _| true);
}

#[test]
fn every_trace_replays_clean_with_the_folio_strategy() {
    assert_clean(Strategy::Folio, |_, _| true);
}

#[test]
fn per_page_differs_only_in_leaf_sizes() {
    // Under kernel=3.11 the unmap walk removes what the leaves hold, so with per-page
    // (`disable_hugepages`) sizes, locked and pinned pages follow the 4K leaves too.
    let leaf_bound = ["size=", "locked=", "pinned=", "dmas="];
    assert_clean(Strategy::PerPage, |m, seed| {
        let m = m.strip_prefix("expected ").unwrap_or(m);
        !(m.starts_with("leaves.") || seed && leaf_bound.iter().any(|k| m.starts_with(k)))
    });
}

#[test]
fn the_binary_replays_every_trace_with_exit_0() {
    let files = trace_files();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_type1"))
        .arg("replay")
        .args(&files)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
