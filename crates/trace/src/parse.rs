//! Text → [`Trace`]: the parser, all-or-nothing (the first malformed line is a [`ParseError`]
//! naming its line and column, with what to write instead).
//!
//! # Grammar, as implemented
//!
//! * One statement per line; `#` starts a comment anywhere; blank lines are
//!   ignored; `\r\n` line ends and a leading byte-order mark are accepted.
//! * A statement is split on the first `=>`: the left part is the verb and its
//!   arguments, the right part the expectation. Both are split on whitespace.
//!   A word containing `=` is a `key=value` argument (the key is everything
//!   before the first `=`); any other word is positional. Keys are in any
//!   order, and each at most once.
//! * Verbs, keys and word values are case-sensitive (lower case); errno names
//!   are upper case.
//! * Numbers: terms joined by `+` / `-`, read left to right, with no spaces.
//!   A term is decimal (`4096`), optionally with one binary suffix `K` `M` `G`
//!   `T` (upper case: 1024, 1024², 1024³, 1024⁴), or hex (`0x1000`, digits of
//!   either case, no suffix). Every term and every intermediate sum must lie
//!   in `0..=2^64-1`.
//! * Ranges (`aperture=`, `reserved=`) are `START-END`, `END` inclusive, split
//!   on the single `-`: START and END may use `+` but not subtraction, so
//!   `2G-4K` cannot appear inside a range (write `0x7ffff000`). A range whose
//!   START is above its END is an error.
//! * `vaddr=` is a number, or `NAME`, `NAME+EXPR`, `NAME-EXPR`, where NAME is an
//!   identifier (`[A-Za-z_][A-Za-z0-9_]*`, so never a number). The offset is
//!   the signed left-to-right sum of the terms after NAME (`ram-4K+8K` is
//!   `ram+4K`); its magnitude must stay within 2^64-1.
//!
//! # Decisions where the contract is silent
//!
//! * `container`, if there are statements at all, must be the first one, and
//!   may appear only once. An empty trace is valid.
//! * Word lists (`flags=`, `pgsizes=`) reject duplicates; `flags=none` must be
//!   alone; numeric flags (additive, e.g. `flags=0x80000000`) are OR'ed in and
//!   must fit in 32 bits. `pgsizes=` entries must be non-zero powers of two.
//! * `format=` must be one of [`FORMATS`]; `kernel=` (additive) one of [`KERNELS`].
//! * Additive keys: `argsz=` on `map`, `unmap` and `info`; `kernel=` on
//!   `container`; `reserved=none` (an explicit empty list).
//! * `unmap all` takes no other argument (write the long form to add any).
//! * `dirty start` / `dirty stop` take no arguments.
//! * Expectations: the result word (`ok` or an errno from [`ERRNOS`]) comes
//!   first and is required, except after `check`. Items may be given once
//!   each (`leaves.D.S` once per domain and page size). `size=` is accepted
//!   only after `unmap` with result `ok` (a failed unmap reports no size);
//!   `leaves.*=`, `dmas=` and `pinned=` only after `check`; `locked=` and
//!   `avail=` after any statement. `leaves.D.S` needs a power-of-two `S`.
//! * `locked=+N` / `locked=-N` is a signed left-to-right sum (`-1-1` is -2,
//!   `-1024+1024` is 0) that must stay within `i64`.
//! * Missing required keys are reported at the verb's column.
//! * A character a reader cannot see ([`is_invisible`]: control characters, a byte-order mark
//!   after the first, zero-width and direction marks) is an error outside comments, named as
//!   `U+XXXX`. Messages quote at most [`MAX_QUOTE`] characters of the input and are at most
//!   [`MAX_MESSAGE`] bytes, so a 10 MB word costs a line of output.

use std::fmt;

use iommu::Errno;

use crate::ast::*;

/// The errno names an expectation may use.
pub const ERRNOS: &[&str] = &[
    "EINVAL",
    "EEXIST",
    "ENOSPC",
    "ENOMEM",
    "EOVERFLOW",
    "EFAULT",
    "ENOENT",
    "EBUSY",
    "EACCES",
    "ENODEV",
    "EPERM",
    "ENOTTY",
    "ESRCH",
    "EINTR",
    "ERANGE",
    "E2BIG",
];

/// The IOMMU page-table formats `domain format=` accepts (`x86_64-3level` and `x86_64-5level`
/// are additive: the 39-bit tables of QEMU's emulated VT-d, and 57-bit five-level tables).
pub const FORMATS: &[&str] = &[
    "x86_64",
    "x86_64-3level",
    "x86_64-5level",
    "arm64-4k",
    "arm64-16k",
    "arm64-64k",
    "mock",
];

/// The kernel versions `container kernel=` accepts (additive).
pub const KERNELS: &[&str] = &["7.2", "6.12", "6.1", "3.11"];

/// `VFIO_DMA_MAP_FLAG_READ`
pub const MAP_READ: u32 = 1;
/// `VFIO_DMA_MAP_FLAG_WRITE`
pub const MAP_WRITE: u32 = 2;
/// `VFIO_DMA_MAP_FLAG_VADDR`
pub const MAP_VADDR: u32 = 4;
/// `VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP`
pub const UNMAP_DIRTY: u32 = 1;
/// `VFIO_DMA_UNMAP_FLAG_ALL`
pub const UNMAP_ALL: u32 = 2;
/// `VFIO_DMA_UNMAP_FLAG_VADDR`
pub const UNMAP_VADDR: u32 = 4;

const MAP_FLAGS: &[(&str, u32)] = &[
    ("read", MAP_READ),
    ("write", MAP_WRITE),
    ("vaddr", MAP_VADDR),
];
const UNMAP_FLAGS: &[(&str, u32)] = &[
    ("all", UNMAP_ALL),
    ("vaddr", UNMAP_VADDR),
    ("dirty", UNMAP_DIRTY),
];

/// A malformed trace: where, and what to write instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters, of the offending character or word.
    pub col: usize,
    /// What is wrong and what to write instead.
    pub msg: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.col, self.msg)
    }
}

impl std::error::Error for ParseError {}

impl ParseError {
    /// The offending source line with a caret under the column, for people:
    ///
    /// ```text
    ///   4 | map vaddr=ram iova=1G sise=4M
    ///     |                       ^
    /// ```
    ///
    /// Invisible characters are shown as `<U+XXXX>`, and a line longer than 100 characters is
    /// shown as the 100 around the column, cut ends marked `…`.
    pub fn snippet(&self, src: &str) -> String {
        const WIDTH: usize = 100;
        let src = src.strip_prefix('\u{feff}').unwrap_or(src);
        let text = src.lines().nth(self.line.saturating_sub(1)).unwrap_or("");
        let num = self.line.to_string();
        let col = self.col.saturating_sub(1);
        let len = text.chars().count();
        let (from, to) = if len <= WIDTH {
            (0, len)
        } else {
            let to = (col.saturating_sub(WIDTH / 2) + WIDTH).min(len);
            (to - WIDTH, to)
        };
        let (mut line, mut pad) = (String::new(), String::new());
        if from > 0 {
            line.push('…');
            pad.push(' ');
        }
        for (i, c) in text.chars().enumerate().skip(from).take(to - from) {
            let piece = if is_invisible(c) {
                format!("<U+{:04X}>", u32::from(c))
            } else {
                c.to_string()
            };
            if i < col {
                for p in piece.chars() {
                    pad.push(if p == '\t' { '\t' } else { ' ' });
                }
            }
            line.push_str(&piece);
        }
        if to < len {
            line.push('…');
        }
        format!(
            "{num} | {line}\n{blank} | {pad}^",
            blank = " ".repeat(num.len())
        )
    }
}

/// Parses a whole trace. The first error wins; on error nothing is returned.
pub fn parse(src: &str) -> Result<Trace, ParseError> {
    let stmts = statements(src).collect::<Result<Vec<Stmt>, ParseError>>()?;
    Ok(Trace { stmts })
}

/// The statements of a trace one at a time, as [`parse`] reads them: a caller that checks
/// the whole trace first and then replays it with a second pass keeps no statement alive, so
/// its memory does not grow with the trace. After an error the iterator ends.
pub fn statements(src: &str) -> Statements<'_> {
    let src = src.strip_prefix('\u{feff}').unwrap_or(src);
    Statements {
        lines: src.lines().enumerate(),
        first: true,
        container_line: None,
        failed: false,
    }
}

/// The iterator of [`statements`].
pub struct Statements<'a> {
    lines: std::iter::Enumerate<std::str::Lines<'a>>,
    first: bool,
    container_line: Option<usize>,
    failed: bool,
}

impl Iterator for Statements<'_> {
    type Item = Result<Stmt, ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        for (i, raw) in self.lines.by_ref() {
            let line = i + 1;
            let code = match raw.find('#') {
                Some(p) => &raw[..p],
                None => raw,
            };
            if code.trim().is_empty() {
                continue;
            }
            let order = Order {
                first: self.first,
                container_line: self.container_line,
            };
            let parsed = invisible(code)
                .and_then(|()| parse_line(code, order))
                .map_err(|e| ParseError {
                    line,
                    col: raw[..e.off.min(raw.len())].chars().count() + 1,
                    msg: bounded(e.msg),
                });
            let (kind, expect) = match parsed {
                Ok(p) => p,
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            };
            if matches!(kind, StmtKind::Container { .. }) {
                self.container_line = Some(line);
            }
            self.first = false;
            return Some(Ok(Stmt {
                line,
                text: code.trim().to_string(),
                kind,
                expect,
            }));
        }
        None
    }
}

/// Longest piece of the input a message quotes; longer words are cut (see [`shown`]).
pub const MAX_QUOTE: usize = 64;

/// Whether `c` is a character a reader cannot see and that is not whitespace: control
/// characters (NUL, ESC, ...), the byte-order mark U+FEFF, zero-width and direction marks.
pub fn is_invisible(c: char) -> bool {
    !c.is_whitespace()
        && (c.is_control()
            || matches!(
                c,
                '\u{00ad}'
                    | '\u{034f}'
                    | '\u{061c}'
                    | '\u{115f}'
                    | '\u{1160}'
                    | '\u{17b4}'
                    | '\u{17b5}'
                    | '\u{180e}'
                    | '\u{200b}'..='\u{200f}'
                    | '\u{202a}'..='\u{202e}'
                    | '\u{2060}'..='\u{206f}'
                    | '\u{3164}'
                    | '\u{fe00}'..='\u{fe0f}'
                    | '\u{feff}'
                    | '\u{ffa0}'
                    | '\u{fff0}'..='\u{fff8}'
            ))
}

/// `text` as a message quotes it: invisible characters (see [`is_invisible`]) written as
/// `<U+XXXX>`, and at most [`MAX_QUOTE`] characters, a longer text cut with `…` and its length.
pub fn shown(text: &str) -> String {
    let mut out = String::new();
    for (n, c) in text.chars().enumerate() {
        if n == MAX_QUOTE {
            out.push_str(&format!("… ({} bytes)", text.len()));
            break;
        }
        if is_invisible(c) {
            out.push_str(&format!("<U+{:04X}>", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// The name of an invisible character, for the message that points at it.
fn invisible_name(c: char) -> &'static str {
    match c {
        '\0' => "a NUL byte",
        '\u{feff}' => "a byte-order mark (only one, at the very start of the file, is allowed)",
        '\u{200b}' => "a zero-width space",
        '\u{00ad}' => "a soft hyphen",
        '\u{1b}' => "an escape character",
        c if c.is_control() => "a control character",
        _ => "an invisible formatting character",
    }
}

/// Refuses a statement with a character a reader cannot see: the word around it would be
/// echoed as if it were fine (`unknown statement `check``).
fn invisible(code: &str) -> R<()> {
    match code.char_indices().find(|&(_, c)| is_invisible(c)) {
        None => Ok(()),
        Some((off, c)) => perr(
            off,
            format!(
                "invisible character U+{:04X} ({}) in the statement: delete it",
                u32::from(c),
                invisible_name(c)
            ),
        ),
    }
}

/// Evaluates a number expression (`4096`, `0x1000`, `2M`, `1G+4K`, `2G-4K`).
/// The error says what is wrong, without a position.
pub fn parse_number(s: &str) -> Result<u64, String> {
    eval_unsigned(s).map_err(|(_, msg)| bounded(msg))
}

// ---------------------------------------------------------------------------
// Internals. Offsets are byte offsets into the line; `parse` turns them into
// character columns.

struct PErr {
    off: usize,
    msg: String,
}

type R<T> = Result<T, PErr>;

fn perr<T>(off: usize, msg: impl Into<String>) -> R<T> {
    Err(PErr {
        off,
        msg: msg.into(),
    })
}

/// Longest message the parser gives (quotes longer than [`MAX_QUOTE`] are cut first).
pub const MAX_MESSAGE: usize = 1024;

/// `msg` with every backticked quote longer than [`MAX_QUOTE`] characters cut (see [`shown`]),
/// and the whole cut to [`MAX_MESSAGE`] bytes if it is still longer: a 10 MB word is quoted by
/// its first characters and its length, never whole.
fn bounded(msg: String) -> String {
    if msg.len() <= MAX_MESSAGE && !msg.split('`').any(|q| q.chars().nth(MAX_QUOTE).is_some()) {
        return msg;
    }
    let mut out = String::new();
    for (i, part) in msg.split('`').enumerate() {
        if i > 0 {
            out.push('`');
        }
        if i % 2 == 1 {
            out.push_str(&shown(part));
        } else {
            out.push_str(part);
        }
    }
    if out.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE - 3;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push('…');
    }
    out
}

#[derive(Clone, Copy)]
struct Tok<'a> {
    s: &'a str,
    off: usize,
}

struct Kv<'a> {
    key: &'a str,
    koff: usize,
    val: &'a str,
    voff: usize,
}

#[derive(Clone, Copy)]
struct Order {
    first: bool,
    container_line: Option<usize>,
}

/// A `key=FORM` a verb accepts; FORM is shown in messages.
type Key = (&'static str, &'static str);

const VERBS: &[&str] = &[
    "container",
    "domain",
    "detach",
    "mmap",
    "munmap",
    "map",
    "unmap",
    "info",
    "dirty",
    "check",
    "pin",
    "unpin",
    "dma_rw",
];

const CONTAINER_KEYS: &[Key] = &[
    ("dma_entry_limit", "N"),
    ("memlock", "BYTES|unlimited"),
    ("cap_ipc_lock", "yes|no"),
    ("kernel", "7.2|6.12|6.1|3.11"),
];
const DOMAIN_KEYS: &[Key] = &[
    ("format", "F"),
    ("pgsizes", "S,..."),
    ("aperture", "START-END"),
    ("reserved", "START-END,..."),
];
const MMAP_KEYS: &[Key] = &[
    ("size", "BYTES"),
    ("backing", "B"),
    ("layout", "L"),
    ("seed", "N"),
    ("prot", "rw|r"),
    ("at", "VADDR"),
    ("phys", "PADDR"),
];
const MUNMAP_KEYS: &[Key] = &[("offset", "BYTES"), ("size", "BYTES")];
const MAP_KEYS: &[Key] = &[
    ("vaddr", "V"),
    ("iova", "IOVA"),
    ("size", "BYTES"),
    ("flags", "read,write,vaddr"),
    ("argsz", "N"),
];
const UNMAP_KEYS: &[Key] = &[
    ("iova", "IOVA"),
    ("size", "BYTES"),
    ("flags", "all,vaddr,dirty"),
    ("argsz", "N"),
];
const INFO_KEYS: &[Key] = &[("argsz", "N")];
const DIRTY_KEYS: &[Key] = &[("iova", "IOVA"), ("size", "BYTES"), ("pgsize", "BYTES")];
const PIN_KEYS: &[Key] = &[("iova", "IOVA"), ("npage", "N"), ("group", "NAME")];
const UNPIN_KEYS: &[Key] = &[("iova", "IOVA"), ("npage", "N")];
const DMA_RW_KEYS: &[Key] = &[("iova", "IOVA"), ("size", "BYTES"), ("write", "yes|no")];

const ITEMS: &str = "size=, locked=, avail=, leaves.DOMAIN.SIZE=, dmas= or pinned=";

fn tokenize(s: &str, base: usize) -> Vec<Tok<'_>> {
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    for (i, c) in s.char_indices() {
        if c.is_whitespace() {
            if let Some(st) = start.take() {
                out.push(Tok {
                    s: &s[st..i],
                    off: base + st,
                });
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(st) = start {
        out.push(Tok {
            s: &s[st..],
            off: base + st,
        });
    }
    out
}

fn parse_line(code: &str, order: Order) -> R<(StmtKind, Option<Expect>)> {
    let (stmt_part, arrow) = match code.find("=>") {
        Some(p) => (&code[..p], Some(p)),
        None => (code, None),
    };
    let words = tokenize(stmt_part, 0);
    let Some(&verb) = words.first() else {
        return perr(
            arrow.unwrap_or(0),
            "an expectation needs a statement before `=>`",
        );
    };
    if !VERBS.contains(&verb.s) {
        let mut msg = format!("unknown statement `{}`", verb.s);
        if let Some(s) = suggest(verb.s, VERBS.iter().copied()) {
            msg += &format!(": did you mean `{s}`?");
        }
        msg += &format!(" (statements: {})", VERBS.join(", "));
        return perr(verb.off, msg);
    }
    if verb.s == "container" {
        if let Some(l) = order.container_line {
            return perr(
                verb.off,
                format!("a trace has only one `container` (it is opened on line {l})"),
            );
        }
        if !order.first {
            return perr(verb.off, "`container` must be the first statement");
        }
    } else if order.first {
        return perr(
            verb.off,
            format!(
                "the first statement must open the container (e.g. `container type1v2`), not `{}`",
                verb.s
            ),
        );
    }
    let args = &words[1..];
    let kind = match verb.s {
        "container" => container(verb, args)?,
        "domain" => domain(verb, args)?,
        "detach" => detach(verb, args)?,
        "mmap" => mmap(verb, args)?,
        "munmap" => munmap(verb, args)?,
        "map" => map(verb, args)?,
        "unmap" => unmap(verb, args)?,
        "info" => info(verb, args)?,
        "dirty" => dirty(verb, args)?,
        "check" => no_args(verb, args).map(|()| StmtKind::Check)?,
        "pin" | "unpin" => pin(verb, args)?,
        "dma_rw" => dma_rw(verb, args)?,
        _ => unreachable!("verb list and dispatch disagree"),
    };
    let expect = match arrow {
        Some(p) => Some(expectation(&kind, code, p)?),
        None => None,
    };
    Ok((kind, expect))
}

// ---------------------------------------------------------------------------
// Arguments

/// Splits arguments into positional words and `key=value` pairs, rejecting
/// unknown, duplicate and empty keys (left to right).
fn split_args<'a>(
    verb: Tok<'_>,
    words: &[Tok<'a>],
    keys: &[Key],
) -> R<(Vec<Tok<'a>>, Vec<Kv<'a>>)> {
    let mut pos = Vec::new();
    let mut kvs: Vec<Kv<'a>> = Vec::new();
    for w in words {
        let Some(eq) = w.s.find('=') else {
            pos.push(*w);
            continue;
        };
        let key = &w.s[..eq];
        let val = &w.s[eq + 1..];
        if key.is_empty() {
            return perr(w.off, format!("missing key before `=` in `{}`", w.s));
        }
        let Some(&(_, form)) = keys.iter().find(|(k, _)| *k == key) else {
            return perr(w.off, unknown_key(verb.s, key, keys));
        };
        if kvs.iter().any(|kv| kv.key == key) {
            return perr(w.off, format!("`{key}=` is given twice: keep one"));
        }
        if val.is_empty() {
            return perr(
                w.off,
                format!("`{key}=` needs a value: write `{key}={form}`"),
            );
        }
        kvs.push(Kv {
            key,
            koff: w.off,
            val,
            voff: w.off + eq + 1,
        });
    }
    Ok((pos, kvs))
}

fn usage(keys: &[Key]) -> String {
    keys.iter()
        .map(|(k, f)| format!("{k}={f}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn unknown_key(verb: &str, key: &str, keys: &[Key]) -> String {
    if keys.is_empty() {
        return format!("`{verb}` takes no key=value arguments (found `{key}=`)");
    }
    let mut msg = format!("unknown key `{key}=` for `{verb}`");
    if let Some(s) = suggest(key, keys.iter().map(|(k, _)| *k)) {
        msg += &format!(": did you mean `{s}=`?");
    }
    msg += &format!(" (`{verb}` takes {})", usage(keys));
    msg
}

/// The error for a positional word a verb does not take.
fn extra_word<T>(verb: &str, w: Tok<'_>, keys: &[Key], what: &str) -> R<T> {
    if let Some(&(k, f)) = keys.iter().find(|(k, _)| *k == w.s) {
        return perr(w.off, format!("`{k}` needs a value: write `{k}={f}`"));
    }
    if w.s.starts_with(['+', '-']) || w.s.ends_with(['+', '-']) {
        return perr(
            w.off,
            format!(
                "unexpected word `{}`: a number may not contain spaces (write `1G+4K`)",
                w.s
            ),
        );
    }
    perr(w.off, format!("unexpected word `{}`: `{verb}` {what}", w.s))
}

fn no_args(verb: Tok<'_>, args: &[Tok<'_>]) -> R<()> {
    let (pos, _) = split_args(verb, args, &[])?;
    if let Some(w) = pos.first() {
        return extra_word(verb.s, *w, &[], "takes no arguments");
    }
    Ok(())
}

fn missing<T>(verb: Tok<'_>, what: &[&str]) -> R<T> {
    let list = what
        .iter()
        .map(|w| format!("`{w}`"))
        .collect::<Vec<_>>()
        .join(" and ");
    perr(verb.off, format!("`{}` needs {list}", verb.s))
}

/// Checks a required-key list, naming every absent key.
fn require(verb: Tok<'_>, keys: &[Key], present: &[bool]) -> R<()> {
    let absent: Vec<String> = keys
        .iter()
        .zip(present)
        .filter(|(_, p)| !**p)
        .map(|((k, f), _)| format!("{k}={f}"))
        .collect();
    if absent.is_empty() {
        return Ok(());
    }
    let refs: Vec<&str> = absent.iter().map(String::as_str).collect();
    missing(verb, &refs)
}

/// Exactly one positional NAME.
fn one_name<'a>(verb: Tok<'_>, pos: &[Tok<'a>], keys: &[Key]) -> R<Tok<'a>> {
    let Some(&name) = pos.first() else {
        return missing(verb, &["a NAME"]);
    };
    if let Some(&w) = pos.get(1) {
        return extra_word(verb.s, w, keys, "takes one NAME");
    }
    if keys.iter().any(|(k, _)| *k == name.s) {
        return extra_word(verb.s, name, keys, "");
    }
    ident(name.s, name.off)?;
    Ok(name)
}

fn ident(s: &str, off: usize) -> R<()> {
    for (i, c) in s.char_indices() {
        let ok = c == '_' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit());
        if !ok {
            return perr(
                off + i,
                format!(
                    "`{s}` is not a valid name: use letters, digits and `_`, not starting with a digit"
                ),
            );
        }
    }
    Ok(())
}

fn container(verb: Tok<'_>, args: &[Tok<'_>]) -> R<StmtKind> {
    let (pos, kvs) = split_args(verb, args, CONTAINER_KEYS)?;
    let mut v2 = true;
    if let Some(w) = pos.first() {
        match w.s {
            "type1" => v2 = false,
            "type1v2" => v2 = true,
            _ if CONTAINER_KEYS.iter().any(|(k, _)| *k == w.s) => {
                return extra_word(verb.s, *w, CONTAINER_KEYS, "")
            }
            _ => {
                return perr(
                    w.off,
                    format!("unknown container type `{}`: use type1 or type1v2", w.s),
                )
            }
        }
    }
    if let Some(w) = pos.get(1) {
        return extra_word(
            verb.s,
            *w,
            CONTAINER_KEYS,
            "takes one type word (type1 or type1v2)",
        );
    }
    let (mut dma_entry_limit, mut memlock, mut cap_ipc_lock, mut kernel) =
        (None, None, false, None);
    for kv in &kvs {
        match kv.key {
            "dma_entry_limit" => dma_entry_limit = Some(u32_val(kv)?),
            "memlock" => {
                memlock = Some(if kv.val == "unlimited" {
                    Memlock::Unlimited
                } else if kv.val.starts_with(|c: char| c.is_ascii_digit()) {
                    Memlock::Bytes(number(kv.val, kv.voff)?)
                } else {
                    return perr(
                        kv.voff,
                        format!(
                            "bad memlock `{}`: write a size in bytes (e.g. 4M) or `unlimited`",
                            kv.val
                        ),
                    );
                })
            }
            "cap_ipc_lock" => {
                cap_ipc_lock = match kv.val {
                    "yes" => true,
                    "no" => false,
                    v => return perr(kv.voff, format!("bad cap_ipc_lock `{v}`: use yes or no")),
                }
            }
            "kernel" => kernel = Some(one_of(kv, "kernel", KERNELS)?.to_string()),
            _ => unreachable!(),
        }
    }
    Ok(StmtKind::Container {
        v2,
        dma_entry_limit,
        memlock,
        cap_ipc_lock,
        kernel,
    })
}

fn domain(verb: Tok<'_>, args: &[Tok<'_>]) -> R<StmtKind> {
    let (pos, kvs) = split_args(verb, args, DOMAIN_KEYS)?;
    let name = one_name(verb, &pos, DOMAIN_KEYS)?;
    let (mut format, mut pgsizes, mut aperture, mut reserved) = (None, None, None, None);
    for kv in &kvs {
        match kv.key {
            "format" => format = Some(one_of(kv, "format", FORMATS)?.to_string()),
            "pgsizes" => {
                let mut v: Vec<u64> = Vec::new();
                for (s, off) in comma_list(kv)? {
                    let n = number(s, off)?;
                    if !n.is_power_of_two() {
                        return perr(
                            off,
                            format!("page size `{s}` is not a power of two (e.g. 4K, 2M, 1G)"),
                        );
                    }
                    if v.contains(&n) {
                        return perr(off, format!("page size `{s}` is listed twice"));
                    }
                    v.push(n);
                }
                pgsizes = Some(v);
            }
            "aperture" => aperture = Some(range(kv.val, kv.voff)?),
            "reserved" => {
                reserved = Some(if kv.val == "none" {
                    Vec::new()
                } else {
                    comma_list(kv)?
                        .into_iter()
                        .map(|(s, off)| range(s, off))
                        .collect::<R<Vec<_>>>()?
                })
            }
            _ => unreachable!(),
        }
    }
    Ok(StmtKind::Domain {
        name: name.s.to_string(),
        format,
        pgsizes,
        aperture,
        reserved,
    })
}

fn detach(verb: Tok<'_>, args: &[Tok<'_>]) -> R<StmtKind> {
    let (pos, _) = split_args(verb, args, &[])?;
    let name = one_name(verb, &pos, &[])?;
    Ok(StmtKind::Detach {
        name: name.s.to_string(),
    })
}

fn mmap(verb: Tok<'_>, args: &[Tok<'_>]) -> R<StmtKind> {
    let (pos, kvs) = split_args(verb, args, MMAP_KEYS)?;
    let name = one_name(verb, &pos, MMAP_KEYS)?;
    let mut size = None;
    let mut backing = Backing::default();
    let mut layout = Layout::default();
    let mut seed = 0;
    let mut prot_write = true;
    let (mut at, mut phys) = (None, None);
    for kv in &kvs {
        match kv.key {
            "size" => size = Some(number(kv.val, kv.voff)?),
            "backing" => {
                backing = match kv.val {
                    "4k" => Backing::Page4k,
                    "thp" => Backing::Thp,
                    "hugetlb-2m" => Backing::Hugetlb2m,
                    "hugetlb-1g" => Backing::Hugetlb1g,
                    "pfnmap" => Backing::Pfnmap,
                    v => {
                        return perr(
                            kv.voff,
                            format!(
                            "unknown backing `{v}`: use 4k, thp, hugetlb-2m, hugetlb-1g or pfnmap"
                        ),
                        )
                    }
                }
            }
            "layout" => {
                layout = match kv.val {
                    "contiguous" => Layout::Contiguous,
                    "scattered" => Layout::Scattered,
                    v => {
                        return perr(
                            kv.voff,
                            format!("unknown layout `{v}`: use contiguous or scattered"),
                        )
                    }
                }
            }
            "seed" => seed = number(kv.val, kv.voff)?,
            "prot" => {
                prot_write = match kv.val {
                    "rw" => true,
                    "r" => false,
                    v => return perr(kv.voff, format!("unknown prot `{v}`: use rw or r")),
                }
            }
            "at" => at = Some(number(kv.val, kv.voff)?),
            "phys" => phys = Some(number(kv.val, kv.voff)?),
            _ => unreachable!(),
        }
    }
    require(verb, &MMAP_KEYS[..1], &[size.is_some()])?;
    Ok(StmtKind::Mmap {
        name: name.s.to_string(),
        size: size.unwrap_or_default(),
        backing,
        layout,
        seed,
        prot_write,
        at,
        phys,
    })
}

fn munmap(verb: Tok<'_>, args: &[Tok<'_>]) -> R<StmtKind> {
    let (pos, kvs) = split_args(verb, args, MUNMAP_KEYS)?;
    let name = one_name(verb, &pos, MUNMAP_KEYS)?;
    let (mut offset, mut size) = (None, None);
    for kv in &kvs {
        let n = number(kv.val, kv.voff)?;
        match kv.key {
            "offset" => offset = Some(n),
            "size" => size = Some(n),
            _ => unreachable!(),
        }
    }
    let range = match (offset, size) {
        (Some(o), Some(s)) => Some((o, s)),
        (None, None) => None,
        _ => {
            return perr(
                kvs[0].koff,
                "`munmap` takes both `offset=` and `size=` (a part), or neither (everything)",
            )
        }
    };
    Ok(StmtKind::Munmap {
        name: name.s.to_string(),
        range,
    })
}

fn map(verb: Tok<'_>, args: &[Tok<'_>]) -> R<StmtKind> {
    let (pos, kvs) = split_args(verb, args, MAP_KEYS)?;
    if let Some(w) = pos.first() {
        return extra_word(verb.s, *w, MAP_KEYS, &format!("takes {}", usage(MAP_KEYS)));
    }
    let (mut vaddr, mut iova, mut size, mut argsz) = (None, None, None, None);
    let mut flags = MAP_READ | MAP_WRITE;
    for kv in &kvs {
        match kv.key {
            "vaddr" => vaddr = Some(vaddr_ref(kv.val, kv.voff)?),
            "iova" => iova = Some(number(kv.val, kv.voff)?),
            "size" => size = Some(number(kv.val, kv.voff)?),
            "flags" => flags = flag_list(kv, MAP_FLAGS)?,
            "argsz" => argsz = Some(u32_val(kv)?),
            _ => unreachable!(),
        }
    }
    require(
        verb,
        &MAP_KEYS[..3],
        &[vaddr.is_some(), iova.is_some(), size.is_some()],
    )?;
    Ok(StmtKind::Map {
        vaddr: vaddr.unwrap_or(VaddrRef::Abs(0)),
        iova: iova.unwrap_or_default(),
        size: size.unwrap_or_default(),
        flags,
        argsz,
    })
}

fn unmap(verb: Tok<'_>, args: &[Tok<'_>]) -> R<StmtKind> {
    let (pos, kvs) = split_args(verb, args, UNMAP_KEYS)?;
    if let Some(first) = pos.first() {
        if first.s != "all" {
            return extra_word(
                verb.s,
                *first,
                UNMAP_KEYS,
                &format!("takes `all` or {}", usage(UNMAP_KEYS)),
            );
        }
        if let Some(other) = args.iter().find(|w| w.off != first.off) {
            return perr(
                other.off,
                "`unmap all` takes no other argument: it means `unmap iova=0 size=0 flags=all`, \
                 write that form to add arguments",
            );
        }
        return Ok(StmtKind::Unmap {
            iova: 0,
            size: 0,
            flags: UNMAP_ALL,
            argsz: None,
        });
    }
    let (mut iova, mut size, mut argsz) = (None, None, None);
    let mut flags = 0;
    for kv in &kvs {
        match kv.key {
            "iova" => iova = Some(number(kv.val, kv.voff)?),
            "size" => size = Some(number(kv.val, kv.voff)?),
            "flags" => flags = flag_list(kv, UNMAP_FLAGS)?,
            "argsz" => argsz = Some(u32_val(kv)?),
            _ => unreachable!(),
        }
    }
    require(verb, &UNMAP_KEYS[..2], &[iova.is_some(), size.is_some()])?;
    Ok(StmtKind::Unmap {
        iova: iova.unwrap_or_default(),
        size: size.unwrap_or_default(),
        flags,
        argsz,
    })
}

fn info(verb: Tok<'_>, args: &[Tok<'_>]) -> R<StmtKind> {
    let (pos, kvs) = split_args(verb, args, INFO_KEYS)?;
    if let Some(w) = pos.first() {
        return extra_word(verb.s, *w, INFO_KEYS, "takes only argsz=N");
    }
    let argsz = match kvs.first() {
        Some(kv) => Some(u32_val(kv)?),
        None => None,
    };
    Ok(StmtKind::Info { argsz })
}

/// `pin iova=IOVA npage=N [group=NAME]` and `unpin iova=IOVA npage=N`.
fn pin(verb: Tok<'_>, args: &[Tok<'_>]) -> R<StmtKind> {
    let keys = if verb.s == "pin" {
        PIN_KEYS
    } else {
        UNPIN_KEYS
    };
    let (pos, kvs) = split_args(verb, args, keys)?;
    if let Some(w) = pos.first() {
        return extra_word(verb.s, *w, keys, "takes only key=value arguments");
    }
    let (mut iova, mut npage, mut group) = (None, None, None);
    for kv in &kvs {
        match kv.key {
            "iova" => iova = Some(number(kv.val, kv.voff)?),
            "npage" => npage = Some(number(kv.val, kv.voff)?),
            "group" => {
                ident(kv.val, kv.voff)?;
                group = Some(kv.val.to_string());
            }
            _ => unreachable!(),
        }
    }
    require(verb, &keys[..2], &[iova.is_some(), npage.is_some()])?;
    let (iova, npage) = (iova.unwrap_or_default(), npage.unwrap_or_default());
    Ok(if verb.s == "pin" {
        StmtKind::Pin { iova, npage, group }
    } else {
        StmtKind::Unpin { iova, npage }
    })
}

/// `dma_rw iova=IOVA size=BYTES write=yes|no`.
fn dma_rw(verb: Tok<'_>, args: &[Tok<'_>]) -> R<StmtKind> {
    let (pos, kvs) = split_args(verb, args, DMA_RW_KEYS)?;
    if let Some(w) = pos.first() {
        return extra_word(verb.s, *w, DMA_RW_KEYS, "takes only key=value arguments");
    }
    let (mut iova, mut size, mut write) = (None, None, None);
    for kv in &kvs {
        match kv.key {
            "iova" => iova = Some(number(kv.val, kv.voff)?),
            "size" => size = Some(number(kv.val, kv.voff)?),
            "write" => {
                write = Some(match kv.val {
                    "yes" => true,
                    "no" => false,
                    v => return perr(kv.voff, format!("bad write `{v}`: use yes or no")),
                })
            }
            _ => unreachable!(),
        }
    }
    require(
        verb,
        DMA_RW_KEYS,
        &[iova.is_some(), size.is_some(), write.is_some()],
    )?;
    Ok(StmtKind::DmaRw {
        iova: iova.unwrap_or_default(),
        size: size.unwrap_or_default(),
        write: write.unwrap_or_default(),
    })
}

fn dirty(verb: Tok<'_>, args: &[Tok<'_>]) -> R<StmtKind> {
    let (pos, kvs) = split_args(verb, args, DIRTY_KEYS)?;
    let Some(&sub) = pos.first() else {
        return perr(
            verb.off,
            "`dirty` needs `start`, `stop` or `get iova=IOVA size=BYTES pgsize=BYTES`",
        );
    };
    let kind = match sub.s {
        "start" => StmtKind::DirtyStart,
        "stop" => StmtKind::DirtyStop,
        "get" => {
            let (mut iova, mut size, mut pgsize) = (None, None, None);
            for kv in &kvs {
                let n = number(kv.val, kv.voff)?;
                match kv.key {
                    "iova" => iova = Some(n),
                    "size" => size = Some(n),
                    "pgsize" => pgsize = Some(n),
                    _ => unreachable!(),
                }
            }
            if let Some(w) = pos.get(1) {
                return extra_word(
                    "dirty get",
                    *w,
                    DIRTY_KEYS,
                    "takes iova=, size= and pgsize=",
                );
            }
            let v = Tok {
                s: "dirty get",
                off: verb.off,
            };
            require(
                v,
                DIRTY_KEYS,
                &[iova.is_some(), size.is_some(), pgsize.is_some()],
            )?;
            return Ok(StmtKind::DirtyGet {
                iova: iova.unwrap_or_default(),
                size: size.unwrap_or_default(),
                pgsize: pgsize.unwrap_or_default(),
            });
        }
        s => {
            let mut msg = format!("unknown `dirty` operation `{s}`");
            if let Some(g) = suggest(s, ["start", "stop", "get"].into_iter()) {
                msg += &format!(": did you mean `{g}`?");
            }
            msg += " (use start, stop or get)";
            return perr(sub.off, msg);
        }
    };
    // start / stop
    if let Some(w) = args.iter().find(|w| w.off != sub.off) {
        return perr(w.off, format!("`dirty {}` takes no arguments", sub.s));
    }
    Ok(kind)
}

// ---------------------------------------------------------------------------
// Values

fn one_of<'a>(kv: &Kv<'a>, what: &str, allowed: &[&str]) -> R<&'a str> {
    if allowed.contains(&kv.val) {
        return Ok(kv.val);
    }
    let list = match allowed.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => allowed.join(""),
    };
    let mut msg = format!("unknown {what} `{}`", kv.val);
    if let Some(s) = suggest(kv.val, allowed.iter().copied()) {
        msg += &format!(": did you mean `{s}`?");
    }
    msg += &format!(" (use {list})");
    perr(kv.voff, msg)
}

fn u32_val(kv: &Kv<'_>) -> R<u32> {
    let n = number(kv.val, kv.voff)?;
    u32::try_from(n).or_else(|_| {
        perr(
            kv.voff,
            format!(
                "`{}={}` does not fit in 32 bits (at most 4294967295)",
                kv.key, kv.val
            ),
        )
    })
}

/// Splits a comma list, rejecting empty elements; yields (element, offset).
fn comma_list<'a>(kv: &Kv<'a>) -> R<Vec<(&'a str, usize)>> {
    let mut out = Vec::new();
    let mut off = kv.voff;
    for part in kv.val.split(',') {
        if part.is_empty() {
            return perr(off, format!("empty element in the `{}=` list", kv.key));
        }
        out.push((part, off));
        off += part.len() + 1;
    }
    Ok(out)
}

fn flag_list(kv: &Kv<'_>, names: &[(&str, u32)]) -> R<u32> {
    let mut flags = 0u32;
    let mut seen: Vec<&str> = Vec::new();
    let mut none_at = None;
    let parts = comma_list(kv)?;
    for &(s, off) in &parts {
        if s == "none" {
            none_at = Some(off);
            continue;
        }
        if s.starts_with(|c: char| c.is_ascii_digit()) {
            let n = number(s, off)?;
            let n = u32::try_from(n)
                .or_else(|_| perr(off, format!("flag value `{s}` does not fit in 32 bits")))?;
            flags |= n;
            continue;
        }
        let Some(&(_, bit)) = names.iter().find(|(n, _)| *n == s) else {
            let list: Vec<&str> = names.iter().map(|(n, _)| *n).collect();
            let mut msg = format!("unknown flag `{s}`");
            if let Some(g) = suggest(s, list.iter().copied()) {
                msg += &format!(": did you mean `{g}`?");
            }
            msg += &format!(
                " (use {}, none, or a number, joined by `,`)",
                list.join(", ")
            );
            return perr(off, msg);
        };
        if seen.contains(&s) {
            return perr(off, format!("flag `{s}` is listed twice"));
        }
        seen.push(s);
        flags |= bit;
    }
    if let Some(off) = none_at {
        if parts.len() > 1 {
            return perr(
                off,
                "`none` means no flags at all and cannot be combined with others",
            );
        }
    }
    Ok(flags)
}

/// `START-END`, END inclusive; START and END may not use subtraction.
fn range(s: &str, off: usize) -> R<(u64, u64)> {
    let dashes: Vec<usize> = s.match_indices('-').map(|(i, _)| i).collect();
    match dashes.as_slice() {
        [] => perr(
            off,
            format!("expected a range START-END (END inclusive, e.g. 0xfee00000-0xfeefffff), found `{s}`"),
        ),
        [d] => {
            let start = number(&s[..*d], off)?;
            let end = number(&s[d + 1..], off + d + 1)?;
            if start > end {
                return perr(
                    off,
                    format!("range `{s}` starts above its end (END is inclusive)"),
                );
            }
            Ok((start, end))
        }
        [_, d2, ..] => perr(
            off + d2,
            format!(
                "a range takes exactly one `-` (START-END): START and END cannot use \
                 subtraction, so write `0x7ffff000` rather than `2G-4K` in `{s}`"
            ),
        ),
    }
}

fn vaddr_ref(s: &str, off: usize) -> R<VaddrRef> {
    let first = s.chars().next().unwrap_or(' ');
    if first.is_ascii_digit() {
        return Ok(VaddrRef::Abs(number(s, off)?));
    }
    if !(first == '_' || first.is_ascii_alphabetic()) {
        return perr(
            off,
            format!(
                "expected an address (e.g. 0x7f0000000000) or an mmap name (e.g. ram, ram+2M), found `{s}`"
            ),
        );
    }
    let end = s
        .find(|c: char| !(c == '_' || c.is_ascii_alphanumeric()))
        .unwrap_or(s.len());
    let (name, rest) = s.split_at(end);
    if rest.is_empty() {
        return Ok(VaddrRef::Named {
            name: name.to_string(),
            offset: 0,
        });
    }
    if !rest.starts_with(['+', '-']) {
        return perr(
            off + end,
            format!("expected `+` or `-` after the name `{name}` (e.g. {name}+2M), found `{rest}`"),
        );
    }
    let terms = terms(rest, true).map_err(|(o, msg)| PErr {
        off: off + end + o,
        msg,
    })?;
    let mut acc: i128 = 0;
    for (neg, v, o) in terms {
        acc += if neg { -(v as i128) } else { v as i128 };
        if acc.unsigned_abs() > u64::MAX as u128 {
            return perr(off + end + o, "the offset exceeds 2^64-1 in magnitude");
        }
    }
    Ok(VaddrRef::Named {
        name: name.to_string(),
        offset: acc,
    })
}

/// `+N` / `-N`: a signed left-to-right sum (`-1-1` is -2) that must stay
/// within `i64`.
fn delta(s: &str, off: usize) -> R<i64> {
    let terms = terms(s, true).map_err(|(o, msg)| PErr { off: off + o, msg })?;
    let mut acc: i128 = 0;
    for (neg, v, o) in terms {
        acc += if neg { -i128::from(v) } else { i128::from(v) };
        if i64::try_from(acc).is_err() {
            return perr(off + o, format!("`{s}` is out of range (-2^63 to 2^63-1)"));
        }
    }
    Ok(acc as i64)
}

fn number(s: &str, off: usize) -> R<u64> {
    eval_unsigned(s).map_err(|(o, msg)| PErr { off: off + o, msg })
}

/// A number error: byte offset into the number text, message.
type NumErr = (usize, String);

/// One term of a number expression: (subtracted?, value, byte offset).
type Term = (bool, u64, usize);

/// Evaluates `TERM([+-]TERM)*` left to right; every intermediate must stay in
/// `0..=2^64-1`. Errors carry a byte offset into `s`.
fn eval_unsigned(s: &str) -> Result<u64, NumErr> {
    let mut acc: i128 = 0;
    for (neg, v, o) in terms(s, false)? {
        acc += if neg { -(v as i128) } else { v as i128 };
        if acc < 0 {
            return Err((o, format!("`{s}` goes below 0")));
        }
        if acc > u64::MAX as i128 {
            return Err((o, format!("`{s}` exceeds 2^64-1")));
        }
    }
    Ok(acc as u64)
}

/// Splits `s` into terms: (negative?, value, offset of the term).
/// With `signed`, `s` must start with `+` or `-`.
fn terms(s: &str, signed: bool) -> Result<Vec<Term>, NumErr> {
    let mut out = Vec::new();
    let mut pos = 0;
    let mut neg = false;
    if signed {
        neg = s.starts_with('-');
        pos = 1;
    } else if s.starts_with('-') {
        return Err((0, format!("`{s}` is negative: numbers are 0 to 2^64-1")));
    } else if s.starts_with('+') {
        return Err((0, format!("expected a number before `+` in `{s}`")));
    }
    loop {
        let end = s[pos..].find(['+', '-']).map_or(s.len(), |i| pos + i);
        let t = &s[pos..end];
        if t.is_empty() {
            let msg = if pos == 0 {
                "expected a number".to_string()
            } else {
                format!("expected a number after `{}`", &s[pos - 1..pos])
            };
            return Err((pos, msg));
        }
        let v = term(t).map_err(|(o, m)| (pos + o, m))?;
        out.push((neg, v, pos));
        if end == s.len() {
            return Ok(out);
        }
        neg = s[end..].starts_with('-');
        pos = end + 1;
    }
}

/// One term: decimal with an optional K/M/G/T suffix, or `0x` hex.
fn term(t: &str) -> Result<u64, NumErr> {
    let too_big = || (0, format!("`{t}` does not fit in 64 bits (above 2^64-1)"));
    if let Some(hex) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        if hex.is_empty() {
            return Err((0, format!("missing hex digits after `{t}`")));
        }
        let mut v: u128 = 0;
        for (i, c) in hex.char_indices() {
            let Some(d) = c.to_digit(16) else {
                let msg = if matches!(c, 'K' | 'M' | 'G' | 'T') && i + 1 == hex.len() {
                    format!("a hex number takes no suffix: write `{t}` in decimal or in full hex")
                } else {
                    format!("`{c}` is not a hex digit in `{t}`")
                };
                return Err((2 + i, msg));
            };
            v = v * 16 + u128::from(d);
            if v > u128::from(u64::MAX) {
                return Err(too_big());
            }
        }
        return Ok(v as u64);
    }
    let ndig = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    if ndig == 0 {
        return Err((0, format!("expected a number, found `{t}`")));
    }
    let mut v: u128 = 0;
    for c in t[..ndig].chars() {
        v = v * 10 + u128::from(c.to_digit(10).unwrap_or(0));
        if v > u128::from(u64::MAX) {
            return Err(too_big());
        }
    }
    let suffix = &t[ndig..];
    let mult: u128 = match suffix {
        "" => 1,
        "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        "T" => 1 << 40,
        "k" | "m" | "g" | "t" => {
            return Err((
                ndig,
                format!(
                    "size suffixes are upper-case: write `{}{}`",
                    &t[..ndig],
                    suffix.to_ascii_uppercase()
                ),
            ))
        }
        _ if suffix.starts_with(['.', ',']) => {
            return Err((ndig, format!("`{t}`: only whole numbers are allowed")))
        }
        _ => {
            return Err((
                ndig,
                format!("unknown suffix `{suffix}` in `{t}`: use K, M, G or T (powers of 1024)"),
            ))
        }
    };
    let v = v * mult;
    if v > u128::from(u64::MAX) {
        return Err(too_big());
    }
    Ok(v as u64)
}

// ---------------------------------------------------------------------------
// Expectations

fn expectation(kind: &StmtKind, code: &str, arrow: usize) -> R<Expect> {
    let words = tokenize(&code[arrow + 2..], arrow + 2);
    let is_check = matches!(kind, StmtKind::Check);
    let Some(first) = words.first() else {
        let extra = if is_check {
            ", or items such as `leaves.d0.2M=1`"
        } else {
            ""
        };
        return perr(
            arrow,
            format!("nothing after `=>`: write `ok` or an errno name such as `EINVAL`{extra}"),
        );
    };
    let mut result = None;
    let mut rest = &words[..];
    if !first.s.contains('=') {
        result = Some(result_word(*first)?);
        rest = &words[1..];
    } else if first.s.starts_with('=') {
        let msg = if first.s.starts_with("=>") {
            "only one `=>` per line".to_string()
        } else {
            format!(
                "`{}` after `=>`: write `ok` or an errno name such as `EINVAL`, then items",
                first.s
            )
        };
        return perr(first.off, msg);
    } else if !is_check {
        return perr(
            first.off,
            format!(
                "missing result: write `=> ok {}` or `=> ERRNO ...` (the result comes first)",
                first.s
            ),
        );
    }
    let mut items = Vec::new();
    let mut seen: std::collections::HashSet<String> = std::collections::HashSet::new();
    for w in rest {
        if w.s.starts_with("=>") {
            return perr(w.off, "only one `=>` per line");
        }
        let Some(eq) = w.s.find('=') else {
            let msg = if w.s == "ok" || ERRNOS.contains(&w.s) {
                format!("`{}`: the result word comes first, and only once", w.s)
            } else {
                format!(
                    "unexpected word `{}` in the expectation: items are {ITEMS}",
                    w.s
                )
            };
            return perr(w.off, msg);
        };
        let (key, val) = (&w.s[..eq], &w.s[eq + 1..]);
        let voff = w.off + eq + 1;
        if val.is_empty() {
            return perr(w.off, format!("`{key}=` needs a value"));
        }
        let (item, canon) = exp_item(kind, result.as_ref(), key, val, w.off, voff)?;
        if !seen.insert(canon) {
            return perr(w.off, format!("`{key}=` is expected twice: keep one"));
        }
        items.push(item);
    }
    Ok(Expect { result, items })
}

fn result_word(w: Tok<'_>) -> R<ExpResult> {
    if w.s == "ok" {
        return Ok(ExpResult::Ok);
    }
    if let Some(e) = ERRNOS
        .contains(&w.s)
        .then(|| Errno::from_name(w.s))
        .flatten()
    {
        return Ok(ExpResult::Errno(e));
    }
    let up = w.s.to_ascii_uppercase();
    let msg = if up == "OK" {
        format!("write `ok` in lower case, not `{}`", w.s)
    } else if ERRNOS.contains(&up.as_str()) {
        format!("errno names are upper-case: write `{up}`")
    } else if w.s.starts_with('E') && w.s.chars().all(|c| c.is_ascii_uppercase()) {
        let mut m = format!("unknown errno `{}`", w.s);
        if let Some(s) = suggest(w.s, ERRNOS.iter().copied()) {
            m += &format!(": did you mean `{s}`?");
        }
        m + &format!(" (known: {})", ERRNOS.join(" "))
    } else {
        format!(
            "expected `ok` or an errno name such as `EINVAL` after `=>`, found `{}`",
            w.s
        )
    };
    perr(w.off, msg)
}

fn exp_item(
    kind: &StmtKind,
    result: Option<&ExpResult>,
    key: &str,
    val: &str,
    koff: usize,
    voff: usize,
) -> R<(ExpItem, String)> {
    let is_check = matches!(kind, StmtKind::Check);
    let check_only = |what: &str| -> R<()> {
        if is_check {
            Ok(())
        } else {
            perr(
                koff,
                format!(
                    "`{what}=` can be expected only after `check` (add a line `check => {what}=...`)"
                ),
            )
        }
    };
    let item = match key {
        "size" => {
            if !matches!(kind, StmtKind::Unmap { .. }) {
                return perr(
                    koff,
                    "`size=` expects the size an `unmap` reported, so it goes only after `unmap`",
                );
            }
            if let Some(ExpResult::Errno(e)) = result {
                return perr(
                    koff,
                    format!("a failed unmap reports no size: drop `size=` or expect `ok` instead of `{e}`"),
                );
            }
            ExpItem::Size(number(val, voff)?)
        }
        "locked" => ExpItem::Locked(if val.starts_with(['+', '-']) {
            LockedExp::Delta(delta(val, voff)?)
        } else {
            LockedExp::Abs(number(val, voff)?)
        }),
        "avail" => ExpItem::Avail(number(val, voff)?),
        "dmas" => {
            check_only("dmas")?;
            ExpItem::Dmas(number(val, voff)?)
        }
        "pinned" => {
            check_only("pinned")?;
            ExpItem::Pinned(number(val, voff)?)
        }
        _ if key.starts_with("leaves.") => {
            check_only("leaves.DOMAIN.SIZE")?;
            let rest = &key["leaves.".len()..];
            let Some(dot) = rest.find('.') else {
                return perr(
                    koff,
                    format!("write `leaves.DOMAIN.SIZE=N` (e.g. `leaves.d0.2M=1`), not `{key}=`"),
                );
            };
            let (domain, size) = (&rest[..dot], &rest[dot + 1..]);
            let doff = koff + "leaves.".len();
            if domain.is_empty() {
                return perr(doff, "missing domain name in `leaves.DOMAIN.SIZE=`");
            }
            ident(domain, doff)?;
            let soff = doff + dot + 1;
            if size.is_empty() {
                return perr(soff, "missing page size in `leaves.DOMAIN.SIZE=` (e.g. 2M)");
            }
            let pgsize = number(size, soff)?;
            if !pgsize.is_power_of_two() {
                return perr(
                    soff,
                    format!("leaf size `{size}` is not a power of two (e.g. 4K, 2M, 1G)"),
                );
            }
            let count = number(val, voff)?;
            return Ok((
                ExpItem::Leaves {
                    domain: domain.to_string(),
                    pgsize,
                    count,
                },
                format!("leaves.{domain}.{pgsize}"),
            ));
        }
        _ => {
            let keys = ["size", "locked", "avail", "leaves", "dmas", "pinned"];
            let mut msg = format!("unknown expectation `{key}=`");
            if let Some(s) = suggest(key, keys.into_iter()) {
                let s = if s == "leaves" {
                    "leaves.DOMAIN.SIZE"
                } else {
                    s
                };
                msg += &format!(": did you mean `{s}=`?");
            }
            msg += &format!(" (use {ITEMS})");
            return perr(koff, msg);
        }
    };
    Ok((item, key.to_string()))
}

// ---------------------------------------------------------------------------
// Suggestions

/// The closest candidate, if close enough to be a likely typo.
///
/// The edit distance is at least the difference in length, so a candidate whose length is
/// further from the word's than the limit is skipped without computing it: a 10 MB word costs
/// one length comparison per candidate.
fn suggest<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let mut best: Option<(usize, &str)> = None;
    if word.chars().any(is_invisible) {
        return None;
    }
    // Characters, counted up to a bound (candidates are short).
    let len = word.chars().take(64).count();
    let limit = if len <= 3 { 1 } else { 2 };
    for c in candidates {
        if c == word || len.abs_diff(c.chars().count()) > limit {
            continue;
        }
        let d = if c.eq_ignore_ascii_case(word) {
            0
        } else {
            levenshtein(word, c)
        };
        let better = match best {
            None => true,
            Some((bd, _)) => d < bd,
        };
        if d <= limit && better {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| c)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests;
