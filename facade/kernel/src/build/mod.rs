//! Kernels built from source (feature `fetch`): a local tree
//! (`--kernel PATH`), a git ref (`git+URL#sha=…`) or a Debian source package
//! (`source:7.3`), configured with ktstr's fragment on `tinyconfig` (plus a
//! user fragment), checked after `olddefconfig`, built incrementally in a
//! kept build directory, and cached by source identity and config.
//!
//! Layout below the cache root (the parent of `kernels/`):
//! `kernel-src/<name>/src` the unpacked packages and git clones, each built
//! in `kernel-src/<name>/build`; `kernel-build/<hash of the path>/` the build
//! directories of the user's trees (each with `ktstr-build.log`), and
//! `kernels-built/<key>/` the built kernels as cache entries (`bzImage`,
//! `vmlinux`, `config`, `metadata.json`), where `key` hashes the source
//! identity and the final config. An entry appears by rename once the build
//! succeeded and the kernel was checked: an interrupted build leaves none.

mod evict;
pub mod kconfig;
pub mod make;
pub mod source;

pub use evict::{SourceEntry, evict_sources, source_entries};

use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::cache::{BuiltFrom, sha256_hex};
use crate::{CachedKernel, FetchOptions, KernelCache, KernelError, KernelSpec, built_cache, image};

/// How to build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// Where the apt lists and the kernel cache live (`kernels/`'s cache);
    /// the source packages come from its mirror (or the host's apt).
    pub fetch: FetchOptions,
    /// The user's fragment (`--kconfig FILE`), applied after ktstr's.
    pub user_fragment: Option<PathBuf>,
    /// `make -j`.
    pub jobs: usize,
    /// `nice -n` for make.
    pub nice: i32,
    /// How often a progress line is printed while make runs.
    pub progress_every: Duration,
    /// The base config the fragments go on (one of [`kconfig::BASE_TARGETS`]).
    pub base: &'static str,
}

impl BuildOptions {
    /// Defaults: `-j` from the host's cores, `nice -n 10`, a progress line
    /// every 15 s.
    pub fn new(fetch: FetchOptions) -> Self {
        BuildOptions {
            fetch,
            user_fragment: None,
            jobs: make::host_jobs(),
            nice: 10,
            progress_every: Duration::from_secs(15),
            base: kconfig::BASE_TARGET,
        }
    }
}

/// A kernel built (or found built) from source.
#[derive(Debug, Clone)]
pub struct Built {
    /// Its cache entry.
    pub kernel: CachedKernel,
    /// Whether make ran now (else the cache had it).
    pub built_now: bool,
    /// Wall time of make, when it ran.
    pub make_time: Option<Duration>,
    /// The build log.
    pub log: PathBuf,
    /// The source tree, when it was looked at (not offline).
    pub tree: Option<PathBuf>,
}

fn cache_root(kernels: &KernelCache) -> PathBuf {
    kernels
        .dir()
        .parent()
        .unwrap_or(kernels.dir())
        .to_path_buf()
}

/// Whether `spec` names a kernel to build: a git ref, a source package, or a
/// path to a kernel source tree.
pub fn is_source_spec(spec: &KernelSpec) -> bool {
    match spec {
        KernelSpec::Git(_) | KernelSpec::Source(_) => true,
        KernelSpec::Path(p) => p.is_dir() && source::is_kernel_tree(p),
        _ => false,
    }
}

/// The text built entries record as their spec: a path canonicalized.
pub fn spec_key(spec: &KernelSpec) -> String {
    match spec {
        KernelSpec::Path(p) => p
            .canonicalize()
            .unwrap_or_else(|_| p.clone())
            .display()
            .to_string(),
        s => s.to_string(),
    }
}

/// The most recently used built kernel of `spec`, without building (what test
/// binaries use).
pub fn find_built(kernels: &KernelCache, spec: &KernelSpec) -> Option<CachedKernel> {
    crate::find_built(&crate::built_cache(kernels), &spec_key(spec))
}

/// Builds `spec` (or finds it built with the same source and config).
pub fn build(
    spec: &KernelSpec,
    opts: &BuildOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<Built, KernelError> {
    let root = cache_root(&opts.fetch.cache);
    let src_root = root.join("kernel-src");
    let tree = match spec {
        KernelSpec::Source(line) => package_tree(line, opts, &src_root, progress)?,
        KernelSpec::Git(text) => {
            let g = source::GitSpec::parse(text).map_err(|why| KernelError::BadSource {
                spec: spec.to_string(),
                why,
            })?;
            if opts.fetch.offline {
                return find_built(&opts.fetch.cache, spec).map_or_else(
                    || {
                        Err(KernelError::BadSpec {
                            spec: spec.to_string(),
                            why: "--offline, and it was never built".into(),
                        })
                    },
                    |k| Ok(found(k, &root)),
                );
            }
            source::git_tree(&g, &src_root, progress)?
        }
        KernelSpec::Path(p) if source::is_kernel_tree(p) => source::local_tree(p)?,
        _ => {
            return Err(KernelError::BadSpec {
                spec: spec.to_string(),
                why: "not a kernel source: give a tree (with Kconfig and Makefile), \
                      git+URL#ref or source:X.Y"
                    .into(),
            });
        }
    };
    build_tree(spec, &tree, opts, progress)
}

/// A found entry, as a [`Built`] that did not run make.
fn found(k: CachedKernel, root: &Path) -> Built {
    Built {
        log: root.join("kernel-build"),
        kernel: k,
        built_now: false,
        make_time: None,
        tree: None,
    }
}

/// The tree of `source:<line>`: downloaded and unpacked once.
fn package_tree(
    line: &str,
    opts: &BuildOptions,
    src_root: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<source::Tree, KernelError> {
    let bad = |why: String| KernelError::BadSpec {
        spec: format!("source:{line}"),
        why,
    };
    let (package, exact) = source::package_of(line).map_err(|why| KernelError::BadSource {
        spec: format!("source:{line}"),
        why,
    })?;
    if opts.fetch.offline {
        // The newest tree unpacked before.
        let prefix = source::slug(&format!("{package}_"));
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(src_root)
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        dirs.retain(|d| {
            d.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(&prefix))
                && source::is_kernel_tree(&d.join("src"))
        });
        dirs.sort_by(|a, b| crate::version::compare(&a.to_string_lossy(), &b.to_string_lossy()));
        let dir = dirs.pop().ok_or_else(|| {
            bad(format!(
                "--offline, and {package} was never unpacked in {}",
                src_root.display()
            ))
        })?;
        let version = std::fs::read_to_string(dir.join("version"))
            .map_err(|e| KernelError::io(&dir.join("version"), e))?;
        return Ok(source::Tree {
            dir: dir.join("src"),
            identity: format!("debian {package} {}", version.trim()),
            dirty_sha256: None,
            in_tree: false,
        });
    }
    let found = crate::fetch::source_package(&opts.fetch, &package, progress)?;
    let version = found.version.clone();
    if let Some(want) = &exact
        && !version.starts_with(want.as_str())
    {
        return Err(bad(format!(
            "the archive's {package} is {version}, not {want}: write source:{}",
            package.trim_start_matches("linux-source-")
        )));
    }
    let base = source::package_dir(src_root, &package, &version);
    if source::is_kernel_tree(&base.join("src")) {
        return Ok(source::Tree {
            dir: base.join("src"),
            identity: format!("debian {package} {version}"),
            dirty_sha256: None,
            in_tree: false,
        });
    }
    std::fs::create_dir_all(&base).map_err(|e| KernelError::io(&base, e))?;
    progress(&format!("downloading {package} {version}"));
    let scratch = base.join(format!(".download-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).map_err(|e| KernelError::io(&scratch, e))?;
    let deb = found.download(&scratch)?;
    let tree = source::unpack_source_package(&deb, &package, &version, src_root, progress);
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::write(base.join("version"), &version)
        .map_err(|e| KernelError::io(&base.join("version"), e))?;
    tree
}

/// The build directory of a tree, kept: beside the tree for the cache's own
/// trees (`kernel-src/<name>/src` builds in `kernel-src/<name>/build`), one
/// per tree path in `kernel-build/` for the user's trees.
pub fn build_dir(kernels: &KernelCache, tree: &Path) -> PathBuf {
    let root = cache_root(kernels);
    let own = tree.file_name().is_some_and(|n| n == "src")
        && tree.parent().and_then(Path::parent) == Some(root.join("kernel-src").as_path());
    match tree.parent() {
        Some(base) if own => base.join("build"),
        _ => root
            .join("kernel-build")
            .join(&sha256_hex(tree.display().to_string().as_bytes())[..16]),
    }
}

/// Configures and builds `tree` (out of tree in its kept build directory,
/// or in place when it has its own `.config`), unless the cache has the
/// same source and config built.
fn build_tree(
    spec: &KernelSpec,
    tree: &source::Tree,
    opts: &BuildOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<Built, KernelError> {
    let spec_text = spec_key(spec);
    let out = if tree.in_tree {
        tree.dir.clone()
    } else if opts.base == kconfig::BASE_TARGET {
        build_dir(&opts.fetch.cache, &tree.dir)
    } else {
        // Another base config builds apart: switching would rebuild everything each time.
        let dir = build_dir(&opts.fetch.cache, &tree.dir);
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned());
        dir.with_file_name(format!("{}-{}", name.unwrap_or_default(), opts.base))
    };
    std::fs::create_dir_all(&out).map_err(|e| KernelError::io(&out, e))?;
    // One build per directory at a time.
    let lock_path = out.join(".ktstr-lock");
    let lock = std::fs::File::create(&lock_path).map_err(|e| KernelError::io(&lock_path, e))?;
    if lock.try_lock().is_err() {
        progress(&format!(
            "waiting for another build in {} to finish",
            out.display()
        ));
        lock.lock().map_err(|e| KernelError::io(&lock_path, e))?;
    }
    // The cache's own trees and build directories are evicted least recently used first.
    let root = cache_root(&opts.fetch.cache);
    let entry = evict::entry_of(&root, &out);
    if entry.starts_with(&root) {
        evict::touch(&entry);
    }
    let log = out.join("ktstr-build.log");
    std::fs::write(&log, format!("# ktstr: building {spec_text}\n"))
        .map_err(|e| KernelError::io(&log, e))?;
    let user = match &opts.user_fragment {
        Some(p) => Some((
            p.display().to_string(),
            std::fs::read_to_string(p).map_err(|e| KernelError::io(p, e))?,
        )),
        None => None,
    };
    let mut fragments: Vec<(String, String)> = Vec::new();
    if !tree.in_tree {
        fragments.push(("ktstr.kconfig".into(), kconfig::KTSTR_FRAGMENT.into()));
    } else if user.is_some() {
        return Err(KernelError::BadSpec {
            spec: spec_text,
            why: "the tree is configured in place (it has a .config): ktstr builds it with \
                  that config, and --kconfig applies only to trees ktstr configures \
                  (run `make mrproper` in it to let ktstr configure an out-of-tree build)"
                .into(),
        });
    }
    fragments.extend(user);
    let fragment_sha256 = {
        let mut h = Sha256::new();
        for (_, text) in &fragments {
            h.update(text.as_bytes());
            h.update(b"\0");
        }
        h.finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let config_text = if tree.in_tree {
        progress(&format!("configuring {spec_text} with its own .config"));
        run_make(tree, &out, opts, &[], &["olddefconfig"], &log)?;
        let p = out.join(".config");
        std::fs::read_to_string(&p).map_err(|e| KernelError::io(&p, e))?
    } else {
        configure(spec, tree, &out, &fragments, opts, &log, progress)?
    };
    let key = cache_key(tree, &config_text);
    let built = built_cache(&opts.fetch.cache);
    built.remove_stale_scratch();
    if let Some(k) = built.load(&built.dir().join(&key)) {
        built.touch(&k);
        progress(&format!(
            "{spec_text}: built before with this source and config ({})",
            k.dir.display()
        ));
        return Ok(Built {
            kernel: k,
            built_now: false,
            make_time: None,
            log,
            tree: Some(tree.dir.clone()),
        });
    }
    let localversion = format!("LOCALVERSION=-ktstr-{}", &key[..8]);
    let estimate = make::estimate(&out, opts.base);
    progress(&format!(
        "building {spec_text} in {} (-j{}, log {})",
        out.display(),
        opts.jobs,
        log.display()
    ));
    let m = make::Make {
        tree: tree.dir.clone(),
        out: (!tree.in_tree).then(|| out.clone()),
        jobs: opts.jobs,
        nice: opts.nice,
        vars: vec![localversion],
        targets: vec!["bzImage".into()],
    };
    let mut say = |l: &str| progress(&format!("building {spec_text}: {l}"));
    let r = m
        .run(&log, estimate, opts.progress_every, &mut say)
        .map_err(|e| KernelError::Command {
            command: m.describe(),
            detail: e.to_string(),
        })?;
    if !r.ok {
        return Err(KernelError::BuildFailed {
            spec: spec_text,
            first_error: r
                .first_error
                .map_or_else(|| "no error line found".into(), |e| e.line),
            log,
        });
    }
    progress(&format!(
        "built {spec_text}: {} steps in {}m{:02}s",
        r.steps,
        r.elapsed.as_secs() / 60,
        r.elapsed.as_secs() % 60
    ));
    if r.steps > 500 {
        // A cold-ish build: the next estimate.
        let _ = std::fs::write(out.join(make::STEPS_FILE), r.steps.to_string());
    }
    let from = BuiltFrom {
        spec: spec_text,
        tree: tree.identity.clone(),
        dirty_sha256: tree.dirty_sha256.clone(),
        fragment_sha256,
        build_seconds: r.elapsed.as_secs(),
    };
    let k = insert(&built, &key, &out, &config_text, from)?;
    Ok(Built {
        kernel: k,
        built_now: true,
        make_time: Some(r.elapsed),
        log,
        tree: Some(tree.dir.clone()),
    })
}

/// The cache key of a build: 16 hex digits of the SHA-256 of the source's
/// identity, its uncommitted changes and the final config.
pub fn cache_key(tree: &source::Tree, config: &str) -> String {
    let mut h = Sha256::new();
    for part in [
        tree.identity.as_str(),
        tree.dirty_sha256.as_deref().unwrap_or(""),
        config,
    ] {
        h.update(part.as_bytes());
        h.update(b"\0");
    }
    h.finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Runs one configuration make, its output in the log.
fn run_make(
    tree: &source::Tree,
    out: &Path,
    opts: &BuildOptions,
    env: &[(&str, &str)],
    targets: &[&str],
    log: &Path,
) -> Result<(), KernelError> {
    let m = make::Make {
        tree: tree.dir.clone(),
        out: (!tree.in_tree).then(|| out.to_path_buf()),
        jobs: 1,
        nice: opts.nice,
        vars: env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        targets: targets.iter().map(|t| t.to_string()).collect(),
    };
    let r = m
        .run(log, None, Duration::from_secs(3600), &mut |_| {})
        .map_err(|e| KernelError::Command {
            command: m.describe(),
            detail: e.to_string(),
        })?;
    if r.ok {
        Ok(())
    } else {
        Err(KernelError::Command {
            command: m.describe(),
            detail: format!(
                "{} (log: {})",
                r.first_error
                    .map_or_else(|| "failed".to_string(), |e| e.line),
                log.display()
            ),
        })
    }
}

/// The config ktstr builds `tree` with: `tinyconfig`, the fragments,
/// `olddefconfig`, then the check that every requested option survived.
/// The build directory's `.config` is replaced only when it differs (an
/// unchanged config leaves make nothing to redo).
fn configure(
    spec: &KernelSpec,
    tree: &source::Tree,
    out: &Path,
    fragments: &[(String, String)],
    opts: &BuildOptions,
    log: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<String, KernelError> {
    let mut wants = Vec::new();
    for (name, text) in fragments {
        wants.extend(
            kconfig::parse_fragment(name, text).map_err(|e| KernelError::BadSpec {
                spec: spec.to_string(),
                why: e.to_string(),
            })?,
        );
    }
    progress(&format!(
        "configuring: {} + {}",
        opts.base,
        fragments
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(" + ")
    ));
    let new_name = ".config.ktstr-new";
    let new = out.join(new_name);
    let _ = std::fs::remove_file(&new);
    let var = [("KCONFIG_CONFIG", new_name)];
    run_make(tree, out, opts, &var, &[opts.base], log)?;
    let base = std::fs::read_to_string(&new).map_err(|e| KernelError::io(&new, e))?;
    let refs: Vec<(&str, &str)> = fragments
        .iter()
        .map(|(n, t)| (n.as_str(), t.as_str()))
        .collect();
    std::fs::write(&new, kconfig::merged(&base, &refs)).map_err(|e| KernelError::io(&new, e))?;
    run_make(tree, out, opts, &var, &["olddefconfig"], log)?;
    let text = std::fs::read_to_string(&new).map_err(|e| KernelError::io(&new, e))?;
    let values = kconfig::parse_config(&text);
    let lost = kconfig::check(&wants, &values, |name| {
        kconfig::explain(&kconfig::find_definition(&tree.dir, name), name, &values)
    });
    if !lost.is_empty() {
        return Err(KernelError::ConfigCheck {
            spec: spec.to_string(),
            lost: lost.iter().map(ToString::to_string).collect(),
        });
    }
    let current = out.join(".config");
    if std::fs::read_to_string(&current).ok().as_deref() == Some(text.as_str()) {
        let _ = std::fs::remove_file(&new);
    } else {
        std::fs::rename(&new, &current).map_err(|e| KernelError::io(&current, e))?;
    }
    Ok(text)
}

/// Puts the build's bzImage, vmlinux (its DWARF stripped; `.BTF` and the
/// symbols kept) and config into the built-kernel cache under `key`,
/// after the checks every cached kernel passes.
fn insert(
    built: &KernelCache,
    key: &str,
    out: &Path,
    config: &str,
    from: BuiltFrom,
) -> Result<CachedKernel, KernelError> {
    image::check_config(config)?;
    let release_path = out.join("include/config/kernel.release");
    let release = std::fs::read_to_string(&release_path)
        .map_err(|e| KernelError::io(&release_path, e))?
        .trim()
        .to_string();
    let bz_path = out.join("arch/x86/boot/bzImage");
    let bz = std::fs::read(&bz_path).map_err(|e| KernelError::io(&bz_path, e))?;
    let tmp = built.scratch()?;
    let vmlinux = tmp.0.join("vmlinux");
    let strip = std::process::Command::new("objcopy")
        .arg("--strip-debug")
        .arg(out.join("vmlinux"))
        .arg(&vmlinux)
        .output()
        .map_err(|e| KernelError::Command {
            command: "objcopy --strip-debug vmlinux".into(),
            detail: e.to_string(),
        })?;
    if !strip.status.success() {
        return Err(KernelError::Command {
            command: "objcopy --strip-debug vmlinux".into(),
            detail: String::from_utf8_lossy(&strip.stderr).trim().to_string(),
        });
    }
    let elf = std::fs::read(&vmlinux).map_err(|e| KernelError::io(&vmlinux, e))?;
    built.insert_built(tmp, key, &release, &bz, &elf, config, from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(identity: &str, dirty: Option<&str>) -> source::Tree {
        source::Tree {
            dir: "/src".into(),
            identity: identity.into(),
            dirty_sha256: dirty.map(str::to_string),
            in_tree: false,
        }
    }

    #[test]
    fn the_key_follows_the_source_its_changes_and_the_config() {
        let base = cache_key(&tree("git 1", None), "CONFIG_A=y\n");
        assert_eq!(base.len(), 16);
        assert_eq!(base, cache_key(&tree("git 1", None), "CONFIG_A=y\n"));
        assert_ne!(base, cache_key(&tree("git 2", None), "CONFIG_A=y\n"));
        assert_ne!(base, cache_key(&tree("git 1", Some("ab")), "CONFIG_A=y\n"));
        assert_ne!(base, cache_key(&tree("git 1", None), "CONFIG_A=n\n"));
        // The parts are separated: moving text between them changes the key.
        assert_ne!(
            cache_key(&tree("git 1", Some("x")), ""),
            cache_key(&tree("git 1", None), "x")
        );
    }

    #[test]
    fn build_directories_sit_beside_the_caches_trees_and_apart_for_others() {
        let kernels = KernelCache::new("/c/kernels".into());
        assert_eq!(
            build_dir(
                &kernels,
                Path::new("/c/kernel-src/linux-source-7.3_7.3.4/src")
            ),
            Path::new("/c/kernel-src/linux-source-7.3_7.3.4/build")
        );
        let mine = build_dir(&kernels, Path::new("/home/me/linux"));
        assert!(mine.starts_with("/c/kernel-build"), "{}", mine.display());
        assert_ne!(mine, build_dir(&kernels, Path::new("/home/me/linux2")));
    }

    #[test]
    fn source_specs() {
        let spec = |s: &str| s.parse::<KernelSpec>().expect("spec");
        assert!(is_source_spec(&spec("source:7.3")));
        assert!(is_source_spec(&spec("git+file:///l#sha=1234")));
        assert!(!is_source_spec(&spec("7.3")));
        let dir = tempfile::tempdir().expect("tempdir");
        let p = KernelSpec::Path(dir.path().to_path_buf());
        assert!(!is_source_spec(&p), "an empty directory is no tree");
        std::fs::write(dir.path().join("Kconfig"), "").expect("write");
        std::fs::write(dir.path().join("Makefile"), "").expect("write");
        assert!(is_source_spec(&p));
    }
}
