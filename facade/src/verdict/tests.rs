//! Every combination of guest verdict, notes, inconclusive reasons,
//! infrastructure failures, scheduler deaths and `expect_err`.

use super::*;
use ktstr_ops::scheduler::ExitKind;

fn exp(expect_err: bool) -> Expectation<'static> {
    Expectation {
        expect_err,
        expect_err_matching: None,
        allow_inconclusive: false,
        watchdog_timeout_s: 65,
    }
}

fn powered_off(v: AssertResult, body_error: Option<&str>) -> Observed {
    Observed {
        body_started: true,
        probe: None,
        verdict: Some((v, body_error.map(str::to_string))),
        console: vec!["booting".into(), "ktstr-init: up".into()],
        ..Observed::ended(EndReason::PowerOff)
    }
}

fn stall() -> SchedulerDied {
    SchedulerDied {
        name: "s".into(),
        kind: ExitKind::ErrorStall,
        reason: "runnable task stall".into(),
        message: Some("watchdog failed to check in".into()),
        status: Some("exit status: 1".into()),
    }
}

/// The guest verdicts a body can produce.
fn verdicts() -> Vec<(&'static str, AssertResult, Option<&'static str>)> {
    vec![
        ("pass", AssertResult::pass(), None),
        (
            "pass with a note",
            AssertResult::pass().note("cleanup", "slow"),
            None,
        ),
        (
            "pass, inconclusive",
            AssertResult::pass().inconclusive_because("8 vCPUs on 2 cores"),
            None,
        ),
        (
            "check failed",
            AssertResult::fail("fairness", "spread 60%"),
            None,
        ),
        (
            "body error",
            AssertResult::fail("body", "test body returned an error: boom"),
            Some("test body returned an error: boom"),
        ),
        (
            "failed and inconclusive",
            AssertResult::fail("starvation", "w0 did nothing").inconclusive_because("x"),
            None,
        ),
    ]
}

#[test]
fn guest_verdicts_with_and_without_expect_err() {
    for (what, v, err) in verdicts() {
        let failed = !v.is_pass();
        let inconclusive = !v.inconclusive().is_empty();
        for expect_err in [false, true] {
            let got = judge(&powered_off(v.clone(), err), &exp(expect_err));
            match (failed, expect_err, inconclusive) {
                (false, false, false) => {
                    assert!(matches!(got, Outcome::Pass(_)), "{what}: {got:?}")
                }
                (false, false, true) => {
                    assert!(
                        matches!(&got, Outcome::Fail(t) if t.starts_with("inconclusive: 8 vCPUs on 2 cores")),
                        "{what}: {got:?}"
                    );
                    let allowed = Expectation {
                        allow_inconclusive: true,
                        ..exp(expect_err)
                    };
                    let got = judge(&powered_off(v.clone(), err), &allowed);
                    assert!(
                        matches!(&got, Outcome::Inconclusive(t) if t.contains("8 vCPUs on 2 cores")),
                        "{what}: {got:?}"
                    );
                }
                (false, true, _) => assert!(
                    matches!(&got, Outcome::Fail(t) if t.contains("expect_err test passed")),
                    "{what}: {got:?}"
                ),
                (true, true, _) => assert!(
                    matches!(&got, Outcome::Pass(t) if t.starts_with("failed as expected")),
                    "{what}: {got:?}"
                ),
                (true, false, _) => assert!(matches!(got, Outcome::Fail(_)), "{what}: {got:?}"),
            }
        }
    }
}

#[test]
fn a_body_error_is_the_failure_text() {
    let (_, v, err) = verdicts().remove(4);
    let Outcome::Fail(t) = judge(&powered_off(v, err), &exp(false)) else {
        panic!("a body error fails");
    };
    assert_eq!(t, "test body returned an error: boom");
}

#[test]
fn infrastructure_failures_are_never_inverted() {
    let ends = [
        (
            EndReason::Panic {
                lines: vec!["Kernel panic - not syncing: boom".into()],
            },
            "guest kernel panic",
        ),
        (
            EndReason::Timeout,
            "hung: the guest did not finish within watchdog_timeout_s = 65",
        ),
        (
            EndReason::Crashed {
                detail: "signal 9".into(),
            },
            "the VM crashed: signal 9",
        ),
        (EndReason::Reset, "the guest reset before reporting"),
        (EndReason::PowerOff, "without a verdict"),
        (EndReason::Killed, "without a verdict"),
    ];
    for (end, says) in ends {
        for expect_err in [false, true] {
            // With no verdict at all.
            let got = judge(&Observed::ended(end.clone()), &exp(expect_err));
            assert!(
                matches!(&got, Outcome::Fail(t) if t.contains(says)),
                "{end:?} expect_err={expect_err}: {got:?}"
            );
        }
    }
    // A panic or hang after a failing verdict still fails, expect_err or not.
    for end in [
        EndReason::Panic {
            lines: vec!["Kernel panic".into()],
        },
        EndReason::Timeout,
    ] {
        let mut obs = powered_off(AssertResult::fail_msg("x"), None);
        obs.end = end.clone();
        assert!(
            matches!(judge(&obs, &exp(true)), Outcome::Fail(_)),
            "{end:?}"
        );
    }
}

#[test]
fn harness_errors_and_channel_faults_fail_and_are_named() {
    let mut obs = powered_off(AssertResult::pass(), None);
    obs.guest_errors.push("could not mount cgroup2".into());
    let Outcome::Fail(t) = judge(&obs, &exp(true)) else {
        panic!("harness errors fail even under expect_err");
    };
    assert!(t.contains("guest harness: could not mount cgroup2"), "{t}");
    let mut obs = Observed::ended(EndReason::PowerOff);
    obs.channel_fault = Some("frame at 64 is corrupt".into());
    let Outcome::Fail(t) = judge(&obs, &exp(false)) else {
        panic!("no verdict fails");
    };
    assert!(t.contains("channel: frame at 64 is corrupt"), "{t}");
    assert!(t.contains("last console lines") || t.contains("(no console output)"));
}

#[test]
fn a_scheduler_death_is_named_from_the_typed_message() {
    let mut obs = powered_off(AssertResult::fail("scheduler", "died"), None);
    obs.scheduler_death = Some(stall());
    obs.console = vec![
        "noise".into(),
        "sched_ext: BPF scheduler \"s\" disabled (runnable task stall)".into(),
        "sched_ext: s: watchdog failed to check in".into(),
    ];
    let Outcome::Fail(t) = judge(&obs, &exp(false)) else {
        panic!("a death fails");
    };
    assert!(
        t.contains("scheduler death: scheduler s died: SCX_EXIT_ERROR_STALL"),
        "{t}"
    );
    assert!(t.contains("kernel sched_ext dump"), "{t}");
    assert!(!t.contains("noise"), "{t}");
    // Expected (expect_err): the death passes, still named.
    let Outcome::Pass(t) = judge(&obs, &exp(true)) else {
        panic!("expected death passes");
    };
    assert!(t.contains("SCX_EXIT_ERROR_STALL"), "{t}");
}

#[test]
fn an_expect_err_matcher_accepts_only_its_failure() {
    let mut startup = powered_off(
        AssertResult::fail("scheduler", "scheduler x died at start-up (exit status: 1)"),
        Some("scheduler x died at start-up (exit status: 1)"),
    );
    startup.error_kinds = vec!["StartupDied".into()];
    let wants = |m: &'static str| Expectation {
        expect_err_matching: Some(m),
        ..exp(true)
    };
    assert!(matches!(
        judge(&startup, &wants("StartupDied")),
        Outcome::Pass(_)
    ));
    // A substring of the failure text matches too.
    assert!(matches!(
        judge(&startup, &wants("died at start-up")),
        Outcome::Pass(_)
    ));
    let Outcome::Fail(t) = judge(&startup, &wants("SCX_EXIT_ERROR_STALL")) else {
        panic!("a startup death is not a stall");
    };
    assert!(
        t.contains("not for that reason") && t.contains("StartupDied"),
        "{t}"
    );
    // A stall matches its own kinds, not StartupDied.
    let mut stalled = powered_off(AssertResult::fail("scheduler", "died"), None);
    stalled.error_kinds = vec!["SchedulerDied".into(), "SCX_EXIT_ERROR_STALL".into()];
    assert!(matches!(
        judge(&stalled, &wants("SCX_EXIT_ERROR_STALL")),
        Outcome::Pass(_)
    ));
    assert!(matches!(
        judge(&stalled, &wants("StartupDied")),
        Outcome::Fail(_)
    ));
    // A matcher never turns a pass into a pass.
    let passed = powered_off(AssertResult::pass(), None);
    assert!(matches!(
        judge(&passed, &wants("StartupDied")),
        Outcome::Fail(_)
    ));
}

#[test]
fn monitor_findings_join_the_verdict() {
    let with = |failures: &[&str], inconclusive: &[&str]| Observed {
        monitor: MonitorFindings {
            failures: failures.iter().map(|s| s.to_string()).collect(),
            inconclusive: inconclusive.iter().map(|s| s.to_string()).collect(),
            notes: vec!["monitor checks [stuck] judged over 40 samples".into()],
        },
        ..powered_off(AssertResult::pass(), None)
    };
    // A monitor failure fails a guest pass, and expect_err can ask for it.
    let stuck = with(&["monitor.stuck: CPU 1 had 2 runnable tasks"], &[]);
    match judge(&stuck, &exp(false)) {
        Outcome::Fail(t) => assert!(t.contains("monitor.stuck: CPU 1"), "{t}"),
        o => panic!("{o:?}"),
    }
    let e = Expectation {
        expect_err_matching: Some("monitor.stuck"),
        ..exp(true)
    };
    assert!(matches!(judge(&stuck, &e), Outcome::Pass(_)));
    let e = Expectation {
        expect_err_matching: Some("monitor.wait"),
        ..exp(true)
    };
    assert!(matches!(judge(&stuck, &e), Outcome::Fail(_)));
    // A check that could not judge is inconclusive: a failure unless allowed.
    let cannot = with(&[], &["monitor checks [stuck] could not judge: no BTF"]);
    match judge(&cannot, &exp(false)) {
        Outcome::Fail(t) => assert!(t.starts_with("inconclusive: monitor checks"), "{t}"),
        o => panic!("{o:?}"),
    }
    let allow = Expectation {
        allow_inconclusive: true,
        ..exp(false)
    };
    assert!(matches!(judge(&cannot, &allow), Outcome::Inconclusive(_)));
    // A clean pass says what was judged.
    match judge(&with(&[], &[]), &exp(false)) {
        Outcome::Pass(t) => assert!(t.contains("judged over 40 samples"), "{t}"),
        o => panic!("{o:?}"),
    }
}
