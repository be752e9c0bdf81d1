//! What a worker is asked to do ([`WorkerSpec`]) and what it did
//! ([`WorkerReport`]): the structured data every check reads and the host
//! prints.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::latency::LatencySummary;
use super::trace::PlacementTrace;
use super::{SchedPolicy, WorkType};
use crate::cgroup::{Cgroup, CpuSet};

/// One worker to fork.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerSpec {
    /// What it does.
    pub work: WorkType,
    /// Its scheduling policy.
    pub policy: SchedPolicy,
    /// Its nice value (-20..=19), for the fair classes.
    pub nice: i32,
    /// CPUs it pins itself to with `sched_setaffinity`, if any.
    pub affinity: Option<CpuSet>,
    /// The cgroup it is moved into before it runs, if any.
    pub cgroup: Option<Cgroup>,
    /// The label reports and check messages use for its group (the cgroup name).
    pub group: String,
    /// Released before the others, which wait until it has run (antagonists
    /// such as a real-time hog that must hold its CPU first).
    pub head_start: bool,
    /// Background load (a noisy neighbour): reported and judged for
    /// starvation and gaps, but not compared for fairness.
    pub noise: bool,
}

impl WorkerSpec {
    /// A normal-policy worker doing `work`, labelled `group`, in no cgroup.
    pub fn new(work: WorkType, group: impl Into<String>) -> Self {
        WorkerSpec {
            work,
            policy: SchedPolicy::Normal,
            nice: 0,
            affinity: None,
            cgroup: None,
            group: group.into(),
            head_start: false,
            noise: false,
        }
    }
}

/// What one worker did during the measured window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct WorkerReport {
    /// Index in the scenario's order.
    pub index: usize,
    /// Its group (cgroup name).
    pub group: String,
    /// Its work, as displayed (`pipe-ping-pong`, `sleep-wake(2ms/5ms)`).
    pub work: String,
    /// The unit of [`WorkerReport::progress`] (`round trips`, `forks`, ...).
    pub unit: String,
    /// Its policy.
    pub policy: SchedPolicy,
    /// Its nice value.
    pub nice: i32,
    /// Its pid (in the guest).
    pub pid: u32,
    /// The window: from its release to the stop request.
    pub wall: Duration,
    /// CPU time in the window (schedstat `sum_exec_runtime`), the worker's own
    /// (not its helpers').
    pub cpu_time: Duration,
    /// Time runnable but waiting in the window (schedstat `run_delay`).
    pub run_delay: Duration,
    /// Times it was put on a CPU in the window (schedstat `pcount`).
    pub runs: u64,
    /// Work done, in [`WorkerReport::unit`]s (its helpers' included where they
    /// do the same work).
    pub progress: u64,
    /// Iterations of its work loop (observations of itself).
    pub iterations: u64,
    /// Longest time between two observations of its own loop.
    pub max_gap: Duration,
    /// When that gap ended, from the worker's release.
    pub max_gap_at: Duration,
    /// Wake-up latencies of the worker and its helpers, where the work type
    /// measures them.
    pub wake_latency: Option<LatencySummary>,
    /// CPUs it (or a helper) was seen on (`sched_getcpu` at every iteration).
    pub cpus: CpuSet,
    /// The CPUs its cpuset allowed over the run (the union when it changed
    /// mid-run), when the harness knows it.
    pub cpuset: Option<CpuSet>,
    /// The CPUs it was pinned to by its spec, if any.
    pub affinity: Option<CpuSet>,
    /// Times it ran outside a mask it had just set for itself.
    pub affinity_violations: u64,
    /// Its cgroup's `cpu.weight`, when the cgroup has the file.
    pub cpu_weight: Option<u32>,
    /// Migrations in the window (`se.nr_migrations` of `/proc/<pid>/sched`), when
    /// the kernel has that file.
    pub migrations: Option<u64>,
    /// CPU changes between consecutive iterations: a lower bound on migrations.
    pub cpu_changes_seen: u64,
    /// System calls of its work loop that failed.
    pub failures: u64,
    /// Helper tasks it forked.
    pub helpers: u64,
    /// Whether its work only computes (compared for CPU-time fairness).
    pub cpu_bound: bool,
    /// Whether its work moves itself between CPUs or cgroups on purpose.
    pub moves_itself: bool,
    /// Whether its work changes its own policy or nice value on purpose.
    #[serde(default)]
    pub changes_own_weight: bool,
    /// Whether it is background load ([`WorkerSpec::noise`]), not compared
    /// for fairness.
    #[serde(default)]
    pub noise: bool,
    /// Whether the worker saw the stop request and exited by itself (false: killed
    /// after the grace period).
    pub exited_cleanly: bool,
    /// Whether `/proc/<pid>/schedstat` was read at both ends of the window
    /// (false: `cpu_time`, `run_delay` and `runs` are not measured).
    #[serde(default)]
    pub schedstat: bool,
    /// Where its loop ran over the window, bin by bin (`None`: never seen,
    /// or a report from before traces).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<PlacementTrace>,
}

impl WorkerReport {
    /// A report of a worker doing `work` with every figure zero or empty: the
    /// start of synthetic reports in tests of checks.
    pub fn new(index: usize, group: impl Into<String>, work: &WorkType) -> Self {
        WorkerReport {
            index,
            group: group.into(),
            work: work.to_string(),
            unit: work.unit().to_string(),
            policy: SchedPolicy::Normal,
            nice: 0,
            pid: 0,
            wall: Duration::ZERO,
            cpu_time: Duration::ZERO,
            run_delay: Duration::ZERO,
            runs: 0,
            progress: 0,
            iterations: 0,
            max_gap: Duration::ZERO,
            max_gap_at: Duration::ZERO,
            wake_latency: None,
            cpus: CpuSet::new(),
            cpuset: None,
            affinity: None,
            affinity_violations: 0,
            cpu_weight: None,
            migrations: None,
            cpu_changes_seen: 0,
            failures: 0,
            helpers: 0,
            cpu_bound: work.cpu_bound(),
            moves_itself: work.moves_itself(),
            changes_own_weight: work.changes_own_weight(),
            noise: false,
            exited_cleanly: true,
            schedstat: true,
            trace: None,
        }
    }

    /// `"worker 3 (pid 120, cgroup cg_1)"`, the subject of check messages.
    pub fn who(&self) -> String {
        format!(
            "worker {} (pid {}, cgroup {})",
            self.index, self.pid, self.group
        )
    }

    /// Progress per second of its window (0 without a window).
    pub fn rate(&self) -> f64 {
        let s = self.wall.as_secs_f64();
        if s > 0.0 {
            self.progress as f64 / s
        } else {
            0.0
        }
    }
}
