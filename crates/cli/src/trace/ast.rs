//! The syntax tree of a trace (see `/work/shared/trace-format.md`).
//!
//! Everything here is plain data: the parser fills it in and the runner
//! interprets it. Numbers are already evaluated (`1G+4K` is `0x40001000`),
//! words are already checked against their allowed values, and names are
//! valid identifiers (`[A-Za-z_][A-Za-z0-9_]*`).

/// A whole trace: its statements in source order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Trace {
    pub stmts: Vec<Stmt>,
}

/// One statement (one non-blank, non-comment line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stmt {
    /// 1-based line number in the source.
    pub line: usize,
    /// The source line without its comment, trimmed (expectation included).
    pub text: String,
    pub kind: StmtKind,
    /// The `=> ...` part, if any.
    pub expect: Option<Expect>,
}

/// What a statement does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StmtKind {
    /// `container [type1|type1v2] [dma_entry_limit=N] [memlock=BYTES|unlimited]
    /// [cap_ipc_lock=yes|no] [kernel=7.2|6.12|6.1]`
    Container {
        /// `type1v2` (the default) is `true`, `type1` is `false`.
        v2: bool,
        dma_entry_limit: Option<u32>,
        memlock: Option<Memlock>,
        /// `cap_ipc_lock=yes`; `no` (the default) is `false`.
        cap_ipc_lock: bool,
        /// Additive: which kernel's behaviour to model, one of [`KERNELS`](super::KERNELS).
        kernel: Option<String>,
    },
    /// `domain NAME [format=F] [pgsizes=S,...] [aperture=START-END] [reserved=START-END,...]`
    Domain {
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
    Detach { name: String },
    /// `mmap NAME size=BYTES [backing=B] [layout=L] [seed=N] [prot=rw|r] [at=VADDR] [phys=PADDR]`
    Mmap {
        name: String,
        size: u64,
        backing: Backing,
        layout: Layout,
        /// Default 0.
        seed: u64,
        /// `prot=rw` (the default) is `true`, `prot=r` is `false`.
        prot_write: bool,
        at: Option<u64>,
        phys: Option<u64>,
    },
    /// `munmap NAME [offset=BYTES size=BYTES]`
    Munmap {
        name: String,
        /// `(offset, size)`; `None` removes the whole region.
        range: Option<(u64, u64)>,
    },
    /// `map vaddr=V iova=IOVA size=BYTES [flags=...] [argsz=N]`
    Map {
        vaddr: VaddrRef,
        iova: u64,
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
        iova: u64,
        size: u64,
        /// [`UNMAP_DIRTY`](super::UNMAP_DIRTY) | [`UNMAP_ALL`](super::UNMAP_ALL) |
        /// [`UNMAP_VADDR`](super::UNMAP_VADDR) | numeric extras; default 0.
        flags: u32,
        argsz: Option<u32>,
    },
    /// `info [argsz=N]`
    Info { argsz: Option<u32> },
    /// `dirty start`
    DirtyStart,
    /// `dirty stop`
    DirtyStop,
    /// `dirty get iova=IOVA size=BYTES pgsize=BYTES`
    DirtyGet { iova: u64, size: u64, pgsize: u64 },
    /// `check`
    Check,
}

impl StmtKind {
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
        }
    }
}

/// `memlock=` of `container`: RLIMIT_MEMLOCK in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Memlock {
    Bytes(u64),
    Unlimited,
}

/// `backing=` of `mmap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backing {
    /// `4k` (the default)
    #[default]
    Page4k,
    /// `thp`
    Thp,
    /// `hugetlb-2m`
    Hugetlb2m,
    /// `hugetlb-1g`
    Hugetlb1g,
    /// `pfnmap` (device MMIO)
    Pfnmap,
}

impl Backing {
    /// The word that selects this backing in a trace.
    pub fn word(self) -> &'static str {
        match self {
            Backing::Page4k => "4k",
            Backing::Thp => "thp",
            Backing::Hugetlb2m => "hugetlb-2m",
            Backing::Hugetlb1g => "hugetlb-1g",
            Backing::Pfnmap => "pfnmap",
        }
    }
}

/// `layout=` of `mmap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Layout {
    /// `contiguous` (the default)
    #[default]
    Contiguous,
    /// `scattered`
    Scattered,
}

/// `vaddr=` of `map`: an absolute address or a place inside a named `mmap`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VaddrRef {
    /// `vaddr=0x7f0000000000`
    Abs(u64),
    /// `vaddr=ram`, `vaddr=ram+2M`, `vaddr=ram-4K` (offset -4096), `vaddr=ram+1G+4K`.
    /// The offset is the signed sum of the terms after the name, read left to
    /// right; its magnitude never exceeds 2^64-1.
    Named { name: String, offset: i128 },
}

/// The `=> ...` part of a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expect {
    /// `ok` or an errno name; `None` only after `check` (`check => leaves.d0.2M=1`).
    pub result: Option<ExpResult>,
    /// The `key=value` items in source order (no two with the same key).
    pub items: Vec<ExpItem>,
}

/// The result word of an expectation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpResult {
    Ok,
    /// An upper-case name from [`ERRNOS`](super::ERRNOS), e.g. `"EINVAL"`.
    Errno(String),
}

/// One `key=value` item of an expectation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpItem {
    /// `size=BYTES`: what an `unmap` reported (only on `unmap ... => ok`).
    Size(u64),
    /// `locked=N`, `locked=+N`, `locked=-N` (4 KiB pages).
    Locked(LockedExp),
    /// `avail=N`: DMA entries left.
    Avail(u64),
    /// `leaves.NAME.SIZE=N` (only after `check`): domain NAME holds N leaves of SIZE bytes.
    Leaves {
        domain: String,
        pgsize: u64,
        count: u64,
    },
    /// `dmas=N` (only after `check`).
    Dmas(u64),
    /// `pinned=N` (only after `check`).
    Pinned(u64),
}

/// The value of `locked=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockedExp {
    /// `locked=N`: the owner's locked pages after the statement.
    Abs(u64),
    /// `locked=+N` / `locked=-N`: the change made by the statement (the text
    /// after `=` is a signed left-to-right sum, so `locked=-1-1` is -2).
    Delta(i64),
}
