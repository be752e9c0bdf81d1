//! The guest offers what a distro root offers a BPF scheduler: the kernel
//! config where libbpf looks for it, bpffs, tracefs and debugfs, a PATH and
//! HOME, no cap on locked memory, kernel addresses in /proc/kallsyms. And
//! when a scheduler fails to load, the failure names the likely cause.

use ktstr::prelude::*;
use ktstr::scenario::ops::{HoldSpec, Op, Step, execute_steps};

/// scx-ktstr reads CONFIG_HZ through a __kconfig extern. It declares a file of
/// its own, as a scheduler with a config file would.
const KCONFIG_READER: Scheduler = Scheduler::named("kconfig_reader")
    .binary(SchedulerSpec::Discover("scx-ktstr"))
    .files(&[(CONFIG_FILE_HOST, CONFIG_FILE_GUEST)]);

const CONFIG_FILE_HOST: &str =
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/scheduler.conf");
const CONFIG_FILE_GUEST: &str = "/etc/kconfig_reader/scheduler.conf";

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Every piece of the distro root, checked in the guest.
#[ktstr_test(duration_s = 1)]
fn guest_offers_a_distro_root(_ctx: &Ctx) -> Result<AssertResult> {
    let release = read("/proc/sys/kernel/osrelease").trim().to_string();
    let mut wrong = Vec::new();
    let config = read(&format!("/boot/config-{release}"));
    if !config.lines().any(|l| l == "CONFIG_SCHED_CLASS_EXT=y") {
        wrong.push(format!(
            "/boot/config-{release} is missing or lacks sched_ext"
        ));
    }
    let mounts = read("/proc/mounts");
    for (fs, at) in [
        ("bpf", "/sys/fs/bpf"),
        ("tracefs", "/sys/kernel/tracing"),
        ("debugfs", "/sys/kernel/debug"),
        ("cgroup2", "/sys/fs/cgroup"),
        ("tmpfs", "/tmp"),
        ("tmpfs", "/run"),
    ] {
        if !mounts
            .lines()
            .any(|l| l.split_whitespace().take(3).eq([fs, at, fs]))
        {
            wrong.push(format!("{fs} is not mounted at {at}"));
        }
    }
    if !std::path::Path::new("/sys/kernel/tracing/trace_pipe").exists() {
        wrong.push("no /sys/kernel/tracing/trace_pipe".into());
    }
    for dev in ["/dev/null", "/dev/kmsg"] {
        if std::fs::OpenOptions::new().write(true).open(dev).is_err() {
            wrong.push(format!("{dev} cannot be opened"));
        }
    }
    if !std::env::var("PATH").is_ok_and(|p| p.contains("/usr/bin")) {
        wrong.push(format!("PATH is {:?}", std::env::var("PATH")));
    }
    if std::env::var("HOME").as_deref() != Ok("/root") {
        wrong.push(format!("HOME is {:?}", std::env::var("HOME")));
    }
    let limits = read("/proc/self/limits");
    if !limits
        .lines()
        .any(|l| l.starts_with("Max locked memory") && l.contains("unlimited"))
    {
        wrong.push("RLIMIT_MEMLOCK is capped".into());
    }
    let kallsyms = read("/proc/kallsyms");
    let runqueues = kallsyms.lines().find(|l| l.ends_with(" runqueues"));
    if runqueues.is_none_or(|l| l.starts_with("0000000000000000")) {
        wrong.push(format!("/proc/kallsyms hides addresses: {runqueues:?}"));
    }
    if wrong.is_empty() {
        Ok(AssertResult::pass())
    } else {
        Ok(AssertResult::fail("guest root", wrong.join("; ")))
    }
}

/// Without /boot/config-*, a scheduler with __kconfig externs cannot load,
/// and the failure says why.
#[ktstr_test(
    staged_schedulers = [KCONFIG_READER],
    duration_s = 2,
    expect_err_text = "likely cause: the scheduler reads the kernel config"
)]
fn scheduler_without_the_kernel_config_fails_naming_it(ctx: &Ctx) -> Result<AssertResult> {
    for e in std::fs::read_dir("/boot")?.flatten() {
        if e.file_name().to_string_lossy().starts_with("config-") {
            std::fs::remove_file(e.path())?;
        }
    }
    let hold = HoldSpec::fixed(std::time::Duration::from_millis(200));
    execute_steps(
        ctx,
        vec![Step::new(vec![Op::attach_scheduler(&KCONFIG_READER)], hold)],
    )
}

/// Its twin: with the config in place the same scheduler attaches; its
/// declared file is in the guest, byte for byte.
#[ktstr_test(staged_schedulers = [KCONFIG_READER], duration_s = 2)]
fn scheduler_with_the_kernel_config_attaches(ctx: &Ctx) -> Result<AssertResult> {
    let packed = read(CONFIG_FILE_GUEST);
    if packed != include_str!("fixtures/scheduler.conf") {
        return Ok(AssertResult::fail(
            "scheduler files",
            format!("{CONFIG_FILE_GUEST} holds {packed:?}, not the declared file"),
        ));
    }
    let hold = HoldSpec::fixed(std::time::Duration::from_millis(500));
    execute_steps(
        ctx,
        vec![Step::new(vec![Op::attach_scheduler(&KCONFIG_READER)], hold)],
    )
}

/// CPU time (user + system, in clock ticks) and name of every task in
/// /proc but this process, by pid.
fn task_ticks() -> std::collections::BTreeMap<u32, (String, u64)> {
    let me = std::process::id();
    let mut out = std::collections::BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let stat = read(&format!("/proc/{pid}/stat"));
        // comm is in parentheses and may hold spaces: split after the last ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let f: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        // After the comm: state is field 3 of stat(5); utime and stime are 14 and 15.
        let ticks = |i: usize| {
            f.get(i - 3)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        out.insert(
            pid,
            (stat[open + 1..close].to_string(), ticks(14) + ticks(15)),
        );
    }
    out
}

/// The guest is quiet once init runs: over 2 s of the body, the tasks that are
/// not the test's own (kernel threads, the agent's other threads) use under 5%
/// of the CPUs. The Debian kernel's crypto self-tests used to keep two vCPUs
/// busy for ~7 s after init (the runner now boots with `cryptomgr.notests=1`),
/// which skewed every check run early in a guest; this names any such task.
#[ktstr_test(cores = 2, duration_s = 1)]
fn guest_is_quiet_after_init(ctx: &Ctx) -> Result<AssertResult> {
    const WINDOW: std::time::Duration = std::time::Duration::from_secs(2);
    const LIMIT_PCT: f64 = 5.0;
    // USER_HZ: the unit of /proc/<pid>/stat times on x86.
    const TICKS_PER_S: f64 = 100.0;
    let before = task_ticks();
    std::thread::sleep(WINDOW);
    let after = task_ticks();
    let mut used: Vec<(u64, String, u32)> = after
        .iter()
        .map(|(pid, (comm, t))| {
            let t0 = before.get(pid).map_or(0, |(_, t0)| *t0);
            (t.saturating_sub(t0), comm.clone(), *pid)
        })
        .filter(|(d, ..)| *d > 0)
        .collect();
    used.sort_by_key(|u| std::cmp::Reverse(u.0));
    let total: u64 = used.iter().map(|u| u.0).sum();
    let capacity = WINDOW.as_secs_f64() * f64::from(ctx.topology.nr_cpus()) * TICKS_PER_S;
    let pct = 100.0 * total as f64 / capacity;
    let top: Vec<String> = used
        .iter()
        .take(5)
        .map(|(d, comm, pid)| format!("{comm} (pid {pid}) {} ms", d * 10))
        .collect();
    let msg = format!(
        "other tasks used {pct:.1}% of {} CPUs over {WINDOW:?} (limit {LIMIT_PCT}%); top: {}",
        ctx.topology.nr_cpus(),
        if top.is_empty() {
            "none".to_string()
        } else {
            top.join(", ")
        }
    );
    Ok(if pct < LIMIT_PCT {
        AssertResult::pass().note("quiet", msg)
    } else {
        AssertResult::fail("quiet", msg)
    })
}
