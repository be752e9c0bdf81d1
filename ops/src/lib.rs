//! Everything ktstr runs inside the guest: verdicts, the init runtime, the
//! channel writer, cgroups, workers, scenario ops and the checks that judge a
//! scheduler.
//!
//! The facade's guest entry hands over to this crate once the test binary
//! runs as the guest's PID 1; the facade's host side reads what this crate
//! writes through the same channel code.
//!
//! This file is the crate's map: the modules are private and the items below
//! are the whole public face, chosen one by one (the facade re-exports some of
//! them as ktstr's API). A new `pub` item inside a module stays inside the
//! crate until it is added here.
//!
//! ```
//! use ktstr_ops::{CgroupDef, CpuSet, WorkType};
//!
//! let def = CgroupDef::named("cg_0").workers(2).work(WorkType::Spin).cpuset([0, 1]);
//! assert_eq!(def.name(), "cg_0");
//! assert_eq!("0-1".parse::<CpuSet>().expect("a cpu list").len(), 2);
//! ```

mod assert;
mod cgroup;
pub mod channel;
pub mod checks;
mod runtime;
mod scenario;
mod scheduler;
mod snapshot;
mod sysfs;
mod workload;

/// Verdicts: what a body or a check returns.
pub use assert::{AssertResult, Detail, Figure};

/// Cgroups: the CPU list format a `CgroupDef` takes, and the cgroup handle the
/// host tests drive directly.
pub use cgroup::{Cgroup, CgroupError, CpuSet, CpuSetParseError, cgroup2_mount};

/// Scenarios: the body's context, cgroup definitions, the step vocabulary
/// ([`ops`]) and the ready-made scenarios ([`scenarios`]).
pub use scenario::{
    CgroupDef, Ctx, HoldSpec, Op, RR_TURN, Step, execute_defs, execute_steps,
    expect_scx_bpf_error_contains, judge, ops, run_defs, scenarios,
};

/// Workers: what they run, under which policy, and what they report.
pub use workload::{
    CustomStep, CustomWork, LatencySummary, Phase, PlacementTrace, SchedPolicy, WorkType,
    WorkerReport, WorkerSpec, Workload, WorkloadError,
};

/// Schedulers in the guest: declaring, supervising, judging how they exited,
/// and the boot-time hand-over the facade stages.
pub use scheduler::{
    BOOT_SCHED_ARGS, BOOT_SCHEDULER, ErrorKind, ExitKind, KillSchedulerError, MonitorChecks,
    ProgInfo, Scheduler, SchedulerDied, SchedulerSpec, Setting, SpawnSchedulerError, Supervisor,
    Sustained, VerifierOffsets, attach_timeout_path, parse_exit, staged_paths,
};

/// Snapshots asked for from a body.
pub use snapshot::{DUMP_SNAPSHOT, SnapshotError, capture};

/// The guest's init and agents, and the configuration the host hands them.
pub use runtime::{
    AGENT_MARKER, AGENT_VERSION, CONFIG_PATH, GuestConfig, INIT_ENVIRONMENT, KERNEL_CONFIG_PATH,
    SHELL_CONFIG_PATH, ShellConfig, TopologyData, encode_payload, is_agent, is_guest_init,
    is_shell_agent, on_run_end, run_as_agent, run_as_init, run_shell_agent, send_from_body,
};

/// Linux's view of the guest's CPUs, read from sysfs.
pub use sysfs::sysfs_view;
