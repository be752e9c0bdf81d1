//! The example tests `cargo xtask demo` runs and tabulates: what a scheduler
//! developer writes, under the kernel's default scheduler (EEVDF).

use ktstr::prelude::*;

/// The VM has the declared shape: 2 LLCs x 2 cores x 2 threads.
#[ktstr_test(llcs = 2, cores = 2, threads = 2, duration_s = 1)]
fn two_llcs_with_smt_boot_with_all_cpus(ctx: &Ctx) -> Result<AssertResult> {
    let n = std::thread::available_parallelism()?.get() as u32;
    if n != ctx.topology.nr_cpus() {
        return Ok(AssertResult::fail_msg(format!("{n} CPUs online, declared {}", ctx.topology.nr_cpus())));
    }
    Ok(AssertResult::pass())
}
