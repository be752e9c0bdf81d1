//! The guest agent of `ktstr shell`: the `ktstr` binary as PID 1 runs one
//! command (or an interactive shell on the console) with busybox as the
//! userland, and reports its output and exit status over the same channel
//! the tests use.

use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::system::{DevMem, console, mount, power_off, setup_mounts, uptime_ms};
use crate::channel::{Message, Writer};

/// Where the host puts the shell agent's configuration in the initramfs.
pub const SHELL_CONFIG_PATH: &str = "/ktstr/shell.json";
/// Where the host packs busybox.
const BUSYBOX: &str = "/bin/busybox";
/// Largest output chunk per message.
const CHUNK: usize = 16 << 10;

/// What the host tells the shell agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShellConfig {
    /// The command to run with `sh -c`; `None` for an interactive shell.
    pub command: Option<String>,
    /// Guest physical address of the channel region.
    pub channel_gpa: u64,
    /// Size of the channel region.
    pub channel_size: u64,
}

/// True in the guest's PID 1 of a `ktstr shell` VM.
pub fn is_shell_agent() -> bool {
    // SAFETY: getpid has no preconditions.
    let pid1 = unsafe { libc::getpid() == 1 };
    pid1 && std::path::Path::new(SHELL_CONFIG_PATH).exists()
}

/// The exit status as a shell reports it: the code, or 128 + the signal.
fn shell_status(st: std::process::ExitStatus) -> i32 {
    st.code()
        .or_else(|| st.signal().map(|s| 128 + s))
        .unwrap_or(255)
}

/// Runs the shell agent. Call it first thing in PID 1; never returns.
pub fn run_shell_agent() -> ! {
    setup_mounts();
    mount("devpts", "/dev/pts", "devpts");
    let cfg: ShellConfig = match std::fs::read(SHELL_CONFIG_PATH)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(c) => c,
        Err(e) => {
            console(&format!("cannot read {SHELL_CONFIG_PATH}: {e}"));
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
            realtime_ns: super::system::realtime_ns(),
            release: super::system::release(),
            test: "shell".into(),
        },
        Duration::from_secs(1),
    );
    // The busybox applets as commands, and the environment a login has.
    let _ = Command::new(BUSYBOX).args(["--install", "-s"]).status();
    let status = match &cfg.command {
        Some(cmd) => run_command(cmd, &ch),
        None => Command::new(BUSYBOX)
            .args(["setsid", "cttyhack", "sh", "-l"])
            .env("PATH", "/bin:/sbin:/usr/bin:/usr/sbin")
            .env("HOME", "/root")
            .status()
            .map(shell_status)
            .map_err(ShellError::Start),
    };
    match status {
        Ok(status) => {
            ch.send(&Message::ShellExit { status }, Duration::from_secs(5));
        }
        Err(e) => {
            ch.send(&Message::GuestError(e.to_string()), Duration::from_secs(5));
        }
    }
    power_off()
}

/// Why the shell or its command could not run to its end.
#[derive(Debug, thiserror::Error)]
enum ShellError {
    /// The pipe for its output could not be made.
    #[error("pipe: {0}")]
    Pipe(std::io::Error),
    /// busybox could not be started.
    #[error("cannot start {BUSYBOX} sh: {0}")]
    Start(std::io::Error),
    /// Waiting for the command failed.
    #[error("waiting for the command: {0}")]
    Wait(std::io::Error),
}

/// Runs `cmd` with its stdout and stderr on one pipe, forwarding what it
/// writes over the channel as it comes.
fn run_command(cmd: &str, ch: &Writer<DevMem>) -> Result<i32, ShellError> {
    let (mut reader, writer) = std::io::pipe().map_err(ShellError::Pipe)?;
    let writer2 = writer.try_clone().map_err(ShellError::Pipe)?;
    let mut child = Command::new(BUSYBOX)
        .args(["sh", "-c", cmd])
        .env("PATH", "/bin:/sbin:/usr/bin:/usr/sbin")
        .env("HOME", "/root")
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(writer2)
        .spawn()
        .map_err(ShellError::Start)?;
    // A reader thread hands chunks over, so a command that leaves something
    // running with the pipe open (`sleep 30 &`) does not hold the status back.
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if tx.send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    });
    let forward = |chunk: Vec<u8>| {
        ch.send(&Message::ShellOutput(chunk), Duration::from_secs(10));
    };
    let status = loop {
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(chunk) => forward(chunk),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                break child.wait();
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
        }
        match child.try_wait() {
            Ok(Some(st)) => break Ok(st),
            Ok(None) => {}
            Err(e) => break Err(e),
        }
    };
    // What the command wrote just before it ended.
    while let Ok(chunk) = rx.recv_timeout(Duration::from_millis(100)) {
        forward(chunk);
    }
    status.map(shell_status).map_err(ShellError::Wait)
}
