//! The scheduler lifecycle against a real VM: scx-ktstr as the boot
//! scheduler, staged schedulers, and the Ops that attach, restart and replace
//! them. The two tests of ../shared/spec/scheduler_lifecycle.rs marked
//! VERBATIM below are copied unchanged with their constants; the three
//! `post_vm` tests of the spec are here without `post_vm`/`num_snapshots` (the
//! host monitor is a later issue) and prove in the guest instead that the
//! post-op scheduler dispatched.

use anyhow::Result;
use ktstr::assert::AssertResult;
use ktstr::ktstr_test;
use ktstr::scenario::Ctx;
use ktstr::test_support::{Scheduler, SchedulerSpec};

// ---- VERBATIM from the spec: constants ----
const PRIMARY_SCHED: Scheduler =
    Scheduler::named("lifecycle_primary").binary(SchedulerSpec::Discover("scx-ktstr"));

const STAGED_ALT_SCHED: Scheduler =
    Scheduler::named("lifecycle_alt").binary(SchedulerSpec::Discover("scx-ktstr"));

/// Boot baseline for the cold-start attach test below: the kernel's
/// default scheduler (EEVDF on current kernels) so no scx_* userspace
/// binary runs at boot. `Op::AttachScheduler` then dispatches the
/// first scx attach mid-scenario.
const COLD_START_BOOT: Scheduler = Scheduler::named("cold_start_boot").binary(SchedulerSpec::Eevdf);

/// Staged scheduler for the cold-start attach test.
const COLD_START_ALT_SCHED: Scheduler =
    Scheduler::named("cold_start_alt").binary(SchedulerSpec::Discover("scx-ktstr"));

/// Scheduler instance configured with `--stall-after 1` so it stops
/// dispatching one second into the run. The kernel's scx watchdog
/// then detects the stall and exits the scheduler with
/// `SCX_EXIT_ERROR_STALL`, surfaced to the host as a scheduler death
/// the dispatch-loop hold should observe and truncate early on. Used
/// only by `dispatch_hold_truncates_when_scheduler_dies_midstep`.
const STALL_AFTER_1S_SCHED: Scheduler = Scheduler::named("stall_after_1s")
    .binary(SchedulerSpec::Discover("scx-ktstr"))
    .sched_args(&["--stall-after", "1"]);

// ---- VERBATIM from the spec: dispatch_hold_truncates_when_scheduler_dies_midstep ----
/// Pins `hold_or_sched_died`'s mid-hold scheduler-death detection +
/// early-truncation behaviour. Without the early truncation, an Op
/// step's hold would block until its full configured duration even
/// when the scheduler died at second 1 — leaving the per-step
/// `sched_died_during_hold` flag accurate but the wall-clock time
/// inflated, masking the actual death-detection latency.
///
/// Mechanism: scheduler launches with `--stall-after 1`. The BPF
/// `stall` flag flips at t≈1s; `ktstr_dispatch` stops moving tasks
/// to the shared DSQ; the kernel scx watchdog detects stalled
/// runnable tasks within a few seconds and exits the scheduler with
/// `SCX_EXIT_ERROR_STALL`. The dispatch-loop hold is configured
/// for 15 s — well beyond the watchdog deadline — so the hold MUST
/// truncate early when the scheduler dies. The post-VM assertion
/// rejects any elapsed time near the full 15 s budget.
#[ktstr_test(
    scheduler = STALL_AFTER_1S_SCHED,
    llcs = 1,
    cores = 2,
    threads = 1,
    memory_mib = 512,
    duration_s = 20,
    watchdog_timeout_s = 30,
    auto_repro = false,
    expect_err = true,
    cleanup_budget_ms = 5000,
)]
fn dispatch_hold_truncates_when_scheduler_dies_midstep(ctx: &Ctx) -> Result<AssertResult> {
    use ktstr::scenario::ops::{HoldSpec, Step, execute_steps};
    let t0 = std::time::Instant::now();
    let steps = vec![Step::new(
        vec![],
        HoldSpec::fixed(std::time::Duration::from_secs(15)),
    )];
    let result = execute_steps(ctx, steps);
    let elapsed = t0.elapsed();

    // Assert early-truncation: the configured hold is 15 s but the
    // scheduler dies via the stall watchdog at roughly t=1s+watchdog.
    // 12 s threshold is well below the configured 15 s hold and well
    // above any plausible watchdog deadline (kernel scx watchdog is
    // typically 2-10s depending on the build), so a step elapsed
    // exceeding 12 s pins a regression where `hold_or_sched_died`
    // stops detecting scheduler death mid-step.
    let ceiling = std::time::Duration::from_secs(12);
    if elapsed >= ceiling {
        return Ok(AssertResult::fail_msg(format!(
            "dispatch loop did not truncate after scheduler-stall death: \
             configured hold = 15 s, scheduler stalled at t≈1 s + watchdog, \
             actual elapsed = {elapsed:?} (≥ {ceiling:?} ceiling). \
             hold_or_sched_died's mid-hold scheduler-death observation is \
             broken — the per-step hold ran to completion despite the \
             scheduler dying. Check pidfd_wait_exit + the dispatch loop's \
             death-observation branch in src/scenario/ops/mod.rs."
        )));
    }
    // Propagate the inner result so the framework's expect_err =
    // true + auto-repro = false machinery still sees the genuine
    // SCX_EXIT_ERROR_STALL failure surfacing through apply_ops.
    result
}

// ---- VERBATIM from the spec: replace_with_broken_binary_surfaces_startup_died ----
/// `/bin/false` staged as a "scheduler" — exits non-zero
/// immediately, well inside the spawn helper's 1 s liveness window.
/// Used only by `replace_with_broken_binary_surfaces_startup_died`
/// to exercise `SpawnSchedulerError::StartupDied` end-to-end.
/// Choosing `/bin/false` over an invalid-CLI-arg approach decouples
/// the test from scx-ktstr's clap parser staying the same.
const BROKEN_BINARY_SCHED: Scheduler =
    Scheduler::named("broken_binary").binary(SchedulerSpec::Path("/bin/false"));

/// Pins `try_spawn_scheduler`'s `StartupDied` path + the
/// SCHED_PID cleanup + `SpawnSchedulerError::Display` content.
/// When `Op::ReplaceScheduler` stages
/// `/bin/false` as the scheduler binary, the spawn helper's
/// `poll_startup` observes the immediate non-zero exit and
/// bubbles back `SpawnSchedulerError::StartupDied`. The
/// `apply_ops` error path surfaces it as a typed step failure
/// that the framework's `expect_err = true` machinery accepts.
///
/// What this pins:
///   - The error CLASS reaches the operator (StartupDied, not
///     NotAttached or generic spawn failure)
///   - The post-mortem state guarantee — SCHED_PID gets cleared
///     to 0 and the process is reaped — implicit: if it didn't,
///     the next test in the same VM session would observe a stale
///     dead pid and behave unpredictably. The framework's per-VM
///     isolation makes this hard to assert directly, but a
///     regression that leaves SCHED_PID dangling would surface as
///     downstream flake.
#[ktstr_test(
    scheduler = PRIMARY_SCHED,
    staged_schedulers = [BROKEN_BINARY_SCHED],
    llcs = 1,
    cores = 2,
    threads = 1,
    memory_mib = 512,
    duration_s = 5,
    auto_repro = false,
    expect_err = true,
    cleanup_budget_ms = 5000,
)]
fn replace_with_broken_binary_surfaces_startup_died(ctx: &Ctx) -> Result<AssertResult> {
    use ktstr::scenario::ops::{HoldSpec, Op, Step, execute_steps};
    let steps = vec![
        // Settle window so the primary scheduler is firmly attached
        // before we kick off the doomed Op::Replace.
        Step::new(
            vec![],
            HoldSpec::fixed(std::time::Duration::from_millis(500)),
        ),
        // The doomed Replace. kill_current_scheduler kills the
        // primary; spawn_scheduler_for_op then exec's /bin/false as
        // the "scheduler" binary; /bin/false exits non-zero
        // immediately; poll_startup observes the exit;
        // SpawnSchedulerError::StartupDied bubbles back through
        // apply_ops as a typed Op failure. execute_steps returns Err.
        Step::new(
            vec![Op::replace_scheduler(&BROKEN_BINARY_SCHED)],
            HoldSpec::fixed(std::time::Duration::from_millis(500)),
        ),
    ];
    let result = execute_steps(ctx, steps);
    // The Op::Replace MUST fail; if it somehow succeeds, the
    // SpawnSchedulerError::StartupDied path isn't being exercised
    // and the test is silently wrong.
    if let Ok(ref ok_result) = result
        && ok_result.is_pass()
    {
        return Ok(AssertResult::fail_msg(
            "Op::ReplaceScheduler with /bin/false as the scheduler binary DID \
             NOT FAIL — try_spawn_scheduler's StartupDied path is no longer being \
             exercised (poll_startup is missing the immediate exit, or the spawn \
             helper started swallowing exit codes)."
                .to_string(),
        ));
    }
    result
}

// ---- end of the verbatim part ----

/// In the guest: the scheduler running now (the post-op one: each spawn
/// starts a fresh log) dispatched. scx-ktstr prints
/// `scx-ktstr: nr_enqueued=N nr_dispatched=M` every second; its
/// `nr_dispatched` counts `scx_bpf_dsq_move_to_local` successes.
fn prove_post_op_dispatch(ctx: &Ctx, label: &str) -> Result<AssertResult> {
    let t0 = std::time::Instant::now();
    let mut last = String::new();
    while t0.elapsed() < std::time::Duration::from_secs(5) {
        let log = ctx.scheduler.current_log().unwrap_or_default();
        let dispatched = log
            .lines()
            .filter_map(|l| l.split("nr_dispatched=").nth(1))
            .filter_map(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .max();
        if let Some(n) = dispatched.filter(|&n| n > 0) {
            return Ok(AssertResult::pass().note("dispatch", format!("{label}: nr_dispatched={n}")));
        }
        last = log;
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    Ok(AssertResult::fail(
        "dispatch",
        format!(
            "{label}: the post-op scheduler never reported nr_dispatched > 0; its log:\n{last}"
        ),
    ))
}

fn steps_then_prove(ctx: &Ctx, op: ktstr::scenario::ops::Op, label: &str) -> Result<AssertResult> {
    use ktstr::scenario::ops::{HoldSpec, Step, execute_steps};
    let hold = || HoldSpec::fixed(std::time::Duration::from_millis(500));
    let steps = vec![
        Step::new(vec![], hold()),
        Step::new(vec![op], hold()),
        Step::new(vec![], hold()),
    ];
    let verdict = execute_steps(ctx, steps)?;
    Ok(verdict.merged(prove_post_op_dispatch(ctx, label)?))
}

/// The spec's replace test without `post_vm`: Op::ReplaceScheduler swaps the
/// boot scheduler for the staged one, which then dispatches.
#[ktstr_test(
    scheduler = PRIMARY_SCHED,
    staged_schedulers = [STAGED_ALT_SCHED],
    llcs = 1,
    cores = 2,
    threads = 1,
    memory_mib = 512,
    duration_s = 5,
    cleanup_budget_ms = 5000,
)]
fn scheduler_replace_mid_experiment_swaps_via_staged_pack(ctx: &Ctx) -> Result<AssertResult> {
    let op = ktstr::scenario::ops::Op::replace_scheduler(&STAGED_ALT_SCHED);
    steps_then_prove(ctx, op, "after replace")
}

/// The spec's cold-start attach test without `post_vm`.
#[ktstr_test(
    scheduler = COLD_START_BOOT,
    staged_schedulers = [COLD_START_ALT_SCHED],
    llcs = 1,
    cores = 2,
    threads = 1,
    memory_mib = 512,
    duration_s = 5,
    cleanup_budget_ms = 5000,
)]
fn scheduler_attach_from_cold_start_succeeds(ctx: &Ctx) -> Result<AssertResult> {
    let op = ktstr::scenario::ops::Op::attach_scheduler(&COLD_START_ALT_SCHED);
    steps_then_prove(ctx, op, "after cold-start attach")
}

/// The spec's restart test without `post_vm`.
#[ktstr_test(
    scheduler = PRIMARY_SCHED,
    llcs = 1,
    cores = 2,
    threads = 1,
    memory_mib = 512,
    duration_s = 5,
    cleanup_budget_ms = 5000,
)]
fn scheduler_restart_mid_experiment_reattaches_cleanly(ctx: &Ctx) -> Result<AssertResult> {
    let op = ktstr::scenario::ops::Op::restart_scheduler();
    steps_then_prove(ctx, op, "after restart")
}

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
