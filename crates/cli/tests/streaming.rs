//! Issue "nothing a user types can crash it": replay streams. A trace is replayed statement by
//! statement as it is parsed, and neither the runner nor the report keeps what finished, so
//! memory follows the engine's state, not the number of statements.

use std::borrow::Borrow;
use std::cell::Cell;
use std::ops::ControlFlow;
use std::rc::Rc;

use type1_cli::runner::{replay_stream, Options};
use type1_cli::trace::{self, Stmt};

/// A statement that counts how many of its kind are alive.
struct Tracked {
    stmt: Stmt,
    alive: Rc<Cell<usize>>,
}

impl Borrow<Stmt> for Tracked {
    fn borrow(&self) -> &Stmt {
        &self.stmt
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.alive.set(self.alive.get() - 1);
    }
}

#[test]
fn a_long_trace_is_replayed_one_statement_at_a_time() {
    // 20,000 map/unmap pairs of one page (spec §4, §5): the engine's state stays one mapping.
    let mut src = String::from("container type1v2\ndomain d0 format=x86_64\nmmap ram size=1M\n");
    let pairs = 20_000;
    for _ in 0..pairs {
        src.push_str("map vaddr=ram iova=1M size=4K => ok locked=+1\n");
        src.push_str("unmap iova=1M size=4K => ok size=4K locked=-1\n");
    }
    let alive = Rc::new(Cell::new(0usize));
    let mut most = 0usize;
    let stmts = trace::statements(&src).map(|s| {
        alive.set(alive.get() + 1);
        Tracked {
            stmt: s.expect("the trace parses"),
            alive: alive.clone(),
        }
    });
    let mut steps = 0u64;
    let mut failed = 0u64;
    let r = replay_stream(stmts, &Options::default(), &mut |step| {
        steps += 1;
        failed += u64::from(!step.mismatches.is_empty());
        most = most.max(alive.get());
        ControlFlow::Continue(())
    });
    assert_eq!(steps, 3 + 2 * pairs);
    assert_eq!(failed, 0, "every expectation holds");
    assert!(
        most <= 1,
        "at most the running statement is alive, saw {most}"
    );
    assert_eq!(alive.get(), 0);
    assert!(r.records.is_empty(), "a streamed replay keeps no records");
    assert_eq!(r.tally.statements as u64, 3 + 2 * pairs);
    let s = r.summary.as_ref().expect("a summary at the end");
    assert!(s.violations.is_empty(), "{:?}", s.violations);
    assert_eq!(
        s.line,
        3 + 2 * pairs as usize + 1,
        "the line after the last statement"
    );
    assert_eq!(r.exit_code(), 0);
}

#[test]
fn statements_stop_at_the_first_error_as_parse_does() {
    let src = "container type1v2\nmap vaddr=0x1000 iova=0 size=4K\nbogus\nmap vaddr=0x1000\n";
    let got: Vec<_> = trace::statements(src).collect();
    assert_eq!(got.len(), 3, "two statements, then the error, then nothing");
    let e = got[2].as_ref().expect_err("line 3 is not a statement");
    assert_eq!(e.line, 3);
    assert_eq!(trace::parse(src).expect_err("malformed").line, 3);
}
