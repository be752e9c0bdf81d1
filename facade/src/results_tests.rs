use std::time::Duration;

use ktstr_ops::assert::{AssertResult, Figure};
use ktstr_ops::workload::{LatencySummary, WorkType, WorkerReport};

use super::*;
use crate::registry::TestConfig;

fn worker(i: usize, progress: u64, wall_ms: u64, gap_ms: u64) -> WorkerReport {
    let mut w = WorkerReport::new(i, "cg", &WorkType::Spin);
    w.progress = progress;
    w.wall = Duration::from_millis(wall_ms);
    w.max_gap = Duration::from_millis(gap_ms);
    w.run_delay = Duration::from_millis(wall_ms / 4);
    w.schedstat = true;
    w
}

fn body(_: &crate::scenario::Ctx) -> anyhow::Result<AssertResult> {
    Ok(AssertResult::pass())
}

fn entry() -> TestEntry {
    TestEntry {
        name: "examples::steady",
        func: body,
        config: TestConfig::DEFAULT,
    }
}

#[test]
fn key_figures_come_from_the_workers_and_the_fairness_check() {
    let mut w1 = worker(0, 1000, 2000, 30);
    w1.wake_latency = Some(LatencySummary {
        samples: 10,
        p50: Duration::from_micros(50),
        p99: Duration::from_micros(400),
        max: Duration::from_micros(900),
        mean: Duration::from_micros(80),
    });
    w1.cpu_time = Duration::from_millis(1000);
    let v = AssertResult::pass()
        .note_with("fairness", "spread 12%", Figure::new(12.0, 25.0, "%"))
        .with_workers([w1, worker(1, 3000, 2000, 70)]);
    let rec = json!({
        "workers": serde_json::to_value(v.workers()).expect("workers"),
        "checks": serde_json::to_value(v.details()).expect("checks"),
    });
    let f = key_figures(&rec);
    // (1000/2 + 3000/2) / 2 workers.
    assert_eq!(f["work_per_worker_per_s"], json!(1000.0));
    // (1 s of 2 + 0 of 2) / 2.
    assert_eq!(f["cpu_share_pct"], json!(25.0));
    assert_eq!(f["worst_gap_ms"], json!(70.0));
    assert_eq!(f["wake_p99_us"], json!(400.0));
    assert_eq!(f["run_delay_pct"], json!(25.0));
    assert_eq!(f["fairness_spread_pct"], json!(12.0));
    // Nothing measured: no figure at all, not zeros.
    assert!(key_figures(&json!({})).is_empty());
}

#[test]
fn a_record_holds_the_verdict_checks_workers_and_phases() {
    let e = entry();
    let v = AssertResult::fail_with("max_gap", "gap 900 ms", Figure::new(900.0, 500.0, "ms"))
        .with_workers([worker(0, 10, 1000, 900)]);
    let outcome = Outcome::Fail("max_gap: gap 900 ms\nmore".into());
    let sched = ("scx_x".to_string(), PathBuf::from("/no/such/bin"), vec![]);
    let facts = Facts {
        run: "r1",
        entry: &e,
        preset: Some("llc3"),
        topology: "1n3l2c1t".into(),
        backend: "qemu".into(),
        kernel: None,
        scheduler: Some(&sched),
        outcome: &outcome,
        verdict: Some(&v),
        monitor: Value::Null,
        steps: &[StepStart {
            index: 0,
            at: Duration::from_millis(7250),
            guest_uptime: Duration::from_millis(9100),
            ops: vec!["add cg_0 (2 workers)".into()],
        }],
        phases: Phases {
            total: Duration::from_secs(12),
            body: Some(Duration::from_secs(5)),
            verdict_at: Some(Duration::from_millis(11500)),
            ..Phases::default()
        },
    };
    let r = record_json(&facts, json!({"cpus": 2}));
    assert_eq!(r["schema"], json!(SCHEMA));
    assert_eq!(r["run"], "r1");
    assert_eq!(r["test"], "examples::steady");
    assert_eq!(r["variant"], "gauntlet/steady/llc3");
    assert_eq!(r["verdict"], "fail");
    assert_eq!(r["detail"], "max_gap: gap 900 ms");
    assert_eq!(r["failure"], "max_gap: gap 900 ms\nmore");
    assert_eq!(r["checks"][0]["check"], "max_gap");
    assert_eq!(r["checks"][0]["figure"]["threshold"], json!(500.0));
    assert_eq!(r["workers"][0]["progress"], json!(10));
    assert_eq!(r["figures"]["worst_gap_ms"], json!(900.0));
    assert_eq!(r["figures"], Value::Object(key_figures(&r)));
    assert_eq!(r["phases_s"]["total"], json!(12.0));
    assert_eq!(r["phases_s"]["body"], json!(5.0));
    assert_eq!(r["phases_s"]["boot_to_init"], Value::Null);
    // Steps on the monitor's clock, with the guest's beside it.
    assert_eq!(r["steps"][0]["t"], json!(7.25));
    assert_eq!(r["steps"][0]["guest_s"], json!(9.1));
    assert_eq!(r["steps"][0]["ops"][0], "add cg_0 (2 workers)");
    assert_eq!(r["verdict_t"], json!(11.5));
    // A binary that cannot be read has no hash, said as null.
    assert_eq!(r["scheduler"]["name"], "scx_x");
    assert_eq!(r["scheduler"]["sha256"], Value::Null);
    assert_eq!(r["host"]["cpus"], json!(2));
}

#[test]
fn run_ids_sort_by_time_and_name_a_directory() {
    assert_eq!(run_id_at(0, 7), "19700101-000000-7");
    // 2026-11-27 09:41:01 UTC.
    assert_eq!(run_id_at(1_795_772_461, 42), "20261127-094101-42");
    // Leap day.
    assert_eq!(run_id_at(951_782_400, 1), "20000229-000000-1");
    assert!(crate::config::valid_run_id(&run_id_at(1_795_772_461, 42)));
    assert_eq!(utc_datetime(1_795_772_461), "2026-11-27T09:41:01");
}

#[test]
fn names_of_variants_and_record_files() {
    assert_eq!(test_path("examples::a::b"), "a::b");
    assert_eq!(test_path("lonely"), "lonely");
    assert_eq!(
        variant_name("examples::steady", "llc2-smt"),
        "gauntlet/steady/llc2-smt"
    );
    assert_eq!(
        record_file_name("examples::m::steady", Some("llc2-smt")),
        "m..steady@llc2-smt.json"
    );
    assert_eq!(record_file_name("examples::steady", None), "steady.json");
}
