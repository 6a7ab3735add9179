//! `type1 plan`: a VM's DMA-mapping needs, answered before launch.
//!
//! A [`Plan`] (guest RAM, machine layout, backing, devices, virtual IOMMU, virtio-mem, BARs,
//! registration chunk, IOMMU format and width, limits) is turned into a trace in the trace
//! language ([`Plan::trace`]), the trace is replayed on the engine through the same runner as
//! `type1 replay`, and the result is a [`Report`]: locked memory, DMA entries, leaves, what does
//! not fit, and advice. Invariants this module owns:
//!
//! * a plan is validated ([`Plan::validate`]) before anything runs: bad input is an error that
//!   names the option and what would be valid;
//! * the numbers come from the engine: a first replay with the limits lifted measures what the
//!   VM needs, then every container's trace is replayed with the user's limits, and `fits` is
//!   true only when every statement of every such replay answered as its `=> ok` expects;
//! * every advice line is a value that, given back to `type1 plan`, makes the emitted traces
//!   replay cleanly (the tests apply each one).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use iommu::Format;
use serde_json::{json, Value};
use type1::Strategy;

use crate::runner::{replay, Options, Outcome, Replay};
use crate::trace;
use crate::units;

const SZ_4K: u64 = 4096;
const SZ_1M: u64 = 1 << 20;
const SZ_2M: u64 = 2 << 20;
const SZ_1G: u64 = 1 << 30;
const SZ_4G: u64 = 4 << 30;
/// The most PCI functions one bus holds (32 slots of 8 functions): more devices than that
/// do not make a VM.
const MAX_DEVICES: u32 = 256;
/// The DMA entry limit of the measuring run: high enough never to be the reason a map fails.
const NO_ENTRY_LIMIT: u32 = u32::MAX;

/// The guest's physical memory layout (`--machine`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Machine {
    /// QEMU's q35: RAM below the 32-bit PCI hole (without the legacy VGA/ROM hole at
    /// 640K-1M), the rest from 4 GiB.
    Q35,
    /// All RAM from guest physical address 0.
    Flat,
}

/// What backs guest RAM (`--backing`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Backing {
    /// 4 KiB pages.
    #[value(name = "4k")]
    K4,
    /// Transparent huge pages (2 MiB folios).
    Thp,
    /// hugetlbfs with 2 MiB pages.
    #[value(name = "hugetlb-2m")]
    Hugetlb2m,
    /// hugetlbfs with 1 GiB pages.
    #[value(name = "hugetlb-1g")]
    Hugetlb1g,
}

impl Backing {
    /// The trace language's `backing=` value.
    pub fn name(self) -> &'static str {
        match self {
            Backing::K4 => "4k",
            Backing::Thp => "thp",
            Backing::Hugetlb2m => "hugetlb-2m",
            Backing::Hugetlb1g => "hugetlb-1g",
        }
    }
    /// The page size a mapping must be a multiple of (THP may fall back to 4 KiB pages).
    pub fn page(self) -> u64 {
        match self {
            Backing::K4 | Backing::Thp => SZ_4K,
            Backing::Hugetlb2m => SZ_2M,
            Backing::Hugetlb1g => SZ_1G,
        }
    }
    /// The largest folio, the largest leaf this backing can give the IOMMU.
    pub fn folio(self) -> u64 {
        match self {
            Backing::K4 => SZ_4K,
            Backing::Thp | Backing::Hugetlb2m => SZ_2M,
            Backing::Hugetlb1g => SZ_1G,
        }
    }
}

/// Everything `type1 plan` is asked about a VM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Guest RAM in bytes (`--ram`).
    pub ram: u64,
    /// The guest physical layout.
    pub machine: Machine,
    /// What backs RAM (and virtio-mem).
    pub backing: Backing,
    /// Assigned devices.
    pub devices: u32,
    /// Each device behind a virtual IOMMU: its own container, pinning all RAM.
    pub viommu: bool,
    /// virtio-mem: `(region size, block size)`, fully plugged, one map per block.
    pub virtio_mem: Option<(u64, u64)>,
    /// BAR sizes of each device, mapped for peer-to-peer.
    pub bars: Vec<u64>,
    /// RAM registered in maps of this size (as DPDK/SPDK do); `None`: one map per RAM range.
    pub registrations: Option<u64>,
    /// The IOMMU's page-table format (the trace's `format=`).
    pub format: String,
    /// The IOMMU's address width in bits; `None`: the format's own.
    pub aw_bits: Option<u32>,
    /// RLIMIT_MEMLOCK in bytes; `None`: unlimited.
    pub memlock: Option<u64>,
    /// The module's `dma_entry_limit`.
    pub dma_entry_limit: u32,
}

impl Default for Plan {
    fn default() -> Self {
        Plan {
            ram: SZ_1G,
            machine: Machine::Q35,
            backing: Backing::Thp,
            devices: 1,
            viommu: false,
            virtio_mem: None,
            bars: Vec::new(),
            registrations: None,
            format: "x86_64".into(),
            aw_bits: None,
            memlock: None,
            dma_entry_limit: 65535,
        }
    }
}

/// One range of guest memory as the VMM maps it: guest physical address (the IOVA), offset in
/// its region, size.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Range {
    /// The `mmap` it lives in (`ram`, `vmem`, `barD_I`).
    pub region: String,
    /// Offset in that region.
    pub offset: u64,
    /// Guest physical address = IOVA.
    pub gpa: u64,
    /// Bytes.
    pub size: u64,
    /// What it is, for people (`RAM below 4G`, `virtio-mem`, `BAR 0 of device 1`).
    pub what: String,
}

/// One advice line: a kind, the value to apply (bytes, or bits for `address-width`) and text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Advice {
    /// `memlock`, `chunk`, `block`, `alignment` or `address-width`.
    pub kind: &'static str,
    /// The value to apply: bytes, or for `address-width` the width in bits; `None` when
    /// there is nothing to set.
    pub value: Option<u64>,
    /// For people.
    pub text: String,
}

/// What `type1 plan` found.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// The plan, as asked.
    pub plan: Plan,
    /// The guest ranges each container maps.
    pub ranges: Vec<Range>,
    /// Bytes charged to the process's locked memory, all containers together.
    pub memlock_bytes: u64,
    /// Containers (one per device with a virtual IOMMU, else one).
    pub containers: u32,
    /// DMA entries the largest container needs.
    pub dma_entries: u64,
    /// Leaves by page size in bytes, summed over every container's domain.
    pub leaves: BTreeMap<u64, u64>,
    /// Address width of the IOMMU in bits.
    pub aw_bits: u32,
    /// Address width the ranges need in bits.
    pub aw_needed: u32,
    /// Everything fits: every replay with the user's limits answered as expected.
    pub fits: bool,
    /// What does not fit, for people.
    pub problems: Vec<String>,
    /// What to change.
    pub advice: Vec<Advice>,
}

/// The command line of `type1 plan`.
#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// Guest RAM (e.g. 16G).
    #[arg(long, value_parser = parse_size)]
    pub ram: u64,
    /// Guest physical layout.
    #[arg(long, value_enum, default_value_t = Machine::Q35)]
    pub machine: Machine,
    /// What backs guest RAM.
    #[arg(long, value_enum, default_value_t = Backing::Thp)]
    pub backing: Backing,
    /// Assigned devices.
    #[arg(long, default_value_t = 1)]
    pub devices: u32,
    /// Each device behind a virtual IOMMU: its own container, pinning all RAM it maps.
    #[arg(long)]
    pub viommu: bool,
    /// A virtio-mem device of this size (fully plugged), with --block.
    #[arg(long, value_parser = parse_size, requires = "block")]
    pub virtio_mem: Option<u64>,
    /// virtio-mem's block size: one DMA map per plugged block.
    #[arg(long, value_parser = parse_size, requires = "virtio_mem")]
    pub block: Option<u64>,
    /// A BAR of each device mapped for peer-to-peer (repeatable); never charged.
    #[arg(long = "bar", value_parser = parse_size)]
    pub bars: Vec<u64>,
    /// RAM registered in maps of this size, as DPDK/SPDK do (e.g. 2M).
    #[arg(long, value_parser = parse_size)]
    pub registrations: Option<u64>,
    /// The IOMMU's page-table format (as the trace's format=).
    #[arg(long, default_value = "x86_64")]
    pub format: String,
    /// The IOMMU's address width in bits (default: the format's).
    #[arg(long)]
    pub aw_bits: Option<u32>,
    /// RLIMIT_MEMLOCK: bytes or `unlimited`.
    #[arg(long, value_parser = parse_memlock, default_value = "unlimited")]
    pub memlock: MemlockArg,
    /// The vfio_iommu_type1 module's dma_entry_limit.
    #[arg(long, default_value_t = 65535)]
    pub dma_entry_limit: u32,
    /// Write the scenario's trace here (with a virtual IOMMU, container K>1 goes to FILE.K).
    #[arg(long)]
    pub emit_trace: Option<PathBuf>,
    /// The report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// `--memlock`: bytes, or `None` for unlimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemlockArg(pub Option<u64>);

fn parse_size(s: &str) -> Result<u64, String> {
    trace::parse_number(s)
}

fn parse_memlock(s: &str) -> Result<MemlockArg, String> {
    if s == "unlimited" {
        Ok(MemlockArg(None))
    } else {
        parse_size(s).map(|n| MemlockArg(Some(n)))
    }
}

impl Args {
    /// The plan these options describe.
    pub fn plan(&self) -> Plan {
        Plan {
            ram: self.ram,
            machine: self.machine,
            backing: self.backing,
            devices: self.devices,
            viommu: self.viommu,
            virtio_mem: self.virtio_mem.zip(self.block),
            bars: self.bars.clone(),
            registrations: self.registrations,
            format: self.format.clone(),
            aw_bits: self.aw_bits,
            memlock: self.memlock.0,
            dma_entry_limit: self.dma_entry_limit,
        }
    }
}

/// `type1 plan`: validates, runs, prints; the exit code is 0 when everything fits, 1 when
/// something does not, 2 for bad input (printed on stderr).
pub fn run(args: Args) -> crate::output::Result<i32> {
    use crate::{errln, out, outln};
    let plan = args.plan();
    let report = match plan.run() {
        Ok(r) => r,
        Err(e) => {
            errln!("type1 plan: {e}")?;
            return Ok(2);
        }
    };
    if let Some(path) = &args.emit_trace {
        for (k, text) in plan.traces(&report).iter().enumerate() {
            let p = emitted_path(path, k);
            if let Err(e) = std::fs::write(&p, text) {
                errln!("type1 plan: cannot write {}: {e}", p.display())?;
                return Ok(2);
            }
            errln!("type1 plan: wrote {}", p.display())?;
        }
    }
    if args.json {
        outln!("{}", report.to_json())?;
    } else {
        out!("{}", report.human())?;
    }
    Ok(if report.fits { 0 } else { 1 })
}

/// Where `--emit-trace FILE` writes container `k` (0-based): FILE, then FILE.2, FILE.3, ...
pub fn emitted_path(path: &std::path::Path, k: usize) -> PathBuf {
    if k == 0 {
        path.to_path_buf()
    } else {
        let mut s = path.as_os_str().to_owned();
        s.push(format!(".{}", k + 1));
        PathBuf::from(s)
    }
}

fn is_pow2_multiple(n: u64, page: u64) -> bool {
    n.is_power_of_two() && n >= page
}

/// Bits needed to address `last` (inclusive).
fn bits_for(last: u64) -> u32 {
    64 - last.leading_zeros()
}

impl Plan {
    /// The IOMMU format this plan names.
    fn format(&self) -> Result<Format, String> {
        Format::parse(&self.format).map_err(|_| {
            format!(
                "--format {}: unknown; valid: {}",
                self.format,
                trace::FORMATS.join(", ")
            )
        })
    }

    /// The format's own address width in bits.
    fn format_bits(&self) -> Result<u32, String> {
        Ok(bits_for(self.format()?.max_iova()))
    }

    /// The IOMMU's width in bits.
    pub fn width(&self) -> Result<u32, String> {
        Ok(match self.aw_bits {
            Some(b) => b,
            None => self.format_bits()?,
        })
    }

    /// Checks the options before anything runs: each error names the option and what
    /// would be valid.
    pub fn validate(&self) -> Result<(), String> {
        let page = self.backing.page();
        let b = units::bytes;
        if self.ram == 0 {
            return Err("--ram 0: a VM needs RAM; give a size such as 4G".into());
        }
        if !self.ram.is_multiple_of(page) {
            return Err(format!(
                "--ram {}: not a multiple of the {} page size ({}); valid: {} or {}",
                b(self.ram),
                self.backing.name(),
                b(page),
                b(self.ram / page * page).replace("0B", "none"),
                b((self.ram / page + 1) * page)
            ));
        }
        if self.machine == Machine::Q35 && self.ram <= SZ_1M {
            return Err(format!(
                "--ram {}: q35 puts the first megabyte's VGA/ROM hole in RAM; give more than 1M \
                 or --machine flat",
                b(self.ram)
            ));
        }
        if self.devices == 0 || self.devices > MAX_DEVICES {
            return Err(format!(
                "--devices {}: valid: 1 to {MAX_DEVICES} (the functions of one PCI bus){}",
                self.devices,
                if self.viommu {
                    ""
                } else {
                    "; without --viommu they share one container"
                }
            ));
        }
        if self.dma_entry_limit == 0 {
            return Err(
                "--dma-entry-limit 0: no map could succeed; valid: 1 to 4294967295 (the module's \
                 default is 65535)"
                    .into(),
            );
        }
        if let Some(c) = self.registrations {
            if c == 0 || !c.is_multiple_of(page) {
                return Err(format!(
                    "--registrations {}: a chunk must be a non-zero multiple of the {} page \
                     size ({})",
                    b(c),
                    self.backing.name(),
                    b(page)
                ));
            }
        }
        if let Some((size, block)) = self.virtio_mem {
            if !is_pow2_multiple(block, page.max(SZ_4K)) {
                return Err(format!(
                    "--block {}: valid: a power of two of at least the {} page size ({})",
                    b(block),
                    self.backing.name(),
                    b(page)
                ));
            }
            if size == 0 || !size.is_multiple_of(block) {
                return Err(format!(
                    "--virtio-mem {}: valid: a non-zero multiple of --block {}",
                    b(size),
                    b(block)
                ));
            }
        }
        for &bar in &self.bars {
            if !is_pow2_multiple(bar, SZ_4K) {
                return Err(format!(
                    "--bar {}: a BAR is a power of two of at least 4K",
                    b(bar)
                ));
            }
        }
        let own = self.format_bits()?;
        if let Some(w) = self.aw_bits {
            if !(12..=own).contains(&w) {
                return Err(format!(
                    "--aw-bits {w}: valid for --format {}: 12 to {own}",
                    self.format
                ));
            }
            let ram_bits = bits_for(self.ram - 1);
            if w < ram_bits {
                return Err(format!(
                    "--aw-bits {w}: {} of RAM cannot fit in {w} bits whatever the layout; \
                     valid: {ram_bits} or more",
                    b(self.ram)
                ));
            }
        }
        Ok(())
    }

    /// The guest ranges one container maps, in IOVA order: RAM as the machine lays it out
    /// (cut in `--registrations` chunks), virtio-mem blocks, and every device's BARs.
    ///
    /// q35 follows QEMU's `pc_q35_init()` (hw/i386/pc_q35.c): RAM of 0xb0000000 (2.75 GiB)
    /// or more is split with 2 GiB below 4 GiB (`lowmem = 0x80000000`) and the rest from
    /// 4 GiB; less RAM lies wholly below 4 GiB (the PCI hole and MMCFG above it). The legacy
    /// VGA/ROM hole 0xa0000-0xfffff is not RAM the VMM maps for DMA. Device memory
    /// (virtio-mem) starts at the first 1 GiB boundary above RAM, as `pc_memory_init()` puts
    /// it, and the BARs follow in the 64-bit PCI window, each aligned to its size.
    pub fn ranges(&self) -> Vec<Range> {
        self.ranges_with(self.registrations, self.virtio_mem.map(|(_, b)| b))
    }

    fn ranges_with(&self, chunk: Option<u64>, block: Option<u64>) -> Vec<Range> {
        let mut ram: Vec<(u64, u64, u64, &str)> = Vec::new(); // (offset, gpa, size, what)
        match self.machine {
            Machine::Flat => ram.push((0, 0, self.ram, "RAM")),
            Machine::Q35 => {
                let lowmem = if self.ram >= 0xb000_0000 {
                    0x8000_0000
                } else {
                    self.ram
                };
                ram.push((0, 0, lowmem.min(0xa0000), "RAM below 640K"));
                if lowmem > SZ_1M {
                    ram.push((SZ_1M, SZ_1M, lowmem - SZ_1M, "RAM below 4G"));
                }
                if self.ram > lowmem {
                    ram.push((lowmem, SZ_4G, self.ram - lowmem, "RAM above 4G"));
                }
            }
        }
        let mut out = Vec::new();
        for (off, gpa, size, what) in ram {
            let step = chunk.unwrap_or(size);
            let mut done = 0;
            while done < size {
                let n = step.min(size - done);
                out.push(Range {
                    region: "ram".into(),
                    offset: off + done,
                    gpa: gpa + done,
                    size: n,
                    what: what.into(),
                });
                done += n;
            }
        }
        let ram_end = out.last().map_or(0, |r| r.gpa + r.size);
        let mut next = ram_end.max(SZ_4G).next_multiple_of(SZ_1G);
        if let (Some((size, _)), Some(block)) = (self.virtio_mem, block) {
            for i in 0..size / block {
                out.push(Range {
                    region: "vmem".into(),
                    offset: i * block,
                    gpa: next + i * block,
                    size: block,
                    what: "virtio-mem".into(),
                });
            }
            next += size;
        }
        for d in 0..self.devices {
            for (i, &bar) in self.bars.iter().enumerate() {
                next = next.next_multiple_of(bar);
                out.push(Range {
                    region: format!("bar{}_{i}", d + 1),
                    offset: 0,
                    gpa: next,
                    size: bar,
                    what: format!("BAR {i} of device {}", d + 1),
                });
                next += bar;
            }
        }
        out
    }

    /// Containers: one per device behind a virtual IOMMU, else one shared by all devices.
    pub fn containers(&self) -> u32 {
        if self.viommu {
            self.devices
        } else {
            1
        }
    }

    /// The `domain` statement's arguments: the format, and the aperture when `--aw-bits`
    /// narrows it (x86_64 with 39, 48 or 57 bits is the 3-, 4- or 5-level format).
    fn domain_args(&self) -> String {
        match self.aw_bits {
            Some(w) if self.format.starts_with("x86_64") && [39, 48, 57].contains(&w) => {
                let name = match w {
                    39 => "x86_64-3level",
                    48 => "x86_64",
                    _ => "x86_64-5level",
                };
                format!("format={name}")
            }
            Some(w) if Some(w) != self.format_bits().ok() => {
                format!(
                    "format={} aperture=0x0-{:#x}",
                    self.format,
                    (1u128 << w) - 1
                )
            }
            _ => format!("format={}", self.format),
        }
    }

    /// The trace of one container with `memlock=` and `dma_entry_limit=` as given, every map
    /// expected to succeed.
    pub fn trace(&self, memlock: Option<u64>, dma_entry_limit: u32) -> String {
        self.trace_of(&self.ranges(), memlock, dma_entry_limit)
    }

    fn trace_of(&self, ranges: &[Range], memlock: Option<u64>, limit: u32) -> String {
        let mut t = String::new();
        let _ = writeln!(
            t,
            "# type1 plan: {} of RAM on {}, {} backing, {} device(s){}",
            units::bytes(self.ram),
            match self.machine {
                Machine::Q35 => "q35",
                Machine::Flat => "flat",
            },
            self.backing.name(),
            self.devices,
            if self.viommu {
                ", each behind a virtual IOMMU (one container of them)"
            } else {
                ", one shared container"
            }
        );
        let memlock = memlock.map_or("unlimited".to_string(), |m| m.to_string());
        let _ = writeln!(t, "container dma_entry_limit={limit} memlock={memlock}");
        let _ = writeln!(t, "domain d0 {}", self.domain_args());
        let _ = writeln!(
            t,
            "mmap ram size={:#x} backing={}",
            self.ram,
            self.backing.name()
        );
        if let Some((size, _)) = self.virtio_mem {
            let _ = writeln!(
                t,
                "mmap vmem size={size:#x} backing={}",
                self.backing.name()
            );
        }
        for d in 0..self.devices {
            for (i, &bar) in self.bars.iter().enumerate() {
                let _ = writeln!(t, "mmap bar{}_{i} size={bar:#x} backing=pfnmap", d + 1);
            }
        }
        for r in ranges {
            let _ = writeln!(
                t,
                "map vaddr={}+{:#x} iova={:#x} size={:#x} => ok",
                r.region, r.offset, r.gpa, r.size
            );
        }
        let _ = writeln!(t, "check");
        t
    }

    /// The traces `--emit-trace` writes, one per container: the user's limits, container K's
    /// `memlock=` what the limit leaves after containers 1..K-1 charged theirs (RLIMIT_MEMLOCK
    /// bounds the process's total).
    pub fn traces(&self, report: &Report) -> Vec<String> {
        let per = report.memlock_bytes / u64::from(report.containers.max(1));
        (0..u64::from(self.containers()))
            .map(|k| {
                let memlock = self.memlock.map(|m| m.saturating_sub(k * per));
                self.trace(memlock, self.dma_entry_limit)
            })
            .collect()
    }

    /// DMA entries one container needs with these chunk and block sizes.
    fn entries_with(&self, chunk: Option<u64>, block: Option<u64>) -> u64 {
        self.ranges_with(chunk, block).len() as u64
    }

    /// Validates, runs on the engine, and reports.
    pub fn run(&self) -> Result<Report, String> {
        self.validate()?;
        let ranges = self.ranges();
        let opts = Options {
            strategy: Strategy::Folio,
            ..Options::default()
        };
        let replay_text = |text: &str| -> Result<Replay, String> {
            let t = trace::parse(text)
                .map_err(|e| format!("internal: the plan's trace does not parse: {}", e.msg))?;
            let r = replay(&t, &opts, &mut |_| {});
            match &r.error {
                Some(e) => Err(format!("line {}: {}", e.line, e.message)),
                None => Ok(r),
            }
        };
        // What the VM needs: one container, no limits.
        let measured = replay_text(&self.trace_of(&ranges, None, NO_ENTRY_LIMIT))?;
        let state = &measured
            .summary
            .as_ref()
            .ok_or("internal: the plan's trace has no summary")?
            .state;
        let n = self.containers();
        let memlock_bytes = state.locked * SZ_4K * u64::from(n);
        let dma_entries = state.dmas.len() as u64;
        let mut leaves = BTreeMap::new();
        for d in &state.domains {
            for &(size, count) in &d.leaves {
                *leaves.entry(size).or_insert(0) += count * u64::from(n);
            }
        }
        let width = self.width()?;
        let top = ranges
            .iter()
            .map(|r| r.gpa + (r.size - 1))
            .max()
            .unwrap_or(0);
        let aw_needed = bits_for(top);
        let mut problems = Vec::new();
        let b = units::bytes;
        if let Some(limit) = self.memlock {
            if memlock_bytes > limit {
                problems.push(format!(
                    "locked memory: {} needed ({} pages{}), the limit is {}",
                    b(memlock_bytes),
                    memlock_bytes / SZ_4K,
                    if n > 1 {
                        format!(", {} per container", b(memlock_bytes / u64::from(n)))
                    } else {
                        String::new()
                    },
                    b(limit)
                ));
            }
        }
        if dma_entries > u64::from(self.dma_entry_limit) {
            problems.push(format!(
                "DMA entries: {dma_entries} needed per container, the limit is {}",
                self.dma_entry_limit
            ));
        }
        if aw_needed > width {
            let wmax = if width >= 64 {
                u64::MAX
            } else {
                (1u64 << width) - 1
            };
            for r in ranges.iter().filter(|r| r.gpa + (r.size - 1) > wmax) {
                problems.push(format!(
                    "address width: {} at IOVA {:#x}-{:#x} ({}) is above the {width}-bit \
                     width; it needs {} bits",
                    r.what,
                    r.gpa,
                    r.gpa + (r.size - 1),
                    b(r.size),
                    bits_for(r.gpa + (r.size - 1))
                ));
            }
        }
        // Failures the numbers above do not explain (a reserved window, a format's limit).
        if aw_needed <= width {
            for s in measured.records.iter().filter(|s| !s.outcome.is_ok()) {
                if let Outcome::Errno { message, .. } = &s.outcome {
                    problems.push(format!("{}: {} ({message})", s.text, s.outcome.word()));
                }
            }
        }
        // Held to the user's limits: every container's trace replayed as emitted.
        let mut fits = problems.is_empty();
        if fits {
            let per = memlock_bytes / u64::from(n);
            for k in 0..u64::from(n) {
                let memlock = self.memlock.map(|m| m.saturating_sub(k * per));
                let r = replay_text(&self.trace_of(&ranges, memlock, self.dma_entry_limit))?;
                if let Some((line, text, msg)) = r.failures().into_iter().next() {
                    problems.push(format!("container {}: line {line}: {text}: {msg}", k + 1));
                    fits = false;
                    break;
                }
            }
        }
        let mut report = Report {
            plan: self.clone(),
            ranges,
            memlock_bytes,
            containers: n,
            dma_entries,
            leaves,
            aw_bits: width,
            aw_needed,
            fits,
            problems,
            advice: Vec::new(),
        };
        report.advice = self.advice(&report);
        Ok(report)
    }

    /// The smallest power of two from `page` up for which `entries(size)` fits the limit.
    fn smallest_fitting(&self, page: u64, entries: impl Fn(u64) -> u64) -> Option<u64> {
        let mut s = page;
        loop {
            if entries(s) <= u64::from(self.dma_entry_limit) {
                return Some(s);
            }
            s = s.checked_mul(2)?;
            if s > self.ram.max(self.virtio_mem.map_or(0, |v| v.0)) * 2 {
                return None;
            }
        }
    }

    fn advice(&self, r: &Report) -> Vec<Advice> {
        let b = units::bytes;
        let mut out = Vec::new();
        if r.memlock_bytes > 0 {
            let kib = r.memlock_bytes.div_ceil(1024);
            let why = if r.containers > 1 {
                format!(
                    " ({} containers, each pinning the {} it maps: the charge is per container)",
                    r.containers,
                    b(r.memlock_bytes / u64::from(r.containers))
                )
            } else {
                String::new()
            };
            out.push(Advice {
                kind: "memlock",
                value: Some(kib * 1024),
                text: format!(
                    "set the VMM's locked-memory limit to at least {}{why}: `ulimit -l {kib}` \
                     (KiB), or LimitMEMLOCK={} in its systemd unit",
                    b(kib * 1024),
                    kib * 1024
                ),
            });
        }
        let limit = u64::from(self.dma_entry_limit);
        let block = self.virtio_mem.map(|v| v.1);
        if let Some(chunk) = self.registrations {
            if r.dma_entries > limit {
                match self
                    .smallest_fitting(self.backing.page(), |c| self.entries_with(Some(c), block))
                {
                    Some(c) => out.push(Advice {
                        kind: "chunk",
                        value: Some(c),
                        text: format!(
                            "register RAM in chunks of {} (`--registrations {}`): {} entries \
                             per container instead of {}, within the limit of {limit}",
                            b(c),
                            b(c),
                            self.entries_with(Some(c), block),
                            r.dma_entries
                        ),
                    }),
                    None => out.push(Advice {
                        kind: "chunk",
                        value: None,
                        text: "no registration chunk fits the DMA entry limit: raise \
                               dma_entry_limit of vfio_iommu_type1"
                            .into(),
                    }),
                }
            }
            let folio = self.backing.folio();
            let leaf = self.largest_pgsize_upto(folio);
            if leaf > SZ_4K && !chunk.is_multiple_of(leaf) {
                out.push(Advice {
                    kind: "alignment",
                    value: Some(leaf),
                    text: format!(
                        "{} backing gives {} folios, but {} registrations cut them: register in \
                         multiples of {} at {}-aligned guest addresses (`--registrations {}`) \
                         to get {} leaves",
                        self.backing.name(),
                        b(folio),
                        b(chunk),
                        b(leaf),
                        b(leaf),
                        b(leaf),
                        b(leaf)
                    ),
                });
            }
        }
        if let Some((size, block)) = self.virtio_mem {
            if r.dma_entries > limit {
                let others = self.entries_with(self.registrations, Some(size)) - 1;
                if let Some(blk) = self
                    .smallest_fitting(self.backing.page().max(SZ_4K), |k| {
                        others + size.div_ceil(k)
                    })
                    .filter(|&k| k <= size && size.is_multiple_of(k))
                {
                    out.push(Advice {
                        kind: "block",
                        value: Some(blk),
                        text: format!(
                            "give virtio-mem blocks of {} (`--block {}`): {} maps instead of \
                             {}, {} entries in all within the limit of {limit}",
                            b(blk),
                            b(blk),
                            size / blk,
                            size / block,
                            others + size / blk
                        ),
                    });
                }
            }
        }
        if r.aw_needed > r.aw_bits {
            out.push(Advice {
                kind: "address-width",
                value: Some(u64::from(r.aw_needed)),
                text: format!(
                    "the guest's address space reaches {:#x}: the IOMMU needs {} address bits \
                     (it has {}); use an IOMMU with at least {} bits (`--aw-bits {}`; QEMU's \
                     intel-iommu: aw-bits=48), or less RAM",
                    (1u128 << r.aw_needed) - 1,
                    r.aw_needed,
                    r.aw_bits,
                    r.aw_needed,
                    r.aw_needed
                ),
            });
        }
        out
    }

    /// The largest page size of the format at most `upto` (4K when none).
    fn largest_pgsize_upto(&self, upto: u64) -> u64 {
        let sizes = self.format().map_or(SZ_4K, |f| f.default_pgsizes()) & ((upto << 1) - 1);
        if sizes == 0 {
            SZ_4K
        } else {
            1 << (63 - sizes.leading_zeros())
        }
    }
}

impl Report {
    /// The IOTLB reach the leaves give one domain in the plain model (64 entries per page size,
    /// `iommu::IotlbConfig::plain_reach_bytes`): 64 × each page size the layout uses.
    pub fn iotlb_reach_bytes(&self) -> u64 {
        let sizes = self
            .leaves
            .iter()
            .filter(|&(_, &n)| n > 0)
            .fold(0u64, |m, (&sz, _)| m | sz);
        iommu::IotlbConfig::plain_reach_bytes(sizes, sizes)
    }

    /// The `--json` object.
    pub fn to_json(&self) -> Value {
        let leaves: serde_json::Map<String, Value> = self
            .leaves
            .iter()
            .map(|(s, n)| (s.to_string(), json!(n)))
            .collect();
        json!({
            "memlock_bytes": self.memlock_bytes,
            "memlock_limit": self.plan.memlock,
            "containers": self.containers,
            "dma_entries": self.dma_entries,
            "dma_entry_limit": self.plan.dma_entry_limit,
            "leaves": leaves,
            "aw_bits": self.aw_bits,
            "aw_bits_needed": self.aw_needed,
            "iotlb_reach_bytes": self.iotlb_reach_bytes(),
            "fits": self.fits,
            "problems": self.problems,
            "advice": self.advice.iter().map(|a| json!({
                "kind": a.kind,
                "value": a.value,
                "text": a.text,
            })).collect::<Vec<_>>(),
        })
    }

    /// The report for people.
    pub fn human(&self) -> String {
        let b = units::bytes;
        let p = &self.plan;
        let mut s = String::new();
        let _ = writeln!(
            s,
            "type1 plan: {} of RAM on {}, {} backing, {} device(s), {}",
            b(p.ram),
            match p.machine {
                Machine::Q35 => "q35",
                Machine::Flat => "flat",
            },
            p.backing.name(),
            p.devices,
            if p.viommu {
                format!("virtual IOMMU: {} containers", self.containers)
            } else {
                "one shared container".into()
            }
        );
        let _ = writeln!(s, "  guest ranges mapped (IOVA = guest physical address):");
        let mut i = 0;
        while i < self.ranges.len() {
            let r = &self.ranges[i];
            let mut j = i;
            while j + 1 < self.ranges.len()
                && self.ranges[j + 1].what == r.what
                && self.ranges[j + 1].gpa == self.ranges[j].gpa + self.ranges[j].size
            {
                j += 1;
            }
            let last = &self.ranges[j];
            let _ = writeln!(
                s,
                "    {:#014x}-{:#014x}  {:>6}  {} ({} map{})",
                r.gpa,
                last.gpa + last.size - 1,
                b(last.gpa + last.size - r.gpa),
                r.what,
                j - i + 1,
                if j == i { "" } else { "s" }
            );
            i = j + 1;
        }
        let limit = p.memlock.map_or("unlimited".into(), b);
        let _ = writeln!(
            s,
            "  locked memory   {} ({} pages) against a limit of {limit}",
            b(self.memlock_bytes),
            self.memlock_bytes / SZ_4K
        );
        let _ = writeln!(
            s,
            "  DMA entries     {} per container against a limit of {}",
            self.dma_entries, p.dma_entry_limit
        );
        let leaves: Vec<String> = self
            .leaves
            .iter()
            .filter(|&(_, &n)| n > 0)
            .map(|(sz, n)| format!("{} x {n}", b(*sz)))
            .collect();
        let _ = writeln!(
            s,
            "  leaves          {} (all {} domain(s))",
            leaves.join(", "),
            self.containers
        );
        let _ = writeln!(
            s,
            "  IOTLB reach     {} per domain (the plain model: 64 entries per page size, no real \
             part's figures; see `type1 iotlb`)",
            b(self.iotlb_reach_bytes())
        );
        let _ = writeln!(
            s,
            "  address width   {} bits needed, the IOMMU has {}",
            self.aw_needed, self.aw_bits
        );
        let _ = writeln!(
            s,
            "  verdict         {}",
            if self.fits { "fits" } else { "DOES NOT FIT" }
        );
        for pr in &self.problems {
            let _ = writeln!(s, "  problem: {pr}");
        }
        for a in &self.advice {
            let _ = writeln!(s, "  advice ({}): {}", a.kind, a.text);
        }
        s
    }
}
