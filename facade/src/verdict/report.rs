//! One run, observed: everything the runner (the collector) learned of a
//! test, from its set-up to its probe VM, in one typed struct. [`judge`]
//! decides over it, purely; [`render`] makes the text a person reads;
//! `results` makes the record. A new verdict input is a field here, a line
//! in the collector and a branch in [`judge`].

use std::time::Duration;

use ktstr_probe::ProbeReport;

use super::{Cause, Expectation, Finding, Kind, Observed, Outcome, Verdict};

/// How far a run got.
#[derive(Debug)]
pub enum Reached {
    /// It could not be run; the error's text.
    NotRun(String),
    /// The guest never reached the harness's init.
    NoInit {
        /// How long the host waited.
        after: Duration,
        /// The console's last lines.
        console: Vec<String>,
    },
    /// The VM reached its end.
    Ended(Box<Observed>),
}

/// Why the probes a test asked for gave no report.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ProbesError {
    /// The guest sent nothing.
    #[error("the guest sent no probe records")]
    NoRecords,
    /// The guest's records are not what the host expects.
    #[error("the guest's probe records do not parse: {0}")]
    RecordsDoNotParse(String),
    /// The kernel's BTF could not be read to decode them.
    #[error("{0}")]
    Kernel(String),
}

/// kfuncs a scheduler's BPF objects call (not weak) that its kernel lacks,
/// or has with another prototype.
#[derive(Debug, Clone, PartialEq)]
pub struct MissingKfuncs {
    /// The scheduler.
    pub scheduler: String,
    /// The kernel's release (or "this kernel").
    pub release: String,
    /// The kfuncs.
    pub kfuncs: Vec<String>,
}

/// What the test's `post_vm` check said.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum PostVm {
    /// The test has none, or it has not run yet.
    #[default]
    NotRun,
    /// It returned `Ok`.
    Passed,
    /// It returned an error (its text, with its chain).
    Failed(String),
    /// It panicked (the panic's message).
    Panicked(String),
}

/// Everything observed about one run.
#[derive(Debug)]
pub struct RunReport {
    /// The test's name (`module::function`).
    pub test: &'static str,
    /// What the test expects of itself.
    pub expectation: Expectation<'static>,
    /// How far the run got, and what the VM said if it ended.
    pub reached: Reached,
    /// The report of the probes the test asked for (`probes = [...]`).
    pub probes: Option<Result<ProbeReport, ProbesError>>,
    /// The test's `post_vm` check.
    pub post_vm: PostVm,
    /// kfuncs the scheduler's BPF objects call that the kernel lacks, looked
    /// up when the scheduler died at start-up.
    pub missing_kfuncs: Option<MissingKfuncs>,
    /// Auto-repro's AUTO-PROBE block, after a scheduler crash.
    pub repro: Option<String>,
    /// The monitor's last periodic samples, as text (after a failure).
    pub monitor_tail: String,
    /// The scheduler's state read from guest memory, as text.
    pub dump_text: Option<String>,
    /// VMs booted (the test's and auto-repro's probe VM).
    pub boots: u32,
    /// Time the VMs waited for host slots.
    pub slot_wait: Duration,
    /// The backend that ran the VM, once chosen.
    pub backend: Option<String>,
    /// The kernel the run resolved and booted (its identity goes into the
    /// record; [`judge`] holds the guest's own release against it).
    pub kernel: Option<ktstr_kernel::Kernel>,
    /// The VM's topology (the declared one when the run ended before its VM
    /// was prepared).
    pub topology: Option<String>,
    /// Name, host binary and arguments of the booted scheduler.
    pub(crate) scheduler: Option<(String, std::path::PathBuf, Vec<String>)>,
    /// What the monitor read, summed up for the record.
    pub(crate) monitor_summary: Option<ktstr_record::MonitorSummary>,
    /// The scenario's steps as they started.
    pub(crate) steps: Vec<crate::monitor::StepStart>,
    /// The test VM's phases.
    pub(crate) phases: crate::results::Phases,
    /// The failure dump, when one was read.
    pub(crate) dump: Option<ktstr_record::SchedulerDump>,
    /// The verifier's figures of the scheduler's programs.
    pub(crate) bpf_progs: Vec<ktstr_record::ProgStats>,
    /// The recording of the test's VM (`record`): kept when the test fails,
    /// deleted when it passes.
    pub recording: Option<std::path::PathBuf>,
}

impl RunReport {
    /// A report of a run that has not got anywhere yet.
    pub fn new(test: &'static str, expectation: Expectation<'static>) -> RunReport {
        RunReport {
            test,
            expectation,
            reached: Reached::NotRun("the run did not start".into()),
            probes: None,
            post_vm: PostVm::NotRun,
            missing_kfuncs: None,
            repro: None,
            monitor_tail: String::new(),
            dump_text: None,
            boots: 0,
            slot_wait: Duration::ZERO,
            backend: None,
            kernel: None,
            topology: None,
            scheduler: None,
            monitor_summary: None,
            steps: Vec::new(),
            phases: crate::results::Phases::default(),
            dump: None,
            bpf_progs: Vec::new(),
            recording: None,
        }
    }

    /// What the monitor read, as the run's record keeps it (its series has
    /// each sample's guest clock and per-CPU `nr_running`).
    pub fn monitor_summary(&self) -> Option<&ktstr_record::MonitorSummary> {
        self.monitor_summary.as_ref()
    }

    /// The test's wall time, from the run's start to its record.
    pub fn total(&self) -> Duration {
        self.phases.total
    }

    /// How the test's VM started: `"cold"` or `"restored"` (`None`: it did
    /// not start).
    pub fn start(&self) -> Option<&'static str> {
        self.phases.start.map(ktstr_record::Start::as_str)
    }

    /// The guest's clock minus the host's as init started, in seconds.
    pub fn clock_skew_s(&self) -> Option<f64> {
        self.phases.clock_skew
    }

    /// The run's wall time minus the body and the test VM's wait for host
    /// slots (`None` until the run has ended).
    pub fn overhead(&self) -> Option<Duration> {
        let p = &self.phases;
        (!p.total.is_zero())
            .then_some(p.total)?
            .checked_sub(p.body.unwrap_or_default())?
            .checked_sub(p.slot_wait)
    }

    /// What the VM said, if it reached its end.
    pub fn observed(&self) -> Option<&Observed> {
        match &self.reached {
            Reached::Ended(o) => Some(o),
            _ => None,
        }
    }

    /// The run's verdict, judged, and its text: what a test of the harness
    /// compares.
    pub fn outcome(&self) -> Outcome {
        render(self, &judge(self))
    }
}

/// The problem with the probes a test asked for, if any: they must run and
/// send records back (a silent gap would pass for "never called").
fn probes_problem(probes: Option<&Result<ProbeReport, ProbesError>>) -> Option<String> {
    match probes? {
        Err(e) => Some(e.to_string()),
        Ok(r) if !r.errors.is_empty() => {
            Some(format!("{} (see the PROBES block)", r.errors.join("; ")))
        }
        Ok(_) => None,
    }
}

/// Judges one run: pure, over the report only.
pub fn judge(r: &RunReport) -> Verdict {
    let (mut kind, cause) = match &r.reached {
        Reached::NotRun(e) => (Kind::Fail, Cause::NotRun(e.clone())),
        Reached::NoInit { after, .. } => (Kind::Fail, Cause::NoInit { after: *after }),
        Reached::Ended(obs) => super::judge_observed(obs, &r.expectation),
    };
    let mut findings = Vec::new();
    if let Reached::Ended(obs) = &r.reached {
        let resolved = r.kernel.as_ref().and_then(|k| k.release.as_deref());
        if let (Some(resolved), Some(booted)) = (resolved, obs.booted_release.as_deref())
            && resolved != booted
        {
            findings.push(Finding::WrongKernel {
                resolved: resolved.to_string(),
                booted: booted.to_string(),
            });
        }
        if let Some(p) = probes_problem(r.probes.as_ref()) {
            findings.push(Finding::ProbesFailed(p));
        }
        match &r.post_vm {
            PostVm::NotRun | PostVm::Passed => {}
            PostVm::Failed(e) => findings.push(Finding::PostVmFailed(e.clone())),
            PostVm::Panicked(m) => findings.push(Finding::PostVmPanicked(m.clone())),
        }
        if !findings.is_empty() {
            kind = Kind::Fail;
        }
    }
    if let Some(m) = r.missing_kfuncs.as_ref().filter(|_| kind == Kind::Fail) {
        findings.push(Finding::MissingKfuncs(m.clone()));
    }
    Verdict {
        kind,
        cause,
        findings,
    }
}

/// Appends a failure found after the guest's verdict: after a failure's
/// text; before a pass's, which it overturns.
fn overturn(kind: Kind, text: String, problem: &str) -> (Kind, String) {
    match kind {
        Kind::Fail => (Kind::Fail, format!("{text}\n{problem}")),
        Kind::Pass | Kind::Inconclusive => {
            (Kind::Fail, format!("{problem}\n(guest verdict: {text})"))
        }
    }
}

/// The text of `verdict`, for a person: the cause's, then each finding's,
/// the probes' block, the monitor's last samples and the scheduler's dump
/// after a failure, auto-repro's block, missing kfuncs.
pub fn render(r: &RunReport, verdict: &Verdict) -> Outcome {
    let (kind, text) = match &r.reached {
        Reached::NotRun(e) => (Kind::Fail, e.clone()),
        Reached::NoInit { after, console } => (Kind::Fail, super::no_init_text(*after, console)),
        Reached::Ended(obs) => {
            let mut kind = match verdict.cause {
                Cause::Passed | Cause::FailedAsExpected => Kind::Pass,
                Cause::InconclusiveAccepted(_) => Kind::Inconclusive,
                _ => Kind::Fail,
            };
            let mut text = super::cause_text(Some(obs), &r.expectation, &verdict.cause);
            let block = match &r.probes {
                Some(Ok(p)) => format!("\n\n{}", p.text),
                _ => String::new(),
            };
            match (kind, probes_problem(r.probes.as_ref())) {
                (Kind::Fail, p) => {
                    let p = p.map(|p| format!("\nprobes: {p}")).unwrap_or_default();
                    text = format!("{text}{p}{block}");
                }
                (_, None) => {}
                (_, Some(p)) => {
                    kind = Kind::Fail;
                    text = format!("probes: {p}\n(guest verdict: {text}){block}");
                }
            }
            for f in &verdict.findings {
                let problem = match f {
                    Finding::PostVmFailed(e) => format!("post_vm check failed: {e}"),
                    Finding::PostVmPanicked(m) => format!("post_vm check panicked: {m}"),
                    Finding::WrongKernel { resolved, booted } => format!(
                        "the guest booted kernel {booted}, not {resolved}, the kernel this run \
                         resolved and records: the verdict is not of the kernel asked for"
                    ),
                    Finding::ProbesFailed(_) | Finding::MissingKfuncs(_) => continue,
                };
                (kind, text) = overturn(kind, text, &problem);
            }
            if kind == Kind::Fail {
                let dump = r
                    .dump_text
                    .as_ref()
                    .map(|d| format!("\n{d}"))
                    .unwrap_or_default();
                text = format!("{text}\n{}{dump}", r.monitor_tail);
                if let Some(block) = &r.repro {
                    text = format!("{text}\n\n{block}");
                }
            }
            (kind, text)
        }
    };
    let mut text = text;
    for f in &verdict.findings {
        if let Finding::MissingKfuncs(m) = f {
            text.push_str(&format!(
                "\n  kernel {} lacks kfuncs that {}'s BPF objects call (not weak), or has them \
                 with another prototype: {}",
                m.release,
                m.scheduler,
                m.kfuncs.join(", ")
            ));
        }
    }
    debug_assert_eq!(kind, verdict.kind, "render and judge agree");
    Outcome::of(verdict.kind, text)
}
