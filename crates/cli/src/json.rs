//! `type1 replay --json`: one object per statement, then a summary (trace-format.md).
//!
//! Fields the contract requires are always present; additive fields (allowed by the contract's
//! "extend only additively" rule) are marked below:
//! * `message` (additive): the human explanation when `ok` is false;
//! * `warnings` (additive): a list of strings, present only when non-empty;
//! * `info`: `argsz` (additive), the argsz the kernel wrote back;
//! * `unmap` with `flags=dirty`: `bitmap` (additive), as for `dirty get`;
//! * `check` and `summary`: `tables` (additive), domain name → page-table pages in use.

use serde_json::{json, Map, Value};

use crate::runner::{Detail, Outcome, Record, Replay, State};

/// A bitmap as hex: the u64 words as little-endian bytes, in memory order.
pub fn bitmap_hex(words: &[u64]) -> String {
    let mut s = String::with_capacity(words.len() * 16);
    for w in words {
        for b in w.to_le_bytes() {
            s.push_str(&format!("{b:02x}"));
        }
    }
    s
}

fn state_fields(obj: &mut Map<String, Value>, s: &State) {
    let dmas: Vec<Value> = s
        .dmas
        .iter()
        .map(|d| json!({"iova": d.iova, "size": d.size, "vaddr": d.vaddr}))
        .collect();
    let mut domains = Map::new();
    let mut tables = Map::new();
    for d in &s.domains {
        let mut leaves = Map::new();
        for &(size, n) in &d.leaves {
            leaves.insert(size.to_string(), json!(n));
        }
        domains.insert(d.name.clone(), json!({ "leaves": leaves }));
        tables.insert(d.name.clone(), json!(d.table_pages));
    }
    obj.insert("dmas".into(), Value::Array(dmas));
    obj.insert("domains".into(), Value::Object(domains));
    obj.insert("pinned".into(), json!(s.pinned));
    obj.insert("locked".into(), json!(s.locked));
    obj.insert("tables".into(), Value::Object(tables));
}

/// The object of one statement.
pub fn record(r: &Record) -> Value {
    let mut o = Map::new();
    o.insert("line".into(), json!(r.line));
    o.insert("op".into(), json!(r.op));
    o.insert("ok".into(), json!(r.outcome.is_ok()));
    o.insert("errno".into(), json!(r.outcome.errno()));
    o.insert("locked".into(), json!(r.locked));
    o.insert("avail".into(), json!(r.avail));
    if let Some(m) = r.outcome.message() {
        o.insert("message".into(), json!(m));
    }
    match &r.detail {
        Detail::None | Detail::Map { .. } => {}
        Detail::Unmap { size, bitmap, .. } => {
            o.insert("size".into(), json!(size));
            if let Some(b) = bitmap {
                o.insert("bitmap".into(), json!(bitmap_hex(b)));
            }
        }
        Detail::Info(info) => {
            let i = info.as_ref();
            o.insert("iova_pgsizes".into(), json!(i.map(|i| i.iova_pgsizes)));
            o.insert(
                "iova_ranges".into(),
                json!(i
                    .and_then(|i| i.iova_ranges.as_ref())
                    .map(|v| v.iter().map(|&(s, e)| json!([s, e])).collect::<Vec<_>>())),
            );
            o.insert("dma_avail".into(), json!(i.and_then(|i| i.dma_avail)));
            if let Some(i) = i {
                o.insert("argsz".into(), json!(i.argsz));
            }
        }
        Detail::DirtyGet { bitmap } => {
            o.insert("bitmap".into(), json!(bitmap.as_deref().map(bitmap_hex)));
        }
        Detail::Check(s) => state_fields(&mut o, s),
    }
    if !r.warnings.is_empty() {
        o.insert("warnings".into(), json!(r.warnings));
    }
    Value::Object(o)
}

/// Every line of `type1 replay --json` for one replay: the statements, then the summary (none
/// when the trace has no container or stopped at a trace error).
pub fn lines(replay: &Replay) -> Vec<Value> {
    let mut out: Vec<Value> = replay.records.iter().map(record).collect();
    if let Some(s) = &replay.summary {
        let outcome = if s.violations.is_empty() {
            Outcome::Ok
        } else {
            Outcome::Invariants(s.violations.clone())
        };
        let mut o = Map::new();
        o.insert("line".into(), json!(s.line));
        o.insert("op".into(), json!("summary"));
        o.insert("ok".into(), json!(outcome.is_ok()));
        o.insert("errno".into(), Value::Null);
        o.insert("locked".into(), json!(s.state.locked));
        o.insert("avail".into(), json!(s.avail));
        if let Some(m) = outcome.message() {
            o.insert("message".into(), json!(m));
        }
        state_fields(&mut o, &s.state);
        out.push(Value::Object(o));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitmap_words_are_little_endian_bytes() {
        assert_eq!(bitmap_hex(&[0xffff]), "ffff000000000000");
        assert_eq!(bitmap_hex(&[1, 0x0100]), "01000000000000000001000000000000");
    }
}
