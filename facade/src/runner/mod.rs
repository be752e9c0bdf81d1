//! The host side of one `#[ktstr_test]`, orchestration only: prepare the
//! VM, take host slots, boot through the backend interface, follow it to
//! its end, judge, record. The runner never knows which backend runs.

mod prepare;
mod repro;
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

/// Runs one test in a VM booting `kernel` (default: the host configuration's).
pub fn run(entry: &TestEntry, kernel: Option<&std::path::Path>) -> Outcome {
    let t0 = Instant::now();
    let host = match HostConfig::global() {
        Ok(h) => h,
        Err(e) => return Outcome::Fail(RunError::from(e).to_string()),
    };
    match run_in(host, entry, kernel, t0) {
        Ok(outcome) => outcome,
        Err(e) => Outcome::Fail(e.to_string()),
    }
}

thread_local! {
    /// VMs booted by this thread (a test and its probe VM run on one thread).
    static BOOTS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Runs one test like [`run`] and counts the VMs it booted.
pub fn run_counting_boots(entry: &TestEntry, kernel: Option<&std::path::Path>) -> (Outcome, u32) {
    let before = BOOTS.with(std::cell::Cell::get);
    let outcome = run(entry, kernel);
    (outcome, BOOTS.with(std::cell::Cell::get) - before)
}

/// One VM of a test, booted and followed to its end.
pub(crate) struct Booted {
    pub(crate) watched: Watched,
    pub(crate) monitor: crate::monitor::Session,
    pub(crate) topo: String,
    pub(crate) slot_wait: Duration,
    pub(crate) initramfs: Duration,
}

/// Prepares, boots and watches one VM of `entry` (`probe_plan`: an
/// auto-repro probe VM's plan, JSON).
pub(crate) fn boot_once(
    host: &HostConfig,
    entry: &TestEntry,
    kernel: Option<&std::path::Path>,
    backend: &dyn ktstr_vmm::Backend,
    probe_plan: Option<&[u8]>,
) -> Result<Booted, RunError> {
    let t0 = Instant::now();
    BOOTS.with(|b| b.set(b.get() + 1));
    let cfg = &entry.config;
    let prepared = prepare::prepare(host, entry, kernel, backend, probe_plan)?;
    let initramfs = t0.elapsed();
    let topo = prepared.topology.to_string();
    let limits = Limits {
        boot_to_init: host.boot_timeout,
        watchdog: Duration::from_secs(u64::from(cfg.watchdog_timeout_s)),
        echo_console: host.verbose,
    };
    let backend_err = |source| RunError::Backend {
        backend: backend.name(),
        source,
    };
    // The backend takes the host slots first; the boot clock starts after.
    let mut vm = backend.boot(&prepared.spec).map_err(backend_err)?;
    let boot_at = Instant::now();
    let slot_wait = vm.slot_wait();
    let mut monitor = crate::monitor::Session::start(
        crate::monitor::Plan {
            vmlinux: prepared.spec.kernel.clone(),
            cache_root: host.cache_root.clone(),
            hz: host.monitor_hz,
            num_snapshots: cfg.num_snapshots,
            duration: Duration::from_secs(u64::from(cfg.duration_s)),
        },
        vm.memory().clone(),
        boot_at,
    );
    let watched = watch::watch(vm.as_mut(), boot_at, limits, &mut monitor).map_err(backend_err)?;
    drop(vm);
    Ok(Booted {
        watched,
        monitor,
        topo,
        slot_wait,
        initramfs,
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
    t0: Instant,
) -> Result<Outcome, RunError> {
    let cfg = &entry.config;
    let backend = host.backend().map_err(|source| RunError::Backend {
        backend: "selection".into(),
        source,
    })?;
    let booted = boot_once(host, entry, kernel, backend.as_ref(), None)?;
    let (topo, slot_wait, initramfs) = (booted.topo, booted.slot_wait, booted.initramfs);
    let (observed, times) = match booted.watched {
        Watched::Done(observed, times) => (observed, times),
        // No retry: a guest that never reaches init is a failure to look at
        // (the kernel's or the VMM's), not noise to boot past.
        Watched::NoInit { after, console } => {
            return Ok(Outcome::Fail(no_init_text(after, &console)));
        }
    };
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
    let outcome = crate::monitor::judge_vm(entry, &observed, outcome, booted.monitor.finish());
    let total = t0.elapsed();
    let line = format!(
        "ktstr: {} [{topo}] on {}: initramfs {:.0}ms, slot wait {:.2}s, boot-to-init {}, body {}, teardown {}, total {:.2}s\n",
        entry.name,
        backend.name(),
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
    let outcome = repro::after(host, entry, kernel, backend.as_ref(), &observed, outcome);
    if let Some(path) = &host.results {
        crate::results::record(path, entry, &topo, &outcome, t0.elapsed());
    }
    Ok(outcome)
}
