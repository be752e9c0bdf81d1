//! Work types a worker runs alone, or with helpers that only add load:
//! computing, sleeping, memory, I/O, fork, and changes a task makes to itself
//! (nice, affinity, policy, cgroup).

use std::sync::atomic::Ordering;

use super::super::WorkType;
use super::super::child::{Crew, Env, Observer, alive, crew_cpu, rounds, spin, spin_for};
use super::super::shared::now_ns;
use super::super::sys;
use super::super::work::{CustomStep, SchedPolicy};

/// Length of one short cycle of a [`WorkType::Bursty`] burst.
const BURST_CYCLE_NS: u64 = 200_000;
/// `SyncWrite` cycles through a file of this size.
const IO_FILE_BYTES: u64 = 1 << 20;
/// Cache lines touched per `CachePressure` round.
const LINES_PER_ROUND: u64 = 1024;
/// Stride between touched lines, in lines: odd, so a power-of-two working set
/// is walked completely, and far enough that the prefetcher does not help.
const LINE_STRIDE: u64 = 97;

fn dur_ns(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Sleeps until `target` and records the oversleep as the wake-up latency.
fn sleep_and_measure(env: &Env<'_>, target: u64) {
    sys::sleep_until(target);
    env.latency_since(target);
}

pub(crate) fn run(work: &WorkType, env: &Env<'_>, obs: &mut Observer<'_>) {
    match work {
        WorkType::Yield => rounds(env, obs, |env| {
            spin(1);
            sys::yield_now();
            env.progress(1);
            None
        }),
        WorkType::SleepWake { run, sleep } => rounds(env, obs, |env| {
            spin_for(dur_ns(*run));
            let wake = now_ns().saturating_add(dur_ns(*sleep));
            sleep_and_measure(env, wake);
            env.progress(1);
            Some(wake)
        }),
        WorkType::Bursty { burst, idle } => rounds(env, obs, |env| {
            for _ in 0..*burst {
                spin_for(BURST_CYCLE_NS);
                sleep_and_measure(env, now_ns().saturating_add(BURST_CYCLE_NS));
                env.progress(1);
                if env.over() {
                    return None;
                }
            }
            let wake = now_ns().saturating_add(dur_ns(*idle));
            sleep_and_measure(env, wake);
            env.progress(1);
            Some(wake)
        }),
        WorkType::SmtSpin => smt_spin(env, obs),
        WorkType::CachePressure { kib } => {
            let bytes = if *kib == 0 {
                env.plan.cache_bytes
            } else {
                *kib as usize * 1024
            };
            cache_pressure(env, obs, bytes.max(64));
        }
        WorkType::PageFaultChurn { kib } => {
            let len = (*kib as usize * 1024).max(4096);
            rounds(env, obs, |env| {
                let Some(p) = sys::map_anon(len, false) else {
                    env.failed();
                    return None;
                };
                let mut pages = 0;
                for off in (0..len).step_by(4096) {
                    // SAFETY: `off < len`, inside the private mapping just made.
                    unsafe { p.add(off).write_volatile(1) };
                    pages += 1;
                }
                // SAFETY: the mapping made above; no pointer into it survives.
                unsafe { sys::unmap(p, len) };
                env.progress(pages);
                None
            })
        }
        WorkType::SyncWrite { block_kib } => sync_write(env, obs, *block_kib),
        WorkType::ForkExit => fork_exit(env, obs),
        WorkType::NiceSweep => {
            let mut nice = -20;
            let mut step = 1;
            rounds(env, obs, |env| {
                if sys::set_nice(nice) {
                    env.progress(1);
                } else {
                    env.failed();
                }
                if !(-20..19).contains(&(nice + step)) {
                    step = -step;
                }
                nice += step;
                spin(2);
                None
            });
            sys::set_nice(env.plan.nice);
        }
        WorkType::AffinityChurn => affinity_churn(env, obs),
        WorkType::PolicyChurn { ext } => {
            let cycle = [
                SchedPolicy::Normal,
                SchedPolicy::Batch,
                SchedPolicy::Idle,
                SchedPolicy::Fifo(1),
                SchedPolicy::Ext,
            ];
            let n = if *ext { 5 } else { 4 };
            let mut i = 0;
            rounds(env, obs, |env| {
                let (policy, prio) = cycle[i % n].raw();
                i += 1;
                if sys::set_policy(policy, prio) {
                    env.progress(1);
                } else {
                    env.failed();
                }
                spin(1);
                None
            });
            let (policy, prio) = env.plan.policy.raw();
            sys::set_policy(policy, prio);
        }
        WorkType::CgroupChurn => cgroup_churn(env, obs),
        WorkType::RtStarvation { rt_run, rt_sleep } => {
            rt_starvation(env, obs, dur_ns(*rt_run), dur_ns(*rt_sleep))
        }
        WorkType::Custom(c) => {
            let mut round = 0;
            rounds(env, obs, |env| {
                env.progress((c.step)(CustomStep {
                    worker: env.plan.index,
                    round,
                }));
                round += 1;
                None
            })
        }
        // Spin, and anything else that reaches here.
        _ => rounds(env, obs, |env| {
            spin(1);
            env.progress(1);
            None
        }),
    }
}

/// The allowed CPU after `after` (cyclically), if any.
fn next_cpu(mask: &libc::cpu_set_t, after: usize) -> Option<usize> {
    let n = libc::CPU_SETSIZE as usize;
    (1..=n)
        .map(|d| (after + d) % n)
        .find(|&c| sys::mask_has(mask, c))
}

/// Pins the caller to `cpu`, counting a failure when the kernel refuses.
fn pin(env: &Env<'_>, cpu: usize) {
    if !sys::set_affinity(&sys::mask_of(cpu)) {
        env.failed();
    }
}

fn smt_spin(env: &Env<'_>, obs: &mut Observer<'_>) {
    let Some(orig) = sys::get_affinity() else {
        env.failed();
        return run(&WorkType::Spin, env, obs);
    };
    let here = sys::current_cpu()
        .filter(|&c| sys::mask_has(&orig, c))
        .or_else(|| next_cpu(&orig, libc::CPU_SETSIZE as usize - 1))
        .unwrap_or(0);
    let core = env.plan.core_of.get(here).copied().unwrap_or(u32::MAX);
    let sibling = (0..env.plan.core_of.len())
        .find(|&c| c != here && sys::mask_has(&orig, c) && env.plan.core_of[c] == core)
        .filter(|_| core != u32::MAX)
        .unwrap_or(here);
    pin(env, here);
    if let Some(mut crew) = Crew::new() {
        crew.spawn(env, &|env, s, _| {
            pin(env, sibling);
            while alive(env, s) {
                spin(1);
                env.note_cpu();
            }
        });
        rounds(env, obs, |env| {
            spin(1);
            env.progress(1);
            None
        });
    } else {
        env.failed();
    }
    sys::set_affinity(&orig);
}

fn cache_pressure(env: &Env<'_>, obs: &mut Observer<'_>, bytes: usize) {
    let Some(p) = sys::map_anon(bytes, false) else {
        env.failed();
        return run(&WorkType::Spin, env, obs);
    };
    let lines = (bytes / 64) as u64;
    let mut line = 0u64;
    rounds(env, obs, |env| {
        for _ in 0..LINES_PER_ROUND {
            line = (line + LINE_STRIDE) % lines;
            // SAFETY: `line < lines`, so the byte is inside the mapping.
            unsafe {
                let b = p.add((line * 64) as usize);
                b.write_volatile(b.read_volatile().wrapping_add(1));
            }
        }
        env.progress(LINES_PER_ROUND);
        None
    });
    // SAFETY: the mapping made above; no pointer into it survives.
    unsafe { sys::unmap(p, bytes) };
}

fn sync_write(env: &Env<'_>, obs: &mut Observer<'_>, block_kib: u32) {
    let Some(fd) = sys::open(
        &env.plan.io_path,
        libc::O_WRONLY | libc::O_CREAT | libc::O_DSYNC,
    ) else {
        env.failed();
        return run(&WorkType::Spin, env, obs);
    };
    let buf = [0x5au8; 64 * 1024];
    let block = (block_kib.clamp(1, 64) * 1024) as usize;
    let mut off = 0u64;
    rounds(env, obs, |env| {
        if sys::pwrite_all(fd, &buf[..block], off) {
            env.progress(block as u64);
        } else {
            env.failed();
        }
        off = (off + block as u64) % IO_FILE_BYTES;
        None
    });
    sys::close(fd);
    sys::unlink(&env.plan.io_path);
}

fn fork_exit(env: &Env<'_>, obs: &mut Observer<'_>) {
    let Some(crew) = Crew::new() else {
        env.failed();
        return run(&WorkType::Spin, env, obs);
    };
    let s = crew.scratch();
    rounds(env, obs, |env| {
        s.stamp[0].store(0, Ordering::Release);
        let pid = sys::fork();
        if pid == 0 {
            s.stamp[0].store(now_ns(), Ordering::Release);
            sys::exit_now(0);
        }
        // The new task is runnable from the end of fork (wake_up_new_task):
        // its wake-up latency is how long it waits after that, not the cost
        // of copying the parent (which grows with a slower or busier CPU).
        let woken = now_ns();
        if pid < 0 || !sys::reap(pid) {
            env.failed();
            return None;
        }
        env.latency(s.stamp[0].load(Ordering::Acquire).saturating_sub(woken));
        env.progress(1);
        None
    });
}

fn affinity_churn(env: &Env<'_>, obs: &mut Observer<'_>) {
    let Some(orig) = sys::get_affinity() else {
        env.failed();
        return run(&WorkType::Spin, env, obs);
    };
    let mut cpu = libc::CPU_SETSIZE as usize - 1;
    rounds(env, obs, |env| {
        if let Some(next) = next_cpu(&orig, cpu) {
            cpu = next;
            if sys::set_affinity(&sys::mask_of(cpu)) {
                if sys::current_cpu() != Some(cpu) {
                    env.slot.affinity_violations.fetch_add(1, Ordering::Relaxed);
                }
                env.progress(1);
            } else {
                env.failed();
            }
        }
        spin(1);
        None
    });
    sys::set_affinity(&orig);
}

fn cgroup_churn(env: &Env<'_>, obs: &mut Observer<'_>) {
    let Some([a, b, home]) = &env.plan.churn else {
        env.failed();
        return run(&WorkType::Spin, env, obs);
    };
    let fds = [a, b].map(|p| sys::open(p, libc::O_WRONLY));
    let mut k = 0;
    rounds(env, obs, |env| {
        // "0" is the writing process itself (cgroup-v2.rst, cgroup.procs).
        match fds[k] {
            Some(fd) if sys::write_str(fd, b"0") => env.progress(1),
            _ => env.failed(),
        }
        k ^= 1;
        spin(1);
        None
    });
    for fd in fds.into_iter().flatten() {
        sys::close(fd);
    }
    if let Some(fd) = sys::open(home, libc::O_WRONLY) {
        sys::write_str(fd, b"0");
        sys::close(fd);
    }
}

fn rt_starvation(env: &Env<'_>, obs: &mut Observer<'_>, run_ns: u64, sleep_ns: u64) {
    let orig = sys::get_affinity();
    let here = crew_cpu(env.plan.index);
    pin(env, here);
    let Some(mut crew) = Crew::new() else {
        env.failed();
        return;
    };
    crew.spawn(env, &|env, s, _| {
        if !sys::set_policy(libc::SCHED_FIFO, 1) {
            env.failed();
        }
        while alive(env, s) {
            spin_for(run_ns);
            env.note_cpu();
            sys::sleep_until(now_ns().saturating_add(sleep_ns));
        }
    });
    rounds(env, obs, |env| {
        spin(1);
        env.progress(1);
        None
    });
    drop(crew);
    if let Some(orig) = orig {
        sys::set_affinity(&orig);
    }
}
