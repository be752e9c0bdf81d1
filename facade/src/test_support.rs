//! What `#[ktstr_test]` generates code against: the test's declared
//! configuration and its registration.

pub use crate::runner::Outcome;
pub use ktstr_ops::scheduler::{Scheduler, SchedulerSpec};

use crate::assert::AssertResult;
use crate::scenario::Ctx;

/// A test body.
pub type TestFn = fn(&Ctx) -> anyhow::Result<AssertResult>;

/// The keys of `#[ktstr_test(...)]`, with their defaults applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TestConfig {
    /// NUMA nodes (`numa_nodes`, default 1).
    pub numa_nodes: u32,
    /// LLCs in the whole VM (`llcs`, default 1).
    pub llcs: u32,
    /// Cores per LLC (`cores`, default 2).
    pub cores: u32,
    /// Threads per core (`threads`, default 1).
    pub threads: u32,
    /// Guest memory in MiB (`memory_mib`, default 512).
    pub memory_mib: u64,
    /// How long the scenario runs (`duration_s`, default 5).
    pub duration_s: u32,
    /// Host-side limit from boot after which an unfinished guest counts as
    /// hung (`watchdog_timeout_s`, default `duration_s + 60`).
    pub watchdog_timeout_s: u32,
    /// The body is expected to fail (`expect_err`, default false).
    pub expect_err: bool,
    /// The scheduler the VM boots with (`scheduler`, default: EEVDF).
    pub scheduler: Option<Scheduler>,
    /// Schedulers packed for lifecycle ops (`staged_schedulers = [..]`).
    pub staged_schedulers: &'static [Scheduler],
    /// Rerun a scheduler crash with BPF probes (`auto_repro`, default true;
    /// accepted, the probe VM is not built yet).
    pub auto_repro: bool,
    /// How long stopping the scheduler after the body may take
    /// (`cleanup_budget_ms`, default 5000).
    pub cleanup_budget_ms: u64,
}

/// A registered test: its full name, body and configuration.
#[derive(Debug)]
pub struct TestEntry {
    /// `module::path::function`.
    pub name: &'static str,
    /// The body, run in the guest.
    pub func: TestFn,
    /// The declared configuration.
    pub config: TestConfig,
}

/// Runs the registered test `name` (`module::path::function`) in a VM and
/// returns its outcome instead of panicking: for tests of the harness itself
/// (`#[ktstr_test(harness_fixture = true)]`).
pub fn run_test(name: &str) -> Outcome {
    run_test_with_kernel(name, None)
}

/// [`run_test`] booting `kernel` instead of the resolved one.
pub fn run_test_with_kernel(name: &str, kernel: Option<&std::path::Path>) -> Outcome {
    match crate::__private::KTSTR_TESTS
        .iter()
        .find(|t| t.name == name)
    {
        Some(entry) => crate::runner::run_with_kernel(entry, kernel),
        None => Outcome::Fail(format!("no #[ktstr_test] named {name:?} in this binary")),
    }
}
