//! The snapshots of one VM, handed to `post_vm`: taken with every vCPU
//! paused, in the order they were taken.

use std::sync::Mutex;
use std::time::Duration;

use super::{Sample, SampleKind};

/// Counts of one VM's snapshots.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BridgeStats {
    /// Periodic snapshots asked for (`num_snapshots`).
    pub periodic_target: u32,
    /// Periodic snapshots taken.
    pub periodic_fired: u32,
    /// Snapshots asked for by steps (`Op::capture_snapshot`).
    pub on_demand: u32,
    /// Snapshots whose reads failed in part or whole.
    pub with_errors: u32,
    /// How long the vCPUs stayed paused, per snapshot, in order.
    pub pauses: Vec<Duration>,
}

impl BridgeStats {
    /// The median pause (`None`: no snapshot paused the VM).
    pub fn median_pause(&self) -> Option<Duration> {
        let mut p = self.pauses.clone();
        p.sort();
        p.get(p.len() / 2).copied()
    }
}

/// Snapshots drained from a [`SnapshotBridge`], oldest first.
#[derive(Debug, Clone, Default)]
pub struct DrainedSnapshots {
    /// The snapshots.
    pub snapshots: Vec<Sample>,
    /// Their counts and pauses.
    pub stats: BridgeStats,
}

/// Where the snapshots of one VM wait for `post_vm`.
#[derive(Debug, Default)]
pub struct SnapshotBridge {
    snapshots: Mutex<Vec<Sample>>,
    stats: BridgeStats,
}

impl SnapshotBridge {
    pub(crate) fn new(mut snapshots: Vec<Sample>, periodic_target: u32) -> Self {
        snapshots.sort_by_key(|s| s.elapsed);
        let count = |f: &dyn Fn(&Sample) -> bool| snapshots.iter().filter(|s| f(s)).count() as u32;
        let stats = BridgeStats {
            periodic_target,
            periodic_fired: count(&|s| s.kind == SampleKind::Periodic),
            on_demand: count(&|s| matches!(s.kind, SampleKind::Named(_))),
            with_errors: count(&|s| {
                s.cpus.is_err() || s.dsqs.is_err() || s.globals.is_err() || s.scheduler.is_err()
            }),
            pauses: snapshots.iter().filter_map(|s| s.paused).collect(),
        };
        SnapshotBridge {
            snapshots: Mutex::new(snapshots),
            stats,
        }
    }

    /// Takes the snapshots out, oldest first, with the counts of the whole
    /// run (a second drain gets no snapshots and the same counts).
    pub fn drain_ordered_with_stats(&self) -> DrainedSnapshots {
        let mut g = self.snapshots.lock().unwrap_or_else(|p| p.into_inner());
        DrainedSnapshots {
            snapshots: std::mem::take(&mut *g),
            stats: self.stats.clone(),
        }
    }

    /// A copy of the snapshots not drained yet, oldest first, with the counts.
    pub fn ordered_with_stats(&self) -> DrainedSnapshots {
        let g = self.snapshots.lock().unwrap_or_else(|p| p.into_inner());
        DrainedSnapshots {
            snapshots: g.clone(),
            stats: self.stats.clone(),
        }
    }

    /// The counts and pauses of the whole run.
    pub fn stats(&self) -> &BridgeStats {
        &self.stats
    }
}
