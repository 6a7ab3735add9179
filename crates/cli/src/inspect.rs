//! `type1 inspect`: what a type1 map of a real process's memory would give the IOMMU and cost,
//! rendered for people. The numbers come from `type1::inspect` (maps, pagemap, kpageflags).
//! Linux only, as `type1::inspect`.

#![cfg(target_os = "linux")]

use type1::inspect::{Counts, LeafCount, Report};
use type1::PAGE_SIZE;

use crate::bench::human;

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
        leaves(&c.leaves_best_iova),
        human(c.locked_bytes),
    ]
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
        "leaves (best iova)".into(),
        "locked".into(),
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
        "process {}: what a type1 MAP_DMA of its memory would install and charge\n\n",
        r.pid
    );
    for (n, r) in rows.iter().enumerate() {
        let cells: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i == 0 || i >= 6 {
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
    for n in &r.notes {
        s += &format!("note: {n}\n");
    }
    s
}
