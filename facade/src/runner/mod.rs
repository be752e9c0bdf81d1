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
use crate::verdict::{self, Expectation, Outcome};

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
                .map_or(ktstr_ops::scheduler::MonitorChecks::INHERIT, |s| s.monitor),
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
            turn_allowance: ktstr_ops::scenario::RR_TURN * turns,
        },
        &checks,
    )
}

/// Runs one test in a VM booting `kernel` (default: the host configuration's).
pub fn run(entry: &TestEntry, kernel: Option<&std::path::Path>) -> Outcome {
    run_on(entry, kernel, None)
}

/// Runs one test on its declared topology, or on the gauntlet preset named
/// `preset`; records the run in the results store.
pub fn run_on(
    entry: &TestEntry,
    kernel: Option<&std::path::Path>,
    preset: Option<&str>,
) -> Outcome {
    let t0 = Instant::now();
    let host = match HostConfig::global() {
        Ok(h) => h,
        Err(e) => return Outcome::Fail(RunError::from(e).to_string()),
    };
    let shape = match preset.map(|p| (p, ktstr_topology::preset(p))) {
        None => None,
        Some((_, Some(p))) => Some(p.topology),
        Some((name, None)) => {
            return Outcome::Fail(format!(
                "gauntlet preset {name:?} does not exist (see `cargo ktstr topo`)"
            ));
        }
    };
    let mut facts = RunFacts::default();
    let outcome = match run_in(host, entry, kernel, shape.as_ref(), t0, &mut facts) {
        Ok(outcome) => outcome,
        Err(e) => Outcome::Fail(e.to_string()),
    };
    let outcome = explain_startup_death(outcome, &facts);
    let topology = match (&facts.topology, shape) {
        (Some(t), _) => t.clone(),
        (None, Some(t)) => t.to_string(),
        (None, None) => {
            let c = &entry.config;
            format!("{}n{}l{}c{}t", c.numa_nodes, c.llcs, c.cores, c.threads)
        }
    };
    let run = crate::results::run_id(host);
    let record = crate::results::Facts {
        run: &run,
        entry,
        preset,
        topology,
        backend: facts.backend.clone().unwrap_or_default(),
        kernel: facts.kernel.as_ref(),
        scheduler: facts.scheduler.as_ref(),
        outcome: &outcome,
        verdict: facts.verdict.as_ref(),
        monitor: facts.monitor.take(),
        steps: &facts.steps,
        dump: facts.dump.take(),
        bpf_progs: std::mem::take(&mut facts.bpf_progs),
        phases: crate::results::Phases {
            total: t0.elapsed(),
            ..facts.phases
        },
    };
    crate::results::record(host, &record);
    let p = &record.phases;
    let overhead = p
        .total
        .checked_sub(p.body.unwrap_or_default())
        .and_then(|d| d.checked_sub(p.slot_wait));
    LAST_START.with(|s| {
        s.set(StartInfo {
            overhead,
            ..s.get()
        })
    });
    outcome
}

/// A scheduler that died at start-up on a kernel that lacks kfuncs its BPF
/// objects call: the failure names them (the scheduler's own log often
/// says only "Invalid argument").
fn explain_startup_death(outcome: Outcome, facts: &RunFacts) -> Outcome {
    let Outcome::Fail(text) = outcome else {
        return outcome;
    };
    let (Some(kernel), Some((name, binary, _))) = (&facts.kernel, &facts.scheduler) else {
        return Outcome::Fail(text);
    };
    if !text.contains("died at start-up") {
        return Outcome::Fail(text);
    }
    let missing = (|| {
        let vmlinux = std::fs::read(&kernel.vmlinux).ok()?;
        let btf = ktstr_btf::Btf::parse(ktstr_btf::elf::btf_section(&vmlinux).ok()?).ok()?;
        let bin = std::fs::read(binary).ok()?;
        Some(crate::kfuncs::missing(&bin, &btf))
    })()
    .unwrap_or_default();
    if missing.is_empty() {
        return Outcome::Fail(text);
    }
    let release = kernel.release.as_deref().unwrap_or("this kernel");
    Outcome::Fail(format!(
        "{text}\n  kernel {release} lacks kfuncs that {name}'s BPF objects call (not weak), or has them with another prototype: {}",
        missing.join(", ")
    ))
}

/// What a run learned on its way, for its record (as far as it got).
#[derive(Debug, Default)]
struct RunFacts {
    topology: Option<String>,
    backend: Option<String>,
    kernel: Option<ktstr_kernel::Kernel>,
    scheduler: Option<(String, std::path::PathBuf, Vec<String>)>,
    verdict: Option<ktstr_ops::assert::AssertResult>,
    monitor: Option<ktstr_record::MonitorSummary>,
    steps: Vec<crate::results::StepStart>,
    phases: crate::results::Phases,
    dump: Option<ktstr_record::SchedulerDump>,
    bpf_progs: Vec<ktstr_record::ProgStats>,
}

/// Extra boot-to-init and watchdog time for a randomized (bzImage) boot:
/// its firmware path and decompressor took seconds to tens of seconds more
/// than a PVH boot of the vmlinux on a loaded 2-core host (README: KASLR).
const KASLR_BOOT_MARGIN: Duration = Duration::from_secs(30);

/// What the VMs of one run cost beyond the test's own work: how many booted
/// (the test's and, after a scheduler crash, auto-repro's probe VM) and how
/// long they waited for host slots (time a busy host adds, which no limit of
/// the test counts).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RunTally {
    /// VMs booted.
    pub boots: u32,
    /// Time spent waiting for host slots.
    pub slot_wait: Duration,
}

thread_local! {
    /// This thread's tally (a test and its probe VM run on one thread).
    static TALLY: std::cell::Cell<RunTally> = const {
        std::cell::Cell::new(RunTally { boots: 0, slot_wait: Duration::ZERO })
    };
}

/// Runs one test like [`run`] and tallies its VMs.
pub fn run_tallied(entry: &TestEntry, kernel: Option<&std::path::Path>) -> (Outcome, RunTally) {
    let before = TALLY.with(std::cell::Cell::get);
    let outcome = run(entry, kernel);
    let after = TALLY.with(std::cell::Cell::get);
    let tally = RunTally {
        boots: after.boots - before.boots,
        slot_wait: after.slot_wait - before.slot_wait,
    };
    (outcome, tally)
}

thread_local! {
    /// This thread's choice of start, over the host configuration's (tests
    /// of the restore path itself).
    static RESTORE: std::cell::Cell<Option<bool>> = const { std::cell::Cell::new(None) };
    /// How this thread's last test VM started.
    static LAST_START: std::cell::Cell<StartInfo> =
        const { std::cell::Cell::new(StartInfo { start: None, clock_skew_s: None, overhead: None }) };
}

/// How a test's VM started, for tests of boot once, restore many.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StartInfo {
    /// `"cold"` (booted) or `"restored"` (from a snapshot); `None` when no
    /// VM started.
    pub start: Option<&'static str>,
    /// The guest's `CLOCK_REALTIME` minus the host's as the guest's init
    /// started, in seconds.
    pub clock_skew_s: Option<f64>,
    /// What the run cost beyond the test's body: its wall time minus the
    /// body and the wait for host slots.
    pub overhead: Option<Duration>,
}

/// Runs one test like [`run`], restored from a snapshot (`true`) or booted
/// cold (`false`) whatever the configuration says; also says how its VM
/// started (`"cold"` or `"restored"`; a test that may not restore boots cold).
pub fn run_started(
    entry: &TestEntry,
    kernel: Option<&std::path::Path>,
    restore: bool,
) -> (Outcome, StartInfo) {
    RESTORE.with(|r| r.set(Some(restore)));
    LAST_START.with(|s| s.set(StartInfo::default()));
    let outcome = run(entry, kernel);
    RESTORE.with(|r| r.set(None));
    (outcome, LAST_START.with(std::cell::Cell::get))
}

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
}

/// Prepares, boots and watches one VM of `entry` (`probe_plan`: an
/// auto-repro probe VM's plan, JSON).
pub(crate) fn boot_once(
    host: &HostConfig,
    entry: &TestEntry,
    kernel: Option<&std::path::Path>,
    shape: Option<&ktstr_topology::Topology>,
    backend: &dyn ktstr_vmm::Backend,
    probe_plan: Option<&[u8]>,
) -> Result<Booted, RunError> {
    let t0 = Instant::now();
    TALLY.with(|t| {
        t.set(RunTally {
            boots: t.get().boots + 1,
            ..t.get()
        })
    });
    let cfg = &entry.config;
    let prepared = prepare::prepare(host, entry, kernel, shape, backend, probe_plan)?;
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
    let restore = RESTORE.with(|r| r.get()).unwrap_or(host.restore);
    let started = restore::start(host, backend, &prepared, restore).map_err(backend_err)?;
    let boot_at = Instant::now();
    let mut vm = started.vm;
    LAST_START.with(|s| {
        s.set(StartInfo {
            start: Some(started.start.as_str()),
            ..StartInfo::default()
        })
    });
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
    TALLY.with(|t| {
        t.set(RunTally {
            slot_wait: t.get().slot_wait + slot_wait,
            ..t.get()
        })
    });
    let mut monitor = crate::monitor::Session::start(
        crate::monitor::Plan {
            vmlinux: prepared.kernel.vmlinux.clone(),
            kaslr: prepared.kaslr,
            cache_root: host.cache_root.clone(),
            hz: host.monitor_hz,
            num_snapshots: cfg.num_snapshots,
            nr_cpus: prepared.topology.nr_cpus(),
        },
        vm.memory().clone(),
        boot_at,
    );
    let watched = watch::watch(vm.as_mut(), boot_at, limits, &mut monitor).map_err(backend_err)?;
    drop(vm);
    Ok(Booted {
        watched,
        monitor,
        slot_wait,
        initramfs,
        start: started.start,
        prepared,
    })
}

/// The failure text of a guest that never reached init.
fn no_init_text(after: Duration, console: &[String]) -> String {
    format!(
        "hung before init: the guest did not reach the harness's init within {:.0}s \
         (boot limit KTSTR_BOOT_TIMEOUT_S)\n{}",
        after.as_secs_f64(),
        verdict::quote(console)
    )
}

fn run_in(
    host: &HostConfig,
    entry: &TestEntry,
    kernel: Option<&std::path::Path>,
    shape: Option<&ktstr_topology::Topology>,
    t0: Instant,
    facts: &mut RunFacts,
) -> Result<Outcome, RunError> {
    let cfg = &entry.config;
    let backend = host.backend().map_err(|source| RunError::Backend {
        backend: "selection".into(),
        source,
    })?;
    facts.backend = Some(backend.name());
    // Probes on request: checked before any VM boots; none without the key.
    let on_request = match probes::plan(host, entry, kernel) {
        Ok(p) => p,
        Err(e) => return Ok(Outcome::Fail(e)),
    };
    let plan_json = on_request
        .as_ref()
        .map(|(plan, _)| serde_json::to_vec(plan).expect("a probe plan serializes"));
    let mut booted = boot_once(
        host,
        entry,
        kernel,
        shape,
        backend.as_ref(),
        plan_json.as_deref(),
    )?;
    facts.kernel = Some(booted.prepared.kernel.clone());
    facts.scheduler = booted.prepared.scheduler.take();
    let topo = booted.prepared.topology.to_string();
    facts.topology = Some(topo.clone());
    let (slot_wait, initramfs) = (booted.slot_wait, booted.initramfs);
    facts.phases.initramfs = initramfs;
    facts.phases.slot_wait = slot_wait;
    facts.phases.start = Some(booted.start.record());
    let (observed, times) = match booted.watched {
        Watched::Done(observed, times) => {
            facts.phases.boot_to_init = times.boot_to_init;
            facts.phases.body = times.body;
            facts.phases.teardown = times.teardown;
            facts.steps = times.steps.clone();
            facts.phases.verdict_at = times.verdict_at;
            facts.phases.clock_skew = times.clock_skew;
            LAST_START.with(|s| {
                s.set(StartInfo {
                    clock_skew_s: times.clock_skew,
                    ..s.get()
                })
            });
            facts.verdict = observed.verdict.as_ref().map(|(v, _)| v.clone());
            (observed, times)
        }
        // No retry: a guest that never reaches init is a failure to look at
        // (the kernel's or the VMM's), not noise to boot past.
        Watched::NoInit { after, console } => {
            return Ok(Outcome::Fail(no_init_text(after, &console)));
        }
    };
    // The monitor's checks over the body's samples join the verdict.
    let finished = booted.monitor.finish();
    let mut observed = observed;
    observed.monitor = monitor_findings(entry, &booted.prepared, &finished);
    let outcome = verdict::judge(
        &observed,
        &Expectation {
            expect_err: cfg.expect_err,
            expect_err_matching: cfg.expect_err_matching,
            allow_inconclusive: cfg.allow_inconclusive || host.allow_inconclusive,
            watchdog_timeout_s: cfg.watchdog_timeout_s,
        },
    );
    // The host's own checks of what the monitor saw (post_vm).
    facts.monitor = Some(crate::monitor::summary_record(&finished.log));
    facts.dump = finished.dump.clone();
    facts.bpf_progs = times
        .bpf_progs
        .as_ref()
        .map(crate::dump::prog_stats)
        .unwrap_or_default();
    if (cfg.dump || host.dump) && !facts.bpf_progs.is_empty() {
        let text = crate::dump::progs_text(entry.name, &facts.bpf_progs);
        let _ = std::io::stderr().write_all(text.as_bytes());
    }
    let report = on_request
        .as_ref()
        .map(|(plan, sources)| probes::report(plan, sources, observed.probe.as_ref()));
    if let Some(Ok(r)) = &report {
        // Straight to the stream, like the line below: a passing run's too.
        let _ = std::io::stderr().write_all(r.text.as_bytes());
    }
    let outcome = probes::fold(outcome, report.as_ref());
    let outcome = crate::monitor::judge_vm(
        entry,
        &observed,
        outcome,
        finished,
        &times.steps,
        report.and_then(Result::ok),
    );
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
    Ok(repro::after(
        host,
        entry,
        kernel,
        shape,
        backend.as_ref(),
        &observed,
        outcome,
    ))
}
