//! Entry locks: std's `File::lock` (`flock` on Linux) on a lock file. Shared
//! while an entry is read, exclusive while it is made or removed; `try_*`
//! answers at once. Locks belong to the open file, so two `Lock`s of one path
//! in one process exclude each other like two processes do, and the kernel
//! releases a dead process's locks.

use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};

use crate::error::{Result, io};

/// An open lock file.
#[derive(Debug)]
pub struct Lock {
    file: File,
    path: PathBuf,
}

impl Lock {
    /// Opens the lock file `path`, creating it (and its directory) when missing.
    pub fn open(path: &Path) -> Result<Lock> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io(dir, "create directory"))?;
        }
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io(path, "open"))?;
        Ok(Lock::from_file(file, path))
    }

    /// Opens the lock file `path` if it exists.
    pub fn open_existing(path: &Path) -> Result<Option<Lock>> {
        match File::open(path) {
            Ok(file) => Ok(Some(Lock::from_file(file, path))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(path, "open")(e)),
        }
    }

    /// A lock on a file the caller opened its own way (a file that is also
    /// the entry, say).
    pub fn from_file(file: File, path: &Path) -> Lock {
        Lock {
            file,
            path: path.to_path_buf(),
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// Waits for and takes the lock shared (converting an exclusive one).
    pub fn shared(&self) -> Result<()> {
        again_on_eintr(|| self.file.lock_shared()).map_err(io(&self.path, "lock shared"))
    }

    /// Waits for and takes the lock exclusively (converting a shared one).
    pub fn exclusive(&self) -> Result<()> {
        again_on_eintr(|| self.file.lock()).map_err(io(&self.path, "lock"))
    }

    /// Takes the lock shared if no one holds it exclusively; false otherwise.
    pub fn try_shared(&self) -> Result<bool> {
        answer(self.file.try_lock_shared()).map_err(io(&self.path, "lock shared"))
    }

    /// Takes the lock exclusively if no one holds it; false otherwise.
    pub fn try_exclusive(&self) -> Result<bool> {
        answer(self.file.try_lock()).map_err(io(&self.path, "lock"))
    }

    /// Releases the lock (closing the file does too).
    pub fn unlock(&self) -> Result<()> {
        self.file.unlock().map_err(io(&self.path, "unlock"))
    }

    /// Whether someone holds the lock file `path` now (false when it does not
    /// exist). Takes and releases it when free.
    pub fn is_held(path: &Path) -> bool {
        match Lock::open_existing(path) {
            Ok(Some(l)) => !l.try_exclusive().unwrap_or(false),
            _ => false,
        }
    }
}

/// A waiting lock call, made again when a signal interrupts it (EINTR is
/// the call's own protocol, not a failure).
fn again_on_eintr(mut f: impl FnMut() -> std::io::Result<()>) -> std::io::Result<()> {
    loop {
        match f() {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

fn answer(r: std::result::Result<(), TryLockError>) -> std::io::Result<bool> {
    match r {
        Ok(()) => Ok(true),
        Err(TryLockError::WouldBlock) => Ok(false),
        Err(TryLockError::Error(e)) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusive_excludes_and_shared_shares() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("sub/e.lock");
        assert!(!Lock::is_held(&p), "missing is not held");
        let a = Lock::open(&p).expect("open");
        let b = Lock::open(&p).expect("open");
        a.shared().expect("shared");
        assert!(b.try_shared().expect("try"));
        assert!(!b.try_exclusive().expect("try"), "a shares it");
        assert!(Lock::is_held(&p));
        a.unlock().expect("unlock");
        b.unlock().expect("unlock");
        assert!(!Lock::is_held(&p));
        a.exclusive().expect("exclusive");
        assert!(!b.try_shared().expect("try"));
        drop(a);
        assert!(b.try_exclusive().expect("try"), "closing released it");
    }

    #[test]
    fn a_waiter_gets_the_lock_when_it_is_released() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("e.lock");
        let held = Lock::open(&p).expect("open");
        held.exclusive().expect("lock");
        let p2 = p.clone();
        let waiter = std::thread::spawn(move || {
            let l = Lock::open(&p2).expect("open");
            let t = std::time::Instant::now();
            l.exclusive().expect("lock");
            t.elapsed()
        });
        std::thread::sleep(std::time::Duration::from_millis(200));
        drop(held);
        let waited = waiter.join().expect("thread");
        assert!(
            waited >= std::time::Duration::from_millis(150),
            "{waited:?}"
        );
    }
}
