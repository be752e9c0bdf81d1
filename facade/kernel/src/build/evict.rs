//! Keeping kernel source trees and build directories under a cap: the cache's own trees
//! (`kernel-src/<name>/`: an unpacked package or a git clone, with its kept `build/`) and the
//! build directories of users' trees (`kernel-build/<hash>/`) are gigabytes each. After a
//! build, the least recently used go until the rest fit, never one used in the last ten
//! minutes (a build may be about to reuse it) nor one whose build lock is held.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use ktstr_cache::{Candidate, Lock, Policy};

use crate::KernelCache;

/// The file whose mtime says when an entry was last built from.
pub(crate) const LAST_USED: &str = ".last-used";
/// Entries used this recently are never removed.
const RECENT: Duration = Duration::from_secs(600);

/// One source tree or build directory of the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceEntry {
    /// `kernel-src/<name>` or `kernel-build/<hash>`.
    pub dir: PathBuf,
    /// Disk it takes (allocated blocks).
    pub bytes: u64,
    /// When a build last used it (its `.last-used`, else the directory's mtime).
    pub last_used: SystemTime,
}

/// The directory whose `.last-used` a build of `out` (its build directory) touches: the
/// cache's own tree (`kernel-src/<name>`, holding `src/` and `build/`) or the build
/// directory itself.
pub(crate) fn entry_of(root: &Path, out: &Path) -> PathBuf {
    match out.parent() {
        Some(p) if p.parent() == Some(root.join("kernel-src").as_path()) => p.to_path_buf(),
        _ => out.to_path_buf(),
    }
}

/// Marks `entry` used now.
pub(crate) fn touch(entry: &Path) {
    ktstr_cache::touch(&entry.join(LAST_USED));
}

/// The source trees and build directories under the cache root of `kernels`.
pub fn source_entries(kernels: &KernelCache) -> Vec<SourceEntry> {
    let root = super::cache_root(kernels);
    let mut out = Vec::new();
    for sub in ["kernel-src", "kernel-build"] {
        let Ok(rd) = std::fs::read_dir(root.join(sub)) else {
            continue;
        };
        for e in rd.flatten() {
            let dir = e.path();
            if !dir.is_dir() || e.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            out.push(SourceEntry {
                bytes: ktstr_cache::disk_bytes(&dir),
                last_used: ktstr_cache::last_used(&[&dir.join(LAST_USED), &dir]),
                dir,
            });
        }
    }
    out
}

/// Whether a build holds `entry`'s lock now (a tree's `build*/.ktstr-lock`, one per base
/// config, or the build directory's own).
fn locked(entry: &Path) -> bool {
    let mut locks = vec![entry.join(".ktstr-lock")];
    if let Ok(rd) = std::fs::read_dir(entry) {
        locks.extend(
            rd.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("build"))
                .map(|e| e.path().join(".ktstr-lock")),
        );
    }
    locks.iter().any(|p| Lock::is_held(p))
}

/// Removes the least recently used entries until the rest take at most `cap` bytes;
/// returns the removed ones. An entry is renamed aside first, so an interrupted removal
/// never leaves a half tree under its name.
pub fn evict_sources(kernels: &KernelCache, cap: u64) -> std::io::Result<Vec<SourceEntry>> {
    let entries = source_entries(kernels)
        .into_iter()
        .map(|e| Candidate::new(e.clone(), e.bytes, e.last_used))
        .collect();
    let policy = Policy::new(cap).with_grace(RECENT);
    let gone = ktstr_cache::evict(&policy, entries, |e: &SourceEntry| {
        if locked(&e.dir) {
            return Ok(false);
        }
        ktstr_cache::remove_entry(&e.dir)
            .map(|()| true)
            .map_err(ktstr_cache::CacheError::into_io)
    })?;
    Ok(gone.into_iter().map(|c| c.item).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(root: &Path, sub: &str, name: &str, kib: usize, age_s: u64) -> PathBuf {
        let dir = root.join(sub).join(name);
        std::fs::create_dir_all(dir.join("src")).expect("mkdir");
        std::fs::write(dir.join("src/blob"), vec![7u8; kib << 10]).expect("write");
        touch(&dir);
        let t = SystemTime::now() - Duration::from_secs(age_s);
        std::fs::File::options()
            .write(true)
            .open(dir.join(LAST_USED))
            .and_then(|f| f.set_modified(t))
            .expect("set mtime");
        dir
    }

    #[test]
    fn the_least_recently_used_trees_go_first_and_recent_or_locked_ones_stay() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        let kernels = KernelCache::new(root.join("kernels"));
        let oldest = entry(root, "kernel-src", "linux-source-6.12_a", 512, 7200);
        let locked_one = entry(root, "kernel-build", "0123456789abcdef", 512, 5000);
        let older = entry(root, "kernel-src", "git-00112233", 512, 3600);
        let recent = entry(root, "kernel-src", "linux-source-7.3_b", 512, 60);
        std::fs::write(locked_one.join(".ktstr-lock"), b"").expect("lock file");
        let held = std::fs::File::open(locked_one.join(".ktstr-lock")).expect("open");
        held.lock().expect("lock");

        let all = source_entries(&kernels);
        assert_eq!(all.len(), 4);
        let each = all.iter().map(|e| e.bytes).max().expect("entries");
        assert!(each >= 512 << 10, "{all:?}");
        // Room for two: the oldest goes, the locked one is skipped, the next oldest goes.
        let gone = evict_sources(&kernels, 2 * each).expect("evict");
        let names: Vec<&Path> = gone.iter().map(|e| e.dir.as_path()).collect();
        assert_eq!(names, [oldest.as_path(), older.as_path()]);
        assert!(!oldest.exists() && !older.exists());
        assert!(locked_one.exists() && recent.exists());
        // Nothing more can go: one is locked, the other recent.
        assert!(evict_sources(&kernels, 0).expect("evict").is_empty());
        drop(held);
        assert_eq!(evict_sources(&kernels, 0).expect("evict").len(), 1);
        assert!(!locked_one.exists() && recent.exists());
        // Nothing lies around aside.
        let left: Vec<_> = std::fs::read_dir(root.join("kernel-src"))
            .expect("read")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left, [recent.file_name().expect("name").to_os_string()]);
    }

    #[test]
    fn a_build_marks_its_tree_or_its_build_directory() {
        let root = Path::new("/c");
        assert_eq!(
            entry_of(root, Path::new("/c/kernel-src/linux-source-7.3_x/build")),
            Path::new("/c/kernel-src/linux-source-7.3_x")
        );
        assert_eq!(
            entry_of(root, Path::new("/c/kernel-build/0123")),
            Path::new("/c/kernel-build/0123")
        );
        // A tree configured in place builds in the user's own directory.
        assert_eq!(
            entry_of(root, Path::new("/home/me/linux")),
            Path::new("/home/me/linux")
        );
    }
}
