//! ACPI tables (RSDP, XSDT, FADT, DSDT, MADT, SRAT, SLIT) built from a declared topology.
//!
//! The own KVM VMM places these tables in guest memory so the guest kernel finds
//! exactly the declared CPUs (MADT, in logical CPU order, x2APIC entries for ids
//! from 255 up), which NUMA node each CPU and each RAM range belongs to (SRAT), and
//! the distances between nodes (SLIT). The machine is described as hardware-reduced
//! ACPI (no PM1 blocks, no SCI), with one IOAPIC.
//!
//! Tables are built as checksummed bytes ([`build`]) and written through the
//! [`AcpiSink`] trait: the VMM implements it over guest RAM, tests use [`VecSink`].
//!
//! ```
//! use ktstr_acpi::{AcpiConfig, VecSink, build, node_memory_ranges};
//! use ktstr_topology::Topology;
//!
//! let topo: Topology = "2n2l2c1t".parse()?;
//! let memory = node_memory_ranges(&topo, 0xc000_0000, 1 << 32);
//! let tables = build(&topo, &AcpiConfig::new(&memory))?;
//! for table in tables.tables() {
//!     let sum = table.bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b));
//!     assert_eq!(sum, 0, "{:?}", table.signature);
//! }
//! let mut guest = VecSink::new(0);
//! tables.write_to(&mut guest)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![no_std]

extern crate alloc;

pub mod aml;
mod error;
mod fadt;
mod madt;
mod rsdp;
mod sdt;
mod sink;
mod slit;
mod srat;
mod tables;

pub use error::AcpiError;
pub use fadt::{
    BOOT_ARCH_8042, BOOT_ARCH_CMOS_RTC_NOT_PRESENT, BOOT_ARCH_LEGACY_DEVICES,
    BOOT_ARCH_VGA_NOT_PRESENT, FadtConfig, IoPort, S5_SLEEP_TYPE,
};
pub use madt::{InterruptOverride, IoApic, LOCAL_APIC_ADDRESS, MAX_XAPIC_ID};
pub use sink::{AcpiSink, OutOfRange, VecSink};
pub use srat::{MemoryAffinity, node_memory_ranges};
pub use tables::{AcpiConfig, AcpiTables, DEFAULT_RSDP_ADDRESS, Table, build};
