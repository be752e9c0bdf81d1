//! ktstr's developer tasks: `cargo xtask <command>`.
//!
//! Set-up of a fresh machine, kernel fetch, the whole test suite and the demo
//! live here so that the README's two commands do everything.

mod setup;
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
    Kernel(KernelCmd),
    Test(test::TestCmd),
    Demo(test::DemoCmd),
}

/// Install every system package the project needs (idempotent; Debian, root).
#[derive(FromArgs)]
#[argh(subcommand, name = "setup")]
struct SetupCmd {}

/// Fetch and list kernels.
#[derive(FromArgs)]
#[argh(subcommand, name = "kernel")]
struct KernelCmd {
    #[argh(subcommand)]
    cmd: KernelSub,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum KernelSub {
    Fetch(FetchCmd),
    List(ListCmd),
}

/// Download the newest Debian cloud kernel with sched_ext into the cache.
#[derive(FromArgs)]
#[argh(subcommand, name = "fetch")]
struct FetchCmd {
    /// use the cache only, never the network
    #[argh(switch)]
    offline: bool,
}

/// List cached kernels, newest first.
#[derive(FromArgs)]
#[argh(subcommand, name = "list")]
struct ListCmd {}

fn main() -> ExitCode {
    let args: Xtask = argh::from_env();
    let result = match args.cmd {
        Cmd::Setup(_) => setup::run(),
        Cmd::Kernel(KernelCmd {
            cmd: KernelSub::Fetch(f),
        }) => kernel_fetch(f.offline).map(drop),
        Cmd::Kernel(KernelCmd {
            cmd: KernelSub::List(_),
        }) => {
            kernel_list();
            Ok(())
        }
        Cmd::Test(t) => test::run_test(&t),
        Cmd::Demo(d) => test::run_demo(&d),
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
pub(crate) fn kernel_fetch(offline: bool) -> Result<ktstr::kernel::CachedKernel, String> {
    use ktstr::kernel::{FetchOptions, FetchOutcome, fetch};
    let opts = FetchOptions {
        offline,
        ..Default::default()
    };
    let outcome =
        fetch(&opts, &mut |line| println!("kernel: {line}")).map_err(|e| e.to_string())?;
    let k = outcome.kernel().clone();
    let verb = match outcome {
        FetchOutcome::Fetched(_) => "fetched",
        FetchOutcome::AlreadyCached(_) => "cached",
    };
    println!(
        "kernel: {verb} {} ({} MiB vmlinux, {} KiB BTF) at {}",
        k.metadata.release,
        k.metadata.vmlinux_bytes >> 20,
        k.metadata.btf_bytes >> 10,
        k.dir.display()
    );
    Ok(k)
}

fn kernel_list() {
    let cache = ktstr::kernel::KernelCache::default();
    let list = cache.list();
    if list.is_empty() {
        println!(
            "no cached kernels in {} (run `cargo xtask kernel fetch`)",
            cache.dir().display()
        );
        return;
    }
    println!(
        "{:<28} {:>8} {:>8}  {:<21} SOURCE",
        "RELEASE", "VMLINUX", "BTF", "FETCHED"
    );
    for k in list {
        let m = &k.metadata;
        println!(
            "{:<28} {:>6}Mi {:>6}Ki  {:<21} {}",
            m.release,
            m.vmlinux_bytes >> 20,
            m.btf_bytes >> 10,
            m.fetched_at,
            m.source
        );
    }
}
