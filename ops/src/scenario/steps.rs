//! The engine behind [`super::ops::execute_steps`]: the cgroups and workloads
//! a run of steps made, the operations on them, and the clean-up that
//! always happens.

use std::time::Duration;

use anyhow::Context as _;

use super::ops::{Op, Step, hold_or_sched_died};
use super::{CgroupDef, Ctx, create, judge};
use crate::assert::AssertResult;
use crate::cgroup::Cgroup;
use crate::scheduler::Supervisor;
use crate::workload::{WorkerReport, Workload};

/// How long after a cpuset, affinity or cgroup change the workers get to be
/// moved by the kernel before the CPUs they were seen on are forgotten (the
/// kernel moves a running task before the write returns; this covers a sample
/// taken just before).
const SETTLE: Duration = Duration::from_millis(100);

/// What a change asks of the workloads once it settled.
#[derive(Debug)]
enum Settle {
    /// The workers of this group live under a new cpuset: read it and hold them
    /// to it.
    Cpuset(String),
    /// The workers of this group have a new mask: forget where they ran.
    Affinity(String),
}

#[derive(Debug)]
struct Run<'a> {
    ctx: &'a Ctx,
    root: Option<Cgroup>,
    /// One workload per spawn, labelled with its cgroup.
    loads: Vec<(String, Workload)>,
    reports: Vec<WorkerReport>,
    /// Top-level cgroups made, to remove at the end.
    made: Vec<String>,
    /// CPUs taken offline, to bring back at the end.
    offline: Vec<u32>,
}

fn under(group: &str, name: &str) -> bool {
    group == name || group.strip_prefix(name).is_some_and(|r| r.starts_with('/'))
}

fn cpu_online_path(cpu: u32) -> String {
    format!("/sys/devices/system/cpu/cpu{cpu}/online")
}

impl Run<'_> {
    fn root(&mut self) -> anyhow::Result<Cgroup> {
        if let Some(r) = &self.root {
            return Ok(r.clone());
        }
        let r = self.ctx.setup()?;
        self.root = Some(r.clone());
        Ok(r)
    }

    fn cgroup(&mut self, name: &str) -> anyhow::Result<Cgroup> {
        let cg = Cgroup::at(self.root()?.path().join(name));
        anyhow::ensure!(
            cg.path().is_dir(),
            "cgroup {name} does not exist (add it first)"
        );
        Ok(cg)
    }

    fn spawn(&mut self, def: &CgroupDef) -> anyhow::Result<String> {
        let root = self.root()?;
        let cg = create(&root, def)?;
        let top = def.name().split('/').next().unwrap_or_default().to_string();
        if !self.made.contains(&top) {
            self.made.push(top);
        }
        let specs = def.specs(&cg);
        if specs.is_empty() {
            return Ok(format!("cgroup {} ready, no workers", def.name()));
        }
        let n = specs.len();
        let work = specs[0].work.to_string();
        let mut load = Workload::spawn(specs)?;
        load.start()?;
        self.loads.push((def.name().to_string(), load));
        Ok(format!("cgroup {}: {n} {work} workers started", def.name()))
    }

    fn stop(&mut self, name: &str) -> usize {
        let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.loads)
            .into_iter()
            .partition(|(g, _)| under(g, name));
        self.loads = kept;
        let mut n = 0;
        for (_, load) in gone {
            let r = load.stop();
            n += r.len();
            self.reports.extend(r);
        }
        n
    }

    fn apply(
        &mut self,
        op: &Op,
        sup: &Supervisor,
        settle: &mut Vec<Settle>,
    ) -> anyhow::Result<String> {
        if let Some(done) = op.apply_scheduler(sup) {
            return done;
        }
        Ok(match op {
            Op::AddCgroup(def) | Op::Spawn(def) => self.spawn(def)?,
            Op::Stop(name) => format!("cgroup {name}: {} workers stopped", self.stop(name)),
            Op::RemoveCgroup(name) => {
                let n = self.stop(name);
                self.cgroup(name)?.remove_tree(None)?;
                format!("cgroup {name} removed ({n} workers stopped)")
            }
            Op::SetCpuset(name, cpus) => {
                self.cgroup(name)?.set_cpus(cpus)?;
                self.settle_cpusets(name, settle);
                format!("cgroup {name}: cpuset.cpus = {cpus}")
            }
            Op::ClearCpuset(name) => {
                self.cgroup(name)?.write("cpuset.cpus", "")?;
                self.settle_cpusets(name, settle);
                format!("cgroup {name}: cpuset.cpus cleared")
            }
            Op::SetWeight(name, w) => {
                self.cgroup(name)?.write("cpu.weight", &w.to_string())?;
                format!("cgroup {name}: cpu.weight = {w}")
            }
            Op::MoveWorkers(from, to) => {
                let dest = self.cgroup(to)?;
                let mut n = 0;
                for (_, load) in self.loads.iter_mut().filter(|(g, _)| g == from) {
                    for pid in load.pids_of(from) {
                        dest.add_process(pid)?;
                        n += 1;
                        for helper in children(pid) {
                            // A helper may be gone already; the worker counts.
                            let _ = dest.add_process(helper);
                        }
                    }
                    load.moved_to(from, &dest);
                }
                settle.push(Settle::Cpuset(format!("{from}\0{to}")));
                format!("moved {n} workers of {from} to {to}")
            }
            Op::SetAffinity(name, cpus) => {
                for (_, load) in self.loads.iter_mut().filter(|(g, _)| under(g, name)) {
                    for group in load.groups() {
                        load.set_affinity(&group, cpus)
                            .with_context(|| format!("pinning the workers of {group} to {cpus}"))?;
                    }
                }
                settle.push(Settle::Affinity(name.clone()));
                format!("workers of {name} pinned to {cpus}")
            }
            Op::SetCpuOnline(cpu, on) => {
                let path = cpu_online_path(*cpu);
                std::fs::write(&path, if *on { "1" } else { "0" })
                    .with_context(|| format!("writing {} to {path}", u8::from(*on)))?;
                if *on {
                    self.offline.retain(|c| c != cpu);
                } else if !self.offline.contains(cpu) {
                    self.offline.push(*cpu);
                }
                format!("CPU {cpu} {}", if *on { "online" } else { "offline" })
            }
            Op::CaptureSnapshot(name) => {
                let took = crate::snapshot::capture(name)?;
                format!("snapshot {name:?} taken by the host ({took:.1?} round trip)")
            }
            other => anyhow::bail!("{other:?} is not supported by this engine"),
        })
    }

    fn settle_cpusets(&self, name: &str, settle: &mut Vec<Settle>) {
        for (g, _) in self.loads.iter().filter(|(g, _)| under(g, name)) {
            settle.push(Settle::Cpuset(g.clone()));
        }
    }

    /// Holds the workers to their new cpusets and masks, once they moved.
    fn settled(&mut self, settle: &[Settle]) {
        let Some(root) = self.root.clone() else {
            return;
        };
        for s in settle {
            match s {
                Settle::Cpuset(spec) => {
                    // "group" or "group\0cgroup it now lives in".
                    let (group, cg) = spec.split_once('\0').unwrap_or((spec, spec));
                    let Ok(cpus) = Cgroup::at(root.path().join(cg)).effective_cpus() else {
                        continue;
                    };
                    for (_, load) in self.loads.iter_mut() {
                        load.restrict_cpuset(group, &cpus);
                    }
                }
                Settle::Affinity(name) => {
                    for (_, load) in self.loads.iter_mut().filter(|(g, _)| under(g, name)) {
                        for group in load.groups() {
                            load.forget_cpus(&group);
                        }
                    }
                }
            }
        }
    }

    /// Stops every workload, brings CPUs back, removes the cgroups; returns the
    /// reports (renumbered in order) and what failed to clean up.
    fn finish(mut self) -> (Vec<WorkerReport>, Vec<String>) {
        for (_, load) in std::mem::take(&mut self.loads) {
            self.reports.extend(load.stop());
        }
        let mut problems = Vec::new();
        for cpu in std::mem::take(&mut self.offline) {
            if let Err(e) = std::fs::write(cpu_online_path(cpu), "1") {
                problems.push(format!("bringing CPU {cpu} back online: {e}"));
            }
        }
        if let Some(root) = &self.root {
            for top in &self.made {
                if let Err(e) = Cgroup::at(root.path().join(top)).remove_tree(None) {
                    problems.push(format!("removing cgroup {top}: {e}"));
                }
            }
        }
        for (i, r) in self.reports.iter_mut().enumerate() {
            r.index = i;
        }
        (self.reports, problems)
    }
}

/// The children of `pid` (its helpers), where the kernel lists them.
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Runs `steps`; see [`super::ops::execute_steps`].
pub(crate) fn run(ctx: &Ctx, steps: Vec<Step>) -> anyhow::Result<AssertResult> {
    let sup = &ctx.scheduler;
    let mut run = Run {
        ctx,
        root: None,
        loads: Vec::new(),
        reports: Vec::new(),
        made: Vec::new(),
        offline: Vec::new(),
    };
    let mut verdict = AssertResult::pass();
    let mut outcome: anyhow::Result<()> = Ok(());
    'steps: for (i, step) in steps.into_iter().enumerate() {
        // The host stamps the boundary when it reads this; outside a VM
        // there is no host to tell.
        crate::snapshot::step_started(
            u32::try_from(i).unwrap_or(u32::MAX),
            step.ops.iter().map(Op::label).collect(),
        );
        let mut settle = Vec::new();
        for op in &step.ops {
            match run.apply(op, sup, &mut settle) {
                Ok(done) => verdict = verdict.note("ops", format!("step {i}: {done}")),
                Err(e) => {
                    outcome = Err(e.context(format!("step {i}: {op:?}")));
                    break 'steps;
                }
            }
        }
        let hold = step.hold.duration(ctx.duration);
        let first = if settle.is_empty() {
            hold
        } else {
            SETTLE.min(hold)
        };
        let mut death = hold_or_sched_died(sup, first);
        if death.is_none() {
            run.settled(&settle);
            death = hold_or_sched_died(sup, hold.saturating_sub(first));
        }
        if let Some(death) = death {
            sup.mark_death_surfaced();
            outcome = Err(anyhow::Error::new(death).context(format!("step {i}: during the hold")));
            break;
        }
    }
    let (reports, problems) = run.finish();
    for p in problems {
        verdict = verdict.note("cleanup", p);
    }
    outcome?;
    if !reports.is_empty() {
        verdict.merge(judge(ctx, &reports));
    }
    Ok(verdict)
}
