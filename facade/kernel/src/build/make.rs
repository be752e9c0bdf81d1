//! Running `make` on a kernel tree so people can watch it: `-j` from the
//! host's cores, under `nice`, every line kept in a log, a progress line
//! (build steps done / estimated, elapsed), and the compiler's first error
//! with its `file:line` when it fails.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Build steps of a cold build of linux-source-7.3 with ktstr's fragment on
/// tinyconfig (2047 counted in its log): the estimate before a build
/// directory has a count of its own.
pub const COLD_STEPS_ESTIMATE: u64 = 2050;

/// The same on defconfig (4192 counted): its drivers, file systems and
/// network stack.
pub const DEFCONFIG_STEPS_ESTIMATE: u64 = 4200;

/// The file in a build directory holding the last build's step count.
pub const STEPS_FILE: &str = ".ktstr-steps";

/// Whether a line of kbuild's quiet output is one build step
/// (`  CC      kernel/sched/ext.o`).
pub fn is_step(line: &str) -> bool {
    let Some(rest) = line.strip_prefix("  ") else {
        return false;
    };
    let tag: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
    !tag.is_empty()
        && tag.len() <= 10
        && tag
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && rest.len() > tag.len()
}

/// A compiler or linker error found in the output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirstError {
    /// `file:line` (or `file:line:col`), when the line names one.
    pub location: Option<String>,
    /// The whole line.
    pub line: String,
}

/// The first error of a build's output: a `file:line[:col]: error:` line
/// of the compiler, else the first `error` line (linker, make, objtool).
pub fn first_error<'a>(lines: impl IntoIterator<Item = &'a str>) -> Option<FirstError> {
    let mut fallback = None;
    for line in lines {
        if let Some(loc) = compiler_error_location(line) {
            return Some(FirstError {
                location: Some(loc),
                line: line.trim().to_string(),
            });
        }
        if fallback.is_none()
            && (line.contains("error:") || line.contains("Error ") || line.contains("ERROR:"))
        {
            fallback = Some(FirstError {
                location: None,
                line: line.trim().to_string(),
            });
        }
    }
    fallback
}

/// `path:line[:col]` of a `path:line[:col]: (fatal )?error: ...` line.
fn compiler_error_location(line: &str) -> Option<String> {
    let (head, _) = line
        .split_once(": error:")
        .or_else(|| line.split_once(": fatal error:"))?;
    let mut parts = head.rsplitn(3, ':');
    let last = parts.next()?;
    let mid = parts.next()?;
    let (file, line_no) = match parts.next() {
        // path:line:col
        Some(file) if mid.parse::<u32>().is_ok() && last.parse::<u32>().is_ok() => {
            (file, format!("{mid}:{last}"))
        }
        // path:line (the path has no colon)
        Some(file) if last.parse::<u32>().is_ok() => (file, last.to_string()),
        None if last.parse::<u32>().is_ok() => (mid, last.to_string()),
        _ => return None,
    };
    let file = file.trim();
    (!file.is_empty() && !file.contains(' ')).then(|| format!("{file}:{line_no}"))
}

/// The progress line: `N/~M steps (P%), elapsed` for a build whose size is
/// known (a cold one), `N steps (incremental), elapsed` otherwise.
pub fn progress_line(done: u64, estimate: Option<u64>, elapsed: Duration) -> String {
    let secs = elapsed.as_secs();
    match estimate {
        Some(e) => {
            let est = e.max(done).max(1);
            format!(
                "{done}/~{est} steps ({}%), {}m{:02}s",
                done * 100 / est,
                secs / 60,
                secs % 60
            )
        }
        None => format!(
            "{done} steps (incremental), {}m{:02}s",
            secs / 60,
            secs % 60
        ),
    }
}

/// How a `make` run ended.
#[derive(Debug)]
pub struct MakeResult {
    /// Whether make succeeded.
    pub ok: bool,
    /// Build steps seen.
    pub steps: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// The compiler's first error, when it failed.
    pub first_error: Option<FirstError>,
}

/// One `make` invocation.
#[derive(Debug, Clone)]
pub struct Make {
    /// The source tree (`make -C`).
    pub tree: PathBuf,
    /// The build directory (`O=`), or `None` to build in the tree.
    pub out: Option<PathBuf>,
    /// `-j`.
    pub jobs: usize,
    /// `nice -n` level (0: not niced).
    pub nice: i32,
    /// Further `VAR=value` arguments.
    pub vars: Vec<String>,
    /// The targets.
    pub targets: Vec<String>,
}

impl Make {
    /// The command line.
    pub fn command(&self) -> Command {
        let mut c = if self.nice > 0 {
            let mut c = Command::new("nice");
            c.args(["-n", &self.nice.to_string(), "make"]);
            c
        } else {
            Command::new("make")
        };
        c.arg("-C").arg(&self.tree);
        if let Some(o) = &self.out {
            c.arg(format!("O={}", o.display()));
        }
        c.arg(format!("-j{}", self.jobs.max(1)));
        c.args(&self.vars).args(&self.targets);
        c
    }

    /// The command as text, for logs and errors.
    pub fn describe(&self) -> String {
        let c = self.command();
        std::iter::once(c.get_program())
            .chain(c.get_args())
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Runs make, appending every output line to `log` and calling
    /// `progress` with a progress line at most every `every`.
    pub fn run(
        &self,
        log: &Path,
        estimate: Option<u64>,
        every: Duration,
        progress: &mut dyn FnMut(&str),
    ) -> std::io::Result<MakeResult> {
        let mut logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        writeln!(logf, "$ {}", self.describe())?;
        let mut child = self
            .command()
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        // stderr goes through a thread into the same channel as stdout.
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let err = child.stderr.take().map(|e| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for l in BufReader::new(e).lines().map_while(Result::ok) {
                    let _ = tx.send(l);
                }
            })
        });
        let out = child.stdout.take().map(|o| {
            std::thread::spawn(move || {
                for l in BufReader::new(o).lines().map_while(Result::ok) {
                    let _ = tx.send(l);
                }
            })
        });
        let start = Instant::now();
        let mut last = start;
        let mut steps = 0u64;
        let mut first: Option<FirstError> = None;
        let mut fallback: Option<FirstError> = None;
        for line in rx {
            writeln!(logf, "{line}")?;
            if is_step(&line) {
                steps += 1;
            } else if let Some(e) = first_error([line.as_str()]) {
                if e.location.is_some() {
                    first.get_or_insert(e);
                } else {
                    fallback.get_or_insert(e);
                }
            }
            if last.elapsed() >= every {
                last = Instant::now();
                progress(&progress_line(steps, estimate, start.elapsed()));
            }
        }
        for t in [err, out].into_iter().flatten() {
            let _ = t.join();
        }
        let status = child.wait()?;
        let elapsed = start.elapsed();
        writeln!(
            logf,
            "# ktstr: make exited with {status} after {}s, {steps} steps",
            elapsed.as_secs()
        )?;
        Ok(MakeResult {
            ok: status.success(),
            steps,
            elapsed,
            first_error: if status.success() {
                None
            } else {
                first.or(fallback)
            },
        })
    }
}

/// The step estimate for a build in `out`: none for an incremental build
/// (a `vmlinux` is there: how much changed is unknown), else the last cold
/// build's count there, else the cold estimate of the `base` config.
pub fn estimate(out: &Path, base: &str) -> Option<u64> {
    if out.join("vmlinux").is_file() {
        return None;
    }
    Some(
        std::fs::read_to_string(out.join(STEPS_FILE))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(match base {
                "defconfig" => DEFCONFIG_STEPS_ESTIMATE,
                _ => COLD_STEPS_ESTIMATE,
            }),
    )
}

/// The host's cores, for `-j`.
pub fn host_jobs() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_kbuild_quiet_lines() {
        assert!(is_step("  CC      kernel/sched/ext.o"));
        assert!(is_step("  LD      vmlinux.o"));
        assert!(is_step("  BTF     .btf.vmlinux.bin.o"));
        assert!(is_step("  HOSTCC  scripts/kconfig/conf.o"));
        assert!(!is_step("make[2]: Entering directory"));
        assert!(!is_step("kernel/sched/ext.c:10:1: error: x"));
        assert!(!is_step("  "));
        assert!(!is_step("   12 | int x"));
    }

    #[test]
    fn the_first_compiler_error_wins_with_its_location() {
        let out = [
            "  CC      kernel/sched/core.o",
            "make[3]: *** [scripts/Makefile.build:287: kernel/sched/ext.o] Error 1",
            "kernel/sched/ext.c:4711:9: error: expected ';' before 'return'",
            "kernel/sched/ext.c:4800:1: error: second",
        ];
        let e = first_error(out).expect("an error");
        assert_eq!(e.location.as_deref(), Some("kernel/sched/ext.c:4711:9"));
        assert!(e.line.contains("expected ';'"));
        let e = first_error([
            "ld: vmlinux.o: in function `f':",
            "ld: error: undefined symbol",
        ])
        .expect("linker");
        assert_eq!(e.location, None);
        assert_eq!(e.line, "ld: error: undefined symbol");
        let e =
            first_error(["include/linux/x.h:12: fatal error: y.h: No such file"]).expect("fatal");
        assert_eq!(e.location.as_deref(), Some("include/linux/x.h:12"));
        assert!(first_error(["  CC      a.o", "all good"]).is_none());
    }

    #[test]
    fn progress_lines() {
        assert_eq!(
            progress_line(650, Some(2600), Duration::from_secs(125)),
            "650/~2600 steps (25%), 2m05s"
        );
        // Past the estimate: the estimate follows the count.
        assert_eq!(
            progress_line(3000, Some(2600), Duration::from_secs(5)),
            "3000/~3000 steps (100%), 0m05s"
        );
        assert_eq!(
            progress_line(47, None, Duration::from_secs(57)),
            "47 steps (incremental), 0m57s"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(
            estimate(dir.path(), "tinyconfig"),
            Some(COLD_STEPS_ESTIMATE)
        );
        assert_eq!(
            estimate(dir.path(), "defconfig"),
            Some(DEFCONFIG_STEPS_ESTIMATE)
        );
        std::fs::write(dir.path().join(STEPS_FILE), "1923\n").expect("write");
        assert_eq!(estimate(dir.path(), "defconfig"), Some(1923));
        std::fs::write(dir.path().join("vmlinux"), "").expect("write");
        assert_eq!(estimate(dir.path(), "tinyconfig"), None);
    }

    #[test]
    fn the_command_line() {
        let m = Make {
            tree: "/src".into(),
            out: Some("/b".into()),
            jobs: 2,
            nice: 10,
            vars: vec!["LOCALVERSION=-x".into()],
            targets: vec!["bzImage".into()],
        };
        assert_eq!(
            m.describe(),
            "nice -n 10 make -C /src O=/b -j2 LOCALVERSION=-x bzImage"
        );
    }

    #[test]
    fn a_failing_make_gives_its_first_error_and_keeps_the_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("Makefile"),
            "all:\n\t@echo '  CC      a.o'\n\t@echo 'a.c:3:7: error: nope' >&2\n\t@false\n",
        )
        .expect("write");
        let m = Make {
            tree: dir.path().into(),
            out: None,
            jobs: 1,
            nice: 0,
            vars: vec![],
            targets: vec!["all".into()],
        };
        let log = dir.path().join("build.log");
        let mut lines = Vec::new();
        let r = m
            .run(&log, Some(10), Duration::ZERO, &mut |l| {
                lines.push(l.to_string())
            })
            .expect("make runs");
        assert!(!r.ok);
        assert_eq!(r.steps, 1);
        assert_eq!(
            r.first_error.and_then(|e| e.location).as_deref(),
            Some("a.c:3:7")
        );
        let text = std::fs::read_to_string(&log).expect("log");
        assert!(text.contains("a.c:3:7: error: nope"), "{text}");
        assert!(!lines.is_empty());
    }
}
