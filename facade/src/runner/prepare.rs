//! Everything a test VM needs before it boots: the topology, the kernel,
//! the schedulers, the guest configuration and the initramfs.

use ktstr_initramfs::{Archive, BaseSpec, InitrdFile};
use ktstr_ops::channel;
use ktstr_ops::{CONFIG_PATH, GuestConfig, INIT_ENVIRONMENT, KERNEL_CONFIG_PATH, TopologyData};
use ktstr_topology::Topology;
use ktstr_vmm::{Backend, ReservedRegion, VmSpec};

use crate::config::HostConfig;
use crate::error::RunError;
use crate::registry::TestEntry;

/// Kernel arguments that keep the guest free of boot-time background work
/// that would compete with a test's workers.
///
/// `cryptomgr.notests=1`: the Debian kernel (`CONFIG_CRYPTO_SELFTESTS=y`)
/// runs its crypto self-tests in `cryptomgr_test` kernel threads that, under
/// TCG, kept two vCPUs busy for about 7 s after init (guest uptime 5.6 s to
/// 12 s on 1n1l2c1t, measured with `ktstr shell`): root-cgroup hogs beside
/// the workers, which skewed every check run early in a guest (weighted
/// cgroups got 5:1 for 3:1). Without them init is also reached ~2 s sooner.
const QUIET_GUEST: &str = "cryptomgr.notests=1";

/// The VM of `kernel`, randomized or not: with `kaslr` the bzImage, whose
/// decompressor applies KASLR, and a command line without `nokaslr`; else the
/// ELF vmlinux, which a PVH boot runs at its link address. Either way the
/// command line starts the guest's `/init` in a quiet guest ([`QUIET_GUEST`])
/// with its environment. `Err` carries the vmlinux when a randomized boot
/// has no bzImage to boot.
pub(crate) fn vm_spec_of(
    kernel: &ktstr_kernel::Kernel,
    topology: Topology,
    kaslr: bool,
) -> Result<VmSpec, std::path::PathBuf> {
    let mut spec = if kaslr {
        let bz = kernel
            .bz_image
            .clone()
            .filter(|p| p.is_file())
            .ok_or_else(|| kernel.vmlinux.clone())?;
        let mut spec = VmSpec::new(&bz, topology);
        spec.cmdline = spec
            .cmdline
            .split_whitespace()
            .filter(|w| *w != "nokaslr")
            .collect::<Vec<_>>()
            .join(" ");
        spec
    } else {
        VmSpec::new(&kernel.vmlinux, topology)
    };
    spec.cmdline
        .push_str(&format!(" rdinit=/init {QUIET_GUEST} {INIT_ENVIRONMENT}"));
    Ok(spec)
}

/// A recorded VM's seed and clock: a new seed per run, so that recorded runs
/// of one test differ as runs do (each is repeatable by its own seed), and
/// the guest's clock starting at the host's wall clock.
fn deterministic_inputs() -> ktstr_vmm::Deterministic {
    use std::hash::{BuildHasher, Hasher};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    // RandomState is seeded from the OS's entropy per process; the time and
    // the pid tell apart the runs of one process.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(now.as_nanos());
    h.write_u32(std::process::id());
    ktstr_vmm::Deterministic {
        seed: h.finish() >> 1,
        rtc_base: crate::results::utc_datetime(now.as_secs()),
        gate: None,
    }
}

/// A test VM ready to boot.
pub(crate) struct Prepared {
    pub(crate) spec: VmSpec,
    pub(crate) topology: Topology,
    /// The kernel it boots.
    pub(crate) kernel: ktstr_kernel::Kernel,
    /// The booted sched_ext scheduler: name, host binary, arguments.
    pub(crate) scheduler: Option<(String, std::path::PathBuf, Vec<String>)>,
    /// Booted from the bzImage with KASLR on (else the vmlinux, `nokaslr`).
    pub(crate) kaslr: bool,
    /// Run deterministically and recorded ([`crate::recording`]).
    pub(crate) record: bool,
    /// Whether the backend vouches for the guest's timing (as the guest was told).
    pub(crate) timing_reliable: bool,
    /// vCPUs sharing one host thread (as the guest was told).
    pub(crate) vcpus_per_thread: u32,
    /// The initrd file; kept until the VM is gone.
    pub(crate) _initrd: InitrdFile,
    /// The base archive the initrd starts with (test binary, libraries,
    /// scheduler binaries): what a restore agent boots from.
    pub(crate) base: ktstr_initramfs::Base,
    /// The per-test overlay (plain cpio): what a restored agent unpacks.
    pub(crate) overlay: Vec<u8>,
}

/// The topology `entry` runs on: a gauntlet preset's, else its declared one.
fn topology_of(entry: &TestEntry, preset: Option<&Topology>) -> Result<Topology, RunError> {
    let c = &entry.config;
    let shape = match preset {
        Some(t) => *t,
        None => Topology::new(c.numa_nodes, c.llcs, c.cores, c.threads)?,
    };
    Ok(shape.with_memory_mib(c.memory_mib)?)
}

/// The kernel and the schedulers of one test, resolved once: the VM, the
/// probes' plan and auto-repro's probe VM all use these.
pub(crate) struct Resolved {
    /// The kernel the test boots.
    pub(crate) kernel: ktstr_kernel::Kernel,
    /// The booted sched_ext scheduler and its host binary (a run-wide
    /// `KTSTR_SCHEDULER` replaces the declared one's).
    pub(crate) boot: Option<(crate::registry::Scheduler, std::path::PathBuf)>,
    /// The staged schedulers that resolve to a binary.
    pub(crate) staged: Vec<(&'static crate::registry::Scheduler, std::path::PathBuf)>,
}

/// Resolves `entry`'s kernel (`kernel`, else the host configuration's) and
/// schedulers on the host.
pub(crate) fn resolve(
    host: &HostConfig,
    entry: &TestEntry,
    kernel: Option<&std::path::Path>,
) -> Result<Resolved, RunError> {
    let cfg = &entry.config;
    let kernel = host.resolve_kernel(ktstr_kernel::KernelSpec::of_path(kernel).as_ref())?;
    // A run-wide replacement binary (KTSTR_SCHEDULER) takes the declared
    // one's place; it must exist like a declared path.
    let boot = match (
        cfg.scheduler.filter(|s| s.is_sched_ext()),
        &host.scheduler_binary,
    ) {
        (Some(s), Some(bin)) if bin.is_file() => Some((s, bin.clone())),
        (Some(s), Some(bin)) => {
            return Err(crate::SchedulerSetupError::MissingPath {
                name: s.name.into(),
                path: bin.clone(),
            }
            .into());
        }
        (Some(s), None) => {
            crate::schedulers::resolve(&s, &host.path, &host.cache_root)?.map(|p| (s, p))
        }
        (None, _) => None,
    };
    let mut staged = Vec::new();
    for s in cfg.staged_schedulers {
        if let Some(p) = crate::schedulers::resolve(s, &host.path, &host.cache_root)? {
            staged.push((s, p));
        }
    }
    Ok(Resolved {
        kernel,
        boot,
        staged,
    })
}

/// Builds the VM description of `entry` over what [`resolve`] found.
pub(crate) fn prepare(
    host: &HostConfig,
    entry: &TestEntry,
    resolved: &Resolved,
    preset: Option<&Topology>,
    backend: &dyn Backend,
    probe_plan: Option<&[u8]>,
    record: bool,
) -> Result<Prepared, RunError> {
    let cfg = &entry.config;
    let topology = topology_of(entry, preset)?;
    let node0_mib = u64::from(topology.node_memory_mib(0).unwrap_or(0));
    let channel_end_mib = (channel::CHANNEL_GPA + channel::CHANNEL_SIZE) >> 20;
    let need_mib = channel::MIN_GUEST_MIB.max(channel_end_mib + 16);
    if node0_mib < need_mib {
        return Err(RunError::MemoryTooSmall {
            memory_mib: cfg.memory_mib,
            node0_mib,
            need_mib,
        });
    }
    let kernel = resolved.kernel.clone();
    let exe = std::env::current_exe().map_err(RunError::TestBinary)?;
    let cache = host.initramfs_cache()?;
    // Schedulers: resolved on the host, checked against the kernel, packed.
    let boot = resolved.boot.clone();
    let staged = &resolved.staged;
    let verifier_offsets = if boot.is_some() || !staged.is_empty() {
        crate::schedulers::check_kernel(&kernel.vmlinux)?
    } else {
        None
    };
    let mut overlay = Archive::new();
    let base_spec = crate::schedulers::pack(
        boot.as_ref().map(|(s, p)| (s, p.clone())),
        &host.sched_args,
        staged,
        BaseSpec::new().binary(exe, "/init"),
        &mut overlay,
    )?;
    // The kernel config, which the guest places at /boot/config-$(uname -r)
    // for libbpf's __kconfig externs (the Debian kernel has no IKCONFIG).
    if let Some(config) = kernel.config.as_ref().filter(|c| c.is_file()) {
        overlay.add_file(KERNEL_CONFIG_PATH, 0o644, config)?;
    }
    let base = cache.base(&base_spec)?;
    // KASLR is applied by the bzImage's decompressor: a PVH boot of the ELF
    // vmlinux always runs at the link address.
    let kaslr = host.kaslr || cfg.kaslr;
    let mut spec =
        vm_spec_of(&kernel, topology, kaslr).map_err(|vmlinux| RunError::NoBzImage { vmlinux })?;
    spec.host_threads = Some(host.host_cpus);
    spec.tcg = host.tcg;
    let guest_cfg = GuestConfig {
        test: entry.name.to_string(),
        topology: TopologyData::of(&topology),
        duration_ms: u64::from(cfg.duration_s) * 1000,
        num_snapshots: cfg.num_snapshots,
        timing_reliable: backend.timing_reliable(&spec),
        vcpus_per_thread: topology
            .nr_cpus()
            .div_ceil(u32::try_from(backend.host_threads(&spec).max(1)).unwrap_or(u32::MAX)),
        channel_gpa: channel::CHANNEL_GPA,
        channel_size: channel::CHANNEL_SIZE,
        boot_scheduler: boot.as_ref().map(|(s, _)| s.name.to_string()),
        cleanup_budget_ms: cfg.cleanup_budget_ms,
        dump: cfg.dump || host.dump,
        verifier_offsets,
        record,
    };
    let json = serde_json::to_vec(&guest_cfg).expect("the guest config serializes");
    overlay.add_bytes(CONFIG_PATH, 0o644, json)?;
    // An auto-repro probe VM: the guest entry installs these probes.
    if let Some(plan) = probe_plan {
        overlay.add_bytes(ktstr_probe::guest::PLAN_PATH, 0o644, plan.to_vec())?;
    }
    let overlay = overlay.to_vec()?;
    let initrd = base.with_overlay(&overlay)?;

    spec.initrd = Some(initrd.path().to_path_buf());
    // The scheduler's counters (yld_count, sched_count, ttwu_count, ...) count
    // only with schedstats on; the monitor reads them per CPU.
    spec.cmdline.push_str(" schedstats=enable");
    spec.reserved.push(ReservedRegion {
        gpa: channel::CHANNEL_GPA,
        size: channel::CHANNEL_SIZE,
    });
    spec.name = format!(
        "ktstr-{}-{}",
        std::process::id(),
        entry.name.replace("::", "-")
    );
    if record {
        spec.deterministic = Some(deterministic_inputs());
    }
    let scheduler = boot.map(|(s, p)| {
        let args = s.sched_args.iter().map(|a| a.to_string());
        (
            s.name.to_string(),
            p,
            args.chain(host.sched_args.iter().cloned()).collect(),
        )
    });
    Ok(Prepared {
        spec,
        topology,
        kernel,
        scheduler,
        kaslr,
        record,
        timing_reliable: guest_cfg.timing_reliable,
        vcpus_per_thread: guest_cfg.vcpus_per_thread,
        _initrd: initrd,
        base,
        overlay,
    })
}
