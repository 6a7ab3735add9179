//! `AnyMemory`: the memory a trace runs on, chosen at run time (the model or the real process).
//! It owns nothing of its own: every call goes to the chosen model.

use super::pincount::PinCounts;
use super::{sim, Batch, MemError, Memory, MmapSpec, PageAudit, PageSource, PinResult};

/// The memory a trace runs on, chosen at run time: the model or the real process.
#[derive(Debug)]
pub enum AnyMemory {
    /// The deterministic model.
    Sim(sim::SimMm),
    /// This process's real memory.
    #[cfg(target_os = "linux")]
    Host(super::host::HostMm),
}

macro_rules! delegate {
    ($self:ident, $m:ident => $e:expr) => {
        match $self {
            AnyMemory::Sim($m) => $e,
            #[cfg(target_os = "linux")]
            AnyMemory::Host($m) => $e,
        }
    };
}

impl PageSource for AnyMemory {
    fn pin(&mut self, vaddr: u64, npages: u64, write: bool, batch: &mut Batch) -> PinResult {
        delegate!(self, m => m.pin(vaddr, npages, write, batch))
    }
    fn unpin(&mut self, pfn: u64, npages: u64, dirty: bool, skip_reserved: bool) -> u64 {
        delegate!(self, m => m.unpin(pfn, npages, dirty, skip_reserved))
    }
    fn is_reserved(&self, pfn: u64) -> bool {
        delegate!(self, m => m.is_reserved(pfn))
    }
    fn pinned_pages(&self) -> u64 {
        delegate!(self, m => m.pinned_pages())
    }
    fn flush(&mut self) {
        delegate!(self, m => m.flush())
    }
    fn set_kernel_profile(&mut self, profile: crate::KernelProfile) {
        delegate!(self, m => m.set_kernel_profile(profile))
    }
}

impl PageAudit for AnyMemory {
    fn pin_counts(&self) -> &PinCounts {
        delegate!(self, m => m.pin_counts())
    }
    fn reserved_pfn_ranges(&self) -> Vec<(u64, u64)> {
        delegate!(self, m => m.reserved_pfn_ranges())
    }
    fn violations(&self) -> Vec<String> {
        delegate!(self, m => m.violations())
    }
}

impl Memory for AnyMemory {
    fn mmap(&mut self, spec: &MmapSpec) -> Result<u64, MemError> {
        delegate!(self, m => Memory::mmap(m, spec))
    }
    fn munmap(&mut self, name: &str, range: Option<(u64, u64)>) -> Result<(), MemError> {
        delegate!(self, m => Memory::munmap(m, name, range))
    }
    fn region_vaddr(&self, name: &str) -> Option<u64> {
        delegate!(self, m => Memory::region_vaddr(m, name))
    }
    fn vaddr_to_phys(&self, vaddr: u64) -> Option<u64> {
        delegate!(self, m => Memory::vaddr_to_phys(m, vaddr))
    }
    fn folio_size(&self, vaddr: u64) -> Option<u64> {
        delegate!(self, m => Memory::folio_size(m, vaddr))
    }
    fn notes(&mut self) -> Vec<String> {
        delegate!(self, m => m.notes())
    }
}
