//! The results of a run: one JSON line per test, for verdict tables
//! (`cargo xtask demo`) and later comparisons.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use crate::registry::TestEntry;
use crate::verdict::Outcome;

/// Appends one JSON line for `entry` to `path`: `wall` is the test's whole
/// time, `slot_wait` the part it queued for host slots.
pub fn record(
    path: &Path,
    entry: &TestEntry,
    topology: &str,
    outcome: &Outcome,
    wall: Duration,
    slot_wait: Duration,
) {
    let (verdict, detail) = match outcome {
        Outcome::Pass(d) => ("pass", d),
        Outcome::Fail(d) => ("FAIL", d),
        Outcome::Inconclusive(d) => ("inconclusive", d),
    };
    let line = serde_json::json!({
        "test": entry.name,
        "topology": topology,
        "verdict": verdict,
        "expect_err": entry.config.expect_err,
        "wall_s": wall.as_secs_f64(),
        "slot_wait_s": slot_wait.as_secs_f64(),
        "detail": detail.lines().next().unwrap_or(""),
        "details": detail,
    });
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        // One write per line: appends from concurrent tests do not interleave.
        let _ = f.write_all(format!("{line}\n").as_bytes());
    }
}
