//! Address vocabulary shared by every crate: size constants, the inclusive `IovaRange`, `Pfn` and
//! page counts (`Pages`).
//!
//! Range convention (the kernel's, and the one this workspace uses everywhere): a range is
//! `[start, last]` with `last` **inclusive**, so the whole 64-bit space `[0, u64::MAX]` is a range
//! and nothing wraps; where an exclusive end is meant the name says `end`. `IovaRange` can only be
//! built non-empty and without wrapping: its constructors are checked (`None` on a wrap, a zero
//! size or `last < start`), so code holding one never re-checks.

use std::fmt;

/// 4 KiB.
pub const SZ_4K: u64 = 1 << 12;
/// 16 KiB.
pub const SZ_16K: u64 = 1 << 14;
/// 64 KiB.
pub const SZ_64K: u64 = 1 << 16;
/// 2 MiB.
pub const SZ_2M: u64 = 1 << 21;
/// 32 MiB.
pub const SZ_32M: u64 = 1 << 25;
/// 512 MiB.
pub const SZ_512M: u64 = 1 << 29;
/// 1 GiB.
pub const SZ_1G: u64 = 1 << 30;

/// A non-empty, inclusive range of IOVAs `[start, last]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IovaRange {
    start: u64,
    last: u64,
}

impl IovaRange {
    /// The whole 64-bit IOVA space, `[0, 2^64 - 1]`.
    pub const FULL: IovaRange = IovaRange {
        start: 0,
        last: u64::MAX,
    };

    /// `[start, last]`, or `None` if `last < start`.
    pub const fn new(start: u64, last: u64) -> Option<IovaRange> {
        if last < start {
            None
        } else {
            Some(IovaRange { start, last })
        }
    }

    /// `[start, start + size - 1]`, or `None` if `size` is 0 or the range wraps past 2^64.
    pub const fn from_start_size(start: u64, size: u64) -> Option<IovaRange> {
        if size == 0 {
            return None;
        }
        match start.checked_add(size - 1) {
            Some(last) => Some(IovaRange { start, last }),
            None => None,
        }
    }

    /// The first IOVA.
    pub const fn start(self) -> u64 {
        self.start
    }

    /// The last IOVA (inclusive).
    pub const fn last(self) -> u64 {
        self.last
    }

    /// The number of bytes, or `None` for the full 2^64-byte space.
    pub const fn size(self) -> Option<u64> {
        (self.last - self.start).checked_add(1)
    }

    /// The exclusive end, or `None` when the range reaches the top of the space.
    pub const fn end(self) -> Option<u64> {
        self.last.checked_add(1)
    }

    /// Whether `iova` lies inside.
    pub const fn contains(self, iova: u64) -> bool {
        self.start <= iova && iova <= self.last
    }

    /// Whether `other` lies wholly inside.
    pub const fn covers(self, other: IovaRange) -> bool {
        self.start <= other.start && other.last <= self.last
    }

    /// Whether the two share at least one IOVA.
    pub const fn overlaps(self, other: IovaRange) -> bool {
        self.start <= other.last && other.start <= self.last
    }

    /// The IOVAs in both, if any.
    pub fn intersect(self, other: IovaRange) -> Option<IovaRange> {
        IovaRange::new(self.start.max(other.start), self.last.min(other.last))
    }

    /// `(start, last)`, for code and formats that keep plain pairs.
    pub const fn pair(self) -> (u64, u64) {
        (self.start, self.last)
    }
}

impl fmt::Display for IovaRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{:#x}, {:#x}]", self.start, self.last)
    }
}

/// A page frame number: a physical address shifted right by the 4 KiB page shift.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pfn(pub u64);

impl Pfn {
    /// The frame that holds physical address `paddr`.
    pub const fn from_paddr(paddr: u64) -> Pfn {
        Pfn(paddr >> crate::PAGE_SHIFT)
    }

    /// The frame's physical address, or `None` if it does not fit 64 bits.
    pub const fn paddr(self) -> Option<u64> {
        pages_to_bytes(self.0)
    }

    /// The frame `n` frames on, or `None` on overflow.
    pub const fn checked_add(self, n: u64) -> Option<Pfn> {
        match self.0.checked_add(n) {
            Some(p) => Some(Pfn(p)),
            None => None,
        }
    }
}

/// A count of 4 KiB pages (locked memory, pins, batch sizes), never bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pages(pub u64);

impl Pages {
    /// The pages that `bytes` spans, rounded down.
    pub const fn from_bytes(bytes: u64) -> Pages {
        Pages(bytes >> crate::PAGE_SHIFT)
    }

    /// The bytes, or `None` if they do not fit 64 bits.
    pub const fn bytes(self) -> Option<u64> {
        pages_to_bytes(self.0)
    }
}

/// `n` 4 KiB pages in bytes (a frame number as an address), or `None` past 2^64.
const fn pages_to_bytes(n: u64) -> Option<u64> {
    if n > (u64::MAX >> crate::PAGE_SHIFT) {
        None
    } else {
        Some(n << crate::PAGE_SHIFT)
    }
}

impl fmt::Display for Pages {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} pages", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iova_range_constructors_are_checked() {
        assert_eq!(IovaRange::from_start_size(0x1000, 0), None);
        assert_eq!(IovaRange::from_start_size(u64::MAX - 0xfff, 0x2000), None);
        let top = IovaRange::from_start_size(u64::MAX - 0xfff, 0x1000).unwrap();
        assert_eq!(top.last(), u64::MAX);
        assert_eq!(top.end(), None);
        assert_eq!(top.size(), Some(0x1000));
        assert_eq!(IovaRange::new(5, 4), None);
        assert_eq!(IovaRange::FULL.size(), None);
        assert_eq!(IovaRange::FULL.pair(), (0, u64::MAX));
    }

    #[test]
    fn iova_range_relations() {
        let a = IovaRange::new(0x1000, 0x1fff).unwrap();
        let b = IovaRange::new(0x1fff, 0x2fff).unwrap();
        let c = IovaRange::new(0x2000, 0x2fff).unwrap();
        assert!(a.overlaps(b) && !a.overlaps(c));
        assert_eq!(a.intersect(b), IovaRange::new(0x1fff, 0x1fff));
        assert_eq!(a.intersect(c), None);
        assert!(IovaRange::FULL.covers(a) && !a.covers(b));
        assert!(a.contains(0x1fff) && !a.contains(0x2000));
        assert_eq!(a.to_string(), "[0x1000, 0x1fff]");
    }

    #[test]
    fn pfn_and_pages_convert_with_checks() {
        assert_eq!(Pfn::from_paddr(0x20_0000).0, 0x200);
        assert_eq!(Pfn(0x200).paddr(), Some(0x20_0000));
        assert_eq!(Pfn(u64::MAX).paddr(), None);
        assert_eq!(Pfn(u64::MAX).checked_add(1), None);
        assert_eq!(Pages::from_bytes(SZ_2M), Pages(512));
        assert_eq!(Pages(512).bytes(), Some(SZ_2M));
        assert_eq!(Pages(u64::MAX).bytes(), None);
    }
}
