//! The record side: what the host saw of a recorded VM, and the recording's
//! directory written from it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use ktstr_vmm::{Backend, EndReason, VmSpec};

use super::{
    CONSOLE, INITRD, InputFile, MANIFEST, MESSAGES, Manifest, RecordingError, SCHEMA, digest,
};

/// Everything the host read of a recorded VM, in order.
#[derive(Debug)]
pub(crate) struct Tape {
    /// Every console line.
    pub(crate) console: Vec<String>,
    /// Every channel message, as JSON.
    pub(crate) messages: Vec<String>,
    /// The marked kernel functions' instruction counts, or why there are
    /// none.
    pub(crate) marks: Result<Vec<super::Mark>, String>,
}

impl Default for Tape {
    fn default() -> Self {
        Tape {
            console: Vec::new(),
            messages: Vec::new(),
            marks: Err("not counted".into()),
        }
    }
}

/// What a recording is written from.
pub(crate) struct Source<'a> {
    pub(crate) test: &'a str,
    pub(crate) run: &'a str,
    pub(crate) spec: &'a VmSpec,
    pub(crate) kernel_release: Option<String>,
    pub(crate) backend: &'a dyn Backend,
    pub(crate) end: &'a EndReason,
    pub(crate) wall: Duration,
}

/// The digest of a large input hashed once per process (kernels, QEMU).
pub(crate) fn digest_once(path: &Path) -> Result<InputFile, RecordingError> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static SEEN: OnceLock<Mutex<HashMap<(PathBuf, u64), InputFile>>> = OnceLock::new();
    let mtime = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as u64);
    let key = (path.to_path_buf(), mtime);
    let seen = SEEN.get_or_init(Mutex::default);
    if let Some(f) = seen.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
        return Ok(f.clone());
    }
    let f = digest(path)?;
    seen.lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(key, f.clone());
    Ok(f)
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), RecordingError> {
    std::fs::write(path, bytes).map_err(|source| RecordingError::File {
        path: path.to_path_buf(),
        source,
    })
}

/// One line per element, each ended by a newline.
pub(crate) fn lines_bytes(lines: &[String]) -> Vec<u8> {
    let mut out = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
    for l in lines {
        out.extend_from_slice(l.as_bytes());
        out.push(b'\n');
    }
    out
}

/// Writes the recording of `src` with what `tape` holds into `dir`
/// (replacing one there).
pub(crate) fn write(dir: &Path, src: &Source<'_>, tape: &Tape) -> Result<Manifest, RecordingError> {
    let spec = src.spec;
    let det = spec
        .deterministic
        .as_ref()
        .ok_or_else(|| RecordingError::Manifest {
            path: dir.to_path_buf(),
            why: "the VM was not run deterministically".into(),
        })?;
    let dir_err = |source| RecordingError::File {
        path: dir.to_path_buf(),
        source,
    };
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(dir_err)?;
    }
    std::fs::create_dir_all(dir).map_err(dir_err)?;
    let program = src
        .backend
        .program()
        .ok_or_else(|| RecordingError::Manifest {
            path: dir.to_path_buf(),
            why: format!("backend {} runs no program to name", src.backend.name()),
        })?;
    let qemu = digest_once(&program)?;
    let kernel = digest_once(&spec.kernel)?;
    let initrd_src = spec
        .initrd
        .as_ref()
        .ok_or_else(|| RecordingError::Manifest {
            path: dir.to_path_buf(),
            why: "the VM booted no initramfs".into(),
        })?;
    let initrd_dst = dir.join(INITRD);
    // A copy, never a hard link: the initramfs cache rewrites a test's
    // archive in place for its next run (a linked recording changed under
    // its manifest, measured).
    std::fs::copy(initrd_src, &initrd_dst).map_err(|source| RecordingError::File {
        path: initrd_dst.clone(),
        source,
    })?;
    let mut initrd = digest(&initrd_dst)?;
    initrd.path = INITRD.into();
    write_file(&dir.join(CONSOLE), &lines_bytes(&tape.console))?;
    let mut console = digest(&dir.join(CONSOLE))?;
    console.path = CONSOLE.into();
    write_file(&dir.join(MESSAGES), &lines_bytes(&tape.messages))?;
    let mut messages = digest(&dir.join(MESSAGES))?;
    messages.path = MESSAGES.into();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let t = &spec.topology;
    let manifest = Manifest {
        schema: SCHEMA,
        test: src.test.to_string(),
        run: src.run.to_string(),
        recorded_at: crate::results::utc_datetime(now),
        qemu,
        qemu_id: src
            .backend
            .snapshot_id()
            .unwrap_or_else(|| src.backend.name()),
        kernel,
        kernel_release: src.kernel_release.clone(),
        size_bytes: initrd.bytes + console.bytes + messages.bytes,
        initrd,
        cmdline: spec.cmdline.clone(),
        topology: t.to_string(),
        memory_mib: spec.memory_bytes() >> 20,
        node_memory: spec.node_memory_bytes(),
        reserved: spec.reserved.iter().map(|r| (r.gpa, r.size)).collect(),
        seed: det.seed,
        rtc_base: det.rtc_base.clone(),
        console_lines: tape.console.len(),
        console,
        message_count: tape.messages.len(),
        messages,
        end: end_name(src.end),
        scheduler_exit: super::scheduler_exit(&tape.console),
        marks: tape.marks.clone().unwrap_or_default(),
        marks_missing: tape.marks.clone().err(),
        wall_s: src.wall.as_secs_f64(),
    };
    let json = serde_json::to_vec_pretty(&manifest).map_err(|e| RecordingError::Manifest {
        path: dir.join(MANIFEST),
        why: e.to_string(),
    })?;
    write_file(&dir.join(MANIFEST), &json)?;
    Ok(manifest)
}

/// How a VM ended, in a word (a panic's lines are in the console).
pub(crate) fn end_name(end: &EndReason) -> String {
    match end {
        EndReason::PowerOff => "PowerOff".into(),
        EndReason::Panic { .. } => "Panic".into(),
        EndReason::Reset => "Reset".into(),
        EndReason::Timeout => "Timeout".into(),
        EndReason::Killed => "Killed".into(),
        EndReason::Crashed { detail } => format!("Crashed ({detail})"),
        other => format!("{other:?}"),
    }
}
