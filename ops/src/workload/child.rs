//! The forked worker: set-up, barrier, work loop, exit.
//!
//! This code runs in a child of a possibly multi-threaded parent, between
//! `fork` and `_exit`. Only async-signal-safe work is allowed there (see
//! signal-safety(7)): no allocation, no locks, no stdio. It uses raw syscalls
//! (`sched_setscheduler`, `sched_setaffinity`, `setpriority`, `futex`,
//! `sched_yield`, `clock_nanosleep`), the vDSO (`clock_gettime`, `getcpu`) and
//! atomics in the shared mapping, and it never returns into the parent's code.

use std::sync::atomic::Ordering;

use super::shared::{
    FAILED_AFFINITY, FAILED_NICE, FAILED_POLICY, Header, STATE_DONE, STATE_FAILED, STATE_READY,
    STATE_RUNNING, Slot, futex_wait, now_ns,
};
use super::{SchedPolicy, WorkType};

/// Spins of the busy loop between two observations. Small enough that a gap of
/// a millisecond is the scheduler's doing (one unit is ~1 µs natively, tens of
/// µs under TCG), large enough that the clock reads are not the work.
const SPIN_UNIT: u32 = 2_000;

/// What a child needs, prepared by the parent before `fork` (no heap).
#[derive(Clone, Copy)]
pub(crate) struct ChildPlan {
    pub work: WorkType,
    pub policy: SchedPolicy,
    pub nice: i32,
    /// Built before fork so the child does not allocate.
    pub affinity: Option<libc::cpu_set_t>,
}

/// Runs the worker and exits the process; never returns.
pub(crate) fn run(plan: &ChildPlan, header: &Header, slot: &Slot) -> ! {
    let code = match setup(plan) {
        Ok(()) => {
            slot.state.store(STATE_READY, Ordering::Release);
            while slot.go.load(Ordering::Acquire) == 0 {
                futex_wait(&slot.go, 0);
            }
            slot.state.store(STATE_RUNNING, Ordering::Release);
            work_loop(plan.work, header, slot);
            slot.state.store(STATE_DONE, Ordering::Release);
            0
        }
        Err((step, errno)) => {
            slot.failed_step.store(step, Ordering::Relaxed);
            slot.failed_errno.store(errno, Ordering::Relaxed);
            slot.state.store(STATE_FAILED, Ordering::Release);
            1
        }
    };
    // SAFETY: _exit ends the process without running the parent's atexit
    // handlers or destructors, which must not run twice.
    unsafe { libc::_exit(code) }
}

fn errno() -> u32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(0)
        .unsigned_abs()
}

fn setup(plan: &ChildPlan) -> Result<(), (u32, u32)> {
    if let Some(set) = &plan.affinity {
        // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 is this task.
        let r = unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), set) };
        if r != 0 {
            return Err((FAILED_AFFINITY, errno()));
        }
    }
    if plan.nice != 0 {
        // SAFETY: plain syscall on this process (who = 0).
        let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, plan.nice) };
        if r != 0 {
            return Err((FAILED_NICE, errno()));
        }
    }
    let (policy, prio) = match plan.policy {
        SchedPolicy::Normal => return Ok(()),
        SchedPolicy::Batch => (libc::SCHED_BATCH, 0),
        SchedPolicy::Idle => (libc::SCHED_IDLE, 0),
        SchedPolicy::Fifo(p) => (libc::SCHED_FIFO, i32::from(p)),
        SchedPolicy::RoundRobin(p) => (libc::SCHED_RR, i32::from(p)),
    };
    let param = libc::sched_param {
        sched_priority: prio,
    };
    // SAFETY: `param` is a valid sched_param; pid 0 is this task.
    let r = unsafe { libc::sched_setscheduler(0, policy, &param) };
    if r != 0 {
        return Err((FAILED_POLICY, errno()));
    }
    Ok(())
}

/// The CPU this task runs on (glibc reads it from rseq or the vDSO).
fn current_cpu() -> Option<usize> {
    // SAFETY: no arguments; returns -1 on error.
    let cpu = unsafe { libc::sched_getcpu() };
    usize::try_from(cpu).ok()
}

fn spin(units: u32) {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..units * SPIN_UNIT {
        // An LCG step the optimizer cannot drop (black_box).
        x = std::hint::black_box(
            x.wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407),
        );
    }
    std::hint::black_box(x);
}

/// Live figures of the loop, published to the slot as they change.
struct Observer<'a> {
    slot: &'a Slot,
    /// When the worker last saw itself run (or should have: the end of a sleep).
    last_ns: u64,
    last_cpu: Option<usize>,
    max_gap_ns: u64,
    iterations: u64,
}

impl Observer<'_> {
    /// Records one observation at `now`; the gap is measured from `since`.
    fn observe(&mut self, now: u64, since: u64) {
        let gap = now.saturating_sub(since);
        if gap > self.max_gap_ns {
            self.max_gap_ns = gap;
            self.slot.max_gap_ns.store(gap, Ordering::Relaxed);
            self.slot.max_gap_end_ns.store(now, Ordering::Relaxed);
        }
        self.last_ns = now;
        let cpu = current_cpu();
        if cpu != self.last_cpu {
            if let Some(c) = cpu
                && let Some(word) = self.slot.cpus.get(c / 64)
            {
                word.fetch_or(1 << (c % 64), Ordering::Relaxed);
            }
            if self.last_cpu.is_some() {
                self.slot.cpu_changes.fetch_add(1, Ordering::Relaxed);
            }
            self.last_cpu = cpu;
        }
    }

    fn progressed(&mut self) {
        self.iterations += 1;
        self.slot
            .iterations
            .store(self.iterations, Ordering::Relaxed);
    }
}

fn work_loop(work: WorkType, header: &Header, slot: &Slot) {
    let go_ns = slot.go_ns.load(Ordering::Relaxed);
    let mut obs = Observer {
        slot,
        last_ns: go_ns,
        last_cpu: None,
        max_gap_ns: 0,
        iterations: 0,
    };
    // Where the next gap is measured from: the last observation, or the end of
    // a requested sleep (oversleeping is the scheduler's gap, sleeping is not).
    let mut since = go_ns;
    loop {
        let now = now_ns();
        if header.stop.load(Ordering::Acquire) != 0 {
            // The window ends at the stop request: a worker that runs only after
            // it was starved all along, and its gap is the whole window.
            let end = now.min(header.stop_ns.load(Ordering::Relaxed));
            obs.observe(end.max(since), since);
            return;
        }
        obs.observe(now, since);
        since = now;
        match work {
            WorkType::Spin => spin(1),
            WorkType::Yield => {
                spin(1);
                // SAFETY: plain syscall without arguments.
                unsafe { libc::sched_yield() };
            }
            WorkType::SleepWake { run, sleep } => {
                let run_ns = u64::try_from(run.as_nanos()).unwrap_or(u64::MAX);
                let start = now;
                while now_ns().saturating_sub(start) < run_ns {
                    spin(1);
                }
                let wake = now_ns().saturating_add(u64::try_from(sleep.as_nanos()).unwrap_or(0));
                sleep_until(wake);
                since = wake;
            }
        }
        obs.progressed();
    }
}

fn sleep_until(ns: u64) {
    let ts = libc::timespec {
        tv_sec: (ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: `ts` is a valid timespec; a null remainder is allowed with
    // TIMER_ABSTIME. EINTR only ends the sleep early, which the loop tolerates.
    unsafe {
        libc::clock_nanosleep(
            libc::CLOCK_MONOTONIC,
            libc::TIMER_ABSTIME,
            &ts,
            std::ptr::null_mut(),
        );
    }
}
