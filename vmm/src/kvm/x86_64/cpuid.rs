//! Per-vCPU CPUID: the host's supported leaves with the topology leaves of
//! `ktstr-topology` on top.

use ktstr_topology::Topology;
use ktstr_topology::cpuid::{CpuidEntry, apply_topology};
use kvm_bindings::{CpuId, kvm_cpuid_entry2};

use crate::VmmError;

pub(crate) fn from_kvm(cpuid: &CpuId) -> Vec<CpuidEntry> {
    cpuid
        .as_slice()
        .iter()
        .map(|e| CpuidEntry {
            function: e.function,
            index: e.index,
            flags: e.flags,
            eax: e.eax,
            ebx: e.ebx,
            ecx: e.ecx,
            edx: e.edx,
        })
        .collect()
}

/// The CPUID of logical CPU `cpu`: `supported` rewritten for its place in `topo`.
pub(crate) fn for_cpu(
    supported: &[CpuidEntry],
    topo: &Topology,
    cpu: u32,
) -> Result<CpuId, VmmError> {
    let mut entries = supported.to_vec();
    apply_topology(&mut entries, topo, cpu)
        .map_err(|e| VmmError::InvalidSpec(format!("CPUID of cpu {cpu}: {e}")))?;
    let kvm: Vec<kvm_cpuid_entry2> = entries
        .iter()
        .map(|e| kvm_cpuid_entry2 {
            function: e.function,
            index: e.index,
            flags: e.flags,
            eax: e.eax,
            ebx: e.ebx,
            ecx: e.ecx,
            edx: e.edx,
            ..Default::default()
        })
        .collect();
    CpuId::from_entries(&kvm).map_err(|e| {
        VmmError::InvalidSpec(format!("CPUID of cpu {cpu}: {} entries: {e:?}", kvm.len()))
    })
}
