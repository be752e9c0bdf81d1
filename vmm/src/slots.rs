//! Host CPU slots: never more busy vCPU threads than the host has cores,
//! across every VM of every process of one user on this host — tests under
//! `cargo test` threads and nextest processes, `ktstr shell`, the vmm tests.
//!
//! One lock file per host core, and one more that serializes acquisition. A
//! VM takes as many slots as host threads it can really keep busy (a
//! single-threaded TCG VM one, whatever its vCPUs), choosing any free slots;
//! when too few are free it waits on a busy one while holding the acquisition
//! lock, so requests are served in turn and two VMs never deadlock. The
//! kernel drops a dead process's locks. The locks are the caches' own
//! ([`ktstr_cache::Lock`]).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ktstr_cache::{CacheError, Lock};

/// The slots of this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSlots {
    dir: PathBuf,
    cores: usize,
}

/// Slots held by one VM; released on drop.
#[derive(Debug)]
pub struct SlotGuard {
    /// Kept only for their locks, which closing releases.
    held: Vec<Lock>,
    waited: Duration,
}

impl SlotGuard {
    /// How many slots are held.
    pub fn count(&self) -> usize {
        self.held.len()
    }

    /// How long taking them waited.
    pub fn waited(&self) -> Duration {
        self.waited
    }
}

impl HostSlots {
    /// `cores` slots in `dir` (created when first used).
    pub fn new(dir: impl Into<PathBuf>, cores: usize) -> Self {
        HostSlots {
            dir: dir.into(),
            cores: cores.max(1),
        }
    }

    /// The host-wide slot directory of this user: `/tmp/ktstr-slots-<uid>`.
    pub fn default_dir() -> PathBuf {
        // SAFETY: getuid has no preconditions.
        let uid = unsafe { libc::getuid() };
        PathBuf::from(format!("/tmp/ktstr-slots-{uid}"))
    }

    /// The slot directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The host cores the slots stand for.
    pub fn cores(&self) -> usize {
        self.cores
    }

    fn open(&self, name: &str) -> std::io::Result<Lock> {
        Lock::open(&self.dir.join(name)).map_err(CacheError::into_io)
    }

    /// Blocks until `threads` slots (capped at the host's cores) are free,
    /// then takes them.
    pub fn acquire(&self, threads: usize) -> std::io::Result<SlotGuard> {
        let t0 = Instant::now();
        let want = threads.clamp(1, self.cores);
        std::fs::create_dir_all(&self.dir)?;
        // One acquirer at a time: whoever waits for a busy slot holds this.
        let turn = self.open("acquire.lock")?;
        turn.exclusive().map_err(CacheError::into_io)?;
        let slots: Vec<Lock> = (0..self.cores)
            .map(|i| self.open(&format!("slot-{i}.lock")))
            .collect::<std::io::Result<_>>()?;
        let mut mine = vec![false; self.cores];
        let mut held = 0;
        loop {
            for (i, f) in slots.iter().enumerate() {
                if held < want && !mine[i] && f.try_exclusive().map_err(CacheError::into_io)? {
                    mine[i] = true;
                    held += 1;
                }
            }
            if held == want {
                break;
            }
            // Too few free: wait for the first busy one.
            let busy = mine.iter().position(|m| !m).expect("fewer held than exist");
            slots[busy].exclusive().map_err(CacheError::into_io)?;
            mine[busy] = true;
            held += 1;
        }
        drop(turn);
        let held = slots
            .into_iter()
            .zip(mine)
            .filter_map(|(f, m)| m.then_some(f))
            .collect();
        Ok(SlotGuard {
            held,
            waited: t0.elapsed(),
        })
    }
}

/// A backend whose every VM first takes host slots ([`HostSlots`]) for the
/// host threads it can keep busy, and holds them until it is gone.
pub struct Slotted<B> {
    inner: B,
    slots: HostSlots,
}

impl<B: std::fmt::Debug> std::fmt::Debug for Slotted<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slotted")
            .field("inner", &self.inner)
            .field("slots", &self.slots)
            .finish()
    }
}

impl<B: crate::Backend> Slotted<B> {
    /// `inner`, taking slots from `slots` for every VM.
    pub fn new(inner: B, slots: HostSlots) -> Self {
        Slotted { inner, slots }
    }
}

impl<B: crate::Backend> crate::Backend for Slotted<B> {
    fn name(&self) -> String {
        self.inner.name()
    }

    fn host_threads(&self, spec: &crate::VmSpec) -> usize {
        self.inner.host_threads(spec)
    }

    fn snapshot_id(&self) -> Option<String> {
        self.inner.snapshot_id()
    }

    fn program(&self) -> Option<std::path::PathBuf> {
        self.inner.program()
    }

    fn timing_reliable(&self, spec: &crate::VmSpec) -> bool {
        self.inner.timing_reliable(spec)
    }

    fn boot(&self, spec: &crate::VmSpec) -> Result<Box<dyn crate::Machine>, crate::VmmError> {
        self.slotted(spec, || self.inner.boot(spec))
    }

    fn restore(
        &self,
        spec: &crate::VmSpec,
        image: &Path,
        payload: &[u8],
    ) -> Result<Box<dyn crate::Machine>, crate::VmmError> {
        self.slotted(spec, || self.inner.restore(spec, image, payload))
    }
}

impl<B: crate::Backend> Slotted<B> {
    /// Takes the slots a VM of `spec` needs, then starts it with `start`.
    fn slotted(
        &self,
        spec: &crate::VmSpec,
        start: impl FnOnce() -> Result<Box<dyn crate::Machine>, crate::VmmError>,
    ) -> Result<Box<dyn crate::Machine>, crate::VmmError> {
        let guard = self
            .slots
            .acquire(self.inner.host_threads(spec))
            .map_err(|e| crate::VmmError::Os {
                what: "taking host CPU slots",
                source: e,
            })?;
        let inner = start()?;
        Ok(Box::new(SlottedMachine {
            inner,
            _guard: guard.held,
            waited: guard.waited,
        }))
    }
}

/// A machine holding its host slots; they are released after the VM is gone.
struct SlottedMachine {
    /// Dropped first: the VM ends before its slots are released.
    inner: Box<dyn crate::Machine>,
    _guard: Vec<Lock>,
    waited: Duration,
}

impl crate::Machine for SlottedMachine {
    fn memory(&self) -> &crate::GuestMemoryMmap {
        self.inner.memory()
    }
    fn pause(&mut self) -> Result<(), crate::VmmError> {
        self.inner.pause()
    }
    fn resume(&mut self) -> Result<(), crate::VmmError> {
        self.inner.resume()
    }
    fn take_console(&mut self) -> Option<crate::Console> {
        self.inner.take_console()
    }
    fn wait(&mut self, deadline: Option<Instant>) -> Result<crate::EndReason, crate::VmmError> {
        let end = self.inner.wait(deadline)?;
        // An ended VM keeps no host thread busy: its slots go back now, not
        // when the machine object is dropped.
        self._guard.clear();
        Ok(end)
    }
    fn try_wait(&mut self) -> Result<Option<crate::EndReason>, crate::VmmError> {
        let end = self.inner.try_wait()?;
        if end.is_some() {
            self._guard.clear();
        }
        Ok(end)
    }
    fn kill(&mut self) {
        self.inner.kill();
        self._guard.clear();
    }
    fn save(&mut self, image: &Path) -> Result<(), crate::VmmError> {
        let saved = self.inner.save(image);
        self._guard.clear();
        saved
    }
    fn slot_wait(&self) -> Duration {
        self.waited
    }
    fn vcpu_regs(&mut self, cpu: u32) -> Result<crate::VcpuRegs, crate::VmmError> {
        self.inner.vcpu_regs(cpu)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn busy(dir: &Path, i: usize) -> bool {
        Lock::is_held(&dir.join(format!("slot-{i}.lock")))
    }

    #[test]
    fn any_free_slot_is_taken_and_released_on_drop() {
        let dir = tempfile::tempdir().expect("tempdir");
        let slots = HostSlots::new(dir.path(), 2);
        assert_eq!(slots.acquire(64).expect("capped").count(), 2);
        let a = slots.acquire(1).expect("first");
        assert!(busy(dir.path(), 0) && !busy(dir.path(), 1));
        // Slot 0 is busy: the next VM takes slot 1 at once.
        let b = slots.acquire(1).expect("second");
        assert!(b.waited() < Duration::from_secs(1));
        assert!(busy(dir.path(), 1));
        drop(a);
        assert!(!busy(dir.path(), 0), "slot 0 was released");
        drop(b);
        assert!(!busy(dir.path(), 1), "slot 1 was released");
    }

    #[test]
    fn a_full_host_waits_for_a_slot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let slots = HostSlots::new(dir.path(), 1);
        let a = slots.acquire(1).expect("first");
        let s2 = slots.clone();
        let waiter = std::thread::spawn(move || s2.acquire(1).expect("second").waited());
        std::thread::sleep(Duration::from_millis(300));
        drop(a);
        let waited = waiter.join().expect("thread");
        assert!(waited >= Duration::from_millis(250), "{waited:?}");
    }
}
