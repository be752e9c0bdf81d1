//! The base archive cache: the part of a test's initramfs that does not change
//! between tests (test binary, libraries, schedulers, fixed files) is written
//! once per content and reused.
//!
//! Layout of the cache directory (the caller chooses it; ktstr uses
//! `<cache root>/initramfs/`):
//! - `<request>.manifest`: for one [`BaseSpec`], the archive that holds it and
//!   each packed host file's identity (device, inode, size, mtime, mode) and
//!   where its bytes sit in the archive;
//! - `base-<content>.cpio`: the archive, named by a key over the request and
//!   the identities of every host file in it, so two processes building the
//!   same content write the same name;
//! - `run/`: single-file initrds handed to QEMU, removed when dropped.
//!
//! A lookup stats the files the manifest lists. When all match, the archive
//! is reused without reading anything. When one differs (a rebuilt binary
//! with the same bytes, a `touch`), its bytes are compared with the copy in
//! the archive: equal means reuse (and the manifest is refreshed), different
//! means rebuild. Every file is written to a temporary name and renamed into
//! place, so concurrent test processes (nextest runs one per test) only ever
//! see complete files; a lost race costs a rebuild, never a wrong archive.

use std::fs::{self, File};
use std::hash::{Hash, Hasher};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use ktstr_cache::{CacheError, KeyHasher, Lock, Staging, temp_name};

use crate::closure::{Found, LoaderConfig, closure, merge};
use crate::cpio::{Archive, Extent};
use crate::error::{InitramfsError, Result, io};

/// Bump when the archive layout or the manifest format changes.
pub(crate) const FORMAT: &str = "ktstr-initramfs-manifest 1";
/// Temporary files older than this are left-overs of a crashed process.
const STALE: Duration = Duration::from_secs(3600);
/// The manifest's offset for files whose bytes are not stored plainly.
const NO_OFFSET: u64 = u64::MAX;

/// How the archives are compressed. The kernel must have the matching
/// `CONFIG_RD_*` (Debian's cloud kernels have `RD_LZ4` and `RD_ZSTD`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Compression {
    /// Plain cpio: the default, and what PVH boot with QEMU is known to take.
    #[default]
    None,
    /// The kernel's legacy LZ4 format (cargo feature `lz4`). The base and the
    /// overlay are two streams; the kernel reads them as one.
    #[cfg(feature = "lz4")]
    Lz4,
}

/// What goes into a base archive.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct BaseSpec {
    /// ELF binaries packed with their shared-library closure: (host path, guest path).
    pub binaries: Vec<(PathBuf, String)>,
    /// Further entries packed as they are (an init script, busybox, symlinks).
    pub extra: Archive,
    /// Where the loader looks for libraries.
    pub loader: LoaderConfig,
    /// Compression of the base (and of overlays added to it).
    pub compression: Compression,
}

impl Hash for LoaderConfig {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.ld_cache.hash(state);
        self.default_dirs.hash(state);
    }
}

impl BaseSpec {
    /// A spec with the host's loader configuration and nothing in it yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a binary (with its libraries) at `guest`.
    pub fn binary(mut self, host: impl Into<PathBuf>, guest: &str) -> Self {
        self.binaries.push((host.into(), guest.to_owned()));
        self
    }

    /// The archive this spec stands for, not yet written.
    pub fn archive(&self) -> Result<Archive> {
        let closures = self
            .binaries
            .iter()
            .map(|(host, guest)| closure(host, guest, &self.loader))
            .collect::<Result<Vec<_>>>()?;
        let mut archive = self.extra.clone();
        for file in merge(&closures)? {
            let mode = if file.found == Found::CacheFile {
                0o644
            } else {
                0o755
            };
            archive.add_file(&file.guest, mode, &file.host)?;
        }
        Ok(archive)
    }
}

/// The identity of a host file, checked before trusting a cached copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: i64,
    mtime_ns: i64,
    mode: u32,
}

impl Stamp {
    fn of(path: &Path) -> Option<Stamp> {
        let m = fs::metadata(path).ok()?;
        Some(Stamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: m.mtime(),
            mtime_ns: m.mtime_nsec(),
            mode: m.mode(),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct ManifestFile {
    stamp: Stamp,
    offset: u64,
    host: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Manifest {
    archive: String,
    len: u64,
    files: Vec<ManifestFile>,
}

impl Manifest {
    fn encode(&self) -> String {
        let mut out = format!("{FORMAT}\narchive {}\nlength {}\n", self.archive, self.len);
        for f in &self.files {
            let s = f.stamp;
            out += &format!(
                "file {} {} {} {} {} {} {} {}\n",
                s.dev,
                s.ino,
                s.size,
                s.mtime,
                s.mtime_ns,
                s.mode,
                f.offset,
                hex(f.host.as_os_str().as_encoded_bytes())
            );
        }
        out
    }

    /// `None` for anything unexpected: a bad manifest is a cache miss.
    fn decode(text: &str) -> Option<Manifest> {
        let mut lines = text.lines();
        if lines.next()? != FORMAT {
            return None;
        }
        let archive = lines.next()?.strip_prefix("archive ")?.to_owned();
        let len = lines.next()?.strip_prefix("length ")?.parse().ok()?;
        let mut files = Vec::new();
        for line in lines {
            let mut w = line.strip_prefix("file ")?.split(' ');
            let mut num = || w.next()?.parse::<i128>().ok();
            let (dev, ino, size, mtime, mtime_ns, mode, offset) =
                (num()?, num()?, num()?, num()?, num()?, num()?, num()?);
            let host = unhex(w.next()?)?;
            let stamp = Stamp {
                dev: u64::try_from(dev).ok()?,
                ino: u64::try_from(ino).ok()?,
                size: u64::try_from(size).ok()?,
                mtime: i64::try_from(mtime).ok()?,
                mtime_ns: i64::try_from(mtime_ns).ok()?,
                mode: u32::try_from(mode).ok()?,
            };
            let host = PathBuf::from(String::from_utf8(host).ok()?);
            files.push(ManifestFile {
                stamp,
                offset: u64::try_from(offset).ok()?,
                host,
            });
        }
        Some(Manifest {
            archive,
            len,
            files,
        })
    }
}

/// The archive a manifest's text names, if it is one.
pub(crate) fn manifest_archive(text: &str) -> Option<&str> {
    let mut lines = text.lines();
    if lines.next()? != FORMAT {
        return None;
    }
    lines.next()?.strip_prefix("archive ")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A 128-bit key over `value`: the first half of the SHA-256 of what its
/// [`Hash`] writes, after the cache format ([`ktstr_cache::Key`]).
fn key(value: &impl Hash) -> String {
    let mut h = KeyHasher::new();
    FORMAT.hash(&mut h);
    value.hash(&mut h);
    h.key().short_hex()
}

/// A failure of the shared cache mechanism, as this crate reports I/O.
pub(crate) fn cache_io(e: CacheError) -> InitramfsError {
    InitramfsError::Io {
        path: e.path().to_path_buf(),
        op: e.op(),
        source: e.into_io(),
    }
}

/// Write `bytes` to `path` through a temporary file and a rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    ktstr_cache::publish_bytes(path, bytes).map_err(cache_io)
}

/// The on-disk cache of base archives.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
    cap: u64,
}

impl Cache {
    /// The cache in `dir`, created if missing, capped at
    /// [`DEFAULT_CAP_BYTES`](crate::DEFAULT_CAP_BYTES).
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        fs::create_dir_all(dir.join("run")).map_err(io(&dir, "create directory"))?;
        Ok(Self {
            dir,
            cap: crate::evict::DEFAULT_CAP_BYTES,
        })
    }

    /// Cap the cache's disk use at `bytes` (archives and their run slots).
    /// After each build, the least recently used archives are removed until
    /// it fits; archives used in the last ten minutes are kept regardless.
    pub fn with_cap(mut self, bytes: u64) -> Self {
        self.cap = bytes;
        self
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The base archive for `spec`: reused when the cache holds it, built otherwise.
    pub fn base(&self, spec: &BaseSpec) -> Result<Base> {
        let request = key(spec);
        let manifest_path = self.dir.join(format!("{request}.manifest"));
        let old = fs::read_to_string(&manifest_path)
            .ok()
            .and_then(|t| Manifest::decode(&t));
        if let Some(m) = &old
            && let Some(base) = self.reuse(m, &manifest_path, spec.compression)?
        {
            ktstr_cache::touch(&base.path);
            return Ok(base);
        }
        let base = self.build(spec, &request, &manifest_path)?;
        // The archive the old manifest named is superseded (best effort: a
        // process that read the old manifest just now will fall back to a build).
        if let Some(m) = old
            && m.archive != base.file_name()
        {
            let _ = fs::remove_file(self.dir.join(&m.archive));
            remove_slots(&self.dir.join("run"), &m.archive);
        }
        self.sweep();
        crate::evict::evict(
            &self.dir,
            &self.dir.join("run"),
            self.cap,
            &base.path,
            SystemTime::now(),
        );
        Ok(base)
    }

    /// Check a manifest against the host files; `Some` when its archive is valid.
    fn reuse(
        &self,
        m: &Manifest,
        manifest_path: &Path,
        compression: Compression,
    ) -> Result<Option<Base>> {
        let path = self.dir.join(&m.archive);
        if fs::metadata(&path).map(|md| md.len()).ok() != Some(m.len) {
            return Ok(None);
        }
        let mut changed = Vec::new();
        for (i, f) in m.files.iter().enumerate() {
            match Stamp::of(&f.host) {
                Some(s) if s == f.stamp => {}
                // A compressed archive has no plain copy to compare with.
                Some(s)
                    if s.size == f.stamp.size
                        && s.mode == f.stamp.mode
                        && f.offset != NO_OFFSET =>
                {
                    changed.push((i, s))
                }
                _ => return Ok(None),
            }
        }
        if !changed.is_empty() {
            let mut archive = File::open(&path).map_err(io(&path, "open"))?;
            for &(i, _) in &changed {
                let f = &m.files[i];
                if !same_bytes(&f.host, &mut archive, f.offset, f.stamp.size)? {
                    return Ok(None);
                }
            }
            let mut fresh = m.clone();
            for (i, s) in changed {
                fresh.files[i].stamp = s;
            }
            write_atomic(manifest_path, fresh.encode().as_bytes())?;
        }
        Ok(Some(Base {
            path,
            len: m.len,
            reused: true,
            compression,
        }))
    }

    fn build(&self, spec: &BaseSpec, request: &str, manifest_path: &Path) -> Result<Base> {
        let archive = spec.archive()?;
        let stamps_before: Vec<(PathBuf, Option<Stamp>)> = archive
            .host_files()
            .map(|(_, p)| (p.to_owned(), Stamp::of(p)))
            .collect();
        let name = format!("base-{}.cpio", key(&(request, &stamps_before)));
        let staging = Staging::file(&self.dir).map_err(cache_io)?;
        let tmp = staging.path();
        let written = (|| {
            let file = File::create(tmp).map_err(io(tmp, "create"))?;
            let mut w = BufWriter::with_capacity(1 << 16, file);
            match spec.compression {
                Compression::None => {
                    let layout = archive.write_layout(&mut w)?;
                    w.flush().map_err(io(tmp, "write"))?;
                    Ok(layout)
                }
                #[cfg(feature = "lz4")]
                Compression::Lz4 => {
                    let mut z = crate::compress::Lz4Legacy::new(w).map_err(io(tmp, "write"))?;
                    let (_, mut extents) = archive.write_layout(&mut z)?;
                    let w = z.finish().map_err(io(tmp, "write"))?;
                    let len = w.get_ref().metadata().map_err(io(tmp, "stat"))?.len();
                    extents.iter_mut().for_each(|e| e.offset = NO_OFFSET);
                    Ok((len, extents))
                }
            }
        })();
        // On an error, dropping the staging removes what was written.
        let (len, extents) = written?;
        let manifest = manifest_for(&name, len, &extents, &stamps_before);
        let path = self.dir.join(&name);
        staging.publish(&path).map_err(cache_io)?;
        // A file that changed while it was copied is packed, but not trusted for reuse.
        if let Some(manifest) = manifest {
            write_atomic(manifest_path, manifest.encode().as_bytes())?;
        }
        Ok(Base {
            path,
            len,
            reused: false,
            compression: spec.compression,
        })
    }

    /// Remove what crashed processes left behind: temporary files of
    /// processes that no longer run or older than an hour.
    fn sweep(&self) {
        ktstr_cache::clean_stale(&self.dir, STALE);
        ktstr_cache::clean_stale(&self.dir.join("run"), STALE);
    }
}

/// Unlink the slots of a superseded base. A process using one keeps its
/// inode; `try_slot` notices the unlink and moves on.
pub(crate) fn remove_slots(run: &Path, archive: &str) {
    let prefix = format!("{archive}.slot");
    if let Ok(entries) = fs::read_dir(run) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

/// The manifest of a freshly written archive; `None` when a host file changed
/// between the stat before writing and now.
fn manifest_for(
    name: &str,
    len: u64,
    extents: &[Extent],
    before: &[(PathBuf, Option<Stamp>)],
) -> Option<Manifest> {
    let mut files = Vec::new();
    for (extent, (host, stamp)) in extents.iter().zip(before) {
        let stamp = (*stamp)?;
        if extent.host != *host || Stamp::of(host) != Some(stamp) || stamp.size != extent.len {
            return None;
        }
        files.push(ManifestFile {
            stamp,
            offset: extent.offset,
            host: host.clone(),
        });
    }
    Some(Manifest {
        archive: name.to_owned(),
        len,
        files,
    })
}

/// Compare the host file with `len` bytes of `archive` at `offset`.
fn same_bytes(host: &Path, archive: &mut File, offset: u64, len: u64) -> Result<bool> {
    let mut file = File::open(host).map_err(io(host, "open"))?;
    archive
        .seek(SeekFrom::Start(offset))
        .map_err(io(host, "seek"))?;
    let (mut a, mut b) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut left = len;
    while left > 0 {
        let n = left.min(a.len() as u64) as usize;
        file.read_exact(&mut a[..n]).map_err(io(host, "read"))?;
        if archive.read_exact(&mut b[..n]).is_err() || a[..n] != b[..n] {
            return Ok(false);
        }
        left -= n as u64;
    }
    Ok(true)
}

/// A base archive in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Base {
    path: PathBuf,
    len: u64,
    reused: bool,
    compression: Compression,
}

impl Base {
    /// The archive file (a complete cpio archive; its length is a multiple of 4).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True for an empty archive (never, in practice: the trailer is there).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How it is compressed.
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// `overlay` (a plain cpio archive) as it must follow this base: as is, or
    /// compressed the same way. [`Base::with_overlay`] does this itself; an
    /// own VMM placing the parts in guest memory calls it.
    pub fn overlay_bytes<'a>(&self, overlay: &'a [u8]) -> Result<std::borrow::Cow<'a, [u8]>> {
        match self.compression {
            Compression::None => Ok(std::borrow::Cow::Borrowed(overlay)),
            #[cfg(feature = "lz4")]
            Compression::Lz4 => crate::compress::lz4_legacy(overlay)
                .map(std::borrow::Cow::Owned)
                .map_err(io("<overlay>", "compress")),
        }
    }

    /// True when the cache already held it.
    pub fn reused(&self) -> bool {
        self.reused
    }

    fn file_name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    fn run_dir(&self) -> PathBuf {
        self.path
            .parent()
            .map(|d| d.join("run"))
            .unwrap_or_else(|| PathBuf::from("run"))
    }

    /// One file holding this base followed by `overlay` (a per-test archive):
    /// what QEMU's `-initrd` takes.
    ///
    /// The file is a *slot*: a copy of the base in the cache's `run/`
    /// directory, locked (`flock`) by this process for as long as the returned
    /// value lives, with the overlay written after the base. Slots are reused
    /// by later tests, so the 50 MB copy happens once per slot, not per test;
    /// there are as many slots as tests ran at once. Keep the value alive
    /// until QEMU has read the file (simplest: for the VM's lifetime).
    pub fn with_overlay(&self, overlay: &[u8]) -> Result<InitrdFile> {
        let overlay = &*self.overlay_bytes(overlay)?;
        let run = self.run_dir();
        fs::create_dir_all(&run).map_err(io(&run, "create directory"))?;
        for n in 0.. {
            let path = run.join(format!("{}.slot{n}", self.file_name()));
            if let Some(file) = self.try_slot(&path, overlay)? {
                return Ok(file);
            }
        }
        unreachable!("the slot search only ends by returning")
    }

    /// Take slot `path` if no other process holds it; `None` when busy.
    fn try_slot(&self, path: &Path, overlay: &[u8]) -> Result<Option<InitrdFile>> {
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(io(path, "open"))?;
        let lock = Lock::from_file(file, path);
        if !lock.try_exclusive().map_err(cache_io)? {
            return Ok(None);
        }
        let file = lock.file();
        // The path must still name the file we locked (a sweep may have
        // unlinked it between open and lock): otherwise try the next slot.
        let ours = file.metadata().map_err(io(path, "stat"))?;
        match fs::metadata(path) {
            Ok(now) if now.ino() == ours.ino() && now.dev() == ours.dev() => {}
            _ => return Ok(None),
        }
        // A slot is filled front to back, so a length of at least the base's
        // means the base is all there (a crash mid-copy leaves it shorter).
        if ours.len() < self.len {
            let mut out = file;
            out.set_len(0).map_err(io(path, "truncate"))?;
            let mut base = File::open(&self.path).map_err(io(&self.path, "open"))?;
            let copied = std::io::copy(&mut base, &mut out).map_err(io(path, "copy"))?;
            if copied != self.len {
                return Err(InitramfsError::Changed {
                    path: self.path.clone(),
                    expected: self.len,
                });
            }
        }
        let len = self.len + overlay.len() as u64;
        file.write_all_at(overlay, self.len)
            .map_err(io(path, "write"))?;
        file.set_len(len).map_err(io(path, "truncate"))?;
        Ok(Some(InitrdFile {
            path: path.to_owned(),
            len,
            slot: Some(lock),
        }))
    }

    /// As [`Base::with_overlay`], but a private copy in `dir` (for example a
    /// tmpfs), removed when the returned value is dropped. Costs a full copy
    /// of the base every time.
    pub fn copy_with_overlay(&self, overlay: &[u8], dir: &Path) -> Result<InitrdFile> {
        let overlay = &*self.overlay_bytes(overlay)?;
        let path = dir.join(temp_name(".tmp-"));
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(io(&path, "create"))?;
        // From here on the guard removes the file on every early return.
        let file = InitrdFile {
            path,
            len: self.len + overlay.len() as u64,
            slot: None,
        };
        let mut base = File::open(&self.path).map_err(io(&self.path, "open"))?;
        let copied = std::io::copy(&mut base, &mut out).map_err(io(&file.path, "copy"))?;
        if copied != self.len {
            return Err(InitramfsError::Changed {
                path: self.path.clone(),
                expected: self.len,
            });
        }
        out.write_all(overlay).map_err(io(&file.path, "write"))?;
        Ok(file)
    }
}

/// A complete initrd file (base + overlay). A slot is unlocked when this is
/// dropped; a private copy is deleted.
#[derive(Debug)]
pub struct InitrdFile {
    path: PathBuf,
    len: u64,
    /// The locked slot, or `None` for a private copy.
    slot: Option<Lock>,
}

impl InitrdFile {
    /// Its path, for `-initrd`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for InitrdFile {
    fn drop(&mut self) {
        // Closing the slot's file releases its lock.
        if self.slot.take().is_none() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keys are SHA-256 of the value's `Hash` bytes: fixed across Rust
    /// releases (the value below was computed once and must never change
    /// unless FORMAT does).
    #[test]
    fn keys_are_stable_sha256_digests() {
        let k = key(&("busybox", 3u32));
        assert_eq!(k.len(), 32);
        // sha256("ktstr-initramfs-manifest 1" 0xff "busybox" 0xff 03 00 00 00),
        // what `str` and `u32` write to a Hasher; checked with Python's hashlib.
        assert_eq!(k, "bc2ad47281c8db6ae9d06bbea13a1793");
        assert_ne!(key(&("busybox", 4u32)), k);
    }
    use crate::cpio::parse;

    fn spec_with(dir: &Path, contents: &[u8]) -> BaseSpec {
        let bin = dir.join("tool");
        if fs::read(&bin).ok().as_deref() != Some(contents) {
            fs::write(&bin, contents).expect("write");
        }
        let mut extra = Archive::new();
        extra.add_file("/bin/tool", 0o755, &bin).expect("add");
        extra
            .add_bytes("/init", 0o755, b"#!/bin/sh\n".to_vec())
            .expect("add");
        BaseSpec {
            extra,
            ..BaseSpec::default()
        }
    }

    #[test]
    fn manifest_round_trips() {
        let m = Manifest {
            archive: "base-x.cpio".into(),
            len: 124,
            files: vec![ManifestFile {
                stamp: Stamp {
                    dev: 1,
                    ino: 2,
                    size: 3,
                    mtime: -4,
                    mtime_ns: 5,
                    mode: 0o100755,
                },
                offset: NO_OFFSET,
                host: PathBuf::from("/a b/c\nd"),
            }],
        };
        assert_eq!(Manifest::decode(&m.encode()), Some(m));
        assert_eq!(Manifest::decode("garbage"), None);
    }

    #[test]
    fn second_lookup_reuses_and_a_change_rebuilds() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cache = Cache::open(tmp.path().join("cache")).expect("open");
        let spec = spec_with(tmp.path(), b"one");
        let first = cache.base(&spec).expect("build");
        assert!(!first.reused());
        let again = cache.base(&spec).expect("lookup");
        assert!(again.reused());
        assert_eq!(
            again,
            Base {
                reused: true,
                ..first.clone()
            }
        );

        // Same bytes, new inode: reused after a content check.
        let bin = tmp.path().join("tool");
        fs::remove_file(&bin).expect("rm");
        fs::write(&bin, b"one").expect("write");
        assert!(cache.base(&spec).expect("lookup").reused());

        // Same size, other bytes: rebuilt, and the old archive is gone.
        fs::write(&bin, b"two").expect("write");
        let third = cache.base(&spec).expect("rebuild");
        assert!(!third.reused());
        assert_ne!(third.path(), first.path());
        assert!(!first.path().exists());
        let bytes = fs::read(third.path()).expect("read");
        assert!(
            parse(&bytes)
                .expect("parse")
                .iter()
                .any(|e| e.data == b"two")
        );
    }

    fn names(bytes: &[u8]) -> Vec<String> {
        parse(bytes)
            .expect("parse")
            .iter()
            .map(|e| String::from_utf8_lossy(e.name).into_owned())
            .collect()
    }

    fn overlay(name: &str, body: &[u8]) -> Vec<u8> {
        let mut a = Archive::new();
        a.add_bytes(name, 0o644, body.to_vec()).expect("add");
        a.to_vec().expect("write")
    }

    #[test]
    fn slots_hold_base_then_overlay_and_are_reused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cache = Cache::open(tmp.path().join("cache")).expect("open");
        let base = cache.base(&spec_with(tmp.path(), b"bin")).expect("build");
        let long = overlay("/ktstr/test", &[b'x'; 300]);
        let short = overlay("/ktstr/other", b"y");

        let first = base.with_overlay(&long).expect("initrd");
        // A second user while the first holds its slot gets another slot.
        let second = base.with_overlay(&short).expect("initrd");
        assert_ne!(first.path(), second.path());
        let bytes = fs::read(first.path()).expect("read");
        assert_eq!(bytes.len() as u64, first.len());
        assert!(names(&bytes).contains(&"bin/tool".to_owned()));
        assert!(names(&bytes).contains(&"ktstr/test".to_owned()));
        assert!(names(&fs::read(second.path()).expect("read")).contains(&"ktstr/other".to_owned()));

        // Released slots are reused, and a shorter overlay leaves no tail.
        let path = first.path().to_owned();
        drop(first);
        let third = base.with_overlay(&short).expect("initrd");
        assert_eq!(third.path(), path);
        let bytes = fs::read(third.path()).expect("read");
        assert_eq!(bytes.len() as u64, base.len() + short.len() as u64);
        assert!(!names(&bytes).contains(&"ktstr/test".to_owned()));
    }

    #[cfg(feature = "lz4")]
    #[test]
    fn lz4_base_and_overlay_decode_as_one_stream() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cache = Cache::open(tmp.path().join("cache")).expect("open");
        let spec = BaseSpec {
            compression: Compression::Lz4,
            ..spec_with(tmp.path(), b"bin")
        };
        let base = cache.base(&spec).expect("build");
        let initrd = base.with_overlay(&overlay("/t", b"1")).expect("initrd");
        let plain = crate::compress::tests::unlz4(&fs::read(initrd.path()).expect("read"));
        let names = names(&plain);
        assert!(names.contains(&"bin/tool".to_owned()) && names.contains(&"t".to_owned()));
        drop(initrd);
        // A touched file cannot be compared with a compressed copy: rebuilt.
        let bin = tmp.path().join("tool");
        fs::remove_file(&bin).expect("rm");
        fs::write(&bin, b"bin").expect("write");
        assert!(!cache.base(&spec).expect("rebuild").reused());
        assert!(cache.base(&spec).expect("lookup").reused());
    }

    #[test]
    fn private_copy_is_removed_on_drop() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let cache = Cache::open(tmp.path().join("cache")).expect("open");
        let base = cache.base(&spec_with(tmp.path(), b"bin")).expect("build");
        let initrd = base
            .copy_with_overlay(&overlay("/t", b"1"), tmp.path())
            .expect("initrd");
        assert!(names(&fs::read(initrd.path()).expect("read")).contains(&"t".to_owned()));
        let path = initrd.path().to_owned();
        drop(initrd);
        assert!(!path.exists());
    }

    #[test]
    fn concurrent_builders_agree() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("cache");
        let spec = spec_with(tmp.path(), b"shared");
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let (dir, spec) = (dir.clone(), spec.clone());
                std::thread::spawn(move || {
                    let base = Cache::open(&dir).expect("open").base(&spec).expect("base");
                    fs::read(base.path()).expect("read")
                })
            })
            .collect();
        let results: Vec<_> = handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect();
        assert!(results.windows(2).all(|w| w[0] == w[1]));
        let leftovers = fs::read_dir(&dir)
            .expect("ls")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp-"))
            .count();
        assert_eq!(leftovers, 0);
    }
}
