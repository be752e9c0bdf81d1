//! The guest root builder: a deterministic cpio `newc` writer, the ELF
//! shared-library closure of the binaries it packs, and a cache that builds the
//! large, unchanging part of a test's initramfs once.
//!
//! Where it sits: the facade's runner asks for a [`Base`] (test binary,
//! libraries, schedulers) from the [`Cache`] once per test binary, builds a
//! small per-test [`Archive`] (test name, arguments, staged files), and hands
//! both to the VM backend: QEMU gets one file from [`Base::with_overlay`],
//! the own VMM can copy the two parts into guest memory back to back. The
//! kernel unpacks concatenated archives in order.
//!
//! ```
//! use ktstr_initramfs::{Archive, parse};
//! let mut per_test = Archive::new();
//! per_test.add_bytes("/ktstr/test", 0o644, b"my_test".to_vec())?;
//! per_test.add_symlink("/ktstr/sh", "/bin/busybox")?;
//! let bytes = per_test.to_vec()?;
//! let names: Vec<_> = parse(&bytes)?.into_iter().map(|e| e.name).collect();
//! assert_eq!(names, [&b"ktstr"[..], b"ktstr/sh", b"ktstr/test"]);
//! # Ok::<(), ktstr_initramfs::InitramfsError>(())
//! ```

mod cache;
mod closure;
#[cfg(feature = "lz4")]
mod compress;
mod cpio;
mod elf;
mod error;
mod evict;
mod ldcache;
mod pack;

pub use cache::{Base, BaseSpec, Cache, Compression, InitrdFile};
pub use closure::{Closure, ClosureFile, Found, LoaderConfig, closure, merge};
pub use cpio::{Archive, Contents, Entry, EntryKind, parse};
pub use error::{ElfError, InitramfsError, Result};
pub use evict::DEFAULT_CAP_BYTES;
/// Not API: the ld.so.cache parser, for the fuzz target and its corpus replay.
#[doc(hidden)]
pub use ldcache::exercise as exercise_ld_cache;
pub use pack::{PackReport, pack_binaries};
