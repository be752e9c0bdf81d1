//! Every combination of guest verdict, notes, inconclusive reasons,
//! infrastructure failures, scheduler deaths and `expect_err`.

use super::report::{MissingKfuncs, PostVm, ProbesError, Reached, RunReport, judge};
use super::*;
use ktstr_ops::{ErrorKind, ExitKind};

fn exp(expect_err: bool) -> Expectation<'static> {
    Expectation {
        expect_err,
        expect_err_matching: None,
        expect_err_text: None,
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
            let got = judge_vm(&powered_off(v.clone(), err), &exp(expect_err));
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
                    let got = judge_vm(&powered_off(v.clone(), err), &allowed);
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
    let Outcome::Fail(t) = judge_vm(&powered_off(v, err), &exp(false)) else {
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
            let got = judge_vm(&Observed::ended(end.clone()), &exp(expect_err));
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
            matches!(judge_vm(&obs, &exp(true)), Outcome::Fail(_)),
            "{end:?}"
        );
    }
}

#[test]
fn harness_errors_and_channel_faults_fail_and_are_named() {
    let mut obs = powered_off(AssertResult::pass(), None);
    obs.guest_errors.push("could not mount cgroup2".into());
    let Outcome::Fail(t) = judge_vm(&obs, &exp(true)) else {
        panic!("harness errors fail even under expect_err");
    };
    assert!(t.contains("guest harness: could not mount cgroup2"), "{t}");
    let mut obs = Observed::ended(EndReason::PowerOff);
    obs.channel_fault = Some("frame at 64 is corrupt".into());
    let Outcome::Fail(t) = judge_vm(&obs, &exp(false)) else {
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
    let Outcome::Fail(t) = judge_vm(&obs, &exp(false)) else {
        panic!("a death fails");
    };
    assert!(
        t.contains("scheduler death: scheduler s died: SCX_EXIT_ERROR_STALL"),
        "{t}"
    );
    assert!(t.contains("kernel sched_ext dump"), "{t}");
    assert!(!t.contains("noise"), "{t}");
    // Expected (expect_err): the death passes, still named.
    let Outcome::Pass(t) = judge_vm(&obs, &exp(true)) else {
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
    startup.error_kinds = vec![ErrorKind::StartupDied];
    let wants = |m: &'static str| Expectation {
        expect_err_matching: Some(m),
        ..exp(true)
    };
    assert!(matches!(
        judge_vm(&startup, &wants("StartupDied")),
        Outcome::Pass(_)
    ));
    // A substring of the failure text matches only when asked for as text
    // (expect_err_text), never as a kind.
    let says = |t: &'static str| Expectation {
        expect_err_text: Some(t),
        ..exp(true)
    };
    assert!(matches!(
        judge_vm(&startup, &says("died at start-up")),
        Outcome::Pass(_)
    ));
    assert!(matches!(
        judge_vm(&startup, &wants("died at start-up")),
        Outcome::Fail(_)
    ));
    let Outcome::Fail(t) = judge_vm(&startup, &says("runnable task stall")) else {
        panic!("the text does not say so");
    };
    assert!(
        t.starts_with("expect_err_text = \"runnable task stall\""),
        "{t}"
    );
    let Outcome::Fail(t) = judge_vm(&startup, &wants("SCX_EXIT_ERROR_STALL")) else {
        panic!("a startup death is not a stall");
    };
    assert!(
        t.contains("not for that reason") && t.contains("StartupDied"),
        "{t}"
    );
    // A stall matches its own kinds, not StartupDied.
    let mut stalled = powered_off(AssertResult::fail("scheduler", "died"), None);
    stalled.error_kinds = vec![
        ErrorKind::SchedulerDied,
        ErrorKind::Exit(ExitKind::ErrorStall),
    ];
    assert!(matches!(
        judge_vm(&stalled, &wants("SCX_EXIT_ERROR_STALL")),
        Outcome::Pass(_)
    ));
    assert!(matches!(
        judge_vm(&stalled, &wants("StartupDied")),
        Outcome::Fail(_)
    ));
    // A failed check's name is a kind too; a check that passed is not.
    let unfair = powered_off(
        AssertResult::fail("fairness", "spread 60%")
            .merged(AssertResult::pass().note("starvation", "none")),
        None,
    );
    assert!(matches!(
        judge_vm(&unfair, &wants("fairness")),
        Outcome::Pass(_)
    ));
    assert!(matches!(
        judge_vm(&unfair, &wants("starvation")),
        Outcome::Fail(_)
    ));
    // A matcher never turns a pass into a pass.
    let passed = powered_off(AssertResult::pass(), None);
    assert!(matches!(
        judge_vm(&passed, &wants("StartupDied")),
        Outcome::Fail(_)
    ));
}

#[test]
fn monitor_findings_join_the_verdict() {
    let with = |failures: &[&str], inconclusive: &[&str]| Observed {
        monitor: MonitorFindings {
            failures: failures.iter().map(|s| s.to_string()).collect(),
            inconclusive: inconclusive.iter().map(|s| s.to_string()).collect(),
            failed_checks: failures
                .iter()
                .filter_map(|f| ["monitor.stuck"].into_iter().find(|c| f.starts_with(c)))
                .collect(),
            notes: vec!["monitor checks [stuck] judged over 40 samples".into()],
        },
        ..powered_off(AssertResult::pass(), None)
    };
    // A monitor failure fails a guest pass, and expect_err can ask for it.
    let stuck = with(&["monitor.stuck: CPU 1 had 2 runnable tasks"], &[]);
    match judge_vm(&stuck, &exp(false)) {
        Outcome::Fail(t) => assert!(t.contains("monitor.stuck: CPU 1"), "{t}"),
        o => panic!("{o:?}"),
    }
    let e = Expectation {
        expect_err_matching: Some("monitor.stuck"),
        ..exp(true)
    };
    assert!(matches!(judge_vm(&stuck, &e), Outcome::Pass(_)));
    let e = Expectation {
        expect_err_matching: Some("monitor.wait"),
        ..exp(true)
    };
    assert!(matches!(judge_vm(&stuck, &e), Outcome::Fail(_)));
    // A check that could not judge is inconclusive: a failure unless allowed.
    let cannot = with(&[], &["monitor checks [stuck] could not judge: no BTF"]);
    match judge_vm(&cannot, &exp(false)) {
        Outcome::Fail(t) => assert!(t.starts_with("inconclusive: monitor checks"), "{t}"),
        o => panic!("{o:?}"),
    }
    let allow = Expectation {
        allow_inconclusive: true,
        ..exp(false)
    };
    assert!(matches!(
        judge_vm(&cannot, &allow),
        Outcome::Inconclusive(_)
    ));
    // A clean pass says what was judged.
    match judge_vm(&with(&[], &[]), &exp(false)) {
        Outcome::Pass(t) => assert!(t.contains("judged over 40 samples"), "{t}"),
        o => panic!("{o:?}"),
    }
}

/// A report of a VM that ended with `obs`, expecting `exp`.
fn ended(obs: Observed, exp: Expectation<'static>) -> RunReport {
    let mut r = RunReport::new("t", exp);
    r.reached = Reached::Ended(Box::new(obs));
    r.monitor_tail = "monitor: no samples".into();
    r
}

fn probe_report(errors: &[&str]) -> ktstr_probe::ProbeReport {
    let mut r = ktstr_probe::ProbeReport::default();
    r.text = "=== PROBES (on request): f ===\n".into();
    r.errors = errors.iter().map(|e| e.to_string()).collect();
    r
}

#[test]
fn a_run_that_did_not_reach_its_vm_fails_whatever_it_expects() {
    for expect_err in [false, true] {
        let mut r = RunReport::new("t", exp(expect_err));
        r.reached = Reached::NotRun("no kernel: run `cargo xtask kernel fetch`".into());
        let v = judge(&r);
        assert_eq!(v.kind, Kind::Fail);
        assert!(v.cause.is_infrastructure());
        assert_eq!(
            r.outcome(),
            Outcome::Fail("no kernel: run `cargo xtask kernel fetch`".into())
        );
        r.reached = Reached::NoInit {
            after: std::time::Duration::from_secs(60),
            console: vec!["Booting".into()],
        };
        let v = judge(&r);
        assert_eq!(
            (v.kind, &v.cause),
            (
                Kind::Fail,
                &Cause::NoInit {
                    after: std::time::Duration::from_secs(60)
                }
            )
        );
        let o = r.outcome();
        assert!(o.text().starts_with("hung before init"), "{o:?}");
        assert!(o.text().contains("Booting"), "{o:?}");
    }
}

#[test]
fn probes_that_did_not_run_fail_the_test_and_their_block_follows_a_failure() {
    // Without probes, or with a clean report, a pass stays a pass, untouched.
    let pass = ended(powered_off(AssertResult::pass(), None), exp(false));
    let plain = pass.outcome();
    assert_eq!(plain.kind(), Kind::Pass);
    let mut clean = ended(powered_off(AssertResult::pass(), None), exp(false));
    clean.probes = Some(Ok(probe_report(&[])));
    assert_eq!(clean.outcome(), plain);
    assert!(judge(&clean).findings.is_empty());
    // A refused probe fails it, naming why, with the block.
    let mut refused = ended(powered_off(AssertResult::pass(), None), exp(false));
    refused.probes = Some(Ok(probe_report(&["probe on f not installed"])));
    let v = judge(&refused);
    assert_eq!(v.kind, Kind::Fail);
    assert!(matches!(&v.findings[..], [Finding::ProbesFailed(p)] if p.contains("not installed")));
    let t = refused.outcome();
    assert!(
        t.text().starts_with("probes: probe on f not installed"),
        "{t:?}"
    );
    assert!(t.text().contains("=== PROBES"), "{t:?}");
    // No records at all fail it too.
    refused.probes = Some(Err(ProbesError::NoRecords));
    let t = refused.outcome();
    assert_eq!(t.kind(), Kind::Fail);
    assert!(
        t.text().contains("the guest sent no probe records"),
        "{t:?}"
    );
    // A failing test gets the block after its own text.
    let mut failed = ended(
        powered_off(AssertResult::fail_msg("boom"), Some("boom")),
        exp(false),
    );
    failed.probes = Some(Ok(probe_report(&[])));
    let t = failed.outcome();
    assert!(t.text().starts_with("boom\n\n=== PROBES"), "{t:?}");
}

#[test]
fn a_post_vm_failure_overturns_a_pass_and_follows_a_failure() {
    let mut r = ended(powered_off(AssertResult::pass(), None), exp(false));
    r.post_vm = PostVm::Passed;
    assert_eq!(judge(&r).kind, Kind::Pass);
    r.post_vm = PostVm::Failed("nr_dispatched 0".into());
    let v = judge(&r);
    assert_eq!(v.kind, Kind::Fail);
    assert_eq!(
        v.findings,
        vec![Finding::PostVmFailed("nr_dispatched 0".into())]
    );
    let t = r.outcome();
    assert!(
        t.text()
            .starts_with("post_vm check failed: nr_dispatched 0\n(guest verdict: "),
        "{t:?}"
    );
    // An expected failure is overturned the same way.
    let mut r = ended(powered_off(AssertResult::fail_msg("x"), None), exp(true));
    assert_eq!(judge(&r).kind, Kind::Pass);
    r.post_vm = PostVm::Panicked("index out of bounds".into());
    assert_eq!(judge(&r).kind, Kind::Fail);
    assert!(
        r.outcome()
            .text()
            .starts_with("post_vm check panicked: index out of bounds")
    );
    // After a failure, it follows the failure's text.
    let mut r = ended(
        powered_off(AssertResult::fail_msg("boom"), Some("boom")),
        exp(false),
    );
    r.post_vm = PostVm::Failed("also this".into());
    assert!(
        r.outcome()
            .text()
            .starts_with("boom\npost_vm check failed: also this")
    );
}

#[test]
fn a_failure_carries_the_monitor_tail_the_dump_and_the_repro_block_a_pass_does_not() {
    let with = |v: AssertResult| {
        let mut r = ended(powered_off(v, None), exp(false));
        r.dump_text = Some("=== SCHEDULER STATE ===".into());
        r.repro = Some("=== AUTO-PROBE: scx_exit fired ===".into());
        r
    };
    let t = with(AssertResult::fail_msg("x")).outcome();
    let t = t.text();
    let tail = t.find("monitor: no samples").expect("the tail");
    let dump = t.find("=== SCHEDULER STATE").expect("the dump");
    let repro = t.find("=== AUTO-PROBE").expect("the block");
    assert!(tail < dump && dump < repro, "{t}");
    let t = with(AssertResult::pass()).outcome();
    assert_eq!(t.kind(), Kind::Pass);
    assert!(
        !t.text().contains("monitor: no samples") && !t.text().contains("==="),
        "{t:?}"
    );
}

#[test]
fn missing_kfuncs_explain_a_failure_only() {
    let missing = MissingKfuncs {
        scheduler: "scx_mine".into(),
        release: "6.12.0".into(),
        kfuncs: vec!["scx_bpf_dsq_move".into()],
    };
    let mut r = ended(
        powered_off(
            AssertResult::fail(
                "scheduler",
                "scheduler scx_mine died at start-up (exit status: 1)",
            ),
            None,
        ),
        exp(false),
    );
    r.missing_kfuncs = Some(missing.clone());
    let v = judge(&r);
    assert_eq!(v.findings, vec![Finding::MissingKfuncs(missing.clone())]);
    assert!(r.outcome().text().ends_with(
        "\n  kernel 6.12.0 lacks kfuncs that scx_mine's BPF objects call (not weak), or has them \
         with another prototype: scx_bpf_dsq_move"
    ));
    // Expected (expect_err): a pass, with nothing to explain.
    r.expectation = exp(true);
    let v = judge(&r);
    assert_eq!((v.kind, v.findings.len()), (Kind::Pass, 0));
}

/// The kernel a report resolved, by its release.
fn kernel_of(release: &str) -> ktstr_kernel::Kernel {
    ktstr_kernel::Kernel {
        release: Some(release.into()),
        ..ktstr_kernel::Kernel::at("/k/vmlinux".into(), ktstr_kernel::KernelOrigin::Explicit)
    }
}

#[test]
fn a_guest_on_another_kernel_than_resolved_fails_whatever_it_said() {
    let booted = |release: Option<&str>, v: AssertResult| {
        let mut obs = powered_off(v, None);
        obs.booted_release = release.map(str::to_string);
        let mut r = ended(obs, exp(false));
        r.kernel = Some(kernel_of("7.3.4+deb13-cloud-amd64"));
        r
    };
    let r = booted(Some("6.18.15+deb13-cloud-amd64"), AssertResult::pass());
    let v = judge(&r);
    assert_eq!(v.kind, Kind::Fail);
    assert_eq!(
        v.findings,
        vec![Finding::WrongKernel {
            resolved: "7.3.4+deb13-cloud-amd64".into(),
            booted: "6.18.15+deb13-cloud-amd64".into(),
        }]
    );
    let t = r.outcome();
    assert_eq!(t.kind(), Kind::Fail);
    assert!(
        t.text().starts_with(
            "the guest booted kernel 6.18.15+deb13-cloud-amd64, not 7.3.4+deb13-cloud-amd64"
        ),
        "{t:?}"
    );
    // An expected failure on the wrong kernel is not the expected one.
    let mut r = booted(
        Some("6.18.15+deb13-cloud-amd64"),
        AssertResult::fail("fairness", "spread 40%"),
    );
    r.expectation = exp(true);
    assert_eq!(judge(&r).kind, Kind::Fail);
    // The same release, or a guest that did not say: the guest's verdict.
    let r = booted(Some("7.3.4+deb13-cloud-amd64"), AssertResult::pass());
    assert_eq!((judge(&r).kind, judge(&r).findings.len()), (Kind::Pass, 0));
    let r = booted(None, AssertResult::pass());
    assert_eq!(judge(&r).kind, Kind::Pass);
}
