//! Starting a test's VM: from a snapshot of a guest booted once to the
//! restore agent when the run asks for it and the test allows it, else with
//! a cold boot (docs/src/boot-once-restore-many.md).

use std::time::{Duration, Instant, SystemTime};

use ktstr_ops::channel::{self, HandOff, Message, Reader};
use ktstr_ops::{AGENT_MARKER, AGENT_VERSION, TopologyData, encode_payload};
use ktstr_vmm::{Backend, Machine, VmSpec};

use super::prepare::Prepared;
use crate::channel::HostChannel;
use crate::config::HostConfig;
use crate::snapshots::{Cache, Key, SnapshotError};

/// Bytes of the payload region a restored guest gets its overlay in (the
/// overlay is the configuration and the schedulers' files: small).
pub(crate) const PAYLOAD_BYTES: u64 = 64 << 20;

/// Snapshots kept of a randomized (KASLR) guest: each holds the slide its
/// boot drew, and each test restores one of them picked at random, so tests
/// do not all share one layout (a cold KASLR boot draws from ~490 slides).
pub(crate) const KASLR_SNAPSHOTS: u32 = 3;

/// How a test's VM started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Start {
    /// Booted.
    #[default]
    Cold,
    /// Restored from a snapshot.
    Restored,
}

impl Start {
    pub(crate) fn as_str(self) -> &'static str {
        self.record().as_str()
    }

    /// As the results record says it.
    pub(crate) fn record(self) -> ktstr_record::Start {
        match self {
            Start::Cold => ktstr_record::Start::Cold,
            Start::Restored => ktstr_record::Start::Restored,
        }
    }
}

/// A started VM.
pub(crate) struct Started {
    pub(crate) vm: Box<dyn Machine>,
    pub(crate) start: Start,
    /// Making the snapshot this run restored from, when this run made it:
    /// how long it took and how long it waited for host slots.
    pub(crate) made: Option<(Duration, Duration)>,
}

/// Starts the VM of `prepared`: restored when `restore` and a snapshot can
/// serve it (made first when there is none), else booted. Why a restore
/// failed goes to stderr.
pub(crate) fn start(
    host: &HostConfig,
    backend: &dyn Backend,
    prepared: &Prepared,
    restore: bool,
) -> Result<Started, ktstr_vmm::VmmError> {
    // Cold without a word where a restore is not expected: a backend that
    // cannot save.
    let restore = restore && backend.snapshot_id().is_some();
    if restore {
        match restored(host, backend, prepared) {
            Ok(s) => return Ok(s),
            Err(why) => eprintln!("ktstr: {}: boots cold: {why}", prepared.spec.name),
        }
    }
    Ok(Started {
        vm: backend.boot(&prepared.spec)?,
        start: Start::Cold,
        made: None,
    })
}

/// Everything that changes the guest booted to the agent; `kaslr_slot`
/// tells a randomized guest's snapshots apart.
fn key(prepared: &Prepared, spec: &VmSpec, backend_id: &str, kaslr_slot: Option<u32>) -> Key {
    let k = &prepared.kernel;
    let kernel = k.vmlinux_sha256.clone().unwrap_or_else(|| {
        // No recorded hash: the file's identity stands in for its content.
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(&spec.kernel).ok();
        format!(
            "{} size={} mtime={}",
            spec.kernel.display(),
            m.as_ref().map_or(0, |m| m.size()),
            m.as_ref()
                .map_or(0, |m| m.mtime_nsec() + m.mtime() * 1_000_000_000)
        )
    });
    let base = prepared
        .base
        .path()
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Key::of(serde_json::json!({
        "base": base,
        "kernel": kernel,
        "kernel_path": spec.kernel,
        "topology": TopologyData::of(&prepared.topology),
        "cmdline": spec.cmdline,
        "reserved": spec.reserved.iter().map(|r| [r.gpa, r.size]).collect::<Vec<_>>(),
        "payload_bytes": spec.payload_bytes,
        "agent_version": AGENT_VERSION,
        "backend": backend_id,
        "tcg": format!("{:?}", spec.resolved_tcg()),
        "console": format!("{:?}", spec.console),
        "kaslr_slot": kaslr_slot,
    }))
}

/// Why a test boots cold instead of restoring.
#[derive(Debug, thiserror::Error)]
enum RestoreError {
    /// The backend cannot save machines.
    #[error("the {backend} backend cannot save and restore machines")]
    CannotSave {
        /// The backend.
        backend: String,
    },
    /// The test's overlay is too large for the payload region.
    #[error(
        "the test's overlay ({bytes} bytes: configuration and schedulers' files) does not fit \
         the {PAYLOAD_BYTES}-byte payload region"
    )]
    TooLarge {
        /// The overlay's size.
        bytes: usize,
    },
    /// The kernel's random source failed.
    #[error("getrandom: {0}")]
    Random(std::io::Error),
    /// The snapshot cache failed.
    #[error(transparent)]
    Cache(#[from] SnapshotError),
    /// The agent's initramfs could not be written.
    #[error("writing the agent initramfs: {0}")]
    AgentInitramfs(#[from] ktstr_initramfs::InitramfsError),
    /// The agent's VM could not boot or be followed.
    #[error("booting the agent: {0}")]
    AgentBoot(ktstr_vmm::VmmError),
    /// The agent's VM ended before the agent was ready.
    #[error("the agent's VM ended before it was ready ({end}); console: {console}")]
    AgentEnded {
        /// How it ended.
        end: ktstr_vmm::EndReason,
        /// Its console, joined.
        console: String,
    },
    /// The agent was not ready in time.
    #[error("the agent was not ready within {limit:?} (KTSTR_BOOT_TIMEOUT_S); console: {console}")]
    AgentLate {
        /// The boot limit.
        limit: Duration,
        /// The console's last lines, joined.
        console: String,
    },
    /// The agent is of another version than the host.
    #[error("the agent speaks version {agent}, the host {AGENT_VERSION}")]
    AgentVersion {
        /// The agent's version.
        agent: u32,
    },
    /// The agent's machine could not be saved.
    #[error("saving the agent: {0}")]
    Save(ktstr_vmm::VmmError),
    /// The snapshot could not be restored; it was deleted.
    #[error("restoring snapshot {key} failed, the image is deleted: {source}")]
    Restore {
        /// The snapshot's key.
        key: String,
        /// The backend's error.
        source: ktstr_vmm::VmmError,
    },
}

fn restored(
    host: &HostConfig,
    backend: &dyn Backend,
    prepared: &Prepared,
) -> Result<Started, RestoreError> {
    let id = backend
        .snapshot_id()
        .ok_or_else(|| RestoreError::CannotSave {
            backend: backend.name(),
        })?;
    let payload = encode_payload(&prepared.overlay);
    if payload.len() as u64 > PAYLOAD_BYTES {
        return Err(RestoreError::TooLarge {
            bytes: prepared.overlay.len(),
        });
    }
    let mut spec = prepared.spec.clone();
    spec.payload_bytes = PAYLOAD_BYTES;
    spec.initrd = None;
    let kaslr_slot = if prepared.kaslr {
        let [a, b, c, d] = random_bytes::<4>()?;
        Some(u32::from_le_bytes([a, b, c, d]) % KASLR_SNAPSHOTS)
    } else {
        None
    };
    let key = key(prepared, &spec, &id, kaslr_slot);
    let cache = Cache::new(host.snapshot_dir(), host.snapshot_cache_mib);
    let mut made = None;
    let (entry, _) = cache.get_or_create(&key, |dir| {
        let t0 = Instant::now();
        let waited = make(host, backend, prepared, &spec, dir)?;
        made = Some((t0.elapsed() - waited, waited));
        Ok::<(), RestoreError>(())
    })?;
    // QEMU wants an `-initrd` on restore too, but reads it only at boot:
    // the migrated guest has long unpacked its own. This test's initrd
    // stands in for the agent's.
    spec.initrd = prepared.spec.initrd.clone();
    let vm = match backend.restore(&spec, &entry.image(), &payload) {
        Ok(vm) => vm,
        Err(e) => {
            drop(entry);
            cache.remove(&key);
            return Err(RestoreError::Restore {
                key: key.hex.clone(),
                source: e,
            });
        }
    };
    drop(entry);
    hand_off(vm.as_ref())?;
    Ok(Started {
        vm,
        start: Start::Restored,
        made,
    })
}

/// `N` bytes from the kernel's random source.
fn random_bytes<const N: usize>() -> Result<[u8; N], RestoreError> {
    let mut random = [0u8; N];
    // SAFETY: getrandom writes at most random.len() bytes into random.
    let n = unsafe { libc::getrandom(random.as_mut_ptr().cast(), random.len(), 0) };
    if n != random.len() as isize {
        return Err(RestoreError::Random(std::io::Error::last_os_error()));
    }
    Ok(random)
}

/// The host's half of the hand-off: its time and fresh random bytes.
fn hand_off(vm: &dyn Machine) -> Result<(), RestoreError> {
    let random = random_bytes::<64>()?;
    let realtime_ns = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    Reader::new(HostChannel {
        mem: vm.memory().clone(),
        base: channel::CHANNEL_GPA,
    })
    .hand_off(&HandOff {
        realtime_ns,
        random,
    });
    Ok(())
}

/// Boots the agent of `spec` from the test binary's base archive with the
/// agent marker and saves it to `dir`'s `image`. Returns the time it waited
/// for host slots.
fn make(
    host: &HostConfig,
    backend: &dyn Backend,
    prepared: &Prepared,
    spec: &VmSpec,
    dir: &std::path::Path,
) -> Result<Duration, RestoreError> {
    let mut marker = ktstr_initramfs::Archive::new();
    marker.add_bytes(AGENT_MARKER, 0o644, Vec::new())?;
    let marker = marker.to_vec()?;
    // Removed when this returns: the saved machine needs it no more.
    let initrd = prepared.base.copy_with_overlay(&marker, dir)?;
    let mut spec = spec.clone();
    spec.initrd = Some(initrd.path().to_path_buf());
    let booting = RestoreError::AgentBoot;
    let mut vm = backend.boot(&spec).map_err(booting)?;
    let waited = vm.slot_wait();
    let console = vm.take_console();
    let mut reader = Reader::new(HostChannel {
        mem: vm.memory().clone(),
        base: channel::CHANNEL_GPA,
    });
    let deadline = Instant::now() + host.boot_timeout;
    let mut lines = Vec::new();
    let ready = loop {
        if let Some(c) = &console {
            while let ktstr_vmm::ConsoleEvent::Line(l) = c.recv(Duration::ZERO) {
                lines.push(l);
            }
        }
        let msgs = reader.poll().unwrap_or_default();
        if let Some(v) = msgs.iter().find_map(|m| match m {
            Message::AgentReady { version, .. } => Some(*version),
            _ => None,
        }) {
            break v;
        }
        if let Some(end) = vm.try_wait().map_err(booting)? {
            return Err(RestoreError::AgentEnded {
                end,
                console: lines.join(" | "),
            });
        }
        if Instant::now() >= deadline {
            vm.kill();
            let tail = lines.len().saturating_sub(20);
            return Err(RestoreError::AgentLate {
                limit: host.boot_timeout,
                console: lines[tail..].join(" | "),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if ready != AGENT_VERSION {
        vm.kill();
        return Err(RestoreError::AgentVersion { agent: ready });
    }
    vm.save(&dir.join("image")).map_err(RestoreError::Save)?;
    Ok(waited)
}
