//! Where a run's workers lived, by topology: the form the guest's
//! `ktstr_ops::PlacementTrace` and `ktstr_ops::checks::GroupPlacement`
//! serialize to (mirrored, like the reports, so readers need no guest code).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Where a worker ran over its window: per time bin, the CPU its loop saw
/// most often (`None`: not seen) and the rounds of its loop in the bin.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacementTrace {
    /// The width of a bin; bin `i` starts `i * bin` after the release.
    pub bin: Duration,
    /// The busiest CPU of each bin.
    pub cpu: Vec<Option<u32>>,
    /// The rounds of each bin.
    pub rounds: Vec<u64>,
}

/// A level of the topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Level {
    /// NUMA node.
    Node,
    /// Last-level cache, numbered across the VM.
    Llc,
    /// Core, numbered across the VM.
    Core,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Node => "node",
            Level::Llc => "LLC",
            Level::Core => "core",
        })
    }
}

/// The workers of one cgroup that lived in one domain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DomainShare {
    /// The domain's id at its level.
    pub domain: u32,
    /// CPUs in the domain.
    pub cpus: u32,
    /// Workers whose home it was (indices in the scenario's order).
    pub workers: Vec<usize>,
    /// Those workers' least CPU time.
    pub cpu_time_min: Duration,
    /// Their most.
    pub cpu_time_max: Duration,
    /// Their mean.
    pub cpu_time_mean: Duration,
}

/// One cgroup's split at one level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LevelSplit {
    /// The level.
    pub level: Level,
    /// The domains some worker called home, by id.
    pub domains: Vec<DomainShare>,
    /// Workers with no home at this level.
    pub homeless: Vec<usize>,
    /// Times a worker's busiest domain changed from one time bin to the next.
    pub moves: u32,
    /// How long the split had held at the end of the window.
    pub stable_for: Duration,
    /// The window.
    pub window: Duration,
}

impl LevelSplit {
    /// The split in short: workers per domain, `node 0: 6, node 1: 2`.
    pub fn counts(&self) -> String {
        let mut parts: Vec<String> = self
            .domains
            .iter()
            .map(|d| format!("{} {}: {}", self.level, d.domain, d.workers.len()))
            .collect();
        if !self.homeless.is_empty() {
            parts.push(format!("spread: {}", self.homeless.len()));
        }
        parts.join(", ")
    }
}

/// One cgroup's placement at every level the topology distinguishes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupPlacement {
    /// The cgroup.
    pub group: String,
    /// Its split per level, coarsest first.
    pub levels: Vec<LevelSplit>,
}
