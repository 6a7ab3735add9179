//! How a container is configured: `Config` (the container's settings), `Strategy` (how the engine
//! pins and maps) and `KernelProfile`, the one place where kernel versions differ.
//!
//! Invariant owned here: every version-dependent behaviour of the engine is a method of
//! `KernelProfile`; the engine asks it and never compares versions itself.

use crate::error::Errno;

/// How the engine pins and maps (results are identical apart from leaf sizes and speed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// Before 2013: one page per pin and per map call, so only base-size leaves.
    PerPage,
    /// The 2013 design: batch physically contiguous runs, one map call per run.
    Contiguous,
    /// As `Contiguous`, with one lookup and one charge per huge folio.
    Folio,
}

impl Strategy {
    /// The name used on command lines and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::PerPage => "per-page",
            Strategy::Contiguous => "contiguous",
            Strategy::Folio => "folio",
        }
    }
    /// The strategy called `s` (see `name`).
    pub fn parse(s: &str) -> Option<Strategy> {
        match s {
            "per-page" => Some(Strategy::PerPage),
            "contiguous" => Some(Strategy::Contiguous),
            "folio" => Some(Strategy::Folio),
            _ => None,
        }
    }
}

/// Which kernel's behaviour to reproduce where kernels differ (shared/kernel-oracle/README.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum KernelProfile {
    /// Linux 6.1.
    V6_1,
    /// Linux 6.12.
    V6_12,
    /// Linux 7.2.
    V7_2,
}

impl KernelProfile {
    /// The profile called `s` ("6.1", "6.12" or "7.2").
    pub fn parse(s: &str) -> Option<KernelProfile> {
        match s {
            "6.1" => Some(KernelProfile::V6_1),
            "6.12" => Some(KernelProfile::V6_12),
            "7.2" => Some(KernelProfile::V7_2),
            _ => None,
        }
    }
    /// IOVA/vaddr wrap-around: EOVERFLOW since the 2025 "addressable limit" series.
    pub(crate) fn wrap_errno(self) -> Errno {
        if self >= KernelProfile::V7_2 {
            Errno::EOVERFLOW
        } else {
            Errno::EINVAL
        }
    }
    /// Before that series an unmap whose end is exactly 2^64 computed an exclusive end of 0 and
    /// unmapped nothing.
    pub(crate) fn unmap_to_end_is_empty(self) -> bool {
        self < KernelProfile::V7_2
    }
    /// Before that series DIRTY_PAGES GET_BITMAP refused a range ending exactly at 2^64 - 1
    /// (`range.iova + range.size < range.iova`, the sum being 0): EINVAL.
    pub(crate) fn dirty_range_to_end_wraps(self) -> bool {
        self < KernelProfile::V7_2
    }
    /// Never-written read-only THP memory is pinned as 4K pages that are not physically
    /// contiguous (4K IOMMU leaves, every page charged) before 7.2, which pins 2M folios.
    pub(crate) fn ro_thp_pins_4k_pages(self) -> bool {
        self < KernelProfile::V7_2
    }
    /// 6.1 did not pad capabilities to 8 bytes (GET_INFO needs 116 bytes, not 120).
    pub(crate) fn pads_caps(self) -> bool {
        self > KernelProfile::V6_1
    }
}

/// Container settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// type1v2 (true) or type1.
    pub v2: bool,
    /// The most mappings the container holds (the `dma_entry_limit` module parameter).
    pub dma_entry_limit: u32,
    /// RLIMIT_MEMLOCK in bytes; `None` = unlimited.
    pub memlock: Option<u64>,
    /// Whether the mapping process holds CAP_IPC_LOCK (no RLIMIT_MEMLOCK check).
    pub cap_ipc_lock: bool,
    /// How to pin and map.
    pub strategy: Strategy,
    /// Which kernel's behaviour to reproduce.
    pub kernel: KernelProfile,
    /// Check invariant 2 at every unpin (costs a table walk per run).
    pub check_unpin_order: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            v2: true,
            dma_entry_limit: u16::MAX as u32,
            memlock: None,
            cap_ipc_lock: false,
            strategy: Strategy::Contiguous,
            kernel: KernelProfile::V7_2,
            check_unpin_order: true,
        }
    }
}
