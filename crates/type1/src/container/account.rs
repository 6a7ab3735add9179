//! Locked-memory accounting: `vfio_lock_acct` and the RLIMIT_MEMLOCK check.
//!
//! Invariants owned here: locked == Σ per-entry charges while the owner lives; reserved pfns are
//! never charged; CAP_IPC_LOCK skips the check but still counts.

use iommu::FaultPoint;

use super::{Container, Dma};
use crate::error::Error;
use crate::mm::PageSource;
use crate::PAGE_SHIFT;

impl<M: PageSource> Container<M> {
    pub(super) fn limit_pages(&self) -> u64 {
        self.cfg.memlock.map_or(u64::MAX, |b| b >> PAGE_SHIFT)
    }

    /// `vfio_lock_acct` + `__account_locked_vm`.
    pub(super) fn lock_acct(&mut self, dma: &mut Dma, npage: i64) -> Result<(), Error> {
        if npage == 0 {
            return Ok(());
        }
        if npage < 0 && !self.owner_alive {
            // `vfio_lock_acct(…, async=true)`: `mmget_not_zero` fails, -ESRCH, and the caller
            // ignores it: the dead mm keeps its count, the unmap goes on.
            return Ok(());
        }
        if npage > 0 {
            let n = npage as u64;
            if self.faults.hit(FaultPoint::Charge) {
                return Err(Error::InjectedCharge);
            }
            let limit = self.limit_pages();
            if !dma.lock_cap && self.locked.saturating_add(n) > limit {
                return Err(Error::Memlock {
                    limit,
                    locked: self.locked,
                    more: n,
                });
            }
            self.stats.charges += 1;
            self.locked += n;
            dma.locked_vm += n;
        } else {
            let n = npage.unsigned_abs();
            if n > self.locked {
                self.violations.push(format!(
                    "uncharge of {n} pages with only {} locked",
                    self.locked
                ));
            }
            self.locked = self.locked.saturating_sub(n);
            dma.locked_vm = dma.locked_vm.saturating_sub(n);
        }
        Ok(())
    }
}
