//! Acceptance: the project's guest program `vfio-replay` (what kernel-check runs against the
//! real kernel in QEMU) runs here under the LD_PRELOAD shim, and its records agree with
//! `type1 replay --json` for every trace under tests/traces/ and tests/kernel/ — through the
//! same comparison kernel-check uses (`kernel_check::check_records`), with the same exclusions
//! (`# model-only:` statements, statements the program cannot run). `check` leaves are not
//! compared: under the shim there are no IOMMU tables for a host to read.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use type1_cli::kernel_check::{self, model_only_markers};
use type1_trace::{Record, StmtKind};

/// The shim and `vfio-replay`, freshly built.
fn tools() -> (PathBuf, PathBuf) {
    let dir = common::build(&["type1-preload", "vfio-backend"]);
    (dir.join("libtype1_preload.so"), dir.join("vfio-replay"))
}

/// TYPE1_OPTIONS for a trace: its kernel profile, and the domain the guest's kernel gives
/// the program's group in kernel-check (emulated VT-d, 3 levels, the x86 MSI window
/// reserved), so that the same statements are marked model-only here as there.
fn options(p: &kernel_check::Prepared) -> String {
    format!("kernel={}; domain g format=x86_64-3level", p.profile)
}

/// Free 2M huge pages.
fn free_2m_pages() -> u64 {
    std::fs::read_to_string("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

#[test]
fn vfio_replay_under_the_shim_agrees_with_the_engine_on_every_trace() {
    let (shim, replay) = tools();
    let mut files: Vec<PathBuf> = ["tests/traces", "tests/kernel"]
        .iter()
        .flat_map(|d| std::fs::read_dir(common::workspace().join(d)).expect("trace directory"))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "trace"))
        .collect();
    files.sort();
    assert!(files.len() >= 20, "found {} traces", files.len());
    let mut report = Vec::new();
    let mut disagreements = Vec::new();
    for path in &files {
        let p = kernel_check::prepare(path, None).expect("the trace parses");
        let name = path
            .strip_prefix(common::workspace())
            .unwrap_or(path)
            .display()
            .to_string();
        let hugetlb_2m = p.trace.stmts.iter().any(|s| {
            matches!(&s.kind, StmtKind::Mmap { backing, .. } if *backing == type1_trace::Backing::Hugetlb2m)
        });
        if hugetlb_2m && free_2m_pages() < 32 {
            // Without reserved pages the program cannot mmap them and what follows differs.
            report.push(format!(
                "{name}: skipped: needs 2M huge pages (echo 64 > /proc/sys/vm/nr_hugepages)"
            ));
            continue;
        }
        if vfio_backend::replay::needs_1g(&p.trace.stmts) {
            // kernel-check boots its guest with 1G pages for these; this machine keeps none.
            report.push(format!(
                "{name}: skipped: needs 1G huge pages (the guest of kernel-check has them; this test takes none)"
            ));
            continue;
        }
        let jsonl = type1_trace::to_json_lines(&p.trace.stmts);
        let input = std::env::temp_dir().join(format!(
            "type1-replay-{}-{}.jsonl",
            std::process::id(),
            path.file_stem().unwrap().to_string_lossy()
        ));
        std::fs::write(&input, jsonl).unwrap();
        let o = Command::new(&replay)
            .arg("42")
            .arg(&input)
            .env("LD_PRELOAD", &shim)
            .env("TYPE1_GROUPS", "42")
            // Traces set RLIMIT_MEMLOCK above the hard limit; without CAP_SYS_RESOURCE that
            // is refused, so the limit is kept by the shim.
            .env("TYPE1_VIRTUAL_MEMLOCK", "1")
            .env("TYPE1_OPTIONS", options(&p))
            .stdin(Stdio::null())
            .output()
            .expect("running vfio-replay");
        let _ = std::fs::remove_file(&input);
        let out = String::from_utf8_lossy(&o.stdout);
        // TYPE1_REPLAY_DUMP=DIR keeps each program's output, to look at a difference.
        if let Some(dir) = std::env::var_os("TYPE1_REPLAY_DUMP") {
            let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
            let _ = std::fs::write(Path::new(&dir).join(stem + ".out"), &o.stdout);
        }
        let records: Vec<Record> = out
            .lines()
            .filter_map(|l| l.strip_prefix("@@R "))
            .map(|j| serde_json::from_str(j).expect("a record"))
            .collect();
        assert!(
            out.contains("@@END"),
            "{}: {out}\n{}",
            path.display(),
            String::from_utf8_lossy(&o.stderr)
        );
        let leaves: BTreeMap<String, Result<(), String>> = p
            .trace
            .stmts
            .iter()
            .filter_map(|s| match &s.kind {
                StmtKind::Domain { name, .. } => Some((
                    name.clone(),
                    Err("no IOMMU tables to read under the shim".to_string()),
                )),
                _ => None,
            })
            .collect();
        let engine = kernel_check::engine_json(&p.trace);
        let c =
            kernel_check::check_records(&engine, &records, &model_only_markers(&p.src), &leaves);
        let name = path
            .strip_prefix(common::workspace())
            .unwrap_or(path)
            .display()
            .to_string();
        if c.cmp
            .not_run
            .iter()
            .any(|(_, why)| why.contains("VFIO_GROUP_GET_DEVICE_FD"))
        {
            // A BAR comes from a device fd, and the shim serves containers and groups, not
            // devices: everything after the BAR's mmap differs for that reason alone.
            report.push(format!(
                "{name}: skipped: maps a device BAR (VFIO_GROUP_GET_DEVICE_FD), which the shim \
                 does not serve"
            ));
            continue;
        }
        report.push(format!(
            "{name}: compared {}, model-only {}, not run {}, differences {}, one side only {}",
            c.cmp.compared,
            c.model_only.len(),
            c.cmp.not_run.len(),
            c.cmp.diffs.len(),
            c.cmp.missing.len()
        ));
        for (line, why) in &c.cmp.not_run {
            report.push(format!("  {name}:{line}: not run: {why}"));
        }
        for d in &c.cmp.diffs {
            disagreements.push(kernel_check::diff_line(&name, d));
        }
        if !c.cmp.missing.is_empty() {
            disagreements.push(format!(
                "{name}: lines on one side only: {:?}",
                c.cmp.missing
            ));
        }
    }
    println!("{}", report.join("\n"));
    assert!(
        disagreements.is_empty(),
        "{}\n\n{}",
        report.join("\n"),
        disagreements.join("\n")
    );
}
