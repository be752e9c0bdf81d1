//! Errors of the VM backends.

use std::path::PathBuf;

/// What went wrong starting or driving a VM.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VmmError {
    /// The VM description is unusable.
    #[error("invalid VM description: {0}")]
    InvalidSpec(String),
    /// A file the VM needs is missing.
    #[error("{what} {} does not exist{hint}", path.display())]
    MissingFile {
        /// Which input.
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// How to fix it.
        hint: &'static str,
    },
    /// The backend's program is missing.
    #[error("{program} not found: {hint}")]
    MissingProgram {
        /// The program.
        program: String,
        /// How to get it.
        hint: String,
    },
    /// The VM process could not be started.
    #[error("cannot start {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Guest memory could not be created or mapped.
    #[error("guest memory: {0}")]
    Memory(String),
    /// The control channel (QMP) failed.
    #[error("VM control channel: {0}")]
    Control(String),
    /// The backend cannot do what was asked (snapshots on a backend without them).
    #[error("{0}")]
    Unsupported(String),
    /// Saving or restoring a machine failed.
    #[error("snapshot {}: {why}", image.display())]
    Snapshot {
        /// The image file.
        image: PathBuf,
        /// What went wrong.
        why: String,
    },
    /// An OS call failed.
    #[error("{what}: {source}")]
    Os {
        /// The call.
        what: &'static str,
        /// The OS error.
        source: std::io::Error,
    },
}

impl VmmError {
    pub(crate) fn os(what: &'static str) -> Self {
        VmmError::Os {
            what,
            source: std::io::Error::last_os_error(),
        }
    }
}
