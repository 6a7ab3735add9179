//! `type1 iotlb`: what a trace's mapping layout buys a device's IOTLB.
//!
//! The trace is replayed (the `type1 replay` engine, [`runner::replay`]) up to and including
//! its last `map` statement: the layout a device works on, before any teardown. Each domain's
//! leaves are then laid into a fresh domain of the same format and page sizes with the IOTLB
//! model enabled, and a DMA pattern ([`iommu::dma_pattern`]) runs over the first `window`
//! bytes of its mapped IOVA: a warm-up that is not counted, then the counted accesses.
//! Reported per strategy and domain: the reach (entries × page size per array, for the
//! largest leaf size the layout gives each array), accesses, misses, miss rate and misses per
//! MiB transferred. The IOTLB is a preset ([`iommu::iotlb::PRESETS`], listed with their sources
//! by `--list-presets`) or a geometry given on the command line.
//!
//! Invariants: the replay is the runner's, unchanged; the layout measured is exactly the
//! domain's leaves (each leaf is mapped on its own, so no leaf grows); the patterns are
//! deterministic, so the same command prints the same numbers.

use std::path::PathBuf;

use iommu::dma_pattern::{self, Extents, Pattern, PatternConfig};
use iommu::iotlb::{ConfigError, Preset, PRESETS};
use iommu::{Domain, DomainConfig, IotlbConfig, IotlbStats};
use type1::Strategy;

use crate::runner::{self, Options};
use crate::svg::{self, Chart, Marker, Series};
use crate::trace::{self, StmtKind, Trace};
use crate::{report, units};

const MIB: f64 = (1u64 << 20) as f64;
/// The smallest window the plot starts at.
const PLOT_FIRST_WINDOW: u64 = 64 << 10;
/// Counted accesses per point of the plot (and as many to warm up).
const PLOT_ACCESSES: u64 = 20_000;

/// The command line of `type1 iotlb`.
#[derive(clap::Args, Clone, Debug)]
pub struct Args {
    /// The trace whose final layout (after its last `map`) the device works on.
    #[arg(required_unless_present = "list_presets")]
    pub file: Option<PathBuf>,
    /// Print every preset (name, geometry, where its figures come from) and exit.
    #[arg(long)]
    pub list_presets: bool,
    /// The device's DMA: sequential or random reads over the window, a NIC ring of 256
    /// 2 KiB buffers, a storage queue of 64 16 KiB commands.
    #[arg(long, value_enum, default_value_t = PatternArg::Random)]
    pub pattern: PatternArg,
    /// Bytes of mapped IOVA the device touches, from the lowest mapped IOVA (at most what is
    /// mapped).
    #[arg(long, value_parser = parse_size, default_value = "64M")]
    pub window: u64,
    /// Where the window starts: bytes of mapped IOVA from the lowest mapped IOVA.
    #[arg(long, value_parser = parse_size, default_value = "0")]
    pub offset: u64,
    /// The IOTLB: `plain` (no particular part: 64 entries per page size, fully associative),
    /// or a documented part's geometry (`--list-presets` shows each with its source).
    #[arg(
        long,
        default_value = "plain",
        conflicts_with_all = ["entries", "ways", "unified", "micro_entries"]
    )]
    pub preset: String,
    /// Entries per array (instead of a preset).
    #[arg(long)]
    pub entries: Option<usize>,
    /// Ways per array (default: fully associative).
    #[arg(long, requires = "entries")]
    pub ways: Option<usize>,
    /// One array for every page size instead of one per page size.
    #[arg(long, requires = "entries")]
    pub unified: bool,
    /// A fully associative first level of this many entries (a micro TLB) in front of the
    /// arrays.
    #[arg(long, requires = "entries")]
    pub micro_entries: Option<usize>,
    /// Bytes per access (one translation each; a power of two up to 4K).
    #[arg(long, value_parser = parse_size, default_value = "256")]
    pub access: u64,
    /// Counted accesses.
    #[arg(long, default_value_t = 100_000)]
    pub accesses: u64,
    /// Accesses before counting (they fill the IOTLB).
    #[arg(long, default_value_t = 10_000)]
    pub warmup: u64,
    /// The seed of the random patterns.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// The layout of this strategy: per-page (4K leaves only, before 2013), contiguous (the
    /// 2013 design) or folio.
    #[arg(long, value_parser = parse_strategy, default_value = "contiguous")]
    pub strategy: Strategy,
    /// The layouts of every strategy (per-page, contiguous, folio) of the same trace.
    #[arg(long, conflicts_with = "strategy")]
    pub compare_strategies: bool,
    /// One JSON object per strategy and domain.
    #[arg(long)]
    pub json: bool,
    /// Draw the random pattern's miss rate against window size into an SVG file, for the
    /// per-page layout and the chosen ones, with each layout's reach marked.
    #[arg(long)]
    pub plot: Option<PathBuf>,
}

/// `--pattern`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum PatternArg {
    /// From the start of the window to its end, again and again.
    Sequential,
    /// Uniformly random offsets over the window.
    Random,
    /// A NIC ring: read a descriptor, write its buffer.
    Ring,
    /// A storage queue: submission entry, data, completion entry.
    Queue,
}

impl From<PatternArg> for Pattern {
    fn from(p: PatternArg) -> Pattern {
        match p {
            PatternArg::Sequential => Pattern::Sequential,
            PatternArg::Random => Pattern::Random,
            PatternArg::Ring => Pattern::Ring,
            PatternArg::Queue => Pattern::Queue,
        }
    }
}

fn parse_size(s: &str) -> Result<u64, String> {
    trace::parse_number(s)
}

fn parse_strategy(s: &str) -> Result<Strategy, String> {
    Strategy::parse(s).ok_or_else(|| format!("{s:?} is not per-page, contiguous or folio"))
}

/// Why `type1 iotlb` could not measure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The trace file could not be read.
    #[error("{0}: cannot read the trace: {1}")]
    Read(String, trace::ReadError),
    /// The trace does not parse.
    #[error("{0}:{1}: {2}")]
    Parse(String, usize, String),
    /// The replay stopped with a trace error.
    #[error("{0}:{1}: the replay stopped: {2}")]
    Replay(String, usize, String),
    /// No container, or no `map`, in the trace.
    #[error("{0}: the trace maps nothing, so there is no layout to measure")]
    NoLayout(String),
    /// An unknown preset.
    #[error("unknown IOTLB preset {0:?} (known: {1}; --list-presets shows each with its source)")]
    Preset(String, String),
    /// No trace named (and no `--list-presets`).
    #[error("a trace FILE is needed (or --list-presets)")]
    NoFile,
    /// An IOTLB geometry the model refuses.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// An access size that is not a power of two up to 4K.
    #[error("--access must be a power of two from 1 to 4096 bytes, not {0}")]
    Access(u64),
    /// The plot could not be written.
    #[error("{0}: cannot write the plot: {1}")]
    Plot(String, std::io::Error),
}

/// An IOTLB geometry given on the command line, made for each domain's page sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// Entries per array.
    pub entries: usize,
    /// Ways per array.
    pub ways: usize,
    /// One array for all page sizes (else one per page size).
    pub unified: bool,
    /// Entries of a fully associative first level in front, if any.
    pub micro: Option<usize>,
}

/// How to measure: the IOTLB and the device's accesses.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// The IOTLB of every domain; `None`: `preset` for each domain's page sizes.
    pub iotlb: Option<Geometry>,
    /// The preset used when `iotlb` is `None`.
    pub preset: String,
    /// The accesses (its window is clamped to each domain's mapped bytes past `offset`).
    pub pattern: PatternConfig,
    /// Where the window starts, in bytes of mapped IOVA.
    pub offset: u64,
    /// Uncounted accesses first.
    pub warmup: u64,
    /// Counted accesses.
    pub accesses: u64,
}

impl Settings {
    /// The plain preset, `pattern` over `window` in 256-byte accesses, 10 000 + 100 000.
    pub fn new(pattern: Pattern, window: u64) -> Settings {
        Settings {
            iotlb: None,
            preset: "plain".into(),
            pattern: PatternConfig::new(pattern, window),
            offset: 0,
            warmup: 10_000,
            accesses: 100_000,
        }
    }
    fn iotlb_for(&self, pgsizes: u64) -> Result<IotlbConfig, Error> {
        match &self.iotlb {
            Some(g) => {
                let last = if g.unified {
                    IotlbConfig::unified(pgsizes, g.entries, g.ways)
                } else {
                    IotlbConfig::split(pgsizes, g.entries, g.ways)
                };
                Ok(match g.micro {
                    Some(m) => last.with_micro(m, m),
                    None => last,
                })
            }
            None => Ok(self.named_preset()?.config(pgsizes)),
        }
    }
    /// The preset of `preset`, or the error naming every known one.
    fn named_preset(&self) -> Result<&'static Preset, Error> {
        Preset::named(&self.preset)
            .ok_or_else(|| Error::Preset(self.preset.clone(), Preset::names()))
    }
    /// The preset's name, `None` when the geometry came from the command line.
    pub fn preset_name(&self) -> Option<&str> {
        self.iotlb.is_none().then_some(self.preset.as_str())
    }
}

/// One domain of one strategy's layout, with the IOTLB enabled and nothing accessed yet.
#[derive(Debug)]
pub struct Laid {
    /// The strategy that made the layout.
    pub strategy: Strategy,
    /// The domain's name in the trace.
    pub name: String,
    /// The layout's leaves in a fresh domain, IOTLB enabled.
    pub domain: Domain,
    /// Its mapped IOVA, end to end.
    pub space: Extents,
}

impl Laid {
    /// Bitmap of the leaf sizes the layout has.
    pub fn leaf_sizes(&self) -> u64 {
        self.domain
            .leaves_by_size()
            .iter()
            .filter(|&&(_, n)| n != 0)
            .fold(0, |m, &(s, _)| m | s)
    }
    /// Reach the layout gives: the sum over the IOTLB's arrays.
    pub fn reach_bytes(&self) -> u64 {
        self.domain
            .iotlb()
            .map_or(0, |t| t.config().reach_bytes(self.leaf_sizes()))
    }
    /// Reach of the IOTLB's first level, if it has one (else 0).
    pub fn micro_reach_bytes(&self) -> u64 {
        self.domain
            .iotlb()
            .map_or(0, |t| t.config().micro_reach_bytes(self.leaf_sizes()))
    }
    /// Runs `pattern` with its window clamped to the mapped bytes, on a cold IOTLB.
    pub fn measure(&mut self, s: &Settings) -> Result<Measured, Error> {
        let cfg = self.domain.iotlb().map(|t| t.config());
        self.domain.set_iotlb(cfg.as_ref())?;
        let space = self.space.from_offset(s.offset);
        let mut pattern = s.pattern;
        pattern.window = pattern.window.min(space.total());
        let stats = dma_pattern::replay(&mut self.domain, &space, &pattern, s.warmup, s.accesses);
        Ok(Measured {
            strategy: self.strategy,
            domain: self.name.clone(),
            format: self.domain.format().name(),
            leaves: self.domain.leaves_by_size(),
            preset: s.preset_name().map(str::to_string),
            reach_bytes: self.reach_bytes(),
            micro_reach_bytes: self.micro_reach_bytes(),
            pattern,
            offset: s.offset,
            stats,
        })
    }
}

/// What one pattern did on one domain of one layout.
#[derive(Clone, Debug, PartialEq)]
pub struct Measured {
    /// The strategy that made the layout.
    pub strategy: Strategy,
    /// The domain's name.
    pub domain: String,
    /// The domain's format.
    pub format: String,
    /// `(page size, leaves)`, smallest first.
    pub leaves: Vec<(u64, u64)>,
    /// The preset measured (`None`: a geometry from the command line).
    pub preset: Option<String>,
    /// Σ entries × the largest leaf size of the layout each array caches.
    pub reach_bytes: u64,
    /// The same for the first level (a micro TLB), 0 without one.
    pub micro_reach_bytes: u64,
    /// The pattern as run (its window clamped to the mapped bytes).
    pub pattern: PatternConfig,
    /// Where its window started, in bytes of mapped IOVA.
    pub offset: u64,
    /// The counted accesses' IOTLB counters.
    pub stats: IotlbStats,
}

impl Measured {
    /// Walks (misses and faults) per MiB the counted accesses transferred.
    pub fn misses_per_mib(&self) -> f64 {
        let bytes = self.stats.accesses as f64 * self.pattern.access as f64;
        if bytes == 0.0 {
            0.0
        } else {
            (self.stats.misses + self.stats.faults) as f64 / (bytes / MIB)
        }
    }
    /// The `--json` object.
    pub fn json(&self, file: &str) -> serde_json::Value {
        let leaves: serde_json::Map<String, serde_json::Value> = self
            .leaves
            .iter()
            .map(|&(s, n)| (units::bytes(s), n.into()))
            .collect();
        serde_json::json!({
            "file": file,
            "strategy": self.strategy.name(),
            "domain": self.domain,
            "format": self.format,
            "leaves": leaves,
            "preset": self.preset,
            "reach_bytes": self.reach_bytes,
            "micro_reach_bytes": self.micro_reach_bytes,
            "pattern": self.pattern.pattern.name(),
            "window": self.pattern.window,
            "offset": self.offset,
            "access_bytes": self.pattern.access,
            "accesses": self.stats.accesses,
            "hits": self.stats.hits,
            "main_hits": self.stats.main_hits,
            "misses": self.stats.misses + self.stats.faults,
            "faults": self.stats.faults,
            "miss_rate": self.stats.miss_rate(),
            "misses_per_mib": self.misses_per_mib(),
        })
    }
}

/// The trace up to and including its last `map` statement (`None` if it has none).
pub fn layout_prefix(t: &Trace) -> Option<Trace> {
    let last = t
        .stmts
        .iter()
        .rposition(|s| matches!(s.kind, StmtKind::Map { .. }))?;
    Some(Trace {
        stmts: t.stmts[..=last].to_vec(),
    })
}

/// Replays `t` up to its last `map` with `strategy` and lays each domain's leaves (attach
/// order) into a fresh domain with the IOTLB of `s`.
pub fn lay_out(
    file: &str,
    t: &Trace,
    strategy: Strategy,
    s: &Settings,
) -> Result<Vec<Laid>, Error> {
    let prefix = layout_prefix(t).ok_or_else(|| Error::NoLayout(file.into()))?;
    let opts = Options {
        strategy,
        ..Options::default()
    };
    let r = runner::replay(&prefix, &opts, &mut |_| {});
    if let Some(e) = &r.error {
        return Err(Error::Replay(file.into(), e.line, e.message.clone()));
    }
    let c = r.container.ok_or_else(|| Error::NoLayout(file.into()))?;
    let mut out = Vec::new();
    for ad in c.domains().iter().rev() {
        let src = &ad.domain;
        let mut d = Domain::new(DomainConfig {
            format: src.format(),
            pgsize_bitmap: Some(src.pgsize_bitmap()),
            aperture: Some(src.aperture()),
        })
        .expect("the source domain's own configuration");
        // The leaves are copied as they are walked: nothing proportional to their number is
        // kept beside the copy's own table (the extents hold one entry per IOVA run).
        let mut space = Extents::default();
        src.for_each_leaf(&mut |l| {
            d.map(l.iova, l.paddr, l.size, l.prot)
                .expect("a leaf of a valid table maps alone");
            space.push(l);
        });
        d.set_iotlb(Some(&s.iotlb_for(src.pgsize_bitmap())?))?;
        out.push(Laid {
            strategy,
            name: ad.name.clone(),
            space,
            domain: d,
        });
    }
    Ok(out)
}

/// Measures `s` on every domain of each strategy's layout of `t`.
pub fn study(
    file: &str,
    t: &Trace,
    strategies: &[Strategy],
    s: &Settings,
) -> Result<Vec<Measured>, Error> {
    let mut out = Vec::new();
    for &strategy in strategies {
        for mut laid in lay_out(file, t, strategy, s)? {
            out.push(laid.measure(s)?);
        }
    }
    Ok(out)
}

/// The human report: the settings, then one row per strategy and domain.
pub fn human(file: &str, s: &Settings, ms: &[Measured]) -> String {
    let mut out = format!(
        "{file}: the layout after the trace's last map; window from {} of mapped IOVA; {} \
         accesses of {} bytes ({} warm-up first), {}\n",
        units::bytes(s.offset),
        s.accesses,
        s.pattern.access,
        s.warmup,
        match (s.iotlb, s.named_preset()) {
            (Some(g), _) => format!(
                "IOTLB of {}{} entries {}-way {}",
                g.micro
                    .map_or(String::new(), |m| format!("{m} micro-TLB entries, then ")),
                g.entries,
                g.ways,
                if g.unified {
                    "for all page sizes"
                } else {
                    "per page size"
                }
            ),
            (None, Ok(p)) => format!("IOTLB preset {} ({})", p.name, p.geometry()),
            (None, Err(_)) => format!("IOTLB preset {}", s.preset),
        }
    );
    let rows: Vec<Vec<String>> = ms
        .iter()
        .map(|m| {
            vec![
                m.strategy.name().into(),
                m.domain.clone(),
                leaves_cell(&m.leaves),
                reach_cell(m),
                format!(
                    "{} {}",
                    m.pattern.pattern.name(),
                    units::bytes(m.pattern.window)
                ),
                m.stats.accesses.to_string(),
                (m.stats.misses + m.stats.faults).to_string(),
                format!("{:.2}%", 100.0 * m.stats.miss_rate()),
                format!("{:.1}", m.misses_per_mib()),
            ]
        })
        .collect();
    out += &report::table(
        &[
            "strategy",
            "domain",
            "leaves",
            "reach",
            "pattern",
            "accesses",
            "misses",
            "miss rate",
            "misses/MiB",
        ],
        &rows,
        &[false, false, false, true, false, true, true, true, true],
    );
    out
}

/// `256M`, or `4M / 256M` (first level / last level) with a micro TLB.
fn reach_cell(m: &Measured) -> String {
    if m.micro_reach_bytes == 0 {
        units::bytes(m.reach_bytes)
    } else {
        format!(
            "{} / {}",
            units::bytes(m.micro_reach_bytes),
            units::bytes(m.reach_bytes)
        )
    }
}

/// `--list-presets`: each preset's name, geometry, part, source and simplifications.
pub fn presets_text() -> String {
    let mut out = String::new();
    for p in PRESETS {
        out += &format!(
            "{}\n  geometry:   {}\n  part:       {}\n  source:     {}\n  simplified: {}\n",
            p.name,
            p.geometry(),
            p.part,
            p.source,
            p.simplified
        );
    }
    out
}

/// `416x4K 2047x2M`: the leaf sizes a layout uses.
fn leaves_cell(leaves: &[(u64, u64)]) -> String {
    let used: Vec<String> = leaves
        .iter()
        .filter(|l| l.1 != 0)
        .map(|&(size, n)| format!("{n}x{}", units::bytes(size)))
        .collect();
    used.join(" ")
}

/// The plot: the random pattern's miss rate against window size (log scale, doubling from
/// 64K to the largest layout's mapped bytes) for every domain of `laid`, each layout's reach
/// marked.
pub fn plot(laid: &mut [Laid], s: &Settings) -> Result<String, Error> {
    let most = laid
        .iter()
        .map(|l| l.space.total().saturating_sub(s.offset))
        .max()
        .unwrap_or(0);
    let mut windows = Vec::new();
    let mut w = PLOT_FIRST_WINDOW;
    while w <= most {
        windows.push(w);
        w *= 2;
    }
    let mut settings = s.clone();
    settings.warmup = PLOT_ACCESSES;
    settings.accesses = PLOT_ACCESSES;
    let mut series = Vec::new();
    let mut markers = Vec::new();
    for l in laid.iter_mut() {
        let mut points = Vec::new();
        let total = l.space.total().saturating_sub(s.offset);
        for &w in windows.iter().filter(|&&w| w <= total) {
            settings.pattern = PatternConfig {
                pattern: Pattern::Random,
                window: w,
                ..s.pattern
            };
            let m = l.measure(&settings)?;
            points.push(((w as f64).log2(), 100.0 * m.stats.miss_rate()));
        }
        let label = format!("{} {}", l.strategy.name(), l.name);
        markers.push(Marker {
            x: (l.reach_bytes().max(1) as f64).log2(),
            label: format!("reach {label}: {}", units::bytes(l.reach_bytes())),
        });
        series.push(Series { label, points });
    }
    let chart = Chart {
        title: format!(
            "type1 iotlb: IOTLB miss rate of random reads against window size ({})",
            match (s.preset_name(), s.iotlb) {
                (Some(name), _) => format!("preset {name}"),
                (None, Some(g)) => format!(
                    "{} entries, {}-way{}",
                    g.entries,
                    g.ways,
                    g.micro
                        .map_or(String::new(), |m| format!(", {m}-entry micro TLB"))
                ),
                (None, None) => String::new(),
            }
        ),
        x_label: "window (log scale)".into(),
        y_label: "miss rate".into(),
        // Every window is a tick (they fix the range); every other one is labelled.
        x_ticks: windows
            .iter()
            .enumerate()
            .map(|(i, &w)| {
                let label = if i % 2 == 0 {
                    units::bytes(w)
                } else {
                    String::new()
                };
                ((w as f64).log2(), label)
            })
            .collect(),
        y_ticks: (0..=4)
            .map(|i| (25.0 * i as f64, format!("{}%", 25 * i)))
            .collect(),
        series,
        markers,
    };
    Ok(svg::line_chart(&chart))
}

fn settings_of(a: &Args) -> Result<Settings, Error> {
    if !a.access.is_power_of_two() || a.access > 4096 {
        return Err(Error::Access(a.access));
    }
    let mut s = Settings::new(a.pattern.into(), a.window);
    s.preset = a.preset.clone();
    s.pattern.access = a.access;
    s.offset = a.offset;
    s.pattern.seed = a.seed;
    s.warmup = a.warmup;
    s.accesses = a.accesses;
    if let Some(entries) = a.entries {
        s.iotlb = Some(Geometry {
            entries,
            ways: a.ways.unwrap_or(entries),
            unified: a.unified,
            micro: a.micro_entries,
        });
    }
    // An unknown preset is refused before the trace is read or replayed.
    s.named_preset()?;
    Ok(s)
}

/// Runs `type1 iotlb`: prints the report (or JSON) to stdout, writes the plot. Returns the
/// exit code: 0, or 2 with the error on stderr.
pub fn run(a: Args) -> crate::output::Result<i32> {
    match execute(a) {
        Ok(r) => r.map(|()| 0),
        Err(e) => {
            crate::errln!("type1 iotlb: {e}")?;
            Ok(2)
        }
    }
}

/// The work of [`run`]: an input error (outer), or the outcome of writing the report (inner).
pub fn execute(a: Args) -> Result<crate::output::Result<()>, Error> {
    if a.list_presets {
        return Ok(crate::out!("{}", presets_text()));
    }
    let s = settings_of(&a)?;
    let Some(path) = &a.file else {
        // clap requires FILE unless --list-presets is given.
        return Err(Error::NoFile);
    };
    let file = path.display().to_string();
    let src = trace::read_trace(path).map_err(|e| Error::Read(file.clone(), e))?;
    let t = trace::parse(&src).map_err(|e| Error::Parse(file.clone(), e.line, e.msg.clone()))?;
    let strategies: Vec<Strategy> = if a.compare_strategies {
        vec![Strategy::PerPage, Strategy::Contiguous, Strategy::Folio]
    } else {
        vec![a.strategy]
    };
    let ms = study(&file, &t, &strategies, &s)?;
    let written = if a.json {
        ms.iter()
            .try_for_each(|m| crate::outln!("{}", m.json(&file)))
    } else {
        crate::out!("{}", human(&file, &s, &ms))
    };
    if written.is_err() {
        return Ok(written);
    }
    if let Some(path) = &a.plot {
        let mut plotted = strategies.clone();
        if !plotted.contains(&Strategy::PerPage) {
            plotted.insert(0, Strategy::PerPage);
        }
        let mut laid = Vec::new();
        for st in plotted {
            laid.extend(lay_out(&file, &t, st, &s)?);
        }
        let svg = plot(&mut laid, &s)?;
        std::fs::write(path, svg).map_err(|e| Error::Plot(path.display().to_string(), e))?;
    }
    Ok(Ok(()))
}
