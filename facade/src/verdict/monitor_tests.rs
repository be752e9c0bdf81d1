//! The monitor checks over hand-made samples: each fails for its cause,
//! names CPU or DSQ, figure, threshold and samples, and passes its twin.

use std::time::Duration;

use ktstr_ops::MonitorChecks;

use super::*;
use crate::monitor::{CpuSample, DsqSample, SampleKind};

const MS: u64 = 1_000_000;

/// A CPU: (nr_running, clock ns, curr pid).
fn cpu(cpu: u32, nr: u32, clock: u64, pid: i32) -> CpuSample {
    CpuSample {
        cpu,
        nr_running: Some(nr),
        clock: Some(clock),
        scx_nr_running: Some(nr),
        nr_switches: Some(clock / MS),
        local_dsq_nr: Some(0),
        curr_pid: Some(pid),
        curr_comm: Some(if pid == 0 {
            "swapper".into()
        } else {
            format!("w{pid}")
        }),
        oldest_wait_ns: None,
        schedstat: None,
    }
}

fn sample(at_ms: u64, cpus: Vec<CpuSample>) -> Sample {
    Sample {
        kind: SampleKind::Monitor,
        elapsed: Duration::from_millis(at_ms),
        paused: None,
        read_time: Duration::ZERO,
        cpus: Ok(cpus),
        scheduler: Ok(Some("ktstr".into())),
        dsqs: Ok(vec![]),
        events: Ok(vec![("SCX_EV_DISPATCH_LOCAL_DSQ_OFFLINE".into(), 0)]),
        globals: Ok(vec![]),
    }
}

/// `n` samples 100 ms apart of two CPUs, built by `f(i, guest ns)`.
fn run(n: u64, f: impl Fn(u64, u64) -> Vec<CpuSample>) -> Vec<Sample> {
    (0..n)
        .map(|i| sample(1000 + i * 100, f(i, 1000 * MS + i * 100 * MS)))
        .collect()
}

fn healthy(n: u64) -> Vec<Sample> {
    run(n, |i, t| {
        vec![cpu(0, 2, t, 100 + (i % 2) as i32), cpu(1, 1, t, 200)]
    })
}

fn judge(samples: &[Sample], checks: MonitorChecks, reliable: bool) -> MonitorFindings {
    judge_monitor(
        &MonitorInput {
            samples,
            unavailable: None,
            hz: 10,
            window: Some((Duration::ZERO, Duration::from_secs(100))),
            llc_of: &[0, 0],
            timing_reliable: reliable,
            turn_allowance: Duration::from_millis(100),
        },
        &checks.resolved(),
    )
}

#[test]
fn healthy_samples_pass_every_check() {
    let all = MonitorChecks::INHERIT
        .imbalance(1, 500)
        .dsq_depth(4, 500)
        .stuck_ms(500)
        .wait_ms(500);
    let f = judge(&healthy(40), all, true);
    assert!(f.failures.is_empty() && f.inconclusive.is_empty(), "{f:?}");
    assert!(f.notes[0].contains("judged over 40 samples"), "{f:?}");
}

#[test]
fn a_cpu_whose_clock_stops_with_tasks_runnable_is_stuck() {
    // CPU 1 keeps 2 runnable tasks, its clock frozen from sample 10 on.
    let s = run(40, |_, t| {
        vec![cpu(0, 1, t, 100), cpu(1, 2, t.min(2000 * MS), 200)]
    });
    let f = judge(&s, MonitorChecks::INHERIT.stuck_ms(1000), true);
    assert_eq!(f.failures.len(), 1, "{f:?}");
    let w = &f.failures[0];
    assert!(
        w.starts_with("monitor.stuck: CPU 1 had 2 runnable tasks"),
        "{w}"
    );
    assert!(w.contains("rq clock stayed at 2.00s"), "{w}");
    assert!(w.contains("for 2.90s"), "{w}");
    assert!(w.contains("threshold 1.00s + 0.10s"), "{w}");
    assert!(w.contains("30 samples from 2.00s to 4.90s"), "{w}");
    // Twin: the limit above the frozen span.
    let f = judge(&s, MonitorChecks::INHERIT.stuck_ms(3000), true);
    assert!(f.failures.is_empty(), "{f:?}");
}

#[test]
fn an_idle_cpu_with_runnable_tasks_is_stuck_but_an_idle_cpu_without_is_not() {
    // Both CPUs idle (pid 0) from sample 5; CPU 1 still counts a runnable task.
    let s = run(30, |i, t| {
        let pid = if i >= 5 { 0 } else { 7 };
        vec![cpu(0, 0, t, pid), cpu(1, 1, t, pid)]
    });
    let f = judge(&s, MonitorChecks::INHERIT.stuck_ms(1000), true);
    assert_eq!(f.failures.len(), 1, "{f:?}");
    assert!(f.failures[0].contains("CPU 1 had 1 runnable tasks but ran only its idle task"));
    assert!(
        f.failures[0].contains("current task swapper (pid 0)"),
        "{f:?}"
    );
}

#[test]
fn a_cpu_that_switches_no_task_while_another_is_runnable_is_stuck() {
    // CPU 0: two runnable, clock running, no context switch from sample 10 on.
    let s = run(40, |i, t| {
        let mut c = cpu(0, 2, t, 100);
        c.nr_switches = Some(i.min(10));
        vec![c, cpu(1, 1, t, 200)]
    });
    let f = judge(&s, MonitorChecks::INHERIT.stuck_ms(1000), true);
    assert_eq!(f.failures.len(), 1, "{f:?}");
    assert!(f.failures[0].contains("CPU 0 had 2 runnable tasks but switched no task (10 context switches all along) for 2.90s"), "{f:?}");
    // Twin: a lone task that never switches is not stuck.
    let s = run(40, |_, t| {
        let mut c = cpu(0, 1, t, 100);
        c.nr_switches = Some(3);
        vec![c, cpu(1, 1, t, 200)]
    });
    assert!(
        judge(&s, MonitorChecks::INHERIT.stuck_ms(1000), true)
            .failures
            .is_empty()
    );
}

#[test]
fn on_untrusted_timing_a_failing_timed_check_is_inconclusive() {
    let s = run(40, |_, t| vec![cpu(0, 1, t, 0), cpu(1, 0, t, 0)]);
    let f = judge(&s, MonitorChecks::INHERIT.stuck_ms(1000), false);
    assert!(f.failures.is_empty(), "{f:?}");
    assert!(f.inconclusive[0].contains("monitor.stuck: CPU 0"), "{f:?}");
    assert!(f.inconclusive[0].contains("not trustworthy"), "{f:?}");
}

fn with_dsq(mut s: Vec<Sample>, f: impl Fn(usize) -> (u32, Option<u64>)) -> Vec<Sample> {
    for (i, x) in s.iter_mut().enumerate() {
        let (nr, wait) = f(i);
        x.dsqs = Ok(vec![DsqSample {
            id: 0x10,
            nr,
            oldest_wait_ns: wait,
        }]);
    }
    s
}

#[test]
fn a_task_waiting_past_the_limit_in_two_samples_fails_wait() {
    let s = with_dsq(healthy(30), |i| (1, Some(i as u64 * 100 * MS)));
    let f = judge(&s, MonitorChecks::INHERIT.wait_ms(1500), true);
    assert_eq!(f.failures.len(), 1, "{f:?}");
    let w = &f.failures[0];
    assert!(
        w.starts_with("monitor.wait: a runnable task at the head of DSQ 0x10 waited 1.80s"),
        "{w}"
    );
    assert!(w.contains("threshold 1500ms"), "{w}");
    assert!(w.contains("worst 2.90s over 13 samples"), "{w}");
    // Twin: one torn read over the limit is not a wait.
    let s = with_dsq(healthy(30), |i| {
        (1, Some(if i == 7 { 9000 * MS } else { 10 * MS }))
    });
    let f = judge(&s, MonitorChecks::INHERIT.wait_ms(1500), true);
    assert!(f.failures.is_empty(), "{f:?}");
}

#[test]
fn a_dsq_deeper_than_n_for_t_fails_depth_and_a_short_burst_does_not() {
    let s = with_dsq(healthy(30), |i| {
        (if (5..25).contains(&i) { 9 } else { 2 }, None)
    });
    let f = judge(&s, MonitorChecks::INHERIT.dsq_depth(8, 1000), true);
    assert_eq!(f.failures.len(), 1, "{f:?}");
    let w = &f.failures[0];
    assert!(
        w.contains("DSQ 0x10 held more than 8 tasks (deepest 9) for 1.90s"),
        "{w}"
    );
    assert!(w.contains("20 samples from 1.50s to 3.40s"), "{w}");
    let s = with_dsq(healthy(30), |i| {
        (if (5..10).contains(&i) { 9 } else { 2 }, None)
    });
    assert!(
        judge(&s, MonitorChecks::INHERIT.dsq_depth(8, 1000), true)
            .failures
            .is_empty()
    );
}

#[test]
fn sustained_imbalance_within_an_llc_fails_and_names_both_cpus() {
    let s = run(30, |_, t| vec![cpu(0, 4, t, 1), cpu(1, 1, t, 2)]);
    let f = judge(&s, MonitorChecks::INHERIT.imbalance(2, 1000), true);
    assert_eq!(f.failures.len(), 1, "{f:?}");
    let w = &f.failures[0];
    assert!(
        w.contains(
            "LLC 0 (CPUs [0, 1]): CPU 0 had 4 runnable tasks and CPU 1 had 1 (difference 3)"
        ),
        "{w}"
    );
    // Twin: the same CPUs in two LLCs are not compared.
    let f = judge_monitor(
        &MonitorInput {
            samples: &s,
            unavailable: None,
            hz: 10,
            window: Some((Duration::ZERO, Duration::from_secs(100))),
            llc_of: &[0, 1],
            timing_reliable: true,
            turn_allowance: Duration::ZERO,
        },
        &MonitorChecks::INHERIT.imbalance(2, 1000).resolved(),
    );
    assert!(f.failures.is_empty(), "{f:?}");
}

#[test]
fn a_counter_that_must_stay_zero_fails_when_it_grows() {
    let mut s = healthy(20);
    for (i, x) in s.iter_mut().enumerate() {
        x.events = Ok(vec![(
            "SCX_EV_DISPATCH_LOCAL_DSQ_OFFLINE".into(),
            (i as i64 - 10).max(0),
        )]);
    }
    let f = judge(&s, MonitorChecks::INHERIT, true);
    assert_eq!(f.failures.len(), 1, "{f:?}");
    let w = &f.failures[0];
    assert!(w.contains("SCX_EV_DISPATCH_LOCAL_DSQ_OFFLINE grew by 9 during the body (threshold: must not count)"), "{w}");
    assert!(
        w.contains("first at 2.10s after boot, 9 in the last of 20 samples"),
        "{w}"
    );
    // Twin: a count from before the body (the scheduler's attach) is not judged.
    let mut s = healthy(20);
    for x in &mut s {
        x.events = Ok(vec![("SCX_EV_DISPATCH_LOCAL_DSQ_OFFLINE".into(), 4)]);
    }
    assert!(judge(&s, MonitorChecks::INHERIT, true).failures.is_empty());
    // A counter this kernel lacks cannot be judged.
    let f = judge(
        &healthy(20),
        MonitorChecks::INHERIT.zero_events(&["SCX_EV_NOPE"]),
        true,
    );
    assert!(
        f.inconclusive[0].contains("no counter SCX_EV_NOPE"),
        "{f:?}"
    );
    // A kernel without any counters: a note, not a failure.
    let mut s = healthy(20);
    for x in &mut s {
        x.events = Err(MonitorError::Missing(
            "this kernel has no sched_ext event counters".into(),
        ));
    }
    let f = judge(&s, MonitorChecks::INHERIT, true);
    assert!(f.failures.is_empty() && f.inconclusive.is_empty(), "{f:?}");
}

#[test]
fn without_samples_the_checks_are_inconclusive_never_passed() {
    let checks = MonitorChecks::INHERIT.resolved();
    let base = MonitorInput {
        samples: &[],
        unavailable: None,
        hz: 10,
        window: Some((Duration::ZERO, Duration::from_secs(5))),
        llc_of: &[0, 0],
        timing_reliable: true,
        turn_allowance: Duration::ZERO,
    };
    let f = judge_monitor(&base, &checks);
    assert!(
        f.inconclusive[0].contains("0 readable samples of 0"),
        "{f:?}"
    );
    // A body shorter than a few sample periods holds nothing sustained.
    let short = MonitorInput {
        window: Some((Duration::ZERO, Duration::from_millis(250))),
        ..base
    };
    let f = judge_monitor(&short, &checks);
    assert!(f.inconclusive.is_empty() && f.failures.is_empty(), "{f:?}");
    assert!(
        f.notes[0].contains("the body ran 0.25s, too short to judge at 10 Hz"),
        "{f:?}"
    );
    let f = judge_monitor(&MonitorInput { hz: 0, ..base }, &checks);
    assert!(f.inconclusive[0].contains("KTSTR_MONITOR_HZ=0"), "{f:?}");
    let e = MonitorError::Unavailable("no BTF".into());
    let f = judge_monitor(
        &MonitorInput {
            unavailable: Some(&e),
            ..base
        },
        &checks,
    );
    assert!(f.inconclusive[0].contains("no BTF"), "{f:?}");
    // Every check off: nothing to judge, nothing said.
    let f = judge_monitor(&MonitorInput { hz: 0, ..base }, &MonitorChecks::OFF);
    assert_eq!(f, MonitorFindings::default());
}

#[test]
fn samples_outside_the_body_are_not_judged() {
    // Frozen clocks at shutdown, after the verdict at 2.5 s.
    let s = run(40, |i, t| {
        let frozen = if i >= 15 { 2500 * MS } else { t };
        vec![cpu(0, 0, t, 0), cpu(1, 1, frozen, 2)]
    });
    let mut input = MonitorInput {
        samples: &s,
        unavailable: None,
        hz: 10,
        window: Some((Duration::ZERO, Duration::from_millis(2500))),
        llc_of: &[0, 0],
        timing_reliable: true,
        turn_allowance: Duration::ZERO,
    };
    let checks = MonitorChecks::INHERIT.stuck_ms(500).resolved();
    assert!(judge_monitor(&input, &checks).failures.is_empty());
    input.window = Some((Duration::ZERO, Duration::from_secs(10)));
    assert_eq!(judge_monitor(&input, &checks).failures.len(), 1);
}
