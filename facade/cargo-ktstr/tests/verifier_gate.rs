//! `cargo ktstr verifier` end to end: the fixture scheduler's programs get every figure
//! (the states and peak states from the guest's verifier probe included), the baseline is
//! written, and a copy of the fixture with a planted complexity regression (an unrolled
//! loop in `ktstr_enqueue`) fails the gate naming the program and its growth.

use std::path::PathBuf;
use std::process::Command;

/// The fixture scheduler, built beside this test's binary (`target/<profile>/scx-ktstr`).
fn scx_ktstr() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps/<test>");
    let bin = profile_dir.join("scx-ktstr");
    assert!(
        bin.is_file(),
        "{} is missing: build the fixture first (cargo build -p ktstr-tests)",
        bin.display()
    );
    bin
}

fn verifier(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cargo-ktstr"))
        .args(["ktstr", "verifier", "--scheduler"])
        .arg(scx_ktstr())
        .args(args)
        .output()
        .expect("cargo-ktstr runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    (out.status.success(), text)
}

#[test]
fn vm_verifier_figures_and_the_baseline_gate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let baseline = dir.path().join("verifier-baseline.json");
    let bl = baseline.to_str().expect("utf-8 path");
    let (ok, text) = verifier(&["--baseline", bl, "--update-baseline"]);
    assert!(ok, "measuring the fixture failed:\n{text}");
    // Every program's row has numbers in all six columns, states included.
    let mut states_total = 0;
    for prog in [
        "ktstr_enqueue",
        "ktstr_dispatch",
        "ktstr_init",
        "ktstr_exit",
        "ktstr_select_cp",
    ] {
        let row = text
            .lines()
            .find(|l| l.starts_with(prog))
            .unwrap_or_else(|| panic!("no row for {prog}:\n{text}"));
        let cells: Vec<&str> = row[prog.len()..].split(" / ").map(str::trim).collect();
        assert_eq!(cells.len(), 6, "{row}");
        for c in &cells {
            assert!(c.parse::<f64>().is_ok(), "a figure is missing in {row:?}");
        }
        // Peak states may exceed states: the kernel's peak also counts states on the free
        // list and loop back-edges. A straight-line program may have none.
        states_total += cells[1].parse::<u64>().expect("states");
    }
    assert!(states_total > 0, "no program has a verifier state:\n{text}");
    let written = std::fs::read_to_string(&baseline).expect("the baseline was written");
    assert!(written.contains("scx-ktstr/ktstr_enqueue"), "{written}");

    let (ok, text) = verifier(&["--sched-args", "--planted-complexity", "--baseline", bl]);
    assert!(!ok, "the planted regression passed the gate:\n{text}");
    let line = text
        .lines()
        .find(|l| l.contains("scx-ktstr/ktstr_enqueue") && l.contains("over the 10% allowed"))
        .unwrap_or_else(|| panic!("the gate does not name ktstr_enqueue's growth:\n{text}"));
    assert!(line.contains("in the baseline: +"), "{line}");
    // Only the planted program grew.
    assert!(
        !text.contains("scx-ktstr/ktstr_dispatch"),
        "an unchanged program failed the gate:\n{text}"
    );
}
