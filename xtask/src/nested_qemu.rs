//! QEMU 11.1 from trixie-backports, in a private trixie root under the cache
//! (`cargo xtask setup --nested-qemu`): a candidate L1 hypervisor for the
//! nested own-VMM tests, whose emulation of AMD SVM on this host's QEMU 10
//! loses an L2's memory view about once in 44 small boots (vmm/README.md).
//! It is built for trixie, so it runs from its own root (its dynamic loader,
//! libraries, modules and firmware), never installed on the host.
//!
//! The root is made by debootstrap from the mirror the host's apt sources
//! already use, then `apt-get install -t trixie-backports qemu-system-x86`
//! inside it; `qemu-root/trixie-qemu-system-x86_64` is a wrapper that runs it
//! through the root's loader. The nested tests take it with `KTSTR_L1_QEMU=<wrapper>`.

use std::path::{Path, PathBuf};
use std::process::Command;

use ktstr_kernel::debian;

use crate::error::{CommandError, FileError, status};

/// What making the nested-test QEMU root failed with.
#[derive(Debug, thiserror::Error)]
pub enum NestedQemuError {
    #[error(transparent)]
    Config(#[from] ktstr::config::ConfigError),
    /// The host's release or its Debian mirror is unknown.
    #[error(transparent)]
    Kernel(#[from] ktstr_kernel::KernelError),
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error(transparent)]
    File(#[from] FileError),
    /// The root's path has no parent to build it beside.
    #[error("{} has no parent", root.display())]
    NoParent {
        /// The root's path.
        root: PathBuf,
    },
    /// The wrapper was written and does not run QEMU.
    #[error("{} does not run", wrapper.display())]
    DoesNotRun {
        /// The wrapper script.
        wrapper: PathBuf,
    },
}

/// The suite the root is made of.
const SUITE: &str = "trixie";

/// The wrapper script of the root at `root`: beside it, not in it (a
/// merged-/usr root's `bin` is its `usr/bin`, where QEMU itself is).
fn wrapper(root: &Path) -> PathBuf {
    root.with_file_name(format!("{SUITE}-qemu-system-x86_64"))
}

/// The text of the wrapper: QEMU through the root's own loader and
/// libraries, with its modules and firmware.
fn wrapper_text(root: &Path) -> String {
    let r = root.display();
    format!(
        "#!/bin/sh\n# Written by `cargo xtask setup --nested-qemu` (ktstr): QEMU from the private \
         {SUITE} root\n# {r}, run through that root's loader; nothing of it is installed on the \
         host.\nexport QEMU_MODULE_DIR='{r}/usr/lib/x86_64-linux-gnu/qemu'\nexec '{r}/lib64/ld-linux-x86-64.so.2' \
         --library-path '{r}/usr/lib/x86_64-linux-gnu:{r}/lib/x86_64-linux-gnu' \
         '{r}/usr/bin/qemu-system-x86_64' -L '{r}/usr/share/qemu' -L '{r}/usr/share/seabios' \"$@\"\n"
    )
}

/// The version line the wrapper prints, if it runs.
fn version(wrapper: &Path) -> Option<String> {
    let out = Command::new(wrapper).arg("--version").output().ok()?;
    out.status.success().then(|| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .to_string()
    })
}

/// Makes the root unless a working one is there; the wrapper's path.
pub fn ensure() -> Result<PathBuf, NestedQemuError> {
    let root = crate::host()?.cache_root.join("qemu-root").join(SUITE);
    let w = wrapper(&root);
    if let Some(v) = version(&w) {
        println!("setup: nested-test QEMU ({v}, private {SUITE} root): already present");
        return Ok(w);
    }
    if !Path::new("/usr/sbin/debootstrap").exists() {
        let mut apt = Command::new("apt-get");
        apt.env("DEBIAN_FRONTEND", "noninteractive").args([
            "-qq",
            "-y",
            "--no-install-recommends",
            "install",
            "debootstrap",
        ]);
        status(&mut apt)?;
    }
    let codename = debian::os_codename()?;
    let mirror = debian::debian_mirror(&debian::system_sources(), &codename)?;
    let parent = root
        .parent()
        .ok_or_else(|| NestedQemuError::NoParent { root: root.clone() })?;
    std::fs::create_dir_all(parent).map_err(FileError::at("creating", parent))?;
    // Built beside, renamed into place: an interrupted build leaves no root
    // that looks finished.
    let tmp = parent.join(format!("{SUITE}.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    println!(
        "setup: nested-test QEMU: debootstrap {SUITE} into {} from {}",
        tmp.display(),
        mirror.uri
    );
    let mut boot = Command::new("nice");
    boot.args(["debootstrap", "--variant=minbase", SUITE])
        .arg(&tmp)
        .arg(&mirror.uri);
    status(&mut boot)?;
    let keyring = mirror
        .signed_by
        .as_deref()
        .unwrap_or("/usr/share/keyrings/debian-archive-keyring.gpg");
    let sources = format!(
        "Types: deb\nURIs: {}\nSuites: {SUITE}-backports\nComponents: main\nSigned-By: {keyring}\n",
        mirror.uri
    );
    let list = tmp.join("etc/apt/sources.list.d/ktstr-backports.sources");
    std::fs::write(&list, sources).map_err(FileError::at("writing", &list))?;
    let mut install = Command::new("chroot");
    install.arg(&tmp).args([
        "sh",
        "-c",
        "apt-get -qq update && DEBIAN_FRONTEND=noninteractive apt-get -qq -y \
         --no-install-recommends install -t trixie-backports qemu-system-x86 && apt-get clean",
    ]);
    status(&mut install)?;
    let _ = std::fs::remove_dir_all(&root);
    std::fs::rename(&tmp, &root).map_err(FileError::between("renaming", &tmp, &root))?;
    std::fs::write(&w, wrapper_text(&root)).map_err(FileError::at("writing", &w))?;
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&w, std::fs::Permissions::from_mode(0o755))
        .map_err(FileError::at("chmod", &w))?;
    let v = version(&w).ok_or_else(|| NestedQemuError::DoesNotRun { wrapper: w.clone() })?;
    println!(
        "setup: nested-test QEMU: {v} at {} (KTSTR_L1_QEMU)",
        w.display()
    );
    Ok(w)
}
