//! The human replay report, `--compare`, `--no-expect`, `--kernel`, JSON over several files,
//! standard input, the help, completions and the man page, and writing to a full disk or a
//! closed pipe: the `type1` binary as a person (or a script) uses it.

use std::io::Write as _;
use std::process::{Command, Output, Stdio};

fn type1(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_type1"))
        .args(args)
        .output()
        .unwrap()
}

/// A trace file made of `src`, removed when dropped.
struct TraceFile(std::path::PathBuf);

impl TraceFile {
    fn new(tag: &str, src: &str) -> TraceFile {
        let p =
            std::env::temp_dir().join(format!("type1-report-{}-{tag}.trace", std::process::id()));
        std::fs::write(&p, src).unwrap();
        TraceFile(p)
    }
    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TraceFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The report with runs of whitespace (the table's padding, wrapped lines) made one space.
fn flat(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn replay(tag: &str, src: &str, args: &[&str]) -> (i32, String, String) {
    let t = TraceFile::new(tag, src);
    let mut all = vec!["replay"];
    all.extend_from_slice(args);
    all.push(t.path());
    let o = type1(&all);
    (o.status.code().unwrap(), text(&o.stdout), text(&o.stderr))
}

fn examples(name: &str) -> String {
    format!("{}/../../examples/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Spec §1.3 check 10: a map outside the valid IOVA ranges is EINVAL; the report says why on
/// the statement's row, not only in --json.
#[test]
fn a_map_failing_the_iova_range_check_shows_its_reason() {
    let (code, out, _) = replay(
        "iova-range",
        "container\ndomain d0 format=x86_64\nmmap b size=8K\n\
         map vaddr=b iova=0xfee00000 size=4K => EINVAL\n",
        &[],
    );
    assert_eq!(code, 0, "{out}");
    let f = flat(&out);
    assert!(
        f.contains(
            "4 map vaddr=b iova=0xfee00000 size=4K EINVAL 0 pages 65535 EINVAL: \
             [0xfee00000, 0xfee00fff] is not inside one valid IOVA range"
        ),
        "{out}"
    );
}

/// Spec §4.4 and §5: `unmap all` drops every pin, so the final state shows 0 locked; the
/// report keeps the high-water mark, 8 GiB = 2097152 pages.
#[test]
fn a_trace_mapping_8g_then_unmapping_all_shows_peak_locked_8g() {
    let (code, out, err) = replay(
        "peak",
        "container\ndomain d0\nmmap ram size=8G backing=thp\n\
         map vaddr=ram iova=8G size=8G => ok locked=+2097152\n\
         unmap all => ok size=8G locked=0\n",
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("locked memory  0 pages now, peak 2097152 pages (8G); limit unlimited"),
        "{out}"
    );
    assert!(
        out.contains("DMA entries    0 now, peak 1 of 65535"),
        "{out}"
    );
    // 8G on THP at a 2M-aligned IOVA: 4096 2M leaves at the peak, none left.
    assert!(
        out.contains("leaves         0 now, peak 4096 (2M:4096)"),
        "{out}"
    );
}

/// The same warning 300 times (an unmap that removed less than asked, spec §1.4) is listed
/// once, with its count and the lines it came from.
#[test]
fn three_hundred_identical_warnings_print_once_with_their_count() {
    let mut src = String::from("container\ndomain d0 format=mock\nmmap b size=4K\n");
    for _ in 0..300 {
        src.push_str("map vaddr=b iova=0 size=4K\nunmap iova=0 size=8K\n");
    }
    let (code, out, _) = replay("warn300", &src, &[]);
    assert_eq!(code, 0);
    let w = "unmap of 8K at iova 0x0 removed 4K (less than asked";
    assert_eq!(out.matches(w).count(), 1, "{out}");
    assert!(out.contains(&format!("×300 lines 5-603: {w}")), "{out}");
    assert!(out.contains("Warnings (300, 1 distinct):"), "{out}");
}

/// Spec §5: over RLIMIT_MEMLOCK the map fails with ENOMEM and is unwound; the error names
/// only the batch that failed, the report says what the whole map needs.
#[test]
fn enomem_shows_the_pages_the_whole_map_needed() {
    let (code, out, _) = replay(
        "enomem",
        "container memlock=1M\ndomain d0 format=mock\nmmap b size=4M layout=scattered\n\
         map vaddr=b iova=0 size=512K => ok locked=+128\n\
         map vaddr=b+1M iova=1M size=2M => ENOMEM locked=+0\n",
        &[],
    );
    assert_eq!(code, 0, "{out}");
    let f = flat(&out);
    // Scattered pages pin one at a time: the limit is hit at the 129th page of the second map,
    // and the engine's error names only that page.
    assert!(
        f.contains("ENOMEM: RLIMIT_MEMLOCK (256 pages) exceeded: 256 locked, 1 more needed"),
        "{out}"
    );
    assert!(
        f.contains(
            "the whole map needs 512 pages (2M) locked, 640 pages (2.5M) with what is locked \
             already, against a limit of 256 pages (1M)"
        ),
        "{out}"
    );
}

/// Locked memory above 90% of the limit is warned about once.
#[test]
fn locked_memory_near_the_limit_is_warned_about() {
    let (code, out, _) = replay(
        "memlock90",
        "container memlock=1M\ndomain d0 format=mock\nmmap b size=1M\n\
         map vaddr=b iova=0 size=900K\nmap vaddr=b+900K iova=1M size=24K\n",
        &[],
    );
    assert_eq!(code, 0);
    // 225 of 256 pages is 87.8%: no warning yet.
    assert!(!out.contains("line 4:"), "{out}");
    assert!(
        out.contains(
            "line 5: locked memory 231 pages (924K) of the 256 pages (1M) memlock limit (90.2%)"
        ),
        "{out}"
    );
}

/// `check`, `info` and `dirty get` show their results on their rows (spec §1.5, §1.6).
#[test]
fn check_info_and_dirty_get_show_what_they_found() {
    let (code, out, _) = replay(
        "results",
        "container\ndomain d0 format=x86_64\nmmap ram size=4M backing=thp\n\
         map vaddr=ram iova=1G size=4M\ninfo\ndirty start\n\
         dirty get iova=1G size=4M pgsize=4K\ncheck\n",
        &[],
    );
    assert_eq!(code, 0);
    let f = flat(&out);
    assert!(
        f.contains(
            "info: page sizes 4K,2M,1G; IOVA ranges 0x0-0xfedfffff, 0xfef00000-0xffffffffffff; \
             65534 DMA entries left"
        ),
        "{out}"
    );
    // Right after `dirty start` every pinned page counts as dirty (spec §6).
    assert!(
        f.contains("dirty: 1024 of 1024 pages of 4K dirty in 4M at iova 0x40000000"),
        "{out}"
    );
    assert!(
        f.contains(
            "check: DMA entries 1, pinned 1024 pages (4M), locked 1024 pages (4M); leaves d0: \
             4K:0 2M:2 1G:0"
        ),
        "{out}"
    );
}

/// A long statement wraps between its arguments; none is cut.
#[test]
fn long_statements_wrap_whole() {
    let (_, out, _) = replay(
        "wrap",
        "container\ndomain d0 format=mock\nmmap ram size=4M\n\
         map vaddr=ram+1M iova=0x100000000 size=1M flags=read,write argsz=32 => ok\n",
        &[],
    );
    let rows: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("argsz=32") || l.contains("map vaddr"))
        .collect();
    let joined = flat(&rows.join(" "));
    assert!(
        joined.contains("map vaddr=ram+1M iova=0x100000000 size=1M")
            && joined.contains("flags=read,write argsz=32"),
        "{out}"
    );
    assert!(!out.contains("..."), "{out}");
}

/// Per-page pins and maps one 4K page per call (spec §3.7: before 2013); contiguous maps each
/// physically contiguous run in one call with 2M leaves where THP allows (§3.4).
#[test]
fn compare_per_page_and_contiguous_on_vm_boot() {
    let o = type1(&[
        "replay",
        "--compare",
        "strategy=per-page,contiguous",
        &examples("vm-boot.trace"),
    ]);
    let out = text(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    let row = |label: &str| -> Vec<String> {
        let l = out
            .lines()
            .find(|l| l.trim_start_matches('*').trim_start().starts_with(label))
            .unwrap_or_else(|| panic!("no row {label}: {out}"));
        l.trim_start_matches('*')
            .trim_start()
            .strip_prefix(label)
            .unwrap()
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    let header: Vec<&str> = out.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(header, ["per-page", "contiguous"]);
    // Pages of RAM mapped per boot: 160 + 786176 + 262144, twice; the BAR's 4 pages, twice.
    let ram_pages = 160 + 786_176 + 262_144;
    assert_eq!(
        row("map calls"),
        [(2 * ram_pages + 8).to_string(), "8".into()]
    );
    assert_eq!(
        row("leaves at peak"),
        [(ram_pages + 4).to_string(), "2467".into()]
    );
    assert_eq!(row("of 4K"), [(ram_pages + 4).to_string(), "420".into()]);
    assert_eq!(row("of 2M"), ["0", "2047"]);
    // The same memory is locked either way.
    assert_eq!(
        row("locked at peak"),
        ["1048480", "pages", "(3.99G)", "1048480", "pages", "(3.99G)"]
    );
    for marked in ["map calls", "leaves at peak", "of 4K", "of 2M"] {
        assert!(
            out.lines()
                .any(|l| l.starts_with('*') && l.contains(marked)),
            "{marked} differs and is marked: {out}"
        );
    }
    assert!(
        out.lines()
            .any(|l| !l.starts_with('*') && l.contains("locked at peak")),
        "{out}"
    );
}

/// vm-boot's expectations are written for the contiguous strategy (per-page fails its leaf
/// counts: tests/traces.rs); --no-expect runs it without them, and the run is per-page's own.
#[test]
fn no_expect_runs_per_page_vm_boot_with_exit_0() {
    let file = examples("vm-boot.trace");
    let o = type1(&[
        "replay",
        "--strategy",
        "per-page",
        "--no-expect",
        "--json",
        &file,
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
    assert!(o.stderr.is_empty(), "{}", text(&o.stderr));
    let first_check: serde_json::Value = text(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["op"] == "check")
        .unwrap();
    // Every page its own 4K leaf (the expectation says 420 4K and 2047 2M leaves).
    let leaves = &first_check["domains"]["vtd"]["leaves"];
    assert_eq!(leaves["4096"], 160 + 786_176 + 262_144 + 4, "{first_check}");
    assert_eq!(leaves["2097152"], 0, "{first_check}");
    assert!(first_check.get("expectations_failed").is_none());
}

/// `--kernel` replaces the trace's `kernel=` (as kernel-check --kernel does): the 6.1 trace's
/// `locked=+0` for the zero page fails on 7.2, which charges it; --compare kernel= shows it.
#[test]
fn kernel_overrides_the_trace_and_compares() {
    let file = format!(
        "{}/../../tests/traces/profile-6.1-zero-page.trace",
        env!("CARGO_MANIFEST_DIR")
    );
    assert_eq!(type1(&["replay", &file]).status.code(), Some(0));
    let o = type1(&["replay", "--kernel", "7.2", &file]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stdout));
    let err = text(&o.stderr);
    assert!(err.contains("expected locked=+0, got locked=+4"), "{err}");
    assert!(
        err.contains(":4: note: kernel=6.1 replaced by --kernel 7.2"),
        "{err}"
    );
    assert!(text(&o.stdout).contains("kernel 7.2"));
    let o = type1(&["replay", "--compare", "kernel=6.1,7.2", &file]);
    let out = text(&o.stdout);
    assert!(
        out.lines()
            .any(|l| l.starts_with('*') && flat(l) == "* locked at peak 0 pages 4 pages (16K)"),
        "{out}"
    );
    let o = type1(&["replay", "--kernel", "5.4", &file]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("unknown kernel \"5.4\""));
}

/// With two inputs every JSON object names its file; the failed expectation is on its
/// statement's object, and stderr names the statement once for all its items.
#[test]
fn json_objects_carry_their_file_with_two_inputs() {
    let a = TraceFile::new("json-a", "container\ninfo => ok\n");
    let b = TraceFile::new(
        "json-b",
        "container\ndomain d0 format=mock\nmmap m size=8K\n\
         map vaddr=m iova=0 size=8K => EEXIST locked=+1 avail=3\n",
    );
    let o = type1(&["replay", "--json", a.path(), b.path()]);
    assert_eq!(o.status.code(), Some(1));
    let objs: Vec<serde_json::Value> = text(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(objs.len(), 2 + 1 + 4 + 1, "{}", text(&o.stdout));
    assert_eq!(objs.iter().filter(|v| v["file"] == a.path()).count(), 3);
    assert_eq!(objs.iter().filter(|v| v["file"] == b.path()).count(), 5);
    let map = &objs[6];
    assert_eq!(map["op"], "map");
    assert_eq!(
        map["expectations_failed"],
        serde_json::json!([
            "expected EEXIST, got ok",
            "expected locked=+1, got locked=+2 (0 -> 2)",
            "expected avail=3, got avail=65534"
        ])
    );
    let err = text(&o.stderr);
    assert_eq!(
        err.matches("map vaddr=m iova=0 size=8K").count(),
        1,
        "{err}"
    );
    assert_eq!(
        err.matches(&format!("{}:4: expected", b.path())).count(),
        3,
        "{err}"
    );
    assert!(
        err.contains("2 traces: 1 met all expectations; 1 with failed expectations"),
        "{err}"
    );
    // One file: no `file` field (the objects are as before).
    let o = type1(&["replay", "--json", a.path()]);
    assert!(!text(&o.stdout).contains("\"file\""));
}

/// `-` reads the trace from standard input.
#[test]
fn a_dash_reads_standard_input() {
    let mut c = Command::new(env!("CARGO_BIN_EXE_type1"))
        .args(["replay", "--json", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin
        .take()
        .unwrap()
        .write_all(b"container\ndomain d0 format=mock\nmmap m size=8K\nmap vaddr=m iova=0 size=8K => ok locked=+2\n")
        .unwrap();
    let o = c.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(0));
    let objs: Vec<serde_json::Value> = text(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(objs.len(), 5);
    assert_eq!(objs[3]["locked"], 2);
}

/// Several files end with one line over all of them.
#[test]
fn several_traces_end_with_a_closing_line() {
    let a = TraceFile::new("close-a", "container\ninfo => ok\n");
    let b = TraceFile::new("close-b", "container\ninfo => ok\n");
    let o = type1(&["replay", a.path(), b.path()]);
    assert_eq!(o.status.code(), Some(0));
    assert!(text(&o.stdout).ends_with("\n2 traces: all expectations met\n"));
}

/// `--memory host` cannot provide MMIO: refused at once with the line, nothing allocated.
#[test]
fn host_memory_with_a_pfnmap_region_is_refused_up_front() {
    let (code, out, err) = replay(
        "host-pfnmap",
        "container\ndomain d0\nmmap ram size=1G backing=thp\nmmap bar size=16K backing=pfnmap\n",
        &["--memory", "host", "--json"],
    );
    assert_eq!(code, 2);
    assert!(
        err.contains(":4: --memory host cannot run this trace: a pfnmap region"),
        "{err}"
    );
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["error"], "refused");
    assert_eq!(v["line"], 4);
}

#[test]
fn a_bad_compare_is_refused_before_anything_runs() {
    let file = examples("vm-boot.trace");
    for (arg, says) in [
        ("strategy=per-page", "at least two different values"),
        ("strategy=per-page,fast", "unknown strategy \"fast\""),
        ("memory=sim,host", "\"memory\" cannot vary"),
        ("kernel=6.1,5.4", "unknown kernel \"5.4\""),
    ] {
        let o = type1(&["replay", "--compare", arg, &file]);
        assert_eq!(o.status.code(), Some(2), "{arg}");
        assert!(o.stdout.is_empty(), "{arg}");
        assert!(text(&o.stderr).contains(says), "{arg}: {}", text(&o.stderr));
    }
}

#[test]
fn completions_and_the_man_page_are_generated() {
    for shell in ["bash", "zsh", "fish"] {
        let o = type1(&["completions", shell]);
        assert_eq!(o.status.code(), Some(0));
        let s = text(&o.stdout);
        for sub in [
            "replay",
            "inspect",
            "kernel-check",
            "completions",
            "no-expect",
        ] {
            assert!(s.contains(sub), "{shell} completion lacks {sub}");
        }
    }
    let o = type1(&["man"]);
    assert_eq!(o.status.code(), Some(0));
    let s = text(&o.stdout);
    assert!(
        s.starts_with(".ie") || s.contains(".TH type1"),
        "{}",
        &s[..200.min(s.len())]
    );
    for sub in [
        "type1\\-replay",
        "type1\\-inspect",
        "type1\\-plan",
        "\\-\\-compare",
    ] {
        assert!(s.contains(sub), "man page lacks {sub}");
    }
}

#[test]
fn help_has_examples_exit_codes_and_no_module_names() {
    for sub in [
        "replay",
        "kernel-check",
        "inspect",
        "iotlb",
        "plan",
        "demo",
        "completions",
        "man",
    ] {
        let o = type1(&[sub, "--help"]);
        let s = text(&o.stdout);
        assert!(s.contains("Examples:\n  type1 "), "{sub}: {s}");
        assert!(s.contains("Exit codes:\n  0 "), "{sub}: {s}");
        assert!(
            s.contains("  3    the output could not be written"),
            "{sub}: {s}"
        );
        assert!(s.contains("  141 "), "{sub}: {s}");
        assert!(!s.contains("::"), "{sub} names a module: {s}");
    }
    let s = text(&type1(&["replay", "--help"]).stdout);
    assert_eq!(
        s.matches("default").count(),
        s.matches("[default: ").count(),
        "{s}"
    );
    let s = text(&type1(&["inspect", "--help"]).stdout);
    assert_eq!(s.matches("4K,2M,1G").count(), 1, "the default once: {s}");
}

#[test]
fn inspect_without_arguments_mentions_demo() {
    let o = type1(&["inspect"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o.stderr).contains("--demo"), "{}", text(&o.stderr));
}

/// A full disk (`> /dev/full`): one line naming the stream, exit 3, no panic.
#[test]
fn a_full_disk_exits_3_with_one_line() {
    let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") else {
        eprintln!("no /dev/full here: nothing to test");
        return;
    };
    let o = Command::new(env!("CARGO_BIN_EXE_type1"))
        .args(["replay", &examples("vm-boot.trace")])
        .stdout(full)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3));
    assert_eq!(
        text(&o.stderr),
        "type1: cannot write to stdout: No space left on device (os error 28)\n"
    );
}

/// A reader that goes away (`| head -1`): status 141, no panic and no error line.
#[test]
fn a_closed_pipe_ends_quietly_with_141() {
    for args in [
        &["demo", "--print"][..],
        &["inspect", "--demo"][..],
        &["replay", "--json", &examples("vm-boot.trace")][..],
    ] {
        // The read end is closed before the command starts: its first write fails with EPIPE
        // (Rust ignores SIGPIPE, so the error reaches the command).
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let o = Command::new(env!("CARGO_BIN_EXE_type1"))
            .args(args)
            .stdout(writer)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(141), "{args:?}: {}", text(&o.stderr));
        // Progress lines may precede it (inspect --demo's); no panic, no write-error line.
        let err = text(&o.stderr);
        assert!(
            !err.contains("panicked") && !err.contains("cannot write"),
            "{args:?}: {err}"
        );
    }
}
