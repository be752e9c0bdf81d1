//! The gauntlet and the results store, end to end: a test's variants are
//! listed as ignored tests (a plain run never runs them), a variant boots its
//! preset's topology (checked in the guest), and its run leaves a record.

use ktstr::prelude::*;
use ktstr::test_support::{Outcome, RunOptions, run};

fn run_variant(name: &str, preset: &str) -> Outcome {
    let opts = RunOptions {
        preset: Some(preset),
        ..RunOptions::default()
    };
    run(name, &opts).outcome()
}

/// The guest sees exactly the topology it was given.
#[ktstr_test(duration_s = 1, max_cpus = 8)]
fn sees_its_topology(ctx: &Ctx) -> Result<AssertResult> {
    let t = &ctx.topology;
    let wrong = t.sysfs_mismatches(&ktstr::topology::sysfs_view());
    if wrong.is_empty() {
        Ok(AssertResult::pass().note("topology", format!("guest sees {t}")))
    } else {
        Ok(AssertResult::fail(
            "topology",
            format!("{t}: {}", wrong.join("; ")),
        ))
    }
}

fn list(args: &[&str]) -> Vec<String> {
    let exe = std::env::current_exe().expect("the test binary");
    let out = std::process::Command::new(exe)
        .args(args)
        .output()
        .expect("the test binary lists its tests");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_suffix(": test").map(str::to_string))
        .collect()
}

#[test]
fn variants_are_listed_as_ignored_tests_on_the_allowed_presets() {
    let ignored = list(&["--list", "--ignored"]);
    let want = [
        "sees_its_topology::gauntlet::tiny",
        "sees_its_topology::gauntlet::llc3",
        "sees_its_topology::gauntlet::smt",
        "sees_its_topology::gauntlet::numa4",
    ];
    for w in want {
        assert!(
            ignored.iter().any(|n| n == w),
            "{w} not ignored: {ignored:?}"
        );
    }
    // max_cpus = 8 keeps 9-CPU and larger presets (llc3x3, llc4, llc2-smt) out.
    assert!(
        !ignored
            .iter()
            .any(|n| n.ends_with("::llc3x3") || n.ends_with("::llc2_smt"))
    );
    // The plain test is not ignored.
    assert!(!ignored.iter().any(|n| n == "sees_its_topology"));
    assert!(list(&["--list"]).iter().any(|n| n == "sees_its_topology"));
}

#[test]
fn vm_a_variant_boots_its_preset_and_leaves_a_record() {
    let name = "gauntlet::sees_its_topology";
    match run_variant(name, "llc3") {
        Outcome::Pass(_) => {}
        other => panic!("the llc3 variant did not pass: {other:?}"),
    }
    assert!(
        matches!(run_variant(name, "no-such-preset"), Outcome::Fail(m) if m.contains("no-such-preset"))
    );
    let host = ktstr::config::HostConfig::global().expect("host config");
    let store = ktstr::results::store_dir(host).expect("a store above the test binary");
    let file = store
        .join("runs")
        .join(ktstr::results::run_id(host))
        .join(ktstr::results::record_file_name(name, Some("llc3")));
    let rec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).expect("the variant's record")).expect("JSON");
    assert_eq!(rec["variant"], "gauntlet/sees_its_topology/llc3");
    assert_eq!(rec["topology"], "1n3l2c1t");
    assert_eq!(rec["verdict"], "pass");
    let seen = rec["checks"][0]["message"].as_str().unwrap_or_default();
    assert_eq!(seen, "guest sees 1n3l2c1t", "{rec:#}");
    assert_eq!(
        rec["kernel"]["sha256"].as_str().map(str::len),
        Some(64),
        "{rec:#}"
    );
    assert!(
        rec["phases_s"]["boot_to_init"]
            .as_f64()
            .is_some_and(|s| s > 0.0)
    );
}
