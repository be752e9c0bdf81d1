//! What can be wrong with a declared topology.

use alloc::string::String;

/// A topology that cannot be built, or a compact form that cannot be parsed.
///
/// Messages name the field as the test attribute spells it (`numa_nodes`, `llcs`,
/// `cores`, `threads`, `memory_mib`) and say how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TopologyError {
    /// A count is zero.
    #[error("topology {field}=0 is invalid: {field} must be at least 1")]
    Zero {
        /// The attribute name.
        field: &'static str,
    },
    /// The LLCs cannot be spread evenly over the NUMA nodes.
    #[error(
        "topology llcs={llcs} is not divisible by numa_nodes={numa_nodes}: \
         make llcs a multiple of numa_nodes"
    )]
    LlcsNotDivisible {
        /// Total LLCs asked for.
        llcs: u32,
        /// NUMA nodes asked for.
        numa_nodes: u32,
    },
    /// More NUMA nodes than the tables and distance matrix hold.
    #[error("topology numa_nodes={numa_nodes} is more than the supported {max}: lower numa_nodes")]
    TooManyNodes {
        /// NUMA nodes asked for.
        numa_nodes: u32,
        /// The limit, [`crate::MAX_NUMA_NODES`].
        max: u32,
    },
    /// More CPUs than a test VM may have.
    #[error(
        "topology llcs={llcs} cores={cores} threads={threads} gives {cpus} CPUs, more than \
         the supported {max}: lower llcs, cores or threads"
    )]
    TooManyCpus {
        /// Total LLCs.
        llcs: u32,
        /// Cores per LLC.
        cores: u32,
        /// Threads per core.
        threads: u32,
        /// Their product.
        cpus: u64,
        /// The limit, [`crate::MAX_CPUS`].
        max: u32,
    },
    /// A node's share of memory is below the minimum a Linux NUMA node needs.
    #[error(
        "topology memory_mib={memory_mib} gives node {node} only {node_mib} MiB, below the \
         minimum {min} MiB per node: raise memory_mib"
    )]
    TooLittleMemory {
        /// Total memory asked for.
        memory_mib: u64,
        /// The node that got too little.
        node: u32,
        /// Its share.
        node_mib: u32,
        /// The limit, [`crate::MIN_NODE_MEMORY_MIB`].
        min: u32,
    },
    /// A node index is out of range.
    #[error(
        "topology has numa_nodes={numa_nodes}, so node {node} does not exist: use 0..{numa_nodes}"
    )]
    NoSuchNode {
        /// The index given.
        node: u32,
        /// NUMA nodes of the topology.
        numa_nodes: u32,
    },
    /// A NUMA distance outside what SLIT can express for a remote node.
    #[error(
        "topology numa distance {from}->{to}={distance} is invalid: remote distances \
         must be 11..=254 (10 is local, 255 unreachable)"
    )]
    BadDistance {
        /// First node.
        from: u32,
        /// Second node.
        to: u32,
        /// The distance given.
        distance: u32,
    },
    /// The compact form did not parse.
    #[error("topology {input:?} is not of the form <N>n<L>l<C>c<T>t, e.g. 1n2l4c2t")]
    Syntax {
        /// The text given.
        input: String,
    },
}
