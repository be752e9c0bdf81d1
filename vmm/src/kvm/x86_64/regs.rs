//! The boot vCPU's entry state (GDT, identity page tables, segments, control
//! registers) for the two entries Linux offers, and the state every vCPU gets
//! (MSRs, FPU, LAPIC LINT0/LINT1).

use kvm_bindings::{Msrs, kvm_fpu, kvm_msr_entry, kvm_regs, kvm_segment, kvm_sregs};
use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::layout::{BOOT_STACK, GDT_ADDR, IDT_ADDR, PD_ADDR, PDPT_ADDR, PML4_ADDR};
use crate::VmmError;
use crate::kvm::kvm_err;

/// How the boot vCPU enters the kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Entry {
    /// PVH: 32-bit protected mode, paging off, `%ebx` = `hvm_start_info`
    /// (xen docs misc/pvh.pandoc).
    Pvh { entry: u64, start_info: u64 },
    /// bzImage 64-bit entry: long mode on identity page tables, `%rsi` =
    /// `boot_params` (Documentation/arch/x86/boot.rst, "64-bit boot protocol").
    Linux64 { entry: u64, boot_params: u64 },
}

/// GDT selectors: Linux's 64-bit boot protocol wants `__BOOT_CS` = 0x10 and
/// `__BOOT_DS` = 0x18; PVH needs a flat 32-bit code segment (0x08).
const SEL_CODE32: u16 = 0x08;
const SEL_CODE64: u16 = 0x10;
const SEL_DATA: u16 = 0x18;
const SEL_TSS: u16 = 0x20;

/// A GDT entry from flags, base and limit (Intel SDM vol. 3A §3.4.5).
const fn gdt_entry(flags: u16, base: u32, limit: u32) -> u64 {
    ((base as u64 & 0xff00_0000) << 32)
        | ((flags as u64 & 0xf0ff) << 40)
        | ((limit as u64 & 0x000f_0000) << 32)
        | ((base as u64 & 0x00ff_ffff) << 16)
        | (limit as u64 & 0x0000_ffff)
}

/// The boot GDT: null, code32, code64, data, TSS.
pub(crate) const GDT: [u64; 5] = [
    0,
    gdt_entry(0xc09b, 0, 0xfffff),
    gdt_entry(0xa09b, 0, 0xfffff),
    gdt_entry(0xc093, 0, 0xfffff),
    gdt_entry(0x008b, 0, 0xfffff),
];

/// The KVM segment of GDT entry `entry` at selector `sel`.
fn segment(entry: u64, sel: u16) -> kvm_segment {
    let flag = |shift: u32, bits: u64| ((entry >> shift) & bits) as u8;
    kvm_segment {
        base: ((entry >> 16) & 0x00ff_ffff) | ((entry >> 32) & 0xff00_0000),
        limit: {
            let raw = ((entry & 0xffff) | ((entry >> 32) & 0x000f_0000)) as u32;
            if flag(55, 1) == 1 {
                (raw << 12) | 0xfff
            } else {
                raw
            }
        },
        selector: sel,
        type_: flag(40, 0xf),
        present: flag(47, 1),
        dpl: flag(45, 3),
        db: flag(54, 1),
        s: flag(44, 1),
        l: flag(53, 1),
        g: flag(55, 1),
        avl: flag(52, 1),
        unusable: 0,
        padding: 0,
    }
}

const CR0_PE: u64 = 1;
const CR0_ET: u64 = 1 << 4;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
/// Page table entry bits: present, writable, 2 MiB page.
const PTE_PRESENT_RW: u64 = 0x3;
const PTE_HUGE: u64 = 0x80;

/// Writes the GDT, an empty IDT and (for the 64-bit entry) the identity page
/// tables of the first 4 GiB.
pub(crate) fn write_boot_tables(mem: &GuestMemoryMmap, entry: Entry) -> Result<(), VmmError> {
    let w = |v: u64, at: u64| {
        mem.write_obj(v, GuestAddress(at))
            .map_err(|e| VmmError::Memory(format!("writing boot tables at {at:#x}: {e}")))
    };
    for (i, e) in GDT.iter().enumerate() {
        w(*e, GDT_ADDR + 8 * i as u64)?;
    }
    w(0, IDT_ADDR)?;
    if let Entry::Linux64 { .. } = entry {
        w(PDPT_ADDR | PTE_PRESENT_RW, PML4_ADDR)?;
        for gib in 0..4u64 {
            w(
                (PD_ADDR + gib * 0x1000) | PTE_PRESENT_RW,
                PDPT_ADDR + 8 * gib,
            )?;
        }
        for i in 0..2048u64 {
            w((i << 21) | PTE_PRESENT_RW | PTE_HUGE, PD_ADDR + 8 * i)?;
        }
    }
    Ok(())
}

/// Puts the boot vCPU at the kernel's entry.
pub(crate) fn setup_boot_vcpu(vcpu: &VcpuFd, entry: Entry) -> Result<(), VmmError> {
    let mut sregs: kvm_sregs = vcpu.get_sregs().map_err(kvm_err("KVM_GET_SREGS"))?;
    sregs.gdt.base = GDT_ADDR;
    sregs.gdt.limit = (GDT.len() * 8 - 1) as u16;
    sregs.idt.base = IDT_ADDR;
    sregs.idt.limit = 0;
    let data = segment(GDT[3], SEL_DATA);
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = segment(GDT[4], SEL_TSS);
    let mut regs = kvm_regs {
        rflags: 0x2,
        ..Default::default()
    };
    match entry {
        Entry::Pvh { entry, start_info } => {
            sregs.cs = segment(GDT[1], SEL_CODE32);
            sregs.cr0 = CR0_PE | CR0_ET;
            sregs.cr4 = 0;
            sregs.efer = 0;
            regs.rip = entry;
            regs.rbx = start_info;
        }
        Entry::Linux64 { entry, boot_params } => {
            sregs.cs = segment(GDT[2], SEL_CODE64);
            sregs.cr0 = CR0_PE | CR0_ET | CR0_PG;
            sregs.cr3 = PML4_ADDR;
            sregs.cr4 = CR4_PAE;
            sregs.efer = EFER_LME | EFER_LMA;
            regs.rip = entry;
            regs.rsi = boot_params;
            regs.rsp = BOOT_STACK;
            regs.rbp = BOOT_STACK;
        }
    }
    vcpu.set_sregs(&sregs).map_err(kvm_err("KVM_SET_SREGS"))?;
    vcpu.set_regs(&regs).map_err(kvm_err("KVM_SET_REGS"))
}

/// MSRs every vCPU starts with (Intel SDM vol. 4): SYSENTER/SYSCALL targets
/// cleared, fast strings on, MTRRs enabled with write-back default.
const BOOT_MSRS: &[(u32, u64)] = &[
    (0x174, 0),             // IA32_SYSENTER_CS
    (0x175, 0),             // IA32_SYSENTER_ESP
    (0x176, 0),             // IA32_SYSENTER_EIP
    (0xc000_0081, 0),       // STAR
    (0xc000_0082, 0),       // LSTAR
    (0xc000_0083, 0),       // CSTAR
    (0xc000_0084, 0),       // SYSCALL_MASK
    (0xc000_0102, 0),       // KERNEL_GS_BASE
    (0x10, 0),              // IA32_TSC
    (0x1a0, 1),             // IA32_MISC_ENABLE: fast strings
    (0x2ff, (1 << 11) | 6), // IA32_MTRR_DEF_TYPE: enabled, write-back
];

/// The `KVM_SET_MSRS` list of `(index, value)` pairs.
pub(crate) fn msr_list(pairs: &[(u32, u64)]) -> Result<Msrs, VmmError> {
    let entries: Vec<kvm_msr_entry> = pairs
        .iter()
        .map(|&(index, data)| kvm_msr_entry {
            index,
            data,
            ..Default::default()
        })
        .collect();
    Msrs::from_entries(&entries)
        .map_err(|e| VmmError::InvalidSpec(format!("building the MSR list: {e:?}")))
}

/// MSRs, FPU and LAPIC LVTs of one vCPU.
pub(crate) fn setup_vcpu_common(vcpu: &VcpuFd) -> Result<(), VmmError> {
    let msrs = msr_list(BOOT_MSRS)?;
    let set = vcpu.set_msrs(&msrs).map_err(kvm_err("KVM_SET_MSRS"))?;
    if set != BOOT_MSRS.len() {
        return Err(VmmError::InvalidSpec(format!(
            "KVM refused MSR {:#x} (set {set} of {})",
            BOOT_MSRS[set].0,
            BOOT_MSRS.len()
        )));
    }

    let fpu = kvm_fpu {
        fcw: 0x37f,    // x87 default control word (FNINIT)
        mxcsr: 0x1f80, // SSE default: all exceptions masked
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).map_err(kvm_err("KVM_SET_FPU"))?;

    // LINT0 delivers ExtINT (the PIC), LINT1 NMI, as a PC BIOS leaves them
    // (Intel SDM vol. 3A §11.5.1; MP spec §3.6.2.2 virtual wire mode).
    const APIC_LVT0: usize = 0x350;
    const APIC_LVT1: usize = 0x360;
    const DELIVERY_EXTINT: u32 = 0x7 << 8;
    const DELIVERY_NMI: u32 = 0x4 << 8;
    let mut lapic = vcpu.get_lapic().map_err(kvm_err("KVM_GET_LAPIC"))?;
    let mut set_lvt = |off: usize, mode: u32| {
        let get = |i: usize| lapic.regs[off + i] as u8;
        let old = u32::from_le_bytes([get(0), get(1), get(2), get(3)]);
        let new = (old & !0x700) | mode;
        for (i, b) in new.to_le_bytes().iter().enumerate() {
            lapic.regs[off + i] = *b as _;
        }
    };
    set_lvt(APIC_LVT0, DELIVERY_EXTINT);
    set_lvt(APIC_LVT1, DELIVERY_NMI);
    vcpu.set_lapic(&lapic).map_err(kvm_err("KVM_SET_LAPIC"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gdt_entries_decode_to_the_boot_segments() {
        assert_eq!(GDT[1], 0x00cf_9b00_0000_ffff);
        assert_eq!(GDT[2], 0x00af_9b00_0000_ffff);
        assert_eq!(GDT[3], 0x00cf_9300_0000_ffff);
        let cs = segment(GDT[2], SEL_CODE64);
        assert_eq!((cs.l, cs.db, cs.type_, cs.present, cs.s), (1, 0, 0xb, 1, 1));
        assert_eq!((cs.base, cs.limit), (0, 0xffff_ffff));
        let cs32 = segment(GDT[1], SEL_CODE32);
        assert_eq!((cs32.l, cs32.db, cs32.g), (0, 1, 1));
        let tss = segment(GDT[4], SEL_TSS);
        assert_eq!((tss.s, tss.type_, tss.present), (0, 0xb, 1));
    }
}
