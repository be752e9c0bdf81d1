//! `cargo ktstr verifier`: load a scheduler on one or more kernels, print the verifier's
//! cost of each BPF program (program × kernel), and gate it against a baseline file.
//!
//! Each kernel boots one VM running [`verifier_load`] (registered here, so this binary is
//! the guest's init) with the scheduler in place of its declared one (`KTSTR_SCHEDULER`).
//! The guest reports its programs' `bpf_prog_info` after attaching; the figures come back in
//! the run's record (`bpf_progs`), read from a results file of this command's own.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use argh::FromArgs;
use ktstr::prelude::*;
use ktstr::test_support::{Outcome, RunOptions, run};
use ktstr_record::{Baseline, BaselineEntry, ProgStats, RunRecord};

use crate::Done;
use crate::error::CmdError;

/// Print each BPF program's verifier cost (instructions processed, verified size, JIT
/// size, load time) per kernel, and fail when a program grew past the baseline (default
/// 10%, per program `max_growth_pct`) or comes within 10% of the verifier's 1M-instruction
/// limit.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "verifier")]
pub struct VerifierCmd {
    #[argh(option)]
    /// the scheduler: a binary's path, or the name of one installed in the ktstr cache
    /// (<cache>/schedulers/bin/NAME, as `cargo xtask schedulers` puts them)
    scheduler: String,
    #[argh(option)]
    /// arguments for the scheduler, split at whitespace
    sched_args: Option<String>,
    #[argh(option)]
    /// kernel to load it on (repeatable; default: KTSTR_KERNEL, then the newest cached)
    kernel: Vec<ktstr_kernel::KernelSpec>,
    #[argh(option)]
    /// baseline file (JSON) to compare against
    baseline: Option<PathBuf>,
    #[argh(switch)]
    /// write the measured figures into --baseline (keeping per-program thresholds)
    update_baseline: bool,
}

/// Declared only to be replaced by `KTSTR_SCHEDULER`; verification of a big scheduler
/// under a software CPU takes minutes.
const PLACEHOLDER: Scheduler = Scheduler::named("verifier")
    .binary(SchedulerSpec::Path(
        "/nonexistent/replaced-by-KTSTR_SCHEDULER",
    ))
    .attach_timeout_s(600);

/// The registered name of [`verifier_load`].
const TEST: &str = concat!(module_path!(), "::verifier_load");

/// Attach the scheduler and stop: the guest reports its programs after the body.
#[ktstr_test(harness_fixture = true, scheduler = PLACEHOLDER, duration_s = 1,
             watchdog_timeout_s = 900, auto_repro = false)]
fn verifier_load(_ctx: &Ctx) -> Result<AssertResult> {
    Ok(AssertResult::pass())
}

/// Why a kernel has no figures.
#[derive(Debug, thiserror::Error)]
enum NotMeasured {
    /// The test failed: the first lines of its failure.
    #[error("{text}")]
    Failed {
        /// The failure's first lines, as the test reported them.
        text: String,
    },
    /// The guest reported no program.
    #[error("the guest reported no BPF programs (did the scheduler attach?)")]
    NoPrograms,
}

/// One kernel's figures, or why there are none.
struct Measured {
    kernel: String,
    progs: Result<Vec<ProgStats>, NotMeasured>,
}

pub fn verifier(cmd: &VerifierCmd) -> Result<Done, CmdError> {
    if cmd.update_baseline && cmd.baseline.is_none() {
        return Err(CmdError::UpdateNeedsBaseline);
    }
    let host0 = ktstr::config::HostConfig::from_env()?;
    let binary = scheduler_binary(&cmd.scheduler, &host0.cache_root)?;
    let sched = binary.file_name().map_or_else(
        || cmd.scheduler.clone(),
        |n| n.to_string_lossy().into_owned(),
    );
    let results = std::env::temp_dir().join(format!("ktstr-verifier-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&results);
    // SAFETY: no other thread runs yet (nothing has been spawned; the host
    // configuration that reads these is resolved after this, once).
    unsafe {
        std::env::set_var("KTSTR_SCHEDULER", &binary);
        std::env::set_var("KTSTR_SCHED_ARGS", cmd.sched_args.as_deref().unwrap_or(""));
        std::env::set_var("KTSTR_RESULTS", &results);
        std::env::set_var("KTSTR_AUTO_REPRO", "0");
    }
    let specs: Vec<Option<&ktstr_kernel::KernelSpec>> = if cmd.kernel.is_empty() {
        vec![None]
    } else {
        cmd.kernel.iter().map(Some).collect()
    };
    let mut measured = Vec::new();
    for spec in specs {
        let kernel = host0.resolve_kernel(spec)?;
        eprintln!(
            "cargo ktstr verifier: loading {} on {}",
            binary.display(),
            kernel.vmlinux.display()
        );
        let before = read_records(&results).len();
        // The cache entry, not its vmlinux: the kernel's config comes with it
        // (libbpf's __kconfig externs read it in the guest).
        let entry = kernel.vmlinux.parent().unwrap_or(&kernel.vmlinux);
        let opts = RunOptions {
            kernel: Some(entry),
            ..RunOptions::default()
        };
        let outcome = run(TEST, &opts).outcome();
        let records = read_records(&results);
        let record = records.get(before..).and_then(|r| r.last());
        let label = record
            .and_then(RunRecord::kernel_label)
            .map_or_else(|| kernel.vmlinux.display().to_string(), str::to_string);
        let progs = match (&outcome, record) {
            (Outcome::Fail(text), _) => Err(NotMeasured::Failed {
                text: text.lines().take(12).collect::<Vec<_>>().join("\n"),
            }),
            (_, Some(r)) if !r.bpf_progs.is_empty() => Ok(r.bpf_progs.clone()),
            _ => Err(NotMeasured::NoPrograms),
        };
        measured.push(Measured {
            kernel: label,
            progs,
        });
    }
    let _ = std::fs::remove_file(&results);
    print!("{}", table(&sched, &measured));
    let mut failed: Vec<String> = measured
        .iter()
        .filter_map(|m| {
            m.progs
                .as_ref()
                .err()
                .map(|e| format!("{} on {}: {e}", sched, m.kernel))
        })
        .collect();
    let figures = keyed(&sched, &measured);
    if let Some(path) = &cmd.baseline {
        let mut baseline = read_baseline(path, cmd.update_baseline)?;
        if cmd.update_baseline {
            for (k, &insns) in &figures {
                let keep = baseline.programs.get(k).and_then(|e| e.max_growth_pct);
                baseline.programs.insert(
                    k.clone(),
                    BaselineEntry {
                        insns,
                        max_growth_pct: keep,
                    },
                );
            }
            let text =
                serde_json::to_string_pretty(&baseline).map_err(|source| CmdError::Serialize {
                    what: "the baseline",
                    source,
                })?;
            std::fs::write(path, text + "\n").map_err(|e| CmdError::io(path, e))?;
            eprintln!(
                "cargo ktstr verifier: wrote {} programs to {}",
                figures.len(),
                path.display()
            );
        } else {
            failed.extend(
                ktstr_record::gate(&figures, &baseline)
                    .into_iter()
                    .map(|f| format!("{}: {}", f.key, f.why)),
            );
        }
    } else {
        failed.extend(
            ktstr_record::gate(&figures, &Baseline::default())
                .into_iter()
                .map(|f| format!("{}: {}", f.key, f.why)),
        );
    }
    if failed.is_empty() {
        Ok(Done::Ok)
    } else {
        Ok(Done::Failed(format!(
            "the verifier gate failed:\n  {}",
            failed.join("\n  ")
        )))
    }
}

/// `name` as a path, else as a scheduler installed in the cache.
fn scheduler_binary(name: &str, cache_root: &Path) -> Result<PathBuf, CmdError> {
    let p = PathBuf::from(name);
    if p.is_file() {
        return std::path::absolute(&p).map_err(|e| CmdError::io(p, e));
    }
    let installed = cache_root.join("schedulers/bin").join(name);
    if installed.is_file() {
        return Ok(installed);
    }
    Err(CmdError::SchedulerNotFound {
        name: name.to_string(),
        installed,
    })
}

fn read_records(path: &Path) -> Vec<RunRecord> {
    if !path.is_file() {
        return Vec::new();
    }
    ktstr_record::read_lines(path)
        .map(|v| v.into_iter().filter_map(Result::ok).collect())
        .unwrap_or_default()
}

fn read_baseline(path: &Path, may_be_missing: bool) -> Result<Baseline, CmdError> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text).map_err(|source| CmdError::BadBaseline {
            path: path.to_path_buf(),
            source,
        }),
        Err(e) if may_be_missing && e.kind() == std::io::ErrorKind::NotFound => {
            Ok(Baseline::default())
        }
        Err(e) => Err(CmdError::io(path, e)),
    }
}

/// `<sched>/<prog>@<kernel>` to instructions processed.
fn keyed(sched: &str, measured: &[Measured]) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for m in measured {
        for p in m.progs.iter().flatten() {
            out.insert(format!("{sched}/{}@{}", p.name, m.kernel), p.verified_insns);
        }
    }
    out
}

/// Programs as rows, kernels as columns: instructions processed, states, peak states,
/// verified size, JIT size and the verifier's time.
fn table(sched: &str, measured: &[Measured]) -> String {
    let mut progs: Vec<&str> = measured
        .iter()
        .flat_map(|m| m.progs.iter().flatten().map(|p| p.name.as_str()))
        .collect();
    progs.sort_unstable();
    progs.dedup();
    let mut out = format!(
        "{sched}: instructions processed / states / peak states / verified size (insns) / \
         JIT bytes / verify ms\n{:<18}",
        "program"
    );
    for m in measured {
        out.push_str(&format!(" {:>36}", m.kernel));
    }
    out.push('\n');
    for name in &progs {
        out.push_str(&format!("{name:<18}"));
        for m in measured {
            let cell = match &m.progs {
                Ok(ps) => ps
                    .iter()
                    .find(|p| p.name == *name)
                    .map_or_else(|| "-".to_string(), |p| p.cells()[..6].join(" / ")),
                Err(_) => "(failed)".into(),
            };
            out.push_str(&format!(" {cell:>36}"));
        }
        out.push('\n');
    }
    let total = |m: &Measured| -> u64 { m.progs.iter().flatten().map(|p| p.verified_insns).sum() };
    out.push_str(&format!("{:<18}", "total processed"));
    for m in measured {
        out.push_str(&format!(" {:>36}", total(m)));
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prog(name: &str, insns: u64) -> ProgStats {
        ProgStats {
            name: name.into(),
            prog_type: 27,
            verified_insns: insns,
            xlated_insns: insns / 2,
            jited_bytes: insns * 4,
            states: None,
            peak_states: Some(insns / 10),
            verify_ms: Some(1.5),
            load_ms: None,
        }
    }

    #[test]
    fn the_table_has_a_row_per_program_and_a_column_per_kernel() {
        let m = [
            Measured {
                kernel: "6.18.15".into(),
                progs: Ok(vec![prog("ktstr_enqueue", 100), prog("ktstr_init", 20)]),
            },
            Measured {
                kernel: "7.1.3".into(),
                progs: Err(NotMeasured::Failed {
                    text: "rejected".into(),
                }),
            },
        ];
        let t = table("scx-ktstr", &m);
        assert!(t.contains("ktstr_enqueue"), "{t}");
        assert!(t.contains("100 / - / 10 / 50 / 400 / 1.5"), "{t}");
        assert!(t.contains("(failed)"), "{t}");
        assert!(t.lines().last().is_some_and(|l| l.contains("120")), "{t}");
        let k = keyed("scx-ktstr", &m);
        assert_eq!(k.get("scx-ktstr/ktstr_enqueue@6.18.15"), Some(&100));
        assert_eq!(k.len(), 2);
    }

    #[test]
    fn a_missing_scheduler_names_where_it_was_looked_for() {
        let e = scheduler_binary("no-such-sched", Path::new("/nonexistent"))
            .expect_err("missing")
            .to_string();
        assert!(
            e.contains("/nonexistent/schedulers/bin/no-such-sched"),
            "{e}"
        );
    }

    #[test]
    fn a_malformed_baseline_names_the_file_and_the_format() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("b.json");
        std::fs::write(&p, "{not json").expect("write");
        let e = read_baseline(&p, false).expect_err("malformed").to_string();
        assert!(
            e.contains("b.json") && e.contains("--update-baseline"),
            "{e}"
        );
        assert!(read_baseline(&dir.path().join("none.json"), true).is_ok());
    }
}
