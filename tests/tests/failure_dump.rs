//! The failure dump: a crashed or stalled scx-ktstr's own state read from guest memory and
//! printed under the verdict — its counters equal to what it last reported itself, its
//! hash map's entries with their keys — and nothing after a passing test unless asked.
//!
//! The fixtures run without auto-repro (its probe VM is another test's business); the
//! `post_vm` checks compare the dump with the scheduler's last own report, which the guest
//! prints on the console when the scheduler dies.

use std::time::Duration;

use anyhow::{Context, ensure};
use ktstr::prelude::*;
use ktstr::scenario::ops::{HoldSpec, Op, Step, execute_steps};
use ktstr::test_support::{Outcome, run_test};

const CRASHES: Scheduler = Scheduler::named("scx_ktstr_crash")
    .binary(SchedulerSpec::Discover("scx-ktstr"))
    .sched_args(&["--crash-after", "2"]);
const STALLS: Scheduler = Scheduler::named("scx_ktstr_stall")
    .binary(SchedulerSpec::Discover("scx-ktstr"))
    .sched_args(&["--stall-after", "2"]);
const SCX_KTSTR: Scheduler =
    Scheduler::named("scx_ktstr").binary(SchedulerSpec::Discover("scx-ktstr"));
/// With a BPF arena of 64 pages, 5 of them allocated at init.
const WITH_ARENA: Scheduler = Scheduler::named("scx_ktstr_arena")
    .binary(SchedulerSpec::Discover("scx-ktstr"))
    .sched_args(&["--arena"]);

/// The counters of the scheduler's last `scx-ktstr: nr_enqueued=..` line on the console.
fn last_report(console: &[String]) -> anyhow::Result<[u64; 3]> {
    let line = console
        .iter()
        .rev()
        .find(|l| l.contains("scx-ktstr: nr_enqueued="))
        .context("no counters line of the scheduler on the console")?;
    let mut out = [0u64; 3];
    for (i, key) in ["nr_enqueued=", "nr_dispatched=", "nr_select_cpu="]
        .iter()
        .enumerate()
    {
        let v = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .with_context(|| format!("no {key} in {line:?}"))?;
        out[i] = v.parse().with_context(|| format!("{key}{v} in {line:?}"))?;
    }
    Ok(out)
}

/// The dump's counters equal the scheduler's last report; its task map has entries.
fn dump_matches_the_last_report(result: &VmResult) -> anyhow::Result<()> {
    let dump = result.dump.as_ref().context("no failure dump was read")?;
    let reported = last_report(&result.console)?;
    let mut dumped = [0u64; 3];
    for (i, name) in ["nr_enqueued", "nr_dispatched", "nr_select_cpu"]
        .iter()
        .enumerate()
    {
        dumped[i] = dump
            .var(name)
            .and_then(|v| v.int)
            .with_context(|| format!("no integer {name} in the dump:\n{dump}"))?;
    }
    println!("DUMP-CHECK reported {reported:?} dumped {dumped:?}");
    ensure!(
        dumped == reported,
        "the dump's counters {dumped:?} differ from the scheduler's last report {reported:?}"
    );
    let tasks = dump.map("ktstr_tasks").context("no ktstr_tasks map")?;
    ensure!(
        tasks.total.unwrap_or(0) > 0 && !tasks.entries.is_empty(),
        "ktstr_tasks has no entries: {tasks:?}"
    );
    Ok(())
}

fn no_dump(result: &VmResult) -> anyhow::Result<()> {
    ensure!(result.dump.is_none(), "a passing test read a dump");
    Ok(())
}

fn a_requested_dump(result: &VmResult) -> anyhow::Result<()> {
    let dump = result.dump.as_ref().context("dump = true read none")?;
    ensure!(dump.reason == "requested", "{}", dump.reason);
    ensure!(dump.scheduler.as_deref() == Some("ktstr"), "{dump}");
    ensure!(
        dump.var("nr_enqueued").and_then(|v| v.int).unwrap_or(0) > 0,
        "{dump}"
    );
    // The arena's pages in use: the 5 its init allocated, of 64.
    let arena = dump.map("ktstr_arena").context("no ktstr_arena map")?;
    println!("ARENA-CHECK {arena:?}");
    ensure!(
        arena.kind == "arena" && arena.total == Some(5) && arena.max_entries == 64,
        "the arena's pages in use are not the 5 allocated: {arena:?}"
    );
    Ok(())
}

#[ktstr_test(harness_fixture = true, scheduler = CRASHES, auto_repro = false, duration_s = 5,
             post_vm = dump_matches_the_last_report)]
fn fixture_dump_after_a_crash(ctx: &Ctx) -> Result<AssertResult> {
    scenarios::steady(ctx)
}

#[ktstr_test(harness_fixture = true, scheduler = STALLS, auto_repro = false, duration_s = 5,
             post_vm = dump_matches_the_last_report)]
fn fixture_dump_after_a_stall(ctx: &Ctx) -> Result<AssertResult> {
    scenarios::steady(ctx)
}

#[ktstr_test(harness_fixture = true, scheduler = SCX_KTSTR, duration_s = 2, post_vm = no_dump)]
fn fixture_passing_without_dump(ctx: &Ctx) -> Result<AssertResult> {
    scenarios::steady(ctx)
}

#[ktstr_test(harness_fixture = true, scheduler = WITH_ARENA, duration_s = 2, dump = true,
             post_vm = a_requested_dump)]
fn fixture_passing_with_dump(ctx: &Ctx) -> Result<AssertResult> {
    scenarios::steady(ctx)
}

/// Four spinners on two CPUs keep two tasks queued on scx-ktstr's shared DSQ; a step asks
/// for the dump while they run (any body can: `Op::capture_snapshot("ktstr:dump:<why>")`).
fn queued_tasks_named(result: &VmResult) -> anyhow::Result<()> {
    let dump = result.dump.as_ref().context("no dump was read")?;
    ensure!(dump.reason == "mid-body", "{}", dump.reason);
    let q = dump
        .dsqs
        .iter()
        .find(|q| q.name == "0x0")
        .with_context(|| format!("no DSQ 0x0 in:\n{dump}"))?;
    println!("DSQ-CHECK {q:?}");
    ensure!(q.nr > 0, "nothing queued on DSQ 0x0:\n{dump}");
    ensure!(
        q.tasks.len() == (q.nr as usize).min(16)
            && q.tasks.iter().all(|(p, c)| *p > 0 && !c.is_empty()),
        "DSQ 0x0 has {} queued but lists {:?}",
        q.nr,
        q.tasks
    );
    Ok(())
}

#[ktstr_test(harness_fixture = true, scheduler = SCX_KTSTR, duration_s = 3,
             post_vm = queued_tasks_named)]
fn fixture_dump_mid_body(ctx: &Ctx) -> Result<AssertResult> {
    execute_steps(
        ctx,
        vec![
            Step::new(
                vec![Op::add_cgroup(CgroupDef::named("spin").workers(4))],
                HoldSpec::fixed(Duration::from_secs(1)),
            ),
            Step::new(
                vec![Op::capture_snapshot("ktstr:dump:mid-body")],
                HoldSpec::fixed(Duration::from_millis(200)),
            ),
        ],
    )
}

fn failed_with_a_matching_dump(name: &str, exit: &str) {
    match run_test(name) {
        Outcome::Fail(text) => {
            println!("{text}");
            for needle in [
                exit,
                "scheduler dump (the scheduler died",
                ".bss (map ",
                "u64 nr_dispatched = ",
                "map ktstr_tasks (id ",
            ] {
                assert!(text.contains(needle), "{needle:?} missing:\n{text}");
            }
            assert!(
                !text.contains("post_vm check failed"),
                "the dump does not match the scheduler's last report:\n{text}"
            );
        }
        other => panic!("expected a failure, got {other:?}"),
    }
}

#[test]
fn vm_a_crash_prints_the_dump_with_the_scheduler_s_last_counters() {
    failed_with_a_matching_dump(
        "failure_dump::fixture_dump_after_a_crash",
        "SCX_EXIT_ERROR_BPF",
    );
}

#[ignore = "full: a second scheduler death (~25 s) for the path the crash test covers; run with cargo xtask test --full"]
#[test]
fn vm_a_stall_prints_the_dump_with_the_scheduler_s_last_counters() {
    failed_with_a_matching_dump(
        "failure_dump::fixture_dump_after_a_stall",
        "SCX_EXIT_ERROR_STALL",
    );
}

#[test]
fn vm_a_passing_test_reads_no_dump_unless_asked() {
    match run_test("failure_dump::fixture_passing_without_dump") {
        Outcome::Pass(_) => {}
        other => panic!("expected a pass, got {other:?}"),
    }
    match run_test("failure_dump::fixture_passing_with_dump") {
        Outcome::Pass(_) => {}
        other => panic!("expected a pass with a dump, got {other:?}"),
    }
}

#[test]
fn vm_a_dump_mid_body_lists_the_queued_tasks() {
    match run_test("failure_dump::fixture_dump_mid_body") {
        Outcome::Pass(_) => {}
        other => panic!("expected a pass, got {other:?}"),
    }
}

const REJECTED: Scheduler = Scheduler::named("scx_ktstr_rejected")
    .binary(SchedulerSpec::Discover("scx-ktstr"))
    .sched_args(&["--planted-reject"]);

#[ktstr_test(harness_fixture = true, scheduler = REJECTED, auto_repro = false, duration_s = 1)]
fn fixture_rejected_by_the_verifier(_ctx: &Ctx) -> Result<AssertResult> {
    Ok(AssertResult::pass())
}

/// A program the verifier rejects: the failure names it, the instructions processed where
/// the verifier stopped, and the log's last lines with the reason.
#[test]
fn vm_a_verifier_rejection_names_the_program_and_where_it_stopped() {
    match run_test("failure_dump::fixture_rejected_by_the_verifier") {
        Outcome::Fail(text) => {
            println!("{text}");
            for needle in [
                "the BPF verifier rejected program ktstr_enqueue after processing ",
                " instructions (limit 1000000)",
                "invalid mem access 'scalar'",
            ] {
                assert!(text.contains(needle), "{needle:?} missing:\n{text}");
            }
        }
        other => panic!("expected a failure, got {other:?}"),
    }
}
