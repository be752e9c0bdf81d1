//! Scenarios whose cgroups stay as declared for the whole run.

use std::time::Duration;

use super::super::{CgroupDef, Ctx, execute_defs, judge, run_defs};
use super::{all_cpus, per_cpu};
use crate::assert::AssertResult;
use crate::cgroup::CpuSet;
use crate::checks;
use crate::workload::WorkType;

const MS: fn(u64) -> Duration = Duration::from_millis;

/// One cgroup per LLC (`llc0`, `llc1`, ...), confined to that LLC's CPUs, with
/// two spinners per CPU of it (at most 32): balancing inside each LLC, none
/// across.
pub fn steady_llc(ctx: &Ctx) -> anyhow::Result<AssertResult> {
    let topo = &ctx.topology;
    let per = (topo.cpus_per_llc() as usize * 2).clamp(1, 32);
    let defs = (0..topo.llcs().max(1)).map(|l| {
        CgroupDef::named(format!("llc{l}"))
            .workers(per)
            .cpuset(CpuSet::range(topo.llc_cpus(l)))
    });
    execute_defs(ctx, defs)
}

/// Several times more workers than CPUs: three spinners per CPU (at most 48)
/// and one sleeper (2 ms run / 5 ms sleep) pinned to each CPU (at most 16;
/// beyond that each sleeper holds an equal share of the CPUs).
///
/// The sleepers are pinned so that every CPU carries the same background and
/// an even split of the spinners exists for any balancer. Left free, EEVDF's
/// balancer kept all four sleepers in one LLC of 1n2l2c1t, weighed their
/// runnable load as nearly whole tasks, and left 3 spinners there against 9
/// on the other LLC (0.96 s against 0.67 s each in 3 s, spread 45-51%): a
/// property of load balancing, not of sharing a CPU, which this scenario
/// judges.
pub fn oversubscribed(ctx: &Ctx) -> anyhow::Result<AssertResult> {
    let nr = ctx.topology.nr_cpus().max(1);
    let sleepers = nr.min(16);
    let masks = (0..sleepers).map(|k| CpuSet::range(k * nr / sleepers..(k + 1) * nr / sleepers));
    execute_defs(
        ctx,
        [
            CgroupDef::named("spinners").workers(per_cpu(ctx, 3, 48)),
            CgroupDef::named("sleepers")
                .workers(sleepers as usize)
                .work(WorkType::SleepWake {
                    run: MS(2),
                    sleep: MS(5),
                })
                .affinity_each(masks),
        ],
    )
}

/// Two spinners pinned (`sched_setaffinity`) to each CPU, one cgroup per CPU
/// (`cpu0`, `cpu1`, ...; at most 16): the affinity check holds each to its
/// CPU.
pub fn pinned_workers(ctx: &Ctx) -> anyhow::Result<AssertResult> {
    let n = ctx.topology.nr_cpus().clamp(1, 16);
    execute_defs(
        ctx,
        (0..n).map(|c| CgroupDef::named(format!("cpu{c}")).workers(2).affinity([c])),
    )
}

/// One cgroup per kind of load, side by side: spinners, sleepers, pipe
/// ping-pong, futex fan-out, fork/exit churn, cache pressure and mutex
/// contention.
pub fn mixed_workloads(ctx: &Ctx) -> anyhow::Result<AssertResult> {
    let n = per_cpu(ctx, 1, 8);
    execute_defs(
        ctx,
        [
            CgroupDef::named("spin").workers(n),
            CgroupDef::named("sleep")
                .workers(n)
                .work(WorkType::SleepWake {
                    run: MS(1),
                    sleep: MS(4),
                }),
            CgroupDef::named("pipe").work(WorkType::PipePingPong),
            CgroupDef::named("fanout").work(WorkType::FutexFanOut { waiters: 3 }),
            CgroupDef::named("fork").work(WorkType::ForkExit),
            CgroupDef::named("cache").work(WorkType::CachePressure { kib: 0 }),
            CgroupDef::named("mutex").work(WorkType::MutexContention { tasks: 3 }),
        ],
    )
}

/// Three levels of cgroups: `outer/spin`, `outer/mid/yield`,
/// `outer/mid/sleep`, with the controllers delegated at each level.
pub fn nested_cgroups(ctx: &Ctx) -> anyhow::Result<AssertResult> {
    let n = per_cpu(ctx, 1, 8);
    execute_defs(
        ctx,
        [
            CgroupDef::named("outer/spin").workers(n),
            CgroupDef::named("outer/mid/yield")
                .workers(n)
                .work(WorkType::Yield),
            CgroupDef::named("outer/mid/sleep")
                .workers(n)
                .work(WorkType::SleepWake {
                    run: MS(2),
                    sleep: MS(3),
                }),
        ],
    )
}

/// Two cgroups on all CPUs, `light` (`cpu.weight` 100) and `heavy` (300),
/// each with one spinner per CPU (at most 16) so both always want more than
/// they get: their CPU time must follow 1:3 (the weighted fairness check).
pub fn weighted_cgroups(ctx: &Ctx) -> anyhow::Result<AssertResult> {
    let n = per_cpu(ctx, 1, 16);
    let reports = run_defs(
        ctx,
        [
            CgroupDef::named("light")
                .workers(n)
                .weight(100)
                .cpuset(all_cpus(ctx)),
            CgroupDef::named("heavy")
                .workers(n)
                .weight(300)
                .cpuset(all_cpus(ctx)),
        ],
    )?;
    Ok(judge(ctx, &reports).merged(checks::weighted_fairness(
        &reports,
        &ctx.thresholds,
        ctx.timing_reliable,
    )))
}

/// A noisy neighbour: cgroup `noisy` runs two spinners per CPU, fork/exit
/// churn and page-fault churn, while cgroup `app` runs pipe ping-pong and a
/// sleeper whose progress and wake-ups must hold up. The noise is judged for
/// starvation and gaps, not for fairness among itself ([`CgroupDef::noise`]).
pub fn host_contention(ctx: &Ctx) -> anyhow::Result<AssertResult> {
    execute_defs(
        ctx,
        [
            CgroupDef::named("noisy/spin")
                .workers(per_cpu(ctx, 2, 32))
                .noise(),
            CgroupDef::named("noisy/fork")
                .work(WorkType::ForkExit)
                .noise(),
            CgroupDef::named("noisy/faults")
                .work(WorkType::PageFaultChurn { kib: 4096 })
                .noise(),
            CgroupDef::named("app/pipe").work(WorkType::PipePingPong),
            CgroupDef::named("app/sleep").work(WorkType::SleepWake {
                run: MS(1),
                sleep: MS(10),
            }),
        ],
    )
}
