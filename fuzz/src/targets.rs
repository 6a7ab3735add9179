//! The logic of the fuzz targets, one function per target, shared by the libFuzzer binaries
//! (`fuzz/fuzz_targets/*.rs`, nightly, `cargo fuzz run`) and by the stable smoke run in
//! `cargo test` (`crates/cli/tests/fuzz_smoke.rs` includes this file), so CI exercises exactly
//! what the long runs exercise.
//!
//! What each target holds (a panic is a finding):
//! * [`parse_target`]: bytes → [`read::from_bytes`] → [`parse`] never panics; an error names a
//!   line and column inside the input and a bounded message; an accepted trace round-trips:
//!   its statements' text parsed again gives the same statements, and the JSON lines the host
//!   hands to the guest read back equal.
//! * [`replay_target`]: an accepted trace, with a `check` after every statement, replayed once
//!   per strategy: no `check` and no summary reports a broken invariant, the container left
//!   behind (also after a trace error) passes its invariants, and the strategies agree:
//!   `contiguous` and `folio` on every field but the warnings, `per-page` on every field but
//!   leaf sizes, page-table pages, messages and warnings. Traces whose simulated memory would
//!   make one execution slow are skipped (see [`budget_ok`]).
//!
//! [`mutate`] and [`Rng`] are the smoke run's deterministic input generator.

use serde_json::Value;
use type1::Strategy;
use type1_cli::runner::{replay, Options, Outcome, Replay};
use type1_cli::trace::ast::{from_json_lines, to_json_lines};
use type1_cli::trace::{parse, read, Backing, Layout, Stmt, StmtKind, Trace};

/// Longest error message the parser may produce: echoed input is truncated.
pub const MAX_MESSAGE: usize = 2048;

/// The `parse` target. Returns the trace when it parsed.
pub fn parse_target(data: &[u8]) -> Option<Trace> {
    let src = match read::from_bytes(data) {
        Ok(s) => s,
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.is_empty());
            assert!(
                msg.len() <= MAX_MESSAGE,
                "read error too long: {}",
                msg.len()
            );
            return None;
        }
    };
    match parse(&src) {
        Err(e) => {
            let lines = src.lines().count().max(1);
            assert!(
                e.line >= 1 && e.line <= lines,
                "error line {} outside 1..={lines}: {e}",
                e.line
            );
            assert!(e.col >= 1, "error column 0: {e}");
            assert!(
                !e.msg.is_empty() && e.msg.len() <= MAX_MESSAGE,
                "message of {} bytes",
                e.msg.len()
            );
            let _ = e.snippet(&src);
            None
        }
        Ok(t) => {
            let text: String = t.stmts.iter().map(|s| format!("{}\n", s.text)).collect();
            let again = parse(&text)
                .unwrap_or_else(|e| panic!("statement text does not parse again: {e}\n{text}"));
            assert_eq!(again.stmts.len(), t.stmts.len());
            for (a, b) in t.stmts.iter().zip(&again.stmts) {
                assert_eq!(a.kind, b.kind, "round trip changed `{}`", a.text);
                assert_eq!(a.expect, b.expect, "round trip changed `{}`", a.text);
                assert_eq!(a.text, b.text);
            }
            let json = to_json_lines(&t.stmts);
            let back: Vec<Stmt> = from_json_lines(&json)
                .unwrap_or_else(|e| panic!("JSON lines do not read back: {e}\n{json}"));
            assert_eq!(back, t.stmts, "JSON round trip changed the statements");
            Some(t)
        }
    }
}

/// Simulated memory a trace may create and still replay quickly with every strategy:
/// physically contiguous memory costs per leaf, scattered memory per page, and the per-page
/// strategy per 4 KiB page.
const MAX_TOTAL: u64 = 4 << 30;
const MAX_SCATTERED: u64 = 16 << 20;
const MAX_PER_PAGE: u64 = 64 << 20;
const MAX_STMTS: usize = 400;

/// Whether a trace is cheap enough to replay (`per_page`: also with the per-page strategy).
pub fn budget_ok(t: &Trace) -> (bool, bool) {
    let (mut total, mut scattered) = (0u64, 0u64);
    for s in &t.stmts {
        if let StmtKind::Mmap {
            size,
            backing,
            layout,
            ..
        } = &s.kind
        {
            total = total.saturating_add(*size);
            if *layout == Layout::Scattered && *backing != Backing::Hugetlb1g {
                scattered = scattered.saturating_add(*size);
            }
        }
    }
    let ok = t.stmts.len() <= MAX_STMTS && total <= MAX_TOTAL && scattered <= MAX_SCATTERED;
    (ok, ok && total <= MAX_PER_PAGE)
}

/// `t` with a `check` after every statement (the container's first).
pub fn with_checks(t: &Trace) -> Trace {
    let mut stmts = Vec::with_capacity(t.stmts.len() * 2);
    for s in &t.stmts {
        stmts.push(s.clone());
        if !matches!(s.kind, StmtKind::Check) {
            stmts.push(Stmt {
                line: s.line,
                text: "check".into(),
                kind: StmtKind::Check,
                expect: None,
            });
        }
    }
    Trace { stmts }
}

fn run(t: &Trace, strategy: Strategy) -> Replay {
    let opts = Options {
        strategy,
        ..Options::default()
    };
    let r = replay(t, &opts, &mut |_| {});
    for step in &r.records {
        if let Outcome::Invariants(v) = &step.outcome {
            panic!(
                "{}: invariants broken after line {} `{}`: {}",
                strategy.name(),
                step.line,
                step.text,
                v.join("; ")
            );
        }
    }
    if let Some(s) = &r.summary {
        assert!(
            s.violations.is_empty(),
            "{}: invariants broken at the end: {}",
            strategy.name(),
            s.violations.join("; ")
        );
    }
    if let Some(c) = &r.container {
        if let Err(v) = c.check_invariants() {
            panic!(
                "{}: invariants broken where the run stopped: {}",
                strategy.name(),
                v.join("; ")
            );
        }
    }
    r
}

/// The records of a replay as JSON objects, without the keys in `drop`.
fn records(r: &Replay, drop: &[&str]) -> Vec<Value> {
    let mut out: Vec<Value> = r.json_lines();
    for v in &mut out {
        if let Some(o) = v.as_object_mut() {
            for d in drop {
                o.remove(*d);
            }
        }
    }
    out
}

fn same(a: &Replay, b: &Replay, drop: &[&str]) {
    assert_eq!(
        a.error.as_ref().map(|e| e.line),
        b.error.as_ref().map(|e| e.line),
        "{} and {} stop at different lines: {:?} / {:?}",
        a.strategy.name(),
        b.strategy.name(),
        a.error,
        b.error
    );
    let (ra, rb) = (records(a, drop), records(b, drop));
    assert_eq!(ra.len(), rb.len());
    for (x, y) in ra.iter().zip(&rb) {
        assert_eq!(
            x,
            y,
            "{} and {} disagree",
            a.strategy.name(),
            b.strategy.name()
        );
    }
}

/// Whether a container of the trace models kernel 3.11.
fn is_3_11(t: &Trace) -> bool {
    t.stmts
        .iter()
        .any(|s| matches!(&s.kind, StmtKind::Container { kernel: Some(k), .. } if k == "3.11"))
}

/// The `replay` target. Returns how many strategies replayed the input (0: it did not parse
/// or was over the budget).
pub fn replay_target(data: &[u8]) -> usize {
    let Some(t) = parse_target(data) else {
        return 0;
    };
    let (ok, per_page) = budget_ok(&t);
    if !ok {
        return 0;
    }
    let t = with_checks(&t);
    let contiguous = run(&t, Strategy::Contiguous);
    let folio = run(&t, Strategy::Folio);
    same(&contiguous, &folio, &["warnings"]);
    // Under kernel=3.11 an unmap's size, and so what stays pinned and locked, follows the IOMMU
    // leaves (a large leaf unmaps whole), so per-page and contiguous answer differently by
    // design (docs/kernel-3.11.md); only the two strategies with the same leaves are compared.
    if per_page && !is_3_11(&t) {
        let pp = run(&t, Strategy::PerPage);
        same(
            &contiguous,
            &pp,
            &["warnings", "message", "domains", "tables"],
        );
        return 3;
    }
    2
}

/// A small deterministic generator (xorshift64*), so the smoke run is the same every time.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed (0 is replaced by a fixed non-zero value).
    pub fn new(seed: u64) -> Rng {
        Rng(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }
    /// The next value.
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// A value below `n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Words the mutator splices in: edge numbers, keys, verbs, invisible characters.
const DICT: &[&str] = &[
    "0",
    "1",
    "3",
    "4K",
    "2M",
    "1G",
    "1T",
    "0xffffffffffffffff",
    "0xfffffffffffff000",
    "18446744073709551615",
    "0x8000000000000000",
    "ram",
    "ram+4K",
    "ram-4K",
    "ram+0xfffffffffffff000",
    "iova=",
    "size=",
    "vaddr=",
    "pgsize=",
    "flags=dirty",
    "flags=vaddr",
    "flags=all",
    "reserved=0-0xfff",
    "aperture=0x1000-0xffffffff",
    "format=mock",
    "pgsizes=4K,2M",
    "backing=pfnmap",
    "backing=hugetlb-1g",
    "layout=scattered",
    "at=0xfffffffffff00000",
    "phys=0xffffffffffe00000",
    "phys=0",
    "=>",
    "=> ok",
    "=> EINVAL",
    "locked=+1",
    "leaves.d0.4K=1",
    "check",
    "unmap all",
    "dirty start",
    "dirty get iova=0 size=4K pgsize=4K",
    "detach d0",
    "munmap ram",
    "domain d1 format=mock pgsizes=4K",
    "\u{0}",
    "\u{feff}",
    "\u{7}",
    "#",
    "\n",
    " ",
    "-",
    "+",
];

/// One mutation of `input`: a byte change, a splice from [`DICT`], a line duplicated, dropped
/// or swapped, or a number word replaced.
pub fn mutate(input: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut v = input.to_vec();
    let rounds = 1 + rng.below(4);
    for _ in 0..rounds {
        match rng.below(7) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = (rng.next() & 0xff) as u8;
            }
            1 | 2 => {
                let i = if v.is_empty() {
                    0
                } else {
                    rng.below(v.len() + 1)
                };
                let w = DICT[rng.below(DICT.len())].as_bytes();
                v.splice(i..i, w.iter().copied());
            }
            3 | 4 => {
                // Replace a whole word (between spaces/`=`) by a dictionary word.
                if v.is_empty() {
                    continue;
                }
                let i = rng.below(v.len());
                let is_sep = |b: u8| b == b' ' || b == b'=' || b == b'\n';
                let start = v[..i].iter().rposition(|&b| is_sep(b)).map_or(0, |p| p + 1);
                let end = v[i..]
                    .iter()
                    .position(|&b| is_sep(b))
                    .map_or(v.len(), |p| i + p);
                let w = DICT[rng.below(DICT.len())].as_bytes();
                v.splice(start..end, w.iter().copied());
            }
            _ => {
                let mut lines: Vec<Vec<u8>> =
                    v.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
                if lines.len() < 2 {
                    continue;
                }
                let (a, b) = (rng.below(lines.len()), rng.below(lines.len()));
                match rng.below(3) {
                    0 => {
                        let l = lines[a].clone();
                        lines.insert(b, l);
                    }
                    1 if a != 0 => {
                        lines.remove(a);
                    }
                    _ if a != 0 && b != 0 => lines.swap(a, b),
                    _ => {}
                }
                v = lines.join(&b'\n');
            }
        }
    }
    v.truncate(16 << 10);
    v
}
