//! Reading a trace's text from a file or stdin, bounded: a trace is read line by line, at most
//! [`MAX_TRACE_BYTES`] in all and [`MAX_LINE_BYTES`] per line, and binary input (a NUL byte,
//! bytes that are not UTF-8) is refused at the first bad byte with its line and column. So
//! `/dev/zero` or `/dev/urandom` given as a trace ends at once with an error, and an endless
//! stream ends at the cap instead of exhausting memory.
//!
//! Invariants this module owns: the text returned is valid UTF-8 without NUL, no longer than
//! [`MAX_TRACE_BYTES`], and no line in it (without its `\n`) is longer than [`MAX_LINE_BYTES`];
//! no more than the cap plus one buffer is ever read from the source.

use std::fmt;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

/// The largest trace read: 64 MiB (a million statements of 64 bytes).
pub const MAX_TRACE_BYTES: usize = 64 << 20;
/// The longest line read, without its line end: 1 MiB.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// Why a trace could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// The file could not be opened or read.
    Io {
        /// The path as given (`-` for stdin).
        path: PathBuf,
        /// What the system said.
        error: std::io::Error,
    },
    /// The trace is longer than [`MAX_TRACE_BYTES`].
    TooLarge {
        /// The cap, in bytes.
        limit: usize,
    },
    /// A line is longer than [`MAX_LINE_BYTES`].
    LineTooLong {
        /// The 1-based line.
        line: usize,
        /// The cap, in bytes.
        limit: usize,
    },
    /// Binary input: a NUL byte or bytes that are not UTF-8.
    Binary {
        /// The 1-based line.
        line: usize,
        /// The 1-based byte of that line where the bad byte is.
        col: usize,
        /// The offset of the bad byte in the whole input, from 0.
        offset: usize,
        /// `a NUL byte` or `bytes that are not UTF-8 (0x..)`.
        what: String,
    },
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Io { path, error } => write!(f, "cannot read {}: {error}", path.display()),
            ReadError::TooLarge { limit } => write!(
                f,
                "the trace is larger than {} MiB, the most a trace may hold: split it",
                limit >> 20
            ),
            ReadError::LineTooLong { line, limit } => write!(
                f,
                "line {line} is longer than {} MiB, the most a line may hold: is this a trace?",
                limit >> 20
            ),
            ReadError::Binary {
                line,
                col,
                offset,
                what,
            } => write!(
                f,
                "line {line}, byte {col} (offset {offset}): {what}: this is binary data, not a \
                 trace (a trace is UTF-8 text)"
            ),
        }
    }
}

impl std::error::Error for ReadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReadError::Io { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// Reads the trace at `path` (`-`: standard input) within the caps.
pub fn read_trace(path: &Path) -> Result<String, ReadError> {
    let io = |error| ReadError::Io {
        path: path.to_path_buf(),
        error,
    };
    if path.as_os_str() == "-" {
        let stdin = std::io::stdin();
        let lock = stdin.lock();
        read_from(lock).map_err(|e| e.with_io(io))
    } else {
        let f = std::fs::File::open(path).map_err(io)?;
        read_from(BufReader::new(f)).map_err(|e| e.with_io(io))
    }
}

/// Checks bytes already in memory as [`read_trace`] checks a file.
pub fn from_bytes(data: &[u8]) -> Result<String, ReadError> {
    read_from(data).map_err(|e| {
        e.with_io(|error| ReadError::Io {
            path: PathBuf::from("(memory)"),
            error,
        })
    })
}

/// A read error before the path is known.
enum Raw {
    Io(std::io::Error),
    Other(ReadError),
}

impl Raw {
    fn with_io(self, io: impl FnOnce(std::io::Error) -> ReadError) -> ReadError {
        match self {
            Raw::Io(e) => io(e),
            Raw::Other(e) => e,
        }
    }
}

/// Reads line by line from `r`, never holding more than the caps.
fn read_from(mut r: impl BufRead) -> Result<String, Raw> {
    let mut out = String::new();
    let mut line_buf: Vec<u8> = Vec::new();
    let mut line = 1;
    loop {
        let chunk = match r.fill_buf() {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Raw::Io(e)),
        };
        if chunk.is_empty() {
            break;
        }
        let (take, ends_line) = match chunk.iter().position(|&b| b == b'\n') {
            Some(p) => (p + 1, true),
            None => (chunk.len(), false),
        };
        let piece = &chunk[..take];
        if let Some(p) = piece.iter().position(|&b| b == 0) {
            return Err(Raw::Other(ReadError::Binary {
                line,
                col: line_buf.len() + p + 1,
                offset: out.len() + line_buf.len() + p,
                what: "a NUL byte".into(),
            }));
        }
        let content = piece.len() - usize::from(ends_line);
        if line_buf.len() + content > MAX_LINE_BYTES {
            return Err(Raw::Other(ReadError::LineTooLong {
                line,
                limit: MAX_LINE_BYTES,
            }));
        }
        if out.len() + line_buf.len() + piece.len() > MAX_TRACE_BYTES {
            return Err(Raw::Other(ReadError::TooLarge {
                limit: MAX_TRACE_BYTES,
            }));
        }
        line_buf.extend_from_slice(piece);
        r.consume(take);
        if ends_line {
            finish_line(&mut out, &mut line_buf, line)?;
            line += 1;
        }
    }
    finish_line(&mut out, &mut line_buf, line)?;
    Ok(out)
}

/// Appends a complete line (with its `\n`, if any) after checking it is UTF-8.
fn finish_line(out: &mut String, buf: &mut Vec<u8>, line: usize) -> Result<(), Raw> {
    match std::str::from_utf8(buf) {
        Ok(s) => out.push_str(s),
        Err(e) => {
            let at = e.valid_up_to();
            let len = e.error_len().unwrap_or(buf.len() - at).clamp(1, 4);
            let bytes: Vec<String> = buf[at..at + len]
                .iter()
                .map(|b| format!("0x{b:02x}"))
                .collect();
            return Err(Raw::Other(ReadError::Binary {
                line,
                col: at + 1,
                offset: out.len() + at,
                what: format!("bytes that are not UTF-8 ({})", bytes.join(" ")),
            }));
        }
    }
    buf.clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn text_comes_back_unchanged() {
        let s = "container\r\nmap vaddr=0 iova=0 size=4K => ok # é\n\nunmap all";
        assert_eq!(from_bytes(s.as_bytes()).unwrap(), s);
        assert_eq!(from_bytes(b"").unwrap(), "");
    }

    #[test]
    fn a_nul_byte_is_named_with_its_line_and_byte() {
        let e = from_bytes(b"container\ncheck\0\n").unwrap_err();
        match &e {
            ReadError::Binary {
                line, col, offset, ..
            } => assert_eq!((*line, *col, *offset), (2, 6, 15)),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            e.to_string(),
            "line 2, byte 6 (offset 15): a NUL byte: this is binary data, not a trace \
             (a trace is UTF-8 text)"
        );
    }

    #[test]
    fn invalid_utf8_is_named_with_its_bytes() {
        let e = from_bytes(b"container\n# caf\xe9 au lait\n").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with("line 2, byte 6 (offset 15): bytes that are not UTF-8 (0xe9)"),
            "{msg}"
        );
        // A sequence cut by the end of input.
        let e = from_bytes(b"check \xe2\x82").unwrap_err();
        assert!(
            e.to_string()
                .contains("line 1, byte 7 (offset 6): bytes that are not UTF-8 (0xe2 0x82)"),
            "{e}"
        );
    }

    #[test]
    fn an_endless_zero_stream_stops_at_its_first_byte() {
        let zero = std::io::repeat(0).take(1 << 40);
        let e = read_from(BufReader::new(zero)).err().unwrap();
        let Raw::Other(ReadError::Binary { line, col, .. }) = e else {
            panic!("not a binary error")
        };
        assert_eq!((line, col), (1, 1));
    }

    #[test]
    fn long_lines_and_large_traces_stop_at_the_caps() {
        let long = std::io::repeat(b'a').take(1 << 40);
        let e = read_from(BufReader::new(long)).err().unwrap();
        assert!(matches!(
            e,
            Raw::Other(ReadError::LineTooLong { line: 1, limit }) if limit == MAX_LINE_BYTES
        ));
        let mut line = vec![b'#'; 1 << 16];
        line.push(b'\n');
        let many = std::io::repeat(0).take(0).chain(Lines(line, 0));
        let e = read_from(BufReader::new(many)).err().unwrap();
        let Raw::Other(e) = e else { panic!("io") };
        assert_eq!(
            e.to_string(),
            "the trace is larger than 64 MiB, the most a trace may hold: split it"
        );
        // Exactly at the line cap is fine.
        let mut ok = vec![b'#'; MAX_LINE_BYTES];
        ok.extend_from_slice(b"\r\n");
        // `\r` counts as content: one byte over.
        assert!(matches!(
            from_bytes(&ok),
            Err(ReadError::LineTooLong { line: 1, .. })
        ));
        ok.truncate(MAX_LINE_BYTES);
        ok.push(b'\n');
        assert_eq!(from_bytes(&ok).unwrap().len(), MAX_LINE_BYTES + 1);
    }

    /// The same line, endlessly.
    struct Lines(Vec<u8>, usize);
    impl Read for Lines {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(self.0.len() - self.1);
            buf[..n].copy_from_slice(&self.0[self.1..self.1 + n]);
            self.1 = (self.1 + n) % self.0.len();
            Ok(n)
        }
    }

    #[test]
    fn a_missing_file_names_its_path() {
        let e = read_trace(Path::new("/nonexistent/x.trace")).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("cannot read /nonexistent/x.trace: "),
            "{e}"
        );
    }
}
