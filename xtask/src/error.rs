//! The failures every task shares: a command that did not run or failed, a
//! file that could not be read or written, a kernel command of
//! `ktstr_kernel::cli`. Each module's error enum holds these as variants;
//! `main` prints an error with its causes ([`report`]).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output};

/// A command that could not be started, or that failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CommandError {
    /// The command could not be started (missing, not executable).
    #[error("cannot run {command}")]
    Spawn {
        /// The command as shown to the user.
        command: String,
        /// The operating system's answer.
        #[source]
        source: std::io::Error,
    },
    /// The command ran and exited unsuccessfully.
    #[error("{command} exited with {status}")]
    Failed {
        /// The command as shown to the user.
        command: String,
        /// How it exited.
        status: ExitStatus,
    },
    /// The command ran and exited unsuccessfully, saying why on stderr.
    #[error("{command} exited with {status}: {stderr}")]
    FailedSaying {
        /// The command as shown to the user.
        command: String,
        /// How it exited.
        status: ExitStatus,
        /// Its error output, trimmed.
        stderr: String,
    },
}

/// Runs `cmd` with inherited output; an error unless it exits with 0.
pub(crate) fn status(cmd: &mut Command) -> Result<(), CommandError> {
    let command = format!("{cmd:?}");
    match cmd.status() {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(CommandError::Failed { command, status }),
        Err(source) => Err(CommandError::Spawn { command, source }),
    }
}

/// Runs `cmd`, shown as `command`, capturing its output; an error naming
/// its stderr (if it printed any) unless it exits with 0.
pub(crate) fn output(cmd: &mut Command, command: &str) -> Result<Output, CommandError> {
    let out = cmd.output().map_err(|source| CommandError::Spawn {
        command: command.to_string(),
        source,
    })?;
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    let command = command.to_string();
    match (out.status.success(), stderr.is_empty()) {
        (true, _) => Ok(out),
        (false, true) => Err(CommandError::Failed {
            command,
            status: out.status,
        }),
        (false, false) => Err(CommandError::FailedSaying {
            command,
            status: out.status,
            stderr,
        }),
    }
}

/// A file or directory that could not be read, written or made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FileError {
    /// An operation on one path.
    #[error("{op} {}", path.display())]
    At {
        /// What was being done: "reading", "writing", "creating", ...
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's answer.
        #[source]
        source: std::io::Error,
    },
    /// An operation from one path to another (rename, copy).
    #[error("{op} {} to {}", from.display(), to.display())]
    Between {
        /// "renaming" or "copying".
        op: &'static str,
        /// The source path.
        from: PathBuf,
        /// The destination path.
        to: PathBuf,
        /// The operating system's answer.
        #[source]
        source: std::io::Error,
    },
}

impl FileError {
    /// For `map_err`: `op` on `path` failed.
    pub(crate) fn at(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.to_path_buf();
        move |source| FileError::At { op, path, source }
    }

    /// For `map_err`: `op` from `from` to `to` failed.
    pub(crate) fn between(
        op: &'static str,
        from: &Path,
        to: &Path,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let (from, to) = (from.to_path_buf(), to.to_path_buf());
        move |source| FileError::Between {
            op,
            from,
            to,
            source,
        }
    }
}

/// What the kernel commands of `ktstr_kernel::cli` (`kernel fetch`,
/// resolving the kernels of a phase) failed with.
#[derive(Debug, thiserror::Error)]
pub(crate) enum KernelCmdError {
    /// The host configuration (the environment) is unusable.
    #[error(transparent)]
    Config(#[from] ktstr::config::ConfigError),
    /// A `cargo xtask kernel` command failed.
    #[error(transparent)]
    Cmd(#[from] ktstr_kernel::cli::KernelCmdError),
    /// A kernel could not be resolved or fetched.
    #[error(transparent)]
    Kernel(#[from] ktstr_kernel::KernelError),
}

/// `e` and its causes, `outer: cause: cause`, as `main` prints an error,
/// each cause once: the facade's own rule.
pub(crate) use ktstr::error_text as report;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_names_each_cause_once() {
        let io = || std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let e = FileError::at("reading", Path::new("/x/y"))(io());
        assert_eq!(report(&e), "reading /x/y: no such file");
        // A kernel error that prints its source itself: said once.
        let k = ktstr_kernel::KernelError::Io {
            path: "/k".into(),
            source: io(),
        };
        assert_eq!(report(&k), "/k: no such file");
    }

    #[test]
    fn a_failed_command_names_the_command_and_its_stderr() {
        let e = output(
            Command::new("sh").args(["-c", "echo nope >&2; exit 3"]),
            "sh -c",
        )
        .expect_err("exit 3");
        let text = report(&e);
        assert!(
            text.starts_with("sh -c exited with exit status: 3"),
            "{text}"
        );
        assert!(text.ends_with(": nope"), "{text}");
        let e = status(&mut Command::new("/nonexistent/ktstr-xtask-tool")).expect_err("missing");
        assert!(
            report(&e).starts_with("cannot run \"/nonexistent/ktstr-xtask-tool\": "),
            "{}",
            report(&e)
        );
    }
}
