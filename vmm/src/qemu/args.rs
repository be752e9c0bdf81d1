//! The QEMU command line for a [`VmSpec`]: pure, so every topology's
//! arguments are unit-tested without starting QEMU.

use crate::{TcgMode, VmSpec};

/// QEMU's `-icount` options for [`TcgMode::InstructionCount`]: every guest
/// instruction advances the guest clock by 2^2 = 4 ns, whatever the host.
///
/// A fixed shift, not `shift=auto`: the automatic shift re-tunes the clock to
/// track host wall time, one power of two at a time, so on a busy host the
/// same code took 32 times as long in guest time from one second to the next
/// (a fork measured at 144 ms, then 73, 45, 21, 10 and 4.7 ms as the shift
/// came back down), and short windows of helper-based work types completed
/// nothing. With a fixed shift the guest sees a machine of one speed (250
/// million instructions per guest second) on any host; a slower host only
/// makes the run take longer in wall time. `sleep=on` lets idle time pass in
/// real time, so the guest's timers keep host pace while it waits.
pub const ICOUNT: &str = "shift=2,sleep=on";

/// `-icount` of a deterministic guest ([`VmSpec::deterministic`]): the same
/// clock, but idle time skips to the next timer instead of passing in host
/// time (`sleep=off`), because with `sleep=on` when a timer fires depends on
/// the host (measured: two boots of one spec differed in their console from
/// the TSC calibration on, docs/design/record-replay.md section 2).
pub const ICOUNT_DETERMINISTIC: &str = "shift=2,sleep=off,align=off";

/// Whether QEMU can run `spec` deterministically on `accel`: one TCG thread
/// counting instructions, booted (a restored guest diverged in 11 of 11
/// loads that resumed within 0.3 s, docs/design/record-replay.md section 3).
pub(crate) fn check_deterministic(
    spec: &VmSpec,
    accel: Accel,
    nested_svm: bool,
    restoring: bool,
) -> Result<(), crate::VmmError> {
    let why = if accel == Accel::Kvm {
        Some("hardware virtualization runs the guest at host speed, whose timing no run repeats")
    } else if nested_svm {
        Some("a nested-SVM host runs one thread per vCPU")
    } else if spec.resolved_tcg() != TcgMode::InstructionCount {
        Some("only instruction-counting TCG (TcgMode::InstructionCount) repeats a run")
    } else if restoring {
        Some("a restored guest does not repeat its run; boot it")
    } else if spec
        .deterministic
        .as_ref()
        .and_then(|d| d.gate.as_ref())
        .is_some_and(|g| {
            [Some(&g.plugin), Some(&g.socket), g.gdb.as_ref()]
                .iter()
                .flatten()
                .any(|p| p.to_string_lossy().contains(','))
        })
    {
        Some("the gate plugin's or a socket's path has a comma, which QEMU's -plugin cannot take")
    } else {
        None
    };
    why.map_or(Ok(()), |why| {
        Err(crate::VmmError::Unsupported(format!(
            "a deterministic (recorded or replayed) run: {why}"
        )))
    })
}

/// How QEMU runs vCPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualization through /dev/kvm.
    Kvm,
    /// QEMU's software CPU (multi-threaded TCG).
    Tcg,
}

/// File descriptors QEMU inherits.
#[derive(Debug, Clone)]
pub(crate) struct PassedFds {
    /// One memory file per NUMA node.
    pub node_memory: Vec<i32>,
    /// The connected QMP socket.
    pub qmp: i32,
    /// The payload region's memory file ([`VmSpec::payload_bytes`]).
    pub payload: Option<i32>,
}

/// The full kernel command line: the spec's plus the reserved regions.
pub(crate) fn kernel_cmdline(spec: &VmSpec) -> String {
    let mut c = spec.cmdline.clone();
    for r in &spec.reserved {
        // Documentation/admin-guide/kernel-parameters.txt: memmap=nn$ss marks
        // [ss, ss+nn) reserved.
        c.push_str(&format!(" memmap={:#x}${:#x}", r.size, r.gpa));
    }
    c
}

/// The accelerator and CPU model. `nested_svm` asks for a CPU the guest can
/// run its own KVM guests on: under TCG an AMD EPYC with SVM and nested paging
/// emulated (Linux's kvm_amd loads on it), under KVM the host CPU (which has
/// the host's own vmx/svm).
///
/// A nested-SVM L1 hosts KVM guests and no verdict is judged on its own
/// clock, so it never counts instructions: it runs one thread per vCPU unless
/// its spec asks for [`TcgMode::Single`] (all vCPUs on one thread).
pub(crate) fn cpu_args(accel: Accel, tcg: TcgMode, nested_svm: bool) -> [&'static str; 4] {
    let threads = match tcg {
        TcgMode::Single => "tcg,thread=single",
        TcgMode::InstructionCount if !nested_svm => "tcg,thread=single",
        _ => "tcg,thread=multi",
    };
    match (accel, nested_svm) {
        (Accel::Kvm, _) => ["-accel", "kvm", "-cpu", "host"],
        (Accel::Tcg, true) => ["-accel", threads, "-cpu", "EPYC,+svm,+npt"],
        // An Intel CPU model needs CPUID level 0x1f for dies > 1 (QEMU
        // asserts otherwise); Nehalem is small enough to emulate cheaply.
        (Accel::Tcg, false) => ["-accel", threads, "-cpu", "Nehalem,level=0x20"],
    }
}

/// Builds QEMU's arguments.
pub(crate) fn qemu_args(
    spec: &VmSpec,
    accel: Accel,
    nested_svm: bool,
    fds: &PassedFds,
) -> Vec<String> {
    let t = &spec.topology;
    let mut a: Vec<String> = Vec::new();
    let mut push = |items: &[&str]| a.extend(items.iter().map(|s| s.to_string()));
    push(&["-name", &format!("{},debug-threads=on", spec.name)]);
    push(&[
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
    ]);
    // LLCs are QEMU dies; smp-cache puts one L3 per die (QEMU 10).
    let mut machine = String::from("pc,smp-cache.0.cache=l3,smp-cache.0.topology=die");
    let node_mem = spec.node_memory_bytes();
    if node_mem.len() == 1 {
        machine.push_str(",memory-backend=m0");
    }
    push(&["-machine", &machine]);
    push(&cpu_args(accel, spec.resolved_tcg(), nested_svm));
    if accel == Accel::Tcg && !nested_svm && spec.resolved_tcg() == TcgMode::InstructionCount {
        match &spec.deterministic {
            None => push(&["-icount", ICOUNT]),
            Some(d) => push(&[
                "-icount",
                ICOUNT_DETERMINISTIC,
                "-rtc",
                &format!("base={},clock=vm", d.rtc_base),
                "-seed",
                &d.seed.to_string(),
            ]),
        }
        if let Some(g) = spec.deterministic.as_ref().and_then(|d| d.gate.as_ref()) {
            let mut plugin = format!("file={},sock={}", g.plugin.display(), g.socket.display());
            if let Some(n) = g.first_stop {
                plugin.push_str(&format!(",first={n}"));
            }
            for m in &g.marks {
                plugin.push_str(&format!(",mark={m:#x}"));
            }
            push(&["-plugin", &plugin]);
            if let Some(gdb) = &g.gdb {
                push(&[
                    "-gdb",
                    &format!("unix:{},server=on,wait=off", gdb.display()),
                ]);
            }
        }
    }
    push(&[
        "-smp",
        &format!(
            "cpus={},sockets={},dies={},cores={},threads={}",
            t.nr_cpus(),
            t.packages(),
            t.dies_per_package(),
            t.cores_per_llc(),
            t.threads_per_core()
        ),
    ]);
    push(&["-m", &format!("{}M", spec.memory_bytes() >> 20)]);
    for (node, (bytes, fd)) in node_mem.iter().zip(&fds.node_memory).enumerate() {
        push(&[
            "-object",
            &format!(
                "memory-backend-file,id=m{node},size={}M,mem-path=/proc/self/fd/{fd},share=on",
                bytes >> 20
            ),
        ]);
    }
    if node_mem.len() > 1 {
        for node in 0..t.numa_nodes() {
            let cpus = t.node_cpus(node);
            push(&[
                "-numa",
                &format!(
                    "node,nodeid={node},cpus={}-{},memdev=m{node}",
                    cpus.start,
                    cpus.end - 1
                ),
            ]);
        }
        for src in 0..t.numa_nodes() {
            for dst in 0..t.numa_nodes() {
                if src != dst {
                    let d = t.distance(src, dst).unwrap_or(20);
                    push(&["-numa", &format!("dist,src={src},dst={dst},val={d}")]);
                }
            }
        }
    }
    if let (Some(fd), bytes @ 1..) = (fds.payload, spec.payload_bytes) {
        // The payload region: shared memory as a PCI BAR, outside guest RAM.
        // master=on makes the device migratable (a peer blocks migration).
        push(&[
            "-object",
            &format!(
                "memory-backend-file,id=payload,size={}M,mem-path=/proc/self/fd/{fd},share=on",
                bytes >> 20
            ),
            "-device",
            "ivshmem-plain,memdev=payload,master=on",
        ]);
    }
    push(&[
        "-chardev",
        "stdio,id=con,signal=off",
        "-serial",
        "chardev:con",
    ]);
    push(&[
        "-chardev",
        &format!("socket,id=qmp,fd={}", fds.qmp),
        "-mon",
        "chardev=qmp,mode=control",
    ]);
    push(&["-kernel", &spec.kernel.to_string_lossy()]);
    if let Some(initrd) = &spec.initrd {
        push(&["-initrd", &initrd.to_string_lossy()]);
    }
    push(&["-append", &kernel_cmdline(spec)]);
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ReservedRegion;

    fn args_for(topo: &str) -> Vec<String> {
        let mut spec = VmSpec::new("/k", topo.parse().expect("topology"));
        spec.reserved.push(ReservedRegion {
            gpa: 0x1f00_0000,
            size: 0x100_0000,
        });
        qemu_args(
            &spec,
            Accel::Tcg,
            false,
            &PassedFds {
                node_memory: (0..8).map(|i| 10 + i).collect(),
                qmp: 3,
                payload: Some(30),
            },
        )
    }

    fn value_of<'a>(a: &'a [String], flag: &str) -> Vec<&'a str> {
        a.windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].as_str())
            .collect()
    }

    #[test]
    fn a_deterministic_guest_gets_its_seed_clock_and_no_sleep() {
        let mut spec = VmSpec::new("/k", "1n1l2c1t".parse().expect("topology"));
        spec.deterministic = Some(crate::Deterministic {
            seed: 42,
            rtc_base: "2026-12-07T17:00:00".into(),
            gate: None,
        });
        let fds = PassedFds {
            node_memory: vec![10],
            qmp: 3,
            payload: None,
        };
        let a = qemu_args(&spec, Accel::Tcg, false, &fds);
        assert_eq!(value_of(&a, "-icount"), [ICOUNT_DETERMINISTIC]);
        assert_eq!(value_of(&a, "-seed"), ["42"]);
        assert_eq!(value_of(&a, "-rtc"), ["base=2026-12-07T17:00:00,clock=vm"]);
        assert!(check_deterministic(&spec, Accel::Tcg, false, false).is_ok());
        for (accel, nested, restoring) in [
            (Accel::Kvm, false, false),
            (Accel::Tcg, true, false),
            (Accel::Tcg, false, true),
        ] {
            let e = check_deterministic(&spec, accel, nested, restoring).expect_err("refused");
            assert!(e.to_string().contains("deterministic"), "{e}");
        }
        spec.tcg = TcgMode::Multi;
        assert!(check_deterministic(&spec, Accel::Tcg, false, false).is_err());
    }

    #[test]
    fn a_gated_guest_loads_the_plugin_with_its_socket() {
        let mut spec = VmSpec::new("/k", "1n1l2c1t".parse().expect("topology"));
        let gate = |plugin: &str| crate::TcgGate {
            plugin: plugin.into(),
            socket: "/tmp/g.sock".into(),
            first_stop: Some(8192),
            marks: vec![0xffff_ffff_8120_afb0],
            gdb: Some("/tmp/gdb.sock".into()),
        };
        spec.deterministic = Some(crate::Deterministic {
            seed: 1,
            rtc_base: "2026-12-07T17:00:00".into(),
            gate: Some(gate("/t/libktstr_qemu_gate.so")),
        });
        let fds = PassedFds {
            node_memory: vec![10],
            qmp: 3,
            payload: None,
        };
        let a = qemu_args(&spec, Accel::Tcg, false, &fds);
        assert_eq!(
            value_of(&a, "-plugin"),
            ["file=/t/libktstr_qemu_gate.so,sock=/tmp/g.sock,first=8192,mark=0xffffffff8120afb0"]
        );
        assert_eq!(
            value_of(&a, "-gdb"),
            ["unix:/tmp/gdb.sock,server=on,wait=off"]
        );
        assert!(check_deterministic(&spec, Accel::Tcg, false, false).is_ok());
        spec.deterministic.as_mut().expect("set").gate = Some(gate("/a,b/gate.so"));
        let e = check_deterministic(&spec, Accel::Tcg, false, false).expect_err("comma");
        assert!(e.to_string().contains("comma"), "{e}");
    }

    #[test]
    fn two_llcs_in_one_socket() {
        let a = args_for("1n2l2c2t");
        assert_eq!(
            value_of(&a, "-smp"),
            ["cpus=8,sockets=1,dies=2,cores=2,threads=2"]
        );
        assert!(value_of(&a, "-machine")[0].contains("memory-backend=m0"));
        assert!(value_of(&a, "-numa").is_empty());
        assert!(value_of(&a, "-append")[0].ends_with("memmap=0x1000000$0x1f000000"));
        // No payload region unless the spec asks for one.
        assert!(
            !value_of(&a, "-device")
                .iter()
                .any(|d| d.contains("ivshmem"))
        );
    }

    #[test]
    fn a_payload_region_is_a_migratable_ivshmem_bar() {
        let mut spec = VmSpec::new("/k", "1n1l2c1t".parse().expect("topology"));
        spec.payload_bytes = 64 << 20;
        let fds = PassedFds {
            node_memory: vec![10],
            qmp: 3,
            payload: Some(30),
        };
        let a = qemu_args(&spec, Accel::Tcg, false, &fds);
        assert_eq!(
            value_of(&a, "-device"),
            ["ivshmem-plain,memdev=payload,master=on"]
        );
        assert!(
            value_of(&a, "-object")[1].ends_with("size=64M,mem-path=/proc/self/fd/30,share=on")
        );
    }

    #[test]
    fn numa_nodes_get_their_cpus_memory_and_distances() {
        let a = args_for("2n4l2c1t");
        assert_eq!(
            value_of(&a, "-smp"),
            ["cpus=8,sockets=2,dies=2,cores=2,threads=1"]
        );
        let numa = value_of(&a, "-numa");
        assert_eq!(numa[0], "node,nodeid=0,cpus=0-3,memdev=m0");
        assert_eq!(numa[1], "node,nodeid=1,cpus=4-7,memdev=m1");
        assert_eq!(
            &numa[2..],
            ["dist,src=0,dst=1,val=20", "dist,src=1,dst=0,val=20"]
        );
        let objs = value_of(&a, "-object");
        assert_eq!(objs.len(), 2);
        assert!(objs[1].contains("mem-path=/proc/self/fd/11"), "{objs:?}");
        assert!(!value_of(&a, "-machine")[0].contains("memory-backend"));
    }

    #[test]
    fn nested_svm_asks_tcg_for_an_epyc_with_svm_and_npt() {
        assert_eq!(
            cpu_args(Accel::Tcg, TcgMode::Auto, true),
            ["-accel", "tcg,thread=multi", "-cpu", "EPYC,+svm,+npt"]
        );
        assert_eq!(
            cpu_args(Accel::Tcg, TcgMode::InstructionCount, false),
            ["-accel", "tcg,thread=single", "-cpu", "Nehalem,level=0x20"]
        );
        assert_eq!(
            cpu_args(Accel::Tcg, TcgMode::Single, true)[1],
            "tcg,thread=single"
        );
        assert_eq!(cpu_args(Accel::Kvm, TcgMode::Auto, true)[3], "host");
    }
}
