//! Replays a trace against a real kernel in a QEMU guest and checks the trace's expectations
//! against the kernel's answers (`type1 kernel-check` compares with the engine instead).
//!
//! `cargo run -p vfio-backend --example kernel_check -- [--kernel 7.2|6.12|6.1|FULL] [--json] [--walks] [--monitor-log OUT] FILE`

use type1_trace::{expect, StmtKind};
use vfio_backend::qemu::{run_in_guest, stderr_progress, GuestOptions};
use vfio_backend::replay::describe;

fn main() {
    let mut kernel = None;
    let mut json = false;
    let mut walks = false;
    let mut file = None;
    let mut monitor_log = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--kernel" => kernel = args.next(),
            "--json" => json = true,
            "--walks" => walks = true,
            "--monitor-log" => monitor_log = args.next(),
            _ => file = Some(a),
        }
    }
    let Some(file) = file else {
        eprintln!("usage: kernel_check [--kernel 7.2] [--json] [--walks] FILE");
        std::process::exit(2);
    };
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| {
        eprintln!("{file}: {e}");
        std::process::exit(2)
    });
    let t = type1_trace::parse(&text).unwrap_or_else(|e| {
        eprintln!("{file}: {e}");
        std::process::exit(2)
    });
    let trace_kernel = t.stmts.iter().find_map(|s| match &s.kind {
        StmtKind::Container { kernel, .. } => kernel.clone(),
        _ => None,
    });
    let opts = GuestOptions {
        kernel: kernel
            .or(trace_kernel)
            .unwrap_or_else(|| type1_trace::defaults::KERNEL.into()),
        ..GuestOptions::default()
    };
    let run = match run_in_guest(&t.stmts, &opts, &mut stderr_progress) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    if let Some(p) = monitor_log {
        std::fs::write(&p, &run.monitor_log).unwrap_or_else(|e| eprintln!("{p}: {e}"));
    }
    let texts: std::collections::BTreeMap<usize, &str> =
        t.stmts.iter().map(|s| (s.line, s.text.as_str())).collect();
    for r in &run.records {
        if json {
            println!("{}", r.to_json());
            continue;
        }
        println!("{}", describe(r, texts.get(&r.line).copied().unwrap_or("")));
        if walks {
            if let Some(w) = run.walks.get(&r.line) {
                println!(
                    "     context devfn=0x8 present={} aw={} did={} tables={} leaves={}",
                    w.context_present as u8,
                    w.aw,
                    w.did,
                    w.tables,
                    w.leaves.len()
                );
                for run in w.runs() {
                    println!("     {run}");
                }
            }
        }
    }
    let (checked, bad) = expect::check_trace(&t, &run.records);
    let tm = &run.timings;
    eprintln!(
        "kernel {}: {} statements; fetch {:.1} s, build {:.1} s, boot {:.1} s, replay {:.1} s, total {:.1} s",
        run.kernel,
        run.records.len(),
        tm.fetch,
        tm.build,
        tm.boot,
        tm.run,
        tm.total
    );
    if bad.is_empty() {
        eprintln!("{checked} expectations of {file}: the kernel agrees with every one");
    } else {
        eprintln!(
            "{} of {checked} expectations of {file} disagree with the kernel:",
            bad.len()
        );
        for b in &bad {
            eprintln!("  {b}");
        }
        std::process::exit(1);
    }
}
