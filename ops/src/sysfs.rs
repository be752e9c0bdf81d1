//! The guest's sysfs view of its CPUs and nodes, read in the guest, for the
//! one conformance check in `ktstr_topology` ([`Topology::sysfs_mismatches`]).
//!
//! [`Topology::sysfs_mismatches`]: ktstr_topology::Topology::sysfs_mismatches

use std::collections::BTreeMap;

use ktstr_topology::{SysfsCpu, SysfsNode, SysfsView};

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

fn ids_in(dir: &str, prefix: &str) -> Vec<u32> {
    let mut ids: Vec<u32> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_prefix(prefix)?.parse().ok())
        .collect();
    ids.sort_unstable();
    ids
}

/// What this machine's sysfs says about its CPUs and NUMA nodes.
pub fn sysfs_view() -> SysfsView {
    let mut cpus = BTreeMap::new();
    for cpu in ids_in("/sys/devices/system/cpu", "cpu") {
        let base = format!("/sys/devices/system/cpu/cpu{cpu}");
        let num = |f: &str| read(&format!("{base}/topology/{f}")).and_then(|v| v.parse().ok());
        cpus.insert(
            cpu,
            SysfsCpu {
                package: num("physical_package_id"),
                die: num("die_id"),
                core: num("core_id"),
                thread_siblings: read(&format!("{base}/topology/thread_siblings_list")),
                l3_shared: read(&format!("{base}/cache/index3/shared_cpu_list")),
            },
        );
    }
    let mut nodes = BTreeMap::new();
    for node in ids_in("/sys/devices/system/node", "node") {
        let base = format!("/sys/devices/system/node/node{node}");
        nodes.insert(
            node,
            SysfsNode {
                cpus: read(&format!("{base}/cpulist")).unwrap_or_default(),
                distances: read(&format!("{base}/distance"))
                    .unwrap_or_default()
                    .split_whitespace()
                    .filter_map(|d| d.parse().ok())
                    .collect(),
            },
        );
    }
    SysfsView {
        online: read("/sys/devices/system/cpu/online"),
        cpus,
        nodes,
    }
}
