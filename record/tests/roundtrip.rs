//! Records written by the facade's `record_json` of before this crate,
//! captured from real runs (see `fixtures/README.md`), read into
//! `RunRecord`s and written back.

use std::path::{Path, PathBuf};

use ktstr_record::{KernelSource, RunRecord, Start, Verdict};
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The fixture's one record, as JSON and as read.
fn read(name: &str) -> (Value, RunRecord) {
    let path = fixture(name);
    let text = std::fs::read_to_string(&path).expect("the fixture is there");
    let json: Value = serde_json::from_str(&text).expect("JSON");
    let mut records = ktstr_record::read_lines(&path).expect("readable");
    assert_eq!(records.len(), 1, "{name}: one record");
    let record = records.remove(0).unwrap_or_else(|e| panic!("{e}"));
    (json, record)
}

#[test]
fn real_records_read_and_write_back_to_the_same_json() {
    for name in [
        "steady_one_llc_two_cores.jsonl",
        "monitor_reads_a_global.jsonl",
    ] {
        let (json, record) = read(name);
        let back = serde_json::to_value(&record).expect("serializes");
        assert_eq!(back, json, "{name}");
        // The figures written are the ones the record crate computes.
        assert_eq!(record.key_figures(), record.figures, "{name}");
        assert!(!record.figures.is_empty(), "{name}");
        assert_eq!(record.verdict, Verdict::Pass);
        assert_eq!(record.start, Some(Start::Restored));
    }
}

#[test]
fn what_the_readers_take_is_typed() {
    let (_, steady) = read("steady_one_llc_two_cores.jsonl");
    assert_eq!(steady.name(), "examples::steady_one_llc_two_cores");
    assert_eq!(steady.kernel_label(), Some("7.3.4"));
    assert_eq!(steady.kernel_release(), Some("7.3.4+deb13-cloud-amd64"));
    assert!(steady.scheduler.is_none() && steady.steps.is_empty());
    assert_eq!(steady.workers.len(), 4);
    let (_, monitored) = read("monitor_reads_a_global.jsonl");
    let sched = monitored.scheduler.as_ref().expect("a scheduler");
    assert_eq!(sched.name, "monitored");
    assert_eq!(monitored.steps[0].ops, ["add wakers (2 workers)"]);
    let monitor = monitored.monitor.as_ref().expect("monitored");
    assert!(monitor.series.len() > 100);
    assert!(monitored.workers.iter().all(|w| w.wake_latency.is_some()));
    assert!(monitored.figures.contains_key("wake_p99_us"));
}

#[test]
fn a_record_from_before_the_kernel_identity_still_loads() {
    let path = fixture("legacy_2026-11-27.json");
    let r = ktstr_record::read_file(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.verdict, Verdict::Fail);
    assert_eq!(r.start, None);
    assert!(r.monitor.as_ref().is_some_and(|m| m.kernel.is_none()));
    let k = r.kernel.as_ref().expect("a kernel");
    assert_eq!(k.label, "7.3.4");
    assert_eq!(k.id.vmlinux_sha256, k.sha256);
    assert_eq!(
        k.id.source,
        KernelSource::Path {
            path: "/root/.cache/ktstr/kernels/7.3.4+deb13-cloud-amd64/vmlinux".into()
        }
    );
    assert_eq!(r.key_figures(), r.figures);
}
