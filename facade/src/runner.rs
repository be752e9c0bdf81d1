//! The host side of one `#[ktstr_test]`: build the guest root, boot the VM,
//! follow the channel and the console, and turn what happened into a verdict.

use std::io::Write;
use std::time::{Duration, Instant};

use ktstr_initramfs::{Archive, BaseSpec, Cache};
use ktstr_ops::assert::AssertResult;
use ktstr_ops::channel::{self, ChannelError, ChannelMem, Message, Reader};
use ktstr_ops::runtime::{CONFIG_PATH, GuestConfig};
use ktstr_topology::Topology;
use ktstr_vmm::{ConsoleEvent, EndReason, GuestMemoryMmap, ReservedRegion, VmSpec};
use vm_memory::{Bytes, GuestAddress};

use crate::test_support::TestEntry;

/// How long a guest may take from boot to the harness's init before the boot
/// counts as stalled (`KTSTR_BOOT_TIMEOUT_S` overrides). TCG boots take 3-10 s.
const BOOT_TO_INIT_LIMIT: Duration = Duration::from_secs(45);
/// Boots tried when the guest stalls before reaching init.
const BOOT_ATTEMPTS: u32 = 2;

fn boot_to_init_limit() -> Duration {
    std::env::var("KTSTR_BOOT_TIMEOUT_S")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(BOOT_TO_INIT_LIMIT, Duration::from_secs)
}

/// One boot of a test VM.
enum Attempt {
    /// The guest reached init; the run went to its end.
    Done(Outcome, Times),
    /// The guest never reached init within the boot limit: no test code ran.
    NoInit {
        after: Duration,
        console: Vec<String>,
    },
}

/// How long the guest may take to power off after its verdict.
const TEARDOWN_BUDGET: Duration = Duration::from_secs(30);
/// Console lines quoted in a failure.
const QUOTED_LINES: usize = 30;

/// The outcome of one test VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The test passed (or failed as `expect_err` wanted).
    Pass(String),
    /// The test failed.
    Fail(String),
    /// The verdict depends on timing the VM could not provide.
    Inconclusive(String),
}

/// The channel region seen through the host's mapping of guest RAM.
struct HostChannel {
    mem: GuestMemoryMmap,
    base: u64,
}

impl ChannelMem for HostChannel {
    fn read(&self, off: u64, buf: &mut [u8]) {
        if self
            .mem
            .read_slice(buf, GuestAddress(self.base + off))
            .is_err()
        {
            buf.fill(0);
        }
    }
    fn write(&self, off: u64, buf: &[u8]) {
        let _ = self.mem.write_slice(buf, GuestAddress(self.base + off));
    }
    fn load_u64(&self, off: u64) -> u64 {
        self.mem
            .load(
                GuestAddress(self.base + off),
                std::sync::atomic::Ordering::Acquire,
            )
            .unwrap_or(0)
    }
    fn store_u64(&self, off: u64, v: u64) {
        let _ = self.mem.store(
            v,
            GuestAddress(self.base + off),
            std::sync::atomic::Ordering::Release,
        );
    }
}

/// Timestamps for the one-line breakdown.
#[derive(Debug, Default)]
struct Times {
    initramfs: Duration,
    slot_wait: Duration,
    boot_to_init: Option<Duration>,
    body: Option<Duration>,
    teardown: Option<Duration>,
    total: Duration,
    /// The backend that ran the VM (`kvm`, `qemu-tcg`, ...), for the summary line.
    backend: String,
}

fn secs(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".to_string(), |d| format!("{:.2}s", d.as_secs_f64()))
}

fn topology_of(entry: &TestEntry) -> Result<Topology, String> {
    let c = &entry.config;
    Topology::new(c.numa_nodes, c.llcs, c.cores, c.threads)
        .and_then(|t| t.with_memory_mib(c.memory_mib))
        .map_err(|e| format!("invalid topology: {e}"))
}

fn quote(lines: &[String]) -> String {
    if lines.is_empty() {
        return "(no console output)".into();
    }
    let start = lines.len().saturating_sub(QUOTED_LINES);
    format!("last console lines:\n    {}", lines[start..].join("\n    "))
}

/// Runs one test in a VM.
pub fn run(entry: &TestEntry) -> Outcome {
    run_with_kernel(entry, None)
}

/// Runs one test in a VM booting `kernel` (default: the resolution order).
pub fn run_with_kernel(entry: &TestEntry, kernel: Option<&std::path::Path>) -> Outcome {
    let t0 = Instant::now();
    for attempt in 1..=BOOT_ATTEMPTS {
        let (outcome, mut times) = match run_vm(entry, t0, kernel) {
            Ok(Attempt::Done(outcome, times)) => (outcome, times),
            Ok(Attempt::NoInit { after, console }) if attempt < BOOT_ATTEMPTS => {
                // An infrastructure stall before any test code ran: said
                // loudly, then booted again.
                let _ = std::io::stderr().write_all(
                    format!(
                        "ktstr: {}: WARNING: boot {attempt} did not reach init within {:.0}s; \
                         booting again. {}\n",
                        entry.name,
                        after.as_secs_f64(),
                        quote(&console)
                    )
                    .as_bytes(),
                );
                continue;
            }
            Ok(Attempt::NoInit { after, console }) => {
                return Outcome::Fail(format!(
                    "hung before init: {BOOT_ATTEMPTS} boots in a row did not reach the harness's \
                     init within {:.0}s\n{}",
                    after.as_secs_f64(),
                    quote(&console)
                ));
            }
            Err(infra) => return Outcome::Fail(infra),
        };
        times.total = t0.elapsed();
        let topo = topology_of(entry)
            .map(|t| t.to_string())
            .unwrap_or_default();
        let line = format!(
            "ktstr: {} [{topo}] on {}: initramfs {:.0}ms, slot wait {:.2}s, boot-to-init {}, body {}, teardown {}, total {:.2}s\n",
            entry.name,
            times.backend,
            times.initramfs.as_secs_f64() * 1000.0,
            times.slot_wait.as_secs_f64(),
            secs(times.boot_to_init),
            secs(times.body),
            secs(times.teardown),
            times.total.as_secs_f64(),
        );
        // Straight to the stream, past libtest's capture: one line per test.
        let _ = std::io::stderr().write_all(line.as_bytes());
        record(entry, &topo, &outcome, times.total);
        return outcome;
    }
    unreachable!("the last attempt always returns")
}

/// Appends one JSON line per test to `$KTSTR_RESULTS`, if set, for
/// verdict tables (`cargo xtask demo`).
fn record(entry: &TestEntry, topology: &str, outcome: &Outcome, wall: Duration) {
    let Some(path) = std::env::var_os("KTSTR_RESULTS") else {
        return;
    };
    let (verdict, detail) = match outcome {
        Outcome::Pass(d) => ("pass", d),
        Outcome::Fail(d) => ("FAIL", d),
        Outcome::Inconclusive(d) => ("inconclusive", d),
    };
    let line = serde_json::json!({
        "test": entry.name,
        "topology": topology,
        "verdict": verdict,
        "expect_err": entry.config.expect_err,
        "wall_s": wall.as_secs_f64(),
        "detail": detail.lines().next().unwrap_or(""),
    });
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        // One write per line: appends from concurrent tests do not interleave.
        let _ = f.write_all(format!("{line}\n").as_bytes());
    }
}

fn run_vm(
    entry: &TestEntry,
    t0: Instant,
    kernel: Option<&std::path::Path>,
) -> Result<Attempt, String> {
    let cfg = &entry.config;
    let topology = topology_of(entry)?;
    let node0_mib = u64::from(topology.node_memory_mib(0).unwrap_or(0));
    let channel_end_mib = (channel::CHANNEL_GPA + channel::CHANNEL_SIZE) >> 20;
    if node0_mib < channel::MIN_GUEST_MIB.max(channel_end_mib + 16) {
        return Err(format!(
            "memory_mib = {} leaves NUMA node 0 only {node0_mib} MiB; ktstr needs at least {} MiB \
             there (raise memory_mib)",
            cfg.memory_mib,
            channel::MIN_GUEST_MIB
        ));
    }
    let kernel = crate::kernel::resolve(kernel).map_err(|e| e.to_string())?;
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the test binary: {e}"))?;
    let cache = Cache::open_default().map_err(|e| e.to_string())?;
    // Schedulers: resolved on the host, checked against the kernel, packed.
    let boot = match cfg.scheduler.filter(|s| s.is_sched_ext()) {
        Some(s) => crate::schedulers::resolve(&s)?.map(|p| (s, p)),
        None => None,
    };
    let mut staged = Vec::new();
    for s in cfg.staged_schedulers {
        if let Some(p) = crate::schedulers::resolve(s)? {
            staged.push((s, p));
        }
    }
    if boot.is_some() || !staged.is_empty() {
        crate::schedulers::check_kernel(&kernel.vmlinux)?;
    }
    let mut overlay = Archive::new();
    let spec = crate::schedulers::pack(
        boot.as_ref().map(|(s, p)| (s, p.clone())),
        &staged,
        BaseSpec::new().binary(exe, "/init"),
        &mut overlay,
    )?;
    let base = cache
        .base(&spec)
        .map_err(|e| format!("packing the test binary and schedulers: {e}"))?;
    let vcpus = topology.nr_cpus() as usize;
    let cores = crate::slots::host_cores();
    let guest_cfg = GuestConfig {
        test: entry.name.to_string(),
        topology: topology.to_string(),
        memory_mib: cfg.memory_mib,
        duration_ms: u64::from(cfg.duration_s) * 1000,
        timing_reliable: vcpus <= cores,
        channel_gpa: channel::CHANNEL_GPA,
        channel_size: channel::CHANNEL_SIZE,
        boot_scheduler: boot.as_ref().map(|(s, _)| s.name.to_string()),
        cleanup_budget_ms: cfg.cleanup_budget_ms,
    };
    let json = serde_json::to_vec(&guest_cfg).map_err(|e| e.to_string())?;
    overlay
        .add_bytes(CONFIG_PATH, 0o644, json)
        .map_err(|e| e.to_string())?;
    let overlay = overlay.to_vec().map_err(|e| e.to_string())?;
    let initrd = base
        .with_overlay(&overlay)
        .map_err(|e| format!("writing the initrd: {e}"))?;
    let mut times = Times {
        initramfs: t0.elapsed(),
        ..Times::default()
    };

    let mut spec = VmSpec::new(&kernel.vmlinux, topology);
    spec.initrd = Some(initrd.path().to_path_buf());
    spec.cmdline.push_str(" rdinit=/init");
    spec.reserved.push(ReservedRegion {
        gpa: channel::CHANNEL_GPA,
        size: channel::CHANNEL_SIZE,
    });
    spec.name = format!(
        "ktstr-{}-{}",
        std::process::id(),
        entry.name.replace("::", "-")
    );

    let waited = Instant::now();
    let _slots = crate::slots::acquire(vcpus).map_err(|e| format!("taking VM slots: {e}"))?;
    times.slot_wait = waited.elapsed();
    let backend = crate::backend().map_err(|e| e.to_string())?;
    times.backend = backend.name();
    let boot_at = Instant::now();
    let mut vm = backend
        .boot(&spec)
        .map_err(|e| format!("booting the VM ({}): {e}", backend.name()))?;
    let console = vm.take_console();
    let mut reader = Reader::new(HostChannel {
        mem: vm.memory().clone(),
        base: channel::CHANNEL_GPA,
    });
    let verbose = std::env::var_os("KTSTR_VERBOSE").is_some_and(|v| v != "0");
    let watchdog = boot_at + Duration::from_secs(u64::from(cfg.watchdog_timeout_s));
    // A stall before init is judged here only when it comes before the watchdog.
    let init_deadline = Some(boot_at + boot_to_init_limit()).filter(|d| *d < watchdog);
    let mut lines: Vec<String> = Vec::new();
    let mut seen = Seen::default();
    let mut channel_fault: Option<ChannelError> = None;
    let end = loop {
        if let Some(c) = &console {
            while let ConsoleEvent::Line(l) = c.recv(Duration::ZERO) {
                if verbose {
                    eprintln!("console: {l}");
                }
                lines.push(l);
                if lines.len() > 2000 {
                    lines.drain(..1000);
                }
            }
        }
        match reader.poll() {
            Ok(msgs) => seen.absorb(msgs, boot_at, &mut times),
            Err(ChannelError::NotInitialized) => {}
            Err(e) => channel_fault = Some(e),
        }
        if let Some(end) = vm.try_wait().map_err(|e| e.to_string())? {
            break end;
        }
        let now = Instant::now();
        if times.boot_to_init.is_none() && init_deadline.is_some_and(|d| now >= d) {
            vm.kill();
            return Ok(Attempt::NoInit {
                after: boot_at.elapsed(),
                console: lines,
            });
        }
        if now >= watchdog {
            reader.signal(channel::SIGNAL_STOP);
            vm.kill();
            break EndReason::Timeout;
        }
        if seen.verdict_at.is_some_and(|t| now >= t + TEARDOWN_BUDGET) {
            vm.kill();
            seen.guest_errors.push(format!(
                "the guest did not power off within {TEARDOWN_BUDGET:?} of its verdict"
            ));
            break EndReason::Killed;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // The mapping outlives QEMU: collect what the guest wrote last.
    if let Ok(msgs) = reader.poll() {
        seen.absorb(msgs, boot_at, &mut times);
    }
    if let Some(c) = &console {
        while let Some(l) = c.next_line(Duration::from_millis(50)) {
            lines.push(l);
        }
    }
    times.teardown = seen.verdict_at.map(|t| t.elapsed());
    let outcome = classify(
        entry,
        end,
        seen.verdict,
        &seen.guest_errors,
        channel_fault,
        &lines,
    );
    Ok(Attempt::Done(outcome, times))
}

/// What the host learned from the channel.
#[derive(Debug, Default)]
struct Seen {
    verdict: Option<(AssertResult, Option<String>)>,
    verdict_at: Option<Instant>,
    guest_errors: Vec<String>,
}

impl Seen {
    fn absorb(&mut self, msgs: Vec<Message>, boot_at: Instant, times: &mut Times) {
        for m in msgs {
            match m {
                Message::Hello { .. } => times.boot_to_init = Some(boot_at.elapsed()),
                Message::Verdict {
                    verdict,
                    body_error,
                    body_ms,
                } => {
                    times.body = Some(Duration::from_millis(body_ms));
                    self.verdict = Some((verdict, body_error));
                    self.verdict_at = Some(Instant::now());
                }
                Message::Log(l) => println!("guest: {l}"),
                Message::GuestError(e) => self.guest_errors.push(e),
                _ => {}
            }
        }
    }
}

fn classify(
    entry: &TestEntry,
    end: EndReason,
    verdict: Option<(AssertResult, Option<String>)>,
    guest_errors: &[String],
    channel_fault: Option<ChannelError>,
    lines: &[String],
) -> Outcome {
    let expect_err = entry.config.expect_err;
    // Failures of the machinery are never inverted by expect_err.
    let infra = |what: String| {
        let mut msg = what;
        for e in guest_errors {
            msg.push_str(&format!("\n  guest harness: {e}"));
        }
        if let Some(f) = &channel_fault {
            msg.push_str(&format!("\n  channel: {f}"));
        }
        Outcome::Fail(format!("{msg}\n{}", quote(lines)))
    };
    match &end {
        EndReason::Panic { lines: panic } => {
            return Outcome::Fail(format!(
                "guest kernel panic (never inverted by expect_err):\n    {}",
                panic.join("\n    ")
            ));
        }
        EndReason::Timeout => {
            return infra(format!(
                "hung: the guest did not finish within watchdog_timeout_s = {} s",
                entry.config.watchdog_timeout_s
            ));
        }
        EndReason::Crashed { detail } => return infra(format!("the VM crashed: {detail}")),
        EndReason::Reset if verdict.is_none() => {
            return infra("the guest reset before reporting (init crash or triple fault)".into());
        }
        _ => {}
    }
    let Some((v, body_error)) = verdict else {
        return infra(format!("the guest ended ({end}) without a verdict"));
    };
    if !guest_errors.is_empty() {
        return infra(format!(
            "the guest ended ({end}) after its verdict with harness errors"
        ));
    }
    let failed = !v.is_pass();
    let mut text = match &body_error {
        Some(e) if v.details().len() <= 1 => e.clone(),
        _ => v.to_string(),
    };
    let sched_died = v.failures().any(|d| d.check == "scheduler")
        || body_error.as_deref().is_some_and(|e| e.contains(" died: "));
    if sched_died {
        // What the kernel said about it, from the console.
        let scx: Vec<&String> = lines
            .iter()
            .skip_while(|l| !l.contains("sched_ext: BPF scheduler") || !l.contains("disabled"))
            .take(40)
            .collect();
        if !scx.is_empty() {
            let quoted: Vec<&str> = scx.iter().map(|l| l.as_str()).collect();
            text.push_str(&format!(
                "\n  kernel sched_ext dump (console):\n    {}",
                quoted.join("\n    ")
            ));
        }
        if entry.config.auto_repro {
            text.push_str(
                "\n  auto-repro: this scheduler death would rerun the scenario in a probe VM \
                 (auto-repro is not built yet)",
            );
        }
    }
    match (failed, expect_err) {
        // Timing checks that would have failed on an overcommitted VM are
        // notes plus inconclusive reasons: no hard failure, no trustworthy pass.
        (false, false) if !v.inconclusive().is_empty() => Outcome::Inconclusive(format!(
            "{text}\n  inconclusive: {}",
            v.inconclusive().join("; ")
        )),
        (false, false) => Outcome::Pass(text),
        (true, true) => Outcome::Pass(format!("failed as expected (expect_err): {text}")),
        (false, true) => Outcome::Fail(format!("expect_err test passed, but it must fail: {text}")),
        (true, false) => Outcome::Fail(text),
    }
}
