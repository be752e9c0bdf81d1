//! The description of a VM, shared by every backend.

use std::path::PathBuf;

use ktstr_topology::Topology;

/// A range of guest physical RAM the guest kernel must leave alone (the
/// host-guest channel lives in one). QEMU gets it as `memmap=SIZE$ADDR`; the
/// own VMM marks it reserved in the e820 map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReservedRegion {
    /// Guest physical address (page aligned).
    pub gpa: u64,
    /// Size in bytes (page aligned).
    pub size: u64,
}

/// Where the serial console goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConsoleMode {
    /// The harness reads it line by line ([`crate::Machine::take_console`]).
    #[default]
    Capture,
    /// The VM uses the harness's own terminal (interactive shells).
    Inherit,
}

/// How a software-CPU backend (QEMU TCG) runs the vCPUs. Hardware
/// virtualization ignores it.
///
/// Measured on a 2-core host (scx-ktstr with odd pids on 4x longer slices,
/// `steady` on 1n2l2c2t, 8 vCPUs): with one thread per vCPU the host's
/// preemption of vCPU threads quantizes guest time so coarsely that the
/// planted unfairness vanished (CPU-time spread 5-10%, work spread 7-12%,
/// the same as a fair scheduler); with instruction counting it showed every
/// time (CPU-time spread 50-60%, work 62-65%) while the fair scheduler stayed
/// at 2-4%. Instruction counting also runs every vCPU on one thread, so no
/// vCPU executes code another is patching (the `Oops: int3` at jump-label
/// sites under multi-threaded TCG), and a VM keeps one host core busy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TcgMode {
    /// [`TcgMode::InstructionCount`].
    #[default]
    Auto,
    /// One host thread per vCPU.
    Multi,
    /// All vCPUs interleaved on one host thread.
    Single,
    /// One thread, and guest time counted in instructions executed
    /// (`-icount shift=2`, see [`crate::qemu::ICOUNT`]): host preemption and
    /// host speed are invisible to the guest.
    InstructionCount,
}

/// Everything a backend needs to boot a VM.
#[derive(Debug, Clone)]
pub struct VmSpec {
    /// The kernel: an ELF vmlinux with a PVH note (preferred) or a bzImage.
    pub kernel: PathBuf,
    /// The initramfs (uncompressed cpio, possibly several concatenated).
    pub initrd: Option<PathBuf>,
    /// The kernel command line. [`VmSpec::new`] fills in the console and
    /// panic settings every ktstr VM wants.
    pub cmdline: String,
    /// CPUs, LLCs, NUMA nodes, memory per node and distances.
    pub topology: Topology,
    /// RAM ranges kept from the guest kernel.
    pub reserved: Vec<ReservedRegion>,
    /// Where the console goes.
    pub console: ConsoleMode,
    /// A name for the VM (process titles, diagnostics).
    pub name: String,
    /// Host threads this VM may keep busy (the host's cores, as the caller
    /// counts them); `None`: no limit.
    pub host_threads: Option<usize>,
    /// How a software CPU runs the vCPUs.
    pub tcg: TcgMode,
    /// Bytes of the payload region (0: none): shared memory outside guest
    /// RAM that the host fills before the guest runs, how a guest restored
    /// from a snapshot receives what it did not have when it was saved. QEMU
    /// shows it as an `ivshmem-plain` PCI device ([`PAYLOAD_PCI_ID`]) whose
    /// BAR 2 is the region; the own KVM VMM, which has no PCI bus, maps it
    /// at [`crate::KVM_PAYLOAD_GPA`] and names it on the kernel command line
    /// ([`crate::PAYLOAD_CMDLINE_PARAM`]`=SIZE@ADDR`). A power of two of at least 1 MiB. A snapshot is
    /// restored with the spec it was saved with, this size included. The
    /// guest only reads it: a page it wrote before the save would be in the
    /// image and would overwrite the host's payload on every restore.
    pub payload_bytes: u64,
    /// Run the guest as a pure function of its inputs, so that a second run
    /// with the same spec repeats it instruction for instruction (record and
    /// replay, docs/design/record-replay.md). Only QEMU's instruction-counting
    /// TCG ([`TcgMode::InstructionCount`]) can; other backends refuse it.
    pub deterministic: Option<Deterministic>,
}

/// The inputs a deterministic guest would otherwise take from the host at
/// run time: its entropy and its wall clock. A recording keeps them; its
/// replay passes them back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deterministic {
    /// Seeds every random number QEMU hands the guest (`-seed`: the boot
    /// protocol's RNG seed among them). A new one per recorded run varies
    /// the guest's choices, and with them the interleavings a run explores.
    pub seed: u64,
    /// The guest's wall clock at power-on, `YYYY-MM-DDTHH:MM:SS` UTC; from
    /// then on it advances with the instruction count (`-rtc clock=vm`).
    pub rtc_base: String,
    /// Stops the machine at instruction counts a host process asks for, to
    /// read its memory at exact points (a replay's questions), and tells it
    /// the counts at which marked instructions first ran; `None`: no plugin.
    /// Neither changes the run (see [`TcgGate`]).
    pub gate: Option<TcgGate>,
}

/// QEMU loads the ktstr-qemu-gate TCG plugin (`-plugin`): at each
/// translated block's entry it counts instructions, and at counts the host
/// names it blocks the one vCPU thread and asks the host over `socket`
/// (protocol in the plugin crate's documentation). A blocked thread is a
/// stopped machine no vCPU kick interrupted, so the run goes on exactly as
/// it would have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcgGate {
    /// `libktstr_qemu_gate.so`.
    pub plugin: PathBuf,
    /// The Unix stream socket the host listens on before QEMU starts.
    pub socket: PathBuf,
    /// The plugin's first stop: at the first block entry after this many
    /// instructions (the host loads what it reads the guest with meanwhile);
    /// `None`: it never stops, it only marks.
    pub first_stop: Option<u64>,
    /// Guest virtual addresses of instructions whose first execution the
    /// plugin reports with the instruction count before it (`mark I C`):
    /// a kernel function's entry, in a recording and its replay.
    pub marks: Vec<u64>,
    /// QEMU's gdb stub on this Unix socket (`-gdb unix:…,server=on,wait=off`),
    /// for a debugger the host hands the stopped machine to; `None`: none.
    pub gdb: Option<PathBuf>,
}

/// PCI vendor and device ID of the payload region's device (QEMU's
/// `ivshmem-plain`): the guest finds the region as that device's BAR 2.
pub const PAYLOAD_PCI_ID: (u16, u16) = (0x1af4, 0x1110);

impl VmSpec {
    /// A spec with the command line every ktstr VM starts from: serial console,
    /// a panic ends the VM at once, `nokaslr` (a PVH boot of the vmlinux is never
    /// randomized anyway; a caller booting a bzImage randomized drops the word).
    pub fn new(kernel: impl Into<PathBuf>, topology: Topology) -> Self {
        VmSpec {
            kernel: kernel.into(),
            initrd: None,
            cmdline: "console=ttyS0 panic=-1 nokaslr quiet".to_string(),
            topology,
            reserved: Vec::new(),
            console: ConsoleMode::Capture,
            name: format!("ktstr-{}", std::process::id()),
            host_threads: None,
            tcg: TcgMode::Auto,
            payload_bytes: 0,
            deterministic: None,
        }
    }

    /// The TCG mode this spec resolves to ([`TcgMode::Auto`] is
    /// [`TcgMode::InstructionCount`]).
    pub fn resolved_tcg(&self) -> TcgMode {
        match self.tcg {
            TcgMode::Auto => TcgMode::InstructionCount,
            other => other,
        }
    }

    /// Checks that the kernel and initramfs files exist, naming the fix.
    pub fn check_files(&self) -> Result<(), crate::VmmError> {
        let missing = |what, path: &std::path::Path, hint| crate::VmmError::MissingFile {
            what,
            path: path.to_path_buf(),
            hint,
        };
        if !self.kernel.is_file() {
            return Err(missing(
                "kernel",
                &self.kernel,
                ": run `cargo xtask kernel fetch` or pass --kernel",
            ));
        }
        if let Some(i) = self.initrd.as_ref().filter(|i| !i.is_file()) {
            return Err(missing("initramfs", i, ""));
        }
        let p = self.payload_bytes;
        if p != 0 && (!p.is_power_of_two() || p < 1 << 20) {
            return Err(crate::VmmError::InvalidSpec(format!(
                "payload region of {p} bytes: it must be a power of two of at least 1 MiB"
            )));
        }
        Ok(())
    }

    /// Total guest RAM in bytes.
    pub fn memory_bytes(&self) -> u64 {
        self.topology.memory_mib() << 20
    }

    /// RAM of each NUMA node in bytes, in node order.
    pub fn node_memory_bytes(&self) -> Vec<u64> {
        (0..self.topology.numa_nodes())
            .map(|n| u64::from(self.topology.node_memory_mib(n).unwrap_or(0)) << 20)
            .collect()
    }
}
