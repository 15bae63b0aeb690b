//! Injected storage faults for tests: the committer asks the plan before each write and flush.
//!
//! A plan is shared (`Rc`) between a test and the journal it opened, so the test can arm a fault
//! after opening. Without a plan nothing here runs. End-to-end tests arm the running server
//! through [`FaultPlan::from_env`]: `MLLPD_FAULT_FAILED_SYNC_AFTER=N` (the flush after N good
//! ones fails with EIO) and `MLLPD_FAULT_FLUSH_DELAY=200ms` (every flush waits first: with
//! ACK_AFTER=receipt this opens the window a crash test must catch). They are test hooks, named
//! so no deployment sets them by accident, and the server logs a warning when one is set.

use std::cell::Cell;
use std::time::Duration;

/// Faults to inject into the next writes and flushes.
#[derive(Debug, Default)]
pub struct FaultPlan {
    /// The next this many batch writes fail with ENOSPC after writing half their bytes (so the
    /// truncation back to a clean tail is exercised too).
    pub enospc_writes: Cell<u32>,
    /// The next this many fdatasync calls fail with EIO.
    pub failed_syncs: Cell<u32>,
    /// Each flush first sleeps this long: keeps a flush in flight so a test can append while
    /// it runs.
    pub flush_delay: Cell<Duration>,
    /// Good fdatasync calls left before one fails with EIO (`None`: not armed).
    pub syncs_before_failure: Cell<Option<u32>>,
}

impl FaultPlan {
    /// A plan that injects nothing until armed.
    pub fn new() -> FaultPlan {
        FaultPlan::default()
    }

    /// Consumes one armed ENOSPC write, if any.
    pub(crate) fn take_enospc(&self) -> bool {
        take(&self.enospc_writes)
    }

    /// Consumes one armed fdatasync failure, if any.
    pub(crate) fn take_failed_sync(&self) -> bool {
        if take(&self.failed_syncs) {
            return true;
        }
        match self.syncs_before_failure.get() {
            Some(0) => {
                self.syncs_before_failure.set(None);
                true
            }
            Some(n) => {
                self.syncs_before_failure.set(Some(n - 1));
                false
            }
            None => false,
        }
    }

    /// The plan the environment asks for (see the module doc), or `None` when it asks for none.
    pub fn from_env() -> Option<FaultPlan> {
        let failed_sync_after = std::env::var("MLLPD_FAULT_FAILED_SYNC_AFTER").ok();
        let flush_delay = std::env::var("MLLPD_FAULT_FLUSH_DELAY").ok();
        if failed_sync_after.is_none() && flush_delay.is_none() {
            return None;
        }
        let plan = FaultPlan::new();
        if let Some(n) = failed_sync_after.and_then(|v| v.parse().ok()) {
            plan.syncs_before_failure.set(Some(n));
        }
        if let Some(delay) = flush_delay.and_then(|v| humantime::parse_duration(&v).ok()) {
            plan.flush_delay.set(delay);
        }
        tracing::warn!(plan = ?plan, "storage fault injection is armed (MLLPD_FAULT_*): test use only");
        Some(plan)
    }
}

/// Decrements a non-zero counter and says whether it was armed.
fn take(counter: &Cell<u32>) -> bool {
    let n = counter.get();
    if n > 0 {
        counter.set(n - 1);
    }
    n > 0
}
