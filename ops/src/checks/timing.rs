//! Timing: [`wake_latency`], [`throughput_cv`], [`weighted_fairness`].
//!
//! All three follow the verdict rule for overcommitted VMs: with
//! `timing_reliable` false a failure becomes a note plus an inconclusive
//! reason, never a silent pass.

use std::collections::BTreeMap;
use std::time::Duration;

use super::basic::{equal_weight_groups, ms};
use super::{Thresholds, is_starved, timing_failure};
use crate::assert::{AssertResult, Figure};
use crate::workload::WorkerReport;

/// Check name of [`wake_latency`].
pub const WAKE_LATENCY: &str = "wake_latency";
/// Check name of [`throughput_cv`].
pub const THROUGHPUT_CV: &str = "throughput_cv";
/// Check name of [`weighted_fairness`].
pub const WEIGHTED_FAIRNESS: &str = "weighted_fairness";

/// Fails for every worker whose wake-up latency median, 99th percentile or
/// largest value exceeds [`Thresholds::wake_p50`], [`Thresholds::wake_p99`] or
/// [`Thresholds::wake_max`]. Workers without latencies, and starved ones, are
/// left out.
pub fn wake_latency(
    reports: &[WorkerReport],
    t: &Thresholds,
    timing_reliable: bool,
) -> AssertResult {
    let mut out = AssertResult::pass();
    let mut worst: Option<&WorkerReport> = None;
    for r in reports.iter().filter(|r| !is_starved(r, t)) {
        let Some(l) = &r.wake_latency else { continue };
        if worst.is_none_or(|w| w.wake_latency.is_some_and(|wl| l.p99 > wl.p99)) {
            worst = Some(r);
        }
        let limits: [(&str, Duration, Duration); 3] = [
            ("p50", l.p50, t.wake_p50),
            ("p99", l.p99, t.wake_p99),
            ("max", l.max, t.wake_max),
        ];
        for (name, value, limit) in limits {
            if value > limit {
                out.merge(timing_failure(
                    WAKE_LATENCY,
                    format!(
                        "{} ({}): wake-up latency {name} {value:.2?} (threshold {limit:.2?}) over \
                         {} wake-ups; p50 {:.2?} p99 {:.2?} max {:.2?}",
                        r.who(),
                        r.work,
                        l.samples,
                        l.p50,
                        l.p99,
                        l.max
                    ),
                    Figure::new(ms(value), ms(limit), "ms"),
                    timing_reliable,
                ));
            }
        }
    }
    if out.is_pass()
        && out.inconclusive().is_empty()
        && let Some(r) = worst
        && let Some(l) = &r.wake_latency
    {
        out = out.note_with(
            WAKE_LATENCY,
            format!(
                "worst p99 {:.2?} (threshold {:.2?}; p50 {:.2?}, max {:.2?}), {} ({})",
                l.p99,
                t.wake_p99,
                l.p50,
                l.max,
                r.who(),
                r.work
            ),
            Figure::new(ms(l.p99), ms(t.wake_p99), "ms"),
        );
    }
    out
}

/// The coefficient of variation (standard deviation / mean) of `xs`; `None`
/// below two values or with a zero mean.
pub(crate) fn cv(xs: &[f64]) -> Option<f64> {
    if xs.len() < 2 {
        return None;
    }
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    if mean <= 0.0 {
        return None;
    }
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    Some(var.sqrt() / mean)
}

/// Fails for every group of equal-weight workers (same cgroup, work, policy,
/// nice) whose progress rates vary more than [`Thresholds::max_throughput_cv`].
/// Starved workers are left out (starvation reports them).
pub fn throughput_cv(
    reports: &[WorkerReport],
    t: &Thresholds,
    timing_reliable: bool,
) -> AssertResult {
    let mut out = AssertResult::pass();
    // Workers that change their own policy or nice value are no equals.
    let live = reports
        .iter()
        .filter(|r| !is_starved(r, t) && !r.changes_own_weight);
    for ((group, work, policy, _), members) in equal_weight_groups(live) {
        let rates: Vec<f64> = members.iter().map(|r| r.rate()).collect();
        let Some(c) = cv(&rates) else { continue };
        let lo = rates.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = rates.iter().copied().fold(0.0, f64::max);
        let msg = format!(
            "cgroup {group} ({} {work} workers, {policy}): throughput CV {c:.2} (threshold \
             {:.2}), {lo:.0}..{hi:.0} {}/s",
            members.len(),
            t.max_throughput_cv,
            members[0].unit
        );
        let fig = Figure::new(c, t.max_throughput_cv, "");
        if c > t.max_throughput_cv {
            out.merge(timing_failure(THROUGHPUT_CV, msg, fig, timing_reliable));
        } else {
            out = out.note_with(THROUGHPUT_CV, msg, fig);
        }
    }
    out
}

/// Fails when the CPU time cgroups got per unit of `cpu.weight` differs by
/// more than [`Thresholds::max_weight_error`] ((max - min) / mean), among the
/// CPU-bound workers of cgroups with a known weight. Meaningful only when
/// every such cgroup could use more than its share (the `weighted_cgroups`
/// scenario arranges it); needs two cgroups.
pub fn weighted_fairness(
    reports: &[WorkerReport],
    t: &Thresholds,
    timing_reliable: bool,
) -> AssertResult {
    let mut per: BTreeMap<&str, (u32, f64)> = BTreeMap::new();
    for r in reports.iter().filter(|r| r.cpu_bound && !r.noise) {
        let Some(w) = r.cpu_weight else { continue };
        let e = per.entry(r.group.as_str()).or_insert((w, 0.0));
        e.1 += r.cpu_time.as_secs_f64();
    }
    if per.len() < 2 {
        return AssertResult::pass().note(
            WEIGHTED_FAIRNESS,
            format!(
                "{} cgroup(s) with a known cpu.weight: nothing to compare",
                per.len()
            ),
        );
    }
    let norm: Vec<(&str, u32, f64, f64)> = per
        .iter()
        .map(|(g, &(w, secs))| (*g, w, secs, secs / f64::from(w.max(1))))
        .collect();
    let mean = norm.iter().map(|n| n.3).sum::<f64>() / norm.len() as f64;
    let lo = norm.iter().min_by(|a, b| a.3.total_cmp(&b.3));
    let hi = norm.iter().max_by(|a, b| a.3.total_cmp(&b.3));
    let (Some(lo), Some(hi)) = (lo, hi) else {
        return AssertResult::pass();
    };
    if mean <= 0.0 {
        return AssertResult::pass().note(WEIGHTED_FAIRNESS, "no CPU time at all");
    }
    let err = (hi.3 - lo.3) / mean;
    let shares: Vec<String> = norm
        .iter()
        .map(|(g, w, secs, _)| format!("{g} weight {w} got {secs:.2}s"))
        .collect();
    let msg = format!(
        "cpu time per weight spread {:.1}% (threshold {:.1}%): {}",
        err * 100.0,
        t.max_weight_error * 100.0,
        shares.join(", ")
    );
    let fig = Figure::new(err * 100.0, t.max_weight_error * 100.0, "%");
    if err > t.max_weight_error {
        timing_failure(WEIGHTED_FAIRNESS, msg, fig, timing_reliable)
    } else {
        AssertResult::pass().note_with(WEIGHTED_FAIRNESS, msg, fig)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::report;
    use super::*;
    use crate::workload::{LatencySummary, WorkType};

    fn sleeper(index: usize, lat_ms: &[u64]) -> WorkerReport {
        let mut r = WorkerReport::new(index, "sleepers", &WorkType::PipePingPong);
        r.iterations = 100;
        r.wall = Duration::from_secs(1);
        let samples: Vec<Duration> = lat_ms.iter().map(|&m| Duration::from_millis(m)).collect();
        r.wake_latency = LatencySummary::from_samples(&samples);
        r
    }

    #[test]
    fn slow_wakeups_fail_naming_the_check_and_the_twin_passes() {
        let t = Thresholds::default();
        let mut slow = vec![1u64; 90];
        slow.extend([400; 10]); // p99 400 ms > 250 ms
        let v = wake_latency(&[sleeper(0, &slow)], &t, true);
        assert!(v.failed_check(WAKE_LATENCY), "{v}");
        assert_eq!(v.failures().count(), 1, "only p99 is over: {v}");
        assert!(v.to_string().contains("p99"), "{v}");
        let fig = v
            .failures()
            .next()
            .and_then(|d| d.figure.clone())
            .expect("figure");
        assert_eq!(fig.threshold, 250.0);
        assert!(fig.value >= 400.0);

        let v = wake_latency(&[sleeper(0, &[1; 100])], &t, true);
        assert!(v.is_pass(), "{v}");
        assert!(v.to_string().contains("worst p99"), "{v}");

        // On an overcommitted VM the same figures are inconclusive, not a pass.
        let v = wake_latency(&[sleeper(0, &slow)], &t, false);
        assert!(v.is_pass() && !v.inconclusive().is_empty(), "{v}");
        // A tighter layer catches what the default lets through.
        let tight = t.with_wake_latency(
            Duration::from_micros(500),
            Duration::from_millis(250),
            Duration::from_secs(1),
        );
        assert!(wake_latency(&[sleeper(0, &[1; 100])], &tight, true).failed_check(WAKE_LATENCY));
    }

    #[test]
    fn uneven_throughput_fails_and_the_twin_passes() {
        let t = Thresholds::default();
        let mut a = report(0, "g", 2000, 100, 5);
        let mut b = report(1, "g", 2000, 100, 5);
        a.progress = 10_000;
        b.progress = 1_000;
        let v = throughput_cv(&[a.clone(), b.clone()], &t, true);
        assert!(v.failed_check(THROUGHPUT_CV), "{v}");
        assert!(v.to_string().contains("throughput CV 0.82"), "{v}");
        b.progress = 9_000;
        let v = throughput_cv(&[a, b], &t, true);
        assert!(v.is_pass(), "{v}");
        assert_eq!(cv(&[1.0]), None);
    }

    #[test]
    fn shares_off_their_weights_fail_and_the_twin_passes() {
        let t = Thresholds::default();
        let mut light = report(0, "light", 1000, 100, 5);
        light.cpu_weight = Some(100);
        let mut heavy = report(1, "heavy", 1000, 100, 5);
        heavy.cpu_weight = Some(300);
        // Equal CPU time despite a 3:1 weight: wrong.
        let v = weighted_fairness(&[light.clone(), heavy.clone()], &t, true);
        assert!(v.failed_check(WEIGHTED_FAIRNESS), "{v}");
        assert!(v.to_string().contains("heavy weight 300 got 1.00s"), "{v}");
        // 3:1 CPU time: right.
        heavy.cpu_time = Duration::from_millis(3000);
        let v = weighted_fairness(&[light.clone(), heavy], &t, true);
        assert!(v.is_pass(), "{v}");
        assert!(weighted_fairness(&[light], &t, true).is_pass());
    }
}
