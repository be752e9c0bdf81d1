//! The published crates' examples, run as their users run them: the example
//! binary with arguments, its output checked.
//!
//! - `ktstr-vmm`'s `two_llc` boots the cached kernel on 1n2l2c1t and prints
//!   the guest's `nproc` and L3 groups (one VM, ~15 s under QEMU TCG);
//! - `ktstr-btf`'s `layout` prints a struct of the cached kernel's BTF, checked
//!   against the crate's own member lookup;
//! - `ktstr-topology`'s `cpu_map` prints a preset's CPU map.
//!
//! `cargo nextest run --workspace` (so `cargo xtask test`) builds every
//! example before running tests; run alone (`cargo test -p ktstr-tests --test
//! crate_examples`) an example that was not built is built here with cargo.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The example binary `name` of `package`, built if it is not there yet.
fn example(package: &str, name: &str) -> PathBuf {
    // target/<profile>/deps/<this test> -> target/<profile>/examples/<name>
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test binary sits in target/<profile>/deps");
    let bin = profile_dir.join("examples").join(name);
    if !bin.is_file() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-q", "-p", package, "--example", name])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo");
        assert!(
            status.success(),
            "cargo build -p {package} --example {name} failed"
        );
    }
    assert!(
        bin.is_file(),
        "{} is missing after the build",
        bin.display()
    );
    bin
}

/// Runs `bin` with `args`; its stdout, or a failure naming its stderr.
fn run(bin: &Path, args: &[&str]) -> String {
    let out = Command::new(bin)
        .args(args)
        .output()
        .expect("run the example");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{} {args:?} exited with {}\nstdout:\n{stdout}\nstderr:\n{}",
        bin.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The cached kernel the VM tests use (`KTSTR_KERNEL`, else the newest cached).
fn kernel() -> PathBuf {
    let var = |k: &str| std::env::var_os(k).map(PathBuf::from);
    ktstr_kernel::vmlinux_for_tests(
        std::env::var("KTSTR_KERNEL").ok().as_deref(),
        var("KTSTR_CACHE_DIR").as_deref(),
        var("XDG_CACHE_HOME").as_deref(),
        var("HOME").as_deref(),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn vmm_example_boots_two_llcs_and_prints_what_the_guest_sees() {
    let kernel = kernel();
    let out = run(
        &example("ktstr-vmm", "two_llc"),
        &[kernel.to_str().expect("a UTF-8 kernel path")],
    );
    let lines: Vec<&str> = out
        .lines()
        .filter(|l| !l.starts_with("backend: "))
        .collect();
    assert_eq!(
        lines,
        ["nproc: 4", "L3 group: 0-1", "L3 group: 2-3"],
        "the guest of 1n2l2c1t sees 4 CPUs in two LLCs:\n{out}"
    );
}

#[test]
fn btf_example_prints_a_structs_layout() {
    let kernel = kernel();
    let out = run(
        &example("ktstr-btf", "layout"),
        &[
            kernel.to_str().expect("a UTF-8 kernel path"),
            "sched_ext_entity",
        ],
    );
    let vmlinux = std::fs::read(&kernel).expect("read the kernel");
    let btf = ktstr_btf::Btf::parse(ktstr_btf::elf::btf_section(&vmlinux).expect(".BTF"))
        .expect("parse the kernel's BTF");
    let dsq = btf
        .member("sched_ext_entity", "dsq")
        .expect("sched_ext_entity.dsq");
    let size = btf
        .size_of(btf.composite("sched_ext_entity").expect("struct"))
        .expect("size");
    assert!(out.starts_with("struct sched_ext_entity {\n"), "{out}");
    let line = out
        .lines()
        .find(|l| l.contains(" dsq;"))
        .unwrap_or_else(|| panic!("no dsq member:\n{out}"));
    assert!(line.contains("struct scx_dispatch_q *"), "{line}");
    assert!(
        line.ends_with(&format!("/* {} 8 */", dsq.byte_offset())),
        "{line}"
    );
    assert!(
        out.contains(&format!("/* size: {size}, align: 8 */")),
        "{out}"
    );
}

#[test]
fn topology_example_prints_a_cpu_map() {
    let out = run(&example("ktstr-topology", "cpu_map"), &["numa2-llc4"]);
    let expected_cpu5 = "  5     0    1     0       1     5";
    assert!(
        out.starts_with("2n4l2c2t: 16 CPUs, 2 node(s), 4 LLC(s)"),
        "{out}"
    );
    assert!(out.lines().any(|l| l == expected_cpu5), "{out}");
    for line in ["node 1: cpus 8-15", "llc 3: cpus 12-15"] {
        assert!(out.lines().any(|l| l == line), "no {line:?} in:\n{out}");
    }
}
