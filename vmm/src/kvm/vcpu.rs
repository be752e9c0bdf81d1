//! vCPU threads: the run loop, the kick (a signal plus `immediate_exit`), the
//! pause rendezvous (every vCPU parks and snapshots its registers), and the end
//! of the VM (power-off, reset, a fatal exit).

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, Once};

use kvm_bindings::{Msrs, kvm_msr_entry, kvm_run};
use kvm_ioctls::{VcpuExit, VcpuFd};

use super::devices::{BusEvent, IoBus};
use super::diag::{ExitLog, VcpuDiag};
use super::state::VcpuState;
use crate::KvmStateError;
pub use crate::VcpuRegs;

/// Why the VM stopped on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum End {
    PowerOff,
    Reset,
    /// KVM_EXIT_SHUTDOWN: a reset to the guest, a failure to diagnose.
    TripleFault(String),
    Fatal(String),
    Killed,
}

#[derive(Debug, Default)]
struct State {
    running: usize,
    parked: usize,
    end: Option<End>,
    regs: Vec<Option<Result<VcpuRegs, KvmStateError>>>,
    threads: Vec<libc::pthread_t>,
    /// The latest request for every parked vCPU's whole state ([`Shared::capture`]).
    capture_gen: u64,
    /// Per vCPU: the request it last answered, and its answer (taken by the requester).
    captured: Vec<(u64, Option<Result<VcpuState, KvmStateError>>)>,
    /// Per vCPU: its registers and last exits as it left its run loop.
    farewells: Vec<Option<VcpuDiag>>,
}

/// What the vCPU threads and the machine share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) bus: IoBus,
    pause: AtomicBool,
    exit: AtomicBool,
    state: Mutex<State>,
    cond: Condvar,
}

thread_local! {
    /// This thread's `kvm_run`, for the kick handler.
    static KVM_RUN: Cell<*mut kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

extern "C" fn kick_handler(_: libc::c_int) {
    let _ = KVM_RUN.try_with(|p| {
        let run = p.get();
        if !run.is_null() {
            // SAFETY: `run` is this thread's mapped kvm_run, set by the vCPU loop
            // while its VcpuFd (which owns the mapping) is alive and cleared
            // before it is dropped; immediate_exit is a plain byte the kernel
            // reads on KVM_RUN entry, so a volatile byte store is sound here.
            unsafe { std::ptr::write_volatile(&raw mut (*run).immediate_exit, 1) };
        }
    });
}

/// The real-time signal that kicks a vCPU out of KVM_RUN.
fn kick_signal() -> libc::c_int {
    libc::SIGRTMIN() + 3
}

/// Installs the kick handler once per process (without SA_RESTART, so KVM_RUN
/// returns EINTR).
pub(crate) fn install_kick_handler() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: `act` is fully initialized (zeroed, then handler and an empty
        // mask); kick_handler only touches a thread-local and does a volatile
        // store, both async-signal-safe.
        unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = kick_handler as *const () as usize;
            libc::sigemptyset(&mut act.sa_mask);
            libc::sigaction(kick_signal(), &act, std::ptr::null_mut());
        }
    });
}

impl Shared {
    pub(crate) fn new(bus: IoBus, vcpus: usize) -> Self {
        Shared {
            bus,
            pause: AtomicBool::new(false),
            exit: AtomicBool::new(false),
            state: Mutex::new(State {
                running: vcpus,
                regs: vec![None; vcpus],
                captured: (0..vcpus).map(|_| (0, None)).collect(),
                farewells: vec![None; vcpus],
                ..State::default()
            }),
            cond: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn set_threads(&self, threads: Vec<libc::pthread_t>) {
        let mut st = self.lock();
        st.threads = threads;
        // A vCPU that ended the VM before the threads were known kicked nobody.
        if self.exit.load(Ordering::SeqCst) {
            self.kick_all(&st);
        }
    }

    /// Interrupts every vCPU's KVM_RUN.
    fn kick_all(&self, st: &State) {
        for &t in &st.threads {
            // SAFETY: `t` is a vCPU thread that is not joined yet (the machine
            // joins only after clearing `threads`); signalling a thread that has
            // already returned is harmless until it is joined.
            unsafe { libc::pthread_kill(t, kick_signal()) };
        }
    }

    /// Records how the VM ended (the first reason wins) and stops every vCPU.
    pub(crate) fn end(&self, why: End) {
        let mut st = self.lock();
        st.end.get_or_insert(why);
        self.exit.store(true, Ordering::SeqCst);
        self.kick_all(&st);
        self.cond.notify_all();
    }

    /// How the VM ended, once it did.
    pub(crate) fn ended(&self) -> Option<End> {
        self.lock().end.clone()
    }

    /// Waits until the VM ends or `timeout` passes.
    pub(crate) fn wait_end(&self, timeout: std::time::Duration) -> Option<End> {
        let st = self.lock();
        let (st, _) = self
            .cond
            .wait_timeout_while(st, timeout, |s| s.end.is_none())
            .unwrap_or_else(|p| p.into_inner());
        st.end.clone()
    }

    /// Stops every vCPU at a rendezvous: returns when all live vCPUs are parked.
    pub(crate) fn pause(&self) {
        let mut st = self.lock();
        self.pause.store(true, Ordering::SeqCst);
        self.kick_all(&st);
        while st.parked < st.running && st.end.is_none() {
            st = self.cond.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Lets the parked vCPUs go.
    pub(crate) fn resume(&self) {
        let _st = self.lock();
        self.pause.store(false, Ordering::SeqCst);
        self.cond.notify_all();
    }

    pub(crate) fn is_paused(&self) -> bool {
        self.pause.load(Ordering::SeqCst)
    }

    /// The registers vCPU `index` saved when it parked (`None`: it is not parked).
    pub(crate) fn regs(&self, index: usize) -> Option<Result<VcpuRegs, KvmStateError>> {
        self.lock().regs.get(index).cloned().flatten()
    }

    /// Forgets the threads (before joining them) so nobody signals a joined thread.
    pub(crate) fn take_threads(&self) -> Vec<libc::pthread_t> {
        std::mem::take(&mut self.lock().threads)
    }

    /// Pauses the VM and reads every vCPU's whole state (on its own thread,
    /// while it is parked), in vCPU order. The VM stays paused.
    pub(crate) fn capture(&self) -> Result<Vec<VcpuState>, KvmStateError> {
        self.pause();
        let mut st = self.lock();
        st.capture_gen += 1;
        let want = st.capture_gen;
        self.cond.notify_all();
        while st.end.is_none() && st.captured.iter().any(|(g, _)| *g != want) {
            st = self.cond.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        if let Some(end) = &st.end {
            return Err(KvmStateError::Ended {
                end: format!("{end:?}"),
            });
        }
        st.captured
            .iter_mut()
            .enumerate()
            .map(|(i, (_, s))| match s.take() {
                Some(state) => state.map_err(|e| KvmStateError::Vcpu {
                    index: i,
                    source: Box::new(e),
                }),
                None => Err(KvmStateError::NoState { index: i }),
            })
            .collect()
    }

    fn park(&self, index: usize, vcpu: &mut VcpuFd) {
        let regs = read_regs(vcpu);
        let mut st = self.lock();
        st.regs[index] = Some(regs);
        st.parked += 1;
        self.cond.notify_all();
        while self.pause.load(Ordering::SeqCst) && !self.exit.load(Ordering::SeqCst) {
            if st.captured[index].0 != st.capture_gen {
                let want = st.capture_gen;
                drop(st);
                let state = VcpuState::capture(vcpu);
                st = self.lock();
                st.captured[index] = (want, Some(state));
                self.cond.notify_all();
                continue;
            }
            st = self.cond.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        st.parked -= 1;
        st.regs[index] = None;
    }

    /// What each vCPU left behind (after the threads are joined: all of them).
    pub(crate) fn farewells(&self) -> Vec<VcpuDiag> {
        self.lock().farewells.iter().flatten().cloned().collect()
    }

    fn exited(&self, index: usize, last: VcpuDiag) {
        let mut st = self.lock();
        if let Some(f) = st.farewells.get_mut(index) {
            *f = Some(last);
        }
        st.running -= 1;
        if st.running == 0 {
            // The guest is gone: close the serial outputs so their consoles end.
            self.bus.close_outputs();
        }
        self.cond.notify_all();
    }
}

const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;

fn read_regs(vcpu: &VcpuFd) -> Result<VcpuRegs, KvmStateError> {
    let regs = vcpu
        .get_regs()
        .map_err(KvmStateError::kvm("KVM_GET_REGS"))?;
    let sregs = vcpu
        .get_sregs()
        .map_err(KvmStateError::kvm("KVM_GET_SREGS"))?;
    let mut msrs = Msrs::from_entries(&[kvm_msr_entry {
        index: MSR_KERNEL_GS_BASE,
        ..Default::default()
    }])
    .map_err(KvmStateError::MsrList)?;
    let kernel_gs_base = match vcpu.get_msrs(&mut msrs) {
        Ok(1) => msrs.as_slice()[0].data,
        _ => 0,
    };
    Ok(VcpuRegs {
        rip: regs.rip,
        rsp: regs.rsp,
        cr0: sregs.cr0,
        cr3: sregs.cr3,
        cr4: sregs.cr4,
        efer: sregs.efer,
        gs_base: sregs.gs.base,
        kernel_gs_base,
        rflags: regs.rflags,
        mp_state: vcpu.get_mp_state().map_or(u32::MAX, |m| m.mp_state),
    })
}

/// What is left of a vCPU that triple-faulted, for the log. AMD's KVM
/// re-initializes the vCPU on a shutdown (its registers then read as after
/// INIT); the last exception and interrupt in the vCPU events survive.
fn describe_shutdown(vcpu: &VcpuFd) -> String {
    let regs = match (vcpu.get_regs(), vcpu.get_sregs()) {
        (Ok(r), Ok(s)) => format!(
            "rip={:#x} rsp={:#x} rflags={:#x} cs={:#x} cr0={:#x} cr2={:#x} cr3={:#x} cr4={:#x} efer={:#x}",
            r.rip, r.rsp, r.rflags, s.cs.selector, s.cr0, s.cr2, s.cr3, s.cr4, s.efer
        ),
        (r, s) => format!("registers unreadable ({:?}, {:?})", r.err(), s.err()),
    };
    let events = match vcpu.get_vcpu_events() {
        Ok(e) => format!(
            "last exception {} (error code {:#x}), last interrupt {:#x}",
            e.exception.nr, e.exception.error_code, e.interrupt.nr
        ),
        Err(e) => format!("events unreadable ({e})"),
    };
    format!("{regs}; {events}")
}

/// The body of vCPU thread `index`.
pub(crate) fn run(mut vcpu: VcpuFd, index: usize, shared: &Shared) {
    let run_ptr: *mut kvm_run = vcpu.get_kvm_run();
    KVM_RUN.with(|p| p.set(run_ptr));
    let mut log = ExitLog::new();
    loop {
        // Clear a stale kick before looking at the flags: a kick after this
        // point makes the next KVM_RUN return at once.
        vcpu.set_kvm_immediate_exit(0);
        if shared.exit.load(Ordering::SeqCst) {
            break;
        }
        if shared.pause.load(Ordering::SeqCst) {
            shared.park(index, &mut vcpu);
            continue;
        }
        let end = match vcpu.run() {
            Ok(VcpuExit::IoOut(port, data)) => {
                log.note("io-out", port.into());
                shared.bus.write(port, data).map(|e| match e {
                    BusEvent::PowerOff => End::PowerOff,
                    BusEvent::Reset => End::Reset,
                })
            }
            Ok(VcpuExit::IoIn(port, data)) => {
                log.note("io-in", port.into());
                shared.bus.read(port, data);
                None
            }
            Ok(VcpuExit::MmioRead(addr, data)) => {
                log.note("mmio-read", addr);
                data.fill(0);
                None
            }
            Ok(VcpuExit::MmioWrite(addr, _)) => {
                log.note("mmio-write", addr);
                None
            }
            // With the in-kernel irqchip HLT stays in the kernel; without it, nothing to do.
            Ok(VcpuExit::Hlt) => {
                log.note("hlt", 0);
                None
            }
            Ok(VcpuExit::Shutdown) => {
                log.note("shutdown", 0);
                Some(End::TripleFault(format!(
                    "vCPU {index} triple-faulted (KVM_EXIT_SHUTDOWN): {}",
                    describe_shutdown(&vcpu)
                )))
            }
            Ok(VcpuExit::SystemEvent(kind, _)) => Some(match kind {
                kvm_bindings::KVM_SYSTEM_EVENT_SHUTDOWN => End::PowerOff,
                kvm_bindings::KVM_SYSTEM_EVENT_RESET => End::Reset,
                other => End::Fatal(format!("vCPU {index}: KVM system event {other}")),
            }),
            Ok(VcpuExit::InternalError) => {
                log.note("internal-error", 0);
                let rip = vcpu.get_regs().map(|r| r.rip).unwrap_or(0);
                Some(End::Fatal(format!(
                    "vCPU {index}: KVM_EXIT_INTERNAL_ERROR at rip {rip:#x} (an instruction the hypervisor cannot emulate?)"
                )))
            }
            Ok(VcpuExit::FailEntry(reason, cpu)) => {
                log.note("fail-entry", reason);
                Some(End::Fatal(format!(
                    "vCPU {index}: KVM_EXIT_FAIL_ENTRY, hardware reason {reason:#x} on host cpu {cpu}"
                )))
            }
            Ok(VcpuExit::Intr) => {
                log.note("intr", 0);
                None
            }
            Ok(other) => {
                log.note("other", 0);
                Some(End::Fatal(format!(
                    "vCPU {index}: unexpected exit {other:?}"
                )))
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => None,
            Err(e) => Some(End::Fatal(format!("vCPU {index}: KVM_RUN failed: {e}"))),
        };
        if let Some(end) = end {
            shared.end(end);
        }
    }
    KVM_RUN.with(|p| p.set(std::ptr::null_mut()));
    let last = VcpuDiag::capture(&vcpu, index, &log);
    drop(vcpu);
    shared.exited(index, last);
}
