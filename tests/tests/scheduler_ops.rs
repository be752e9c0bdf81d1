//! Scheduler-lifecycle failures judged in the guest: the typed errors a body
//! gets when the scheduler stalls or a staged binary dies at start-up. The
//! spec's own versions (`expect_err`) live in `scheduler_lifecycle.rs`; these
//! companions look inside the error instead of only expecting one.

use anyhow::Result;
use ktstr::assert::AssertResult;
use ktstr::ktstr_test;
use ktstr::scenario::Ctx;
use ktstr::test_support::{Scheduler, SchedulerSpec};

const PRIMARY_SCHED: Scheduler =
    Scheduler::named("lifecycle_primary").binary(SchedulerSpec::Discover("scx-ktstr"));

/// Stops dispatching one second in: the kernel's watchdog ejects it.
const STALL_AFTER_1S_SCHED: Scheduler = Scheduler::named("stall_after_1s")
    .binary(SchedulerSpec::Discover("scx-ktstr"))
    .sched_args(&["--stall-after", "1"]);

/// `/bin/false` staged as a "scheduler": it exits at once.
const BROKEN_BINARY_SCHED: Scheduler =
    Scheduler::named("broken_binary").binary(SchedulerSpec::Path("/bin/false"));

/// Companion of the verbatim stall test, without `expect_err`: the error is a
/// scheduler death of kind SCX_EXIT_ERROR_STALL, and the hold ended early.
#[ktstr_test(
    scheduler = STALL_AFTER_1S_SCHED,
    llcs = 1,
    cores = 2,
    threads = 1,
    memory_mib = 512,
    duration_s = 20,
    watchdog_timeout_s = 30,
    auto_repro = false,
    cleanup_budget_ms = 5000,
    // The stall is the point: CPUs idle with runnable tasks for the
    // watchdog's 3 s is what the monitor's stuck check would fail.
    monitor = ktstr::monitor::MonitorChecks::INHERIT.no_stuck(),
)]
fn stall_ends_the_hold_early_with_scx_exit_error_stall(ctx: &Ctx) -> Result<AssertResult> {
    use ktstr::scenario::ops::{HoldSpec, Step, execute_steps};
    let t0 = std::time::Instant::now();
    let steps = vec![Step::new(
        vec![],
        HoldSpec::fixed(std::time::Duration::from_secs(15)),
    )];
    let result = execute_steps(ctx, steps);
    let elapsed = t0.elapsed();
    let Err(e) = result else {
        return Ok(AssertResult::fail_msg(
            "the 15 s hold completed: the stall was never detected",
        ));
    };
    let Some(death) = e.downcast_ref::<ktstr::scheduler::SchedulerDied>() else {
        return Ok(AssertResult::fail_msg(format!(
            "expected a SchedulerDied error, got: {e:#}"
        )));
    };
    if death.kind != ktstr::scheduler::ExitKind::ErrorStall {
        return Ok(AssertResult::fail_msg(format!(
            "expected SCX_EXIT_ERROR_STALL, got: {death}"
        )));
    }
    if elapsed >= std::time::Duration::from_secs(12) {
        return Ok(AssertResult::fail_msg(format!(
            "the hold lasted {elapsed:?}, not under 12 s"
        )));
    }
    Ok(AssertResult::pass().note("stall", format!("{death} after {elapsed:?}")))
}

/// Companion of the verbatim broken-binary test, without `expect_err`: the
/// error downcasts to `SpawnSchedulerError::StartupDied`.
#[ktstr_test(
    scheduler = PRIMARY_SCHED,
    staged_schedulers = [BROKEN_BINARY_SCHED],
    llcs = 1,
    cores = 2,
    threads = 1,
    memory_mib = 512,
    duration_s = 5,
    auto_repro = false,
    cleanup_budget_ms = 5000,
)]
fn broken_staged_binary_downcasts_to_startup_died(ctx: &Ctx) -> Result<AssertResult> {
    use ktstr::scenario::ops::{HoldSpec, Op, Step, execute_steps};
    let steps = vec![Step::new(
        vec![Op::replace_scheduler(&BROKEN_BINARY_SCHED)],
        HoldSpec::fixed(std::time::Duration::from_millis(500)),
    )];
    match execute_steps(ctx, steps) {
        Ok(v) => Ok(AssertResult::fail_msg(format!(
            "replace with /bin/false succeeded: {v}"
        ))),
        Err(e) => match e.downcast_ref::<ktstr::scheduler::SpawnSchedulerError>() {
            Some(ktstr::scheduler::SpawnSchedulerError::StartupDied { .. }) => {
                Ok(AssertResult::pass().note("spawn", format!("{e:#}")))
            }
            _ => Ok(AssertResult::fail_msg(format!(
                "expected StartupDied, got: {e:#}"
            ))),
        },
    }
}
