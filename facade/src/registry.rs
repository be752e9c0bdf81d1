//! The tests of this binary: what `#[ktstr_test]` registers, gathered at
//! link time, and their declared configuration.

pub use ktstr_ops::{Scheduler, SchedulerSpec};

use crate::assert::AssertResult;
use crate::scenario::Ctx;

/// A test body.
pub type TestFn = fn(&Ctx) -> anyhow::Result<AssertResult>;

/// The keys of `#[ktstr_test(...)]`, with their defaults applied. (Not
/// comparable: `post_vm` is a function pointer.)
#[derive(Debug, Clone, Copy)]
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
    /// The kind the expected failure must have (`expect_err = "<kind>"`): a
    /// typed error kind the guest named (`StartupDied`, `SchedulerDied`,
    /// `SCX_EXIT_ERROR_STALL`, ...) or the name of a check that failed
    /// (`fairness`, `starvation`, `monitor.stuck`, ...).
    pub expect_err_matching: Option<&'static str>,
    /// A substring the expected failure's text must hold
    /// (`expect_err_text = "..."`).
    pub expect_err_text: Option<&'static str>,
    /// Accept a verdict that could not be judged (`allow_inconclusive`,
    /// default false: an inconclusive verdict fails the test, naming why).
    pub allow_inconclusive: bool,
    /// Boot the compressed image (bzImage) with KASLR on, so the kernel runs
    /// at a random place (`kaslr`, default false: the ELF vmlinux at its link
    /// address; `KTSTR_KASLR=1` turns it on for every test of a run).
    pub kaslr: bool,
    /// Record the VM's run so that, when the test fails, `cargo ktstr
    /// replay` repeats it instruction for instruction (`record`, default
    /// false; `KTSTR_RECORD=1` records every test of a run).
    pub record: bool,
    /// The scheduler the VM boots with (`scheduler`, default: EEVDF).
    pub scheduler: Option<Scheduler>,
    /// Schedulers packed for lifecycle ops (`staged_schedulers = [..]`).
    pub staged_schedulers: &'static [Scheduler],
    /// Rerun a scheduler crash in a probe VM with probes on the crash path
    /// (`auto_repro`, default true; see the `ktstr-probe` crate).
    pub auto_repro: bool,
    /// Print the failure dump of the scheduler's state after a passing run
    /// too (`dump = true`; a failing run always gets it).
    pub dump: bool,
    /// Kernel functions (or the scheduler's BPF callbacks) to probe in this
    /// run, passing or not (`probes = ["enqueue_task_scx", ..]`, default
    /// none): their decoded calls are printed after the VM and reach
    /// `post_vm` as `VmResult::probes`.
    pub probes: &'static [&'static str],
    /// How long stopping the scheduler after the body may take
    /// (`cleanup_budget_ms`, default 5000).
    pub cleanup_budget_ms: u64,
    /// Snapshots with every vCPU paused, spread over the body
    /// (`num_snapshots`, default 0).
    pub num_snapshots: u32,
    /// A host-side check of the finished VM (`post_vm = path`); its error
    /// fails the test.
    pub post_vm: Option<crate::monitor::PostVmFn>,
    /// The host monitor's checks (`monitor = MonitorChecks::INHERIT...`),
    /// over the scheduler's, over the defaults.
    pub monitor: ktstr_ops::MonitorChecks,
}

impl TestConfig {
    /// How much longer than the body the host waits before it calls a guest hung, when
    /// `watchdog_timeout_s` is not given: `duration_s + WATCHDOG_MARGIN_S`.
    pub const WATCHDOG_MARGIN_S: u32 = 60;

    /// What `#[ktstr_test]` with no keys declares (1n1l2c1t, 512 MiB, 5 s,
    /// EEVDF), and what the macro fills every key it is not given with: the one
    /// place the defaults are written (the shape's in
    /// [`ktstr_topology::DeclaredShape::DEFAULT`], which the macro also validates
    /// with). A base for configurations built by hand, e.g. in unit tests,
    /// `TestConfig { duration_s: 1, ..TestConfig::DEFAULT }`.
    pub const DEFAULT: TestConfig = {
        let shape = ktstr_topology::DeclaredShape::DEFAULT;
        let duration_s = 5;
        TestConfig {
            numa_nodes: shape.numa_nodes,
            llcs: shape.llcs,
            cores: shape.cores,
            threads: shape.threads,
            memory_mib: shape.memory_mib,
            duration_s,
            watchdog_timeout_s: duration_s + Self::WATCHDOG_MARGIN_S,
            expect_err: false,
            expect_err_matching: None,
            expect_err_text: None,
            allow_inconclusive: false,
            kaslr: false,
            record: false,
            scheduler: None,
            staged_schedulers: &[],
            auto_repro: true,
            dump: false,
            probes: &[],
            cleanup_budget_ms: 5000,
            num_snapshots: 0,
            post_vm: None,
            monitor: ktstr_ops::MonitorChecks::INHERIT,
        }
    };
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

/// Every `#[ktstr_test]` of the binary, gathered at link time.
#[linkme::distributed_slice]
pub static KTSTR_TESTS: [TestEntry];

/// The registered test `name` (`module::path::function`).
pub fn find(name: &str) -> Option<&'static TestEntry> {
    KTSTR_TESTS.iter().find(|t| t.name == name)
}
