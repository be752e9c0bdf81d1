//! ktstr: test Linux process schedulers (sched_ext first) in micro-VMs whose
//! CPU topology is exactly the one a test declares.
//!
//! This is the one crate scheduler authors depend on (as a dev-dependency).
//! A test is a function with `#[ktstr_test]`; `cargo test` boots one VM per
//! test, runs the body inside the guest (the test binary itself is the
//! guest's init) and merges the guest's verdict with what the host saw.
//!
//! ```no_run
//! use ktstr::prelude::*;
//!
//! #[ktstr_test(llcs = 2, cores = 2, threads = 2, duration_s = 5)]
//! fn sees_the_declared_cpus(ctx: &Ctx) -> Result<AssertResult> {
//!     let online = std::thread::available_parallelism()?.get() as u32;
//!     if online != ctx.topology.nr_cpus() {
//!         return Ok(AssertResult::fail_msg(format!("{online} CPUs online")));
//!     }
//!     Ok(AssertResult::pass())
//! }
//! # fn main() {}
//! ```
//!
//! Host settings (kernel, backend, cache, slots) come from one
//! [`config::HostConfig`], read from the environment once.
//!
//! Mistakes are compile errors, never silently ignored: an invalid topology
//! (here `llcs = 3` cannot be spread over `numa_nodes = 2`) ...
//!
//! ```compile_fail
//! use ktstr::prelude::*;
//! #[ktstr_test(numa_nodes = 2, llcs = 3)]
//! fn uneven(_ctx: &Ctx) -> Result<AssertResult> { Ok(AssertResult::pass()) }
//! # fn main() {}
//! ```
//!
//! ... a watchdog that does not outlast the body (here the default 5 s one) ...
//!
//! ```compile_fail
//! use ktstr::prelude::*;
//! #[ktstr_test(watchdog_timeout_s = 5)]
//! fn hasty(_ctx: &Ctx) -> Result<AssertResult> { Ok(AssertResult::pass()) }
//! # fn main() {}
//! ```
//!
//! ... and a `post_vm` check whose signature is not
//! `fn(&VmResult) -> anyhow::Result<()>`:
//!
//! ```compile_fail
//! use ktstr::prelude::*;
//! fn check(_: &()) -> Result<()> { Ok(()) }
//! #[ktstr_test(post_vm = check)]
//! fn monitored(_ctx: &Ctx) -> Result<AssertResult> { Ok(AssertResult::pass()) }
//! # fn main() {}
//! ```
//!
//! The gauntlet: every test also gets `#[ignore]`d variants, one per topology
//! preset its constraints allow (`min_cpus`, `max_cpus`, `requires_smt`,
//! `min_numa_nodes`, `min_llcs`), named `<test>::gauntlet::<preset>`;
//! `cargo ktstr gauntlet` runs them. Constraints no preset meets are a
//! compile error:
//!
//! ```compile_fail
//! use ktstr::prelude::*;
//! #[ktstr_test(min_cpus = 300)]
//! fn huge(_ctx: &Ctx) -> Result<AssertResult> { Ok(AssertResult::pass()) }
//! # fn main() {}
//! ```
//!
//! The host watches the guest kernel from outside while the test runs
//! ([`monitor`]): runqueues, the scheduler's DSQs, sched_ext event counters
//! and the scheduler's BPF globals, read from guest memory. A `post_vm` check
//! judges them after the VM:
//!
//! ```no_run
//! use ktstr::prelude::*;
//!
//! fn dispatched(result: &VmResult) -> Result<()> {
//!     let series = result.series().snapshots_only();
//!     let n = series.bpf("nr_dispatched", |s| s.var("nr_dispatched").as_u64());
//!     anyhow::ensure!(n.only_grew(), "nr_dispatched went down: {n:?}");
//!     anyhow::ensure!(n.max().is_some_and(|m| *m > 0), "nothing dispatched");
//!     Ok(())
//! }
//!
//! #[ktstr_test(num_snapshots = 3, post_vm = dispatched)]
//! fn monitored(_ctx: &Ctx) -> Result<AssertResult> { Ok(AssertResult::pass()) }
//! # fn main() {}
//! ```
//!
//! Probes on request: name kernel functions (or the scheduler's BPF
//! callbacks) and their calls come back decoded, printed after the VM and
//! in [`monitor::VmResult::probes`] (`ktstr probe list PATTERN` lists the
//! kernel's):
//!
//! ```no_run
//! use ktstr::prelude::*;
//!
//! fn enqueued(result: &VmResult) -> Result<()> {
//!     let probes = result.probes.as_ref().expect("the test has probes");
//!     for call in probes.calls_of("enqueue_task_scx") {
//!         println!("pid {:?} on cpu {}", call.pid, call.cpu);
//!     }
//!     Ok(())
//! }
//!
//! #[ktstr_test(probes = ["enqueue_task_scx"], post_vm = enqueued)]
//! fn watched(_ctx: &Ctx) -> Result<AssertResult> { Ok(AssertResult::pass()) }
//! # fn main() {}
//! ```
//!
//! A probe name must be a literal, non-empty function name:
//!
//! ```compile_fail
//! use ktstr::prelude::*;
//! #[ktstr_test(probes = ["enqueue task"])]
//! fn bad(_ctx: &Ctx) -> Result<AssertResult> { Ok(AssertResult::pass()) }
//! # fn main() {}
//! ```

mod channel;
pub mod config;
mod dump;
mod error;
mod guest;
mod kfuncs;
pub mod monitor;
mod outcome;
pub mod recording;
mod registry;
pub mod results;
mod runner;
mod schedulers;
pub mod shell;
mod snapshots;
pub mod test_support;
mod verdict;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;

pub use error::{ProbePlanError, RunError, SourcesError, error_text};
pub use schedulers::{ARCHIVE_ROOT_ENV, INSTALLED_DIR, SchedulerSetupError};

/// Verdicts of test bodies and checks.
pub mod assert {
    pub use ktstr_ops::{AssertResult, Detail};
}

/// Scenarios: the context a body gets, cgroups, workers, checks and ops.
/// Chosen items, not a glob: a new public item of the guest crate does not
/// become ktstr's API unless it is added here.
pub mod scenario {
    pub use ktstr_ops::checks::{ThresholdOverrides, Thresholds};
    pub use ktstr_ops::{
        CgroupDef, Ctx, CustomStep, CustomWork, HoldSpec, Op, Phase, RR_TURN, SchedPolicy, Step,
        WorkType, WorkerReport, checks, execute_defs, execute_steps, expect_scx_bpf_error_contains,
        judge, ops, run_defs, scenarios,
    };
}

/// A snapshot asked for from the body, at an exact point of its code (the
/// step form is `Op::capture_snapshot`): returns once the host paused every
/// vCPU, read the guest and resumed it.
pub mod snapshot {
    pub use ktstr_ops::{SnapshotError, capture};
}

/// Scheduler processes in the guest: errors a body can downcast to.
pub mod scheduler {
    pub use ktstr_ops::{
        ExitKind, KillSchedulerError, SchedulerDied, SpawnSchedulerError, Supervisor,
    };
}

/// Declares a scheduler as a `const`:
/// `declare_scheduler!(MY_SCHED, { name = "my_sched", binary = "scx_mine" });`
/// (`binary` is discovered by name; add `sched_args = &["--flag"]` for arguments).
#[macro_export]
macro_rules! declare_scheduler {
    ($ident:ident, { name = $name:expr, binary = $bin:expr $(,)? }) => {
        const $ident: $crate::test_support::Scheduler =
            $crate::test_support::Scheduler::named($name)
                .binary($crate::test_support::SchedulerSpec::Discover($bin));
    };
    ($ident:ident, { name = $name:expr, binary = $bin:expr, sched_args = $args:expr $(,)? }) => {
        const $ident: $crate::test_support::Scheduler =
            $crate::test_support::Scheduler::named($name)
                .binary($crate::test_support::SchedulerSpec::Discover($bin))
                .sched_args($args);
    };
}

/// Everything a test file needs: `use ktstr::prelude::*;`.
pub mod prelude {
    pub use crate::assert::AssertResult;
    pub use crate::declare_scheduler;
    pub use crate::ktstr_test;
    pub use crate::monitor::{
        KernelPlacement, MonitorChecks, Sample, SampleSeries, Series, VmResult,
    };
    pub use crate::scenario::{CgroupDef, Ctx, execute_defs, scenarios};
    pub use crate::test_support::{Scheduler, SchedulerSpec};
    pub use anyhow::Result;
}

/// Declares a test that runs in a VM with a declared topology.
pub use ktstr_macros::ktstr_test;

/// Declared topologies: what `Ctx::topology` is, presets, and Linux's view
/// of a CPU.
pub mod topology {
    pub use ktstr_ops::sysfs_view;
    pub use ktstr_topology::{
        CpuLocation, LinuxCpuIds, PRESETS, Preset, SYSFS_SCRIPT, SysfsCpu, SysfsNode, SysfsView,
        Topology, TopologyError, cpu_list, format_cpu_list, parse_cpu_list, preset,
    };
}

/// Probes on request (`#[ktstr_test(probes = ["enqueue_task_scx", ..]])`):
/// what `VmResult::probes` holds, each call decoded with the kernel's BTF.
pub mod probe {
    pub use ktstr_probe::{
        CALLS_SHOWN, MAX_FUNCTIONS, ProbeReport, ProbedArg, ProbedCall, ProbedField, probeable,
    };
}

/// Kernels: what a run boots (see [`config::HostConfig::resolve_kernel`]).
pub mod kernel {
    pub use ktstr_kernel::lines::LineIndex;
    pub use ktstr_kernel::{Kernel, KernelCache, KernelError, KernelOrigin};
}
