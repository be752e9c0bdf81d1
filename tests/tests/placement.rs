//! Fairness failures explained by topology: a scheduler that crowds tasks
//! onto one NUMA node fails `steady` naming fairness, and the failure names
//! the node split; EEVDF on the same two-node VM spreads them (at most 5 of 8 on a node).
//!
//! The crowding is planted in scx-ktstr (`--pin-by-pid 0,1,0,1,0,1,2,3`): on
//! two nodes of two CPUs, eight consecutive pids put six spinners on node 0
//! and one on each CPU of node 1, never moved -- the split scx_bpfland 1.1.4
//! kept on this topology (1.63-1.66 s against 4.98-4.99 s in 5 s).

use ktstr::prelude::*;
use ktstr::scenario::checks::{self, Level};

const NUMA_BLIND: Scheduler = Scheduler::named("numa-blind")
    .binary(SchedulerSpec::Discover("scx-ktstr"))
    .sched_args(&["--pin-by-pid", "0,1,0,1,0,1,2,3"]);

#[ktstr_test(
    scheduler = NUMA_BLIND,
    numa_nodes = 2,
    llcs = 2,
    cores = 2,
    threads = 1,
    duration_s = 5,
    expect_err_text = "explained by placement: node 0 carried"
)]
fn numa_blind_placement_fails_naming_the_node_split(ctx: &Ctx) -> Result<AssertResult> {
    scenarios::steady(ctx)
}

/// EEVDF's balancer spreads the eight spinners over the two nodes, and the
/// run passes: at most five on either node (the NUMA-blind scheduler's six).
/// Four and four is usual but not promised: Linux's NUMA balancing leaves a
/// small imbalance between nodes in place, and one run in five here ended
/// 3 and 5 (each worker still got its even 2.5 s of the 5 s run).
#[ktstr_test(numa_nodes = 2, llcs = 2, cores = 2, threads = 1, duration_s = 5)]
fn eevdf_splits_evenly_over_two_nodes(ctx: &Ctx) -> Result<AssertResult> {
    let v = scenarios::steady(ctx)?;
    let placement = checks::placement(v.workers(), &ctx.topology);
    let mut per_node = [0usize; 2];
    for g in &placement {
        let node = g
            .levels
            .iter()
            .find(|l| l.level == Level::Node)
            .ok_or_else(|| anyhow::anyhow!("no node level in {g}"))?;
        anyhow::ensure!(node.homeless.is_empty(), "workers without a node: {g}");
        for d in &node.domains {
            per_node[d.domain as usize] += d.workers.len();
        }
    }
    anyhow::ensure!(
        per_node.iter().sum::<usize>() == 8 && per_node.iter().all(|n| *n <= 5),
        "EEVDF split the spinners {per_node:?} over the nodes:\n{}",
        placement
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
    Ok(v)
}
