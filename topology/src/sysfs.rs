//! Linux's view of the machine as its sysfs shows it, and the one check that
//! it is exactly the declared topology. Every conformance test — in the
//! guest, through `ktstr shell`, on either backend — fills a [`SysfsView`]
//! its own way and asks [`Topology::sysfs_mismatches`].

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use crate::{Topology, cpu_list, format_cpu_list, parse_cpu_list};

/// One CPU as `/sys/devices/system/cpu/cpuN/` describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SysfsCpu {
    /// `topology/physical_package_id`.
    pub package: Option<u32>,
    /// `topology/die_id`.
    pub die: Option<u32>,
    /// `topology/core_id`.
    pub core: Option<u32>,
    /// `topology/thread_siblings_list`.
    pub thread_siblings: Option<String>,
    /// `cache/index3/shared_cpu_list`.
    pub l3_shared: Option<String>,
}

/// One NUMA node as `/sys/devices/system/node/nodeN/` describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SysfsNode {
    /// `cpulist`.
    pub cpus: String,
    /// `distance`, one entry per node.
    pub distances: Vec<u8>,
}

/// What the guest's sysfs says; fields it could not read stay `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SysfsView {
    /// `/sys/devices/system/cpu/online`, when read.
    pub online: Option<String>,
    /// Every CPU directory, by CPU id.
    pub cpus: BTreeMap<u32, SysfsCpu>,
    /// Every node directory, by node id (empty where the guest shows none).
    pub nodes: BTreeMap<u32, SysfsNode>,
}

/// The script that prints a [`SysfsView`] as lines [`SysfsView::parse_lines`] reads.
pub const SYSFS_SCRIPT: &str = r#"echo "online $(cat /sys/devices/system/cpu/online)"
cd /sys/devices/system/cpu
for c in cpu[0-9]*; do
  t=$c/topology
  echo "cpu ${c#cpu} pkg=$(cat $t/physical_package_id) die=$(cat $t/die_id) core=$(cat $t/core_id) sib=$(cat $t/thread_siblings_list) l3=$(cat $c/cache/index3/shared_cpu_list)"
done
for n in /sys/devices/system/node/node[0-9]*; do
  echo "node ${n##*node} cpus=$(cat $n/cpulist) dist=$(cat $n/distance | tr ' ' ,)"
done
"#;

/// A list in the kernel's format, normalized so equal sets compare equal.
fn norm(list: &str) -> String {
    parse_cpu_list(list).map_or_else(|_| list.trim().to_string(), format_cpu_list)
}

impl SysfsView {
    /// Reads the lines [`SYSFS_SCRIPT`] prints (`online L`, `cpu N pkg=.. die=..
    /// core=.. sib=L l3=L`, `node N cpus=L dist=a,b`); other lines are ignored.
    pub fn parse_lines(text: &str) -> SysfsView {
        let mut v = SysfsView::default();
        for line in text.lines() {
            let mut w = line.split_whitespace();
            let kind = w.next();
            if kind == Some("online") {
                v.online = w.next().map(str::to_string);
                continue;
            }
            let Some(id) = w.next().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let kv: BTreeMap<&str, &str> = w.filter_map(|f| f.split_once('=')).collect();
            let num = |k: &str| kv.get(k).and_then(|x| x.parse().ok());
            let text = |k: &str| kv.get(k).map(|x| (*x).to_string());
            match kind {
                Some("cpu") => {
                    v.cpus.insert(
                        id,
                        SysfsCpu {
                            package: num("pkg"),
                            die: num("die"),
                            core: num("core"),
                            thread_siblings: text("sib"),
                            l3_shared: text("l3"),
                        },
                    );
                }
                Some("node") => {
                    v.nodes.insert(
                        id,
                        SysfsNode {
                            cpus: text("cpus").unwrap_or_default(),
                            distances: kv
                                .get("dist")
                                .map(|d| d.split(',').filter_map(|x| x.parse().ok()).collect())
                                .unwrap_or_default(),
                        },
                    );
                }
                _ => {}
            }
        }
        v
    }
}

impl Topology {
    /// Every way `view` differs from this topology, one line each (empty:
    /// Linux sees exactly the declared machine).
    pub fn sysfs_mismatches(&self, view: &SysfsView) -> Vec<String> {
        let mut wrong = Vec::new();
        let mut check = |what: String, got: Option<String>, want: String| match got {
            Some(g) if g == want => {}
            Some(g) => wrong.push(format!("{what}: guest has {g:?}, declared {want:?}")),
            None => wrong.push(format!("{what}: missing in the guest, declared {want:?}")),
        };
        if let Some(online) = &view.online {
            check(
                "online CPUs".into(),
                Some(norm(online)),
                cpu_list(0..self.nr_cpus()),
            );
        }
        let seen: Vec<u32> = view.cpus.keys().copied().collect();
        check(
            "CPUs".into(),
            Some(format_cpu_list(seen)),
            cpu_list(0..self.nr_cpus()),
        );
        for c in self.cpus() {
            let Some(g) = view.cpus.get(&c.cpu) else {
                continue;
            };
            let Some(linux) = self.linux_ids(c.cpu) else {
                continue;
            };
            let cpu = c.cpu;
            let first = c.cpu - c.thread;
            check(
                format!("cpu{cpu} package"),
                g.package.map(|x| x.to_string()),
                linux.physical_package_id.to_string(),
            );
            check(
                format!("cpu{cpu} die"),
                g.die.map(|x| x.to_string()),
                linux.die_id.to_string(),
            );
            check(
                format!("cpu{cpu} core"),
                g.core.map(|x| x.to_string()),
                linux.core_id.to_string(),
            );
            check(
                format!("cpu{cpu} thread siblings"),
                g.thread_siblings.as_deref().map(norm),
                cpu_list(first..first + self.threads_per_core()),
            );
            check(
                format!("cpu{cpu} L3 sharing"),
                g.l3_shared.as_deref().map(norm),
                cpu_list(self.llc_cpus(c.llc)),
            );
        }
        // One node is often not shown at all; several must each be right.
        if self.numa_nodes() > 1 || !view.nodes.is_empty() {
            check(
                "nodes".into(),
                Some(format_cpu_list(view.nodes.keys().copied())),
                cpu_list(0..self.numa_nodes()),
            );
            for node in 0..self.numa_nodes() {
                let Some(g) = view.nodes.get(&node) else {
                    continue;
                };
                check(
                    format!("node{node} cpus"),
                    Some(norm(&g.cpus)),
                    cpu_list(self.node_cpus(node)),
                );
                let want: Vec<String> = (0..self.numa_nodes())
                    .map(|o| self.distance(node, o).unwrap_or(0).to_string())
                    .collect();
                let got: Vec<String> = g.distances.iter().map(|d| d.to_string()).collect();
                check(
                    format!("node{node} distances"),
                    Some(got.join(" ")),
                    want.join(" "),
                );
            }
        }
        wrong
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The view Linux gives of a correct 2n4l1c2t (what the QEMU guest shows).
    fn good() -> (Topology, String) {
        let t: Topology = "2n4l1c2t".parse().expect("topology");
        let mut text = String::from("online 0-7\n");
        for c in t.cpus() {
            let l = t.linux_ids(c.cpu).expect("cpu");
            let first = c.cpu - c.thread;
            text.push_str(&format!(
                "cpu {} pkg={} die={} core={} sib={} l3={}\n",
                c.cpu,
                l.physical_package_id,
                l.die_id,
                l.core_id,
                cpu_list(first..first + 2),
                cpu_list(t.llc_cpus(c.llc))
            ));
        }
        text.push_str("node 0 cpus=0-3 dist=10,20\nnode 1 cpus=4-7 dist=20,10\n");
        (t, text)
    }

    #[test]
    fn the_declared_view_matches() {
        let (t, text) = good();
        assert_eq!(
            t.sysfs_mismatches(&SysfsView::parse_lines(&text)),
            Vec::<String>::new()
        );
    }

    #[test]
    fn every_wrong_field_is_named() {
        let (t, text) = good();
        let bad = text
            .replace("node 1 cpus=4-7 dist=20,10", "node 1 cpus=4-6 dist=20,11")
            .replace("cpu 3 pkg=0", "cpu 3 pkg=1");
        let wrong = t.sysfs_mismatches(&SysfsView::parse_lines(&bad));
        assert!(
            wrong.iter().any(|w| w.starts_with("node1 cpus")),
            "{wrong:?}"
        );
        assert!(
            wrong.iter().any(|w| w.starts_with("node1 distances")),
            "{wrong:?}"
        );
        assert!(
            wrong.iter().any(|w| w.starts_with("cpu3 package")),
            "{wrong:?}"
        );
        let missing = text.replace("cpu 7 ", "xcpu 7 ");
        let wrong = t.sysfs_mismatches(&SysfsView::parse_lines(&missing));
        assert!(wrong.iter().any(|w| w.starts_with("CPUs")), "{wrong:?}");
    }
}
