//! Worker figures as text: one line per worker, with a header.

use crate::workload::WorkerReport;

/// The worker table printed with a failing verdict: one row per worker.
pub fn table(reports: &[WorkerReport]) -> String {
    let mut s = format!(
        "{:>3} {:>6} {:<16} {:<26} {:>9} {:>9} {:>12} {:<15} {:>9} {:>9} {:>9} {:<10} {:>5}\n",
        "#",
        "pid",
        "cgroup",
        "work",
        "cpu",
        "wait",
        "progress",
        "unit",
        "wake p50",
        "wake p99",
        "gap",
        "cpus",
        "migr"
    );
    for r in reports {
        let (p50, p99) = r
            .wake_latency
            .map_or(("-".to_string(), "-".to_string()), |l| {
                (format!("{:.2?}", l.p50), format!("{:.2?}", l.p99))
            });
        let migr = r
            .migrations
            .map_or_else(|| "?".to_string(), |m| m.to_string());
        let mut flags = String::new();
        if let Some(set) = &r.cpuset {
            flags.push_str(&format!(" cpuset [{set}]"));
        }
        if let Some(w) = r.cpu_weight {
            flags.push_str(&format!(" weight {w}"));
        }
        if r.failures > 0 {
            flags.push_str(&format!(" failures {}", r.failures));
        }
        if r.affinity_violations > 0 {
            flags.push_str(&format!(" affinity-violations {}", r.affinity_violations));
        }
        if !r.exited_cleanly {
            flags.push_str(" KILLED");
        }
        s.push_str(&format!(
            "{:>3} {:>6} {:<16} {:<26} {:>9.2?} {:>9.2?} {:>12} {:<15} {:>9} {:>9} {:>9.2?} {:<10} {:>5}{}\n",
            r.index,
            r.pid,
            r.group,
            r.work,
            r.cpu_time,
            r.run_delay,
            r.progress,
            r.unit,
            p50,
            p99,
            r.max_gap,
            format!("[{}]", r.cpus),
            migr,
            flags
        ));
    }
    s
}

/// [`table`] without its header: one line per worker, for notes and logs.
pub fn summary(reports: &[WorkerReport]) -> String {
    table(reports)
        .lines()
        .skip(1)
        .map(|l| format!("{l}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::test_util::report;
    use super::*;
    use crate::assert::AssertResult;

    #[test]
    fn a_failing_verdict_prints_the_worker_table() {
        let rs = vec![
            report(0, "cg_0", 10, 0, 5000),
            report(1, "cg_0", 4000, 50, 5),
        ];
        let t = table(&rs);
        assert_eq!(t.lines().count(), 3, "{t}");
        assert!(
            t.lines().next().is_some_and(|h| h.contains("progress")),
            "{t}"
        );
        let v = AssertResult::fail("starvation", "worker 0 starved").with_workers(rs.clone());
        let text = v.to_string();
        assert!(
            text.contains("workers:") && text.contains("spin units"),
            "{text}"
        );
        // A pass keeps the table out of the way; the data still travels.
        let v = AssertResult::pass().with_workers(rs);
        assert!(!v.to_string().contains("workers:"));
        let json = serde_json::to_string(&v).expect("json");
        let back: AssertResult = serde_json::from_str(&json).expect("parse");
        assert_eq!(back.workers().len(), 2);
        assert_eq!(back, v);
    }
}
