//! The one [`Record`]: what one statement answered, and the object `type1 replay --json` prints
//! for it (the JSON contract; every field is described in this crate's README.md).
//!
//! Both backends make records: the engine's runner (crates/cli) and the kernel's (vfio-backend,
//! inside a guest, which sends them to the host as JSON with serde). [`Record::to_json`] is the
//! only place that decides which fields an object has, so the two streams can be compared
//! field by field ([`crate::compare`]). The contract's rule holds here: fields are only ever
//! added, never renamed or dropped; the additive ones are `message`, `warnings`, `tables`,
//! `argsz` (and, for kernel records only, `cannot`, `out_size`, `argsz_needed`, `flags`).
//! Objects are printed with their keys in alphabetical order.

use std::collections::BTreeMap;

use iommu::Errno;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

/// Who answered: decides the few additive fields only one side has.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// The engine (`type1 replay`).
    #[default]
    Engine,
    /// A real kernel (vfio-backend in a guest): adds `cannot`, `out_size`, `argsz_needed` and
    /// `flags`; at `check` it lists neither mappings nor pins (`dmas` and `pinned` are null).
    Kernel,
}

/// One statement's answer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The statement's line (1-based); for the summary, the last statement's line + 1.
    pub line: usize,
    /// The verb (`dirty` for its three forms), or `summary`.
    pub op: String,
    /// Who answered.
    #[serde(default)]
    pub backend: Backend,
    /// The call succeeded (and, at `check`, the invariants hold).
    pub ok: bool,
    /// The errno the call failed with.
    #[serde(default, with = "opt_errno")]
    pub errno: Option<Errno>,
    /// The statement could not be run (kernel only: not a kernel answer); `message` says why.
    #[serde(default)]
    pub cannot: bool,
    /// Additive: the human explanation when `ok` is false (or a note).
    pub message: Option<String>,
    /// Additive: things a person wants to know, in order.
    #[serde(default)]
    pub warnings: Vec<String>,
    /// Locked pages (4 KiB) after the statement.
    pub locked: Option<u64>,
    /// DMA entries left after the statement.
    pub avail: Option<u64>,
    /// `unmap`: the bytes unmapped (`None` when the call failed).
    pub size: Option<u64>,
    /// `unmap`, kernel only: the structure's size field after the call, also after a failure.
    pub out_size: Option<u64>,
    /// `info`: what GET_INFO answered (`None` when the call failed).
    pub info: Option<InfoFields>,
    /// `dirty get`, `unmap flags=dirty`: the bitmap words.
    pub bitmap: Option<Vec<u64>>,
    /// The statement is `dirty get`: its `bitmap` is printed even when the call failed (null).
    #[serde(default)]
    pub dirty_get: bool,
    /// `check` and the summary: what the container holds.
    pub state: Option<State>,
    /// Additive: `unmap`: the notifications sent to devices holding external pins
    /// (`vfio_notify_dma_unmap`), one per mapping.
    #[serde(default)]
    pub notified: Vec<Notified>,
}

/// One unmap notification: the mapping, the devices told, and the pins they dropped.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notified {
    /// The mapping's first IOVA.
    pub iova: u64,
    /// The mapping's size.
    pub size: u64,
    /// The devices notified (by group name).
    pub devices: Vec<String>,
    /// The pins they dropped.
    pub unpinned: u64,
}

/// GET_INFO's reply.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InfoFields {
    /// The argsz written back (the size needed when the buffer was too small).
    pub argsz: u32,
    /// The reply's flags (`VFIO_IOMMU_INFO_PGSIZES | VFIO_IOMMU_INFO_CAPS`).
    pub flags: u32,
    /// The page sizes the container maps with.
    pub iova_pgsizes: u64,
    /// Where the capability chain starts (0: none delivered).
    pub cap_offset: u32,
    /// Kernel only: the argsz that holds every capability (asked with a minimal buffer).
    pub argsz_needed: u32,
    /// The DMA_AVAIL capability (`None` when the buffer was too small for it).
    pub dma_avail: Option<u32>,
    /// The IOVA_RANGE capability: `(start, last)` pairs, `last` inclusive.
    pub iova_ranges: Option<Vec<(u64, u64)>>,
    /// The MIGRATION capability's page size.
    pub migration_pgsize: Option<u64>,
}

/// What `check` (and the summary) shows of a container.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The mappings (`None`: not known, the kernel does not list them).
    pub dmas: Option<Vec<Dma>>,
    /// Leaves by page size (bytes → count), per domain name.
    pub domains: BTreeMap<String, BTreeMap<u64, u64>>,
    /// Pins held in total (`None`: not known).
    pub pinned: Option<u64>,
    /// Additive: page-table pages in use, per domain name (`None`: not known).
    pub tables: Option<BTreeMap<String, u64>>,
}

/// One mapping, as `check` lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dma {
    /// The first IOVA.
    pub iova: u64,
    /// Bytes.
    pub size: u64,
    /// The process address it maps.
    pub vaddr: u64,
}

/// A bitmap as hex: the u64 words as little-endian bytes, in memory order.
pub fn bitmap_hex(words: &[u64]) -> String {
    words
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Record {
    /// A successful record of `op` at `line`, with nothing else known yet.
    pub fn new(line: usize, op: &str) -> Self {
        Record {
            line,
            op: op.to_string(),
            ok: true,
            ..Record::default()
        }
    }

    /// A kernel record (see [`Backend::Kernel`]) of `op` at `line`, successful so far.
    pub fn kernel(line: usize, op: &str) -> Self {
        Record {
            backend: Backend::Kernel,
            ..Record::new(line, op)
        }
    }

    /// Marks the record failed with `errno`.
    pub fn fail(&mut self, errno: Errno) {
        self.ok = false;
        self.errno = Some(errno);
    }

    /// Marks the record as not run, saying why.
    pub fn cannot(&mut self, why: impl Into<String>) {
        self.ok = false;
        self.cannot = true;
        self.message = Some(why.into());
    }

    /// `ok`, the errno's name, `CANNOT` (not run) or `INVARIANT` (a `check` that failed): the
    /// result column of a report.
    pub fn result_word(&self) -> String {
        match (self.ok, self.errno, self.cannot) {
            (true, _, _) => "ok".into(),
            (false, Some(e), _) => e.name(),
            (false, None, true) => "CANNOT".into(),
            (false, None, false) => "INVARIANT".into(),
        }
    }

    /// The object `type1 replay --json` prints for this record.
    pub fn to_json(&self) -> Value {
        let kernel = self.backend == Backend::Kernel;
        let mut o = Map::new();
        o.insert("line".into(), json!(self.line));
        o.insert("op".into(), json!(self.op));
        o.insert("ok".into(), json!(self.ok));
        o.insert("errno".into(), json!(self.errno.map(Errno::name)));
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
                if kernel {
                    o.insert("out_size".into(), json!(self.out_size));
                }
                if let Some(b) = &self.bitmap {
                    o.insert("bitmap".into(), json!(bitmap_hex(b)));
                }
                if !self.notified.is_empty() {
                    let n: Vec<Value> = self
                        .notified
                        .iter()
                        .map(|n| {
                            json!({"iova": n.iova, "size": n.size, "devices": n.devices,
                                   "unpinned": n.unpinned})
                        })
                        .collect();
                    o.insert("notified".into(), Value::Array(n));
                }
            }
            "info" => self.info_fields(&mut o, kernel),
            // `dirty get` (null when the call failed), not `dirty start|stop`.
            "dirty" if self.dirty_get || self.bitmap.is_some() => {
                o.insert(
                    "bitmap".into(),
                    json!(self.bitmap.as_deref().map(bitmap_hex)),
                );
            }
            _ => {}
        }
        if let Some(s) = &self.state {
            s.fields(&mut o);
        }
        if !self.warnings.is_empty() {
            o.insert("warnings".into(), json!(self.warnings));
        }
        Value::Object(o)
    }

    fn info_fields(&self, o: &mut Map<String, Value>, kernel: bool) {
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
            if kernel {
                o.insert("argsz_needed".into(), json!(i.argsz_needed));
                o.insert("flags".into(), json!(i.flags));
            }
        }
    }
}

impl State {
    /// `dmas`, `domains`, `pinned` and (when known) `tables`.
    fn fields(&self, o: &mut Map<String, Value>) {
        let dmas = self.dmas.as_ref().map(|v| {
            v.iter()
                .map(|d| json!({"iova": d.iova, "size": d.size, "vaddr": d.vaddr}))
                .collect::<Vec<_>>()
        });
        let domains: Map<String, Value> = self
            .domains
            .iter()
            .map(|(name, leaves)| {
                let l: Map<String, Value> = leaves
                    .iter()
                    .map(|(size, n)| (size.to_string(), json!(n)))
                    .collect();
                (name.clone(), json!({ "leaves": l }))
            })
            .collect();
        o.insert("dmas".into(), json!(dmas));
        o.insert("domains".into(), Value::Object(domains));
        o.insert("pinned".into(), json!(self.pinned));
        if let Some(t) = &self.tables {
            o.insert("tables".into(), json!(t));
        }
    }
}

/// An optional errno on the wire: its name, or null.
mod opt_errno {
    use iommu::Errno;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(e: &Option<Errno>, s: S) -> Result<S::Ok, S::Error> {
        match e {
            Some(e) => s.serialize_some(&e.name()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Errno>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|n| {
                crate::ast::errno_name::parse(&n)
                    .ok_or_else(|| serde::de::Error::custom(format!("unknown errno {n:?}")))
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitmap_words_are_little_endian_bytes() {
        assert_eq!(bitmap_hex(&[0xffff]), "ffff000000000000");
        assert_eq!(bitmap_hex(&[1, 0x0100]), "01000000000000000001000000000000");
    }

    #[test]
    fn unmap_failure_has_null_size_and_the_written_back_field() {
        let mut r = Record::kernel(7, "unmap");
        r.fail(Errno::EINVAL);
        r.out_size = Some(0x1000);
        r.locked = Some(4);
        r.avail = Some(65535);
        let v = r.to_json();
        assert_eq!(v["errno"], "EINVAL");
        assert_eq!(v["ok"], false);
        assert_eq!(v["size"], Value::Null);
        assert_eq!(v["out_size"], 0x1000);
        assert_eq!(v["locked"], 4);
        // The engine has no written-back field.
        r.backend = Backend::Engine;
        assert!(r.to_json().get("out_size").is_none());
    }

    #[test]
    fn unknown_errno_is_numbered_and_round_trips() {
        let mut r = Record::kernel(2, "map");
        r.fail(Errno::from_raw(95));
        assert_eq!(r.to_json()["errno"], "E95");
        assert_eq!(r.result_word(), "E95");
        let back: Record = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
        r.fail(Errno::EOVERFLOW);
        assert_eq!(r.to_json()["errno"], "EOVERFLOW");
    }

    #[test]
    fn info_and_check_fields() {
        let mut r = Record::kernel(3, "info");
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
        assert_eq!(v["argsz_needed"], 120);
        r.backend = Backend::Engine;
        let v = r.to_json();
        assert_eq!(v["argsz"], 4096);
        assert!(v.get("argsz_needed").is_none() && v.get("flags").is_none());

        let mut c = Record::kernel(9, "check");
        c.state = Some(State {
            domains: BTreeMap::from([(
                "d0".to_string(),
                BTreeMap::from([(4096, 3), (2 << 20, 1)]),
            )]),
            ..State::default()
        });
        let v = c.to_json();
        assert_eq!(v["domains"]["d0"]["leaves"]["2097152"], 1);
        assert_eq!(v["domains"]["d0"]["leaves"]["4096"], 3);
        assert_eq!(v["dmas"], Value::Null);
        assert_eq!(v["pinned"], Value::Null);
        assert!(v.get("tables").is_none());
        // Round trip through the wire format.
        let back: Record = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }
}
