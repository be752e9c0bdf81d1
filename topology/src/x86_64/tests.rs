//! The synthesized leaves, decoded as Linux decodes them, give back the declared
//! topology on Intel and AMD hosts.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::vec::Vec;

use proptest::prelude::*;

use super::cpuid::{
    CpuidEntry, DecodeError, LinuxView, Vendor, apply_topology, linux_view, vendor,
};
use crate::{PRESETS, Topology};

/// Vendor strings as leaf 0 EBX, EDX, ECX.
const INTEL: [u32; 3] = [0x756e_6547, 0x4965_6e69, 0x6c65_746e];
const AMD: [u32; 3] = [0x6874_7541, 0x6974_6e65, 0x444d_4163];

/// Leaves of a host that says something else about topology than we will: the
/// synthesis must overwrite all of it.
fn host(vendor: [u32; 3], max_basic: u32, family_model: u32) -> Vec<CpuidEntry> {
    let mut leaves = alloc::vec![
        CpuidEntry::leaf(0, max_basic, vendor[0], vendor[2], vendor[1]),
        CpuidEntry::leaf(1, family_model, 0x1f20_0800, 0x7ffa_3203, 0x178b_fbff),
        CpuidEntry::leaf(0x8000_0000, 0x8000_0008, 0, 0, 0),
        CpuidEntry::leaf(0x8000_0001, 0, 0, 0x0000_0121, 0x2c10_0800),
        CpuidEntry::leaf(0x8000_0006, 0, 0, 0x0200_6140, 0x0200_9140),
        CpuidEntry::leaf(0x8000_0008, 0x3030, 0, 0x0000_700f, 0),
    ];
    // A host cache leaf claiming 64 threads share everything.
    leaves.push(CpuidEntry::subleaf(4, 0, 0xfc0f_c121, 0x01c0_003f, 0x3f, 0));
    leaves.push(CpuidEntry::subleaf(0xb, 0, 1, 2, 0x100, 7));
    leaves.push(CpuidEntry::subleaf(0xb, 1, 6, 64, 0x201, 7));
    leaves
}

fn intel_host() -> Vec<CpuidEntry> {
    // Family 6 model 0x55 (a Xeon), 0x16 basic leaves.
    host(INTEL, 0x16, 0x0005_0654)
}

fn amd_host(family_model: u32) -> Vec<CpuidEntry> {
    host(AMD, 0x10, family_model)
}

/// AMD family 19h (Zen 3) and 15h (Bulldozer): LLC ids from 0x8000001D and from
/// 0x8000001E's node id.
const AMD_FAM19: u32 = 0x00a0_0f11;
const AMD_FAM15: u32 = 0x0060_0f20;

fn hosts() -> [(&'static str, Vec<CpuidEntry>); 3] {
    [
        ("intel", intel_host()),
        ("amd-fam19h", amd_host(AMD_FAM19)),
        ("amd-fam15h", amd_host(AMD_FAM15)),
    ]
}

fn view(host: &[CpuidEntry], topo: &Topology, cpu: u32) -> LinuxView {
    let mut leaves = host.to_vec();
    apply_topology(&mut leaves, topo, cpu).expect("cpu exists");
    linux_view(&leaves).expect("Linux can read the leaves")
}

/// Every CPU decodes to its declared package/die/core/thread, and the LLC ids
/// group the CPUs exactly as the declared LLCs do.
fn check(topo: &Topology) {
    for (name, host) in hosts() {
        let mut groups: BTreeMap<u32, BTreeSet<u32>> = BTreeMap::new();
        for loc in topo.cpus() {
            let v = view(&host, topo, loc.cpu);
            let got = (v.apic_id, v.package, v.die, v.core, v.thread);
            let want = (loc.apic_id, loc.package, loc.die, loc.core, loc.thread);
            assert_eq!(got, want, "{name} {topo} cpu {}", loc.cpu);
            assert_eq!(v.topology_leaf, 0x1f, "{name}: Linux reads 0x1F first");
            let llc = v
                .llc_id
                .unwrap_or_else(|| panic!("{name} {topo}: no LLC id"));
            groups.entry(llc).or_default().insert(loc.cpu);
        }
        let got: BTreeSet<BTreeSet<u32>> = groups.into_values().collect();
        let want: BTreeSet<BTreeSet<u32>> = (0..topo.llcs())
            .map(|l| topo.llc_cpus(l).collect())
            .collect();
        assert_eq!(got, want, "{name} {topo}: LLC groups");
    }
}

#[test]
fn every_preset_decodes_to_its_topology() {
    for p in PRESETS {
        check(&p.topology);
    }
}

#[test]
fn x2apic_ids_decode_too() {
    check(&Topology::new(2, 6, 20, 2).expect("valid"));
}

#[test]
fn leaf_0xb_alone_still_gives_package_core_thread_and_llc() {
    // An older guest kernel, or one that ignores 0x1F: no dies, but the package
    // boundary, SMT siblings and LLCs (from leaf 4) stay right.
    let topo = Topology::new(2, 6, 3, 2).expect("valid");
    for loc in topo.cpus() {
        let mut leaves = intel_host();
        apply_topology(&mut leaves, &topo, loc.cpu).expect("cpu exists");
        leaves.retain(|e| e.function != 0x1f);
        let v = linux_view(&leaves).expect("0xB is there");
        assert_eq!(v.topology_leaf, 0xb);
        assert_eq!((v.package, v.thread), (loc.package, loc.thread));
        let per_llc = 1 << topo.apic_layout().die_shift();
        assert_eq!(v.llc_id, Some(loc.apic_id / per_llc));
    }
}

#[test]
fn leaf_1_carries_the_initial_apic_id_and_htt() {
    let topo = Topology::new(1, 2, 2, 2).expect("valid");
    let mut leaves = intel_host();
    apply_topology(&mut leaves, &topo, 6).expect("cpu exists");
    let leaf1 = leaves.iter().find(|e| e.function == 1).expect("leaf 1");
    assert_eq!(leaf1.ebx >> 24, 6);
    assert_eq!((leaf1.ebx >> 16) & 0xff, 8, "8 addressable ids per package");
    assert_eq!(leaf1.ebx & 0xffff, 0x0800, "brand and CLFLUSH kept");
    assert_ne!(leaf1.edx & (1 << 28), 0, "HTT");
    let tiny = Topology::new(1, 1, 1, 1).expect("valid");
    let mut leaves = intel_host();
    apply_topology(&mut leaves, &tiny, 0).expect("cpu exists");
    let leaf1 = leaves.iter().find(|e| e.function == 1).expect("leaf 1");
    assert_eq!(leaf1.edx & (1 << 28), 0, "no HTT with one CPU");
}

#[test]
fn amd_needs_and_gets_topoext() {
    let host = amd_host(AMD_FAM19);
    assert_eq!(linux_view(&host), Err(DecodeError::NoTopoext));
    let topo = Topology::new(1, 1, 2, 1).expect("valid");
    let mut leaves = host;
    apply_topology(&mut leaves, &topo, 1).expect("cpu exists");
    let ext = leaves
        .iter()
        .find(|e| e.function == 0x8000_0000)
        .expect("ext max");
    assert!(ext.eax >= 0x8000_001e);
    assert_eq!(vendor(&leaves), Some(Vendor::Amd));
}

#[test]
fn errors_name_the_problem() {
    let topo = Topology::new(1, 1, 2, 1).expect("valid");
    let mut leaves = intel_host();
    let err = apply_topology(&mut leaves, &topo, 2).expect_err("only 2 CPUs");
    assert_eq!(
        alloc::format!("{err}"),
        "cpuid for cpu 2, but the topology has 2 CPUs"
    );
    let mut empty = Vec::new();
    assert!(apply_topology(&mut empty, &topo, 0).is_err());
}

fn valid_topology() -> impl Strategy<Value = Topology> {
    (1u32..=4)
        .prop_flat_map(|n| (Just(n), 1..=16 / n, 1u32..=16, 1u32..=2))
        .prop_filter_map("valid topologies only", |(n, per_node, c, t)| {
            Topology::new(n, n * per_node, c, t).ok()
        })
}

proptest! {
    #[test]
    fn generated_topologies_decode(topo in valid_topology()) {
        check(&topo);
    }
}
