//! Workers: forked processes that load the scheduler under test and measure
//! what it gave them.
//!
//! # Why `fork` without `exec`
//! The scheduler must see separate tasks, so workers are processes, not threads.
//! They are forked from the test binary itself (the guest's PID 1, or a test
//! thread on a host) without `exec`: no second binary to pack into the guest, and
//! a worker is running within microseconds. The parent may have threads when it
//! forks (the runtime's, the test harness's), so the child only does
//! async-signal-safe work until it `_exit`s: everything it needs is prepared
//! before `fork` (`child::ChildPlan`), and it talks to the parent through an
//! anonymous shared mapping of atomics (`shared`), never through the heap, a lock
//! or stdio.
//!
//! # Life of a [`Workload`]
//! 1. [`Workload::spawn`] forks every worker; each sets its policy, nice value and
//!    affinity, then waits at its own futex barrier. The parent moves each into its
//!    cgroup while it waits, so it first runs under its cpuset.
//! 2. [`Workload::start`] releases head-start workers first (and waits until each
//!    ran), then the rest together, taking a schedstat baseline just before.
//! 3. [`Workload::stop`] reads schedstat again, sets the shared stop flag, waits
//!    for every worker to exit (killing stragglers after a grace period) and returns
//!    one [`WorkerReport`] each.
//!
//! Dropping a `Workload` kills and reaps any worker still alive.

mod child;
mod kinds;
mod latency;
mod procfs;
mod report;
mod shared;
mod sys;
mod trace;
mod work;

pub use latency::LatencySummary;
pub(crate) use procfs::{SchedStat, read_nr_migrations};
pub use report::{WorkerReport, WorkerSpec};
pub use trace::PlacementTrace;
pub use work::{CustomStep, CustomWork, Phase, SchedPolicy, WorkType};

use std::ffi::CString;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::cgroup::{Cgroup, CgroupError, CpuSet};
use shared::{STATE_DONE, STATE_FAILED, STATE_FORKED, Shared, now_ns};

/// What went wrong with workers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkloadError {
    /// `fork` or the shared mapping failed.
    #[error("cannot {what}")]
    Os {
        /// What was attempted.
        what: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// Moving a worker into its cgroup failed.
    #[error("worker {index}: cannot join its cgroup")]
    Cgroup {
        /// The worker.
        index: usize,
        /// The error.
        #[source]
        source: CgroupError,
    },
    /// A worker could not apply its policy, nice value or affinity.
    #[error("worker {index} (group {group}): {step} failed")]
    Setup {
        /// The worker.
        index: usize,
        /// Its group.
        group: String,
        /// `sched_setscheduler(<policy>)`, `setpriority` or `sched_setaffinity`.
        step: String,
        /// The errno.
        #[source]
        source: std::io::Error,
    },
    /// The work type needs the worker to be in a cgroup, and it has none.
    #[error("worker {index} (group {group}): {work} needs a cgroup; give the worker one")]
    NeedsCgroup {
        /// The worker.
        index: usize,
        /// Its group.
        group: String,
        /// The work type.
        work: String,
    },
    /// A worker never reached its barrier or, with a head start, never ran.
    #[error("worker {index} (group {group}): {what} within {waited:?}")]
    Timeout {
        /// The worker.
        index: usize,
        /// Its group.
        group: String,
        /// What did not happen.
        what: &'static str,
        /// How long the parent waited.
        waited: Duration,
    },
}

/// How long to wait for workers to reach the barrier, for head-start workers to
/// run, and for stopped workers to exit before they are killed. Generous: a TCG
/// guest is ~50x slower than native.
const SETTLE: Duration = Duration::from_secs(5);

#[derive(Debug)]
struct Worker {
    spec: WorkerSpec,
    pid: libc::pid_t,
    reaped: bool,
    killed: bool,
    stat_start: Option<SchedStat>,
    stat_end: Option<SchedStat>,
    migr_start: Option<u64>,
    migr_end: Option<u64>,
    /// The CPUs its cpuset allowed, as far as the harness knows (union).
    cpuset: Option<CpuSet>,
    /// Its cgroup's `cpu.weight`.
    weight: Option<u32>,
}

/// A file name no other worker of this process uses.
fn unique_io_path(index: usize) -> CString {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    let path = format!("/tmp/ktstr-io-{}-{index}-{n}", std::process::id());
    CString::new(path).expect("a formatted path has no NUL byte")
}

/// The `cgroup.procs` files `CgroupChurn` moves a worker of `cg` between:
/// two children it makes (`churn_a`, `churn_b`) and `cg`'s own.
fn churn_paths(cg: &Cgroup) -> Result<[CString; 3], CgroupError> {
    let a = cg.child("churn_a")?;
    let b = cg.child("churn_b")?;
    let procs = |c: &Cgroup| {
        let p = c.path().join("cgroup.procs");
        CString::new(p.as_os_str().as_encoded_bytes()).unwrap_or_default()
    };
    Ok([procs(&a), procs(&b), procs(cg)])
}

/// What the harness knows of a cgroup's CPUs and weight.
fn cgroup_facts(cg: Option<&Cgroup>) -> (Option<CpuSet>, Option<u32>) {
    let Some(cg) = cg else {
        return (None, None);
    };
    let cpus = cg.effective_cpus().ok();
    let weight = cg
        .read("cpu.weight")
        .ok()
        .and_then(|w| w.trim().parse().ok());
    (cpus, weight)
}

/// A set of forked workers, from the barrier to their reports.
#[derive(Debug)]
pub struct Workload {
    shared: Shared,
    workers: Vec<Worker>,
}

impl Workload {
    /// Forks one worker per spec, moves each into its cgroup and waits until all
    /// wait at their barrier.
    pub fn spawn(specs: Vec<WorkerSpec>) -> Result<Workload, WorkloadError> {
        let shared = Shared::new(specs.len()).map_err(|source| WorkloadError::Os {
            what: format!("map shared memory for {} workers", specs.len()),
            source,
        })?;
        let mut load = Workload {
            shared,
            workers: Vec::with_capacity(specs.len()),
        };
        let cache_bytes = procfs::llc_bytes().map_or(32 << 20, |b| (2 * b).min(64 << 20));
        let core_of = procfs::core_keys();
        for (index, spec) in specs.into_iter().enumerate() {
            let churn = if spec.work.needs_cgroup() {
                let Some(cg) = &spec.cgroup else {
                    return Err(WorkloadError::NeedsCgroup {
                        index,
                        group: spec.group.clone(),
                        work: spec.work.to_string(),
                    });
                };
                Some(churn_paths(cg).map_err(|source| WorkloadError::Cgroup { index, source })?)
            } else {
                None
            };
            let plan = child::ChildPlan {
                index,
                work: spec.work.clone(),
                policy: spec.policy,
                nice: spec.nice,
                affinity: spec.affinity.as_ref().map(cpu_set),
                io_path: unique_io_path(index),
                churn,
                cache_bytes,
                core_of: core_of.clone(),
            };
            let (cpuset, weight) = cgroup_facts(spec.cgroup.as_ref());
            // SAFETY: the child runs only `child::run`, which does async-signal-safe
            // work on memory prepared before this call and ends in `_exit`; it never
            // returns here. The parent checks the result.
            let pid = unsafe { libc::fork() };
            if pid < 0 {
                return Err(WorkloadError::Os {
                    what: format!("fork worker {index}"),
                    source: std::io::Error::last_os_error(),
                });
            }
            if pid == 0 {
                child::run(&plan, load.shared.header(), load.shared.slot(index));
            }
            let cgroup = spec.cgroup.clone();
            load.workers.push(Worker {
                spec,
                pid,
                reaped: false,
                killed: false,
                stat_start: None,
                stat_end: None,
                migr_start: None,
                migr_end: None,
                cpuset,
                weight,
            });
            if let Some(cg) = cgroup {
                cg.add_process(pid.unsigned_abs())
                    .map_err(|source| WorkloadError::Cgroup { index, source })?;
            }
        }
        load.wait_all_ready()?;
        Ok(load)
    }

    fn wait_all_ready(&mut self) -> Result<(), WorkloadError> {
        let deadline = Instant::now() + SETTLE;
        for (index, w) in self.workers.iter().enumerate() {
            let slot = self.shared.slot(index);
            loop {
                match slot.state.load(Ordering::Acquire) {
                    STATE_FORKED => {}
                    STATE_FAILED => {
                        let step = match slot.failed_step.load(Ordering::Relaxed) {
                            shared::FAILED_POLICY => {
                                format!("sched_setscheduler({})", w.spec.policy)
                            }
                            shared::FAILED_NICE => format!("setpriority(nice {})", w.spec.nice),
                            _ => "sched_setaffinity".to_string(),
                        };
                        let errno = slot.failed_errno.load(Ordering::Relaxed);
                        return Err(WorkloadError::Setup {
                            index,
                            group: w.spec.group.clone(),
                            step,
                            source: std::io::Error::from_raw_os_error(
                                i32::try_from(errno).unwrap_or(0),
                            ),
                        });
                    }
                    _ => break,
                }
                if Instant::now() > deadline {
                    return Err(WorkloadError::Timeout {
                        index,
                        group: w.spec.group.clone(),
                        what: "did not reach its start barrier",
                        waited: SETTLE,
                    });
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        Ok(())
    }

    /// Number of workers.
    pub fn len(&self) -> usize {
        self.workers.len()
    }

    /// Whether there are no workers.
    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    /// The workers' pids, in spawn order.
    pub fn pids(&self) -> Vec<u32> {
        self.workers.iter().map(|w| w.pid.unsigned_abs()).collect()
    }

    /// The pids of the workers labelled `group`, in spawn order.
    pub(crate) fn pids_of(&self, group: &str) -> Vec<u32> {
        self.workers
            .iter()
            .filter(|w| w.spec.group == group)
            .map(|w| w.pid.unsigned_abs())
            .collect()
    }

    /// Adds `cpus` to what the reports say the cpusets of the workers labelled
    /// `group` allowed: for scenarios that change a cpuset mid-run.
    pub(crate) fn widen_cpuset(&mut self, group: &str, cpus: &CpuSet) {
        for w in self.workers.iter_mut().filter(|w| w.spec.group == group) {
            let mut all = w.cpuset.take().unwrap_or_default();
            for c in cpus.iter() {
                all.insert(c);
            }
            w.cpuset = Some(all);
        }
    }

    /// Says the workers labelled `group` now live in `cg` (moved by the
    /// caller): its CPUs join their cpuset, its weight replaces theirs.
    pub(crate) fn moved_to(&mut self, group: &str, cg: &Cgroup) {
        let (cpus, weight) = cgroup_facts(Some(cg));
        if let Some(cpus) = cpus {
            self.widen_cpuset(group, &cpus);
        }
        for w in self.workers.iter_mut().filter(|w| w.spec.group == group) {
            w.weight = weight;
        }
    }

    /// Says the cpuset of the workers labelled `group` is now exactly `cpus`
    /// and forgets the CPUs they were seen on so far, so that from here on
    /// [`WorkerReport::cpus`] shows only where they ran under the new cpuset.
    /// Call it once the kernel had time to move them (their next iteration).
    pub(crate) fn restrict_cpuset(&mut self, group: &str, cpus: &CpuSet) {
        for (i, w) in self.workers.iter_mut().enumerate() {
            if w.spec.group == group {
                w.cpuset = Some(cpus.clone());
                self.shared.slot(i).forget_cpus();
            }
        }
    }

    /// Pins the workers labelled `group` (and their helpers, where
    /// `/proc/<pid>/task/<pid>/children` lists them) to `cpus`, from the
    /// parent; their reports then hold them to that mask. The CPUs they were
    /// seen on so far are forgotten once the caller says they moved
    /// ([`Workload::forget_cpus`]).
    pub(crate) fn set_affinity(&mut self, group: &str, cpus: &CpuSet) -> std::io::Result<()> {
        let mask = cpu_set(cpus);
        for w in self.workers.iter_mut().filter(|w| w.spec.group == group) {
            let pid = w.pid;
            let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                .unwrap_or_default();
            let helpers = children.split_whitespace().filter_map(|p| p.parse().ok());
            for task in std::iter::once(pid).chain(helpers) {
                // SAFETY: `mask` is a valid cpu_set_t of the size passed.
                let r =
                    unsafe { libc::sched_setaffinity(task, size_of::<libc::cpu_set_t>(), &mask) };
                if r != 0 && task == pid {
                    return Err(std::io::Error::last_os_error());
                }
            }
            w.spec.affinity = Some(cpus.clone());
        }
        Ok(())
    }

    /// Forgets the CPUs the workers labelled `group` were seen on so far.
    pub(crate) fn forget_cpus(&mut self, group: &str) {
        for (i, w) in self.workers.iter().enumerate() {
            if w.spec.group == group {
                self.shared.slot(i).forget_cpus();
            }
        }
    }

    /// The groups of the workers, in spawn order, without repeats.
    pub(crate) fn groups(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for w in &self.workers {
            if !out.contains(&w.spec.group) {
                out.push(w.spec.group.clone());
            }
        }
        out
    }

    fn release(&mut self, index: usize) {
        let w = &mut self.workers[index];
        w.stat_start = SchedStat::read(w.pid.unsigned_abs());
        w.migr_start = read_nr_migrations(w.pid.unsigned_abs());
        let slot = self.shared.slot(index);
        slot.go_ns.store(now_ns(), Ordering::Relaxed);
        slot.go.store(1, Ordering::Release);
        shared::futex_wake(&slot.go);
    }

    /// Releases the workers: head-start ones first (waiting until each ran), then
    /// all others at once.
    pub fn start(&mut self) -> Result<(), WorkloadError> {
        let early: Vec<usize> = (0..self.workers.len())
            .filter(|&i| self.workers[i].spec.head_start)
            .collect();
        for &i in &early {
            self.release(i);
        }
        let deadline = Instant::now() + SETTLE;
        for &i in &early {
            while self.shared.slot(i).iterations.load(Ordering::Relaxed) == 0 {
                if Instant::now() > deadline {
                    return Err(WorkloadError::Timeout {
                        index: i,
                        group: self.workers[i].spec.group.clone(),
                        what: "(head start) did not run",
                        waited: SETTLE,
                    });
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        // Baselines first, releases after, so that reading /proc does not eat
        // into the first released workers' window.
        let rest: Vec<usize> = (0..self.workers.len())
            .filter(|&i| !self.workers[i].spec.head_start)
            .collect();
        for &i in &rest {
            let w = &mut self.workers[i];
            w.stat_start = SchedStat::read(w.pid.unsigned_abs());
            w.migr_start = read_nr_migrations(w.pid.unsigned_abs());
        }
        let go = now_ns();
        for &i in &rest {
            let slot = self.shared.slot(i);
            slot.go_ns.store(go, Ordering::Relaxed);
            slot.go.store(1, Ordering::Release);
        }
        for &i in &rest {
            shared::futex_wake(&self.shared.slot(i).go);
        }
        Ok(())
    }

    /// Stops every worker, waits for them (killing those that do not exit within
    /// the grace period) and returns their reports in spawn order.
    pub fn stop(mut self) -> Vec<WorkerReport> {
        for w in &mut self.workers {
            w.stat_end = SchedStat::read(w.pid.unsigned_abs());
            w.migr_end = read_nr_migrations(w.pid.unsigned_abs());
            // A cpuset may have changed mid-run: what it allows now counts too.
            if let (Some(cg), Some(_)) = (&w.spec.cgroup, &w.cpuset)
                && let Ok(now) = cg.effective_cpus()
            {
                let mut all = w.cpuset.take().unwrap_or_default();
                for c in now.iter() {
                    all.insert(c);
                }
                w.cpuset = Some(all);
            }
        }
        let stop = now_ns();
        let header = self.shared.header();
        header.stop_ns.store(stop, Ordering::Relaxed);
        header.stop.store(1, Ordering::Release);
        // Workers never released (no `start`) get an empty window and exit.
        for i in 0..self.workers.len() {
            let slot = self.shared.slot(i);
            if slot.go.load(Ordering::Acquire) == 0 {
                slot.go_ns.store(stop, Ordering::Relaxed);
                slot.go.store(1, Ordering::Release);
                shared::futex_wake(&slot.go);
            }
        }
        let deadline = Instant::now() + SETTLE;
        while self.reap(false) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        self.kill_all();
        (0..self.workers.len())
            .map(|i| self.report(i, stop))
            .collect()
    }

    /// Reaps exited workers without blocking; returns how many are still alive.
    fn reap(&mut self, block: bool) -> usize {
        let mut alive = 0;
        for w in &mut self.workers {
            if w.reaped {
                continue;
            }
            let mut status = 0;
            let flags = if block { 0 } else { libc::WNOHANG };
            // SAFETY: waits for our own child; `status` is a valid out-pointer.
            let r = unsafe { libc::waitpid(w.pid, &mut status, flags) };
            if r == w.pid {
                w.reaped = true;
            } else if r < 0 {
                // ECHILD: somebody else (a PID 1 reaper) collected it already.
                w.reaped = true;
            } else {
                alive += 1;
            }
        }
        alive
    }

    fn kill_all(&mut self) {
        for w in &mut self.workers {
            if !w.reaped {
                // SAFETY: signals our own unreaped child, so the pid was not reused.
                unsafe {
                    libc::kill(w.pid, libc::SIGKILL);
                }
                w.killed = true;
            }
        }
        self.reap(true);
    }

    fn report(&self, index: usize, stop_ns: u64) -> WorkerReport {
        let w = &self.workers[index];
        let slot = self.shared.slot(index);
        let go = slot.go_ns.load(Ordering::Relaxed);
        let (stat, schedstat) = match (w.stat_start, w.stat_end) {
            (Some(a), Some(b)) => (b.since(&a), true),
            _ => (SchedStat::default(), false),
        };
        let gap_end = slot.max_gap_end_ns.load(Ordering::Relaxed);
        let mut r = WorkerReport::new(index, w.spec.group.clone(), &w.spec.work);
        r.policy = w.spec.policy;
        r.nice = w.spec.nice;
        r.noise = w.spec.noise;
        r.pid = w.pid.unsigned_abs();
        r.wall = Duration::from_nanos(stop_ns.saturating_sub(go));
        r.cpu_time = Duration::from_nanos(stat.cpu_ns);
        r.run_delay = Duration::from_nanos(stat.run_delay_ns);
        r.runs = stat.runs;
        r.progress = slot.progress.load(Ordering::Relaxed);
        r.iterations = slot.iterations.load(Ordering::Relaxed);
        r.max_gap = Duration::from_nanos(slot.max_gap_ns.load(Ordering::Relaxed));
        r.max_gap_at = Duration::from_nanos(gap_end.saturating_sub(go));
        r.wake_latency = slot.latency.summary();
        r.cpus = slot.cpu_list().into_iter().collect();
        r.cpuset = w.cpuset.clone();
        r.affinity = w.spec.affinity.clone();
        r.affinity_violations = slot.affinity_violations.load(Ordering::Relaxed);
        r.cpu_weight = w.weight;
        r.migrations = match (w.migr_start, w.migr_end) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a)),
            _ => None,
        };
        r.cpu_changes_seen = slot.cpu_changes.load(Ordering::Relaxed);
        r.failures = slot.failures.load(Ordering::Relaxed);
        r.helpers = slot.helpers.load(Ordering::Relaxed);
        r.exited_cleanly = !w.killed && slot.state.load(Ordering::Acquire) == STATE_DONE;
        r.schedstat = schedstat;
        r.trace = slot.trace.read();
        r
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        // Also releases workers still at the barrier so none is left behind.
        self.shared.header().stop.store(1, Ordering::Release);
        self.kill_all();
    }
}

/// A `cpu_set_t` with `cpus` (ids past `CPU_SETSIZE` are ignored).
fn cpu_set(cpus: &CpuSet) -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is a plain bit array; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for cpu in cpus.iter() {
        if (cpu as usize) < libc::CPU_SETSIZE as usize {
            // SAFETY: the index is below CPU_SETSIZE, the size of `set`.
            unsafe { libc::CPU_SET(cpu as usize, &mut set) };
        }
    }
    set
}
