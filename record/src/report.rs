//! What the guest reported: every check's finding and every worker's
//! figures, in the form the guest's own types (`ktstr_ops`'s `Detail` and
//! `WorkerReport`) serialize to.
//!
//! These mirror the guest's types rather than reuse them: the guest crate
//! is the code that runs in the VM, and a reader of records should not
//! build it. The facade converts through the JSON form both share, and its
//! tests convert fully populated reports, so a field added on one side and
//! not the other fails there.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use crate::placement::PlacementTrace;

/// One finding of a check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckRecord {
    /// The check that made it (`starvation`, `fairness`, `body`, ...).
    pub check: String,
    /// What it found, with the figure and the threshold.
    pub message: String,
    /// Whether it is a failure.
    pub failed: bool,
    /// The figure and threshold, for checks that measure one.
    #[serde(default)]
    pub figure: Option<Figure>,
}

/// The figure a check judged and the threshold it held it to.
///
/// A figure that was not a finite number is written as `null` (JSON has no
/// NaN) and reads back as NaN.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figure {
    /// What was measured.
    #[serde(deserialize_with = "null_as_nan")]
    pub value: f64,
    /// The limit it was held to.
    #[serde(deserialize_with = "null_as_nan")]
    pub threshold: f64,
    /// Their unit (`ms`, `%`, `CPUs`, `/s`).
    pub unit: String,
}

fn null_as_nan<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// The Linux scheduling policy of a worker (sched(7)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Policy {
    /// SCHED_OTHER.
    #[default]
    Normal,
    /// SCHED_BATCH.
    Batch,
    /// SCHED_IDLE.
    Idle,
    /// SCHED_FIFO at a real-time priority.
    Fifo(u8),
    /// SCHED_RR at a real-time priority.
    RoundRobin(u8),
    /// SCHED_EXT.
    Ext,
}

/// A summary of one worker's wake-up latencies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WakeLatency {
    /// Number of wake-ups measured.
    pub samples: u64,
    /// Median (upper bound of its histogram bucket).
    pub p50: Duration,
    /// 99th percentile (upper bound of its histogram bucket).
    pub p99: Duration,
    /// Largest.
    pub max: Duration,
    /// Mean.
    pub mean: Duration,
}

/// What one worker did during the measured window (`Default`: a worker
/// that reported nothing, for building records by hand).
///
/// CPU sets are kept as the text the guest wrote (`0-2,5`, the kernel's
/// cpulist form); no reader interprets them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerRecord {
    /// Index in the scenario's order.
    pub index: usize,
    /// Its group (cgroup name).
    pub group: String,
    /// Its work, as displayed (`pipe-ping-pong`, `sleep-wake(2ms/5ms)`).
    pub work: String,
    /// The unit of `progress` (`round trips`, `forks`, ...).
    pub unit: String,
    /// Its policy.
    pub policy: Policy,
    /// Its nice value.
    pub nice: i32,
    /// Its pid (in the guest).
    pub pid: u32,
    /// The window: from its release to the stop request.
    pub wall: Duration,
    /// CPU time in the window (schedstat `sum_exec_runtime`).
    pub cpu_time: Duration,
    /// Time runnable but waiting in the window (schedstat `run_delay`).
    pub run_delay: Duration,
    /// Times it was put on a CPU in the window (schedstat `pcount`).
    pub runs: u64,
    /// Work done, in `unit`s.
    pub progress: u64,
    /// Iterations of its work loop.
    pub iterations: u64,
    /// Longest time between two observations of its own loop.
    pub max_gap: Duration,
    /// When that gap ended, from the worker's release.
    pub max_gap_at: Duration,
    /// Wake-up latencies, where the work type measures them.
    pub wake_latency: Option<WakeLatency>,
    /// CPUs it (or a helper) was seen on.
    pub cpus: String,
    /// The CPUs its cpuset allowed over the run, when known.
    pub cpuset: Option<String>,
    /// The CPUs it was pinned to by its spec, if any.
    pub affinity: Option<String>,
    /// Times it ran outside a mask it had just set for itself.
    pub affinity_violations: u64,
    /// Its cgroup's `cpu.weight`, when the cgroup has the file.
    pub cpu_weight: Option<u32>,
    /// Migrations in the window, when the kernel counts them.
    pub migrations: Option<u64>,
    /// CPU changes between consecutive iterations.
    pub cpu_changes_seen: u64,
    /// System calls of its work loop that failed.
    pub failures: u64,
    /// Helper tasks it forked.
    pub helpers: u64,
    /// Whether its work only computes.
    pub cpu_bound: bool,
    /// Whether its work moves itself between CPUs or cgroups on purpose.
    pub moves_itself: bool,
    /// Whether its work changes its own policy or nice value on purpose.
    #[serde(default)]
    pub changes_own_weight: bool,
    /// Whether it is background load, not compared for fairness.
    #[serde(default)]
    pub noise: bool,
    /// Whether it saw the stop request and exited by itself.
    pub exited_cleanly: bool,
    /// Whether its schedstat was read at both ends of the window (false:
    /// `cpu_time`, `run_delay` and `runs` are not measured).
    #[serde(default)]
    pub schedstat: bool,
    /// Where its loop ran over the window, bin by bin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<PlacementTrace>,
}
