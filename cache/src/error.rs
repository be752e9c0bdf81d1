//! The crate's one error type.

use std::path::{Path, PathBuf};

/// Shorthand for results of this crate.
pub type Result<T> = std::result::Result<T, CacheError>;

/// What went wrong with a cache file or directory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// A file system operation on a cache path failed.
    #[error("{}: {op} failed", path.display())]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// What was being done ("create", "lock", "rename", ...).
        op: &'static str,
        /// The operating system's answer.
        #[source]
        source: std::io::Error,
    },
}

impl CacheError {
    /// The path the failed operation concerned.
    pub fn path(&self) -> &Path {
        match self {
            CacheError::Io { path, .. } => path,
        }
    }

    /// What was being done ("create", "lock", "rename into place", ...).
    pub fn op(&self) -> &'static str {
        match self {
            CacheError::Io { op, .. } => op,
        }
    }

    /// The operating system's error, for callers whose own error type wraps one.
    pub fn into_io(self) -> std::io::Error {
        match self {
            CacheError::Io { source, .. } => source,
        }
    }
}

/// A closure turning an I/O error on `path` during `op` into a [`CacheError`].
pub(crate) fn io(path: &Path, op: &'static str) -> impl FnOnce(std::io::Error) -> CacheError {
    let path = path.to_path_buf();
    move |source| CacheError::Io { path, op, source }
}
