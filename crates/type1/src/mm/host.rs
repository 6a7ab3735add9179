//! `mm::host`: the engine's `PageSource` over the real memory of this process (Linux).
//!
//! Data model and invariants (check the code against these):
//!
//! - **Regions** are anonymous private mappings made by `Memory::mmap` (`sys::Mapping`): 4K pages
//!   (`MADV_NOHUGEPAGE`, so the kernel never hands out a THP by accident), THP (`MADV_HUGEPAGE`,
//!   2M-aligned), or hugetlb 2M/1G (`MAP_HUGETLB|MAP_HUGE_2MB/1GB`). Every region is faulted in
//!   at creation (`MADV_POPULATE_WRITE`, or `_READ` for `prot=r`; touching every page where the
//!   kernel lacks them), once: a pin populates only where it finds a page absent (as GUP faults
//!   it in). `vmas` maps each still-mapped piece of a region, like `mm::sim`.
//! - **Pfns** come from `/proc/self/pagemap` (bits 0–54 of a present entry; the entry and
//!   kpageflags decoders are in `procfs`), read in large blocks into buffers kept from call to
//!   call (`ReadAhead`): a read covers a pin call's batch and reads ahead to at least 4096
//!   entries, and the next pin calls take what was read ahead before reading again (so a range
//!   is read about once, as the floor reads it); the read-ahead is dropped at every
//!   mmap/munmap and at the engine's `flush` (pages not pinned may move between calls).
//!   Without CAP_SYS_ADMIN the kernel reports pfn 0 for present pages: `HostMm::new` detects
//!   that and refuses with an error naming CAP_SYS_ADMIN.
//! - **Folios and the zero page**: where the kernel has the `PAGEMAP_SCAN` ioctl (6.7+), one
//!   ioctl per block says which pages are mapped by a huge entry (their folio is the region's
//!   huge page, whole and aligned) and which map the zero page; a page of a 4K region
//!   (`MADV_NOHUGEPAGE`) is its own folio, and a block wholly inside a writable 4K region needs
//!   no ioctl. Elsewhere, and on older kernels (or after `force_kpageflags`),
//!   `/proc/kpageflags` decides: a page with COMPOUND_HEAD/TAIL belongs to a folio whose head
//!   is the nearest naturally aligned HEAD and whose size is where the TAILs stop; a folio
//!   whose head is not aligned to its size is treated as 4K pages.
//! - **Reserved** pfns (`is_invalid_reserved_pfn`) are the ones kpageflags marks RESERVED or
//!   ZERO_PAGE, or that `PAGEMAP_SCAN` reports as PFNZERO, in read-only regions (one faulted in
//!   by reading maps the shared zero page). They are
//!   neither counted, locked nor unpinned, as in the kernel.
//! - **Pins**, never kept per 4K page of a huge page or of a pinned stretch: a pin of the pages
//!   from vaddr `v` at pfns from `p` adds 1 to the lock count of each vaddr page (`locks`, runs
//!   by vaddr page, like the sim's `PinCounts`) and records each pin in the reverse map `rev`
//!   (pfn → the vaddr page it was pinned at, `RevMap`): pieces of several pages (a folio, a
//!   physically contiguous stretch) as runs, and pages pinned one at a time — the scattered-4K
//!   case — in an open-addressed hash table (`LoneTable`, one cache line per lookup), so that
//!   each costs O(1) and no B-tree descent; a single page that continues the piece added just
//!   before it joins the runs, so memory pinned page by page through contiguous pfns is still
//!   one run. Pins at a vaddr other than a pfn's pairing (a pfn that moved while pinned) go to
//!   `odd`, taken first. The pin counts by pfn are `rev`'s: `pinned_pages` is its total, and
//!   the audit's `PinCounts` is built from it on demand (and dropped at the next pin or
//!   unpin). Pages are `mlock`ed when their lock count goes 0 → 1 (once per pin call, over
//!   merged stretches). `unpin` receives pfns, drops their pins in `rev` at once and finds
//!   their vaddrs there; lock counts drop at the engine's `flush` (joined into stretches),
//!   which `munlock`s what is back to 0. Hence, after each `flush`, Σ locks = Σ rev =
//!   `pinned_pages()` = `pin_counts().total()`, and a page mapped at two IOVAs is pinned (and
//!   counted) twice but locked once.
//! - **munmap** of pinned pages is deferred (the kernel keeps pinned pages alive after munmap;
//!   unmapping them here would free the pfns the IOMMU still points at): the pieces leave `vmas`
//!   at once, but a unit (4K page, or the whole huge page for hugetlb) with a pinned page stays
//!   mapped as a *zombie* until its last pin drops.
//! - **Drop** unlocks every locked page and unmaps every mapping, zombies included: nothing
//!   leaks a lock (`VmLck` in `/proc/self/status` returns to where it was).
//!
//! Limits of a userspace model: `mlock` keeps pages resident but does not stop the kernel from
//! migrating them (compaction, khugepaged), which a real GUP pin would; a pfn handed to the
//! engine stays the one recorded here, and `unpin` uses the record, so the bookkeeping stays
//! consistent even then.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io;
use std::sync::OnceLock;

use iommu::{Pages, Pfn, SZ_1G, SZ_2M};

use super::pincount::PinCounts;
use super::{
    cut_vmas, vma_at, Batch, MemError, Memory, MmError, PageAudit, PageSource, PinMode, PinResult,
    Pinned, Vma, Vmas,
};
use super::{Backing, Layout, MmapSpec};
use crate::procfs::{self, folio_of, kpf, page_flags, pagemap, read_entries};
use crate::sys::{self, page_is, Advice, HugeTlb, Mapping};
use crate::PAGE_SIZE;

#[derive(Debug)]
struct Region {
    name: String,
    vaddr: u64,
    size: u64,
    backing: Backing,
    writable: bool,
    /// Index into `HostMm::mappings`.
    mapping: usize,
}

/// One run of `Runs`: pages `[start, end)` (the map's key is `start`), each counted `count`
/// times, page `start + i` paired with `base + i`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Run {
    end: u64,
    count: u32,
    base: u64,
}

/// Counts over page numbers kept as non-overlapping runs, with a linear pairing per run: the
/// lock counts by vaddr page (paired with themselves) and the reverse map by pfn (paired with
/// the vaddr page it was pinned at). Touching runs with the same count and a continuing
/// pairing are merged, so a pinned huge page or a pinned stretch is one entry whatever its size.
#[derive(Debug, Default)]
struct Runs {
    map: BTreeMap<u64, Run>,
}

impl Runs {
    /// Pages with a non-zero count.
    fn pages(&self) -> u64 {
        self.map.iter().map(|(&s, r)| r.end - s).sum()
    }

    /// Split the run holding `at` (if it starts before `at`) so that a run starts at `at`.
    fn split_at(&mut self, at: u64) {
        if let Some((&s, &r)) = self.map.range(..at).next_back() {
            if r.end > at {
                self.map.insert(s, Run { end: at, ..r });
                self.map.insert(
                    at,
                    Run {
                        base: r.base + (at - s),
                        ..r
                    },
                );
            }
        }
    }

    /// Merge the run starting at `s` (if any) into its predecessor if it continues it.
    fn merge_at(&mut self, s: u64) {
        let Some(&r) = self.map.get(&s) else {
            return;
        };
        if let Some((&ps, p)) = self.map.range_mut(..s).next_back() {
            if p.end == s && p.count == r.count && p.base + (s - ps) == r.base {
                p.end = r.end;
                self.map.remove(&s);
            }
        }
    }

    /// Merge the runs starting in `[lo, hi]` with their predecessors where they continue them.
    fn merge(&mut self, lo: u64, hi: u64) {
        let keys: Vec<u64> = self.map.range(lo..=hi).map(|(&s, _)| s).collect();
        for s in keys.into_iter().rev() {
            self.merge_at(s);
        }
    }

    /// Whether any page of `[start, end)` has a count.
    fn any_in(&self, start: u64, end: u64) -> bool {
        start < end
            && self
                .map
                .range(..end)
                .next_back()
                .is_some_and(|(_, r)| r.end > start)
    }

    /// Count `[start, start + n)` once more, paired from `base`. `fresh` gets the pieces that
    /// were at 0; `clash` the pieces already paired otherwise (left untouched, with the
    /// pairing they would have had).
    fn add(
        &mut self,
        start: u64,
        n: u64,
        base: u64,
        fresh: &mut impl FnMut(u64, u64),
        clash: &mut impl FnMut(u64, u64, u64),
    ) {
        if n == 0 {
            return;
        }
        let end = start + n;
        // Fast path: nothing in [start, end) is counted yet (the last run starting before
        // `end` ends by `start`): extend a continuing predecessor, absorb a continuing successor.
        // That run is then the predecessor of `start`: one descent finds both.
        let prev = self.map.range(..end).next_back().map(|(&s, &r)| (s, r));
        if prev.is_none_or(|(_, r)| r.end <= start) {
            fresh(start, end);
            let next = match self.map.get(&end) {
                Some(&r) if r.count == 1 && r.base == base + n => {
                    self.map.remove(&end);
                    r.end
                }
                _ => end,
            };
            match prev {
                Some((ps, p))
                    if p.end == start && p.count == 1 && p.base + (start - ps) == base =>
                {
                    self.map.insert(ps, Run { end: next, ..p });
                }
                _ => {
                    let run = Run {
                        end: next,
                        count: 1,
                        base,
                    };
                    self.map.insert(start, run);
                }
            }
            return;
        }
        self.split_at(start);
        self.split_at(end);
        let segs: Vec<(u64, Run)> = self.map.range(start..end).map(|(&s, &r)| (s, r)).collect();
        let mut cur = start;
        let mut gap = |map: &mut BTreeMap<u64, Run>, a: u64, b: u64| {
            if a < b {
                let run = Run {
                    end: b,
                    count: 1,
                    base: base + (a - start),
                };
                map.insert(a, run);
                fresh(a, b);
            }
        };
        for (s, r) in segs {
            gap(&mut self.map, cur, s);
            let want = base + (s - start);
            if r.base == want {
                self.map.insert(
                    s,
                    Run {
                        count: r.count + 1,
                        ..r
                    },
                );
            } else {
                clash(s, r.end, want);
            }
            cur = r.end;
        }
        gap(&mut self.map, cur, end);
        self.merge(start, end);
    }

    /// Count `[start, start + n)` once less. `taken` gets each counted piece as `(start, end,
    /// base, now_zero)`; the pages that had no count are returned as pieces (they stay at 0).
    fn sub(
        &mut self,
        start: u64,
        n: u64,
        taken: &mut impl FnMut(u64, u64, u64, bool),
    ) -> Vec<(u64, u64)> {
        let end = start + n;
        if n == 0 {
            return Vec::new();
        }
        // Fastest path: a count-1 run that is exactly [start, end) (a 4K page of its own, a
        // whole folio): one descent.
        if let std::collections::btree_map::Entry::Occupied(e) = self.map.entry(start) {
            let r = *e.get();
            if r.count == 1 && r.end == end {
                e.remove();
                taken(start, end, r.base, true);
                return Vec::new();
            }
        }
        // Fast path: one count-1 run holds all of [start, end): cut the hole out of it.
        if let Some((&s, &r)) = self.map.range(..=start).next_back() {
            if r.count == 1 && r.end >= end {
                let base = r.base + (start - s);
                if s < start {
                    self.map.insert(s, Run { end: start, ..r });
                } else {
                    self.map.remove(&s);
                }
                if end < r.end {
                    let tail = Run {
                        base: r.base + (end - s),
                        ..r
                    };
                    self.map.insert(end, tail);
                }
                taken(start, end, base, true);
                return Vec::new();
            }
        }
        self.sub_pieces(start, end, taken)
    }

    /// `sub` of a range that several runs (or gaps) share: split, take run by run, merge
    /// (apart from the fast paths, so that they stay small).
    #[inline(never)]
    fn sub_pieces(
        &mut self,
        start: u64,
        end: u64,
        taken: &mut impl FnMut(u64, u64, u64, bool),
    ) -> Vec<(u64, u64)> {
        let mut missing = Vec::new();
        self.split_at(start);
        self.split_at(end);
        let segs: Vec<(u64, Run)> = self.map.range(start..end).map(|(&s, &r)| (s, r)).collect();
        let mut cur = start;
        for (s, r) in segs {
            if cur < s {
                missing.push((cur, s));
            }
            if r.count == 1 {
                self.map.remove(&s);
            } else {
                self.map.insert(
                    s,
                    Run {
                        count: r.count - 1,
                        ..r
                    },
                );
            }
            taken(s, r.end, r.base, r.count == 1);
            cur = r.end;
        }
        if cur < end {
            missing.push((cur, end));
        }
        self.merge(start, end);
        missing
    }
}

/// A page pinned on its own: the vaddr page it was pinned at, and how many such pins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Lone {
    vp: u64,
    count: u32,
}

/// Pages pinned one at a time, `pfn → Lone`: an open-addressed table with linear probing of
/// 16-byte slots `[pfn + 1, vp << COUNT_BITS | count]` (`[0, _]` is free, so a fresh table is
/// zeroed memory), so that a lookup costs one cache line (a general hash map keeps its control
/// bytes apart from its entries: two). Invariants: `slots` is empty or a power of two long and
/// at most half full; every entry sits between its home slot and the first free slot after it
/// (deletion shifts the followers back, no tombstones); a count is between 1 and `MAX_COUNT`.
/// It grows by doubling or by `reserve` (a pin call's hint) and never shrinks on its own:
/// `trim`, at each flush, brings it within 8× its entries, and frees it when empty.
#[derive(Debug, Default)]
struct LoneTable {
    slots: Vec<[u64; 2]>,
    len: usize,
}

impl LoneTable {
    const COUNT_BITS: u32 = 20;
    /// The most pins one entry counts; the caller keeps more elsewhere.
    const MAX_COUNT: u32 = (1 << Self::COUNT_BITS) - 1;
    /// Vaddr pages from here on do not fit an entry (the caller keeps them elsewhere); user
    /// vaddrs are below 2^57.
    const VP_LIMIT: u64 = 1 << (64 - Self::COUNT_BITS);
    const MIN_SLOTS: usize = 16;

    fn len(&self) -> usize {
        self.len
    }

    fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The home slot of `key` (Fibonacci hashing: the top bits of one multiply).
    fn home(&self, key: u64) -> usize {
        let bits = self.slots.len().trailing_zeros();
        (key.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - bits)) as usize
    }

    fn find(&self, pfn: u64) -> Option<usize> {
        if self.len == 0 {
            return None;
        }
        let key = pfn.checked_add(1)?;
        let mask = self.slots.len() - 1;
        let mut i = self.home(key);
        loop {
            match self.slots[i][0] {
                k if k == key => return Some(i),
                0 => return None,
                _ => i = (i + 1) & mask,
            }
        }
    }

    fn get(&self, pfn: u64) -> Option<Lone> {
        self.find(pfn).map(|i| Self::lone(self.slots[i][1]))
    }

    fn lone(word: u64) -> Lone {
        Lone {
            vp: word >> Self::COUNT_BITS,
            count: (word & u64::from(Self::MAX_COUNT)) as u32,
        }
    }

    /// Every entry, in no order.
    fn iter(&self) -> impl Iterator<Item = (u64, Lone)> + '_ {
        self.slots
            .iter()
            .filter(|s| s[0] != 0)
            .map(|s| (s[0] - 1, Self::lone(s[1])))
    }

    /// One more pin of `pfn` at vaddr page `vp`: `Ok(true)` if counted (a new entry or one
    /// more on the entry of the same vaddr page), `Ok(false)` if the entry pairs `pfn` with
    /// another vaddr page, `Err(())` if it does not fit (the count is full, or `vp` too
    /// large): the caller keeps the pin elsewhere.
    fn add(&mut self, pfn: u64, vp: u64) -> Result<bool, ()> {
        if let Some(i) = self.find(pfn) {
            let l = Self::lone(self.slots[i][1]);
            if l.vp != vp {
                return Ok(false);
            }
            if l.count == Self::MAX_COUNT {
                return Err(());
            }
            self.slots[i][1] += 1;
            return Ok(true);
        }
        let Some(key) = pfn.checked_add(1) else {
            return Err(());
        };
        if vp >= Self::VP_LIMIT {
            return Err(());
        }
        if (self.len + 1) * 2 > self.slots.len() {
            self.resize((self.slots.len() * 2).max(Self::MIN_SLOTS));
        }
        self.put(key, vp << Self::COUNT_BITS | 1);
        self.len += 1;
        Ok(true)
    }

    /// Room for `more` entries beyond those held, at once (no doubling on the way).
    fn reserve(&mut self, more: usize) {
        let want = (self.len + more).saturating_mul(2);
        if want > self.slots.len() {
            self.resize(want.next_power_of_two().max(Self::MIN_SLOTS));
        }
    }

    /// Bring the table within 8× its entries (and free it when empty).
    fn trim(&mut self) {
        if self.len == 0 {
            self.slots = Vec::new();
        } else if self.slots.len() > Self::MIN_SLOTS && self.len * 8 < self.slots.len() {
            self.resize((self.len * 2).next_power_of_two().max(Self::MIN_SLOTS));
        }
    }

    /// Store an entry known to be absent (the table has room).
    fn put(&mut self, key: u64, word: u64) {
        let mask = self.slots.len() - 1;
        let mut i = self.home(key);
        while self.slots[i][0] != 0 {
            i = (i + 1) & mask;
        }
        self.slots[i] = [key, word];
    }

    fn resize(&mut self, n: usize) {
        let old = std::mem::replace(&mut self.slots, vec![[0u64; 2]; n]);
        for s in old.into_iter().filter(|s| s[0] != 0) {
            self.put(s[0], s[1]);
        }
    }

    /// One pin less of `pfn`: its vaddr page, or `None` if it has no entry.
    fn sub(&mut self, pfn: u64) -> Option<u64> {
        let i = self.find(pfn)?;
        let l = Self::lone(self.slots[i][1]);
        if l.count > 1 {
            self.slots[i][1] -= 1;
        } else {
            self.remove_at(i);
        }
        Some(l.vp)
    }

    /// Drop the entry of `pfn` whole: what it held.
    fn remove(&mut self, pfn: u64) -> Option<Lone> {
        let i = self.find(pfn)?;
        let l = Self::lone(self.slots[i][1]);
        self.remove_at(i);
        Some(l)
    }

    /// Free slot `i` and shift back the entries after it that may move closer to home.
    fn remove_at(&mut self, i: usize) {
        let mask = self.slots.len() - 1;
        let mut hole = i;
        let mut j = (i + 1) & mask;
        while self.slots[j][0] != 0 {
            let home = self.home(self.slots[j][0]);
            // Entry j may fill the hole if the hole lies between its home and j.
            if j.wrapping_sub(home) & mask >= j.wrapping_sub(hole) & mask {
                self.slots[hole] = self.slots[j];
                hole = j;
            }
            j = (j + 1) & mask;
        }
        self.slots[hole][0] = 0;
        self.len -= 1;
    }
}

/// Which table the last piece added to a `RevMap` went to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Table {
    Runs,
    Lone,
}

/// The reverse map: every pin of a (non-reserved) pfn, paired with the vaddr page it was
/// pinned at. A multiset of pins `(pfn, vaddr page)` in three tables:
///
/// - `runs`: pieces pinned several pages at a time (a folio, a physically contiguous stretch),
///   and single pages that continue the piece added just before them (memory pinned page by
///   page), as `Runs`;
/// - `lone`: other pages pinned one at a time (the scattered-4K case), in a `LoneTable`, so
///   that pinning and unpinning them costs no B-tree descent (a page whose count or vaddr the
///   table cannot hold goes to `runs` as a run of one page);
/// - `odd`: pins of a pfn at a vaddr other than the one its table pairs it with (a pfn that
///   moved while pinned; empty in practice), latest last.
///
/// A pfn may be counted in `runs` and in `lone` at once (pinned once alone, once within a
/// piece); its pin count is the sum over the three tables, and `total` the sum of all. An
/// unpin takes a pfn's `odd` pins first (latest first), then, for a single page, `lone` before
/// `runs`, and for a piece `runs` before `lone`. Nothing here is kept per 4K page of a piece.
#[derive(Debug, Default)]
struct RevMap {
    runs: Runs,
    lone: LoneTable,
    odd: BTreeMap<u64, Vec<u64>>,
    total: u64,
    /// `(pfn, vaddr page)` that would continue the last piece added, and its table.
    tail: Option<(u64, u64, Table)>,
}

impl RevMap {
    /// Entries kept (runs, lone pages, pfns with odd pins): grows with pieces, not pages.
    fn entries(&self) -> usize {
        self.runs.map.len() + self.lone.len() + self.odd.len()
    }

    /// Record one pin of each of the `n` pages from `pfn`, pinned at vaddr pages from `vp`.
    fn add(&mut self, pfn: u64, n: u64, vp: u64) {
        if n == 0 {
            return;
        }
        self.total += n;
        let tail = self.tail;
        if n == 1 && tail != Some((pfn, vp, Table::Runs)) {
            // The page continues the lone page added just before it (memory pinned page by
            // page through contiguous pfns): both become one run. (`tail` is past both, so
            // `pfn` and `vp` are at least 1.)
            let left = Lone {
                vp: vp.wrapping_sub(1),
                count: 1,
            };
            if tail == Some((pfn, vp, Table::Lone))
                && self.lone.get(pfn - 1) == Some(left)
                && self.lone.get(pfn).is_none()
            {
                self.lone.remove(pfn - 1);
                self.add_runs(pfn - 1, 2, vp - 1);
                return;
            }
            match self.lone.add(pfn, vp) {
                Ok(true) => {}
                Ok(false) => self.odd.entry(pfn).or_default().push(vp),
                // A count or vaddr the table cannot hold: a run of one page.
                Err(()) => {
                    self.add_runs(pfn, 1, vp);
                    return;
                }
            }
            self.tail = Some((pfn + 1, vp + 1, Table::Lone));
            return;
        }
        self.add_runs(pfn, n, vp);
    }

    /// Count a piece in `runs`; pages there paired with another vaddr get an `odd` pin.
    fn add_runs(&mut self, pfn: u64, n: u64, vp: u64) {
        let odd = &mut self.odd;
        self.runs
            .add(pfn, n, vp, &mut |_, _| {}, &mut |s, e, want| {
                for p in s..e {
                    odd.entry(p).or_default().push(want + (p - s));
                }
            });
        self.tail = Some((pfn + n, vp + n, Table::Runs));
    }

    /// Drop one pin of each of the `n` pages from `pfn`. `taken` gets each piece dropped as
    /// `(pfn, pfn_end, vaddr page of pfn)`; the pages that had no pin are returned as pieces.
    fn sub(&mut self, pfn: u64, n: u64, taken: &mut impl FnMut(u64, u64, u64)) -> Vec<(u64, u64)> {
        if self.odd.is_empty() {
            return self.sub_paired(pfn, n, taken);
        }
        self.sub_odd(pfn, n, taken)
    }

    /// `sub` where some pfn has `odd` pins: those are taken first, page by page.
    #[inline(never)]
    fn sub_odd(
        &mut self,
        pfn: u64,
        n: u64,
        taken: &mut impl FnMut(u64, u64, u64),
    ) -> Vec<(u64, u64)> {
        let mut missing = Vec::new();
        for p in pfn..pfn + n {
            if let Some(vs) = self.odd.get_mut(&p) {
                let v = vs.pop().expect("odd lists are never empty");
                if vs.is_empty() {
                    self.odd.remove(&p);
                }
                self.total -= 1;
                taken(p, p + 1, v);
                continue;
            }
            missing.extend(self.sub_paired(p, 1, taken));
        }
        missing
    }

    /// `sub` of pins in `runs` and `lone` (none of the pages has an `odd` pin).
    fn sub_paired(
        &mut self,
        pfn: u64,
        n: u64,
        taken: &mut impl FnMut(u64, u64, u64),
    ) -> Vec<(u64, u64)> {
        if n == 0 {
            return Vec::new();
        }
        if n == 1 {
            if let Some(vp) = self.sub_lone(pfn) {
                taken(pfn, pfn + 1, vp);
                return Vec::new();
            }
        }
        let total = &mut self.total;
        let gaps = self.runs.sub(pfn, n, &mut |s, e, base, _| {
            *total -= e - s;
            taken(s, e, base);
        });
        if gaps.is_empty() || self.lone.is_empty() || n == 1 {
            return gaps;
        }
        // Pages of the piece pinned on their own: one probe per page the runs did not hold.
        let mut missing = Vec::new();
        for (a, b) in gaps {
            for p in a..b {
                match self.sub_lone(p) {
                    Some(vp) => taken(p, p + 1, vp),
                    None => match missing.last_mut() {
                        Some((_, e)) if *e == p => *e = p + 1,
                        _ => missing.push((p, p + 1)),
                    },
                }
            }
        }
        missing
    }

    /// Drop one pin of a lone page: its vaddr page, or `None` if it has no lone pin.
    fn sub_lone(&mut self, pfn: u64) -> Option<u64> {
        let vp = self.lone.sub(pfn)?;
        self.total -= 1;
        Some(vp)
    }

    /// The pin counts by pfn, in the canonical form of `PinCounts`.
    fn pin_counts(&self) -> PinCounts {
        let mut pc = PinCounts::new();
        for (&s, r) in &self.runs.map {
            for _ in 0..r.count {
                pc.add(s, r.end - s);
            }
        }
        for (p, l) in self.lone.iter() {
            for _ in 0..l.count {
                pc.add(p, 1);
            }
        }
        for (&p, vs) in &self.odd {
            for _ in vs {
                pc.add(p, 1);
            }
        }
        pc
    }
}

/// Pagemap entries read ahead: `entries[i]` is the entry of `start + i * 4K`. Its buffers are
/// kept from read to read (no allocation per pin call).
#[derive(Debug, Default)]
struct ReadAhead {
    start: u64,
    entries: Vec<u64>,
    /// The bytes of the last read.
    raw: Vec<u8>,
}

impl ReadAhead {
    /// Forget what was read (the buffers stay).
    fn reset(&mut self) {
        self.entries.clear();
    }

    /// Read `n` entries of `pagemap` from the one of `vaddr` (fewer past the readable end).
    fn read(&mut self, pagemap: &File, vaddr: u64, n: usize) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.entries.clear();
        self.start = vaddr;
        self.raw.resize(n * 8, 0);
        let off = vaddr / PAGE_SIZE * 8;
        let mut done = 0usize;
        while done < self.raw.len() {
            match pagemap.read_at(&mut self.raw[done..], off + done as u64) {
                Ok(0) => break,
                Ok(k) => done += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.entries.extend(
            self.raw[..done - done % 8]
                .chunks_exact(8)
                .map(|c| u64::from_ne_bytes(c.try_into().expect("8 bytes"))),
        );
        Ok(())
    }
}

/// How a block of pagemap entries ended in `pin`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Block {
    /// Read the next block.
    Next,
    /// A page was absent and the span was populated: read the block again.
    Again,
    /// The pin call is over.
    Stop,
}

/// Real process memory as a `PageSource`.
#[derive(Debug)]
pub struct HostMm {
    regions: Vec<Region>,
    names: HashMap<String, usize>,
    vmas: Vmas,
    /// Every mapping ever made (regions index into it); an empty one costs nothing.
    mappings: Vec<Mapping>,
    pagemap: File,
    kpageflags: File,
    /// Pin counts by vaddr page number, as runs; a page is mlocked while its count is non-zero.
    locks: Runs,
    /// Every pin by pfn (non-reserved pages only), with the vaddr page it was pinned at.
    rev: RevMap,
    /// The pin counts by pfn in `PinCounts` form, built from `rev` when audited and dropped at
    /// the next pin or unpin.
    pins: OnceLock<Box<PinCounts>>,
    /// Vaddr stretches newly pinned by the current `pin` call, mlocked once at its end.
    to_lock: Vec<(u64, u64)>,
    /// Vaddr page-number stretches unpinned since the last `flush`: their lock counts drop
    /// (and what reaches 0 is munlocked) at the next `flush`.
    to_release: Vec<(u64, u64)>,
    /// Pages in `to_release`.
    to_release_pages: u64,
    /// Whether `PAGEMAP_SCAN` classifies pages (huge, zero page); else `/proc/kpageflags` does.
    scan: bool,
    /// Units munmapped while pinned: start → (unit size, mapping index).
    zombies: BTreeMap<u64, (u64, usize)>,
    readahead: Box<ReadAhead>,
    notes: Vec<String>,
    violations: Vec<String>,
    /// Pagemap reads done by pins (a statistic).
    pagemap_reads: u64,
}

impl HostMm {
    /// Entries read ahead from pagemap per pin call, at least.
    pub const READ_AHEAD: usize = 4096;
    /// Released pages kept for one bulk munlock at most.
    const RELEASE_BATCH: u64 = 1 << 16;
    /// Entries per pagemap read at most (2 MiB of buffer, 1 GiB of address space).
    const MAX_READ: usize = 1 << 18;

    /// Open `/proc/self/pagemap` and `/proc/kpageflags` and check that pfns are visible.
    /// Fails, naming CAP_SYS_ADMIN, when they are not.
    pub fn new() -> Result<HostMm, MemError> {
        let pagemap = File::open("/proc/self/pagemap").map_err(MemError::OpenPagemap)?;
        let kpageflags = File::open("/proc/kpageflags").map_err(MemError::OpenKpageflags)?;
        // Probe: one page of our own, written, then its pagemap entry.
        let probe_err = |step| move |err| MemError::Probe { step, err };
        let probe = Mapping::anon(PAGE_SIZE, true, None, None)
            .map_err(probe_err("mmap of a probe page"))?;
        probe
            .touch(probe.base(), PAGE_SIZE)
            .map_err(probe_err("touching the probe page"))?;
        let e = read_entries(&pagemap, probe.base() / PAGE_SIZE, 1)
            .map_err(probe_err("reading /proc/self/pagemap"))?;
        match e.first().copied().and_then(pagemap::pfn) {
            Some(0) => return Err(MemError::NoCapSysAdmin),
            Some(_) => {}
            None => return Err(MemError::ProbeAbsent),
        }
        // PAGEMAP_SCAN (Linux 6.7+): one ioctl classifies a whole range.
        let scan = sys::pagemap_scan(
            &pagemap,
            probe.base(),
            probe.base() + PAGE_SIZE,
            page_is::HUGE,
        )
        .is_ok();
        drop(probe);
        Ok(HostMm {
            regions: Vec::new(),
            names: HashMap::new(),
            vmas: BTreeMap::new(),
            mappings: Vec::new(),
            pagemap,
            kpageflags,
            locks: Runs::default(),
            rev: RevMap::default(),
            pins: OnceLock::new(),
            to_lock: Vec::new(),
            to_release: Vec::new(),
            to_release_pages: 0,
            scan,
            zombies: BTreeMap::new(),
            readahead: Box::default(),
            notes: Vec::new(),
            violations: Vec::new(),
            pagemap_reads: 0,
        })
    }

    /// `(vaddr, size, backing)` of a region by name.
    pub fn region(&self, name: &str) -> Option<(u64, u64, Backing)> {
        self.names.get(name).map(|&i| {
            let r = &self.regions[i];
            (r.vaddr, r.size, r.backing)
        })
    }

    /// Pages this source keeps locked (each once, however many pins it has).
    pub fn locked_pages(&self) -> u64 {
        self.locks.pages()
    }

    /// Entries of the bookkeeping (lock runs; reverse-map runs, lone pages and odd entries):
    /// a statistic showing that it grows with runs and folios, not with pages.
    pub fn bookkeeping_entries(&self) -> usize {
        self.locks.map.len() + self.rev.entries()
    }

    /// Whether pages are classified with `PAGEMAP_SCAN` (Linux 6.7+) rather than
    /// `/proc/kpageflags`.
    pub fn uses_pagemap_scan(&self) -> bool {
        self.scan
    }

    /// Classify pages with `/proc/kpageflags` even where `PAGEMAP_SCAN` exists (the fallback of
    /// kernels before 6.7, kept testable).
    pub fn force_kpageflags(&mut self) {
        self.scan = false;
    }

    /// Units whose munmap waits for their pins to drop.
    pub fn deferred_unmaps(&self) -> usize {
        self.zombies.len()
    }

    /// Pagemap reads done by pin calls.
    pub fn pagemap_reads(&self) -> u64 {
        self.pagemap_reads
    }

    /// Raw pagemap entries of `npages` pages from `vaddr` (one read per 1 GiB).
    pub fn pagemap_entries(&self, vaddr: u64, npages: u64) -> io::Result<Vec<u64>> {
        let mut out = Vec::with_capacity(npages.min(Self::MAX_READ as u64) as usize);
        let mut idx = vaddr / PAGE_SIZE;
        let end = idx + npages;
        while idx < end {
            let n = ((end - idx) as usize).min(Self::MAX_READ);
            let v = read_entries(&self.pagemap, idx, n)?;
            if v.is_empty() {
                break;
            }
            idx += v.len() as u64;
            out.extend(v);
        }
        Ok(out)
    }

    /// `/proc/kpageflags` of a pfn.
    pub fn page_flags(&self, pfn: u64) -> u64 {
        page_flags(&self.kpageflags, pfn)
    }

    /// The folio of a pfn as `(head pfn, pages)`.
    pub fn folio_of(&self, pfn: Pfn) -> (Pfn, Pages) {
        folio_of(&self.kpageflags, pfn)
    }

    fn pfn_reserved(&self, pfn: u64) -> bool {
        kpf::reserved(self.page_flags(pfn))
    }

    /// An unpin found pages of `[pfn, pfn + npages)` without a pin (`gaps`): a violation,
    /// unless they are reserved (never counted, `skip_reserved` or not).
    #[cold]
    fn unpinned_gaps(&mut self, pfn: u64, npages: u64, gaps: &[(u64, u64)]) {
        let missing = gaps
            .iter()
            .flat_map(|&(a, b)| a..b)
            .filter(|&p| !self.pfn_reserved(p))
            .count();
        if missing > 0 {
            self.violations.push(format!(
                "unpin of {missing} page(s) in pfn range [{pfn:#x}, {:#x}) that were not pinned",
                pfn + npages
            ));
        }
    }

    fn vma_at(&self, vaddr: u64) -> Option<(u64, Vma)> {
        vma_at(&self.vmas, vaddr)
    }

    fn mmap_inner(&mut self, spec: &MmapSpec) -> Result<u64, MemError> {
        let name = spec.name.clone();
        if self.names.contains_key(&name) {
            return Err(MemError::Exists(name));
        }
        let backing = spec.backing;
        if backing == Backing::Pfnmap {
            return Err(MemError::PfnmapNeedsDevice(name));
        }
        let unit = backing.granule();
        if spec.size == 0 || !spec.size.is_multiple_of(unit) {
            return Err(MemError::BadSize {
                name,
                size: spec.size,
                unit,
                backing,
            });
        }
        if let Some(at) = spec.at {
            if !at.is_multiple_of(unit) {
                return Err(MemError::Unaligned {
                    name,
                    what: "at",
                    value: at,
                    align: unit,
                });
            }
        }
        if spec.layout != Layout::Contiguous {
            self.notes.push(format!(
                "{name}: layout=scattered ignored: the kernel places real pages"
            ));
        }
        if spec.seed != 0 {
            self.notes.push(format!(
                "{name}: seed ignored: the kernel places real pages"
            ));
        }
        if let Some(p) = spec.phys {
            self.notes.push(format!(
                "{name}: phys={p:#x} ignored: the kernel places real pages"
            ));
        }
        let huge = match backing {
            Backing::Hugetlb2m => Some(HugeTlb::Size2M),
            Backing::Hugetlb1g => Some(HugeTlb::Size1G),
            _ => None,
        };
        let made = match (backing, spec.at) {
            (Backing::Thp, None) => Mapping::anon_aligned(spec.size, spec.writable, SZ_2M),
            _ => Mapping::anon(spec.size, spec.writable, spec.at, huge),
        };
        let m = made.map_err(|err| match (err.raw_os_error(), huge) {
            (Some(libc::EEXIST), _) => MemError::Overlap {
                name: name.clone(),
                start: spec.at.unwrap_or(0),
                end: spec.at.unwrap_or(0) + spec.size,
            },
            (Some(libc::ENOMEM), Some(h)) => MemError::NoHugePages {
                name: name.clone(),
                size: spec.size,
                backing,
                free: procfs::free_huge_pages(h.size()),
            },
            _ => MemError::Mmap {
                name: name.clone(),
                size: spec.size,
                err,
            },
        })?;
        let (vaddr, size) = (m.base(), spec.size);
        let advice = match backing {
            Backing::Page4k => Some(Advice::NoHugePage),
            Backing::Thp => Some(Advice::HugePage),
            _ => None,
        };
        if let Some(a) = advice {
            sys::madvise(vaddr, size, a).map_err(|err| MemError::Madvise {
                name: name.clone(),
                advice: format!("{a:?}"),
                err,
            })?;
        }
        let populate = if spec.writable {
            Advice::PopulateWrite
        } else {
            Advice::PopulateRead
        };
        let populate_err = |err| MemError::Populate {
            name: name.clone(),
            err,
        };
        if let Err(e) = sys::madvise(vaddr, size, populate) {
            if e.raw_os_error() != Some(libc::EINVAL) {
                return Err(populate_err(e));
            }
            // A kernel without MADV_POPULATE_* (before 5.14): touch every page.
            m.touch(vaddr, size).map_err(populate_err)?;
        }
        self.mappings.push(m);
        let idx = self.regions.len();
        self.regions.push(Region {
            name: name.clone(),
            vaddr,
            size,
            backing,
            writable: spec.writable,
            mapping: self.mappings.len() - 1,
        });
        self.names.insert(name, idx);
        self.vmas.insert(
            vaddr,
            Vma {
                end: vaddr + size,
                region: idx,
            },
        );
        self.readahead.reset();
        Ok(vaddr)
    }

    fn munmap_inner(&mut self, name: &str, range: Option<(u64, u64)>) -> Result<(), MemError> {
        let &idx = self
            .names
            .get(name)
            .ok_or_else(|| MemError::NoSuchRegion(name.to_string()))?;
        let r = &self.regions[idx];
        let (unit, rvaddr, rsize, mi) = (r.backing.granule(), r.vaddr, r.size, r.mapping);
        let (off, size) = range.unwrap_or((0, rsize));
        let bad = || MemError::BadMunmap {
            name: name.to_string(),
            offset: off,
            size,
            region_size: rsize,
            unit,
        };
        let end_off = off.checked_add(size).ok_or_else(bad)?;
        if size == 0 || end_off > rsize || !off.is_multiple_of(unit) || !size.is_multiple_of(unit) {
            return Err(bad());
        }
        let (start, end) = (rvaddr + off, rvaddr + end_off);
        let gone = cut_vmas(&mut self.vmas, idx, start, end);
        // Unmap what nobody pinned; keep pinned units as zombies.
        let mut free: Vec<(u64, u64)> = Vec::new();
        for (s, e) in gone {
            let mut u = s;
            while u < e {
                if self.locks.any_in(u / PAGE_SIZE, (u + unit) / PAGE_SIZE) {
                    self.zombies.insert(u, (unit, mi));
                } else {
                    match free.last_mut() {
                        Some((_, fe)) if *fe == u => *fe = u + unit,
                        _ => free.push((u, u + unit)),
                    }
                }
                u += unit;
            }
        }
        for (s, e) in free {
            self.mappings[mi]
                .unmap(s, e - s)
                .map_err(|err| MemError::Munmap {
                    name: name.to_string(),
                    start: s,
                    end: e,
                    err,
                })?;
        }
        if !self.vmas.values().any(|v| v.region == idx) {
            self.names.remove(name);
        }
        self.readahead.reset();
        Ok(())
    }

    /// Where the pagemap entries of `[vaddr, vaddr + need pages)` are in `readahead.entries`
    /// (`i..j`): as many as were read ahead from `vaddr` on (the caller reads on for the rest),
    /// else those of one new read of at least `READ_AHEAD` entries (at most `avail`; shorter
    /// past the readable end).
    fn entries(&mut self, vaddr: u64, need: u64, avail: u64) -> io::Result<(usize, usize)> {
        let ra = &self.readahead;
        let len = ra.entries.len() as u64;
        let cached = vaddr >= ra.start && (vaddr - ra.start) / PAGE_SIZE < len && {
            // A page read ahead while absent may have been faulted in since: read again.
            let i = (vaddr - ra.start) / PAGE_SIZE;
            let j = (i + need).min(len);
            ra.entries[i as usize..j as usize]
                .iter()
                .all(|&e| e & pagemap::PRESENT != 0)
        };
        if !cached {
            let n = need.max(Self::READ_AHEAD as u64).min(avail) as usize;
            self.pagemap_reads += 1;
            if let Err(e) = self.readahead.read(&self.pagemap, vaddr, n) {
                self.readahead.reset();
                return Err(e);
            }
        }
        let i = ((vaddr - self.readahead.start) / PAGE_SIZE) as usize;
        let j = (i + need as usize).min(self.readahead.entries.len());
        Ok((i, j))
    }

    /// Record a pin of `npages` pages from `vaddr` at pfns from `pfn`: one entry in the
    /// reverse map (the lock counts take whole vaddr stretches, `take_locks`).
    fn take_pins(&mut self, vaddr: u64, pfn: u64, npages: u64) {
        self.rev.add(pfn, npages, vaddr / PAGE_SIZE);
    }

    /// Count one more pin of each page of the vaddr stretch `[start, end)`; what was unlocked
    /// is mlocked at the end of the pin call.
    fn take_locks(&mut self, start: u64, end: u64) {
        let (vp, npages) = (start / PAGE_SIZE, (end - start) / PAGE_SIZE);
        let to_lock = &mut self.to_lock;
        // mlock once per pin call, over merged stretches (one syscall per page splits vmas and
        // costs microseconds).
        let mut fresh = |s: u64, e: u64| {
            let (s, e) = (s * PAGE_SIZE, e * PAGE_SIZE);
            match to_lock.last_mut() {
                Some(last) if last.1 == s => last.1 = e,
                _ => to_lock.push((s, e)),
            }
        };
        // Lock runs pair each page with itself: they never clash.
        self.locks
            .add(vp, npages, vp, &mut fresh, &mut |_, _, _| {});
    }

    /// mlock what the current pin call newly pinned.
    fn flush_locks(&mut self) {
        for (s, e) in std::mem::take(&mut self.to_lock) {
            if let Err(err) = sys::mlock(s, e - s) {
                self.violations
                    .push(format!("mlock of [{s:#x}, {e:#x}) failed: {err}"));
            }
        }
    }

    /// Vaddr page-number stretches (sorted, disjoint) whose last pin dropped: munlock each
    /// (merged) stretch once, and unmap the zombie units that no longer hold a pinned page.
    fn release(&mut self, stretches: &[(u64, u64)]) {
        for &(s, e) in stretches {
            let (s, e) = (s * PAGE_SIZE, e * PAGE_SIZE);
            if let Err(err) = sys::munlock(s, e - s) {
                self.violations
                    .push(format!("munlock of [{s:#x}, {e:#x}) failed: {err}"));
            }
        }
        if self.zombies.is_empty() {
            return;
        }
        let mut units: Vec<(u64, u64, usize)> = Vec::new();
        for &(s, e) in stretches {
            let (s, e) = (s * PAGE_SIZE, e * PAGE_SIZE);
            for (&u, &(size, mi)) in self.zombies.range(..e).rev() {
                if u + size <= s {
                    break;
                }
                units.push((u, size, mi));
            }
        }
        units.sort_unstable();
        units.dedup();
        for (u, size, mi) in units {
            if !self.locks.any_in(u / PAGE_SIZE, (u + size) / PAGE_SIZE) {
                self.zombies.remove(&u);
                if let Err(err) = self.mappings[mi].unmap(u, size) {
                    self.violations.push(format!(
                        "deferred munmap of [{u:#x}, +{size:#x}) failed: {err}"
                    ));
                }
            }
        }
    }

    /// The size of the huge page mapping `vaddr` (a page `PAGEMAP_SCAN` calls huge): the
    /// hugetlb page size, or PMD size for THP; `None` for a region of another backing.
    fn huge_unit(&self, vaddr: u64) -> Option<u64> {
        let (_, vma) = self.vma_at(vaddr)?;
        match self.regions[vma.region].backing {
            Backing::Thp | Backing::Hugetlb2m => Some(SZ_2M),
            Backing::Hugetlb1g => Some(SZ_1G),
            _ => None,
        }
    }

    /// The vma (`[start, end)`) holding `vaddr` if it is of a region of 4K pages
    /// (`MADV_NOHUGEPAGE`: no large folios).
    fn in_4k_region(&self, vaddr: u64) -> Option<(u64, u64)> {
        self.vma_at(vaddr)
            .filter(|(_, vma)| self.regions[vma.region].backing == Backing::Page4k)
            .map(|(start, vma)| (start, vma.end))
    }
}

impl PageSource for HostMm {
    fn pin(&mut self, vaddr: u64, npages: u64, write: bool, batch: &mut Batch) -> PinResult {
        self.pins.take();
        let vaddr = vaddr & !(PAGE_SIZE - 1);
        let per_page = batch.mode() == PinMode::PerPage;
        let max_pages = batch.page_limit(npages);
        // The pinnable span: our vmas from vaddr on, as GUP walks on through adjacent vmas, up
        // to a read-only one for a write pin. `avail` = the span without the `npages` bound
        // (how far the read-ahead may go).
        let mut span = 0u64;
        let mut avail = 0u64;
        let mut addr = vaddr;
        let mut readonly_vmas = false;
        while avail < max_pages.max(Self::READ_AHEAD as u64) {
            let Some((_, vma)) = self.vma_at(addr) else {
                break;
            };
            let r = &self.regions[vma.region];
            if write && !r.writable {
                if span == 0 {
                    return Err(MmError::ReadOnly {
                        vaddr,
                        name: r.name.clone(),
                    });
                }
                break;
            }
            readonly_vmas |= !r.writable;
            let n = (vma.end - addr) / PAGE_SIZE;
            span += n.min(max_pages.saturating_sub(span));
            avail += n;
            addr = vma.end;
        }
        if span == 0 {
            return Err(MmError::NotMapped { vaddr });
        }
        // Pages of a 4K region are pinned one at a time where the kernel scattered them: room
        // in the lone table for what the caller asks of this region, at once (`flush` trims
        // what stays unused).
        if let Some((_, end)) = self.in_4k_region(vaddr) {
            let pages = npages.min((end - vaddr) / PAGE_SIZE);
            self.rev
                .lone
                .reserve(usize::try_from(pages).unwrap_or(usize::MAX));
        }
        // Regions are populated at mmap; GUP faults in what is missing, so a page found absent
        // populates the rest of the span once, and the block is read again.
        let populate = if write {
            Advice::PopulateWrite
        } else {
            Advice::PopulateRead
        };
        let mut populated = false;
        let mut got = 0u64;
        let mut cap_problem = false;
        // The folio of the current batch entry (Folio mode): [head, end) in pfns.
        let mut folio: (u64, u64) = (0, 0);
        // The pin being recorded: (vaddr, pfn, pages), contiguous in both; and the vaddr
        // stretch whose lock counts are being recorded, [start, end).
        let mut pend: Option<(u64, u64, u64)> = None;
        let mut lock_pend: Option<(u64, u64)> = None;
        // Folio mode does not know how many pages `capacity` entries hold: read blocks that
        // grow from READ_AHEAD entries.
        let mut block = if per_page {
            span
        } else {
            Self::READ_AHEAD as u64
        };
        while got < span {
            let want = (span - got).min(block).min(Self::MAX_READ as u64);
            block = block.saturating_mul(2);
            let base = vaddr + got * PAGE_SIZE;
            let (i, j) = match self.entries(base, want, avail - got) {
                Ok(r) => r,
                Err(_) => break,
            };
            if i == j {
                break;
            }
            // The entries are lent out of the read-ahead while the block is walked (no copy).
            let ra = std::mem::take(&mut self.readahead.entries);
            let entries = &ra[i..j];
            let end = base + entries.len() as u64 * PAGE_SIZE;
            // The vaddrs known to lie in a 4K region: [start, end).
            let mut small: (u64, u64) = (0, 0);
            // A block wholly inside a writable 4K region has neither huge nor zero pages:
            // nothing for the scan to find.
            let all_small = self.scan
                && !per_page
                && !readonly_vmas
                && self.in_4k_region(base).is_some_and(|r| r.1 >= end);
            if all_small {
                small = (base, end);
            }
            // Huge-mapped and zero-page pieces of the block, in one ioctl (else kpageflags).
            let classes = if all_small {
                Some(Vec::new())
            } else if self.scan && (!per_page || readonly_vmas) {
                sys::pagemap_scan(&self.pagemap, base, end, page_is::HUGE | page_is::PFNZERO).ok()
            } else {
                None
            };
            let mut ci = 0usize;
            let mut k = 0usize;
            let step = 'block: {
                while k < entries.len() {
                    let v = base + k as u64 * PAGE_SIZE;
                    let Some(pfn) = pagemap::pfn(entries[k]) else {
                        if !populated {
                            populated = true;
                            let _ = sys::madvise(v, (span - got) * PAGE_SIZE, populate);
                            break 'block Block::Again;
                        }
                        break 'block Block::Stop;
                    };
                    if pfn == 0 {
                        cap_problem = true;
                        break 'block Block::Stop;
                    }
                    let cats = classes.as_ref().map(|c| {
                        while ci < c.len() && c[ci].end <= v {
                            ci += 1;
                        }
                        c.get(ci)
                            .filter(|r| r.start <= v)
                            .map_or(0, |r| r.categories)
                    });
                    let reserved = readonly_vmas
                        && match cats {
                            Some(c) => c & page_is::PFNZERO != 0,
                            None => self.pfn_reserved(pfn),
                        };
                    // How many pages from here go into one entry: one (PerPage, reserved), or the
                    // piece of the folio that is mapped contiguously from here.
                    let mut n = 1u64;
                    if !per_page && !reserved {
                        if !(folio.0..folio.1).contains(&pfn) {
                            let huge = cats
                                .filter(|c| c & page_is::HUGE != 0)
                                .and_then(|_| self.huge_unit(v));
                            // Classified by the scan and in a 4K region: a folio of one page.
                            let single = cats.is_some()
                                && huge.is_none()
                                && ((small.0..small.1).contains(&v)
                                    || self.in_4k_region(v).map(|r| small = r).is_some());
                            folio = match huge {
                                // A huge entry maps its folio whole and aligned.
                                Some(unit) => {
                                    let head = pfn - (v % unit) / PAGE_SIZE;
                                    (head, head + unit / PAGE_SIZE)
                                }
                                None if single => (pfn, pfn + 1),
                                None => {
                                    let (head, n) = self.folio_of(Pfn(pfn));
                                    (head.0, head.0 + n.0)
                                }
                            };
                        }
                        while k + (n as usize) < entries.len()
                            && pfn + n < folio.1
                            && pagemap::pfn(entries[k + n as usize]) == Some(pfn + n)
                        {
                            n += 1;
                        }
                    }
                    // Folio mode: a folio cut by a block boundary continues in the same entry.
                    let continues = !per_page
                        && !reserved
                        && k == 0
                        && batch.last().is_some_and(|last| {
                            !last.reserved
                                && last.pfn + last.npages == pfn
                                && (folio.0..folio.1).contains(&last.pfn)
                        });
                    if !per_page && !continues && batch.is_full() {
                        break 'block Block::Stop;
                    }
                    if !reserved {
                        let e = v + n * PAGE_SIZE;
                        match lock_pend.as_mut() {
                            Some((_, le)) if *le == v => *le = e,
                            _ => {
                                if let Some((ls, le)) = lock_pend.replace((v, e)) {
                                    self.take_locks(ls, le);
                                }
                            }
                        }
                        match pend.as_mut() {
                            Some((pv, pp, pn))
                                if *pv + *pn * PAGE_SIZE == v && *pp + *pn == pfn =>
                            {
                                *pn += n
                            }
                            _ => {
                                if let Some((pv, pp, pn)) = pend.replace((v, pfn, n)) {
                                    self.take_pins(pv, pp, pn);
                                }
                            }
                        }
                    }
                    if continues {
                        batch.extend_last(n);
                    } else {
                        batch.push(pfn, n, reserved);
                    }
                    got += n;
                    k += n as usize;
                }
                Block::Next
            };
            self.readahead.entries = ra;
            match step {
                Block::Next => {}
                Block::Again => self.readahead.reset(),
                Block::Stop => break,
            }
        }
        if let Some((pv, pp, pn)) = pend {
            self.take_pins(pv, pp, pn);
        }
        if let Some((ls, le)) = lock_pend {
            self.take_locks(ls, le);
        }
        self.flush_locks();
        if cap_problem {
            self.violations.push(super::NO_CAP_SYS_ADMIN.to_string());
        }
        if got == 0 {
            return Err(MmError::NotMapped { vaddr });
        }
        Ok(Pinned::Pages)
    }

    fn flush(&mut self) {
        let mut unpinned = std::mem::take(&mut self.to_release);
        self.to_release_pages = 0;
        // One decrement per unpinned page: sorted, stretches that meet are joined (a page
        // unpinned twice stays in two stretches), and each stretch is one `sub`.
        unpinned.sort_unstable();
        let mut joined: Vec<(u64, u64)> = Vec::with_capacity(unpinned.len());
        for (s, e) in unpinned {
            match joined.last_mut() {
                Some(last) if last.1 == s => last.1 = e,
                _ => joined.push((s, e)),
            }
        }
        let mut free: Vec<(u64, u64)> = Vec::new();
        for (s, e) in joined {
            self.locks.sub(s, e - s, &mut |a, b, _, zero| {
                if zero {
                    free.push((a, b));
                }
            });
        }
        free.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(free.len());
        for (s, e) in free {
            match merged.last_mut() {
                Some(last) if last.1 >= s => last.1 = last.1.max(e),
                _ => merged.push((s, e)),
            }
        }
        self.release(&merged);
        self.rev.lone.trim();
        // Pages not pinned may move between engine calls: the next call reads pfns afresh.
        self.readahead.reset();
    }

    fn unpin(&mut self, pfn: u64, npages: u64, _dirty: bool, _skip_reserved: bool) -> u64 {
        self.pins.take();
        // Each piece unpinned drops its pins now; its vaddr stretch waits for `flush`.
        let mut done = 0u64;
        let rel = &mut self.to_release;
        let gaps = self.rev.sub(pfn, npages, &mut |s: u64, e: u64, vp: u64| {
            let n = e - s;
            done += n;
            match rel.last_mut() {
                Some(last) if last.1 == vp => last.1 += n,
                _ => rel.push((vp, vp + n)),
            }
        });
        self.to_release_pages += done;
        if !gaps.is_empty() {
            self.unpinned_gaps(pfn, npages, &gaps);
        }
        // Lock counts drop, and munlock (and deferred munmap) follow, in bulk at the engine's
        // flush, not once per run.
        if self.to_release_pages >= Self::RELEASE_BATCH {
            self.flush();
        }
        done
    }

    fn is_reserved(&self, pfn: u64) -> bool {
        self.pfn_reserved(pfn)
    }

    fn pinned_pages(&self) -> u64 {
        self.rev.total
    }
}

impl PageAudit for HostMm {
    fn pin_counts(&self) -> &PinCounts {
        self.pins.get_or_init(|| Box::new(self.rev.pin_counts()))
    }

    fn violations(&self) -> Vec<String> {
        self.violations.clone()
    }
}

impl Memory for HostMm {
    fn mmap(&mut self, spec: &MmapSpec) -> Result<u64, MemError> {
        self.mmap_inner(spec)
    }

    fn munmap(&mut self, name: &str, range: Option<(u64, u64)>) -> Result<(), MemError> {
        self.munmap_inner(name, range)
    }

    fn region_vaddr(&self, name: &str) -> Option<u64> {
        self.names.get(name).map(|&i| self.regions[i].vaddr)
    }

    fn vaddr_to_phys(&self, vaddr: u64) -> Option<u64> {
        let e = read_entries(&self.pagemap, vaddr / PAGE_SIZE, 1).ok()?;
        let pfn = pagemap::pfn(*e.first()?)?;
        (pfn != 0).then_some(pfn * PAGE_SIZE + vaddr % PAGE_SIZE)
    }

    fn folio_size(&self, vaddr: u64) -> Option<u64> {
        let pfn = self.vaddr_to_phys(vaddr)? / PAGE_SIZE;
        let (_, n) = self.folio_of(Pfn(pfn));
        n.bytes()
    }

    fn notes(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notes)
    }
}

impl Drop for HostMm {
    fn drop(&mut self) {
        let all: Vec<(u64, u64)> = self.locks.map.iter().map(|(&s, r)| (s, r.end)).collect();
        self.locks = Runs::default();
        self.rev = RevMap::default();
        self.release(&all);
        // Dropping the mappings unmaps everything, zombies included.
        self.zombies.clear();
        self.mappings.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::{Lone, LoneTable, RevMap, Runs};
    use std::collections::BTreeMap;

    /// `(start, end, count, base)` of every run.
    fn runs(r: &Runs) -> Vec<(u64, u64, u32, u64)> {
        r.map
            .iter()
            .map(|(&s, x)| (s, x.end, x.count, x.base))
            .collect()
    }

    #[test]
    fn runs_count_pair_merge_and_report_transitions() {
        let mut r = Runs::default();
        let mut fresh = Vec::new();
        let mut clashes = Vec::new();
        let mut add = |r: &mut Runs, s, n, b| {
            r.add(s, n, b, &mut |a, e| fresh.push((a, e)), &mut |a, e, w| {
                clashes.push((a, e, w))
            })
        };
        add(&mut r, 10, 4, 100);
        add(&mut r, 14, 4, 104);
        assert_eq!(
            runs(&r),
            vec![(10, 18, 1, 100)],
            "a continuing pairing merges"
        );
        add(&mut r, 18, 2, 500);
        assert_eq!(
            runs(&r).len(),
            2,
            "a pairing that does not continue stays apart"
        );
        add(&mut r, 12, 8, 102);
        assert_eq!(
            runs(&r),
            vec![(10, 12, 1, 100), (12, 18, 2, 102), (18, 20, 1, 500)]
        );
        assert_eq!(
            clashes,
            vec![(18, 20, 108)],
            "pfns 18-19 are paired elsewhere"
        );
        assert_eq!(fresh, vec![(10, 14), (14, 18), (18, 20)]);
        assert_eq!(r.pages(), 10);
        assert!(r.any_in(19, 30) && !r.any_in(20, 30) && !r.any_in(0, 10));
        let mut taken = Vec::new();
        let gaps = r.sub(8, 6, &mut |s, e, b, z| taken.push((s, e, b, z)));
        assert_eq!(gaps, vec![(8, 10)]);
        assert_eq!(taken, vec![(10, 12, 100, true), (12, 14, 102, false)]);
        assert_eq!(
            runs(&r),
            vec![(12, 14, 1, 102), (14, 18, 2, 104), (18, 20, 1, 500)]
        );
        taken.clear();
        assert!(r
            .sub(12, 8, &mut |s, e, b, z| taken.push((s, e, b, z)))
            .is_empty());
        assert!(r
            .sub(14, 4, &mut |s, e, b, z| taken.push((s, e, b, z)))
            .is_empty());
        assert!(r.map.is_empty() && r.pages() == 0, "{:?}", runs(&r));
    }

    /// Pieces as `(pfn, pfn_end, vaddr page)`.
    type Taken = Vec<(u64, u64, u64)>;

    /// The pieces a `sub` took, and the pieces it missed.
    fn sub(r: &mut RevMap, pfn: u64, n: u64) -> (Taken, Vec<(u64, u64)>) {
        let mut taken = Vec::new();
        let missing = r.sub(pfn, n, &mut |s, e, vp| taken.push((s, e, vp)));
        (taken, missing)
    }

    #[test]
    fn rev_map_keeps_lone_pages_apart_and_joins_page_by_page_pins() {
        let mut r = RevMap::default();
        // Scattered single pages: one lone entry each, no run.
        r.add(100, 1, 7);
        r.add(300, 1, 8);
        r.add(200, 1, 9);
        assert_eq!((r.lone.len(), r.runs.map.len(), r.total), (3, 0, 3));
        // Contiguous memory pinned page by page: one run, however many pages.
        for i in 0..5 {
            r.add(500 + i, 1, 40 + i);
        }
        assert_eq!(r.lone.len(), 3, "the first page left the lone table");
        assert_eq!(r.runs.map.len(), 1);
        assert_eq!(r.runs.map[&500].end, 505);
        // A piece of several pages goes to the runs whatever it follows.
        r.add(1000, 512, 2048);
        assert_eq!(r.runs.map.len(), 2);
        assert_eq!(r.entries(), 5);
        assert_eq!(r.total, 3 + 5 + 512);
        // A piece unpinned whole: one run out, no probe of the lone table needed.
        assert_eq!(sub(&mut r, 1000, 512), (vec![(1000, 1512, 2048)], vec![]));
        assert_eq!(sub(&mut r, 200, 1), (vec![(200, 201, 9)], vec![]));
        // A piece whose pages were pinned alone (the IOMMU saw them contiguous).
        r.add(201, 1, 60);
        r.add(199, 1, 61);
        let (taken, missing) = sub(&mut r, 199, 4);
        assert_eq!(taken, vec![(199, 200, 61), (201, 202, 60)]);
        assert_eq!(missing, vec![(200, 201), (202, 203)]);
        assert_eq!(r.total, 2 + 5);
        for (p, n) in [(100, 1), (300, 1), (500, 5)] {
            assert!(sub(&mut r, p, n).1.is_empty());
        }
        assert_eq!((r.entries(), r.total), (0, 0));
    }

    #[test]
    fn rev_map_unpins_a_second_vaddr_first_and_counts_a_page_in_both_tables() {
        let mut r = RevMap::default();
        r.add(50, 1, 10);
        r.add(50, 1, 10);
        r.add(50, 1, 99);
        assert_eq!(r.lone.get(50).map(|l| l.count), Some(2));
        assert_eq!(r.odd[&50], vec![99]);
        assert_eq!(r.pin_counts().get(50), 3);
        assert_eq!(
            sub(&mut r, 50, 1).0,
            vec![(50, 51, 99)],
            "the odd pin first"
        );
        assert_eq!(sub(&mut r, 50, 1).0, vec![(50, 51, 10)]);
        // The same page once alone and once within a piece: counted twice, unpinned from
        // the lone table by a single-page unpin, from the runs by a piece.
        r.add(60, 4, 20);
        assert_eq!(r.pin_counts().ranges(), vec![(50, 1, 1), (60, 4, 1)]);
        r.add(61, 1, 21);
        assert_eq!(
            r.pin_counts().ranges(),
            vec![(50, 1, 1), (60, 1, 1), (61, 1, 2), (62, 2, 1)]
        );
        assert_eq!(sub(&mut r, 61, 1).0, vec![(61, 62, 21)]);
        assert_eq!(r.lone.len(), 1);
        assert_eq!(sub(&mut r, 60, 4).0, vec![(60, 64, 20)]);
        assert_eq!(sub(&mut r, 50, 1).0, vec![(50, 51, 10)]);
        assert_eq!(
            sub(&mut r, 50, 1),
            (vec![], vec![(50, 51)]),
            "nothing left to unpin"
        );
        assert_eq!((r.entries(), r.total), (0, 0));
    }

    #[test]
    fn lone_table_refuses_what_it_cannot_hold_and_the_rev_map_keeps_it_in_runs() {
        let mut t = LoneTable::default();
        assert_eq!(t.add(5, LoneTable::VP_LIMIT), Err(()));
        assert_eq!(t.add(5, 9), Ok(true));
        assert_eq!(t.add(5, 10), Ok(false), "another vaddr page");
        let at = t.find(5).unwrap();
        t.slots[at][1] = 9 << LoneTable::COUNT_BITS | u64::from(LoneTable::MAX_COUNT);
        assert_eq!(t.add(5, 9), Err(()), "the count is full");
        assert_eq!(
            t.get(5),
            Some(Lone {
                vp: 9,
                count: LoneTable::MAX_COUNT
            })
        );
        let mut r = RevMap::default();
        let far = LoneTable::VP_LIMIT + 3;
        r.add(77, 1, far);
        assert_eq!((r.lone.len(), r.runs.map.len(), r.total), (0, 1, 1));
        assert_eq!(sub(&mut r, 77, 1), (vec![(77, 78, far)], vec![]));
        assert_eq!((r.entries(), r.total), (0, 0));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]

        /// The lone table against a `HashMap`: colliding and wrapping keys, growth, reserving,
        /// deletion with back-shifts, and trimming.
        #[test]
        fn lone_table_matches_a_hash_map(
            ops in proptest::collection::vec(
                (0u8..6, proptest::prop_oneof![3 => 0u64..64, 1 => (1u64 << 40)..(1u64 << 54)], 0u64..3),
                0..400,
            )
        ) {
            let mut t = LoneTable::default();
            let mut m: std::collections::HashMap<u64, (u64, u32)> = std::collections::HashMap::new();
            for (op, pfn, vp) in ops {
                match op {
                    0 | 1 => {
                        let want = match m.get(&pfn) {
                            Some(&(v, _)) if v != vp => Ok(false),
                            _ => Ok(true),
                        };
                        proptest::prop_assert_eq!(t.add(pfn, vp), want);
                        if want == Ok(true) {
                            m.entry(pfn).or_insert((vp, 0)).1 += 1;
                        }
                    }
                    2 => {
                        let want = m.get(&pfn).map(|&(v, _)| v);
                        if let Some((_, c)) = m.get_mut(&pfn) {
                            *c -= 1;
                            if *c == 0 {
                                m.remove(&pfn);
                            }
                        }
                        proptest::prop_assert_eq!(t.sub(pfn), want);
                    }
                    3 => {
                        let want = m.remove(&pfn).map(|(vp, count)| Lone { vp, count });
                        proptest::prop_assert_eq!(t.remove(pfn), want);
                    }
                    4 => t.reserve(pfn as usize % 100),
                    _ => {
                        t.trim();
                        proptest::prop_assert!(
                            t.slots.len() <= (8 * t.len()).max(LoneTable::MIN_SLOTS)
                                || t.slots.len() == LoneTable::MIN_SLOTS
                        );
                        proptest::prop_assert_eq!(t.slots.is_empty(), t.is_empty());
                    }
                }
                proptest::prop_assert_eq!(t.len(), m.len());
                proptest::prop_assert!(t.slots.is_empty() || t.slots.len().is_power_of_two());
                proptest::prop_assert!(t.len() * 2 <= t.slots.len() || t.slots.is_empty());
                let mut got: Vec<(u64, u64, u32)> = t.iter().map(|(p, l)| (p, l.vp, l.count)).collect();
                got.sort_unstable();
                let mut want: Vec<(u64, u64, u32)> = m.iter().map(|(&p, &(v, c))| (p, v, c)).collect();
                want.sort_unstable();
                proptest::prop_assert_eq!(got, want);
                for p in [pfn, pfn ^ 1] {
                    proptest::prop_assert_eq!(t.get(p), m.get(&p).map(|&(vp, count)| Lone { vp, count }));
                }
            }
        }

        /// Pins (single pages and pieces, at the usual vaddr or another one) and unpins,
        /// mixed, against a per-page multiset of `(pfn, vaddr page)` pins: every unpin takes a
        /// pin that exists, misses exactly the pages without one, and the counts agree.
        #[test]
        fn rev_map_matches_a_per_page_multiset(
            ops in proptest::collection::vec(
                (
                    proptest::bool::weighted(0.6),
                    0u64..40,
                    proptest::prop_oneof![3 => proptest::strategy::Just(1u64), 1 => 1u64..9],
                    proptest::prop_oneof![4 => proptest::strategy::Just(0u64), 1 => 1u64..3],
                ),
                0..120,
            )
        ) {
            let mut r = RevMap::default();
            let mut reference: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
            for (is_add, pfn, n, other) in ops {
                // The usual pairing is vaddr page = pfn + 1000; `other` moves it elsewhere.
                let vp = pfn + 1000 + other * 100;
                if is_add {
                    r.add(pfn, n, vp);
                    for i in 0..n {
                        reference.entry(pfn + i).or_default().push(vp + i);
                    }
                } else {
                    let (taken, missing) = sub(&mut r, pfn, n);
                    let mut seen = vec![0u32; n as usize];
                    for (s, e, v) in taken {
                        proptest::prop_assert!(pfn <= s && s < e && e <= pfn + n);
                        for p in s..e {
                            seen[(p - pfn) as usize] += 1;
                            let pins = reference.get_mut(&p);
                            let at = pins.as_ref().and_then(|l| l.iter().position(|&x| x == v + (p - s)));
                            proptest::prop_assert!(at.is_some(), "pfn {} was not pinned at {}", p, v + (p - s));
                            let pins = pins.unwrap();
                            pins.remove(at.unwrap());
                            if pins.is_empty() {
                                reference.remove(&p);
                            }
                        }
                    }
                    for (a, b) in missing {
                        for p in a..b {
                            seen[(p - pfn) as usize] += 1;
                            proptest::prop_assert!(!reference.contains_key(&p), "pfn {} was pinned", p);
                        }
                    }
                    proptest::prop_assert!(seen.iter().all(|&c| c == 1), "{:?}", seen);
                }
                let total: usize = reference.values().map(Vec::len).sum();
                proptest::prop_assert_eq!(r.total, total as u64);
                let mut want: Vec<(u64, u64, u32)> = Vec::new();
                for (&p, l) in &reference {
                    let c = l.len() as u32;
                    match want.last_mut() {
                        Some((s, k, lc)) if *s + *k == p && *lc == c => *k += 1,
                        _ => want.push((p, 1, c)),
                    }
                }
                proptest::prop_assert_eq!(r.pin_counts().ranges(), want);
            }
        }
    }
}
