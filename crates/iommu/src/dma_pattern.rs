//! DMA access patterns: the IOVAs a device reads or writes, in order, to replay against a
//! domain's IOTLB (`Domain::access`).
//!
//! A pattern produces offsets inside a window of `window` bytes; [`Extents`] lays the window
//! over a domain's mapped IOVA (its leaves, merged where they touch), so that the same pattern
//! runs on any trace's final layout. Every access is one translation of `access` bytes at an
//! offset aligned to `access`.
//!
//! Invariants this module owns: patterns are deterministic (the random ones draw from a seeded
//! xorshift generator); every offset is `< window` and a multiple of `access`.

use crate::{Access, Domain, IotlbStats, Leaf};

/// The shape of a device's DMA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pattern {
    /// Reads from the start of the window to its end, then again.
    Sequential,
    /// Reads at uniformly random offsets over the window.
    Random,
    /// A NIC: a ring of `RING_SLOTS` 16-byte descriptors at the start of the window and one
    /// `RING_BUFFER`-byte buffer per descriptor spread evenly over the rest; per packet the
    /// device reads the descriptor, then writes the buffer.
    Ring,
    /// A storage queue: `QUEUE_DEPTH` 64-byte submission entries, then as many 16-byte
    /// completion entries, then data; per command the device reads the submission entry,
    /// transfers `QUEUE_IO` bytes at a random aligned offset of the data area and writes the
    /// completion entry.
    Queue,
}

/// Descriptors of the NIC ring.
pub const RING_SLOTS: u64 = 256;
/// Bytes of one NIC receive buffer.
pub const RING_BUFFER: u64 = 2048;
/// Commands of the storage queue.
pub const QUEUE_DEPTH: u64 = 64;
/// Bytes one storage command transfers.
pub const QUEUE_IO: u64 = 16 << 10;

impl Pattern {
    /// Every pattern, in the order the command line lists them.
    pub const ALL: [Pattern; 4] = [
        Pattern::Sequential,
        Pattern::Random,
        Pattern::Ring,
        Pattern::Queue,
    ];
    /// The pattern's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Pattern::Sequential => "sequential",
            Pattern::Random => "random",
            Pattern::Ring => "ring",
            Pattern::Queue => "queue",
        }
    }
    /// The pattern named `s`.
    pub fn parse(s: &str) -> Option<Pattern> {
        Pattern::ALL.into_iter().find(|p| p.name() == s)
    }
}

/// A pattern over a window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PatternConfig {
    /// The pattern.
    pub pattern: Pattern,
    /// The bytes the device touches (offsets `0..window`).
    pub window: u64,
    /// Bytes per access (one translation each); a power of two.
    pub access: u64,
    /// The seed of the random patterns.
    pub seed: u64,
}

impl PatternConfig {
    /// `pattern` over `window` bytes in 256-byte accesses (a common PCIe max payload), seed 1.
    pub fn new(pattern: Pattern, window: u64) -> PatternConfig {
        PatternConfig {
            pattern,
            window,
            access: 256,
            seed: 1,
        }
    }
    /// The offsets, without end.
    pub fn offsets(&self) -> Offsets {
        Offsets {
            cfg: *self,
            rng: self.seed.max(1),
            step: 0,
            pending: Vec::new(),
        }
    }
}

/// The offsets of a pattern, in order (an endless iterator).
#[derive(Clone, Debug)]
pub struct Offsets {
    cfg: PatternConfig,
    rng: u64,
    step: u64,
    /// The rest of the current packet or command, reversed.
    pending: Vec<u64>,
}

impl Offsets {
    fn random(&mut self, below: u64) -> u64 {
        // xorshift64
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng % below.max(1)
    }
    fn align(&self, off: u64) -> u64 {
        off & !(self.cfg.access - 1)
    }
    /// Queues the accesses of `len` bytes from `off`, then `tail`.
    fn burst(&mut self, head: u64, off: u64, len: u64, tail: Option<u64>) {
        let a = self.cfg.access;
        self.pending.extend(tail);
        let n = len.div_ceil(a);
        self.pending.extend((0..n).rev().map(|i| off + i * a));
        self.pending.push(head);
    }
}

impl Iterator for Offsets {
    type Item = u64;
    fn next(&mut self) -> Option<u64> {
        let (w, a) = (self.cfg.window, self.cfg.access);
        if let Some(o) = self.pending.pop() {
            // A window too small for the ring or the queue wraps onto itself.
            return Some(o % w.max(a));
        }
        let step = self.step;
        self.step += 1;
        let off = match self.cfg.pattern {
            Pattern::Sequential => (step * a) % w.max(a),
            Pattern::Random => self.random(w / a) * a,
            Pattern::Ring => {
                let slot = step % RING_SLOTS;
                let ring = (RING_SLOTS * 16).next_multiple_of(a);
                let stride = self.align((w.saturating_sub(ring) / RING_SLOTS).max(RING_BUFFER));
                let buf = ring + slot * stride;
                let desc = self.align(slot * 16);
                self.burst(desc, buf, RING_BUFFER, None);
                return self.next();
            }
            Pattern::Queue => {
                let slot = step % QUEUE_DEPTH;
                let sq = QUEUE_DEPTH * 64;
                let data = (sq + QUEUE_DEPTH * 16).next_multiple_of(QUEUE_IO);
                let blocks = w.saturating_sub(data) / QUEUE_IO;
                let at = data + self.random(blocks) * QUEUE_IO;
                let cqe = self.align(sq + slot * 16);
                self.burst(self.align(slot * 64), at, QUEUE_IO, Some(cqe));
                return self.next();
            }
        };
        Some(off)
    }
}

/// A domain's mapped IOVA as one address space: its leaves merged where they touch, laid end
/// to end. Offset 0 is the lowest mapped IOVA.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Extents {
    /// `(first iova, bytes, offset of the first byte)`, in IOVA order.
    runs: Vec<(u64, u64, u64)>,
    total: u64,
}

impl Extents {
    /// The extents of `leaves` (in IOVA order, as `Domain::for_each_leaf` gives them).
    pub fn of_leaves(leaves: impl IntoIterator<Item = Leaf>) -> Extents {
        let mut x = Extents::default();
        for l in leaves {
            x.push(l);
        }
        x
    }
    /// Adds the next leaf (in IOVA order): it extends the last run if it follows it, so the
    /// extents cost one entry per run of contiguous IOVA, not one per leaf.
    pub fn push(&mut self, l: Leaf) {
        match self.runs.last_mut() {
            Some((start, len, _)) if *start + *len == l.iova => *len += l.size,
            _ => self.runs.push((l.iova, l.size, self.total)),
        }
        self.total += l.size;
    }
    /// The extents of a domain's leaves, walked without collecting them.
    pub fn of_domain(d: &Domain) -> Extents {
        let mut x = Extents::default();
        d.for_each_leaf(&mut |l| x.push(l));
        x
    }
    /// The extents without their first `offset` bytes (offset 0 becomes the old `offset`).
    pub fn from_offset(&self, offset: u64) -> Extents {
        let mut x = Extents::default();
        for &(start, len, at) in &self.runs {
            let skip = offset.saturating_sub(at).min(len);
            if skip < len {
                x.runs.push((start + skip, len - skip, x.total));
                x.total += len - skip;
            }
        }
        x
    }
    /// Mapped bytes in all.
    pub fn total(&self) -> u64 {
        self.total
    }
    /// The IOVA at `offset` (`None` at or past `total`).
    pub fn iova(&self, offset: u64) -> Option<u64> {
        if offset >= self.total {
            return None;
        }
        let i = self.runs.partition_point(|&(_, _, at)| at <= offset) - 1;
        let (start, _, at) = self.runs[i];
        Some(start + (offset - at))
    }
}

/// Runs `warmup` accesses of `cfg` over `space` on `d` (not counted), then `count` counted
/// ones; returns the IOTLB's counters for those (all zero when `d` has no IOTLB enabled). An
/// offset past the mapped bytes is an access to the IOVA after the last mapped one: a fault.
pub fn replay(
    d: &mut Domain,
    space: &Extents,
    cfg: &PatternConfig,
    warmup: u64,
    count: u64,
) -> IotlbStats {
    let past_end = space
        .runs
        .last()
        .map_or(0, |&(start, len, _)| start.saturating_add(len));
    let mut offsets = cfg.offsets();
    for (i, off) in (&mut offsets).take((warmup + count) as usize).enumerate() {
        if i as u64 == warmup {
            d.reset_iotlb_stats();
        }
        let iova = space.iova(off).unwrap_or(past_end);
        let _: Access = d.access(iova);
    }
    if count == 0 {
        d.reset_iotlb_stats();
    }
    d.iotlb().map(|t| t.stats()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Prot, SZ_2M, SZ_4K};

    fn take(p: Pattern, window: u64, n: usize) -> Vec<u64> {
        PatternConfig::new(p, window).offsets().take(n).collect()
    }

    #[test]
    fn offsets_stay_in_the_window_aligned_and_repeat_for_a_seed() {
        for p in Pattern::ALL {
            for window in [64 << 10, 8 << 20] {
                let v = take(p, window, 5000);
                assert!(v.iter().all(|&o| o < window && o % 256 == 0), "{p:?}");
                assert_eq!(v, take(p, window, 5000), "{p:?} is deterministic");
            }
            assert_eq!(Pattern::parse(p.name()), Some(p));
        }
    }

    #[test]
    fn sequential_walks_the_window_and_wraps() {
        let v = take(Pattern::Sequential, 1024, 6);
        assert_eq!(v, [0, 256, 512, 768, 0, 256]);
    }

    #[test]
    fn random_covers_the_window_and_seeds_differ() {
        let v = take(Pattern::Random, 64 << 10, 4000);
        let mut pages: Vec<u64> = v.iter().map(|o| o / SZ_4K).collect();
        pages.sort();
        pages.dedup();
        assert_eq!(pages.len(), 16);
        let mut other = PatternConfig::new(Pattern::Random, 64 << 10);
        other.seed = 2;
        assert_ne!(other.offsets().take(100).collect::<Vec<_>>(), v[..100]);
    }

    #[test]
    fn a_ring_packet_reads_its_descriptor_then_fills_its_buffer() {
        let window = 16 << 20;
        let v = take(Pattern::Ring, window, 2 * 9);
        let ring = RING_SLOTS * 16;
        let stride = (window - ring) / RING_SLOTS / 256 * 256;
        // Packet 0: descriptor 0, then 8 × 256 bytes of buffer 0.
        assert_eq!(v[0], 0);
        assert_eq!(
            &v[1..9],
            &(0..8).map(|i| ring + i * 256).collect::<Vec<_>>()[..]
        );
        // Packet 1: descriptor 1 (same 256-byte line), buffer 1 one stride further.
        assert_eq!(v[9], 0);
        assert_eq!(v[10], ring + stride);
    }

    #[test]
    fn a_queue_command_is_submission_data_completion() {
        let v = take(Pattern::Queue, 16 << 20, 2 * 66);
        let per = 1 + (QUEUE_IO / 256) as usize + 1;
        assert_eq!(v[0], 0);
        let data = v[1];
        assert_eq!(data % QUEUE_IO, 0);
        assert!(data >= QUEUE_DEPTH * 80);
        assert_eq!(v[per - 1], QUEUE_DEPTH * 64);
        assert_eq!(v[per], 0); // command 1's entry shares the first 256 bytes
        assert_eq!(v[2 * per - 1], QUEUE_DEPTH * 64);
    }

    #[test]
    fn extents_lay_mapped_runs_end_to_end() {
        let leaf = |iova, size| Leaf {
            iova,
            paddr: iova,
            size,
            prot: Prot::RW,
        };
        let x = Extents::of_leaves([leaf(0, SZ_4K), leaf(SZ_4K, SZ_4K), leaf(SZ_2M, SZ_2M)]);
        assert_eq!(x.total(), 2 * SZ_4K + SZ_2M);
        assert_eq!(x.iova(0), Some(0));
        assert_eq!(x.iova(2 * SZ_4K - 1), Some(2 * SZ_4K - 1));
        assert_eq!(x.iova(2 * SZ_4K), Some(SZ_2M));
        assert_eq!(x.iova(x.total()), None);
        let y = x.from_offset(SZ_4K + 16);
        assert_eq!(y.total(), x.total() - SZ_4K - 16);
        assert_eq!(y.iova(0), Some(SZ_4K + 16));
        assert_eq!(y.iova(SZ_4K - 16), Some(SZ_2M));
        assert_eq!(x.from_offset(2 * SZ_4K).iova(0), Some(SZ_2M));
        assert_eq!(x.from_offset(x.total()).total(), 0);
    }
}
