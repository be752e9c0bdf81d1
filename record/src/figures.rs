//! The key figures of a run, computed once here so every reader agrees.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::report::{CheckRecord, WorkerRecord};

/// The name of the guest's fairness check (`ktstr_ops::checks::FAIRNESS`),
/// whose figure is `fairness_spread_pct`.
pub const FAIRNESS_CHECK: &str = "fairness";

/// A duration in seconds as the record's readers have always computed it
/// from its JSON form, `secs + nanos * 1e-9` (which can differ from
/// [`Duration::as_secs_f64`] in the last bit): figures stay the same values.
pub fn secs(d: Duration) -> f64 {
    d.as_secs() as f64 + f64::from(d.subsec_nanos()) * 1e-9
}

fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// The key figures of a run, by name, from its workers and checks:
/// `cpu_share_pct` (mean share of its window each worker spent on a CPU:
/// the work a CPU-bound worker was let do, independent of how fast the host
/// emulates), `work_per_worker_per_s` (mean work units per second per
/// worker; under software emulation it follows the host's load),
/// `worst_gap_ms` (longest gap any worker saw in its own loop),
/// `wake_p99_us` (worst p99 wake latency), `run_delay_pct` (mean share of
/// the window spent runnable but waiting) and `fairness_spread_pct` (the
/// fairness check's figure), each where the run has what it takes.
pub fn key_figures(workers: &[WorkerRecord], checks: &[CheckRecord]) -> BTreeMap<String, f64> {
    let mut m = BTreeMap::new();
    // Shares and rates need a window; shares and delays need schedstat.
    let timed: Vec<(&WorkerRecord, f64)> = workers
        .iter()
        .map(|w| (w, secs(w.wall)))
        .filter(|(_, wall)| *wall > 0.0)
        .collect();
    let with_schedstat: Vec<(&WorkerRecord, f64)> =
        timed.iter().copied().filter(|(w, _)| w.schedstat).collect();
    let share: Vec<f64> = with_schedstat
        .iter()
        .map(|(w, wall)| 100.0 * secs(w.cpu_time) / wall)
        .collect();
    if let Some(v) = mean(&share) {
        m.insert("cpu_share_pct".into(), v);
    }
    let rates: Vec<f64> = timed
        .iter()
        .map(|(w, wall)| w.progress as f64 / wall)
        .collect();
    if let Some(v) = mean(&rates) {
        m.insert("work_per_worker_per_s".into(), v);
    }
    if let Some(g) = workers.iter().map(|w| secs(w.max_gap)).reduce(f64::max) {
        m.insert("worst_gap_ms".into(), g * 1e3);
    }
    if let Some(p) = workers
        .iter()
        .filter_map(|w| Some(secs(w.wake_latency?.p99)))
        .reduce(f64::max)
    {
        m.insert("wake_p99_us".into(), p * 1e6);
    }
    let delays: Vec<f64> = with_schedstat
        .iter()
        .map(|(w, wall)| 100.0 * secs(w.run_delay) / wall)
        .collect();
    if let Some(v) = mean(&delays) {
        m.insert("run_delay_pct".into(), v);
    }
    // A figure that is not a finite number is no figure (JSON writes it as
    // null).
    if let Some(f) = checks
        .iter()
        .filter(|d| d.check == FAIRNESS_CHECK)
        .find_map(|d| d.figure.as_ref().map(|f| f.value).filter(|v| v.is_finite()))
    {
        m.insert("fairness_spread_pct".into(), f);
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A worker from the JSON the guest writes.
    fn worker(i: usize, progress: u64, wall_ms: u64, gap_ms: u64) -> WorkerRecord {
        let ms = |ms: u64| serde_json::json!({"secs": ms / 1000, "nanos": ms % 1000 * 1_000_000});
        serde_json::from_value(serde_json::json!({
            "index": i, "group": "cg", "work": "spin", "unit": "spin units",
            "policy": "Normal", "nice": 0, "pid": 0,
            "wall": ms(wall_ms), "cpu_time": ms(0), "run_delay": ms(wall_ms / 4),
            "runs": 0, "progress": progress, "iterations": 0,
            "max_gap": ms(gap_ms), "max_gap_at": ms(0), "wake_latency": null,
            "cpus": "", "cpuset": null, "affinity": null, "affinity_violations": 0,
            "cpu_weight": null, "migrations": null, "cpu_changes_seen": 0,
            "failures": 0, "helpers": 0, "cpu_bound": true, "moves_itself": false,
            "exited_cleanly": true, "schedstat": true,
        }))
        .expect("a worker")
    }

    // The figures of the facade's former `key_figures` test, unchanged.
    #[test]
    fn key_figures_come_from_the_workers_and_the_fairness_check() {
        let mut w1 = worker(0, 1000, 2000, 30);
        w1.wake_latency = Some(crate::WakeLatency {
            samples: 10,
            p50: Duration::from_micros(50),
            p99: Duration::from_micros(400),
            max: Duration::from_micros(900),
            mean: Duration::from_micros(80),
        });
        w1.cpu_time = Duration::from_millis(1000);
        let checks = [CheckRecord {
            check: "fairness".into(),
            message: "spread 12%".into(),
            failed: false,
            figure: Some(crate::Figure {
                value: 12.0,
                threshold: 25.0,
                unit: "%".into(),
            }),
        }];
        let f = key_figures(&[w1, worker(1, 3000, 2000, 70)], &checks);
        // (1000/2 + 3000/2) / 2 workers.
        assert_eq!(f["work_per_worker_per_s"], 1000.0);
        // (1 s of 2 + 0 of 2) / 2.
        assert_eq!(f["cpu_share_pct"], 25.0);
        assert_eq!(f["worst_gap_ms"], 70.0);
        assert_eq!(f["wake_p99_us"], 400.0);
        assert_eq!(f["run_delay_pct"], 25.0);
        assert_eq!(f["fairness_spread_pct"], 12.0);
        // Nothing measured: no figure at all, not zeros.
        assert!(key_figures(&[], &[]).is_empty());
    }

    #[test]
    fn a_worker_without_a_window_or_schedstat_counts_only_where_it_can() {
        let mut idle = worker(0, 5, 0, 40);
        idle.schedstat = false;
        let mut unread = worker(1, 100, 1000, 10);
        unread.schedstat = false;
        let f = key_figures(&[idle, unread], &[]);
        // No window: no rate; no schedstat: no share or delay; gaps of all.
        assert_eq!(f["work_per_worker_per_s"], 100.0);
        assert_eq!(f["worst_gap_ms"], 40.0);
        assert!(!f.contains_key("cpu_share_pct") && !f.contains_key("run_delay_pct"));
        // A fairness figure that was not a number is none.
        let nan = CheckRecord {
            check: FAIRNESS_CHECK.into(),
            message: String::new(),
            failed: false,
            figure: Some(crate::Figure {
                value: f64::NAN,
                threshold: 25.0,
                unit: "%".into(),
            }),
        };
        assert!(!key_figures(&[], &[nan]).contains_key("fairness_spread_pct"));
    }
}
