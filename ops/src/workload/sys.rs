//! The raw system calls the forked workers and their helpers make, each in
//! one small function with its safety argument.
//!
//! Everything here is async-signal-safe (signal-safety(7)): plain syscalls
//! on memory the caller owns, no allocation, no lock. Errors come back as
//! `false`/`None`/negative values; the work loops count them as failures
//! instead of stopping.

use std::ffi::CStr;
use std::sync::atomic::AtomicU32;

/// Waits while `word` holds `expected`, at most `timeout_ns` (FUTEX_WAIT on
/// a shared mapping). Returns early on a wake, a changed value or a signal.
pub(crate) fn futex_wait_timeout(word: &AtomicU32, expected: u32, timeout_ns: u64) {
    let ts = timespec(timeout_ns);
    // SAFETY: `word` is an aligned u32 in memory that stays mapped for the
    // call; `ts` is a valid relative timeout that outlives it. Not private:
    // the word may live in a mapping shared between processes.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            &ts as *const libc::timespec,
        );
    }
}

/// Wakes up to `n` waiters on `word`.
pub(crate) fn futex_wake_n(word: &AtomicU32, n: i32) {
    // SAFETY: `word` is an aligned u32 in a live mapping; FUTEX_WAKE only
    // uses the address.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, n);
    }
}

fn timespec(ns: u64) -> libc::timespec {
    libc::timespec {
        tv_sec: (ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
    }
}

/// Sleeps until CLOCK_MONOTONIC reaches `ns` (EINTR ends it early).
pub(crate) fn sleep_until(ns: u64) {
    let ts = timespec(ns);
    // SAFETY: `ts` is a valid timespec; a null remainder is allowed with
    // TIMER_ABSTIME.
    unsafe {
        libc::clock_nanosleep(
            libc::CLOCK_MONOTONIC,
            libc::TIMER_ABSTIME,
            &ts,
            std::ptr::null_mut(),
        );
    }
}

/// The CPU this task runs on (rseq or the vDSO).
pub(crate) fn current_cpu() -> Option<usize> {
    // SAFETY: no arguments; returns -1 on error.
    let cpu = unsafe { libc::sched_getcpu() };
    usize::try_from(cpu).ok()
}

/// An all-empty CPU mask.
pub(crate) fn empty_mask() -> libc::cpu_set_t {
    // SAFETY: cpu_set_t is a plain bit array; all-zero is the empty set.
    unsafe { std::mem::zeroed() }
}

/// Whether `cpu` is in `set`.
pub(crate) fn mask_has(set: &libc::cpu_set_t, cpu: usize) -> bool {
    // SAFETY: CPU_ISSET only reads the bit, after checking the index range.
    cpu < libc::CPU_SETSIZE as usize && unsafe { libc::CPU_ISSET(cpu, set) }
}

/// Adds `cpu` to `set` (ignored past CPU_SETSIZE).
pub(crate) fn mask_add(set: &mut libc::cpu_set_t, cpu: usize) {
    if cpu < libc::CPU_SETSIZE as usize {
        // SAFETY: the index is below CPU_SETSIZE, the size of `set`.
        unsafe { libc::CPU_SET(cpu, set) };
    }
}

/// A mask of the single CPU `cpu`.
pub(crate) fn mask_of(cpu: usize) -> libc::cpu_set_t {
    let mut set = empty_mask();
    mask_add(&mut set, cpu);
    set
}

/// The calling task's CPU mask.
pub(crate) fn get_affinity() -> Option<libc::cpu_set_t> {
    let mut set = empty_mask();
    // SAFETY: `set` is a writable cpu_set_t of the size passed; pid 0 is this task.
    let r = unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut set) };
    (r == 0).then_some(set)
}

/// Sets the calling task's CPU mask.
pub(crate) fn set_affinity(set: &libc::cpu_set_t) -> bool {
    // SAFETY: `set` is a valid cpu_set_t of the size passed; pid 0 is this task.
    unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), set) == 0 }
}

/// Sets the calling task's policy and real-time priority.
pub(crate) fn set_policy(policy: i32, prio: i32) -> bool {
    let param = libc::sched_param {
        sched_priority: prio,
    };
    // SAFETY: `param` is a valid sched_param; pid 0 is this task.
    unsafe { libc::sched_setscheduler(0, policy, &param) == 0 }
}

/// Sets the calling process's nice value.
pub(crate) fn set_nice(nice: i32) -> bool {
    // SAFETY: plain syscall on this process (who = 0).
    unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) == 0 }
}

/// `sched_yield()`.
pub(crate) fn yield_now() {
    // SAFETY: plain syscall without arguments.
    unsafe { libc::sched_yield() };
}

/// An anonymous shared, zero-filled mapping of `len` bytes, or `None`.
pub(crate) fn map_anon(len: usize, shared: bool) -> Option<*mut u8> {
    let kind = if shared {
        libc::MAP_SHARED
    } else {
        libc::MAP_PRIVATE
    };
    // SAFETY: an anonymous mapping at a kernel-chosen address touches no
    // existing memory; the result is checked against MAP_FAILED.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            kind | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    (p != libc::MAP_FAILED && !p.is_null()).then_some(p.cast())
}

/// Unmaps a mapping made by [`map_anon`].
///
/// # Safety
/// `p`/`len` must be one mapping from [`map_anon`], and no reference into it
/// may be used afterwards.
pub(crate) unsafe fn unmap(p: *mut u8, len: usize) {
    // SAFETY: the caller guarantees the range is our mapping and unused now.
    unsafe {
        libc::munmap(p.cast(), len);
    }
}

/// `fork()`; the child gets 0.
pub(crate) fn fork() -> libc::pid_t {
    // SAFETY: called from a single-threaded worker; the child only runs
    // async-signal-safe code and ends in `_exit`.
    unsafe { libc::fork() }
}

/// Ends the calling process now.
pub(crate) fn exit_now(code: i32) -> ! {
    // SAFETY: _exit ends the process without running atexit handlers or
    // destructors of the parent's copy of the heap.
    unsafe { libc::_exit(code) }
}

/// Kills a child with SIGKILL and reaps it.
pub(crate) fn kill_and_reap(pid: libc::pid_t) {
    // SAFETY: `pid` is our own unreaped child, so it was not reused; `status`
    // is a valid out-pointer.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
    }
}

/// Reaps a child, blocking; false on error.
pub(crate) fn reap(pid: libc::pid_t) -> bool {
    let mut status = 0;
    // SAFETY: waits for our own child; `status` is a valid out-pointer.
    unsafe { libc::waitpid(pid, &mut status, 0) == pid }
}

/// Makes the calling process die with SIGKILL when its parent dies, and
/// returns false if the parent is already gone (then exit).
pub(crate) fn die_with_parent(parent: libc::pid_t) -> bool {
    // SAFETY: PR_SET_PDEATHSIG takes a signal number; getppid has no arguments.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
        libc::getppid() == parent
    }
}

/// This process's id.
pub(crate) fn getpid() -> libc::pid_t {
    // SAFETY: no arguments, cannot fail.
    unsafe { libc::getpid() }
}

/// Ignores SIGPIPE, so a write to a pipe whose reader left fails with EPIPE.
pub(crate) fn ignore_sigpipe() {
    // SAFETY: installs SIG_IGN for SIGPIPE; signal() with SIG_IGN touches no
    // memory of ours.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

/// A pipe: (read end, write end).
pub(crate) fn pipe() -> Option<(i32, i32)> {
    let mut fds = [0i32; 2];
    // SAFETY: `fds` is a writable array of two ints.
    let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    (r == 0).then_some((fds[0], fds[1]))
}

/// Closes `fd` (errors ignored).
pub(crate) fn close(fd: i32) {
    // SAFETY: closes a descriptor this process owns.
    unsafe {
        libc::close(fd);
    }
}

/// Writes all 8 bytes of `v`; false on error or a short write.
pub(crate) fn write_u64(fd: i32, v: u64) -> bool {
    let b = v.to_ne_bytes();
    // SAFETY: `b` is a readable 8-byte buffer for the call.
    unsafe { libc::write(fd, b.as_ptr().cast(), 8) == 8 }
}

/// Reads 8 bytes, or `None` on error, EOF or a short read.
pub(crate) fn read_u64(fd: i32) -> Option<u64> {
    let mut b = [0u8; 8];
    // SAFETY: `b` is a writable 8-byte buffer for the call.
    let n = unsafe { libc::read(fd, b.as_mut_ptr().cast(), 8) };
    (n == 8).then(|| u64::from_ne_bytes(b))
}

/// Waits up to `timeout_ms` for `fd` to be readable.
pub(crate) fn poll_in(fd: i32, timeout_ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd for the call.
    unsafe { libc::poll(&mut p, 1, timeout_ms) == 1 }
}

/// A non-blocking eventfd.
pub(crate) fn eventfd() -> Option<i32> {
    // SAFETY: plain syscall, no pointers.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    (fd >= 0).then_some(fd)
}

/// A new epoll instance.
pub(crate) fn epoll_create() -> Option<i32> {
    // SAFETY: plain syscall, no pointers.
    let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    (fd >= 0).then_some(fd)
}

/// Watches `fd` for input on `ep`, tagged with `tag`.
pub(crate) fn epoll_add(ep: i32, fd: i32, tag: u64) -> bool {
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: tag,
    };
    // SAFETY: `ev` is a valid epoll_event for the call.
    unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) == 0 }
}

/// Waits up to `timeout_ms` for events; returns how many were written.
pub(crate) fn epoll_wait(ep: i32, events: &mut [libc::epoll_event], timeout_ms: i32) -> usize {
    let max = i32::try_from(events.len()).unwrap_or(i32::MAX);
    // SAFETY: `events` is a writable array of `max` epoll_events.
    let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), max, timeout_ms) };
    usize::try_from(n).unwrap_or(0)
}

/// Opens `path` with `flags` (mode 0600 when created).
pub(crate) fn open(path: &CStr, flags: i32) -> Option<i32> {
    // SAFETY: `path` is NUL-terminated and outlives the call.
    let fd = unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC, 0o600) };
    (fd >= 0).then_some(fd)
}

/// `pwrite` of all of `buf` at `off`; false on error or a short write.
pub(crate) fn pwrite_all(fd: i32, buf: &[u8], off: u64) -> bool {
    let off = libc::off_t::try_from(off).unwrap_or(0);
    // SAFETY: `buf` is readable for its length during the call.
    let n = unsafe { libc::pwrite(fd, buf.as_ptr().cast(), buf.len(), off) };
    usize::try_from(n).is_ok_and(|n| n == buf.len())
}

/// Writes `text` to `fd` at its current offset (interface files).
pub(crate) fn write_str(fd: i32, text: &[u8]) -> bool {
    // SAFETY: `text` is readable for its length during the call.
    let n = unsafe { libc::write(fd, text.as_ptr().cast(), text.len()) };
    usize::try_from(n).is_ok_and(|n| n == text.len())
}

/// Removes `path` (errors ignored).
pub(crate) fn unlink(path: &CStr) {
    // SAFETY: `path` is NUL-terminated and outlives the call.
    unsafe {
        libc::unlink(path.as_ptr());
    }
}
