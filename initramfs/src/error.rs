//! The crate's one error type.

use std::path::PathBuf;

/// What went wrong while building a guest root.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InitramfsError {
    /// A host file could not be read, written or inspected.
    #[error("{}: {op} failed", path.display())]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// What was being done ("open", "read", "rename", ...).
        op: &'static str,
        /// The operating system's answer.
        #[source]
        source: std::io::Error,
    },
    /// A path inside the archive is not usable (empty, `..`, NUL, too long, ...).
    #[error("archive path {path:?} is invalid: {reason}")]
    InvalidPath {
        /// The path as given.
        path: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// Two entries claim the same archive path with different kinds or sources.
    #[error("archive path {path:?} is added twice with different contents ({first} and {second})")]
    Conflict {
        /// The archive path.
        path: String,
        /// What was there first.
        first: String,
        /// What was added second.
        second: String,
    },
    /// A file is larger than a `newc` header can describe (4 GiB - 1).
    #[error("{path}: {size} bytes is too large for a cpio newc entry (limit 4 GiB - 1)")]
    TooLarge {
        /// The archive path.
        path: String,
        /// Its size.
        size: u64,
    },
    /// A host file changed size while it was being packed.
    #[error("{}: changed size while being packed (expected {expected} bytes)", path.display())]
    Changed {
        /// The host file.
        path: PathBuf,
        /// The size seen when its header was written.
        expected: u64,
    },
    /// A file given as a binary, or found as a library, is not a usable ELF file.
    #[error("{}: not a usable ELF file: {source}", path.display())]
    Elf {
        /// The host file.
        path: PathBuf,
        /// What is wrong with it.
        source: ElfError,
    },
    /// A `DT_NEEDED` library was found nowhere the dynamic loader would look.
    #[error(
        "{} needs {library} (through {}), which is in none of: {searched}; \
         install the package that provides it",
        binary.display(),
        needed_by.display()
    )]
    MissingLibrary {
        /// The binary whose closure was being computed.
        binary: PathBuf,
        /// The `DT_NEEDED` name.
        library: String,
        /// The object (the binary or one of its libraries) that names it.
        needed_by: PathBuf,
        /// The directories searched, in order.
        searched: String,
    },
    /// A cpio archive being read is malformed.
    #[error("cpio archive is malformed at byte {offset}: {reason}")]
    Malformed {
        /// Offset of the problem from the start of the buffer.
        offset: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// `/etc/ld.so.cache` (or the file given in its place) is malformed.
    #[error("{}: malformed ld.so cache: {reason}", path.display())]
    LdCache {
        /// The cache file.
        path: PathBuf,
        /// What is wrong.
        reason: &'static str,
    },
}

/// What makes a file unusable as an ELF binary or library.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ElfError {
    /// It is another kind of object file.
    #[error("it is a {0:?} file")]
    NotElf(object::FileKind),
    /// Its headers, or a segment they point to, could not be read.
    #[error("{0}")]
    Parse(#[from] object::Error),
    /// A string of its dynamic section is not UTF-8.
    #[error("a dynamic string is not UTF-8")]
    NotUtf8,
    /// Its dynamic section has no string table.
    #[error("the dynamic section has no DT_STRTAB/DT_STRSZ")]
    NoStringTable,
    /// Its string table is in no loadable segment.
    #[error("DT_STRTAB is outside every loadable segment")]
    StringTableOutside,
    /// A dynamic entry points past the string table.
    #[error("a dynamic string offset is out of range")]
    StringOutOfRange,
    /// A dynamic string runs to the end of the table.
    #[error("a dynamic string is not NUL-terminated")]
    NotTerminated,
}

/// The crate's result type.
pub type Result<T, E = InitramfsError> = std::result::Result<T, E>;

/// Wrap an I/O error with the path and operation it came from.
pub(crate) fn io(
    path: impl Into<PathBuf>,
    op: &'static str,
) -> impl FnOnce(std::io::Error) -> InitramfsError {
    let path = path.into();
    move |source| InitramfsError::Io { path, op, source }
}
