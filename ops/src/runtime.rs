//! The guest's init: the test binary runs as PID 1, sets up the guest, runs
//! exactly one test body in a child process, reports over the channel and
//! powers off. PID 1 never returns and never exits otherwise: every failure,
//! a panic in the body included, becomes a message.

use std::ffi::CString;
use std::io::Write;
use std::panic::AssertUnwindSafe;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering, fence};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::assert::AssertResult;
use crate::channel::{ChannelMem, Message, Writer};

/// Where the host puts the per-test configuration in the initramfs.
pub const CONFIG_PATH: &str = "/ktstr/config.json";

/// What the host tells the guest about the test to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestConfig {
    /// The registered name of the test.
    pub test: String,
    /// The declared topology, compact form (`1n2l2c2t`).
    pub topology: String,
    /// Guest memory in MiB.
    pub memory_mib: u64,
    /// The test's `duration_s`, in milliseconds.
    pub duration_ms: u64,
    /// False when the VM has more vCPUs than the host has cores: timing
    /// verdicts are then inconclusive.
    pub timing_reliable: bool,
    /// Guest physical address of the channel region.
    pub channel_gpa: u64,
    /// Size of the channel region.
    pub channel_size: u64,
    /// The boot scheduler's name, when the test runs under a sched_ext
    /// scheduler packed at `/scheduler`.
    #[serde(default)]
    pub boot_scheduler: Option<String>,
    /// How long stopping the scheduler after the body may take, in ms.
    #[serde(default)]
    pub cleanup_budget_ms: u64,
}

/// A test body as the runtime sees it: the facade builds the scenario
/// context from the config and calls the user's function.
pub type Body<'a> = &'a dyn Fn(&GuestConfig) -> anyhow::Result<AssertResult>;

/// An owned [`Body`], as the test lookup returns it.
pub type BoxedBody = Box<dyn Fn(&GuestConfig) -> anyhow::Result<AssertResult>>;

/// True in the guest's init process of a ktstr VM (PID 1 with the test
/// configuration present; a test binary run as PID 1 in a container is not).
pub fn is_guest_init() -> bool {
    // SAFETY: getpid has no preconditions.
    let pid1 = unsafe { libc::getpid() == 1 };
    pid1 && std::path::Path::new(CONFIG_PATH).exists()
}

/// The channel region mapped through `/dev/mem`.
#[derive(Debug)]
struct DevMem {
    base: *mut u8,
    len: usize,
}

// SAFETY: the mapping is process-wide shared memory; every access goes
// through raw-pointer copies or atomics, which are valid from any thread.
unsafe impl Send for DevMem {}

impl DevMem {
    fn map(gpa: u64, len: u64) -> Result<Self, String> {
        let path = CString::new("/dev/mem").expect("no NUL in a literal");
        // SAFETY: path is a valid NUL-terminated string.
        let fd =
            unsafe { libc::open(path.as_ptr(), libc::O_RDWR | libc::O_SYNC | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(format!(
                "open /dev/mem: {}",
                std::io::Error::last_os_error()
            ));
        }
        let len = usize::try_from(len).map_err(|_| "channel size overflows usize".to_string())?;
        let off = libc::off_t::try_from(gpa)
            .map_err(|_| "channel address overflows off_t".to_string())?;
        // SAFETY: a fresh shared mapping of a device file; the kernel checks
        // the range (it must be reserved, not System RAM, under STRICT_DEVMEM).
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                off,
            )
        };
        let err = std::io::Error::last_os_error();
        // SAFETY: fd is ours; the mapping stays valid after close.
        unsafe { libc::close(fd) };
        if p == libc::MAP_FAILED {
            return Err(format!("mmap /dev/mem at {gpa:#x}+{len:#x}: {err}"));
        }
        Ok(DevMem {
            base: p.cast(),
            len,
        })
    }

    fn check(&self, off: u64, n: usize) -> usize {
        let off = off as usize;
        assert!(off + n <= self.len, "channel access out of the mapping");
        off
    }
}

impl ChannelMem for DevMem {
    fn read(&self, off: u64, buf: &mut [u8]) {
        let off = self.check(off, buf.len());
        // SAFETY: bounds checked above; the mapping lives as long as self.
        unsafe { std::ptr::copy_nonoverlapping(self.base.add(off), buf.as_mut_ptr(), buf.len()) };
    }
    fn write(&self, off: u64, buf: &[u8]) {
        let off = self.check(off, buf.len());
        // SAFETY: bounds checked above; the mapping lives as long as self.
        unsafe { std::ptr::copy_nonoverlapping(buf.as_ptr(), self.base.add(off), buf.len()) };
    }
    fn load_u64(&self, off: u64) -> u64 {
        let off = self.check(off, 8);
        // SAFETY: in bounds; the channel's u64 fields are 8-byte aligned in a
        // page-aligned mapping, so the cast to an atomic is valid.
        let v = unsafe { (*(self.base.add(off) as *const AtomicU64)).load(Ordering::Acquire) };
        fence(Ordering::Acquire);
        v
    }
    fn store_u64(&self, off: u64, v: u64) {
        let off = self.check(off, 8);
        fence(Ordering::Release);
        // SAFETY: as in load_u64.
        unsafe { (*(self.base.add(off) as *const AtomicU64)).store(v, Ordering::Release) };
    }
}

fn console(msg: &str) {
    let _ = writeln!(std::io::stderr(), "ktstr-init: {msg}");
}

fn mount(src: &str, target: &str, fstype: &str) {
    let _ = std::fs::create_dir_all(target);
    let c = |s: &str| CString::new(s).expect("no NUL in mount arguments");
    let (src_c, target_c, fstype_c) = (c(src), c(target), c(fstype));
    // SAFETY: all pointers are valid NUL-terminated strings; data is null.
    let rc = unsafe {
        libc::mount(
            src_c.as_ptr(),
            target_c.as_ptr(),
            fstype_c.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        console(&format!(
            "mount {fstype} on {target}: {}",
            std::io::Error::last_os_error()
        ));
    }
}

fn setup_mounts() {
    mount("proc", "/proc", "proc");
    mount("sysfs", "/sys", "sysfs");
    mount("devtmpfs", "/dev", "devtmpfs");
    mount("tmpfs", "/tmp", "tmpfs");
    mount("tmpfs", "/run", "tmpfs");
    mount("cgroup2", "/sys/fs/cgroup", "cgroup2");
    mount("tracefs", "/sys/kernel/tracing", "tracefs");
    mount("debugfs", "/sys/kernel/debug", "debugfs");
    mount("bpf", "/sys/fs/bpf", "bpf");
}

fn uptime_ms() -> u64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .map(|s| (s * 1000.0) as u64)
        .unwrap_or(0)
}

fn power_off() -> ! {
    // SAFETY: sync and reboot have no memory-safety preconditions; as PID 1
    // we may power the machine off.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
    // reboot only returns on failure; PID 1 must not exit (the kernel would panic).
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

static PANIC_MESSAGE: Mutex<Option<String>> = Mutex::new(None);

/// Runs the body in this (child) process and sends its verdict.
fn run_body(cfg: &GuestConfig, body: Body<'_>, ch: &Writer<DevMem>) {
    std::panic::set_hook(Box::new(|info| {
        let msg = match (
            info.payload().downcast_ref::<&str>(),
            info.payload().downcast_ref::<String>(),
        ) {
            (Some(s), _) => (*s).to_string(),
            (_, Some(s)) => s.clone(),
            _ => "(non-string panic payload)".to_string(),
        };
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let text = format!("test body panicked: {msg}{at}");
        console(&text);
        *PANIC_MESSAGE.lock().unwrap_or_else(|p| p.into_inner()) = Some(text);
    }));
    if let Some(name) = &cfg.boot_scheduler {
        // The body starts only once sched_ext runs the boot scheduler.
        match crate::scheduler::start_boot_scheduler(name) {
            Ok(Some(_)) => crate::scheduler::start_death_watch(),
            Ok(None) => {
                let text = format!(
                    "boot scheduler {name} is not packed at {}",
                    crate::scheduler::BOOT_SCHEDULER
                );
                send_verdict(
                    ch,
                    AssertResult::fail("scheduler", text.clone()),
                    Some(text),
                    0,
                );
                return;
            }
            Err(e) => {
                let text = e.to_string();
                send_verdict(
                    ch,
                    AssertResult::fail("scheduler", text.clone()),
                    Some(text),
                    0,
                );
                return;
            }
        }
    }
    ch.send(&Message::BodyStarted, Duration::from_secs(1));
    let t0 = Instant::now();
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| body(cfg)));
    let body_ms = t0.elapsed().as_millis() as u64;
    let (mut verdict, body_error) = match result {
        Ok(Ok(v)) => (v, None),
        Ok(Err(e)) => {
            let text = format!("test body returned an error: {e:#}");
            (AssertResult::fail("body", text.clone()), Some(text))
        }
        Err(_) => {
            let text = PANIC_MESSAGE
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
                .unwrap_or_else(|| "test body panicked".into());
            (AssertResult::fail("panic", text.clone()), Some(text))
        }
    };
    // A scheduler death the harness did not cause fails the test, unless it
    // was handed to the body as an error (the body's verdict then speaks for it).
    if let Some(death) = crate::scheduler::unsurfaced_death() {
        verdict.merge(AssertResult::fail("scheduler", death.to_string()));
    }
    if cfg.boot_scheduler.is_some() {
        let t0 = Instant::now();
        let budget = Duration::from_millis(cfg.cleanup_budget_ms.max(1));
        match crate::scheduler::kill_current_scheduler() {
            Err(e) => verdict = verdict.note("cleanup", e.to_string()),
            Ok(_) if t0.elapsed() > budget => {
                let took = t0.elapsed();
                verdict = verdict.note(
                    "cleanup",
                    format!(
                        "stopping the scheduler took {took:?}, over the {budget:?} cleanup budget"
                    ),
                );
            }
            Ok(_) => {}
        }
    }
    send_verdict(ch, verdict, body_error, body_ms);
}

fn send_verdict(
    ch: &Writer<DevMem>,
    verdict: AssertResult,
    body_error: Option<String>,
    body_ms: u64,
) {
    let msg = Message::Verdict {
        verdict,
        body_error,
        body_ms,
    };
    if !ch.send(&msg, Duration::from_secs(10)) {
        console("could not send the verdict: the channel stayed full");
    }
}

/// Forks the body process and reaps every child until it ends.
fn supervise(cfg: &GuestConfig, body: Body<'_>, ch: &Writer<DevMem>) {
    // SAFETY: PID 1 is single-threaded here (the runtime starts before main
    // and has spawned no thread), so the child may run arbitrary code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        ch.send(
            &Message::GuestError(format!(
                "fork of the test process: {}",
                std::io::Error::last_os_error()
            )),
            Duration::from_secs(5),
        );
        return;
    }
    if pid == 0 {
        run_body(cfg, body, ch);
        // SAFETY: _exit ends the child without running PID 1's atexit state.
        unsafe { libc::_exit(0) };
    }
    loop {
        let mut status = 0;
        // SAFETY: status is a valid out-pointer.
        let got = unsafe { libc::waitpid(-1, &mut status, 0) };
        if got < 0 {
            break; // no children left
        }
        if got == pid {
            let how = if libc::WIFSIGNALED(status) {
                Some(format!("killed by signal {}", libc::WTERMSIG(status)))
            } else if libc::WEXITSTATUS(status) != 0 {
                Some(format!("exited with status {}", libc::WEXITSTATUS(status)))
            } else {
                None
            };
            if let Some(how) = how {
                // The body's own process died before reporting: the test's failure.
                let text = format!("the test process {how} before reporting a verdict");
                let verdict = AssertResult::fail("crash", text.clone());
                ch.send(
                    &Message::Verdict {
                        verdict,
                        body_error: Some(text),
                        body_ms: 0,
                    },
                    Duration::from_secs(5),
                );
            }
            break;
        }
    }
}

/// The guest's init. Call it first thing in PID 1; never returns.
pub fn run_as_init(lookup: &dyn Fn(&str) -> Option<BoxedBody>) -> ! {
    setup_mounts();
    let cfg: GuestConfig = match std::fs::read(CONFIG_PATH)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(c) => c,
        Err(e) => {
            console(&format!(
                "cannot read {CONFIG_PATH}: {e}; was this binary booted by ktstr?"
            ));
            power_off();
        }
    };
    let ch = match DevMem::map(cfg.channel_gpa, cfg.channel_size) {
        Ok(m) => Writer::init(m, cfg.channel_size),
        Err(e) => {
            console(&format!("cannot map the host channel: {e}"));
            power_off();
        }
    };
    ch.send(
        &Message::Hello {
            uptime_ms: uptime_ms(),
            test: cfg.test.clone(),
        },
        Duration::from_secs(1),
    );
    match lookup(&cfg.test) {
        Some(body) => supervise(&cfg, &*body, &ch),
        None => {
            ch.send(
                &Message::GuestError(format!("no test named {:?} in this binary", cfg.test)),
                Duration::from_secs(5),
            );
        }
    }
    power_off()
}
