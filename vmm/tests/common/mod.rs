//! What every VM test shares: the host-wide CPU slots, so these tests never
//! run more busy vCPU threads than the host has cores alongside other VMs.

#![allow(dead_code)]

use ktstr_vmm::{HostSlots, SlotGuard};

/// The slots of this host, sized like the facade sizes them.
pub fn host_slots() -> HostSlots {
    let cores = std::env::var("KTSTR_HOST_CPUS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    HostSlots::new(HostSlots::default_dir(), cores)
}

/// Takes `threads` slots until the guard drops.
pub fn take_slots(threads: u32) -> SlotGuard {
    host_slots()
        .acquire(threads as usize)
        .expect("host CPU slots")
}
