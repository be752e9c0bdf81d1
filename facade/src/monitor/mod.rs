//! The host-side monitor: what the guest kernel and its scheduler looked
//! like while the test ran, read from guest memory (never from the console)
//! through `ktstr-guest-mem`.
//!
//! Two streams come out of one VM:
//! - periodic samples at [`HostConfig::monitor_hz`](crate::config::HostConfig)
//!   (default 10 Hz) taken while the guest runs ([`MonitorLog`]); the last of
//!   them are printed under a failing test;
//! - snapshots, taken with every vCPU paused so no field is torn: the
//!   `num_snapshots = N` periodic ones spread over the body, and one per
//!   `Op::capture_snapshot("name")` step ([`SnapshotBridge`]).
//!
//! A `post_vm` function gets them in a [`VmResult`] and asks its questions
//! through [`SampleSeries`].

mod bridge;
mod files;
mod gate;
mod locate;
mod sampler;
mod series;
mod session;

use std::sync::Arc;
use std::time::Duration;

pub use bridge::{BridgeStats, DrainedSnapshots, SnapshotBridge};
pub(crate) use files::load as kernel_files;
pub use gate::{Answer, GateEnd, Moment, Show, parse_guest_time};
pub(crate) use gate::{GatePlan, Hold, collect_marks, first_stop, serve as serve_gate};
pub use ktstr_ops::{MonitorChecks, Setting, Sustained};
/// The failure dump's types, as `VmResult::dump` holds them.
pub use ktstr_record::{DumpDsq, DumpEntry, DumpMap, DumpSection, DumpVar, SchedulerDump};
pub use ktstr_vmm::EndReason;
pub use series::{SampleSeries, Series};
pub(crate) use session::{Finished, Plan, Session};

use crate::outcome::Outcome;

/// A `post_vm` check: runs on the host after the VM, its error fails the test.
pub type PostVmFn = fn(&VmResult) -> anyhow::Result<()>;

/// Why a monitored value is not there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MonitorError {
    /// The monitor could not start for this VM (no BTF, no symbols, ...).
    #[error("monitor unavailable: {0}")]
    Unavailable(String),
    /// Guest memory did not read as the kernel's types say (a torn or
    /// garbage pointer, a map freed mid-read, a missing symbol).
    #[error("reading guest memory: {0}")]
    Read(String),
    /// No BPF global of that name in any data section the sample read.
    #[error("no BPF global named {name:?} (data-section maps read: {searched})")]
    NoSuchVar {
        /// The name asked for.
        name: String,
        /// The maps searched.
        searched: String,
    },
    /// The global is not a 1- to 8-byte integer.
    #[error("BPF global {name:?} is a {type_name}, not an integer of 1 to 8 bytes")]
    NotInteger {
        /// The global.
        name: String,
        /// Its C type.
        type_name: String,
    },
    /// The sample has no such CPU, DSQ or counter.
    #[error("{0}")]
    Missing(String),
}

impl From<ktstr_guest_mem::Error> for MonitorError {
    fn from(e: ktstr_guest_mem::Error) -> Self {
        MonitorError::Read(e.to_string())
    }
}

/// What took a sample.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SampleKind {
    /// The periodic monitor, guest running (reads may be torn).
    Monitor,
    /// One of the `num_snapshots` snapshots, guest paused.
    Periodic,
    /// An `Op::capture_snapshot(name)` step, guest paused.
    Named(String),
    /// A replay's question, read with the machine stopped after this many
    /// guest instructions (its `elapsed` is the guest clock).
    Replay(u64),
}

impl std::fmt::Display for SampleKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SampleKind::Monitor => f.write_str("monitor"),
            SampleKind::Periodic => f.write_str("periodic"),
            SampleKind::Named(n) => write!(f, "snapshot {n:?}"),
            SampleKind::Replay(n) => write!(f, "replay, instruction {n}"),
        }
    }
}

/// One CPU's runqueue in a sample. `None`: the kernel lacks the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuSample {
    /// The CPU.
    pub cpu: u32,
    /// `rq->nr_running`.
    pub nr_running: Option<u32>,
    /// `rq->clock`, ns.
    pub clock: Option<u64>,
    /// `rq->scx.nr_running`.
    pub scx_nr_running: Option<u32>,
    /// `rq->nr_switches`: context switches on this CPU since boot.
    pub nr_switches: Option<u64>,
    /// Tasks on the CPU's local DSQ.
    pub local_dsq_nr: Option<u32>,
    /// The current task's pid.
    pub curr_pid: Option<i32>,
    /// The current task's comm.
    pub curr_comm: Option<String>,
    /// How long the first task of the local DSQ has waited to run (its
    /// `sched_info.last_queued` against this rq's clock).
    pub oldest_wait_ns: Option<u64>,
    /// The runqueue's schedstats (`None`: a kernel without `CONFIG_SCHEDSTATS`).
    pub schedstat: Option<Schedstat>,
}

/// One CPU's scheduler statistics (`CONFIG_SCHEDSTATS`), the counters of its
/// line in the guest's `/proc/schedstat`. Cumulative since boot; the series
/// API turns them into rates ([`SampleSeries::schedstat_rate`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Schedstat {
    /// `rq->rq_sched_info.run_delay`: ns tasks spent waiting on this runqueue.
    pub run_delay: u64,
    /// `rq->rq_sched_info.pcount`: tasks that ran here.
    pub pcount: u64,
    /// `rq->yld_count`: `sched_yield()` calls.
    pub yld_count: u64,
    /// `rq->sched_count`: `schedule()` calls.
    pub sched_count: u64,
    /// `rq->sched_goidle`: of those, switches to idle.
    pub sched_goidle: u64,
    /// `rq->ttwu_count`: wakeups of tasks onto this CPU.
    pub ttwu_count: u64,
    /// `rq->ttwu_local`: of those, woken by this CPU.
    pub ttwu_local: u64,
}

/// A DSQ the scheduler created, in a sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DsqSample {
    /// `dsq->id`.
    pub id: u64,
    /// Queued tasks.
    pub nr: u32,
    /// How long its first task has waited (against the latest rq clock).
    pub oldest_wait_ns: Option<u64>,
}

/// A BPF global of the scheduler, in a sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Global {
    /// The variable's name.
    pub name: String,
    /// The map holding it (`ktstr_bpf.bss`).
    pub map: String,
    /// The map's id: a restarted scheduler's maps have new ids.
    pub map_id: u32,
    /// Its C type.
    pub type_name: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

impl Global {
    /// The value as a little-endian unsigned integer (1 to 8 bytes).
    pub fn as_u64(&self) -> Result<u64, MonitorError> {
        if self.bytes.is_empty() || self.bytes.len() > 8 {
            return Err(MonitorError::NotInteger {
                name: self.name.clone(),
                type_name: self.type_name.clone(),
            });
        }
        let mut b = [0u8; 8];
        b[..self.bytes.len()].copy_from_slice(&self.bytes);
        Ok(u64::from_le_bytes(b))
    }

    /// The value as a sign-extended little-endian integer (1 to 8 bytes).
    pub fn as_i64(&self) -> Result<i64, MonitorError> {
        let v = self.as_u64()?;
        let shift = 64 - 8 * self.bytes.len() as u32;
        Ok(((v << shift) as i64) >> shift)
    }
}

/// One read of the guest: per-CPU runqueues, the scheduler's DSQs, the
/// sched_ext event counters and the scheduler's BPF globals. Each part is an
/// error value on its own when it could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// What took it.
    pub kind: SampleKind,
    /// When, from the VM's boot.
    pub elapsed: Duration,
    /// How long the vCPUs stayed paused for it (snapshots only).
    pub paused: Option<Duration>,
    /// How long reading the guest took.
    pub read_time: Duration,
    /// Every possible CPU's runqueue.
    pub cpus: Result<Vec<CpuSample>, MonitorError>,
    /// The attached sched_ext scheduler's name (`None`: none attached).
    pub scheduler: Result<Option<String>, MonitorError>,
    /// The scheduler's own DSQs, by id.
    pub dsqs: Result<Vec<DsqSample>, MonitorError>,
    /// The sched_ext event counters summed over CPUs (`SCX_EV_*`), where the
    /// kernel has them.
    pub events: Result<Vec<(String, i64)>, MonitorError>,
    /// The BPF globals of every loaded program's data sections, map by map.
    pub globals: Result<Vec<Global>, MonitorError>,
}

/// A BPF global looked up in a sample: read it with `as_u64`, `as_i64`.
#[derive(Debug, Clone, Copy)]
pub struct Var<'a>(Result<&'a Global, &'a MonitorError>, &'a str, &'a Sample);

impl<'a> Var<'a> {
    /// The global itself.
    pub fn global(&self) -> Result<&'a Global, MonitorError> {
        match self.0 {
            Ok(g) => Ok(g),
            Err(e) => Err(self.not_found(e.clone())),
        }
    }

    fn not_found(&self, e: MonitorError) -> MonitorError {
        match e {
            MonitorError::Missing(_) => MonitorError::NoSuchVar {
                name: self.1.to_string(),
                searched: match &self.2.globals {
                    Ok(g) => {
                        let mut maps: Vec<&str> = g.iter().map(|g| g.map.as_str()).collect();
                        maps.dedup();
                        if maps.is_empty() {
                            "none".into()
                        } else {
                            maps.join(", ")
                        }
                    }
                    Err(_) => "none".into(),
                },
            },
            other => other,
        }
    }

    /// The value as an unsigned integer.
    pub fn as_u64(&self) -> Result<u64, MonitorError> {
        self.global()?.as_u64()
    }

    /// The value as a signed integer.
    pub fn as_i64(&self) -> Result<i64, MonitorError> {
        self.global()?.as_i64()
    }

    /// The raw bytes.
    pub fn bytes(&self) -> Result<&'a [u8], MonitorError> {
        Ok(&self.global()?.bytes)
    }
}

static MISSING: std::sync::LazyLock<MonitorError> =
    std::sync::LazyLock::new(|| MonitorError::Missing(String::new()));

impl Sample {
    /// The scheduler's global `name` (from the newest map declaring it: after
    /// a restart, the new scheduler's).
    pub fn var<'a>(&'a self, name: &'a str) -> Var<'a> {
        let found = match &self.globals {
            Ok(gs) => gs
                .iter()
                .filter(|g| g.name == name)
                .max_by_key(|g| g.map_id)
                .ok_or(&*MISSING),
            Err(e) => Err(e),
        };
        Var(found, name, self)
    }

    /// CPU `cpu`'s runqueue.
    pub fn cpu(&self, cpu: u32) -> Result<&CpuSample, MonitorError> {
        match &self.cpus {
            Ok(c) => c
                .iter()
                .find(|c| c.cpu == cpu)
                .ok_or_else(|| MonitorError::Missing(format!("no CPU {cpu} in the sample"))),
            Err(e) => Err(e.clone()),
        }
    }

    /// The sched_ext event counter `name` (`SCX_EV_SELECT_CPU_FALLBACK`).
    pub fn event(&self, name: &str) -> Result<i64, MonitorError> {
        match &self.events {
            Ok(ev) => ev
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| *v)
                .ok_or_else(|| MonitorError::Missing(format!("no event counter {name}"))),
            Err(e) => Err(e.clone()),
        }
    }

    /// The sample as a point of a record's monitor series (`t`: its
    /// `elapsed`).
    pub fn series_point(&self) -> ktstr_record::MonitorSample {
        ktstr_record::MonitorSample {
            t: self.elapsed.as_secs_f64(),
            nr_running: self
                .cpus
                .as_ref()
                .ok()
                .map(|c| c.iter().map(|c| c.nr_running).collect()),
            deepest_dsq: self.deepest_dsq().map(|d| d.nr),
            scheduler: self.scheduler.as_ref().ok().cloned().flatten(),
            guest_s: self.guest_ns().map(|ns| ns as f64 / 1e9),
        }
    }

    /// The guest's clock when read: the largest `rq->clock` of any CPU.
    pub fn guest_ns(&self) -> Option<u64> {
        self.cpus
            .as_ref()
            .ok()?
            .iter()
            .filter_map(|c| c.clock)
            .max()
    }

    /// The deepest DSQ the scheduler created (`None`: none read).
    pub fn deepest_dsq(&self) -> Option<&DsqSample> {
        self.dsqs.as_ref().ok()?.iter().max_by_key(|d| d.nr)
    }

    /// The longest wait of a runnable task at the head of any DSQ, local or
    /// the scheduler's.
    pub fn oldest_wait(&self) -> Option<Duration> {
        let local = self.cpus.iter().flatten().filter_map(|c| c.oldest_wait_ns);
        let user = self.dsqs.iter().flatten().filter_map(|d| d.oldest_wait_ns);
        local.chain(user).max().map(Duration::from_nanos)
    }

    /// A few lines for a failure text.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "[{:>7.3}s {}] read {:.1?}",
            self.elapsed.as_secs_f64(),
            self.kind,
            self.read_time
        );
        if let Some(p) = self.paused {
            s.push_str(&format!(", paused {p:.1?}"));
        }
        match &self.scheduler {
            Ok(Some(n)) => s.push_str(&format!(", scheduler {n}")),
            Ok(None) => s.push_str(", no sched_ext scheduler"),
            Err(e) => s.push_str(&format!(", scheduler: {e}")),
        }
        match &self.cpus {
            Ok(cpus) => {
                let per: Vec<String> = cpus
                    .iter()
                    .map(|c| {
                        format!(
                            "cpu{} nr={} scx={} local={} curr={}",
                            c.cpu,
                            opt(c.nr_running),
                            opt(c.scx_nr_running),
                            opt(c.local_dsq_nr),
                            c.curr_comm.as_deref().unwrap_or("-")
                        )
                    })
                    .collect();
                s.push_str(&format!("\n      {}", per.join("; ")));
            }
            Err(e) => s.push_str(&format!("\n      cpus: {e}")),
        }
        match &self.dsqs {
            Ok(d) if d.is_empty() => {}
            Ok(d) => {
                let per: Vec<String> = d.iter().map(|d| format!("{:#x}:{}", d.id, d.nr)).collect();
                s.push_str(&format!("\n      dsqs {}", per.join(" ")));
            }
            Err(e) => s.push_str(&format!("\n      dsqs: {e}")),
        }
        if let Some(w) = self.oldest_wait() {
            s.push_str(&format!(", oldest wait {w:.1?}"));
        }
        match &self.globals {
            Ok(g) => {
                let ints: Vec<String> = g
                    .iter()
                    .filter_map(|g| Some(format!("{}={}", g.name, g.as_u64().ok()?)))
                    .collect();
                if !ints.is_empty() {
                    s.push_str(&format!("\n      bpf {}", ints.join(" ")));
                }
            }
            Err(e) => s.push_str(&format!("\n      bpf: {e}")),
        }
        s
    }
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

/// Where the guest kernel ran, as the monitor found it for this boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct KernelPlacement {
    /// Booted randomized (bzImage, KASLR) and located from vCPU registers;
    /// `false`: a `nokaslr` boot at the link address, checked.
    pub randomized: bool,
    /// Virtual slide: a symbol runs at its link address plus this.
    pub slide: u64,
    /// `phys_base`: an image address's physical address is
    /// `virt - __START_KERNEL_map + phys_base` (wrapping).
    pub phys_base: u64,
    /// Where the direct map starts (`page_offset_base`).
    pub page_offset_base: u64,
    /// From boot until the layout was known (the first read after it).
    pub located_after: Duration,
}

/// The periodic samples of one VM, cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct MonitorLog(Arc<LogInner>);

#[derive(Debug, Default)]
struct LogInner {
    samples: Vec<Sample>,
    hz: u32,
    unavailable: Option<MonitorError>,
    /// CPU time the periodic samples took on the host, in all.
    cpu: Duration,
    placement: Option<KernelPlacement>,
}

impl MonitorLog {
    pub(crate) fn new(samples: Vec<Sample>, hz: u32, unavailable: Option<MonitorError>) -> Self {
        MonitorLog(Arc::new(LogInner {
            samples,
            hz,
            unavailable,
            cpu: Duration::ZERO,
            placement: None,
        }))
    }

    pub(crate) fn with_placement(self, placement: Option<KernelPlacement>) -> Self {
        let inner = Arc::try_unwrap(self.0).unwrap_or_else(|a| LogInner {
            samples: a.samples.clone(),
            hz: a.hz,
            unavailable: a.unavailable.clone(),
            cpu: a.cpu,
            placement: a.placement,
        });
        MonitorLog(Arc::new(LogInner { placement, ..inner }))
    }

    /// Where the guest kernel ran (KASLR slide, `phys_base`, direct map), if
    /// the monitor could tell.
    pub fn kernel_placement(&self) -> Option<KernelPlacement> {
        self.0.placement
    }

    pub(crate) fn with_cpu_time(self, cpu: Duration) -> Self {
        let inner = Arc::try_unwrap(self.0).unwrap_or_else(|a| LogInner {
            samples: a.samples.clone(),
            hz: a.hz,
            unavailable: a.unavailable.clone(),
            cpu: a.cpu,
            placement: a.placement,
        });
        MonitorLog(Arc::new(LogInner { cpu, ..inner }))
    }

    /// Host CPU time of one periodic sample, on average (the monitor thread's
    /// own clock: what sampling takes from the host's cores).
    pub fn cpu_per_sample(&self) -> Option<Duration> {
        let n = u32::try_from(self.samples().len())
            .ok()
            .filter(|n| *n > 0)?;
        Some(self.0.cpu / n)
    }

    /// The samples, oldest first.
    pub fn samples(&self) -> &[Sample] {
        &self.0.samples
    }

    /// The sampling rate (0: periodic sampling was off).
    pub fn hz(&self) -> u32 {
        self.0.hz
    }

    /// Why the monitor could not read this VM at all, if it could not.
    pub fn unavailable(&self) -> Option<&MonitorError> {
        self.0.unavailable.as_ref()
    }

    /// Median and largest time one sample took to read.
    pub fn read_cost(&self) -> Option<(Duration, Duration)> {
        let mut t: Vec<Duration> = self.samples().iter().map(|s| s.read_time).collect();
        t.sort();
        Some((*t.get(t.len() / 2)?, *t.last()?))
    }

    /// The last `n` samples, for a failure text.
    pub fn tail_text(&self, n: usize) -> String {
        if let Some(e) = self.unavailable() {
            return format!("monitor: {e}");
        }
        let s = self.samples();
        if s.is_empty() {
            return "monitor: no samples".into();
        }
        let tail: Vec<String> = s[s.len().saturating_sub(n)..]
            .iter()
            .map(Sample::summary)
            .collect();
        format!(
            "monitor: last {} of {} samples at {} Hz:\n    {}",
            tail.len(),
            s.len(),
            self.hz(),
            tail.join("\n    ")
        )
    }
}

/// The start of one scenario step (`execute_steps`), as the host read it
/// from the channel: in the record's `steps` and [`VmResult::steps`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct StepStart {
    /// The step's index, from 0.
    pub index: u32,
    /// When the host read it, from the VM's boot: the clock of the monitor's
    /// samples and snapshots (`Sample::elapsed`), within one poll (20 ms)
    /// of the guest's sending it.
    pub at: Duration,
    /// The guest's uptime at the step's start (the guest's clock, which
    /// under instruction counting runs at its own pace).
    pub guest_uptime: Duration,
    /// A short label of each op the step applies (`add cg_0 (2 workers)`).
    pub ops: Vec<String>,
}

/// What the host knows of one finished VM: what `post_vm` checks.
#[derive(Debug)]
#[non_exhaustive]
pub struct VmResult {
    /// The test's name.
    pub test: &'static str,
    /// The paused snapshots (periodic and named), to drain.
    pub snapshot_bridge: SnapshotBridge,
    /// The periodic samples.
    pub monitor: MonitorLog,
    /// Periodic snapshots asked for (`num_snapshots`).
    pub periodic_target: u32,
    /// Periodic snapshots taken.
    pub periodic_fired: u32,
    /// How the VM ended.
    pub end: ktstr_vmm::EndReason,
    /// The guest's own verdict: passed or not (`None`: it sent none).
    pub guest_passed: Option<bool>,
    /// The judged outcome before `post_vm`.
    pub outcome: Outcome,
    /// A scheduler death the guest reported: which exit, its reason and message.
    pub scheduler_died: Option<ktstr_ops::SchedulerDied>,
    /// The console's last lines.
    pub console: Vec<String>,
    /// The scenario's steps as they started, on the samples' clock (none
    /// but for `execute_steps` bodies).
    pub steps: Vec<StepStart>,
    /// What the test's on-request probes (`probes = [..]`) saw: each
    /// call decoded (`calls_of("enqueue_task_scx")`) and the printed block;
    /// `None` without the key.
    pub probes: Option<ktstr_probe::ProbeReport>,
    /// The scheduler's own state, read from guest memory with the VM paused
    /// when the body failed, the scheduler died, the VM hung, or the test
    /// asked (`dump = true`): globals decoded by its BTF, maps bounded, DSQs.
    /// `None` when nothing asked for one.
    pub dump: Option<ktstr_record::SchedulerDump>,
}

impl VmResult {
    /// Where the guest kernel ran: [`MonitorLog::kernel_placement`].
    pub fn kernel_placement(&self) -> Option<KernelPlacement> {
        self.monitor.kernel_placement()
    }

    /// Every snapshot and periodic sample as one series (the snapshots stay
    /// on the bridge).
    pub fn series(&self) -> SampleSeries {
        SampleSeries::from_drained_typed(
            self.snapshot_bridge.ordered_with_stats(),
            self.monitor.clone(),
        )
        .with_monitor_samples()
    }
}

/// What the results store keeps of the periodic samples: how many, at what
/// rate, the deepest DSQ and longest head-of-queue wait seen, the last one,
/// and the series of per-CPU `nr_running`, DSQ depth and scheduler.
pub(crate) fn summary_record(log: &MonitorLog) -> ktstr_record::MonitorSummary {
    let samples = log.samples();
    let deepest = samples
        .iter()
        .filter_map(|s| s.deepest_dsq().map(|d| d.nr))
        .max();
    let oldest_ms = samples
        .iter()
        .filter_map(Sample::oldest_wait)
        .max()
        .map(|d| d.as_secs_f64() * 1e3);
    // The time series, for reports: per sample its time from boot, each
    // CPU's nr_running, the deepest DSQ and the attached scheduler.
    let series = samples.iter().map(Sample::series_point).collect();
    ktstr_record::MonitorSummary {
        hz: log.hz(),
        samples: samples.len() as u64,
        series,
        unavailable: log.unavailable().map(ToString::to_string),
        kernel: log
            .kernel_placement()
            .map(|p| ktstr_record::KernelPlacement {
                randomized: p.randomized,
                slide: format!("{:#x}", p.slide),
                phys_base: format!("{:#x}", p.phys_base),
                page_offset_base: format!("{:#x}", p.page_offset_base),
                located_after_s: p.located_after.as_secs_f64(),
            }),
        deepest_dsq: deepest,
        oldest_wait_ms: oldest_ms,
        last: samples.last().map(Sample::summary),
    }
}
