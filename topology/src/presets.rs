//! The gauntlet: named topologies every scheduler is run on, and where each can boot.

use core::fmt;

use crate::topology::Topology;

/// A VM backend, for the limits it puts on a topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Backend {
    /// QEMU (TCG or KVM), `-machine pc`, no IOMMU.
    Qemu,
    /// The project's own KVM VMM.
    Kvm,
}

impl Backend {
    /// Every backend.
    pub const ALL: [Backend; 2] = [Backend::Qemu, Backend::Kvm];

    /// Highest APIC id a guest CPU may have on this backend.
    ///
    /// Above 254 Linux can only bring a CPU up in x2APIC mode, and it keeps x2APIC
    /// only with interrupt remapping (an IOMMU) or KVM's extended destination id
    /// (`KVM_FEATURE_MSI_EXT_DEST_ID`, CPUID 0x40000001 EAX bit 15): without them
    /// it ignores every CPU above 255 ("x2apic: IRQ remapping doesn't support X2APIC
    /// mode"). Neither backend provides either yet, so both stop at 254 (255 is the
    /// xAPIC broadcast id). Lifting it: QEMU needs `-machine q35` and
    /// `-device intel-iommu,intremap=on,eim=on`; the own VMM can advertise the
    /// extended destination id.
    pub const fn max_apic_id(self) -> u32 {
        match self {
            Backend::Qemu | Backend::Kvm => 254,
        }
    }

    /// Most vCPUs: QEMU's `pc` machine takes 255, KVM more than any topology here.
    pub const fn max_cpus(self) -> u32 {
        match self {
            Backend::Qemu => 255,
            Backend::Kvm => 1024,
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Qemu => "qemu",
            Backend::Kvm => "kvm",
        })
    }
}

impl Topology {
    /// Whether a VM of this topology can boot on `backend` with every CPU online.
    pub const fn boots_on(&self, backend: Backend) -> bool {
        self.max_apic_id() <= backend.max_apic_id() && self.nr_cpus() <= backend.max_cpus()
    }
}

/// A named topology of the gauntlet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preset {
    /// Name used on the command line and in reports.
    pub name: &'static str,
    /// What it exercises.
    pub purpose: &'static str,
    /// The topology.
    pub topology: Topology,
}

impl Preset {
    /// The backends a VM of this preset boots on.
    pub fn backends(&self) -> impl Iterator<Item = Backend> + '_ {
        Backend::ALL
            .into_iter()
            .filter(|b| self.topology.boots_on(*b))
    }
}

const fn valid(numa_nodes: u32, llcs: u32, cores: u32, threads: u32) -> Topology {
    Topology::new_const(numa_nodes, llcs, cores, threads)
}

const fn named(name: &'static str, purpose: &'static str, topology: Topology) -> Preset {
    Preset {
        name,
        purpose,
        topology,
    }
}

/// The gauntlet, smallest first. Every topology is checked at compile time.
pub const PRESETS: &[Preset] = &[
    named("tiny", "one LLC, two CPUs", valid(1, 1, 2, 1)),
    named("smt", "SMT siblings in one LLC", valid(1, 1, 2, 2)),
    named("llc2", "two LLCs in one socket", valid(1, 2, 4, 1)),
    named("llc2-smt", "two LLCs in one socket, SMT", valid(1, 2, 4, 2)),
    named("llc3", "odd LLC count: 3", valid(1, 3, 2, 1)),
    named("llc4", "several LLCs in one socket", valid(1, 4, 4, 1)),
    named("llc5", "odd LLC count: 5", valid(1, 5, 2, 1)),
    named("llc7", "odd LLC count: 7, SMT", valid(1, 7, 2, 2)),
    named("numa2", "two NUMA nodes, one LLC each", valid(2, 2, 4, 1)),
    named(
        "numa2-llc4",
        "two NUMA nodes, two LLCs each, SMT",
        valid(2, 4, 2, 2),
    ),
    named("numa3", "three NUMA nodes, one LLC each", valid(3, 3, 2, 1)),
    named("numa4", "four NUMA nodes, one LLC each", valid(4, 4, 2, 1)),
    named(
        "numa4-llc8",
        "four NUMA nodes, two LLCs each, SMT",
        valid(4, 8, 2, 2),
    ),
    named(
        "llc3x3",
        "odd LLC count, odd cores: 3 LLCs of 3",
        valid(1, 3, 3, 1),
    ),
    named(
        "llc5x3",
        "odd LLC count, odd cores: 5 LLCs of 3",
        valid(1, 5, 3, 1),
    ),
    named(
        "llc7x2",
        "odd LLC count: 7 LLCs of 2, no SMT",
        valid(1, 7, 2, 1),
    ),
    named(
        "numa2-llc4x4",
        "two NUMA nodes, two LLCs of 4 SMT cores each",
        valid(2, 4, 4, 2),
    ),
    named(
        "large",
        "252 CPUs: 63 LLCs of 2 SMT cores in one socket",
        valid(1, 63, 2, 2),
    ),
    named(
        "large-numa4",
        "252 CPUs: four NUMA nodes of one 63-core LLC",
        valid(4, 4, 63, 1),
    ),
];

/// The shape a test declares when it names none: one NUMA node, one LLC, two cores of one
/// thread, 512 MiB. The one place these defaults are written: `#[ktstr_test]` validates with
/// them at compile time and `ktstr::test_support::TestConfig::DEFAULT` is made of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeclaredShape {
    /// NUMA nodes.
    pub numa_nodes: u32,
    /// LLCs in the whole machine.
    pub llcs: u32,
    /// Cores per LLC.
    pub cores: u32,
    /// Threads per core.
    pub threads: u32,
    /// Guest memory, MiB.
    pub memory_mib: u64,
}

impl DeclaredShape {
    /// 1n1l2c1t, 512 MiB.
    pub const DEFAULT: DeclaredShape = DeclaredShape {
        numa_nodes: 1,
        llcs: 1,
        cores: 2,
        threads: 1,
        memory_mib: 512,
    };
}

/// What a test needs of a topology to run on it: the gauntlet runs a test on
/// every preset these allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Constraints {
    /// Fewest CPUs.
    pub min_cpus: u32,
    /// Most CPUs (default [`Constraints::DEFAULT_MAX_CPUS`]: larger shapes
    /// take minutes to boot under software emulation; a test opts in).
    pub max_cpus: u32,
    /// Only shapes with SMT siblings.
    pub requires_smt: bool,
    /// Fewest NUMA nodes.
    pub min_numa_nodes: u32,
    /// Fewest LLCs.
    pub min_llcs: u32,
}

impl Constraints {
    /// The default `max_cpus`.
    pub const DEFAULT_MAX_CPUS: u32 = 16;

    /// No constraint but the default `max_cpus`.
    pub const DEFAULT: Constraints = Constraints {
        min_cpus: 1,
        max_cpus: Self::DEFAULT_MAX_CPUS,
        requires_smt: false,
        min_numa_nodes: 1,
        min_llcs: 1,
    };

    /// Whether a test with these constraints runs on `t`.
    pub const fn allows(&self, t: &Topology) -> bool {
        t.nr_cpus() >= self.min_cpus
            && t.nr_cpus() <= self.max_cpus
            && (!self.requires_smt || t.threads_per_core() > 1)
            && t.numa_nodes() >= self.min_numa_nodes
            && t.llcs() >= self.min_llcs
    }
}

impl Default for Constraints {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// A shape feature a topology exercises, for the gauntlet's coverage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ShapeFeature {
    /// One LLC, no SMT, one node: the baseline.
    Flat,
    /// SMT siblings.
    Smt,
    /// Several LLCs.
    SeveralLlcs,
    /// An odd number of LLCs above one.
    OddLlcs,
    /// Several NUMA nodes.
    Numa,
}

impl ShapeFeature {
    /// Every feature.
    pub const ALL: [ShapeFeature; 5] = [
        ShapeFeature::Flat,
        ShapeFeature::Smt,
        ShapeFeature::SeveralLlcs,
        ShapeFeature::OddLlcs,
        ShapeFeature::Numa,
    ];

    /// Whether `t` has this feature.
    pub const fn of(self, t: &Topology) -> bool {
        match self {
            ShapeFeature::Flat => t.llcs() == 1 && t.threads_per_core() == 1 && t.numa_nodes() == 1,
            ShapeFeature::Smt => t.threads_per_core() > 1,
            ShapeFeature::SeveralLlcs => t.llcs() > 1,
            ShapeFeature::OddLlcs => t.llcs() > 1 && t.llcs() % 2 == 1,
            ShapeFeature::Numa => t.numa_nodes() > 1,
        }
    }

    /// Its name in reports.
    pub const fn name(self) -> &'static str {
        match self {
            ShapeFeature::Flat => "flat",
            ShapeFeature::Smt => "smt",
            ShapeFeature::SeveralLlcs => "several-llcs",
            ShapeFeature::OddLlcs => "odd-llcs",
            ShapeFeature::Numa => "numa",
        }
    }
}

impl fmt::Display for ShapeFeature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The preset called `name`.
///
/// ```
/// let large = ktstr_topology::preset("large").expect("the gauntlet has a large preset");
/// assert_eq!(large.topology.nr_cpus(), 252);
/// assert!(large.topology.max_apic_id() <= 254);
/// ```
pub fn preset(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeSet;
    use alloc::vec::Vec;

    #[test]
    fn names_are_unique_and_found() {
        let names: BTreeSet<_> = PRESETS.iter().map(|p| p.name).collect();
        assert_eq!(names.len(), PRESETS.len());
        for p in PRESETS {
            assert_eq!(preset(p.name), Some(p));
        }
        assert_eq!(preset("nope"), None);
    }

    #[test]
    fn the_gauntlet_covers_the_issue() {
        let has = |f: &dyn Fn(&Topology) -> bool| PRESETS.iter().any(|p| f(&p.topology));
        assert!(has(&|t| t.llcs() == 1 && t.nr_cpus() == 2), "tiny");
        assert!(has(&|t| t.threads_per_core() > 1), "SMT");
        for odd in [3, 5, 7] {
            assert!(has(&|t| t.llcs() == odd), "{odd} LLCs");
        }
        assert!(
            has(&|t| t.numa_nodes() == 1 && t.llcs() > 2),
            "several LLCs in a socket"
        );
        assert!(has(&|t| t.numa_nodes() == 2), "2 nodes");
        assert!(has(&|t| t.numa_nodes() == 4), "4 nodes");
        assert!(has(&|t| t.nr_cpus() == 252), "252 CPUs");
    }

    #[test]
    fn every_preset_is_valid_and_boots_somewhere() {
        for p in PRESETS {
            let t = p.topology;
            let again = Topology::new(
                t.numa_nodes(),
                t.llcs(),
                t.cores_per_llc(),
                t.threads_per_core(),
            );
            assert_eq!(again, Ok(t), "{}", p.name);
            let backends: Vec<_> = p.backends().collect();
            assert_eq!(
                backends,
                Backend::ALL,
                "{} ({t}) should boot everywhere",
                p.name
            );
        }
    }

    #[test]
    fn constraints_pick_presets_and_features_describe_them() {
        let allowed = |c: Constraints| -> Vec<&str> {
            PRESETS
                .iter()
                .filter(|p| c.allows(&p.topology))
                .map(|p| p.name)
                .collect()
        };
        let all = allowed(Constraints::DEFAULT);
        assert!(all.contains(&"tiny") && all.contains(&"llc3x3"));
        assert!(
            !all.contains(&"large"),
            "252 CPUs is past the default max_cpus"
        );
        let smt = allowed(Constraints {
            requires_smt: true,
            ..Constraints::DEFAULT
        });
        assert!(
            smt.iter()
                .all(|n| preset(n).is_some_and(|p| p.topology.threads_per_core() > 1))
        );
        assert!(smt.contains(&"smt"));
        let numa = allowed(Constraints {
            min_numa_nodes: 2,
            min_llcs: 4,
            max_cpus: 32,
            ..Constraints::DEFAULT
        });
        assert_eq!(numa, ["numa2-llc4", "numa4", "numa4-llc8", "numa2-llc4x4"]);
        assert!(
            allowed(Constraints {
                min_cpus: 17,
                ..Constraints::DEFAULT
            })
            .is_empty()
        );
        let t = |n| preset(n).expect("preset").topology;
        assert!(ShapeFeature::Flat.of(&t("tiny")));
        assert!(!ShapeFeature::Flat.of(&t("smt")));
        assert!(ShapeFeature::OddLlcs.of(&t("llc5x3")));
        assert!(!ShapeFeature::OddLlcs.of(&t("llc4")));
        assert!(
            ShapeFeature::Numa.of(&t("numa2-llc4x4")) && ShapeFeature::Smt.of(&t("numa2-llc4x4"))
        );
        // Every feature is on some preset within the default constraints.
        for f in ShapeFeature::ALL {
            assert!(
                PRESETS
                    .iter()
                    .any(|p| Constraints::DEFAULT.allows(&p.topology) && f.of(&p.topology)),
                "{f}"
            );
        }
    }

    #[test]
    fn sparse_apic_ids_limit_the_backends() {
        // 3 dies of 20 SMT cores per package: 240 CPUs but APIC ids up to 423.
        let t = Topology::new(2, 6, 20, 2).expect("valid");
        assert_eq!(t.max_apic_id(), (1 << 8) | (2 << 6) | (19 << 1) | 1);
        assert!(!t.boots_on(Backend::Qemu));
        assert!(!t.boots_on(Backend::Kvm));
    }
}
