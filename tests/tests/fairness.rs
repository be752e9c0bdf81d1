//! Verdicts that can be trusted both ways: scx-ktstr with a planted fairness
//! bug (`--unfair`: odd pids get 8 ms slices, even pids 2 ms) must FAIL
//! `steady` naming fairness, on a VM with fewer vCPUs than host cores and on
//! an overcommitted one; the same scheduler without the bug must PASS both.

use ktstr::prelude::*;

const FAIR: Scheduler = Scheduler::named("fair").binary(SchedulerSpec::Discover("scx-ktstr"));
const UNFAIR: Scheduler = Scheduler::named("unfair")
    .binary(SchedulerSpec::Discover("scx-ktstr"))
    .sched_args(&["--unfair"]);

#[ktstr_test(scheduler = UNFAIR, llcs = 1, cores = 2, threads = 1, duration_s = 5, expect_err = "fairness")]
fn unfair_scheduler_fails_steady_1n1l2c1t(ctx: &Ctx) -> Result<AssertResult> {
    scenarios::steady(ctx)
}

#[ktstr_test(scheduler = UNFAIR, llcs = 2, cores = 2, threads = 2, duration_s = 5, expect_err = "fairness")]
fn unfair_scheduler_fails_steady_1n2l2c2t(ctx: &Ctx) -> Result<AssertResult> {
    scenarios::steady(ctx)
}

#[ktstr_test(scheduler = FAIR, llcs = 1, cores = 2, threads = 1, duration_s = 5)]
fn fair_scheduler_passes_steady_1n1l2c1t(ctx: &Ctx) -> Result<AssertResult> {
    scenarios::steady(ctx)
}

#[ktstr_test(scheduler = FAIR, llcs = 2, cores = 2, threads = 2, duration_s = 5)]
fn fair_scheduler_passes_steady_1n2l2c2t(ctx: &Ctx) -> Result<AssertResult> {
    scenarios::steady(ctx)
}
