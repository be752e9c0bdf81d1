//! Probes on request (`#[ktstr_test(probes = [..])]`): in a passing run
//! under scx-ktstr, the named kernel function and scheduler callback come
//! back decoded, printed and in `VmResult::probes`; an unknown name fails
//! before any VM boots, naming it and the close names.

use ktstr::prelude::*;
use ktstr::test_support::{Outcome, RunOptions};

const SCX_KTSTR: Scheduler =
    Scheduler::named("scx_ktstr").binary(SchedulerSpec::Discover("scx-ktstr"));

/// What the probes must have seen of a passing run.
fn saw_enqueues(result: &VmResult) -> Result<()> {
    let r = result
        .probes
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("no probe report for a test with probes = [..]"))?;
    println!("{}", r.text);
    anyhow::ensure!(r.errors.is_empty(), "probe errors: {:?}", r.errors);
    anyhow::ensure!(
        r.text
            .starts_with("=== PROBES (on request): enqueue_task_scx, ktstr_enqueue ==="),
        "heading:\n{}",
        r.text
    );
    let calls: Vec<_> = r.calls_of("enqueue_task_scx").collect();
    anyhow::ensure!(!calls.is_empty(), "no enqueue_task_scx call:\n{}", r.text);
    // Every call decodes: a pid, the CPU of its runqueue, a CPU mask, flags
    // by name, and no field gave an error value.
    for c in &calls {
        anyhow::ensure!(c.pid.is_some(), "a call without a pid: {c:?}");
        for f in c.args.iter().flat_map(|a| &a.fields) {
            anyhow::ensure!(
                !f.entry.starts_with("<error")
                    && !f.exit.as_deref().is_some_and(|x| x.starts_with("<error")),
                "{} did not decode: {f:?}",
                c.func
            );
        }
        let mask = &c.field("cpus_ptr").expect("task field").entry;
        anyhow::ensure!(
            mask.starts_with("0x") && mask.ends_with(')'),
            "cpus_ptr {mask}"
        );
        let cpu = &c.field("cpu").expect("rq field").entry;
        anyhow::ensure!(cpu.parse::<u32>().is_ok_and(|n| n < 2), "rq cpu {cpu}");
    }
    // The enqueue leaves the task queued: the flags after it say so by name.
    anyhow::ensure!(
        calls.iter().any(|c| c
            .field("scx_flags")
            .and_then(|f| f.exit.as_deref())
            .is_some_and(|x| x.contains("QUEUED"))),
        "no enqueue left its task QUEUED:\n{}",
        r.text
    );
    // The callback: the same calls, shown with its file:line.
    anyhow::ensure!(
        r.calls_of("ktstr_enqueue").count() == calls.len(),
        "ktstr_enqueue stands for every enqueue_task_scx call"
    );
    anyhow::ensure!(
        r.text.contains("ktstr.bpf.c:"),
        "no callback location:\n{}",
        r.text
    );
    anyhow::ensure!(
        r.text.contains("enqueue_task_scx: ")
            && r.text.contains("calls in the records; the last 3"),
        "no bounded per-function summary:\n{}",
        r.text
    );
    Ok(())
}

/// A passing run under scx-ktstr with a kernel function and a callback probed.
#[ktstr_test(
    scheduler = SCX_KTSTR,
    probes = ["enqueue_task_scx", "ktstr_enqueue"],
    duration_s = 2,
    post_vm = saw_enqueues
)]
fn vm_probes_on_request_decode_a_passing_run(ctx: &Ctx) -> Result<AssertResult> {
    scenarios::steady(ctx)
}

#[ktstr_test(harness_fixture = true, scheduler = SCX_KTSTR, probes = ["enqueue_task_sxc"], duration_s = 1)]
fn fixture_probes_a_misspelled_function(_ctx: &Ctx) -> Result<AssertResult> {
    Ok(AssertResult::pass())
}

/// A misspelled name fails before any VM boots, naming it, what is close,
/// and how to list what can be probed.
#[test]
fn an_unknown_probe_fails_before_booting_naming_it() {
    let report = ktstr::test_support::run(
        "probes::fixture_probes_a_misspelled_function",
        &RunOptions::default(),
    );
    let (outcome, boots) = (report.outcome(), report.boots);
    let Outcome::Fail(text) = outcome else {
        panic!("expected a failure, got {outcome:?}");
    };
    for needle in [
        "probes = [\"enqueue_task_sxc\"]",
        "no kernel function `enqueue_task_sxc`",
        "close: enqueue_task_scx",
        "ktstr probe list PATTERN",
    ] {
        assert!(text.contains(needle), "failure lacks {needle:?}:\n{text}");
    }
    assert_eq!(boots, 0, "no VM for a plan that cannot be installed");
}
