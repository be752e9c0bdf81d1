//! `cargo xtask schedulers`: builds published sched_ext schedulers (Rust
//! crates, `cargo install`, nothing changed) into the ktstr cache, where the
//! `real_schedulers` tests find them as `SchedulerSpec::Installed`.
//!
//! Layout below `<cache>/schedulers/`: `<crate>-<version>/bin/<crate>` (one
//! `cargo install --root` per version, never rebuilt), `bin/<crate>` (a link
//! to the version in use), `target/` (one `CARGO_TARGET_DIR` shared by every
//! install, so common dependencies compile once).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use argh::FromArgs;

use crate::error::{CommandError, FileError};

/// What `cargo xtask schedulers` failed with.
#[derive(Debug, thiserror::Error)]
pub enum SchedulersError {
    /// A `--version` pick without `=`.
    #[error("--version {pick:?}: expected NAME=VERSION, e.g. scx_lavd=1.1.4")]
    PickNotNameVersion {
        /// The pick as given.
        pick: String,
    },
    /// A `--version` pick whose version is a range or empty.
    #[error("--version {pick:?}: {version:?} is not an exact version such as 1.1.4")]
    PickNotExact {
        /// The pick as given.
        pick: String,
        /// Its version part.
        version: String,
    },
    /// A `--version` pick of a scheduler the suite does not run.
    #[error(
        "--version {pick:?}: {name} is not one of the suite's schedulers ({}); add it to PINNED \
         in xtask/src/schedulers.rs and to tests/tests/real_schedulers.rs",
        pinned_names()
    )]
    PickUnknown {
        /// The pick as given.
        pick: String,
        /// Its scheduler name.
        name: String,
    },
    /// `--only` names a scheduler the suite does not run.
    #[error("--only {name}: not a pinned scheduler ({})", pinned_names())]
    NotPinned {
        /// The name as given.
        name: String,
    },
    #[error(transparent)]
    Config(#[from] ktstr::config::ConfigError),
    #[error(transparent)]
    File(#[from] FileError),
    /// `PATH` cannot take the LLVM directory in front.
    #[error("PATH with /usr/lib/llvm-19/bin in front")]
    Path(#[source] std::env::JoinPathsError),
    #[error(transparent)]
    Command(#[from] CommandError),
    /// `cargo install` failed, or left no binary.
    #[error(
        "cargo install {name} {version} failed ({status}); its output is above. It needs \
         clang-19, libelf-dev, zlib1g-dev, pkg-config and make (`cargo xtask setup`)"
    )]
    Install {
        /// The crate.
        name: String,
        /// Its version.
        version: String,
        /// How cargo exited.
        status: std::process::ExitStatus,
    },
}

/// The pinned schedulers' names, `a, b, c`.
fn pinned_names() -> String {
    PINNED
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The published schedulers the `--full` suite runs, with the versions checked
/// against the cached kernel (README: "Real schedulers"). The one place their
/// versions are pinned; `--version NAME=VERSION` picks another.
pub const PINNED: &[(&str, &str)] = &[
    ("scx_bpfland", "1.1.4"),
    ("scx_lavd", "1.1.4"),
    ("scx_flash", "1.1.4"),
    ("scx_beerland", "1.1.4"),
    ("scx_p2dq", "1.1.4"),
    ("scx_cosmos", "1.1.7"),
];

/// Build the published sched_ext schedulers of the `--full` suite into the
/// ktstr cache (each version once; `cargo install` into a shared target dir).
#[derive(FromArgs, Default)]
#[argh(subcommand, name = "schedulers")]
pub struct SchedulersCmd {
    /// use another version of a pinned scheduler: NAME=VERSION (repeatable)
    #[argh(option)]
    pub version: Vec<String>,
    /// rebuild even if the version is in the cache
    #[argh(switch)]
    pub force: bool,
    /// build only this scheduler (repeatable; default: every pinned one)
    #[argh(option)]
    pub only: Vec<String>,
    /// build nothing: print the table of the real-scheduler tests in this
    /// results file (written by a run with KTSTR_RESULTS=FILE)
    #[argh(option)]
    pub table: Option<PathBuf>,
}

/// What was built, for the summary.
struct Built {
    name: String,
    version: String,
    secs: Option<f64>,
}

/// The versions to use: the pins, overridden by `--version` picks.
pub fn versions(picks: &[String]) -> Result<Vec<(String, String)>, SchedulersError> {
    let mut out: Vec<(String, String)> = PINNED
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect();
    for p in picks {
        let Some((name, version)) = p.split_once('=') else {
            return Err(SchedulersError::PickNotNameVersion { pick: p.clone() });
        };
        let valid = !version.is_empty()
            && version
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-+".contains(c));
        if !valid {
            return Err(SchedulersError::PickNotExact {
                pick: p.clone(),
                version: version.to_string(),
            });
        }
        match out.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = version.to_string(),
            None => {
                return Err(SchedulersError::PickUnknown {
                    pick: p.clone(),
                    name: name.to_string(),
                });
            }
        }
    }
    Ok(out)
}

/// `<cache>/schedulers`.
pub fn root() -> Result<PathBuf, ktstr::config::ConfigError> {
    Ok(crate::host()?.cache_root.join("schedulers"))
}

/// The version `bin/<name>` links to, if installed.
pub fn installed_version(root: &Path, name: &str) -> Option<String> {
    let target = std::fs::read_link(root.join("bin").join(name)).ok()?;
    // ../<name>-<version>/bin/<name>
    let dir = target.parent()?.parent()?.file_name()?.to_str()?;
    dir.strip_prefix(&format!("{name}-")).map(str::to_string)
}

pub fn run(cmd: &SchedulersCmd) -> Result<(), SchedulersError> {
    if let Some(results) = &cmd.table {
        print_results(results);
        return Ok(());
    }
    let root = root()?;
    let mut wanted = versions(&cmd.version)?;
    if !cmd.only.is_empty() {
        for o in &cmd.only {
            if !wanted.iter().any(|(n, _)| n == o) {
                return Err(SchedulersError::NotPinned { name: o.clone() });
            }
        }
        wanted.retain(|(n, _)| cmd.only.contains(n));
    }
    let bin_dir = root.join("bin");
    std::fs::create_dir_all(&bin_dir).map_err(FileError::at("creating", &bin_dir))?;
    let mut built = Vec::new();
    for (name, version) in &wanted {
        let dir = root.join(format!("{name}-{version}"));
        let bin = dir.join("bin").join(name);
        let secs = if bin.is_file() && !cmd.force {
            println!(
                "schedulers: {name} {version}: in the cache ({})",
                bin.display()
            );
            None
        } else {
            println!("schedulers: {name} {version}: building (cargo install; minutes on 2 cores)");
            let t0 = Instant::now();
            install(&root, name, version, &dir)?;
            let s = t0.elapsed().as_secs_f64();
            println!("schedulers: {name} {version}: built in {s:.0}s");
            Some(s)
        };
        link(&root, name, version)?;
        built.push(Built {
            name: name.clone(),
            version: version.clone(),
            secs,
        });
    }
    println!("\n{:<14} {:<10} build", "SCHEDULER", "VERSION");
    for b in &built {
        let how = b
            .secs
            .map(|s| format!("{s:.0}s"))
            .unwrap_or_else(|| "cached".into());
        println!("{:<14} {:<10} {how}", b.name, b.version);
    }
    Ok(())
}

/// `cargo install` of one exact version into `dir`, under `nice` (the host's
/// two cores are shared with VM tests).
fn install(root: &Path, name: &str, version: &str, dir: &Path) -> Result<(), SchedulersError> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    // The crates' BPF builds call `clang`; Debian ships clang-19 under that
    // name in its LLVM directory.
    let llvm = Path::new("/usr/lib/llvm-19/bin");
    let path = std::env::var_os("PATH").unwrap_or_default();
    let path = std::env::join_paths(
        std::iter::once(llvm.to_path_buf()).chain(std::env::split_paths(&path)),
    )
    .map_err(SchedulersError::Path)?;
    let mut c = Command::new("nice");
    c.args(["-n", "10"])
        .arg(&cargo)
        .args(["install", "--locked", "--force", "--root"])
        .arg(dir)
        .args(["--version", &format!("={version}"), name])
        .env("CARGO_TARGET_DIR", root.join("target"))
        // scx's build scripts (scx_cosmos 1.1.4 on) refuse a host pahole
        // older than 1.26 (bookworm has 1.24): that check is about kernels
        // built on this host, and the kernels here are Debian's.
        .env("SCX_SKIP_PAHOLE_CHECK", "1")
        .env("PATH", path);
    let st = c.status().map_err(|source| CommandError::Spawn {
        command: format!("{cargo:?} install"),
        source,
    })?;
    if st.success() && dir.join("bin").join(name).is_file() {
        Ok(())
    } else {
        Err(SchedulersError::Install {
            name: name.to_string(),
            version: version.to_string(),
            status: st,
        })
    }
}

/// Points `bin/<name>` at `<name>-<version>/bin/<name>`.
fn link(root: &Path, name: &str, version: &str) -> Result<(), FileError> {
    let link = root.join("bin").join(name);
    let target = PathBuf::from("..")
        .join(format!("{name}-{version}"))
        .join("bin")
        .join(name);
    if std::fs::read_link(&link).ok().as_deref() == Some(target.as_path()) {
        return Ok(());
    }
    let tmp = root.join("bin").join(format!(".{name}.new"));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&target, &tmp)
        .and_then(|()| std::fs::rename(&tmp, &link))
        .map_err(FileError::at("linking", &link))
}

/// The table of the real-scheduler tests in a results file (one JSON line
/// per test, `KTSTR_RESULTS`): scheduler, version, topology, test, verdict,
/// key figure.
pub fn print_results(path: &Path) {
    let root = root().ok();
    let rows: Vec<[String; 7]> = crate::test::read_records(path)
        .into_iter()
        .filter_map(|r| {
            let rest = r.test.strip_prefix("real_schedulers::")?;
            let (sched, func) = rest.split_once("::")?;
            let test = func.rsplit_once('_').map_or(func, |(t, _)| t);
            let version = root
                .as_deref()
                .and_then(|root| installed_version(root, sched))
                .unwrap_or_else(|| "?".into());
            Some([
                sched.to_string(),
                version,
                r.topology.clone(),
                test.to_string(),
                r.verdict.to_string(),
                // The VM's own time: the wait for host slots depends on
                // what else the host runs.
                format!("{:.0}s", own_time(&r)),
                key_figure(&details_text(&r)),
            ])
        })
        .collect();
    if rows.is_empty() {
        println!("\n(no real-scheduler test reported a verdict)");
        return;
    }
    // A file that several runs appended to: the last row of each test counts.
    let mut last = std::collections::BTreeMap::new();
    for r in rows {
        last.insert((r[0].clone(), r[2].clone(), r[3].clone()), r);
    }
    let rows: Vec<[String; 7]> = last.into_values().collect();
    println!(
        "\n{:<12} {:<8} {:<9} {:<8} {:<8} {:>5}  KEY FIGURE",
        "SCHEDULER", "VERSION", "TOPOLOGY", "TEST", "VERDICT", "TIME"
    );
    for r in &rows {
        println!(
            "{:<12} {:<8} {:<9} {:<8} {:<8} {:>5}  {}",
            r[0], r[1], r[2], r[3], r[4], r[5], r[6]
        );
    }
}

/// A record's time without its wait for host slots, in seconds.
fn own_time(r: &ktstr_record::RunRecord) -> f64 {
    r.phases_s.total - r.phases_s.slot_wait
}

/// A record's verdict as text: the failure, else one line per check
/// (`· [check] message`, `✗` for a failed one).
fn details_text(r: &ktstr_record::RunRecord) -> String {
    if let Some(f) = &r.failure {
        return f.clone();
    }
    let lines: Vec<String> = r
        .checks
        .iter()
        .map(|c| {
            let mark = if c.failed { '✗' } else { '·' };
            format!("{mark} [{}] {}", c.check, c.message)
        })
        .collect();
    if lines.is_empty() {
        String::new()
    } else {
        format!("pass\n{}", lines.join("\n"))
    }
}

/// The figures of a verdict text that say most: the first failed check if
/// any, else the widest CPU-time spread of a cgroup and the longest gap.
fn key_figure(details: &str) -> String {
    let lines: Vec<&str> = details.lines().map(str::trim).collect();
    let clip = |line: &str| -> String {
        let mut out: String = line.chars().take(90).collect();
        if line.chars().count() > 90 {
            out.push('…');
        }
        out
    };
    if let Some(failed) = lines.iter().find(|l| l.starts_with('✗')) {
        return clip(failed.trim_start_matches(['✗', ' ']));
    }
    let after = |l: &str, key: &str| -> Option<String> {
        let rest = &l[l.find(key)? + key.len()..];
        Some(rest.split_whitespace().next()?.to_string())
    };
    let spread = lines
        .iter()
        .filter_map(|l| after(l, "cpu time spread "))
        .filter_map(|v| Some((v.trim_end_matches('%').parse::<f64>().ok()?, v)))
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, v)| v);
    let gap = lines.iter().find_map(|l| after(l, "longest gap "));
    match (spread, gap) {
        (None, None) => clip(lines.first().copied().unwrap_or_default()),
        (s, g) => format!(
            "cpu-time spread {}, longest gap {}",
            s.as_deref().unwrap_or("?"),
            g.as_deref().unwrap_or("?")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_override_pins_and_bad_picks_name_the_fix() {
        let v = versions(&[]).expect("pins");
        assert_eq!(v.len(), PINNED.len());
        let v = versions(&["scx_lavd=1.0.9".into()]).expect("pick");
        assert!(v.contains(&("scx_lavd".into(), "1.0.9".into())));
        let e = versions(&["scx_nope=1.0".into()]).expect_err("unknown");
        assert!(e.to_string().contains("PINNED"), "{e}");
        assert!(versions(&["scx_lavd".into()]).is_err());
        assert!(versions(&["scx_lavd=^1".into()]).is_err());
    }

    #[test]
    fn the_key_figure_is_the_failure_or_the_spread_and_gap() {
        let pass = "pass\n  · [fairness] cgroup cg_0 (4 spin workers, normal): cpu time spread 0.7% \
                    (threshold 35.0%): w\n  · [fairness] cgroup cg_1: cpu time spread 2.5% (t)\n  \
                    · [max_gap] longest gap 114.54ms (threshold 1.30s), worker 6";
        assert_eq!(
            key_figure(pass),
            "cpu-time spread 2.5%, longest gap 114.54ms"
        );
        let fail = "FAIL\n  · [a] fine\n  ✗ [max_gap] longest gap 3.1s (threshold 1.30s)";
        assert_eq!(
            key_figure(fail),
            "[max_gap] longest gap 3.1s (threshold 1.30s)"
        );
        assert_eq!(key_figure("the guest ended"), "the guest ended");
    }

    #[test]
    fn the_link_says_which_version_is_in_use() {
        let d = std::env::temp_dir().join(format!("ktstr-xtask-sched-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("bin")).expect("mkdir");
        assert_eq!(installed_version(&d, "scx_x"), None);
        link(&d, "scx_x", "1.2.3").expect("link");
        assert_eq!(installed_version(&d, "scx_x").as_deref(), Some("1.2.3"));
        link(&d, "scx_x", "1.2.4").expect("relink");
        assert_eq!(installed_version(&d, "scx_x").as_deref(), Some("1.2.4"));
        let _ = std::fs::remove_dir_all(&d);
    }
}
