//! Pin counts per page, stored as non-overlapping ranges of equal count, so that memory nobody
//! pinned costs nothing and a pinned 1 GiB huge page costs one entry.
//!
//! Pages pinned one at a time where no range covers them (the scattered-4K case) live in a hash
//! side table instead, so pinning and unpinning them costs no B-tree descent. Invariants: a pfn
//! is in at most one of the two tables; every count stored is at least 1; `total` is the sum of
//! all counts; `ranges()` merges both tables into the one canonical form (sorted, adjacent
//! ranges of equal count merged), so the representation never shows. Memory stays bounded by
//! what is pinned: one entry per pinned range or lone pinned page, and a page pinned next to a
//! range or a lone page joins the range table, so contiguous memory pinned page by page is still
//! one range.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

/// A multiplicative hasher for pfn keys: one multiply, no SipHash rounds.
#[derive(Default)]
struct PfnHasher(u64);

impl Hasher for PfnHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u64(&mut self, v: u64) {
        // Fold the high half down so hashbrown's top-7-bit tags and low-bit buckets both vary.
        let h = v.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 = h ^ (h >> 32);
    }
}

/// Lone pinned pages: `pfn → count`.
type Singles = HashMap<u64, u32, BuildHasherDefault<PfnHasher>>;

/// `start pfn → (end pfn exclusive, count)`; adjacent ranges with the same count are merged.
/// Single pages pinned outside every range are kept in a hash side table (see the module doc).
#[derive(Clone, Debug, Default)]
pub struct PinCounts {
    map: BTreeMap<u64, (u64, u32)>,
    singles: Singles,
    total: u64,
}

impl PartialEq for PinCounts {
    fn eq(&self, other: &Self) -> bool {
        self.total == other.total && self.ranges() == other.ranges()
    }
}

impl Eq for PinCounts {}

impl PinCounts {
    /// No pins.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sum of all counts.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The count of one pfn.
    pub fn get(&self, pfn: u64) -> u32 {
        if let Some(&c) = self.singles.get(&pfn) {
            return c;
        }
        self.tree_get(pfn)
    }

    /// The count of one pfn in the range table alone.
    fn tree_get(&self, pfn: u64) -> u32 {
        if self.map.is_empty() {
            return 0;
        }
        match self.map.range(..=pfn).next_back() {
            Some((_, &(end, c))) if pfn < end => c,
            _ => 0,
        }
    }

    /// Ranges as `(start, pages, count)`.
    pub fn ranges(&self) -> Vec<(u64, u64, u32)> {
        if self.singles.is_empty() {
            return self.map.iter().map(|(&s, &(e, c))| (s, e - s, c)).collect();
        }
        let mut lone: Vec<(u64, u32)> = self.singles.iter().map(|(&p, &c)| (p, c)).collect();
        lone.sort_unstable();
        let mut out: Vec<(u64, u64, u32)> = Vec::with_capacity(self.map.len() + lone.len());
        let mut push = |s: u64, n: u64, c: u32| match out.last_mut() {
            Some((ls, ln, lc)) if *ls + *ln == s && *lc == c => *ln += n,
            _ => out.push((s, n, c)),
        };
        let mut tree = self.map.iter().peekable();
        let mut lone = lone.into_iter().peekable();
        loop {
            match (tree.peek(), lone.peek()) {
                (Some((&s, &(e, c))), Some(&(p, _))) if s < p => {
                    push(s, e - s, c);
                    tree.next();
                }
                (_, Some(&(p, c))) => {
                    push(p, 1, c);
                    lone.next();
                }
                (Some((&s, &(e, c))), None) => {
                    push(s, e - s, c);
                    tree.next();
                }
                (None, None) => break,
            }
        }
        out
    }

    /// Move every lone page in `[start, end)` into the range table, so that range operations
    /// there see all counts. Costs `min(end - start, lone pages)` hash operations.
    fn absorb_singles(&mut self, start: u64, end: u64) {
        if self.singles.is_empty() {
            return;
        }
        let moved: Vec<(u64, u32)> = if (self.singles.len() as u64) <= end - start {
            let v: Vec<(u64, u32)> = self
                .singles
                .iter()
                .filter(|&(&p, _)| p >= start && p < end)
                .map(|(&p, &c)| (p, c))
                .collect();
            for (p, _) in &v {
                self.singles.remove(p);
            }
            v
        } else {
            (start..end)
                .filter_map(|p| self.singles.remove(&p).map(|c| (p, c)))
                .collect()
        };
        for (p, c) in moved {
            // Lone pages are outside every range: insert, then restore the canonical form.
            self.map.insert(p, (p + 1, c));
            self.merge_at(p + 1);
            self.merge_at(p);
        }
    }

    /// Split the range containing `at` (if any) so that a range starts at `at`.
    fn split_at(&mut self, at: u64) {
        if let Some((&s, &(e, c))) = self.map.range(..at).next_back() {
            if e > at {
                self.map.insert(s, (at, c));
                self.map.insert(at, (e, c));
            }
        }
    }

    /// Merge the range starting at `at` with its predecessor if they touch with equal counts.
    fn merge_at(&mut self, at: u64) {
        let Some(&(e, c)) = self.map.get(&at) else {
            return;
        };
        if let Some((&ps, &(pe, pc))) = self.map.range(..at).next_back() {
            if pe == at && pc == c {
                self.map.remove(&at);
                self.map.insert(ps, (e, c));
            }
        }
    }

    /// Add one pin to each of `n` pages from `start`.
    pub fn add(&mut self, start: u64, n: u64) {
        if n == 0 {
            return;
        }
        if n == 1 {
            if let Some(c) = self.singles.get_mut(&start) {
                *c += 1;
                self.total += 1;
                return;
            }
            // A page that extends a range or a lone neighbour goes to the range table, so
            // pinning page by page through contiguous memory still yields one range.
            let touches_range = !self.map.is_empty()
                && self
                    .map
                    .range(..=start)
                    .next_back()
                    .is_some_and(|(_, &(e, _))| e >= start);
            let lone_left = start > 0 && self.singles.contains_key(&(start - 1));
            if !touches_range && !lone_left {
                self.singles.insert(start, 1);
                self.total += 1;
                return;
            }
        }
        let end = start + n;
        self.absorb_singles(start.saturating_sub(1), end.saturating_add(1));
        self.total += n;
        // Fast path: the last range starting before `end` ends at or before `start`, so nothing
        // in [start, end) is pinned yet (ranges are sorted and disjoint).
        let prev = self.map.range(..end).next_back().map(|(&s, &v)| (s, v));
        if prev.is_none_or(|(_, (e, _))| e <= start) {
            let mut new_start = start;
            if let Some((ps, (pe, 1))) = prev {
                if pe == start {
                    new_start = ps;
                }
            }
            let mut new_end = end;
            if let Some(&(ne, 1)) = self.map.get(&end) {
                self.map.remove(&end);
                new_end = ne;
            }
            self.map.insert(new_start, (new_end, 1));
            return;
        }
        self.split_at(start);
        self.split_at(end);
        let mut cur = start;
        let segs: Vec<(u64, u64, u32)> = self
            .map
            .range(start..end)
            .map(|(&s, &(e, c))| (s, e, c))
            .collect();
        for (s, e, c) in segs {
            if s > cur {
                self.map.insert(cur, (s, 1));
            }
            self.map.insert(s, (e, c + 1));
            cur = e;
        }
        if cur < end {
            self.map.insert(cur, (end, 1));
        }
        let touched: Vec<u64> = self.map.range(start..=end).map(|(&s, _)| s).collect();
        for s in touched.into_iter().rev() {
            self.merge_at(s);
        }
        self.merge_at(start);
    }

    /// Remove one pin from each of `n` pages from `start`. Returns the pages that were not
    /// pinned (an unbalanced unpin, which the caller reports); those stay at 0.
    pub fn sub(&mut self, start: u64, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        if n == 1 {
            if let Some(c) = self.singles.get_mut(&start) {
                *c -= 1;
                if *c == 0 {
                    self.singles.remove(&start);
                }
                self.total -= 1;
                return 0;
            }
        }
        let end = start + n;
        self.absorb_singles(start, end);
        // Fast path: one count-1 range holds all of [start, end): cut the hole out of it.
        if let Some((&s, &(e, 1))) = self.map.range(..=start).next_back() {
            if e >= end {
                self.total -= n;
                if s < start {
                    self.map.insert(s, (start, 1));
                } else {
                    self.map.remove(&s);
                }
                if end < e {
                    self.map.insert(end, (e, 1));
                }
                return 0;
            }
        }
        self.split_at(start);
        self.split_at(end);
        let segs: Vec<(u64, u64, u32)> = self
            .map
            .range(start..end)
            .map(|(&s, &(e, c))| (s, e, c))
            .collect();
        let mut covered = 0;
        for (s, e, c) in segs {
            covered += e - s;
            self.total -= e - s;
            if c == 1 {
                self.map.remove(&s);
            } else {
                self.map.insert(s, (e, c - 1));
            }
        }
        let touched: Vec<u64> = self.map.range(start..=end).map(|(&s, _)| s).collect();
        for s in touched.into_iter().rev() {
            self.merge_at(s);
        }
        self.merge_at(start);
        n - covered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The counts after one pin of each `(start, pages)` in turn.
    fn pinned(adds: &[(u64, u64)]) -> PinCounts {
        let mut p = PinCounts::new();
        for &(start, n) in adds {
            p.add(start, n);
        }
        p
    }

    #[test]
    fn add_sub_merge_and_overlap() {
        let mut p = pinned(&[(10, 5), (15, 5)]);
        assert_eq!(
            p.ranges(),
            vec![(10, 10, 1)],
            "adjacent count-1 ranges merge"
        );
        p.add(12, 4);
        assert_eq!(p.ranges(), vec![(10, 2, 1), (12, 4, 2), (16, 4, 1)]);
        assert_eq!(p.total(), 14);
        assert_eq!(p.get(13), 2);
        assert_eq!(p.sub(12, 4), 0);
        assert_eq!(p.ranges(), vec![(10, 10, 1)]);
        assert_eq!(p.sub(8, 4), 2, "two of the four pages were not pinned");
        assert_eq!(p.ranges(), vec![(12, 8, 1)]);
        assert_eq!(p.sub(12, 8), 0);
        assert!(p.ranges().is_empty());
        assert_eq!(p.total(), 0);
    }

    #[test]
    fn fast_paths_keep_the_canonical_form() {
        let mut p = pinned(&[(10, 2), (14, 2), (12, 2)]);
        assert_eq!(
            p.ranges(),
            vec![(10, 6, 1)],
            "fills a gap between two count-1 ranges"
        );
        assert_eq!(p.sub(12, 2), 0);
        assert_eq!(p.ranges(), vec![(10, 2, 1), (14, 2, 1)]);
        assert_eq!(p.sub(10, 2), 0);
        assert_eq!(p.sub(14, 2), 0);
        assert!(p.ranges().is_empty());
        assert_eq!(p, PinCounts::new(), "empty again");
        let p = pinned(&[(0, 4), (0, 4), (4, 4)]);
        assert_eq!(
            p.ranges(),
            vec![(0, 4, 2), (4, 4, 1)],
            "a count-2 neighbour is not merged"
        );
        assert_eq!(p.total(), 12);
    }

    #[test]
    fn add_over_gap_fills_with_one() {
        let p = pinned(&[(0, 2), (4, 2), (0, 8)]);
        assert_eq!(p.ranges(), vec![(0, 2, 2), (2, 2, 1), (4, 2, 2), (6, 2, 1)]);
        assert_eq!(p.total(), 12);
    }

    /// Canonical ranges of a per-page reference count table.
    fn reference_ranges(r: &std::collections::BTreeMap<u64, u32>) -> Vec<(u64, u64, u32)> {
        let mut out: Vec<(u64, u64, u32)> = Vec::new();
        for (&p, &c) in r {
            match out.last_mut() {
                Some((s, n, lc)) if *s + *n == p && *lc == c => *n += 1,
                _ => out.push((p, 1, c)),
            }
        }
        out
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(400))]

        /// Single-page and range pins and unpins, mixed, against a per-page reference.
        #[test]
        fn matches_a_per_page_reference(
            ops in proptest::collection::vec(
                (proptest::bool::ANY, 0u64..48, proptest::prop_oneof![3 => proptest::strategy::Just(1u64), 1 => 1u64..10]),
                0..80,
            )
        ) {
            let mut p = PinCounts::new();
            let mut r = std::collections::BTreeMap::<u64, u32>::new();
            for (is_add, start, n) in ops {
                if is_add {
                    p.add(start, n);
                    for pfn in start..start + n {
                        *r.entry(pfn).or_insert(0) += 1;
                    }
                } else {
                    let mut missing = 0;
                    for pfn in start..start + n {
                        match r.get_mut(&pfn) {
                            Some(c) if *c > 1 => *c -= 1,
                            Some(_) => {
                                r.remove(&pfn);
                            }
                            None => missing += 1,
                        }
                    }
                    proptest::prop_assert_eq!(p.sub(start, n), missing);
                }
                proptest::prop_assert_eq!(p.ranges(), reference_ranges(&r));
                proptest::prop_assert_eq!(p.total(), r.values().map(|&c| u64::from(c)).sum::<u64>());
                for pfn in start.saturating_sub(1)..start + n + 1 {
                    proptest::prop_assert_eq!(p.get(pfn), r.get(&pfn).copied().unwrap_or(0));
                }
            }
        }
    }
}
