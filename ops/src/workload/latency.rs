//! Wake-up latency: a lock-free log-linear histogram the workers (and their
//! helpers) record into, and the pure arithmetic that turns it into
//! percentiles.
//!
//! Buckets: values below 4 ns get one bucket each; above, every power of two is
//! split into four linear sub-buckets, so a percentile is known within 25 %
//! (it is reported as the bucket's upper bound, capped at the largest sample:
//! conservative for a threshold). 252 buckets cover all of `u64`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Number of buckets ([`bucket_of`] of `u64::MAX` is 251).
pub(crate) const BUCKETS: usize = 252;

/// The bucket of a latency of `ns`.
pub(crate) fn bucket_of(ns: u64) -> usize {
    if ns < 4 {
        return ns as usize;
    }
    let e = 63 - ns.leading_zeros() as usize; // >= 2
    let sub = ((ns >> (e - 2)) & 3) as usize;
    4 * (e - 1) + sub
}

/// The smallest and largest value of bucket `idx`.
pub(crate) fn bucket_bounds(idx: usize) -> (u64, u64) {
    if idx < 4 {
        return (idx as u64, idx as u64);
    }
    let e = idx / 4 + 1;
    let sub = (idx % 4) as u64;
    let lo = (4 + sub) << (e - 2);
    let hi = lo.saturating_add((1u64 << (e - 2)) - 1);
    (lo, hi)
}

/// The `q`-quantile (0..=1) of the histogram `counts`: the upper bound of the
/// bucket holding it, capped at `max`. `None` without samples.
pub(crate) fn quantile(counts: &[u64], q: f64, max: u64) -> Option<u64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    // The rank of the sample at the quantile, 1-based, at least 1.
    let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
    let mut seen = 0;
    for (idx, &c) in counts.iter().enumerate() {
        seen += c;
        if seen >= rank {
            return Some(bucket_bounds(idx).1.min(max));
        }
    }
    Some(max)
}

/// A summary of one worker's wake-up latencies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Number of wake-ups measured.
    pub samples: u64,
    /// Median (upper bound of its bucket, within 25 %).
    pub p50: Duration,
    /// 99th percentile (upper bound of its bucket, within 25 %).
    pub p99: Duration,
    /// Largest (exact).
    pub max: Duration,
    /// Mean (exact).
    pub mean: Duration,
}

impl LatencySummary {
    /// The summary of `counts` (one count per bucket), with the exact sum and
    /// maximum. `None` without samples.
    pub(crate) fn from_counts(counts: &[u64], sum_ns: u64, max_ns: u64) -> Option<Self> {
        let samples: u64 = counts.iter().sum();
        Some(LatencySummary {
            samples,
            p50: Duration::from_nanos(quantile(counts, 0.50, max_ns)?),
            p99: Duration::from_nanos(quantile(counts, 0.99, max_ns)?),
            max: Duration::from_nanos(max_ns),
            mean: Duration::from_nanos(sum_ns / samples.max(1)),
        })
    }

    /// A summary of exact samples (tests and synthetic reports).
    pub fn from_samples(samples: &[Duration]) -> Option<Self> {
        let mut counts = [0u64; BUCKETS];
        let (mut sum, mut max) = (0u64, 0u64);
        for s in samples {
            let ns = u64::try_from(s.as_nanos()).unwrap_or(u64::MAX);
            counts[bucket_of(ns)] += 1;
            sum = sum.saturating_add(ns);
            max = max.max(ns);
        }
        Self::from_counts(&counts, sum, max)
    }
}

/// The shared, lock-free form written by workers: all-zero is empty.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct Histogram {
    count: AtomicU64,
    sum_ns: AtomicU64,
    max_ns: AtomicU64,
    buckets: [AtomicU64; BUCKETS],
}

impl Histogram {
    /// Records one latency (async-signal-safe: atomics only).
    pub(super) fn record(&self, ns: u64) {
        self.buckets[bucket_of(ns)].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
        self.max_ns.fetch_max(ns, Ordering::Relaxed);
    }

    /// What was recorded so far.
    pub(super) fn summary(&self) -> Option<LatencySummary> {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        LatencySummary::from_counts(
            &counts,
            self.sum_ns.load(Ordering::Relaxed),
            self.max_ns.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_cover_u64() {
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
        let mut next = 0u64;
        for idx in 0..BUCKETS {
            let (lo, hi) = bucket_bounds(idx);
            assert_eq!(lo, next, "bucket {idx}");
            assert_eq!(bucket_of(lo), idx);
            assert_eq!(bucket_of(hi), idx);
            next = hi.wrapping_add(1);
        }
        assert_eq!(next, 0, "the last bucket ends at u64::MAX");
    }

    #[test]
    fn quantiles_are_within_a_quarter_and_never_below() {
        let samples: Vec<Duration> = (1..=1000).map(Duration::from_micros).collect();
        let s = LatencySummary::from_samples(&samples).expect("samples");
        assert_eq!(s.samples, 1000);
        assert_eq!(s.max, Duration::from_millis(1));
        assert!(s.p50 >= Duration::from_micros(500), "{s:?}");
        assert!(s.p50 <= Duration::from_micros(625), "{s:?}");
        assert!(s.p99 >= Duration::from_micros(990), "{s:?}");
        assert!(s.p99 <= s.max);
        assert_eq!(s.mean, Duration::from_nanos(500_500));
        assert_eq!(LatencySummary::from_samples(&[]), None);
    }

    #[test]
    fn atomic_histogram_matches_the_pure_one() {
        let h: Histogram = Histogram {
            count: AtomicU64::new(0),
            sum_ns: AtomicU64::new(0),
            max_ns: AtomicU64::new(0),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        };
        assert_eq!(h.summary(), None);
        for us in [10u64, 20, 30, 4000] {
            h.record(us * 1000);
        }
        let s = h.summary().expect("samples");
        assert_eq!(s.samples, 4);
        assert_eq!(s.max, Duration::from_millis(4));
        let exact: Vec<Duration> = [10u64, 20, 30, 4000]
            .iter()
            .map(|&u| Duration::from_micros(u))
            .collect();
        assert_eq!(Some(s), LatencySummary::from_samples(&exact));
    }
}
