//! The human report of `type1 replay` (without `--json`): a table with one row per statement,
//! under it why a statement failed and what `check`, `info` and `dirty get` found; then the
//! warnings (each text once, with its count), the domains, and the container at the end and
//! at its peak.
//!
//! Invariants owned here: a statement is shown whole (wrapped between words, never cut inside
//! an argument); every row is written when its statement finishes, and what the report keeps
//! does not grow with the number of statements; page counts are labelled `pages` and byte
//! sizes use one rounding (`units::bytes`), exact where rounding would hide a difference from
//! the limit.

use std::fmt::Write as _;

use type1::mm::{AnyMemory, PageSource};
use type1::{Container, KernelProfile, Strategy};

use crate::runner::{Detail, Outcome, Replay, Step};
use crate::units;

/// The widest the statement column gets (longer statements wrap).
pub const STATEMENT_WIDTH: usize = 44;

/// The statement without its expectation, cut to `width` characters (`...` marks a cut).
pub fn short_statement(text: &str, width: usize) -> String {
    let s = text.split("=>").next().unwrap_or(text).trim_end();
    if s.chars().count() <= width {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(width.saturating_sub(3)).collect();
        t.push_str("...");
        t
    }
}

/// A table with aligned columns; `right[i]` aligns column i to the right.
pub fn table(header: &[&str], rows: &[Vec<String>], right: &[bool]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[String]| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            let pad = widths[i] - c.chars().count();
            if i > 0 {
                s.push_str("  ");
            }
            if right.get(i).copied().unwrap_or(false) {
                s.push_str(&" ".repeat(pad));
                s.push_str(c);
            } else {
                s.push_str(c);
                s.push_str(&" ".repeat(pad));
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    };
    line(&header.iter().map(|h| h.to_string()).collect::<Vec<_>>());
    for r in rows {
        line(r);
    }
    out
}

/// Column widths of the statement table (the statement column wraps, the others are wide
/// enough for any value they hold: a 20-digit page count is the longest).
const W_LINE: usize = 5;
const W_RESULT: usize = 9;
const W_UNMAPPED: usize = 9;
const W_LOCKED: usize = 22;
const W_ENTRIES: usize = 12;
/// Where detail lines under a row start (under the statement).
const INDENT: usize = W_LINE + 2;
/// Detail lines wrap at this width (indent included).
const DETAIL_WIDTH: usize = 100;
/// A single word longer than this is shown as its start and its length: a statement is
/// never cut inside an argument, except one nobody could read anyway.
const LONG_WORD: usize = 400;
/// Distinct warnings kept for the aggregated list; further distinct ones are only counted.
const MAX_DISTINCT_WARNINGS: usize = 1000;

/// `text` in lines of at most `width` characters, broken between words only. A word longer
/// than `width` gets a line of its own; one longer than [`LONG_WORD`] shows its start and
/// its length.
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut cur = String::new();
    let mut cur_len = 0;
    for w in text.split_whitespace() {
        let n = w.chars().count();
        let (word, n) = if n > LONG_WORD {
            let head: String = w.chars().take(60).collect();
            let shown = format!("{head}…[{n} characters]");
            let len = shown.chars().count();
            (shown, len)
        } else {
            (w.to_string(), n)
        };
        if cur_len > 0 && cur_len + 1 + n > width {
            lines.push(std::mem::take(&mut cur));
            cur_len = 0;
        }
        if cur_len > 0 {
            cur.push(' ');
            cur_len += 1;
        }
        cur.push_str(&word);
        cur_len += n;
    }
    if cur_len > 0 || lines.is_empty() {
        lines.push(cur);
    }
    lines
}

fn pgsizes(bitmap: u64) -> String {
    (0..64)
        .filter(|b| bitmap & (1u64 << b) != 0)
        .map(|b| units::bytes(1u64 << b))
        .collect::<Vec<_>>()
        .join(",")
}

/// The `kernel=` word of a profile (`V6_12` → `6.12`): derived from the variant's name, so a
/// profile added to the engine is named without a change here.
pub fn kernel_name(k: KernelProfile) -> String {
    format!("{k:?}").trim_start_matches('V').replace('_', ".")
}

fn leaves_text(leaves: &[(u64, u64)]) -> String {
    if leaves.is_empty() {
        return "none".into();
    }
    leaves
        .iter()
        .map(|&(s, n)| format!("{}:{n}", units::bytes(s)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// What a `check`, `info` or `dirty get` found, in one line for people.
fn detail_text(detail: &Detail) -> Option<String> {
    match detail {
        Detail::Check(st) => {
            let mut t = format!(
                "DMA entries {}, pinned {}, locked {}",
                st.dmas.len(),
                units::pages(st.pinned),
                units::pages(st.locked)
            );
            for d in &st.domains {
                let _ = write!(t, "; leaves {}: {}", d.name, leaves_text(&d.leaves));
            }
            Some(t)
        }
        Detail::Info(Some(i)) => {
            let mut t = format!("page sizes {}", pgsizes(i.iova_pgsizes));
            if let Some(ranges) = &i.iova_ranges {
                let r: Vec<String> = ranges
                    .iter()
                    .map(|&(a, b)| format!("{a:#x}-{b:#x}"))
                    .collect();
                let _ = write!(t, "; IOVA ranges {}", r.join(", "));
            }
            if let Some(n) = i.dma_avail {
                let _ = write!(t, "; {n} DMA entries left");
            }
            if let Some(p) = i.migration_pgsize {
                let _ = write!(t, "; dirty-tracking page sizes {}", pgsizes(p));
            }
            if i.cap_offset == 0 && i.argsz_needed > i.argsz {
                let _ = write!(
                    t,
                    "; no capabilities: argsz {} is less than the {} they need",
                    i.argsz, i.argsz_needed
                );
            }
            Some(t)
        }
        Detail::DirtyGet {
            range: (iova, size, pgsize),
            bitmap: Some(words),
        } => {
            let bits = size.checked_div(*pgsize).unwrap_or(0);
            let dirty: u64 = words.iter().map(|w| u64::from(w.count_ones())).sum();
            Some(format!(
                "{dirty} of {bits} pages of {} dirty in {} at iova {iova:#x}",
                units::bytes(*pgsize),
                units::bytes(*size)
            ))
        }
        _ => None,
    }
}

struct Warning {
    text: String,
    first: usize,
    last: usize,
    count: u64,
}

/// The human report of one trace, written as the replay goes: [`Human::header`], then
/// [`Human::step`] for each statement as it finishes, then [`Human::finish`].
///
/// Nothing kept grows with the number of statements: rows are returned, not stored;
/// identical warnings are counted (at most [`MAX_DISTINCT_WARNINGS`] distinct texts are kept,
/// the rest only counted).
pub struct Human {
    warnings: Vec<Warning>,
    index: std::collections::HashMap<String, usize>,
    warnings_dropped: u64,
}

impl Default for Human {
    fn default() -> Self {
        Self::new()
    }
}

impl Human {
    /// A report with nothing written yet.
    pub fn new() -> Human {
        Human {
            warnings: Vec::new(),
            index: Default::default(),
            warnings_dropped: 0,
        }
    }

    /// The trace's name, the strategy and the table's header.
    pub fn header(name: &str, strategy: Strategy) -> String {
        let mut out = format!("{name} (strategy {})\n", strategy.name());
        out.push_str(&Self::cells(
            "LINE",
            "STATEMENT",
            "RESULT",
            "UNMAPPED",
            "LOCKED",
            "ENTRIES LEFT",
            "",
        ));
        out
    }

    fn cells(
        line: &str,
        stmt: &str,
        result: &str,
        unmapped: &str,
        locked: &str,
        entries: &str,
        mark: &str,
    ) -> String {
        let s = format!(
            "{line:>W_LINE$}  {stmt:<w$}  {result:<W_RESULT$}  {unmapped:>W_UNMAPPED$}  \
             {locked:>W_LOCKED$}  {entries:>W_ENTRIES$}  {mark}",
            w = STATEMENT_WIDTH
        );
        format!("{}\n", s.trim_end())
    }

    fn detail_lines(out: &mut String, label: &str, text: &str) {
        let pad = " ".repeat(INDENT);
        let width = DETAIL_WIDTH - INDENT - label.chars().count() - 2;
        for (i, l) in wrap(text, width).iter().enumerate() {
            if i == 0 {
                let _ = writeln!(out, "{pad}{label}: {l}");
            } else {
                let _ = writeln!(out, "{pad}{}  {l}", " ".repeat(label.chars().count()));
            }
        }
    }

    /// The rows of one statement: the statement (wrapped), its result, what it unmapped, the
    /// locked pages and DMA entries left after it; under it, why it failed, the expectations it
    /// missed, and what `check`, `info` or `dirty get` found.
    pub fn step(&mut self, r: &Step) -> String {
        let mut out = String::new();
        let unmapped = match &r.detail {
            Detail::Unmap { size: Some(s), .. } => units::bytes(*s),
            _ => String::new(),
        };
        let failed = !r.mismatches.is_empty() || matches!(r.outcome, Outcome::Invariants(_));
        // The call whole; its expectation shows only where it failed (the FAIL lines).
        let call = r.text.split("=>").next().unwrap_or(&r.text);
        let lines = wrap(call, STATEMENT_WIDTH);
        for (i, l) in lines.iter().enumerate() {
            out.push_str(&if i == 0 {
                Self::cells(
                    &r.line.to_string(),
                    l,
                    r.outcome.word(),
                    &unmapped,
                    &units::pages(r.locked),
                    &r.avail.to_string(),
                    if failed { "FAIL" } else { "" },
                )
            } else {
                Self::cells("", l, "", "", "", "", "")
            });
        }
        match &r.outcome {
            Outcome::Errno { errno, message } => {
                Self::detail_lines(&mut out, errno.known_name().unwrap_or("error"), message);
            }
            Outcome::Invariants(v) => {
                for m in v {
                    Self::detail_lines(&mut out, "INVARIANT", m);
                }
            }
            Outcome::Ok => {}
        }
        if let Some(t) = detail_text(&r.detail) {
            Self::detail_lines(&mut out, r.op, &t);
        }
        // The reason is on the line above: `expected ok, got ENOMEM`, not the reason again.
        let reason = r.outcome.message().map(|m| format!(" ({m})"));
        for m in &r.mismatches {
            let m = match &reason {
                Some(why) => m.replace(why.as_str(), ""),
                None => m.clone(),
            };
            Self::detail_lines(&mut out, "FAIL", &m);
        }
        for w in &r.warnings {
            self.warn(r.line, w);
        }
        out
    }

    fn warn(&mut self, line: usize, text: &str) {
        if let Some(&i) = self.index.get(text) {
            let w = &mut self.warnings[i];
            w.count += 1;
            w.last = line;
        } else if self.warnings.len() < MAX_DISTINCT_WARNINGS {
            self.index.insert(text.to_string(), self.warnings.len());
            self.warnings.push(Warning {
                text: text.to_string(),
                first: line,
                last: line,
                count: 1,
            });
        } else {
            self.warnings_dropped += 1;
        }
    }

    /// Everything after the rows: the trace error that stopped the run, the warnings (each
    /// text once, with how many times it came), the domains, and the container now and at its
    /// peak.
    pub fn finish(&mut self, replay: &Replay) -> String {
        let mut out = String::new();
        if let Some(e) = &replay.error {
            let _ = writeln!(out, "\nstopped at line {}: {}", e.line, e.message);
            for l in wrap(&e.text, DETAIL_WIDTH - 4) {
                let _ = writeln!(out, "    {l}");
            }
        }
        if let Some(s) = &replay.summary {
            for m in &s.violations {
                let _ = writeln!(out, "\nat the end: invariant violated: {m}");
            }
        }
        if !self.warnings.is_empty() {
            let total: u64 =
                self.warnings.iter().map(|w| w.count).sum::<u64>() + self.warnings_dropped;
            let _ = writeln!(
                out,
                "\nWarnings ({total}, {} distinct):",
                self.warnings.len() as u64 + self.warnings_dropped
            );
            for w in &self.warnings {
                let at = if w.count == 1 {
                    format!("line {}", w.first)
                } else {
                    format!("×{} lines {}-{}", w.count, w.first, w.last)
                };
                let head = format!("  {at}: ");
                let pad = " ".repeat(head.chars().count());
                let width = DETAIL_WIDTH.saturating_sub(head.chars().count()).max(40);
                for (i, l) in wrap(&w.text, width).iter().enumerate() {
                    let _ = writeln!(out, "{}{l}", if i == 0 { &head } else { &pad });
                }
            }
            if self.warnings_dropped > 0 {
                let _ = writeln!(
                    out,
                    "  and {} more, with texts not listed ({MAX_DISTINCT_WARNINGS} distinct \
                     texts are listed at most)",
                    self.warnings_dropped
                );
            }
        }
        let t = &replay.tally;
        let _ = writeln!(
            out,
            "\n{} statements run: {}",
            t.statements,
            match t.failed {
                0 if replay.error.is_none() => "all expectations met, the invariants hold".into(),
                0 => "all expectations met up to the trace error".to_string(),
                n => format!("{n} with a failed expectation or a broken invariant"),
            }
        );
        let Some(c) = &replay.container else {
            return out;
        };
        domains(&mut out, c);
        container(&mut out, c, replay);
        out
    }
}

fn domains(out: &mut String, c: &Container<AnyMemory>) {
    let _ = writeln!(out, "\nDomains:");
    if c.domains().is_empty() {
        let _ = writeln!(out, "  (none attached)");
        return;
    }
    let mut drows = Vec::new();
    for ad in c.domains().iter().rev() {
        let d = &ad.domain;
        let st = d.stats();
        drows.push(vec![
            ad.name.clone(),
            d.format().name(),
            pgsizes(d.pgsize_bitmap()),
            leaves_text(&d.leaves_by_size()),
            d.table_pages().to_string(),
            st.map_calls.to_string(),
            st.unmap_calls.to_string(),
            st.iotlb_flushes.to_string(),
        ]);
    }
    let t = table(
        &[
            "NAME",
            "FORMAT",
            "PGSIZES",
            "LEAVES BY SIZE",
            "TABLE PAGES",
            "MAP CALLS",
            "UNMAP CALLS",
            "IOTLB FLUSHES",
        ],
        &drows,
        &[false, false, false, false, true, true, true, true],
    );
    for l in t.lines() {
        let _ = writeln!(out, "  {l}");
    }
}

fn container(out: &mut String, c: &Container<AnyMemory>, replay: &Replay) {
    let cfg = c.config();
    let tally = &replay.tally;
    let locked = c.locked_pages();
    let _ = writeln!(
        out,
        "\nContainer ({}, kernel {}, strategy {}):",
        if cfg.v2 { "type1v2" } else { "type1" },
        kernel_name(cfg.kernel),
        cfg.strategy.name()
    );
    let limit = match cfg.memlock {
        None => "unlimited".to_string(),
        Some(b) => {
            let pages = b / 4096;
            let (peak_b, lim_b) =
                units::bytes_pair(tally.peak_locked.saturating_mul(4096), pages * 4096);
            format!(
                "{pages} pages ({lim_b}), the peak ({peak_b}) at {} of it{}",
                units::percent_of(tally.peak_locked, pages),
                if cfg.cap_ipc_lock {
                    ", not enforced: CAP_IPC_LOCK"
                } else {
                    ""
                }
            )
        }
    };
    let _ = writeln!(
        out,
        "  locked memory  {} now, peak {}; limit {limit}",
        units::pages(locked),
        units::pages(tally.peak_locked)
    );
    let lim = u64::from(cfg.dma_entry_limit);
    let used = lim.saturating_sub(u64::from(c.dma_avail()));
    let _ = writeln!(
        out,
        "  DMA entries    {used} now, peak {} of {lim} ({})",
        tally.peak_entries,
        units::percent_of(tally.peak_entries, lim),
    );
    let leaves: u64 = c.domains().iter().map(|d| d.domain.total_leaves()).sum();
    let _ = writeln!(
        out,
        "  leaves         {leaves} now, peak {} ({})",
        tally.peak_leaves,
        leaves_text(&tally.peak_leaves_by_size)
    );
    let pinned = replay
        .summary
        .as_ref()
        .map_or_else(|| c.mm().pinned_pages(), |s| s.state.pinned);
    let _ = writeln!(out, "  pinned         {}", units::pages(pinned));
    let _ = writeln!(out, "  mappings       {}", c.dmas().count());
    let _ = writeln!(
        out,
        "  IOMMU calls    {} map, {} unmap, {} IOTLB flushes (detached domains included)",
        tally.map_calls, tally.unmap_calls, tally.iotlb_flushes
    );
    if let Some(s) = &replay.summary {
        if s.violations.is_empty() {
            let _ = writeln!(out, "  invariants     hold");
        } else {
            let _ = writeln!(out, "  invariants     VIOLATED ({})", s.violations.len());
        }
    }
}

/// The whole report for one trace replayed with [`crate::runner::replay`] (`name` is how the
/// trace is called: its path).
pub fn human(name: &str, replay: &Replay) -> String {
    let mut out = Human::header(name, replay.strategy);
    if replay.records.is_empty() && replay.error.is_none() {
        out.push_str("  (no statements: nothing to replay)\n");
        return out;
    }
    let mut h = Human::new();
    for r in &replay.records {
        out.push_str(&h.step(r));
    }
    out.push_str(&h.finish(replay));
    out
}

/// The closing line over several traces: `22 traces: all expectations met`, or which failed
/// (`(name, exit code)` per trace).
pub fn closing_line(results: &[(String, i32)]) -> String {
    let n = results.len();
    let failed: Vec<&str> = results
        .iter()
        .filter(|(_, c)| *c == 1)
        .map(|(f, _)| f.as_str())
        .collect();
    let stopped: Vec<&str> = results
        .iter()
        .filter(|(_, c)| *c >= 2)
        .map(|(f, _)| f.as_str())
        .collect();
    if failed.is_empty() && stopped.is_empty() {
        return format!("{n} traces: all expectations met");
    }
    let mut parts = Vec::new();
    if !failed.is_empty() {
        parts.push(format!(
            "{} with failed expectations or broken invariants ({})",
            failed.len(),
            failed.join(", ")
        ));
    }
    if !stopped.is_empty() {
        parts.push(format!(
            "{} could not be run to the end ({})",
            stopped.len(),
            stopped.join(", ")
        ));
    }
    format!(
        "{n} traces: {} met all expectations; {}",
        n - failed.len() - stopped.len(),
        parts.join("; ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::{replay, Options};
    use crate::trace::parse;

    #[test]
    fn statements_are_cut_without_their_expectation() {
        assert_eq!(short_statement("check => dmas=1", 40), "check");
        assert_eq!(short_statement("abcdefghij", 8), "abcde...");
    }

    #[test]
    fn wrapping_breaks_between_words_only() {
        let w = wrap("map vaddr=ram+1M iova=1M size=3G-1M flags=read,write", 20);
        assert_eq!(
            w,
            ["map vaddr=ram+1M", "iova=1M size=3G-1M", "flags=read,write"]
        );
        // A word wider than the column keeps its line whole.
        assert_eq!(
            wrap("a vaddr=0123456789abcdef b", 8),
            ["a", "vaddr=0123456789abcdef", "b"]
        );
        let huge = format!("x {}", "y".repeat(10_000));
        let w = wrap(&huge, 40);
        assert!(w[1].ends_with("…[10000 characters]"), "{w:?}");
        assert!(w[1].chars().count() < 100);
    }

    #[test]
    fn the_report_has_a_row_per_statement_and_the_totals() {
        let t = parse(
            "container memlock=16M\n\
             domain d0 format=x86_64\n\
             mmap ram size=8M backing=thp\n\
             map vaddr=ram iova=1G size=8M => ok\n\
             unmap iova=1G size=4M => ok\n\
             check => dmas=2\n",
        )
        .unwrap();
        let r = replay(&t, &Options::default(), &mut |_| {});
        let s = human("t.trace", &r);
        let flat = s.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(s.contains("map vaddr=ram iova=1G size=8M"), "{s}");
        assert!(s.contains("2048 pages (8M)"), "{s}");
        assert!(s.contains("EINVAL"), "{s}");
        assert!(s.contains("FAIL: expected dmas=2, got dmas=1"), "{s}");
        // check's result on its row: entries, pinned, locked, leaves by size.
        assert!(
            flat.contains(
                "check: DMA entries 1, pinned 2048 pages (8M), locked 2048 pages (8M); \
                 leaves d0: 4K:0 2M:4 1G:0"
            ),
            "{s}"
        );
        // The reason of the failed unmap on its row.
        assert!(
            flat.contains("EINVAL: [0x40000000, 0x403fffff] would split the mapping"),
            "{s}"
        );
        assert!(
            s.contains("limit 4096 pages (16M), the peak (8M) at 50.0% of it"),
            "{s}"
        );
        assert!(s.contains("DMA entries    1 now, peak 1 of 65535"), "{s}");
    }

    #[test]
    fn kernel_names_are_the_trace_words() {
        for w in ["6.1", "6.12", "7.2"] {
            assert_eq!(kernel_name(KernelProfile::parse(w).unwrap()), w);
        }
    }

    #[test]
    fn the_closing_line_names_what_failed() {
        let ok = [("a".to_string(), 0), ("b".to_string(), 0)];
        assert_eq!(closing_line(&ok), "2 traces: all expectations met");
        let bad = [("a".into(), 0), ("b".into(), 1), ("c".into(), 2)];
        assert_eq!(
            closing_line(&bad),
            "3 traces: 1 met all expectations; 1 with failed expectations or broken \
             invariants (b); 1 could not be run to the end (c)"
        );
    }
}
