//! The real VFIO type1 backend, to hold the engine to the kernel.
//!
//! * [`container::VfioContainer`] drives a real container through /dev/vfio (map, unmap, info,
//!   dirty), with results shaped as the engine's (`type1::Container`).
//! * [`replay`] runs the trace language's statements ([`type1_trace::Stmt`], parsed on the
//!   host and handed over as JSON lines) and makes one [`type1_trace::Record`] per statement;
//!   the `vfio-replay` binary does that inside a guest.
//! * [`qemu`] is the host side: it fetches a Debian kernel, builds an initramfs with the
//!   static `vfio-replay`, boots QEMU with an emulated VT-d IOMMU and an `edu` device bound to
//!   vfio-pci, reads the IOMMU's page tables at each `check` ([`vtd`]) and collects the records.
//!
//! Linux only. All `unsafe` code is in the private `sys` module.

#![warn(missing_docs)]

pub mod container;
pub mod qemu;
pub mod replay;
mod sys;
pub mod vtd;

pub use container::{BitmapArg, Errno, Error, UnmapOutcome, VfioContainer};
pub use qemu::{run_in_guest, GuestOptions, GuestRun, HarnessError};
