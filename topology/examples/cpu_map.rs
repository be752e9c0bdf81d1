//! Print a topology's CPU map: which Linux CPU sits on which node, LLC, core and
//! SMT thread, its APIC id, and each node's and LLC's CPU list.
//! `cargo run -p ktstr-topology --example cpu_map -- 2n4l2c2t` (a compact form or a
//! preset name such as `numa2`; default `1n2l2c1t`).

use ktstr_topology::{Topology, cpu_list, preset};

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let arg = std::env::args().nth(1).unwrap_or_else(|| "1n2l2c1t".into());
    let topo: Topology = match preset(&arg) {
        Some(p) => p.topology,
        None => arg.parse()?,
    };
    println!(
        "{topo}: {} CPUs, {} node(s), {} LLC(s), {} core(s) per LLC, {} thread(s) per core, {} MiB",
        topo.nr_cpus(),
        topo.numa_nodes(),
        topo.llcs(),
        topo.cores_per_llc(),
        topo.threads_per_core(),
        topo.memory_mib()
    );
    println!("cpu  node  llc  core  thread  apic");
    for c in topo.cpus() {
        println!(
            "{:>3}  {:>4}  {:>3}  {:>4}  {:>6}  {:>4}",
            c.cpu, c.node, c.llc, c.core, c.thread, c.apic_id
        );
    }
    for node in 0..topo.numa_nodes() {
        println!("node {node}: cpus {}", cpu_list(topo.node_cpus(node)));
    }
    for llc in 0..topo.llcs() {
        println!("llc {llc}: cpus {}", cpu_list(topo.llc_cpus(llc)));
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cpu_map: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
