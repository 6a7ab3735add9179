//! The pin batch (`struct vfio_batch`): the pages one call of a page source returned, and how
//! far the engine has consumed them.
//!
//! Invariants: `runs` holds at most `capacity` entries (in `PerPage` mode every entry is one
//! page, so at most `capacity` pages); `idx`/`off` point at the first unconsumed page, and the
//! batch is cleared as soon as everything is consumed. Page sources fill a batch only through
//! `page_limit`, `is_full`, `push` and `extend_last`; the engine reads it through `current`,
//! `contiguous_pages`, `advance` and `leftovers`.

/// How a page source reports what it pinned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PinMode {
    /// One batch entry per 4 KiB page, at most `capacity` pages: the kernel's `vfio_batch` of
    /// `struct page` pointers (GUP fills one slot per page).
    PerPage,
    /// One batch entry per piece of a folio (a whole 2M/1G huge page in one entry), at most
    /// `capacity` entries: the large-folio fast path.
    Folio,
}

/// A physically contiguous piece of pinned memory in a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PfnRun {
    /// The first pfn.
    pub pfn: u64,
    /// Pages from `pfn`.
    pub npages: u64,
    /// `is_invalid_reserved_pfn`: the page is not accounted and not unpinned.
    pub reserved: bool,
}

/// The pin batch (`struct vfio_batch`): what one call of the page source returned, and how much
/// of it the engine has consumed. Leftovers are carried into the next pin run (spec §3.2).
#[derive(Debug)]
pub struct Batch {
    runs: Vec<PfnRun>,
    /// Index of the current entry.
    idx: usize,
    /// Pages of `runs[idx]` already consumed.
    off: u64,
    /// Entries the source may return per call (pages in `PerPage` mode).
    capacity: usize,
    mode: PinMode,
}

impl Batch {
    /// The kernel's `VFIO_BATCH_MAX_CAPACITY` (one page of pointers).
    pub const MAX_CAPACITY: usize = 512;

    /// An empty batch of at most `capacity` entries.
    pub fn new(mode: PinMode, capacity: usize) -> Self {
        Self::with_buffer(mode, capacity, Vec::with_capacity(capacity))
    }

    /// An empty batch that reuses `buf`'s allocation (the kernel keeps a page for it between
    /// calls); `into_buffer` gives it back.
    pub fn with_buffer(mode: PinMode, capacity: usize, mut buf: Vec<PfnRun>) -> Self {
        buf.clear();
        Batch {
            runs: buf,
            idx: 0,
            off: 0,
            capacity,
            mode,
        }
    }

    /// The entries' buffer, for the next `with_buffer`.
    pub fn into_buffer(self) -> Vec<PfnRun> {
        self.runs
    }

    /// How the source reports what it pinned.
    pub fn mode(&self) -> PinMode {
        self.mode
    }

    /// Every entry of the current fill, consumed or not.
    pub fn runs(&self) -> &[PfnRun] {
        &self.runs
    }

    /// The most pages one pin call of `npages` may put in: `capacity` pages in `PerPage` mode;
    /// in `Folio` mode entries, not pages, are bounded (`is_full`).
    pub fn page_limit(&self, npages: u64) -> u64 {
        match self.mode {
            PinMode::PerPage => npages.min(self.capacity as u64),
            PinMode::Folio => npages,
        }
    }

    /// Entries that still fit.
    pub fn entries_left(&self) -> u64 {
        self.capacity.saturating_sub(self.runs.len()) as u64
    }

    /// Whether no entry fits any more.
    pub fn is_full(&self) -> bool {
        self.entries_left() == 0
    }

    /// Add one entry: `npages` physically contiguous pages from `pfn`.
    pub fn push(&mut self, pfn: u64, npages: u64, reserved: bool) {
        debug_assert!(!self.is_full(), "batch over capacity");
        self.runs.push(PfnRun {
            pfn,
            npages,
            reserved,
        });
    }

    /// Add `npages` entries of one page each, from `pfn` (base pages: one slot per page).
    pub fn push_pages(&mut self, pfn: u64, npages: u64, reserved: bool) {
        debug_assert!(npages <= self.entries_left(), "batch over capacity");
        self.runs.extend((0..npages).map(|i| PfnRun {
            pfn: pfn + i,
            npages: 1,
            reserved,
        }));
    }

    /// The last entry added.
    pub fn last(&self) -> Option<PfnRun> {
        self.runs.last().copied()
    }

    /// Grow the last entry by `npages` pages (a folio that continues past a read boundary).
    pub fn extend_last(&mut self, npages: u64) {
        if let Some(last) = self.runs.last_mut() {
            last.npages += npages;
        }
    }

    /// Whether every page has been consumed.
    pub fn is_empty(&self) -> bool {
        self.idx >= self.runs.len()
    }

    /// Drop every entry (after `leftovers` were unpinned, or all were consumed).
    pub fn clear(&mut self) {
        self.runs.clear();
        self.idx = 0;
        self.off = 0;
    }

    /// The current page: (pfn, reserved).
    pub fn current(&self) -> Option<(u64, bool)> {
        self.runs
            .get(self.idx)
            .map(|r| (r.pfn + self.off, r.reserved))
    }

    /// `num_pages_contiguous`: pages from the current one on that follow each other physically
    /// with the same reservedness, at most `max`.
    pub fn contiguous_pages(&self, max: u64) -> u64 {
        let Some(first) = self.runs.get(self.idx) else {
            return 0;
        };
        let mut n = (first.npages - self.off).min(max);
        let mut next = first.pfn + self.off + n;
        for r in &self.runs[self.idx + 1..] {
            if n >= max || r.pfn != next || r.reserved != first.reserved {
                break;
            }
            let take = r.npages.min(max - n);
            n += take;
            next += take;
        }
        n
    }

    /// Consume `n` pages.
    pub fn advance(&mut self, mut n: u64) {
        while n > 0 {
            let Some(r) = self.runs.get(self.idx) else {
                return;
            };
            let left = r.npages - self.off;
            if n < left {
                self.off += n;
                return;
            }
            n -= left;
            self.idx += 1;
            self.off = 0;
        }
        if self.is_empty() {
            self.clear();
        }
    }

    /// The unconsumed pages, as runs (for `vfio_batch_unpin`).
    pub fn leftovers(&self) -> impl Iterator<Item = PfnRun> + '_ {
        self.runs
            .iter()
            .enumerate()
            .skip(self.idx)
            .map(move |(i, r)| {
                let skip = if i == self.idx { self.off } else { 0 };
                PfnRun {
                    pfn: r.pfn + skip,
                    npages: r.npages - skip,
                    reserved: r.reserved,
                }
            })
    }
}
