//! Publishing entries whole: write under a temporary name in the cache's own
//! directory (so the rename stays on one file system), then rename into
//! place. Readers see the old entry, the new one or none, never half of one;
//! two processes publishing the same key both succeed and one copy stays.
//! Removal is the reverse: rename aside, then delete.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::{Result, io};

/// Prefix of what is being made ([`Staging`]).
pub(crate) const TMP: &str = ".tmp-";
/// Prefix of what is being removed ([`remove_entry`]).
pub(crate) const GONE: &str = ".gone-";

/// A name unique to this call: `<prefix><pid>-<counter>-<nanos>`. The pid
/// lets [`clean_stale`](crate::clean_stale) tell a dead process's left-overs.
pub fn temp_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{prefix}{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A file or directory being made under a temporary name; removed when
/// dropped unless published.
#[derive(Debug)]
pub struct Staging {
    path: PathBuf,
    published: bool,
}

impl Staging {
    /// A temporary file name in `dir` (created if missing); the caller
    /// creates the file at [`Staging::path`].
    pub fn file(dir: &Path) -> Result<Staging> {
        std::fs::create_dir_all(dir).map_err(io(dir, "create directory"))?;
        Ok(Staging {
            path: dir.join(temp_name(TMP)),
            published: false,
        })
    }

    /// A fresh empty temporary directory in `dir` (created if missing).
    pub fn dir(dir: &Path) -> Result<Staging> {
        let s = Staging::file(dir)?;
        std::fs::create_dir(&s.path).map_err(io(&s.path, "create directory"))?;
        Ok(s)
    }

    /// Where to write.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Renames what was made to `dest` (in the same directory), replacing
    /// what is there: a file atomically, a directory by removing the old one
    /// first ([`remove_entry`]).
    pub fn publish(mut self, dest: &Path) -> Result<()> {
        // A few tries: another process may publish the same key between our
        // removal of its directory and our rename.
        for _ in 0..16 {
            match std::fs::rename(&self.path, dest) {
                Ok(()) => {
                    self.published = true;
                    return Ok(());
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::DirectoryNotEmpty | std::io::ErrorKind::AlreadyExists
                    ) =>
                {
                    remove_entry(dest)?;
                }
                Err(e) => return Err(io(dest, "rename into place")(e)),
            }
        }
        std::fs::rename(&self.path, dest).map_err(io(dest, "rename into place"))?;
        self.published = true;
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.published {
            let _ = remove_path(&self.path);
        }
    }
}

/// Writes `bytes` to `dest` through a temporary file beside it and a rename.
pub fn publish_bytes(dest: &Path, bytes: &[u8]) -> Result<()> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    let s = Staging::file(dir)?;
    std::fs::write(&s.path, bytes).map_err(io(&s.path, "write"))?;
    s.publish(dest)
}

/// Removes the entry at `path` (a file or a directory): renamed aside first,
/// so no reader ever finds half an entry under its name. Already gone is fine.
pub fn remove_entry(path: &Path) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let aside = dir.join(temp_name(GONE));
    match std::fs::rename(path, &aside) {
        Ok(()) => remove_path(&aside).map_err(io(&aside, "remove")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(path, "rename aside")(e)),
    }
}

/// Removes a file or a directory tree; already gone is fine.
pub(crate) fn remove_path(path: &Path) -> std::io::Result<()> {
    let r = match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) => Err(e),
    };
    match r {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .expect("ls")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn an_unpublished_staging_leaves_nothing() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let s = Staging::dir(tmp.path()).expect("staging");
        std::fs::write(s.path().join("x"), b"1").expect("write");
        drop(s);
        let s = Staging::file(tmp.path()).expect("staging");
        std::fs::write(s.path(), b"1").expect("write");
        drop(s);
        assert!(names(tmp.path()).is_empty());
    }

    #[test]
    fn publishing_replaces_files_and_directories_whole() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let f = tmp.path().join("f");
        publish_bytes(&f, b"one").expect("publish");
        publish_bytes(&f, b"two").expect("publish");
        assert_eq!(std::fs::read(&f).expect("read"), b"two");
        let d = tmp.path().join("d");
        for body in [&b"one"[..], b"two"] {
            let s = Staging::dir(tmp.path()).expect("staging");
            std::fs::write(s.path().join("x"), body).expect("write");
            s.publish(&d).expect("publish");
        }
        assert_eq!(std::fs::read(d.join("x")).expect("read"), b"two");
        assert_eq!(names(tmp.path()), ["d", "f"]);
        remove_entry(&d).expect("remove");
        remove_entry(&d).expect("gone is fine");
        assert_eq!(names(tmp.path()), ["f"]);
    }

    #[test]
    fn threads_publishing_the_same_key_agree() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dest = tmp.path().join("entry");
        let body = vec![7u8; 1 << 20];
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let (dir, dest, body) = (tmp.path().to_owned(), dest.clone(), body.clone());
                std::thread::spawn(move || {
                    for _ in 0..10 {
                        let s = Staging::dir(&dir).expect("staging");
                        std::fs::write(s.path().join("data"), &body).expect("write");
                        s.publish(&dest).expect("publish");
                        // Whatever is there is whole.
                        if let Ok(b) = std::fs::read(dest.join("data")) {
                            assert_eq!(b.len(), body.len());
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("thread");
        }
        assert_eq!(std::fs::read(dest.join("data")).expect("read"), body);
        assert_eq!(names(tmp.path()), ["entry"]);
    }

    /// The same as processes: this test binary, run again as two children
    /// that publish the same key into one directory.
    #[test]
    fn processes_publishing_the_same_key_agree() {
        const CHILD: &str = "KTSTR_CACHE_TEST_PUBLISH_DIR";
        let body = vec![9u8; 1 << 20];
        if let Some(dir) = std::env::var_os(CHILD) {
            let dir = std::path::PathBuf::from(dir);
            for _ in 0..20 {
                let s = Staging::dir(&dir).expect("staging");
                std::fs::write(s.path().join("data"), &body).expect("write");
                s.publish(&dir.join("entry")).expect("publish");
            }
            return;
        }
        let tmp = tempfile::tempdir().expect("tempdir");
        let exe = std::env::current_exe().expect("test binary");
        let name = "publish::tests::processes_publishing_the_same_key_agree";
        let children: Vec<_> = (0..2)
            .map(|_| {
                std::process::Command::new(&exe)
                    .args(["--exact", name, "--test-threads=1"])
                    .env(CHILD, tmp.path())
                    .stdout(std::process::Stdio::null())
                    .spawn()
                    .expect("spawn")
            })
            .collect();
        for mut c in children {
            assert!(c.wait().expect("wait").success(), "a child failed");
        }
        let data = std::fs::read(tmp.path().join("entry/data")).expect("read");
        assert_eq!(data, body);
        assert_eq!(names(tmp.path()), ["entry"]);
    }
}
