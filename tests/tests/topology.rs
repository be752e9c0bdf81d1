//! Topology conformance: in the guest, sysfs must describe exactly the
//! declared topology — packages, dies, cores, SMT siblings, L3 sharing, NUMA
//! nodes and distances — field by field. (Each test checks its own declared
//! shape: no gauntlet variants.)

use std::fmt::Write as _;

use ktstr::prelude::*;

fn read(path: &str) -> Result<String> {
    Ok(std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("{path}: {e}"))?
        .trim()
        .to_string())
}

/// The topology a test declared, built on the host side of the comparison:
/// `ctx.topology` must equal it, memory and distances included.
fn declared(n: u32, l: u32, c: u32, t: u32, memory_mib: u64) -> ktstr::topology::Topology {
    ktstr::topology::Topology::new(n, l, c, t)
        .and_then(|t| t.with_memory_mib(memory_mib))
        .expect("a valid declaration")
}

fn conformance(ctx: &Ctx, declared: ktstr::topology::Topology) -> Result<AssertResult> {
    let t = &ctx.topology;
    let mut wrong = String::new();
    if *t != declared {
        let _ = writeln!(
            wrong,
            "ctx.topology is {t} with {} MiB, declared {declared} with {} MiB",
            t.memory_mib(),
            declared.memory_mib()
        );
    }
    for node in 0..t.numa_nodes() {
        // The guest's RAM per node: at most what was declared, and most of it
        // (the kernel keeps some for itself; the channel takes 4 MiB of node 0).
        let meminfo = read(&format!("/sys/devices/system/node/node{node}/meminfo"))?;
        let total_kib: u64 = meminfo
            .lines()
            .find(|l| l.contains("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
            .unwrap_or(0);
        let want_kib = u64::from(t.node_memory_mib(node).unwrap_or(0)) * 1024;
        if total_kib > want_kib || total_kib < want_kib / 2 {
            let _ = writeln!(
                wrong,
                "node {node} MemTotal: guest has {total_kib} kB, declared {want_kib} kB"
            );
        }
    }
    for w in t.sysfs_mismatches(&ktstr::topology::sysfs_view()) {
        let _ = writeln!(wrong, "{w}");
    }
    if wrong.is_empty() {
        Ok(AssertResult::pass().note("topology", format!("{t}: every field matches")))
    } else {
        Ok(AssertResult::fail("topology", format!("{t}:\n{wrong}")))
    }
}

/// Two LLCs in one socket, with SMT.
#[ktstr_test(
    numa_nodes = 1,
    llcs = 2,
    cores = 2,
    threads = 2,
    duration_s = 1,
    gauntlet = false
)]
fn topology_1n2l2c2t(ctx: &Ctx) -> Result<AssertResult> {
    conformance(ctx, declared(1, 2, 2, 2, 512))
}

/// Two NUMA nodes with two LLCs each.
#[ktstr_test(
    numa_nodes = 2,
    llcs = 4,
    cores = 2,
    threads = 1,
    memory_mib = 1024,
    duration_s = 1,
    gauntlet = false
)]
fn topology_2n4l2c1t(ctx: &Ctx) -> Result<AssertResult> {
    conformance(ctx, declared(2, 4, 2, 1, 1024))
}

/// An odd LLC count.
#[ktstr_test(
    numa_nodes = 1,
    llcs = 3,
    cores = 2,
    threads = 1,
    duration_s = 1,
    gauntlet = false
)]
fn topology_1n3l2c1t(ctx: &Ctx) -> Result<AssertResult> {
    conformance(ctx, declared(1, 3, 2, 1, 512))
}

/// Four NUMA nodes, one LLC each.
#[ktstr_test(
    numa_nodes = 4,
    llcs = 4,
    cores = 1,
    threads = 1,
    memory_mib = 1024,
    duration_s = 1,
    gauntlet = false
)]
fn topology_4n4l1c1t(ctx: &Ctx) -> Result<AssertResult> {
    conformance(ctx, declared(4, 4, 1, 1, 1024))
}

/// One LLC with 4 cores x 2 threads.
#[ktstr_test(
    numa_nodes = 1,
    llcs = 1,
    cores = 4,
    threads = 2,
    duration_s = 1,
    gauntlet = false
)]
fn topology_1n1l4c2t(ctx: &Ctx) -> Result<AssertResult> {
    conformance(ctx, declared(1, 1, 4, 2, 512))
}
