//! What `#[ktstr_test]` generates code against — the test's declared
//! configuration and its registration — and running a registered test by
//! name for tests of the harness itself.

pub use crate::registry::{Scheduler, SchedulerSpec, TestConfig, TestEntry, TestFn};
pub use crate::verdict::Outcome;

use crate::error::RunError;

/// Runs the registered test `name` (`module::path::function`) in a VM and
/// returns its outcome instead of panicking: for tests of the harness itself
/// (`#[ktstr_test(harness_fixture = true)]`).
pub fn run_test(name: &str) -> Outcome {
    run_test_with_kernel(name, None)
}

/// [`run_test`] booting `kernel` instead of the resolved one.
pub fn run_test_with_kernel(name: &str, kernel: Option<&std::path::Path>) -> Outcome {
    match crate::registry::find(name) {
        Some(entry) => crate::runner::run(entry, kernel),
        None => Outcome::Fail(RunError::NoSuchTest(name.into()).to_string()),
    }
}

/// Runs the gauntlet variant of the registered test `name` on the preset
/// called `preset`, as `cargo ktstr gauntlet` does, and returns its outcome.
pub fn run_variant(name: &str, preset: &str) -> Outcome {
    match crate::registry::find(name) {
        Some(entry) => crate::runner::run_on(entry, None, Some(preset)),
        None => Outcome::Fail(RunError::NoSuchTest(name.into()).to_string()),
    }
}

pub use crate::runner::{RunTally, StartInfo};

/// [`run_test`], also tallying its VMs: how many booted (the test's own and,
/// after a scheduler crash, auto-repro's probe VM) and how long they waited
/// for host slots, which a test of the harness's own timing subtracts.
pub fn run_test_tallied(name: &str) -> (Outcome, RunTally) {
    match crate::registry::find(name) {
        Some(entry) => crate::runner::run_tallied(entry, None),
        None => (
            Outcome::Fail(RunError::NoSuchTest(name.into()).to_string()),
            RunTally::default(),
        ),
    }
}

/// [`run_test`] restored from a snapshot (`restore`) or booted cold, whatever
/// the configuration says (`KTSTR_RESTORE`); also how its VM started
/// and how far the guest's clock was from the host's, for tests of boot
/// once, restore many.
pub fn run_test_started(name: &str, restore: bool) -> (Outcome, StartInfo) {
    match crate::registry::find(name) {
        Some(entry) => crate::runner::run_started(entry, None, restore),
        None => (
            Outcome::Fail(RunError::NoSuchTest(name.into()).to_string()),
            StartInfo::default(),
        ),
    }
}
