//! What `#[ktstr_test]` generates code against — the test's declared
//! configuration and its registration — and running a registered test by
//! name for tests of the harness itself.

pub use crate::registry::{Scheduler, SchedulerSpec, TestConfig, TestEntry, TestFn};
pub use crate::verdict::Outcome;

use crate::error::RunError;

/// Runs the registered test `name` (`module::path::function`) in a VM and
/// returns its outcome instead of panicking: for tests of the harness itself
/// (`#[ktstr_test(harness_fixture = true)]`).
pub fn run_test(name: &str) -> Outcome {
    run_test_with_kernel(name, None)
}

/// [`run_test`] booting `kernel` instead of the resolved one.
pub fn run_test_with_kernel(name: &str, kernel: Option<&std::path::Path>) -> Outcome {
    match crate::registry::find(name) {
        Some(entry) => crate::runner::run(entry, kernel),
        None => Outcome::Fail(RunError::NoSuchTest(name.into()).to_string()),
    }
}

/// Runs the gauntlet variant of the registered test `name` on the preset
/// called `preset`, as `cargo ktstr gauntlet` does, and returns its outcome.
pub fn run_variant(name: &str, preset: &str) -> Outcome {
    match crate::registry::find(name) {
        Some(entry) => crate::runner::run_on(entry, None, Some(preset)),
        None => Outcome::Fail(RunError::NoSuchTest(name.into()).to_string()),
    }
}

pub use crate::runner::{RunTally, StartInfo};

/// [`run_test`], also tallying its VMs: how many booted (the test's own and,
/// after a scheduler crash, auto-repro's probe VM) and how long they waited
/// for host slots, which a test of the harness's own timing subtracts.
pub fn run_test_tallied(name: &str) -> (Outcome, RunTally) {
    match crate::registry::find(name) {
        Some(entry) => crate::runner::run_tallied(entry, None),
        None => (
            Outcome::Fail(RunError::NoSuchTest(name.into()).to_string()),
            RunTally::default(),
        ),
    }
}

/// [`run_test`] restored from a snapshot (`restore`) or booted cold, whatever
/// the configuration says (`KTSTR_RESTORE`); also how its VM started
/// and how far the guest's clock was from the host's, for tests of boot
/// once, restore many.
pub fn run_test_started(name: &str, restore: bool) -> (Outcome, StartInfo) {
    match crate::registry::find(name) {
        Some(entry) => crate::runner::run_started(entry, None, restore),
        None => (
            Outcome::Fail(RunError::NoSuchTest(name.into()).to_string()),
            StartInfo::default(),
        ),
    }
}

/// A scheduler a registered test declares, as the test binary lists them when
/// [`LIST_SCHEDULERS_ENV`] names a file: what `cargo ktstr archive` packs so that the
/// archive's tests find their schedulers on a machine without the source.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeclaredScheduler {
    /// The declaring test (`module::function`).
    pub test: String,
    /// The scheduler's name.
    pub name: String,
    /// `discover`, `path` or `installed` (the [`SchedulerSpec`]).
    pub kind: String,
    /// The declared binary: a name, or a path.
    pub binary: String,
    /// Where it resolves on this host now, or why it does not.
    pub resolved: Result<String, String>,
    /// The host files it declares (`files`), with their guest paths.
    pub files: Vec<(String, String)>,
}

/// The variable that turns a test binary into a lister: it writes every registered
/// test's declared schedulers (boot and staged) to the file it names, as JSON, and exits.
pub const LIST_SCHEDULERS_ENV: &str = "KTSTR_LIST_SCHEDULERS";

/// Every declared scheduler of the registered tests, resolved on this host.
pub fn declared_schedulers() -> Vec<DeclaredScheduler> {
    let cache_root = crate::config::HostConfig::from_env()
        .map(|h| h.cache_root)
        .unwrap_or_default();
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut out = Vec::new();
    for t in crate::registry::KTSTR_TESTS.iter() {
        let boot = t.config.scheduler.iter();
        for s in boot.chain(t.config.staged_schedulers.iter()) {
            let (kind, binary) = match s.binary {
                SchedulerSpec::Eevdf => continue,
                SchedulerSpec::Discover(n) => ("discover", n),
                SchedulerSpec::Path(p) => ("path", p),
                SchedulerSpec::Installed(n) => ("installed", n),
            };
            let resolved = match crate::schedulers::resolve(s, &path, &cache_root) {
                Ok(Some(p)) => Ok(p.display().to_string()),
                Ok(None) => continue,
                Err(e) => Err(e.to_string()),
            };
            out.push(DeclaredScheduler {
                test: t.name.to_string(),
                name: s.name.to_string(),
                kind: kind.to_string(),
                binary: binary.to_string(),
                resolved,
                files: s
                    .files
                    .iter()
                    .map(|(h, g)| (h.to_string(), g.to_string()))
                    .collect(),
            });
        }
    }
    out
}
