//! Snapshots asked of the host from inside the guest: a step
//! (`Op::CaptureSnapshot`) sends a [`Message::SnapshotRequest`] and waits
//! until the host has paused every vCPU, read the guest and resumed it. What
//! the guest held unchanged across the request is what the host read.
//!
//! The guest's init installs the link to the host once ([`install`]); outside
//! a ktstr VM there is none and [`capture`] says so.

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::channel::{ChannelMem, Message, Writer};

/// How long a step waits for the host to answer a snapshot request.
pub(crate) const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);

/// How often a request looks for the host's answer.
const POLL: Duration = Duration::from_millis(20);

/// Why a snapshot could not be taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// Not in a ktstr guest (or the channel could not be mapped).
    #[error("snapshot {name:?}: no link to the host (not running in a ktstr VM)")]
    NoHost {
        /// The snapshot's name.
        name: String,
    },
    /// The channel stayed full.
    #[error("snapshot {name:?}: the request could not be sent (the channel stayed full)")]
    NotSent {
        /// The snapshot's name.
        name: String,
    },
    /// The host did not answer in time.
    #[error("snapshot {name:?}: the host did not answer within {waited:?}")]
    NoAnswer {
        /// The snapshot's name.
        name: String,
        /// How long the step waited.
        waited: Duration,
    },
}

/// The guest's end of snapshot requests.
pub(crate) trait SnapshotLink: Send + Sync {
    /// Asks for the snapshot `name`; returns once the host answered, with
    /// how long that took.
    fn request(&self, name: &str, timeout: Duration) -> Result<Duration, SnapshotError>;

    /// Asks for periodic snapshot number `index` (1-based) of the test's
    /// `num_snapshots`; returns once the host answered.
    fn request_periodic(&self, index: u32, timeout: Duration) -> Result<Duration, SnapshotError>;

    /// Sends `msg` to the host without waiting for an answer (a step's
    /// start); false when it could not be sent.
    fn notify(&self, msg: &Message) -> bool {
        let _ = msg;
        false
    }
}

/// A [`SnapshotLink`] over a channel writer. Requests are numbered and
/// serialized: one outstanding request at a time. The writer is locked only
/// to write, so a notice goes out while a request waits for its answer.
#[derive(Debug)]
pub(crate) struct ChannelLink<M: ChannelMem> {
    writer: Mutex<Writer<M>>,
    /// The last request's `seq`; held for a whole request.
    last: Mutex<u64>,
    /// Whether a request waits for the host's answer: not in a recorded
    /// run, whose host answers nothing (`GuestConfig::record`).
    answered: bool,
}

impl<M: ChannelMem> ChannelLink<M> {
    /// A link sending through `writer`; `answered`: requests wait for the
    /// host's answer.
    pub(crate) fn new(writer: Writer<M>, answered: bool) -> Self {
        ChannelLink {
            writer: Mutex::new(writer),
            last: Mutex::new(0),
            answered,
        }
    }

    fn writer(&self) -> std::sync::MutexGuard<'_, Writer<M>> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<M: ChannelMem + Send> SnapshotLink for ChannelLink<M> {
    fn request(&self, name: &str, timeout: Duration) -> Result<Duration, SnapshotError> {
        self.send_request(name, false, timeout)
    }

    fn request_periodic(&self, index: u32, timeout: Duration) -> Result<Duration, SnapshotError> {
        self.send_request(&format!("periodic-{index}"), true, timeout)
    }

    fn notify(&self, msg: &Message) -> bool {
        self.writer().send(msg, Duration::from_secs(1))
    }
}

impl<M: ChannelMem + Send> ChannelLink<M> {
    fn send_request(
        &self,
        name: &str,
        periodic: bool,
        timeout: Duration,
    ) -> Result<Duration, SnapshotError> {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let seq = (*last).max(self.writer().acked()) + 1;
        let t0 = Instant::now();
        let msg = Message::SnapshotRequest {
            name: name.to_string(),
            seq,
            periodic,
        };
        if !self.writer().send(&msg, Duration::from_secs(1)) {
            return Err(SnapshotError::NotSent { name: name.into() });
        }
        *last = seq;
        if !self.answered {
            return Ok(Duration::ZERO);
        }
        // Asleep between looks, so the requester is not a runnable task in
        // what the host reads; and seldom, because each look adds a context
        // switch and a wake-up to the schedstats the snapshot reads (2 ms
        // rounds put 7-13 extra events in a 4 s window).
        while self.writer().acked() < seq {
            let waited = t0.elapsed();
            if waited >= timeout {
                return Err(SnapshotError::NoAnswer {
                    name: name.into(),
                    waited,
                });
            }
            std::thread::sleep(POLL);
        }
        Ok(t0.elapsed())
    }
}

static LINK: OnceLock<Box<dyn SnapshotLink>> = OnceLock::new();

/// Installs the process's link to the host; false if one was installed already.
pub(crate) fn install(link: Box<dyn SnapshotLink>) -> bool {
    LINK.set(link).is_ok()
}

/// Takes the test's `n` periodic snapshots, spread evenly over `duration` of
/// the guest's own clock from now (at `duration * i / (n + 1)`), until
/// `stop` is set; the guest's init runs it beside the body. Paced by the
/// guest, not the host: under instruction counting the guest's clock does not
/// follow the host's (it ran 1.6 times as fast here), so a host-paced schedule
/// fired after the body had ended.
pub(crate) fn pace_periodic(n: u32, duration: Duration, stop: &std::sync::atomic::AtomicBool) {
    use std::sync::atomic::Ordering;
    let Some(link) = LINK.get() else { return };
    let t0 = Instant::now();
    for i in 1..=n {
        let at = duration.mul_f64(f64::from(i) / f64::from(n + 1));
        while t0.elapsed() < at {
            if stop.load(Ordering::Acquire) {
                return;
            }
            std::thread::sleep((at - t0.elapsed()).min(Duration::from_millis(10)));
        }
        if stop.load(Ordering::Acquire) || link.request_periodic(i, ANSWER_TIMEOUT).is_err() {
            return;
        }
    }
}

/// Tells the host that step `index` starts now (its guest uptime and ops'
/// labels): the step boundaries of the host's reports. False outside a
/// ktstr VM or when the channel stayed full; the step goes on either way.
pub(crate) fn step_started(index: u32, ops: Vec<String>) -> bool {
    let msg = Message::StepStarted {
        index,
        uptime_ms: crate::runtime::uptime_ms(),
        ops,
    };
    LINK.get().is_some_and(|l| l.notify(&msg))
}

/// The name of the snapshot request that asks the host for a failure dump of
/// the scheduler's state (the runtime sends it after a failed body).
pub const DUMP_SNAPSHOT: &str = "ktstr:dump";

/// Asks the host for the snapshot `name` and waits for it (at most
/// `ANSWER_TIMEOUT`, 30 s); returns how long the round trip took.
pub fn capture(name: &str) -> Result<Duration, SnapshotError> {
    match LINK.get() {
        Some(l) => l.request(name, ANSWER_TIMEOUT),
        None => Err(SnapshotError::NoHost { name: name.into() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::Reader;

    /// An in-process region.
    #[derive(Debug)]
    struct Buf(Mutex<Vec<u8>>);
    impl ChannelMem for &Buf {
        fn read(&self, off: u64, buf: &mut [u8]) {
            let b = self.0.lock().expect("lock");
            buf.copy_from_slice(&b[off as usize..off as usize + buf.len()]);
        }
        fn write(&self, off: u64, buf: &[u8]) {
            let mut b = self.0.lock().expect("lock");
            b[off as usize..off as usize + buf.len()].copy_from_slice(buf);
        }
        fn load_u64(&self, off: u64) -> u64 {
            let mut w = [0u8; 8];
            self.read(off, &mut w);
            u64::from_le_bytes(w)
        }
        fn store_u64(&self, off: u64, v: u64) {
            self.write(off, &v.to_le_bytes());
        }
    }

    #[test]
    fn a_request_waits_for_the_hosts_answer() {
        let buf: &'static Buf = Box::leak(Box::new(Buf(Mutex::new(vec![0; 0x4000]))));
        let link = ChannelLink::new(Writer::init(buf, 0x4000), true);
        let host = std::thread::spawn(move || {
            let mut r = Reader::new(buf);
            let mut seen = Vec::new();
            while seen.len() < 2 {
                for m in r.poll().expect("poll") {
                    if let Message::SnapshotRequest { name, seq, .. } = m {
                        seen.push(name);
                        r.ack(seq);
                    }
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            seen
        });
        link.request("a", Duration::from_secs(10))
            .expect("answered");
        link.request("b", Duration::from_secs(10))
            .expect("answered");
        assert_eq!(host.join().expect("host"), ["a", "b"]);
        // Nobody answers now: a clear error, not a hang.
        let e = link
            .request("c", Duration::from_millis(20))
            .expect_err("no host");
        assert!(matches!(e, SnapshotError::NoAnswer { .. }), "{e}");
        assert!(matches!(capture("x"), Err(SnapshotError::NoHost { .. })));
        assert!(!step_started(0, Vec::new()), "no host to tell");
    }

    #[test]
    fn a_step_notice_goes_out_while_a_request_waits_for_its_answer() {
        let buf: &'static Buf = Box::leak(Box::new(Buf(Mutex::new(vec![0; 0x4000]))));
        let link = std::sync::Arc::new(ChannelLink::new(Writer::init(buf, 0x4000), true));
        let waiting = {
            let link = link.clone();
            std::thread::spawn(move || link.request("slow", Duration::from_secs(10)))
        };
        let mut r = Reader::new(buf);
        let mut msgs = Vec::new();
        let t0 = Instant::now();
        let seq = loop {
            msgs.extend(r.poll().expect("poll"));
            if let Some(Message::SnapshotRequest { seq, .. }) = msgs.first() {
                break *seq;
            }
            assert!(t0.elapsed() < Duration::from_secs(10), "no request");
            std::thread::sleep(Duration::from_millis(1));
        };
        let step = Message::StepStarted {
            index: 1,
            uptime_ms: 5,
            ops: vec!["stop cg_0".into()],
        };
        // The request is not answered yet: the notice must not wait for it.
        assert!(link.notify(&step));
        assert_eq!(r.poll().expect("poll"), [step]);
        r.ack(seq);
        waiting.join().expect("request").expect("answered");
    }
}
