//! Record and replay: a recorded VM runs as a pure function of its inputs
//! (QEMU's instruction-counting TCG with `sleep=off`, a fixed guest clock
//! and seed, and a host that never writes into the guest while it runs), so
//! re-running the same inputs repeats the run instruction for instruction.
//! A recording is those inputs plus what the host saw (the console and the
//! channel's messages); a replay runs the inputs again and compares.
//!
//! Why not QEMU's own record/replay (`-icount rr=record`): it refuses more
//! than one vCPU, and it records device input, not another process's writes
//! into shared guest RAM. The measurements behind this design are in
//! docs/design/record-replay.md.

mod gdb;
mod marks;
mod replay;
mod write;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use gdb::GdbHold;
pub use marks::Mark;
pub(crate) use marks::Marking;
pub use replay::{
    Divergence, REPLAY_CONSOLE, REPLAY_MESSAGES, Replayed, gate_plugin, replay, replay_asking,
    replay_with,
};
pub(crate) use write::{Source, Tape, write};

/// The version of [`Manifest`]'s layout; another one is refused by name.
pub const SCHEMA: u32 = 1;
/// The manifest's file in a recording's directory.
pub const MANIFEST: &str = "recording.json";
/// The console as the host read it, one line per line.
pub const CONSOLE: &str = "console.txt";
/// The channel's messages in order, one JSON document per line.
pub const MESSAGES: &str = "messages.jsonl";
/// The initramfs the guest booted (a copy: a test's initramfs is temporary).
pub const INITRD: &str = "initrd";
/// What a recording's directory is called beside its test's record:
/// `<record file name without .json>.rr`.
pub const DIR_SUFFIX: &str = ".rr";

/// One input file of a recording, named by content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputFile {
    /// Where it is: absolute, or relative to the recording's directory.
    pub path: String,
    /// SHA-256 of its bytes, hex.
    pub sha256: String,
    /// Its size in bytes.
    pub bytes: u64,
}

/// What a replay must run to repeat a recorded run, and what the recorded
/// run showed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// [`SCHEMA`].
    pub schema: u32,
    /// The test, as registered.
    pub test: String,
    /// The run it belongs to (the results store's run id).
    pub run: String,
    /// When it was recorded, UTC.
    pub recorded_at: String,
    /// The QEMU binary and its identity (`qemu-tcg … version`).
    pub qemu: InputFile,
    /// The backend's identity as its snapshots name it (name and version).
    pub qemu_id: String,
    /// The kernel image booted (in the kernel cache; not copied).
    pub kernel: InputFile,
    /// The kernel's release, when known.
    pub kernel_release: Option<String>,
    /// The initramfs ([`INITRD`]).
    pub initrd: InputFile,
    /// The kernel command line, before the reserved regions are added.
    pub cmdline: String,
    /// The compact topology (`1n2l2c2t`).
    pub topology: String,
    /// Guest RAM, MiB.
    pub memory_mib: u64,
    /// Each NUMA node's RAM, bytes (checked after the topology is rebuilt).
    pub node_memory: Vec<u64>,
    /// Reserved regions, `(gpa, size)`.
    pub reserved: Vec<(u64, u64)>,
    /// QEMU's `-seed`.
    pub seed: u64,
    /// The guest's wall clock at power-on (`-rtc base=`).
    pub rtc_base: String,
    /// The console ([`CONSOLE`]): lines and digest.
    pub console: InputFile,
    /// Lines of the console.
    pub console_lines: usize,
    /// The channel's messages ([`MESSAGES`]).
    pub messages: InputFile,
    /// How many messages.
    pub message_count: usize,
    /// How the VM ended (`PowerOff`, `Timeout`, ...).
    pub end: String,
    /// The kernel's line where the sched_ext scheduler was disabled, with
    /// its timestamp: the guest clock there, which under `-icount shift=2`
    /// advances 4 ns per instruction executed (and jumps over idle time).
    pub scheduler_exit: Option<String>,
    /// Guest instructions (all vCPUs) before each marked kernel function
    /// first ran: the scheduler's exit, its disabling, a panic, the power
    /// off. Empty in a recording made without them ([`Manifest::marks_missing`]).
    #[serde(default)]
    pub marks: Vec<Mark>,
    /// Why the run was recorded without instruction counts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub marks_missing: Option<String>,
    /// Wall seconds the recorded VM ran, boot to end.
    pub wall_s: f64,
    /// Bytes of the recording's own files (the kernel is not copied).
    pub size_bytes: u64,
}

/// Why a recording could not be written, read or replayed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RecordingError {
    /// A file of the recording could not be read or written.
    #[error("{}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The manifest is not one this ktstr reads.
    #[error("{} is not a ktstr recording this version reads: {why}", path.display())]
    Manifest {
        /// The manifest.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// An input differs from the recorded one: the replay would not repeat.
    #[error(
        "the recording's {what} differs from what this host has: recorded {recorded}, here {here}; \
         {fix}"
    )]
    Mismatch {
        /// Which input.
        what: &'static str,
        /// The recorded identity.
        recorded: String,
        /// This host's.
        here: String,
        /// What to do.
        fix: &'static str,
    },
    /// A file of the recording is shorter or other than the manifest says.
    #[error(
        "{} does not match the recording's manifest ({why}): the recording is truncated or was \
         changed; record the run again",
        path.display()
    )]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What differs.
        why: String,
    },
    /// Questions need the gate plugin, which is not built.
    #[error(
        "reading a replay's guest needs the ktstr-qemu-gate QEMU plugin, which cargo builds \
         beside ktstr (target/<profile>/deps/libktstr_qemu_gate.so); build it there \
         (`cargo build -p ktstr-qemu-gate` in ktstr's workspace) and point KTSTR_QEMU_GATE at it \
         (looked for {})",
        looked.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    NoGate {
        /// Where it was looked for.
        looked: Vec<PathBuf>,
    },
    /// The recording booted a randomized kernel, which the replay's reader
    /// cannot place without reading vCPU registers.
    #[error(
        "the recording booted a randomized (KASLR) kernel: its guest memory can only be read in \
         a replay of a nokaslr boot; record without KTSTR_KASLR"
    )]
    Randomized,
    /// The replay ran, but the plugin's instruction counts could not be
    /// read: the replay cannot be compared with its recording's counts.
    #[error(
        "the replay's instruction counts could not be read ({why}): it cannot be compared with \
         the recording's; see the lines above, or replay again"
    )]
    Uncounted {
        /// What failed.
        why: String,
    },
    /// The kernel's symbols could not be read for gdb.
    #[error("the kernel's symbols for gdb, from {}: {why}", vmlinux.display())]
    Symbols {
        /// The recording's kernel.
        vmlinux: PathBuf,
        /// Why.
        why: String,
    },
    /// The VM could not run.
    #[error("the replay's VM: {0}")]
    Vm(#[from] ktstr_vmm::VmmError),
    /// The host's configuration is unusable.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
}

/// SHA-256 of a file, hex, and its size.
pub(crate) fn digest(path: &Path) -> Result<InputFile, RecordingError> {
    let err = |source| RecordingError::File {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(err)?;
    let bytes = file.metadata().map_err(err)?.len();
    let key = ktstr_cache::Key::of_reader(std::io::BufReader::new(file)).map_err(err)?;
    Ok(InputFile {
        path: path.to_string_lossy().into_owned(),
        sha256: key.hex(),
        bytes,
    })
}

/// The guest clock a console line carries, seconds: the kernel's printk
/// timestamp (`[    6.619106] …`), which a recorded run's instruction count
/// drives; `None` for a line without one.
pub fn console_clock(line: &str) -> Option<f64> {
    let rest = line.trim_start().strip_prefix('[')?;
    rest[..rest.find(']')?].trim().parse().ok()
}

/// The kernel's line where the scheduler was disabled
/// (`sched_ext: BPF scheduler "x" disabled (…)`), if the console has one.
pub(crate) fn scheduler_exit(console: &[String]) -> Option<String> {
    console
        .iter()
        .find(|l| l.contains("sched_ext: BPF scheduler") && l.contains("disabled"))
        .cloned()
}

/// Where a recording of `test` in `run` goes in the results store:
/// `<stem>.rr`, or `<stem>.N.rr` when the test ran more than once in the run
/// (a loop that records until it fails keeps every failing run).
pub(crate) fn dir_in(store: &Path, run: &str, record_file: &str) -> PathBuf {
    let stem = record_file.strip_suffix(".json").unwrap_or(record_file);
    let run_dir = store.join("runs").join(run);
    let first = run_dir.join(format!("{stem}{DIR_SUFFIX}"));
    if !first.exists() {
        return first;
    }
    (2u32..)
        .map(|n| run_dir.join(format!("{stem}.{n}{DIR_SUFFIX}")))
        .find(|d| !d.exists())
        .unwrap_or(first)
}

/// Reads and checks a recording's manifest.
pub fn load(dir: &Path) -> Result<Manifest, RecordingError> {
    let path = dir.join(MANIFEST);
    let text = std::fs::read_to_string(&path).map_err(|source| RecordingError::File {
        path: path.clone(),
        source,
    })?;
    let schema = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("schema").and_then(serde_json::Value::as_u64));
    if let Some(s) = schema.filter(|s| *s != u64::from(SCHEMA)) {
        return Err(RecordingError::Manifest {
            path,
            why: format!("its schema is {s}, this ktstr reads schema {SCHEMA}"),
        });
    }
    serde_json::from_str(&text).map_err(|e| RecordingError::Manifest {
        path,
        why: format!("{e} (a truncated or hand-edited manifest?)"),
    })
}

/// Checks that the recording's own file `f` (relative to `dir`) is whole.
pub(crate) fn check_own(dir: &Path, f: &InputFile) -> Result<PathBuf, RecordingError> {
    let path = dir.join(&f.path);
    let here = digest(&path)?;
    if here.bytes != f.bytes || here.sha256 != f.sha256 {
        return Err(RecordingError::Damaged {
            path,
            why: format!(
                "{} bytes with SHA-256 {}, the manifest says {} bytes with {}",
                here.bytes,
                &here.sha256[..16],
                f.bytes,
                &f.sha256[..f.sha256.len().min(16)]
            ),
        });
    }
    Ok(path)
}

#[cfg(test)]
mod tests;
