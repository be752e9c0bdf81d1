//! The guest entry: in the guest the test binary is PID 1. The `.init_array`
//! constructor of every `#[ktstr_test]` calls [`guest_ctor`], which turns the
//! process into the guest's init and hands the test over to `ops`.

use std::sync::atomic::{AtomicBool, Ordering};

use ktstr_ops::GuestConfig;
use ktstr_ops::Supervisor;

use crate::registry;
use crate::scenario::Ctx;

/// In the guest's PID 1 becomes the init and never returns; elsewhere it
/// returns at once and the binary behaves as a normal test binary.
pub fn guest_ctor() {
    static ONCE: AtomicBool = AtomicBool::new(false);
    if ONCE.swap(true, Ordering::SeqCst) {
        return;
    }
    // `cargo ktstr archive` asks the host binary what schedulers its tests declare.
    if let Some(file) = std::env::var_os(crate::test_support::LIST_SCHEDULERS_ENV) {
        let list = crate::test_support::declared_schedulers();
        let code = match serde_json::to_vec(&list).map(|j| std::fs::write(&file, j)) {
            Ok(Ok(())) => 0,
            Ok(Err(e)) => {
                eprintln!(
                    "ktstr: writing {}: {e}",
                    std::path::Path::new(&file).display()
                );
                1
            }
            Err(e) => {
                eprintln!("ktstr: listing the declared schedulers: {e}");
                1
            }
        };
        std::process::exit(code);
    }
    // Booted to become a snapshot: wait for a restore's hand-off, then exec
    // /init, which comes back here as the test's init.
    if ktstr_ops::is_agent() {
        ktstr_ops::run_as_agent();
    }
    if !ktstr_ops::is_guest_init() {
        return;
    }
    ktstr_ops::run_as_init(&|name| {
        let entry = registry::find(name)?;
        // In an auto-repro probe VM: the probes go in before the scheduler
        // starts, and their records go to the host when the run ends (also
        // when the scheduler dies before the body).
        if let Some(cap) = probe_plan().map(|plan| ktstr_probe::guest::install(&plan)) {
            ktstr_ops::on_run_end(Box::new(move |cfg| {
                let mut cap = cap.clone();
                ktstr_probe::guest::collect(&mut cap);
                let data = serde_json::to_value(&cap).unwrap_or_default();
                let msg = ktstr_ops::channel::Message::ProbeRecords(data);
                if !ktstr_ops::send_from_body(cfg, &msg) {
                    eprintln!("ktstr-init: could not send the probe records to the host");
                }
            }));
        }
        let body = move |cfg: &GuestConfig, sup: &Supervisor| {
            let mut ctx = context(cfg, sup)?;
            // Thresholds, layer two of three: the scheduler's declaration.
            if let Some(s) = &entry.config.scheduler {
                ctx.thresholds = s.layer_thresholds(ctx.thresholds);
            }
            // Creates the cgroup root before the body and removes it after.
            ctx.run(entry.func)
        };
        Some(Box::new(body))
    })
}

/// The probe plan the runner packed, in a probe VM.
fn probe_plan() -> Option<ktstr_probe::Plan> {
    let bytes = std::fs::read(ktstr_probe::guest::PLAN_PATH).ok()?;
    match serde_json::from_slice(&bytes) {
        Ok(p) => Some(p),
        Err(e) => {
            eprintln!("ktstr-init: {}: {e}", ktstr_probe::guest::PLAN_PATH);
            None
        }
    }
}

/// The body's context: the declared topology (memory and distances
/// included), the duration, the timing verdict and the run's scheduler.
fn context(cfg: &GuestConfig, sup: &Supervisor) -> anyhow::Result<Ctx> {
    let topology = cfg
        .topology
        .to_topology()
        .map_err(|e| anyhow::anyhow!("guest config topology {:?}: {e}", cfg.topology))?;
    Ok(
        Ctx::new(topology, std::time::Duration::from_millis(cfg.duration_ms))
            .with_timing_reliable(cfg.timing_reliable)
            .with_vcpus_per_thread(cfg.vcpus_per_thread)
            .with_scheduler(sup.clone()),
    )
}
