//! `cargo xtask test` (the whole suite) and `cargo xtask demo` (the main job).
//!
//! Both start with set-up and the kernel fetch, so a fresh machine needs no
//! other step; each phase prints how long it took.

use std::process::Command;
use std::time::{Duration, Instant};

use argh::FromArgs;

use crate::error::{CommandError, output, report, status};

/// What `cargo xtask test` or `demo` failed with: the phases that failed
/// (each said why when it ended), or why the format check could not run.
#[derive(Debug, thiserror::Error)]
pub enum TestError {
    /// Some phases failed.
    #[error("failed phases: {}", phases.join(", "))]
    Phases {
        /// Their names, in the order they ran.
        phases: Vec<&'static str>,
    },
    #[error(transparent)]
    Command(#[from] CommandError),
    /// A cargo command printed something else than the JSON asked for.
    #[error("{command} printed no JSON")]
    Json {
        /// The command.
        command: &'static str,
        /// Why its output is not JSON.
        #[source]
        source: serde_json::Error,
    },
}

/// Set-up, kernel fetch, fmt check, clippy, docs and every test of every
/// crate, each run once (nextest: one process per test; doctests apart).
#[derive(FromArgs)]
#[argh(subcommand, name = "test")]
pub struct TestCmd {
    /// also run what does not fit CI's budget: long soaks, the full matrices
    /// and real schedulers, the tests marked `#[ignore = "full: ..."]`
    /// (KTSTR_FULL=1 for the tests)
    #[argh(switch)]
    full: bool,
    /// skip `cargo xtask setup` (for quick iteration on a prepared machine)
    #[argh(switch)]
    no_setup: bool,
    /// boot every test cold, never from a snapshot (KTSTR_RESTORE=0)
    #[argh(switch)]
    no_restore: bool,
    /// use the cached kernel only, never the network
    #[argh(switch)]
    offline: bool,
    /// with --full: another version of a pinned real scheduler, NAME=VERSION
    /// (repeatable; see `cargo xtask schedulers`)
    #[argh(option)]
    scheduler_version: Vec<String>,
}

/// Set-up, kernel fetch, then the example tests with a verdict table.
#[derive(FromArgs)]
#[argh(subcommand, name = "demo")]
pub struct DemoCmd {
    /// skip `cargo xtask setup`
    #[argh(switch)]
    no_setup: bool,
    /// use the cached kernel only, never the network
    #[argh(switch)]
    offline: bool,
}

/// One timed phase and how it ended.
struct Phase {
    name: &'static str,
    took: Duration,
    ok: bool,
}

#[derive(Default)]
struct Phases(Vec<Phase>);

impl Phases {
    /// Runs `f` as phase `name`, printing its start and duration.
    fn run<E: std::error::Error>(
        &mut self,
        name: &'static str,
        f: impl FnOnce() -> Result<(), E>,
    ) -> bool {
        println!("==> {name}");
        let t0 = Instant::now();
        let res = f();
        let took = t0.elapsed();
        let ok = res.is_ok();
        match res {
            Ok(()) => println!("==> {name}: ok in {:.1}s", took.as_secs_f64()),
            Err(e) => println!(
                "==> {name}: FAILED in {:.1}s: {}",
                took.as_secs_f64(),
                report(&e)
            ),
        }
        self.0.push(Phase { name, took, ok });
        ok
    }

    fn summary(&self) -> Result<(), TestError> {
        println!("\nphase                         time  result");
        let mut total = Duration::ZERO;
        for p in &self.0 {
            total += p.took;
            let verdict = if p.ok { "ok" } else { "FAILED" };
            println!("{:<26} {:>7.1}s  {verdict}", p.name, p.took.as_secs_f64());
        }
        println!("{:<26} {:>7.1}s", "total", total.as_secs_f64());
        let failed: Vec<&'static str> = self.0.iter().filter(|p| !p.ok).map(|p| p.name).collect();
        if failed.is_empty() {
            Ok(())
        } else {
            Err(TestError::Phases { phases: failed })
        }
    }
}

fn workspace() -> std::path::PathBuf {
    std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// The `n` slowest tests of a nextest JUnit report.
fn print_slowest(junit: &std::path::Path, n: usize) {
    let Ok(xml) = std::fs::read_to_string(junit) else {
        println!(
            "(no JUnit report at {}: slowest tests unknown)",
            junit.display()
        );
        return;
    };
    let attr = |tag: &str, name: &str| -> Option<String> {
        let start = tag.find(&format!(" {name}=\""))? + name.len() + 3;
        let len = tag[start..].find('"')?;
        Some(tag[start..start + len].to_string())
    };
    let mut cases: Vec<(f64, String)> = xml
        .split("<testcase")
        .skip(1)
        .filter_map(|rest| {
            let tag = &rest[..rest.find('>')?];
            let time = attr(tag, "time")?.parse().ok()?;
            let class = attr(tag, "classname").unwrap_or_default();
            Some((time, format!("{class} {}", attr(tag, "name")?)))
        })
        .collect();
    cases.sort_by(|a, b| b.0.total_cmp(&a.0));
    println!("\nslowest tests ({} in all):", cases.len());
    for (time, name) in cases.iter().take(n) {
        println!("{time:>8.1}s  {name}");
    }
}

/// The API contract, kept byte for byte as the spec gives it (it ends without
/// a newline, which rustfmt would add): left out of the format check.
const SPEC_FILE: &str = "tests/tests/scheduler_lifecycle.rs";

/// `rustfmt --check` over every target of the workspace but [`SPEC_FILE`].
fn fmt_check() -> Result<(), TestError> {
    let mut c = cargo();
    c.args(["metadata", "--no-deps", "--format-version", "1"]);
    let meta = json_of(&mut c, "cargo metadata")?;
    let spec = workspace().join(SPEC_FILE);
    let spec = spec.canonicalize().unwrap_or(spec);
    let mut roots: Vec<String> = meta["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .filter_map(|t| t["src_path"].as_str().map(str::to_string))
        .filter(|p| std::path::Path::new(p).canonicalize().ok().as_ref() != Some(&spec))
        .collect();
    roots.sort();
    roots.dedup();
    let mut c = Command::new("rustfmt");
    c.args(["--edition", "2024", "--check"]).args(&roots);
    Ok(status(&mut c)?)
}

/// What `cmd` (shown as `command`) prints on stdout, as JSON.
fn json_of(cmd: &mut Command, command: &'static str) -> Result<serde_json::Value, TestError> {
    let out = output(cmd, command)?;
    serde_json::from_slice(&out.stdout).map_err(|source| TestError::Json { command, source })
}

pub(crate) fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    // Run from the workspace root whatever the caller's directory.
    c.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    c
}

/// Set-up and kernel fetch, shared by `test` and `demo`; false if either failed.
fn prepare(phases: &mut Phases, no_setup: bool, offline: bool) -> bool {
    if !no_setup && !phases.run("setup", crate::setup::run) {
        return false;
    }
    phases.run("kernel fetch", || crate::kernel_fetch(offline).map(drop))
}

/// The phases of the kernel dimension: the `examples` on the second line,
/// and with `--full` the matrix of every line.
fn kernel_phases(phases: &mut Phases, args: &TestCmd) {
    phases.run("examples, monitor checks on the newest 6.18.x", || {
        crate::kernels::examples_on_second_line(args.offline)
    });
    if args.full {
        phases.run("kernel matrix (6.18, 7.0, 7.2, 7.3)", || {
            crate::kernels::matrix(args.offline)
        });
    }
}

pub fn run_test(args: &TestCmd) -> Result<(), TestError> {
    let mut phases = Phases::default();
    if prepare(&mut phases, args.no_setup, args.offline) {
        phases.run("fmt check", fmt_check);
        phases.run("clippy", || {
            let mut c = cargo();
            c.args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]);
            status(&mut c)
        });
        phases.run("docs", || {
            let mut c = cargo();
            c.args(["doc", "--workspace", "--no-deps"])
                .env("RUSTDOCFLAGS", "-D warnings");
            status(&mut c)
        });
        phases.run("doctests", || {
            let mut c = cargo();
            c.args(["test", "--workspace", "--doc"]);
            status(&mut c)
        });
        // The book's code is compiled by the doctests (ktstr-docs) and its links
        // checked by ktstr-docs' tests in every run; --full also proves mdBook
        // builds it (mdBook takes minutes to install, too long for CI).
        if args.full {
            phases.run("book tools (mdbook)", crate::setup::ensure_mdbook);
            phases.run("book (mdbook build docs)", || {
                let mut c = Command::new("mdbook");
                c.arg("build").arg(workspace().join("docs"));
                status(&mut c)
            });
        }
        // Every test once, each in its own process: the guest-init hook and
        // the host-wide slots are proven under the runner CI uses.
        let junit = workspace().join("target/nextest/default/junit.xml");
        let _ = std::fs::remove_file(&junit);
        if args.full {
            // The real-scheduler tests fail (by design) without their binaries.
            phases.run("real schedulers (cargo xtask schedulers)", || {
                crate::schedulers::run(&crate::schedulers::SchedulersCmd {
                    version: args.scheduler_version.clone(),
                    force: false,
                    only: Vec::new(),
                    table: None,
                })
            });
        }
        let results =
            std::env::temp_dir().join(format!("ktstr-test-full-{}.jsonl", std::process::id()));
        let _ = std::fs::remove_file(&results);
        phases.run("tests (cargo nextest)", || {
            let mut c = cargo();
            c.args(["nextest", "run", "--workspace", "--no-fail-fast"]);
            if args.no_restore {
                c.env("KTSTR_RESTORE", "0");
            }
            if args.full {
                // The `full:` tests are ignored ones; the gauntlet's variants,
                // ignored too, stay `cargo ktstr gauntlet`'s.
                c.args(["--run-ignored", "all", "--ignore-default-filter"])
                    .args(["-E", NOT_GAUNTLET])
                    .env("KTSTR_FULL", "1")
                    .env("KTSTR_RESULTS", &results);
            }
            status(&mut c)
        });
        if args.full {
            crate::schedulers::print_results(&results);
            let _ = std::fs::remove_file(&results);
            phases.run("kselftest", || {
                crate::kselftest::run(&crate::kselftest::KselftestCmd::full_suite(args.offline))
            });
        } else {
            print_left_out();
            println!(
                "not run: the phases real schedulers, book (mdbook build docs), kselftest and the \
                 kernel matrix (minutes each: `cargo xtask test --full` runs them; the book's \
                 code and links are checked here by ktstr-docs)"
            );
        }
        print_slowest(&junit, 10);
        kernel_phases(&mut phases, args);
    }
    phases.summary()
}

/// The nextest filter of `--full`: everything but the gauntlet's variants.
const NOT_GAUNTLET: &str = "not test(/::gauntlet::/)";

/// Prints the tests the default run left out and why: the ones ignored with
/// a `full:` reason (found in the sources) and any the nextest default-filter
/// holds back. The names come from nextest's own list of this run's tests.
fn print_left_out() {
    let mut c = cargo();
    c.args(["nextest", "list", "--workspace", "--message-format", "json"])
        .stderr(std::process::Stdio::null());
    let listed = match json_of(&mut c, "cargo nextest list") {
        Ok(v) => v,
        Err(e) => {
            println!("(the tests left out could not be listed: {})", report(&e));
            return;
        }
    };
    let reasons = full_reasons(&workspace());
    let left_out = left_out(&listed);
    println!(
        "\nnot run ({} tests; `cargo xtask test --full` runs them, plain cargo \
         `cargo test -- --ignored --skip ::gauntlet::`):",
        left_out.len()
    );
    for (binary, name, why) in &left_out {
        let fn_name = name.rsplit("::").next().unwrap_or(name);
        let why = match (why.as_str(), reasons.get(fn_name)) {
            ("ignored", Some(r)) => r.clone(),
            ("ignored", None) => "#[ignore]d (no `full:` reason found in the sources)".into(),
            ("default-filter", _) => "held back by .config/nextest.toml's default-filter".into(),
            (other, _) => other.to_string(),
        };
        println!("  {binary} {name}: {why}");
    }
}

/// `(binary, test, reason)` of every test a nextest JSON list shows as not
/// matching (ignored, or held back by the default filter), sorted; the
/// gauntlet's variants are `cargo ktstr gauntlet`'s, not left out.
fn left_out(listed: &serde_json::Value) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let suites = listed["rust-suites"].as_object().into_iter().flatten();
    for (binary, suite) in suites {
        for (name, case) in suite["testcases"].as_object().into_iter().flatten() {
            let m = &case["filter-match"];
            if m["status"].as_str() == Some("mismatch") && !name.contains("::gauntlet::") {
                let why = m["reason"].as_str().unwrap_or("?").to_string();
                out.push((binary.clone(), name.clone(), why));
            }
        }
    }
    out.sort();
    out
}

/// Function name -> the reason of its `#[ignore = "full: REASON; run with
/// cargo xtask test --full"]`, over the workspace's Rust sources.
fn full_reasons(root: &std::path::Path) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            let name = e.file_name();
            let name = name.to_string_lossy();
            if path.is_dir() {
                if !name.starts_with('.') && name != "target" {
                    dirs.push(path);
                }
            } else if name.ends_with(".rs")
                && let Ok(text) = std::fs::read_to_string(&path)
            {
                full_reasons_in(&text, &mut out);
            }
        }
    }
    out
}

/// The `full:` ignore reasons of one source file, by the name of the next
/// `fn` after each attribute.
fn full_reasons_in(text: &str, out: &mut std::collections::BTreeMap<String, String>) {
    const START: &str = "#[ignore = \"full: ";
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let Some(rest) = line.trim_start().strip_prefix(START) else {
            continue;
        };
        let Some(reason) = rest.strip_suffix("\"]") else {
            continue;
        };
        let reason = reason
            .strip_suffix("; run with cargo xtask test --full")
            .unwrap_or(reason);
        let name = lines[i + 1..].iter().take(30).find_map(|l| {
            let after = l
                .trim_start()
                .strip_prefix("pub ")
                .unwrap_or(l.trim_start());
            let after = after.strip_prefix("fn ")?;
            Some(after.split(['(', '<']).next()?.trim().to_string())
        });
        if let Some(name) = name {
            out.insert(name, reason.to_string());
        }
    }
}

pub fn run_demo(args: &DemoCmd) -> Result<(), TestError> {
    let mut phases = Phases::default();
    let results = std::env::temp_dir().join(format!("ktstr-demo-{}.jsonl", std::process::id()));
    if prepare(&mut phases, args.no_setup, args.offline) {
        phases.run("example tests", || {
            let _ = std::fs::remove_file(&results);
            let mut c = cargo();
            c.args([
                "test",
                "-p",
                "ktstr-tests",
                "--test",
                "examples",
                "--",
                "--test-threads",
                "2",
            ])
            .env("KTSTR_RESULTS", &results);
            status(&mut c)
        });
        print_verdict_table(&results);
        let _ = std::fs::remove_file(&results);
    }
    phases.summary()
}

/// The verdict table of a results file written by the test runner, with
/// each test's key figures (fairness spread, worst gap, work done).
fn print_verdict_table(path: &std::path::Path) {
    let mut rows = read_records(path);
    rows.sort_by(|a, b| a.test.cmp(&b.test));
    println!(
        "\n{:<48} {:<10} {:<13} {:>8}  KEY FIGURES",
        "TEST", "TOPOLOGY", "VERDICT", "WALL"
    );
    for r in &rows {
        let mut verdict = r.verdict.to_string();
        if r.expect_err {
            verdict.push_str(" (xfail)");
        }
        println!(
            "{:<48} {:<10} {:<13} {:>7.1}s  {}",
            r.test,
            r.topology,
            verdict,
            r.phases_s.total,
            key_figures(&r.figures)
        );
    }
    if rows.is_empty() {
        println!("(no test reported a verdict)");
    }
}

/// The records of a results file (`KTSTR_RESULTS`, one per line); a line
/// that is not a record of this schema is said on stderr and skipped.
pub(crate) fn read_records(path: &std::path::Path) -> Vec<ktstr_record::RunRecord> {
    // No file: no test reported (the table says so).
    let Ok(lines) = ktstr_record::read_lines(path) else {
        return Vec::new();
    };
    lines
        .into_iter()
        .filter_map(|r| r.map_err(|e| eprintln!("skipped: {e}")).ok())
        .collect()
}

/// `spread 12.0% · worst gap 31ms · work 1510/s per worker`, from a record's
/// `figures` (what the test measured; `-` when it measured none).
fn key_figures(f: &std::collections::BTreeMap<String, f64>) -> String {
    let mut out = Vec::new();
    if let Some(v) = f.get("fairness_spread_pct") {
        out.push(format!("spread {v:.1}%"));
    }
    if let Some(v) = f.get("worst_gap_ms") {
        out.push(format!("worst gap {v:.0}ms"));
    }
    if let Some(v) = f.get("work_per_worker_per_s") {
        out.push(format!("work {v:.0}/s per worker"));
    }
    if out.is_empty() {
        "-".into()
    } else {
        out.join(" · ")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn full_reasons_are_found_above_test_and_ktstr_test_functions() {
        let src = r#"
/// Docs.
#[ignore = "full: 50 restores; run with cargo xtask test --full"]
#[test]
fn fifty() {}

#[ignore = "full: one VM, 135 s; run with cargo xtask test --full"]
#[ktstr_test(
    llcs = 2,
    duration_s = 1
)]
fn every_scenario(ctx: &Ctx) -> Result<AssertResult> {}

#[ignore = "gauntlet variant"]
#[test]
fn not_full() {}
"#;
        let mut got = std::collections::BTreeMap::new();
        super::full_reasons_in(src, &mut got);
        let want: std::collections::BTreeMap<String, String> = [
            ("fifty".to_string(), "50 restores".to_string()),
            ("every_scenario".to_string(), "one VM, 135 s".to_string()),
        ]
        .into();
        assert_eq!(got, want);
    }

    /// The workspace's own `full:` tests all have a reason the xtask finds
    /// (one per file kind: plain #[test], #[ktstr_test], inside macro_rules).
    #[test]
    fn the_workspace_full_tests_have_reasons() {
        let reasons = super::full_reasons(&super::workspace());
        for name in [
            "kvm_linux_boot_stress",
            "a_saved_guest_restores_many_times_each_fresh",
            "every_scenario_passes_under_eevdf_on_two_llcs",
            "steady_1n2l2c1t",
            "replace_1n2l2c2t",
        ] {
            assert!(reasons.contains_key(name), "{name}: {reasons:?}");
        }
        assert!(
            reasons
                .values()
                .all(|r| !r.is_empty() && !r.contains("--full"))
        );
    }

    #[test]
    fn left_out_lists_the_mismatches_with_their_reason() {
        let listed = serde_json::json!({"rust-suites": {
            "ktstr-vmm::kvm_linux": {"testcases": {
                "kvm_linux_boot_stress": {"filter-match": {"status": "mismatch", "reason": "ignored"}},
                "kvm_linux_smoke": {"filter-match": {"status": "matches"}},
                "smoke::gauntlet::tiny": {"filter-match": {"status": "mismatch", "reason": "ignored"}},
            }},
            "ktstr-cargo::scratch": {"testcases": {
                "scratch": {"filter-match": {"status": "mismatch", "reason": "default-filter"}},
            }},
        }});
        assert_eq!(
            super::left_out(&listed),
            vec![
                (
                    "ktstr-cargo::scratch".into(),
                    "scratch".into(),
                    "default-filter".into()
                ),
                (
                    "ktstr-vmm::kvm_linux".into(),
                    "kvm_linux_boot_stress".into(),
                    "ignored".into()
                ),
            ]
        );
    }

    #[test]
    fn key_figures_are_shown_when_measured() {
        let f = [
            ("fairness_spread_pct".to_string(), 12.04),
            ("worst_gap_ms".to_string(), 31.2),
            ("work_per_worker_per_s".to_string(), 1510.4),
        ]
        .into();
        assert_eq!(
            super::key_figures(&f),
            "spread 12.0% · worst gap 31ms · work 1510/s per worker"
        );
        assert_eq!(super::key_figures(&Default::default()), "-");
    }
}
