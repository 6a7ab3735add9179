//! `procfs`: what Linux tells of a process's memory through `/proc` and `/sys` (Linux only).
//!
//! - `/proc/PID/pagemap`: one 64-bit entry per virtual page (`pagemap::pfn` reads a present
//!   entry's pfn, which is 0 without CAP_SYS_ADMIN);
//! - `/proc/kpageflags`: one 64-bit entry of flags per pfn (`kpf`), and `folio_of`, the folio a
//!   pfn belongs to as those flags show it;
//! - `/proc/PID/maps` and `/proc/PID/smaps` text (`parse_maps`, `smaps_empty`);
//! - `VmLck` of `/proc/self/status` (`vm_locked_kib`) and the free hugetlb pages of a size.
//!
//! Readers only: nothing here changes memory. Entries are read with positional reads, so one
//! open file serves any number of readers.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use iommu::{Pages, Pfn};

/// `/proc/PID/pagemap` entry bits.
pub mod pagemap {
    /// Page present in RAM.
    pub const PRESENT: u64 = 1 << 63;
    /// Page swapped out.
    pub const SWAPPED: u64 = 1 << 62;
    /// File page or shared anonymous page.
    pub const FILE_SHARED: u64 = 1 << 61;
    /// Page exclusively mapped (since 4.2).
    pub const EXCLUSIVE: u64 = 1 << 56;
    /// Bits 0–54: the pfn of a present page (0 without CAP_SYS_ADMIN).
    pub const PFN_MASK: u64 = (1 << 55) - 1;

    /// The pfn of a present entry.
    pub fn pfn(entry: u64) -> Option<u64> {
        (entry & PRESENT != 0).then_some(entry & PFN_MASK)
    }
}

/// `/proc/kpageflags` bits (include/uapi/linux/kernel-page-flags.h).
pub mod kpf {
    /// The page is locked (`PG_locked`).
    pub const LOCKED: u64 = 1 << 0;
    /// On an LRU list (page cache or anonymous memory the kernel may reclaim).
    pub const LRU: u64 = 1 << 5;
    /// Anonymous memory.
    pub const ANON: u64 = 1 << 12;
    /// The first page of a compound page (folio).
    pub const COMPOUND_HEAD: u64 = 1 << 15;
    /// A page of a compound page other than the first.
    pub const COMPOUND_TAIL: u64 = 1 << 16;
    /// hugetlbfs page.
    pub const HUGE: u64 = 1 << 17;
    /// No page frame behind the pfn.
    pub const NOPAGE: u64 = 1 << 20;
    /// Transparent huge page.
    pub const THP: u64 = 1 << 22;
    /// The shared zero page.
    pub const ZERO_PAGE: u64 = 1 << 24;
    /// `PG_reserved` (exported with the "kernel hacking" flags).
    pub const RESERVED: u64 = 1 << 32;

    /// `is_invalid_reserved_pfn` as kpageflags shows it: a reserved page or the zero page.
    pub fn reserved(flags: u64) -> bool {
        flags & (RESERVED | ZERO_PAGE) != 0
    }
}

/// Read `n` 64-bit entries from `file` at entry index `index` (pagemap, kpageflags). Returns
/// fewer at the end of the file (e.g. past the end of the user address space).
pub fn read_entries(file: &File, index: u64, n: usize) -> io::Result<Vec<u64>> {
    let mut buf = vec![0u8; n * 8];
    let mut done = 0usize;
    let off = index
        .checked_mul(8)
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], off + done as u64) {
            Ok(0) => break,
            Ok(k) => done += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(buf[..done - done % 8]
        .chunks_exact(8)
        .map(|c| u64::from_ne_bytes(c.try_into().expect("8 bytes")))
        .collect())
}

/// Reads runs of 64-bit entries into buffers it keeps, so that a walk of a large range
/// allocates once (`read_entries` allocates for every call).
#[derive(Debug, Default)]
pub struct EntryReader {
    bytes: Vec<u8>,
    entries: Vec<u64>,
}

impl EntryReader {
    /// `read_entries` into this reader's buffer: up to `n` entries from `file` at entry index
    /// `index`, fewer at the end of the file.
    pub fn read(&mut self, file: &File, index: u64, n: usize) -> io::Result<&[u64]> {
        let off = index
            .checked_mul(8)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
        let len = n
            .checked_mul(8)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
        self.bytes.resize(len, 0);
        let mut done = 0usize;
        while done < len {
            match file.read_at(&mut self.bytes[done..], off + done as u64) {
                Ok(0) => break,
                Ok(k) => done += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.entries.clear();
        self.entries.extend(
            self.bytes[..done - done % 8]
                .chunks_exact(8)
                .map(|c| u64::from_ne_bytes(c.try_into().expect("8 bytes"))),
        );
        Ok(&self.entries)
    }
}

/// `/proc/kpageflags` of one pfn (0 when unreadable).
pub fn page_flags(kpageflags: &File, pfn: u64) -> u64 {
    let mut b = [0u8; 8];
    match pfn.checked_mul(8) {
        Some(off) if kpageflags.read_exact_at(&mut b, off).is_ok() => u64::from_ne_bytes(b),
        _ => 0,
    }
}

/// The folio holding `pfn`, as its head and size, from `/proc/kpageflags`. A page that is not
/// compound, or a compound page whose head is not aligned to its size, is `(pfn, 1 page)`.
pub fn folio_of(kpageflags: &File, pfn: Pfn) -> (Pfn, Pages) {
    let (head, n) = folio_head_and_pages(kpageflags, pfn.0);
    (Pfn(head), Pages(n))
}

fn folio_head_and_pages(kpageflags: &File, pfn: u64) -> (u64, u64) {
    let flags = |p: u64| page_flags(kpageflags, p);
    let f = flags(pfn);
    if f & (kpf::COMPOUND_HEAD | kpf::COMPOUND_TAIL) == 0 {
        return (pfn, 1);
    }
    let is_tail = |p: u64| flags(p) & kpf::COMPOUND_TAIL != 0;
    // The usual cases first: a PMD-sized (2M) or PUD-sized (1G) folio.
    for order in [9u32, 18] {
        let n = 1u64 << order;
        let head = pfn & !(n - 1);
        if flags(head) & kpf::COMPOUND_HEAD != 0 && is_tail(head + n - 1) && !is_tail(head + n) {
            return (head, n);
        }
    }
    // Any other order: the nearest aligned head, then where the tails stop.
    let head = if f & kpf::COMPOUND_HEAD != 0 {
        Some(pfn)
    } else {
        (1..=18u32)
            .map(|o| pfn & !((1u64 << o) - 1))
            .find(|&h| flags(h) & kpf::COMPOUND_HEAD != 0)
    };
    let Some(head) = head else {
        return (pfn, 1);
    };
    for order in 1..=18u32 {
        let n = 1u64 << order;
        if !is_tail(head + n) {
            if head % n == 0 && pfn < head + n && (n == 1 || is_tail(head + n - 1)) {
                return (head, n);
            }
            break;
        }
    }
    (pfn, 1)
}

/// `VmLck` of `/proc/self/status`, in KiB.
pub fn vm_locked_kib() -> io::Result<u64> {
    let s = std::fs::read_to_string("/proc/self/status")?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmLck:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| io::Error::other("no VmLck line in /proc/self/status"))
}

/// Free hugetlb pages of `page_size` bytes (2M or 1G), from sysfs; `None` when unreadable.
pub fn free_huge_pages(page_size: u64) -> Option<u64> {
    let kb = page_size >> 10;
    std::fs::read_to_string(format!(
        "/sys/kernel/mm/hugepages/hugepages-{kb}kB/free_hugepages"
    ))
    .ok()
    .and_then(|s| s.trim().parse().ok())
}

/// One `/proc/PID/maps` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapsLine {
    /// First address.
    pub start: u64,
    /// End address (exclusive).
    pub end: u64,
    /// `rwxp`/`rwxs`.
    pub perms: String,
    /// The path or pseudo-name (`[heap]`, `[stack]`, ...); empty for anonymous memory.
    pub name: String,
}

/// Parse `/proc/PID/maps` text.
pub fn parse_maps(text: &str) -> Vec<MapsLine> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.splitn(6, ' ');
            let (range, perms) = (it.next()?, it.next()?);
            let (_off, _dev, _inode) = (it.next()?, it.next()?, it.next()?);
            let name = it.next().unwrap_or("").trim().to_string();
            let (s, e) = range.split_once('-')?;
            Some(MapsLine {
                start: u64::from_str_radix(s, 16).ok()?,
                end: u64::from_str_radix(e, 16).ok()?,
                perms: perms.to_string(),
                name,
            })
        })
        .collect()
}

/// The start addresses of the mappings of `/proc/PID/smaps` text with no resident, hugetlb or
/// swapped memory.
pub fn smaps_empty(text: &str) -> std::collections::HashSet<u64> {
    let mut out = std::collections::HashSet::new();
    let mut cur: Option<(u64, u64)> = None;
    let mut flush = |c: Option<(u64, u64)>| {
        if let Some((start, 0)) = c {
            out.insert(start);
        }
    };
    for line in text.lines() {
        let first = line.split(' ').next().unwrap_or("");
        if let Some((a, b)) = first.split_once('-') {
            if let (Ok(a), Ok(_)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) {
                flush(cur.take());
                cur = Some((a, 0));
                continue;
            }
        }
        let Some((key, val)) = line.split_once(':') else {
            continue;
        };
        if matches!(key, "Rss" | "Shared_Hugetlb" | "Private_Hugetlb" | "Swap") {
            let kb: u64 = val
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .unwrap_or(1);
            if let Some((_, n)) = cur.as_mut() {
                *n += kb;
            }
        }
    }
    flush(cur);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_maps_lines() {
        let t = "00400000-00452000 r-xp 00000000 08:02 173521      /usr/bin/dbus-daemon\n\
                 7ffd3c1a2000-7ffd3c1c3000 rw-p 00000000 00:00 0                          [stack]\n\
                 7f0000000000-7f0000200000 rw-p 00000000 00:00 0 \n";
        let m = parse_maps(t);
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].start, 0x400000);
        assert_eq!(m[0].name, "/usr/bin/dbus-daemon");
        assert_eq!(m[1].name, "[stack]");
        assert_eq!(m[2].name, "");
        assert_eq!(m[2].perms, "rw-p");
    }

    #[test]
    fn smaps_finds_empty_mappings() {
        let t = "7f0000000000-7f0000200000 ---p 00000000 00:00 0 \n\
                 Size:               2048 kB\nRss:                   0 kB\n\
                 Private_Hugetlb:       0 kB\nSwap:                  0 kB\n\
                 VmFlags: mr mw me\n\
                 7f0000200000-7f0000400000 rw-p 00000000 00:00 0 \n\
                 Rss:                   0 kB\nPrivate_Hugetlb:    2048 kB\nSwap: 0 kB\n";
        let e = smaps_empty(t);
        assert!(e.contains(&0x7f00_0000_0000));
        assert!(
            !e.contains(&0x7f00_0020_0000),
            "hugetlb pages are not in Rss"
        );
    }

    #[test]
    fn entry_reader_reads_what_read_entries_reads() {
        let f = File::open("/proc/self/pagemap").unwrap();
        // Eight pages written (present) before either read.
        let buf = vec![1u8; 9 * 4096];
        let here = (buf.as_ptr() as u64).div_ceil(4096);
        let mut r = EntryReader::default();
        let a = r.read(&f, here, 8).unwrap().to_vec();
        assert_eq!(a.len(), 8);
        assert!(a.iter().all(|e| e & pagemap::PRESENT != 0));
        assert_eq!(a, read_entries(&f, here, 8).unwrap());
        drop(buf);
        // Past the end of the user address space: nothing, as read_entries.
        assert_eq!(r.read(&f, 1 << 52, 4).unwrap(), &[] as &[u64]);
        assert!(r.read(&f, u64::MAX, 1).is_err());
    }
}
