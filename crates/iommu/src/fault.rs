//! Fault injection, in the manner of the kernel's `fail-nth`: every injectable point (a pin, an
//! IOMMU `map_pages` call, a page-table allocation, a locked-memory charge) counts one occurrence
//! while the injector is armed, and the Nth one fails. Tests arm N = 1, 2, … until an operation
//! succeeds, and check after each failure that nothing changed.
//!
//! It lives in the lowest crate so that the IOMMU and the engine above it share one counter.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

/// The kinds of injectable points.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultPoint {
    /// A pin of user pages (one call into the page source).
    Pin,
    /// One `map_pages` call of an IOMMU domain.
    IommuMap,
    /// The allocation of one page-table page.
    TableAlloc,
    /// One charge of locked memory.
    Charge,
}

impl FaultPoint {
    fn bit(self) -> u32 {
        match self {
            FaultPoint::Pin => 1,
            FaultPoint::IommuMap => 2,
            FaultPoint::TableAlloc => 4,
            FaultPoint::Charge => 8,
        }
    }

    /// Every kind.
    pub const ALL: [FaultPoint; 4] = [
        FaultPoint::Pin,
        FaultPoint::IommuMap,
        FaultPoint::TableAlloc,
        FaultPoint::Charge,
    ];
}

/// A shared fail-nth counter. Cheap when disarmed: one relaxed load per point.
#[derive(Debug, Default)]
pub struct FaultInjector {
    armed: AtomicBool,
    mask: AtomicU32,
    seen: AtomicU64,
    nth: AtomicU64,
    fired: AtomicBool,
}

impl FaultInjector {
    /// A new, disarmed injector.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Fail the `nth` (1-based) occurrence of any of `points` from now on.
    pub fn arm(&self, nth: u64, points: &[FaultPoint]) {
        let mask = points.iter().fold(0, |m, p| m | p.bit());
        self.mask.store(mask, Ordering::Relaxed);
        self.seen.store(0, Ordering::Relaxed);
        self.nth.store(nth, Ordering::Relaxed);
        self.fired.store(false, Ordering::Relaxed);
        self.armed.store(nth > 0 && mask != 0, Ordering::Release);
    }

    /// Stop injecting; `fired` keeps its value until the next `arm`.
    pub fn disarm(&self) {
        self.armed.store(false, Ordering::Release);
    }

    /// Count one occurrence of `point`; true when this one must fail.
    #[inline]
    pub fn hit(&self, point: FaultPoint) -> bool {
        if !self.armed.load(Ordering::Relaxed) {
            return false;
        }
        if self.mask.load(Ordering::Relaxed) & point.bit() == 0 {
            return false;
        }
        let n = self.seen.fetch_add(1, Ordering::Relaxed) + 1;
        if n == self.nth.load(Ordering::Relaxed) {
            self.fired.store(true, Ordering::Relaxed);
            true
        } else {
            false
        }
    }

    /// Whether the armed failure has happened.
    pub fn fired(&self) -> bool {
        self.fired.load(Ordering::Relaxed)
    }

    /// How many points were counted since `arm`.
    pub fn seen(&self) -> u64 {
        self.seen.load(Ordering::Relaxed)
    }
}
