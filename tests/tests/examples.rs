//! The example tests `cargo xtask demo` runs and tabulates: what a scheduler
//! developer writes, here under the kernel's default scheduler (EEVDF).

use ktstr::prelude::*;

/// The product overview's example: steady load on 1 LLC x 2 cores.
#[ktstr_test(llcs = 1, cores = 2, threads = 1, duration_s = 5)]
fn steady_one_llc_two_cores(ctx: &Ctx) -> Result<AssertResult> {
    scenarios::steady(ctx)
}

/// Steady load across 2 LLCs x 2 cores x 2 SMT threads.
#[ktstr_test(llcs = 2, cores = 2, threads = 2, duration_s = 5)]
fn steady_two_llcs_with_smt(ctx: &Ctx) -> Result<AssertResult> {
    scenarios::steady(ctx)
}

/// Two cgroups on disjoint cpusets: each keeps to its CPUs (0-3: its
/// gauntlet variants need 4 CPUs).
#[ktstr_test(llcs = 2, cores = 2, threads = 1, duration_s = 3, min_cpus = 4)]
fn cpusets_split_two_llcs(ctx: &Ctx) -> Result<AssertResult> {
    execute_defs(
        ctx,
        [
            CgroupDef::named("llc0").workers(2).cpuset([0, 1]),
            CgroupDef::named("llc1").workers(2).cpuset([2, 3]),
        ],
    )
}
