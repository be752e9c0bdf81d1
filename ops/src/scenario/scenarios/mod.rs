//! Ready-made scenarios, each one line in a test body:
//! `scenarios::cpuset_resize(ctx)`.
//!
//! | kind | scenarios | module |
//! |---|---|---|
//! | fixed cgroups | [`steady`], [`steady_llc`], [`oversubscribed`], [`pinned_workers`], [`mixed_workloads`], [`nested_cgroups`], [`weighted_cgroups`], [`host_contention`], [`rt_starvation`] | `fixed`, here |
//! | changes mid-run | [`cpuset_apply`], [`cpuset_clear`], [`cpuset_resize`], [`cgroup_add`], [`cgroup_remove`], [`affinity_change`], [`cpu_hotplug`], [`class_switch`] | `dynamic` |
//! | stress | [`many_cgroups`], [`many_workers`], [`rapid_cpuset_changes`] | `stress` |
//!
//! Each runs for `ctx.duration` and applies every check of
//! [`crate::checks::all`] with `ctx.thresholds` (plus, for
//! [`weighted_cgroups`], [`crate::checks::weighted_fairness`]).

mod dynamic;
mod fixed;
mod stress;

pub use dynamic::{
    affinity_change, cgroup_add, cgroup_remove, class_switch, cpu_hotplug, cpuset_apply,
    cpuset_clear, cpuset_resize,
};
pub use fixed::{
    host_contention, mixed_workloads, nested_cgroups, oversubscribed, pinned_workers, steady_llc,
    weighted_cgroups,
};
pub use stress::{many_cgroups, many_workers, rapid_cpuset_changes};

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::{CgroupDef, Ctx, execute_defs};
use crate::assert::AssertResult;
use crate::cgroup::CpuSet;
use crate::workload::SchedPolicy;

/// The CPUs of the VM, `0..nr_cpus`.
pub(crate) fn all_cpus(ctx: &Ctx) -> CpuSet {
    CpuSet::range(0..ctx.topology.nr_cpus().max(1))
}

/// The first and second half of the CPUs (the same CPU twice on one CPU).
pub(crate) fn halves(ctx: &Ctx) -> (CpuSet, CpuSet) {
    let n = ctx.topology.nr_cpus().max(1);
    if n == 1 {
        return (CpuSet::from([0]), CpuSet::from([0]));
    }
    (CpuSet::range(0..n / 2), CpuSet::range(n / 2..n))
}

/// `per_cpu` workers per CPU, at least 1, at most `cap`.
pub(crate) fn per_cpu(ctx: &Ctx, per_cpu: usize, cap: usize) -> usize {
    (ctx.topology.nr_cpus() as usize * per_cpu).clamp(1, cap)
}

/// Most workers per cgroup `steady` makes, so big topologies stay quick in TCG.
const STEADY_MAX_PER_CGROUP: usize = 32;

/// Two cgroups, `cg_0` and `cg_1`, each with one CPU-spinning worker per CPU
/// (at most 32), for `ctx.duration`; then every check.
///
/// Twice as many runnable tasks as CPUs, so the scheduler must share every CPU
/// and balance across all of them: fairness, starvation and gaps all mean
/// something.
pub fn steady(ctx: &Ctx) -> anyhow::Result<AssertResult> {
    let per = (ctx.topology.nr_cpus() as usize).clamp(1, STEADY_MAX_PER_CGROUP);
    execute_defs(
        ctx,
        [
            CgroupDef::named("cg_0").workers(per),
            CgroupDef::named("cg_1").workers(per),
        ],
    )
}

/// Whether [`rt_starvation`] adds the hog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hog {
    /// A SCHED_FIFO spinner holds the victims' CPU: they must be reported starved.
    On,
    /// The positive twin: same victims, same settings, no hog.
    Off,
}

/// Starvation on purpose (and its positive twin): two CPU-spinning victims in
/// cgroup `victims`, confined by cpuset to the last CPU, and with [`Hog::On`]
/// a SCHED_FIFO spinner (cgroup `rt_hog`, same CPU) that starts first.
///
/// For the hog to starve them completely, the real-time safety nets are lifted
/// for the run and restored after, in both twins so only the hog differs:
/// `/proc/sys/kernel/sched_rt_runtime_us` = -1 (no RT throttling), and where the
/// kernel has the fair and ext deadline servers (6.12+, 6.19+), their runtime on
/// that CPU = 0 (`/sys/kernel/debug/sched/{fair,ext}_server/cpuN/runtime`, debugfs
/// mounted if needed).
///
/// Needs at least two CPUs so the guest's PID 1 keeps one. With `Hog::On` the
/// verdict fails with the starvation check only; with `Hog::Off` it passes.
pub fn rt_starvation(ctx: &Ctx, hog: Hog) -> anyhow::Result<AssertResult> {
    let nr = ctx.topology.nr_cpus();
    anyhow::ensure!(
        nr >= 2,
        "rt_starvation needs at least 2 CPUs (the hog must leave one to PID 1); topology {} has {nr}",
        ctx.topology
    );
    let cpu = nr - 1;
    let _knobs = RtKnobs::lift(cpu)?;
    let victims = CgroupDef::named("victims").workers(2).cpuset([cpu]);
    let mut defs = vec![victims];
    if hog == Hog::On {
        defs.push(
            CgroupDef::named("rt_hog")
                .cpuset([cpu])
                .policy(SchedPolicy::Fifo(50))
                .head_start(),
        );
    }
    execute_defs(ctx, defs)
}

const RT_RUNTIME: &str = "/proc/sys/kernel/sched_rt_runtime_us";
const DEBUGFS: &str = "/sys/kernel/debug";

/// Lifted real-time safety nets, restored on drop.
#[derive(Debug)]
struct RtKnobs {
    restore: Vec<(PathBuf, String)>,
}

impl RtKnobs {
    fn lift(cpu: u32) -> anyhow::Result<RtKnobs> {
        let mut knobs = RtKnobs { restore: vec![] };
        knobs.set(Path::new(RT_RUNTIME), "-1")?;
        if !Path::new(DEBUGFS).join("sched").exists() {
            mount_debugfs();
        }
        // The deadline servers that lend fair (and, on 6.19+, sched_ext) tasks
        // CPU time under an RT hog: kernel/sched/debug.c.
        for server in ["fair_server", "ext_server"] {
            let runtime = PathBuf::from(format!("{DEBUGFS}/sched/{server}/cpu{cpu}/runtime"));
            if runtime.exists() {
                knobs.set(&runtime, "0")?;
            }
        }
        Ok(knobs)
    }

    fn set(&mut self, path: &Path, value: &str) -> anyhow::Result<()> {
        let old =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        std::fs::write(path, value)
            .with_context(|| format!("writing {value:?} to {}", path.display()))?;
        self.restore
            .push((path.to_path_buf(), old.trim().to_string()));
        Ok(())
    }
}

impl Drop for RtKnobs {
    fn drop(&mut self) {
        for (path, old) in self.restore.iter().rev() {
            // Best effort: the guest is torn down after the test anyway.
            let _ = std::fs::write(path, old);
        }
    }
}

/// Mounts debugfs at its usual place; a failure leaves the fair server unknown,
/// which [`RtKnobs::lift`] then skips.
fn mount_debugfs() {
    let target = c"/sys/kernel/debug";
    let fstype = c"debugfs";
    // SAFETY: all pointers are NUL-terminated C strings that outlive the call;
    // null data is allowed for debugfs.
    unsafe {
        libc::mount(
            fstype.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        );
    }
}
