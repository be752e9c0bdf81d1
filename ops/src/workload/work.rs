//! What a worker does ([`WorkType`]) and under which policy ([`SchedPolicy`]).
//!
//! Each work type is one kernel behaviour a scheduler must handle, with its own
//! unit of progress ([`WorkType::unit`]) and, where a task waits to be woken,
//! wake-up latency. Work types that need partner tasks (ping-pong, fan-out,
//! chains, contention) fork them as *helpers* of the worker: they live in the
//! worker's cgroup, record their CPUs and latencies into the worker's report,
//! and die with it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One phase of a [`WorkType::Sequence`].
#[derive(Debug, Clone, PartialEq)]
pub struct Phase {
    /// What the worker does in this phase (not itself a sequence).
    pub work: WorkType,
    /// For how long.
    pub duration: Duration,
}

impl Phase {
    /// `work` for `duration`.
    pub fn new(work: WorkType, duration: Duration) -> Self {
        Phase { work, duration }
    }
}

/// What a [`CustomWork`] step gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CustomStep {
    /// The worker's index in its workload.
    pub worker: usize,
    /// How many steps it completed before this one.
    pub round: u64,
}

/// A test's own work loop body.
///
/// `step` runs in a forked worker of a possibly multi-threaded parent, so it
/// must be async-signal-safe (signal-safety(7)): no allocation, no locks, no
/// stdio. It returns the units of progress it made; it is called until the
/// worker is stopped, so each call should last well under a millisecond.
#[derive(Clone, Copy)]
pub struct CustomWork {
    /// Its name in reports.
    pub name: &'static str,
    /// One step of work.
    pub step: fn(CustomStep) -> u64,
}

impl std::fmt::Debug for CustomWork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CustomWork({})", self.name)
    }
}

impl PartialEq for CustomWork {
    /// Custom works are equal by name (function addresses are not stable).
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

/// What a worker does in its loop.
///
/// [`WorkType::catalogue`] lists one instance of each with its defaults.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum WorkType {
    /// Burn CPU without ever blocking. Progress: spin units (~2k LCG steps).
    Spin,
    /// Burn a little CPU, then `sched_yield()`. Progress: yields.
    Yield,
    /// Mixed run/sleep: burn CPU for `run`, then sleep for `sleep`: the wake-up
    /// path. Progress: wake-ups; latency: oversleep past the requested end.
    SleepWake {
        /// CPU burst before each sleep.
        run: Duration,
        /// Requested sleep.
        sleep: Duration,
    },
    /// Bursts of `burst` short (200 µs) run/sleep cycles, then idle for `idle`.
    /// Progress: wake-ups; latency: oversleep.
    Bursty {
        /// Short cycles per burst.
        burst: u32,
        /// Idle time between bursts.
        idle: Duration,
    },
    /// The worker and a helper spin pinned on two SMT siblings of one core
    /// (the same CPU where the topology has no SMT). Progress: spin units.
    SmtSpin,
    /// Streams through a working set larger than the LLC. `kib` = 0: twice the
    /// LLC, at most 64 MiB. Progress: cache lines touched.
    CachePressure {
        /// Working set in KiB (0: automatic).
        kib: u32,
    },
    /// Ping-pong of 8-byte messages with a helper over two pipes.
    /// Progress: round trips; latency: write to wake-up of the reader.
    PipePingPong,
    /// Ping-pong with a helper through one futex word. Progress: round trips;
    /// latency: wake to return from FUTEX_WAIT.
    FutexPingPong,
    /// One waker (the worker) wakes `waiters` helpers, each on its own futex.
    /// Progress: wake-ups delivered; latency: per waiter.
    FutexFanOut {
        /// Helpers woken per round (1..=15).
        waiters: u8,
    },
    /// A ring of `len` tasks, each waking the next. Progress: hops;
    /// latency: per hop.
    WakeChain {
        /// Tasks in the ring, the worker included (2..=16).
        len: u8,
    },
    /// `waiters` helpers sleep on one futex and are woken all at once, then race
    /// for one token. Progress: wake-ups; latency: per waiter.
    ThunderingHerd {
        /// Helpers on the futex (1..=15).
        waiters: u8,
    },
    /// A helper makes `fds` eventfds ready at once; the worker collects them
    /// with `epoll_wait`. Progress: events; latency: readiness to wake-up.
    EpollStorm {
        /// Eventfds per storm (1..=64).
        fds: u8,
    },
    /// Synchronous writes (`O_DSYNC`) of `block_kib` KiB to a file in `/tmp`.
    /// Progress: bytes written.
    SyncWrite {
        /// Size of each write, KiB (1..=64).
        block_kib: u32,
    },
    /// Forks a child that exits at once, and reaps it. Progress: forks;
    /// latency: fork to the child's first instruction.
    ForkExit,
    /// Spins while stepping its own nice value through -20..=19 and back.
    /// Progress: nice changes.
    NiceSweep,
    /// Pins itself to each CPU of its allowed set in turn, checking after each
    /// `sched_setaffinity` that it runs there. Progress: mask changes.
    AffinityChurn,
    /// Spins while switching its policy: normal, batch, idle, FIFO 1 and, with
    /// `ext`, SCHED_EXT (a sched_ext scheduler in partial mode takes only
    /// those). Progress: policy switches.
    PolicyChurn {
        /// Include SCHED_EXT in the cycle.
        ext: bool,
    },
    /// Moves itself between two child cgroups of its cgroup (`churn_a`,
    /// `churn_b`, made by the harness). Needs a cgroup. Progress: moves.
    CgroupChurn,
    /// Maps `kib` KiB, touches every page, unmaps. Progress: pages faulted.
    PageFaultChurn {
        /// Mapping size, KiB.
        kib: u32,
    },
    /// `tasks` tasks (the worker and helpers) contend on one futex mutex.
    /// Progress: acquisitions by all; latency: unlock to the waiter's wake-up.
    MutexContention {
        /// Contending tasks, the worker included (2..=16).
        tasks: u8,
    },
    /// On one CPU: a nice-19 helper holds a lock the worker needs while a
    /// nice-0 helper spins. Progress: the worker's acquisitions; latency: its
    /// wait for the lock.
    PriorityInversion,
    /// The worker spins while a SCHED_FIFO helper on its CPU runs `rt_run`,
    /// sleeps `rt_sleep`. Progress: the worker's spin units.
    RtStarvation {
        /// RT helper's burst.
        rt_run: Duration,
        /// RT helper's sleep.
        rt_sleep: Duration,
    },
    /// Phases run in order, over and over. Progress: the sum of the phases'.
    Sequence(Vec<Phase>),
    /// A test's own loop body.
    Custom(CustomWork),
}

impl WorkType {
    /// One instance of every work type (a short [`WorkType::Sequence`] and a
    /// trivial [`WorkType::Custom`] included), with the defaults the README
    /// lists.
    pub fn catalogue() -> Vec<WorkType> {
        let ms = Duration::from_millis;
        vec![
            WorkType::Spin,
            WorkType::Yield,
            WorkType::SleepWake {
                run: ms(2),
                sleep: ms(5),
            },
            WorkType::Bursty {
                burst: 8,
                idle: ms(20),
            },
            WorkType::SmtSpin,
            WorkType::CachePressure { kib: 0 },
            WorkType::PipePingPong,
            WorkType::FutexPingPong,
            WorkType::FutexFanOut { waiters: 4 },
            WorkType::WakeChain { len: 4 },
            WorkType::ThunderingHerd { waiters: 4 },
            WorkType::EpollStorm { fds: 16 },
            WorkType::SyncWrite { block_kib: 4 },
            WorkType::ForkExit,
            WorkType::NiceSweep,
            WorkType::AffinityChurn,
            WorkType::PolicyChurn { ext: false },
            WorkType::CgroupChurn,
            WorkType::PageFaultChurn { kib: 1024 },
            WorkType::MutexContention { tasks: 4 },
            WorkType::PriorityInversion,
            WorkType::RtStarvation {
                rt_run: ms(5),
                rt_sleep: ms(5),
            },
            WorkType::Sequence(vec![
                // Long enough that the ping-pong phase sees wake-ups even
                // when a vCPU waits its turn on an instruction-counting VM.
                Phase::new(WorkType::Spin, ms(100)),
                Phase::new(WorkType::FutexPingPong, ms(100)),
            ]),
            WorkType::Custom(CustomWork {
                name: "count",
                step: |_| 1,
            }),
        ]
    }

    /// The short name of the kind, without parameters (`pipe-ping-pong`).
    pub fn kind(&self) -> &'static str {
        match self {
            WorkType::Spin => "spin",
            WorkType::Yield => "yield",
            WorkType::SleepWake { .. } => "sleep-wake",
            WorkType::Bursty { .. } => "bursty",
            WorkType::SmtSpin => "smt-spin",
            WorkType::CachePressure { .. } => "cache-pressure",
            WorkType::PipePingPong => "pipe-ping-pong",
            WorkType::FutexPingPong => "futex-ping-pong",
            WorkType::FutexFanOut { .. } => "futex-fan-out",
            WorkType::WakeChain { .. } => "wake-chain",
            WorkType::ThunderingHerd { .. } => "thundering-herd",
            WorkType::EpollStorm { .. } => "epoll-storm",
            WorkType::SyncWrite { .. } => "sync-write",
            WorkType::ForkExit => "fork-exit",
            WorkType::NiceSweep => "nice-sweep",
            WorkType::AffinityChurn => "affinity-churn",
            WorkType::PolicyChurn { .. } => "policy-churn",
            WorkType::CgroupChurn => "cgroup-churn",
            WorkType::PageFaultChurn { .. } => "page-fault-churn",
            WorkType::MutexContention { .. } => "mutex-contention",
            WorkType::PriorityInversion => "priority-inversion",
            WorkType::RtStarvation { .. } => "rt-starvation",
            WorkType::Sequence(_) => "sequence",
            WorkType::Custom(_) => "custom",
        }
    }

    /// The unit its progress is counted in.
    pub fn unit(&self) -> &'static str {
        match self {
            WorkType::Spin | WorkType::SmtSpin | WorkType::RtStarvation { .. } => "spin units",
            WorkType::Yield => "yields",
            WorkType::SleepWake { .. } | WorkType::Bursty { .. } => "wake-ups",
            WorkType::CachePressure { .. } => "cache lines",
            WorkType::PipePingPong | WorkType::FutexPingPong => "round trips",
            WorkType::FutexFanOut { .. } | WorkType::ThunderingHerd { .. } => "wake-ups",
            WorkType::WakeChain { .. } => "hops",
            WorkType::EpollStorm { .. } => "events",
            WorkType::SyncWrite { .. } => "bytes written",
            WorkType::ForkExit => "forks",
            WorkType::NiceSweep => "nice changes",
            WorkType::AffinityChurn => "mask changes",
            WorkType::PolicyChurn { .. } => "policy switches",
            WorkType::CgroupChurn => "cgroup moves",
            WorkType::PageFaultChurn { .. } => "pages faulted",
            WorkType::MutexContention { .. } | WorkType::PriorityInversion => "acquisitions",
            WorkType::Sequence(_) => "phase units",
            WorkType::Custom(_) => "custom units",
        }
    }

    /// Whether the worker measures wake-up latencies.
    pub fn measures_latency(&self) -> bool {
        match self {
            WorkType::SleepWake { .. }
            | WorkType::Bursty { .. }
            | WorkType::PipePingPong
            | WorkType::FutexPingPong
            | WorkType::FutexFanOut { .. }
            | WorkType::WakeChain { .. }
            | WorkType::ThunderingHerd { .. }
            | WorkType::EpollStorm { .. }
            | WorkType::ForkExit
            | WorkType::MutexContention { .. }
            | WorkType::PriorityInversion => true,
            WorkType::Sequence(phases) => phases.iter().any(|p| p.work.measures_latency()),
            _ => false,
        }
    }

    /// Whether it only computes, never blocking, yielding or changing its own
    /// weight or place: only such workers are compared for CPU-time fairness.
    ///
    /// A yield-heavy worker is not: it hands its CPU to whoever else is
    /// runnable there, so its share follows its neighbours, not the
    /// scheduler's fairness. Under EEVDF, 8 yielders beside spinners on
    /// 1n2l2c1t got 0.31 s to 0.54 s each in 3 s (spread 59%) while the
    /// spinners' spread was under 30%.
    pub fn cpu_bound(&self) -> bool {
        matches!(self, WorkType::Spin | WorkType::CachePressure { .. })
    }

    /// Whether it changes its own policy or nice value on purpose, so its
    /// rate says nothing about how the scheduler shares CPUs between equals.
    pub fn changes_own_weight(&self) -> bool {
        match self {
            WorkType::PolicyChurn { .. } | WorkType::NiceSweep => true,
            WorkType::Sequence(phases) => phases.iter().any(|p| p.work.changes_own_weight()),
            _ => false,
        }
    }

    /// Whether it moves itself between CPUs or cgroups on purpose (its
    /// migrations say nothing about the scheduler).
    pub fn moves_itself(&self) -> bool {
        match self {
            WorkType::AffinityChurn | WorkType::CgroupChurn | WorkType::SmtSpin => true,
            WorkType::Sequence(phases) => phases.iter().any(|p| p.work.moves_itself()),
            _ => false,
        }
    }

    /// Whether it needs its worker to be in a cgroup.
    pub fn needs_cgroup(&self) -> bool {
        match self {
            WorkType::CgroupChurn => true,
            WorkType::Sequence(phases) => phases.iter().any(|p| p.work.needs_cgroup()),
            _ => false,
        }
    }
}

impl std::fmt::Display for WorkType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = self.kind();
        match self {
            WorkType::SleepWake { run, sleep } => write!(f, "{kind}({run:?}/{sleep:?})"),
            WorkType::Bursty { burst, idle } => write!(f, "{kind}({burst}x/{idle:?})"),
            WorkType::CachePressure { kib: 0 } => f.write_str(kind),
            WorkType::CachePressure { kib } | WorkType::PageFaultChurn { kib } => {
                write!(f, "{kind}({kib}KiB)")
            }
            WorkType::FutexFanOut { waiters } | WorkType::ThunderingHerd { waiters } => {
                write!(f, "{kind}({waiters})")
            }
            WorkType::WakeChain { len } => write!(f, "{kind}({len})"),
            WorkType::EpollStorm { fds } => write!(f, "{kind}({fds})"),
            WorkType::SyncWrite { block_kib } => write!(f, "{kind}({block_kib}KiB)"),
            WorkType::PolicyChurn { ext: true } => write!(f, "{kind}(+ext)"),
            WorkType::MutexContention { tasks } => write!(f, "{kind}({tasks})"),
            WorkType::RtStarvation { rt_run, rt_sleep } => {
                write!(f, "{kind}({rt_run:?}/{rt_sleep:?})")
            }
            WorkType::Sequence(phases) => {
                f.write_str("sequence(")?;
                for (i, p) in phases.iter().enumerate() {
                    let sep = if i > 0 { ", " } else { "" };
                    write!(f, "{sep}{} {:?}", p.work, p.duration)?;
                }
                f.write_str(")")
            }
            WorkType::Custom(c) => write!(f, "custom({})", c.name),
            _ => f.write_str(kind),
        }
    }
}

/// The Linux scheduling policy of a worker (sched(7)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
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
    /// SCHED_EXT (7): the sched_ext class even when the scheduler runs in
    /// partial mode (`SCX_OPS_SWITCH_PARTIAL`); the fair class without one.
    Ext,
}

/// `SCHED_EXT` from include/uapi/linux/sched.h (not in libc yet).
pub(crate) const SCHED_EXT: i32 = 7;

impl SchedPolicy {
    /// The policy number and real-time priority for `sched_setscheduler`.
    pub(crate) fn raw(self) -> (i32, i32) {
        match self {
            SchedPolicy::Normal => (libc::SCHED_OTHER, 0),
            SchedPolicy::Batch => (libc::SCHED_BATCH, 0),
            SchedPolicy::Idle => (libc::SCHED_IDLE, 0),
            SchedPolicy::Fifo(p) => (libc::SCHED_FIFO, i32::from(p)),
            SchedPolicy::RoundRobin(p) => (libc::SCHED_RR, i32::from(p)),
            SchedPolicy::Ext => (SCHED_EXT, 0),
        }
    }
}

impl std::fmt::Display for SchedPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SchedPolicy::Normal => f.write_str("normal"),
            SchedPolicy::Batch => f.write_str("batch"),
            SchedPolicy::Idle => f.write_str("idle"),
            SchedPolicy::Fifo(p) => write!(f, "fifo:{p}"),
            SchedPolicy::RoundRobin(p) => write!(f, "rr:{p}"),
            SchedPolicy::Ext => f.write_str("ext"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_has_every_kind_once() {
        let kinds: Vec<&str> = WorkType::catalogue().iter().map(WorkType::kind).collect();
        let mut unique = kinds.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), kinds.len(), "{kinds:?}");
        assert!(kinds.len() >= 24, "{kinds:?}");
    }

    #[test]
    fn display_names_parameters() {
        let s = WorkType::Sequence(vec![
            Phase::new(WorkType::Spin, Duration::from_millis(10)),
            Phase::new(WorkType::WakeChain { len: 3 }, Duration::from_millis(20)),
        ]);
        assert_eq!(s.to_string(), "sequence(spin 10ms, wake-chain(3) 20ms)");
        assert!(s.measures_latency() && !s.cpu_bound());
        assert_eq!(SchedPolicy::Ext.to_string(), "ext");
        assert_eq!(SchedPolicy::Ext.raw(), (7, 0));
    }
}
