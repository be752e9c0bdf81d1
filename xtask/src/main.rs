//! ktstr's developer tasks: `cargo xtask <command>`.
//!
//! Set-up of a fresh machine, kernel fetch, the whole test suite and the demo
//! live here so that the README's two commands do everything.

mod bench;
mod bench_kernel;
mod bench_monitor;
mod kernels;
mod kselftest;
mod nested_qemu;
mod schedulers;
mod setup;
mod stress;
mod test;

use std::process::ExitCode;

use argh::FromArgs;

/// ktstr developer tasks.
#[derive(FromArgs)]
struct Xtask {
    #[argh(subcommand)]
    cmd: Cmd,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Cmd {
    Setup(SetupCmd),
    Kernel(ktstr_kernel::cli::KernelCmd),
    Test(test::TestCmd),
    Demo(test::DemoCmd),
    Schedulers(schedulers::SchedulersCmd),
    Bench(bench::BenchCmd),
    StressBoots(stress::StressCmd),
    Initramfs(InitramfsCmd),
    Btf(BtfCmd),
    Kselftest(kselftest::KselftestCmd),
}

/// BTF tools.
#[derive(FromArgs)]
#[argh(subcommand, name = "btf")]
struct BtfCmd {
    #[argh(subcommand)]
    cmd: BtfSub,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum BtfSub {
    DumpC(DumpCCmd),
}

/// Write a vmlinux.h (C declarations of every BTF type) for BPF programs.
#[derive(FromArgs)]
#[argh(subcommand, name = "dump-c")]
struct DumpCCmd {
    /// the kernel (vmlinux, bzImage, build tree; default: KTSTR_KERNEL, then the newest cached)
    #[argh(option)]
    kernel: Option<ktstr_kernel::KernelSpec>,
    /// where to write the header (default: stdout)
    #[argh(option, short = 'o')]
    out: Option<std::path::PathBuf>,
}

fn btf_dump_c(cmd: &DumpCCmd) -> Result<(), String> {
    let kernel = host()?
        .resolve_kernel(cmd.kernel.as_ref())
        .map_err(|e| e.to_string())?;
    let elf =
        std::fs::read(&kernel.vmlinux).map_err(|e| format!("{}: {e}", kernel.vmlinux.display()))?;
    let section = ktstr_btf::elf::btf_section(&elf).map_err(|e| e.to_string())?;
    let btf = ktstr_btf::Btf::parse(section).map_err(|e| e.to_string())?;
    let mut header = String::new();
    ktstr_btf::c_dump::write_header(&btf, &mut header).map_err(|e| e.to_string())?;
    match &cmd.out {
        Some(p) => std::fs::write(p, header).map_err(|e| format!("{}: {e}", p.display())),
        None => {
            print!("{header}");
            Ok(())
        }
    }
}

/// Pack binaries with their shared libraries into a cpio archive, for inspection.
#[derive(FromArgs)]
#[argh(subcommand, name = "initramfs")]
struct InitramfsCmd {
    /// a binary to pack at /bin/NAME (repeatable)
    #[argh(option)]
    bin: Vec<std::path::PathBuf>,
    /// the archive to write
    #[argh(option, short = 'o')]
    out: std::path::PathBuf,
}

/// Install every system package the project needs (idempotent; Debian, root).
#[derive(FromArgs)]
#[argh(subcommand, name = "setup")]
struct SetupCmd {
    /// also install mdBook to build the book in docs/ (a cargo install of
    /// several minutes; `cargo xtask test --full` does it too)
    #[argh(switch)]
    book: bool,
    /// also make the private trixie root with QEMU 11.1 for the nested
    /// own-VMM tests (KTSTR_L1_QEMU; about 500 MB under the cache)
    #[argh(switch)]
    nested_qemu: bool,
}

fn main() -> ExitCode {
    // `cargo xtask kselftest` boots shell VMs with this binary as the guest's
    // init: there it runs the shell agent and never returns.
    ktstr::shell::agent_main();
    let args: Xtask = argh::from_env();
    let result = match args.cmd {
        Cmd::Setup(s) => setup::run()
            .and_then(|()| {
                if s.book {
                    setup::ensure_mdbook()
                } else {
                    Ok(())
                }
            })
            .and_then(|()| {
                if s.nested_qemu {
                    nested_qemu::ensure().map(drop)
                } else {
                    Ok(())
                }
            }),
        Cmd::Kernel(k) => {
            kernel_env().and_then(|env| k.run("kernel", &env).map_err(|e| e.to_string()))
        }
        Cmd::Test(t) => test::run_test(&t),
        Cmd::Demo(d) => test::run_demo(&d),
        Cmd::Schedulers(s) => schedulers::run(&s),
        Cmd::Bench(b) => bench::run(&b),
        Cmd::StressBoots(s) => stress::run(&s),
        Cmd::Kselftest(k) => kselftest::run(&k),
        Cmd::Btf(BtfCmd {
            cmd: BtfSub::DumpC(d),
        }) => btf_dump_c(&d),
        Cmd::Initramfs(i) => ktstr_initramfs::pack_binaries(&i.bin, &i.out)
            .map(|r| {
                for f in &r.files {
                    println!("{} <- {}", f.guest, f.host.display());
                }
                println!("{}: {} bytes", i.out.display(), r.bytes);
            })
            .map_err(|e| e.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Fetches (or finds cached) the newest sched_ext kernel and says which.
pub(crate) fn kernel_fetch(offline: bool) -> Result<ktstr_kernel::CachedKernel, String> {
    ktstr_kernel::cli::kernel_fetch(offline, "kernel", &kernel_env()?).map_err(|e| e.to_string())
}

/// The host configuration (the environment, read once).
pub(crate) fn host() -> Result<&'static ktstr::config::HostConfig, String> {
    ktstr::config::HostConfig::global().map_err(|e| e.to_string())
}

fn kernel_env() -> Result<ktstr_kernel::KernelCmdEnv, String> {
    Ok(host()?.kernel_cmd_env())
}
