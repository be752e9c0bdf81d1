//! Last use, size on disk, least-recently-used eviction under a cap, and the
//! clean-up of what crashed processes left behind.

use std::path::Path;
use std::time::{Duration, SystemTime};

use crate::publish::{GONE, TMP, remove_path};

/// Marks `stamp` (a file; created if missing) as used now. Best effort: a
/// read-only cache still works, it is just trimmed in another order.
pub fn touch(stamp: &Path) {
    let _ = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(stamp)
        .and_then(|f| f.set_modified(SystemTime::now()));
}

/// The last use recorded by the first of `stamps` that exists (its
/// modification time); the epoch when none does.
pub fn last_used(stamps: &[&Path]) -> SystemTime {
    stamps
        .iter()
        .find_map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// Disk taken by `path` (allocated blocks, not apparent lengths: an image
/// may be sparse): a file's own, or everything under a directory, not
/// following symlinks.
pub fn disk_bytes(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(m) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if !m.is_dir() {
        return m.blocks() * 512;
    }
    let mut total = 0;
    let mut stack = vec![path.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(m) = e.path().symlink_metadata() else {
                continue;
            };
            total += m.blocks() * 512;
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    total
}

/// One entry a cache could remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate<T> {
    /// The cache's handle on it (a name, a path, a listed entry).
    pub item: T,
    /// Disk it takes.
    pub bytes: u64,
    /// When it was last used.
    pub last_used: SystemTime,
}

impl<T> Candidate<T> {
    /// An entry of `bytes` last used at `last_used`.
    pub fn new(item: T, bytes: u64, last_used: SystemTime) -> Self {
        Candidate {
            item,
            bytes,
            last_used,
        }
    }
}

/// How much a cache may hold, and what counts as in use by its age.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// The cap on the entries' total disk use.
    pub cap_bytes: u64,
    /// Entries used more recently than this are kept whatever the cap says
    /// (another process may be about to use one it has just looked up).
    pub grace: Duration,
    /// The time ages are measured from.
    pub now: SystemTime,
}

impl Policy {
    /// A cap of `cap_bytes`, no grace period, measured from now.
    pub fn new(cap_bytes: u64) -> Self {
        Policy {
            cap_bytes,
            grace: Duration::ZERO,
            now: SystemTime::now(),
        }
    }

    /// Keeps entries used within `grace`.
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Measures ages from `now`.
    pub fn at(mut self, now: SystemTime) -> Self {
        self.now = now;
        self
    }

    /// Whether an entry last used at `t` is within the grace period (a time
    /// in the future counts as now).
    fn recent(&self, t: SystemTime) -> bool {
        self.now
            .duration_since(t)
            .map_or(true, |age| age < self.grace)
    }
}

/// Removes the least recently used of `entries` until their total fits
/// `policy`'s cap, never one within its grace period. `remove` removes one
/// and answers whether it did: false for an entry in use (its lock could not
/// be taken at once, or the cache keeps it), which stays. Returns the removed
/// entries, oldest first. Under the cap, nothing is asked.
pub fn evict<T, E>(
    policy: &Policy,
    mut entries: Vec<Candidate<T>>,
    mut remove: impl FnMut(&T) -> Result<bool, E>,
) -> Result<Vec<Candidate<T>>, E> {
    let mut total: u64 = entries.iter().map(|e| e.bytes).sum();
    if total <= policy.cap_bytes {
        return Ok(Vec::new());
    }
    entries.sort_by_key(|e| e.last_used);
    let mut gone = Vec::new();
    for e in entries {
        if total <= policy.cap_bytes {
            break;
        }
        if policy.recent(e.last_used) || !remove(&e.item)? {
            continue;
        }
        total = total.saturating_sub(e.bytes);
        gone.push(e);
    }
    Ok(gone)
}

/// Removes from `dir` what processes left while making or removing an entry
/// (names with `.tmp-` or `.gone-`, and the older `.removed-`): those of a
/// process that no longer runs at once, the others once older than `age`.
/// Returns how many went.
pub fn clean_stale(dir: &Path, age: Duration) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    let now = SystemTime::now();
    let mut removed = 0;
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(after) = [TMP, GONE, ".removed-"]
            .iter()
            .find_map(|m| name.find(m).map(|i| &name[i + m.len()..]))
        else {
            continue;
        };
        let pid = after.split('-').next().and_then(|p| p.parse::<u32>().ok());
        let dead = pid.is_some_and(|p| !Path::new(&format!("/proc/{p}")).exists());
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| now.duration_since(t).is_ok_and(|a| a > age));
        if (dead || old) && remove_path(&e.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Lock;
    use std::path::PathBuf;

    const HOUR: Duration = Duration::from_secs(3600);

    fn entry(dir: &Path, name: &str, kib: usize, age: Duration, now: SystemTime) -> PathBuf {
        let d = dir.join(name);
        std::fs::create_dir_all(&d).expect("mkdir");
        std::fs::write(d.join("data"), vec![1u8; kib << 10]).expect("write");
        touch(&d.join("used"));
        let f = std::fs::File::options()
            .write(true)
            .open(d.join("used"))
            .expect("open");
        f.set_modified(now - age).expect("set mtime");
        d
    }

    fn candidates(dir: &Path) -> Vec<Candidate<String>> {
        std::fs::read_dir(dir)
            .expect("ls")
            .flatten()
            .filter(|e| e.path().is_dir())
            .map(|e| {
                let p = e.path();
                Candidate::new(
                    e.file_name().to_string_lossy().into_owned(),
                    disk_bytes(&p),
                    last_used(&[&p.join("used")]),
                )
            })
            .collect()
    }

    /// Removes an entry if its lock can be taken at once.
    fn remove_unlocked(dir: &Path, name: &str) -> crate::Result<bool> {
        let lock = Lock::open(&dir.join(format!("{name}.lock")))?;
        if !lock.try_exclusive()? {
            return Ok(false);
        }
        crate::remove_entry(&dir.join(name))?;
        Ok(true)
    }

    #[test]
    fn least_recently_used_go_first_until_the_cap_fits() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        let now = SystemTime::now();
        for (name, hours) in [("a", 3), ("b", 1), ("c", 2), ("d", 4)] {
            entry(dir, name, 64, hours * HOUR, now);
        }
        let each = disk_bytes(&dir.join("a"));
        assert!(each >= 64 << 10);
        let policy = Policy::new(2 * each).at(now);
        let gone = evict(&policy, candidates(dir), |n| remove_unlocked(dir, n)).expect("evict");
        let gone: Vec<&str> = gone.iter().map(|c| c.item.as_str()).collect();
        assert_eq!(gone, ["d", "a"]);
        assert!(dir.join("b").exists() && dir.join("c").exists());
        // Under the cap, nothing is even asked.
        let asked = evict(&policy, candidates(dir), |_| -> crate::Result<bool> {
            panic!("asked under the cap")
        })
        .expect("evict");
        assert!(asked.is_empty());
    }

    #[test]
    fn a_locked_or_recent_entry_is_never_removed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        let now = SystemTime::now();
        entry(dir, "old", 64, 5 * HOUR, now);
        entry(dir, "held", 64, 9 * HOUR, now);
        entry(dir, "fresh", 64, Duration::from_secs(5), now);
        let held = Lock::open(&dir.join("held.lock")).expect("open");
        held.shared().expect("lock");
        let policy = Policy::new(0).with_grace(Duration::from_secs(600)).at(now);
        let gone = evict(&policy, candidates(dir), |n| remove_unlocked(dir, n)).expect("evict");
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].item, "old");
        assert!(dir.join("held/data").is_file() && dir.join("fresh/data").is_file());
        // Released, it goes.
        drop(held);
        let gone = evict(&policy, candidates(dir), |n| remove_unlocked(dir, n)).expect("evict");
        assert_eq!(gone.len(), 1);
        assert!(!dir.join("held").exists() && dir.join("fresh").exists());
    }

    #[test]
    fn stale_temporaries_go_and_live_ones_stay() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path();
        // A dead process's scratch directory and file, whatever their age.
        std::fs::create_dir_all(dir.join(".tmp-999999999-1/x")).expect("mkdir");
        std::fs::write(dir.join(".gone-999999999-2"), b"").expect("write");
        std::fs::create_dir_all(dir.join(".removed-999999999-7.3")).expect("mkdir");
        // The older snapshot naming, `<key>.tmp-<pid>`.
        std::fs::create_dir_all(dir.join("ab12.tmp-999999999")).expect("mkdir");
        // This process's: kept until old.
        let mine = dir.join(crate::temp_name(".tmp-"));
        std::fs::write(&mine, b"").expect("write");
        std::fs::create_dir_all(dir.join("entry")).expect("mkdir");
        assert_eq!(clean_stale(dir, HOUR), 4);
        assert!(mine.exists() && dir.join("entry").exists());
        let f = std::fs::File::options()
            .write(true)
            .open(&mine)
            .expect("open");
        f.set_modified(SystemTime::now() - 2 * HOUR).expect("mtime");
        assert_eq!(clean_stale(dir, HOUR), 1);
        assert!(!mine.exists() && dir.join("entry").exists());
    }
}
