//! `ktstr shell`: boot a VM with a declared topology and run a command (or an
//! interactive shell) in it, with busybox as the guest's userland.
//!
//! The guest's init is a shell agent — the `ktstr` binary itself, run as PID
//! 1 — which reports the command's output and exit status over the same
//! channel the tests use; the console carries only the kernel's messages
//! (and the terminal of an interactive shell).

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ktstr_initramfs::{Archive, BaseSpec, Cache, InitrdFile};
use ktstr_ops::channel::{self, ChannelError, Message, Reader};
use ktstr_ops::{SHELL_CONFIG_PATH, ShellConfig};
use ktstr_topology::Topology;
use ktstr_vmm::{Console, ConsoleEvent, ConsoleMode, EndReason, Machine, ReservedRegion};

use crate::channel::HostChannel;
use crate::config::{ConfigError, HostConfig};

/// Exit status of `ktstr shell` when the guest died before the command finished.
pub const GUEST_DIED_STATUS: i32 = 125;

/// What went wrong running a shell VM.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShellError {
    /// The host configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// No usable kernel.
    #[error(transparent)]
    Kernel(#[from] ktstr_kernel::KernelError),
    /// Building the initramfs failed.
    #[error("building the guest initramfs: {0}")]
    Initramfs(#[from] ktstr_initramfs::InitramfsError),
    /// The VM backend failed.
    #[error(transparent)]
    Vmm(#[from] ktstr_vmm::VmmError),
    /// No static busybox for the guest.
    #[error("{} not found: install Debian's busybox-static (`cargo xtask setup`) or set KTSTR_BUSYBOX", .0.display())]
    NoBusybox(PathBuf),
    /// No guest agent binary.
    #[error("the shell's guest agent {} cannot be used: {why}", path.display())]
    NoAgent {
        /// The agent binary.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// `KTSTR_KASLR=1` asked for a randomized boot, and the kernel has no
    /// bzImage.
    #[error(
        "KTSTR_KASLR=1 boots the kernel's bzImage, and {} has none beside it: use a cached \
         kernel (`cargo xtask kernel fetch`) or pass its bzImage with --kernel",
        vmlinux.display()
    )]
    NoBzImage {
        /// The vmlinux in use.
        vmlinux: PathBuf,
    },
    /// The guest's harness failed.
    #[error("the guest's shell agent failed: {0}")]
    Agent(String),
    /// The channel from the guest is corrupt.
    #[error("reading the guest's channel: {0}")]
    Channel(#[from] ChannelError),
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
    /// The kernel (`None`: the host configuration's: `KTSTR_KERNEL`, then
    /// the newest cached kernel).
    pub kernel: Option<ktstr_kernel::KernelSpec>,
    /// The command to run; `None` for an interactive shell on the console.
    pub exec: Option<String>,
    /// Kill the VM after it has run this long (counted from launch: a wait
    /// for host slots does not count).
    pub timeout: Option<Duration>,
    /// Print the guest's boot messages too.
    pub verbose: bool,
    /// Host binaries to pack at `/bin/<file name>` with their shared libraries.
    pub include: Vec<PathBuf>,
    /// The guest agent: a binary that calls [`agent_main`] first thing (the
    /// `ktstr` command does). `None`: this process's own binary.
    pub agent: Option<PathBuf>,
    /// More kernel command-line arguments (`loglevel=7` shows what `quiet`
    /// hides).
    pub kernel_args: String,
}

/// Call first thing in `main` of a binary used as the shell's guest agent:
/// in a shell VM's PID 1 it runs the agent and never returns; elsewhere it
/// returns at once.
pub fn agent_main() {
    if ktstr_ops::is_shell_agent() {
        ktstr_ops::run_shell_agent();
    }
}

fn busybox(host: &HostConfig) -> Result<PathBuf, ShellError> {
    if host.busybox.is_file() {
        Ok(host.busybox.clone())
    } else {
        Err(ShellError::NoBusybox(host.busybox.clone()))
    }
}

/// The directories `busybox --install -s` puts applets in besides `/bin`
/// (which holds busybox itself): busybox knows exactly these five places —
/// `/`, `/bin`, `/sbin`, `/usr/bin`, `/usr/sbin` — and skips an applet
/// whose directory is missing (`/usr/bin/env` among them).
const APPLET_DIRS: [&str; 3] = ["/sbin", "/usr/bin", "/usr/sbin"];

/// What the base archive holds: the agent as `/init`, busybox with the
/// directories of its applets, and the included binaries at `/bin/<name>`.
fn base_spec(
    agent: PathBuf,
    busybox: PathBuf,
    include: &[PathBuf],
) -> Result<BaseSpec, ShellError> {
    let mut spec = BaseSpec::new()
        .binary(agent, "/init")
        .binary(busybox, "/bin/busybox");
    for dir in APPLET_DIRS {
        spec.extra.add_dir(dir, 0o755)?;
    }
    for bin in include {
        let name = bin
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| ShellError::NoBusybox(bin.clone()))?;
        spec = spec.binary(bin.clone(), &format!("/bin/{name}"));
    }
    Ok(spec)
}

/// The cached base archive: the agent, busybox and the included binaries.
fn base_initramfs(
    host: &HostConfig,
    cache: &Cache,
    agent: PathBuf,
    include: &[PathBuf],
) -> Result<ktstr_initramfs::Base, ShellError> {
    let spec = base_spec(agent, busybox(host)?, include)?;
    Ok(cache.base(&spec)?)
}

/// A booted shell VM: the machine, its console, the channel from its agent,
/// and the initrd it boots from (removed when this is dropped, after the VM).
pub struct ShellVm {
    machine: Box<dyn Machine>,
    console: Option<Console>,
    channel: Reader<HostChannel>,
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

/// What the shell agent said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentEvent {
    /// Output of the command.
    Output(Vec<u8>),
    /// The command ended with this status.
    Exit(i32),
    /// The agent failed.
    Failed(String),
}

impl ShellVm {
    /// Boots a VM for `opts` with the settings of `host`; the command (if
    /// any) starts as soon as init runs.
    pub fn boot(opts: &ShellOptions, host: &HostConfig) -> Result<Self, ShellError> {
        let kernel = host.resolve_kernel(opts.kernel.as_ref())?;
        let cache = host.initramfs_cache()?;
        let agent = match &opts.agent {
            Some(a) => a.clone(),
            None => std::env::current_exe().map_err(|e| ShellError::NoAgent {
                path: "(this process)".into(),
                why: e.to_string(),
            })?,
        };
        let base = base_initramfs(host, &cache, agent, &opts.include)?;
        let config = ShellConfig {
            command: opts.exec.clone(),
            channel_gpa: channel::CHANNEL_GPA,
            channel_size: channel::CHANNEL_SIZE,
        };
        let mut overlay = Archive::new();
        let json = serde_json::to_vec(&config).expect("the shell config serializes");
        overlay.add_bytes(SHELL_CONFIG_PATH, 0o644, json)?;
        // As in tests: /boot/config-$(uname -r) for schedulers with __kconfig externs.
        if let Some(kconfig) = kernel.config.as_ref().filter(|c| c.is_file()) {
            overlay.add_file(ktstr_ops::KERNEL_CONFIG_PATH, 0o644, kconfig)?;
        }
        let initrd = base.with_overlay(&overlay.to_vec()?)?;
        // As for tests: KTSTR_KASLR=1 boots the bzImage randomized, and the
        // command line starts /init in a quiet guest.
        let mut spec = crate::runner::vm_spec_of(&kernel, opts.topology, host.kaslr)
            .map_err(|vmlinux| ShellError::NoBzImage { vmlinux })?;
        spec.initrd = Some(initrd.path().to_path_buf());
        if !opts.kernel_args.is_empty() {
            spec.cmdline.push(' ');
            spec.cmdline.push_str(&opts.kernel_args);
        }
        spec.host_threads = Some(host.host_cpus);
        spec.tcg = host.tcg;
        spec.reserved.push(ReservedRegion {
            gpa: channel::CHANNEL_GPA,
            size: channel::CHANNEL_SIZE,
        });
        if opts.exec.is_none() {
            spec.console = ConsoleMode::Inherit;
        }
        let backend = host.backend()?;
        let mut machine = backend.boot(&spec)?;
        let console = machine.take_console();
        let channel = Reader::new(HostChannel {
            mem: machine.memory().clone(),
            base: channel::CHANNEL_GPA,
        });
        Ok(ShellVm {
            machine,
            console,
            channel,
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

    /// What the agent said since the last call.
    pub fn poll(&mut self) -> Result<Vec<AgentEvent>, ShellError> {
        let mut events = Vec::new();
        let msgs = match self.channel.poll() {
            // The agent has not opened the channel yet.
            Err(ChannelError::NotInitialized) => Vec::new(),
            other => other?,
        };
        for m in msgs {
            match m {
                Message::ShellOutput(bytes) => events.push(AgentEvent::Output(bytes)),
                Message::ShellExit { status } => events.push(AgentEvent::Exit(status)),
                Message::GuestError(e) => events.push(AgentEvent::Failed(e)),
                _ => {}
            }
        }
        Ok(events)
    }

    /// The backend's name.
    pub fn backend(&self) -> &str {
        &self.backend
    }
}

/// Start of the line `ktstr shell` prints (to its diagnostics) when it
/// waited for host slots, followed by the seconds: `…: 12.3s (…)`.
pub const SLOT_WAIT_PREFIX: &str = "ktstr shell: waited for host slots: ";

/// Waits shorter than this go unsaid.
const SLOT_WAIT_WORTH_SAYING: Duration = Duration::from_secs(1);

/// Boots the VM, runs the command, and returns its exit status (0 for an
/// interactive shell that powered off). The command's output goes to `out`,
/// guest diagnostics to `diag`.
pub fn run(
    opts: &ShellOptions,
    host: &HostConfig,
    out: &mut dyn Write,
    diag: &mut dyn Write,
) -> Result<i32, ShellError> {
    // The limit is the VM's: it starts once the backend has the host slots
    // and has launched the VM, so a wait for slots other VMs hold on a busy
    // host never counts against it.
    let mut vm = ShellVm::boot(opts, host)?;
    let deadline = opts.timeout.map(|t| Instant::now() + t);
    let waited = vm.machine().slot_wait();
    if waited >= SLOT_WAIT_WORTH_SAYING {
        let _ = writeln!(
            diag,
            "{SLOT_WAIT_PREFIX}{:.1}s (other VMs on this host held them)",
            waited.as_secs_f64()
        );
    }
    if opts.verbose {
        let _ = writeln!(diag, "ktstr shell: booted on {}", vm.backend());
    }
    let console = vm.take_console();
    let mut status = None;
    let mut failed = None;
    let mut absorb = |vm: &mut ShellVm, out: &mut dyn Write| -> Result<(), ShellError> {
        for e in vm.poll()? {
            match e {
                AgentEvent::Output(bytes) => {
                    let _ = out.write_all(&bytes);
                    let _ = out.flush();
                }
                AgentEvent::Exit(rc) => status = Some(rc),
                AgentEvent::Failed(why) => failed = Some(why),
            }
        }
        Ok(())
    };
    let reason = loop {
        if let Some(c) = &console {
            while let ConsoleEvent::Line(l) = c.recv(Duration::ZERO) {
                if opts.verbose {
                    let _ = writeln!(diag, "{l}");
                }
            }
        }
        absorb(&mut vm, out)?;
        if let Some(end) = vm.machine().try_wait()? {
            break end;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            vm.machine().kill();
            break EndReason::Timeout;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // The mapping outlives the VM: what the agent wrote last.
    absorb(&mut vm, out)?;
    match (status, failed, reason) {
        (Some(rc), _, EndReason::PowerOff) => Ok(rc),
        (_, Some(why), EndReason::PowerOff) => Err(ShellError::Agent(why)),
        (_, _, reason) => {
            if let EndReason::Panic { lines } = &reason {
                for l in lines {
                    let _ = writeln!(diag, "{l}");
                }
            }
            Err(ShellError::GuestDied { reason })
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    use ktstr_initramfs::{EntryKind, parse};

    /// Debian's static busybox, which `cargo xtask setup` installs.
    const HOST_BUSYBOX: &str = "/bin/busybox";

    /// The directories of the shell's base archive (the host's busybox
    /// stands in for the agent).
    fn archive_dirs() -> BTreeSet<String> {
        let spec =
            super::base_spec(HOST_BUSYBOX.into(), HOST_BUSYBOX.into(), &[]).expect("base spec");
        let bytes = spec.archive().expect("archive").to_vec().expect("bytes");
        parse(&bytes)
            .expect("parse")
            .iter()
            .filter(|e| e.kind() == EntryKind::Dir)
            .map(|e| format!("/{}", String::from_utf8_lossy(e.name)))
            .collect()
    }

    #[test]
    fn the_guest_root_has_the_usual_directories() {
        let dirs = archive_dirs();
        for d in ["/bin", "/sbin", "/usr", "/usr/bin", "/usr/sbin"] {
            assert!(dirs.contains(d), "{d} missing from {dirs:?}");
        }
    }

    /// The oracle is busybox itself: every directory `--list-full` installs
    /// an applet in is a directory of the archive (`linuxrc` goes to `/`).
    #[test]
    fn every_applet_of_the_host_busybox_has_its_directory() {
        assert!(
            Path::new(HOST_BUSYBOX).is_file(),
            "{HOST_BUSYBOX} is missing: install busybox-static (`cargo xtask setup`)"
        );
        let out = std::process::Command::new(HOST_BUSYBOX)
            .arg("--list-full")
            .output()
            .expect("run busybox --list-full");
        assert!(out.status.success(), "busybox --list-full: {out:?}");
        let listed = String::from_utf8_lossy(&out.stdout).into_owned();
        let dirs = archive_dirs();
        let mut missing = BTreeSet::new();
        let mut applets = 0;
        for applet in listed.lines() {
            applets += 1;
            let Some((dir, _)) = applet.rsplit_once('/') else {
                continue;
            };
            let dir = format!("/{dir}");
            if !dirs.contains(&dir) {
                missing.insert(dir);
            }
        }
        assert!(applets > 100, "busybox listed {applets} applets: {listed}");
        assert!(
            missing.is_empty(),
            "applet directories missing: {missing:?}"
        );
        assert!(
            listed.lines().any(|l| l == "usr/bin/env"),
            "busybox puts env in /usr/bin: {listed}"
        );
    }
}
