//! Pin counts per page, stored as non-overlapping ranges of equal count, so that memory nobody
//! pinned costs nothing and a pinned 1 GiB huge page costs one entry.

use std::collections::BTreeMap;

/// `start pfn → (end pfn exclusive, count)`; adjacent ranges with the same count are merged.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PinCounts {
    map: BTreeMap<u64, (u64, u32)>,
    total: u64,
}

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
        match self.map.range(..=pfn).next_back() {
            Some((_, &(end, c))) if pfn < end => c,
            _ => 0,
        }
    }

    /// Ranges as `(start, pages, count)`.
    pub fn ranges(&self) -> Vec<(u64, u64, u32)> {
        self.map.iter().map(|(&s, &(e, c))| (s, e - s, c)).collect()
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
        let end = start + n;
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
        let end = start + n;
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
}
