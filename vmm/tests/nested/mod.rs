//! Running a test binary inside an L1 guest that has hardware virtualization,
//! on hosts that have none: how the own KVM VMM boots real Linux here.
//!
//! QEMU's TCG emulates AMD SVM with nested paging (`-cpu EPYC,+svm,+npt`):
//! the L1 guest (the cached kernel, one vCPU, 3 GiB unless a run asks more) loads `irqbypass.ko`,
//! `kvm.ko` and `kvm-amd.ko` (kept beside the kernel by `cargo xtask kernel
//! fetch`) and gets a working `/dev/kvm` with `svm` in its CPU flags. Its
//! root is a cpio of busybox, the test binary with its shared libraries, the
//! kernel (which the binary boots as L2 on the own VMM) and the modules; its
//! `/init` runs the binary once and powers off. The console comes back line by
//! line; what the lines mean is the caller's business.
//!
//! One L1 vCPU, because that is the sound configuration of the emulation: with
//! two, QEMU's SVM emulation loses an L2's view of its memory now and then (1
//! in 44 small L2 boots on a multi-threaded TCG L1; every boot, 6 of 6, when
//! the two run on one TCG thread), and with one, 120 L2 boots of 2 to 8 vCPUs
//! ran clean (vmm/README.md). The L2's vCPUs still run as threads of the own
//! VMM, time-shared on the L1's CPU. `KTSTR_L1_CPUS=2` gives the L1 two vCPUs
//! again, to reproduce the fault.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use ktstr_vmm::{Backend, EndReason, QemuBackend, VmSpec};

/// The KVM modules the L1 loads, in dependency order.
pub const KVM_MODULES: [&str; 3] = ["irqbypass", "kvm", "kvm-amd"];

/// Prefix of the L1 init's own lines.
pub const L1_PREFIX: &str = "KTSTR-L1 ";

/// What to run in the L1.
pub struct L1Run<'a> {
    /// The cached kernel's directory: `vmlinux`, `bzImage`, `modules/*.ko`.
    pub kernel_dir: &'a Path,
    /// Host executables packed into the L1, with their shared libraries:
    /// (host path, path in the L1).
    pub files: Vec<(PathBuf, String)>,
    /// Shell lines the L1's `/init` runs (in `/tmp`, with `KTSTR_KERNEL` set
    /// to the kernel's directory: `vmlinux`, `bzImage`, `config`).
    pub script: String,
    /// Kill the L1 this long after it booted (after its wait for host slots).
    pub timeout: Duration,
    /// Run the L1's vCPUs on one host thread (one host slot) instead of one
    /// thread each.
    pub single_thread: bool,
    /// Parameters for `kvm-amd.ko` (e.g. `npt=0`), empty for its defaults.
    pub kvm_amd_params: String,
    /// The L1's memory, which also holds its root (a RAM disk): the test
    /// binaries, and what they build and cache there.
    pub memory_mib: u32,
}

/// The L1's memory unless a run needs more room.
pub const L1_MEMORY_MIB: u32 = 3072;

/// How the L1 went: every console line, and how it ended.
pub struct L1Outcome {
    pub lines: Vec<String>,
    pub end: EndReason,
    pub wall: Duration,
    /// Of `wall`, the time spent waiting for host slots before the L1 booted.
    pub slot_wait: Duration,
}

/// A newc cpio writer (Documentation/driver-api/early-userspace/buffer-format.rst).
#[derive(Default)]
struct Cpio {
    bytes: Vec<u8>,
    ino: u32,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.ino += 1;
        let fields = [
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            data.len() as u32,
            0,
            0,
            0,
            0,
            name.len() as u32 + 1,
            0,
        ];
        self.bytes.extend_from_slice(b"070701");
        for f in fields {
            self.bytes.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.bytes.extend_from_slice(name.as_bytes());
        self.bytes.push(0);
        self.pad();
        self.bytes.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.bytes.len().is_multiple_of(4) {
            self.bytes.push(0);
        }
    }

    /// Directories on the way to `path` (absolute), each once.
    fn parents(&mut self, path: &str, seen: &mut Vec<String>) {
        let mut at = String::new();
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        for part in &parts[..parts.len().saturating_sub(1)] {
            if !at.is_empty() {
                at.push('/');
            }
            at.push_str(part);
            if !seen.contains(&at) {
                seen.push(at.clone());
                self.entry(&at, 0o040_755, &[]);
            }
        }
    }

    fn file(&mut self, path: &str, mode: u32, data: &[u8], seen: &mut Vec<String>) {
        self.parents(path, seen);
        self.entry(path.trim_start_matches('/'), mode, data);
    }

    fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[]);
        self.bytes
    }
}

/// The shared libraries `binary` loads, and its interpreter, as `ldd` lists them.
fn shared_libraries(binary: &Path) -> Vec<PathBuf> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .unwrap_or_else(|e| panic!("cannot run ldd on {}: {e}", binary.display()));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = l.split("=> ").nth(1).unwrap_or(l);
            let path = path.split(" (").next()?.trim();
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// `s` as one single-quoted shell word.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The L1's `/init`.
fn init_script(script: &str, kvm_amd_params: &str) -> String {
    format!(
        r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin HOME=/root TMPDIR=/tmp KTSTR_KERNEL=/kernel
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
for m in {modules}; do
  args=; [ $m = kvm-amd ] && args="{kvm_amd_params}"
  insmod /mod/$m.ko $args || echo "{p}insmod $m failed"
done
echo "{p}ready kvm=$(test -c /dev/kvm && echo yes || echo no) svm=$(grep -c -w svm /proc/cpuinfo) cpus=$(nproc)"
cd /tmp
{script}
echo "{p}rc=$?"
dmesg | grep -i kvm | sed 's/^/{p}dmesg /'
poweroff -f
"#,
        modules = KVM_MODULES.join(" "),
        p = L1_PREFIX,
        kvm_amd_params = kvm_amd_params.replace(['"', '\\', '$', '`'], ""),
    )
}

/// Writes the L1's root into `dir`; returns the cpio's path.
fn l1_root(run: &L1Run<'_>, dir: &Path) -> PathBuf {
    let mut cpio = Cpio::default();
    let mut seen = Vec::new();
    for d in ["dev", "proc", "sys", "tmp", "root", "bin", "mod", "kernel"] {
        cpio.entry(d, 0o040_755, &[]);
        seen.push(d.to_string());
    }
    cpio.file(
        "/bin/busybox",
        0o100_755,
        &read(Path::new("/bin/busybox")),
        &mut seen,
    );
    cpio.file(
        "/init",
        0o100_755,
        init_script(&run.script, &run.kvm_amd_params).as_bytes(),
        &mut seen,
    );
    let mut libs: Vec<PathBuf> = Vec::new();
    for (host, guest) in &run.files {
        cpio.file(guest, 0o100_755, &read(host), &mut seen);
        for lib in shared_libraries(host) {
            if !libs.contains(&lib) {
                libs.push(lib);
            }
        }
    }
    for lib in libs {
        let name = lib.to_string_lossy().into_owned();
        cpio.file(&name, 0o100_755, &read(&lib), &mut seen);
    }
    for k in ["vmlinux", "bzImage"] {
        let p = run.kernel_dir.join(k);
        cpio.file(&format!("/kernel/{k}"), 0o100_644, &read(&p), &mut seen);
    }
    // The kernel's config and metadata, when cached: tests in the L1 give the
    // guest its /boot/config (schedulers with __kconfig externs read it).
    for k in ["config", "metadata.json"] {
        let p = run.kernel_dir.join(k);
        if p.is_file() {
            cpio.file(&format!("/kernel/{k}"), 0o100_644, &read(&p), &mut seen);
        }
    }
    for m in KVM_MODULES {
        let p = run.kernel_dir.join("modules").join(format!("{m}.ko"));
        if !p.is_file() {
            panic!(
                "{} is missing: `cargo xtask kernel fetch` keeps the KVM modules beside the kernel",
                p.display()
            );
        }
        cpio.file(&format!("/mod/{m}.ko"), 0o100_644, &read(&p), &mut seen);
    }
    let path = dir.join("l1.cpio");
    std::fs::write(&path, cpio.finish()).expect("write the L1 root");
    path
}

/// [`run_in_l1`], echoing the L1's console to stderr and saying how it ended.
pub fn run_in_l1_logged(run: &L1Run<'_>) -> L1Outcome {
    let out = run_in_l1(run, |l| eprintln!("L1: {l}"));
    eprintln!(
        "L1 ended: {} after {:.1} s ({:.1} s of it waiting for host slots)",
        out.end,
        out.wall.as_secs_f64(),
        out.slot_wait.as_secs_f64()
    );
    out
}

/// Boots the L1, runs the binary in it, and returns its console.
pub fn run_in_l1(run: &L1Run<'_>, mut on_line: impl FnMut(&str)) -> L1Outcome {
    let start = Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let initrd = l1_root(run, dir.path());
    // KTSTR_L1_CPUS: the L1's vCPUs (one unless set: see the module's
    // documentation for why).
    let l1_cpus = match std::env::var("KTSTR_L1_CPUS") {
        Err(_) => 1,
        Ok(n) => n
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=8).contains(n))
            .unwrap_or_else(|| panic!("KTSTR_L1_CPUS={n:?}: a number of vCPUs from 1 to 8")),
    };
    let topology = format!("1n1l{l1_cpus}c1t")
        .parse::<ktstr_topology::Topology>()
        .expect("topology")
        .with_memory_mib(u64::from(run.memory_mib))
        .expect("memory");
    let mut spec = VmSpec::new(run.kernel_dir.join("vmlinux"), topology);
    spec.initrd = Some(initrd);
    spec.cmdline.push_str(" rdinit=/init");
    spec.name = "ktstr-nested-l1".into();
    if run.single_thread {
        spec.tcg = ktstr_vmm::TcgMode::Single;
    }
    // KTSTR_L1_QEMU: another QEMU as the L1's hypervisor (`cargo xtask setup
    // --nested-qemu` makes QEMU 11.1 in a private trixie root).
    let qemu = match std::env::var_os("KTSTR_L1_QEMU") {
        Some(path) => QemuBackend::new(std::path::PathBuf::from(&path)).unwrap_or_else(|e| {
            panic!(
                "KTSTR_L1_QEMU={}: {e} (cargo xtask setup --nested-qemu makes one)",
                path.display()
            )
        }),
        None => QemuBackend::find_in(&std::env::var_os("PATH").unwrap_or_default())
            .expect("QEMU (cargo xtask setup installs it)"),
    }
    .with_accel(ktstr_vmm::qemu::Accel::Tcg)
    .with_nested_svm(true);
    // The L1 keeps its vCPU threads busy: it takes host slots for them.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let qemu = ktstr_vmm::Slotted::new(
        qemu,
        ktstr_vmm::HostSlots::new(ktstr_vmm::HostSlots::default_dir(), cores),
    );
    let mut vm = qemu.boot(&spec).expect("boot the L1");
    let console = vm.take_console().expect("console");
    // The timeout counts from the boot: the wait for host slots (minutes on
    // a busy host) is not the L1's time.
    let deadline = Instant::now() + run.timeout;
    let mut lines = Vec::new();
    while let Some(l) = console.next_line(deadline.saturating_duration_since(Instant::now())) {
        on_line(&l);
        lines.push(l);
    }
    let end = vm
        .wait(Some(deadline.max(Instant::now() + Duration::from_secs(5))))
        .expect("wait for the L1");
    L1Outcome {
        lines,
        end,
        wall: start.elapsed(),
        slot_wait: vm.slot_wait(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_loads_the_modules_then_runs_the_script() {
        let s = init_script("/test --exact x", "npt=0");
        let insmod = s.find("insmod /mod/$m.ko $args").expect("insmod");
        let run = s.find("\n/test --exact x\n").expect("the script");
        assert!(insmod < run && s.contains("KTSTR_KERNEL=/kernel\n"), "{s}");
        assert!(s.contains(r#"args="npt=0""#), "{s}");
    }
}
