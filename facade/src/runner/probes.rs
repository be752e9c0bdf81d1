//! Probes on request (`#[ktstr_test(probes = [...])]`): the plan is built
//! and checked on the host before the VM boots, the guest entry installs it
//! like an auto-repro plan, and the decoded report is printed after the VM
//! and handed to `post_vm` (`VmResult::probes`). A test without the key
//! builds, installs and prints nothing.

use ktstr_btf::Btf;
use ktstr_probe::{Plan, ProbeReport, View, bpf_obj, guest::Capture};

use super::prepare::Resolved;
use crate::error::{ProbePlanError, RunError, SourcesError};
use crate::registry::TestEntry;
use crate::verdict::ProbesError;

/// What decoding needs of the kernel and the scheduler, read once.
pub(crate) struct Sources {
    /// The ELF vmlinux (its `.BTF` is parsed from these bytes).
    vmlinux: Vec<u8>,
    /// Where it came from, for messages.
    vmlinux_path: std::path::PathBuf,
    /// The cached kernel's directory (its line index, if any).
    kernel_dir: Option<std::path::PathBuf>,
    /// The scheduler's BPF callbacks with `file:line`.
    pub(crate) callbacks: Vec<bpf_obj::Callback>,
}

impl Sources {
    /// The resolved kernel's bytes and its booted scheduler's callbacks.
    pub(crate) fn read(resolved: &Resolved) -> Result<Sources, SourcesError> {
        let path = &resolved.kernel.vmlinux;
        let vmlinux = std::fs::read(path).map_err(|source| SourcesError::Read {
            path: path.clone(),
            source,
        })?;
        // A binary that cannot be read has no callbacks to name: the plan
        // and the report say "unknown" for them.
        let callbacks = resolved
            .boot
            .as_ref()
            .and_then(|(_, p)| std::fs::read(p).ok())
            .map(|b| bpf_obj::callbacks(&b))
            .unwrap_or_default();
        let sources = Sources {
            vmlinux,
            kernel_dir: path.parent().map(std::path::Path::to_path_buf),
            vmlinux_path: path.clone(),
            callbacks,
        };
        sources.btf()?;
        Ok(sources)
    }

    /// The kernel's BTF.
    pub(crate) fn btf(&self) -> Result<Btf<'_>, SourcesError> {
        let btf = |source| SourcesError::Btf {
            path: self.vmlinux_path.clone(),
            source,
        };
        Btf::parse(ktstr_btf::elf::btf_section(&self.vmlinux).map_err(btf)?).map_err(btf)
    }

    /// Reads `resolved` into `slot` unless it holds it already.
    pub(crate) fn get<'s>(
        slot: &'s mut Option<Sources>,
        resolved: &Resolved,
    ) -> Result<&'s Sources, SourcesError> {
        if slot.is_none() {
            *slot = Some(Sources::read(resolved)?);
        }
        Ok(slot.as_ref().expect("filled above"))
    }

    /// `file:line` of kernel functions from the cached kernel's line index,
    /// or why there is none.
    pub(crate) fn locations(&self) -> Locations {
        match self.kernel_dir.as_deref() {
            Some(dir) => match ktstr_kernel::lines::LineIndex::load(dir) {
                Ok(Some(index)) => Locations::Index(index),
                Ok(None) => Locations::None(Unlocated::NoDebugInfo),
                Err(e) => Locations::None(Unlocated::Index(e.to_string())),
            },
            None => Locations::None(Unlocated::NotCached),
        }
    }
}

/// Why a kernel function has no `file:line`.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum Unlocated {
    /// The function is not in the index.
    #[error("not in the kernel's debug info (an assembly or generated function)")]
    NotInDebugInfo,
    /// The kernel has no index.
    #[error(
        "the kernel's debug info is not cached (`cargo xtask kernel fetch` downloads it for a \
         Debian kernel)"
    )]
    NoDebugInfo,
    /// The index could not be read (its error).
    #[error("{0}")]
    Index(String),
    /// The kernel is not a cache entry.
    #[error("the kernel is not in the cache")]
    NotCached,
}

/// Where kernel functions are in the source, as far as known.
pub(crate) enum Locations {
    /// The cached kernel's index.
    Index(ktstr_kernel::lines::LineIndex),
    /// None, and why.
    None(Unlocated),
}

impl Locations {
    /// `file:line` of `func`, or why it is unknown (the text the report
    /// prints in its place).
    pub(crate) fn locate(&self, func: &str) -> Result<String, Unlocated> {
        match self {
            Locations::Index(i) => i.locate(func).ok_or(Unlocated::NotInDebugInfo),
            Locations::None(why) => Err(why.clone()),
        }
    }
}

/// The plan of `entry`'s `probes` key; `None` without the key (and then
/// nothing is read). An unknown name fails here, before any VM boots.
/// `sources` keeps what was read, for the report.
pub(crate) fn plan(
    entry: &TestEntry,
    resolved: &Resolved,
    sources: &mut Option<Sources>,
) -> Result<Option<Plan>, RunError> {
    let names = entry.config.probes;
    if names.is_empty() {
        return Ok(None);
    }
    let planned = (|| -> Result<Plan, ProbePlanError> {
        let s = Sources::get(sources, resolved)?;
        Ok(Plan::on_request(&s.btf()?, names, &s.callbacks)?)
    })();
    planned.map(Some).map_err(|source| RunError::Probes {
        names: format!("{names:?}"),
        source,
    })
}

/// The report of the guest's capture (`data`: what the guest sent).
pub(crate) fn report(
    plan: &Plan,
    sources: Option<&Sources>,
    data: Option<&serde_json::Value>,
) -> Result<ProbeReport, ProbesError> {
    let cap: Capture = match data.cloned().map(serde_json::from_value) {
        Some(Ok(c)) => c,
        Some(Err(e)) => return Err(ProbesError::RecordsDoNotParse(e.to_string())),
        None => return Err(ProbesError::NoRecords),
    };
    let sources = sources.ok_or(ProbesError::Kernel("the kernel was not read".into()))?;
    let btf = sources
        .btf()
        .map_err(|e| ProbesError::Kernel(e.to_string()))?;
    let view = View::new(&btf, plan, &cap);
    let locations = sources.locations();
    let mut report = view.report(&sources.callbacks, &|f| locations.locate(f));
    report.errors = cap.errors.clone();
    for e in &cap.errors {
        report.text.push_str(&format!("  probe error: {e}\n"));
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(probes: &'static [&'static str]) -> TestEntry {
        fn body(_: &crate::scenario::Ctx) -> anyhow::Result<ktstr_ops::AssertResult> {
            Ok(ktstr_ops::AssertResult::pass())
        }
        TestEntry {
            name: "t",
            func: body,
            config: crate::registry::TestConfig {
                probes,
                ..crate::registry::TestConfig::DEFAULT
            },
        }
    }

    #[test]
    fn without_the_key_nothing_is_read_or_planned() {
        // A kernel that does not exist: only a test with probes looks at it.
        let resolved = Resolved {
            kernel: ktstr_kernel::Kernel::at(
                "/nonexistent/vmlinux".into(),
                ktstr_kernel::KernelOrigin::Explicit,
            ),
            boot: None,
            staged: Vec::new(),
        };
        let mut sources = None;
        assert!(matches!(
            plan(&entry(&[]), &resolved, &mut sources),
            Ok(None)
        ));
        assert!(sources.is_none());
        let e = plan(&entry(&["enqueue_task_scx"]), &resolved, &mut sources)
            .expect_err("no kernel to plan with")
            .to_string();
        assert!(e.starts_with("probes = [\"enqueue_task_scx\"]: "), "{e}");
        assert!(e.contains("/nonexistent/vmlinux"), "{e}");
    }

    #[test]
    fn a_capture_that_is_missing_or_garbage_is_named() {
        let plan = Plan::default();
        assert_eq!(report(&plan, None, None), Err(ProbesError::NoRecords));
        let garbage = serde_json::json!("garbage");
        assert!(matches!(
            report(&plan, None, Some(&garbage)),
            Err(ProbesError::RecordsDoNotParse(_))
        ));
    }
}
