//! The kernel's answer to one statement. The guest prints it as JSON (`@@R {...}`); the host
//! adds the leaf counts it read from the IOMMU at `check`; [`Record::to_json`] gives the object
//! `type1 replay --json` prints for the same statement.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// One statement's result, as run against the kernel.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub line: usize,
    pub op: String,
    pub ok: bool,
    /// The errno's name (`EINVAL`, or `E<n>` for one the engine does not know).
    pub errno: Option<String>,
    /// The errno's value.
    pub errno_code: Option<i32>,
    /// The statement could not be run in the guest (not a kernel answer); `message` says why.
    #[serde(default)]
    pub cannot: bool,
    pub message: Option<String>,
    /// `VmLck / 4`: the process's locked pages after the statement.
    pub locked: Option<u64>,
    /// DMA entries left (GET_INFO's DMA_AVAIL capability) after the statement.
    pub avail: Option<u64>,
    /// `unmap`: the size the kernel wrote back (on success).
    pub size: Option<u64>,
    /// `unmap`: the structure's size field after the call, also after a failure (the oracle's
    /// `out_size`).
    pub out_size: Option<u64>,
    /// `info`: what GET_INFO answered.
    pub info: Option<InfoFields>,
    /// `dirty get` / `unmap flags=dirty`: the bitmap words.
    pub bitmap: Option<Vec<u64>>,
    /// `check`: leaves by page size per domain name, read from the IOMMU's tables by the host.
    pub domains: Option<BTreeMap<String, BTreeMap<u64, u64>>>,
}

/// GET_INFO's reply (also known as `Info`).
pub type Info = InfoFields;

/// GET_INFO's reply.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InfoFields {
    /// The argsz written back.
    pub argsz: u32,
    pub flags: u32,
    pub iova_pgsizes: u64,
    pub cap_offset: u32,
    /// The argsz that holds every capability (asked with a minimal buffer).
    pub argsz_needed: u32,
    pub dma_avail: Option<u32>,
    pub iova_ranges: Option<Vec<(u64, u64)>>,
    pub migration_pgsize: Option<u64>,
}

/// The name of an errno value, as `type1 replay` prints it.
pub fn errno_name(code: i32) -> String {
    type1::Errno::from_raw(code).name()
}

/// A bitmap as hex: the u64 words as little-endian bytes (as `type1 replay --json`).
pub fn bitmap_hex(words: &[u64]) -> String {
    words
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Record {
    pub fn new(line: usize, op: &str) -> Self {
        Record {
            line,
            op: op.to_string(),
            ok: true,
            ..Record::default()
        }
    }

    /// Marks the record failed with `code`.
    pub fn fail(&mut self, code: i32) {
        self.ok = false;
        self.errno = Some(errno_name(code));
        self.errno_code = Some(code);
    }

    /// Marks the record as not run in the kernel, saying why.
    pub fn cannot(&mut self, why: impl Into<String>) {
        self.ok = false;
        self.cannot = true;
        self.message = Some(why.into());
    }

    /// The object of `type1 replay --json` for this statement (additive fields: `message`,
    /// `cannot`, `out_size`, `argsz`, `argsz_needed`, `flags`).
    pub fn to_json(&self) -> Value {
        let mut o = Map::new();
        o.insert("line".into(), json!(self.line));
        o.insert("op".into(), json!(self.op));
        o.insert("ok".into(), json!(self.ok));
        o.insert("errno".into(), json!(self.errno));
        o.insert("locked".into(), json!(self.locked));
        o.insert("avail".into(), json!(self.avail));
        if let Some(m) = &self.message {
            o.insert("message".into(), json!(m));
        }
        if self.cannot {
            o.insert("cannot".into(), json!(true));
        }
        match self.op.as_str() {
            "unmap" => {
                o.insert("size".into(), json!(self.size));
                o.insert("out_size".into(), json!(self.out_size));
                if let Some(b) = &self.bitmap {
                    o.insert("bitmap".into(), json!(bitmap_hex(b)));
                }
            }
            "info" => {
                let i = self.info.as_ref();
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
                    o.insert("argsz_needed".into(), json!(i.argsz_needed));
                    o.insert("flags".into(), json!(i.flags));
                }
            }
            "dirty" if self.bitmap.is_some() => {
                o.insert(
                    "bitmap".into(),
                    json!(self.bitmap.as_deref().map(bitmap_hex)),
                );
            }
            "check" => {
                let mut domains = Map::new();
                for (name, leaves) in self.domains.iter().flatten() {
                    let l: Map<String, Value> = leaves
                        .iter()
                        .map(|(size, n)| (size.to_string(), json!(n)))
                        .collect();
                    domains.insert(name.clone(), json!({ "leaves": l }));
                }
                o.insert("domains".into(), Value::Object(domains));
                // The kernel does not list its mappings or pins.
                o.insert("dmas".into(), Value::Null);
                o.insert("pinned".into(), Value::Null);
            }
            _ => {}
        }
        Value::Object(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unmap_failure_has_null_size_and_the_written_back_field() {
        let mut r = Record::new(7, "unmap");
        r.fail(22);
        r.out_size = Some(0x1000);
        r.locked = Some(4);
        r.avail = Some(65535);
        let v = r.to_json();
        assert_eq!(v["errno"], "EINVAL");
        assert_eq!(v["ok"], false);
        assert_eq!(v["size"], Value::Null);
        assert_eq!(v["out_size"], 0x1000);
        assert_eq!(v["locked"], 4);
    }

    #[test]
    fn unknown_errno_is_numbered() {
        assert_eq!(errno_name(75), "EOVERFLOW");
        assert_eq!(errno_name(95), "E95");
    }

    #[test]
    fn info_and_check_fields() {
        let mut r = Record::new(3, "info");
        r.info = Some(InfoFields {
            argsz: 4096,
            flags: 3,
            iova_pgsizes: 0x4020_1000,
            cap_offset: 24,
            argsz_needed: 120,
            dma_avail: Some(65535),
            iova_ranges: Some(vec![(0, 0xfedf_ffff), (0xfef0_0000, 0x7f_ffff_ffff)]),
            migration_pgsize: Some(4096),
        });
        let v = r.to_json();
        assert_eq!(v["iova_pgsizes"], 0x4020_1000u64);
        assert_eq!(v["iova_ranges"][1][0], 0xfef0_0000u64);
        assert_eq!(v["dma_avail"], 65535);

        let mut c = Record::new(9, "check");
        c.domains = Some(BTreeMap::from([(
            "d0".to_string(),
            BTreeMap::from([(4096, 3), (2 << 20, 1)]),
        )]));
        let v = c.to_json();
        assert_eq!(v["domains"]["d0"]["leaves"]["2097152"], 1);
        assert_eq!(v["domains"]["d0"]["leaves"]["4096"], 3);
        // Round trip through the wire format.
        let back: Record = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn bitmap_is_little_endian() {
        assert_eq!(bitmap_hex(&[0xffff]), "ffff000000000000");
    }
}
