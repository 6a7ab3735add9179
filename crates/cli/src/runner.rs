//! Replaying a parsed trace against the engine (`type1 replay`).
//!
//! [`replay`] runs the statements in order on a [`Container`] over a simulated process
//! ([`SimMm`]) and returns one [`Record`] per statement: what the call answered, the state the
//! statement's expectation is compared with, the expectations that failed, and warnings for
//! people. Three kinds of trouble are kept apart:
//!
//! * an **errno** is a result like any other (`map ... => EEXIST` expects one);
//! * a failed **expectation** or an **invariant violation** (`check`, and the final summary) is
//!   recorded and the run goes on, so that every failing line is named (exit 1);
//! * a **trace error** — the trace asks for something the model cannot do (an unknown region
//!   name, an invalid page-size set, overlapping `mmap`s) — stops the run at that line (exit 2).
//!
//! Defaults the trace language leaves to the runner (`argsz=`, bitmap buffers) are documented
//! on [`replay`].

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use iommu::{Domain, DomainConfig, Format};
use type1::mm::sim::SimMm;
use type1::mm::MmapSpec;
use type1::mm::PageSource;
use type1::mm::{AnyMemory, Memory};
use type1::{
    BitmapArg, Config, Container, Errno, Error, KernelProfile, MapDma, Strategy, UnmapDma,
};

use crate::trace::record::{self, Dma, InfoFields, Notified, Record};
use crate::trace::verbs::{ContainerArgs, DomainArgs, MapArgs};
use crate::trace::{
    defaults, dispatch, expect, Memlock, Stmt, Trace, Verbs, UNMAP_ALL, UNMAP_DIRTY,
};
use crate::units;

const SZ_4K: u64 = 4096;
const SZ_2M: u64 = 2 << 20;
const SZ_1G: u64 = 1 << 30;

/// How to run a trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// How the engine pins and maps (`--strategy`).
    pub strategy: Strategy,
    /// Check at every unpin that no domain still translates the page (invariant 2).
    pub check_unpin_order: bool,
    /// Run on the process's real memory (`--memory host`) instead of the model.
    pub host_memory: bool,
    /// Run the statements without holding them to their expectations (`--no-expect`).
    pub no_expect: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            strategy: Strategy::Contiguous,
            check_unpin_order: true,
            host_memory: false,
            no_expect: false,
        }
    }
}

/// What a statement answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The call succeeded.
    Ok,
    /// The call failed with this errno; `message` says why, for people.
    Errno {
        /// The errno.
        errno: Errno,
        /// The engine's explanation.
        message: String,
    },
    /// `check` (or the summary) found the engine's invariants broken.
    Invariants(Vec<String>),
}

impl Outcome {
    /// The call succeeded.
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok)
    }
    /// The errno name, if the call failed with one.
    pub fn errno(&self) -> Option<&'static str> {
        match self {
            Outcome::Errno { errno, .. } => errno.known_name(),
            _ => None,
        }
    }
    /// The human explanation of a failure.
    pub fn message(&self) -> Option<String> {
        match self {
            Outcome::Ok => None,
            Outcome::Errno { message, .. } => Some(message.clone()),
            Outcome::Invariants(v) => Some(format!("invariants violated: {}", v.join("; "))),
        }
    }
    /// `ok`, the errno name, or `INVARIANT` — the result column of the human report.
    pub fn word(&self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Errno { errno, .. } => errno.known_name().unwrap_or("E?"),
            Outcome::Invariants(_) => "INVARIANT",
        }
    }
    fn from_error(e: &Error) -> Outcome {
        Outcome::Errno {
            errno: e.errno(),
            message: e.to_string(),
        }
    }
}

/// One attached domain, as `check` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainState {
    /// The name the trace gave it.
    pub name: String,
    /// The format's name (`x86_64`, `arm64-4k`, ...).
    pub format: String,
    /// The page sizes it maps with.
    pub pgsize_bitmap: u64,
    /// `(page size, leaves)` for every page size of the domain's bitmap, smallest first.
    pub leaves: Vec<(u64, u64)>,
    /// Page-table pages in use.
    pub table_pages: u64,
    /// Map and unmap calls, IOTLB flushes.
    pub stats: iommu::Stats,
}

impl DomainState {
    /// Leaves of exactly `size` bytes.
    pub fn leaves_of(&self, size: u64) -> u64 {
        self.leaves
            .iter()
            .find(|&&(s, _)| s == size)
            .map_or(0, |&(_, n)| n)
    }
    /// All leaves.
    pub fn total_leaves(&self) -> u64 {
        self.leaves.iter().map(|&(_, n)| n).sum()
    }
}

/// The whole state `check` and the summary show.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct State {
    /// The mappings, by IOVA.
    pub dmas: Vec<Dma>,
    /// In attach order.
    pub domains: Vec<DomainState>,
    /// Pins held in total.
    pub pinned: u64,
    /// Locked pages.
    pub locked: u64,
}

impl State {
    /// The state of a container.
    pub fn of(c: &Container<AnyMemory>) -> State {
        State {
            dmas: c
                .dmas()
                .map(|d| Dma {
                    iova: d.iova,
                    size: d.size,
                    vaddr: d.vaddr,
                })
                .collect(),
            domains: c
                .domains()
                .iter()
                .rev()
                .map(|ad| DomainState {
                    name: ad.name.clone(),
                    format: ad.domain.format().name(),
                    pgsize_bitmap: ad.domain.pgsize_bitmap(),
                    leaves: ad.domain.leaves_by_size(),
                    table_pages: ad.domain.table_pages(),
                    stats: ad.domain.stats().clone(),
                })
                .collect(),
            pinned: c.mm().pinned_pages(),
            locked: c.locked_pages(),
        }
    }
    /// The attached domain called `name`.
    pub fn domain(&self, name: &str) -> Option<&DomainState> {
        self.domains.iter().find(|d| d.name == name)
    }

    /// The part of the state a [`Record`] carries.
    pub fn record(&self) -> record::State {
        record::State {
            dmas: Some(self.dmas.to_vec()),
            domains: self
                .domains
                .iter()
                .map(|d| (d.name.clone(), d.leaves.iter().copied().collect()))
                .collect(),
            pinned: Some(self.pinned),
            tables: Some(
                self.domains
                    .iter()
                    .map(|d| (d.name.clone(), d.table_pages))
                    .collect(),
            ),
        }
    }
}

/// The statement-specific part of a record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Detail {
    /// Nothing beyond the outcome.
    None,
    /// `map`: the request.
    Map {
        /// The resolved process address.
        vaddr: u64,
        /// The IOVA.
        iova: u64,
        /// Bytes.
        size: u64,
    },
    /// `unmap`: the request and what it removed.
    Unmap {
        /// The IOVA asked.
        iova: u64,
        /// The size asked for (0 with `all`).
        asked: u64,
        /// `flags=all`.
        all: bool,
        /// Bytes unmapped; `None` when the call failed.
        size: Option<u64>,
        /// The dirty bitmap, with `flags=dirty`.
        bitmap: Option<Vec<u64>>,
        /// The devices told before mappings with external pins were removed.
        notified: Vec<Notified>,
    },
    /// What GET_INFO delivered into the user's buffer; `None` when the call failed.
    Info(Option<InfoFields>),
    /// `dirty get`.
    DirtyGet {
        /// The range asked for: IOVA, bytes, bytes per bit.
        range: (u64, u64, u64),
        /// The bitmap; `None` when the call failed.
        bitmap: Option<Vec<u64>>,
    },
    /// `check`: the whole state.
    Check(State),
}

/// The replay of one statement on the engine: its [`Record`] and what only the engine knows
/// (the state, the time spent, the failed expectations).
#[derive(Clone, Debug)]
pub struct Step {
    /// The statement's line.
    pub line: usize,
    /// The statement as written (without its comment).
    pub text: String,
    /// The verb.
    pub op: &'static str,
    /// What the call answered.
    pub outcome: Outcome,
    /// Locked pages before the statement.
    pub locked_before: u64,
    /// Locked pages after the statement.
    pub locked: u64,
    /// DMA entries left after the statement.
    pub avail: u32,
    /// What only this verb shows.
    pub detail: Detail,
    /// Time spent in the engine call (0 for statements that only set up memory).
    pub elapsed: Duration,
    /// `expected X, got Y`, one per failed expectation item.
    pub mismatches: Vec<String>,
    /// Things a person wants to know (small leaves on huge pages, short unmaps, ...).
    pub warnings: Vec<String>,
}

/// The trace asked for something the model cannot do; the run stopped at this line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceError {
    /// The statement's line.
    pub line: usize,
    /// The statement as written.
    pub text: String,
    /// What the model cannot do, and what to change.
    pub message: String,
}

/// The state after the last statement.
#[derive(Clone, Debug)]
pub struct Summary {
    /// The last statement's line + 1.
    pub line: usize,
    /// The state at the end.
    pub state: State,
    /// DMA entries left.
    pub avail: u32,
    /// Invariant violations at the end (empty = fine).
    pub violations: Vec<String>,
}

/// What the run went through, not only where it ended: high-water marks after each statement
/// and the IOMMU calls of every domain, detached ones included. Constant size, whatever the
/// number of statements.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// The most pages locked after any statement.
    pub peak_locked: u64,
    /// The most DMA entries in use after any statement.
    pub peak_entries: u64,
    /// The most leaves (all domains, all sizes) after any statement.
    pub peak_leaves: u64,
    /// `(page size, leaves)` summed over the domains when [`Tally::peak_leaves`] was reached,
    /// smallest size first.
    pub peak_leaves_by_size: Vec<(u64, u64)>,
    /// `iommu_map` calls of every domain.
    pub map_calls: u64,
    /// `iommu_unmap` calls of every domain.
    pub unmap_calls: u64,
    /// IOTLB flushes of every domain.
    pub iotlb_flushes: u64,
    /// Engine time in `map` statements.
    pub map_time: Duration,
    /// Engine time in `unmap` statements.
    pub unmap_time: Duration,
    /// Statements with a failed expectation or a broken invariant (the summary counts as one).
    pub failed: usize,
    /// Statements run.
    pub statements: usize,
}

impl Tally {
    /// Adds the calls of domains detached so far and those still attached.
    fn calls(&self, c: &Container<AnyMemory>) -> (u64, u64, u64) {
        c.domains().iter().fold(
            (self.map_calls, self.unmap_calls, self.iotlb_flushes),
            |(m, u, f), ad| {
                let st = ad.domain.stats();
                (m + st.map_calls, u + st.unmap_calls, f + st.iotlb_flushes)
            },
        )
    }

    /// Raises the high-water marks to the container's state.
    fn observe(&mut self, c: &Container<AnyMemory>) {
        self.peak_locked = self.peak_locked.max(c.locked_pages());
        let limit = u64::from(c.config().dma_entry_limit);
        self.peak_entries = self
            .peak_entries
            .max(limit.saturating_sub(u64::from(c.dma_avail())));
        let leaves: u64 = c.domains().iter().map(|d| d.domain.total_leaves()).sum();
        if leaves > self.peak_leaves || self.peak_leaves_by_size.is_empty() && leaves > 0 {
            self.peak_leaves = leaves;
            let mut by: std::collections::BTreeMap<u64, u64> = Default::default();
            for ad in c.domains() {
                for (s, n) in ad.domain.leaves_by_size() {
                    *by.entry(s).or_default() += n;
                }
            }
            self.peak_leaves_by_size = by.into_iter().filter(|&(_, n)| n > 0).collect();
        }
    }
}

/// A whole replay.
#[derive(Debug)]
pub struct Replay {
    /// One per statement run, in order (empty when the steps were handed to a callback, see
    /// [`replay_each`]).
    pub records: Vec<Step>,
    /// High-water marks and totals over the whole run.
    pub tally: Tally,
    /// `None` when the trace has no container or stopped with a trace error.
    pub summary: Option<Summary>,
    /// The trace error that stopped the run, if any.
    pub error: Option<TraceError>,
    /// The container at the end (or where the run stopped), for reports.
    pub container: Option<Container<AnyMemory>>,
    /// The strategy the engine used.
    pub strategy: Strategy,
}

impl Step {
    /// The statement's [`Record`]: the object `type1 replay --json` prints for it.
    pub fn record(&self) -> Record {
        let mut r = Record::new(self.line, self.op);
        r.ok = self.outcome.is_ok();
        if let Outcome::Errno { errno, .. } = &self.outcome {
            r.errno = Some(*errno);
        }
        r.message = self.outcome.message();
        r.locked = Some(self.locked);
        r.avail = Some(u64::from(self.avail));
        r.warnings = self.warnings.clone();
        match &self.detail {
            Detail::None | Detail::Map { .. } => {}
            Detail::Unmap {
                size,
                bitmap,
                notified,
                ..
            } => {
                r.size = *size;
                r.bitmap = bitmap.clone();
                r.notified = notified.clone();
            }
            Detail::Info(info) => r.info = info.clone(),
            Detail::DirtyGet { bitmap, .. } => {
                r.dirty_get = true;
                r.bitmap = bitmap.clone();
            }
            Detail::Check(state) => r.state = Some(state.record()),
        }
        r
    }
}

impl Summary {
    /// The summary's [`Record`] (`op` is `summary`).
    pub fn record(&self) -> Record {
        let mut r = Record::new(self.line, "summary");
        if !self.violations.is_empty() {
            r.ok = false;
            r.message = Outcome::Invariants(self.violations.clone()).message();
        }
        r.locked = Some(self.state.locked);
        r.avail = Some(u64::from(self.avail));
        r.state = Some(self.state.record());
        r
    }
}

impl Replay {
    /// Every object of `type1 replay --json`: the statements, then the summary (none when the
    /// trace has no container or stopped at a trace error).
    pub fn json_lines(&self) -> Vec<serde_json::Value> {
        self.records
            .iter()
            .map(Step::record)
            .chain(self.summary.iter().map(Summary::record))
            .map(|r| r.to_json())
            .collect()
    }

    /// 0 all good, 1 a failed expectation or a broken invariant, 2 a trace error.
    pub fn exit_code(&self) -> i32 {
        if self.error.is_some() {
            2
        } else if self.tally.failed == 0 {
            0
        } else {
            1
        }
    }

    /// Every failure as `(line, text, message)`: failed expectations, `check`s that found a
    /// broken invariant, and a broken invariant at the end.
    pub fn failures(&self) -> Vec<(usize, String, String)> {
        let mut out = Vec::new();
        for r in &self.records {
            for m in &r.mismatches {
                out.push((r.line, r.text.clone(), m.clone()));
            }
            if let Outcome::Invariants(v) = &r.outcome {
                if r.mismatches.is_empty() {
                    for m in v {
                        out.push((r.line, r.text.clone(), format!("invariant violated: {m}")));
                    }
                }
            }
        }
        if let Some(s) = &self.summary {
            for m in &s.violations {
                out.push((
                    s.line,
                    "(end of trace)".into(),
                    format!("invariant violated: {m}"),
                ));
            }
        }
        out
    }

    /// Total engine time of the statements with this verb.
    pub fn time_of(&self, op: &str) -> Duration {
        self.records
            .iter()
            .filter(|r| r.op == op)
            .map(|r| r.elapsed)
            .sum()
    }
}

/// Replays `trace`; `progress` is called before each statement.
///
/// Defaults where the trace language leaves the request to the runner:
/// * `map`: `argsz` 32; `unmap`: `argsz` 24, or 48 with `flags=dirty`, which also passes a bitmap
///   of the container's smallest page size, `ceil(size / pgsize / 64) * 8` bytes (at least 8);
/// * `info`: `argsz` 4096; `dirty start|stop`: `argsz` 8; `dirty get`: `argsz` 48 and a bitmap
///   of `max(8, ceil(size / pgsize / 64) * 8)` bytes;
/// * `domain`: the format's reserved regions (the MSI window) unless `reserved=` is given.
pub fn replay(trace: &Trace, opts: &Options, progress: &mut dyn FnMut(&Stmt)) -> Replay {
    let mut records = Vec::new();
    let mut r = run_trace(trace.stmts.iter(), opts, progress, &mut |s| {
        records.push(s.clone());
        ControlFlow::Continue(())
    });
    r.records = records;
    r
}

/// Replays `trace` as [`replay`] does, handing each statement's [`Step`] to `on_step` as soon
/// as it finished and keeping none: what the result holds does not grow with the number of
/// statements (`records` stays empty; [`Replay::tally`] has the totals). `on_step` returning
/// `Break` ends the run there (its reader went away); the summary is then left out.
pub fn replay_each(
    trace: &Trace,
    opts: &Options,
    on_step: &mut dyn FnMut(&Step) -> ControlFlow<()>,
) -> Replay {
    run_trace(trace.stmts.iter(), opts, &mut |_| {}, on_step)
}

/// Replays statements as they come (e.g. [`crate::trace::statements`] of a trace already
/// checked whole), handing each finished statement to `on_step` as [`replay_each`] does; no
/// statement is kept, so memory follows the engine's state, not the trace's length.
pub fn replay_stream<S: std::borrow::Borrow<Stmt>>(
    stmts: impl Iterator<Item = S>,
    opts: &Options,
    on_step: &mut dyn FnMut(&Step) -> ControlFlow<()>,
) -> Replay {
    run_trace(stmts, opts, &mut |_| {}, on_step)
}

fn run_trace<S: std::borrow::Borrow<Stmt>>(
    stmts: impl Iterator<Item = S>,
    opts: &Options,
    progress: &mut dyn FnMut(&Stmt),
    on_step: &mut dyn FnMut(&Step) -> ControlFlow<()>,
) -> Replay {
    let mut broke = false;
    let mut run = Run {
        c: None,
        opts: *opts,
        entries_warned: false,
        refused: None,
        bound: HashMap::new(),
        memlock_warned: false,
        tally: Tally::default(),
    };
    let mut error = None;
    let mut last_line = None;
    for stmt in stmts {
        let stmt: &Stmt = stmt.borrow();
        last_line = Some(stmt.line);
        progress(stmt);
        let locked_before = run.c.as_ref().map_or(0, |c| c.locked_pages());
        match run.exec(stmt) {
            Err(message) => {
                error = Some(TraceError {
                    line: stmt.line,
                    text: stmt.text.clone(),
                    message,
                });
                break;
            }
            Ok(mut done) => {
                // The engine's named warnings (a kernel WARN_ON reached, what 3.11 broke).
                if let Some(c) = run.c.as_mut() {
                    done.warnings.extend(c.take_warnings());
                }
                let (locked, avail) = run
                    .c
                    .as_ref()
                    .map_or((0, 0), |c| (c.locked_pages(), c.dma_avail()));
                let mut rec = Step {
                    line: stmt.line,
                    text: stmt.text.clone(),
                    op: stmt.kind.verb(),
                    outcome: done.outcome,
                    locked_before,
                    locked,
                    avail,
                    detail: done.detail,
                    elapsed: done.elapsed,
                    mismatches: Vec::new(),
                    warnings: done.warnings,
                };
                if let Some(w) = run.entries_warning() {
                    rec.warnings.push(w);
                }
                if let Some(w) = run.memlock_warning() {
                    rec.warnings.push(w);
                }
                if let (Some(exp), false) = (&stmt.expect, opts.no_expect) {
                    rec.mismatches = expect::evaluate(exp, &rec.record(), rec.locked_before);
                }
                let t = &mut run.tally;
                t.statements += 1;
                if !rec.mismatches.is_empty() || matches!(rec.outcome, Outcome::Invariants(_)) {
                    t.failed += 1;
                }
                match rec.op {
                    "map" => t.map_time += rec.elapsed,
                    "unmap" => t.unmap_time += rec.elapsed,
                    _ => {}
                }
                if let Some(c) = &run.c {
                    t.observe(c);
                }
                if on_step(&rec).is_break() {
                    broke = true;
                    break;
                }
            }
        }
    }
    let summary = match (&run.c, &error) {
        (Some(c), None) if !broke => Some(Summary {
            line: last_line.map_or(0, |l| l + 1),
            state: State::of(c),
            avail: c.dma_avail(),
            violations: c.check_invariants().err().unwrap_or_default(),
        }),
        _ => None,
    };
    let mut tally = run.tally;
    if let Some(c) = &run.c {
        (tally.map_calls, tally.unmap_calls, tally.iotlb_flushes) = tally.calls(c);
    }
    if summary.as_ref().is_some_and(|s| !s.violations.is_empty()) {
        tally.failed += 1;
    }
    Replay {
        records: Vec::new(),
        tally,
        summary,
        error,
        container: run.c,
        strategy: opts.strategy,
    }
}

/// The profile word `--kernel VERSION` stands for (a short name, or a full Debian version as
/// `kernel-check` takes it; any other word is passed on for the engine's profiles to judge),
/// or why it is refused.
pub fn kernel_word(k: &str) -> Result<String, String> {
    let w = crate::kernel_check::profile_of(k).map_or_else(|| k.trim().to_string(), str::to_string);
    KernelProfile::parse(&w).map(|_| w).ok_or_else(|| {
        format!("unknown kernel {k:?} (use 7.2, 6.12 or 6.1, or a full Debian version)")
    })
}

/// Whether the statement is the `mmap` of a `pfnmap` region: real memory cannot back one, so
/// a run on `--memory host` is refused (at the first such line) before anything is allocated.
pub fn is_pfnmap(s: &Stmt) -> bool {
    matches!(
        &s.kind,
        crate::trace::StmtKind::Mmap {
            backing: type1::mm::Backing::Pfnmap,
            ..
        }
    )
}

struct Run {
    c: Option<Container<AnyMemory>>,
    opts: Options,
    entries_warned: bool,
    /// Why `container` made no container (3.11 had no type1v2).
    refused: Option<String>,
    /// Every region name and the address it was last mapped at: a name stays bound after
    /// `munmap`, so a later `map vaddr=NAME` reaches unmapped memory (EFAULT, as the kernel).
    bound: HashMap<String, u64>,
    memlock_warned: bool,
    /// Peaks so far, and the IOMMU calls of the domains detached so far.
    tally: Tally,
}

struct Done {
    outcome: Outcome,
    detail: Detail,
    elapsed: Duration,
    warnings: Vec<String>,
}

impl Done {
    fn ok() -> Done {
        Done {
            outcome: Outcome::Ok,
            detail: Detail::None,
            elapsed: Duration::ZERO,
            warnings: Vec::new(),
        }
    }

    /// An engine call with nothing to show but its outcome, timed.
    fn timed<T>(f: impl FnOnce() -> Result<T, Error>) -> Done {
        let (r, elapsed) = timed(f);
        Done {
            outcome: outcome_of(&r),
            elapsed,
            ..Done::ok()
        }
    }
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t = Instant::now();
    let v = f();
    (v, t.elapsed())
}

fn outcome_of<T>(r: &Result<T, Error>) -> Outcome {
    match r {
        Ok(_) => Outcome::Ok,
        Err(e) => Outcome::from_error(e),
    }
}

impl Run {
    fn container(&mut self) -> Result<&mut Container<AnyMemory>, String> {
        let refused = &self.refused;
        self.c.as_mut().ok_or_else(|| match refused {
            Some(why) => format!("no container: {why}"),
            None => "no container: `container` must be the first statement".to_string(),
        })
    }

    /// The trace error for a request 3.11 did not have at all.
    fn not_in_3_11(&mut self, what: &str) -> Result<(), String> {
        if self.container()?.config().kernel.is_3_11() {
            return Err(format!(
                "{what}: kernel=3.11 had no such request (external pins came with mdev in 4.10); \
                 use kernel=7.2"
            ));
        }
        Ok(())
    }

    /// Runs one statement: the verb's function (see [`Verbs`]).
    fn exec(&mut self, stmt: &Stmt) -> Result<Done, String> {
        dispatch(self, &stmt.kind)
    }

    /// A warning the first time more than 90% of the DMA entries are in use.
    fn entries_warning(&mut self) -> Option<String> {
        let c = self.c.as_ref()?;
        let limit = u64::from(c.config().dma_entry_limit);
        let used = limit.saturating_sub(u64::from(c.dma_avail()));
        let high = used * 10 > limit * 9;
        let first = high && !self.entries_warned;
        self.entries_warned = high;
        first.then(|| {
            format!(
                "{used} of {limit} DMA entries in use (above 90% of dma_entry_limit): \
                 map fewer, larger regions or raise the limit"
            )
        })
    }

    /// A warning each time locked memory rises above 90% of RLIMIT_MEMLOCK (when the limit is
    /// enforced: not with CAP_IPC_LOCK).
    fn memlock_warning(&mut self) -> Option<String> {
        let c = self.c.as_ref()?;
        let cfg = c.config();
        let limit = cfg.memlock.filter(|_| !cfg.cap_ipc_lock)? / SZ_4K;
        let locked = c.locked_pages();
        let high = u128::from(locked) * 10 > u128::from(limit) * 9;
        let first = high && !self.memlock_warned;
        self.memlock_warned = high;
        first.then(|| {
            format!(
                "locked memory {} of the {} memlock limit ({}): the next map may fail with \
                 ENOMEM; raise memlock= (ulimit -l) or map less",
                units::pages(locked),
                units::pages(limit),
                units::percent_of(locked, limit)
            )
        })
    }
}

/// One function per verb, each a thin layer over the engine's call.
impl Verbs for Run {
    type Out = Result<Done, String>;

    /// `container`: a new container over a new (simulated or real) process.
    fn new_container(&mut self, a: ContainerArgs<'_>) -> Result<Done, String> {
        let kernel_word = a.kernel.unwrap_or(defaults::KERNEL);
        let kernel = KernelProfile::parse(kernel_word)
            .ok_or_else(|| format!("unknown kernel={kernel_word} (use 7.2, 6.12, 6.1 or 3.11)"))?;
        if let Err(e) = kernel.set_iommu(a.v2) {
            self.c = None;
            self.refused = Some(e.to_string());
            return Ok(Done {
                outcome: Outcome::from_error(&e),
                ..Done::ok()
            });
        }
        let mut warnings = Vec::new();
        if kernel.is_3_11() && a.dma_entry_limit.is_some() {
            warnings.push(
                "kernel=3.11 had no dma_entry_limit (no entry limit at all): ignored".to_string(),
            );
        }
        let cfg = Config {
            v2: a.v2,
            dma_entry_limit: a.dma_entry_limit.unwrap_or(defaults::DMA_ENTRY_LIMIT),
            memlock: match a.memlock {
                Some(Memlock::Bytes(b)) => Some(b),
                Some(Memlock::Unlimited) | None => None,
            },
            cap_ipc_lock: a.cap_ipc_lock,
            strategy: self.opts.strategy,
            kernel,
            check_unpin_order: self.opts.check_unpin_order,
        };
        let mm = if self.opts.host_memory {
            AnyMemory::Host(
                type1::mm::host::HostMm::new().map_err(|e| format!("real memory: {e}"))?,
            )
        } else {
            AnyMemory::Sim(SimMm::new())
        };
        self.c = Some(Container::new(cfg, mm));
        Ok(Done {
            warnings,
            ..Done::ok()
        })
    }

    /// `domain`: a new IOMMU domain attached to the container.
    fn domain(&mut self, a: DomainArgs<'_>) -> Result<Done, String> {
        let name = a.name;
        let c = self.container()?;
        if let Some(first) = c.domains().first().filter(|_| c.config().kernel.is_3_11()) {
            return Err(format!(
                "domain {name}: kernel=3.11 had one IOMMU domain per container, which every group \
                 joined (here {:?}); a second domain with its own page tables cannot be modelled",
                first.name
            ));
        }
        let fmt_word = a.format.unwrap_or("x86_64");
        let fmt =
            Format::parse(fmt_word).map_err(|e| format!("domain {name}: {e}; change format="))?;
        let cfg = DomainConfig {
            format: fmt,
            pgsize_bitmap: a.pgsizes.map(|v| v.iter().fold(0, |x, y| x | y)),
            aperture: a.aperture,
        };
        let domain = Domain::new(cfg).map_err(|e| {
            let fix = match e {
                iommu::Error::BadPgsizes { .. } => "change pgsizes=",
                iommu::Error::BadAperture { .. } => "change aperture=",
                iommu::Error::UnknownFormat(_) => "change format=",
                _ => "change the domain's arguments",
            };
            format!("domain {name}: {e}; {fix}")
        })?;
        let reserved = a
            .reserved
            .map_or_else(|| domain.reserved_regions(), <[_]>::to_vec);
        Ok(Done::timed(|| c.attach(name, domain, reserved)))
    }

    /// `detach`: an attached domain leaves the container.
    fn detach(&mut self, name: &str) -> Result<Done, String> {
        let c = self.container()?;
        if c.domain(name).is_none() {
            let names: Vec<&str> = c.domains().iter().map(|d| d.name.as_str()).collect();
            return Err(format!(
                "detach {name}: no domain named {name:?} is attached (attached: {})",
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names.join(", ")
                }
            ));
        }
        let st = c
            .domain(name)
            .map(|d| d.stats().clone())
            .unwrap_or_default();
        let done = Done::timed(|| c.detach(name));
        if done.outcome.is_ok() {
            self.tally.map_calls += st.map_calls;
            self.tally.unmap_calls += st.unmap_calls;
            self.tally.iotlb_flushes += st.iotlb_flushes;
        }
        Ok(done)
    }

    /// `mmap`: a new region in the process.
    fn mmap(&mut self, spec: MmapSpec) -> Result<Done, String> {
        let c = self.container()?;
        let vaddr = c
            .mm_mut()
            .mmap(&spec)
            .map_err(|e| format!("mmap {}: {e}", spec.name))?;
        // What real memory could not honour (`layout`, `phys`: the kernel places pages).
        let notes = c.mm_mut().notes();
        self.bound.insert(spec.name.clone(), vaddr);
        Ok(Done {
            warnings: notes,
            ..Done::ok()
        })
    }

    /// `munmap`: a region, or part of it, leaves the process.
    fn munmap(&mut self, name: &str, range: Option<(u64, u64)>) -> Result<Done, String> {
        let c = self.container()?;
        c.mm_mut()
            .munmap(name, range)
            .map_err(|e| format!("munmap {name}: {e}"))?;
        Ok(Done::ok())
    }

    /// `map`: VFIO_IOMMU_MAP_DMA, with a warning when huge pages got small leaves.
    fn map(&mut self, a: MapArgs<'_>) -> Result<Done, String> {
        let (iova, size) = (a.iova, a.size);
        let strategy = self.opts.strategy;
        self.container()?;
        let (c, bound) = (self.c.as_mut().expect("checked above"), &self.bound);
        let vaddr = defaults::resolve_vaddr(a.vaddr, |n| {
            c.mm().region_vaddr(n).or_else(|| bound.get(n).copied())
        })?;
        let req = MapDma {
            argsz: defaults::map_argsz(a.argsz),
            flags: a.flags,
            vaddr,
            iova,
            size,
        };
        let before: Vec<(String, Vec<(u64, u64)>)> = c
            .domains()
            .iter()
            .map(|d| (d.name.clone(), d.domain.leaves_by_size()))
            .collect();
        let (r, elapsed) = timed(|| c.map_dma(&req));
        let warnings = if r.is_ok() {
            hugepage_warnings(c, strategy, &req, &before)
        } else {
            Vec::new()
        };
        let mut outcome = outcome_of(&r);
        if let (Err(Error::Memlock { limit, .. }), Outcome::Errno { message, .. }) =
            (&r, &mut outcome)
        {
            // The failed map was unwound: what is locked now is what was before it.
            message.push_str(&memlock_need(c.mm(), vaddr, size, *limit, c.locked_pages()));
        }
        Ok(Done {
            outcome,
            detail: Detail::Map { vaddr, iova, size },
            elapsed,
            warnings,
        })
    }

    /// `unmap`: VFIO_IOMMU_UNMAP_DMA (with a bitmap for `flags=dirty`), with a warning when
    /// the size removed is not the size asked.
    fn unmap(
        &mut self,
        iova: u64,
        size: u64,
        flags: u32,
        argsz: Option<u32>,
    ) -> Result<Done, String> {
        let c = self.container()?;
        let all = flags & UNMAP_ALL != 0;
        let bitmap = (flags & UNMAP_DIRTY != 0).then(|| {
            let pgsize = defaults::unmap_bitmap_pgsize(c.pgsize_bitmap());
            BitmapArg {
                pgsize,
                size: defaults::bitmap_bytes(size, pgsize),
            }
        });
        let req = UnmapDma {
            argsz: defaults::unmap_argsz(argsz, flags),
            flags,
            iova,
            size,
            bitmap,
        };
        let (r, elapsed) = timed(|| c.unmap_dma(&req));
        let mut warnings = Vec::new();
        let notified: Vec<Notified> = c
            .take_unmap_notices()
            .into_iter()
            .map(|n| {
                warnings.push(format!(
                    "unmap notified device(s) {} of the mapping at iova {:#x} ({}): they \
                     unpinned {} page pin(s) first",
                    n.devices.join(", "),
                    n.iova,
                    units::bytes_exact(n.size),
                    n.unpinned
                ));
                Notified {
                    iova: n.iova,
                    size: n.size,
                    devices: n.devices,
                    unpinned: n.unpinned,
                }
            })
            .collect();
        if let Ok(reply) = &r {
            if !all && reply.size != size {
                let how = match c.dma_at(iova) {
                    _ if reply.size > size && c.config().kernel.is_3_11() => {
                        "more than asked: the IOMMU removed whole large leaves".into()
                    }
                    _ if reply.size > size => "more than asked: whole mappings were removed".into(),
                    // v1's walk stops at a mapping that begins before `iova` (spec §1.4).
                    Some(d) if !c.config().v2 && d.iova < iova => format!(
                        "less than asked: the range starts inside the mapping at {:#x}, and \
                         type1 (v1) removes only whole mappings from the first that starts \
                         inside the range, stopping at one that starts before it",
                        d.iova
                    ),
                    _ => "less than asked: part of the range was not mapped".into(),
                };
                warnings.push(format!(
                    "unmap of {} at iova {iova:#x} removed {} ({how})",
                    units::bytes_exact(size),
                    units::bytes_exact(reply.size)
                ));
            }
        }
        let outcome = outcome_of(&r);
        let (removed, bitmap) = match r {
            Ok(reply) => (Some(reply.size), reply.bitmap),
            Err(_) => (None, None),
        };
        Ok(Done {
            outcome,
            detail: Detail::Unmap {
                iova,
                asked: size,
                all,
                size: removed,
                bitmap,
                notified,
            },
            elapsed,
            warnings,
        })
    }

    /// `info`: VFIO_IOMMU_GET_INFO into a buffer of `argsz` bytes.
    fn info(&mut self, argsz: Option<u32>) -> Result<Done, String> {
        let c = self.container()?;
        let (r, elapsed) = timed(|| c.get_info(defaults::info_argsz(argsz)));
        let outcome = outcome_of(&r);
        let info = r.ok().map(|i| {
            let caps = i.cap_offset != 0;
            InfoFields {
                argsz: i.argsz,
                flags: i.flags,
                iova_pgsizes: i.iova_pgsizes,
                cap_offset: i.cap_offset,
                argsz_needed: i.argsz_needed,
                iova_ranges: caps.then_some(i.iova_ranges),
                dma_avail: caps.then_some(i.dma_avail),
                migration_pgsize: caps.then_some(i.migration_pgsize),
            }
        });
        Ok(Done {
            outcome,
            detail: Detail::Info(info),
            elapsed,
            warnings: Vec::new(),
        })
    }

    /// `dirty start` / `dirty stop`: VFIO_IOMMU_DIRTY_PAGES with `flag`.
    fn dirty(&mut self, flag: u32) -> Result<Done, String> {
        let c = self.container()?;
        Ok(Done::timed(|| {
            c.dirty_pages(defaults::DIRTY_ARGSZ, flag, None)
        }))
    }

    /// `dirty get`: VFIO_IOMMU_DIRTY_PAGES with GET_BITMAP.
    fn dirty_get(&mut self, iova: u64, size: u64, pgsize: u64) -> Result<Done, String> {
        let c = self.container()?;
        let arg = BitmapArg {
            pgsize,
            size: defaults::bitmap_bytes(size, pgsize),
        };
        let (r, elapsed) = timed(|| {
            c.dirty_pages(
                defaults::DIRTY_GET_ARGSZ,
                defaults::DIRTY_GET_BITMAP,
                Some((iova, size, arg)),
            )
        });
        Ok(Done {
            outcome: outcome_of(&r),
            detail: Detail::DirtyGet {
                range: (iova, size, pgsize),
                bitmap: r.ok().flatten(),
            },
            elapsed,
            warnings: Vec::new(),
        })
    }

    /// `pin`: the device of a group pins pages through the container (`vfio_pin_pages`).
    fn pin(&mut self, iova: u64, npage: u64, group: Option<&str>) -> Result<Done, String> {
        self.not_in_3_11("pin")?;
        let group = self.pinning_group("pin", group)?;
        let c = self.container()?;
        Ok(Done::timed(|| c.pin_pages(&group, iova, npage)))
    }

    /// `unpin`: a device unpins pages (`vfio_unpin_pages`; the kernel returns nothing, its
    /// `WARN_ON`s are warnings).
    fn unpin(&mut self, iova: u64, npage: u64) -> Result<Done, String> {
        self.not_in_3_11("unpin")?;
        let c = self.container()?;
        Ok(Done::timed(|| c.unpin_pages(iova, npage)))
    }

    /// `dma_rw`: a device reads or writes process memory through the container.
    fn dma_rw(&mut self, iova: u64, size: u64, write: bool) -> Result<Done, String> {
        self.not_in_3_11("dma_rw")?;
        let c = self.container()?;
        Ok(Done::timed(|| c.dma_rw(iova, size, write)))
    }

    /// `check`: the engine's invariants, and the state to hold expectations to.
    fn check(&mut self) -> Result<Done, String> {
        let c = self.container()?;
        let (r, elapsed) = timed(|| c.check_invariants());
        let outcome = match r {
            Ok(()) => Outcome::Ok,
            Err(v) => Outcome::Invariants(v),
        };
        Ok(Done {
            outcome,
            detail: Detail::Check(State::of(c)),
            elapsed,
            warnings: Vec::new(),
        })
    }
}

impl Run {
    /// The group whose device pins: `group=` if attached, else the first attached.
    fn pinning_group(&mut self, verb: &str, group: Option<&str>) -> Result<String, String> {
        let c = self.container()?;
        match group {
            Some(g) if c.domain(g).is_some() => Ok(g.to_string()),
            Some(g) => Err(format!(
                "{verb} group={g}: no domain named {g:?} is attached"
            )),
            // No group at all: the kernel's empty device_list (EINVAL).
            None => Ok(c
                .domains()
                .last()
                .map(|d| d.name.clone())
                .unwrap_or_default()),
        }
    }
}

/// What a map refused by RLIMIT_MEMLOCK needed as a whole (the error names only the batch
/// that failed): every page of the range not backed by reserved pfns (`pfnmap`) is charged.
fn memlock_need(mm: &AnyMemory, vaddr: u64, size: u64, limit: u64, locked: u64) -> String {
    let pages = size / SZ_4K;
    // Reserved pfns are mapped but never charged; without a reserved first page the range is
    // ordinary memory (a region is one backing).
    let charged = match mm.vaddr_to_phys(vaddr) {
        Some(pa) if mm.is_reserved(pa >> 12) => 0,
        _ => pages,
    };
    let need = locked.saturating_add(charged);
    format!(
        "; the whole map needs {} locked, {} with what is locked already, against a limit \
         of {}",
        units::pages(charged),
        units::pages(need),
        units::pages(limit)
    )
}

fn align_up(x: u128, a: u128) -> u128 {
    x.div_ceil(a) * a
}

/// After a successful map of memory backed by huge pages: for each domain that got smaller
/// leaves than the huge pages allow, a warning saying why.
fn hugepage_warnings(
    c: &Container<AnyMemory>,
    strategy: Strategy,
    req: &MapDma,
    before: &[(String, Vec<(u64, u64)>)],
) -> Vec<String> {
    let mm = c.mm();
    let (vaddr, iova, size) = (req.vaddr, req.iova, req.size);
    let vend = u128::from(vaddr) + u128::from(size);
    let mut folio = 0;
    for a in [SZ_4K, SZ_2M, SZ_1G] {
        let probe = align_up(u128::from(vaddr), u128::from(a));
        if probe < vend {
            folio = folio.max(mm.folio_size(probe as u64).unwrap_or(0));
        }
    }
    if folio <= SZ_4K {
        return Vec::new();
    }
    let mut out = Vec::new();
    for ad in c.domains().iter().rev() {
        let Some((_, old)) = before.iter().find(|(n, _)| *n == ad.name) else {
            continue;
        };
        let bitmap = ad.domain.pgsize_bitmap();
        let candidates = bitmap & !(2 * SZ_4K - 1) & ((folio << 1) - 1);
        if candidates == 0 {
            continue; // the domain has nothing between 4K and the folio size: nothing to gain
        }
        let p = 1u64 << (63 - candidates.leading_zeros());
        // The bytes that could be in leaves of `p` or more: whole `p` blocks of the IOVA range,
        // or of the vaddr range (what a co-aligned IOVA would have allowed).
        let blocks = |start: u64| {
            let first = align_up(u128::from(start), u128::from(p));
            let end = (u128::from(start) + u128::from(size)) / u128::from(p) * u128::from(p);
            end.saturating_sub(first)
        };
        let possible = blocks(iova).max(blocks(vaddr));
        if possible == 0 {
            continue;
        }
        let mut big: u128 = 0;
        let mut small_leaves = 0u64;
        for &(s, n) in &ad.domain.leaves_by_size() {
            let was = old.iter().find(|&&(os, _)| os == s).map_or(0, |&(_, n)| n);
            let added = n.saturating_sub(was);
            if s >= p {
                big += u128::from(s) * u128::from(added);
            } else {
                small_leaves += added;
            }
        }
        if big >= possible {
            continue;
        }
        let why = hugepage_reason(mm, strategy, vaddr, iova, size, p);
        out.push(format!(
            "map at iova {iova:#x} ({size_h}, on {folio_h} huge pages): domain {name} got \
             {small_leaves} leaves smaller than {p_h}, where {lost} could have been in {p_h} \
             leaves: {why}",
            size_h = units::bytes(size),
            folio_h = units::bytes(folio),
            name = ad.name,
            p_h = units::bytes(p),
            lost = units::bytes(possible as u64 - big.min(possible) as u64),
        ));
    }
    out
}

fn hugepage_reason(
    mm: &AnyMemory,
    strategy: Strategy,
    vaddr: u64,
    iova: u64,
    size: u64,
    p: u64,
) -> String {
    if strategy == Strategy::PerPage {
        return "the per-page strategy hands the IOMMU one 4K page per call".into();
    }
    if let Some(phys) = mm.vaddr_to_phys(vaddr) {
        if iova % p != phys % p {
            return format!(
                "IOVA {iova:#x} and physical address {phys:#x} are not co-aligned modulo {} \
                 (IOVA mod {0} = {:#x}, physical mod {0} = {:#x}); choose an IOVA congruent to \
                 the vaddr modulo {0}",
                units::bytes(p),
                iova % p,
                phys % p
            );
        }
    }
    // Look for the block where the physical run is cut.
    let first = align_up(u128::from(iova), u128::from(p)) as u64;
    let mut off = first - iova;
    let mut steps = 0;
    while off.checked_add(p).is_some_and(|e| e <= size) && steps < 1 << 20 {
        let (v0, v1) = (vaddr + off, vaddr + off + p - SZ_4K);
        match (mm.vaddr_to_phys(v0), mm.vaddr_to_phys(v1)) {
            (Some(a), Some(b)) => {
                if b != a + (p - SZ_4K) {
                    return format!(
                        "the physical run is cut inside the {} block at vaddr {v0:#x} \
                         (a physical discontinuity: the pages are not contiguous there)",
                        units::bytes(p)
                    );
                }
                if mm.is_reserved(a >> 12) != mm.is_reserved(b >> 12) {
                    return format!(
                        "the physical run is cut inside the {} block at vaddr {v0:#x} \
                         (reserved and ordinary pfns meet there)",
                        units::bytes(p)
                    );
                }
            }
            _ => {
                return format!("vaddr {v0:#x} is no longer mapped in the process");
            }
        }
        off += p;
        steps += 1;
    }
    "the pin runs were cut (a physical discontinuity or a reserved pfn), so the IOMMU got \
     pieces smaller than the huge pages"
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::parse;

    fn run(src: &str) -> Replay {
        replay(&parse(src).unwrap(), &Options::default(), &mut |_| {})
    }

    #[test]
    fn the_format_example_replays_clean() {
        let r = run("container type1v2 memlock=4M\n\
                     domain d0 format=x86_64\n\
                     mmap ram size=8M backing=hugetlb-2m\n\
                     map vaddr=ram iova=1G size=4M            => ok locked=+1024\n\
                     map vaddr=ram+2M iova=1G+2M size=2M      => EEXIST\n\
                     unmap iova=1G+4K size=4K                 => EINVAL\n\
                     check                                    => leaves.d0.2M=2 leaves.d0.4K=0\n\
                     map vaddr=ram+4M iova=2G size=4M         => ENOMEM locked=+0\n\
                     unmap iova=1G size=4M                    => ok size=4M locked=-1024\n");
        assert_eq!(r.failures(), vec![]);
        assert_eq!(r.exit_code(), 0);
        assert_eq!(r.summary.as_ref().unwrap().line, 10);
    }

    #[test]
    fn failed_expectations_name_the_line_and_both_values() {
        let r = run("container\n\
                     domain d0 format=mock\n\
                     mmap buf size=8K\n\
                     map vaddr=buf iova=0 size=8K => EEXIST locked=+1\n\
                     check => leaves.d9.4K=1 dmas=2\n");
        let f = r.failures();
        assert_eq!(r.exit_code(), 1);
        assert_eq!(f[0].0, 4);
        assert_eq!(f[0].2, "expected EEXIST, got ok");
        assert_eq!(f[1].2, "expected locked=+1, got locked=+2 (0 -> 2)");
        assert_eq!(
            f[2].2,
            "expected leaves.d9.4K=1, got no domain named \"d9\""
        );
        assert_eq!(f[3].2, "expected dmas=2, got dmas=1");
    }

    #[test]
    fn an_unknown_region_is_a_trace_error_that_stops_the_run() {
        let r = run("container\nmap vaddr=nope iova=0 size=4K\ncheck\n");
        assert_eq!(r.exit_code(), 2);
        let e = r.error.unwrap();
        assert_eq!(e.line, 2);
        assert!(
            e.message.contains("no region named \"nope\""),
            "{}",
            e.message
        );
        assert_eq!(r.records.len(), 1);
        assert!(r.summary.is_none());
    }

    #[test]
    fn an_invalid_domain_is_a_trace_error() {
        let r = run("container\ndomain d0 format=arm64-16k pgsizes=4K\n");
        assert_eq!(r.exit_code(), 2);
        assert!(r.error.unwrap().message.contains("change pgsizes="));
    }

    #[test]
    fn detach_of_an_unknown_domain_is_a_trace_error() {
        let r = run("container\ndomain d0\ndetach d1\n");
        assert_eq!(r.exit_code(), 2);
        assert!(r.error.unwrap().message.contains("attached: d0"));
    }

    #[test]
    fn small_leaves_on_huge_pages_are_explained() {
        let r = run("container\n\
                     domain d0\n\
                     mmap h size=4M backing=hugetlb-2m\n\
                     map vaddr=h iova=1G+4K size=4M\n\
                     mmap h2 size=2M backing=hugetlb-2m\n\
                     map vaddr=h2 iova=2G+4K size=2M\n");
        for i in [3, 5] {
            let w = &r.records[i].warnings;
            assert_eq!(w.len(), 1, "{w:?}");
            assert!(w[0].contains("not co-aligned modulo 2M"), "{}", w[0]);
        }
        let per_page = replay(
            &parse(
                "container\ndomain d0\nmmap h size=4M backing=thp\nmap vaddr=h iova=1G size=4M\n",
            )
            .unwrap(),
            &Options {
                strategy: Strategy::PerPage,
                ..Options::default()
            },
            &mut |_| {},
        );
        assert!(per_page.records[3].warnings[0].contains("per-page strategy"));
        let good =
            run("container\ndomain d0\nmmap h size=4M backing=thp\nmap vaddr=h iova=1G size=4M\n");
        assert!(good.records[3].warnings.is_empty());
    }

    #[test]
    fn short_unmaps_and_a_nearly_full_entry_table_are_warned_about() {
        let r = run("container dma_entry_limit=2\n\
                     domain d0 format=mock\n\
                     mmap buf size=8K\n\
                     map vaddr=buf iova=0 size=4K\n\
                     map vaddr=buf+4K iova=1M size=4K\n\
                     unmap iova=0 size=8K\n");
        assert!(r.records[4].warnings[0].contains("2 of 2 DMA entries"));
        assert!(r.records[5].warnings[0].contains("less than asked"));
    }
}
