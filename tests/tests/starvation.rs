//! Starvation is caught, and only starvation: workers starved on purpose by a
//! SCHED_FIFO hog fail with the starvation check as the reason; the positive
//! twin with the same thresholds and no hog passes.

use std::collections::BTreeSet;

use ktstr::prelude::*;
use ktstr::scenario::scenarios::{Hog, rt_starvation};

/// `expect_err`: it must fail, and for the starvation check alone. Any other
/// outcome is reported as a pass of the body, which `expect_err` turns into
/// a failure quoting what went wrong.
#[ktstr_test(llcs = 1, cores = 2, threads = 1, duration_s = 3, expect_err = true)]
fn starved_workers_fail_with_starvation(ctx: &Ctx) -> Result<AssertResult> {
    let v = match rt_starvation(ctx, Hog::On) {
        Ok(v) => v,
        Err(e) => {
            return Ok(AssertResult::pass()
                .note("expect_err", format!("the scenario errored instead: {e:#}")));
        }
    };
    let checks: BTreeSet<&str> = v.failures().map(|d| d.check.as_str()).collect();
    if checks != BTreeSet::from(["starvation"]) {
        return Ok(AssertResult::pass().note(
            "expect_err",
            format!("failed checks were {checks:?}, not exactly [\"starvation\"]: {v}"),
        ));
    }
    Ok(v)
}

/// The positive twin: the same victims and thresholds, no hog.
#[ktstr_test(llcs = 1, cores = 2, threads = 1, duration_s = 3)]
fn unstarved_twin_passes(ctx: &Ctx) -> Result<AssertResult> {
    rt_starvation(ctx, Hog::Off)
}
