//! Host-wide VM slots: never more vCPUs running than the host has cores,
//! across threads of one `cargo test` process and across nextest's processes.
//!
//! One lock file per host core under `<cache root>/slots/`; a VM takes
//! `min(vcpus, cores)` of them with blocking `flock`, always in ascending
//! order so two VMs can never deadlock. The kernel drops a dead process's locks.

use std::fs::File;
use std::os::fd::AsRawFd;

/// Slots held by one VM; released on drop.
#[derive(Debug)]
pub struct Slots {
    /// Kept only for their locks, which closing releases.
    _held: Vec<File>,
}

/// Blocks until `vcpus` (capped at `cores`) slots in `dir` are free, then takes them.
pub fn acquire(dir: &std::path::Path, vcpus: usize, cores: usize) -> std::io::Result<Slots> {
    acquire_in(dir, vcpus, cores)
}

fn acquire_in(dir: &std::path::Path, vcpus: usize, cores: usize) -> std::io::Result<Slots> {
    let want = vcpus.clamp(1, cores);
    std::fs::create_dir_all(dir)?;
    let mut held = Vec::with_capacity(want);
    // Ascending order: whoever holds slot k waits only for slots above k.
    for i in 0..want {
        let f = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(format!("slot-{i}.lock")))?;
        // SAFETY: flock on a descriptor we own; blocking is intended.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        held.push(f);
    }
    Ok(Slots { _held: held })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_exclusive_and_released_on_drop() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(
            acquire_in(dir.path(), 64, 2).expect("capped")._held.len(),
            2
        );
        let a = acquire_in(dir.path(), 1, 2).expect("first");
        assert_eq!(a._held.len(), 1);
        let f = File::options()
            .write(true)
            .open(dir.path().join("slot-0.lock"))
            .expect("open");
        // SAFETY: flock on a descriptor we own.
        let busy = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        assert_ne!(busy, 0, "slot 0 is held");
        drop(a);
        // SAFETY: as above.
        let free = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        assert_eq!(free, 0, "slot 0 was released");
    }
}
