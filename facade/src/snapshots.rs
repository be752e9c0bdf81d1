//! The snapshot cache: machines booted to the restore agent and saved, one
//! per key (`<cache root>/snapshots/<key>/`), restored by every test whose
//! guest would boot the same (docs/src/boot-once-restore-many.md).
//!
//! An entry is a directory holding `image` (the backend's saved machine, a
//! sparse file), `manifest.json` (the key's parts, to read what a snapshot
//! is of) and `used` (its modification time is the last restore, for
//! eviction). Beside it, `<key>.lock`: creation takes it
//! exclusively (nextest runs each test in its own process; the first makes
//! the snapshot, the others wait and restore it), a restore shares it, and
//! eviction only removes an entry whose lock it can take at once.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

/// Left-overs of a creation that crashed are removed after this long.
const STALE: Duration = Duration::from_secs(3600);

/// What a snapshot is of: everything that changes the guest booted to the
/// agent. Its SHA-256 names the entry.
#[derive(Debug, Clone)]
pub(crate) struct Key {
    /// The parts, as `manifest.json` records them.
    pub(crate) parts: serde_json::Value,
    /// The hex SHA-256 of the parts.
    pub(crate) hex: String,
}

impl Key {
    /// The key over `parts` (a JSON object; its serialization is the hash's input).
    pub(crate) fn of(parts: serde_json::Value) -> Self {
        let bytes = serde_json::to_vec(&parts).expect("JSON serializes");
        let hex = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Key { parts, hex }
    }
}

/// A complete entry, locked shared while this value lives.
#[derive(Debug)]
pub(crate) struct Entry {
    dir: PathBuf,
    _lock: File,
}

impl Entry {
    /// The saved machine.
    pub(crate) fn image(&self) -> PathBuf {
        self.dir.join("image")
    }
}

/// The cache at `dir`, holding at most `cap` bytes on disk.
#[derive(Debug, Clone)]
pub(crate) struct Cache {
    dir: PathBuf,
    cap: u64,
}

/// `flock` on `file`, shared or exclusive; waits when `wait`, else answers
/// false when another process holds it.
fn lock(file: &File, exclusive: bool, wait: bool) -> std::io::Result<bool> {
    use std::fs::TryLockError;
    if wait {
        loop {
            match if exclusive {
                file.lock()
            } else {
                file.lock_shared()
            } {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => return r.map(|()| true),
            }
        }
    }
    let tried = if exclusive {
        file.try_lock()
    } else {
        file.try_lock_shared()
    };
    match tried {
        Ok(()) => Ok(true),
        Err(TryLockError::WouldBlock) => Ok(false),
        Err(TryLockError::Error(e)) => Err(e),
    }
}

/// Bytes `path` takes on disk (a directory: its files').
fn disk_bytes(path: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(path) else {
        return 0;
    };
    rd.flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.blocks() * 512)
        .sum()
}

impl Cache {
    /// The cache in `dir` (created on first use), capped at `cap_mib` MiB.
    pub(crate) fn new(dir: PathBuf, cap_mib: u64) -> Self {
        Cache {
            dir,
            cap: cap_mib.saturating_mul(1 << 20),
        }
    }

    fn entry_dir(&self, key: &Key) -> PathBuf {
        self.dir.join(&key.hex)
    }

    fn open_lock(&self, key: &Key) -> Result<File, String> {
        std::fs::create_dir_all(&self.dir)
            .map_err(|e| format!("creating {}: {e}", self.dir.display()))?;
        let path = self.dir.join(format!("{}.lock", key.hex));
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| format!("opening {}: {e}", path.display()))
    }

    fn complete(&self, key: &Key) -> bool {
        let d = self.entry_dir(key);
        d.join("manifest.json").is_file() && d.join("image").is_file()
    }

    /// The entry of `key`, made by `create` when there is none: `create`
    /// gets an empty directory to write `image` in (other files it leaves
    /// there stay) and answers why it could not. True with the entry when this call made it.
    pub(crate) fn get_or_create(
        &self,
        key: &Key,
        create: impl FnOnce(&Path) -> Result<(), String>,
    ) -> Result<(Entry, bool), String> {
        let file = self.open_lock(key)?;
        let locking = |e: std::io::Error| format!("locking snapshot {}: {e}", key.hex);
        lock(&file, false, true).map_err(locking)?;
        if self.complete(key) {
            return Ok((self.entry(key, file), false));
        }
        // Converting the shared lock to an exclusive one waits for whoever
        // is making the snapshot.
        lock(&file, true, true).map_err(locking)?;
        if self.complete(key) {
            lock(&file, false, true).map_err(locking)?;
            return Ok((self.entry(key, file), false));
        }
        let tmp = self
            .dir
            .join(format!("{}.tmp-{}", key.hex, std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(|e| format!("creating {}: {e}", tmp.display()))?;
        let made = create(&tmp).and_then(|()| {
            let manifest = serde_json::to_vec_pretty(&key.parts).expect("JSON serializes");
            std::fs::write(tmp.join("manifest.json"), manifest)
                .map_err(|e| format!("writing the manifest: {e}"))?;
            let final_dir = self.entry_dir(key);
            let _ = std::fs::remove_dir_all(&final_dir);
            std::fs::rename(&tmp, &final_dir)
                .map_err(|e| format!("renaming {} into place: {e}", tmp.display()))
        });
        if let Err(e) = made {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(e);
        }
        lock(&file, false, true).map_err(locking)?;
        let entry = self.entry(key, file);
        self.evict(key);
        Ok((entry, true))
    }

    fn entry(&self, key: &Key, lock: File) -> Entry {
        let dir = self.entry_dir(key);
        // The last use, for eviction.
        if let Ok(f) = File::create(dir.join("used")) {
            let _ = f.set_modified(SystemTime::now());
        }
        Entry { dir, _lock: lock }
    }

    /// Removes the entry of `key` (an image that failed to restore). Other
    /// processes restoring it hold the files open, or fail and boot cold.
    pub(crate) fn remove(&self, key: &Key) {
        let dir = self.entry_dir(key);
        let gone = self
            .dir
            .join(format!("{}.gone-{}", key.hex, std::process::id()));
        if std::fs::rename(&dir, &gone).is_ok() {
            let _ = std::fs::remove_dir_all(&gone);
        }
    }

    /// Removes the least recently used entries (never `keep`, never one in
    /// use) until the cache fits its cap, and left-overs of crashed creations.
    fn evict(&self, keep: &Key) {
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut entries = Vec::new();
        let mut total = 0u64;
        for e in rd.flatten() {
            let path = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if !path.is_dir() {
                continue;
            }
            if name.contains(".tmp-") || name.contains(".gone-") {
                let old = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > STALE);
                if old {
                    let _ = std::fs::remove_dir_all(&path);
                }
                continue;
            }
            let bytes = disk_bytes(&path);
            total += bytes;
            if name == keep.hex {
                continue;
            }
            let used = std::fs::metadata(path.join("used"))
                .or_else(|_| e.metadata())
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            entries.push((used, name, bytes));
        }
        entries.sort();
        for (_, name, bytes) in entries {
            if total <= self.cap {
                break;
            }
            let lock_path = self.dir.join(format!("{name}.lock"));
            let Ok(file) = File::open(&lock_path) else {
                continue;
            };
            if lock(&file, true, false).unwrap_or(false) {
                let key = Key {
                    parts: serde_json::Value::Null,
                    hex: name,
                };
                // The lock file stays: a process may be waiting on it.
                self.remove(&key);
                total = total.saturating_sub(bytes);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u32) -> Key {
        Key::of(serde_json::json!({ "n": n }))
    }

    fn fill(dir: &Path, bytes: usize) -> Result<(), String> {
        std::fs::write(dir.join("image"), vec![1u8; bytes]).map_err(|e| e.to_string())
    }

    #[test]
    fn keys_name_their_parts() {
        assert_eq!(key(1).hex, key(1).hex);
        assert_ne!(key(1).hex, key(2).hex);
        assert_eq!(key(1).hex.len(), 64);
    }

    #[test]
    fn an_entry_is_made_once_then_found() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = Cache::new(dir.path().join("snapshots"), 64);
        let (e, made) = cache
            .get_or_create(&key(1), |d| fill(d, 4096))
            .expect("create");
        assert!(made);
        assert!(e.image().is_file());
        drop(e);
        let (e, made) = cache
            .get_or_create(&key(1), |_| panic!("must not make it twice"))
            .expect("found");
        assert!(!made);
        let manifest =
            std::fs::read_to_string(e.image().with_file_name("manifest.json")).expect("manifest");
        assert!(manifest.contains("\"n\": 1"), "{manifest}");
        drop(e);
        // A failed creation leaves nothing and says why.
        let err = cache
            .get_or_create(&key(2), |_| Err("the agent never answered".into()))
            .expect_err("fails");
        assert!(err.contains("never answered"));
        assert!(!cache.complete(&key(2)));
        // A removed entry is made again.
        cache.remove(&key(1));
        assert!(!cache.complete(&key(1)));
    }

    #[test]
    fn the_least_recently_used_entries_go_past_the_cap() {
        let dir = tempfile::tempdir().expect("tempdir");
        // 1 MiB cap, entries of 600 KiB: only the newest fits.
        let cache = Cache::new(dir.path().join("snapshots"), 1);
        for n in 0..3 {
            let (e, _) = cache
                .get_or_create(&key(n), |d| fill(d, 600 << 10))
                .expect("create");
            drop(e);
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!cache.complete(&key(0)));
        assert!(!cache.complete(&key(1)));
        assert!(cache.complete(&key(2)));
        // An entry in use is never evicted.
        let (held, _) = cache
            .get_or_create(&key(2), |_| unreachable!())
            .expect("found");
        let (e, _) = cache
            .get_or_create(&key(3), |d| fill(d, 600 << 10))
            .expect("create");
        drop(e);
        assert!(cache.complete(&key(2)) && cache.complete(&key(3)));
        drop(held);
    }
}
