//! What can go wrong building the tables.

/// Tables that cannot be built from the given configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AcpiError {
    /// A memory range names a node the topology does not have.
    #[error("acpi memory range for node {node}, but the topology has numa_nodes={numa_nodes}")]
    NoSuchNode {
        /// The node of the range.
        node: u32,
        /// Nodes of the topology.
        numa_nodes: u32,
    },
    /// A node has no memory range; give it one (see `node_memory_ranges`).
    #[error("acpi memory map gives node {node} no memory: give every node a range")]
    NodeWithoutMemory {
        /// The node.
        node: u32,
    },
    /// The RSDP lands inside the other tables.
    #[error(
        "acpi rsdp at {rsdp_address:#x} overlaps the tables at \
         {tables_address:#x}..{tables_end:#x}: move one of them"
    )]
    Overlap {
        /// Where the RSDP goes.
        rsdp_address: u64,
        /// Where the tables start.
        tables_address: u64,
        /// Where they end.
        tables_end: u64,
    },
    /// The tables would run past the end of the address space.
    #[error("acpi tables run past the end of the 64-bit address space: lower tables_address")]
    AddressOverflow,
}
