//! [`Ctx`]: what a test body knows about the run it is part of.

use std::path::PathBuf;
use std::time::Duration;

use ktstr_topology::Topology;

use crate::assert::AssertResult;
use crate::cgroup::{Cgroup, DEFAULT_ROOT};
use crate::checks::Thresholds;
use crate::scheduler::Supervisor;

/// The longest turn QEMU's single-threaded TCG gives one vCPU before the next
/// (`TCG_KICK_PERIOD`, accel/tcg/tcg-accel-ops-rr.c: a tenth of a second).
pub const RR_TURN: Duration = Duration::from_millis(100);

/// The controllers scenarios delegate to their cgroups where offered.
pub(crate) const CONTROLLERS: [&str; 2] = ["cpuset", "cpu"];

/// The context a test body receives: the declared topology, how long to run,
/// where to make cgroups, the check thresholds and whether timing can be trusted.
///
/// The guest runtime builds it from the test's declaration and runs the body
/// through [`Ctx::run`]; a test may change thresholds for its own scenarios with
/// [`Ctx::with_thresholds`] on a copy.
///
/// ```
/// use std::time::Duration;
/// use ktstr_ops::checks::Thresholds;
/// use ktstr_ops::Ctx;
///
/// let topo = "1n1l2c1t".parse()?;
/// let ctx = Ctx::new(topo, Duration::from_secs(5))
///     .with_thresholds(Thresholds::default().with_max_gap(Duration::from_millis(500)))
///     .with_timing_reliable(false);
/// assert_eq!(ctx.cgroup_root.to_str(), Some("/sys/fs/cgroup/ktstr"));
/// assert_eq!(ctx.thresholds.max_gap, Duration::from_millis(500));
/// # Ok::<(), ktstr_topology::TopologyError>(())
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Ctx {
    /// The topology the test declared (the guest should match it).
    pub topology: Topology,
    /// How long a scenario measures its workers (`duration_s`).
    pub duration: Duration,
    /// The cgroup every scenario creates its cgroups under.
    pub cgroup_root: PathBuf,
    /// The limits the checks apply.
    pub thresholds: Thresholds,
    /// False when the VM has more vCPUs than the host has cores: timing checks
    /// (fairness, gaps) then report inconclusive instead of failing.
    pub timing_reliable: bool,
    /// How many vCPUs share one host thread (1: each has its own). QEMU's
    /// single-threaded TCG hands the thread from vCPU to vCPU in turns of up
    /// to `RR_TURN` (100 ms), which a worker on a waiting vCPU sees as a gap: the gap
    /// check allows `(vcpus_per_thread - 1)` such turns on top of its limit.
    pub vcpus_per_thread: u32,
    /// The run's scheduler: the boot scheduler and whatever lifecycle ops
    /// started since (none under the kernel default).
    pub scheduler: Supervisor,
}

impl Ctx {
    /// A context for `topology` and `duration`, with the cgroup root
    /// `/sys/fs/cgroup/ktstr`, default thresholds and reliable timing.
    pub fn new(topology: Topology, duration: Duration) -> Self {
        Ctx {
            topology,
            duration,
            cgroup_root: PathBuf::from(DEFAULT_ROOT),
            thresholds: Thresholds::default(),
            timing_reliable: true,
            vcpus_per_thread: 1,
            scheduler: Supervisor::default(),
        }
    }

    /// Hands the run's scheduler supervisor to the body.
    pub fn with_scheduler(mut self, scheduler: Supervisor) -> Self {
        self.scheduler = scheduler;
        self
    }

    /// Replaces the check thresholds.
    pub fn with_thresholds(mut self, thresholds: Thresholds) -> Self {
        self.thresholds = thresholds;
        self
    }

    /// Replaces the cgroup root (it must be inside a cgroup2 mount).
    pub fn with_cgroup_root(mut self, root: impl Into<PathBuf>) -> Self {
        self.cgroup_root = root.into();
        self
    }

    /// Says how many vCPUs share one host thread (see [`Ctx::vcpus_per_thread`]).
    pub fn with_vcpus_per_thread(mut self, n: u32) -> Self {
        self.vcpus_per_thread = n.max(1);
        self
    }

    /// The thresholds the checks apply on this VM: the gap limit grows by one
    /// round-robin turn per other vCPU sharing the host thread.
    pub fn effective_thresholds(&self) -> Thresholds {
        let turns = self.vcpus_per_thread.saturating_sub(1);
        self.thresholds
            .with_max_gap(self.thresholds.max_gap + RR_TURN * turns)
    }

    /// Says whether timing can be trusted (see [`Ctx::timing_reliable`]).
    pub fn with_timing_reliable(mut self, reliable: bool) -> Self {
        self.timing_reliable = reliable;
        self
    }

    /// Replaces the measuring duration.
    pub fn with_duration(mut self, duration: Duration) -> Self {
        self.duration = duration;
        self
    }

    /// The cgroup root as a handle (not created).
    pub fn root(&self) -> Cgroup {
        Cgroup::at(&self.cgroup_root)
    }

    /// Creates the cgroup root and enables the `cpuset` and `cpu` controllers
    /// for its children where the hierarchy offers them (from the mount point
    /// down). Idempotent; scenarios call it themselves.
    pub fn setup(&self) -> anyhow::Result<Cgroup> {
        let root = Cgroup::create(&self.cgroup_root)?;
        // Every ancestor below the mount must delegate the controllers too.
        let mount = crate::cgroup::cgroup2_mount();
        let mut chain: Vec<Cgroup> = Vec::new();
        let mut dir = self.cgroup_root.parent();
        while let Some(d) = dir {
            if mount.as_deref().is_none_or(|m| !d.starts_with(m)) {
                break;
            }
            chain.push(Cgroup::at(d));
            dir = d.parent();
        }
        chain.reverse();
        chain.push(root.clone());
        for cg in &chain {
            cg.delegate(&CONTROLLERS)?;
        }
        Ok(root)
    }

    /// Removes the cgroup root and everything below it, moving leftover tasks to
    /// its parent.
    pub fn teardown(&self) -> anyhow::Result<()> {
        let root = self.root();
        if !root.path().exists() {
            return Ok(());
        }
        let parent = self.cgroup_root.parent().map(Cgroup::at);
        root.remove_tree(parent.as_ref())?;
        Ok(())
    }

    /// Runs a test body between [`Ctx::setup`] and [`Ctx::teardown`]. A teardown
    /// failure is added to the verdict as a note; the body's result wins.
    pub fn run<F>(&self, body: F) -> anyhow::Result<AssertResult>
    where
        F: FnOnce(&Ctx) -> anyhow::Result<AssertResult>,
    {
        self.setup()?;
        let result = body(self);
        match (result, self.teardown()) {
            (Ok(v), Ok(())) => Ok(v),
            (Ok(v), Err(e)) => Ok(v.note("teardown", format!("{e:#}"))),
            (Err(e), _) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gap_limit_allows_one_turn_per_other_vcpu_on_the_thread() {
        let ctx = Ctx::new(
            "1n2l2c2t".parse().expect("topology"),
            Duration::from_secs(1),
        );
        assert_eq!(ctx.effective_thresholds().max_gap, Duration::from_secs(1));
        let shared = ctx.with_vcpus_per_thread(8);
        assert_eq!(
            shared.effective_thresholds().max_gap,
            Duration::from_millis(1700)
        );
        // Only the gap limit moves.
        assert_eq!(
            shared.effective_thresholds().max_spread,
            shared.thresholds.max_spread
        );
    }
}
