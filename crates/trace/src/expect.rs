//! Expectations: a statement's `=> ...` held to the [`Record`] a run made for it.
//!
//! One evaluation for both backends, so a trace means the same against the engine and against
//! a kernel. An item the record cannot show is a failure, except what a backend does not know
//! at all (the kernel lists neither mappings nor pins: `dmas=` and `pinned=` are skipped when
//! the record's state leaves them unknown). `locked=+N` is the change from the previous
//! statement's `locked` (the caller passes it).

use std::collections::BTreeMap;

use crate::ast::{ExpItem, ExpResult, Expect, LockedExp, Trace};
use crate::record::Record;

/// A byte count as the trace language writes it exactly: `4K`, `2M`, `4M+4K`, `0x1234` (the
/// inverse of [`parse_number`](crate::parse_number) for the values it prints).
pub fn bytes_exact(n: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (1 << 40, "T"),
        (1 << 30, "G"),
        (1 << 20, "M"),
        (1 << 10, "K"),
    ];
    if n == 0 {
        return "0".into();
    }
    let mut terms = Vec::new();
    let mut left = n;
    for (unit, suffix) in UNITS {
        if left >= unit {
            terms.push(format!("{}{suffix}", left / unit));
            left %= unit;
        }
    }
    if left != 0 {
        return format!("{n:#x}");
    }
    terms.join("+")
}

/// How many items an expectation checks (its result word counts as one).
pub fn count(exp: &Expect) -> usize {
    usize::from(exp.result.is_some()) + exp.items.len()
}

/// The items of `exp` that do not hold for `rec`, as `expected X, got Y`. `locked_before` is
/// the locked pages before the statement (for `locked=+N`).
pub fn evaluate(exp: &Expect, rec: &Record, locked_before: u64) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(m) = result_mismatch(exp.result, rec) {
        out.push(m);
    }
    out.extend(
        exp.items
            .iter()
            .filter_map(|i| item_mismatch(i, rec, locked_before)),
    );
    out
}

/// Every expectation of `t` held to the record of its line: (items checked, failures as
/// `line N: STATEMENT: expected X, got Y`). A statement without a record is a failure.
pub fn check_trace(t: &Trace, records: &[Record]) -> (usize, Vec<String>) {
    let by_line: BTreeMap<usize, &Record> = records.iter().map(|r| (r.line, r)).collect();
    let mut checked = 0;
    let mut bad = Vec::new();
    let mut locked_before = 0;
    for s in &t.stmts {
        let Some(r) = by_line.get(&s.line) else {
            bad.push(format!("line {}: no record", s.line));
            continue;
        };
        if let Some(e) = &s.expect {
            checked += count(e);
            for m in evaluate(e, r, locked_before) {
                bad.push(format!("line {}: {}: {m}", s.line, s.text));
            }
        }
        locked_before = r.locked.unwrap_or(0);
    }
    (checked, bad)
}

fn result_mismatch(want: Option<ExpResult>, rec: &Record) -> Option<String> {
    let want = match want? {
        ExpResult::Ok if !rec.ok => "ok".to_string(),
        ExpResult::Errno(e) if rec.errno != Some(e) => e.name(),
        _ => return None,
    };
    let got = rec.result_word();
    Some(match rec.message.as_deref().filter(|_| !rec.ok) {
        Some(m) => format!("expected {want}, got {got} ({m})"),
        None => format!("expected {want}, got {got}"),
    })
}

fn item_mismatch(item: &ExpItem, rec: &Record, locked_before: u64) -> Option<String> {
    let locked = rec.locked.unwrap_or(0);
    let state = rec.state.as_ref();
    let not_check = |key: String| Some(format!("expected {key}, but this is not a check"));
    match item {
        ExpItem::Size(want) => match rec.size {
            Some(g) if g == *want => None,
            Some(g) => Some(format!(
                "expected size={}, got size={}",
                bytes_exact(*want),
                bytes_exact(g)
            )),
            None => Some(format!(
                "expected size={}, got no size (the call failed)",
                bytes_exact(*want)
            )),
        },
        ExpItem::Locked(LockedExp::Abs(want)) => {
            (locked != *want).then(|| format!("expected locked={want}, got locked={locked}"))
        }
        ExpItem::Locked(LockedExp::Delta(want)) => {
            let got = i128::from(locked) - i128::from(locked_before);
            (got != i128::from(*want)).then(|| {
                format!(
                    "expected locked={want:+}, got locked={got:+} ({locked_before} -> {locked})"
                )
            })
        }
        ExpItem::Avail(want) => match rec.avail {
            Some(a) if a == *want => None,
            a => Some(format!(
                "expected avail={want}, got avail={}",
                a.map_or("unknown".into(), |a| a.to_string())
            )),
        },
        ExpItem::Leaves {
            domain,
            pgsize,
            count,
        } => {
            let key = format!("leaves.{domain}.{}", bytes_exact(*pgsize));
            let Some(s) = state else {
                return not_check(format!("{key}={count}"));
            };
            match s.domains.get(domain) {
                Some(l) => {
                    let got = l.get(pgsize).copied().unwrap_or(0);
                    (got != *count).then(|| format!("expected {key}={count}, got {key}={got}"))
                }
                None => Some(format!(
                    "expected {key}={count}, got no domain named {domain:?}"
                )),
            }
        }
        ExpItem::Dmas(want) => match state {
            None => not_check(format!("dmas={want}")),
            Some(s) => {
                let got = s.dmas.as_ref().map(|d| d.len() as u64)?;
                (got != *want).then(|| format!("expected dmas={want}, got dmas={got}"))
            }
        },
        ExpItem::Pinned(want) => match state {
            None => not_check(format!("pinned={want}")),
            Some(s) => {
                let got = s.pinned?;
                (got != *want).then(|| format!("expected pinned={want}, got pinned={got}"))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::State;
    use iommu::Errno;
    use std::collections::BTreeMap;

    fn exp(line: &str) -> Expect {
        let t = crate::parse(&format!("container\n{line}")).unwrap();
        t.stmts[1].expect.clone().unwrap()
    }

    #[test]
    fn bytes_are_written_as_the_language_reads_them() {
        let cases = [
            (0, "0"),
            (4096, "4K"),
            ((4 << 20) + 4096, "4M+4K"),
            (0x1234, "0x1234"),
            (3 << 40, "3T"),
        ];
        for (n, text) in cases {
            assert_eq!(bytes_exact(n), text);
            assert_eq!(crate::parse_number(text), Ok(n), "{text}");
        }
    }

    #[test]
    fn results_sizes_and_leaves() {
        let mut r = Record::new(2, "unmap");
        r.fail(Errno::EINVAL);
        r.message = Some("not aligned".into());
        r.locked = Some(2);
        assert_eq!(
            evaluate(&exp("unmap iova=0 size=4K => ok locked=+1"), &r, 0),
            vec![
                "expected ok, got EINVAL (not aligned)",
                "expected locked=+1, got locked=+2 (0 -> 2)"
            ]
        );
        assert_eq!(
            evaluate(&exp("unmap iova=0 size=4K => EEXIST"), &r, 0),
            vec!["expected EEXIST, got EINVAL (not aligned)"]
        );
        let mut ok = Record::new(2, "unmap");
        ok.size = Some(8192);
        ok.avail = Some(3);
        assert_eq!(
            evaluate(&exp("unmap iova=0 size=4K => ok size=4K avail=3"), &ok, 0),
            vec!["expected size=4K, got size=8K"]
        );
        let mut c = Record::new(3, "check");
        c.state = Some(State {
            domains: BTreeMap::from([("d0".into(), BTreeMap::from([(4096, 1)]))]),
            ..State::default()
        });
        // The kernel lists neither mappings nor pins: not checked.
        assert!(evaluate(&exp("check => leaves.d0.4K=1 dmas=9 pinned=9"), &c, 0).is_empty());
        assert_eq!(
            evaluate(&exp("check => leaves.d0.2M=1 leaves.d1.4K=1"), &c, 0),
            vec![
                "expected leaves.d0.2M=1, got leaves.d0.2M=0",
                "expected leaves.d1.4K=1, got no domain named \"d1\""
            ]
        );
        assert_eq!(count(&exp("check => leaves.d0.2M=1 dmas=1")), 2);
        assert_eq!(count(&exp("map vaddr=0 iova=0 size=4K => ok")), 1);
    }
}
