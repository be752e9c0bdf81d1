//! What the monitor needs of a kernel image, loaded once per image and
//! process: its symbols (decoded from its kallsyms tables and cached beside
//! it, or under the cache root when that directory is read-only) and its BTF.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ktstr_guest_mem::KernelSymbols;

use super::MonitorError;

/// The symbols and BTF of one kernel image.
#[derive(Debug)]
pub(crate) struct KernelFiles {
    pub(crate) syms: KernelSymbols,
    pub(crate) btf: Vec<u8>,
}

impl KernelFiles {
    /// The image's BTF, parsed, and its banner's signature (what recognizes
    /// the booted kernel in guest memory).
    pub(crate) fn parts(
        &self,
        vmlinux: &Path,
    ) -> Result<(ktstr_btf::Btf<'_>, ktstr_guest_mem::kaslr::Signature), MonitorError> {
        let btf = ktstr_btf::Btf::parse(&self.btf)
            .map_err(|e| MonitorError::Unavailable(format!("the kernel's BTF: {e}")))?;
        let sig =
            ktstr_guest_mem::kaslr::Signature::from_image(vmlinux, &self.syms).map_err(|e| {
                MonitorError::Unavailable(format!(
                    "the banner of {} (to recognize the booted kernel): {e}",
                    vmlinux.display()
                ))
            })?;
        Ok((btf, sig))
    }
}

/// Name of the symbol cache beside a `vmlinux`.
const CACHE_NAME: &str = "kallsyms.ktstr";

/// The files of `vmlinux`, loaded on first use in this process.
pub(crate) fn load(vmlinux: &Path, cache_root: &Path) -> Result<Arc<KernelFiles>, MonitorError> {
    static LOADED: Mutex<Vec<(PathBuf, Arc<KernelFiles>)>> = Mutex::new(Vec::new());
    let mut loaded = LOADED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, f)) = loaded.iter().find(|(p, _)| p == vmlinux) {
        return Ok(f.clone());
    }
    let unavailable = |what: &str, e: ktstr_guest_mem::Error| {
        MonitorError::Unavailable(format!("{what} of {}: {e}", vmlinux.display()))
    };
    let btf = ktstr_guest_mem::image::read_btf(vmlinux).map_err(|e| unavailable("the BTF", e))?;
    let beside = vmlinux.with_file_name(CACHE_NAME);
    let syms = match load_or_build(vmlinux, &beside) {
        Err(ktstr_guest_mem::Error::Io { .. }) => {
            let dir = cache_root.join("kallsyms");
            let _ = std::fs::create_dir_all(&dir);
            load_or_build(vmlinux, &dir.join(fallback_name(vmlinux)))
        }
        other => other,
    }
    .map_err(|e| unavailable("the symbols", e))?;
    let files = Arc::new(KernelFiles { syms, btf });
    loaded.push((vmlinux.to_path_buf(), files.clone()));
    Ok(files)
}

/// The symbols of `vmlinux` cached at `cache`, decoded under the entry's lock
/// (`<cache>.lock`, the cache mechanism's): the test processes nextest starts
/// at once decode an image once and the others wait, then read the file. A
/// directory where no lock file can be made is tried without one.
fn load_or_build(vmlinux: &Path, cache: &Path) -> ktstr_guest_mem::Result<KernelSymbols> {
    let lock = ktstr_cache::Lock::open(&cache.with_extension("ktstr.lock")).ok();
    if let Some(lock) = &lock {
        // Best effort: unlocked, two processes may decode the same image.
        let _ = lock.exclusive();
    }
    KernelSymbols::load_or_build(vmlinux, cache)
}

/// A cache file name unique to the image's path.
fn fallback_name(vmlinux: &Path) -> String {
    let s: String = vmlinux
        .to_string_lossy()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    format!("{}.ktstr", s.trim_start_matches('_'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_is_not_a_kernel_is_a_clear_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("vmlinux");
        std::fs::write(&f, b"not an ELF").expect("write");
        let e = load(&f, dir.path()).expect_err("not a kernel");
        assert!(matches!(e, MonitorError::Unavailable(_)), "{e}");
        assert!(e.to_string().contains("BTF"), "{e}");
        assert_eq!(
            fallback_name(Path::new("/a b/vmlinux")),
            "a_b_vmlinux.ktstr"
        );
    }
}
