//! The syscall boundary: the one module of the crate that contains `unsafe` (Linux only).
//!
//! Everything here is a *safe* wrapper whose soundness does not depend on the caller:
//!
//! - Memory is handed out as `Mapping`s, which own their pages and give out addresses as plain
//!   `u64`s, never references. Nothing in Rust can therefore point into a mapping, so unmapping
//!   (part of) one cannot invalidate a Rust reference. A `Mapping` only ever unmaps pages it
//!   still owns, and it unmaps whatever is left when dropped.
//! - `mmap` never replaces an existing mapping: a fixed address is asked for with
//!   `MAP_FIXED_NOREPLACE`, which fails with `EEXIST` instead.
//! - `mlock`/`munlock` and the `madvise` advice offered here (`Advice`) change residency and
//!   page-size policy, never contents, so they are safe on any address.
//! - `capget`/`capset` change the calling thread's credentials only.
//!
//! The `/proc` readers are not here: they need no `unsafe` (`procfs`).

#![cfg(target_os = "linux")]

use std::collections::BTreeMap;
use std::io;

use iommu::{SZ_1G, SZ_2M, SZ_4K as PAGE};

/// `madvise` advice that never changes memory contents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Advice {
    /// `MADV_HUGEPAGE`: allow transparent huge pages.
    HugePage,
    /// `MADV_NOHUGEPAGE`: never use transparent huge pages.
    NoHugePage,
    /// `MADV_POPULATE_READ`: fault pages in as if read (Linux 5.14+).
    PopulateRead,
    /// `MADV_POPULATE_WRITE`: fault pages in as if written (Linux 5.14+).
    PopulateWrite,
}

impl Advice {
    fn raw(self) -> libc::c_int {
        match self {
            Advice::HugePage => libc::MADV_HUGEPAGE,
            Advice::NoHugePage => libc::MADV_NOHUGEPAGE,
            Advice::PopulateRead => libc::MADV_POPULATE_READ,
            Advice::PopulateWrite => libc::MADV_POPULATE_WRITE,
        }
    }
}

/// hugetlbfs page sizes for `MAP_HUGETLB`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HugeTlb {
    /// 2 MiB pages (`MAP_HUGE_2MB`).
    Size2M,
    /// 1 GiB pages (`MAP_HUGE_1GB`).
    Size1G,
}

impl HugeTlb {
    /// The page size in bytes.
    pub fn size(self) -> u64 {
        match self {
            HugeTlb::Size2M => SZ_2M,
            HugeTlb::Size1G => SZ_1G,
        }
    }
}

/// An anonymous private mapping owned by this value. Pages are addressed by `u64` vaddrs.
#[derive(Debug)]
pub struct Mapping {
    base: u64,
    len: u64,
    writable: bool,
    /// The unit `munmap` must be aligned to (the huge page size for hugetlb).
    unit: u64,
    /// The parts still mapped: start → end.
    live: BTreeMap<u64, u64>,
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl Mapping {
    /// `mmap(at, len, PROT_READ[|PROT_WRITE], MAP_PRIVATE|MAP_ANONYMOUS[|MAP_HUGETLB|MAP_HUGE_*]
    /// [|MAP_FIXED_NOREPLACE])`. `len` must be a non-zero multiple of the page (or huge page) size.
    pub fn anon(
        len: u64,
        writable: bool,
        at: Option<u64>,
        huge: Option<HugeTlb>,
    ) -> io::Result<Mapping> {
        let unit = huge.map_or(PAGE, HugeTlb::size);
        if len == 0 || !len.is_multiple_of(unit) || at.is_some_and(|a| !a.is_multiple_of(unit)) {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let len_usize =
            usize::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::ENOMEM))?;
        let prot = if writable {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        let mut flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
        flags |= match huge {
            None => 0,
            Some(HugeTlb::Size2M) => libc::MAP_HUGETLB | libc::MAP_HUGE_2MB,
            Some(HugeTlb::Size1G) => libc::MAP_HUGETLB | libc::MAP_HUGE_1GB,
        };
        if at.is_some() {
            flags |= libc::MAP_FIXED_NOREPLACE;
        }
        let hint = at.unwrap_or(0) as usize as *mut libc::c_void;
        // SAFETY: an anonymous mapping creates new memory and, without MAP_FIXED, never touches
        // an existing mapping; MAP_FIXED_NOREPLACE fails with EEXIST rather than replacing one.
        // No pointer argument is dereferenced by the kernel.
        let p = unsafe { libc::mmap(hint, len_usize, prot, flags, -1, 0) };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = p as usize as u64;
        let m = Mapping {
            base,
            len,
            writable,
            unit,
            live: BTreeMap::from([(base, base + len)]),
        };
        if let Some(a) = at {
            if a != base {
                // A kernel older than 4.17 ignores MAP_FIXED_NOREPLACE and treats it as a hint.
                drop(m);
                return Err(io::Error::from_raw_os_error(libc::EEXIST));
            }
        }
        Ok(m)
    }

    /// Like `anon` (no hugetlb), at an address aligned to `align` (a power of two): maps
    /// `len + align` and gives back the unaligned head and the tail.
    pub fn anon_aligned(len: u64, writable: bool, align: u64) -> io::Result<Mapping> {
        if align <= PAGE {
            return Mapping::anon(len, writable, None, None);
        }
        let mut m = Mapping::anon(len + align, writable, None, None)?;
        let start = m.base.next_multiple_of(align);
        if start > m.base {
            m.unmap(m.base, start - m.base)?;
        }
        let end = start + len;
        let old_end = m.base + m.len;
        if old_end > end {
            m.unmap(end, old_end - end)?;
        }
        m.base = start;
        m.len = len;
        Ok(m)
    }

    /// The first address of the mapping as created.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// The length of the mapping as created.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the pages may be written (`PROT_WRITE`).
    pub fn is_writable(&self) -> bool {
        self.writable
    }

    /// Whether nothing of the mapping is left.
    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// Whether `[start, start + len)` is wholly mapped by this value.
    pub fn owns(&self, start: u64, len: u64) -> bool {
        let Some(end) = start.checked_add(len) else {
            return false;
        };
        match self.live.range(..=start).next_back() {
            Some((_, &e)) => end <= e,
            None => false,
        }
    }

    /// Whether `addr` is in a part still mapped.
    pub fn contains(&self, addr: u64) -> bool {
        self.owns(addr, 1)
    }

    /// `munmap` a part of the mapping. It must be still mapped by this value and aligned to the
    /// mapping's unit (the huge page size for hugetlb).
    pub fn unmap(&mut self, start: u64, len: u64) -> io::Result<()> {
        if len == 0
            || !start.is_multiple_of(self.unit)
            || !len.is_multiple_of(self.unit)
            || !self.owns(start, len)
        {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        // SAFETY: `[start, start + len)` is part of this anonymous mapping (checked above), which
        // no Rust reference points into (addresses leave this type only as integers).
        let ret = unsafe { libc::munmap(start as usize as *mut libc::c_void, len as usize) };
        check(ret)?;
        let end = start + len;
        let (&s, &e) = self.live.range(..=start).next_back().expect("owned above");
        self.live.remove(&s);
        if s < start {
            self.live.insert(s, start);
        }
        if end < e {
            self.live.insert(end, e);
        }
        Ok(())
    }

    /// Fault `[start, start + len)` in by touching one byte in each page: a volatile read, and
    /// for a writable mapping a write of the same value back (contents are unchanged).
    pub fn touch(&self, start: u64, len: u64) -> io::Result<()> {
        if !self.owns(start, len) {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let mut a = start;
        while a < start + len {
            let p = a as usize as *mut u8;
            // SAFETY: `p` is inside a live private anonymous mapping owned by `self` (checked
            // above), readable, and writable when `self.writable`; no Rust reference aliases it.
            unsafe {
                let v = std::ptr::read_volatile(p);
                if self.writable {
                    std::ptr::write_volatile(p, v);
                }
            }
            a += PAGE;
        }
        Ok(())
    }

    /// Write `byte` to the first byte of every page of `[start, start + len)` (tests use it to
    /// tell pages apart). Fails on a read-only mapping.
    pub fn fill_first_bytes(&self, start: u64, len: u64, byte: u8) -> io::Result<()> {
        if !self.writable || !self.owns(start, len) {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let mut a = start;
        while a < start + len {
            // SAFETY: inside a live writable private anonymous mapping owned by `self` (checked
            // above); no Rust reference aliases it.
            unsafe { std::ptr::write_volatile(a as usize as *mut u8, byte) };
            a += PAGE;
        }
        Ok(())
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        for (&s, &e) in &self.live {
            // SAFETY: every live range belongs to this mapping, which is going away; nothing in
            // Rust points into it.
            let _ = unsafe { libc::munmap(s as usize as *mut libc::c_void, (e - s) as usize) };
        }
        self.live.clear();
    }
}

/// `madvise(addr, len, advice)` with advice that never changes contents.
pub fn madvise(addr: u64, len: u64, advice: Advice) -> io::Result<()> {
    // SAFETY: the advice offered by `Advice` changes residency or page-size policy only, never
    // memory contents or the set of mappings; the kernel validates the range.
    let ret = unsafe {
        libc::madvise(
            addr as usize as *mut libc::c_void,
            len as usize,
            advice.raw(),
        )
    };
    check(ret)
}

/// `mlock(addr, len)`: fault in and keep resident.
pub fn mlock(addr: u64, len: u64) -> io::Result<()> {
    // SAFETY: mlock changes residency only; the kernel validates the range (ENOMEM if unmapped).
    let ret = unsafe { libc::mlock(addr as usize as *const libc::c_void, len as usize) };
    check(ret)
}

/// `PAGEMAP_SCAN` categories (include/uapi/linux/fs.h, Linux 6.7+).
pub mod page_is {
    /// The page is present.
    pub const PRESENT: u64 = 1 << 3;
    /// The page maps the (huge) zero page.
    pub const PFNZERO: u64 = 1 << 5;
    /// The page is mapped by a huge entry (a PMD-mapped THP, or hugetlb).
    pub const HUGE: u64 = 1 << 6;
}

/// `struct pm_scan_arg`.
#[repr(C)]
#[derive(Default)]
struct PmScanArg {
    size: u64,
    flags: u64,
    start: u64,
    end: u64,
    walk_end: u64,
    vec: u64,
    vec_len: u64,
    max_pages: u64,
    category_inverted: u64,
    category_mask: u64,
    category_anyof_mask: u64,
    return_mask: u64,
}

/// `struct page_region`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PageRegion {
    /// First address.
    pub start: u64,
    /// End address (exclusive).
    pub end: u64,
    /// The `page_is` categories of every page in `[start, end)`.
    pub categories: u64,
}

/// `_IOWR('f', 16, struct pm_scan_arg)`.
const PAGEMAP_SCAN: u64 =
    (3 << 30) | ((std::mem::size_of::<PmScanArg>() as u64) << 16) | ((b'f' as u64) << 8) | 16;

/// The `PAGEMAP_SCAN` ioctl on an open `/proc/PID/pagemap`: the pieces of `[start, end)`
/// (page-aligned) with any of the categories `anyof`, as `(start, end, categories & anyof)`,
/// merged where adjacent pages have the same categories. Fails with ENOTTY (or EINVAL) on a
/// kernel without it (before 6.7).
pub fn pagemap_scan(
    pagemap: &std::fs::File,
    start: u64,
    end: u64,
    anyof: u64,
) -> io::Result<Vec<PageRegion>> {
    use std::os::fd::AsRawFd;
    let mut out: Vec<PageRegion> = Vec::new();
    let mut buf = vec![PageRegion::default(); 256];
    let mut at = start;
    while at < end {
        let mut arg = PmScanArg {
            size: std::mem::size_of::<PmScanArg>() as u64,
            start: at,
            end,
            vec: buf.as_mut_ptr() as u64,
            vec_len: buf.len() as u64,
            category_anyof_mask: anyof,
            return_mask: anyof,
            ..PmScanArg::default()
        };
        // SAFETY: PAGEMAP_SCAN reads `arg` and writes at most `vec_len` `page_region`s into
        // `buf` (which lives across the call) and `walk_end` into `arg`; it never changes
        // memory contents or mappings (no write-protect flags are passed).
        let ret = unsafe {
            libc::ioctl(
                pagemap.as_raw_fd(),
                PAGEMAP_SCAN as _,
                &mut arg as *mut PmScanArg,
            )
        };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        for r in &buf[..ret as usize] {
            match out.last_mut() {
                Some(l) if l.end == r.start && l.categories == r.categories => l.end = r.end,
                _ => out.push(*r),
            }
        }
        if arg.walk_end <= at {
            break;
        }
        at = arg.walk_end;
    }
    Ok(out)
}

/// `munlock(addr, len)`.
pub fn munlock(addr: u64, len: u64) -> io::Result<()> {
    // SAFETY: munlock changes residency only; the kernel validates the range.
    let ret = unsafe { libc::munlock(addr as usize as *const libc::c_void, len as usize) };
    check(ret)
}

/// `CAP_SYS_ADMIN`, the capability `/proc/*/pagemap` wants before it shows pfns.
pub const CAP_SYS_ADMIN: u32 = 21;

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

fn capget_raw() -> io::Result<[CapData; 2]> {
    let mut hdr = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let mut data = [CapData::default(); 2];
    // SAFETY: `hdr` and `data` are valid, writable, correctly laid out (`repr(C)`) for the v3
    // ABI, which reads one header and writes two data structs.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_capget,
            &mut hdr as *mut CapHeader,
            data.as_mut_ptr(),
        )
    };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(data)
}

/// The calling thread's effective capability set, as a 64-bit mask.
pub fn effective_caps() -> io::Result<u64> {
    let d = capget_raw()?;
    Ok(d[0].effective as u64 | (d[1].effective as u64) << 32)
}

/// Remove `cap` from the calling thread's effective set (it stays permitted). Affects this
/// thread only: `capset` is per-thread.
pub fn drop_effective_cap(cap: u32) -> io::Result<()> {
    let mut d = capget_raw()?;
    let (i, bit) = ((cap / 32) as usize, cap % 32);
    if i >= 2 {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    d[i].effective &= !(1u32 << bit);
    let mut hdr = CapHeader {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    // SAFETY: `hdr` and `data` are valid and correctly laid out for the v3 ABI; capset only
    // reads them and changes the calling thread's credentials.
    let ret = unsafe { libc::syscall(libc::SYS_capset, &mut hdr as *mut CapHeader, d.as_ptr()) };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_mapping_and_partial_unmap() {
        let mut m = Mapping::anon_aligned(4 << 20, true, 2 << 20).unwrap();
        assert_eq!(m.base() % (2 << 20), 0);
        m.touch(m.base(), m.len()).unwrap();
        let b = m.base();
        m.unmap(b + PAGE, PAGE).unwrap();
        assert!(m.contains(b));
        assert!(!m.contains(b + PAGE));
        assert!(m.owns(b + 2 * PAGE, (4 << 20) - 2 * PAGE));
        assert!(m.unmap(b + PAGE, PAGE).is_err(), "already unmapped");
    }

    #[test]
    fn fixed_noreplace_refuses_to_clobber() {
        let m = Mapping::anon(2 * PAGE, true, None, None).unwrap();
        let e = Mapping::anon(PAGE, true, Some(m.base()), None).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
    }
}
