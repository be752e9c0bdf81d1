//! The host configuration: every setting ktstr takes from the environment,
//! read once, checked, and passed down as values. No crate below the facade
//! reads the environment.
//!
//! Precedence: command-line flags (applied by the CLI on top of this), then
//! the environment, then defaults.
//!
//! | variable | setting | default |
//! |---|---|---|
//! | `KTSTR_CACHE_DIR` | cache root (kernels, initramfs) | `$XDG_CACHE_HOME/ktstr`, else `~/.cache/ktstr` |
//! | `KTSTR_KERNEL` | kernel to boot | the newest cached kernel |
//! | `KTSTR_BACKEND` | `kvm`, `qemu` or `auto` | `auto` |
//! | `KTSTR_QEMU` | the QEMU binary | `qemu-system-x86_64` in `PATH` |
//! | `KTSTR_BUSYBOX` | static busybox for `ktstr shell` | `/bin/busybox` |
//! | `KTSTR_HOST_CPUS` | host cores VMs may use at once | the CPUs this process may run on |
//! | `KTSTR_SLOT_DIR` | the host-wide VM slot locks | `/tmp/ktstr-slots-<uid>` |
//! | `KTSTR_TCG` | `auto`, `multi`, `single` or `icount`: how QEMU's software CPU runs vCPUs | `auto` (instruction counting: one host thread, fixed guest clock rate) |
//! | `KTSTR_KASLR` | `1`: boot every test's kernel from its bzImage with KASLR on (randomized), `0`: the ELF vmlinux at its link address | `0` (faster boot; see the README's KASLR section) |
//! | `KTSTR_RECORD` | `1`: record every test's VM so a failing run can be replayed (`cargo ktstr test --record`; boots cold, QEMU TCG only); a passing test's recording is deleted; `all`: passing tests keep theirs too | `0` |
//! | `KTSTR_QEMU_GATE` | the ktstr-qemu-gate QEMU plugin a replay's questions load (`ktstr::recording::replay_asking`) | `libktstr_qemu_gate.so` beside the running program (`target/<profile>/`, its `deps/`) |
//! | `KTSTR_BOOT_TIMEOUT_S` | boot-to-init limit, seconds | 45 |
//! | `KTSTR_VERBOSE` | echo guest consoles (`1`) | off |
//! | `KTSTR_ALLOW_INCONCLUSIVE` | `1`: an inconclusive verdict does not fail the test | off |
//! | `KTSTR_RESULTS` | also append each test's record as one JSON line here | none |
//! | `KTSTR_RESULTS_DIR` | the results store: one JSON record per test under `runs/<run>/` | `<target dir>/ktstr` of the test binary |
//! | `KTSTR_RUN` | the run a record belongs to (`cargo ktstr` sets it) | the start time and pid of the process that started the tests |
//! | `KTSTR_SCHEDULER` | run every sched_ext test with this scheduler binary instead of its declared one | the declared one |
//! | `KTSTR_SCHED_ARGS` | more arguments for the booted scheduler, split at whitespace | none |
//! | `KTSTR_AUTO_REPRO` | `0`: never boot a probe VM after a scheduler crash (overrides `auto_repro` on every test) | on |
//! | `KTSTR_DUMP` | `1`: print the scheduler's state dump after every test, passing ones too (`cargo ktstr test --dump`) | off (failing tests only) |
//! | `KTSTR_MONITOR_HZ` | periodic samples of guest memory per second, `0` for none | 10 |
//! | `KTSTR_RESTORE` | `1`: start each test from a snapshot of a guest booted once (boot once, restore many), `0`: boot every test cold | `1` |
//! | `KTSTR_SNAPSHOT_CACHE_MIB` | disk the snapshot cache (`<cache root>/snapshots`) may hold before the least recently used images go | 8192 (the default suite's snapshots take ~4 GB) |
//! | `KTSTR_INITRAMFS_CACHE_MIB` | disk cap of the initramfs cache (least recently used archives go first; those used in the last 10 minutes stay) | 4096 |
//! | `KTSTR_KERNEL_SRC_CACHE_MIB` | disk kernel source trees and their kept build directories (`<cache root>/kernel-src`, `kernel-build`) may hold before the least recently built from go | 16384 |
//! | `KTSTR_ARCHIVE_ROOT` | where a ktstr archive's copies of declared host paths are (`cargo ktstr run --archive` sets it): a declared scheduler path or file missing here is looked up under it | none |
//! | `KTSTR_LIST_SCHEDULERS` | a test binary writes its tests' declared schedulers to this file as JSON and exits (`cargo ktstr archive` sets it) | none |
//! | `KTSTR_KERNEL_SUITES` | Debian suites searched by `kernel fetch` | the host's and the next release's backports |

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use ktstr_vmm::{Backend, BackendChoice, QemuBackend, TcgMode, VmmError};

/// A setting in the environment that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}={value:?}: {why}")]
pub struct ConfigError {
    /// The variable.
    pub var: &'static str,
    /// Its value.
    pub value: String,
    /// What is wrong and what it takes.
    pub why: String,
}

/// Every host-side setting of a ktstr run.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HostConfig {
    /// The cache root: `kernels/`, `initramfs/`, `slots/` live below it.
    pub cache_root: PathBuf,
    /// The kernel to boot instead of the newest cached one (`KTSTR_KERNEL`:
    /// a path or a version of a cached kernel).
    pub kernel: Option<ktstr_kernel::KernelSpec>,
    /// Which VM backend runs.
    pub backend: BackendChoice,
    /// The QEMU binary (`None`: search `path`).
    pub qemu: Option<PathBuf>,
    /// The `PATH` QEMU is searched in.
    pub path: OsString,
    /// Static busybox for `ktstr shell`.
    pub busybox: PathBuf,
    /// Host cores VMs may keep busy at once.
    pub host_cpus: usize,
    /// Where the host-wide VM slot locks live.
    pub slot_dir: PathBuf,
    /// How QEMU's software CPU runs vCPUs.
    pub tcg: TcgMode,
    /// Boot every test randomized: the bzImage with KASLR on
    /// (`KTSTR_KASLR=1`; a test can ask for it alone with `kaslr = true`).
    pub kaslr: bool,
    /// Record every test's VM for replay (`KTSTR_RECORD=1`, `cargo ktstr
    /// test --record`; a test can ask alone with `record = true`).
    pub record: bool,
    /// Keep passing tests' recordings too (`KTSTR_RECORD=all`).
    pub keep_recordings: bool,
    /// How long a guest may take from boot to the harness's init.
    pub boot_timeout: Duration,
    /// Echo guest consoles to stderr.
    pub verbose: bool,
    /// Accept inconclusive verdicts in this run (`KTSTR_ALLOW_INCONCLUSIVE=1`).
    pub allow_inconclusive: bool,
    /// Where to append one JSON line per test.
    pub results: Option<PathBuf>,
    /// The results store (`None`: the target directory of the test binary).
    pub results_dir: Option<PathBuf>,
    /// The run this process's records belong to (`None`: derived from the
    /// process that started the tests).
    pub run_id: Option<String>,
    /// A scheduler binary replacing the declared one of sched_ext tests.
    pub scheduler_binary: Option<PathBuf>,
    /// Arguments appended to the booted scheduler's.
    pub sched_args: Vec<String>,
    /// Periodic samples of guest memory per second (0: none).
    pub monitor_hz: u32,
    /// Rerun scheduler crashes in a probe VM (tests with `auto_repro`, the
    /// default); `KTSTR_AUTO_REPRO=0` turns it off for the whole run.
    pub auto_repro: bool,
    /// Dump the scheduler's state after passing tests too (`KTSTR_DUMP=1`).
    pub dump: bool,
    /// Debian suites searched by `kernel fetch`.
    pub kernel_suites: Option<Vec<String>>,
    /// Start tests from a snapshot of a booted guest (the default;
    /// `KTSTR_RESTORE=0` or `--no-restore` turns it off).
    pub restore: bool,
    /// Disk the snapshot cache may hold, in MiB.
    pub snapshot_cache_mib: u64,
    /// Disk the kernel cache may hold before the least recently used
    /// kernels go, MiB (checked after each fetch).
    pub kernel_cache_mib: u64,
    /// Disk kernel source trees and their build directories may hold before the least
    /// recently built from go, MiB (checked after each build).
    pub kernel_src_cache_mib: u64,
    /// Disk cap of the initramfs cache, bytes (`KTSTR_INITRAMFS_CACHE_MIB`).
    pub initramfs_cache_bytes: u64,
}

/// Disk the snapshot cache may hold by default, in MiB: twice what the
/// default suite's 29 snapshots took (~138 MB each, 4.0 GB), since a cache
/// smaller than a run's snapshots evicts each before the run reuses it.
pub const DEFAULT_SNAPSHOT_CACHE_MIB: u64 = 8192;

/// The kernel cache's default cap: a Debian cloud kernel takes ~75 MiB
/// (vmlinux, bzImage, KVM modules, `file:line` index), so ~50 kernels.
pub const DEFAULT_KERNEL_CACHE_MIB: u64 = 4096;

/// The default cap of kernel source trees with their kept build directories: a Debian
/// `linux-source-7.3` tree is 1.8 GiB and its build with ktstr's fragment 1.2 GiB, so
/// about five trees.
pub const DEFAULT_KERNEL_SRC_CACHE_MIB: u64 = 16384;

/// Whether `id` can name a run's directory: letters, digits, `-`, `_`, `.`,
/// not starting with a dot.
pub fn valid_run_id(id: &str) -> bool {
    !id.is_empty()
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Periodic monitor samples per second by default.
pub const DEFAULT_MONITOR_HZ: u32 = 10;

/// How long a boot may take to reach init by default. TCG boots take 3-10 s.
pub const DEFAULT_BOOT_TIMEOUT: Duration = Duration::from_secs(45);

impl HostConfig {
    /// The configuration from this process's environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(|k| std::env::var_os(k))
    }

    /// The configuration from `get` (a stand-in for the environment).
    pub fn from_vars(get: impl Fn(&str) -> Option<OsString>) -> Result<Self, ConfigError> {
        let set = |k: &str| get(k).filter(|v| !v.is_empty());
        let text = |k: &'static str| -> Result<Option<String>, ConfigError> {
            set(k)
                .map(|v| {
                    v.into_string().map_err(|v| ConfigError {
                        var: k,
                        value: v.to_string_lossy().into_owned(),
                        why: "not valid UTF-8".into(),
                    })
                })
                .transpose()
        };
        let number = |k: &'static str| -> Result<Option<u64>, ConfigError> {
            text(k)?
                .map(|v| match v.trim().parse::<u64>() {
                    Ok(n) if n > 0 => Ok(n),
                    _ => Err(ConfigError {
                        var: k,
                        value: v.clone(),
                        why: "expected a whole number above 0".into(),
                    }),
                })
                .transpose()
        };
        let path = |k: &str| set(k).map(PathBuf::from);
        let cache_root = ktstr_cache::root_from(
            path("KTSTR_CACHE_DIR").as_deref(),
            path("XDG_CACHE_HOME").as_deref(),
            path("HOME").as_deref(),
        )
        .unwrap_or_else(|| std::env::temp_dir().join("ktstr-cache"));
        let backend = match text("KTSTR_BACKEND")? {
            Some(v) => v.parse().map_err(|_| ConfigError {
                var: "KTSTR_BACKEND",
                value: v.clone(),
                why: "expected `kvm`, `qemu` or `auto`".into(),
            })?,
            None => BackendChoice::Auto,
        };
        let host_cpus = match number("KTSTR_HOST_CPUS")? {
            Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        let tcg = match text("KTSTR_TCG")?.as_deref().map(str::trim) {
            None | Some("auto") => TcgMode::Auto,
            Some("multi") => TcgMode::Multi,
            Some("single") => TcgMode::Single,
            Some("icount") => TcgMode::InstructionCount,
            Some(other) => {
                return Err(ConfigError {
                    var: "KTSTR_TCG",
                    value: other.into(),
                    why: "expected `auto`, `multi`, `single` or `icount`".into(),
                });
            }
        };
        let kaslr = match text("KTSTR_KASLR")?.as_deref().map(str::trim) {
            None | Some("" | "0") => false,
            Some("1") => true,
            Some(other) => {
                return Err(ConfigError {
                    var: "KTSTR_KASLR",
                    value: other.into(),
                    why: "expected `1` (bzImage, randomized) or `0` (vmlinux at its link address)"
                        .into(),
                });
            }
        };
        let (record, keep_recordings) = match text("KTSTR_RECORD")?.as_deref().map(str::trim) {
            None | Some("" | "0") => (false, false),
            Some("1") => (true, false),
            Some("all") => (true, true),
            Some(other) => {
                return Err(ConfigError {
                    var: "KTSTR_RECORD",
                    value: other.into(),
                    why:
                        "expected `1` (record every test's VM, keep the failing ones' recordings), \
                          `all` (keep every recording) or `0`"
                            .into(),
                });
            }
        };
        Ok(HostConfig {
            cache_root,
            tcg,
            kaslr,
            record,
            keep_recordings,
            slot_dir: set("KTSTR_SLOT_DIR")
                .map_or_else(ktstr_vmm::HostSlots::default_dir, PathBuf::from),
            kernel: match set("KTSTR_KERNEL").map(OsString::into_string) {
                Some(Ok(v)) => {
                    Some(
                        v.parse()
                            .map_err(|e: ktstr_kernel::SpecError| ConfigError {
                                var: "KTSTR_KERNEL",
                                value: v.clone(),
                                why: e.why,
                            })?,
                    )
                }
                // Not UTF-8: only a path can be.
                Some(Err(p)) => Some(ktstr_kernel::KernelSpec::Path(p.into())),
                None => None,
            },
            backend,
            qemu: set("KTSTR_QEMU").map(PathBuf::from),
            path: get("PATH").unwrap_or_default(),
            busybox: set("KTSTR_BUSYBOX").map_or_else(|| "/bin/busybox".into(), PathBuf::from),
            host_cpus,
            boot_timeout: number("KTSTR_BOOT_TIMEOUT_S")?
                .map_or(DEFAULT_BOOT_TIMEOUT, Duration::from_secs),
            verbose: set("KTSTR_VERBOSE").is_some_and(|v| v != "0"),
            allow_inconclusive: set("KTSTR_ALLOW_INCONCLUSIVE").is_some_and(|v| v != "0"),
            results: set("KTSTR_RESULTS").map(PathBuf::from),
            results_dir: set("KTSTR_RESULTS_DIR").map(PathBuf::from),
            run_id: match text("KTSTR_RUN")? {
                Some(r) if !valid_run_id(&r) => {
                    return Err(ConfigError {
                        var: "KTSTR_RUN",
                        value: r,
                        why: "expected letters, digits, `-`, `_` or `.` (it names a directory)"
                            .into(),
                    });
                }
                r => r,
            },
            scheduler_binary: set("KTSTR_SCHEDULER").map(PathBuf::from),
            sched_args: text("KTSTR_SCHED_ARGS")?
                .map(|a| a.split_whitespace().map(str::to_string).collect())
                .unwrap_or_default(),
            monitor_hz: match text("KTSTR_MONITOR_HZ")? {
                None => DEFAULT_MONITOR_HZ,
                Some(v) => match v.trim().parse::<u32>() {
                    Ok(n) if n <= 1000 => n,
                    _ => {
                        return Err(ConfigError {
                            var: "KTSTR_MONITOR_HZ",
                            value: v.clone(),
                            why: "expected samples per second from 0 (off) to 1000".into(),
                        });
                    }
                },
            },
            auto_repro: match text("KTSTR_AUTO_REPRO")?.as_deref().map(str::trim) {
                None | Some("1") => true,
                Some("0") => false,
                Some(v) => {
                    return Err(ConfigError {
                        var: "KTSTR_AUTO_REPRO",
                        value: v.into(),
                        why: "expected 0 (no probe VM after a scheduler crash) or 1".into(),
                    });
                }
            },
            dump: match text("KTSTR_DUMP")?.as_deref().map(str::trim) {
                None | Some("0") => false,
                Some("1") => true,
                Some(v) => {
                    return Err(ConfigError {
                        var: "KTSTR_DUMP",
                        value: v.into(),
                        why: "expected 1 (dump after every test) or 0".into(),
                    });
                }
            },
            restore: match text("KTSTR_RESTORE")?.as_deref().map(str::trim) {
                Some("0") => false,
                None | Some("1") => true,
                Some(v) => {
                    return Err(ConfigError {
                        var: "KTSTR_RESTORE",
                        value: v.into(),
                        why: "expected 1 (start tests from a snapshot of a booted guest) or 0 \
                              (boot every test cold)"
                            .into(),
                    });
                }
            },
            snapshot_cache_mib: number("KTSTR_SNAPSHOT_CACHE_MIB")?
                .unwrap_or(DEFAULT_SNAPSHOT_CACHE_MIB),
            kernel_cache_mib: number("KTSTR_KERNEL_CACHE_MIB")?.unwrap_or(DEFAULT_KERNEL_CACHE_MIB),
            kernel_src_cache_mib: number("KTSTR_KERNEL_SRC_CACHE_MIB")?
                .unwrap_or(DEFAULT_KERNEL_SRC_CACHE_MIB),
            initramfs_cache_bytes: number("KTSTR_INITRAMFS_CACHE_MIB")?
                .map_or(ktstr_initramfs::DEFAULT_CAP_BYTES, |mib| {
                    mib.saturating_mul(1 << 20)
                }),
            kernel_suites: text("KTSTR_KERNEL_SUITES")?.map(|s| {
                s.split(',')
                    .map(|x| x.trim().to_string())
                    .filter(|x| !x.is_empty())
                    .collect()
            }),
        })
    }

    /// This process's configuration, read from the environment on first use.
    pub fn global() -> Result<&'static HostConfig, ConfigError> {
        static GLOBAL: OnceLock<Result<HostConfig, ConfigError>> = OnceLock::new();
        GLOBAL
            .get_or_init(HostConfig::from_env)
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The kernel cache.
    pub fn kernel_cache(&self) -> ktstr_kernel::KernelCache {
        ktstr_kernel::KernelCache::new(self.cache_root.join("kernels"))
    }

    /// The kernel to boot: `explicit` (a flag), else `KTSTR_KERNEL`, else the
    /// newest cached kernel. Nothing is fetched: a version names a cached kernel.
    pub fn resolve_kernel(
        &self,
        explicit: Option<&ktstr_kernel::KernelSpec>,
    ) -> Result<ktstr_kernel::Kernel, ktstr_kernel::KernelError> {
        ktstr_kernel::resolve(explicit.or(self.kernel.as_ref()), &self.kernel_cache())
    }

    /// What the `kernel` subcommands need: the cache, the suites searched
    /// and the cache's cap.
    pub fn kernel_cmd_env(&self) -> ktstr_kernel::KernelCmdEnv {
        ktstr_kernel::KernelCmdEnv {
            cache: self.kernel_cache(),
            suites: self.kernel_suites.clone(),
            cap_bytes: self.kernel_cache_mib << 20,
            src_cap_bytes: self.kernel_src_cache_mib << 20,
            kconfig: None,
        }
    }

    /// The snapshot cache's directory.
    pub fn snapshot_dir(&self) -> PathBuf {
        self.cache_root.join("snapshots")
    }

    /// The initramfs base cache.
    pub fn initramfs_cache(
        &self,
    ) -> Result<ktstr_initramfs::Cache, ktstr_initramfs::InitramfsError> {
        ktstr_initramfs::Cache::open(self.cache_root.join("initramfs"))
            .map(|c| c.with_cap(self.initramfs_cache_bytes))
    }

    /// The QEMU backend of this configuration.
    pub fn qemu_backend(&self) -> Result<QemuBackend, VmmError> {
        match &self.qemu {
            Some(q) => QemuBackend::new(q),
            None => QemuBackend::find_in(&self.path),
        }
    }

    /// The VM backend of this configuration.
    pub fn backend(&self) -> Result<Box<dyn Backend>, VmmError> {
        ktstr_vmm::select_backend(self.backend, || self.qemu_backend(), self.slots())
    }

    /// The host CPU slots every VM takes before it boots.
    pub fn slots(&self) -> ktstr_vmm::HostSlots {
        ktstr_vmm::HostSlots::new(&self.slot_dir, self.host_cpus)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn vars(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let owned: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| {
            owned
                .iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| OsString::from(v))
        }
    }

    #[test]
    fn defaults_and_the_cache_root_order() {
        let c = HostConfig::from_vars(vars(&[("HOME", "/home/u")])).expect("defaults");
        assert_eq!(c.cache_root, Path::new("/home/u/.cache/ktstr"));
        assert_eq!(c.backend, BackendChoice::Auto);
        assert_eq!(c.boot_timeout, DEFAULT_BOOT_TIMEOUT);
        assert!(c.host_cpus >= 1);
        assert!(!c.verbose);
        assert_eq!(c.monitor_hz, DEFAULT_MONITOR_HZ);
        assert!(c.restore);
        assert_eq!(c.snapshot_cache_mib, DEFAULT_SNAPSHOT_CACHE_MIB);
        let c = HostConfig::from_vars(vars(&[("KTSTR_RESTORE", "0")])).expect("off");
        assert!(!c.restore);
        assert_eq!(c.initramfs_cache_bytes, ktstr_initramfs::DEFAULT_CAP_BYTES);
        let c =
            HostConfig::from_vars(vars(&[("HOME", "/h"), ("XDG_CACHE_HOME", "/x")])).expect("xdg");
        assert_eq!(c.cache_root, Path::new("/x/ktstr"));
        let c = HostConfig::from_vars(vars(&[
            ("HOME", "/h"),
            ("XDG_CACHE_HOME", "/x"),
            ("KTSTR_CACHE_DIR", "/c"),
        ]))
        .expect("explicit");
        assert_eq!(c.cache_root, Path::new("/c"));
        assert_eq!(c.kernel_cache().dir(), Path::new("/c/kernels"));
    }

    #[test]
    fn every_variable_is_read() {
        let c = HostConfig::from_vars(vars(&[
            ("KTSTR_CACHE_DIR", "/c"),
            ("KTSTR_KERNEL", "/k/vmlinux"),
            ("KTSTR_BACKEND", "qemu"),
            ("KTSTR_QEMU", "/opt/qemu"),
            ("KTSTR_BUSYBOX", "/opt/busybox"),
            ("KTSTR_HOST_CPUS", "8"),
            ("KTSTR_BOOT_TIMEOUT_S", "7"),
            ("KTSTR_VERBOSE", "1"),
            ("KTSTR_RESULTS", "/r.jsonl"),
            ("KTSTR_MONITOR_HZ", "0"),
            ("KTSTR_AUTO_REPRO", "0"),
            ("KTSTR_KERNEL_SUITES", "a, b,"),
            ("KTSTR_RESULTS_DIR", "/store"),
            ("KTSTR_RUN", "run-1"),
            ("KTSTR_SCHEDULER", "/bin/scx"),
            ("KTSTR_SCHED_ARGS", " --slow  --slow-us 10000 "),
            ("KTSTR_KASLR", "1"),
            ("KTSTR_RESTORE", "1"),
            ("KTSTR_SNAPSHOT_CACHE_MIB", "100"),
            ("KTSTR_INITRAMFS_CACHE_MIB", "512"),
        ]))
        .expect("config");
        assert!(c.kaslr);
        assert!(c.restore);
        assert_eq!(c.snapshot_cache_mib, 100);
        assert_eq!(c.initramfs_cache_bytes, 512 << 20);
        assert_eq!(
            c.kernel,
            Some(ktstr_kernel::KernelSpec::Path("/k/vmlinux".into()))
        );
        assert_eq!(c.backend, BackendChoice::Qemu);
        assert_eq!(c.qemu.as_deref(), Some(Path::new("/opt/qemu")));
        assert_eq!(c.busybox, Path::new("/opt/busybox"));
        assert_eq!(c.host_cpus, 8);
        assert_eq!(c.boot_timeout, Duration::from_secs(7));
        assert!(c.verbose);
        assert_eq!(c.results.as_deref(), Some(Path::new("/r.jsonl")));
        assert_eq!(c.monitor_hz, 0);
        assert_eq!(c.results_dir.as_deref(), Some(Path::new("/store")));
        assert_eq!(c.run_id.as_deref(), Some("run-1"));
        assert_eq!(c.scheduler_binary.as_deref(), Some(Path::new("/bin/scx")));
        assert_eq!(c.sched_args, ["--slow", "--slow-us", "10000"]);
        assert!(!c.auto_repro);
        assert_eq!(
            c.kernel_suites,
            Some(vec!["a".to_string(), "b".to_string()])
        );
    }

    #[test]
    fn bad_values_name_the_variable_and_the_fix() {
        let e = HostConfig::from_vars(vars(&[("KTSTR_HOST_CPUS", "many")])).expect_err("cpus");
        assert_eq!(e.var, "KTSTR_HOST_CPUS");
        assert!(e.to_string().contains("whole number"), "{e}");
        let e = HostConfig::from_vars(vars(&[("KTSTR_BACKEND", "xen")])).expect_err("backend");
        assert!(e.to_string().contains("KTSTR_BACKEND=\"xen\""), "{e}");
        let e = HostConfig::from_vars(vars(&[("KTSTR_BOOT_TIMEOUT_S", "0")])).expect_err("zero");
        assert_eq!(e.var, "KTSTR_BOOT_TIMEOUT_S");
        let e = HostConfig::from_vars(vars(&[("KTSTR_RUN", "../x")])).expect_err("run");
        assert_eq!(e.var, "KTSTR_RUN");
        assert!(e.to_string().contains("names a directory"), "{e}");
        let e = HostConfig::from_vars(vars(&[("KTSTR_KASLR", "yes")])).expect_err("kaslr");
        assert_eq!(e.var, "KTSTR_KASLR");
        assert!(e.to_string().contains("bzImage"), "{e}");
        let e = HostConfig::from_vars(vars(&[("KTSTR_RESTORE", "yes")])).expect_err("restore");
        assert_eq!(e.var, "KTSTR_RESTORE");
        assert!(e.to_string().contains("snapshot"), "{e}");
        let e = HostConfig::from_vars(vars(&[("KTSTR_KERNEL", "7.3..7.0")])).expect_err("range");
        assert_eq!(e.var, "KTSTR_KERNEL");
        assert!(e.to_string().contains("(7.0..7.3)"), "{e}");
    }

    #[test]
    fn kernel_versions_are_specs() {
        let c = HostConfig::from_vars(vars(&[("KTSTR_KERNEL", "7.0")])).expect("7.0");
        assert_eq!(
            c.kernel,
            Some(ktstr_kernel::KernelSpec::Version(
                ktstr_kernel::VersionReq::Line(7, 0)
            ))
        );
        assert_eq!(c.kernel_cache_mib, DEFAULT_KERNEL_CACHE_MIB);
    }
}
