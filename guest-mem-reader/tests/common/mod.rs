//! Shared by the integration tests: which real kernel image to test against.
#![allow(dead_code)]

use std::path::PathBuf;

/// The vmlinux ELF to test against: `$KTSTR_KERNEL` (a path, or a version of a cached
/// kernel), else the newest cached release under the cache root (as for a run).
/// Panics — the test fails, it never skips — with the command that fetches one.
pub fn kernel_vmlinux() -> PathBuf {
    let var = |k: &str| std::env::var_os(k).map(PathBuf::from);
    let spec = std::env::var("KTSTR_KERNEL").ok();
    ktstr_kernel::vmlinux_for_tests(
        spec.as_deref(),
        var("KTSTR_CACHE_DIR").as_deref(),
        var("XDG_CACHE_HOME").as_deref(),
        var("HOME").as_deref(),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}
