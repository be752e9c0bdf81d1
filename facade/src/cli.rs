//! Command-line pieces shared by the `ktstr` binary and `cargo xtask`.

use argh::FromArgs;

use crate::kernel::{FetchOptions, KernelCache, describe_fetch, fetch, list_table};

/// Fetch and list kernels.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "kernel")]
pub struct KernelCmd {
    #[argh(subcommand)]
    cmd: KernelSub,
}

#[derive(FromArgs, Debug)]
#[argh(subcommand)]
enum KernelSub {
    Fetch(FetchCmd),
    List(ListCmd),
}

/// Download the newest Debian cloud kernel with sched_ext into the cache.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "fetch")]
struct FetchCmd {
    /// use the cache only, never the network
    #[argh(switch)]
    offline: bool,
}

/// List cached kernels, newest first.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "list")]
struct ListCmd {}

impl KernelCmd {
    /// Runs the command, printing progress lines with `prefix`.
    pub fn run(&self, prefix: &str) -> Result<(), String> {
        match &self.cmd {
            KernelSub::Fetch(f) => kernel_fetch(f.offline, prefix).map(drop),
            KernelSub::List(_) => {
                print!("{}", list_table(&KernelCache::default()));
                Ok(())
            }
        }
    }
}

/// Fetches (or finds cached) the newest sched_ext kernel and says which.
pub fn kernel_fetch(offline: bool, prefix: &str) -> Result<crate::kernel::CachedKernel, String> {
    let opts = FetchOptions {
        offline,
        ..Default::default()
    };
    let outcome =
        fetch(&opts, &mut |line| println!("{prefix}: {line}")).map_err(|e| e.to_string())?;
    println!("{prefix}: {}", describe_fetch(&outcome));
    Ok(outcome.kernel().clone())
}
