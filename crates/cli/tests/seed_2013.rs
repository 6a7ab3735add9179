//! The `kernel=3.11` profile through the trace runner: every trace of the project replays under
//! it without a panic; the differences from 7.2 on the conformance traces are the table of
//! docs/kernel-3.11.md (generated here: `TYPE1_BLESS=1 cargo test -p type1-cli --test
//! seed_2013` rewrites it); external pins as trace statements; a region name bound after
//! `munmap`.

use std::path::{Path, PathBuf};

use type1::Strategy;
use type1_cli::runner::{replay, Detail, Options, Outcome, Replay, Step};
use type1_cli::trace::{parse, StmtKind, Trace};
use type1_cli::units;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn traces_in(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(workspace().join(dir))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "trace"))
        .collect();
    files.sort();
    files
}

fn load(p: &Path) -> Trace {
    parse(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// The trace with its container set to `kernel` (and to type1 if `v1`).
fn with_kernel(t: &Trace, kernel: &str, v1: bool) -> Trace {
    let mut t = t.clone();
    if let Some(StmtKind::Container { v2, kernel: k, .. }) =
        t.stmts.first_mut().map(|s| &mut s.kind)
    {
        *k = Some(kernel.to_string());
        if v1 {
            *v2 = false;
        }
    }
    t
}

fn run(t: &Trace, strategy: Strategy) -> Replay {
    let opts = Options {
        strategy,
        ..Options::default()
    };
    replay(t, &opts, &mut |_| {})
}

fn run_src(src: &str) -> Replay {
    run(&parse(src).unwrap(), Strategy::Contiguous)
}

fn rel(p: &Path) -> String {
    p.strip_prefix(workspace()).unwrap().display().to_string()
}

/// Every trace under tests/traces/ and examples/ replays under 3.11, as written and as type1
/// (3.11's only backend), with every strategy: no panic, and a run that stops does so at a trace
/// error naming the profile. As written, a type1v2 container is ENODEV.
#[test]
fn every_trace_replays_under_3_11_without_a_panic() {
    let mut files = traces_in("tests/traces");
    files.extend(traces_in("examples"));
    assert!(files.len() > 20);
    let mut statements = 0;
    for f in &files {
        let t = load(f);
        let v2 = matches!(t.stmts[0].kind, StmtKind::Container { v2: true, .. });
        for strategy in [Strategy::Contiguous, Strategy::Folio, Strategy::PerPage] {
            let written = run(&with_kernel(&t, "3.11", false), strategy);
            if v2 {
                assert_eq!(
                    written.records[0].outcome.errno(),
                    Some("ENODEV"),
                    "{}",
                    rel(f)
                );
                if let Some(e) = &written.error {
                    assert!(
                        e.message.contains("kernel=3.11"),
                        "{}: {}",
                        rel(f),
                        e.message
                    );
                }
            }
            let r = run(&with_kernel(&t, "3.11", true), strategy);
            if let Some(e) = &r.error {
                assert!(
                    e.message.contains("kernel=3.11"),
                    "{}:{}: {}",
                    rel(f),
                    e.line,
                    e.message
                );
            }
            statements += r.records.len();
        }
    }
    assert!(statements > 300, "{statements}");
}

/// One statement's answer, for the table: the result, the size an unmap reported, the change
/// in locked pages, and at `check` the entries and leaves.
fn answer(s: &Step) -> String {
    let mut a = s.outcome.word().to_string();
    if let Detail::Unmap { size: Some(n), .. } = &s.detail {
        a += &format!(" size={}", units::bytes_exact(*n));
    }
    let d = s.locked as i64 - s.locked_before as i64;
    if d != 0 {
        a += &format!(" locked={d:+}");
    }
    if let Detail::Check(st) = &s.detail {
        a += &format!(" dmas={}", st.dmas.len());
        for dom in &st.domains {
            let leaves: Vec<String> = dom
                .leaves
                .iter()
                .filter(|&&(_, n)| n > 0)
                .map(|&(sz, n)| format!("{}×{n}", units::bytes(sz)))
                .collect();
            a += &format!(" {}:{}", dom.name, leaves.join(","));
        }
    }
    a
}

/// Why two answers differ: what the side that failed said, else the engine's warnings, else
/// that it follows from earlier differences.
fn reason(new: &Step, old: &Step) -> String {
    let msg = |s: &Step| match &s.outcome {
        Outcome::Errno { message, .. } => Some(message.clone()),
        _ => None,
    };
    if let Some(m) = msg(old) {
        return format!("3.11: {}", m.strip_prefix("kernel=3.11: ").unwrap_or(&m));
    }
    if let Some(m) = msg(new) {
        return format!("7.2: {m}; 3.11 has no such check");
    }
    if let Some(w) = old
        .warnings
        .iter()
        .find(|w| w.starts_with("3.11") || w.starts_with("WARN"))
    {
        return w.clone();
    }
    let charged = |s: &Step| s.locked as i64 - s.locked_before as i64;
    if new.op == "map" && charged(old) < charged(new) {
        return "3.11's is_invalid_reserved_pfn takes the shared zero page (a never-written \
                read-only page) for a reserved pfn: mapped, never charged"
            .into();
    }
    if let Some(w) = old.warnings.first() {
        return format!("3.11: {w}");
    }
    if let Outcome::Invariants(v) = &old.outcome {
        return format!("3.11 broke invariants: {}", v[0]);
    }
    "follows from an earlier difference (3.11 merged, split or kept entries 7.2 did not)".into()
}

/// The statement without its expectation.
fn stmt(s: &Step) -> String {
    cell(s.text.split("=>").next().unwrap_or("").trim())
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// The table: for every conformance trace statement whose answer differs between 7.2 (the trace
/// as written, kernel=7.2) and 3.11 (kernel=3.11, type1), both answers and the reason.
fn differences_table() -> String {
    let mut out = String::new();
    out += "| trace:line | statement | 7.2 | 3.11 | why |\n";
    out += "|---|---|---|---|---|\n";
    let mut rows = 0;
    for f in traces_in("tests/traces") {
        let t = load(&f);
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        let new = run(&with_kernel(&t, "7.2", false), Strategy::Contiguous);
        let old = run(&with_kernel(&t, "3.11", true), Strategy::Contiguous);
        let v2 = matches!(t.stmts[0].kind, StmtKind::Container { v2: true, .. });
        if v2 {
            out += &format!(
                "| {name}:{} | `{}` | ok | ENODEV | 3.11 had no type1v2: the rest of this trace \
                 runs as `container type1` |\n",
                t.stmts[0].line,
                cell(t.stmts[0].text.split("=>").next().unwrap_or("").trim())
            );
            rows += 1;
        }
        for n in &new.records {
            let Some(o) = old.records.iter().find(|o| o.line == n.line) else {
                if let Some(e) = old.error.as_ref().filter(|e| e.line == n.line) {
                    out += &format!(
                        "| {name}:{} | `{}` | {} | trace error | {} |\n",
                        n.line,
                        stmt(n),
                        cell(&answer(n)),
                        cell(&e.message)
                    );
                    rows += 1;
                }
                continue;
            };
            let (a, b) = (answer(n), answer(o));
            if a != b {
                out += &format!(
                    "| {name}:{} | `{}` | {} | {} | {} |\n",
                    n.line,
                    stmt(n),
                    cell(&a),
                    cell(&b),
                    cell(&reason(n, o))
                );
                rows += 1;
            }
        }
        if let Some(e) = &old.error {
            out += &format!(
                "| {name}:{}– | (the rest) | … | not run | 3.11 stopped at line {} |\n",
                e.line + 1,
                e.line
            );
        }
    }
    out += &format!("\n{rows} statements differ.\n");
    out
}

const BEGIN: &str = "<!-- generated by crates/cli/tests/seed_2013.rs: begin -->\n";
const END: &str = "<!-- generated: end -->\n";

/// docs/kernel-3.11.md holds the table this test generates, unchanged.
#[test]
fn the_docs_table_is_the_generated_one() {
    let table = differences_table();
    assert!(table.contains("8.5-unmap-v2.trace"), "{table}");
    let path = workspace().join("docs/kernel-3.11.md");
    let doc = std::fs::read_to_string(&path).unwrap_or_default();
    let (Some(b), Some(e)) = (doc.find(BEGIN), doc.find(END)) else {
        panic!("docs/kernel-3.11.md has no generated section");
    };
    let current = &doc[b + BEGIN.len()..e];
    if std::env::var_os("TYPE1_BLESS").is_some() {
        let new = format!("{}{BEGIN}{table}{}", &doc[..b], &doc[e..]);
        std::fs::write(&path, new).unwrap();
        return;
    }
    assert!(
        current == table,
        "docs/kernel-3.11.md is out of date: run TYPE1_BLESS=1 cargo test -p type1-cli --test \
         seed_2013"
    );
}

/// A name stays bound to its address after `munmap`: `map` reaches unmapped memory and the
/// kernel answers EFAULT (`vaddr_get_pfns` finds no vma); `mmap NAME` again rebinds it.
#[test]
fn map_after_munmap_of_the_region_is_efault() {
    for kernel in ["7.2", "3.11"] {
        let r = run_src(&format!(
            "container type1 kernel={kernel}\n\
             domain d0\n\
             mmap b size=64K\n\
             mmap c size=64K\n\
             munmap b\n\
             map vaddr=b iova=1G size=64K => EFAULT locked=+0\n\
             map vaddr=b+32K iova=1G size=4K => EFAULT\n\
             check => dmas=0 pinned=0\n\
             mmap b size=64K\n\
             map vaddr=b iova=1G size=64K => ok locked=+16\n\
             munmap c offset=16K size=16K\n\
             map vaddr=c iova=2G size=64K => EFAULT locked=+0\n\
             map vaddr=c iova=2G size=16K => ok locked=+4\n"
        ));
        assert_eq!(r.failures(), vec![], "kernel {kernel}");
        assert_eq!(r.exit_code(), 0);
    }
}

/// External pins as statements: errnos in the kernel's order, the notification in the record
/// and the JSON, and a clear trace error under 3.11.
#[test]
fn pin_statements() {
    let r = run_src(
        "container type1v2\n\
         domain d0\n\
         mmap m size=64K\n\
         map vaddr=m iova=1G size=64K => ok locked=+16\n\
         pin iova=1G npage=4 => ok locked=+0\n\
         pin iova=1G+60K npage=2 => EINVAL\n\
         pin iova=1G npage=513 => E2BIG\n\
         pin iova=1G npage=0 => EINVAL\n\
         check => pinned=20\n\
         unpin iova=1G npage=1 => ok\n\
         dma_rw iova=1G+4K size=8K write=yes => ok\n\
         dma_rw iova=2G size=8 write=no => EINVAL\n\
         check => pinned=19\n\
         unmap iova=1G size=64K => ok size=64K locked=-16\n\
         check => pinned=0\n",
    );
    assert_eq!(r.failures(), vec![]);
    let unmap = r.records.iter().find(|s| s.op == "unmap").unwrap();
    let j = unmap.record().to_json();
    assert_eq!(j["notified"][0]["iova"], 1 << 30);
    assert_eq!(j["notified"][0]["unpinned"], 3);
    assert_eq!(j["notified"][0]["devices"][0], "d0");
    assert!(unmap
        .warnings
        .iter()
        .any(|w| w.contains("notified device(s) d0")));
    // type1 (v1): EACCES; a named group that is not attached: a trace error.
    let r = run_src(
        "container type1\ndomain d0\nmmap m size=8K\nmap vaddr=m iova=0 size=8K\n\
         pin iova=0 npage=1 => EACCES\npin iova=0 npage=1 group=d9\n",
    );
    assert_eq!(r.exit_code(), 2);
    assert!(r.error.unwrap().message.contains("no domain named \"d9\""));
    assert_eq!(r.records[4].outcome.errno(), Some("EACCES"));
    // 3.11 had no external pins at all.
    let r = run_src("container type1 kernel=3.11\ndomain d0\npin iova=0 npage=1\n");
    let e = r.error.unwrap();
    assert_eq!(e.line, 3);
    assert!(e.message.contains("kernel=3.11"), "{}", e.message);
}

/// What 3.11 lacked gets its errno (unmap flags EINVAL, dirty ENOTTY, type1v2 ENODEV) or a
/// trace error naming the profile (a second domain).
#[test]
fn what_3_11_lacked() {
    let r = run_src(
        "container type1 kernel=3.11\ndomain d0\nmmap m size=8K\nmap vaddr=m iova=0 size=8K\n\
         unmap all => EINVAL\nunmap iova=0 size=8K flags=vaddr => EINVAL\ndirty start => ENOTTY\n\
         info => ok\ndomain d1\n",
    );
    assert_eq!(r.exit_code(), 2);
    let e = r.error.unwrap();
    assert_eq!(e.line, 9);
    assert!(
        e.message.contains("kernel=3.11 had one IOMMU domain"),
        "{}",
        e.message
    );
    let r = run_src("container type1v2 kernel=3.11\ndomain d0\n");
    assert_eq!(r.records[0].outcome.errno(), Some("ENODEV"));
    assert!(r.error.unwrap().message.contains("kernel=3.11"));
}
