//! The QEMU backend: runs a [`VmSpec`] with `qemu-system-x86_64`, under KVM
//! where the host has hardware virtualization and TCG elsewhere.
//!
//! Guest RAM is one memfd per NUMA node, created and mapped by the harness and
//! handed to QEMU as `/proc/self/fd/N`; QEMU dies with the harness
//! (`PR_SET_PDEATHSIG`), so a killed harness leaves no process and nothing in
//! /dev/shm. Control is QMP over a socketpair; the console is QEMU's stdout.

mod args;
mod qmp;
mod regs;
mod snapshot;

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub use args::{Accel, ICOUNT};

use crate::console::{Tail, spawn_reader};
use crate::{
    Backend, Console, ConsoleMode, EndReason, GuestMemoryMmap, GuestRam, Machine, QemuVersionError,
    VcpuRegs, VmSpec, VmmError,
};

/// The QEMU version whose `smp-cache` property places one L3 per die.
pub(crate) const MIN_QEMU_MAJOR: u32 = 10;

/// Boots VMs with QEMU.
#[derive(Debug, Clone)]
pub struct QemuBackend {
    binary: PathBuf,
    accel: Accel,
    nested_svm: bool,
}

impl QemuBackend {
    /// A backend running `binary` (a `qemu-system-x86_64`), after checking
    /// that it runs and is new enough; KVM acceleration where the host has
    /// hardware virtualization, TCG elsewhere. Each backend keeps its own
    /// binary: two backends with different QEMUs may live in one process.
    pub fn new(binary: impl Into<PathBuf>) -> Result<Self, VmmError> {
        let binary = binary.into();
        check_version(&binary).map_err(|source| VmmError::Qemu { source })?;
        let accel = if crate::hardware_virtualization() {
            Accel::Kvm
        } else {
            Accel::Tcg
        };
        Ok(QemuBackend {
            binary,
            accel,
            nested_svm: false,
        })
    }

    /// Finds `qemu-system-x86_64` in the directories of `path` (a `PATH`-style
    /// list the caller supplies) and checks it as [`QemuBackend::new`] does.
    pub fn find_in(path: &std::ffi::OsStr) -> Result<Self, VmmError> {
        use std::os::unix::ffi::OsStrExt;
        let binary = path
            .as_bytes()
            .split(|&b| b == b':')
            .filter(|d| !d.is_empty())
            .map(|d| {
                std::path::Path::new(std::ffi::OsStr::from_bytes(d)).join("qemu-system-x86_64")
            })
            .find(|f| f.is_file())
            .ok_or_else(|| VmmError::MissingProgram {
                program: "qemu-system-x86_64".into(),
                hint: "not in PATH; run `cargo xtask setup` (Debian: qemu-system-x86 from \
                       bookworm-backports) or point KTSTR_QEMU at it"
                    .into(),
            })?;
        Self::new(binary)
    }

    /// The QEMU binary this backend runs.
    pub fn binary(&self) -> &std::path::Path {
        &self.binary
    }

    /// Forces an accelerator.
    pub fn with_accel(mut self, accel: Accel) -> Self {
        self.accel = accel;
        self
    }

    /// Gives the guest a CPU with hardware virtualization of its own (under
    /// TCG: an emulated AMD EPYC with SVM and nested paging), so it can run
    /// KVM guests: how the own KVM VMM is tested on hosts without vmx/svm.
    pub fn with_nested_svm(mut self, on: bool) -> Self {
        self.nested_svm = on;
        self
    }

    /// The accelerator in use.
    pub fn accel(&self) -> Accel {
        self.accel
    }
}

/// Checks that `binary` runs and is QEMU [`MIN_QEMU_MAJOR`] or newer and
/// returns its version line; the answer is kept per binary, since every VM
/// of a test run asks.
fn check_version(binary: &std::path::Path) -> Result<String, QemuVersionError> {
    type Checked = Vec<(PathBuf, Result<String, QemuVersionError>)>;
    static CHECKED: OnceLock<Mutex<Checked>> = OnceLock::new();
    let checked = CHECKED.get_or_init(|| Mutex::new(Vec::new()));
    let mut seen = checked.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, r)) = seen.iter().find(|(b, _)| b == binary) {
        return r.clone();
    }
    let result = (|| {
        let out = Command::new(binary)
            .arg("--version")
            .output()
            .map_err(|e| QemuVersionError::DoesNotRun {
                binary: binary.to_path_buf(),
                source: Arc::new(e),
            })?;
        let text = String::from_utf8_lossy(&out.stdout);
        let major = text
            .split("version ")
            .nth(1)
            .and_then(|v| v.split('.').next())
            .and_then(|m| m.parse::<u32>().ok())
            .unwrap_or(0);
        if major < MIN_QEMU_MAJOR {
            return Err(QemuVersionError::TooOld {
                binary: binary.to_path_buf(),
                major,
            });
        }
        Ok(text.lines().next().unwrap_or_default().trim().to_string())
    })();
    seen.push((binary.to_path_buf(), result.clone()));
    result
}

impl Backend for QemuBackend {
    fn name(&self) -> String {
        match self.accel {
            Accel::Kvm => "qemu-kvm".into(),
            Accel::Tcg => "qemu-tcg".into(),
        }
    }

    fn snapshot_id(&self) -> Option<String> {
        let version = check_version(&self.binary).ok()?;
        Some(format!(
            "{} nested-svm={} {version}",
            self.name(),
            self.nested_svm
        ))
    }

    fn program(&self) -> Option<std::path::PathBuf> {
        Some(self.binary.clone())
    }

    fn host_threads(&self, spec: &VmSpec) -> usize {
        match (self.accel, spec.resolved_tcg()) {
            // Single-threaded TCG runs every vCPU on one thread.
            (Accel::Tcg, crate::TcgMode::Single) => 1,
            // A nested-SVM L1 otherwise runs one thread per vCPU (args::cpu_args).
            _ if self.nested_svm => spec.topology.nr_cpus() as usize,
            (Accel::Tcg, crate::TcgMode::InstructionCount) => 1,
            _ => spec.topology.nr_cpus() as usize,
        }
    }

    fn timing_reliable(&self, spec: &VmSpec) -> bool {
        match (self.accel, spec.resolved_tcg()) {
            _ if self.nested_svm => spec
                .host_threads
                .is_none_or(|h| spec.topology.nr_cpus() as usize <= h),
            // Guest time advances with instructions executed: the host's
            // preemption of QEMU is invisible to the guest.
            (Accel::Tcg, crate::TcgMode::InstructionCount) => true,
            (Accel::Tcg, crate::TcgMode::Single) => spec.topology.nr_cpus() == 1,
            _ => spec
                .host_threads
                .is_none_or(|h| spec.topology.nr_cpus() as usize <= h),
        }
    }

    fn boot(&self, spec: &VmSpec) -> Result<Box<dyn Machine>, VmmError> {
        self.start(spec, None)
            .map(|m| Box::new(m) as Box<dyn Machine>)
    }

    fn restore(
        &self,
        spec: &VmSpec,
        image: &std::path::Path,
        payload: &[u8],
    ) -> Result<Box<dyn Machine>, VmmError> {
        snapshot::check_image(image)?;
        let mut machine = self.start(spec, Some(payload))?;
        if let Err(e) = snapshot::load(machine.qmp()?, image) {
            machine.kill();
            let words = machine.stderr_text();
            return Err(match e {
                VmmError::Snapshot { image, why } if !words.trim().is_empty() => {
                    VmmError::Snapshot {
                        image,
                        why: format!("{why}; QEMU said: {}", words.trim()),
                    }
                }
                e => e,
            });
        }
        Ok(Box::new(machine))
    }
}

impl QemuBackend {
    /// Starts QEMU for `spec`: booting it, or (`restoring`: the payload)
    /// waiting for a migration stream with the vCPUs stopped.
    fn start(&self, spec: &VmSpec, restoring: Option<&[u8]>) -> Result<QemuMachine, VmmError> {
        spec.check_files()?;
        if spec.deterministic.is_some() {
            args::check_deterministic(spec, self.accel, self.nested_svm, restoring.is_some())?;
        }
        let ram = GuestRam::new(&spec.node_memory_bytes())?;
        let payload = match spec.payload_bytes {
            0 => None,
            bytes => {
                let file = crate::memory::memfd("ktstr-payload", bytes)?;
                let data = restoring.unwrap_or_default();
                if data.len() as u64 > bytes {
                    return Err(VmmError::InvalidSpec(format!(
                        "a payload of {} bytes does not fit the {bytes}-byte payload region",
                        data.len()
                    )));
                }
                std::os::unix::fs::FileExt::write_all_at(&file, data, 0)
                    .map_err(|e| VmmError::Memory(format!("writing the payload: {e}")))?;
                Some(file)
            }
        };
        if payload.is_none() && restoring.is_some_and(|p| !p.is_empty()) {
            return Err(VmmError::InvalidSpec(
                "a payload to hand over, but the spec has no payload region (payload_bytes)".into(),
            ));
        }
        let (ours, theirs) = UnixStream::pair().map_err(|e| VmmError::Os {
            what: "socketpair for QMP",
            source: e,
        })?;
        let theirs: OwnedFd = theirs.into();
        let fds = args::PassedFds {
            node_memory: ram.node_fds(),
            qmp: theirs.as_raw_fd(),
            payload: payload.as_ref().map(AsRawFd::as_raw_fd),
        };
        let mut cmd = Command::new(&self.binary);
        cmd.args(args::qemu_args(spec, self.accel, self.nested_svm, &fds));
        if restoring.is_some() {
            // Stopped until the stream is in; loaded over QMP (snapshot::load).
            cmd.args(["-S", "-incoming", "defer"]);
        }
        match spec.console {
            ConsoleMode::Capture => {
                cmd.stdin(Stdio::null()).stdout(Stdio::piped());
            }
            ConsoleMode::Inherit => {
                cmd.stdin(Stdio::inherit()).stdout(Stdio::inherit());
            }
        }
        cmd.stderr(Stdio::piped());
        let mut inherit: Vec<i32> = fds.node_memory.clone();
        inherit.push(fds.qmp);
        inherit.extend(fds.payload);
        // SAFETY: getpid has no preconditions.
        let parent = unsafe { libc::getpid() };
        // SAFETY: the closure runs in the forked child before exec and only
        // calls async-signal-safe functions (fcntl, prctl, getppid, _exit) on
        // descriptors that are open in the child; it allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                for &fd in &inherit {
                    let flags = libc::fcntl(fd, libc::F_GETFD);
                    if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                // QEMU dies with the thread that started it, even on SIGKILL.
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::getppid() != parent {
                    libc::_exit(1); // the harness died before prctl took effect
                }
                Ok(())
            })
        };
        let mut child = cmd.spawn().map_err(|e| VmmError::Spawn {
            program: self.binary.display().to_string(),
            source: e,
        })?;
        drop(theirs);
        let stderr = Arc::new(Mutex::new(String::new()));
        if let Some(mut pipe) = child.stderr.take() {
            let sink = Arc::clone(&stderr);
            std::thread::Builder::new()
                .name("ktstr-qemu-stderr".into())
                .spawn(move || {
                    let mut buf = [0u8; 4096];
                    while let Ok(n @ 1..) = pipe.read(&mut buf) {
                        let mut s = sink.lock().unwrap_or_else(|p| p.into_inner());
                        s.push_str(&String::from_utf8_lossy(&buf[..n]));
                        if s.len() > 64 << 10 {
                            let cut = s.len() - (32 << 10);
                            let cut = (cut..s.len()).find(|&i| s.is_char_boundary(i)).unwrap_or(0);
                            s.drain(..cut);
                        }
                    }
                })
                .map_err(|e| VmmError::Os {
                    what: "starting the QEMU stderr reader",
                    source: e,
                })?;
        }
        let tail = Tail::default();
        let console = child
            .stdout
            .take()
            .map(|out| spawn_reader(out, tail.clone()));
        let mut machine = QemuMachine {
            child,
            ram,
            qmp: None,
            tail,
            console,
            stderr,
            ended: None,
        };
        match qmp::Qmp::connect(ours) {
            Ok(q) => machine.qmp = Some(q),
            Err(e) => {
                // QEMU refused to start (bad option, missing file): its own words matter most.
                std::thread::sleep(Duration::from_millis(100));
                machine.kill();
                let words = machine.stderr_text();
                return Err(if words.trim().is_empty() {
                    e
                } else {
                    VmmError::Control(format!("QEMU failed to start: {}", words.trim()))
                });
            }
        }
        Ok(machine)
    }
}

/// A VM run by QEMU.
#[derive(Debug)]
struct QemuMachine {
    child: Child,
    ram: GuestRam,
    qmp: Option<qmp::Qmp>,
    tail: Tail,
    console: Option<Console>,
    stderr: Arc<Mutex<String>>,
    ended: Option<EndReason>,
}

impl QemuMachine {
    fn qmp(&self) -> Result<&qmp::Qmp, VmmError> {
        self.qmp
            .as_ref()
            .ok_or_else(|| VmmError::Control("QMP is not connected".into()))
    }

    fn stderr_text(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Names the end of a QEMU process that exited on its own.
    fn classify(&mut self, status: std::process::ExitStatus) -> EndReason {
        // Let the console reader drain what QEMU wrote last.
        std::thread::sleep(Duration::from_millis(20));
        if let Some(lines) = self.tail.crash_report() {
            return EndReason::Panic { lines };
        }
        let reason = self
            .qmp
            .as_ref()
            .and_then(|q| q.shutdown_reason(Duration::from_secs(2)));
        match reason.as_deref() {
            Some("guest-shutdown") => EndReason::PowerOff,
            Some("guest-reset") => EndReason::Reset,
            Some("guest-panic") => EndReason::Panic {
                lines: self.tail.last(40),
            },
            Some("host-qmp-quit" | "host-signal" | "host-qmp-system-reset") => EndReason::Killed,
            other => EndReason::Crashed {
                detail: format!(
                    "QEMU exited with {status} (shutdown reason: {}); stderr: {}; last console lines: {}",
                    other.unwrap_or("none"),
                    self.stderr_text().trim(),
                    self.tail.last(10).join(" | ")
                ),
            },
        }
    }
}

impl Machine for QemuMachine {
    fn memory(&self) -> &GuestMemoryMmap {
        self.ram.memory()
    }

    fn pause(&mut self) -> Result<(), VmmError> {
        self.qmp()?.execute("stop").map(drop)
    }

    fn resume(&mut self) -> Result<(), VmmError> {
        self.qmp()?.execute("cont").map(drop)
    }

    fn take_console(&mut self) -> Option<Console> {
        self.console.take()
    }

    fn vcpu_regs(&mut self, cpu: u32) -> Result<VcpuRegs, VmmError> {
        let answer = self.qmp()?.execute_with(
            "human-monitor-command",
            Some(serde_json::json!({ "command-line": "info registers", "cpu-index": cpu })),
        )?;
        regs::parse(answer.as_str().unwrap_or_default())
    }

    fn try_wait(&mut self) -> Result<Option<EndReason>, VmmError> {
        if let Some(r) = &self.ended {
            return Ok(Some(r.clone()));
        }
        match self.child.try_wait() {
            Ok(Some(status)) => {
                let r = self.classify(status);
                self.ended = Some(r.clone());
                Ok(Some(r))
            }
            Ok(None) => Ok(None),
            Err(e) => Err(VmmError::Os {
                what: "waiting for QEMU",
                source: e,
            }),
        }
    }

    fn wait(&mut self, deadline: Option<Instant>) -> Result<EndReason, VmmError> {
        loop {
            if let Some(r) = self.try_wait()? {
                return Ok(r);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                self.kill();
                self.ended = Some(EndReason::Timeout);
                return Ok(EndReason::Timeout);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn save(&mut self, image: &std::path::Path) -> Result<(), VmmError> {
        let saved = snapshot::save(self.qmp()?, image);
        self.kill();
        saved
    }

    fn kill(&mut self) {
        if self.ended.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
            self.ended = Some(EndReason::Killed);
        }
    }
}

impl Drop for QemuMachine {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unusable_qemu_is_named_with_the_fix() {
        let missing = std::path::Path::new("/nonexistent/ktstr/qemu-system-x86_64");
        let err = QemuBackend::new(missing).expect_err("no such binary");
        let text = err.to_string();
        assert!(
            text.contains("/nonexistent/ktstr/qemu-system-x86_64 does not run")
                && text.contains("cargo xtask setup")
                && text.contains("KTSTR_QEMU"),
            "{text}"
        );
        assert!(matches!(
            check_version(missing),
            Err(QemuVersionError::DoesNotRun { .. })
        ));
        // A binary that runs but is not QEMU reads as version 0.
        let not_qemu = std::path::Path::new("/bin/true");
        assert!(matches!(
            check_version(not_qemu),
            Err(QemuVersionError::TooOld { major: 0, .. })
        ));
    }
}
