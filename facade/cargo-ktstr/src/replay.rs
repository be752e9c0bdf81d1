//! `cargo ktstr replay`: run a kept recording again and say whether it
//! repeated (ktstr::recording).

use std::path::{Path, PathBuf};

use argh::FromArgs;

use crate::Done;
use crate::error::CmdError;
use crate::runs::store_dir;

/// Replay a failing test's recording (kept by `cargo ktstr test --record`):
/// the same kernel, initramfs, seed and clock, run again; says whether the
/// console, the channel's messages and the end repeated, or where they
/// first differed. Exit status 1 when they differed.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "replay")]
pub struct ReplayCmd {
    #[argh(positional)]
    /// the recording: RUN/TEST (TEST as its record file or its name), TEST
    /// (its newest recording) or the recording's directory
    target: Option<String>,
    #[argh(switch)]
    /// list the store's recordings and stop
    list: bool,
    #[argh(option)]
    /// the results store (default: <target dir>/ktstr)
    store: Option<PathBuf>,
}

/// Every recording in the store, oldest run first: (run, directory).
fn recordings(store: &Path) -> Vec<(String, PathBuf)> {
    let mut runs: Vec<PathBuf> = std::fs::read_dir(store.join("runs"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    runs.sort();
    let mut out = Vec::new();
    for run in runs {
        let mut recs: Vec<PathBuf> = std::fs::read_dir(&run)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.join(ktstr::recording::MANIFEST).is_file())
            .collect();
        recs.sort();
        let id = run
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        out.extend(recs.into_iter().map(|r| (id.clone(), r)));
    }
    out
}

/// The directory name a test's recording has (`module.fn.rr`), from either
/// form a user gives: the record file's stem or the test's name.
fn dir_names(test: &str) -> [String; 2] {
    let file = ktstr::results::record_file_name(test, None);
    let stem = file.strip_suffix(".json").unwrap_or(&file).to_string();
    let suffix = ktstr::recording::DIR_SUFFIX;
    [
        format!("{}{suffix}", test.strip_suffix(suffix).unwrap_or(test)),
        format!("{stem}{suffix}"),
    ]
}

fn resolve(store: &Path, target: &str) -> Result<PathBuf, CmdError> {
    let not_found = |looked: PathBuf| CmdError::NoRecording {
        given: target.to_string(),
        looked,
    };
    if let Some((run, test)) = target.split_once('/') {
        let base = store.join("runs").join(run);
        let names = dir_names(test);
        return names
            .iter()
            .map(|n| base.join(n))
            .find(|d| d.join(ktstr::recording::MANIFEST).is_file())
            .ok_or_else(|| not_found(base.join(&names[1])));
    }
    let names = dir_names(target);
    recordings(store)
        .into_iter()
        .rev()
        .map(|(_, d)| d)
        .find(|d| {
            d.file_name()
                .is_some_and(|f| names.iter().any(|n| f == n.as_str()))
        })
        .ok_or_else(|| not_found(store.join("runs").join("*").join(&names[1])))
}

/// The command.
pub fn run(c: &ReplayCmd) -> Result<Done, CmdError> {
    // Only a name needs the store (and so a cargo package to find it in).
    let store = || store_dir(c.store.as_deref());
    let target = match (&c.target, c.list) {
        (Some(t), false) => t,
        _ => {
            let store = store()?;
            let all = recordings(&store);
            if all.is_empty() {
                println!(
                    "no recordings in {} (a recorded run keeps its failing tests' recordings: \
                     cargo ktstr test --record)",
                    store.display()
                );
            }
            for (run, dir) in all {
                let name = dir.file_name().unwrap_or_default().to_string_lossy();
                let test = name
                    .strip_suffix(ktstr::recording::DIR_SUFFIX)
                    .unwrap_or(&name);
                match ktstr::recording::load(&dir) {
                    Ok(m) => println!(
                        "{run}/{test}  {:.1} MB, {:.1}s, ended {}{}",
                        m.size_bytes as f64 / 1e6,
                        m.wall_s,
                        m.end,
                        m.scheduler_exit
                            .map(|x| format!(", {}", x.trim()))
                            .unwrap_or_default()
                    ),
                    Err(e) => println!("{run}/{test}  unreadable: {e}"),
                }
            }
            return Ok(Done::Ok);
        }
    };
    let direct = Path::new(target);
    let dir = if direct.join(ktstr::recording::MANIFEST).is_file() {
        direct.to_path_buf()
    } else {
        resolve(&store()?, target)?
    };
    eprintln!("cargo ktstr: replaying {}", dir.display());
    let replayed = ktstr::recording::replay(&dir)?;
    println!("{replayed}");
    println!(
        "  compare: cmp {0}/{1} {0}/{2}",
        dir.display(),
        ktstr::recording::CONSOLE,
        ktstr::recording::REPLAY_CONSOLE
    );
    Ok(match &replayed.divergence {
        None => Done::Ok,
        Some(d) => Done::Failed(format!("the replay diverged: {d}")),
    })
}
