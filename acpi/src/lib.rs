//! ACPI tables (RSDP, XSDT, FADT, DSDT, MADT, SRAT, SLIT) built from a declared topology.
//!
//! The own KVM VMM places these tables in guest memory so the guest kernel
//! sees the declared CPUs and NUMA nodes. Work on it has not started yet.
#![no_std]
