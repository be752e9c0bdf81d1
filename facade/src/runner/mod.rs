//! The host side of one `#[ktstr_test]`, orchestration only: prepare the
//! VM, take host slots, boot through the backend interface, follow it to
//! its end, judge, record. The runner never knows which backend runs.

mod prepare;
pub(crate) use prepare::vm_spec_of;
mod probes;
mod repro;
mod restore;
mod watch;

use std::io::Write;
use std::time::{Duration, Instant};

use crate::config::HostConfig;
use crate::error::RunError;
use crate::registry::TestEntry;
use crate::verdict::{self, Expectation, Observed, PostVm, Reached, RunReport};

use watch::Limits;
pub(crate) use watch::Watched;

fn secs(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".to_string(), |d| format!("{:.2}s", d.as_secs_f64()))
}

/// The monitor's checks of `entry` (test over scheduler over defaults),
/// judged over what `finished` read.
fn monitor_findings(
    entry: &TestEntry,
    prepared: &prepare::Prepared,
    finished: &crate::monitor::Finished,
) -> verdict::MonitorFindings {
    let cfg = &entry.config;
    let checks = cfg
        .monitor
        .over(
            cfg.scheduler
                .map_or(ktstr_ops::MonitorChecks::INHERIT, |s| s.monitor),
        )
        .resolved();
    let mut samples = finished.bridge.ordered_with_stats().snapshots;
    samples.extend(finished.log.samples().iter().cloned());
    samples.sort_by_key(|s| s.elapsed);
    let llc_of: Vec<u32> = prepared.topology.cpus().map(|c| c.llc).collect();
    // vCPUs sharing a host thread take turns: a vCPU may wait one turn per
    // other vCPU on its thread.
    let turns = prepared.vcpus_per_thread.saturating_sub(1);
    verdict::judge_monitor(
        &verdict::MonitorInput {
            samples: &samples,
            unavailable: finished.log.unavailable(),
            hz: finished.log.hz(),
            window: finished.window,
            llc_of: &llc_of,
            timing_reliable: prepared.timing_reliable,
            turn_allowance: ktstr_ops::RR_TURN * turns,
        },
        &checks,
    )
}

/// How to run one test, beyond its declaration.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions<'a> {
    /// Boot this kernel instead of the host configuration's.
    pub kernel: Option<&'a std::path::Path>,
    /// Run on this gauntlet preset instead of the declared topology.
    pub preset: Option<&'a str>,
    /// Restore from a snapshot (`true`) or boot cold (`false`), whatever
    /// the host configuration says (tests of the restore path itself).
    pub restore: Option<bool>,
    /// Record the VM (`true`) or not (`false`), whatever the host
    /// configuration and the test say.
    pub record: Option<bool>,
}

/// What the test expects of itself, under the run's configuration.
fn expectation(entry: &TestEntry, host: Option<&HostConfig>) -> Expectation<'static> {
    let cfg = &entry.config;
    Expectation {
        expect_err: cfg.expect_err,
        expect_err_matching: cfg.expect_err_matching,
        expect_err_text: cfg.expect_err_text,
        allow_inconclusive: cfg.allow_inconclusive || host.is_some_and(|h| h.allow_inconclusive),
        watchdog_timeout_s: cfg.watchdog_timeout_s,
    }
}

/// Runs one test as `opts` say and records it in the results store:
/// everything observed, for [`verdict::judge`] and the record.
pub fn run(entry: &TestEntry, opts: &RunOptions<'_>) -> RunReport {
    let t0 = Instant::now();
    let host = match HostConfig::global() {
        Ok(h) => h,
        Err(e) => {
            let mut report = RunReport::new(entry.name, expectation(entry, None));
            report.reached = Reached::NotRun(crate::error::error_text(&RunError::from(e)));
            return report;
        }
    };
    let mut report = RunReport::new(entry.name, expectation(entry, Some(host)));
    let shape = match opts.preset.map(|p| (p, ktstr_topology::preset(p))) {
        None => None,
        Some((_, Some(p))) => Some(p.topology),
        Some((name, None)) => {
            report.reached = Reached::NotRun(format!(
                "gauntlet preset {name:?} does not exist (see `cargo ktstr topo`)"
            ));
            return report;
        }
    };
    if let Err(e) = run_in(host, entry, opts, shape.as_ref(), &mut report) {
        report.reached = Reached::NotRun(crate::error::error_text(&e));
    }
    let outcome = report.outcome();
    // A run that ended before its VM was prepared records the declared shape.
    if report.topology.is_none() {
        report.topology = Some(shape.map_or_else(
            || {
                let c = &entry.config;
                format!("{}n{}l{}c{}t", c.numa_nodes, c.llcs, c.cores, c.threads)
            },
            |t| t.to_string(),
        ));
    }
    let run = crate::results::run_id(host);
    report.phases.total = t0.elapsed();
    let record = crate::results::Facts {
        run: &run,
        entry,
        preset: opts.preset,
        outcome: &outcome,
        report: &report,
    };
    crate::results::record(host, &record);
    report
}

/// The kfuncs `resolved`'s scheduler calls that its kernel lacks, when the
/// scheduler died at start-up (its own log often says only "Invalid argument").
fn missing_kfuncs(obs: &Observed, resolved: &prepare::Resolved) -> Option<verdict::MissingKfuncs> {
    let died_at_startup = obs.error_kinds.contains(&ktstr_ops::ErrorKind::StartupDied);
    let (s, binary) = resolved.boot.as_ref().filter(|_| died_at_startup)?;
    let vmlinux = std::fs::read(&resolved.kernel.vmlinux).ok()?;
    let btf = ktstr_btf::Btf::parse(ktstr_btf::elf::btf_section(&vmlinux).ok()?).ok()?;
    let bin = std::fs::read(binary).ok()?;
    let kfuncs = crate::kfuncs::missing(&bin, &btf);
    (!kfuncs.is_empty()).then(|| verdict::MissingKfuncs {
        scheduler: s.name.to_string(),
        release: resolved
            .kernel
            .release
            .clone()
            .unwrap_or_else(|| "this kernel".into()),
        kfuncs,
    })
}

/// Extra boot-to-init and watchdog time for a randomized (bzImage) boot:
/// its firmware path and decompressor took seconds to tens of seconds more
/// than a PVH boot of the vmlinux on a loaded 2-core host (README: KASLR).
const KASLR_BOOT_MARGIN: Duration = Duration::from_secs(30);

/// One VM of a test, booted and followed to its end.
pub(crate) struct Booted {
    pub(crate) watched: Watched,
    pub(crate) monitor: crate::monitor::Session,
    pub(crate) slot_wait: Duration,
    pub(crate) initramfs: Duration,
    /// Booted or restored.
    pub(crate) start: restore::Start,
    /// What the VM was booted from: kernel, scheduler, topology, spec.
    pub(crate) prepared: prepare::Prepared,
    /// A recorded VM's tape, and how long it ran.
    pub(crate) tape: Option<(crate::recording::Tape, Duration)>,
}

/// How a VM starts: from a snapshot when it can (`restore`), recorded
/// (`record`, which boots it: a restored guest does not repeat its run).
#[derive(Debug, Clone, Copy)]
pub(crate) struct StartMode {
    pub(crate) restore: bool,
    pub(crate) record: bool,
}

/// Prepares, boots and watches one VM of `entry` over what was resolved
/// (`probe_plan`: an auto-repro probe VM's plan, JSON; `restore`: whether
/// to start from a snapshot).
pub(crate) fn boot_once(
    host: &HostConfig,
    entry: &TestEntry,
    resolved: &prepare::Resolved,
    shape: Option<&ktstr_topology::Topology>,
    backend: &dyn ktstr_vmm::Backend,
    probe_plan: Option<&[u8]>,
    how: StartMode,
) -> Result<Booted, RunError> {
    let StartMode { restore, record } = how;
    let t0 = Instant::now();
    let cfg = &entry.config;
    let mut prepared = prepare::prepare(host, entry, resolved, shape, backend, probe_plan, record)?;
    // A recording boots: a restored guest does not repeat its run.
    let restore = restore && !record;
    // A recording counts the instructions before the kernel's scheduler
    // exit, panic and power off (the gate plugin's marks): a replay must
    // repeat them to the instruction.
    let mut marking = match (record, prepared.kaslr) {
        (false, _) => None,
        (true, true) => Some(Err(
            "a KASLR boot's addresses are not known before it".into()
        )),
        (true, false) => Some(
            crate::recording::Marking::new(&prepared.kernel.vmlinux, &host.cache_root).map(
                |(marking, gate)| {
                    if let Some(d) = prepared.spec.deterministic.as_mut() {
                        d.gate = Some(gate);
                    }
                    marking
                },
            ),
        ),
    };
    let initramfs = t0.elapsed();
    // A randomized boot first runs the bzImage's firmware path and
    // decompressor, which under TCG costs seconds more (README: KASLR).
    let margin = if prepared.kaslr {
        KASLR_BOOT_MARGIN
    } else {
        Duration::ZERO
    };
    let limits = Limits {
        boot_to_init: host.boot_timeout + margin,
        watchdog: Duration::from_secs(u64::from(cfg.watchdog_timeout_s)) + margin,
        echo_console: host.verbose,
    };
    let backend_err = |source| RunError::Backend {
        backend: backend.name(),
        source,
    };
    // The backend takes the host slots first; the boot clock starts after.
    let started = restore::start(host, backend, &prepared, restore).map_err(backend_err)?;
    let boot_at = Instant::now();
    let mut vm = started.vm;
    let mut slot_wait = vm.slot_wait();
    if let Some((took, waited)) = started.made {
        slot_wait += waited;
        let line = format!(
            "ktstr: {}: snapshot made in {:.2}s (agent boot and save)\n",
            entry.name,
            took.as_secs_f64()
        );
        let _ = std::io::stderr().write_all(line.as_bytes());
    }
    let mut monitor = crate::monitor::Session::start(
        crate::monitor::Plan {
            vmlinux: prepared.kernel.vmlinux.clone(),
            kaslr: prepared.kaslr,
            cache_root: host.cache_root.clone(),
            hz: host.monitor_hz,
            num_snapshots: cfg.num_snapshots,
            nr_cpus: prepared.topology.nr_cpus(),
            record: prepared.record,
        },
        vm.memory().clone(),
        boot_at,
    );
    let mut tape = prepared.record.then(crate::recording::Tape::default);
    if let Some(Ok(m)) = marking.as_mut() {
        m.start();
    }
    let watched = watch::watch(vm.as_mut(), boot_at, limits, &mut monitor, tape.as_mut())
        .map_err(backend_err)?;
    drop(vm);
    if let (Some(t), Some(m)) = (tape.as_mut(), marking) {
        t.marks = m.and_then(crate::recording::Marking::finish);
    }
    let ran = boot_at.elapsed();
    Ok(Booted {
        watched,
        monitor,
        slot_wait,
        initramfs,
        start: started.start,
        prepared,
        tape: tape.map(|t| (t, ran)),
    })
}

/// The collector: runs `entry`'s VM (and, after a scheduler crash,
/// auto-repro's probe VM) and fills `report` with what it observed. Judging is left to [`verdict::judge`]; `Err` is a run that
/// could not go on.
fn run_in(
    host: &HostConfig,
    entry: &TestEntry,
    opts: &RunOptions<'_>,
    shape: Option<&ktstr_topology::Topology>,
    report: &mut RunReport,
) -> Result<(), RunError> {
    let t0 = Instant::now();
    let cfg = &entry.config;
    let backend = host.backend().map_err(|source| RunError::Backend {
        backend: "selection".into(),
        source,
    })?;
    report.backend = Some(backend.name());
    // The kernel and the schedulers, once for the VM, the probes and repro.
    let resolved = prepare::resolve(host, entry, opts.kernel)?;
    report.kernel = Some(resolved.kernel.clone());
    // Probes on request: checked before any VM boots; none without the key.
    let mut sources = None;
    let on_request = probes::plan(entry, &resolved, &mut sources)?;
    let plan_json = on_request
        .as_ref()
        .map(|plan| serde_json::to_vec(plan).expect("a probe plan serializes"));
    report.boots += 1;
    let restore = opts.restore.unwrap_or(host.restore);
    let record = opts.record.unwrap_or(host.record || cfg.record);
    let mut booted = boot_once(
        host,
        entry,
        &resolved,
        shape,
        backend.as_ref(),
        plan_json.as_deref(),
        StartMode { restore, record },
    )?;
    report.slot_wait += booted.slot_wait;
    report.scheduler = booted.prepared.scheduler.take();
    let topo = booted.prepared.topology.to_string();
    report.topology = Some(topo.clone());
    let (slot_wait, initramfs) = (booted.slot_wait, booted.initramfs);
    report.phases.initramfs = initramfs;
    report.phases.slot_wait = slot_wait;
    report.phases.start = Some(booted.start.record());
    // A recorded VM's recording is written only where it is kept: for a
    // failure, or for every run under KTSTR_RECORD=all.
    let run_id = crate::results::run_id(host);
    let keep =
        |prepared: &prepare::Prepared, (tape, ran): (crate::recording::Tape, Duration), end| {
            let src = crate::recording::Source {
                test: entry.name,
                run: &run_id,
                spec: &prepared.spec,
                kernel_release: resolved.kernel.release.clone(),
                backend: backend.as_ref(),
                end: &end,
                wall: ran,
            };
            keep_recording(host, opts.preset, &src, &tape)
        };
    let tape = booted.tape.take();
    let (mut observed, times) = match booted.watched {
        Watched::Done(observed, times) => (observed, times),
        // No retry: a guest that never reaches init is a failure to look at
        // (the kernel's or the VMM's), not noise to boot past.
        Watched::NoInit { after, console } => {
            report.reached = Reached::NoInit { after, console };
            report.recording =
                tape.and_then(|t| keep(&booted.prepared, t, ktstr_vmm::EndReason::Killed));
            return Ok(());
        }
    };
    report.phases.boot_to_init = times.boot_to_init;
    report.phases.body = times.body;
    report.phases.teardown = times.teardown;
    report.steps = times.steps.clone();
    report.phases.verdict_at = times.verdict_at;
    report.phases.clock_skew = times.clock_skew;
    // The monitor's checks over the body's samples join the verdict.
    let finished = booted.monitor.finish();
    observed.monitor = monitor_findings(entry, &booted.prepared, &finished);
    report.monitor_summary = Some(crate::monitor::summary_record(&finished.log));
    report.dump = finished.dump.clone();
    report.bpf_progs = times
        .bpf_progs
        .as_ref()
        .map(|p| crate::dump::prog_stats(p))
        .unwrap_or_default();
    if (cfg.dump || host.dump) && !report.bpf_progs.is_empty() {
        let text = crate::dump::progs_text(entry.name, &report.bpf_progs);
        let _ = std::io::stderr().write_all(text.as_bytes());
    }
    report.probes = on_request
        .as_ref()
        .map(|plan| probes::report(plan, sources.as_ref(), observed.probe.as_ref()));
    if let Some(Ok(r)) = &report.probes {
        // Straight to the stream, like the line below: a passing run's too.
        let _ = std::io::stderr().write_all(r.text.as_bytes());
    }
    report.missing_kfuncs = missing_kfuncs(&observed, &resolved);
    report.reached = Reached::Ended(observed.clone());
    // The host's own checks of what the monitor saw (post_vm), over the
    // verdict so far.
    let result = vm_result(
        entry.name,
        &observed,
        report.outcome(),
        finished,
        &times.steps,
        report
            .probes
            .as_ref()
            .and_then(|p| p.as_ref().ok())
            .cloned(),
    );
    report.post_vm = run_post_vm(&result, cfg.post_vm);
    report.monitor_tail = result.monitor.tail_text(3);
    report.dump_text = result.dump.as_ref().map(ToString::to_string);
    let failed = verdict::judge(report).kind == verdict::Kind::Fail;
    if failed || host.keep_recordings {
        report.recording = tape.and_then(|t| keep(&booted.prepared, t, observed.end.clone()));
    }
    if let Some(d) = report.dump_text.as_ref().filter(|_| !failed) {
        // The scheduler's own state after a pass, when asked for.
        let _ = std::io::stderr().write_all(format!("{}:\n{d}\n", entry.name).as_bytes());
    }
    let total = t0.elapsed();
    let line = format!(
        "ktstr: {} [{topo}] on {} ({}): initramfs {:.0}ms, slot wait {:.2}s, boot-to-init {}, body {}, teardown {}, total {:.2}s\n",
        entry.name,
        backend.name(),
        booted.start.as_str(),
        initramfs.as_secs_f64() * 1000.0,
        slot_wait.as_secs_f64(),
        secs(times.boot_to_init),
        secs(times.body),
        secs(times.teardown),
        total.as_secs_f64(),
    );
    // Straight to the stream, past libtest's capture: one line per test.
    let _ = std::io::stderr().write_all(line.as_bytes());
    // A scheduler crash reruns in a probe VM; its block follows the failure.
    if failed && repro::wanted(host, entry, &observed) {
        report.boots += 1;
        let (block, waited) = repro::block(
            host,
            entry,
            &resolved,
            &mut sources,
            (shape, backend.as_ref(), restore),
            &observed,
        );
        report.slot_wait += waited;
        report.repro = Some(block);
    }
    Ok(())
}

/// Writes a recorded VM's recording into the results store, beside the
/// test's record; says where (or why not) on stderr.
fn keep_recording(
    host: &HostConfig,
    preset: Option<&str>,
    src: &crate::recording::Source<'_>,
    tape: &crate::recording::Tape,
) -> Option<std::path::PathBuf> {
    let say = |s: String| {
        let _ = std::io::stderr().write_all(format!("ktstr: {}: {s}\n", src.test).as_bytes());
    };
    let Some(store) = crate::results::store_dir(host) else {
        say("not recorded: no results store (set KTSTR_RESULTS_DIR)".into());
        return None;
    };
    let dir = crate::recording::dir_in(
        &store,
        src.run,
        &crate::results::record_file_name(src.test, preset),
    );
    match crate::recording::write(&dir, src, tape) {
        Ok(m) => {
            say(format!(
                "its recording ({:.1} MB) is kept: cargo ktstr replay {}",
                m.size_bytes as f64 / 1e6,
                dir.display()
            ));
            Some(dir)
        }
        Err(e) => {
            say(format!(
                "the recording could not be kept: {}",
                crate::error_text(&e)
            ));
            let _ = std::fs::remove_dir_all(&dir);
            None
        }
    }
}

/// What `post_vm` reads of one VM.
fn vm_result(
    test: &'static str,
    observed: &Observed,
    outcome: verdict::Outcome,
    finished: crate::monitor::Finished,
    steps: &[crate::monitor::StepStart],
    probes: Option<ktstr_probe::ProbeReport>,
) -> crate::monitor::VmResult {
    crate::monitor::VmResult {
        test,
        snapshot_bridge: finished.bridge,
        monitor: finished.log,
        periodic_target: finished.periodic_target,
        periodic_fired: finished.periodic_fired,
        end: observed.end.clone(),
        guest_passed: observed.verdict.as_ref().map(|(v, _)| v.is_pass()),
        outcome,
        scheduler_died: observed.scheduler_death.clone(),
        console: observed.console.clone(),
        steps: steps.to_vec(),
        probes,
        dump: finished.dump,
    }
}

/// Runs the test's `post_vm` check on `result`: what it said, a panic
/// caught and named.
fn run_post_vm(
    result: &crate::monitor::VmResult,
    post_vm: Option<crate::monitor::PostVmFn>,
) -> PostVm {
    let Some(check) = post_vm else {
        return PostVm::NotRun;
    };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(result))) {
        Ok(Ok(())) => PostVm::Passed,
        Ok(Err(e)) => PostVm::Failed(format!("{e:#}")),
        Err(p) => PostVm::Panicked(
            p.downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| p.downcast_ref::<&str>().copied())
                .unwrap_or("(non-string payload)")
                .to_string(),
        ),
    }
}
