//! SLIT: the NUMA distance matrix (ACPI 6.5 §5.2.17).

use alloc::vec::Vec;

use ktstr_topology::Topology;
use zerocopy::little_endian::U64;

use crate::sdt::Sdt;

/// Builds the SLIT: the number of localities, then row after row of distances.
pub(crate) fn build(topo: &Topology) -> Vec<u8> {
    // Revision 1: ACPI 6.5 Table 5.79.
    let mut sdt = Sdt::new(*b"SLIT", 1);
    sdt.push(&U64::new(u64::from(topo.numa_nodes())));
    for node in 0..topo.numa_nodes() {
        sdt.extend(topo.distance_row(node).unwrap_or_default());
    }
    sdt.finish()
}
