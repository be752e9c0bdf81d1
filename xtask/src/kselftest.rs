//! `cargo xtask kselftest`: the kernel's own sched_ext selftests, run in
//! ktstr's guest, as an outside check that the guest is a faithful Linux for
//! sched_ext.
//!
//! The kernel under test (the newest cached, or `--kernel`) names its line
//! (`7.3`); Debian's `linux-source-7.3` is downloaded with the private apt
//! state the kernel fetch uses (`ktstr_kernel::debian::PrivateApt`: nothing
//! is installed on the host), the parts of it the build reaches are unpacked
//! once into the cache, and `tools/testing/selftests/sched_ext` is built
//! against that kernel's vmlinux BTF. The `runner` is cached by kernel
//! release and source version. It runs under the shell agent (`ktstr::shell`,
//! this binary as the guest's init) on each topology, with `nohz_full=` on the
//! upper half of the CPUs so `nohz_tick` runs instead of skipping. Any
//! `not ok`, skip, test that never finished, kernel warning on the console or
//! dead guest fails the command, naming the test.

mod results;
mod source;

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use argh::FromArgs;
use ktstr::shell::{ShellError, ShellOptions};
use ktstr_kernel::{Kernel, KernelSpec};
use ktstr_topology::Topology;

use crate::error::{FileError, KernelCmdError};
use results::{GuestDied, TopologyRun, parse, problems, result_line, summary_table};
use source::{SourceError, Store, listed_tests};

/// What `cargo xtask kselftest` failed with.
#[derive(Debug, thiserror::Error)]
pub enum KselftestError {
    #[error(transparent)]
    Config(#[from] ktstr::config::ConfigError),
    /// A `--topology` that does not parse.
    #[error("--topology {name} (use NnLlCcTt such as 1n2l2c1t)")]
    Topology {
        /// The topology as given.
        name: String,
        #[source]
        source: ktstr_topology::TopologyError,
    },
    /// A topology too small for `nohz_tick`.
    #[error(
        "--topology {name}: {nr_cpus} CPU: nohz_tick needs a nohz_full CPU and a housekeeping \
         CPU, at least 2"
    )]
    TooFewCpus {
        /// The topology as given.
        name: String,
        /// Its CPUs.
        nr_cpus: u32,
    },
    /// A `--test` that is not a test name.
    #[error("--test {filter:?}: a test name (or part of one) has letters, digits and `_` only")]
    Filter {
        /// The filter as given.
        filter: String,
    },
    /// The kernel's release is unknown, and it names the source package.
    #[error(
        "{}: the kernel's release is unknown, and it names the linux-source package; pass a \
         version (--kernel 7.3), a cache entry or a built kernel tree",
        vmlinux.display()
    )]
    NoRelease {
        /// The kernel.
        vmlinux: std::path::PathBuf,
    },
    #[error(transparent)]
    KernelCmd(#[from] KernelCmdError),
    /// A `--kernel` version that names several kernels.
    #[error("--kernel {spec} names {count} kernels; the selftests run on one")]
    SeveralKernels {
        /// The spec as given.
        spec: KernelSpec,
        /// How many it names.
        count: usize,
    },
    #[error(transparent)]
    Kernel(#[from] ktstr_kernel::KernelError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    File(#[from] FileError),
    /// A topology's VM could not be run (not: the guest died).
    #[error("{topology}")]
    Shell {
        /// The topology's name.
        topology: String,
        #[source]
        source: ShellError,
    },
    /// Tests failed; every problem was printed, the first few are named.
    #[error(
        "the sched_ext selftests failed: {}{}",
        problems[..problems.len().min(NAMED)].join("; "),
        match problems.len().saturating_sub(NAMED) {
            0 => String::new(),
            more => format!("; and {more} more (above)"),
        }
    )]
    Failed {
        /// Each problem, `topology: what` (the runner's own words about a
        /// test, from the guest).
        problems: Vec<String>,
    },
}

/// The problems a failure names in its message (all are printed above it).
const NAMED: usize = 5;

/// Build the kernel's sched_ext selftests for the kernel under test (from
/// Debian's linux-source package) and run them in ktstr VMs on several
/// topologies; any failure or skip fails.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "kselftest")]
pub struct KselftestCmd {
    /// the kernel: a version (7.3; fetched if not cached), a build tree or
    /// a cache entry (default: KTSTR_KERNEL, then the newest cached)
    #[argh(option)]
    kernel: Option<KernelSpec>,
    /// a topology to run on, NnLlCcTt (repeatable; default 1n2l2c1t,
    /// 2n2l2c1t, 1n2l2c2t)
    #[argh(option)]
    topology: Vec<String>,
    /// run only the tests whose name contains this (the runner's -t)
    #[argh(option)]
    test: Option<String>,
    /// break the guest on purpose: unmount debugfs before the runner starts
    /// (the tests that need it must then fail the command, by name)
    #[argh(switch)]
    break_debugfs: bool,
    /// kill a topology's VM after this many seconds (default 1800)
    #[argh(option, default = "1800")]
    timeout_s: u64,
    /// use what the cache holds (kernel, source, runner), never the network
    #[argh(switch)]
    offline: bool,
    /// build the runner again even when one is cached
    #[argh(switch)]
    rebuild: bool,
}

impl KselftestCmd {
    /// The command as `cargo xtask test --full` runs it: every test on the
    /// default topologies, with the newest cached kernel.
    pub fn full_suite(offline: bool) -> Self {
        KselftestCmd {
            kernel: None,
            topology: vec![],
            test: None,
            break_debugfs: false,
            timeout_s: 1800,
            offline,
            rebuild: false,
        }
    }
}

/// The topologies of the acceptance run.
const DEFAULT_TOPOLOGIES: [&str; 3] = ["1n2l2c1t", "2n2l2c1t", "1n2l2c2t"];

/// Where the runner is packed in the guest.
const GUEST_RUNNER: &str = "/bin/runner";

/// Console lines that mean the kernel complained while the tests ran (the
/// guest runs with `loglevel=5`, so warnings reach the console).
const CONSOLE_ALARMS: [&str; 5] = [
    "WARNING: CPU:",
    "BUG: ",
    "rcu: INFO:",
    "Oops: ",
    "Kernel panic",
];

fn prefix(line: &str) {
    println!("kselftest: {line}");
}

pub fn run(cmd: &KselftestCmd) -> Result<(), KselftestError> {
    let host = crate::host()?;
    let topologies = topologies(&cmd.topology)?;
    if let Some(t) = &cmd.test {
        check_filter(t)?;
    }
    let kernel = resolve_kernel(cmd.kernel.as_ref(), cmd.offline)?;
    let release = kernel
        .release
        .clone()
        .ok_or_else(|| KselftestError::NoRelease {
            vmlinux: kernel.vmlinux.clone(),
        })?;
    let store = Store::open(&host.cache_root.join("kselftest"))?;
    let runner = store.runner(&kernel, &release, cmd.offline, cmd.rebuild)?;
    prefix(&format!(
        "runner {} (built from {} {} against {release})",
        runner.path.display(),
        runner.package,
        runner.version
    ));
    let expected = listed_tests(&runner.path, cmd.test.as_deref());
    // The cache entry or build tree, so the guest gets the kernel's config.
    let kernel_spec = KernelSpec::Path(
        kernel
            .vmlinux
            .parent()
            .map_or_else(|| kernel.vmlinux.clone(), Path::to_path_buf),
    );
    let mut runs = Vec::new();
    for (name, topology) in &topologies {
        let log = store.dir.join("logs").join(format!("{release}-{name}.log"));
        let run = run_topology(name, *topology, &kernel_spec, &runner.path, cmd, host, &log)?;
        let problems = problems(&run, expected.as_deref());
        let (passed, failed, skipped) = run.report.counts();
        prefix(&format!(
            "{name}: {passed} passed, {failed} failed, {skipped} skipped in {:.1}s{} (log: {})",
            run.wall.as_secs_f64(),
            if run.slot_wait >= Duration::from_secs(1) {
                format!(
                    " after {:.1}s waiting for host slots",
                    run.slot_wait.as_secs_f64()
                )
            } else {
                String::new()
            },
            log.display()
        ));
        for p in &problems {
            prefix(&format!("{name}: {p}"));
        }
        runs.push((run, problems));
    }
    println!("\n{}", summary_table(&runs));
    let failed: Vec<String> = runs
        .iter()
        .flat_map(|(run, problems)| {
            problems
                .iter()
                .map(move |p| format!("{}: {p}", run.topology))
        })
        .collect();
    // Every problem was printed above; the error names the first few.
    if failed.is_empty() {
        Ok(())
    } else {
        Err(KselftestError::Failed { problems: failed })
    }
}

/// The topologies to run on, by name, parsed.
fn topologies(given: &[String]) -> Result<Vec<(String, Topology)>, KselftestError> {
    let names: Vec<String> = if given.is_empty() {
        DEFAULT_TOPOLOGIES.iter().map(|s| s.to_string()).collect()
    } else {
        given.to_vec()
    };
    names
        .into_iter()
        .map(|n| {
            let t: Topology = n.parse().map_err(|source| KselftestError::Topology {
                name: n.clone(),
                source,
            })?;
            nohz_full_of(&n, t)?;
            Ok((n, t))
        })
        .collect()
}

/// The runner's `-t` goes through the guest's shell: a test name only.
fn check_filter(filter: &str) -> Result<(), KselftestError> {
    if !filter.is_empty()
        && filter
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        Ok(())
    } else {
        Err(KselftestError::Filter {
            filter: filter.to_string(),
        })
    }
}

/// `nohz_full=` on the upper half of `nr_cpus` CPUs: `nohz_tick` needs one
/// such CPU and a housekeeping CPU besides it (CPU 0 stays one); `None`
/// with fewer than 2 CPUs.
fn nohz_full(nr_cpus: u32) -> Option<String> {
    if nr_cpus < 2 {
        return None;
    }
    let (first, last) = (nr_cpus / 2, nr_cpus - 1);
    Some(if first == last {
        format!("nohz_full={last}")
    } else {
        format!("nohz_full={first}-{last}")
    })
}

/// [`nohz_full`] of the topology `name`, or why it has too few CPUs.
fn nohz_full_of(name: &str, topology: Topology) -> Result<String, KselftestError> {
    let nr_cpus = topology.nr_cpus();
    nohz_full(nr_cpus).ok_or_else(|| KselftestError::TooFewCpus {
        name: name.to_string(),
        nr_cpus,
    })
}

/// The guest's command: the runner (filtered), after unmounting debugfs when
/// the guest is to be broken on purpose.
fn guest_command(filter: Option<&str>, break_debugfs: bool) -> String {
    let mut cmd = String::new();
    if break_debugfs {
        cmd.push_str("umount /sys/kernel/debug && ");
    }
    cmd.push_str(GUEST_RUNNER);
    if let Some(f) = filter {
        cmd.push_str(" -t ");
        cmd.push_str(f);
    }
    cmd
}

/// The kernel under test: a version is fetched when missing (unless offline),
/// anything else resolves as the shell does.
fn resolve_kernel(spec: Option<&KernelSpec>, offline: bool) -> Result<Kernel, KselftestError> {
    let host = crate::host()?;
    match spec {
        Some(s) if s.is_version() => {
            let resolved = ktstr_kernel::cli::resolve_kernels(
                std::slice::from_ref(s),
                false,
                offline,
                "kselftest",
                &host.kernel_cmd_env(),
            )
            .map_err(KernelCmdError::from)?;
            match resolved.as_slice() {
                [one] => Ok(one.kernel.clone()),
                many => Err(KselftestError::SeveralKernels {
                    spec: s.clone(),
                    count: many.len(),
                }),
            }
        }
        other => Ok(host.resolve_kernel(other)?),
    }
}

/// A `Write` that hands each complete line to a closure.
struct Lines<F: FnMut(&str)> {
    buf: Vec<u8>,
    each: F,
}

impl<F: FnMut(&str)> Lines<F> {
    fn new(each: F) -> Self {
        Lines {
            buf: Vec::new(),
            each,
        }
    }

    /// The last line, if it had no newline.
    fn finish(&mut self) {
        if !self.buf.is_empty() {
            let rest = std::mem::take(&mut self.buf);
            (self.each)(&String::from_utf8_lossy(&rest));
        }
    }
}

impl<F: FnMut(&str)> Write for Lines<F> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        while let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=i).collect();
            let line = String::from_utf8_lossy(&line[..i]);
            (self.each)(line.trim_end_matches('\r'));
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Boots one VM and runs the runner in it, printing each test's result as it
/// comes and keeping the output and the console in `log`.
fn run_topology(
    name: &str,
    topology: Topology,
    kernel: &KernelSpec,
    runner: &Path,
    cmd: &KselftestCmd,
    host: &ktstr::config::HostConfig,
    log: &Path,
) -> Result<TopologyRun, KselftestError> {
    let nohz = nohz_full_of(name, topology)?;
    let opts = ShellOptions {
        topology,
        kernel: Some(kernel.clone()),
        exec: Some(guest_command(cmd.test.as_deref(), cmd.break_debugfs)),
        timeout: Some(Duration::from_secs(cmd.timeout_s)),
        verbose: true,
        include: vec![runner.to_path_buf()],
        agent: None,
        kernel_args: format!("{nohz} loglevel=5"),
    };
    prefix(&format!(
        "{name}: booting ({}, {nohz}): {}",
        topology,
        opts.exec.as_deref().unwrap_or_default()
    ));
    let mut file = std::fs::File::create(log).map_err(FileError::at("creating", log))?;
    let mut output = String::new();
    let mut console = Vec::new();
    let t0 = Instant::now();
    let result = {
        let mut out = Lines::new(|line: &str| {
            if let Some(r) = result_line(line) {
                prefix(&format!("{name}: {r}"));
            }
            output.push_str(line);
            output.push('\n');
        });
        let mut diag = Lines::new(|line: &str| console.push(line.to_string()));
        let r = ktstr::shell::run(&opts, host, &mut out, &mut diag);
        out.finish();
        diag.finish();
        r
    };
    let wall = t0.elapsed();
    let _ = writeln!(file, "{output}\n===== console =====");
    for l in &console {
        let _ = writeln!(file, "{l}");
    }
    let slot_wait = console
        .iter()
        .find_map(|l| l.strip_prefix(ktstr::shell::SLOT_WAIT_PREFIX))
        .and_then(|rest| rest.split('s').next())
        .and_then(|s| s.parse::<f64>().ok())
        .map_or(Duration::ZERO, Duration::from_secs_f64);
    let exit = match result {
        Ok(rc) => Ok(rc),
        Err(ShellError::GuestDied { reason }) => Err(GuestDied {
            reason: reason.to_string(),
        }),
        Err(source) => {
            return Err(KselftestError::Shell {
                topology: name.to_string(),
                source,
            });
        }
    };
    Ok(TopologyRun {
        topology: name.to_string(),
        report: parse(&output),
        exit,
        alarms: alarms(&console),
        wall: wall.saturating_sub(slot_wait),
        slot_wait,
    })
}

/// The console lines that say the kernel complained.
fn alarms(console: &[String]) -> Vec<String> {
    console
        .iter()
        .filter(|l| CONSOLE_ALARMS.iter().any(|a| l.contains(a)))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_alarms_are_kernel_warnings_only() {
        let console = [
            "[   12.1] sched_ext: BPF scheduler \"exit\" disabled (runtime error)",
            "[   13.0] WARNING: CPU: 1 PID: 88 at kernel/sched/ext.c:100 scx_foo+0x1/0x2",
            "[   14.0] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:",
            "[   15.0] BUG: kernel NULL pointer dereference, address: 0000000000000000",
        ]
        .map(String::from);
        assert_eq!(alarms(&console), console[1..]);
    }

    #[test]
    fn nohz_full_takes_the_upper_half() {
        assert_eq!(nohz_full(4).as_deref(), Some("nohz_full=2-3"));
        assert_eq!(nohz_full(8).as_deref(), Some("nohz_full=4-7"));
        assert_eq!(nohz_full(2).as_deref(), Some("nohz_full=1"));
        assert_eq!(nohz_full(3).as_deref(), Some("nohz_full=1-2"));
        assert!(nohz_full(1).is_none());
    }

    #[test]
    fn default_topologies_and_their_errors() {
        let t = topologies(&[]).expect("defaults");
        let names: Vec<&str> = t.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, DEFAULT_TOPOLOGIES);
        assert_eq!(t[2].1.nr_cpus(), 8);
        let err = topologies(&["1n1l1c1t".into()])
            .expect_err("one CPU")
            .to_string();
        assert!(err.contains("at least 2"), "{err}");
        assert!(topologies(&["banana".into()]).is_err());
    }

    #[test]
    fn the_guest_command_and_its_filter() {
        assert_eq!(guest_command(None, false), "/bin/runner");
        assert_eq!(
            guest_command(Some("total_bw"), true),
            "umount /sys/kernel/debug && /bin/runner -t total_bw"
        );
        assert!(check_filter("total_bw").is_ok());
        assert!(check_filter("a; reboot").is_err());
        assert!(check_filter("").is_err());
    }

    #[test]
    fn a_failure_names_the_first_problems_and_counts_the_rest() {
        let failed = |n: usize| KselftestError::Failed {
            problems: (0..n).map(|i| format!("1n2l2c1t: t{i} failed")).collect(),
        };
        assert_eq!(
            failed(2).to_string(),
            "the sched_ext selftests failed: 1n2l2c1t: t0 failed; 1n2l2c1t: t1 failed"
        );
        let seven = failed(7).to_string();
        assert!(seven.contains("t4 failed; and 2 more (above)"), "{seven}");
        assert!(!seven.contains("t5"), "{seven}");
    }

    #[test]
    fn lines_are_handed_over_whole() {
        let mut got = Vec::new();
        {
            let mut w = Lines::new(|l: &str| got.push(l.to_string()));
            w.write_all(b"ok 1 a").expect("write");
            w.write_all(b" # \nnot ok").expect("write");
            w.write_all(b" 2 b # \r\ntail").expect("write");
            w.finish();
        }
        assert_eq!(got, ["ok 1 a # ", "not ok 2 b # ", "tail"]);
    }
}
