//! What the own VMM leaves behind when it fails: a diagnostic bundle a user
//! can send with a bug report (the host CPU and its flags, KVM's
//! capabilities, the VM spec, every vCPU's registers and last exits, the
//! console), written when KVM ends the VM with an error, an emulation
//! failure or a triple fault.
//!
//! The bundle goes to `$KTSTR_VMM_DIAG_DIR`, else `<temp dir>/ktstr-vmm-diag`;
//! the failure names the file and `KTSTR_BACKEND=qemu`, which keeps ktstr
//! working on QEMU meanwhile.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use kvm_ioctls::{Cap, Kvm, VcpuFd};

use crate::VmmError;

/// Exits a vCPU remembers.
const EXITS: usize = 16;

/// The last exits of one vCPU: a ring of (kind, port or address, repeats).
#[derive(Debug)]
pub(crate) struct ExitLog {
    ring: [(&'static str, u64, u64); EXITS],
    len: usize,
    next: usize,
    total: u64,
}

impl ExitLog {
    pub(crate) fn new() -> Self {
        ExitLog {
            ring: [("", 0, 0); EXITS],
            len: 0,
            next: 0,
            total: 0,
        }
    }

    /// One exit of `kind` at `at` (a port, an address, or 0); a repeat of
    /// the previous one only counts.
    pub(crate) fn note(&mut self, kind: &'static str, at: u64) {
        self.total += 1;
        if self.len > 0 {
            let last = (self.next + EXITS - 1) % EXITS;
            if self.ring[last].0 == kind && self.ring[last].1 == at {
                self.ring[last].2 += 1;
                return;
            }
        }
        self.ring[self.next] = (kind, at, 1);
        self.next = (self.next + 1) % EXITS;
        self.len = (self.len + 1).min(EXITS);
    }

    /// Oldest first.
    fn lines(&self) -> Vec<String> {
        (0..self.len)
            .map(|i| self.ring[(self.next + EXITS - self.len + i) % EXITS])
            .map(|(kind, at, n)| {
                let times = if n > 1 {
                    format!(" x{n}")
                } else {
                    String::new()
                };
                format!("{kind} {at:#x}{times}")
            })
            .collect()
    }
}

/// One vCPU as it left its run loop.
#[derive(Debug, Clone)]
pub(crate) struct VcpuDiag {
    index: usize,
    regs: String,
    events: String,
    exits: Vec<String>,
    total_exits: u64,
}

impl VcpuDiag {
    /// Reads what the vCPU still holds (each read may fail; the bundle
    /// says so rather than leaving the item out).
    pub(crate) fn capture(vcpu: &VcpuFd, index: usize, log: &ExitLog) -> Self {
        let regs = match (vcpu.get_regs(), vcpu.get_sregs()) {
            (Ok(r), Ok(s)) => format!(
                "rip={:#x} rsp={:#x} rbp={:#x} rax={:#x} rbx={:#x} rcx={:#x} rdx={:#x} \
                 rsi={:#x} rdi={:#x} rflags={:#x} cs={:#x} ss={:#x} cr0={:#x} cr2={:#x} \
                 cr3={:#x} cr4={:#x} efer={:#x} idt={:#x}/{:#x} gdt={:#x}/{:#x}",
                r.rip,
                r.rsp,
                r.rbp,
                r.rax,
                r.rbx,
                r.rcx,
                r.rdx,
                r.rsi,
                r.rdi,
                r.rflags,
                s.cs.selector,
                s.ss.selector,
                s.cr0,
                s.cr2,
                s.cr3,
                s.cr4,
                s.efer,
                s.idt.base,
                s.idt.limit,
                s.gdt.base,
                s.gdt.limit
            ),
            (r, s) => format!("unreadable ({:?}, {:?})", r.err(), s.err()),
        };
        let events = match vcpu.get_vcpu_events() {
            Ok(e) => format!(
                "exception {} injected={} pending={} error code {:#x}; interrupt {:#x} \
                 injected={}; nmi injected={} pending={}",
                e.exception.nr,
                e.exception.injected,
                e.exception.pending,
                e.exception.error_code,
                e.interrupt.nr,
                e.interrupt.injected,
                e.nmi.injected,
                e.nmi.pending
            ),
            Err(e) => format!("unreadable ({e})"),
        };
        let mp = vcpu
            .get_mp_state()
            .map_or_else(|e| format!("unreadable ({e})"), |m| m.mp_state.to_string());
        VcpuDiag {
            index,
            regs,
            events: format!("{events}; mp_state {mp}"),
            exits: log.lines(),
            total_exits: log.total,
        }
    }
}

/// The first processor's identity and flags, from `/proc/cpuinfo`.
fn host_cpu() -> String {
    let Ok(text) = std::fs::read_to_string("/proc/cpuinfo") else {
        return "unreadable (/proc/cpuinfo)".into();
    };
    let first = text.split("\n\n").next().unwrap_or("");
    let wanted = [
        "vendor_id",
        "cpu family",
        "model",
        "model name",
        "stepping",
        "microcode",
        "flags",
    ];
    first
        .lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| wanted.contains(&k.trim()))
        .map(|(k, v)| format!("{}: {}", k.trim(), v.trim()))
        .collect::<Vec<_>>()
        .join("\n  ")
}

/// KVM's API version and the capabilities the own VMM relies on.
fn kvm_caps() -> String {
    let kvm = match Kvm::new() {
        Ok(k) => k,
        Err(e) => return format!("/dev/kvm unusable: {e}"),
    };
    let caps = [
        ("IRQCHIP", Cap::Irqchip),
        ("PIT2", Cap::Pit2),
        ("USER_MEMORY", Cap::UserMemory),
        ("SET_TSS_ADDR", Cap::SetTssAddr),
        ("EXT_CPUID", Cap::ExtCpuid),
        ("XSAVE", Cap::Xsave),
        ("XCRS", Cap::Xcrs),
        ("TSC_DEADLINE_TIMER", Cap::TscDeadlineTimer),
        ("IMMEDIATE_EXIT", Cap::ImmediateExit),
        ("X2APIC_API", Cap::X2ApicApi),
        ("GET_TSC_KHZ", Cap::GetTscKhz),
        ("NR_VCPUS", Cap::NrVcpus),
        ("MAX_VCPUS", Cap::MaxVcpus),
        ("NR_MEMSLOTS", Cap::NrMemslots),
    ];
    let mut out = format!("api version {}", kvm.get_api_version());
    for (name, cap) in caps {
        let _ = write!(out, ", {name}={}", kvm.check_extension_int(cap));
    }
    out
}

/// Where bundles go.
fn bundle_dir() -> PathBuf {
    std::env::var_os("KTSTR_VMM_DIAG_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("ktstr-vmm-diag"))
}

/// Writes a bundle; its path, or why it could not be written.
pub(crate) fn write_bundle(
    end: &str,
    spec: &str,
    vcpus: &[VcpuDiag],
    console: &[String],
) -> Result<PathBuf, VmmError> {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let mut b = format!(
        "ktstr-vmm diagnostic bundle: the own KVM VMM failed. Send this file with a bug \
         report; KTSTR_BACKEND=qemu runs ktstr on QEMU meanwhile.\n\nend: {end}\n\nhost cpu:\n  \
         {}\nhost kernel: {}\nkvm: {}\n\nvm spec:\n{spec}\n",
        host_cpu(),
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or_else(|e| format!("unreadable ({e})"), |s| s.trim().to_string()),
        kvm_caps()
    );
    for v in vcpus {
        let _ = write!(
            b,
            "\nvcpu {}:\n  registers: {}\n  events: {}\n  last exits (oldest first, {} in all):\n",
            v.index, v.regs, v.events, v.total_exits
        );
        for e in &v.exits {
            let _ = writeln!(b, "    {e}");
        }
    }
    let _ = write!(b, "\nconsole ({} lines):\n", console.len());
    for l in console {
        let _ = writeln!(b, "  {l}");
    }
    let dir = bundle_dir();
    std::fs::create_dir_all(&dir).map_err(|source| VmmError::File {
        action: "creating",
        path: dir.clone(),
        source,
    })?;
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let path = dir.join(format!(
        "{secs}-{}-{}.txt",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, b).map_err(|source| VmmError::File {
        action: "writing",
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exit_log_keeps_the_last_exits_and_counts_repeats() {
        let mut log = ExitLog::new();
        for _ in 0..3 {
            log.note("io-out", 0x3f8);
        }
        for port in 0..20u64 {
            log.note("io-in", port);
        }
        log.note("shutdown", 0);
        let lines = log.lines();
        assert_eq!(lines.len(), EXITS);
        assert_eq!(lines.last().map(String::as_str), Some("shutdown 0x0"));
        assert_eq!(lines[0], "io-in 0x5");
        assert_eq!(log.total, 24);
        let mut short = ExitLog::new();
        short.note("io-out", 0x3f8);
        short.note("io-out", 0x3f8);
        assert_eq!(short.lines(), ["io-out 0x3f8 x2"]);
    }

    #[test]
    fn the_host_cpu_names_its_model_and_flags() {
        let cpu = host_cpu();
        assert!(cpu.contains("model name:"), "{cpu}");
        assert!(cpu.contains("flags:"), "{cpu}");
    }
}
