//! The `#[ktstr_test]`s and `ktstr shell` on the own KVM VMM, wherever this
//! runs: directly on a host with vmx/svm, else inside one L1 guest that QEMU's
//! TCG gives an emulated AMD SVM (the same L1 as `ktstr-vmm`'s
//! `tests/kvm_linux.rs`, whose `nested/` module this file includes).
//!
//! The inner set is the test binaries of this crate, as cargo built them
//! (`cargo test --no-run --message-format=json`), not copies: steady and
//! cpusets (`examples`), three topology-conformance shapes, the scheduler
//! lifecycle, and `ktstr shell` exit codes and panic detection. Each inner
//! test runs once with `KTSTR_BACKEND=kvm`; one line per inner test names the
//! backend that ran it (the runner's summary line, `ktstr shell -v`), and the
//! entry fails if any inner test failed, did not run, or ran on anything but
//! the own KVM VMM (`kvm`). The `examples` set runs restored from snapshots
//! (boot once, restore many on the own VMM) and must say `(restored)`; the
//! others boot cold.
//!
//! Inside the one-vCPU L1 every shape of more vCPUs is overcommitted, so the
//! runner marks their timing untrustworthy: an inner test whose timing checks
//! would have failed says INCONCLUSIVE. Those are listed loudly (past
//! libtest's capture) as neither passed nor failed, as the runner does for
//! its own tests; they never count as passes in the per-test lines.
//! `fairness_pair_on_overcommitted_own_vmm` runs the fairness pair there in
//! rounds, where an INCONCLUSIVE verdict fails: the verdict must hold when
//! the vCPUs outnumber the CPUs under them.
#![cfg(target_arch = "x86_64")]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

#[path = "../../vmm/tests/nested/mod.rs"]
mod nested;

/// The inner tests: (binary target, libtest names).
const LIBTEST_SETS: &[(&str, &[&str])] = &[
    (
        "examples",
        &[
            "steady_one_llc_two_cores",
            "steady_two_llcs_with_smt",
            "cpusets_split_two_llcs",
        ],
    ),
    (
        "topology",
        &[
            "topology_1n2l2c2t",
            "topology_2n4l2c1t",
            "topology_1n3l2c1t",
        ],
    ),
    (
        "scheduler_lifecycle",
        &[
            "scheduler_attach_from_cold_start_succeeds",
            "scheduler_restart_mid_experiment_reattaches_cleanly",
            "scheduler_replace_mid_experiment_swaps_via_staged_pack",
            "replace_with_broken_binary_surfaces_startup_died",
            "dispatch_hold_truncates_when_scheduler_dies_midstep",
        ],
    ),
    (
        "scheduler_ops",
        &[
            "broken_staged_binary_downcasts_to_startup_died",
            "stall_ends_the_hold_early_with_scx_exit_error_stall",
        ],
    ),
];

/// `ktstr shell` checks: (name, command, exit status, a line its output must hold).
/// The fairness pair of `tests/fairness.rs`.
const FAIRNESS_SET: &[(&str, &[&str])] = &[(
    "fairness",
    &[
        "unfair_scheduler_fails_steady_1n1l2c1t",
        "unfair_scheduler_fails_steady_1n2l2c2t",
        "fair_scheduler_passes_steady_1n1l2c1t",
        "fair_scheduler_passes_steady_1n2l2c2t",
    ],
)];

const SHELL_CHECKS: &[(&str, &str, i32, &str)] = &[
    ("shell_exit_3", "exit 3", 3, ""),
    (
        "shell_panic_is_reported",
        "echo c > /proc/sysrq-trigger",
        125,
        "Kernel panic - not syncing: sysrq triggered crash",
    ),
];

/// The sets run restored from snapshots on the own VMM (each must say so);
/// the others boot cold, the boot path's own coverage. All restored would
/// not fit: the L1's root is a RAM disk, and a snapshot per shape (~100 MB
/// each) beside the base archives filled it ("copy failed" building the
/// sixth test's initramfs).
const RESTORED_SETS: &[&str] = &["examples"];

const BEGIN: &str = "KTSTR-NESTED begin ";
const END: &str = "KTSTR-NESTED end ";

/// One inner test: its name, how to run it, what it must end with.
struct Inner {
    name: String,
    /// `VAR=value` words put before the command.
    env: &'static str,
    argv: Vec<String>,
    rc: i32,
    must_say: &'static str,
}

/// What one inner test did.
#[derive(Debug, Default, Clone, PartialEq)]
struct Ran {
    rc: Option<i32>,
    inconclusive: bool,
    /// The runner booted again after a boot that never reached init.
    reboots: usize,
    backend: Option<String>,
    output: Vec<String>,
}

/// Executables of this workspace, as `cargo --message-format=json` reports them.
fn built(args: &[&str]) -> Vec<(String, PathBuf)> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml");
    let out = Command::new(cargo)
        .args(args)
        .args(["--message-format=json", "--manifest-path", manifest])
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "cargo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact")
        .filter_map(|m| {
            let exe = m["executable"].as_str()?;
            Some((m["target"]["name"].as_str()?.to_string(), exe.into()))
        })
        .collect()
}

/// Host paths of the binaries the inner set needs.
struct Binaries {
    tests: Vec<(String, PathBuf)>,
    scheduler: PathBuf,
    ktstr: PathBuf,
}

fn binaries(sets: &[(&str, &[&str])]) -> Binaries {
    let mut args = vec!["test", "--no-run", "-p", "ktstr-tests"];
    for (t, _) in sets {
        args.extend(["--test", t]);
    }
    let tests = built(&args);
    let scheduler = built(&["build", "-p", "ktstr-tests", "--bin", "scx-ktstr"]);
    let ktstr = built(&["build", "-p", "ktstr-cli", "--bin", "ktstr"]);
    let find = |list: &[(String, PathBuf)], name: &str| {
        list.iter()
            .find(|(n, _)| n == name)
            .map(|(_, p)| p.clone())
            .unwrap_or_else(|| panic!("cargo built no {name}"))
    };
    Binaries {
        tests: sets
            .iter()
            .map(|(t, _)| (t.to_string(), find(&tests, t)))
            .collect(),
        scheduler: find(&scheduler, "scx-ktstr"),
        ktstr: find(&ktstr, "ktstr"),
    }
}

/// The inner tests with argv for binaries at `path_of(target)`.
fn inner_tests(plan: &Plan, path_of: &dyn Fn(&str) -> String) -> Vec<Inner> {
    let mut v = Vec::new();
    for round in 1..=plan.rounds {
        for (target, names) in plan.sets {
            for n in *names {
                let restored = RESTORED_SETS.contains(target);
                let name = match plan.rounds {
                    1 => format!("{target}::{n}"),
                    _ => format!("{target}::{n}#{round}"),
                };
                v.push(inner_test(target, n, name, restored, path_of));
            }
        }
    }
    if plan.shell {
        shell_checks(path_of, &mut v);
    }
    v
}

/// What to run in the L1: test sets, how many rounds of them, whether the
/// shell checks too, and whether an INCONCLUSIVE inner test fails the entry.
struct Plan {
    sets: &'static [(&'static str, &'static [&'static str])],
    rounds: u32,
    shell: bool,
    inconclusive_fails: bool,
}

/// The default entry's plan: every set once, and the shell checks.
const SUITE: Plan = Plan {
    sets: LIBTEST_SETS,
    rounds: 1,
    shell: true,
    inconclusive_fails: false,
};

/// One libtest test of `target` as an inner test named `name`.
fn inner_test(
    target: &str,
    n: &str,
    name: String,
    restored: bool,
    path_of: &dyn Fn(&str) -> String,
) -> Inner {
    Inner {
        name,
        env: if restored {
            "KTSTR_RESTORE=1"
        } else {
            "KTSTR_RESTORE=0"
        },
        argv: vec![
            path_of(target),
            "--exact".into(),
            n.to_string(),
            "--nocapture".into(),
            "--test-threads=1".into(),
        ],
        rc: 0,
        must_say: if restored { " on kvm (restored): " } else { "" },
    }
}

/// The `ktstr shell` checks, appended to `v`.
fn shell_checks(path_of: &dyn Fn(&str) -> String, v: &mut Vec<Inner>) {
    for (name, cmd, rc, must_say) in SHELL_CHECKS {
        v.push(Inner {
            name: name.to_string(),
            env: "",
            argv: vec![
                path_of("ktstr"),
                "shell".into(),
                "-v".into(),
                "--timeout-s".into(),
                "90".into(),
                "--exec".into(),
                cmd.to_string(),
            ],
            rc: *rc,
            must_say,
        });
    }
}

/// The shell lines that run every inner test between markers.
fn script(inner: &[Inner]) -> String {
    let mut s = String::from("export KTSTR_BACKEND=kvm\n");
    for t in inner {
        let argv: Vec<String> = t.argv.iter().map(|a| nested::shell_quote(a)).collect();
        s.push_str(&format!(
            "echo '{BEGIN}{name}'; {env} {cmd} 2>&1; echo \"{END}{name} rc=$?\"\n",
            name = t.name,
            env = t.env,
            cmd = argv.join(" ")
        ));
    }
    s
}

/// Splits console lines into what each inner test did.
fn parse(lines: &[String]) -> Vec<(String, Ran)> {
    let mut out: Vec<(String, Ran)> = Vec::new();
    let mut current: Option<(String, Ran)> = None;
    for l in lines {
        if let Some(name) = l.strip_prefix(BEGIN) {
            current = Some((name.trim().to_string(), Ran::default()));
        } else if let Some(rest) = l.strip_prefix(END) {
            if let Some((name, mut ran)) = current.take() {
                ran.rc = rest
                    .rsplit_once("rc=")
                    .and_then(|(_, rc)| rc.trim().parse().ok());
                out.push((name, ran));
            }
        } else if let Some((_, ran)) = current.as_mut() {
            // "ktstr: t [1n1l2c1t] on kvm: ..." (runner) or "ktstr shell: booted on kvm".
            // libtest may print "test NAME ... " on the same line first.
            let said = l.find("ktstr: ").or_else(|| l.find("ktstr shell: "));
            if let Some((_, rest)) = said.and_then(|i| l[i..].split_once(" on ")) {
                ran.backend = rest.split([':', ' ']).next().map(str::to_string);
            }
            // run_host's "ktstr: NAME: INCONCLUSIVE (counted as neither ...)".
            ran.inconclusive |= l.contains(": INCONCLUSIVE");
            if l.contains("did not reach init") && l.contains("booting again") {
                ran.reboots += 1;
            }
            ran.output.push(l.clone());
        }
    }
    out
}

/// Why the set failed, one line per inner test that did.
fn verdict(inner: &[Inner], ran: &[(String, Ran)], inconclusive_fails: bool) -> Vec<String> {
    let mut problems = Vec::new();
    for t in inner {
        let runs: Vec<&Ran> = ran
            .iter()
            .filter(|(n, _)| *n == t.name)
            .map(|(_, r)| r)
            .collect();
        let [r] = runs.as_slice() else {
            problems.push(format!("{}: ran {} times, not once", t.name, runs.len()));
            continue;
        };
        if r.backend.as_deref() != Some("kvm") {
            problems.push(format!(
                "{}: ran on {}, not the own KVM VMM",
                t.name,
                r.backend.as_deref().unwrap_or("an unnamed backend")
            ));
        } else if r.rc != Some(t.rc) {
            problems.push(format!("{}: exit {:?}, expected {}", t.name, r.rc, t.rc));
        } else if !t.must_say.is_empty() && !r.output.iter().any(|l| l.contains(t.must_say)) {
            problems.push(format!("{}: no line says {:?}", t.name, t.must_say));
        } else if inconclusive_fails && r.inconclusive {
            problems.push(format!("{}: INCONCLUSIVE, not a verdict", t.name));
        }
    }
    problems
}

#[test]
fn parse_and_verdict_want_each_inner_test_once_on_kvm() {
    let inner = inner_tests(&SUITE, &|t| format!("/t/{t}"));
    let mut lines = Vec::new();
    for t in &inner {
        lines.push(format!("{BEGIN}{}", t.name));
        lines.push(if t.name.starts_with("shell") {
            "ktstr shell: booted on kvm".to_string()
        } else {
            format!(
                "test x ... ktstr: {} [1n1l2c1t] on kvm: initramfs 1ms",
                t.name
            )
        });
        lines.push(format!("[ 1.0] {}", t.must_say));
        lines.push(format!("{END}{} rc={}", t.name, t.rc));
    }
    lines.insert(
        2,
        "ktstr: x: INCONCLUSIVE (counted as neither pass nor fail): gap".into(),
    );
    let ran = parse(&lines);
    assert_eq!(ran.len(), inner.len());
    assert!(ran[0].1.inconclusive && !ran[1].1.inconclusive);
    assert_eq!(ran[0].1.reboots, 0);
    assert!(
        verdict(&inner, &ran, false).is_empty(),
        "{:?}",
        verdict(&inner, &ran, false)
    );
    let mut bad = ran.clone();
    bad[0].1.backend = Some("qemu-tcg".into());
    bad[1].1.rc = Some(101);
    bad.remove(2);
    let p = verdict(&inner, &bad, false);
    assert_eq!(p.len(), 3, "{p:?}");
    assert!(p[0].contains("ran on qemu-tcg"), "{p:?}");
    assert!(p[1].contains("exit Some(101)"), "{p:?}");
    assert!(p[2].contains("ran 0 times"), "{p:?}");
    assert!(script(&inner).contains("'--exact' 'topology_1n3l2c1t'"));
    assert!(script(&inner).contains("KTSTR_RESTORE=1 '/t/examples'"));
    assert!(script(&inner).contains("KTSTR_RESTORE=0 '/t/topology'"));
}

/// The kernel `cargo xtask kernel fetch` cached (with its modules), or `KTSTR_KERNEL`.
fn kernel_dir() -> PathBuf {
    let kernel = ktstr::config::HostConfig::from_env()
        .expect("host configuration")
        .resolve_kernel(None)
        .expect("a kernel: run `cargo xtask kernel fetch`");
    kernel
        .vmlinux
        .parent()
        .expect("the kernel's directory")
        .to_path_buf()
}

#[ignore = "full: 13 of ktstr's own tests and 2 shell checks on the own VMM in a nested-SVM L1 (minutes); run with cargo xtask test --full"]
#[test]
fn ktstr_tests_on_the_own_vmm() {
    run_plan(&SUITE);
}

/// The fairness pair (`tests/fairness.rs`: an unfair scheduler must fail
/// naming fairness, a fair one must pass, on 1n1l2c1t and 1n2l2c2t) on the
/// own VMM with more vCPUs than the CPUs under it: inside the one-vCPU L1,
/// or directly on a host with fewer CPUs than 8. `KTSTR_NESTED_ROUNDS`
/// rounds (5 unless set); an INCONCLUSIVE verdict fails the entry.
#[ignore = "full: 20 fairness runs on the own VMM in a nested-SVM L1 (minutes); run with cargo xtask test --full"]
#[test]
fn fairness_pair_on_overcommitted_own_vmm() {
    let rounds = std::env::var("KTSTR_NESTED_ROUNDS")
        .ok()
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(5);
    run_plan(&Plan {
        sets: FAIRNESS_SET,
        rounds,
        shell: false,
        inconclusive_fails: true,
    });
}

/// Runs `plan`'s inner tests on the own VMM (directly, or in the L1) and
/// fails naming every inner test that did not do what it must.
fn run_plan(plan: &Plan) {
    let start = Instant::now();
    let bins = binaries(plan.sets);
    let (inner, lines, where_) = if ktstr_vmm::hardware_virtualization() {
        let path_of = |t: &str| -> String {
            match t {
                "ktstr" => bins.ktstr.display().to_string(),
                t => bins
                    .tests
                    .iter()
                    .find(|(n, _)| n == t)
                    .map(|(_, p)| p.display().to_string())
                    .unwrap_or_default(),
            }
        };
        let inner = inner_tests(plan, &path_of);
        let out = Command::new("sh")
            .arg("-c")
            .arg(script(&inner))
            .output()
            .expect("sh runs");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let lines = text.lines().map(str::to_string).collect();
        (inner, lines, "directly")
    } else {
        // In the L1: test binaries in /t/deps, the scheduler one level up,
        // where the runner's discovery looks; ktstr in /bin.
        let path_of = |t: &str| -> String {
            match t {
                "ktstr" => "/bin/ktstr".into(),
                t => format!("/t/deps/{t}"),
            }
        };
        let inner = inner_tests(plan, &path_of);
        let mut files: Vec<(PathBuf, String)> = bins
            .tests
            .iter()
            .map(|(t, p)| (p.clone(), format!("/t/deps/{t}")))
            .collect();
        files.push((bins.scheduler.clone(), "/t/scx-ktstr".into()));
        files.push((bins.ktstr.clone(), "/bin/ktstr".into()));
        let dir = kernel_dir();
        let run = nested::L1Run {
            kernel_dir: Path::new(&dir),
            files,
            script: script(&inner),
            timeout: Duration::from_secs(120 + 60 * inner.len() as u64),
            single_thread: false,
            kvm_amd_params: String::new(),
            // Snapshots and initramfs caches of 15 inner tests filled 3 GiB
            // ("No space left on device" for the last three).
            memory_mib: nested::L1_MEMORY_MIB + 1024,
        };
        let out = nested::run_in_l1_logged(&run);
        (inner, out.lines, "in a nested-SVM L1")
    };
    let ran = parse(&lines);
    for (name, r) in &ran {
        println!(
            "{name}: backend={} rc={}{}{} ({where_})",
            r.backend.as_deref().unwrap_or("?"),
            r.rc.map_or("?".into(), |c| c.to_string()),
            if r.inconclusive { " INCONCLUSIVE" } else { "" },
            if r.reboots > 0 {
                format!(" after {} boot(s) that never reached init", r.reboots)
            } else {
                String::new()
            }
        );
    }
    // The runner boots once more after a boot that hangs before init; such a
    // pass is said loudly here too, so the hang is not hidden by the retry.
    for (name, r) in ran.iter().filter(|(_, r)| r.reboots > 0) {
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            format!(
                "ktstr: nested: WARNING: {name}: {} boot(s) hung before init\n",
                r.reboots
            )
            .as_bytes(),
        );
    }
    let inconclusive: Vec<&str> = ran
        .iter()
        .filter(|(_, r)| r.inconclusive)
        .map(|(n, _)| n.as_str())
        .collect();
    if !inconclusive.is_empty() {
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            format!(
                "ktstr: nested: {} inner tests INCONCLUSIVE (counted as neither pass nor fail): {}\n",
                inconclusive.len(),
                inconclusive.join(", ")
            )
            .as_bytes(),
        );
    }
    println!(
        "{} of {} inner tests reported in {:.1} s",
        ran.len(),
        inner.len(),
        start.elapsed().as_secs_f64()
    );
    let mut problems = verdict(&inner, &ran, plan.inconclusive_fails);
    problems.extend(
        lines
            .iter()
            .filter(|l| l.contains(nested::L1_PREFIX) && l.contains("Unhandled"))
            .cloned(),
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
