//! The results record of one ktstr test run, typed and versioned.
//!
//! The `ktstr` library writes one [`RunRecord`] per test run (to the results
//! store, `<target dir>/ktstr/runs/<run>/<test>.json`, and as one line of
//! `KTSTR_RESULTS`); `cargo ktstr` (lists, reports, comparisons, bisect) and
//! the xtask (verdict tables) read it back through this crate. It sits at the
//! end of a test's way back from the VM: serde types and pure functions, no
//! VM, channel or guest code.
//!
//! The JSON a record serializes to is its format: every key is a field here,
//! with the same name. [`SCHEMA`] numbers the format; [`parse`],
//! [`read_file`] and [`read_lines`] refuse a record of another schema with
//! its number, and say which file and line could not be read.
//!
//! ```
//! use ktstr_record::{RunRecord, Verdict};
//!
//! let mut r = RunRecord::new("examples::steady", Verdict::Pass);
//! r.detail = "pass".into();
//! let line = serde_json::to_string(&r)?;
//! let back = ktstr_record::parse(&line, "results.jsonl".as_ref(), 1)?;
//! assert_eq!(back, r);
//! assert_eq!(back.name(), "examples::steady");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod dump;
mod figures;
mod monitor;
mod placement;
mod read;
mod record;
mod report;
mod verifier;

pub use dump::{DumpDsq, DumpEntry, DumpMap, DumpSection, DumpVar, SchedulerDump};
pub use figures::{FAIRNESS_CHECK, key_figures, secs};
pub use ktstr_kernel::{KernelId, KernelSource, KernelVersion};
pub use monitor::{KernelPlacement, MonitorSample, MonitorSummary};
pub use placement::{DomainShare, GroupPlacement, Level, LevelSplit, PlacementTrace};
pub use read::{RecordError, parse, read_file, read_lines};
pub use record::{
    HostFacts, KernelRecord, PhaseSeconds, RunRecord, SchedulerRecord, Start, StepRecord, Verdict,
};
pub use report::{CheckRecord, Figure, Policy, WakeLatency, WorkerRecord};
pub use verifier::{
    Baseline, BaselineEntry, COMPLEXITY_LIMIT, DEFAULT_GROWTH_PCT, GateFailure, LIMIT_MARGIN_PCT,
    ProgStats, gate,
};

/// The version of the record's format. Readers refuse records of another.
pub const SCHEMA: u64 = 1;
