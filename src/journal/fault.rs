//! Injected storage faults for tests: the committer asks the plan before each write and flush.
//!
//! A plan is shared (`Rc`) between a test and the journal it opened, so the test can arm a fault
//! after opening. Without a plan (the server's case) nothing here runs.

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
        take(&self.failed_syncs)
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
