//! Keeping the base archive cache under a size cap.
//!
//! Every test binary of every checkout has its own base archive (~50 MB for a
//! debug test binary and its libraries), plus one run slot per concurrent
//! test. Nothing else ever removes the archive of a checkout that is gone, so
//! without a cap the cache grows with every clone and branch: a development
//! machine of this project held 570 archives and 48 GB of slots.
//!
//! An archive's modification time is its last use: a lookup that reuses it
//! touches it. After each build the least recently used archives go, with their
//! slots and manifests, until the cache fits. An archive used within
//! [`IN_USE`] is never removed (a concurrent test process may be about to copy
//! it into a slot), so the cap can be exceeded by what is in use right now.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use ktstr_cache::{Candidate, Policy};

/// Default cap on the cache's disk use: room for the bases of a few
/// workspaces' test binaries and their slots.
pub const DEFAULT_CAP_BYTES: u64 = 4 << 30;

/// Archives used this recently are kept whatever the cap says.
pub(crate) const IN_USE: Duration = Duration::from_secs(600);

/// Remove least recently used archives in `dir` (and their slots in `run` and
/// their manifests) until the cache takes at most `cap` bytes, never `keep`
/// nor an archive used within [`IN_USE`] of `now`. Returns what went.
pub(crate) fn evict(
    dir: &Path,
    run: &Path,
    cap: u64,
    keep: &Path,
    now: SystemTime,
) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut bases: Vec<Candidate<String>> = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !(name.starts_with("base-") && name.ends_with(".cpio")) {
            continue;
        }
        let path = e.path();
        let used = ktstr_cache::last_used(&[&path]);
        bases.push(Candidate::new(name, ktstr_cache::disk_bytes(&path), used));
    }
    if let Ok(slots) = fs::read_dir(run) {
        for s in slots.flatten() {
            let name = s.file_name().to_string_lossy().into_owned();
            let Some((archive, _)) = name.rsplit_once(".slot") else {
                continue;
            };
            if let Some(b) = bases.iter_mut().find(|b| b.item == archive) {
                b.bytes += ktstr_cache::disk_bytes(&s.path());
            }
        }
    }
    let keep = keep.file_name().map(|n| n.to_string_lossy().into_owned());
    let policy = Policy::new(cap).with_grace(IN_USE).at(now);
    let Ok(gone) = ktstr_cache::evict(&policy, bases, |name| {
        if keep.as_deref() == Some(name.as_str()) || fs::remove_file(dir.join(name)).is_err() {
            return Ok::<_, std::convert::Infallible>(false);
        }
        crate::cache::remove_slots(run, name);
        Ok(true)
    });
    let gone: Vec<PathBuf> = gone.into_iter().map(|c| dir.join(c.item)).collect();
    if !gone.is_empty() {
        remove_orphan_manifests(dir);
    }
    gone
}

/// Remove manifests whose archive is gone: their next lookup would rebuild
/// anyway, and a checkout that is gone leaves them forever.
fn remove_orphan_manifests(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().is_none_or(|x| x != "manifest") {
            continue;
        }
        let Ok(text) = fs::read_to_string(&path) else {
            continue;
        };
        if crate::cache::manifest_archive(&text).is_some_and(|a| !dir.join(a).exists()) {
            let _ = fs::remove_file(&path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &Path, bytes: usize, age: Duration, now: SystemTime) {
        fs::write(path, vec![1u8; bytes]).expect("write");
        let f = fs::OpenOptions::new().write(true).open(path).expect("open");
        f.set_modified(now - age).expect("set mtime");
    }

    #[test]
    fn least_recently_used_go_first_and_recent_ones_stay() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (d, run) = (dir.path(), dir.path().join("run"));
        fs::create_dir_all(&run).expect("mkdir");
        let now = SystemTime::now();
        let hour = Duration::from_secs(3600);
        file(&d.join("base-old.cpio"), 1 << 20, 3 * hour, now);
        file(&run.join("base-old.cpio.slot0"), 1 << 20, 3 * hour, now);
        file(&d.join("base-mid.cpio"), 1 << 20, 2 * hour, now);
        file(
            &d.join("base-new.cpio"),
            1 << 20,
            Duration::from_secs(5),
            now,
        );
        file(&d.join("base-kept.cpio"), 1 << 20, 5 * hour, now);
        fs::write(
            d.join("a.manifest"),
            format!("{}\narchive base-old.cpio\n", crate::cache::FORMAT),
        )
        .expect("write");
        fs::write(
            d.join("b.manifest"),
            format!("{}\narchive base-new.cpio\n", crate::cache::FORMAT),
        )
        .expect("write");
        // 5 MiB in all; a 3.5 MiB cap takes the oldest that may go: not
        // `kept` (the one just built, and the oldest), but `old` with its
        // slot (2 MiB), and that is enough.
        let gone = evict(d, &run, 7 << 19, &d.join("base-kept.cpio"), now);
        assert_eq!(gone, vec![d.join("base-old.cpio")]);
        assert!(!run.join("base-old.cpio.slot0").exists());
        assert!(!d.join("a.manifest").exists() && d.join("b.manifest").exists());
        assert!(d.join("base-mid.cpio").exists() && d.join("base-kept.cpio").exists());
        // A cap nothing fits: everything old enough goes, the recent one stays.
        let gone = evict(d, &run, 0, &d.join("base-kept.cpio"), now);
        assert_eq!(gone, vec![d.join("base-mid.cpio")]);
        assert!(d.join("base-new.cpio").exists());
    }

    #[test]
    fn under_the_cap_nothing_goes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let now = SystemTime::now();
        file(
            &dir.path().join("base-a.cpio"),
            4096,
            Duration::from_secs(86400),
            now,
        );
        let gone = evict(
            dir.path(),
            &dir.path().join("run"),
            1 << 20,
            Path::new(""),
            now,
        );
        assert!(gone.is_empty());
    }
}
