//! The trace language of `type1`: a small line-oriented script that drives VFIO type1 — the
//! engine's model (`type1 replay`) or a real kernel (`type1 kernel-check`) — and says what each
//! statement should answer. Its reference for users is this crate's README.md.
//!
//! One home for the language and its contracts, so both backends read and answer it alike:
//! * [`ast`] and [`parse`](mod@parse): text → [`Trace`], all-or-nothing (the first malformed
//!   line is a [`ParseError`] naming its line and column);
//! * [`record`]: the one [`Record`], the object `type1 replay --json` prints per statement;
//! * [`expect`]: a statement's `=> ...` held to what a run answered;
//! * [`defaults`]: what the language leaves to runners (argsz per verb, bitmap sizing,
//!   `NAME±OFFSET` vaddrs) — both backends use it, or kernel-check would compare different
//!   requests;
//! * [`compare`]: two runs of one trace, record by record;
//! * [`verbs`]: one function per verb, the trait both backends implement;
//! * [`read`](mod@read): a trace's text from a file or stdin, size-capped, binary input refused.
//!
//! ```text
//! container type1v2 memlock=4M
//! domain d0 format=x86_64
//! mmap ram size=8M backing=hugetlb-2m
//! map vaddr=ram iova=1G size=4M            => ok locked=+1024
//! check                                    => leaves.d0.2M=2 leaves.d0.4K=0
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod ast;
pub mod compare;
pub mod defaults;
pub mod expect;
pub mod parse;
pub mod read;
pub mod record;
pub mod verbs;

pub use ast::*;
pub use compare::{compare, Comparison, Diff};
/// The errno type expectations and records use.
pub use iommu::Errno;
pub use parse::{
    parse, parse_number, statements, ParseError, Statements, ERRNOS, FORMATS, KERNELS, MAP_READ,
    MAP_VADDR, MAP_WRITE, UNMAP_ALL, UNMAP_DIRTY, UNMAP_VADDR,
};
pub use read::{read_trace, ReadError, MAX_LINE_BYTES, MAX_TRACE_BYTES};
pub use record::{bitmap_hex, Backend, Dma, InfoFields, Notified, Record, State};
pub use verbs::{dispatch, Verbs};
