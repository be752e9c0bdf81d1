//! The forked worker: set-up, barrier, work loop, exit; and the helpers it
//! forks for work types that need partner tasks.
//!
//! This code runs in a child of a possibly multi-threaded parent, between
//! `fork` and `_exit`. Only async-signal-safe work is allowed there (see
//! signal-safety(7)): no allocation, no locks, no stdio. It uses the raw
//! syscalls of [`super::sys`], the vDSO (`clock_gettime`, `getcpu`) and atomics
//! in shared mappings, reads (never grows) what the parent prepared before
//! `fork`, and never returns into the parent's code.

use std::ffi::CString;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::kinds;
use super::shared::{
    FAILED_AFFINITY, FAILED_NICE, FAILED_POLICY, Header, STATE_DONE, STATE_FAILED, STATE_READY,
    STATE_RUNNING, Slot, futex_wait, now_ns,
};
use super::sys;
use super::trace::Tracer;
use super::{SchedPolicy, WorkType};

/// Spins of the busy loop between two observations. Small enough that a gap of
/// a millisecond is the scheduler's doing (one unit is ~1 µs natively, tens of
/// µs under TCG), large enough that the clock reads are not the work.
const SPIN_UNIT: u32 = 2_000;

/// How long any wait of a worker or helper blocks before it looks at the stop
/// flags again.
pub(crate) const WAIT_NS: u64 = 20_000_000;
/// [`WAIT_NS`] in ms, for `poll`/`epoll_wait`.
pub(crate) const WAIT_MS: i32 = 20;

/// Most helpers one worker forks.
pub(crate) const MAX_HELPERS: usize = 16;

/// What a child needs, prepared by the parent before `fork`. The child only
/// reads it (no heap allocation happens after `fork`).
#[derive(Debug)]
pub(crate) struct ChildPlan {
    pub index: usize,
    pub work: WorkType,
    pub policy: SchedPolicy,
    pub nice: i32,
    /// Built before fork so the child does not allocate.
    pub affinity: Option<libc::cpu_set_t>,
    /// `SyncWrite`'s file.
    pub io_path: CString,
    /// `CgroupChurn`: `cgroup.procs` of `churn_a`, `churn_b` and the worker's own.
    pub churn: Option<[CString; 3]>,
    /// `CachePressure { kib: 0 }`'s working set.
    pub cache_bytes: usize,
    /// Core key of each CPU id (SMT siblings share it); `u32::MAX` unknown.
    pub core_of: Vec<u32>,
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
            sys::ignore_sigpipe();
            let env = Env {
                plan,
                header,
                slot,
                until: u64::MAX,
            };
            let go_ns = slot.go_ns.load(Ordering::Relaxed);
            let mut obs = Observer {
                slot,
                last_ns: go_ns,
                last_cpu: None,
                max_gap_ns: 0,
                iterations: 0,
                tracer: Tracer::new(go_ns),
            };
            run_work(&plan.work, &env, &mut obs);
            obs.tracer.flush(&slot.trace);
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
    sys::exit_now(code)
}

fn errno() -> u32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(0)
        .unsigned_abs()
}

fn setup(plan: &ChildPlan) -> Result<(), (u32, u32)> {
    if let Some(set) = &plan.affinity
        && !sys::set_affinity(set)
    {
        return Err((FAILED_AFFINITY, errno()));
    }
    if plan.nice != 0 && !sys::set_nice(plan.nice) {
        return Err((FAILED_NICE, errno()));
    }
    if plan.policy != SchedPolicy::Normal {
        let (policy, prio) = plan.policy.raw();
        if !sys::set_policy(policy, prio) {
            return Err((FAILED_POLICY, errno()));
        }
    }
    Ok(())
}

/// Burns `units` spin units of CPU.
pub(crate) fn spin(units: u32) {
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

/// Burns CPU for `ns` of wall time.
pub(crate) fn spin_for(ns: u64) {
    let start = now_ns();
    while now_ns().saturating_sub(start) < ns {
        spin(1);
    }
}

/// The CPU a worker that pins its crew to one CPU uses: the `index`-th CPU of
/// its allowed mask (cyclically), so that workers of one cgroup spread out
/// instead of stacking their crews on one CPU.
pub(crate) fn crew_cpu(index: usize) -> usize {
    let Some(mask) = sys::get_affinity() else {
        return sys::current_cpu().unwrap_or(0);
    };
    let allowed = || (0..libc::CPU_SETSIZE as usize).filter(|&c| sys::mask_has(&mask, c));
    let n = allowed().count().max(1);
    allowed().nth(index % n).unwrap_or(0)
}

/// What a work loop (or a helper) runs against: the plan, the shared slot and
/// when its phase ends.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Env<'a> {
    pub plan: &'a ChildPlan,
    pub header: &'a Header,
    pub slot: &'a Slot,
    /// CLOCK_MONOTONIC ns at which the current phase ends.
    pub until: u64,
}

impl Env<'_> {
    /// Whether the workload was stopped.
    pub(super) fn stopped(&self) -> bool {
        self.header.stop.load(Ordering::Acquire) != 0
    }

    /// Whether the phase is over (stopped, or past its end).
    pub(super) fn over(&self) -> bool {
        self.stopped() || now_ns() >= self.until
    }

    /// Adds `n` units of progress.
    pub(super) fn progress(&self, n: u64) {
        self.slot.progress.fetch_add(n, Ordering::Relaxed);
    }

    /// Records a wake-up latency of `ns`.
    pub(super) fn latency(&self, ns: u64) {
        self.slot.latency.record(ns);
    }

    /// Records a wake-up latency from `stamp` (ns) to now.
    pub(super) fn latency_since(&self, stamp: u64) {
        self.latency(now_ns().saturating_sub(stamp));
    }

    /// Counts a failed system call.
    pub(super) fn failed(&self) {
        self.slot.failures.fetch_add(1, Ordering::Relaxed);
    }

    /// Records the CPU the caller runs on (helpers call it in their loops).
    pub(super) fn note_cpu(&self) {
        if let Some(c) = sys::current_cpu() {
            self.slot.saw_cpu(c);
        }
    }
}

/// Live figures of the worker's loop, published to the slot as they change.
#[derive(Debug)]
pub(crate) struct Observer<'a> {
    slot: &'a Slot,
    /// When the worker last saw itself run (or should have: the end of a sleep).
    last_ns: u64,
    last_cpu: Option<usize>,
    max_gap_ns: u64,
    iterations: u64,
    tracer: Tracer,
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
        let cpu = sys::current_cpu();
        // Every time, not only on a change: the parent may clear the set
        // mid-run (after a cpuset change) and must see the CPU again.
        if let Some(c) = cpu {
            self.slot.saw_cpu(c);
        }
        self.tracer.round(&self.slot.trace, now, cpu);
        if cpu != self.last_cpu {
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

    /// The last observation, at the stop request: a worker that runs only after
    /// it was starved all along gets the whole window as its gap.
    fn finish(&mut self, header: &Header, now: u64, since: u64) {
        let end = now.min(header.stop_ns.load(Ordering::Relaxed));
        self.observe(end.max(since), since);
    }
}

/// Runs `round` until the phase is over, observing the loop before each round.
/// A round returns `Some(t)` when the next gap counts from `t` (the end of a
/// requested sleep) rather than from the observation before it.
pub(crate) fn rounds(
    env: &Env<'_>,
    obs: &mut Observer<'_>,
    mut round: impl FnMut(&Env<'_>) -> Option<u64>,
) {
    let mut since = obs.last_ns;
    loop {
        let now = now_ns();
        if env.stopped() {
            obs.finish(env.header, now, since);
            return;
        }
        if now >= env.until {
            return;
        }
        obs.observe(now, since);
        since = now;
        if let Some(s) = round(env) {
            since = s;
        }
        obs.progressed();
    }
}

/// Runs `work` until `env.until` or the stop request.
pub(crate) fn run_work(work: &WorkType, env: &Env<'_>, obs: &mut Observer<'_>) {
    match work {
        WorkType::Sequence(phases) if !phases.is_empty() => loop {
            for p in phases {
                if env.over() {
                    if env.stopped() {
                        rounds(env, obs, |_| None);
                    }
                    return;
                }
                let dur = u64::try_from(p.duration.as_nanos()).unwrap_or(u64::MAX);
                let phase = Env {
                    until: now_ns().saturating_add(dur).min(env.until),
                    ..*env
                };
                match &p.work {
                    // A nested sequence would recurse without end: it spins.
                    WorkType::Sequence(_) => kinds::run_simple(&WorkType::Spin, &phase, obs),
                    w => run_work(w, &phase, obs),
                }
            }
        },
        WorkType::Sequence(_) => kinds::run_simple(&WorkType::Spin, env, obs),
        w if kinds::is_ipc(w) => kinds::run_ipc(w, env, obs),
        w => kinds::run_simple(w, env, obs),
    }
}

/// State shared by a worker and its helpers: a zero-filled anonymous shared
/// mapping (all-zero atomics are the initial state).
#[repr(C)]
#[derive(Debug)]
pub(crate) struct Scratch {
    /// Set when the helpers must leave their loops.
    pub stop: AtomicU32,
    /// Futex words (turns, generations, locks).
    pub word: [AtomicU32; 32],
    /// Time stamps, CLOCK_MONOTONIC ns.
    pub stamp: [AtomicU64; 32],
    /// Counters (acks, tokens).
    pub count: [AtomicU64; 8],
}

/// A worker's helpers and their [`Scratch`]; dropping it stops, kills and reaps
/// them, then unmaps the scratch.
#[derive(Debug)]
pub(crate) struct Crew {
    scratch: NonNull<Scratch>,
    pids: [libc::pid_t; MAX_HELPERS],
    n: usize,
}

impl Crew {
    /// A crew without helpers yet; `None` when the mapping fails.
    pub(super) fn new() -> Option<Crew> {
        let p = sys::map_anon(size_of::<Scratch>(), true)?;
        Some(Crew {
            scratch: NonNull::new(p.cast())?,
            pids: [0; MAX_HELPERS],
            n: 0,
        })
    }

    /// The shared scratch.
    pub(super) fn scratch(&self) -> &Scratch {
        // SAFETY: the mapping is page-aligned, at least size_of::<Scratch>()
        // long, zero-filled (a valid Scratch: all atomics) and unmapped only in
        // Drop, after which no reference is used.
        unsafe { self.scratch.as_ref() }
    }

    /// Forks helper number `self.n`, which runs `f(env, scratch, index)` and
    /// exits. False when the crew is full or `fork` failed.
    pub(super) fn spawn(&mut self, env: &Env<'_>, f: &dyn Fn(&Env<'_>, &Scratch, usize)) -> bool {
        if self.n >= MAX_HELPERS {
            return false;
        }
        let leader = sys::getpid();
        let index = self.n;
        let pid = sys::fork();
        if pid == 0 {
            if sys::die_with_parent(leader) {
                f(env, self.scratch(), index);
            }
            sys::exit_now(0);
        }
        if pid < 0 {
            env.failed();
            return false;
        }
        self.pids[index] = pid;
        self.n += 1;
        env.slot.helpers.fetch_add(1, Ordering::Relaxed);
        true
    }
}

impl Drop for Crew {
    fn drop(&mut self) {
        let s = self.scratch();
        s.stop.store(1, Ordering::Release);
        for pid in &self.pids[..self.n] {
            sys::kill_and_reap(*pid);
        }
        // SAFETY: the scratch was mapped by `new` with this size; the helpers
        // are gone and `self` hands out no reference past this point.
        unsafe { sys::unmap(self.scratch.as_ptr().cast(), size_of::<Scratch>()) };
    }
}

/// Whether a helper should keep going.
pub(crate) fn alive(env: &Env<'_>, s: &Scratch) -> bool {
    s.stop.load(Ordering::Acquire) == 0 && !env.over()
}

/// Waits (in [`WAIT_NS`] slices) while `word` holds `value` and `go_on()`
/// holds; returns whether the word changed.
pub(crate) fn wait_change(word: &AtomicU32, value: u32, go_on: impl Fn() -> bool) -> bool {
    while word.load(Ordering::Acquire) == value {
        if !go_on() {
            return false;
        }
        sys::futex_wait_timeout(word, value, WAIT_NS);
    }
    true
}
