//! What the record keeps of the host monitor's periodic samples.

use serde::{Deserialize, Serialize};

/// A summary of the monitor's samples of one run.
///
/// Records of this schema written before the series and the kernel
/// placement existed read them as empty.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MonitorSummary {
    /// Samples per second it aimed at.
    pub hz: u32,
    /// Samples taken.
    pub samples: u64,
    /// Per sample: its time, each CPU's runnable tasks, the deepest DSQ and
    /// the scheduler attached.
    #[serde(default)]
    pub series: Vec<MonitorSample>,
    /// Why the monitor could not read the VM at all, if it could not.
    pub unavailable: Option<String>,
    /// Where the kernel sat in the guest, when located.
    #[serde(default)]
    pub kernel: Option<KernelPlacement>,
    /// The deepest DSQ any sample saw, tasks.
    pub deepest_dsq: Option<u32>,
    /// The longest wait of a runnable task at a DSQ's head, milliseconds.
    pub oldest_wait_ms: Option<f64>,
    /// The last sample as text (as the monitor prints it).
    pub last: Option<String>,
}

/// One periodic sample, as reports plot it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MonitorSample {
    /// Seconds from the boot.
    pub t: f64,
    /// Each CPU's `nr_running` (`None` for a CPU that was not read; the
    /// whole list `None` when no runqueue was).
    pub nr_running: Option<Vec<Option<u32>>>,
    /// Tasks in the deepest DSQ, when the DSQs were read.
    pub deepest_dsq: Option<u32>,
    /// The sched_ext scheduler attached, if any.
    pub scheduler: Option<String>,
    /// The guest's clock when read, seconds: the largest `rq->clock` of
    /// any CPU (what a replay's `--at` asks by). Older records lack it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guest_s: Option<f64>,
}

/// Where the monitor found the guest kernel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KernelPlacement {
    /// Booted randomized (KASLR) and located from vCPU registers.
    pub randomized: bool,
    /// The virtual slide, hex (`0x...`).
    pub slide: String,
    /// `phys_base`, hex.
    pub phys_base: String,
    /// `page_offset_base`, hex.
    pub page_offset_base: String,
    /// Seconds from the boot until it was located.
    pub located_after_s: f64,
}
