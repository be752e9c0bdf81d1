//! The crate's one error type: every read of guest memory is fallible, and a torn structure,
//! a garbage pointer or a vanished object is one of these values, never a panic.

use std::path::PathBuf;

use ktstr_btf::BtfError;

/// What went wrong reading a guest kernel.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A guest physical range is not (wholly) guest RAM.
    #[error("guest physical {addr:#x}+{len:#x} is not guest RAM")]
    PhysRead {
        /// Guest physical address.
        addr: u64,
        /// Bytes asked for.
        len: usize,
    },
    /// A page-table entry on the way to `va` is not present.
    #[error("guest virtual {va:#x} is not mapped (no present entry at the {level} level)")]
    NotMapped {
        /// The virtual address.
        va: u64,
        /// `"PML5"`, `"PML4"`, `"PDPT"`, `"PD"` or `"PT"`.
        level: &'static str,
    },
    /// A virtual address outside the kernel image and the direct map, and no page-table root.
    #[error(
        "guest virtual {va:#x} is outside the kernel image and the direct map, and no \
         page-table root (CR3) was given to walk to it"
    )]
    NoPageTable {
        /// The virtual address.
        va: u64,
    },
    /// The virtual address is not canonical for the paging depth.
    #[error("guest virtual {va:#x} is not a canonical address")]
    NonCanonical {
        /// The virtual address.
        va: u64,
    },
    /// A read larger than the reader allows (a garbage length, most likely).
    #[error("{what}: {len} bytes is more than the {max}-byte limit of one read")]
    TooLarge {
        /// What was being read.
        what: &'static str,
        /// Length asked for.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// A pointer that should point somewhere is NULL.
    #[error("{what} is a NULL pointer")]
    Null {
        /// What the pointer is.
        what: String,
    },
    /// A kernel symbol is not in the symbol table.
    #[error("kernel symbol {0:?} is not in kallsyms")]
    NoSymbol(String),
    /// The kallsyms tables could not be found or decoded in the image.
    #[error("kallsyms: {0}")]
    Kallsyms(#[from] crate::kallsyms::KallsymsError),
    /// The kernel image at `path` has no kallsyms tables to decode.
    #[error("kernel image {}: {source}", path.display())]
    KallsymsIn {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        source: crate::kallsyms::KallsymsError,
    },
    /// Where a randomized kernel runs could not be told (see [`crate::kaslr::locate`]).
    #[error("KASLR: {0}")]
    Kaslr(String),
    /// The kernel image is not a usable ELF vmlinux.
    #[error("kernel image {path}: {what}")]
    Image {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
    /// A symbol cache file is malformed (it is rebuilt by `load_or_build`).
    #[error("symbol cache {path}: {what}")]
    Cache {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// BTF lookup or parsing failed (a missing type or member, malformed program BTF).
    #[error(transparent)]
    Btf(#[from] BtfError),
    /// A guest structure holds values it cannot hold (torn, freed or not what was expected).
    #[error("{what} at {addr:#x} looks corrupt: {why}")]
    Corrupt {
        /// The structure.
        what: &'static str,
        /// Its guest virtual address.
        addr: u64,
        /// The broken rule.
        why: String,
    },
    /// A walk over a guest data structure took more steps than any sane one does.
    #[error("walking {what} stopped after {limit} steps (a cycle or a torn structure?)")]
    WalkLimit {
        /// The structure walked.
        what: &'static str,
        /// The step limit.
        limit: u64,
    },
    /// A CPU number at or past `nr_cpu_ids`.
    #[error("CPU {cpu} does not exist (the guest has nr_cpu_ids = {nr_cpu_ids})")]
    NoSuchCpu {
        /// The CPU asked for.
        cpu: u32,
        /// The guest's `nr_cpu_ids`.
        nr_cpu_ids: u32,
    },
    /// No BPF map of that name is loaded.
    #[error("no BPF map named {0:?} is loaded in the guest")]
    NoSuchMap(String),
    /// A BPF map has no BTF, so its values cannot be typed.
    #[error("BPF map {0:?} has no BTF")]
    MapWithoutBtf(String),
    /// A BPF map was freed or reused while it was being read.
    #[error("BPF map {name:?} (id {id}) changed or disappeared while it was read")]
    MapGone {
        /// The map's name when it was found.
        name: String,
        /// Its id then.
        id: u32,
    },
    /// The operation does not apply to this kind of BPF map.
    #[error("BPF map {name:?} is of type {map_type}, not {expected}")]
    WrongMapType {
        /// The map.
        name: String,
        /// Its `map_type`.
        map_type: u32,
        /// What the operation needs.
        expected: &'static str,
    },
    /// No loaded program's data sections hold a global of that name.
    #[error("no BPF global {name:?} in the data sections of the loaded maps ({searched})")]
    NoSuchVar {
        /// The global asked for.
        name: String,
        /// The maps searched, or "none with a data section".
        searched: String,
    },
    /// A value is not of the kind an accessor needs.
    #[error("{what}: the value is a {found}, not {expected}")]
    WrongType {
        /// What was asked.
        what: String,
        /// What it needs.
        expected: &'static str,
        /// What the BTF says it is.
        found: String,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether this error says the kernel's BTF lacks a type or member (as opposed to a read
    /// failure): helpers turn those into `None`.
    pub fn is_missing_in_btf(&self) -> bool {
        matches!(
            self,
            Error::Btf(BtfError::NoSuchMember { .. } | BtfError::NoSuchType { .. })
        )
    }
}
