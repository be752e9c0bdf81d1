//! Placing the tables: addresses, cross-pointers, and writing them to a sink.

use alloc::vec::Vec;

use ktstr_topology::Topology;

use crate::error::AcpiError;
use crate::fadt::{FADT_LEN, FadtConfig, build_dsdt, build_fadt};
use crate::madt::{InterruptOverride, IoApic};
use crate::rsdp::{RSDP_LEN, build_rsdp, build_xsdt, xsdt_len};
use crate::sink::AcpiSink;
use crate::srat::MemoryAffinity;
use crate::{madt, slit, srat};

/// Where the RSDP goes by default: the start of the BIOS read-only area that Linux
/// scans for "RSD PTR " when the boot protocol does not pass its address
/// (ACPI 6.5 §5.2.5.1: 0xE0000..=0xFFFFF on IA-PC).
pub const DEFAULT_RSDP_ADDRESS: u64 = 0x000e_0000;

/// Tables start 8-byte aligned (§5.2.6 asks for 8-byte alignment of XSDT entries'
/// targets on 64-bit platforms as a recommendation).
const ALIGN: u64 = 8;

/// What the tables should say beyond the topology.
#[derive(Debug, Clone, Copy)]
pub struct AcpiConfig<'a> {
    /// Guest address of the RSDP.
    pub rsdp_address: u64,
    /// Guest address where the other tables start, one after the other.
    pub tables_address: u64,
    /// Guest RAM and its nodes, for the SRAT (see [`crate::node_memory_ranges`]).
    pub memory: &'a [MemoryAffinity],
    /// The IOAPIC.
    pub ioapic: IoApic,
    /// ISA interrupt source overrides.
    pub overrides: &'a [InterruptOverride],
    /// FADT registers and boot flags.
    pub fadt: FadtConfig,
    /// AML appended to the DSDT's body (device descriptions of the VMM).
    pub dsdt_aml: &'a [u8],
}

impl<'a> AcpiConfig<'a> {
    /// RSDP at [`DEFAULT_RSDP_ADDRESS`], the tables right after it, one IOAPIC at
    /// 0xfec00000, the timer override (IRQ 0 -> GSI 2), a default FADT and no
    /// extra AML.
    pub fn new(memory: &'a [MemoryAffinity]) -> Self {
        Self {
            rsdp_address: DEFAULT_RSDP_ADDRESS,
            tables_address: DEFAULT_RSDP_ADDRESS + 64,
            memory,
            ioapic: IoApic::default(),
            overrides: &[InterruptOverride::TIMER],
            fadt: FadtConfig::default(),
            dsdt_aml: &[],
        }
    }
}

/// One table and where it goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// The signature (`*b"RSDP"` for the RSDP, whose real one is "RSD PTR ").
    pub signature: [u8; 4],
    /// Guest physical address.
    pub address: u64,
    /// The table, checksummed.
    pub bytes: Vec<u8>,
}

/// The full set of tables for one VM, placed at guest addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcpiTables {
    tables: Vec<Table>,
}

impl AcpiTables {
    /// Every table: RSDP, XSDT, FADT, DSDT, MADT, SRAT, SLIT, in that order.
    pub fn tables(&self) -> &[Table] {
        &self.tables
    }

    /// The table with this signature.
    pub fn get(&self, signature: &[u8; 4]) -> Option<&Table> {
        self.tables.iter().find(|t| &t.signature == signature)
    }

    /// Guest address of the RSDP, for the boot protocol (PVH `rsdp_paddr`,
    /// `boot_params.acpi_rsdp_addr`).
    pub fn rsdp_address(&self) -> u64 {
        self.tables.first().map_or(0, |t| t.address)
    }

    /// The guest ranges `(address, length)` the tables occupy, for the e820 map
    /// (mark them ACPI reclaimable or reserved).
    pub fn ranges(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.tables
            .iter()
            .map(|t| (t.address, t.bytes.len() as u64))
    }

    /// Writes every table to its address.
    pub fn write_to<S: AcpiSink>(&self, sink: &mut S) -> Result<(), S::Error> {
        for table in &self.tables {
            sink.write_at(table.address, &table.bytes)?;
        }
        Ok(())
    }
}

/// Builds RSDP, XSDT, FADT, DSDT, MADT, SRAT and SLIT for `topo`.
///
/// ```
/// use ktstr_acpi::{AcpiConfig, AcpiSink, VecSink, build, node_memory_ranges};
/// use ktstr_topology::Topology;
///
/// let topo: Topology = "2n4l2c2t".parse()?;
/// let memory = node_memory_ranges(&topo, 3 << 30, 4 << 30);
/// let tables = build(&topo, &AcpiConfig::new(&memory))?;
/// let mut guest = VecSink::new(0);
/// tables.write_to(&mut guest)?;
/// assert_eq!(guest.read(tables.rsdp_address(), 8), Some(&b"RSD PTR "[..]));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn build(topo: &Topology, config: &AcpiConfig<'_>) -> Result<AcpiTables, AcpiError> {
    check_memory(topo, config.memory)?;
    let dsdt = build_dsdt(config.dsdt_aml);
    let madt = madt::build(topo, &config.ioapic, config.overrides);
    let srat = srat::build(topo, config.memory);
    let slit = slit::build(topo);

    let mut next = config.tables_address;
    let mut place = |len: usize| -> Result<u64, AcpiError> {
        let at = next
            .checked_next_multiple_of(ALIGN)
            .ok_or(AcpiError::AddressOverflow)?;
        next = at
            .checked_add(len as u64)
            .ok_or(AcpiError::AddressOverflow)?;
        Ok(at)
    };
    let dsdt_at = place(dsdt.len())?;
    let fadt_at = place(FADT_LEN)?;
    let madt_at = place(madt.len())?;
    let srat_at = place(srat.len())?;
    let slit_at = place(slit.len())?;
    let xsdt_at = place(xsdt_len(4))?;
    let end = next;

    let rsdp_end = config.rsdp_address + RSDP_LEN as u64;
    if config.rsdp_address < end && config.tables_address < rsdp_end {
        return Err(AcpiError::Overlap {
            rsdp_address: config.rsdp_address,
            tables_address: config.tables_address,
            tables_end: end,
        });
    }

    let fadt = build_fadt(&config.fadt, dsdt_at);
    let xsdt = build_xsdt(&[fadt_at, madt_at, srat_at, slit_at]);
    let rsdp = build_rsdp(xsdt_at);
    let table = |signature: &[u8; 4], address, bytes| Table {
        signature: *signature,
        address,
        bytes,
    };
    Ok(AcpiTables {
        tables: alloc::vec![
            table(b"RSDP", config.rsdp_address, rsdp),
            table(b"XSDT", xsdt_at, xsdt),
            table(b"FACP", fadt_at, fadt),
            table(b"DSDT", dsdt_at, dsdt),
            table(b"APIC", madt_at, madt),
            table(b"SRAT", srat_at, srat),
            table(b"SLIT", slit_at, slit),
        ],
    })
}

/// Every range names an existing node and every node has memory.
fn check_memory(topo: &Topology, memory: &[MemoryAffinity]) -> Result<(), AcpiError> {
    if let Some(r) = memory.iter().find(|r| r.node >= topo.numa_nodes()) {
        return Err(AcpiError::NoSuchNode {
            node: r.node,
            numa_nodes: topo.numa_nodes(),
        });
    }
    for node in 0..topo.numa_nodes() {
        if !memory.iter().any(|r| r.node == node && r.length > 0) {
            return Err(AcpiError::NodeWithoutMemory { node });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
