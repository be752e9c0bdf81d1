//! The declared CPU topology of a test VM: NUMA nodes, LLCs, cores, SMT threads.
//!
//! A test says `#[ktstr_test(numa_nodes = 2, llcs = 4, cores = 2, threads = 2)]` (or
//! the compact form `2n4l2c2t`); this crate turns that into the one description both
//! VM backends realize. The QEMU backend maps it onto `-smp` (a package per node, a
//! die per LLC); the own KVM VMM feeds it to `ktstr-acpi` for the MADT, SRAT and
//! SLIT and to the CPUID synthesis here. The numbering, the APIC ids and the CPUID
//! encoding are QEMU's, so the guest sees the same CPUs under either backend.
//!
//! - [`Topology`]: validation, the compact form, CPU numbering and locations,
//!   APIC ids ([`ApicLayout`]), memory per node and NUMA distances;
//! - [`PRESETS`]: the gauntlet, each with the [`Backend`]s it boots on;
//! - `cpuid` (x86_64): the topology leaves of the own VMM ([`cpuid::apply_topology`])
//!   and Linux's reading of them ([`cpuid::linux_view`]).
//!
//! ```
//! use ktstr_topology::{Topology, preset};
//!
//! let topo: Topology = "2n4l2c2t".parse()?;
//! assert_eq!(topo.nr_cpus(), 16);
//! assert_eq!(topo.llcs_per_node(), 2);
//! // CPU 5: node 0, LLC 1 (die 1), core 0, thread 1.
//! let cpu = topo.cpu(5).expect("16 CPUs");
//! assert_eq!((cpu.node, cpu.llc, cpu.die, cpu.core, cpu.thread), (0, 1, 1, 0, 1));
//! assert_eq!(cpu.apic_id, 0b0_1_0_1);
//! assert_eq!(topo.cpu_by_apic_id(cpu.apic_id), Some(5));
//!
//! let tiny = preset("tiny").expect("the gauntlet starts with tiny");
//! assert_eq!(tiny.topology.to_string(), "1n1l2c1t");
//! # Ok::<(), ktstr_topology::TopologyError>(())
//! ```
#![no_std]

extern crate alloc;

mod apic;
mod cpulist;
mod error;
mod presets;
mod sysfs;
mod topology;
#[cfg(target_arch = "x86_64")]
mod x86_64;

pub use apic::{ApicIds, ApicLayout};
pub use cpulist::{CpuListError, cpu_list, format_cpu_list, parse_cpu_list};
pub use error::TopologyError;
pub use presets::{Backend, Constraints, DeclaredShape, PRESETS, Preset, ShapeFeature, preset};
pub use sysfs::{SYSFS_SCRIPT, SysfsCpu, SysfsNode, SysfsView};
pub use topology::{
    CpuLocation, DEFAULT_MEMORY_MIB, LOCAL_DISTANCE, LinuxCpuIds, MAX_CPUS, MAX_NUMA_NODES,
    MIN_NODE_MEMORY_MIB, REMOTE_DISTANCE, Topology,
};
#[cfg(target_arch = "x86_64")]
pub use x86_64::cpuid;
