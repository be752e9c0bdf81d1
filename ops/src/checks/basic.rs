//! Progress and shares: [`starvation`], [`fairness`], [`max_gap`].

use std::collections::BTreeMap;

use ktstr_topology::Topology;

use super::domains::explain_spread;
use super::{Thresholds, is_starved, timing_failure};
use crate::assert::{AssertResult, Figure};
use crate::workload::WorkerReport;

/// Check name of [`starvation`].
pub const STARVATION: &str = "starvation";
/// Check name of [`fairness`].
pub const FAIRNESS: &str = "fairness";
/// Check name of [`max_gap`].
pub const MAX_GAP: &str = "max_gap";
/// Check name of [`complete`].
pub const REPORTS: &str = "reports";

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
    spread_of(group, |r| r.cpu_time.as_secs_f64())
}

/// The spread of work done (loop iterations) of a group of CPU-bound
/// workers: what they executed, whatever the guest's clock charged them.
/// `None` below two workers, without work, or for work that is not CPU-bound
/// (its iterations do not measure CPU received).
pub fn work_spread(group: &[&WorkerReport]) -> Option<(f64, usize, usize)> {
    if !group.iter().all(|r| r.cpu_bound) {
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
/// their own weight are not compared, nor background noise). Starved workers
/// are left out.
///
/// On an overcommitted VM (`timing_reliable` false) the guest's clock charges
/// a task for time its vCPU was preempted on the host, which inflates short
/// slices and flattens CPU-time differences. There the groups are judged by
/// the spread of work done instead (iterations: what the guest really
/// executed for each worker), the CPU-time figure kept as a note.
pub fn fairness(reports: &[WorkerReport], t: &Thresholds, timing_reliable: bool) -> AssertResult {
    fairness_on(reports, t, timing_reliable, None)
}

/// [`fairness`]; with the topology, each failing group is followed by what
/// placement says of it ([`explain_spread`]).
pub(crate) fn fairness_on(
    reports: &[WorkerReport],
    t: &Thresholds,
    timing_reliable: bool,
    topo: Option<&Topology>,
) -> AssertResult {
    let mut groups: BTreeMap<WeightKey, Vec<&WorkerReport>> = BTreeMap::new();
    for r in reports
        .iter()
        .filter(|r| !is_starved(r, t) && r.cpu_bound && !r.noise)
    {
        groups.entry(key(r)).or_default().push(r);
    }
    let mut out = AssertResult::pass();
    let mut noise: Vec<&str> = reports
        .iter()
        .filter(|r| r.noise && r.cpu_bound)
        .map(|r| r.group.as_str())
        .collect();
    noise.dedup();
    for g in noise {
        out = out.note(
            FAIRNESS,
            format!("cgroup {g}: background noise, not compared"),
        );
    }
    for (k, group) in &groups {
        let Some((s, lo, hi)) = spread(group) else {
            continue;
        };
        let failures_before = failures(&out);
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
        let cpu_fig = Figure::new(s * 100.0, t.max_spread * 100.0, "%");
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
            (w, msg, Figure::new(w * 100.0, t.max_spread * 100.0, "%"))
        });
        match (timing_reliable, work) {
            (true, work) => {
                if s > t.max_spread {
                    out.merge(AssertResult::fail_with(FAIRNESS, cpu_msg, cpu_fig));
                } else {
                    out = out.note_with(FAIRNESS, cpu_msg, cpu_fig);
                }
                if let Some((_, msg, fig)) = work {
                    out = out.note_with(FAIRNESS, msg, fig);
                }
            }
            (false, Some((w, msg, fig))) => {
                out = out.note_with(
                    FAIRNESS,
                    format!("{cpu_msg} (not judged: the VM is overcommitted)"),
                    cpu_fig,
                );
                if w > t.max_spread {
                    out.merge(AssertResult::fail_with(
                        FAIRNESS,
                        format!("{msg} (judged by work done: the VM is overcommitted)"),
                        fig,
                    ));
                } else {
                    out = out.note_with(FAIRNESS, msg, fig);
                }
            }
            (false, None) if s > t.max_spread => {
                out.merge(timing_failure(FAIRNESS, cpu_msg, cpu_fig, false));
            }
            (false, None) => out = out.note_with(FAIRNESS, cpu_msg, cpu_fig),
        }
        if let Some(topo) = topo
            && failures(&out) > failures_before
        {
            let why = explain_spread(reports, group[lo], group[hi], topo).unwrap_or_else(|| {
                "placement does not explain it: the two workers' homes carried as many workers \
                 per CPU at every level"
                    .to_string()
            });
            out = out.note(FAIRNESS, format!("cgroup {}: {why}", k.group));
        }
    }
    out
}

fn failures(v: &AssertResult) -> usize {
    v.details().iter().filter(|d| d.failed).count()
}

/// Fails for every worker whose longest gap exceeds [`Thresholds::max_gap`].
/// Sleeping workers' gaps count from when their sleep should have ended.
/// Starved workers are left out (the starvation check names them), and so are
/// workers that lower their own weight on purpose (policy churn through
/// SCHED_IDLE, nice sweeps to 19): a scheduler may keep such a task waiting
/// while normal tasks run, for seconds (one waited 1.59 s beside spinners).
pub fn max_gap(reports: &[WorkerReport], t: &Thresholds, timing_reliable: bool) -> AssertResult {
    let mut out = AssertResult::pass();
    let live: Vec<&WorkerReport> = reports
        .iter()
        .filter(|r| !is_starved(r, t) && !r.changes_own_weight)
        .collect();
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

#[cfg(test)]
mod tests {
    use super::super::all;
    use super::super::test_util::report;
    use super::*;

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
    fn noise_is_not_compared_but_says_so() {
        let mut rs = [
            report(0, "noisy", 1000, 10, 1),
            report(1, "noisy", 3000, 10, 1),
        ];
        assert!(!fairness(&rs, &Thresholds::default(), true).is_pass());
        rs.iter_mut().for_each(|r| r.noise = true);
        let v = fairness(&rs, &Thresholds::default(), true);
        assert!(v.is_pass(), "{v}");
        assert!(
            v.details()
                .iter()
                .any(|d| d.message == "cgroup noisy: background noise, not compared"),
            "{v}"
        );
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
        // No work measured at all: an over-threshold CPU spread is
        // inconclusive, never a silent pass.
        let none = [report(0, "cg_0", 1000, 0, 1), report(1, "cg_0", 3000, 0, 1)];
        let t = Thresholds::default().with_min_iterations(0);
        let v = fairness(&none, &t, false);
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

    #[test]
    fn a_worker_lowering_its_own_weight_may_wait() {
        let mut churner = report(0, "switching", 2500, 10, 1590);
        churner.changes_own_weight = true;
        let rs = [churner.clone(), report(1, "fair", 2500, 10, 3)];
        let v = max_gap(&rs, &Thresholds::default(), true);
        assert!(v.is_pass(), "{v}");
        // Its twin that keeps its weight fails.
        churner.changes_own_weight = false;
        let v = max_gap(&[churner], &Thresholds::default(), true);
        assert_eq!(v.failures().count(), 1, "{v}");
    }
}
