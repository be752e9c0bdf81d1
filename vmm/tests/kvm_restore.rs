//! Boot once, restore many, on the own KVM VMM with Linux: a guest booted
//! to a waiting agent is saved, then restored several times into new VMs,
//! each with its own payload. Each restored guest must read its payload
//! from the payload region (found through `ktstr.payload=SIZE@ADDR` on its
//! command line), see the host's word in the reserved channel range (guest
//! RAM stays host-writable through the VMM's mapping), find none of the
//! files an earlier restore wrote, keep a clock that went on from the save
//! (kvmclock and the TSC came back), and log no RCU stall, soft lockup,
//! hung task or watchdog complaint a few seconds after the restore. Prints,
//! per shape, cold boot to the waiting agent against restore to the
//! agent's answer.
//!
//! Linux needs hardware virtualization: on a host without it the test boots
//! one L1 guest on QEMU TCG with an emulated AMD SVM (`nested/`) and runs
//! this same entry inside it (about a minute in a one-vCPU L1; in the
//! default suite).
#![cfg(target_arch = "x86_64")]

mod common;
// Shared with kvm_linux.rs, which uses all of it.
#[allow(dead_code)]
mod nested;

use std::time::{Duration, Instant};

use ktstr_vmm::{Console, EndReason, KvmBackend, Machine, VmSpec};
use vm_memory::{Bytes, GuestAddress};

use common::{GO, GO_GPA, PAYLOAD_BYTES};
/// Restores per shape.
const RESTORES: u32 = 4;
/// The shapes: the benchmark's two.
const SHAPES: [&str; 2] = ["1n1l2c1t", "1n2l2c2t"];
/// Prefix of the lines the run inside the L1 reports (figures).
const REPORT: &str = "KTSTR-RESTORE ";

/// The agent: mounts, announces itself, waits for the host's go word, then
/// reads its payload (address and size from the command line) and the
/// host's word, checks for an earlier restore's file, waits 3 s and counts
/// the watchdogs' complaints.
const AGENT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev; mount -t tmpfs tmp /tmp
P=$(tr ' ' '\n' < /proc/cmdline | sed -n 's/^ktstr.payload=//p')
SIZE=${P%@*}; BAR=${P#*@}
echo "AGENT-READY bar=$BAR size=$SIZE uptime=$(cut -d' ' -f1 /proc/uptime)"
while [ "$(devmem 0x6000000 32)" != "0x600DF00D" ]; do usleep 10000; done
echo "AGENT-GO uptime=$(cut -d' ' -f1 /proc/uptime) host=$(devmem 0x6000004 32) payload=$(devmem $BAR 32) tail=$(devmem $((BAR + SIZE - 4)) 32)"
[ -e /tmp/written-by-an-earlier-run ] && echo "AGENT-MARKER present" || echo "AGENT-MARKER absent"
echo leftover > /tmp/written-by-an-earlier-run
sleep 3
echo "AGENT-WARNINGS $(dmesg | grep -ciE 'stall|soft lockup|hard lockup|watchdog: bug|hung task')"
dmesg | grep -iE 'stall|soft lockup|hard lockup|watchdog: bug|hung task' | sed 's/^/AGENT-DMESG /'
echo KTSTR-DONE
poweroff -f
"#;

fn spec(dir: &std::path::Path, topo: &str) -> VmSpec {
    common::agent_spec(dir, topo, AGENT)
}

/// Console lines up to the first containing `marker` (included), or an
/// error with what came.
fn lines_until(console: &Console, marker: &str, budget: Duration) -> Result<Vec<String>, String> {
    let deadline = Instant::now() + budget;
    let mut seen = Vec::new();
    while let Some(l) = console.next_line(deadline.saturating_duration_since(Instant::now())) {
        let done = l.contains(marker);
        seen.push(l);
        if done {
            return Ok(seen);
        }
    }
    Err(format!(
        "no {marker:?} within {budget:?}; console:\n{}",
        seen.join("\n")
    ))
}

/// The first console line containing `marker`.
fn line_with(console: &Console, marker: &str, budget: Duration) -> Result<String, String> {
    lines_until(console, marker, budget).map(|mut l| l.pop().unwrap_or_default())
}

fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or("")
}

fn uptime(line: &str) -> f64 {
    field(line, "uptime").parse().unwrap_or(-1.0)
}

/// A payload that starts with `0x1000 + run` and ends with `0xabcd0000 + run`.
fn payload(run: u32) -> Vec<u8> {
    let mut payload = vec![0u8; PAYLOAD_BYTES as usize];
    payload[..4].copy_from_slice(&(0x1000 + run).to_le_bytes());
    let n = payload.len();
    payload[n - 4..].copy_from_slice(&0xabcd_0000u32.wrapping_add(run).to_le_bytes());
    payload
}

fn secs(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64())
}

/// Boot, save and restore `topo` on this host's KVM; returns the problems.
fn save_restore_here(kvm: &KvmBackend, topo: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = spec(dir.path(), topo);
    let image = dir.path().join("snapshot.img");

    let t0 = Instant::now();
    let mut vm = kvm.boot_vm(&spec).expect("boot");
    let console = vm.take_console().expect("console");
    let ready = match line_with(&console, "AGENT-READY", Duration::from_secs(180)) {
        Ok(l) => l,
        Err(e) => return vec![format!("{topo}: cold boot: {e}")],
    };
    let cold = t0.elapsed();
    if field(&ready, "bar") != "0xe0000000" || field(&ready, "size") != "0x1000000" {
        problems.push(format!(
            "{topo}: the agent found no payload region: {ready}"
        ));
    }
    let t1 = Instant::now();
    if let Err(e) = vm.save(&image) {
        return vec![format!("{topo}: save: {e}")];
    }
    let save = t1.elapsed();
    drop(vm);
    let meta = std::fs::metadata(&image).expect("image");
    let on_disk = {
        use std::os::unix::fs::MetadataExt;
        meta.blocks() * 512
    };
    println!(
        "{REPORT}{topo} cold-boot-to-agent={}s save={}s image-apparent={}MB image-on-disk={}MB",
        secs(cold),
        secs(save),
        meta.len() >> 20,
        on_disk >> 20
    );
    let saved_uptime = uptime(&ready);

    let mut answers = Vec::new();
    for run in 0..RESTORES {
        let t = Instant::now();
        let mut vm = match kvm.restore_vm(&spec, &image, &payload(run)) {
            Ok(vm) => vm,
            Err(e) => {
                problems.push(format!("{topo}: restore {run}: {e}"));
                continue;
            }
        };
        let loaded = t.elapsed();
        let console = vm.take_console().expect("console");
        let mem = vm.memory();
        mem.write_obj(0x7700 + run, GuestAddress(GO_GPA + 4))
            .expect("host word");
        mem.write_obj(GO, GuestAddress(GO_GPA)).expect("go");
        let went = match line_with(&console, "AGENT-GO", Duration::from_secs(120)) {
            Ok(l) => l,
            Err(e) => {
                problems.push(format!("{topo}: restore {run}: {e}"));
                continue;
            }
        };
        let answered = t.elapsed();
        answers.push(answered);
        let rest = lines_until(&console, "KTSTR-DONE", Duration::from_secs(120));
        let end = vm.wait(Some(Instant::now() + Duration::from_secs(60)));
        println!(
            "{REPORT}{topo} restore={run} loaded={}s answered={}s {went}",
            secs(loaded),
            secs(answered)
        );
        let mut check = |ok: bool, what: String| {
            if !ok {
                problems.push(format!("{topo}: restore {run}: {what}"));
            }
        };
        check(
            field(&went, "host") == format!("0x{:08X}", 0x7700 + run),
            format!("host word: {went}"),
        );
        check(
            field(&went, "payload") == format!("0x{:08X}", 0x1000 + run)
                && field(&went, "tail") == format!("0x{:08X}", 0xabcd_0000u32 + run),
            format!("payload: {went}"),
        );
        let up = uptime(&went);
        check(
            up >= saved_uptime && up < saved_uptime + 60.0,
            format!("the guest clock did not go on from the save ({saved_uptime} s): {up} s"),
        );
        match rest {
            Ok(lines) => {
                let said = |w: &str| lines.iter().find(|l| l.contains(w)).cloned();
                check(
                    said("AGENT-MARKER").is_some_and(|l| l.ends_with("absent")),
                    format!("an earlier restore's file: {:?}", said("AGENT-MARKER")),
                );
                check(
                    said("AGENT-WARNINGS").is_some_and(|l| l.ends_with("AGENT-WARNINGS 0")),
                    format!("watchdog complaints: {}", lines.join(" | ")),
                );
            }
            Err(e) => check(false, e),
        }
        check(
            matches!(end, Ok(EndReason::PowerOff)),
            format!("ended {end:?}"),
        );
    }
    answers.sort();
    if let Some(m) = answers.get(answers.len() / 2) {
        println!(
            "{REPORT}{topo} summary cold-boot-to-agent={}s restore-to-answer-median={}s ratio={:.1}x restores={}",
            secs(cold),
            secs(*m),
            cold.as_secs_f64() / m.as_secs_f64().max(1e-9),
            answers.len()
        );
    }
    problems
}

fn run_here() -> Vec<String> {
    let kvm = KvmBackend::new().expect("/dev/kvm");
    SHAPES
        .iter()
        .flat_map(|t| save_restore_here(&kvm, t))
        .collect()
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

#[test]
fn kvm_linux_save_and_restore_many() {
    let problems = if ktstr_vmm::hardware_virtualization() {
        run_here()
    } else {
        let exe = std::env::current_exe().expect("this test binary");
        let kernel = common::kernel();
        let run = nested::L1Run {
            kernel_dir: kernel.parent().expect("the kernel's directory"),
            files: vec![(exe, "/test".into())],
            script:
                "/test --include-ignored --exact kvm_linux_save_and_restore_many --nocapture --test-threads=1 2>&1"
                    .into(),
            timeout: Duration::from_secs(600),
            single_thread: false,
            kvm_amd_params: String::new(),
            memory_mib: nested::L1_MEMORY_MIB,
        };
        let out = nested::run_in_l1_logged(&run);
        for l in out.lines.iter().filter(|l| l.contains(REPORT)) {
            println!("{}", l.trim());
        }
        let mut p = l1_problems(&out.lines);
        if !out
            .lines
            .iter()
            .any(|l| l.contains("test result: ok. 1 passed"))
        {
            p.push(format!(
                "the save/restore run in the L1 did not pass (the L1 {})",
                out.end
            ));
        }
        p
    };
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
