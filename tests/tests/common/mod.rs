//! Helpers shared by the test files that run registered tests.

use ktstr::test_support::{Outcome, RunOptions, RunReport, run};

/// Runs the registered test `name` restored from a snapshot (`true`) or
/// booted cold (`false`), whatever the configuration says: its outcome and
/// everything observed (how it started, its clock, its overhead).
pub fn run_test_started(name: &str, restore: bool) -> (Outcome, RunReport) {
    let opts = RunOptions {
        restore: Some(restore),
        ..RunOptions::default()
    };
    let report = run(name, &opts);
    (report.outcome(), report)
}
