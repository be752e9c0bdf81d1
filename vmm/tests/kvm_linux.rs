//! Linux on the KVM backend: smoke (vmlinux and bzImage), steady (the guest
//! keeps time while the host pauses, resumes and reads registers), register
//! reads, topology conformance (what Linux reports in sysfs is the declared
//! topology) on six shapes, the console's integrity, and how a guest panic
//! and a guest reboot are reported — with the kernel `cargo xtask kernel
//! fetch` caches.
//!
//! Linux needs hardware virtualization. Two test entries decide at run time
//! where their set runs: directly on a host with vmx/svm; elsewhere inside one
//! L1 guest that QEMU's TCG gives an emulated AMD SVM (see `nested/`), where
//! this same binary runs the set on the own VMM. `kvm_linux_on_the_own_vmm`
//! runs the boots, register reads, pause/resume and three small topology
//! shapes, in the default suite (about a minute in a one-vCPU L1);
//! `kvm_linux_more_on_the_own_vmm` the rest, under `--full` (its 6- and
//! 8-vCPU shapes and console soak, about a minute more in the L1).
//! Either prints one line per check naming the backend that ran it, and fails
//! if any check failed, did not run, or ran on anything but the own KVM VMM.
//! A binary built on one host runs correctly on another: nothing is decided
//! at build time. `kvm_linux_boot_stress` boots shapes again and again and
//! dumps every boot that stalls or does not power off (`linux_stress/`).
//!
//! The guest's `/init` is `tiny-guest/linux-init.c`, built by the ktstr-tiny-guest build script
//! and embedded here; the initramfs (newc cpio) is written here.
#![cfg(target_arch = "x86_64")]

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use ktstr_topology::Topology;
use ktstr_vmm::{Backend, EndReason, KvmBackend, Machine, VmSpec};

mod linux_bench;
mod linux_stress;
mod nested;

use common::kernel;

/// An initramfs with `/init` and the mount points it uses.
fn initramfs(dir: &std::path::Path) -> PathBuf {
    // Embedded, so the binary also runs where its build directory is not (the L1).
    let init =
        ktstr_tiny_guest::linux_init().unwrap_or_else(|e| panic!("the Linux tests' /init: {e}"));
    let mut cpio = Vec::new();
    for (i, d) in ["dev", "sys", "proc"].iter().enumerate() {
        common::cpio_entry(&mut cpio, i as u32 + 1, d, 0o040_755, &[]);
    }
    common::cpio_entry(&mut cpio, 10, "init", 0o100_755, init);
    common::cpio_entry(&mut cpio, 0, "TRAILER!!!", 0, &[]);
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
/// parsing above against an independent VMM, so a failure on the own VMM is
/// the own VMM's.
#[test]
fn qemu_runs_the_same_linux_checks() {
    let q = ktstr_vmm::Slotted::new(
        ktstr_vmm::QemuBackend::find_in(&std::env::var_os("PATH").unwrap_or_default())
            .expect("QEMU (cargo xtask setup installs it)"),
        common::host_slots(),
    );
    conformance(&q, "2n2l1c2t");
    console_lines_intact(&q);
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

fn kvm_linux_topology_1n2l1c2t() {
    conformance(&kvm(), "1n2l1c2t");
}

fn kvm_linux_topology_2n2l1c1t() {
    conformance(&kvm(), "2n2l1c1t");
}

fn kvm_linux_topology_1n3l1c1t() {
    conformance(&kvm(), "1n3l1c1t");
}

fn kvm_linux_topology_1n2l2c2t() {
    conformance(&kvm(), "1n2l2c2t");
}

fn kvm_linux_topology_2n4l2c1t() {
    conformance(&kvm(), "2n4l2c1t");
}

fn kvm_linux_topology_1n3l2c1t() {
    conformance(&kvm(), "1n3l2c1t");
}

/// The line the /init writes as line `n` of `ktstr_lines` (linux-init.c).
fn expected_line(n: u64) -> String {
    format!(
        "KTSTR-LINE {n} abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ-{}",
        n * 7919 % 10007
    )
}

/// Every line userland wrote arrives, whole and in order.
fn console_lines_intact(backend: &dyn Backend) {
    const N: u64 = 300;
    let mut b = boot(backend, "1n1l2c1t", &format!(" ktstr_lines={N}"));
    let (lines, end) = finish(&mut b, Duration::from_secs(90));
    let got: Vec<&String> = lines.iter().filter(|l| l.contains("KTSTR-LINE ")).collect();
    for (n, l) in got.iter().enumerate() {
        assert_eq!(l.trim_end(), expected_line(n as u64), "line {n}");
    }
    assert_eq!(got.len() as u64, N, "{}", lines.join("\n"));
    assert_eq!(end, EndReason::PowerOff);
}

fn kvm_linux_console_lines_intact() {
    console_lines_intact(&kvm());
}

/// A guest panic ends the VM at once and is reported with its message.
fn kvm_linux_panic_is_reported() {
    let mut b = boot(&kvm(), "1n1l2c1t", " ktstr_end=panic");
    let (lines, end) = finish(&mut b, Duration::from_secs(60));
    let EndReason::Panic { lines: report } = &end else {
        panic!("ended {end:?}, not a panic:\n{}", lines.join("\n"));
    };
    assert!(
        report.iter().any(|l| l.contains("sysrq triggered crash")),
        "{report:?}"
    );
}

/// A guest reboot ends the VM as a reset.
fn kvm_linux_reboot_is_a_reset() {
    let mut b = boot(&kvm(), "1n1l2c1t", " ktstr_end=reboot");
    let (lines, end) = finish(&mut b, Duration::from_secs(60));
    assert_eq!(end, EndReason::Reset, "{}", lines.join("\n"));
}

/// Which test entry runs a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Set {
    /// `kvm_linux_on_the_own_vmm`, the short set: the boots, register
    /// reads, pause/resume, and topology conformance on three small shapes
    /// that still hold SMT siblings, several LLCs in a package (three: not a
    /// power of two) and two NUMA nodes.
    Core,
    /// `kvm_linux_more_on_the_own_vmm`: the console's
    /// integrity, how a panic and a reboot end the VM, and conformance on the
    /// 6- and 8-vCPU shapes.
    More,
}

impl Set {
    /// The test entry that runs this set (here, and inside the L1).
    fn entry(self) -> &'static str {
        match self {
            Set::Core => "kvm_linux_on_the_own_vmm",
            Set::More => "kvm_linux_more_on_the_own_vmm",
        }
    }
}

/// The checks of the own VMM, by name, with the entry that runs them.
const KVM_LINUX_CHECKS: &[(&str, fn(), Set)] = &[
    ("kvm_linux_smoke", kvm_linux_smoke, Set::Core),
    (
        "kvm_linux_smoke_bzimage",
        kvm_linux_smoke_bzimage,
        Set::Core,
    ),
    (
        "kvm_linux_register_reads",
        kvm_linux_register_reads,
        Set::Core,
    ),
    (
        "kvm_linux_steady_pause_resume",
        kvm_linux_steady_pause_resume,
        Set::Core,
    ),
    (
        "kvm_linux_topology_1n2l1c2t",
        kvm_linux_topology_1n2l1c2t,
        Set::Core,
    ),
    (
        "kvm_linux_topology_2n2l1c1t",
        kvm_linux_topology_2n2l1c1t,
        Set::Core,
    ),
    (
        "kvm_linux_topology_1n3l1c1t",
        kvm_linux_topology_1n3l1c1t,
        Set::Core,
    ),
    (
        "kvm_linux_console_lines_intact",
        kvm_linux_console_lines_intact,
        Set::More,
    ),
    (
        "kvm_linux_panic_is_reported",
        kvm_linux_panic_is_reported,
        Set::More,
    ),
    (
        "kvm_linux_reboot_is_a_reset",
        kvm_linux_reboot_is_a_reset,
        Set::More,
    ),
    (
        "kvm_linux_topology_1n2l2c2t",
        kvm_linux_topology_1n2l2c2t,
        Set::More,
    ),
    (
        "kvm_linux_topology_2n4l2c1t",
        kvm_linux_topology_2n4l2c1t,
        Set::More,
    ),
    (
        "kvm_linux_topology_1n3l2c1t",
        kvm_linux_topology_1n3l2c1t,
        Set::More,
    ),
];

/// The line a check's result is reported with, in both modes.
const RESULT_PREFIX: &str = "KTSTR-CHECK ";

/// Runs the checks of `set` in this process on the own VMM; one result line each.
fn run_checks_here(set: Set) -> Vec<CheckResult> {
    let backend = kvm().name();
    let mut results = Vec::new();
    for (name, check, _) in KVM_LINUX_CHECKS.iter().filter(|c| c.2 == set) {
        let t = Instant::now();
        let ok = std::panic::catch_unwind(check).is_ok();
        let r = CheckResult {
            name: name.to_string(),
            backend: backend.clone(),
            ok,
            secs: t.elapsed().as_secs_f64(),
        };
        // Unbuffered and on stdout: inside the L1 this is the console.
        println!("{RESULT_PREFIX}{}", r.line());
        results.push(r);
    }
    results
}

/// One check's outcome.
#[derive(Debug, Clone, PartialEq)]
struct CheckResult {
    name: String,
    backend: String,
    ok: bool,
    secs: f64,
}

impl CheckResult {
    fn line(&self) -> String {
        format!(
            "name={} backend={} result={} secs={:.1}",
            self.name,
            self.backend,
            if self.ok { "ok" } else { "FAILED" },
            self.secs
        )
    }

    fn parse(line: &str) -> Option<Self> {
        let rest = &line[line.find(RESULT_PREFIX)? + RESULT_PREFIX.len()..];
        let f = kv(rest);
        Some(CheckResult {
            name: f.get("name")?.clone(),
            backend: f.get("backend")?.clone(),
            ok: f.get("result")? == "ok",
            secs: f.get("secs")?.parse().ok()?,
        })
    }
}

/// Why `set` failed: every check of it must have run once, on the own VMM
/// (backend `kvm`, not the software hypervisor), and passed.
fn verdict(set: Set, results: &[CheckResult]) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, _, _) in KVM_LINUX_CHECKS.iter().filter(|c| c.2 == set) {
        let runs: Vec<&CheckResult> = results.iter().filter(|r| r.name == *name).collect();
        match runs.as_slice() {
            [] => problems.push(format!("{name}: did not run")),
            [r] if r.backend != "kvm" => {
                problems.push(format!("{name}: ran on {}, not the own KVM VMM", r.backend))
            }
            [r] if !r.ok => problems.push(format!("{name}: failed")),
            [_] => {}
            _ => problems.push(format!("{name}: reported {} times", runs.len())),
        }
    }
    problems
}

#[test]
fn verdict_wants_every_check_once_on_kvm_and_passing() {
    let all: Vec<CheckResult> = KVM_LINUX_CHECKS
        .iter()
        .filter(|c| c.2 == Set::Core)
        .map(|(n, _, _)| CheckResult {
            name: n.to_string(),
            backend: "kvm".into(),
            ok: true,
            secs: 1.0,
        })
        .collect();
    assert!(verdict(Set::Core, &all).is_empty());
    assert_eq!(
        verdict(Set::More, &all).len(),
        6,
        "the other set did not run"
    );
    let line = format!("[ 9.1] {RESULT_PREFIX}{}", all[0].line());
    assert_eq!(CheckResult::parse(&line).as_ref(), Some(&all[0]));
    let mut v = all.clone();
    v.remove(1);
    v[0].backend = "kvm-software".into();
    v[2].ok = false;
    v.push(v[3].clone());
    let p = verdict(Set::Core, &v);
    assert_eq!(p.len(), 4, "{p:?}");
    assert!(p[0].contains("ran on kvm-software"), "{p:?}");
    assert!(p.iter().any(|x| x.contains("did not run")), "{p:?}");
    assert!(p.iter().any(|x| x.contains("failed")), "{p:?}");
    assert!(p.iter().any(|x| x.contains("2 times")), "{p:?}");
}

/// Lines of the L1's own log that mean the VMM misbehaved towards KVM.
fn l1_problems(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .filter(|l| l.contains(nested::L1_PREFIX))
        .filter(|l| l.contains("Unhandled") || l.contains("insmod") || l.contains("kvm=no"))
        .cloned()
        .collect()
}

/// Runs `set`: directly on a host with hardware virtualization, else inside
/// one nested-SVM L1 guest that runs this same entry.
fn run_set(set: Set) {
    let start = Instant::now();
    let (results, l1) = if ktstr_vmm::hardware_virtualization() {
        (run_checks_here(set), Vec::new())
    } else {
        let exe = std::env::current_exe().expect("this test binary");
        let kernel = kernel();
        let kernel_dir = kernel.parent().expect("the kernel's directory");
        // `--include-ignored`: the entries are `--full` tests, ignored by default.
        let run = nested::L1Run {
            kernel_dir,
            files: vec![(exe, "/test".into())],
            script: format!(
                "/test --include-ignored --exact {} --nocapture --test-threads=1 2>&1",
                set.entry()
            ),
            timeout: Duration::from_secs(300),
            single_thread: false,
            kvm_amd_params: String::new(),
            memory_mib: nested::L1_MEMORY_MIB,
        };
        let out = nested::run_in_l1_logged(&run);
        let results = out
            .lines
            .iter()
            .filter_map(|l| CheckResult::parse(l))
            .collect();
        (results, out.lines)
    };
    let where_ = if l1.is_empty() {
        "directly"
    } else {
        "in a nested-SVM L1"
    };
    for r in &results {
        println!("{} ({where_})", r.line());
    }
    println!(
        "{} checks in {:.1} s",
        results.len(),
        start.elapsed().as_secs_f64()
    );
    let mut problems = verdict(set, &results);
    problems.extend(l1_problems(&l1));
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The own KVM VMM boots Linux (vmlinux and bzImage), its registers read
/// back, it keeps ticking across pause/resume, and Linux sees the declared
/// topology on three small shapes (the short set, about 55 s in the L1).
#[test]
fn kvm_linux_on_the_own_vmm() {
    run_set(Set::Core);
}

/// Userland's console output arrives whole, a guest panic ends the VM as a
/// panic and a reboot as a reset, and Linux sees the declared topology on
/// 6- and 8-vCPU shapes (see `Set::More`).
#[ignore = "full: 6- and 8-vCPU Linux shapes, a console soak, a panic and a reboot on the own VMM in a nested-SVM L1 (about a minute more; CI keeps the short set); run with cargo xtask test --full"]
#[test]
fn kvm_linux_more_on_the_own_vmm() {
    run_set(Set::More);
}

/// The shapes of the short set (`Set::Core`), which the stress boots by
/// default.
const STRESS_DEFAULT: &str = "30,1n1l2c1t+1n1l2c2t+1n2l1c2t+2n2l1c1t+1n3l1c1t";

/// Shell lines that print the own VMM's diagnostic bundles, which it writes
/// to the L1's `/tmp` (lost when the L1 powers off), to the console, each
/// line prefixed with `KTSTR-BUNDLE`; they keep the exit status of the
/// command before them.
const SHOW_DIAG_BUNDLES: &str = r#"rc=$?
for f in /tmp/ktstr-vmm-diag/*.txt; do [ -f "$f" ] && sed "s|^|KTSTR-BUNDLE $f: |" "$f"; done
(exit $rc)"#;

/// Boots shapes again and again on the own VMM and counts the boots that
/// stalled or did not power off, each dumped (see `linux_stress`):
/// `KTSTR_STRESS=N,SHAPE[+SHAPE...][,extra cmdline]`, by default the shapes
/// of the short set, 30 boots. Nested under QEMU TCG where the host has
/// no vmx/svm; `KTSTR_STRESS_L1=single` runs that L1 on one host thread.
#[ignore = "full: 30 Linux boots in a nested-SVM L1 (a soak); run with cargo xtask test --full"]
#[test]
fn kvm_linux_boot_stress() {
    let arg = std::env::var("KTSTR_STRESS").unwrap_or_else(|_| STRESS_DEFAULT.into());
    let mut parts = arg.splitn(3, ',');
    let n: usize = parts
        .next()
        .and_then(|n| n.trim().parse().ok())
        .expect("KTSTR_STRESS=N,SHAPE[+SHAPE...][,cmdline]");
    let topo = parts.next().unwrap_or("1n1l2c1t").trim().to_string();
    let extra = parts.next().map(|e| format!(" {e}")).unwrap_or_default();
    if ktstr_vmm::hardware_virtualization() {
        let jiffies = std::env::var("KTSTR_STRESS_JIFFIES")
            .ok()
            .and_then(|a| u64::from_str_radix(a.trim_start_matches("0x"), 16).ok())
            .or_else(linux_stress::jiffies_phys);
        let failed = linux_stress::boot_stress(&topo, n, &extra, jiffies);
        assert_eq!(failed, 0, "{failed} of {n} boots of {topo} failed");
        return;
    }
    let exe = std::env::current_exe().expect("this test binary");
    let kernel = kernel();
    let run = nested::L1Run {
        kernel_dir: kernel.parent().expect("the kernel's directory"),
        files: vec![(exe, "/test".into())],
        script: format!(
            "mount -t debugfs none /sys/kernel/debug\nKTSTR_STRESS_JIFFIES={:#x} KTSTR_STRESS={} /test --include-ignored --exact kvm_linux_boot_stress --nocapture --test-threads=1 2>&1\n{}",
            linux_stress::jiffies_phys().expect("jiffies_64 in the kernel's kallsyms.ktstr"),
            nested::shell_quote(&arg),
            SHOW_DIAG_BUNDLES,
        ),
        timeout: Duration::from_secs(60 + 120 * n as u64),
        single_thread: std::env::var("KTSTR_STRESS_L1").is_ok_and(|v| v == "single"),
        kvm_amd_params: std::env::var("KTSTR_STRESS_KVM_AMD").unwrap_or_default(),
        memory_mib: nested::L1_MEMORY_MIB,
    };
    let out = nested::run_in_l1_logged(&run);
    let summary = out
        .lines
        .iter()
        .find(|l| l.contains("KTSTR-STRESS") && l.contains("failed boots in"))
        .unwrap_or_else(|| panic!("the stress run did not finish: the L1 {}", out.end));
    assert!(summary.contains(": 0 failed boots"), "{summary}");
}

/// Boot-to-init of the same kernel and shapes on the own VMM and on QEMU
/// `-accel kvm`, on the same `/dev/kvm`: inside one nested-SVM L1 here (QEMU,
/// its libraries and firmware packed into the L1's root), directly on a host
/// with vmx/svm. Prints one line per boot and the medians; fails if a boot
/// did not reach init or power off.
#[ignore = "full: a boot benchmark in a nested-SVM L1; run with cargo xtask test --full"]
#[test]
fn kvm_vs_qemu_kvm_boot_to_init() {
    let (problems, lines) = if ktstr_vmm::hardware_virtualization() {
        linux_bench::run_here()
    } else {
        let exe = std::env::current_exe().expect("this test binary");
        let kernel = kernel();
        let mut files = vec![(exe, "/test".to_string())];
        files.extend(linux_bench::qemu_files());
        let run = nested::L1Run {
            kernel_dir: kernel.parent().expect("the kernel's directory"),
            files,
            script: "/test --include-ignored --exact kvm_vs_qemu_kvm_boot_to_init --nocapture --test-threads=1 2>&1"
                .into(),
            timeout: Duration::from_secs(420),
            single_thread: false,
            kvm_amd_params: String::new(),
            memory_mib: nested::L1_MEMORY_MIB,
        };
        let out = nested::run_in_l1_logged(&run);
        let ok = out
            .lines
            .iter()
            .any(|l| l.contains("test result: ok. 1 passed"));
        let problems = if ok {
            Vec::new()
        } else {
            vec![format!(
                "the bench in the L1 did not pass (the L1 {})",
                out.end
            )]
        };
        (problems, out.lines)
    };
    for m in linux_bench::medians(&lines) {
        println!("boot-to-init {m}");
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
