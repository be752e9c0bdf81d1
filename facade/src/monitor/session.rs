//! The monitor of one VM while it runs: a sampling thread beside the
//! runner's watch loop, and the snapshots the watch loop takes by pausing the
//! machine it owns (periodic ones on schedule, named ones when a step asks).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ktstr_ops::channel::{ChannelMem, Message, Reader};
use ktstr_vmm::{GuestMemoryMmap, Machine, VcpuRegs, VmmError};

use super::locate::Locator;
use super::sampler::Sampler;
use super::{KernelPlacement, MonitorError, MonitorLog, Sample, SampleKind, SnapshotBridge};

/// Periodic samples kept (the oldest half is dropped past it).
const MAX_SAMPLES: usize = 20_000;
/// How long a snapshot may take to read before the VM is resumed anyway.
const SNAPSHOT_READ_LIMIT: Duration = Duration::from_secs(10);
/// How often vCPU registers are read while a randomized kernel is not
/// located yet (the vCPU may still be in the decompressor).
const REGISTERS_EVERY: Duration = Duration::from_millis(200);

/// What one VM's monitor does.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// The booted kernel's ELF vmlinux (symbols, BTF, the banner).
    pub(crate) vmlinux: PathBuf,
    /// Booted randomized (bzImage, KASLR): locate it from vCPU registers.
    pub(crate) kaslr: bool,
    /// Where a symbol cache goes when the image's directory is read-only.
    pub(crate) cache_root: PathBuf,
    /// Periodic samples per second (0: none).
    pub(crate) hz: u32,
    /// Paused snapshots spread over the body.
    pub(crate) num_snapshots: u32,
    /// CPUs the VM has: a guest whose `nr_cpu_ids` is still above it (its
    /// boot-time `NR_CPUS`) has not counted its CPUs yet, and is not read.
    pub(crate) nr_cpus: u32,
    /// The VM is recorded: never pause it or read its registers (either
    /// would change when its vCPUs switch, and the replay would not repeat
    /// it). Snapshots and dumps are read while it runs, less consistent.
    pub(crate) record: bool,
}

/// A failure dump as read by the thread, or why it could not be.
type DumpReply = Result<ktstr_guest_mem::SchedulerDump, MonitorError>;

enum Cmd {
    Snapshot(SampleKind, Duration, mpsc::Sender<Sample>),
    Dump(mpsc::Sender<DumpReply>),
    Registers(Result<VcpuRegs, VmmError>),
    Stop,
}

/// The thread's answer when it ends: its samples, or why it never sampled,
/// the CPU time its periodic samples took, and where the kernel ran.
type ThreadEnd = (
    Vec<Sample>,
    Option<MonitorError>,
    Duration,
    Option<KernelPlacement>,
);

/// CPU time the calling thread has used.
fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID is
    // a clock every Linux has; on failure `ts` stays zero.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        ts.tv_sec.max(0) as u64,
        ts.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

/// One VM's monitor.
pub(crate) struct Session {
    plan: Plan,
    boot_at: Instant,
    tx: mpsc::Sender<Cmd>,
    thread: Option<JoinHandle<ThreadEnd>>,
    snapshots: Vec<Sample>,
    /// When the body started and when the guest sent its verdict (from boot).
    body: (Option<Duration>, Option<Duration>),
    /// Set by the thread once the kernel is placed (no more registers needed).
    placed: Arc<AtomicBool>,
    /// When registers were last sent.
    registers_at: Option<Instant>,
    /// The failure dump, once read (see [`crate::dump`]).
    dump: Option<ktstr_record::SchedulerDump>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("plan", &self.plan)
            .field("snapshots", &self.snapshots.len())
            .finish_non_exhaustive()
    }
}

/// Everything the monitor learned of one VM.
#[derive(Debug)]
pub(crate) struct Finished {
    pub(crate) bridge: SnapshotBridge,
    pub(crate) log: MonitorLog,
    pub(crate) periodic_target: u32,
    pub(crate) periodic_fired: u32,
    /// The body's run, from boot: its start to the guest's verdict.
    pub(crate) window: Option<(Duration, Duration)>,
    /// The scheduler's state read at the failure (or on request).
    pub(crate) dump: Option<ktstr_record::SchedulerDump>,
}

impl Session {
    /// Starts the sampling thread over `mem` (symbols and BTF load there,
    /// while the guest boots).
    pub(crate) fn start(plan: Plan, mem: GuestMemoryMmap, boot_at: Instant) -> Self {
        let (tx, rx) = mpsc::channel();
        let p = plan.clone();
        let placed = Arc::new(AtomicBool::new(!plan.kaslr));
        let flag = Arc::clone(&placed);
        let thread = std::thread::Builder::new()
            .name("ktstr-monitor".into())
            .spawn(move || sampling_thread(&p, &mem, boot_at, &rx, &flag))
            .ok();
        Session {
            plan,
            boot_at,
            tx,
            thread,
            snapshots: Vec::new(),
            body: (None, None),
            placed,
            registers_at: None,
            dump: None,
        }
    }

    /// Called on each turn of the runner's watch loop: while a randomized
    /// kernel is not located, hands the thread vCPU 0's registers (read
    /// through the backend) every [`REGISTERS_EVERY`].
    pub(crate) fn tick(&mut self, vm: &mut dyn Machine) {
        if self.plan.record
            || self.placed.load(Ordering::Relaxed)
            || self
                .registers_at
                .is_some_and(|t| t.elapsed() < REGISTERS_EVERY)
            || self.thread.as_ref().is_none_or(|t| t.is_finished())
        {
            return;
        }
        self.registers_at = Some(Instant::now());
        let _ = self.tx.send(Cmd::Registers(vm.vcpu_regs(0)));
    }

    /// Reacts to a message from the guest: the body's start schedules the
    /// periodic snapshots, its verdict drops those not taken (the workload is
    /// over), a step's request is answered with a snapshot.
    pub(crate) fn observe<C: ChannelMem>(
        &mut self,
        msg: &Message,
        vm: &mut dyn Machine,
        reader: &Reader<C>,
    ) {
        match msg {
            Message::BodyStarted => {
                self.body.0 = Some(self.boot_at.elapsed());
            }
            Message::Verdict { .. } => {
                self.body.1 = Some(self.boot_at.elapsed());
            }
            // Periodic ones are paced by the guest's clock (see
            // ktstr_ops::snapshot::pace_periodic), named ones by its steps.
            Message::SnapshotRequest { name, seq, .. }
                if let Some(reason) = crate::dump::request_reason(name) =>
            {
                self.take_dump(vm, &reason);
                reader.ack(*seq);
            }
            Message::SnapshotRequest {
                name,
                seq,
                periodic,
            } => {
                let kind = if *periodic {
                    SampleKind::Periodic
                } else {
                    SampleKind::Named(name.clone())
                };
                self.snapshot(vm, kind);
                reader.ack(*seq);
            }
            _ => {}
        }
    }

    /// Pauses every vCPU, has the thread read the guest, resumes.
    fn snapshot(&mut self, vm: &mut dyn Machine, kind: SampleKind) {
        let elapsed = self.boot_at.elapsed();
        let failed = |e: MonitorError| failed_sample(kind.clone(), elapsed, &e);
        let alive = self.thread.as_ref().is_some_and(|t| !t.is_finished());
        if !alive {
            let why = "the monitor thread is not running (see the monitor's error)";
            self.snapshots
                .push(failed(MonitorError::Unavailable(why.into())));
            return;
        }
        let t0 = Instant::now();
        let pause = !self.plan.record;
        if pause && let Err(e) = vm.pause() {
            self.snapshots
                .push(failed(MonitorError::Unavailable(format!(
                    "pausing the VM: {e}"
                ))));
            return;
        }
        let (reply_tx, reply_rx) = mpsc::channel();
        let sent = self
            .tx
            .send(Cmd::Snapshot(kind.clone(), elapsed, reply_tx))
            .is_ok();
        let got = if sent {
            reply_rx.recv_timeout(SNAPSHOT_READ_LIMIT).ok()
        } else {
            None
        };
        let resumed = if pause { vm.resume() } else { Ok(()) };
        let paused = t0.elapsed();
        let mut s = got.unwrap_or_else(|| {
            failed(MonitorError::Unavailable(format!(
                "no snapshot read within {SNAPSHOT_READ_LIMIT:?}"
            )))
        });
        s.paused = pause.then_some(paused);
        if let Err(e) = resumed {
            s.cpus = Err(MonitorError::Unavailable(format!(
                "resuming the VM after the snapshot: {e}"
            )));
        }
        self.snapshots.push(s);
    }

    /// Pauses every vCPU, has the thread read the scheduler's state (a
    /// failure dump), resumes. Only the first dump of a VM is kept.
    pub(crate) fn take_dump(&mut self, vm: &mut dyn Machine, reason: &str) {
        if self.dump.is_some() {
            return;
        }
        let t = self.boot_at.elapsed();
        let alive = self.thread.as_ref().is_some_and(|t| !t.is_finished());
        if !alive {
            self.dump = Some(crate::dump::unreadable(
                reason,
                t,
                "the monitor thread is not running (see the monitor's error)",
            ));
            return;
        }
        let pause = !self.plan.record;
        if pause && let Err(e) = vm.pause() {
            self.dump = Some(crate::dump::unreadable(
                reason,
                t,
                &format!("pausing the VM: {e}"),
            ));
            return;
        }
        let (reply_tx, reply_rx) = mpsc::channel();
        let got = if self.tx.send(Cmd::Dump(reply_tx)).is_ok() {
            reply_rx.recv_timeout(SNAPSHOT_READ_LIMIT).ok()
        } else {
            None
        };
        if pause {
            let _ = vm.resume();
        }
        self.dump = Some(match got {
            Some(Ok(d)) => crate::dump::to_record(&d, reason, t),
            Some(Err(e)) => crate::dump::unreadable(reason, t, &e.to_string()),
            None => crate::dump::unreadable(
                reason,
                t,
                &format!("no dump read within {SNAPSHOT_READ_LIMIT:?}"),
            ),
        });
    }

    /// Stops the thread and hands over what was learned.
    pub(crate) fn finish(mut self) -> Finished {
        let _ = self.tx.send(Cmd::Stop);
        let (samples, unavailable, cpu, placement) = match self.thread.take().map(JoinHandle::join)
        {
            Some(Ok(end)) => end,
            Some(Err(_)) => (
                Vec::new(),
                Some(MonitorError::Unavailable(
                    "the monitor thread panicked".into(),
                )),
                Duration::ZERO,
                None,
            ),
            None => (
                Vec::new(),
                Some(MonitorError::Unavailable(
                    "the monitor thread could not be started".into(),
                )),
                Duration::ZERO,
                None,
            ),
        };
        let target = self.plan.num_snapshots;
        let bridge = SnapshotBridge::new(std::mem::take(&mut self.snapshots), target);
        Finished {
            periodic_target: target,
            periodic_fired: bridge.stats().periodic_fired,
            bridge,
            log: MonitorLog::new(samples, self.plan.hz, unavailable)
                .with_cpu_time(cpu)
                .with_placement(placement),
            window: self.body.0.zip(self.body.1),
            dump: self.dump.take(),
        }
    }
}

/// The sampling thread: loads the kernel's files, places the kernel in
/// guest memory ([`Locator`]), then samples at `plan.hz` and answers
/// snapshot commands until told to stop.
fn sampling_thread(
    plan: &Plan,
    mem: &GuestMemoryMmap,
    boot_at: Instant,
    rx: &mpsc::Receiver<Cmd>,
    placed: &AtomicBool,
) -> ThreadEnd {
    let files = match super::files::load(&plan.vmlinux, &plan.cache_root) {
        Ok(f) => f,
        Err(e) => return answer_errors(e, rx),
    };
    let (btf, sig) = match files.parts(&plan.vmlinux) {
        Ok(p) => p,
        Err(e) => return answer_errors(e, rx),
    };
    let mut locator = Locator::new(mem, &files.syms, &btf, sig, plan.kaslr, plan.nr_cpus);
    let mut sampler: Option<Sampler<'_, GuestMemoryMmap>> = None;
    let mut placement: Option<KernelPlacement> = None;
    let period = (plan.hz > 0).then(|| Duration::from_secs_f64(1.0 / f64::from(plan.hz)));
    let mut samples = Vec::new();
    let mut cpu = Duration::ZERO;
    let mut next = Instant::now();
    loop {
        let cmd = match period {
            Some(p) => {
                let wait = next.saturating_duration_since(Instant::now());
                match rx.recv_timeout(wait) {
                    Ok(c) => Some(c),
                    Err(RecvTimeoutError::Timeout) => {
                        next += p;
                        // After a long stall, resume the beat instead of catching up.
                        if next < Instant::now() {
                            next = Instant::now() + p;
                        }
                        None
                    }
                    Err(RecvTimeoutError::Disconnected) => Some(Cmd::Stop),
                }
            }
            None => Some(rx.recv().unwrap_or(Cmd::Stop)),
        };
        match cmd {
            None => {
                let c0 = thread_cpu_time();
                if ready(&mut sampler, &mut locator, &mut placement, plan, boot_at)
                    && let Some(s) = sampler.as_mut()
                {
                    samples.push(s.sample(SampleKind::Monitor, boot_at.elapsed()));
                }
                cpu += thread_cpu_time().saturating_sub(c0);
                if samples.len() > MAX_SAMPLES {
                    samples.drain(..MAX_SAMPLES / 2);
                }
            }
            Some(Cmd::Registers(r)) => locator.registers(r),
            Some(Cmd::Snapshot(kind, elapsed, reply)) => {
                let s = if ready(&mut sampler, &mut locator, &mut placement, plan, boot_at)
                    && let Some(s) = sampler.as_mut()
                {
                    s.sample(kind, elapsed)
                } else {
                    failed_sample(kind, elapsed, &locator.why())
                };
                let _ = reply.send(s);
            }
            Some(Cmd::Dump(reply)) => {
                let d = if ready(&mut sampler, &mut locator, &mut placement, plan, boot_at)
                    && let Some(s) = sampler.as_ref()
                {
                    Ok(s.kernel().scheduler_dump(&crate::dump::limits()))
                } else {
                    Err(locator.why())
                };
                let _ = reply.send(d);
            }
            Some(Cmd::Stop) => {
                let why = sampler.is_none().then(|| locator.why());
                return (samples, why, cpu, placement);
            }
        }
        // The runner sends registers while this is false: a placement the
        // guest's own phys_base contradicted is dropped, and asked for again.
        placed.store(locator.placed(), Ordering::Relaxed);
    }
}

/// Builds the sampler once the kernel's layout is known; whether there is one.
fn ready<'k>(
    sampler: &mut Option<Sampler<'k, GuestMemoryMmap>>,
    locator: &mut Locator<'k, GuestMemoryMmap>,
    placement: &mut Option<KernelPlacement>,
    plan: &Plan,
    boot_at: Instant,
) -> bool {
    if sampler.is_none()
        && let Ok((k, mut p)) = locator.kernel()
    {
        p.located_after = boot_at.elapsed();
        *placement = Some(p);
        *sampler = Some(Sampler::new(k).with_max_cpus(plan.nr_cpus));
    }
    sampler.is_some()
}

/// A sample that could not be read, for `e`.
pub(super) fn failed_sample(kind: SampleKind, elapsed: Duration, e: &MonitorError) -> Sample {
    Sample {
        kind,
        elapsed,
        paused: None,
        read_time: Duration::ZERO,
        cpus: Err(e.clone()),
        scheduler: Err(e.clone()),
        dsqs: Err(e.clone()),
        events: Err(e.clone()),
        globals: Err(e.clone()),
    }
}

/// The thread of a VM the monitor cannot read: every snapshot gets the reason.
fn answer_errors(e: MonitorError, rx: &mpsc::Receiver<Cmd>) -> ThreadEnd {
    loop {
        match rx.recv() {
            Ok(Cmd::Snapshot(kind, elapsed, reply)) => {
                let _ = reply.send(failed_sample(kind, elapsed, &e));
            }
            Ok(Cmd::Dump(reply)) => {
                let _ = reply.send(Err(e.clone()));
            }
            Ok(Cmd::Registers(_)) => {}
            Ok(Cmd::Stop) | Err(_) => break,
        }
    }
    (Vec::new(), Some(e), Duration::ZERO, None)
}
