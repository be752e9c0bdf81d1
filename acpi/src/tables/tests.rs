//! Cross-table checks: every preset and generated topologies, decoded back.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use ktstr_topology::{PRESETS, Topology};
use proptest::prelude::*;

use super::*;
use crate::node_memory_ranges;

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from(u32_at(b, off)) | (u64::from(u32_at(b, off + 4)) << 32)
}

fn sum(b: &[u8]) -> u8 {
    b.iter().fold(0u8, |s, x| s.wrapping_add(*x))
}

/// Interrupt controller / affinity structures after a table's fixed part:
/// (type, bytes), each length-checked.
fn entries(table: &[u8], start: usize) -> Vec<(u8, &[u8])> {
    let mut out = Vec::new();
    let mut off = start;
    while off < table.len() {
        let (kind, len) = (table[off], usize::from(table[off + 1]));
        assert!(
            len >= 2 && off + len <= table.len(),
            "entry at {off} overruns"
        );
        out.push((kind, &table[off..off + len]));
        off += len;
    }
    out
}

/// What the tables say, decoded independently of the builders.
#[derive(Debug, Default)]
struct Decoded {
    /// MADT: processor UID -> APIC id, in table order.
    madt_cpus: Vec<(u32, u32)>,
    /// SRAT: APIC id -> proximity domain.
    srat_cpus: BTreeMap<u32, u32>,
    /// SRAT memory: (base, length, domain).
    srat_memory: Vec<(u64, u64, u32)>,
    /// SLIT matrix.
    slit: Vec<Vec<u8>>,
}

fn decode(tables: &AcpiTables) -> Decoded {
    let mut d = Decoded::default();
    for t in tables.tables() {
        let b = &t.bytes;
        if &t.signature == b"RSDP" {
            assert_eq!(b.len(), 36);
            assert_eq!(sum(&b[..20]), 0, "RSDP v1 checksum");
            assert_eq!(sum(b), 0, "RSDP extended checksum");
            assert_eq!(u32_at(b, 20) as usize, b.len());
            let xsdt = tables.get(b"XSDT").expect("an XSDT");
            assert_eq!(u64_at(b, 24), xsdt.address);
            continue;
        }
        assert_eq!(&b[..4], &t.signature, "signature");
        assert_eq!(u32_at(b, 4) as usize, b.len(), "{:?} length", t.signature);
        assert_eq!(sum(b), 0, "{:?} checksum", t.signature);
        match &t.signature {
            b"XSDT" => {
                let listed: Vec<u64> = (36..b.len()).step_by(8).map(|o| u64_at(b, o)).collect();
                let expected: Vec<u64> = [b"FACP", b"APIC", b"SRAT", b"SLIT"]
                    .iter()
                    .map(|s| tables.get(s).expect("listed table").address)
                    .collect();
                assert_eq!(listed, expected);
            }
            b"FACP" => {
                assert_eq!(u64_at(b, 140), tables.get(b"DSDT").expect("a DSDT").address);
            }
            b"APIC" => {
                for (kind, e) in entries(b, 44) {
                    match kind {
                        0 => {
                            assert_eq!(e.len(), 8);
                            assert_eq!(u32_at(e, 4) & 1, 1, "enabled");
                            d.madt_cpus.push((u32::from(e[2]), u32::from(e[3])));
                        }
                        9 => {
                            assert_eq!(e.len(), 16);
                            assert_eq!(u32_at(e, 8) & 1, 1, "enabled");
                            assert!(u32_at(e, 4) > 254, "x2APIC entries only from 255 up");
                            d.madt_cpus.push((u32_at(e, 12), u32_at(e, 4)));
                        }
                        1 => assert_eq!(e.len(), 12),
                        2 => assert_eq!(e.len(), 10),
                        4 => assert_eq!(e.len(), 6),
                        0xa => assert_eq!(e.len(), 12),
                        other => panic!("unexpected MADT entry type {other}"),
                    }
                }
            }
            b"SRAT" => {
                for (kind, e) in entries(b, 48) {
                    match kind {
                        0 => {
                            assert_eq!(e.len(), 16);
                            let domain = u32::from(e[2])
                                | u32::from(e[9]) << 8
                                | u32::from(e[10]) << 16
                                | u32::from(e[11]) << 24;
                            let prev = d.srat_cpus.insert(u32::from(e[3]), domain);
                            assert_eq!(prev, None, "APIC id twice in SRAT");
                        }
                        2 => {
                            assert_eq!(e.len(), 24);
                            let prev = d.srat_cpus.insert(u32_at(e, 8), u32_at(e, 4));
                            assert_eq!(prev, None, "x2APIC id twice in SRAT");
                        }
                        1 => {
                            assert_eq!(e.len(), 40);
                            assert_eq!(u32_at(e, 28) & 1, 1, "enabled");
                            d.srat_memory
                                .push((u64_at(e, 8), u64_at(e, 16), u32_at(e, 2)));
                        }
                        other => panic!("unexpected SRAT entry type {other}"),
                    }
                }
            }
            b"SLIT" => {
                let n = usize::try_from(u64_at(b, 36)).expect("small");
                assert_eq!(b.len(), 44 + n * n);
                d.slit = (0..n)
                    .map(|i| b[44 + i * n..44 + (i + 1) * n].to_vec())
                    .collect();
            }
            b"DSDT" => assert!(b.len() > 36),
            other => panic!("unexpected table {other:?}"),
        }
    }
    d
}

/// The acceptance checks of issue 4 for one topology.
fn check(topo: &Topology) {
    let memory = node_memory_ranges(topo, 0xc000_0000, 1 << 32);
    let tables = build(topo, &AcpiConfig::new(&memory)).expect("tables build");
    let d = decode(&tables);

    // Each CPU once in the MADT, in CPU order, with its APIC id and UID = CPU number.
    let expected: Vec<(u32, u32)> = topo.cpus().map(|c| (c.cpu, c.apic_id)).collect();
    assert_eq!(d.madt_cpus, expected, "{topo}: MADT CPUs");
    // Each CPU once in the SRAT with its node.
    let expected: BTreeMap<u32, u32> = topo.cpus().map(|c| (c.apic_id, c.node)).collect();
    assert_eq!(d.srat_cpus, expected, "{topo}: SRAT CPUs");
    // Memory per node adds up.
    for node in 0..topo.numa_nodes() {
        let bytes: u64 = d
            .srat_memory
            .iter()
            .filter(|m| m.2 == node)
            .map(|m| m.1)
            .sum();
        let mib = topo.node_memory_mib(node).expect("node exists");
        assert_eq!(bytes, u64::from(mib) << 20, "{topo}: node {node} memory");
    }
    // SLIT: n x n, symmetric, 10 on the diagonal, the topology's distances.
    let n = topo.numa_nodes() as usize;
    assert_eq!(d.slit.len(), n);
    for i in 0..n {
        for j in 0..n {
            assert_eq!(d.slit[i][j], d.slit[j][i], "{topo}: SLIT symmetric");
            let want = topo.distance(i as u32, j as u32).expect("in range");
            assert_eq!(d.slit[i][j], want);
        }
        assert_eq!(d.slit[i][i], 10);
    }
    // Tables do not overlap.
    let mut ranges: Vec<(u64, u64)> = tables.ranges().collect();
    ranges.sort_unstable();
    for w in ranges.windows(2) {
        assert!(w[0].0 + w[0].1 <= w[1].0, "{topo}: tables overlap");
    }
}

#[test]
fn every_preset() {
    for p in PRESETS {
        check(&p.topology);
    }
}

#[test]
fn custom_distances_reach_the_slit() {
    let topo = Topology::new(3, 3, 1, 1)
        .and_then(|t| t.with_distance(0, 2, 31))
        .expect("valid");
    check(&topo);
}

#[test]
fn x2apic_entries_above_254() {
    // 3 dies of 20 SMT cores per package: APIC ids up to 423.
    let topo = Topology::new(2, 6, 20, 2).expect("valid");
    check(&topo);
}

#[test]
fn bad_memory_maps_are_rejected() {
    let topo = Topology::new(2, 2, 1, 1).expect("valid");
    let one = [MemoryAffinity {
        base: 0,
        length: 1 << 30,
        node: 0,
    }];
    let err = build(&topo, &AcpiConfig::new(&one)).expect_err("node 1 has no memory");
    assert_eq!(err, AcpiError::NodeWithoutMemory { node: 1 });
    let three = [MemoryAffinity {
        base: 0,
        length: 1 << 30,
        node: 2,
    }];
    assert!(matches!(
        build(&topo, &AcpiConfig::new(&three)),
        Err(AcpiError::NoSuchNode { .. })
    ));
    let memory = node_memory_ranges(&topo, 0xc000_0000, 1 << 32);
    let mut config = AcpiConfig::new(&memory);
    config.tables_address = config.rsdp_address - 8;
    assert!(matches!(
        build(&topo, &config),
        Err(AcpiError::Overlap { .. })
    ));
}

#[test]
fn writes_land_at_their_addresses() {
    let topo = Topology::new(1, 2, 2, 2).expect("valid");
    let memory = node_memory_ranges(&topo, 0xc000_0000, 1 << 32);
    let tables = build(&topo, &AcpiConfig::new(&memory)).expect("tables build");
    let mut sink = crate::VecSink::new(DEFAULT_RSDP_ADDRESS);
    tables.write_to(&mut sink).expect("in range");
    for t in tables.tables() {
        assert_eq!(sink.read(t.address, t.bytes.len()), Some(&t.bytes[..]));
    }
}

fn valid_topology() -> impl Strategy<Value = Topology> {
    // 1-4 nodes, 1-16 LLCs in all (a multiple of the nodes), 1-16 cores, 1-2 threads;
    // those above MAX_CPUS are not valid and are left out.
    (1u32..=4)
        .prop_flat_map(|n| (Just(n), 1..=16 / n, 1u32..=16, 1u32..=2))
        .prop_filter_map("valid topologies only", |(n, per_node, c, t)| {
            Topology::new(n, n * per_node, c, t).ok()
        })
}

proptest! {
    #[test]
    fn generated_topologies(topo in valid_topology()) {
        check(&topo);
    }
}
