//! The results store: one JSON record per test run, under
//! `<target dir>/ktstr/runs/<run>/`, for verdict tables (`cargo xtask demo`),
//! `cargo ktstr stats` and A/B comparisons.
//!
//! A record holds the test and its gauntlet variant, the topology, the
//! kernel and scheduler (with hashes of their files), the verdict, every
//! check's figure and threshold, every worker's report, a summary of the
//! monitor, the start of each scenario step, the duration of each phase and
//! facts of the host. The key
//! figures ([`key_figures`]) are computed once here so every reader agrees.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use serde_json::{Map, Value, json};

use ktstr_ops::assert::AssertResult;

use crate::config::HostConfig;
use crate::registry::TestEntry;
use crate::verdict::Outcome;

/// The version of the record layout; readers skip records of another.
pub const SCHEMA: u64 = 1;

/// The durations of a run's phases.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Phases {
    pub(crate) initramfs: Duration,
    pub(crate) slot_wait: Duration,
    pub(crate) boot_to_init: Option<Duration>,
    pub(crate) body: Option<Duration>,
    pub(crate) teardown: Option<Duration>,
    pub(crate) total: Duration,
    /// When the host read the verdict, from the boot (the monitor samples'
    /// clock, where the body's own duration is the guest's).
    pub(crate) verdict_at: Option<Duration>,
    /// How the VM started: `cold` (booted) or `restored` (from a snapshot);
    /// `boot_to_init` is then restore-to-init.
    pub(crate) start: &'static str,
    /// The guest's `CLOCK_REALTIME` minus the host's as init started, seconds.
    pub(crate) clock_skew: Option<f64>,
}

/// The start of one scenario step (`execute_steps`), as the host read it
/// from the channel: in the record's `steps` and [`VmResult::steps`](crate::monitor::VmResult::steps).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct StepStart {
    /// The step's index, from 0.
    pub index: u32,
    /// When the host read it, from the VM's boot: the clock of the monitor's
    /// samples and snapshots (`Sample::elapsed`), within one poll (20 ms)
    /// of the guest's sending it.
    pub at: Duration,
    /// The guest's uptime at the step's start (the guest's clock, which
    /// under instruction counting runs at its own pace).
    pub guest_uptime: Duration,
    /// A short label of each op the step applies (`add cg_0 (2 workers)`).
    pub ops: Vec<String>,
}

/// Everything one record is made of.
#[derive(Debug)]
pub(crate) struct Facts<'a> {
    pub(crate) run: &'a str,
    pub(crate) entry: &'a TestEntry,
    /// The gauntlet preset the test ran on, if a variant.
    pub(crate) preset: Option<&'a str>,
    pub(crate) topology: String,
    pub(crate) backend: String,
    pub(crate) kernel: Option<&'a ktstr_kernel::Kernel>,
    /// Name, host binary and arguments of the booted scheduler.
    pub(crate) scheduler: Option<&'a (String, PathBuf, Vec<String>)>,
    pub(crate) outcome: &'a Outcome,
    /// The guest's own verdict, when it sent one.
    pub(crate) verdict: Option<&'a AssertResult>,
    pub(crate) monitor: Value,
    /// The scenario's steps as they started (none: not a step scenario).
    pub(crate) steps: &'a [StepStart],
    pub(crate) phases: Phases,
}

/// The name libtest gives `entry` (its path without the crate).
pub fn test_path(entry_name: &str) -> &str {
    entry_name.split_once("::").map_or(entry_name, |(_, p)| p)
}

/// The canonical name of a gauntlet variant: `gauntlet/<test>/<preset>`.
pub fn variant_name(entry_name: &str, preset: &str) -> String {
    format!("gauntlet/{}/{preset}", test_path(entry_name))
}

fn secs(d: Option<Duration>) -> Value {
    d.map_or(Value::Null, |d| json!(d.as_secs_f64()))
}

/// A serialized `Duration` (`{"secs": .., "nanos": ..}`) in seconds.
fn dur(v: &Value) -> Option<f64> {
    Some(v["secs"].as_f64()? + v["nanos"].as_f64().unwrap_or(0.0) * 1e-9)
}

fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// The key figures of a record, by name, computed from its `workers` and
/// `checks` (so readers of older records get the same set):
/// `cpu_share_pct` (mean share of its window each worker spent on a CPU:
/// the work a CPU-bound worker was let do, independent of how fast the host
/// emulates), `work_per_worker_per_s` (mean work units per second per
/// worker; under software emulation it follows the host's load),
/// `worst_gap_ms` (longest gap any worker saw in its own loop),
/// `wake_p99_us` (worst p99 wake latency), `run_delay_pct` (mean share of
/// the window spent runnable but waiting) and `fairness_spread_pct` (the
/// fairness check's figure), each where the record has what it takes.
pub fn key_figures(record: &Value) -> Map<String, Value> {
    let mut m = Map::new();
    let workers: Vec<&Value> = record["workers"].as_array().into_iter().flatten().collect();
    let timed: Vec<(&Value, f64)> = workers
        .iter()
        .filter_map(|w| dur(&w["wall"]).filter(|s| *s > 0.0).map(|s| (*w, s)))
        .collect();
    let with_schedstat: Vec<(&Value, f64)> = timed
        .iter()
        .copied()
        .filter(|(w, _)| w["schedstat"] == true)
        .collect();
    let share: Vec<f64> = with_schedstat
        .iter()
        .filter_map(|(w, wall)| Some(100.0 * dur(&w["cpu_time"])? / wall))
        .collect();
    if let Some(v) = mean(&share) {
        m.insert("cpu_share_pct".into(), json!(v));
    }
    let rates: Vec<f64> = timed
        .iter()
        .filter_map(|(w, wall)| Some(w["progress"].as_f64()? / wall))
        .collect();
    if let Some(v) = mean(&rates) {
        m.insert("work_per_worker_per_s".into(), json!(v));
    }
    let gap = workers
        .iter()
        .filter_map(|w| dur(&w["max_gap"]))
        .fold(None, |a: Option<f64>, g| Some(a.map_or(g, |a| a.max(g))));
    if let Some(g) = gap {
        m.insert("worst_gap_ms".into(), json!(g * 1e3));
    }
    let p99 = workers
        .iter()
        .filter_map(|w| dur(&w["wake_latency"]["p99"]))
        .fold(None, |a: Option<f64>, p| Some(a.map_or(p, |a| a.max(p))));
    if let Some(p) = p99 {
        m.insert("wake_p99_us".into(), json!(p * 1e6));
    }
    let delays: Vec<f64> = with_schedstat
        .iter()
        .filter_map(|(w, wall)| Some(100.0 * dur(&w["run_delay"])? / wall))
        .collect();
    if let Some(v) = mean(&delays) {
        m.insert("run_delay_pct".into(), json!(v));
    }
    if let Some(f) = record["checks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|d| d["check"] == ktstr_ops::checks::FAIRNESS)
        .find_map(|d| d["figure"]["value"].as_f64())
    {
        m.insert("fairness_spread_pct".into(), json!(f));
    }
    m
}

/// The record of one test run (pure: no I/O but what `facts` holds).
pub(crate) fn record_json(f: &Facts<'_>, host_facts: Value) -> Value {
    let (verdict, text) = match f.outcome {
        Outcome::Pass(d) => ("pass", d),
        Outcome::Fail(d) => ("fail", d),
        Outcome::Inconclusive(d) => ("inconclusive", d),
    };
    let checks: Vec<Value> = f
        .verdict
        .map(|v| v.details())
        .unwrap_or_default()
        .iter()
        .map(|d| serde_json::to_value(d).unwrap_or(Value::Null))
        .collect();
    let workers: Vec<Value> = f
        .verdict
        .map(|v| v.workers())
        .unwrap_or_default()
        .iter()
        .map(|w| serde_json::to_value(w).unwrap_or(Value::Null))
        .collect();
    // The typed kernel identity (`ktstr_kernel::KernelId`), with the path
    // booted, the `sha256` older readers take, and the label tables show.
    let kernel = f.kernel.map_or(Value::Null, |k| {
        let id = k.id_hashed(|p| hash_of(p).as_str().map(str::to_string));
        let mut v = serde_json::to_value(&id).unwrap_or(Value::Null);
        v["path"] = json!(k.vmlinux.display().to_string());
        v["sha256"] = json!(id.vmlinux_sha256);
        v["label"] = json!(id.label());
        v
    });
    let scheduler = f.scheduler.map_or(Value::Null, |(name, bin, args)| {
        json!({
            "name": name,
            "binary": bin.display().to_string(),
            "sha256": hash_of(bin),
            "args": args,
        })
    });
    let p = &f.phases;
    let mut rec = json!({
        "schema": SCHEMA,
        "run": f.run,
        "test": f.entry.name,
        "variant": f.preset.map(|p| variant_name(f.entry.name, p)),
        "preset": f.preset,
        "topology": f.topology,
        "backend": f.backend,
        "kernel": kernel,
        "scheduler": scheduler,
        "verdict": verdict,
        "expect_err": f.entry.config.expect_err,
        "duration_s": f.entry.config.duration_s,
        "detail": text.lines().next().unwrap_or(""),
        "failure": if verdict == "pass" { Value::Null } else { json!(text) },
        "checks": checks,
        "workers": workers,
        "monitor": f.monitor,
        // `t`: seconds from the boot, as the monitor's series and
        // `verdict_t`; `guest_s`: the guest's uptime.
        "steps": f.steps.iter().map(|s| json!({
            "index": s.index,
            "t": s.at.as_secs_f64(),
            "guest_s": s.guest_uptime.as_secs_f64(),
            "ops": s.ops,
        })).collect::<Vec<_>>(),
        "phases_s": {
            "initramfs": p.initramfs.as_secs_f64(),
            "slot_wait": p.slot_wait.as_secs_f64(),
            "boot_to_init": secs(p.boot_to_init),
            "body": secs(p.body),
            "teardown": secs(p.teardown),
            "total": p.total.as_secs_f64(),
        },
        "start": if p.start.is_empty() { Value::Null } else { json!(p.start) },
        "guest_clock_skew_s": p.clock_skew,
        "verdict_t": secs(p.verdict_at),
        "host": host_facts,
    });
    let figures = key_figures(&rec);
    rec["figures"] = Value::Object(figures);
    rec
}

/// The SHA-256 of a file, computed once per process per path.
fn hash_of(path: &Path) -> Value {
    static SEEN: Mutex<Vec<(PathBuf, Option<String>)>> = Mutex::new(Vec::new());
    let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, h)) = seen.iter().find(|(p, _)| p == path) {
        return json!(h);
    }
    let h = ktstr_kernel::file_sha256(path).ok();
    seen.push((path.to_path_buf(), h.clone()));
    json!(h)
}

/// What a record says of the host it ran on.
fn host_facts(host: &HostConfig) -> Value {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_string())
            .ok()
    };
    json!({
        "hostname": read("/proc/sys/kernel/hostname"),
        "kernel": read("/proc/sys/kernel/osrelease"),
        "cpus": std::thread::available_parallelism().map_or(1, |n| n.get()),
        "host_cpus_for_vms": host.host_cpus,
        "hardware_virtualization": read("/proc/cpuinfo")
            .is_some_and(|c| c.contains(" vmx") || c.contains(" svm")),
        "unix_time": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    })
}

/// The target directory the running test binary was built in: the first
/// ancestor holding cargo's `CACHEDIR.TAG`.
fn target_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    exe.ancestors()
        .skip(1)
        .find(|d| d.join("CACHEDIR.TAG").is_file())
        .map(Path::to_path_buf)
}

/// The results store of this process: `KTSTR_RESULTS_DIR`, else
/// `<target dir>/ktstr`.
pub fn store_dir(host: &HostConfig) -> Option<PathBuf> {
    host.results_dir
        .clone()
        .or_else(|| target_dir().map(|t| t.join("ktstr")))
}

/// Days since 1970-01-01 as (year, month, day) in the proleptic Gregorian
/// calendar (the civil-from-days algorithm of H. Hinnant's date library).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// (year, month, day, hour, minute, second) of a UTC time.
fn utc(unix_secs: u64) -> (i64, u32, u32, u64, u64, u64) {
    let (y, m, d) = civil((unix_secs / 86_400) as i64);
    let s = unix_secs % 86_400;
    (y, m, d, s / 3600, s / 60 % 60, s % 60)
}

/// A run id from a UTC time and a process id: `YYYYMMDD-HHMMSS-<pid>`, so
/// runs sort by time.
pub fn run_id_at(unix_secs: u64, pid: u32) -> String {
    let (y, m, d, hh, mm, ss) = utc(unix_secs);
    format!("{y:04}{m:02}{d:02}-{hh:02}{mm:02}{ss:02}-{pid}")
}

/// A UTC time in ISO 8601 without a zone, `YYYY-MM-DDTHH:MM:SS` (the form
/// JUnit XML's `timestamp` takes).
pub fn utc_datetime(unix_secs: u64) -> String {
    let (y, m, d, hh, mm, ss) = utc(unix_secs);
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}")
}

/// The start time (Unix seconds) of process `pid`, from `/proc`.
fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command's closing parenthesis; starttime is field 22
    // of proc(5), the 20th after it, in clock ticks since boot.
    let rest = &stat[stat.rfind(')')? + 1..];
    let ticks: u64 = rest.split_whitespace().nth(19)?.parse().ok()?;
    let btime: u64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    // USER_HZ, the unit of starttime, is 100 on every Linux ABI ktstr runs on.
    Some(btime + ticks / 100)
}

/// The run of this process: `KTSTR_RUN`, else named after the process that
/// started the tests (cargo test, nextest), which every test process of one
/// invocation shares.
pub fn run_id(host: &HostConfig) -> String {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        if let Some(r) = &host.run_id {
            return r.clone();
        }
        let parent = std::os::unix::process::parent_id();
        let (pid, start) = match process_start(parent) {
            Some(t) => (parent, t),
            None => (
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
            ),
        };
        run_id_at(start, pid)
    })
    .clone()
}

/// The file name of a record: the test's path and preset, made safe.
pub fn record_file_name(entry_name: &str, preset: Option<&str>) -> String {
    let mut name: String = test_path(entry_name)
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '.'
            }
        })
        .collect();
    if let Some(p) = preset {
        name.push('@');
        name.push_str(p);
    }
    name.push_str(".json");
    name
}

/// Writes the record of `facts` to the store (and appends it as one line
/// to `KTSTR_RESULTS` when set). A store that cannot be written is said on
/// stderr once; it never fails the test.
pub(crate) fn record(host: &HostConfig, facts: &Facts<'_>) {
    let rec = record_json(facts, host_facts(host));
    if let Some(path) = &host.results
        && let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
    {
        // One write per line: appends from concurrent tests do not interleave.
        let _ = f.write_all(format!("{rec}\n").as_bytes());
    }
    let Some(store) = store_dir(host) else {
        warn_once("no target directory above the test binary; set KTSTR_RESULTS_DIR");
        return;
    };
    let dir = store.join("runs").join(facts.run);
    let file = dir.join(record_file_name(facts.entry.name, facts.preset));
    let tmp = dir.join(format!(".{}.tmp", std::process::id()));
    let written = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&tmp, format!("{rec:#}\n")))
        .and_then(|()| std::fs::rename(&tmp, &file));
    if let Err(e) = written {
        warn_once(&format!("{}: {e}", file.display()));
    }
}

fn warn_once(why: &str) {
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        let _ = std::io::stderr()
            .write_all(format!("ktstr: results store not written: {why}\n").as_bytes());
    }
}

#[cfg(test)]
#[path = "results_tests.rs"]
mod tests;
