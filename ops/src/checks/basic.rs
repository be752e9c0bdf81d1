//! Progress and shares: [`starvation`], [`fairness`], [`max_gap`].

use std::collections::BTreeMap;

use super::{Thresholds, is_starved, timing_failure};
use crate::assert::{AssertResult, Figure};
use crate::workload::WorkerReport;

/// Check name of [`starvation`].
pub const STARVATION: &str = "starvation";
/// Check name of [`fairness`].
pub const FAIRNESS: &str = "fairness";
/// Check name of [`max_gap`].
pub const MAX_GAP: &str = "max_gap";

/// Fails for every worker whose loop made less progress than
/// [`Thresholds::min_iterations`] in its window.
pub fn starvation(reports: &[WorkerReport], t: &Thresholds) -> AssertResult {
    let mut out = AssertResult::pass();
    for r in reports.iter().filter(|r| is_starved(r, t)) {
        out.merge(AssertResult::fail_with(
            STARVATION,
            format!(
                "{} starved: {} iterations in {:.2?} (threshold: at least {}), cpu time {:.2?}, \
                 waited runnable {:.2?}, progress {} {}",
                r.who(),
                r.iterations,
                r.wall,
                t.min_iterations,
                r.cpu_time,
                r.run_delay,
                r.progress,
                r.unit
            ),
            Figure::new(r.iterations as f64, t.min_iterations as f64, "iterations"),
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
        work: r.work.clone(),
        policy: r.policy.to_string(),
        nice: r.nice,
    }
}

/// The CPU-time spread of a group: (max - min) / mean, with the workers that had
/// the least and the most. `None` below two workers or without any CPU time.
pub fn spread(group: &[&WorkerReport]) -> Option<(f64, usize, usize)> {
    if group.len() < 2 {
        return None;
    }
    let secs = |r: &&WorkerReport| r.cpu_time.as_secs_f64();
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

/// Workers of equal weight (same cgroup, work, policy and nice), by key.
pub(crate) fn equal_weight_groups<'a>(
    reports: impl IntoIterator<Item = &'a WorkerReport>,
) -> BTreeMap<(String, String, String, i32), Vec<&'a WorkerReport>> {
    let mut groups: BTreeMap<_, Vec<&WorkerReport>> = BTreeMap::new();
    for r in reports {
        let k = key(r);
        groups
            .entry((k.group, k.work, k.policy, k.nice))
            .or_default()
            .push(r);
    }
    groups
}

/// Fails for every group of equal-weight CPU-bound workers whose CPU-time
/// spread exceeds [`Thresholds::max_spread`] (workers that block or change
/// their own weight are not compared). Starved workers are left out.
pub fn fairness(reports: &[WorkerReport], t: &Thresholds, timing_reliable: bool) -> AssertResult {
    let mut groups: BTreeMap<WeightKey, Vec<&WorkerReport>> = BTreeMap::new();
    for r in reports.iter().filter(|r| !is_starved(r, t) && r.cpu_bound) {
        groups.entry(key(r)).or_default().push(r);
    }
    let mut out = AssertResult::pass();
    for (k, group) in &groups {
        let Some((s, lo, hi)) = spread(group) else {
            continue;
        };
        let (lo, hi) = (group[lo], group[hi]);
        let msg = format!(
            "cgroup {} ({} {} workers, {}): cpu time spread {:.1}% (threshold {:.1}%): \
             worker {} got {:.2?}, worker {} got {:.2?}",
            k.group,
            group.len(),
            k.work,
            k.policy,
            s * 100.0,
            t.max_spread * 100.0,
            lo.index,
            lo.cpu_time,
            hi.index,
            hi.cpu_time
        );
        let fig = Figure::new(s * 100.0, t.max_spread * 100.0, "%");
        if s > t.max_spread {
            out.merge(timing_failure(FAIRNESS, msg, fig, timing_reliable));
        } else {
            out = out.note_with(FAIRNESS, msg, fig);
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
                Figure::new(ms(r.max_gap), ms(t.max_gap), "ms"),
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

pub(crate) fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::super::all;
    use super::super::test_util::report;
    use super::*;

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
