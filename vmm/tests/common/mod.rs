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

/// A newc cpio entry (Documentation/driver-api/early-userspace/buffer-format.rst).
pub fn cpio_entry(out: &mut Vec<u8>, ino: u32, name: &str, mode: u32, data: &[u8]) {
    let fields = [
        ino,
        mode,
        0,
        0,
        1,
        0,
        data.len() as u32,
        0,
        0,
        0,
        0,
        name.len() as u32 + 1,
        0,
    ];
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
    out.extend_from_slice(data);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// The kernel: `$KTSTR_KERNEL` (a vmlinux, or a directory holding one),
/// else the first cached `vmlinux`.
pub fn kernel() -> std::path::PathBuf {
    if let Some(k) = std::env::var_os("KTSTR_KERNEL") {
        let k = std::path::PathBuf::from(k);
        return if k.is_dir() { k.join("vmlinux") } else { k };
    }
    let cache = std::env::var_os("KTSTR_CACHE_DIR")
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cache/ktstr"))
        })
        .expect("KTSTR_CACHE_DIR or HOME");
    let kernels = cache.join("kernels");
    std::fs::read_dir(&kernels)
        .unwrap_or_else(|e| panic!("{}: {e}; run `cargo xtask kernel fetch`", kernels.display()))
        .filter_map(Result::ok)
        .map(|d| d.path().join("vmlinux"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "no vmlinux under {}; run `cargo xtask kernel fetch`",
                kernels.display()
            )
        })
}
