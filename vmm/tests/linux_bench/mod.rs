//! Boot-to-init of the same kernel, initramfs and topology on the own VMM and
//! on QEMU with `-accel kvm`, side by side on the same `/dev/kvm`
//! (`kvm_vs_qemu_kvm_boot_to_init`): inside the nested-SVM L1 here, directly
//! on a host with vmx/svm.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ktstr_topology::Topology;
use ktstr_vmm::{Backend, EndReason, QemuBackend, VmSpec};

use super::{initramfs, kernel, kvm};

/// The shapes compared, and how many boots of each per VMM.
pub const SHAPES: [&str; 2] = ["1n1l2c1t", "1n2l1c2t"];
pub const RUNS: usize = 3;

/// Prefix of one measured boot's line.
pub const LINE: &str = "KTSTR-BENCH ";

/// QEMU and the firmware it reads for a PVH boot (`-L help` lists where it
/// looks), as (host path, path in the L1).
pub fn qemu_files() -> Vec<(PathBuf, String)> {
    let qemu = QemuBackend::find_in(&std::env::var_os("PATH").unwrap_or_default())
        .expect("QEMU (cargo xtask setup installs it)");
    let mut files = vec![(
        qemu.binary().to_path_buf(),
        "/bin/qemu-system-x86_64".to_string(),
    )];
    for f in [
        "/usr/share/qemu/pvh.bin",
        "/usr/share/qemu/linuxboot_dma.bin",
        "/usr/share/qemu/linuxboot.bin",
        "/usr/share/qemu/kvmvapic.bin",
        "/usr/share/seabios/bios-256k.bin",
        "/usr/share/seabios/bios.bin",
    ] {
        if std::path::Path::new(f).is_file() {
            files.push((f.into(), f.to_string()));
        }
    }
    files
}

/// Seconds from boot to the init's first line, then the VM's end.
fn boot_to_init(backend: &dyn Backend, topology: Topology) -> (Option<f64>, EndReason) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut spec = VmSpec::new(kernel(), topology);
    spec.initrd = Some(initramfs(dir.path()));
    spec.cmdline.push_str(" rdinit=/init");
    let t = Instant::now();
    let mut vm = backend.boot(&spec).expect("boot");
    let console = vm.take_console().expect("console");
    let mut init = None;
    while let Some(l) = console.next_line(Duration::from_secs(90)) {
        if init.is_none() && l.contains("KTSTR-INIT hello") {
            init = Some(t.elapsed().as_secs_f64());
        }
    }
    let end = vm
        .wait(Some(Instant::now() + Duration::from_secs(20)))
        .expect("wait");
    (init, end)
}

/// Boots every shape `RUNS` times on each VMM, alternating; prints one line
/// each. Returns the boots that did not reach init or did not power off, and
/// the lines.
pub fn run_here() -> (Vec<String>, Vec<String>) {
    let own = kvm();
    let qemu = QemuBackend::find_in(&std::env::var_os("PATH").unwrap_or_default())
        .expect("QEMU")
        .with_accel(ktstr_vmm::qemu::Accel::Kvm);
    let mut problems = Vec::new();
    let mut lines = Vec::new();
    for shape in SHAPES {
        let topology: Topology = shape.parse().expect("topology");
        for run in 0..RUNS {
            for (name, backend) in [("kvm", &own as &dyn Backend), ("qemu-kvm", &qemu)] {
                let (init, end) = boot_to_init(backend, topology);
                let line = format!(
                    "{LINE}shape={shape} vmm={name} run={run} init_s={} end={end}",
                    init.map_or("none".into(), |s| format!("{s:.2}"))
                );
                println!("{line}");
                lines.push(line);
                if init.is_none() || end != EndReason::PowerOff {
                    problems.push(format!(
                        "{shape} on {name}, run {run}: init {init:?}, {end}"
                    ));
                }
            }
        }
    }
    (problems, lines)
}

/// Medians per shape and VMM from the bench lines.
pub fn medians(lines: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for shape in SHAPES {
        let mut row = format!("{shape}:");
        for vmm in ["kvm", "qemu-kvm"] {
            let mut v: Vec<f64> = lines
                .iter()
                .filter(|l| l.contains(LINE))
                .filter(|l| {
                    l.contains(&format!("shape={shape} ")) && l.contains(&format!("vmm={vmm} "))
                })
                .filter_map(|l| l.split("init_s=").nth(1)?.split(' ').next()?.parse().ok())
                .collect();
            v.sort_by(f64::total_cmp);
            let fmt = |x: &f64| format!("{x:.2}");
            row.push_str(&format!(
                " {vmm} median {} s (runs {})",
                v.get(v.len() / 2).map_or("-".into(), fmt),
                v.iter().map(fmt).collect::<Vec<_>>().join(", ")
            ));
        }
        out.push(row);
    }
    out
}
