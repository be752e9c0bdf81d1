//! Where tasks ran: [`cpuset_isolation`], [`affinity`], [`migrations`].
//!
//! These are correctness, not timing: a task seen on a CPU its cpuset or
//! mask forbids is a bug however loaded the host, so they fail even when
//! timing is unreliable.

use super::{Thresholds, is_starved};
use crate::assert::{AssertResult, Figure};
use crate::cgroup::CpuSet;
use crate::workload::WorkerReport;

/// Check name of [`cpuset_isolation`].
pub const CPUSET_ISOLATION: &str = "cpuset_isolation";
/// Check name of [`affinity`].
pub const AFFINITY: &str = "affinity";
/// Check name of [`migrations`].
pub const MIGRATIONS: &str = "migrations";

fn outside(seen: &CpuSet, allowed: &CpuSet) -> CpuSet {
    seen.iter().filter(|&c| !allowed.contains(c)).collect()
}

/// Fails for every worker seen (by `sched_getcpu` in its loop or its
/// helpers') on a CPU outside its cpuset. Workers whose cpuset the harness
/// does not know are left out (the note says how many were judged).
pub fn cpuset_isolation(reports: &[WorkerReport]) -> AssertResult {
    let mut out = AssertResult::pass();
    let mut judged = 0;
    for r in reports {
        let Some(set) = &r.cpuset else { continue };
        judged += 1;
        let bad = outside(&r.cpus, set);
        if !bad.is_empty() {
            out.merge(AssertResult::fail_with(
                CPUSET_ISOLATION,
                format!(
                    "{} ran on CPUs [{bad}] outside its cpuset [{set}] (seen on [{}])",
                    r.who(),
                    r.cpus
                ),
                Figure::new(bad.len() as f64, 0.0, "CPUs"),
            ));
        }
    }
    if out.is_pass() {
        out = out.note(
            CPUSET_ISOLATION,
            format!(
                "{judged} of {} workers had a known cpuset and kept to it",
                reports.len()
            ),
        );
    }
    out
}

/// Fails for every worker seen outside the CPUs its spec pinned it to, and for
/// every worker that found itself outside a mask it had just set (affinity
/// churn checks after each `sched_setaffinity`).
pub fn affinity(reports: &[WorkerReport]) -> AssertResult {
    let mut out = AssertResult::pass();
    let mut judged = 0;
    for r in reports {
        if let Some(mask) = &r.affinity {
            judged += 1;
            let bad = outside(&r.cpus, mask);
            if !bad.is_empty() {
                out.merge(AssertResult::fail_with(
                    AFFINITY,
                    format!(
                        "{} ran on CPUs [{bad}] outside its affinity [{mask}] (seen on [{}])",
                        r.who(),
                        r.cpus
                    ),
                    Figure::new(bad.len() as f64, 0.0, "CPUs"),
                ));
            }
        }
        if r.affinity_violations > 0 {
            out.merge(AssertResult::fail_with(
                AFFINITY,
                format!(
                    "{} ran outside the single-CPU mask it had just set, {} times ({})",
                    r.who(),
                    r.affinity_violations,
                    r.work
                ),
                Figure::new(r.affinity_violations as f64, 0.0, "times"),
            ));
        }
    }
    if out.is_pass() {
        out = out.note(
            AFFINITY,
            format!("{judged} pinned workers kept to their masks; no self-set mask was ignored"),
        );
    }
    out
}

/// Fails for every worker that migrated more often than
/// [`Thresholds::max_migrations_per_s`] over its window. Workers that move
/// themselves, starved ones and those without `/proc/<pid>/sched` are left out.
pub fn migrations(reports: &[WorkerReport], t: &Thresholds) -> AssertResult {
    let mut out = AssertResult::pass();
    let mut most: Option<(f64, &WorkerReport)> = None;
    for r in reports
        .iter()
        .filter(|r| !r.moves_itself && !is_starved(r, t))
    {
        let (Some(m), wall) = (r.migrations, r.wall.as_secs_f64()) else {
            continue;
        };
        if wall <= 0.0 {
            continue;
        }
        let rate = m as f64 / wall;
        if most.is_none_or(|(x, _)| rate > x) {
            most = Some((rate, r));
        }
        if rate > t.max_migrations_per_s {
            out.merge(AssertResult::fail_with(
                MIGRATIONS,
                format!(
                    "{} migrated {m} times in {:.2?}: {rate:.0}/s (threshold {:.0}/s)",
                    r.who(),
                    r.wall,
                    t.max_migrations_per_s
                ),
                Figure::new(rate, t.max_migrations_per_s, "/s"),
            ));
        }
    }
    if out.is_pass()
        && let Some((rate, r)) = most
    {
        out = out.note_with(
            MIGRATIONS,
            format!(
                "most migrations {rate:.0}/s (threshold {:.0}/s), {}",
                t.max_migrations_per_s,
                r.who()
            ),
            Figure::new(rate, t.max_migrations_per_s, "/s"),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::test_util::report;
    use super::*;
    use crate::workload::WorkType;

    #[test]
    fn cpuset_violation_fails_naming_the_check_and_its_twin_passes() {
        let mut bad = report(0, "pinned", 2000, 100, 5);
        bad.cpuset = Some(CpuSet::from([0]));
        bad.cpus = CpuSet::from([0, 2]);
        let v = cpuset_isolation(&[bad.clone()]);
        assert!(v.failed_check(CPUSET_ISOLATION), "{v}");
        let msg = &v.failures().next().expect("one failure").message;
        assert!(msg.contains("CPUs [2] outside its cpuset [0]"), "{msg}");
        assert_eq!(
            v.failures()
                .next()
                .and_then(|d| d.figure.clone())
                .map(|f| f.value),
            Some(1.0)
        );

        let mut twin = bad;
        twin.cpus = CpuSet::from([0]);
        let v = cpuset_isolation(&[twin, report(1, "free", 2000, 100, 5)]);
        assert!(v.is_pass(), "{v}");
        assert!(v.details()[0].message.contains("1 of 2 workers"), "{v}");
    }

    #[test]
    fn affinity_violation_fails_and_its_twin_passes() {
        let mut pinned = report(0, "g", 2000, 100, 5);
        pinned.affinity = Some(CpuSet::from([1]));
        pinned.cpus = CpuSet::from([0, 1]);
        assert!(affinity(&[pinned.clone()]).failed_check(AFFINITY));
        pinned.cpus = CpuSet::from([1]);
        assert!(affinity(&[pinned.clone()]).is_pass());

        let mut churn = WorkerReport::new(1, "g", &WorkType::AffinityChurn);
        churn.affinity_violations = 3;
        let v = affinity(&[pinned.clone(), churn.clone()]);
        assert!(v.failed_check(AFFINITY), "{v}");
        assert!(v.to_string().contains("3 times (affinity-churn)"), "{v}");
        churn.affinity_violations = 0;
        assert!(affinity(&[pinned, churn]).is_pass());
    }

    #[test]
    fn migration_storm_fails_and_its_twin_passes() {
        let t = Thresholds::default().with_max_migrations_per_s(100.0);
        let mut r = report(0, "g", 2000, 100, 5);
        r.wall = Duration::from_secs(2);
        r.migrations = Some(1000);
        let v = migrations(&[r.clone()], &t);
        assert!(v.failed_check(MIGRATIONS), "{v}");
        assert!(v.to_string().contains("500/s (threshold 100/s)"), "{v}");
        // A worker that moves itself on purpose is not judged.
        let mut churn = WorkerReport::new(1, "g", &WorkType::AffinityChurn);
        churn.iterations = 10;
        churn.wall = Duration::from_secs(2);
        churn.migrations = Some(100_000);
        r.migrations = Some(20);
        let v = migrations(&[r, churn], &t);
        assert!(v.is_pass(), "{v}");
        assert!(v.to_string().contains("most migrations 10/s"), "{v}");
    }
}
