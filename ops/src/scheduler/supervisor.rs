//! [`Supervisor`]: the scheduler process of one test run in the guest —
//! spawn, attach poll, kill, and noticing when it dies. The runtime creates
//! one per run and hands it to the body through [`crate::scenario::Ctx`]; its
//! death watch thread shares it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::{
    BOOT_SCHED_ARGS, BOOT_SCHED_LOG, BOOT_SCHEDULER, ExitKind, KillSchedulerError, SchedulerDied,
    SpawnSchedulerError, kernel_exit, staged_paths,
};

const SCX_STATE: &str = "/sys/kernel/sched_ext/state";
const SCX_OPS: &str = "/sys/kernel/sched_ext/root/ops";
/// How long a freshly spawned scheduler must stay alive to count as started.
const LIVENESS_WINDOW: Duration = Duration::from_secs(1);
/// How long it may take to attach (BPF verification is slow under TCG),
/// unless its declaration says otherwise ([`super::attach_timeout_path`]).
const ATTACH_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the kernel gets to log an exit after the state changed.
const EXIT_RECORD_WAIT: Duration = Duration::from_secs(2);

/// The running scheduler process and its identity.
#[derive(Debug)]
struct Running {
    name: String,
    child: Child,
    log: PathBuf,
}

#[derive(Debug, Default)]
struct Inner {
    /// The boot scheduler's name (empty under EEVDF), for restarts.
    boot_name: String,
    /// The current scheduler; ops swap it under this lock so the death
    /// watcher never mistakes a kill by the harness for a death.
    current: Mutex<Option<Running>>,
    /// The pid of the current scheduler (0: none).
    pid: AtomicI32,
    /// The first unexpected death seen.
    died: Mutex<Option<SchedulerDied>>,
    /// Whether that death was handed to the body as an error (then the
    /// body's verdict speaks for it).
    surfaced: AtomicBool,
    watching: AtomicBool,
    /// The last attached scheduler's maps and programs, held open so a dead
    /// scheduler's state can still be dumped (see [`super::hold`]).
    held: Mutex<Option<super::Held>>,
    /// Where the kernel keeps the verifier's figures (from the host; `None`: the kernel's
    /// BTF did not say, and programs go without states).
    verifier: std::sync::OnceLock<super::VerifierOffsets>,
    /// Why the verifier probe could not be used, once (a note for the record).
    verifier_error: Mutex<Option<String>>,
}

/// The scheduler of one run. Cloning shares it.
#[derive(Debug, Clone, Default)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

fn read_trim(p: &str) -> String {
    std::fs::read_to_string(p)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn log_tail(path: &Path, lines: usize) -> String {
    let text = strip_ansi(&String::from_utf8_lossy(
        &std::fs::read(path).unwrap_or_default(),
    ));
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Drops terminal colour codes (`ESC [ ... letter`): published schedulers log
/// through tracing, which colours its output even into a file.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\u{1b}' {
            out.push(c);
            continue;
        }
        if chars.next() == Some('[') {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        }
    }
    out
}

/// The declared attach timeout next to `args_path`, else the default.
fn attach_timeout(args_path: &Path) -> Duration {
    std::fs::read_to_string(super::attach_timeout_path(args_path))
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok())
        .filter(|&s| s > 0)
        .map_or(ATTACH_TIMEOUT, Duration::from_secs)
}

fn read_args(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|t| t.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

/// Whether sched_ext runs a BPF scheduler now.
pub(crate) fn scx_attached() -> bool {
    read_trim(SCX_STATE) == "enabled" && !read_trim(SCX_OPS).is_empty()
}

fn wait_scx_disabled(timeout: Duration) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        let s = read_trim(SCX_STATE);
        if s == "disabled" || s.is_empty() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

impl Supervisor {
    /// A supervisor for a run whose boot scheduler is `boot_name` (`None`:
    /// the kernel default). Nothing is started yet.
    pub fn new(boot_name: Option<&str>) -> Self {
        Supervisor {
            inner: Arc::new(Inner {
                boot_name: boot_name.unwrap_or_default().to_string(),
                ..Inner::default()
            }),
        }
    }

    /// Reads the verifier's states of the programs each scheduler loads from here on.
    pub fn with_verifier_offsets(self, offsets: Option<super::VerifierOffsets>) -> Self {
        if let Some(o) = offsets {
            let _ = self.inner.verifier.set(o);
        }
        self
    }

    /// Why the verifier's states could not be read, if they could not.
    pub fn verifier_error(&self) -> Option<String> {
        self.inner
            .verifier_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn current(&self) -> MutexGuard<'_, Option<Running>> {
        self.inner.current.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The boot scheduler's name (empty when the test boots under EEVDF).
    pub fn boot_name(&self) -> &str {
        &self.inner.boot_name
    }

    /// The pid of the current scheduler process (0 when none runs).
    pub fn pid(&self) -> i32 {
        self.inner.pid.load(Ordering::Acquire)
    }

    /// The unexpected death of a scheduler, if one happened.
    pub fn died(&self) -> Option<SchedulerDied> {
        self.inner
            .died
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The verifier's figures of the last attached scheduler's programs
    /// (empty when none attached).
    pub fn prog_infos(&self) -> Vec<super::ProgInfo> {
        self.inner
            .held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(super::Held::progs)
            .unwrap_or_default()
    }

    /// Marks the recorded death as handed to the body.
    pub fn mark_death_surfaced(&self) {
        self.inner.surfaced.store(true, Ordering::SeqCst);
    }

    /// The recorded death, unless the body was handed it already.
    pub fn unsurfaced_death(&self) -> Option<SchedulerDied> {
        self.died()
            .filter(|_| !self.inner.surfaced.load(Ordering::SeqCst))
    }

    /// The current scheduler's log (for tests that read its statistics).
    pub fn current_log(&self) -> Option<String> {
        let path = self.current().as_ref().map(|r| r.log.clone())?;
        std::fs::read_to_string(path).ok()
    }

    /// Starts the scheduler `name` from `binary` with the arguments in
    /// `args_path`, logging to `log`; returns its pid once it is attached.
    pub fn spawn_from_paths(
        &self,
        name: &str,
        binary: &Path,
        args_path: &Path,
        log: &Path,
    ) -> Result<i32, SpawnSchedulerError> {
        if !binary.exists() {
            return Err(SpawnSchedulerError::MissingBinary {
                name: name.into(),
                path: binary.into(),
            });
        }
        let spawn_err = |source| SpawnSchedulerError::Spawn {
            name: name.into(),
            path: binary.into(),
            source,
        };
        let out = std::fs::File::create(log).map_err(spawn_err)?;
        let ids_before = super::hold::last_ids();
        let probe = self.inner.verifier.get().and_then(|o| {
            super::VerifierProbe::install(o)
                .map_err(|e| {
                    eprintln!("ktstr-init: the verifier's states go unread: {e}");
                    *self
                        .inner
                        .verifier_error
                        .lock()
                        .unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                })
                .ok()
        });
        let err = out.try_clone().map_err(spawn_err)?;
        let mut child = Command::new(binary)
            .args(read_args(args_path))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(spawn_err)?;
        let pid = child.id() as i32;
        let attach_limit = attach_timeout(args_path);
        // Liveness window, then the attach poll; a death anywhere is StartupDied.
        let t0 = Instant::now();
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                let full = strip_ansi(&std::fs::read_to_string(log).unwrap_or_default());
                return Err(SpawnSchedulerError::StartupDied {
                    name: name.into(),
                    status: status.to_string(),
                    log: log_tail(log, 20),
                    cause: super::likely_cause(&full),
                });
            }
            let waited = t0.elapsed();
            if waited >= LIVENESS_WINDOW && scx_attached() {
                break;
            }
            if waited >= attach_limit {
                let _ = child.kill();
                let _ = child.wait();
                return Err(SpawnSchedulerError::NotAttached {
                    name: name.into(),
                    waited,
                    state: read_trim(SCX_STATE),
                    ops: read_trim(SCX_OPS),
                    log: log_tail(log, 20),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        *self.current() = Some(Running {
            name: name.into(),
            child,
            log: log.into(),
        });
        let verifier = probe.map(super::VerifierProbe::finish).unwrap_or_default();
        if self.inner.verifier.get().is_some() && verifier.is_empty() {
            eprintln!("ktstr-init: the verifier probe recorded no program loads of {name}");
        }
        *self.inner.held.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(super::Held::take(ids_before).with_verifier(verifier));
        self.inner.pid.store(pid, Ordering::Release);
        Ok(pid)
    }

    /// Starts the boot scheduler packed at `/scheduler`; `Ok(None)` when
    /// none is packed.
    pub fn start_boot(&self) -> Result<Option<i32>, SpawnSchedulerError> {
        if !Path::new(BOOT_SCHEDULER).exists() {
            return Ok(None);
        }
        self.spawn_from_paths(
            self.boot_name(),
            Path::new(BOOT_SCHEDULER),
            Path::new(BOOT_SCHED_ARGS),
            Path::new(BOOT_SCHED_LOG),
        )
        .map(Some)
    }

    /// Starts the staged scheduler `name`.
    pub fn spawn_staged(&self, name: &str) -> Result<i32, SpawnSchedulerError> {
        let (bin, args, log) = staged_paths(name);
        self.spawn_from_paths(name, &bin, &args, &log)
    }

    /// Stops the current scheduler: SIGTERM, then SIGKILL, then sysrq-S, then
    /// waits for sched_ext to reach `disabled`. `Ok(None)` when none ran.
    pub fn kill_current(&self) -> Result<Option<String>, KillSchedulerError> {
        let mut cur = self.current();
        let Some(mut r) = cur.take() else {
            return Ok(None);
        };
        self.inner.pid.store(0, Ordering::Release);
        let pid = r.child.id() as i32;
        // SAFETY: kill has no memory-safety preconditions; pid is our child.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(3) {
            if let Ok(Some(_)) = r.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if !matches!(r.child.try_wait(), Ok(Some(_))) {
            let _ = r.child.kill();
            let _ = r.child.wait();
        }
        if !wait_scx_disabled(Duration::from_secs(3)) {
            // The kernel's own way out: sysrq-S disables the BPF scheduler.
            let _ = std::fs::write("/proc/sysrq-trigger", "S");
            if !wait_scx_disabled(Duration::from_secs(5)) {
                return Err(KillSchedulerError {
                    name: r.name,
                    state: read_trim(SCX_STATE),
                });
            }
        }
        Ok(Some(r.name))
    }

    /// Checks the current scheduler once: a process that exited, or sched_ext
    /// left `enabled` while it runs, is a death (recorded, first one wins).
    pub fn check_alive(&self) -> Option<SchedulerDied> {
        if let Some(d) = self.died() {
            return Some(d);
        }
        let mut cur = self.current();
        let r = cur.as_mut()?;
        let status = match r.child.try_wait() {
            Ok(Some(s)) => Some(s.to_string()),
            _ => None,
        };
        let detached = read_trim(SCX_STATE) == "disabled";
        if status.is_none() && !detached {
            return None;
        }
        // The kernel logs the exit while disabling: wait for its record.
        let (reason, message) =
            kernel_exit(EXIT_RECORD_WAIT).unwrap_or_else(|| ("unknown".into(), None));
        let d = SchedulerDied {
            name: r.name.clone(),
            kind: ExitKind::from_reason(&reason),
            reason,
            message,
            status,
        };
        let log = r.log.clone();
        if d.status.is_some() {
            self.inner.pid.store(0, Ordering::Release);
            *cur = None;
        }
        drop(cur);
        eprintln!("ktstr-init: {d}\n{}", log_tail(&log, 10));
        // The exit's backtrace, which the kernel logs below the console's
        // level: on the console, auto-repro takes the crash path from it.
        let bt = super::kernel_backtrace();
        if !bt.is_empty() {
            eprintln!(
                "ktstr-init: kernel backtrace of the exit:\n    {}",
                bt.join("\n    ")
            );
        }
        *self.inner.died.lock().unwrap_or_else(|p| p.into_inner()) = Some(d.clone());
        Some(d)
    }

    /// Starts a thread that checks the current scheduler every 50 ms.
    pub fn start_death_watch(&self) {
        if self.inner.watching.swap(true, Ordering::SeqCst) {
            return;
        }
        let me = self.clone();
        let _ = std::thread::Builder::new()
            .name("ktstr-sched-watch".into())
            .spawn(move || {
                loop {
                    me.check_alive();
                    std::thread::sleep(Duration::from_millis(50));
                }
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_codes_leave_the_text() {
        assert_eq!(
            strip_ansi("\u{1b}[2m2026\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m libbpf: x"),
            "2026  INFO libbpf: x"
        );
        assert_eq!(strip_ansi("plain\u{1b}"), "plain");
    }
}
