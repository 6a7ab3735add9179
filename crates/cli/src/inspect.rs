//! `type1 inspect`: what a type1 map of a real process's memory would give the IOMMU and cost,
//! rendered for people. The numbers come from `type1::inspect` (maps, pagemap, kpageflags).
//! This module owns the command line's selection words (`--range` forms, `--iova`, `--gpa`,
//! `--name`, `--min-size`) and their conversion to `type1::inspect::Options`, so the report's
//! columns and the options that shape them are read in one place. Linux only, as
//! `type1::inspect`.

#![cfg(target_os = "linux")]

use crate::trace;
use type1::inspect::{Counts, Layout, LeafCount, Options, Report, Verdict};
use type1::PAGE_SIZE;

use crate::bench::human;

/// The selection options of `type1 inspect`, as typed.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// `--range`: START-END or START+SIZE.
    pub range: Option<String>,
    /// `--iova OFFSET`.
    pub iova: Option<String>,
    /// `--gpa START`, one per mapping.
    pub gpa: Vec<String>,
    /// `--name PATTERN`.
    pub name: Option<String>,
    /// `--min-size SIZE`.
    pub min_size: Option<String>,
}

impl Selection {
    /// The library's options for the page-size bitmap `pgsizes`, or what is wrong, naming the
    /// option.
    pub fn options(&self, pgsizes: u64) -> Result<Options, String> {
        let mut o = Options::new(pgsizes);
        if let Some(r) = &self.range {
            o.ranges.push(parse_range(r)?);
        }
        let num = |opt: &str, v: &str| {
            trace::parse_number(v.trim())
                .map_err(|e| format!("{opt} {v:?}: {e} (a number such as 0x100000000 or 4G)"))
        };
        if let Some(v) = &self.iova {
            o.layout = match v.trim().strip_prefix('-') {
                Some(neg) => Layout::Offset(num("--iova", neg)?.wrapping_neg()),
                None => Layout::Offset(num("--iova", v)?),
            };
        }
        if !self.gpa.is_empty() {
            let g = self
                .gpa
                .iter()
                .map(|v| num("--gpa", v))
                .collect::<Result<Vec<_>, _>>()?;
            o.layout = Layout::Gpa(g);
        }
        o.name = self.name.clone();
        if let Some(v) = &self.min_size {
            o.min_size = num("--min-size", v)?;
        }
        Ok(o)
    }
}

/// A hex address, 0x optional (as /proc/PID/maps and this report print them).
fn hex(s: &str) -> Option<u64> {
    let s = s.trim();
    let d = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .unwrap_or(s);
    u64::from_str_radix(&d.replace('_', ""), 16).ok()
}

/// `--range`: `START-END` (END exclusive; hex with or without 0x, so a `/proc/PID/maps` line's
/// first field, or the whole line, pastes as is) or `START+SIZE` (SIZE as `1G` or `0x40000000`).
/// Returns `[start, end)`.
pub fn parse_range(r: &str) -> Result<(u64, u64), String> {
    let want = "--range wants START-END (hex, 0x optional, e.g. 7f0000000000-7f0040000000 as \
                /proc/PID/maps prints) or START+SIZE (e.g. 0x7f0000000000+1G), START < END";
    let first = r.split_whitespace().next().unwrap_or("");
    let (start, end) = if let Some((a, b)) = first.split_once('+') {
        let size = trace::parse_number(b.trim()).map_err(|e| format!("{want}: SIZE {b:?}: {e}"))?;
        let a = hex(a).ok_or_else(|| format!("{want}: START {a:?} is not hex"))?;
        (a, a.checked_add(size).ok_or_else(|| want.to_string())?)
    } else if let Some((a, b)) = first.split_once('-') {
        match (hex(a), hex(b)) {
            (Some(a), Some(b)) => (a, b),
            _ => return Err(format!("{want}: got {first:?}")),
        }
    } else {
        return Err(format!("{want}: got {r:?}"));
    };
    if start >= end {
        return Err(format!("{want}: got [{start:#x}, {end:#x})"));
    }
    Ok((start, end))
}

fn leaves(l: &[LeafCount]) -> String {
    let v: Vec<String> = l
        .iter()
        .filter(|c| c.leaves > 0)
        .map(|c| format!("{}×{}", human(c.pgsize), c.leaves))
        .collect();
    if v.is_empty() {
        "-".into()
    } else {
        v.join(" ")
    }
}

fn row(what: String, c: &Counts) -> Vec<String> {
    vec![
        what,
        human(c.pages * PAGE_SIZE),
        format!("{}", c.resident_pages),
        format!("{}", c.thp_pages + c.hugetlb_pages),
        format!("{}", c.runs),
        format!("{}", c.longest_run_pages),
        leaves(&c.leaves_iova_eq_vaddr),
        leaves(&c.leaves_layout),
        leaves(&c.leaves_each_run_aligned),
        human(c.locked_bytes),
        human(c.map_charge_bytes),
    ]
}

fn verdict_line(what: &str, v: &Verdict) -> String {
    format!(
        "{what}: superpages {} - {} (longest run {} pages)\n",
        v.superpages, v.reason, v.longest_run_pages
    )
}

/// The report as a table: one row per mapping with resident pages, then the total and the
/// histogram of physically contiguous run lengths.
pub fn human_report(r: &Report, all: bool) -> String {
    let mut rows = vec![vec![
        "mapping".to_string(),
        "size".into(),
        "resident".into(),
        "huge".into(),
        "runs".into(),
        "longest".into(),
        "leaves (iova = vaddr)".into(),
        "leaves (layout)".into(),
        "leaves (each run aligned)".into(),
        "locked now".into(),
        "map charge".into(),
    ]];
    for v in &r.vmas {
        if !all && v.counts.resident_pages == 0 {
            continue;
        }
        let name = if v.name.is_empty() {
            "[anon]"
        } else {
            v.name.as_str()
        };
        rows.push(row(
            format!("{:x}-{:x} {} {}", v.start, v.end, v.perms, name),
            &v.counts,
        ));
    }
    rows.push(row("total".into(), &r.total));
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut s = format!(
        "process {}: what a type1 MAP_DMA of its memory would install and charge\n",
        r.pid
    );
    let mut sel = Vec::new();
    if let Some(n) = &r.name_filter {
        sel.push(format!("name contains {n:?}"));
    }
    if r.min_size > 0 {
        sel.push(format!("at least {}", human(r.min_size)));
    }
    if !sel.is_empty() {
        s += &format!(
            "selected: mappings whose {}; {} left out of the totals\n",
            sel.join(" and "),
            r.filtered_out
        );
    }
    s.push('\n');
    for (n, r) in rows.iter().enumerate() {
        let cells: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i == 0 || (6..9).contains(&i) {
                    format!("{c:<w$}", w = widths[i])
                } else {
                    format!("{c:>w$}", w = widths[i])
                }
            })
            .collect();
        s += cells.join("  ").trim_end();
        s.push('\n');
        if n == 0 || n + 2 == rows.len() {
            s += &"-".repeat(widths.iter().sum::<usize>() + 2 * (widths.len() - 1));
            s.push('\n');
        }
    }
    s += "\nphysically contiguous runs (pages):\n";
    let max = r
        .total
        .run_histogram
        .iter()
        .map(|b| b.pages)
        .max()
        .unwrap_or(1)
        .max(1);
    for b in &r.total.run_histogram {
        if b.runs == 0 {
            continue;
        }
        let bar = "#".repeat(((b.pages * 40).div_ceil(max)) as usize);
        let label = if b.min_pages == b.max_pages {
            format!("{}", b.min_pages)
        } else {
            format!("{}-{}", b.min_pages, b.max_pages)
        };
        s += &format!(
            "  {label:>13}  {:>8} runs  {:>10} pages  {bar}\n",
            b.runs, b.pages
        );
    }
    s += "\n";
    for v in &r.vmas {
        if !all && v.counts.resident_pages == 0 {
            continue;
        }
        s += &verdict_line(&format!("verdict {:x}-{:x}", v.start, v.end), &v.verdict);
    }
    s += &verdict_line("verdict overall", &r.verdict);
    let m = r.suggested_memlock_bytes;
    s += &format!(
        "suggested memlock: {m} bytes (ulimit -l {}; systemd LimitMEMLOCK={m}): a map of every \
         selected mapping faults it all in and charges all of it ({} resident and charged now)\n",
        m.div_ceil(1024),
        human(r.total.locked_bytes)
    );
    s += &format!(
        "IOTLB reach of the layout's leaves: {} bytes ({:.2} GiB; plain model, 64 entries per \
         page size; not a real part)\n",
        r.iotlb_reach_plain_bytes,
        r.iotlb_reach_plain_bytes as f64 / (1u64 << 30) as f64
    );
    s += &format!(
        "columns: leaves (iova = vaddr) places each mapping at its own address; leaves (layout) \
         at {}, one map call per mapping; leaves (each run aligned) gives every physically \
         contiguous run its own best IOVA, a bound one map call reaches only for a one-run \
         mapping. All count resident pages only. locked now = resident, not reserved; map \
         charge = every page but reserved ones.\n",
        r.layout
    );
    for n in &r.notes {
        s += &format!("note: {n}\n");
    }
    s
}
