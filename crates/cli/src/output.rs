//! Where the command's reports go: stdout and stderr with their write errors handled.
//!
//! Invariants owned here:
//! - nothing the command prints can panic: every write returns a [`Result`];
//! - a reader that went away (`EPIPE`, as in `type1 inspect --demo | head`) ends the command
//!   quietly with status 141, what a shell shows for a process killed by SIGPIPE;
//! - any other write error (a full disk, `> /dev/full`) is one line on stderr and status
//!   [`WRITE_FAILED`]; an output that could not be written is never a success.
//!
//! The `out!`/`outln!`/`errln!` macros format and write; the callers propagate with `?`, and
//! `main` turns the outcome into the exit status with [`exit_code`].

use std::fmt;
use std::io::{self, Write};
use std::process::ExitCode;

/// Exit status when a report could not be written (other than to a closed pipe).
pub const WRITE_FAILED: u8 = 3;
/// Exit status when the reader of stdout or stderr went away: 128 + SIGPIPE, as a shell
/// reports a process that SIGPIPE ended.
pub const BROKEN_PIPE: u8 = 141;

/// Why a report could not be written.
#[derive(Debug)]
pub enum Fail {
    /// The reader went away (EPIPE): end quietly.
    Closed,
    /// Any other write error, on the stream named.
    Write(&'static str, io::Error),
}

impl fmt::Display for Fail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fail::Closed => write!(f, "the output's reader went away"),
            Fail::Write(stream, e) => write!(f, "cannot write to {stream}: {e}"),
        }
    }
}

impl std::error::Error for Fail {}

/// The outcome of a command: its exit code, or why its output could not be written.
pub type Result<T> = std::result::Result<T, Fail>;

impl Fail {
    /// Classifies an I/O error from writing `stream`.
    pub fn from_io(stream: &'static str, e: io::Error) -> Fail {
        if e.kind() == io::ErrorKind::BrokenPipe {
            Fail::Closed
        } else {
            Fail::Write(stream, e)
        }
    }
}

/// Writes `s` to stdout and flushes it, so a full disk is seen here, not lost at exit.
pub fn stdout_str(s: &str) -> Result<()> {
    let mut o = io::stdout().lock();
    o.write_all(s.as_bytes())
        .and_then(|()| o.flush())
        .map_err(|e| Fail::from_io("stdout", e))
}

/// Writes `s` to stderr.
pub fn stderr_str(s: &str) -> Result<()> {
    let mut o = io::stderr().lock();
    o.write_all(s.as_bytes())
        .and_then(|()| o.flush())
        .map_err(|e| Fail::from_io("stderr", e))
}

/// Writes formatted text to stdout: `out!("{x}")?`.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => { $crate::output::stdout_str(&format!($($arg)*)) };
}

/// Writes a formatted line to stdout: `outln!("{x}")?`.
#[macro_export]
macro_rules! outln {
    () => { $crate::output::stdout_str("\n") };
    ($($arg:tt)*) => { $crate::output::stdout_str(&format!("{}\n", format_args!($($arg)*))) };
}

/// Writes a formatted line to stderr: `errln!("{x}")?`.
#[macro_export]
macro_rules! errln {
    () => { $crate::output::stderr_str("\n") };
    ($($arg:tt)*) => { $crate::output::stderr_str(&format!("{}\n", format_args!($($arg)*))) };
}

/// The exit status of a command's outcome; reports a write error in one line on stderr.
pub fn exit_code(r: Result<i32>) -> ExitCode {
    match r {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(Fail::Closed) => ExitCode::from(BROKEN_PIPE),
        Err(e) => {
            // If stderr is gone too there is nobody left to tell; the status still says it.
            let _ = writeln!(io::stderr(), "type1: {e}");
            ExitCode::from(WRITE_FAILED)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broken_pipe_is_closed_and_others_are_write_errors() {
        let c = Fail::from_io("stdout", io::Error::from(io::ErrorKind::BrokenPipe));
        assert!(matches!(c, Fail::Closed));
        let full = Fail::from_io("stdout", io::Error::from_raw_os_error(libc_enospc()));
        assert!(matches!(full, Fail::Write("stdout", _)));
        assert!(full.to_string().starts_with("cannot write to stdout: "));
    }

    fn libc_enospc() -> i32 {
        28 // ENOSPC on Linux
    }
}
