//! Schedulers under test: their declarations, and in the guest the process
//! that runs one — spawn, attach poll, kill, and noticing when it dies.
//!
//! Guest layout (packed by the host): the boot scheduler at `/scheduler` with
//! its arguments in `/sched_args` (one per line), staged schedulers at
//! `/staging/schedulers/<name>/scheduler` and `.../sched_args`. Each running
//! scheduler logs to `/tmp/sched.log` (boot) or `/tmp/sched-<name>.log`.

mod cause;
mod exit;
mod hold;
mod monitor_checks;
mod supervisor;
mod verifier_probe;

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::checks::{ThresholdOverrides, Thresholds};

pub(crate) use cause::likely_cause;
pub use exit::{ExitKind, parse_exit};
pub(crate) use exit::{kernel_backtrace, kernel_exit};
pub(crate) use hold::Held;
pub use hold::ProgInfo;
pub use monitor_checks::{MonitorChecks, Setting, Sustained};
pub use supervisor::Supervisor;
pub use verifier_probe::VerifierOffsets;
pub(crate) use verifier_probe::{VerifierProbe, VerifierRecord};

/// Where a scheduler's binary comes from (resolved on the host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchedulerSpec {
    /// A binary found by name: the test package's `CARGO_BIN_EXE_<name>`,
    /// then the target directory of the running test binary, then `PATH`.
    Discover(&'static str),
    /// A binary at this host path.
    Path(&'static str),
    /// A binary installed into the host's ktstr cache, found as
    /// `<cache>/schedulers/bin/<name>` (a published scheduler built with
    /// `cargo install`; in this repository `cargo xtask schedulers` puts them
    /// there).
    Installed(&'static str),
    /// No sched_ext scheduler: the kernel's default (EEVDF).
    Eevdf,
}

/// A scheduler declaration, usable in `const`s.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scheduler {
    /// Its name: staging and reports key on it (not the BPF ops name).
    pub name: &'static str,
    /// Its binary.
    pub binary: SchedulerSpec,
    /// Arguments passed to it.
    pub sched_args: &'static [&'static str],
    /// Its own files, `(host path, guest path)`: a config file it reads, a
    /// directory it writes to. Packed with it; a missing host file fails the
    /// test before boot.
    pub files: &'static [(&'static str, &'static str)],
    /// How long it may take to attach, in seconds (0: the default, 30 s).
    /// Large BPF programs take minutes to verify under a software CPU.
    pub attach_timeout_s: u32,
    /// The host monitor's checks for it, over the defaults (a test's own
    /// `monitor = ..` key goes over these).
    pub monitor: MonitorChecks,
    /// Its layer of check thresholds (see [`Scheduler::thresholds`]).
    pub thresholds: ThresholdOverrides,
}

impl Scheduler {
    /// A scheduler named `name`, the kernel default until [`Scheduler::binary`] says otherwise.
    pub const fn named(name: &'static str) -> Self {
        Scheduler {
            name,
            binary: SchedulerSpec::Eevdf,
            sched_args: &[],
            files: &[],
            attach_timeout_s: 0,
            monitor: MonitorChecks::INHERIT,
            thresholds: ThresholdOverrides::new(),
        }
    }

    /// Sets the scheduler's layer of check thresholds. Thresholds merge in
    /// three layers: the defaults ([`Thresholds::default`]), then these, then
    /// the test's own ([`Ctx::with_thresholds`](crate::scenario::Ctx::with_thresholds)
    /// in its body). `ctx.thresholds` holds the first two when the body starts.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ktstr_ops::checks::ThresholdOverrides;
    /// use ktstr_ops::{Scheduler, SchedulerSpec};
    ///
    /// // A scheduler with long slices: allow a worst gap of 2 s instead of 1 s.
    /// const LONG_SLICES: Scheduler = Scheduler::named("long_slices")
    ///     .binary(SchedulerSpec::Discover("scx_long"))
    ///     .thresholds(ThresholdOverrides::new().max_gap(Duration::from_secs(2)));
    /// # let t = LONG_SLICES.layer_thresholds(Default::default());
    /// # assert_eq!(t.max_gap, Duration::from_secs(2));
    /// ```
    pub const fn thresholds(mut self, layer: ThresholdOverrides) -> Self {
        self.thresholds = layer;
        self
    }

    /// `base` with this scheduler's layer of thresholds applied.
    pub fn layer_thresholds(&self, base: Thresholds) -> Thresholds {
        base.overlay(&self.thresholds)
    }

    /// Sets the binary.
    pub const fn binary(mut self, binary: SchedulerSpec) -> Self {
        self.binary = binary;
        self
    }

    /// Sets the arguments.
    pub const fn sched_args(mut self, args: &'static [&'static str]) -> Self {
        self.sched_args = args;
        self
    }

    /// Sets its own files, `(host path, guest path)` pairs (absolute guest
    /// paths), packed into the guest with it.
    pub const fn files(mut self, files: &'static [(&'static str, &'static str)]) -> Self {
        self.files = files;
        self
    }

    /// Sets how long it may take to attach, in seconds (0: the default).
    pub const fn attach_timeout_s(mut self, secs: u32) -> Self {
        self.attach_timeout_s = secs;
        self
    }

    /// Sets the host monitor's checks for this scheduler.
    pub const fn monitor(mut self, checks: MonitorChecks) -> Self {
        self.monitor = checks;
        self
    }

    /// Whether it is a sched_ext scheduler (not the kernel default).
    pub const fn is_sched_ext(&self) -> bool {
        !matches!(self.binary, SchedulerSpec::Eevdf)
    }
}

/// Guest path of the boot scheduler.
pub const BOOT_SCHEDULER: &str = "/scheduler";
/// Guest path of the boot scheduler's arguments.
pub const BOOT_SCHED_ARGS: &str = "/sched_args";
/// Guest path of the boot scheduler's log.
pub(crate) const BOOT_SCHED_LOG: &str = "/tmp/sched.log";
/// Guest directory of staged schedulers.
pub(crate) const STAGING_DIR: &str = "/staging/schedulers";

/// Guest paths of the staged scheduler `name`: binary, arguments, log.
pub fn staged_paths(name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let dir = Path::new(STAGING_DIR).join(name);
    (
        dir.join("scheduler"),
        dir.join("sched_args"),
        PathBuf::from(format!("/tmp/sched-{name}.log")),
    )
}

/// Guest path of the attach timeout (seconds, text) of the scheduler whose
/// arguments are at `args_path`; absent: the default.
pub fn attach_timeout_path(args_path: &Path) -> PathBuf {
    let mut p = args_path.as_os_str().to_owned();
    p.push(".attach_timeout_s");
    PathBuf::from(p)
}

/// Why a scheduler could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpawnSchedulerError {
    /// The binary is not where the host staged it.
    #[error("scheduler {name}: binary {} is missing from the guest (not staged?)", path.display())]
    MissingBinary {
        /// The scheduler.
        name: String,
        /// Where it should be.
        path: PathBuf,
    },
    /// The process could not be started.
    #[error("scheduler {name}: cannot start {}: {source}", path.display())]
    Spawn {
        /// The scheduler.
        name: String,
        /// Its binary.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// It exited within the liveness window.
    #[error(
        "scheduler {name} died at start-up ({status}){}; its log:\n{log}",
        cause.as_ref().map(|c| format!("; likely cause: {c}")).unwrap_or_default()
    )]
    StartupDied {
        /// The scheduler.
        name: String,
        /// Its exit status.
        status: String,
        /// The end of its log.
        log: String,
        /// What its output says went wrong (`likely_cause` reads it from the log).
        cause: Option<String>,
    },
    /// It runs but sched_ext never became enabled with it.
    #[error(
        "scheduler {name} did not attach within {waited:?} (sched_ext state {state:?}, ops {ops:?}); its log:\n{log}"
    )]
    NotAttached {
        /// The scheduler.
        name: String,
        /// How long we waited.
        waited: Duration,
        /// `/sys/kernel/sched_ext/state` at the end.
        state: String,
        /// `/sys/kernel/sched_ext/root/ops` at the end.
        ops: String,
        /// The end of its log.
        log: String,
    },
}

impl SpawnSchedulerError {
    /// Its kind, for `expect_err` matchers (`StartupDied`).
    pub fn kind(&self) -> ErrorKind {
        match self {
            SpawnSchedulerError::MissingBinary { .. } => ErrorKind::MissingBinary,
            SpawnSchedulerError::Spawn { .. } => ErrorKind::Spawn,
            SpawnSchedulerError::StartupDied { .. } => ErrorKind::StartupDied,
            SpawnSchedulerError::NotAttached { .. } => ErrorKind::NotAttached,
        }
    }
}

/// The kind of a typed error behind a test's failure, as the guest sends it
/// to the host: what `expect_err = "<kind>"` matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The scheduler's binary is not in the guest.
    MissingBinary,
    /// The scheduler's process could not be started.
    Spawn,
    /// The scheduler died before it attached.
    StartupDied,
    /// The scheduler ran but never attached.
    NotAttached,
    /// A scheduler died without the harness causing it.
    SchedulerDied,
    /// The kernel's exit kind of a scheduler death (`SCX_EXIT_ERROR_STALL`).
    Exit(ExitKind),
    /// The harness could not stop a scheduler.
    KillScheduler,
    /// The body's process died before it reported.
    Crash,
}

impl ErrorKind {
    /// Its name, as `expect_err` spells it.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::MissingBinary => "MissingBinary",
            ErrorKind::Spawn => "Spawn",
            ErrorKind::StartupDied => "StartupDied",
            ErrorKind::NotAttached => "NotAttached",
            ErrorKind::SchedulerDied => "SchedulerDied",
            ErrorKind::Exit(k) => k.as_str(),
            ErrorKind::KillScheduler => "KillSchedulerError",
            ErrorKind::Crash => "crash",
        }
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The kinds of the typed errors in `e`'s chain.
pub(crate) fn error_kinds(e: &anyhow::Error) -> Vec<ErrorKind> {
    let mut kinds = Vec::new();
    for cause in e.chain() {
        if let Some(s) = cause.downcast_ref::<SpawnSchedulerError>() {
            kinds.push(s.kind());
        } else if let Some(d) = cause.downcast_ref::<SchedulerDied>() {
            kinds.push(ErrorKind::SchedulerDied);
            kinds.push(ErrorKind::Exit(d.kind));
        } else if cause.downcast_ref::<KillSchedulerError>().is_some() {
            kinds.push(ErrorKind::KillScheduler);
        }
    }
    kinds
}

/// A scheduler died without the harness causing it. The guest sends it to
/// the host as a typed channel message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[error("scheduler {name} died: {kind} ({reason}){}{}", message.as_ref().map(|m| format!(": {m}")).unwrap_or_default(), status.as_ref().map(|s| format!("; process {s}")).unwrap_or_default())]
pub struct SchedulerDied {
    /// The scheduler.
    pub name: String,
    /// The sched_ext exit kind.
    pub kind: ExitKind,
    /// The kernel's reason text (`runnable task stall`, ...).
    pub reason: String,
    /// The exit message, if any (`scx_bpf_error`'s text).
    pub message: Option<String>,
    /// How the process ended, if it did.
    pub status: Option<String>,
}

/// Why stopping the current scheduler failed.
#[derive(Debug, thiserror::Error)]
#[error(
    "scheduler {name} would not stop: sched_ext state still {state:?} after SIGTERM, SIGKILL and sysrq-S"
)]
pub struct KillSchedulerError {
    /// The scheduler.
    pub name: String,
    /// The sched_ext state left.
    pub state: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declarations_are_const() {
        const S: Scheduler = Scheduler::named("a")
            .binary(SchedulerSpec::Discover("scx-ktstr"))
            .sched_args(&["--stall-after", "1"]);
        assert!(S.is_sched_ext());
        assert!(!Scheduler::named("eevdf").is_sched_ext());
        assert_eq!(S.sched_args.len(), 2);
        const F: Scheduler = S.files(&[("cfg.json", "/etc/sched.json")]);
        assert_eq!(F.files, &[("cfg.json", "/etc/sched.json")]);
        assert!(S.files.is_empty());
        let (bin, args, log) = staged_paths("alt");
        assert_eq!(bin, Path::new("/staging/schedulers/alt/scheduler"));
        assert_eq!(args, Path::new("/staging/schedulers/alt/sched_args"));
        assert_eq!(log, Path::new("/tmp/sched-alt.log"));
        assert_eq!(
            attach_timeout_path(&args),
            Path::new("/staging/schedulers/alt/sched_args.attach_timeout_s")
        );
        assert_eq!(S.attach_timeout_s(300).attach_timeout_s, 300);
    }

    #[test]
    fn a_death_reads_as_one_sentence() {
        let d = SchedulerDied {
            name: "s".into(),
            kind: ExitKind::ErrorStall,
            reason: "runnable task stall".into(),
            message: Some("watchdog failed to check in for 3.0s".into()),
            status: Some("exit status: 1".into()),
        };
        assert_eq!(
            d.to_string(),
            "scheduler s died: SCX_EXIT_ERROR_STALL (runnable task stall): watchdog failed to check in for 3.0s; process exit status: 1"
        );
    }
}
