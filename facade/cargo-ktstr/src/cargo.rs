//! Running the package's tests through cargo: nextest when installed, else
//! `cargo test`; settings reach the test processes as `KTSTR_*` variables
//! (read there by `ktstr::config::HostConfig`).

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Command;

use crate::error::CmdError;

/// Which cargo packages and targets to build and run.
#[derive(Debug, Clone, Default)]
pub struct Targets {
    /// `-p` (repeatable).
    pub packages: Vec<String>,
    /// `--test` integration targets (repeatable).
    pub tests: Vec<String>,
    /// `--workspace`.
    pub workspace: bool,
    /// `--release`.
    pub release: bool,
}

impl Targets {
    fn args(&self) -> Vec<String> {
        let mut a = Vec::new();
        for p in &self.packages {
            a.extend(["-p".into(), p.clone()]);
        }
        for t in &self.tests {
            a.extend(["--test".into(), t.clone()]);
        }
        if self.workspace {
            a.push("--workspace".into());
        }
        if self.release {
            a.push("--release".into());
        }
        a
    }
}

/// The environment one run of tests gets.
#[derive(Debug, Clone, Default)]
pub struct RunEnv {
    /// `KTSTR_*` variables and their values.
    pub vars: Vec<(&'static str, OsString)>,
}

impl RunEnv {
    /// Sets `var` to `value`.
    pub fn set(&mut self, var: &'static str, value: impl Into<OsString>) {
        self.vars.retain(|(k, _)| *k != var);
        self.vars.push((var, value.into()));
    }
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Whether `cargo nextest` is installed.
pub fn has_nextest() -> bool {
    cargo()
        .args(["nextest", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The target directory of the package here (`cargo metadata`).
pub fn target_dir() -> Result<PathBuf, CmdError> {
    let out = cargo()
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()
        .map_err(|source| CmdError::Spawn {
            command: "cargo metadata".into(),
            source,
        })?;
    if !out.status.success() {
        return Err(CmdError::Metadata {
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    let meta: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|source| CmdError::NoJson {
            command: "cargo metadata",
            source,
        })?;
    meta["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .ok_or(CmdError::MissingField {
            command: "cargo metadata",
            field: "target_directory",
        })
}

fn run(mut c: Command, env: &RunEnv) -> Result<bool, CmdError> {
    for (k, v) in &env.vars {
        c.env(k, v);
    }
    let shown = format!("{c:?}");
    eprintln!("cargo ktstr: running {shown}");
    let st = crate::child::status(&mut c).map_err(|source| CmdError::Spawn {
        command: shown,
        source,
    })?;
    Ok(st.success())
}

/// Builds the test targets without running them.
pub fn build(t: &Targets) -> Result<(), CmdError> {
    let mut c = cargo();
    c.args(["test", "--tests", "--no-run"]).args(t.args());
    if run(c, &RunEnv::default())? {
        Ok(())
    } else {
        Err(CmdError::BuildFailed)
    }
}

/// Every test name (ignored ones included) of the test targets, as libtest
/// lists them (`name: test` lines).
pub fn list(t: &Targets) -> Result<String, CmdError> {
    let mut c = cargo();
    c.args(["test", "--tests", "--quiet"]).args(t.args()).args([
        "--",
        "--list",
        "--include-ignored",
    ]);
    let out = c.output().map_err(|source| CmdError::Spawn {
        command: "cargo test --list".into(),
        source,
    })?;
    if !out.status.success() {
        return Err(CmdError::CommandFailed {
            command: "cargo test --list".into(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs the package's tests (not the gauntlet variants), `filters` as
/// libtest/nextest take them.
pub fn run_tests(
    t: &Targets,
    filters: &[String],
    nextest: bool,
    env: &RunEnv,
) -> Result<bool, CmdError> {
    let mut c = cargo();
    if nextest {
        c.args(["nextest", "run", "--no-fail-fast"])
            .args(t.args())
            .args(filters);
    } else {
        c.args(["test", "--tests", "--no-fail-fast"])
            .args(t.args())
            .arg("--")
            .args(filters);
    }
    run(c, env)
}

/// Runs exactly the tests named (libtest names; ignored ones too).
pub fn run_exact(
    t: &Targets,
    names: &[String],
    nextest: bool,
    env: &RunEnv,
) -> Result<bool, CmdError> {
    if names.is_empty() {
        return Ok(true);
    }
    let mut c = cargo();
    if nextest {
        let expr: Vec<String> = names.iter().map(|n| format!("test(={n})")).collect();
        c.args(["nextest", "run", "--no-fail-fast", "--run-ignored", "all"])
            .args(t.args())
            .args(["-E", &expr.join(" | ")]);
    } else {
        c.args(["test", "--tests", "--no-fail-fast"])
            .args(t.args())
            .args(["--", "--include-ignored", "--exact"])
            .args(names);
    }
    run(c, env)
}

/// Runs the tests whose name contains `filter`, ignored and
/// default-filtered ones included: the user named them (`bisect`). The
/// gauntlet's variants of a matching test stay out unless the filter names
/// a variant.
pub fn run_named(t: &Targets, filter: &str, nextest: bool, env: &RunEnv) -> Result<bool, CmdError> {
    let variants = filter.contains("::gauntlet::");
    let mut c = cargo();
    if nextest {
        let expr = if variants {
            format!("test(~{filter})")
        } else {
            format!("test(~{filter}) & not test(/::gauntlet::/)")
        };
        c.args([
            "nextest",
            "run",
            "--no-fail-fast",
            "--run-ignored",
            "all",
            "--ignore-default-filter",
        ])
        .args(t.args())
        .args(["-E", &expr]);
    } else {
        c.args(["test", "--tests", "--no-fail-fast"])
            .args(t.args())
            .args(["--", "--include-ignored", filter]);
        if !variants {
            c.args(["--skip", "::gauntlet::"]);
        }
    }
    run(c, env)
}
