//! Scenario steps: operations on the system under test (scheduler
//! lifecycle today), each followed by a hold, run in order.
//!
//! ```no_run
//! use std::time::Duration;
//! use ktstr_ops::scenario::ops::{HoldSpec, Op, Step, execute_steps};
//! # fn body(ctx: &ktstr_ops::scenario::Ctx) -> anyhow::Result<ktstr_ops::assert::AssertResult> {
//! let steps = vec![
//!     Step::new(vec![], HoldSpec::fixed(Duration::from_millis(500))),
//!     Step::new(vec![Op::restart_scheduler()], HoldSpec::fixed(Duration::from_millis(500))),
//! ];
//! execute_steps(ctx, steps)
//! # }
//! ```

use std::time::{Duration, Instant};

use anyhow::Context as _;

use super::Ctx;
use crate::assert::AssertResult;
use crate::scheduler::{
    self, BOOT_SCHED_ARGS, BOOT_SCHED_LOG, BOOT_SCHEDULER, Scheduler, Supervisor,
};

/// An operation a step applies.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Op {
    /// Starts a staged scheduler where none runs.
    AttachScheduler(Scheduler),
    /// Stops the running scheduler; the kernel default takes over.
    DetachScheduler,
    /// Stops the boot scheduler and starts it again from `/scheduler`.
    RestartScheduler,
    /// Stops the running scheduler and starts a staged one.
    ReplaceScheduler(Scheduler),
}

impl Op {
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

    fn apply(&self, sup: &Supervisor) -> anyhow::Result<String> {
        match self {
            Op::AttachScheduler(s) => {
                let running = sup.pid();
                if running != 0 {
                    anyhow::bail!(
                        "attach {}: a scheduler (pid {running}) is already running; use ReplaceScheduler",
                        s.name
                    );
                }
                let pid = sup.spawn_staged(s.name)?;
                Ok(format!("attached {} (pid {pid})", s.name))
            }
            Op::DetachScheduler => {
                let gone = sup.kill_current()?;
                Ok(match gone {
                    Some(n) => format!("detached {n}"),
                    None => "detach: no scheduler was running".into(),
                })
            }
            Op::RestartScheduler => {
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
            }
            Op::ReplaceScheduler(s) => {
                let old = sup.kill_current()?.unwrap_or_else(|| "none".into());
                let pid = sup.spawn_staged(s.name)?;
                Ok(format!("replaced {old} with {} (pid {pid})", s.name))
            }
        }
    }
}

/// How long a step holds after its operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HoldSpec {
    duration: Duration,
}

impl HoldSpec {
    /// Holds for `d` (ended early if the scheduler dies).
    pub fn fixed(d: Duration) -> Self {
        HoldSpec { duration: d }
    }
}

/// Operations, then a hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    ops: Vec<Op>,
    hold: HoldSpec,
}

impl Step {
    /// A step applying `ops` in order, then holding.
    pub fn new(ops: Vec<Op>, hold: HoldSpec) -> Self {
        Step { ops, hold }
    }
}

/// Holds for `d`, or until the scheduler dies; returns the death if it did.
fn hold_or_sched_died(sup: &Supervisor, d: Duration) -> Option<scheduler::SchedulerDied> {
    let t0 = Instant::now();
    while t0.elapsed() < d {
        if let Some(death) = sup.check_alive() {
            return Some(death);
        }
        std::thread::sleep(Duration::from_millis(20).min(d.saturating_sub(t0.elapsed())));
    }
    sup.check_alive()
}

/// Runs the steps in order. An operation that fails, or a scheduler death the
/// harness did not cause, ends the run with an error (downcastable to
/// [`scheduler::SpawnSchedulerError`], [`scheduler::SchedulerDied`] or
/// [`scheduler::KillSchedulerError`]).
pub fn execute_steps(ctx: &Ctx, steps: Vec<Step>) -> anyhow::Result<AssertResult> {
    let sup = &ctx.scheduler;
    let mut verdict = AssertResult::pass();
    for (i, step) in steps.into_iter().enumerate() {
        for op in &step.ops {
            let done = op.apply(sup).with_context(|| format!("step {i}: {op:?}"))?;
            verdict = verdict.note("ops", format!("step {i}: {done}"));
        }
        if let Some(death) = hold_or_sched_died(sup, step.hold.duration) {
            sup.mark_death_surfaced();
            return Err(anyhow::Error::new(death).context(format!("step {i}: during the hold")));
        }
    }
    Ok(verdict)
}
