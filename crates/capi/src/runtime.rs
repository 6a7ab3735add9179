//! The software container a process talks to through `libtype1.so` or the LD_PRELOAD shim:
//! the engine (`type1::Container`) over this process's own memory, reached through the byte
//! dispatcher (`type1::uapi::dispatch`). Shared by `libtype1.so` and `libtype1_preload.so`
//! (the shim includes this file as a module of its own).
//!
//! Invariants owned here:
//! - `ProcMem` is the only way to the caller's memory: `process_vm_readv`/`process_vm_writev`
//!   on this process (falling back to `/proc/self/mem`), so a bad pointer is EFAULT, never a
//!   crash.
//! - `SelfMm` pins what the process has mapped (`/proc/self/maps`), faulting pages in as GUP
//!   does (`MADV_POPULATE_WRITE`/`_READ`). Pfns come from `/proc/self/pagemap` when the kernel
//!   shows them (CAP_SYS_ADMIN); otherwise the *stated fallback*: a page's pfn is its virtual
//!   page number, so virtually contiguous memory counts as physically contiguous. Pages are not
//!   mlocked: the locked-memory count is the engine's (`mm->locked_vm` of the model). With
//!   the 6.1 profile the shared zero page (found at start-up) is a reserved pfn, as there;
//!   with the fallback pfns it cannot be recognised.
//! - `SoftContainer` is vfio core's container: its groups (each an IOMMU domain once the
//!   backend is open), the backend after SET_IOMMU; the last group leaving releases the backend
//!   (unmap all, unpin, uncharge), as does dropping the container.
//! - RLIMIT_MEMLOCK (`getrlimit`) and CAP_IPC_LOCK (`capget`) are read before every MAP_DMA, as
//!   the kernel reads them, unless the options fix them (`memlock=`, `cap_ipc_lock=`).

use std::fs::File;

use iommu::{Domain, DomainConfig, Format};
use type1::container::Container;
use type1::mm::pincount::PinCounts;
use type1::mm::{Batch, MmError, PageAudit, PageSource, PinResult, Pinned};
use type1::procfs::{pagemap, read_entries};
use type1::sys::{madvise, Advice};
use type1::uapi::dispatch::{
    vfio_fops_unl_ioctl, BadAddress, ContainerCore, IoctlResult, UserMem, VFIO_IOMMU_MAP_DMA,
};
use type1::{Config, Errno, KernelProfile, PAGE_SIZE};

/// This process's memory through `process_vm_readv`/`process_vm_writev`.
pub struct ProcMem;

fn iov(addr: u64, len: usize) -> libc::iovec {
    libc::iovec {
        iov_base: addr as usize as *mut libc::c_void,
        iov_len: len,
    }
}

/// `/proc/self/mem` at `addr`: the fallback where `process_vm_*` is not allowed.
fn proc_mem(addr: u64, buf: &mut [u8], write: bool) -> Result<(), BadAddress> {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(write)
        .open("/proc/self/mem")
        .map_err(|_| BadAddress)?;
    let r = if write {
        f.write_all_at(buf, addr)
    } else {
        f.read_exact_at(buf, addr)
    };
    r.map_err(|_| BadAddress)
}

impl UserMem for ProcMem {
    fn read(&mut self, addr: u64, buf: &mut [u8]) -> Result<(), BadAddress> {
        if buf.is_empty() {
            return Ok(());
        }
        let local = iov(buf.as_mut_ptr() as u64, buf.len());
        let remote = iov(addr, buf.len());
        // SAFETY: `local` describes `buf`, which we own mutably for the call; the kernel checks
        // `remote` against our mappings and fails (EFAULT) rather than fault.
        let n = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
        if n == buf.len() as isize {
            return Ok(());
        }
        let err = std::io::Error::last_os_error().raw_os_error();
        if n < 0 && matches!(err, Some(libc::EPERM) | Some(libc::ENOSYS)) {
            return proc_mem(addr, buf, false);
        }
        Err(BadAddress)
    }

    fn write(&mut self, addr: u64, data: &[u8]) -> Result<(), BadAddress> {
        if data.is_empty() {
            return Ok(());
        }
        let local = iov(data.as_ptr() as u64, data.len());
        let remote = iov(addr, data.len());
        // SAFETY: `local` describes `data`, only read by the kernel; `remote` is checked by the
        // kernel against our writable mappings (EFAULT otherwise). Writing the caller's memory
        // is what the ioctl asks for.
        let n = unsafe { libc::process_vm_writev(libc::getpid(), &local, 1, &remote, 1, 0) };
        if n == data.len() as isize {
            return Ok(());
        }
        let err = std::io::Error::last_os_error().raw_os_error();
        if n < 0 && matches!(err, Some(libc::EPERM) | Some(libc::ENOSYS)) {
            let mut copy = data.to_vec();
            return proc_mem(addr, &mut copy, true);
        }
        Err(BadAddress)
    }
}

/// One line of `/proc/self/maps`: `[start, end)` and whether it is readable and writable.
#[derive(Clone, Copy, Debug)]
struct Vma {
    start: u64,
    end: u64,
    read: bool,
    write: bool,
}

fn self_maps() -> Vec<Vma> {
    let text = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let (range, perms) = (w.next()?, w.next()?);
            let (s, e) = range.split_once('-')?;
            let p = perms.as_bytes();
            Some(Vma {
                start: u64::from_str_radix(s, 16).ok()?,
                end: u64::from_str_radix(e, 16).ok()?,
                read: p.first() == Some(&b'r'),
                write: p.get(1) == Some(&b'w'),
            })
        })
        .collect()
}

/// This process's own memory as the engine's page source.
#[derive(Debug)]
pub struct SelfMm {
    pagemap: Option<File>,
    /// Whether pagemap shows real pfns (else the fallback: pfn = virtual page number).
    real_pfns: bool,
    pins: PinCounts,
    violations: Vec<String>,
    /// The shared zero page's pfn (known only with real pfns).
    zero_pfn: Option<u64>,
    /// Whether the zero page is a reserved pfn (the 6.1 profile: never pinned nor charged).
    zero_reserved: bool,
}

/// The pfn of the shared zero page: a read-only private page, read, looked up in pagemap.
fn zero_pfn(pagemap: &File) -> Option<u64> {
    let m = type1::sys::Mapping::anon(PAGE_SIZE, false, None, None).ok()?;
    m.touch(m.base(), PAGE_SIZE).ok()?;
    let e = read_entries(pagemap, m.base() / PAGE_SIZE, 1).ok()?;
    e.first()
        .copied()
        .and_then(pagemap::pfn)
        .filter(|&p| p != 0)
}

impl SelfMm {
    /// Opens `/proc/self/pagemap` and probes whether it shows pfns.
    pub fn new() -> SelfMm {
        let pagemap = File::open("/proc/self/pagemap").ok();
        let probe = [1u8; 1];
        let page = (probe.as_ptr() as u64) / PAGE_SIZE;
        let real_pfns = pagemap
            .as_ref()
            .and_then(|f| read_entries(f, page, 1).ok())
            .and_then(|e| e.first().copied().and_then(pagemap::pfn))
            .is_some_and(|pfn| pfn != 0);
        let zero = if real_pfns {
            pagemap.as_ref().and_then(zero_pfn)
        } else {
            None
        };
        SelfMm {
            pagemap,
            real_pfns,
            pins: PinCounts::new(),
            violations: Vec::new(),
            zero_pfn: zero,
            zero_reserved: false,
        }
    }

    /// Whether pfns are real (from pagemap) rather than the virtual-page fallback.
    pub fn real_pfns(&self) -> bool {
        self.real_pfns
    }
}

impl Default for SelfMm {
    fn default() -> Self {
        SelfMm::new()
    }
}

impl PageAudit for SelfMm {
    fn pin_counts(&self) -> &PinCounts {
        &self.pins
    }
    fn violations(&self) -> Vec<String> {
        self.violations.clone()
    }
}

impl PageSource for SelfMm {
    fn pin(&mut self, vaddr: u64, npages: u64, write: bool, batch: &mut Batch) -> PinResult {
        let vaddr = vaddr & !(PAGE_SIZE - 1);
        let limit = batch.page_limit(npages).min(batch.entries_left());
        // The span GUP would walk: consecutive vmas that allow the access.
        let maps = self_maps();
        let (mut span, mut addr) = (0u64, vaddr);
        while span < limit {
            let Some(v) = maps.iter().find(|v| v.start <= addr && addr < v.end) else {
                break;
            };
            if !v.read || (write && !v.write) {
                break;
            }
            let n = ((v.end - addr) / PAGE_SIZE).min(limit - span);
            span += n;
            addr += n * PAGE_SIZE;
        }
        if span == 0 {
            return Err(MmError::NotMapped { vaddr });
        }
        let advice = if write {
            Advice::PopulateWrite
        } else {
            Advice::PopulateRead
        };
        let _ = madvise(vaddr, span * PAGE_SIZE, advice);
        let entries = match &self.pagemap {
            Some(f) => read_entries(f, vaddr / PAGE_SIZE, span as usize).unwrap_or_default(),
            None => Vec::new(),
        };
        let mut got = 0u64;
        for i in 0..span {
            let present = entries.get(i as usize).copied().and_then(pagemap::pfn);
            let pfn = match present {
                Some(p) if self.real_pfns && p != 0 => p,
                // Present, or pagemap unreadable: the fallback pfn.
                Some(_) => vaddr / PAGE_SIZE + i,
                None if entries.is_empty() => vaddr / PAGE_SIZE + i,
                None => break,
            };
            let reserved = self.is_reserved(pfn);
            batch.push(pfn, 1, reserved);
            if !reserved {
                self.pins.add(pfn, 1);
            }
            got += 1;
        }
        if got == 0 {
            return Err(MmError::NotMapped { vaddr });
        }
        Ok(Pinned::Pages)
    }

    fn unpin(&mut self, pfn: u64, npages: u64, _dirty: bool, skip_reserved: bool) -> u64 {
        if let Some(z) = self
            .zero_pfn
            .filter(|_| skip_reserved && self.zero_reserved)
        {
            if z >= pfn && z - pfn < npages {
                let before = self.unpin(pfn, z - pfn, false, false);
                return before + self.unpin(z + 1, pfn + npages - z - 1, false, false);
            }
        }
        let missing = self.pins.sub(pfn, npages);
        if missing != 0 {
            self.violations.push(format!(
                "unpin of {missing} unpinned pages from pfn {pfn:#x}"
            ));
        }
        npages - missing
    }

    fn is_reserved(&self, pfn: u64) -> bool {
        self.zero_reserved && self.zero_pfn == Some(pfn)
    }

    fn set_kernel_profile(&mut self, profile: KernelProfile) {
        // On 6.1 a never-written read-only page (the shared zero page) is a reserved pfn.
        self.zero_reserved = profile == KernelProfile::V6_1;
    }
}

/// What the kernel takes from the caller's process: RLIMIT_MEMLOCK (bytes, `None`: unlimited)
/// and whether CAP_IPC_LOCK is effective.
pub fn process_limits() -> (Option<u64>, bool) {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `r` is a valid rlimit for getrlimit to fill.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r) } == 0;
    let memlock = if !ok || r.rlim_cur == libc::RLIM_INFINITY {
        None
    } else {
        Some(r.rlim_cur)
    };
    const CAP_IPC_LOCK: u32 = 14;
    let cap = type1::sys::effective_caps().is_ok_and(|c| c & (1 << CAP_IPC_LOCK) != 0);
    (memlock, cap)
}

/// A domain's arguments from the options (`domain NAME format=... pgsizes=... aperture=...
/// reserved=...`).
#[derive(Clone, Debug, Default)]
pub struct DomainSpec {
    format: Option<String>,
    pgsizes: Option<Vec<u64>>,
    aperture: Option<(u64, u64)>,
    reserved: Option<Vec<(u64, u64)>>,
}

impl DomainSpec {
    fn build(&self) -> Result<(Domain, Vec<(u64, u64)>), String> {
        let fmt =
            Format::parse(self.format.as_deref().unwrap_or("x86_64")).map_err(|e| e.to_string())?;
        let cfg = DomainConfig {
            format: fmt,
            pgsize_bitmap: self
                .pgsizes
                .as_ref()
                .map(|v| v.iter().fold(0, |x, y| x | y)),
            aperture: self.aperture,
        };
        let d = Domain::new(cfg).map_err(|e| e.to_string())?;
        let reserved = self
            .reserved
            .clone()
            .unwrap_or_else(|| d.reserved_regions());
        Ok((d, reserved))
    }
}

/// The options string: the trace language's `container` arguments, then `;`-separated
/// `domain NAME ARGS` statements.
#[derive(Clone, Debug)]
pub struct Options {
    /// The container's settings (`v2` from `type1`/`type1v2`).
    pub cfg: Config,
    /// `memlock=` was given (else RLIMIT_MEMLOCK is read at each map).
    pub fixed_memlock: bool,
    /// `cap_ipc_lock=` was given (else CAP_IPC_LOCK is read at each map).
    pub fixed_cap: bool,
    /// The domains named in the options, in order.
    pub domains: Vec<(String, DomainSpec)>,
}

impl Options {
    /// Parses `options`; the error says what is wrong (the trace parser's message).
    pub fn parse(options: &str) -> Result<Options, String> {
        let mut pieces = options
            .split([';', '\n'])
            .map(str::trim)
            .filter(|p| !p.is_empty());
        let first = pieces.next().unwrap_or("");
        let mut text = if first.starts_with("container") {
            first.to_string()
        } else if first.starts_with("domain") {
            format!("container\n{first}")
        } else {
            format!("container {first}")
        };
        for p in pieces {
            text.push('\n');
            text.push_str(p);
        }
        let trace = type1_trace::parse(&text).map_err(|e| e.to_string())?;
        let words: Vec<&str> = options.split_whitespace().collect();
        let given = |k: &str| words.iter().any(|w| w.starts_with(k));
        let mut o = Options {
            cfg: Config::default(),
            fixed_memlock: given("memlock="),
            fixed_cap: given("cap_ipc_lock="),
            domains: Vec::new(),
        };
        for s in trace.stmts {
            match s.kind {
                type1_trace::StmtKind::Container {
                    v2,
                    dma_entry_limit,
                    memlock,
                    cap_ipc_lock,
                    kernel,
                } => {
                    o.cfg.v2 = v2;
                    if let Some(l) = dma_entry_limit {
                        o.cfg.dma_entry_limit = l;
                    }
                    o.cfg.memlock = match memlock {
                        Some(type1_trace::Memlock::Bytes(b)) => Some(b),
                        _ => None,
                    };
                    o.cfg.cap_ipc_lock = cap_ipc_lock;
                    if let Some(k) = kernel {
                        o.cfg.kernel = KernelProfile::parse(&k)
                            .ok_or_else(|| format!("unknown kernel={k}"))?;
                    }
                }
                type1_trace::StmtKind::Domain {
                    name,
                    format,
                    pgsizes,
                    aperture,
                    reserved,
                } => {
                    let spec = DomainSpec {
                        format,
                        pgsizes,
                        aperture,
                        reserved,
                    };
                    spec.build().map_err(|e| format!("domain {name}: {e}"))?;
                    o.domains.push((name, spec));
                }
                _ => {
                    return Err(format!(
                        "line {}: only container and domain arguments",
                        s.line
                    ))
                }
            }
        }
        Ok(o)
    }

    /// The domain of a group named `name`: its own `domain` statement, else the first one's
    /// arguments, else an x86_64 domain with the default reserved regions.
    fn domain_for(&self, name: &str) -> DomainSpec {
        self.domains
            .iter()
            .find(|(n, _)| n == name)
            .or(self.domains.first())
            .map(|(_, s)| s.clone())
            .unwrap_or_default()
    }
}

/// vfio core's container with the type1 backend over this process's memory.
pub struct SoftContainer {
    /// The options it was made with.
    pub opts: Options,
    /// The groups set on it, in order (each becomes a domain of that name).
    pub groups: Vec<String>,
    /// The backend, after SET_IOMMU.
    pub iommu: Option<Container<SelfMm>>,
}

impl ContainerCore for SoftContainer {
    type Mem = SelfMm;
    fn has_groups(&self) -> bool {
        !self.groups.is_empty()
    }
    fn iommu(&mut self) -> Option<&mut Container<SelfMm>> {
        self.iommu.as_mut()
    }
    fn open_iommu(&mut self, v2: bool) -> Result<(), Errno> {
        let cfg = Config {
            v2,
            ..self.opts.cfg.clone()
        };
        let mut c = Container::new(cfg, SelfMm::new());
        for g in &self.groups {
            let (d, reserved) = self.opts.domain_for(g).build().map_err(|_| Errno::EINVAL)?;
            c.attach(g, d, reserved).map_err(|e| e.errno())?;
        }
        self.iommu = Some(c);
        Ok(())
    }
}

impl SoftContainer {
    /// A container with no group and no backend.
    pub fn new(opts: Options) -> SoftContainer {
        SoftContainer {
            opts,
            groups: Vec::new(),
            iommu: None,
        }
    }

    /// Pages the backend charged (0 without one).
    pub fn locked_pages(&self) -> u64 {
        self.iommu.as_ref().map_or(0, |c| c.locked_pages())
    }

    /// An ioctl on the container, its argument at `arg` in this process.
    pub fn ioctl(&mut self, cmd: u64, arg: u64) -> IoctlResult {
        if cmd as u32 == VFIO_IOMMU_MAP_DMA {
            let (memlock, cap) = process_limits();
            let o = &self.opts;
            let memlock = if o.fixed_memlock {
                o.cfg.memlock
            } else {
                memlock
            };
            let cap = if o.fixed_cap { o.cfg.cap_ipc_lock } else { cap };
            if let Some(c) = self.iommu.as_mut() {
                c.set_owner_limits(memlock, cap);
            }
        }
        vfio_fops_unl_ioctl(self, cmd, arg, &mut ProcMem)
    }

    /// VFIO_GROUP_SET_CONTAINER of group `name`: with the backend open, its domain attaches
    /// now (and existing mappings are replayed into it).
    pub fn add_group(&mut self, name: &str) -> Result<(), Errno> {
        if let Some(c) = self.iommu.as_mut() {
            let (d, reserved) = self
                .opts
                .domain_for(name)
                .build()
                .map_err(|_| Errno::EINVAL)?;
            c.attach(name, d, reserved).map_err(|e| e.errno())?;
        }
        self.groups.push(name.to_string());
        Ok(())
    }

    /// VFIO_GROUP_UNSET_CONTAINER (or the group's close): its domain detaches; the last group
    /// leaving releases the backend (unmap all, unpin, uncharge).
    pub fn remove_group(&mut self, name: &str) {
        self.groups.retain(|g| g != name);
        if self.groups.is_empty() {
            self.iommu = None;
        } else if let Some(c) = self.iommu.as_mut() {
            let _ = c.detach(name);
        }
    }
}
