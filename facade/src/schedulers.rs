//! The host side of schedulers under test: finding their binaries, checking
//! the kernel can run them, and packing them for the guest.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ktstr_initramfs::{Archive, BaseSpec, InitramfsError};
use ktstr_ops::{
    BOOT_SCHED_ARGS, BOOT_SCHEDULER, Scheduler, SchedulerSpec, VerifierOffsets,
    attach_timeout_path, staged_paths,
};

/// Where [`SchedulerSpec::Installed`] binaries live below the cache root.
pub const INSTALLED_DIR: &str = "schedulers/bin";

/// Finds a scheduler's binary on the host: `path` is the `PATH` to search,
/// `cache_root` the ktstr cache (for [`SchedulerSpec::Installed`]).
pub fn resolve(
    s: &Scheduler,
    path: &std::ffi::OsStr,
    cache_root: &Path,
) -> Result<Option<PathBuf>, SchedulerSetupError> {
    match s.binary {
        SchedulerSpec::Eevdf => Ok(None),
        SchedulerSpec::Installed(name) => {
            let p = cache_root.join(INSTALLED_DIR).join(name);
            if p.is_file() {
                Ok(Some(p))
            } else {
                Err(SchedulerSetupError::NotInstalled {
                    name: s.name.into(),
                    path: p,
                })
            }
        }
        SchedulerSpec::Path(p) => {
            let p = archived(Path::new(p));
            if p.is_file() {
                Ok(Some(p))
            } else {
                Err(SchedulerSetupError::MissingPath {
                    name: s.name.into(),
                    path: p,
                })
            }
        }
        SchedulerSpec::Discover(name) => {
            discover(name, path)
                .map(Some)
                .map_err(|looked| SchedulerSetupError::NotFound {
                    name: s.name.into(),
                    binary: name.into(),
                    looked: looked.join(", "),
                })
        }
    }
}

/// The variable `cargo ktstr run --archive` sets to where the archive's copies of
/// declared host paths are (`<root>/<the absolute path>`).
pub const ARCHIVE_ROOT_ENV: &str = "KTSTR_ARCHIVE_ROOT";

/// `p`, or where a ktstr archive unpacked its copy when `p` does not exist here.
fn archived(p: &Path) -> PathBuf {
    if p.exists() || !p.is_absolute() {
        return p.to_path_buf();
    }
    match std::env::var_os(ARCHIVE_ROOT_ENV) {
        Some(root) => {
            let copy = Path::new(&root).join(p.strip_prefix("/").unwrap_or(p));
            if copy.exists() { copy } else { p.to_path_buf() }
        }
        None => p.to_path_buf(),
    }
}

/// `CARGO_BIN_EXE_<name>` (set at run time by nextest), the target directory
/// of the running test binary, then `PATH`. On failure, where it looked.
/// Why a scheduler under test cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SchedulerSetupError {
    /// A declared path does not exist.
    #[error("scheduler {name}: binary {} does not exist", path.display())]
    MissingPath {
        /// The scheduler.
        name: String,
        /// The declared path.
        path: PathBuf,
    },
    /// A binary to discover was not found.
    #[error(
        "scheduler {name}: binary {binary:?} not found; looked in {looked}. Build it (a [[bin]] \
         of the test's package is built by cargo test) or declare SchedulerSpec::Path"
    )]
    NotFound {
        /// The scheduler.
        name: String,
        /// The binary's name.
        binary: String,
        /// Where it was looked for.
        looked: String,
    },
    /// A scheduler to take from the cache is not installed there.
    #[error(
        "scheduler {name}: {} is not installed (or is a dangling link); build the published \
         schedulers into the cache first: `cargo xtask schedulers` in the ktstr repository \
         (or `cargo install --root DIR` and link DIR/bin/<binary> there)",
        path.display()
    )]
    NotInstalled {
        /// The scheduler.
        name: String,
        /// Where it was looked for.
        path: PathBuf,
    },
    /// A declared file of a scheduler is missing on the host.
    #[error(
        "scheduler {name}: its file {} (to pack at {guest}) does not exist; fix the path in its \
         `files`",
        host.display()
    )]
    MissingFile {
        /// The scheduler.
        name: String,
        /// The host path.
        host: PathBuf,
        /// Where it was to go in the guest.
        guest: String,
    },
    /// The kernel's BTF could not be read.
    #[error("kernel {}: cannot read its BTF: {why}", kernel.display())]
    KernelBtf {
        /// The vmlinux.
        kernel: PathBuf,
        /// What failed.
        why: String,
    },
    /// The kernel has no sched_ext.
    #[error(
        "kernel {} has no sched_ext (no struct sched_ext_ops in its BTF): sched_ext schedulers \
         need CONFIG_SCHED_CLASS_EXT=y; run `cargo xtask kernel fetch` or pass a kernel built \
         with it",
        kernel.display()
    )]
    NoSchedExt {
        /// The vmlinux.
        kernel: PathBuf,
    },
    /// The scheduler's files could not be packed.
    #[error("packing scheduler {name}: {why}")]
    Pack {
        /// The scheduler.
        name: String,
        /// What failed.
        why: String,
    },
}

fn discover(name: &str, path: &std::ffi::OsStr) -> Result<PathBuf, Vec<String>> {
    let mut looked = Vec::new();
    let var = format!("CARGO_BIN_EXE_{name}");
    match std::env::var_os(&var) {
        Some(p) if Path::new(&p).is_file() => return Ok(p.into()),
        _ => looked.push(format!("${var}")),
    }
    if let Ok(exe) = std::env::current_exe() {
        // Test binaries live in target/<profile>/deps; bins one level up.
        for dir in exe.ancestors().skip(1).take(2) {
            let cand = dir.join(name);
            if cand.is_file() {
                return Ok(cand);
            }
            looked.push(dir.display().to_string());
        }
    }
    for dir in std::env::split_paths(path) {
        let cand = dir.join(name);
        if cand.is_file() {
            return Ok(cand);
        }
    }
    looked.push("$PATH".into());
    Err(looked)
}

/// Refuses a kernel whose BTF has no `struct sched_ext_ops` (checked once per
/// vmlinux per process).
pub fn check_kernel(vmlinux: &Path) -> Result<Option<VerifierOffsets>, SchedulerSetupError> {
    type Verdicts = Vec<(
        PathBuf,
        Result<Option<VerifierOffsets>, SchedulerSetupError>,
    )>;
    static CHECKED: OnceLock<Mutex<Verdicts>> = OnceLock::new();
    let cache = CHECKED.get_or_init(|| Mutex::new(Vec::new()));
    let mut seen = cache.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, r)) = seen.iter().find(|(p, _)| p == vmlinux) {
        return r.clone();
    }
    let r = std::fs::read(vmlinux)
        .map_err(|e| SchedulerSetupError::KernelBtf {
            kernel: vmlinux.into(),
            why: e.to_string(),
        })
        .and_then(|elf| check_btf_has_sched_ext(&elf, vmlinux));
    seen.push((vmlinux.to_path_buf(), r.clone()));
    r
}

/// The pure part of [`check_kernel`], over the ELF bytes: an error when the kernel has no
/// sched_ext, else where its verifier keeps each program's figures (`None` where its BTF
/// does not say: the guest then reads no states).
pub fn check_btf_has_sched_ext(
    elf: &[u8],
    what: &Path,
) -> Result<Option<VerifierOffsets>, SchedulerSetupError> {
    let bad = |why: String| SchedulerSetupError::KernelBtf {
        kernel: what.into(),
        why,
    };
    let section = ktstr_btf::elf::btf_section(elf).map_err(|e| bad(e.to_string()))?;
    let btf = ktstr_btf::Btf::parse(section).map_err(|e| bad(format!("corrupt BTF: {e}")))?;
    if btf
        .find_kind("sched_ext_ops", ktstr_btf::Kind::Struct)
        .is_none()
    {
        return Err(SchedulerSetupError::NoSchedExt {
            kernel: what.into(),
        });
    }
    Ok(verifier_offsets(&btf))
}

/// Where `bpf_vlog_finalize(&env->log, ...)` finds the verifier's figures of a program
/// (see `ktstr_ops::VerifierOffsets`), from the kernel's BTF.
pub fn verifier_offsets(btf: &ktstr_btf::Btf) -> Option<VerifierOffsets> {
    btf.find_kind("bpf_vlog_finalize", ktstr_btf::Kind::Func)?;
    let env = |m: &str| {
        btf.member("bpf_verifier_env", m)
            .ok()
            .and_then(|i| i64::try_from(i.byte_offset()).ok())
    };
    let log = env("log")?;
    let off32 = |ty: &str, m: &str| {
        btf.member(ty, m)
            .ok()
            .and_then(|i| u32::try_from(i.byte_offset()).ok())
    };
    Some(VerifierOffsets {
        insn_processed: env("insn_processed")? - log,
        total_states: env("total_states")? - log,
        peak_states: env("peak_states")? - log,
        verification_time: env("verification_time")? - log,
        prog: env("prog")? - log,
        prog_aux: off32("bpf_prog", "aux")?,
        aux_name: off32("bpf_prog_aux", "name")?,
    })
}

fn args_text(s: &Scheduler, extra: &[String]) -> Vec<u8> {
    s.sched_args
        .iter()
        .copied()
        .chain(extra.iter().map(String::as_str))
        .map(|a| format!("{a}\n"))
        .collect::<String>()
        .into_bytes()
}

/// Adds the boot and staged schedulers to the base archive (binaries with
/// their libraries) and their arguments to the per-test overlay; `extra`
/// follows the boot scheduler's declared arguments.
pub fn pack(
    boot: Option<(&Scheduler, PathBuf)>,
    extra: &[String],
    staged: &[(&Scheduler, PathBuf)],
    mut base: BaseSpec,
    overlay: &mut Archive,
) -> Result<BaseSpec, SchedulerSetupError> {
    let packing = |s: &Scheduler| {
        let name = s.name.to_string();
        move |e: InitramfsError| SchedulerSetupError::Pack {
            name,
            why: e.to_string(),
        }
    };
    if let Some((s, bin)) = boot {
        base = base.binary(bin, BOOT_SCHEDULER);
        overlay
            .add_bytes(BOOT_SCHED_ARGS, 0o644, args_text(s, extra))
            .map_err(packing(s))?;
        pack_attach_timeout(s, Path::new(BOOT_SCHED_ARGS), overlay)?;
        pack_files(s, overlay)?;
    }
    for (s, bin) in staged {
        let (guest_bin, guest_args, _) = staged_paths(s.name);
        base = base.binary(bin.clone(), &guest_bin.to_string_lossy());
        overlay
            .add_bytes(&guest_args.to_string_lossy(), 0o644, args_text(s, &[]))
            .map_err(packing(s))?;
        pack_attach_timeout(s, &guest_args, overlay)?;
        pack_files(s, overlay)?;
    }
    Ok(base)
}

/// Writes a declared attach timeout next to the scheduler's arguments.
fn pack_attach_timeout(
    s: &Scheduler,
    args: &Path,
    overlay: &mut Archive,
) -> Result<(), SchedulerSetupError> {
    if s.attach_timeout_s == 0 {
        return Ok(());
    }
    overlay
        .add_bytes(
            &attach_timeout_path(args).to_string_lossy(),
            0o644,
            format!("{}\n", s.attach_timeout_s).into_bytes(),
        )
        .map_err(|e| SchedulerSetupError::Pack {
            name: s.name.into(),
            why: e.to_string(),
        })
}

/// Adds a scheduler's declared files to the overlay (a file shared by two
/// schedulers of one test, such as a scheduler staged as its own restart, is
/// packed once).
fn pack_files(s: &Scheduler, overlay: &mut Archive) -> Result<(), SchedulerSetupError> {
    for (host, guest) in s.files {
        let host_path = &archived(Path::new(host));
        if !host_path.is_file() {
            return Err(SchedulerSetupError::MissingFile {
                name: s.name.into(),
                host: host_path.into(),
                guest: (*guest).into(),
            });
        }
        if !guest.starts_with('/') {
            return Err(SchedulerSetupError::Pack {
                name: s.name.into(),
                why: format!("guest path {guest:?} of {host} is not absolute"),
            });
        }
        if overlay.contains(guest) {
            continue;
        }
        let mode = if is_executable(host_path) {
            0o755
        } else {
            0o644
        };
        overlay
            .add_file(guest, mode, host_path)
            .map_err(|e| SchedulerSetupError::Pack {
                name: s.name.into(),
                why: e.to_string(),
            })?;
    }
    Ok(())
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binaries_say_where_they_looked() {
        let s = Scheduler::named("x").binary(SchedulerSpec::Discover("no-such-scheduler-binary"));
        let err = resolve(&s, "/usr/bin".as_ref(), Path::new("/nonexistent"))
            .expect_err("missing")
            .to_string();
        assert!(
            err.contains("no-such-scheduler-binary") && err.contains("$PATH"),
            "{err}"
        );
        let s = Scheduler::named("y").binary(SchedulerSpec::Path("/no/such/path"));
        let none = Path::new("/nonexistent");
        let err = resolve(&s, "".as_ref(), none)
            .expect_err("missing")
            .to_string();
        assert!(err.contains("/no/such/path"), "{err}");
        assert_eq!(resolve(&Scheduler::named("z"), "".as_ref(), none), Ok(None));
    }

    #[test]
    fn installed_schedulers_come_from_the_cache_or_say_how_to_build_them() {
        let cache = tempfile::tempdir().expect("tempdir");
        let s = Scheduler::named("b").binary(SchedulerSpec::Installed("scx_thing"));
        let err = resolve(&s, "".as_ref(), cache.path())
            .expect_err("not installed")
            .to_string();
        assert!(
            err.contains("cargo xtask schedulers") && err.contains("schedulers/bin/scx_thing"),
            "{err}"
        );
        let bin = cache.path().join(INSTALLED_DIR);
        std::fs::create_dir_all(&bin).expect("mkdir");
        std::fs::write(bin.join("scx_thing"), b"elf").expect("write");
        assert_eq!(
            resolve(&s, "".as_ref(), cache.path()),
            Ok(Some(bin.join("scx_thing")))
        );
    }

    #[test]
    fn declared_files_are_packed_once_or_refused_by_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = dir.path().join("sched.json");
        std::fs::write(&cfg, b"{}").expect("write");
        let host: &'static str = Box::leak(cfg.to_string_lossy().into_owned().into_boxed_str());
        let files: &'static [(&'static str, &'static str)] =
            Box::leak(vec![(host, "/etc/sched.json")].into_boxed_slice());
        let s = Scheduler::named("a").files(files);
        let mut overlay = Archive::new();
        pack_files(&s, &mut overlay).expect("packed");
        pack_files(&s, &mut overlay).expect("a second scheduler with the same file");
        assert!(overlay.contains("/etc/sched.json"));
        let missing = Scheduler::named("m").files(&[("/no/such/cfg", "/etc/x")]);
        let err = pack_files(&missing, &mut overlay)
            .expect_err("missing")
            .to_string();
        assert!(
            err.contains("/no/such/cfg") && err.contains("files"),
            "{err}"
        );
        let relative = Scheduler::named("r").files(files_relative());
        assert!(pack_files(&relative, &mut Archive::new()).is_err());
    }

    fn files_relative() -> &'static [(&'static str, &'static str)] {
        &[("/bin/sh", "etc/relative")]
    }

    #[test]
    fn a_kernel_without_sched_ext_is_refused() {
        // A crafted BTF with an int and a struct that is not sched_ext_ops.
        let mut b = ktstr_btf::BtfBuilder::new();
        let int = b.int("int", 4, true);
        b.struct_type("rq", 4, &[("nr_running", int, 0, 0)]);
        let btf = b.finish();
        let elf = elf_with_btf(&btf);
        let err = check_btf_has_sched_ext(&elf, Path::new("crafted"))
            .expect_err("refused")
            .to_string();
        assert!(
            err.contains("no sched_ext") && err.contains("CONFIG_SCHED_CLASS_EXT"),
            "{err}"
        );
        let mut b = ktstr_btf::BtfBuilder::new();
        let int = b.int("int", 4, true);
        b.struct_type("sched_ext_ops", 4, &[("flags", int, 0, 0)]);
        // sched_ext but none of the verifier's types: checked, and no offsets.
        assert_eq!(
            check_btf_has_sched_ext(&elf_with_btf(&b.finish()), Path::new("ok")).ok(),
            Some(None)
        );
        let err = check_btf_has_sched_ext(b"not an elf", Path::new("junk"))
            .expect_err("junk")
            .to_string();
        assert!(err.contains("cannot read its BTF"), "{err}");
    }

    #[test]
    fn verifier_offsets_are_relative_to_the_log_the_probe_receives() {
        let mut b = ktstr_btf::BtfBuilder::new();
        let u32t = b.int("u32", 4, false);
        let u64t = b.int("u64", 8, false);
        let ch = b.int("char", 1, true);
        let name = b.array(ch, u32t, 16);
        let aux = b.struct_type("bpf_prog_aux", 32, &[("name", name, 8 * 16, 0)]);
        let aux_ptr = b.ptr(aux);
        let prog = b.struct_type("bpf_prog", 16, &[("aux", aux_ptr, 8 * 8, 0)]);
        let prog_ptr = b.ptr(prog);
        let log = b.struct_type("bpf_verifier_log", 8, &[("level", u32t, 0, 0)]);
        let members = [
            ("prog", prog_ptr, 8 * 8),
            ("log", log, 8 * 100),
            ("insn_processed", u32t, 8 * 1000),
            ("verification_time", u64t, 8 * 1008),
            ("total_states", u32t, 8 * 1016),
            ("peak_states", u32t, 8 * 1020),
        ]
        .map(|(n, t, o)| (n, t, o, 0));
        b.struct_type("bpf_verifier_env", 1024, &members);
        let proto = b.func_proto(u32t, &[]);
        let btf_bytes = b.finish();
        // Without the probed function, no offsets: the guest reads no states.
        let btf = ktstr_btf::Btf::parse(&btf_bytes).expect("BTF");
        assert_eq!(verifier_offsets(&btf), None);
        b.func("bpf_vlog_finalize", proto, 1);
        let btf_bytes = b.finish();
        let btf = ktstr_btf::Btf::parse(&btf_bytes).expect("BTF");
        assert_eq!(
            verifier_offsets(&btf),
            Some(VerifierOffsets {
                insn_processed: 900,
                total_states: 916,
                peak_states: 920,
                verification_time: 908,
                prog: -92,
                prog_aux: 8,
                aux_name: 16,
            })
        );
    }

    fn elf_with_btf(btf: &[u8]) -> Vec<u8> {
        use object::write;
        let mut obj = write::Object::new(
            object::BinaryFormat::Elf,
            object::Architecture::X86_64,
            object::Endianness::Little,
        );
        let s = obj.add_section(vec![], b".BTF".to_vec(), object::SectionKind::Metadata);
        obj.append_section_data(s, btf, 4);
        obj.write().expect("ELF")
    }
}
