//! Runs trace statements against the kernel (inside the guest): one [`Record`] per statement.
//!
//! The statements are the trace language's own ([`type1_trace::Stmt`]), parsed on the host.
//! What the language leaves to runners (argsz per verb, bitmap sizes, `NAME±OFFSET` vaddrs)
//! comes from [`type1_trace::defaults`], as on the engine's side, so both are asked the same.
//! What the kernel cannot be asked is said in the record: a statement that cannot run at all is
//! `cannot` with its reason; parts of a statement only the model can honour (IOMMU formats,
//! page-size sets, physical layouts) are run without and listed in its `message`.

use std::collections::BTreeMap;

use type1_trace::record::{Record, State};
use type1_trace::verbs::{ContainerArgs, DomainArgs, MapArgs};
use type1_trace::{
    defaults, dispatch, Backing, Layout, Memlock, MmapSpec, Stmt, StmtKind, Verbs, UNMAP_DIRTY,
};

use crate::container::{locked_pages, BitmapArg, VfioContainer};
use crate::sys::{self, MmapKind};

/// Container settings from the `container` statement, used when the domain is attached.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Settings {
    v2: bool,
    dma_entry_limit: Option<u32>,
    /// RLIMIT_MEMLOCK in bytes; `None` is unlimited.
    memlock: Option<u64>,
    cap_ipc_lock: bool,
}

impl Default for Settings {
    /// A bare `container`: type1v2, the module's entry limit, no memlock limit, no capability.
    fn default() -> Self {
        Settings {
            v2: true,
            dma_entry_limit: None,
            memlock: None,
            cap_ipc_lock: false,
        }
    }
}

/// Called at each `check`, after the guest printed `@@CHECKPOINT line=N`: it returns when the
/// host has read the IOMMU tables (the guest program waits for a line on stdin).
pub trait Checkpoint {
    /// Waits at the `check` of `line`.
    fn pause(&mut self, line: usize);
}

/// A checkpoint that does not wait (runs outside a guest, tests).
pub struct NoPause;

impl Checkpoint for NoPause {
    fn pause(&mut self, _line: usize) {}
}

/// Prints the marker on stdout and waits for one line on stdin.
pub struct StdioPause;

impl Checkpoint for StdioPause {
    fn pause(&mut self, line: usize) {
        use std::io::{BufRead, Write};
        println!("@@CHECKPOINT line={line}");
        let _ = std::io::stdout().flush();
        let mut s = String::new();
        let _ = std::io::stdin().lock().read_line(&mut s);
    }
}

/// True when a statement needs a 1 GiB huge page (the guest then needs more memory).
pub fn needs_1g(stmts: &[Stmt]) -> bool {
    stmts.iter().any(|s| {
        matches!(
            s.kind,
            StmtKind::Mmap {
                backing: Backing::Hugetlb1g,
                ..
            }
        )
    })
}

/// The parts of a statement the kernel run cannot honour (it runs without them).
pub fn not_reproducible(kind: &StmtKind) -> Vec<String> {
    let mut out = Vec::new();
    match kind {
        StmtKind::Domain {
            format, pgsizes, ..
        } => {
            if let Some(f) = format.as_deref().filter(|f| !f.starts_with("x86_64")) {
                out.push(format!("format={f} (the guest's IOMMU is VT-d)"));
            }
            if pgsizes.is_some() {
                out.push("pgsizes=".into());
            }
        }
        StmtKind::Mmap { layout, phys, .. } => {
            if *layout == Layout::Scattered {
                out.push("layout=scattered".into());
            }
            if let Some(p) = phys {
                out.push(format!("phys={p:#x}"));
            }
        }
        _ => {}
    }
    out
}

/// The replay state: the container (once a domain is attached) and the named regions.
pub struct Replayer {
    group: u32,
    settings: Settings,
    container: Option<VfioContainer>,
    domain: Option<String>,
    /// Name → (start, size).
    regions: BTreeMap<String, (u64, u64)>,
    /// The device's fd, opened at the first `backing=pfnmap` (its BAR0 is mmap'd from it).
    device: Option<std::fs::File>,
}

/// The guest's device (the `edu` device bound to vfio-pci; kernel/init.sh binds it).
pub const DEVICE: &str = "0000:00:01.0";

impl Replayer {
    /// `group`: the IOMMU group number of the guest's device (/dev/vfio/N).
    pub fn new(group: u32) -> Self {
        Replayer {
            group,
            settings: Settings::default(),
            container: None,
            domain: None,
            regions: BTreeMap::new(),
            device: None,
        }
    }

    /// `backing=pfnmap`: BAR0 of the device, mmap'd shared from the device fd as VMMs map
    /// BARs (a `VM_PFNMAP` vma of MMIO pfns). Needs the container (the kernel hands out a
    /// device fd only once the group's container and IOMMU are set).
    fn mmap_bar(&mut self, size: u64, writable: bool, at: Option<u64>) -> Result<u64, String> {
        if at.is_some() {
            return Err("cannot: a BAR mmap is placed by the kernel (at= is not possible)".into());
        }
        let Some(c) = &self.container else {
            return Err(
                "cannot: a BAR is mmap'd from the device fd, which needs the container: \
                        put `mmap ... backing=pfnmap` after `domain`"
                    .into(),
            );
        };
        if self.device.is_none() {
            let d = c
                .open_device(DEVICE)
                .map_err(|e| format!("cannot: VFIO_GROUP_GET_DEVICE_FD {DEVICE}: {e}"))?;
            self.device = Some(d);
        }
        let dev = self.device.as_ref().expect("opened above");
        let bar = sys::device_region_info(dev, 0)
            .map_err(|e| format!("cannot: VFIO_DEVICE_GET_REGION_INFO of BAR0: {e}"))?;
        if bar.flags & sys::REGION_INFO_FLAG_MMAP == 0 {
            return Err(format!("cannot: BAR0 of {DEVICE} cannot be mmap'd"));
        }
        if size > bar.size {
            return Err(format!(
                "cannot: the guest's BAR0 has {:#x} bytes, {size:#x} asked",
                bar.size
            ));
        }
        sys::mmap_device(dev, bar.offset, size, writable)
            .map_err(|e| format!("cannot: mmap of BAR0 failed: {e}"))
    }

    /// Runs one statement.
    pub fn step(&mut self, st: &Stmt, cp: &mut dyn Checkpoint) -> Record {
        let mut r = Record::kernel(st.line, st.kind.verb());
        self.exec(st, &mut r, cp);
        let ignored = not_reproducible(&st.kind);
        if !ignored.is_empty() && !r.cannot {
            let note = format!(
                "not reproducible in the kernel, ignored: {}",
                ignored.join(", ")
            );
            r.message = Some(match r.message.take() {
                Some(m) => format!("{m}; {note}"),
                None => note,
            });
        }
        r.locked = locked_pages();
        r.avail = match &self.container {
            Some(c) => c.avail().map(u64::from),
            None => None,
        };
        r
    }

    fn exec(&mut self, st: &Stmt, r: &mut Record, cp: &mut dyn Checkpoint) {
        dispatch(&mut Step { rp: self, r, cp }, &st.kind)
    }
}

/// One statement being run: the replay state, the statement's record (filled in by the verb's
/// function) and the checkpoint `check` pauses at.
struct Step<'a> {
    rp: &'a mut Replayer,
    r: &'a mut Record,
    cp: &'a mut dyn Checkpoint,
}

impl Step<'_> {
    /// The container, or the record says there is none yet.
    fn container(&mut self) -> Option<&VfioContainer> {
        if self.rp.container.is_none() {
            self.r.cannot("no container yet: the kernel needs a group (a `domain` statement) before it takes requests");
        }
        self.rp.container.as_ref()
    }
}

/// One function per verb, each a thin layer over the kernel's ioctl.
impl Verbs for Step<'_> {
    type Out = ();

    /// `container`: kept for when the domain is attached (the kernel needs a group first).
    fn new_container(&mut self, a: ContainerArgs<'_>) {
        self.rp.settings = Settings {
            v2: a.v2,
            dma_entry_limit: a.dma_entry_limit,
            memlock: match a.memlock {
                Some(Memlock::Bytes(b)) => Some(b),
                Some(Memlock::Unlimited) | None => None,
            },
            cap_ipc_lock: a.cap_ipc_lock,
        };
    }

    /// `domain`: opens the device's group, sets it on a container and sets the IOMMU backend.
    /// The guest has one device, so one domain.
    fn domain(&mut self, a: DomainArgs<'_>) {
        let rp = &mut *self.rp;
        if rp.container.is_some() {
            self.r
                .cannot("cannot: one device in the guest, so one group and one domain");
            return;
        }
        let s = &rp.settings;
        match VfioContainer::open(
            rp.group,
            s.v2,
            s.dma_entry_limit,
            Some(s.memlock),
            s.cap_ipc_lock,
        ) {
            Ok(c) => {
                rp.container = Some(c);
                rp.domain = Some(a.name.to_string());
            }
            Err(e) => self.r.cannot(format!("setting up the container: {e}")),
        }
    }

    fn detach(&mut self, _name: &str) {
        self.r
            .cannot("cannot: detaching the only group would close the container");
    }

    /// `mmap`: anonymous memory of the backing asked (`layout=` and `phys=` cannot be asked).
    fn mmap(&mut self, spec: MmapSpec) {
        let kind = match spec.backing {
            Backing::Page4k => MmapKind::Page4k,
            Backing::Thp => MmapKind::Thp,
            Backing::Hugetlb2m => MmapKind::Hugetlb2m,
            Backing::Hugetlb1g => MmapKind::Hugetlb1g,
            Backing::Pfnmap => {
                return match self.rp.mmap_bar(spec.size, spec.writable, spec.at) {
                    Ok(a) => {
                        self.rp.regions.insert(spec.name, (a, spec.size));
                    }
                    Err(why) => self.r.cannot(why),
                };
            }
        };
        match sys::mmap_anon(spec.size, spec.writable, kind, spec.at) {
            Ok(a) => {
                self.rp.regions.insert(spec.name, (a, spec.size));
            }
            Err(e) => self.r.cannot(format!(
                "cannot: mmap of {:#x} bytes failed: {e}",
                spec.size
            )),
        }
    }

    fn munmap(&mut self, name: &str, range: Option<(u64, u64)>) {
        let Some(&(base, len)) = self.rp.regions.get(name) else {
            return self.r.cannot(format!("no mmap named {name:?}"));
        };
        let (off, sz) = range.unwrap_or((0, len));
        if let Err(e) = sys::munmap(base + off, sz) {
            self.r.cannot(format!("munmap failed: {e}"));
        }
    }

    fn map(&mut self, a: MapArgs<'_>) {
        let regions = &self.rp.regions;
        let v = match defaults::resolve_vaddr(a.vaddr, |n| regions.get(n).map(|&(b, _)| b)) {
            Ok(v) => v,
            Err(e) => return self.r.cannot(e),
        };
        let Some(c) = self.container() else { return };
        if let Err(e) = c.map_dma(defaults::map_argsz(a.argsz), a.flags, v, a.iova, a.size) {
            self.r.fail(e);
        }
    }

    fn unmap(&mut self, iova: u64, size: u64, flags: u32, argsz: Option<u32>) {
        let Some(c) = self.container() else { return };
        let bitmap = (flags & UNMAP_DIRTY != 0).then(|| {
            let pgsize = c
                .get_info(defaults::INFO_ARGSZ)
                .map(|i| defaults::unmap_bitmap_pgsize(i.iova_pgsizes))
                .unwrap_or(type1::PAGE_SIZE);
            BitmapArg {
                pgsize,
                size: defaults::bitmap_bytes(size, pgsize),
            }
        });
        let out = c.unmap_dma(
            defaults::unmap_argsz(argsz, flags),
            flags,
            iova,
            size,
            bitmap,
        );
        self.r.out_size = Some(out.out_size);
        match out.result {
            Ok(s) => {
                self.r.size = Some(s);
                self.r.bitmap = out.bitmap;
            }
            Err(e) => self.r.fail(e),
        }
    }

    fn info(&mut self, argsz: Option<u32>) {
        let Some(c) = self.container() else { return };
        match c.get_info(defaults::info_argsz(argsz)) {
            Ok(i) => self.r.info = Some(i),
            Err(e) => self.r.fail(e),
        }
    }

    fn dirty(&mut self, flag: u32) {
        let Some(c) = self.container() else { return };
        if let Err(e) = c.dirty(defaults::DIRTY_ARGSZ, flag) {
            self.r.fail(e);
        }
    }

    fn dirty_get(&mut self, iova: u64, size: u64, pgsize: u64) {
        self.r.dirty_get = true;
        let Some(c) = self.container() else { return };
        let arg = BitmapArg {
            pgsize,
            size: defaults::bitmap_bytes(size, pgsize),
        };
        match c.dirty_get(iova, size, arg) {
            Ok(b) => self.r.bitmap = Some(b),
            Err(e) => self.r.fail(e),
        }
    }

    /// `check`: the guest pauses so the host can read the IOMMU's tables; the host fills in
    /// the leaves (the kernel lists neither mappings nor pins: `dmas`, `pinned` stay unknown).
    /// `pin`, `unpin`, `dma_rw`: in-kernel interfaces of mdev-style drivers; no ioctl asks them.
    fn pin(&mut self, _iova: u64, _npage: u64, _group: Option<&str>) {
        self.r
            .cannot("cannot: vfio_pin_pages is an in-kernel interface (no ioctl reaches it)");
    }
    fn unpin(&mut self, _iova: u64, _npage: u64) {
        self.r
            .cannot("cannot: vfio_unpin_pages is an in-kernel interface (no ioctl reaches it)");
    }
    fn dma_rw(&mut self, _iova: u64, _size: u64, _write: bool) {
        self.r
            .cannot("cannot: vfio_dma_rw is an in-kernel interface (no ioctl reaches it)");
    }

    fn check(&mut self) {
        self.cp.pause(self.r.line);
        self.r.state = Some(State {
            domains: self
                .rp
                .domain
                .iter()
                .map(|d| (d.clone(), BTreeMap::new()))
                .collect(),
            ..State::default()
        });
    }
}

/// One kernel record for people: `LINE STATEMENT | RESULT [size=] [leaves.D.S=N...] locked=
/// avail=` (`-` for what is not known; `CANNOT (why)` for a statement not run).
pub fn describe(r: &Record, text: &str) -> String {
    let mut res = if r.cannot {
        format!("CANNOT ({})", r.message.as_deref().unwrap_or_default())
    } else {
        r.result_word()
    };
    if let Some(s) = r.size {
        res.push_str(&format!(" size={s:#x}"));
    }
    for (n, l) in r.state.iter().flat_map(|s| &s.domains) {
        for (sz, c) in l {
            res.push_str(&format!(" leaves.{n}.{sz:#x}={c}"));
        }
    }
    let known = |v: Option<u64>| v.map_or("-".into(), |v| v.to_string());
    format!(
        "{:>4} {text:<60} | {res} locked={} avail={}",
        r.line,
        known(r.locked),
        known(r.avail)
    )
}

/// The line before each trace in a file of several ([`join_traces`]); a statement's JSON line
/// never reads so.
pub const TRACE_SEPARATOR: &str = "@@TRACE";

/// Several traces in one file for the guest: each trace's JSON lines after a
/// [`TRACE_SEPARATOR`] line.
pub fn join_traces(traces: &[&[Stmt]]) -> String {
    let mut out = String::new();
    for t in traces {
        out.push_str(TRACE_SEPARATOR);
        out.push('\n');
        out.push_str(&type1_trace::to_json_lines(t));
    }
    out
}

/// The traces of a [`join_traces`] file, each as its JSON lines; `None` for a file of one trace
/// (no separator line).
pub fn split_traces(text: &str) -> Option<Vec<String>> {
    if !text.lines().any(|l| l.trim() == TRACE_SEPARATOR) {
        return None;
    }
    let mut out: Vec<String> = Vec::new();
    for l in text.lines() {
        if l.trim() == TRACE_SEPARATOR {
            out.push(String::new());
        } else if let Some(cur) = out.last_mut() {
            cur.push_str(l);
            cur.push('\n');
        }
    }
    Some(out)
}

/// Runs every statement; `emit` gets each record as it is made.
pub fn replay(
    stmts: &[Stmt],
    group: u32,
    cp: &mut dyn Checkpoint,
    emit: &mut dyn FnMut(&Record),
) -> Vec<Record> {
    let mut rp = Replayer::new(group);
    let mut out = Vec::with_capacity(stmts.len());
    for st in stmts {
        let r = rp.step(st, cp);
        emit(&r);
        out.push(r);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stmts(src: &str) -> Vec<Stmt> {
        type1_trace::parse(src).unwrap().stmts
    }

    /// Without /dev/vfio the statements that need the kernel say so; memory statements run.
    #[test]
    fn runs_memory_statements_and_refuses_requests_without_a_container() {
        let stmts = stmts(
            "container\n\
             mmap a size=2M backing=thp layout=scattered\n\
             munmap a offset=4K size=4K\n\
             map vaddr=a iova=0 size=4K\n\
             mmap p size=4K backing=pfnmap\n",
        );
        let recs = replay(&stmts, 1, &mut NoPause, &mut |_| {});
        assert!(recs[1].ok && recs[2].ok, "{recs:?}");
        assert!(recs[3].cannot && recs[4].cannot);
        // A BAR comes from the device fd, which needs the container.
        let why = recs[4].message.as_deref().unwrap_or_default();
        assert!(
            why.contains("put `mmap ... backing=pfnmap` after `domain`"),
            "{why}"
        );
        assert_eq!(recs[3].op, "map");
        assert!(recs[1].locked.is_some());
        assert_eq!(
            recs[1].message.as_deref(),
            Some("not reproducible in the kernel, ignored: layout=scattered")
        );
        assert_eq!(recs[1].backend, type1_trace::Backend::Kernel);
        assert!(!needs_1g(&stmts));
    }

    /// The statements travel to the guest as JSON lines and come back the same.
    #[test]
    fn several_traces_split_back_as_they_were_joined() {
        let a = stmts("container\n");
        let b = stmts("container\nmmap a size=4K\n");
        let text = join_traces(&[&a, &b]);
        let parts = split_traces(&text).expect("a file of several traces");
        assert_eq!(parts.len(), 2);
        assert_eq!(type1_trace::from_json_lines(&parts[0]).unwrap(), a);
        assert_eq!(type1_trace::from_json_lines(&parts[1]).unwrap(), b);
        assert_eq!(split_traces(&type1_trace::to_json_lines(&a)), None);
    }

    #[test]
    fn kernel_traces_round_trip_as_json_lines() {
        let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut n = 0;
        for e in std::fs::read_dir(repo.join("tests/kernel")).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_none_or(|x| x != "trace") {
                continue;
            }
            let t = type1_trace::parse(&std::fs::read_to_string(&p).unwrap()).unwrap();
            let text = type1_trace::to_json_lines(&t.stmts);
            assert_eq!(
                type1_trace::from_json_lines(&text).unwrap(),
                t.stmts,
                "{}",
                p.display()
            );
            n += 1;
        }
        assert!(n >= 4, "expected the kernel traces, found {n}");
    }
}
