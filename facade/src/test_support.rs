//! What `#[ktstr_test]` generates code against — the test's declared
//! configuration and its registration — and running a registered test by
//! name for tests of the harness itself.

pub use crate::registry::{Scheduler, SchedulerSpec, TestConfig, TestEntry, TestFn};
pub use crate::runner::RunOptions;
pub use crate::verdict::{
    Cause, Expectation, Finding, Kind, MissingKfuncs, Observed, Outcome, PostVm, ProbesError,
    Reached, RunReport, Verdict, judge, render,
};

use crate::error::RunError;

/// Runs the registered test `name` (`module::path::function`) in a VM as
/// `opts` say (a kernel, a gauntlet preset, a cold or restored start) and
/// returns everything observed of it ([`RunReport`]: judge it with
/// [`judge`], or read [`RunReport::outcome`]) instead of panicking: for
/// tests of the harness itself (`#[ktstr_test(harness_fixture = true)]`).
pub fn run(name: &str, opts: &RunOptions<'_>) -> RunReport {
    match crate::registry::find(name) {
        Some(entry) => crate::runner::run(entry, opts),
        None => {
            let mut report = RunReport::new(
                "(no such test)",
                Expectation {
                    expect_err: false,
                    expect_err_matching: None,
                    expect_err_text: None,
                    allow_inconclusive: false,
                    watchdog_timeout_s: 0,
                },
            );
            report.reached = Reached::NotRun(RunError::NoSuchTest(name.into()).to_string());
            report
        }
    }
}

/// [`run`] with the defaults, judged: the outcome and its text.
pub fn run_test(name: &str) -> Outcome {
    run(name, &RunOptions::default()).outcome()
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
    // String both ways: this is data, listed as JSON for another process
    // (`cargo ktstr archive`), which prints the reason; not an error path.
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
