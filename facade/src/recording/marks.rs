//! Exact instruction counts of a recorded run: the count of guest
//! instructions (all vCPUs) before chosen kernel functions first ran, taken
//! by the ktstr-qemu-gate plugin in the recorded run and again in its
//! replay. A console line's timestamp names a moment to a microsecond; a
//! mark names it to the instruction, so "the same scheduler exit at the same
//! instruction count" is a comparison, not an inference.

use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::thread::JoinHandle;

use ktstr_guest_mem::KernelSymbols;
use serde::{Deserialize, Serialize};

use super::RecordingError;
use crate::monitor::GateEnd;

/// One kernel function whose first execution a recording counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    /// What its first execution means (`scheduler exit requested`, ...).
    pub what: String,
    /// The function.
    pub symbol: String,
    /// Its address in the `nokaslr` kernel.
    pub address: u64,
    /// Guest instructions of all vCPUs before it first ran; `None`: it
    /// never ran.
    pub count: Option<u64>,
}

impl std::fmt::Display for Mark {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.count {
            Some(n) => write!(f, "{} ({}) at instruction {n}", self.what, self.symbol),
            None => write!(f, "{} ({}) never ran", self.what, self.symbol),
        }
    }
}

/// What is marked, and the functions that may mark it, the first one the
/// kernel has taken (sched_ext's names changed over its releases: 7.x
/// claims the exit in `scx_claim_exit` on every path, 6.12 in
/// `scx_ops_exit_kind`).
const MARKED: &[(&str, &[&str])] = &[
    (
        "scheduler exit requested",
        &["scx_claim_exit", "scx_vexit", "scx_ops_exit_kind"],
    ),
    (
        "scheduler disabled",
        &["scx_disable_workfn", "scx_ops_disable_workfn"],
    ),
    ("kernel panic", &["panic"]),
    ("power off", &["kernel_power_off"]),
];

/// The marks `syms`' kernel has: for each of [`MARKED`], its first
/// function that is one text symbol.
pub(crate) fn plan(syms: &KernelSymbols) -> Vec<Mark> {
    MARKED
        .iter()
        .filter_map(|(what, names)| {
            names.iter().find_map(|name| {
                let mut all = syms
                    .all_named(name)
                    .filter(|s| s.kind.eq_ignore_ascii_case(&b't'));
                let s = all.next()?;
                // Two static functions of one name: which one ran is unclear.
                all.next().is_none().then(|| Mark {
                    what: (*what).to_string(),
                    symbol: (*name).to_string(),
                    address: s.addr,
                    count: None,
                })
            })
        })
        .collect()
}

/// `plan` with the counts a run's plugin reported (`(index, count)`).
pub(crate) fn counted(plan: &[Mark], reported: &[(usize, u64)]) -> Vec<Mark> {
    plan.iter()
        .enumerate()
        .map(|(i, m)| Mark {
            count: reported.iter().find(|(j, _)| *j == i).map(|&(_, c)| c),
            ..m.clone()
        })
        .collect()
}

/// The first mark whose count differs between a recording and its replay:
/// `(recorded, replayed)`.
pub(crate) fn first_difference(recorded: &[Mark], replayed: &[Mark]) -> Option<(Mark, Mark)> {
    recorded
        .iter()
        .zip(replayed)
        .find(|(a, b)| a.count != b.count)
        .map(|(a, b)| (a.clone(), b.clone()))
}

/// A Unix socket path for the plugin's host side, removed when dropped.
pub(super) struct GateSocket(pub(super) std::path::PathBuf);

impl GateSocket {
    /// A new path for a socket another process listens on (QEMU's gdb stub).
    pub(super) fn bind_path(what: &str) -> GateSocket {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "ktstr-{what}-{}-{}.sock",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_file(&path);
        GateSocket(path)
    }

    /// A socket this process listens on.
    pub(super) fn bind() -> Result<(GateSocket, UnixListener), RecordingError> {
        let socket = GateSocket::bind_path("gate");
        let listener = UnixListener::bind(&socket.0).map_err(|source| RecordingError::File {
            path: socket.0.clone(),
            source,
        })?;
        Ok((socket, listener))
    }
}

impl Drop for GateSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The marking of one VM: the plugin's socket, and once the VM runs, the
/// thread that collects what the plugin reports.
pub(crate) struct Marking {
    plan: Vec<Mark>,
    socket: Option<GateSocket>,
    listener: Option<UnixListener>,
    quit: Arc<AtomicBool>,
    thread: Option<std::io::Result<JoinHandle<GateEnd>>>,
}

impl Marking {
    /// The marking of a recorded `nokaslr` boot of `vmlinux`, and the gate
    /// that makes QEMU's plugin report it; `Err`: why this run is recorded
    /// without instruction counts.
    pub(crate) fn new(
        vmlinux: &Path,
        cache_root: &Path,
    ) -> Result<(Marking, ktstr_vmm::TcgGate), String> {
        let plugin = super::gate_plugin().map_err(|e| crate::error_text(&e))?;
        let files = crate::monitor::kernel_files(vmlinux, cache_root)
            .map_err(|e| format!("the kernel's symbols: {e}"))?;
        let plan = plan(&files.syms);
        if plan.is_empty() {
            return Err(format!(
                "{} has none of the marked functions",
                vmlinux.display()
            ));
        }
        let (socket, listener) = GateSocket::bind().map_err(|e| crate::error_text(&e))?;
        let gate = ktstr_vmm::TcgGate {
            plugin,
            socket: socket.0.clone(),
            first_stop: None,
            marks: plan.iter().map(|m| m.address).collect(),
            gdb: None,
        };
        Ok((
            Marking {
                plan,
                socket: Some(socket),
                listener: Some(listener),
                quit: Arc::new(AtomicBool::new(false)),
                thread: None,
            },
            gate,
        ))
    }

    /// Starts collecting, once QEMU runs.
    pub(crate) fn start(&mut self) {
        let Some(listener) = self.listener.take() else {
            return;
        };
        let quit = Arc::clone(&self.quit);
        self.thread = Some(
            std::thread::Builder::new()
                .name("ktstr-marks".into())
                .spawn(move || crate::monitor::collect_marks(&listener, &quit)),
        );
    }

    /// The marks with their counts, after QEMU exited; `Err`: why the
    /// plugin's report is not whole.
    pub(crate) fn finish(mut self) -> Result<Vec<Mark>, String> {
        self.quit.store(true, Ordering::Relaxed);
        let end = match self.thread.take() {
            Some(Ok(t)) => t
                .join()
                .map_err(|_| "the marks' thread panicked".to_string())?,
            Some(Err(e)) => return Err(format!("starting the marks' thread: {e}")),
            None => return Err("the VM did not start".into()),
        };
        self.socket = None;
        if let Some(e) = end.failed {
            return Err(e);
        }
        Ok(counted(&self.plan, &end.marks))
    }
}

impl Drop for Marking {
    /// A VM that failed to run: the thread stops waiting for the plugin.
    fn drop(&mut self) {
        self.quit.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn syms() -> KernelSymbols {
        KernelSymbols::from_entries([
            ("scx_vexit", 0xffff_ffff_8100_1000, b'T'),
            ("scx_disable_workfn", 0xffff_ffff_8100_2000, b't'),
            ("panic", 0xffff_ffff_8100_3000, b'T'),
            ("kernel_power_off", 0xffff_ffff_8100_4000, b'D'),
        ])
    }

    #[test]
    fn the_plan_takes_each_marked_function_the_kernel_has_as_text() {
        let p = plan(&syms());
        let names: Vec<&str> = p.iter().map(|m| m.symbol.as_str()).collect();
        // kernel_power_off here is data, not a function: not marked.
        assert_eq!(names, ["scx_vexit", "scx_disable_workfn", "panic"]);
        assert_eq!(p[1].address, 0xffff_ffff_8100_2000);
        assert!(p.iter().all(|m| m.count.is_none()));
    }

    #[test]
    fn the_older_names_mark_a_6_12_kernel_and_a_doubled_static_is_left_out() {
        let s = KernelSymbols::from_entries([
            ("scx_ops_exit_kind", 0x10, b't'),
            ("scx_ops_disable_workfn", 0x20, b't'),
            ("scx_ops_disable_workfn", 0x30, b't'),
        ]);
        let names: Vec<String> = plan(&s).into_iter().map(|m| m.symbol).collect();
        assert_eq!(names, ["scx_ops_exit_kind"]);
    }

    #[test]
    fn counts_fill_the_plan_and_the_first_differing_count_is_named() {
        let p = plan(&syms());
        let rec = counted(&p, &[(2, 900), (0, 500)]);
        assert_eq!(
            rec.iter().map(|m| m.count).collect::<Vec<_>>(),
            [Some(500), None, Some(900)]
        );
        assert_eq!(first_difference(&rec, &rec), None);
        let rep = counted(&p, &[(0, 500), (2, 901)]);
        let (a, b) = first_difference(&rec, &rep).expect("differs");
        assert_eq!((a.count, b.count), (Some(900), Some(901)));
        assert_eq!(a.to_string(), "kernel panic (panic) at instruction 900");
        assert_eq!(
            rec[1].to_string(),
            "scheduler disabled (scx_disable_workfn) never ran"
        );
    }
}
