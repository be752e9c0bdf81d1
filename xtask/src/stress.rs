//! `cargo xtask stress-boots`: boot VMs over and over under the suite's own
//! slot policy and count what went wrong — boots that never ran their
//! command (stalls), kernel oopses and panics — with the console at full
//! log level so nothing the kernel says is hidden by `quiet`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use argh::FromArgs;
use ktstr::shell::{ShellError, ShellOptions};
use ktstr_topology::Topology;

/// What `cargo xtask stress-boots` failed with.
#[derive(Debug, thiserror::Error)]
pub enum StressError {
    /// The guest agent (the ktstr binary) could not be built.
    #[error(transparent)]
    Agent(#[from] crate::bench::BenchError),
    #[error(transparent)]
    Config(#[from] ktstr::config::ConfigError),
    /// A topology of `--topologies` that does not parse.
    #[error("topology {topology:?}")]
    Topology {
        /// The topology as given.
        topology: String,
        #[source]
        source: ktstr_topology::TopologyError,
    },
    /// No boot asked for.
    #[error("nothing to boot: give --count > 0 and at least one topology")]
    Nothing,
    /// Some boots stalled, oopsed or failed (each was printed).
    #[error("{bad} of {total} boots went wrong")]
    WentWrong {
        /// The boots that went wrong.
        bad: usize,
        /// All boots.
        total: usize,
    },
}

/// Boot VMs repeatedly (topologies in turn, several at once under the host
/// slots) and report stalls, oopses and panics.
#[derive(FromArgs)]
#[argh(subcommand, name = "stress-boots")]
pub struct StressCmd {
    /// boots in all (default 100)
    #[argh(option, default = "100")]
    count: usize,
    /// comma-separated topologies booted in turn (default 1n3l2c1t,1n2l2c2t)
    #[argh(option, default = "String::from(\"1n3l2c1t,1n2l2c2t\")")]
    topologies: String,
    /// VMs started at once (default 3); the host slots decide how many run
    #[argh(option, default = "3")]
    parallel: usize,
    /// seconds a VM may take to boot and run `true` before it counts as stalled
    #[argh(option, default = "90")]
    timeout_s: u64,
}

/// How one boot ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ending {
    Ok,
    Stall(String),
    Oops(String),
    Error(String),
}

/// Kernel messages that mean the guest kernel went wrong.
const BAD: &[&str] = &[
    "Oops",
    "BUG:",
    "Kernel panic",
    "int3",
    "general protection fault",
    "self-detected stall",
    "soft lockup",
    "hung_task",
    "WARNING:",
];

fn classify(result: Result<i32, ShellError>, console: &str) -> Ending {
    if let Some(line) = console.lines().find(|l| BAD.iter().any(|b| l.contains(b))) {
        return Ending::Oops(line.trim().to_string());
    }
    match result {
        Ok(0) => Ending::Ok,
        Ok(rc) => Ending::Error(format!("the command exited {rc}")),
        Err(ShellError::GuestDied { reason }) => Ending::Stall(format!(
            "{reason}; last console line: {}",
            console.lines().last().unwrap_or("(none)")
        )),
        Err(e) => Ending::Error(e.to_string()),
    }
}

pub fn run(cmd: &StressCmd) -> Result<(), StressError> {
    let agent = crate::bench::build_ktstr()?;
    let host = crate::host()?;
    let topologies: Vec<Topology> = cmd
        .topologies
        .split(',')
        .map(|t| {
            t.trim().parse().map_err(|source| StressError::Topology {
                topology: t.to_string(),
                source,
            })
        })
        .collect::<Result<_, _>>()?;
    if topologies.is_empty() || cmd.count == 0 {
        return Err(StressError::Nothing);
    }
    println!(
        "stress-boots: {} boots of {} on {} host CPUs ({} at once), TCG mode {:?}",
        cmd.count, cmd.topologies, host.host_cpus, cmd.parallel, host.tcg
    );
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, Topology, Ending, Duration)>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..cmd.parallel.max(1) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= cmd.count {
                        break;
                    }
                    let topology = topologies[i % topologies.len()];
                    let opts = ShellOptions {
                        topology,
                        kernel: None,
                        exec: Some("true".into()),
                        timeout: Some(Duration::from_secs(cmd.timeout_s)),
                        verbose: true,
                        include: vec![],
                        agent: Some(agent.clone()),
                        kernel_args: "loglevel=7".into(),
                    };
                    let t0 = Instant::now();
                    let mut out = Vec::new();
                    let mut console = Vec::new();
                    let result = ktstr::shell::run(&opts, host, &mut out, &mut console);
                    let took = t0.elapsed();
                    let ending = classify(result, &String::from_utf8_lossy(&console));
                    if ending != Ending::Ok {
                        println!("stress-boots: boot {i} [{topology}]: {ending:?}");
                    }
                    results
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((i, topology, ending, took));
                }
            });
        }
    });
    let results = results.into_inner().unwrap_or_else(|p| p.into_inner());
    let count = |f: fn(&Ending) -> bool| results.iter().filter(|r| f(&r.2)).count();
    let mut walls: Vec<f64> = results.iter().map(|r| r.3.as_secs_f64()).collect();
    walls.sort_by(f64::total_cmp);
    let ok = count(|e| *e == Ending::Ok);
    let stalls = count(|e| matches!(e, Ending::Stall(_)));
    let oopses = count(|e| matches!(e, Ending::Oops(_)));
    let errors = count(|e| matches!(e, Ending::Error(_)));
    println!(
        "stress-boots: {} boots: {ok} ok, {stalls} stalls, {oopses} oopses/panics/warnings, \
         {errors} other errors; wall per boot median {:.1}s, max {:.1}s (slot waits included)",
        results.len(),
        walls[walls.len() / 2],
        walls[walls.len() - 1]
    );
    if ok == results.len() {
        Ok(())
    } else {
        Err(StressError::WentWrong {
            bad: results.len() - ok,
            total: results.len(),
        })
    }
}
