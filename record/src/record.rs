//! The record of one test run and its parts.

use std::collections::BTreeMap;
use std::fmt;

use ktstr_kernel::{KernelId, KernelSource, KernelVersion};
use serde::{Deserialize, Deserializer, Serialize, de};
use serde_json::{Map, Value};

use crate::monitor::MonitorSummary;
use crate::placement::GroupPlacement;
use crate::report::{CheckRecord, WorkerRecord};

/// Everything the results store keeps of one test run.
///
/// Field names are the record's JSON keys. Fields that records of this
/// schema written before them lack (`steps`, `start`, `guest_clock_skew_s`,
/// `verdict_t`) read as empty.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The record's format, [`SCHEMA`](crate::SCHEMA) when written by this
    /// crate.
    pub schema: u64,
    /// The run it belongs to (`YYYYMMDD-HHMMSS-<pid>`, or what `cargo ktstr`
    /// named it).
    pub run: String,
    /// The test's registered name, `<crate>::<path>`.
    pub test: String,
    /// `gauntlet/<test>/<preset>` when the run was a gauntlet variant.
    pub variant: Option<String>,
    /// The gauntlet preset, when a variant.
    pub preset: Option<String>,
    /// The VM's topology, `<n>n<l>l<c>c<t>t`.
    pub topology: String,
    /// The backend that ran the VM (`qemu-tcg`, `kvm`; empty when the run
    /// ended before one was chosen).
    pub backend: String,
    /// The kernel booted, when the run got that far.
    pub kernel: Option<KernelRecord>,
    /// The release the guest itself reported (`uname -r`) when its init
    /// started; a run whose guest booted another release than `kernel`'s
    /// fails. Records written before it read as `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub booted_release: Option<String>,
    /// The recording of a failing recorded run (`cargo ktstr replay` takes
    /// it): a directory beside this record. Records without one read `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording: Option<String>,
    /// The scheduler started, `None` for the kernel's own (EEVDF).
    pub scheduler: Option<SchedulerRecord>,
    /// The verdict.
    pub verdict: Verdict,
    /// Whether the test expected to fail.
    pub expect_err: bool,
    /// The test's declared `duration_s`.
    pub duration_s: u32,
    /// The first line of the verdict's text.
    pub detail: String,
    /// The whole text of a failing or inconclusive verdict.
    pub failure: Option<String>,
    /// Every finding of the guest's checks, failures and notes.
    pub checks: Vec<CheckRecord>,
    /// Every worker's report.
    pub workers: Vec<WorkerRecord>,
    /// Each cgroup's placement per NUMA node, LLC and core (empty: no
    /// worker traces, or a record from before them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub placement: Vec<GroupPlacement>,
    /// What the host monitor read, when it ran.
    pub monitor: Option<MonitorSummary>,
    /// The start of each scenario step (none: not a step scenario).
    #[serde(default)]
    pub steps: Vec<StepRecord>,
    /// The duration of each phase.
    pub phases_s: PhaseSeconds,
    /// How the VM started, when it did.
    #[serde(default)]
    pub start: Option<Start>,
    /// The guest's `CLOCK_REALTIME` minus the host's as init started, seconds.
    #[serde(default)]
    pub guest_clock_skew_s: Option<f64>,
    /// When the host read the verdict, seconds from the boot (the monitor
    /// samples' clock).
    #[serde(default)]
    pub verdict_t: Option<f64>,
    /// The scheduler's state read at the failure (or on request): a
    /// failure dump. Records written before it read as `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dump: Option<crate::dump::SchedulerDump>,
    /// The verifier's statistics of every BPF program the scheduler loaded.
    /// Records written before it read as empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub bpf_progs: Vec<crate::verifier::ProgStats>,
    /// Facts of the host it ran on.
    pub host: HostFacts,
    /// The key figures by name ([`key_figures`](crate::key_figures) of the
    /// workers and checks, computed when the record was written).
    #[serde(deserialize_with = "finite_figures")]
    pub figures: BTreeMap<String, f64>,
}

impl RunRecord {
    /// The record of a run of `test` that learned nothing but its verdict:
    /// every other field empty, zero or `None`, the schema this crate's.
    pub fn new(test: impl Into<String>, verdict: Verdict) -> RunRecord {
        RunRecord {
            schema: crate::SCHEMA,
            run: String::new(),
            test: test.into(),
            variant: None,
            preset: None,
            topology: String::new(),
            backend: String::new(),
            kernel: None,
            booted_release: None,
            recording: None,
            scheduler: None,
            verdict,
            expect_err: false,
            duration_s: 0,
            detail: String::new(),
            failure: None,
            checks: Vec::new(),
            workers: Vec::new(),
            placement: Vec::new(),
            monitor: None,
            steps: Vec::new(),
            phases_s: PhaseSeconds::default(),
            start: None,
            guest_clock_skew_s: None,
            verdict_t: None,
            dump: None,
            bpf_progs: Vec::new(),
            host: HostFacts::default(),
            figures: BTreeMap::new(),
        }
    }

    /// The name tables show: the variant's, else the test's.
    pub fn name(&self) -> &str {
        self.variant.as_deref().unwrap_or(&self.test)
    }

    /// The key figures of its workers and checks, computed now (so records
    /// written by older versions get today's set).
    pub fn key_figures(&self) -> BTreeMap<String, f64> {
        crate::key_figures(&self.workers, &self.checks)
    }

    /// The whole text of its verdict: the failure, else the detail line.
    pub fn failure_text(&self) -> &str {
        self.failure.as_deref().unwrap_or(&self.detail)
    }

    /// The kernel's short name for tables (`7.3.4`), when it booted one.
    pub fn kernel_label(&self) -> Option<&str> {
        self.kernel.as_ref().map(|k| k.label.as_str())
    }

    /// The kernel's release (`uname -r`), when known.
    pub fn kernel_release(&self) -> Option<&str> {
        self.kernel.as_ref()?.id.release.as_deref()
    }
}

/// The figures of a stored record; a figure written as `null` (not a finite
/// number) is left out, as readers always did.
fn finite_figures<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, f64>, D::Error> {
    let raw: BTreeMap<String, Option<f64>> = BTreeMap::deserialize(d)?;
    Ok(raw.into_iter().filter_map(|(k, v)| Some((k, v?))).collect())
}

/// What a run concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Verdict {
    /// The test passed (an expected failure included).
    Pass,
    /// The test failed.
    Fail,
    /// A check could not judge and the run did not allow that.
    Inconclusive,
}

impl Verdict {
    /// `pass`, `fail` or `inconclusive`, as the record writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail => "fail",
            Verdict::Inconclusive => "inconclusive",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The kernel a run booted: its typed identity with the path booted, the
/// vmlinux hash under the key older readers take, and the label tables show.
///
/// Records of this schema written before the identity existed hold only
/// `path`, `release` and `sha256`: they load with the release's version, the
/// path as the source and `sha256` as the vmlinux hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Map<String, Value>")]
pub struct KernelRecord {
    /// The identity (its fields sit at the top of the kernel object).
    #[serde(flatten)]
    pub id: KernelId,
    /// The vmlinux booted.
    pub path: String,
    /// SHA-256 of the vmlinux (hex), the same as `id.vmlinux_sha256`.
    pub sha256: String,
    /// [`KernelId::label`] when written.
    pub label: String,
}

impl KernelRecord {
    /// The record of kernel `id` booted from `path`.
    pub fn new(id: KernelId, path: impl Into<String>) -> KernelRecord {
        KernelRecord {
            sha256: id.vmlinux_sha256.clone(),
            label: id.label(),
            path: path.into(),
            id,
        }
    }
}

/// A kernel object as stored, of either form: the identity is read by
/// `KernelId`'s own rules (so a field it gains needs nothing here), unless
/// the object predates it (no `source`).
impl TryFrom<Map<String, Value>> for KernelRecord {
    type Error = serde_json::Error;

    fn try_from(mut m: Map<String, Value>) -> Result<KernelRecord, serde_json::Error> {
        fn take(
            m: &mut Map<String, Value>,
            key: &str,
        ) -> Result<Option<String>, serde_json::Error> {
            m.remove(key)
                .map_or(Ok(None), serde_json::from_value::<Option<String>>)
        }
        let path = take(&mut m, "path")?.ok_or_else(|| de::Error::missing_field("path"))?;
        let sha256 = take(&mut m, "sha256")?;
        let label = take(&mut m, "label")?;
        let id = if m.contains_key("source") {
            serde_json::from_value(Value::Object(m))?
        } else {
            let release = take(&mut m, "release")?;
            KernelId {
                version: release.as_deref().and_then(KernelVersion::of_release),
                release,
                source: KernelSource::Path { path: path.clone() },
                vmlinux_sha256: sha256.clone().unwrap_or_default(),
                config_sha256: None,
                config_from: None,
            }
        };
        Ok(KernelRecord {
            sha256: sha256.unwrap_or_else(|| id.vmlinux_sha256.clone()),
            label: label.unwrap_or_else(|| id.label()),
            path,
            id,
        })
    }
}

/// The scheduler a run started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchedulerRecord {
    /// Its declared name.
    pub name: String,
    /// The host binary.
    pub binary: String,
    /// SHA-256 of the binary (hex), `None` when it could not be read.
    pub sha256: Option<String>,
    /// Its arguments.
    pub args: Vec<String>,
}

/// The start of one scenario step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepRecord {
    /// The step's index, from 0.
    pub index: u32,
    /// When the host read it, seconds from the boot (the monitor samples'
    /// clock, as `verdict_t`).
    pub t: f64,
    /// The guest's uptime at the step's start, seconds.
    pub guest_s: f64,
    /// A short label of each op the step applies.
    pub ops: Vec<String>,
}

/// The duration of each phase of a run, seconds; `None` for a phase the run
/// did not reach.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct PhaseSeconds {
    /// Packing the initramfs.
    pub initramfs: f64,
    /// Waiting for host slots held by other VMs.
    pub slot_wait: f64,
    /// Boot (or restore) to the harness's init.
    pub boot_to_init: Option<f64>,
    /// The test's body.
    pub body: Option<f64>,
    /// Stopping the VM.
    pub teardown: Option<f64>,
    /// The whole run.
    pub total: f64,
}

impl PhaseSeconds {
    /// The phases in the order they ran, as (key, seconds), leaving out
    /// those the run did not reach (`total` is not a phase).
    pub fn in_order(&self) -> Vec<(&'static str, f64)> {
        [
            ("initramfs", Some(self.initramfs)),
            ("slot_wait", Some(self.slot_wait)),
            ("boot_to_init", self.boot_to_init),
            ("body", self.body),
            ("teardown", self.teardown),
        ]
        .into_iter()
        .filter_map(|(k, s)| Some((k, s?)))
        .collect()
    }
}

/// How a run's VM started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Start {
    /// Booted.
    Cold,
    /// Restored from a snapshot of a guest booted once; `boot_to_init` is
    /// then restore-to-init.
    Restored,
}

impl Start {
    /// `cold` or `restored`, as the record writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Start::Cold => "cold",
            Start::Restored => "restored",
        }
    }
}

/// What a record says of the host it ran on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostFacts {
    /// Its host name.
    pub hostname: Option<String>,
    /// Its kernel release.
    pub kernel: Option<String>,
    /// Its CPUs.
    pub cpus: u64,
    /// The CPUs ktstr's VMs may keep busy (`KTSTR_HOST_CPUS`).
    pub host_cpus_for_vms: u64,
    /// Whether it has VT-x or AMD-V.
    pub hardware_virtualization: bool,
    /// When the record was written, Unix seconds.
    pub unix_time: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> KernelId {
        KernelId {
            release: Some("7.0.13+deb13-cloud-amd64".into()),
            version: KernelVersion::of_release("7.0.13"),
            source: KernelSource::Package {
                distro: "debian".into(),
                package: "linux-binary-7.0.13+deb13-cloud-amd64".into(),
                version: "7.0.13-1".into(),
            },
            vmlinux_sha256: "ab".repeat(32),
            config_sha256: Some("cd".repeat(32)),
            config_from: Some("7.0.12+deb13-cloud-amd64".into()),
        }
    }

    #[test]
    fn a_kernel_writes_its_identity_at_the_top_and_reads_back() {
        let k = KernelRecord::new(id(), "/k/vmlinux");
        let v = serde_json::to_value(&k).expect("serializes");
        assert_eq!(v["release"], "7.0.13+deb13-cloud-amd64");
        assert_eq!(v["source"]["kind"], "package");
        assert_eq!(v["config_from"], "7.0.12+deb13-cloud-amd64");
        assert_eq!(v["sha256"], v["vmlinux_sha256"]);
        assert_eq!(v["label"], "7.0.13");
        assert_eq!(v["path"], "/k/vmlinux");
        let back: KernelRecord = serde_json::from_value(v).expect("reads");
        assert_eq!(back, k);
    }

    #[test]
    fn a_kernel_of_before_the_identity_reads_with_what_it_has() {
        let old = serde_json::json!({"path": "/k/vmlinux", "release": "7.3.4+deb13-cloud-amd64",
            "sha256": "ef"});
        let k: KernelRecord = serde_json::from_value(old).expect("reads");
        assert_eq!(k.label, "7.3.4");
        assert_eq!(k.id.vmlinux_sha256, "ef");
        assert_eq!(
            k.id.source,
            KernelSource::Path {
                path: "/k/vmlinux".into()
            }
        );
        let none: KernelRecord = serde_json::from_value(
            serde_json::json!({"path": "/k", "release": null, "sha256": null}),
        )
        .expect("reads");
        assert_eq!((none.label.as_str(), none.sha256.as_str()), ("sha256:", ""));
        let e = serde_json::from_value::<KernelRecord>(serde_json::json!({"release": "7.3"}))
            .expect_err("no path");
        assert!(e.to_string().contains("missing field `path`"), "{e}");
    }
}
