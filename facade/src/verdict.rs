//! The verdict: what the guest said and what the host saw, judged. Pure:
//! no I/O, every combination unit-tested.

use ktstr_ops::AssertResult;
use ktstr_ops::{ErrorKind, SchedulerDied};
use ktstr_vmm::EndReason;

pub mod monitor;
mod report;
pub use crate::outcome::{Kind, Outcome};
pub use monitor::{MonitorFindings, MonitorInput, judge_monitor};
pub use report::{MissingKfuncs, PostVm, ProbesError, Reached, RunReport, judge, render};

/// Console lines quoted in a failure.
const QUOTED_LINES: usize = 30;

/// What the test expects of itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expectation<'a> {
    /// The body is expected to fail.
    pub expect_err: bool,
    /// The kind the expected failure must have (`expect_err = "<kind>"`):
    /// a typed error kind the guest named, or the name of a check that failed.
    pub expect_err_matching: Option<&'a str>,
    /// A substring the expected failure's text must hold
    /// (`expect_err_text = "..."`).
    pub expect_err_text: Option<&'a str>,
    /// Accept a verdict that could not be judged.
    pub allow_inconclusive: bool,
    /// The host-side hang limit, for the failure text.
    pub watchdog_timeout_s: u32,
}

/// Everything the host observed of one VM that reached its end.
#[derive(Debug, Clone, PartialEq)]
pub struct Observed {
    /// How the VM ended.
    pub end: EndReason,
    /// The guest's verdict and the body's error, if it sent one.
    pub verdict: Option<(AssertResult, Option<String>)>,
    /// The kinds of the typed errors behind the guest's failure.
    pub error_kinds: Vec<ErrorKind>,
    /// Failures of the guest harness itself.
    pub guest_errors: Vec<String>,
    /// A scheduler death the guest reported.
    pub scheduler_death: Option<SchedulerDied>,
    /// Why the channel could not be read, if it could not.
    pub channel_fault: Option<String>,
    /// The console's last lines.
    pub console: Vec<String>,
    /// Whether the body started (the scheduler was up and the workload ran).
    pub body_started: bool,
    /// An auto-repro probe VM's records, as the guest reported them.
    pub probe: Option<serde_json::Value>,
    /// The release of the kernel the guest booted (`uname -r`), as it said.
    pub booted_release: Option<String>,
    /// What the monitor's checks found in the samples of the body.
    pub monitor: MonitorFindings,
}

#[cfg(test)]
impl Observed {
    /// A VM that ended with `end` and nothing else known.
    pub fn ended(end: EndReason) -> Self {
        Observed {
            end,
            verdict: None,
            error_kinds: Vec::new(),
            guest_errors: Vec::new(),
            scheduler_death: None,
            channel_fault: None,
            console: Vec::new(),
            body_started: false,
            probe: None,
            booted_release: None,
            monitor: MonitorFindings::default(),
        }
    }
}

/// The last console lines, indented, for a failure text.
pub fn quote(lines: &[String]) -> String {
    if lines.is_empty() {
        return "(no console output)".into();
    }
    let start = lines.len().saturating_sub(QUOTED_LINES);
    format!("last console lines:\n    {}", lines[start..].join("\n    "))
}

/// What decided a run's verdict first: how far the run got and what the
/// guest and the host's checks said.
#[derive(Debug, Clone, PartialEq)]
pub enum Cause {
    /// The test could not be run (set-up, kernel, scheduler, backend); the
    /// error's text.
    NotRun(String),
    /// The guest never reached the harness's init.
    NoInit {
        /// How long the host waited.
        after: std::time::Duration,
    },
    /// The guest kernel panicked.
    KernelPanic,
    /// The guest did not finish within the watchdog.
    Hung,
    /// The VM process died.
    VmCrashed,
    /// The guest reset before it sent a verdict.
    ResetBeforeVerdict,
    /// The guest ended without a verdict.
    NoVerdict,
    /// The guest harness reported errors of its own.
    HarnessErrors,
    /// The guest's checks and the monitor's passed.
    Passed,
    /// A check failed (the guest's or the monitor's).
    ChecksFailed,
    /// Checks could not judge, and the run does not accept that.
    InconclusiveRefused(Vec<String>),
    /// Checks could not judge, and the run accepts that.
    InconclusiveAccepted(Vec<String>),
    /// The test failed, as `expect_err` wants.
    FailedAsExpected,
    /// The test failed, but not with the kind `expect_err` names.
    ExpectErrWrongReason {
        /// The kind the test expects.
        matching: String,
    },
    /// The test failed, but its text lacks what `expect_err_text` names.
    ExpectErrWrongText {
        /// The text the test expects.
        text: String,
    },
    /// An `expect_err` test passed.
    ExpectErrPassed,
}

impl Cause {
    /// Failures of the machinery, which `expect_err` never inverts.
    pub fn is_infrastructure(&self) -> bool {
        matches!(
            self,
            Cause::NotRun(_)
                | Cause::NoInit { .. }
                | Cause::KernelPanic
                | Cause::Hung
                | Cause::VmCrashed
                | Cause::ResetBeforeVerdict
                | Cause::NoVerdict
                | Cause::HarnessErrors
        )
    }
}

/// What else the host found after the guest's verdict.
#[derive(Debug, Clone, PartialEq)]
pub enum Finding {
    /// Probes the test asked for did not run or sent nothing back.
    ProbesFailed(String),
    /// The test's `post_vm` check failed (its error).
    PostVmFailed(String),
    /// The test's `post_vm` check panicked (its message).
    PostVmPanicked(String),
    /// A scheduler that died at start-up runs on a kernel that lacks kfuncs
    /// its BPF objects call.
    MissingKfuncs(MissingKfuncs),
    /// The guest booted another kernel than the one the run resolved (and
    /// records): its verdict is not of the kernel asked for.
    WrongKernel {
        /// The release of the kernel the run resolved.
        resolved: String,
        /// The release the guest reported.
        booted: String,
    },
}

/// The verdict of one run: typed; text is made from it only for display
/// ([`render`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// Pass, fail or inconclusive.
    pub kind: Kind,
    /// What decided it first.
    pub cause: Cause,
    /// What the host's later checks added.
    pub findings: Vec<Finding>,
}

/// The guest's verdict and the monitor's findings, and the failure text
/// they make (what `expect_err_matching` searches as text).
fn checks_text(obs: &Observed) -> Option<String> {
    let (v, body_error) = obs.verdict.as_ref()?;
    let mon = &obs.monitor;
    let mut text = match body_error {
        Some(e) if v.details().len() <= 1 => e.clone(),
        _ => v.to_string(),
    };
    for f in &mon.failures {
        text.push_str(&format!("\n  {f}"));
    }
    for n in &mon.notes {
        text.push_str(&format!("\n  {n}"));
    }
    if let Some(death) = &obs.scheduler_death {
        text.push_str(&scheduler_death_text(death, &obs.console));
    }
    Some(text)
}

/// The kinds of a failure, each once: the typed errors the guest named, the
/// checks of its verdict that failed and the monitor's.
fn failure_kinds(obs: &Observed) -> Vec<&str> {
    let mut kinds: Vec<&str> = obs.error_kinds.iter().map(|k| k.name()).collect();
    if let Some((v, _)) = &obs.verdict {
        kinds.extend(
            v.details()
                .iter()
                .filter(|d| d.failed)
                .map(|d| d.check.as_str()),
        );
    }
    kinds.extend(obs.monitor.failed_checks.iter().copied());
    let mut seen = Vec::new();
    kinds.retain(|k| {
        let new = !seen.contains(k);
        seen.push(*k);
        new
    });
    kinds
}

/// What the guest and the monitor said of one VM that reached its end.
fn judge_observed(obs: &Observed, exp: &Expectation<'_>) -> (Kind, Cause) {
    match &obs.end {
        EndReason::Panic { .. } => return (Kind::Fail, Cause::KernelPanic),
        EndReason::Timeout => return (Kind::Fail, Cause::Hung),
        EndReason::Crashed { .. } => return (Kind::Fail, Cause::VmCrashed),
        EndReason::Reset if obs.verdict.is_none() => {
            return (Kind::Fail, Cause::ResetBeforeVerdict);
        }
        _ => {}
    }
    let (Some((v, _)), Some(text)) = (&obs.verdict, checks_text(obs)) else {
        return (Kind::Fail, Cause::NoVerdict);
    };
    if !obs.guest_errors.is_empty() {
        return (Kind::Fail, Cause::HarnessErrors);
    }
    // The monitor's checks join the guest's: a failure fails, a check that
    // could not judge is one more inconclusive reason.
    let mon = &obs.monitor;
    let failed = !v.is_pass() || !mon.failures.is_empty();
    let inconclusive: Vec<String> = v
        .inconclusive()
        .iter()
        .chain(mon.inconclusive.iter())
        .cloned()
        .collect();
    match (failed, exp.expect_err) {
        // Timing checks that would have failed on an overcommitted VM are
        // notes plus inconclusive reasons: no hard failure, no trustworthy pass.
        (false, false) if !inconclusive.is_empty() && exp.allow_inconclusive => (
            Kind::Inconclusive,
            Cause::InconclusiveAccepted(inconclusive),
        ),
        // A check that could not judge is not a pass.
        (false, false) if !inconclusive.is_empty() => {
            (Kind::Fail, Cause::InconclusiveRefused(inconclusive))
        }
        (false, false) => (Kind::Pass, Cause::Passed),
        (true, true) => {
            let kinds = failure_kinds(obs);
            match (exp.expect_err_matching, exp.expect_err_text) {
                (Some(m), _) if !kinds.contains(&m) => (
                    Kind::Fail,
                    Cause::ExpectErrWrongReason {
                        matching: m.to_string(),
                    },
                ),
                (_, Some(t)) if !text.contains(t) => (
                    Kind::Fail,
                    Cause::ExpectErrWrongText {
                        text: t.to_string(),
                    },
                ),
                _ => (Kind::Pass, Cause::FailedAsExpected),
            }
        }
        (false, true) => (Kind::Fail, Cause::ExpectErrPassed),
        (true, false) => (Kind::Fail, Cause::ChecksFailed),
    }
}

/// The text of a verdict's cause (the first part of its display).
fn cause_text(obs: Option<&Observed>, exp: &Expectation<'_>, cause: &Cause) -> String {
    let Some(obs) = obs else {
        return match cause {
            Cause::NotRun(e) => e.clone(),
            other => format!("{other:?}"),
        };
    };
    // Failures of the machinery carry the harness's errors and the console.
    let infra = |what: String| {
        let mut msg = what;
        for e in &obs.guest_errors {
            msg.push_str(&format!("\n  guest harness: {e}"));
        }
        if let Some(f) = &obs.channel_fault {
            msg.push_str(&format!("\n  channel: {f}"));
        }
        format!("{msg}\n{}", quote(&obs.console))
    };
    let end = &obs.end;
    let text = checks_text(obs).unwrap_or_default();
    let joined = |r: &[String]| r.join("; ");
    match cause {
        Cause::NotRun(e) => e.clone(),
        Cause::NoInit { after } => no_init_text(*after, &obs.console),
        Cause::KernelPanic => match end {
            EndReason::Panic { lines } => format!(
                "guest kernel panic (never inverted by expect_err):\n    {}",
                lines.join("\n    ")
            ),
            _ => "guest kernel panic (never inverted by expect_err)".into(),
        },
        Cause::Hung => infra(format!(
            "hung: the guest did not finish within watchdog_timeout_s = {} s",
            exp.watchdog_timeout_s
        )),
        Cause::VmCrashed => match end {
            EndReason::Crashed { detail } => infra(format!("the VM crashed: {detail}")),
            _ => infra("the VM crashed".into()),
        },
        Cause::ResetBeforeVerdict => {
            infra("the guest reset before reporting (init crash or triple fault)".into())
        }
        Cause::NoVerdict => infra(format!("the guest ended ({end}) without a verdict")),
        Cause::HarnessErrors => infra(format!(
            "the guest ended ({end}) after its verdict with harness errors"
        )),
        Cause::InconclusiveAccepted(r) => {
            format!("{text}\n  inconclusive: {}", joined(r))
        }
        Cause::InconclusiveRefused(r) => format!(
            "inconclusive: {} (accept with allow_inconclusive = true on the test, or \
             KTSTR_ALLOW_INCONCLUSIVE=1 for the run)\n{text}",
            joined(r)
        ),
        Cause::Passed | Cause::ChecksFailed => text,
        Cause::FailedAsExpected => format!("failed as expected (expect_err): {text}"),
        Cause::ExpectErrWrongReason { matching } => format!(
            "expect_err = {matching:?}: the test failed, but not for that reason (error kinds: \
             [{}]): {text}",
            failure_kinds(obs).join(", ")
        ),
        Cause::ExpectErrWrongText { text: want } => format!(
            "expect_err_text = {want:?}: the test failed, but its failure text does not say \
             that: {text}"
        ),
        Cause::ExpectErrPassed => format!("expect_err test passed, but it must fail: {text}"),
    }
}

/// The failure text of a guest that never reached init.
pub(crate) fn no_init_text(after: std::time::Duration, console: &[String]) -> String {
    format!(
        "hung before init: the guest did not reach the harness's init within {:.0}s \
         (boot limit KTSTR_BOOT_TIMEOUT_S)\n{}",
        after.as_secs_f64(),
        quote(console)
    )
}

/// Judges one VM that reached its end, and only what the guest and the
/// monitor said: [`judge`] of a report with nothing else in it, and the
/// text of its cause.
#[cfg(test)]
pub fn judge_vm(obs: &Observed, exp: &Expectation<'static>) -> Outcome {
    let mut r = RunReport::new("t", *exp);
    r.reached = Reached::Ended(Box::new(obs.clone()));
    let v = judge(&r);
    Outcome::of(v.kind, cause_text(Some(obs), exp, &v.cause))
}

/// What follows a failure text when a scheduler died: the kernel's own
/// sched_ext dump from the console. (The runner appends auto-repro's
/// AUTO-PROBE block after its probe VM.)
fn scheduler_death_text(death: &SchedulerDied, console: &[String]) -> String {
    let mut text = format!("\n  scheduler death: {death}");
    let dump: Vec<&str> = console
        .iter()
        .skip_while(|l| !l.contains("sched_ext: BPF scheduler") || !l.contains("disabled"))
        .take(40)
        .map(String::as_str)
        .collect();
    if !dump.is_empty() {
        text.push_str(&format!(
            "\n  kernel sched_ext dump (console):\n    {}",
            dump.join("\n    ")
        ));
    }
    text
}

#[cfg(test)]
mod tests;
