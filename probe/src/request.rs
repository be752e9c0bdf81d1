//! Probes on request: a test names the functions it wants to watch
//! (`#[ktstr_test(probes = [...])]`), in a passing run as well as a failing
//! one. The names are checked against the kernel's BTF and the scheduler's
//! BPF callbacks before the VM boots (an unknown one is an error naming it,
//! with the closest names and how to list them); the records come back with
//! the same decoding as the AUTO-PROBE block, the last few calls of each
//! function, and as [`ProbedCall`] values for a `post_vm` check.

use std::fmt::Write as _;

use ktstr_btf::{Btf, Kind};

use crate::ProbeError;
use crate::bpf_obj::{Callback, op_of};
use crate::fields::ArgKind;
use crate::plan::{OP_CALLERS, Plan, probe_of};
use crate::render::{ProbedCall, View, heading, write_args};

/// Functions one test may probe at most: each probe costs every call of
/// its function two trace records, and the guest runs on a software CPU.
pub const MAX_FUNCTIONS: usize = 16;

/// Calls shown per function in the printed block (all are in [`ProbeReport::calls`]).
pub const CALLS_SHOWN: usize = 3;

/// A scheduler callback asked for by name: kprobes cannot attach to BPF
/// programs, so its kernel caller is probed and the callback is shown with
/// the arguments that caller passed it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RequestedCallback {
    /// The BPF function (`ktstr_enqueue`).
    pub name: String,
    /// The kernel function probed for it (`enqueue_task_scx`).
    pub caller: String,
}

impl Plan {
    /// The plan for the functions a test asked for, in its order: kernel
    /// functions of `btf` (with or without a task or runqueue argument), or
    /// BPF callbacks of the scheduler (`callbacks`) whose `sched_ext_ops`
    /// member has a known kernel caller. Fails on the first unknown name,
    /// on an empty list entry, and on more than [`MAX_FUNCTIONS`].
    pub fn on_request(
        btf: &Btf<'_>,
        names: &[&str],
        callbacks: &[Callback],
    ) -> Result<Plan, ProbeError> {
        if names.len() > MAX_FUNCTIONS {
            return Err(ProbeError::TooMany(names.len()));
        }
        let mut plan = Plan::default();
        let all_ops: Vec<&str> = OP_CALLERS.iter().map(|(o, _)| *o).collect();
        for &name in names {
            let name = name.trim();
            if plan.requested.iter().any(|r| r == name) {
                continue;
            }
            let func = match btf.func(name) {
                Ok(_) => name.to_string(),
                Err(_) => {
                    let caller = callbacks
                        .iter()
                        .find(|c| c.name == name)
                        .and_then(|c| op_of(&c.name, &all_ops))
                        .and_then(|op| OP_CALLERS.iter().find(|(o, _)| *o == op))
                        .map(|(_, caller)| (*caller).to_string());
                    match caller {
                        Some(caller) if btf.func(&caller).is_ok() => {
                            plan.callbacks.push(RequestedCallback {
                                name: name.to_string(),
                                caller: caller.clone(),
                            });
                            caller
                        }
                        _ => {
                            return Err(ProbeError::UnknownFunction {
                                name: name.to_string(),
                                similar: similar(btf, name, callbacks),
                            });
                        }
                    }
                }
            };
            plan.requested.push(name.to_string());
            if plan.probes.iter().any(|p| p.func == func) {
                continue;
            }
            let sig = btf.func(&func).map_err(|e| ProbeError::btf(&func, e))?;
            let probe = probe_of(btf, &func, &sig, plan.probes.len())?;
            plan.probes.push(probe);
        }
        Ok(plan)
    }
}

/// The kernel functions of `btf` whose name contains `pattern`, each with
/// the arguments a probe decodes (`enqueue_task_scx(rq *rq, task_struct *p)`),
/// sorted by name.
pub fn probeable(btf: &Btf<'_>, pattern: &str) -> Vec<String> {
    let mut out: Vec<String> = btf
        .types()
        .filter(|t| t.kind() == Kind::Func && t.name().contains(pattern))
        .filter_map(|t| {
            let sig = btf.func_of(t.id()).ok()?;
            let args: Vec<String> = sig
                .params
                .iter()
                .filter_map(|p| {
                    ArgKind::of_param(btf, p.ty).map(|k| format!("{} *{}", k.struct_name(), p.name))
                })
                .collect();
            Some(format!("{}({})", sig.name, args.join(", ")))
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Up to five names close to `name`: kernel functions and callbacks that
/// contain it, else those a few edits away.
fn similar(btf: &Btf<'_>, name: &str, callbacks: &[Callback]) -> Vec<String> {
    let names = btf
        .types()
        .filter(|t| t.kind() == Kind::Func)
        .map(|t| t.name())
        .chain(callbacks.iter().map(|c| c.name.as_str()));
    let limit = (name.len() / 4).max(2);
    let mut scored: Vec<(usize, &str)> = names
        .filter_map(|n| {
            if n.contains(name) && !name.is_empty() {
                return Some((n.len() - name.len(), n));
            }
            if n.len().abs_diff(name.len()) > limit {
                return None;
            }
            let d = edit_distance(n, name);
            (d <= limit).then_some((d, n))
        })
        .collect();
    scored.sort();
    scored.dedup_by(|a, b| a.1 == b.1);
    scored
        .into_iter()
        .take(5)
        .map(|(_, n)| n.to_string())
        .collect()
}

/// Levenshtein distance over bytes.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, &x) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, &y) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(x != y))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// What probes on request saw in one VM.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProbeReport {
    /// The names the test asked for, in its order.
    pub requested: Vec<String>,
    /// Every paired call the captured records hold, in time order (the
    /// guest keeps the newest [`crate::guest::MAX_LINES`] records, at most
    /// [`crate::guest::MAX_BYTES`]).
    pub calls: Vec<ProbedCall>,
    /// Trace records captured.
    pub records: usize,
    /// Records that did not parse.
    pub unreadable: usize,
    /// What failed in the guest (a probe the kernel refused, tracefs).
    pub errors: Vec<String>,
    /// The printed block.
    pub text: String,
}

impl ProbeReport {
    /// The calls of `name` (a kernel function, or a requested callback: the
    /// calls of its kernel caller).
    pub fn calls_of<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s ProbedCall> + 's {
        self.calls.iter().filter(move |c| match &c.callback {
            Some(cb) => cb == name,
            None => c.func == name,
        })
    }
}

impl View<'_> {
    /// The report of probes on request: per requested name, how many calls
    /// the records hold and the last [`CALLS_SHOWN`] of them, decoded.
    /// `locate` gives a kernel function's `file:line`, or why there is none.
    pub fn report<E: std::fmt::Display>(
        &self,
        callbacks: &[Callback],
        locate: &dyn Fn(&str) -> Result<String, E>,
    ) -> ProbeReport {
        let plan = self.plan();
        let mut calls = Vec::new();
        for c in self.decoded_calls() {
            // A call of a callback's caller is that callback's call too.
            let cbs: Vec<&RequestedCallback> = plan
                .callbacks
                .iter()
                .filter(|r| r.caller == c.func)
                .collect();
            if plan.requested.contains(&c.func) || cbs.is_empty() {
                calls.push(c.clone());
            }
            for cb in cbs {
                calls.push(ProbedCall {
                    callback: Some(cb.name.clone()),
                    ..c.clone()
                });
            }
        }
        let mut report = ProbeReport {
            requested: plan.requested.clone(),
            calls,
            records: self.records_len(),
            unreadable: self.skipped,
            errors: Vec::new(),
            text: String::new(),
        };
        let mut out = String::new();
        let _ = writeln!(
            out,
            "=== PROBES (on request): {} ===",
            report.requested.join(", ")
        );
        let _ = writeln!(
            out,
            "  {} records{}{}",
            report.records,
            if self.dropped > 0 {
                format!(
                    " (the newest; {} older ones dropped to fit the guest's limit of {} \
                     records or {} KiB)",
                    self.dropped,
                    crate::guest::MAX_LINES,
                    crate::guest::MAX_BYTES >> 10
                )
            } else {
                String::new()
            },
            if report.unreadable > 0 {
                format!(", {} unreadable", report.unreadable)
            } else {
                String::new()
            }
        );
        let mut unlocated: Vec<String> = Vec::new();
        for name in &report.requested {
            let mine: Vec<&ProbedCall> = report.calls_of(name).collect();
            let from = mine.len().saturating_sub(CALLS_SHOWN);
            match mine.len() {
                0 => {
                    let _ = writeln!(out, "  {name}: no call in the records");
                    continue;
                }
                n => {
                    let _ = writeln!(
                        out,
                        "  {name}: {n} call{} in the records; the last {}, in time order:",
                        if n == 1 { "" } else { "s" },
                        n - from
                    );
                }
            }
            for c in &mine[from..] {
                match &c.callback {
                    Some(cb) => {
                        let loc = callbacks
                            .iter()
                            .find(|k| k.name == *cb)
                            .map_or_else(|| "BPF".to_string(), |k| k.location.clone());
                        heading(&mut out, cb, &loc);
                        let _ = writeln!(
                            out,
                            "    (BPF callback: its arguments as {} passed them)",
                            c.func
                        );
                    }
                    None => {
                        let loc = match locate(&c.func) {
                            Ok(l) => l,
                            Err(why) => {
                                let why = why.to_string();
                                if !unlocated.contains(&why) {
                                    unlocated.push(why);
                                }
                                "kernel".to_string()
                            }
                        };
                        heading(&mut out, &c.func, &loc);
                    }
                }
                let _ = writeln!(
                    out,
                    "    on cpu {} at {}.{:06}s{}",
                    c.cpu,
                    c.ts_ns / 1_000_000_000,
                    c.ts_ns % 1_000_000_000 / 1000,
                    if c.returned {
                        ""
                    } else {
                        " (no return recorded)"
                    }
                );
                if c.args.is_empty() {
                    out.push_str(
                        "    (no task_struct * or rq * argument: only the call is recorded)\n",
                    );
                }
                write_args(&mut out, c, c.callback.is_none());
            }
        }
        for why in unlocated {
            let _ = writeln!(out, "  no file:line for kernel functions: {why}");
        }
        report.text = out;
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_edits() {
        assert_eq!(edit_distance("enqueue_task_scx", "enqueue_task_scx"), 0);
        assert_eq!(edit_distance("enqueue_task_sxc", "enqueue_task_scx"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
    }
}
