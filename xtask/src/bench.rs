//! `cargo xtask bench`: speed goals measured against a named competitor,
//! reported as medians and ratios.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use argh::FromArgs;
use ktstr_initramfs::Archive;

/// Benchmarks with medians and ratios against the named competitor.
#[derive(FromArgs)]
#[argh(subcommand, name = "bench")]
pub struct BenchCmd {
    #[argh(subcommand)]
    which: Which,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Which {
    Shell(ShellBench),
    Monitor(crate::bench_monitor::MonitorBench),
    MonitorOnce(crate::bench_monitor::MonitorOnce),
    Restore(RestoreBench),
    KernelBuild(crate::bench_kernel::KernelBuildBench),
}

/// Boot once, restore many (QEMU): cold boot to a waiting guest agent
/// against restoring a saved one to the agent's answer (vmm/tests/qemu_restore.rs),
/// then the per-test overhead (wall minus body minus host-slot wait) of a
/// trivial `#[ktstr_test]` booted cold against restored (tests/tests/restore.rs);
/// both on 1n1l2c1t and 1n2l2c2t, medians and ratio.
#[derive(FromArgs)]
#[argh(subcommand, name = "restore")]
struct RestoreBench {
    /// timed cold boots and restores of each shape
    #[argh(option, default = "5")]
    runs: usize,
}

/// `ktstr shell --topology 1n1l2c1t --exec true` against bare qemu-system-x86_64
/// booting the same kernel with a busybox initramfs that powers off.
#[derive(FromArgs)]
#[argh(subcommand, name = "shell")]
struct ShellBench {
    /// timed runs of each side (after one warm-up run each)
    #[argh(option, default = "7")]
    runs: usize,
}

pub fn run(cmd: &BenchCmd) -> Result<(), String> {
    match &cmd.which {
        Which::Shell(b) => shell(b),
        Which::Monitor(b) => crate::bench_monitor::run(b),
        Which::MonitorOnce(b) => crate::bench_monitor::once(b),
        Which::Restore(b) => restore(b),
        Which::KernelBuild(b) => crate::bench_kernel::run(b),
    }
}

fn restore(b: &RestoreBench) -> Result<(), String> {
    for (package, target, test) in [
        ("ktstr-vmm", "qemu_restore", "restore_vs_cold_boot_bench"),
        (
            "ktstr-tests",
            "restore",
            "restore_vs_cold_test_overhead_bench",
        ),
    ] {
        let st = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .current_dir(workspace())
            .args(["test", "-q", "-p", package, "--test", target])
            // Both are `--full` tests, `#[ignore]`d in the default run.
            .args([test, "--", "--include-ignored", "--exact", "--nocapture"])
            .env("KTSTR_BENCH_RUNS", b.runs.to_string())
            .status()
            .map_err(|e| e.to_string())?;
        if !st.success() {
            return Err(format!("the restore benchmark {test} failed ({st})"));
        }
    }
    Ok(())
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"))
}

fn time(cmd: &mut Command) -> Result<Duration, String> {
    let t0 = Instant::now();
    let st = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    let took = t0.elapsed();
    if !st.success() {
        return Err(format!("{cmd:?} exited with {st}"));
    }
    Ok(took)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Builds the `ktstr` command (the shell's guest agent too) and returns its path.
pub(crate) fn build_ktstr() -> Result<PathBuf, String> {
    let st = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .current_dir(workspace())
        .args(["build", "-q", "-p", "ktstr-cli", "--bin", "ktstr"])
        .status()
        .map_err(|e| e.to_string())?;
    if !st.success() {
        return Err("building the ktstr binary failed".into());
    }
    Ok(target_dir().join("debug/ktstr"))
}

fn shell(b: &ShellBench) -> Result<(), String> {
    let kernel = crate::host()?
        .resolve_kernel(None)
        .map_err(|e| e.to_string())?;
    let ktstr_bin = build_ktstr()?;

    // The competitor: busybox as /init that powers off at once.
    let mut a = Archive::new();
    a.add_file("/bin/busybox", 0o755, "/bin/busybox")
        .map_err(|e| e.to_string())?;
    a.add_bytes(
        "/init",
        0o755,
        b"#!/bin/busybox sh\n/bin/busybox poweroff -f\n".to_vec(),
    )
    .map_err(|e| e.to_string())?;
    let dir = std::env::temp_dir().join(format!("ktstr-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let initrd = dir.join("bare.cpio");
    std::fs::write(&initrd, a.to_vec().map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;

    let ours = || {
        let mut c = Command::new(&ktstr_bin);
        c.args(["shell", "--topology", "1n1l2c1t", "--exec", "true"]);
        c
    };
    let bare = || {
        let mut c = Command::new("qemu-system-x86_64");
        c.args([
            "-machine",
            "pc",
            // The same CPU emulation ktstr uses (instruction counting with
            // ktstr_vmm::qemu::ICOUNT), so the ratio is the harness's
            // overhead alone.
            "-accel",
            "tcg,thread=single",
            "-icount",
            "shift=2,sleep=on",
            "-cpu",
            "Nehalem,level=0x20",
        ])
        .args(["-smp", "2", "-m", "512M", "-nodefaults", "-no-user-config"])
        .args(["-display", "none", "-serial", "stdio", "-no-reboot"])
        .arg("-kernel")
        .arg(&kernel.vmlinux)
        .arg("-initrd")
        .arg(&initrd)
        .args([
            "-append",
            "console=ttyS0 panic=-1 nokaslr quiet rdinit=/init",
        ]);
        c
    };
    println!("bench shell: warm-up (initramfs cache, page cache)");
    time(&mut ours())?;
    time(&mut bare())?;
    let (mut o, mut q) = (vec![], vec![]);
    for i in 0..b.runs {
        // Alternate so drifting machine load hits both sides alike.
        o.push(time(&mut ours())?);
        q.push(time(&mut bare())?);
        println!(
            "bench shell: run {}: ktstr {:.2}s, bare qemu {:.2}s",
            i + 1,
            o[i].as_secs_f64(),
            q[i].as_secs_f64()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    let (mo, mq) = (median(o), median(q));
    println!(
        "bench shell: median ktstr shell {:.2}s, bare qemu {:.2}s, ratio {:.3} (goal <= 1.10)",
        mo.as_secs_f64(),
        mq.as_secs_f64(),
        mo.as_secs_f64() / mq.as_secs_f64()
    );
    Ok(())
}
