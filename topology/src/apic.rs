//! APIC id layout: how a CPU's package, die, core and thread ids pack into its APIC id.
//!
//! The layout is the one of the Intel SDM "Processor Topology Enumeration" (vol. 3A
//! §10.9): each level gets a bit field just wide enough for its count
//! (ceil(log2(count)) bits, zero for a count of one), threads in the lowest bits, then
//! cores, then dies, and the package id in all the bits above. QEMU's `-smp` uses the
//! same packing (`hw/i386/topology.h`), so both backends hand the guest the same ids.

/// Bits needed to number `count` items: ceil(log2(count)), 0 for a count of 0 or 1.
pub(crate) const fn bits_for(count: u32) -> u32 {
    if count <= 1 {
        0
    } else {
        u32::BITS - (count - 1).leading_zeros()
    }
}

/// Widths of the thread, core and die fields of an APIC id.
///
/// ```
/// use ktstr_topology::Topology;
///
/// // 2 nodes (packages), 3 LLCs (dies) per node, 4 cores per LLC, 2 threads per core.
/// let topo: Topology = "2n6l4c2t".parse()?;
/// let layout = topo.apic_layout();
/// assert_eq!((layout.thread_bits(), layout.core_bits(), layout.die_bits()), (1, 2, 2));
/// assert_eq!(layout.package_shift(), 5);
/// assert_eq!(layout.apic_id(1, 2, 3, 1), (1 << 5) | (2 << 3) | (3 << 1) | 1);
/// # Ok::<(), ktstr_topology::TopologyError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ApicLayout {
    thread_bits: u32,
    core_bits: u32,
    die_bits: u32,
}

/// A CPU's ids at each level of the APIC id, as the guest decodes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ApicIds {
    /// Package (socket) id.
    pub package: u32,
    /// Die id within the package.
    pub die: u32,
    /// Core id within the die.
    pub core: u32,
    /// Thread (SMT sibling) id within the core.
    pub thread: u32,
}

impl ApicLayout {
    /// The layout for the given number of dies per package, cores per die and
    /// threads per core.
    pub const fn new(dies_per_package: u32, cores_per_die: u32, threads_per_core: u32) -> Self {
        Self {
            thread_bits: bits_for(threads_per_core),
            core_bits: bits_for(cores_per_die),
            die_bits: bits_for(dies_per_package),
        }
    }

    /// Width of the thread (SMT) field; it starts at bit 0.
    pub const fn thread_bits(&self) -> u32 {
        self.thread_bits
    }

    /// Width of the core field.
    pub const fn core_bits(&self) -> u32 {
        self.core_bits
    }

    /// Width of the die field.
    pub const fn die_bits(&self) -> u32 {
        self.die_bits
    }

    /// First bit of the core field (CPUID 0xB/0x1F SMT level shift).
    pub const fn core_shift(&self) -> u32 {
        self.thread_bits
    }

    /// First bit of the die field (CPUID 0x1F core level shift).
    pub const fn die_shift(&self) -> u32 {
        self.thread_bits + self.core_bits
    }

    /// First bit of the package field (CPUID 0x1F die level shift).
    pub const fn package_shift(&self) -> u32 {
        self.thread_bits + self.core_bits + self.die_bits
    }

    /// Packs the ids into an APIC id. Ids wider than their field are not checked.
    pub const fn apic_id(&self, package: u32, die: u32, core: u32, thread: u32) -> u32 {
        (package << self.package_shift())
            | (die << self.die_shift())
            | (core << self.core_shift())
            | thread
    }

    /// Splits an APIC id into its fields.
    pub const fn decode(&self, apic_id: u32) -> ApicIds {
        ApicIds {
            package: apic_id >> self.package_shift(),
            die: field(apic_id, self.die_shift(), self.die_bits),
            core: field(apic_id, self.core_shift(), self.core_bits),
            thread: field(apic_id, 0, self.thread_bits),
        }
    }
}

const fn field(value: u32, shift: u32, bits: u32) -> u32 {
    (value >> shift) & ((1u32 << bits) - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_for_counts() {
        let cases = [
            (1, 0),
            (2, 1),
            (3, 2),
            (4, 2),
            (5, 3),
            (8, 3),
            (9, 4),
            (63, 6),
            (64, 6),
        ];
        for (count, bits) in cases {
            assert_eq!(bits_for(count), bits, "count {count}");
        }
    }

    #[test]
    fn decode_inverts_apic_id() {
        let layout = ApicLayout::new(3, 5, 2);
        for package in 0..4 {
            for die in 0..3 {
                for core in 0..5 {
                    for thread in 0..2 {
                        let id = layout.apic_id(package, die, core, thread);
                        let ids = layout.decode(id);
                        assert_eq!(
                            ids,
                            ApicIds {
                                package,
                                die,
                                core,
                                thread
                            }
                        );
                    }
                }
            }
        }
    }
}
