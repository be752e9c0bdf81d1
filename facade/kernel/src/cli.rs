//! The `kernel` subcommand shared by the `ktstr` command, `cargo ktstr` and
//! `cargo xtask`, and the resolution of `--kernel` specs they all print the
//! same way.

use std::path::PathBuf;

use argh::FromArgs;

use crate::build::BuildOptions;
use crate::{
    CachedKernel, FetchOptions, KernelCmdEnv, KernelError, KernelSpec, Resolved, built_cache,
    describe_fetch, fetch, list_table, resolve, resolve_or_build,
};

/// Why a `kernel` subcommand failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KernelCmdError {
    /// `kernel build` without a spec.
    #[error("kernel build: name what to build: a kernel tree PATH, git+URL#ref or source:X.Y")]
    NothingToBuild,
    /// `kernel build` of a spec that is not a source.
    #[error(
        "kernel build {spec}: not a source: give a kernel tree (a directory with Kconfig and \
         Makefile), git+URL#ref or source:X.Y (versions are fetched with `kernel fetch`)"
    )]
    NotASource {
        /// The spec as given.
        spec: String,
    },
    /// `kernel build --base` of a target that is not a base.
    #[error(
        "kernel build --base {base}: give one of {}",
        crate::build::kconfig::BASE_TARGETS.join(", ")
    )]
    BadBase {
        /// The base as given.
        base: String,
    },
    /// `kernel clean` could not remove from the cache.
    #[error("{}: {source}", cache.display())]
    Clean {
        /// The cache directory.
        cache: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Resolving, fetching or building a kernel failed.
    #[error(transparent)]
    Kernel(#[from] KernelError),
}

/// Fetch, build, list, clean and extract kernels.
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
    Build(BuildCmd),
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

/// Build kernels from source with ktstr's config fragment (tinyconfig +
/// facade/kernel/kconfig/ktstr.kconfig + --kconfig), into the cache of
/// built kernels: a kernel tree (PATH with Kconfig and Makefile),
/// git+URL#branch=B|tag=T|sha=S, or source:7.3 (Debian's linux-source-7.3).
/// The build directory is kept: the next build of the tree is incremental.
#[derive(FromArgs, Debug)]
#[argh(subcommand, name = "build")]
struct BuildCmd {
    /// a config fragment applied after ktstr's (CONFIG_X=y lines)
    #[argh(option)]
    kconfig: Option<PathBuf>,
    /// make -j (default: the host's cores)
    #[argh(option, short = 'j')]
    jobs: Option<usize>,
    /// the base config ktstr's fragment goes on: tinyconfig (default) or defconfig
    #[argh(option)]
    base: Option<String>,
    /// what to build: PATH, git+URL#ref, source:X.Y
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
    pub fn run(&self, prefix: &str, env: &KernelCmdEnv) -> Result<(), KernelCmdError> {
        match &self.cmd {
            KernelSub::Fetch(f) if f.specs.is_empty() => {
                kernel_fetch(f.offline, prefix, env)?;
                Ok(())
            }
            KernelSub::Fetch(f) => {
                resolve_kernels(&f.specs, f.all_releases, f.offline, prefix, env)?;
                Ok(())
            }
            KernelSub::Build(b) => {
                if b.specs.is_empty() {
                    return Err(KernelCmdError::NothingToBuild);
                }
                if let Some(s) = b.specs.iter().find(|s| !crate::build::is_source_spec(s)) {
                    return Err(KernelCmdError::NotASource {
                        spec: s.to_string(),
                    });
                }
                let env = KernelCmdEnv {
                    kconfig: b.kconfig.clone().or_else(|| env.kconfig.clone()),
                    ..env.clone()
                };
                let mut opts = build_options(&env, false);
                if let Some(j) = b.jobs {
                    opts.jobs = j;
                }
                if let Some(base) = &b.base {
                    opts.base = crate::build::kconfig::BASE_TARGETS
                        .into_iter()
                        .find(|t| t == base)
                        .ok_or_else(|| KernelCmdError::BadBase { base: base.clone() })?;
                }
                let mut releases = Vec::new();
                for s in &b.specs {
                    let start = std::time::Instant::now();
                    let built = crate::build::build(s, &opts, &mut |l| println!("{prefix}: {l}"))?;
                    let m = &built.kernel.metadata;
                    println!(
                        "{prefix}: {s} -> {} ({}; bzImage {} KiB, vmlinux {} MiB, BTF {} KiB) at {} \
                         in {}s{}",
                        m.release,
                        if built.built_now { "built" } else { "cached" },
                        m.bzimage_bytes >> 10,
                        m.vmlinux_bytes >> 20,
                        m.btf_bytes >> 10,
                        built.kernel.dir.display(),
                        start.elapsed().as_secs(),
                        if built.built_now {
                            format!(", log {}", built.log.display())
                        } else {
                            String::new()
                        }
                    );
                    releases.push(m.release.clone());
                }
                let keep: Vec<&str> = releases.iter().map(String::as_str).collect();
                trim(prefix, &env, &keep);
                Ok(())
            }
            KernelSub::List(_) => {
                print!("{}", list_table(&env.cache));
                let built = built_cache(&env.cache);
                if !built.list().is_empty() {
                    println!("built from source:");
                    print!("{}", list_table(&built));
                }
                let trees = crate::build::source_entries(&env.cache);
                if !trees.is_empty() {
                    println!(
                        "source trees and build directories (cap KTSTR_KERNEL_SRC_CACHE_MIB {} MiB):",
                        env.src_cap_bytes >> 20
                    );
                    for t in &trees {
                        println!("  {:>6} MiB  {}", t.bytes >> 20, t.dir.display());
                    }
                }
                Ok(())
            }
            KernelSub::Clean(c) => {
                let gone = env
                    .cache
                    .clean(c.keep)
                    .map_err(|source| KernelCmdError::Clean {
                        cache: env.cache.dir().to_path_buf(),
                        source,
                    })?;
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
                let k = resolve(Some(&KernelSpec::Path(x.path.clone())), &env.cache)?;
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
) -> Result<CachedKernel, KernelError> {
    let opts = FetchOptions {
        cache: env.cache.clone(),
        offline,
        suites: env.suites.clone(),
        source: None,
    };
    let outcome = fetch(&opts, &mut |line| println!("{prefix}: {line}"))?;
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
) -> Result<Vec<Resolved>, KernelError> {
    let opts = build_options(env, offline);
    let resolved = resolve_or_build(specs, &opts, all_releases, &mut |line| {
        println!("{prefix}: {line}")
    })?;
    for r in &resolved {
        let what = r
            .kernel
            .release
            .clone()
            .unwrap_or_else(|| r.kernel.vmlinux.display().to_string());
        let built = matches!(r.kernel.source, Some(crate::KernelSource::Built { .. }));
        let how = match (r.fetched, built) {
            (true, true) => " (built)",
            (true, false) => " (fetched)",
            (false, true) => " (built before)",
            (false, false) => "",
        };
        println!("{prefix}: --kernel {} -> {what}{how}", r.spec);
    }
    let keep: Vec<&str> = resolved
        .iter()
        .filter_map(|r| r.kernel.release.as_deref())
        .collect();
    trim(prefix, env, &keep);
    Ok(resolved)
}

/// The build options of `env`: its cache and suites, its fragment.
fn build_options(env: &KernelCmdEnv, offline: bool) -> BuildOptions {
    let mut b = BuildOptions::new(FetchOptions {
        cache: env.cache.clone(),
        offline,
        suites: env.suites.clone(),
        source: None,
    });
    b.user_fragment = env.kconfig.clone();
    b
}

/// Keeps the caches under their caps, saying what went: fetched kernels and built ones
/// (each under `cap_bytes`), source trees with their build directories (`src_cap_bytes`).
fn trim(prefix: &str, env: &KernelCmdEnv, keep: &[&str]) {
    let built = crate::built_cache(&env.cache);
    for (cache, what) in [
        (&env.cache, "kernel cache"),
        (&built, "cache of built kernels"),
    ] {
        match cache.evict(env.cap_bytes, keep) {
            Ok(gone) => {
                for k in gone {
                    println!(
                        "{prefix}: removed {} from the {what} (least recently used; cap {} MiB)",
                        k.metadata.release,
                        env.cap_bytes >> 20
                    );
                }
            }
            Err(e) => println!("{prefix}: the {what} was not trimmed: {e}"),
        }
    }
    match crate::build::evict_sources(&env.cache, env.src_cap_bytes) {
        Ok(gone) => {
            for e in gone {
                println!(
                    "{prefix}: removed {} ({} MiB, least recently built from; \
                     KTSTR_KERNEL_SRC_CACHE_MIB {})",
                    e.dir.display(),
                    e.bytes >> 20,
                    env.src_cap_bytes >> 20
                );
            }
        }
        Err(e) => println!("{prefix}: the kernel source trees were not trimmed: {e}"),
    }
}
