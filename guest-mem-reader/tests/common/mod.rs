//! Shared by the integration tests: which real kernel image to test against.
#![allow(dead_code)]

use std::path::PathBuf;

/// The vmlinux ELF to test against: `$KTSTR_KERNEL` (a path, or a version of a cached
/// kernel), else the newest cached release under `${KTSTR_CACHE_DIR:-$HOME/.cache/ktstr}`.
/// Panics — the test fails, it never skips — with the command that fetches one.
pub fn kernel_vmlinux() -> PathBuf {
    let spec = match std::env::var("KTSTR_KERNEL") {
        Ok(v) if !v.is_empty() => Some(
            v.parse::<ktstr_kernel::KernelSpec>()
                .unwrap_or_else(|e| panic!("KTSTR_KERNEL: {e}")),
        ),
        _ => None,
    };
    let cache = std::env::var_os("KTSTR_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/ktstr")))
        .expect("neither KTSTR_CACHE_DIR nor HOME is set");
    let kernels = ktstr_kernel::KernelCache::new(cache.join("kernels"));
    match ktstr_kernel::resolve(spec.as_ref(), &kernels) {
        Ok(k) => k.vmlinux,
        Err(e) => panic!(
            "no kernel image to test against ({e}): run `cargo xtask kernel fetch` or set \
             KTSTR_KERNEL to a vmlinux ELF"
        ),
    }
}

