//! The scenario API: declare cgroups of workers, run them for the test's
//! duration, judge what they got.
//!
//! ```no_run
//! use ktstr_ops::AssertResult;
//! use ktstr_ops::{CgroupDef, Ctx, execute_defs};
//! use ktstr_ops::WorkType;
//!
//! fn two_groups(ctx: &Ctx) -> anyhow::Result<AssertResult> {
//!     execute_defs(ctx, [
//!         CgroupDef::named("cg_0").workers(2),
//!         CgroupDef::named("cg_1").workers(2).work(WorkType::Yield).cpuset([1]),
//!     ])
//! }
//! ```
//!
//! Scenarios that change things mid-run (cgroups added and removed, cpusets
//! resized, workers moved, CPUs unplugged, schedulers replaced) are steps:
//! see [`ops`]. Ready-made ones are in [`scenarios`].

mod ctx;
pub mod ops;
pub mod scenarios;
mod steps;

use crate::checks;
use crate::workload::{SchedPolicy, WorkType, WorkerReport};
pub use ctx::{Ctx, RR_TURN};
pub use ops::{HoldSpec, Op, Step, execute_steps};

use anyhow::Context as _;

use crate::assert::AssertResult;
use crate::cgroup::{Cgroup, CpuSet};
use crate::scheduler::SchedulerDied;
use crate::workload::{WorkerSpec, Workload};

/// A cgroup of identical workers.
///
/// The name may be a nested path (`"outer/inner"`); the parents are created and
/// delegate the controllers.
#[derive(Debug, Clone, PartialEq)]
pub struct CgroupDef {
    name: String,
    workers: usize,
    work: WorkType,
    policy: SchedPolicy,
    nice: i32,
    cpus: Option<CpuSet>,
    mems: Option<CpuSet>,
    weight: Option<u32>,
    affinity: Option<CpuSet>,
    /// Per-worker masks (worker `i` gets entry `i % len`), instead of one
    /// mask for all.
    affinity_each: Vec<CpuSet>,
    head_start: bool,
    noise: bool,
}

impl CgroupDef {
    /// A cgroup `name` with one CPU-spinning normal-policy worker.
    pub fn named(name: impl Into<String>) -> Self {
        CgroupDef {
            name: name.into(),
            workers: 1,
            work: WorkType::Spin,
            policy: SchedPolicy::Normal,
            nice: 0,
            cpus: None,
            mems: None,
            weight: None,
            affinity: None,
            affinity_each: Vec::new(),
            head_start: false,
            noise: false,
        }
    }

    /// Number of workers.
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }

    /// What each worker does.
    pub fn work(mut self, work: WorkType) -> Self {
        self.work = work;
        self
    }

    /// The workers' scheduling policy.
    pub fn policy(mut self, policy: SchedPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The workers' nice value.
    pub fn nice(mut self, nice: i32) -> Self {
        self.nice = nice;
        self
    }

    /// Restricts the cgroup to these CPUs (`cpuset.cpus`).
    pub fn cpuset(mut self, cpus: impl Into<CpuSet>) -> Self {
        self.cpus = Some(cpus.into());
        self
    }

    /// Restricts the cgroup to these memory nodes (`cpuset.mems`).
    pub fn mems(mut self, nodes: impl Into<CpuSet>) -> Self {
        self.mems = Some(nodes.into());
        self
    }

    /// Sets the cgroup's `cpu.weight` (1..=10000, default 100): its share of
    /// contended CPU time against its siblings.
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = Some(weight);
        self
    }

    /// Pins each worker to these CPUs with `sched_setaffinity`.
    pub fn affinity(mut self, cpus: impl Into<CpuSet>) -> Self {
        self.affinity_each.clear();
        self.affinity = Some(cpus.into());
        self
    }

    /// Pins worker `i` to `masks[i % masks.len()]` (`sched_setaffinity`):
    /// one worker per CPU or per group of CPUs, for loads that must sit
    /// evenly on every CPU whatever the scheduler's balancer thinks of them.
    /// Replaces [`CgroupDef::affinity`]; an empty list pins nothing.
    pub fn affinity_each(mut self, masks: impl IntoIterator<Item = CpuSet>) -> Self {
        self.affinity = None;
        self.affinity_each = masks.into_iter().collect();
        self
    }

    /// Releases this cgroup's workers before all others, which start only once
    /// each of these has run: for antagonists that must hold their CPUs first.
    pub fn head_start(mut self) -> Self {
        self.head_start = true;
        self
    }

    /// Marks the cgroup as background load, a noisy neighbour: its workers
    /// are reported and judged for starvation and gaps, but not compared for
    /// fairness. Under the kernel's group scheduling a cgroup's tasks on
    /// different CPUs get what each CPU's other cgroups leave them, so the
    /// spread of a noise cgroup's workers says how the noise landed, not how
    /// the scheduler shares: EEVDF gave 8 noisy spinners beside fork and
    /// page-fault churn 0.76 s to 1.16 s each in 3 s (46.5%).
    pub fn noise(mut self) -> Self {
        self.noise = true;
        self
    }

    /// The cgroup's name (path below the root).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The worker specs of this definition, in cgroup `cg`.
    pub(crate) fn specs(&self, cg: &Cgroup) -> Vec<WorkerSpec> {
        (0..self.workers)
            .map(|i| WorkerSpec {
                work: self.work.clone(),
                policy: self.policy,
                nice: self.nice,
                affinity: match self.affinity_each.len() {
                    0 => self.affinity.clone(),
                    n => Some(self.affinity_each[i % n].clone()),
                },
                cgroup: Some(cg.clone()),
                group: self.name.clone(),
                head_start: self.head_start,
                noise: self.noise,
            })
            .collect()
    }
}

/// Creates the cgroup of `def` below `root`, with its parents.
pub(crate) fn create(root: &Cgroup, def: &CgroupDef) -> anyhow::Result<Cgroup> {
    let parts: Vec<&str> = def.name.split('/').collect();
    let mut cg = root.clone();
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            cg.delegate(&ctx::CONTROLLERS)?;
        }
        cg = cg.child(part)?;
        // Nested cpusets: each level needs the restriction for the next to take it.
        if let Some(cpus) = &def.cpus {
            cg.set_cpus(cpus)?;
        }
        if let Some(mems) = &def.mems {
            cg.set_mems(mems)?;
        }
    }
    if let Some(w) = def.weight {
        cg.write("cpu.weight", &w.to_string())?;
    }
    Ok(cg)
}

/// Removes the top-level cgroups of `defs` below `root`.
fn remove(root: &Cgroup, defs: &[CgroupDef]) -> anyhow::Result<()> {
    let mut tops: Vec<&str> = defs
        .iter()
        .filter_map(|d| d.name.split('/').next())
        .collect();
    tops.sort_unstable();
    tops.dedup();
    for top in tops {
        Cgroup::at(root.path().join(top)).remove_tree(Some(root))?;
    }
    Ok(())
}

/// Runs `defs` for `ctx.duration` and returns every worker's report, without
/// judging them: for tests that apply their own checks.
pub fn run_defs(
    ctx: &Ctx,
    defs: impl IntoIterator<Item = CgroupDef>,
) -> anyhow::Result<Vec<WorkerReport>> {
    let defs: Vec<CgroupDef> = defs.into_iter().collect();
    let root = ctx.setup()?;
    let result = run_in(ctx, &root, &defs);
    let cleanup = remove(&root, &defs);
    let reports = result?;
    cleanup.context("removing the scenario's cgroups")?;
    Ok(reports)
}

fn run_in(ctx: &Ctx, root: &Cgroup, defs: &[CgroupDef]) -> anyhow::Result<Vec<WorkerReport>> {
    let mut specs = Vec::new();
    for def in defs {
        let cg = create(root, def)?;
        specs.extend(def.specs(&cg));
    }
    let mut load = Workload::spawn(specs)?;
    load.start()?;
    std::thread::sleep(ctx.duration);
    Ok(load.stop())
}

/// Runs `defs` for `ctx.duration`, then every check with `ctx.thresholds`.
///
/// The verdict carries one note per worker with its figures, then the checks'
/// findings.
pub fn execute_defs(
    ctx: &Ctx,
    defs: impl IntoIterator<Item = CgroupDef>,
) -> anyhow::Result<AssertResult> {
    let reports = run_defs(ctx, defs)?;
    Ok(judge(ctx, &reports))
}

/// The checks of `ctx` on `reports`, after one note per worker with its figures.
pub fn judge(ctx: &Ctx, reports: &[WorkerReport]) -> AssertResult {
    let mut v = AssertResult::pass();
    for line in checks::summary(reports).lines() {
        v = v.note("worker", line.to_string());
    }
    v.merged(checks::all_placed(
        reports,
        &ctx.effective_thresholds(),
        ctx.timing_reliable,
        &ctx.topology,
    ))
    .with_workers(reports.iter().cloned())
}

/// The verdict of a test that expects the scheduler to stop itself with an
/// error containing `needle` (`scx_bpf_error("...")`): `result` is what the
/// scenario returned (a [`SchedulerDied`] error when the steps saw the death).
/// Passes only when the scheduler died with that error; the death is then
/// the test's expected outcome, not a failure the runtime adds.
pub fn expect_scx_bpf_error_contains(
    ctx: &Ctx,
    result: anyhow::Result<AssertResult>,
    needle: &str,
) -> AssertResult {
    let from_result = match &result {
        Err(e) => e
            .chain()
            .find_map(|c| c.downcast_ref::<SchedulerDied>())
            .cloned(),
        Ok(_) => None,
    };
    let death = from_result.or_else(|| ctx.scheduler.died());
    if death.is_some() {
        ctx.scheduler.mark_death_surfaced();
    }
    let v = checks::scx_bpf_error_contains(death.as_ref(), needle);
    match result {
        Err(e) if !v.is_pass() => v.note("body", format!("the scenario failed: {e:#}")),
        _ => v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn affinity_each_pins_worker_i_to_mask_i_mod_n() {
        let cg = Cgroup::at("/sys/fs/cgroup/t");
        let masks = [CpuSet::range(0..1), CpuSet::range(1..3)];
        let specs = CgroupDef::named("s")
            .workers(3)
            .affinity_each(masks.clone())
            .specs(&cg);
        let got: Vec<_> = specs.iter().map(|s| s.affinity.clone()).collect();
        assert_eq!(
            got,
            [
                Some(masks[0].clone()),
                Some(masks[1].clone()),
                Some(masks[0].clone())
            ]
        );
        // One mask for all replaces the per-worker ones, and the other way round.
        let one = CgroupDef::named("s")
            .workers(2)
            .affinity_each(masks.clone())
            .affinity(CpuSet::range(2..4));
        assert!(
            one.specs(&cg)
                .iter()
                .all(|s| s.affinity == Some(CpuSet::range(2..4)))
        );
        let each = CgroupDef::named("s")
            .affinity(CpuSet::range(2..4))
            .affinity_each(Vec::new());
        assert_eq!(each.specs(&cg)[0].affinity, None);
    }
}
