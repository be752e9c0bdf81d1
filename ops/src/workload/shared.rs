//! The memory the parent and its forked workers share: a header with the stop
//! flag and one slot per worker with its go flag and live figures.
//!
//! Everything in it is an atomic, so both sides read and write it without locks
//! (a lock taken across `fork` could be held forever). The mapping is anonymous and
//! `MAP_SHARED`, made before `fork` and inherited by every worker; all-zero bytes
//! are the initial state of every field.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::latency::Histogram;
use super::trace::SharedTrace;

/// CPU ids a slot can record: `ktstr_topology::MAX_CPUS` (252) fits.
pub(crate) const CPU_WORDS: usize = 4;

/// Slot states, in order.
pub(crate) const STATE_FORKED: u32 = 0;
pub(crate) const STATE_READY: u32 = 1;
pub(crate) const STATE_RUNNING: u32 = 2;
pub(crate) const STATE_DONE: u32 = 3;
pub(crate) const STATE_FAILED: u32 = 4;

/// What failed in a worker's set-up, stored with the errno.
pub(crate) const FAILED_POLICY: u32 = 1;
pub(crate) const FAILED_AFFINITY: u32 = 2;
pub(crate) const FAILED_NICE: u32 = 3;

#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct Header {
    /// Set to 1 when the workers must stop.
    pub stop: AtomicU32,
    _pad: u32,
    /// CLOCK_MONOTONIC ns of the stop request; written before `stop`.
    pub stop_ns: AtomicU64,
}

#[repr(C)]
#[derive(Debug)]
pub(crate) struct Slot {
    /// Futex word: 0 until the parent releases the worker.
    pub go: AtomicU32,
    /// One of the `STATE_*` values.
    pub state: AtomicU32,
    /// `FAILED_*` step when state is `STATE_FAILED`.
    pub failed_step: AtomicU32,
    /// errno of the failed step.
    pub failed_errno: AtomicU32,
    /// CLOCK_MONOTONIC ns at which the parent released the worker.
    pub go_ns: AtomicU64,
    /// Completed iterations of the work loop.
    pub iterations: AtomicU64,
    /// Longest time between two observations of the loop, ns.
    pub max_gap_ns: AtomicU64,
    /// When that gap ended, CLOCK_MONOTONIC ns.
    pub max_gap_end_ns: AtomicU64,
    /// Times `sched_getcpu` differed from the previous sample.
    pub cpu_changes: AtomicU64,
    /// CPUs seen by `sched_getcpu`, one bit each (the worker's and its helpers').
    pub cpus: [AtomicU64; CPU_WORDS],
    /// Progress in the work type's own unit.
    pub progress: AtomicU64,
    /// System calls of the work loop that failed (counted, not fatal).
    pub failures: AtomicU64,
    /// Times the worker ran outside the mask it had just set for itself.
    pub affinity_violations: AtomicU64,
    /// Helper tasks forked over the run.
    pub helpers: AtomicU64,
    /// Wake-up latencies of the worker and its helpers.
    pub latency: Histogram,
    /// Where the worker's loop ran over time.
    pub trace: SharedTrace,
}

/// One anonymous shared mapping: a [`Header`] then `n` [`Slot`]s.
#[derive(Debug)]
pub(crate) struct Shared {
    ptr: NonNull<u8>,
    len: usize,
    n: usize,
}

// SAFETY: the mapping holds only atomics, which are Sync; the pointer is owned
// by this value and unmapped once, in Drop.
unsafe impl Send for Shared {}
// SAFETY: as above; all access goes through `&Header`/`&Slot` of atomics.
unsafe impl Sync for Shared {}

impl Shared {
    /// Maps a zeroed region for `n` workers.
    pub(super) fn new(n: usize) -> std::io::Result<Shared> {
        let len = size_of::<Header>() + n.max(1) * size_of::<Slot>();
        // SAFETY: an anonymous mapping at a kernel-chosen address touches no
        // existing memory; the result is checked against MAP_FAILED.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::OutOfMemory, "mmap returned null")
        })?;
        Ok(Shared { ptr, len, n })
    }

    pub(super) fn header(&self) -> &Header {
        // SAFETY: the mapping is page-aligned (so aligned for Header), at least
        // size_of::<Header>() long, zero-filled by the kernel (a valid Header:
        // all atomics), and lives as long as `self`.
        unsafe { &*self.ptr.as_ptr().cast::<Header>() }
    }

    pub(super) fn slot(&self, i: usize) -> &Slot {
        assert!(i < self.n, "slot {i} of {}", self.n);
        // SAFETY: Header is 16 bytes and Slot's alignment is 8, so the slot array
        // starting right after the header is aligned; i < n keeps it inside the
        // mapping; zeroed memory is a valid Slot; lives as long as `self`.
        unsafe {
            &*self
                .ptr
                .as_ptr()
                .add(size_of::<Header>())
                .cast::<Slot>()
                .add(i)
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // SAFETY: ptr/len are the mapping made in `new`, unmapped only here; no
        // reference into it outlives `self`.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// CLOCK_MONOTONIC now, in ns (the vDSO: no syscall, async-signal-safe).
pub(crate) fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists.
    unsafe {
        libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    }
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// Blocks while `word` holds `expected` (FUTEX_WAIT on a shared mapping).
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32) {
    // SAFETY: `word` is a valid, aligned u32 in memory that stays mapped; the
    // futex is not private because the mapping is shared between processes; a
    // null timeout waits until woken or the value differs.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            std::ptr::null::<libc::timespec>(),
        );
    }
}

/// Wakes every waiter on `word`.
pub(crate) fn futex_wake(word: &AtomicU32) {
    // SAFETY: `word` is a valid, aligned u32 in a live mapping; FUTEX_WAKE only
    // reads the address.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, i32::MAX);
    }
}

impl Slot {
    /// Records that this task (worker or helper) runs on `cpu`.
    pub(super) fn saw_cpu(&self, cpu: usize) {
        if let Some(word) = self.cpus.get(cpu / 64) {
            word.fetch_or(1 << (cpu % 64), Ordering::Relaxed);
        }
    }

    /// Clears the CPUs recorded so far.
    pub(super) fn forget_cpus(&self) {
        for word in &self.cpus {
            word.store(0, Ordering::Relaxed);
        }
    }

    /// The CPUs recorded in the slot.
    pub(super) fn cpu_list(&self) -> Vec<u32> {
        let mut out = Vec::new();
        for (w, word) in self.cpus.iter().enumerate() {
            let bits = word.load(Ordering::Relaxed);
            for b in 0..64 {
                if bits & (1 << b) != 0 {
                    out.push((w * 64 + b) as u32);
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_keeps_slots_aligned() {
        assert_eq!(size_of::<Header>(), 16);
        assert_eq!(size_of::<Slot>() % 8, 0);
        let s = Shared::new(3).expect("mmap");
        s.slot(2).cpus[1].fetch_or(1 << 3, Ordering::Relaxed);
        assert_eq!(s.slot(2).cpu_list(), [67]);
        assert_eq!(s.header().stop.load(Ordering::Relaxed), 0);
    }
}
