//! Every work type of the catalogue, run briefly on the build host: each
//! makes progress in its own unit above a stated floor, and those that wait
//! to be woken measure wake-up latencies.
//!
//! Needs root and a cgroup2 mount, like `host_workload.rs` (`CgroupChurn`
//! moves itself between cgroups). Floors are for 2 workers over 300 ms on a
//! shared, loaded 2-core machine: a tenth or less of what it measured, so
//! they catch a work loop that is broken, not a busy host.
//!
//! A worker that falls short while the host kept it from running (runnable
//! but waiting half the window, or under a tenth of it on a CPU) was held
//! back by the host, not broken (a CI run beside VM builds saw a yield
//! worker get 1.84 ms of 300 ms): that kind runs once more over ten windows,
//! and the test prints so. A broken loop stays short however long it runs.

use std::path::PathBuf;
use std::time::Duration;

use ktstr_ops::checks;
use ktstr_ops::{Cgroup, cgroup2_mount};
use ktstr_ops::{WorkType, WorkerReport, WorkerSpec, Workload};

const WINDOW: Duration = Duration::from_millis(300);
const WORKERS: usize = 2;

/// The least progress each worker must make in [`WINDOW`], by kind.
fn floor(work: &WorkType) -> u64 {
    match work.kind() {
        "spin" | "smt-spin" | "rt-starvation" => 100,
        "yield" => 100,
        "sleep-wake" => 10,
        "bursty" => 20,
        "cache-pressure" => 10_000,
        "pipe-ping-pong" | "futex-ping-pong" => 100,
        "futex-fan-out" | "thundering-herd" => 100,
        "wake-chain" => 100,
        "epoll-storm" => 100,
        "sync-write" => 64 * 1024,
        "fork-exit" => 10,
        // These two spend part of each cycle at nice 19 or SCHED_IDLE: on a
        // loaded host (CI runs VMs beside this test) that part barely runs.
        // A CI run saw policy-churn make 15 switches in the window.
        "nice-sweep" => 3,
        "affinity-churn" => 20,
        "policy-churn" => 3,
        "cgroup-churn" => 10,
        "page-fault-churn" => 1_000,
        "mutex-contention" => 100,
        "priority-inversion" => 3,
        "sequence" => 10,
        "custom" => 1_000,
        other => panic!("no floor for {other}: add one here and in the README"),
    }
}

fn root() -> PathBuf {
    cgroup2_mount()
        .expect("needs a cgroup2 mount and root (see host_workload.rs)")
        .join(format!("ktstr-ops-catalogue-{}", std::process::id()))
}

/// What is wrong with one worker's report: below the floor, not exited
/// cleanly, or latencies missing (or present where the kind has none).
fn problems(work: &WorkType, r: &WorkerReport) -> Vec<String> {
    let mut out = Vec::new();
    let f = floor(work);
    if r.progress < f || !r.exited_cleanly {
        out.push(format!(
            "{}: {} {} (floor {f}), exited cleanly: {}",
            r.work, r.progress, r.unit, r.exited_cleanly
        ));
    }
    if work.measures_latency() && r.wake_latency.is_none_or(|l| l.samples == 0) {
        out.push(format!("{}: no wake-up latency measured", r.work));
    }
    if !work.measures_latency() && r.wake_latency.is_some() {
        out.push(format!("{}: latencies from a kind that has none", r.work));
    }
    out
}

/// The host kept this worker from running: it waited runnable for half the
/// window or more, or got under a tenth of it on a CPU.
fn held_back_by_host(r: &WorkerReport, window: Duration) -> bool {
    r.run_delay >= window / 2 || r.cpu_time < window / 10
}

fn run(work: &WorkType, cg: &Cgroup, window: Duration) -> Vec<WorkerReport> {
    let specs = (0..WORKERS)
        .map(|_| {
            let mut s = WorkerSpec::new(work.clone(), work.kind());
            s.cgroup = Some(cg.clone());
            s
        })
        .collect();
    let mut load = Workload::spawn(specs).unwrap_or_else(|e| panic!("{work}: spawn: {e:#}"));
    load.start().expect("start");
    std::thread::sleep(window);
    load.stop()
}

#[test]
fn every_work_type_makes_progress_above_its_floor() {
    let top = Cgroup::create(root()).expect("cgroup root");
    let mut all = Vec::new();
    let mut short = Vec::new();
    for work in WorkType::catalogue() {
        let cg = top.child(work.kind()).expect("cgroup");
        let mut reports = run(&work, &cg, WINDOW);
        if reports
            .iter()
            .any(|r| !problems(&work, r).is_empty() && held_back_by_host(r, WINDOW))
        {
            println!(
                "{work}: a worker fell short while the host kept it from running (runnable \
                 but waiting half of {WINDOW:.0?}, or under a tenth of it on a CPU): the \
                 host's load, not the work loop; running it again over {:.0?}",
                WINDOW * 10
            );
            reports = run(&work, &cg, WINDOW * 10);
        }
        for r in &reports {
            short.extend(problems(&work, r));
        }
        all.extend(reports);
    }
    let teardown = top.remove_tree(cgroup2_mount().map(Cgroup::at).as_ref());
    print!("{}", checks::table(&all));
    assert!(short.is_empty(), "below the floor:\n{}", short.join("\n"));
    teardown.expect("remove the catalogue's cgroups");
}
