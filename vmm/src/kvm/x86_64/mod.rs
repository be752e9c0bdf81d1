//! x86-64 specifics of the KVM VMM: memory layout and e820, kernel loading and
//! the boot protocols, the boot vCPU's registers, per-vCPU CPUID.

#[cfg(test)]
mod aml;
pub(crate) mod boot;
pub(crate) mod cpuid;
pub(crate) mod layout;
pub(crate) mod msr;
pub(crate) mod regs;
