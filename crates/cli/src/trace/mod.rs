//! The trace language: a small line-oriented script that drives the type1 model.
//!
//! The public contract is `/work/shared/trace-format.md`. This module only
//! *parses* (text → [`Trace`]); running a trace is the runner's job. Parsing is
//! all-or-nothing: the first malformed line yields a [`ParseError`] naming its
//! line and column, and no statement is returned.
//!
//! ```text
//! container type1v2 memlock=4M
//! domain d0 format=x86_64
//! mmap ram size=8M backing=hugetlb-2m
//! map vaddr=ram iova=1G size=4M            => ok locked=+1024
//! check                                    => leaves.d0.2M=2 leaves.d0.4K=0
//! ```

mod ast;
mod parse;
#[cfg(test)]
mod tests;

pub use ast::*;
pub use parse::{
    parse, parse_number, ParseError, ERRNOS, FORMATS, KERNELS, MAP_READ, MAP_VADDR, MAP_WRITE,
    UNMAP_ALL, UNMAP_DIRTY, UNMAP_VADDR,
};
