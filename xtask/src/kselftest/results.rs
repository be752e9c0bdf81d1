//! What `cargo xtask kselftest` makes of the runner's output: its
//! TAP-style result lines and totals parsed, the problems of a run (each
//! naming the test), and the summary table.

use std::time::Duration;

/// One topology's run.
#[derive(Debug)]
pub(super) struct TopologyRun {
    pub(super) topology: String,
    pub(super) report: Report,
    /// The guest command's exit status, or why the VM did not say.
    pub(super) exit: Result<i32, GuestDied>,
    /// Console lines with a kernel warning.
    pub(super) alarms: Vec<String>,
    pub(super) wall: Duration,
    pub(super) slot_wait: Duration,
}

/// Why a topology's VM gave no exit status: the guest died.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the guest died: {reason}")]
pub(super) struct GuestDied {
    /// How it ended, in the VMM's words (a timeout, a panic and its
    /// console lines, ...).
    pub(super) reason: String,
}

/// How one test ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Pass,
    Skip,
    Fail,
    /// It started and never printed its result (the runner died or the VM
    /// was killed).
    Unfinished,
}

/// One test of the runner's output.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TestOutcome {
    name: String,
    status: Status,
    /// What it printed between `OUTPUT:` and its result.
    output: Vec<String>,
}

/// The runner's totals (`RESULTS:`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Totals {
    passed: u32,
    skipped: u32,
    failed: u32,
}

/// What the runner printed, parsed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) struct Report {
    tests: Vec<TestOutcome>,
    totals: Option<Totals>,
}

impl Report {
    /// (passed, failed, skipped); an unfinished test counts as failed.
    pub(super) fn counts(&self) -> (usize, usize, usize) {
        let mut c = (0, 0, 0);
        for t in &self.tests {
            match t.status {
                Status::Pass => c.0 += 1,
                Status::Fail | Status::Unfinished => c.1 += 1,
                Status::Skip => c.2 += 1,
            }
        }
        c
    }
}

/// The result in a line of the runner's: `ok 3 name # `, `ok 3 name # SKIP `
/// or `not ok 3 name # ` (anything a test printed without a newline may come
/// first). With `name`, only that test's result.
fn parse_result(line: &str, name: Option<&str>) -> Option<(Status, String)> {
    let hash = line.rfind(" #")?;
    let directive = line[hash + 2..].trim();
    let (head, test) = line[..hash].rsplit_once(' ')?;
    if name.is_some_and(|n| n != test) || test.is_empty() {
        return None;
    }
    let (head, num) = head.rsplit_once(' ')?;
    num.parse::<u32>().ok()?;
    let status = if head.ends_with("not ok") {
        Status::Fail
    } else if head.ends_with("ok") {
        if directive == "SKIP" {
            Status::Skip
        } else {
            Status::Pass
        }
    } else {
        return None;
    };
    Some((status, test.to_string()))
}

/// What a test printed without a newline before its result line.
fn glued_output(line: &str) -> &str {
    let head = line[..line.rfind(" #").unwrap_or(0)]
        .rsplit_once(' ')
        .map_or("", |(h, _name)| h);
    let head = head.rsplit_once(' ').map_or("", |(h, _num)| h);
    let head = head.strip_suffix("ok").unwrap_or(head);
    head.strip_suffix("not ").unwrap_or(head).trim_end()
}

/// A result line as printed live: `ok 3 name`, `SKIP 3 name`, `not ok 3 name`.
pub(super) fn result_line(line: &str) -> Option<String> {
    let (status, name) = parse_result(line, None)?;
    let what = match status {
        Status::Pass => "ok",
        Status::Skip => "SKIP",
        _ => "not ok",
    };
    Some(format!("{what:<6} {name}"))
}

/// Parses the runner's output: a `===== START =====` / `TEST: name` /
/// `OUTPUT:` / result / `=====  END  =====` block per test, then the
/// `RESULTS:` totals.
pub(super) fn parse(text: &str) -> Report {
    let mut report = Report::default();
    let mut current: Option<TestOutcome> = None;
    let mut totals = Totals::default();
    let mut in_results = false;
    for line in text.lines() {
        if line.trim() == "===== START =====" {
            if let Some(t) = current.take() {
                report.tests.push(t);
            }
            current = Some(TestOutcome {
                name: String::new(),
                status: Status::Unfinished,
                output: vec![],
            });
            continue;
        }
        if let Some(t) = current.as_mut() {
            if t.name.is_empty() {
                if let Some(n) = line.strip_prefix("TEST: ") {
                    t.name = n.trim().to_string();
                }
                continue;
            }
            if line.trim() == "=====  END  =====" {
                report.tests.extend(current.take());
                continue;
            }
            if t.status == Status::Unfinished
                && let Some((status, _)) = parse_result(line, Some(&t.name))
            {
                t.status = status;
                let glued = glued_output(line);
                if !glued.is_empty() {
                    t.output.push(glued.to_string());
                }
                continue;
            }
            if t.status == Status::Unfinished
                && !line.starts_with("DESCRIPTION: ")
                && line != "OUTPUT:"
            {
                t.output.push(line.to_string());
            }
            continue;
        }
        if line.trim() == "RESULTS:" {
            in_results = true;
            continue;
        }
        if in_results {
            let num = |p: &str| line.strip_prefix(p).and_then(|v| v.trim().parse().ok());
            if let Some(n) = num("PASSED:") {
                totals.passed = n;
            } else if let Some(n) = num("SKIPPED:") {
                totals.skipped = n;
            } else if let Some(n) = num("FAILED:") {
                totals.failed = n;
                report.totals = Some(totals);
            }
        }
    }
    report.tests.extend(current);
    report
}

/// The last lines a test printed, for the message naming it.
fn last_words(t: &TestOutcome) -> String {
    let lines: Vec<&str> = t
        .output
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty())
        .collect();
    let tail = &lines[lines.len().saturating_sub(2)..];
    if tail.is_empty() {
        String::new()
    } else {
        format!(": {}", tail.join(" | "))
    }
}

/// Everything wrong with one topology's run, each naming the test; empty
/// when every expected test passed.
pub(super) fn problems(run: &TopologyRun, expected: Option<&[String]>) -> Vec<String> {
    let mut out = Vec::new();
    for t in &run.report.tests {
        let what = match t.status {
            Status::Pass => continue,
            Status::Skip => "skipped",
            Status::Fail => "failed",
            Status::Unfinished => "did not finish",
        };
        out.push(format!("{} {what}{}", t.name, last_words(t)));
    }
    if let Some(expected) = expected {
        for name in expected {
            if !run.report.tests.iter().any(|t| &t.name == name) {
                out.push(format!("{name} never ran"));
            }
        }
    }
    let (passed, failed, skipped) = run.report.counts();
    match (run.report.totals, &run.exit) {
        (_, Err(why)) => out.push(why.to_string()),
        (None, Ok(rc)) => out.push(format!(
            "the runner printed no RESULTS (exit status {rc}): it died or never started"
        )),
        (Some(t), Ok(rc)) => {
            let counted = Totals {
                passed: passed as u32,
                failed: failed as u32,
                skipped: skipped as u32,
            };
            if t != counted {
                out.push(format!(
                    "the runner's RESULTS ({} passed, {} failed, {} skipped) disagree with its \
                     test lines",
                    t.passed, t.failed, t.skipped
                ));
            }
            if *rc != 0 && failed == 0 {
                out.push(format!("the guest command exited with {rc}"));
            }
        }
    }
    if run.report.tests.is_empty() && out.is_empty() {
        out.push("the runner ran no test".into());
    }
    for a in run.alarms.iter().take(5) {
        out.push(format!(
            "the kernel complained on the console: {}",
            a.trim()
        ));
    }
    out
}

/// The summary: per topology, the counts, the wall time and the verdict.
pub(super) fn summary_table(runs: &[(TopologyRun, Vec<String>)]) -> String {
    let mut s = format!(
        "{:<12} {:>6} {:>6} {:>7} {:>9}  RESULT\n",
        "TOPOLOGY", "PASSED", "FAILED", "SKIPPED", "WALL"
    );
    for (run, problems) in runs {
        let (passed, failed, skipped) = run.report.counts();
        s.push_str(&format!(
            "{:<12} {passed:>6} {failed:>6} {skipped:>7} {:>8.1}s  {}\n",
            run.topology,
            run.wall.as_secs_f64(),
            if problems.is_empty() {
                "ok".to_string()
            } else {
                format!("FAILED ({})", problems.len())
            }
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The runner's output, in the shape runner.c prints it.
    const OUTPUT: &str = "\
===== START =====
TEST: create_dsq
DESCRIPTION: Create and destroy a dsq in a loop
OUTPUT:
ok 1 create_dsq # 
=====  END  =====
===== START =====
TEST: nohz_tick
DESCRIPTION: Check the tick
OUTPUT:
SKIP: no allowed NOHZ_FULL CPU
ok 2 nohz_tick # SKIP 
=====  END  =====
===== START =====
TEST: total_bw
DESCRIPTION: Verify total_bw
OUTPUT:
ERR: total_bw.c:81
Failed to open debug file
not ok 3 total_bw # 
=====  END  =====


=============================

RESULTS:

PASSED:  1
SKIPPED: 1
FAILED:  1

Skipped tests:
  - nohz_tick

Failed tests:
  - total_bw
";

    fn run_of(text: &str, exit: Result<i32, GuestDied>) -> TopologyRun {
        TopologyRun {
            topology: "1n2l2c1t".into(),
            report: parse(text),
            exit,
            alarms: vec![],
            wall: Duration::from_secs(300),
            slot_wait: Duration::ZERO,
        }
    }

    #[test]
    fn the_runner_output_parses_into_tests_and_totals() {
        let r = parse(OUTPUT);
        let got: Vec<(&str, Status)> = r
            .tests
            .iter()
            .map(|t| (t.name.as_str(), t.status))
            .collect();
        assert_eq!(
            got,
            [
                ("create_dsq", Status::Pass),
                ("nohz_tick", Status::Skip),
                ("total_bw", Status::Fail)
            ]
        );
        assert_eq!(
            r.tests[2].output,
            ["ERR: total_bw.c:81", "Failed to open debug file"]
        );
        assert_eq!(
            r.totals,
            Some(Totals {
                passed: 1,
                skipped: 1,
                failed: 1
            })
        );
        assert_eq!(r.counts(), (1, 1, 1));
    }

    #[test]
    fn a_skip_and_a_failure_are_named_with_their_last_words() {
        let run = run_of(OUTPUT, Ok(1));
        assert_eq!(
            problems(&run, None),
            [
                "nohz_tick skipped: SKIP: no allowed NOHZ_FULL CPU",
                "total_bw failed: ERR: total_bw.c:81 | Failed to open debug file",
            ]
        );
    }

    #[test]
    fn a_clean_run_has_no_problems() {
        let text = "===== START =====\nTEST: a\nOUTPUT:\nok 1 a # \n=====  END  =====\n\
                    RESULTS:\n\nPASSED:  1\nSKIPPED: 0\nFAILED:  0\n";
        let run = run_of(text, Ok(0));
        assert!(problems(&run, Some(&["a".to_string()])).is_empty());
        assert!(
            summary_table(&[(run, vec![])])
                .contains("1n2l2c1t          1      0       0    300.0s  ok")
        );
    }

    #[test]
    fn a_runner_that_died_mid_test_names_the_test_and_what_never_ran() {
        let text = "===== START =====\nTEST: a\nOUTPUT:\nok 1 a # \n=====  END  =====\n\
                    ===== START =====\nTEST: reload_loop\nOUTPUT:\nloading\n";
        let run = run_of(
            text,
            Err(GuestDied {
                reason: "timeout".into(),
            }),
        );
        let expected = ["a", "reload_loop", "z"].map(String::from);
        assert_eq!(
            problems(&run, Some(&expected)),
            [
                "reload_loop did not finish: loading",
                "z never ran",
                "the guest died: timeout",
            ]
        );
        assert_eq!(run.report.counts(), (1, 1, 0));
    }

    #[test]
    fn no_results_block_or_a_bad_exit_is_a_problem() {
        let text = "===== START =====\nTEST: a\nOUTPUT:\nok 1 a # \n=====  END  =====\n";
        assert_eq!(
            problems(&run_of(text, Ok(139)), None),
            ["the runner printed no RESULTS (exit status 139): it died or never started"]
        );
        let text = format!("{text}RESULTS:\nPASSED:  1\nSKIPPED: 0\nFAILED:  0\n");
        assert_eq!(
            problems(&run_of(&text, Ok(1)), None),
            ["the guest command exited with 1"]
        );
        assert_eq!(
            problems(&run_of("", Ok(1)), None),
            ["the runner printed no RESULTS (exit status 1): it died or never started"]
        );
    }

    #[test]
    fn a_result_glued_to_test_output_is_found() {
        let text = "===== START =====\nTEST: exit\nOUTPUT:\npartial lineok 4 exit # \n\
                    =====  END  =====\n";
        let r = parse(text);
        assert_eq!(r.tests[0].status, Status::Pass);
        assert_eq!(r.tests[0].output, ["partial line"]);
        assert_eq!(
            parse_result("xnot ok 2 b # ", None),
            Some((Status::Fail, "b".into()))
        );
        // Another test's result line does not end this one.
        assert_eq!(parse_result("ok 2 b # ", Some("a")), None);
        assert_eq!(parse_result("look # here", None), None);
        assert_eq!(
            result_line("ok 2 nohz_tick # SKIP "),
            Some("SKIP   nohz_tick".into())
        );
    }
}
