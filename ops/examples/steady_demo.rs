//! Runs a scenario on the machine it finds itself on and prints the verdict.
//!
//! Made to be booted in a ktstr VM before the `#[ktstr_test]` harness exists:
//!
//! ```text
//! cargo build -p ktstr-ops --example steady_demo
//! cargo run -p ktstr --bin ktstr -- shell --topology 1n1l2c1t \
//!     --include target/debug/examples/steady_demo --exec '/bin/steady_demo steady 5'
//! ```
//!
//! Usage: `steady_demo [steady|starve|twin|mixed] [seconds] [unreliable]`. The topology
//! is read from sysfs; cgroup2 must be mounted at /sys/fs/cgroup. `unreliable`
//! says the VM has more vCPUs than the host has cores (what the harness will
//! decide by itself): timing checks then report inconclusive instead of failing.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use ktstr_ops::WorkType;
use ktstr_ops::scenarios::{self, Hog};
use ktstr_ops::{CgroupDef, Ctx, execute_defs};
use ktstr_topology::Topology;

fn main() -> anyhow::Result<()> {
    let t0 = Instant::now();
    let mut args = std::env::args().skip(1);
    let which = args.next().unwrap_or_else(|| "steady".to_string());
    let secs: f64 = match args.next() {
        Some(s) => s.parse().context("seconds")?,
        None => 5.0,
    };
    let reliable = args.next().as_deref() != Some("unreliable");
    let topo = topology_from_sysfs()?;
    println!(
        "steady_demo: {which} on {topo} ({} CPUs) for {secs}s, guest uptime {}",
        topo.nr_cpus(),
        uptime()
    );
    let ctx = Ctx::new(topo, Duration::from_secs_f64(secs)).with_timing_reliable(reliable);
    let t1 = Instant::now();
    let verdict = match which.as_str() {
        "steady" => ctx.run(scenarios::steady),
        "starve" => ctx.run(|c| scenarios::rt_starvation(c, Hog::On)),
        "twin" => ctx.run(|c| scenarios::rt_starvation(c, Hog::Off)),
        "mixed" => ctx.run(mixed),
        other => anyhow::bail!("unknown scenario {other:?}: steady, starve, twin or mixed"),
    };
    let scenario_wall = t1.elapsed();
    match verdict {
        Ok(v) => {
            println!("{v}");
            let verdict = match (v.is_pass(), v.inconclusive().is_empty()) {
                (false, _) => "FAIL",
                (true, true) => "PASS",
                (true, false) => "PASS (inconclusive)",
            };
            println!(
                "steady_demo: verdict {verdict} (scenario {scenario_wall:.2?}, process {:.2?}, \
                 guest uptime {})",
                t0.elapsed(),
                uptime()
            );
        }
        Err(e) => println!("steady_demo: ERROR {e:#} (after {scenario_wall:.2?})"),
    }
    Ok(())
}

/// Every work type, a cpuset on CPU 0 and a nested cgroup confined to the last
/// CPU: what cannot be tried on a cgroup v1 build host.
fn mixed(ctx: &Ctx) -> anyhow::Result<ktstr_ops::AssertResult> {
    let last = ctx.topology.nr_cpus() - 1;
    let sleep_wake = WorkType::SleepWake {
        run: Duration::from_millis(2),
        sleep: Duration::from_millis(10),
    };
    execute_defs(
        ctx,
        [
            CgroupDef::named("spin_cpu0").workers(2).cpuset([0]),
            CgroupDef::named("yield").workers(2).work(WorkType::Yield),
            CgroupDef::named("outer/sleepers")
                .workers(2)
                .work(sleep_wake)
                .cpuset([last])
                .mems([0]),
        ],
    )
}

/// Seconds since the guest booted, from /proc/uptime.
fn uptime() -> String {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|u| u.split_whitespace().next().map(|s| format!("{s}s")))
        .unwrap_or_else(|| "?".to_string())
}

/// The topology the guest sees: nodes, distinct L3 groups, SMT width.
fn topology_from_sysfs() -> anyhow::Result<Topology> {
    let cpu_dir = std::path::Path::new("/sys/devices/system/cpu");
    let online = std::fs::read_to_string(cpu_dir.join("online")).context("cpu/online")?;
    let cpus: ktstr_ops::CpuSet = online.parse()?;
    let nodes = std::fs::read_dir("/sys/devices/system/node")
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| {
                    let n = e.file_name();
                    let n = n.to_string_lossy();
                    n.starts_with("node") && n[4..].parse::<u32>().is_ok()
                })
                .count() as u32
        })
        .unwrap_or(1)
        .max(1);
    let mut llcs = std::collections::BTreeSet::new();
    for cpu in cpus.iter() {
        let p = cpu_dir.join(format!("cpu{cpu}/cache/index3/shared_cpu_list"));
        llcs.insert(std::fs::read_to_string(p).unwrap_or_default());
    }
    let siblings = std::fs::read_to_string(cpu_dir.join("cpu0/topology/thread_siblings_list"))
        .unwrap_or_else(|_| "0".to_string());
    let threads = siblings.parse::<ktstr_ops::CpuSet>()?.len().max(1) as u32;
    let llcs = llcs.len().max(1) as u32;
    let cores = (cpus.len() as u32 / (llcs * threads)).max(1);
    Ok(Topology::new(nodes, llcs, cores, threads)?)
}
