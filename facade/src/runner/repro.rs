//! Auto-repro: after a scheduler crash, a second VM with the same kernel,
//! topology, scheduler and scenario runs with probes on the crash path
//! (`ktstr-probe`), and the failure gets the AUTO-PROBE block.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use ktstr_probe::{CrashInfo, Plan, View, bpf_obj, guest::Capture};

use super::prepare::Resolved;
use super::probes::Sources;
use super::{Watched, boot_once};
use crate::config::HostConfig;
use crate::registry::TestEntry;
use crate::verdict::Observed;

/// The kernel's reason of the last sched_ext exit on the console, and its message.
fn kernel_exit(console: &[String]) -> Option<(String, Option<String>)> {
    // Console lines carry the kernel's timestamp: "[   18.89] sched_ext: ...".
    let texts: Vec<&str> = console
        .iter()
        .map(|l| match l.trim_start().strip_prefix('[') {
            Some(r) => r.split_once("] ").map_or(l.as_str(), |(_, t)| t),
            None => l.as_str(),
        })
        .collect();
    ktstr_ops::parse_exit(texts)
}

/// Whether a failure reruns in a probe VM (the caller knows it failed): a
/// test with a scheduler, `auto_repro` on for it and for the run, a failure
/// nobody expected, and sched_ext ejecting the scheduler with an error (the
/// kernel's exit record on the console: a scheduler that never attached has
/// no crash path).
pub(crate) fn wanted(host: &HostConfig, entry: &TestEntry, obs: &Observed) -> bool {
    let cfg = &entry.config;
    cfg.auto_repro
        && host.auto_repro
        && !cfg.expect_err
        && cfg.scheduler.is_some_and(|s| s.is_sched_ext())
        && kernel_exit(&obs.console)
            .is_some_and(|(reason, _)| ktstr_ops::ExitKind::from_reason(&reason).is_error())
}

/// Why auto-repro could not run its probe VM.
#[derive(Debug, thiserror::Error)]
enum ReproError {
    /// The kernel could not be read.
    #[error(transparent)]
    Sources(#[from] crate::error::SourcesError),
    /// No plan for this crash.
    #[error(transparent)]
    Plan(#[from] ktstr_probe::ProbeError),
    /// The probe VM could not run.
    #[error("the probe VM could not run: {0}")]
    Vm(#[from] crate::error::RunError),
    /// Its records are not what the host expects.
    #[error("the probe VM's records do not parse: {0}")]
    Records(serde_json::Error),
}

/// The AUTO-PROBE block of a scheduler crash, and how long its VM waited
/// for host slots; a block saying why when it could not run.
pub(crate) fn block(
    host: &HostConfig,
    entry: &TestEntry,
    resolved: &Resolved,
    sources: &mut Option<Sources>,
    vm: VmChoice<'_>,
    obs: &Observed,
) -> (String, Duration) {
    let mut waited = Duration::ZERO;
    match probe_vm(host, entry, resolved, sources, vm, obs, &mut waited) {
        Ok(b) => (b, waited),
        Err(e) => (format!("=== AUTO-PROBE: not run ===\n  {e}\n"), waited),
    }
}

/// Where the probe VM runs: the test's topology, backend and start.
pub(crate) type VmChoice<'a> = (
    Option<&'a ktstr_topology::Topology>,
    &'a dyn ktstr_vmm::Backend,
    bool,
);

fn probe_vm(
    host: &HostConfig,
    entry: &TestEntry,
    resolved: &Resolved,
    sources: &mut Option<Sources>,
    (shape, backend, restore): VmChoice<'_>,
    obs: &Observed,
    waited: &mut Duration,
) -> Result<String, ReproError> {
    let (reason, message) = kernel_exit(&obs.console).unwrap_or_default();
    let crash = CrashInfo::from_console(&reason, message.as_deref(), &obs.console);
    // The kernel's BTF (offsets, enums) and the scheduler's BPF callbacks,
    // as the probes on request read them.
    let sources = Sources::get(sources, resolved)?;
    let btf = sources.btf()?;
    let callbacks = &sources.callbacks;
    let all_ops: Vec<&str> = ktstr_probe::OP_CALLERS.iter().map(|(o, _)| *o).collect();
    let ops: Vec<String> = callbacks
        .iter()
        .filter_map(|c| bpf_obj::op_of(&c.name, &all_ops).map(str::to_string))
        .collect();
    let plan = Plan::for_crash(&btf, &crash, &ops)?;
    let json = serde_json::to_vec(&plan).expect("a probe plan serializes");

    let t0 = Instant::now();
    // The probe VM starts as the test's VM did.
    let booted = boot_once(
        host,
        entry,
        resolved,
        shape,
        backend,
        Some(&json),
        super::StartMode {
            restore,
            record: false,
        },
    )?;
    let wall = t0.elapsed();
    let slot_wait = booted.slot_wait;
    *waited = slot_wait;
    let mut out = String::new();
    let _ = writeln!(out, "=== AUTO-PROBE: scx_exit fired ===");
    if !obs.body_started {
        let _ = writeln!(
            out,
            "  the first VM did not reach the workload: the scheduler died before the body started"
        );
    }
    let funcs: Vec<&str> = plan.probes.iter().map(|p| p.func.as_str()).collect();
    let _ = writeln!(
        out,
        "  probe VM: same kernel, topology, scheduler and scenario; wall {:.1}s (of which {:.1}s \
         waiting for host slots); probes on {}",
        wall.as_secs_f64(),
        slot_wait.as_secs_f64(),
        funcs.join(", ")
    );
    let obs2 = match booted.watched {
        Watched::Done(o, _) => o,
        Watched::NoInit { after, .. } => {
            let _ = writeln!(
                out,
                "  the probe VM did not reach init within {:.0}s: no records",
                after.as_secs_f64()
            );
            return Ok(out);
        }
    };
    match kernel_exit(&obs2.console) {
        Some((r, m)) if ktstr_ops::ExitKind::from_reason(&r).is_error() => {
            let _ = writeln!(
                out,
                "  the repro failed again: {r}{}",
                m.map(|m| format!(": {m}")).unwrap_or_default()
            );
        }
        _ => {
            let _ = writeln!(
                out,
                "  the repro did not fail again: no scheduler exit in the probe VM"
            );
        }
    }
    if !obs2.body_started {
        let _ = writeln!(out, "  the probe VM did not reach the workload either");
    }
    let cap: Capture = match obs2.probe.clone().map(serde_json::from_value) {
        Some(Ok(c)) => c,
        Some(Err(e)) => return Err(ReproError::Records(e)),
        None => {
            let _ = writeln!(out, "  the probe VM sent no records");
            return Ok(out);
        }
    };
    for e in &cap.errors {
        let _ = writeln!(out, "  probe error: {e}");
    }
    let view = View::new(&btf, &plan, &cap);
    let _ = writeln!(
        out,
        "  {} records{}{}",
        cap.lines.len(),
        if view.dropped > 0 {
            format!(" (the newest; {} older ones dropped)", view.dropped)
        } else {
            String::new()
        },
        if view.skipped > 0 {
            format!(", {} unreadable", view.skipped)
        } else {
            String::new()
        }
    );
    let locations = sources.locations();
    out.push_str(&view.render(&crash, callbacks, &|f| locations.locate(f)));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::{Scheduler, SchedulerSpec, TestConfig};
    use ktstr_ops::AssertResult;
    use ktstr_vmm::EndReason;

    const SCHED: Scheduler = Scheduler::named("s").binary(SchedulerSpec::Discover("scx-ktstr"));

    fn entry(auto_repro: bool, expect_err: bool, scheduler: Option<Scheduler>) -> TestEntry {
        fn body(_: &crate::scenario::Ctx) -> anyhow::Result<AssertResult> {
            Ok(AssertResult::pass())
        }
        TestEntry {
            name: "t",
            func: body,
            config: TestConfig {
                duration_s: 1,
                watchdog_timeout_s: 61,
                expect_err,
                scheduler,
                auto_repro,
                ..TestConfig::DEFAULT
            },
        }
    }

    fn host(auto_repro: &str) -> HostConfig {
        HostConfig::from_vars(|k| match k {
            "KTSTR_AUTO_REPRO" => Some(auto_repro.into()),
            "HOME" => Some("/h".into()),
            _ => None,
        })
        .expect("config")
    }

    fn crashed(reason: &str) -> Observed {
        let mut o = Observed::ended(EndReason::PowerOff);
        o.console = vec![
            "[    8.75] sched_ext: BPF scheduler \"ktstr\" enabled".into(),
            format!("[    8.76] sched_ext: BPF scheduler \"ktstr\" disabled ({reason})"),
            "[    8.76] sched_ext: ktstr: crash requested".into(),
        ];
        o
    }

    #[test]
    fn only_an_unexpected_error_exit_of_a_scheduler_reruns() {
        let on = host("1");
        let e = entry(true, false, Some(SCHED));
        assert!(wanted(&on, &e, &crashed("scx_bpf_error")));
        assert!(wanted(&on, &e, &crashed("runnable task stall")));
        // Not an error exit, or none at all: nothing to probe.
        assert!(!wanted(&on, &e, &crashed("unregistered from user space")));
        assert!(!wanted(&on, &e, &Observed::ended(EndReason::PowerOff)));
        // Turned off by the test, by the run, by expect_err; no scheduler.
        // (A pass, an expected failure included, is never rerun: the
        // collector asks only after a failing verdict.)
        let c = crashed("scx_bpf_error");
        assert!(!wanted(&on, &entry(false, false, Some(SCHED)), &c));
        assert!(!wanted(&host("0"), &e, &c));
        assert!(!wanted(&on, &entry(true, true, Some(SCHED)), &c));
        assert!(!wanted(&on, &entry(true, false, None), &c));
    }

    #[test]
    fn the_kernel_exit_is_read_through_console_timestamps() {
        assert_eq!(
            kernel_exit(&crashed("scx_bpf_error").console),
            Some((
                "scx_bpf_error".into(),
                Some("ktstr: crash requested".into())
            ))
        );
    }
}
