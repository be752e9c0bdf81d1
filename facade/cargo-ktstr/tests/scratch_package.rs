//! `cargo ktstr` in a package outside this workspace that takes `ktstr` as
//! a path dev-dependency, as a scheduler author's would: the gauntlet lists
//! each test's variants on the presets its constraints allow. No VM boots,
//! but building the package takes minutes: `cargo xtask test --full` runs
//! it (see .config/nextest.toml).

use std::path::Path;
use std::process::Command;

const TESTS: &str = r#"
use ktstr::prelude::*;

#[ktstr_test(duration_s = 1)]
fn anywhere(_ctx: &Ctx) -> Result<AssertResult> { Ok(AssertResult::pass()) }

#[ktstr_test(duration_s = 1, requires_smt = true, min_numa_nodes = 2)]
fn smt_numa_only(_ctx: &Ctx) -> Result<AssertResult> { Ok(AssertResult::pass()) }
"#;

fn cargo_ktstr(dir: &Path, target: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cargo-ktstr"))
        .arg("ktstr")
        .args(args)
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", target)
        .output()
        .expect("cargo-ktstr runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
#[ignore = "full: builds a package outside the workspace (about 1.5 minutes of compiling); run with cargo xtask test --full"]
fn scratch_package_lists_its_gauntlet() {
    let facade = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let facade = facade.canonicalize().expect("the facade");
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("tests")).expect("mkdir");
    std::fs::create_dir_all(dir.path().join("src")).expect("mkdir");
    std::fs::write(
        dir.path().join("Cargo.toml"),
        format!(
            "[package]\nname = \"scratch-sched\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\
             publish = false\n\n[workspace]\n\n[dev-dependencies]\nktstr = {{ path = {:?} }}\n",
            facade.display().to_string()
        ),
    )
    .expect("Cargo.toml");
    std::fs::write(dir.path().join("src/lib.rs"), "").expect("lib.rs");
    std::fs::write(dir.path().join("tests/sched.rs"), TESTS).expect("tests");
    // The same versions as this workspace, and a target directory kept
    // between runs so a rerun does not build everything again.
    let lock = facade.join("../Cargo.lock");
    std::fs::copy(&lock, dir.path().join("Cargo.lock")).expect("Cargo.lock");
    let target = std::env::temp_dir().join("ktstr-scratch-package-target");

    let (ok, out) = cargo_ktstr(dir.path(), &target, &["gauntlet", "--list"]);
    assert!(ok, "{out}");
    for v in [
        "gauntlet/anywhere/tiny",
        "gauntlet/anywhere/llc3x3",
        "gauntlet/anywhere/numa4",
    ] {
        assert!(out.contains(v), "{v} missing:\n{out}");
    }
    assert!(out.contains("anywhere::gauntlet::llc2_smt"), "{out}");
    assert!(
        !out.contains("gauntlet/anywhere/large"),
        "over the default max_cpus:\n{out}"
    );
    // requires_smt + min_numa_nodes = 2: numa2-llc4 alone within 16 CPUs.
    let smt_numa: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("gauntlet/smt_numa_only/"))
        .collect();
    assert_eq!(smt_numa.len(), 1, "{out}");
    assert!(smt_numa[0].contains("2n4l2c2t") && smt_numa[0].contains("smt,several-llcs,numa"));

    let (ok, out) = cargo_ktstr(dir.path(), &target, &["stats", "list"]);
    assert!(ok && out.starts_with("RUN "), "{out}");
    let (ok, out) = cargo_ktstr(dir.path(), &target, &["stats", "list", "--run", "nope"]);
    assert!(!ok && out.contains("stats list"), "{out}");
}
