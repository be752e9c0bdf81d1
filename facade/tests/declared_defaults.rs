//! `#[ktstr_test]` fills every key it is not given from `TestConfig::DEFAULT` (the one place
//! the defaults are written), and a given duration moves the default watchdog with it.
//! No VM: the fixtures are registered, never run.

use ktstr::prelude::*;
use ktstr::test_support::{TestConfig, TestEntry};

#[ktstr_test(harness_fixture = true)]
fn bare(_ctx: &Ctx) -> Result<AssertResult> {
    Ok(AssertResult::pass())
}

#[ktstr_test(harness_fixture = true, duration_s = 10)]
fn longer(_ctx: &Ctx) -> Result<AssertResult> {
    Ok(AssertResult::pass())
}

#[ktstr_test(
    harness_fixture = true,
    llcs = 2,
    cores = 1,
    watchdog_timeout_s = 30,
    expect_err = "StartupDied",
    auto_repro = false,
    memory_mib = 1024
)]
fn keyed(_ctx: &Ctx) -> Result<AssertResult> {
    Ok(AssertResult::pass())
}

fn entry(name: &str) -> &'static TestEntry {
    let full = format!("declared_defaults::{name}");
    ktstr::__private::KTSTR_TESTS
        .iter()
        .find(|t| t.name == full)
        .unwrap_or_else(|| panic!("{full} is not registered"))
}

/// The fields a declaration can set, as one comparable tuple.
fn fields(c: &TestConfig) -> impl PartialEq + std::fmt::Debug {
    (
        (c.numa_nodes, c.llcs, c.cores, c.threads, c.memory_mib),
        (
            c.duration_s,
            c.watchdog_timeout_s,
            c.cleanup_budget_ms,
            c.num_snapshots,
        ),
        (
            c.expect_err,
            c.expect_err_matching,
            c.allow_inconclusive,
            c.kaslr,
        ),
        (c.auto_repro, c.dump, c.probes, c.scheduler.is_none()),
        (c.staged_schedulers.len(), c.post_vm.is_none()),
    )
}

#[test]
fn a_bare_declaration_is_the_default() {
    assert_eq!(fields(&entry("bare").config), fields(&TestConfig::DEFAULT));
    assert_eq!(
        (
            TestConfig::DEFAULT.duration_s,
            TestConfig::DEFAULT.watchdog_timeout_s
        ),
        (5, 5 + TestConfig::WATCHDOG_MARGIN_S)
    );
}

#[test]
fn a_given_duration_moves_the_default_watchdog() {
    let c = &entry("longer").config;
    assert_eq!(
        fields(c),
        fields(&TestConfig {
            duration_s: 10,
            watchdog_timeout_s: 10 + TestConfig::WATCHDOG_MARGIN_S,
            ..TestConfig::DEFAULT
        })
    );
}

#[test]
fn given_keys_replace_their_defaults_only() {
    let c = &entry("keyed").config;
    assert_eq!(
        fields(c),
        fields(&TestConfig {
            llcs: 2,
            cores: 1,
            memory_mib: 1024,
            watchdog_timeout_s: 30,
            expect_err: true,
            expect_err_matching: Some("StartupDied"),
            auto_repro: false,
            ..TestConfig::DEFAULT
        })
    );
}
