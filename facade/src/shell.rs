//! `ktstr shell`: boot a VM with a declared topology and run a command (or an
//! interactive shell) in it, with busybox as the guest's userland.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ktstr_initramfs::{Archive, BaseSpec, Cache, InitrdFile};
use ktstr_topology::Topology;
use ktstr_vmm::{Console, ConsoleEvent, ConsoleMode, EndReason, Machine, VmSpec};

use crate::kernel;

/// Exit status of `ktstr shell` when the guest died before the command finished.
pub const GUEST_DIED_STATUS: i32 = 125;

/// The guest's init: mount the pseudo file systems, run the command between
/// markers (or a shell on the console), power off.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /tmp /root /sbin /usr/bin /usr/sbin
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root
mount -t devtmpfs dev /dev
mount -t sysfs sys /sys
mount -t tmpfs tmp /tmp
mkdir -p /sys/fs/cgroup /dev/pts
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t devpts devpts /dev/pts
if [ -f /ktstr/cmd ]; then
    nonce=$(cat /ktstr/nonce)
    echo "@@ktstr-begin-$nonce@@"
    sh /ktstr/cmd </dev/null
    echo "@@ktstr-end-$nonce rc=$?@@"
else
    echo "ktstr shell: $(nproc) CPUs; 'exit' powers the VM off"
    setsid cttyhack sh -l
fi
poweroff -f
"#;

/// What went wrong running a shell VM.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShellError {
    /// No usable kernel.
    #[error(transparent)]
    Kernel(#[from] kernel::KernelError),
    /// Building the initramfs failed.
    #[error("building the guest initramfs: {0}")]
    Initramfs(#[from] ktstr_initramfs::InitramfsError),
    /// The VM backend failed.
    #[error(transparent)]
    Vmm(#[from] ktstr_vmm::VmmError),
    /// No static busybox for the guest.
    #[error("{} not found: install Debian's busybox-static (`cargo xtask setup`) or set KTSTR_BUSYBOX", .0.display())]
    NoBusybox(PathBuf),
    /// The guest ended before the command finished.
    #[error("{reason}")]
    GuestDied {
        /// How it ended.
        reason: EndReason,
    },
}

/// Options of [`run`].
#[derive(Debug, Clone)]
pub struct ShellOptions {
    /// The VM's topology (memory included).
    pub topology: Topology,
    /// The kernel (`None`: `KTSTR_KERNEL`, then the newest cached kernel).
    pub kernel: Option<PathBuf>,
    /// The command to run; `None` for an interactive shell on the console.
    pub exec: Option<String>,
    /// Kill the VM after this long.
    pub timeout: Option<Duration>,
    /// Print the guest's boot messages too.
    pub verbose: bool,
    /// Host binaries to pack at `/bin/<file name>` with their shared libraries.
    pub include: Vec<PathBuf>,
}

fn busybox() -> Result<PathBuf, ShellError> {
    let p = std::env::var_os("KTSTR_BUSYBOX")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/bin/busybox"));
    if p.is_file() {
        Ok(p)
    } else {
        Err(ShellError::NoBusybox(p))
    }
}

/// The cached base archive: busybox, the init script and the included binaries.
fn base_initramfs(cache: &Cache, include: &[PathBuf]) -> Result<ktstr_initramfs::Base, ShellError> {
    let mut extra = Archive::new();
    extra.add_bytes("/init", 0o755, INIT.as_bytes().to_vec())?;
    let mut spec = BaseSpec::new().binary(busybox()?, "/bin/busybox");
    for bin in include {
        let name = bin
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| ShellError::NoBusybox(bin.clone()))?;
        spec = spec.binary(bin.clone(), &format!("/bin/{name}"));
    }
    spec.extra = extra;
    Ok(cache.base(&spec)?)
}

fn nonce() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{:x}{t:x}", std::process::id())
}

/// A booted shell VM: the machine, its console, and the initrd it boots from
/// (removed when this is dropped, after the VM).
pub struct ShellVm {
    machine: Box<dyn Machine>,
    console: Option<Console>,
    nonce: String,
    backend: String,
    _initrd: InitrdFile,
}

impl std::fmt::Debug for ShellVm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShellVm")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

impl ShellVm {
    /// Boots a VM for `opts`; the command (if any) starts as soon as init runs.
    pub fn boot(opts: &ShellOptions) -> Result<Self, ShellError> {
        let kernel = kernel::resolve(opts.kernel.as_deref())?;
        let cache = Cache::open_default()?;
        let base = base_initramfs(&cache, &opts.include)?;
        let nonce = nonce();
        let mut overlay = Archive::new();
        if let Some(cmd) = &opts.exec {
            overlay.add_bytes("/ktstr/cmd", 0o644, cmd.as_bytes().to_vec())?;
            overlay.add_bytes("/ktstr/nonce", 0o644, nonce.as_bytes().to_vec())?;
        }
        let initrd = base.with_overlay(&overlay.to_vec()?)?;
        let mut spec = VmSpec::new(&kernel.vmlinux, opts.topology);
        spec.initrd = Some(initrd.path().to_path_buf());
        spec.cmdline.push_str(" rdinit=/init");
        if opts.exec.is_none() {
            spec.console = ConsoleMode::Inherit;
        }
        let backend = crate::backend()?;
        let mut machine = backend.boot(&spec)?;
        let console = machine.take_console();
        Ok(ShellVm {
            machine,
            console,
            nonce,
            backend: backend.name(),
            _initrd: initrd,
        })
    }

    /// The running machine (memory, pause/resume, wait, kill).
    pub fn machine(&mut self) -> &mut dyn Machine {
        self.machine.as_mut()
    }

    /// The console, unless taken already or inherited by the terminal.
    pub fn take_console(&mut self) -> Option<Console> {
        self.console.take()
    }

    /// The line the guest prints right before running the command.
    pub fn begin_marker(&self) -> String {
        format!("@@ktstr-begin-{}@@", self.nonce)
    }

    /// The prefix of the line the guest prints after the command, followed by `rc=N@@`.
    pub fn end_marker(&self) -> String {
        format!("@@ktstr-end-{} rc=", self.nonce)
    }

    /// The backend's name.
    pub fn backend(&self) -> &str {
        &self.backend
    }
}

/// Boots the VM, runs the command, and returns its exit status (0 for an
/// interactive shell that powered off). The command's output goes to `out`,
/// guest diagnostics to `diag`.
pub fn run(
    opts: &ShellOptions,
    out: &mut dyn Write,
    diag: &mut dyn Write,
) -> Result<i32, ShellError> {
    let deadline = opts.timeout.map(|t| Instant::now() + t);
    let mut vm = ShellVm::boot(opts)?;
    if opts.verbose {
        let _ = writeln!(diag, "ktstr shell: booted on {}", vm.backend());
    }
    let Some(console) = vm.take_console() else {
        // Interactive: the terminal is the console.
        return match vm.machine().wait(deadline)? {
            EndReason::PowerOff => Ok(0),
            reason => Err(ShellError::GuestDied { reason }),
        };
    };
    let begin = vm.begin_marker();
    let end = vm.end_marker();
    let mut inside = false;
    let mut status = None;
    loop {
        let line = match console.recv(Duration::from_millis(200)) {
            ConsoleEvent::Line(l) => l,
            ConsoleEvent::Closed => break,
            ConsoleEvent::Idle if deadline.is_some_and(|d| Instant::now() >= d) => break,
            ConsoleEvent::Idle => continue,
        };
        if let Some(rest) = line.strip_prefix(&end) {
            status = rest.trim_end_matches("@@").parse::<i32>().ok();
            inside = false;
        } else if line == begin {
            inside = true;
        } else if inside {
            let _ = writeln!(out, "{line}");
        } else if opts.verbose {
            let _ = writeln!(diag, "{line}");
        }
    }
    let reason = vm.machine().wait(deadline)?;
    match (status, reason) {
        (Some(rc), EndReason::PowerOff) => Ok(rc),
        (_, reason) => {
            if let EndReason::Panic { lines } = &reason {
                for l in lines {
                    let _ = writeln!(diag, "{l}");
                }
            }
            Err(ShellError::GuestDied { reason })
        }
    }
}
