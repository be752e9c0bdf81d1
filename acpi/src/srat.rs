//! SRAT: which NUMA node (proximity domain) each CPU and memory range belongs to
//! (ACPI 6.5 §5.2.16).

use alloc::vec::Vec;

use ktstr_topology::Topology;
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::madt::MAX_XAPIC_ID;
use crate::sdt::{Sdt, len_of};

/// A range of guest RAM and the NUMA node it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryAffinity {
    /// First guest physical address.
    pub base: u64,
    /// Length in bytes.
    pub length: u64,
    /// NUMA node (proximity domain).
    pub node: u32,
}

/// Lays the nodes' RAM out from guest address 0, node after node, skipping the
/// hole `[hole_start, hole_end)` below 4 GiB where the PCI and APIC MMIO live; a
/// node that straddles the hole gets two ranges.
///
/// ```
/// use ktstr_acpi::{node_memory_ranges, MemoryAffinity};
/// use ktstr_topology::Topology;
///
/// let topo = Topology::new(2, 2, 1, 1)?.with_memory_mib(4096)?;
/// let ranges = node_memory_ranges(&topo, 3 << 30, 4 << 30);
/// let gib = 1u64 << 30;
/// assert_eq!(ranges, [
///     MemoryAffinity { base: 0, length: 2 * gib, node: 0 },
///     MemoryAffinity { base: 2 * gib, length: gib, node: 1 },
///     MemoryAffinity { base: 4 * gib, length: gib, node: 1 },
/// ]);
/// # Ok::<(), ktstr_topology::TopologyError>(())
/// ```
pub fn node_memory_ranges(topo: &Topology, hole_start: u64, hole_end: u64) -> Vec<MemoryAffinity> {
    const MIB: u64 = 1 << 20;
    let mut ranges = Vec::new();
    let mut next = 0u64;
    for node in 0..topo.numa_nodes() {
        let mut left = u64::from(topo.node_memory_mib(node).unwrap_or(0)) * MIB;
        while left > 0 {
            if next >= hole_start && next < hole_end {
                next = hole_end;
            }
            let room = if next < hole_start {
                hole_start - next
            } else {
                u64::MAX - next
            };
            let length = left.min(room);
            ranges.push(MemoryAffinity {
                base: next,
                length,
                node,
            });
            next += length;
            left -= length;
        }
    }
    ranges
}

/// SRAT body fields after the header (Table 5.69).
#[derive(IntoBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
struct SratFields {
    /// Must be 1 "for backward compatibility".
    reserved1: U32,
    reserved2: U64,
}

/// Structure types (§5.2.16).
const TYPE_LOCAL_APIC_AFFINITY: u8 = 0;
const TYPE_MEMORY_AFFINITY: u8 = 1;
const TYPE_LOCAL_X2APIC_AFFINITY: u8 = 2;
/// Flags: Enabled (Tables 5.71, 5.73, 5.75).
const ENABLED: u32 = 1;

/// Processor Local APIC/SAPIC Affinity Structure (§5.2.16.1), 16 bytes.
#[derive(IntoBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
struct LocalApicAffinity {
    kind: u8,
    length: u8,
    proximity_domain_low: u8,
    apic_id: u8,
    flags: U32,
    local_sapic_eid: u8,
    proximity_domain_high: [u8; 3],
    clock_domain: U32,
}

/// Memory Affinity Structure (§5.2.16.2), 40 bytes.
#[derive(IntoBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
struct MemoryAffinityEntry {
    kind: u8,
    length: u8,
    proximity_domain: U32,
    reserved1: U16,
    base: U64,
    length_bytes: U64,
    reserved2: U32,
    flags: U32,
    reserved3: U64,
}

/// Processor Local x2APIC Affinity Structure (§5.2.16.3), 24 bytes.
#[derive(IntoBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
struct LocalX2ApicAffinity {
    kind: u8,
    length: u8,
    reserved1: U16,
    proximity_domain: U32,
    x2apic_id: U32,
    flags: U32,
    clock_domain: U32,
    reserved2: U32,
}

/// Builds the SRAT: every CPU (in CPU order, the same kind of entry as in the
/// MADT) with its node, then every memory range.
pub(crate) fn build(topo: &Topology, memory: &[MemoryAffinity]) -> Vec<u8> {
    // Revision 3: ACPI 6.5 Table 5.69.
    let mut sdt = Sdt::new(*b"SRAT", 3);
    sdt.push(&SratFields {
        reserved1: U32::new(1),
        reserved2: U64::ZERO,
    });
    for cpu in topo.cpus() {
        let [d0, d1, d2, d3] = cpu.node.to_le_bytes();
        match u8::try_from(cpu.apic_id) {
            Ok(apic_id) if cpu.apic_id <= MAX_XAPIC_ID => sdt.push(&LocalApicAffinity {
                kind: TYPE_LOCAL_APIC_AFFINITY,
                length: len_of::<LocalApicAffinity>(),
                proximity_domain_low: d0,
                apic_id,
                flags: U32::new(ENABLED),
                local_sapic_eid: 0,
                proximity_domain_high: [d1, d2, d3],
                clock_domain: U32::ZERO,
            }),
            _ => sdt.push(&LocalX2ApicAffinity {
                kind: TYPE_LOCAL_X2APIC_AFFINITY,
                length: len_of::<LocalX2ApicAffinity>(),
                reserved1: U16::ZERO,
                proximity_domain: U32::new(cpu.node),
                x2apic_id: U32::new(cpu.apic_id),
                flags: U32::new(ENABLED),
                clock_domain: U32::ZERO,
                reserved2: U32::ZERO,
            }),
        }
    }
    for range in memory {
        sdt.push(&MemoryAffinityEntry {
            kind: TYPE_MEMORY_AFFINITY,
            length: len_of::<MemoryAffinityEntry>(),
            proximity_domain: U32::new(range.node),
            reserved1: U16::ZERO,
            base: U64::new(range.base),
            length_bytes: U64::new(range.length),
            reserved2: U32::ZERO,
            flags: U32::new(ENABLED),
            reserved3: U64::ZERO,
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
        assert_eq!(size_of::<SratFields>(), 12);
        assert_eq!(size_of::<LocalApicAffinity>(), 16);
        assert_eq!(size_of::<MemoryAffinityEntry>(), 40);
        assert_eq!(size_of::<LocalX2ApicAffinity>(), 24);
    }

    #[test]
    fn memory_skips_the_hole() {
        let topo = Topology::new(1, 1, 1, 1)
            .and_then(|t| t.with_memory_mib(100))
            .expect("valid");
        let mib = 1u64 << 20;
        let ranges = node_memory_ranges(&topo, 60 * mib, 64 * mib);
        assert_eq!(
            ranges,
            [
                MemoryAffinity {
                    base: 0,
                    length: 60 * mib,
                    node: 0
                },
                MemoryAffinity {
                    base: 64 * mib,
                    length: 40 * mib,
                    node: 0
                },
            ]
        );
    }
}
