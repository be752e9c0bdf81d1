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

use results::{TopologyRun, parse, problems, result_line, summary_table};
use source::{Store, listed_tests};

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

pub fn run(cmd: &KselftestCmd) -> Result<(), String> {
    let host = crate::host()?;
    let topologies = topologies(&cmd.topology)?;
    if let Some(t) = &cmd.test {
        check_filter(t)?;
    }
    let kernel = resolve_kernel(cmd.kernel.as_ref(), cmd.offline)?;
    let release = kernel.release.clone().ok_or_else(|| {
        format!(
            "{}: the kernel's release is unknown, and it names the linux-source package; pass \
             a version (--kernel 7.3), a cache entry or a built kernel tree",
            kernel.vmlinux.display()
        )
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
    const NAMED: usize = 5;
    match failed.len() {
        0 => Ok(()),
        n if n <= NAMED => Err(format!(
            "the sched_ext selftests failed: {}",
            failed.join("; ")
        )),
        n => Err(format!(
            "the sched_ext selftests failed: {}; and {} more (above)",
            failed[..NAMED].join("; "),
            n - NAMED
        )),
    }
}

/// The topologies to run on, by name, parsed.
fn topologies(given: &[String]) -> Result<Vec<(String, Topology)>, String> {
    let names: Vec<String> = if given.is_empty() {
        DEFAULT_TOPOLOGIES.iter().map(|s| s.to_string()).collect()
    } else {
        given.to_vec()
    };
    names
        .into_iter()
        .map(|n| {
            let t: Topology = n
                .parse()
                .map_err(|e| format!("--topology {n}: {e} (use NnLlCcTt such as 1n2l2c1t)"))?;
            nohz_full(t.nr_cpus()).map_err(|e| format!("--topology {n}: {e}"))?;
            Ok((n, t))
        })
        .collect()
}

/// The runner's `-t` goes through the guest's shell: a test name only.
fn check_filter(filter: &str) -> Result<(), String> {
    if !filter.is_empty()
        && filter
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        Ok(())
    } else {
        Err(format!(
            "--test {filter:?}: a test name (or part of one) has letters, digits and `_` only"
        ))
    }
}

/// `nohz_full=` on the upper half of `nr_cpus` CPUs: `nohz_tick` needs one
/// such CPU and a housekeeping CPU besides it (CPU 0 stays one).
fn nohz_full(nr_cpus: u32) -> Result<String, String> {
    if nr_cpus < 2 {
        return Err(format!(
            "{nr_cpus} CPU: nohz_tick needs a nohz_full CPU and a housekeeping CPU, at least 2"
        ));
    }
    let (first, last) = (nr_cpus / 2, nr_cpus - 1);
    Ok(if first == last {
        format!("nohz_full={last}")
    } else {
        format!("nohz_full={first}-{last}")
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
fn resolve_kernel(spec: Option<&KernelSpec>, offline: bool) -> Result<Kernel, String> {
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
            .map_err(|e| e.to_string())?;
            match resolved.as_slice() {
                [one] => Ok(one.kernel.clone()),
                many => Err(format!(
                    "--kernel {s} names {} kernels; the selftests run on one",
                    many.len()
                )),
            }
        }
        other => host.resolve_kernel(other).map_err(|e| e.to_string()),
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
) -> Result<TopologyRun, String> {
    let nohz = nohz_full(topology.nr_cpus())?;
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
    let mut file = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
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
        Err(ShellError::GuestDied { reason }) => Err(format!("the guest died: {reason}")),
        Err(e) => return Err(format!("{name}: {e}")),
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
        assert_eq!(nohz_full(4).as_deref(), Ok("nohz_full=2-3"));
        assert_eq!(nohz_full(8).as_deref(), Ok("nohz_full=4-7"));
        assert_eq!(nohz_full(2).as_deref(), Ok("nohz_full=1"));
        assert_eq!(nohz_full(3).as_deref(), Ok("nohz_full=1-2"));
        assert!(nohz_full(1).is_err());
    }

    #[test]
    fn default_topologies_and_their_errors() {
        let t = topologies(&[]).expect("defaults");
        let names: Vec<&str> = t.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, DEFAULT_TOPOLOGIES);
        assert_eq!(t[2].1.nr_cpus(), 8);
        let err = topologies(&["1n1l1c1t".into()]).expect_err("one CPU");
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
