//! What the kernel says about a task in `/proc/<pid>/schedstat` and
//! `/proc/<pid>/sched`: pure parsers plus the reads.

/// The three fields of `/proc/<pid>/schedstat` (`Documentation/scheduler/sched-stats.rst`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SchedStat {
    /// Time spent on a CPU (`se.sum_exec_runtime`), ns.
    pub cpu_ns: u64,
    /// Time spent runnable but waiting on a run queue, ns.
    pub run_delay_ns: u64,
    /// Number of times the task was run on a CPU (timeslices).
    pub runs: u64,
}

impl SchedStat {
    /// Parses `"<cpu_ns> <run_delay_ns> <runs>\n"`.
    pub(crate) fn parse(text: &str) -> Option<SchedStat> {
        let mut it = text.split_whitespace().map(|f| f.parse::<u64>().ok());
        let s = SchedStat {
            cpu_ns: it.next()??,
            run_delay_ns: it.next()??,
            runs: it.next()??,
        };
        Some(s)
    }

    /// Reads `/proc/<pid>/schedstat`; `None` when the task is gone or the file odd.
    pub(crate) fn read(pid: u32) -> Option<SchedStat> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/schedstat")).ok()?;
        Self::parse(&text)
    }

    /// The growth from `earlier` to `self`, saturating.
    pub(crate) fn since(&self, earlier: &SchedStat) -> SchedStat {
        SchedStat {
            cpu_ns: self.cpu_ns.saturating_sub(earlier.cpu_ns),
            run_delay_ns: self.run_delay_ns.saturating_sub(earlier.run_delay_ns),
            runs: self.runs.saturating_sub(earlier.runs),
        }
    }
}

/// Parses `se.nr_migrations` out of `/proc/<pid>/sched`.
pub(crate) fn parse_nr_migrations(text: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        if key.trim() != "se.nr_migrations" {
            return None;
        }
        value.trim().parse().ok()
    })
}

/// Reads the migration count of `pid`; `None` without `/proc/<pid>/sched`.
pub(crate) fn read_nr_migrations(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/sched")).ok()?;
    parse_nr_migrations(&text)
}

/// Parses a sysfs cache size (`cache/index3/size`: `"32768K"`, `"16M"`) into bytes.
pub(crate) fn parse_cache_size(text: &str) -> Option<usize> {
    let t = text.trim();
    let (num, mult) = match t.as_bytes().last()? {
        b'K' => (&t[..t.len() - 1], 1 << 10),
        b'M' => (&t[..t.len() - 1], 1 << 20),
        b'G' => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    num.parse::<usize>().ok()?.checked_mul(mult)
}

/// The size of the largest cache of CPU 0 (the LLC), from sysfs.
pub(crate) fn llc_bytes() -> Option<usize> {
    let dir = std::path::Path::new("/sys/devices/system/cpu/cpu0/cache");
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("size")).ok())
        .filter_map(|s| parse_cache_size(&s))
        .max()
}

/// For each CPU id, a key its SMT siblings share (package and core id from
/// sysfs); `u32::MAX` where unknown.
pub(crate) fn core_keys() -> Vec<u32> {
    let read = |cpu: usize, f: &str| -> Option<u32> {
        std::fs::read_to_string(format!("/sys/devices/system/cpu/cpu{cpu}/topology/{f}"))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    let mut keys = Vec::new();
    for cpu in 0..ktstr_topology::MAX_CPUS as usize {
        let key = match (read(cpu, "physical_package_id"), read(cpu, "core_id")) {
            (Some(p), Some(c)) => (p << 16) | (c & 0xffff),
            _ => u32::MAX,
        };
        keys.push(key);
    }
    while keys.last() == Some(&u32::MAX) {
        keys.pop();
    }
    keys
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_cache_sizes() {
        assert_eq!(super::parse_cache_size("32768K\n"), Some(32 << 20));
        assert_eq!(super::parse_cache_size("16M"), Some(16 << 20));
        assert_eq!(super::parse_cache_size("512"), Some(512));
        assert_eq!(super::parse_cache_size("lots"), None);
    }

    use super::*;

    #[test]
    fn parses_schedstat() {
        let s = SchedStat::parse("1165133 425359 7\n").expect("valid");
        assert_eq!(
            s,
            SchedStat {
                cpu_ns: 1165133,
                run_delay_ns: 425359,
                runs: 7
            }
        );
        assert_eq!(SchedStat::parse("1 2"), None);
        assert_eq!(SchedStat::parse("a b c"), None);
        let later = SchedStat {
            cpu_ns: 2_000_000,
            run_delay_ns: 425_000,
            runs: 9,
        };
        assert_eq!(later.since(&s).runs, 2);
        assert_eq!(later.since(&s).run_delay_ns, 0);
    }

    #[test]
    fn parses_nr_migrations() {
        let text = "\
sh (123, #threads: 1)
-------------------------------------------------------------------
se.exec_start                                :        263811.437093
se.nr_migrations                             :                   14
nr_switches                                  :                   40
";
        assert_eq!(parse_nr_migrations(text), Some(14));
        assert_eq!(parse_nr_migrations("nr_switches : 3\n"), None);
    }

    #[test]
    fn reads_own_task() {
        let pid = std::process::id();
        assert!(SchedStat::read(pid).is_some(), "/proc/{pid}/schedstat");
    }
}
