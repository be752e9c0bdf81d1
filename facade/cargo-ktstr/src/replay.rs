//! `cargo ktstr replay`: run a kept recording again and say whether it
//! repeated (ktstr::recording).

use std::path::{Path, PathBuf};

use argh::FromArgs;

use ktstr::monitor::{Answer, Moment, Show, parse_guest_time};
use ktstr_record::MonitorSample;

use crate::Done;
use crate::error::CmdError;
use crate::runs::store_dir;

/// Replay a failing test's recording (kept by `cargo ktstr test --record`):
/// the same kernel, initramfs, seed and clock, run again; says whether the
/// console, the channel's messages and the end repeated, or where they
/// first differed. Exit status 1 when they differed. With --at or --every,
/// the replay stops at those guest times and prints what the monitor reads
/// there (runqueues, DSQs, BPF globals) without changing the run.
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
    #[argh(option)]
    /// a moment to read the guest at: a guest time (4.25s, 4250ms; the
    /// console's clock) or an instruction count (123456789insn); repeatable
    at: Vec<String>,
    #[argh(option)]
    /// read the guest every DURATION of guest time (10ms) from --from to --to,
    /// and write the series for the HTML report and trace.json
    every: Option<String>,
    #[argh(option)]
    /// where --every starts (default 0s)
    from: Option<String>,
    #[argh(option)]
    /// where --every stops (default: the recording's last console line)
    to: Option<String>,
    #[argh(switch)]
    /// run to the one --at moment, then hand the stopped machine to gdb
    /// (prints the gdb command; forward execution only)
    gdb: bool,
    #[argh(option, default = "0")]
    /// the loopback TCP port gdb connects to with --gdb (default: a free one)
    gdb_port: u16,
    #[argh(option, default = "String::from(\"all\")")]
    /// what to print at each moment: rq, dsq, bpf, comma-separated (default
    /// all)
    show: String,
}

/// Most moments one replay reads (`--every` over a long span).
const MAX_MOMENTS: u64 = 100_000;

/// The moments the options ask for, in guest order.
fn moments(c: &ReplayCmd, dir: &Path) -> Result<Vec<Moment>, CmdError> {
    let bad = CmdError::ReplayOption;
    let mut out: Vec<Moment> =
        c.at.iter()
            .map(|a| a.parse::<Moment>().map_err(bad))
            .collect::<Result<_, _>>()?;
    let Some(every) = &c.every else {
        if c.from.is_some() || c.to.is_some() {
            return Err(bad("--from and --to go with --every".into()));
        }
        return Ok(out);
    };
    let every = parse_guest_time(every).map_err(bad)?;
    if every == 0 {
        return Err(bad("--every must be above zero".into()));
    }
    let from = c
        .from
        .as_deref()
        .map(parse_guest_time)
        .transpose()
        .map_err(bad)?
        .unwrap_or(0);
    let to = match c.to.as_deref() {
        Some(t) => parse_guest_time(t).map_err(bad)?,
        None => last_stamp(dir).ok_or_else(|| {
            bad("the recording's console has no timestamp to end --every at; give --to".into())
        })?,
    };
    if to < from {
        return Err(bad("--to is before --from".into()));
    }
    let n = (to - from) / every + 1;
    if n > MAX_MOMENTS {
        return Err(bad(format!(
            "--every {every} ns from {from} to {to} ns is {n} moments, more than {MAX_MOMENTS}"
        )));
    }
    out.extend((0..n).map(|i| Moment::GuestNs(from + i * every)));
    Ok(out)
}

/// The guest clock of the recording's last timestamped console line, ns.
fn last_stamp(dir: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(dir.join(ktstr::recording::CONSOLE)).ok()?;
    let secs = text
        .lines()
        .rev()
        .find_map(ktstr::recording::console_clock)?;
    Some((secs * 1e9) as u64)
}

/// The record's time (seconds from the VM's boot, host clock) of guest
/// time `g`, from the live samples' (guest, host) pairs: the nearest one on
/// the guest clock, plus the rest on the guest's; `g` itself without any.
fn host_time(live: &[(f64, f64)], g: f64) -> f64 {
    live.iter()
        .min_by(|a, b| (a.0 - g).abs().total_cmp(&(b.0 - g).abs()))
        .map_or(g, |(lg, lt)| lt + (g - lg))
}

/// Writes the `--every` series beside the recording: `replay-series.json`
/// (the samples as a run record's monitor series, on the guest clock) and,
/// when the run's record is beside the recording, `replay-trace.json` and
/// `replay-report.html` drawn from a copy of it with that series (moved to
/// the record's clock).
fn write_series(dir: &Path, answers: &[Answer]) -> Result<Vec<PathBuf>, CmdError> {
    let series: Vec<MonitorSample> = answers
        .iter()
        .filter(|a| matches!(a.asked, Moment::GuestNs(_)))
        // A replay's sample is timed by the guest clock (its `elapsed`).
        .map(|a| a.sample.series_point())
        .collect();
    let io = |path: &Path, e: std::io::Error| CmdError::Io {
        path: path.to_path_buf(),
        source: e,
    };
    let path = dir.join("replay-series.json");
    let json = serde_json::to_string_pretty(&series).unwrap_or_default();
    std::fs::write(&path, json).map_err(|e| io(&path, e))?;
    let mut written = vec![path];
    let name = dir.file_name().unwrap_or_default().to_string_lossy();
    let stem = name
        .strip_suffix(ktstr::recording::DIR_SUFFIX)
        .unwrap_or(&name);
    // `<stem>.N.rr` belongs to `<stem>.json` too.
    let base = stem
        .rsplit_once('.')
        .filter(|(_, n)| n.parse::<u32>().is_ok())
        .map_or(stem, |(b, _)| b);
    let record = dir.with_file_name(format!("{base}.json"));
    // Only the record of this very run: a test run N times in one process
    // keeps N recordings but one record, the last run's.
    let own = ktstr_record::read_file(&record).ok().filter(|r| {
        r.recording
            .as_deref()
            .and_then(|p| Path::new(p).file_name())
            .is_some_and(|f| f == dir.file_name().unwrap_or_default())
    });
    if let Some(mut rec) = own {
        // The record's times are from the VM's boot on the host's clock,
        // which runs at another pace than the guest's under instruction
        // counting; the live samples carry both, so each replayed point
        // takes the host time of the live sample nearest on the guest clock.
        let live: Vec<(f64, f64)> = rec
            .monitor
            .iter()
            .flat_map(|m| &m.series)
            .filter_map(|s| Some((s.guest_s?, s.t)))
            .collect();
        let host_t = |g: f64| host_time(&live, g);
        let m = rec.monitor.get_or_insert_with(Default::default);
        m.samples = series.len() as u64;
        m.series = series
            .into_iter()
            .map(|p| MonitorSample {
                t: host_t(p.guest_s.unwrap_or(p.t)),
                ..p
            })
            .collect();
        let recs = [rec];
        let trace = dir.join("replay-trace.json");
        let t = serde_json::to_string(&crate::report::trace(&recs)).unwrap_or_default();
        std::fs::write(&trace, t).map_err(|e| io(&trace, e))?;
        let html = dir.join("replay-report.html");
        std::fs::write(
            &html,
            crate::html::html(&format!("replay of {stem}"), &recs),
        )
        .map_err(|e| io(&html, e))?;
        written.extend([trace, html]);
    }
    Ok(written)
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
    let mut moments = moments(c, &dir)?;
    let gdb = if c.gdb {
        if moments.len() != 1 || c.every.is_some() {
            return Err(CmdError::ReplayOption(
                "--gdb takes the replay to one moment: give one --at (and no --every)".into(),
            ));
        }
        let listener = std::net::TcpListener::bind(("127.0.0.1", c.gdb_port))
            .map_err(|e| CmdError::ReplayOption(format!("--gdb-port {}: {e}", c.gdb_port)))?;
        Some(ktstr::recording::GdbHold {
            at: moments.remove(0),
            listener,
        })
    } else {
        None
    };
    let show: Show = c
        .show
        .parse()
        .map_err(|e| CmdError::ReplayOption(format!("--show: {e}")))?;
    eprintln!("cargo ktstr: replaying {}", dir.display());
    let replayed = ktstr::recording::replay_with(&dir, &moments, gdb)?;
    if let Some(g) = &replayed.gate {
        for a in &g.answers {
            println!("{}", a.text(show));
        }
        if c.every.is_some() {
            for p in write_series(&dir, &g.answers)? {
                println!("wrote {}", p.display());
            }
        }
    }
    println!("{replayed}");
    println!(
        "  compare: cmp {0}/{1} {0}/{2}",
        dir.display(),
        ktstr::recording::CONSOLE,
        ktstr::recording::REPLAY_CONSOLE
    );
    Ok(match (&replayed.divergence, replayed.gdb_at()) {
        (_, Some(_)) | (None, None) => Done::Ok,
        (Some(d), None) => Done::Failed(format!("the replay diverged: {d}")),
    })
}

#[cfg(test)]
mod tests {
    use super::host_time;

    #[test]
    fn a_replayed_time_lands_beside_the_live_sample_nearest_on_the_guest_clock() {
        // The host's clock ran 1 s ahead early on and 3 s behind later.
        let live = [(10.0, 11.0), (20.0, 17.0), (30.0, 27.0)];
        assert_eq!(host_time(&live, 10.5), 11.5);
        assert_eq!(host_time(&live, 21.0), 18.0);
        assert_eq!(host_time(&live, 40.0), 37.0);
        assert_eq!(host_time(&[], 5.0), 5.0);
    }
}
