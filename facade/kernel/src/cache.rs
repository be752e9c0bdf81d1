//! The local kernel cache: one directory per release holding `bzImage`,
//! `vmlinux`, `config` and `metadata.json`.

use std::path::{Path, PathBuf};

use ktstr_cache::{Candidate, Key, Policy};
use serde::{Deserialize, Serialize};

#[cfg(feature = "fetch")]
use crate::KernelError;
#[cfg(feature = "fetch")]
use crate::image;
use crate::version;

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
    /// The archive no longer had its config: sched_ext was checked in the
    /// BTF instead, and there is no `config` file.
    #[serde(default)]
    pub no_config: bool,
    /// The archive no longer had its config, and `config` is this other
    /// release's (the nearest one with a config), so that schedulers'
    /// `__kconfig` externs resolve; sched_ext was checked in the BTF.
    #[serde(default)]
    pub config_from: Option<String>,
    /// Built from source by ktstr (an entry of `kernels-built/`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub built: Option<BuiltFrom>,
}

/// What a kernel built from source was built from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuiltFrom {
    /// The spec (`source:7.3`, `git+URL#sha=…`, or the tree's path).
    pub spec: String,
    /// The source's identity (`debian linux-source-7.3 7.3.4-1~bpo13+1`,
    /// `git <sha>`, `tree <path> <mtime>`).
    pub tree: String,
    /// SHA-256 of a git tree's uncommitted changes, when any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dirty_sha256: Option<String>,
    /// SHA-256 of the config fragments applied.
    pub fragment_sha256: String,
    /// How long make took (s).
    pub build_seconds: u64,
}

impl KernelMetadata {
    /// Where the kernel came from, typed.
    pub fn kernel_source(&self) -> crate::KernelSource {
        match &self.built {
            Some(b) => crate::KernelSource::Built {
                spec: b.spec.clone(),
                tree: b.tree.clone(),
                dirty_sha256: b.dirty_sha256.clone(),
                fragment_sha256: b.fragment_sha256.clone(),
            },
            None => crate::KernelSource::from_cache_text(&self.source),
        }
    }
}

/// The file whose modification time says when a cached kernel was last used.
const LAST_USED: &str = ".last-used";
/// Kernels used this recently are never evicted: a test may be about to boot one.
const IN_USE: std::time::Duration = std::time::Duration::from_secs(600);

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
    /// The kernel config, when the entry has one.
    pub fn config_if_any(&self) -> Option<PathBuf> {
        (!self.metadata.no_config).then(|| self.config())
    }
}

/// The local kernel cache.
#[derive(Debug, Clone)]
pub struct KernelCache {
    dir: PathBuf,
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

    pub(crate) fn load(&self, dir: &Path) -> Option<CachedKernel> {
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
            && (k.metadata.no_config || k.config().is_file()))
        .then_some(k)
    }

    /// Marks `k` as used now (the least recently used go first when the
    /// cache is trimmed). Best effort: a read-only cache still boots.
    pub fn touch(&self, k: &CachedKernel) {
        ktstr_cache::touch(&k.dir.join(LAST_USED));
    }

    /// When `k` was last booted or fetched.
    pub fn last_used(&self, k: &CachedKernel) -> std::time::SystemTime {
        ktstr_cache::last_used(&[&k.dir.join(LAST_USED), &k.dir.join("metadata.json")])
    }

    /// The bytes `k` takes on disk (the allocated blocks of every file of its
    /// directory).
    pub fn disk_bytes(&self, k: &CachedKernel) -> u64 {
        ktstr_cache::disk_bytes(&k.dir)
    }

    /// Removes `k`: renamed out of the way first, so no reader ever finds
    /// half an entry.
    pub fn remove(&self, k: &CachedKernel) -> std::io::Result<()> {
        ktstr_cache::remove_entry(&k.dir).map_err(ktstr_cache::CacheError::into_io)
    }

    /// Keeps the `keep` most recently used kernels and removes the others;
    /// returns the removed ones.
    pub fn clean(&self, keep: usize) -> std::io::Result<Vec<CachedKernel>> {
        let mut list = self.list();
        list.sort_by_key(|k| std::cmp::Reverse(self.last_used(k)));
        let gone: Vec<CachedKernel> = list.into_iter().skip(keep).collect();
        for k in &gone {
            self.remove(k)?;
        }
        Ok(gone)
    }

    /// Removes the least recently used kernels until the cache holds at most
    /// `cap` bytes, never one named in `keep` nor one used in the last ten
    /// minutes (a test may be about to boot it); returns the removed ones.
    pub fn evict(&self, cap: u64, keep: &[&str]) -> std::io::Result<Vec<CachedKernel>> {
        let list = self
            .list()
            .into_iter()
            .map(|k| {
                let (bytes, used) = (self.disk_bytes(&k), self.last_used(&k));
                Candidate::new(k, bytes, used)
            })
            .collect();
        let policy = Policy::new(cap).with_grace(IN_USE);
        let gone = ktstr_cache::evict(&policy, list, |k: &CachedKernel| {
            if keep.contains(&k.metadata.release.as_str()) {
                return Ok(false);
            }
            self.remove(k).map(|()| true)
        })?;
        Ok(gone.into_iter().map(|c| c.item).collect())
    }

    /// Removes scratch directories of processes that died before they
    /// could (an interrupted fetch): `.tmp-<pid>-*`, `.gone-<pid>-*` and
    /// the older `.removed-<pid>-*`. A live process's stay however old: a
    /// kernel build may hold one for hours.
    pub fn remove_stale_scratch(&self) {
        ktstr_cache::clean_stale(&self.dir, std::time::Duration::MAX);
    }

    /// A fresh scratch directory inside the cache, removed on drop; renaming
    /// it into place makes a new entry appear atomically.
    #[cfg(feature = "fetch")]
    pub(crate) fn scratch(&self) -> Result<Scratch, KernelError> {
        let staging = ktstr_cache::Staging::dir(&self.dir).map_err(cache_io)?;
        Ok(Scratch(staging.path().to_path_buf(), staging))
    }

    #[cfg(feature = "fetch")]
    /// Stores a bzImage + config under `release`, extracting and checking the vmlinux.
    pub fn insert(
        &self,
        release: &str,
        source: &str,
        bz_image: &[u8],
        config: &str,
    ) -> Result<CachedKernel, KernelError> {
        self.insert_full(release, source, bz_image, Some(config), None)
    }

    /// As [`insert`](Self::insert), for an archive that lost the release's
    /// config: with none, sched_ext is checked in the vmlinux's BTF; with
    /// one borrowed from release `config_from`, that is recorded and written
    /// at the top of the file.
    #[cfg(feature = "fetch")]
    pub fn insert_full(
        &self,
        release: &str,
        source: &str,
        bz_image: &[u8],
        config: Option<&str>,
        config_from: Option<&str>,
    ) -> Result<CachedKernel, KernelError> {
        if let Some(config) = config {
            image::check_config(config)?;
        }
        let payload = image::locate_payload(bz_image)?;
        let vmlinux = image::extract_vmlinux(bz_image)?;
        let info = image::inspect_vmlinux(&vmlinux)?;
        if (config.is_none() || config_from.is_some()) && !image::btf_has_sched_ext(&vmlinux) {
            return Err(KernelError::NoSchedExt);
        }
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
            no_config: config.is_none(),
            config_from: config_from.map(str::to_string),
            built: None,
        };
        let tmp = self.scratch()?;
        let write = |name: &str, bytes: &[u8]| {
            let p = tmp.0.join(name);
            std::fs::write(&p, bytes).map_err(|e| KernelError::io(&p, e))
        };
        write("bzImage", bz_image)?;
        write("vmlinux", &vmlinux)?;
        if let Some(config) = config {
            let text = match config_from {
                Some(from) => format!(
                    "# ktstr: the archive no longer has {release}'s config; this is {from}'s, \
                     for schedulers' __kconfig externs\n{config}"
                ),
                None => config.to_string(),
            };
            write("config", text.as_bytes())?;
        }
        self.commit(tmp, release, metadata)
    }

    /// Writes `metadata` into the scratch directory `tmp` and renames it
    /// into place as the entry `name` (replacing a stale or partial one).
    #[cfg(feature = "fetch")]
    fn commit(
        &self,
        tmp: Scratch,
        name: &str,
        metadata: KernelMetadata,
    ) -> Result<CachedKernel, KernelError> {
        let json = serde_json::to_vec_pretty(&metadata).expect("metadata serializes");
        let p = tmp.0.join("metadata.json");
        std::fs::write(&p, json).map_err(|e| KernelError::io(&p, e))?;
        let dest = self.dir.join(name);
        tmp.1.publish(&dest).map_err(cache_io)?;
        Ok(CachedKernel {
            dir: dest,
            metadata,
        })
    }
}

impl KernelCache {
    /// Stores a kernel built from source under `key`, from the scratch
    /// directory `tmp` holding its `vmlinux` (`elf`); checked like a fetched
    /// kernel (BTF, sched_ext), renamed into place as a whole.
    #[cfg(feature = "fetch")]
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn insert_built(
        &self,
        tmp: Scratch,
        key: &str,
        release: &str,
        bz_image: &[u8],
        elf: &[u8],
        config: &str,
        from: BuiltFrom,
    ) -> Result<CachedKernel, KernelError> {
        image::check_config(config)?;
        let payload = image::locate_payload(bz_image)?;
        let info = image::inspect_vmlinux(elf)?;
        let metadata = KernelMetadata {
            release: release.to_string(),
            source: from.spec.clone(),
            bzimage_sha256: sha256_hex(bz_image),
            vmlinux_sha256: sha256_hex(elf),
            bzimage_bytes: bz_image.len() as u64,
            vmlinux_bytes: elf.len() as u64,
            btf_bytes: info.btf_bytes,
            pvh_entry: info.pvh_entry,
            codec: format!("{:?}", payload.codec).to_lowercase(),
            fetched_at: rfc3339_now(),
            no_config: false,
            config_from: None,
            built: Some(from),
        };
        let write = |name: &str, bytes: &[u8]| {
            let p = tmp.0.join(name);
            std::fs::write(&p, bytes).map_err(|e| KernelError::io(&p, e))
        };
        write("bzImage", bz_image)?;
        write("config", config.as_bytes())?;
        self.commit(tmp, key, metadata)
    }
}

/// A scratch directory (its path, and the staging that removes it when
/// dropped unless it is published).
#[cfg(feature = "fetch")]
pub(crate) struct Scratch(pub(crate) PathBuf, ktstr_cache::Staging);

/// A failure of the shared cache mechanism, as this crate reports I/O.
#[cfg(feature = "fetch")]
fn cache_io(e: ktstr_cache::CacheError) -> KernelError {
    let path = e.path().to_path_buf();
    KernelError::io(&path, e.into_io())
}

/// The SHA-256 of the file at `path`, in hex, read in pieces (results
/// records name the kernel and scheduler binaries by it).
pub fn file_sha256(path: &Path) -> std::io::Result<String> {
    Ok(Key::of_reader(std::fs::File::open(path)?)?.hex())
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    Key::of(bytes).hex()
}

/// The current time as RFC 3339 UTC, without a calendar crate.
#[cfg(feature = "fetch")]
fn rfc3339_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    rfc3339(secs)
}

#[cfg(feature = "fetch")]
pub(crate) fn rfc3339(secs: u64) -> String {
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

/// The cached kernels as a table, newest first: release, upstream version,
/// disk size (debug index and modules included), last use, source.
pub fn list_table(cache: &KernelCache) -> String {
    let list = cache.list();
    if list.is_empty() {
        return format!(
            "no cached kernels in {} (run `cargo ktstr kernel fetch 7.3`, or `cargo xtask kernel fetch`)\n",
            cache.dir().display()
        );
    }
    let mut s = format!(
        "{:<30} {:>8} {:>8} {:<17} SOURCE\n",
        "RELEASE", "DISK", "BTF", "LAST USED"
    );
    let now = std::time::SystemTime::now();
    let mut total = 0;
    for k in list {
        let m = &k.metadata;
        let bytes = cache.disk_bytes(&k);
        total += bytes;
        let ago = now
            .duration_since(cache.last_used(&k))
            .map_or_else(|_| "now".to_string(), |d| ago(d.as_secs()));
        s.push_str(&format!(
            "{:<30} {:>6}Mi {:>6}Ki {:<17} {}\n",
            m.release,
            bytes >> 20,
            m.btf_bytes >> 10,
            ago,
            m.source
        ));
    }
    s.push_str(&format!(
        "total {} MiB in {}\n",
        total >> 20,
        cache.dir().display()
    ));
    s
}

/// `3d ago`, `5h ago`, `12m ago`, `now`.
fn ago(secs: u64) -> String {
    match secs {
        0..60 => "now".into(),
        60..3600 => format!("{}m ago", secs / 60),
        3600..86_400 => format!("{}h ago", secs / 3600),
        _ => format!("{}d ago", secs / 86_400),
    }
}
