//! An IOTLB model: the cache of translations in front of a domain's page table.
//!
//! The IOTLB is one or more set-associative arrays. Each array caches leaves of the page sizes
//! its configuration names: one array per page size (as many IOMMUs keep separate 4K and
//! large-page arrays) or one array for all of them (unified). An entry caches one whole leaf, so
//! an array's reach is its entries × the leaf size it holds: a 64-entry array of 4K leaves
//! covers 256 KiB, the same array of 2M leaves 128 MiB. Replacement within a set is LRU.
//!
//! An optional first level (`IotlbConfig::micro`) sits in front of the arrays, as an SMMU
//! TBU's micro TLB sits in front of its main TLB (or of the TCU's macro TLB): a translation is
//! looked up there first, then in the arrays, and only then walked; a hit in the arrays or a
//! walk fills the first level too. Walks are the misses; the first level only moves hits
//! between levels, so the knee in misses sits at the arrays' reach.
//!
//! The presets ([`PRESETS`]) are the geometries public documents state for real parts, each
//! with its source; `plain` is the configurable model of no part.
//!
//! Invariants this module owns: a set never holds more than `ways` entries nor two entries for
//! the same leaf; an entry is in the set its own page size indexes (`(iova / size) % sets`);
//! `hits + misses + faults == accesses` and `main_hits <= hits`. Invalidation drops exactly the
//! entries whose leaf overlaps the range (inclusive `last`, as `IovaRange`), from every level.
//!
//! The model counts; it keeps no time. A miss is one page-table walk.

use crate::{IovaRange, Leaf};

/// One array of the IOTLB: which page sizes it caches and its geometry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArrayConfig {
    /// The page sizes this array caches (a bitmap, as a domain's `pgsize_bitmap`).
    pub pgsizes: u64,
    /// Entries in all (`sets × ways`).
    pub entries: usize,
    /// Associativity; `ways == entries` is fully associative.
    pub ways: usize,
}

impl ArrayConfig {
    /// Sets of the array (`entries / ways`).
    pub fn sets(&self) -> usize {
        self.entries / self.ways
    }
    /// The bytes the array can translate without a walk when every entry holds a leaf of
    /// `size` bytes.
    pub fn reach(&self, size: u64) -> u64 {
        self.entries as u64 * size
    }
    /// The reach a layout whose leaves have the sizes of the bitmap `leaf_sizes` gives this
    /// array: its entries × the largest of those sizes it caches (0 if it caches none).
    pub fn reach_for(&self, leaf_sizes: u64) -> u64 {
        let used = self.pgsizes & leaf_sizes;
        if used == 0 {
            0
        } else {
            self.reach(1u64 << (63 - used.leading_zeros()))
        }
    }
}

/// Why an IOTLB configuration is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// No arrays, or an array with no page size.
    #[error("an IOTLB needs at least one array, each caching at least one page size")]
    Empty,
    /// An array whose entries are not a non-zero multiple of its ways.
    #[error("an array of {entries} entries cannot be {ways}-way set-associative (entries must be a non-zero multiple of ways)")]
    Geometry {
        /// The array's entries.
        entries: usize,
        /// The array's ways.
        ways: usize,
    },
    /// Two arrays caching the same page size.
    #[error("page size {size:#x} is cached by two arrays")]
    Overlap {
        /// The size both arrays name.
        size: u64,
    },
}

/// The IOTLB's arrays. Build one with [`IotlbConfig::split`] or [`IotlbConfig::unified`] (and
/// [`IotlbConfig::with_micro`] for a first level), or list the arrays yourself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IotlbConfig {
    /// The arrays, each caching its own page sizes (no size in two arrays): the last level, the
    /// one whose miss is a walk.
    pub arrays: Vec<ArrayConfig>,
    /// A first level looked up before the arrays (a TBU's micro TLB), if any.
    pub micro: Option<ArrayConfig>,
}

impl IotlbConfig {
    /// One array per page size of `pgsizes`, each of `entries` entries and `ways` ways.
    pub fn split(pgsizes: u64, entries: usize, ways: usize) -> IotlbConfig {
        IotlbConfig {
            micro: None,
            arrays: (0..64)
                .filter(|s| pgsizes & (1u64 << s) != 0)
                .map(|s| ArrayConfig {
                    pgsizes: 1 << s,
                    entries,
                    ways,
                })
                .collect(),
        }
    }
    /// One array of `entries` entries and `ways` ways for every page size of `pgsizes`.
    pub fn unified(pgsizes: u64, entries: usize, ways: usize) -> IotlbConfig {
        IotlbConfig {
            micro: None,
            arrays: vec![ArrayConfig {
                pgsizes,
                entries,
                ways,
            }],
        }
    }
    /// The same arrays behind a first level of `entries` entries and `ways` ways caching every
    /// page size the arrays cache (a TBU's micro TLB in front of its main TLB).
    pub fn with_micro(mut self, entries: usize, ways: usize) -> IotlbConfig {
        self.micro = Some(ArrayConfig {
            pgsizes: self.arrays.iter().fold(0, |m, a| m | a.pgsizes),
            entries,
            ways,
        });
        self
    }
    /// The preset called `name` for a domain whose leaves may have the sizes of `pgsizes`.
    /// Each preset of [`PRESETS`] says where its figures come from.
    pub fn preset(name: &str, pgsizes: u64) -> Option<IotlbConfig> {
        Preset::named(name).map(|p| p.config(pgsizes))
    }
    /// The `plain` configuration (no real part's figures): a fully associative 64-entry array
    /// for each page size of `pgsizes`.
    pub fn plain(pgsizes: u64) -> IotlbConfig {
        IotlbConfig::split(pgsizes, 64, 64)
    }
    /// The reach the `plain` configuration gives a domain of page sizes `pgsizes` whose leaves
    /// have the sizes of `leaf_sizes`: 64 × each leaf size used (the one line `plan` and
    /// `inspect` print).
    pub fn plain_reach_bytes(pgsizes: u64, leaf_sizes: u64) -> u64 {
        IotlbConfig::plain(pgsizes).reach_bytes(leaf_sizes)
    }
    /// The reach a layout whose leaves have the sizes of the bitmap `leaf_sizes` gives: the
    /// sum of every array's [`ArrayConfig::reach_for`] (the first level, which only holds
    /// copies, adds nothing).
    pub fn reach_bytes(&self, leaf_sizes: u64) -> u64 {
        self.arrays.iter().map(|a| a.reach_for(leaf_sizes)).sum()
    }
    /// The first level's reach for the same layout (0 without a first level).
    pub fn micro_reach_bytes(&self, leaf_sizes: u64) -> u64 {
        self.micro.as_ref().map_or(0, |m| m.reach_for(leaf_sizes))
    }
    /// Checks the geometry: at least one array, entries a multiple of ways, no page size twice;
    /// the first level, if any, of a valid geometry too.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn geometry(a: &ArrayConfig) -> Result<(), ConfigError> {
            if a.pgsizes == 0 {
                return Err(ConfigError::Empty);
            }
            if a.ways == 0 || a.entries == 0 || !a.entries.is_multiple_of(a.ways) {
                return Err(ConfigError::Geometry {
                    entries: a.entries,
                    ways: a.ways,
                });
            }
            Ok(())
        }
        let mut seen = 0u64;
        if self.arrays.is_empty() {
            return Err(ConfigError::Empty);
        }
        for a in &self.arrays {
            geometry(a)?;
            if seen & a.pgsizes != 0 {
                let size = 1u64 << (seen & a.pgsizes).trailing_zeros();
                return Err(ConfigError::Overlap { size });
            }
            seen |= a.pgsizes;
        }
        if let Some(m) = &self.micro {
            geometry(m)?;
        }
        Ok(())
    }
}

/// A named IOTLB geometry: what part it describes, its levels, and where the figures come from.
///
/// Every level of a preset is one array for every page size (the parts below cache each
/// translation as one entry whatever its size). `micro_entries == 0` means one level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Preset {
    /// The name `type1 iotlb --preset` takes.
    pub name: &'static str,
    /// The part (and, for a configurable IP, which instance of which configuration).
    pub part: &'static str,
    /// Entries of the first level (a micro TLB), fully associative; 0: no first level.
    pub micro_entries: usize,
    /// Entries of the last level (the main or macro TLB).
    pub entries: usize,
    /// Ways of the last level (`== entries`: fully associative).
    pub ways: usize,
    /// One array per page size (`false`, the `plain` model) or one for all sizes (`true`).
    pub unified: bool,
    /// Where the figures come from: document, id, version and date, section, the words quoted.
    pub source: &'static str,
    /// What the model leaves out or assumes.
    pub simplified: &'static str,
}

/// Intel's Agilex 7 HPS Technical Reference Manual, the SMMU feature list quoted by the
/// `agilex7-*` presets.
const AGILEX7_SOURCE: &str = "Intel, \"Agilex 7 Hard Processor System Technical Reference \
     Manual\", ID 683567, version 23-1 (4/22/2024), section 2.2.4 \"System Memory Management \
     Unit\" (the same list in version 22-4, 2/14/2023): \"512-entry macro translation lookaside \
     buffer (TLB) page table entry cache in the TCU\"; \"128-entry micro TLB for table walk data \
     in the FPGA TBU and 32-entry micro TLB for all other distributed TBUs\". The SMMU is an Arm \
     CoreLink MMU-500 r2p4 (version 24-3, 1/31/2025, chapter 5, Table 45 \"SMMU IP \
     Description\"). \
     https://www.intel.com/content/www/us/en/docs/programmable/683567/23-1/system-memory-management-unit-stratix-10-fm.html";

/// What the `agilex7-*` presets assume beyond the figures.
const AGILEX7_SIMPLIFIED: &str = "the manual gives entry counts, not associativity or \
     replacement: both levels are modelled fully associative with LRU (so the knee sits exactly \
     at entries x page size); the macro TLB is the TCU's, shared by all five TBUs, and is given \
     whole to the one domain measured (a bound: other devices' traffic evicts nothing here); \
     stage 2 and walk caches are not modelled";

/// The presets. `plain` is the model of no particular part; every other one states a real
/// part's geometry and cites it (the tests hold each preset to the figures quoted here).
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "plain",
        part: "no particular part (the configurable model; --entries/--ways/--unified/\
               --micro-entries change it)",
        micro_entries: 0,
        entries: 64,
        ways: 64,
        unified: false,
        source: "no document: the 64-entry IOTLB of issue 17's acceptance (64 x 4K = 256 KiB, \
                 64 x 2M = 128 MiB)",
        simplified: "one fully associative 64-entry array per page size, LRU",
    },
    Preset {
        name: "agilex7-tbu",
        part: "Intel Agilex 7 HPS SMMU (Arm MMU-500): the DMA, EMAC, USB/NAND/SD/ETR or SDM \
               TBU, whose 32-entry micro TLB is backed by the TCU's 512-entry macro TLB",
        micro_entries: 32,
        entries: 512,
        ways: 512,
        unified: true,
        source: AGILEX7_SOURCE,
        simplified: AGILEX7_SIMPLIFIED,
    },
    Preset {
        name: "agilex7-fpga-tbu",
        part: "Intel Agilex 7 HPS SMMU (Arm MMU-500): the FPGA TBU, whose 128-entry micro TLB \
               is backed by the TCU's 512-entry macro TLB",
        micro_entries: 128,
        entries: 512,
        ways: 512,
        unified: true,
        source: AGILEX7_SOURCE,
        simplified: AGILEX7_SIMPLIFIED,
    },
];

impl Preset {
    /// The preset called `name`.
    pub fn named(name: &str) -> Option<&'static Preset> {
        PRESETS.iter().find(|p| p.name == name)
    }
    /// The names of every preset, comma-separated (for error messages).
    pub fn names() -> String {
        PRESETS
            .iter()
            .map(|p| p.name)
            .collect::<Vec<_>>()
            .join(", ")
    }
    /// The preset's IOTLB for a domain whose leaves may have the sizes of `pgsizes`.
    pub fn config(&self, pgsizes: u64) -> IotlbConfig {
        let last = if self.unified {
            IotlbConfig::unified(pgsizes, self.entries, self.ways)
        } else {
            IotlbConfig::split(pgsizes, self.entries, self.ways)
        };
        if self.micro_entries == 0 {
            last
        } else {
            last.with_micro(self.micro_entries, self.micro_entries)
        }
    }
    /// One line: the levels, e.g. `32-entry fully associative micro TLB, then 512-entry fully
    /// associative TLB for all page sizes`.
    pub fn geometry(&self) -> String {
        let assoc = if self.ways == self.entries {
            "fully associative".to_string()
        } else {
            format!("{}-way", self.ways)
        };
        let last = format!(
            "{}-entry {assoc} TLB {}",
            self.entries,
            if self.unified {
                "for all page sizes"
            } else {
                "per page size"
            }
        );
        if self.micro_entries == 0 {
            last
        } else {
            format!(
                "{}-entry fully associative micro TLB, then {last}",
                self.micro_entries
            )
        }
    }
}

/// What one access found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// The IOTLB held the translation: the physical address.
    Hit(u64),
    /// The IOTLB missed and the walk found a leaf: the physical address.
    Miss(u64),
    /// Nothing is mapped there (a DMA fault); nothing was cached.
    Fault,
}

/// IOTLB counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IotlbStats {
    /// Translations asked for.
    pub accesses: u64,
    /// Translations the IOTLB held (in either level).
    pub hits: u64,
    /// Of the hits, those the first level missed and the arrays held (0 without a first level).
    pub main_hits: u64,
    /// Translations that needed a walk and found a leaf.
    pub misses: u64,
    /// Translations whose walk found nothing.
    pub faults: u64,
    /// Entries dropped by invalidations.
    pub invalidated: u64,
}

impl IotlbStats {
    /// Misses (faults included: they walk too) per access; 0 without accesses.
    pub fn miss_rate(&self) -> f64 {
        if self.accesses == 0 {
            0.0
        } else {
            (self.misses + self.faults) as f64 / self.accesses as f64
        }
    }
}

/// One cached leaf.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    iova: u64,
    paddr: u64,
    size: u64,
}

impl Entry {
    fn last(&self) -> u64 {
        self.iova + (self.size - 1)
    }
}

/// One set-associative array. Each set keeps its entries most recently used first.
#[derive(Clone, Debug)]
struct Array {
    cfg: ArrayConfig,
    sets: Vec<Vec<Entry>>,
}

impl Array {
    fn new(cfg: ArrayConfig) -> Array {
        Array {
            sets: vec![Vec::with_capacity(cfg.ways); cfg.sets()],
            cfg,
        }
    }
    fn set_of(&self, iova: u64, size: u64) -> usize {
        ((iova / size) % self.sets.len() as u64) as usize
    }
    /// The entry translating `iova`, moved to the front of its set.
    fn lookup(&mut self, iova: u64) -> Option<Entry> {
        let mut bits = self.cfg.pgsizes;
        while bits != 0 {
            let size = 1u64 << bits.trailing_zeros();
            bits &= bits - 1;
            let tag = iova & !(size - 1);
            let set = self.set_of(iova, size);
            let ways = &mut self.sets[set];
            if let Some(i) = ways.iter().position(|e| e.size == size && e.iova == tag) {
                let e = ways.remove(i);
                ways.insert(0, e);
                return Some(e);
            }
        }
        None
    }
    /// Caches `e` as the most recently used of its set, evicting the least recently used.
    fn insert(&mut self, e: Entry) {
        let set = self.set_of(e.iova, e.size);
        let ways = &mut self.sets[set];
        if ways.len() == self.cfg.ways {
            ways.pop();
        }
        ways.insert(0, e);
    }
    /// Caches `e` if the array holds its size.
    fn fill(&mut self, e: Entry) {
        if self.cfg.pgsizes & e.size != 0 {
            self.insert(e);
        }
    }
    fn invalidate(&mut self, r: IovaRange) -> u64 {
        let mut dropped = 0;
        for ways in &mut self.sets {
            let before = ways.len();
            ways.retain(|e| e.last() < r.start() || e.iova > r.last());
            dropped += (before - ways.len()) as u64;
        }
        dropped
    }
    fn len(&self) -> usize {
        self.sets.iter().map(Vec::len).sum()
    }
}

/// An IOTLB: the arrays, the first level if any, and their counters.
#[derive(Clone, Debug)]
pub struct Iotlb {
    arrays: Vec<Array>,
    micro: Option<Array>,
    stats: IotlbStats,
}

impl Iotlb {
    /// An empty IOTLB of `cfg`'s arrays.
    pub fn new(cfg: &IotlbConfig) -> Result<Iotlb, ConfigError> {
        cfg.validate()?;
        Ok(Iotlb {
            arrays: cfg.arrays.iter().cloned().map(Array::new).collect(),
            micro: cfg.micro.clone().map(Array::new),
            stats: IotlbStats::default(),
        })
    }

    /// The configuration it was built from.
    pub fn config(&self) -> IotlbConfig {
        IotlbConfig {
            arrays: self.arrays.iter().map(|a| a.cfg.clone()).collect(),
            micro: self.micro.as_ref().map(|m| m.cfg.clone()),
        }
    }

    /// The counters.
    pub fn stats(&self) -> IotlbStats {
        self.stats
    }

    /// Zeroes the counters (the cached entries stay: a warmed-up IOTLB).
    pub fn reset_stats(&mut self) {
        self.stats = IotlbStats::default();
    }

    /// Entries cached now, in every level (a translation in both levels counts twice).
    pub fn len(&self) -> usize {
        self.arrays.iter().chain(&self.micro).map(Array::len).sum()
    }

    /// Entries cached now in the first level (0 without one).
    pub fn micro_len(&self) -> usize {
        self.micro.as_ref().map_or(0, Array::len)
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a translation of `iova` is cached (without touching LRU order or counters).
    pub fn holds(&self, iova: u64) -> bool {
        self.arrays.iter().chain(&self.micro).any(|a| {
            a.sets
                .iter()
                .flatten()
                .any(|e| e.iova <= iova && iova <= e.last())
        })
    }

    /// Translates `iova`: from a cached entry (the first level, then the arrays), else through
    /// `walk` (the page table), caching the leaf it returns in the array that holds its size (a
    /// size no array holds is not cached). A hit in the arrays and a walk also fill the first
    /// level.
    pub fn access(&mut self, iova: u64, walk: impl FnOnce(u64) -> Option<Leaf>) -> Access {
        self.stats.accesses += 1;
        if let Some(e) = self.micro.as_mut().and_then(|m| m.lookup(iova)) {
            self.stats.hits += 1;
            return Access::Hit(e.paddr + (iova - e.iova));
        }
        for a in &mut self.arrays {
            if let Some(e) = a.lookup(iova) {
                self.stats.hits += 1;
                if let Some(m) = self.micro.as_mut() {
                    self.stats.main_hits += 1;
                    m.fill(e);
                }
                return Access::Hit(e.paddr + (iova - e.iova));
            }
        }
        let Some(leaf) = walk(iova) else {
            self.stats.faults += 1;
            return Access::Fault;
        };
        self.stats.misses += 1;
        let e = Entry {
            iova: leaf.iova,
            paddr: leaf.paddr,
            size: leaf.size,
        };
        if let Some(a) = self.arrays.iter_mut().find(|a| a.cfg.pgsizes & e.size != 0) {
            a.insert(e);
        }
        if let Some(m) = self.micro.as_mut() {
            m.fill(e);
        }
        Access::Miss(leaf.paddr + (iova - leaf.iova))
    }

    /// Drops every entry whose leaf overlaps `r`, from every level; returns how many.
    pub fn invalidate(&mut self, r: IovaRange) -> u64 {
        let n = self
            .arrays
            .iter_mut()
            .chain(&mut self.micro)
            .map(|a| a.invalidate(r))
            .sum();
        self.stats.invalidated += n;
        n
    }

    /// The reach a layout gives: per array, its entries × the largest of `leaf_sizes` it
    /// caches (0 where it caches none of them). `leaf_sizes` is a bitmap of the sizes the
    /// layout's leaves have.
    pub fn reach(&self, leaf_sizes: u64) -> Vec<(ArrayConfig, u64)> {
        self.arrays
            .iter()
            .map(|a| (a.cfg.clone(), a.cfg.reach_for(leaf_sizes)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Prot, SZ_1G, SZ_2M, SZ_4K};

    /// A walker over an identity-mapped region of `size`-byte leaves from 0 to `end`.
    fn leaves_of(size: u64, end: u64) -> impl Fn(u64) -> Option<Leaf> {
        move |iova| {
            (iova < end).then(|| Leaf {
                iova: iova & !(size - 1),
                paddr: (iova & !(size - 1)) + SZ_1G,
                size,
                prot: Prot::RW,
            })
        }
    }

    fn tlb(cfg: IotlbConfig) -> Iotlb {
        Iotlb::new(&cfg).unwrap()
    }

    #[test]
    fn a_hit_translates_as_the_walk_did() {
        let mut t = tlb(IotlbConfig::split(SZ_4K | SZ_2M, 4, 4));
        let walk = leaves_of(SZ_2M, SZ_1G);
        assert_eq!(t.access(0x1234, &walk), Access::Miss(SZ_1G + 0x1234));
        assert_eq!(t.access(0x5678, &walk), Access::Hit(SZ_1G + 0x5678));
        assert_eq!(t.access(SZ_1G, &walk), Access::Fault);
        let s = t.stats();
        assert_eq!((s.accesses, s.hits, s.misses, s.faults), (3, 1, 1, 1));
        assert!(t.holds(SZ_2M - 1) && !t.holds(SZ_2M));
    }

    #[test]
    fn lru_evicts_the_least_recently_used() {
        // Fully associative, 2 entries.
        let mut t = tlb(IotlbConfig::split(SZ_4K, 2, 2));
        let walk = leaves_of(SZ_4K, SZ_1G);
        t.access(0, &walk); // [0]
        t.access(SZ_4K, &walk); // [1, 0]
        t.access(0, &walk); // hit: [0, 1]
        t.access(2 * SZ_4K, &walk); // evicts 1: [2, 0]
        assert!(t.holds(0) && t.holds(2 * SZ_4K) && !t.holds(SZ_4K));
        assert_eq!(t.stats().hits, 1);
        assert!(matches!(t.access(SZ_4K, &walk), Access::Miss(_))); // evicts 0
        assert!(!t.holds(0));
    }

    #[test]
    fn pages_of_one_set_conflict_while_other_sets_stay_empty() {
        // 8 entries, 2 ways: 4 sets. Pages 0, 4, 8 all index set 0.
        let mut t = tlb(IotlbConfig::split(SZ_4K, 8, 2));
        let walk = leaves_of(SZ_4K, SZ_1G);
        for _ in 0..10 {
            for p in [0, 4, 8] {
                t.access(p * SZ_4K, &walk);
            }
        }
        // Three pages cycling through two ways never hit, though 6 entries are free.
        assert_eq!(t.stats().hits, 0);
        assert_eq!(t.len(), 2);
        // Pages 0, 1, 2 fall into different sets and all stay.
        let mut t = tlb(IotlbConfig::split(SZ_4K, 8, 2));
        for _ in 0..10 {
            for p in [0, 1, 2] {
                t.access(p * SZ_4K, &walk);
            }
        }
        assert_eq!(t.stats().misses, 3);
    }

    /// The miss rate of `n` random accesses over `[0, window)` after a warm-up of as many.
    fn random_miss_rate(t: &mut Iotlb, size: u64, window: u64, n: u64) -> f64 {
        let walk = leaves_of(size, u64::MAX);
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % (window / 64)) * 64
        };
        for _ in 0..n {
            t.access(next(), &walk);
        }
        t.reset_stats();
        for _ in 0..n {
            t.access(next(), &walk);
        }
        t.stats().miss_rate()
    }

    #[test]
    fn the_knee_sits_at_entries_times_page_size() {
        for (size, knee) in [(SZ_4K, 256 << 10), (SZ_2M, 128 << 20)] {
            let cfg = IotlbConfig::split(SZ_4K | SZ_2M, 64, 64);
            let reach: u64 = tlb(cfg.clone()).reach(size).iter().map(|(_, r)| r).sum();
            assert_eq!(reach, knee);
            // Within the reach: after the warm-up every access hits.
            for window in [knee / 4, knee / 2, knee] {
                let rate = random_miss_rate(&mut tlb(cfg.clone()), size, window, 4000);
                assert_eq!(rate, 0.0, "{size:#x} leaves, window {window:#x}");
            }
            // Past it: misses, about 1 - reach / window.
            for (window, at_least) in [(2 * knee, 0.4), (4 * knee, 0.7)] {
                let rate = random_miss_rate(&mut tlb(cfg.clone()), size, window, 4000);
                assert!(
                    rate > at_least,
                    "{size:#x} leaves, window {window:#x}: {rate}"
                );
            }
        }
    }

    #[test]
    fn a_unified_array_shares_its_entries_among_sizes() {
        let mut t = tlb(IotlbConfig::unified(SZ_4K | SZ_2M, 2, 2));
        t.access(0, leaves_of(SZ_4K, SZ_1G));
        t.access(SZ_2M, leaves_of(SZ_2M, SZ_1G));
        t.access(2 * SZ_2M, leaves_of(SZ_2M, SZ_1G)); // evicts the 4K entry
        assert!(!t.holds(0) && t.holds(SZ_2M) && t.holds(2 * SZ_2M));
        assert_eq!(t.reach(SZ_4K | SZ_2M)[0].1, 2 * SZ_2M);
        assert_eq!(t.reach(SZ_4K)[0].1, 2 * SZ_4K);
        let split = IotlbConfig::split(SZ_4K | SZ_2M | SZ_1G, 64, 4);
        assert_eq!(split.reach_bytes(SZ_4K | SZ_2M), 64 * (SZ_4K + SZ_2M));
        assert_eq!(split.reach_bytes(0), 0);
    }

    #[test]
    fn invalidation_drops_exactly_the_entries_it_overlaps() {
        let mut t = tlb(IotlbConfig::split(SZ_4K, 16, 16));
        let walk = leaves_of(SZ_4K, SZ_1G);
        for p in 0..8 {
            t.access(p * SZ_4K, &walk);
        }
        // Pages 2..=4: one byte into page 2 through the first byte of page 4.
        let r = IovaRange::new(2 * SZ_4K + 1, 4 * SZ_4K).unwrap();
        assert_eq!(t.invalidate(r), 3);
        for p in 0..8 {
            assert_eq!(t.holds(p * SZ_4K), !(2..=4).contains(&p), "page {p}");
        }
        assert_eq!(t.stats().invalidated, 3);
    }

    #[test]
    fn a_first_level_takes_hits_and_the_arrays_take_its_misses() {
        // 2-entry first level in front of 8 entries, fully associative both.
        let mut t = tlb(IotlbConfig::split(SZ_4K, 8, 8).with_micro(2, 2));
        let walk = leaves_of(SZ_4K, SZ_1G);
        for p in 0..4 {
            assert!(matches!(t.access(p * SZ_4K, &walk), Access::Miss(_)));
        }
        // The first level holds pages 3 and 2; the arrays all four.
        assert_eq!((t.micro_len(), t.len()), (2, 6));
        assert_eq!(
            t.access(3 * SZ_4K + 8, &walk),
            Access::Hit(SZ_1G + 3 * SZ_4K + 8)
        );
        assert_eq!(t.stats().main_hits, 0);
        // Page 0 left the first level: the arrays hold it, no walk, and it refills the first level.
        assert_eq!(t.access(0, &walk), Access::Hit(SZ_1G));
        let s = t.stats();
        assert_eq!((s.accesses, s.hits, s.main_hits, s.misses), (6, 2, 1, 4));
        assert_eq!(t.access(0, &walk), Access::Hit(SZ_1G));
        assert_eq!(t.stats().main_hits, 1);
        // Invalidation empties both levels over its range.
        let r = IovaRange::new(0, SZ_4K - 1).unwrap();
        assert_eq!(t.invalidate(r), 2);
        assert!(!t.holds(0));
        assert_eq!(t.access(0, &walk), Access::Miss(SZ_1G));
    }

    #[test]
    fn a_first_level_geometry_is_checked_and_adds_no_reach() {
        let cfg = IotlbConfig::unified(SZ_4K | SZ_2M, 16, 4).with_micro(6, 4);
        assert_eq!(
            Iotlb::new(&cfg).unwrap_err(),
            ConfigError::Geometry {
                entries: 6,
                ways: 4
            }
        );
        let cfg = IotlbConfig::unified(SZ_4K | SZ_2M, 16, 4).with_micro(4, 4);
        assert_eq!(cfg.micro.as_ref().unwrap().pgsizes, SZ_4K | SZ_2M);
        assert_eq!(cfg.reach_bytes(SZ_2M), 16 * SZ_2M);
        assert_eq!(cfg.micro_reach_bytes(SZ_2M), 4 * SZ_2M);
        assert_eq!(IotlbConfig::plain(SZ_4K).micro_reach_bytes(SZ_4K), 0);
    }

    #[test]
    fn every_preset_is_valid_and_unknown_names_are_none() {
        for p in PRESETS {
            let cfg = IotlbConfig::preset(p.name, SZ_4K | SZ_2M | SZ_1G).unwrap();
            assert!(Iotlb::new(&cfg).is_ok(), "{}", p.name);
        }
        assert_eq!(IotlbConfig::preset("nonesuch", SZ_4K), None);
    }

    #[test]
    fn bad_geometries_are_refused() {
        let bad = |arrays| {
            Iotlb::new(&IotlbConfig {
                arrays,
                micro: None,
            })
            .unwrap_err()
        };
        assert_eq!(bad(vec![]), ConfigError::Empty);
        let a = |pgsizes, entries, ways| ArrayConfig {
            pgsizes,
            entries,
            ways,
        };
        assert_eq!(
            bad(vec![a(SZ_4K, 6, 4)]),
            ConfigError::Geometry {
                entries: 6,
                ways: 4
            }
        );
        assert_eq!(
            bad(vec![a(SZ_4K | SZ_2M, 8, 4), a(SZ_2M, 8, 4)]),
            ConfigError::Overlap { size: SZ_2M }
        );
    }
}
