//! The host-side monitor against a real VM: values read from guest memory
//! (never from the console) in periodic samples and in snapshots taken with
//! every vCPU paused, judged by `post_vm` on the host.

use std::time::Duration;

use anyhow::{Result, ensure};
use ktstr::prelude::*;
use ktstr::scenario::ops::{HoldSpec, Op, Step, execute_steps};

/// Written into the BPF global `ktstr_mark` once by the loader (`--mark`);
/// nothing prints it.
const MARK: u64 = 0x5eed_1e55_0000_0042;

const MONITORED: Scheduler = Scheduler::named("monitored")
    .binary(SchedulerSpec::Discover("scx-ktstr"))
    .sched_args(&["--mark", "6840156759466704962"]);

/// Spinners pinned to one CPU while the snapshot is taken.
const PINNED: u32 = 3;
const PINNED_CPU: u32 = 1;
/// Tasks other than the spinners that may be runnable on that CPU when the
/// snapshot pauses the guest: the agent that requested it, and a kernel thread.
const OTHERS: u32 = 2;

/// `nr_select_cpu` is a counter of scx-ktstr the loader never prints: it
/// reads in every paused snapshot, grows, and stays coherent with the other
/// counters (a wakeup counts in select_cpu before its enqueue counts, so a
/// paused guest has at most one wakeup per CPU between the two).
fn select_cpu_counted(result: &VmResult) -> Result<()> {
    let series = result.series();
    let snaps = series.clone().snapshots_only();
    ensure!(
        result.periodic_fired == result.periodic_target && result.periodic_target == 3,
        "periodic snapshots: {} of {}",
        result.periodic_fired,
        result.periodic_target
    );
    let select = snaps.bpf("nr_select_cpu", |s| s.var("nr_select_cpu").as_u64());
    ensure!(
        select.errors().count() == 0,
        "unreadable: {:?}",
        select.errors().collect::<Vec<_>>()
    );
    ensure!(
        select.min().is_some_and(|v| *v > 0),
        "nr_select_cpu read 0: {select:?}"
    );
    ensure!(select.only_grew(), "nr_select_cpu went down: {select:?}");
    for s in snaps.iter() {
        let (sel, enq) = (
            s.var("nr_select_cpu").as_u64()?,
            s.var("nr_enqueued").as_u64()?,
        );
        let cpus = s.cpus.as_ref().map_err(Clone::clone)?.len() as u64;
        ensure!(
            sel <= enq + cpus,
            "at {:?}: nr_select_cpu {sel} > nr_enqueued {enq} + {cpus} CPUs",
            s.elapsed
        );
        ensure!(s.paused.is_some(), "a snapshot without a pause: {s:?}");
    }
    // The periodic monitor read it too, while the guest ran.
    let log = result.monitor.samples();
    ensure!(
        log.len() >= 10,
        "only {} monitor samples at {} Hz",
        log.len(),
        result.monitor.hz()
    );
    ensure!(
        series
            .bpf("nr_select_cpu", |s| s.var("nr_select_cpu").as_u64())
            .max()
            .is_some_and(|v| *v > 0),
        "the monitor never read nr_select_cpu"
    );
    Ok(())
}

#[ktstr_test(
    scheduler = MONITORED,
    cores = 2,
    duration_s = 3,
    num_snapshots = 3,
    post_vm = select_cpu_counted,
)]
fn monitor_reads_a_global_the_loader_never_prints(ctx: &Ctx) -> Result<AssertResult> {
    // Sleepers wake often: select_cpu runs at each wakeup.
    let steps = vec![Step::new(
        vec![Op::add_cgroup(
            CgroupDef::named("wakers")
                .workers(2)
                .work(ktstr::scenario::WorkType::PipePingPong),
        )],
        HoldSpec::fixed(Duration::from_secs(3)),
    )];
    execute_steps(ctx, steps)
}

/// What the guest held across `Op::capture_snapshot("held")` is what the
/// host read in that snapshot: CPU 1's runqueue has the pinned spinners (all
/// sched_ext tasks in FULL mode), the scheduler is scx-ktstr's ops, and the
/// global the loader wrote once has its value.
///
/// The spinners are a floor, not the whole count: the guest agent that asked
/// for the snapshot is itself runnable when the host pauses the VM (it has
/// just written the request and not yet blocked on the answer), and may sit
/// on CPU 1 — CI saw `nr=4 curr=init` there once. A kernel thread may be
/// queued too. So CPU 1 holds the spinners plus at most [`OTHERS`] others;
/// a reader that took CPU 0's runqueue, or none, reads fewer than the floor.
fn snapshot_equals_what_the_guest_held(result: &VmResult) -> Result<()> {
    let series = result.series();
    let held = series
        .named("held")
        .ok_or_else(|| anyhow::anyhow!("no snapshot \"held\" on the bridge"))?;
    ensure!(held.paused.is_some(), "the snapshot did not pause the VM");
    let cpu = held.cpu(PINNED_CPU)?;
    let holds_the_spinners =
        |n: Option<u32>| n.is_some_and(|n| (PINNED..=PINNED + OTHERS).contains(&n));
    ensure!(
        holds_the_spinners(cpu.nr_running),
        "CPU {PINNED_CPU} nr_running {:?}, the guest held {PINNED} spinners there \
         (plus at most {OTHERS} others: the requesting agent, a kernel thread): {}",
        cpu.nr_running,
        held.summary()
    );
    ensure!(
        holds_the_spinners(cpu.scx_nr_running),
        "CPU {PINNED_CPU} scx.nr_running {:?}, expected {PINNED} spinners \
         (plus at most {OTHERS} others): {}",
        cpu.scx_nr_running,
        held.summary()
    );
    ensure!(
        held.var("ktstr_mark").as_u64()? == MARK,
        "ktstr_mark read {:#x}, the loader wrote {MARK:#x}",
        held.var("ktstr_mark").as_u64()?
    );
    ensure!(
        held.scheduler.as_ref().map_err(Clone::clone)?.as_deref() == Some("ktstr"),
        "scheduler {:?}",
        held.scheduler
    );
    // The steps' starts reached the host in order, on the snapshots' clock:
    // step 1 asked for "held", so it started before the host took it. (Two
    // starts read in one poll of a busy host share a stamp: `<=`.)
    let steps: Vec<(u32, &[String])> = result
        .steps
        .iter()
        .map(|s| (s.index, s.ops.as_slice()))
        .collect();
    ensure!(
        steps.len() == 2 && steps[0].0 == 0 && steps[1] == (1, &["snapshot held".to_string()][..]),
        "steps {:?}",
        result.steps
    );
    ensure!(
        result.steps[0].at <= result.steps[1].at && result.steps[1].at <= held.elapsed,
        "step starts {:?} and {:?}, snapshot \"held\" at {:?}",
        result.steps[0].at,
        result.steps[1].at,
        held.elapsed
    );
    Ok(())
}

#[ktstr_test(
    scheduler = MONITORED,
    cores = 2,
    duration_s = 3,
    post_vm = snapshot_equals_what_the_guest_held,
)]
fn snapshot_matches_the_state_the_guest_held(ctx: &Ctx) -> Result<AssertResult> {
    let steps = vec![
        Step::new(
            vec![Op::add_cgroup(
                CgroupDef::named("pinned")
                    .workers(PINNED as usize)
                    .affinity([PINNED_CPU]),
            )],
            HoldSpec::fixed(Duration::from_secs(1)),
        ),
        Step::new(
            vec![Op::capture_snapshot("held")],
            HoldSpec::fixed(Duration::from_millis(200)),
        ),
    ];
    execute_steps(ctx, steps)
}

// A fixture that must fail: scx-ktstr attaches and schedules but never
// counts a dispatch, so the spec's `assert_post_op_dispatch` (the same
// function as in scheduler_lifecycle.rs, which must stay byte-identical to
// the spec and so cannot be shared) reads 0 in every snapshot.

const NEVER_COUNTS: Scheduler = Scheduler::named("never_counts")
    .binary(SchedulerSpec::Discover("scx-ktstr"))
    .sched_args(&["--no-dispatch-count"]);

fn assert_post_op_dispatch(result: &VmResult) -> Result<()> {
    let series = SampleSeries::from_drained_typed(
        result.snapshot_bridge.drain_ordered_with_stats(),
        result.monitor.clone(),
    )
    .periodic_only();
    anyhow::ensure!(
        !series.is_empty(),
        "no periodic samples on the bridge — the freeze coordinator never \
         fired (periodic_target={}, periodic_fired={}); cannot prove the \
         scheduler dispatched after the lifecycle op",
        result.periodic_target,
        result.periodic_fired,
    );
    let bpf_dispatched = series.bpf("nr_dispatched", |snap| snap.var("nr_dispatched").as_u64());
    let any_progress = bpf_dispatched
        .iter_full()
        .any(|(_, _, slot)| matches!(slot, Ok(v) if *v > 0));
    anyhow::ensure!(
        any_progress,
        "scx-ktstr nr_dispatched read 0 across every periodic sample — the \
         scheduler bound to sched_ext (the lifecycle op succeeded) but never \
         ran its dispatch path. Bind-without-dispatch regression: the post-op \
         scheduler attached but isn't scheduling.",
    );
    Ok(())
}

#[ktstr_test(
    harness_fixture = true,
    scheduler = NEVER_COUNTS,
    cores = 2,
    duration_s = 3,
    num_snapshots = 3,
    post_vm = assert_post_op_dispatch,
)]
fn fixture_bind_without_dispatch(_ctx: &Ctx) -> Result<AssertResult> {
    std::thread::sleep(Duration::from_secs(3));
    Ok(AssertResult::pass())
}

#[test]
fn post_vm_fails_a_scheduler_that_never_counts_a_dispatch() {
    match ktstr::test_support::run_test("monitor::fixture_bind_without_dispatch") {
        ktstr::test_support::Outcome::Fail(why) => {
            assert!(
                why.contains("Bind-without-dispatch regression"),
                "failed, but not in post_vm: {why}"
            );
            assert!(
                why.contains("post_vm check failed"),
                "the guest's verdict should have passed: {why}"
            );
            // The failure prints the last periodic samples.
            assert!(why.contains("monitor: last"), "{why}");
            assert!(why.contains("nr_dispatched=0"), "{why}");
        }
        other => panic!("expected post_vm to fail the test, got {other:?}"),
    }
}
