//! Pin counts per page, stored as non-overlapping ranges of equal count, so that memory nobody
//! pinned costs nothing and a pinned 1 GiB huge page costs one entry.
//!
//! Pages pinned one at a time where no range covers them (the scattered-4K case) live in hash
//! side tables instead, so pinning and unpinning them costs no B-tree descent: `ones`, lone
//! pages pinned once, as 64-pfn bitmaps keyed by `pfn / 64` (scattered pages share words, so the
//! table stays small enough for the cache however the pfns are ordered), and `multi`, lone pages
//! pinned more than once, `pfn → count`. Invariants: a pfn is in at most one of the three
//! tables; `ones` holds no zero word; every count in `multi` is at least 2 and every count in
//! the range table at least 1; `total` is the sum of all counts; `ranges()` merges the tables
//! into the one canonical form (sorted, adjacent ranges of equal count merged), so the
//! representation never shows. Memory stays bounded by what is pinned: one entry per pinned
//! range or lone pinned page at most, and a page pinned next to a range or a lone page joins
//! the range table, so contiguous memory pinned page by page is still one range.

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

/// A hash map keyed by pfn (or pfn / 64).
type PfnMap<V> = HashMap<u64, V, BuildHasherDefault<PfnHasher>>;

/// The `ones` word of `pfn` and its bit there.
#[inline]
fn word_bit(pfn: u64) -> (u64, u64) {
    (pfn >> 6, 1u64 << (pfn & 63))
}

/// `start pfn → (end pfn exclusive, count)`; adjacent ranges with the same count are merged.
/// Single pages pinned outside every range are kept in hash side tables (see the module doc).
#[derive(Clone, Debug, Default)]
pub struct PinCounts {
    map: BTreeMap<u64, (u64, u32)>,
    /// Lone pages pinned once: bit `pfn % 64` of word `pfn / 64`; no zero words.
    ones: PfnMap<u64>,
    /// Lone pages pinned more than once: `pfn → count` (≥ 2).
    multi: PfnMap<u32>,
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
        if let Some(c) = self.lone(pfn) {
            return c;
        }
        self.tree_get(pfn)
    }

    /// The count of a lone page (`None` when `pfn` is in neither side table).
    #[inline]
    fn lone(&self, pfn: u64) -> Option<u32> {
        let (w, bit) = word_bit(pfn);
        if self.ones.get(&w).is_some_and(|&x| x & bit != 0) {
            return Some(1);
        }
        if self.multi.is_empty() {
            return None;
        }
        self.multi.get(&pfn).copied()
    }

    /// Whether no page is in the side tables.
    #[inline]
    fn no_lone_pages(&self) -> bool {
        self.ones.is_empty() && self.multi.is_empty()
    }

    /// Every lone page with its count, sorted by pfn.
    fn lone_pages(&self) -> Vec<(u64, u32)> {
        let mut lone: Vec<(u64, u32)> = self.multi.iter().map(|(&p, &c)| (p, c)).collect();
        for (&w, &bits) in &self.ones {
            let mut b = bits;
            while b != 0 {
                lone.push(((w << 6) | u64::from(b.trailing_zeros()), 1));
                b &= b - 1;
            }
        }
        lone.sort_unstable();
        lone
    }

    /// Clear bit `bit` of `ones` word `w` (set), dropping the word when it becomes zero.
    #[inline]
    fn clear_one(&mut self, w: u64, bit: u64) {
        if let Some(x) = self.ones.get_mut(&w) {
            *x &= !bit;
            if *x == 0 {
                self.ones.remove(&w);
            }
        }
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
        if self.no_lone_pages() {
            return self.map.iter().map(|(&s, &(e, c))| (s, e - s, c)).collect();
        }
        let lone = self.lone_pages();
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
    /// there see all counts. Costs `min(words or pages in the range, side-table entries)` hash
    /// operations.
    fn absorb_singles(&mut self, start: u64, end: u64) {
        if self.no_lone_pages() || start >= end {
            return;
        }
        let mut moved: Vec<(u64, u32)> = Vec::new();
        if !self.ones.is_empty() {
            let (w0, w1) = (start >> 6, (end - 1) >> 6);
            let words: Vec<u64> = if (self.ones.len() as u64) <= w1 - w0 {
                self.ones
                    .keys()
                    .copied()
                    .filter(|w| (w0..=w1).contains(w))
                    .collect()
            } else {
                (w0..=w1).filter(|w| self.ones.contains_key(w)).collect()
            };
            for w in words {
                // The bits of word `w` inside [start, end).
                let lo = start.saturating_sub(w << 6);
                let hi = (end - (w << 6)).min(64);
                let mask = if hi - lo == 64 {
                    u64::MAX
                } else {
                    ((1u64 << (hi - lo)) - 1) << lo
                };
                let x = self.ones.get_mut(&w).expect("listed above");
                let mut b = *x & mask;
                *x &= !mask;
                if *x == 0 {
                    self.ones.remove(&w);
                }
                while b != 0 {
                    moved.push(((w << 6) | u64::from(b.trailing_zeros()), 1));
                    b &= b - 1;
                }
            }
        }
        if !self.multi.is_empty() {
            if (self.multi.len() as u64) <= end - start {
                let v: Vec<(u64, u32)> = self
                    .multi
                    .iter()
                    .filter(|&(&p, _)| p >= start && p < end)
                    .map(|(&p, &c)| (p, c))
                    .collect();
                for (p, _) in &v {
                    self.multi.remove(p);
                }
                moved.extend(v);
            } else {
                moved.extend((start..end).filter_map(|p| self.multi.remove(&p).map(|c| (p, c))));
            }
        }
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
            if !self.multi.is_empty() {
                if let Some(c) = self.multi.get_mut(&start) {
                    *c += 1;
                    self.total += 1;
                    return;
                }
            }
            let (w, bit) = word_bit(start);
            let word = self.ones.get(&w).copied().unwrap_or(0);
            if word & bit != 0 {
                // A lone page pinned a second time moves from `ones` to `multi`.
                self.clear_one(w, bit);
                self.multi.insert(start, 2);
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
            let lone_left = start > 0
                && if start & 63 != 0 {
                    word & (bit >> 1) != 0
                        || (!self.multi.is_empty() && self.multi.contains_key(&(start - 1)))
                } else {
                    self.lone(start - 1).is_some()
                };
            if !touches_range && !lone_left {
                *self.ones.entry(w).or_insert(0) |= bit;
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
            let (w, bit) = word_bit(start);
            if let Some(x) = self.ones.get_mut(&w) {
                if *x & bit != 0 {
                    *x &= !bit;
                    if *x == 0 {
                        self.ones.remove(&w);
                    }
                    self.total -= 1;
                    return 0;
                }
            }
            if !self.multi.is_empty() {
                if let Some(c) = self.multi.get_mut(&start) {
                    *c -= 1;
                    if *c == 1 {
                        // Down to one pin: back to `ones`.
                        self.multi.remove(&start);
                        *self.ones.entry(w).or_insert(0) |= bit;
                    }
                    self.total -= 1;
                    return 0;
                }
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
    use proptest::strategy::Strategy;

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

    /// Runs `(add?, start, pages)` operations on a `PinCounts` and on a per-page reference,
    /// checking after each that the results, ranges, total and counts around it agree.
    fn against_reference(
        ops: Vec<(bool, u64, u64)>,
    ) -> Result<(), proptest::test_runner::TestCaseError> {
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
        Ok(())
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
            against_reference(ops)?;
        }

        /// Mostly lone pages spread over several 64-pfn bitmap words (every third pfn, word
        /// edges), pinned up to three times, with ranges across words now and then.
        #[test]
        fn lone_pages_across_bitmap_words_match_the_reference(
            ops in proptest::collection::vec(
                (
                    proptest::bool::ANY,
                    proptest::prop_oneof![
                        (0u64..70).prop_map(|x| x * 3),
                        (1u64..4).prop_map(|w| w * 64 - 1),
                        (1u64..4).prop_map(|w| w * 64),
                    ],
                    proptest::prop_oneof![6 => proptest::strategy::Just(1u64), 1 => 1u64..140],
                ),
                0..120,
            )
        ) {
            against_reference(ops)?;
        }
    }

    #[test]
    fn a_lone_page_pinned_twice_and_lone_neighbours_across_a_word_edge() {
        let mut p = pinned(&[(1000, 1), (1002, 1), (1000, 1)]);
        assert_eq!(p.get(1000), 2);
        assert_eq!(p.ranges(), vec![(1000, 1, 2), (1002, 1, 1)]);
        assert_eq!(p.total(), 3);
        assert_eq!(p.sub(1000, 1), 0);
        assert_eq!(p.ranges(), vec![(1000, 1, 1), (1002, 1, 1)]);
        assert_eq!(p.sub(1000, 3), 1, "pfn 1001 was not pinned");
        assert_eq!(p, PinCounts::new());
        // 127 and 128 sit in different words: the second still finds its lone neighbour and
        // both go to the range table as one range.
        let mut p = pinned(&[(127, 1), (128, 1)]);
        assert_eq!(p.ranges(), vec![(127, 2, 1)]);
        assert!(p.ones.is_empty() && p.multi.is_empty());
        assert_eq!(p.sub(127, 1), 0);
        assert_eq!(p.sub(128, 1), 0);
        assert_eq!(p.sub(128, 1), 1);
        assert_eq!(p.total(), 0);
    }
}
