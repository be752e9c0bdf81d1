//! The guest's serial console as a stream of lines.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How many of the last console lines are kept for diagnostics.
const TAIL_LINES: usize = 400;

/// Console lines that start a kernel crash report.
const CRASH_MARKERS: &[&str] = &[
    "Kernel panic - not syncing",
    "BUG: ",
    "Oops: ",
    "general protection fault",
    "sysrq: Trigger a crash",
];

/// The console stream of a running VM, one line at a time (`\r` stripped).
#[derive(Debug)]
pub struct Console {
    rx: Receiver<String>,
}

/// What [`Console::recv`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsoleEvent {
    /// A complete line.
    Line(String),
    /// Nothing within the timeout.
    Idle,
    /// The VM's console closed (the VM ended).
    Closed,
}

impl Console {
    /// Waits up to `timeout` for the next line.
    pub fn recv(&self, timeout: Duration) -> ConsoleEvent {
        match self.rx.recv_timeout(timeout) {
            Ok(l) => ConsoleEvent::Line(l),
            Err(RecvTimeoutError::Timeout) => ConsoleEvent::Idle,
            Err(RecvTimeoutError::Disconnected) => ConsoleEvent::Closed,
        }
    }

    /// The next line, or `None` when the console closed or stayed silent for `timeout`.
    pub fn next_line(&self, timeout: Duration) -> Option<String> {
        match self.recv(timeout) {
            ConsoleEvent::Line(l) => Some(l),
            _ => None,
        }
    }
}

/// The last lines of a console, kept by the reader for end-of-VM diagnostics.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tail(Arc<Mutex<VecDeque<String>>>);

impl Tail {
    fn push(&self, line: String) {
        let mut t = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if t.len() == TAIL_LINES {
            t.pop_front();
        }
        t.push_back(line);
    }

    /// The crash report in the tail: from its first marker line on, if any.
    pub(crate) fn crash_report(&self) -> Option<Vec<String>> {
        let t = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let panic_at = t
            .iter()
            .rposition(|l| l.contains("Kernel panic - not syncing"))?;
        // Walk back over the report that led to the panic (Oops, BUG, call trace).
        let start = t
            .iter()
            .take(panic_at + 1)
            .position(|l| CRASH_MARKERS.iter().any(|m| l.contains(m)))
            .unwrap_or(panic_at)
            .max(panic_at.saturating_sub(80));
        Some(t.iter().skip(start).cloned().collect())
    }

    /// The last `n` lines.
    pub(crate) fn last(&self, n: usize) -> Vec<String> {
        let t = self.0.lock().unwrap_or_else(|p| p.into_inner());
        t.iter().skip(t.len().saturating_sub(n)).cloned().collect()
    }
}

/// Starts a thread that splits `source` into lines, feeding the tail and the
/// returned console. It never blocks the VM: lines nobody reads are queued.
pub(crate) fn spawn_reader(source: impl Read + Send + 'static, tail: Tail) -> Console {
    let (tx, rx): (Sender<String>, Receiver<String>) = channel();
    std::thread::Builder::new()
        .name("ktstr-console".into())
        .spawn(move || {
            let mut r = BufReader::new(source);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match r.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        while matches!(buf.last(), Some(b'\n' | b'\r')) {
                            buf.pop();
                        }
                        let line = String::from_utf8_lossy(&buf).replace('\r', "");
                        tail.push(line.clone());
                        let _ = tx.send(line);
                    }
                }
            }
        })
        .expect("spawning the console reader thread");
    Console { rx }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_and_crash_report() {
        let text = b"boot\r\nhello\r\n[ 1.0] sysrq: Trigger a crash\r\n[ 1.0] Kernel panic - not syncing: sysrq triggered crash\r\n[ 1.1] CPU: 0\r\npartial";
        let tail = Tail::default();
        let c = spawn_reader(&text[..], tail.clone());
        let mut lines = vec![];
        while let Some(l) = c.next_line(Duration::from_secs(5)) {
            lines.push(l);
        }
        assert_eq!(lines.len(), 6, "{lines:?}");
        assert_eq!(lines[1], "hello");
        assert_eq!(lines[5], "partial");
        let report = tail.crash_report().expect("crash found");
        assert!(report[0].contains("sysrq: Trigger a crash"), "{report:?}");
        assert!(report[1].contains("Kernel panic"), "{report:?}");
        assert_eq!(tail.last(2), ["[ 1.1] CPU: 0", "partial"]);
    }

    #[test]
    fn no_panic_no_report() {
        let tail = Tail::default();
        let c = spawn_reader(&b"a\nb\n"[..], tail.clone());
        while c.next_line(Duration::from_secs(5)).is_some() {}
        assert!(tail.crash_report().is_none());
    }
}
