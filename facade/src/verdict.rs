//! The verdict: what the guest said and what the host saw, judged. Pure:
//! no I/O, every combination unit-tested.

use ktstr_ops::assert::AssertResult;
use ktstr_ops::scheduler::SchedulerDied;
use ktstr_vmm::EndReason;

pub mod monitor;
pub use monitor::{MonitorFindings, MonitorInput, judge_monitor};

/// Console lines quoted in a failure.
const QUOTED_LINES: usize = 30;

/// The outcome of one test VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The test passed (or failed as `expect_err` wanted).
    Pass(String),
    /// The test failed.
    Fail(String),
    /// The verdict depends on timing the VM could not provide.
    Inconclusive(String),
}

/// What the test expects of itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expectation<'a> {
    /// The body is expected to fail.
    pub expect_err: bool,
    /// What the expected failure must match: an error kind the guest named
    /// or a substring of the failure text.
    pub expect_err_matching: Option<&'a str>,
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
    pub error_kinds: Vec<String>,
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

/// Judges one run.
pub fn judge(obs: &Observed, exp: &Expectation<'_>) -> Outcome {
    // Failures of the machinery are never inverted by expect_err.
    let infra = |what: String| {
        let mut msg = what;
        for e in &obs.guest_errors {
            msg.push_str(&format!("\n  guest harness: {e}"));
        }
        if let Some(f) = &obs.channel_fault {
            msg.push_str(&format!("\n  channel: {f}"));
        }
        Outcome::Fail(format!("{msg}\n{}", quote(&obs.console)))
    };
    let end = &obs.end;
    match end {
        EndReason::Panic { lines: panic } => {
            return Outcome::Fail(format!(
                "guest kernel panic (never inverted by expect_err):\n    {}",
                panic.join("\n    ")
            ));
        }
        EndReason::Timeout => {
            return infra(format!(
                "hung: the guest did not finish within watchdog_timeout_s = {} s",
                exp.watchdog_timeout_s
            ));
        }
        EndReason::Crashed { detail } => return infra(format!("the VM crashed: {detail}")),
        EndReason::Reset if obs.verdict.is_none() => {
            return infra("the guest reset before reporting (init crash or triple fault)".into());
        }
        _ => {}
    }
    let Some((v, body_error)) = &obs.verdict else {
        return infra(format!("the guest ended ({end}) without a verdict"));
    };
    if !obs.guest_errors.is_empty() {
        return infra(format!(
            "the guest ended ({end}) after its verdict with harness errors"
        ));
    }
    // The monitor's checks join the guest's: a failure fails, a check that
    // could not judge is one more inconclusive reason.
    let mon = &obs.monitor;
    let failed = !v.is_pass() || !mon.failures.is_empty();
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
    let inconclusive: Vec<&str> = v
        .inconclusive()
        .iter()
        .map(String::as_str)
        .chain(mon.inconclusive.iter().map(String::as_str))
        .collect();
    if let Some(death) = &obs.scheduler_death {
        text.push_str(&scheduler_death_text(death, &obs.console));
    }
    match (failed, exp.expect_err) {
        // Timing checks that would have failed on an overcommitted VM are
        // notes plus inconclusive reasons: no hard failure, no trustworthy pass.
        (false, false) if !inconclusive.is_empty() && exp.allow_inconclusive => {
            Outcome::Inconclusive(format!(
                "{text}\n  inconclusive: {}",
                inconclusive.join("; ")
            ))
        }
        // A check that could not judge is not a pass.
        (false, false) if !inconclusive.is_empty() => Outcome::Fail(format!(
            "inconclusive: {} (accept with allow_inconclusive = true on the test, or \
             KTSTR_ALLOW_INCONCLUSIVE=1 for the run)\n{text}",
            inconclusive.join("; ")
        )),
        (false, false) => Outcome::Pass(text),
        (true, true) => match exp.expect_err_matching {
            Some(m) if !obs.error_kinds.iter().any(|k| k == m) && !text.contains(m) => {
                Outcome::Fail(format!(
                    "expect_err = {m:?}: the test failed, but not for that reason (error kinds: \
                     [{}]): {text}",
                    obs.error_kinds.join(", ")
                ))
            }
            _ => Outcome::Pass(format!("failed as expected (expect_err): {text}")),
        },
        (false, true) => Outcome::Fail(format!("expect_err test passed, but it must fail: {text}")),
        (true, false) => Outcome::Fail(text),
    }
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
