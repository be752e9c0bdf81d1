//! CPUID leaves that carry the topology, synthesized per vCPU for the own KVM VMM.
//!
//! The VMM starts from the host's supported leaves (`KVM_GET_SUPPORTED_CPUID`),
//! converts them to [`CpuidEntry`] and calls [`apply_topology`] once per vCPU. The
//! rewritten leaves encode the APIC id layout of [`crate::ApicLayout`], which is
//! QEMU's, and sharing counts as QEMU encodes them (a power-of-two span of APIC
//! ids), so a guest decodes the same package, die, core, thread and LLC on either
//! backend and on Intel and AMD hosts:
//!
//! - 0x1: initial APIC id, addressable ids per package, HTT;
//! - 0x4 (Intel) and 0x8000001D (AMD): a fixed cache hierarchy, L1 and L2 per core,
//!   L3 per LLC (die);
//! - 0xB and 0x1F: SMT, core and (with several LLCs per node) die levels; the basic
//!   leaf count is raised to 0x1F, which Linux reads first on either vendor;
//! - 0x80000001 (TOPOEXT), 0x80000006 (L2/L3 descriptors), 0x80000008 (ids per
//!   package) and 0x8000001E (extended APIC id, core and node ids).

use alloc::vec::Vec;

use crate::topology::{CpuLocation, Topology};

pub use super::decode::{DecodeError, LinuxView, linux_view};

/// One CPUID leaf/subleaf and its four registers, as `kvm_cpuid_entry2` holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CpuidEntry {
    /// EAX input (leaf).
    pub function: u32,
    /// ECX input (subleaf), meaningful when `flags` has [`CPUID_FLAG_SIGNIFICANT_INDEX`].
    pub index: u32,
    /// KVM's entry flags.
    pub flags: u32,
    /// Output EAX.
    pub eax: u32,
    /// Output EBX.
    pub ebx: u32,
    /// Output ECX.
    pub ecx: u32,
    /// Output EDX.
    pub edx: u32,
}

/// `KVM_CPUID_FLAG_SIGNIFCANT_INDEX` (linux/kvm.h): the subleaf selects the entry.
pub const CPUID_FLAG_SIGNIFICANT_INDEX: u32 = 1;

/// CPU vendor, from the leaf 0 vendor string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Vendor {
    /// "GenuineIntel".
    Intel,
    /// "AuthenticAMD".
    Amd,
    /// "HygonGenuine": AMD's leaves apply, but Linux takes the LLC id from APIC id
    /// bits 3 and up whatever the leaves say.
    Hygon,
    /// Anything else: only the vendor-neutral leaves are written.
    Other,
}

/// What stops the leaves from being synthesized.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CpuidError {
    /// The vCPU index is past the topology's last CPU.
    #[error("cpuid for cpu {cpu}, but the topology has {nr_cpus} CPUs")]
    NoSuchCpu {
        /// The index given.
        cpu: u32,
        /// CPUs of the topology.
        nr_cpus: u32,
    },
    /// The host's leaves have no leaf 0 (vendor and basic leaf count).
    #[error("cpuid entries have no leaf 0: pass the host's supported CPUID")]
    NoLeafZero,
}

impl CpuidEntry {
    /// An entry whose subleaf is not significant.
    pub const fn leaf(function: u32, eax: u32, ebx: u32, ecx: u32, edx: u32) -> Self {
        Self {
            function,
            index: 0,
            flags: 0,
            eax,
            ebx,
            ecx,
            edx,
        }
    }

    /// An entry selected by leaf and subleaf.
    pub const fn subleaf(
        function: u32,
        index: u32,
        eax: u32,
        ebx: u32,
        ecx: u32,
        edx: u32,
    ) -> Self {
        Self {
            function,
            index,
            flags: CPUID_FLAG_SIGNIFICANT_INDEX,
            eax,
            ebx,
            ecx,
            edx,
        }
    }
}

/// Vendor of the leaves (leaf 0 EBX, EDX, ECX spell the vendor string).
pub fn vendor(entries: &[CpuidEntry]) -> Option<Vendor> {
    let leaf0 = entries.iter().find(|e| e.function == 0)?;
    let mut name = [0u8; 12];
    name[..4].copy_from_slice(&leaf0.ebx.to_le_bytes());
    name[4..8].copy_from_slice(&leaf0.edx.to_le_bytes());
    name[8..].copy_from_slice(&leaf0.ecx.to_le_bytes());
    Some(match &name {
        b"GenuineIntel" => Vendor::Intel,
        b"AuthenticAMD" => Vendor::Amd,
        b"HygonGenuine" => Vendor::Hygon,
        _ => Vendor::Other,
    })
}

/// Leaf numbers (Intel SDM vol. 2A CPUID; AMD APM vol. 3 appendix E).
const LEAF_FEATURES: u32 = 0x1;
const LEAF_CACHE: u32 = 0x4;
const LEAF_TOPOLOGY: u32 = 0xb;
const LEAF_TOPOLOGY_V2: u32 = 0x1f;
const LEAF_EXT_MAX: u32 = 0x8000_0000;
const LEAF_EXT_FEATURES: u32 = 0x8000_0001;
const LEAF_EXT_L2_L3: u32 = 0x8000_0006;
const LEAF_EXT_SIZES: u32 = 0x8000_0008;
const LEAF_AMD_CACHE: u32 = 0x8000_001d;
const LEAF_AMD_TOPOLOGY: u32 = 0x8000_001e;

/// Leaf 0x1 EDX bit 28: HTT, more than one logical processor per package.
const EDX1_HTT: u32 = 1 << 28;
/// Leaf 0x1 ECX bit 21: x2APIC.
const ECX1_X2APIC: u32 = 1 << 21;
/// Leaf 0x80000001 ECX bit 22: TopologyExtensions (0x8000001D/0x8000001E valid).
const ECX_EXT_TOPOEXT: u32 = 1 << 22;

/// Level types of leaves 0xB/0x1F ECX[15:8] (Intel SDM vol. 2A, leaf 1FH).
pub(crate) const LEVEL_SMT: u32 = 1;
pub(crate) const LEVEL_CORE: u32 = 2;
pub(crate) const LEVEL_DIE: u32 = 5;

/// The guest's cache hierarchy: fixed so every host shows the guest the same
/// caches; only the sharing follows the topology.
#[derive(Clone, Copy)]
struct Cache {
    level: u32,
    /// 1 data, 2 instruction, 3 unified (leaf 4 EAX[4:0]).
    kind: u32,
    size_kib: u32,
    ways: u32,
    /// Whether one LLC (die) shares it; otherwise one core.
    per_llc: bool,
}

const LINE_SIZE: u32 = 64;

const CACHES: [Cache; 4] = [
    Cache {
        level: 1,
        kind: 1,
        size_kib: 32,
        ways: 8,
        per_llc: false,
    },
    Cache {
        level: 1,
        kind: 2,
        size_kib: 32,
        ways: 8,
        per_llc: false,
    },
    Cache {
        level: 2,
        kind: 3,
        size_kib: 2048,
        ways: 16,
        per_llc: false,
    },
    Cache {
        level: 3,
        kind: 3,
        size_kib: 32768,
        ways: 16,
        per_llc: true,
    },
];

impl Cache {
    /// EAX/EBX/ECX/EDX of leaf 4 / 0x8000001D for this cache: type, level,
    /// self-initializing (bit 8), APIC ids sharing it minus one in EAX[25:14],
    /// then line size, partitions and ways minus one in EBX, sets minus one in ECX.
    fn registers(&self, sharing_ids: u32, core_ids_field: u32) -> [u32; 4] {
        let sets = self.size_kib * 1024 / LINE_SIZE / self.ways;
        let eax = self.kind
            | (self.level << 5)
            | (1 << 8)
            | (field(sharing_ids - 1, 12) << 14)
            | core_ids_field;
        let ebx = (LINE_SIZE - 1) | ((self.ways - 1) << 22);
        // EDX bit 1: inclusive of lower levels, as L2/L3 of most x86 parts report.
        let edx = u32::from(self.level > 1) << 1;
        [eax, ebx, sets - 1, edx]
    }
}

/// `value` saturated to a `bits`-wide field.
const fn field(value: u32, bits: u32) -> u32 {
    let max = (1u32 << bits) - 1;
    if value > max { max } else { value }
}

/// Rewrites the topology-bearing leaves of `entries` (the host's supported CPUID)
/// for vCPU `cpu` of `topo`. Leaves not listed in the module docs are kept.
///
/// One host family defeats the LLC encoding: on AMD family 17h models 00h-1Fh
/// (Zen 1) and on Hygon, Linux takes the LLC id from APIC id bits 3 and up
/// whatever the leaves say, so the guest's LLC groups match the declared ones
/// only when an LLC spans 8 APIC ids.
///
/// ```
/// use ktstr_topology::{Topology, cpuid::{CpuidEntry, apply_topology}};
///
/// let topo: Topology = "1n2l2c2t".parse()?;
/// let host = vec![CpuidEntry::leaf(0, 0xd, 0x756e_6547, 0x6c65_746e, 0x4965_6e69)]; // GenuineIntel
/// let mut leaves = host.clone();
/// apply_topology(&mut leaves, &topo, 5)?;
/// let leaf1 = leaves.iter().find(|e| e.function == 1).expect("leaf 1");
/// assert_eq!(leaf1.ebx >> 24, 5); // CPU 5: die 1, core 0, thread 1 -> APIC id 0b101
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn apply_topology(
    entries: &mut Vec<CpuidEntry>,
    topo: &Topology,
    cpu: u32,
) -> Result<(), CpuidError> {
    let loc = topo.cpu(cpu).ok_or(CpuidError::NoSuchCpu {
        cpu,
        nr_cpus: topo.nr_cpus(),
    })?;
    let vendor = vendor(entries).ok_or(CpuidError::NoLeafZero)?;
    let layout = topo.apic_layout();
    let apic = loc.apic_id;
    let ids_per_core = 1u32 << layout.core_shift();
    let ids_per_llc = 1u32 << layout.die_shift();
    let ids_per_package = 1u32 << layout.package_shift();
    let core_ids_per_package = 1u32 << (layout.package_shift() - layout.core_shift());

    // Leaf 0: at least 0x1F basic leaves, so Linux reads 0x1F (it does on AMD too).
    raise_max(entries, 0, LEAF_TOPOLOGY_V2);

    // Leaf 0x1 EBX[31:24] initial APIC id (low byte for x2APIC ids), EBX[23:16]
    // addressable ids per package; EDX HTT; ECX x2APIC when ids pass 254.
    let leaf1 = entry(entries, LEAF_FEATURES, None);
    leaf1.ebx =
        (leaf1.ebx & 0x0000_ffff) | ((apic & 0xff) << 24) | (field(ids_per_package, 8) << 16);
    if topo.cpus_per_node() > 1 {
        leaf1.edx |= EDX1_HTT;
    } else {
        leaf1.edx &= !EDX1_HTT;
    }
    if topo.max_apic_id() > 254 {
        leaf1.ecx |= ECX1_X2APIC;
    }

    // Leaf 0x4: caches, EAX[31:26] addressable core ids per package minus one.
    let core_field = field(core_ids_per_package - 1, 6) << 26;
    let caches: Vec<[u32; 4]> = CACHES
        .iter()
        .map(|c| {
            c.registers(
                if c.per_llc { ids_per_llc } else { ids_per_core },
                core_field,
            )
        })
        .collect();
    replace_subleaves(entries, LEAF_CACHE, &caches);

    // Leaf 0xB: SMT level, then a core level that reaches the package.
    let smt = [layout.core_shift(), topo.threads_per_core(), LEVEL_SMT];
    let core_to_package = [layout.package_shift(), topo.cpus_per_node(), LEVEL_CORE];
    replace_subleaves(
        entries,
        LEAF_TOPOLOGY,
        &levels(&[smt, core_to_package], apic),
    );

    // Leaf 0x1F: SMT, core, and a die level when a node holds several LLCs.
    let v2 = if topo.llcs_per_node() > 1 {
        let core = [layout.die_shift(), topo.cpus_per_llc(), LEVEL_CORE];
        let die = [layout.package_shift(), topo.cpus_per_node(), LEVEL_DIE];
        levels(&[smt, core, die], apic)
    } else {
        levels(&[smt, core_to_package], apic)
    };
    replace_subleaves(entries, LEAF_TOPOLOGY_V2, &v2);

    // 0x80000006 ECX/EDX: the L2 and L3 of CACHES in AMD's legacy encoding
    // (size, associativity code 8 = 16-way, line size).
    if max_leaf(entries, LEAF_EXT_MAX) >= LEAF_EXT_L2_L3 {
        let l2l3 = entry(entries, LEAF_EXT_L2_L3, None);
        l2l3.ecx = (CACHES[2].size_kib << 16) | (0x8 << 12) | LINE_SIZE;
        l2l3.edx = ((CACHES[3].size_kib / 512) << 18) | (0x8 << 12) | LINE_SIZE;
    }

    if matches!(vendor, Vendor::Amd | Vendor::Hygon) {
        apply_amd(entries, topo, &loc, &caches, ids_per_package)?;
    }
    Ok(())
}

/// The AMD-side leaves: TOPOEXT, 0x80000008 ids per package, 0x8000001D caches
/// (same layout as leaf 4, EAX[31:26] reserved), 0x8000001E ids.
fn apply_amd(
    entries: &mut Vec<CpuidEntry>,
    topo: &Topology,
    loc: &CpuLocation,
    caches: &[[u32; 4]],
    ids_per_package: u32,
) -> Result<(), CpuidError> {
    raise_max(entries, LEAF_EXT_MAX, LEAF_AMD_TOPOLOGY);
    entry(entries, LEAF_EXT_FEATURES, None).ecx |= ECX_EXT_TOPOEXT;

    // ECX[7:0] logical processors per package minus one, ECX[15:12] APIC id bits
    // below the package (AMD APM vol. 3, Fn8000_0008).
    let sizes = entry(entries, LEAF_EXT_SIZES, None);
    let id_bits = ids_per_package.trailing_zeros();
    sizes.ecx =
        (sizes.ecx & !0xf0ff) | (field(id_bits, 4) << 12) | field(topo.cpus_per_node() - 1, 8);

    let amd_caches: Vec<[u32; 4]> = caches
        .iter()
        .map(|[a, b, c, d]| [a & 0x03ff_ffff, *b, *c, *d])
        .collect();
    replace_subleaves(entries, LEAF_AMD_CACHE, &amd_caches);

    // EAX extended APIC id; EBX[7:0] core id unique in the package, EBX[15:8]
    // threads per core minus one; ECX[7:0] node id, ECX[10:8] nodes per package
    // minus one. The node id is the LLC number: older families (before 17h) take
    // the LLC id from it.
    let core_in_package = loc.die * topo.cores_per_llc() + loc.core;
    let ext = entry(entries, LEAF_AMD_TOPOLOGY, None);
    ext.eax = loc.apic_id;
    ext.ebx = field(core_in_package, 8) | (field(topo.threads_per_core() - 1, 8) << 8);
    ext.ecx = field(loc.llc, 8) | (field(topo.llcs_per_node() - 1, 3) << 8);
    ext.edx = 0;
    Ok(())
}

/// Subleaves of a 0xB/0x1F leaf for `[shift, logical processors, type]` levels,
/// ending with the invalid level that stops the walk.
fn levels(levels: &[[u32; 3]], apic: u32) -> Vec<[u32; 4]> {
    let mut out: Vec<[u32; 4]> = levels
        .iter()
        .enumerate()
        .map(|(n, [shift, cpus, kind])| [*shift, field(*cpus, 16), (n as u32) | (kind << 8), apic])
        .collect();
    out.push([0, 0, out.len() as u32, apic]);
    out
}

/// The entry for `function` (and `index`, when significant), created zeroed if
/// missing.
fn entry(entries: &mut Vec<CpuidEntry>, function: u32, index: Option<u32>) -> &mut CpuidEntry {
    let pos = entries
        .iter()
        .position(|e| e.function == function && index.is_none_or(|i| e.index == i));
    let pos = match pos {
        Some(pos) => pos,
        None => {
            entries.push(match index {
                Some(i) => CpuidEntry::subleaf(function, i, 0, 0, 0, 0),
                None => CpuidEntry::leaf(function, 0, 0, 0, 0),
            });
            entries.len() - 1
        }
    };
    &mut entries[pos]
}

/// Replaces every subleaf of `function` by `subleaves` (subleaf n = item n).
fn replace_subleaves(entries: &mut Vec<CpuidEntry>, function: u32, subleaves: &[[u32; 4]]) {
    entries.retain(|e| e.function != function);
    for (n, [eax, ebx, ecx, edx]) in subleaves.iter().enumerate() {
        entries.push(CpuidEntry::subleaf(
            function, n as u32, *eax, *ebx, *ecx, *edx,
        ));
    }
}

/// EAX of leaf `base` (0 or 0x80000000): the highest leaf of that range.
fn max_leaf(entries: &[CpuidEntry], base: u32) -> u32 {
    entries
        .iter()
        .find(|e| e.function == base)
        .map_or(0, |e| e.eax)
}

/// Raises the highest leaf of the range at `base` to at least `at_least`.
fn raise_max(entries: &mut Vec<CpuidEntry>, base: u32, at_least: u32) {
    let max = entry(entries, base, None);
    if max.eax < at_least {
        max.eax = at_least;
    }
}
