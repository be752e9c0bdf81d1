//! The monitor of one VM while it runs: a sampling thread beside the
//! runner's watch loop, and the snapshots the watch loop takes by pausing the
//! machine it owns (periodic ones on schedule, named ones when a step asks).

use std::path::PathBuf;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ktstr_btf::Btf;
use ktstr_guest_mem::GuestKernel;
use ktstr_ops::channel::{ChannelMem, Message, Reader};
use ktstr_vmm::{GuestMemoryMmap, Machine};

use super::sampler::{Sampler, nokaslr_layout};
use super::{MonitorError, MonitorLog, Sample, SampleKind, SnapshotBridge};

/// Periodic samples kept (the oldest half is dropped past it).
const MAX_SAMPLES: usize = 20_000;
/// How long a snapshot may take to read before the VM is resumed anyway.
const SNAPSHOT_READ_LIMIT: Duration = Duration::from_secs(10);

/// What one VM's monitor does.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// The booted image.
    pub(crate) vmlinux: PathBuf,
    /// Where a symbol cache goes when the image's directory is read-only.
    pub(crate) cache_root: PathBuf,
    /// Periodic samples per second (0: none).
    pub(crate) hz: u32,
    /// Paused snapshots spread over the body.
    pub(crate) num_snapshots: u32,
    /// The body's declared duration.
    pub(crate) duration: Duration,
    /// CPUs the VM has: a guest whose `nr_cpu_ids` is still above it (its
    /// boot-time `NR_CPUS`) has not counted its CPUs yet, and is not read.
    pub(crate) nr_cpus: u32,
}

enum Cmd {
    Snapshot(SampleKind, Duration, mpsc::Sender<Sample>),
    Stop,
}

/// The thread's answer when it ends: its samples, or why it never sampled,
/// and the CPU time its periodic samples took.
type ThreadEnd = (Vec<Sample>, Option<MonitorError>, Duration);

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
    /// Periodic snapshots still to take, soonest first.
    due: Vec<Instant>,
    snapshots: Vec<Sample>,
    /// When the body started and when the guest sent its verdict (from boot).
    body: (Option<Duration>, Option<Duration>),
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
}

impl Session {
    /// Starts the sampling thread over `mem` (symbols and BTF load there,
    /// while the guest boots).
    pub(crate) fn start(plan: Plan, mem: GuestMemoryMmap, boot_at: Instant) -> Self {
        let (tx, rx) = mpsc::channel();
        let p = plan.clone();
        let thread = std::thread::Builder::new()
            .name("ktstr-monitor".into())
            .spawn(move || sampling_thread(&p, &mem, boot_at, &rx))
            .ok();
        Session {
            plan,
            boot_at,
            tx,
            thread,
            due: Vec::new(),
            snapshots: Vec::new(),
            body: (None, None),
        }
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
                let n = self.plan.num_snapshots;
                let now = Instant::now();
                self.due = (1..=n)
                    .map(|i| now + self.plan.duration.mul_f64(f64::from(i) / f64::from(n + 1)))
                    .collect();
            }
            Message::Verdict { .. } => {
                self.body.1 = Some(self.boot_at.elapsed());
                self.due.clear();
            }
            Message::SnapshotRequest { name, seq } => {
                self.snapshot(vm, SampleKind::Named(name.clone()));
                reader.ack(*seq);
            }
            _ => {}
        }
    }

    /// Takes the periodic snapshots that are due.
    pub(crate) fn tick(&mut self, vm: &mut dyn Machine) {
        let now = Instant::now();
        while self.due.first().is_some_and(|d| *d <= now) {
            self.due.remove(0);
            self.snapshot(vm, SampleKind::Periodic);
        }
    }

    /// Pauses every vCPU, has the thread read the guest, resumes.
    fn snapshot(&mut self, vm: &mut dyn Machine, kind: SampleKind) {
        let elapsed = self.boot_at.elapsed();
        let failed = |e: MonitorError| Sample {
            kind: kind.clone(),
            elapsed,
            paused: None,
            read_time: Duration::ZERO,
            cpus: Err(e.clone()),
            scheduler: Err(e.clone()),
            dsqs: Err(e.clone()),
            events: Err(e.clone()),
            globals: Err(e),
        };
        let alive = self.thread.as_ref().is_some_and(|t| !t.is_finished());
        if !alive {
            let why = "the monitor thread is not running (see the monitor's error)";
            self.snapshots
                .push(failed(MonitorError::Unavailable(why.into())));
            return;
        }
        let t0 = Instant::now();
        if let Err(e) = vm.pause() {
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
        let resumed = vm.resume();
        let paused = t0.elapsed();
        let mut s = got.unwrap_or_else(|| {
            failed(MonitorError::Unavailable(format!(
                "no snapshot read within {SNAPSHOT_READ_LIMIT:?}"
            )))
        });
        s.paused = Some(paused);
        if let Err(e) = resumed {
            s.cpus = Err(MonitorError::Unavailable(format!(
                "resuming the VM after the snapshot: {e}"
            )));
        }
        self.snapshots.push(s);
    }

    /// Stops the thread and hands over what was learned.
    pub(crate) fn finish(mut self) -> Finished {
        let _ = self.tx.send(Cmd::Stop);
        let (samples, unavailable, cpu) = match self.thread.take().map(JoinHandle::join) {
            Some(Ok(end)) => end,
            Some(Err(_)) => (
                Vec::new(),
                Some(MonitorError::Unavailable(
                    "the monitor thread panicked".into(),
                )),
                Duration::ZERO,
            ),
            None => (
                Vec::new(),
                Some(MonitorError::Unavailable(
                    "the monitor thread could not be started".into(),
                )),
                Duration::ZERO,
            ),
        };
        let target = self.plan.num_snapshots;
        let bridge = SnapshotBridge::new(std::mem::take(&mut self.snapshots), target);
        Finished {
            periodic_target: target,
            periodic_fired: bridge.stats().periodic_fired,
            bridge,
            log: MonitorLog::new(samples, self.plan.hz, unavailable).with_cpu_time(cpu),
            window: self.body.0.zip(self.body.1),
        }
    }
}

/// The sampling thread: loads the kernel's files, then samples at `plan.hz`
/// and answers snapshot commands until told to stop.
fn sampling_thread(
    plan: &Plan,
    mem: &GuestMemoryMmap,
    boot_at: Instant,
    rx: &mpsc::Receiver<Cmd>,
) -> ThreadEnd {
    let files = match super::files::load(&plan.vmlinux, &plan.cache_root) {
        Ok(f) => f,
        Err(e) => return answer_errors(e, rx),
    };
    let btf = match Btf::parse(&files.btf) {
        Ok(b) => b,
        Err(e) => {
            let e = MonitorError::Unavailable(format!("the kernel's BTF: {e}"));
            return answer_errors(e, rx);
        }
    };
    let layout = GuestKernel::new(
        mem,
        &files.syms,
        &btf,
        ktstr_guest_mem::AddressLayout::nokaslr(),
    )
    .map_err(MonitorError::from)
    .and_then(|k| nokaslr_layout(&k));
    let kernel = layout.and_then(|l| {
        GuestKernel::new(mem, &files.syms, &btf, l)
            .map_err(|e| MonitorError::Unavailable(e.to_string()))
    });
    let kernel = match kernel {
        Ok(k) => k,
        Err(e) => return answer_errors(e, rx),
    };
    let mut sampler = Sampler::new(kernel).with_max_cpus(plan.nr_cpus);
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
                samples.push(sampler.sample(SampleKind::Monitor, boot_at.elapsed()));
                cpu += thread_cpu_time().saturating_sub(c0);
                if samples.len() > MAX_SAMPLES {
                    samples.drain(..MAX_SAMPLES / 2);
                }
            }
            Some(Cmd::Snapshot(kind, elapsed, reply)) => {
                let _ = reply.send(sampler.sample(kind, elapsed));
            }
            Some(Cmd::Stop) => return (samples, None, cpu),
        }
    }
}

/// The thread of a VM the monitor cannot read: every snapshot gets the reason.
fn answer_errors(e: MonitorError, rx: &mpsc::Receiver<Cmd>) -> ThreadEnd {
    while let Ok(Cmd::Snapshot(kind, elapsed, reply)) = rx.recv() {
        let _ = reply.send(Sample {
            kind,
            elapsed,
            paused: None,
            read_time: Duration::ZERO,
            cpus: Err(e.clone()),
            scheduler: Err(e.clone()),
            dsqs: Err(e.clone()),
            events: Err(e.clone()),
            globals: Err(e.clone()),
        });
    }
    (Vec::new(), Some(e), Duration::ZERO)
}
