//! Embed the VMM: boot a kernel on a declared topology (one NUMA node, 2 LLCs of
//! 2 cores) and run one command, printing what the guest sees.
//!
//! `cargo run -p ktstr-vmm --example two_llc -- /path/to/vmlinux [/path/to/static/busybox]`
//!
//! The kernel is an ELF `vmlinux` with a PVH note or a bzImage; the guest's root is
//! a cpio built with `ktstr-initramfs`: a static busybox and a shell script as `/init`.
//! The backend is the own KVM VMM with hardware virtualization, else QEMU (from `PATH`).

use std::time::{Duration, Instant};

use ktstr_initramfs::Archive;
use ktstr_vmm::{BackendChoice, EndReason, HostSlots, QemuBackend, VmSpec, select_backend};

const INIT: &str = "#!/bin/busybox sh
/bin/busybox mount -t sysfs sysfs /sys
echo \"nproc: $(/bin/busybox nproc)\"
/bin/busybox cat /sys/devices/system/cpu/cpu*/cache/index3/shared_cpu_list \\
    | /bin/busybox sort -u | while read l3; do echo \"L3 group: $l3\"; done
/bin/busybox poweroff -f
";

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let kernel = args.next().ok_or("usage: two_llc VMLINUX [BUSYBOX]")?;
    let busybox = args.next().unwrap_or_else(|| "/bin/busybox".into());

    // The guest's root: busybox and /init, as an uncompressed newc cpio.
    let dir = std::env::temp_dir().join(format!("two_llc-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut root = Archive::new();
    root.add_file("/bin/busybox", 0o755, &busybox)?;
    root.add_bytes("/init", 0o755, INIT.as_bytes().to_vec())?;
    for d in ["/dev", "/sys", "/proc"] {
        root.add_dir(d, 0o755)?;
    }
    let initrd = dir.join("root.cpio");
    std::fs::write(&initrd, root.to_vec()?)?;

    // 1 node, 2 LLCs, 2 cores per LLC, 1 thread per core: 4 CPUs.
    let mut spec = VmSpec::new(kernel, "1n2l2c1t".parse()?);
    spec.initrd = Some(initrd);
    spec.cmdline.push_str(" rdinit=/init");

    // Host CPU slots shared with every other ktstr VM on this host.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let slots = HostSlots::new(HostSlots::default_dir(), cores);
    let path = std::env::var_os("PATH").unwrap_or_default();
    let backend = select_backend(BackendChoice::Auto, || QemuBackend::find_in(&path), slots)?;
    println!("backend: {}", backend.name());

    let mut vm = backend.boot(&spec)?;
    let console = vm.take_console().ok_or("the console is captured")?;
    while let Some(line) = console.next_line(Duration::from_secs(120)) {
        if line.starts_with("nproc: ") || line.starts_with("L3 group: ") {
            println!("{line}");
        }
    }
    let end = vm.wait(Some(Instant::now() + Duration::from_secs(30)))?;
    std::fs::remove_dir_all(&dir)?;
    match end {
        EndReason::PowerOff => Ok(()),
        other => Err(format!("the guest did not power off: {other}").into()),
    }
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("two_llc: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
