//! MADT: the interrupt controllers, one local APIC or x2APIC entry per CPU
//! (ACPI 6.5 §5.2.12).

use alloc::vec::Vec;

use ktstr_topology::Topology;
use zerocopy::little_endian::{U16, U32};
use zerocopy::{Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::sdt::{Sdt, len_of};

/// Address of every local APIC (Intel SDM vol. 3A §11.4.1, the reset value of
/// IA32_APIC_BASE).
pub const LOCAL_APIC_ADDRESS: u32 = 0xfee0_0000;

/// Highest APIC id a Processor Local APIC entry can carry: 255 is the broadcast id,
/// so ids from 255 up take a Processor Local x2APIC entry (ACPI 6.5 §5.2.12.12).
pub const MAX_XAPIC_ID: u32 = 254;

/// MADT Flags: PCAT_COMPAT, a dual 8259 PIC is present (Table 5.20).
const PCAT_COMPAT: u32 = 1;
/// Local APIC / x2APIC flags: Enabled (Table 5.23).
const ENABLED: u32 = 1;

/// Interrupt controller structure types (Table 5.21).
const TYPE_LOCAL_APIC: u8 = 0;
const TYPE_IO_APIC: u8 = 1;
const TYPE_INTERRUPT_OVERRIDE: u8 = 2;
const TYPE_LOCAL_APIC_NMI: u8 = 4;
const TYPE_LOCAL_X2APIC: u8 = 9;
const TYPE_LOCAL_X2APIC_NMI: u8 = 0xa;

/// MPS INTI flags (Table 5.26): active high, edge triggered; NMIs arrive on LINT1.
const NMI_FLAGS: u16 = 0b0101;
const NMI_LINT: u8 = 1;
/// Processor UID meaning "all processors" in the NMI entries.
const ALL_XAPIC: u8 = 0xff;
const ALL_X2APIC: u32 = 0xffff_ffff;

/// The IOAPIC of the VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoApic {
    /// Its IOAPIC id.
    pub id: u8,
    /// MMIO base address.
    pub address: u32,
    /// First global system interrupt it serves.
    pub gsi_base: u32,
}

impl Default for IoApic {
    /// One IOAPIC at the PC's usual 0xfec00000 serving GSIs from 0.
    fn default() -> Self {
        Self {
            id: 0,
            address: 0xfec0_0000,
            gsi_base: 0,
        }
    }
}

/// An ISA interrupt routed to another GSI or with other polarity/trigger
/// (Interrupt Source Override, ACPI 6.5 §5.2.12.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InterruptOverride {
    /// ISA IRQ.
    pub source: u8,
    /// Global system interrupt it arrives on.
    pub gsi: u32,
    /// MPS INTI flags (Table 5.26): bits 1:0 polarity, 3:2 trigger mode.
    pub flags: u16,
}

impl InterruptOverride {
    /// The PC timer: ISA IRQ 0 arrives on IOAPIC pin 2, as on every PC with an IOAPIC.
    pub const TIMER: InterruptOverride = InterruptOverride {
        source: 0,
        gsi: 2,
        flags: 0,
    };
}

#[derive(IntoBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
struct MadtFields {
    local_apic_address: U32,
    flags: U32,
}

/// Processor Local APIC Structure (§5.2.12.2), 8 bytes.
#[derive(IntoBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
struct LocalApic {
    kind: u8,
    length: u8,
    processor_uid: u8,
    apic_id: u8,
    flags: U32,
}

/// Processor Local x2APIC Structure (§5.2.12.12), 16 bytes.
#[derive(IntoBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
struct LocalX2Apic {
    kind: u8,
    length: u8,
    reserved: U16,
    x2apic_id: U32,
    flags: U32,
    processor_uid: U32,
}

/// I/O APIC Structure (§5.2.12.3), 12 bytes.
#[derive(IntoBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
struct IoApicEntry {
    kind: u8,
    length: u8,
    id: u8,
    reserved: u8,
    address: U32,
    gsi_base: U32,
}

/// Interrupt Source Override Structure (§5.2.12.5), 10 bytes.
#[derive(IntoBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
struct OverrideEntry {
    kind: u8,
    length: u8,
    bus: u8,
    source: u8,
    gsi: U32,
    flags: U16,
}

/// Local APIC NMI Structure (§5.2.12.7), 6 bytes.
#[derive(IntoBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
struct LocalApicNmi {
    kind: u8,
    length: u8,
    processor_uid: u8,
    flags: U16,
    lint: u8,
}

/// Local x2APIC NMI Structure (§5.2.12.13), 12 bytes.
#[derive(IntoBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
struct LocalX2ApicNmi {
    kind: u8,
    length: u8,
    flags: U16,
    processor_uid: U32,
    lint: u8,
    reserved: [u8; 3],
}

/// Builds the MADT: the CPUs in logical CPU order (Linux numbers them in this
/// order), each CPU's ACPI processor UID being its CPU number, then the IOAPIC,
/// the interrupt source overrides and LINT1 as NMI on every CPU.
pub(crate) fn build(topo: &Topology, ioapic: &IoApic, overrides: &[InterruptOverride]) -> Vec<u8> {
    // Revision 5: ACPI 6.5 Table 5.19.
    let mut sdt = Sdt::new(*b"APIC", 5);
    sdt.push(&MadtFields {
        local_apic_address: U32::new(LOCAL_APIC_ADDRESS),
        flags: U32::new(PCAT_COMPAT),
    });
    let mut any_x2apic = false;
    for cpu in topo.cpus() {
        // An xAPIC entry needs both the id and the UID in a byte; the id decides
        // (ACPI 6.5 §5.2.12.12: x2APIC entries only for ids from 255 up when both
        // kinds are present, which Linux enforces).
        let xapic_id = u8::try_from(cpu.apic_id)
            .ok()
            .filter(|_| cpu.apic_id <= MAX_XAPIC_ID);
        match (xapic_id, u8::try_from(cpu.cpu)) {
            (Some(apic_id), Ok(processor_uid)) => sdt.push(&LocalApic {
                kind: TYPE_LOCAL_APIC,
                length: len_of::<LocalApic>(),
                processor_uid,
                apic_id,
                flags: U32::new(ENABLED),
            }),
            _ => {
                any_x2apic = true;
                sdt.push(&LocalX2Apic {
                    kind: TYPE_LOCAL_X2APIC,
                    length: len_of::<LocalX2Apic>(),
                    reserved: U16::ZERO,
                    x2apic_id: U32::new(cpu.apic_id),
                    flags: U32::new(ENABLED),
                    processor_uid: U32::new(cpu.cpu),
                });
            }
        }
    }
    sdt.push(&IoApicEntry {
        kind: TYPE_IO_APIC,
        length: len_of::<IoApicEntry>(),
        id: ioapic.id,
        reserved: 0,
        address: U32::new(ioapic.address),
        gsi_base: U32::new(ioapic.gsi_base),
    });
    for o in overrides {
        sdt.push(&OverrideEntry {
            kind: TYPE_INTERRUPT_OVERRIDE,
            length: len_of::<OverrideEntry>(),
            bus: 0, // ISA, the only bus defined (§5.2.12.5)
            source: o.source,
            gsi: U32::new(o.gsi),
            flags: U16::new(o.flags),
        });
    }
    sdt.push(&LocalApicNmi {
        kind: TYPE_LOCAL_APIC_NMI,
        length: len_of::<LocalApicNmi>(),
        processor_uid: ALL_XAPIC,
        flags: U16::new(NMI_FLAGS),
        lint: NMI_LINT,
    });
    if any_x2apic {
        sdt.push(&LocalX2ApicNmi {
            kind: TYPE_LOCAL_X2APIC_NMI,
            length: len_of::<LocalX2ApicNmi>(),
            flags: U16::new(NMI_FLAGS),
            processor_uid: U32::new(ALL_X2APIC),
            lint: NMI_LINT,
            reserved: [0; 3],
        });
    }
    sdt.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structure_sizes_match_the_spec() {
        use core::mem::size_of;
        assert_eq!(size_of::<LocalApic>(), 8);
        assert_eq!(size_of::<LocalX2Apic>(), 16);
        assert_eq!(size_of::<IoApicEntry>(), 12);
        assert_eq!(size_of::<OverrideEntry>(), 10);
        assert_eq!(size_of::<LocalApicNmi>(), 6);
        assert_eq!(size_of::<LocalX2ApicNmi>(), 12);
    }
}
