//! `cargo xtask bench`: speed goals measured against a named competitor,
//! reported as medians and ratios.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use argh::FromArgs;
use ktstr_initramfs::Archive;

use crate::error::{CommandError, FileError, status};

/// What a benchmark failed with.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Monitor(#[from] crate::bench_monitor::MonitorBenchError),
    #[error(transparent)]
    KernelBuild(#[from] crate::bench_kernel::KernelBuildBenchError),
    #[error(transparent)]
    Command(#[from] CommandError),
    /// A benchmark test (restore, record) failed.
    #[error("the benchmark {test} failed")]
    Test {
        /// The test.
        test: &'static str,
        #[source]
        source: CommandError,
    },
    /// `cargo build` of the ktstr binary failed.
    #[error("building the ktstr binary failed")]
    KtstrBuild(#[source] CommandError),
    #[error(transparent)]
    Config(#[from] ktstr::config::ConfigError),
    #[error(transparent)]
    Kernel(#[from] ktstr_kernel::KernelError),
    /// The competitor's initramfs could not be made.
    #[error("the bare initramfs")]
    Initramfs(#[source] ktstr_initramfs::InitramfsError),
    #[error(transparent)]
    File(#[from] FileError),
}

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
    Record(RecordBench),
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

/// Record and replay (tests/tests/record_replay.rs): the examples' steady
/// test recorded against booted cold and restored, alternating; medians and
/// ratios, the recording's size per guest second, a replay's speed.
#[derive(FromArgs)]
#[argh(subcommand, name = "record")]
struct RecordBench {
    /// timed runs of each side
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

pub fn run(cmd: &BenchCmd) -> Result<(), BenchError> {
    match &cmd.which {
        Which::Shell(b) => shell(b),
        Which::Monitor(b) => Ok(crate::bench_monitor::run(b)?),
        Which::MonitorOnce(b) => Ok(crate::bench_monitor::once(b)?),
        Which::Restore(b) => restore(b),
        // Passing runs keep their recordings, to be measured.
        Which::Record(b) => bench_test(
            ("ktstr-tests", "record_replay", "record_cost_bench"),
            b.runs,
            &[("KTSTR_RECORD", "all")],
        ),
        Which::KernelBuild(b) => Ok(crate::bench_kernel::run(b)?),
    }
}

fn restore(b: &RestoreBench) -> Result<(), BenchError> {
    for test in [
        ("ktstr-vmm", "qemu_restore", "restore_vs_cold_boot_bench"),
        (
            "ktstr-tests",
            "restore",
            "restore_vs_cold_test_overhead_bench",
        ),
    ] {
        bench_test(test, b.runs, &[])?;
    }
    Ok(())
}

/// Runs the benchmark test `(package, target, test)`, a `--full` test
/// (`#[ignore]`d in the default run), with `KTSTR_BENCH_RUNS` and `env`.
fn bench_test(
    (package, target, test): (&str, &str, &'static str),
    runs: usize,
    env: &[(&str, &str)],
) -> Result<(), BenchError> {
    status(
        Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .current_dir(workspace())
            .args(["test", "-q", "-p", package, "--test", target])
            .args([test, "--", "--include-ignored", "--exact", "--nocapture"])
            .env("KTSTR_BENCH_RUNS", runs.to_string())
            .envs(env.iter().copied()),
    )
    .map_err(|source| BenchError::Test { test, source })
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"))
}

fn time(cmd: &mut Command) -> Result<Duration, CommandError> {
    let t0 = Instant::now();
    status(cmd.stdout(Stdio::null()).stderr(Stdio::null()))?;
    Ok(t0.elapsed())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Builds the `ktstr` command (the shell's guest agent too) and returns its path.
pub(crate) fn build_ktstr() -> Result<PathBuf, BenchError> {
    status(
        Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
            .current_dir(workspace())
            .args(["build", "-q", "-p", "ktstr-cli", "--bin", "ktstr"]),
    )
    .map_err(BenchError::KtstrBuild)?;
    Ok(target_dir().join("debug/ktstr"))
}

fn shell(b: &ShellBench) -> Result<(), BenchError> {
    let kernel = crate::host()?.resolve_kernel(None)?;
    let ktstr_bin = build_ktstr()?;

    // The competitor: busybox as /init that powers off at once.
    let mut a = Archive::new();
    a.add_file("/bin/busybox", 0o755, "/bin/busybox")
        .map_err(BenchError::Initramfs)?;
    a.add_bytes(
        "/init",
        0o755,
        b"#!/bin/busybox sh\n/bin/busybox poweroff -f\n".to_vec(),
    )
    .map_err(BenchError::Initramfs)?;
    let dir = std::env::temp_dir().join(format!("ktstr-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(FileError::at("creating", &dir))?;
    let initrd = dir.join("bare.cpio");
    let bytes = a.to_vec().map_err(BenchError::Initramfs)?;
    std::fs::write(&initrd, bytes).map_err(FileError::at("writing", &initrd))?;

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
