use std::time::Duration;

use super::*;
use crate::checks::test_util::report;
use crate::checks::{Thresholds, all_placed};

fn topo(s: &str) -> Topology {
    s.parse().expect("topology")
}

/// A trace of 100 bins of 50 ms: `cpus[i]` for the i-th fifth of the run.
fn trace(cpus: &[u32]) -> PlacementTrace {
    let per = 100 / cpus.len();
    PlacementTrace {
        bin: Duration::from_millis(50),
        cpu: (0..per * cpus.len()).map(|i| Some(cpus[i / per])).collect(),
        rounds: vec![1000; per * cpus.len()],
    }
}

fn worker(index: usize, group: &str, cpu_ms: u64, cpus: &[u32]) -> WorkerReport {
    let mut r = report(index, group, cpu_ms, cpu_ms * 10, 20);
    r.trace = Some(trace(cpus));
    r
}

/// bpfland 1.1.4 on 2n2l2c1t: six workers on node 0's two CPUs, two with a
/// CPU each on node 1, never rebalanced.
fn numa_skewed() -> Vec<WorkerReport> {
    let mut v = Vec::new();
    for (i, cpu) in [0, 1, 0, 2].into_iter().enumerate() {
        let ms = if cpu < 2 { 1650 } else { 4990 };
        v.push(worker(i, "cg_0", ms, &[cpu]));
    }
    for (i, cpu) in [1, 0, 1, 3].into_iter().enumerate() {
        let ms = if cpu < 2 { 1630 } else { 4980 };
        v.push(worker(4 + i, "cg_1", ms, &[cpu]));
    }
    v
}

#[test]
fn levels_skip_repeats_and_single_domains() {
    assert_eq!(levels(&topo("1n1l2c1t")), [Level::Core]);
    assert_eq!(levels(&topo("2n2l2c1t")), [Level::Node, Level::Core]);
    assert_eq!(levels(&topo("1n2l2c2t")), [Level::Llc, Level::Core]);
    assert_eq!(
        levels(&topo("2n4l2c2t")),
        [Level::Node, Level::Llc, Level::Core]
    );
    assert!(levels(&topo("1n1l1c1t")).is_empty());
}

#[test]
fn the_numa_split_is_counted_per_node() {
    let t = topo("2n2l2c1t");
    let p = placement(&numa_skewed(), &t);
    assert_eq!(p.len(), 2);
    let node = &p[0].levels[0];
    assert_eq!(node.level, Level::Node);
    assert_eq!(node.domains.len(), 2);
    assert_eq!(node.domains[0].workers, [0, 1, 2]);
    assert_eq!(node.domains[0].cpus, 2);
    assert_eq!(node.domains[1].workers, [3]);
    assert_eq!(node.moves, 0);
    assert_eq!(node.stable_for, Duration::from_secs(5));
    let text = p[0].to_string();
    assert!(
        text.contains(
            "cg_0 by node: node 0 (2 CPUs): 3 workers, 1.65 s each; node 1 (2 CPUs): 1 worker, \
             4.99 s each; unchanged for the whole 5.00 s"
        ),
        "{text}"
    );
}

#[test]
fn a_fairness_failure_names_the_overloaded_node() {
    let t = topo("2n2l2c1t");
    let v = all_placed(&numa_skewed(), &Thresholds::default(), true, &t);
    assert!(!v.is_pass());
    let text = v.to_string();
    assert!(text.contains("✗ [fairness] cgroup cg_0"), "{text}");
    assert!(
        text.contains(
            "[fairness] cgroup cg_0: explained by placement: node 0 carried 6.0 CPU-bound \
             workers on 2 CPUs (3.0 per CPU), node 1 2.0 on 2 (1.0 per CPU)"
        ),
        "{text}"
    );
    assert!(text.contains("[placement] cg_1 by node"), "{text}");
}

#[test]
fn an_even_split_passes_and_shows_it() {
    let t = topo("2n2l2c1t");
    let rs: Vec<WorkerReport> = (0..8)
        .map(|i| {
            worker(
                i,
                if i < 4 { "cg_0" } else { "cg_1" },
                2500,
                &[(i % 4) as u32],
            )
        })
        .collect();
    let v = all_placed(&rs, &Thresholds::default(), true, &t);
    assert!(v.is_pass(), "{v}");
    let p = placement(&rs, &t);
    let node = &p[0].levels[0];
    assert_eq!(
        node.domains
            .iter()
            .map(|d| d.workers.len())
            .collect::<Vec<_>>(),
        [2, 2]
    );
    assert!(!v.to_string().contains("explained by placement"));
}

#[test]
fn a_spread_within_one_domain_is_not_blamed_on_placement() {
    let t = topo("1n2l2c1t");
    // Both workers on LLC 0, each with its own core: placement is even.
    let rs = vec![worker(0, "cg_0", 400, &[0]), worker(1, "cg_0", 3000, &[1])];
    assert_eq!(explain_spread(&rs, &rs[0], &rs[1], &t), None);
    let v = all_placed(&rs, &Thresholds::default(), true, &t);
    assert!(!v.is_pass());
    assert!(!v.to_string().contains("explained by placement"), "{v}");
}

#[test]
fn moves_and_the_time_since_the_last_are_reported() {
    let t = topo("2n2l2c1t");
    // Node 0 for the first two fifths, then node 1.
    let rs = vec![worker(0, "cg_0", 2500, &[0, 1, 2, 3, 3])];
    let p = placement(&rs, &t);
    let node = &p[0].levels[0];
    assert_eq!(node.moves, 1);
    assert_eq!(node.domains[0].domain, 1);
    assert_eq!(node.stable_for, Duration::from_secs(3));
    assert!(
        p[0].to_string()
            .contains("1 move(s) between nodes, then unchanged for 3.00 s"),
        "{}",
        p[0]
    );
}

#[test]
fn workers_without_traces_are_homeless_not_guessed() {
    let t = topo("2n2l2c1t");
    let mut r = report(0, "cg_0", 2500, 100, 20);
    r.trace = None;
    let p = placement(&[r], &t);
    assert_eq!(p[0].levels[0].homeless, [0]);
    assert!(p[0].levels[0].domains.is_empty());
}
