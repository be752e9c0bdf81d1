//! `cargo ktstr bisect`: the first kernel release where a test's verdict
//! changes, by binary search over the releases of a range (every release,
//! not only the newest of each line): at most ceil(log2(N)) + 2 runs.

use std::path::Path;

use ktstr_kernel::{KernelSpec, Releases};
use ktstr_record::{RunRecord, Verdict as RecordVerdict};

use crate::cargo::{self, Targets};
use crate::error::CmdError;
use crate::runs::{Knobs, new_run_id, store_dir};
use crate::store::Store;
use crate::{BisectCmd, Done};

/// What one run of the test on one release said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Verdict {
    /// `pass`, `fail` or `inconclusive`: what the search compares.
    pub(crate) class: String,
    /// The first line of the failure (or the pass's summary).
    pub(crate) detail: String,
}

/// The verdict of a run's records: every test passed, else the first
/// failure (then inconclusive) with its text. `None`: no record.
pub(crate) fn run_verdict(records: &[RunRecord]) -> Option<Verdict> {
    let first = |class: RecordVerdict| {
        records.iter().find(|r| r.verdict == class).map(|r| {
            // The failure's own line naming kfuncs the kernel lacks,
            // when the runner found one: the reason a verdict flips.
            let lacks = r
                .failure
                .as_deref()
                .and_then(|f| f.lines().find(|l| l.contains("lacks kfuncs")))
                .map(|l| format!(" [{}]", l.trim()))
                .unwrap_or_default();
            Verdict {
                class: class.as_str().to_string(),
                detail: format!("{}: {}{lacks}", r.test, r.detail),
            }
        })
    };
    if records.is_empty() {
        return None;
    }
    first(RecordVerdict::Fail)
        .or_else(|| first(RecordVerdict::Inconclusive))
        .or_else(|| first(RecordVerdict::Pass))
}

/// The index of the first release whose verdict differs from release 0's,
/// asking `verdict_of` as few times as a binary search needs, given that the
/// last release's differs. `verdict_of` answers `None` for a release that
/// cannot be tested (it is then left out of the search).
pub(crate) fn search<E>(
    n: usize,
    mut verdict_of: impl FnMut(usize) -> Result<Option<Verdict>, E>,
) -> Result<Option<(usize, usize)>, E> {
    // The candidates still in play, by index; an untestable end moves inwards.
    let mut alive: Vec<usize> = (0..n).collect();
    let v_lo = loop {
        let Some(&first) = alive.first() else {
            return Ok(None);
        };
        match verdict_of(first)? {
            Some(v) => break v,
            None => {
                alive.remove(0);
            }
        }
    };
    let v_hi = loop {
        if alive.len() < 2 {
            return Ok(None);
        }
        match verdict_of(alive[alive.len() - 1])? {
            Some(v) => break v,
            None => {
                alive.pop();
            }
        }
    };
    let (mut lo, mut hi) = (0usize, alive.len() - 1);
    if v_lo.class == v_hi.class {
        return Ok(None);
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        match verdict_of(alive[mid])? {
            Some(v) if v.class == v_lo.class => lo = mid,
            Some(_) => hi = mid,
            None => {
                alive.remove(mid);
                hi -= 1;
            }
        }
    }
    Ok(Some((alive[lo], alive[hi])))
}

pub fn bisect(c: &BisectCmd) -> Result<Done, CmdError> {
    if !matches!(c.kernel, KernelSpec::Range { .. }) {
        return Err(CmdError::NotARange {
            kernel: c.kernel.to_string(),
        });
    }
    let host = ktstr::config::HostConfig::from_env()?;
    let env = host.kernel_cmd_env();
    let opts = ktstr_kernel::FetchOptions {
        cache: env.cache.clone(),
        offline: c.offline,
        suites: env.suites.clone(),
        source: None,
    };
    let mut progress = |l: &str| println!("cargo ktstr: {l}");
    let releases = Releases::open(&opts, &mut progress)?;
    let cands = releases.select(&c.kernel, true)?;
    if cands.len() < 2 {
        return Err(CmdError::TooFewReleases {
            kernel: c.kernel.to_string(),
            count: cands.len(),
        });
    }
    let names: Vec<&str> = cands.iter().map(|k| k.release.as_str()).collect();
    let bound = (cands.len() as f64).log2().ceil() as usize + 2;
    println!(
        "bisect: {} over {} releases ({} .. {}): at most {bound} runs",
        c.test,
        cands.len(),
        names[0],
        names[names.len() - 1]
    );
    let targets = Targets {
        packages: c.package.clone(),
        tests: c.test_target.clone(),
        workspace: false,
        release: false,
    };
    cargo::build(&targets)?;
    let store = Store::new(store_dir(None)?);
    let knobs = Knobs {
        allow_inconclusive: c.allow_inconclusive,
        no_restore: c.no_restore,
        backend: c.backend.as_deref(),
        verbose: false,
        host_cpus: None,
        monitor_hz: None,
        dump: false,
        record: false,
    };
    let nextest = !c.no_nextest && cargo::has_nextest();
    let mut table: Vec<(String, Option<Verdict>)> = Vec::new();
    let verdict_of = |i: usize| -> Result<Option<Verdict>, CmdError> {
        let cand = &cands[i];
        let outcome = match releases.fetch(cand, &mut |l| println!("cargo ktstr: {l}")) {
            Ok(o) => o,
            Err(ktstr_kernel::KernelError::NoSchedExtRelease { release, line }) => {
                println!("bisect: {release} left out: built without sched_ext (`{line}`)");
                table.push((release, None));
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        };
        let dir = outcome.kernel().dir.clone();
        let run = new_run_id(&format!("-b{}", table.len()));
        let env = knobs.env(&store.dir, &run, Some(Path::new(&dir)))?;
        println!(
            "== bisect run {}: {} ({run})",
            table.len() + 1,
            cand.release
        );
        cargo::run_named(&targets, &c.test, nextest, &env)?;
        let v = run_verdict(&store.records(&run).0).ok_or_else(|| CmdError::NoBisectRecord {
            test: c.test.clone(),
            release: cand.release.clone(),
        })?;
        println!("== {}: {} ({})", cand.release, v.class, v.detail);
        table.push((cand.release.clone(), Some(v.clone())));
        Ok(Some(v))
    };
    let found = search(cands.len(), verdict_of)?;
    println!("\nbisect: {} run(s) (bound {bound}):", table.len());
    println!("{:<30} {:<13} DETAIL", "RELEASE", "VERDICT");
    let mut sorted = table.clone();
    sorted.sort_by(|a, b| {
        let pos = |r: &str| names.iter().position(|n| *n == r);
        pos(&a.0).cmp(&pos(&b.0))
    });
    for (rel, v) in &sorted {
        match v {
            Some(v) => println!("{rel:<30} {:<13} {}", v.class, v.detail),
            None => println!("{rel:<30} {:<13} built without sched_ext", "left out"),
        }
    }
    let verdict = |r: &str| {
        table
            .iter()
            .find(|(x, _)| x == r)
            .and_then(|(_, v)| v.clone())
    };
    match found {
        None => {
            println!(
                "\nbisect: the verdict does not change between {} and {}",
                names[0],
                names[names.len() - 1]
            );
            Ok(Done::Ok)
        }
        Some((good, bad)) => {
            let (a, b) = (cands[good].release.as_str(), cands[bad].release.as_str());
            println!("\nbisect: the verdict changes at {b} (last {a} like the start)");
            if let (Some(va), Some(vb)) = (verdict(a), verdict(b)) {
                println!("  {a:<30} {:<13} {}", va.class, va.detail);
                println!("  {b:<30} {:<13} {}", vb.class, vb.detail);
            }
            Ok(Done::Ok)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(class: &str) -> Option<Verdict> {
        Some(Verdict {
            class: class.into(),
            detail: String::new(),
        })
    }

    /// Runs the search over `verdicts`, counting the questions.
    fn run(verdicts: &[Option<&str>]) -> (Option<(usize, usize)>, usize) {
        let mut asked = 0;
        let found = search::<()>(verdicts.len(), |i| {
            asked += 1;
            Ok(verdicts[i].and_then(v))
        })
        .expect("no error");
        (found, asked)
    }

    #[test]
    fn finds_the_first_change_within_the_bound() {
        for n in 2..40usize {
            for change in 1..n {
                let vs: Vec<Option<&str>> = (0..n)
                    .map(|i| Some(if i < change { "pass" } else { "fail" }))
                    .collect();
                let (found, asked) = run(&vs);
                assert_eq!(found, Some((change - 1, change)), "n={n} change={change}");
                let bound = (n as f64).log2().ceil() as usize + 2;
                assert!(asked <= bound, "n={n}: {asked} runs > {bound}");
            }
        }
    }

    #[test]
    fn same_verdict_at_both_ends_is_no_change() {
        assert_eq!(run(&[Some("pass"), Some("fail"), Some("pass")]).0, None);
        assert_eq!(run(&[Some("fail"), Some("fail")]), (None, 2));
    }

    #[test]
    fn untestable_releases_are_left_out() {
        let (found, _) = run(&[None, Some("pass"), Some("fail"), None]);
        assert_eq!(found, Some((1, 2)));
        assert_eq!(run(&[None, None]).0, None);
        let (found, _) = run(&[Some("pass"), None, None, Some("fail"), Some("fail")]);
        assert_eq!(found, Some((0, 3)));
        let (found, _) = run(&[Some("pass"), Some("pass"), None, Some("fail")]);
        assert_eq!(found, Some((1, 3)));
    }

    #[test]
    fn run_verdict_prefers_failures() {
        let record = |test: &str, verdict, detail: &str| {
            let mut r = RunRecord::new(test, verdict);
            r.detail = detail.into();
            r
        };
        let mut recs = vec![
            record("a", RecordVerdict::Pass, "ok"),
            record("b", RecordVerdict::Fail, "died at start-up"),
        ];
        let v = run_verdict(&recs).expect("verdict");
        assert_eq!(v.class, "fail");
        assert_eq!(v.detail, "b: died at start-up");
        recs[1].failure = Some(
            "died at start-up\nlog\n  kernel 7.3.4 lacks kfuncs that s's BPF objects call (not weak): scx_bpf_cpu_rq".into(),
        );
        let v = run_verdict(&recs).expect("verdict");
        assert!(
            v.detail.ends_with("(not weak): scx_bpf_cpu_rq]"),
            "{}",
            v.detail
        );
        assert_eq!(run_verdict(&[]), None);
    }
}
