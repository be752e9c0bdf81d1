//! The monitor's checks, judged: what the host read from guest memory while
//! the body ran, against the limits of [`MonitorChecks`]. Pure: samples in,
//! findings out; every rule unit-tested in `monitor_tests.rs`.
//!
//! Time is the guest's: the span of a sustained figure is measured on the
//! largest rq clock of each sample. Under instruction counting that clock
//! follows what the guest executed, so a busy host does not stretch it; when
//! the backend cannot vouch for guest time (`timing_reliable` false), a
//! time-based check that would fail reports inconclusive instead.

use std::time::Duration;

use ktstr_ops::MonitorChecks;

use crate::monitor::{MonitorError, Sample};

/// What the checks found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MonitorFindings {
    /// Checks that failed, one line each naming CPU or DSQ, figure,
    /// threshold and samples.
    pub failures: Vec<String>,
    /// The names of the checks that failed (`monitor.stuck`, ...), once
    /// each: what `expect_err` matches.
    pub failed_checks: Vec<&'static str>,
    /// Checks that could not judge, and why.
    pub inconclusive: Vec<String>,
    /// What was judged, for the pass text.
    pub notes: Vec<String>,
}

/// What the checks judge.
#[derive(Debug, Clone, Copy)]
pub struct MonitorInput<'a> {
    /// The samples, oldest first (periodic and snapshots).
    pub samples: &'a [Sample],
    /// Why the monitor could not read the VM at all, if it could not.
    pub unavailable: Option<&'a MonitorError>,
    /// Sampling rate (0: off).
    pub hz: u32,
    /// The window judged, from boot (host time): the body's start to its verdict.
    pub window: Option<(Duration, Duration)>,
    /// The LLC of each CPU (index: CPU).
    pub llc_of: &'a [u32],
    /// Whether guest time can be trusted (`Backend::timing_reliable`).
    pub timing_reliable: bool,
    /// Extra time a vCPU may go unscheduled by the host (vCPUs taking turns
    /// on one host thread), added to every duration limit.
    pub turn_allowance: Duration,
}

/// Samples fewer than this cannot show anything sustained.
const MIN_SAMPLES: usize = 3;

/// One usable sample: its guest time and the sample.
struct At<'a> {
    guest: u64,
    s: &'a Sample,
}

fn ms(ns: u64) -> String {
    format!("{:.2}s", ns as f64 / 1e9)
}

/// Judges the checks `checks` (resolved: every one on or off).
pub fn judge_monitor(input: &MonitorInput<'_>, checks: &MonitorChecks) -> MonitorFindings {
    let mut f = MonitorFindings::default();
    let on: Vec<&str> = [
        checks.imbalance.on().map(|_| "imbalance"),
        checks.dsq_depth.on().map(|_| "dsq_depth"),
        checks.stuck_ms.on().map(|_| "stuck"),
        checks.wait_ms.on().map(|_| "wait"),
        checks.zero_events.on().map(|_| "zero_events"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if on.is_empty() {
        return f;
    }
    let cannot = |why: String| format!("monitor checks [{}] could not judge: {why}", on.join(", "));
    if let Some(e) = input.unavailable {
        f.inconclusive.push(cannot(e.to_string()));
        return f;
    }
    if input.hz == 0 {
        f.inconclusive.push(cannot(
            "periodic sampling is off (KTSTR_MONITOR_HZ=0)".into(),
        ));
        return f;
    }
    let Some((from, to)) = input.window else {
        f.notes
            .push("monitor checks: no body ran, nothing to judge".into());
        return f;
    };
    let usable: Vec<At<'_>> = input
        .samples
        .iter()
        .filter(|s| s.elapsed >= from && s.elapsed <= to)
        .filter_map(|s| {
            let guest = s.cpus.as_ref().ok()?.iter().filter_map(|c| c.clock).max()?;
            Some(At { guest, s })
        })
        .collect();
    let in_window = input
        .samples
        .iter()
        .filter(|s| s.elapsed >= from && s.elapsed <= to)
        .count();
    let body = to.saturating_sub(from);
    if usable.len() < MIN_SAMPLES
        && body.as_secs_f64() * f64::from(input.hz) < MIN_SAMPLES as f64 + 1.0
    {
        // Nothing sustained fits in a body this short at this rate.
        f.notes.push(format!(
            "monitor checks: the body ran {:.2}s, too short to judge at {} Hz ({} samples)",
            body.as_secs_f64(),
            input.hz,
            usable.len()
        ));
        return f;
    }
    if usable.len() < MIN_SAMPLES {
        f.inconclusive.push(cannot(format!(
            "{} readable samples of {in_window} in the body's {:.1}s (need {MIN_SAMPLES})",
            usable.len(),
            (to.saturating_sub(from)).as_secs_f64()
        )));
        return f;
    }
    let allowance = input.turn_allowance.as_nanos() as u64;
    let timed = |check: &'static str, what: String, f: &mut MonitorFindings| {
        if input.timing_reliable {
            f.fail(check, what);
        } else {
            f.inconclusive.push(format!(
                "{what} (guest time not trustworthy on this backend: not judged)"
            ));
        }
    };
    if let Some(lim) = checks.stuck_ms.on() {
        for w in stuck(&usable, u64::from(lim) * 1_000_000, allowance) {
            timed("monitor.stuck", w, &mut f);
        }
    }
    if let Some(lim) = checks.wait_ms.on() {
        for w in waits(&usable, u64::from(lim) * 1_000_000 + allowance, lim) {
            timed("monitor.wait", w, &mut f);
        }
    }
    if let Some(lim) = checks.dsq_depth.on() {
        for w in depth(
            &usable,
            lim.max,
            u64::from(lim.for_ms) * 1_000_000 + allowance,
            lim.for_ms,
        ) {
            timed("monitor.dsq_depth", w, &mut f);
        }
    }
    if let Some(lim) = checks.imbalance.on() {
        let span = u64::from(lim.for_ms) * 1_000_000 + allowance;
        for w in imbalance(&usable, input.llc_of, lim.max, span, lim.for_ms) {
            timed("monitor.imbalance", w, &mut f);
        }
    }
    if let Some(names) = checks.zero_events.on() {
        events(&usable, names, &mut f);
    }
    f.notes.push(format!(
        "monitor checks [{}] judged over {} samples ({}..{} guest)",
        on.join(", "),
        usable.len(),
        ms(usable.first().map_or(0, |a| a.guest)),
        ms(usable.last().map_or(0, |a| a.guest)),
    ));
    f
}

/// Sample numbers and host times of a run, for a failure text.
fn run_text(run: &[&At<'_>]) -> String {
    let (Some(a), Some(b)) = (run.first(), run.last()) else {
        return String::new();
    };
    format!(
        "{} samples from {:.2}s to {:.2}s after boot",
        run.len(),
        a.s.elapsed.as_secs_f64(),
        b.s.elapsed.as_secs_f64()
    )
}

/// The longest run of consecutive samples where `bad` holds; `bad` gets the
/// sample and the previous one of the run (if any).
fn longest_run<'a, 'b>(
    usable: &'b [At<'a>],
    bad: impl Fn(&At<'a>, Option<&At<'a>>) -> bool,
) -> Vec<&'b At<'a>> {
    let mut best: Vec<&At<'a>> = Vec::new();
    let mut cur: Vec<&At<'a>> = Vec::new();
    for a in usable {
        if bad(a, cur.last().copied()) {
            cur.push(a);
        } else {
            cur.clear();
            // This sample may start the next run.
            if bad(a, None) {
                cur.push(a);
            }
        }
        if span(&cur) > span(&best) || best.is_empty() && !cur.is_empty() {
            best = cur.clone();
        }
    }
    best
}

fn span(run: &[&At<'_>]) -> u64 {
    match (run.first(), run.last()) {
        (Some(a), Some(b)) => b.guest.saturating_sub(a.guest),
        _ => 0,
    }
}

fn cpu_of<'a>(a: &At<'a>, cpu: u32) -> Option<&'a crate::monitor::CpuSample> {
    a.s.cpus.as_ref().ok()?.iter().find(|c| c.cpu == cpu)
}

fn cpus(usable: &[At<'_>]) -> Vec<u32> {
    let mut v: Vec<u32> = usable
        .iter()
        .flat_map(|a| a.s.cpus.iter().flatten().map(|c| c.cpu))
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// CPUs with runnable tasks that did not advance: the rq clock did not move
/// between two samples, or the CPU ran its idle task (pid 0) with tasks runnable.
fn stuck(usable: &[At<'_>], limit: u64, allowance: u64) -> Vec<String> {
    let mut out = Vec::new();
    for cpu in cpus(usable) {
        let run = longest_run(usable, |a, prev| {
            let Some(c) = cpu_of(a, cpu) else {
                return false;
            };
            if c.nr_running.unwrap_or(0) == 0 {
                return false;
            }
            let idle = c.curr_pid == Some(0);
            match prev.and_then(|p| cpu_of(p, cpu)) {
                // The start of a run: the CPU has work; the next sample says
                // whether it moved.
                None => true,
                Some(p) => {
                    let clock_stopped = c.clock.is_some() && c.clock == p.clock;
                    // Another task runnable all along, and not one context switch.
                    let no_switch = c.nr_running.unwrap_or(0) >= 2
                        && p.nr_running.unwrap_or(0) >= 2
                        && c.nr_switches.is_some()
                        && c.nr_switches == p.nr_switches;
                    (idle && p.curr_pid == Some(0)) || clock_stopped || no_switch
                }
            }
        });
        let s = span(&run);
        if run.len() >= 2 && s > limit + allowance {
            let (first, last) = (run[0], run[run.len() - 1]);
            let (c0, c1) = (cpu_of(first, cpu), cpu_of(last, cpu));
            let clock_moved = c0.and_then(|c| c.clock) != c1.and_then(|c| c.clock);
            let idle = c1.and_then(|c| c.curr_pid) == Some(0);
            let curr = c1
                .map(|c| {
                    format!(
                        "{} (pid {})",
                        c.curr_comm.as_deref().unwrap_or("?"),
                        c.curr_pid.map_or("?".into(), |p| p.to_string())
                    )
                })
                .unwrap_or_default();
            out.push(format!(
                "monitor.stuck: CPU {cpu} had {} runnable tasks but {} for {} of guest time \
                 (threshold {} + {} for vCPU turns); current task {curr}; {}",
                c1.and_then(|c| c.nr_running).unwrap_or(0),
                if clock_moved && idle {
                    "ran only its idle task".to_string()
                } else if clock_moved {
                    format!(
                        "switched no task ({} context switches all along)",
                        c1.and_then(|c| c.nr_switches).unwrap_or(0)
                    )
                } else {
                    format!(
                        "its rq clock stayed at {}",
                        ms(c1.and_then(|c| c.clock).unwrap_or(0))
                    )
                },
                ms(s),
                ms(limit),
                ms(allowance),
                run_text(&run)
            ));
        }
    }
    out
}

/// Where a wait or a depth was seen: a CPU's local DSQ or a user DSQ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Loc {
    Local(u32),
    User(u64),
}

impl std::fmt::Display for Loc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Loc::Local(c) => write!(f, "CPU {c}'s local DSQ"),
            Loc::User(id) => write!(f, "DSQ {id:#x}"),
        }
    }
}

/// (location, depth, oldest wait) of every DSQ in a sample.
fn dsqs(a: &At<'_>) -> Vec<(Loc, u32, Option<u64>)> {
    let local = a.s.cpus.iter().flatten().map(|c| {
        (
            Loc::Local(c.cpu),
            c.local_dsq_nr.unwrap_or(0),
            c.oldest_wait_ns,
        )
    });
    let user =
        a.s.dsqs
            .iter()
            .flatten()
            .map(|d| (Loc::User(d.id), d.nr, d.oldest_wait_ns));
    local.chain(user).collect()
}

fn locs(usable: &[At<'_>]) -> Vec<Loc> {
    let mut v: Vec<Loc> = usable
        .iter()
        .flat_map(|a| dsqs(a).into_iter().map(|d| d.0))
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// A task at the head of a DSQ waiting over `limit`, in two samples running
/// (one torn read is not enough).
fn waits(usable: &[At<'_>], limit: u64, limit_ms: u32) -> Vec<String> {
    let mut out = Vec::new();
    for loc in locs(usable) {
        let wait = |a: &At<'_>| dsqs(a).into_iter().find(|d| d.0 == loc).and_then(|d| d.2);
        let over: Vec<(usize, u64)> = usable
            .iter()
            .enumerate()
            .filter_map(|(i, a)| wait(a).filter(|w| *w > limit).map(|w| (i, w)))
            .collect();
        let confirmed = over.windows(2).find(|w| w[1].0 == w[0].0 + 1);
        if let Some(w) = confirmed {
            let worst = over.iter().map(|o| o.1).max().unwrap_or(0);
            let (a, b) = (&usable[w[0].0], &usable[w[1].0]);
            out.push(format!(
                "monitor.wait: a runnable task at the head of {loc} waited {} (threshold {}ms \
                 + vCPU turns; worst {} over {} samples, first at {:.2}s and {:.2}s after boot)",
                ms(w[1].1),
                limit_ms,
                ms(worst),
                over.len(),
                a.s.elapsed.as_secs_f64(),
                b.s.elapsed.as_secs_f64()
            ));
        }
    }
    out
}

/// A DSQ deeper than `max` for a sustained span.
fn depth(usable: &[At<'_>], max: u32, limit: u64, for_ms: u32) -> Vec<String> {
    let mut out = Vec::new();
    for loc in locs(usable) {
        let nr = |a: &At<'_>| dsqs(a).into_iter().find(|d| d.0 == loc).map(|d| d.1);
        let run = longest_run(usable, |a, _| nr(a).is_some_and(|n| n > max));
        if run.len() >= 2 && span(&run) >= limit {
            let deepest = run.iter().filter_map(|a| nr(a)).max().unwrap_or(0);
            out.push(format!(
                "monitor.dsq_depth: {loc} held more than {max} tasks (deepest {deepest}) for {} \
                 of guest time (threshold {max} tasks for {for_ms}ms + vCPU turns); {}",
                ms(span(&run)),
                run_text(&run)
            ));
        }
    }
    out
}

/// CPUs of one LLC whose `nr_running` differ by more than `max`, sustained.
fn imbalance(usable: &[At<'_>], llc_of: &[u32], max: u32, limit: u64, for_ms: u32) -> Vec<String> {
    let mut llcs: Vec<u32> = llc_of.to_vec();
    llcs.sort_unstable();
    llcs.dedup();
    let mut out = Vec::new();
    for llc in llcs {
        let members: Vec<u32> = (0..llc_of.len() as u32)
            .filter(|&c| llc_of.get(c as usize) == Some(&llc))
            .collect();
        if members.len() < 2 {
            continue;
        }
        // (diff, busiest cpu, its nr, idlest cpu, its nr)
        let spread = |a: &At<'_>| -> Option<(u32, u32, u32, u32, u32)> {
            let nrs: Vec<(u32, u32)> = members
                .iter()
                .filter_map(|&c| Some((c, cpu_of(a, c)?.nr_running?)))
                .collect();
            let hi = nrs.iter().max_by_key(|x| x.1)?;
            let lo = nrs.iter().min_by_key(|x| x.1)?;
            Some((hi.1 - lo.1, hi.0, hi.1, lo.0, lo.1))
        };
        let run = longest_run(usable, |a, _| spread(a).is_some_and(|s| s.0 > max));
        if run.len() >= 2 && span(&run) >= limit {
            let worst = run
                .iter()
                .filter_map(|a| spread(a))
                .max_by_key(|s| s.0)
                .unwrap_or_default();
            out.push(format!(
                "monitor.imbalance: LLC {llc} (CPUs {members:?}): CPU {} had {} runnable tasks \
                 and CPU {} had {} (difference {}) with differences over {max} for {} of guest \
                 time (threshold {max} for {for_ms}ms + vCPU turns); {}",
                worst.1,
                worst.2,
                worst.3,
                worst.4,
                worst.0,
                ms(span(&run)),
                run_text(&run)
            ));
        }
    }
    out
}

/// Counters that must stay zero while a sched_ext scheduler is attached.
fn events(usable: &[At<'_>], names: &[&str], f: &mut MonitorFindings) {
    let attached: Vec<&At<'_>> = usable
        .iter()
        .filter(|a| matches!(a.s.scheduler, Ok(Some(_))))
        .collect();
    if attached.is_empty() {
        f.notes
            .push("monitor.zero_events: no sched_ext scheduler attached, nothing to count".into());
        return;
    }
    let read: Vec<(&At<'_>, &Vec<(String, i64)>)> = attached
        .iter()
        .filter_map(|a| Some((*a, a.s.events.as_ref().ok()?)))
        .collect();
    if read.is_empty() {
        let why = attached
            .iter()
            .find_map(|a| a.s.events.as_ref().err())
            .map_or_else(|| "never read".to_string(), ToString::to_string);
        if matches!(
            attached.iter().find_map(|a| a.s.events.as_ref().err()),
            Some(MonitorError::Missing(_))
        ) {
            f.notes.push(format!("monitor.zero_events: {why}"));
        } else {
            f.inconclusive.push(format!(
                "monitor.zero_events could not read the counters: {why}"
            ));
        }
        return;
    }
    for name in names {
        let seen: Vec<(&At<'_>, i64)> = read
            .iter()
            .filter_map(|(a, ev)| Some((*a, ev.iter().find(|(n, _)| n == name)?.1)))
            .collect();
        if seen.is_empty() {
            let known: Vec<&str> = read[0].1.iter().map(|(n, _)| n.as_str()).collect();
            f.inconclusive.push(format!(
                "monitor.zero_events: this kernel has no counter {name} (it has: {})",
                known.join(", ")
            ));
            continue;
        }
        // Growth between samples (a replaced scheduler starts from 0 again).
        let grew: Vec<(&At<'_>, i64)> = seen
            .windows(2)
            .filter(|w| w[1].1 > w[0].1)
            .map(|w| (w[1].0, w[1].1 - w[0].1))
            .collect();
        if let Some((first, _)) = grew.first() {
            let total: i64 = grew.iter().map(|g| g.1).sum();
            let last = seen.last().map_or(0, |l| l.1);
            f.fail(
                "monitor.zero_events",
                format!(
                    "monitor.zero_events: {name} grew by {total} during the body (threshold: must \
                 not count), summed over CPUs; first at {:.2}s after boot, {last} in the last of \
                 {} samples",
                    first.s.elapsed.as_secs_f64(),
                    seen.len()
                ),
            );
        }
    }
}

impl MonitorFindings {
    /// Records a failure of `check`.
    fn fail(&mut self, check: &'static str, what: String) {
        self.failures.push(what);
        if !self.failed_checks.contains(&check) {
            self.failed_checks.push(check);
        }
    }
}

#[cfg(test)]
#[path = "monitor_tests.rs"]
mod tests;
