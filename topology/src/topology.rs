//! The declared topology: validation, CPU numbering, memory per node, NUMA distances.

use core::fmt;
use core::ops::Range;
use core::str::FromStr;

use alloc::string::ToString;

use crate::apic::ApicLayout;
use crate::error::TopologyError;

/// Most CPUs a test VM may have: the largest gauntlet preset, within QEMU's `pc`
/// machine limit of 255 and KVM's vCPU limit.
pub const MAX_CPUS: u32 = 252;

/// Most NUMA nodes a topology may have (sizes the distance matrix).
pub const MAX_NUMA_NODES: u32 = 8;

/// Least memory per NUMA node, in MiB: Linux drops nodes smaller than 4 MiB
/// (`NODE_MIN_SIZE`, arch/x86/mm/numa.c) and a node needs room for its own page
/// tables and per-node data; 32 MiB leaves margin.
pub const MIN_NODE_MEMORY_MIB: u32 = 32;

/// Memory of a VM when the test does not say, in MiB, shared evenly by its nodes.
pub const DEFAULT_MEMORY_MIB: u32 = 512;

/// SLIT distance of a node to itself (ACPI 6.5 §5.2.17: normalized to 10).
pub const LOCAL_DISTANCE: u8 = 10;

/// Default SLIT distance between two different nodes.
pub const REMOTE_DISTANCE: u8 = 20;

const NODES: usize = MAX_NUMA_NODES as usize;

/// The CPU topology and NUMA shape of a test VM.
///
/// `llcs` is the total LLC count of the VM, spread evenly over the nodes; each LLC
/// has `cores_per_llc` cores of `threads_per_core` SMT threads. Each NUMA node is
/// one package (socket), each LLC one die of its package, as QEMU's
/// `-smp sockets=numa_nodes,dies=llcs/numa_nodes,cores=cores_per_llc,threads=threads_per_core`
/// with `smp-cache.0.cache=l3,smp-cache.0.topology=die`.
///
/// CPUs are numbered threads innermost, then cores, then LLCs, then nodes, which is
/// QEMU's CPU index order and the order of the MADT, hence Linux's logical CPU ids.
///
/// ```
/// use ktstr_topology::Topology;
///
/// let topo = Topology::new(2, 4, 2, 2)?;
/// assert_eq!(topo.to_string(), "2n4l2c2t");
/// assert_eq!(topo.nr_cpus(), 16);
/// let cpu = topo.cpu(13).expect("cpu 13 exists");
/// assert_eq!((cpu.node, cpu.llc, cpu.core, cpu.thread), (1, 3, 0, 1));
/// assert_eq!(topo.cpu_index(3, 0, 1), Some(13));
/// assert_eq!(topo.distance(0, 1), Some(20));
/// # Ok::<(), ktstr_topology::TopologyError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Topology {
    numa_nodes: u32,
    llcs: u32,
    cores_per_llc: u32,
    threads_per_core: u32,
    node_memory_mib: [u32; NODES],
    distances: [[u8; NODES]; NODES],
}

/// Where one CPU sits, and the ids the guest will see for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CpuLocation {
    /// Linux logical CPU id (= QEMU CPU index = MADT order).
    pub cpu: u32,
    /// NUMA node (= package).
    pub node: u32,
    /// LLC, numbered across the whole VM.
    pub llc: u32,
    /// Core within its LLC.
    pub core: u32,
    /// SMT thread within its core.
    pub thread: u32,
    /// Package (socket) id, as in `topology/physical_package_id`.
    pub package: u32,
    /// Die index within the package (QEMU's `-smp` die). Linux's sysfs
    /// `topology/die_id` differs: it is the APIC id above the die shift, unique
    /// across packages.
    pub die: u32,
    /// Initial (x2)APIC id.
    pub apic_id: u32,
}

/// The ids Linux's sysfs shows for a CPU (`topology/physical_package_id`,
/// `die_id`, `core_id`), which differ from [`CpuLocation`]'s per-level indices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LinuxCpuIds {
    /// `topology/physical_package_id`.
    pub physical_package_id: u32,
    /// `topology/die_id`.
    pub die_id: u32,
    /// `topology/core_id`.
    pub core_id: u32,
}

impl Topology {
    /// A validated topology with default memory ([`DEFAULT_MEMORY_MIB`] shared by
    /// the nodes) and default distances (10 local, 20 remote).
    pub const fn new(
        numa_nodes: u32,
        llcs: u32,
        cores_per_llc: u32,
        threads_per_core: u32,
    ) -> Result<Self, TopologyError> {
        match check_counts(numa_nodes, llcs, cores_per_llc, threads_per_core) {
            Ok(()) => Ok(Self::unchecked(
                numa_nodes,
                llcs,
                cores_per_llc,
                threads_per_core,
            )),
            Err(broken) => {
                Err(broken.into_error(numa_nodes, llcs, cores_per_llc, threads_per_core))
            }
        }
    }

    /// Like [`Topology::new`] but panics on an invalid topology; for constants, where
    /// the panic is a compile error.
    pub(crate) const fn new_const(
        numa_nodes: u32,
        llcs: u32,
        cores_per_llc: u32,
        threads_per_core: u32,
    ) -> Self {
        if check_counts(numa_nodes, llcs, cores_per_llc, threads_per_core).is_err() {
            panic!("invalid constant topology");
        }
        Self::unchecked(numa_nodes, llcs, cores_per_llc, threads_per_core)
    }

    /// Builds a topology whose counts passed [`check_counts`].
    const fn unchecked(
        numa_nodes: u32,
        llcs: u32,
        cores_per_llc: u32,
        threads_per_core: u32,
    ) -> Self {
        let mut distances = [[REMOTE_DISTANCE; NODES]; NODES];
        let mut node_memory_mib = [0; NODES];
        let share = DEFAULT_MEMORY_MIB / numa_nodes;
        let mut i = 0;
        while i < NODES {
            distances[i][i] = LOCAL_DISTANCE;
            if i < numa_nodes as usize {
                node_memory_mib[i] = share;
            }
            i += 1;
        }
        node_memory_mib[0] += DEFAULT_MEMORY_MIB % numa_nodes;
        Self {
            numa_nodes,
            llcs,
            cores_per_llc,
            threads_per_core,
            node_memory_mib,
            distances,
        }
    }

    /// The same topology with `memory_mib` MiB of RAM shared evenly by the nodes;
    /// what does not divide evenly goes to node 0.
    pub const fn with_memory_mib(mut self, memory_mib: u64) -> Result<Self, TopologyError> {
        let nodes = self.numa_nodes as u64;
        let share = memory_mib / nodes;
        let first = share + memory_mib % nodes;
        if share < MIN_NODE_MEMORY_MIB as u64 || first > u32::MAX as u64 {
            let node = if share < MIN_NODE_MEMORY_MIB as u64 {
                self.numa_nodes - 1
            } else {
                0
            };
            return Err(TopologyError::TooLittleMemory {
                memory_mib,
                node,
                node_mib: if share > u32::MAX as u64 {
                    u32::MAX
                } else {
                    share as u32
                },
                min: MIN_NODE_MEMORY_MIB,
            });
        }
        let mut node = 0;
        while node < NODES {
            self.node_memory_mib[node] = if node as u64 >= nodes {
                0
            } else if node == 0 {
                first as u32
            } else {
                share as u32
            };
            node += 1;
        }
        Ok(self)
    }

    /// The same topology with node `node` given `mib` MiB of RAM.
    pub fn with_node_memory_mib(mut self, node: u32, mib: u32) -> Result<Self, TopologyError> {
        self.check_node(node)?;
        if mib < MIN_NODE_MEMORY_MIB {
            return Err(TopologyError::TooLittleMemory {
                memory_mib: self.memory_mib() - u64::from(self.node_memory_mib[node as usize])
                    + u64::from(mib),
                node,
                node_mib: mib,
                min: MIN_NODE_MEMORY_MIB,
            });
        }
        self.node_memory_mib[node as usize] = mib;
        Ok(self)
    }

    /// The same topology with the distance between nodes `a` and `b` (both ways)
    /// set to `distance`, which must be 11..=254 for two different nodes; a node's
    /// distance to itself is always 10.
    pub fn with_distance(mut self, a: u32, b: u32, distance: u8) -> Result<Self, TopologyError> {
        self.check_node(a)?;
        self.check_node(b)?;
        let ok = if a == b {
            distance == LOCAL_DISTANCE
        } else {
            distance > LOCAL_DISTANCE && distance < u8::MAX
        };
        if !ok {
            return Err(TopologyError::BadDistance {
                from: a,
                to: b,
                distance: u32::from(distance),
            });
        }
        self.distances[a as usize][b as usize] = distance;
        self.distances[b as usize][a as usize] = distance;
        Ok(self)
    }

    fn check_node(&self, node: u32) -> Result<(), TopologyError> {
        if node < self.numa_nodes {
            Ok(())
        } else {
            Err(TopologyError::NoSuchNode {
                node,
                numa_nodes: self.numa_nodes,
            })
        }
    }

    /// NUMA nodes (= packages).
    pub const fn numa_nodes(&self) -> u32 {
        self.numa_nodes
    }

    /// LLCs of the whole VM.
    pub const fn llcs(&self) -> u32 {
        self.llcs
    }

    /// LLCs of each node (= dies per package).
    pub const fn llcs_per_node(&self) -> u32 {
        self.llcs / self.numa_nodes
    }

    /// Cores of each LLC.
    pub const fn cores_per_llc(&self) -> u32 {
        self.cores_per_llc
    }

    /// SMT threads of each core.
    pub const fn threads_per_core(&self) -> u32 {
        self.threads_per_core
    }

    /// Packages (sockets) for QEMU's `-smp sockets=`: one per node.
    pub const fn packages(&self) -> u32 {
        self.numa_nodes
    }

    /// Dies per package for QEMU's `-smp dies=`: one per LLC.
    pub const fn dies_per_package(&self) -> u32 {
        self.llcs_per_node()
    }

    /// CPUs of the VM.
    pub const fn nr_cpus(&self) -> u32 {
        self.llcs * self.cores_per_llc * self.threads_per_core
    }

    /// CPUs sharing one LLC.
    pub const fn cpus_per_llc(&self) -> u32 {
        self.cores_per_llc * self.threads_per_core
    }

    /// CPUs of one node.
    pub const fn cpus_per_node(&self) -> u32 {
        self.cpus_per_llc() * self.llcs_per_node()
    }

    /// The CPUs of LLC `llc`, which are consecutive; empty if there is no such LLC.
    pub const fn llc_cpus(&self, llc: u32) -> Range<u32> {
        if llc >= self.llcs {
            return 0..0;
        }
        let per = self.cpus_per_llc();
        llc * per..(llc + 1) * per
    }

    /// The CPUs of node `node`, which are consecutive; empty if there is no such node.
    pub const fn node_cpus(&self, node: u32) -> Range<u32> {
        if node >= self.numa_nodes {
            return 0..0;
        }
        let per = self.cpus_per_node();
        node * per..(node + 1) * per
    }

    /// RAM of node `node` in MiB.
    pub const fn node_memory_mib(&self, node: u32) -> Option<u32> {
        if node < self.numa_nodes {
            Some(self.node_memory_mib[node as usize])
        } else {
            None
        }
    }

    /// RAM of the whole VM in MiB.
    pub const fn memory_mib(&self) -> u64 {
        let mut total = 0;
        let mut node = 0;
        while node < self.numa_nodes as usize {
            total += self.node_memory_mib[node] as u64;
            node += 1;
        }
        total
    }

    /// SLIT distance from node `from` to node `to`.
    pub const fn distance(&self, from: u32, to: u32) -> Option<u8> {
        if from < self.numa_nodes && to < self.numa_nodes {
            Some(self.distances[from as usize][to as usize])
        } else {
            None
        }
    }

    /// Distances from node `from` to every node, in node order (a SLIT row).
    pub fn distance_row(&self, from: u32) -> Option<&[u8]> {
        let row = self.distances.get(from as usize)?;
        (from < self.numa_nodes).then(|| &row[..self.numa_nodes as usize])
    }

    /// How the guest's APIC ids pack package, die, core and thread.
    pub const fn apic_layout(&self) -> ApicLayout {
        ApicLayout::new(
            self.llcs_per_node(),
            self.cores_per_llc,
            self.threads_per_core,
        )
    }

    /// Highest APIC id of the VM. Above 254 the guest needs x2APIC and interrupt
    /// remapping (or KVM's extended destination id) to bring every CPU up.
    pub const fn max_apic_id(&self) -> u32 {
        let last = self.nr_cpus() - 1;
        match self.cpu(last) {
            Some(loc) => loc.apic_id,
            None => 0,
        }
    }

    /// Where CPU `cpu` sits, or `None` past the last CPU.
    pub const fn cpu(&self, cpu: u32) -> Option<CpuLocation> {
        if cpu >= self.nr_cpus() {
            return None;
        }
        let thread = cpu % self.threads_per_core;
        let core = cpu / self.threads_per_core % self.cores_per_llc;
        let llc = cpu / self.cpus_per_llc();
        let node = llc / self.llcs_per_node();
        let die = llc % self.llcs_per_node();
        let apic_id = self.apic_layout().apic_id(node, die, core, thread);
        Some(CpuLocation {
            cpu,
            node,
            llc,
            core,
            thread,
            package: node,
            die,
            apic_id,
        })
    }

    /// The CPU at thread `thread` of core `core` of LLC `llc` (numbered across the VM).
    pub const fn cpu_index(&self, llc: u32, core: u32, thread: u32) -> Option<u32> {
        if llc >= self.llcs || core >= self.cores_per_llc || thread >= self.threads_per_core {
            return None;
        }
        Some((llc * self.cores_per_llc + core) * self.threads_per_core + thread)
    }

    /// The CPU whose APIC id is `apic_id`.
    pub const fn cpu_by_apic_id(&self, apic_id: u32) -> Option<u32> {
        let ids = self.apic_layout().decode(apic_id);
        if ids.package >= self.numa_nodes || ids.die >= self.llcs_per_node() {
            return None;
        }
        let llc = ids.package * self.llcs_per_node() + ids.die;
        self.cpu_index(llc, ids.core, ids.thread)
    }

    /// The ids Linux shows in sysfs `topology/` for `cpu`: its die id is the
    /// APIC id above the die shift (unique across packages) and its core id
    /// the APIC id bits between SMT and package
    /// (arch/x86/kernel/cpu/topology_common.c).
    pub const fn linux_ids(&self, cpu: u32) -> Option<LinuxCpuIds> {
        let Some(c) = self.cpu(cpu) else {
            return None;
        };
        let layout = self.apic_layout();
        let in_package = c.apic_id & ((1 << layout.package_shift()) - 1);
        Some(LinuxCpuIds {
            physical_package_id: c.package,
            die_id: c.apic_id >> layout.die_shift(),
            core_id: in_package >> layout.thread_bits(),
        })
    }

    /// Every CPU in logical order.
    pub fn cpus(&self) -> impl ExactSizeIterator<Item = CpuLocation> + '_ {
        (0..self.nr_cpus()).map(|cpu| {
            self.cpu(cpu)
                .expect("every cpu below nr_cpus has a location")
        })
    }
}

/// The first rule a set of counts breaks; `Copy` so it can be used in `const`.
#[derive(Clone, Copy)]
enum Broken {
    Zero(&'static str),
    TooManyNodes,
    NotDivisible,
    TooManyCpus(u64),
}

impl Broken {
    const fn into_error(
        self,
        numa_nodes: u32,
        llcs: u32,
        cores: u32,
        threads: u32,
    ) -> TopologyError {
        match self {
            Broken::Zero(field) => TopologyError::Zero { field },
            Broken::TooManyNodes => TopologyError::TooManyNodes {
                numa_nodes,
                max: MAX_NUMA_NODES,
            },
            Broken::NotDivisible => TopologyError::LlcsNotDivisible { llcs, numa_nodes },
            Broken::TooManyCpus(cpus) => TopologyError::TooManyCpus {
                llcs,
                cores,
                threads,
                cpus,
                max: MAX_CPUS,
            },
        }
    }
}

/// Checks the four counts of a topology.
const fn check_counts(numa_nodes: u32, llcs: u32, cores: u32, threads: u32) -> Result<(), Broken> {
    if numa_nodes == 0 {
        return Err(Broken::Zero("numa_nodes"));
    }
    if llcs == 0 {
        return Err(Broken::Zero("llcs"));
    }
    if cores == 0 {
        return Err(Broken::Zero("cores"));
    }
    if threads == 0 {
        return Err(Broken::Zero("threads"));
    }
    if numa_nodes > MAX_NUMA_NODES {
        return Err(Broken::TooManyNodes);
    }
    if !llcs.is_multiple_of(numa_nodes) {
        return Err(Broken::NotDivisible);
    }
    // u32 * u32 * u32 fits in u128 without overflow.
    let cpus = llcs as u128 * cores as u128 * threads as u128;
    if cpus > MAX_CPUS as u128 {
        let shown = if cpus > u64::MAX as u128 {
            u64::MAX
        } else {
            cpus as u64
        };
        return Err(Broken::TooManyCpus(shown));
    }
    Ok(())
}

impl fmt::Display for Topology {
    /// The compact form `NnLlCcTt`; memory and distances are not part of it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}n{}l{}c{}t",
            self.numa_nodes, self.llcs, self.cores_per_llc, self.threads_per_core
        )
    }
}

impl FromStr for Topology {
    type Err = TopologyError;

    /// Parses the compact form `NnLlCcTt` (`1n2l4c2t`) and validates it.
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let syntax = || TopologyError::Syntax {
            input: input.to_string(),
        };
        let mut rest = input;
        let mut counts = [0u32; 4];
        for (count, unit) in counts.iter_mut().zip(['n', 'l', 'c', 't']) {
            let end = rest.find(unit).ok_or_else(syntax)?;
            let digits = &rest[..end];
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(syntax());
            }
            *count = digits.parse().map_err(|_| syntax())?;
            rest = &rest[end + 1..];
        }
        if !rest.is_empty() {
            return Err(syntax());
        }
        let [n, l, c, t] = counts;
        Self::new(n, l, c, t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu_list;
    use alloc::format;
    use alloc::vec::Vec;

    fn topo(s: &str) -> Topology {
        s.parse().expect("valid topology")
    }

    #[test]
    fn zero_fields_are_named() {
        let cases = [
            ((0, 1, 1, 1), "numa_nodes"),
            ((1, 0, 1, 1), "llcs"),
            ((1, 1, 0, 1), "cores"),
            ((1, 1, 1, 0), "threads"),
        ];
        for ((n, l, c, t), field) in cases {
            let err = Topology::new(n, l, c, t).expect_err("zero is invalid");
            assert_eq!(err, TopologyError::Zero { field });
            let msg = format!("{err}");
            assert!(msg.contains(&format!("{field}=0")), "{msg}");
        }
    }

    #[test]
    fn llcs_must_divide_over_nodes() {
        let err = Topology::new(2, 3, 1, 1).expect_err("3 LLCs over 2 nodes");
        assert_eq!(
            format!("{err}"),
            "topology llcs=3 is not divisible by numa_nodes=2: make llcs a multiple of numa_nodes"
        );
    }

    #[test]
    fn too_many_cpus_names_the_fields() {
        let err = Topology::new(1, 16, 16, 1).expect_err("256 CPUs");
        let msg = format!("{err}");
        assert!(msg.contains("256 CPUs") && msg.contains("252"), "{msg}");
        assert!(msg.contains("lower llcs, cores or threads"), "{msg}");
        // Products that overflow u32 are still caught.
        assert!(Topology::new(1, u32::MAX, u32::MAX, u32::MAX).is_err());
        assert!(Topology::new(1, 63, 2, 2).is_ok());
    }

    #[test]
    fn too_many_nodes_is_named() {
        let err = Topology::new(9, 9, 1, 1).expect_err("9 nodes");
        assert!(format!("{err}").contains("numa_nodes=9"));
    }

    #[test]
    fn memory_rules() {
        let t = topo("3n3l1c1t")
            .with_memory_mib(1000)
            .expect("enough memory");
        assert_eq!(t.node_memory_mib(0), Some(334));
        assert_eq!(t.node_memory_mib(1), Some(333));
        assert_eq!(t.node_memory_mib(3), None);
        assert_eq!(t.memory_mib(), 1000);
        let err = topo("4n4l1c1t")
            .with_memory_mib(100)
            .expect_err("25 MiB per node");
        assert!(format!("{err}").contains("memory_mib=100"), "{err}");
        let t = t.with_node_memory_mib(2, 64).expect("node 2 exists");
        assert_eq!(t.memory_mib(), 334 + 333 + 64);
        let err = t.with_node_memory_mib(3, 64).expect_err("no node 3");
        assert!(format!("{err}").contains("node 3 does not exist"), "{err}");
        assert!(t.with_node_memory_mib(0, 1).is_err());
    }

    #[test]
    fn distances_are_symmetric_and_checked() {
        let t = topo("2n2l1c1t");
        assert_eq!(t.distance_row(0), Some(&[10, 20][..]));
        let t = t.with_distance(1, 0, 30).expect("valid distance");
        assert_eq!((t.distance(0, 1), t.distance(1, 0)), (Some(30), Some(30)));
        assert!(t.with_distance(0, 1, 10).is_err());
        assert!(t.with_distance(0, 1, 255).is_err());
        assert!(t.with_distance(0, 0, 20).is_err());
        assert!(t.with_distance(0, 2, 20).is_err());
        assert_eq!(t.distance(0, 2), None);
        assert_eq!(t.distance_row(2), None);
    }

    #[test]
    fn compact_form_round_trips() {
        for s in ["1n1l2c1t", "1n2l4c2t", "3n3l2c1t", "4n8l3c2t"] {
            assert_eq!(topo(s).to_string(), s);
        }
        assert_eq!(topo("3n3l2c1t").nr_cpus(), 6);
    }

    #[test]
    fn compact_form_rejects_garbage() {
        for s in [
            "",
            "1n2l4c",
            "1n2l4c2t ",
            "n2l4c2t",
            "1l2n4c2t",
            "1n2l4c2tx",
            "+1n1l1c1t",
            "1n-2l1c1t",
        ] {
            let err = s.parse::<Topology>().expect_err(s);
            assert!(matches!(err, TopologyError::Syntax { .. }), "{s}: {err}");
        }
        // Syntax is fine but validation is not.
        assert!(matches!(
            "2n3l1c1t".parse::<Topology>(),
            Err(TopologyError::LlcsNotDivisible { .. })
        ));
    }

    #[test]
    fn numbering_follows_qemu_cpu_index() {
        // QEMU: index = ((socket * dies + die) * cores + core) * threads + thread.
        let t = topo("2n6l3c2t");
        let (dies, cores, threads) = (3, 3, 2);
        let mut seen = Vec::new();
        for socket in 0..2 {
            for die in 0..dies {
                for core in 0..cores {
                    for thread in 0..threads {
                        let index = ((socket * dies + die) * cores + core) * threads + thread;
                        let loc = t.cpu(index).expect("cpu exists");
                        assert_eq!(
                            (loc.package, loc.die, loc.core, loc.thread),
                            (socket, die, core, thread)
                        );
                        assert_eq!(loc.node, socket);
                        assert_eq!(loc.llc, socket * dies + die);
                        // APIC fields: thread 1 bit, core 2 bits, die 2 bits.
                        assert_eq!(
                            loc.apic_id,
                            (socket << 5) | (die << 3) | (core << 1) | thread
                        );
                        assert_eq!(t.cpu_by_apic_id(loc.apic_id), Some(index));
                        assert_eq!(t.cpu_index(loc.llc, core, thread), Some(index));
                        seen.push(loc.apic_id);
                    }
                }
            }
        }
        assert_eq!(t.cpus().len(), 36);
        assert_eq!(t.cpus().map(|c| c.apic_id).collect::<Vec<_>>(), seen);
        assert_eq!(t.max_apic_id(), (1 << 5) | (2 << 3) | (2 << 1) | 1);
        assert_eq!(t.cpu(36), None);
        assert_eq!(t.cpu_by_apic_id(3 << 1), None, "core 3 does not exist");
        assert_eq!(t.cpu_index(6, 0, 0), None);
        assert_eq!(t.llc_cpus(1), 6..12);
        assert_eq!(t.node_cpus(1), 18..36);
        assert_eq!(t.llc_cpus(6), 0..0);
    }

    #[test]
    fn linux_ids_match_what_a_guest_showed() {
        // Read from a 2n4l2c2t guest's sysfs under QEMU 10 (facade/tests/vm_shell.rs).
        let t: Topology = "2n4l2c2t".parse().expect("topology");
        let id = |cpu| t.linux_ids(cpu).expect("cpu");
        let ids = |cpu| {
            let i = id(cpu);
            (i.physical_package_id, i.die_id, i.core_id)
        };
        assert_eq!(ids(1), (0, 0, 0));
        assert_eq!(ids(4), (0, 1, 2));
        assert_eq!(ids(10), (1, 2, 1));
        assert_eq!(ids(15), (1, 3, 3));
        assert!(t.linux_ids(16).is_none());
        assert_eq!(cpu_list(3..4), "3");
        assert_eq!(cpu_list(8..12), "8-11");
    }
}
