//! Following one booted VM to its end: the channel, the console, the
//! boot-to-init limit, the watchdog and the teardown budget.

use std::time::{Duration, Instant};

use ktstr_ops::channel::{self, ChannelError, Message, Reader};
use ktstr_vmm::{ConsoleEvent, EndReason, Machine, VmmError};

use crate::channel::HostChannel;
use crate::verdict::Observed;

/// How long the guest may take to power off after its verdict.
const TEARDOWN_BUDGET: Duration = Duration::from_secs(30);
/// Console lines kept while the guest runs.
const KEPT_LINES: usize = 2000;

/// Timestamps of one boot, from the channel.
#[derive(Debug, Default, Clone)]
pub(crate) struct Times {
    pub(crate) boot_to_init: Option<Duration>,
    pub(crate) body: Option<Duration>,
    pub(crate) teardown: Option<Duration>,
    /// The scenario's steps as they started.
    pub(crate) steps: Vec<crate::results::StepStart>,
    /// When the host read the verdict, from the boot (the end of the last step).
    pub(crate) verdict_at: Option<Duration>,
    /// The guest's `CLOCK_REALTIME` minus the host's as init started, in
    /// seconds (within one poll of the guest's reading).
    pub(crate) clock_skew: Option<f64>,
    /// The guest's report of its scheduler's BPF programs (the verifier's figures).
    pub(crate) bpf_progs: Option<Vec<ktstr_ops::ProgInfo>>,
}

/// How one boot went.
#[derive(Debug)]
pub(crate) enum Watched {
    /// The guest reached init; the run went to its end.
    Done(Box<Observed>, Times),
    /// The guest never reached init within the boot limit: no test code ran.
    NoInit {
        after: Duration,
        console: Vec<String>,
    },
}

/// Limits of one boot.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) boot_to_init: Duration,
    pub(crate) watchdog: Duration,
    pub(crate) echo_console: bool,
}

/// What the host learned from the channel.
#[derive(Debug, Default)]
struct Seen {
    verdict: Option<(ktstr_ops::AssertResult, Option<String>)>,
    error_kinds: Vec<ktstr_ops::ErrorKind>,
    verdict_at: Option<Instant>,
    guest_errors: Vec<String>,
    death: Option<ktstr_ops::SchedulerDied>,
    times: Times,
    body_started: bool,
    probe: Option<serde_json::Value>,
    /// The guest kernel's release, from its hello.
    release: Option<String>,
}

impl Seen {
    /// Takes in the messages of one poll, read `read_at` from the boot
    /// (before the monitor acted on them: a snapshot a step asked for comes
    /// after the step's start).
    fn absorb(&mut self, msgs: Vec<Message>, read_at: Duration) {
        for m in msgs {
            match m {
                Message::Hello {
                    realtime_ns,
                    release,
                    ..
                } => {
                    self.times.boot_to_init = Some(read_at);
                    self.release = Some(release).filter(|r| !r.is_empty());
                    let host = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0.0, |d| d.as_secs_f64());
                    self.times.clock_skew =
                        (realtime_ns > 0).then_some(realtime_ns as f64 * 1e-9 - host);
                }
                Message::Verdict {
                    verdict,
                    body_error,
                    body_ms,
                    error_kinds,
                } => {
                    self.error_kinds = error_kinds;
                    self.times.body = Some(Duration::from_millis(body_ms));
                    self.verdict = Some((verdict, body_error));
                    self.verdict_at = Some(Instant::now());
                    self.times.verdict_at = Some(read_at);
                }
                Message::Log(l) => println!("guest: {l}"),
                Message::GuestError(e) => self.guest_errors.push(e),
                Message::SchedulerDied(d) => self.death = Some(d),
                Message::BodyStarted => self.body_started = true,
                // Stamped on the monitor samples' clock (from the boot, by
                // the host), within one poll of the guest's writing it.
                Message::StepStarted {
                    index,
                    uptime_ms,
                    ops,
                } => self.times.steps.push(crate::results::StepStart {
                    index,
                    at: read_at,
                    guest_uptime: Duration::from_millis(uptime_ms),
                    ops,
                }),
                Message::ProbeRecords(data) => self.probe = Some(data),
                Message::BpfPrograms(progs) => self.times.bpf_progs = Some(progs),
                _ => {}
            }
        }
    }
}

/// Follows `vm` until it ends, killing it at the limits. With a `tape`
/// (a recorded VM) every console line and message goes on it, and the
/// channel is only watched: the host writes nothing into the guest.
pub(crate) fn watch(
    vm: &mut dyn Machine,
    boot_at: Instant,
    limits: Limits,
    monitor: &mut crate::monitor::Session,
    mut tape: Option<&mut crate::recording::Tape>,
) -> Result<Watched, VmmError> {
    let console = vm.take_console();
    let mem = HostChannel {
        mem: vm.memory().clone(),
        base: channel::CHANNEL_GPA,
    };
    let mut reader = if tape.is_some() {
        Reader::watching(mem)
    } else {
        Reader::new(mem)
    };
    let taped = |tape: &mut Option<&mut crate::recording::Tape>, msgs: &[Message]| {
        if let Some(t) = tape {
            t.messages.extend(
                msgs.iter()
                    .map(|m| serde_json::to_string(m).unwrap_or_default()),
            );
        }
    };
    let watchdog = boot_at + limits.watchdog;
    // A stall before init is judged here only when it comes before the watchdog.
    let init_deadline = Some(boot_at + limits.boot_to_init).filter(|d| *d < watchdog);
    let mut lines: Vec<String> = Vec::new();
    let mut seen = Seen::default();
    let mut channel_fault: Option<ChannelError> = None;
    let end = loop {
        if let Some(c) = &console {
            while let ConsoleEvent::Line(l) = c.recv(Duration::ZERO) {
                if limits.echo_console {
                    eprintln!("console: {l}");
                }
                if let Some(t) = tape.as_mut() {
                    t.console.push(l.clone());
                }
                lines.push(l);
                if lines.len() > KEPT_LINES {
                    lines.drain(..KEPT_LINES / 2);
                }
            }
        }
        match reader.poll() {
            Ok(msgs) => {
                taped(&mut tape, &msgs);
                let read_at = boot_at.elapsed();
                for m in &msgs {
                    monitor.observe(m, vm, &reader);
                }
                seen.absorb(msgs, read_at);
            }
            Err(ChannelError::NotInitialized) => {}
            Err(e) => channel_fault = Some(e),
        }
        monitor.tick(vm);
        if let Some(end) = vm.try_wait()? {
            break end;
        }
        let now = Instant::now();
        if seen.times.boot_to_init.is_none() && init_deadline.is_some_and(|d| now >= d) {
            vm.kill();
            return Ok(Watched::NoInit {
                after: boot_at.elapsed(),
                console: lines,
            });
        }
        if now >= watchdog {
            // The hung VM's scheduler, before it goes.
            monitor.take_dump(vm, "the watchdog (the VM hung)");
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
    // The mapping outlives the VM: collect what the guest wrote last.
    if let Ok(msgs) = reader.poll() {
        taped(&mut tape, &msgs);
        seen.absorb(msgs, boot_at.elapsed());
    }
    if let Some(c) = &console {
        while let Some(l) = c.next_line(Duration::from_millis(50)) {
            if let Some(t) = tape.as_mut() {
                t.console.push(l.clone());
            }
            lines.push(l);
        }
    }
    seen.times.teardown = seen.verdict_at.map(|t| t.elapsed());
    let observed = Observed {
        end,
        verdict: seen.verdict,
        error_kinds: seen.error_kinds,
        guest_errors: seen.guest_errors,
        scheduler_death: seen.death,
        channel_fault: channel_fault.map(|f| f.to_string()),
        console: lines,
        body_started: seen.body_started,
        probe: seen.probe,
        booted_release: seen.release,
        monitor: crate::verdict::MonitorFindings::default(),
    };
    Ok(Watched::Done(Box::new(observed), seen.times))
}
