//! Command-line value types shared by several subcommands: the memory to run on, the mapping
//! strategy, and sizes written as the trace language writes them (4K, 2M, 1G, 0x1000).

use clap::ValueEnum;
use type1::Strategy;

/// Memory to pin: the deterministic model or this process's real memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum MemoryArg {
    /// The deterministic model of a process's memory.
    Sim,
    /// This process's real memory (Linux; needs CAP_SYS_ADMIN to read pfns).
    Host,
}

/// How the engine pins and maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StrategyArg {
    /// One page per pin and per IOMMU map call (before 2013).
    PerPage,
    /// Physically contiguous runs, one IOMMU map call per run (the 2013 design).
    Contiguous,
    /// As contiguous, with one lookup and one charge per huge folio.
    Folio,
}

impl From<StrategyArg> for Strategy {
    fn from(s: StrategyArg) -> Strategy {
        match s {
            StrategyArg::PerPage => Strategy::PerPage,
            StrategyArg::Contiguous => Strategy::Contiguous,
            StrategyArg::Folio => Strategy::Folio,
        }
    }
}

/// A size as the trace language writes it (`4K`, `1G`, `0x1000`).
pub fn parse_size(s: &str) -> Result<u64, String> {
    crate::trace::parse_number(s)
}
