//! `type1 replay --compare AXIS=V1,V2,...`: one trace replayed once per variant (a strategy, or
//! a kernel profile), and one table with a column per variant.
//!
//! Invariants owned here: every variant runs the same statements with expectations ignored
//! (they are written for one strategy and one kernel); a kernel variant is the trace with every
//! `container`'s `kernel=` replaced, by the same override `kernel-check --kernel` uses
//! ([`crate::kernel_check::set_kernel`]); rows whose values differ between variants are marked.
//! A variant keeps only its [`Tally`] and final state, never its statements.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::ops::ControlFlow;

use serde_json::{json, Value};
use type1::Strategy;

use crate::kernel_check;
use crate::runner::{self, Options, Replay, Tally};
use crate::trace::Trace;
use crate::units;

/// What varies between the columns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Axis {
    /// `strategy=per-page,contiguous,folio`.
    Strategy(Vec<Strategy>),
    /// `kernel=6.1,7.2`: each word as `container kernel=` takes it.
    Kernel(Vec<String>),
}

/// Parses `strategy=A,B,...` or `kernel=A,B,...` (at least two distinct variants).
pub fn parse_axis(s: &str) -> Result<Axis, String> {
    let Some((key, list)) = s.split_once('=') else {
        return Err(format!(
            "--compare {s:?}: write strategy=per-page,contiguous,folio or kernel=6.1,7.2"
        ));
    };
    let words: Vec<&str> = list
        .split(',')
        .map(str::trim)
        .filter(|w| !w.is_empty())
        .collect();
    let axis = match key.trim() {
        "strategy" => Axis::Strategy(
            words
                .iter()
                .map(|w| {
                    Strategy::parse(w).ok_or_else(|| {
                        format!("--compare: unknown strategy {w:?} (per-page, contiguous, folio)")
                    })
                })
                .collect::<Result<_, _>>()?,
        ),
        "kernel" => Axis::Kernel(
            words
                .iter()
                .map(|w| runner::kernel_word(w).map_err(|e| format!("--compare: {e}")))
                .collect::<Result<_, _>>()?,
        ),
        other => {
            return Err(format!(
                "--compare: {other:?} cannot vary; use strategy=... or kernel=..."
            ))
        }
    };
    let n = match &axis {
        Axis::Strategy(v) => v.iter().map(|s| s.name()).collect::<BTreeSet<_>>().len(),
        Axis::Kernel(v) => v.iter().collect::<BTreeSet<_>>().len(),
    };
    if n < 2 {
        return Err(format!(
            "--compare {s:?}: name at least two different values to compare"
        ));
    }
    Ok(axis)
}

/// One column: its label and the replay (statements not kept).
pub struct Variant {
    /// `per-page`, `kernel 6.1`, ...
    pub label: String,
    /// The run's totals, final state and trace error.
    pub replay: Replay,
}

/// Replays `trace` once per variant of `axis`, expectations ignored; `base` gives the rest
/// (memory, and the strategy of kernel variants).
pub fn run(trace: &Trace, axis: &Axis, base: &Options) -> Vec<Variant> {
    let opts = Options {
        no_expect: true,
        ..*base
    };
    match axis {
        Axis::Strategy(list) => list
            .iter()
            .map(|&s| Variant {
                label: s.name().to_string(),
                replay: runner::replay_each(
                    trace,
                    &Options {
                        strategy: s,
                        ..opts
                    },
                    &mut |_| ControlFlow::Continue(()),
                ),
            })
            .collect(),
        Axis::Kernel(list) => list
            .iter()
            .map(|k| {
                let mut t = trace.clone();
                kernel_check::set_kernel(&mut t, k);
                Variant {
                    label: format!("kernel {k}"),
                    replay: runner::replay_each(&t, &opts, &mut |_| ControlFlow::Continue(())),
                }
            })
            .collect(),
    }
}

/// How a run ended: `ok`, `stopped at line N`, or `invariants broken`.
fn ending(r: &Replay) -> String {
    if let Some(e) = &r.error {
        format!("stopped at line {}", e.line)
    } else if r.tally.failed > 0 {
        "invariants broken".into()
    } else {
        "ok".into()
    }
}

/// The rows: `(label, values per variant, compare?)`. Times vary from run to run, so they are
/// marked only when one is more than twice another.
fn rows(vs: &[Variant]) -> Vec<(String, Vec<String>, bool)> {
    let t: Vec<&Tally> = vs.iter().map(|v| &v.replay.tally).collect();
    let sizes: BTreeSet<u64> = t
        .iter()
        .flat_map(|t| t.peak_leaves_by_size.iter().map(|&(s, _)| s))
        .collect();
    let mut out = vec![(
        "result".to_string(),
        vs.iter().map(|v| ending(&v.replay)).collect(),
        true,
    )];
    out.push((
        "leaves at peak".into(),
        t.iter().map(|t| t.peak_leaves.to_string()).collect(),
        true,
    ));
    for s in sizes {
        out.push((
            format!("  of {}", units::bytes(s)),
            t.iter()
                .map(|t| {
                    t.peak_leaves_by_size
                        .iter()
                        .find(|&&(x, _)| x == s)
                        .map_or(0, |&(_, n)| n)
                        .to_string()
                })
                .collect(),
            true,
        ));
    }
    let num = |f: fn(&Tally) -> u64| t.iter().map(|t| f(t).to_string()).collect::<Vec<_>>();
    out.push(("map calls".into(), num(|t| t.map_calls), true));
    out.push(("unmap calls".into(), num(|t| t.unmap_calls), true));
    out.push(("IOTLB flushes".into(), num(|t| t.iotlb_flushes), true));
    out.push((
        "locked at peak".into(),
        t.iter().map(|t| units::pages(t.peak_locked)).collect(),
        true,
    ));
    out.push(("DMA entries at peak".into(), num(|t| t.peak_entries), true));
    for (label, f) in [
        (
            "map time",
            (|t: &Tally| t.map_time) as fn(&Tally) -> std::time::Duration,
        ),
        ("unmap time", |t: &Tally| t.unmap_time),
    ] {
        let d: Vec<std::time::Duration> = t.iter().map(|t| f(t)).collect();
        let (lo, hi) = (d.iter().min().copied(), d.iter().max().copied());
        let far = matches!((lo, hi), (Some(l), Some(h)) if h > l * 2);
        out.push((
            label.into(),
            d.iter().map(|&x| units::duration(x)).collect(),
            far,
        ));
    }
    out
}

/// The table for people: a column per variant; `*` marks a row whose values differ.
pub fn human(name: &str, vs: &[Variant]) -> String {
    let mut header = vec!["", ""];
    header.extend(vs.iter().map(|v| v.label.as_str()));
    let mut right = vec![false, false];
    right.extend(vs.iter().map(|_| true));
    let table_rows: Vec<Vec<String>> = rows(vs)
        .into_iter()
        .map(|(label, vals, compare)| {
            let differ = vals.iter().collect::<BTreeSet<_>>().len() > 1;
            let mark = if differ && compare { "*" } else { "" };
            let mut r = vec![mark.to_string(), label];
            r.extend(vals);
            r
        })
        .collect();
    let mut out = format!("{name}: compared (expectations not checked; * marks a difference)\n");
    out.push_str(&crate::report::table(&header, &table_rows, &right));
    for v in vs {
        if let Some(e) = &v.replay.error {
            let _ = writeln!(
                out,
                "{}: stopped at line {}: {}",
                v.label, e.line, e.message
            );
        }
    }
    out
}

/// One JSON object for the comparison: `{"file", "compare": [{"variant", ...}, ...]}`.
pub fn to_json(name: &str, vs: &[Variant]) -> Value {
    let cols: Vec<Value> = vs
        .iter()
        .map(|v| {
            let t = &v.replay.tally;
            json!({
                "variant": v.label,
                "result": ending(&v.replay),
                "peak_leaves": t.peak_leaves,
                "peak_leaves_by_size": t.peak_leaves_by_size.iter()
                    .map(|&(s, n)| (s.to_string(), json!(n)))
                    .collect::<serde_json::Map<_, _>>(),
                "map_calls": t.map_calls,
                "unmap_calls": t.unmap_calls,
                "iotlb_flushes": t.iotlb_flushes,
                "peak_locked": t.peak_locked,
                "peak_entries": t.peak_entries,
                "map_ns": u64::try_from(t.map_time.as_nanos()).unwrap_or(u64::MAX),
                "unmap_ns": u64::try_from(t.unmap_time.as_nanos()).unwrap_or(u64::MAX),
            })
        })
        .collect();
    json!({ "file": name, "op": "compare", "compare": cols })
}

/// The exit code of a comparison: 2 when a variant stopped at a trace error, 1 when one broke
/// an invariant, else 0.
pub fn exit_code(vs: &[Variant]) -> i32 {
    vs.iter().map(|v| v.replay.exit_code()).max().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes_parse_and_refuse_what_cannot_vary() {
        assert_eq!(
            parse_axis("strategy=per-page,contiguous").unwrap(),
            Axis::Strategy(vec![Strategy::PerPage, Strategy::Contiguous])
        );
        assert_eq!(
            parse_axis("kernel=6.1,7.2.12+deb13-cloud-amd64").unwrap(),
            Axis::Kernel(vec!["6.1".into(), "7.2".into()])
        );
        assert!(parse_axis("strategy=folio")
            .unwrap_err()
            .contains("at least two"));
        assert!(parse_axis("kernel=6.1,9.9").unwrap_err().contains("9.9"));
        assert!(parse_axis("memory=sim,host")
            .unwrap_err()
            .contains("cannot vary"));
        assert!(parse_axis("per-page").is_err());
    }
}
