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
    /// Linux 3.11: the 2013 driver of "vfio: hugepage support for vfio_iommu_type1" (one IOMMU
    /// domain, mappings merged and split, a 4K-step unmap walk; `container::v3_11`).
    V3_11,
    /// Linux 6.1.
    V6_1,
    /// Linux 6.12.
    V6_12,
    /// Linux 7.2.
    V7_2,
}

impl KernelProfile {
    /// Every profile, oldest first.
    pub const ALL: [KernelProfile; 4] = [
        KernelProfile::V3_11,
        KernelProfile::V6_1,
        KernelProfile::V6_12,
        KernelProfile::V7_2,
    ];

    /// The profile called `s` ("3.11", "6.1", "6.12" or "7.2").
    pub fn parse(s: &str) -> Option<KernelProfile> {
        match s {
            "3.11" => Some(KernelProfile::V3_11),
            "6.1" => Some(KernelProfile::V6_1),
            "6.12" => Some(KernelProfile::V6_12),
            "7.2" => Some(KernelProfile::V7_2),
            _ => None,
        }
    }
    /// The profile's name, as `parse` takes it.
    pub fn name(self) -> &'static str {
        match self {
            KernelProfile::V3_11 => "3.11",
            KernelProfile::V6_1 => "6.1",
            KernelProfile::V6_12 => "6.12",
            KernelProfile::V7_2 => "7.2",
        }
    }
    /// The 2013 driver: the engine runs `container::v3_11` instead of the modern paths.
    pub fn is_3_11(self) -> bool {
        self == KernelProfile::V3_11
    }
    /// A never-written page read through GUP is the shared zero page, which the driver takes for
    /// a reserved pfn (`is_invalid_reserved_pfn`: PageReserved) on 3.11 and 6.1.
    pub fn zero_page_reserved(self) -> bool {
        matches!(self, KernelProfile::V3_11 | KernelProfile::V6_1)
    }
    /// `VFIO_SET_IOMMU` of a type1 (`v2` false) or type1v2 container: 3.11's core found no
    /// driver for `VFIO_TYPE1v2_IOMMU` (it came in 3.12) and answered ENODEV.
    pub fn set_iommu(self, v2: bool) -> Result<(), crate::Error> {
        if v2 && self.is_3_11() {
            return Err(crate::Error::V3_11 {
                errno: Errno::ENODEV,
                why: "VFIO_SET_IOMMU(VFIO_TYPE1v2_IOMMU): no IOMMU driver claims the extension \
                      (type1v2 came in 3.12), so the core answers ENODEV; use `container type1`"
                    .into(),
            });
        }
        Ok(())
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
