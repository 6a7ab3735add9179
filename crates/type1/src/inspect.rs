//! `type1 inspect`: what a type1 MAP_DMA of a real process's memory would install.
//!
//! For each mapping (VMA) of `/proc/PID/maps` — clipped to the asked range — read which pages are
//! resident and their pfns (`/proc/PID/pagemap`, needs CAP_SYS_ADMIN) and what the kernel knows of
//! each pfn (`/proc/kpageflags`: THP, hugetlb, zero page, reserved), then report:
//!
//! - the physically contiguous runs (consecutive vaddrs on consecutive pfns, uniformly reserved or
//!   not): the unit the engine pins and hands to the IOMMU in one call, as a histogram of run
//!   lengths in power-of-two buckets (`512..=1023` pages is where 2M leaves become possible);
//! - the leaves of each page size the IOMMU would install for the runs, split exactly as the
//!   kernel does (`iommu::pgsize::split`): with IOVA = vaddr, with the asked [`Layout`] (a VMM's
//!   guest-physical placement of each mapping: one map call per mapping), and with each run at
//!   its own best-aligned IOVA (a bound no single map call reaches when a mapping has several
//!   runs);
//! - the locked memory: what is resident and not reserved now, and what a map of the whole
//!   mapping would charge (it faults every page in: all pages but the reserved ones);
//! - a verdict (superpages yes/partly/no, why, the longest run) per mapping and overall.
//!
//! Invariant: the leaves of every column cover exactly the resident pages that are not
//! unmappable; `map_charge_pages >= locked_pages`. Pages that are not resident are holes here;
//! their leaves depend on what the kernel gives when a map faults them in. The `/proc` readers
//! are in `procfs`; this module only counts.
//!
//! Cost: the pagemap of every mapping with memory is read once, in 4096-entry reads. Where the
//! kernel maps pages with huge entries (PMD-mapped THP, hugetlb: the `PAGEMAP_SCAN` ioctl, 6.7+,
//! on the mappings smaps shows with such memory), each 2M block whose entries are present on
//! consecutive pfns takes the kpageflags of its first page for all of its pages; every other
//! resident page has its own kpageflags read. The report is the same either way
//! (`Options::per_page_flags` forces the per-page path; `Report::reads` counts the reads).
//! A mapping with no present or swapped page (`PAGEMAP_SCAN`) is all holes without a read;
//! `/proc/PID/smaps` (which mappings are empty) is read only for a mapping none of whose pages
//! is one smaps is known to count (`Smaps`).

#![cfg(target_os = "linux")]

use std::collections::HashSet;
use std::fs::File;
use std::io;

use iommu::{SZ_1G, SZ_2M};
use serde::Serialize;

use crate::mm::host::HostMm;
use crate::mm::{Backing, Memory, MmapSpec};
use crate::procfs::{self, kpf, pagemap, parse_maps, smaps_empty, EntryReader, MapsLine};
use crate::sys;
use crate::PAGE_SIZE;

/// Why an inspection failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// `/proc/PID` is gone.
    #[error("no process with pid {pid} (or it exited)")]
    NoProcess {
        /// The pid asked.
        pid: u32,
    },
    /// `/proc/PID` is not there, and `/proc` hides other users' processes.
    #[error(
        "no process with pid {pid} is visible: /proc is mounted with {option}, which hides \
         other users' processes; run as root or as the process's user"
    )]
    Hidden {
        /// The pid asked.
        pid: u32,
        /// The mount option (`hidepid=2`, `hidepid=invisible`, ...).
        option: String,
    },
    /// The pid is a kernel thread: it has no user memory to map.
    #[error(
        "pid {pid} ({comm}) is a kernel thread: it has no user address space, so there is no \
         memory a VFIO map could take from it; give the pid of a user process (e.g. QEMU's)"
    )]
    KernelThread {
        /// The pid asked.
        pid: u32,
        /// Its name.
        comm: String,
    },
    /// A user process without an address space (a zombie, or one exiting).
    #[error("pid {pid} ({comm}) has no address space left ({why}): nothing to inspect")]
    NoAddressSpace {
        /// The pid asked.
        pid: u32,
        /// Its name.
        comm: String,
        /// `a zombie: it exited and its parent has not reaped it` or `it is exiting`.
        why: String,
    },
    /// A `/proc` file could not be read.
    #[error("{path}: {msg}")]
    Io {
        /// The file.
        path: String,
        /// What went wrong, and what to change when it is a permission.
        msg: String,
    },
    /// pagemap reported pfn 0 for a present page.
    #[error(
        "reading physical page numbers from /proc/PID/pagemap needs CAP_SYS_ADMIN: without \
             it the kernel reports pfn 0 for every present page (run it as root, e.g. \
             `sudo type1 inspect --pid PID`, or `sudo type1 inspect --demo`)"
    )]
    NoCapSysAdmin,
    /// An asked range `[start, end)` is empty or reversed.
    #[error("bad range [{start:#x}, {end:#x}): start must be below end")]
    BadRange {
        /// First address.
        start: u64,
        /// End (exclusive).
        end: u64,
    },
    /// `--gpa` was given for a number of mappings other than the number selected.
    #[error(
        "{given} guest-physical start(s) given for {mappings} selected mapping(s): give one \
             --gpa per mapping (narrow the selection with --name, --min-size or --range)"
    )]
    GpaCount {
        /// Starts given.
        given: usize,
        /// Mappings selected.
        mappings: usize,
    },
    /// The page-size bitmap has no size the IOMMU could use.
    #[error("page-size bitmap {0:#x} has no page size of 4 KiB or more")]
    BadPgsizes(u64),
    /// The demo could not make its memory.
    #[error("demo memory: {0}")]
    Demo(String),
}

fn io_err(path: &str, e: io::Error) -> Error {
    Error::Io {
        path: path.to_string(),
        msg: e.to_string(),
    }
}

/// `PF_KTHREAD` in the flags field of `/proc/PID/stat` (include/linux/sched.h).
const PF_KTHREAD: u64 = 0x0020_0000;

/// What `/proc/PID/stat` says of a process: its name, state letter and flags (`None` when it
/// cannot be read).
fn proc_stat(pid: u32) -> Option<(String, String, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The name is between the first '(' and the last ')' (it may hold both).
    let (open, close) = (stat.find('(')?, stat.rfind(')')?);
    let comm = stat.get(open + 1..close)?.to_string();
    let f: Vec<&str> = stat.get(close + 1..)?.split_whitespace().collect();
    // After the name: state, ppid, pgrp, session, tty_nr, tpgid, flags.
    Some((comm, f.first()?.to_string(), f.get(6)?.parse().ok()?))
}

/// Why a process has no user memory to read: a kernel thread, a zombie, or one exiting.
fn no_user_memory(pid: u32) -> Error {
    match proc_stat(pid) {
        Some((comm, _, flags)) if flags & PF_KTHREAD != 0 => Error::KernelThread { pid, comm },
        Some((comm, state, _)) => Error::NoAddressSpace {
            pid,
            comm,
            why: if state == "Z" {
                "a zombie: it exited and its parent has not reaped it".into()
            } else {
                "it is exiting".into()
            },
        },
        None => Error::NoProcess { pid },
    }
}

/// `/proc`'s `hidepid=` option when it hides processes (`hidepid=1` only hides their files).
fn proc_hidepid() -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines()
        .filter(|l| l.split_whitespace().nth(4) == Some("/proc"))
        .flat_map(|l| l.split([' ', ',']).map(str::to_string).collect::<Vec<_>>())
        .find(|o| matches!(o.as_str(), "hidepid=2" | "hidepid=invisible"))
}

/// The owner of `/proc/PID` (the process's effective uid) and this process's.
fn owners(pid: u32) -> Option<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    let theirs = std::fs::metadata(format!("/proc/{pid}")).ok()?.uid();
    let ours = std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some((theirs, ours))
}

/// Why reading `path` of process `pid` was refused, as far as this process can tell.
fn denied(pid: u32, path: &str, e: &io::Error) -> Error {
    let msg = if path == "/proc/kpageflags" {
        format!(
            "{e}: /proc/kpageflags is readable by root only (mode 0400); without it no page \
             can be told THP, hugetlb or reserved (run as root, e.g. `sudo type1 inspect --pid \
             {pid}`)"
        )
    } else {
        match owners(pid) {
            Some((theirs, ours)) if ours != 0 && theirs != ours => format!(
                "{e}: process {pid} belongs to uid {theirs} and this runs as uid {ours}; \
                 reading another user's memory map needs root (run with sudo)"
            ),
            Some((_, 0)) => format!(
                "{e}, even to root: a security module (SELinux, AppArmor) or a container's \
                 restrictions on /proc refuse it"
            ),
            Some(_) => format!(
                "{e}: process {pid} is yours but not dumpable (a setuid program, or one that \
                 called prctl(PR_SET_DUMPABLE, 0)); only root can read its memory map"
            ),
            None => e.to_string(),
        }
    };
    Error::Io {
        path: path.to_string(),
        msg,
    }
}

/// The error for a failed open or read of a `/proc` file of `pid`: the real cause where it
/// can be found (no such process, hidden, a kernel thread, a refusal and why).
fn proc_err(pid: u32, path: &str, e: io::Error) -> Error {
    match e.kind() {
        io::ErrorKind::NotFound if path.starts_with(&format!("/proc/{pid}/")) => {
            match proc_hidepid() {
                Some(option) => Error::Hidden { pid, option },
                None => Error::NoProcess { pid },
            }
        }
        io::ErrorKind::PermissionDenied => denied(pid, path, &e),
        // ESRCH: the task has no mm (a kernel thread, or a process past exit_mm).
        _ if e.raw_os_error() == Some(3) => no_user_memory(pid),
        _ => io_err(path, e),
    }
}

/// Leaves of one page size.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LeafCount {
    /// The page size, bytes.
    pub pgsize: u64,
    /// Leaves of that size.
    pub leaves: u64,
}

/// Runs whose length (pages) is in `[min_pages, max_pages]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RunBucket {
    /// Shortest run length counted here (a power of two).
    pub min_pages: u64,
    /// Longest run length counted here.
    pub max_pages: u64,
    /// Runs counted.
    pub runs: u64,
    /// Pages in those runs.
    pub pages: u64,
}

/// What a stretch of memory holds and what a MAP_DMA of it would install.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// 4 KiB pages spanned.
    pub pages: u64,
    /// Pages present in RAM.
    pub resident_pages: u64,
    /// Pages not present (never faulted, or swapped out): holes.
    pub hole_pages: u64,
    /// Of the holes, pages swapped out.
    pub swapped_pages: u64,
    /// Resident pages on reserved pfns (the zero page, `PG_reserved`): mapped, never charged.
    pub reserved_pages: u64,
    /// Resident pages in transparent huge pages.
    pub thp_pages: u64,
    /// Resident pages in hugetlbfs pages.
    pub hugetlb_pages: u64,
    /// Physically contiguous runs.
    pub runs: u64,
    /// The longest run, in pages.
    pub longest_run_pages: u64,
    /// Non-empty buckets, shortest first.
    pub run_histogram: Vec<RunBucket>,
    /// Leaves per page size of the bitmap (smallest first) with IOVA = vaddr.
    pub leaves_iova_eq_vaddr: Vec<LeafCount>,
    /// Leaves per page size at the asked [`Layout`]'s IOVA (one map call per mapping).
    pub leaves_layout: Vec<LeafCount>,
    /// Leaves per page size with each run at its own best-aligned IOVA: a bound, reached by one
    /// map call only when the mapping is one run.
    pub leaves_each_run_aligned: Vec<LeafCount>,
    /// Resident pages no page size of the bitmap can map (the smallest page size is above 4K
    /// and the run is not aligned to it).
    pub unmappable_pages: u64,
    /// Pages a MAP_DMA would charge to the locked-memory account (resident, not reserved).
    pub locked_pages: u64,
    /// `locked_pages` in bytes.
    pub locked_bytes: u64,
    /// Pages a map of the whole span would charge: it faults every page in, so all but the
    /// reserved ones (holes included).
    pub map_charge_pages: u64,
    /// `map_charge_pages` in bytes.
    pub map_charge_bytes: u64,
}

impl Counts {
    fn new(pgsizes: u64) -> Self {
        let sizes: Vec<LeafCount> = (0..64)
            .filter(|b| pgsizes & (1u64 << b) != 0)
            .map(|b| LeafCount {
                pgsize: 1u64 << b,
                leaves: 0,
            })
            .collect();
        Counts {
            leaves_iova_eq_vaddr: sizes.clone(),
            leaves_layout: sizes.clone(),
            leaves_each_run_aligned: sizes,
            ..Counts::default()
        }
    }

    fn add_leaves(list: &mut [LeafCount], split: &[(u64, u64, u64, u64)]) {
        for &(_, _, pgsize, count) in split {
            if let Some(l) = list.iter_mut().find(|l| l.pgsize == pgsize) {
                l.leaves += count;
            }
        }
    }

    /// Count a run of `npages` at `vaddr` on `pfn..`; the layout places it at IOVA
    /// `vaddr + delta` (wrapping).
    fn add_run(&mut self, pgsizes: u64, delta: u64, vaddr: u64, pfn: u64, npages: u64) {
        self.runs += 1;
        self.longest_run_pages = self.longest_run_pages.max(npages);
        let k = 63 - npages.leading_zeros();
        let (lo, hi) = (1u64 << k, (1u64 << k) * 2 - 1);
        match self.run_histogram.iter_mut().find(|b| b.min_pages == lo) {
            Some(b) => {
                b.runs += 1;
                b.pages += npages;
            }
            None => {
                self.run_histogram.push(RunBucket {
                    min_pages: lo,
                    max_pages: hi,
                    runs: 1,
                    pages: npages,
                });
                self.run_histogram.sort_by_key(|b| b.min_pages);
            }
        }
        let paddr = pfn * PAGE_SIZE;
        let len = npages * PAGE_SIZE;
        match iommu::pgsize::split(pgsizes, vaddr, paddr, len) {
            Some(s) => Self::add_leaves(&mut self.leaves_iova_eq_vaddr, &s),
            None => self.unmappable_pages += npages,
        }
        if let Some(s) = iommu::pgsize::split(pgsizes, vaddr.wrapping_add(delta), paddr, len) {
            Self::add_leaves(&mut self.leaves_layout, &s);
        }
        // Best-aligned: an IOVA congruent to paddr modulo the largest page size (paddr itself).
        if let Some(s) = iommu::pgsize::split(pgsizes, paddr, paddr, len) {
            Self::add_leaves(&mut self.leaves_each_run_aligned, &s);
        }
    }

    fn merge(&mut self, o: &Counts) {
        self.pages += o.pages;
        self.resident_pages += o.resident_pages;
        self.hole_pages += o.hole_pages;
        self.swapped_pages += o.swapped_pages;
        self.reserved_pages += o.reserved_pages;
        self.thp_pages += o.thp_pages;
        self.hugetlb_pages += o.hugetlb_pages;
        self.runs += o.runs;
        self.longest_run_pages = self.longest_run_pages.max(o.longest_run_pages);
        for b in &o.run_histogram {
            match self
                .run_histogram
                .iter_mut()
                .find(|x| x.min_pages == b.min_pages)
            {
                Some(x) => {
                    x.runs += b.runs;
                    x.pages += b.pages;
                }
                None => self.run_histogram.push(*b),
            }
        }
        self.run_histogram.sort_by_key(|b| b.min_pages);
        for (x, y) in self
            .leaves_iova_eq_vaddr
            .iter_mut()
            .zip(&o.leaves_iova_eq_vaddr)
        {
            x.leaves += y.leaves;
        }
        for (x, y) in self.leaves_layout.iter_mut().zip(&o.leaves_layout) {
            x.leaves += y.leaves;
        }
        for (x, y) in self
            .leaves_each_run_aligned
            .iter_mut()
            .zip(&o.leaves_each_run_aligned)
        {
            x.leaves += y.leaves;
        }
        self.unmappable_pages += o.unmappable_pages;
        self.locked_pages += o.locked_pages;
        self.locked_bytes += o.locked_bytes;
        self.map_charge_pages += o.map_charge_pages;
        self.map_charge_bytes += o.map_charge_bytes;
    }
}

/// Whether a map's leaves would be superpages, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// `yes` (every resident page in a leaf above the smallest size), `partly` or `no`.
    pub superpages: &'static str,
    /// Why, in words, with the numbers that decide it.
    pub reason: String,
    /// The longest physically contiguous run, in pages.
    pub longest_run_pages: u64,
}

impl Verdict {
    /// The verdict on `c`'s leaves at the asked layout, for the page-size bitmap `pgsizes`.
    pub fn of(c: &Counts, pgsizes: u64) -> Verdict {
        let min = 1u64 << pgsizes.trailing_zeros();
        // The smallest superpage size: the second size of the bitmap.
        let rest = pgsizes & !(min | (min - 1));
        let bytes = |pred: &dyn Fn(u64) -> bool| -> u64 {
            c.leaves_layout
                .iter()
                .filter(|l| pred(l.pgsize))
                .map(|l| l.pgsize * l.leaves)
                .sum()
        };
        let mapped = bytes(&|_| true);
        let sup = bytes(&|p| p > min);
        let (superpages, mut reason) = if rest == 0 {
            ("no", format!("the IOMMU has one page size ({})", size(min)))
        } else if c.resident_pages == 0 {
            (
                "no",
                "nothing resident: a map faults the pages in, and the leaves depend on what the \
                 kernel gives then"
                    .to_string(),
            )
        } else if sup > 0 && sup == mapped {
            (
                "yes",
                format!("all {} resident in superpage leaves", size(mapped)),
            )
        } else {
            let next = 1u64 << rest.trailing_zeros();
            let why = if c.longest_run_pages * PAGE_SIZE < next {
                format!(
                    "no physically contiguous run reaches {} (the memory is not in huge pages)",
                    size(next)
                )
            } else if sup == 0 {
                format!(
                    "runs of {} exist but their IOVA and physical address differ modulo {}: \
                     place the mapping at an IOVA congruent to them (--gpa/--iova)",
                    size(next),
                    size(next)
                )
            } else {
                format!(
                    "the rest is in runs shorter than {} or not congruent to their IOVA",
                    size(next)
                )
            };
            if sup > 0 {
                (
                    "partly",
                    format!(
                        "{} of {} ({:.1}%) in superpage leaves; {why}",
                        size(sup),
                        size(mapped),
                        sup as f64 * 100.0 / mapped as f64
                    ),
                )
            } else {
                ("no", why)
            }
        };
        if c.resident_pages > 0 && c.hole_pages > 0 {
            reason += &format!(
                "; {} not resident (a map faults it in: leaves unknown)",
                size(c.hole_pages * PAGE_SIZE)
            );
        }
        Verdict {
            superpages,
            reason,
            longest_run_pages: c.longest_run_pages,
        }
    }
}

/// `b` bytes as `4K`, `2M`, `1.5G`-style text.
fn size(b: u64) -> String {
    for (s, u) in [
        (SZ_1G << 10, "T"),
        (SZ_1G, "G"),
        (SZ_2M >> 1, "M"),
        (1 << 10, "K"),
    ] {
        if b >= s {
            return if b.is_multiple_of(s) {
                format!("{}{u}", b / s)
            } else {
                format!("{:.1}{u}", b as f64 / s as f64)
            };
        }
    }
    format!("{b}B")
}

/// Where a map would place each mapping in IOVA space (guest physical, for a VMM).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub enum Layout {
    /// IOVA = vaddr.
    #[default]
    Vaddr,
    /// IOVA = vaddr + this offset (wrapping: a "negative" offset is its two's complement).
    Offset(u64),
    /// The i-th selected mapping (address order) starts at the i-th IOVA: one per mapping.
    Gpa(Vec<u64>),
}

impl Layout {
    /// The layout in words, for the report's column legend.
    pub fn describe(&self) -> String {
        match self {
            Layout::Vaddr => "IOVA = vaddr".into(),
            Layout::Offset(o) => format!("IOVA = vaddr + {o:#x} (wrapping)"),
            Layout::Gpa(g) => format!(
                "each mapping at its --gpa start ({})",
                g.iter()
                    .map(|a| format!("{a:#x}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// What to inspect and how to place it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// Ranges `[start, end)` to clip mappings to; empty = the whole address space.
    pub ranges: Vec<(u64, u64)>,
    /// The IOMMU's page-size bitmap (e.g. 4K|2M|1G).
    pub pgsizes: u64,
    /// Where each selected mapping goes in IOVA space.
    pub layout: Layout,
    /// Keep only mappings whose name contains this (`[anon]` for anonymous memory).
    pub name: Option<String>,
    /// Keep only mappings (pieces, after clipping) of at least this many bytes.
    pub min_size: u64,
    /// Read the kpageflags of every resident page, as on a kernel without `PAGEMAP_SCAN`
    /// (before 6.7). By default the pages the kernel maps with a huge entry (PMD-mapped THP,
    /// hugetlb) take one kpageflags read per 2 MiB. The report is the same either way.
    pub per_page_flags: bool,
}

impl Options {
    /// Everything, at IOVA = vaddr, with the IOMMU page sizes `pgsizes`.
    pub fn new(pgsizes: u64) -> Options {
        Options {
            ranges: Vec::new(),
            pgsizes,
            layout: Layout::Vaddr,
            name: None,
            min_size: 0,
            per_page_flags: false,
        }
    }
}

/// One mapping of the process (clipped to the asked range).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VmaReport {
    /// First address (inside the asked range).
    pub start: u64,
    /// End (exclusive).
    pub end: u64,
    /// `rwxp`/`rwxs` as in /proc/PID/maps.
    pub perms: String,
    /// The path or pseudo-name (`[heap]`, `[stack]`, ...); empty for anonymous memory.
    pub name: String,
    /// The IOVA the layout gives `start`.
    pub iova: u64,
    /// Superpages or not, and why.
    pub verdict: Verdict,
    /// What the piece holds and would install.
    #[serde(flatten)]
    pub counts: Counts,
}

/// An inspection of one process.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The process inspected.
    pub pid: u32,
    /// The IOMMU page sizes assumed (bitmap).
    pub pgsizes: u64,
    /// The asked ranges `[start, end)`; empty = the whole address space.
    pub ranges: Vec<(u64, u64)>,
    /// Each mapping (piece) inspected, in address order.
    pub vmas: Vec<VmaReport>,
    /// The sum over `vmas`.
    pub total: Counts,
    /// The layout the `leaves_layout` counts assume, in words.
    pub layout: String,
    /// The name filter, if any.
    pub name_filter: Option<String>,
    /// The size filter, bytes (0 = none).
    pub min_size: u64,
    /// Mappings (pieces) the filters left out of `vmas` and the totals.
    pub filtered_out: u64,
    /// The verdict on all selected mappings together.
    pub verdict: Verdict,
    /// The RLIMIT_MEMLOCK a map of every selected mapping needs: `total.map_charge_bytes`.
    pub suggested_memlock_bytes: u64,
    /// The reach of the layout's leaves in the plain model IOTLB (64 entries per page size;
    /// not a real part): `IotlbConfig::plain_reach_bytes(pgsizes, leaf sizes used)`.
    pub iotlb_reach_plain_bytes: u64,
    /// What the numbers leave out (holes, unmappable runs, demo backings left out).
    pub notes: Vec<String>,
    /// What the inspection read to get them (not part of the report's JSON).
    #[serde(skip)]
    pub reads: Reads,
}

/// What an inspection read: the cost of a report, beside the pagemap alone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Reads {
    /// `/proc/PID/pagemap` entries read (one per 4K page of the mappings with memory).
    pub pagemap_entries: u64,
    /// `/proc/kpageflags` entries read: one per resident 4K-mapped page, one per 2M of pages
    /// mapped by huge entries.
    pub kpageflags_entries: u64,
    /// Pages found mapped by huge entries (`PAGEMAP_SCAN`), their kpageflags read once per 2M.
    pub huge_mapped_pages: u64,
    /// Whether `/proc/PID/smaps` was read (to tell which mappings are empty).
    pub smaps: bool,
}

/// Pagemap entries per read (a multiple of the pages of 2 MiB).
const CHUNK: u64 = 1 << 12;

/// Inspect one process: every mapping overlapping `range` (`[start, end)`; `None` = all).
/// `pgsizes` is the IOMMU's page-size bitmap (e.g. 4K|2M|1G).
pub fn inspect_pid(pid: u32, range: Option<(u64, u64)>, pgsizes: u64) -> Result<Report, Error> {
    let ranges: Vec<(u64, u64)> = range.into_iter().collect();
    inspect_ranges(pid, &ranges, pgsizes)
}

/// Inspect the parts of a process's mappings inside any of `ranges` (`[start, end)` each; empty
/// = the whole address space).
pub fn inspect_ranges(pid: u32, ranges: &[(u64, u64)], pgsizes: u64) -> Result<Report, Error> {
    let mut o = Options::new(pgsizes);
    o.ranges = ranges.to_vec();
    inspect(pid, &o)
}

/// Inspect a process as `o` asks: clip to its ranges, keep the mappings its filters select,
/// place them by its layout.
pub fn inspect(pid: u32, o: &Options) -> Result<Report, Error> {
    let (ranges, pgsizes) = (&o.ranges[..], o.pgsizes);
    for &(start, end) in ranges {
        if start >= end {
            return Err(Error::BadRange { start, end });
        }
    }
    if pgsizes & !(PAGE_SIZE - 1) == 0 {
        return Err(Error::BadPgsizes(pgsizes));
    }
    let maps_path = format!("/proc/{pid}/maps");
    let text = std::fs::read_to_string(&maps_path).map_err(|e| proc_err(pid, &maps_path, e))?;
    if text.trim().is_empty() {
        // No mappings at all: no user address space (a kernel thread's maps is empty).
        return Err(no_user_memory(pid));
    }
    let pm_path = format!("/proc/{pid}/pagemap");
    let pm = File::open(&pm_path).map_err(|e| proc_err(pid, &pm_path, e))?;
    let kf = File::open("/proc/kpageflags").map_err(|e| proc_err(pid, "/proc/kpageflags", e))?;
    let mut pieces: Vec<(MapsLine, u64, u64)> = Vec::new();
    for m in parse_maps(&text) {
        if ranges.is_empty() {
            let (s, e) = (m.start, m.end);
            pieces.push((m, s, e));
            continue;
        }
        for &(rs, re) in ranges {
            let (s, e) = (m.start.max(rs), m.end.min(re));
            if s < e {
                pieces.push((m.clone(), s, e));
            }
        }
    }
    let mut smaps = Smaps::new(pid);
    let before = pieces.len();
    pieces.retain(|(m, s, e)| {
        let name = if m.name.is_empty() { "[anon]" } else { &m.name };
        e - s >= o.min_size && o.name.as_ref().is_none_or(|p| name.contains(p.as_str()))
    });
    if let Layout::Gpa(g) = &o.layout {
        if g.len() != pieces.len() {
            return Err(Error::GpaCount {
                given: g.len(),
                mappings: pieces.len(),
            });
        }
    }
    let mut report = Report {
        pid,
        pgsizes,
        ranges: ranges.to_vec(),
        vmas: Vec::new(),
        total: Counts::new(pgsizes),
        notes: Vec::new(),
        layout: o.layout.describe(),
        name_filter: o.name.clone(),
        min_size: o.min_size,
        filtered_out: (before - pieces.len()) as u64,
        verdict: Verdict::of(&Counts::new(pgsizes), pgsizes),
        suggested_memlock_bytes: 0,
        iotlb_reach_plain_bytes: 0,
        reads: Reads::default(),
    };
    let mut bufs = (EntryReader::default(), EntryReader::default());
    let mut scan = !o.per_page_flags;
    for (i, (m, s, e)) in pieces.into_iter().enumerate() {
        let iova = match &o.layout {
            Layout::Vaddr => s,
            Layout::Offset(off) => s.wrapping_add(*off),
            Layout::Gpa(g) => g[i],
        };
        let delta = iova.wrapping_sub(s);
        let holes = || {
            let mut c = Counts::new(pgsizes);
            c.pages = e.div_ceil(PAGE_SIZE) - s / PAGE_SIZE;
            c.hole_pages = c.pages;
            c
        };
        let (first, last) = (s / PAGE_SIZE, e.div_ceil(PAGE_SIZE));
        let scanned = if scan {
            match scan_piece(&pm, first, last) {
                Ok(sc) => Some(sc),
                Err(e) => {
                    // No PAGEMAP_SCAN (before 6.7): smaps and every page's flags, from now on.
                    // Another error (the [vsyscall] page is outside the walk): this piece only.
                    scan = e.raw_os_error() != Some(libc::ENOTTY);
                    None
                }
            }
        } else {
            None
        };
        // Nothing present or swapped: reading the pagemap would find only holes.
        let skip = match &scanned {
            Some(sc) => !sc.any,
            // A piece the scan refused ([vsyscall], above the user address space): its pagemap
            // tells, and reads nothing there.
            None if scan => false,
            None => smaps.empty(m.start),
        };
        let huge = scanned.map(|sc| sc.huge).unwrap_or_default();
        let mut counts = if skip {
            holes()
        } else {
            let (c, in_rss) = inspect_span(
                &pm,
                &kf,
                &pm_path,
                (s, e),
                pgsizes,
                delta,
                &huge,
                &mut bufs,
                &mut report.reads,
            )?;
            // The vDSO is the kernel's special mapping, its pages inserted one by one (never
            // VM_PFNMAP): smaps counts them in Rss although they are reserved.
            let vdso = m.name == "[vdso]" && c.resident_pages > 0;
            // Nothing present or swapped found: all holes either way.
            let nothing = c.resident_pages == 0 && c.swapped_pages == 0;
            if !in_rss && !vdso && !nothing && smaps.empty(m.start) {
                holes()
            } else {
                c
            }
        };
        counts.map_charge_pages = counts.pages - counts.reserved_pages;
        counts.map_charge_bytes = counts.map_charge_pages * PAGE_SIZE;
        report.total.merge(&counts);
        report.vmas.push(VmaReport {
            start: s,
            end: e,
            perms: m.perms,
            name: m.name,
            iova,
            verdict: Verdict::of(&counts, pgsizes),
            counts,
        });
    }
    report.reads.smaps = smaps.empty.is_some();
    report.verdict = Verdict::of(&report.total, pgsizes);
    report.suggested_memlock_bytes = report.total.map_charge_bytes;
    let used = report
        .total
        .leaves_layout
        .iter()
        .filter(|l| l.leaves > 0)
        .fold(0, |acc, l| acc | l.pgsize);
    report.iotlb_reach_plain_bytes = iommu::IotlbConfig::plain_reach_bytes(pgsizes, used);
    if report.total.hole_pages > 0 {
        report.notes.push(format!(
            "{} page(s) are not resident: holes here. A real MAP_DMA would fault them in (and \
             charge them), so its leaves there depend on what the kernel gives then.",
            report.total.hole_pages
        ));
    }
    if report.total.unmappable_pages > 0 {
        report.notes.push(format!(
            "{} resident page(s) are in runs not aligned to the smallest IOMMU page size \
             ({:#x}): no leaves counted for them.",
            report.total.unmappable_pages,
            1u64 << pgsizes.trailing_zeros()
        ));
    }
    Ok(report)
}

/// Which mappings `/proc/PID/smaps` calls empty (nothing resident or swapped: Rss, hugetlb and
/// Swap all 0 kB), read once, when first needed.
///
/// An empty mapping is all holes: its pagemap is not read (a 1 TiB PROT_NONE reservation costs
/// nothing). Reading smaps walks the page tables of every mapping, about a tenth of an inspection
/// of a large THP process, so it is asked only about a mapping that has present or swapped pages
/// (`PAGEMAP_SCAN`) none of which smaps is known to count: a THP or hugetlb folio, or an
/// anonymous or LRU page (not the zero pages, not device memory), or a page of the vDSO. Smaps
/// does not count the zero pages or `VM_PFNMAP` memory, so a mapping of only those stays all
/// holes, as it was.
/// Without `PAGEMAP_SCAN` smaps is asked first, as before.
struct Smaps {
    pid: u32,
    /// The empty mappings' starts; `None` until read.
    empty: Option<HashSet<u64>>,
}

impl Smaps {
    fn new(pid: u32) -> Smaps {
        Smaps { pid, empty: None }
    }

    /// Whether the mapping at `start` has nothing resident or swapped (reads smaps once;
    /// unreadable smaps calls nothing empty).
    fn empty(&mut self, start: u64) -> bool {
        let pid = self.pid;
        self.empty
            .get_or_insert_with(|| {
                std::fs::read_to_string(format!("/proc/{pid}/smaps"))
                    .map(|t| smaps_empty(&t))
                    .unwrap_or_default()
            })
            .contains(&start)
    }
}

/// The runs of one span as they are found: consecutive vaddrs on consecutive pfns, uniformly
/// reserved or not, each counted into `c` when it ends. Pages come in groups that share their
/// kpageflags (one page, or the pages of one huge page-table entry).
struct Runs<'a> {
    c: &'a mut Counts,
    pgsizes: u64,
    delta: u64,
    /// The current run: (vaddr, pfn, pages, reserved).
    run: Option<(u64, u64, u64, bool)>,
    /// Whether a page smaps counts in Rss or hugetlb was pushed (`counted`).
    in_rss: bool,
}

/// Whether a present page with these kpageflags is one smaps counts (Rss, or hugetlb): a THP or
/// hugetlb folio, an anonymous or LRU page; not the zero pages, device memory (no page frame)
/// or a reserved page.
fn counted(flags: u64) -> bool {
    flags & (kpf::THP | kpf::HUGE | kpf::ANON | kpf::LRU) != 0
        && flags & (kpf::ZERO_PAGE | kpf::NOPAGE | kpf::RESERVED) == 0
}

impl Runs<'_> {
    /// `n` resident pages at `vaddr` on `pfn..`, each with the kpageflags `flags`.
    fn push(&mut self, vaddr: u64, pfn: u64, n: u64, flags: u64) {
        self.in_rss |= counted(flags);
        let c = &mut *self.c;
        c.resident_pages += n;
        if flags & kpf::THP != 0 {
            c.thp_pages += n;
        }
        if flags & kpf::HUGE != 0 {
            c.hugetlb_pages += n;
        }
        let reserved = kpf::reserved(flags);
        if reserved {
            c.reserved_pages += n;
        } else {
            c.locked_pages += n;
        }
        match &mut self.run {
            Some((rv, rp, rn, rr))
                if *rr == reserved && *rv + *rn * PAGE_SIZE == vaddr && *rp + *rn == pfn =>
            {
                *rn += n;
            }
            _ => {
                self.end();
                self.run = Some((vaddr, pfn, n, reserved));
            }
        }
    }

    /// End the current run (a hole, or the end of the span).
    fn end(&mut self) {
        if let Some((v, p, n, _)) = self.run.take() {
            self.c.add_run(self.pgsizes, self.delta, v, p, n);
        }
    }
}

/// A pfn-contiguous stretch of 4K-mapped pages: read its kpageflags in one go (one entry per
/// page) and hand the pages on in groups of equal flags.
fn push_per_page(
    runs: &mut Runs,
    kf: &File,
    kr: &mut EntryReader,
    reads: &mut Reads,
    (vaddr, pfn, npages): (u64, u64, u64),
) {
    // Unreadable flags count as 0 (not THP, not reserved), as before a read fails.
    let flags = kr.read(kf, pfn, npages as usize).unwrap_or_default();
    reads.kpageflags_entries += npages;
    // The flags that tell pages apart here: THP, hugetlb, reserved, and whether smaps counts it.
    const CLASS: u64 =
        kpf::THP | kpf::HUGE | kpf::RESERVED | kpf::ZERO_PAGE | kpf::ANON | kpf::LRU | kpf::NOPAGE;
    let f = |i: u64| flags.get(i as usize).copied().unwrap_or(0) & CLASS;
    let mut s = 0u64;
    for i in 1..=npages {
        if i == npages || f(i) != f(s) {
            runs.push(vaddr + s * PAGE_SIZE, pfn + s, i - s, f(s));
            s = i;
        }
    }
}

/// Whether `entries` are all present on consecutive pfns (the pages of one huge entry).
fn contiguous(entries: &[u64]) -> bool {
    const M: u64 = pagemap::PRESENT | pagemap::PFN_MASK;
    let Some(&first) = entries.first() else {
        return false;
    };
    let base = first & M;
    // No early exit: the loop vectorises, and a huge entry's pages are all checked.
    base & pagemap::PRESENT != 0
        && entries
            .iter()
            .zip(base..)
            .fold(true, |ok, (&e, want)| ok & (e & M == want))
}

/// `PAGE_IS_SWAPPED` of `PAGEMAP_SCAN` (include/uapi/linux/fs.h).
const PAGE_IS_SWAPPED: u64 = 1 << 4;

/// What `PAGEMAP_SCAN` says of a piece: whether any page is present or swapped, and the pages
/// mapped by present huge page-table entries (PMD-mapped THP, hugetlb) as sorted page-index
/// ranges.
struct Scan {
    any: bool,
    huge: Vec<(u64, u64)>,
}

/// `PAGEMAP_SCAN` of the pages `[first, last)` (page indices); fails with ENOTTY on a kernel
/// before 6.7.
fn scan_piece(pm: &File, first: u64, last: u64) -> io::Result<Scan> {
    use sys::page_is::{HUGE, PRESENT};
    let bad = || io::Error::from_raw_os_error(libc::EINVAL);
    let start = first.checked_mul(PAGE_SIZE).ok_or_else(bad)?;
    let end = last.checked_mul(PAGE_SIZE).ok_or_else(bad)?;
    let regions = sys::pagemap_scan(pm, start, end, PRESENT | PAGE_IS_SWAPPED | HUGE)?;
    Ok(Scan {
        any: regions
            .iter()
            .any(|r| r.categories & (PRESENT | PAGE_IS_SWAPPED) != 0),
        huge: regions
            .iter()
            .filter(|r| r.categories & (PRESENT | HUGE) == PRESENT | HUGE)
            .map(|r| (r.start / PAGE_SIZE, r.end / PAGE_SIZE))
            .collect(),
    })
}

/// Pages per 2 MiB: a huge entry maps a 2M-aligned block of consecutive pfns (a 1G entry too,
/// in 2M pieces).
const HUGE_BLOCK: u64 = SZ_2M / PAGE_SIZE;

/// Counts for `[start, end)` of one mapping, and whether a page smaps counts in Rss or hugetlb
/// was found (`counted`). `huge` are the page-index ranges of the span
/// mapped by huge entries (sorted): each 2M block there whose entries are present on
/// consecutive pfns takes the kpageflags of its first page for all its pages (one read instead
/// of 512: a huge entry maps one folio, whose THP/hugetlb/zero-page flags are the same for all
/// its pages). Everything else reads the kpageflags of every resident page.
#[allow(clippy::too_many_arguments)]
fn inspect_span(
    pm: &File,
    kf: &File,
    pm_path: &str,
    (start, end): (u64, u64),
    pgsizes: u64,
    delta: u64,
    huge: &[(u64, u64)],
    bufs: &mut (EntryReader, EntryReader),
    reads: &mut Reads,
) -> Result<(Counts, bool), Error> {
    let mut c = Counts::new(pgsizes);
    let first = start / PAGE_SIZE;
    let last = end.div_ceil(PAGE_SIZE);
    c.pages = last - first;
    let (pr, kr) = bufs;
    let mut runs = Runs {
        c: &mut c,
        pgsizes,
        delta,
        run: None,
        in_rss: false,
    };
    let (mut hole_pages, mut swapped_pages) = (0u64, 0u64);
    // The current pfn-contiguous stretch of 4K-mapped pages: (vaddr, pfn, pages).
    let mut stretch: Option<(u64, u64, u64)> = None;
    let mut hi = 0usize;
    let mut idx = first;
    while idx < last {
        // Reads end on CHUNK boundaries, so that no 2M block straddles two reads.
        let n = (last - idx).min(CHUNK - idx % CHUNK) as usize;
        let entries = pr.read(pm, idx, n).map_err(|e| io_err(pm_path, e))?;
        // Past the end of the readable space ([vsyscall]): the rest is holes.
        let got = entries.len() as u64;
        reads.pagemap_entries += got;
        let mut p = idx;
        while p < idx + got {
            while huge.get(hi).is_some_and(|h| h.1 <= p) {
                hi += 1;
            }
            let (seg_end, in_huge) = match huge.get(hi) {
                Some(&(hs, he)) if hs <= p => (((p / HUGE_BLOCK + 1) * HUGE_BLOCK).min(he), true),
                Some(&(hs, _)) => (hs, false),
                None => (u64::MAX, false),
            };
            let seg_end = seg_end.min(idx + got);
            let seg = &entries[(p - idx) as usize..(seg_end - idx) as usize];
            if in_huge && contiguous(seg) {
                if let Some(s) = stretch.take() {
                    push_per_page(&mut runs, kf, kr, reads, s);
                }
                let pfn = seg[0] & pagemap::PFN_MASK;
                if pfn == 0 {
                    return Err(Error::NoCapSysAdmin);
                }
                let flags = procfs::page_flags(kf, pfn);
                reads.kpageflags_entries += 1;
                reads.huge_mapped_pages += seg.len() as u64;
                runs.push(p * PAGE_SIZE, pfn, seg.len() as u64, flags);
            } else {
                for (k, &e) in seg.iter().enumerate() {
                    let v = (p + k as u64) * PAGE_SIZE;
                    match pagemap::pfn(e) {
                        Some(0) => return Err(Error::NoCapSysAdmin),
                        Some(pfn) => match &mut stretch {
                            Some((sv, sp, sn))
                                if *sv + *sn * PAGE_SIZE == v && *sp + *sn == pfn =>
                            {
                                *sn += 1;
                            }
                            _ => {
                                if let Some(s) = stretch.replace((v, pfn, 1)) {
                                    push_per_page(&mut runs, kf, kr, reads, s);
                                }
                            }
                        },
                        None => {
                            hole_pages += 1;
                            if e & pagemap::SWAPPED != 0 {
                                swapped_pages += 1;
                            }
                            if let Some(s) = stretch.take() {
                                push_per_page(&mut runs, kf, kr, reads, s);
                            }
                            runs.end();
                        }
                    }
                }
            }
            p = seg_end;
        }
        if got < n as u64 {
            hole_pages += last - idx - got;
            break;
        }
        idx += got;
    }
    if let Some(s) = stretch.take() {
        push_per_page(&mut runs, kf, kr, reads, s);
    }
    runs.end();
    let in_rss = runs.in_rss;
    c.hole_pages = hole_pages;
    c.swapped_pages = swapped_pages;
    c.locked_bytes = c.locked_pages * PAGE_SIZE;
    Ok((c, in_rss))
}

/// One region the demo made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DemoRegion {
    /// Its name (`demo-4k`, ...).
    pub name: String,
    /// Its backing's trace word (`Backing::name`).
    pub backing: String,
    /// Where it is mapped.
    pub vaddr: u64,
    /// Bytes.
    pub size: u64,
}

/// What `type1 inspect --demo` shows: regions of every backing made in this process with
/// `HostMm`, and the inspection of exactly those regions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Demo {
    /// The regions made.
    pub regions: Vec<DemoRegion>,
    /// Their inspection.
    pub report: Report,
}

/// Make 4K, THP and hugetlb (2M; 1G when a 1 GiB page is free) regions in this process, fault
/// them in, and inspect them. Backings the machine cannot give (no huge pages reserved) are
/// left out with a note. The memory is released before this returns.
pub fn demo(pgsizes: u64) -> Result<Demo, Error> {
    let mut mm = HostMm::new().map_err(|e| {
        if e.needs_cap_sys_admin() {
            Error::NoCapSysAdmin
        } else {
            Error::Demo(e.to_string())
        }
    })?;
    demo_in(&mut mm, pgsizes)
}

/// `demo` in a `HostMm` the caller keeps (the regions stay until it munmaps or drops them).
pub fn demo_in(mm: &mut HostMm, pgsizes: u64) -> Result<Demo, Error> {
    const M: u64 = 1 << 20;
    let free_1g = procfs::free_huge_pages(SZ_1G).unwrap_or(0);
    let mut want = vec![
        ("demo-4k", 8 * M, Backing::Page4k),
        ("demo-thp", 8 * M, Backing::Thp),
        ("demo-hugetlb-2m", 8 * M, Backing::Hugetlb2m),
    ];
    let mut notes = Vec::new();
    if free_1g > 0 {
        want.push(("demo-hugetlb-1g", SZ_1G, Backing::Hugetlb1g));
    } else {
        notes.push(
            "no free 1 GiB huge page: the demo leaves out hugetlb-1g (reserve one with `echo 1 > \
             /sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages`)"
                .to_string(),
        );
    }
    let mut regions = Vec::new();
    for (name, size, backing) in want {
        match mm.mmap(&MmapSpec::new(name, size, backing)) {
            Ok(vaddr) => regions.push(DemoRegion {
                name: name.to_string(),
                backing: backing.name().to_string(),
                vaddr,
                size,
            }),
            Err(e) if matches!(backing, Backing::Hugetlb2m | Backing::Hugetlb1g) => {
                notes.push(format!("{} left out: {e}", backing.name()));
            }
            Err(e) => return Err(Error::Demo(e.to_string())),
        }
    }
    let ranges: Vec<(u64, u64)> = regions
        .iter()
        .map(|r| (r.vaddr, r.vaddr + r.size))
        .collect();
    let mut report = inspect_ranges(std::process::id(), &ranges, pgsizes)?;
    report.notes.extend(notes);
    Ok(Demo { regions, report })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_buckets_and_leaves() {
        let pg = (1 << 12) | (1 << 21) | (1 << 30);
        let mut c = Counts::new(pg);
        // 1024 pages at a 2M-aligned vaddr and paddr: two 2M leaves either way.
        c.add_run(pg, 0, 0x4020_0000, 0x200, 1024);
        assert_eq!(c.run_histogram[0].min_pages, 1024);
        assert_eq!(c.leaves_iova_eq_vaddr[1].leaves, 2);
        assert_eq!(c.leaves_each_run_aligned[1].leaves, 2);
        // 1024 pages from paddr 0x401000 at a 2M-aligned vaddr: vaddr and paddr are not
        // congruent mod 2M, so 1024 4K leaves at IOVA = vaddr; the best IOVA gets one 2M leaf
        // (paddr 0x600000..0x800000) and 512 4K leaves around it.
        c.add_run(pg, 0, 0x4060_0000, 0x401, 1024);
        assert_eq!(c.leaves_iova_eq_vaddr[0].leaves, 1024);
        assert_eq!(c.leaves_each_run_aligned[0].leaves, 512);
        assert_eq!(c.leaves_each_run_aligned[1].leaves, 3);
        c.add_run(pg, 0, 0x1000, 0x9, 3);
        assert_eq!(c.runs, 3);
        assert_eq!(
            c.run_histogram
                .iter()
                .map(|b| (b.min_pages, b.max_pages, b.runs))
                .collect::<Vec<_>>(),
            vec![(2, 3, 1), (1024, 2047, 2)]
        );
    }

    #[test]
    fn contiguous_wants_every_entry_present_on_the_next_pfn() {
        let p = pagemap::PRESENT;
        // Present, consecutive pfns; the flag bits other than present do not matter.
        let mut e: Vec<u64> = (0..512).map(|k| p | (0x4_0000 + k)).collect();
        e[7] |= pagemap::EXCLUSIVE;
        assert!(contiguous(&e));
        assert!(contiguous(&e[100..]));
        let mut gap = e.clone();
        gap[511] += 1;
        assert!(!contiguous(&gap), "the last pfn off by one");
        let mut hole = e.clone();
        hole[300] &= !p;
        assert!(!contiguous(&hole), "one page not present");
        let absent: Vec<u64> = e.iter().map(|x| x & !p).collect();
        assert!(!contiguous(&absent));
        assert!(!contiguous(&[]));
    }

    #[test]
    fn smaps_counts_folios_anonymous_and_lru_pages_only() {
        assert!(counted(kpf::THP | kpf::COMPOUND_HEAD));
        assert!(counted(kpf::HUGE | kpf::COMPOUND_TAIL));
        assert!(counted(kpf::ANON));
        assert!(counted(kpf::LRU));
        // The huge zero page is a THP to kpageflags; smaps does not count it.
        assert!(!counted(kpf::THP | kpf::ZERO_PAGE));
        assert!(!counted(kpf::ZERO_PAGE));
        assert!(!counted(kpf::NOPAGE));
        assert!(!counted(kpf::RESERVED | kpf::LRU));
        assert!(!counted(0), "a page of unknown kind asks smaps");
    }

    #[test]
    fn runs_join_groups_on_consecutive_pfns_of_equal_reservedness() {
        let pg = (1 << 12) | (1 << 21) | (1 << 30);
        let mut c = Counts::new(pg);
        let mut r = Runs {
            c: &mut c,
            pgsizes: pg,
            delta: 0,
            run: None,
            in_rss: false,
        };
        // Two 2M blocks of THP on consecutive pfns, then a 4K page on the next pfn: one run.
        r.push(0x4000_0000, 0x1000, 512, kpf::THP);
        r.push(0x4020_0000, 0x1200, 512, kpf::THP);
        r.push(0x4040_0000, 0x1400, 1, 0);
        // The zero page next: reserved, its own run.
        r.push(0x4040_1000, 0x1401, 1, kpf::ZERO_PAGE);
        // Not the next vaddr: a new run.
        r.push(0x4040_3000, 0x1402, 2, 0);
        r.end();
        assert!(r.in_rss, "THP is counted by smaps");
        assert_eq!(c.runs, 3);
        assert_eq!(c.resident_pages, 1028);
        assert_eq!(c.thp_pages, 1024);
        assert_eq!(c.reserved_pages, 1);
        assert_eq!(c.locked_pages, 1027);
        assert_eq!(c.longest_run_pages, 1025);
        assert_eq!(c.leaves_iova_eq_vaddr[1].leaves, 2);
        assert_eq!(c.leaves_iova_eq_vaddr[0].leaves, 4);
    }

    #[test]
    fn layout_delta_moves_the_leaves_and_the_verdict_says_why() {
        let pg = (1 << 12) | (1 << 21) | (1 << 30);
        // 512 pages on a 2M-aligned paddr at a vaddr 4K off 2M: at IOVA = vaddr no 2M leaf; a
        // layout 4K lower (delta = -4K) makes IOVA congruent and gives one 2M leaf.
        let mut c = Counts::new(pg);
        c.add_run(pg, 0x1000u64.wrapping_neg(), 0x4020_1000, 0x200, 512);
        c.resident_pages = 512;
        c.pages = 512;
        assert_eq!(c.leaves_iova_eq_vaddr[0].leaves, 512);
        assert_eq!(c.leaves_layout[1].leaves, 1);
        assert_eq!(c.leaves_layout[0].leaves, 0);
        assert_eq!(Verdict::of(&c, pg).superpages, "yes");
        // The same run at IOVA = vaddr: a run long enough, but not congruent.
        let mut d = Counts::new(pg);
        d.add_run(pg, 0, 0x4020_1000, 0x200, 512);
        d.resident_pages = 512;
        d.pages = 512;
        let v = Verdict::of(&d, pg);
        assert_eq!(v.superpages, "no");
        assert!(v.reason.contains("congruent"), "{}", v.reason);
        assert_eq!(v.longest_run_pages, 512);
        // Short runs: the reason is the backing.
        let mut e = Counts::new(pg);
        e.add_run(pg, 0, 0x1000, 0x9, 3);
        e.resident_pages = 3;
        e.pages = 3;
        assert!(Verdict::of(&e, pg).reason.contains("not in huge pages"));
        // Nothing resident.
        assert!(Verdict::of(&Counts::new(pg), pg)
            .reason
            .contains("nothing resident"));
        assert_eq!(size(SZ_2M), "2M");
        assert_eq!(size(SZ_1G + SZ_2M * 256), "1.5G");
    }
}
