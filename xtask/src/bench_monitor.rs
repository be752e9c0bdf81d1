//! `cargo xtask bench monitor`: what the host-side monitor costs the guest.
//!
//! Paired VM runs of one workload on 1n2l2c2t (one spinner pinned to each of
//! the 8 vCPUs, counting loop iterations for a fixed time), with periodic
//! sampling at 10 Hz and without, alternating so drifting host load hits both
//! alike. Reports the guest's slowdown (host wall time of the body, median and spread of the
//! pairs), the median pause of a snapshot and the median cost of one full
//! sample. The slowdown is the body's host wall time (the runner's figure),
//! since under fixed-rate instruction counting the guest does the same work
//! in its 6 s either way. Each run is this binary run again (`bench monitor-once`) with
//! `KTSTR_MONITOR_HZ` set, because the host configuration is read once per
//! process; the VM boots this binary as its init.

use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argh::FromArgs;
use ktstr::prelude::*;

use crate::error::CommandError;

/// What the monitor benchmark failed with.
#[derive(Debug, thiserror::Error)]
pub enum MonitorBenchError {
    /// The bench VM passed and its note has no work figure.
    #[error("no work figure in: {note}")]
    NoWork {
        /// The test's note (the guest's words).
        note: String,
    },
    /// The bench VM did not pass.
    #[error("the bench VM did not pass: {outcome:?}")]
    NotPassed {
        /// Its outcome.
        outcome: ktstr::test_support::Outcome,
    },
    /// This binary's own path is unknown (to run it again).
    #[error("the path of this xtask binary")]
    CurrentExe(#[source] std::io::Error),
    #[error(transparent)]
    Command(#[from] CommandError),
    /// A run printed no result line.
    #[error("run at {hz} Hz failed: {stdout}{stderr}")]
    Run {
        /// The sampling rate of the run.
        hz: u32,
        /// What it printed.
        stdout: String,
        /// What it said on stderr.
        stderr: String,
    },
}

/// How long the spinners count.
const SPIN: Duration = Duration::from_secs(6);
/// Snapshots per run (each pauses every vCPU).
const SNAPSHOTS: u32 = 5;

/// Paired runs with and without periodic sampling.
#[derive(FromArgs)]
#[argh(subcommand, name = "monitor")]
pub struct MonitorBench {
    /// pairs of timed runs (after one warm-up run)
    #[argh(option, default = "5")]
    pairs: usize,
}

/// One run in this process (used by `bench monitor`).
#[derive(FromArgs)]
#[argh(subcommand, name = "monitor-once")]
pub struct MonitorOnce {}

/// What the host's `post_vm` saw, for the run's report line.
static SEEN: Mutex<Option<String>> = Mutex::new(None);

fn record(result: &VmResult) -> anyhow::Result<()> {
    let stats = result.snapshot_bridge.stats();
    let ms = |d: Option<Duration>| d.map_or(-1.0, |d| d.as_secs_f64() * 1000.0);
    let cost = result.monitor.read_cost();
    let line = format!(
        "pause_ms={:.3} snapshots={} sample_ms={:.3} sample_max_ms={:.3} samples={} sample_cpu_ms={:.3}",
        ms(stats.median_pause()),
        stats.pauses.len(),
        ms(cost.map(|c| c.0)),
        ms(cost.map(|c| c.1)),
        result.monitor.samples().len(),
        ms(result.monitor.cpu_per_sample()),
    );
    *SEEN.lock().unwrap_or_else(|p| p.into_inner()) = Some(line);
    Ok(())
}

#[ktstr_test(
    harness_fixture = true,
    llcs = 2,
    cores = 2,
    threads = 2,
    memory_mib = 1024,
    duration_s = 6,
    num_snapshots = 5,
    post_vm = record,
    // What sampling costs, not what the checks judge (the runs without
    // sampling could not judge them).
    monitor = MonitorChecks::OFF,
)]
fn monitor_bench_spin(ctx: &Ctx) -> Result<AssertResult> {
    let n = ctx.topology.nr_cpus();
    let start = Instant::now() + Duration::from_millis(200);
    let threads: Vec<_> = (0..n)
        .map(|cpu| {
            std::thread::spawn(move || {
                // SAFETY: a zeroed cpu_set_t is valid; CPU_SET stays in bounds
                // for cpu < CPU_SETSIZE; sched_setaffinity reads the set.
                unsafe {
                    let mut set: libc::cpu_set_t = std::mem::zeroed();
                    libc::CPU_SET(cpu as usize, &mut set);
                    libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
                }
                while Instant::now() < start {}
                let mut iters = 0u64;
                while start.elapsed() < SPIN {
                    for _ in 0..1000 {
                        iters = std::hint::black_box(iters + 1);
                    }
                }
                iters
            })
        })
        .collect();
    let work: u64 = threads.into_iter().map(|t| t.join().unwrap_or(0)).sum();
    Ok(AssertResult::pass().note("bench", format!("work={work}")))
}

/// One run: boots the VM, prints one line for the parent to parse.
pub fn once(_: &MonitorOnce) -> Result<(), MonitorBenchError> {
    let name = format!("{}::monitor_bench_spin", module_path!());
    match ktstr::test_support::run_test(&name) {
        ktstr::test_support::Outcome::Pass(text) => {
            let work = text
                .split("work=")
                .nth(1)
                .and_then(|w| w.split_whitespace().next())
                .ok_or_else(|| MonitorBenchError::NoWork { note: text.clone() })?;
            let seen = SEEN
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
                .unwrap_or_default();
            println!("bench-run work={work} {seen}");
            Ok(())
        }
        outcome => Err(MonitorBenchError::NotPassed { outcome }),
    }
}

fn field(line: &str, key: &str) -> Option<f64> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
}

fn run_once(hz: u32) -> Result<String, MonitorBenchError> {
    let exe = std::env::current_exe().map_err(MonitorBenchError::CurrentExe)?;
    let out = Command::new(&exe)
        .args(["bench", "monitor-once"])
        .env("KTSTR_MONITOR_HZ", hz.to_string())
        .output()
        .map_err(|source| CommandError::Spawn {
            command: format!("{} bench monitor-once", exe.display()),
            source,
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    // The runner's line on stderr: "... body 6.53s, ..." (host wall time).
    let err = String::from_utf8_lossy(&out.stderr);
    let body = err
        .split(", body ")
        .nth(1)
        .and_then(|b| b.split('s').next())
        .unwrap_or("nan")
        .to_string();
    text.lines()
        .find(|l| l.starts_with("bench-run "))
        .map(|l| format!("{l} body_s={body}"))
        .ok_or_else(|| MonitorBenchError::Run {
            hz,
            stdout: text.to_string(),
            stderr: err.to_string(),
        })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// A distribution-free 95% confidence interval of the median (sign test:
/// the order statistics k and n+1-k with P(Binomial(n, 1/2) < k) <= 2.5%).
fn median_ci(v: &[f64]) -> (f64, f64) {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    // P(X <= j) for X ~ Binomial(n, 1/2), by the running sum of C(n, j) / 2^n.
    let mut k = 0;
    let (mut c, mut cum) = (1.0f64, 0.0f64);
    for j in 0..n {
        cum += c / 2f64.powi(n as i32);
        if cum > 0.025 {
            break;
        }
        k = j + 1;
        c = c * (n - j) as f64 / (j + 1) as f64;
    }
    if k == 0 {
        return (f64::NEG_INFINITY, f64::INFINITY);
    }
    (v[k - 1], v[n - k])
}

/// The paired benchmark.
pub fn run(b: &MonitorBench) -> Result<(), MonitorBenchError> {
    println!(
        "bench monitor: 1n2l2c2t, 8 pinned spinners for {SPIN:?}, {SNAPSHOTS} snapshots per \
         run, {} pairs (10 Hz vs off), after one warm-up",
        b.pairs
    );
    run_once(10)?;
    let (mut slowdown, mut pauses, mut costs, mut cpu) = (vec![], vec![], vec![], vec![]);
    for i in 0..b.pairs {
        // Alternate which run of the pair goes first, so a host load that
        // drifts during a pair favours neither.
        let (on, off) = if i % 2 == 0 {
            let on = run_once(10)?;
            (on, run_once(0)?)
        } else {
            let off = run_once(0)?;
            (run_once(10)?, off)
        };
        let (w_on, w_off) = (
            field(&on, "work").unwrap_or(f64::NAN),
            field(&off, "work").unwrap_or(f64::NAN),
        );
        // Under fixed-rate instruction counting the work done in 6 s of
        // guest time is the same either way: what sampling can cost is host
        // wall time to run it (the body's, as the runner measured it).
        let (b_on, b_off) = (
            field(&on, "body_s").unwrap_or(f64::NAN),
            field(&off, "body_s").unwrap_or(f64::NAN),
        );
        let s = (b_on - b_off) / b_off * 100.0;
        slowdown.push(s);
        pauses.extend(field(&on, "pause_ms"));
        pauses.extend(field(&off, "pause_ms"));
        costs.extend(field(&on, "sample_ms"));
        cpu.extend(field(&on, "sample_cpu_ms"));
        println!(
            "bench monitor: pair {}: body wall time at 10 Hz {b_on:.2}s, off {b_off:.2}s, \
             slowdown {s:+.2}% (guest work {w_on:.0} vs {w_off:.0}) | 10 Hz run: {on}",
            i + 1
        );
    }
    let spread = slowdown
        .iter()
        .copied()
        .fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (ci_lo, ci_hi) = median_ci(&slowdown);
    let cpu_ms = median(cpu);
    println!(
        "bench monitor: guest slowdown at 10 Hz: median {:+.2}% (95% CI of the median {:+.2}% to \
         {:+.2}%, pairs from {:+.2}% to {:+.2}%, {} pairs; goal < 2%); sampling CPU {:.3} ms per \
         sample = {:.2}% of one host core at 10 Hz; snapshot pause median {:.2} ms; one full \
         sample median {:.2} ms wall ({} build)",
        median(slowdown.clone()),
        ci_lo,
        ci_hi,
        spread.0,
        spread.1,
        slowdown.len(),
        cpu_ms,
        cpu_ms * 10.0 / 1000.0 * 100.0,
        median(pauses),
        median(costs),
        if cfg!(debug_assertions) {
            "dev"
        } else {
            "release"
        }
    );
    Ok(())
}
