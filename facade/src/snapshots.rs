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

use std::path::{Path, PathBuf};
use std::time::Duration;

use ktstr_cache::{CacheError, Candidate, Lock, Policy, Staging};

/// Left-overs of a creation that crashed are removed after this long.
const STALE: Duration = Duration::from_secs(3600);

/// What went wrong storing or finding a snapshot.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SnapshotError {
    /// The entry's lock or directory could not be used.
    #[error("snapshot {key} could not be stored in the cache")]
    Store {
        /// The entry's key (hex).
        key: String,
        /// What the cache could not do.
        #[source]
        source: CacheError,
    },
    /// The entry's `manifest.json` could not be written.
    #[error("writing the manifest of snapshot {key} failed")]
    Manifest {
        /// The entry's key (hex).
        key: String,
        /// The operating system's answer.
        #[source]
        source: std::io::Error,
    },
}

/// For callers that still report errors as text: the message and its causes.
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
        let hex = ktstr_cache::Key::of(&bytes).hex();
        Key { parts, hex }
    }
}

/// A complete entry, locked shared while this value lives.
#[derive(Debug)]
pub(crate) struct Entry {
    dir: PathBuf,
    _lock: Lock,
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

    fn lock_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.lock"))
    }

    fn complete(&self, key: &Key) -> bool {
        let d = self.entry_dir(key);
        d.join("manifest.json").is_file() && d.join("image").is_file()
    }

    /// The entry of `key`, made by `create` when there is none: `create`
    /// gets an empty directory to write `image` in (other files it leaves
    /// there stay) and answers why it could not, in the caller's own error
    /// type. True with the entry when this call made it.
    pub(crate) fn get_or_create<E: From<SnapshotError>>(
        &self,
        key: &Key,
        create: impl FnOnce(&Path) -> Result<(), E>,
    ) -> Result<(Entry, bool), E> {
        let store = |source| SnapshotError::Store {
            key: key.hex.clone(),
            source,
        };
        let lock = Lock::open(&self.lock_path(&key.hex)).map_err(store)?;
        lock.shared().map_err(store)?;
        if self.complete(key) {
            return Ok((self.entry(key, lock), false));
        }
        // Converting the shared lock to an exclusive one waits for whoever
        // is making the snapshot.
        lock.exclusive().map_err(store)?;
        if self.complete(key) {
            lock.shared().map_err(store)?;
            return Ok((self.entry(key, lock), false));
        }
        // Dropped on an early return, the staging directory goes with what
        // `create` wrote.
        let staging = Staging::dir(&self.dir).map_err(store)?;
        create(staging.path())?;
        let manifest = serde_json::to_vec_pretty(&key.parts).expect("JSON serializes");
        std::fs::write(staging.path().join("manifest.json"), manifest).map_err(|source| {
            SnapshotError::Manifest {
                key: key.hex.clone(),
                source,
            }
        })?;
        staging.publish(&self.entry_dir(key)).map_err(store)?;
        lock.shared().map_err(store)?;
        let entry = self.entry(key, lock);
        self.evict(key);
        Ok((entry, true))
    }

    fn entry(&self, key: &Key, lock: Lock) -> Entry {
        let dir = self.entry_dir(key);
        // The last use, for eviction.
        ktstr_cache::touch(&dir.join("used"));
        Entry { dir, _lock: lock }
    }

    /// Removes the entry of `key` (an image that failed to restore). Other
    /// processes restoring it hold the files open, or fail and boot cold.
    pub(crate) fn remove(&self, key: &Key) {
        let _ = ktstr_cache::remove_entry(&self.entry_dir(key));
    }

    /// Removes the least recently used entries (never `keep`, never one in
    /// use) until the cache fits its cap, and left-overs of crashed creations.
    fn evict(&self, keep: &Key) {
        ktstr_cache::clean_stale(&self.dir, STALE);
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut entries = Vec::new();
        for e in rd.flatten() {
            let path = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            // Being made or removed (named so by this or an older version).
            if !path.is_dir() || name.starts_with('.') || name.contains(".tmp-") {
                continue;
            }
            let used = ktstr_cache::last_used(&[&path.join("used"), &path]);
            entries.push(Candidate::new(name, ktstr_cache::disk_bytes(&path), used));
        }
        // Best effort: a cache over its cap still works.
        let _ = ktstr_cache::evict(&Policy::new(self.cap), entries, |name| {
            if *name == keep.hex {
                return Ok(false);
            }
            // The lock file stays: a process may be waiting on it.
            let Some(lock) = Lock::open_existing(&self.lock_path(name))? else {
                return Ok(false);
            };
            if !lock.try_exclusive()? {
                return Ok(false);
            }
            Ok::<_, CacheError>(ktstr_cache::remove_entry(&self.dir.join(name)).is_ok())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u32) -> Key {
        Key::of(serde_json::json!({ "n": n }))
    }

    /// A creator's error in these tests: its own, or the cache's.
    #[derive(Debug, thiserror::Error)]
    enum MadeError {
        #[error("writing the image: {0}")]
        Io(#[from] std::io::Error),
        #[error("{0}")]
        Said(&'static str),
        #[error(transparent)]
        Cache(#[from] SnapshotError),
    }

    fn fill(dir: &Path, bytes: usize) -> Result<(), MadeError> {
        Ok(std::fs::write(dir.join("image"), vec![1u8; bytes])?)
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
            .get_or_create(&key(1), |_| -> Result<(), MadeError> {
                panic!("must not make it twice")
            })
            .expect("found");
        assert!(!made);
        let manifest =
            std::fs::read_to_string(e.image().with_file_name("manifest.json")).expect("manifest");
        assert!(manifest.contains("\"n\": 1"), "{manifest}");
        drop(e);
        // A failed creation leaves nothing and says why.
        let err = cache
            .get_or_create(&key(2), |_| {
                Err::<(), MadeError>(MadeError::Said("the agent never answered"))
            })
            .expect_err("fails");
        assert!(err.to_string().contains("never answered"));
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
            .get_or_create(&key(2), |_| -> Result<(), MadeError> { unreachable!() })
            .expect("found");
        let (e, _) = cache
            .get_or_create(&key(3), |d| fill(d, 600 << 10))
            .expect("create");
        drop(e);
        assert!(cache.complete(&key(2)) && cache.complete(&key(3)));
        drop(held);
    }
}
