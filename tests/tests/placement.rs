//! Fairness failures explained by topology: a scheduler that crowds tasks
//! onto one NUMA node fails `steady` naming fairness, and the failure names
//! the node split; EEVDF on the same two-node VM splits evenly.
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
    expect_err = "explained by placement: node 0 carried"
)]
fn numa_blind_placement_fails_naming_the_node_split(ctx: &Ctx) -> Result<AssertResult> {
    scenarios::steady(ctx)
}

/// EEVDF's balancer spreads the eight spinners evenly over the two nodes:
/// the placement notes show four per node (whatever the cgroups' shares),
/// and the run passes.
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
        per_node == [4, 4],
        "EEVDF split the spinners {per_node:?} over the nodes:\n{}",
        placement
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
    Ok(v)
}
