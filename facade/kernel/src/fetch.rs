//! Fetching Debian's sched_ext-enabled cloud kernels into the cache
//! (feature `fetch`: the only part of this crate that downloads).

use crate::{CachedKernel, KernelCache, KernelError, debian, debuginfo, image, modules};

/// How a fetch ended.
#[derive(Debug, Clone)]
pub enum FetchOutcome {
    /// The newest kernel was downloaded and cached.
    Fetched(CachedKernel),
    /// The newest kernel was already cached; nothing was downloaded.
    AlreadyCached(CachedKernel),
}

impl FetchOutcome {
    /// The kernel, however it was obtained.
    pub fn kernel(&self) -> &CachedKernel {
        match self {
            FetchOutcome::Fetched(k) | FetchOutcome::AlreadyCached(k) => k,
        }
    }
}

/// Options of [`fetch`].
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// The cache to fill.
    pub cache: KernelCache,
    /// Use the cache only; never touch the network.
    pub offline: bool,
    /// The suites to search instead of the host release's and the next
    /// release's backports (`KTSTR_KERNEL_SUITES`, as the caller configures).
    pub suites: Option<Vec<String>>,
    /// Fetch from this repository instead of the host's Debian mirror.
    pub source: Option<debian::FetchSource>,
}

/// The private apt state of `opts`, its lists refreshed.
fn open_apt(
    opts: &FetchOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<debian::PrivateApt, KernelError> {
    let cache = &opts.cache;
    let (mirror, suites) = match &opts.source {
        Some(src) => (
            debian::AptSource {
                uri: src.uri.clone(),
                suites: src.suites.clone(),
                components: vec!["main".into()],
                signed_by: src.trusted.then(|| "trusted=yes".to_string()),
            },
            src.suites.clone(),
        ),
        None => {
            let codename = debian::os_codename()?;
            let mirror = debian::debian_mirror(&debian::system_sources(), &codename)?;
            (
                mirror,
                opts.suites
                    .clone()
                    .unwrap_or_else(|| debian::kernel_suites(&codename)),
            )
        }
    };
    let apt_dir = cache.dir().parent().unwrap_or(cache.dir()).join("apt");
    let apt = debian::PrivateApt::new(&apt_dir, mirror, suites)?;
    progress(&format!(
        "refreshing package lists of {} from {}",
        apt.suites().join(", "),
        apt.mirror_uri()
    ));
    apt.update()?;
    Ok(apt)
}

/// A Debian source package (`linux-source-X`) found in the kernel suites of
/// the mirror, else in the host's own apt configuration (the suite of the
/// host release's security updates carries the long-term line's).
pub(crate) struct SourcePackage {
    /// The package.
    pub(crate) package: String,
    /// Its candidate version.
    pub(crate) version: String,
    apt: Option<debian::PrivateApt>,
}

impl SourcePackage {
    /// Downloads the .deb into `into`; returns its path.
    pub(crate) fn download(
        &self,
        into: &std::path::Path,
    ) -> Result<std::path::PathBuf, KernelError> {
        if let Some(a) = &self.apt {
            return a.download(&self.package, into);
        }
        let mut c = std::process::Command::new("apt-get");
        c.args(["-q", "download", &self.package]).current_dir(into);
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            c.arg("-oAPT::Sandbox::User=root");
        }
        host_apt(c, &format!("apt-get download {}", self.package))?;
        std::fs::read_dir(into)
            .map_err(|e| KernelError::io(into, e))?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "deb"))
            .ok_or_else(|| KernelError::Command {
                command: format!("apt-get download {}", self.package),
                detail: "no .deb file appeared".into(),
            })
    }
}

fn host_apt(mut c: std::process::Command, what: &str) -> Result<String, KernelError> {
    let out = c
        .env("LC_ALL", "C")
        .output()
        .map_err(|e| KernelError::Command {
            command: what.into(),
            detail: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(KernelError::Command {
            command: what.into(),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Finds `package` (a `linux-source-X`) and its version.
pub(crate) fn source_package(
    opts: &FetchOptions,
    package: &str,
    progress: &mut dyn FnMut(&str),
) -> Result<SourcePackage, KernelError> {
    let apt = open_apt(opts, progress)?;
    if apt.has_package(package) {
        return Ok(SourcePackage {
            package: package.into(),
            version: apt.version(package)?,
            apt: Some(apt),
        });
    }
    progress(&format!(
        "{package} is not in {}; asking the host's apt",
        apt.suites().join(", ")
    ));
    let mut c = std::process::Command::new("apt-cache");
    c.args(["show", "--no-all-versions", package]);
    let text =
        host_apt(c, &format!("apt-cache show {package}")).map_err(|_| KernelError::BadSpec {
            spec: format!("source:{}", package.trim_start_matches("linux-source-")),
            why: format!(
                "no package {package} in {} nor in the host's apt sources",
                apt.suites().join(", ")
            ),
        })?;
    let version = text
        .lines()
        .find_map(|l| l.strip_prefix("Version: "))
        .ok_or_else(|| KernelError::Command {
            command: format!("apt-cache show {package}"),
            detail: "no Version line".into(),
        })?
        .to_string();
    Ok(SourcePackage {
        package: package.into(),
        version,
        apt: None,
    })
}

/// Fetches the newest Debian cloud kernel with sched_ext into the cache.
///
/// `progress` receives one line per step.
pub fn fetch(
    opts: &FetchOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<FetchOutcome, KernelError> {
    let cache = opts.cache.clone();
    if opts.offline {
        return cache
            .newest()
            .map(FetchOutcome::AlreadyCached)
            .ok_or_else(|| KernelError::NoCachedKernel {
                cache: cache.dir().to_path_buf(),
            });
    }
    let apt = open_apt(opts, progress)?;
    let mut checked = Vec::new();
    for cand in apt.candidates()? {
        match fetch_release(&apt, &cand, &cache, progress) {
            Ok(outcome) => return Ok(outcome),
            Err(KernelError::NoSchedExtRelease { release, .. }) => {
                progress(&format!(
                    "{release} has no sched_ext; trying an older kernel"
                ));
                checked.push(format!("{release} (no sched_ext)"));
            }
            Err(KernelError::Corrupt { what }) if what.starts_with(NO_FILES) => {
                checked.push(format!(
                    "{} (no image or config in the package)",
                    cand.release
                ));
            }
            Err(e) => return Err(e),
        }
    }
    Err(KernelError::NoSchedExtPackage {
        suites: apt.suites().join(", "),
        checked: if checked.is_empty() {
            "no cloud-amd64 kernel package found".into()
        } else {
            checked.join(", ")
        },
    })
}

const NO_FILES: &str = "no kernel image or config in the package";

/// Where refusals are remembered: a release found without sched_ext is not
/// downloaded again to be refused again.
fn refusal_path(cache: &KernelCache, release: &str) -> std::path::PathBuf {
    cache.dir().join(".refused").join(release)
}

/// The config's own line about sched_ext, for the refusal.
fn sched_ext_line(config: &str) -> String {
    config
        .lines()
        .find(|l| l.contains("CONFIG_SCHED_CLASS_EXT"))
        .map_or_else(
            || "CONFIG_SCHED_CLASS_EXT is absent".to_string(),
            |l| l.trim().to_string(),
        )
}

/// Fetches one release into the cache (or finds it there), with its KVM
/// modules and, when the archive has its debug package, its `file:line`
/// index. A release without sched_ext is refused with its config line.
fn fetch_release(
    apt: &debian::PrivateApt,
    cand: &debian::Candidate,
    cache: &KernelCache,
    progress: &mut dyn FnMut(&str),
) -> Result<FetchOutcome, KernelError> {
    let refused = refusal_path(cache, &cand.release);
    if let Ok(line) = std::fs::read_to_string(&refused) {
        return Err(KernelError::NoSchedExtRelease {
            release: cand.release.clone(),
            line: line.trim().to_string(),
        });
    }
    cache.remove_stale_scratch();
    if let Some(k) = cache.get(&cand.release) {
        progress(&format!("kernel {} is already cached", cand.release));
        let tmp = cache.scratch()?;
        modules::keep_kvm_modules(apt, &cand.release, &k.dir, &tmp.0, progress)?;
        keep_line_index(apt, &cand.release, &k, cache, progress);
        cache.touch(&k);
        return Ok(FetchOutcome::AlreadyCached(k));
    }
    let version = apt.version(&cand.package)?;
    progress(&format!("downloading {} {version}", cand.package));
    let tmp = cache.scratch()?;
    apt.download_and_unpack(&cand.package, &tmp.0)?;
    let root = tmp.0.join("root");
    let (mut image, mut config) = debian::locate_files(&root, &cand.release);
    if config.is_none() {
        // The 7.x layout keeps the config in linux-base-<release>.
        let base = format!("linux-base-{}", cand.release);
        if apt.has_package(&base) {
            progress(&format!("downloading {base} for the kernel config"));
            apt.download_and_unpack(&base, &tmp.0)?;
            (image, config) = debian::locate_files(&root, &cand.release);
        }
    }
    let Some(image) = image else {
        return Err(KernelError::Corrupt {
            what: format!("{NO_FILES} {}", cand.package),
        });
    };
    let refuse = |line: String| {
        if let Some(dir) = refused.parent() {
            let _ = std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&refused, &line));
        }
        KernelError::NoSchedExtRelease {
            release: cand.release.clone(),
            line,
        }
    };
    let mut config_from = None;
    let config = match config {
        Some(c) => Some(std::fs::read_to_string(&c).map_err(|e| KernelError::io(&c, e))?),
        None => {
            // Superseded backports lose their linux-base package (the
            // config) before their image: sched_ext is checked in the BTF,
            // and the nearest release's config stands in for libbpf.
            match borrow_config(apt, &cand.release, &tmp.0, progress)? {
                Some((from, text)) => {
                    progress(&format!(
                        "{}: the archive no longer has its config (linux-base-{0}): sched_ext \
                         is checked in its BTF, and {from}'s config stands in for schedulers' \
                         __kconfig externs",
                        cand.release
                    ));
                    config_from = Some(from);
                    Some(text)
                }
                None => {
                    progress(&format!(
                        "{}: the archive has no config of it nor of any other release: sched_ext \
                         is checked in its BTF, and schedulers that read the kernel config \
                         (`__kconfig`) cannot load on it",
                        cand.release
                    ));
                    None
                }
            }
        }
    };
    if let Some(c) = &config
        && image::check_config(c).is_err()
    {
        return Err(refuse(sched_ext_line(c)));
    }
    let bz = std::fs::read(&image).map_err(|e| KernelError::io(&image, e))?;
    let source = format!("debian {} {version}", cand.package);
    progress(&format!("extracting vmlinux of {}", cand.release));
    let k = match cache.insert_full(
        &cand.release,
        &source,
        &bz,
        config.as_deref(),
        config_from.as_deref(),
    ) {
        Err(KernelError::NoSchedExt) => {
            return Err(refuse(
                "no `sched_ext_ops` in its BTF (config not available)".into(),
            ));
        }
        other => other?,
    };
    drop(tmp);
    let tmp = cache.scratch()?;
    modules::keep_kvm_modules(apt, &cand.release, &k.dir, &tmp.0, progress)?;
    keep_line_index(apt, &cand.release, &k, cache, progress);
    cache.touch(&k);
    Ok(FetchOutcome::Fetched(k))
}

/// The config of the release nearest to `release` (same line first, then
/// the closest line; the newer on a tie) whose `linux-base` is in the lists.
fn borrow_config(
    apt: &debian::PrivateApt,
    release: &str,
    scratch: &std::path::Path,
    progress: &mut dyn FnMut(&str),
) -> Result<Option<(String, String)>, KernelError> {
    use crate::KernelVersion;
    let Some(want) = KernelVersion::of_release(release) else {
        return Ok(None);
    };
    let key = |v: KernelVersion| {
        (i64::from(v.major) << 40) | (i64::from(v.minor) << 20) | i64::from(v.patch.min(0xfffff))
    };
    let Some(from) = apt
        .base_releases()?
        .into_iter()
        .filter_map(|r| KernelVersion::of_release(&r).map(|v| (v, r)))
        .min_by_key(|(v, _)| ((key(*v) - key(want)).abs(), std::cmp::Reverse(*v)))
        .map(|(_, r)| r)
    else {
        return Ok(None);
    };
    let dir = scratch.join("borrowed");
    std::fs::create_dir_all(&dir).map_err(|e| KernelError::io(&dir, e))?;
    progress(&format!(
        "downloading linux-base-{from} for a stand-in config"
    ));
    apt.download_and_unpack(&format!("linux-base-{from}"), &dir)?;
    let (_, config) = debian::locate_files(&dir.join("root"), &from);
    match config {
        Some(c) => Ok(Some((
            from,
            std::fs::read_to_string(&c).map_err(|e| KernelError::io(&c, e))?,
        ))),
        None => Ok(None),
    }
}

/// A spec resolved to a kernel ready to boot.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The spec as given (`7.0`, `6.18..7.3`, a path).
    pub spec: String,
    /// The kernel.
    pub kernel: crate::Kernel,
    /// Whether it was downloaded now.
    pub fetched: bool,
}

/// The archive (or, offline, the cache) a spec's releases are picked from,
/// and fetched from when picked.
#[derive(Debug)]
pub struct Releases {
    opts: FetchOptions,
    apt: Option<debian::PrivateApt>,
    offered: Vec<debian::Candidate>,
}

impl Releases {
    /// Opens the archive's lists (the cache's entries with `opts.offline`).
    pub fn open(opts: &FetchOptions, progress: &mut dyn FnMut(&str)) -> Result<Self, KernelError> {
        let (apt, offered) = if opts.offline {
            let offered = opts
                .cache
                .list()
                .into_iter()
                .map(|k| debian::Candidate {
                    package: k.metadata.source.clone(),
                    release: k.metadata.release.clone(),
                })
                .collect();
            (None, offered)
        } else {
            let apt = open_apt(opts, progress)?;
            let offered = apt.candidates()?;
            (Some(apt), offered)
        };
        Ok(Releases {
            opts: opts.clone(),
            apt,
            offered,
        })
    }

    /// Where releases are looked up, for messages.
    pub fn searched(&self) -> String {
        match &self.apt {
            Some(a) => format!("{} at {}", a.suites().join(", "), a.mirror_uri()),
            None => format!("the cache {}", self.opts.cache.dir().display()),
        }
    }

    /// The releases a version spec picks, oldest first, each version's
    /// newest package release (`6.12.90+deb12.1` over `+deb12`); nothing
    /// is fetched.
    pub fn select(
        &self,
        spec: &crate::KernelSpec,
        all_releases: bool,
    ) -> Result<Vec<debian::Candidate>, KernelError> {
        use crate::KernelVersion;
        let versions: Vec<KernelVersion> = self
            .offered
            .iter()
            .filter_map(|c| KernelVersion::of_release(&c.release))
            .collect();
        let picked =
            spec.select(&versions, all_releases)
                .map_err(|why| KernelError::UnknownVersion {
                    spec: spec.to_string(),
                    why,
                    searched: self.searched(),
                })?;
        Ok(picked
            .into_iter()
            .filter_map(|v| {
                self.offered
                    .iter()
                    .filter(|c| KernelVersion::of_release(&c.release) == Some(*v))
                    .max_by(|a, b| crate::version::compare(&a.release, &b.release))
                    .cloned()
            })
            .collect())
    }

    /// Fetches `cand` into the cache (offline: finds it there).
    pub fn fetch(
        &self,
        cand: &debian::Candidate,
        progress: &mut dyn FnMut(&str),
    ) -> Result<FetchOutcome, KernelError> {
        let cache = &self.opts.cache;
        match &self.apt {
            Some(a) => fetch_release(a, cand, cache, progress),
            None => cache
                .get(&cand.release)
                .map(FetchOutcome::AlreadyCached)
                .ok_or_else(|| KernelError::NoCachedKernel {
                    cache: cache.dir().to_path_buf(),
                }),
        }
    }
}

/// Resolves every spec to kernels, fetching what the cache lacks (nothing
/// with `opts.offline`), in the order given; a range gives the newest
/// release of each line in it (every release with `all_releases`), oldest
/// first. Releases built without sched_ext are refused: an error for a
/// version named alone, a line of `progress` (and no kernel) inside a range.
pub fn resolve_specs(
    specs: &[crate::KernelSpec],
    opts: &FetchOptions,
    all_releases: bool,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<Resolved>, KernelError> {
    let build = crate::build::BuildOptions::new(opts.clone());
    resolve_or_build(specs, &build, all_releases, progress)
}

/// As [`resolve_specs`], building the specs that name a source (a tree,
/// `git+URL#ref`, `source:X.Y`) with `build`'s options (found in the cache
/// of built kernels when built before with the same source and config).
pub fn resolve_or_build(
    specs: &[crate::KernelSpec],
    build: &crate::build::BuildOptions,
    all_releases: bool,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<Resolved>, KernelError> {
    use crate::{Kernel, KernelOrigin, KernelSpec};
    let opts = &build.fetch;
    let cache = &opts.cache;
    let mut releases: Option<Releases> = None;
    let mut out: Vec<Resolved> = Vec::new();
    for spec in specs {
        let text = spec.to_string();
        if crate::build::is_source_spec(spec) {
            let b = crate::build::build(spec, build, progress)?;
            out.push(Resolved {
                spec: text,
                kernel: Kernel::of_cached(&b.kernel, KernelOrigin::Explicit),
                fetched: b.built_now,
            });
            continue;
        }
        if !spec.is_version() {
            let kernel = crate::resolve(Some(spec), cache)?;
            out.push(Resolved {
                spec: text,
                kernel,
                fetched: false,
            });
            continue;
        }
        if matches!(spec, KernelSpec::Newest) {
            // The newest with sched_ext, as `fetch` picks it.
            let outcome = fetch(opts, progress)?;
            out.push(Resolved {
                spec: text,
                kernel: Kernel::of_cached(outcome.kernel(), KernelOrigin::Explicit),
                fetched: matches!(outcome, FetchOutcome::Fetched(_)),
            });
            continue;
        }
        if releases.is_none() {
            releases = Some(Releases::open(opts, progress)?);
        }
        let rel = releases.as_ref().expect("opened just above");
        let wanted = rel.select(spec, all_releases)?;
        let in_range = matches!(spec, KernelSpec::Range { .. });
        let before = out.len();
        let mut refused = Vec::new();
        for cand in &wanted {
            match rel.fetch(cand, progress) {
                Ok(outcome) => out.push(Resolved {
                    spec: text.clone(),
                    kernel: Kernel::of_cached(outcome.kernel(), KernelOrigin::Explicit),
                    fetched: matches!(outcome, FetchOutcome::Fetched(_)),
                }),
                Err(KernelError::NoSchedExtRelease { release, line }) if in_range => {
                    progress(&format!(
                        "{text}: {release} left out: built without sched_ext (`{line}`)"
                    ));
                    refused.push(release);
                }
                Err(e) => return Err(e),
            }
        }
        if out.len() == before {
            return Err(KernelError::NoSchedExtInRange {
                spec: text,
                refused,
            });
        }
    }
    Ok(out)
}

/// One line saying what a fetch did, for the CLI and the xtask.
pub fn describe_fetch(outcome: &FetchOutcome) -> String {
    let (verb, k) = match outcome {
        FetchOutcome::Fetched(k) => ("fetched", k),
        FetchOutcome::AlreadyCached(k) => ("cached", k),
    };
    format!(
        "{verb} {} ({} MiB vmlinux, {} KiB BTF) at {}",
        k.metadata.release,
        k.metadata.vmlinux_bytes >> 20,
        k.metadata.btf_bytes >> 10,
        k.dir.display()
    )
}

/// The kernel's `file:line` index ([`debuginfo`]): optional, so a failure
/// is reported and the fetch goes on (probes then print no line).
fn keep_line_index(
    apt: &debian::PrivateApt,
    release: &str,
    k: &CachedKernel,
    cache: &KernelCache,
    progress: &mut dyn FnMut(&str),
) {
    let res = cache
        .scratch()
        .and_then(|tmp| debuginfo::keep_line_index(apt, release, &k.dir, &tmp.0, progress));
    if let Err(e) = res {
        progress(&format!(
            "no file:line index for {release} (probes show kernel functions without it): {e}"
        ));
    }
}
