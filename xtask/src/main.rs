//! ktstr's developer tasks: `cargo xtask <command>`.
//!
//! Set-up of a fresh machine, kernel fetch, the whole test suite and the demo
//! live here so that the README's two commands do everything.

mod bench;
mod bench_kernel;
mod bench_monitor;
mod error;
mod kernels;
mod kselftest;
mod nested_qemu;
mod schedulers;
mod setup;
mod stress;
mod test;

use std::process::ExitCode;

use argh::FromArgs;

use error::{FileError, KernelCmdError};

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

/// What a task failed with, as `main` prints it.
#[derive(Debug, thiserror::Error)]
enum XtaskError {
    #[error(transparent)]
    Setup(#[from] setup::SetupError),
    #[error(transparent)]
    NestedQemu(#[from] nested_qemu::NestedQemuError),
    #[error(transparent)]
    KernelCmd(#[from] KernelCmdError),
    #[error(transparent)]
    Test(#[from] test::TestError),
    #[error(transparent)]
    Schedulers(#[from] schedulers::SchedulersError),
    #[error(transparent)]
    Bench(#[from] bench::BenchError),
    #[error(transparent)]
    Stress(#[from] stress::StressError),
    #[error(transparent)]
    Kselftest(#[from] kselftest::KselftestError),
    #[error(transparent)]
    Config(#[from] ktstr::config::ConfigError),
    #[error(transparent)]
    Kernel(#[from] ktstr_kernel::KernelError),
    #[error(transparent)]
    File(#[from] FileError),
    /// The kernel's BTF could not be read or dumped.
    #[error("the BTF of {}", vmlinux.display())]
    Btf {
        vmlinux: std::path::PathBuf,
        #[source]
        source: ktstr_btf::BtfError,
    },
    #[error(transparent)]
    Initramfs(#[from] ktstr_initramfs::InitramfsError),
}

fn btf_dump_c(cmd: &DumpCCmd) -> Result<(), XtaskError> {
    let kernel = host()?.resolve_kernel(cmd.kernel.as_ref())?;
    let vmlinux = &kernel.vmlinux;
    let elf = std::fs::read(vmlinux).map_err(FileError::at("reading", vmlinux))?;
    let btf_error = |source| XtaskError::Btf {
        vmlinux: vmlinux.clone(),
        source,
    };
    let section = ktstr_btf::elf::btf_section(&elf).map_err(btf_error)?;
    let btf = ktstr_btf::Btf::parse(section).map_err(btf_error)?;
    let mut header = String::new();
    ktstr_btf::c_dump::write_header(&btf, &mut header).map_err(btf_error)?;
    match &cmd.out {
        Some(p) => std::fs::write(p, header).map_err(FileError::at("writing", p))?,
        None => print!("{header}"),
    }
    Ok(())
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
    match run(args.cmd) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {}", error::report(&e));
            ExitCode::FAILURE
        }
    }
}

fn run(cmd: Cmd) -> Result<(), XtaskError> {
    match cmd {
        Cmd::Setup(s) => {
            setup::run()?;
            if s.book {
                setup::ensure_mdbook()?;
            }
            if s.nested_qemu {
                nested_qemu::ensure()?;
            }
        }
        Cmd::Kernel(k) => {
            let env = kernel_env()?;
            k.run("kernel", &env).map_err(KernelCmdError::from)?;
        }
        Cmd::Test(t) => test::run_test(&t)?,
        Cmd::Demo(d) => test::run_demo(&d)?,
        Cmd::Schedulers(s) => schedulers::run(&s)?,
        Cmd::Bench(b) => bench::run(&b)?,
        Cmd::StressBoots(s) => stress::run(&s)?,
        Cmd::Kselftest(k) => kselftest::run(&k)?,
        Cmd::Btf(BtfCmd {
            cmd: BtfSub::DumpC(d),
        }) => btf_dump_c(&d)?,
        Cmd::Initramfs(i) => {
            let r = ktstr_initramfs::pack_binaries(&i.bin, &i.out)?;
            for f in &r.files {
                println!("{} <- {}", f.guest, f.host.display());
            }
            println!("{}: {} bytes", i.out.display(), r.bytes);
        }
    }
    Ok(())
}

/// Fetches (or finds cached) the newest sched_ext kernel and says which.
pub(crate) fn kernel_fetch(offline: bool) -> Result<ktstr_kernel::CachedKernel, KernelCmdError> {
    ktstr_kernel::cli::kernel_fetch(offline, "kernel", &kernel_env()?).map_err(KernelCmdError::from)
}

/// The host configuration (the environment, read once).
pub(crate) fn host() -> Result<&'static ktstr::config::HostConfig, ktstr::config::ConfigError> {
    ktstr::config::HostConfig::global()
}

fn kernel_env() -> Result<ktstr_kernel::KernelCmdEnv, ktstr::config::ConfigError> {
    Ok(host()?.kernel_cmd_env())
}
