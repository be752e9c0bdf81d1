//! `cargo xtask setup`: install every system package the project needs on a
//! Debian machine, idempotently, with one line per thing done or present.

use std::process::Command;

use ktstr_kernel::debian;

use crate::error::{CommandError, FileError, status};

/// What `cargo xtask setup` failed with.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The host is not Debian (its manual steps were printed).
    #[error("set-up needs a Debian host; install the packages above by hand")]
    NotDebian(#[source] ktstr_kernel::KernelError),
    /// Not root (the manual steps were printed).
    #[error("set-up needs root: re-run as root, or install the packages above")]
    NotRoot,
    /// The host's apt sources name no Debian mirror.
    #[error(transparent)]
    Mirror(ktstr_kernel::KernelError),
    #[error(transparent)]
    File(#[from] FileError),
    #[error(transparent)]
    Command(#[from] CommandError),
    /// apt-get succeeded and the package is still not installed.
    #[error("apt-get could not install {package}")]
    NotInstalled {
        /// The Debian package.
        package: &'static str,
    },
    /// `cargo install` succeeded and the tool still does not answer.
    #[error("{what}: still missing after `cargo {install}` (is cargo's bin directory on PATH?)")]
    StillMissing {
        /// The tool and what it is for.
        what: String,
        /// The arguments of the `cargo install` that ran.
        install: String,
    },
}

/// A Debian package the project needs, and why.
struct Need {
    package: &'static str,
    /// The suite to install it from when the host's own release is too old.
    from_backports: bool,
    /// The lowest acceptable upstream major version, if any.
    min_major: Option<u32>,
    why: &'static str,
}

const NEEDS: &[Need] = &[
    Need {
        package: "qemu-system-x86",
        from_backports: true,
        min_major: Some(10),
        why: "the QEMU backend (smp-cache for LLCs needs QEMU 10)",
    },
    Need {
        package: "clang-19",
        from_backports: false,
        min_major: None,
        why: "builds BPF schedulers (scx-ktstr; `cargo xtask schedulers`: clang and libclang for bindgen)",
    },
    Need {
        package: "libelf-dev",
        from_backports: false,
        min_major: None,
        why: "libelf for the vendored libbpf of scx-ktstr and the published schedulers",
    },
    Need {
        package: "zlib1g-dev",
        from_backports: false,
        min_major: None,
        why: "zlib for the vendored libbpf of scx-ktstr and the published schedulers",
    },
    Need {
        package: "gcc",
        from_backports: false,
        min_major: None,
        why: "builds the KVM VMM's tiny test guests, and kernels from source",
    },
    Need {
        package: "binutils",
        from_backports: false,
        min_major: None,
        why: "objcopy/nm for the tiny test guests",
    },
    Need {
        package: "make",
        from_backports: false,
        min_major: None,
        why: "builds the vendored libbpf",
    },
    Need {
        package: "pkg-config",
        from_backports: false,
        min_major: None,
        why: "finds libelf and zlib for libbpf",
    },
    Need {
        package: "busybox-static",
        from_backports: false,
        min_major: None,
        why: "the guest shell of `ktstr shell`",
    },
    Need {
        package: "acpica-tools",
        from_backports: false,
        min_major: None,
        why: "iasl checks the generated ACPI tables",
    },
    Need {
        package: "dwarves",
        from_backports: false,
        min_major: None,
        why: "pahole cross-checks the BTF parser, and makes the BTF of kernels built from source",
    },
    Need {
        package: "bpftool",
        from_backports: false,
        min_major: None,
        why: "cross-checks the BTF parser",
    },
    Need {
        package: "libzstd-dev",
        from_backports: false,
        min_major: None,
        why: "the kernel's sched_ext selftests link -lzstd (`cargo xtask kselftest`)",
    },
    Need {
        package: "llvm",
        from_backports: false,
        min_major: None,
        why: "llvm-strip for the kernel's sched_ext selftests (`cargo xtask kselftest`)",
    },
    Need {
        package: "cpio",
        from_backports: false,
        min_major: None,
        why: "cross-checks the initramfs writer",
    },
    Need {
        package: "flex",
        from_backports: false,
        min_major: None,
        why: "kernels built from source (`cargo ktstr kernel build`): Kconfig's lexer",
    },
    Need {
        package: "bison",
        from_backports: false,
        min_major: None,
        why: "kernels built from source: Kconfig's parser",
    },
    Need {
        package: "bc",
        from_backports: false,
        min_major: None,
        why: "kernels built from source: the build computes constants with bc",
    },
    Need {
        package: "libssl-dev",
        from_backports: false,
        min_major: None,
        why: "kernels built from source: the host tools sign and extract certificates",
    },
    Need {
        package: "xz-utils",
        from_backports: false,
        min_major: None,
        why: "kernels built from source: linux-source-X is an .tar.xz",
    },
    Need {
        package: "git",
        from_backports: false,
        min_major: None,
        why: "kernels built from source: git+URL#ref clones and tree identities",
    },
];

/// The suites this set-up adds and the pin priority each gets: backports stay
/// below the host release (500) so nothing is upgraded unless asked for.
fn pinned_suites(codename: &str) -> Vec<(String, u32)> {
    debian::kernel_suites(codename)
        .into_iter()
        .enumerate()
        // The host release's own backports at the usual 100, the next
        // release's (kernels only) lower still.
        .map(|(i, s)| (s, if i == 0 { 100 } else { 50 }))
        .collect()
}

pub fn run() -> Result<(), SetupError> {
    let codename = match debian::os_codename() {
        Ok(c) => c,
        Err(e) => {
            print_manual_steps(&e.to_string());
            return Err(SetupError::NotDebian(e));
        }
    };
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        print_manual_steps("not running as root");
        return Err(SetupError::NotRoot);
    }
    let mirror =
        debian::debian_mirror(&debian::system_sources(), &codename).map_err(SetupError::Mirror)?;
    let suites = pinned_suites(&codename);
    let mut changed = write_if_changed(
        "/etc/apt/sources.list.d/ktstr-backports.sources",
        &sources_file(&mirror, &suites),
    )?;
    changed |= write_if_changed(
        "/etc/apt/preferences.d/ktstr-backports",
        &preferences_file(&suites),
    )?;
    let names: Vec<&str> = suites.iter().map(|(s, _)| s.as_str()).collect();
    println!(
        "setup: apt suites {} from the host's mirror: {}",
        names.join(", "),
        if changed { "added" } else { "already present" }
    );

    ensure_nextest()?;
    let missing: Vec<&Need> = NEEDS
        .iter()
        .filter(|n| !check_installed(n, false))
        .collect();
    if missing.is_empty() && !changed {
        return Ok(());
    }
    if changed || !missing.is_empty() {
        status(Command::new("apt-get").args(["-qq", "update"]))?;
        println!("setup: apt-get update: done");
    }
    let backports = format!("{codename}-backports");
    for need in &missing {
        let mut cmd = Command::new("apt-get");
        cmd.env("DEBIAN_FRONTEND", "noninteractive").args([
            "-qq",
            "-y",
            "--no-install-recommends",
            "install",
        ]);
        if need.from_backports {
            cmd.args(["-t", &backports]);
        }
        cmd.arg(need.package);
        status(&mut cmd)?;
        if !check_installed(need, true) {
            return Err(SetupError::NotInstalled {
                package: need.package,
            });
        }
    }
    Ok(())
}

/// cargo-nextest runs the VM tests one process per test; install it from
/// the Rust package registry (`cargo install`) when the machine lacks it.
fn ensure_nextest() -> Result<(), SetupError> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    ensure_cargo_tool(
        "cargo-nextest (runs the VM tests one process each)",
        Command::new(&cargo).args(["nextest", "--version"]),
        |_| true,
        &["install", "--locked", "cargo-nextest"],
    )
}

/// The mdBook that builds the book (`mdbook build docs`): pinned, built
/// without its web server and file watcher.
const MDBOOK_VERSION: &str = "0.5.4";

/// Installs mdBook unless present: `cargo xtask setup --book` and
/// `cargo xtask test --full`. Not part of the default set-up: building it
/// takes 5-11 minutes on two cores, and the default suite already compiles
/// the book's code and checks its links (ktstr-docs).
pub fn ensure_mdbook() -> Result<(), SetupError> {
    ensure_cargo_tool(
        &format!("mdbook {MDBOOK_VERSION} (builds the book in docs/)"),
        Command::new("mdbook").arg("--version"),
        |out| out.trim() == format!("mdbook v{MDBOOK_VERSION}"),
        &[
            "install",
            "--locked",
            "--version",
            MDBOOK_VERSION,
            "--no-default-features",
            "--features",
            "search",
            "mdbook",
        ],
    )
}

/// Runs `check`; unless it succeeds with output `wanted` accepts, installs
/// the tool with `cargo <install>` and checks again.
fn ensure_cargo_tool(
    what: &str,
    check: &mut Command,
    wanted: impl Fn(&str) -> bool,
    install: &[&str],
) -> Result<(), SetupError> {
    let have = |check: &mut Command| {
        check
            .output()
            .is_ok_and(|o| o.status.success() && wanted(&String::from_utf8_lossy(&o.stdout)))
    };
    if have(check) {
        println!("setup: {what}: already present");
        return Ok(());
    }
    println!("setup: {what}: missing, installing with cargo install");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    status(Command::new(&cargo).args(install))?;
    if !have(check) {
        return Err(SetupError::StillMissing {
            what: what.to_string(),
            install: install.join(" "),
        });
    }
    println!("setup: {what}: installed");
    Ok(())
}

fn sources_file(mirror: &debian::AptSource, suites: &[(String, u32)]) -> String {
    let keyring = mirror
        .signed_by
        .as_deref()
        .unwrap_or("/usr/share/keyrings/debian-archive-keyring.gpg");
    let names: Vec<&str> = suites.iter().map(|(s, _)| s.as_str()).collect();
    format!(
        "# Added by `cargo xtask setup` (ktstr): backports for QEMU 10 and sched_ext kernels,\n\
         # from the mirror this machine already uses. Pinned low in preferences.d/ktstr-backports.\n\
         Types: deb\nURIs: {}\nSuites: {}\nComponents: main\nSigned-By: {keyring}\n",
        mirror.uri,
        names.join(" ")
    )
}

fn preferences_file(suites: &[(String, u32)]) -> String {
    let mut s = String::from(
        "# Added by `cargo xtask setup` (ktstr): never upgrade from these suites unasked.\n",
    );
    for (suite, prio) in suites {
        s.push_str(&format!(
            "\nPackage: *\nPin: release n={suite}\nPin-Priority: {prio}\n"
        ));
    }
    s
}

fn write_if_changed(path: &str, content: &str) -> Result<bool, FileError> {
    if std::fs::read_to_string(path).is_ok_and(|c| c == content) {
        return Ok(false);
    }
    std::fs::write(path, content).map_err(FileError::at("writing", path.as_ref()))?;
    Ok(true)
}

/// Prints whether `need` is installed (and new enough); returns that.
/// `just_installed` words the line for the check after an install.
fn check_installed(need: &Need, just_installed: bool) -> bool {
    let out = Command::new("dpkg-query")
        .args(["-W", "-f=${Status}\t${Version}", need.package])
        .output();
    let text = out
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let (status, version) = text.split_once('\t').unwrap_or(("", ""));
    let installed = status == "install ok installed";
    let new_enough = need
        .min_major
        .is_none_or(|min| upstream_major(version) >= min);
    if installed && new_enough {
        let state = if just_installed {
            "installed"
        } else {
            "already present"
        };
        println!("setup: {} {version}: {state} ({})", need.package, need.why);
        true
    } else {
        let state = match (installed, just_installed) {
            (_, true) => "still missing or too old after installing",
            (true, false) => "too old, installing",
            (false, false) => "missing, installing",
        };
        println!("setup: {} {version}: {state} ({})", need.package, need.why);
        false
    }
}

/// The upstream major version of a Debian version string (`1:10.0.2+ds-2` -> 10).
fn upstream_major(version: &str) -> u32 {
    let v = version.split_once(':').map_or(version, |(_, v)| v);
    v.split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn print_manual_steps(reason: &str) {
    println!("setup: cannot install automatically: {reason}.");
    println!(
        "setup: on Debian 12 (bookworm), as root, add the bookworm-backports and trixie-backports"
    );
    println!(
        "setup: suites of your usual mirror to apt (pinned at priority 100 and 50), then run:"
    );
    let mut list = String::new();
    for n in NEEDS {
        println!("setup:   {:<16} {}", n.package, n.why);
        list.push(' ');
        list.push_str(n.package);
    }
    println!(
        "setup: apt-get install -t bookworm-backports qemu-system-x86 && apt-get install{list}"
    );
    println!(
        "setup: elsewhere, install the equivalents (QEMU >= 10, clang 19, libelf, zlib and zstd headers, llvm-strip, make, pkg-config, a static busybox, iasl, pahole, bpftool, cpio)."
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_major_versions() {
        assert_eq!(upstream_major("1:10.0.2+ds-2+deb13u1~bpo12+1"), 10);
        assert_eq!(upstream_major("1:7.2+dfsg-7+deb12u18+b3"), 7);
        assert_eq!(upstream_major("19.1.7-3~deb12u1"), 19);
        assert_eq!(upstream_major(""), 0);
    }

    #[test]
    fn pins_keep_backports_below_the_release() {
        let p = preferences_file(&pinned_suites("bookworm"));
        assert!(p.contains("n=bookworm-backports\nPin-Priority: 100"), "{p}");
        assert!(p.contains("n=trixie-backports\nPin-Priority: 50"), "{p}");
    }
}
