//! The VM backend interface, the purpose-built KVM VMM and the QEMU backend.
//!
//! The facade's runner describes a VM once — kernel, initramfs, command line,
//! the declared [`Topology`](ktstr_topology::Topology), reserved regions — as a
//! [`VmSpec`], boots it through a [`Backend`] and talks to the running
//! [`Machine`] without knowing which backend runs it: guest physical memory
//! mapped on the host, pause and resume, the serial console as a stream of
//! lines, how the guest ended, kill.
//!
//! This crate moves bytes and runs vCPUs. It knows nothing of tests,
//! schedulers, BTF or the host-guest channel's message format.
//!
//! Embedding: pick the backend for this host ([`select_backend`]: the KVM VMM
//! with hardware virtualization, QEMU elsewhere, unless the caller's
//! [`BackendChoice`] says otherwise), boot a kernel with a topology, read the
//! console, stop. This crate reads no environment: every setting is a value.
//!
//! ```no_run
//! use std::time::{Duration, Instant};
//! use ktstr_topology::Topology;
//! use ktstr_vmm::{
//!     BackendChoice, Console, EndReason, HostSlots, QemuBackend, VmSpec, select_backend,
//! };
//!
//! // 2 NUMA nodes, 2 LLCs each, 2 cores per LLC, 2 SMT threads: 16 CPUs.
//! let topology: Topology = "2n4l2c2t".parse()?;
//! let mut spec = VmSpec::new("/path/to/vmlinux", topology);
//! spec.initrd = Some("/path/to/initramfs.cpio".into());
//! spec.cmdline.push_str(" rdinit=/init");
//! let slots = HostSlots::new(HostSlots::default_dir(), 2);
//! let backend = select_backend(
//!     BackendChoice::Auto,
//!     || QemuBackend::new("/usr/bin/qemu-system-x86_64"),
//!     slots,
//! )?;
//! println!("booting on {}", backend.name());
//! let mut vm = backend.boot(&spec)?;
//! let console: Console = vm.take_console().expect("console is captured");
//! while let Some(line) = console.next_line(Duration::from_secs(30)) {
//!     println!("guest: {line}");
//!     if line.contains("ready") {
//!         vm.pause()?; // every vCPU parked: guest memory holds still
//!         println!("{} bytes of guest RAM mapped", vm.memory().iter().map(|r| r.len()).sum::<u64>());
//!         vm.resume()?;
//!     }
//! }
//! match vm.wait(Some(Instant::now() + Duration::from_secs(60)))? {
//!     EndReason::PowerOff => println!("clean power-off"),
//!     other => println!("ended: {other}"),
//! }
//! vm.kill(); // idempotent; dropping the machine does the same
//! # use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [`KvmBackend`] (x86-64) adds what only an in-process VMM can offer: its
//! [`KvmVm`] gives the second serial port and per-vCPU registers (CR3, GS base).

mod backend;
mod console;
mod error;
#[cfg(target_arch = "x86_64")]
pub mod kvm;
mod memory;
pub mod qemu;
mod slots;
mod spec;

pub use backend::{Backend, EndReason, Machine, VcpuRegs, hardware_virtualization};
pub use console::{Console, ConsoleEvent};
pub use error::{KvmStateError, QemuVersionError, VmmError};
#[cfg(target_arch = "x86_64")]
pub use kvm::{
    KVM_PAYLOAD_GPA, KVM_PAYLOAD_MAX, KvmBackend, KvmBackendBuilder, KvmVm, MACHINE_CMDLINE,
    NO_HW_VIRT_REASON, PAYLOAD_CMDLINE_PARAM,
};
pub use memory::{GuestRam, RamRegion, pc_ram_layout};
pub use qemu::QemuBackend;
pub use slots::{HostSlots, SlotGuard, Slotted};
pub use spec::{
    ConsoleMode, Deterministic, PAYLOAD_PCI_ID, ReservedRegion, TcgGate, TcgMode, VmSpec,
};

/// Guest physical memory as the host sees it (vm-memory's mmap-backed collection).
pub use vm_memory::GuestMemoryMmap;

/// Which backend to run VMs on, as the caller's configuration says
/// (`KTSTR_BACKEND` in the facade's host configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BackendChoice {
    /// The KVM VMM with hardware virtualization, QEMU (TCG) elsewhere.
    #[default]
    Auto,
    /// The own KVM VMM.
    Kvm,
    /// QEMU.
    Qemu,
}

impl std::str::FromStr for BackendChoice {
    type Err = VmmError;
    fn from_str(s: &str) -> Result<Self, VmmError> {
        match s.trim() {
            "" | "auto" => Ok(BackendChoice::Auto),
            "kvm" => Ok(BackendChoice::Kvm),
            "qemu" => Ok(BackendChoice::Qemu),
            other => Err(VmmError::InvalidSpec(format!(
                "backend {other:?}: expected `kvm`, `qemu` or `auto`"
            ))),
        }
    }
}

/// The backend for this host: the KVM VMM ([`KvmBackend`]) where the host has
/// hardware virtualization, else QEMU (TCG) running `qemu`. A forced
/// [`BackendChoice::Kvm`] without hardware virtualization still returns the
/// KVM VMM (tiny guests run on a software `/dev/kvm`) and says on stderr why
/// a Linux guest will not boot. QEMU is only looked at when it is chosen.
/// Every VM of the returned backend takes host CPU `slots` first.
pub fn select_backend(
    choice: BackendChoice,
    qemu: impl FnOnce() -> Result<QemuBackend, VmmError>,
    slots: HostSlots,
) -> Result<Box<dyn Backend>, VmmError> {
    match choose_backend(choice, hardware_virtualization()) {
        #[cfg(target_arch = "x86_64")]
        Choice::Kvm { warn } => {
            let backend = KvmBackend::new()?;
            if let Some(why) = warn {
                eprintln!("ktstr: {why}");
            }
            Ok(Box::new(Slotted::new(backend, slots)))
        }
        #[cfg(not(target_arch = "x86_64"))]
        Choice::Kvm { .. } => Err(VmmError::InvalidSpec(
            "backend kvm: the KVM VMM is x86-64 only for now".into(),
        )),
        Choice::Qemu => Ok(Box::new(Slotted::new(qemu()?, slots))),
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Choice {
    Kvm { warn: Option<String> },
    Qemu,
}

/// The decision of [`select_backend`], from the choice and the CPU flags.
fn choose_backend(choice: BackendChoice, hardware: bool) -> Choice {
    match choice {
        BackendChoice::Auto if hardware => Choice::Kvm { warn: None },
        BackendChoice::Auto => Choice::Qemu,
        BackendChoice::Kvm if hardware => Choice::Kvm { warn: None },
        BackendChoice::Kvm => Choice::Kvm {
            warn: Some(format!(
                "backend kvm on a host with {}: /dev/kvm is a software hypervisor here, \
                 so a Linux guest will not boot in useful time (tiny guests run); unset \
                 KTSTR_BACKEND to use QEMU",
                no_hw_reason()
            )),
        },
        BackendChoice::Qemu => Choice::Qemu,
    }
}

fn no_hw_reason() -> &'static str {
    "no hardware virtualization (no vmx/svm in /proc/cpuinfo)"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_choice_follows_the_host_and_the_override() {
        let parse = |s: &str| s.parse::<BackendChoice>().expect(s);
        assert_eq!(choose_backend(parse(""), true), Choice::Kvm { warn: None });
        assert_eq!(choose_backend(parse("auto"), false), Choice::Qemu);
        assert_eq!(choose_backend(parse("qemu"), true), Choice::Qemu);
        assert_eq!(
            choose_backend(parse("kvm"), true),
            Choice::Kvm { warn: None }
        );
        let Choice::Kvm { warn: Some(why) } = choose_backend(parse("kvm"), false) else {
            panic!("a forced kvm without hardware virtualization warns");
        };
        assert!(
            why.contains("no vmx/svm in /proc/cpuinfo") && why.contains("will not boot"),
            "{why}"
        );
        let err = "xen".parse::<BackendChoice>().expect_err("unknown backend");
        assert!(err.to_string().contains("\"xen\""), "{err}");
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_reason_is_the_one_the_kvm_backend_gives() {
        assert_eq!(no_hw_reason(), NO_HW_VIRT_REASON);
    }
}
