//! The test harness judged both ways: each test boots a VM through
//! `#[ktstr_test]` and its verdict must be the one it claims.

use ktstr::prelude::*;

/// The guest sees exactly the declared CPUs.
#[ktstr_test(llcs = 1, cores = 2, threads = 1, duration_s = 1)]
fn smoke_cpu_count_matches_topology(ctx: &Ctx) -> Result<AssertResult> {
    let online = std::fs::read_to_string("/sys/devices/system/cpu/online")?;
    let n = std::thread::available_parallelism()?.get() as u32;
    if n != ctx.topology.nr_cpus() {
        return Ok(AssertResult::fail_msg(format!(
            "guest has {n} CPUs online ({}), declared {}",
            online.trim(),
            ctx.topology.nr_cpus()
        )));
    }
    Ok(AssertResult::pass().note("cpus", format!("{n} online: {}", online.trim())))
}

// Fixtures: tests that must end a certain way. The drivers below run each in
// its VM and check the outcome is the one the harness promises.

use ktstr::test_support::{Outcome, run_test};
use std::time::{Duration, Instant};

#[ktstr_test(harness_fixture = true, duration_s = 1)]
fn fixture_fails_with_message(_ctx: &Ctx) -> Result<AssertResult> {
    Ok(AssertResult::fail_msg("x-marks-the-spot"))
}

#[ktstr_test(harness_fixture = true, duration_s = 1)]
fn fixture_panics(_ctx: &Ctx) -> Result<AssertResult> {
    panic!("boom-in-the-guest-42");
}

#[ktstr_test(harness_fixture = true, duration_s = 1)]
fn fixture_returns_err(_ctx: &Ctx) -> Result<AssertResult> {
    std::fs::read("/no/such/file")?;
    Ok(AssertResult::pass())
}

#[ktstr_test(harness_fixture = true, duration_s = 1, watchdog_timeout_s = 12)]
fn fixture_hangs(_ctx: &Ctx) -> Result<AssertResult> {
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[ktstr_test(harness_fixture = true, duration_s = 1, expect_err = true)]
fn fixture_expect_err_body_fails(_ctx: &Ctx) -> Result<AssertResult> {
    Ok(AssertResult::fail_msg("failing on purpose"))
}

#[ktstr_test(harness_fixture = true, duration_s = 1, expect_err = true)]
fn fixture_expect_err_but_passes(_ctx: &Ctx) -> Result<AssertResult> {
    Ok(AssertResult::pass())
}

#[ktstr_test(harness_fixture = true, duration_s = 1, expect_err = true)]
fn fixture_expect_err_kernel_panics(_ctx: &Ctx) -> Result<AssertResult> {
    std::fs::write("/proc/sysrq-trigger", "c")?;
    Ok(AssertResult::fail_msg("the kernel survived sysrq-c"))
}

fn expect_fail(name: &str, needles: &[&str]) -> String {
    match run_test(&format!("harness::{name}")) {
        Outcome::Fail(msg) => {
            for n in needles {
                assert!(msg.contains(n), "{name}: failure lacks {n:?}:\n{msg}");
            }
            msg
        }
        other => panic!("{name} must fail, got {other:?}"),
    }
}

#[test]
fn vm_failing_verdict_fails_showing_its_message() {
    expect_fail("fixture_fails_with_message", &["x-marks-the-spot"]);
}

#[test]
fn vm_panicking_body_fails_showing_the_panic() {
    expect_fail("fixture_panics", &["boom-in-the-guest-42", "panicked"]);
}

#[test]
fn vm_body_error_fails_showing_the_error() {
    expect_fail(
        "fixture_returns_err",
        &["returned an error", "No such file"],
    );
}

#[test]
fn vm_hanging_body_fails_as_hung_at_the_watchdog() {
    let t0 = Instant::now();
    let report = ktstr::test_support::run(
        "harness::fixture_hangs",
        &ktstr::test_support::RunOptions::default(),
    );
    let (outcome, slot_wait) = (report.outcome(), report.slot_wait);
    match outcome {
        Outcome::Fail(msg) => {
            for n in ["hung", "watchdog_timeout_s = 12"] {
                assert!(
                    msg.contains(n),
                    "fixture_hangs: failure lacks {n:?}:\n{msg}"
                );
            }
        }
        other => panic!("fixture_hangs must fail, got {other:?}"),
    }
    // The watchdog counts from boot; waiting for host slots other VMs hold
    // comes before it and is no part of the verdict's timing.
    let took = t0.elapsed().saturating_sub(slot_wait);
    assert!(
        took >= Duration::from_secs(12),
        "hung verdict before the watchdog: {took:?} (slot wait {slot_wait:?} left out)"
    );
    assert!(
        took < Duration::from_secs(40),
        "hung verdict long after the watchdog: {took:?} (slot wait {slot_wait:?} left out)"
    );
}

#[test]
fn vm_expect_err_inverts_a_failing_body() {
    match run_test("harness::fixture_expect_err_body_fails") {
        Outcome::Pass(msg) => assert!(msg.contains("failing on purpose"), "{msg}"),
        other => panic!("expected a pass, got {other:?}"),
    }
    expect_fail("fixture_expect_err_but_passes", &["expect_err test passed"]);
}

#[test]
fn vm_expect_err_never_inverts_a_kernel_panic() {
    expect_fail(
        "fixture_expect_err_kernel_panics",
        &["guest kernel panic", "sysrq triggered crash"],
    );
}
