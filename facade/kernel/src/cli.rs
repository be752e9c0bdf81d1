//! The `kernel` subcommand shared by the `ktstr` command, `cargo ktstr` and
//! `cargo xtask`, and the resolution of `--kernel` specs they all print the
//! same way.

use std::path::PathBuf;

use argh::FromArgs;

use crate::{
    CachedKernel, FetchOptions, KernelCmdEnv, KernelSpec, Resolved, describe_fetch, fetch,
    list_table, resolve, resolve_specs,
};

/// Fetch, list, clean and extract kernels.
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
    Clean(CleanCmd),
    Extract(ExtractCmd),
}

/// Download kernels into the cache: by version (7.3, 7.0.13, 6.18..7.3,
/// newest; default newest: the newest Debian cloud kernel with sched_ext).
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "fetch")]
struct FetchCmd {
    /// use the cache only, never the network
    #[argh(switch)]
    offline: bool,
    /// a range gives every release in it, not the newest of each line
    #[argh(switch)]
    all_releases: bool,
    /// what to fetch: 7.3 (newest 7.3.x), 7.0.13, 6.18..7.3, newest
    #[argh(positional)]
    specs: Vec<KernelSpec>,
}

/// List cached kernels, newest first, with their disk size and last use.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "list")]
struct ListCmd {}

/// Remove cached kernels, keeping the most recently used.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "clean")]
struct CleanCmd {
    /// how many of the most recently used kernels to keep (default 1)
    #[argh(option, default = "1")]
    keep: usize,
}

/// Extract the ELF vmlinux of a bzImage into the cache, so test binaries
/// (which carry no decompressor) can boot it with KTSTR_KERNEL=PATH.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "extract")]
struct ExtractCmd {
    /// the bzImage
    #[argh(positional)]
    path: PathBuf,
}

impl KernelCmd {
    /// Runs the command, printing progress lines with `prefix`.
    pub fn run(&self, prefix: &str, env: &KernelCmdEnv) -> Result<(), String> {
        match &self.cmd {
            KernelSub::Fetch(f) if f.specs.is_empty() => {
                kernel_fetch(f.offline, prefix, env).map(drop)
            }
            KernelSub::Fetch(f) => {
                resolve_kernels(&f.specs, f.all_releases, f.offline, prefix, env).map(drop)
            }
            KernelSub::List(_) => {
                print!("{}", list_table(&env.cache));
                Ok(())
            }
            KernelSub::Clean(c) => {
                let gone = env
                    .cache
                    .clean(c.keep)
                    .map_err(|e| format!("{}: {e}", env.cache.dir().display()))?;
                for k in &gone {
                    println!("{prefix}: removed {}", k.metadata.release);
                }
                println!(
                    "{prefix}: {} removed, {} kept",
                    gone.len(),
                    env.cache.list().len()
                );
                Ok(())
            }
            KernelSub::Extract(x) => {
                let k = resolve(Some(&KernelSpec::Path(x.path.clone())), &env.cache)
                    .map_err(|e| e.to_string())?;
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
    trim(prefix, env, &[outcome.kernel().metadata.release.as_str()]);
    Ok(outcome.kernel().clone())
}

/// Resolves `specs` (fetching what the cache lacks unless `offline`),
/// printing `--kernel SPEC -> RELEASE` for each kernel, then trims the cache
/// to its cap, never removing a kernel just resolved.
pub fn resolve_kernels(
    specs: &[KernelSpec],
    all_releases: bool,
    offline: bool,
    prefix: &str,
    env: &KernelCmdEnv,
) -> Result<Vec<Resolved>, String> {
    let opts = FetchOptions {
        cache: env.cache.clone(),
        offline,
        suites: env.suites.clone(),
        source: None,
    };
    let resolved = resolve_specs(specs, &opts, all_releases, &mut |line| {
        println!("{prefix}: {line}")
    })
    .map_err(|e| e.to_string())?;
    for r in &resolved {
        let what = r
            .kernel
            .release
            .clone()
            .unwrap_or_else(|| r.kernel.vmlinux.display().to_string());
        let how = if r.fetched { " (fetched)" } else { "" };
        println!("{prefix}: --kernel {} -> {what}{how}", r.spec);
    }
    let keep: Vec<&str> = resolved
        .iter()
        .filter_map(|r| r.kernel.release.as_deref())
        .collect();
    trim(prefix, env, &keep);
    Ok(resolved)
}

/// Keeps the cache under its cap, saying what went.
fn trim(prefix: &str, env: &KernelCmdEnv, keep: &[&str]) {
    match env.cache.evict(env.cap_bytes, keep) {
        Ok(gone) => {
            for k in gone {
                println!(
                    "{prefix}: removed {} from the kernel cache (least recently used; cap {} MiB)",
                    k.metadata.release,
                    env.cap_bytes >> 20
                );
            }
        }
        Err(e) => println!("{prefix}: the kernel cache was not trimmed: {e}"),
    }
}
