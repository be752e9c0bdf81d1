//! The one on-disk cache mechanism of ktstr. Every cache of the project (the
//! initramfs base archives, the snapshot images, the kernels and kernel source
//! trees, the monitor's symbol tables) keeps its own layout on top of the same
//! few rules, written here once:
//!
//! - **Keys** are SHA-256 digests in hex of canonical bytes ([`Key`]): the
//!   same input names the same entry on every host and toolchain.
//! - **Publish** by writing under a temporary name in the cache directory and
//!   renaming into place ([`Staging`], [`publish_bytes`]): readers see a whole
//!   entry or none, and two processes making the same key both succeed.
//! - **Locks** are std's `File::lock` (`flock` on Linux) on a lock file
//!   ([`Lock`]): shared while an entry is used, exclusive while it is made or
//!   removed. The kernel drops a dead process's locks.
//! - **Last use** is the modification time of a stamp file ([`touch`]).
//! - **Eviction** ([`evict`]) removes the least recently used entries until the
//!   cache fits its cap, skipping any the cache says are in use (locked, or
//!   used within a grace period); **clean-up** ([`clean_stale`]) removes what
//!   crashed processes left under temporary names.
//! - **One root** ([`root_from`]): the order `KTSTR_CACHE_DIR`,
//!   `$XDG_CACHE_HOME/ktstr`, `$HOME/.cache/ktstr`. This crate reads no
//!   environment: the caller passes the values.
//!
//! ```
//! use std::time::SystemTime;
//! use ktstr_cache::{Candidate, Key, Lock, Policy, Staging, disk_bytes, evict, touch};
//! # fn main() -> Result<(), ktstr_cache::CacheError> {
//! # let tmp = tempfile::tempdir().expect("tempdir");
//! let dir = tmp.path().join("things");
//! let key = Key::of(b"what the entry is made from");
//! let lock_of = |name: &str| dir.join(format!("{name}.lock"));
//!
//! // Make the entry under its lock and publish it whole.
//! let lock = Lock::open(&lock_of(&key.hex()))?;
//! lock.exclusive()?;
//! let staging = Staging::dir(&dir)?;
//! std::fs::write(staging.path().join("data"), b"bytes").expect("write");
//! let entry = dir.join(key.hex());
//! staging.publish(&entry)?;
//! touch(&entry.join("used"));
//! lock.shared()?; // in use from now on
//!
//! // Trim the cache to nothing: an entry whose lock is held stays.
//! let all = vec![Candidate::new(key.hex(), disk_bytes(&entry), SystemTime::UNIX_EPOCH)];
//! let gone = evict(&Policy::new(0), all, |name: &String| {
//!     let other = Lock::open(&lock_of(name))?;
//!     Ok::<_, ktstr_cache::CacheError>(other.try_exclusive()? && {
//!         ktstr_cache::remove_entry(&dir.join(name))?;
//!         true
//!     })
//! })?;
//! assert!(gone.is_empty() && entry.join("data").is_file());
//! # Ok(())
//! # }
//! ```

mod error;
mod evict;
mod key;
mod lock;
mod publish;
mod root;

pub use error::{CacheError, Result};
pub use evict::{Candidate, Policy, clean_stale, disk_bytes, evict, last_used, touch};
pub use key::{Key, KeyHasher};
pub use lock::Lock;
pub use publish::{Staging, publish_bytes, remove_entry, temp_name};
pub use root::root_from;
