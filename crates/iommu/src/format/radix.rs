//! One radix page-table engine for every hardware format, driven by a small format description
//! ([`Desc`]): granule shift, bits per level, number of levels, which levels may hold leaves, and
//! the encodings of leaf and table descriptors. The formats themselves (`x86_64`, `arm64`) only
//! build a `Desc`.
//!
//! Table pages live in an arena (`tables`, one boxed entry array per page) with a free list. A
//! table page has a "physical address" `TABLE_BASE + index × granule`, and table descriptors hold
//! that address in the format's real encoding, so a dump of the tables reads as the hardware
//! would read it. Every table keeps a count of its live entries; a table that becomes empty is
//! freed (it is all zero by then, so it is reused without re-zeroing). The root is never freed.
//!
//! The hot paths do not allocate once the arena has grown (free-list reuse), use no hashing, and
//! make no per-leaf dynamic call: a `map_pages` call encodes its attributes once and then writes
//! consecutive leaves of one table page in a tight loop (`attrs | paddr`), re-walking only when
//! it crosses into the next table page; `phys_run` compares the addresses of the following
//! page-level entries of one table page in a loop of the same kind.
//!
//! The walk cache (`Walk`, one entry, like a hardware paging-structure cache): the last table
//! page below the root that a walk reached, its depth, and the IOVA bits above its span (`tag`).
//! A walk for an IOVA with the same tag starts there instead of at the root, so per-page map,
//! lookup and unmap at consecutive IOVAs do not re-descend; an unmap wholly inside one table page
//! below the root starts there (the cached one, or the one a walk for its start then caches) and
//! removes exactly what an unmap from the root would. Invariant: a cached table page is linked
//! into the tree at the position its tag names. A table is unlinked only when it is freed
//! (`release`), and a freed page's descendants were freed before it, so `release` forgetting the
//! cache keeps the invariant; linking new tables never moves an existing one. The cache changes
//! no result, only the cost of a walk.

use std::cell::Cell;

use crate::{
    leaf_hull, Error, FaultInjector, FaultPoint, IovaRange, Leaf, LeafRun, Mapped, PageTable, Prot,
    Pte,
};

/// The "physical address" of table page 0 of the arena: 16 TiB, above any memory the models
/// place (≥ 2^40), below every format's output-address limit (< 2^48), aligned to every granule.
pub(crate) const TABLE_BASE: u64 = 1 << 44;

/// The most levels any format has (x86_64 5-level).
const MAX_LEVELS: usize = 5;

/// A page-table format, as the engine needs it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Desc {
    /// log2 of the smallest page (and of a table page).
    pub granule_shift: u32,
    /// Index bits per level below the root (a table page holds `1 << bits_per_level` entries).
    pub bits_per_level: u32,
    /// Number of levels, root included.
    pub levels: u32,
    /// Input-address bits (the root resolves `ia_bits - shift(0)` of them).
    pub ia_bits: u32,
    /// Bit `d` set ⇒ a leaf may sit at depth `d` (depth 0 = root, `levels - 1` = page level).
    pub leaf_depths: u32,
    /// Format level number of the root; `descending` ⇒ level = `root_level - depth` (x86: 4 … 1),
    /// else `root_level + depth` (ARM: 0 … 3).
    pub root_level: u32,
    pub descending: bool,
    /// Output-address bits of a descriptor (both leaf and table).
    pub oa_mask: u64,
    /// Attribute bits of a table descriptor (everything but the address).
    pub table_attrs: u64,
    /// Above the page level, an entry is a leaf (block) iff `raw & block_mask == block_val`;
    /// at the page level every non-zero entry is a leaf.
    pub block_mask: u64,
    pub block_val: u64,
    /// The attribute bits of a leaf (everything but the address) for `prot`; `page` = the leaf
    /// sits at the page (last) level. Called once per `map_pages` call, never per leaf.
    pub leaf_attrs: fn(prot: Prot, page: bool) -> u64,
    /// READ/WRITE granted by a leaf descriptor.
    pub leaf_prot: fn(raw: u64) -> Prot,
    /// Whether the format can encode a leaf for `prot` (x86 cannot encode "no access").
    pub prot_ok: fn(prot: Prot) -> bool,
}

impl Desc {
    /// Address bits resolved below depth `d`: the size a leaf at depth `d` maps.
    #[inline]
    pub fn shift(&self, d: usize) -> u32 {
        self.granule_shift + self.bits_per_level * (self.levels - 1 - d as u32)
    }
    #[inline]
    fn entries(&self) -> usize {
        1 << self.bits_per_level
    }
    #[inline]
    fn index(&self, iova: u64, d: usize) -> usize {
        ((iova >> self.shift(d)) as usize) & (self.entries() - 1)
    }
    /// The last translatable IOVA.
    pub fn max_iova(&self) -> u64 {
        if self.ia_bits >= 64 {
            u64::MAX
        } else {
            (1u64 << self.ia_bits) - 1
        }
    }
    /// The last encodable physical address.
    pub fn max_paddr(&self) -> u64 {
        self.oa_mask | ((1u64 << self.granule_shift) - 1)
    }
    /// The format's level number of depth `d`.
    pub fn level(&self, d: usize) -> u32 {
        if self.descending {
            self.root_level - d as u32
        } else {
            self.root_level + d as u32
        }
    }
    /// Every leaf size the format can encode.
    pub fn pgsizes(&self) -> u64 {
        (0..self.levels as usize)
            .filter(|&d| self.leaf_depths & (1 << d) != 0)
            .fold(0, |m, d| m | 1u64 << self.shift(d))
    }
    #[inline]
    fn is_leaf(&self, raw: u64, d: usize) -> bool {
        d + 1 == self.levels as usize
            || (self.leaf_depths & (1 << d) != 0 && raw & self.block_mask == self.block_val)
    }
}

/// The walk cache's one entry: table page `t` at depth `d` (≥ 1; 0 = empty) holds the entries of
/// every IOVA whose bits above the table's span equal `tag` (`iova >> shift(d - 1)`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Walk {
    tag: u64,
    d: u8,
    t: u32,
}

impl Walk {
    const EMPTY: Walk = Walk { tag: 0, d: 0, t: 0 };
}

/// A radix table of one format.
#[derive(Debug)]
pub(crate) struct RadixTable {
    desc: Desc,
    /// Table pages; index 0 is the root.
    tables: Vec<Box<[u64]>>,
    /// Live (non-zero) entries of each table page.
    live: Vec<u32>,
    /// Free table pages (all zero).
    free: Vec<u32>,
    /// Table pages in use, the root included.
    pages: u64,
    counts: [u64; 64],
    /// Depth of a leaf of size `1 << s`, or `u8::MAX` where the format has no such leaf.
    depth_of_shift: [u8; 64],
    /// The walk cache (module doc); a `Cell` so that lookups through `&self` keep it warm.
    cache: Cell<Walk>,
}

impl RadixTable {
    pub(crate) fn new(desc: Desc) -> Self {
        assert!(desc.levels as usize <= MAX_LEVELS && desc.levels >= 1);
        let mut depth_of_shift = [u8::MAX; 64];
        for d in 0..desc.levels as usize {
            if desc.leaf_depths & (1 << d) != 0 {
                depth_of_shift[desc.shift(d) as usize] = d as u8;
            }
        }
        RadixTable {
            desc,
            tables: vec![vec![0u64; desc.entries()].into_boxed_slice()],
            live: vec![0],
            free: Vec::new(),
            pages: 1,
            counts: [0; 64],
            depth_of_shift,
            cache: Cell::new(Walk::EMPTY),
        }
    }

    /// The walk cache's tag of `iova` for a table page at depth `d` ≥ 1: the IOVA bits above the
    /// span of that table page.
    #[inline]
    fn tag(&self, iova: u64, d: usize) -> u64 {
        iova >> self.desc.shift(d - 1)
    }

    /// Where a walk for `iova` that must not go below depth `max_d` may start: the cached table
    /// page when its tag matches and it is no deeper than `max_d`, else the root. `(depth, table)`.
    #[inline]
    fn walk_start(&self, iova: u64, max_d: usize) -> (usize, u32) {
        let w = self.cache.get();
        let d = w.d as usize;
        if d != 0 && d <= max_d && self.tag(iova, d) == w.tag {
            (d, w.t)
        } else {
            (0, 0)
        }
    }

    /// Remember that table page `t` at depth `d` holds the entry of `iova` (the root is not
    /// cached: a walk starts there anyway).
    #[inline]
    fn remember(&self, iova: u64, d: usize, t: u32) {
        if d != 0 {
            self.cache.set(Walk {
                tag: self.tag(iova, d),
                d: d as u8,
                t,
            });
        }
    }

    /// Unmap `[lo, hi]` starting at the table page that holds all of it, when the walk cache
    /// knows one: the cached table page, or the one a walk for `lo` stops in (then cached, so
    /// that the unmaps that follow start there). Removes what `unmap_in` from the root would,
    /// then frees that table page if it became empty, with its empty ancestors. `None`
    /// (nothing done) where no cached table page below the root holds both ends.
    #[inline]
    fn unmap_local(&mut self, lo: u64, hi: u64) -> Option<u64> {
        if let Some(removed) = self.unmap_cached(lo, hi) {
            return Some(removed);
        }
        self.find_in(lo);
        self.unmap_cached(lo, hi)
    }

    /// `unmap_local` with the cache as it is.
    #[inline]
    fn unmap_cached(&mut self, lo: u64, hi: u64) -> Option<u64> {
        let w = self.cache.get();
        let d = w.d as usize;
        if d == 0 || self.tag(lo, d) != w.tag || self.tag(hi, d) != w.tag {
            return None;
        }
        // The table page's span starts at its tag's bits.
        let tbase = w.tag << self.desc.shift(d - 1);
        let removed = self.unmap_in(w.t, d, tbase, lo, hi);
        if self.live[w.t as usize] == 0 {
            self.prune(lo, d);
        }
        Some(removed)
    }

    /// Whether the cached table page is the page-level one holding all of `[lo, hi]`, whose
    /// ends are aligned to the granule: every leaf such an unmap removes lies inside the range.
    #[inline]
    fn in_cached_page_table(&self, lo: u64, hi: u64) -> bool {
        let pd = self.desc.levels as usize - 1;
        let w = self.cache.get();
        let granule_mask = (1u64 << self.desc.granule_shift) - 1;
        pd != 0
            && w.d as usize == pd
            && (lo | hi.wrapping_add(1)) & granule_mask == 0
            && self.tag(lo, pd) == w.tag
            && self.tag(hi, pd) == w.tag
    }

    /// The "physical address" of table page `t`.
    #[inline]
    fn table_addr(&self, t: u32) -> u64 {
        TABLE_BASE + ((t as u64) << self.desc.granule_shift)
    }

    /// The table page a table descriptor points to.
    #[inline]
    fn table_of(&self, raw: u64) -> u32 {
        ((raw & self.desc.oa_mask).wrapping_sub(TABLE_BASE) >> self.desc.granule_shift) as u32
    }

    /// A zeroed table page, from the free list or the heap; `None` when fault injection says so.
    fn alloc(&mut self, faults: Option<&FaultInjector>) -> Option<u32> {
        if faults.is_some_and(|f| f.hit(FaultPoint::TableAlloc)) {
            return None;
        }
        self.pages += 1;
        if let Some(t) = self.free.pop() {
            debug_assert!(self.tables[t as usize].iter().all(|&e| e == 0));
            return Some(t);
        }
        let t = self.tables.len() as u32;
        self.tables
            .push(vec![0u64; self.desc.entries()].into_boxed_slice());
        self.live.push(0);
        Some(t)
    }

    fn release(&mut self, t: u32) {
        debug_assert!(t != 0 && self.live[t as usize] == 0);
        // The freed page leaves the tree: the cache must not lead a walk into it (module doc).
        self.cache.set(Walk::EMPTY);
        self.pages -= 1;
        self.free.push(t);
    }

    /// Walk (from the cached table page or the root) to the table page at depth `leaf_d` that
    /// holds the entry for `iova`, allocating missing tables. On failure every table this walk
    /// allocated is freed again.
    fn walk_alloc(
        &mut self,
        iova: u64,
        leaf_d: usize,
        faults: Option<&FaultInjector>,
    ) -> Result<u32, Error> {
        let (d0, mut t) = self.walk_start(iova, leaf_d);
        // (parent table, index in it) of each table this walk allocated.
        let mut made: [(u32, usize); MAX_LEVELS] = [(0, 0); MAX_LEVELS];
        let mut n_made = 0;
        for d in d0..leaf_d {
            let i = self.desc.index(iova, d);
            let e = self.tables[t as usize][i];
            if e == 0 {
                let Some(c) = self.alloc(faults) else {
                    self.unwind(&made[..n_made]);
                    return Err(Error::NoMemory);
                };
                self.tables[t as usize][i] = self.table_addr(c) | self.desc.table_attrs;
                self.live[t as usize] += 1;
                made[n_made] = (t, i);
                n_made += 1;
                t = c;
            } else if self.desc.is_leaf(e, d) {
                // A larger leaf covers this IOVA (no tables were made: we came through tables).
                debug_assert_eq!(n_made, 0);
                return Err(Error::Exists { iova });
            } else {
                t = self.table_of(e);
            }
        }
        self.remember(iova, leaf_d, t);
        Ok(t)
    }

    /// Free a chain of freshly allocated (empty) tables, deepest first.
    fn unwind(&mut self, made: &[(u32, usize)]) {
        for &(p, i) in made.iter().rev() {
            let c = self.table_of(self.tables[p as usize][i]);
            if self.live[c as usize] != 0 {
                break;
            }
            self.tables[p as usize][i] = 0;
            self.live[p as usize] -= 1;
            self.release(c);
        }
    }

    /// Free the tables on the path to `iova` (down to depth `leaf_d`) that are empty.
    fn prune(&mut self, iova: u64, leaf_d: usize) {
        let mut path: [(u32, usize); MAX_LEVELS] = [(0, 0); MAX_LEVELS];
        let mut t = 0u32;
        let mut n = 0;
        for d in 0..leaf_d {
            let i = self.desc.index(iova, d);
            let e = self.tables[t as usize][i];
            if e == 0 || self.desc.is_leaf(e, d) {
                break;
            }
            path[n] = (t, i);
            n += 1;
            t = self.table_of(e);
        }
        self.unwind(&path[..n]);
    }

    /// The entry holding `iova`: (depth, raw), if a leaf covers it.
    fn find(&self, iova: u64) -> Option<(usize, u64)> {
        self.find_in(iova).map(|(d, raw, _)| (d, raw))
    }

    /// As `find`, with the index of the table page holding the entry. Starts at the cached table
    /// page when it covers `iova`, and caches the table page where it stops.
    fn find_in(&self, iova: u64) -> Option<(usize, u64, usize)> {
        if iova > self.desc.max_iova() {
            return None;
        }
        let levels = self.desc.levels as usize;
        let (mut d, t) = self.walk_start(iova, levels - 1);
        let mut t = t as usize;
        while d < levels {
            let e = self.tables[t][self.desc.index(iova, d)];
            if e == 0 {
                self.remember(iova, d, t as u32);
                return None;
            }
            if self.desc.is_leaf(e, d) {
                self.remember(iova, d, t as u32);
                return Some((d, e, t));
            }
            t = self.table_of(e) as usize;
            d += 1;
        }
        None
    }

    /// The leaf entry `raw` at depth `d` holding `iova`: its first IOVA, physical address and
    /// size (`leaf_at` without decoding the permissions).
    #[inline]
    fn leaf_span(&self, d: usize, raw: u64, iova: u64) -> (u64, u64, u64) {
        let size = 1u64 << self.desc.shift(d);
        (
            iova & !(size - 1),
            raw & self.desc.oa_mask & !(size - 1),
            size,
        )
    }

    fn leaf_at(&self, d: usize, raw: u64, iova: u64) -> Leaf {
        let size = 1u64 << self.desc.shift(d);
        Leaf {
            iova: iova & !(size - 1),
            paddr: raw & self.desc.oa_mask & !(size - 1),
            size,
            prot: (self.desc.leaf_prot)(raw),
        }
    }

    /// Clear the entries of page-level table `t` for `[lo, hi]` (both inside its span): every
    /// non-zero entry there is a leaf. Returns the bytes removed; the table is not freed here.
    fn clear_pages(&mut self, t: u32, lo: u64, hi: u64) -> u64 {
        let d = self.desc.levels as usize - 1;
        let shift = self.desc.shift(d);
        let (a, b) = (self.desc.index(lo, d), self.desc.index(hi, d));
        let tu = t as usize;
        let slots = &mut self.tables[tu][a..=b];
        let n = slots.iter().filter(|&&e| e != 0).count() as u32;
        slots.fill(0);
        self.live[tu] -= n;
        self.counts[shift as usize] -= n as u64;
        (n as u64) << shift
    }

    /// Remove the leaves of table `t` (depth `d`, its span starting at `tbase`) intersecting
    /// `[lo, hi]`, both inside that span; returns the bytes removed.
    fn unmap_in(&mut self, t: u32, d: usize, tbase: u64, lo: u64, hi: u64) -> u64 {
        if d + 1 == self.desc.levels as usize {
            return self.clear_pages(t, lo, hi);
        }
        let shift = self.desc.shift(d);
        let (a, b) = (self.desc.index(lo, d), self.desc.index(hi, d));
        let tu = t as usize;
        let mut removed = 0;
        let span_mask = (1u64 << shift) - 1;
        for i in a..=b {
            let e = self.tables[tu][i];
            if e == 0 {
                continue; // a hole: on to the next boundary of this level
            }
            if self.desc.is_leaf(e, d) {
                self.tables[tu][i] = 0;
                self.live[tu] -= 1;
                self.counts[shift as usize] -= 1;
                removed += 1u64 << shift;
                continue;
            }
            // The span of entry i is [base, base + span_mask] (below max_iova: no overflow).
            let base = tbase | ((i as u64) << shift);
            let (clo, chi) = (lo.max(base), hi.min(base + span_mask));
            let c = self.table_of(e);
            removed += self.unmap_in(c, d + 1, base, clo, chi);
            if self.live[c as usize] == 0 {
                self.tables[tu][i] = 0;
                self.live[tu] -= 1;
                self.release(c);
            }
        }
        removed
    }

    fn each_in(&self, t: usize, d: usize, base: u64, f: &mut dyn FnMut(Leaf)) {
        let shift = self.desc.shift(d);
        for (i, &e) in self.tables[t].iter().enumerate() {
            if e == 0 {
                continue;
            }
            let iova = base | ((i as u64) << shift);
            if self.desc.is_leaf(e, d) {
                f(self.leaf_at(d, e, iova));
            } else {
                self.each_in(self.table_of(e) as usize, d + 1, iova, f);
            }
        }
    }
}

/// How many leading entries of `slots` are zero.
#[inline]
fn free_prefix(slots: &[u64]) -> usize {
    let mut chunks = slots.chunks_exact(8);
    let mut n = 0;
    for c in &mut chunks {
        if c.iter().fold(0, |a, &e| a | e) != 0 {
            return n + c.iter().position(|&e| e != 0).unwrap_or(0);
        }
        n += 8;
    }
    n + chunks
        .remainder()
        .iter()
        .position(|&e| e != 0)
        .unwrap_or(chunks.remainder().len())
}

impl PageTable for RadixTable {
    fn map_pages(&mut self, run: LeafRun, faults: Option<&FaultInjector>) -> Mapped {
        let LeafRun {
            iova,
            paddr,
            pgsize,
            count,
            prot,
        } = run;
        let shift = pgsize.trailing_zeros();
        let leaf_d = if pgsize.is_power_of_two() {
            self.depth_of_shift[shift as usize]
        } else {
            u8::MAX
        };
        if leaf_d == u8::MAX || count == 0 {
            let supported = self.desc.pgsizes();
            return (
                0,
                Err(Error::BadPgsizes {
                    format: "radix".into(),
                    requested: pgsize,
                    supported,
                }),
            );
        }
        if !(self.desc.prot_ok)(prot) {
            return (0, Err(Error::BadProt { prot }));
        }
        let leaf_d = leaf_d as usize;
        // Both ends must be encodable: the IOVA within the input-address bits, the physical
        // address within the output-address bits.
        let size = count.saturating_mul(pgsize);
        let max_iova = self.desc.max_iova();
        if count
            .checked_mul(pgsize)
            .and_then(|b| iova.checked_add(b - 1))
            .is_none_or(|e| e > max_iova)
        {
            return (
                0,
                Err(Error::OutOfAperture {
                    iova,
                    size,
                    start: 0,
                    end: max_iova,
                }),
            );
        }
        let max_pa = self.desc.max_paddr();
        if paddr.checked_add(size - 1).is_none_or(|e| e > max_pa) {
            return (
                0,
                Err(Error::PaddrOutOfRange {
                    paddr,
                    size,
                    max: max_pa,
                }),
            );
        }
        debug_assert!((iova | paddr) & (pgsize - 1) == 0);
        let attrs = (self.desc.leaf_attrs)(prot, leaf_d + 1 == self.desc.levels as usize);
        let entries = self.desc.entries();
        let mut done = 0u64;
        let mut left = count;
        let (mut iova, mut pa) = (iova, paddr);
        while left != 0 {
            let t = match self.walk_alloc(iova, leaf_d, faults) {
                Ok(t) => t,
                Err(e) => return (done, Err(e)),
            };
            let i = self.desc.index(iova, leaf_d);
            let n = (entries - i).min(usize::try_from(left).unwrap_or(usize::MAX));
            // The fast path: n consecutive leaves of one table page. Find how many slots are free
            // (an OR over chunks of 8, which vectorises), then fill them (also vectorised).
            let slots = &mut self.tables[t as usize][i..i + n];
            let written = free_prefix(slots);
            let clash = written < n;
            for (j, e) in slots[..written].iter_mut().enumerate() {
                *e = attrs | pa.wrapping_add((j as u64) << shift);
            }
            self.live[t as usize] += written as u32;
            self.counts[shift as usize] += written as u64;
            let bytes = (written as u64) << shift;
            done += bytes;
            if clash {
                let at = iova + bytes;
                if written == 0 {
                    // Nothing went into this table page: if the walk made it, free it again.
                    self.prune(at, leaf_d);
                }
                return (done, Err(Error::Exists { iova: at }));
            }
            left -= written as u64;
            iova = iova.wrapping_add(bytes);
            pa = pa.wrapping_add(bytes);
        }
        (done, Ok(()))
    }

    fn unmap_range(&mut self, range: IovaRange) -> u64 {
        let max = self.desc.max_iova();
        if range.start() > max {
            return 0;
        }
        let (lo, hi) = (range.start(), range.last().min(max));
        match self.unmap_local(lo, hi) {
            Some(removed) => removed,
            None => self.unmap_in(0, 0, 0, lo, hi),
        }
    }

    /// Inside the cached page-level table page the span is `range` itself (page-level leaves lie
    /// inside a range aligned to the granule); elsewhere, as the default (its two lookups start
    /// at the cached table page when it holds them).
    fn unmap_range_span(&mut self, range: IovaRange) -> (u64, IovaRange) {
        let max = self.desc.max_iova();
        if range.start() > max {
            return (0, range);
        }
        let (lo, hi) = (range.start(), range.last().min(max));
        let span = if self.in_cached_page_table(lo, hi) {
            range
        } else {
            leaf_hull(self, range)
        };
        (self.unmap_range(range), span)
    }

    /// One walk from the root, then the following entries of the same table page are read in
    /// place; a new walk only where the run crosses into another table page.
    fn phys_run(&self, iova: u64, max: u64) -> Option<(u64, u64)> {
        let (d, raw, t) = self.find_in(iova)?;
        let (lstart, lpa, lsize) = self.leaf_span(d, raw, iova);
        let phys = lpa + (iova - lstart);
        let mut len = (lsize - (iova - lstart)).min(max);
        let (mut cd, mut ct, mut idx) = (d, t, self.desc.index(iova, d));
        let page_d = self.desc.levels as usize - 1;
        let entries = self.desc.entries();
        while len < max {
            // `iova + max` does not pass 2^64 (the caller's range exists), so neither does this.
            let at = iova + len;
            let next = idx + 1;
            if cd == page_d && next < entries && self.desc.index(at, cd) == next {
                // Page level, same table page: compare the following entries' addresses in a
                // tight loop (every non-zero entry there is a leaf of one granule).
                let g_shift = self.desc.granule_shift;
                let want = (max - len).div_ceil(1 << g_shift);
                let upto = usize::try_from(want).map_or(entries, |w| entries.min(next + w));
                let slots = &self.tables[ct][next..upto];
                let mut expect = phys + len;
                let mut k = 0;
                for &e in slots {
                    if e == 0 || e & self.desc.oa_mask != expect {
                        break;
                    }
                    expect += 1 << g_shift;
                    k += 1;
                }
                len += ((k as u64) << g_shift).min(max - len);
                if k < slots.len() {
                    break; // a hole or a physical jump
                }
                idx = next + k - 1;
                continue;
            }
            let in_place = next < self.tables[ct].len()
                && self.desc.index(at, cd) == next
                && self.tables[ct][next] != 0
                && self.desc.is_leaf(self.tables[ct][next], cd);
            let (nd, nraw, nt) = if in_place {
                (cd, self.tables[ct][next], ct)
            } else {
                match self.find_in(at) {
                    Some(x) => x,
                    None => break,
                }
            };
            let (nstart, npa, nsize) = self.leaf_span(nd, nraw, at);
            if npa + (at - nstart) != phys + len {
                break;
            }
            len += (nsize - (at - nstart)).min(max - len);
            (cd, ct, idx) = (nd, nt, self.desc.index(at, nd));
        }
        Some((phys, len))
    }

    fn translate(&self, iova: u64) -> Option<Leaf> {
        self.find(iova).map(|(d, raw)| self.leaf_at(d, raw, iova))
    }

    fn leaf_pte(&self, iova: u64) -> Option<Pte> {
        self.find(iova).map(|(d, raw)| Pte {
            level: self.desc.level(d),
            raw,
        })
    }

    fn walk(&self, iova: u64) -> Vec<Pte> {
        let mut out = Vec::new();
        if iova > self.desc.max_iova() {
            return out;
        }
        let mut t = 0usize;
        for d in 0..self.desc.levels as usize {
            let raw = self.tables[t][self.desc.index(iova, d)];
            out.push(Pte {
                level: self.desc.level(d),
                raw,
            });
            if raw == 0 || self.desc.is_leaf(raw, d) {
                break;
            }
            t = self.table_of(raw) as usize;
        }
        out
    }

    fn for_each_leaf(&self, f: &mut dyn FnMut(Leaf)) {
        self.each_in(0, 0, 0, f);
    }

    fn table_pages(&self) -> u64 {
        self.pages
    }

    fn leaf_counts(&self) -> &[u64; 64] {
        &self.counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::x86_64;

    const K4: u64 = 1 << 12;
    const M2: u64 = 1 << 21;
    /// A 2M-aligned IOVA at 1 GiB and a frame far from it.
    const A: u64 = 1 << 30;
    const PA: u64 = 1 << 33;

    fn table() -> RadixTable {
        RadixTable::new(x86_64::desc(4))
    }

    fn map(t: &mut RadixTable, iova: u64, paddr: u64, pgsize: u64, count: u64) {
        let run = LeafRun {
            iova,
            paddr,
            pgsize,
            count,
            prot: Prot::RW,
        };
        assert_eq!(t.map_pages(run, None), (count * pgsize, Ok(())));
    }

    fn range(start: u64, size: u64) -> IovaRange {
        IovaRange::from_start_size(start, size).unwrap()
    }

    fn phys(t: &RadixTable, iova: u64) -> Option<u64> {
        t.translate(iova).map(|l| l.paddr + (iova - l.iova))
    }

    #[test]
    fn walks_at_following_iovas_start_at_the_cached_table() {
        let mut t = table();
        map(&mut t, A, PA, K4, 1);
        let w = t.cache.get();
        assert_eq!(
            (w.d, w.tag),
            (3, A >> 21),
            "the page-level table of A is cached"
        );
        map(&mut t, A + K4, PA + 5 * K4, K4, 1);
        assert_eq!(
            t.cache.get(),
            w,
            "the next page's walk ended in the same table"
        );
        assert_eq!(phys(&t, A), Some(PA));
        assert_eq!(phys(&t, A + K4 + 12), Some(PA + 5 * K4 + 12));
        assert_eq!(phys(&t, A + 2 * K4), None, "a hole in the cached table");
        assert_eq!(t.cache.get(), w);
        // A 2M leaf: the cached table is deeper than the leaf, so that walk starts at the root.
        map(&mut t, A + M2, PA + M2, M2, 1);
        assert_eq!(t.cache.get().d, 2);
        assert_eq!(phys(&t, A + M2 + 3 * K4), Some(PA + M2 + 3 * K4));
        assert_eq!(t.translate(A + M2).map(|l| l.size), Some(M2));
        // Back in the first 2M: the walk from the depth-2 table reaches the page table again.
        assert_eq!(phys(&t, A + K4), Some(PA + 5 * K4));
        assert_eq!(t.cache.get(), w);
        assert_eq!(t.table_pages(), 4);
    }

    #[test]
    fn freeing_the_cached_table_forgets_it_and_a_remap_translates_right() {
        let mut t = table();
        map(&mut t, A + 5 * K4, PA, K4, 1);
        let cached = t.cache.get();
        assert_eq!(cached.d, 3);
        assert_eq!(t.table_pages(), 4);
        // The unmap empties the cached table: it is freed with its empty ancestors.
        assert_eq!(
            t.unmap_range_span(range(A + 5 * K4, K4)),
            (K4, range(A + 5 * K4, K4))
        );
        assert_eq!(t.table_pages(), 1);
        assert_eq!(t.cache.get(), Walk::EMPTY, "a freed table is not cached");
        // Another GiB: the freed pages come back from the free list, the page-level one as the
        // page-level table again (same arena index), now holding B's entries.
        let b = 2 * A + 5 * K4;
        map(&mut t, b, PA + M2, K4, 1);
        assert_eq!(t.cache.get().t, cached.t, "the freed table page is reused");
        assert_eq!(phys(&t, b), Some(PA + M2));
        assert_eq!(
            phys(&t, A + 5 * K4),
            None,
            "A is not translated through B's table"
        );
        assert_eq!(t.leaf_pte(A + 5 * K4), None);
        // Were the entry still there, a walk for A would read B's leaf: what `release` prevents.
        t.cache.set(cached);
        assert_eq!(phys(&t, A + 5 * K4), Some(PA + M2));
    }

    #[test]
    fn unmaps_inside_the_cached_table_clear_in_place_then_free_it() {
        let mut t = table();
        map(&mut t, A, PA, K4, 512);
        map(&mut t, A + M2, PA + 2 * M2, K4, 1);
        assert_eq!(t.table_pages(), 5);
        for i in 0..512 {
            let at = A + i * K4;
            assert_eq!(
                t.phys_run(at, 512 * K4),
                Some((PA + i * K4, (512 - i) * K4))
            );
            assert_eq!(t.unmap_range_span(range(at, K4)), (K4, range(at, K4)));
            assert_eq!(phys(&t, at), None);
            if i < 511 {
                assert_eq!(phys(&t, at + K4), Some(PA + (i + 1) * K4));
            }
        }
        assert_eq!(
            t.table_pages(),
            4,
            "the emptied page table is freed, the other stays"
        );
        assert_eq!(t.leaf_counts()[12], 1);
        assert_eq!(phys(&t, A + M2), Some(PA + 2 * M2));
        // Nothing left where the freed table was: nothing removed, the span is the range asked.
        assert_eq!(t.unmap_range_span(range(A, K4)), (0, range(A, K4)));
        assert_eq!(t.table_pages(), 4);
    }

    #[test]
    fn phys_runs_scan_page_tables_in_place_and_stop_where_memory_jumps() {
        let mut t = table();
        map(&mut t, A, PA, K4, 600);
        map(&mut t, A + 600 * K4, PA + 10 * M2, K4, 1);
        assert_eq!(
            t.phys_run(A, 1 << 30),
            Some((PA, 600 * K4)),
            "across a table page"
        );
        assert_eq!(t.phys_run(A + 5 * K4, 3 * K4), Some((PA + 5 * K4, 3 * K4)));
        assert_eq!(
            t.phys_run(A + 510 * K4, 4 * K4),
            Some((PA + 510 * K4, 4 * K4))
        );
        assert_eq!(t.phys_run(A + 599 * K4, 1 << 30), Some((PA + 599 * K4, K4)));
        assert_eq!(
            t.phys_run(A + 600 * K4, 8 * K4),
            Some((PA + 10 * M2, K4)),
            "stops at the hole after it"
        );
        assert_eq!(t.phys_run(A + 601 * K4, K4), None);
    }

    #[test]
    fn an_unmap_in_an_uncached_page_table_walks_once_then_caches_it() {
        let mut t = table();
        map(&mut t, A, PA, K4, 4);
        map(&mut t, A + M2, PA + M2, K4, 1);
        assert_eq!(
            t.cache.get().tag,
            (A + M2) >> 21,
            "the last map's table is cached"
        );
        assert_eq!(
            t.unmap_range_span(range(A + K4, K4)),
            (K4, range(A + K4, K4))
        );
        let w = t.cache.get();
        assert_eq!(
            (w.d, w.tag),
            (3, A >> 21),
            "the walk to A's page table cached it"
        );
        assert_eq!(t.unmap_range(range(A + 2 * K4, K4)), K4);
        assert_eq!(phys(&t, A), Some(PA));
        assert_eq!(phys(&t, A + 3 * K4), Some(PA + 3 * K4));
        assert_eq!(t.unmap_range(range(A, 4 * K4)), 2 * K4);
        assert_eq!(t.table_pages(), 4, "A's page table is freed");
        assert_eq!(t.cache.get(), Walk::EMPTY);
        assert_eq!(phys(&t, A + M2), Some(PA + M2));
    }

    #[test]
    fn unmaps_start_at_a_cached_table_above_the_page_level() {
        let mut t = table();
        map(&mut t, A, PA, K4, 2);
        map(&mut t, A + M2, PA + M2, M2, 2);
        assert_eq!(t.translate(A + M2).map(|l| l.size), Some(M2));
        assert_eq!(
            t.cache.get().d,
            2,
            "the walk to a 2M leaf stops in the depth-2 table"
        );
        // A 4K unmap inside a 2M leaf removes the leaf whole; the span covers it.
        assert_eq!(
            t.unmap_range_span(range(A + M2 + K4, K4)),
            (M2, range(A + M2, M2))
        );
        assert_eq!(t.cache.get().d, 2);
        // From A's second page through the other 2M leaf: one depth-2 table
        // holds it all; the page and the leaf go.
        assert_eq!(
            t.unmap_range_span(range(A + K4, 3 * M2)),
            (K4 + M2, range(A + K4, 3 * M2))
        );
        assert_eq!(phys(&t, A), Some(PA));
        assert_eq!(
            t.table_pages(),
            4,
            "A's page table stays: A is still mapped"
        );
        assert_eq!(t.unmap_range(range(A, K4)), K4);
        assert_eq!(t.table_pages(), 1);
        assert_eq!(t.leaf_counts().iter().sum::<u64>(), 0);
    }

    #[test]
    fn unmap_spans_widen_to_whole_leaves() {
        let mut t = table();
        map(&mut t, A, PA, M2, 1);
        assert_eq!(
            t.unmap_range_span(range(A + K4, K4)),
            (M2, range(A, M2)),
            "a 4K unmap inside a 2M leaf removes the leaf"
        );
        map(&mut t, A + M2, PA, K4, 1);
        assert_eq!(
            t.unmap_range_span(range(A + M2 - K4, 3 * K4)),
            (K4, range(A + M2 - K4, 3 * K4)),
            "ends in holes stay where they are"
        );
        assert_eq!(t.table_pages(), 1);
    }
}
