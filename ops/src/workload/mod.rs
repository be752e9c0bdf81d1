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
mod procfs;
mod shared;

pub use procfs::{SchedStat, parse_nr_migrations, read_nr_migrations};

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::cgroup::{Cgroup, CgroupError, CpuSet};
use shared::{STATE_DONE, STATE_FAILED, STATE_FORKED, Shared, now_ns};

/// What a worker does in its loop. More kinds will join (`#[non_exhaustive]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum WorkType {
    /// Burn CPU without ever blocking.
    Spin,
    /// Burn a little CPU, then `sched_yield()`, over and over.
    Yield,
    /// Burn CPU for `run`, then sleep for `sleep`: the wake-up path. The gap after
    /// a sleep is counted from when the sleep should have ended.
    SleepWake {
        /// CPU burst before each sleep.
        run: Duration,
        /// Requested sleep.
        sleep: Duration,
    },
}

impl std::fmt::Display for WorkType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WorkType::Spin => f.write_str("spin"),
            WorkType::Yield => f.write_str("yield"),
            WorkType::SleepWake { run, sleep } => write!(f, "sleep-wake({run:?}/{sleep:?})"),
        }
    }
}

/// The Linux scheduling policy of a worker (sched(7)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SchedPolicy {
    /// SCHED_OTHER: the fair class, or the sched_ext scheduler when one is attached.
    #[default]
    Normal,
    /// SCHED_BATCH.
    Batch,
    /// SCHED_IDLE.
    Idle,
    /// SCHED_FIFO at a real-time priority 1..=99: outranks every fair/ext task.
    Fifo(u8),
    /// SCHED_RR at a real-time priority 1..=99.
    RoundRobin(u8),
}

impl std::fmt::Display for SchedPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SchedPolicy::Normal => f.write_str("normal"),
            SchedPolicy::Batch => f.write_str("batch"),
            SchedPolicy::Idle => f.write_str("idle"),
            SchedPolicy::Fifo(p) => write!(f, "fifo:{p}"),
            SchedPolicy::RoundRobin(p) => write!(f, "rr:{p}"),
        }
    }
}

/// One worker to fork.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerSpec {
    /// What it does.
    pub work: WorkType,
    /// Its scheduling policy.
    pub policy: SchedPolicy,
    /// Its nice value (-20..=19), for the fair classes.
    pub nice: i32,
    /// CPUs it pins itself to with `sched_setaffinity`, if any.
    pub affinity: Option<CpuSet>,
    /// The cgroup it is moved into before it runs, if any.
    pub cgroup: Option<Cgroup>,
    /// The label reports and check messages use for its group (the cgroup name).
    pub group: String,
    /// Released before the others, which wait until it has run (antagonists
    /// such as a real-time hog that must hold its CPU first).
    pub head_start: bool,
}

impl WorkerSpec {
    /// A normal-policy worker doing `work`, labelled `group`, in no cgroup.
    pub fn new(work: WorkType, group: impl Into<String>) -> Self {
        WorkerSpec {
            work,
            policy: SchedPolicy::Normal,
            nice: 0,
            affinity: None,
            cgroup: None,
            group: group.into(),
            head_start: false,
        }
    }
}

/// What one worker did during the measured window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerReport {
    /// Index in spawn order.
    pub index: usize,
    /// Its group (cgroup name).
    pub group: String,
    /// Its work.
    pub work: WorkType,
    /// Its policy.
    pub policy: SchedPolicy,
    /// Its nice value.
    pub nice: i32,
    /// Its pid (in the guest).
    pub pid: u32,
    /// The window: from its release to the stop request.
    pub wall: Duration,
    /// CPU time in the window (schedstat `sum_exec_runtime`).
    pub cpu_time: Duration,
    /// Time runnable but waiting in the window (schedstat `run_delay`).
    pub run_delay: Duration,
    /// Times it was put on a CPU in the window (schedstat `pcount`).
    pub runs: u64,
    /// Iterations of its work loop: its progress.
    pub iterations: u64,
    /// Longest time between two observations of its own loop.
    pub max_gap: Duration,
    /// When that gap ended, from the worker's release.
    pub max_gap_at: Duration,
    /// CPUs it was seen on (`sched_getcpu` at every iteration).
    pub cpus: CpuSet,
    /// Migrations in the window (`se.nr_migrations` of `/proc/<pid>/sched`), when
    /// the kernel has that file.
    pub migrations: Option<u64>,
    /// CPU changes between consecutive iterations: a lower bound on migrations.
    pub cpu_changes_seen: u64,
    /// Whether the worker saw the stop request and exited by itself (false: killed
    /// after the grace period).
    pub exited_cleanly: bool,
    /// Whether `/proc/<pid>/schedstat` was read at both ends of the window
    /// (false: `cpu_time`, `run_delay` and `runs` are not measured).
    #[serde(default)]
    pub schedstat: bool,
}

impl WorkerReport {
    /// `"worker 3 (pid 120, cgroup cg_1)"`, the subject of check messages.
    pub fn who(&self) -> String {
        format!(
            "worker {} (pid {}, cgroup {})",
            self.index, self.pid, self.group
        )
    }
}

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
        for (index, spec) in specs.into_iter().enumerate() {
            let plan = child::ChildPlan {
                work: spec.work,
                policy: spec.policy,
                nice: spec.nice,
                affinity: spec.affinity.as_ref().map(cpu_set),
            };
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
        WorkerReport {
            index,
            group: w.spec.group.clone(),
            work: w.spec.work,
            policy: w.spec.policy,
            nice: w.spec.nice,
            pid: w.pid.unsigned_abs(),
            wall: Duration::from_nanos(stop_ns.saturating_sub(go)),
            cpu_time: Duration::from_nanos(stat.cpu_ns),
            run_delay: Duration::from_nanos(stat.run_delay_ns),
            runs: stat.runs,
            iterations: slot.iterations.load(Ordering::Relaxed),
            max_gap: Duration::from_nanos(slot.max_gap_ns.load(Ordering::Relaxed)),
            max_gap_at: Duration::from_nanos(gap_end.saturating_sub(go)),
            cpus: slot.cpu_list().into_iter().collect(),
            migrations: match (w.migr_start, w.migr_end) {
                (Some(a), Some(b)) => Some(b.saturating_sub(a)),
                _ => None,
            },
            cpu_changes_seen: slot.cpu_changes.load(Ordering::Relaxed),
            exited_cleanly: !w.killed && slot.state.load(Ordering::Acquire) == STATE_DONE,
            schedstat,
        }
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
