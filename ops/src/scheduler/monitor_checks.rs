//! The host monitor's checks as a scheduler declaration or a test sets them:
//! plain `const` data, layered `defaults <- scheduler <- test`. The host
//! judges them (the `ktstr` facade's verdict); they live here, beside
//! [`Scheduler`](super::Scheduler), so a declaration can carry its own.

/// One check's setting in a layer: keep what the layer below says, turn it
/// off, or turn it on with these limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting<T> {
    /// What the layer below says.
    Inherit,
    /// Not checked.
    Off,
    /// Checked with these limits.
    On(T),
}

impl<T: Copy> Setting<T> {
    /// `self` over `below`: anything but `Inherit` wins.
    pub const fn over(self, below: Setting<T>) -> Setting<T> {
        match self {
            Setting::Inherit => below,
            s => s,
        }
    }

    /// The limits, when on.
    pub const fn on(self) -> Option<T> {
        match self {
            Setting::On(t) => Some(t),
            _ => None,
        }
    }
}

/// A figure that must stay at or under `max` (sustained over `for_ms`
/// milliseconds of guest time to count).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sustained {
    /// The largest figure allowed.
    pub max: u32,
    /// How long (guest ms) the figure must stay over `max` to fail.
    pub for_ms: u32,
}

/// The monitor's checks, each judged over the periodic samples the host read
/// from guest memory (see the `ktstr` README, "Monitor checks").
///
/// ```
/// use ktstr_ops::{MonitorChecks, Scheduler, SchedulerSpec};
/// // A scheduler that keeps one global queue: its DSQ may be deep, but never
/// // deeper than 64 tasks for more than a second.
/// const GLOBAL: Scheduler = Scheduler::named("global")
///     .binary(SchedulerSpec::Discover("scx_global"))
///     .monitor(MonitorChecks::INHERIT.dsq_depth(64, 1000));
/// assert_eq!(GLOBAL.monitor.resolved().dsq_depth.on().map(|d| d.max), Some(64));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MonitorChecks {
    /// `nr_running` of two CPUs of one LLC differing by more than `max`.
    pub imbalance: Setting<Sustained>,
    /// A local or user DSQ deeper than `max` tasks.
    pub dsq_depth: Setting<Sustained>,
    /// A CPU with runnable tasks whose rq clock or current task does not
    /// advance for this many guest ms.
    pub stuck_ms: Setting<u32>,
    /// A runnable task at the head of a DSQ waiting longer than this (guest ms).
    pub wait_ms: Setting<u32>,
    /// sched_ext event counters (`SCX_EV_*`) that must not count while the
    /// body runs (what they counted while the scheduler attached is not judged).
    pub zero_events: Setting<&'static [&'static str]>,
}

impl MonitorChecks {
    /// A layer that changes nothing.
    pub const INHERIT: MonitorChecks = MonitorChecks {
        imbalance: Setting::Inherit,
        dsq_depth: Setting::Inherit,
        stuck_ms: Setting::Inherit,
        wait_ms: Setting::Inherit,
        zero_events: Setting::Inherit,
    };

    /// The project's defaults. On: a stuck CPU (3 s) and a task waiting 10 s
    /// — broken under any scheduler, and far above what fair or FIFO
    /// schedulers show on the test VMs (sched_ext's own watchdog defaults to
    /// 30 s) — and `SCX_EV_DISPATCH_LOCAL_DSQ_OFFLINE` (a dispatch to an
    /// offline CPU is always the scheduler's bug). Off: imbalance and DSQ
    /// depth, which depend on the scheduler's design (a global FIFO's queue
    /// is as deep as the runnable tasks; a packing scheduler imbalances on
    /// purpose): turn them on with limits that fit your scheduler.
    pub const DEFAULTS: MonitorChecks = MonitorChecks {
        imbalance: Setting::Off,
        dsq_depth: Setting::Off,
        stuck_ms: Setting::On(3000),
        wait_ms: Setting::On(10_000),
        zero_events: Setting::On(&["SCX_EV_DISPATCH_LOCAL_DSQ_OFFLINE"]),
    };

    /// Fail when two CPUs of one LLC differ by more than `max` runnable tasks
    /// for `for_ms` guest ms.
    pub const fn imbalance(mut self, max: u32, for_ms: u32) -> Self {
        self.imbalance = Setting::On(Sustained { max, for_ms });
        self
    }

    /// Fail when a local or user DSQ holds more than `max` tasks for `for_ms`.
    pub const fn dsq_depth(mut self, max: u32, for_ms: u32) -> Self {
        self.dsq_depth = Setting::On(Sustained { max, for_ms });
        self
    }

    /// Fail when a CPU with runnable tasks does not advance for `ms`.
    pub const fn stuck_ms(mut self, ms: u32) -> Self {
        self.stuck_ms = Setting::On(ms);
        self
    }

    /// Fail when a runnable task waits longer than `ms`.
    pub const fn wait_ms(mut self, ms: u32) -> Self {
        self.wait_ms = Setting::On(ms);
        self
    }

    /// Fail when any of these `SCX_EV_*` counters grows while the body runs.
    pub const fn zero_events(mut self, names: &'static [&'static str]) -> Self {
        self.zero_events = Setting::On(names);
        self
    }

    /// No imbalance check.
    pub const fn no_imbalance(mut self) -> Self {
        self.imbalance = Setting::Off;
        self
    }

    /// No DSQ depth check.
    pub const fn no_dsq_depth(mut self) -> Self {
        self.dsq_depth = Setting::Off;
        self
    }

    /// No stuck-CPU check.
    pub const fn no_stuck(mut self) -> Self {
        self.stuck_ms = Setting::Off;
        self
    }

    /// No wait check.
    pub const fn no_wait(mut self) -> Self {
        self.wait_ms = Setting::Off;
        self
    }

    /// No event-counter check.
    pub const fn no_zero_events(mut self) -> Self {
        self.zero_events = Setting::Off;
        self
    }

    /// Every check off (a test that stalls on purpose, say).
    pub const OFF: MonitorChecks = MonitorChecks {
        imbalance: Setting::Off,
        dsq_depth: Setting::Off,
        stuck_ms: Setting::Off,
        wait_ms: Setting::Off,
        zero_events: Setting::Off,
    };

    /// `self` layered over `below`.
    pub const fn over(self, below: MonitorChecks) -> MonitorChecks {
        MonitorChecks {
            imbalance: self.imbalance.over(below.imbalance),
            dsq_depth: self.dsq_depth.over(below.dsq_depth),
            stuck_ms: self.stuck_ms.over(below.stuck_ms),
            wait_ms: self.wait_ms.over(below.wait_ms),
            zero_events: self.zero_events.over(below.zero_events),
        }
    }

    /// `self` over the defaults: every check on or off.
    pub const fn resolved(self) -> MonitorChecks {
        self.over(MonitorChecks::DEFAULTS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_resolve_test_over_scheduler_over_defaults() {
        let sched = MonitorChecks::INHERIT.dsq_depth(8, 500).no_wait();
        let test = MonitorChecks::INHERIT.wait_ms(200).no_stuck();
        let r = test.over(sched).resolved();
        assert_eq!(
            r.dsq_depth,
            Setting::On(Sustained {
                max: 8,
                for_ms: 500
            })
        );
        assert_eq!(r.wait_ms, Setting::On(200));
        assert_eq!(r.stuck_ms, Setting::Off);
        assert_eq!(r.imbalance, Setting::Off);
        assert_eq!(r.zero_events, MonitorChecks::DEFAULTS.zero_events);
        assert_eq!(MonitorChecks::INHERIT.resolved(), MonitorChecks::DEFAULTS);
        assert_eq!(
            MonitorChecks::OFF.over(sched).resolved(),
            MonitorChecks::OFF
        );
    }
}
