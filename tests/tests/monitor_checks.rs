//! The host monitor's checks against real VMs, both ways: one VM where every
//! check fails for a deliberate cause, its twin where every check passes, and
//! the schedstats the host read against the guest's own `/proc/schedstat`.
//!
//! The failing VM runs scx-ktstr with `--stall-after 2` (its dispatch stops
//! pulling from the shared DSQ: the kernel keeps the task running on each
//! CPU, counting `SCX_EV_DISPATCH_KEEP_LAST`, and every other task waits in
//! DSQ 0 until the watchdog ejects the scheduler) and forty spinners pinned
//! to CPU 0 against one on CPU 1 (a deep queue, and an imbalance inside the
//! one LLC). Under the healthy twin, the shared DSQ held up to 9 tasks while
//! the kernel's boot-time work (crypto self-tests) still ran: the depth limit
//! is 20. The twin runs
//! the same scheduler without the stall and two spinners pinned to each CPU.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use ktstr::prelude::*;
use ktstr::test_support::{Outcome, run_test};

/// The per-scheduler layer: both declarations carry the same stuck and wait
/// limits (tighter than the defaults).
const SCHED_CHECKS: MonitorChecks = MonitorChecks::INHERIT.stuck_ms(1000).wait_ms(1000);

const STALLS: Scheduler = Scheduler::named("mc_stall")
    .binary(SchedulerSpec::Discover("scx-ktstr"))
    .sched_args(&["--stall-after", "2", "--timeout-ms", "6000"])
    .monitor(SCHED_CHECKS);

const FIFO: Scheduler = Scheduler::named("mc_fifo")
    .binary(SchedulerSpec::Discover("scx-ktstr"))
    .monitor(SCHED_CHECKS);

/// The per-test layer, over the scheduler's: DSQ depth and LLC imbalance on,
/// and a counter the stall makes count.
const TEST_CHECKS: MonitorChecks = MonitorChecks::INHERIT
    .dsq_depth(20, 1000)
    .imbalance(2, 1000)
    .zero_events(&[
        "SCX_EV_DISPATCH_LOCAL_DSQ_OFFLINE",
        "SCX_EV_DISPATCH_KEEP_LAST",
    ]);

/// `per_cpu[c]` threads pinned to CPU `c`, spinning for `spin` of guest time
/// (yielding now and then, so a CPU with two of them switches often).
fn spin_pinned(per_cpu: &[usize], spin: Duration) -> usize {
    let until = Instant::now() + spin;
    let threads: Vec<_> = per_cpu
        .iter()
        .enumerate()
        .flat_map(|(cpu, &n)| std::iter::repeat_n(cpu, n))
        .map(|cpu| {
            std::thread::spawn(move || {
                // SAFETY: a zeroed cpu_set_t is valid; CPU_SET stays in bounds
                // for cpu < CPU_SETSIZE; sched_setaffinity only reads the set.
                unsafe {
                    let mut set: libc::cpu_set_t = std::mem::zeroed();
                    libc::CPU_SET(cpu, &mut set);
                    libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
                }
                let mut i = 0u64;
                while Instant::now() < until {
                    i = std::hint::black_box(i + 1);
                    if i.is_multiple_of(20_000) {
                        std::thread::yield_now();
                    }
                }
            })
        })
        .collect();
    let n = threads.len();
    for t in threads {
        let _ = t.join();
    }
    n
}

#[ktstr_test(
    harness_fixture = true,
    scheduler = STALLS,
    cores = 2,
    duration_s = 4,
    watchdog_timeout_s = 60,
    monitor = TEST_CHECKS,
)]
fn fixture_monitor_checks_fail(_ctx: &Ctx) -> Result<AssertResult> {
    let n = spin_pinned(&[40, 1], Duration::from_secs(4));
    Ok(AssertResult::pass().note("spinners", n.to_string()))
}

/// The schedstat counters of `/proc/schedstat`'s `cpuN` lines: (cpu,
/// [yld_count, sched_count, sched_goidle, ttwu_count, ttwu_local, run_delay, pcount]).
fn proc_schedstat() -> anyhow::Result<Vec<(u32, [u64; 7])>> {
    let text = std::fs::read_to_string("/proc/schedstat")?;
    let mut out = Vec::new();
    for l in text.lines() {
        let mut f = l.split_whitespace();
        let Some(cpu) = f.next().and_then(|c| c.strip_prefix("cpu")) else {
            continue;
        };
        let v: Vec<u64> = f.map(str::parse).collect::<Result<_, _>>()?;
        // cpuN yld_count 0 sched_count sched_goidle ttwu_count ttwu_local rq_cpu_time run_delay pcount
        ensure!(v.len() >= 9, "short schedstat line: {l}");
        out.push((cpu.parse()?, [v[0], v[2], v[3], v[4], v[5], v[7], v[8]]));
    }
    Ok(out)
}

const SCHEDSTAT_NAMES: [&str; 7] = [
    "yld_count",
    "sched_count",
    "sched_goidle",
    "ttwu_count",
    "ttwu_local",
    "run_delay",
    "pcount",
];

#[ktstr_test(
    harness_fixture = true,
    scheduler = FIFO,
    cores = 2,
    duration_s = 4,
    monitor = TEST_CHECKS.no_zero_events().zero_events(&["SCX_EV_DISPATCH_LOCAL_DSQ_OFFLINE"]),
    post_vm = schedstats_agree,
)]
fn fixture_monitor_checks_pass(_ctx: &Ctx) -> Result<AssertResult> {
    let t0 = Instant::now();
    let a = proc_schedstat()?;
    let wait_a = ktstr::snapshot::capture("schedstat_a")?;
    spin_pinned(&[2, 2], Duration::from_secs(4));
    let wait_b = ktstr::snapshot::capture("schedstat_b")?;
    let b = proc_schedstat()?;
    // The guest's window (read to read) holds the host's (pause to pause)
    // and exceeds it by at most the two requests' round trips: how long the
    // host took to answer, which the guest measures.
    let window = t0.elapsed().as_secs_f64();
    let outside = (wait_a + wait_b).as_secs_f64();
    let mut r = AssertResult::pass().note(
        "capture",
        format!("outside_pct={:.3}", outside / window * 100.0),
    );
    for ((cpu, x), (_, y)) in a.iter().zip(&b) {
        let d: Vec<String> = SCHEDSTAT_NAMES
            .iter()
            .zip(x.iter().zip(y))
            .map(|(n, (x, y))| format!("{n}={}", y.wrapping_sub(*x)))
            .collect();
        r = r.note("schedstat", format!("cpu{cpu} {}", d.join(" ")));
    }
    Ok(r)
}

/// The host's schedstat deltas between the two snapshots agree with the
/// guest's `/proc/schedstat` deltas over the same window within 5%, plus the
/// share of the guest's window the host's does not cover (the guest reads
/// before its first request and after its second is answered: the two round
/// trips, which depend on how fast the host answered), for every counter
/// that moved at least 100 on a CPU.
fn schedstats_agree(result: &VmResult) -> anyhow::Result<()> {
    let text = match &result.outcome {
        Outcome::Pass(t) => t,
        other => anyhow::bail!("the guest did not pass: {other:?}"),
    };
    let series = result.series();
    let (a, b) = (
        series
            .named("schedstat_a")
            .context("no snapshot schedstat_a")?,
        series
            .named("schedstat_b")
            .context("no snapshot schedstat_b")?,
    );
    // What the guest's window may hold beyond the host's, in percent.
    let outside: f64 = text
        .lines()
        .find_map(|l| l.split("[capture] outside_pct=").nth(1))
        .context("the fixture's share of its window outside the host's")?
        .trim()
        .parse()?;
    let mut compared = Vec::new();
    for line in text.lines().filter_map(|l| l.split("[schedstat] ").nth(1)) {
        let mut f = line.split_whitespace();
        let cpu: u32 = f
            .next()
            .and_then(|c| c.strip_prefix("cpu"))
            .context(line.to_string())?
            .parse()?;
        let (sa, sb) = (
            a.cpu(cpu)?
                .schedstat
                .context("no schedstats in snapshot a")?,
            b.cpu(cpu)?
                .schedstat
                .context("no schedstats in snapshot b")?,
        );
        for kv in f {
            let (name, guest) = kv.split_once('=').context(kv.to_string())?;
            let guest: f64 = guest.parse()?;
            let pick = |s: &ktstr::monitor::Schedstat| match name {
                "yld_count" => s.yld_count,
                "sched_count" => s.sched_count,
                "sched_goidle" => s.sched_goidle,
                "ttwu_count" => s.ttwu_count,
                "ttwu_local" => s.ttwu_local,
                "run_delay" => s.run_delay,
                _ => s.pcount,
            };
            let host = pick(&sb).wrapping_sub(pick(&sa)) as f64;
            if guest < 100.0 {
                continue;
            }
            let off = (host - guest).abs() / guest * 100.0;
            compared.push(format!(
                "cpu{cpu} {name} guest {guest} host {host} ({off:.2}%)"
            ));
            // Beyond 5%, a counter may differ by the events of the part of
            // the guest's window the host's does not cover.
            ensure!(
                off <= 5.0 + outside,
                "schedstat disagrees over 5% + {outside:.2}% (the guest's window beyond the \
                 host's): {}",
                compared.join("; ")
            );
        }
    }
    ensure!(
        compared
            .iter()
            .filter(|c| c.contains("sched_count"))
            .count()
            == 2,
        "sched_count not compared on both CPUs: {compared:?}"
    );
    println!(
        "schedstats host vs guest (the guest's window {outside:.2}% longer at most): {}",
        compared.join("; ")
    );
    Ok(())
}

#[test]
fn vm_monitor_checks_fail_for_their_cause() {
    match run_test("monitor_checks::fixture_monitor_checks_fail") {
        Outcome::Fail(msg) => {
            for needle in [
                "monitor.stuck: CPU",
                "monitor.wait: a runnable task at the head of DSQ 0x0",
                "monitor.dsq_depth: DSQ 0x0 held more than 20 tasks",
                "monitor.imbalance: LLC 0 (CPUs [0, 1]): CPU ",
                "monitor.zero_events: SCX_EV_DISPATCH_KEEP_LAST grew by",
            ] {
                assert!(msg.contains(needle), "the failure lacks {needle:?}:\n{msg}");
            }
            assert!(
                !msg.contains("SCX_EV_DISPATCH_LOCAL_DSQ_OFFLINE grew"),
                "a counter that did not count was blamed:\n{msg}"
            );
        }
        other => panic!("the stalled VM must fail its monitor checks, got {other:?}"),
    }
}

#[test]
fn vm_monitor_checks_pass_a_healthy_twin_and_schedstats_agree() {
    match run_test("monitor_checks::fixture_monitor_checks_pass") {
        Outcome::Pass(msg) => assert!(
            msg.contains("monitor checks [imbalance, dsq_depth, stuck, wait, zero_events] judged"),
            "{msg}"
        ),
        other => panic!("the healthy twin must pass, got {other:?}"),
    }
}
