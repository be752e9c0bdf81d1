//! The ready-made scenarios and the step vocabulary, run briefly on the build
//! host (root and a cgroup2 mount needed, like `host_workload.rs`).
//!
//! The host's cgroup2 hierarchy may lack the cpuset and cpu controllers (a
//! cgroup v1 host keeps them in v1), so scenarios that set cpusets or weights
//! are proven in a VM instead (`tests/tests/catalogue.rs`). Timing limits are
//! loose: the host is shared, the plumbing is the point here.

use std::path::PathBuf;
use std::time::Duration;

use ktstr_ops::AssertResult;
use ktstr_ops::cgroup2_mount;
use ktstr_ops::checks::{self, Thresholds};
use ktstr_ops::ops::{HoldSpec, Op, Step, execute_steps};
use ktstr_ops::{CgroupDef, Ctx, WorkType, scenarios};

fn root(name: &str) -> PathBuf {
    cgroup2_mount()
        .expect("needs a cgroup2 mount and root (see host_workload.rs)")
        .join(format!("ktstr-ops-scn-{}-{name}", std::process::id()))
}

fn ctx(name: &str) -> Ctx {
    let topo = "1n1l2c1t".parse().expect("valid topology");
    Ctx::new(topo, Duration::from_millis(400))
        .with_cgroup_root(root(name))
        .with_thresholds(
            Thresholds::default()
                .with_max_gap(Duration::from_secs(5))
                .with_max_spread(3.0)
                .with_max_throughput_cv(3.0)
                .with_wake_latency(
                    Duration::from_secs(1),
                    Duration::from_secs(5),
                    Duration::from_secs(10),
                ),
        )
}

fn run(name: &str, body: fn(&Ctx) -> anyhow::Result<AssertResult>) -> AssertResult {
    let ctx = ctx(name);
    let v = ctx.run(body).unwrap_or_else(|e| panic!("{name}: {e:#}"));
    assert!(!ctx.cgroup_root.exists(), "{name}: root removed");
    assert!(v.is_pass(), "{name}: {v}");
    assert!(!v.workers().is_empty(), "{name}: reports attached");
    v
}

#[test]
fn fixed_scenarios_pass_on_the_host() {
    type Body = fn(&Ctx) -> anyhow::Result<AssertResult>;
    let all: [(&str, Body); 6] = [
        ("steady", scenarios::steady),
        ("oversubscribed", scenarios::oversubscribed),
        ("pinned", scenarios::pinned_workers),
        ("mixed", scenarios::mixed_workloads),
        ("nested", scenarios::nested_cgroups),
        ("contention", scenarios::host_contention),
    ];
    for (name, body) in all {
        let v = run(name, body);
        println!("{name}: {} workers", v.workers().len());
    }
}

#[test]
fn dynamic_and_stress_scenarios_pass_on_the_host() {
    type Body = fn(&Ctx) -> anyhow::Result<AssertResult>;
    let all: [(&str, Body); 4] = [
        ("add", scenarios::cgroup_add),
        ("remove", scenarios::cgroup_remove),
        ("many_cgroups", scenarios::many_cgroups),
        ("many_workers", scenarios::many_workers),
    ];
    for (name, body) in all {
        let v = run(name, body);
        println!("{name}: {} workers", v.workers().len());
    }
}

#[test]
fn affinity_change_holds_workers_to_the_new_mask() {
    let v = run("affinity", scenarios::affinity_change);
    for r in v.workers() {
        assert_eq!(
            r.affinity.as_ref().map(|a| a.to_string()).as_deref(),
            Some("1"),
            "{v}"
        );
        assert!(r.cpus.iter().all(|c| c == 1), "seen after the change: {v}");
    }
    assert!(
        v.details().iter().any(|d| d.check == checks::AFFINITY),
        "{v}"
    );
}

#[test]
fn steps_add_move_stop_and_remove_cgroups() {
    let ctx = ctx("steps");
    let hold = HoldSpec::fixed(Duration::from_millis(150));
    let v = ctx
        .run(|ctx| {
            execute_steps(
                ctx,
                vec![
                    Step::new(
                        vec![
                            Op::add_cgroup(CgroupDef::named("a").workers(2)),
                            Op::add_cgroup(CgroupDef::named("b").workers(0)),
                        ],
                        hold,
                    ),
                    Step::new(vec![Op::move_workers("a", "b")], hold),
                    Step::new(
                        vec![Op::spawn(
                            CgroupDef::named("b").work(WorkType::FutexPingPong),
                        )],
                        hold,
                    ),
                    Step::new(vec![Op::stop("a"), Op::remove_cgroup("a")], hold),
                ],
            )
        })
        .expect("steps run");
    assert!(v.is_pass(), "{v}");
    let text = v.to_string();
    assert!(text.contains("moved 2 workers of a to b"), "{text}");
    assert!(text.contains("cgroup a removed"), "{text}");
    assert_eq!(v.workers().len(), 3, "{v}");
    let idx: Vec<usize> = v.workers().iter().map(|r| r.index).collect();
    assert_eq!(idx, [0, 1, 2], "renumbered across workloads");
    assert!(!ctx.cgroup_root.exists());

    // An op on a cgroup that does not exist fails, naming the step, and still
    // cleans up what it made.
    let err = ctx
        .run(|ctx| {
            execute_steps(
                ctx,
                vec![
                    Step::new(vec![Op::add_cgroup(CgroupDef::named("a"))], hold),
                    Step::new(vec![Op::set_weight("nope", 200)], hold),
                ],
            )
        })
        .expect_err("no such cgroup");
    assert!(format!("{err:#}").contains("step 1"), "{err:#}");
    assert!(
        format!("{err:#}").contains("nope does not exist"),
        "{err:#}"
    );
    assert!(!ctx.cgroup_root.exists());
}
