//! How a sched_ext scheduler ended, as the kernel says it: the exit kind and
//! its reason and message, from the kernel's structured log records.

use std::io::Read;
use std::time::{Duration, Instant};

/// The sched_ext exit kinds (`enum scx_exit_kind`, kernel/sched/ext.c), named
/// by the reason text the kernel prints for each (`scx_exit_reason()`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub enum ExitKind {
    /// `SCX_EXIT_DONE`: "normal".
    Done,
    /// `SCX_EXIT_UNREG`: unregistered from user space.
    Unreg,
    /// `SCX_EXIT_UNREG_BPF`: the BPF program unregistered itself.
    UnregBpf,
    /// `SCX_EXIT_UNREG_KERN`: the kernel unregistered it.
    UnregKern,
    /// `SCX_EXIT_SYSRQ`: sysrq-S.
    Sysrq,
    /// `SCX_EXIT_ERROR`: a runtime error the kernel caught.
    Error,
    /// `SCX_EXIT_ERROR_BPF`: `scx_bpf_error()`.
    ErrorBpf,
    /// `SCX_EXIT_ERROR_STALL`: the watchdog saw a runnable task stall.
    ErrorStall,
    /// The process died and the kernel printed no exit record in time.
    Unknown,
}

impl ExitKind {
    /// The kind for the kernel's reason text.
    pub fn from_reason(reason: &str) -> ExitKind {
        match reason {
            "normal" => ExitKind::Done,
            "unregistered from user space" => ExitKind::Unreg,
            "unregistered from BPF" => ExitKind::UnregBpf,
            "unregistered from the main kernel" => ExitKind::UnregKern,
            "disabled by sysrq-S" => ExitKind::Sysrq,
            "runtime error" => ExitKind::Error,
            "scx_bpf_error" => ExitKind::ErrorBpf,
            "runnable task stall" => ExitKind::ErrorStall,
            _ => ExitKind::Unknown,
        }
    }

    /// The kernel's name of the kind (`SCX_EXIT_ERROR_STALL`).
    pub fn as_str(self) -> &'static str {
        match self {
            ExitKind::Done => "SCX_EXIT_DONE",
            ExitKind::Unreg => "SCX_EXIT_UNREG",
            ExitKind::UnregBpf => "SCX_EXIT_UNREG_BPF",
            ExitKind::UnregKern => "SCX_EXIT_UNREG_KERN",
            ExitKind::Sysrq => "SCX_EXIT_SYSRQ",
            ExitKind::Error => "SCX_EXIT_ERROR",
            ExitKind::ErrorBpf => "SCX_EXIT_ERROR_BPF",
            ExitKind::ErrorStall => "SCX_EXIT_ERROR_STALL",
            ExitKind::Unknown => "unknown",
        }
    }

    /// Whether the kernel counts it as an error exit (`kind >= SCX_EXIT_ERROR`).
    pub fn is_error(self) -> bool {
        matches!(
            self,
            ExitKind::Error | ExitKind::ErrorBpf | ExitKind::ErrorStall
        )
    }
}

impl std::fmt::Display for ExitKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The last sched_ext exit in `records` (texts of kernel log records, oldest
/// first): its reason and the message line the kernel prints after it.
pub fn parse_exit<'a>(
    records: impl IntoIterator<Item = &'a str>,
) -> Option<(String, Option<String>)> {
    let mut reason = None;
    let mut message = None;
    for text in records {
        if let Some(rest) = text.strip_prefix("sched_ext: BPF scheduler ") {
            if let Some((_, r)) = rest.split_once(" disabled (") {
                reason = Some(r.trim_end_matches(')').to_string());
                message = None;
            }
        } else if let Some(m) = text
            .strip_prefix("sched_ext: ")
            .filter(|_| reason.is_some() && message.is_none())
        {
            message = Some(m.to_string());
        }
    }
    reason.map(|r| (r, message))
}

/// The backtrace the kernel logs after the last sched_ext error exit
/// (`   scx_bpf_error_bstr+0x60/0xa0` records), innermost first. At the
/// default log level they reach the kernel log but not the console.
pub(crate) fn parse_backtrace<'a>(records: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut frames = Vec::new();
    let mut after_exit = false;
    for text in records {
        if text.starts_with("sched_ext: BPF scheduler ") && text.contains(" disabled (") {
            after_exit = true;
            frames.clear();
        } else if after_exit && is_frame(text) {
            frames.push(text.trim().to_string());
        } else if after_exit && !frames.is_empty() {
            after_exit = false;
        }
    }
    frames
}

/// A backtrace record: `sym+0x60/0xa0`, maybe with ` [module]`.
fn is_frame(text: &str) -> bool {
    let mut words = text.split_whitespace();
    let Some(sym) = words.next() else {
        return false;
    };
    let module = words.next();
    words.next().is_none()
        && module.is_none_or(|m| m.starts_with('['))
        && sym
            .split_once("+0x")
            .is_some_and(|(name, off)| !name.is_empty() && off.contains("/0x"))
}

/// The kernel log's backtrace of the last sched_ext exit ([`parse_backtrace`]).
pub(crate) fn kernel_backtrace() -> Vec<String> {
    let records = kmsg_records();
    parse_backtrace(records.iter().map(String::as_str))
}

/// The kernel log's record texts (`/dev/kmsg`, "prio,seq,ts,flags;text").
fn kmsg_records() -> Vec<String> {
    use std::os::unix::fs::OpenOptionsExt;
    let Ok(mut f) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut buf = vec![0u8; 8192];
    // Each read returns one record; EAGAIN ends the log.
    while let Ok(n @ 1..) = f.read(&mut buf) {
        let rec = String::from_utf8_lossy(&buf[..n]);
        let text = rec.split_once(';').map_or(&*rec, |(_, t)| t).trim();
        out.push(text.to_string());
    }
    out
}

/// The kernel's record of the last sched_ext exit: waits until the kernel
/// has written it (it does so while disabling the scheduler, so it comes
/// within milliseconds of the state change), at most `timeout`.
pub(crate) fn kernel_exit(timeout: Duration) -> Option<(String, Option<String>)> {
    let t0 = Instant::now();
    loop {
        let records = kmsg_records();
        if let Some(found) = parse_exit(records.iter().map(String::as_str)) {
            // The message line follows the reason line; give it its moment
            // only when the kind says there is one and it is not there yet.
            let wants_message = ExitKind::from_reason(&found.0).is_error();
            if found.1.is_some() || !wants_message || t0.elapsed() >= timeout {
                return Some(found);
            }
        } else if t0.elapsed() >= timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_follow_the_kernels_reason_texts() {
        assert_eq!(
            ExitKind::from_reason("runnable task stall"),
            ExitKind::ErrorStall
        );
        assert_eq!(
            ExitKind::from_reason("scx_bpf_error").as_str(),
            "SCX_EXIT_ERROR_BPF"
        );
        assert_eq!(ExitKind::from_reason("something new"), ExitKind::Unknown);
        assert!(ExitKind::ErrorStall.is_error() && !ExitKind::Unreg.is_error());
    }

    #[test]
    fn the_last_exit_record_wins_with_its_message() {
        let log = [
            "sched_ext: BPF scheduler \"a\" disabled (unregistered from user space)",
            "random line",
            "sched_ext: BPF scheduler \"b\" disabled (scx_bpf_error)",
            "sched_ext: b: crash requested",
            "sched_ext: later noise",
        ];
        assert_eq!(
            parse_exit(log),
            Some(("scx_bpf_error".into(), Some("b: crash requested".into())))
        );
        assert_eq!(parse_exit(["nothing here"]), None);
    }

    #[test]
    fn the_backtrace_follows_the_last_exit() {
        let log = [
            "sched_ext: BPF scheduler \"b\" disabled (scx_bpf_error)",
            "sched_ext: b: crash requested",
            "   scx_bpf_error_bstr+0x60/0xa0",
            "   enqueue_task_scx+0x2d8/0xcb0",
            "later noise+0x1/0x2",
        ];
        assert_eq!(
            parse_backtrace(log),
            [
                "scx_bpf_error_bstr+0x60/0xa0",
                "enqueue_task_scx+0x2d8/0xcb0"
            ]
        );
    }
}
