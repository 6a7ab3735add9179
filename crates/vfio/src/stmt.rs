//! The statements the guest program runs: a plain mirror of the trace language's AST
//! (trace-format.md), already parsed and checked on the host, serialised to JSON (one statement
//! a line) into the initramfs. Only what the kernel can be asked is here: IOMMU formats,
//! apertures and physical layouts are the engine's business and are dropped by the converter
//! (it lists what it dropped in `ignored`).

use serde::{Deserialize, Serialize};

/// One statement with the line it came from (1-based, as in `type1 replay --json`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stmt {
    pub line: usize,
    pub kind: StmtKind,
    /// Parts of the trace statement the kernel run cannot honour (e.g. `layout=scattered`),
    /// reported in the record's `message`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignored: Vec<String>,
}

/// What a statement does; see trace-format.md for each verb.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verb", rename_all = "snake_case")]
pub enum StmtKind {
    /// `container`: settings applied when the (only) domain is attached.
    Container {
        v2: bool,
        /// `dma_entry_limit=N`; `None` leaves the module's value (65535).
        dma_entry_limit: Option<u32>,
        /// RLIMIT_MEMLOCK: `None` = not given (the trace's default, unlimited), `Some(None)` =
        /// `unlimited`, `Some(Some(bytes))`.
        memlock: Option<Option<u64>>,
        /// Keep CAP_IPC_LOCK (the guest runs as root); `false` drops it.
        cap_ipc_lock: bool,
    },
    /// `domain NAME`: opens the edu device's group and sets it on the container, then sets the
    /// IOMMU backend. Only one is possible: the guest has one device.
    Domain {
        name: String,
    },
    /// `detach NAME`: not run (the kernel would need a second group to keep the container).
    Detach {
        name: String,
    },
    /// `mmap NAME size=... backing=... prot=... at=...`
    Mmap {
        name: String,
        size: u64,
        backing: Backing,
        writable: bool,
        at: Option<u64>,
    },
    /// `munmap NAME [offset= size=]`
    Munmap {
        name: String,
        /// `(offset, size)`; `None` = the whole region.
        range: Option<(u64, u64)>,
    },
    /// `map vaddr=... iova=... size=... flags=... argsz=...`
    Map {
        vaddr: Vaddr,
        iova: u64,
        size: u64,
        flags: u32,
        argsz: Option<u32>,
    },
    /// `unmap ...` (`unmap all` is `flags = ALL`, iova 0, size 0).
    Unmap {
        iova: u64,
        size: u64,
        flags: u32,
        argsz: Option<u32>,
    },
    /// `info [argsz=N]`
    Info {
        argsz: Option<u32>,
    },
    DirtyStart,
    DirtyStop,
    DirtyGet {
        iova: u64,
        size: u64,
        pgsize: u64,
    },
    /// `check`: the guest pauses so the host can read the IOMMU's tables.
    Check,
    /// A statement the guest program does not know: reported as `cannot`, not run.
    Unsupported {
        name: String,
    },
}

impl StmtKind {
    /// The verb, as in the `op` field of `type1 replay --json`.
    pub fn verb(&self) -> &'static str {
        match self {
            StmtKind::Container { .. } => "container",
            StmtKind::Domain { .. } => "domain",
            StmtKind::Detach { .. } => "detach",
            StmtKind::Mmap { .. } => "mmap",
            StmtKind::Munmap { .. } => "munmap",
            StmtKind::Map { .. } => "map",
            StmtKind::Unmap { .. } => "unmap",
            StmtKind::Info { .. } => "info",
            StmtKind::DirtyStart | StmtKind::DirtyStop | StmtKind::DirtyGet { .. } => "dirty",
            StmtKind::Check => "check",
            StmtKind::Unsupported { .. } => "unsupported",
        }
    }
}

/// `backing=` of `mmap`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backing {
    #[serde(rename = "4k")]
    Page4k,
    Thp,
    #[serde(rename = "hugetlb-2m")]
    Hugetlb2m,
    #[serde(rename = "hugetlb-1g")]
    Hugetlb1g,
    /// Device MMIO: not possible without mapping a device BAR (reported as `cannot`).
    Pfnmap,
}

/// `vaddr=` of `map`: absolute, or a name (an `mmap` of the trace) plus a signed offset.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Vaddr {
    Abs(u64),
    Named { name: String, offset: i64 },
}

/// Serialises statements as JSON lines (the guest program's input).
pub fn to_json_lines(stmts: &[Stmt]) -> String {
    let mut s = String::new();
    for st in stmts {
        s.push_str(&serde_json::to_string(st).expect("statements serialise"));
        s.push('\n');
    }
    s
}

/// Reads JSON lines back (blank lines skipped).
pub fn from_json_lines(text: &str) -> Result<Vec<Stmt>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).map_err(|e| format!("statement {}: {e}", i + 1)))
        .collect()
}

/// True when a statement needs a 1 GiB huge page (the guest then needs more memory).
pub fn needs_1g(stmts: &[Stmt]) -> bool {
    stmts.iter().any(|s| {
        matches!(
            s.kind,
            StmtKind::Mmap {
                backing: Backing::Hugetlb1g,
                ..
            }
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_round_trip() {
        let stmts = vec![
            Stmt {
                line: 1,
                kind: StmtKind::Container {
                    v2: true,
                    dma_entry_limit: Some(4),
                    memlock: Some(Some(1 << 20)),
                    cap_ipc_lock: false,
                },
                ignored: vec![],
            },
            Stmt {
                line: 3,
                kind: StmtKind::Mmap {
                    name: "ram".into(),
                    size: 8 << 20,
                    backing: Backing::Hugetlb2m,
                    writable: true,
                    at: None,
                },
                ignored: vec!["layout=scattered".into()],
            },
            Stmt {
                line: 4,
                kind: StmtKind::Map {
                    vaddr: Vaddr::Named {
                        name: "ram".into(),
                        offset: -4096,
                    },
                    iova: 1 << 30,
                    size: 4096,
                    flags: 3,
                    argsz: None,
                },
                ignored: vec![],
            },
            Stmt {
                line: 5,
                kind: StmtKind::Check,
                ignored: vec![],
            },
        ];
        let text = to_json_lines(&stmts);
        assert!(text.contains(r#""backing":"hugetlb-2m""#), "{text}");
        assert!(text.contains(r#""verb":"check""#), "{text}");
        assert_eq!(from_json_lines(&text).unwrap(), stmts);
        assert!(!needs_1g(&stmts));
    }
}
