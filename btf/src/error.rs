//! The crate's one error type.

use alloc::string::String;

use crate::Kind;

/// What went wrong while parsing BTF or answering a query.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BtfError {
    /// The data is shorter than the fixed part of `struct btf_header`.
    #[error("BTF data is {len} bytes, too short for the 24-byte header")]
    TooShort {
        /// Length of the data.
        len: usize,
    },
    /// The magic number is neither BTF's nor byte-swapped BTF's.
    #[error("bad BTF magic {magic:#06x}: this is not BTF")]
    BadMagic {
        /// The first two bytes, read little-endian.
        magic: u16,
    },
    /// The magic number is byte-swapped.
    #[error("big-endian BTF is not supported")]
    BigEndian,
    /// `version` is not 1.
    #[error("BTF version {0} is not supported (only version 1 is)")]
    Version(u8),
    /// `flags` is not 0.
    #[error("BTF header flags {0:#x} are not supported")]
    Flags(u8),
    /// `hdr_len` is smaller than the fixed header or larger than the data.
    #[error("BTF header length {hdr_len} is invalid for {len} bytes of data")]
    HeaderLen {
        /// The header's `hdr_len`.
        hdr_len: u32,
        /// Length of the data.
        len: usize,
    },
    /// A section runs past the end of the data.
    #[error("BTF {section} section at {off}+{len} runs past the {avail} bytes after the header")]
    SectionBounds {
        /// `"type"` or `"string"`.
        section: &'static str,
        /// Offset from the end of the header.
        off: u32,
        /// Length in bytes.
        len: u32,
        /// Bytes available after the header.
        avail: usize,
    },
    /// The type section is not 4-byte aligned, or it overlaps the string section.
    #[error("BTF sections are laid out wrongly: {0}")]
    Layout(&'static str),
    /// The string section breaks a rule (empty, not NUL-terminated, not UTF-8).
    #[error("BTF string section is malformed: {0}")]
    Strings(&'static str),
    /// A type record has a kind this parser does not know.
    #[error("BTF type {id} has unknown kind {kind} (this parser knows kinds 1 to 19)")]
    UnknownKind {
        /// Type id of the record.
        id: u32,
        /// The kind number.
        kind: u8,
    },
    /// A type record runs past the end of the type section.
    #[error("BTF type {id} ({kind:?}) needs {need} bytes but the type section has {have} left")]
    Truncated {
        /// Type id of the record.
        id: u32,
        /// Its kind.
        kind: Kind,
        /// Bytes the record needs.
        need: usize,
        /// Bytes left in the type section.
        have: usize,
    },
    /// A name offset points outside the string section.
    #[error("BTF type {id}: string offset {off} is outside the string sections")]
    NameOffset {
        /// Type id of the record holding the offset.
        id: u32,
        /// The offset.
        off: u32,
    },
    /// A type id refers beyond the last type.
    #[error("BTF type {id} refers to type {target}, but the last type is {last}")]
    TypeIdRange {
        /// Type id of the record holding the reference (0 for a caller's id).
        id: u32,
        /// The id it refers to.
        target: u32,
        /// The last valid id.
        last: u32,
    },
    /// A record breaks a rule of its kind.
    #[error("BTF type {id} ({kind:?}) is invalid: {what}")]
    Invalid {
        /// Type id of the record.
        id: u32,
        /// Its kind.
        kind: Kind,
        /// The rule it breaks.
        what: &'static str,
    },
    /// More types than ids can number.
    #[error("BTF has too many types")]
    TooManyTypes,
    /// No type of that name (and kind) exists.
    #[error("no BTF type named {name:?}{}", kind_suffix(*kind))]
    NoSuchType {
        /// The name asked for.
        name: String,
        /// The kind asked for, if any.
        kind: Option<Kind>,
    },
    /// A member path names a member that does not exist.
    #[error("{ty} has no member {member:?}")]
    NoSuchMember {
        /// The type searched (a C-ish name).
        ty: String,
        /// The path component not found.
        member: String,
    },
    /// A member path is malformed or steps through something that is not a struct, union or array.
    #[error("member path {path:?}: {what}")]
    BadPath {
        /// The full path.
        path: String,
        /// What is wrong with it.
        what: &'static str,
    },
    /// A type has no size (void, function, forward declaration) or its size overflows.
    #[error("BTF type {id} ({kind:?}) has no size")]
    NoSize {
        /// The type id.
        id: u32,
        /// Its kind.
        kind: Kind,
    },
    /// Resolving a type went through too many typedefs, modifiers, arrays or nested members:
    /// the BTF has a cycle or is too deep to be real.
    #[error("BTF type {id} nests too deeply (a reference cycle?)")]
    TooDeep {
        /// The type id where resolution started.
        id: u32,
    },
    /// No enumerator of that name exists.
    #[error("no enumerator named {0:?}")]
    NoSuchEnumerator(String),
    /// A type is not of the kind the query needs.
    #[error("BTF type {id} is a {found:?}, expected {expected}")]
    WrongKind {
        /// The type id.
        id: u32,
        /// What the query needs.
        expected: &'static str,
        /// What it is.
        found: Kind,
    },
    /// A DATASEC has no variable of that name.
    #[error("section {section:?} has no variable {var:?}")]
    NoSuchVar {
        /// The DATASEC's name.
        section: String,
        /// The variable asked for.
        var: String,
    },
    /// The writer given to the C dump failed.
    #[error("writing the C header failed")]
    Write,
    /// The ELF file could not be read, or has no `.BTF` section.
    #[error("ELF: {0}")]
    Elf(String),
}

fn kind_suffix(kind: Option<Kind>) -> &'static str {
    match kind {
        None => "",
        Some(k) => k.suffix_for_error(),
    }
}

impl From<core::fmt::Error> for BtfError {
    fn from(_: core::fmt::Error) -> Self {
        BtfError::Write
    }
}
