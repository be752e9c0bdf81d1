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
    let candidates = apt.candidates()?;
    let mut checked = Vec::new();
    for cand in candidates {
        if let Some(k) = cache.get(&cand.release) {
            progress(&format!("newest kernel {} is already cached", cand.release));
            let tmp = cache.scratch()?;
            modules::keep_kvm_modules(&apt, &cand.release, &k.dir, &tmp.0, progress)?;
            keep_line_index(&apt, &cand.release, &k, &cache, progress);
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
        let (Some(image), Some(config)) = (image, config) else {
            checked.push(format!(
                "{} (no image or config in the package)",
                cand.release
            ));
            continue;
        };
        let config = std::fs::read_to_string(&config).map_err(|e| KernelError::io(&config, e))?;
        if image::check_config(&config).is_err() {
            progress(&format!(
                "{} has no sched_ext; trying an older kernel",
                cand.release
            ));
            checked.push(format!("{} (no sched_ext)", cand.release));
            continue;
        }
        let bz = std::fs::read(&image).map_err(|e| KernelError::io(&image, e))?;
        let source = format!("debian {} {version}", cand.package);
        progress(&format!("extracting vmlinux of {}", cand.release));
        let k = cache.insert(&cand.release, &source, &bz, &config)?;
        let tmp = cache.scratch()?;
        modules::keep_kvm_modules(&apt, &cand.release, &k.dir, &tmp.0, progress)?;
        keep_line_index(&apt, &cand.release, &k, &cache, progress);
        return Ok(FetchOutcome::Fetched(k));
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
