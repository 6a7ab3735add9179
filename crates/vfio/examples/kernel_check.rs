//! Replays a trace against a real kernel in a QEMU guest and checks the trace's expectations
//! against the kernel's answers.
//!
//! `cargo run -p vfio-backend --example kernel_check -- [--kernel 7.2|6.12|6.1|FULL] [--json] [--walks] [--monitor-log OUT] FILE`

use type1_trace as trace;

#[path = "../tests/support/from_trace.rs"]
mod from_trace;

use vfio_backend::qemu::{run_in_guest, stderr_progress, GuestOptions};

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
    let t = trace::parse(&text).unwrap_or_else(|e| {
        eprintln!("{file}: {e}");
        std::process::exit(2)
    });
    let (stmts, trace_kernel) = from_trace::convert(&t);
    let opts = GuestOptions {
        kernel: kernel.or(trace_kernel).unwrap_or_else(|| "7.2".into()),
        ..GuestOptions::default()
    };
    let run = match run_in_guest(&stmts, &opts, &mut stderr_progress) {
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
        let res = if r.cannot {
            "CANNOT".to_string()
        } else if r.ok {
            "ok".to_string()
        } else {
            r.errno.clone().unwrap_or_default()
        };
        let mut extra = String::new();
        if let Some(s) = r.size {
            extra.push_str(&format!(" size={s:#x}"));
        }
        if let Some(d) = &r.domains {
            for (n, l) in d {
                for (sz, c) in l {
                    extra.push_str(&format!(" leaves.{n}.{sz:#x}={c}"));
                }
            }
        }
        println!(
            "{:>4} {:<70} | kernel: {res}{extra} locked={} avail={}",
            r.line,
            texts.get(&r.line).copied().unwrap_or(""),
            r.locked.map_or("-".into(), |l| l.to_string()),
            r.avail.map_or("-".into(), |a| a.to_string()),
        );
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
    let (checked, bad) = from_trace::check_expectations(&t, &run.records);
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
