//! Page-table formats. `x86_64` and `arm64-*` are radix tables in their real hardware encodings
//! (`radix`); `mock` is a sorted map of leaves that accepts any page-size bitmap, sub-4K sizes
//! included, as the kernel's iommufd selftest mock does.

pub mod arm64;
mod mock;
mod radix;
pub mod x86_64;

use crate::{Error, PageTable, Prot, SZ_16K, SZ_1G, SZ_2M, SZ_32M, SZ_4K, SZ_512M, SZ_64K};

/// ARM translation granules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Granule {
    /// 4 KiB pages; 2 MiB and 1 GiB blocks.
    K4,
    /// 16 KiB pages; 32 MiB blocks.
    K16,
    /// 64 KiB pages; 512 MiB blocks.
    K64,
}

/// A page-table format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// Intel VT-d second-level tables: 4K/2M/1G leaves, 3, 4 (default) or 5 levels
    /// (39, 48 or 57 bits of IOVA).
    X86_64 {
        /// Levels of the table, the root included.
        levels: u8,
    },
    /// ARM VMSAv8-64 stage 1 (LPAE) with a 48-bit input address.
    Arm64 {
        /// The translation granule (the page size).
        granule: Granule,
    },
    /// Any page-size bitmap; no encoding, no table pages.
    Mock,
}

impl Format {
    /// Parse a trace's format name: `x86_64`, `arm64-4k`, `arm64-16k`, `arm64-64k`, `mock`.
    pub fn parse(name: &str) -> Result<Format, Error> {
        Ok(match name {
            "x86_64" => Format::X86_64 { levels: 4 },
            "x86_64-3level" => Format::X86_64 { levels: 3 },
            "x86_64-5level" => Format::X86_64 { levels: 5 },
            "arm64-4k" => Format::Arm64 {
                granule: Granule::K4,
            },
            "arm64-16k" => Format::Arm64 {
                granule: Granule::K16,
            },
            "arm64-64k" => Format::Arm64 {
                granule: Granule::K64,
            },
            "mock" => Format::Mock,
            _ => return Err(Error::UnknownFormat(name.to_string())),
        })
    }

    /// The name `parse` accepts.
    pub fn name(&self) -> String {
        match self {
            Format::X86_64 { levels: 4 } => "x86_64".into(),
            Format::X86_64 { levels } => format!("x86_64-{levels}level"),
            Format::Arm64 {
                granule: Granule::K4,
            } => "arm64-4k".into(),
            Format::Arm64 {
                granule: Granule::K16,
            } => "arm64-16k".into(),
            Format::Arm64 {
                granule: Granule::K64,
            } => "arm64-64k".into(),
            Format::Mock => "mock".into(),
        }
    }

    /// Every page size the format can encode (`mock`: any, reported as all bits).
    pub fn supported_pgsizes(&self) -> u64 {
        match self {
            Format::X86_64 { .. }
            | Format::Arm64 {
                granule: Granule::K4,
            } => SZ_4K | SZ_2M | SZ_1G,
            Format::Arm64 {
                granule: Granule::K16,
            } => SZ_16K | SZ_32M,
            Format::Arm64 {
                granule: Granule::K64,
            } => SZ_64K | SZ_512M,
            Format::Mock => u64::MAX,
        }
    }

    /// The page sizes a domain gets when none are asked for.
    pub fn default_pgsizes(&self) -> u64 {
        match self {
            Format::Mock => SZ_4K | SZ_2M | SZ_1G,
            f => f.supported_pgsizes(),
        }
    }

    /// Whether the format is one this crate can build (x86_64 has 3, 4 or 5 levels).
    pub fn is_valid(&self) -> bool {
        !matches!(self, Format::X86_64 { levels } if !(3..=5).contains(levels))
    }

    /// The last translatable IOVA.
    pub fn max_iova(&self) -> u64 {
        match self {
            Format::X86_64 { levels } => {
                let bits = 12 + 9 * *levels as u32;
                if bits >= 64 {
                    u64::MAX
                } else {
                    (1u64 << bits) - 1
                }
            }
            Format::Arm64 { .. } => (1u64 << 48) - 1,
            Format::Mock => u64::MAX,
        }
    }

    /// The last physical address a leaf can point to: VT-d second-level entries hold address
    /// bits 51:12, ARM stage-1 descriptors (48-bit output address) bits 47:granule.
    pub fn max_paddr(&self) -> u64 {
        match self {
            Format::X86_64 { .. } => (1u64 << 52) - 1,
            Format::Arm64 { .. } => (1u64 << 48) - 1,
            Format::Mock => u64::MAX,
        }
    }

    /// Reserved IOVA regions the driver reports for every device (inclusive ranges): the x86
    /// interrupt-remapping window (`IOMMU_RESV_MSI`, intel-iommu) and the ARM SMMU's software MSI
    /// window (`MSI_IOVA_BASE`, 1 MiB at 0x8000000); none for `mock`.
    pub fn default_reserved(&self) -> Vec<(u64, u64)> {
        match self {
            Format::X86_64 { .. } => vec![(0xfee0_0000, 0xfeef_ffff)],
            Format::Arm64 { .. } => vec![(0x800_0000, 0x80f_ffff)],
            Format::Mock => vec![],
        }
    }

    /// The permissions a leaf of this format really grants for `prot` (READ/WRITE bits):
    /// ARM stage 1 cannot express write-only, so WRITE alone reads back as READ|WRITE.
    pub fn effective_prot(&self, prot: Prot) -> Prot {
        let p = prot.rw_bits();
        match self {
            Format::Arm64 { .. } if p.contains(Prot::WRITE) => Prot::RW,
            Format::Arm64 { .. } => Prot::READ,
            _ => p,
        }
    }
}

/// A new, empty table for `format` with leaves of `pgsize_bitmap`.
pub(crate) fn new_table(format: Format, pgsize_bitmap: u64) -> Box<dyn PageTable> {
    match format {
        Format::Mock => Box::new(mock::MockTable::new(pgsize_bitmap)),
        Format::X86_64 { levels } => Box::new(radix::RadixTable::new(x86_64::desc(levels as u32))),
        Format::Arm64 { granule } => Box::new(radix::RadixTable::new(arm64::desc(granule))),
    }
}
