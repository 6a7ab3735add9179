//! The command line: exit codes, error messages, `demo --print`.

use std::process::{Command, Output};

fn type1(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_type1"))
        .args(args)
        .output()
        .unwrap()
}

fn with_trace(tag: &str, src: &str, args: &[&str]) -> (Output, String) {
    let path = std::env::temp_dir().join(format!("type1-cli-{}-{tag}.trace", std::process::id()));
    std::fs::write(&path, src).unwrap();
    let p = path.to_str().unwrap().to_string();
    let mut all: Vec<&str> = args.to_vec();
    all.push(&p);
    let out = type1(&all);
    let _ = std::fs::remove_file(&path);
    (out, p)
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs `type1 ARGS` on a trace made of `src`, asserts the exit code, and returns the output,
/// the trace's path and stderr.
fn exits(code: i32, tag: &str, src: &str, args: &[&str]) -> (Output, String, String) {
    let (out, path) = with_trace(tag, src, args);
    assert_eq!(out.status.code(), Some(code), "{}", stderr(&out));
    let err = stderr(&out);
    (out, path, err)
}

#[test]
fn a_malformed_trace_exits_2_with_line_and_column_and_runs_nothing() {
    let src = "container\nmmap ram size=4M\nmap vaddr=ram iova=1G sise=4M\n";
    let (out, path, err) = exits(2, "malformed", src, &["replay", "--json"]);
    assert!(err.contains(&format!("{path}:3:23: ")), "{err}");
    assert!(err.contains("3 | map vaddr=ram iova=1G sise=4M"), "{err}");
    // Nothing runs: the only object on stdout is the error (issue 13: a malformed trace in
    // --json mode is a JSON object too).
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    let v: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(v["op"], "error");
    assert_eq!(v["error"], "malformed");
    assert_eq!(v["ok"], false);
    assert_eq!(v["line"], 3);
    assert_eq!(v["col"], 23);
    assert_eq!(v["file"], path.as_str());
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("did you mean `size=`"),
        "{v}"
    );
}

#[test]
fn a_failed_expectation_exits_1_naming_the_line() {
    let src = "container\ndomain d0 format=mock\nmmap b size=8K\n\
               map vaddr=b iova=0 size=8K => ok locked=+3\n\
               map vaddr=b iova=0 size=8K => EEXIST\n\
               check => dmas=2\n";
    let (out, path, err) = exits(1, "expect", src, &["replay"]);
    assert!(
        err.contains(&format!("{path}:4: expected locked=+3, got locked=+2")),
        "{err}"
    );
    assert!(
        err.contains(&format!("{path}:6: expected dmas=2, got dmas=1")),
        "{err}"
    );
    assert!(!err.contains(":5:"), "line 5 met its expectation: {err}");
    // The human report still shows every statement.
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("EEXIST"), "{report}");
}

#[test]
fn a_trace_error_exits_2_and_stops_the_run() {
    let src = "container\nmap vaddr=ram iova=0 size=4K\ninfo\n";
    let (out, path, err) = exits(2, "traceerr", src, &["replay", "--json"]);
    assert!(
        err.contains(&format!("{path}:2: error: vaddr=ram: no region named")),
        "{err}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "only the container ran: {stdout}");
    assert_eq!(lines[0]["op"], "container");
    assert_eq!(lines[1]["op"], "error");
    assert_eq!(lines[1]["error"], "trace");
    assert_eq!(lines[1]["line"], 2);
    assert!(
        lines[1]["message"]
            .as_str()
            .unwrap()
            .starts_with("vaddr=ram: no region named"),
        "{}",
        lines[1]
    );
}

#[test]
fn several_files_exit_with_the_worst_code() {
    let ok = std::env::temp_dir().join(format!("type1-cli-{}-ok.trace", std::process::id()));
    std::fs::write(&ok, "container\ninfo => ok\n").unwrap();
    let bad = std::env::temp_dir().join(format!("type1-cli-{}-bad.trace", std::process::id()));
    std::fs::write(&bad, "container\ninfo => EINVAL\n").unwrap();
    let out = type1(&["replay", ok.to_str().unwrap(), bad.to_str().unwrap()]);
    let _ = std::fs::remove_file(&ok);
    let _ = std::fs::remove_file(&bad);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn a_missing_file_exits_2() {
    let out = type1(&["replay", "/nonexistent/x.trace"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("cannot read the trace"));
}

#[test]
fn demo_print_is_a_valid_trace() {
    let out = type1(&["demo", "--print"]);
    assert_eq!(out.status.code(), Some(0));
    let src = String::from_utf8(out.stdout).unwrap();
    let t = type1_cli::trace::parse(&src).expect("the printed demo parses");
    assert!(t.stmts.iter().any(|s| s.kind.verb() == "map"));
    assert_eq!(src, type1_cli::demo::DEMO_TRACE);
}

#[test]
fn an_unknown_strategy_is_refused() {
    let out = type1(&["replay", "--strategy", "fast", "x.trace"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("per-page"), "{}", stderr(&out));
}
