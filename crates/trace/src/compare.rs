//! Two runs of one trace compared statement by statement, on the objects `type1 replay --json`
//! prints ([`Record::to_json`](crate::Record::to_json)): the engine's against a kernel's, for
//! `type1 kernel-check`.
//!
//! Compared, when both sides have the field: `ok`, `errno`, `locked`, `avail`; for `unmap` the
//! returned `size` and, with `flags=dirty`, the `bitmap`; for `dirty get` the `bitmap`; for `info` `iova_pgsizes`, `iova_ranges`, `dma_avail`; for `check` the
//! leaves by page size of each domain. Not compared: statements the kernel could not run
//! (`cannot`, listed apart), `dmas` and `pinned` (the kernel does not show them), the engine's
//! final `summary` object.

use std::collections::BTreeMap;

use serde_json::Value;

/// One field on which the two disagree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diff {
    /// The statement's line.
    pub line: usize,
    /// Its verb.
    pub op: String,
    /// The field (`errno`, `leaves.d0`, ...).
    pub field: String,
    /// The engine's value, as JSON text.
    pub engine: String,
    /// The kernel's value, as JSON text.
    pub kernel: String,
}

impl std::fmt::Display for Diff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "line {} {}: {}: engine {} / kernel {}",
            self.line, self.op, self.field, self.engine, self.kernel
        )
    }
}

/// The outcome of a comparison.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Comparison {
    /// Statements compared (both sides ran them).
    pub compared: usize,
    /// Fields compared.
    pub fields: usize,
    /// The disagreements, by line.
    pub diffs: Vec<Diff>,
    /// `(line, why)` of statements the kernel could not run.
    pub not_run: Vec<(usize, String)>,
    /// Lines present on one side only.
    pub missing: Vec<usize>,
}

impl Comparison {
    /// No disagreement and no line on one side only.
    pub fn agrees(&self) -> bool {
        self.diffs.is_empty() && self.missing.is_empty()
    }
}

/// The leaves of a `check` object: domain → page size → count, zero counts left out.
fn leaves_of(v: &Value) -> Option<BTreeMap<String, BTreeMap<u64, u64>>> {
    let d = v.get("domains")?.as_object()?;
    Some(
        d.iter()
            .map(|(name, dom)| {
                let leaves = dom
                    .get("leaves")
                    .and_then(Value::as_object)
                    .map(|l| {
                        l.iter()
                            .filter_map(|(k, n)| Some((k.parse().ok()?, n.as_u64()?)))
                            .filter(|&(_, n)| n != 0)
                            .collect()
                    })
                    .unwrap_or_default();
                (name.clone(), leaves)
            })
            .collect(),
    )
}

/// Compares the engine's objects with the kernel's, by line (the engine's `summary` aside).
pub fn compare(engine: &[Value], kernel: &[Value]) -> Comparison {
    let by_line = |objs: &[Value]| -> BTreeMap<usize, Value> {
        objs.iter()
            .filter(|v| v.get("op").and_then(Value::as_str) != Some("summary"))
            .filter_map(|v| Some((v.get("line")?.as_u64()? as usize, v.clone())))
            .collect()
    };
    let (eng, ker) = (by_line(engine), by_line(kernel));
    let mut c = Comparison::default();
    let both = |l: &usize| eng.contains_key(l) && ker.contains_key(l);
    c.missing = eng
        .keys()
        .chain(ker.keys())
        .filter(|l| !both(l))
        .copied()
        .collect();
    c.missing.sort_unstable();
    c.missing.dedup();
    for (line, e) in &eng {
        let Some(k) = ker.get(line) else { continue };
        if k.get("cannot") == Some(&Value::Bool(true)) {
            let why = k.get("message").and_then(Value::as_str).unwrap_or_default();
            c.not_run.push((*line, why.to_string()));
            continue;
        }
        c.compared += 1;
        compare_one(&mut c, *line, e, k);
    }
    c
}

/// The fields of one statement both sides ran.
fn compare_one(c: &mut Comparison, line: usize, e: &Value, k: &Value) {
    let op = k.get("op").and_then(Value::as_str).unwrap_or_default();
    let mut diff = |field: String, engine: String, kernel: String| {
        c.diffs.push(Diff {
            line,
            op: op.to_string(),
            field,
            engine,
            kernel,
        })
    };
    let mut fields: Vec<&str> = vec!["ok", "errno", "locked", "avail"];
    match op {
        "unmap" => fields.extend(["size", "bitmap"]),
        "dirty" => fields.push("bitmap"),
        "info" => fields.extend(["iova_pgsizes", "iova_ranges", "dma_avail"]),
        _ => {}
    }
    for f in fields {
        let (Some(ev), Some(kv)) = (e.get(f), k.get(f)) else {
            continue;
        };
        // A value the kernel side does not know (null) is not a disagreement.
        if kv.is_null() && f != "errno" && f != "size" {
            continue;
        }
        c.fields += 1;
        if ev != kv {
            diff(f.to_string(), ev.to_string(), kv.to_string());
        }
    }
    if op != "check" {
        return;
    }
    let (Some(el), Some(kl)) = (leaves_of(e), leaves_of(k)) else {
        return;
    };
    for (name, kleaves) in &kl {
        c.fields += 1;
        let eleaves = el.get(name).cloned().unwrap_or_default();
        if &eleaves != kleaves {
            let show = |m: &BTreeMap<u64, u64>| serde_json::to_string(m).unwrap_or_default();
            diff(format!("leaves.{name}"), show(&eleaves), show(kleaves));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Record, State};
    use iommu::Errno;
    use serde_json::json;

    fn json_of(recs: &[Record]) -> Vec<Value> {
        recs.iter().map(Record::to_json).collect()
    }

    #[test]
    fn finds_errno_size_and_leaf_differences() {
        let engine = vec![
            json!({"line": 3, "op": "map", "ok": true, "errno": null, "locked": 1, "avail": 65534}),
            json!({"line": 4, "op": "unmap", "ok": false, "errno": "EINVAL", "locked": 1, "avail": 65534, "size": null}),
            json!({"line": 5, "op": "check", "ok": true, "errno": null, "locked": 1, "avail": 65534,
                   "domains": {"d0": {"leaves": {"4096": 1, "2097152": 0}}}, "dmas": [], "pinned": 1}),
            json!({"line": 6, "op": "summary", "ok": true, "errno": null, "locked": 1, "avail": 65534}),
        ];
        let mut map = Record::kernel(3, "map");
        map.locked = Some(1);
        map.avail = Some(65534);
        let mut unmap = Record::kernel(4, "unmap");
        unmap.fail(Errno::EOVERFLOW);
        unmap.out_size = Some(0x2000);
        unmap.locked = Some(1);
        unmap.avail = Some(65534);
        let mut check = Record::kernel(5, "check");
        check.locked = Some(1);
        check.avail = Some(65534);
        check.state = Some(State {
            domains: BTreeMap::from([("d0".to_string(), BTreeMap::from([(0x20_0000, 1)]))]),
            ..State::default()
        });
        let c = compare(&engine, &json_of(&[map.clone(), unmap, check]));
        assert_eq!(c.compared, 3);
        assert!(c.missing.is_empty());
        let fields: Vec<&str> = c.diffs.iter().map(|d| d.field.as_str()).collect();
        assert_eq!(fields, vec!["errno", "leaves.d0"], "{:?}", c.diffs);
        assert_eq!(c.diffs[0].kernel, "\"EOVERFLOW\"");
        assert!(!c.agrees());

        let c = compare(&engine[..1], &json_of(&[map]));
        assert!(c.agrees() && c.fields == 4, "{c:?}");
    }

    #[test]
    fn not_run_and_missing_lines() {
        let engine = vec![
            json!({"line": 2, "op": "domain", "ok": true, "errno": null, "locked": 0, "avail": 65535}),
            json!({"line": 3, "op": "domain", "ok": true, "errno": null, "locked": 0, "avail": 65535}),
        ];
        let d = Record::kernel(2, "domain");
        let mut d2 = Record::kernel(3, "domain");
        d2.cannot("cannot: one device in the guest");
        let extra = Record::kernel(9, "map");
        let c = compare(&engine, &json_of(&[d, d2, extra]));
        assert_eq!(c.not_run.len(), 1);
        assert_eq!(c.missing, vec![9]);
    }

    #[test]
    fn dirty_bitmaps_are_compared() {
        let engine = vec![
            json!({"line": 4, "op": "dirty", "ok": true, "errno": null, "bitmap": "ff03000000000000"}),
            json!({"line": 5, "op": "unmap", "ok": true, "errno": null, "size": 4096, "bitmap": "0100000000000000"}),
        ];
        let mut get = Record::kernel(4, "dirty");
        get.dirty_get = true;
        get.bitmap = Some(vec![0x01ff_ffff_01ff_ffff]);
        let mut unmap = Record::kernel(5, "unmap");
        unmap.size = Some(4096);
        unmap.bitmap = Some(vec![1]);
        let c = compare(&engine, &json_of(&[get, unmap]));
        assert_eq!(c.diffs.len(), 1, "{c:?}");
        assert_eq!(c.diffs[0].field, "bitmap");
        assert_eq!(c.diffs[0].kernel, "\"ffffff01ffffff01\"");
    }
}
