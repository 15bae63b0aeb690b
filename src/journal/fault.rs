//! Injected storage faults for tests: the committer asks the plan before each write and flush.
//!
//! A plan is shared (`Rc`) between a test and the journal it opened, so the test can arm a fault
//! after opening. Without a plan nothing here runs. End-to-end tests arm the running server
//! through [`FaultPlan::from_env`]: `MLLPD_FAULT_FAILED_SYNC_AFTER=N` (the flush after N good
//! ones fails with EIO), `MLLPD_FAULT_FLUSH_DELAY=200ms` (every flush waits first: with
//! ACK_AFTER=receipt this opens the window a crash test must catch) and
//! `MLLPD_FAULT_SKIP_FLUSH=1` (the batch fdatasync is skipped but its waiters are released as if
//! it had run: the power-loss test's control run, which must lose acknowledged messages).
//!
//! They are test hooks, and must never be armed by accident in production: a release build
//! (no debug assertions) refuses to start when any `MLLPD_FAULT_*` variable is set unless
//! `MLLPD_ALLOW_FAULT_INJECTION=1` is set too ([`FaultPlan::gate`], checked by `mllpd serve`
//! before anything starts). Debug builds, which the end-to-end tests run, arm them freely. When
//! a plan is armed the server logs a warning.

use std::cell::Cell;
use std::time::Duration;

/// Prefix of the environment variables that arm faults (any of them, known or not, counts).
const FAULT_VAR_PREFIX: &str = "MLLPD_FAULT_";

/// The environment variable a release build needs (set to `1`) before it arms faults.
pub const ALLOW_FAULT_INJECTION_VAR: &str = "MLLPD_ALLOW_FAULT_INJECTION";

/// Whether this binary is a release build: one built without debug assertions, as deployed.
const RELEASE_BUILD: bool = !cfg!(debug_assertions);

/// What to do about `MLLPD_FAULT_*` variables ([`FaultPlan::gate`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultGate {
    /// None is set.
    Off,
    /// Some are set and may be armed (a debug build, or the explicit allowance).
    Armed,
    /// Some are set in a release build without the allowance: refuse to start.
    Refused(FaultInjectionRefused),
}

/// A release build found `MLLPD_FAULT_*` set without `MLLPD_ALLOW_FAULT_INJECTION=1`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "fault injection refused: {} set in a release build; these variables make the journal \
     fail or skip flushes on purpose and are for tests only (unset them, or set \
     MLLPD_ALLOW_FAULT_INJECTION=1 to arm them anyway)",
    .variables.join(", ")
)]
pub struct FaultInjectionRefused {
    /// The fault variables found, sorted.
    pub variables: Vec<String>,
}

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
    /// Each piece of space readied ahead of the records in the background first sleeps this
    /// long: keeps a readying in flight so a test can show batches go on beside it.
    pub ready_delay: Cell<Duration>,
    /// Pieces of space readied in the background so far (set by the journal, watched by
    /// tests: the journal's own stats see a piece only once a batch takes it in).
    pub pieces_readied: Cell<u32>,
    /// Good fdatasync calls left before one fails with EIO (`None`: not armed).
    pub syncs_before_failure: Cell<Option<u32>>,
    /// Batch fdatasync calls are skipped but reported successful (JOURNAL_SYNC=fdatasync only):
    /// waiters are released with their records still volatile.
    pub skip_flush: Cell<bool>,
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

    /// Whether fault variables may be armed: `fault_vars` are the `MLLPD_FAULT_*` names set,
    /// `release_build` says whether this binary is one, `allowance` is the value of
    /// `MLLPD_ALLOW_FAULT_INJECTION` (only `1` allows). Pure, so it is tested in any build.
    pub fn gate(
        mut fault_vars: Vec<String>,
        release_build: bool,
        allowance: Option<&str>,
    ) -> FaultGate {
        if fault_vars.is_empty() {
            return FaultGate::Off;
        }
        if !release_build || allowance == Some("1") {
            return FaultGate::Armed;
        }
        fault_vars.sort();
        FaultGate::Refused(FaultInjectionRefused {
            variables: fault_vars,
        })
    }

    /// [`FaultPlan::gate`] for this process's environment and build.
    pub fn gate_env() -> FaultGate {
        let fault_vars = std::env::vars_os()
            .filter_map(|(name, _)| name.into_string().ok())
            .filter(|name| name.starts_with(FAULT_VAR_PREFIX))
            .collect();
        let allowance = std::env::var(ALLOW_FAULT_INJECTION_VAR).ok();
        FaultPlan::gate(fault_vars, RELEASE_BUILD, allowance.as_deref())
    }

    /// Refuses when the environment asks for faults this build may not arm (`mllpd serve` calls
    /// it before starting anything).
    pub fn check_env() -> Result<(), FaultInjectionRefused> {
        match FaultPlan::gate_env() {
            FaultGate::Refused(refused) => Err(refused),
            FaultGate::Off | FaultGate::Armed => Ok(()),
        }
    }

    /// The plan the environment asks for (see the module doc), or `None` when it asks for none
    /// or may not arm it.
    pub fn from_env() -> Option<FaultPlan> {
        match FaultPlan::gate_env() {
            FaultGate::Off => return None,
            FaultGate::Refused(refused) => {
                tracing::error!(%refused, "storage fault injection not armed");
                return None;
            }
            FaultGate::Armed => {}
        }
        let plan = FaultPlan::new();
        let failed_sync_after = std::env::var("MLLPD_FAULT_FAILED_SYNC_AFTER").ok();
        if let Some(n) = failed_sync_after.and_then(|v| v.parse().ok()) {
            plan.syncs_before_failure.set(Some(n));
        }
        let flush_delay = std::env::var("MLLPD_FAULT_FLUSH_DELAY").ok();
        if let Some(delay) = flush_delay.and_then(|v| humantime::parse_duration(&v).ok()) {
            plan.flush_delay.set(delay);
        }
        plan.skip_flush
            .set(std::env::var("MLLPD_FAULT_SKIP_FLUSH").as_deref() == Ok("1"));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[test]
    fn a_release_build_refuses_faults_without_the_allowance() {
        let gate = FaultPlan::gate(
            vars(&["MLLPD_FAULT_SKIP_FLUSH", "MLLPD_FAULT_FLUSH_DELAY"]),
            true,
            None,
        );
        let FaultGate::Refused(refused) = gate else {
            panic!("armed in a release build: {gate:?}");
        };
        assert_eq!(
            refused.variables,
            vars(&["MLLPD_FAULT_FLUSH_DELAY", "MLLPD_FAULT_SKIP_FLUSH"])
        );
        let message = refused.to_string();
        assert!(
            message.contains("MLLPD_FAULT_FLUSH_DELAY, MLLPD_FAULT_SKIP_FLUSH"),
            "{message}"
        );
        assert!(
            message.contains("MLLPD_ALLOW_FAULT_INJECTION=1"),
            "{message}"
        );
        for not_one in ["0", "true", "", "yes"] {
            assert!(
                matches!(
                    FaultPlan::gate(vars(&["MLLPD_FAULT_X"]), true, Some(not_one)),
                    FaultGate::Refused(_)
                ),
                "{not_one:?} is not the allowance"
            );
        }
    }

    #[test]
    fn the_allowance_or_a_debug_build_arms_faults() {
        let faults = vars(&["MLLPD_FAULT_FAILED_SYNC_AFTER"]);
        assert_eq!(
            FaultPlan::gate(faults.clone(), true, Some("1")),
            FaultGate::Armed
        );
        assert_eq!(
            FaultPlan::gate(faults.clone(), false, None),
            FaultGate::Armed
        );
        assert_eq!(FaultPlan::gate(faults, false, Some("0")), FaultGate::Armed);
    }

    #[test]
    fn no_fault_variable_is_off_in_any_build() {
        for release in [true, false] {
            for allowance in [None, Some("1")] {
                assert_eq!(
                    FaultPlan::gate(Vec::new(), release, allowance),
                    FaultGate::Off
                );
            }
        }
    }
}
