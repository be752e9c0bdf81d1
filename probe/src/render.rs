//! The host side: trace records decoded with the kernel's BTF into the
//! AUTO-PROBE block — the functions on the crash path in time order, each
//! with its task and runqueue arguments, `→` where a field changed between
//! entry and exit, filtered to the task that triggered the exit.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use ktstr_btf::Btf;

use crate::bpf_obj::Callback;
use crate::crash::CrashInfo;
use crate::fields::{ArgKind, Decode, DecodeError, RawValue, Shown, decode, pointer_name};
use crate::guest::Capture;
use crate::plan::{OP_CALLERS, Plan, Probe};
use crate::trace::{Record, parse_line};

/// Records older than this before the exit are left out when no task is named.
const WINDOW_NS: u64 = 100_000_000;
/// Column of the location at the right of a function's name.
const LOCATION_COL: usize = 64;

/// An entry record and the exit record that closed it.
struct Call<'r> {
    probe: &'r Probe,
    entry: &'r Record,
    exit: Option<&'r Record>,
}

/// Which task the block follows, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// The task the exit names or whose callback raised the error.
    Task {
        /// Its pid.
        pid: i64,
        /// How it was found.
        why: &'static str,
    },
    /// No task could be named: every task of the last 100 ms.
    Window,
}

/// The decoded view of one capture.
#[derive(Debug)]
pub struct View<'b> {
    btf: &'b Btf<'b>,
    plan: &'b Plan,
    records: Vec<Record>,
    /// Trace lines that did not parse.
    pub skipped: usize,
    /// Older records the guest left out.
    pub dropped: usize,
}

impl<'b> View<'b> {
    /// Parses the captured lines.
    pub fn new(btf: &'b Btf<'b>, plan: &'b Plan, cap: &Capture) -> Self {
        let mut records = Vec::new();
        let mut skipped = 0;
        for l in &cap.lines {
            match parse_line(l) {
                Some(r) => records.push(r),
                None => skipped += 1,
            }
        }
        records.sort_by_key(|r| r.ts_ns);
        View {
            btf,
            plan,
            records,
            skipped,
            dropped: cap.dropped,
        }
    }

    /// The exit record (the `sched_ext_exit` tracepoint), else the last record.
    fn exit(&self) -> Option<&Record> {
        self.records
            .iter()
            .rev()
            .find(|r| r.event == "sched_ext_exit")
            .or(self.records.last())
    }

    fn pid_of(&self, probe: &Probe, rec: &Record) -> Option<i64> {
        let a = probe.args.iter().find(|a| a.kind == ArgKind::Task)?;
        match rec.value(&format!("a{}f0", a.index))? {
            RawValue::Num(n) => Some(i64::from(*n as u32 as i32)),
            _ => None,
        }
    }

    /// Entry/exit pairs, by CPU and probe, in entry order.
    fn calls(&self) -> Vec<Call<'_>> {
        let mut open: BTreeMap<(u32, usize), Vec<usize>> = BTreeMap::new();
        let mut calls: Vec<Call<'_>> = Vec::new();
        for r in &self.records {
            let Some((probe, is_exit)) = self.plan.by_event(&r.event) else {
                continue;
            };
            let idx = self
                .plan
                .probes
                .iter()
                .position(|p| std::ptr::eq(p, probe))
                .unwrap_or(0);
            let stack = open.entry((r.cpu, idx)).or_default();
            if is_exit {
                if let Some(c) = stack.pop() {
                    calls[c].exit = Some(r);
                }
            } else {
                stack.push(calls.len());
                calls.push(Call {
                    probe,
                    entry: r,
                    exit: None,
                });
            }
        }
        calls
    }

    /// The task to follow.
    pub fn trigger(&self, crash: &CrashInfo) -> Trigger {
        if let Some(pid) = crash.stalled_pid() {
            return Trigger::Task {
                pid,
                why: "named by the stall",
            };
        }
        let Some(exit) = self.exit() else {
            return Trigger::Window;
        };
        // The last task handed to a probed function on the CPU that exited.
        let found = self.records.iter().rev().find_map(|r| {
            if r.cpu != exit.cpu || r.ts_ns > exit.ts_ns {
                return None;
            }
            let (p, is_exit) = self.plan.by_event(&r.event)?;
            if is_exit {
                return None;
            }
            self.pid_of(p, r)
        });
        match found {
            Some(pid) => Trigger::Task {
                pid,
                why: "the task of the last call on the exiting CPU",
            },
            None => Trigger::Window,
        }
    }

    /// The block's body: the crash path of the triggering task. `locate`
    /// gives a kernel function's `file:line` (of its entry), or why there is none.
    pub fn render<E: std::fmt::Display>(
        &self,
        crash: &CrashInfo,
        callbacks: &[Callback],
        locate: &dyn Fn(&str) -> Result<String, E>,
    ) -> String {
        let mut out = String::new();
        let Some(exit) = self.exit() else {
            out.push_str("  no probe records: the probe VM's trace buffer was empty\n");
            return out;
        };
        let trigger = self.trigger(crash);
        match &trigger {
            Trigger::Task { pid, why } => {
                let _ = writeln!(out, "  triggering task: pid {pid} ({why})");
            }
            Trigger::Window => {
                out.push_str("  no task named by the exit: every task of the last 100 ms\n");
            }
        }
        let calls = self.calls();
        // The last call of each (probe, pid) before the exit that concerns the trigger.
        let mut last: BTreeMap<(String, i64), usize> = BTreeMap::new();
        for (i, c) in calls.iter().enumerate() {
            if c.entry.ts_ns > exit.ts_ns {
                continue;
            }
            let pid = self.pid_of(c.probe, c.entry);
            let keep = match (&trigger, pid) {
                (Trigger::Task { pid: t, .. }, Some(p)) => p == *t,
                // Runqueue-only functions: those on the exiting CPU.
                (Trigger::Task { .. }, None) => c.entry.cpu == exit.cpu,
                (Trigger::Window, _) => exit.ts_ns.saturating_sub(c.entry.ts_ns) <= WINDOW_NS,
            };
            if keep {
                last.insert((c.probe.func.clone(), pid.unwrap_or(-1)), i);
            }
        }
        // Task functions with no kept call for the triggering task: said, so
        // a missing row is not read as "never called" (its last call may be
        // older than the records kept).
        let mut missing: Vec<String> = Vec::new();
        if let Trigger::Task { pid: t, .. } = &trigger {
            for c in &calls {
                let f = &c.probe.func;
                if self.pid_of(c.probe, c.entry).is_some()
                    && !last.contains_key(&(f.clone(), *t))
                    && !missing.contains(f)
                {
                    missing.push(f.clone());
                }
            }
        }
        let mut chosen: Vec<usize> = last.into_values().collect();
        chosen.sort_by_key(|&i| calls[i].entry.ts_ns);
        if chosen.is_empty() {
            out.push_str(match trigger {
                Trigger::Task { .. } => "  no probed call of that task before the exit\n",
                Trigger::Window => "  no probed call in the last 100 ms before the exit\n",
            });
        } else {
            out.push_str("  each function's last call for it before the exit, in time order:\n");
        }
        let bt = crash.kernel_funcs();
        let mut unlocated: Vec<String> = Vec::new();
        for i in chosen {
            let c = &calls[i];
            // The scheduler callback this function calls, first.
            for cb in callbacks_called_by(&c.probe.func, crash, callbacks) {
                heading(&mut out, &cb.name, &cb.location);
                let _ = writeln!(
                    out,
                    "    (BPF callback: its arguments as {} passed them)",
                    c.probe.func
                );
                write_args(&mut out, &self.decode_call(c), false);
            }
            let in_bt = bt.iter().find(|(f, _)| *f == c.probe.func);
            let loc = match (locate(&c.probe.func), in_bt) {
                (Ok(l), Some((_, o))) => format!("{l} (+{o:#x} in the backtrace)"),
                (Ok(l), None) => l,
                (Err(why), bt) => {
                    let why = why.to_string();
                    if !unlocated.contains(&why) {
                        unlocated.push(why);
                    }
                    bt.map_or_else(
                        || "kernel".to_string(),
                        |(f, o)| format!("{f}+{o:#x} (backtrace)"),
                    )
                }
            };
            heading(&mut out, &c.probe.func, &loc);
            write_args(&mut out, &self.decode_call(c), true);
        }
        if let Trigger::Task { pid, .. } = &trigger {
            for f in &missing {
                let _ = writeln!(out, "  {f}: no call for pid {pid} among the records kept");
            }
        }
        let _ = writeln!(
            out,
            "  exit on cpu {} at {}.{:06}s",
            exit.cpu,
            exit.ts_ns / 1_000_000_000,
            exit.ts_ns % 1_000_000_000 / 1000
        );
        for why in unlocated {
            let _ = writeln!(out, "  no file:line for kernel functions: {why}");
        }
        out
    }

    /// The plan the records belong to.
    pub(crate) fn plan(&self) -> &Plan {
        self.plan
    }

    /// Records parsed.
    pub(crate) fn records_len(&self) -> usize {
        self.records.len()
    }

    /// Every paired call, decoded, in entry order.
    pub fn decoded_calls(&self) -> Vec<ProbedCall> {
        self.calls().iter().map(|c| self.decode_call(c)).collect()
    }

    fn decode_call(&self, c: &Call<'_>) -> ProbedCall {
        let args = c
            .probe
            .args
            .iter()
            .map(|a| ProbedArg {
                name: a.name.clone(),
                ty: a.kind.struct_name(),
                fields: a
                    .kind
                    .fields()
                    .iter()
                    .enumerate()
                    .map(|(k, spec)| {
                        let name = format!("a{}f{k}", a.index);
                        let show = |r: &Record| {
                            // A field behind a NULL pointer has no value.
                            let null = matches!(spec.decode, Decode::Deref(..))
                                && r.value(&pointer_name(&name)) == Some(&RawValue::Num(0));
                            match r.value(&name) {
                                _ if null => Shown::None,
                                Some(raw) => decode(self.btf, a.kind, spec, raw),
                                None => Shown::Error(DecodeError::NotInRecord(name.clone())),
                            }
                            .to_string()
                        };
                        ProbedField {
                            label: spec.label,
                            entry: show(c.entry),
                            exit: c.exit.map(show),
                        }
                    })
                    .collect(),
            })
            .collect();
        ProbedCall {
            func: c.probe.func.clone(),
            callback: None,
            cpu: c.entry.cpu,
            ts_ns: c.entry.ts_ns,
            pid: self.pid_of(c.probe, c.entry),
            returned: c.exit.is_some(),
            args,
        }
    }
}

/// One call of a probed function, decoded with the kernel's BTF.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProbedCall {
    /// The kernel function probed.
    pub func: String,
    /// The scheduler callback this call stands for (its kernel caller was
    /// probed), when one was asked for by name.
    pub callback: Option<String>,
    /// The CPU it ran on.
    pub cpu: u32,
    /// Entry time, nanoseconds of the guest's trace clock (since boot).
    pub ts_ns: u64,
    /// The pid of its task argument, if it has one.
    pub pid: Option<i64>,
    /// Whether its return was recorded.
    pub returned: bool,
    /// Its `task_struct *` and `rq *` arguments.
    pub args: Vec<ProbedArg>,
}

impl ProbedCall {
    /// The field `label` (`pid`, `dsq_id`, `cpu`) of the first argument that has it.
    pub fn field(&self, label: &str) -> Option<&ProbedField> {
        self.args
            .iter()
            .flat_map(|a| a.fields.iter())
            .find(|f| f.label == label)
    }
}

/// A decoded pointer argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbedArg {
    /// The parameter's name (`p`).
    pub name: String,
    /// The struct it points to (`task_struct`).
    pub ty: &'static str,
    /// Its captured fields.
    pub fields: Vec<ProbedField>,
}

/// One captured field, as printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbedField {
    /// Its label (`dsq_id`).
    pub label: &'static str,
    /// At entry.
    pub entry: String,
    /// At return (`None`: no return recorded).
    pub exit: Option<String>,
}

/// Writes the arguments of `c`, with `→` where a field changed by the
/// return (when `with_exit`).
pub(crate) fn write_args(out: &mut String, c: &ProbedCall, with_exit: bool) {
    for a in &c.args {
        let _ = writeln!(out, "    {} *{}", a.ty, a.name);
        for f in &a.fields {
            let b = &f.entry;
            match f.exit.as_ref().filter(|_| with_exit) {
                Some(x) if x != b => {
                    let _ = writeln!(out, "      {:<15}{b:<24} →  {x}", f.label);
                }
                _ => {
                    let _ = writeln!(out, "      {:<15}{b}", f.label);
                }
            }
        }
    }
}

pub(crate) fn heading(out: &mut String, name: &str, loc: &str) {
    let pad = LOCATION_COL.saturating_sub(2 + name.len()).max(2);
    let _ = writeln!(out, "  {name}{}{loc}", " ".repeat(pad));
}

/// The scheduler callbacks the kernel function `func` calls (by op).
fn callbacks_called_by<'c>(
    func: &str,
    crash: &CrashInfo,
    callbacks: &'c [Callback],
) -> Vec<&'c Callback> {
    let ops: Vec<&str> = OP_CALLERS
        .iter()
        .filter(|(_, caller)| *caller == func)
        .map(|(op, _)| *op)
        .collect();
    let in_crash = crash.callbacks();
    callbacks
        .iter()
        .filter(|cb| {
            let op = in_crash
                .iter()
                .find(|(n, _)| *n == cb.name)
                .and_then(|(_, o)| o.clone())
                .or_else(|| {
                    let all: Vec<&str> = OP_CALLERS.iter().map(|(o, _)| *o).collect();
                    crate::bpf_obj::op_of(&cb.name, &all).map(str::to_string)
                });
            op.is_some_and(|o| ops.contains(&o.as_str()))
        })
        .collect()
}
