//! Questions about many samples at once: one value per sample as a
//! [`Series`], filtered by what took the sample.

use std::time::Duration;

use super::{DrainedSnapshots, MonitorError, MonitorLog, Sample, SampleKind};

/// Samples of one VM, oldest first: the snapshots drained from the bridge,
/// optionally with the periodic monitor's samples.
///
/// ```no_run
/// # use ktstr::prelude::*;
/// # fn check(result: &VmResult) -> anyhow::Result<()> {
/// let series = result.series();
/// let nr = series.cpu_field("nr_running", 1, |c| c.nr_running);   // CPU 1's nr_running
/// let deepest = series.deepest_dsq();                              // (id, depth, when)
/// let grew = series.bpf("nr_dispatched", |s| s.var("nr_dispatched").as_u64()).only_grew();
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct SampleSeries {
    samples: Vec<Sample>,
    monitor: MonitorLog,
    stats: super::BridgeStats,
}

impl SampleSeries {
    /// The drained snapshots; `monitor` rides along (see
    /// [`SampleSeries::with_monitor_samples`]).
    pub fn from_drained_typed(drained: DrainedSnapshots, monitor: MonitorLog) -> Self {
        SampleSeries {
            samples: drained.snapshots,
            monitor,
            stats: drained.stats,
        }
    }

    /// The same series with the periodic monitor's samples merged in by time.
    pub fn with_monitor_samples(mut self) -> Self {
        self.samples.extend(self.monitor.samples().iter().cloned());
        self.samples.sort_by_key(|s| s.elapsed);
        self
    }

    /// Only the samples `keep` accepts.
    pub fn filter(mut self, keep: impl Fn(&Sample) -> bool) -> Self {
        self.samples.retain(|s| keep(s));
        self
    }

    /// Only the `num_snapshots` periodic snapshots.
    pub fn periodic_only(self) -> Self {
        self.filter(|s| s.kind == SampleKind::Periodic)
    }

    /// Only the snapshots taken with the VM paused (periodic and named).
    pub fn snapshots_only(self) -> Self {
        self.filter(|s| s.kind != SampleKind::Monitor)
    }

    /// The snapshot a step named `name` (the first, if several).
    pub fn named(&self, name: &str) -> Option<&Sample> {
        self.samples
            .iter()
            .find(|s| matches!(&s.kind, SampleKind::Named(n) if n == name))
    }

    /// No samples.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// How many samples.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// The samples, oldest first.
    pub fn iter(&self) -> std::slice::Iter<'_, Sample> {
        self.samples.iter()
    }

    /// The periodic monitor's log.
    pub fn monitor(&self) -> &MonitorLog {
        &self.monitor
    }

    /// The bridge's counts (periodic asked/taken, pauses).
    pub fn stats(&self) -> &super::BridgeStats {
        &self.stats
    }

    /// One value per sample, computed by `f` (usually from a BPF global:
    /// `|s| s.var("nr_dispatched").as_u64()`), labelled for messages.
    pub fn bpf<T>(&self, label: &str, f: impl Fn(&Sample) -> Result<T, MonitorError>) -> Series<T> {
        self.map(label, f)
    }

    /// One value per sample, computed by `f`.
    pub fn map<T>(&self, label: &str, f: impl Fn(&Sample) -> Result<T, MonitorError>) -> Series<T> {
        Series {
            label: label.to_string(),
            points: self
                .samples
                .iter()
                .map(|s| (s.kind.clone(), s.elapsed, f(s)))
                .collect(),
        }
    }

    /// A field of one CPU's runqueue per sample (`|c| c.nr_running`).
    pub fn cpu_field<T>(
        &self,
        label: &str,
        cpu: u32,
        f: impl Fn(&super::CpuSample) -> Option<T>,
    ) -> Series<T> {
        self.map(&format!("cpu{cpu} {label}"), |s| {
            f(s.cpu(cpu)?).ok_or_else(|| {
                MonitorError::Missing(format!("this kernel's rq has no {label} for CPU {cpu}"))
            })
        })
    }

    /// CPU `cpu`'s `rq->nr_running` per sample.
    pub fn nr_running(&self, cpu: u32) -> Series<u32> {
        self.cpu_field("nr_running", cpu, |c| c.nr_running)
    }

    /// The deepest DSQ of any sample: (DSQ id, depth, when).
    pub fn deepest_dsq(&self) -> Option<(u64, u32, Duration)> {
        self.samples
            .iter()
            .filter_map(|s| s.deepest_dsq().map(|d| (d.id, d.nr, s.elapsed)))
            .max_by_key(|d| d.1)
    }

    /// The longest wait of a task at the head of a DSQ in any sample.
    pub fn oldest_wait(&self) -> Option<Duration> {
        self.samples.iter().filter_map(Sample::oldest_wait).max()
    }

    /// One schedstat counter of CPU `cpu` per sample (`|s| s.sched_count`),
    /// cumulative since boot.
    pub fn schedstat(
        &self,
        label: &str,
        cpu: u32,
        f: impl Fn(&super::Schedstat) -> u64,
    ) -> Series<u64> {
        self.cpu_field(label, cpu, |c| c.schedstat.as_ref().map(&f))
    }

    /// The rate of one schedstat counter of CPU `cpu`, per second of guest
    /// time (the samples' largest rq clock), between each sample and the one
    /// before it; the first point is an error (no previous sample).
    ///
    /// ```no_run
    /// # use ktstr::prelude::*;
    /// # fn check(result: &VmResult) -> anyhow::Result<()> {
    /// let switches = result.series().schedstat_rate("sched_count", 0, |s| s.sched_count);
    /// println!("CPU 0: up to {:?} schedule() calls per second", switches.max());
    /// # Ok(()) }
    /// ```
    pub fn schedstat_rate(
        &self,
        label: &str,
        cpu: u32,
        f: impl Fn(&super::Schedstat) -> u64,
    ) -> Series<f64> {
        let label = format!("cpu{cpu} {label}/s");
        let read = |s: &Sample| -> Result<(u64, u64), MonitorError> {
            let c = s.cpu(cpu)?;
            let v = c.schedstat.as_ref().map(&f).ok_or_else(|| {
                MonitorError::Missing(format!(
                    "no schedstats for CPU {cpu} (a kernel without CONFIG_SCHEDSTATS)"
                ))
            })?;
            Ok((guest_ns(s)?, v))
        };
        let mut points = Vec::with_capacity(self.samples.len());
        let mut prev: Option<(u64, u64)> = None;
        for s in &self.samples {
            let now = read(s);
            let rate = match (&now, prev) {
                (Ok((t, v)), Some((t0, v0))) if *t > t0 => {
                    Ok(v.wrapping_sub(v0) as f64 * 1e9 / (t - t0) as f64)
                }
                (Ok(_), Some(_)) => Err(MonitorError::Missing(
                    "guest time did not advance since the previous sample".into(),
                )),
                (Ok(_), None) => Err(MonitorError::Missing("no previous sample".into())),
                (Err(e), _) => Err(e.clone()),
            };
            if let Ok(n) = now {
                prev = Some(n);
            }
            points.push((s.kind.clone(), s.elapsed, rate));
        }
        Series { label, points }
    }

    /// A sched_ext event counter per sample.
    pub fn event(&self, name: &str) -> Series<i64> {
        self.map(name, |s| s.event(name))
    }
}

/// A sample's guest time: its largest rq clock.
fn guest_ns(s: &Sample) -> Result<u64, MonitorError> {
    match &s.cpus {
        Ok(c) => c
            .iter()
            .filter_map(|c| c.clock)
            .max()
            .ok_or_else(|| MonitorError::Missing("no rq clock in the sample".into())),
        Err(e) => Err(e.clone()),
    }
}

/// One value per sample: (what took the sample, when, the value or why it
/// could not be read).
#[derive(Debug, Clone)]
pub struct Series<T> {
    label: String,
    points: Vec<(SampleKind, Duration, Result<T, MonitorError>)>,
}

impl<T> Series<T> {
    /// The label given when the series was made.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Every point: (what took the sample, when from boot, the value or error).
    pub fn iter_full(
        &self,
    ) -> impl Iterator<Item = (&SampleKind, Duration, &Result<T, MonitorError>)> + '_ {
        self.points.iter().map(|(k, t, v)| (k, *t, v))
    }

    /// The values that could be read, in order.
    pub fn values(&self) -> impl Iterator<Item = &T> + '_ {
        self.points.iter().filter_map(|(_, _, v)| v.as_ref().ok())
    }

    /// The reads that failed, with when.
    pub fn errors(&self) -> impl Iterator<Item = (Duration, &MonitorError)> + '_ {
        self.points
            .iter()
            .filter_map(|(_, t, v)| v.as_ref().err().map(|e| (*t, e)))
    }

    /// Points in the series.
    pub fn len(&self) -> usize {
        self.points.len()
    }

    /// No points.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }

    /// The last value read.
    pub fn last(&self) -> Option<&T> {
        self.values().last()
    }
}

impl<T: PartialOrd> Series<T> {
    /// The largest value read.
    pub fn max(&self) -> Option<&T> {
        self.values().fold(
            None,
            |m, v| if m.is_none_or(|m| v > m) { Some(v) } else { m },
        )
    }

    /// The smallest value read.
    pub fn min(&self) -> Option<&T> {
        self.values().fold(
            None,
            |m, v| if m.is_none_or(|m| v < m) { Some(v) } else { m },
        )
    }

    /// Whether the values read never went down (a counter that only grew).
    /// Vacuously true with fewer than two values.
    pub fn only_grew(&self) -> bool {
        let v: Vec<&T> = self.values().collect();
        v.windows(2).all(|w| w[0] <= w[1])
    }
}

#[cfg(test)]
mod tests;
