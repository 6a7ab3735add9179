//! Locked-memory accounting: `vfio_lock_acct`, `__account_locked_vm` and the RLIMIT_MEMLOCK
//! check of `vfio_pin_pages_remote`, in pages.
//!
//! Invariants owned here: locked == Σ per-entry charges while the owner lives; reserved pfns are
//! never charged (the pin path passes only non-reserved pages); CAP_IPC_LOCK skips the check but
//! still counts. After the owner exits, uncharges are dropped and the count stays (§8.4 row 43).

use iommu::FaultPoint;

use super::{Container, Dma};
use crate::error::Error;
use crate::mm::PageSource;
use crate::PAGE_SHIFT;

/// The owner's `mm->locked_vm` as the container changes it, and its RLIMIT_MEMLOCK.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockedAccount {
    /// Locked pages.
    locked: u64,
    /// RLIMIT_MEMLOCK in pages (`u64::MAX`: unlimited).
    limit: u64,
    /// Whether the process that mapped is alive.
    owner_alive: bool,
}

impl LockedAccount {
    /// Nothing locked, under a limit of `memlock` bytes (`None`: unlimited).
    pub fn new(memlock: Option<u64>) -> Self {
        LockedAccount {
            locked: 0,
            limit: memlock.map_or(u64::MAX, |b| b >> PAGE_SHIFT),
            owner_alive: true,
        }
    }

    /// A new RLIMIT_MEMLOCK of `memlock` bytes (`None`: unlimited) for later checks.
    pub fn set_limit(&mut self, memlock: Option<u64>) {
        self.limit = memlock.map_or(u64::MAX, |b| b >> PAGE_SHIFT);
    }

    /// Locked pages (`mm->locked_vm`).
    pub fn locked(&self) -> u64 {
        self.locked
    }

    /// RLIMIT_MEMLOCK in pages (`u64::MAX`: unlimited).
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The RLIMIT_MEMLOCK check: may `more` pages be charged on top of what is locked? A
    /// mapping made with CAP_IPC_LOCK (`lock_cap`) is not checked.
    pub fn check_limit(&self, lock_cap: bool, more: u64) -> Result<(), Error> {
        if !lock_cap && self.locked.saturating_add(more) > self.limit {
            return Err(Error::Memlock {
                limit: self.limit,
                locked: self.locked,
                more,
            });
        }
        Ok(())
    }

    /// Charge `n` pages after the limit check (counted even with CAP_IPC_LOCK).
    pub fn charge(&mut self, lock_cap: bool, n: u64) -> Result<(), Error> {
        self.check_limit(lock_cap, n)?;
        self.locked += n;
        Ok(())
    }

    /// Uncharge `n` pages. Returns false, changing nothing, once the owner has exited (the
    /// kernel's asynchronous accounting finds no mm: -ESRCH, ignored). Uncharging more than is
    /// locked is recorded in `violations` and stops at 0.
    pub fn uncharge(&mut self, n: u64, violations: &mut Vec<String>) -> bool {
        if !self.owner_alive {
            return false;
        }
        if n > self.locked {
            violations.push(format!(
                "uncharge of {n} pages with only {} locked",
                self.locked
            ));
        }
        self.locked = self.locked.saturating_sub(n);
        true
    }

    /// The owner exits while another process holds the container.
    pub fn owner_exited(&mut self) {
        self.owner_alive = false;
    }

    /// Invariant: locked == `charges`, the sum of the mappings' charges, while the owner lives.
    pub fn check(&self, charges: u64) -> Option<String> {
        (charges != self.locked && self.owner_alive).then(|| {
            format!(
                "locked pages {} != sum of the mappings' charges {charges}",
                self.locked
            )
        })
    }
}

impl<M: PageSource> Container<M> {
    /// `vfio_lock_acct`: charge (`npage` > 0) or uncharge (`npage` < 0) the account and `dma`.
    pub(super) fn lock_acct(&mut self, dma: &mut Dma, npage: i64) -> Result<(), Error> {
        if npage > 0 {
            let n = npage as u64;
            if self.faults.hit(FaultPoint::Charge) {
                return Err(Error::InjectedCharge);
            }
            self.account.charge(dma.lock_cap, n)?;
            self.stats.charges += 1;
            dma.locked_vm += n;
        } else if npage < 0 {
            let n = npage.unsigned_abs();
            if self.account.uncharge(n, &mut self.violations) {
                dma.locked_vm = dma.locked_vm.saturating_sub(n);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use iommu::SZ_2M;

    use super::*;

    /// 16 pages of RLIMIT_MEMLOCK.
    const LIMIT: u64 = 16 << PAGE_SHIFT;

    #[test]
    fn the_limit_is_in_pages_and_none_is_unlimited() {
        assert_eq!(LockedAccount::new(Some(LIMIT)).limit(), 16);
        assert_eq!(LockedAccount::new(Some(SZ_2M + 4095)).limit(), 512);
        assert_eq!(LockedAccount::new(None).limit(), u64::MAX);
        assert_eq!(LockedAccount::new(None).locked(), 0);
    }

    #[test]
    fn charges_up_to_the_limit_then_memlock() {
        let mut a = LockedAccount::new(Some(LIMIT));
        assert_eq!(a.charge(false, 10), Ok(()));
        assert_eq!(a.check_limit(false, 6), Ok(()));
        assert_eq!(
            a.charge(false, 7),
            Err(Error::Memlock {
                limit: 16,
                locked: 10,
                more: 7
            })
        );
        assert_eq!(a.locked(), 10, "a refused charge changes nothing");
        assert_eq!(a.charge(false, 6), Ok(()));
        assert_eq!(a.locked(), 16);
        assert_eq!(a.check(16), None);
    }

    #[test]
    fn cap_ipc_lock_skips_the_check_but_still_counts() {
        let mut a = LockedAccount::new(Some(LIMIT));
        assert_eq!(a.charge(true, 20), Ok(()));
        assert_eq!(a.locked(), 20);
        assert_eq!(
            a.check_limit(false, 1),
            Err(Error::Memlock {
                limit: 16,
                locked: 20,
                more: 1
            })
        );
        assert_eq!(a.check_limit(true, u64::MAX), Ok(()));
    }

    #[test]
    fn uncharge_below_zero_is_a_violation_and_stops_at_zero() {
        let mut a = LockedAccount::new(None);
        a.charge(false, 3).unwrap();
        let mut v = Vec::new();
        assert!(a.uncharge(2, &mut v));
        assert_eq!((a.locked(), v.len()), (1, 0));
        assert!(a.uncharge(5, &mut v));
        assert_eq!(a.locked(), 0);
        assert_eq!(
            v,
            vec!["uncharge of 5 pages with only 1 locked".to_string()]
        );
    }

    #[test]
    fn after_the_owner_exits_the_count_stays() {
        let mut a = LockedAccount::new(None);
        a.charge(false, 8).unwrap();
        assert_eq!(
            a.check(7),
            Some("locked pages 8 != sum of the mappings' charges 7".to_string())
        );
        a.owner_exited();
        let mut v = Vec::new();
        assert!(!a.uncharge(8, &mut v));
        assert_eq!((a.locked(), v.len()), (8, 0));
        assert_eq!(
            a.check(0),
            None,
            "the invariant holds only while the owner lives"
        );
    }
}
