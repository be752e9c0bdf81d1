//! The interface every VM backend implements.

use std::fmt;
use std::time::Instant;

use crate::{Console, GuestMemoryMmap, VmSpec, VmmError};

/// How a VM ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EndReason {
    /// The guest powered off (`reboot(RB_POWER_OFF)`).
    PowerOff,
    /// The guest kernel panicked; the console lines around the panic.
    Panic {
        /// The panic message and the lines after it.
        lines: Vec<String>,
    },
    /// The guest reset itself (a triple fault, or `reboot` without power-off).
    Reset,
    /// The deadline passed before the guest ended; the VM was killed.
    Timeout,
    /// The harness killed the VM.
    Killed,
    /// The VM process died on its own.
    Crashed {
        /// What is known: exit status and the backend's last words.
        detail: String,
    },
}

impl fmt::Display for EndReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndReason::PowerOff => f.write_str("guest powered off"),
            EndReason::Panic { lines } => {
                let headline = lines
                    .iter()
                    .find(|l| l.contains("Kernel panic"))
                    .or(lines.first())
                    .map(String::as_str)
                    .unwrap_or("(no console output)");
                write!(f, "guest kernel panic: {}", headline.trim())
            }
            EndReason::Reset => f.write_str("guest reset (triple fault or reboot)"),
            EndReason::Timeout => f.write_str("guest did not finish before the deadline"),
            EndReason::Killed => f.write_str("VM killed by the harness"),
            EndReason::Crashed { detail } => write!(f, "VM process crashed: {detail}"),
        }
    }
}

/// Registers of one vCPU: what a reader of guest memory needs to translate
/// addresses (CR3, CR4) and to place the kernel (RIP, GS base). The own KVM
/// VMM fills every field; QEMU fills what `info registers` prints
/// (`kernel_gs_base` 0, `mp_state` `u32::MAX`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VcpuRegs {
    /// Instruction pointer.
    pub rip: u64,
    /// Stack pointer.
    pub rsp: u64,
    /// CR0.
    pub cr0: u64,
    /// CR3: the page table root (the running task's `mm->pgd` under Linux).
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// EFER.
    pub efer: u64,
    /// GS base: Linux's per-CPU area while in the kernel.
    pub gs_base: u64,
    /// `IA32_KERNEL_GS_BASE`: the per-CPU area while in user mode (swapgs).
    pub kernel_gs_base: u64,
    /// RFLAGS (bit 9: interrupts enabled).
    pub rflags: u64,
    /// KVM's multiprocessing state of the vCPU: 0 runnable, 1 waiting for
    /// INIT (an AP never started), 2 INIT received, 3 halted, 4 SIPI
    /// received (`KVM_MP_STATE_*`); `u32::MAX` if KVM would not say.
    pub mp_state: u32,
}

/// A running VM.
pub trait Machine: Send {
    /// The guest's physical RAM, mapped in the host.
    fn memory(&self) -> &GuestMemoryMmap;
    /// Stops every vCPU; guest memory stays readable and unchanged.
    fn pause(&mut self) -> Result<(), VmmError>;
    /// Resumes the vCPUs stopped by [`Machine::pause`].
    fn resume(&mut self) -> Result<(), VmmError>;
    /// Takes the console stream (once; `None` afterwards or when inherited).
    fn take_console(&mut self) -> Option<Console>;
    /// Waits until the guest ends or `deadline` passes (then kills it).
    fn wait(&mut self, deadline: Option<Instant>) -> Result<EndReason, VmmError>;
    /// How the guest ended, if it has; never blocks.
    fn try_wait(&mut self) -> Result<Option<EndReason>, VmmError>;
    /// Kills the VM now. Idempotent.
    fn kill(&mut self);
    /// Registers of logical CPU `cpu` as they are now (a running VM may be
    /// paused for the read; a paused one stays paused). Both backends
    /// implement it; the default says the machine cannot.
    fn vcpu_regs(&mut self, cpu: u32) -> Result<VcpuRegs, VmmError> {
        Err(VmmError::Unsupported(format!(
            "this machine cannot read vCPU {cpu}'s registers"
        )))
    }
    /// Saves the machine to `image` and ends it: the vCPUs stop, the device
    /// state and every page of guest RAM that is not zero go to the file,
    /// then the VM is gone. [`Backend::restore`] starts any number of
    /// machines from the image; none of them writes to it.
    fn save(&mut self, image: &std::path::Path) -> Result<(), VmmError> {
        Err(VmmError::Unsupported(format!(
            "this backend cannot save a machine (to {})",
            image.display()
        )))
    }
    /// How long booting waited for host CPU slots ([`crate::Slotted`]).
    fn slot_wait(&self) -> std::time::Duration {
        std::time::Duration::ZERO
    }
}

/// Something that boots a [`VmSpec`].
pub trait Backend {
    /// A short name for reports (`qemu-tcg`, `qemu-kvm`, `kvm`).
    fn name(&self) -> String;
    /// Boots the VM; returns once it runs.
    fn boot(&self, spec: &VmSpec) -> Result<Box<dyn Machine>, VmmError>;
    /// Starts a machine from `image` (written by [`Machine::save`] of a
    /// machine booted from this same `spec`) with `payload` at the start of
    /// its payload region ([`VmSpec::payload_bytes`]); returns once it runs.
    /// Guest RAM is fresh memory filled from the image, host-readable like a
    /// booted machine's; the image is never written.
    fn restore(
        &self,
        spec: &VmSpec,
        image: &std::path::Path,
        payload: &[u8],
    ) -> Result<Box<dyn Machine>, VmmError> {
        let _ = (spec, payload);
        Err(VmmError::Unsupported(format!(
            "backend {} cannot restore a machine (from {})",
            self.name(),
            image.display()
        )))
    }
    /// What names this backend in a snapshot cache's key (its name and
    /// version: an image is restored only by the backend that saved it), or
    /// `None` when it cannot save and restore machines.
    fn snapshot_id(&self) -> Option<String> {
        None
    }
    /// The program that runs the VMs, when it is another process (QEMU's
    /// binary): what a recording names and checks before a replay.
    fn program(&self) -> Option<std::path::PathBuf> {
        None
    }
    /// How many host threads a VM of `spec` can keep busy: one per vCPU
    /// unless the backend runs them otherwise.
    fn host_threads(&self, spec: &VmSpec) -> usize {
        spec.topology.nr_cpus() as usize
    }
    /// Whether the guest's clock can be trusted to measure how long its
    /// tasks ran: true when every vCPU gets a host thread of its own
    /// ([`VmSpec::host_threads`]), or when the backend makes guest time
    /// follow execution.
    fn timing_reliable(&self, spec: &VmSpec) -> bool {
        spec.host_threads
            .is_none_or(|h| spec.topology.nr_cpus() as usize <= h)
    }
}

/// Whether the host has hardware virtualization, judged by the CPU flags
/// (`vmx`/`svm`) and a usable `/dev/kvm` — a `/dev/kvm` alone can be a
/// software hypervisor that cannot boot Linux in reasonable time.
pub fn hardware_virtualization() -> bool {
    let flags = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let has_flag = flags
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    has_flag
        && std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_ok()
}
