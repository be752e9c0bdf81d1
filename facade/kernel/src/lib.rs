//! Kernels for test VMs as files: resolution, the local cache, and (feature
//! `fetch`) fetching Debian's sched_ext-enabled cloud kernels and extracting
//! the ELF `vmlinux` from a bzImage.
//!
//! The `ktstr` library that tests link takes this crate without `fetch`, so
//! a test binary carries no decompressor and no download code; the `ktstr`
//! command and `cargo xtask` enable it.
//!
//! Wherever a kernel is needed the same order applies: an explicit path
//! (`--kernel PATH` or `KTSTR_KERNEL`, resolved by the caller: a vmlinux, a
//! kernel build tree, a cache entry, or a bzImage extracted before), then the
//! newest cached kernel.
//!
//! Cache layout: `<cache root>/kernels/<release>/` holds `bzImage`, `vmlinux`,
//! `config` and `metadata.json`, and a fetched kernel its KVM modules in
//! `modules/` (`modules`, feature `fetch`); the cache root comes from the
//! caller (the facade's host configuration).
//!
//! ```no_run
//! use ktstr_kernel::{KernelCache, resolve};
//! let cache = KernelCache::new("/root/.cache/ktstr/kernels".into());
//! let kernel = resolve(None, &cache)?;
//! println!("booting {}", kernel.vmlinux.display());
//! # Ok::<(), ktstr_kernel::KernelError>(())
//! ```

#[cfg(feature = "fetch")]
pub mod build;
mod cache;
#[cfg(feature = "fetch")]
pub mod cli;
#[cfg(feature = "fetch")]
pub mod debian;
#[cfg(feature = "fetch")]
pub mod debuginfo;
#[cfg(feature = "fetch")]
mod fetch;
mod id;
pub mod image;
pub mod lines;
#[cfg(feature = "fetch")]
pub mod modules;
pub mod spec;
mod tree;
mod version;

use std::path::{Path, PathBuf};

pub use cache::{BuiltFrom, CachedKernel, KernelCache, KernelMetadata, file_sha256, list_table};
#[cfg(feature = "fetch")]
pub use fetch::{
    FetchOptions, FetchOutcome, Releases, Resolved, describe_fetch, fetch, resolve_or_build,
    resolve_specs,
};
pub use id::{KernelId, KernelSource};
pub use image::Codec;
pub use spec::{KernelSpec, KernelVersion, SelectError, SourceSpecError, SpecError, VersionReq};

/// What went wrong while resolving, fetching or checking a kernel.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KernelError {
    /// No kernel anywhere in the resolution order.
    #[error(
        "no kernel found: pass --kernel PATH, set KTSTR_KERNEL, or run `cargo xtask kernel fetch` \
         (cache: {})",
        cache.display()
    )]
    NotFound {
        /// The cache directory that was searched.
        cache: PathBuf,
    },
    /// `--offline` with an empty cache.
    #[error(
        "no cached kernel in {}: run `cargo xtask kernel fetch` without --offline first",
        cache.display()
    )]
    NoCachedKernel {
        /// The cache directory that was searched.
        cache: PathBuf,
    },
    /// A path given as a kernel is not one.
    #[error("kernel {}: {reason}", path.display())]
    BadPath {
        /// The path given.
        path: PathBuf,
        /// Why it is not usable, and the fix.
        reason: String,
    },
    /// The image is damaged or truncated.
    #[error("corrupt kernel image: {what}")]
    Corrupt {
        /// What is wrong.
        what: String,
    },
    /// The payload failed to decompress.
    #[error(
        "cannot decompress the {codec:?} kernel payload (corrupt or truncated image?): {reason}"
    )]
    Decompress {
        /// The payload's codec.
        codec: Codec,
        /// The decoder's complaint.
        reason: String,
    },
    /// The payload uses a codec ktstr does not decode.
    #[error(
        "the kernel payload is {codec}-compressed, which ktstr cannot decompress: rebuild with \
         CONFIG_KERNEL_ZSTD, GZIP, XZ or LZ4, or pass the ELF vmlinux instead"
    )]
    UnsupportedCodec {
        /// What the magic bytes say.
        codec: String,
    },
    /// The vmlinux has no BTF.
    #[error("the vmlinux has no .BTF section: build the kernel with CONFIG_DEBUG_INFO_BTF=y")]
    NoBtf,
    /// The config lacks sched_ext.
    #[error("the kernel config lacks CONFIG_SCHED_CLASS_EXT=y, which sched_ext schedulers need")]
    NoSchedExt,
    /// A version spec names no cached kernel (test binaries never fetch).
    #[error(
        "kernel {spec}: not in the cache ({}){}: fetch it first with `cargo ktstr kernel fetch {spec}`",
        cache.display(),
        if cached.is_empty() { String::new() } else { format!("; cached: {}", cached.join(", ")) }
    )]
    NotCached {
        /// The spec as given.
        spec: String,
        /// The cache searched.
        cache: PathBuf,
        /// The releases it holds.
        cached: Vec<String>,
    },
    /// A spec that names several kernels where one is needed.
    #[error(
        "kernel {spec} names several kernels; where one kernel boots give one version, or run          `cargo ktstr test --kernel {spec}` to run the tests once per kernel"
    )]
    SeveralKernels {
        /// The spec as given.
        spec: String,
    },
    /// A kernel to build from source that was not built yet (test binaries
    /// never build).
    #[error(
        "kernel {spec}: not built yet ({}): build it first with `cargo ktstr kernel build {spec}` \
         (or run the tests through `cargo ktstr test --kernel {spec}`, which builds it)",
        cache.display()
    )]
    NotBuilt {
        /// The spec as given.
        spec: String,
        /// The cache of built kernels searched.
        cache: PathBuf,
    },
    /// A source tree changed since it was last built (test binaries and
    /// `ktstr shell` never build, and never boot an older state's kernel).
    #[error(
        "kernel tree {}: changed since its last build (built: {built}; now: {now}): \
         build it with `cargo ktstr kernel build {}` (or run the tests through \
         `cargo ktstr test --kernel {}`, which builds it)",
        tree.display(), tree.display(), tree.display()
    )]
    StaleTree {
        /// The tree, canonical.
        tree: PathBuf,
        /// The state its most recent build was of.
        built: String,
        /// Its state now.
        now: String,
    },
    /// A source spec that cannot be built as written.
    #[error("kernel {spec}: {why}")]
    BadSpec {
        /// The spec as given.
        spec: String,
        /// Why, and the fix.
        why: String,
    },
    /// A `git+URL#ref` or `source:X.Y` spec that names no source.
    #[error("kernel {spec}: {why}")]
    BadSource {
        /// The spec as given.
        spec: String,
        /// What is wrong with it, and the fix.
        why: SourceSpecError,
    },
    /// A kernel's line index (`lines.tsv`) is not one.
    #[error("{}: {why}", path.display())]
    BadLineIndex {
        /// The index file.
        path: PathBuf,
        /// What is wrong in it.
        why: lines::LineIndexError,
    },
    /// Options of the fragments that `olddefconfig` did not keep.
    #[error(
        "kernel {spec}: the config fragments ask for options this kernel cannot have, so \
         nothing was built:\n  {}\nFix the fragment (ktstr's is \
         facade/kernel/kconfig/ktstr.kconfig; yours is --kconfig FILE)",
        lost.join("\n  ")
    )]
    ConfigCheck {
        /// The spec as given.
        spec: String,
        /// One line per lost option: what, where asked, what it became, why.
        lost: Vec<String>,
    },
    /// make failed.
    #[error("kernel {spec}: the build failed: {first_error}\n(the whole log: {})", log.display())]
    BuildFailed {
        /// The spec as given.
        spec: String,
        /// The compiler's first error line (with its file:line).
        first_error: String,
        /// The build log, kept.
        log: PathBuf,
    },
    /// A version spec selected no release the source offers.
    #[error("kernel {spec}: {why} (searched {searched})")]
    UnknownVersion {
        /// The spec as given.
        spec: String,
        /// What the selection said, with the closest releases.
        why: SelectError,
        /// Where the releases were looked up.
        searched: String,
    },
    /// Every release a range selected was built without sched_ext.
    #[error(
        "kernel {spec}: every release in it was built without sched_ext ({}); Debian's cloud \
         kernels have it from 6.16: start the range there",
        refused.join(", ")
    )]
    NoSchedExtInRange {
        /// The spec as given.
        spec: String,
        /// The releases refused.
        refused: Vec<String>,
    },
    /// A release was asked for by version, and it has no sched_ext.
    #[error(
        "kernel {release}: built without sched_ext (its config says `{line}`); ktstr needs \
         CONFIG_SCHED_CLASS_EXT=y: pick a release that has it (Debian's cloud kernels have it \
         from 6.16), or build the kernel yourself"
    )]
    NoSchedExtRelease {
        /// The release.
        release: String,
        /// The config's own line for CONFIG_SCHED_CLASS_EXT.
        line: String,
    },
    /// No mirror could be derived from the host's apt configuration.
    #[error("cannot find a Debian mirror in the host's apt sources: {detail}")]
    NoMirror {
        /// What was missing.
        detail: String,
    },
    /// The mirror did not answer.
    #[error(
        "the package mirror {uri} could not be reached: {detail}\n\
         Use the cached kernel with `--offline`, or point KTSTR_KERNEL at a kernel"
    )]
    MirrorUnreachable {
        /// The mirror URI from the host's apt sources.
        uri: String,
        /// apt's own words.
        detail: String,
    },
    /// No package in the searched suites has sched_ext.
    #[error(
        "no cloud-amd64 kernel package with CONFIG_SCHED_CLASS_EXT=y in {suites} (checked: {checked}); \
         set KTSTR_KERNEL_SUITES to search other suites, or build a kernel and pass --kernel"
    )]
    NoSchedExtPackage {
        /// The suites searched.
        suites: String,
        /// The releases checked.
        checked: String,
    },
    /// An external command failed.
    #[error("`{command}` failed: {detail}")]
    Command {
        /// The command.
        command: String,
        /// Its error output.
        detail: String,
    },
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

impl KernelError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        KernelError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Where the `kernel` subcommands work: the cache and the fetch settings,
/// resolved by the caller's host configuration.
#[derive(Debug, Clone)]
pub struct KernelCmdEnv {
    /// The kernel cache.
    pub cache: KernelCache,
    /// Suites to search instead of the defaults (`KTSTR_KERNEL_SUITES`).
    pub suites: Option<Vec<String>>,
    /// The disk the cache may take before the least recently used kernels
    /// go (`KTSTR_KERNEL_CACHE_MIB`), checked after each fetch.
    pub cap_bytes: u64,
    /// The disk kernel source trees and their build directories may take before the least
    /// recently used go (`KTSTR_KERNEL_SRC_CACHE_MIB`), checked after each build.
    pub src_cap_bytes: u64,
    /// A user config fragment (`--kconfig FILE`) for kernels built from
    /// source, applied after ktstr's.
    pub kconfig: Option<PathBuf>,
}

/// How a kernel was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelOrigin {
    /// An explicit path (`--kernel`, `KTSTR_KERNEL`).
    Explicit,
    /// The newest kernel in the cache.
    Cache,
}

/// A kernel ready to boot: the ELF vmlinux (booted through PVH) and what is known of it.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// The ELF vmlinux with BTF.
    pub vmlinux: PathBuf,
    /// The bzImage, when known.
    pub bz_image: Option<PathBuf>,
    /// The kernel config, when known.
    pub config: Option<PathBuf>,
    /// The kernel release, when known.
    pub release: Option<String>,
    /// The vmlinux's SHA-256 (hex), when already known (a cache entry
    /// records it at fetch time); `None`: hash the file if you need it.
    pub vmlinux_sha256: Option<String>,
    /// Where it came from, when a cache entry says.
    pub source: Option<KernelSource>,
    /// The release whose config stands in for this one's (see
    /// [`KernelMetadata::config_from`]).
    pub config_from: Option<String>,
    /// How it was found.
    pub origin: KernelOrigin,
}

impl Kernel {
    /// A vmlinux known only by its path: nothing else is known of it yet.
    pub fn at(vmlinux: PathBuf, origin: KernelOrigin) -> Kernel {
        Kernel {
            vmlinux,
            bz_image: None,
            config: None,
            release: None,
            vmlinux_sha256: None,
            source: None,
            config_from: None,
            origin,
        }
    }

    /// The kernel as a cache entry describes it.
    pub fn of_cached(k: &CachedKernel, origin: KernelOrigin) -> Kernel {
        Kernel {
            vmlinux: k.vmlinux(),
            bz_image: Some(k.bz_image()),
            config: k.config_if_any(),
            release: Some(k.metadata.release.clone()),
            vmlinux_sha256: Some(k.metadata.vmlinux_sha256.clone()),
            source: Some(k.metadata.kernel_source()),
            config_from: k.metadata.config_from.clone(),
            origin,
        }
    }

    /// Its typed identity, hashing the vmlinux and config where not known.
    pub fn id(&self) -> Result<KernelId, KernelError> {
        let mut failed = None;
        let id = self.id_hashed(|p| match file_sha256(p) {
            Ok(h) => Some(h),
            Err(e) => {
                failed.get_or_insert(KernelError::io(p, e));
                None
            }
        });
        failed.map_or(Ok(id), Err)
    }

    /// Its typed identity, with `hash` giving a file's SHA-256 (hex) where
    /// not known (a caller that keeps hashes per process); an unreadable
    /// vmlinux leaves `vmlinux_sha256` empty.
    pub fn id_hashed(&self, mut hash: impl FnMut(&Path) -> Option<String>) -> KernelId {
        KernelId {
            version: self.release.as_deref().and_then(KernelVersion::of_release),
            release: self.release.clone(),
            source: self.source.clone().unwrap_or_else(|| KernelSource::Path {
                path: self.vmlinux.display().to_string(),
            }),
            vmlinux_sha256: self
                .vmlinux_sha256
                .clone()
                .or_else(|| hash(&self.vmlinux))
                .unwrap_or_default(),
            config_sha256: self.config.as_deref().and_then(&mut hash),
            config_from: self.config_from.clone(),
        }
    }
}

/// Resolves the kernel to use: `spec` (a flag or `KTSTR_KERNEL`, as the
/// caller's configuration says), else the newest kernel in `cache`.
///
/// Nothing is fetched here (test binaries call this): a version names the
/// newest cached release that matches it; `cargo ktstr` and `ktstr kernel
/// fetch` fetch what is missing first.
pub fn resolve(spec: Option<&KernelSpec>, cache: &KernelCache) -> Result<Kernel, KernelError> {
    let Some(spec) = spec else {
        let k = cache.newest().ok_or_else(|| KernelError::NotFound {
            cache: cache.dir().to_path_buf(),
        })?;
        cache.touch(&k);
        return Ok(Kernel::of_cached(&k, KernelOrigin::Cache));
    };
    match spec {
        KernelSpec::Path(p) => from_path(p, KernelOrigin::Explicit, cache),
        KernelSpec::Git(_) | KernelSpec::Source(_) => {
            let built = built_cache(cache);
            match find_built(&built, &spec.to_string()) {
                Some(k) => {
                    built.touch(&k);
                    Ok(Kernel::of_cached(&k, KernelOrigin::Explicit))
                }
                None => Err(KernelError::NotBuilt {
                    spec: spec.to_string(),
                    cache: built.dir().to_path_buf(),
                }),
            }
        }
        KernelSpec::Range { .. } => Err(KernelError::SeveralKernels {
            spec: spec.to_string(),
        }),
        KernelSpec::Newest | KernelSpec::Version(_) => {
            let list = cache.list();
            let found = list.iter().find(|k| match spec {
                KernelSpec::Version(req) => {
                    KernelVersion::of_release(&k.metadata.release).is_some_and(|v| req.matches(v))
                }
                _ => true,
            });
            match found {
                Some(k) => {
                    cache.touch(k);
                    Ok(Kernel::of_cached(k, KernelOrigin::Explicit))
                }
                None => Err(KernelError::NotCached {
                    spec: spec.to_string(),
                    cache: cache.dir().to_path_buf(),
                    cached: list.iter().map(|k| k.metadata.release.clone()).collect(),
                }),
            }
        }
    }
}

/// Why the project's real-kernel tests have no kernel to test against.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestKernelError {
    /// `KTSTR_KERNEL` is not a kernel spec.
    #[error("KTSTR_KERNEL: {why}")]
    BadSpec {
        /// What is wrong with it.
        why: SpecError,
    },
    /// None of `KTSTR_CACHE_DIR`, `XDG_CACHE_HOME` and `HOME` locates the cache.
    #[error("none of KTSTR_CACHE_DIR, XDG_CACHE_HOME and HOME is set")]
    NoCacheRoot,
    /// The spec (or the cache) gives no kernel.
    #[error(
        "no kernel image to test against ({why}): run `cargo xtask kernel fetch` or set \
         KTSTR_KERNEL to a vmlinux ELF"
    )]
    NoKernel {
        /// Why resolving failed.
        why: KernelError,
    },
}

/// The vmlinux the project's real-kernel tests use, resolved like a run's:
/// `ktstr_kernel` (the `KTSTR_KERNEL` value: a path or a cached version),
/// else the newest cached release, in the cache below the root a run uses
/// ([`ktstr_cache::root_from`] of the `KTSTR_CACHE_DIR`, `XDG_CACHE_HOME`
/// and `HOME` values). The caller reads the environment; the error names the
/// command that fetches a kernel.
pub fn vmlinux_for_tests(
    ktstr_kernel: Option<&str>,
    cache_root: Option<&Path>,
    xdg_cache_home: Option<&Path>,
    home: Option<&Path>,
) -> Result<PathBuf, TestKernelError> {
    let spec = match ktstr_kernel.filter(|v| !v.is_empty()) {
        Some(v) => Some(
            v.parse::<KernelSpec>()
                .map_err(|why| TestKernelError::BadSpec { why })?,
        ),
        None => None,
    };
    let root = ktstr_cache::root_from(cache_root, xdg_cache_home, home)
        .ok_or(TestKernelError::NoCacheRoot)?;
    resolve(spec.as_ref(), &KernelCache::new(root.join("kernels")))
        .map(|k| k.vmlinux)
        .map_err(|why| TestKernelError::NoKernel { why })
}

/// Interprets a path given as a kernel: a vmlinux, a bzImage, a build tree or a cache entry.
fn from_path(p: &Path, origin: KernelOrigin, cache: &KernelCache) -> Result<Kernel, KernelError> {
    let bad = |reason: &str| KernelError::BadPath {
        path: p.to_path_buf(),
        reason: reason.to_string(),
    };
    if p.is_dir() {
        // A build tree has vmlinux + arch/x86/boot/bzImage + .config; a cache
        // entry has vmlinux + bzImage + config.
        let vmlinux = p.join("vmlinux");
        let is_tree = p.join("Kconfig").is_file() && p.join("Makefile").is_file();
        if !vmlinux.is_file() && is_tree {
            // A source tree ktstr built out of tree: its build of the
            // tree as it is now, never an older state's.
            let built = built_cache(cache);
            let canon = p.canonicalize().map_err(|e| KernelError::io(p, e))?;
            let k = tree::built_of_tree(&built, &canon, &tree::identity(&canon)?)?;
            built.touch(&k);
            return Ok(Kernel::of_cached(&k, origin));
        }
        if !vmlinux.is_file() {
            return Err(bad(
                "directory has no vmlinux: pass a built kernel tree (run `make`), a cache entry, or a vmlinux/bzImage file",
            ));
        }
        let first = |c: [&str; 2]| c.iter().map(|n| p.join(n)).find(|f| f.is_file());
        let entry = cache.load(p);
        let k = Kernel {
            vmlinux,
            bz_image: first(["arch/x86/boot/bzImage", "bzImage"]),
            config: first([".config", "config"]),
            release: std::fs::read_to_string(p.join("include/config/kernel.release"))
                .ok()
                .map(|s| s.trim().to_string())
                .or_else(|| entry.as_ref().map(|k| k.metadata.release.clone())),
            source: entry.as_ref().map(|k| k.metadata.kernel_source()),
            config_from: entry.as_ref().and_then(|k| k.metadata.config_from.clone()),
            vmlinux_sha256: entry.map(|k| k.metadata.vmlinux_sha256),
            origin,
        };
        check_vmlinux_file(&k.vmlinux)?;
        return Ok(k);
    }
    let bytes = std::fs::read(p).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => bad("no such file"),
        _ => KernelError::io(p, e),
    })?;
    if image::is_elf(&bytes) {
        image::inspect_vmlinux(&bytes)?;
        return Ok(Kernel::at(p.to_path_buf(), origin));
    }
    if image::is_bzimage(&bytes) {
        // Extracted once per distinct image, keyed by content.
        let dir = cache
            .dir()
            .parent()
            .unwrap_or(cache.dir())
            .join("extracted")
            .join(&cache::sha256_hex(&bytes)[..16]);
        let vmlinux = dir.join("vmlinux");
        if !vmlinux.is_file() {
            extract_into(&bytes, &dir, &vmlinux).map_err(|e| match e {
                KernelError::BadPath { reason, .. } => bad(&reason),
                e => e,
            })?;
        }
        return Ok(Kernel {
            bz_image: Some(p.to_path_buf()),
            ..Kernel::at(vmlinux, origin)
        });
    }
    Err(bad("neither an ELF vmlinux nor an x86 bzImage"))
}

/// The cache of kernels built from source, beside `kernels`.
pub fn built_cache(kernels: &KernelCache) -> KernelCache {
    KernelCache::new(
        kernels
            .dir()
            .parent()
            .unwrap_or(kernels.dir())
            .join("kernels-built"),
    )
}

/// The most recently used built kernel whose spec text (a path canonicalized)
/// is `spec`.
pub fn find_built(built: &KernelCache, spec: &str) -> Option<CachedKernel> {
    builds_of(built, spec).into_iter().next()
}

/// The built kernels whose spec text is `spec`, most recently used first:
/// a build found in the cache is touched, so the first is the one the last
/// `kernel build` of the spec named (with its config: tinyconfig,
/// defconfig, a user fragment), not the one built last.
pub(crate) fn builds_of(built: &KernelCache, spec: &str) -> Vec<CachedKernel> {
    let mut builds: Vec<CachedKernel> = built
        .list()
        .into_iter()
        .filter(|k| k.metadata.built.as_ref().is_some_and(|b| b.spec == spec))
        .collect();
    builds.sort_by_key(|k| std::cmp::Reverse(built.last_used(k)));
    builds
}

/// Writes the vmlinux of the bzImage `bytes` to `vmlinux` inside `dir`.
#[cfg(feature = "fetch")]
fn extract_into(bytes: &[u8], dir: &Path, vmlinux: &Path) -> Result<(), KernelError> {
    let elf = image::extract_vmlinux(bytes)?;
    image::inspect_vmlinux(&elf)?;
    std::fs::create_dir_all(dir).map_err(|e| KernelError::io(dir, e))?;
    let tmp = dir.join(format!(".vmlinux.{}", std::process::id()));
    std::fs::write(&tmp, &elf).map_err(|e| KernelError::io(&tmp, e))?;
    std::fs::rename(&tmp, vmlinux).map_err(|e| KernelError::io(vmlinux, e))
}

/// Without `fetch` this crate has no decompressor: a bzImage must have been
/// extracted before by a tool that has one.
#[cfg(not(feature = "fetch"))]
fn extract_into(_: &[u8], _: &Path, _: &Path) -> Result<(), KernelError> {
    Err(KernelError::BadPath {
        path: PathBuf::new(),
        reason: "is a bzImage, which test binaries do not decompress: pass its ELF vmlinux \
                 (a kernel build tree has one), or extract it once with \
                 `ktstr kernel extract PATH`"
            .into(),
    })
}

fn check_vmlinux_file(p: &Path) -> Result<(), KernelError> {
    let bytes = std::fs::read(p).map_err(|e| KernelError::io(p, e))?;
    image::inspect_vmlinux(&bytes).map(drop)
}

// The tests build bzImages and apt repositories: they need the `fetch` half.
#[cfg(all(test, feature = "fetch"))]
#[path = "lib_tests.rs"]
mod tests;
