//! The `type1` command as a library: the trace language, the runner that replays a trace
//! against the engine, the reports (for people and for machines) and the built-in demo.
//!
//! The binary (`src/main.rs`) is a thin command-line layer over these modules, so that the tests
//! can drive the same code without spawning a process.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod args;
pub mod bench;
pub mod compare;
pub mod demo;
pub mod help;
pub mod inspect;
pub mod iotlb;
pub mod kernel_check;
pub mod output;
pub mod plan;
pub mod report;
pub mod runner;
pub mod svg;
/// The trace language (its own crate, `type1-trace`).
pub use type1_trace as trace;
pub mod units;
