//! Probes on request (`#[ktstr_test(probes = [...])]`): the plan is built
//! and checked on the host before the VM boots, the guest entry installs it
//! like an auto-repro plan, and the decoded report is printed after the VM
//! and handed to `post_vm` (`VmResult::probes`). A test without the key
//! builds, installs and prints nothing.

use ktstr_btf::Btf;
use ktstr_probe::{Plan, ProbeReport, View, bpf_obj, guest::Capture};

use crate::config::HostConfig;
use crate::registry::TestEntry;

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
    /// The kernel `entry` boots and its scheduler's callbacks.
    pub(crate) fn read(
        host: &HostConfig,
        entry: &TestEntry,
        kernel: Option<&std::path::Path>,
    ) -> Result<Sources, String> {
        let resolved = host
            .resolve_kernel(ktstr_kernel::KernelSpec::of_path(kernel).as_ref())
            .map_err(|e| format!("resolving the kernel: {e}"))?;
        let vmlinux = std::fs::read(&resolved.vmlinux)
            .map_err(|e| format!("{}: {e}", resolved.vmlinux.display()))?;
        let callbacks = match entry.config.scheduler {
            Some(s) => crate::schedulers::resolve(&s, &host.path, &host.cache_root)
                .ok()
                .flatten()
                .and_then(|p| std::fs::read(p).ok())
                .map(|b| bpf_obj::callbacks(&b))
                .unwrap_or_default(),
            None => Vec::new(),
        };
        Ok(Sources {
            vmlinux,
            kernel_dir: resolved.vmlinux.parent().map(std::path::Path::to_path_buf),
            vmlinux_path: resolved.vmlinux,
            callbacks,
        })
    }

    /// The kernel's BTF.
    pub(crate) fn btf(&self) -> Result<Btf<'_>, String> {
        let bytes = ktstr_btf::elf::btf_section(&self.vmlinux)
            .map_err(|e| format!("{}: {e}", self.vmlinux_path.display()))?;
        Btf::parse(bytes).map_err(|e| format!("{}: BTF: {e}", self.vmlinux_path.display()))
    }

    /// `file:line` of kernel functions from the cached kernel's line index,
    /// or why there is none.
    pub(crate) fn locations(&self) -> Locations {
        Sources::locations_of(self.kernel_dir.as_deref())
    }

    /// The locations of the kernel whose vmlinux sits in `kernel_dir`.
    pub(crate) fn locations_of(kernel_dir: Option<&std::path::Path>) -> Locations {
        match kernel_dir {
            Some(dir) => match ktstr_kernel::lines::LineIndex::load(dir) {
                Ok(Some(index)) => Locations::Index(index),
                Ok(None) => Locations::None(
                    "the kernel's debug info is not cached (`cargo xtask kernel fetch` \
                     downloads it for a Debian kernel)"
                        .into(),
                ),
                Err(e) => Locations::None(e.to_string()),
            },
            None => Locations::None("the kernel is not in the cache".into()),
        }
    }
}

/// Where kernel functions are in the source, as far as known.
pub(crate) enum Locations {
    /// The cached kernel's index.
    Index(ktstr_kernel::lines::LineIndex),
    /// None, and why.
    None(String),
}

impl Locations {
    /// `file:line` of `func`, or why it is unknown.
    pub(crate) fn locate(&self, func: &str) -> Result<String, String> {
        match self {
            Locations::Index(i) => i.locate(func).ok_or_else(|| {
                "not in the kernel's debug info (an assembly or generated function)".to_string()
            }),
            Locations::None(why) => Err(why.clone()),
        }
    }
}

/// The plan of `entry`'s `probes` key, as JSON for the guest; `None`
/// without the key. An unknown name fails here, before any VM boots.
pub(crate) fn plan(
    host: &HostConfig,
    entry: &TestEntry,
    kernel: Option<&std::path::Path>,
) -> Result<Option<(Plan, Sources)>, String> {
    let names = entry.config.probes;
    if names.is_empty() {
        return Ok(None);
    }
    let key = || format!("probes = {names:?}");
    let sources = Sources::read(host, entry, kernel).map_err(|e| format!("{}: {e}", key()))?;
    let plan = {
        let btf = sources.btf().map_err(|e| format!("{}: {e}", key()))?;
        Plan::on_request(&btf, names, &sources.callbacks).map_err(|e| format!("{}: {e}", key()))?
    };
    Ok(Some((plan, sources)))
}

/// The report of the guest's capture (`data`: what the guest sent).
pub(crate) fn report(
    plan: &Plan,
    sources: &Sources,
    data: Option<&serde_json::Value>,
) -> Result<ProbeReport, String> {
    let cap: Capture = match data.cloned().map(serde_json::from_value) {
        Some(Ok(c)) => c,
        Some(Err(e)) => return Err(format!("the guest's probe records do not parse: {e}")),
        None => return Err("the guest sent no probe records".into()),
    };
    let btf = sources.btf()?;
    let view = View::new(&btf, plan, &cap);
    let locations = sources.locations();
    let mut report = view.report(&sources.callbacks, &|f| locations.locate(f));
    report.errors = cap.errors.clone();
    for e in &cap.errors {
        report.text.push_str(&format!("  probe error: {e}\n"));
    }
    Ok(report)
}

/// `outcome` with what on-request probes add: their block after a failure;
/// a failure when a probe could not be installed or nothing came back (the
/// test asked for them: a silent gap would pass for "never called").
pub(crate) fn fold(
    outcome: crate::verdict::Outcome,
    report: Option<&Result<ProbeReport, String>>,
) -> crate::verdict::Outcome {
    use crate::verdict::Outcome;
    let problem = match report {
        None => return outcome,
        Some(Err(e)) => Some(format!("probes: {e}")),
        Some(Ok(r)) if !r.errors.is_empty() => Some(format!(
            "probes: {} (see the PROBES block)",
            r.errors.join("; ")
        )),
        Some(Ok(_)) => None,
    };
    let block = match report {
        Some(Ok(r)) => format!("\n\n{}", r.text),
        _ => String::new(),
    };
    match (outcome, problem) {
        (Outcome::Fail(t), p) => Outcome::Fail(format!(
            "{t}{}{block}",
            p.map(|p| format!("\n{p}")).unwrap_or_default()
        )),
        (o, None) => o,
        (Outcome::Pass(t) | Outcome::Inconclusive(t), Some(p)) => {
            Outcome::Fail(format!("{p}\n(guest verdict: {t}){block}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::Outcome;

    fn report(errors: &[&str]) -> ProbeReport {
        let mut r = ProbeReport::default();
        r.text = "=== PROBES (on request): f ===\n".into();
        r.errors = errors.iter().map(|e| e.to_string()).collect();
        r
    }

    fn entry(probes: &'static [&'static str]) -> TestEntry {
        fn body(_: &crate::scenario::Ctx) -> anyhow::Result<ktstr_ops::assert::AssertResult> {
            Ok(ktstr_ops::assert::AssertResult::pass())
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
        let host = HostConfig::from_vars(|k| match k {
            "KTSTR_KERNEL" => Some("/nonexistent/vmlinux".into()),
            "HOME" => Some("/h".into()),
            _ => None,
        })
        .expect("config");
        assert!(matches!(plan(&host, &entry(&[]), None), Ok(None)));
        let e = plan(&host, &entry(&["enqueue_task_scx"]), None)
            .err()
            .expect("no kernel to plan with");
        assert!(e.starts_with("probes = [\"enqueue_task_scx\"]: "), "{e}");
    }

    #[test]
    fn without_probes_the_outcome_is_untouched() {
        let pass = Outcome::Pass("ok".into());
        assert_eq!(fold(pass.clone(), None), pass);
        assert_eq!(fold(pass.clone(), Some(&Ok(report(&[])))), pass);
    }

    #[test]
    fn a_probe_that_could_not_run_fails_the_test_naming_why() {
        let pass = Outcome::Pass("ok".into());
        let Outcome::Fail(t) = fold(
            pass.clone(),
            Some(&Ok(report(&["probe on f not installed"]))),
        ) else {
            panic!("a refused probe must fail the test");
        };
        assert!(t.starts_with("probes: probe on f not installed"), "{t}");
        assert!(t.contains("=== PROBES"), "{t}");
        let Outcome::Fail(t) = fold(pass, Some(&Err("the guest sent no probe records".into())))
        else {
            panic!("no records must fail the test");
        };
        assert!(t.contains("the guest sent no probe records"), "{t}");
        // A failing test gets the block after its own text.
        let Outcome::Fail(t) = fold(Outcome::Fail("boom".into()), Some(&Ok(report(&[])))) else {
            panic!("stays failed");
        };
        assert!(t.starts_with("boom\n\n=== PROBES"), "{t}");
    }
}
