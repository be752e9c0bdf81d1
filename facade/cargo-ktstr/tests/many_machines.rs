//! Sharded runs end to end, as docs/src/many-machines.md measures them: a
//! package outside this workspace with 10 VM tests and their 20 gauntlet
//! variants (30 runs), packed once with `cargo ktstr archive`, run as a
//! single-machine reference and as 3 shards in 3 directories by `cargo-ktstr
//! run --archive` under `env -i PATH=/usr/bin:/bin` (no cargo, rustc or
//! cargo-nextest on PATH), merged: the merged run has exactly the tests and
//! verdicts of the reference, and the slowest shard is within 25% of the
//! mean. A damaged archive is refused by name.
//! Building the package and 60 VM runs take minutes: `cargo xtask test
//! --full` runs it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const TESTS: usize = 10;

fn tests_rs() -> String {
    let mut s = String::from("use ktstr::prelude::*;\n");
    for i in 0..TESTS {
        // At least 2 s: the monitor's checks judge 3 samples of the body at
        // 10 Hz, and a 1 s body on a loaded host got only 2 (inconclusive).
        let d = 2 + i % 3;
        s.push_str(&format!(
            r#"
#[ktstr_test(duration_s = {d}, max_cpus = 4)]
fn t{i}(ctx: &Ctx) -> Result<AssertResult> {{
    std::thread::sleep(std::time::Duration::from_secs({d}));
    let wrong = ctx.topology.sysfs_mismatches(&ktstr::topology::sysfs_view());
    if wrong.is_empty() {{
        Ok(AssertResult::pass())
    }} else {{
        Ok(AssertResult::fail("topology", wrong.join("; ")))
    }}
}}
"#
        ));
    }
    s
}

/// Runs cargo-ktstr in `dir`; with `bare`, in an environment of nothing but
/// `PATH=/usr/bin:/bin` (a machine without a Rust toolchain).
fn cargo_ktstr(dir: &Path, target: &Path, bare: bool, args: &[&str]) -> (bool, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cargo-ktstr"));
    c.arg("ktstr").args(args).current_dir(dir);
    if bare {
        c.env_clear().env("PATH", "/usr/bin:/bin");
    } else {
        c.env("CARGO_TARGET_DIR", target);
    }
    let out = c.output().expect("cargo-ktstr runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Shard `k` of 3 of `archive`, in `dir`, without a Rust toolchain.
fn shard(work: &Path, archive: &str, k: usize, dir: &str) -> (bool, String) {
    let shard = format!("{k}/3");
    let args = ["run", "--archive", archive, "--shard", &shard, "--dir", dir];
    cargo_ktstr(work, Path::new(""), true, &args)
}

/// (libtest name -> verdict) of every record below `store`.
fn verdicts(store: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for run in std::fs::read_dir(store.join("runs"))
        .expect("runs")
        .flatten()
    {
        for f in std::fs::read_dir(run.path()).expect("a run").flatten() {
            let text = std::fs::read_to_string(f.path()).expect("a record");
            let r: serde_json::Value = serde_json::from_str(&text).expect("JSON");
            let test = r["test"].as_str().expect("test");
            let mut name = test.split_once("::").map_or(test, |(_, p)| p).to_string();
            if let Some(p) = r["preset"].as_str() {
                name = format!("{name}::gauntlet::{}", p.replace('-', "_"));
            }
            let v = r["verdict"].as_str().expect("verdict").to_string();
            assert!(out.insert(name.clone(), v).is_none(), "{name} twice");
        }
    }
    out
}

#[test]
#[ignore = "full: builds a package outside the workspace and boots 60 VMs (about 10 minutes on 2 cores); run with cargo xtask test --full"]
fn sharded_runs_merge_to_the_single_machine_run() {
    let nextest_on_path = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("cargo-nextest").is_file()));
    assert!(
        nextest_on_path,
        "cargo-nextest is not in PATH: archives are nextest archives (install it)"
    );
    let facade = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("the facade");
    let pkg = tempfile::tempdir().expect("tempdir");
    let p = pkg.path();
    std::fs::create_dir_all(p.join("tests")).expect("mkdir");
    std::fs::create_dir_all(p.join("src")).expect("mkdir");
    std::fs::write(
        p.join("Cargo.toml"),
        format!(
            "[package]\nname = \"shard-scratch\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\
             publish = false\n\n[workspace]\n\n[dev-dependencies]\nktstr = {{ path = {:?} }}\n",
            facade.display().to_string()
        ),
    )
    .expect("Cargo.toml");
    std::fs::write(p.join("src/lib.rs"), "").expect("lib.rs");
    std::fs::write(p.join("tests/vm.rs"), tests_rs()).expect("tests");
    std::fs::copy(facade.join("../Cargo.lock"), p.join("Cargo.lock")).expect("Cargo.lock");
    // Kept between runs (shared with scratch_package.rs): a rerun does not
    // build ktstr again. Its results store is the package's history.
    let target = std::env::temp_dir().join("ktstr-scratch-package-target");
    let work = tempfile::tempdir().expect("tempdir");
    let w = |n: &str| -> PathBuf { work.path().join(n) };
    let s = |p: &Path| p.display().to_string();

    // One archive; the reference run from it, on "another machine".
    let (ok, out) = cargo_ktstr(
        p,
        &target,
        false,
        &["archive", "-o", &s(&w("run.tar.zst")), "--gauntlet"],
    );
    assert!(ok && out.contains(": 30 test(s)"), "{out}");
    let (ok, out) = cargo_ktstr(
        work.path(),
        &target,
        true,
        &["run", "--archive", "run.tar.zst", "--dir", "single"],
    );
    assert!(ok, "{out}");
    let single = verdicts(&w("single/results"));
    assert_eq!(single.len(), 3 * TESTS, "{single:?}");
    // Its records are the recorded costs the split balances.
    let history = target.join("ktstr");
    let run = format!("history-{}", std::process::id());
    let (ok, out) = cargo_ktstr(
        work.path(),
        &target,
        true,
        &["merge", "single", "-o", &s(&history), "--run", &run],
    );
    assert!(ok, "{out}");

    let (ok, out) = cargo_ktstr(
        p,
        &target,
        false,
        &[
            "archive",
            "-o",
            &s(&w("run3.tar.zst")),
            "--gauntlet",
            "--machines",
            "3",
        ],
    );
    assert!(ok && out.contains("shard 3/3"), "{out}");
    for k in 1..=3 {
        let (ok, out) = shard(work.path(), "run3.tar.zst", k, &format!("s{k}"));
        assert!(ok, "shard {k}: {out}");
    }
    let (ok, out) = cargo_ktstr(
        work.path(),
        &target,
        true,
        &["merge", "s1", "s2", "s3", "-o", "merged", "--run", "merged"],
    );
    assert!(
        ok && out.contains("every test of the archive has exactly one record"),
        "{out}"
    );
    let merged = verdicts(&w("merged"));
    assert_eq!(merged, single, "the merged run is the single-machine run");
    for f in ["report.html", "junit.xml", "trace.json"] {
        assert!(w("merged/reports/merged").join(f).is_file(), "{f}");
    }

    // Shard balance, from the shards' own wall times.
    let walls: Vec<f64> = (1..=3)
        .map(|k| {
            let text = std::fs::read_to_string(w(&format!("s{k}/results/shard.json")))
                .expect("shard.json");
            let m: serde_json::Value = serde_json::from_str(&text).expect("JSON");
            m["wall_s"].as_f64().expect("the shard ended")
        })
        .collect();
    let mean = walls.iter().sum::<f64>() / 3.0;
    let max = walls.iter().copied().fold(0.0, f64::max);
    println!(
        "shard walls {walls:?} s, slowest {:.1}% above the mean",
        (max / mean - 1.0) * 100.0
    );
    assert!(
        max <= mean * 1.25,
        "shards {walls:?}: the slowest is over 25% above the mean"
    );

    // A damaged archive is refused by name (another version: unit-tested).
    let bytes = std::fs::read(w("run3.tar.zst")).expect("archive");
    std::fs::write(w("cut.tar.zst"), &bytes[..bytes.len() / 2]).expect("write");
    let (ok, out) = shard(work.path(), "cut.tar.zst", 1, "cut");
    assert!(
        !ok && out.contains("cut.tar.zst: damaged or not a ktstr archive"),
        "{out}"
    );
}
