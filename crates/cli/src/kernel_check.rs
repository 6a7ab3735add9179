//! `type1 kernel-check`: the engine held to a real kernel, statement by statement.
//!
//! Each trace is replayed twice: by the vfio backend inside a QEMU guest (crate
//! `vfio-backend`: a Debian kernel, emulated VT-d, the `edu` device bound to vfio-pci) and by
//! the engine with the matching kernel profile. The two `replay --json` streams are compared by
//! line ([`type1_trace::compare`]): `ok`, `errno`, `locked`, `avail`, the returned `size` of
//! `unmap`, the page sizes and ranges of `info`, and at `check` the leaves by page size that the
//! guest's VT-d tables hold against the engine's domain of the same name.
//!
//! Not compared, and listed:
//! * statements marked `# model-only: REASON` in the trace (a trailing comment, ignored by the
//!   parser): what only the model can express (a second domain, pfnmap without a BAR, a 48- or
//!   64-bit aperture, sub-4K page sizes, `phys=` placement…);
//! * statements the guest program could not run (`cannot`, with its reason);
//! * the leaves of a domain whose format differs from the guest's (anything but
//!   `x86_64-3level`, or `x86_64` with an aperture within 39 bits, with VT-d's page sizes).
//!
//! The comparison itself ([`check_records`]) takes the engine's JSON objects and the kernel's
//! records, so it can be tested without QEMU.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::runner::{self, Options};
use crate::trace::{self, defaults, Comparison, Diff, Record, StmtKind, Trace};

/// The comment tag that marks a statement only the model can express.
pub const MODEL_ONLY: &str = "model-only:";

/// The kernel profile used when neither `--kernel` nor the trace's `kernel=` names one.
pub const DEFAULT_PROFILE: &str = defaults::KERNEL;

/// The kernel a trace asks for (its last `container kernel=`).
pub fn trace_kernel(t: &Trace) -> Option<String> {
    t.stmts.iter().rev().find_map(|s| match &s.kind {
        StmtKind::Container { kernel, .. } => kernel.clone(),
        _ => None,
    })
}

/// The engine profile (`7.2`, `6.12`, `6.1`) of a kernel name: a short name, or a full Debian
/// version such as `7.2.12+deb13-cloud-amd64` or `6.1.0-56-cloud-amd64`.
pub fn profile_of(kernel: &str) -> Option<&'static str> {
    let k = kernel.trim();
    let is = |p: &str| k == p || k.starts_with(&format!("{p}.")) || k.starts_with(&format!("{p}-"));
    if is("7.2") {
        Some("7.2")
    } else if is("6.12") {
        Some("6.12")
    } else if is("6.1") {
        Some("6.1")
    } else {
        None
    }
}

/// `# model-only: REASON` tags by line (1-based). The tag may follow other comment text; an
/// empty reason is kept as empty (the report says so).
pub fn model_only_markers(src: &str) -> BTreeMap<usize, String> {
    src.lines()
        .enumerate()
        .filter_map(|(i, l)| {
            let comment = &l[l.find('#')?..];
            let at = comment.find(MODEL_ONLY)?;
            Some((i + 1, comment[at + MODEL_ONLY.len()..].trim().to_string()))
        })
        .collect()
}

/// The guest's domain: VT-d second-level tables, 3 levels (39 bits), 4K|2M|1G.
const GUEST_PGSIZES: [u64; 3] = [4096, 2 << 20, 1 << 30];
const GUEST_LAST_IOVA: u64 = (1 << 39) - 1;

/// Per domain of the trace: `Ok` when its leaves can be held to the guest's VT-d tables, else
/// why not.
pub fn leaf_comparable(t: &Trace) -> BTreeMap<String, Result<(), String>> {
    let mut out = BTreeMap::new();
    for s in &t.stmts {
        let StmtKind::Domain {
            name,
            format,
            pgsizes,
            aperture,
            ..
        } = &s.kind
        else {
            continue;
        };
        let f = format.as_deref().unwrap_or("x86_64");
        let verdict = match (f, aperture) {
            ("x86_64-3level", _) => Ok(()),
            ("x86_64", Some((_, end))) if *end <= GUEST_LAST_IOVA => Ok(()),
            ("x86_64", _) => Err(format!(
                "domain {name} is x86_64 with a {} aperture (the guest's VT-d has 39 bits)",
                aperture.map_or("48-bit".to_string(), |(_, e)| format!("{e:#x}-ended"))
            )),
            (f, _) => Err(format!("domain {name} is format={f}, the guest's is VT-d")),
        }
        .and_then(|()| match pgsizes {
            Some(p) => {
                let mut sorted = p.clone();
                sorted.sort_unstable();
                if sorted == GUEST_PGSIZES {
                    Ok(())
                } else {
                    Err(format!(
                        "domain {name} has pgsizes other than VT-d's 4K,2M,1G"
                    ))
                }
            }
            None => Ok(()),
        });
        out.insert(name.clone(), verdict);
    }
    out
}

/// Sets every `container`'s `kernel=` to `profile` (both sides then ask for the same kernel).
/// Returns the lines whose `kernel=` named another one.
pub fn set_kernel(t: &mut Trace, profile: &str) -> Vec<(usize, String)> {
    t.stmts
        .iter_mut()
        .filter_map(|s| set_kernel_stmt(s, profile).map(|k| (s.line, k)))
        .collect()
}

/// [`set_kernel`] of one statement: a `container` gets `kernel=profile`; returns the
/// `kernel=` it replaced, if it named another.
pub fn set_kernel_stmt(s: &mut trace::Stmt, profile: &str) -> Option<String> {
    let StmtKind::Container { kernel, .. } = &mut s.kind else {
        return None;
    };
    let was = kernel
        .as_deref()
        .filter(|k| *k != profile)
        .map(str::to_string);
    *kernel = Some(profile.to_string());
    was
}

/// The engine's `replay --json` objects for a trace.
pub fn engine_json(t: &Trace) -> Vec<Value> {
    runner::replay(t, &Options::default(), &mut |_| {}).json_lines()
}

/// The outcome of one trace's check: the comparison of the statements not marked (its
/// `not_run` are the unmarked statements the guest program could not run), and what was left
/// out of it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Check {
    /// The statement-by-statement comparison.
    pub cmp: Comparison,
    /// `(line, reason)` of statements marked model-only.
    pub model_only: Vec<(usize, String)>,
    /// `(line, why)` of `check`s whose leaves were not compared (the domain's shape differs).
    pub leaves_skipped: Vec<(usize, String)>,
}

impl Check {
    /// No difference and no line on one side only.
    pub fn agrees(&self) -> bool {
        self.cmp.agrees()
    }
}

fn line_of(v: &Value) -> Option<usize> {
    v.get("line")?.as_u64().map(|l| l as usize)
}

/// Compares the engine's objects with the kernel's records, leaving out marked lines and the
/// leaves of domains the guest cannot model.
pub fn check_records(
    engine: &[Value],
    kernel: &[Record],
    marks: &BTreeMap<usize, String>,
    leaves: &BTreeMap<String, Result<(), String>>,
) -> Check {
    let mut c = Check::default();
    let mut lines_seen: std::collections::BTreeSet<usize> =
        engine.iter().filter_map(line_of).collect();
    lines_seen.extend(kernel.iter().map(|r| r.line));
    c.model_only = marks
        .iter()
        .filter(|(l, _)| lines_seen.contains(l))
        .map(|(l, w)| (*l, w.clone()))
        .collect();
    let engine: Vec<Value> = engine
        .iter()
        .filter(|v| line_of(v).is_none_or(|l| !marks.contains_key(&l)))
        .cloned()
        .collect();
    let mut kept = Vec::new();
    for r in kernel {
        if marks.contains_key(&r.line) {
            continue;
        }
        let mut r = r.clone();
        if let Some(state) = &mut r.state {
            state.domains.retain(|name, _| match leaves.get(name) {
                Some(Err(why)) => {
                    c.leaves_skipped.push((r.line, why.clone()));
                    false
                }
                _ => true,
            });
        }
        kept.push(r.to_json());
    }
    c.cmp = trace::compare(&engine, &kept);
    c
}

/// One difference as printed: `FILE:LINE: FIELD: engine X, kernel Y`.
pub fn diff_line(file: &str, d: &Diff) -> String {
    format!(
        "{file}:{}: {}: engine {}, kernel {}",
        d.line, d.field, d.engine, d.kernel
    )
}

/// The human report of one trace.
pub fn human(file: &str, kernel: &str, c: &Check, texts: &BTreeMap<usize, String>) -> String {
    let mut s = String::new();
    let text = |l: usize| texts.get(&l).map(String::as_str).unwrap_or("");
    for d in &c.cmp.diffs {
        s.push_str(&diff_line(file, d));
        s.push_str(&format!("\n    {}\n", text(d.line)));
    }
    for l in &c.cmp.missing {
        s.push_str(&format!(
            "{file}:{l}: missing: a record on one side only\n    {}\n",
            text(*l)
        ));
    }
    for (l, why) in &c.model_only {
        s.push_str(&format!("{file}:{l}: model-only: {why}\n"));
    }
    for (l, why) in &c.cmp.not_run {
        s.push_str(&format!("{file}:{l}: cannot: {why}\n"));
    }
    for (l, why) in &c.leaves_skipped {
        s.push_str(&format!("{file}:{l}: leaves not compared: {why}\n"));
    }
    s.push_str(&format!(
        "{file}: {} on {kernel}: {} statements compared ({} fields), {} differences, {} missing; {} model-only, {} cannot, {} leaf comparisons skipped\n",
        if c.agrees() { "AGREES" } else { "DISAGREES" },
        c.cmp.compared,
        c.cmp.fields,
        c.cmp.diffs.len(),
        c.cmp.missing.len(),
        c.model_only.len(),
        c.cmp.not_run.len(),
        c.leaves_skipped.len()
    ));
    s
}

/// The JSON report of one trace.
pub fn to_json(file: &str, kernel: &str, profile: &str, c: &Check, seconds: f64) -> Value {
    let pairs = |v: &[(usize, String)]| {
        v.iter()
            .map(|(l, w)| json!({"line": l, "why": w}))
            .collect::<Vec<_>>()
    };
    json!({
        "file": file,
        "kernel": kernel,
        "profile": profile,
        "agrees": c.agrees(),
        "compared": c.cmp.compared,
        "fields": c.cmp.fields,
        "diffs": c.cmp.diffs.iter().map(|d| json!({
            "line": d.line, "op": d.op, "field": d.field,
            "engine": d.engine, "kernel": d.kernel,
        })).collect::<Vec<_>>(),
        "missing": c.cmp.missing,
        "model_only": pairs(&c.model_only),
        "cannot": pairs(&c.cmp.not_run),
        "leaves_skipped": pairs(&c.leaves_skipped),
        "seconds": seconds,
    })
}

/// A trace read, parsed and prepared for both sides.
pub struct Prepared {
    /// The parsed trace (its `kernel=` set to the profile).
    pub trace: Trace,
    /// The trace's text (for the `# model-only:` tags).
    pub src: String,
    /// The engine profile both sides use.
    pub profile: String,
    /// `(line, kernel)` of `kernel=` the `--kernel` option replaced.
    pub overridden: Vec<(usize, String)>,
    /// The file it was read from.
    pub path: std::path::PathBuf,
}

/// Reads and parses a trace and picks its kernel: `--kernel` when given (it overrides the
/// trace's `kernel=` on both sides), else the trace's `kernel=`, else 7.2.
pub fn prepare(path: &std::path::Path, kernel: Option<&str>) -> Result<Prepared, String> {
    let name = path.display();
    let src = trace::read_trace(path).map_err(|e| format!("{name}: {e}"))?;
    let mut t =
        trace::parse(&src).map_err(|e| format!("{name}:{}:{}: {}", e.line, e.col, e.msg))?;
    let wanted = kernel
        .map(str::to_string)
        .or_else(|| trace_kernel(&t))
        .unwrap_or_else(|| DEFAULT_PROFILE.to_string());
    let profile = profile_of(&wanted)
        .ok_or_else(|| format!("{name}: unknown kernel {wanted:?} (use 7.2, 6.12 or 6.1, or their full Debian versions)"))?
        .to_string();
    let overridden = set_kernel(&mut t, &profile);
    if profile != DEFAULT_PROFILE
        && !t
            .stmts
            .iter()
            .any(|s| matches!(s.kind, StmtKind::Container { .. }))
    {
        return Err(format!(
            "{name}: no container statement to set kernel={profile} on for the engine"
        ));
    }
    Ok(Prepared {
        trace: t,
        src,
        profile,
        overridden,
        path: path.to_path_buf(),
    })
}

/// Checks one prepared trace against the guest's answers (already collected).
pub fn check_prepared(p: &Prepared, kernel: &[Record]) -> Check {
    check_records(
        &engine_json(&p.trace),
        kernel,
        &model_only_markers(&p.src),
        &leaf_comparable(&p.trace),
    )
}

/// The line printed when a host tool is missing (`None`: all there), for the `kernels` to boot
/// (7.2 when empty).
pub fn tools_line(kernels: &[String]) -> Option<String> {
    let cache = vfio_backend::qemu::default_cache_dir();
    let mut wanted: Vec<String> = kernels.to_vec();
    if wanted.is_empty() {
        wanted.push(DEFAULT_PROFILE.to_string());
    }
    vfio_backend::qemu::check_host_tools(&wanted, &cache).map(|l| format!("kernel-check: {l}"))
}

/// The boots to make: per kernel to boot (in the order given), the engine profile and the
/// indexes of the files prepared for it; files that could not be prepared come back as
/// `(index, error)`.
type Plan = (Vec<(String, Vec<(usize, Prepared)>)>, Vec<(usize, String)>);

fn plan(files: &[std::path::PathBuf], kernels: &[String]) -> Plan {
    let mut boots: Vec<(String, Vec<(usize, Prepared)>)> = Vec::new();
    let mut broken = Vec::new();
    let wanted: Vec<Option<&str>> = if kernels.is_empty() {
        vec![None]
    } else {
        kernels.iter().map(|k| Some(k.as_str())).collect()
    };
    for k in wanted {
        for (i, path) in files.iter().enumerate() {
            match prepare(path, k) {
                Ok(p) => {
                    // A full version given on the command line is booted as is.
                    let boot = k
                        .filter(|k| profile_of(k).is_some())
                        .unwrap_or(&p.profile)
                        .to_string();
                    match boots.iter_mut().find(|(b, _)| *b == boot) {
                        Some((_, v)) => v.push((i, p)),
                        None => boots.push((boot, vec![(i, p)])),
                    }
                }
                Err(e) => broken.push((i, e)),
            }
        }
    }
    (boots, broken)
}

/// `type1 kernel-check`: all files in one guest boot per kernel (`kernels`: `--kernel`, each
/// overriding the traces' `kernel=`; empty: each trace's own), each trace compared as its
/// answer arrives. Returns the exit code: 0 all agree, 1 a difference, 2 a harness error or a
/// missing host tool (the worst over the files).
pub fn run_files(
    files: &[std::path::PathBuf],
    kernels: &[String],
    as_json: bool,
) -> crate::output::Result<i32> {
    use crate::errln;
    let started = std::time::Instant::now();
    // Reading the traces is quick; it tells which kernels will boot (a trace's own `kernel=`).
    let (boots, unprepared) = plan(files, kernels);
    let booted: Vec<String> = boots.iter().map(|(k, _)| k.clone()).collect();
    if let Some(line) = tools_line(&booted) {
        errln!("{line}")?;
        return Ok(2);
    }
    let mut all = Tally::default();
    for (_, e) in &unprepared {
        errln!("kernel-check: {e}")?;
        all.broken += 1;
    }
    for (kernel, prepared) in &boots {
        let t = check_boot(kernel, prepared, as_json)?;
        errln!(
            "kernel-check: on {}: {} traces: {} agree, {} differ, {} harness errors ({:.1} s)",
            vfio_backend::qemu::resolve_kernel(kernel),
            prepared.len(),
            t.agree,
            t.differ,
            t.broken,
            t.seconds
        )?;
        all.agree += t.agree;
        all.differ += t.differ;
        all.broken += t.broken;
    }
    errln!(
        "kernel-check: {} traces: {} agree, {} differ, {} harness errors ({:.1} s)",
        all.agree + all.differ + all.broken,
        all.agree,
        all.differ,
        all.broken,
        started.elapsed().as_secs_f64()
    )?;
    Ok(if all.broken > 0 {
        2
    } else if all.differ > 0 {
        1
    } else {
        0
    })
}

/// Counts of one boot (or all).
#[derive(Default)]
struct Tally {
    agree: usize,
    differ: usize,
    broken: usize,
    seconds: f64,
}

/// One boot of `kernel` for all of `prepared`: each answer compared and reported as it comes.
/// Progress lines are best effort; a report that cannot be written ends the run.
fn check_boot(
    kernel: &str,
    prepared: &[(usize, Prepared)],
    as_json: bool,
) -> crate::output::Result<Tally> {
    use crate::{errln, out, outln};
    use vfio_backend::qemu::{run_traces_in_guest, GuestOptions};
    let t0 = std::time::Instant::now();
    let mut t = Tally::default();
    let n = prepared.len();
    for (_, p) in prepared {
        let name = p.path.display();
        for (line, k) in &p.overridden {
            errln!(
                "kernel-check: {name}:{line}: kernel={k} replaced by --kernel {} on both sides",
                p.profile
            )?;
        }
    }
    let opts = GuestOptions {
        kernel: kernel.to_string(),
        ..GuestOptions::default()
    };
    errln!(
        "kernel-check: booting {} once for {n} traces (engine profile {})…",
        vfio_backend::qemu::resolve_kernel(kernel),
        prepared.first().map_or("", |(_, p)| p.profile.as_str())
    )?;
    let stmts: Vec<&[trace::Stmt]> = prepared.iter().map(|(_, p)| &p.trace.stmts[..]).collect();
    let mut written: crate::output::Result<()> = Ok(());
    let mut on_trace =
        |i: usize, answer: Result<vfio_backend::GuestRun, vfio_backend::HarnessError>| {
            let p = &prepared[i].1;
            let name = p.path.display().to_string();
            let run = match answer {
                Ok(run) => run,
                Err(e) => {
                    let _ = errln!("kernel-check: [{}/{n}] {name}: harness error: {e}", i + 1);
                    t.broken += 1;
                    return;
                }
            };
            let c = check_prepared(p, &run.records);
            let tm = &run.timings;
            let _ = errln!(
                "kernel-check:   [{}/{n}] {name}: boot {:.1} s, replay {:.1} s",
                i + 1,
                tm.boot,
                tm.run
            );
            if written.is_ok() {
                written = if as_json {
                    outln!("{}", to_json(&name, &run.kernel, &p.profile, &c, tm.total))
                } else {
                    let texts = p
                        .trace
                        .stmts
                        .iter()
                        .map(|s| (s.line, s.text.clone()))
                        .collect();
                    out!("{}", human(&name, &run.kernel, &c, &texts))
                };
            }
            if c.agrees() {
                t.agree += 1;
            } else {
                t.differ += 1;
            }
        };
    let setup = run_traces_in_guest(
        &stmts,
        &opts,
        &mut |m| {
            let _ = errln!("kernel-check:   {m}");
        },
        &mut on_trace,
    );
    written?;
    match setup {
        Ok(tm) => errln!(
            "kernel-check:   fetch {:.1} s, build {:.1} s, boots and replay {:.1} s, total {:.1} s",
            tm.fetch,
            tm.build,
            tm.run,
            tm.total
        )?,
        Err(e) => {
            for (_, p) in prepared {
                errln!("kernel-check: {}: harness error: {e}", p.path.display())?;
            }
            t = Tally {
                broken: n,
                ..Tally::default()
            };
        }
    }
    t.seconds = t0.elapsed().as_secs_f64();
    Ok(t)
}
