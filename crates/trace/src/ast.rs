//! The syntax tree of a trace (the language is described in this crate's README.md).
//!
//! Everything here is plain data: the parser fills it in and the runners (the engine's and the
//! kernel's) interpret it. Numbers are already evaluated (`1G+4K` is `0x40001000`), words are
//! already checked against their allowed values, and names are valid identifiers
//! (`[A-Za-z_][A-Za-z0-9_]*`). The tree is serialisable: the host sends it, one statement a
//! JSON line, to the program that replays it inside a guest ([`to_json_lines`]).

use iommu::Errno;
use serde::{Deserialize, Serialize};
pub use type1::mm::{Backing, Layout, MmapSpec};

/// A whole trace: its statements in source order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Trace {
    /// The statements, in source order.
    pub stmts: Vec<Stmt>,
}

/// One statement (one non-blank, non-comment line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stmt {
    /// 1-based line number in the source.
    pub line: usize,
    /// The source line without its comment, trimmed (expectation included).
    pub text: String,
    /// What the statement does.
    pub kind: StmtKind,
    /// The `=> ...` part, if any.
    pub expect: Option<Expect>,
}

/// What a statement does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "verb", rename_all = "snake_case")]
pub enum StmtKind {
    /// `container [type1|type1v2] [dma_entry_limit=N] [memlock=BYTES|unlimited]
    /// [cap_ipc_lock=yes|no] [kernel=7.2|6.12|6.1]`
    Container {
        /// `type1v2` (the default) is `true`, `type1` is `false`.
        v2: bool,
        /// `dma_entry_limit=N`; `None` leaves the module's default (65535).
        dma_entry_limit: Option<u32>,
        /// `memlock=`; `None` (not given) means unlimited.
        memlock: Option<Memlock>,
        /// `cap_ipc_lock=yes`; `no` (the default) is `false`.
        cap_ipc_lock: bool,
        /// Additive: which kernel's behaviour to model, one of [`KERNELS`](super::KERNELS).
        kernel: Option<String>,
    },
    /// `domain NAME [format=F] [pgsizes=S,...] [aperture=START-END] [reserved=START-END,...]`
    Domain {
        /// The domain's name, for `detach` and `leaves.NAME.SIZE=`.
        name: String,
        /// One of [`FORMATS`](super::FORMATS).
        format: Option<String>,
        /// Each a non-zero power of two, no duplicates, in source order.
        pgsizes: Option<Vec<u64>>,
        /// `(start, end)`, end inclusive, `start <= end`.
        aperture: Option<(u64, u64)>,
        /// `(start, end)` pairs, end inclusive. `reserved=none` gives `Some(vec![])`.
        reserved: Option<Vec<(u64, u64)>>,
    },
    /// `detach NAME`
    Detach {
        /// The domain to detach.
        name: String,
    },
    /// `mmap NAME size=BYTES [backing=B] [layout=L] [seed=N] [prot=rw|r] [at=VADDR] [phys=PADDR]`
    Mmap {
        /// The region's name, for `vaddr=NAME` and `munmap NAME`.
        name: String,
        /// Bytes.
        size: u64,
        /// `backing=` (default `4k`).
        backing: Backing,
        /// `layout=` (default `contiguous`).
        #[serde(with = "layout_word")]
        layout: Layout,
        /// Default 0.
        seed: u64,
        /// `prot=rw` (the default) is `true`, `prot=r` is `false`.
        prot_write: bool,
        /// `at=VADDR`: a fixed place in the address space.
        at: Option<u64>,
        /// `phys=PADDR`: where the model puts the pages (the kernel cannot be asked).
        phys: Option<u64>,
    },
    /// `munmap NAME [offset=BYTES size=BYTES]`
    Munmap {
        /// The region.
        name: String,
        /// `(offset, size)`; `None` removes the whole region.
        range: Option<(u64, u64)>,
    },
    /// `map vaddr=V iova=IOVA size=BYTES [flags=...] [argsz=N]`
    Map {
        /// Where the memory is in the process.
        vaddr: VaddrRef,
        /// Where the device sees it.
        iova: u64,
        /// Bytes.
        size: u64,
        /// [`MAP_READ`](super::MAP_READ) | [`MAP_WRITE`](super::MAP_WRITE) |
        /// [`MAP_VADDR`](super::MAP_VADDR) | numeric extras; default `READ|WRITE` = 3.
        flags: u32,
        /// Additive: the `argsz` the ioctl is issued with (default: the right size).
        argsz: Option<u32>,
    },
    /// `unmap iova=IOVA size=BYTES [flags=...] [argsz=N]`, or `unmap all`
    /// (= `Unmap { iova: 0, size: 0, flags: UNMAP_ALL, argsz: None }`).
    Unmap {
        /// The first IOVA.
        iova: u64,
        /// Bytes (0 with `all`).
        size: u64,
        /// [`UNMAP_DIRTY`](super::UNMAP_DIRTY) | [`UNMAP_ALL`](super::UNMAP_ALL) |
        /// [`UNMAP_VADDR`](super::UNMAP_VADDR) | numeric extras; default 0.
        flags: u32,
        /// Additive: the `argsz` the ioctl is issued with (default: see [`crate::defaults`]).
        argsz: Option<u32>,
    },
    /// `info [argsz=N]`
    Info {
        /// Additive: the buffer size given to GET_INFO (default: see [`crate::defaults`]).
        argsz: Option<u32>,
    },
    /// `dirty start`
    DirtyStart,
    /// `dirty stop`
    DirtyStop,
    /// `dirty get iova=IOVA size=BYTES pgsize=BYTES`
    DirtyGet {
        /// The first IOVA.
        iova: u64,
        /// Bytes.
        size: u64,
        /// The page size one bit stands for.
        pgsize: u64,
    },
    /// `check`
    Check,
    /// Additive: `pin iova=IOVA npage=N [group=NAME]`: the device of group NAME (default: the
    /// first attached) pins `npage` pages for reads and writes (`vfio_pin_pages`).
    Pin {
        /// The first IOVA.
        iova: u64,
        /// Pages.
        npage: u64,
        /// The group whose device pins.
        group: Option<String>,
    },
    /// Additive: `unpin iova=IOVA npage=N` (`vfio_unpin_pages`).
    Unpin {
        /// The first IOVA.
        iova: u64,
        /// Pages.
        npage: u64,
    },
    /// Additive: `dma_rw iova=IOVA size=BYTES write=yes|no` (`vfio_dma_rw`).
    DmaRw {
        /// The first IOVA.
        iova: u64,
        /// Bytes.
        size: u64,
        /// A write into the process's memory (else a read).
        write: bool,
    },
}

impl StmtKind {
    /// The request to create memory an `mmap` statement makes (`None` for other verbs).
    pub fn mmap_spec(&self) -> Option<MmapSpec> {
        let StmtKind::Mmap {
            name,
            size,
            backing,
            layout,
            seed,
            prot_write,
            at,
            phys,
        } = self
        else {
            return None;
        };
        Some(MmapSpec {
            name: name.clone(),
            size: *size,
            backing: *backing,
            layout: *layout,
            seed: *seed,
            writable: *prot_write,
            at: *at,
            phys: *phys,
        })
    }

    /// The verb as written in the trace (`"dirty"` for the three `dirty` forms),
    /// e.g. for the `op` field of `type1 replay --json`.
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
            StmtKind::Pin { .. } => "pin",
            StmtKind::Unpin { .. } => "unpin",
            StmtKind::DmaRw { .. } => "dma_rw",
        }
    }
}

/// `memlock=` of `container`: RLIMIT_MEMLOCK in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Memlock {
    /// `memlock=BYTES`.
    Bytes(u64),
    /// `memlock=unlimited`.
    Unlimited,
}

/// `vaddr=` of `map`: an absolute address or a place inside a named `mmap`
/// (resolved by [`crate::defaults::resolve_vaddr`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VaddrRef {
    /// `vaddr=0x7f0000000000`
    Abs(u64),
    /// `vaddr=ram`, `vaddr=ram+2M`, `vaddr=ram-4K` (offset -4096), `vaddr=ram+1G+4K`.
    /// The offset is the signed sum of the terms after the name, read left to
    /// right; its magnitude never exceeds 2^64-1.
    Named {
        /// The `mmap` the address is in.
        name: String,
        /// The signed offset from the region's start (on the wire: decimal text, as JSON
        /// numbers inside tagged enums cannot hold an i128).
        #[serde(with = "i128_text")]
        offset: i128,
    },
}

/// The `=> ...` part of a statement (checked by [`crate::expect`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expect {
    /// `ok` or an errno name; `None` only after `check` (`check => leaves.d0.2M=1`).
    pub result: Option<ExpResult>,
    /// The `key=value` items in source order (no two with the same key).
    pub items: Vec<ExpItem>,
}

/// The result word of an expectation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExpResult {
    /// `ok`: the call succeeded.
    Ok,
    /// An upper-case name from [`ERRNOS`](super::ERRNOS), e.g. `EINVAL`.
    Errno(#[serde(with = "errno_name")] Errno),
}

/// One `key=value` item of an expectation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExpItem {
    /// `size=BYTES`: what an `unmap` reported (only on `unmap ... => ok`).
    Size(u64),
    /// `locked=N`, `locked=+N`, `locked=-N` (4 KiB pages).
    Locked(LockedExp),
    /// `avail=N`: DMA entries left.
    Avail(u64),
    /// `leaves.NAME.SIZE=N` (only after `check`): domain NAME holds N leaves of SIZE bytes.
    Leaves {
        /// The domain's name.
        domain: String,
        /// The leaf size in bytes.
        pgsize: u64,
        /// How many leaves of that size.
        count: u64,
    },
    /// `dmas=N` (only after `check`).
    Dmas(u64),
    /// `pinned=N` (only after `check`).
    Pinned(u64),
}

/// The value of `locked=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockedExp {
    /// `locked=N`: the owner's locked pages after the statement.
    Abs(u64),
    /// `locked=+N` / `locked=-N`: the change made by the statement (the text
    /// after `=` is a signed left-to-right sum, so `locked=-1-1` is -2).
    Delta(i64),
}

/// An errno on the wire: its name (`"EINVAL"`), or `E<code>` for one without a name.
pub(crate) mod errno_name {
    use iommu::Errno;
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes the name.
    pub fn serialize<S: Serializer>(e: &Errno, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&e.name())
    }

    /// Reads a name back (`EINVAL`, or `E95`).
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Errno, D::Error> {
        let name = String::deserialize(d)?;
        parse(&name).ok_or_else(|| serde::de::Error::custom(format!("unknown errno {name:?}")))
    }

    /// `EINVAL` → 22, `E95` → 95.
    pub fn parse(name: &str) -> Option<Errno> {
        Errno::from_name(name).or_else(|| name.strip_prefix('E')?.parse().ok().map(Errno::from_raw))
    }
}

/// `layout=` on the wire: its word (`"contiguous"`, `"scattered"`).
mod layout_word {
    use serde::{Deserialize, Deserializer, Serializer};
    use type1::mm::Layout;

    pub fn serialize<S: Serializer>(l: &Layout, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match l {
            Layout::Contiguous => "contiguous",
            Layout::Scattered => "scattered",
        })
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Layout, D::Error> {
        match String::deserialize(d)?.as_str() {
            "contiguous" => Ok(Layout::Contiguous),
            "scattered" => Ok(Layout::Scattered),
            w => Err(serde::de::Error::custom(format!("unknown layout {w:?}"))),
        }
    }
}

/// An i128 on the wire: its decimal text.
mod i128_text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &i128, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i128, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// Statements as JSON lines, one statement a line: how the host hands a parsed trace to the
/// program that replays it inside a guest.
pub fn to_json_lines(stmts: &[Stmt]) -> String {
    let mut s = String::new();
    for st in stmts {
        s.push_str(&serde_json::to_string(st).expect("statements serialise"));
        s.push('\n');
    }
    s
}

/// Reads [`to_json_lines`] back (blank lines skipped).
pub fn from_json_lines(text: &str) -> Result<Vec<Stmt>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).map_err(|e| format!("statement {}: {e}", i + 1)))
        .collect()
}
