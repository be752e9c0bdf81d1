//! The guest side: install a [`Plan`]'s probes through tracefs before the
//! scheduler starts, stop tracing at the scheduler's exit (the
//! `sched_ext_exit` tracepoint's `traceoff` trigger), and read the buffer
//! back after the scenario. Plain file writes: no BPF loader, no C library.

use std::path::Path;

use crate::plan::{GROUP, Plan};

/// Where the runner puts the plan in the probe VM's initramfs.
pub const PLAN_PATH: &str = "/ktstr-probe.json";
/// tracefs.
const TRACEFS: &str = "/sys/kernel/tracing";
/// Per-CPU trace buffer: the last few thousand records before the exit.
const BUFFER_KB: &str = "1024";
/// Records handed back at most (the newest). [`MAX_BYTES`] is what
/// usually binds: at 4000 a stall's capture kept 4000 of 6942 records, and
/// the stalled task's last enqueue, ~2 s before the exit, was among those
/// dropped.
pub const MAX_LINES: usize = 16_000;
/// Bytes of records handed back at most: the capture travels as one channel
/// message (at most 1 MiB of JSON, quotes escaped).
pub const MAX_BYTES: usize = 768 << 10;

/// What [`install`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Capture {
    /// Probes installed (function names).
    pub installed: Vec<String>,
    /// What failed, each naming the probe or file.
    pub errors: Vec<String>,
    /// The trace records, oldest first (filled by [`collect`]).
    pub lines: Vec<String>,
    /// Older records left out by [`MAX_LINES`] and [`MAX_BYTES`].
    #[serde(default)]
    pub dropped: usize,
}

/// A tracefs operation that failed (kept as text in [`Capture::errors`]).
#[derive(Debug, thiserror::Error)]
enum TracefsError {
    /// A tracefs file could not be opened or written.
    #[error("{file}: {source}")]
    File {
        /// The file, relative to tracefs.
        file: String,
        source: std::io::Error,
    },
    /// A line appended to a tracefs file was refused.
    #[error("{line:?}: {source}")]
    Line {
        /// The line.
        line: String,
        source: std::io::Error,
    },
    /// tracefs is not mounted and could not be.
    #[error("mounting tracefs at {TRACEFS}: {0}")]
    Mount(std::io::Error),
}

fn write(path: &str, text: &str) -> Result<(), TracefsError> {
    std::fs::write(Path::new(TRACEFS).join(path), text).map_err(|source| TracefsError::File {
        file: path.to_string(),
        source,
    })
}

fn append(path: &str, text: &str) -> Result<(), TracefsError> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(Path::new(TRACEFS).join(path))
        .map_err(|source| TracefsError::File {
            file: path.to_string(),
            source,
        })?;
    f.write_all(format!("{text}\n").as_bytes())
        .map_err(|source| TracefsError::Line {
            line: text.to_string(),
            source,
        })
}

fn mount_tracefs() -> Result<(), TracefsError> {
    if Path::new(TRACEFS).join("dynamic_events").exists() {
        return Ok(());
    }
    let src = c"tracefs";
    let target = c"/sys/kernel/tracing";
    // SAFETY: the pointers are NUL-terminated C strings that live through the
    // call; mount does not keep them. A NULL data pointer is allowed.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            src.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(TracefsError::Mount(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Installs and enables the probes of `plan`; tracing stops by itself at
/// the scheduler's exit. Failures are collected, never fatal.
pub fn install(plan: &Plan) -> Capture {
    let mut cap = Capture::default();
    if let Err(e) = mount_tracefs() {
        cap.errors.push(e.to_string());
        return cap;
    }
    let _ = write("tracing_on", "0");
    if let Err(e) = write("buffer_size_kb", BUFFER_KB) {
        cap.errors.push(e.to_string());
    }
    for p in &plan.probes {
        let entry = append("dynamic_events", &p.entry_def);
        let exit = append("dynamic_events", &p.exit_def);
        match (entry, exit) {
            (Ok(()), Ok(())) => cap.installed.push(p.func.clone()),
            (e, x) => {
                let why = e
                    .err()
                    .or(x.err())
                    .map(|e| e.to_string())
                    .unwrap_or_default();
                let log = std::fs::read_to_string(Path::new(TRACEFS).join("error_log"))
                    .unwrap_or_default();
                let last = log.lines().rev().take(3).collect::<Vec<_>>().join(" / ");
                cap.errors
                    .push(format!("probe on {} not installed: {why} ({last})", p.func));
                let _ = append("dynamic_events", &format!("-:{GROUP}/{}", p.entry_event));
            }
        }
    }
    if !cap.installed.is_empty()
        && let Err(e) = write(&format!("events/{GROUP}/enable"), "1")
    {
        cap.errors.push(e.to_string());
    }
    let exit_tp = "events/sched_ext/sched_ext_exit";
    if let Err(e) = write(&format!("{exit_tp}/enable"), "1")
        .and_then(|()| write(&format!("{exit_tp}/trigger"), "traceoff"))
    {
        cap.errors.push(format!(
            "{e} (the kernel lacks the sched_ext_exit tracepoint: records run past the exit)"
        ));
    }
    if let Err(e) = write("tracing_on", "1") {
        cap.errors.push(e.to_string());
    }
    cap
}

/// Stops tracing and reads the buffer into `cap` (the newest [`MAX_LINES`]).
pub fn collect(cap: &mut Capture) {
    let _ = write("tracing_on", "0");
    match std::fs::read_to_string(Path::new(TRACEFS).join("trace")) {
        Ok(t) => {
            let lines: Vec<&str> = t.lines().filter(|l| !l.starts_with('#')).collect();
            let (kept, dropped) = newest(&lines, MAX_LINES, MAX_BYTES);
            cap.lines = kept;
            cap.dropped = dropped;
        }
        Err(e) => cap.errors.push(format!("reading {TRACEFS}/trace: {e}")),
    }
}

/// The newest of `lines` within `max_lines` and `max_bytes` (each line
/// counted with a byte of separator), oldest first, and how many were left out.
pub fn newest(lines: &[&str], max_lines: usize, max_bytes: usize) -> (Vec<String>, usize) {
    let mut bytes = 0usize;
    let mut from = lines.len();
    for (i, l) in lines.iter().enumerate().rev() {
        if lines.len() - i > max_lines || bytes + l.len() + 1 > max_bytes {
            break;
        }
        bytes += l.len() + 1;
        from = i;
    }
    (lines[from..].iter().map(|l| l.to_string()).collect(), from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_records_within_both_bounds_are_kept() {
        let lines = ["aaaa", "bbbb", "cccc", "dddd"];
        assert_eq!(
            newest(&lines, 10, 100),
            (lines.map(String::from).to_vec(), 0)
        );
        assert_eq!(
            newest(&lines, 2, 100),
            (vec!["cccc".into(), "dddd".into()], 2)
        );
        assert_eq!(
            newest(&lines, 10, 12),
            (vec!["cccc".into(), "dddd".into()], 2)
        );
        assert_eq!(newest(&lines, 10, 3), (vec![], 4));
        assert_eq!(newest(&[], 10, 10), (vec![], 0));
    }

    #[test]
    fn a_full_capture_fits_one_channel_message() {
        // 4000 records of a long fprobe line, quotes escaped in JSON.
        let line = format!("{}\"x\"", "a".repeat(400));
        let lines: Vec<&str> = std::iter::repeat_n(line.as_str(), MAX_LINES).collect();
        let (kept, dropped) = newest(&lines, MAX_LINES, MAX_BYTES);
        assert!(dropped > 0);
        let cap = Capture {
            lines: kept,
            dropped,
            ..Capture::default()
        };
        let json = serde_json::to_vec(&cap).expect("serializes");
        assert!(json.len() < 1 << 20, "{} bytes", json.len());
    }
}
