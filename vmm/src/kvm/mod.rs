//! The purpose-built KVM VMM: boots a [`VmSpec`] in this process on the rust-vmm
//! crates, with exactly the declared topology.
//!
//! Guest RAM is the same one-memfd-per-node [`GuestRam`] the QEMU backend uses
//! (one KVM memory slot per RAM region: one per node, two for a node that
//! straddles the PCI hole), so the guest sees the same physical map on either.
//! The kernel is loaded by linux-loader (PVH entry of an ELF vmlinux, 64-bit
//! entry of a bzImage), described by the ACPI tables of `ktstr-acpi` and an
//! e820 map that keeps the host-guest channel reserved, and each vCPU gets the
//! CPUID leaves of `ktstr-topology` for its place in the topology (its KVM vCPU
//! id is its APIC id). Devices: the in-kernel irqchip and PIT, COM1 (console)
//! and COM2 on irqfds, the i8042 reset line, ACPI power-off; the payload
//! region ([`VmSpec::payload_bytes`]) as a memory slot outside RAM named on
//! the command line (`payload.rs`). A machine saves to a sparse image and
//! restores from it into fresh memory (`snapshot.rs`, `state.rs`).
//!
//! On a host without hardware virtualization `/dev/kvm` may still exist as a
//! software hypervisor: tiny guests run, Linux does not boot in useful time.
//! There the vCPUs' CPUID also drops the features it cannot emulate
//! (cmpxchg16b, popcnt, xsave/AVX, rdtscp) so guests take their fallbacks, as
//! far as that hypervisor lets them be hidden (the development machine's PVM
//! honours CX16 but still shows XSAVE: Linux then stops at its first xrstor).

mod devices;
mod diag;
mod event_loop;
pub(crate) mod payload;
pub use payload::{KVM_PAYLOAD_GPA, KVM_PAYLOAD_MAX, PAYLOAD_CMDLINE_PARAM};
mod snapshot;
mod state;
mod vcpu;
#[cfg(target_arch = "x86_64")]
mod x86_64;

use std::os::unix::thread::JoinHandleExt;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kvm_bindings::{
    KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY, kvm_pit_config, kvm_userspace_memory_region,
};
use kvm_ioctls::{Kvm, VmFd};
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
use vm_superio::Serial;
use vmm_sys_util::eventfd::EventFd;

pub use vcpu::VcpuRegs;

use crate::console::{Tail, spawn_reader};
use crate::{
    Backend, Console, ConsoleMode, EndReason, GuestMemoryMmap, GuestRam, Machine, VmSpec, VmmError,
};
use devices::{COM1_IRQ, COM2_IRQ, IoBus, IrqTrigger, Uart};
use event_loop::EventLoop;
use vcpu::{End, Shared};
use x86_64::{boot, cpuid, msr, regs};

/// Why Linux does not boot on this host's `/dev/kvm`, when it does not.
pub const NO_HW_VIRT_REASON: &str = "no hardware virtualization (no vmx/svm in /proc/cpuinfo)";

/// Kernel parameters the KVM backend puts before the spec's command line,
/// because of the machine it builds.
///
/// `reboot=acpi`: the FADT describes a hardware-reduced ACPI machine, and for
/// those Linux picks the EFI reset (`efi_reboot_required()`), which without
/// EFI falls through to a jump to the BIOS reset vector: with no BIOS the vCPU
/// ran garbage in real mode and a guest panic (`panic=-1`) or `reboot` never
/// ended the VM. With `reboot=acpi` Linux writes the FADT's reset register
/// (port 0xcf9), which ends the VM as a reset.
pub const MACHINE_CMDLINE: &str = "reboot=acpi";

/// Where KVM keeps the real-mode TSS of Intel hosts: three pages just below the
/// BIOS ROM at the top of 4 GiB, away from RAM and MMIO.
const TSS_ADDRESS: usize = 0xfffb_d000;

/// `kvm_ioctls::Error` as a [`VmmError`] naming the ioctl.
pub(crate) fn kvm_err(what: &'static str) -> impl Fn(kvm_ioctls::Error) -> VmmError {
    move |e| VmmError::Os {
        what,
        source: std::io::Error::from_raw_os_error(e.errno()),
    }
}

/// Boots VMs in this process with KVM.
///
/// ```no_run
/// use ktstr_vmm::{Backend, KvmBackend, VmSpec};
/// let backend = KvmBackend::builder().huge_pages(true).build()?;
/// let vm = backend.boot(&VmSpec::new("/path/to/vmlinux", "1n1l2c1t".parse()?))?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct KvmBackend {
    huge_pages: bool,
    hardware: bool,
}

/// Options of a [`KvmBackend`].
#[derive(Debug, Clone, Default)]
pub struct KvmBackendBuilder {
    huge_pages: bool,
}

impl KvmBackendBuilder {
    /// Asks for transparent huge pages on guest RAM (`MADV_HUGEPAGE`; the host's
    /// `shmem_enabled` setting decides whether memfd RAM gets them).
    pub fn huge_pages(mut self, on: bool) -> Self {
        self.huge_pages = on;
        self
    }

    /// Checks that `/dev/kvm` opens and that its API is the stable one.
    pub fn build(self) -> Result<KvmBackend, VmmError> {
        let kvm = open_kvm()?;
        if kvm.get_api_version() != 12 {
            return Err(VmmError::Control(format!(
                "/dev/kvm speaks API version {}, not 12",
                kvm.get_api_version()
            )));
        }
        Ok(KvmBackend {
            huge_pages: self.huge_pages,
            hardware: crate::hardware_virtualization(),
        })
    }
}

fn open_kvm() -> Result<Kvm, VmmError> {
    Kvm::new().map_err(|e| VmmError::MissingProgram {
        program: "/dev/kvm".into(),
        hint: format!(
            "{}; load kvm_intel or kvm_amd and make /dev/kvm readable and writable for this user",
            std::io::Error::from_raw_os_error(e.errno())
        ),
    })
}

impl KvmBackend {
    /// A backend with default options ([`KvmBackend::builder`] for others).
    pub fn new() -> Result<Self, VmmError> {
        Self::builder().build()
    }

    /// Options for the backend.
    pub fn builder() -> KvmBackendBuilder {
        KvmBackendBuilder::default()
    }

    /// Why a Linux guest will not boot on this host's `/dev/kvm` (a software
    /// hypervisor), or `None` with hardware virtualization.
    pub fn linux_boot_limitation(&self) -> Option<&'static str> {
        (!self.hardware).then_some(NO_HW_VIRT_REASON)
    }

    /// Boots `spec` and returns the concrete machine, which also offers COM2 and
    /// register reads.
    pub fn boot_vm(&self, spec: &VmSpec) -> Result<KvmVm, VmmError> {
        refuse_deterministic(spec)?;
        KvmVm::build(spec, self.huge_pages, None)
    }

    /// Starts a machine from `image`, written by [`Machine::save`] of a
    /// machine booted from `spec`, with `payload` at the start of its payload
    /// region; returns the concrete machine ([`Backend::restore`]).
    pub fn restore_vm(
        &self,
        spec: &VmSpec,
        image: &std::path::Path,
        payload: &[u8],
    ) -> Result<KvmVm, VmmError> {
        refuse_deterministic(spec)?;
        KvmVm::build(spec, self.huge_pages, Some((image, payload)))
    }
}

/// A KVM guest runs at host speed: no second run repeats its timing.
fn refuse_deterministic(spec: &VmSpec) -> Result<(), VmmError> {
    match spec.deterministic {
        None => Ok(()),
        Some(_) => Err(VmmError::Unsupported(
            "a deterministic (recorded or replayed) run needs QEMU's instruction-counting TCG \
             (KTSTR_BACKEND=qemu); the own KVM VMM runs the guest at host speed"
                .into(),
        )),
    }
}

impl Backend for KvmBackend {
    fn name(&self) -> String {
        if self.hardware {
            "kvm".into()
        } else {
            "kvm-software".into()
        }
    }

    fn boot(&self, spec: &VmSpec) -> Result<Box<dyn Machine>, VmmError> {
        Ok(Box::new(self.boot_vm(spec)?))
    }

    /// The image format, this VMM's version and the host kernel whose KVM
    /// captured the state (its MSR list and CPUID): a snapshot is only
    /// restored by the same.
    fn snapshot_id(&self) -> Option<String> {
        let host = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
        Some(format!(
            "{} image-v{} ktstr-vmm-{} host-kernel-{}",
            self.name(),
            snapshot::VERSION,
            env!("CARGO_PKG_VERSION"),
            host.trim()
        ))
    }

    fn restore(
        &self,
        spec: &VmSpec,
        image: &std::path::Path,
        payload: &[u8],
    ) -> Result<Box<dyn Machine>, VmmError> {
        Ok(Box::new(self.restore_vm(spec, image, payload)?))
    }
}

/// A VM run by the KVM backend: a [`Machine`], plus COM2 and register reads.
///
/// ```no_run
/// use std::time::{Duration, Instant};
/// use ktstr_vmm::{EndReason, KvmBackend, Machine, VmSpec};
///
/// let mut spec = VmSpec::new("/path/to/vmlinux", "1n2l2c2t".parse()?);
/// spec.initrd = Some("/path/to/initramfs.cpio".into());
/// let mut vm = KvmBackend::new()?.boot_vm(&spec)?;
/// let console = vm.take_console().expect("COM1 is captured");
/// let reports = vm.take_com2().expect("COM2 is captured");
/// while let Some(line) = console.next_line(Duration::from_secs(30)) {
///     println!("console: {line}");
///     if line.contains("Run /init") {
///         break;
///     }
/// }
/// vm.pause()?;
/// for cpu in 0..spec.topology.nr_cpus() {
///     let r = vm.vcpu_regs(cpu)?;
///     println!("cpu {cpu}: rip {:#x} cr3 {:#x} gs {:#x}", r.rip, r.cr3, r.gs_base);
/// }
/// vm.resume()?;
/// while let Some(line) = reports.next_line(Duration::from_secs(30)) {
///     println!("report: {line}");
/// }
/// if vm.wait(Some(Instant::now() + Duration::from_secs(30)))? != EndReason::PowerOff {
///     vm.kill();
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct KvmVm {
    shared: Option<Arc<Shared>>,
    threads: Vec<JoinHandle<()>>,
    events: Option<EventLoop>,
    console: Option<Console>,
    com2: Option<Console>,
    tail: Tail,
    ended: Option<EndReason>,
    nr_vcpus: usize,
    /// The spec it was built from, for a diagnostic bundle.
    spec_text: String,
    /// Every vCPU's registers and last exits as it stopped (after teardown).
    farewells: Vec<diag::VcpuDiag>,
    /// The diagnostic bundle written when the VM failed.
    diagnostics: Option<std::path::PathBuf>,
    /// What a snapshot of this machine records about it.
    meta: snapshot::Meta,
    // Declared last: the VM (its irqchip, memory slots and irqfds) goes
    // before the memory it maps.
    vm: VmFd,
    ram: GuestRam,
    _payload: Option<payload::PayloadRegion>,
}

/// A pipe whose read end becomes a [`Console`] and whose write end a UART's output.
fn captured(tail: Tail) -> Result<(Console, Box<dyn std::io::Write + Send>), VmmError> {
    let (r, w) = std::io::pipe().map_err(|e| VmmError::Os {
        what: "pipe for a serial port",
        source: e,
    })?;
    Ok((spawn_reader(r, tail), Box::new(w)))
}

impl KvmVm {
    /// Boots `spec`, or (`restore`: the image and the payload) starts it
    /// from a saved image.
    fn build(
        spec: &VmSpec,
        huge_pages: bool,
        restore: Option<(&std::path::Path, &[u8])>,
    ) -> Result<Self, VmmError> {
        spec.check_files()?;
        let kvm = open_kvm()?;
        let vm = kvm.create_vm().map_err(kvm_err("KVM_CREATE_VM"))?;
        vm.set_tss_address(TSS_ADDRESS)
            .map_err(kvm_err("KVM_SET_TSS_ADDR"))?;
        vm.create_irq_chip()
            .map_err(kvm_err("KVM_CREATE_IRQCHIP"))?;
        vm.create_pit2(kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        })
        .map_err(kvm_err("KVM_CREATE_PIT2"))?;
        // Hardware the VM lacks answers with #GP, not with the host's log.
        msr::deny_absent_hardware(&vm)?;

        // Guest RAM: one memfd per node, one memory slot per region.
        let ram = GuestRam::new(&spec.node_memory_bytes())?;
        let mut slots = 0u32;
        for region in ram.memory().iter() {
            let host = ram
                .memory()
                .get_host_address(region.start_addr())
                .map_err(|e| VmmError::Memory(format!("host address of guest RAM: {e}")))?;
            if huge_pages {
                // SAFETY: `host` is the start of a live mapping of `region.len()`
                // bytes owned by `ram`; madvise only changes paging advice.
                unsafe { libc::madvise(host.cast(), region.len() as usize, libc::MADV_HUGEPAGE) };
            }
            let mr = kvm_userspace_memory_region {
                slot: slots,
                flags: 0,
                guest_phys_addr: region.start_addr().0,
                memory_size: region.len(),
                userspace_addr: host as u64,
            };
            // SAFETY: the region is a live host mapping of exactly `memory_size`
            // bytes; `ram` outlives `vm` (field order of KvmVm), so the mapping
            // stays valid for as long as KVM can touch it.
            unsafe { vm.set_user_memory_region(mr) }
                .map_err(kvm_err("KVM_SET_USER_MEMORY_REGION"))?;
            slots += 1;
        }
        // The payload region: a memory slot of its own outside RAM.
        let payload = match (spec.payload_bytes, restore) {
            (0, Some((_, p))) if !p.is_empty() => {
                return Err(VmmError::InvalidSpec(
                    "a payload to hand over, but the spec has no payload region (payload_bytes)"
                        .into(),
                ));
            }
            (0, _) => None,
            (_, r) => {
                let region = payload::PayloadRegion::new(spec, r.map_or(&[][..], |(_, p)| p))?;
                region.register(&vm, slots)?;
                Some(region)
            }
        };

        // Restoring: the image fills RAM and holds every device's state.
        let (opened, layout) = match restore {
            Some((image, _)) => {
                let want = snapshot::Meta::of(spec, 0, None);
                let opened = snapshot::open(image, spec, &want)?;
                opened.fill(image, &ram)?;
                (Some((image, opened)), None)
            }
            None => {
                let layout = boot::load(ram.memory(), spec, ram.layout())?;
                regs::write_boot_tables(ram.memory(), layout.entry)?;
                (None, Some(layout))
            }
        };
        let meta = match (&opened, &layout) {
            (Some((_, o)), _) => o.saved.meta.clone(),
            (None, Some(l)) => snapshot::Meta::of(spec, l.rsdp, l.initrd),
            (None, None) => unreachable!("either booted or restored"),
        };
        let saved = opened.as_ref().map(|(_, o)| &o.saved);

        // Serial ports: COM1 is the console, COM2 the test channel.
        let tail = Tail::default();
        let (console, com1_out): (Option<Console>, Box<dyn std::io::Write + Send>) =
            match spec.console {
                ConsoleMode::Capture => {
                    let (c, w) = captured(tail.clone())?;
                    (Some(c), w)
                }
                ConsoleMode::Inherit => (None, Box::new(std::io::stdout())),
            };
        let (com2, com2_out) = captured(Tail::default())?;
        let uart = |irq: u32,
                    out: Box<dyn std::io::Write + Send>,
                    state: Option<&vm_superio::serial::SerialState>|
         -> Result<Uart, VmmError> {
            let evt = EventFd::new(libc::EFD_NONBLOCK).map_err(|e| VmmError::Os {
                what: "eventfd for a serial interrupt",
                source: e,
            })?;
            vm.register_irqfd(&evt, irq).map_err(kvm_err("KVM_IRQFD"))?;
            match state {
                None => Ok(Serial::new(IrqTrigger(evt), out)),
                Some(s) => {
                    Serial::from_state(s, IrqTrigger(evt), vm_superio::serial::NoEvents, out)
                        .map_err(|e| VmmError::Control(format!("restoring a serial port: {e:?}")))
                }
            }
        };
        let bus = IoBus {
            com1: std::sync::Mutex::new(uart(COM1_IRQ, com1_out, saved.map(|s| &s.serial[0]))?),
            com2: std::sync::Mutex::new(uart(COM2_IRQ, com2_out, saved.map(|s| &s.serial[1]))?),
        };

        // vCPUs: KVM vCPU id = APIC id; CPU 0 (APIC id 0) is the boot vCPU.
        let supported = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm_err("KVM_GET_SUPPORTED_CPUID"))?;
        let mut supported = cpuid::from_kvm(&supported);
        cpuid::keep_llc_readable(&mut supported);
        if !crate::hardware_virtualization() {
            // A software /dev/kvm: advertise only what it can emulate.
            cpuid::hide_unemulated(&mut supported);
        }
        let mut vcpus = Vec::new();
        let mut refused = std::collections::BTreeSet::new();
        for cpu in spec.topology.cpus() {
            let vcpu = vm
                .create_vcpu(u64::from(cpu.apic_id))
                .map_err(kvm_err("KVM_CREATE_VCPU"))?;
            vcpu.set_cpuid2(&cpuid::for_cpu(&supported, &spec.topology, cpu.cpu)?)
                .map_err(kvm_err("KVM_SET_CPUID2"))?;
            match (saved, layout.as_ref()) {
                (Some(s), _) => refused.extend(s.vcpus[cpu.cpu as usize].apply(&vcpu)?),
                (None, Some(l)) => {
                    regs::setup_vcpu_common(&vcpu)?;
                    if cpu.cpu == 0 {
                        regs::setup_boot_vcpu(&vcpu, l.entry)?;
                    }
                }
                (None, None) => unreachable!("either booted or restored"),
            }
            vcpus.push(vcpu);
        }
        if let Some(s) = saved {
            s.vm.apply(&vm)?;
        }
        if !refused.is_empty() {
            eprintln!(
                "ktstr-vmm: restore: KVM refused MSRs {:x?}; they keep their reset values",
                refused
            );
        }

        let nr_vcpus = vcpus.len();
        let shared = Arc::new(Shared::new(bus, nr_vcpus));
        vcpu::install_kick_handler();
        let mut threads = Vec::new();
        for (index, vcpu) in vcpus.into_iter().enumerate() {
            let s = Arc::clone(&shared);
            let t = std::thread::Builder::new()
                .name(format!("ktstr-vcpu{index}"))
                .spawn(move || vcpu::run(vcpu, index, &s))
                .map_err(|e| VmmError::Os {
                    what: "starting a vCPU thread",
                    source: e,
                })?;
            threads.push(t);
        }
        shared.set_threads(threads.iter().map(|t| t.as_pthread_t()).collect());
        let events = EventLoop::start(Arc::clone(&shared), spec.console == ConsoleMode::Inherit)?;
        Ok(KvmVm {
            shared: Some(shared),
            threads,
            events: Some(events),
            console,
            com2: Some(com2),
            tail,
            ended: None,
            nr_vcpus,
            spec_text: format!("{spec:?}"),
            farewells: Vec::new(),
            diagnostics: None,
            meta,
            vm,
            ram,
            _payload: payload,
        })
    }

    /// Saves the machine to `image` ([`Machine::save`]).
    fn save_to(&mut self, image: &std::path::Path) -> Result<(), VmmError> {
        let shared = self
            .shared
            .clone()
            .ok_or_else(|| VmmError::Control("the VM has ended: nothing to save".into()))?;
        let vcpus = shared.capture().map_err(|source| VmmError::MachineState {
            image: image.to_path_buf(),
            source,
        })?;
        let saved = snapshot::Saved {
            meta: self.meta.clone(),
            serial: shared.bus.serial_states(),
            vm: state::VmState::capture(&self.vm)?,
            vcpus,
        };
        snapshot::write(image, &saved, &self.ram)
    }

    /// The lines the guest writes to COM2 (once; `None` afterwards).
    pub fn take_com2(&mut self) -> Option<Console> {
        self.com2.take()
    }

    /// Guest address of the ACPI RSDP.
    pub fn rsdp_address(&self) -> u64 {
        self.meta.rsdp
    }

    /// Where the initrd was placed: guest address and size.
    pub fn initrd_range(&self) -> Option<(u64, u64)> {
        self.meta.initrd
    }

    /// The layout of RAM in guest physical memory.
    pub fn ram_layout(&self) -> &[crate::RamRegion] {
        self.ram.layout()
    }

    /// Registers of logical CPU `cpu`. A running VM is paused for the read and
    /// resumed; a paused one returns what each vCPU saved when it parked.
    pub fn vcpu_regs(&mut self, cpu: u32) -> Result<VcpuRegs, VmmError> {
        let index = cpu as usize;
        if index >= self.nr_vcpus {
            return Err(VmmError::InvalidSpec(format!(
                "cpu {cpu}: the VM has {} vCPUs",
                self.nr_vcpus
            )));
        }
        let shared = self
            .shared
            .clone()
            .ok_or_else(|| VmmError::Control("the VM has ended".into()))?;
        let was_paused = shared.is_paused();
        if !was_paused {
            shared.pause();
        }
        let regs = shared.regs(index);
        if !was_paused {
            shared.resume();
        }
        match regs {
            Some(Ok(r)) => Ok(r),
            Some(Err(source)) => Err(VmmError::Registers { cpu, source }),
            None => Err(VmmError::Control(format!(
                "vCPU {cpu} did not park (the VM ended?)"
            ))),
        }
    }

    /// Stops the vCPUs and the event loop, and closes the serial outputs.
    fn teardown(&mut self, why: End) {
        if let Some(shared) = self.shared.take() {
            shared.end(why);
            let _ = shared.take_threads();
            for t in self.threads.drain(..) {
                let _ = t.join();
            }
            if let Some(mut e) = self.events.take() {
                e.stop();
            }
            self.farewells = shared.farewells();
            // Dropping the last reference closes the UART pipes: consoles see the end.
            drop(shared);
        }
    }

    fn classify(&mut self, end: End) -> EndReason {
        // Let the console reader take in the last lines.
        std::thread::sleep(Duration::from_millis(20));
        if let Some(lines) = self.tail.crash_report() {
            return EndReason::Panic { lines };
        }
        match end {
            End::PowerOff => EndReason::PowerOff,
            End::Reset => EndReason::Reset,
            End::Killed => EndReason::Killed,
            End::TripleFault(what) => {
                // A triple fault leaves nothing on the console: say it here.
                eprintln!("ktstr-vmm: {what}; {}", self.write_bundle(&what));
                EndReason::Reset
            }
            End::Fatal(detail) => {
                let bundle = self.write_bundle(&detail);
                EndReason::Crashed {
                    detail: format!(
                        "{detail}; {bundle}; last console lines: {}",
                        self.tail.last(10).join(" | ")
                    ),
                }
            }
        }
    }

    /// Writes the diagnostic bundle of a failed VM; what the failure says
    /// of it.
    fn write_bundle(&mut self, end: &str) -> String {
        let console = self.tail.last(200);
        match diag::write_bundle(end, &self.spec_text, &self.farewells, &console) {
            Ok(path) => {
                let said = format!(
                    "the own KVM VMM failed: diagnostic bundle {} (please send it with a bug \
                     report); KTSTR_BACKEND=qemu keeps ktstr working on QEMU meanwhile",
                    path.display()
                );
                self.diagnostics = Some(path);
                said
            }
            Err(why) => format!(
                "the own KVM VMM failed and its diagnostic bundle could not be written ({why});                  KTSTR_BACKEND=qemu keeps ktstr working on QEMU meanwhile"
            ),
        }
    }

    /// The diagnostic bundle written when the VM failed (KVM error,
    /// emulation failure, triple fault), if it did.
    pub fn diagnostics(&self) -> Option<&std::path::Path> {
        self.diagnostics.as_deref()
    }
}

impl Machine for KvmVm {
    fn memory(&self) -> &GuestMemoryMmap {
        self.ram.memory()
    }

    fn pause(&mut self) -> Result<(), VmmError> {
        if let Some(s) = &self.shared {
            s.pause();
        }
        Ok(())
    }

    fn resume(&mut self) -> Result<(), VmmError> {
        if let Some(s) = &self.shared {
            s.resume();
        }
        Ok(())
    }

    fn vcpu_regs(&mut self, cpu: u32) -> Result<VcpuRegs, VmmError> {
        KvmVm::vcpu_regs(self, cpu)
    }

    fn save(&mut self, image: &std::path::Path) -> Result<(), VmmError> {
        let saved = self.save_to(image);
        self.kill();
        saved
    }

    fn take_console(&mut self) -> Option<Console> {
        self.console.take()
    }

    fn wait(&mut self, deadline: Option<Instant>) -> Result<EndReason, VmmError> {
        if let Some(r) = &self.ended {
            return Ok(r.clone());
        }
        loop {
            let shared = self
                .shared
                .clone()
                .ok_or_else(|| VmmError::Control("the VM was torn down without an end".into()))?;
            let slice = deadline.map_or(Duration::from_millis(200), |d| {
                d.saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(200))
            });
            if let Some(end) = shared.wait_end(slice) {
                drop(shared);
                self.teardown(end.clone());
                let r = self.classify(end);
                self.ended = Some(r.clone());
                return Ok(r);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                drop(shared);
                self.teardown(End::Killed);
                self.ended = Some(EndReason::Timeout);
                return Ok(EndReason::Timeout);
            }
        }
    }

    fn try_wait(&mut self) -> Result<Option<EndReason>, VmmError> {
        if let Some(r) = &self.ended {
            return Ok(Some(r.clone()));
        }
        let Some(end) = self.shared.as_ref().and_then(|s| s.ended()) else {
            return Ok(None);
        };
        self.teardown(end.clone());
        let r = self.classify(end);
        self.ended = Some(r.clone());
        Ok(Some(r))
    }

    fn kill(&mut self) {
        if self.ended.is_none() {
            let end = self
                .shared
                .as_ref()
                .and_then(|s| s.ended())
                .unwrap_or(End::Killed);
            self.teardown(End::Killed);
            self.ended = Some(if end == End::Killed {
                EndReason::Killed
            } else {
                self.classify(end)
            });
        }
    }
}

impl Drop for KvmVm {
    fn drop(&mut self) {
        self.teardown(End::Killed);
    }
}
