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

/// CPUID feature bits a software `/dev/kvm` (no vmx/svm) cannot emulate:
/// `(leaf, subleaf, register index EAX=0..EDX=3, mask)`. Hiding them makes
/// guests take their fallbacks (Linux's SLUB stops using cmpxchg16b, hweight
/// its software popcount, the FPU code plain FXSAVE). shared/ENVIRONMENT.md
/// lists the instructions that stop the guest there.
const SOFTWARE_HYPERVISOR_HIDDEN: &[(u32, u32, usize, u32)] = &[
    // Leaf 1 ECX: MOVBE 22, POPCNT 23, XSAVE 26, OSXSAVE 27, AVX 28, F16C 29, CX16 13, FMA 12.
    (
        1,
        0,
        2,
        (1 << 12)
            | (1 << 13)
            | (1 << 22)
            | (1 << 23)
            | (1 << 26)
            | (1 << 27)
            | (1 << 28)
            | (1 << 29),
    ),
    // Leaf 7 EBX: AVX2 5, the AVX-512 family 16/17/21/26/27/28/30/31.
    (
        7,
        0,
        1,
        (1 << 5)
            | (1 << 16)
            | (1 << 17)
            | (1 << 21)
            | (1 << 26)
            | (1 << 27)
            | (1 << 28)
            | (1 << 30)
            | (1 << 31),
    ),
    // Leaf 7 ECX: AVX-512 VBMI 1, VBMI2 6, VNNI 11, BITALG 12, VPOPCNTDQ 14, VAES 9, VPCLMULQDQ 10.
    (
        7,
        0,
        2,
        (1 << 1) | (1 << 6) | (1 << 9) | (1 << 10) | (1 << 11) | (1 << 12) | (1 << 14),
    ),
    // Leaf 7 EDX: AVX512_4VNNIW 2, 4FMAPS 3, VP2INTERSECT 8, AVX512_FP16 23.
    (7, 0, 3, (1 << 2) | (1 << 3) | (1 << 8) | (1 << 23)),
    // Leaf 7.1 EAX: AVX-VNNI 4, AVX512_BF16 5.
    (7, 1, 0, (1 << 4) | (1 << 5)),
    // 0x80000001 ECX: ABM/LZCNT 5, SSE4A 6, XOP 11, FMA4 16; EDX: RDTSCP 27.
    (
        0x8000_0001,
        0,
        2,
        (1 << 5) | (1 << 6) | (1 << 11) | (1 << 16),
    ),
    (0x8000_0001, 0, 3, 1 << 27),
];

/// Hides [`SOFTWARE_HYPERVISOR_HIDDEN`] from `entries`.
pub(crate) fn hide_unemulated(entries: &mut [CpuidEntry]) {
    for &(leaf, sub, reg, mask) in SOFTWARE_HYPERVISOR_HIDDEN {
        for e in entries.iter_mut().filter(|e| {
            e.function == leaf
                && (e.flags & ktstr_topology::cpuid::CPUID_FLAG_SIGNIFICANT_INDEX == 0
                    || e.index == sub)
        }) {
            let r = match reg {
                0 => &mut e.eax,
                1 => &mut e.ebx,
                2 => &mut e.ecx,
                _ => &mut e.edx,
            };
            *r &= !mask;
        }
    }
}

/// "AuthenticAMD" in leaf 0 EBX.
const AMD_EBX: u32 = 0x6874_7541;

/// Leaf 1 EAX as Linux reads it: `(family, model)` (AMD APM vol. 3, Fn0000_0001_EAX).
fn family_model(eax: u32) -> (u32, u32) {
    let base = (eax >> 8) & 0xf;
    let family = if base == 0xf {
        base + ((eax >> 20) & 0xff)
    } else {
        base
    };
    let model = ((eax >> 4) & 0xf) | (((eax >> 16) & 0xf) << 4);
    (family, model)
}

/// Keeps the LLC of the declared topology readable on a Zen 1 host.
///
/// Linux takes the LLC id of AMD family 17h models 0x00-0x1f from APIC id
/// bits 3 and up (one core complex per 8 APIC ids, arch/x86/kernel/cpu/
/// cacheinfo.c) and only from later models on from the sharing count of leaf
/// 0x8000001D that `ktstr-topology` writes. On such a host (QEMU's `EPYC`
/// model is one) a 1n2l2c2t guest saw one LLC of 8 CPUs instead of two of 4.
/// The guest is shown model 0x20 of the same family instead: still Zen 1 to
/// Linux (X86_FEATURE_ZEN1 covers models 0x00-0x2f), with the LLC read from
/// 0x8000001D.
pub(crate) fn keep_llc_readable(entries: &mut [CpuidEntry]) {
    let amd = entries.iter().any(|e| e.function == 0 && e.ebx == AMD_EBX);
    let Some(leaf1) = entries.iter_mut().find(|e| e.function == 1) else {
        return;
    };
    let (family, model) = family_model(leaf1.eax);
    if amd && family == 0x17 && model <= 0x1f {
        // Model 0x20: extended model 2 (bits 19:16), base model 0 (bits 7:4).
        leaf1.eax = (leaf1.eax & !0x000f_00f0) | (0x2 << 16);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn software_hypervisor_profile_hides_cx16_popcnt_xsave_rdtscp() {
        let mut e = vec![
            CpuidEntry::leaf(1, 0, 0, u32::MAX, u32::MAX),
            CpuidEntry::subleaf(7, 0, 0, u32::MAX, 0, 0),
            CpuidEntry::subleaf(7, 1, 0xff, 0, 0, 0),
            CpuidEntry::leaf(0x8000_0001, 0, 0, 0, u32::MAX),
        ];
        hide_unemulated(&mut e);
        assert_eq!(e[0].ecx & (1 << 13), 0, "CX16");
        assert_eq!(e[0].ecx & (1 << 23), 0, "POPCNT");
        assert_eq!(e[0].ecx & (1 << 26), 0, "XSAVE");
        assert_ne!(e[0].ecx & 1, 0, "SSE3 stays");
        assert_eq!(e[0].edx, u32::MAX, "leaf 1 EDX untouched");
        assert_eq!(e[1].ebx & (1 << 5), 0, "AVX2");
        assert_eq!(e[2].eax, 0xff & !0x30, "leaf 7.1 by its own subleaf");
        assert_eq!(e[3].edx & (1 << 27), 0, "RDTSCP");
    }

    /// QEMU's EPYC (family 17h model 1, the CPU of the nested L1): with the
    /// model raised, what Linux decodes for every CPU is the declared LLC.
    #[test]
    fn a_zen1_host_still_shows_the_declared_llcs() {
        use ktstr_topology::cpuid::{apply_topology, linux_view};
        let host = vec![
            CpuidEntry::leaf(0, 0xd, AMD_EBX, 0x444d_4163, 0x6974_6e65),
            // Family 0xf + 8 = 0x17, model 1, stepping 2.
            CpuidEntry::leaf(1, 0x0080_0f12, 0, 0, 0),
            CpuidEntry::leaf(0x8000_0000, 0x8000_001f, 0, 0, 0),
        ];
        for topo in ["1n2l2c2t", "2n4l2c1t", "1n3l2c1t"] {
            let t: Topology = topo.parse().expect("topology");
            let views = |fix: bool| -> Vec<Option<u32>> {
                t.cpus()
                    .map(|c| {
                        let mut e = host.clone();
                        if fix {
                            keep_llc_readable(&mut e);
                        }
                        apply_topology(&mut e, &t, c.cpu).expect("cpuid");
                        linux_view(&e).expect("view").llc_id
                    })
                    .collect()
            };
            let declared: Vec<u32> = t.cpus().map(|c| c.llc).collect();
            let fixed = views(true);
            for (cpu, (a, b)) in fixed.iter().zip(&declared).enumerate() {
                for (other, (c, d)) in fixed.iter().zip(&declared).enumerate() {
                    assert_eq!(a == c, b == d, "{topo}: cpus {cpu} and {other}");
                }
            }
            assert_ne!(
                views(false),
                fixed,
                "{topo}: the Zen 1 rule merged LLCs before"
            );
        }
        let mut e = host.clone();
        keep_llc_readable(&mut e);
        assert_eq!(family_model(e[1].eax), (0x17, 0x20));
        assert_eq!(e[1].eax & 0xf, 2, "stepping kept");
    }
}
