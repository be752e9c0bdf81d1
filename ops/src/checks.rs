//! The checks that judge a scheduler from worker reports: starvation, fairness
//! and scheduling gaps.
//!
//! Pure functions of [`WorkerReport`]s and [`Thresholds`], so their arithmetic is
//! tested without a VM. Each failure names the worker, its cgroup, the figure and
//! the threshold. A starved worker is reported by [`starvation`] only: the
//! other checks leave it out, since its gap and CPU share only restate that it
//! never ran.
//!
//! Fairness and gaps depend on timing. When the caller says timing is not
//! reliable (more vCPUs than host cores), their failures are demoted to notes
//! and the verdict is marked inconclusive, figures included.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::assert::AssertResult;
use crate::workload::{WorkType, WorkerReport};

/// Check name of [`starvation`].
pub const STARVATION: &str = "starvation";
/// Check name of [`fairness`].
pub const FAIRNESS: &str = "fairness";
/// Check name of [`max_gap`].
pub const MAX_GAP: &str = "max_gap";
/// Check name of [`complete`].
pub const REPORTS: &str = "reports";

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
    /// Fairness: the largest allowed spread of CPU time among workers of equal
    /// weight (same cgroup, work, policy and nice), as (max - min) / mean.
    /// Default 0.35.
    pub max_spread: f64,
    /// The longest allowed time between two observations of a worker's loop.
    /// Default 1 s.
    pub max_gap: Duration,
}

impl Default for Thresholds {
    /// Defaults sized for a TCG guest on a shared 2-core host, where a vCPU
    /// thread can lose its host CPU for a few hundred ms: loose enough not to flag
    /// the host, tight enough to catch a scheduler that parks a task for seconds
    /// or gives one task twice another's share.
    fn default() -> Self {
        Thresholds {
            min_iterations: 1,
            max_spread: 0.35,
            max_gap: Duration::from_secs(1),
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
}

fn is_starved(r: &WorkerReport, t: &Thresholds) -> bool {
    r.iterations < t.min_iterations
}

/// Fails for every worker whose loop made less progress than
/// [`Thresholds::min_iterations`] in its window.
pub fn starvation(reports: &[WorkerReport], t: &Thresholds) -> AssertResult {
    let mut out = AssertResult::pass();
    for r in reports.iter().filter(|r| is_starved(r, t)) {
        out.merge(AssertResult::fail(
            STARVATION,
            format!(
                "{} starved: {} iterations in {:.2?} (threshold: at least {}), cpu time {:.2?}, \
                 waited runnable {:.2?}",
                r.who(),
                r.iterations,
                r.wall,
                t.min_iterations,
                r.cpu_time,
                r.run_delay
            ),
        ));
    }
    if out.is_pass() {
        let least = reports.iter().min_by_key(|r| r.iterations);
        if let Some(r) = least {
            out = out.note(
                STARVATION,
                format!(
                    "no worker starved ({} workers; least progress {} iterations, {})",
                    reports.len(),
                    r.iterations,
                    r.who()
                ),
            );
        }
    }
    out
}

/// The key of workers of equal weight.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct WeightKey {
    group: String,
    work: String,
    policy: String,
    nice: i32,
}

fn key(r: &WorkerReport) -> WeightKey {
    WeightKey {
        group: r.group.clone(),
        work: r.work.to_string(),
        policy: r.policy.to_string(),
        nice: r.nice,
    }
}

/// The CPU-time spread of a group: (max - min) / mean, with the workers that had
/// the least and the most. `None` below two workers or without any CPU time.
pub fn spread(group: &[&WorkerReport]) -> Option<(f64, usize, usize)> {
    spread_of(group, |r| r.cpu_time.as_secs_f64())
}

/// The spread of work done (loop iterations) of a group of CPU-bound
/// workers: what they executed, whatever the guest's clock charged them.
/// `None` below two workers, without work, or for work that is not CPU-bound
/// (its iterations do not measure CPU received).
pub fn work_spread(group: &[&WorkerReport]) -> Option<(f64, usize, usize)> {
    if !group.iter().all(|r| r.work == WorkType::Spin) {
        return None;
    }
    spread_of(group, |r| r.iterations as f64)
}

fn spread_of(
    group: &[&WorkerReport],
    measure: impl Fn(&WorkerReport) -> f64,
) -> Option<(f64, usize, usize)> {
    if group.len() < 2 {
        return None;
    }
    let secs = |r: &&WorkerReport| measure(r);
    let (mut lo, mut hi) = (0, 0);
    for (i, r) in group.iter().enumerate() {
        if secs(r) < secs(&group[lo]) {
            lo = i;
        }
        if secs(r) > secs(&group[hi]) {
            hi = i;
        }
    }
    let mean = group.iter().map(secs).sum::<f64>() / group.len() as f64;
    if mean <= 0.0 {
        return None;
    }
    Some(((secs(&group[hi]) - secs(&group[lo])) / mean, lo, hi))
}

/// Fails for every group of equal-weight workers whose CPU-time spread exceeds
/// [`Thresholds::max_spread`]. Starved workers are left out (see the module docs).
///
/// On an overcommitted VM (`timing_reliable` false) the guest's clock charges
/// a task for time its vCPU was preempted on the host, which inflates short
/// slices and flattens CPU-time differences. There CPU-bound groups are
/// judged by the spread of work done instead (iterations: instructions the
/// guest really executed for each worker); groups with no such measure are
/// inconclusive.
pub fn fairness(reports: &[WorkerReport], t: &Thresholds, timing_reliable: bool) -> AssertResult {
    let mut groups: BTreeMap<WeightKey, Vec<&WorkerReport>> = BTreeMap::new();
    for r in reports.iter().filter(|r| !is_starved(r, t)) {
        groups.entry(key(r)).or_default().push(r);
    }
    let mut out = AssertResult::pass();
    for (k, group) in &groups {
        let Some((s, lo, hi)) = spread(group) else {
            continue;
        };
        let what = format!(
            "cgroup {} ({} {} workers, {})",
            k.group,
            group.len(),
            k.work,
            k.policy
        );
        let cpu_msg = format!(
            "{what}: cpu time spread {:.1}% (threshold {:.1}%): worker {} got {:.2?}, worker {} \
             got {:.2?}",
            s * 100.0,
            t.max_spread * 100.0,
            group[lo].index,
            group[lo].cpu_time,
            group[hi].index,
            group[hi].cpu_time
        );
        let work = work_spread(group).map(|(w, wlo, whi)| {
            let msg = format!(
                "{what}: work done spread {:.1}% (threshold {:.1}%): worker {} did {} \
                 iterations, worker {} did {}",
                w * 100.0,
                t.max_spread * 100.0,
                group[wlo].index,
                group[wlo].iterations,
                group[whi].index,
                group[whi].iterations
            );
            (w, msg)
        });
        match (timing_reliable, work) {
            (true, work) => {
                if s > t.max_spread {
                    out.merge(AssertResult::fail(FAIRNESS, cpu_msg));
                } else {
                    out = out.note(FAIRNESS, cpu_msg);
                }
                if let Some((_, msg)) = work {
                    out = out.note(FAIRNESS, msg);
                }
            }
            (false, Some((w, msg))) => {
                out = out.note(
                    FAIRNESS,
                    format!("{cpu_msg} (not judged: the VM is overcommitted)"),
                );
                if w > t.max_spread {
                    out.merge(AssertResult::fail(
                        FAIRNESS,
                        format!("{msg} (judged by work done: the VM is overcommitted)"),
                    ));
                } else {
                    out = out.note(FAIRNESS, msg);
                }
            }
            (false, None) if s > t.max_spread => {
                out.merge(timing_failure(FAIRNESS, cpu_msg, false));
            }
            (false, None) => out = out.note(FAIRNESS, cpu_msg),
        }
    }
    out
}

/// Fails for every worker whose longest gap exceeds [`Thresholds::max_gap`].
/// Sleeping workers' gaps count from when their sleep should have ended.
/// Starved workers are left out.
pub fn max_gap(reports: &[WorkerReport], t: &Thresholds, timing_reliable: bool) -> AssertResult {
    let mut out = AssertResult::pass();
    let live: Vec<&WorkerReport> = reports.iter().filter(|r| !is_starved(r, t)).collect();
    for r in &live {
        if r.max_gap > t.max_gap {
            out.merge(timing_failure(
                MAX_GAP,
                format!(
                    "{} was not seen running for {:.2?} (threshold {:.2?}), gap ending {:.2?} \
                     into its {:.2?} window",
                    r.who(),
                    r.max_gap,
                    t.max_gap,
                    r.max_gap_at,
                    r.wall
                ),
                timing_reliable,
            ));
        }
    }
    if out.is_pass()
        && out.inconclusive().is_empty()
        && let Some(r) = live.iter().max_by_key(|r| r.max_gap)
    {
        out = out.note(
            MAX_GAP,
            format!(
                "longest gap {:.2?} (threshold {:.2?}), {}",
                r.max_gap,
                t.max_gap,
                r.who()
            ),
        );
    }
    out
}

/// A failure, or, when timing is unreliable, a note plus an inconclusive mark.
fn timing_failure(check: &str, msg: String, timing_reliable: bool) -> AssertResult {
    if timing_reliable {
        AssertResult::fail(check, msg)
    } else {
        AssertResult::pass()
            .note(check, msg.clone())
            .inconclusive_because(format!(
                "{check} would fail, but timing is unreliable (more vCPUs than host cores): {msg}"
            ))
    }
}

/// Fails when the reports cannot support a verdict: no worker reported, a
/// worker's schedstat was not read (fairness would have nothing to judge), or
/// a worker did not exit by itself at the stop request (it was killed, so its
/// figures end early). A check that could not judge is not a pass.
pub fn complete(reports: &[WorkerReport]) -> AssertResult {
    if reports.is_empty() {
        return AssertResult::fail(
            REPORTS,
            "no worker reported: the scenario ran no workload to judge",
        );
    }
    let mut out = AssertResult::pass();
    for r in reports {
        if !r.schedstat {
            out.merge(AssertResult::fail(
                REPORTS,
                format!(
                    "{}: /proc/{}/schedstat could not be read at both ends of the window, so \
                     its CPU time is unknown (kernel without CONFIG_SCHEDSTATS, or the task \
                     was gone)",
                    r.who(),
                    r.pid
                ),
            ));
        }
        if !r.exited_cleanly {
            out.merge(AssertResult::fail(
                REPORTS,
                format!(
                    "{} never reported at the stop request: it was killed after the grace \
                     period ({} iterations)",
                    r.who(),
                    r.iterations
                ),
            ));
        }
    }
    out
}

/// Every check: [`complete`], [`starvation`], [`fairness`] and [`max_gap`].
pub fn all(reports: &[WorkerReport], t: &Thresholds, timing_reliable: bool) -> AssertResult {
    complete(reports)
        .merged(starvation(reports, t))
        .merged(fairness(reports, t, timing_reliable))
        .merged(max_gap(reports, t, timing_reliable))
}

/// One line per worker: the figures behind the verdict, for logs and notes.
pub fn summary(reports: &[WorkerReport]) -> String {
    let mut s = String::new();
    for r in reports {
        let migrations = r
            .migrations
            .map_or_else(|| "?".to_string(), |m| m.to_string());
        s.push_str(&format!(
            "worker {:>2} pid {:>5} {:<10} {:<6} cpu {:>9.2?} wait {:>9.2?} runs {:>6} \
             iters {:>8} gap {:>9.2?} cpus [{}] migr {} (seen {}){}\n",
            r.index,
            r.pid,
            r.group,
            match r.work {
                WorkType::Spin => "spin".to_string(),
                other => other.to_string(),
            },
            r.cpu_time,
            r.run_delay,
            r.runs,
            r.iterations,
            r.max_gap,
            r.cpus,
            migrations,
            r.cpu_changes_seen,
            if r.exited_cleanly { "" } else { " KILLED" }
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::CpuSet;
    use crate::workload::SchedPolicy;

    fn report(
        index: usize,
        group: &str,
        cpu_ms: u64,
        iterations: u64,
        gap_ms: u64,
    ) -> WorkerReport {
        WorkerReport {
            index,
            group: group.to_string(),
            work: WorkType::Spin,
            policy: SchedPolicy::Normal,
            nice: 0,
            pid: 100 + index as u32,
            wall: Duration::from_secs(5),
            cpu_time: Duration::from_millis(cpu_ms),
            run_delay: Duration::ZERO,
            runs: 10,
            iterations,
            max_gap: Duration::from_millis(gap_ms),
            max_gap_at: Duration::from_millis(100),
            cpus: CpuSet::from([0]),
            migrations: Some(0),
            cpu_changes_seen: 0,
            exited_cleanly: true,
            schedstat: true,
        }
    }

    #[test]
    fn reports_that_cannot_support_a_verdict_fail() {
        let none = all(&[], &Thresholds::default(), true);
        assert!(
            none.failures()
                .any(|d| d.check == REPORTS && d.message.contains("no worker")),
            "{none}"
        );
        let mut blind = report(0, "g", 1000, 10, 1);
        blind.schedstat = false;
        let v = all(
            &[blind, report(1, "g", 1000, 10, 1)],
            &Thresholds::default(),
            true,
        );
        assert!(
            v.failures()
                .any(|d| d.check == REPORTS && d.message.contains("schedstat")),
            "{v}"
        );
        let mut killed = report(0, "g", 1000, 10, 1);
        killed.exited_cleanly = false;
        let v = all(
            &[killed, report(1, "g", 1000, 10, 1)],
            &Thresholds::default(),
            true,
        );
        assert!(
            v.failures()
                .any(|d| d.check == REPORTS && d.message.contains("never reported")),
            "{v}"
        );
        // The twin: complete reports pass this check.
        let ok = complete(&[report(0, "g", 1000, 10, 1), report(1, "g", 1000, 10, 1)]);
        assert!(ok.is_pass(), "{ok}");
    }

    #[test]
    fn spread_is_range_over_mean() {
        let a = report(0, "g", 1000, 10, 1);
        let b = report(1, "g", 3000, 10, 1);
        let (s, lo, hi) = spread(&[&a, &b]).expect("two workers");
        assert!((s - 1.0).abs() < 1e-9, "{s}");
        assert_eq!((lo, hi), (0, 1));
        assert_eq!(spread(&[&a]), None);
    }

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
    fn starvation_names_worker_cgroup_figure_and_threshold() {
        let rs = [
            report(0, "victims", 0, 0, 5000),
            report(1, "victims", 0, 0, 5000),
            report(2, "rt_hog", 4900, 1000, 2),
        ];
        let v = all(&rs, &Thresholds::default(), true);
        let failures: Vec<_> = v.failures().collect();
        assert_eq!(failures.len(), 2, "{v}");
        assert!(failures.iter().all(|d| d.check == STARVATION), "{v}");
        let m = &failures[0].message;
        assert!(
            m.contains("worker 0") && m.contains("cgroup victims"),
            "{m}"
        );
        assert!(
            m.contains("0 iterations") && m.contains("at least 1"),
            "{m}"
        );
    }

    #[test]
    fn unfair_group_fails_with_both_figures() {
        let rs = [
            report(0, "cg_0", 1000, 10, 1),
            report(1, "cg_0", 3000, 10, 1),
            // Another group with other weights is not compared with cg_0.
            report(2, "cg_1", 100, 10, 1),
        ];
        let v = fairness(&rs, &Thresholds::default(), true);
        let f: Vec<_> = v.failures().collect();
        assert_eq!(f.len(), 1, "{v}");
        assert!(
            f[0].message.contains("spread 100.0% (threshold 35.0%)"),
            "{}",
            f[0].message
        );
        assert!(
            f[0].message.contains("worker 0 got 1.00s"),
            "{}",
            f[0].message
        );
        let loose = Thresholds::default().with_max_spread(1.5);
        assert!(fairness(&rs, &loose, true).is_pass());
    }

    #[test]
    fn overcommitted_vms_judge_cpu_bound_groups_by_work_done() {
        // The guest's clock says equal CPU time, but worker 1 executed 4x
        // the work: on an overcommitted VM the work decides.
        let unfair = [
            report(0, "cg_0", 2500, 1000, 1),
            report(1, "cg_0", 2500, 4000, 1),
        ];
        let v = fairness(&unfair, &Thresholds::default(), false);
        let f: Vec<_> = v.failures().collect();
        assert_eq!(f.len(), 1, "{v}");
        assert!(
            f[0].message.contains("work done spread 120.0%")
                && f[0].message.contains("judged by work done"),
            "{}",
            f[0].message
        );
        assert!(v.inconclusive().is_empty(), "{v}");
        // Its twin: equal work passes, whatever the CPU-time figures say.
        let fair = [
            report(0, "cg_0", 1000, 2000, 1),
            report(1, "cg_0", 3000, 2100, 1),
        ];
        let v = fairness(&fair, &Thresholds::default(), false);
        assert!(v.is_pass() && v.inconclusive().is_empty(), "{v}");
        // Not CPU-bound: no work measure, so an over-threshold CPU spread is
        // inconclusive, never a silent pass.
        let mut a = report(0, "cg_0", 1000, 10, 1);
        let mut b = report(1, "cg_0", 3000, 10, 1);
        a.work = WorkType::Yield;
        b.work = WorkType::Yield;
        let v = fairness(&[a, b], &Thresholds::default(), false);
        assert!(v.is_pass() && v.inconclusive().len() == 1, "{v}");
    }

    #[test]
    fn long_gap_fails_or_is_inconclusive() {
        let rs = [
            report(0, "cg_0", 2500, 10, 1500),
            report(1, "cg_0", 2500, 10, 3),
        ];
        let t = Thresholds::default();
        let v = max_gap(&rs, &t, true);
        assert_eq!(v.failures().count(), 1, "{v}");
        let msg = &v.failures().next().expect("one").message;
        assert!(
            msg.contains("worker 0") && msg.contains("1.50s") && msg.contains("threshold 1.00s")
        );
        let v = max_gap(&rs, &t, false);
        assert!(v.is_pass(), "{v}");
        assert_eq!(v.inconclusive().len(), 1);
        assert!(v.inconclusive()[0].contains("1.50s"));
    }
}
