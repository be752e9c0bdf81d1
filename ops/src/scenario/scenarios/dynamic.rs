//! Scenarios that change cgroups, cpusets, masks, CPUs or policies mid-run,
//! written with the step vocabulary of [`crate::scenario::ops`].

use std::time::Duration;

use super::super::ops::{HoldSpec, Op, Step, execute_steps};
use super::super::{CgroupDef, Ctx};
use super::{all_cpus, halves, per_cpu};
use crate::assert::AssertResult;
use crate::workload::{SchedPolicy, WorkType};

fn step(ops: Vec<Op>, frac: f64) -> Step {
    Step::new(ops, HoldSpec::frac(frac))
}

fn spinners(ctx: &Ctx, name: &str) -> CgroupDef {
    CgroupDef::named(name).workers(per_cpu(ctx, 2, 16))
}

/// Spinners in `cg_0` on all CPUs; halfway through, a cpuset of the first half
/// of the CPUs is applied: from then on they must run there only.
pub fn cpuset_apply(ctx: &Ctx) -> anyhow::Result<AssertResult> {
    let (first, _) = halves(ctx);
    execute_steps(
        ctx,
        vec![
            step(vec![Op::add_cgroup(spinners(ctx, "cg_0"))], 0.5),
            step(vec![Op::set_cpuset("cg_0", first)], 0.5),
        ],
    )
}

/// Spinners in `cg_0` confined to the second half of the CPUs; halfway
/// through the cpuset is cleared and they may use every CPU.
pub fn cpuset_clear(ctx: &Ctx) -> anyhow::Result<AssertResult> {
    let (_, second) = halves(ctx);
    execute_steps(
        ctx,
        vec![
            step(
                vec![Op::add_cgroup(spinners(ctx, "cg_0").cpuset(second))],
                0.5,
            ),
            step(vec![Op::clear_cpuset("cg_0")], 0.5),
        ],
    )
}

/// Spinners in `cg_0`, cpuset grown from CPU 0 to all CPUs, then shrunk to the
/// last CPU: a third of the run each.
pub fn cpuset_resize(ctx: &Ctx) -> anyhow::Result<AssertResult> {
    let last = ctx.topology.nr_cpus().max(1) - 1;
    execute_steps(
        ctx,
        vec![
            step(
                vec![Op::add_cgroup(spinners(ctx, "cg_0").cpuset([0]))],
                1.0 / 3.0,
            ),
            step(vec![Op::set_cpuset("cg_0", all_cpus(ctx))], 1.0 / 3.0),
            step(vec![Op::set_cpuset("cg_0", [last])], 1.0 / 3.0),
        ],
    )
}

/// Spinners in `cg_0`; halfway through `cg_1` is created with sleepers and
/// pipe ping-pong: the newcomers must get CPU at once.
pub fn cgroup_add(ctx: &Ctx) -> anyhow::Result<AssertResult> {
    execute_steps(
        ctx,
        vec![
            step(vec![Op::add_cgroup(spinners(ctx, "cg_0"))], 0.5),
            step(
                vec![
                    Op::add_cgroup(
                        CgroupDef::named("cg_1")
                            .workers(2)
                            .work(WorkType::SleepWake {
                                run: Duration::from_millis(1),
                                sleep: Duration::from_millis(4),
                            }),
                    ),
                    Op::add_cgroup(CgroupDef::named("cg_2").work(WorkType::PipePingPong)),
                ],
                0.5,
            ),
        ],
    )
}

/// Spinners in `cg_0` and `cg_1`; halfway through `cg_1`'s workers stop and
/// the cgroup is removed while `cg_0` keeps running.
pub fn cgroup_remove(ctx: &Ctx) -> anyhow::Result<AssertResult> {
    execute_steps(
        ctx,
        vec![
            step(
                vec![
                    Op::add_cgroup(spinners(ctx, "cg_0")),
                    Op::add_cgroup(spinners(ctx, "cg_1")),
                ],
                0.5,
            ),
            step(vec![Op::remove_cgroup("cg_1")], 0.5),
        ],
    )
}

/// Two spinners pinned to the first half of the CPUs; halfway through they are
/// re-pinned to the second half and must follow.
pub fn affinity_change(ctx: &Ctx) -> anyhow::Result<AssertResult> {
    let (first, second) = halves(ctx);
    execute_steps(
        ctx,
        vec![
            step(
                vec![Op::add_cgroup(
                    CgroupDef::named("pinned").workers(2).affinity(first),
                )],
                0.5,
            ),
            step(vec![Op::set_affinity("pinned", second)], 0.5),
        ],
    )
}

/// Spinners and sleepers on all CPUs; for the middle third the last CPU is
/// offline. Needs 2 CPUs or more (CPU 0 cannot go offline).
pub fn cpu_hotplug(ctx: &Ctx) -> anyhow::Result<AssertResult> {
    let nr = ctx.topology.nr_cpus();
    anyhow::ensure!(
        nr >= 2,
        "cpu_hotplug needs at least 2 CPUs; {} has {nr}",
        ctx.topology
    );
    let last = nr - 1;
    let sleepers = CgroupDef::named("sleepers")
        .workers(2)
        .work(WorkType::SleepWake {
            run: Duration::from_millis(1),
            sleep: Duration::from_millis(4),
        });
    execute_steps(
        ctx,
        vec![
            step(
                vec![
                    Op::add_cgroup(spinners(ctx, "spinners")),
                    Op::add_cgroup(sleepers),
                ],
                1.0 / 3.0,
            ),
            step(vec![Op::cpu_offline(last)], 1.0 / 3.0),
            step(vec![Op::cpu_online(last)], 1.0 / 3.0),
        ],
    )
}

/// Tasks moving between the sched_ext and fair classes, for schedulers in
/// partial mode (which take only SCHED_EXT tasks): cgroup `ext` runs
/// SCHED_EXT spinners, `fair` SCHED_NORMAL spinners, and `switching` workers
/// cycle their own policy through normal, batch, idle, FIFO and SCHED_EXT.
/// Without a sched_ext scheduler every one of them runs in the fair class.
pub fn class_switch(ctx: &Ctx) -> anyhow::Result<AssertResult> {
    let n = per_cpu(ctx, 1, 8);
    execute_steps(
        ctx,
        vec![step(
            vec![
                Op::add_cgroup(CgroupDef::named("ext").workers(n).policy(SchedPolicy::Ext)),
                Op::add_cgroup(CgroupDef::named("fair").workers(n)),
                Op::add_cgroup(
                    CgroupDef::named("switching")
                        .workers(2)
                        .work(WorkType::PolicyChurn { ext: true }),
                ),
            ],
            1.0,
        )],
    )
}
