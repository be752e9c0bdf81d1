//! Workers and cgroups on the build host, without a VM.
//!
//! Needs root and a cgroup2 mount (any: on a cgroup v1 host, the `unified`
//! hierarchy will do, though it offers no cpuset controller). Without one these
//! tests fail and say so; they never pass by skipping. The VM proof is the
//! `steady_demo` example (see the crate README).

use std::path::PathBuf;
use std::time::Duration;

use ktstr_ops::checks::{self, Thresholds};
use ktstr_ops::{Cgroup, CgroupError, cgroup2_mount};
use ktstr_ops::{CgroupDef, Ctx, execute_defs, run_defs};
use ktstr_ops::{SchedPolicy, WorkType, WorkerSpec, Workload, WorkloadError};

fn cgroup2() -> PathBuf {
    cgroup2_mount().expect(
        "these tests need a cgroup2 mount (see /proc/self/mountinfo) and root; \
         mount one with `mount -t cgroup2 none /sys/fs/cgroup`",
    )
}

/// A per-test cgroup root below the host's cgroup2 mount.
fn test_root(name: &str) -> PathBuf {
    cgroup2().join(format!("ktstr-ops-test-{}-{name}", std::process::id()))
}

fn host_ctx(name: &str, ms: u64) -> Ctx {
    let topo = "1n1l2c1t".parse().expect("valid topology");
    Ctx::new(topo, Duration::from_millis(ms)).with_cgroup_root(test_root(name))
}

#[test]
fn workers_report_progress_cpu_time_and_cpus() {
    let specs = vec![
        WorkerSpec::new(WorkType::Spin, "spin"),
        WorkerSpec::new(WorkType::Spin, "spin"),
        WorkerSpec::new(WorkType::Yield, "yield"),
        WorkerSpec::new(
            WorkType::SleepWake {
                run: Duration::from_micros(200),
                sleep: Duration::from_millis(5),
            },
            "sleeper",
        ),
    ];
    let mut load = Workload::spawn(specs).expect("spawn");
    assert_eq!(load.len(), 4);
    load.start().expect("start");
    std::thread::sleep(Duration::from_millis(400));
    let reports = load.stop();
    print!("{}", checks::summary(&reports));
    for r in &reports {
        assert!(r.exited_cleanly, "{}", r.who());
        assert!(r.iterations > 0, "{} made no progress", r.who());
        assert!(!r.cpus.is_empty(), "{} saw no CPU", r.who());
        assert!(r.cpu_time > Duration::ZERO, "{} had no cpu time", r.who());
        assert!(
            r.wall >= Duration::from_millis(390) && r.wall < Duration::from_secs(5),
            "{}: wall {:?}",
            r.who(),
            r.wall
        );
        assert!(r.max_gap < r.wall, "{}", r.who());
    }
    // The sleeper sleeps ~96% of the time: far less CPU than a spinner.
    assert!(
        reports[3].cpu_time * 4 < reports[0].cpu_time,
        "{reports:#?}"
    );
    // ~400 ms / (5 ms + 0.2 ms): tens of iterations, not thousands.
    assert!(reports[3].iterations < 200, "{:?}", reports[3].iterations);
}

#[test]
fn a_failing_worker_setup_names_the_step_and_the_worker() {
    let mut bad = WorkerSpec::new(WorkType::Spin, "bad");
    // Priority 0 is invalid for SCHED_FIFO (sched(7)): EINVAL, even as root.
    bad.policy = SchedPolicy::Fifo(0);
    let specs = vec![WorkerSpec::new(WorkType::Spin, "good"), bad];
    let err = Workload::spawn(specs).expect_err("invalid priority");
    let msg = format!("{err:#}");
    assert!(
        matches!(err, WorkloadError::Setup { index: 1, .. }),
        "{msg}"
    );
    assert!(
        msg.contains("worker 1 (group bad): sched_setscheduler(fifo:0)"),
        "{msg}"
    );
}

#[test]
fn nested_cgroups_take_tasks_and_are_removed() {
    let root = Cgroup::create(test_root("nested")).expect("create root");
    let inner = root
        .child("outer")
        .and_then(|o| o.child("inner"))
        .expect("nested");
    let mut spec = WorkerSpec::new(WorkType::Spin, "outer/inner");
    spec.cgroup = Some(inner.clone());
    let load = Workload::spawn(vec![spec]).expect("spawn into cgroup");
    assert_eq!(inner.processes().expect("procs"), load.pids());
    // Populated: removal without a place to evacuate to fails, naming the cgroup.
    let err = inner.remove_tree(None).expect_err("busy");
    assert!(err.to_string().contains("outer/inner"), "{err}");
    let reports = load.stop();
    assert_eq!(reports[0].iterations, 0, "never released");
    assert_eq!(reports[0].wall, Duration::ZERO);
    assert!(
        reports[0].exited_cleanly,
        "released by stop, saw the stop flag"
    );
    root.remove_tree(None)
        .expect("remove after the workers exited");
    assert!(!root.path().exists());
}

#[test]
fn execute_defs_runs_cgroups_of_workers_and_judges_them() {
    let ctx = host_ctx("defs", 500)
        // The build host is shared: loose timing limits, the plumbing is the point.
        .with_thresholds(
            Thresholds::default()
                .with_max_gap(Duration::from_secs(5))
                .with_max_spread(2.0),
        );
    let verdict = ctx
        .run(|ctx| {
            execute_defs(
                ctx,
                [
                    CgroupDef::named("cg_0").workers(2),
                    CgroupDef::named("nest/cg_1")
                        .workers(1)
                        .work(WorkType::Yield),
                ],
            )
        })
        .expect("scenario runs");
    println!("{verdict}");
    assert!(verdict.is_pass(), "{verdict}");
    let workers = verdict.details().iter().filter(|d| d.check == "worker");
    assert_eq!(workers.count(), 3, "{verdict}");
    assert!(
        verdict
            .details()
            .iter()
            .any(|d| d.check == checks::FAIRNESS && d.message.contains("cgroup cg_0")),
        "{verdict}"
    );
    assert!(!ctx.cgroup_root.exists(), "Ctx::run removes its root");
}

#[test]
fn cgroup_errors_name_the_cgroup_and_the_file() {
    let ctx = host_ctx("errors", 100);
    let has_cpuset = Cgroup::at(cgroup2())
        .controllers()
        .expect("cgroup.controllers")
        .iter()
        .any(|c| c == "cpuset");
    let result = run_defs(&ctx, [CgroupDef::named("pinned").cpuset([0])]);
    let teardown = ctx.teardown();
    if has_cpuset {
        // A real cgroup2 host: the cpuset works, and so must the scenario.
        let reports = result.expect("cpuset scenario");
        assert!(reports[0].cpus.iter().all(|c| c == 0), "{reports:?}");
    } else {
        let err = result.expect_err("no cpuset controller on this hierarchy");
        let cg: &CgroupError = err.downcast_ref().expect("a cgroup error");
        let msg = cg.to_string();
        assert!(
            msg.contains("pinned") && msg.contains("cpuset.cpus"),
            "{msg}"
        );
    }
    teardown.expect("teardown");
}
