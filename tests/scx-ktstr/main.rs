//! scx-ktstr: the loader of ktstr's fixture sched_ext scheduler.
//!
//! Attaches the BPF scheduler of `ktstr.bpf.c` (a global FIFO in FULL mode),
//! prints its counters periodically, injects the failure a test asks for
//! (stall, crash, slow dispatch), and on exit prints the kernel's exit info.
//!
//! Output on stdout, one line each, for the harness to parse:
//! ```text
//! scx-ktstr: attached ops=ktstr timeout_ms=3000 pid=123
//! scx-ktstr: nr_enqueued=1042 nr_dispatched=1040 nr_select_cpu=977
//! scx-ktstr: stall requested
//! scx-ktstr: crash requested
//! scx-ktstr: exit kind=SCX_EXIT_ERROR_STALL code=1026 exit_code=0
//! scx-ktstr: exit reason=runnable task stall
//! scx-ktstr: exit msg=kworker/0:1[12] failed to run for 3.104s
//! ```
//! Exit status: 0 after a clean detach (SIGTERM/SIGINT) or a non-error exit
//! kind, 1 when the kernel ejected the scheduler with an error kind
//! (`SCX_EXIT_ERROR*`), 2 when it could not be loaded or attached.

mod bpf;

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use argh::FromArgs;

use crate::bpf::{ExitInfo, Loaded};

/// How often the loader looks at signals, timers and the exit record.
const POLL: Duration = Duration::from_millis(50);
/// How long to wait for ktstr_exit after detaching.
const DETACH_WAIT: Duration = Duration::from_secs(5);
/// The kernel's ceiling on `sched_ext_ops.timeout_ms` (SCX_WATCHDOG_MAX_TIMEOUT,
/// kernel/sched/ext_internal.h).
const MAX_TIMEOUT_MS: u32 = 30_000;
/// When `--race-window-ns` arms the planted race: after the burst of
/// enqueues that attaching causes, which fired it in every run.
const RACE_ARMED_AFTER: Duration = Duration::from_secs(1);
/// `enum scx_exit_kind`: kinds from this value on are errors (SCX_EXIT_ERROR).
const SCX_EXIT_ERROR: i32 = 1024;

/// ktstr's fixture sched_ext scheduler: a global FIFO that schedules every
/// fair task, with switches to make it stall, crash or dispatch slowly.
#[derive(FromArgs, Debug, PartialEq)]
struct Args {
    /// stop dispatching SECS seconds after attaching, so the kernel's
    /// watchdog ejects the scheduler with SCX_EXIT_ERROR_STALL
    #[argh(option, arg_name = "SECS")]
    stall_after: Option<f64>,

    /// call scx_bpf_error() SECS seconds after attaching
    /// (SCX_EXIT_ERROR_BPF, message "scx-ktstr: crash requested ...")
    #[argh(option, arg_name = "SECS")]
    crash_after: Option<f64>,

    /// spin in ktstr_dispatch before each pull (see --slow-us)
    #[argh(switch)]
    slow: bool,

    /// plant a fairness bug: tasks with odd pids get a 4x longer slice
    /// (8 ms) than tasks with even pids (2 ms)
    #[argh(switch)]
    unfair: bool,

    /// dispatch as usual but never count it in nr_dispatched (a planted
    /// bind-without-dispatch regression for the host's monitor)
    #[argh(switch)]
    no_dispatch_count: bool,

    /// make ktstr_init fail, so the kernel ejects the scheduler while it
    /// attaches (SCX_EXIT_ERROR, "ops.init() failed") and the loader exits
    #[argh(switch)]
    fail_init: bool,

    /// load the copy of the BPF object with a planted verifier-complexity
    /// regression (an unrolled loop in ktstr_enqueue), for the verifier gate
    #[argh(switch)]
    planted_complexity: bool,

    /// load the copy of the BPF object the verifier rejects (a scalar
    /// dereferenced in ktstr_enqueue), for the failure text of a rejection
    #[argh(switch)]
    planted_reject: bool,

    /// load the copy of the BPF object with a BPF arena (64 pages, 5 of them
    /// allocated at init), for the failure dump's arena page count
    #[argh(switch)]
    arena: bool,

    /// plant a race: the scheduler errors out when two CPUs enqueue within
    /// NS nanoseconds of each other (armed one second after attaching, when
    /// the start-up burst is over); whether it does depends on timing, so
    /// some runs crash and others do not
    #[argh(option, arg_name = "NS")]
    race_window_ns: Option<u64>,

    /// write VALUE into the BPF global `ktstr_mark` once, after attaching
    /// (never printed: the host's monitor reads it from guest memory)
    #[argh(option, arg_name = "VALUE")]
    mark: Option<u64>,

    /// plant a placement bug: a user task with pid P runs only on CPU
    /// CPUS[P % n] (a comma-separated list, repeats allowed, at most 16),
    /// never migrated; 0,1,0,1,0,1,2,3 on two nodes of two CPUs crowds six of
    /// eight consecutive pids onto node 0, as a NUMA-blind scheduler would
    #[argh(option, arg_name = "CPUS")]
    pin_by_pid: Option<String>,

    /// dispatch latency of --slow in microseconds (default 1000, at most 10000)
    #[argh(option, arg_name = "US", default = "1000")]
    slow_us: u64,

    /// sched_ext watchdog timeout of the ops in milliseconds (default 3000,
    /// at most 30000)
    #[argh(option, arg_name = "MS", default = "3000")]
    timeout_ms: u32,

    /// print the counters every MS milliseconds, 0 for never (default 1000)
    #[argh(option, arg_name = "MS", default = "1000")]
    stats_interval_ms: u64,
}

/// The validated run-time configuration.
#[derive(Debug, PartialEq)]
struct Config {
    stall_after: Option<Duration>,
    crash_after: Option<Duration>,
    slow_ns: u64,
    unfair: bool,
    no_dispatch_count: bool,
    fail_init: bool,
    variant: bpf::Variant,
    mark: Option<u64>,
    race_ns: Option<u64>,
    pin_by_pid: Vec<u32>,
    timeout_ms: u32,
    stats_interval: Option<Duration>,
}

impl Config {
    fn from_args(args: &Args) -> Result<Self> {
        if args.timeout_ms == 0 || args.timeout_ms > MAX_TIMEOUT_MS {
            bail!(
                "--timeout-ms {} is out of range: the kernel takes 1..={MAX_TIMEOUT_MS}",
                args.timeout_ms
            );
        }
        if args.slow_us > 10_000 {
            bail!("--slow-us {} is too long: at most 10000", args.slow_us);
        }
        Ok(Self {
            stall_after: seconds("--stall-after", args.stall_after)?,
            crash_after: seconds("--crash-after", args.crash_after)?,
            slow_ns: if args.slow { args.slow_us * 1000 } else { 0 },
            unfair: args.unfair,
            no_dispatch_count: args.no_dispatch_count,
            fail_init: args.fail_init,
            variant: match (args.planted_complexity, args.planted_reject, args.arena) {
                (false, false, false) => bpf::Variant::Plain,
                (true, false, false) => bpf::Variant::PlantedComplexity,
                (false, true, false) => bpf::Variant::PlantedReject,
                (false, false, true) => bpf::Variant::Arena,
                _ => bail!("--planted-complexity, --planted-reject and --arena exclude each other"),
            },
            mark: args.mark,
            race_ns: args.race_window_ns.filter(|n| *n > 0),
            pin_by_pid: pin_list(args.pin_by_pid.as_deref())?,
            timeout_ms: args.timeout_ms,
            stats_interval: (args.stats_interval_ms > 0)
                .then(|| Duration::from_millis(args.stats_interval_ms)),
        })
    }
}

/// The CPUs of `--pin-by-pid`: each a CPU this machine has.
fn pin_list(value: Option<&str>) -> Result<Vec<u32>> {
    let Some(v) = value else {
        return Ok(Vec::new());
    };
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let list = v
        .split(',')
        .map(|c| {
            let cpu: u32 = c.trim().parse().with_context(|| {
                format!("--pin-by-pid {v}: {c:?} is not a CPU number (write e.g. 0,1,0,1)")
            })?;
            ensure!(
                (cpu as usize) < cpus,
                "--pin-by-pid {v}: CPU {cpu} does not exist (this machine has CPUs 0-{})",
                cpus - 1
            );
            Ok(cpu)
        })
        .collect::<Result<Vec<u32>>>()?;
    ensure!(
        !list.is_empty() && list.len() <= bpf::PIN_MAX,
        "--pin-by-pid {v}: give 1 to {} CPUs",
        bpf::PIN_MAX
    );
    Ok(list)
}

fn seconds(flag: &str, value: Option<f64>) -> Result<Option<Duration>> {
    value
        .map(|secs| {
            Duration::try_from_secs_f64(secs).map_err(|_| {
                anyhow::anyhow!("{flag} {secs}: give a non-negative number of seconds")
            })
        })
        .transpose()
}

/// The name of an `enum scx_exit_kind` value (kernel/sched/ext_internal.h, 7.3).
fn exit_kind_name(kind: i32) -> &'static str {
    match kind {
        0 => "SCX_EXIT_NONE",
        1 => "SCX_EXIT_DONE",
        64 => "SCX_EXIT_UNREG",
        65 => "SCX_EXIT_UNREG_BPF",
        66 => "SCX_EXIT_UNREG_KERN",
        67 => "SCX_EXIT_SYSRQ",
        68 => "SCX_EXIT_PARENT",
        69 => "SCX_EXIT_PARENT_KILL",
        1024 => "SCX_EXIT_ERROR",
        1025 => "SCX_EXIT_ERROR_BPF",
        1026 => "SCX_EXIT_ERROR_STALL",
        1027 => "SCX_EXIT_ERROR_REENQ",
        1028 => "SCX_EXIT_ERROR_RESCUE",
        _ => "SCX_EXIT_UNKNOWN",
    }
}

/// The exit lines of the module docs; newlines in the texts become spaces.
fn exit_lines(info: &ExitInfo) -> [String; 3] {
    let one_line = |s: &str| s.replace(['\n', '\r'], " ");
    [
        format!(
            "scx-ktstr: exit kind={} code={} exit_code={}",
            exit_kind_name(info.kind),
            info.kind,
            info.exit_code
        ),
        format!("scx-ktstr: exit reason={}", one_line(&info.reason)),
        format!("scx-ktstr: exit msg={}", one_line(&info.msg)),
    ]
}

static TERMINATE: AtomicBool = AtomicBool::new(false);

extern "C" fn on_terminate(_signal: libc::c_int) {
    TERMINATE.store(true, Ordering::Relaxed);
}

fn install_signal_handlers() -> Result<()> {
    for signal in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: the handler only stores to an atomic, which is
        // async-signal-safe; `signal` replaces no handler Rust relies on.
        let previous =
            unsafe { libc::signal(signal, on_terminate as *const () as libc::sighandler_t) };
        if previous == libc::SIG_ERR {
            bail!(
                "installing the handler of signal {signal}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

/// Why the run loop ended.
enum End {
    Signal,
    Ejected,
}

/// The counters line of the module docs.
fn print_counters(bss: &bpf::Bss<'_>) {
    let (enqueued, dispatched, select_cpu) = bss.counters();
    println!(
        "scx-ktstr: nr_enqueued={enqueued} nr_dispatched={dispatched} nr_select_cpu={select_cpu}"
    );
}

fn run(config: &Config) -> Result<ExitCode> {
    install_signal_handlers()?;
    let mut loaded = Loaded::load(config.timeout_ms, config.variant)?;
    {
        // Before attaching, so not one dispatch is counted or sees no mark.
        let bss = loaded.bss()?;
        if config.no_dispatch_count {
            bss.set_no_count();
        }
        if config.fail_init {
            bss.set_fail_init();
        }
        if let Some(v) = config.mark {
            bss.set_mark(v);
        }
        // ktstr_init creates the per-CPU DSQs when the table is set.
        if !config.pin_by_pid.is_empty() {
            bss.set_pin(&config.pin_by_pid);
        }
    }
    let link = loaded.attach()?;
    let bss = loaded.bss()?;
    if config.slow_ns > 0 {
        bss.set_slow_ns(config.slow_ns);
    }
    if config.unfair {
        bss.set_unfair();
    }
    println!(
        "scx-ktstr: attached ops=ktstr timeout_ms={} pid={}",
        config.timeout_ms,
        std::process::id()
    );

    let start = Instant::now();
    let mut next_stats = config.stats_interval.map(|i| start + i);
    let mut stall = config.stall_after;
    let mut crash = config.crash_after;
    let mut race = config.race_ns.map(|ns| (RACE_ARMED_AFTER, ns));
    let end = loop {
        if TERMINATE.load(Ordering::Relaxed) {
            break End::Signal;
        }
        if bss.exit_info().is_some() {
            break End::Ejected;
        }
        let elapsed = start.elapsed();
        if stall.is_some_and(|at| elapsed >= at) {
            stall = None;
            bss.request_stall();
            println!("scx-ktstr: stall requested");
        }
        if let Some((at, ns)) = race.filter(|(at, _)| elapsed >= *at) {
            race = None;
            bss.set_race_ns(ns);
            println!(
                "scx-ktstr: race armed window_ns={ns} after {:.1}s",
                at.as_secs_f64()
            );
        }
        if crash.is_some_and(|at| elapsed >= at) {
            crash = None;
            bss.request_crash();
            println!("scx-ktstr: crash requested");
        }
        if let (Some(due), Some(interval)) = (next_stats, config.stats_interval) {
            let now = Instant::now();
            if now >= due {
                print_counters(&bss);
                next_stats = Some(now + interval);
            }
        }
        std::thread::sleep(POLL);
    };

    // Detaching runs ktstr_exit (SCX_EXIT_UNREG) unless the kernel already
    // ejected us; either way the record is final once it is marked done.
    drop(link);
    let deadline = Instant::now() + DETACH_WAIT;
    let info = loop {
        if let Some(info) = bss.exit_info() {
            break Some(info);
        }
        if Instant::now() >= deadline {
            break None;
        }
        std::thread::sleep(POLL);
    };
    print_counters(&bss);
    let Some(info) = info else {
        bail!(
            "ktstr_exit never ran within {DETACH_WAIT:?} of detaching ({})",
            match end {
                End::Signal => "after a signal",
                End::Ejected => "after an ejection",
            }
        );
    };
    for line in exit_lines(&info) {
        println!("{line}");
    }
    Ok(if info.kind >= SCX_EXIT_ERROR {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn main() -> ExitCode {
    let args: Args = argh::from_env();
    let outcome = Config::from_args(&args).and_then(|config| run(&config));
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("scx-ktstr: error: {error:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config> {
        let args =
            Args::from_args(&["scx-ktstr"], args).map_err(|e| anyhow::anyhow!("{}", e.output))?;
        Config::from_args(&args)
    }

    #[test]
    fn defaults_are_a_short_watchdog_and_stats_every_second() {
        assert_eq!(
            parse(&[]).expect("no flags parse"),
            Config {
                stall_after: None,
                crash_after: None,
                slow_ns: 0,
                unfair: false,
                no_dispatch_count: false,
                fail_init: false,
                variant: bpf::Variant::Plain,
                mark: None,
                race_ns: None,
                pin_by_pid: Vec::new(),
                timeout_ms: 3000,
                stats_interval: Some(Duration::from_secs(1)),
            }
        );
    }

    #[test]
    fn every_flag_parses() {
        let config = parse(&[
            "--stall-after",
            "1",
            "--crash-after",
            "2.5",
            "--slow",
            "--slow-us",
            "200",
            "--unfair",
            "--no-dispatch-count",
            "--mark",
            "77",
            "--pin-by-pid",
            "0, 0",
            "--timeout-ms",
            "5000",
            "--stats-interval-ms",
            "0",
        ])
        .expect("valid flags parse");
        assert_eq!(
            config,
            Config {
                stall_after: Some(Duration::from_secs(1)),
                crash_after: Some(Duration::from_millis(2500)),
                slow_ns: 200_000,
                unfair: true,
                no_dispatch_count: true,
                fail_init: false,
                variant: bpf::Variant::Plain,
                mark: Some(77),
                race_ns: None,
                pin_by_pid: vec![0, 0],
                timeout_ms: 5000,
                stats_interval: None,
            }
        );
    }

    #[test]
    fn slow_us_alone_adds_no_latency() {
        assert_eq!(parse(&["--slow-us", "100"]).expect("parses").slow_ns, 0);
    }

    #[test]
    fn out_of_range_values_are_refused_with_the_flag_named() {
        for (args, flag) in [
            (&["--timeout-ms", "0"][..], "--timeout-ms"),
            (&["--timeout-ms", "30001"][..], "--timeout-ms"),
            (&["--stall-after", "-1"][..], "--stall-after"),
            (&["--crash-after", "nan"][..], "--crash-after"),
            (&["--slow-us", "10001"][..], "--slow-us"),
            (&["--pin-by-pid", "0,99999"][..], "--pin-by-pid"),
            (&["--pin-by-pid", "0,x"][..], "--pin-by-pid"),
            (
                &["--pin-by-pid", "0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0"][..],
                "--pin-by-pid",
            ),
        ] {
            let error = parse(args).expect_err("out of range").to_string();
            assert!(error.contains(flag), "{args:?}: {error}");
        }
    }

    #[test]
    fn unknown_flags_and_bad_numbers_are_refused() {
        assert!(parse(&["--stall"]).is_err());
        assert!(parse(&["--timeout-ms", "soon"]).is_err());
    }

    #[test]
    fn exit_lines_name_the_kind_and_keep_one_line_each() {
        let lines = exit_lines(&ExitInfo {
            kind: 1026,
            exit_code: 0,
            reason: "runnable task stall".into(),
            msg: "a\nb".into(),
        });
        assert_eq!(
            lines,
            [
                "scx-ktstr: exit kind=SCX_EXIT_ERROR_STALL code=1026 exit_code=0",
                "scx-ktstr: exit reason=runnable task stall",
                "scx-ktstr: exit msg=a b",
            ]
        );
        assert_eq!(exit_kind_name(64), "SCX_EXIT_UNREG");
        assert_eq!(exit_kind_name(7), "SCX_EXIT_UNKNOWN");
    }
}
