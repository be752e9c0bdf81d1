//! Errors of the VM backends.

use std::path::PathBuf;
use std::sync::Arc;

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
    /// A file could not be created or written.
    #[error("{action} {}: {source}", path.display())]
    File {
        /// `creating`, `writing`.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The QEMU binary does not run or is too old.
    #[error(
        "{source}; run `cargo xtask setup` (Debian: qemu-system-x86 from bookworm-backports) \
         or point KTSTR_QEMU at QEMU {} or newer",
        crate::qemu::MIN_QEMU_MAJOR
    )]
    Qemu {
        /// What is wrong with it.
        source: QemuVersionError,
    },
    /// QEMU answered a QMP command with an error.
    #[error("QMP {command} failed: {desc}")]
    Qmp {
        /// The command.
        command: String,
        /// QEMU's description of the error.
        desc: String,
    },
    /// A snapshot image's machine state is unusable, or a vCPU's state could
    /// not be read for one.
    #[error("snapshot {}: {source}", image.display())]
    MachineState {
        /// The image file.
        image: PathBuf,
        /// What went wrong.
        source: KvmStateError,
    },
    /// A vCPU's state could not be read.
    #[error("reading a vCPU's state: {0}")]
    VcpuState(KvmStateError),
    /// A parked vCPU's registers could not be read.
    #[error("registers of vCPU {cpu}: {source}")]
    Registers {
        /// The logical CPU.
        cpu: u32,
        /// What went wrong.
        source: KvmStateError,
    },
}

/// Why a QEMU binary cannot be used (kept per binary, so it clones).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum QemuVersionError {
    /// `qemu --version` could not be run.
    #[error("{} does not run: {source}", binary.display())]
    DoesNotRun {
        /// The binary.
        binary: PathBuf,
        /// The OS error.
        source: Arc<std::io::Error>,
    },
    /// Its version is older than the one ktstr needs.
    #[error(
        "{} is version {major}; ktstr needs QEMU {} or newer",
        binary.display(),
        crate::qemu::MIN_QEMU_MAJOR
    )]
    TooOld {
        /// The binary.
        binary: PathBuf,
        /// The major version it reported (0 if none could be read).
        major: u32,
    },
}

/// What went wrong reading a vCPU's or the VM's KVM state, or decoding the
/// tagged records a snapshot image keeps of it.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum KvmStateError {
    /// The records end before the one expected.
    #[error("the state ends before record {tag:#x}")]
    Truncated {
        /// The record expected.
        tag: u32,
    },
    /// Another record stands where one was expected.
    #[error("record {found:#x} where {tag:#x} belongs")]
    WrongTag {
        /// The record expected.
        tag: u32,
        /// The record found.
        found: u32,
    },
    /// A record's length runs past the end of the state.
    #[error("record {tag:#x} is cut short")]
    CutShort {
        /// The record.
        tag: u32,
    },
    /// A record is not the size of this build's KVM structure.
    #[error(
        "record {tag:#x} has {len} bytes, this build's KVM structure {want} (an image from another build?)"
    )]
    WrongSize {
        /// The record.
        tag: u32,
        /// Its length.
        len: usize,
        /// The structure's size.
        want: usize,
    },
    /// A variable-length record has a length its entries cannot make.
    #[error("{record} record of {len} bytes")]
    BadLength {
        /// Which record (`MSR`, `serial`).
        record: &'static str,
        /// Its length.
        len: usize,
    },
    /// A KVM ioctl failed.
    #[error("{ioctl}: {source}")]
    Kvm {
        /// The ioctl.
        ioctl: &'static str,
        /// KVM's error.
        source: kvm_ioctls::Error,
    },
    /// `/dev/kvm` could not be opened.
    #[error("opening /dev/kvm: {0}")]
    OpenKvm(kvm_ioctls::Error),
    /// An MSR list could not be built.
    #[error("MSR list: {0:?}")]
    MsrList(vmm_sys_util::fam::Error),
    /// The VM ended before every vCPU answered.
    #[error("the VM ended ({end}) before its vCPUs were saved")]
    Ended {
        /// How it ended, as the vCPU that ended it said (KVM's exit, the guest's fault).
        end: String,
    },
    /// A vCPU gave no state.
    #[error("vCPU {index}: no state")]
    NoState {
        /// The vCPU.
        index: usize,
    },
    /// Reading one vCPU's state failed.
    #[error("vCPU {index}: {source}")]
    Vcpu {
        /// The vCPU.
        index: usize,
        /// What failed.
        source: Box<KvmStateError>,
    },
}

impl KvmStateError {
    /// Names the KVM ioctl whose error it wraps.
    pub(crate) fn kvm(ioctl: &'static str) -> impl Fn(kvm_ioctls::Error) -> Self {
        move |source| KvmStateError::Kvm { ioctl, source }
    }
}

impl VmmError {
    pub(crate) fn os(what: &'static str) -> Self {
        VmmError::Os {
            what,
            source: std::io::Error::last_os_error(),
        }
    }
}
