//! KVM backend tests with the tiny guest (vmm/tiny-guest): a freestanding PVH
//! ELF kernel, and the same code in a bzImage, loaded through the loader path
//! Linux takes. It reports over COM2 what the VMM handed over, and what each
//! vCPU sees (CPUID, its MADT/SRAT/SLIT entries); these tests check that against
//! the declared topology. They need /dev/kvm (any, the software hypervisor of
//! the development machine included) and fail when it is missing.
#![cfg(target_arch = "x86_64")]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ktstr_topology::Topology;
use ktstr_topology::cpuid::{CPUID_FLAG_SIGNIFICANT_INDEX, CpuidEntry, linux_view};
use ktstr_vmm::{EndReason, KvmBackend, KvmVm, Machine, ReservedRegion, VmSpec};
use vm_memory::{Bytes, GuestAddress};

const MIB: u64 = 1 << 20;

#[derive(Clone, Copy, Debug)]
enum Image {
    Pvh,
    BzImage,
}

fn image(kind: Image) -> String {
    let path = match kind {
        Image::Pvh => ktstr_tiny_guest::pvh_elf(),
        Image::BzImage => ktstr_tiny_guest::bzimage(),
    };
    path.unwrap_or_else(|e| panic!("{kind:?}: {e}"))
        .display()
        .to_string()
}

/// One line of the guest's report: a word, then `key=value` pairs.
#[derive(Debug, Clone)]
struct Line {
    word: String,
    kv: BTreeMap<String, String>,
    rest: String,
}

impl Line {
    fn parse(text: &str) -> Option<Line> {
        let text = text.trim();
        let (word, rest) = text.split_once(' ').unwrap_or((text, ""));
        if word.is_empty() {
            return None;
        }
        let kv = rest
            .split_whitespace()
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Some(Line {
            word: word.to_string(),
            kv,
            rest: rest.to_string(),
        })
    }

    fn num(&self, key: &str) -> u64 {
        let v = self
            .kv
            .get(key)
            .unwrap_or_else(|| panic!("line {} has no {key}: {:?}", self.word, self.kv));
        let v = v.trim_start_matches("0x");
        u64::from_str_radix(v, 16).unwrap_or_else(|_| panic!("{key}={v} is not hex"))
    }
}

/// A finished tiny-guest run.
struct Run {
    lines: Vec<Line>,
    end: EndReason,
    vm: KvmVm,
}

impl Run {
    fn all(&self, word: &str) -> Vec<&Line> {
        self.lines.iter().filter(|l| l.word == word).collect()
    }
    fn one(&self, word: &str) -> &Line {
        let all = self.all(word);
        assert_eq!(
            all.len(),
            1,
            "expected one {word} line, got {}:\n{}",
            all.len(),
            self.text()
        );
        all[0]
    }
    fn text(&self) -> String {
        self.lines
            .iter()
            .map(|l| format!("{} {}", l.word, l.rest))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn backend() -> KvmBackend {
    KvmBackend::new().unwrap_or_else(|e| panic!("these tests need /dev/kvm: {e}"))
}

/// Boots the tiny guest and collects its report until it powers off.
fn run(kind: Image, spec: VmSpec) -> Run {
    let _slots = common::take_slots(spec.topology.nr_cpus());
    let mut vm = backend().boot_vm(&spec).expect("boot the tiny guest");
    let com2 = vm.take_com2().expect("COM2 is captured");
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut lines = Vec::new();
    while let Some(l) = com2.next_line(deadline.saturating_duration_since(Instant::now())) {
        let done = l.starts_with("NOPOWEROFF");
        if let Some(p) = Line::parse(&l) {
            lines.push(p);
        }
        if done {
            break;
        }
    }
    let end = vm.wait(Some(deadline)).expect("wait");
    let r = Run { lines, end, vm };
    assert_eq!(
        r.end,
        EndReason::PowerOff,
        "{kind:?} guest did not power off:\n{}",
        r.text()
    );
    r
}

fn fnv_words(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for chunk in bytes.chunks(8) {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        h ^= u64::from_le_bytes(w);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

fn spec(kind: Image, topo: &str) -> VmSpec {
    let topology: Topology = topo.parse().expect("topology");
    let topology = topology
        .with_memory_mib(64 * u64::from(topology.numa_nodes()))
        .expect("memory");
    VmSpec::new(image(kind), topology)
}

/// Everything the boot vCPU and each vCPU reported, checked against the VM.
fn check(kind: Image, topo: &str) {
    let mut spec = spec(kind, topo);
    spec.cmdline.push_str(" ktstr.tiny=1");
    let total = spec.memory_bytes();
    let channel = ReservedRegion {
        gpa: total - 8 * MIB,
        size: 4 * MIB,
    };
    spec.reserved.push(channel);
    let initrd: Vec<u8> = (0..5000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    let dir = tempfile::tempdir().expect("tempdir");
    let initrd_path = dir.path().join("initrd");
    std::fs::write(&initrd_path, &initrd).expect("write initrd");
    spec.initrd = Some(initrd_path);

    let r = run(kind, spec.clone());
    let topology = &spec.topology;

    // Boot protocol.
    let boot = r.one("BOOT");
    match kind {
        Image::Pvh => {
            assert!(boot.rest.starts_with("proto=pvh"), "{}", boot.rest);
            assert_eq!(boot.num("magic"), 0x336e_c578);
            assert_eq!(boot.num("version"), 1);
        }
        Image::BzImage => {
            assert!(boot.rest.starts_with("proto=bzimage"), "{}", boot.rest);
            assert_eq!(boot.num("hdr"), 0x5372_6448);
            assert_eq!(boot.num("loader"), 0xff);
        }
    }
    assert_eq!(
        r.one("CMDLINE").rest,
        format!("{} {}", ktstr_vmm::MACHINE_CMDLINE, spec.cmdline)
    );

    // e820: RAM per node, the BIOS area and the channel reserved.
    let e820: Vec<(u64, u64, u64)> = r
        .all("E820")
        .iter()
        .map(|l| (l.num("addr"), l.num("size"), l.num("type")))
        .collect();
    assert!(e820.contains(&(channel.gpa, channel.size, 2)), "{e820:x?}");
    assert!(
        e820.contains(&(0x9fc00, 0x100000 - 0x9fc00, 2)),
        "{e820:x?}"
    );
    let ram: u64 = e820.iter().filter(|e| e.2 == 1).map(|e| e.1).sum();
    assert_eq!(
        ram,
        total - channel.size - (0x100000 - 0x9fc00),
        "{e820:x?}"
    );
    let layout = r.vm.ram_layout().to_vec();
    for node in 0..topology.numa_nodes() {
        let node_ram: u64 = e820
            .iter()
            .filter(|e| e.2 == 1)
            .filter(|e| {
                layout
                    .iter()
                    .any(|g| g.node == node && e.0 >= g.gpa && e.0 + e.1 <= g.gpa + g.size)
            })
            .map(|e| e.1)
            .sum();
        assert!(
            node_ram >= 32 * MIB,
            "node {node} has {node_ram} bytes of RAM in {e820:x?}"
        );
    }
    for e in e820.iter().filter(|e| e.2 == 1) {
        assert!(
            e.0 + e.1 <= channel.gpa || e.0 >= channel.gpa + channel.size,
            "RAM entry {e:x?} overlaps the channel"
        );
    }

    // initrd: where the VMM says, with the bytes of the file.
    let rd = r.one("INITRD");
    let (addr, size) = r.vm.initrd_range().expect("initrd placed");
    assert_eq!((rd.num("addr"), rd.num("size")), (addr, size));
    assert_eq!(size, initrd.len() as u64);
    assert_eq!(rd.num("hash"), fnv_words(&initrd));
    assert!(addr + size <= channel.gpa || addr >= channel.gpa + channel.size);

    // ACPI: RSDP from the boot protocol, every table checksummed.
    let rsdp = r.one("RSDP");
    assert_eq!(rsdp.num("addr"), r.vm.rsdp_address());
    assert_eq!(
        (rsdp.num("rev"), rsdp.num("sum20"), rsdp.num("sum")),
        (2, 0, 0)
    );
    let tables = r.all("TABLE");
    for t in &tables {
        assert_eq!(t.num("sum"), 0, "checksum of {}", t.rest);
    }
    let sigs: Vec<&str> = tables.iter().map(|t| t.kv["sig"].as_str()).collect();
    assert_eq!(sigs, ["FACP", "APIC", "SRAT", "SLIT"]);
    let srat_mem: Vec<(u64, u64, u64)> = r
        .all("SRATMEM")
        .iter()
        .map(|l| (l.num("base"), l.num("len"), l.num("node")))
        .collect();
    let want: Vec<(u64, u64, u64)> = layout
        .iter()
        .map(|g| (g.gpa, g.size, u64::from(g.node)))
        .collect();
    assert_eq!(srat_mem, want);

    // Every vCPU: its CPUID decoded as Linux does, and its own ACPI entries.
    assert_eq!(
        r.one("APS").num("done"),
        u64::from(topology.nr_cpus() - 1),
        "{}",
        r.text()
    );
    let mut llc_ids: BTreeMap<u32, u32> = BTreeMap::new();
    for cpu in topology.cpus() {
        let apic = u64::from(cpu.apic_id);
        let leaves: Vec<CpuidEntry> = r
            .all("CPUID")
            .iter()
            .filter(|l| l.num("apic") == apic)
            .map(|l| {
                let leaf = l.num("leaf") as u32;
                let sub = l.num("sub") as u32;
                let indexed = matches!(leaf, 4 | 0xb | 0x1f | 0x8000_001d);
                CpuidEntry {
                    function: leaf,
                    index: sub,
                    flags: if indexed {
                        CPUID_FLAG_SIGNIFICANT_INDEX
                    } else {
                        0
                    },
                    eax: l.num("eax") as u32,
                    ebx: l.num("ebx") as u32,
                    ecx: l.num("ecx") as u32,
                    edx: l.num("edx") as u32,
                }
            })
            .collect();
        assert!(
            !leaves.is_empty(),
            "cpu {} (apic {apic}) reported nothing:\n{}",
            cpu.cpu,
            r.text()
        );
        let view = linux_view(&leaves).unwrap_or_else(|e| panic!("cpu {}: {e}", cpu.cpu));
        assert_eq!(
            (view.apic_id, view.package, view.die, view.core, view.thread),
            (cpu.apic_id, cpu.package, cpu.die, cpu.core, cpu.thread),
            "cpu {} as Linux reads its CPUID",
            cpu.cpu
        );
        let llc = view
            .llc_id
            .unwrap_or_else(|| panic!("cpu {}: no LLC id", cpu.cpu));
        match llc_ids.get(&cpu.llc) {
            Some(&id) => assert_eq!(id, llc, "cpu {} LLC id", cpu.cpu),
            None => {
                assert!(
                    !llc_ids.values().any(|&v| v == llc),
                    "cpu {} shares an LLC id with another LLC",
                    cpu.cpu
                );
                llc_ids.insert(cpu.llc, llc);
            }
        }
        let me = r
            .all("VIEW")
            .into_iter()
            .find(|l| l.num("apic") == apic)
            .unwrap_or_else(|| panic!("no VIEW of apic {apic}"));
        assert_eq!(me.num("acpi"), 1);
        assert_eq!(me.num("madt"), 1, "apic {apic} is in the MADT");
        assert_eq!(
            me.num("index"),
            u64::from(cpu.cpu),
            "MADT order is logical CPU order"
        );
        assert_eq!(me.num("flags") & 1, 1, "enabled");
        assert_eq!(
            me.num("node"),
            u64::from(cpu.node),
            "SRAT node of cpu {}",
            cpu.cpu
        );
        let row: Vec<u8> = me.kv["slit"]
            .split(',')
            .map(|d| d.parse().expect("distance"))
            .collect();
        assert_eq!(
            Some(&row[..]),
            topology.distance_row(cpu.node),
            "SLIT row of cpu {}",
            cpu.cpu
        );
    }
    assert_eq!(r.all("CPUDONE").len(), topology.nr_cpus() as usize);
}

#[test]
fn kvm_tiny_pvh_smt() {
    check(Image::Pvh, "1n1l2c2t");
}

#[test]
fn kvm_tiny_pvh_two_llcs_in_a_package() {
    check(Image::Pvh, "1n2l2c1t");
}

#[test]
fn kvm_tiny_pvh_two_numa_nodes() {
    check(Image::Pvh, "2n2l1c2t");
}

#[test]
fn kvm_tiny_bzimage_smt() {
    check(Image::BzImage, "1n1l2c2t");
}

#[test]
fn kvm_tiny_bzimage_two_llcs_in_a_package() {
    check(Image::BzImage, "1n2l2c1t");
}

#[test]
fn kvm_tiny_bzimage_two_numa_nodes() {
    check(Image::BzImage, "2n2l1c2t");
}

/// A guest that triple-faults ends as a reset (KVM_EXIT_SHUTDOWN; a
/// software hypervisor that cannot emulate the fault ends it with
/// KVM_EXIT_INTERNAL_ERROR, a crash), and either way the own VMM leaves a
/// diagnostic bundle a user can send: the host CPU and its flags, KVM's
/// capabilities, the VM spec, each vCPU's registers and last exits, and the
/// console; a crash's failure text names the bundle and KTSTR_BACKEND=qemu.
#[test]
fn kvm_triple_fault_writes_a_diagnostic_bundle() {
    let mut spec = spec(Image::Pvh, "1n1l2c1t");
    spec.cmdline.push_str(" mode=triple");
    let _slots = common::take_slots(spec.topology.nr_cpus());
    let mut vm = backend().boot_vm(&spec).expect("boot");
    let com2 = vm.take_com2().expect("COM2");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut announced = false;
    while let Some(l) = com2.next_line(deadline.saturating_duration_since(Instant::now())) {
        if l.starts_with("TRIPLE") {
            announced = true;
            break;
        }
    }
    assert!(announced, "the guest did not reach its triple fault");
    let end = vm.wait(Some(deadline)).expect("wait");
    let path = vm
        .diagnostics()
        .expect("a triple fault writes a diagnostic bundle")
        .to_path_buf();
    let last_exit = match &end {
        EndReason::Reset => "    shutdown 0x0",
        EndReason::Crashed { detail } => {
            assert!(
                detail.contains(&format!("diagnostic bundle {}", path.display()))
                    && detail.contains("KTSTR_BACKEND=qemu"),
                "{detail}"
            );
            "    internal-error 0x0"
        }
        other => panic!("a triple fault ended the VM as {other:?}"),
    };
    let text = std::fs::read_to_string(&path).expect("read the bundle");
    let _ = std::fs::remove_file(&path);
    for item in [
        "KTSTR_BACKEND=qemu",
        "end: vCPU 0",
        "host cpu:\n  vendor_id:",
        "model name:",
        "flags:",
        "host kernel: ",
        "kvm: api version 12, IRQCHIP=1",
        "vm spec:\nVmSpec {",
        "mode=triple",
        "vcpu 0:\n  registers: rip=",
        "vcpu 1:\n  registers: rip=",
        "  events: exception ",
        "last exits (oldest first,",
        last_exit,
        "console (",
    ] {
        assert!(text.contains(item), "the bundle lacks {item:?}:\n{text}");
    }
}

/// Pause stops the guest (its counter in memory holds still), resume restarts
/// it, and the register read returns the CR3 the guest reported.
#[test]
fn kvm_tiny_pause_resume_and_cr3() {
    for kind in [Image::Pvh, Image::BzImage] {
        let mut spec = spec(kind, "1n1l2c1t");
        spec.cmdline.push_str(" mode=count");
        let _slots = common::take_slots(spec.topology.nr_cpus());
        let mut vm = backend().boot_vm(&spec).expect("boot");
        let com2 = vm.take_com2().expect("COM2");
        let mut counter = None;
        while let Some(l) = com2.next_line(Duration::from_secs(60)) {
            let Some(line) = Line::parse(&l) else {
                continue;
            };
            if line.word == "COUNTER" {
                counter = Some(line);
                break;
            }
        }
        let counter = counter.expect("the guest announces its counter");
        let addr = GuestAddress(counter.num("addr"));
        let read = |vm: &KvmVm| -> u64 { vm.memory().read_obj(addr).expect("read counter") };

        std::thread::sleep(Duration::from_millis(20));
        vm.pause().expect("pause");
        let a = read(&vm);
        std::thread::sleep(Duration::from_millis(50));
        let b = read(&vm);
        assert_eq!(a, b, "{kind:?}: the counter moved while paused");
        let regs = vm.vcpu_regs(0).expect("regs of the boot vCPU");
        assert_eq!(regs.cr3, counter.num("cr3"), "{kind:?}: CR3");
        assert_eq!(regs.efer & (1 << 10), 1 << 10, "{kind:?}: long mode active");
        vm.resume().expect("resume");
        std::thread::sleep(Duration::from_millis(50));
        let c = read(&vm);
        assert!(
            c > b,
            "{kind:?}: the counter did not advance after resume ({b} -> {c})"
        );
        // A register read of a running VM pauses and resumes around it.
        assert_eq!(vm.vcpu_regs(0).expect("regs").cr3, counter.num("cr3"));
        vm.kill();
        assert_eq!(vm.wait(None).expect("wait"), EndReason::Killed);
    }
}

/// The backend interface alone (what the facade uses) runs the tiny guest to
/// power-off, and a deadline kills a guest that does not end.
#[test]
fn kvm_tiny_through_the_backend_interface() {
    use ktstr_vmm::Backend;
    let b: Box<dyn Backend> = Box::new(ktstr_vmm::Slotted::new(backend(), common::host_slots()));
    let mut vm = b.boot(&spec(Image::Pvh, "1n1l2c1t")).expect("boot");
    assert!(vm.take_console().is_some(), "COM1 is captured");
    assert_eq!(
        vm.wait(Some(Instant::now() + Duration::from_secs(60)))
            .expect("wait"),
        EndReason::PowerOff
    );

    let mut spec = spec(Image::Pvh, "1n1l1c1t");
    spec.cmdline.push_str(" mode=count");
    let mut vm = b.boot(&spec).expect("boot");
    let t = Instant::now();
    assert_eq!(
        vm.wait(Some(Instant::now() + Duration::from_millis(300)))
            .expect("wait"),
        EndReason::Timeout
    );
    assert!(t.elapsed() < Duration::from_secs(5));
}

/// A larger machine: 32 vCPUs in 2 nodes of 2 LLCs, SMT on.
#[test]
fn kvm_tiny_pvh_32_cpus() {
    check(Image::Pvh, "2n4l4c2t");
}

/// The next COM2 line starting with `word`, or a panic with what came.
fn next_word(com2: &ktstr_vmm::Console, word: &str, budget: Duration) -> Line {
    let deadline = Instant::now() + budget;
    let mut seen = Vec::new();
    while let Some(l) = com2.next_line(deadline.saturating_duration_since(Instant::now())) {
        match Line::parse(&l) {
            Some(line) if line.word == word => return line,
            _ => seen.push(l),
        }
    }
    panic!(
        "no {word} line within {budget:?}; COM2:\n{}",
        seen.join("\n")
    );
}

/// Boot once, restore many on the own VMM: the tiny guest (2 vCPUs, the
/// second halted) counts in memory and reports on COM2; saved mid-run, it is
/// restored three times into new VMs. Each restore goes on counting from the
/// saved value (registers, memory and the serial port came back; CR3 reads
/// back), reads its own payload from the payload region, and does not see
/// what the host wrote into the previous restore's RAM; the image is never
/// written. A spec that differs from the saved machine is refused.
#[test]
fn kvm_tiny_save_and_restore_many() {
    use ktstr_vmm::Backend;
    let mut spec = spec(Image::Pvh, "1n1l2c1t");
    spec.cmdline.push_str(" mode=tick");
    spec.payload_bytes = MIB;
    let channel = 32 * MIB;
    spec.reserved.push(ReservedRegion {
        gpa: channel,
        size: MIB,
    });
    let _slots = common::take_slots(spec.topology.nr_cpus());
    let dir = tempfile::tempdir().expect("tempdir");
    let image = dir.path().join("tiny.img");

    let mut vm = backend().boot_vm(&spec).expect("boot");
    let com2 = vm.take_com2().expect("COM2");
    let counter = next_word(&com2, "COUNTER", Duration::from_secs(60));
    assert_eq!(
        counter.num("pay"),
        0xe000_0000,
        "payload address on the cmdline"
    );
    let tick = next_word(&com2, "TICK", Duration::from_secs(60));
    assert_eq!(
        tick.num("pay"),
        0,
        "a booted guest's payload region is empty"
    );
    let addr = GuestAddress(counter.num("addr"));
    vm.save(&image).expect("save");
    assert_eq!(vm.wait(None).expect("wait"), EndReason::Killed);
    let saved: u64 = vm.memory().read_obj(addr).expect("counter at the save");
    assert!(saved >= tick.num("n"), "{saved} < {}", tick.num("n"));
    drop(vm);
    let snapshot = std::fs::read(&image).expect("read the image");

    let kvm = backend();
    for round in 0..3u64 {
        let tag = 0x7a9_0000 + round;
        let mut vm = kvm
            .restore_vm(&spec, &image, &tag.to_le_bytes())
            .unwrap_or_else(|e| panic!("restore {round}: {e}"));
        let now: u64 = vm.memory().read_obj(addr).expect("counter");
        assert!(
            now >= saved,
            "restore {round}: counter {now} < saved {saved}"
        );
        let marker: u64 = vm.memory().read_obj(GuestAddress(channel)).expect("marker");
        assert_eq!(
            marker, 0,
            "restore {round} sees the previous restore's write"
        );
        vm.memory()
            .write_obj(0xfeed_u64 + round, GuestAddress(channel))
            .expect("host write into guest RAM");
        let com2 = vm.take_com2().expect("COM2");
        // The first line may be the one the guest was about to print when
        // it was saved (counter bumped, line not yet out: n == saved, seen
        // once in CI); the next goes on from there.
        let tick = next_word(&com2, "TICK", Duration::from_secs(60));
        assert!(
            tick.num("n") >= saved,
            "restore {round}: {tick:?} after {saved}"
        );
        let next = next_word(&com2, "TICK", Duration::from_secs(60));
        assert!(
            next.num("n") > saved,
            "restore {round}: {next:?} after {saved}"
        );
        assert_eq!(tick.num("pay"), tag, "restore {round}: its own payload");
        assert_eq!(vm.vcpu_regs(0).expect("regs").cr3, counter.num("cr3"));
        let ap = vm.vcpu_regs(1).expect("AP regs");
        assert_eq!(ap.mp_state, 3, "restore {round}: the AP stays halted");
        vm.kill();
    }
    assert!(
        std::fs::read(&image).expect("image") == snapshot,
        "a restore wrote the image"
    );

    let mut other = spec.clone();
    other.payload_bytes = 2 * MIB;
    let e = kvm
        .restore(&other, &image, b"")
        .err()
        .expect("a different spec");
    assert!(e.to_string().contains("payload region"), "{e}");
    let e = kvm
        .restore(&spec, &dir.path().join("missing.img"), b"")
        .err()
        .expect("no image");
    assert!(e.to_string().contains("save a machine to it first"), "{e}");
}
