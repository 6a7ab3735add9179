//! Runs inside the guest: `vfio-replay GROUP STATEMENTS.jsonl` replays the trace statements
//! (the trace language's syntax tree as JSON lines, `type1_trace::to_json_lines`) against
//! /dev/vfio/GROUP and prints one `@@R {json}` line per statement, then `@@END`. At `check` it
//! prints `@@CHECKPOINT line=N` and waits for a line on stdin.

use std::io::Write;

use vfio_backend::replay::{replay, StdioPause};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: vfio-replay GROUP STATEMENTS.jsonl");
        std::process::exit(2);
    }
    let group: u32 = match args[1].parse() {
        Ok(g) => g,
        Err(_) => {
            eprintln!("vfio-replay: bad group number {:?}", args[1]);
            std::process::exit(2);
        }
    };
    let text = match std::fs::read_to_string(&args[2]) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("vfio-replay: {}: {e}", args[2]);
            std::process::exit(2);
        }
    };
    let stmts = match type1_trace::from_json_lines(&text) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("vfio-replay: {e}");
            std::process::exit(2);
        }
    };
    println!("@@BEGIN statements={}", stmts.len());
    replay(&stmts, group, &mut StdioPause, &mut |r| {
        // One write per record, so console noise cannot split it.
        let line = format!(
            "@@R {}\n",
            serde_json::to_string(r).expect("records serialise")
        );
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(line.as_bytes());
        let _ = out.flush();
    });
    println!("@@END");
}
