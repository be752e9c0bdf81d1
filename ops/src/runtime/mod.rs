//! The guest's init: the test binary runs as PID 1, sets up the guest, runs
//! exactly one test body in a child process, reports over the channel and
//! powers off. PID 1 never returns and never exits otherwise: every failure,
//! a panic in the body included, becomes a message.

use std::panic::AssertUnwindSafe;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use ktstr_topology::{Topology, TopologyError};

mod agent;
mod shell;
pub(crate) mod system;

pub use agent::{AGENT_MARKER, AGENT_VERSION, encode_payload, is_agent, run_as_agent};
pub use shell::{SHELL_CONFIG_PATH, ShellConfig, is_shell_agent, run_shell_agent};
pub(crate) use system::uptime_ms;
use system::{DevMem, console, power_off, setup_mounts};
pub use system::{INIT_ENVIRONMENT, KERNEL_CONFIG_PATH};

use crate::assert::AssertResult;
use crate::channel::{Message, Writer};
use crate::scheduler::Supervisor;

/// Where the host puts the per-test configuration in the initramfs.
pub const CONFIG_PATH: &str = "/ktstr/config.json";

/// What the host tells the guest about the test to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestConfig {
    /// The registered name of the test.
    pub test: String,
    /// The declared topology, memory and distances included.
    pub topology: TopologyData,
    /// The test's `duration_s`, in milliseconds.
    pub duration_ms: u64,
    /// Periodic snapshots to spread over the body (`num_snapshots`).
    #[serde(default)]
    pub num_snapshots: u32,
    /// False when the VM has more vCPUs than the host has cores: timing
    /// verdicts are then inconclusive.
    pub timing_reliable: bool,
    /// How many vCPUs share one host thread (1: each has its own). Where
    /// several do, a vCPU waits its turn, which a worker sees as a gap.
    #[serde(default = "one")]
    pub vcpus_per_thread: u32,
    /// Guest physical address of the channel region.
    pub channel_gpa: u64,
    /// Size of the channel region.
    pub channel_size: u64,
    /// The boot scheduler's name, when the test runs under a sched_ext
    /// scheduler packed at `/scheduler`.
    #[serde(default)]
    pub boot_scheduler: Option<String>,
    /// How long stopping the scheduler after the body may take, in ms.
    #[serde(default)]
    pub cleanup_budget_ms: u64,
    /// Ask the host for a dump of the scheduler's state after the body even
    /// when the test passes (`dump = true`, `--dump`).
    #[serde(default)]
    pub dump: bool,
    /// Where the kernel keeps the verifier's figures, from its BTF (`None`: unknown, and
    /// the programs' states go unread).
    #[serde(default)]
    pub verifier_offsets: Option<crate::scheduler::VerifierOffsets>,
    /// The run is recorded: the host neither pauses the guest nor answers
    /// it, so nothing here waits for the host (snapshot requests are sent
    /// and not waited on) and the run repeats in a replay.
    #[serde(default)]
    pub record: bool,
}

fn one() -> u32 {
    1
}

/// A [`Topology`] as data: the shape, each node's memory and the distances,
/// so the guest sees exactly what the test declared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopologyData {
    /// The compact shape (`1n2l2c2t`).
    pub shape: String,
    /// MiB of RAM per NUMA node.
    pub node_memory_mib: Vec<u32>,
    /// The distance matrix, one row per node.
    pub distances: Vec<Vec<u8>>,
}

impl TopologyData {
    /// The data of `t`.
    pub fn of(t: &Topology) -> Self {
        let nodes = 0..t.numa_nodes();
        TopologyData {
            shape: t.to_string(),
            node_memory_mib: nodes
                .clone()
                .map(|n| t.node_memory_mib(n).unwrap_or(0))
                .collect(),
            distances: nodes
                .map(|n| t.distance_row(n).unwrap_or_default().to_vec())
                .collect(),
        }
    }

    /// The topology again, validated as the host's was.
    pub fn to_topology(&self) -> Result<Topology, TopologyError> {
        let mut t: Topology = self.shape.parse()?;
        for (node, mib) in (0u32..).zip(&self.node_memory_mib) {
            t = t.with_node_memory_mib(node, *mib)?;
        }
        for (a, row) in (0u32..).zip(&self.distances) {
            for (b, d) in (0u32..).zip(row) {
                if a < b {
                    t = t.with_distance(a, b, *d)?;
                }
            }
        }
        Ok(t)
    }
}

/// A test body as the runtime sees it: the facade builds the scenario
/// context from the config and the run's scheduler supervisor, and calls the
/// user's function.
pub(crate) type Body<'a> = &'a dyn Fn(&GuestConfig, &Supervisor) -> anyhow::Result<AssertResult>;

/// An owned [`Body`], as the test lookup returns it.
pub(crate) type BoxedBody = Box<dyn Fn(&GuestConfig, &Supervisor) -> anyhow::Result<AssertResult>>;

/// True in the guest's init process of a ktstr VM (PID 1 with the test
/// configuration present; a test binary run as PID 1 in a container is not).
pub fn is_guest_init() -> bool {
    // SAFETY: getpid has no preconditions.
    let pid1 = unsafe { libc::getpid() == 1 };
    pid1 && std::path::Path::new(CONFIG_PATH).exists()
}

/// What runs in the body's process when the run ends, however it ended
/// (after the body, or after the boot scheduler failed to start), before
/// the verdict goes out. Set once, in PID 1 before the body's process forks.
pub(crate) type EndHook = Box<dyn Fn(&GuestConfig) + Send + Sync>;
static END_HOOK: std::sync::OnceLock<EndHook> = std::sync::OnceLock::new();

/// Registers the hook run once the run ends, with the guest's configuration
/// (the facade's guest entry reports auto-repro's probe records from it). False when one is registered already.
pub fn on_run_end(hook: EndHook) -> bool {
    END_HOOK.set(hook).is_ok()
}

fn run_end_hook(cfg: &GuestConfig) {
    if let Some(h) = END_HOOK.get() {
        h(cfg);
    }
}

/// Sends `msg` to the host from the body's process (the facade's guest
/// entry reports what it collected, such as auto-repro's probe records).
/// Call it from the body only: it writes through a second writer of the
/// channel, which nothing else uses while the body runs. False when the
/// channel could not be reached or stayed full.
pub fn send_from_body(cfg: &GuestConfig, msg: &Message) -> bool {
    let Ok(m) = DevMem::map(cfg.channel_gpa, cfg.channel_size) else {
        return false;
    };
    let Some(w) = Writer::attach(m) else {
        return false;
    };
    w.send(msg, Duration::from_secs(5))
}

static PANIC_MESSAGE: Mutex<Option<String>> = Mutex::new(None);

/// Runs the body in this (child) process and sends its verdict.
fn run_body(cfg: &GuestConfig, body: Body<'_>, ch: &Writer<DevMem>) {
    std::panic::set_hook(Box::new(|info| {
        let msg = match (
            info.payload().downcast_ref::<&str>(),
            info.payload().downcast_ref::<String>(),
        ) {
            (Some(s), _) => (*s).to_string(),
            (_, Some(s)) => s.clone(),
            _ => "(non-string panic payload)".to_string(),
        };
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let text = format!("test body panicked: {msg}{at}");
        console(&text);
        *PANIC_MESSAGE.lock().unwrap_or_else(|p| p.into_inner()) = Some(text);
    }));
    let sup =
        Supervisor::new(cfg.boot_scheduler.as_deref()).with_verifier_offsets(cfg.verifier_offsets);
    if let Some(name) = &cfg.boot_scheduler {
        // The body starts only once sched_ext runs the boot scheduler.
        match sup.start_boot() {
            Ok(Some(_)) => sup.start_death_watch(),
            Ok(None) => {
                let text = format!(
                    "boot scheduler {name} is not packed at {}",
                    crate::scheduler::BOOT_SCHEDULER
                );
                run_end_hook(cfg);
                send_verdict(
                    ch,
                    AssertResult::fail("scheduler", text.clone()),
                    Some(text),
                    0,
                    vec![crate::scheduler::ErrorKind::MissingBinary],
                );
                return;
            }
            Err(e) => {
                let text = e.to_string();
                run_end_hook(cfg);
                send_verdict(
                    ch,
                    AssertResult::fail("scheduler", text.clone()),
                    Some(text),
                    0,
                    vec![e.kind()],
                );
                return;
            }
        }
    }
    // Steps ask the host for snapshots over a second writer of the same
    // region: nothing else writes to it while the body runs.
    if let Ok(m) = DevMem::map(cfg.channel_gpa, cfg.channel_size)
        && let Some(w) = Writer::attach(m)
    {
        crate::snapshot::install(Box::new(crate::snapshot::ChannelLink::new(w, !cfg.record)));
    }
    ch.send(&Message::BodyStarted, Duration::from_secs(1));
    let t0 = Instant::now();
    let pacing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pacer = (cfg.num_snapshots > 0).then(|| {
        let (stop, n) = (pacing.clone(), cfg.num_snapshots);
        let duration = Duration::from_millis(cfg.duration_ms);
        std::thread::spawn(move || crate::snapshot::pace_periodic(n, duration, &stop))
    });
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| body(cfg, &sup)));
    pacing.store(true, std::sync::atomic::Ordering::Release);
    if let Some(p) = pacer {
        let _ = p.join();
    }
    let body_ms = t0.elapsed().as_millis() as u64;
    let mut error_kinds = Vec::new();
    let (mut verdict, body_error) = match result {
        Ok(Ok(v)) => (v, None),
        Ok(Err(e)) => {
            error_kinds = crate::scheduler::error_kinds(&e);
            let text = format!("test body returned an error: {e:#}");
            (AssertResult::fail("body", text.clone()), Some(text))
        }
        Err(_) => {
            let text = PANIC_MESSAGE
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
                .unwrap_or_else(|| "test body panicked".into());
            (AssertResult::fail("panic", text.clone()), Some(text))
        }
    };
    // A scheduler death the harness did not cause fails the test, unless it
    // was handed to the body as an error (the body's verdict then speaks for
    // it). Either way the host learns of it as a typed message.
    if let Some(death) = sup.died() {
        if sup.unsurfaced_death().is_some() {
            verdict.merge(AssertResult::fail("scheduler", death.to_string()));
            error_kinds.push(crate::scheduler::ErrorKind::SchedulerDied);
            error_kinds.push(crate::scheduler::ErrorKind::Exit(death.kind));
        }
        ch.send(&Message::SchedulerDied(death), Duration::from_secs(1));
    }
    // The scheduler's state, while it is still attached (or, dead, while its
    // maps are held): on a failure, or when the test asked for it.
    // No scheduler of its own ever attached (EEVDF): nothing to dump.
    let progs = sup.prog_infos();
    let had_scheduler = cfg.boot_scheduler.is_some() || !progs.is_empty();
    let why = if sup.died().is_some() {
        Some("the scheduler died")
    } else if !verdict.is_pass() {
        Some("the verdict failed")
    } else {
        cfg.dump.then_some("requested")
    };
    if let Some(why) = why.filter(|_| had_scheduler) {
        let _ = crate::snapshot::capture(&format!("{}:{why}", crate::snapshot::DUMP_SNAPSHOT));
    }
    if !progs.is_empty() {
        ch.send(&Message::BpfPrograms(progs), Duration::from_secs(1));
    }
    if cfg.boot_scheduler.is_some() {
        let t0 = Instant::now();
        let budget = Duration::from_millis(cfg.cleanup_budget_ms.max(1));
        match sup.kill_current() {
            Err(e) => verdict = verdict.note("cleanup", e.to_string()),
            Ok(_) if t0.elapsed() > budget => {
                let took = t0.elapsed();
                verdict = verdict.note(
                    "cleanup",
                    format!(
                        "stopping the scheduler took {took:?}, over the {budget:?} cleanup budget"
                    ),
                );
            }
            Ok(_) => {}
        }
    }
    run_end_hook(cfg);
    send_verdict(ch, verdict, body_error, body_ms, error_kinds);
}

fn send_verdict(
    ch: &Writer<DevMem>,
    verdict: AssertResult,
    body_error: Option<String>,
    body_ms: u64,
    error_kinds: Vec<crate::scheduler::ErrorKind>,
) {
    let msg = Message::Verdict {
        verdict,
        body_error,
        body_ms,
        error_kinds,
    };
    if !ch.send(&msg, Duration::from_secs(10)) {
        console("could not send the verdict: the channel stayed full");
    }
}

/// Forks the body process and reaps every child until it ends.
fn supervise(cfg: &GuestConfig, body: Body<'_>, ch: &Writer<DevMem>) {
    // SAFETY: PID 1 is single-threaded here (the runtime starts before main
    // and has spawned no thread), so the child may run arbitrary code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        ch.send(
            &Message::GuestError(format!(
                "fork of the test process: {}",
                std::io::Error::last_os_error()
            )),
            Duration::from_secs(5),
        );
        return;
    }
    if pid == 0 {
        run_body(cfg, body, ch);
        // SAFETY: _exit ends the child without running PID 1's atexit state.
        unsafe { libc::_exit(0) };
    }
    loop {
        let mut status = 0;
        // SAFETY: status is a valid out-pointer.
        let got = unsafe { libc::waitpid(-1, &mut status, 0) };
        if got < 0 {
            break; // no children left
        }
        if got == pid {
            let how = if libc::WIFSIGNALED(status) {
                Some(format!("killed by signal {}", libc::WTERMSIG(status)))
            } else if libc::WEXITSTATUS(status) != 0 {
                Some(format!("exited with status {}", libc::WEXITSTATUS(status)))
            } else {
                None
            };
            if let Some(how) = how {
                // The body's own process died before reporting: the test's failure.
                let text = format!("the test process {how} before reporting a verdict");
                let verdict = AssertResult::fail("crash", text.clone());
                ch.send(
                    &Message::Verdict {
                        verdict,
                        body_error: Some(text),
                        body_ms: 0,
                        error_kinds: vec![crate::scheduler::ErrorKind::Crash],
                    },
                    Duration::from_secs(5),
                );
            }
            break;
        }
    }
}

/// The guest's init. Call it first thing in PID 1; never returns.
pub fn run_as_init(lookup: &dyn Fn(&str) -> Option<BoxedBody>) -> ! {
    setup_mounts();
    let cfg: GuestConfig = match std::fs::read(CONFIG_PATH)
        .map_err(|e| e.to_string())
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
    {
        Ok(c) => c,
        Err(e) => {
            console(&format!(
                "cannot read {CONFIG_PATH}: {e}; was this binary booted by ktstr?"
            ));
            power_off();
        }
    };
    let ch = match DevMem::map(cfg.channel_gpa, cfg.channel_size) {
        Ok(m) => Writer::init(m, cfg.channel_size),
        Err(e) => {
            console(&format!("cannot map the host channel: {e}"));
            power_off();
        }
    };
    ch.send(
        &Message::Hello {
            uptime_ms: uptime_ms(),
            realtime_ns: system::realtime_ns(),
            release: system::release(),
            test: cfg.test.clone(),
        },
        Duration::from_secs(1),
    );
    match lookup(&cfg.test) {
        Some(body) => supervise(&cfg, &*body, &ch),
        None => {
            ch.send(
                &Message::GuestError(format!("no test named {:?} in this binary", cfg.test)),
                Duration::from_secs(5),
            );
        }
    }
    power_off()
}
