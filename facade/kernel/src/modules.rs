//! The KVM modules of a cached kernel, kept beside it in `modules/`.
//!
//! The own KVM VMM's Linux tests run, on hosts without vmx/svm, inside an L1
//! guest that boots the cached kernel on QEMU with an emulated SVM and loads
//! that same kernel's `kvm.ko` and `kvm-amd.ko` (`ktstr-vmm`'s
//! `tests/kvm_linux.rs`). Debian ships them in `linux-modules-<release>`, of
//! the same version as the image; the fetch downloads that package once,
//! decompresses the few modules (`.ko.xz` in Debian, `.ko.zst` or plain
//! elsewhere) and keeps them as plain `.ko` files that busybox `insmod` loads.

use std::path::{Path, PathBuf};

use super::KernelError;
use super::debian::PrivateApt;

/// The modules kept, by name, with their path under `lib/modules/<release>/`
/// (without the compression suffix), in load order.
pub const KVM_MODULES: [(&str, &str); 4] = [
    ("irqbypass", "kernel/virt/lib/irqbypass.ko"),
    ("kvm", "kernel/arch/x86/kvm/kvm.ko"),
    ("kvm-amd", "kernel/arch/x86/kvm/kvm-amd.ko"),
    ("kvm-intel", "kernel/arch/x86/kvm/kvm-intel.ko"),
];

/// Where a cached kernel keeps its modules.
pub fn modules_dir(kernel_dir: &Path) -> PathBuf {
    kernel_dir.join("modules")
}

/// Whether every module of [`KVM_MODULES`] is beside the kernel in `kernel_dir`.
pub fn has_kvm_modules(kernel_dir: &Path) -> bool {
    let dir = modules_dir(kernel_dir);
    KVM_MODULES
        .iter()
        .all(|(name, _)| dir.join(format!("{name}.ko")).is_file())
}

/// The Debian package holding the modules of `release`.
pub fn package_name(release: &str) -> String {
    format!("linux-modules-{release}")
}

/// A module's bytes, decompressed by the suffix of `path`.
fn decompress(path: &Path) -> Result<Vec<u8>, KernelError> {
    let raw = std::fs::read(path).map_err(|e| KernelError::io(path, e))?;
    let name = path.to_string_lossy();
    let corrupt = |why: String| KernelError::Corrupt {
        what: format!("{name}: {why}"),
    };
    if name.ends_with(".xz") {
        let mut out = Vec::new();
        lzma_rs::xz_decompress(&mut raw.as_slice(), &mut out)
            .map_err(|e| corrupt(e.to_string()))?;
        Ok(out)
    } else if name.ends_with(".zst") {
        let mut out = Vec::new();
        let mut dec = ruzstd::decoding::StreamingDecoder::new(raw.as_slice())
            .map_err(|e| corrupt(e.to_string()))?;
        std::io::Read::read_to_end(&mut dec, &mut out).map_err(|e| corrupt(e.to_string()))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Copies [`KVM_MODULES`] of `release` from an unpacked package tree at `root`
/// into `dest`, decompressed. Fails naming the first module that is missing.
pub fn extract_kvm_modules(root: &Path, release: &str, dest: &Path) -> Result<(), KernelError> {
    let base = ["usr/lib/modules", "lib/modules"]
        .iter()
        .map(|d| root.join(d).join(release))
        .find(|d| d.is_dir())
        .ok_or_else(|| KernelError::Corrupt {
            what: format!("no lib/modules/{release} in {}", package_name(release)),
        })?;
    std::fs::create_dir_all(dest).map_err(|e| KernelError::io(dest, e))?;
    for (name, rel) in KVM_MODULES {
        let found = ["", ".xz", ".zst"]
            .iter()
            .map(|ext| base.join(format!("{rel}{ext}")))
            .find(|p| p.is_file())
            .ok_or_else(|| KernelError::Corrupt {
                what: format!("{} has no {rel}", package_name(release)),
            })?;
        let out = dest.join(format!("{name}.ko"));
        std::fs::write(&out, decompress(&found)?).map_err(|e| KernelError::io(&out, e))?;
    }
    Ok(())
}

/// Keeps the KVM modules of the kernel cached in `kernel_dir` (release
/// `release`) beside it, downloading `linux-modules-<release>` into `scratch`
/// unless they are there already. Returns whether they are there afterwards:
/// `false` when the package lists have no such package.
pub(crate) fn keep_kvm_modules(
    apt: &PrivateApt,
    release: &str,
    kernel_dir: &Path,
    scratch: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<bool, KernelError> {
    if has_kvm_modules(kernel_dir) {
        return Ok(true);
    }
    let package = package_name(release);
    if !apt.has_package(&package) {
        progress(&format!(
            "{package} is not in the package lists: the KVM backend's Linux tests \
             cannot run nested on this host"
        ));
        return Ok(false);
    }
    progress(&format!("downloading {package} for the KVM modules"));
    apt.download_and_unpack(&package, scratch)?;
    // Written beside the kernel under a temporary name, then renamed: a
    // half-written directory is never taken for a complete one.
    let tmp = kernel_dir.join(".modules.tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    extract_kvm_modules(&scratch.join("root"), release, &tmp)?;
    let dest = modules_dir(kernel_dir);
    let _ = std::fs::remove_dir_all(&dest);
    std::fs::rename(&tmp, &dest).map_err(|e| KernelError::io(&dest, e))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_come_out_decompressed_from_either_layout() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rel = "7.3.4+deb13-cloud-amd64";
        let base = dir.path().join("root/usr/lib/modules").join(rel);
        for (name, path) in KVM_MODULES {
            let p = base.join(path);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            let body = format!("\x7fELF module {name}");
            if name == "kvm" {
                // Plain, as a kernel built without module compression has it.
                std::fs::write(&p, &body).expect("write");
            } else {
                let mut xz = Vec::new();
                lzma_rs::xz_compress(&mut body.as_bytes(), &mut xz).expect("xz");
                std::fs::write(p.with_extension("ko.xz"), xz).expect("write");
            }
        }
        let kernel_dir = dir.path().join("kernel");
        extract_kvm_modules(&dir.path().join("root"), rel, &modules_dir(&kernel_dir))
            .expect("extract");
        assert!(has_kvm_modules(&kernel_dir));
        for (name, _) in KVM_MODULES {
            let got =
                std::fs::read(modules_dir(&kernel_dir).join(format!("{name}.ko"))).expect("module");
            assert_eq!(got, format!("\x7fELF module {name}").as_bytes());
        }
    }

    #[test]
    fn a_missing_module_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let rel = "7.3.4+deb13-cloud-amd64";
        std::fs::create_dir_all(dir.path().join("root/usr/lib/modules").join(rel)).expect("mkdir");
        let err = extract_kvm_modules(&dir.path().join("root"), rel, &dir.path().join("m"))
            .expect_err("no modules");
        assert!(err.to_string().contains("irqbypass.ko"), "{err}");
        assert!(!has_kvm_modules(dir.path()));
    }
}
