//! A boot stress for the own VMM (`kvm_linux_boot_stress`): one shape booted
//! again and again, every stall dumped with what is needed to find where the
//! guest stopped — how the nested path's boot hang was root-caused.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ktstr_topology::Topology;
use ktstr_vmm::{EndReason, Machine, VmSpec};

use super::{initramfs, kernel, kvm};

/// One line per vCPU thread of this process: name, state, where it sleeps.
fn vcpu_threads() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for t in dir.filter_map(Result::ok) {
        let p = t.path();
        let comm = std::fs::read_to_string(p.join("comm")).unwrap_or_default();
        if !comm.starts_with("ktstr-vcpu") {
            continue;
        }
        let stat = std::fs::read_to_string(p.join("stat")).unwrap_or_default();
        // Fields after the ") ": state utime(12) stime(13) counted from state = 0.
        let f: Vec<&str> = stat
            .rsplit_once(") ")
            .map(|(_, r)| r.split(' ').collect())
            .unwrap_or_default();
        let wchan = std::fs::read_to_string(p.join("wchan")).unwrap_or_default();
        out.push(format!(
            "{} state={} utime={} stime={} wchan={wchan}",
            comm.trim(),
            f.first().unwrap_or(&"?"),
            f.get(11).unwrap_or(&"?"),
            f.get(12).unwrap_or(&"?"),
        ));
    }
    out.sort();
    out
}

/// KVM's global counters (debugfs), if mounted.
fn kvm_stats() -> BTreeMap<String, u64> {
    let Ok(dir) = std::fs::read_dir("/sys/kernel/debug/kvm") else {
        return BTreeMap::new();
    };
    dir.filter_map(Result::ok)
        .filter(|e| e.path().is_file())
        .filter_map(|e| {
            let v = std::fs::read_to_string(e.path())
                .ok()?
                .trim()
                .parse()
                .ok()?;
            Some((e.file_name().to_string_lossy().into_owned(), v))
        })
        .collect()
}

/// The guest-physical address of `jiffies_64` (kernels boot with `nokaslr`),
/// from the symbol cache beside the kernel (`kallsyms.ktstr`: entries of
/// `addr u64, name_off u32, name_len u16, kind u8, pad u8` after a 32-byte
/// header, then the name index, then the names).
pub fn jiffies_phys() -> Option<u64> {
    let b = std::fs::read(kernel().with_file_name("kallsyms.ktstr")).ok()?;
    let count = u32::from_le_bytes(b.get(24..28)?.try_into().ok()?) as usize;
    let names = 32 + 20 * count;
    (0..count).find_map(|i| {
        let e = b.get(32 + 16 * i..48 + 16 * i)?;
        let addr = u64::from_le_bytes(e[..8].try_into().ok()?);
        let off = u32::from_le_bytes(e[8..12].try_into().ok()?) as usize;
        let len = u16::from_le_bytes(e[12..14].try_into().ok()?) as usize;
        (b.get(names + off..names + off + len)? == b"jiffies_64")
            .then(|| addr.wrapping_sub(0xffff_ffff_8000_0000))
    })
}

/// Boots `topo` `n` times in a row on the own VMM and counts the boots that
/// stall: no `KTSTR-DONE` and the guest's `jiffies` (read from guest memory,
/// which disturbs nothing) still for `still`, or no end after `limit`. A
/// stalled boot is dumped: its console, the vCPU threads' scheduler state,
/// then the registers and MP state of every vCPU (the read kicks every vCPU
/// out of KVM_RUN), then whether the guest moves again after that kick.
pub fn boot_stress(topo: &str, n: usize, extra: &str, jiffies: Option<u64>) -> usize {
    use vm_memory::{Bytes, GuestAddress};
    let shapes: Vec<Topology> = topo
        .split('+')
        .map(|t| t.parse().expect("topology"))
        .collect();
    let (still, limit) = (Duration::from_secs(20), Duration::from_secs(300));
    let mut failed = 0;
    for i in 0..n {
        let topology = shapes[i % shapes.len()];
        let topo = topology.to_string();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spec = VmSpec::new(kernel(), topology);
        spec.initrd = Some(initramfs(dir.path()));
        spec.cmdline.push_str(" rdinit=/init");
        spec.cmdline.push_str(extra);
        let t = Instant::now();
        let mut vm = kvm().boot_vm(&spec).expect("boot");
        let console = vm.take_console().expect("console");
        let read_jiffies = |vm: &ktstr_vmm::KvmVm| -> u64 {
            jiffies.map_or(0, |a| {
                vm.memory().read_obj::<u64>(GuestAddress(a)).unwrap_or(0)
            })
        };
        let mut lines: Vec<(f64, String)> = Vec::new();
        let (mut done, mut last_j, mut moved_at) = (false, 0, Instant::now());
        let stalled = loop {
            match console.recv(Duration::from_millis(500)) {
                ktstr_vmm::ConsoleEvent::Line(l) => {
                    done |= l.contains("KTSTR-DONE");
                    lines.push((t.elapsed().as_secs_f64(), l));
                    moved_at = Instant::now();
                }
                ktstr_vmm::ConsoleEvent::Closed => break false,
                ktstr_vmm::ConsoleEvent::Idle => {}
            }
            if done {
                break false;
            }
            let j = read_jiffies(&vm);
            if j != last_j {
                (last_j, moved_at) = (j, Instant::now());
            }
            if (jiffies.is_some() && moved_at.elapsed() > still) || t.elapsed() > limit {
                break true;
            }
        };
        if !stalled {
            let end = vm.wait(Some(Instant::now() + Duration::from_secs(20)));
            println!(
                "KTSTR-STRESS boot {i} {topo}: {end:?} in {:.1} s (first line at {:.1} s)",
                t.elapsed().as_secs_f64(),
                lines.first().map_or(-1.0, |l| l.0)
            );
            if !matches!(end, Ok(EndReason::PowerOff)) {
                failed += 1;
                for (at, l) in &lines {
                    println!("KTSTR-STRESS   console at {at:.1} s: {l}");
                }
            }
            continue;
        }
        failed += 1;
        println!(
            "KTSTR-STRESS boot {i} {topo}: STALL at {:.1} s, jiffies {last_j} still for {:.1} s, {} console lines:",
            t.elapsed().as_secs_f64(),
            moved_at.elapsed().as_secs_f64(),
            lines.len()
        );
        for (at, l) in &lines {
            println!("KTSTR-STRESS   console at {at:.1} s: {l}");
        }
        let before = kvm_stats();
        for t in vcpu_threads() {
            println!("KTSTR-STRESS   thread {t}");
        }
        std::thread::sleep(Duration::from_secs(2));
        for t in vcpu_threads() {
            println!("KTSTR-STRESS   2 s later: thread {t}");
        }
        let after = kvm_stats();
        for (k, v) in &after {
            let d = v.saturating_sub(before.get(k).copied().unwrap_or(0));
            if d > 0 {
                println!("KTSTR-STRESS   kvm stat {k} +{d} in 2 s");
            }
        }
        vm.pause().expect("pause");
        for cpu in 0..topology.nr_cpus() {
            match vm.vcpu_regs(cpu) {
                Ok(r) => println!(
                    "KTSTR-STRESS   cpu {cpu}: rip={:#x} rsp={:#x} rflags={:#x} mp_state={} cr3={:#x} gs={:#x}",
                    r.rip, r.rsp, r.rflags, r.mp_state, r.cr3, r.gs_base
                ),
                Err(e) => println!("KTSTR-STRESS   cpu {cpu}: {e}"),
            }
        }
        vm.resume().expect("resume");
        let j0 = read_jiffies(&vm);
        let kicked = Instant::now();
        let mut after_kick = 0;
        while kicked.elapsed() < Duration::from_secs(30) {
            if let ktstr_vmm::ConsoleEvent::Line(l) = console.recv(Duration::from_millis(500)) {
                after_kick += 1;
                println!(
                    "KTSTR-STRESS   after the kick at {:.1} s: {l}",
                    t.elapsed().as_secs_f64()
                );
            }
        }
        println!(
            "KTSTR-STRESS   after the kick: jiffies {j0} -> {}, {after_kick} lines in 30 s, end {:?}",
            read_jiffies(&vm),
            vm.try_wait()
        );
        vm.kill();
    }
    println!("KTSTR-STRESS {topo}: {failed} failed boots in {n}");
    failed
}
