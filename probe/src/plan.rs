//! The probe plan (host side): which kernel functions to probe on the crash
//! path, each with an entry and an exit event whose fetch arguments read the
//! fields of its task and runqueue arguments at offsets taken from the
//! kernel's BTF. The plan travels to the guest as JSON.

use ktstr_btf::Btf;

use crate::ProbeError;
use crate::crash::CrashInfo;
use crate::fields::{ArgKind, fetch_arg};

/// The tracefs event group of every probe.
pub const GROUP: &str = "ktstr";

/// The kernel functions that call a scheduler's callbacks, by `sched_ext_ops`
/// member (the caller of `ops.enqueue` is `do_enqueue_task`, inlined into
/// `enqueue_task_scx` on 7.x; `balance_one`, which calls `ops.dispatch`,
/// into `do_pick_task_scx`).
pub const OP_CALLERS: &[(&str, &str)] = &[
    ("enqueue", "enqueue_task_scx"),
    ("dispatch", "do_pick_task_scx"),
    ("select_cpu", "select_task_rq_scx"),
    ("dequeue", "ops_dequeue"),
    ("stopping", "put_prev_task_scx"),
];

/// Kernel functions called from the callbacks with the callback's task:
/// their records show the task as the callback handled it.
pub const KFUNCS: &[&str] = &["scx_bpf_dsq_insert"];

/// One argument a probe decodes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProbeArg {
    /// The parameter's name (`p`, `rq`).
    pub name: String,
    /// 1-based index (`$argN`).
    pub index: u32,
    /// What it points to.
    pub kind: ArgKind,
}

/// One probed function.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Probe {
    /// The kernel function.
    pub func: String,
    /// Event name of the entry probe (in [`GROUP`]).
    pub entry_event: String,
    /// Event name of the exit probe.
    pub exit_event: String,
    /// `dynamic_events` line of the entry probe.
    pub entry_def: String,
    /// `dynamic_events` line of the exit probe.
    pub exit_def: String,
    /// The decoded arguments.
    pub args: Vec<ProbeArg>,
}

/// Every probe of one probe VM.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Plan {
    /// The probes.
    pub probes: Vec<Probe>,
    /// On request: the names the test asked for, in its order.
    #[serde(default)]
    pub requested: Vec<String>,
    /// On request: the scheduler callbacks asked for, each with the kernel
    /// caller probed for it.
    #[serde(default)]
    pub callbacks: Vec<crate::request::RequestedCallback>,
}

impl Plan {
    /// Probes for `funcs` (kernel functions; those without a task or runqueue
    /// argument, or unknown to `btf`, are skipped).
    pub fn for_functions<'f>(
        btf: &Btf<'_>,
        funcs: impl IntoIterator<Item = &'f str>,
    ) -> Result<Plan, ProbeError> {
        let mut plan = Plan::default();
        for func in funcs {
            if plan.probes.iter().any(|p| p.func == func) {
                continue;
            }
            let Ok(sig) = btf.func(func) else { continue };
            let probe = probe_of(btf, func, &sig, plan.probes.len())?;
            if !probe.args.is_empty() {
                plan.probes.push(probe);
            }
        }
        Ok(plan)
    }

    /// The plan for a crash: the kernel functions of its backtrace, the
    /// kernel callers of the scheduler's callbacks (`ops`: the members the
    /// scheduler implements), and the kfuncs callbacks call with their task.
    pub fn for_crash(btf: &Btf<'_>, crash: &CrashInfo, ops: &[String]) -> Result<Plan, ProbeError> {
        let mut funcs: Vec<String> = crash.kernel_funcs().into_iter().map(|f| f.0).collect();
        for (op, caller) in OP_CALLERS {
            if ops.iter().any(|o| o == op)
                || crash.callbacks().iter().any(|c| c.1.as_deref() == Some(op))
            {
                funcs.push((*caller).to_string());
            }
        }
        funcs.extend(KFUNCS.iter().map(|s| s.to_string()));
        Plan::for_functions(btf, funcs.iter().map(String::as_str))
    }

    /// The probe whose entry or exit event is `event`, and whether it is the exit.
    pub fn by_event(&self, event: &str) -> Option<(&Probe, bool)> {
        self.probes.iter().find_map(|p| {
            if p.entry_event == event {
                Some((p, false))
            } else if p.exit_event == event {
                Some((p, true))
            } else {
                None
            }
        })
    }
}

/// The probe of `func` (signature `sig`), the `n`th of its plan: an entry
/// and an exit event whose fetch arguments read the fields of each task and
/// runqueue argument (none when it takes neither).
pub(crate) fn probe_of(
    btf: &Btf<'_>,
    func: &str,
    sig: &ktstr_btf::FuncSig<'_>,
    n: usize,
) -> Result<Probe, ProbeError> {
    let args: Vec<ProbeArg> = sig
        .params
        .iter()
        .enumerate()
        .filter_map(|(i, p)| {
            ArgKind::of_param(btf, p.ty).map(|kind| ProbeArg {
                name: if p.name.is_empty() {
                    format!("arg{}", i + 1)
                } else {
                    p.name.to_string()
                },
                index: u32::try_from(i + 1).unwrap_or(u32::MAX),
                kind,
            })
        })
        .collect();
    let entry_event = format!("kp{n}e");
    let exit_event = format!("kp{n}x");
    let mut fetch = Vec::new();
    for a in &args {
        for (k, spec) in a.kind.fields().iter().enumerate() {
            fetch.push(fetch_arg(
                btf,
                a.kind,
                spec,
                &format!("$arg{}", a.index),
                &format!("a{}f{k}", a.index),
            )?);
        }
    }
    let fetch = fetch.join(" ");
    let sep = if fetch.is_empty() { "" } else { " " };
    Ok(Probe {
        func: func.to_string(),
        entry_def: format!("f:{GROUP}/{entry_event} {func}{sep}{fetch}"),
        exit_def: format!("f:{GROUP}/{exit_event} {func}%return{sep}{fetch}"),
        entry_event,
        exit_event,
        args,
    })
}
