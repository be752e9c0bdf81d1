//! The checks that judge a scheduler from worker reports.
//!
//! Pure functions of [`WorkerReport`]s and [`Thresholds`], so their arithmetic is
//! tested without a VM. Each failure names the check, the worker (or cgroup),
//! the figure and the threshold, and carries both as a [`Figure`]. A starved
//! worker is reported by [`starvation`] only: the other checks leave it out,
//! since its gaps, share and latencies only restate that it never ran.
//!
//! | concern | checks | module |
//! |---|---|---|
//! | progress and shares | [`complete`], [`starvation`], [`fairness`], [`max_gap`] | `basic` |
//! | where tasks ran | [`cpuset_isolation`], [`affinity`], [`migrations`] | `placement` |
//! | timing | [`wake_latency`], [`throughput_cv`], [`weighted_fairness`] | `timing` |
//! | scheduler exit | [`scx_bpf_error_contains`] | `scx` |
//!
//! Timing checks depend on the VM getting the host's cores. When the caller
//! says timing is not reliable (more vCPUs than host cores), their failures
//! are demoted to notes and the verdict is marked inconclusive with the
//! reason, figures included: never a silent pass.
//!
//! Thresholds come in three layers ([`Thresholds::layered`]): the defaults,
//! then the scheduler's declaration, then the test's own.

mod basic;
mod domains;
mod placement;
mod scx;
mod table;
mod timing;

pub use basic::{
    FAIRNESS, MAX_GAP, REPORTS, STARVATION, complete, fairness, max_gap, spread, starvation,
    work_spread,
};
pub use domains::{
    DomainShare, GroupPlacement, Level, LevelSplit, PLACEMENT, explain_spread, levels, placement,
};
pub use placement::{
    AFFINITY, CPUSET_ISOLATION, MIGRATIONS, affinity, cpuset_isolation, migrations,
};
pub use scx::{SCX_BPF_ERROR, scx_bpf_error_contains};
pub use table::{summary, table};
pub use timing::{
    THROUGHPUT_CV, WAKE_LATENCY, WEIGHTED_FAIRNESS, throughput_cv, wake_latency, weighted_fairness,
};

use std::time::Duration;

use ktstr_topology::Topology;
use serde::{Deserialize, Serialize};

use crate::assert::{AssertResult, Figure};
use crate::workload::WorkerReport;

/// Limits the checks hold workers to.
///
/// ```
/// use std::time::Duration;
/// use ktstr_ops::checks::Thresholds;
///
/// let t = Thresholds::default().with_max_gap(Duration::from_secs(1));
/// assert_eq!(t.max_gap, Duration::from_secs(1));
/// assert_eq!(t.min_iterations, 1);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Thresholds {
    /// Starvation: a worker is starved when its loop completed fewer iterations
    /// than this in the window. Default 1: it made no progress at all.
    pub min_iterations: u64,
    /// Fairness: the largest allowed spread of CPU time among CPU-bound workers
    /// of equal weight (same cgroup, work, policy and nice), as (max - min) /
    /// mean. Default 0.35.
    pub max_spread: f64,
    /// The longest allowed time between two observations of a worker's loop.
    /// Default 1 s.
    pub max_gap: Duration,
    /// Wake-up latency: the largest allowed median. Default 20 ms.
    pub wake_p50: Duration,
    /// Wake-up latency: the largest allowed 99th percentile. Default 250 ms.
    pub wake_p99: Duration,
    /// Wake-up latency: the largest allowed single wake-up. Default 1 s.
    pub wake_max: Duration,
    /// Throughput: the largest allowed coefficient of variation (standard
    /// deviation / mean) of the progress rate among workers of equal weight.
    /// Default 0.5.
    pub max_throughput_cv: f64,
    /// Migrations: the most a worker may migrate per second of its window
    /// (workers that move themselves are exempt). Default 1000.
    pub max_migrations_per_s: f64,
    /// Weighted fairness: the largest allowed spread of CPU time per unit of
    /// `cpu.weight` among cgroups, as (max - min) / mean. Default 0.35.
    pub max_weight_error: f64,
}

impl Default for Thresholds {
    /// Defaults sized for a TCG guest on a shared 2-core host, where a vCPU
    /// thread can lose its host CPU for a few hundred ms: loose enough not to
    /// flag the host, tight enough to catch a scheduler that parks a task for
    /// seconds or gives one task twice another's share.
    fn default() -> Self {
        Thresholds {
            min_iterations: 1,
            max_spread: 0.35,
            max_gap: Duration::from_secs(1),
            wake_p50: Duration::from_millis(20),
            wake_p99: Duration::from_millis(250),
            wake_max: Duration::from_secs(1),
            max_throughput_cv: 0.5,
            max_migrations_per_s: 1000.0,
            max_weight_error: 0.35,
        }
    }
}

impl Thresholds {
    /// Sets [`Thresholds::min_iterations`].
    pub fn with_min_iterations(mut self, n: u64) -> Self {
        self.min_iterations = n;
        self
    }

    /// Sets [`Thresholds::max_spread`].
    pub fn with_max_spread(mut self, spread: f64) -> Self {
        self.max_spread = spread;
        self
    }

    /// Sets [`Thresholds::max_gap`].
    pub fn with_max_gap(mut self, gap: Duration) -> Self {
        self.max_gap = gap;
        self
    }

    /// Sets the wake-up latency limits (median, 99th percentile, largest).
    pub fn with_wake_latency(mut self, p50: Duration, p99: Duration, max: Duration) -> Self {
        self.wake_p50 = p50;
        self.wake_p99 = p99;
        self.wake_max = max;
        self
    }

    /// Sets [`Thresholds::max_throughput_cv`].
    pub fn with_max_throughput_cv(mut self, cv: f64) -> Self {
        self.max_throughput_cv = cv;
        self
    }

    /// Sets [`Thresholds::max_migrations_per_s`].
    pub fn with_max_migrations_per_s(mut self, rate: f64) -> Self {
        self.max_migrations_per_s = rate;
        self
    }

    /// Sets [`Thresholds::max_weight_error`].
    pub fn with_max_weight_error(mut self, error: f64) -> Self {
        self.max_weight_error = error;
        self
    }

    /// These thresholds with every value `o` sets replaced.
    pub fn overlay(mut self, o: &ThresholdOverrides) -> Self {
        macro_rules! take {
            ($($f:ident),*) => { $( if let Some(v) = o.$f { self.$f = v; } )* };
        }
        take!(
            min_iterations,
            max_spread,
            max_gap,
            wake_p50,
            wake_p99,
            wake_max,
            max_throughput_cv,
            max_migrations_per_s,
            max_weight_error
        );
        self
    }

    /// The three layers: the defaults, then what the scheduler declares, then
    /// what the test declares (the last word).
    ///
    /// ```
    /// use std::time::Duration;
    /// use ktstr_ops::checks::{ThresholdOverrides, Thresholds};
    ///
    /// const SCHED: ThresholdOverrides = ThresholdOverrides::new()
    ///     .max_gap(Duration::from_millis(500))
    ///     .max_spread(0.2);
    /// let test = ThresholdOverrides::new().max_spread(0.5);
    /// let t = Thresholds::layered(&SCHED, &test);
    /// assert_eq!(t.max_gap, Duration::from_millis(500)); // the scheduler's
    /// assert_eq!(t.max_spread, 0.5); // the test's
    /// assert_eq!(t.wake_p99, Thresholds::default().wake_p99); // the default
    /// ```
    pub fn layered(scheduler: &ThresholdOverrides, test: &ThresholdOverrides) -> Self {
        Thresholds::default().overlay(scheduler).overlay(test)
    }
}

/// Some thresholds, the rest left to the layer below: what a scheduler
/// declaration or a test sets. Built in `const` context.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ThresholdOverrides {
    /// [`Thresholds::min_iterations`].
    pub min_iterations: Option<u64>,
    /// [`Thresholds::max_spread`].
    pub max_spread: Option<f64>,
    /// [`Thresholds::max_gap`].
    pub max_gap: Option<Duration>,
    /// [`Thresholds::wake_p50`].
    pub wake_p50: Option<Duration>,
    /// [`Thresholds::wake_p99`].
    pub wake_p99: Option<Duration>,
    /// [`Thresholds::wake_max`].
    pub wake_max: Option<Duration>,
    /// [`Thresholds::max_throughput_cv`].
    pub max_throughput_cv: Option<f64>,
    /// [`Thresholds::max_migrations_per_s`].
    pub max_migrations_per_s: Option<f64>,
    /// [`Thresholds::max_weight_error`].
    pub max_weight_error: Option<f64>,
}

macro_rules! override_setters {
    ($($f:ident: $t:ty),*) => {
        $(
            #[doc = concat!("Sets [`Thresholds::", stringify!($f), "`].")]
            pub const fn $f(mut self, v: $t) -> Self {
                self.$f = Some(v);
                self
            }
        )*
    };
}

impl ThresholdOverrides {
    /// Nothing overridden.
    pub const fn new() -> Self {
        ThresholdOverrides {
            min_iterations: None,
            max_spread: None,
            max_gap: None,
            wake_p50: None,
            wake_p99: None,
            wake_max: None,
            max_throughput_cv: None,
            max_migrations_per_s: None,
            max_weight_error: None,
        }
    }

    override_setters!(
        min_iterations: u64,
        max_spread: f64,
        max_gap: Duration,
        wake_p50: Duration,
        wake_p99: Duration,
        wake_max: Duration,
        max_throughput_cv: f64,
        max_migrations_per_s: f64,
        max_weight_error: f64
    );
}

pub(crate) fn is_starved(r: &WorkerReport, t: &Thresholds) -> bool {
    r.iterations < t.min_iterations
}

/// A failure, or, when timing is unreliable, a note plus an inconclusive mark.
pub(crate) fn timing_failure(
    check: &str,
    msg: String,
    figure: Figure,
    timing_reliable: bool,
) -> AssertResult {
    if timing_reliable {
        AssertResult::fail_with(check, msg, figure)
    } else {
        AssertResult::pass()
            .note_with(check, msg.clone(), figure)
            .inconclusive_because(format!(
                "{check} would fail, but timing is unreliable (more vCPUs than host cores): {msg}"
            ))
    }
}

/// The standard checks: [`starvation`], [`fairness`], [`max_gap`],
/// [`cpuset_isolation`], [`affinity`], [`migrations`], [`wake_latency`] and
/// [`throughput_cv`]. ([`weighted_fairness`] only holds when every cgroup can
/// use its share, so scenarios built for it apply it themselves.)
pub fn all(reports: &[WorkerReport], t: &Thresholds, timing_reliable: bool) -> AssertResult {
    standard(reports, t, timing_reliable, None)
}

/// [`all`], knowing the topology the workers ran on: every fairness failure
/// says whether placement explains it ([`explain_spread`]), and each cgroup's
/// placement per NUMA node, LLC and core follows as notes ([`placement`]).
pub fn all_placed(
    reports: &[WorkerReport],
    t: &Thresholds,
    timing_reliable: bool,
    topo: &Topology,
) -> AssertResult {
    let mut v = standard(reports, t, timing_reliable, Some(topo));
    for g in placement(reports, topo) {
        for line in g.to_string().lines() {
            v = v.note(PLACEMENT, line.to_string());
        }
    }
    v
}

fn standard(
    reports: &[WorkerReport],
    t: &Thresholds,
    timing_reliable: bool,
    topo: Option<&Topology>,
) -> AssertResult {
    complete(reports)
        .merged(starvation(reports, t))
        .merged(basic::fairness_on(reports, t, timing_reliable, topo))
        .merged(max_gap(reports, t, timing_reliable))
        .merged(cpuset_isolation(reports))
        .merged(affinity(reports))
        .merged(migrations(reports, t))
        .merged(wake_latency(reports, t, timing_reliable))
        .merged(throughput_cv(reports, t, timing_reliable))
}

#[cfg(test)]
pub(crate) mod test_util {
    use std::time::Duration;

    use crate::cgroup::CpuSet;
    use crate::workload::{WorkType, WorkerReport};

    /// A spinning worker that ran 5 s on CPU 0.
    pub fn report(
        index: usize,
        group: &str,
        cpu_ms: u64,
        iterations: u64,
        gap_ms: u64,
    ) -> WorkerReport {
        let mut r = WorkerReport::new(index, group, &WorkType::Spin);
        r.pid = 100 + index as u32;
        r.wall = Duration::from_secs(5);
        r.cpu_time = Duration::from_millis(cpu_ms);
        r.runs = 10;
        r.iterations = iterations;
        r.progress = iterations;
        r.max_gap = Duration::from_millis(gap_ms);
        r.max_gap_at = Duration::from_millis(100);
        r.cpus = CpuSet::from([0]);
        r.migrations = Some(0);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::test_util::report;
    use super::*;

    #[test]
    fn balanced_workers_pass_every_check() {
        let rs = [
            report(0, "cg_0", 2500, 900, 20),
            report(1, "cg_0", 2400, 880, 25),
            report(2, "cg_1", 2450, 870, 30),
            report(3, "cg_1", 2550, 910, 15),
        ];
        let v = all(&rs, &Thresholds::default(), true);
        assert!(v.is_pass(), "{v}");
        assert!(v.inconclusive().is_empty());
        assert!(v.details().iter().any(|d| d.check == FAIRNESS));
    }

    #[test]
    fn layers_apply_in_order() {
        let sched = ThresholdOverrides::new()
            .wake_p99(Duration::from_millis(10))
            .max_throughput_cv(0.1);
        let test = ThresholdOverrides::new().max_throughput_cv(0.3);
        let t = Thresholds::layered(&sched, &test);
        assert_eq!(t.wake_p99, Duration::from_millis(10));
        assert_eq!(t.max_throughput_cv, 0.3);
        assert_eq!(t.max_gap, Thresholds::default().max_gap);
        assert_eq!(
            Thresholds::layered(&ThresholdOverrides::new(), &ThresholdOverrides::default()),
            Thresholds::default()
        );
    }
}
