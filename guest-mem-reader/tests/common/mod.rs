//! Shared by the integration tests: which real kernel image to test against.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// The vmlinux ELF to test against: `$KTSTR_KERNEL` (a vmlinux, or a directory holding one),
/// else the newest `kernels/*/vmlinux` under `${KTSTR_CACHE_DIR:-$HOME/.cache/ktstr}`. Panics
/// — the test fails, it never skips — with the command that fetches one.
pub fn kernel_vmlinux() -> PathBuf {
    if let Some(p) = std::env::var_os("KTSTR_KERNEL").map(PathBuf::from) {
        let p = if p.is_dir() { p.join("vmlinux") } else { p };
        if is_elf(&p) {
            return p;
        }
    }
    let cache = std::env::var_os("KTSTR_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/ktstr")))
        .expect("neither KTSTR_CACHE_DIR nor HOME is set");
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(cache.join("kernels"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("vmlinux"))
        .filter(|p| is_elf(p))
        .filter_map(|p| Some((p.metadata().ok()?.modified().ok()?, p)))
        .collect();
    found.sort();
    match found.pop() {
        Some((_, p)) => p,
        None => panic!(
            "no kernel image to test against: run `cargo xtask kernel fetch` (it puts one in \
             {}/kernels/<release>/vmlinux) or set KTSTR_KERNEL to a vmlinux ELF",
            cache.display()
        ),
    }
}

fn is_elf(p: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(p)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && &magic == b"\x7fELF"
}
