//! Stress: many cgroups, many workers, rapid cpuset changes.

use std::time::Duration;

use super::super::ops::{HoldSpec, Op, Step, execute_steps};
use super::super::{CgroupDef, Ctx, execute_defs};
use super::{halves, per_cpu};
use crate::assert::AssertResult;
use crate::workload::WorkType;

fn mix(i: usize) -> WorkType {
    match i % 4 {
        0 => WorkType::Spin,
        1 => WorkType::SleepWake {
            run: Duration::from_millis(1),
            sleep: Duration::from_millis(3),
        },
        2 => WorkType::FutexPingPong,
        _ => WorkType::Yield,
    }
}

/// Four cgroups per CPU (8 to 32), two workers each, cycling through spin,
/// sleep-wake, futex ping-pong and yield.
pub fn many_cgroups(ctx: &Ctx) -> anyhow::Result<AssertResult> {
    let n = per_cpu(ctx, 4, 32).max(8);
    execute_defs(
        ctx,
        (0..n).map(|i| CgroupDef::named(format!("cg_{i}")).workers(2).work(mix(i))),
    )
}

/// Eight workers per CPU (at most 128) in four cgroups, one per kind of the
/// same mix.
pub fn many_workers(ctx: &Ctx) -> anyhow::Result<AssertResult> {
    let per = per_cpu(ctx, 2, 32);
    execute_defs(
        ctx,
        (0..4).map(|i| {
            CgroupDef::named(format!("kind_{i}"))
                .workers(per)
                .work(mix(i))
        }),
    )
}

/// Two cgroups of spinners whose cpusets swap between the two halves of the
/// CPUs ten times over the run (each hold a tenth of it).
pub fn rapid_cpuset_changes(ctx: &Ctx) -> anyhow::Result<AssertResult> {
    let (a, b) = halves(ctx);
    let n = per_cpu(ctx, 1, 8);
    let mut steps = vec![Step::new(
        vec![
            Op::add_cgroup(CgroupDef::named("cg_a").workers(n).cpuset(a.clone())),
            Op::add_cgroup(CgroupDef::named("cg_b").workers(n).cpuset(b.clone())),
        ],
        HoldSpec::frac(0.1),
    )];
    for i in 1..10 {
        let (x, y) = if i % 2 == 1 { (&b, &a) } else { (&a, &b) };
        steps.push(Step::new(
            vec![
                Op::set_cpuset("cg_a", x.clone()),
                Op::set_cpuset("cg_b", y.clone()),
            ],
            HoldSpec::frac(0.1),
        ));
    }
    execute_steps(ctx, steps)
}
