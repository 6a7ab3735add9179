//! What the tests over real memory (`tests/host.rs`, `tests/inspect.rs`) share: page sizes, one
//! lock so that tests watching `VmLck` and the huge-page pool do not overlap, the CI rule for
//! skips, and readers of pagemap and kpageflags written here independently of `type1`'s own
//! (`procfs`), so that the checks do not trust the code they check.
#![allow(dead_code)] // each test binary uses its own part

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::{Mutex, MutexGuard};

pub const K4: u64 = 4 << 10;
pub const M2: u64 = 2 << 20;
pub const G1: u64 = 1 << 30;

/// The IOMMU page sizes the tests assume (4K | 2M | 1G).
pub const PGSIZES: u64 = K4 | M2 | G1;

/// kpageflags bits (include/uapi/linux/kernel-page-flags.h).
pub const KPF_HEAD: u64 = 1 << 15;
pub const KPF_HUGE: u64 = 1 << 17;
pub const KPF_THP: u64 = 1 << 22;
pub const KPF_ZERO: u64 = 1 << 24;
pub const KPF_RESERVED: u64 = 1 << 32;

static SERIAL: Mutex<()> = Mutex::new(());

/// Held by every test of the binary: they all watch this process's `VmLck` and share the
/// huge-page pool.
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether this is CI (`CI=true`), where a missing huge page fails instead of skipping.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// A test that cannot get what it needs: fail under CI, otherwise say why and skip.
pub fn skip(why: &str) {
    assert!(!in_ci(), "CI=true and {why}");
    eprintln!("SKIP: {why}");
}

/// `VmLck` of this process, in KiB.
pub fn vmlck() -> u64 {
    type1::procfs::vm_locked_kib().unwrap()
}

/// Raw pagemap entries of `npages` pages from `vaddr` of process `pid` (fewer past the
/// readable end).
pub fn pagemap(pid: u32, vaddr: u64, npages: u64) -> Vec<u64> {
    let f = File::open(format!("/proc/{pid}/pagemap")).unwrap();
    let mut buf = vec![0u8; npages as usize * 8];
    let mut done = 0;
    while done < buf.len() {
        match f.read_at(&mut buf[done..], vaddr / K4 * 8 + done as u64) {
            Ok(0) | Err(_) => break,
            Ok(k) => done += k,
        }
    }
    buf[..done - done % 8]
        .chunks_exact(8)
        .map(|c| u64::from_ne_bytes(c.try_into().unwrap()))
        .collect()
}

/// The pfn of a pagemap entry, if present.
pub fn entry_pfn(e: u64) -> Option<u64> {
    (e >> 63 == 1).then_some(e & ((1 << 55) - 1))
}

/// Pfns of `npages` pages from `vaddr` of this process.
pub fn pagemap_pfns(vaddr: u64, npages: u64) -> Vec<Option<u64>> {
    let e = pagemap(std::process::id(), vaddr, npages);
    assert_eq!(e.len() as u64, npages, "pagemap read short");
    e.into_iter().map(entry_pfn).collect()
}

/// `/proc/kpageflags` of one pfn.
pub fn kpageflags(pfn: u64) -> u64 {
    let f = File::open("/proc/kpageflags").unwrap();
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, pfn * 8).unwrap();
    u64::from_ne_bytes(b)
}
