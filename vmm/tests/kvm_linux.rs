//! Linux on the KVM backend: smoke (boot to init and power off), steady (the
//! guest keeps time while the host pauses, resumes and reads registers) and
//! topology conformance (what Linux reports in sysfs is the declared topology)
//! on three shapes, with the kernel `cargo xtask kernel fetch` caches.
//!
//! Linux needs hardware virtualization: on a host without it `/dev/kvm` can be
//! a software hypervisor on which the kernel does not leave early boot in ten
//! minutes. The build script sets `ktstr_hw_virt` from /proc/cpuinfo, and
//! without it these tests are marked ignored *with the reason*, so the summary
//! counts them as not run (never as passed). `KTSTR_ASSUME_HW_VIRT=1` at build
//! time forces them in.
//!
//! The guest's `/init` is `tiny-guest/linux-init.c`, built by the build script;
//! the initramfs (newc cpio) is written here.
#![cfg(target_arch = "x86_64")]

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ktstr_topology::Topology;
use ktstr_vmm::{Backend, EndReason, KvmBackend, Machine, VmSpec};

/// The kernel: `$KTSTR_KERNEL`, else the first cached `vmlinux`.
fn kernel() -> PathBuf {
    if let Some(k) = std::env::var_os("KTSTR_KERNEL") {
        return k.into();
    }
    let cache = std::env::var_os("KTSTR_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/ktstr")))
        .expect("KTSTR_CACHE_DIR or HOME");
    let kernels = cache.join("kernels");
    std::fs::read_dir(&kernels)
        .unwrap_or_else(|e| panic!("{}: {e}; run `cargo xtask kernel fetch`", kernels.display()))
        .filter_map(Result::ok)
        .map(|d| d.path().join("vmlinux"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "no vmlinux under {}; run `cargo xtask kernel fetch`",
                kernels.display()
            )
        })
}

/// A newc cpio entry (Documentation/driver-api/early-userspace/buffer-format.rst).
fn cpio_entry(out: &mut Vec<u8>, ino: u32, name: &str, mode: u32, data: &[u8]) {
    let fields = [
        ino,
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
    out.extend_from_slice(b"070701");
    for f in fields {
        out.extend_from_slice(format!("{f:08x}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
    out.extend_from_slice(data);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// An initramfs with `/init` and the mount points it uses.
fn initramfs(dir: &std::path::Path) -> PathBuf {
    #[cfg(ktstr_tiny_guest)]
    let init =
        std::fs::read(concat!(env!("OUT_DIR"), "/ktstr-linux-init")).expect("the built /init");
    #[cfg(not(ktstr_tiny_guest))]
    let init: Vec<u8> =
        panic!("the Linux test /init was not built: see the build script's warning");
    let mut cpio = Vec::new();
    for (i, d) in ["dev", "sys", "proc"].iter().enumerate() {
        cpio_entry(&mut cpio, i as u32 + 1, d, 0o040_755, &[]);
    }
    cpio_entry(&mut cpio, 10, "init", 0o100_755, &init);
    cpio_entry(&mut cpio, 0, "TRAILER!!!", 0, &[]);
    let path = dir.join("initramfs.cpio");
    std::fs::write(&path, cpio).expect("write initramfs");
    path
}

struct Booted {
    vm: Box<dyn Machine>,
    console: ktstr_vmm::Console,
    _dir: tempfile::TempDir,
}

fn boot(backend: &dyn Backend, topo: &str, extra: &str) -> Booted {
    let topology: Topology = topo.parse().expect("topology");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut spec = VmSpec::new(kernel(), topology);
    spec.initrd = Some(initramfs(dir.path()));
    spec.cmdline.push_str(" rdinit=/init");
    spec.cmdline.push_str(extra);
    let mut vm = backend.boot(&spec).expect("boot Linux");
    let console = vm.take_console().expect("console");
    Booted {
        vm,
        console,
        _dir: dir,
    }
}

/// Console lines until `KTSTR-DONE`, then the end of the VM.
fn finish(b: &mut Booted, budget: Duration) -> (Vec<String>, EndReason) {
    let deadline = Instant::now() + budget;
    let mut lines = Vec::new();
    while let Some(l) = b
        .console
        .next_line(deadline.saturating_duration_since(Instant::now()))
    {
        let done = l.contains("KTSTR-DONE");
        lines.push(l);
        if done {
            break;
        }
    }
    let end =
        b.vm.wait(Some(deadline.max(Instant::now() + Duration::from_secs(10))))
            .expect("wait");
    (lines, end)
}

fn kv(line: &str) -> BTreeMap<String, String> {
    line.split_whitespace()
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Linux's sysfs view of every CPU and node equals the declared topology.
fn conformance(backend: &dyn Backend, topo: &str) {
    let topology: Topology = topo.parse().expect("topology");
    let mut b = boot(backend, topo, "");
    let (lines, end) = finish(&mut b, Duration::from_secs(120));
    assert_eq!(end, EndReason::PowerOff, "{topo}: {}", lines.join("\n"));
    let cpus: Vec<_> = lines
        .iter()
        .filter(|l| l.contains("KTSTR-CPU "))
        .map(|l| kv(l))
        .collect();
    assert_eq!(
        cpus.len(),
        topology.nr_cpus() as usize,
        "{topo}: {}",
        lines.join("\n")
    );
    // The one conformance check, on the view the tiny init printed.
    let mut view = ktstr_topology::SysfsView::default();
    for (i, c) in cpus.iter().enumerate() {
        let num = |k: &str| c.get(k).and_then(|v| v.parse().ok());
        view.cpus.insert(
            i as u32,
            ktstr_topology::SysfsCpu {
                package: num("package"),
                die: num("die"),
                core: num("core"),
                thread_siblings: c.get("smt").cloned(),
                l3_shared: c.get("llc").cloned(),
            },
        );
    }
    let nodes: Vec<_> = lines
        .iter()
        .filter(|l| l.contains("KTSTR-NODE "))
        .map(|l| kv(l))
        .collect();
    for (n, node) in nodes.iter().enumerate() {
        view.nodes.insert(
            n as u32,
            ktstr_topology::SysfsNode {
                cpus: node.get("cpus").cloned().unwrap_or_default(),
                distances: node
                    .get("distance")
                    .map(|d| d.split(',').filter_map(|x| x.parse().ok()).collect())
                    .unwrap_or_default(),
            },
        );
    }
    let wrong = topology.sysfs_mismatches(&view);
    assert!(wrong.is_empty(), "{topo}:\n{}", wrong.join("\n"));
}

/// The same checks on QEMU (TCG here): proves the /init, the initramfs and the
/// parsing above on every machine, so the ignored KVM tests are not dead code.
#[test]
fn qemu_runs_the_same_linux_checks() {
    let q = ktstr_vmm::Slotted::new(
        ktstr_vmm::QemuBackend::find_in(&std::env::var_os("PATH").unwrap_or_default())
            .expect("QEMU (cargo xtask setup installs it)"),
        common::host_slots(),
    );
    conformance(&q, "2n2l1c2t");
    let mut b = boot(&q, "1n1l2c2t", " ktstr_ticks=20");
    let (lines, end) = finish(&mut b, Duration::from_secs(60));
    assert!(
        lines.iter().any(|l| l.contains("KTSTR-TICK 19")),
        "{}",
        lines.join("\n")
    );
    assert_eq!(end, EndReason::PowerOff);
}

fn kvm() -> KvmBackend {
    KvmBackend::new().unwrap_or_else(|e| panic!("these tests need /dev/kvm: {e}"))
}

/// The 64-bit entry of the bzImage next to the vmlinux.
#[test]
#[cfg_attr(
    not(ktstr_hw_virt),
    ignore = "no hardware virtualization (no vmx/svm in /proc/cpuinfo)"
)]
fn kvm_linux_smoke_bzimage() {
    let bz = kernel().with_file_name("bzImage");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut spec = VmSpec::new(bz, "1n1l2c1t".parse().expect("topology"));
    spec.initrd = Some(initramfs(dir.path()));
    spec.cmdline.push_str(" rdinit=/init");
    let mut vm = kvm().boot(&spec).expect("boot the bzImage");
    let console = vm.take_console().expect("console");
    let mut hello = false;
    while let Some(l) = console.next_line(Duration::from_secs(60)) {
        hello |= l.contains("KTSTR-INIT hello");
    }
    assert!(hello, "the bzImage reached /init");
    assert_eq!(
        vm.wait(Some(Instant::now() + Duration::from_secs(10)))
            .expect("wait"),
        EndReason::PowerOff
    );
}

const NO_HW: &str = "no hardware virtualization (no vmx/svm in /proc/cpuinfo)";

#[test]
#[cfg_attr(
    not(ktstr_hw_virt),
    ignore = "no hardware virtualization (no vmx/svm in /proc/cpuinfo)"
)]
fn kvm_linux_smoke() {
    let t = Instant::now();
    let mut b = boot(&kvm(), "1n1l2c1t", "");
    let (lines, end) = finish(&mut b, Duration::from_secs(60));
    assert!(
        lines.iter().any(|l| l.contains("KTSTR-INIT hello")),
        "{}",
        lines.join("\n")
    );
    assert_eq!(end, EndReason::PowerOff, "{}", lines.join("\n"));
    eprintln!("kvm: Linux to init and power-off in {:?}", t.elapsed());
}

#[test]
#[cfg_attr(
    not(ktstr_hw_virt),
    ignore = "no hardware virtualization (no vmx/svm in /proc/cpuinfo)"
)]
fn kvm_linux_steady_pause_resume() {
    let mut b = boot(&kvm(), "1n1l2c2t", " ktstr_ticks=20");
    let mut ticks = 0;
    while let Some(l) = b.console.next_line(Duration::from_secs(60)) {
        if l.contains("KTSTR-TICK") {
            ticks += 1;
            if ticks == 3 {
                break;
            }
        }
    }
    assert_eq!(ticks, 3, "the guest ticks");
    b.vm.pause().expect("pause");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        b.console.recv(Duration::from_millis(200)),
        ktstr_vmm::ConsoleEvent::Idle,
        "silent while paused"
    );
    b.vm.resume().expect("resume");
    let (lines, end) = finish(&mut b, Duration::from_secs(60));
    assert!(
        lines.iter().any(|l| l.contains("KTSTR-TICK 19")),
        "{}",
        lines.join("\n")
    );
    assert_eq!(end, EndReason::PowerOff);
}

#[test]
#[cfg_attr(
    not(ktstr_hw_virt),
    ignore = "no hardware virtualization (no vmx/svm in /proc/cpuinfo)"
)]
fn kvm_linux_register_reads() {
    let topology: Topology = "1n1l2c1t".parse().expect("topology");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut spec = VmSpec::new(kernel(), topology);
    spec.initrd = Some(initramfs(dir.path()));
    spec.cmdline.push_str(" rdinit=/init ktstr_ticks=50");
    let mut vm = kvm().boot_vm(&spec).expect("boot");
    let console = vm.take_console().expect("console");
    while let Some(l) = console.next_line(Duration::from_secs(60)) {
        if l.contains("KTSTR-TICK 2") {
            break;
        }
    }
    for cpu in 0..2 {
        let r = vm.vcpu_regs(cpu).expect("regs");
        assert_ne!(r.cr3, 0, "cpu {cpu}: paging on");
        // x86-64 Linux keeps the per-CPU base in GS (kernel) or KERNEL_GS_BASE (user).
        let percpu = if r.gs_base >= 0xffff_8000_0000_0000 {
            r.gs_base
        } else {
            r.kernel_gs_base
        };
        assert!(
            percpu >= 0xffff_8000_0000_0000,
            "cpu {cpu}: per-CPU base {r:x?}"
        );
    }
    vm.kill();
}

#[test]
#[cfg_attr(
    not(ktstr_hw_virt),
    ignore = "no hardware virtualization (no vmx/svm in /proc/cpuinfo)"
)]
fn kvm_linux_topology_smt() {
    conformance(&kvm(), "1n1l2c2t");
}

#[test]
#[cfg_attr(
    not(ktstr_hw_virt),
    ignore = "no hardware virtualization (no vmx/svm in /proc/cpuinfo)"
)]
fn kvm_linux_topology_two_llcs_in_a_package() {
    conformance(&kvm(), "1n2l2c1t");
}

#[test]
#[cfg_attr(
    not(ktstr_hw_virt),
    ignore = "no hardware virtualization (no vmx/svm in /proc/cpuinfo)"
)]
fn kvm_linux_topology_two_numa_nodes() {
    conformance(&kvm(), "2n2l1c2t");
}

/// The reason in the `ignore` attributes is the one the backend gives.
#[test]
fn kvm_linux_ignore_reason_matches_the_backend() {
    assert_eq!(NO_HW, ktstr_vmm::NO_HW_VIRT_REASON);
    let hw = ktstr_vmm::hardware_virtualization();
    if let Ok(b) = KvmBackend::new() {
        assert_eq!(b.linux_boot_limitation(), (!hw).then_some(NO_HW));
    }
}
