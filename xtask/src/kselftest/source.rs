//! The runner of `cargo xtask kselftest`: Debian's `linux-source-X.Y` of
//! the kernel's line, fetched with the kernel fetch's private apt state and
//! unpacked once, and the sched_ext selftests built from it against the
//! kernel's BTF, cached by kernel release and source version.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use ktstr_kernel::debian::{self, PrivateApt};
use ktstr_kernel::{Kernel, KernelSource, KernelVersion};

use super::prefix;
use crate::error::{CommandError, FileError, output};

/// What getting the selftest runner (source, build, cache) failed with.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A kernel release that does not name its line.
    #[error("kernel release {release:?} does not start with a version")]
    NotAVersion {
        /// The release.
        release: String,
    },
    #[error(transparent)]
    Config(#[from] ktstr::config::ConfigError),
    #[error(transparent)]
    File(#[from] FileError),
    /// `--offline` and no runner cached.
    #[error(
        "--offline: no sched_ext selftest runner is cached for {release} (in {}); run once \
         without --offline",
        dir.display()
    )]
    NoCachedRunner {
        /// The kernel release.
        release: String,
        /// The runners' directory.
        dir: PathBuf,
    },
    /// Debian has no source package for the kernel's line.
    #[error(
        "kernel {release}: Debian has no {package} in {} (the selftests are built from it); it \
         has {}: pick a kernel of one of those lines with sched_ext (e.g. --kernel {})",
        suites.join(", "),
        if have.is_empty() { "no linux-source package".to_string() } else { have.join(", ") },
        have.last().and_then(|p| p.strip_prefix("linux-source-")).unwrap_or("7.3")
    )]
    NoSource {
        /// The kernel release.
        release: String,
        /// The package it needs.
        package: String,
        /// The suites searched.
        suites: Vec<String>,
        /// The `linux-source-X.Y` packages they have.
        have: Vec<String>,
    },
    /// The private apt state, the mirror or a download failed.
    #[error(transparent)]
    Kernel(#[from] ktstr_kernel::KernelError),
    #[error(transparent)]
    Command(#[from] CommandError),
    /// `make` of the selftests failed.
    #[error(
        "building the sched_ext selftests failed ({status}); the end of {}:\n{tail}",
        log.display()
    )]
    Build {
        /// How make exited.
        status: std::process::ExitStatus,
        /// The build's log.
        log: PathBuf,
        /// Its last lines (the compiler's words).
        tail: String,
    },
    /// A build tool is not installed.
    #[error("{tool} is missing ({package}): run `cargo xtask setup`")]
    ToolMissing {
        /// The tool.
        tool: String,
        /// The Debian package that has it.
        package: &'static str,
    },
    /// The linker finds no libzstd.so.
    #[error(
        "the selftests link -lzstd and the linker finds no libzstd.so (libzstd-dev): run \
         `cargo xtask setup`"
    )]
    NoLibzstd,
}

/// The selftests' directory in the kernel tree.
const SELFTESTS: &str = "tools/testing/selftests/sched_ext";

/// What is unpacked of the source tarball: the selftests' Makefile reaches
/// `tools/` (libbpf, bpftool, the build scripts), `include/` and
/// `arch/x86/include` (headers), `kernel/bpf/` (bpftool's disassembler) and
/// `scripts/`: ~180 MB of the tree's 1.6 GB.
const SOURCE_PARTS: [&str; 5] = [
    "tools",
    "include",
    "arch/x86/include",
    "kernel/bpf",
    "scripts",
];

/// The clang the project installs (`cargo xtask setup`).
const CLANG: &str = "clang-19";

/// Debian's source package of a kernel release's line: `linux-source-7.3`.
fn source_package(release: &str) -> Result<String, SourceError> {
    let v = KernelVersion::of_release(release).ok_or_else(|| SourceError::NotAVersion {
        release: release.to_string(),
    })?;
    Ok(format!("linux-source-{}.{}", v.major, v.minor))
}

/// A built runner in the cache.
#[derive(Debug)]
pub(super) struct Runner {
    pub(super) path: PathBuf,
    pub(super) package: String,
    pub(super) version: String,
}

/// The cache of sources and runners, `<cache root>/kselftest/`:
/// - `src/<package>_<version>/<package>/`: the unpacked parts of a source;
/// - `runner/<release>/<package>_<version>/runner` (and `build.json`);
/// - `build/`: build directories (a failed build's stays, with its log);
/// - `logs/<release>-<topology>.log`: the last run's output and console.
#[derive(Debug)]
pub(super) struct Store {
    pub(super) dir: PathBuf,
}

impl Store {
    pub(super) fn open(dir: &Path) -> Result<Self, FileError> {
        for sub in ["src", "runner", "build", "logs"] {
            let p = dir.join(sub);
            std::fs::create_dir_all(&p).map_err(FileError::at("creating", &p))?;
        }
        Ok(Store {
            dir: dir.to_path_buf(),
        })
    }

    /// Held while sources are unpacked and runners built, so two commands
    /// do not build into the same place.
    fn lock(&self) -> Result<std::fs::File, FileError> {
        let p = self.dir.join(".lock");
        let f = std::fs::File::create(&p).map_err(FileError::at("creating", &p))?;
        f.lock().map_err(FileError::at("locking", &p))?;
        Ok(f)
    }

    /// The runner for `kernel`: cached, or built from the source package of
    /// its line (offline: the newest runner cached for the release).
    pub(super) fn runner(
        &self,
        kernel: &Kernel,
        release: &str,
        offline: bool,
        rebuild: bool,
    ) -> Result<Runner, SourceError> {
        let package = source_package(release)?;
        let _lock = self.lock()?;
        if offline {
            return self.cached_runner(release, &package).ok_or_else(|| {
                SourceError::NoCachedRunner {
                    release: release.to_string(),
                    dir: self.dir.join("runner"),
                }
            });
        }
        let apt = open_apt()?;
        if !apt.has_package(&package) {
            return Err(no_source(&apt, &package, release));
        }
        let version = apt.version(&package)?;
        if let Some(KernelSource::Package {
            version: kernel_version,
            ..
        }) = &kernel.source
            && *kernel_version != version
        {
            prefix(&format!(
                "{package} is {version} and the kernel's package {kernel_version}: the tests come \
                 from that source, built against the kernel's own BTF"
            ));
        }
        let key = format!("{package}_{version}");
        let dir = self.dir.join("runner").join(release).join(&key);
        let runner = Runner {
            path: dir.join("runner"),
            package: package.clone(),
            version: version.clone(),
        };
        let sha = kernel
            .vmlinux_sha256
            .clone()
            .or_else(|| ktstr_kernel::file_sha256(&kernel.vmlinux).ok())
            .unwrap_or_default();
        if !rebuild && built_for(&dir).is_some_and(|b| b == sha) {
            prefix(&format!("the runner for {release} and {key} is cached"));
            return Ok(runner);
        }
        let tree = self.source_tree(&apt, &package, &version)?;
        self.build(&tree, &kernel.vmlinux, &dir, &sha)?;
        Ok(runner)
    }

    /// The most recently built runner of `release` from `package`.
    fn cached_runner(&self, release: &str, package: &str) -> Option<Runner> {
        let dirs = std::fs::read_dir(self.dir.join("runner").join(release)).ok()?;
        dirs.flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                let version = name.strip_prefix(&format!("{package}_"))?.to_string();
                let path = e.path().join("runner");
                let built = std::fs::metadata(&path).and_then(|m| m.modified()).ok()?;
                built_for(&e.path())?;
                Some((built, path, version))
            })
            .max_by_key(|(built, ..)| *built)
            .map(|(_, path, version)| Runner {
                path,
                package: package.to_string(),
                version,
            })
    }

    /// The unpacked parts of `package` `version` (downloaded and unpacked
    /// the first time).
    fn source_tree(
        &self,
        apt: &PrivateApt,
        package: &str,
        version: &str,
    ) -> Result<PathBuf, SourceError> {
        let dir = self.dir.join("src").join(format!("{package}_{version}"));
        if dir.is_dir() {
            return Ok(dir.join(package));
        }
        let tmp = Scratch::new(
            self.dir
                .join("src")
                .join(format!(".tmp-{}", std::process::id())),
        )?;
        prefix(&format!("downloading {package} {version}"));
        let t0 = Instant::now();
        let deb = apt.download(package, &tmp.0)?;
        let unpacked = tmp.0.join("deb");
        output(
            Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked),
            "dpkg-deb -x",
        )?;
        let tarball = unpacked.join(format!("usr/src/{package}.tar.xz"));
        let tree = tmp.0.join("tree");
        std::fs::create_dir_all(&tree).map_err(FileError::at("creating", &tree))?;
        prefix(&format!(
            "unpacking {} of {}",
            SOURCE_PARTS.join(", "),
            tarball.display()
        ));
        let mut tar = Command::new("tar");
        tar.arg("-xf").arg(&tarball).arg("-C").arg(&tree);
        tar.args(SOURCE_PARTS.iter().map(|p| format!("{package}/{p}")));
        output(&mut tar, "tar -x")?;
        std::fs::rename(&tree, &dir).map_err(FileError::between("renaming", &tree, &dir))?;
        prefix(&format!(
            "{package} {version} unpacked in {:.1}s into {}",
            t0.elapsed().as_secs_f64(),
            dir.display()
        ));
        Ok(dir.join(package))
    }

    /// Builds the selftests of `tree` against `vmlinux`'s BTF and caches the
    /// runner in `into`.
    fn build(
        &self,
        tree: &Path,
        vmlinux: &Path,
        into: &Path,
        sha: &str,
    ) -> Result<(), SourceError> {
        let llvm_strip = build_tools()?;
        let out = self.dir.join("build").join(format!(
            "{}-{}",
            into.parent()
                .and_then(Path::file_name)
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
            into.file_name()
                .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
        ));
        let _ = std::fs::remove_dir_all(&out);
        std::fs::create_dir_all(&out).map_err(FileError::at("creating", &out))?;
        let log_path = out.join("build.log");
        let log = std::fs::File::create(&log_path).map_err(FileError::at("creating", &log_path))?;
        let log2 = log
            .try_clone()
            .map_err(FileError::at("duplicating the handle of", &log_path))?;
        let jobs = std::thread::available_parallelism().map_or(2, |n| n.get());
        prefix(&format!(
            "building {SELFTESTS} with {jobs} jobs (log: {})",
            log_path.display()
        ));
        let t0 = Instant::now();
        let status = Command::new("make")
            .arg("-C")
            .arg(tree.join(SELFTESTS))
            .arg(format!("-j{jobs}"))
            .arg(format!("CLANG={CLANG}"))
            .arg(format!("LLVM_STRIP={}", llvm_strip.display()))
            .arg(format!("VMLINUX_BTF={}", vmlinux.display()))
            .arg(format!("OUTPUT={}", out.display()))
            .stdout(log)
            .stderr(log2)
            .status()
            .map_err(|source| CommandError::Spawn {
                command: "make".into(),
                source,
            })?;
        if !status.success() {
            let text = std::fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(15).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(SourceError::Build {
                status,
                log: log_path,
                tail: tail.join("\n"),
            });
        }
        let built = out.join("runner");
        std::fs::create_dir_all(into).map_err(FileError::at("creating", into))?;
        let tmp = into.join(".runner.tmp");
        std::fs::copy(&built, &tmp).map_err(FileError::between("copying", &built, &tmp))?;
        let runner = into.join("runner");
        std::fs::rename(&tmp, &runner).map_err(FileError::between("renaming", &tmp, &runner))?;
        let meta = serde_json::json!({
            "vmlinux": vmlinux.display().to_string(),
            "vmlinux_sha256": sha,
            "build_s": t0.elapsed().as_secs_f64(),
        });
        let meta_path = into.join("build.json");
        std::fs::write(&meta_path, meta.to_string())
            .map_err(FileError::at("writing", &meta_path))?;
        let _ = std::fs::remove_dir_all(&out);
        prefix(&format!(
            "built the runner in {:.1}s",
            t0.elapsed().as_secs_f64()
        ));
        Ok(())
    }
}

/// The vmlinux hash a cached runner was built against (`None`: no complete
/// runner there).
fn built_for(dir: &Path) -> Option<String> {
    if !dir.join("runner").is_file() {
        return None;
    }
    let meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("build.json")).ok()?).ok()?;
    meta["vmlinux_sha256"].as_str().map(str::to_string)
}

/// A scratch directory, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(path: PathBuf) -> Result<Self, FileError> {
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).map_err(FileError::at("creating", &path))?;
        Ok(Scratch(path))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Checks what the build needs besides the source, and returns the
/// llvm-strip to use.
fn build_tools() -> Result<PathBuf, SourceError> {
    for (tool, package) in [(CLANG, CLANG), ("make", "make"), ("gcc", "gcc")] {
        if Command::new(tool).arg("--version").output().is_err() {
            return Err(SourceError::ToolMissing {
                tool: tool.to_string(),
                package,
            });
        }
    }
    let llvm_strip = PathBuf::from("/usr/bin/llvm-strip");
    if !llvm_strip.is_file() {
        return Err(SourceError::ToolMissing {
            tool: llvm_strip.display().to_string(),
            package: "Debian's llvm",
        });
    }
    // The Makefile links -lzstd: the linker needs libzstd.so (libzstd-dev).
    let found = Command::new("gcc")
        .arg("-print-file-name=libzstd.so")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    if !Path::new(&found).is_absolute() {
        return Err(SourceError::NoLibzstd);
    }
    Ok(llvm_strip)
}

/// The private apt state of the kernel fetch (`<cache root>/apt`), its lists
/// refreshed.
fn open_apt() -> Result<PrivateApt, SourceError> {
    let host = crate::host()?;
    let env = host.kernel_cmd_env();
    let codename = debian::os_codename()?;
    let mirror = debian::debian_mirror(&debian::system_sources(), &codename)?;
    let suites = env
        .suites
        .clone()
        .unwrap_or_else(|| debian::kernel_suites(&codename));
    let apt = PrivateApt::new(&host.cache_root.join("apt"), mirror, suites)?;
    prefix(&format!(
        "refreshing package lists of {} from {}",
        apt.suites().join(", "),
        apt.mirror_uri()
    ));
    apt.update()?;
    Ok(apt)
}

/// The error for a line without its source package, naming the
/// `linux-source-X.Y` packages the archive has (one per line of the cloud
/// kernels it offers).
fn no_source(apt: &PrivateApt, package: &str, release: &str) -> SourceError {
    let mut lines: Vec<(u32, u32)> = apt
        .candidates()
        .unwrap_or_default()
        .iter()
        .filter_map(|c| KernelVersion::of_release(&c.release))
        .map(|v| v.line())
        .collect();
    lines.sort_unstable();
    lines.dedup();
    let have: Vec<String> = lines
        .into_iter()
        .map(|(a, b)| format!("linux-source-{a}.{b}"))
        .filter(|p| apt.has_package(p))
        .collect();
    SourceError::NoSource {
        release: release.to_string(),
        package: package.to_string(),
        suites: apt.suites().to_vec(),
        have,
    }
}

/// The tests the runner has (`runner -l`, run on the host: it only lists),
/// those matching `filter`; `None` when it cannot be run here.
pub(super) fn listed_tests(runner: &Path, filter: Option<&str>) -> Option<Vec<String>> {
    let out = Command::new(runner).arg("-l").output().ok()?;
    if !out.status.success() {
        return None;
    }
    Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::trim)
            .filter(|n| !n.is_empty() && filter.is_none_or(|f| n.contains(f)))
            .map(str::to_string)
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_source_package_is_the_kernel_line() {
        assert_eq!(
            source_package("7.3.4+deb13-cloud-amd64").expect("versioned"),
            "linux-source-7.3"
        );
        assert_eq!(
            source_package("6.18.15+deb13-cloud-amd64").expect("versioned"),
            "linux-source-6.18"
        );
        assert!(source_package("custom").is_err());
    }
}
