//! The `kernel` subcommand shared by the `ktstr` command and `cargo xtask`.

use std::path::PathBuf;

use argh::FromArgs;

use crate::{CachedKernel, FetchOptions, KernelCache, describe_fetch, fetch, list_table, resolve};

/// Fetch, list and extract kernels.
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
    Extract(ExtractCmd),
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

/// Extract the ELF vmlinux of a bzImage into the cache, so test binaries
/// (which carry no decompressor) can boot it with KTSTR_KERNEL=PATH.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "extract")]
struct ExtractCmd {
    /// the bzImage
    #[argh(positional)]
    path: PathBuf,
}

/// Where the `kernel` subcommand works: the cache and the fetch settings,
/// resolved by the caller's host configuration.
#[derive(Debug, Clone)]
pub struct KernelCmdEnv {
    /// The kernel cache.
    pub cache: KernelCache,
    /// Suites to search instead of the defaults (`KTSTR_KERNEL_SUITES`).
    pub suites: Option<Vec<String>>,
}

impl KernelCmd {
    /// Runs the command, printing progress lines with `prefix`.
    pub fn run(&self, prefix: &str, env: &KernelCmdEnv) -> Result<(), String> {
        match &self.cmd {
            KernelSub::Fetch(f) => kernel_fetch(f.offline, prefix, env).map(drop),
            KernelSub::List(_) => {
                print!("{}", list_table(&env.cache));
                Ok(())
            }
            KernelSub::Extract(x) => {
                let k = resolve(Some(&x.path), &env.cache).map_err(|e| e.to_string())?;
                println!("{prefix}: {} -> {}", x.path.display(), k.vmlinux.display());
                Ok(())
            }
        }
    }
}

/// Fetches (or finds cached) the newest sched_ext kernel and says which.
pub fn kernel_fetch(
    offline: bool,
    prefix: &str,
    env: &KernelCmdEnv,
) -> Result<CachedKernel, String> {
    let opts = FetchOptions {
        cache: env.cache.clone(),
        offline,
        suites: env.suites.clone(),
        source: None,
    };
    let outcome =
        fetch(&opts, &mut |line| println!("{prefix}: {line}")).map_err(|e| e.to_string())?;
    println!("{prefix}: {}", describe_fetch(&outcome));
    Ok(outcome.kernel().clone())
}
