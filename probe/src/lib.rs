//! Auto-repro probes: after a scheduler crash the facade boots a second VM
//! with probes on the functions of the crash path, reruns the scenario, and
//! prints what those functions saw, decoded.
//!
//! Where it sits (see the workspace README): the host reads the first VM's
//! failure ([`CrashInfo`]: the exit's backtrace and message) and builds a
//! [`Plan`] from the kernel's BTF — for each kernel function on the path
//! that takes a `struct task_struct *` or `struct rq *`, an fprobe at entry
//! and one at return whose fetch arguments read the fields of
//! [`fields::TASK_FIELDS`] and [`fields::RQ_FIELDS`] at BTF offsets. In the
//! guest, [`guest::install`] writes them to tracefs before the scheduler
//! starts; the `sched_ext_exit` tracepoint stops the trace; [`guest::collect`]
//! reads it back. On the host, [`View`] decodes the records with `ktstr-btf`'s
//! typed-value decoding (enumerator and flag names, CPU masks, strings) and
//! renders the block, filtered to the triggering task. Scheduler callbacks
//! (BPF programs, which kprobes cannot attach to) are shown with the
//! arguments their kernel caller passed and `file:line` from the BPF
//! object's line info ([`bpf_obj::callbacks`]).
//!
//! ```
//! use ktstr_probe::CrashInfo;
//! let console = [
//!     "sched_ext: BPF scheduler \"ktstr\" disabled (scx_bpf_error)".to_string(),
//!     "sched_ext: ktstr: crash requested".to_string(),
//!     "   scx_bpf_error_bstr+0x60/0xa0".to_string(),
//!     "   bpf_prog_a4a126762922924a_ktstr_enqueue+0x6d/0x160".to_string(),
//!     "   bpf__sched_ext_ops_enqueue+0x50/0xb0".to_string(),
//!     "   enqueue_task_scx+0x2d8/0xcb0".to_string(),
//! ];
//! let crash = CrashInfo::from_console("scx_bpf_error", None, &console);
//! assert_eq!(crash.callbacks(), [("ktstr_enqueue".into(), Some("enqueue".into()))]);
//! ```

pub mod bpf_obj;
mod crash;
pub mod fields;
pub mod guest;
mod plan;
mod render;
mod request;
pub mod trace;

pub use crash::{CrashInfo, Frame};
pub use plan::{GROUP, KFUNCS, OP_CALLERS, Plan, Probe, ProbeArg};
pub use render::{ProbedArg, ProbedCall, ProbedField, Trigger, View};
pub use request::{CALLS_SHOWN, MAX_FUNCTIONS, ProbeReport, RequestedCallback, probeable};

/// Why a plan could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    /// The kernel's BTF lacks what a probe reads.
    #[error("kernel BTF: {what}: {source}")]
    Btf {
        /// What was looked up.
        what: String,
        /// The lookup's error.
        source: ktstr_btf::BtfError,
    },
    /// A field whose size no probe fetch type reads.
    #[error("field {0}: no probe fetch type for its size")]
    Unsupported(String),
    /// A name asked for that is neither a kernel function nor a callback
    /// of the scheduler.
    #[error(
        "no kernel function `{name}` in the kernel's BTF and no BPF callback of the scheduler \
         so named{}; `ktstr probe list PATTERN` lists the kernel functions that can be probed",
        if similar.is_empty() { String::new() } else { format!(" (close: {})", similar.join(", ")) }
    )]
    UnknownFunction {
        /// The name.
        name: String,
        /// Close names that exist.
        similar: Vec<String>,
    },
    /// More names than [`MAX_FUNCTIONS`].
    #[error("{0} functions asked for; at most {MAX_FUNCTIONS} can be probed in one test")]
    TooMany(usize),
}

impl ProbeError {
    pub(crate) fn btf(what: impl Into<String>, source: ktstr_btf::BtfError) -> Self {
        ProbeError::Btf {
            what: what.into(),
            source,
        }
    }
    pub(crate) fn unsupported(what: &str) -> Self {
        ProbeError::Unsupported(what.into())
    }
}
