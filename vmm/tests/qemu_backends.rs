//! Backends take their configuration as values: two QEMU backends with
//! different binaries live in one process and each runs its own binary.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use ktstr_topology::Topology;
use ktstr_vmm::{Backend, QemuBackend, VmSpec};

/// A stand-in `qemu-system-x86_64`: answers `--version` like QEMU 10 and
/// otherwise records that it ran, then exits.
fn fake_qemu(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let bin = dir.join(name);
    let ran = dir.join(format!("{name}.ran"));
    let script = format!(
        "#!/bin/sh\nif [ \"$1\" = --version ]; then echo 'QEMU emulator version 10.0.2'; exit 0; fi\n\
         echo \"$0\" > {}\nexit 1\n",
        ran.display()
    );
    std::fs::write(&bin, script).expect("write the fake QEMU");
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    (bin, ran)
}

#[test]
fn two_qemu_backends_with_different_binaries_in_one_process() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a_bin, a_ran) = fake_qemu(dir.path(), "qemu-a");
    let (b_bin, b_ran) = fake_qemu(dir.path(), "qemu-b");
    let a = QemuBackend::new(&a_bin).expect("backend a");
    let b = QemuBackend::new(&b_bin).expect("backend b");
    assert_eq!(a.binary(), a_bin);
    assert_eq!(b.binary(), b_bin);
    // A kernel file must exist for the spec check; the fake never reads it.
    let kernel = dir.path().join("vmlinux");
    std::fs::write(&kernel, b"not booted").expect("kernel file");
    let topology: Topology = "1n1l1c1t".parse().expect("topology");
    for (backend, ran, bin) in [(&a, &a_ran, &a_bin), (&b, &b_ran, &b_bin)] {
        // The fake exits at once, so booting fails; what matters is which ran.
        let _ = backend.boot(&VmSpec::new(&kernel, topology));
        let said = std::fs::read_to_string(ran).expect("the backend ran its own binary");
        assert_eq!(said.trim(), bin.to_string_lossy());
    }
}

#[test]
fn a_binary_that_is_not_qemu_is_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = QemuBackend::new(dir.path().join("missing")).expect_err("missing binary");
    let text = err.to_string();
    assert!(
        text.contains("missing") && text.contains("KTSTR_QEMU"),
        "{text}"
    );
}
