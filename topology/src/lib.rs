//! The declared CPU topology of a test VM: NUMA nodes, LLCs, cores, SMT threads.
//!
//! Both VM backends realize what this crate declares: the QEMU backend through
//! its command line, the own KVM VMM through the CPUID leaves synthesized here
//! and the ACPI tables of `ktstr-acpi`. Work on it has not started yet.
#![no_std]
