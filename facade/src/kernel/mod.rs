//! Kernels for test VMs: resolution, the local cache, and fetching Debian's
//! sched_ext-enabled cloud kernels.
//!
//! Wherever a kernel is needed the same order applies: an explicit path
//! (`--kernel PATH`: a bzImage, a vmlinux, a kernel build tree or a cache
//! entry), then `KTSTR_KERNEL`, then the newest cached kernel.
//!
//! Cache layout: `$KTSTR_CACHE_DIR/kernels/<release>/` (default
//! `~/.cache/ktstr/kernels/<release>/`) holds `bzImage`, `vmlinux`, `config`
//! and `metadata.json`, and a fetched kernel its KVM modules in `modules/`
//! ([`modules`]).

pub mod debian;
pub mod image;
pub mod modules;
mod version;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use image::Codec;

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
    fn io(path: &Path, source: std::io::Error) -> Self {
        KernelError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// ktstr's cache root: `$KTSTR_CACHE_DIR`, else `$XDG_CACHE_HOME/ktstr`, else `~/.cache/ktstr`.
pub fn cache_root() -> PathBuf {
    if let Some(d) = std::env::var_os("KTSTR_CACHE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("ktstr");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
    PathBuf::from(home).join(".cache/ktstr")
}

/// Facts about a cached kernel, stored beside it as `metadata.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelMetadata {
    /// Kernel release (`uname -r`).
    pub release: String,
    /// Where it came from (`debian:<suite> <package> <version>`, or a path).
    pub source: String,
    /// SHA-256 of the bzImage.
    pub bzimage_sha256: String,
    /// SHA-256 of the extracted vmlinux.
    pub vmlinux_sha256: String,
    /// Size of the bzImage in bytes.
    pub bzimage_bytes: u64,
    /// Size of the vmlinux in bytes.
    pub vmlinux_bytes: u64,
    /// Size of the `.BTF` section in bytes.
    pub btf_bytes: u64,
    /// Whether the vmlinux has a PVH entry note.
    pub pvh_entry: bool,
    /// The payload codec of the bzImage.
    pub codec: String,
    /// When it was fetched (RFC 3339, UTC).
    pub fetched_at: String,
}

/// A kernel in the cache.
#[derive(Debug, Clone)]
pub struct CachedKernel {
    /// Its directory.
    pub dir: PathBuf,
    /// Its metadata.
    pub metadata: KernelMetadata,
}

impl CachedKernel {
    /// The ELF vmlinux.
    pub fn vmlinux(&self) -> PathBuf {
        self.dir.join("vmlinux")
    }
    /// The bzImage.
    pub fn bz_image(&self) -> PathBuf {
        self.dir.join("bzImage")
    }
    /// The kernel config.
    pub fn config(&self) -> PathBuf {
        self.dir.join("config")
    }
}

/// The local kernel cache.
#[derive(Debug, Clone)]
pub struct KernelCache {
    dir: PathBuf,
}

impl Default for KernelCache {
    fn default() -> Self {
        KernelCache::new(cache_root().join("kernels"))
    }
}

impl KernelCache {
    /// A cache rooted at `dir` (the `kernels/` directory).
    pub fn new(dir: PathBuf) -> Self {
        KernelCache { dir }
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every complete cached kernel, newest release first.
    pub fn list(&self) -> Vec<CachedKernel> {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return vec![];
        };
        let mut out: Vec<CachedKernel> = rd
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .filter_map(|e| self.load(&e.path()))
            .collect();
        out.sort_by(|a, b| version::compare(&b.metadata.release, &a.metadata.release));
        out
    }

    /// The cached kernel of `release`, if complete.
    pub fn get(&self, release: &str) -> Option<CachedKernel> {
        self.load(&self.dir.join(release))
    }

    /// The newest cached kernel.
    pub fn newest(&self) -> Option<CachedKernel> {
        self.list().into_iter().next()
    }

    fn load(&self, dir: &Path) -> Option<CachedKernel> {
        let text = std::fs::read_to_string(dir.join("metadata.json")).ok()?;
        let metadata: KernelMetadata = serde_json::from_str(&text).ok()?;
        let k = CachedKernel {
            dir: dir.to_path_buf(),
            metadata,
        };
        // An entry is complete only if every file is there with its recorded size.
        let size = |p: PathBuf| std::fs::metadata(p).ok().map(|m| m.len());
        (size(k.vmlinux()) == Some(k.metadata.vmlinux_bytes)
            && size(k.bz_image()) == Some(k.metadata.bzimage_bytes)
            && k.config().is_file())
        .then_some(k)
    }

    /// A fresh scratch directory inside the cache, removed on drop; renaming
    /// it into place makes a new entry appear atomically.
    fn scratch(&self) -> Result<Scratch, KernelError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| KernelError::io(&self.dir, e))?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let p = self
            .dir
            .join(format!(".tmp-{}-{nanos}", std::process::id()));
        std::fs::create_dir(&p).map_err(|e| KernelError::io(&p, e))?;
        Ok(Scratch(p))
    }

    /// Stores a bzImage + config under `release`, extracting and checking the vmlinux.
    pub fn insert(
        &self,
        release: &str,
        source: &str,
        bz_image: &[u8],
        config: &str,
    ) -> Result<CachedKernel, KernelError> {
        image::check_config(config)?;
        let payload = image::locate_payload(bz_image)?;
        let vmlinux = image::extract_vmlinux(bz_image)?;
        let info = image::inspect_vmlinux(&vmlinux)?;
        let metadata = KernelMetadata {
            release: release.to_string(),
            source: source.to_string(),
            bzimage_sha256: sha256_hex(bz_image),
            vmlinux_sha256: sha256_hex(&vmlinux),
            bzimage_bytes: bz_image.len() as u64,
            vmlinux_bytes: vmlinux.len() as u64,
            btf_bytes: info.btf_bytes,
            pvh_entry: info.pvh_entry,
            codec: format!("{:?}", payload.codec).to_lowercase(),
            fetched_at: rfc3339_now(),
        };
        let tmp = self.scratch()?;
        let write = |name: &str, bytes: &[u8]| {
            let p = tmp.0.join(name);
            std::fs::write(&p, bytes).map_err(|e| KernelError::io(&p, e))
        };
        write("bzImage", bz_image)?;
        write("vmlinux", &vmlinux)?;
        write("config", config.as_bytes())?;
        let json = serde_json::to_vec_pretty(&metadata).expect("metadata serializes");
        write("metadata.json", &json)?;
        let dest = self.dir.join(release);
        if dest.exists() {
            // A stale or partial entry: replace it.
            std::fs::remove_dir_all(&dest).map_err(|e| KernelError::io(&dest, e))?;
        }
        std::fs::rename(&tmp.0, &dest).map_err(|e| KernelError::io(&dest, e))?;
        Ok(CachedKernel {
            dir: dest,
            metadata,
        })
    }
}

/// A directory removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The current time as RFC 3339 UTC, without a calendar crate.
fn rfc3339_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    rfc3339(secs)
}

fn rfc3339(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil-from-days (Howard Hinnant's algorithm, public domain description).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

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
#[derive(Debug, Clone, Default)]
pub struct FetchOptions {
    /// Use the cache only; never touch the network.
    pub offline: bool,
    /// The cache to fill (default: [`KernelCache::default`]).
    pub cache: Option<KernelCache>,
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
    let cache = opts.cache.clone().unwrap_or_default();
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
            (mirror, debian::kernel_suites(&codename))
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

/// The cached kernels as a table, newest first.
pub fn list_table(cache: &KernelCache) -> String {
    let list = cache.list();
    if list.is_empty() {
        return format!(
            "no cached kernels in {} (run `cargo xtask kernel fetch`)\n",
            cache.dir().display()
        );
    }
    let mut s = format!(
        "{:<28} {:>8} {:>8}  {:<21} SOURCE\n",
        "RELEASE", "VMLINUX", "BTF", "FETCHED"
    );
    for k in list {
        let m = &k.metadata;
        s.push_str(&format!(
            "{:<28} {:>6}Mi {:>6}Ki  {:<21} {}\n",
            m.release,
            m.vmlinux_bytes >> 20,
            m.btf_bytes >> 10,
            m.fetched_at,
            m.source
        ));
    }
    s
}

/// How a kernel was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelOrigin {
    /// An explicit path (`--kernel`).
    Explicit,
    /// The `KTSTR_KERNEL` environment variable.
    Env,
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
    /// How it was found.
    pub origin: KernelOrigin,
}

/// Resolves the kernel to use: `explicit`, then `KTSTR_KERNEL`, then the newest cached kernel.
pub fn resolve(explicit: Option<&Path>) -> Result<Kernel, KernelError> {
    let cache = KernelCache::default();
    if let Some(p) = explicit {
        return from_path(p, KernelOrigin::Explicit, &cache);
    }
    if let Some(p) = std::env::var_os("KTSTR_KERNEL").filter(|p| !p.is_empty()) {
        return from_path(Path::new(&p), KernelOrigin::Env, &cache);
    }
    let k = cache.newest().ok_or_else(|| KernelError::NotFound {
        cache: cache.dir().to_path_buf(),
    })?;
    Ok(Kernel {
        vmlinux: k.vmlinux(),
        bz_image: Some(k.bz_image()),
        config: Some(k.config()),
        release: Some(k.metadata.release),
        origin: KernelOrigin::Cache,
    })
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
        if !vmlinux.is_file() {
            return Err(bad(
                "directory has no vmlinux: pass a built kernel tree (run `make`), a cache entry, or a vmlinux/bzImage file",
            ));
        }
        let first = |c: [&str; 2]| c.iter().map(|n| p.join(n)).find(|f| f.is_file());
        let k = Kernel {
            vmlinux,
            bz_image: first(["arch/x86/boot/bzImage", "bzImage"]),
            config: first([".config", "config"]),
            release: std::fs::read_to_string(p.join("include/config/kernel.release"))
                .ok()
                .map(|s| s.trim().to_string())
                .or_else(|| cache.load(p).map(|k| k.metadata.release)),
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
        return Ok(Kernel {
            vmlinux: p.to_path_buf(),
            bz_image: None,
            config: None,
            release: None,
            origin,
        });
    }
    if image::is_bzimage(&bytes) {
        // Extract once per distinct image, keyed by content.
        let dir = cache_root()
            .join("extracted")
            .join(&sha256_hex(&bytes)[..16]);
        let vmlinux = dir.join("vmlinux");
        if !vmlinux.is_file() {
            let elf = image::extract_vmlinux(&bytes)?;
            image::inspect_vmlinux(&elf)?;
            std::fs::create_dir_all(&dir).map_err(|e| KernelError::io(&dir, e))?;
            let tmp = dir.join(format!(".vmlinux.{}", std::process::id()));
            std::fs::write(&tmp, &elf).map_err(|e| KernelError::io(&tmp, e))?;
            std::fs::rename(&tmp, &vmlinux).map_err(|e| KernelError::io(&vmlinux, e))?;
        }
        return Ok(Kernel {
            vmlinux,
            bz_image: Some(p.to_path_buf()),
            config: None,
            release: None,
            origin,
        });
    }
    Err(bad("neither an ELF vmlinux nor an x86 bzImage"))
}

fn check_vmlinux_file(p: &Path) -> Result<(), KernelError> {
    let bytes = std::fs::read(p).map_err(|e| KernelError::io(p, e))?;
    image::inspect_vmlinux(&bytes).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A local apt repository (no signature, `[trusted=yes]`) holding Debian
    /// 7.x-layout kernel packages, built with dpkg-deb.
    struct LocalRepo {
        dir: tempfile::TempDir,
        packages: String,
    }

    impl LocalRepo {
        fn new() -> Self {
            let dir = tempfile::tempdir().expect("tempdir");
            std::fs::create_dir_all(dir.path().join("dists/test/main/binary-amd64"))
                .expect("mkdir");
            std::fs::create_dir_all(dir.path().join("pool")).expect("mkdir");
            LocalRepo {
                dir,
                packages: String::new(),
            }
        }

        /// Adds `linux-binary-unsigned-<release>` with a bzImage and a config.
        fn add_kernel(&mut self, release: &str, config: &str) {
            let name = format!("linux-binary-unsigned-{release}");
            let root = self.dir.path().join(format!("build-{release}"));
            let moddir = root.join("usr/lib/modules").join(release);
            std::fs::create_dir_all(root.join("DEBIAN")).expect("mkdir");
            std::fs::create_dir_all(&moddir).expect("mkdir");
            let bz = image::tests::tiny_bzimage(&image::tests::tiny_vmlinux(b"btf-of-the-test"));
            std::fs::write(moddir.join("vmlinuz.unsigned"), bz).expect("write");
            std::fs::write(moddir.join("config"), config).expect("write");
            self.publish(&name, &root);
        }

        /// Adds `linux-modules-<release>` with the KVM modules, xz-compressed.
        fn add_modules(&mut self, release: &str) {
            let name = modules::package_name(release);
            let root = self.dir.path().join(format!("build-modules-{release}"));
            for (module, path) in modules::KVM_MODULES {
                let p = root
                    .join("usr/lib/modules")
                    .join(release)
                    .join(format!("{path}.xz"));
                std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
                let mut xz = Vec::new();
                lzma_rs::xz_compress(&mut module.as_bytes(), &mut xz).expect("xz");
                std::fs::write(p, xz).expect("write");
            }
            self.publish(&name, &root);
        }

        /// Builds `root` into the .deb of package `name` and lists it.
        fn publish(&mut self, name: &str, root: &Path) {
            std::fs::create_dir_all(root.join("DEBIAN")).expect("mkdir");
            std::fs::write(
                root.join("DEBIAN/control"),
                format!("Package: {name}\nVersion: 1\nArchitecture: amd64\nMaintainer: t <t@example.org>\nDescription: test kernel\n"),
            )
            .expect("write");
            let deb = self.dir.path().join(format!("pool/{name}_1_amd64.deb"));
            let st = std::process::Command::new("dpkg-deb")
                .args(["-b", "-Zgzip"])
                .arg(root)
                .arg(&deb)
                .output()
                .expect("dpkg-deb runs (Debian's dpkg)");
            assert!(
                st.status.success(),
                "dpkg-deb: {}",
                String::from_utf8_lossy(&st.stderr)
            );
            let bytes = std::fs::read(&deb).expect("read deb");
            self.packages.push_str(&format!(
                "Package: {name}\nVersion: 1\nArchitecture: amd64\nFilename: pool/{name}_1_amd64.deb\nSize: {}\nSHA256: {}\nDescription: test kernel\n\n",
                bytes.len(),
                sha256_hex(&bytes)
            ));
            std::fs::write(
                self.dir
                    .path()
                    .join("dists/test/main/binary-amd64/Packages"),
                &self.packages,
            )
            .expect("write Packages");
        }

        fn source(&self) -> debian::FetchSource {
            debian::FetchSource {
                uri: format!("file:{}", self.dir.path().display()),
                suites: vec!["test".into()],
                trusted: true,
            }
        }
    }

    fn fetch_from(
        src: debian::FetchSource,
        cache: &KernelCache,
    ) -> Result<FetchOutcome, KernelError> {
        let opts = FetchOptions {
            offline: false,
            cache: Some(cache.clone()),
            source: Some(src),
        };
        fetch(&opts, &mut |_| {})
    }

    #[test]
    fn fetch_from_a_repository_then_reuse_the_cache() {
        let mut repo = LocalRepo::new();
        repo.add_kernel("9.9.1+deb13-cloud-amd64", "CONFIG_SCHED_CLASS_EXT=y\n");
        repo.add_kernel(
            "9.9.2+deb13-cloud-amd64",
            "# CONFIG_SCHED_CLASS_EXT is not set\n",
        );
        let cache_dir = tempfile::tempdir().expect("tempdir");
        let cache = KernelCache::new(cache_dir.path().join("kernels"));
        // The newest package lacks sched_ext: the newest one that has it wins.
        let first = fetch_from(repo.source(), &cache).expect("fetch");
        assert!(matches!(first, FetchOutcome::Fetched(_)), "{first:?}");
        assert_eq!(first.kernel().metadata.release, "9.9.1+deb13-cloud-amd64");
        assert!(first.kernel().vmlinux().is_file());
        // No linux-modules package: the kernel is cached without its modules.
        assert!(!modules::has_kvm_modules(&first.kernel().dir));
        // Again, now with the modules published: the kernel is not downloaded
        // again, the cached kernel is named, and its KVM modules are kept.
        repo.add_modules("9.9.1+deb13-cloud-amd64");
        let second = fetch_from(repo.source(), &cache).expect("fetch again");
        assert!(
            matches!(second, FetchOutcome::AlreadyCached(_)),
            "{second:?}"
        );
        assert!(modules::has_kvm_modules(&second.kernel().dir));
        let kvm = std::fs::read(modules::modules_dir(&second.kernel().dir).join("kvm.ko"))
            .expect("kvm.ko");
        assert_eq!(kvm, b"kvm", "decompressed");
        // Offline: the cache alone.
        let offline = fetch(
            &FetchOptions {
                offline: true,
                cache: Some(cache.clone()),
                source: None,
            },
            &mut |_| {},
        )
        .expect("offline");
        assert_eq!(offline.kernel().metadata.release, "9.9.1+deb13-cloud-amd64");
    }

    #[test]
    fn no_package_with_sched_ext_is_an_error_naming_what_was_checked() {
        let mut repo = LocalRepo::new();
        repo.add_kernel(
            "9.9.2+deb13-cloud-amd64",
            "# CONFIG_SCHED_CLASS_EXT is not set\n",
        );
        let cache_dir = tempfile::tempdir().expect("tempdir");
        let cache = KernelCache::new(cache_dir.path().join("kernels"));
        let err = fetch_from(repo.source(), &cache).expect_err("no sched_ext");
        assert!(
            matches!(err, KernelError::NoSchedExtPackage { .. }),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("9.9.2+deb13-cloud-amd64 (no sched_ext)"),
            "{err}"
        );
        let empty = LocalRepo::new();
        std::fs::write(
            empty
                .dir
                .path()
                .join("dists/test/main/binary-amd64/Packages"),
            "",
        )
        .expect("write");
        let err = fetch_from(empty.source(), &cache).expect_err("no package");
        assert!(
            err.to_string()
                .contains("no cloud-amd64 kernel package found"),
            "{err}"
        );
    }

    #[test]
    fn unreachable_mirror_is_named() {
        let cache_dir = tempfile::tempdir().expect("tempdir");
        let cache = KernelCache::new(cache_dir.path().join("kernels"));
        // Port 9 on loopback: nothing listens, the connection is refused.
        let src = debian::FetchSource {
            uri: "http://127.0.0.1:9/debian".into(),
            suites: vec!["test".into()],
            trusted: true,
        };
        let err = fetch_from(src, &cache).expect_err("unreachable");
        assert!(
            matches!(err, KernelError::MirrorUnreachable { .. }),
            "{err}"
        );
        let text = err.to_string();
        assert!(
            text.contains("127.0.0.1:9") && text.contains("--offline"),
            "{text}"
        );
    }

    #[test]
    fn rfc3339_known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_309_261), "2026-11-22T01:01:01Z");
    }

    #[test]
    fn cache_insert_list_and_refuse() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = KernelCache::new(dir.path().join("kernels"));
        assert!(cache.newest().is_none());
        let elf = image::tests::tiny_vmlinux(b"btf");
        let bz = image::tests::tiny_bzimage(&elf);
        let cfg = "CONFIG_SCHED_CLASS_EXT=y\n";
        cache
            .insert("7.3.4+deb13-cloud-amd64", "test", &bz, cfg)
            .expect("insert");
        cache
            .insert("7.3.10+deb13-cloud-amd64", "test", &bz, cfg)
            .expect("insert");
        let list = cache.list();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].metadata.release, "7.3.10+deb13-cloud-amd64");
        assert_eq!(std::fs::read(list[0].vmlinux()).expect("vmlinux"), elf);
        // No scratch directories are left behind.
        let names: Vec<_> = std::fs::read_dir(cache.dir())
            .expect("read")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        // A kernel without sched_ext or without BTF never enters the cache.
        let err = cache.insert("x", "t", &bz, "# CONFIG_SCHED_CLASS_EXT is not set\n");
        assert!(matches!(err, Err(KernelError::NoSchedExt)));
        let no_btf = image::tests::tiny_bzimage(&image::tests::tiny_vmlinux(b""));
        assert!(matches!(
            cache.insert("y", "t", &no_btf, cfg),
            Err(KernelError::NoBtf)
        ));
        // A damaged entry (truncated vmlinux) is not listed.
        std::fs::write(list[0].vmlinux(), b"\x7fELF").expect("truncate");
        assert_eq!(cache.list().len(), 1);
    }

    #[test]
    fn explicit_paths_are_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = KernelCache::new(dir.path().join("kernels"));
        let missing = from_path(&dir.path().join("nope"), KernelOrigin::Explicit, &cache);
        assert!(
            missing
                .expect_err("missing")
                .to_string()
                .contains("no such file")
        );
        let junk = dir.path().join("junk");
        std::fs::write(&junk, b"hello").expect("write");
        let err = from_path(&junk, KernelOrigin::Explicit, &cache).expect_err("junk");
        assert!(
            err.to_string()
                .contains("neither an ELF vmlinux nor an x86 bzImage"),
            "{err}"
        );
        let elf = dir.path().join("vmlinux");
        std::fs::write(&elf, image::tests::tiny_vmlinux(b"btf")).expect("write");
        let k = from_path(&elf, KernelOrigin::Explicit, &cache).expect("vmlinux");
        assert_eq!(k.vmlinux, elf);
        let k = from_path(dir.path(), KernelOrigin::Explicit, &cache).expect("tree");
        assert_eq!(k.vmlinux, elf);
        let empty = tempfile::tempdir().expect("tempdir");
        let err = from_path(empty.path(), KernelOrigin::Explicit, &cache).expect_err("empty dir");
        assert!(err.to_string().contains("has no vmlinux"), "{err}");
    }
}
