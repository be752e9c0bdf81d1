//! Where a worker ran over time: a fixed number of time bins, each holding
//! the CPU the worker's loop saw most often in it and how many rounds it
//! ran there.
//!
//! The worker writes its own bins (one writer, no locks, no allocation: it
//! runs in a forked child) into its shared slot; the parent reads them once
//! the worker is done. Bins start [`FIRST_BIN_NS`] wide; when the run
//! outgrows them, the worker merges neighbouring pairs and doubles the
//! width, so any run length fits in [`TRACE_BINS`] bins.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Bins a trace holds.
pub(crate) const TRACE_BINS: usize = 64;
/// The width of a bin until the run outgrows the trace.
pub(crate) const FIRST_BIN_NS: u64 = 50_000_000;
/// Distinct CPUs counted within one bin; more are counted as rounds only.
const CPUS_PER_BIN: usize = 8;
const ROUNDS_MASK: u64 = (1 << 48) - 1;

/// The trace in a worker's shared slot (all zero: nothing recorded).
#[repr(C)]
#[derive(Debug)]
pub(crate) struct SharedTrace {
    /// The width of a bin in ns (0 until the worker first ran).
    bin_ns: AtomicU64,
    /// Per bin: `(cpu + 1) << 48 | rounds` (0: the worker was not seen).
    bins: [AtomicU64; TRACE_BINS],
}

fn pack(cpu: Option<u32>, rounds: u64) -> u64 {
    (cpu.map_or(0, |c| u64::from(c) + 1) << 48) | rounds.min(ROUNDS_MASK)
}

fn unpack(v: u64) -> (Option<u32>, u64) {
    let cpu = (v >> 48) as u32;
    (cpu.checked_sub(1), v & ROUNDS_MASK)
}

/// Two bins as one: the CPU of the busier one, the rounds of both.
fn merge(a: u64, b: u64) -> u64 {
    let ((ca, ra), (cb, rb)) = (unpack(a), unpack(b));
    let cpu = if rb > ra { cb } else { ca };
    pack(cpu, ra + rb)
}

impl SharedTrace {
    /// What the worker recorded, trimmed after the last bin it was seen in.
    pub(super) fn read(&self) -> Option<PlacementTrace> {
        let bin_ns = self.bin_ns.load(Ordering::Relaxed);
        if bin_ns == 0 {
            return None;
        }
        let mut cpu = Vec::with_capacity(TRACE_BINS);
        let mut rounds = Vec::with_capacity(TRACE_BINS);
        for b in &self.bins {
            let (c, r) = unpack(b.load(Ordering::Relaxed));
            cpu.push(c);
            rounds.push(r);
        }
        let seen = rounds.iter().rposition(|&r| r > 0).map_or(0, |i| i + 1);
        cpu.truncate(seen);
        rounds.truncate(seen);
        Some(PlacementTrace {
            bin: Duration::from_nanos(bin_ns),
            cpu,
            rounds,
        })
    }
}

/// The worker's side: counts the current bin in its own memory and writes
/// it to the shared trace when the bin ends.
#[derive(Debug)]
pub(crate) struct Tracer {
    origin: u64,
    bin_ns: u64,
    bin: usize,
    counts: [(u32, u64); CPUS_PER_BIN],
    distinct: usize,
    rounds: u64,
}

impl Tracer {
    /// A tracer whose bins count from `origin` (CLOCK_MONOTONIC ns).
    pub(super) fn new(origin: u64) -> Self {
        Tracer {
            origin,
            bin_ns: FIRST_BIN_NS,
            bin: 0,
            counts: [(0, 0); CPUS_PER_BIN],
            distinct: 0,
            rounds: 0,
        }
    }

    /// One round of the loop at `now`, seen on `cpu`.
    pub(super) fn round(&mut self, shared: &SharedTrace, now: u64, cpu: Option<usize>) {
        if shared.bin_ns.load(Ordering::Relaxed) == 0 {
            shared.bin_ns.store(self.bin_ns, Ordering::Relaxed);
        }
        let mut idx = (now.saturating_sub(self.origin) / self.bin_ns) as usize;
        if idx != self.bin {
            self.flush(shared);
            while idx >= TRACE_BINS {
                self.widen(shared);
                idx = (now.saturating_sub(self.origin) / self.bin_ns) as usize;
            }
            self.bin = idx;
        }
        self.rounds += 1;
        let Some(cpu) = cpu.and_then(|c| u32::try_from(c).ok()) else {
            return;
        };
        if let Some(e) = self.counts[..self.distinct].iter_mut().find(|e| e.0 == cpu) {
            e.1 += 1;
        } else if self.distinct < CPUS_PER_BIN {
            self.counts[self.distinct] = (cpu, 1);
            self.distinct += 1;
        }
    }

    /// Writes the current bin (merged with what the bin already holds: after
    /// a widening, its first half).
    pub(super) fn flush(&mut self, shared: &SharedTrace) {
        if self.rounds == 0 {
            return;
        }
        let busiest = self.counts[..self.distinct]
            .iter()
            .max_by_key(|e| e.1)
            .map(|e| e.0);
        if let Some(slot) = shared.bins.get(self.bin) {
            let old = slot.load(Ordering::Relaxed);
            slot.store(merge(old, pack(busiest, self.rounds)), Ordering::Relaxed);
        }
        self.rounds = 0;
        self.distinct = 0;
    }

    /// Merges neighbouring bins and doubles the width.
    fn widen(&mut self, shared: &SharedTrace) {
        for i in 0..TRACE_BINS / 2 {
            let a = shared.bins[2 * i].load(Ordering::Relaxed);
            let b = shared.bins[2 * i + 1].load(Ordering::Relaxed);
            shared.bins[i].store(merge(a, b), Ordering::Relaxed);
        }
        for b in &shared.bins[TRACE_BINS / 2..] {
            b.store(0, Ordering::Relaxed);
        }
        self.bin_ns = self.bin_ns.saturating_mul(2);
        shared.bin_ns.store(self.bin_ns, Ordering::Relaxed);
    }
}

/// Where a worker ran over its window: per time bin, the CPU its loop saw
/// most often (`None`: not seen) and the rounds of its loop in the bin.
/// Rounds stand for CPU time: a CPU-bound loop runs them at one rate.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacementTrace {
    /// The width of a bin; bin `i` starts `i * bin` after the release.
    pub bin: Duration,
    /// The busiest CPU of each bin.
    pub cpu: Vec<Option<u32>>,
    /// The rounds of each bin.
    pub rounds: Vec<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zeroed() -> SharedTrace {
        SharedTrace {
            bin_ns: AtomicU64::new(0),
            bins: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    #[test]
    fn bins_keep_the_busiest_cpu() {
        let s = zeroed();
        let mut t = Tracer::new(1_000);
        for i in 0..10 {
            t.round(&s, 1_000 + i, Some(if i < 7 { 3 } else { 1 }));
        }
        t.round(&s, 1_000 + FIRST_BIN_NS + 1, Some(2));
        t.flush(&s);
        let tr = s.read().expect("trace");
        assert_eq!(tr.bin, Duration::from_nanos(FIRST_BIN_NS));
        assert_eq!(tr.cpu, [Some(3), Some(2)]);
        assert_eq!(tr.rounds, [10, 1]);
    }

    #[test]
    fn a_long_run_widens_the_bins() {
        let s = zeroed();
        let mut t = Tracer::new(0);
        // 3 rounds per 50 ms bin for 200 bins: CPU 0 then CPU 5.
        for b in 0..200u64 {
            for k in 0..3 {
                let cpu = if b < 100 { 0 } else { 5 };
                t.round(&s, b * FIRST_BIN_NS + k, Some(cpu));
            }
        }
        t.flush(&s);
        let tr = s.read().expect("trace");
        assert_eq!(tr.bin, Duration::from_nanos(4 * FIRST_BIN_NS));
        assert_eq!(tr.rounds.len(), 50);
        assert!(tr.rounds.iter().all(|&r| r == 12), "{:?}", tr.rounds);
        assert_eq!(tr.cpu[0], Some(0));
        assert_eq!(tr.cpu[24], Some(0));
        assert_eq!(tr.cpu[25], Some(5));
        assert_eq!(tr.rounds.iter().sum::<u64>(), 600);
    }

    #[test]
    fn a_worker_never_seen_has_no_trace() {
        assert_eq!(zeroed().read(), None);
        let s = zeroed();
        let mut t = Tracer::new(0);
        t.round(&s, 5, None);
        t.flush(&s);
        let tr = s.read().expect("trace");
        assert_eq!(
            (tr.cpu.as_slice(), tr.rounds.as_slice()),
            (&[None][..], &[1][..])
        );
    }
}
