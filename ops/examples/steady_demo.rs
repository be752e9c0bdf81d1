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
//! Usage: `steady_demo [steady|starve|twin] [seconds]`. The topology is read from
//! sysfs; cgroup2 must be mounted at /sys/fs/cgroup.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use ktstr_ops::scenario::Ctx;
use ktstr_ops::scenario::scenarios::{self, Hog};
use ktstr_topology::Topology;

fn main() -> anyhow::Result<()> {
    let t0 = Instant::now();
    let mut args = std::env::args().skip(1);
    let which = args.next().unwrap_or_else(|| "steady".to_string());
    let secs: f64 = match args.next() {
        Some(s) => s.parse().context("seconds")?,
        None => 5.0,
    };
    let topo = topology_from_sysfs()?;
    println!(
        "steady_demo: {which} on {topo} ({} CPUs) for {secs}s",
        topo.nr_cpus()
    );
    let ctx = Ctx::new(topo, Duration::from_secs_f64(secs));
    let t1 = Instant::now();
    let verdict = match which.as_str() {
        "steady" => ctx.run(scenarios::steady),
        "starve" => ctx.run(|c| scenarios::rt_starvation(c, Hog::On)),
        "twin" => ctx.run(|c| scenarios::rt_starvation(c, Hog::Off)),
        other => anyhow::bail!("unknown scenario {other:?}: steady, starve or twin"),
    };
    let scenario_wall = t1.elapsed();
    match verdict {
        Ok(v) => {
            println!("{v}");
            println!(
                "steady_demo: verdict {} (scenario {scenario_wall:.2?}, process {:.2?})",
                if v.is_pass() { "PASS" } else { "FAIL" },
                t0.elapsed()
            );
        }
        Err(e) => println!("steady_demo: ERROR {e:#} (after {scenario_wall:.2?})"),
    }
    Ok(())
}

/// The topology the guest sees: nodes, distinct L3 groups, SMT width.
fn topology_from_sysfs() -> anyhow::Result<Topology> {
    let cpu_dir = std::path::Path::new("/sys/devices/system/cpu");
    let online = std::fs::read_to_string(cpu_dir.join("online")).context("cpu/online")?;
    let cpus: ktstr_ops::cgroup::CpuSet = online.parse()?;
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
    let threads = siblings.parse::<ktstr_ops::cgroup::CpuSet>()?.len().max(1) as u32;
    let llcs = llcs.len().max(1) as u32;
    let cores = (cpus.len() as u32 / (llcs * threads)).max(1);
    Ok(Topology::new(nodes, llcs, cores, threads)?)
}
