//! The results store: one record per test run, under
//! `<target dir>/ktstr/runs/<run>/`, for verdict tables (`cargo xtask demo`),
//! `cargo ktstr stats` and A/B comparisons.
//!
//! The record is `ktstr_record::RunRecord` (the `record/` crate, versioned
//! by its `SCHEMA`): the test and its gauntlet variant, the topology, the
//! kernel and scheduler (with hashes of their files), the verdict, every
//! check's figure and threshold, every worker's report, a summary of the
//! monitor, the start of each scenario step, the duration of each phase,
//! facts of the host and the key figures (`ktstr_record::key_figures`,
//! computed once there so every reader agrees). This module builds it from
//! what a run learned and writes it; `cargo ktstr` and the xtask read it
//! through the record crate.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use ktstr_record::{
    CheckRecord, GroupPlacement, HostFacts, KernelRecord, PhaseSeconds, RunRecord, SchedulerRecord,
    StepRecord, Verdict, WorkerRecord,
};
use ktstr_topology::Topology;

use crate::config::HostConfig;
pub use crate::monitor::StepStart;
use crate::outcome::Outcome;
use crate::registry::TestEntry;

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
    /// How the VM started (`None`: it did not); `boot_to_init` is then
    /// restore-to-init for a restored one.
    pub(crate) start: Option<ktstr_record::Start>,
    /// The guest's `CLOCK_REALTIME` minus the host's as init started, seconds.
    pub(crate) clock_skew: Option<f64>,
}

/// Everything one record is made of: the run's report and what names it.
#[derive(Debug)]
pub(crate) struct Facts<'a> {
    pub(crate) run: &'a str,
    pub(crate) entry: &'a TestEntry,
    /// The gauntlet preset the test ran on, if a variant.
    pub(crate) preset: Option<&'a str>,
    /// The judged verdict's kind and text.
    pub(crate) outcome: &'a Outcome,
    /// Everything observed of the run.
    pub(crate) report: &'a crate::verdict::RunReport,
}

/// The name libtest gives `entry` (its path without the crate).
pub fn test_path(entry_name: &str) -> &str {
    entry_name.split_once("::").map_or(entry_name, |(_, p)| p)
}

/// The canonical name of a gauntlet variant: `gauntlet/<test>/<preset>`.
pub fn variant_name(entry_name: &str, preset: &str) -> String {
    format!("gauntlet/{}/{preset}", test_path(entry_name))
}

fn secs(d: Option<Duration>) -> Option<f64> {
    d.map(|d| d.as_secs_f64())
}

/// A guest report as the record's mirror of it: the two share their JSON
/// form (see `ktstr_record`'s `report` module), so the conversion goes
/// through it. It fails only if the two drifted apart, which the tests of
/// this module catch with fully populated reports; a report that fails is
/// left out of the record and said on stderr.
fn mirror<T: serde::Serialize, R: serde::de::DeserializeOwned>(what: &str, v: &T) -> Option<R> {
    match serde_json::to_value(v).and_then(serde_json::from_value) {
        Ok(r) => Some(r),
        Err(e) => {
            let _ = writeln!(
                std::io::stderr(),
                "ktstr: a {what} does not fit the results record and is left out of it: {e}"
            );
            None
        }
    }
}

/// The record of one test run (pure: no I/O but what `facts` holds).
pub(crate) fn run_record(f: &Facts<'_>, host: HostFacts) -> RunRecord {
    let r = f.report;
    let (verdict, text) = match f.outcome {
        Outcome::Pass(d) => (Verdict::Pass, d),
        Outcome::Fail(d) => (Verdict::Fail, d),
        Outcome::Inconclusive(d) => (Verdict::Inconclusive, d),
    };
    let guest = r
        .observed()
        .and_then(|o| o.verdict.as_ref().map(|(v, _)| v));
    let checks: Vec<CheckRecord> = guest
        .map(|v| v.details())
        .unwrap_or_default()
        .iter()
        .filter_map(|d| mirror("check detail", d))
        .collect();
    let workers: Vec<WorkerRecord> = guest
        .map(|v| v.workers())
        .unwrap_or_default()
        .iter()
        .filter_map(|w| mirror("worker report", w))
        .collect();
    // The typed kernel identity (`ktstr_kernel::KernelId`), with the path
    // booted, the `sha256` older readers take, and the label tables show.
    let kernel = r
        .kernel
        .as_ref()
        .map(|k| KernelRecord::new(k.id_hashed(hash_of), k.vmlinux.display().to_string()));
    let scheduler = r
        .scheduler
        .as_ref()
        .map(|(name, bin, args)| SchedulerRecord {
            name: name.clone(),
            binary: bin.display().to_string(),
            sha256: hash_of(bin),
            args: args.clone(),
        });
    // Each cgroup's placement by the declared topology, from the workers'
    // traces (a topology that does not parse has none to give).
    let topology = r.topology.clone().unwrap_or_default();
    let placement: Vec<GroupPlacement> = match (guest, topology.parse::<Topology>()) {
        (Some(v), Ok(topo)) => ktstr_ops::checks::placement(v.workers(), &topo)
            .iter()
            .filter_map(|g| mirror("placement summary", g))
            .collect(),
        _ => Vec::new(),
    };
    let p = &r.phases;
    let figures = ktstr_record::key_figures(&workers, &checks);
    RunRecord {
        schema: ktstr_record::SCHEMA,
        run: f.run.to_string(),
        test: f.entry.name.to_string(),
        variant: f.preset.map(|p| variant_name(f.entry.name, p)),
        preset: f.preset.map(str::to_string),
        topology,
        backend: r.backend.clone().unwrap_or_default(),
        kernel,
        booted_release: r.observed().and_then(|o| o.booted_release.clone()),
        recording: r
            .recording
            .as_ref()
            .map(|d| d.to_string_lossy().into_owned()),
        scheduler,
        verdict,
        expect_err: f.entry.config.expect_err,
        duration_s: f.entry.config.duration_s,
        detail: text.lines().next().unwrap_or("").to_string(),
        failure: (verdict != Verdict::Pass).then(|| text.clone()),
        checks,
        workers,
        placement,
        monitor: r.monitor_summary.clone(),
        // `t`: seconds from the boot, as the monitor's series and
        // `verdict_t`; `guest_s`: the guest's uptime.
        steps: r
            .steps
            .iter()
            .map(|s| StepRecord {
                index: s.index,
                t: s.at.as_secs_f64(),
                guest_s: s.guest_uptime.as_secs_f64(),
                ops: s.ops.clone(),
            })
            .collect(),
        phases_s: PhaseSeconds {
            initramfs: p.initramfs.as_secs_f64(),
            slot_wait: p.slot_wait.as_secs_f64(),
            boot_to_init: secs(p.boot_to_init),
            body: secs(p.body),
            teardown: secs(p.teardown),
            total: p.total.as_secs_f64(),
        },
        start: p.start,
        guest_clock_skew_s: p.clock_skew,
        verdict_t: secs(p.verdict_at),
        dump: r.dump.clone(),
        bpf_progs: r.bpf_progs.clone(),
        host,
        figures,
    }
}

/// The SHA-256 of a file, computed once per process per path.
fn hash_of(path: &Path) -> Option<String> {
    static SEEN: Mutex<Vec<(PathBuf, Option<String>)>> = Mutex::new(Vec::new());
    let mut seen = SEEN.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, h)) = seen.iter().find(|(p, _)| p == path) {
        return h.clone();
    }
    let h = ktstr_kernel::file_sha256(path).ok();
    seen.push((path.to_path_buf(), h.clone()));
    h
}

/// What a record says of the host it ran on.
fn host_facts(host: &HostConfig) -> HostFacts {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_string())
            .ok()
    };
    HostFacts {
        hostname: read("/proc/sys/kernel/hostname"),
        kernel: read("/proc/sys/kernel/osrelease"),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get() as u64),
        host_cpus_for_vms: host.host_cpus as u64,
        hardware_virtualization: read("/proc/cpuinfo")
            .is_some_and(|c| c.contains(" vmx") || c.contains(" svm")),
        unix_time: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    }
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
    let rec = run_record(facts, host_facts(host));
    // Serializing a record cannot fail (string keys, no custom serializers
    // that refuse); should it, the store says so once, as for a full disk.
    let (line, pretty) = match (
        serde_json::to_string(&rec),
        serde_json::to_string_pretty(&rec),
    ) {
        (Ok(l), Ok(p)) => (l, p),
        (Err(e), _) | (_, Err(e)) => {
            warn_once(&format!(
                "the record of {} does not serialize: {e}",
                rec.test
            ));
            return;
        }
    };
    if let Some(path) = &host.results
        && let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
    {
        // One write per line: appends from concurrent tests do not interleave.
        let _ = f.write_all(format!("{line}\n").as_bytes());
    }
    let Some(store) = store_dir(host) else {
        warn_once("no target directory above the test binary; set KTSTR_RESULTS_DIR");
        return;
    };
    let dir = store.join("runs").join(facts.run);
    let file = dir.join(record_file_name(facts.entry.name, facts.preset));
    let tmp = dir.join(format!(".{}.tmp", std::process::id()));
    let written = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&tmp, format!("{pretty}\n")))
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
