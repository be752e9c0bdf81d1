//! Schedulers under test: their declarations, and in the guest the process
//! that runs one — spawn, attach poll, kill, and noticing when it dies.
//!
//! Guest layout (packed by the host): the boot scheduler at `/scheduler` with
//! its arguments in `/sched_args` (one per line), staged schedulers at
//! `/staging/schedulers/<name>/scheduler` and `.../sched_args`. Each running
//! scheduler logs to `/tmp/sched.log` (boot) or `/tmp/sched-<name>.log`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Where a scheduler's binary comes from (resolved on the host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchedulerSpec {
    /// A binary found by name: the test package's `CARGO_BIN_EXE_<name>`,
    /// then the target directory of the running test binary, then `PATH`.
    Discover(&'static str),
    /// A binary at this host path.
    Path(&'static str),
    /// No sched_ext scheduler: the kernel's default (EEVDF).
    Eevdf,
}

/// A scheduler declaration, usable in `const`s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scheduler {
    /// Its name: staging and reports key on it (not the BPF ops name).
    pub name: &'static str,
    /// Its binary.
    pub binary: SchedulerSpec,
    /// Arguments passed to it.
    pub sched_args: &'static [&'static str],
}

impl Scheduler {
    /// A scheduler named `name`, the kernel default until [`Scheduler::binary`] says otherwise.
    pub const fn named(name: &'static str) -> Self {
        Scheduler {
            name,
            binary: SchedulerSpec::Eevdf,
            sched_args: &[],
        }
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
pub const BOOT_SCHED_LOG: &str = "/tmp/sched.log";
/// Guest directory of staged schedulers.
pub const STAGING_DIR: &str = "/staging/schedulers";

/// Guest paths of the staged scheduler `name`: binary, arguments, log.
pub fn staged_paths(name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let dir = Path::new(STAGING_DIR).join(name);
    (
        dir.join("scheduler"),
        dir.join("sched_args"),
        PathBuf::from(format!("/tmp/sched-{name}.log")),
    )
}

const SCX_STATE: &str = "/sys/kernel/sched_ext/state";
const SCX_OPS: &str = "/sys/kernel/sched_ext/root/ops";
/// How long a freshly spawned scheduler must stay alive to count as started.
const LIVENESS_WINDOW: Duration = Duration::from_secs(1);
/// How long it may take to attach (BPF verification is slow under TCG).
const ATTACH_TIMEOUT: Duration = Duration::from_secs(30);

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
    #[error("scheduler {name} died at start-up ({status}); its log:\n{log}")]
    StartupDied {
        /// The scheduler.
        name: String,
        /// Its exit status.
        status: String,
        /// The end of its log.
        log: String,
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

/// A scheduler died without the harness causing it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("scheduler {name} died: {kind} ({reason}){}{}", message.as_ref().map(|m| format!(": {m}")).unwrap_or_default(), status.as_ref().map(|s| format!("; process {s}")).unwrap_or_default())]
pub struct SchedulerDied {
    /// The scheduler.
    pub name: String,
    /// The sched_ext exit kind (`SCX_EXIT_ERROR_STALL`, ...), or `unknown`.
    pub kind: String,
    /// The kernel's reason text (`runnable task stall`, ...).
    pub reason: String,
    /// The exit message, if any (`scx_bpf_error`'s text).
    pub message: Option<String>,
    /// How the process ended, if it did.
    pub status: Option<String>,
}

/// The running scheduler process and its identity.
#[derive(Debug)]
struct Running {
    name: String,
    child: Child,
    log: PathBuf,
}

/// The current scheduler, if any; Ops swap it under this lock so the death
/// watcher never mistakes a kill by the harness for a death.
static CURRENT: Mutex<Option<Running>> = Mutex::new(None);
/// The pid of the current scheduler (0: none).
static SCHED_PID: AtomicI32 = AtomicI32::new(0);
/// The first unexpected death seen.
static DIED: Mutex<Option<SchedulerDied>> = Mutex::new(None);
/// Whether that death was handed to the body as an error (then the body's
/// verdict speaks for it and the runtime does not add it again).
static DEATH_SURFACED: AtomicBool = AtomicBool::new(false);

/// Marks the recorded death as handed to the body.
pub fn mark_death_surfaced() {
    DEATH_SURFACED.store(true, Ordering::SeqCst);
}

/// The recorded death, unless the body was handed it already.
pub fn unsurfaced_death() -> Option<SchedulerDied> {
    died().filter(|_| !DEATH_SURFACED.load(Ordering::SeqCst))
}
static WATCHING: AtomicBool = AtomicBool::new(false);
/// The boot scheduler's name, for restarts.
static BOOT_NAME: Mutex<String> = Mutex::new(String::new());

/// The boot scheduler's name (empty when the test boots under EEVDF).
pub fn boot_name() -> String {
    BOOT_NAME.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

fn current() -> MutexGuard<'static, Option<Running>> {
    CURRENT.lock().unwrap_or_else(|p| p.into_inner())
}

/// The pid of the current scheduler process (0 when none runs).
pub fn sched_pid() -> i32 {
    SCHED_PID.load(Ordering::Acquire)
}

/// The unexpected death of a scheduler, if one happened.
pub fn died() -> Option<SchedulerDied> {
    DIED.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

fn read_trim(p: &str) -> String {
    std::fs::read_to_string(p)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn read_args(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|t| t.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

/// Whether sched_ext runs a BPF scheduler now.
pub fn scx_attached() -> bool {
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

/// Starts the scheduler `name` from `binary` with the arguments in
/// `args_path`, logging to `log`; returns once it is attached to sched_ext.
pub fn spawn_scheduler_from_paths(
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
    let err = out.try_clone().map_err(spawn_err)?;
    let mut child = Command::new(binary)
        .args(read_args(args_path))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(spawn_err)?;
    let pid = child.id() as i32;
    // Liveness window, then the attach poll; a death anywhere is StartupDied.
    let t0 = Instant::now();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(SpawnSchedulerError::StartupDied {
                name: name.into(),
                status: status.to_string(),
                log: log_tail(log, 20),
            });
        }
        let waited = t0.elapsed();
        if waited >= LIVENESS_WINDOW && scx_attached() {
            break;
        }
        if waited >= ATTACH_TIMEOUT {
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
    *current() = Some(Running {
        name: name.into(),
        child,
        log: log.into(),
    });
    SCHED_PID.store(pid, Ordering::Release);
    Ok(pid)
}

/// Starts the boot scheduler packed at `/scheduler`, if there is one.
pub fn start_boot_scheduler(name: &str) -> Result<Option<i32>, SpawnSchedulerError> {
    *BOOT_NAME.lock().unwrap_or_else(|p| p.into_inner()) = name.to_string();
    if !Path::new(BOOT_SCHEDULER).exists() {
        return Ok(None);
    }
    spawn_scheduler_from_paths(
        name,
        Path::new(BOOT_SCHEDULER),
        Path::new(BOOT_SCHED_ARGS),
        Path::new(BOOT_SCHED_LOG),
    )
    .map(Some)
}

/// Starts the staged scheduler `name`.
pub fn spawn_staged(name: &str) -> Result<i32, SpawnSchedulerError> {
    let (bin, args, log) = staged_paths(name);
    spawn_scheduler_from_paths(name, &bin, &args, &log)
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

/// Stops the current scheduler: SIGTERM, then SIGKILL, then sysrq-S, then
/// waits for sched_ext to reach `disabled`. `Ok(None)` when none ran.
pub fn kill_current_scheduler() -> Result<Option<String>, KillSchedulerError> {
    let mut cur = current();
    let Some(mut r) = cur.take() else {
        return Ok(None);
    };
    SCHED_PID.store(0, Ordering::Release);
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

/// The kernel's last sched_ext exit, from its log: (reason, message).
fn kernel_exit() -> Option<(String, Option<String>)> {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags_nonblock()
        .open("/dev/kmsg")
        .ok()?;
    let mut reason = None;
    let mut message = None;
    let mut buf = vec![0u8; 8192];
    // Each read returns one record: "prio,seq,ts,flags;text".
    while let Ok(n @ 1..) = f.read(&mut buf) {
        let rec = String::from_utf8_lossy(&buf[..n]);
        let text = rec.split_once(';').map_or(&*rec, |(_, t)| t).trim();
        if let Some(rest) = text.strip_prefix("sched_ext: BPF scheduler ") {
            if let Some((_, r)) = rest.split_once(" disabled (") {
                reason = Some(r.trim_end_matches(')').to_string());
                message = None;
            }
        } else if let Some(m) = text
            .strip_prefix("sched_ext: ")
            .filter(|_| reason.is_some() && message.is_none())
        {
            message = Some(m.to_string());
        }
    }
    reason.map(|r| (r, message))
}

trait NonBlock {
    fn custom_flags_nonblock(&mut self) -> &mut Self;
}

impl NonBlock for std::fs::OpenOptions {
    fn custom_flags_nonblock(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_NONBLOCK)
    }
}

/// The sched_ext exit kind for the kernel's reason text (kernel/sched/ext.c, scx_exit_reason).
pub fn exit_kind(reason: &str) -> &'static str {
    match reason {
        "normal" => "SCX_EXIT_DONE",
        "unregistered from user space" => "SCX_EXIT_UNREG",
        "unregistered from BPF" => "SCX_EXIT_UNREG_BPF",
        "unregistered from the main kernel" => "SCX_EXIT_UNREG_KERN",
        "disabled by sysrq-S" => "SCX_EXIT_SYSRQ",
        "runtime error" => "SCX_EXIT_ERROR",
        "scx_bpf_error" => "SCX_EXIT_ERROR_BPF",
        "runnable task stall" => "SCX_EXIT_ERROR_STALL",
        _ => "unknown",
    }
}

/// Checks the current scheduler once: a process that exited, or sched_ext
/// left `enabled` while it runs, is a death (recorded, first one wins).
pub fn check_alive() -> Option<SchedulerDied> {
    if let Some(d) = died() {
        return Some(d);
    }
    let mut cur = current();
    let r = cur.as_mut()?;
    let status = match r.child.try_wait() {
        Ok(Some(s)) => Some(s.to_string()),
        _ => None,
    };
    let detached = read_trim(SCX_STATE) == "disabled";
    if status.is_none() && !detached {
        return None;
    }
    // Give the kernel's log and the scheduler's own exit lines a moment.
    std::thread::sleep(Duration::from_millis(100));
    let (reason, message) = kernel_exit().unwrap_or_else(|| ("unknown".into(), None));
    let d = SchedulerDied {
        name: r.name.clone(),
        kind: exit_kind(&reason).to_string(),
        reason,
        message,
        status,
    };
    let log = r.log.clone();
    if d.status.is_some() {
        SCHED_PID.store(0, Ordering::Release);
        *cur = None;
    }
    drop(cur);
    eprintln!("ktstr-init: {d}\n{}", log_tail(&log, 10));
    *DIED.lock().unwrap_or_else(|p| p.into_inner()) = Some(d.clone());
    Some(d)
}

/// Starts a thread that checks the current scheduler every 50 ms.
pub fn start_death_watch() {
    if WATCHING.swap(true, Ordering::SeqCst) {
        return;
    }
    let _ = std::thread::Builder::new()
        .name("ktstr-sched-watch".into())
        .spawn(|| {
            loop {
                check_alive();
                std::thread::sleep(Duration::from_millis(50));
            }
        });
}

/// The current scheduler's log (for tests that read its statistics).
pub fn current_log() -> Option<String> {
    let path = current().as_ref().map(|r| r.log.clone())?;
    std::fs::read_to_string(path).ok()
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
        let (bin, args, log) = staged_paths("alt");
        assert_eq!(bin, Path::new("/staging/schedulers/alt/scheduler"));
        assert_eq!(args, Path::new("/staging/schedulers/alt/sched_args"));
        assert_eq!(log, Path::new("/tmp/sched-alt.log"));
    }

    #[test]
    fn exit_kinds_follow_the_kernels_reason_texts() {
        assert_eq!(exit_kind("runnable task stall"), "SCX_EXIT_ERROR_STALL");
        assert_eq!(exit_kind("scx_bpf_error"), "SCX_EXIT_ERROR_BPF");
        assert_eq!(exit_kind("something new"), "unknown");
        let d = SchedulerDied {
            name: "s".into(),
            kind: "SCX_EXIT_ERROR_STALL".into(),
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
