//! The human report of `type1 replay` (without `--json`): a table with one row per statement,
//! the failures and warnings, then what the domains and the container hold at the end.

use std::fmt::Write as _;

use type1::KernelProfile;

use crate::runner::{Detail, Replay, Step};
use crate::units;

/// The widest the statement column gets.
pub const STATEMENT_WIDTH: usize = 40;

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

fn row(r: &Step) -> Vec<String> {
    let unmapped = match &r.detail {
        Detail::Unmap { size: Some(s), .. } => units::bytes(*s),
        _ => String::new(),
    };
    vec![
        r.line.to_string(),
        short_statement(&r.text, STATEMENT_WIDTH),
        r.outcome.word().to_string(),
        unmapped,
        units::pages(r.locked),
        r.avail.to_string(),
        if r.mismatches.is_empty() {
            String::new()
        } else {
            "FAIL".into()
        },
    ]
}

fn pgsizes(bitmap: u64) -> String {
    (0..64)
        .filter(|b| bitmap & (1u64 << b) != 0)
        .map(|b| units::bytes(1u64 << b))
        .collect::<Vec<_>>()
        .join(",")
}

fn kernel_name(k: KernelProfile) -> &'static str {
    match k {
        KernelProfile::V3_11 => "3.11",
        KernelProfile::V6_1 => "6.1",
        KernelProfile::V6_12 => "6.12",
        KernelProfile::V7_2 => "7.2",
    }
}

fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "-".into();
    }
    format!("{:.1}%", part as f64 * 100.0 / whole as f64)
}

/// The whole report for one trace (`name` is how the trace is called: its path).
pub fn human(name: &str, replay: &Replay) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{name} (strategy {})", replay.strategy.name());
    if replay.records.is_empty() && replay.error.is_none() {
        out.push_str("  (no statements: nothing to replay)\n");
        return out;
    }
    let rows: Vec<Vec<String>> = replay.records.iter().map(row).collect();
    out.push_str(&table(
        &[
            "LINE",
            "STATEMENT",
            "RESULT",
            "UNMAPPED",
            "LOCKED PAGES",
            "ENTRIES LEFT",
            "",
        ],
        &rows,
        &[true, false, false, true, true, true, false],
    ));

    if let Some(e) = &replay.error {
        let _ = writeln!(
            out,
            "\nstopped at line {}: {}\n    {}",
            e.line, e.message, e.text
        );
    }
    let failures = replay.failures();
    if !failures.is_empty() {
        let _ = writeln!(out, "\nFailures ({}):", failures.len());
        for (line, text, msg) in &failures {
            let _ = writeln!(out, "  line {line}: {msg}\n      {text}");
        }
    }
    let warnings: Vec<(usize, &String)> = replay
        .records
        .iter()
        .flat_map(|r| r.warnings.iter().map(move |w| (r.line, w)))
        .collect();
    if !warnings.is_empty() {
        let _ = writeln!(out, "\nWarnings ({}):", warnings.len());
        for (line, w) in warnings {
            let _ = writeln!(out, "  line {line}: {w}");
        }
    }

    let Some(c) = &replay.container else {
        return out;
    };
    let _ = writeln!(out, "\nDomains:");
    if c.domains().is_empty() {
        let _ = writeln!(out, "  (none attached)");
    }
    let mut drows = Vec::new();
    for ad in c.domains().iter().rev() {
        let d = &ad.domain;
        let leaves = d
            .leaves_by_size()
            .iter()
            .map(|&(s, n)| format!("{}:{n}", units::bytes(s)))
            .collect::<Vec<_>>()
            .join(" ");
        let st = d.stats();
        drows.push(vec![
            ad.name.clone(),
            d.format().name(),
            pgsizes(d.pgsize_bitmap()),
            leaves,
            d.table_pages().to_string(),
            st.map_calls.to_string(),
            st.unmap_calls.to_string(),
            st.iotlb_flushes.to_string(),
        ]);
    }
    if !drows.is_empty() {
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

    let cfg = c.config();
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
            format!(
                "{} ({} used){}",
                units::pages(pages),
                percent(locked, pages),
                if cfg.cap_ipc_lock {
                    ", not enforced: CAP_IPC_LOCK"
                } else {
                    ""
                }
            )
        }
    };
    let _ = writeln!(out, "  locked memory  {} of {limit}", units::pages(locked));
    let lim = u64::from(cfg.dma_entry_limit);
    let used = lim.saturating_sub(u64::from(c.dma_avail()));
    let _ = writeln!(
        out,
        "  DMA entries    {used} of {lim} used ({}), {} left",
        percent(used, lim),
        c.dma_avail()
    );
    let pinned = replay
        .summary
        .as_ref()
        .map_or_else(|| crate::runner::State::of(c).pinned, |s| s.state.pinned);
    let _ = writeln!(out, "  pinned pages   {}", units::pages(pinned));
    let _ = writeln!(out, "  mappings       {}", c.dmas().count());
    if let Some(s) = &replay.summary {
        if s.violations.is_empty() {
            let _ = writeln!(out, "  invariants     hold");
        } else {
            let _ = writeln!(out, "  invariants     VIOLATED ({})", s.violations.len());
        }
    }
    out
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
        assert!(s.contains("map vaddr=ram iova=1G size=8M"), "{s}");
        assert!(s.contains("2048 (8M)"), "{s}");
        assert!(s.contains("EINVAL"), "{s}");
        assert!(s.contains("line 6: expected dmas=2, got dmas=1"), "{s}");
        assert!(s.contains("2M:4"), "{s}");
        assert!(s.contains("of 4096 (16M) (50.0% used)"), "{s}");
        assert!(s.contains("1 of 65535 used"), "{s}");
    }
}
