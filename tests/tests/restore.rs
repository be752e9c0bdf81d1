//! Boot once, restore many, end to end through `#[ktstr_test]`: tests whose
//! VM starts from a snapshot of the guest booted once to the restore agent
//! must not be able to tell, except by timing (docs/src/boot-once-restore-many.md).
//! Each driver below forces the restore path whatever `KTSTR_RESTORE` says.

use ktstr::prelude::*;
use ktstr::test_support::{Outcome, RunReport};
#[path = "common/bench.rs"]
mod bench;
mod common;
use common::run_test_started;

/// 32 bytes of the guest's `/dev/urandom`, as a note.
#[ktstr_test(harness_fixture = true, duration_s = 1)]
fn fixture_urandom(_ctx: &Ctx) -> Result<AssertResult> {
    use std::io::Read;
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(AssertResult::pass().note("urandom", format!("urandom={hex}")))
}

/// Fails when an earlier test's file is there; leaves its own behind.
#[ktstr_test(harness_fixture = true, duration_s = 1)]
fn fixture_leaves_a_file(_ctx: &Ctx) -> Result<AssertResult> {
    for p in ["/tmp/ktstr-left-by-a-test", "/ktstr-left-by-a-test"] {
        if std::path::Path::new(p).exists() {
            return Ok(AssertResult::fail_msg(format!(
                "{p} is there: an earlier test's file reached this one"
            )));
        }
        std::fs::write(p, "left behind")?;
    }
    Ok(AssertResult::pass())
}

/// The kernel log words of a guest in trouble: RCU stalls, soft and hard
/// lockups, the sched_ext watchdog, hung tasks.
const TROUBLE: [&str; 7] = [
    "self-detected stall",
    "rcu: INFO: rcu_",
    "BUG: soft lockup",
    "hard LOCKUP",
    "runnable task stall",
    "watchdog failed",
    "blocked for more than",
];

/// Fails when the kernel log holds a [`TROUBLE`] line.
#[ktstr_test(harness_fixture = true, duration_s = 1)]
fn fixture_quiet_kernel_log(_ctx: &Ctx) -> Result<AssertResult> {
    // SAFETY: klogctl with a null buffer and size 0 returns the log's size.
    let size = unsafe { libc::klogctl(10, std::ptr::null_mut(), 0) };
    let mut buf = vec![0u8; size.max(1 << 16) as usize];
    // SAFETY: buf is valid for buf.len() bytes; 3 is SYSLOG_ACTION_READ_ALL.
    let n = unsafe { libc::klogctl(3, buf.as_mut_ptr().cast(), buf.len() as i32) };
    if n < 0 {
        anyhow::bail!("klogctl: {}", std::io::Error::last_os_error());
    }
    let log = String::from_utf8_lossy(&buf[..n as usize]);
    let bad: Vec<&str> = log
        .lines()
        .filter(|l| TROUBLE.iter().any(|t| l.contains(t)))
        .collect();
    if bad.is_empty() {
        Ok(AssertResult::pass())
    } else {
        Ok(AssertResult::fail_msg(format!(
            "the kernel log has trouble:\n{}",
            bad.join("\n")
        )))
    }
}

fn restored(name: &str) -> (String, RunReport) {
    let (outcome, info) = run_test_started(&format!("restore::{name}"), true);
    assert_eq!(info.start(), Some("restored"), "{name}: {outcome:?}");
    match outcome {
        Outcome::Pass(text) => (text, info),
        other => panic!("{name} must pass restored, got {other:?}"),
    }
}

fn urandom(text: &str) -> String {
    text.split_whitespace()
        .find_map(|w| w.strip_prefix("urandom="))
        .unwrap_or_else(|| panic!("no urandom= in {text:?}"))
        .to_string()
}

#[test]
fn restored_tests_draw_different_random_bytes() {
    let (a, _) = restored("fixture_urandom");
    let (b, _) = restored("fixture_urandom");
    let (a, b) = (urandom(&a), urandom(&b));
    assert_eq!(a.len(), 64);
    assert_ne!(a, b, "two restores of one snapshot read the same bytes");
}

#[ignore = "full: the restored clock's skew grows with the host's load; not yet run often under load; run with cargo xtask test --full"]
#[test]
fn a_restored_guest_keeps_the_hosts_time() {
    let (_, info) = restored("fixture_urandom");
    let skew = info
        .clock_skew_s()
        .expect("the guest's init stamps its clock");
    assert!(
        skew.abs() < 1.0,
        "the restored guest's CLOCK_REALTIME is {skew:.3} s from the host's"
    );
}

#[test]
fn a_file_written_by_one_restored_test_is_absent_in_the_next() {
    for _ in 0..2 {
        restored("fixture_leaves_a_file");
    }
}

/// 50 restores in a row, each guest's kernel log free of stalls, lockups
/// and watchdog complaints. Long: `cargo xtask test --full`.
#[ignore = "full: 50 restored tests in a row, about a minute; run with cargo xtask test --full"]
#[test]
fn fifty_restores_in_a_row_stay_quiet() {
    let t0 = std::time::Instant::now();
    for i in 0..50 {
        let (outcome, info) = run_test_started("restore::fixture_quiet_kernel_log", true);
        assert_eq!(info.start(), Some("restored"), "restore {i}: {outcome:?}");
        assert!(
            matches!(outcome, Outcome::Pass(_)),
            "restore {i}: {outcome:?}"
        );
    }
    eprintln!("50 restores in {:.1}s", t0.elapsed().as_secs_f64());
}

#[ktstr_test(
    harness_fixture = true,
    llcs = 1,
    cores = 2,
    threads = 1,
    duration_s = 1
)]
fn fixture_trivial_1n1l2c1t(_ctx: &Ctx) -> Result<AssertResult> {
    Ok(AssertResult::pass())
}

#[ktstr_test(
    harness_fixture = true,
    llcs = 2,
    cores = 2,
    threads = 2,
    duration_s = 1
)]
fn fixture_trivial_1n2l2c2t(_ctx: &Ctx) -> Result<AssertResult> {
    Ok(AssertResult::pass())
}

/// The per-test overhead (wall minus body minus the wait for host slots) of
/// a trivial test, booted cold against restored, on two shapes, runs
/// alternating; medians and ratio. `cargo xtask bench restore` runs it
/// (`KTSTR_BENCH_RUNS`, default 3, set by its `--runs`).
#[ignore = "full: a benchmark of cold boots and restores (cargo xtask bench restore); run with cargo xtask test --full"]
#[test]
fn restore_vs_cold_test_overhead_bench() {
    let runs = bench::runs(3);
    let overhead = |name: &str, restore: bool| -> f64 {
        let (outcome, info) = run_test_started(&format!("restore::{name}"), restore);
        assert!(matches!(outcome, Outcome::Pass(_)), "{name}: {outcome:?}");
        let want = if restore { "restored" } else { "cold" };
        assert_eq!(info.start(), Some(want), "{name}");
        info.overhead()
            .expect("a finished run has an overhead")
            .as_secs_f64()
    };
    let mut table = Vec::new();
    for topo in ["1n1l2c1t", "1n2l2c2t"] {
        let name = format!("fixture_trivial_{topo}");
        // The first restore makes the snapshot when there is none.
        let first = overhead(&name, true);
        let (mut cold, mut restored) = (Vec::new(), Vec::new());
        for _ in 0..runs {
            cold.push(overhead(&name, false));
            restored.push(overhead(&name, true));
        }
        eprintln!(
            "{topo}: first restore (snapshot made if missing) {first:.2}s; cold {cold:.2?}; \
             restored {restored:.2?}"
        );
        table.push((topo, bench::median(cold), bench::median(restored)));
    }
    eprintln!("per-test overhead (wall - body - slot wait), medians of {runs}:");
    eprintln!("shape       cold boot   restored   ratio");
    for (topo, cold, restored) in table {
        eprintln!(
            "{topo}  {cold:>9.2}s  {restored:>8.2}s  {:>5.1}x",
            cold / restored.max(1e-9)
        );
    }
}

/// A test of its own memory size, so its snapshot is its own.
#[ktstr_test(harness_fixture = true, memory_mib = 448, duration_s = 1)]
fn fixture_own_snapshot(_ctx: &Ctx) -> Result<AssertResult> {
    Ok(AssertResult::pass())
}

/// The snapshot directories of [`fixture_own_snapshot`]'s key (node memory 448 MiB).
fn own_snapshots() -> Vec<std::path::PathBuf> {
    let dir = ktstr::config::HostConfig::global()
        .expect("host configuration")
        .snapshot_dir();
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    rd.flatten()
        .map(|e| e.path())
        .filter(|p| {
            std::fs::read_to_string(p.join("manifest.json")).is_ok_and(|m| {
                let m: serde_json::Value = serde_json::from_str(&m).unwrap_or_default();
                m["topology"]["node_memory_mib"] == serde_json::json!([448])
            })
        })
        .collect()
}

/// An image that fails to restore is deleted and the test boots cold (and
/// passes); the next test makes a new snapshot. `--full`: three VMs, new.
#[ignore = "full: three VMs, new; run with cargo xtask test --full"]
#[test]
fn a_damaged_snapshot_is_deleted_and_the_test_boots_cold() {
    let name = "restore::fixture_own_snapshot";
    let (outcome, info) = run_test_started(name, true);
    assert_eq!(info.start(), Some("restored"), "{outcome:?}");
    let entries = own_snapshots();
    assert!(
        !entries.is_empty(),
        "the restored test's snapshot is in the cache"
    );
    for e in &entries {
        std::fs::write(e.join("image"), b"not a migration stream").expect("damage the image");
    }
    let (outcome, info) = run_test_started(name, true);
    assert!(matches!(outcome, Outcome::Pass(_)), "{outcome:?}");
    assert_eq!(
        info.start(),
        Some("cold"),
        "a damaged image must not restore"
    );
    assert!(
        own_snapshots().is_empty(),
        "the damaged snapshot is deleted: {:?}",
        own_snapshots()
    );
    let (outcome, info) = run_test_started(name, true);
    assert_eq!(info.start(), Some("restored"), "made anew: {outcome:?}");
}
