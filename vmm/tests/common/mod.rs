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

/// The kernel: `$KTSTR_KERNEL` (a path or a cached version), else the newest
/// cached release.
pub fn kernel() -> std::path::PathBuf {
    let var = |k: &str| std::env::var_os(k).map(std::path::PathBuf::from);
    let spec = std::env::var("KTSTR_KERNEL").ok();
    ktstr_kernel::vmlinux_for_tests(
        spec.as_deref(),
        var("KTSTR_CACHE_DIR").as_deref(),
        var("XDG_CACHE_HOME").as_deref(),
        var("HOME").as_deref(),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Where the restore tests' host writes its "go" word (a reserved range, like
/// the channel's).
pub const GO_GPA: u64 = 0x0600_0000;
/// The word that releases their agents.
pub const GO: u32 = 0x600d_f00d;
/// Their payload region.
pub const PAYLOAD_BYTES: u64 = 16 << 20;

/// A busybox initramfs in `dir` whose `/init` is `agent` (a shell script).
pub fn agent_initramfs(dir: &std::path::Path, agent: &str) -> std::path::PathBuf {
    let busybox = std::fs::read("/bin/busybox")
        .expect("/bin/busybox: this test's agent is a busybox script (apt install busybox-static)");
    let mut cpio = Vec::new();
    for (i, d) in ["bin", "dev", "sys", "proc", "tmp"].iter().enumerate() {
        cpio_entry(&mut cpio, i as u32 + 1, d, 0o040_755, &[]);
    }
    cpio_entry(&mut cpio, 10, "bin/busybox", 0o100_755, &busybox);
    cpio_entry(&mut cpio, 11, "init", 0o100_755, agent.as_bytes());
    cpio_entry(&mut cpio, 0, "TRAILER!!!", 0, &[]);
    let path = dir.join("agent.cpio");
    std::fs::write(&path, cpio).expect("write the initramfs");
    path
}

/// The restore tests' VM: the cached kernel, `topo`, the agent initramfs, the
/// go word's reserved range and a payload region.
pub fn agent_spec(dir: &std::path::Path, topo: &str, agent: &str) -> ktstr_vmm::VmSpec {
    let mut spec = ktstr_vmm::VmSpec::new(kernel(), topo.parse().expect("topology"));
    spec.initrd = Some(agent_initramfs(dir, agent));
    spec.cmdline.push_str(" rdinit=/init");
    spec.reserved.push(ktstr_vmm::ReservedRegion {
        gpa: GO_GPA,
        size: 4 << 20,
    });
    spec.payload_bytes = PAYLOAD_BYTES;
    spec
}
