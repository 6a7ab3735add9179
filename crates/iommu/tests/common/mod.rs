//! What the iommu integration tests share: the sizes they name, domains of a format, and the
//! errno of a map that must fail. Each test crate uses a part of it.

#![allow(dead_code)]

use iommu::{Domain, DomainConfig, Format, Prot};

pub use iommu::{SZ_1G as G1, SZ_2M as M2, SZ_4K as K4};

/// A domain of `f` with the format's default page sizes and aperture.
pub fn domain(f: Format) -> Domain {
    Domain::new(DomainConfig::new(f)).unwrap()
}

/// A 4-level VT-d domain.
pub fn x86() -> Domain {
    domain(Format::X86_64 { levels: 4 })
}

/// The errno value of a map that must fail.
pub fn map_errno(d: &mut Domain, iova: u64, paddr: u64, size: u64, prot: Prot) -> i32 {
    d.map(iova, paddr, size, prot).unwrap_err().errno().code()
}
