//! Scenario steps: operations on the system under test (cgroups, workers,
//! cpusets, affinity, CPUs, the scheduler's lifecycle), each step followed by
//! a hold, run in order. Workers still running at the end are stopped and
//! every check is applied to all of them.
//!
//! ```no_run
//! use std::time::Duration;
//! use ktstr_ops::CgroupDef;
//! use ktstr_ops::ops::{HoldSpec, Op, Step, execute_steps};
//! # fn body(ctx: &ktstr_ops::Ctx) -> anyhow::Result<ktstr_ops::AssertResult> {
//! let steps = vec![
//!     Step::new(vec![Op::add_cgroup(CgroupDef::named("cg_0").workers(2))], HoldSpec::frac(0.5)),
//!     Step::new(vec![Op::set_cpuset("cg_0", [0])], HoldSpec::frac(0.5)),
//!     Step::new(vec![Op::restart_scheduler()], HoldSpec::fixed(Duration::from_millis(500))),
//! ];
//! execute_steps(ctx, steps)
//! # }
//! ```

use std::time::{Duration, Instant};

use super::{CgroupDef, Ctx};
use crate::assert::AssertResult;
use crate::cgroup::CpuSet;
use crate::scheduler::{
    self, BOOT_SCHED_ARGS, BOOT_SCHED_LOG, BOOT_SCHEDULER, Scheduler, Supervisor,
};

/// An operation a step applies.
///
/// Cgroups are named by their path below the scenario's root, workers by the
/// cgroup they were spawned into.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Op {
    /// Creates the cgroup (with its cpuset, weight) and starts its workers.
    AddCgroup(CgroupDef),
    /// Stops the workers spawned into the cgroup (or below it) and removes it.
    RemoveCgroup(String),
    /// Starts more workers into a cgroup (created if missing).
    Spawn(CgroupDef),
    /// Stops the workers spawned into the cgroup; the cgroup stays.
    Stop(String),
    /// Sets the cgroup's `cpuset.cpus`; its workers are then held to it.
    SetCpuset(String, CpuSet),
    /// Clears the cgroup's `cpuset.cpus`: it gets its parent's CPUs.
    ClearCpuset(String),
    /// Sets the cgroup's `cpu.weight`.
    SetWeight(String, u32),
    /// Moves the workers spawned into the first cgroup into the second.
    MoveWorkers(String, String),
    /// Pins the workers spawned into the cgroup to these CPUs.
    SetAffinity(String, CpuSet),
    /// Takes a CPU offline (`false`) or back online (`true`) through sysfs.
    SetCpuOnline(u32, bool),
    /// Starts a staged scheduler where none runs.
    AttachScheduler(Scheduler),
    /// Stops the running scheduler; the kernel default takes over.
    DetachScheduler,
    /// Stops the boot scheduler and starts it again from `/scheduler`.
    RestartScheduler,
    /// Stops the running scheduler and starts a staged one.
    ReplaceScheduler(Scheduler),
    /// Asks the host for a snapshot named so, taken with every vCPU paused;
    /// the step goes on once the host resumed the guest. What the guest holds
    /// unchanged across this op is what the host reads in the snapshot.
    CaptureSnapshot(String),
}

impl Op {
    /// [`Op::AddCgroup`].
    pub fn add_cgroup(def: CgroupDef) -> Op {
        Op::AddCgroup(def)
    }
    /// [`Op::RemoveCgroup`].
    pub fn remove_cgroup(name: impl Into<String>) -> Op {
        Op::RemoveCgroup(name.into())
    }
    /// [`Op::Spawn`].
    pub fn spawn(def: CgroupDef) -> Op {
        Op::Spawn(def)
    }
    /// [`Op::Stop`].
    pub fn stop(name: impl Into<String>) -> Op {
        Op::Stop(name.into())
    }
    /// [`Op::SetCpuset`].
    pub fn set_cpuset(name: impl Into<String>, cpus: impl Into<CpuSet>) -> Op {
        Op::SetCpuset(name.into(), cpus.into())
    }
    /// [`Op::ClearCpuset`].
    pub fn clear_cpuset(name: impl Into<String>) -> Op {
        Op::ClearCpuset(name.into())
    }
    /// [`Op::SetWeight`].
    pub fn set_weight(name: impl Into<String>, weight: u32) -> Op {
        Op::SetWeight(name.into(), weight)
    }
    /// [`Op::MoveWorkers`].
    pub fn move_workers(from: impl Into<String>, to: impl Into<String>) -> Op {
        Op::MoveWorkers(from.into(), to.into())
    }
    /// [`Op::SetAffinity`].
    pub fn set_affinity(name: impl Into<String>, cpus: impl Into<CpuSet>) -> Op {
        Op::SetAffinity(name.into(), cpus.into())
    }
    /// [`Op::SetCpuOnline`] with `false`.
    pub fn cpu_offline(cpu: u32) -> Op {
        Op::SetCpuOnline(cpu, false)
    }
    /// [`Op::SetCpuOnline`] with `true`.
    pub fn cpu_online(cpu: u32) -> Op {
        Op::SetCpuOnline(cpu, true)
    }

    /// [`Op::AttachScheduler`].
    pub fn attach_scheduler(s: &Scheduler) -> Op {
        Op::AttachScheduler(*s)
    }
    /// [`Op::DetachScheduler`].
    pub fn detach_scheduler() -> Op {
        Op::DetachScheduler
    }
    /// [`Op::RestartScheduler`].
    pub fn restart_scheduler() -> Op {
        Op::RestartScheduler
    }
    /// [`Op::ReplaceScheduler`].
    pub fn replace_scheduler(s: &Scheduler) -> Op {
        Op::ReplaceScheduler(*s)
    }
    /// [`Op::CaptureSnapshot`].
    pub fn capture_snapshot(name: impl Into<String>) -> Op {
        Op::CaptureSnapshot(name.into())
    }

    /// A short label of the op, for step boundaries in reports
    /// (`add cg_0 (4 workers)`, `cpuset cg_0 = 0-1`, `restart scheduler`).
    pub(crate) fn label(&self) -> String {
        let workers = |n: usize| format!("{n} worker{}", if n == 1 { "" } else { "s" });
        match self {
            Op::AddCgroup(d) => format!("add {} ({})", d.name(), workers(d.workers)),
            Op::Spawn(d) => format!("spawn {} in {}", workers(d.workers), d.name()),
            Op::RemoveCgroup(n) => format!("remove {n}"),
            Op::Stop(n) => format!("stop {n}"),
            Op::SetCpuset(n, c) => format!("cpuset {n} = {c}"),
            Op::ClearCpuset(n) => format!("clear cpuset {n}"),
            Op::SetWeight(n, w) => format!("weight {n} = {w}"),
            Op::MoveWorkers(a, b) => format!("move {a} to {b}"),
            Op::SetAffinity(n, c) => format!("pin {n} to {c}"),
            Op::SetCpuOnline(c, on) => {
                format!("CPU {c} {}", if *on { "online" } else { "offline" })
            }
            Op::AttachScheduler(s) => format!("attach {}", s.name),
            Op::DetachScheduler => "detach scheduler".into(),
            Op::RestartScheduler => "restart scheduler".into(),
            Op::ReplaceScheduler(s) => format!("replace scheduler by {}", s.name),
            Op::CaptureSnapshot(n) => format!("snapshot {n}"),
        }
    }

    /// Applies a scheduler operation; `None` for the others.
    pub(crate) fn apply_scheduler(&self, sup: &Supervisor) -> Option<anyhow::Result<String>> {
        Some(match self {
            Op::AttachScheduler(s) => (|| {
                let running = sup.pid();
                if running != 0 {
                    anyhow::bail!(
                        "attach {}: a scheduler (pid {running}) is already running; use ReplaceScheduler",
                        s.name
                    );
                }
                let pid = sup.spawn_staged(s.name)?;
                Ok(format!("attached {} (pid {pid})", s.name))
            })(),
            Op::DetachScheduler => sup
                .kill_current()
                .map(|gone| match gone {
                    Some(n) => format!("detached {n}"),
                    None => "detach: no scheduler was running".into(),
                })
                .map_err(Into::into),
            Op::RestartScheduler => (|| {
                let boot_name = sup.boot_name();
                let old = sup.pid();
                sup.kill_current()?;
                let pid = sup.spawn_from_paths(
                    boot_name,
                    BOOT_SCHEDULER.as_ref(),
                    BOOT_SCHED_ARGS.as_ref(),
                    BOOT_SCHED_LOG.as_ref(),
                )?;
                Ok(format!("restarted {boot_name} (pid {old} -> {pid})"))
            })(),
            Op::ReplaceScheduler(s) => {
                let old = match sup.kill_current() {
                    Ok(old) => old.unwrap_or_else(|| "none".into()),
                    Err(e) => return Some(Err(e.into())),
                };
                sup.spawn_staged(s.name)
                    .map(|pid| format!("replaced {old} with {} (pid {pid})", s.name))
                    .map_err(Into::into)
            }
            _ => return None,
        })
    }
}

/// How long a step holds after its operations.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HoldSpec {
    duration: Duration,
    frac: Option<f64>,
}

impl HoldSpec {
    /// Holds for `d` (ended early if the scheduler dies).
    pub fn fixed(d: Duration) -> Self {
        HoldSpec {
            duration: d,
            frac: None,
        }
    }

    /// Holds for this fraction of the test's duration (`ctx.duration`).
    pub fn frac(f: f64) -> Self {
        HoldSpec {
            duration: Duration::ZERO,
            frac: Some(f),
        }
    }

    /// The hold's length in a run of `total`.
    pub(crate) fn duration(&self, total: Duration) -> Duration {
        match self.frac {
            Some(f) => total.mul_f64(f.max(0.0)),
            None => self.duration,
        }
    }
}

/// Operations, then a hold.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub(crate) ops: Vec<Op>,
    pub(crate) hold: HoldSpec,
}

impl Step {
    /// A step applying `ops` in order, then holding.
    pub fn new(ops: Vec<Op>, hold: HoldSpec) -> Self {
        Step { ops, hold }
    }
}

/// Holds for `d`, or until the scheduler dies; returns the death if it did.
pub(crate) fn hold_or_sched_died(
    sup: &Supervisor,
    d: Duration,
) -> Option<scheduler::SchedulerDied> {
    let t0 = Instant::now();
    while t0.elapsed() < d {
        if let Some(death) = sup.check_alive() {
            return Some(death);
        }
        std::thread::sleep(Duration::from_millis(20).min(d.saturating_sub(t0.elapsed())));
    }
    sup.check_alive()
}

/// Runs the steps in order, then stops the workers still running and judges
/// every worker with the checks of `ctx` (no judgement when no worker ran).
/// An operation that fails, or a scheduler death the harness did not cause,
/// ends the run with an error (downcastable to
/// [`scheduler::SpawnSchedulerError`], [`scheduler::SchedulerDied`] or
/// [`scheduler::KillSchedulerError`]).
pub fn execute_steps(ctx: &Ctx, steps: Vec<Step>) -> anyhow::Result<AssertResult> {
    super::steps::run(ctx, steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_short_and_name_what_the_op_touches() {
        let labels: Vec<String> = [
            Op::add_cgroup(CgroupDef::named("cg_a").workers(1)),
            Op::spawn(CgroupDef::named("cg_b").workers(3)),
            Op::set_cpuset("cg_a", [0, 1]),
            Op::move_workers("cg_a", "cg_b"),
            Op::cpu_offline(1),
            Op::restart_scheduler(),
            Op::capture_snapshot("held"),
        ]
        .iter()
        .map(Op::label)
        .collect();
        assert_eq!(
            labels,
            [
                "add cg_a (1 worker)",
                "spawn 3 workers in cg_b",
                "cpuset cg_a = 0-1",
                "move cg_a to cg_b",
                "CPU 1 offline",
                "restart scheduler",
                "snapshot held",
            ]
        );
    }
}
