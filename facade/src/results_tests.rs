use std::time::Duration;

use ktstr_ops::{AssertResult, Figure};
use ktstr_ops::{LatencySummary, WorkType, WorkerReport};

use serde_json::{Value, json};

use super::*;
use crate::registry::TestConfig;
use crate::verdict::RunReport;

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

/// The report of a run that ended with the guest's verdict `v`.
fn report(v: &AssertResult) -> RunReport {
    let mut obs = crate::verdict::Observed::ended(ktstr_vmm::EndReason::PowerOff);
    obs.verdict = Some((v.clone(), None));
    let mut r = RunReport::new(
        "examples::steady",
        crate::verdict::Expectation {
            expect_err: false,
            expect_err_matching: None,
            expect_err_text: None,
            allow_inconclusive: false,
            watchdog_timeout_s: 65,
        },
    );
    r.reached = crate::verdict::Reached::Ended(Box::new(obs));
    r.topology = Some("1n1l2c1t".into());
    r.backend = Some("qemu".into());
    r
}

fn facts<'a>(e: &'a TestEntry, outcome: &'a Outcome, r: &'a RunReport) -> Facts<'a> {
    Facts {
        run: "r1",
        entry: e,
        preset: None,
        outcome,
        report: r,
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
    let (e, outcome) = (entry(), Outcome::Pass("pass".into()));
    let f = run_record(&facts(&e, &outcome, &report(&v)), HostFacts::default()).figures;
    // (1000/2 + 3000/2) / 2 workers.
    assert_eq!(f["work_per_worker_per_s"], 1000.0);
    // (1 s of 2 + 0 of 2) / 2.
    assert_eq!(f["cpu_share_pct"], 25.0);
    assert_eq!(f["worst_gap_ms"], 70.0);
    assert_eq!(f["wake_p99_us"], 400.0);
    assert_eq!(f["run_delay_pct"], 25.0);
    assert_eq!(f["fairness_spread_pct"], 12.0);
    // Nothing measured: no figure at all, not zeros.
    let none = AssertResult::pass();
    assert!(
        run_record(&facts(&e, &outcome, &report(&none)), HostFacts::default())
            .figures
            .is_empty()
    );
    assert_eq!(ktstr_record::FAIRNESS_CHECK, ktstr_ops::checks::FAIRNESS);
}

/// The record's mirrors of the guest's reports hold every field the guest
/// writes: a fully populated report converts, and writes the same JSON.
#[test]
fn the_records_mirrors_hold_every_field_of_the_guests_reports() {
    let mut w = worker(3, 77, 1500, 12);
    w.policy = ktstr_ops::SchedPolicy::Fifo(50);
    w.nice = -5;
    w.pid = 120;
    w.cpu_time = Duration::from_nanos(1_234_567_891);
    w.runs = 9;
    w.iterations = 80;
    w.max_gap_at = Duration::from_millis(333);
    w.wake_latency = LatencySummary::from_samples(&[Duration::from_micros(70)]);
    w.cpus = "0-2,5".parse().expect("cpus");
    w.cpuset = Some("0-7".parse().expect("cpuset"));
    w.affinity = Some("5".parse().expect("affinity"));
    w.affinity_violations = 1;
    w.cpu_weight = Some(50);
    w.migrations = Some(4);
    w.cpu_changes_seen = 3;
    w.failures = 2;
    w.helpers = 1;
    w.cpu_bound = false;
    w.moves_itself = true;
    w.changes_own_weight = true;
    w.noise = true;
    w.exited_cleanly = false;
    w.trace = Some(ktstr_ops::PlacementTrace {
        bin: Duration::from_millis(50),
        cpu: vec![Some(0), None, Some(1)],
        rounds: vec![10, 0, 7],
    });
    let v = AssertResult::fail_with("max_gap", "gap", Figure::new(f64::NAN, 500.0, "ms"))
        .note("ops", "step 0")
        .with_workers([w]);
    let (e, outcome) = (entry(), Outcome::Fail("gap".into()));
    let r = run_record(&facts(&e, &outcome, &report(&v)), HostFacts::default());
    assert_eq!(
        serde_json::to_value(&r.workers).expect("record"),
        serde_json::to_value(v.workers()).expect("guest"),
    );
    assert_eq!(
        serde_json::to_value(&r.checks).expect("record"),
        serde_json::to_value(v.details()).expect("guest"),
    );
    assert_eq!(r.workers[0].policy, ktstr_record::Policy::Fifo(50));
    // The placement summary the record derives mirrors the guest's too.
    let topo = r.topology.parse().expect("topology");
    assert_eq!(
        serde_json::to_value(&r.placement).expect("record"),
        serde_json::to_value(ktstr_ops::checks::placement(v.workers(), &topo)).expect("guest"),
    );
    assert_eq!(r.placement.len(), 1);
    assert!(!r.placement[0].levels.is_empty(), "{:?}", r.placement);
    assert!(
        r.checks[0]
            .figure
            .as_ref()
            .is_some_and(|f| f.value.is_nan())
    );
}

#[test]
fn a_record_holds_the_verdict_checks_workers_and_phases() {
    let e = entry();
    let v = AssertResult::fail_with("max_gap", "gap 900 ms", Figure::new(900.0, 500.0, "ms"))
        .with_workers([worker(0, 10, 1000, 900)]);
    let outcome = Outcome::Fail("max_gap: gap 900 ms\nmore".into());
    let mut rep = report(&v);
    rep.topology = Some("1n3l2c1t".into());
    rep.scheduler = Some(("scx_x".to_string(), PathBuf::from("/no/such/bin"), vec![]));
    rep.steps = vec![StepStart {
        index: 0,
        at: Duration::from_millis(7250),
        guest_uptime: Duration::from_millis(9100),
        ops: vec!["add cg_0 (2 workers)".into()],
    }];
    rep.phases = Phases {
        total: Duration::from_secs(12),
        body: Some(Duration::from_secs(5)),
        verdict_at: Some(Duration::from_millis(11500)),
        ..Phases::default()
    };
    if let crate::verdict::Reached::Ended(obs) = &mut rep.reached {
        obs.booted_release = Some("7.3.4+deb13-cloud-amd64".into());
    }
    let facts = Facts {
        run: "r1",
        entry: &e,
        preset: Some("llc3"),
        outcome: &outcome,
        report: &rep,
    };
    let rec = run_record(
        &facts,
        HostFacts {
            cpus: 2,
            ..HostFacts::default()
        },
    );
    let r = serde_json::to_value(&rec).expect("serializes");
    assert_eq!(r["schema"], json!(ktstr_record::SCHEMA));
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
    assert_eq!(r["figures"], json!(rec.key_figures()));
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
    // What the guest said it booted, beside the kernel the run resolved.
    assert_eq!(r["booted_release"], "7.3.4+deb13-cloud-amd64");
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
