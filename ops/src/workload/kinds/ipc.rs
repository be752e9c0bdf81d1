//! Work types of tasks that wake each other: pipes, futexes, epoll, locks.
//!
//! The worker is one end; its helpers (see [`Crew`]) are the others. Every
//! wait blocks at most [`WAIT_NS`](super::super::child::WAIT_NS) before the
//! stop flags are looked at again, so a stopped or starved partner never
//! hangs the worker. Latencies are stamped by the waker just before it wakes
//! and read by the wakee just after it returns.

use std::sync::atomic::{AtomicU32, Ordering};

use super::super::WorkType;
use super::super::child::{
    Crew, Env, Observer, Scratch, WAIT_MS, alive, crew_cpu, rounds, spin, spin_for, wait_change,
};
use super::super::shared::now_ns;
use super::super::sys;

pub(crate) fn run(work: &WorkType, env: &Env<'_>, obs: &mut Observer<'_>) {
    let Some(mut crew) = Crew::new() else {
        env.failed();
        return super::solo::run(&WorkType::Spin, env, obs);
    };
    match work {
        WorkType::PipePingPong => pipe_ping_pong(env, obs, &mut crew),
        WorkType::FutexPingPong => futex_ping_pong(env, obs, &mut crew),
        WorkType::FutexFanOut { waiters } => fan_out(env, obs, &mut crew, *waiters, false),
        WorkType::ThunderingHerd { waiters } => fan_out(env, obs, &mut crew, *waiters, true),
        WorkType::WakeChain { len } => wake_chain(env, obs, &mut crew, *len),
        WorkType::EpollStorm { fds } => epoll_storm(env, obs, &mut crew, *fds),
        WorkType::MutexContention { tasks } => mutex_contention(env, obs, &mut crew, *tasks),
        WorkType::PriorityInversion => priority_inversion(env, obs, &mut crew),
        _ => super::solo::run(work, env, obs),
    }
}

/// Advances a generation word and wakes its waiters.
fn bump(word: &AtomicU32, n: i32) {
    word.fetch_add(1, Ordering::AcqRel);
    sys::futex_wake_n(word, n);
}

fn pipe_ping_pong(env: &Env<'_>, obs: &mut Observer<'_>, crew: &mut Crew) {
    let (Some((ping_r, ping_w)), Some((pong_r, pong_w))) = (sys::pipe(), sys::pipe()) else {
        env.failed();
        return;
    };
    crew.spawn(env, &|env, s, _| {
        while alive(env, s) {
            if !sys::poll_in(ping_r, WAIT_MS) {
                continue;
            }
            let Some(stamp) = sys::read_u64(ping_r) else {
                return;
            };
            env.latency_since(stamp);
            env.note_cpu();
            if !sys::write_u64(pong_w, now_ns()) {
                return;
            }
        }
    });
    rounds(env, obs, |env| {
        if !sys::write_u64(ping_w, now_ns()) {
            env.failed();
            return None;
        }
        while !sys::poll_in(pong_r, WAIT_MS) {
            if env.over() {
                return None;
            }
        }
        match sys::read_u64(pong_r) {
            Some(stamp) => {
                env.latency_since(stamp);
                env.progress(1);
            }
            None => env.failed(),
        }
        None
    });
    for fd in [ping_r, ping_w, pong_r, pong_w] {
        sys::close(fd);
    }
}

fn futex_ping_pong(env: &Env<'_>, obs: &mut Observer<'_>, crew: &mut Crew) {
    // word[0]: whose turn (0 the worker's, 1 the helper's); stamp[t]: when the
    // turn was given to t.
    crew.spawn(env, &|env, s, _| {
        let turn = &s.word[0];
        while wait_change(turn, 0, || alive(env, s)) {
            env.latency_since(s.stamp[1].load(Ordering::Acquire));
            env.note_cpu();
            s.stamp[0].store(now_ns(), Ordering::Release);
            turn.store(0, Ordering::Release);
            sys::futex_wake_n(turn, 1);
        }
    });
    let s = crew.scratch();
    let turn = &s.word[0];
    rounds(env, obs, |env| {
        s.stamp[1].store(now_ns(), Ordering::Release);
        turn.store(1, Ordering::Release);
        sys::futex_wake_n(turn, 1);
        if wait_change(turn, 1, || !env.over()) {
            env.latency_since(s.stamp[0].load(Ordering::Acquire));
            env.progress(1);
        }
        None
    });
}

/// Fan-out (each waiter on its own word, woken one by one) or thundering herd
/// (all on one word, woken at once, then racing for a token). word[0] counts
/// acks; stamp[0] is when the round's wake-ups began.
fn fan_out(env: &Env<'_>, obs: &mut Observer<'_>, crew: &mut Crew, waiters: u8, herd: bool) {
    let n = usize::from(waiters).clamp(1, 15);
    for _ in 0..n {
        crew.spawn(env, &|env, s, i| {
            let word = if herd { &s.word[1] } else { &s.word[1 + i] };
            let mut seen = 0;
            while wait_change(word, seen, || alive(env, s)) {
                seen = word.load(Ordering::Acquire);
                env.latency_since(s.stamp[0].load(Ordering::Acquire));
                env.note_cpu();
                if herd && s.count[1].fetch_add(1, Ordering::AcqRel) == 0 {
                    spin(1); // the token holder's work
                }
                s.count[0].fetch_add(1, Ordering::AcqRel);
                bump(&s.word[0], 1);
            }
        });
    }
    let s = crew.scratch();
    rounds(env, obs, |env| {
        s.count[0].store(0, Ordering::Release);
        s.count[1].store(0, Ordering::Release);
        s.stamp[0].store(now_ns(), Ordering::Release);
        if herd {
            bump(&s.word[1], i32::MAX);
        } else {
            for i in 0..n {
                bump(&s.word[1 + i], 1);
            }
        }
        loop {
            let acks = s.word[0].load(Ordering::Acquire);
            if s.count[0].load(Ordering::Acquire) >= n as u64 {
                break;
            }
            if env.over() {
                return None;
            }
            sys::futex_wait_timeout(&s.word[0], acks, super::super::child::WAIT_NS);
        }
        env.progress(n as u64);
        None
    });
}

/// A ring: task i waits on word[i] and passes to (i + 1) % len, stamping
/// stamp[next] first. The worker is task 0.
fn wake_chain(env: &Env<'_>, obs: &mut Observer<'_>, crew: &mut Crew, len: u8) {
    let len = usize::from(len).clamp(2, 16);
    let pass = |s: &Scratch, to: usize| {
        s.stamp[to].store(now_ns(), Ordering::Release);
        bump(&s.word[to], 1);
    };
    for _ in 1..len {
        crew.spawn(env, &|env, s, h| {
            let me = h + 1;
            let mut seen = 0;
            while wait_change(&s.word[me], seen, || alive(env, s)) {
                seen = s.word[me].load(Ordering::Acquire);
                env.latency_since(s.stamp[me].load(Ordering::Acquire));
                env.note_cpu();
                pass(s, (me + 1) % len);
            }
        });
    }
    let s = crew.scratch();
    rounds(env, obs, |env| {
        let seen = s.word[0].load(Ordering::Acquire);
        pass(s, 1);
        if wait_change(&s.word[0], seen, || !env.over()) {
            env.latency_since(s.stamp[0].load(Ordering::Acquire));
            env.progress(len as u64);
        }
        None
    });
}

fn epoll_storm(env: &Env<'_>, obs: &mut Observer<'_>, crew: &mut Crew, fds: u8) {
    let k = usize::from(fds).clamp(1, 64);
    let Some(ep) = sys::epoll_create() else {
        env.failed();
        return;
    };
    let mut efd = [-1i32; 64];
    for (i, slot) in efd.iter_mut().enumerate().take(k) {
        match sys::eventfd() {
            Some(fd) if sys::epoll_add(ep, fd, i as u64) => *slot = fd,
            _ => env.failed(),
        }
    }
    // The helper makes every eventfd ready (stamp[0] just before), then waits
    // for the worker's ack on word[0].
    crew.spawn(env, &|env, s, _| {
        while alive(env, s) {
            let acks = s.word[0].load(Ordering::Acquire);
            s.stamp[0].store(now_ns(), Ordering::Release);
            for &fd in efd.iter().take(k).filter(|&&fd| fd >= 0) {
                sys::write_u64(fd, 1);
            }
            env.note_cpu();
            wait_change(&s.word[0], acks, || alive(env, s));
        }
    });
    let s = crew.scratch();
    let mut events = [libc::epoll_event { events: 0, u64: 0 }; 64];
    rounds(env, obs, |env| {
        let mut got = 0;
        let mut first = true;
        while got < k {
            if env.over() {
                return None;
            }
            let n = sys::epoll_wait(ep, &mut events[..k], WAIT_MS);
            if n > 0 && first {
                env.latency_since(s.stamp[0].load(Ordering::Acquire));
                first = false;
            }
            for ev in &events[..n] {
                let fd = efd.get(ev.u64 as usize).copied().unwrap_or(-1);
                if sys::read_u64(fd).is_some() {
                    got += 1;
                }
            }
        }
        env.progress(got as u64);
        bump(&s.word[0], 1);
        None
    });
    for fd in efd.into_iter().take(k).filter(|&fd| fd >= 0) {
        sys::close(fd);
    }
    sys::close(ep);
}

/// A three-state futex mutex (0 free, 1 locked, 2 locked with waiters) at
/// word[0]; stamp[0] is the time of the last unlock. Returns false when the
/// phase ended while waiting. With `measure_wait` every acquisition records
/// its wait for the lock; otherwise a contended one records the time from
/// the unlock that let it in.
fn lock(env: &Env<'_>, s: &Scratch, go_on: &dyn Fn() -> bool, measure_wait: bool) -> bool {
    let m = &s.word[0];
    let t0 = now_ns();
    if m.compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
        .is_ok()
    {
        if measure_wait {
            env.latency_since(t0);
        }
        return true;
    }
    while m.swap(2, Ordering::Acquire) != 0 {
        if !go_on() {
            return false;
        }
        sys::futex_wait_timeout(m, 2, super::super::child::WAIT_NS);
    }
    if measure_wait {
        env.latency_since(t0);
    } else {
        env.latency_since(s.stamp[0].load(Ordering::Acquire).max(t0));
    }
    true
}

fn unlock(s: &Scratch) {
    s.stamp[0].store(now_ns(), Ordering::Release);
    if s.word[0].swap(0, Ordering::Release) == 2 {
        sys::futex_wake_n(&s.word[0], 1);
    }
}

fn mutex_contention(env: &Env<'_>, obs: &mut Observer<'_>, crew: &mut Crew, tasks: u8) {
    let helpers = usize::from(tasks).clamp(2, 16) - 1;
    for _ in 0..helpers {
        crew.spawn(env, &|env, s, _| {
            while alive(env, s) && lock(env, s, &|| alive(env, s), false) {
                spin(1);
                env.note_cpu();
                unlock(s);
                env.progress(1);
                spin(1);
            }
        });
    }
    let s = crew.scratch();
    rounds(env, obs, |env| {
        if lock(env, s, &|| !env.over(), false) {
            spin(1);
            unlock(s);
            env.progress(1);
        }
        spin(1);
        None
    });
}

fn priority_inversion(env: &Env<'_>, obs: &mut Observer<'_>, crew: &mut Crew) {
    let orig = sys::get_affinity();
    let cpu = crew_cpu(env.plan.index);
    let on_cpu = || sys::set_affinity(&sys::mask_of(cpu));
    if !on_cpu() {
        env.failed();
    }
    // The low-priority holder: nice 19, holds the lock for 200 µs of wall
    // time, plus however long it then waits for a CPU to release it.
    crew.spawn(env, &|env, s, _| {
        sys::set_nice(19);
        while alive(env, s) && lock(env, s, &|| alive(env, s), false) {
            spin_for(200_000);
            env.note_cpu();
            unlock(s);
            sys::yield_now();
        }
    });
    // The medium-priority spinner: nice 0, never touches the lock.
    crew.spawn(env, &|env, s, _| {
        sys::set_nice(0);
        while alive(env, s) {
            spin(1);
            env.note_cpu();
        }
    });
    let s = crew.scratch();
    rounds(env, obs, |env| {
        if lock(env, s, &|| !env.over(), true) {
            spin(1);
            unlock(s);
            env.progress(1);
        }
        let wake = now_ns() + 1_000_000;
        sys::sleep_until(wake);
        Some(wake)
    });
    if let Some(orig) = orig {
        sys::set_affinity(&orig);
    }
}
